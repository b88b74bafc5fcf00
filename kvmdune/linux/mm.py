"""The guest's memory map: its VMAs, and the memory system calls emulated in its own
page tables (brk, mmap, munmap, mprotect, mremap, madvise), with demand paging.

Guest memory never comes from the host's mmap: every mapping is guest frames in
the guest's page tables. Small mappings are mapped eagerly (a guest #PF costs tens
of microseconds on software KVM); large ones are filled page by page on first
touch, so a huge MAP_NORESERVE reservation costs nothing until used.

A layer above may watch every change this map makes to the address space
(``MapObserver``: the Dune API keeps its page-table root of the program's memory
coherent with it), and may own VMAs of its own: *sealed* ones (as by mseal(2): the
program cannot unmap, move, remap or reprotect them, nor drop their pages) whose
pages it maps itself (``vmm_backed``: never demand-paged).
"""

from __future__ import annotations

import array
import bisect
import functools
import operator
import os
from dataclasses import dataclass
from typing import Callable, Protocol

from ..memory import HUGE_PAGE_SIZE, PAGE_SIZE, PTE, VMM, AddressSpace, OutOfGuestMemory, Perm
from ..memory.guest_memory import SharedRegion
from ..memory.pagetable import ADDRESS_MASK, HUGE_ADDRESS_MASK
from ..machine import PFError, layout
from . import aslr, residency
from .elf import first_load_size
from .thp import HUGE_PAGES_VARIABLE, HugeAdvice, HugePageChoice, ThpPolicy
from .abi import (MAP_TYPE, NO_PKEY, Errno, MadviseAdvice, MapFlags, MapType, MremapFlags,
                  MsyncFlags, ProtFlags)

#: Mappings up to this size are backed at once; larger ones on first touch.
EAGER_MAP_LIMIT = 64 << 20
#: ld.so's mapping of a whole library leaves out what it will map segments over
#: (``_ld_so_keeps``) when that is at least this much.
FILE_TAIL_MIN = 64 << 10
#: Left-out parts (``_FileTail``) alive at once, each holding a descriptor of the
#: VMM's (from its reserve: fdtable.VMM_FD_RESERVE); past this, libraries are read
#: whole as other mappings are.
MAX_FILE_TAILS = 32
#: A fault in big anonymous memory maps this much around it (4 KiB pages) while the
#: block still fits under the guest's memory limit (a fault that continues a filling
#: maps the rest of its 2 MiB region: ``_fault_run_end``). This spares guest #PFs
#: only: software KVM still takes one shadow-MMU fault per 4 KiB page on its first
#: touch, since it prefetches the neighbours of a fault only from guest entries with
#: the accessed bit set (and makes them writable only with the dirty bit set), and
#: setting those bits ahead would erase the per-page record of what the guest
#: touched, which pagemap, mincore, smaps and RSS are read from (residency.py).
FAULT_BLOCK = 256 << 10
#: Frames a block leaves free for the page tables that map it (and the next block's):
#: a table frame missing at the limit would kill the process one fault early.
FAULT_BLOCK_TABLE_RESERVE = 4 * PAGE_SIZE
STACK_SIZE = 8 << 20
#: Pages at the top of the stack backed at exec; the rest grows on demand.
STACK_EAGER = 256 << 10
#: Buffers one read_into call fills at most (the kernel's IOV_MAX for preadv).
MAX_READ_BUFFERS = 1024
#: ``read_into(offset, length, buffers)``: read at most ``length`` bytes of the
#: mapped file from ``offset`` into ``buffers`` in turn; returns the bytes read.
ReadInto = Callable[[int, int, list], int]
#: One past the largest address: a range reaching it wraps in Linux's unsigned long.
ADDRESS_END = 1 << 64
PROT_MASK = int(ProtFlags.PROT_READ | ProtFlags.PROT_WRITE | ProtFlags.PROT_EXEC)
# The flags the memory calls test, as plain ints: testing an int against an IntFlag
# member builds a new member each time (enum's __and__), microseconds per call.
_PROT_WRITE, _PROT_EXEC = int(ProtFlags.PROT_WRITE), int(ProtFlags.PROT_EXEC)
_PROT_ACCEPTED = PROT_MASK | int(ProtFlags.PROT_GROWSDOWN | ProtFlags.PROT_GROWSUP
                                 | ProtFlags.PROT_SEM)
_MAP_TYPE, _MAP_PRIVATE = int(MAP_TYPE), int(MapType.MAP_PRIVATE)
_MAP_TYPES = frozenset(int(kind) for kind in (MapType.MAP_SHARED, MapType.MAP_PRIVATE,
                                              MapType.MAP_SHARED_VALIDATE))
_MAP_FIXED_ANY = int(MapFlags.MAP_FIXED | MapFlags.MAP_FIXED_NOREPLACE)
_MAP_FIXED_NOREPLACE = int(MapFlags.MAP_FIXED_NOREPLACE)
_MAP_POPULATE, _MAP_GROWSDOWN = int(MapFlags.MAP_POPULATE), int(MapFlags.MAP_GROWSDOWN)
_MAP_DENYWRITE = int(MapFlags.MAP_DENYWRITE)
#: The heap's rights (brk): Linux's VM_DATA_DEFAULT_FLAGS, readable and writable.
_HEAP_PROT = int(ProtFlags.PROT_READ | ProtFlags.PROT_WRITE)


