"""Address-space layout randomization as Linux does it at exec: where the PIE program,
the mmap area, the stack and the brk heap start (arch/x86/mm/mmap.c, fs/binfmt_elf.c,
mm/util.c, arch/x86/kernel/process.c).

Every choice is a pure function of a ``Randomization``, which carries the switches
(the guest's ADDR_NO_RANDOMIZE personality, the host's kernel.randomize_va_space) and
the random source, so the ranges can be tested without KVM. The loader applies them;
the addresses they start from live in ``machine/layout.py``. Production draws come
from the kernel's CSPRNG (os.urandom), never from a seeded generator.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from enum import IntEnum
# SystemRandom draws from os.urandom (getrandom(2)); secrets.randbelow calls it too,
# but importing secrets loads hashlib and OpenSSL (3 ms of every start-up).
from random import SystemRandom
from typing import Callable

from ..machine import layout
from ..memory import PAGE_SIZE
from .abi import PersonalityFlags
from .host_unsafe import host_syscall
from .initial_stack import DEFAULT_STACK_RLIMIT, MAX_ALIGN_JITTER, RLIM_INFINITY, STACK_ALIGN
from .syscall_table import BY_NAME

#: A uniform integer in [0, n).
RandomBelow = Callable[[int], int]
#: The production source: uniform in [0, n) from os.urandom.
urandom_below: RandomBelow = SystemRandom().randrange

#: STACK_RND_MASK on x86-64: the stack top moves down by up to 2^22 - 1 pages (16 GiB).
STACK_RND_MASK = 0x3F_FFFF
#: arch_randomize_brk for 64-bit tasks in current kernels (older ones, and 32-bit
#: tasks, use 32 MiB): the brk heap starts anywhere in the 1 GiB above the image.
BRK_RANDOM_RANGE = 1 << 30
#: mmap_base keeps at least this between TASK_SIZE and the mmap area ...
MMAP_GAP_MIN = 128 << 20
#: ... and the stack rlimit, its randomization and stack_guard_gap (256 pages) when
#: those are larger, but never more than 5/6 of the address space.
STACK_GUARD_GAP = 256 * PAGE_SIZE
#: vm.mmap_rnd_bits: CONFIG_ARCH_MMAP_RND_BITS's default and maximum on x86-64.
DEFAULT_MMAP_RND_BITS = 28
MMAP_RND_BITS_MAX = 32
#: personality(2)'s argument that only asks.
PERSONALITY_QUERY = 0xFFFF_FFFF

RANDOMIZE_VA_SPACE_PATH = "/proc/sys/kernel/randomize_va_space"
MMAP_RND_BITS_PATH = "/proc/sys/vm/mmap_rnd_bits"


class VaSpaceRandomization(IntEnum):
    """kernel.randomize_va_space (Documentation/admin-guide/sysctl/kernel.rst)."""

    OFF = 0
    NO_BRK = 1       # stack, mmap area and PIE base random; brk right after the image
    FULL = 2


@dataclass(frozen=True)
class Randomization:
    """What exec randomizes, and the source it draws from."""

    randomize: bool                    # Linux's PF_RANDOMIZE
    randomize_brk: bool                # ... and randomize_va_space > 1
    mmap_rnd_bits: int = DEFAULT_MMAP_RND_BITS
    below: RandomBelow = urandom_below

    @classmethod
    def for_exec(cls, personality: int, va_space: int | None = None,
                 mmap_rnd_bits: int | None = None,
                 below: RandomBelow = urandom_below) -> "Randomization":
        """Linux's decision at exec: randomize unless the personality has
        ADDR_NO_RANDOMIZE or randomize_va_space is 0; the brk only at 2. The sysctls
        are the host's unless given."""
        if va_space is None:
            va_space = _read_sysctl(RANDOMIZE_VA_SPACE_PATH, VaSpaceRandomization.FULL)
        if mmap_rnd_bits is None:
            mmap_rnd_bits = _read_sysctl(MMAP_RND_BITS_PATH, DEFAULT_MMAP_RND_BITS)
        randomize = not personality & PersonalityFlags.ADDR_NO_RANDOMIZE and va_space > 0
        return cls(randomize=randomize,
                   randomize_brk=randomize and va_space >= VaSpaceRandomization.FULL,
                   mmap_rnd_bits=min(max(mmap_rnd_bits, 0), MMAP_RND_BITS_MAX), below=below)


