"""Guest-physical frame allocation: 4 KiB and 2 MiB frames from one host mapping.

Frames are handed out zeroed. Freed frames go back to the host at once
(MADV_DONTNEED), which both returns the memory and zeroes it for the next user;
on KVM it also drops every shadow entry that still maps the frame.

A 2 MiB frame once handed out as a 2 MiB page is never handed out as one again
(its 4 KiB frames are reused one by one): software KVM keeps its shadow of a 2 MiB
page, found by the frame, linked under every region that ever mapped it, until KVM
zaps it, which no host-side change makes it do; mapped again as a 2 MiB page
elsewhere, that shadow would give the old region the new region's pages.
"""

from __future__ import annotations

from typing import Callable

PAGE_SIZE = 4096
PAGE_SHIFT = 12
HUGE_PAGE_SIZE = 2 * 1024 * 1024
FRAMES_PER_HUGE_PAGE = HUGE_PAGE_SIZE // PAGE_SIZE


class OutOfGuestMemory(MemoryError):
    """No free guest-physical frame is left."""


class FrameAllocator:
    """Hands out guest-physical frames in ``[start, end)``.

    ``discard(paddr, length)`` is called on free to give the memory back to the host
    (and zero it); ``carve_huge(paddr)`` when a 2 MiB frame is first cut from the
    bump pointer (so the host can back it with one huge page). Small frames come from a free list, then from a bump pointer;
    huge frames from their own free list, then from the bump pointer aligned up
    (the frames skipped by the alignment go to the small list).
    """

    def __init__(self, start: int, end: int,
                 discard: Callable[[int, int], None] | None = None,
                 carve_huge: Callable[[int], None] | None = None) -> None:
        if start % PAGE_SIZE or end % PAGE_SIZE or start >= end:
            raise ValueError("frame range must be page-aligned and non-empty")
        self.start, self.end = start, end
        self._next = start
        self._free_small: list[int] = []
        self._free_huge: list[int] = []
        #: 2 MiB frames handed out as 2 MiB pages: never again (module docstring).
        self._huge_once: set[int] = set()
        self._discard = discard or (lambda paddr, length: None)
        self._carve_huge = carve_huge or (lambda paddr: None)
        self.allocated_bytes = 0
        #: Frames a host call may still touch (a futex wait on another thread), with
        #: how many such calls; freeing them waits until the last one is unpinned.
        self._pinned: dict[int, int] = {}
        self._free_when_unpinned: set[int] = set()
        #: Frames below this may be handed out; ``cover(end)`` is called to raise it
        #: (to at least ``end``) before the bump pointer passes it (GuestMemory
        #: registers guest memory with KVM as far as frames are in use).
        self.covered_end = end
        self.cover: Callable[[int], None] | None = None

    @property
    def free_bytes(self) -> int:
        return (self.end - self._next + PAGE_SIZE * len(self._free_small)
                + HUGE_PAGE_SIZE * len(self._free_huge))

    def alloc(self) -> int:
        """One zeroed 4 KiB frame."""
        if self._free_small:
            paddr = self._free_small.pop()
        elif self._next + PAGE_SIZE <= self.end:
            self._cover(self._next + PAGE_SIZE)
            paddr, self._next = self._next, self._next + PAGE_SIZE
        elif self._free_huge:
            huge = self._free_huge.pop()
            self._free_small.extend(range(huge + PAGE_SIZE, huge + HUGE_PAGE_SIZE, PAGE_SIZE))
            paddr = huge
        else:
            raise OutOfGuestMemory(f"guest memory exhausted ({self.end - self.start:#x} bytes)")
        self.allocated_bytes += PAGE_SIZE
        return paddr

    def alloc_many(self, count: int) -> list[int]:
        """``count`` zeroed 4 KiB frames (a page-table chunk's worth at once): freed
        ones first, then a run from the bump pointer. Raises OutOfGuestMemory, taking
        nothing, when fewer are left."""
        if count * PAGE_SIZE > self.free_bytes:
            raise OutOfGuestMemory(f"guest memory exhausted ({self.end - self.start:#x} bytes)")
        small = self._free_small
        reused = min(count, len(small))
        fresh = min(count - reused, (self.end - self._next) // PAGE_SIZE)
        self._cover(self._next + fresh * PAGE_SIZE)
        frames = small[len(small) - reused:]
        del small[len(small) - reused:]
        frames.extend(range(self._next, self._next + fresh * PAGE_SIZE, PAGE_SIZE))
        self._next += fresh * PAGE_SIZE
        self.allocated_bytes += (reused + fresh) * PAGE_SIZE
        while len(frames) < count:       # the rest from free 2 MiB blocks
            frames.append(self.alloc())
        return frames

    def alloc_huge(self) -> int:
        """One zeroed, 2 MiB-aligned 2 MiB frame that was never one before."""
        if self._free_huge:
            paddr = self._free_huge.pop()
        else:
            aligned = -(-self._next // HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE
            if aligned + HUGE_PAGE_SIZE > self.end:
                raise OutOfGuestMemory("no free 2 MiB frame left in guest memory")
            self._cover(aligned + HUGE_PAGE_SIZE)
            self._free_small.extend(range(self._next, aligned, PAGE_SIZE))
            paddr, self._next = aligned, aligned + HUGE_PAGE_SIZE
            self._carve_huge(paddr)
        self.allocated_bytes += HUGE_PAGE_SIZE
        self._huge_once.add(paddr)
        return paddr

    @property
    def bump_end(self) -> int:
        """The end of the frames handed out so far (every frame ever in use is below)."""
        return self._next

    def _cover(self, end: int) -> None:
        if end > self.covered_end and self.cover is not None:
            self.cover(end)

    def pin(self, paddr: int) -> None:
        """Keep the 4 KiB frame at ``paddr`` from being reused until ``unpin``: a host
        call made without the VMM's lock (a futex wait) may still touch it, and a
        frame reused meanwhile (as a page table, say) must not be written by it."""
        frame = paddr & ~(PAGE_SIZE - 1)
        self._pinned[frame] = self._pinned.get(frame, 0) + 1

    def unpin(self, paddr: int) -> None:
        """The host call is over; a free that waited for it happens now."""
        frame = paddr & ~(PAGE_SIZE - 1)
        left = self._pinned.get(frame, 0) - 1
        if left > 0:
            self._pinned[frame] = left
            return
        self._pinned.pop(frame, None)
        if frame in self._free_when_unpinned:
            self._free_when_unpinned.discard(frame)
            self.free(frame)

    def free(self, paddr: int, length: int = PAGE_SIZE) -> None:
        """Return frames ``[paddr, paddr+length)`` and their memory to the host
        (pinned ones once unpinned)."""
        if paddr % PAGE_SIZE or length % PAGE_SIZE or not (
                self.start <= paddr and paddr + length <= self._next):
            raise ValueError(f"freeing frames {paddr:#x}+{length:#x} never allocated")
        if self._pinned:
            pinned = [f for f in range(paddr, paddr + length, PAGE_SIZE) if f in self._pinned]
            if pinned:
                self._free_when_unpinned.update(pinned)
                for start, size in _runs_without(paddr, length, set(pinned)):
                    self.free(start, size)
                return
        self._discard(paddr, length)
        self.allocated_bytes -= length
        end = paddr + length
        while paddr < end:
            # Whole aligned 2 MiB blocks stay huge (unless they once were a 2 MiB
            # page); the rest becomes 4 KiB frames, a block's worth at a time.
            block_end = min(end, (paddr // HUGE_PAGE_SIZE + 1) * HUGE_PAGE_SIZE)
            if (paddr % HUGE_PAGE_SIZE == 0 and block_end - paddr == HUGE_PAGE_SIZE
                    and paddr not in self._huge_once):
                self._free_huge.append(paddr)
            else:
                self._free_small.extend(range(paddr, block_end, PAGE_SIZE))
            paddr = block_end


def _runs_without(paddr: int, length: int, holes: set[int]) -> list[tuple[int, int]]:
    """The runs of 4 KiB frames of [paddr, paddr+length) outside ``holes``."""
    runs: list[tuple[int, int]] = []
    for frame in range(paddr, paddr + length, PAGE_SIZE):
        if frame in holes:
            continue
        if runs and runs[-1][0] + runs[-1][1] == frame:
            runs[-1] = (runs[-1][0], runs[-1][1] + PAGE_SIZE)
        else:
            runs.append((frame, PAGE_SIZE))
    return runs
