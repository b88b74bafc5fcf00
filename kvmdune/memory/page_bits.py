"""Accessed and dirty bits with several readers: each reader sees the bits set since
*its own* last clear.

The MMU keeps one A and one D bit per page-table entry, but several parties ask
"which pages were touched, or written, since I last looked?": /proc/self/pagemap's
soft-dirty bit (cleared by clear_refs 4), smaps' Referenced (clear_refs 1), the Dune
API, kvmdune's own tools. If each cleared the hardware bits itself, each would steal
the others' bits.

So every reader owns one software bit per kind (A, D) in every leaf entry, taken from
the bits the MMU ignores (``pagetable.SOFTWARE_BITS``, allocated on first use). A
reader's view of a kind is the hardware bit OR its own bit. When a reader clears a
kind, every entry whose hardware bit is set first gets the bits of all the *other*
readers of that kind (they have not seen that access yet), then loses the hardware
bit and the reader's own. One pass of the native walker (native/ptescan.c) does it,
so reading and clearing 1 GiB costs well under a millisecond plus the invalidation.

What follows by construction:

- unmapping zeroes the entries: a page unmapped and mapped again, or a frame freed
  and reused elsewhere, carries no old bits for any reader;
- mprotect keeps the bits (it changes only permission bits), and splitting a 2 MiB
  page copies them into its 4 KiB entries;
- ``PageBits.since_mapping`` is a reader that never clears: its view is "accessed (or
  written) since the page was mapped" (residency for mincore, pagemap and RSS). A new
  reader starts as a copy of it, so its first read reports everything since mapping.

Clearing a hardware bit needs an invalidation before the guest runs again
(PLATFORM.md): frames that lost A go to the address space's invalidation, frames
that lost only D to its write protection (on software KVM, KVM's own dirty log,
far cheaper than an mprotect pair per page), both batched by ``space.batch()``.
As with every page-table change, the vCPU must not run during a read: the walk
rewrites entries that the MMU sets bits in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .frames import PAGE_SIZE
from .pagetable import PTE, SOFTWARE_BITS, USER_SPACE_END, BitChange

if TYPE_CHECKING:
    from .address_space import AddressSpace

#: The kinds of bit a reader reads, each its own hardware bit.
KINDS = (PTE.ACCESSED, PTE.DIRTY)
_ALL_KINDS = int(PTE.ACCESSED | PTE.DIRTY)
SINCE_MAPPING = "since-mapping"


class TooManyReaders(Exception):
    """Every software bit of the entries is taken by a reader already."""


class PageBits:
    """The readers of one address space's accessed and dirty bits."""

    def __init__(self, space: "AddressSpace") -> None:
        self.space = space
        self._free = list(SOFTWARE_BITS)
        self._readers: dict[str, BitReader] = {}
        #: Called after any reader's bits change hands (allocated, given back): for
        #: native code that reads or clears on a reader's behalf (``bit_masks``).
        self.observers: list[Callable[[], None]] = []
        self.since_mapping = self.reader(SINCE_MAPPING)
        for kind in KINDS:           # others keep it up to date from their first clear
            self.since_mapping._bit(kind)

    def reader(self, name: str) -> "BitReader":
        """The reader called ``name`` (made on first use)."""
        found = self._readers.get(name)
        if found is None:
            found = self._readers[name] = BitReader(self, name)
        return found

    @property
    def readers(self) -> list[str]:
        return list(self._readers)

    def bit_masks(self, name: str) -> tuple[dict[PTE, int], dict[PTE, int]]:
        """Reader ``name``'s own software bit per kind (0 where it has none yet;
        nothing is allocated) and the bits of every other reader, per kind."""
        reader = self._readers.get(name)
        mine = {kind: reader._bits.get(kind, 0) if reader else 0 for kind in KINDS}
        others = {kind: self._others(reader, kind) for kind in KINDS}
        return mine, others

    def _changed(self) -> None:
        for observer in list(self.observers):
            observer()

    def _allocate(self, reader: "BitReader", kind: PTE) -> int:
        if not self._free:
            raise TooManyReaders(
                f"no page-table entry bit is left for reader {reader.name!r} "
                f"(readers: {', '.join(self._readers)}): close one first")
        bit = self._free.pop(0)
        if reader is not self.since_mapping:
            # Start from "since mapping": copy its bit of this kind into the new one.
            archive = self.since_mapping._bits[kind]
            self.space.tables.scan_bits(0, USER_SPACE_END, archive,
                                        BitChange(cond1=archive, set1=bit), collect=False)
        return bit

    def hand_over(self, kind: PTE, vaddr: int, size: int) -> None:
        """Move the hardware bits ``kind`` (A or D) of [vaddr, vaddr+size) into every
        reader's own bit, with no invalidation: only for a VM that has never run (a
        forked child's, whose new VM holds no translation). Every reader still sees
        the accesses; a hardware bit set again later is the new VM's doing: an A bit
        means it made a translation (``AddressSpace.unmap_unaccessed``; Linux's fork
        makes the child's entries old), a D bit that it wrote (vfork.py)."""
        readers = self._others(None, kind)
        self.space.tables.scan_bits(vaddr, size, kind,
                                    BitChange(clear=int(kind), cond1=int(kind), set1=readers),
                                    collect=False)

    def _others(self, reader: "BitReader | None", kind: PTE) -> int:
        """The bits of every reader but ``reader`` of ``kind``."""
        mask = 0
        for other in self._readers.values():
            if other is not reader:
                mask |= other._bits.get(kind, 0)
        return mask

    def _close(self, reader: "BitReader") -> None:
        mine = sum(reader._bits.values())
        if mine:
            self.space.tables.scan_bits(0, USER_SPACE_END, mine, BitChange(clear=mine),
                                        collect=False)
        self._free.extend(reader._bits.values())
        self._free.sort()
        del self._readers[reader.name]
        self._changed()