#: The layout of ``setarch -R``: every base where Linux puts it without randomization.
NO_RANDOMIZATION = Randomization(randomize=False, randomize_brk=False)


def _read_sysctl(path: str, default: int) -> int:
    try:
        with open(path, "rb") as file:
            return int(file.read().strip() or default)
    except (OSError, ValueError):
        return int(default)


def host_personality() -> int:
    """The VMM process's own personality (``setarch -R kvmdune ...`` sets
    ADDR_NO_RANDOMIZE there): the guest starts with the part kvmdune honours."""
    value = host_syscall(BY_NAME["personality"].number, PERSONALITY_QUERY)
    return value & PersonalityFlags.ADDR_NO_RANDOMIZE if value >= 0 else 0


def stack_rlimit() -> int:
    """RLIMIT_STACK's soft limit (the guest's limits are the VMM process's)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    return RLIM_INFINITY if soft == resource.RLIM_INFINITY else soft


def _page_up(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _random_pages(rnd: Randomization, pages: int) -> int:
    """A random page-aligned offset below ``pages`` pages (0 without randomization)."""
    return rnd.below(pages) * PAGE_SIZE if rnd.randomize else 0


def mmap_rnd(rnd: Randomization) -> int:
    """arch_mmap_rnd: mmap_rnd_bits bits of pages."""
    return _random_pages(rnd, 1 << rnd.mmap_rnd_bits)


def mmap_base(rnd: Randomization, rlimit: int = DEFAULT_STACK_RLIMIT) -> int:
    """The top of the mmap area (mmap_base): below the stack's gap, moved down by
    mmap_rnd. Without randomization: TASK_SIZE - 128 MiB = 0x7fff_f7ff_f000."""
    gap = rlimit
    pad = (STACK_RND_MASK * PAGE_SIZE if rnd.randomize else 0) + STACK_GUARD_GAP
    if gap + pad <= RLIM_INFINITY:       # Linux skips the pad when the sum overflows
        gap += pad
    gap = min(max(gap, MMAP_GAP_MIN), layout.TASK_SIZE // 6 * 5)
    return _page_up(layout.TASK_SIZE - gap - mmap_rnd(rnd))


def pie_base(rnd: Randomization, alignment: int) -> int:
    """Where a PIE program (ET_DYN with an interpreter) starts before its first
    vaddr is subtracted: ELF_ET_DYN_BASE plus mmap_rnd, aligned down to the largest
    PT_LOAD alignment (binfmt_elf's maximum_alignment)."""
    base = layout.ELF_ET_DYN_BASE + mmap_rnd(rnd)
    return base & ~(alignment - 1) if alignment > 1 else base


def stack_top(rnd: Randomization) -> int:
    """Where the stack ends: randomize_stack_top(STACK_TOP), up to STACK_RND_MASK
    pages lower, then setup_arg_pages' arch_align_stack and PAGE_ALIGN, which move it
    down one more page about half the time (two, 15 times in 8192). Never above
    layout.STACK_TOP, so the call area stays clear."""
    top = _page_up(layout.STACK_TOP) - _random_pages(rnd, STACK_RND_MASK + 1)
    return _page_up((top - stack_jitter(rnd)) & ~(STACK_ALIGN - 1))


def stack_jitter(rnd: Randomization) -> int:
    """arch_align_stack's shift of the initial stack pointer, in bytes (below 8 KiB);
    the 16-byte alignment after it is the initial stack builder's."""
    return rnd.below(MAX_ALIGN_JITTER) if rnd.randomize else 0


def brk_start(rnd: Randomization, image_end: int, static_pie: bool) -> int:
    """The start of the brk heap (mm->start_brk): after the image, or at
    ELF_ET_DYN_BASE for a static-pie program (whose image is in the mmap area); with
    full randomization a page further (the .bss gap) and then anywhere in the
    BRK_RANDOM_RANGE above (arch_randomize_brk)."""
    start = _page_up(layout.ELF_ET_DYN_BASE if static_pie else image_end)
    if not rnd.randomize_brk:
        return start
    if not static_pie:
        start += PAGE_SIZE
    return start + _random_pages(rnd, BRK_RANDOM_RANGE // PAGE_SIZE)
