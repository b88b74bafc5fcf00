"""The resident start-up path (kvmdune/cli/resident.py, native/client.c): the native
client hands ``run``/``sandbox`` to a per-user server's fresh worker, which must look
to the program exactly like the in-process path (status, signals, descriptors, a
terminal, cwd, umask, environment, limits), must never serve a caller it cannot
confine as the caller is confined, and must end with its client.

Which path ran is seen from inside the guest: under the resident path its parent is
the server, under the in-process path the test itself (the client executes Python in
place). Every client here runs in a session of its own (no controlling terminal,
which alone sends it in-process) against a socket directory of this module's.
"""

from __future__ import annotations

import ctypes
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmdune.cli.resident import CLIENT, code_version

pytestmark = pytest.mark.kvm

ROOT = Path(__file__).resolve().parents[2]
IN_PROCESS = re.compile(rb"kvmdune: start-up: in-process \((.*)\)")


@pytest.fixture(scope="module")
def socket_dir(tmp_path_factory):
    """A private socket directory; the servers started in it are stopped at the end."""
    directory = tmp_path_factory.mktemp("resident")
    directory.chmod(0o700)
    yield directory
    log = directory / "server.log"
    for pid in re.findall(rb"\(pid (\d+)\)", log.read_bytes() if log.exists() else b""):
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def client() -> str:
    if not os.access(CLIENT, os.X_OK):
        pytest.fail(f"{CLIENT} is not built (python3 setup.py build_ext --inplace)")
    return str(CLIENT)


def client_env(socket_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, KVMDUNE_RESIDENT_DIR=str(socket_dir), KVMDUNE_STARTUP_TRACE="1")
    env.pop("KVMDUNE_STARTUP", None)
    env.update(extra)
    return env


def run(client: str, socket_dir: Path, argv: list[str], command: str = "run",
        env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("start_new_session", True)
    return subprocess.run([client, command, "--", *argv], timeout=120,
                          env=env or client_env(socket_dir), **kwargs)


def fallback_reason(result: subprocess.CompletedProcess) -> str | None:
    found = IN_PROCESS.search(result.stderr)
    return found.group(1).decode() if found else None


def parent_of_guest(client: str, socket_dir: Path, **kwargs) -> int:
    result = run(client, socket_dir, ["/bin/sh", "-c", "echo $PPID"], **kwargs)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_a_run_goes_to_a_worker_of_the_server(client, socket_dir):
    result = run(client, socket_dir, ["/bin/sh", "-c", "echo $PPID; exit 7"])
    assert result.returncode == 7, result.stderr
    assert fallback_reason(result) is None, result.stderr
    server = int(result.stdout)
    assert server != os.getpid()
    assert b"python" in Path(f"/proc/{server}/cmdline").read_bytes()
    # The same server serves the next run, from a new worker.
    assert parent_of_guest(client, socket_dir) == server


@pytest.mark.parametrize("script", [
    "exit 0", "exit 3", "kill -TERM $$", "kill -KILL $$", "kill -SEGV $$",
    "echo out; echo err >&2; exit 1",
])
def test_status_and_output_are_the_in_process_paths(client, socket_dir, script):
    resident = run(client, socket_dir, ["/bin/sh", "-c", script])
    in_process = run(client, socket_dir, ["/bin/sh", "-c", script],
                     env=client_env(socket_dir, KVMDUNE_STARTUP="inprocess"))
    assert fallback_reason(resident) is None, resident.stderr
    assert fallback_reason(in_process) == "KVMDUNE_STARTUP=inprocess"
    assert resident.returncode == in_process.returncode
    assert resident.stdout == in_process.stdout
    assert IN_PROCESS.sub(b"", resident.stderr) == IN_PROCESS.sub(b"", in_process.stderr).lstrip()


def test_what_the_guest_held_is_released_when_the_client_returns(client, socket_dir,
                                                                 tmp_path):
    """The worker sends the status before its own teardown, but only after it has
    closed what the guest held, as Linux's exit does before a wait returns: a lock
    is free, and a pipe the guest held open is at EOF, when the client exits."""
    lock = tmp_path / "lock"
    lock.touch()
    read_end, write_end = os.pipe()
    try:
        result = run(client, socket_dir,
                     ["/bin/sh", "-c", f"exec 9>{lock}; flock 9; echo held; exit 4"],
                     pass_fds=(write_end,))
        os.close(write_end)
        assert result.returncode == 4, result.stderr
        assert result.stdout == b"held\n"
        assert fallback_reason(result) is None, result.stderr
        os.set_blocking(read_end, False)
        assert os.read(read_end, 1) == b""          # every writer gone: EOF
        with open(lock, "w") as held:
            import fcntl
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)     # would raise if held
    finally:
        os.close(read_end)


