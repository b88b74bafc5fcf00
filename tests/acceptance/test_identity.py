"""Who a guest is, seen from inside and from outside: how its first program starts
(execvp's /bin/sh fallback), its name (/proc/self/comm, and the VMM process's comm
and command line that ps, pgrep and killall read), the /proc entries that describe
it, and a fork that cannot make its child."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .conftest import run_dune, run_native, vmm_env

BUSYBOX = shutil.which("busybox")
#: This checkout's kvmdune, for VMMs started in another directory.
CHECKOUT_ENV = {**os.environ,
                "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}

pytestmark = pytest.mark.kvm


def _script(directory: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)
    return path


# -- execvp's fallback: a script without #! -------------------------------------------

NO_SHEBANG = 'echo "$0 got $# arguments: $*"\nexit 3\n'


def test_script_without_shebang_runs_through_sh_as_execvp_does(tmp_path):
    _script(tmp_path, "plain", NO_SHEBANG)
    native = run_native(["env", "./plain", "a", "b c"], cwd=tmp_path)
    dune = run_dune(["./plain", "a", "b c"], cwd=tmp_path, env=CHECKOUT_ENV)
    assert native.returncode == 3 and native.stdout == b"./plain got 2 arguments: a b c\n"
    assert (dune.returncode, dune.stdout, dune.stderr) == (3, native.stdout, b"")


def test_script_without_shebang_found_on_path(tmp_path):
    _script(tmp_path, "plain-on-path", NO_SHEBANG)
    env = {**CHECKOUT_ENV, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    native = run_native(["env", "plain-on-path", "x"], env=env)
    dune = run_dune(["plain-on-path", "x"], env=env)
    assert native.stdout == f"{tmp_path}/plain-on-path got 1 arguments: x\n".encode()
    assert (dune.returncode, dune.stdout) == (native.returncode, native.stdout)


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_guest_execve_of_script_without_shebang_is_enoexec(tmp_path, compiled, link):
    """Only the first program gets execvp's fallback: the guest's own execve gets
    the kernel's ENOEXEC. Positive control: a script with #! is executed."""
    _script(tmp_path, "plain", NO_SHEBANG)
    _script(tmp_path, "with-line", "#!/bin/sh\n" + NO_SHEBANG)
    for name, expected in (("./plain", b"execve ./plain: Exec format error\n"),
                           ("./with-line", b"./with-line got 0 arguments: \n")):
        argv = [compiled[("identity", link)], "exec", name]
        native = run_native(argv, cwd=tmp_path)
        dune = run_dune(argv, cwd=tmp_path, env=CHECKOUT_ENV)
        assert native.stdout == expected
        assert (dune.returncode, dune.stdout) == (native.returncode, native.stdout)


def test_unrunnable_elf_is_not_handed_to_sh(tmp_path):
    """A 32-bit ELF: kvmdune says why it cannot run it (sh would print garbage)."""
    binary = tmp_path / "elf32"
    binary.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(200))
    binary.chmod(0o755)
    dune = run_dune([str(binary)])
    assert dune.returncode == 126 and b"32-bit ELF" in dune.stderr


# -- the guest's name ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cat", "a-name-longer-than-fifteen-bytes"])
def test_comm_is_the_name_execve_was_given_not_the_symlink_target(tmp_path, name):
    """Linux names the task after the path's last component (15 bytes), not after
    the file a symlink leads to (busybox)."""
    link = tmp_path / name
    link.symlink_to(BUSYBOX)
    # busybox picks its applet by argv[0]: `exec -a` keeps it `cat` whatever the path.
    argv = [BUSYBOX, "sh", "-c", 'exec -a cat "$0" /proc/self/comm', str(link)]
    native = run_native(argv)
    dune = run_dune(argv)
    assert native.stdout == name[:15].encode() + b"\n"
    assert (dune.returncode, dune.stdout) == (native.returncode, native.stdout)


def test_comm_of_the_first_program_started_through_a_symlink(tmp_path):
    (tmp_path / "cat").symlink_to(BUSYBOX)
    argv = [str(tmp_path / "cat"), "/proc/self/comm"]
    native = run_native(argv)
    assert native.stdout == b"cat\n"
    assert run_dune(argv).stdout == native.stdout


