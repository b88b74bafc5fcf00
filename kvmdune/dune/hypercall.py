"""The hypercall ABI's numbers, mirrored from ``include/kvmdune/hypercall.h``, and
the upcall frame's layout, from ``include/kvmdune/upcall.h``.

A hypercall is a ``syscall`` numbered ``HYPERCALL_BASE + op`` (see the header for
the whole ABI); the Linux layer hands every number in the range to the process's
privileged-features extension (``linux.privileged``), which this package provides.
"""

from __future__ import annotations

import enum
from typing import Final

from ..linux.privileged import HYPERCALL_BASE, HYPERCALL_COUNT

__all__ = ["HYPERCALL_BASE", "HYPERCALL_COUNT", "ABI_VERSION", "HypercallOp", "TrapKind",
           "BitsFlags", "UpcallFlags"]

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


class UpcallFlags(enum.IntFlag):
    """``KVMDUNE_UPCALL_*`` (include/kvmdune/upcall.h): the frame's ``flags``."""

    FROM_USER = 1


#: Offsets in ``struct dune_tf`` (libdune's packed layout; upcall.h's KVMDUNE_TF_*).
TF_FIELDS: Final = ("rdi", "rsi", "rdx", "rcx", "r8", "r9", "r10", "r11", "rbx", "rbp",
                    "r12", "r13", "r14", "r15", "rax")
TF_RAX: Final = 112
TF_ERR: Final = 120
TF_RIP: Final = 128
TF_CS: Final = 136
TF_RFLAGS: Final = 144
TF_RSP: Final = 152
TF_SS: Final = 160
TF_SIZE: Final = 168
#: ``struct kvmdune_upcall``: the tf, then kind, vector, addr, fec, flags, fs_base and
#: a reserved word.
UPCALL_KIND: Final = 168
UPCALL_FLAGS: Final = 200
UPCALL_FS_BASE: Final = 208
UPCALL_SIZE: Final = 224
UPCALL_ALIGN: Final = 64
RED_ZONE: Final = 128
UPCALL_STACK_RESERVE: Final = 4096
#: DUNE_SIGNAL_INTR_BASE: signal N arrives as vector 200 + N.
SIGNAL_INTR_BASE: Final = 200
