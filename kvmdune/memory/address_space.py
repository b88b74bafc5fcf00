"""Address spaces: one page-table hierarchy each, with batched invalidation and
checked access between guest virtual memory and the host.

Every change that restricts access (unmap, protect, clearing A/D bits, freeing a
frame) is collected and invalidated once at the end of the batch, so that what
guest CPL3 code sees always matches the tables. Checked access never touches host
memory outside the guest frames the guest itself may reach.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

from .frames import PAGE_SIZE
from .guest_memory import GuestMemory
from .page_bits import PageBits
from .pagetable import (ADDRESS_MASK, ENTRIES_PER_TABLE, PTE, USER_SPACE_END, PageTables,
                        Perm, Translation, coalesce, is_canonical)

_A = int(PTE.ACCESSED)
_AD = int(PTE.ACCESSED | PTE.DIRTY)
#: The bits of a leaf entry a cached translation depends on (not A/D, which the CPU
#: and checked accesses set as they go).
_TRANSLATION = ADDRESS_MASK | int(PTE.PRESENT | PTE.WRITABLE | PTE.USER | PTE.NX
                                  | PTE.PROTNONE | PTE.HUGE)

#: Largest single checked access; Linux caps one read/write at MAX_RW_COUNT (~2 GiB).
MAX_CHECKED_ACCESS = 0x7FFF_F000
KERNEL_HALF_FIRST_ENTRY = ENTRIES_PER_TABLE // 2
#: Up to this many pages, a change in place forgets their cached translations one by
#: one; beyond, all of them.
_FORGET_PAGES_LIMIT = 16


class FaultKind(enum.Enum):
    """Why a checked access failed; callers decide by this, never by the message."""

    NOT_MAPPED = "not mapped"
    NOT_USER = "not accessible from user mode"
    NOT_WRITABLE = "not writable"
    NOT_CANONICAL = "range is not canonical"
    BAD_LENGTH = "length out of range"
    UNTERMINATED = "string longer than its limit"


class GuestFault(Exception):
    """A checked access hit a page that is unmapped or lacks the permission (or a
    range no access can cover): ``kind`` says which, ``vaddr`` where."""

    def __init__(self, vaddr: int, kind: FaultKind, detail: str = "") -> None:
        super().__init__(f"guest address {vaddr:#x}: {detail or kind.value}")
        self.vaddr = vaddr
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Access:
    """What a checked access needs of every page it touches."""

    write: bool = False
    user: bool = True
    track: bool = True   # set A/D bits as the CPU would


READ = Access()
WRITE = Access(write=True)
#: The VMM's own access (loading a program, building a signal frame): the page must
#: be mapped, whatever its permissions, and A/D bits are left alone.
VMM = Access(user=False, track=False)


#: How restricted guest-physical ranges are made visible to the guest: given the
#: ranges (of the entries' frames), it arranges that no stale translation is used.
Invalidator = Callable[[list[tuple[int, int]]], None]


class AddressSpace:
    """A guest address space: its page tables, sharing the kernel half with others.

    ``invalidate`` is how restrictions reach the guest: by default the host-side
    mprotect pair of ``GuestMemory.invalidate`` (needed on software KVM, and enough
    everywhere); a machine on hardware KVM passes a guest TLB flush instead.
    ``write_protect`` is the cheaper one for frames whose entries only lost D or
    write access (the next write must reach the MMU, reads may go on): by default
    ``GuestMemory.write_protect``; a guest TLB flush on hardware KVM.

    ``page_bits`` holds the readers of the accessed and dirty bits (page_bits.py):
    every reader of A/D bits goes through it, so that none clears another's."""

    def __init__(self, memory: GuestMemory, kernel: "AddressSpace | None" = None,
                 invalidate: Invalidator | None = None,
                 write_protect: Invalidator | None = None) -> None:
        self.memory = memory
        self.invalidate: Invalidator = invalidate or memory.invalidate
        self.write_protect: Invalidator = write_protect or memory.write_protect
        frames = memory.frames
        self.tables = PageTables(memory.words, frames.alloc, frames.free,
                                 alloc_huge=frames.alloc_huge, alloc_many=frames.alloc_many)
        if kernel is not None:
            self._share_kernel_half(kernel)
        self._pending: list[tuple[int, int]] = []
        self._pending_writes: list[tuple[int, int]] = []
        self._batch_depth = 0
        self.closed = False
        # A software TLB for checked accesses: page -> translation. A change to the
        # tables through this class forgets what it touched; a hit is checked against
        # the leaf entry, which native code may change in place (the Dune API's
        # hypercalls served by the fast path's thread).
        self._tlb: dict[int, Translation] = {}
        self._page_bits: PageBits | None = None
        #: ``pager(vaddr, write)``: asked to map the page of a checked access the
        #: tables refuse (memory the guest owns but has not touched: demand paging),
        #: True if it did; as Linux's copy_to_user faults pages in.
        self.pager: Callable[[int, bool], bool] | None = None

    @property
    def page_bits(self) -> PageBits:
        """The readers of this space's accessed and dirty bits."""
        if self._page_bits is None:
            self._page_bits = PageBits(self)
        return self._page_bits

    @property
    def cr3(self) -> int:
        return self.tables.root

    def _share_kernel_half(self, kernel: "AddressSpace") -> None:
        """Point PML4 entries 256..511 at the kernel's tables (mapped once, at boot)."""
        words, src, dst = self.memory.words, kernel.cr3 // 8, self.cr3 // 8
        words[dst + KERNEL_HALF_FIRST_ENTRY:dst + ENTRIES_PER_TABLE] = \
            words[src + KERNEL_HALF_FIRST_ENTRY:src + ENTRIES_PER_TABLE]

    # -- batching ------------------------------------------------------------------
    def batch(self) -> "Batch":
        """Group changes; the invalidation they need runs once, when the batch ends."""
        return Batch(self)

    def flush(self) -> None:
        """Invalidate everything restricted since the last flush."""
        _flush([self])

    def _restricted(self, ranges: list[tuple[int, int]],
                    writes_only: list[tuple[int, int]] = ()) -> None:
        self._pending.extend(ranges)
        self._pending_writes.extend(writes_only)
        if self._batch_depth == 0:
            self.flush()

    # -- changes -------------------------------------------------------------------
    def map(self, vaddr: int, size: int, perm: Perm, paddr: int | None = None,
            huge: bool = False) -> None:
        """Map a range (fresh zeroed frames unless ``paddr`` is given). Adding access
        needs no invalidation: KVM walks the tables again on a missing entry."""
        self._tlb.clear()
        self.tables.map(vaddr, size, perm, paddr, huge)

    def unmap(self, vaddr: int, size: int) -> None:
        """Unmap a range, freeing the frames it owned."""
        self._tlb.clear()
        self._restricted(self.tables.unmap(vaddr, size))

    def unmap_unaccessed(self, vaddr: int, size: int) -> bool:
        """Unmap a range whose entries all have a clear A bit, with no invalidation:
        the MMU never used them, so nothing caches them (KVM's shadow MMU makes, and
        prefetches, translations of accessed entries only; whoever clears an A bit
        invalidates). Spares deleting and re-adding a memory slot where the host
        pages cannot be reprotected (the kernel's own). False, with nothing
        changed, if any entry was accessed."""
        if self.tables.scan_bits(vaddr, size, PTE.ACCESSED, collect=False).hits:
            return False
        self._tlb.clear()
        self.tables.unmap(vaddr, size)
        return True

    def protect(self, vaddr: int, size: int, perm: Perm) -> None:
        """Change the permission of every mapped page in the range."""
        self._forget(vaddr, size)
        restriction = self.tables.protect(vaddr, size, perm)
        # Only write access gone: the cheaper invalidation (reads may go on).
        self._restricted(restriction.full, restriction.write_only)

    def _forget(self, vaddr: int, size: int) -> None:
        """Drop the cached translations of a range whose entries change in place
        (the tables stay: other pages' translations hold)."""
        if size > _FORGET_PAGES_LIMIT * PAGE_SIZE:
            self._tlb.clear()
            return
        for page in range(vaddr, vaddr + size, PAGE_SIZE):
            self._tlb.pop(page, None)

    def bits_cleared(self, full: list[tuple[int, int]],
                     dirty_only: list[tuple[int, int]]) -> None:
        """A or D bits were cleared in entries mapping these frames (``full``: A, so
        the MMU must walk them again; ``dirty_only``: only D): make the guest set
        them again on its next access (page_bits.py is the one caller). A reader of
        dirty bits is what KVM's dirty log is for: it starts with the first one."""
        self._tlb.clear()
        if dirty_only:
            self.memory.start_dirty_log()
        self._restricted(full, dirty_only)

    def walk(self, vaddr: int) -> Translation | None:
        return self.tables.walk(vaddr)

    # -- checked access ------------------------------------------------------------
    def translate(self, vaddr: int, length: int, access: Access = READ) -> list[tuple[int, int]]:
        """The guest-physical pieces of [vaddr, vaddr+length), checked page by page
        as the CPU would check an access at the given privilege; raises
        ``GuestFault`` (touching nothing) if any page fails. Sets A (and D for
        writes) like the CPU, so dirty tracking sees writes done on the guest's behalf."""
        if length < 0 or length > MAX_CHECKED_ACCESS:
            raise GuestFault(vaddr, FaultKind.BAD_LENGTH, f"length {length:#x} out of range")
        end = vaddr + length
        if length and not (is_canonical(vaddr) and is_canonical(end - 1)
                           and (vaddr < USER_SPACE_END) == (end - 1 < USER_SPACE_END)):
            raise GuestFault(vaddr, FaultKind.NOT_CANONICAL)
        pieces: list[tuple[int, int]] = []
        touched: list[Translation] = []
        cursor = vaddr
        tlb, words = self._tlb, self.memory.words
        while cursor < end:
            page = cursor & ~(PAGE_SIZE - 1)
            found = tlb.get(page)
            if found is not None and (words[found.entry_paddr // 8] ^ found.entry) & _TRANSLATION:
                # The leaf changed without this class (the Dune API's native
                # hypercalls change rights in place): walk again.
                found = None
            if found is None:
                found = self.tables.walk(page)
                if found is not None and found.page_size == PAGE_SIZE:
                    tlb[page] = found
            try:
                _check_access(cursor, found, access)
            except GuestFault:
                if self.pager is None or not self.pager(cursor, access.write):
                    raise
                self._tlb.clear()
                found = self.tables.walk(page)
                _check_access(cursor, found, access)
            assert found is not None
            offset = cursor & (found.page_size - 1)
            paddr = (found.paddr & ~(found.page_size - 1)) + offset
            size = min(found.page_size - offset, end - cursor)
            if pieces and pieces[-1][0] + pieces[-1][1] == paddr:
                pieces[-1] = (pieces[-1][0], pieces[-1][1] + size)
            else:
                pieces.append((paddr, size))
            touched.append(found)
            cursor += size
        self._check_readable(vaddr, pieces)
        if access.track:
            bits = _AD if access.write else _A
            for found in touched:   # set A (and D) in the leaf entry, as the CPU would
                index = found.entry_paddr // 8
                if words[index] & bits != bits:
                    words[index] |= bits
        return pieces

    def _check_readable(self, vaddr: int, pieces: list[tuple[int, int]]) -> None:
        """Raise ``GuestFault`` at the first page of ``pieces`` (the guest range from
        ``vaddr``) that the VMM cannot touch without a SIGBUS: a shared file's page
        past the file's end (truncated since it was mapped), which the guest's own
        access would find the same way. Only shared regions can hold one: one
        question to the kernel per piece there, none for the guest's own memory."""
        memory, cursor = self.memory, vaddr
        for paddr, size in pieces:
            end = cursor + size
            if paddr >= memory.size and not memory.readable(paddr, size):
                while cursor < end:
                    step = min(PAGE_SIZE - (cursor & (PAGE_SIZE - 1)), end - cursor)
                    if not memory.readable(paddr, step):
                        raise GuestFault(cursor, FaultKind.NOT_MAPPED,
                                         "past the end of its file")
                    paddr, cursor = paddr + step, cursor + step
            cursor = end

    def read(self, vaddr: int, length: int, access: Access = READ) -> bytes:
        """Checked read of guest virtual memory."""
        memory = self.memory
        return b"".join(bytes(memory.slice(p, n)) for p, n in self.translate(vaddr, length, access))

    def write(self, vaddr: int, data: bytes, access: Access = WRITE) -> None:
        """Checked write of guest virtual memory (all pages checked before any byte)."""
        memory, offset = self.memory, 0
        for paddr, size in self.translate(vaddr, len(data), access):
            memory.slice(paddr, size)[:] = data[offset:offset + size]
            offset += size

    def host_views(self, vaddr: int, length: int, access: Access = READ) -> list[memoryview]:
        """The host memory behind a guest range, as memoryviews (for forwarding a
        guest buffer to a host system call without copying)."""
        return [self.memory.slice(p, n) for p, n in self.translate(vaddr, length, access)]

    def read_cstring(self, vaddr: int, limit: int, access: Access = READ) -> bytes:
        """A NUL-terminated string of at most ``limit`` bytes (without the NUL);
        raises ``GuestFault`` if unterminated within ``limit`` or unreadable."""
        out = bytearray()
        cursor = vaddr
        while len(out) < limit:
            chunk = min(PAGE_SIZE - (cursor & (PAGE_SIZE - 1)), limit - len(out))
            data = self.read(cursor, chunk, access)
            nul = data.find(0)
            if nul >= 0:
                return bytes(out + data[:nul])
            out += data
            cursor += chunk
        raise GuestFault(vaddr, FaultKind.UNTERMINATED, f"string longer than {limit} bytes")

    # -- teardown ------------------------------------------------------------------
    def close(self) -> None:
        """Unmap the user half and free its tables (the kernel half is shared)."""
        if self.closed:
            return
        self.closed = True
        self.unmap(0, USER_SPACE_END)
        for start, length in coalesce([(table, PAGE_SIZE) for table in self.tables.tables()]):
            self.memory.frames.free(start, length)   # one madvise per contiguous run


class Batch:
    """Group changes to several spaces of one guest memory (a context manager):
    when the outermost batch of each ends, the invalidations they need run
    together, once per invalidator (a frame restricted in two spaces that share
    one is invalidated once). A class, not a generator: it is on every hot path
    that changes page tables."""

    __slots__ = ("spaces",)

    def __init__(self, *spaces: AddressSpace) -> None:
        self.spaces = spaces

    def __enter__(self) -> "Batch":
        for space in self.spaces:
            space._batch_depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        done = []
        for space in self.spaces:
            space._batch_depth -= 1
            if space._batch_depth == 0:
                done.append(space)
        if done:
            _flush(done)


def _flush(spaces: list[AddressSpace]) -> None:
    """Invalidate what the spaces restricted: each invalidator (and each
    write-protector) once, over the coalesced ranges of all the spaces using it."""
    full: dict[Invalidator, list[tuple[int, int]]] = {}
    dirty: dict[Invalidator, list[tuple[int, int]]] = {}
    for space in spaces:
        if space._pending:
            full.setdefault(space.invalidate, []).extend(space._pending)
            space._pending = []
        if space._pending_writes:
            dirty.setdefault(space.write_protect, []).extend(space._pending_writes)
            space._pending_writes = []
    for invalidate, ranges in full.items():
        invalidate(coalesce(ranges))
    for write_protect, ranges in dirty.items():
        write_protect(coalesce(ranges))


def _check_access(vaddr: int, found: Translation | None, access: Access) -> None:
    if found is None or not found.present:
        raise GuestFault(vaddr, FaultKind.NOT_MAPPED)
    if access.user and not found.user:
        raise GuestFault(vaddr, FaultKind.NOT_USER)
    if access.write and not found.writable:
        raise GuestFault(vaddr, FaultKind.NOT_WRITABLE)


__all__ = ["Access", "AddressSpace", "Batch", "FaultKind", "GuestFault", "READ", "VMM", "WRITE"]
