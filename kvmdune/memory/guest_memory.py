"""Guest-physical memory: one lazily committed host mapping, its frames, its memory slot.

The whole guest-physical space is a single anonymous private mapping, registered as
KVM memory slot 0 as far as frames are in use (plus headroom) and as a tail slot
beyond once the allocator first needs it there. Host memory is committed only for
pages actually touched, so the reservation can be large; registering a slot costs
more the larger it is (PLATFORM.md: 4 GiB 3 ms, 64 GiB 308 ms), in every forked
child's new VM too. Shared regions live above it, a slot each.
"""

from __future__ import annotations

import array
import os
import threading
from typing import Callable

from ..kvm import Cap, DirtyLogProtect, KvmError, MemFlags, Vm
from . import _atomics
from .frames import PAGE_SIZE, FrameAllocator, OutOfGuestMemory
from .host_mapping_unsafe import HostMapping, Reservation

DEFAULT_GUEST_MEMORY = 4 << 30
#: Guest memory is a whole number of these (the largest page the tables map).
GUEST_MEMORY_ALIGN = 2 << 20
#: KVM refuses a memory slot of 2^31 pages or more (KVM_MEM_MAX_NR_PAGES on x86-64).
MAX_GUEST_MEMORY = ((1 << 31) - 1) * PAGE_SIZE // GUEST_MEMORY_ALIGN * GUEST_MEMORY_ALIGN
#: Guest-physical page 0 is never handed out, so that 0 can mean "no frame".
FIRST_FRAME = PAGE_SIZE
GUEST_MEMORY_SLOT = 0
#: The memory slot of the rest of guest memory, [covered, size), registered only
#: once frames are needed there (shared regions take the low slot numbers; KVM
#: allows slot numbers below 32764 on x86-64).
GUEST_MEMORY_TAIL_SLOT = 32000
#: A VM registers guest memory as far as frames are in use plus this much in slot
#: 0 (the rest in the tail slot when first needed): KVM allocates its reverse map
#: for a slot's every page when it is registered, ~1 ms per GiB (PLATFORM.md: 4 GiB
#: 3 ms), in each forked child's new VM too, which usually needs a few MiB.
SLOT_HEADROOM = 256 << 20


#: Guest memory up to this size may use KVM's dirty log, the cheap write protection of
#: ``write_protect`` (KVM then keeps two bitmaps of a bit per page: 64 GiB, 4 MiB).
#: It is turned on only when a reader of dirty bits first clears one
#: (``start_dirty_log``): a logged slot is mapped by KVM in 4 KiB pieces whatever
#: the guest's page size, so a program nobody watches keeps KVM's 2 MiB mappings.
DIRTY_LOG_LIMIT = 64 << 30
_DIRTY_LOG_MODE = DirtyLogProtect.MANUAL_PROTECT_ENABLE | DirtyLogProtect.INITIALLY_SET
#: KVM_CLEAR_DIRTY_LOG's first page is a multiple of this (a bitmap word).
DIRTY_LOG_ALIGN = 64

#: Ranges to invalidate closer than this are invalidated as one: a pair of mprotect
#: calls costs far more than dropping a few extra shadow entries (which only refault).
INVALIDATION_GAP = 64 << 10


