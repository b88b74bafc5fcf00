"""Where everything of the machine lives in guest virtual memory, and its selectors.

The one module that names guest addresses (Firecracker's arch/x86_64/layout.rs).
The supervisor area sits in the top 2 GiB of the address space (like Linux's kernel
image), mapped supervisor-only in every address space through the shared kernel
half; guard pages separate its parts. The user half belongs to the guest program.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..memory import PAGE_SIZE

#: Base of the supervisor area: the top 2 GiB, reachable with sign-extended disp32.
SUPERVISOR_BASE = 0xFFFF_FFFF_8000_0000

TRAMPOLINE = SUPERVISOR_BASE + 0x0000_0000      # code: read-only, executable
IDT = SUPERVISOR_BASE + 0x0000_4000             # read-only, shared by every vCPU

#: Each vCPU has a supervisor area of its own (its GDT, whose TSS descriptor names
#: its TSS, its TSS, the entry stack its iret frames are written on, its IST1 stack):
#: two vCPUs entering CPL0 at once never share a stack. Areas are CPU_AREA_STRIDE
#: apart from CPU_AREA_BASE, each part followed by a guard page.
CPU_AREA_BASE = SUPERVISOR_BASE + 0x0001_0000
CPU_AREA_STRIDE = 0x0002_0000
#: KVM's limit on vCPUs per VM here (KVM_CAP_MAX_VCPUS reports 1024).
MAX_VCPUS = 1024
_GDT_OFFSET = 0x0000
_TSS_OFFSET = 0x4000
_ENTRY_STACK_OFFSET = 0x1_0000
_EXCEPTION_STACK_OFFSET = 0x1_2000
ENTRY_STACK_SIZE = PAGE_SIZE
EXCEPTION_STACK_SIZE = PAGE_SIZE
#: Where the VMM writes the frame ``iretq`` returns to CPL3 through (its size).
IRET_FRAME_SIZE = 5 * 8


@dataclass(frozen=True)
class CpuArea:
    """The supervisor addresses of one vCPU (index ``index``)."""

    index: int

    @property
    def base(self) -> int:
        return CPU_AREA_BASE + self.index * CPU_AREA_STRIDE

    @property
    def gdt(self) -> int:
        return self.base + _GDT_OFFSET

    @property
    def tss(self) -> int:
        return self.base + _TSS_OFFSET

    @property
    def entry_stack(self) -> int:
        """The stack the VMM writes iret frames on (syscall returns, every resume)."""
        return self.base + _ENTRY_STACK_OFFSET

    @property
    def entry_stack_top(self) -> int:
        return self.entry_stack + ENTRY_STACK_SIZE

    @property
    def iret_frame(self) -> int:
        return self.entry_stack_top - IRET_FRAME_SIZE

    @property
    def exception_stack(self) -> int:
        """IST1: the CPU switches to it for every exception, before it pushes anything."""
        return self.base + _EXCEPTION_STACK_OFFSET

    @property
    def exception_stack_top(self) -> int:
        return self.exception_stack + EXCEPTION_STACK_SIZE


def cpu_area(index: int) -> CpuArea:
    if not 0 <= index < MAX_VCPUS:
        raise ValueError(f"vCPU index {index} outside 0..{MAX_VCPUS - 1}")
    return CpuArea(index)


# The boot vCPU's (index 0) addresses, by their old names.
GDT = cpu_area(0).gdt
TSS = cpu_area(0).tss
ENTRY_STACK = cpu_area(0).entry_stack
ENTRY_STACK_TOP = cpu_area(0).entry_stack_top
EXCEPTION_STACK = cpu_area(0).exception_stack
EXCEPTION_STACK_TOP = cpu_area(0).exception_stack_top
IRET_FRAME = cpu_area(0).iret_frame

#: Supervisor addresses the call stub jumps to when it needs the VMM: a CPL3 fetch
#: there faults with RIP == CR2 == the address. The slow path is the trampoline's
#: syscall entry itself; the wait target is inside the trampoline page, never code.
CALL_WAIT_TARGET = TRAMPOLINE + 0x800

#: A supervisor code page used only by ``kvmdune info``'s CPL0 speed probe.
PROBE_CODE = SUPERVISOR_BASE + 0x0000_8000

#: Linux's TASK_SIZE on x86-64 with 4-level paging (DEFAULT_MAP_WINDOW): the 47-bit
#: user half less the guard page Linux leaves unmapped below the non-canonical hole.
#: Linux derives its layout from it (ELF_ET_DYN_BASE, the mmap base, STACK_TOP).
TASK_SIZE = (1 << 47) - PAGE_SIZE

#: The call stub (read-only code) and the call ring after it: the only user-half
#: pages the machine owns, just below TASK_SIZE. Programs get the user half below
#: CALL_STUB.
CALL_AREA_SIZE = 2 * PAGE_SIZE
CALL_STUB = TASK_SIZE - CALL_AREA_SIZE          # 0x7fff_ffff_d000
CALL_RING = CALL_STUB + PAGE_SIZE
USER_PROGRAM_END = CALL_STUB
#: The call area is cut into slots, one per vCPU: slot k's copy of the stub sits at
#: CALL_STUB + k * CALL_SLOT_SIZE and its ring at CALL_RING + k * CALL_SLOT_SIZE, so
#: every copy reaches its own ring with the same RIP-relative displacement and needs
#: no register, stack or segment base to find it (the guest owns GS and its stack).
#: MSR_LSTAR of vCPU k points at its copy. vCPUs past the last slot have no stub.
CALL_SLOT_SIZE = 512
CALL_SLOTS = PAGE_SIZE // CALL_SLOT_SIZE


def call_stub_of(slot: int) -> int:
    """Where slot ``slot``'s copy of the call stub is (its vCPU's MSR_LSTAR)."""
    if not 0 <= slot < CALL_SLOTS:
        raise ValueError(f"call slot {slot} outside 0..{CALL_SLOTS - 1}")
    return CALL_STUB + slot * CALL_SLOT_SIZE

def call_ring_of(slot: int) -> int:
    """Where slot ``slot``'s call ring is (one page after its stub)."""
    return call_stub_of(slot) + PAGE_SIZE

