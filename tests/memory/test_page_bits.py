"""Several readers of the accessed and dirty bits against a plain model, on guest
memory without a VM (the CPU's setting of A/D is played by ``PageTables.set_bits``;
tests/machine/test_page_bits_guest.py has a real guest set them)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvmdune.memory import PAGE_SIZE, PTE, USER_SPACE_END, AddressSpace, GuestMemory, Perm
from kvmdune.memory import _ptescan
from kvmdune.memory.page_bits import SINCE_MAPPING, TooManyReaders
from kvmdune.memory.pagetable import SOFTWARE_BITS

MEMORY = 16 << 20
#: Eight pages before a 2 MiB boundary and eight after: two page tables.
BASE = 0x40_0000 - 8 * PAGE_SIZE
PAGES = 16
RW = Perm.READ | Perm.WRITE | Perm.USER
READERS = ["pagemap", "dune", "tool"]
KINDS = (PTE.ACCESSED, PTE.DIRTY)


class Recorder:
    """Stands in for the invalidations: remembers the ranges each one got."""

    def __init__(self) -> None:
        self.full: list[tuple[int, int]] = []
        self.dirty_only: list[tuple[int, int]] = []


@pytest.fixture
def space():
    memory = GuestMemory(MEMORY)
    recorder = Recorder()
    space = AddressSpace(memory, invalidate=recorder.full.extend,
                         write_protect=recorder.dirty_only.extend)
    space.recorder = recorder
    yield space
    memory.close()


def frames_of(ranges: list[tuple[int, int]]) -> set[int]:
    return {start + offset for start, length in ranges for offset in range(0, length, PAGE_SIZE)}


class ReadersModel(RuleBasedStateMachine):
    """Random accesses, reads with and without clears, maps, unmaps and protects by
    several readers, compared with a model: per reader and kind, the set of pages
    accessed since that reader last cleared them; "since mapping" for new readers."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = GuestMemory(MEMORY)
        self.recorder = Recorder()
        self.space = AddressSpace(self.memory, invalidate=self.recorder.full.extend,
                                  write_protect=self.recorder.dirty_only.extend)
        self.mapped: set[int] = set()
        self.ever = {kind: set() for kind in KINDS}         # since mapping
        self.seen: dict[str, dict[PTE, set[int]]] = {}       # reader -> kind -> pages
        self.hardware = {kind: set() for kind in KINDS}     # the entries' own A/D bits

    def teardown(self) -> None:
        self.memory.close()

    pages = st.integers(min_value=0, max_value=PAGES - 1)

    def _vaddr(self, page: int) -> int:
        return BASE + page * PAGE_SIZE

    def _sets_of(self, name: str) -> dict[PTE, set[int]]:
        if name not in self.seen:      # a new reader starts from "since mapping"
            self.seen[name] = {kind: set(self.ever[kind]) for kind in KINDS}
        return self.seen[name]

    @rule(first=pages, count=st.integers(min_value=1, max_value=PAGES))
    def map(self, first, count):
        wanted = set(range(first, min(first + count, PAGES)))
        if wanted & self.mapped:
            return
        self.space.map(self._vaddr(min(wanted)), len(wanted) * PAGE_SIZE, RW)
        self.mapped |= wanted

    @rule(page=pages, write=st.booleans())
    def access(self, page, write):
        if page not in self.mapped:
            return
        kinds = KINDS if write else (PTE.ACCESSED,)
        self.space.tables.set_bits(self._vaddr(page), PTE.ACCESSED | (PTE.DIRTY if write else 0))
        for kind in kinds:
            self.ever[kind].add(page)
            self.hardware[kind].add(page)
            for sets in self.seen.values():
                sets[kind].add(page)

    @rule(page=pages)
    def unmap(self, page):
        self.space.unmap(self._vaddr(page), PAGE_SIZE)
        self.mapped.discard(page)
        for sets in [self.ever, self.hardware] + list(self.seen.values()):
            for kind in KINDS:
                sets[kind].discard(page)

    @rule(page=pages, writable=st.booleans())
    def protect(self, page, writable):
        self.space.protect(self._vaddr(page), PAGE_SIZE,
                           RW if writable else Perm.READ | Perm.USER)

    @rule(name=st.sampled_from(READERS), first=pages, count=st.integers(1, PAGES),
          bits=st.sampled_from([PTE.ACCESSED, PTE.DIRTY, PTE.ACCESSED | PTE.DIRTY]),
          clear=st.booleans())
    def read(self, name, first, count, bits, clear):
        window = set(range(first, min(first + count, PAGES)))
        kinds = [kind for kind in KINDS if bits & kind]
        sets = self._sets_of(name)
        expected = sorted(self._vaddr(p) for kind in kinds for p in sets[kind] & window)
        self.recorder.full.clear()
        self.recorder.dirty_only.clear()
        got = self.space.page_bits.reader(name).read(
            self._vaddr(first), len(window) * PAGE_SIZE, bits, clear)
        assert got == sorted(set(expected))
        if not clear:
            assert not self.recorder.full and not self.recorder.dirty_only
            return
        # The entries that lost a hardware bit, and only those, are invalidated.
        lost_a = self.hardware[PTE.ACCESSED] & window if PTE.ACCESSED in kinds else set()
        lost_d = self.hardware[PTE.DIRTY] & window if PTE.DIRTY in kinds else set()
        frame = lambda page: self.space.walk(self._vaddr(page)).paddr
        assert frames_of(self.recorder.full) == {frame(p) for p in lost_a}
        assert frames_of(self.recorder.dirty_only) == {frame(p) for p in lost_d - lost_a}
        for kind in kinds:
            sets[kind] -= window
            self.hardware[kind] -= window

    @invariant()
    def since_mapping_is_everything_since_mapping(self):
        reader = self.space.page_bits.since_mapping
        for kind in KINDS:
            got = reader.read(BASE, PAGES * PAGE_SIZE, kind, clear=False)
            assert got == sorted(self._vaddr(p) for p in self.ever[kind])
            assert reader.count(BASE, PAGES * PAGE_SIZE, kind) == len(self.ever[kind])


ReadersModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                          deadline=None)
TestReadersModel = ReadersModel.TestCase


def test_native_walker_agrees_on_the_entry_bits():
    assert _ptescan.PRESENT == PTE.PRESENT and _ptescan.ACCESSED == PTE.ACCESSED
    assert _ptescan.DIRTY == PTE.DIRTY and _ptescan.HUGE == PTE.HUGE
    assert _ptescan.PROTNONE == PTE.PROTNONE
    assert not any(bit & _ptescan.ADDRESS for bit in SOFTWARE_BITS)
    assert not any(bit & int(flag) for bit in SOFTWARE_BITS for flag in PTE)


def test_a_clear_by_one_reader_is_kept_for_the_others(space):
    space.map(BASE, 4 * PAGE_SIZE, RW)
    pagemap, dune = space.page_bits.reader("pagemap"), space.page_bits.reader("dune")
    space.tables.set_bits(BASE, PTE.ACCESSED | PTE.DIRTY)
    assert dune.read(BASE, 4 * PAGE_SIZE, PTE.DIRTY, clear=True) == [BASE]
    assert dune.read(BASE, 4 * PAGE_SIZE, PTE.DIRTY, clear=True) == []
    assert not space.walk(BASE).dirty                      # the hardware bit is clear
    assert pagemap.read(BASE, 4 * PAGE_SIZE, PTE.DIRTY, clear=False) == [BASE]
    space.tables.set_bits(BASE + PAGE_SIZE, PTE.ACCESSED | PTE.DIRTY)
    assert pagemap.read(BASE, 4 * PAGE_SIZE, PTE.DIRTY, clear=True) == [BASE, BASE + PAGE_SIZE]
    assert dune.read(BASE, 4 * PAGE_SIZE, PTE.DIRTY, clear=False) == [BASE + PAGE_SIZE]


