"""The fast system-call path seen from real programs: a C program probing what it
must get exactly right (registers, flags and the red zone across ``syscall``, bad
buffers and descriptors, calls it must hand to the VMM, signals during a stream of
fast calls) matches the native run byte for byte on both paths (the conftest runs
every test with the fast path on and off); and with it on, the calls really are
served natively, while tracing turns it off."""

from __future__ import annotations

import re

import pytest

from .conftest import LINKS, run_dune, run_native

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True

STATS = re.compile(rb"system calls: (\d+) served natively, (\d+) refused natively, "
                   rb"(\d+) served by the VMM")


def served(stderr: bytes) -> tuple[int, int, int]:
    found = STATS.search(stderr)
    assert found, stderr.decode(errors="replace")[-2000:]
    return tuple(int(n) for n in found.groups())


@pytest.mark.parametrize("link", LINKS)
def test_fast_calls_match_native(compiled, link):
    argv = [compiled[("fastcalls", link)]]
    native, dune = run_native(argv), run_dune(argv)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    assert b"registers and red zone intact: yes" in dune.stdout


def test_the_fast_path_serves_reads_and_writes(tmp_path, syscall_path):
    data = tmp_path / "data"
    data.write_bytes(bytes(range(256)) * 2048)          # 512 KiB: 1,024 blocks
    argv = ["busybox", "dd", f"if={data}", "of=/dev/null", "bs=512"]
    dune = run_dune(argv, "--syscall-stats")
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")
    if syscall_path == "slow":
        assert b"the fast path is off" in dune.stderr
        return
    fast, denied, slow = served(dune.stderr)
    assert fast >= 2 * 1024 and denied == 0
    assert slow < 100      # start-up and exit: memory, signals, the exe, close


def test_tracing_turns_the_fast_path_off(tmp_path, syscall_path):
    trace = tmp_path / "trace"
    dune = run_dune(["busybox", "true"], "--trace", str(trace), "--syscall-stats")
    assert dune.returncode == 0
    assert b"the fast path is off" in dune.stderr
    assert b"exit_group(0)" in trace.read_bytes()


def test_sandbox_denials_by_number_are_served_natively(syscall_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "kvmdune", "sandbox", "--syscall-stats",
               "--deny-syscall", "getppid", "--", "busybox", "sh", "-c",
               "echo $PPID; cat /proc/self/stat > /dev/null"]
    dune = subprocess.run(command, capture_output=True, timeout=120)
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")
    if syscall_path == "fast":
        fast, denied, slow = served(dune.stderr)
        assert denied >= 1 and fast > 0 and slow > 0
