"""A Python tool on a running guest process (kvmdune.dune.PageTablesApi), called by
vm_programs/tooled.c through vmm.py's TOOL operation: phase, then arguments."""

from __future__ import annotations

from kvmdune.dune import PERM, PTE, DuneError, PageTablesApi
from kvmdune.linux.abi import Errno
from kvmdune.memory import PAGE_SIZE

PAGES = 64


def dirty_tool(process, phase: int, heap: int, *_: int) -> int:
    tables = PageTablesApi.of(process)
    root, size = tables.pgroot, PAGES * PAGE_SIZE
    if phase == 0:                 # forget what was written so far
        tables.clear_bits(root, heap, size, PTE.D)
        return 0
    if phase == 1:                 # which pages were written since: a mask of indexes
        return sum(1 << ((page - heap) // PAGE_SIZE)
                   for page in tables.read_bits(root, heap, size, PTE.D, clear=True))
    if phase == 2:                 # protect page 5 by call, page 6 by entry
        tables.mprotect(root, heap + 5 * PAGE_SIZE, PAGE_SIZE, PERM.R | PERM.U)
        entry = tables.lookup(root, heap + 6 * PAGE_SIZE)
        tables.set_entry(root, heap + 6 * PAGE_SIZE, entry & ~PTE.W)
        frame = tables.lookup(root, heap + 7 * PAGE_SIZE) & 0x000F_FFFF_FFFF_F000
        return int(frame == tables.va_to_pa(heap + 7 * PAGE_SIZE))
    if phase == 3:                 # a clone without page 0, for user code next
        clone = tables.clone(root)
        tables.unmap(clone, heap, PAGE_SIZE)
        tables.load_cr3(clone)
        assert tables.current_root == clone and tables.roots == [root, clone]
        return clone
    if phase == 4:                 # refusals are DuneErrors with the program's errno
        refused = 0
        for action, errno in (
                (lambda: tables.map_phys(root, heap, PAGE_SIZE, PAGE_SIZE, PERM.R), Errno.EPERM),
                (lambda: tables.free(root), Errno.EINVAL),
                (lambda: tables.mprotect(root + PAGE_SIZE, heap, PAGE_SIZE, PERM.R),
                 Errno.EINVAL),
                (lambda: tables.set_entry(root, heap, PAGE_SIZE | 7), Errno.EPERM),
                (lambda: tables.read_bits(root, heap, PAGE_SIZE, PTE.W), Errno.EINVAL)):
            try:
                action()
            except DuneError as error:
                refused += error.errno == errno
        return refused
    if phase == 5:                 # a walk: the heap's entries, with their bits
        entries = dict(tables.entries(root, heap, heap + size - 1))
        return sum(1 for entry in entries.values() if entry & PTE.P)
    return -1


def native_served_tool(process, *_: int) -> int:
    """How many hypercalls the Dune API's native code answered so far (the fast
    path's thread and the vCPU threads), -1 when none is installed."""
    native = process.privileged.vm.native
    return -1 if native is None else native.stats()["served"]


#: native_sync_tool's counters, by its argument.
NATIVE_COUNTERS = ("syncs", "flushes", "served")


def native_sync_tool(process, which: int, *_: int) -> int:
    """How many VM_SYNC (``which`` 0) or FLUSH_TLB (1) hypercalls, or hypercalls of any
    kind (2), the Dune API's native code answered so far (vmm_native/fastsync.c,
    fastvm.c, fastbits.c), -1 when none is installed."""
    native = process.privileged.vm.native
    return -1 if native is None else native.stats()[NATIVE_COUNTERS[which]]