def test_the_guests_background_processes_outlive_the_run(client, socket_dir, tmp_path):
    """A guest's background process, in the worker's process group, goes on after
    the run returns (as after an in-process run): the client leaves as soon as it
    has the status, before the worker's own teardown is over, and that is not a
    client gone mid-run, whose worker's group the server kills."""
    marks = [tmp_path / f"late{i}" for i in range(5)]
    for mark in marks:
        result = run(client, socket_dir, ["/bin/sh", "-c", f"(sleep 1; echo late > {mark}) & true"])
        assert result.returncode == 0, result.stderr
        assert fallback_reason(result) is None, result.stderr
    _wait_until(lambda: all(mark.exists() for mark in marks), seconds=30)


def _only_pipe_on_5(write_end: int) -> None:
    """In the child: 0-2 and the pipe as 5, nothing else."""
    os.dup2(write_end, 5)
    os.closerange(3, 5)
    os.closerange(6, 1 << 16)


def _with_pipe_on_5(client, socket_dir, env=None):
    """A run with stdin and a pipe's write end as descriptor 5: its result, what
    came through the pipe, and whether its reader then saw end-of-file."""
    read_end, write_end = os.pipe()
    try:
        result = run(client, socket_dir,
                     ["/bin/sh", "-c", "cat; echo extra >&5; ls /proc/self/fd"],
                     input=b"from stdin\n", close_fds=False, env=env,
                     preexec_fn=lambda: _only_pipe_on_5(write_end))
        os.close(write_end)
        write_end = -1
        extra = os.read(read_end, 100)
        return result, extra, os.read(read_end, 100) == b""
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_stdin_and_other_descriptors_reach_the_guest(client, socket_dir):
    result, extra, end_of_file = _with_pipe_on_5(client, socket_dir)
    assert fallback_reason(result) is None, result.stderr
    lines = result.stdout.split(b"\n")
    assert lines[0] == b"from stdin" and extra == b"extra\n", (result, extra)
    assert end_of_file      # the client kept no copy of descriptor 5
    # The guest's descriptors are the caller's: nothing of the server's, no /dev/kvm.
    in_process, _, _ = _with_pipe_on_5(
        client, socket_dir, env=client_env(socket_dir, KVMDUNE_STARTUP="inprocess"))
    assert result.stdout == in_process.stdout
    assert b"5" in lines[1:]


def test_a_terminal_on_stdio_is_the_guests(client, socket_dir):
    controller, terminal = pty.openpty()
    try:
        result = run(client, socket_dir,
                     ["/bin/sh", "-c", "test -t 0 && test -t 1 && echo a terminal"],
                     stdin=terminal, stdout=terminal, stderr=subprocess.PIPE,
                     capture_output=False)
        os.close(terminal)
        terminal = -1
        output = os.read(controller, 100)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert fallback_reason(result) is None, result.stderr
    assert result.returncode == 0 and b"a terminal" in output


def _session_with_terminal(terminal: int):
    """preexec_fn: a new session whose controlling terminal is ``terminal``, with
    Ctrl-C's and Ctrl-\\'s signals at their default action, as a shell at a prompt
    gives its jobs (a caller started in the background ignores them: CI)."""
    def take_terminal():
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
        for number in (signal.SIGINT, signal.SIGQUIT):
            signal.signal(number, signal.SIG_DFL)
    return take_terminal


