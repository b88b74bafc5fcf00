"""x86-64 architectural constants (Intel SDM / AMD APM names): control-register,
EFER and RFLAGS bits, MSR numbers, exception vectors, page-fault error codes."""

from __future__ import annotations

import enum


class CR0(enum.IntFlag):
    PE = 1 << 0
    MP = 1 << 1
    ET = 1 << 4
    NE = 1 << 5
    WP = 1 << 16
    AM = 1 << 18
    PG = 1 << 31


class CR4(enum.IntFlag):
    PAE = 1 << 5
    OSFXSR = 1 << 9
    OSXMMEXCPT = 1 << 10
    OSXSAVE = 1 << 18


class EFER(enum.IntFlag):
    SCE = 1 << 0
    LME = 1 << 8
    LMA = 1 << 10
    NXE = 1 << 11


class RFLAGS(enum.IntFlag):
    CF = 1 << 0
    FIXED = 1 << 1      # reserved, always 1
    PF = 1 << 2
    AF = 1 << 4
    ZF = 1 << 6
    SF = 1 << 7
    TF = 1 << 8
    IF = 1 << 9
    DF = 1 << 10
    OF = 1 << 11
    IOPL = 3 << 12
    NT = 1 << 14
    RF = 1 << 16
    VM = 1 << 17
    AC = 1 << 18
    ID = 1 << 21


#: Flags user code may hold. IOPL, NT, VM, RF are never handed back to CPL3.
USER_RFLAGS = int(RFLAGS.CF | RFLAGS.PF | RFLAGS.AF | RFLAGS.ZF | RFLAGS.SF | RFLAGS.TF
                  | RFLAGS.DF | RFLAGS.OF | RFLAGS.AC | RFLAGS.ID)
#: What Linux user code sees besides its own flags: IF set, the fixed bit.
USER_RFLAGS_FIXED = int(RFLAGS.FIXED | RFLAGS.IF)


class MSR(enum.IntEnum):
    IA32_SYSENTER_CS = 0x174
    IA32_SYSENTER_ESP = 0x175
    IA32_SYSENTER_EIP = 0x176
    IA32_EFER = 0xC000_0080
    STAR = 0xC000_0081
    LSTAR = 0xC000_0082
    CSTAR = 0xC000_0083
    SFMASK = 0xC000_0084
    FS_BASE = 0xC000_0100
    GS_BASE = 0xC000_0101
    KERNEL_GS_BASE = 0xC000_0102


class Vector(enum.IntEnum):
    """Exception vectors 0..31, by their mnemonic."""

    DE = 0    # divide error
    DB = 1    # debug
    NMI = 2
    BP = 3    # breakpoint (int3)
    OF = 4    # overflow (into)
    BR = 5    # bound range
    UD = 6    # invalid opcode
    NM = 7    # device not available
    DF = 8    # double fault
    CSO = 9   # coprocessor segment overrun (reserved)
    TS = 10   # invalid TSS
    NP = 11   # segment not present
    SS = 12   # stack-segment fault
    GP = 13   # general protection
    PF = 14   # page fault
    RES15 = 15
    MF = 16   # x87 floating-point
    AC = 17   # alignment check
    MC = 18   # machine check
    XM = 19   # SIMD floating-point
    VE = 20   # virtualization exception
    CP = 21   # control protection
    RES22 = 22
    RES23 = 23
    RES24 = 24
    RES25 = 25
    RES26 = 26
    RES27 = 27
    HV = 28   # hypervisor injection
    VC = 29   # VMM communication
    SX = 30   # security exception
    RES31 = 31

    @property
    def mnemonic(self) -> str:
        return f"#{self.name}"


#: Vectors for which the CPU pushes an error code.
VECTORS_WITH_ERROR_CODE = frozenset({Vector.DF, Vector.TS, Vector.NP, Vector.SS, Vector.GP,
                                     Vector.PF, Vector.AC, Vector.CP, Vector.VC, Vector.SX})
#: Vectors user code may raise with ``int n`` (DPL 3 gates), as on Linux.
USER_GATES = frozenset({Vector.BP, Vector.OF})


class PFError(enum.IntFlag):
    """Page-fault error code bits."""

    PRESENT = 1 << 0     # 0: not-present page; 1: protection violation
    WRITE = 1 << 1
    USER = 1 << 2
    RESERVED = 1 << 3
    INSTRUCTION = 1 << 4
    PROTECTION_KEY = 1 << 5
    SHADOW_STACK = 1 << 6
