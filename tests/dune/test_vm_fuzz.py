"""Hypothesis fuzzes every page-table hypercall's arguments from a C program in the
guest (vm_programs/fuzz.c reads them from stdin): roots real and made up, addresses in
the program's memory, the page-table window, its text, the kernel half and beyond,
lengths, permissions, frame addresses and output pointers of every kind. The VMM
must stay intact: no internal error, every result a success or one of the
documented -errno values, and DuneVm's invariants (invariants.py) true when the
guest ends: user views map only the program's frames, within their rights, and
nothing of the VMM's."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmdune.dune.hypercall import HypercallOp
from kvmdune.linux.abi import Errno

from .vm_support import program, run_observed, syscall_path  # noqa: F401
from .vmm import INVARIANTS

pytestmark = pytest.mark.kvm

#: (EBUSY: dune_init again with the other map_full.)
ALLOWED_ERRORS = {Errno.EINVAL, Errno.EPERM, Errno.EACCES, Errno.ENOENT, Errno.ENOMEM,
                  Errno.EFAULT, Errno.ENOSYS, Errno.EBUSY}
PAGE = 0x1000
#: Not a hypercall: fuzz.c writes a mirror entry through dune_vm_lookup's pointer.
WRITE_ENTRY = 100

interesting = st.sampled_from([
    0, 1, 0xFFF, PAGE, 0x10000, 0x7FFF_FFFF_D000, 0x7FFF_FFFF_F000, 1 << 47, (1 << 47) - 1,
    0xFFFF_8000_0000_0000, 0xFFFF_FFFF_8000_0000, 1 << 63, (1 << 64) - 1, (1 << 64) - PAGE,
    0x8000_0000_0000_0000 | PAGE])
hexed = st.integers(0, (1 << 64) - 1).map(lambda n: f"{n:x}")
wild = st.one_of(
    st.just("R"), st.just("K"), st.just("B"), st.just("T"),
    st.integers(0, 72 * PAGE).map(lambda n: f"A+{n:x}"),
    st.integers(0, 64 * PAGE).map(lambda n: f"W+{n:x}"),
    st.integers(0, 0x4000).map(lambda n: f"{n * PAGE:x}"),     # frames up to 64 MiB
    interesting.map(lambda n: f"{n:x}"), hexed)
#: Arguments that mostly make sense for their slot, often enough for calls to succeed.
root = st.one_of(st.sampled_from(["R", "R", "K", "K"]), wild)
address = st.one_of(st.integers(0, 70).map(lambda n: f"A+{n * PAGE:x}"),
                    st.integers(0, 70 * PAGE).map(lambda n: f"A+{n:x}"), wild)
length = st.one_of(st.integers(0, 8).map(lambda n: f"{n * PAGE:x}"),
                   st.integers(0, 70 * PAGE).map(lambda n: f"{n:x}"), wild)
perm = st.one_of(st.sampled_from([0x1, 0x3, 0x5, 0x7, 0x9, 0xB, 0xD, 0xF, 0x0, 0x2, 0x13,
                                  0x29, 0x1009, 0x3009, 0x100, 0x200]).map(lambda n: f"{n:x}"),
                 st.integers(0, 0xFFFF).map(lambda n: f"{n:x}"), wild)
frame = st.one_of(st.integers(0, 70).map(lambda n: f"P+{n * PAGE:x}"), wild)
pointer = st.one_of(st.just("B"), st.integers(0, 64).map(lambda n: f"B+{n:x}"), wild)
bits = st.one_of(st.sampled_from(["20", "40", "60", "0", "1"]), wild)
entry = st.one_of(
    st.tuples(st.integers(0, 70), st.sampled_from([0x7, 0x5, 0x3, 0x1, 0x67, 0x27, 0x4, 0x87,
                                                   0x8000_0000_0000_0007, 0x0]))
    .map(lambda t: f"{t[1]:x}" if t[1] == 0 else f"E+{t[0] * PAGE:x}+{t[1]:x}"),
    st.integers(0, 0x4000).map(lambda n: f"{n * PAGE | 7:x}"), wild)
SLOTS = {
    HypercallOp.VM_MPROTECT: (root, address, length, perm),
    HypercallOp.VM_MAP_PHYS: (root, address, length, frame, perm),
    HypercallOp.VM_MAP_PAGES: (root, address, length, perm),
    HypercallOp.VM_UNMAP: (root, address, length),
    HypercallOp.VM_LOOKUP: (root, address, st.sampled_from(["0", "1"]) | wild, pointer),
    HypercallOp.VM_CLONE: (root,),
    HypercallOp.VM_FREE: (st.sampled_from(["K", "R"]) | wild,),
    HypercallOp.VM_SYNC: (root, address, address),
    HypercallOp.FLUSH_TLB: (address, length),
    HypercallOp.LOAD_CR3: (root,),
    HypercallOp.VA_TO_PA: (address,),
    HypercallOp.VM_BITS: (root, address, length, bits, pointer, st.sampled_from(["0", "1"]) | wild),
    WRITE_ENTRY: (root, address, entry),
}


def calls_of(op: int) -> st.SearchStrategy:
    slots = SLOTS.get(op, ())
    return st.tuples(st.just(op), *slots, *[wild] * (6 - len(slots)))


#: Entry, traps and user mode (ENTER .. RESUME_USER) are test_hypercall_fuzz.py's:
#: with wild arguments they hand the program's faults to wild handlers.
TRAP_OPS = range(HypercallOp.ENTER, HypercallOp.RESUME_USER + 1)
call = st.one_of(st.sampled_from(list(SLOTS)).flatmap(calls_of),
                 st.tuples(st.integers(0, 63).filter(lambda op: op not in TRAP_OPS),
                           *[wild] * 6))


@settings(max_examples=int(os.environ.get("KVMDUNE_FUZZ_EXAMPLES", "30")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(calls=st.lists(call, min_size=1, max_size=40))
def test_hypercall_arguments_fuzzed(program, monkeypatch, calls):
    monkeypatch.setenv(INVARIANTS, "1")
    text = "".join(f"{op:x} " + " ".join(args) + "\n" for op, *args in calls)
    result = run_observed([program("fuzz")], input=text.encode())
    out, err = result.stdout.decode(), result.stderr.decode(errors="replace")
    assert "internal error" not in err, err[-3000:]
    # The guest may unmap or protect its own text or stack and die of it (SIGSEGV).
    assert result.returncode in (0, 139), err[-3000:]
    for line in out.splitlines():
        if line != "done":
            value = int(line)
            assert value >= 0 or -value in ALLOWED_ERRORS, (line, text)
    if result.returncode == 0:
        assert out.rstrip().endswith("done")
    assert "invariants: ok" in err, err[-3000:]
