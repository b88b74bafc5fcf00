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


#: Writes through pgroot's entries of the arena (WRITE_ENTRY: an arena page's frame,
#: usually the page's own, with entry bits xor'ed in), flushes of everything or of one
#: page, walks' syncs, protects that record ceilings, and the program's touches. (The
#: bits never touch the frame's address: which frame a flipped address bit names,
#: and whether it is the program's, differs between the two paths' memory layouts.)
WRITE_ENTRY, VM_SYNC, FLUSH_TLB = "64", f"{int(HypercallOp.VM_SYNC):x}", \
    f"{int(HypercallOp.FLUSH_TLB):x}"
arena_page = st.integers(0, 7).map(lambda n: n * 0x1000)
entry_write = st.tuples(
    arena_page, st.one_of(st.none(), arena_page),
    st.sampled_from(["7", "5", "27", "67", "47", "65", "8000000000000007",
                     "8000000000000005", "6", "4", "207", "3", "40000000000007"])).map(
    lambda w: (WRITE_ENTRY, "R", f"A+{w[0]:x}", f"E+{(w[0] if w[1] is None else w[1]):x}+{w[2]}",
               "0", "0", "0"))
sync_call = st.one_of(
    entry_write, entry_write, entry_write,
    st.tuples(st.just(FLUSH_TLB), st.sampled_from(["0", "A+0", "A+3000", "A+fff"]),
              st.sampled_from(["0", "0", "1000", "1", "ffffffffffffffff"]),
              *[st.just("0")] * 4),
    st.tuples(st.just(VM_SYNC), st.sampled_from(["R", "R", "K"]),
              st.sampled_from(["A+0", "A+2000", "0"]),
              st.sampled_from(["A+7fff", "A+3fff", "ffffffffffffffff", "0"]), *[st.just("0")] * 3),
    st.tuples(st.just(f"{int(HypercallOp.VM_MPROTECT):x}"), st.just("R"), arena_page.map(
        lambda n: f"A+{n:x}"), st.sampled_from(["1000", "4000", "8000"]),
        st.sampled_from(["b", "9", "f", "d", "b"]), st.just("0"), st.just("0")),
    st.tuples(st.just(TOUCH), st.integers(0, 8 * 0x1000 - 1).map(lambda n: f"{n:x}"),
              st.sampled_from(["0", "1", "1"]), *[st.just("0")] * 4))


