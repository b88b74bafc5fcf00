"""Bit layouts of x86-64 descriptors as pure functions: GDT entries, the TSS and
its descriptor, IDT gates (Intel SDM vol. 3A, 3.4.5, 7.2.3, 6.14.1)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Access byte bits of a segment descriptor.
ACCESSED = 1 << 0         # preset: the CPU would otherwise write it into the read-only GDT
READABLE_WRITABLE = 1 << 1
EXECUTABLE = 1 << 3
CODE_OR_DATA = 1 << 4     # S: 1 for code/data, 0 for system descriptors
PRESENT = 1 << 7
DPL_SHIFT = 5
# Flags nibble.
LONG_MODE = 1 << 1        # L: a 64-bit code segment
DEFAULT_32 = 1 << 2       # D/B
GRANULARITY_4K = 1 << 3   # G
TSS_AVAILABLE_64 = 0x9
TSS_BUSY_64 = 0xB
INTERRUPT_GATE_64 = 0xE
TSS_SIZE = 104


def segment_descriptor(*, code: bool, dpl: int) -> int:
    """A flat 64-bit code or data segment descriptor (base 0, limit 4 GiB)."""
    access = PRESENT | (dpl << DPL_SHIFT) | CODE_OR_DATA | READABLE_WRITABLE | ACCESSED
    if code:
        access |= EXECUTABLE
        flags = GRANULARITY_4K | LONG_MODE
    else:
        flags = GRANULARITY_4K | DEFAULT_32
    limit = 0xFFFFF
    return ((limit & 0xFFFF) | ((access & 0xFF) << 40) | ((limit >> 16) << 48)
            | (flags << 52))


def tss_descriptor(base: int, limit: int = TSS_SIZE - 1) -> tuple[int, int]:
    """The two 8-byte halves of a 64-bit TSS descriptor (available)."""
    access = PRESENT | TSS_AVAILABLE_64
    low = ((limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40)
           | (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56))
    return low, base >> 32


@dataclass(frozen=True)
class TaskStateSegment:
    """The 64-bit TSS: privilege-level stacks and interrupt stack table."""

    rsp0: int = 0
    ist: tuple[int, ...] = ()   # IST1..IST7

    def pack(self) -> bytes:
        ist = list(self.ist) + [0] * (7 - len(self.ist))
        # No I/O permission bitmap: its offset points past the limit, so every port is
        # denied to CPL3 (with IOPL 0).
        return struct.pack("<IQQQQ7QQHH", 0, self.rsp0, 0, 0, 0, *ist, 0, 0, TSS_SIZE)


def idt_gate(handler: int, selector: int, *, dpl: int, ist: int) -> bytes:
    """A 16-byte 64-bit interrupt gate (IF cleared on entry)."""
    type_attr = PRESENT | (dpl << DPL_SHIFT) | INTERRUPT_GATE_64
    return struct.pack("<HHBBHII", handler & 0xFFFF, selector, ist, type_attr,
                       (handler >> 16) & 0xFFFF, handler >> 32, 0)
