"""KVM API constants (linux/kvm.h, asm/kvm.h) as enums."""

from __future__ import annotations

import enum

KVM_API_VERSION = 12


class Cap(enum.IntEnum):
    """KVM_CAP_* extension numbers used by kvmdune."""

    USER_MEMORY = 3
    SET_TSS_ADDR = 4
    EXT_CPUID = 7
    NR_VCPUS = 9
    NR_MEMSLOTS = 10
    VCPU_EVENTS = 41
    XSAVE = 55
    XCRS = 56
    MAX_VCPUS = 66
    SYNC_REGS = 74
    READONLY_MEM = 81
    IMMEDIATE_EXIT = 136
    MANUAL_DIRTY_LOG_PROTECT2 = 168


#: Capabilities a kvmdune VM cannot work without.
REQUIRED_CAPS = (Cap.USER_MEMORY, Cap.EXT_CPUID, Cap.SYNC_REGS, Cap.IMMEDIATE_EXIT)


class ExitReason(enum.IntEnum):
    """KVM_EXIT_* values of kvm_run.exit_reason."""

    UNKNOWN = 0
    EXCEPTION = 1
    IO = 2
    HYPERCALL = 3
    DEBUG = 4
    HLT = 5
    MMIO = 6
    IRQ_WINDOW_OPEN = 7
    SHUTDOWN = 8
    FAIL_ENTRY = 9
    INTR = 10
    NMI = 16
    INTERNAL_ERROR = 17
    SYSTEM_EVENT = 24


class IoDirection(enum.IntEnum):
    """KVM_EXIT_IO_IN / KVM_EXIT_IO_OUT."""

    IN = 0
    OUT = 1


class InternalError(enum.IntEnum):
    """KVM_INTERNAL_ERROR_* sub-errors."""

    EMULATION = 1
    SIMUL_EX = 2
    DELIVERY_EV = 3
    UNEXPECTED_EXIT_REASON = 4


class SyncRegs(enum.IntFlag):
    """KVM_SYNC_X86_* bits of kvm_run.kvm_valid_regs / kvm_dirty_regs."""

    REGS = 1 << 0
    SREGS = 1 << 1
    EVENTS = 1 << 2


class DirtyLogProtect(enum.IntFlag):
    """KVM_DIRTY_LOG_* flags of KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (its value and
    its enable argument)."""

    MANUAL_PROTECT_ENABLE = 1 << 0   # KVM_GET_DIRTY_LOG no longer write-protects
    INITIALLY_SET = 1 << 1           # the bitmap starts all set: nothing is protected


class MemFlags(enum.IntFlag):
    """KVM_MEM_* flags of a memory slot."""

    LOG_DIRTY_PAGES = 1 << 0
    READONLY = 1 << 1
