"""The Dune API's page-table operations from Python, on a running guest process, for
tools written in Python (a checkpointer, a debugger, a garbage collector's helper).

They are the C API's (``dune_vm_*``, ``dune_va_to_pa``, ``load_cr3``,
``dune_flush_tlb*``, ``kvmdune_vm_read_bits``/``clear_bits``) with the same meanings
and checks (``kvmdune.dune.vm``): roots are the handles the program holds (``pgroot``
or a clone's), addresses are the program's, permissions are ``PERM`` flags, entries
are libdune's ``PTE`` format. A refused operation raises ``DuneError`` with the errno
the program would get; nothing changes then.

Use them from the VMM's thread while the vCPU is stopped (between runs, or in an
event handler), as every page-table change::

    from kvmdune.dune import PERM, PTE, PageTablesApi

    tables = PageTablesApi.of(process)               # after the program's dune_init
    tables.clear_bits(tables.pgroot, heap, size, PTE.D)
    ...                                              # the program runs on
    written = tables.read_bits(tables.pgroot, heap, size, PTE.D, clear=True)
    tables.mprotect(tables.pgroot, page, 4096, PERM.R | PERM.U)

``entries`` is ``dune_vm_page_walk``: the A and D bits are brought up to date first;
``set_entry`` writes one entry and applies it as ``dune_flush_tlb_one`` would.

A tool reads and clears accessed and dirty bits as a reader of its own (``reader``,
by default "tool"; memory/page_bits.py), so that it never takes bits the program's
own kvmdune_vm_clear_bits would see: each sees the bits since its own last clear.
Entries (``lookup``, ``entries``) show the program's reader's bits, as the mirror
does.
"""

from __future__ import annotations

import os
from typing import Iterator

from ..linux.abi import Errno
from .entries import AD, PERM, PTE
from .vm import CR3_NOFLUSH, DuneVm, Refused

__all__ = ["DuneError", "PageTablesApi", "TOOL_READER"]

#: The A/D reader Python tools read as unless they choose another.
TOOL_READER = "tool"


class DuneError(OSError):
    """A Dune operation was refused: ``errno`` is what the program would get."""

    def __init__(self, errno: int, what: str) -> None:
        super().__init__(errno, f"{what}: {os.strerror(errno)}")


def _checked(result: int, what: str) -> int:
    if result < 0:
        raise DuneError(-result, what)
    return result