class BitReader:
    """One reader of the accessed and dirty bits of an address space."""

    def __init__(self, owner: PageBits, name: str) -> None:
        self._owner = owner
        self.name = name
        self._bits: dict[PTE, int] = {}     # kind -> this reader's software bit
        self._masks: dict[int, int] = {}    # bits asked -> ``mask(bits)``
        self.closed = False

    def _bit(self, kind: PTE) -> int:
        bit = self._bits.get(kind)
        if bit is None:
            bit = self._bits[kind] = self._owner._allocate(self, kind)
            self._owner._changed()
        return bit

    def read(self, vaddr: int, size: int, bits: PTE, clear: bool) -> list[int]:
        """The addresses of the pages of [vaddr, vaddr+size) (widened to whole pages;
        user half only) that had any of ``bits`` (PTE.ACCESSED, PTE.DIRTY) set since
        this reader last cleared them there, in ascending order (a 2 MiB page once, by
        its base). With ``clear``, those bits are cleared for this reader only."""
        start, end = self._range(vaddr, size)
        kinds = self._kinds(bits)
        if start == end:
            return []
        if clear and self is self._owner.since_mapping:
            raise ValueError("the since-mapping reader never clears")
        test = self.mask(bits)
        change = self._clearing(kinds, test) if clear else None
        scan = self._owner.space.tables.scan_bits(start, end - start, test, change)
        if scan.full or scan.dirty_only:
            self._owner.space.bits_cleared(scan.full, scan.dirty_only)
        return scan.pages

    def count(self, vaddr: int, size: int, bits: PTE) -> int:
        """How many 4 KiB pages of the range ``read`` would report (without clearing)."""
        start, end = self._range(vaddr, size)
        if start == end:
            return 0
        return self._owner.space.tables.scan_bits(start, end - start, self.mask(bits),
                                                  collect=False).hits

    def mask(self, bits: PTE) -> int:
        """The entry bits that hold this reader's view of ``bits``: an entry with any
        of them set is a page ``read`` reports (for counting walks of one's own).
        Kept per ``bits``: a reader's bits, once allocated, stay its own until it
        closes (the resident set asks before every unmap)."""
        found = self._masks.get(bits)
        if found is not None and not self.closed:
            return found
        mask = self._masks[bits] = int(bits) | sum(self._bit(kind) for kind in self._kinds(bits))
        return mask

    def close(self) -> None:
        """Give this reader's entry bits back (the since-mapping reader stays)."""
        if self is self._owner.since_mapping:
            raise ValueError("the since-mapping reader cannot be closed")
        if not self.closed:
            self.closed = True
            self._owner._close(self)

    def _clearing(self, kinds: list[PTE], test: int) -> BitChange:
        """Hand every hardware bit about to be cleared to the other readers first."""
        conds = [(int(kind), self._owner._others(self, kind)) for kind in kinds]
        conds += [(0, 0)] * (2 - len(conds))
        (cond1, set1), (cond2, set2) = conds
        return BitChange(clear=test, cond1=cond1, set1=set1, cond2=cond2, set2=set2)

    def _kinds(self, bits: PTE) -> list[PTE]:
        if self.closed:
            raise ValueError(f"reader {self.name!r} is closed")
        if not int(bits) or int(bits) & ~_ALL_KINDS:
            raise ValueError(f"bits must be PTE.ACCESSED and/or PTE.DIRTY, not {bits!r}")
        return [kind for kind in KINDS if int(bits) & kind]

    @staticmethod
    def _range(vaddr: int, size: int) -> tuple[int, int]:
        start = vaddr & ~(PAGE_SIZE - 1)
        end = (vaddr + size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if size < 0 or not 0 <= start <= end <= USER_SPACE_END:
            raise ValueError(f"range {vaddr:#x}+{size:#x} is not in the user half")
        return start, end


__all__ = ["KINDS", "SINCE_MAPPING", "BitReader", "PageBits", "TooManyReaders"]
