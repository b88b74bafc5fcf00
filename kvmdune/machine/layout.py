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

#: The call stub (read-only code) and the call ring after it: the only user-half
#: pages the machine owns, just below the last user page (which Linux leaves unmapped
#: too). Programs get the user half below CALL_STUB.
CALL_STUB = 0x7FFF_FFFF_D000
CALL_RING = CALL_STUB + PAGE_SIZE
CALL_AREA_SIZE = 2 * PAGE_SIZE
USER_PROGRAM_END = CALL_STUB

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
