"""x86-64 4-level page tables: entry bits, and map / unmap / protect / walk / A-D bits.

Pure logic over 64-bit words of guest-physical memory (a memoryview of format
``Q``) and a frame allocator, so tests run on a bytearray without KVM. Every
operation returns the guest-physical ranges whose access it *restricted*; the
caller (``AddressSpace``) invalidates them, because KVM does not see host writes
to guest page tables (PLATFORM.md).

A table, once linked into the hierarchy, stays there (empty or not) until the whole
hierarchy goes (``AddressSpace.close``), and a 2 MiB page never replaces one. The
invalidations above reach only leaf translations (KVM drops its shadow entries of
the *frames* they name); software KVM's shadow of a table entry that points to a
lower table, or that maps a 2 MiB page, keeps its link to KVM's shadow of that table
(or of that 2 MiB page) until KVM itself zaps it, which no host-side change of the
tables makes it do. A table freed and then reused as the table of another region
was therefore shared by both regions in KVM's shadow: the old region reached the
new region's pages (tests/acceptance/test_stale_translations.py). Keeping every
table where it is leaves no such link stale; 2 MiB frames are never reused as 2 MiB
pages for the same reason (``FrameAllocator``).

Only entries with the accessed bit set are reported as restricted (``_CACHED``): the
MMU sets A before it caches a translation (Intel SDM vol. 3A, 4.8; Linux's x86
``pte_needs_flush`` skips the TLB flush of an entry that was not accessed for this
reason), and KVM's shadow MMU builds, and prefetches, shadow entries only from guest
entries with A set (``paging_tmpl.h``: ``prefetch_invalid_gpte``), so an entry with A
clear is cached nowhere. Whoever clears an A bit (``kvmdune.memory.page_bits``) invalidates then. A
mapping the guest never touched is therefore unmapped or reprotected with no
invalidation at all (mmap then munmap of an untouched buffer: issue 14).

Bit names follow the Intel SDM, vol. 3A, table 4-19 / 4-20.
"""

from __future__ import annotations

import array
import enum
import functools
from dataclasses import dataclass
from typing import Callable, Iterator

from . import _ptescan   # the native walker, built with the package
from .frames import HUGE_PAGE_SIZE, PAGE_SIZE

ENTRIES_PER_TABLE = 512
WORD_SIZE = 8
LEVEL_SHIFTS = {4: 39, 3: 30, 2: 21, 1: 12}   # PML4, PDPT, PD, PT
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000
HUGE_ADDRESS_MASK = 0x000F_FFFF_FFE0_0000
USER_SPACE_END = 0x0000_8000_0000_0000       # first non-canonical address (47-bit)
KERNEL_SPACE_START = 0xFFFF_8000_0000_0000
ADDRESS_SPACE_END = 1 << 64


class PTE(enum.IntFlag):
    """Page-table entry bits (Intel SDM names), plus two software-available bits."""

    PRESENT = 1 << 0     # P
    WRITABLE = 1 << 1    # R/W
    USER = 1 << 2        # U/S
    PWT = 1 << 3
    PCD = 1 << 4
    ACCESSED = 1 << 5    # A
    DIRTY = 1 << 6       # D
    HUGE = 1 << 7        # PS: a 2 MiB page in a PD entry
    GLOBAL = 1 << 8
    OWNED = 1 << 9       # software: the frame was allocated for this mapping
    PROTNONE = 1 << 10   # software: mapped, but no access (PROT_NONE): P is clear
    NX = 1 << 63         # XD: no instruction fetch


#: Entry bits the MMU ignores, which ``kvmdune.memory.page_bits`` gives to its readers
#: (Intel SDM vol. 3A, 4.5: bits 58:52 are ignored; 62:59 are protection keys only
#: with CR4.PKE, which kvmdune never sets: machine/boot.py). Outside ADDRESS_MASK, so
#: nothing mistakes them for part of a frame number.
SOFTWARE_BITS = tuple(1 << bit for bit in range(52, 63))


