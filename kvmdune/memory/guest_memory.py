"""Guest-physical memory: one lazily committed host mapping, its frames, its memory slot.

The whole guest-physical space is a single anonymous private mapping registered as
KVM memory slot 0. Host memory is committed only for pages actually touched, so the
reservation can be large; registering a slot costs more the larger it is
(PLATFORM.md: 4 GiB 3 ms, 64 GiB 308 ms), so it is sized to the need.
"""

from __future__ import annotations

from ..kvm import Vm
from .frames import PAGE_SIZE, FrameAllocator
from .host_mapping_unsafe import HostMapping

DEFAULT_GUEST_MEMORY = 4 << 30
#: Guest-physical page 0 is never handed out, so that 0 can mean "no frame".
FIRST_FRAME = PAGE_SIZE
GUEST_MEMORY_SLOT = 0


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


class GuestMemory:
    """Guest-physical memory ``[0, size)`` backed by one host mapping."""

    def __init__(self, size: int = DEFAULT_GUEST_MEMORY) -> None:
        if size % (2 << 20) or size <= 0:
            raise ValueError("guest memory size must be a positive multiple of 2 MiB")
        self.mapping = HostMapping(size)
        self.size = size
        self.view = self.mapping.view      # bytes, bounds-checked
        self.words = self.mapping.words    # 64-bit words, bounds-checked
        self.frames = FrameAllocator(FIRST_FRAME, size, self.mapping.discard)

    def register(self, vm: Vm, slot: int = GUEST_MEMORY_SLOT) -> None:
        """Make this memory the VM's guest-physical memory (KVM_SET_USER_MEMORY_REGION)."""
        vm.set_user_memory_region(slot, 0, self.size, self.mapping.address)

    def invalidate(self, ranges: list[tuple[int, int]]) -> None:
        """Make KVM forget every translation to these guest-physical ranges.

        An mprotect pair on their host pages triggers KVM's MMU notifier, which drops
        the shadow (or EPT/NPT) entries and flushes the guest TLBs, so the next guest
        access walks the guest's page tables again. This is what software KVM needs
        (it ignores host writes to guest page tables); on hardware KVM it does the
        TLB flush that a restriction needs as well.
        """
        for start, length in _bridge_gaps(ranges, INVALIDATION_GAP):
            self.mapping.reprotect(start, length)

    def read(self, paddr: int, length: int) -> bytes:
        return bytes(self.view[paddr:paddr + length]) if self._inside(paddr, length) else b""

    def write(self, paddr: int, data: bytes) -> None:
        if not self._inside(paddr, len(data)):
            raise ValueError(f"guest-physical range {paddr:#x}+{len(data):#x} out of bounds")
        self.view[paddr:paddr + len(data)] = data

    def _inside(self, paddr: int, length: int) -> bool:
        return 0 <= paddr and 0 <= length and paddr + length <= self.size

    @property
    def committed_bytes(self) -> int:
        """Bytes of guest memory handed out as frames (an upper bound of host use)."""
        return self.frames.allocated_bytes

    def close(self) -> None:
        self.mapping.close()