def test_a_page_unmapped_and_mapped_again_has_no_old_bits(space):
    space.map(BASE, PAGE_SIZE, RW)
    frame = space.walk(BASE).paddr
    keeper = space.page_bits.reader("keeper")
    space.tables.set_bits(BASE, PTE.ACCESSED | PTE.DIRTY)
    space.page_bits.reader("clearer").read(BASE, PAGE_SIZE, PTE.DIRTY, clear=True)
    assert keeper.read(BASE, PAGE_SIZE, PTE.DIRTY, clear=False) == [BASE]  # kept for it
    space.unmap(BASE, PAGE_SIZE)
    space.map(BASE, PAGE_SIZE, RW)
    other = BASE + 64 * PAGE_SIZE
    space.map(other, PAGE_SIZE, RW)
    assert frame in (space.walk(BASE).paddr, space.walk(other).paddr)   # reused
    for reader in (keeper, space.page_bits.since_mapping):
        assert reader.read(BASE, 128 * PAGE_SIZE, PTE.ACCESSED | PTE.DIRTY, clear=False) == []


def test_protect_and_huge_page_splits_keep_the_bits(space):
    huge = 0x20_0000
    space.map(huge, 0x20_0000, RW, huge=True)
    reader = space.page_bits.reader("r")
    space.tables.set_bits(huge, PTE.ACCESSED | PTE.DIRTY)
    space.page_bits.reader("other").read(huge, 0x20_0000, PTE.DIRTY, clear=True)
    space.protect(huge + PAGE_SIZE, PAGE_SIZE, Perm.READ | Perm.USER)   # splits it
    got = reader.read(huge, 0x20_0000, PTE.DIRTY, clear=False)
    assert got == [huge + i * PAGE_SIZE for i in range(512)]   # each 4 KiB part


def test_reports_a_huge_page_once_by_its_base(space):
    huge = 0x20_0000
    space.map(huge, 0x20_0000, RW, huge=True)
    space.tables.set_bits(huge + 0x5000, PTE.ACCESSED)
    reader = space.page_bits.reader("r")
    assert reader.read(huge + 0x1000, PAGE_SIZE, PTE.ACCESSED, clear=False) == [huge]
    assert reader.count(huge, 0x20_0000, PTE.ACCESSED) == 512


def test_readers_are_limited_by_the_free_entry_bits_and_give_them_back(space):
    space.map(BASE, PAGE_SIZE, RW)
    bits = space.page_bits
    readers = [bits.reader(f"r{i}") for i in range(len(SOFTWARE_BITS) // 2 - 1)]
    for reader in readers:
        reader.read(BASE, PAGE_SIZE, PTE.ACCESSED | PTE.DIRTY, clear=False)
    with pytest.raises(TooManyReaders):
        bits.reader("one too many").read(BASE, PAGE_SIZE, PTE.ACCESSED | PTE.DIRTY, False)
    space.tables.set_bits(BASE, PTE.ACCESSED)
    readers[1].read(BASE, PAGE_SIZE, PTE.ACCESSED, clear=True)     # others get bits
    readers[0].close()
    assert not space.walk(BASE).entry & readers[0]._bits[PTE.ACCESSED]
    late = bits.reader("late")
    assert late.read(BASE, PAGE_SIZE, PTE.ACCESSED, clear=False) == [BASE]  # since mapping
    with pytest.raises(ValueError):
        readers[0].read(BASE, PAGE_SIZE, PTE.ACCESSED, clear=False)


@pytest.mark.parametrize("vaddr,size,bits", [
    (BASE, PAGE_SIZE, PTE.WRITABLE), (BASE, PAGE_SIZE, PTE(0)),
    (USER_SPACE_END - PAGE_SIZE, 2 * PAGE_SIZE, PTE.DIRTY), (-PAGE_SIZE, PAGE_SIZE, PTE.DIRTY),
    (BASE, -1, PTE.DIRTY),
])
def test_bad_requests_are_refused(space, vaddr, size, bits):
    with pytest.raises(ValueError):
        space.page_bits.reader("r").read(vaddr, size, bits, clear=True)


def test_since_mapping_never_clears(space):
    with pytest.raises(ValueError):
        space.page_bits.since_mapping.read(BASE, PAGE_SIZE, PTE.ACCESSED, clear=True)
    with pytest.raises(ValueError):
        space.page_bits.since_mapping.close()
    assert SINCE_MAPPING in space.page_bits.readers
