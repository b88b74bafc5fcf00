"""Where everything of the machine lives in guest virtual memory, and its selectors.

The one module that names guest addresses (Firecracker's arch/x86_64/layout.rs).
The supervisor area sits in the top 2 GiB of the address space (like Linux's kernel
image), mapped supervisor-only in every address space through the shared kernel
half; guard pages separate its parts. The user half belongs to the guest program.
"""

from __future__ import annotations

from ..memory import PAGE_SIZE

#: Base of the supervisor area: the top 2 GiB, reachable with sign-extended disp32.
SUPERVISOR_BASE = 0xFFFF_FFFF_8000_0000

TRAMPOLINE = SUPERVISOR_BASE + 0x0000_0000      # code: read-only, executable
GDT = SUPERVISOR_BASE + 0x0001_0000             # read-only
IDT = SUPERVISOR_BASE + 0x0001_2000             # read-only
TSS = SUPERVISOR_BASE + 0x0001_4000             # read-only
#: The stack the VMM writes iret frames on (syscall returns, every resume).
ENTRY_STACK = SUPERVISOR_BASE + 0x0002_0000
ENTRY_STACK_SIZE = PAGE_SIZE
ENTRY_STACK_TOP = ENTRY_STACK + ENTRY_STACK_SIZE
#: IST1: the CPU switches to it for every exception, before it pushes anything.
EXCEPTION_STACK = SUPERVISOR_BASE + 0x0002_2000
EXCEPTION_STACK_SIZE = PAGE_SIZE
EXCEPTION_STACK_TOP = EXCEPTION_STACK + EXCEPTION_STACK_SIZE

#: Supervisor addresses the call stub jumps to when it needs the VMM: a CPL3 fetch
#: there faults with RIP == CR2 == the address. The slow path is the trampoline's
#: syscall entry itself; the wait target is inside the trampoline page, never code.
CALL_WAIT_TARGET = TRAMPOLINE + 0x800

#: A supervisor code page used only by ``kvmdune info``'s CPL0 speed probe.
PROBE_CODE = SUPERVISOR_BASE + 0x0003_0000

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

#: Where the VMM writes the frame ``iretq`` returns to CPL3 through.
IRET_FRAME_SIZE = 5 * 8
IRET_FRAME = ENTRY_STACK_TOP - IRET_FRAME_SIZE

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