# Where Linux puts a program's parts before randomization moves them (the setarch -R
# layout); kvmdune/linux/aslr.py draws the offsets.
#: The stack's top: Linux's STACK_TOP is TASK_SIZE; here the call area takes the two
#: pages below it, so the stack ends 8 KiB lower than on Linux.
STACK_TOP = USER_PROGRAM_END
#: ELF_ET_DYN_BASE: PIE programs load from 2/3 of TASK_SIZE (0x5555_5555_4aaa, which
#: the page-aligned load bias makes 0x5555_5555_4000); static-pie programs keep their
#: brk heap here.
ELF_ET_DYN_BASE = TASK_SIZE // 3 * 2
#: The lowest address mmap picks by itself (vm.mmap_min_addr's default, 64 KiB).
MMAP_MIN_ADDR = 0x1_0000

# GDT selectors, laid out like Linux's so that user code sees CS=0x33, SS=0x2b. The
# slot where Linux keeps its 32-bit user code segment (0x23) is left null: there is no
# way into compatibility mode. MSR_STAR needs KERNEL_CS, KERNEL_CS+8 = KERNEL_DS, and
# STAR.SYSRET_CS = 0x23 so that USER_DS = +8 and USER_CS = +16.
KERNEL_CS = 0x10
KERNEL_DS = 0x18
SYSRET_BASE = 0x20 | 3
USER_DS = 0x28 | 3
USER_CS = 0x30 | 3
TSS_SELECTOR = 0x40
GDT_ENTRIES = 10          # 8 descriptors + the 16-byte TSS descriptor
IDT_VECTORS = 32
