"""What Linux shows of the guest's memory page by page, read from its page tables and
their accessed and dirty bits: /proc/self/pagemap entries, the counters of
/proc/self/smaps and the RSS of /proc/self/status, and what clear_refs clears.

Linux's rules, and how each is met here (fs/proc/task_mmu.c):

- A page is *present* when it has a page-table entry. kvmdune maps small mappings
  eagerly, so for anonymous memory a page counts as present once the guest touched
  it (A since mapping: what Linux's first fault would have mapped); file and shared
  pages once mapped (Linux maps file pages around a fault from its page cache).
- An anonymous page only read is Linux's shared zero page: present, but neither in
  RSS nor exclusive. A written one is a real page: in RSS (Anonymous, Private_Dirty)
  and exclusively mapped. A written page of a private file mapping is a copy
  (anonymous); an unwritten one a file page.
- *Soft-dirty* (bit 55) is the PTE dirty bit seen through the "pagemap" reader of
  ``kvmdune.memory.page_bits``, cleared by clear_refs 4, or the mapping's
  VM_SOFTDIRTY (``Vma.soft_dirty``: every new or grown mapping until clear_refs 4).
- *Referenced* is the accessed bit seen through the "referenced" reader, cleared by
  clear_refs 1 (all), 2 (anonymous) or 3 (file-backed). Neither reader disturbs the
  other, the Dune API's, or mincore's.
- What kvmdune cannot know is stated: it cannot see other processes mapping the same
  file or shared memory, so a file page of a private mapping counts as exclusively
  mapped and shared mappings never as exclusive; Pss equals Rss.
"""

from __future__ import annotations

import array
import enum
from dataclasses import dataclass
from typing import Iterable

from ..machine.layout import USER_PROGRAM_END
from ..memory import HUGE_PAGE_SIZE, PAGE_SIZE, PTE, AddressSpace

PAGEMAP_READER = "pagemap"
REFERENCED_READER = "referenced"
#: One /proc/self/pagemap entry per page.
PAGEMAP_ENTRY_SIZE = 8
_MAPPED = int(PTE.PRESENT | PTE.PROTNONE)
#: Page sets are read this much of a mapping at a time (16,384 pages).
CHUNK = 64 << 20


class PagemapBit(enum.IntFlag):
    """Bits of a /proc/PID/pagemap entry (Documentation/admin-guide/mm/pagemap.rst);
    bits 0-54 (the frame number) are zero, as for an unprivileged reader."""

    SOFT_DIRTY = 1 << 55
    EXCLUSIVE = 1 << 56          # page exclusively mapped
    UFFD_WP = 1 << 57            # userfaultfd write-protected: never here
    FILE_OR_SHARED_ANON = 1 << 61
    SWAPPED = 1 << 62            # never here: guest memory is not swapped by kvmdune
    PRESENT = 1 << 63


_SOFT_DIRTY = int(PagemapBit.SOFT_DIRTY)
_PRESENT = int(PagemapBit.PRESENT)
_EXCLUSIVE = int(PagemapBit.EXCLUSIVE)
_FILE_OR_SHARED_ANON = int(PagemapBit.FILE_OR_SHARED_ANON)


class ClearRefs(enum.IntEnum):
    """What writing to /proc/PID/clear_refs asks (fs/proc/task_mmu.c: clear_refs_types)."""

    ALL = 1
    ANON = 2
    MAPPED = 3
    SOFT_DIRTY = 4
    MM_HIWATER_RSS = 5


class Backing(enum.Enum):
    """What a mapping's pages are to Linux."""

    ANONYMOUS = "anonymous"          # private anonymous: heap, stack, bss, MAP_ANONYMOUS
    FILE_PRIVATE = "file private"    # a file mapped MAP_PRIVATE (copies when written)
    SHARED_FILE = "shared file"      # a file mapped MAP_SHARED
    SHARED_ANONYMOUS = "shmem"       # MAP_SHARED|MAP_ANONYMOUS (shmem)


