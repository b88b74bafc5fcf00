"""The mirrors of the Dune API's page-table roots: page tables in libdune's entry
format that the program reads and writes through plain pointers.

Every mirror table is a guest frame mapped read-write for the program in one
*window*: a sealed VMA named ``[dune-pagetables]`` that the VMM reserves in the
program's address space when the program starts using the Dune API. Its place is
chosen as mmap chooses (top-down below the mmap base), and being a VMA keeps the
program's own mmap from choosing it; being sealed (mseal(2)'s rules) makes the
program's munmap, mremap, mprotect, MAP_FIXED and MADV_DONTNEED over it fail with
EPERM, while the VMM maps and unmaps its pages itself (they are never
demand-paged). The window is never part of any root: no entry may map it, and
its frames are never mappable.

As in libdune, where page tables are identity-mapped, a directory entry holds the
address of the next table as the program sees it (here: in the window) with
PTE_P|PTE_W|PTE_U, so ``(ptent_t *)PTE_ADDR(entry)`` is a pointer the program can
follow; a leaf holds a guest-physical frame address.

The VMM never trusts a mirror: beside every table it keeps a *shadow* in its own
memory, the table as the VMM last wrote it. What differs between the two at a TLB
flush is what the program wrote, to be checked (``changed``) and then applied or
undone (``restore``). Tables are freed only with their root, so that pointers the
program holds stay valid.

Every mirror also keeps a *ceiling* per leaf entry (``Table.ceilings``): 0, or
CEILING_KNOWN | the most the VMM lets the entry grant (pgroot: the page's VMA's
rights; a clone: its frame's owner's), as the VMM last checked them. The Dune API's
native path (vmm_native/fastvm.c) serves a protect only where it is known; any
entry the VMM rewrites loses it until the VMM checks again.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..linux.abi import ProtFlags
from ..linux.mm import MemoryMap, Vma
from ..memory import PAGE_SIZE, AddressSpace, OutOfGuestMemory, Perm
from ..memory.pagetable import ENTRIES_PER_TABLE, LEVEL_SHIFTS, USER_SPACE_END
from .entries import ADDR_MASK, DIRECTORY_FLAGS, PTE

WINDOW_NAME = "[dune-pagetables]"
#: Address space reserved for the window (backed only where tables are): 2^20
#: tables, more than the largest guest memory could hold.
WINDOW_SIZE = 4 << 30
ENTRY_SIZE = 8
_P = int(PTE.P)
_ZERO_TABLE = array.array("Q", bytes(PAGE_SIZE))
_NO_CEILINGS = array.array("B", bytes(ENTRIES_PER_TABLE))
#: The span of address space one leaf table maps.
LEAF_SPAN = ENTRIES_PER_TABLE * PAGE_SIZE
#: A ceiling byte that holds rights (vmm_native/fastvm.c's CEILING_KNOWN).
CEILING_KNOWN = 0x80


class WindowFull(OutOfGuestMemory):
    """No room is left in the window for another table (or for the window): ENOMEM,
    as for guest memory."""


@dataclass(eq=False)
class Table:
    """One mirror table: where the program sees it, its frame, the live entries the
    program may write, and the VMM's shadow of them."""

    address: int                  # in the window
    frame: int                    # guest-physical
    level: int                    # 4 (PML4) .. 1 (page table)
    live: memoryview              # the guest frame as 64-bit words
    shadow: array.array = field(default_factory=lambda: array.array("Q", _ZERO_TABLE))
    #: pgroot's leaf tables: a ceiling byte per entry (see the module docstring).
    #: Like the shadow, never resized: native code holds its address.
    ceilings: array.array | None = None

    def set(self, index: int, value: int) -> None:
        self.shadow[index] = value
        self.live[index] = value
        if self.ceilings is not None:
            self.ceilings[index] = 0

    def set_run(self, first: int, values: list[int]) -> None:
        self.shadow[first:first + len(values)] = array.array("Q", values)
        self.live[first:first + len(values)] = array.array("Q", values)
        if self.ceilings is not None:
            self.ceilings[first:first + len(values)] = _NO_CEILINGS[:len(values)]

    def pointer(self, index: int) -> int:
        """The program's address of entry ``index``."""
        return self.address + index * ENTRY_SIZE

    def differs(self, first: int = 0, count: int = ENTRIES_PER_TABLE) -> bool:
        """Whether the program wrote any of entries [first, first+count)."""
        return self.live[first:first + count] != memoryview(self.shadow)[first:first + count]


