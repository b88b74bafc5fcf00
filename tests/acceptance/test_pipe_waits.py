"""Reads and writes on blocking pipes that wait for their peer (``programs/pipe_waits.c``):
what arrives matches the native run on every system-call path, and with the fast
path on, the waits are served natively: the serving thread hands each call that
would wait to the vCPU's own thread (CALLRING_HANDOFF), which waits in the kernel
instead of handing the call to the VMM (before, every wait longer than the
thread's short poll was the VMM's: ~100 reads and 20 writes here)."""

from __future__ import annotations

import re

import pytest

from .conftest import run_dune, run_native

pytestmark = pytest.mark.kvm
#: The handoff is the call stub's (the patched sites enter it too).
PATCHED_PATH = True
#: The program's messages, each read after a wait (pipe_waits.c MESSAGES), and its
#: blocks, each written after waits part way (BLOCKS).
MESSAGES = 100
BLOCKS = 20
VMM_CALLS = re.compile(rb"served by the VMM: ([^\n]*)")
HANDOFFS = re.compile(rb"(\d+) handed to it to wait for I/O")


def vmm_served(stderr: bytes, name: str) -> int:
    """How many `name` calls the VMM served, over every process's stats line."""
    total = 0
    for line in VMM_CALLS.findall(stderr):
        for entry in line.split(b", "):
            call, _, count = entry.rpartition(b" ")
            if call == name.encode():
                total += int(count)
    return total


def test_pipe_waits_match_native_and_are_served_natively(compiled, syscall_path):
    argv = [compiled[("pipe_waits", "static")]]
    native, dune = run_native(argv), run_dune(argv, "--syscall-stats")
    assert dune.returncode == native.returncode == 0, dune.stderr.decode(errors="replace")
    assert sorted(dune.stdout.splitlines()) == sorted(native.stdout.splitlines())
    assert b"0 short" in dune.stdout
    if syscall_path == "slow":
        return
    # Served by the vCPU's thread, waiting (handed over, or the serving thread slept
    # in the naps and the guest exited at once). A wait that outlasts the VMM's wait
    # slice (a descheduled peer on a loaded machine) is the VMM's again: a few may be.
    assert vmm_served(dune.stderr, "read") < MESSAGES // 10, dune.stderr.decode()
    assert vmm_served(dune.stderr, "write") < BLOCKS // 2, dune.stderr.decode()


def test_a_pipeline_hands_its_waits_to_the_vcpu_threads(syscall_path):
    """busybox dd piped through another dd into wc: the serving threads are awake,
    and the calls that find a pipe full or empty are handed over, not sent to the VMM."""
    blocks = 256
    dd = "busybox dd bs=65536"
    argv = ["busybox", "sh", "-c",
            f"{dd} if=/dev/zero count={blocks} 2>/dev/null | {dd} 2>/dev/null | busybox wc -c"]
    dune = run_dune(argv, "--syscall-stats")
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")
    assert dune.stdout.split() == [b"%d" % (blocks * 65536)]
    if syscall_path == "slow":
        return
    handed = sum(int(count) for count in HANDOFFS.findall(dune.stderr))
    assert handed > 0, dune.stderr.decode(errors="replace")
    assert vmm_served(dune.stderr, "read") + vmm_served(dune.stderr, "write") < blocks // 10
