"""dune_vm_mprotect of a few pages of pgroot served natively, by the fast path's host
thread (kvmdune/dune/vmm_native/fastvm.c), seen from inside the guest: what the guest
sees is what the VMM's Python path gives (the same programs with the fast path on
and off: KVMDUNE_FAST_SYSCALLS), a protect made on one vCPU is seen by every other
vCPU before it returns, refusals are the VMM's, and on the fast path the calls were
served natively (``--syscall-stats``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmdune.dune import _fastvm, entries
from kvmdune.dune.hypercall import HypercallOp
from kvmdune.memory.pagetable import perm_bits

from .test_vm_fuzz import address, length, perm
from .vm_support import (FAST_SYSCALLS, REPOSITORY, passed_checks, program,  # noqa: F401
                         run_observed, syscall_path)
from .vmm import INVARIANTS

pytestmark = pytest.mark.kvm

NATIVE = re.compile(rb"(\d+) hypercalls served natively")
STATS = "--syscall-stats"


def run_with_stats(argv: list[str], fast: bool) -> subprocess.CompletedProcess:
    """``kvmdune run --syscall-stats`` with the fast path on or off."""
    env = dict(os.environ, **{FAST_SYSCALLS: "1" if fast else "0"})
    return subprocess.run([sys.executable, "-m", "kvmdune", "run", STATS, "--", *argv],
                          capture_output=True, timeout=300, cwd=REPOSITORY, env=env)


def served_natively(done: subprocess.CompletedProcess) -> list[int]:
    """The native hypercall counts of each process (none: the fast path was off)."""
    return [int(count) for count in NATIVE.findall(done.stderr)]


def test_native_protects_are_seen_as_the_vmm_would_give_them(program, syscall_path):
    done = run_with_stats([program("native_protect")], syscall_path == "fast")
    assert passed_checks(done) == [
        "program-write-removed-and-given-back", "user-write-removed-and-given-back",
        "linux-mprotect-lowers-the-ceiling", "read-only-mapping-over-the-page",
        "vmm-access-sees-native-protect", "program-write-removed-and-given-back",
        "forked-child"]
    native = served_natively(done)
    if syscall_path == "fast":      # the parent's and the forked child's
        assert len(native) == 2 and min(native) >= 15, done.stderr.decode()[-2000:]
    else:
        assert native == [], done.stderr.decode()[-2000:]


def test_a_protect_is_seen_by_every_vcpu_before_it_returns(program, syscall_path):
    done = run_with_stats([program("native_threads")], syscall_path == "fast")
    assert passed_checks(done) == ["other-vcpu-sees-protect-at-once",
                                   "protect-from-another-vcpu-seen-here"]
    if syscall_path == "fast":
        # 200 rounds of 3 protects from the main thread, 20 of 2 from the others, all
        # of them the native path's (a few go to the VMM while it holds the process's
        # lock for the other thread: its exit, a fault).
        native = served_natively(done)
        assert len(native) == 1 and native[0] >= 600, done.stderr.decode()[-2000:]


#: What native_refusals.c must print (the VMM's answers, libdune's errnos).
EXPECTED_REFUSALS = {
    "own-page-read-only-again": 0, "own-pages-16-again": 0, "own-pages-32-again": 0,
    "own-page-exec-again": -13, "own-page-no-exec-again": 0, "own-page-none-again": 0,
    "over-two-tables-again": 0, "write-without-read-again": -22, "big-again": -38,
    "read-only-file-writable-again": -13, "text-again": -13, "window-again": -22,
    "beyond-the-program-again": -22, "overflowing-length-again": -22,
    "after-linux-mprotect-again": -13, "after-linux-mprotect-back-again": 0,
    "file-over-writable-again": -13, "unknown-root": -22, "pgroot-again": 0,
}


def test_native_path_refuses_as_the_vmm_does(program):
    fast = run_with_stats([program("native_refusals")], fast=True)
    slow = run_with_stats([program("native_refusals")], fast=False)
    assert fast.returncode == slow.returncode == 0, fast.stderr.decode()[-2000:]
    assert fast.stdout == slow.stdout
    results = dict(line.rsplit(" ", 1) for line in fast.stdout.decode().splitlines()[:-1])
    assert {name: int(results[name]) for name in EXPECTED_REFUSALS} == EXPECTED_REFUSALS
    assert served_natively(fast) and served_natively(fast)[0] > 0
    assert served_natively(slow) == []


def test_native_entry_bits_are_libdunes():
    for value in range(0x4000):
        assert _fastvm.entry_bits(value) == entries.entry_bits(value), hex(value)
    for granted in range(1, 8):
        assert _fastvm.hardware_bits(granted) == perm_bits(
            entries.perm_of(entries.rights_bits(granted), user=True)), granted


#: VM_MPROTECT calls on pgroot ("R") mostly, over the program's pages and beyond.
protect_call = st.tuples(st.sampled_from(["R", "R", "R", "K"]), address, length, perm)


@settings(max_examples=int(os.environ.get("KVMDUNE_FUZZ_EXAMPLES", "30")) // 3 or 1,
          deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(calls=st.lists(protect_call, min_size=1, max_size=30))
def test_native_protect_arguments_fuzzed_against_the_vmm(program, monkeypatch, calls):
    """Each call twice (the first records ceilings, the second is the native path's to
    try): the fast path's results, and the program's fate, are the VMM's; the
    invariants hold (every recorded ceiling is the page's VMA's rights)."""
    monkeypatch.setenv(INVARIANTS, "1")
    op = f"{int(HypercallOp.VM_MPROTECT):x}"
    text = "".join(f"{op} {' '.join(args)} 0 0\n" * 2 for args in calls).encode()
    _same_on_both_paths(program, monkeypatch, text)


def test_native_bits_are_seen_as_the_vmm_gives_them(program, syscall_path):
    """VM_BITS read and clear (vmm_native/fastbits.c): what the guest sees of its
    A/D bits is the VMM's, other readers keep theirs, and a clear is seen by every
    vCPU before it returns; on the fast path most calls were served natively."""
    fast = syscall_path == "fast"
    done = run_with_stats([program("native_bits")], fast)
    assert passed_checks(done) == [
        "dirty-cleared-then-set-by-write", "accessed-cleared-then-set-by-read",
        "readers-keep-their-own-bits", "other-vcpu-write-after-clear-seen", "unaligned-range",
        "bitmap-inside-the-range", "forked-child"]
    native = served_natively(done)
    if fast:
        # 50 rounds of 5 calls, 50 of 3, 10 of 3, 50 of 2 (a few go to the VMM: the
        # first of each kind, and those arriving while it holds the process's lock).
        # The parent's, and the forked child's (10 rounds of 3: most native).
        assert len(native) == 2 and max(native) >= 300 and min(native) >= 15, \
            done.stderr.decode()[-2000:]
    else:
        assert native == [], done.stderr.decode()[-2000:]


#: Not hypercalls: fuzz.c touches the arena (offset, write?) and hashes its buffer.
TOUCH, DIGEST = "65", "66"
bits_call = st.one_of(
    st.tuples(st.just(f"{int(HypercallOp.VM_BITS):x}"),
              st.sampled_from(["R", "R", "R", "R", "K", "5"]),
              st.one_of(st.integers(0, 70 * 0x1000).map(lambda n: f"A+{n:x}"),
                        st.sampled_from(["T", "W+0", "B", "0", "7fffffffe000"])),
              st.one_of(st.integers(0, 70 * 0x1000).map(lambda n: f"{n:x}"),
                        st.sampled_from(["0", "1", "ffffffffffffffff", "10000000000"])),
              st.sampled_from(["20", "40", "60", "40", "60", "0", "80", "61"]),
              st.sampled_from(["B", "B", "B+7", "B+fff", "0", "A+0", "A+3ff8", "W+0",
                               "T", "1000"]),
              st.sampled_from(["0", "1", "1", "3"])),
    st.tuples(st.just(TOUCH), st.integers(0, 64 * 0x1000 - 1).map(lambda n: f"{n:x}"),
              st.sampled_from(["0", "1", "1"]), *[st.just("0")] * 4))


@settings(max_examples=int(os.environ.get("KVMDUNE_FUZZ_EXAMPLES", "30")) // 3 or 1,
          deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(calls=st.lists(bits_call, min_size=1, max_size=40))
def test_native_bits_arguments_fuzzed_against_the_vmm(program, monkeypatch, calls):
    """VM_BITS calls mixed with the program's reads and writes of its arena, each
    call's bitmap hashed: the fast path's results, bitmaps and the program's fate
    are the VMM's; the invariants hold."""
    monkeypatch.setenv(INVARIANTS, "1")
    lines = []
    for call in calls:
        lines.append(" ".join(call))
        if call[0] != TOUCH:
            lines.append(f"{DIGEST} 0 0 0 0 0 0")
    text = "".join(line + "\n" for line in lines).encode()
    _same_on_both_paths(program, monkeypatch, text)


