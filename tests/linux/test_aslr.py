"""kvmdune.linux.aslr: each base in Linux's range with Linux's alignment, for the
extreme draws and for real ones; the switches (personality, randomize_va_space);
Linux's setarch -R layout without randomization. No KVM: pure functions."""

from __future__ import annotations

import random

import pytest

from kvmdune.linux import aslr
from kvmdune.linux.abi import PersonalityFlags
from kvmdune.linux.aslr import NO_RANDOMIZATION, Randomization
from kvmdune.linux.initial_stack import MAX_ALIGN_JITTER, RLIM_INFINITY
from kvmdune.linux.mm import STACK_SIZE, page_up
from kvmdune.machine import layout
from kvmdune.memory import PAGE_SIZE

GIB = 1 << 30
LOWEST = Randomization(randomize=True, randomize_brk=True, below=lambda n: 0)
HIGHEST = Randomization(randomize=True, randomize_brk=True, below=lambda n: n - 1)
FULL = Randomization(randomize=True, randomize_brk=True)
DRAWS = 200


def test_without_randomization_the_layout_is_setarch_minus_r() -> None:
    # The addresses a native `setarch -R` run shows on x86-64 with 4-level paging.
    assert aslr.mmap_base(NO_RANDOMIZATION) == 0x7FFF_F7FF_F000
    assert aslr.pie_base(NO_RANDOMIZATION, PAGE_SIZE) == 0x5555_5555_4000
    assert aslr.stack_top(NO_RANDOMIZATION) == layout.STACK_TOP
    assert aslr.stack_jitter(NO_RANDOMIZATION) == 0
    # brk: right after the image; a static-pie program's at page_up(ELF_ET_DYN_BASE).
    assert aslr.brk_start(NO_RANDOMIZATION, 0x4A_CAA0, static_pie=False) == 0x4A_D000
    assert aslr.brk_start(NO_RANDOMIZATION, 0x7FFF_F7FF_EA40, static_pie=True) == 0x5555_5555_5000


def test_one_task_size() -> None:
    assert layout.TASK_SIZE == (1 << 47) - PAGE_SIZE
    assert layout.USER_PROGRAM_END == layout.CALL_STUB == layout.TASK_SIZE - layout.CALL_AREA_SIZE
    assert layout.STACK_TOP <= layout.CALL_STUB
    from kvmdune.linux import elf
    assert elf.TASK_SIZE is layout.TASK_SIZE


def test_pie_base_range_and_alignment() -> None:
    low, high = aslr.pie_base(LOWEST, PAGE_SIZE), aslr.pie_base(HIGHEST, PAGE_SIZE)
    assert low == 0x5555_5555_4000
    assert high == (layout.ELF_ET_DYN_BASE + ((1 << 28) - 1) * PAGE_SIZE) & ~(PAGE_SIZE - 1)
    assert aslr.pie_base(HIGHEST, 2 << 20) % (2 << 20) == 0


def test_mmap_base_range() -> None:
    pad = aslr.STACK_RND_MASK * PAGE_SIZE + aslr.STACK_GUARD_GAP
    highest = aslr.mmap_base(LOWEST)
    assert highest == layout.TASK_SIZE - (8 << 20) - pad
    assert aslr.mmap_base(HIGHEST) == highest - ((1 << 28) - 1) * PAGE_SIZE
    # An unlimited stack rlimit: the gap stops at 5/6 of the address space.
    five_sixths = layout.TASK_SIZE // 6 * 5
    assert aslr.mmap_base(LOWEST, RLIM_INFINITY) == page_up(layout.TASK_SIZE - five_sixths)
    # A small one: at least 128 MiB.
    assert aslr.mmap_base(NO_RANDOMIZATION, 64 << 10) == layout.TASK_SIZE - aslr.MMAP_GAP_MIN


def test_mmap_area_stays_below_the_lowest_stack() -> None:
    lowest_stack = aslr.stack_top(HIGHEST) - STACK_SIZE
    assert aslr.mmap_base(LOWEST) < lowest_stack
    assert aslr.mmap_base(NO_RANDOMIZATION) < aslr.stack_top(NO_RANDOMIZATION) - STACK_SIZE


def test_stack_top_range() -> None:
    assert aslr.stack_top(LOWEST) == layout.STACK_TOP
    # randomize_stack_top's pages, then arch_align_stack's 8 KiB rounded to a page.
    assert aslr.stack_top(HIGHEST) == layout.STACK_TOP - (aslr.STACK_RND_MASK + 2) * PAGE_SIZE
    assert aslr.stack_jitter(HIGHEST) == MAX_ALIGN_JITTER - 1