def test_a_terminal_keeps_job_control(client, socket_dir):
    """With a controlling terminal the worker is of the caller's session and job:
    /dev/tty opens, Ctrl-Z stops the job (the client once the worker is) until fg's
    SIGCONT, and Ctrl-C reaches the guest."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [client, "run", "--", "/bin/sh", "-c",
             "exec 3</dev/tty && echo tty ok; echo $$ $PPID; "
             # Waiting in a system call (the terminal's read), where signals reach
             # the guest at once; no child, whose death by SIGINT races the trap.
             "trap 'echo interrupted; exit 3' INT; while :; do read line; done"],
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=client_env(socket_dir), preexec_fn=_session_with_terminal(terminal))
        assert process.stdout.readline() == b"tty ok\n", process.stderr.read()
        worker, server = map(int, process.stdout.readline().split())
        assert server not in (os.getpid(), process.pid)
        assert os.getpgid(worker) == process.pid          # the caller's job
        os.write(controller, b"\x1a")                     # Ctrl-Z
        _wait_until(lambda: _state(process.pid) == "T")
        _, status = os.waitpid(process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status) and _state(worker) == "T"
        os.killpg(process.pid, signal.SIGCONT)            # fg
        _wait_until(lambda: _state(worker) != "T")
        time.sleep(0.2)         # the guest back in its loop, out of the VMM's resume
        os.write(controller, b"\x03")                     # Ctrl-C
        out, err = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert fallback_reason(subprocess.CompletedProcess([], 0, b"", err)) is None, err
    assert (out, process.returncode) == (b"interrupted\n", 3)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _wait_until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_cwd_umask_environment_and_limits_are_the_callers(client, socket_dir, tmp_path):
    import resource

    def confine():
        os.umask(0o027)
        resource.setrlimit(resource.RLIMIT_NOFILE, (77, 99))
        resource.setrlimit(resource.RLIMIT_CPU, (50, 60))
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    script = ["/bin/sh", "-c", "pwd; umask; echo $GREETING; ulimit -n; ulimit -Hn; ulimit -t; "
                               "grep -E 'Sig(Ign|Blk)' /proc/self/status"]
    result = run(client, socket_dir, script, cwd=tmp_path, preexec_fn=confine,
                 env=client_env(socket_dir, GREETING="hello there"))
    assert fallback_reason(result) is None, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[:6] == [str(tmp_path), "0027", "hello there", "77", "99", "50"]
    # Signal dispositions as the in-process path leaves them to the guest.
    in_process = run(client, socket_dir, script, cwd=tmp_path, preexec_fn=confine,
                     env=client_env(socket_dir, GREETING="hello there",
                                    KVMDUNE_STARTUP="inprocess"))
    assert result.stdout == in_process.stdout


def test_the_worker_joins_the_callers_cgroup(client, socket_dir):
    """rusage, pids.max, memory.max... hold for the run as for its caller."""
    name = f"kvmdune-resident-test-{os.getpid()}"
    for hierarchy in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        group = Path(hierarchy, name)
        try:
            group.mkdir()
            break
        except OSError:
            continue
    else:
        pytest.skip("no cgroup hierarchy this user may make a group in")

    def enter():
        (group / "cgroup.procs").write_text("0")

    script = ["/bin/sh", "-c", "cat /proc/self/cgroup"]
    try:
        result = run(client, socket_dir, script, preexec_fn=enter)
        in_process = run(client, socket_dir, script, preexec_fn=enter,
                         env=client_env(socket_dir, KVMDUNE_STARTUP="inprocess"))
    finally:
        group.rmdir()
    assert fallback_reason(result) is None, result.stderr
    assert f"/{name}".encode() in result.stdout
    assert result.stdout == in_process.stdout


def test_signals_to_the_client_reach_the_guest(client, socket_dir):
    process = subprocess.Popen(
        [client, "run", "--", "/bin/sh", "-c",
         "trap 'echo got TERM; exit 9' TERM; echo ready; while :; do sleep 0.1; done"],
        env=client_env(socket_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    assert process.stdout.readline() == b"ready\n"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert fallback_reason(subprocess.CompletedProcess([], 0, b"", err)) is None, err
    assert out == b"got TERM\n" and process.returncode == 9


def _wait_stopped(pid: int, timeout: float = 60) -> int:
    """waitpid(WUNTRACED) with a deadline: a client that never stops fails the test
    instead of hanging the suite."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waited, status = os.waitpid(pid, os.WUNTRACED | os.WNOHANG)
        if waited:
            return status
        time.sleep(0.02)
    pytest.fail(f"the client {pid} did not stop within {timeout} s")