class Perm(enum.IntFlag):
    """Access a mapping grants. x86 has no write- or exec-only pages: any of
    READ/WRITE/EXEC grants read; none of them is PROT_NONE."""

    NONE = 0
    READ = 1
    WRITE = 2
    EXEC = 4
    USER = 8   # reachable from CPL3

    @classmethod
    def from_pte(cls, entry: int) -> "Perm":
        if not entry & (PTE.PRESENT | PTE.PROTNONE) or entry & PTE.PROTNONE:
            return cls.NONE | (cls.USER if entry & PTE.USER else cls.NONE)
        perm = cls.READ
        if entry & PTE.WRITABLE:
            perm |= cls.WRITE
        if not entry & PTE.NX:
            perm |= cls.EXEC
        if entry & PTE.USER:
            perm |= cls.USER
        return perm


# Plain ints: ``~`` of an IntFlag keeps only the defined bits and would drop addresses.
_PERM_BITS = int(PTE.PRESENT | PTE.WRITABLE | PTE.USER | PTE.NX | PTE.PROTNONE)
_ACCESS_BITS = int(PTE.PRESENT | PTE.WRITABLE | PTE.USER)   # more of these = more access
_AD_BITS = int(PTE.ACCESSED | PTE.DIRTY)
_P, _RW, _US = int(PTE.PRESENT), int(PTE.WRITABLE), int(PTE.USER)
_A, _D, _HUGE, _NX = int(PTE.ACCESSED), int(PTE.DIRTY), int(PTE.HUGE), int(PTE.NX)
_PROTNONE, _OWNED = int(PTE.PROTNONE), int(PTE.OWNED)
#: A leaf entry the MMU may have cached a translation through (see the docstring).
_CACHED = _P | _A


@functools.lru_cache(maxsize=64)
def perm_bits(perm: Perm) -> int:
    """The PTE bits that grant ``perm``."""
    if not perm & (Perm.READ | Perm.WRITE | Perm.EXEC):
        bits = _PROTNONE
    else:
        bits = _P
        if perm & Perm.WRITE:
            bits |= _RW
        if not perm & Perm.EXEC:
            bits |= _NX
    if perm & Perm.USER:
        bits |= _US
    return int(bits)


def is_write_restriction(old: int, new: int) -> bool:
    """True when ``new`` takes only write access from ``old`` (same frame, still
    present, user and executable as before): reads may go on through whatever the
    MMU has cached, and only the next write has to reach it again."""
    return bool(old & _P and old & _RW and new & _P and not new & _RW
                and (old ^ new) & (ADDRESS_MASK | _US) == 0
                and not (new & _NX and not old & _NX))


def is_restriction(old: int, new: int) -> bool:
    """True when ``new`` grants less than ``old`` (or maps another frame, or clears A/D)."""
    if not old & _P:
        return False
    if (old & ADDRESS_MASK) != (new & ADDRESS_MASK):
        return True
    lost = (old & _ACCESS_BITS) & ~new
    gained_nx = (new & _NX) and not (old & _NX)
    cleared_ad = (old & _AD_BITS) & ~new
    return bool(lost or gained_nx or cleared_ad)


def is_canonical(vaddr: int) -> bool:
    return 0 <= vaddr < USER_SPACE_END or KERNEL_SPACE_START <= vaddr < ADDRESS_SPACE_END


class PageTableError(Exception):
    """A page-table operation was asked for something impossible."""


class AlreadyMapped(PageTableError):
    """map() over a page that is already mapped."""


@dataclass(frozen=True, slots=True)
class Translation:
    """What a walk of ``vaddr`` found: the leaf entry, with permissions combined over
    all four levels (as the CPU combines them)."""

    vaddr: int
    paddr: int
    page_size: int
    present: bool
    writable: bool
    user: bool
    nx: bool
    accessed: bool
    dirty: bool
    entry: int
    entry_paddr: int   # where the leaf entry lives (guest-physical)

    @property
    def perm(self) -> Perm:
        return Perm.from_pte(self.entry)


@dataclass(frozen=True, slots=True)
class BitChange:
    """How a scan changes each entry it reports: ``set1`` is added where the entry
    has any bit of ``cond1``, ``set2`` where it has one of ``cond2`` (both judged on
    the entry as it was), then the ``clear`` bits are cleared."""

    clear: int = 0
    cond1: int = 0
    set1: int = 0
    cond2: int = 0
    set2: int = 0


NO_CHANGE = BitChange()