def _wait_for(condition, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


def _pgrep(*args: str) -> set[int]:
    found = subprocess.run(["pgrep", *args], capture_output=True, text=True).stdout
    return {int(pid) for pid in found.split()}


def _started(argv, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kvmdune", "run", "--", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=vmm_env(dict(os.environ)), **kwargs)


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def _host_name(pid: int) -> tuple[bytes, bytes]:
    with open(f"/proc/{pid}/comm", "rb") as comm, open(f"/proc/{pid}/cmdline", "rb") as cmd:
        return comm.read(), cmd.read()


def test_the_vmm_process_carries_the_guests_name(tmp_path):
    """ps -C, pgrep -x (comm) and pgrep -f (command line) find the guest by its own
    name and arguments; and what natively runs the same is found the same way."""
    sleeper = tmp_path / "sleep"
    sleeper.symlink_to(BUSYBOX)
    native = subprocess.Popen([str(sleeper), "30"])
    dune = _started([str(sleeper), "30"])
    try:
        pattern = f"^{sleeper} 30"
        assert _wait_for(lambda: {native.pid, dune.pid} <= _pgrep("-f", pattern)), \
            (_pgrep("-f", pattern), _host_name(dune.pid))
        assert {native.pid, dune.pid} <= _pgrep("-x", "sleep")
        listed = subprocess.run(["ps", "-o", "pid=", "-C", "sleep"], capture_output=True,
                                text=True).stdout.split()
        assert str(dune.pid) in listed and str(native.pid) in listed
        assert _host_name(dune.pid)[0] == _host_name(native.pid)[0] == b"sleep\n"
    finally:
        _stop(native)
        _stop(dune)


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_guest_prctl_set_name_renames_the_vmm_process(compiled, link):
    name = f"kd-{os.getpid() % 100000}-{link[:3]}"
    dune = _started([compiled[("identity", link)], "set-name", name, "30"])
    try:
        assert dune.stdout.readline() == name.encode() + b"\n"
        assert _wait_for(lambda: dune.pid in _pgrep("-x", name))
        assert _host_name(dune.pid)[0] == name.encode() + b"\n"
    finally:
        _stop(dune)


def test_guest_execve_renames_the_vmm_process(tmp_path):
    sleeper = tmp_path / "sleep"
    sleeper.symlink_to(BUSYBOX)
    dune = _started([BUSYBOX, "sh", "-c", f"echo started; exec {sleeper} 30"])
    try:
        assert dune.stdout.readline() == b"started\n"
        assert _wait_for(lambda: _host_name(dune.pid)[0] == b"sleep\n"), _host_name(dune.pid)
        assert _host_name(dune.pid)[1].rstrip(b"\0") == f"{sleeper} 30".encode()
        assert dune.pid in _pgrep("-f", f"^{sleeper} 30$")
    finally:
        _stop(dune)


# -- /proc entries that describe the guest ----------------------------------------------

def _same(argv, **kwargs) -> tuple[bytes, bytes]:
    """Run natively and in Dune mode; both must succeed alike. Their stdouts."""
    native = run_native(argv, **kwargs)
    dune = run_dune(argv, **kwargs)
    assert (dune.returncode, dune.stderr) == (native.returncode, native.stderr), dune.stderr
    return native.stdout, dune.stdout


def test_readlink_of_an_open_proc_self_fd_directory():
    """Natively /proc/<pid>/fd; the VMM's scratch directory must not show."""
    native, dune = _same([BUSYBOX, "sh", "-c",
                          "exec 3</proc/self/fd; readlink /proc/self/fd/3; echo /proc/$$/fd;"
                          "ls -l /proc/self/fd/ | grep -c /tmp/"])
    for out in (native, dune):
        lines = out.decode().splitlines()
        assert lines[0] == lines[1] and lines[0].startswith("/proc/"), out
    assert native.splitlines()[2] == dune.splitlines()[2]


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_fdinfo_by_guest_descriptor_number(compiled, link):
    """pos and flags of the host's fdinfo, the guest's close-on-exec, an epoll's
    watched descriptor by its guest number; a missing one is ENOENT."""
    native, dune = _same([compiled[("identity", link)], "fdinfo"])
    assert b"pos:\t3\n" in native and b"tfd:        4 events:" in native
    assert dune == native


def test_task_directory_lists_the_one_thread():
    native, dune = _same([BUSYBOX, "sh", "-c", "echo $$; exec busybox ls /proc/self/task"])
    for out in (native, dune):
        first, second = out.split()
        assert first == second
    assert _same([BUSYBOX, "sh", "-c", "exec busybox cat /proc/$$/task/$$/comm"]) == (
        b"busybox\n", b"busybox\n")


def test_namespaces_are_the_hosts():
    argv = [BUSYBOX, "sh", "-c", "ls /proc/self/ns; readlink /proc/self/ns/net; readlink /proc/self/ns/mnt"]
    native, dune = _same(argv)
    assert b"net:[" in native
    assert dune == native


def test_network_entries_are_the_hosts():
    """/proc/net/* belong to the network namespace, the VMM's and the guest's alike:
    netstat finds a socket listening on loopback."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        native, dune = _same([BUSYBOX, "netstat", "-tln"])
        header, _ = _same([BUSYBOX, "head", "-1", "/proc/net/tcp"])
    assert native.splitlines()[:2] == dune.splitlines()[:2]
    mine = [line for line in native.splitlines() if b"127.0.0.1:%d " % port in line]
    assert len(mine) == 1 and mine[0] in dune.splitlines()
    assert header.startswith(b"  sl  local_address")