class PageTablesApi:
    """The page tables of one Dune process (its ``DuneVm``)."""

    def __init__(self, vm: DuneVm, reader: str = TOOL_READER) -> None:
        self.vm = vm
        self.reader = reader

    @classmethod
    def of(cls, process, reader: str = TOOL_READER) -> "PageTablesApi":
        """The tables of a guest process whose program called dune_init."""
        vm = getattr(getattr(process, "privileged", None), "vm", None)
        if not isinstance(vm, DuneVm) or vm.closed:
            raise DuneError(Errno.ENXIO, "the program has not called dune_init")
        return cls(vm, reader)

    @property
    def pgroot(self) -> int:
        return self.vm.pgroot

    @property
    def roots(self) -> list[int]:
        """Every root's handle, pgroot first."""
        return [self.vm.pgroot] + [handle for handle in self.vm.roots if handle != self.vm.pgroot]

    @property
    def current_root(self) -> int:
        """The root user code runs in next (load_cr3's choice)."""
        return self.vm.current().handle

    # -- the C API's operations --------------------------------------------------------
    def mprotect(self, root: int, va: int, length: int, perm: PERM) -> None:
        """dune_vm_mprotect."""
        _checked(self._call(self.vm.vm_mprotect, root, va, length, int(perm)),
                 "dune_vm_mprotect")

    def map_phys(self, root: int, va: int, length: int, pa: int, perm: PERM) -> None:
        """dune_vm_map_phys: frames from ``pa`` (the program's own) at ``va``."""
        _checked(self._call(self.vm.vm_map_phys, root, va, length, pa, int(perm)),
                 "dune_vm_map_phys")

    def map_pages(self, root: int, va: int, length: int, perm: PERM) -> None:
        """dune_vm_map_pages: fresh zeroed frames."""
        _checked(self._call(self.vm.vm_map_pages, root, va, length, int(perm)),
                 "dune_vm_map_pages")

    def unmap(self, root: int, va: int, length: int) -> None:
        """dune_vm_unmap."""
        _checked(self._call(self.vm.vm_unmap, root, va, length), "dune_vm_unmap")

    def clone(self, root: int) -> int:
        """dune_vm_clone: the new root's handle."""
        return _checked(self._call(self.vm.vm_clone, root), "dune_vm_clone")

    def free(self, root: int) -> None:
        """dune_vm_free."""
        _checked(self._call(self.vm.vm_free, root), "dune_vm_free")

    def va_to_pa(self, va: int) -> int:
        """dune_va_to_pa."""
        return _checked(self._call(self.vm.va_to_pa, va), "dune_va_to_pa")

    def load_cr3(self, root: int, flush: bool = True) -> None:
        """load_cr3 (``flush=False``: with CR3_NOFLUSH)."""
        _checked(self._call(self.vm.load_cr3, root | (0 if flush else CR3_NOFLUSH)),
                 "load_cr3")

    def flush(self, va: int = 0, length: int = 0) -> None:
        """dune_flush_tlb (everything) or, with a range, dune_flush_tlb_one's: apply
        the program's writes to entries, checked (the first refusal is raised, after
        every refused entry was restored)."""
        _checked(self._call(self.vm.flush_tlb, va, length), "dune_flush_tlb")

    def lookup(self, root: int, va: int) -> int | None:
        """The entry of ``va`` (A and D current), as dune_vm_lookup's pointer shows
        it; None where there is no page table (-ENOENT)."""
        target = self._root(root)
        table = target.mirror.leaf_table(va, create=False)
        if table is None:
            return None
        self._call(self.vm.vm_sync, root, va, va)
        return table.live[(va >> 12) & 511]

    def set_entry(self, root: int, va: int, entry: int) -> None:
        """Write ``va``'s entry, as a store through dune_vm_lookup(create)'s pointer
        followed by dune_flush_tlb_one(va); a refused entry is restored."""
        target = self._root(root)
        table = self._run(lambda: target.mirror.leaf_table(va, create=True), "set_entry")
        table.live[(va >> 12) & 511] = entry
        self.flush(va, 1)

    def entries(self, root: int, start: int, end: int) -> Iterator[tuple[int, int]]:
        """dune_vm_page_walk over [start, end] (inclusive): (address, entry) of every
        non-zero leaf, A and D current."""
        target = self._root(root)
        self._call(self.vm.vm_sync, root, start, end)
        for base, table, first, count in target.mirror.runs(start & ~0xFFF,
                                                            (end & ~0xFFF) + 0x1000):
            for i, entry in enumerate(table.live[first:first + count].tolist()):
                if entry:
                    yield base + i * 0x1000, entry

    def read_bits(self, root: int, va: int, length: int, bits: PTE = PTE.D,
                  clear: bool = False) -> list[int]:
        """kvmdune_vm_read_bits (``clear``: kvmdune_vm_clear_bits): the pages of the
        range that had any of ``bits`` (A, D) since the Dune API's last clear."""
        if not int(bits) or int(bits) & ~AD:
            raise DuneError(Errno.EINVAL, "bits must be PTE.A and/or PTE.D")
        target = self._root(root)
        span = self._run(lambda: self.vm._range(va, length), "read_bits")
        if span is None:
            return []
        with self.vm._batch():
            return self.vm._bits(target, span[0], span[1], int(bits), clear, self.reader)

    def clear_bits(self, root: int, va: int, length: int, bits: PTE = PTE.D) -> list[int]:
        """kvmdune_vm_clear_bits: read_bits with clear."""
        return self.read_bits(root, va, length, bits, clear=True)

    # -- helpers -------------------------------------------------------------------------
    def _root(self, handle: int):
        return self._run(lambda: self.vm._root(handle), "root")

    def _call(self, method, *args: int) -> int:
        return self.vm.serve(method, args)

    @staticmethod
    def _run(action, what: str):
        try:
            return action()
        except Refused as refused:
            raise DuneError(refused.errno, what) from None
