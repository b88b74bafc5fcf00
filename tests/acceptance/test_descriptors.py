"""The caller's descriptors reach the guest as they reach a native program: every
open one under its own number (``kvmdune run``), closed ones closed, and the
caller's RLIMIT_NOFILE seen and enforced; under ``kvmdune sandbox`` only 0-2 and
those passed with ``--pass-fd``, each checked against the policy. Each case runs
natively and under kvmdune from the same shell command, compared byte for byte."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kvm

KVMDUNE = f"{shlex.quote(sys.executable)} -m kvmdune"


def shell(script: str, **kwargs) -> subprocess.CompletedProcess:
    """``script`` run by bash, the way a user's shell would start the program."""
    return subprocess.run(["bash", "-c", script], capture_output=True, timeout=300, **kwargs)


def both(command: str, around: str = "{}", vmm: str = "run") -> tuple:
    """``command`` natively and under ``kvmdune VMM --``, each placed in ``around``
    (redirections, ulimit) by the calling shell."""
    native = shell(around.format(command))
    dune = shell(around.format(f"{KVMDUNE} {vmm} -- {command}"))
    return native, dune


def same(native: subprocess.CompletedProcess, dune: subprocess.CompletedProcess) -> None:
    assert (dune.returncode, dune.stdout, dune.stderr) == \
        (native.returncode, native.stdout, native.stderr)


def test_an_open_descriptor_keeps_its_number(tmp_path):
    native_file, dune_file = tmp_path / "native", tmp_path / "dune"
    native = shell(f"busybox sh -c 'echo to-three >&3' 3>{native_file}")
    dune = shell(f"{KVMDUNE} run -- busybox sh -c 'echo to-three >&3' 3>{dune_file}")
    same(native, dune)
    assert dune_file.read_bytes() == native_file.read_bytes() == b"to-three\n"


def test_dev_fd_of_an_inherited_descriptor(tmp_path):
    (tmp_path / "f").write_text("from four\n")
    native, dune = both("busybox cat /dev/fd/4", "{} 4<" + str(tmp_path / "f"))
    same(native, dune)
    assert dune.stdout == b"from four\n"


@pytest.mark.parametrize("second", ["a", "b"])
def test_process_substitution_by_the_caller(second):
    native, dune = both(f"busybox diff <(echo a) <(echo {second})")
    same(native, dune)
    assert native.returncode == (0 if second == "a" else 1)


def test_process_substitution_in_the_guest():
    native, dune = both("bash-static -c 'diff <(echo a) <(echo b)'")
    same(native, dune)
    assert b"> b" in dune.stdout


def _fd_links(listing: bytes) -> set[tuple[str, str]]:
    """(number, target) of each line of ``ls -l``, pipe inodes and pids left out."""
    links = set()
    for line in listing.decode().splitlines():
        match = re.search(r" (\d+)(?: -> (.*))?$", line)
        if match:
            target = re.sub(r"pipe:\[\d+\]", "pipe", match.group(2) or "")
            links.add((match.group(1), re.sub(r"/proc/\d+/", "/proc/PID/", target)))
    return links


def test_proc_self_fd_lists_the_same_descriptors(tmp_path):
    (tmp_path / "in").write_text("x")
    around = "{} 3>" + str(tmp_path / "out") + " 5<" + str(tmp_path / "in") + " 7>&1"
    native, dune = both("busybox ls -l /proc/self/fd", around)
    assert native.returncode == dune.returncode
    assert _fd_links(dune.stdout) == _fd_links(native.stdout)
    assert {number for number, _ in _fd_links(native.stdout)} >= {"0", "1", "2", "3", "5", "7"}


@pytest.mark.parametrize("command", ["busybox echo hi", "busybox cat /etc/hostname"])
def test_closed_stdout_fails_as_natively(command):
    native, dune = both(command, "{} >&-")
    same(native, dune)
    assert native.returncode != 0 and b"Bad file descriptor" in native.stderr


def test_closed_stdin_is_closed_and_the_next_open_takes_its_number():
    # ls opens /proc/self/fd itself: natively it gets 0, the lowest free number.
    native, dune = both("busybox ls -l /proc/self/fd", "{} <&-")
    assert native.returncode == dune.returncode
    assert _fd_links(dune.stdout) == _fd_links(native.stdout)
    assert ("0", "") in _fd_links(native.stdout)


def test_rlimit_nofile_of_the_caller_seen_and_enforced(compiled):
    program = compiled[("fdlimits", "static")]
    native, dune = both(program, "ulimit -Sn 100; {}")
    same(native, dune)
    assert b"start: soft=100 " in native.stdout
    assert b"open fails after 99: Too many open files" in native.stdout


def test_rlimit_nofile_with_a_hard_limit_is_seen(compiled):
    """With the caller's hard limit at 100, the VMM may not be allowed to raise its
    own above it (no CAP_SYS_RESOURCE): the guest still sees 100/100, meets EMFILE
    (possibly a few descriptors early, the VMM's own being counted), and behaves as
    natively once it lowers its limit."""
    program = compiled[("fdlimits", "static")]
    native, dune = both(program, "ulimit -n 100; {}")
    assert dune.returncode == native.returncode == 0
    native_lines, dune_lines = native.stdout.splitlines(), dune.stdout.splitlines()
    start = native_lines.index(b"start: soft=100 hard=100")
    assert dune_lines[:start + 1] == native_lines[:start + 1]
    assert dune_lines[start + 1].endswith(b": Too many open files")
    lowered = native_lines.index(b"lowered: 0")
    assert dune_lines[lowered:] == native_lines[lowered:]


