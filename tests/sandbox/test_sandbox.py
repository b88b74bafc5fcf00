"""``kvmdune sandbox`` on real programs: what is allowed works, what is not is denied
with a clear record, and nothing outside the allowed paths changes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

# Every test once with the fast system-call path and once without (KVMDUNE_FAST_SYSCALLS).
pytestmark = [pytest.mark.kvm, pytest.mark.usefixtures("syscall_path")]


def sandbox(*args: str, cwd=None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmdune", "sandbox", *args],
                          capture_output=True, timeout=timeout, cwd=cwd)


def sh(script: str, *options: str, cwd=None) -> subprocess.CompletedProcess:
    return sandbox(*options, "--", "busybox", "sh", "-c", script, cwd=cwd)


@pytest.fixture
def open_tmp():
    """A temporary directory the unprivileged sandbox user can reach (pytest's own
    base directory is private to root)."""
    import pathlib
    import shutil
    import tempfile

    path = pathlib.Path(tempfile.mkdtemp(prefix="kvmdune-sandbox-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_strict_denies_reading_outside(area):
    allowed, secret = area
    result = sh(f"cat {secret}")
    assert result.returncode != 0 and b"secret" not in result.stdout
    assert b"Permission denied" in result.stderr
    # The positive control: the same read, allowed, works.
    assert sh(f"cat {secret}", "--allow-read", str(secret.parent)).stdout == b"secret\n"


def test_allowed_paths_work(area):
    allowed, _ = area
    result = sh(f"cat {allowed}/data.txt; echo new > {allowed}/out.txt; cat {allowed}/out.txt",
                "--allow-write", str(allowed))
    assert result.stdout == b"allowed data\nnew\n", result.stderr


def test_read_only_path_cannot_be_written(area):
    allowed, _ = area
    result = sh(f"echo x > {allowed}/data.txt; rm {allowed}/data.txt; cat {allowed}/data.txt",
                "--allow-read", str(allowed))
    assert result.stdout == b"allowed data\n"
    assert (allowed / "data.txt").read_text() == "allowed data\n"


def test_symlink_to_outside_is_not_followed(area):
    allowed, secret = area
    os.symlink(secret, allowed / "link")
    os.symlink(allowed / "data.txt", allowed / "inside-link")
    result = sh(f"cat {allowed}/link", "--allow-read", str(allowed))
    assert b"secret" not in result.stdout and result.returncode != 0
    assert b"Permission denied" in result.stderr, result.stderr
    # The positive control: a link to an allowed file is followed.
    result = sh(f"cat {allowed}/inside-link", "--allow-read", str(allowed))
    assert result.stdout == b"allowed data\n", result.stderr


def test_dotdot_and_proc_root_do_not_escape(area):
    allowed, secret = area
    relative = os.path.relpath(secret, allowed)
    # Each route, first to the allowed file (the positive control: the route itself
    # works), then to the secret; the shell must reach the end.
    routes = [f"../{allowed.name}/data.txt", "../" + relative, f"/proc/self/root{allowed}/data.txt",
              f"/proc/self/root{secret}", "/proc/self/cwd/data.txt",
              f"/proc/self/cwd/{relative}"]
    script = f"cd {allowed}; " + "".join(f"cat {route}; " for route in routes) + "echo end"
    result = sh(script, "--allow-read", str(allowed))
    assert result.stdout == b"allowed data\n" * 3 + b"end\n", result.stderr
    assert result.stderr.count(b"Permission denied") == 3, result.stderr


def test_audit_records_each_denial_with_its_rule(area, tmp_path):
    _, secret = area
    audit = tmp_path / "audit.jsonl"
    sh(f"cat {secret}", "--audit", str(audit))
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    denied = [r for r in records if r["decision"] == "deny" and r["syscall"] == "openat"]
    assert denied and denied[0]["args"]["pathname"] == str(secret)
    assert "outside the read paths" in denied[0]["rule"]
    assert {"time", "pid", "syscall", "args", "decision", "rule"} <= set(denied[0])


def test_denied_syscall_and_kill_on_deny():
    assert sh("uname -s").stdout == b"Linux\n"              # the positive control
    assert b"Linux" not in sh("uname -s", "--deny-syscall", "uname").stdout
    result = sh("uname -s", "--deny-syscall", "uname", "--on-deny", "kill",
                "--allow-read", "/etc")
    assert result.returncode == 128 + 31 and b"uname denied by syscalls.deny" in result.stderr


def _serve_and_close(server: socket.socket) -> None:
    while True:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        connection.close()


def _own_address() -> str | None:
    """This machine's own non-loopback IPv4 address (the source of its default route),
    or None. A connection to it never leaves the machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))       # UDP: picks a route, sends nothing
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_no_network_by_default_and_loopback_only_when_asked():
    import threading

    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen(8)
        port = server.getsockname()[1]
        threading.Thread(target=_serve_and_close, args=(server,), daemon=True).start()

        def connect(address: str) -> str:
            return f"echo hi | nc -w 1 {address} {port} && echo connected"

        assert b"connected" not in sh(connect("127.0.0.1")).stdout
        result = sh(connect("127.0.0.1"), "--net", "loopback")
        assert b"connected" in result.stdout, result.stderr
        # A non-loopback address under --net loopback: one that answers, as the
        # positive control with --net all shows (an unreachable one proves nothing).
        own = _own_address()
        if own is None:
            pytest.skip("no non-loopback IPv4 address to test --net loopback against")
        result = sh(connect(own), "--net", "all")
        assert b"connected" in result.stdout, result.stderr
        assert b"connected" not in sh(connect(own), "--net", "loopback").stdout