def backing(vma) -> Backing:
    named_file = vma.name.startswith("/")
    if vma.shared or vma.region is not None:
        return Backing.SHARED_FILE if named_file else Backing.SHARED_ANONYMOUS
    return Backing.FILE_PRIVATE if named_file else Backing.ANONYMOUS


def _huge_bases(space: AddressSpace, found: list[int]) -> list[int]:
    """The 2 MiB pages among ``found`` (page addresses from a scan: a 2 MiB page is
    given once, by its base)."""
    return [page for page in found if page % HUGE_PAGE_SIZE == 0
            and (entry := space.walk(page)) is not None and entry.page_size == HUGE_PAGE_SIZE]


def _small_pages(space: AddressSpace, found: list[int], start: int, end: int,
                 in_huge: set[int] | None = None) -> set[int]:
    """The 4 KiB pages of [start, end) among ``found`` (page addresses from a scan,
    which gives a 2 MiB page once, by its base): a 2 MiB page counts as its 4 KiB
    pages, as Linux's pagemap shows a transparent huge page (those are added to
    ``in_huge`` too, if given)."""
    pages: set[int] = set()
    for page in found:
        if page % HUGE_PAGE_SIZE == 0 or page < start:      # perhaps a 2 MiB page
            found_page = space.walk(page)
            if found_page is not None and found_page.page_size == HUGE_PAGE_SIZE:
                small = range(max(page, start), min(page + HUGE_PAGE_SIZE, end), PAGE_SIZE)
                pages.update(small)
                if in_huge is not None:
                    in_huge.update(small)
                continue
        pages.add(page)
    return pages


@dataclass(frozen=True)
class PageSets:
    """The pages of one mapping (or a part of it), by what the tables say."""

    mapped: set[int]         # with an entry (present or PROT_NONE)
    touched: set[int]        # accessed since mapped
    written: set[int]        # dirty since mapped
    soft_dirty: set[int]     # dirty since the last clear_refs 4
    referenced: set[int]     # accessed since the last clear_refs 1-3
    huge_written: int = 0    # 2 MiB pages dirty since mapped (Linux: anonymous THPs)
    in_huge: frozenset[int] = frozenset()   # mapped pages that are part of a 2 MiB page

    @classmethod
    def read(cls, space: AddressSpace, start: int, end: int) -> "PageSets":
        bits = space.page_bits
        since = bits.since_mapping
        size = end - start
        def pages(found: list[int]) -> set[int]:
            return _small_pages(space, found, start, end)

        in_huge: set[int] = set()
        mapped = _small_pages(space, space.tables.scan_bits(start, size, _MAPPED).pages,
                              start, end, in_huge)
        if not mapped:                 # a hole: nothing else to read
            return cls(set(), set(), set(), set(), set())
        written = since.read(start, size, PTE.DIRTY, clear=False)
        return cls(
            mapped=mapped,
            touched=pages(since.read(start, size, PTE.ACCESSED, clear=False)),
            written=pages(written),
            huge_written=len(_huge_bases(space, [page for page in written
                                                 if start <= page < end])),
            in_huge=frozenset(in_huge),
            soft_dirty=pages(bits.reader(PAGEMAP_READER).read(start, size, PTE.DIRTY,
                                                              clear=False)),
            referenced=pages(bits.reader(REFERENCED_READER).read(start, size, PTE.ACCESSED,
                                                                 clear=False)))

    def present(self, kind: Backing) -> set[int]:
        """Pages Linux would have in the page table."""
        if kind is Backing.ANONYMOUS:
            return self.mapped & (self.touched | self.written)
        return self.mapped

    def anonymous(self, kind: Backing) -> set[int]:
        """Present pages that are anonymous memory (not the zero page, not a file's)."""
        if kind in (Backing.ANONYMOUS, Backing.FILE_PRIVATE):
            return self.mapped & self.written
        return set()

    def resident(self, kind: Backing) -> set[int]:
        """Pages counted in RSS (the zero page is not)."""
        if kind is Backing.ANONYMOUS:
            return self.mapped & self.written
        return self.mapped