@dataclass(frozen=True, slots=True)
class Restriction:
    """The guest-physical ranges whose access a change shrank, as ``protect`` reports
    them: ``full`` (the MMU must walk their entries again: access went, or the frame
    changed) and ``write_only`` (only write access went: a write must reach the MMU
    again, reads may go on through what it cached)."""

    full: list[tuple[int, int]]
    write_only: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class BitScan:
    """What ``PageTables.scan_bits`` found: ``hits`` pages (4 KiB units), their
    addresses, and the frames whose entries lost A (``full``: the MMU must walk them
    again) or only D (``dirty_only``: a write must reach the MMU again)."""

    hits: int
    pages: list[int]
    full: list[tuple[int, int]]
    dirty_only: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class _Chunk:
    """A run of leaf entries in one table: ``count`` entries from ``index``."""

    table: int        # guest-physical address of the table
    index: int
    count: int
    vaddr: int        # address mapped by the first entry
    page_size: int


def _index(vaddr: int, level: int) -> int:
    return (vaddr >> LEVEL_SHIFTS[level]) & (ENTRIES_PER_TABLE - 1)


def _span(level: int) -> int:
    """Bytes one entry at ``level`` maps."""
    return 1 << LEVEL_SHIFTS[level]


class PageTables:
    """One 4-level hierarchy rooted at ``root`` (the CR3 value).

    ``words`` is guest-physical memory as 64-bit words; ``alloc`` returns a zeroed
    4 KiB frame, ``free(paddr, length)`` takes frames back.
    """

    def __init__(self, words: memoryview, alloc: Callable[[], int],
                 free: Callable[[int, int], None], root: int | None = None,
                 alloc_huge: Callable[[], int] | None = None,
                 alloc_many: Callable[[int], list[int]] | None = None) -> None:
        self.words = words
        self._alloc = alloc
        self._alloc_many = alloc_many or self._alloc_each
        self._alloc_huge = alloc_huge
        self._free = free
        self.root = alloc() if root is None else root

    # -- entry access ------------------------------------------------------------
    def _read(self, table: int, index: int) -> int:
        return self.words[table // WORD_SIZE + index]

    def _write(self, table: int, index: int, value: int) -> None:
        self.words[table // WORD_SIZE + index] = value

    def _slice(self, chunk: _Chunk) -> slice:
        first = chunk.table // WORD_SIZE + chunk.index
        return slice(first, first + chunk.count)

    @staticmethod
    def _table_bits(vaddr: int) -> int:
        """Intermediate entries grant everything; the leaf decides (user half gets U)."""
        bits = _P | _RW
        return int(bits | _US) if vaddr < USER_SPACE_END else int(bits)

    # -- walking -------------------------------------------------------------------
    def _descend(self, vaddr: int, stop_level: int, create: bool) -> tuple[int | None, int]:
        """The table at ``stop_level`` that maps ``vaddr``, creating missing tables if
        asked. Returns (table, level); table is None when an entry at ``level`` is
        missing (or is a huge page above ``stop_level``)."""
        table = self.root
        for level in (4, 3, 2):
            if level == stop_level:
                return table, level
            index = _index(vaddr, level)
            entry = self._read(table, index)
            if entry & _HUGE:
                return None, level
            if not entry & _P:
                if not create:
                    return None, level
                new = self._alloc()
                self._write(table, index, new | self._table_bits(vaddr))
                entry = new
            table = entry & ADDRESS_MASK
        return table, 1

    def walk(self, vaddr: int) -> Translation | None:
        """Translate ``vaddr``; None when no leaf entry (present or PROT_NONE) maps it."""
        if not is_canonical(vaddr):
            return None
        table, writable, user, nx = self.root, True, True, False
        for level in (4, 3, 2, 1):
            index = _index(vaddr, level)
            entry = self._read(table, index)
            leaf = level == 1 or (level == 2 and entry & _HUGE)
            if not leaf and not entry & _P:
                return None
            if leaf:
                if not entry & (_P | _PROTNONE):
                    return None
                size = _span(level)
                mask = HUGE_ADDRESS_MASK if level == 2 else ADDRESS_MASK
                present = bool(entry & _P)
                return Translation(
                    vaddr, (entry & mask) + (vaddr & (size - 1)), size, present,
                    present and writable and bool(entry & _RW),
                    user and bool(entry & _US), nx or bool(entry & _NX),
                    bool(entry & _A), bool(entry & _D), entry,
                    table + index * WORD_SIZE)
            writable &= bool(entry & _RW)
            user &= bool(entry & _US)
            nx |= bool(entry & _NX)
            table = entry & ADDRESS_MASK
        return None  # unreachable: level 1 is always a leaf

    def _chunks(self, start: int, end: int, *, create: bool,
                split_huge: bool) -> Iterator[_Chunk]:
        """Runs of leaf entries covering [start, end), table by table.

        A 2 MiB page only partly inside the range is split into 4 KiB entries when
        ``split_huge``; otherwise it is yielded whole. Holes are skipped unless
        ``create``.
        """
        vaddr = start
        while vaddr < end:
            pd, level = self._descend(vaddr, 2, create)
            if pd is None:
                vaddr = (vaddr // _span(level) + 1) * _span(level)
                continue
            pd_index = _index(vaddr, 2)
            entry = self._read(pd, pd_index)
            huge_start = vaddr & ~(HUGE_PAGE_SIZE - 1)
            if entry & _HUGE:
                covered = vaddr == huge_start and end - vaddr >= HUGE_PAGE_SIZE
                if covered or not split_huge:
                    yield _Chunk(pd, pd_index, 1, huge_start, HUGE_PAGE_SIZE)
                    vaddr = huge_start + HUGE_PAGE_SIZE
                    continue
                self._split(pd, pd_index, vaddr)
                entry = self._read(pd, pd_index)
            if not entry & _P:
                if not create:
                    vaddr = huge_start + HUGE_PAGE_SIZE
                    continue
                table = self._alloc()
                self._write(pd, pd_index, table | self._table_bits(vaddr))
                entry = table
            index = _index(vaddr, 1)
            count = min(ENTRIES_PER_TABLE - index, (end - vaddr + PAGE_SIZE - 1) // PAGE_SIZE)
            yield _Chunk(entry & ADDRESS_MASK, index, count, vaddr, PAGE_SIZE)
            vaddr += count * PAGE_SIZE

    def leaves(self, vaddr: int, size: int) -> Iterator[tuple[int, int, memoryview]]:
        """The leaf entries of [vaddr, vaddr+size), run by run, holes skipped: (the
        address the run's first entry maps, the page size, the entries as a live view
        of 64-bit words). A 2 MiB page comes whole."""
        for chunk in self._chunks(vaddr, vaddr + size, create=False, split_huge=False):
            yield chunk.vaddr, chunk.page_size, self.words[self._slice(chunk)]

    def _split(self, pd: int, index: int, vaddr: int) -> None:
        """Replace a 2 MiB entry by a table of 512 4 KiB entries with the same access
        (a split grants nothing new, so it needs no invalidation)."""
        entry = self._read(pd, index)
        base = entry & HUGE_ADDRESS_MASK
        flags = entry & ~HUGE_ADDRESS_MASK & ~_HUGE
        table = self._alloc()
        first = table // WORD_SIZE
        self.words[first:first + ENTRIES_PER_TABLE] = _words(
            (base + i * PAGE_SIZE) | flags for i in range(ENTRIES_PER_TABLE))
        self._write(pd, index, table | self._table_bits(vaddr))

    # -- operations ----------------------------------------------------------------
    def map(self, vaddr: int, size: int, perm: Perm, paddr: int | None = None,
            huge: bool = False) -> None:
        """Map [vaddr, vaddr+size) with ``perm``: to frames from ``paddr`` on, or to
        freshly allocated (owned) frames when ``paddr`` is None. ``huge`` uses 2 MiB
        pages (everything 2 MiB-aligned). Raises ``AlreadyMapped`` and changes nothing
        if any page of the range is mapped."""
        page = HUGE_PAGE_SIZE if huge else PAGE_SIZE
        _check_range(vaddr, size, page)
        if paddr is not None and paddr % page:
            raise PageTableError(f"frame {paddr:#x} is not aligned to {page:#x}")
        if self.is_mapped(vaddr, size):
            raise AlreadyMapped(f"[{vaddr:#x}, {vaddr + size:#x}) is already mapped")
        if huge and self.has_table(vaddr, size):
            raise AlreadyMapped(f"[{vaddr:#x}, {vaddr + size:#x}) has a 4 KiB page table, "
                                "which a 2 MiB page never replaces")
        bits = perm_bits(perm) | (_HUGE if huge else 0)
        if paddr is None:
            bits |= _OWNED
        offset = 0
        try:
            for chunk in self._chunks_for_map(vaddr, vaddr + size, huge):
                if paddr is None and not huge:    # a chunk's frames in one call
                    frames = [frame | bits for frame in self._alloc_many(chunk.count)]
                    self.words[self._slice(chunk)] = _words(frames)
                    offset += chunk.count * page
                    continue
                frames = []
                try:
                    for _ in range(chunk.count):
                        frame = (paddr + offset if paddr is not None
                                 else self._alloc_frame(huge))
                        frames.append(frame | bits)
                        offset += page
                finally:
                    # Also on failure, so that the rollback below frees these frames.
                    self.words[self._slice(chunk)][:len(frames)] = _words(frames)
        except BaseException:
            if offset:
                self.unmap(vaddr, offset)
            raise

    def _alloc_each(self, count: int) -> list[int]:
        """``alloc_many`` from ``alloc``: all the frames, or none (given back)."""
        frames: list[int] = []
        try:
            for _ in range(count):
                frames.append(self._alloc())
        except BaseException:
            for frame in frames:
                self._free(frame, PAGE_SIZE)
            raise
        return frames

    def _alloc_frame(self, huge: bool) -> int:
        if not huge:
            return self._alloc()
        if self._alloc_huge is None:
            raise PageTableError("no allocator of 2 MiB frames was given")
        return self._alloc_huge()

    def _chunks_for_map(self, start: int, end: int, huge: bool) -> Iterator[_Chunk]:
        if not huge:
            yield from self._chunks(start, end, create=True, split_huge=False)
            return
        vaddr = start
        while vaddr < end:
            pd, _ = self._descend(vaddr, 2, create=True)
            index = _index(vaddr, 2)
            count = min(ENTRIES_PER_TABLE - index, (end - vaddr) // HUGE_PAGE_SIZE)
            yield _Chunk(pd, index, count, vaddr, HUGE_PAGE_SIZE)
            vaddr += count * HUGE_PAGE_SIZE

    def split_huge_pages(self, vaddr: int, size: int) -> None:
        """Replace every 2 MiB page of the range by a table of 4 KiB entries with the
        same frames and access (for users of the tables that know 4 KiB pages only;
        a split grants nothing new, so it needs no invalidation)."""
        for chunk in list(self._chunks(vaddr, vaddr + size, create=False, split_huge=False)):
            if chunk.page_size == HUGE_PAGE_SIZE:
                self._split(chunk.table, chunk.index, chunk.vaddr)

    def has_table(self, vaddr: int, size: int) -> bool:
        """True when a 4 KiB page table (empty or not) serves part of the range."""
        for chunk in self._chunks(vaddr, vaddr + size, create=False, split_huge=False):
            if chunk.page_size == PAGE_SIZE:
                return True
        return False

    def is_mapped(self, vaddr: int, size: int) -> bool:
        """True when any page of the range has a leaf entry (present or PROT_NONE)."""
        if 0 <= vaddr and vaddr + size <= USER_SPACE_END:   # the native walker's half
            return self.count_bits(vaddr, size, _P | _PROTNONE) > 0
        for chunk in self._chunks(vaddr, vaddr + size, create=False, split_huge=False):
            if chunk.page_size == HUGE_PAGE_SIZE:
                return True
            if any(self.words[self._slice(chunk)]):
                return True
        return False

    def unmap(self, vaddr: int, size: int) -> list[tuple[int, int]]:
        """Unmap the range and free owned frames (tables stay: see the module's
        docstring); returns the guest-physical ranges the MMU may have cached
        translations of (accessed entries: to invalidate)."""
        _check_range(vaddr, size, PAGE_SIZE)
        end = vaddr + size
        if end <= USER_SPACE_END:
            return self._unmap_user(vaddr, end)
        return self._unmap_chunks(vaddr, end)

    def _unmap_user(self, vaddr: int, end: int) -> list[tuple[int, int]]:
        """``unmap`` in the user half: the native walker clears the entries (an exec
        tears down a whole address space this way); a 2 MiB page only partly in the
        range is split and unmapped here."""
        present, owned, partial = _ptescan.clear(self.words, self.root, vaddr, end, _OWNED)
        for frame, length in owned:     # one madvise per contiguous run
            self._free(frame, length)
        for huge in partial:
            present.extend(self._unmap_chunks(max(vaddr, huge),
                                              min(end, huge + HUGE_PAGE_SIZE)))
        return coalesce(present) if partial else present

    def _unmap_chunks(self, vaddr: int, end: int) -> list[tuple[int, int]]:
        restricted, owned = _FrameSet(), _FrameSet()
        for chunk in self._chunks(vaddr, end, create=False, split_huge=True):
            view = self.words[self._slice(chunk)]
            old = view.tolist()
            mask = _frame_mask(chunk.page_size)
            restricted.add([e & mask for e in old if e & _CACHED == _CACHED],
                           chunk.page_size)
            owned.add([e & mask for e in old if e & _OWNED], chunk.page_size)
            view[:] = _zeros(chunk.count)
        for frame, length in owned.ranges():   # one madvise per contiguous run
            self._free(frame, length)
        return restricted.ranges()

    def protect(self, vaddr: int, size: int, perm: Perm) -> Restriction:
        """Set ``perm`` on every mapped page of the range (holes are skipped);
        returns the guest-physical ranges whose access shrank in entries the MMU may
        have cached (``Restriction``)."""
        _check_range(vaddr, size, PAGE_SIZE)
        new_bits = perm_bits(perm)
        if size == PAGE_SIZE:
            table, _level = self._descend(vaddr, 1, create=False)
            if table is not None:       # one 4 KiB page: no runs to gather
                return self._protect_entry(table // WORD_SIZE + _index(vaddr, 1), new_bits)
        keep = ~_PERM_BITS
        losses = _losses(new_bits)
        full, write_only = _FrameSet(), _FrameSet()
        for chunk in self._chunks(vaddr, vaddr + size, create=False, split_huge=True):
            view = self.words[self._slice(chunk)]
            old = view.tolist()
            mask = _frame_mask(chunk.page_size)
            lost = [(e & mask, losses[e & _LOSS_KEY]) for e in old
                    if e & _CACHED == _CACHED]
            full.add([frame for frame, loss in lost if loss is _Loss.FULL], chunk.page_size)
            write_only.add([frame for frame, loss in lost if loss is _Loss.WRITE],
                           chunk.page_size)
            view[:] = _words([(e & keep) | new_bits if e else 0 for e in old])
        return Restriction(full.ranges(), write_only.ranges())

    def _protect_entry(self, word: int, new_bits: int) -> Restriction:
        """``protect`` of the one 4 KiB entry at ``word`` (an index into ``words``)."""
        old = self.words[word]
        if not old:
            return _NO_RESTRICTION
        self.words[word] = (old & ~_PERM_BITS) | new_bits
        cached = old & _CACHED == _CACHED
        loss = _losses(new_bits)[old & _LOSS_KEY] if cached else _Loss.NONE
        if loss is _Loss.NONE:
            return _NO_RESTRICTION
        frame = [(old & ADDRESS_MASK, PAGE_SIZE)]
        return Restriction(frame, []) if loss is _Loss.FULL else Restriction([], frame)

    def scan_bits(self, vaddr: int, size: int, test: int, change: "BitChange | None" = None,
                  collect: bool = True) -> "BitScan":
        """The leaf entries (present or PROT_NONE) of the user-half range with any bit
        of ``test`` set, changed by ``change`` if given (see ``BitChange``): their
        count (in 4 KiB pages), their addresses (when ``collect``; a 2 MiB page once,
        by its base) and the frames that lost A or D (to invalidate). Only
        ``kvmdune.memory.page_bits`` should clear A or D: it keeps them for the
        other readers."""
        end = vaddr + size
        if not 0 <= vaddr <= end <= USER_SPACE_END:
            raise PageTableError(f"range {vaddr:#x}+{size:#x} is not in the user half")
        change = change or NO_CHANGE
        hits, pages, full, dirty_only = _ptescan.walk(
            self.words, self.root, vaddr, end, int(test), int(change.clear),
            int(change.cond1), int(change.set1), int(change.cond2), int(change.set2),
            collect)
        return BitScan(hits, pages if pages is not None else [], full, dirty_only)

    def count_bits(self, vaddr: int, size: int, test: int) -> int:
        """How many 4 KiB pages of the user-half range have a leaf entry (present or
        PROT_NONE) with any bit of ``test``: ``scan_bits`` that changes and collects
        nothing, for counters (the resident set) called on hot paths."""
        end = vaddr + size
        if not 0 <= vaddr <= end <= USER_SPACE_END:
            raise PageTableError(f"range {vaddr:#x}+{size:#x} is not in the user half")
        return _ptescan.walk(self.words, self.root, vaddr, end, int(test), 0, 0, 0, 0, 0,
                             False)[0]

    def set_bits(self, vaddr: int, bits: PTE) -> None:
        """Set bits (A, D) in the leaf entry of ``vaddr``, as the CPU would on access."""
        found = self.walk(vaddr)
        if found is not None:
            self.words[found.entry_paddr // WORD_SIZE] = found.entry | int(bits)

    def tables(self) -> list[int]:
        """Every table frame of the user half, children before parents, the root
        last (for teardown and accounting)."""
        return _ptescan.tables(self.words, self.root, ENTRIES_PER_TABLE // 2)


_runs = _ptescan.runs


class _Loss(enum.Enum):
    """What a present entry loses under a protect."""

    NONE = 0
    WRITE = 1    # write access only
    FULL = 2     # more: read, user or execute access


#: The bits of an entry that decide what a protect takes from it.
_LOSS_KEY = _P | _RW | _US | _NX
_NO_RESTRICTION = Restriction([], [])


@functools.lru_cache(maxsize=64)
def _losses(new_bits: int) -> dict[int, _Loss]:
    """What a present page loses under ``new_bits``, by its old P/RW/US/NX."""
    keep = ~_PERM_BITS
    losses = {}
    for old in (_P | rw | us | nx for rw in (0, _RW) for us in (0, _US) for nx in (0, _NX)):
        new = (old & keep) | new_bits
        losses[old] = (_Loss.WRITE if is_write_restriction(old, new)
                       else _Loss.FULL if is_restriction(old, new) else _Loss.NONE)
    return losses


def _frame_mask(page_size: int) -> int:
    return HUGE_ADDRESS_MASK if page_size > PAGE_SIZE else ADDRESS_MASK


class _FrameSet:
    """Frames gathered by an operation, handed back as coalesced ranges."""

    def __init__(self) -> None:
        self._by_size: dict[int, list[int]] = {}

    def add(self, frames: list[int], page_size: int) -> None:
        if frames:
            self._by_size.setdefault(page_size, []).extend(frames)

    def ranges(self) -> list[tuple[int, int]]:
        """Sorted (start, length) ranges, adjacent frames merged."""
        runs: list[tuple[int, int]] = []
        for size, frames in self._by_size.items():
            frames.sort()
            runs.extend(_runs(frames, size))
        return coalesce(runs)


def coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted (start, length) ranges with overlapping and adjacent ones merged."""
    merged: list[tuple[int, int]] = []
    for start, length in sorted(ranges):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            prev_start, prev_length = merged[-1]
            merged[-1] = (prev_start, max(prev_length, start + length - prev_start))
        else:
            merged.append((start, length))
    return merged


def _check_range(vaddr: int, size: int, align: int) -> None:
    if vaddr % align or size % align or size <= 0:
        raise PageTableError(f"range {vaddr:#x}+{size:#x} is not {align:#x}-aligned")
    end = vaddr + size
    if not ((0 <= vaddr and end <= USER_SPACE_END)
            or (KERNEL_SPACE_START <= vaddr and end <= ADDRESS_SPACE_END)):
        raise PageTableError(f"range {vaddr:#x}+{size:#x} is not canonical")


def _words(values) -> memoryview:
    return memoryview(array.array("Q", values))


def _zeros(count: int) -> memoryview:
    return memoryview(array.array("Q", [0]) * count)