def test_signals_stay_inside_the_sandbox():
    # A process outside, of the user the sandbox runs as (nobody, when started as
    # root): kill(-1) natively would reach it; from the sandbox it must not.
    drop = (lambda: os.setuid(65534)) if os.geteuid() == 0 else None
    outside = subprocess.Popen(["sleep", "60"], preexec_fn=drop)
    try:
        result = sh("kill -9 -1; echo after-kill-all; kill -STOP 0; echo after-stop-group; "
                    "kill -9 $PPID; echo after-parent")
        assert outside.poll() is None, "a process outside the sandbox was killed"
    finally:
        outside.kill()
        outside.wait()
    assert result.stdout == b"after-kill-all\nafter-stop-group\nafter-parent\n"


def test_signals_reach_the_sandboxs_own_children():
    """The positive control of the containment test above."""
    result = sh("sleep 5 & kill -9 $!; wait $!; echo own child $?")
    assert result.stdout == b"own child 137\n", result.stderr


@pytest.mark.parametrize("confinement", [(), ("--no-confine",)], ids=["confined", "gate-only"])
def test_signals_do_not_reach_the_group_the_sandbox_started_in(confinement):
    """The gate refuses (it judges against the sandbox's own group); confined, the
    kernel would too (Landlock's signal scope)."""
    sibling = subprocess.Popen(["sleep", "60"])         # in this test's process group
    try:
        result = sh(f"kill -9 {sibling.pid}; echo status $?", "--keep-root", *confinement)
        time.sleep(0.2)
        assert sibling.poll() is None, "the sandbox killed a process outside it"
        assert result.stdout == b"status 1\n", result.stderr
    finally:
        sibling.kill()
        sibling.wait()


def test_runs_as_nobody_when_started_as_root():
    if os.geteuid() != 0:
        pytest.skip("only a root start drops privileges")
    assert sh("id -u").stdout == b"65534\n"
    assert sh("id -u", "--keep-root").stdout == b"0\n"


def test_wall_time_limit_kills_with_a_message():
    result = sh("while :; do :; done", "--wall", "1")
    assert result.returncode == 137 and b"wall-time limit" in result.stderr


def test_memory_limit_kills_with_a_message(open_tmp):
    tmp_path = open_tmp
    source = tmp_path / "hog.c"
    source.write_text("#include <stdlib.h>\n#include <string.h>\nint main(void){"
                      "for(;;){char*p=malloc(1<<20); if(!p) return 3; memset(p,1,1<<20);} }\n")
    subprocess.run(["gcc", "-static", "-o", str(tmp_path / "hog"), str(source)], check=True)
    (tmp_path / "hog").chmod(0o755)
    result = sandbox("--mem", "128M", "--", str(tmp_path / "hog"))
    assert result.returncode in (3, 137), result.stderr
    if result.returncode == 137:
        assert b"memory limit" in result.stderr


def test_policy_show_prints_the_effective_policy(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kvmdune", "policy", "show", "--profile",
                             "readonly", "--allow-write", str(tmp_path), "--net", "loopback"],
                            capture_output=True, cwd=tmp_path)
    shown = json.loads(result.stdout)
    assert shown["profile"] == "readonly" and shown["network"] == "loopback"
    assert str(tmp_path) in shown["paths"]["write"] and str(tmp_path) in shown["paths"]["read"]


def test_bad_policy_exits_2(tmp_path):
    (tmp_path / "p.toml").write_text("network = 'wifi'")
    result = sandbox("--policy", str(tmp_path / "p.toml"), "--", "true")
    assert result.returncode == 2 and b"wifi" in result.stderr


def test_total_cpu_limit_covers_all_processes():
    # A marker of this run's own in the loops, so that no other process on the machine
    # running the same loop is taken for one left behind.
    marker = f"kvmdune-cpu-total-{os.getpid()}-{time.monotonic_ns()}"
    loop = f"while :; do :; done # {marker}"
    result = sh(f"sh -c '{loop}' & sh -c '{loop}'", "--cpu-total", "2")
    assert result.returncode == 152 and b"total CPU limit" in result.stderr
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True)
    assert left.stdout == b""
