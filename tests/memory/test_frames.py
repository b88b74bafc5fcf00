"""The frame allocator."""

import pytest

from kvmdune.memory import FrameAllocator, OutOfGuestMemory
from kvmdune.memory.frames import HUGE_PAGE_SIZE, PAGE_SIZE


def test_frames_are_distinct_reused_and_discarded():
    discarded = []
    frames = FrameAllocator(PAGE_SIZE, 8 << 20, lambda p, n: discarded.append((p, n)))
    got = [frames.alloc() for _ in range(10)]
    assert len(set(got)) == 10 and all(p % PAGE_SIZE == 0 for p in got)
    frames.free(got[3])
    assert discarded == [(got[3], PAGE_SIZE)]
    assert frames.alloc() == got[3]


def test_huge_frames_are_aligned_and_split_when_needed():
    frames = FrameAllocator(PAGE_SIZE, 8 << 20)
    huge = frames.alloc_huge()
    assert huge % HUGE_PAGE_SIZE == 0
    assert frames.allocated_bytes == HUGE_PAGE_SIZE
    # The frames skipped to align it are handed out as small ones, never inside it.
    skipped = {frames.alloc() for _ in range(huge // PAGE_SIZE - 1)}
    assert skipped == set(range(PAGE_SIZE, huge, PAGE_SIZE))
    frames.free(huge + PAGE_SIZE, PAGE_SIZE)       # part of a huge frame back as small
    assert frames.alloc() == huge + PAGE_SIZE      # reused first, not a fresh frame


def test_a_freed_huge_frame_is_split_when_small_frames_run_out():
    frames = FrameAllocator(HUGE_PAGE_SIZE, 3 * HUGE_PAGE_SIZE)
    first, second = frames.alloc_huge(), frames.alloc_huge()
    assert (first, second) == (HUGE_PAGE_SIZE, 2 * HUGE_PAGE_SIZE)
    with pytest.raises(OutOfGuestMemory):
        frames.alloc()
    frames.free(first, HUGE_PAGE_SIZE)
    assert frames.free_bytes == HUGE_PAGE_SIZE
    small = [frames.alloc() for _ in range(HUGE_PAGE_SIZE // PAGE_SIZE)]
    assert sorted(small) == list(range(first, first + HUGE_PAGE_SIZE, PAGE_SIZE))
    with pytest.raises(OutOfGuestMemory):
        frames.alloc()
    assert frames.allocated_bytes == 2 * HUGE_PAGE_SIZE


def test_a_frame_once_a_huge_page_is_never_a_huge_page_again():
    frames = FrameAllocator(HUGE_PAGE_SIZE, 4 * HUGE_PAGE_SIZE)
    first = frames.alloc_huge()
    frames.free(first, HUGE_PAGE_SIZE)
    second = frames.alloc_huge()
    assert second != first                         # a fresh 2 MiB frame instead
    frames.free(second, HUGE_PAGE_SIZE)
    assert frames.alloc_huge() not in (first, second)
    with pytest.raises(OutOfGuestMemory):
        frames.alloc_huge()
    # Their 4 KiB frames are all handed out again, one by one.
    small = {frames.alloc() for _ in range(2 * HUGE_PAGE_SIZE // PAGE_SIZE)}
    assert small == set(range(first, first + HUGE_PAGE_SIZE, PAGE_SIZE)) | set(
        range(second, second + HUGE_PAGE_SIZE, PAGE_SIZE))


def test_exhaustion_and_bad_free():
    frames = FrameAllocator(PAGE_SIZE, 4 * PAGE_SIZE)
    for _ in range(3):
        frames.alloc()
    with pytest.raises(OutOfGuestMemory):
        frames.alloc()
    with pytest.raises(ValueError):
        frames.free(123)


def test_alloc_many_hands_out_distinct_frames_from_every_source_or_none():
    """Freed frames, the bump pointer and free 2 MiB blocks, each frame once, counted;
    a request larger than what is left takes nothing."""
    size = 4 << 20
    frames = FrameAllocator(PAGE_SIZE, size)
    huge = frames.alloc_huge()
    first = frames.alloc_many(5)
    frames.free(first[1])
    frames.free(first[3])
    frames.free(huge, HUGE_PAGE_SIZE)
    everything = frames.alloc_many(frames.free_bytes // PAGE_SIZE)
    handed = [first[0], first[2], first[4]] + everything
    assert len(set(handed)) == len(handed) == (size - PAGE_SIZE) // PAGE_SIZE
    assert {first[1], first[3], huge, huge + PAGE_SIZE} <= set(everything)
    assert frames.allocated_bytes == size - PAGE_SIZE and frames.free_bytes == 0
    frames.free(everything[0])
    with pytest.raises(OutOfGuestMemory):
        frames.alloc_many(2)
    assert frames.alloc_many(1) == [everything[0]]


def test_cover_is_asked_before_any_frame_past_the_covered_end_is_handed_out():
    """GuestMemory registers [0, covered_end) with KVM and the rest on demand: every
    way of taking fresh frames asks first, and a refusal hands out nothing."""
    frames = FrameAllocator(PAGE_SIZE, 16 << 20)
    frames.covered_end = 4 * PAGE_SIZE
    asked = []

    def refuse(end):
        asked.append(end)
        raise OutOfGuestMemory("no slot")

    frames.cover = refuse
    got = [frames.alloc() for _ in range(3)]           # below the covered end: no ask
    assert asked == [] and max(got) + PAGE_SIZE <= frames.covered_end
    with pytest.raises(OutOfGuestMemory):
        frames.alloc_many(2)
    frames.free(got[0])
    with pytest.raises(OutOfGuestMemory):
        frames.alloc_many(2)                            # the freed frame stays free
    assert frames.alloc() == got[0]
    with pytest.raises(OutOfGuestMemory):
        frames.alloc_huge()
    assert asked == [6 * PAGE_SIZE, 5 * PAGE_SIZE, 2 * HUGE_PAGE_SIZE]

    def grow(end):
        asked.append(end)
        frames.covered_end = 16 << 20

    frames.cover = grow
    assert frames.alloc_huge() == HUGE_PAGE_SIZE and frames.alloc_many(3)
    assert asked[3:] == [2 * HUGE_PAGE_SIZE]            # once covered, never asked again