@settings(max_examples=int(os.environ.get("KVMDUNE_FUZZ_EXAMPLES", "30")) // 3 or 1,
          deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(calls=st.lists(sync_call, min_size=1, max_size=40))
def test_native_flushes_fuzzed_against_the_vmm(program, monkeypatch, calls):
    """Entry writes, flushes and syncs with pgroot the only root (the native flush's
    case): results, the program's reads and writes of its arena and its fate are the
    VMM's; the invariants hold."""
    monkeypatch.setenv(INVARIANTS, "1")
    text = "".join(" ".join(call) + "\n" for call in calls).encode()
    _same_on_both_paths(program, monkeypatch, text, ("pgroot-only",))


def _same_on_both_paths(program, monkeypatch, text: bytes, args: tuple[str, ...] = ()) -> None:
    """The fuzz program fed ``text`` answers the same with the fast path on and off,
    with no internal error and the VMM's invariants intact."""
    results = []
    for fast in ("1", "0"):
        monkeypatch.setenv(FAST_SYSCALLS, fast)
        done = run_observed([program("fuzz"), *args], input=text)
        err = done.stderr.decode(errors="replace")
        assert "internal error" not in err, err[-3000:]
        assert "invariants: ok" in err, err[-3000:]
        results.append((done.returncode, done.stdout))
    assert results[0] == results[1], text


#: What native_sync.c prints of its refusals (the VMM's answers, libdune's errnos;
#: the entry's flags afterwards, A and D aside).
EXPECTED_SYNC_REFUSALS = {
    "write-on-read-only-mapping": "-13", "write-on-read-only-mapping-entry": "0x8000000000000005",
    "exec-on-data-page": "-13", "exec-on-data-page-entry": "0x8000000000000007",
    "foreign-frame": "-1", "foreign-frame-entry": "0x8000000000000007",
    "perm-none": "0", "perm-none-entry": "0x8000000000000006",
    "perm-none-lifted": "0", "perm-none-lifted-entry": "0x8000000000000007",
    "software-bit": "0", "software-bit-entry": "0x8000000000000207",
    "set-dirty-ignored": "0", "set-dirty-ignored-entry": "0x8000000000000207",
    "refusal-beside-a-removal": "-1",
}


def run_sync_program(program, fast: bool) -> subprocess.CompletedProcess:
    """native_sync.c under vmm.py, with the tool that reads the native counters and
    the VMM's invariants checked at the end."""
    return subprocess.run(
        [sys.executable, "-m", "tests.dune.vmm", "--tool", "tests.dune.tools:native_sync_tool",
         "--", program("native_sync"), "count"],
        capture_output=True, timeout=300, cwd=REPOSITORY,
        env=dict(os.environ, **{FAST_SYSCALLS: "1" if fast else "0", INVARIANTS: "1"}))


def test_entry_writes_and_flushes_are_seen_as_the_vmm_gives_them(program):
    """dune_vm_page_walk/lookup + dune_flush_tlb (vmm_native/fastsync.c): cleared D and
    A are set again by the next write or read, a write removal faults at once on this
    vCPU and another's, refusals are the VMM's (the same program with the fast path
    off, where everything is Python's); on the fast path the walks' syncs and the
    flushes were answered natively."""
    fast, slow = run_sync_program(program, True), run_sync_program(program, False)
    checks = ["dirty-cleared-by-entry-then-set-by-write",
              "accessed-cleared-by-entry-then-set-by-read",
              "write-removed-by-entry-faults-and-comes-back", "refusals-as-the-vmm-gives-them",
              "other-vcpu-sees-entry-changes-at-once"]
    assert passed_checks(fast) == passed_checks(slow) == checks
    for done in (fast, slow):
        assert b"invariants: ok" in done.stderr, done.stderr.decode()[-3000:]
    lines = [line for line in fast.stdout.decode().splitlines()
             if not line.startswith(("ok ", "native ", "done"))]
    assert lines == [line for line in slow.stdout.decode().splitlines()
                     if not line.startswith(("ok ", "native ", "done"))]
    assert dict(line.rsplit(" ", 1) for line in lines) == EXPECTED_SYNC_REFUSALS
    counts = re.search(rb"native syncs (-?\d+) flushes (-?\d+)", fast.stdout)
    syncs, flushes = int(counts.group(1)), int(counts.group(2))
    # Every walk's sync is native; the flushes of clears and of write removals and
    # give-backs within the recorded ceiling too (the refusals' are the VMM's).
    assert syncs >= 5 * 20 and flushes >= 4 * 20, fast.stdout.decode()[-2000:]
    assert re.search(rb"native syncs -1 flushes -1", slow.stdout)


def test_clone_protects_and_bits_are_seen_as_the_vmm_gives_them(program):
    """dune_vm_mprotect and VM_BITS on a clone (served natively as pgroot's are):
    user code in the clone sees every protect at once, the clone's bits are its user
    view's, Linux's mprotect lowers what the clone may be given; the same with the
    fast path off; on the fast path most calls were native."""
    runs = [subprocess.run(
        [sys.executable, "-m", "tests.dune.vmm", "--tool", "tests.dune.tools:native_sync_tool",
         "--", program("native_clone"), "count"],
        capture_output=True, timeout=300, cwd=REPOSITORY,
        env=dict(os.environ, **{FAST_SYSCALLS: fast, INVARIANTS: "1"})) for fast in "10"]
    for done in runs:
        assert passed_checks(done) == [
            "clone-write-removed-and-given-back", "clone-dirty-bits-are-its-user-views",
            "linux-mprotect-lowers-the-clones-ceiling", "freed-clone-is-unknown"]
        assert b"invariants: ok" in done.stderr, done.stderr.decode()[-3000:]
    served = [int(re.search(rb"native served (-?\d+)", done.stdout).group(1)) for done in runs]
    # 20 rounds of 2 protects (over 4 pages) and 20 of 5 bit calls: most are native
    # (not the first protect of each page: the VMM records its ceiling; nor the first
    # read of each kind: the VMM allocates the reader's bit; nor a few arriving while
    # the VMM holds the process's lock).
    assert served[0] >= 90 and served[1] == -1, served