def test_native_bits_of_a_large_range_are_served_in_the_vcpu_thread(program, syscall_path):
    """A range beyond the ring's (RING_BITS_PAGES) exits, and the vCPU's own thread
    answers it natively (NativeHypercalls.serve_here): the same bitmaps."""
    fast = syscall_path == "fast"
    env_fast = "1" if fast else "0"
    done = subprocess.run(
        [sys.executable, "-m", "tests.dune.vmm", "--tool", "tests.dune.tools:native_served_tool",
         "--", program("native_bits"), "large"],
        capture_output=True, timeout=300, cwd=REPOSITORY,
        env=dict(os.environ, **{FAST_SYSCALLS: env_fast}))
    assert passed_checks(done) == ["large-range"]
    served = int(re.search(rb"served (-?\d+)", done.stdout).group(1))
    # 10 rounds of a clear and a read; without the fast path nothing is native.
    assert served == (20 if fast else -1), done.stderr.decode()[-2000:]


def _same_on_both_paths(program, monkeypatch, text: bytes) -> None:
    """The fuzz program fed ``text`` answers the same with the fast path on and off,
    with no internal error and the VMM's invariants intact."""
    results = []
    for fast in ("1", "0"):
        monkeypatch.setenv(FAST_SYSCALLS, fast)
        done = run_observed([program("fuzz")], input=text)
        err = done.stderr.decode(errors="replace")
        assert "internal error" not in err, err[-3000:]
        assert "invariants: ok" in err, err[-3000:]
        results.append((done.returncode, done.stdout))
    assert results[0] == results[1], text