def test_brk_range() -> None:
    image_end = 0x4A_CAA0
    after_gap = 0x4A_D000 + PAGE_SIZE          # a page between .bss and the heap
    assert aslr.brk_start(LOWEST, image_end, static_pie=False) == after_gap
    assert aslr.brk_start(HIGHEST, image_end, static_pie=False) == after_gap + GIB - PAGE_SIZE
    assert aslr.brk_start(LOWEST, 0x7F00_0000_0000, static_pie=True) == 0x5555_5555_5000
    # randomize_va_space 1: everything but the brk.
    no_brk = Randomization(randomize=True, randomize_brk=False, below=lambda n: n - 1)
    assert aslr.brk_start(no_brk, image_end, static_pie=False) == 0x4A_D000
    assert aslr.pie_base(no_brk, PAGE_SIZE) != aslr.pie_base(NO_RANDOMIZATION, PAGE_SIZE)


@pytest.mark.parametrize(("draw", "bits", "alignment"), [
    (lambda: aslr.pie_base(FULL, PAGE_SIZE) - layout.ELF_ET_DYN_BASE // PAGE_SIZE * PAGE_SIZE, 28, PAGE_SIZE),
    (lambda: aslr.mmap_base(LOWEST) - aslr.mmap_base(FULL), 28, PAGE_SIZE),
    (lambda: layout.STACK_TOP - aslr.stack_top(FULL), 22, PAGE_SIZE),
    (lambda: aslr.brk_start(FULL, 0x40_0000, static_pie=False) - 0x40_1000, 18, PAGE_SIZE),
    (lambda: aslr.stack_jitter(FULL), 13, 1),
])
def test_real_draws_use_every_bit_and_keep_the_alignment(draw, bits, alignment) -> None:
    offsets = [draw() for _ in range(DRAWS)]
    # (arch_align_stack may move the stack top up to two pages further.)
    assert all(0 <= offset <= ((1 << bits) + 1) * alignment for offset in offsets)
    assert all(offset % alignment == 0 for offset in offsets)
    seen_set = seen_clear = 0
    for offset in offsets:
        seen_set |= offset // alignment
        seen_clear |= ~(offset // alignment)
    # Each of the bits is 1 in some draw and 0 in another (odds against: 2^-199 each).
    mask = (1 << bits) - 1
    assert seen_set & mask == mask and seen_clear & mask == mask
    assert len(set(offsets)) > DRAWS // 2


def test_the_source_is_the_cryptographic_one() -> None:
    # SystemRandom reads os.urandom (never a seeded generator's state).
    for rnd in (Randomization.for_exec(0, va_space=2), FULL):
        assert rnd.below is aslr.urandom_below
    assert isinstance(aslr.urandom_below.__self__, random.SystemRandom)


@pytest.mark.parametrize(("personality", "va_space", "randomize", "randomize_brk"), [
    (0, 2, True, True),
    (0, 1, True, False),
    (0, 0, False, False),
    (PersonalityFlags.ADDR_NO_RANDOMIZE, 2, False, False),
    (PersonalityFlags.ADDR_NO_RANDOMIZE, 1, False, False),
])
def test_switches(personality: int, va_space: int, randomize: bool, randomize_brk: bool) -> None:
    rnd = Randomization.for_exec(personality, va_space=va_space, mmap_rnd_bits=28)
    assert (rnd.randomize, rnd.randomize_brk) == (randomize, randomize_brk)


@pytest.mark.parametrize(("sysctl", "randomize", "randomize_brk"), [
    ("0\n", False, False), ("1\n", True, False), ("2\n", True, True), ("garbage", True, True)])
def test_randomize_va_space_is_read_at_exec(tmp_path, monkeypatch, sysctl: str, randomize: bool,
                                            randomize_brk: bool) -> None:
    path = tmp_path / "randomize_va_space"
    path.write_text(sysctl)
    monkeypatch.setattr(aslr, "RANDOMIZE_VA_SPACE_PATH", str(path))
    rnd = Randomization.for_exec(0)
    assert (rnd.randomize, rnd.randomize_brk) == (randomize, randomize_brk)


def test_mmap_rnd_bits_come_from_the_host_and_are_bounded() -> None:
    with open(aslr.MMAP_RND_BITS_PATH) as file:
        host = int(file.read())
    assert Randomization.for_exec(0).mmap_rnd_bits == min(host, aslr.MMAP_RND_BITS_MAX)
    assert Randomization.for_exec(0, mmap_rnd_bits=99).mmap_rnd_bits == aslr.MMAP_RND_BITS_MAX
    rnd = Randomization.for_exec(0, va_space=2, mmap_rnd_bits=30, below=lambda n: n - 1)
    assert aslr.mmap_rnd(rnd) == ((1 << 30) - 1) * PAGE_SIZE


def test_host_personality_is_the_honoured_part_of_the_vmms() -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality.argtypes = [ctypes.c_ulong]
    expected = libc.personality(0xFFFF_FFFF) & PersonalityFlags.ADDR_NO_RANDOMIZE
    assert aslr.host_personality() == expected
