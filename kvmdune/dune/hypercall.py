"""The hypercall ABI's numbers, mirrored from ``include/kvmdune/hypercall.h``.

A hypercall is a ``syscall`` numbered ``HYPERCALL_BASE + op`` (see the header for
the whole ABI); the Linux layer hands every number in the range to the process's
privileged-features extension (``linux.privileged``), which this package provides.
"""

from __future__ import annotations

import enum
from typing import Final

from ..linux.privileged import HYPERCALL_BASE, HYPERCALL_COUNT

__all__ = ["HYPERCALL_BASE", "HYPERCALL_COUNT", "ABI_VERSION", "HypercallOp", "TrapKind",
           "BitsFlags"]

ABI_VERSION: Final = 1


class HypercallOp(enum.IntEnum):
    """``KVMDUNE_HC_*``."""

    PROBE = 0
    INIT = 1
    ENTER = 2
    SET_TRAP = 3
    JUMP_TO_USER = 4
    RET_FROM_USER = 5
    RESUME_USER = 6
    VM_MPROTECT = 16
    VM_MAP_PHYS = 17
    VM_MAP_PAGES = 18
    VM_UNMAP = 19
    VM_LOOKUP = 20
    VM_CLONE = 21
    VM_FREE = 22
    VM_SYNC = 23
    FLUSH_TLB = 24
    LOAD_CR3 = 25
    VA_TO_PA = 26
    VM_BITS = 27


class TrapKind(enum.IntEnum):
    """``KVMDUNE_TRAP_*``: what ``SET_TRAP`` routes to the program's handlers."""

    PGFLT = 0
    VECTOR = 1
    SIGNAL = 2
    SYSCALL = 3


class BitsFlags(enum.IntFlag):
    """``KVMDUNE_BITS_*``."""

    CLEAR = 1