# -- /proc/self/pagemap -----------------------------------------------------------------

def pagemap_entries(space: AddressSpace, vmas: Iterable, first_page: int,
                    count: int) -> Iterable[tuple[int, bytes]]:
    """The runs of pagemap entries for pages [first_page, first_page+count) that are
    not all zero: (page index, entries). Pages outside every mapping read as zero."""
    start, end = first_page * PAGE_SIZE, (first_page + count) * PAGE_SIZE
    for vma in vmas:
        for low, high in _chunks(max(vma.start, start), min(vma.end, end)):
            entries = _vma_entries(space, vma, low, high)
            if entries is not None:
                yield low // PAGE_SIZE, entries


def _chunks(start: int, end: int) -> Iterable[tuple[int, int]]:
    """[start, end) in pieces of at most CHUNK: the page sets of one piece stay small
    however large the mapping (a MAP_NORESERVE reservation of terabytes)."""
    for low in range(start, end, CHUNK):
        yield low, min(low + CHUNK, end)


def _vma_entries(space: AddressSpace, vma, low: int, high: int) -> bytes | None:
    """The entries of [low, high) inside ``vma``; None when they are all zero."""
    kind = backing(vma)
    pages = PageSets.read(space, low, high)
    present = pages.present(kind)
    base = _SOFT_DIRTY if vma.soft_dirty else 0
    if not base and not present:
        return None
    entries = array.array("Q", [base]) * ((high - low) // PAGE_SIZE)
    # Plain ints in the loop: IntFlag arithmetic per page made a read of a busy
    # heap's entries (bdwgc's, at every collection) cost milliseconds.
    unwritten = base | _PRESENT | _sharing_bits(kind, False)
    written = base | _PRESENT | _sharing_bits(kind, True)
    # A 2 MiB page only read is Linux's huge zero page, which pagemap shows as a
    # page with a file behind it (not anonymous), unlike the 4 KiB zero page.
    huge_zero = unwritten | _FILE_OR_SHARED_ANON if kind is Backing.ANONYMOUS else unwritten
    soft_dirty, changed, in_huge = pages.soft_dirty, pages.written, pages.in_huge
    for page in present:
        value = written if page in changed else huge_zero if page in in_huge else unwritten
        if page in soft_dirty:
            value |= _SOFT_DIRTY
        entries[(page - low) // PAGE_SIZE] = value
    return entries.tobytes()


def _sharing_bits(kind: Backing, written: bool) -> int:
    """Bits 61 and 56 of a present page."""
    if kind is Backing.ANONYMOUS:
        return _EXCLUSIVE if written else 0                 # else the zero page
    if kind is Backing.FILE_PRIVATE:
        # A written page is the process's own copy; an unwritten one a file page,
        # mapped by nobody else that kvmdune can see.
        return _EXCLUSIVE if written else _FILE_OR_SHARED_ANON | _EXCLUSIVE
    return _FILE_OR_SHARED_ANON


# -- /proc/self/smaps and status ----------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    """One mapping's counters for smaps, in pages."""

    rss: int
    private_clean: int
    private_dirty: int
    referenced: int
    anonymous: int
    anonymous_huge: int      # in 2 MiB pages with the THP flag (smaps AnonHugePages)


def vma_usage(space: AddressSpace, vma) -> Usage:
    kind = backing(vma)
    rss = dirty = referenced = anonymous = huge = 0
    for low, high in _chunks(vma.start, vma.end):
        pages = PageSets.read(space, low, high)
        resident = pages.resident(kind)
        rss += len(resident)
        dirty += len(resident & pages.written)
        referenced += len(resident & pages.referenced)
        anonymous += len(pages.anonymous(kind))
        if kind is Backing.ANONYMOUS:
            huge += pages.huge_written
    return Usage(rss=rss, private_clean=rss - dirty, private_dirty=dirty,
                 referenced=referenced, anonymous=anonymous, anonymous_huge=huge)


@dataclass(frozen=True)
class Rss:
    """The resident set by kind, in pages (status: RssAnon, RssFile, RssShmem)."""

    anonymous: int
    file: int
    shmem: int

    @property
    def total(self) -> int:
        return self.anonymous + self.file + self.shmem


def rss(space: AddressSpace, vmas: Iterable, start: int = 0,
        end: int = USER_PROGRAM_END) -> Rss:
    """The resident set (of [start, end) only, if given: ``vmas`` are then those
    overlapping it). Noted before an unmap that drops resident pages (the peak), so
    it is cheap: one native walk counts every page written since mapped (anonymous
    memory, and the copies of private file pages), and two per run of adjacent file
    or shared mappings of one kind (a library's segments) count what those hold."""
    written = space.page_bits.since_mapping.mask(PTE.DIRTY)
    count = space.tables.count_bits

    anonymous = count(start, end - start, written)
    file = shmem = 0
    for kind, low, high in _backed_runs(vmas, start, end):
        mapped, changed = count(low, high - low, _MAPPED), count(low, high - low, written)
        if kind is Backing.FILE_PRIVATE:
            file += mapped - changed          # the written ones are anonymous copies
            continue
        anonymous -= changed                  # shared memory is never anonymous
        if kind is Backing.SHARED_FILE:
            file += mapped
        else:
            shmem += mapped
    return Rss(anonymous, file, shmem)


def holds_resident(space: AddressSpace, vmas: Iterable, start: int, end: int) -> bool:
    """Whether ``rss(space, vmas, start, end).total`` is above zero (``vmas``: those
    overlapping [start, end)), found with one walk where the range has a written
    page or only anonymous memory (asked before every unmap). ``rss``'s total is
    the written pages plus, over file and shared mappings, the mapped pages not
    written; written pages are mapped, so it is zero exactly when nothing in the
    range is written and nothing of a file or shared mapping is mapped."""
    count = space.tables.count_bits
    if count(start, end - start, space.page_bits.since_mapping.mask(PTE.DIRTY)):
        return True
    return any(count(low, high - low, _MAPPED)
               for _kind, low, high in _backed_runs(vmas, start, end))


def _backed_runs(vmas: Iterable, start: int, end: int) -> list[tuple[Backing, int, int]]:
    """The parts of [start, end) that file or shared mappings cover, as runs of
    adjacent mappings of the same kind (kind, start, end), in address order."""
    runs: list[tuple[Backing, int, int]] = []
    for vma in vmas:
        kind = backing(vma)
        low, high = max(vma.start, start), min(vma.end, end)
        if kind is Backing.ANONYMOUS or low >= high:
            continue
        if runs and runs[-1][0] is kind and runs[-1][2] == low:
            runs[-1] = (kind, runs[-1][1], high)
        else:
            runs.append((kind, low, high))
    return runs


# -- /proc/self/clear_refs ----------------------------------------------------------------

def clear_refs(mm, request: ClearRefs) -> None:
    """Act on a write to clear_refs (the caller checked the value)."""
    space = mm.space
    bits = space.page_bits
    if request is ClearRefs.MM_HIWATER_RSS:
        mm.rss_peak_pages = rss(space, mm.vmas).total
        return
    with space.batch():
        if request is ClearRefs.SOFT_DIRTY:
            reader, kind, wanted = bits.reader(PAGEMAP_READER), PTE.DIRTY, None
            mm.clear_soft_dirty()
        else:
            reader, kind = bits.reader(REFERENCED_READER), PTE.ACCESSED
            wanted = {ClearRefs.ALL: None, ClearRefs.ANON: False, ClearRefs.MAPPED: True}[request]
        for vma in mm.vmas:
            # Linux's rule: anon means no file behind the mapping (shmem has one).
            has_file = backing(vma) is not Backing.ANONYMOUS
            if wanted is None or has_file == wanted:
                reader.read(vma.start, vma.end - vma.start, kind, clear=True)