def test_every_rlimit_is_the_callers():
    native, dune = both("busybox sh -c 'ulimit -a'",
                        "ulimit -Sn 200; ulimit -Ss 4096; ulimit -Sc 0; ulimit -Sl 1024; {}")
    same(native, dune)
    assert b"(-n) 200\n" in native.stdout and b"(-s) 4096\n" in native.stdout


def test_sandbox_gives_only_passed_descriptors(tmp_path):
    secret = tmp_path / "passed"
    secret.write_text("passed content\n")
    redirect = "{} 3<" + str(secret)
    # Not passed: fd 3 is closed in the guest, as it is natively without the redirection.
    native = shell("busybox cat /dev/fd/3")
    dune = shell(redirect.format(f"{KVMDUNE} sandbox -- busybox cat /dev/fd/3"))
    same(native, dune)
    assert native.returncode != 0
    # Passed, and inside the policy: readable (the positive control).
    allowed = shell(redirect.format(
        f"{KVMDUNE} sandbox --allow-read {secret} --pass-fd 3 -- busybox cat /dev/fd/3"))
    assert (allowed.returncode, allowed.stdout) == (0, b"passed content\n"), allowed.stderr


def test_sandbox_refuses_a_passed_descriptor_outside_the_policy(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("secret\n")
    refused = shell(f"{KVMDUNE} sandbox --pass-fd 3 -- busybox cat /dev/fd/3 3<{secret}")
    assert refused.returncode == 2 and refused.stdout == b""
    assert f"--pass-fd 3 ({secret}): refused by the policy".encode() in refused.stderr
    # Opened for writing, it needs a writable path: readable is not enough.
    written = shell(f"{KVMDUNE} sandbox --allow-read {secret} --pass-fd 3 -- "
                    f"busybox sh -c 'echo more >&3' 3>>{secret}")
    assert written.returncode == 2 and secret.read_text() == "secret\n", written.stderr
    allowed = shell(f"{KVMDUNE} sandbox --allow-write {secret} --pass-fd 3 -- "
                    f"busybox sh -c 'echo more >&3' 3>>{secret}")
    assert allowed.returncode == 0 and secret.read_text() == "secret\nmore\n", allowed.stderr


PASS_SOCKET = """
import socket, subprocess, sys, os
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
client = socket.create_connection(server.getsockname())
peer, _ = server.accept()
peer.settimeout(5)
os.dup2(client.fileno(), 3)
client.close()
result = subprocess.run([*sys.argv[1:], "--pass-fd", "3", "--", "busybox", "sh", "-c",
                         "echo over-the-socket >&3"], pass_fds=(3,), capture_output=True)
os.close(3)
sys.stderr.buffer.write(result.stderr)
print(result.returncode, peer.recv(100) if result.returncode == 0 else b"")
"""


@pytest.mark.parametrize("net, shown", [("none", b"2 b''"),
                                        ("loopback", b"0 b'over-the-socket\\n'")])
def test_sandbox_checks_a_passed_socket_by_the_network_rule(net, shown):
    result = subprocess.run([sys.executable, "-c", PASS_SOCKET, sys.executable, "-m",
                             "kvmdune", "sandbox", "--net", net],
                            capture_output=True, timeout=120)
    assert result.stdout.strip() == shown, result.stderr
    if net == "none":
        assert b"(socket:[" in result.stderr and b"--net" in result.stderr


def test_sandbox_pass_fd_names_an_open_descriptor():
    result = shell(f"{KVMDUNE} sandbox --pass-fd 6 -- busybox true")
    assert result.returncode == 2
    assert b"--pass-fd 6: descriptor 6 is not open" in result.stderr


CLOEXEC_SCRIPT = """
import os, subprocess, sys
kept = os.open(sys.argv[1], os.O_RDONLY)
os.set_inheritable(kept, True)
dropped = os.open(sys.argv[1], os.O_RDONLY)          # close-on-exec, as Python opens
print(kept, dropped, flush=True)
subprocess.run(["busybox", "ls", "-l", "/proc/self/fd"], close_fds=False)
"""


def test_close_on_exec_across_fork_and_exec_in_the_guest(tmp_path):
    """A child forked and exec'd by the guest keeps the inheritable descriptor and
    loses the close-on-exec one, as natively."""
    (tmp_path / "f").write_text("x")
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(CLOEXEC_SCRIPT)} {tmp_path / 'f'}"
    native, dune = both(command)
    assert native.returncode == dune.returncode == 0, dune.stderr
    assert dune.stdout.splitlines()[0] == native.stdout.splitlines()[0]
    kept, dropped = native.stdout.split()[:2]
    links = _fd_links(dune.stdout)
    assert links == _fd_links(native.stdout)
    assert (kept.decode(), str(tmp_path / "f")) in links
    assert (dropped.decode(), str(tmp_path / "f")) not in links   # (ls reuses the number)