def test_a_stopped_worker_stops_its_client(client, socket_dir):
    """kill -TSTP reaches the worker; the client stops once the worker has (its
    caller sees the job stopped) and SIGCONT to it resumes both."""
    process = subprocess.Popen(
        [client, "run", "--", "/bin/sh", "-c", "echo $$; while :; do sleep 0.1; done"],
        env=client_env(socket_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        worker = int(process.stdout.readline())
        process.send_signal(signal.SIGTSTP)
        status = _wait_stopped(process.pid)
        assert os.WIFSTOPPED(status) and _state(worker) == "T"
        process.send_signal(signal.SIGCONT)
        _wait_until(lambda: _state(worker) != "T")
    finally:
        process.kill()
        process.wait()


def test_the_run_ends_when_the_client_dies(client, socket_dir):
    process = subprocess.Popen(
        [client, "run", "--", "/bin/sh", "-c", "echo $$; exec sleep 60"],
        env=client_env(socket_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    guest = int(process.stdout.readline())
    assert guest != process.pid
    process.kill()
    process.wait()
    _wait_until(lambda: not os.path.exists(f"/proc/{guest}"))


def test_the_run_ends_when_the_server_dies(client, tmp_path):
    directory = tmp_path / "sockets"
    directory.mkdir(mode=0o700)
    process = subprocess.Popen(
        [client, "run", "--", "/bin/sh", "-c", "echo $$ $PPID; exec sleep 60"],
        env=client_env(directory), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    guest, server = map(int, process.stdout.readline().split())
    os.kill(server, signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 125 and b"without the run's status" in err
    _wait_until(lambda: not os.path.exists(f"/proc/{guest}"))


def test_the_worker_uses_the_callers_kvm_descriptor(client, socket_dir):
    """The client opens KVM itself (so revoking a user's access holds): given a
    descriptor that is not KVM, the run fails, though the server could open KVM."""
    result = run(client, socket_dir, ["/bin/true"],
                 env=client_env(socket_dir, KVMDUNE_KVM_DEVICE="/dev/null"))
    assert fallback_reason(result) is None, result.stderr
    assert result.returncode == 125


def test_two_runs_do_not_share_at_random(client, socket_dir, tmp_path):
    source = tmp_path / "at_random.c"
    source.write_text('#include <stdio.h>\n#include <sys/auxv.h>\n'
                      'int main(void) { const unsigned char *r = (const void *)'
                      'getauxval(AT_RANDOM);\n for (int i = 0; i < 16; i++) '
                      'printf("%02x", r[i]);\n printf(" %p\\n", (void *)&r); }\n')
    program = tmp_path / "at_random"
    subprocess.run(["gcc", "-static-pie", "-O1", "-o", str(program), str(source)], check=True)
    outputs = [run(client, socket_dir, [str(program)]) for _ in range(3)]
    assert all(fallback_reason(r) is None and r.returncode == 0 for r in outputs)
    randoms = {r.stdout.split()[0] for r in outputs}
    stacks = {r.stdout.split()[1] for r in outputs}
    assert len(randoms) == 3 and len(stacks) == 3


def test_sandbox_goes_to_a_worker_too(client, socket_dir):
    result = run(client, socket_dir, ["/bin/sh", "-c", "echo $PPID; exit 5"],
                 command="sandbox")
    assert fallback_reason(result) is None, result.stderr
    assert result.returncode == 5 and int(result.stdout) != os.getpid()


def test_a_stale_server_is_never_used(client, tmp_path):
    """Another version of the package gets another server."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "kvmdune", tree / "kvmdune", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    copied = str(tree / "kvmdune" / "cli" / "kvmdune-client")
    directory = tmp_path / "sockets"
    directory.mkdir(mode=0o700)
    try:
        first = parent_of_guest(copied, directory)
        before = code_version(tree)
        with open(tree / "kvmdune" / "cli" / "resident.py", "a") as f:
            f.write("\n# a new version\n")
        assert code_version(tree) != before
        second = parent_of_guest(copied, directory)
        assert second != first
        assert len(list(directory.glob("server-*.sock"))) == 2
    finally:
        for pid in re.findall(rb"\(pid (\d+)\)", (directory / "server.log").read_bytes()):
            os.kill(int(pid), signal.SIGTERM)


@pytest.mark.parametrize("mode, owner, reason", [
    (0o755, None, "mode is not 0700"),
    (0o700, "nobody", "belongs to another user"),
])
def test_a_socket_directory_not_private_is_refused(client, tmp_path, mode, owner, reason):
    directory = tmp_path / "sockets"
    directory.mkdir()
    directory.chmod(mode)
    if owner is not None:
        if os.geteuid() != 0:
            pytest.skip("giving the directory to another user needs root")
        import pwd

        os.chown(directory, pwd.getpwnam(owner).pw_uid, -1)
    result = run(client, directory, ["/bin/sh", "-c", "exit 6"])
    assert reason in (fallback_reason(result) or ""), result.stderr
    assert result.returncode == 6
    assert not list(directory.iterdir())


def test_no_new_privs_caller_runs_in_process(client, socket_dir):
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    result = subprocess.run(
        [setpriv, "--no-new-privs", client, "run", "--", "/bin/sh", "-c",
         "grep NoNewPrivs /proc/self/status; echo $PPID"],
        env=client_env(socket_dir), capture_output=True, timeout=120,
        start_new_session=True)
    assert "NoNewPrivs" in (fallback_reason(result) or ""), result.stderr
    assert result.returncode == 0


def test_caller_in_other_namespaces_runs_in_process(client, socket_dir):
    if os.geteuid() != 0:
        pytest.skip("unshare --uts needs root")
    result = subprocess.run(
        ["unshare", "--uts", client, "run", "--", "/bin/sh", "-c", "exit 8"],
        env=client_env(socket_dir), capture_output=True, timeout=120,
        start_new_session=True)
    assert "namespaces differ (uts)" in (fallback_reason(result) or ""), result.stderr
    assert result.returncode == 8


LANDLOCK_CREATE_RULESET, LANDLOCK_RESTRICT_SELF = 444, 446
LANDLOCK_ACCESS_FS_MAKE_SOCK = 1 << 9


def _landlock_self() -> None:
    """A Landlock domain that handles one right nobody here uses: the caller is
    confined (and its ptrace scope with it) yet can run everything."""
    libc = ctypes.CDLL(None, use_errno=True)
    attributes = ctypes.c_uint64(LANDLOCK_ACCESS_FS_MAKE_SOCK)
    ruleset = libc.syscall(LANDLOCK_CREATE_RULESET, ctypes.byref(attributes),
                           ctypes.sizeof(attributes), 0)
    if ruleset < 0 or libc.syscall(LANDLOCK_RESTRICT_SELF, ruleset, 0) < 0:
        os._exit(99)


def test_landlocked_caller_runs_in_process(client, socket_dir):
    if os.geteuid() != 0:
        pytest.skip("landlock_restrict_self without no_new_privs needs CAP_SYS_ADMIN")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(LANDLOCK_CREATE_RULESET, None, 0, 1) < 1:
        pytest.skip("no Landlock in this kernel")
    result = run(client, socket_dir, ["/bin/sh", "-c", "exit 11"], preexec_fn=_landlock_self)
    assert "Landlock" in (fallback_reason(result) or ""), result.stderr
    assert result.returncode == 11


def test_the_first_clients_environment_does_not_shape_the_server(client, tmp_path):
    directory = tmp_path / "sockets"
    directory.mkdir(mode=0o700)
    env = client_env(directory, PYTHONPATH=str(tmp_path / "elsewhere"),
                     LD_PRELOAD="/nonexistent/preload.so", SHAPING="yes")
    try:
        server = parent_of_guest(client, directory, env=env)
        environment = Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
        assert not [e for e in environment
                    if e.startswith((b"PYTHONPATH=", b"LD_PRELOAD=", b"SHAPING="))]
        assert b"-I" in Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")
    finally:
        for pid in re.findall(rb"\(pid (\d+)\)", (directory / "server.log").read_bytes()):
            os.kill(int(pid), signal.SIGTERM)


def test_python_m_kvmdune_takes_the_clients_path_when_asked(socket_dir):
    result = subprocess.run(
        [sys.executable, "-m", "kvmdune", "run", "--", "/bin/sh", "-c", "echo $PPID"],
        env=client_env(socket_dir, KVMDUNE_STARTUP="resident", PYTHONPATH=str(ROOT)),
        capture_output=True, timeout=120, start_new_session=True, cwd="/")
    assert fallback_reason(result) is None, result.stderr
    assert int(result.stdout) != os.getpid()