def _bridge_gaps(ranges: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, length in ranges:
        if merged and start - (merged[-1][0] + merged[-1][1]) <= gap:
            merged[-1] = (merged[-1][0], start + length - merged[-1][0])
        else:
            merged.append((start, length))
    return merged


def _page_bitmap(ranges: list[tuple[int, int]],
                 total_pages: int) -> tuple[int, int, array.array]:
    """KVM_CLEAR_DIRTY_LOG's arguments for sorted ranges of a slot of ``total_pages``:
    the first page (a multiple of 64), the page count (a multiple of 64 unless it
    reaches the slot's end, as KVM requires) and the bitmap, one bit per page."""
    first = ranges[0][0] // PAGE_SIZE // DIRTY_LOG_ALIGN * DIRTY_LOG_ALIGN
    last = max(start + length for start, length in ranges) // PAGE_SIZE
    count = min(-(-(last - first) // DIRTY_LOG_ALIGN) * DIRTY_LOG_ALIGN, total_pages - first)
    bitmap = array.array("Q", bytes(-(-count // DIRTY_LOG_ALIGN) * 8))
    for start, length in ranges:
        page, stop = start // PAGE_SIZE - first, (start + length) // PAGE_SIZE - first
        while page < stop:
            word, bit = divmod(page, DIRTY_LOG_ALIGN)
            run = min(DIRTY_LOG_ALIGN - bit, stop - page)
            bitmap[word] |= ((1 << run) - 1) << bit
            page += run
    return first, count, bitmap


#: Shared regions (host files or shared memory mapped into the guest) live above
#: the guest's own memory, each in a memory slot of its own, aligned to 2 MiB.
SHARED_REGION_ALIGN = 2 << 20


class SharedRegion:
    """Host memory that stays shared with the host (a file's pages, or memory shared
    across fork), mapped at guest-physical ``base`` through its own memory slot of
    ``slot_size`` bytes (at least ``size``: a retired slot reused)."""

    def __init__(self, base: int, slot: int, mapping: HostMapping,
                 flags: MemFlags = MemFlags(0), slot_size: int | None = None,
                 file_backed: bool = False) -> None:
        self.base, self.slot, self.mapping, self.flags = base, slot, mapping, flags
        self.size = mapping.size
        self.slot_size = slot_size or mapping.size
        #: A file the guest can resize (its pages past the file's end raise SIGBUS
        #: when touched, in the guest and in the VMM alike: ``readable``).
        self.file_backed = file_backed
        #: The VMM's own descriptor of that file (``add_shared``'s ``keep``), for a
        #: region of another size over it (mremap growing the mapping); None if none.
        self.file: int | None = None
        self.file_offset = 0        # where the region starts in that file
        #: How ``file`` is let go (``add_shared``'s ``release``).
        self.release_file: Callable[[int], None] = os.close

    def forget_file(self) -> None:
        """Let the kept descriptor go (the region's mapping is going)."""
        if self.file is not None:
            self.release_file(self.file)
            self.file = None

    @property
    def end(self) -> int:
        return self.base + self.size

    def readable(self, offset: int, length: int) -> bool:
        """Whether [offset, offset+length) of the region lies within its file now."""
        return not self.file_backed or self.mapping.readable(offset, length)

    def readable_end(self) -> int:
        """How many bytes from the region's start lie within its file now (whole
        pages: the last page of a file reads as zeros past its end)."""
        return self.mapping.readable_end() if self.file_backed else self.size


def _unmap_region(region: SharedRegion) -> None:
    """Unmap a region's host memory, with the reservation after it when it reused a
    larger retired slot."""
    tail = region.slot_size - region.size
    address = region.mapping.address
    region.forget_file()
    region.mapping.close()
    if tail > 0:
        Reservation(address + region.size, tail).close()


class RetiredSlot:
    """The memory slot of a shared region no mapping uses any more, kept over an
    inaccessible host reservation: deleting a slot costs KVM an SRCU grace period
    (milliseconds; an exec drops a shell's shared mappings each time), while a later
    region that fits reuses it with no KVM call at all."""

    def __init__(self, base: int, slot: int, reservation: Reservation) -> None:
        self.base, self.slot, self.reservation = base, slot, reservation

    @property
    def size(self) -> int:
        return self.reservation.size


#: Retired slots kept per guest memory; beyond this, a removed region's slot is
#: deleted (a process that keeps mapping shared files of new sizes).
MAX_RETIRED_SLOTS = 16
#: The size of the slot registered in the background for the first shared regions
#: (``GuestMemory.start_spare_slot``): glibc maps its gconv cache (27 KB) shared in
#: every python3 start.
SPARE_SLOT_SIZE = 2 << 20


class _SpareSlot:
    """A retired slot in the making: its KVM_SET_USER_MEMORY_REGION, over an
    inaccessible reservation, runs on a thread of its own, through a descriptor of
    its own for the VM (closed when done: the VMM may close its own meanwhile)."""

    def __init__(self, vm: Vm, base: int, slot: int, reservation: Reservation) -> None:
        self.vm, self.base, self.slot, self.reservation = vm, base, slot, reservation
        self._vm_fd = os.dup(vm.fd)
        self.done = threading.Event()
        self.registered = False

    def register(self) -> None:
        own = Vm(self.vm.kvm, self._vm_fd)
        try:
            own.set_user_memory_region(self.slot, self.base, self.reservation.size,
                                       self.reservation.address)
            self.registered = True
        except KvmError:
            pass                    # (no slot left, say): the next region adds its own
        finally:
            own.close()
            self.done.set()


class GuestMemory:
    """Guest-physical memory: ``[0, size)`` backed by one host mapping, plus shared
    regions above it."""

    def __init__(self, size: int = DEFAULT_GUEST_MEMORY) -> None:
        if size % GUEST_MEMORY_ALIGN or not 0 < size <= MAX_GUEST_MEMORY:
            raise ValueError("guest memory size must be a positive multiple of 2 MiB, "
                             f"at most {MAX_GUEST_MEMORY >> 20} MiB")
        self.mapping = HostMapping(size)
        self.size = size
        self.view = self.mapping.view      # bytes, bounds-checked
        self.words = self.mapping.words    # 64-bit words, bounds-checked
        self.frames = FrameAllocator(FIRST_FRAME, size, self._discard,
                                     carve_huge=self._advise_huge)
        self.frames.cover = self._cover
        #: [0, covered) is registered as slot 0; the tail slot, when registered,
        #: holds the rest (``_cover``).
        self.covered = size
        self.tail_registered = False
        #: Waits until no access to guest memory through a translation made before
        #: the call is under way outside a vCPU (the native fast path's serves):
        #: called before freed frames go back to the host (and may be reused) and
        #: after every invalidation, so that restrictions reach those accesses too.
        self.quiesce: Callable[[], None] | None = None
        #: Takes every other vCPU out of KVM_RUN until the caller's VMM call ends
        #: (the process's threads park): guest memory is briefly in no slot while
        #: slot 0 grows to all of it (``_cover_in_slot_zero``).
        self.stop_guest: Callable[[], None] | None = None
        self.regions: list[SharedRegion] = []
        #: Regions the VM has no slot for yet (a forked child's, until the guest
        #: first reaches one: ``map_deferred``).
        self.deferred: list[SharedRegion] = []
        self._deferred_lock = threading.Lock()     # vCPU threads reach them unlocked
        self.retired: list[RetiredSlot] = []
        #: A slot being registered in the background (``start_spare_slot``).
        self._spare: _SpareSlot | None = None
        self._vm: Vm | None = None
        #: Whether slot 0 may log dirty pages (register(): KVM can, and it is wanted)
        #: and whether it does now (``start_dirty_log``).
        self.dirty_log_available = False
        self.dirty_log = False
        # A gap after each backing keeps two backings from ever looking contiguous.
        self._next_base = -(-size // SHARED_REGION_ALIGN) * SHARED_REGION_ALIGN + SHARED_REGION_ALIGN

    def register(self, vm: Vm, slot: int = GUEST_MEMORY_SLOT, dirty_log: bool = True,
                 defer_regions: bool = False) -> None:
        """Make this memory the VM's guest-physical memory (KVM_SET_USER_MEMORY_REGION),
        shared regions included (a forked child registers them with its new VM).
        With ``dirty_log``, the main slot may log dirty pages where KVM can (for
        ``write_protect``; a machine that invalidates by guest TLB flushes has no use
        for it); logging itself starts with ``start_dirty_log``. With
        ``defer_regions``, the shared regions get their slots only when the guest
        first reaches them (``map_deferred``): every slot added waits for a KVM
        synchronisation round (milliseconds under load), and a forked child that
        execs soon usually reaches none of its parent's."""
        self.dirty_log_available = dirty_log and self._enable_dirty_log(vm)
        self.dirty_log = False
        in_use = -(-self.frames.bump_end // GUEST_MEMORY_ALIGN) * GUEST_MEMORY_ALIGN
        self.covered = min(self.size, in_use + SLOT_HEADROOM)
        self.tail_registered = False
        self.frames.covered_end = self.covered
        vm.set_user_memory_region(slot, 0, self.covered, self.mapping.address)
        self._drop_retired()        # slots of the VM before (a forked child's parent)
        self.deferred = list(self.regions) if defer_regions else []
        for region in self.regions:
            if not defer_regions:
                self._register_region(vm, region)
        self._vm = vm

    @staticmethod
    def _register_region(vm: Vm, region: SharedRegion) -> None:
        vm.set_user_memory_region(region.slot, region.base, region.slot_size,
                                  region.mapping.address, region.flags)

    def map_deferred(self, paddr: int, length: int) -> bool:
        """The guest reached guest-physical [paddr, paddr+length) and KVM found no
        slot (an MMIO exit): if it lies in a region whose slot was deferred, the
        slot is registered now (True) and the access can complete from the region's
        memory."""
        with self._deferred_lock:
            for region in self.deferred:
                if region.base <= paddr and paddr + length <= region.base + region.slot_size:
                    self._register_region(self._vm, region)
                    self.deferred.remove(region)
                    return True
        return False

    def _cover(self, end: int) -> None:
        """Frames up to ``end`` are about to be handed out, past slot 0: register
        the rest of guest memory as the tail slot (adding a slot drops no
        translation, unlike resizing slot 0, which KVM can only delete and re-add)."""
        if self._vm is None or self.tail_registered or end <= self.covered:
            return
        try:
            self._vm.set_user_memory_region(GUEST_MEMORY_TAIL_SLOT, self.covered,
                                            self.size - self.covered,
                                            self.mapping.address + self.covered)
        except KvmError as exc:
            raise OutOfGuestMemory(f"cannot register guest memory with KVM: {exc}") from exc
        self.tail_registered = True
        self.frames.covered_end = self.size

    def _cover_in_slot_zero(self, flags: MemFlags) -> None:
        """Register all of guest memory as slot 0 with ``flags`` (KVM's dirty log
        works per slot, and its users know slot 0 only). Deleting the slots drops
        every translation to guest memory, which only refaults."""
        vm = self._vm
        if self.covered < self.size:
            if self.stop_guest is not None:
                self.stop_guest()
            if self.tail_registered:
                vm.set_user_memory_region(GUEST_MEMORY_TAIL_SLOT, self.covered, 0, 0)
            vm.set_user_memory_region(GUEST_MEMORY_SLOT, 0, 0, 0)
            self.covered, self.tail_registered = self.size, False
            self.frames.covered_end = self.size
        vm.set_user_memory_region(GUEST_MEMORY_SLOT, 0, self.size, self.mapping.address, flags)

    def _drop_retired(self) -> None:
        while self.retired:
            self.retired.pop().reservation.close()

    def start_dirty_log(self) -> bool:
        """Turn on KVM's dirty log of the main slot (if it may have one; once on, it
        stays on for this VM): True if it is on. Every page starts counted dirty
        (KVM_DIRTY_LOG_INITIALLY_SET), so nothing is write-protected until
        ``write_protect`` asks; KVM maps the slot in 4 KiB pieces from now on."""
        if self.dirty_log or not self.dirty_log_available or self._vm is None:
            return self.dirty_log
        self._cover_in_slot_zero(MemFlags.LOG_DIRTY_PAGES)
        self.dirty_log = True
        return True

    def _advise_huge(self, paddr: int) -> None:
        """A 2 MiB frame is cut for a 2 MiB guest page: one host huge page behind it."""
        self.mapping.advise_huge_pages(paddr, GUEST_MEMORY_ALIGN)

    def start_spare_slot(self) -> None:
        """Register a retired slot of SPARE_SLOT_SIZE bytes on a thread of its own,
        while the guest runs on: each slot added waits for a KVM synchronisation
        round (SRCU; milliseconds on a loaded machine), and the first shared file
        mapping that fits takes this one with no KVM call (``add_shared``). The
        caller starts it with every signal blocked (the thread inherits its mask)."""
        if self._vm is None or self._vm.closed or self._spare is not None:
            return
        reservation = Reservation.anywhere(SPARE_SLOT_SIZE)
        spare = _SpareSlot(self._vm, self._next_base, self._free_slot(), reservation)
        self._next_base += (SPARE_SLOT_SIZE // SHARED_REGION_ALIGN + 1) * SHARED_REGION_ALIGN
        self._spare = spare
        threading.Thread(target=spare.register, name="kvmdune-spare-slot", daemon=True).start()

    def settle_spare(self) -> None:
        """Wait for the slot ``start_spare_slot`` registers, and keep it as a retired
        slot (before a fork: the child's VMM starts with no such thread)."""
        spare, self._spare = self._spare, None
        if spare is None:
            return
        spare.done.wait()
        if spare.registered and spare.vm is self._vm and not spare.vm.closed:
            self.retired.append(RetiredSlot(spare.base, spare.slot, spare.reservation))
        else:
            spare.reservation.close()

    def add_shared(self, size: int, fd: int, offset: int = 0, writable: bool = True,
                   file_backed: bool = False, keep: int | None = None,
                   release: Callable[[int], None] = os.close) -> SharedRegion:
        """Map ``size`` bytes of ``fd`` (shared) into guest-physical memory;
        ``file_backed``: ``fd`` is a file the guest can resize (not memory of the
        VMM's own); ``keep``: a descriptor of it the region then owns, kept for
        regions of other sizes over the same file, and given to ``release`` when
        the mapping goes (the descriptor's owner may not want it closed at once: a
        close drops the process's POSIX record locks on the file)."""
        if self._vm is None:
            raise RuntimeError("shared regions need the memory registered with a VM")
        self.settle_spare()
        fitting = [slot for slot in self.retired if slot.size >= size]
        if fitting:
            region = self._reuse(min(fitting, key=lambda slot: slot.size), size, fd, offset,
                                 writable)
        else:
            region = self._add_region(HostMapping(size, fd=fd, offset=offset,
                                                  writable=writable))
        region.file_backed = file_backed
        region.file, region.file_offset, region.release_file = keep, offset, release
        return region

    def add_kernel_pages(self, address: int, size: int) -> SharedRegion:
        """Pages the host kernel mapped into the VMM (the vDSO's data: Linux's own
        clock data, which every process may read) as a read-only memory slot, so
        that guest code reads them where they are. Such a region lives as long as
        this memory (``remove_shared`` keeps it): every image exec'd reuses it, and
        a forked child's VMM has the same pages at the same address."""
        for region in self.regions:
            if region.mapping.borrowed and region.mapping.address == address \
                    and region.size == size:
                return region
        return self._add_region(HostMapping.borrow(address, size), MemFlags.READONLY)

    def _add_region(self, mapping: HostMapping, flags: MemFlags = MemFlags(0)) -> SharedRegion:
        if self._vm is None:
            mapping.close()
            raise RuntimeError("shared regions need the memory registered with a VM")
        region = SharedRegion(self._next_base, self._free_slot(), mapping, flags)
        try:
            self._vm.set_user_memory_region(region.slot, region.base, mapping.size,
                                            mapping.address, flags)
        except BaseException:
            mapping.close()
            raise
        self._next_base += (-(-mapping.size // SHARED_REGION_ALIGN) + 1) * SHARED_REGION_ALIGN
        self.regions.append(region)
        return region

    def _free_slot(self) -> int:
        """The lowest slot number no region, retired slot or spare holds."""
        used = {region.slot for region in self.regions} | {slot.slot for slot in self.retired}
        if self._spare is not None:
            used.add(self._spare.slot)
        return next(n for n in range(GUEST_MEMORY_SLOT + 1, GUEST_MEMORY_SLOT + 1 + len(used) + 1)
                    if n not in used)

    def _reuse(self, retired: RetiredSlot, size: int, fd: int, offset: int,
               writable: bool) -> SharedRegion:
        """A new region in a retired slot: the file mapped over its reservation
        (the slot beyond ``size`` stays inaccessible; no page table maps it)."""
        mapping = HostMapping(size, fd=fd, offset=offset, writable=writable,
                              at=retired.reservation)
        self.retired.remove(retired)
        region = SharedRegion(retired.base, retired.slot, mapping, slot_size=retired.size)
        self.regions.append(region)
        return region

    def remove_shared(self, region: SharedRegion) -> None:
        """Unmap the region: its slot is retired (its host pages replaced by an
        inaccessible reservation, which drops every translation to them), or
        deleted when enough are retired already. The caller has removed every
        page-table entry that mapped it (and invalidated them). The kernel's own
        pages (``add_kernel_pages``) stay."""
        if region not in self.regions or region.mapping.borrowed:
            return
        self.regions.remove(region)
        if self._vm is None or self._vm.closed or region in self.deferred:
            if region in self.deferred:
                self.deferred.remove(region)     # no slot: nothing to retire
            _unmap_region(region)
            return
        if len(self.retired) < MAX_RETIRED_SLOTS:
            region.forget_file()
            self.retired.append(RetiredSlot(region.base, region.slot,
                                            region.mapping.retire(region.slot_size)))
            return
        self._vm.set_user_memory_region(region.slot, region.base, 0, 0)
        _unmap_region(region)

    def _reregister(self, region: SharedRegion) -> None:
        """Drop every translation to a region its host pages cannot be reprotected
        for (the kernel's own): deleting its slot makes KVM forget them all."""
        if self._vm is not None and not self._vm.closed and region not in self.deferred:
            self._vm.set_user_memory_region(region.slot, region.base, 0, 0)
            self._vm.set_user_memory_region(region.slot, region.base, region.slot_size,
                                            region.mapping.address, region.flags)

    def _backing(self, paddr: int, length: int) -> tuple[memoryview, int]:
        """The host view holding [paddr, paddr+length) and the offset into it."""
        if 0 <= paddr and paddr + length <= self.size:
            return self.view, paddr
        for region in self.regions:
            if region.base <= paddr and paddr + length <= region.end:
                return region.mapping.view, paddr - region.base
        raise ValueError(f"guest-physical range {paddr:#x}+{length:#x} is not memory")

    def map_all_deferred(self) -> bool:
        """Register every deferred region's slot; whether there was any."""
        with self._deferred_lock:
            deferred, self.deferred = self.deferred, []
            for region in deferred:
                self._register_region(self._vm, region)
        return bool(deferred)

    def backs(self, paddr: int, length: int) -> bool:
        """Whether [paddr, paddr+length) is guest memory or in one shared region."""
        try:
            self._backing(paddr, length)
        except ValueError:
            return False
        return True

    def readable(self, paddr: int, length: int) -> bool:
        """Whether the VMM can read [paddr, paddr+length) (within one backing)
        without a SIGBUS: always, except a shared file's pages past its end."""
        if 0 <= paddr and paddr + length <= self.size:
            return True
        for region in self.regions:
            if region.base <= paddr and paddr + length <= region.end:
                return region.readable(paddr - region.base, length)
        return False

    def slice(self, paddr: int, length: int) -> memoryview:
        """The host memory behind a guest-physical range (within one backing)."""
        view, offset = self._backing(paddr, length)
        return view[offset:offset + length]

    def populate(self, paddr: int, length: int) -> None:
        """Fault the host pages behind a range of the guest's own memory in at once,
        before the VMM writes them all (HostMapping.populate); shared regions are
        left alone."""
        if 0 <= paddr and paddr + length <= self.size:
            self.mapping.populate(paddr, length)

    def _discard(self, paddr: int, length: int) -> None:
        if self.quiesce is not None:
            self.quiesce()
        self.mapping.discard(paddr, length)

    def host_address(self, paddr: int, length: int) -> int:
        """Where the guest-physical range [paddr, paddr+length) (within one backing)
        is in the VMM's address space: for host calls that must act on guest memory
        in place (futexes), given only ranges a checked translation produced."""
        if 0 <= paddr and paddr + length <= self.size:
            return self.mapping.address + paddr
        for region in self.regions:
            if region.base <= paddr and paddr + length <= region.end:
                return region.mapping.address + paddr - region.base
        raise ValueError(f"guest-physical range {paddr:#x}+{length:#x} is not memory")

    def cmpxchg32(self, paddr: int, expected: int, new: int) -> int:
        """Atomically replace the 4-byte word at ``paddr`` by ``new`` if it holds
        ``expected``; its old value. Safe against guest code writing it meanwhile."""
        view, offset = self._backing(paddr, 4)
        return _atomics.cmpxchg32(view, offset, expected, new)

    def store32(self, paddr: int, value: int) -> None:
        """Atomically store the 4-byte word at ``paddr``."""
        view, offset = self._backing(paddr, 4)
        _atomics.store32(view, offset, value)

    def invalidate(self, ranges: list[tuple[int, int]]) -> None:
        """Make KVM forget every translation to these guest-physical ranges.

        An mprotect pair on their host pages triggers KVM's MMU notifier, which drops
        the shadow (or EPT/NPT) entries and flushes the guest TLBs, so the next guest
        access walks the guest's page tables again. This is what software KVM needs
        (it ignores host writes to guest page tables); on hardware KVM it does the
        TLB flush that a restriction needs as well.
        """
        for start, length in _bridge_gaps(ranges, INVALIDATION_GAP):
            if start + length <= self.size:
                self.mapping.reprotect(start, length)
                continue
            for region in self.regions:
                low, high = max(start, region.base), min(start + length, region.end)
                if low < high and region.mapping.borrowed:
                    self._reregister(region)
                elif low < high:
                    region.mapping.reprotect(low - region.base, high - low)
        if self.quiesce is not None:
            self.quiesce()

    def write_protect(self, ranges: list[tuple[int, int]]) -> None:
        """Make the guest's next write to these guest-physical ranges reach the MMU
        again (their entries lost the D bit; reads may go on through what is cached).

        KVM_CLEAR_DIRTY_LOG write-protects exactly the pages KVM saw written since it
        last protected them (a page not written since is still protected), in one
        ioctl for any number of pages; software KVM's next write then walks the guest
        tables and sets D. Without the dirty log (not on yet: ``start_dirty_log``; or
        for shared regions, which have none), the full invalidation."""
        if not self.dirty_log or self._vm is None:
            self.invalidate(ranges)
            return
        inside = [(start, length) for start, length in ranges if start + length <= self.size]
        outside = [r for r in ranges if r[0] + r[1] > self.size]
        if outside:
            self.invalidate(outside)
        if inside:
            first, count, bitmap = _page_bitmap(inside, self.size // PAGE_SIZE)
            self._vm.clear_dirty_log(GUEST_MEMORY_SLOT, first, count, bitmap)
            if self.quiesce is not None:
                self.quiesce()

    def _enable_dirty_log(self, vm: Vm) -> bool:
        """Choose KVM's manually protected dirty log, starting with every page
        counted dirty, for slots that log (``start_dirty_log``): True if KVM can."""
        if self.size > DIRTY_LOG_LIMIT:
            return False
        if vm.kvm.check_extension(Cap.MANUAL_DIRTY_LOG_PROTECT2) & _DIRTY_LOG_MODE != _DIRTY_LOG_MODE:
            return False
        try:
            vm.enable_cap(Cap.MANUAL_DIRTY_LOG_PROTECT2, int(_DIRTY_LOG_MODE))
        except KvmError:
            return False
        return True

    def read(self, paddr: int, length: int) -> bytes:
        return bytes(self.slice(paddr, length))

    def write(self, paddr: int, data: bytes) -> None:
        self.slice(paddr, len(data))[:] = data

    @property
    def committed_bytes(self) -> int:
        """Bytes of guest memory handed out as frames (an upper bound of host use)."""
        return self.frames.allocated_bytes

    def close(self) -> None:
        for region in list(self.regions):
            _unmap_region(region)
        self.regions.clear()
        if self._spare is not None and self._spare.done.is_set():
            self.settle_spare()
        # A spare still registering is left to its thread (its reservation too: KVM
        # may be recording its addresses): the VM goes with the thread's descriptor.
        self._spare = None
        self._drop_retired()
        self.mapping.close()
