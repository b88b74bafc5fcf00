"""Page tables against a reference model, on plain memory (no KVM needed)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kvmdune.memory import (PTE, AlreadyMapped, FrameAllocator, PageTableError, PageTables,
                            Perm)
from kvmdune.memory.frames import HUGE_PAGE_SIZE, PAGE_SIZE
from kvmdune.memory.pagetable import BitChange, Restriction, coalesce

MEMORY = 32 << 20
BASE = 0x7F00_0000_0000          # crosses no special boundary; PML4 index 254
PAGES = 1024                     # the modelled window: 4 MiB = two 2 MiB regions
PERMS = [Perm.READ | Perm.USER, Perm.READ | Perm.WRITE | Perm.USER,
         Perm.READ | Perm.EXEC | Perm.USER, Perm.READ | Perm.WRITE, Perm.NONE | Perm.USER]


def make_tables():
    memory = bytearray(MEMORY)
    frames = FrameAllocator(PAGE_SIZE, MEMORY)
    tables = PageTables(memoryview(memory).cast("Q"), frames.alloc, frames.free,
                        alloc_huge=frames.alloc_huge)
    return tables, frames


def _effective(perm: Perm) -> Perm:
    return perm


class PageTableModel(RuleBasedStateMachine):
    """Random map / protect / unmap sequences compared with a dict of page -> perm."""

    def __init__(self) -> None:
        super().__init__()
        self.tables, self.frames = make_tables()
        self.model: dict[int, Perm] = {}
        self.baseline = self.frames.allocated_bytes

    pages = st.integers(min_value=0, max_value=PAGES - 1)
    counts = st.integers(min_value=1, max_value=64)

    @rule(first=pages, count=counts, perm=st.sampled_from(PERMS))
    def map(self, first, count, perm):
        count = min(count, PAGES - first)
        wanted = range(first, first + count)
        vaddr = BASE + first * PAGE_SIZE
        if any(page in self.model for page in wanted):
            with pytest.raises(AlreadyMapped):
                self.tables.map(vaddr, count * PAGE_SIZE, perm)
            return
        self.tables.map(vaddr, count * PAGE_SIZE, perm)
        self.model.update((page, perm) for page in wanted)

    @rule(region=st.integers(min_value=0, max_value=PAGES * PAGE_SIZE // HUGE_PAGE_SIZE - 1),
          perm=st.sampled_from(PERMS))
    def map_huge(self, region, perm):
        first = region * HUGE_PAGE_SIZE // PAGE_SIZE
        wanted = range(first, first + HUGE_PAGE_SIZE // PAGE_SIZE)
        vaddr = BASE + region * HUGE_PAGE_SIZE
        # Mapped pages, or a table (which stays once made): a 2 MiB page never fits.
        if any(page in self.model for page in wanted) or self.tables.has_table(
                vaddr, HUGE_PAGE_SIZE):
            with pytest.raises(AlreadyMapped):
                self.tables.map(vaddr, HUGE_PAGE_SIZE, perm, huge=True)
            return
        self.tables.map(vaddr, HUGE_PAGE_SIZE, perm, huge=True)
        self.model.update((page, perm) for page in wanted)

    @rule(first=pages, count=counts, perm=st.sampled_from(PERMS))
    def protect(self, first, count, perm):
        count = min(count, PAGES - first)
        self.tables.protect(BASE + first * PAGE_SIZE, count * PAGE_SIZE, perm)
        for page in range(first, first + count):
            if page in self.model:
                self.model[page] = perm

    @rule(first=pages, count=counts)
    def unmap(self, first, count):
        count = min(count, PAGES - first)
        self.tables.unmap(BASE + first * PAGE_SIZE, count * PAGE_SIZE)
        for page in range(first, first + count):
            self.model.pop(page, None)

    @invariant()
    def walks_match_model(self):
        frames_seen = {}
        for page in range(0, PAGES, 7):
            found = self.tables.walk(BASE + page * PAGE_SIZE)
            perm = self.model.get(page)
            if perm is None:
                assert found is None
                continue
            assert found is not None
            assert found.perm == perm
            assert found.present == bool(perm & (Perm.READ | Perm.WRITE | Perm.EXEC))
            assert found.user == bool(perm & Perm.USER)
            if found.present:
                assert found.writable == bool(perm & Perm.WRITE)
                assert found.nx == (not perm & Perm.EXEC)
            # Distinct pages never share a frame.
            frame = found.paddr
            assert frame not in frames_seen, (page, frames_seen.get(frame))
            frames_seen[frame] = page

    @invariant()
    def frames_accounted(self):
        if not self.model:
            # Everything unmapped: only the tables remain (they stay: pagetable.py).
            tables = len(list(self.tables.tables()))
            assert self.frames.allocated_bytes == self.baseline + (tables - 1) * PAGE_SIZE


TestPageTableModel = PageTableModel.TestCase
TestPageTableModel.settings = settings(max_examples=60, stateful_step_count=25,
                                       deadline=None)


def table_bytes(tables: PageTables) -> int:
    return len(list(tables.tables())) * PAGE_SIZE


def test_unmapped_range_is_not_mapped_and_frames_return_but_tables_stay():
    tables, frames = make_tables()
    before = frames.allocated_bytes - table_bytes(tables)
    tables.map(BASE, 64 * PAGE_SIZE, Perm.READ | Perm.WRITE | Perm.USER)
    assert tables.is_mapped(BASE, PAGE_SIZE)
    linked = list(tables.tables())
    tables.unmap(BASE, 64 * PAGE_SIZE)
    assert not tables.is_mapped(BASE, 64 * PAGE_SIZE)
    # The emptied tables stay linked where they were (KVM's shadow may still link
    # them there: freed and reused elsewhere, they would alias two regions).
    assert list(tables.tables()) == linked and len(linked) == 4
    assert tables.has_table(BASE, PAGE_SIZE)
    assert frames.allocated_bytes == before + table_bytes(tables)


def test_a_huge_page_never_replaces_a_table():
    tables, _ = make_tables()
    tables.map(BASE, PAGE_SIZE, Perm.READ | Perm.USER)
    tables.unmap(BASE, PAGE_SIZE)
    assert not tables.is_mapped(BASE, HUGE_PAGE_SIZE) and tables.has_table(BASE, HUGE_PAGE_SIZE)
    with pytest.raises(AlreadyMapped):
        tables.map(BASE, HUGE_PAGE_SIZE, Perm.READ | Perm.USER, huge=True)
    tables.map(BASE + HUGE_PAGE_SIZE, HUGE_PAGE_SIZE, Perm.READ | Perm.USER, huge=True)
    assert tables.walk(BASE + HUGE_PAGE_SIZE).page_size == HUGE_PAGE_SIZE
    assert not tables.has_table(BASE + HUGE_PAGE_SIZE, HUGE_PAGE_SIZE)


def test_map_failure_rolls_back():
    memory = bytearray(1 << 20)
    frames = FrameAllocator(PAGE_SIZE, 1 << 20)
    tables = PageTables(memoryview(memory).cast("Q"), frames.alloc, frames.free)
    before = frames.allocated_bytes - table_bytes(tables)
    with pytest.raises(MemoryError):
        tables.map(BASE, 4 << 20, Perm.READ | Perm.USER)
    assert frames.allocated_bytes == before + table_bytes(tables)   # the tables stay
    assert not tables.is_mapped(BASE, 4 << 20)


def test_restrictions_are_reported_for_invalidation():
    tables, _ = make_tables()
    rw = Perm.READ | Perm.WRITE | Perm.USER
    tables.map(BASE, 4 * PAGE_SIZE, rw)
    for page in range(4):                  # used by the MMU: it may cache them
        tables.set_bits(BASE + page * PAGE_SIZE, PTE.ACCESSED)
    frame = tables.walk(BASE).paddr
    assert tables.protect(BASE, 4 * PAGE_SIZE, rw | Perm.EXEC) == Restriction([], [])
    rx = Perm.READ | Perm.EXEC | Perm.USER
    # Only write access gone (one page, and a run of them): reads may go on.
    assert tables.protect(BASE, PAGE_SIZE, rx) == Restriction([], [(frame, PAGE_SIZE)])
    third, fourth = (tables.walk(BASE + i * PAGE_SIZE).paddr for i in (2, 3))
    assert tables.protect(BASE + 2 * PAGE_SIZE, 2 * PAGE_SIZE, rx) == Restriction(
        [], sorted([(third, PAGE_SIZE), (fourth, PAGE_SIZE)]) if fourth != third + PAGE_SIZE
        else [(third, 2 * PAGE_SIZE)])
    # Execute or user access gone too: a full invalidation.
    second = tables.walk(BASE + PAGE_SIZE).paddr
    assert tables.protect(BASE + PAGE_SIZE, PAGE_SIZE, Perm.READ | Perm.USER) == Restriction(
        [(second, PAGE_SIZE)], [])
    assert tables.protect(BASE, PAGE_SIZE, Perm.READ | Perm.EXEC) == Restriction(
        [(frame, PAGE_SIZE)], [])
    tables.set_bits(BASE, PTE.DIRTY)
    found = tables.scan_bits(BASE, 4 * PAGE_SIZE, PTE.DIRTY, BitChange(clear=PTE.DIRTY))
    assert found.pages == [BASE] and found.dirty_only == [(frame, PAGE_SIZE)]
    assert found.full == []


def test_entries_never_accessed_need_no_invalidation():
    """An entry with A clear was never used by the MMU, so nothing caches it: taking
    access from it, or unmapping it, reports nothing to invalidate; the accessed
    ones among them still are."""
    tables, _ = make_tables()
    rw, read = Perm.READ | Perm.WRITE | Perm.USER, Perm.READ | Perm.USER
    tables.map(BASE, 4 * PAGE_SIZE, rw)
    assert tables.protect(BASE, PAGE_SIZE, read) == Restriction([], [])
    assert tables.protect(BASE, 4 * PAGE_SIZE, Perm.NONE) == Restriction([], [])
    tables.protect(BASE, 4 * PAGE_SIZE, rw)
    tables.set_bits(BASE + 2 * PAGE_SIZE, PTE.ACCESSED)
    third = tables.walk(BASE + 2 * PAGE_SIZE).paddr
    assert tables.protect(BASE, 4 * PAGE_SIZE, Perm.NONE) == Restriction(
        [(third, PAGE_SIZE)], [])
    tables.protect(BASE, 4 * PAGE_SIZE, rw)
    assert tables.unmap(BASE, 4 * PAGE_SIZE) == [(third, PAGE_SIZE)]
    tables.map(BASE, 4 * PAGE_SIZE, rw)
    assert tables.unmap(BASE, 4 * PAGE_SIZE) == []
    # The same through the Python walk (a 2 MiB page only partly unmapped).
    huge = BASE + 4 * HUGE_PAGE_SIZE
    tables.map(huge, HUGE_PAGE_SIZE, rw, huge=True)
    assert tables.unmap(huge, PAGE_SIZE) == []


@pytest.mark.parametrize("vaddr,size", [
    (BASE + 1, PAGE_SIZE), (BASE, 100), (0x0000_8000_0000_0000, PAGE_SIZE),
    (0x0000_7FFF_FFFF_F000, 2 * PAGE_SIZE), (BASE, 0),
])
def test_bad_ranges_are_refused(vaddr, size):
    tables, _ = make_tables()
    with pytest.raises(PageTableError):
        tables.map(vaddr, size, Perm.READ)


def test_large_ranges_are_fast_enough():
    """1 GiB of 4 KiB pages: map, collect and clear dirty bits, protect, unmap —
    each well under a second (a functional bound, not a benchmark)."""
    import time

    memory = bytearray(1200 << 20)
    frames = FrameAllocator(PAGE_SIZE, 1200 << 20)
    tables = PageTables(memoryview(memory).cast("Q"), frames.alloc, frames.free)
    gib = 1 << 30
    for operation in (
        lambda: tables.map(BASE, gib, Perm.READ | Perm.WRITE | Perm.USER),
        lambda: tables.scan_bits(BASE, gib, PTE.DIRTY, BitChange(clear=PTE.DIRTY)),
        lambda: tables.protect(BASE, gib, Perm.READ | Perm.USER),
        lambda: tables.unmap(BASE, gib),
    ):
        started = time.perf_counter()
        operation()
        assert time.perf_counter() - started < 2.0


def _mixed_tables():
    """Owned 4 KiB pages, pages of frames given by the caller (not owned), PROT_NONE
    pages and two 2 MiB pages, in one window."""
    tables, frames = make_tables()
    rw = Perm.READ | Perm.WRITE | Perm.USER
    tables.map(BASE, 40 * PAGE_SIZE, rw)
    tables.map(BASE + 40 * PAGE_SIZE, 8 * PAGE_SIZE, rw, paddr=frames.alloc())
    tables.map(BASE + 60 * PAGE_SIZE, 4 * PAGE_SIZE, Perm.NONE | Perm.USER)
    tables.map(BASE + HUGE_PAGE_SIZE, 2 * HUGE_PAGE_SIZE, rw, huge=True)
    return tables, frames


@pytest.mark.parametrize("first,count", [
    (0, 3 * HUGE_PAGE_SIZE // PAGE_SIZE),            # everything
    (10, 50),                                        # owned, given and PROT_NONE pages
    (30, HUGE_PAGE_SIZE // PAGE_SIZE),               # into the first 2 MiB page
    (HUGE_PAGE_SIZE // PAGE_SIZE + 3, 700),          # inside both 2 MiB pages
])
def test_native_unmap_matches_the_entry_by_entry_unmap(first, count):
    """The native walker (an exec's teardown of a whole space) clears the same
    entries, frees the same frames and reports the same frames to invalidate as the
    entry-by-entry walk; a 2 MiB page only partly inside is split, as before."""
    native, native_frames = _mixed_tables()
    chunked, chunked_frames = _mixed_tables()
    vaddr, size = BASE + first * PAGE_SIZE, count * PAGE_SIZE
    assert native.unmap(vaddr, size) == coalesce(chunked._unmap_chunks(vaddr, vaddr + size))
    assert native_frames.allocated_bytes == chunked_frames.allocated_bytes
    assert native_frames.free_bytes == chunked_frames.free_bytes
    for page in range(0, 3 * HUGE_PAGE_SIZE, PAGE_SIZE):
        # Where a split 2 MiB page's new table lies may differ (frames were freed in
        # another order before it was allocated): what the entries map may not.
        assert _mapping(native, BASE + page) == _mapping(chunked, BASE + page), hex(page)
    assert len(native.tables()) == len(chunked.tables())


def _mapping(tables: PageTables, vaddr: int):
    found = tables.walk(vaddr)
    return None if found is None else (found.paddr, found.page_size, found.entry)