class Window:
    """The window VMA and its tables: frames from guest memory (the guest's memory
    limit counts them), mapped for the program at addresses given out in order."""

    def __init__(self, mm: MemoryMap, space: AddressSpace) -> None:
        start = mm.find_free(WINDOW_SIZE)
        if start is None:
            raise WindowFull("no room in the address space for the page-table window")
        self.mm, self.space, self.memory = mm, space, space.memory
        self.start, self.end = start, start + WINDOW_SIZE
        mm.adopt(Vma(start, self.end, int(ProtFlags.PROT_READ | ProtFlags.PROT_WRITE),
                     name=WINDOW_NAME, sealed=True, vmm_backed=True))
        self._next = start
        self._free: list[int] = []
        self.tables = 0

    def overlaps(self, start: int, end: int) -> bool:
        return start < self.end and end > self.start

    def alloc(self, level: int) -> Table:
        """A zeroed table, mapped for the program. Raises OutOfGuestMemory, WindowFull."""
        if self._free:
            address = self._free.pop()
        elif self._next < self.end:
            address = self._next
        else:
            raise WindowFull("the page-table window is full")
        frame = self.memory.frames.alloc()
        try:
            self.space.map(address, PAGE_SIZE, Perm.READ | Perm.WRITE | Perm.USER, paddr=frame)
        except BaseException:
            self.memory.frames.free(frame)
            raise
        if address == self._next:
            self._next += PAGE_SIZE
        self.tables += 1
        words = self.memory.words
        return Table(address, frame, level, words[frame // ENTRY_SIZE:
                                                  frame // ENTRY_SIZE + ENTRIES_PER_TABLE])

    def release(self, table: Table) -> None:
        """Unmap a table from the program and give its frame back."""
        if not self.space.closed:
            self.space.unmap(table.address, PAGE_SIZE)
        table.live.release()
        self.memory.frames.free(table.frame)
        self._free.append(table.address)
        self.tables -= 1

    def close(self) -> None:
        """Remove the window's VMA (its tables are released by their roots first)."""
        if not self.space.closed and self.mm.find(self.start) is not None:
            self.mm.unmap(self.start, WINDOW_SIZE)


class Mirror:
    """One root's mirror: a 4-level table tree in the window, user half only (with a
    ceiling per leaf entry if ``keeps_ceilings``: pgroot's)."""

    def __init__(self, window: Window, keeps_ceilings: bool = False) -> None:
        self.window = window
        self.keeps_ceilings = keeps_ceilings
        self.root = window.alloc(4)
        self.by_address: dict[int, Table] = {self.root.address: self.root}
        self._ceilings_recorded = False
        #: The directory tables (a few: a flush checks them all, the leaves by range).
        self._directories: list[Table] = [self.root]
        #: Told of every leaf table made from now on: (the first address it maps, it).
        self.on_new_leaf: Callable[[int, Table], None] | None = None

    @property
    def handle(self) -> int:
        """The root as the program holds it: its top table's address."""
        return self.root.address

    def _child(self, table: Table, vaddr: int, create: bool) -> Table | None:
        index = _index(vaddr, table.level)
        entry = table.shadow[index]
        if entry & _P:
            return self.by_address[entry & ADDR_MASK]
        if not create:
            return None
        child = self.window.alloc(table.level - 1)
        if child.level == 1 and self.keeps_ceilings:
            child.ceilings = array.array("B", _NO_CEILINGS)
        self.by_address[child.address] = child
        if child.level > 1:
            self._directories.append(child)
        table.set(index, child.address | DIRECTORY_FLAGS)
        if child.level == 1 and self.on_new_leaf is not None:
            self.on_new_leaf(vaddr & ~(LEAF_SPAN - 1), child)
        return child

    def leaf_table(self, vaddr: int, create: bool) -> Table | None:
        """The page table holding ``vaddr``'s entry (made, with the directories above
        it, when ``create``); None when a level is missing."""
        table = self.root
        for _level in (4, 3, 2):
            found = self._child(table, vaddr, create)
            if found is None:
                return None
            table = found
        return table

    def get(self, vaddr: int) -> int:
        """The entry of ``vaddr`` as the VMM last wrote it (0 when there is none)."""
        table = self.leaf_table(vaddr, False)
        return 0 if table is None else table.shadow[_index(vaddr, 1)]

    def runs(self, start: int, end: int, create: bool = False) -> Iterator[tuple[int, Table, int, int]]:
        """The leaf entries of pages [start, end), table by table: (address of the
        first page, table, first index, count); missing tables are skipped unless
        ``create``."""
        vaddr = start
        while vaddr < end:
            table = self.leaf_table(vaddr, create)
            if table is None:
                vaddr = _next_present(self, vaddr)
                continue
            first = _index(vaddr, 1)
            count = min(ENTRIES_PER_TABLE - first, (end - vaddr) // PAGE_SIZE)
            yield vaddr, table, first, count
            vaddr += count * PAGE_SIZE

    def forget_ceilings(self, start: int, end: int) -> None:
        """The pages of [start, end) may have new VMAs, frames or aliases: no ceiling
        of theirs is known any more."""
        if not self.keeps_ceilings:
            return
        for _base, table, first, count in self.runs(start, end):
            table.ceilings[first:first + count] = _NO_CEILINGS[:count]

    def forget_all_ceilings(self) -> None:
        """No ceiling of any page is known any more."""
        if self._ceilings_recorded:
            for _base, table in self.leaf_tables():
                table.ceilings[:] = _NO_CEILINGS
            self._ceilings_recorded = False

    def record_ceilings(self, ceilings: list[tuple[int, int]]) -> None:
        """(page, the most the VMM lets it be given), as the VMM just checked them."""
        self._ceilings_recorded = self._ceilings_recorded or bool(ceilings)
        table, table_base = None, -1
        for vaddr, rights in ceilings:
            base = vaddr & ~(LEAF_SPAN - 1)
            if base != table_base:
                table, table_base = self.leaf_table(vaddr, create=False), base
            if table is not None and table.ceilings is not None:
                table.ceilings[_index(vaddr, 1)] = CEILING_KNOWN | rights

    def leaf_tables(self) -> Iterator[tuple[int, Table]]:
        """Every page table with the address its first entry maps."""
        yield from self._tables_under(self.root, 0)

    def _tables_under(self, table: Table, base: int) -> Iterator[tuple[int, Table]]:
        if table.level == 1:
            yield base, table
            return
        span = 1 << LEVEL_SHIFTS[table.level]
        limit = ENTRIES_PER_TABLE // 2 if table.level == 4 else ENTRIES_PER_TABLE
        for index in range(limit):
            entry = table.shadow[index]
            if entry & _P:
                yield from self._tables_under(self.by_address[entry & ADDR_MASK],
                                              base + index * span)

    def directories(self) -> Iterator[Table]:
        return iter(self._directories)

    def restore_directories(self) -> bool:
        """Undo every program write to a directory entry; whether there was one."""
        touched = False
        for table in self.directories():
            if table.differs():
                table.live[:] = table.shadow
                touched = True
        return touched

    def close(self) -> None:
        for table in list(self.by_address.values()):
            self.window.release(table)
        self.by_address.clear()
        self._directories.clear()


def _index(vaddr: int, level: int) -> int:
    return (vaddr >> LEVEL_SHIFTS[level]) & (ENTRIES_PER_TABLE - 1)


def _next_present(mirror: Mirror, vaddr: int) -> int:
    """The first address above ``vaddr`` whose page table might exist: the start of
    the next entry at the highest missing level."""
    table = mirror.root
    for level in (4, 3, 2):
        entry = table.shadow[_index(vaddr, level)]
        if not entry & _P:
            span = 1 << LEVEL_SHIFTS[level]
            return min((vaddr // span + 1) * span, USER_SPACE_END)
        table = mirror.by_address[entry & ADDR_MASK]
    return vaddr