def page_up(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


@functools.lru_cache(maxsize=64)
def perm_for(prot: int) -> Perm:
    """The page permission of a PROT_* combination (x86: write and exec imply read)."""
    perm = Perm.USER
    if prot & ProtFlags.PROT_READ:
        perm |= Perm.READ
    if prot & ProtFlags.PROT_WRITE:
        perm |= Perm.READ | Perm.WRITE
    if prot & ProtFlags.PROT_EXEC:
        perm |= Perm.READ | Perm.EXEC
    return perm


@dataclass(frozen=True)
class VmTotals:
    """A process's mappings counted as Linux's /proc/PID/status counts them (pages)."""

    size: int           # VmSize (total_vm)
    data: int           # VmData
    stack: int          # VmStk
    code: int           # VmExe + VmLib (exec_vm)
    program_code: int   # VmExe: the program's own code mappings


@dataclass(frozen=True)
class AddressLimits:
    """The guest process's RLIMIT_AS and RLIMIT_DATA, soft values in bytes (None:
    unlimited): what Linux's may_expand_vm holds new mappings to."""

    address_space: int | None
    data: int | None


@dataclass(frozen=True)
class Vma:
    """One mapping of the guest, as /proc/PID/maps shows it."""

    start: int
    end: int
    prot: int
    shared: bool = False
    name: str = ""             # a path, "[heap]", "[stack]", or "" (anonymous)
    offset: int = 0            # file offset of ``start``
    grows_down: bool = False
    # Page contents for demand paging of file-backed private mappings (None: zero).
    source: "Callable[[int, int], bytes] | None" = None
    # Shared mappings: the host-shared region behind them, and where ``start`` is in it.
    region: "SharedRegion | None" = None
    region_offset: int = 0
    # Linux's VM_SOFTDIRTY: every page of a new (or grown) mapping reads as soft-dirty
    # in /proc/self/pagemap until the next clear_refs 4 (residency.py).
    soft_dirty: bool = True
    #: mseal(2): the program's munmap, mremap, mprotect, MAP_FIXED and destructive
    #: madvise over it fail with EPERM (the VMM's own unmap at exec still works).
    sealed: bool = False
    #: Its pages are mapped by the VMM itself, never by demand paging.
    vmm_backed: bool = False
    #: The rights mprotect may give it (Linux's VM_MAYREAD/VM_MAYWRITE/VM_MAYEXEC):
    #: asking for more fails with EACCES.
    max_prot: int = PROT_MASK
    #: madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE): Linux's VM_HUGEPAGE / VM_NOHUGEPAGE.
    huge_advice: HugeAdvice = HugeAdvice.NONE
    #: A private file mapping reaching past the end of its file: which pages lie
    #: past it (``past_end(page)``: SIGBUS when touched) and, called as a source,
    #: the file's pages there once it has grown (``_FileTail`` or ``_FileEnd``).
    file_end: "Callable[[int, int], bytes] | None" = None

    def replaced(self, **changes: object) -> "Vma":
        """A copy with ``changes`` (dataclasses.replace, which runs the frozen
        ``__init__`` field by field: several times slower, on every memory call).
        The copy's fields are set before anyone sees it, so it stays immutable."""
        unknown = changes.keys() - self.__dict__.keys()
        if unknown:
            raise TypeError(f"Vma has no field {', '.join(sorted(unknown))}")
        copy = object.__new__(Vma)
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    @property
    def private_anonymous(self) -> bool:
        """Private memory with no file behind it (heap, stack, MAP_ANONYMOUS)."""
        return not self.shared and self.region is None and not self.name.startswith("/")

    def region_paddr(self, address: int) -> int:
        return self.region.base + self.region_offset + (address - self.start)

    def allows(self, error: PFError) -> bool:
        if error & PFError.WRITE:
            return bool(self.prot & ProtFlags.PROT_WRITE)
        if error & PFError.INSTRUCTION:
            return bool(self.prot & ProtFlags.PROT_EXEC)
        return bool(self.prot & PROT_MASK)

    def format(self, dev_inode: str = "00:00 0") -> str:
        perms = "".join(flag if self.prot & bit else "-" for flag, bit in (
            ("r", ProtFlags.PROT_READ), ("w", ProtFlags.PROT_WRITE),
            ("x", ProtFlags.PROT_EXEC))) + ("s" if self.shared else "p")
        line = f"{self.start:08x}-{self.end:08x} {perms} {self.offset:08x} {dev_inode}"
        return f"{line:<73}{self.name}".rstrip() if self.name else line


class MapObserver(Protocol):
    """Told of every change this map makes to its address space's pages."""

    def mapped(self, start: int, end: int) -> None:
        """Pages of [start, end) were just mapped (some may stay unbacked)."""

    def unmapping(self, start: int, end: int) -> None:
        """The pages of [start, end) are about to be unmapped (frames still there)."""

    def protected(self, start: int, end: int) -> None:
        """The pages of [start, end) just got their VMA's (new) rights."""


class MemoryMap:
    """The VMAs of one guest address space and the calls that change them."""

    def __init__(self, space: AddressSpace) -> None:
        self.space = space
        self.vmas: list[Vma] = []
        self.observer: MapObserver | None = None
        #: The largest resident set seen when memory was unmapped, in pages (Linux's
        #: hiwater_rss: VmHWM is the larger of it and the current RSS).
        self.rss_peak_pages = 0
        #: VmPeak, noted when /proc/PID/status is read (procfs.py).
        self.vm_peak_pages = 0
        #: Patch system-call sites in file-backed code mapped executable (sitepatch.py).
        self.patch_sites = False
        #: Their stubs' mappings (sitepatch.StubMapping), unmapped with their code.
        self.site_stubs: list = []
        self.brk_start = self.brk = 0
        #: Where a fault may map a whole 2 MiB block with one 2 MiB page (the block
        #: inside an anonymous VMA, with no page table yet), as Linux's transparent
        #: huge pages do: where thp.py's rules say Linux would here (the host's mode,
        #: MADV_HUGEPAGE / MADV_NOHUGEPAGE, PR_SET_THP_DISABLE), so that pagemap, smaps
        #: and RSS show what Linux shows; KVMDUNE_HUGE_PAGES=0 never, =1 wherever one
        #: fits. ``huge_pages``: whether at all (the Dune API's roots turn it off).
        self.thp: ThpPolicy = ThpPolicy.current()
        self.huge_pages = self.thp.may_map_huge
        #: prctl(PR_SET_THP_DISABLE): 0, or 1 | PR_THP_DISABLE_EXCEPT_ADVISED's bit
        #: (kept across fork and execve, as Linux's MMF_DISABLE_THP).
        self.thp_disabled = 0
        space.pager = self.page_in_for_vmm
        # The top of the area mmap fills downwards: exec draws it (aslr.py); until
        # then Linux's without randomization.
        self.mmap_base = aslr.mmap_base(aslr.NO_RANDOMIZATION)

    # -- VMA bookkeeping -----------------------------------------------------------
    def find(self, address: int) -> Vma | None:
        index = bisect.bisect_right(self.vmas, address, key=_START) - 1
        if index >= 0 and self.vmas[index].end > address:
            return self.vmas[index]
        return None

    def _span(self, start: int, end: int) -> tuple[int, int]:
        """The indices [first, last) of the VMAs overlapping [start, end): the list
        is sorted and its VMAs never overlap, so their ends are sorted too."""
        vmas = self.vmas
        first = last = bisect.bisect_right(vmas, start, key=_END)
        while last < len(vmas) and vmas[last].start < end:
            last += 1
        return first, last

    def _overlapping(self, start: int, end: int) -> list[Vma]:
        first, last = self._span(start, end)
        return self.vmas[first:last]

    def covers(self, start: int, end: int) -> bool:
        """Whether every page of [start, end) is mapped."""
        covered = sum(min(v.end, end) - max(v.start, start) for v in self._overlapping(start, end))
        return covered == end - start

    def _cut(self, start: int, end: int) -> list[Vma]:
        """Remove [start, end) from the VMA list (splitting VMAs); return the cut parts."""
        first, last = self._span(start, end)
        kept, removed = [], []
        for vma in self.vmas[first:last]:
            if vma.start < start:
                kept.append(vma.replaced(end=start))
            if vma.start >= start and vma.end <= end:
                removed.append(vma)             # whole: immutable, so no copy
            else:
                removed.append(_piece(vma, max(vma.start, start), min(vma.end, end)))
            if vma.end > end:
                kept.append(_piece(vma, end, vma.end))
        self.vmas[first:last] = kept
        return removed

    def _insert(self, vma: Vma) -> None:
        bisect.insort(self.vmas, vma, key=_START)

    def adopt(self, vma: Vma) -> None:
        """Record a mapping over free addresses whose pages the caller maps itself."""
        if self._overlapping(vma.start, vma.end):
            raise ValueError(f"[{vma.start:#x}, {vma.end:#x}) is not free")
        self._insert(vma)
        self._merge_around(vma.start, vma.end)

    def overlapping(self, start: int, end: int) -> list[Vma]:
        """The VMAs overlapping [start, end), in address order."""
        return self._overlapping(start, end)

    def sealed_in(self, start: int, end: int) -> bool:
        """Whether a sealed VMA overlaps [start, end)."""
        for vma in self._overlapping(start, end):
            if vma.sealed:
                return True
        return False

    # -- page changes, each told to the observer -----------------------------------
    def _back(self, start: int, length: int, perm: Perm, paddr: int | None = None,
              huge: bool = False) -> None:
        self.space.map(start, length, perm, paddr=paddr, huge=huge)
        if self.observer is not None:
            self.observer.mapped(start, start + length)

    def _drop(self, start: int, length: int) -> None:
        if self.observer is not None:
            self.observer.unmapping(start, start + length)
        self.space.unmap(start, length)

    def is_free(self, start: int, end: int) -> bool:
        return 0 < start < end <= layout.USER_PROGRAM_END and not self._overlapping(start, end)

    def find_free(self, length: int, below: int | None = None) -> int | None:
        """The highest free range of ``length`` bytes below ``below`` (the mmap
        base by default: top-down, as Linux's mmap picks addresses)."""
        ceiling = self.mmap_base if below is None else below
        for vma in reversed(self.vmas):
            if vma.start >= ceiling:
                continue
            if vma.end <= ceiling - length:
                return ceiling - length
            ceiling = min(ceiling, vma.start)
        return ceiling - length if ceiling - length >= layout.MMAP_MIN_ADDR else None

    # -- mapping -------------------------------------------------------------------
    def map_fixed(self, vma: Vma, data: bytes = b"", eager: bool | None = None) -> None:
        """Map ``vma`` over whatever was there; ``data`` fills its start."""
        self.unmap(vma.start, vma.end - vma.start)
        length = vma.end - vma.start
        if vma.region is not None:
            within = _within_file(vma)
            if within:
                self._back(vma.start, within, perm_for(vma.prot),
                           paddr=vma.region_paddr(vma.start))
            self._insert(vma)
            return
        if eager is None:
            eager = length <= EAGER_MAP_LIMIT
        if eager and not data and self._may_become_huge(vma):
            self._back_around_huge_blocks(vma)
        elif eager:
            self._back(vma.start, length, perm_for(vma.prot))
            if data:
                # A view: patched code comes as a bytearray, which a slice copies.
                self._fill(vma.start, memoryview(data)[:length])
        elif data:
            vma = vma.replaced(source=_bytes_source(data, vma.start))
        self._insert(vma)

    def map_file(self, vma: Vma, file_offset: int, length: int, read_into: ReadInto) -> None:
        """Map the private file mapping ``vma`` over whatever was there, backed at
        once: its first ``length`` bytes read from the file at ``file_offset``
        straight into its frames (one copy), zeros after."""
        self.unmap(vma.start, vma.end - vma.start)
        self._back(vma.start, vma.end - vma.start, perm_for(vma.prot))
        self._insert(vma)
        self._read_into_frames(vma.start, min(length, vma.end - vma.start), file_offset,
                               read_into)

    def map_kernel_pages(self, vma: Vma, present: list[int], perm: Perm) -> None:
        """Map ``vma``, over a region of the kernel's pages, with only the pages at
        offsets ``present`` backed: the others have nothing behind them (a guest
        access faults; ``vma`` is ``vmm_backed``, so demand paging never maps them)."""
        self.unmap(vma.start, vma.end - vma.start)
        for offset in present:
            if 0 <= offset < vma.end - vma.start:
                self._back(vma.start + offset, PAGE_SIZE, perm,
                           paddr=vma.region_paddr(vma.start + offset))
        self._insert(vma)

    def _may_become_huge(self, vma: Vma) -> bool:
        """Whether a fault in ``vma`` may map a 2 MiB page, now or after a later
        madvise(MADV_HUGEPAGE) (Linux's rules in madvise mode)."""
        return (self.huge_pages and vma.private_anonymous and not vma.vmm_backed
                and (self.thp.allows(vma.huge_advice, self.thp_disabled)
                     or self.thp.allows(HugeAdvice.HUGEPAGE, self.thp_disabled)))

    def thp_allows(self, vma: Vma) -> bool:
        """Whether a fault in ``vma`` maps a 2 MiB page where one fits (and Linux's
        smaps THPeligible, which also needs a 2 MiB-aligned block inside it)."""
        return (self.huge_pages and vma.private_anonymous and not vma.vmm_backed
                and self.thp.allows(vma.huge_advice, self.thp_disabled))

    def _back_around_huge_blocks(self, vma: Vma) -> None:
        """Back a new anonymous mapping eagerly except its whole 2 MiB blocks, which
        its first touch maps (with one 2 MiB page where the rules allow by then: a
        page table once there never gives way to a 2 MiB page, pagetable.py)."""
        first = -(-vma.start // HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE
        last = vma.end // HUGE_PAGE_SIZE * HUGE_PAGE_SIZE
        if first >= last:
            self._back(vma.start, vma.end - vma.start, perm_for(vma.prot))
            return
        for start, end in ((vma.start, first), (last, vma.end)):
            if end > start:
                self._back(start, end - start, perm_for(vma.prot))

    def _fill(self, start: int, data: bytes | memoryview) -> None:
        """Write a new mapping's first contents into its frames (whatever its rights:
        a PROT_NONE mapping moved by mremap keeps its pages too)."""
        memory, offset, view = self.space.memory, 0, memoryview(data)
        for paddr, size in frame_runs(self.space, start, len(data)):
            chunk = view[offset:offset + size]
            # One trip into the host kernel for the run's pages, not a fault per page
            # as the copy first writes each (libc's patched text: ~340 pages).
            memory.populate(paddr, len(chunk))
            memory.slice(paddr, len(chunk))[:] = chunk
            offset += size

    def unmap(self, start: int, length: int, note_peak: bool = True) -> None:
        if note_peak:
            self._note_rss_peak_before_unmap(start, start + length)
        removed = self._cut(start, start + length)
        if removed:
            with self.space.batch():
                for vma in removed:
                    self._drop(vma.start, vma.end - vma.start)
            self._release_regions({vma.region for vma in removed if vma.region is not None})

    def _release_regions(self, regions: set) -> None:
        """Shared regions no mapping uses any more go back to the host."""
        for region in regions:
            if not any(vma.region is region for vma in self.vmas):
                self.space.memory.remove_shared(region)

    def _note_rss_peak_before_unmap(self, start: int, end: int) -> None:
        """As Linux updates hiwater_rss before an unmap: only if [start, end) holds
        resident pages, since otherwise the unmap leaves the resident set as it is
        and the peak is noted by whatever lowers it later (or read as the current
        set). Counting the whole set walks every file mapping; most unmaps (a
        buffer never touched, a reservation) drop nothing resident."""
        overlapping = self._overlapping(start, end)
        if overlapping and residency.holds_resident(self.space, overlapping, start, end):
            self.note_rss_peak()

    def note_rss_peak(self) -> None:
        self.rss_peak_pages = max(self.rss_peak_pages, residency.rss(self.space, self.vmas).total)

    def clear_soft_dirty(self) -> None:
        """clear_refs 4: no mapping is new any more (VM_SOFTDIRTY cleared)."""
        self.vmas = [vma.replaced(soft_dirty=False) if vma.soft_dirty else vma
                     for vma in self.vmas]

    def close(self) -> None:
        """Unmap everything (at exec and exit), releasing shared regions. The
        resident peak is not noted: nothing reads this map's VmHWM any more (exec's
        new map starts its own), and counting it walks every table."""
        if self.observer is None:       # (the Dune API's own tables may map them too)
            for vma in [vma for vma in self.vmas if _kernel_pages(vma)]:
                self.space.unmap_unaccessed(vma.start, vma.end - vma.start)
        self.unmap(0, layout.USER_PROGRAM_END, note_peak=False)

    def vm_rebuilt(self) -> None:
        """The VM under this map is new and has not run (a forked child's): the
        kernel's pages' A bits go to the bit readers, so that an exec before any
        access to them drops them with no memory-slot change (``close``)."""
        if self.observer is not None:
            return
        for vma in self.vmas:
            if _kernel_pages(vma):
                self.space.page_bits.hand_over(PTE.ACCESSED, vma.start, vma.end - vma.start)

    def bus_error(self, address: int, error: PFError) -> bool:
        """Whether a fault that demand paging refused is one Linux answers with
        SIGBUS (BUS_ADRERR), not SIGSEGV: a page of the kernel's data with nothing
        behind it, or a file mapping's page past the end of its file."""
        vma = self.find(address)
        if vma is None or not vma.allows(error) or error & PFError.PRESENT:
            return False
        return _kernel_pages(vma) or self._past_file_end(vma, address)

    @staticmethod
    def _past_file_end(vma: Vma, address: int) -> bool:
        """Whether the page at ``address`` of ``vma`` lies past the end of its file
        now (the file may have grown or shrunk since it was mapped)."""
        page = address & ~(PAGE_SIZE - 1)
        if vma.region is not None and not vma.vmm_backed:
            return not vma.region.readable(vma.region_paddr(page) - vma.region.base, PAGE_SIZE)
        return any(source is not None and hasattr(source, "past_end") and source.past_end(page)
                   for source in (vma.file_end, vma.source))

    def drop_pages_past_file_ends(self) -> bool:
        """Unmap the pages of shared file mappings that lie past their files' ends
        by now (the file was truncated after it was mapped), so that the guest's
        next touch of one faults here and gets SIGBUS: the host's own pages behind
        them are gone, and KVM could only fail the run (EFAULT). Whether any was
        mapped."""
        dropped = False
        with self.space.batch():
            for vma in [vma for vma in self.vmas if vma.region is not None
                        and vma.region.file_backed and not vma.vmm_backed]:
                start = vma.start + _within_file(vma)
                if start < vma.end and self.space.tables.is_mapped(start, vma.end - start):
                    self._drop(start, vma.end - start)
                    dropped = True
        return dropped

    def handle_fault(self, address: int, error: PFError) -> bool:
        """Demand paging: back the page if a VMA allows the access (True: retry)."""
        if self._now_allowed(address, error):
            return True
        vma = self.find(address)
        if vma is None or vma.vmm_backed or not vma.allows(error):
            return False
        if error & PFError.PRESENT:
            return bool(error & PFError.WRITE) and self._write_to_huge_zero_page(vma, address)
        page = address & ~(PAGE_SIZE - 1)
        if self._past_file_end(vma, page):
            return False          # SIGBUS (``bus_error``), or EFAULT for the VMM's access
        source = vma.source or vma.file_end
        if vma.region is None and source is None and self._map_fault_block(vma, address,
                                                                            error):
            return True
        if vma.region is not None:
            self._map_shared_around(vma, page)
            return True
        try:
            self._back(page, PAGE_SIZE, perm_for(vma.prot))
        except OutOfGuestMemory:
            raise    # the guest's memory limit: the process reports and ends
        if source is not None:
            self.space.write(page, source(page, PAGE_SIZE), VMM)
        return True

    def _map_shared_around(self, vma: Vma, page: int) -> None:
        """Map the page at ``page`` of the shared mapping ``vma`` (within its file),
        with the FAULT_BLOCK around it when none of that is mapped yet, as far as it
        lies within the file now: a file grown after it was mapped is usually
        touched all along, and a guest #PF per page costs tens of microseconds."""
        block = page & ~(FAULT_BLOCK - 1)
        start = max(block, vma.start)
        end = min(block + FAULT_BLOCK, vma.start + _within_file(vma))
        if end <= page or self.space.tables.is_mapped(start, end - start):
            start, end = page, page + PAGE_SIZE
        self._back(start, end - start, perm_for(vma.prot), paddr=vma.region_paddr(start))

    def page_in_for_vmm(self, address: int, write: bool) -> bool:
        """The VMM is about to access ``address`` on the guest's behalf (a system
        call's buffer) and the tables refuse: page it in as the guest's own access
        would (Linux's copy_to_user faults the same way), where demand paging left
        it out (no entry) or a write meets the huge zero page. Any other refusal
        (PROT_NONE, rights the Dune API took away) stands. False if it cannot (the
        call then fails with EFAULT, guest memory full included)."""
        found = self.space.walk(address & ~(PAGE_SIZE - 1))
        if found is None:
            error = PFError.USER | (PFError.WRITE if write else PFError(0))
        elif write and found.present and found.page_size == HUGE_PAGE_SIZE:
            error = PFError.USER | PFError.WRITE | PFError.PRESENT
        else:
            return False
        try:
            return self.handle_fault(address, error)
        except OutOfGuestMemory:
            return False

    def _write_to_huge_zero_page(self, vma: Vma, address: int) -> bool:
        """A write to a 2 MiB page only read so far (mapped read-only, as Linux maps
        its huge zero page): the whole 2 MiB page gets the VMA's rights, as Linux
        (6.13 on) gives the write a huge page of its own (before 6.13 it split the
        huge zero page; this host's kernel is what the guest is compared with)."""
        found = self.space.walk(address & ~(PAGE_SIZE - 1))
        if (found is None or found.page_size != HUGE_PAGE_SIZE or found.writable
                or not vma.private_anonymous or not vma.prot & ProtFlags.PROT_WRITE):
            return False
        block = address & ~(HUGE_PAGE_SIZE - 1)
        self.space.protect(block, HUGE_PAGE_SIZE, perm_for(vma.prot))   # adds write only
        if self.observer is not None:
            self.observer.protected(block, block + HUGE_PAGE_SIZE)
        return True

    def _now_allowed(self, address: int, error: PFError) -> bool:
        """Whether the tables allow the faulting access by now: another thread
        mapped the page (or granted the right) between the fault and its handling;
        the access just runs again, as on Linux."""
        if error & (PFError.RESERVED | PFError.PROTECTION_KEY | PFError.SHADOW_STACK):
            return False
        found = self.space.walk(address & ~(PAGE_SIZE - 1))
        if found is None or not found.present:
            return False
        if error & PFError.USER and not found.user:
            return False
        if error & PFError.WRITE and not found.writable:
            return False
        return not (error & PFError.INSTRUCTION and found.nx)

    def _map_fault_block(self, vma: Vma, address: int, error: PFError) -> bool:
        """Back a whole block around a fault in anonymous memory at once: a 2 MiB
        huge page (with ``huge_pages``, as Linux's transparent huge pages), else 4 KiB
        pages: the rest of the fault's 2 MiB region when the fault continues a
        filling (``_fault_run_end``), else the FAULT_BLOCK around it within the VMA
        (as Linux's fault-around does for files). A guest #PF costs tens of
        microseconds here, and a big array would otherwise take one per 4 KiB page.
        Only where the block lies inside the VMA, nothing in it is mapped yet, and it
        fits in what is left under the memory limit (the last pages before the limit
        come one by one, so that the limit is crossed by the fault that needs one
        frame too many). As with transparent huge pages, a touch is charged its
        whole block; what the guest reads of its pages (pagemap, mincore, smaps, RSS)
        follows each page's accessed and dirty bits (residency.py), which mapping
        more pages never sets. Under Linux's rules a read maps the 2 MiB page
        read-only (Linux's huge zero page: in no counter until written)."""
        perm = perm_for(vma.prot)
        if self.thp_allows(vma):
            huge_perm = perm
            if not error & PFError.WRITE and self.thp.choice is HugePageChoice.LINUX:
                huge_perm = perm & ~Perm.WRITE
            if self._map_block(vma, address & ~(HUGE_PAGE_SIZE - 1), HUGE_PAGE_SIZE,
                               huge_perm, huge=True):
                return True
        page = address & ~(PAGE_SIZE - 1)
        run_end = self._fault_run_end(vma, page)
        if run_end is not None and self._map_block(vma, page, run_end - page, perm):
            return True
        block = max(address & ~(FAULT_BLOCK - 1), vma.start)
        block_end = min((address & ~(FAULT_BLOCK - 1)) + FAULT_BLOCK, vma.end)
        return self._map_block(vma, block, block_end - block, perm)

    def _fault_run_end(self, vma: Vma, page: int) -> int | None:
        """Where the run a fault at ``page`` maps ends when the fault continues a
        filling (the page just below is mapped in the same VMA, as when a program
        fills an array upwards): the end of its 2 MiB region inside the VMA, so a
        sequential fill takes one fault per 2 MiB, not one per FAULT_BLOCK. Never
        past the region: the fault itself gives the region its page table, and so
        nothing changes for a later madvise(MADV_HUGEPAGE) (a 2 MiB page never
        replaces a table, as in Linux). None for a first or scattered touch, which
        maps one FAULT_BLOCK, so a sparse program is charged little more than it
        touches."""
        below = page - PAGE_SIZE
        if below < vma.start or not self.space.tables.is_mapped(below, PAGE_SIZE):
            return None
        run_end = min((page & ~(HUGE_PAGE_SIZE - 1)) + HUGE_PAGE_SIZE, vma.end)
        return run_end if run_end - page > PAGE_SIZE else None

    def _map_block(self, vma: Vma, block: int, size: int, perm: Perm,
                   huge: bool = False) -> bool:
        if size <= 0 or block < vma.start or block + size > vma.end:
            return False
        if self.space.memory.frames.free_bytes < size + FAULT_BLOCK_TABLE_RESERVE:
            return False
        tables = self.space.tables
        if tables.is_mapped(block, size) or huge and tables.has_table(block, size):
            return False     # (a 2 MiB page never replaces a table: pagetable.py)
        try:
            self._back(block, size, perm, huge=huge)
        except OutOfGuestMemory:
            return False    # no free 2 MiB frame (fragmentation): smaller blocks may fit
        return True

    # -- system calls (each returns the result or -errno) ---------------------------
    def may_expand(self, limits: AddressLimits | None, growth: int, data: bool) -> bool:
        """Linux's may_expand_vm: whether ``growth`` more bytes of mappings keep the
        process within RLIMIT_AS, and a data mapping (private, writable, not a stack)
        within RLIMIT_DATA too, both counted in whole pages."""
        if limits is None or growth <= 0:
            return True
        pages, totals = growth // PAGE_SIZE, self.vm_totals()
        if (limits.address_space is not None
                and totals.size + pages > limits.address_space // PAGE_SIZE):
            return False
        return not (data and limits.data is not None
                    and totals.data + pages > limits.data // PAGE_SIZE)

    def _may_turn_into_data(self, limits: AddressLimits | None, overlapping: list[Vma],
                            start: int, end: int, prot: int) -> bool:
        """Whether making [start, end) writable keeps RLIMIT_DATA: what becomes a data
        mapping counts as new data (Linux's mprotect_fixup)."""
        if limits is None or limits.data is None or not prot & ProtFlags.PROT_WRITE:
            return True
        turning = sum(_overlap(vma, start, end) for vma in overlapping
                      if not _is_data_mapping(vma.prot, vma.shared, vma.grows_down)
                      and _is_data_mapping(prot, vma.shared, vma.grows_down))
        return self.may_expand(AddressLimits(None, limits.data), turning, data=True)

    def vm_totals(self, program: str = "") -> "VmTotals":
        """Linux's vm_stat_account counters over the mappings, in pages: all of them
        (total_vm), and each in one class: code (exec_vm: executable, not writable,
        not a stack; ``program``'s own among it), stack (grows down) or data
        (private and writable)."""
        size = data = stack = code = program_code = 0
        for vma in self.vmas:
            pages = (vma.end - vma.start) // PAGE_SIZE
            size += pages
            if vma.prot & ProtFlags.PROT_EXEC and not vma.prot & ProtFlags.PROT_WRITE \
                    and not vma.grows_down:
                code += pages
                if program and vma.name == program:
                    program_code += pages
            elif vma.grows_down:
                stack += pages
            elif _is_data_mapping(vma.prot, vma.shared, False):
                data += pages
        return VmTotals(size, data, stack, code, program_code)

    def _mapped_bytes_in(self, start: int, end: int) -> int:
        return sum(_overlap(vma, start, end) for vma in self._overlapping(start, end))

    def sys_brk(self, address: int, limits: AddressLimits | None = None) -> int:
        """Implements brk(2)."""
        if address < self.brk_start:
            return self.brk
        new_end, old_end = page_up(address), page_up(self.brk)
        if new_end > old_end:
            if not self.may_expand(limits, new_end - old_end, data=True):
                return self.brk
            if not self.is_free(old_end, new_end):
                return self.brk
            try:
                self._grow_heap(old_end, new_end)
            except OutOfGuestMemory:
                return self.brk
        elif new_end < old_end:
            self.unmap(new_end, old_end - new_end)
            self._restore_heap_vma(new_end)
        self.brk = address
        return self.brk

    def _grow_heap(self, old_end: int, new_end: int) -> None:
        self._back(old_end, new_end - old_end, perm_for(_HEAP_PROT))
        index = bisect.bisect_right(self.vmas, self.brk_start, key=_START) - 1
        heap = self.vmas[index] if self.brk_start < old_end and index >= 0 else None
        if heap is not None and heap.end > self.brk_start and heap.name == "[heap]":
            # Replaced in place: its neighbours stay, and list.remove would compare
            # each VMA before it field by field.
            self.vmas[index] = heap.replaced(end=new_end, soft_dirty=True)  # as do_brk_flags
        else:
            self._insert(Vma(self.brk_start, new_end, _HEAP_PROT, name="[heap]"))

    def _restore_heap_vma(self, new_end: int) -> None:
        heap = self.find(self.brk_start)
        if heap is None and new_end > self.brk_start:
            self._insert(Vma(self.brk_start, new_end, _HEAP_PROT, name="[heap]"))

    def sys_mmap(self, address: int, length: int, prot: int, flags: int,
                 read_file: Callable[[int, int], bytes] | None, offset: int,
                 name: str = "", share: Callable[[int], SharedRegion] | None = None,
                 file_path: str = "", read_into: ReadInto | None = None,
                 keep_file: Callable[[], int] | None = None,
                 file_size: int | None = None,
                 limits: AddressLimits | None = None) -> int:
        """Implements mmap(2). ``read_file(offset, length)`` reads the mapped file
        for private mappings (None for anonymous ones), ``read_into`` (if given)
        reads it into buffers; ``share(length)`` makes the host-shared region behind
        a shared mapping; ``file_path`` is where the VMM reads the mapped file itself
        (``name`` if empty); ``keep_file()`` (if given) opens the file again for the
        VMM to keep (its pages may then be read when first touched); ``file_size``:
        the mapped file's size now, when known (pages past its end raise SIGBUS)."""
        if length == 0 or offset % PAGE_SIZE:
            return -Errno.EINVAL
        length = page_up(length)
        if length > layout.USER_PROGRAM_END:
            return -Errno.ENOMEM
        map_type = flags & _MAP_TYPE
        if map_type not in _MAP_TYPES:
            return -Errno.EINVAL
        fixed = flags & _MAP_FIXED_ANY
        if fixed:
            if address + length > layout.USER_PROGRAM_END:   # checked in Linux's order
                return -Errno.ENOMEM
            if address % PAGE_SIZE:
                return -Errno.EINVAL
            if address < layout.MMAP_MIN_ADDR:                 # mmap_min_addr
                return -Errno.EPERM
            if flags & _MAP_FIXED_NOREPLACE and not self.is_free(address, address + length):
                return -Errno.EEXIST
            if self.sealed_in(address, address + length):
                return -Errno.EPERM
            start = address
        else:
            hint = address & ~(PAGE_SIZE - 1)
            start = hint if hint >= layout.MMAP_MIN_ADDR and self.is_free(hint, hint + length) else \
                self.find_free(length)
            if start is None:
                return -Errno.ENOMEM
        shared = map_type != _MAP_PRIVATE
        # What MAP_FIXED maps over is unmapped first: only the rest adds to the total.
        growth = length - (self._mapped_bytes_in(start, start + length) if fixed else 0)
        if not self.may_expand(limits, growth, _is_data_mapping(prot, shared,
                                                                bool(flags & _MAP_GROWSDOWN))):
            return -Errno.ENOMEM
        region = None
        if shared and share is not None:
            try:
                region = share(length)
            except OSError as exc:
                return -(exc.errno or Errno.ENODEV)
        # An anonymous PROT_NONE mapping is a reservation (ld.so's before it maps a
        # library over it, a thread stack's before its usable part is opened): the
        # guest can touch none of its pages until an mprotect, after which demand
        # paging backs what it touches (as MAP_POPULATE does nothing there on Linux).
        reservation = read_file is None and region is None and not prot & PROT_MASK
        eager = not reservation and (bool(flags & _MAP_POPULATE)
                                     or length <= EAGER_MAP_LIMIT)
        # Code whose call sites are patched is read, patched, then copied in (and then
        # never matches the file's frames already there). Code with no site to patch
        # (a Python extension module calls through libc) is mapped as data is.
        patched = (self.patch_sites and read_file is not None and region is None
                   and prot & _PROT_EXEC and not shared and _has_sites(file_path or name))
        # A new eager private file mapping has the file read straight into its
        # frames; MAP_FIXED ones first see whether the frames there hold it already,
        # or are untouched frames to write it over (``_reuse_untouched_frames``).
        direct = (read_into is not None and region is None and eager and not fixed
                  and not patched)
        vma = Vma(start, start + length, prot & PROT_MASK, shared=shared, name=name,
                  offset=offset, grows_down=bool(flags & _MAP_GROWSDOWN),
                  region=region)
        # Pages wholly past the end of the file: SIGBUS when touched (``bus_error``).
        in_file = page_up(max(0, file_size - offset)) if file_size is not None else length
        past_end = read_into is not None and region is None and not patched and in_file < length
        runs = None
        if fixed and read_into is not None and region is None and eager and not shared \
                and not past_end:
            runs = self._untouched_frames(start, length)
            if runs is not None and self._map_over_file_in_frames(vma, runs, read_into, patched,
                                                                  file_path or name):
                self._merge_around(start, start + length)
                return start
            direct = runs is None and not patched
        kept = length
        if direct and not fixed and flags & _MAP_DENYWRITE and not offset and keep_file:
            kept = self._ld_so_keeps(length, read_into)
        tail = _FileTail.open(keep_file, start, offset) if kept < length else None
        if past_end and (tail is None or kept > in_file):
            # A tail (its own descriptor) sees the file grow; ld.so's libraries, which
            # do not grow, spare the descriptors (their pages past the end are
            # mapped over at once: the segments, the bss).
            if tail is None and not flags & _MAP_DENYWRITE:
                tail = _FileTail.open(keep_file, start, offset)
            return self._map_past_file_end(vma, in_file, file_size, read_into, tail)
        code = None if not patched or read_into is None else \
            self.kept_patched_code(start, offset, length, read_into, file_path or name)
        data = code if code is not None else \
            read_file(offset, length) if read_file is not None and region is None \
            and not direct else b""
        if patched and data and code is None:
            from .sitepatch import patch_mapping
            data = patch_mapping(self, start, offset, data, file_path or name)
        if fixed and data and self._reuse_untouched_frames(vma, data, runs=runs):
            self._merge_around(start, start + length)
            return start
        try:
            if tail is not None:
                self._map_with_tail(vma.replaced(source=tail), kept, read_into)
            else:
                self.map_fixed(vma, data, eager=eager)
                if direct:
                    self._read_into_frames(start, length, offset, read_into)
        except OutOfGuestMemory:
            self.unmap(start, length)
            return -Errno.ENOMEM
        except OSError:
            self.unmap(start, length)     # the file could not be read: no mapping
            raise
        self._merge_around(start, start + length)
        return start

    def _map_past_file_end(self, vma: Vma, in_file: int, file_size: int,
                           read_into: ReadInto, tail: "_FileTail | None") -> int:
        """Map the private file mapping ``vma``, which reaches past the end of its
        file, over whatever was there: its first ``in_file`` bytes (the file's pages)
        read in now (up to EAGER_MAP_LIMIT, or all without a ``tail``), the rest left
        unmapped. A touch there pages the file in from ``tail`` if it has grown by
        then, and is SIGBUS otherwise, as on Linux (``bus_error``); the VMM's own
        access for a system call, EFAULT. Returns the mapping's address, or -errno."""
        file_end = tail if tail is not None else _FileEnd(vma.start, vma.offset, file_size)
        eager = in_file if in_file <= EAGER_MAP_LIMIT or tail is None else 0
        vma = vma.replaced(file_end=file_end)
        length = vma.end - vma.start
        self.unmap(vma.start, length)
        try:
            if eager:
                self._back(vma.start, eager, perm_for(vma.prot))
            self._insert(vma)
            self._read_into_frames(vma.start, eager, vma.offset, read_into)
        except OutOfGuestMemory:
            self.unmap(vma.start, length)
            return -Errno.ENOMEM
        except OSError:
            self.unmap(vma.start, length)     # the file could not be read: no mapping
            raise
        self._merge_around(vma.start, vma.end)
        return vma.start

    def kept_patched_code(self, start: int, offset: int, length: int, read_into: ReadInto,
                          path: str) -> bytes | None:
        """The patched code kept for ``length`` bytes of the file at ``path`` from
        ``offset``, to be mapped at ``start`` (its stubs mapped below it), when the
        file still holds the bytes it was made from; None otherwise. The file is
        compared a chunk at a time, never read whole."""
        from .sitepatch import kept_patch_in_file
        return kept_patch_in_file(self, start, offset, length, path,
                                  lambda original: _file_holds(read_into, offset, original))

    def _read_into_frames(self, start: int, length: int, offset: int,
                          read_into: ReadInto) -> None:
        """Fill a new mapping's frames with the file from ``offset``: one copy, from
        the host's page cache into guest memory (read_file and _fill make two)."""
        memory, views, left = self.space.memory, [], length
        for paddr, size in frame_runs(self.space, start, length):
            # One trip into the host kernel for the run's pages, not a fault per
            # page as the read below first writes each (ld.so's libc: ~470 pages).
            memory.populate(paddr, min(size, left))
            views.append(memory.slice(paddr, min(size, left)))
            left -= size
            if left <= 0:
                break
        for first in range(0, len(views), MAX_READ_BUFFERS):
            batch = views[first:first + MAX_READ_BUFFERS]
            wanted = sum(len(view) for view in batch)
            if read_into(offset, length, batch) < wanted:
                return                    # the end of the file: the rest stays zero
            offset, length = offset + wanted, length - wanted

    def _ld_so_keeps(self, length: int, read_into: ReadInto) -> int:
        """How much of a new mapping of a whole library (from offset 0, with ld.so's
        MAP_DENYWRITE) ld.so keeps: its first PT_LOAD's pages. ld.so then maps each
        later segment over the rest with MAP_FIXED, so reading the rest now (5 MB
        of libpython's 6) would be done again for each segment. ``length`` when the
        file is no such ELF file, or what is left over is small."""
        head = bytearray(PAGE_SIZE)
        first = first_load_size(bytes(head[:read_into(0, PAGE_SIZE, [memoryview(head)])]))
        if first is None or length - page_up(first) < FILE_TAIL_MIN:
            return length
        return page_up(first)

    def _map_with_tail(self, vma: Vma, kept: int, read_into: ReadInto) -> None:
        """Map the new private file mapping ``vma`` (over free addresses) with its
        first ``kept`` bytes read into frames now, and the rest paged in from its
        ``source`` (a ``_FileTail``) when first touched."""
        self._back(vma.start, kept, perm_for(vma.prot))
        self._insert(vma)
        self._read_into_frames(vma.start, kept, vma.offset, read_into)

    def _map_over_file_in_frames(self, vma: Vma, runs: list[tuple[int, int]],
                                 read_into: ReadInto, patched: bool, path: str) -> bool:
        """ld.so maps each library segment again, with MAP_FIXED, over the whole file
        it mapped first: the frames there usually hold these very bytes already.
        When they do (compared with the file a chunk at a time, not read into a
        buffer of the segment's size: faulted in, copied, freed), map ``vma`` over
        them as ``_reuse_untouched_frames`` does, the patched code kept for them
        (``kept_patch``) copied in if its sites are patched. False (nothing
        changed) when they do not, or no patched code is kept for them. ``runs``:
        the untouched frames there (``_untouched_frames``)."""
        in_file = self._file_bytes_in(runs, vma.offset, read_into)
        if in_file is None:
            return False
        code = b""
        if patched:
            from .sitepatch import kept_patch
            code = kept_patch(self, vma.start, vma.offset, in_file, path,
                              lambda original: self._holds(runs, original))
            if code is None:
                return False
        return self._reuse_untouched_frames(vma, code, in_place=not code, runs=runs)

    def _reuse_untouched_frames(self, vma: Vma, data: bytes, in_place: bool = False,
                                runs: list[tuple[int, int]] | None = None) -> bool:
        """Map the private mapping ``vma`` of ``data`` (then zeros) over the frames
        already there, when they are private copies that nothing has touched since
        they were mapped (no accessed or dirty bit): no translation to them exists
        (KVM's shadow MMU prefetches only accessed entries), so writing ``data`` into
        them where they differ looks like new frames, and spares freeing them and
        faulting fresh host pages in. ld.so maps a library whole, then each segment
        again over it with MAP_FIXED: a segment whose bytes are already there is not
        even copied again (its rights change only), and the text, patched, is copied
        over the unpatched bytes. ``in_place``: the caller found the frames holding
        the mapping's bytes already (only the rights change). False (nothing
        changed) otherwise. ``runs``: the untouched frames there, if found already."""
        length = vma.end - vma.start
        runs = runs if runs is not None else self._untouched_frames(vma.start, length)
        if runs is None:
            return False
        replaced = self._overlapping(vma.start, vma.end)
        if not in_place and not self._holds(runs, data):
            self._overwrite(runs, data)
        if _rss_may_drop(replaced, vma):
            self.note_rss_peak()          # as the unmap it stands for would
        self._cut(vma.start, vma.end)
        self._insert(vma)
        self.space.protect(vma.start, length, perm_for(vma.prot))
        return True

    def _untouched_frames(self, start: int, length: int) -> list[tuple[int, int]] | None:
        """The frame runs under [start, start+length) when private copies back all of
        it that nothing has touched since they were mapped (``_reuse_untouched_frames``
        says why that matters); None otherwise."""
        if self.observer is not None:
            return None       # the Dune API's own tables may write the frames unseen
        covered = 0
        for old in self._overlapping(start, start + length):
            if (old.shared or old.region is not None or old.source is not None
                    or old.sealed or old.vmm_backed):
                return None
            covered += min(old.end, start + length) - max(old.start, start)
        if covered != length:
            return None
        touched = self.space.page_bits.since_mapping.mask(PTE.ACCESSED | PTE.DIRTY)
        if self.space.tables.scan_bits(start, length, touched, collect=False).hits:
            return None
        runs = _runs_within(frame_runs(self.space, start, length), length)
        if sum(size for _, size in runs) != length:
            return None                   # a page with no frame (demand paging)
        return runs

    def _file_bytes_in(self, runs: list[tuple[int, int]], offset: int,
                       read_into: ReadInto) -> int | None:
        """How many bytes of the file from ``offset`` the frames ``runs`` hold, when
        they hold exactly the file's bytes and zeros after its end; None otherwise.
        Read a chunk at a time through one small buffer."""
        chunk, memory, done = _compare_buffer(), self.space.memory, 0
        for paddr, size in runs:
            frames, at = memory.slice(paddr, size), 0
            while at < size:
                wanted = min(len(chunk), size - at)
                got = read_into(offset + done, wanted, [memoryview(chunk)[:wanted]])
                if not chunk.startswith(frames[at:at + got]):
                    return None
                at, done = at + got, done + got
                if got < wanted:
                    return done if self._zeros_after(runs, done) else None
        return done

    def _zeros_after(self, runs: list[tuple[int, int]], skip: int) -> bool:
        """Whether the frames ``runs`` hold only zeros after their first ``skip`` bytes."""
        memory = self.space.memory
        for paddr, size in runs:
            inside = min(skip, size)
            skip -= inside
            if not bytes(size - inside).startswith(memory.slice(paddr + inside, size - inside)):
                return False
        return True

    def _holds(self, runs: list[tuple[int, int]], data: bytes) -> bool:
        """Whether the frames ``runs`` together hold ``data`` followed by zeros."""
        memory, offset = self.space.memory, 0
        for paddr, size in runs:
            inside = max(0, min(size, len(data) - offset))
            frames = memory.slice(paddr, size)
            # bytes.startswith compares a buffer with memcmp, copying nothing (a
            # memoryview's == compares byte by byte: 50 times slower).
            if not data.startswith(frames[:inside], offset) \
                    or not bytes(size - inside).startswith(frames[inside:]):
                return False
            offset += size
        return True

    def _overwrite(self, runs: list[tuple[int, int]], data: bytes) -> None:
        """Write ``data`` followed by zeros into the frames ``runs``."""
        memory, offset, view = self.space.memory, 0, memoryview(data)
        for paddr, size in runs:
            inside = max(0, min(size, len(data) - offset))
            frames = memory.slice(paddr, size)
            frames[:inside] = view[offset:offset + inside]
            frames[inside:] = bytes(size - inside)
            offset += size

    def sys_munmap(self, address: int, length: int) -> int:
        """Implements munmap(2)."""
        if address % PAGE_SIZE or length == 0 or address + length > layout.USER_PROGRAM_END:
            return -Errno.EINVAL
        if self.sealed_in(address, address + page_up(length)):
            return -Errno.EPERM
        self.unmap(address, page_up(length))
        if self.site_stubs:
            from .sitepatch import release_stubs
            release_stubs(self)
        return 0

    def sys_pkey_mprotect(self, address: int, length: int, prot: int, pkey: int,
                          limits: AddressLimits | None = None) -> int:
        """Implements pkey_mprotect(2) as Linux does on a CPU without protection keys
        (the guest's: kvmdune never enables CR4.PKE, so no key is ever allocated):
        key -1 is mprotect(2); any other is refused (EINVAL) once the checks Linux
        makes before it looks at the key pass."""
        if pkey == NO_PKEY:
            return self.sys_mprotect(address, length, prot, limits)
        if address % PAGE_SIZE:
            return -Errno.EINVAL
        if length == 0:
            return 0
        if address + page_up(length) >= 1 << 64:
            return -Errno.ENOMEM          # the range wraps around
        return -Errno.EINVAL              # bad rights or not: the key was never allocated

    def sys_mprotect(self, address: int, length: int, prot: int,
                     limits: AddressLimits | None = None) -> int:
        """Implements mprotect(2)."""
        if address % PAGE_SIZE or prot & ~_PROT_ACCEPTED:
            return -Errno.EINVAL
        end = address + page_up(length)
        if end > layout.USER_PROGRAM_END:
            return -Errno.ENOMEM
        if length == 0:
            return 0
        if not self.covers(address, end):
            return -Errno.ENOMEM
        if self.sealed_in(address, end):
            return -Errno.EPERM
        overlapping = self._overlapping(address, end)
        if any(prot & PROT_MASK & ~vma.max_prot for vma in overlapping):
            return -Errno.EACCES
        if any(_kernel_pages(vma) and prot & PROT_MASK != vma.prot for vma in overlapping):
            return -Errno.EINVAL   # as Linux refuses for its [vvar] pages
        if not self._may_turn_into_data(limits, overlapping, address, end, prot):
            return -Errno.ENOMEM
        before = self._cut(address, end)
        for vma in before:
            self._insert(vma.replaced(prot=prot & PROT_MASK))
        self.space.protect(address, end - address, perm_for(prot))
        if self.observer is not None:
            self.observer.protected(address, end)
        self._merge_around(address, end)
        if self.patch_sites and prot & _PROT_EXEC:
            self._patch_made_executable(before)
        return 0

    def map_private_code(self, start: int, code: bytes, prot: int) -> None:
        """Map the VMM's ``code`` for the guest at ``start`` (sitepatch's stubs): an
        anonymous private mapping, backed at once."""
        self.map_fixed(Vma(start, start + len(code), prot), code, eager=True)

    def _patch_made_executable(self, pieces: list[Vma]) -> None:
        """Patch the call sites of private file mappings mprotect made executable."""
        from .sitepatch import patch_in_place

        for vma in pieces:
            if not vma.prot & ProtFlags.PROT_EXEC and not vma.shared \
                    and vma.region is None and vma.name.startswith("/"):
                patch_in_place(self, vma)

    def store(self, start: int, page: bytes) -> None:
        """Write one page of a private mapping as the VMM (sitepatch's patches),
        backing it first if the guest has not touched it yet."""
        found = self.space.walk(start)
        if found is None:
            vma = self.find(start)
            self._back(start, PAGE_SIZE, perm_for(vma.prot))
            found = self.space.walk(start)
        self.space.memory.slice(found.paddr, len(page))[:] = page

    def sys_mremap(self, old: int, old_length: int, new_length: int, flags: int,
                   new_address: int, limits: AddressLimits | None = None) -> int:
        """Implements mremap(2): shrink, grow in place, or move (by copying), with
        Linux's checks in Linux's order (mm/mremap.c, 6.17+). MREMAP_DONTUNMAP is
        refused (EINVAL): the old range would have to stay mapped with no pages behind
        it. Only a range that grows or moves must lie within one mapping (EFAULT
        otherwise); a move to a fixed address at the same size moves every mapping in
        the range (_mremap_move_all), and shrinking in place or keeping the size
        acts on the range whatever mappings it spans, as on Linux."""
        maymove, fixed = MremapFlags.MREMAP_MAYMOVE, MremapFlags.MREMAP_FIXED
        if flags & ~int(maymove | fixed) or flags & fixed and not flags & maymove:
            return -Errno.EINVAL
        if old % PAGE_SIZE:
            return -Errno.EINVAL
        old_length, new_length = page_up(old_length), page_up(new_length)
        if new_length == 0 or new_length >= ADDRESS_END:
            return -Errno.EINVAL
        if flags & fixed:
            refused = self._mremap_target_refused(old, old_length, new_length, new_address)
            if refused:
                return refused
            if old_length == new_length:
                return self._mremap_move_all(old, old_length, new_address)
        vma = self.find(old)
        if vma is None:
            return -Errno.EFAULT
        if vma.sealed:
            return -Errno.EPERM
        refused = self._mremap_vma_refused(vma)
        if refused:
            return refused
        if not flags & fixed and new_length <= old_length:
            return self._mremap_shrink(old, old_length, new_length)
        if vma.end < old + old_length:
            return -Errno.EFAULT     # a range that grows or moves stays within one mapping
        if not self.may_expand(limits, new_length - old_length,
                               _is_data_mapping(vma.prot, vma.shared, vma.grows_down)):
            return -Errno.ENOMEM
        if flags & fixed and self.sealed_in(new_address, new_address + new_length):
            return -Errno.EPERM
        if vma.region is not None and new_length > old_length and vma.region.file is None:
            return -Errno.ENOMEM   # shared memory of the VMM's own: no file to map more of
        if flags & fixed:
            return self._mremap_move(vma, old, old_length, new_length, new_address)
        tail = old + old_length
        if vma.end == tail and self.is_free(tail, old + new_length):
            if vma.region is not None:     # a region of the new size, in the same place
                return self._mremap_move(vma, old, old_length, new_length, old)
            # An anonymous copy's source (a moved block's contents) reads as zero past
            # them: the tail keeps it, so that the two stay one VMA, as on Linux.
            source = vma.source if not vma.name else None
            self.map_fixed(vma.replaced(start=tail, end=old + new_length,
                                        offset=vma.offset + old_length, source=source,
                                        soft_dirty=True))
            self._merge_around(old, old + new_length)
            return old
        if not flags & MremapFlags.MREMAP_MAYMOVE:
            return -Errno.ENOMEM
        target = self.find_free(new_length)
        if target is None:
            return -Errno.ENOMEM
        return self._mremap_move(vma, old, old_length, new_length, target)

    def _mremap_shrink(self, old: int, old_length: int, new_length: int) -> int:
        """mremap(2) in place to no more than the old size: the tail is unmapped as
        munmap would (whatever mappings it spans); the range stays where it is."""
        if new_length < old_length:
            tail = old + new_length
            if self.sealed_in(tail, old + old_length):
                return -Errno.EPERM
            self.unmap(tail, old_length - new_length)
        return old

    def _mremap_move_all(self, old: int, length: int, target: int) -> int:
        """mremap(2) to a fixed address at the same size (Linux 6.17+'s remap_move):
        each mapping in [old, old + length) moves, split where the range cuts it, to
        the same distance from ``target`` as it had from ``old``, so the gaps
        between them are kept and the target's pages over a gap stay as they were.
        A range that starts in a gap is EFAULT; a mapping refused after others moved
        returns its error with those moved, as Linux leaves them."""
        end = old + length
        vmas = self._overlapping(old, end)
        if not vmas or vmas[0].start > old:
            return -Errno.EFAULT
        # The VMAs are immutable and the target is apart from [old, end) (checked):
        # moving one leaves the others in the list as they are.
        for vma in vmas:
            start, stop = max(vma.start, old), min(vma.end, end)
            destination = target + start - old
            refused = self._mremap_move_refused(vma, destination, stop - start)
            if refused:
                return refused
            self._mremap_move(vma, start, stop - start, stop - start, destination)
        return target

    def _mremap_move_refused(self, vma: Vma, target: int, length: int) -> int:
        """Why ``vma`` (or its part) may not move to [target, target + length):
        -errno, or 0."""
        if vma.sealed or self.sealed_in(target, target + length):
            return -Errno.EPERM
        return self._mremap_vma_refused(vma)

    @staticmethod
    def _mremap_vma_refused(vma: Vma) -> int:
        """Why ``vma`` may not move or grow: -errno, or 0."""
        if vma.vmm_backed and not _kernel_pages(vma):
            return -Errno.EINVAL   # pages only the VMM maps stay put
        return 0

    @staticmethod
    def _mremap_target_refused(old: int, old_length: int, new_length: int,
                               target: int) -> int:
        """mremap_to's checks of an MREMAP_FIXED target: -errno, or 0."""
        if target % PAGE_SIZE:
            return -Errno.EINVAL
        if new_length > layout.USER_PROGRAM_END or target > layout.USER_PROGRAM_END - new_length:
            return -Errno.EINVAL
        if old + old_length > target and target + new_length > old:
            return -Errno.EINVAL       # the old and new ranges overlap
        return 0

    def _grown_region(self, part: Vma, new_length: int) -> SharedRegion:
        """A region of ``new_length`` bytes over the file of ``part``'s region, from
        ``part``'s place in it."""
        region = part.region
        keep = os.dup(region.file)
        try:
            return self.space.memory.add_shared(
                new_length, region.file, region.file_offset + part.region_offset,
                writable=bool(region.mapping.prot & ProtFlags.PROT_WRITE), file_backed=True,
                keep=keep, release=region.release_file)
        except BaseException:
            region.release_file(keep)
            raise

    def _mremap_move(self, vma: Vma, old: int, old_length: int, new_length: int,
                     target: int) -> int:
        keep = min(old_length, new_length)
        part = _piece(vma, old, old + keep)     # its file and region offsets follow
        if part.region is not None and new_length > old_length:
            try:
                part = part.replaced(region=self._grown_region(part, new_length),
                                     region_offset=0)
            except OSError as exc:
                return -(exc.errno or Errno.ENOMEM)
            self.unmap(old, old_length)
            self.map_fixed(part.replaced(start=target, end=target + new_length, source=None,
                                         file_end=None, soft_dirty=True))
            return target
        if _kernel_pages(vma):
            moved = part.replaced(start=target, end=target + keep)
            present = [offset - moved.region_offset
                       for offset in vma.region.mapping.readable_pages()]
            self.map_kernel_pages(moved, present, perm_for(vma.prot))
            self.unmap(old, old_length)
            return target
        # A shared mapping's pages stay in its region (the VMM reads none of them:
        # those past the end of the file would raise SIGBUS here).
        data = b"" if vma.region is not None else self.read_mapped(old, keep)
        # Linux moves the entries and marks each soft-dirty; the copy here is new.
        self.map_fixed(part.replaced(start=target, end=target + new_length, source=None,
                                     file_end=None, soft_dirty=True), data)
        self.unmap(old, old_length)
        return target

    def read_mapped(self, start: int, length: int) -> bytes:
        """Contents of a range as the guest would read it (unbacked pages are zero
        or come from their source)."""
        out = bytearray()
        for page in range(start, start + length, PAGE_SIZE):
            found = self.space.walk(page)
            if found is not None:     # present or PROT_NONE: the frame holds the page
                out += self.space.memory.slice(found.paddr, PAGE_SIZE)
            else:
                vma = self.find(page)
                out += vma.source(page, PAGE_SIZE) if vma and vma.source else bytes(PAGE_SIZE)
        return bytes(out)

    def _merge_around(self, start: int, end: int) -> None:
        """Join the VMAs in and beside [start, end) with compatible neighbours, as
        Linux's vma_merge does, so /proc/self/maps shows what Linux shows."""
        index = max(bisect.bisect_left(self.vmas, start, key=_END) - 1, 0)
        while index + 1 < len(self.vmas) and self.vmas[index].start <= end:
            before, after = self.vmas[index], self.vmas[index + 1]
            if _mergeable(before, after):
                self.vmas[index:index + 2] = [before.replaced(
                    end=after.end, soft_dirty=before.soft_dirty or after.soft_dirty)]
            else:
                index += 1

    def sys_madvise(self, address: int, length: int, advice: int) -> int:
        """Implements madvise(2): DONTNEED/FREE drop the pages (they read as zero,
        or as the file, afterwards); the rest are hints."""
        end = address + page_up(length)
        if address % PAGE_SIZE or end >= ADDRESS_END:       # Linux's end wraps: EINVAL
            return -Errno.EINVAL
        if advice in _HUGE_ADVICE:
            self._set_huge_advice(address, end, _HUGE_ADVICE[advice])
        elif advice in (MadviseAdvice.MADV_DONTNEED, MadviseAdvice.MADV_FREE):
            if self.sealed_in(address, end):
                return -Errno.EPERM
            with self.space.batch():
                for vma in self._overlapping(address, end):
                    start, stop = max(vma.start, address), min(vma.end, end)
                    self._drop(start, stop - start)   # refilled on demand
        # Applied to what is mapped; a hole in the range is reported (as Linux does).
        return 0 if self.covers(address, end) else -Errno.ENOMEM

    def _set_huge_advice(self, start: int, end: int, advice: HugeAdvice) -> None:
        """MADV_HUGEPAGE / MADV_NOHUGEPAGE: the mappings in [start, end) get the flag
        (split at the range's ends, as Linux's madvise_update_vma does). Pages mapped
        already stay as they are (Linux's khugepaged may collapse them later)."""
        for vma in self._cut(start, end):
            self._insert(vma.replaced(huge_advice=advice))
        self._merge_around(start, end)

    def sys_msync(self, address: int, length: int, flags: int) -> int:
        """Implements msync(2): guest memory is host memory (shared mappings write
        through), so only the range is checked."""
        both = MsyncFlags.MS_ASYNC | MsyncFlags.MS_SYNC
        if (address % PAGE_SIZE or flags & ~(both | MsyncFlags.MS_INVALIDATE)
                or flags & both == both):
            return -Errno.EINVAL
        end = address + page_up(length)
        if end >= ADDRESS_END:
            return -Errno.ENOMEM
        return 0 if self.covers(address, end) else -Errno.ENOMEM

    def sys_mlock(self, address: int, length: int) -> int:
        """Implements mlock(2) and munlock(2): guest memory stays resident anyway, so
        only the range (widened to whole pages) is checked."""
        start = address & ~(PAGE_SIZE - 1)
        end = start + page_up(length + address - start)
        if end >= ADDRESS_END:
            return -Errno.EINVAL
        return 0 if self.covers(start, end) else -Errno.ENOMEM

    # -- reporting -----------------------------------------------------------------
    def maps_text(self) -> str:
        """/proc/self/maps for the guest."""
        return "".join(vma.format() + "\n" for vma in self.vmas)


#: The sort key of ``MemoryMap.vmas``, and the key for searches by end (as sorted).
_START, _END = operator.attrgetter("start"), operator.attrgetter("end")


def _has_sites(path: str) -> bool:
    from .sitepatch import has_sites      # (sitepatch is loaded where patching is on)
    return has_sites(path)


def _piece(vma: Vma, start: int, end: int) -> Vma:
    """The part [start, end) of ``vma``, its file and region offsets following."""
    return vma.replaced(start=start, end=end, offset=vma.offset + start - vma.start,
                        region_offset=vma.region_offset + start - vma.start)


def _within_file(vma: Vma) -> int:
    """How many bytes from the start of the shared mapping ``vma`` lie within its
    region's file now (whole pages; all of it for memory that is no file's)."""
    return max(0, min(vma.region.readable_end() - vma.region_offset, vma.end - vma.start))


def _overlap(vma: Vma, start: int, end: int) -> int:
    """How many bytes of [start, end) ``vma`` maps."""
    return min(vma.end, end) - max(vma.start, start)


def _is_data_mapping(prot: int, shared: bool, stack: bool) -> bool:
    """Linux's is_data_mapping: private and writable, not a stack (RLIMIT_DATA's)."""
    return bool(prot & ProtFlags.PROT_WRITE) and not shared and not stack


def _kernel_pages(vma: Vma) -> bool:
    """Whether ``vma`` maps pages of the kernel's own (the vDSO's data)."""
    return vma.vmm_backed and vma.region is not None and vma.region.mapping.borrowed


def _mergeable(before: Vma, after: Vma) -> bool:
    """Whether two VMAs are one mapping to Linux: adjacent, the same rights, kind and
    file, the file's offsets continuing, and no host-shared region behind them
    (VM_SOFTDIRTY does not keep mappings apart, as in Linux's is_mergeable_vma)."""
    if before.end != after.start or before.region is not None or after.region is not None:
        return False
    if (before.prot, before.shared, before.name, before.grows_down, before.source,
            before.sealed, before.vmm_backed, before.max_prot, before.huge_advice,
            before.file_end) != \
            (after.prot, after.shared, after.name, after.grows_down, after.source,
             after.sealed, after.vmm_backed, after.max_prot, after.huge_advice,
             after.file_end):
        return False
    return before.source is None or after.offset == before.offset + (before.end - before.start)


#: The madvise advices that set a mapping's huge-page flag.
_HUGE_ADVICE = {MadviseAdvice.MADV_HUGEPAGE: HugeAdvice.HUGEPAGE,
                MadviseAdvice.MADV_NOHUGEPAGE: HugeAdvice.NOHUGEPAGE}


#: The buffer ``_file_bytes_in`` reads a file through (one per VMM lineage: a forked
#: child copies only the pages it writes; memory maps change under the process's
#: lock, so one caller at a time).
COMPARE_CHUNK = 64 << 10
_compare_chunk: bytearray | None = None


def _compare_buffer() -> bytearray:
    global _compare_chunk
    if _compare_chunk is None:
        _compare_chunk = bytearray(COMPARE_CHUNK)
    return _compare_chunk


def _file_holds(read_into: ReadInto, offset: int, data: bytes) -> bool:
    """Whether the file ``read_into`` reads holds ``data`` from ``offset``: read a
    chunk at a time through one small buffer."""
    chunk, done = memoryview(_compare_buffer()), 0
    while done < len(data):
        wanted = min(len(chunk), len(data) - done)
        if read_into(offset + done, wanted, [chunk[:wanted]]) < wanted \
                or not data.startswith(chunk[:wanted], done):
            return False
        done += wanted
    return True


def _runs_within(runs: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """``runs`` cut at ``length`` bytes."""
    cut, left = [], length
    for paddr, size in runs:
        if left <= 0:
            break
        cut.append((paddr, min(size, left)))
        left -= size
    return cut


def _rss_may_drop(replaced: list[Vma], vma: Vma) -> bool:
    """Whether mapping ``vma`` over the untouched, present pages of ``replaced``
    (_reuse_untouched_frames) lowers the resident set, which counts such pages for
    a private file mapping and not for an anonymous one (residency.rss): only a
    file's pages turned anonymous do. Noting the peak walks every table."""
    if residency.backing(vma) is residency.Backing.FILE_PRIVATE:
        return False
    return any(residency.backing(old) is residency.Backing.FILE_PRIVATE for old in replaced)


def frame_runs(space: AddressSpace, start: int, length: int) -> list[tuple[int, int]]:
    """The guest frames behind [start, start+length), as runs of contiguous
    (paddr, size) in address order, up to the first page with no entry (present or
    PROT_NONE); the last run may reach past the end to its page's end. One pass
    over the leaf entries, not a walk per page: filling a fresh mapping of a
    library is on the path of every exec."""
    runs: list[tuple[int, int]] = []
    cursor = start
    for base, page_size, entries in space.tables.leaves(start, page_up(start + length) - start):
        if base > cursor:
            break                                    # a hole
        if page_size == PAGE_SIZE and _consecutive(entries):
            skip = cursor - base if base < cursor else 0   # a page begun before
            paddr = (entries[0] & ADDRESS_MASK) + skip
            size = len(entries) * PAGE_SIZE - skip
            if runs and runs[-1][0] + runs[-1][1] == paddr:
                runs[-1] = (runs[-1][0], runs[-1][1] + size)
            else:
                runs.append((paddr, size))
            base += len(entries) * PAGE_SIZE
            cursor = base
            continue
        mask = HUGE_ADDRESS_MASK if page_size > PAGE_SIZE else ADDRESS_MASK
        for entry in entries.tolist():
            if not entry:
                return runs
            skip = cursor - base if base < cursor else 0   # a huge page begun before
            paddr, size = (entry & mask) + skip, page_size - skip
            if runs and runs[-1][0] + runs[-1][1] == paddr:
                runs[-1] = (runs[-1][0], runs[-1][1] + size)
            else:
                runs.append((paddr, size))
            base += page_size
            cursor = base
    return runs


def _consecutive(entries: memoryview) -> bool:
    """Whether 4 KiB leaf entries map consecutive frames with the same bits, as a
    fresh mapping's do (its frames come from one allocation): compared at C speed
    with the entries such a run would have, where a loop over them in Python takes
    ~1.5 ms for a 6 MB library, several times per mapping."""
    first = entries[0]
    if not first:
        return False
    expected = array.array("Q", range(first, first + len(entries) * PAGE_SIZE, PAGE_SIZE))
    return entries.tobytes() == expected.tobytes()


class _FileTail:
    """The pages of a private file mapping left out when it was mapped, read from
    the file when first touched (a ``Vma.source``), through a descriptor of the
    VMM's own: the guest may close its own or reuse its number. Closed when the
    last VMA holding it goes (munmap, a mapping over it, exec)."""

    live = 0

    def __init__(self, fd: int, base: int, offset: int) -> None:
        self.fd, self.base, self.offset = fd, base, offset
        _FileTail.live += 1

    @classmethod
    def open(cls, keep_file: Callable[[], int] | None, base: int,
             offset: int) -> "_FileTail | None":
        """A tail for a mapping at ``base`` of the file from ``offset``; None when
        MAX_FILE_TAILS are alive or the file cannot be opened again."""
        if keep_file is None or cls.live >= MAX_FILE_TAILS:
            return None
        try:
            return cls(keep_file(), base, offset)
        except OSError:
            return None

    def __call__(self, address: int, length: int) -> bytes:
        try:
            data = os.pread(self.fd, length, self.offset + address - self.base)
        except OSError:
            data = b""        # (an I/O error: Linux raises SIGBUS; the page reads as zero)
        return data + bytes(length - len(data))

    def past_end(self, page: int) -> bool:
        """Whether the page at ``page`` lies wholly past the end of the file now
        (Linux's SIGBUS), the file's size read again: it may have grown."""
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            return True
        return self.offset + page - self.base >= page_up(size)

    def __del__(self) -> None:
        os.close(self.fd)
        _FileTail.live -= 1


class _FileEnd:
    """Where a private file mapping's file ends (``Vma.file_end``) when no
    descriptor is kept for it (``_FileTail``): as it ended when mapped (a later
    growth of the file is not seen; such pages read as zeros)."""

    def __init__(self, base: int, offset: int, file_size: int) -> None:
        self.base, self.offset, self.file_size = base, offset, file_size

    def __call__(self, address: int, length: int) -> bytes:
        return bytes(length)

    def past_end(self, page: int) -> bool:
        return self.offset + page - self.base >= page_up(self.file_size)


def _bytes_source(data: bytes, base: int) -> Callable[[int, int], bytes]:
    def source(address: int, length: int) -> bytes:
        offset = address - base
        chunk = data[offset:offset + length]
        return chunk + bytes(length - len(chunk))
    return source
