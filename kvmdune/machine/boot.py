"""The boot state the VMM builds in guest memory before any guest code runs: the
supervisor area (trampoline, GDT, IDT, TSS, stacks), the vCPU's segment and control
registers, its MSRs, CPUID and XCR0."""

from __future__ import annotations

import struct

from ..kvm import Kvm, Vcpu
from ..kvm import bindings as kb
from ..memory import PAGE_SIZE, AddressSpace, Perm
from . import _trampoline, layout
from .descriptors import (TSS_BUSY_64, TSS_SIZE, TaskStateSegment, idt_gate,
                          segment_descriptor, tss_descriptor)
from .x86 import CR0, CR4, EFER, MSR, RFLAGS, USER_GATES, Vector

#: Flags ``syscall`` clears on entry: no interrupts, single-step, string direction,
#: alignment checks or nested task in the trampoline.
SYSCALL_MASK = int(RFLAGS.IF | RFLAGS.TF | RFLAGS.DF | RFLAGS.AC | RFLAGS.NT | RFLAGS.IOPL)
#: IST slot of every exception gate: the CPU switches stacks before pushing.
EXCEPTION_IST = 1
CPUID_FEATURES_LEAF = 1
CPUID_XSAVE_LEAF = 0xD
CPUID_ECX_XSAVE = 1 << 26
#: XCR0 components kvmdune enables when KVM offers them: x87, SSE, AVX, AVX-512.
XCR0_WANTED = 0b1110_0111

_SUPERVISOR_AREA = (
    # (address, size, permission): nothing here is reachable from CPL3.
    (layout.TRAMPOLINE, PAGE_SIZE, Perm.READ | Perm.EXEC),
    (layout.IDT, PAGE_SIZE, Perm.READ),
)


def _cpu_area_parts(area: layout.CpuArea) -> tuple[tuple[int, int, Perm], ...]:
    """(address, size, permission) of one vCPU's supervisor pages."""
    return (
        (area.gdt, PAGE_SIZE, Perm.READ),
        (area.tss, PAGE_SIZE, Perm.READ),
        (area.entry_stack, layout.ENTRY_STACK_SIZE, Perm.READ | Perm.WRITE),
        (area.exception_stack, layout.EXCEPTION_STACK_SIZE, Perm.READ | Perm.WRITE),
    )


def build_supervisor_area(kernel: AddressSpace) -> None:
    """Map the shared supervisor area in ``kernel`` (whose upper half every address
    space shares) and write the trampoline and the IDT into it; then the boot
    vCPU's own area."""
    if len(_trampoline.CODE) > PAGE_SIZE:
        raise RuntimeError("the trampoline outgrew its page")
    for address, size, perm in _SUPERVISOR_AREA:
        kernel.map(address, size, perm)
    _write(kernel, layout.TRAMPOLINE, _trampoline.CODE)
    _write(kernel, layout.IDT, idt_bytes())
    build_cpu_area(kernel, 0)


#: Filler of the user-syscall page between entries: int3, never reached (user code
#: cannot fetch a supervisor page; only MSR_LSTAR's targets are entered, at CPL0).
_INT3 = b"\xcc"


def user_syscall_page() -> bytes:
    """The page a user view (a Dune root for user code) maps supervisor-only at
    CALL_STUB in place of the call stubs: at every call slot ``k`` (where vCPU k's
    MSR_LSTAR points) the trampoline's syscall entry, so a ``syscall`` of user code on
    any vCPU exits to the VMM as a system call. On hardware KVM the entry runs at CPL0:
    any other bytes there (the trampoline's own page beyond slot 0) would run with the
    user's registers in ring 0."""
    entry = _trampoline.CODE[_trampoline.SYSCALL_ENTRY:_trampoline.IRET]
    page = bytearray(_INT3 * PAGE_SIZE)
    for slot in range(layout.CALL_SLOTS):
        offset = layout.call_stub_of(slot) - layout.CALL_STUB
        page[offset:offset + len(entry)] = entry
    return bytes(page)


def build_cpu_area(kernel: AddressSpace, index: int) -> None:
    """Map vCPU ``index``'s GDT, TSS and stacks (once; a pooled vCPU keeps them).
    Adding mappings needs no invalidation, and every address space sees them: the
    top 2 GiB hang off the one PML4 entry they all share."""
    area = layout.cpu_area(index)
    if kernel.walk(area.gdt) is not None:
        return
    for address, size, perm in _cpu_area_parts(area):
        kernel.map(address, size, perm)
    _write(kernel, area.gdt, gdt_bytes(area))
    _write(kernel, area.tss, TaskStateSegment(
        rsp0=area.entry_stack_top, ist=(area.exception_stack_top,)).pack())


def _write(space: AddressSpace, vaddr: int, data: bytes) -> None:
    found = space.walk(vaddr)
    assert found is not None
    space.memory.write(found.paddr, data)


def gdt_bytes(area: layout.CpuArea = layout.cpu_area(0)) -> bytes:
    """The GDT of the vCPU owning ``area``, in the layout ``layout`` documents
    (Linux's selectors, no 32-bit code; the TSS descriptor names the vCPU's TSS)."""
    entries = [0] * layout.GDT_ENTRIES
    entries[layout.KERNEL_CS >> 3] = segment_descriptor(code=True, dpl=0)
    entries[layout.KERNEL_DS >> 3] = segment_descriptor(code=False, dpl=0)
    entries[layout.USER_DS >> 3] = segment_descriptor(code=False, dpl=3)
    entries[layout.USER_CS >> 3] = segment_descriptor(code=True, dpl=3)
    low, high = tss_descriptor(area.tss)
    # Busy, as the task register holds it (set through KVM_SET_SREGS, never by ltr).
    low |= (TSS_BUSY_64 ^ 0x9) << 40
    entries[layout.TSS_SELECTOR >> 3], entries[(layout.TSS_SELECTOR >> 3) + 1] = low, high
    return struct.pack(f"<{len(entries)}Q", *entries)


def idt_bytes() -> bytes:
    """Gates for the 32 exception vectors; only #BP and #OF may be raised from CPL3."""
    stride = _trampoline.EXCEPTION_STRIDE
    base = layout.TRAMPOLINE + _trampoline.EXCEPTION_ENTRIES
    return b"".join(
        idt_gate(base + vector * stride, layout.KERNEL_CS,
                 dpl=3 if vector in USER_GATES else 0, ist=EXCEPTION_IST)
        for vector in Vector)


def _segment(selector: int, *, code: bool, dpl: int) -> kb.kvm_segment:
    return kb.kvm_segment(base=0, limit=0xFFFF_FFFF, selector=selector,
                          type=0xB if code else 0x3, present=1, dpl=dpl,
                          db=0 if code else 1, s=1, l=1 if code else 0, g=1)


def initial_sregs(kernel: AddressSpace, xsave: bool,
                  area: layout.CpuArea = layout.cpu_area(0)) -> kb.kvm_sregs:
    """Long mode at CPL0 in the trampoline's segments, paging on with ``kernel``,
    with the GDT and TSS of the vCPU owning ``area``."""
    sregs = kb.kvm_sregs()
    sregs.cs = _segment(layout.KERNEL_CS, code=True, dpl=0)
    sregs.ss = _segment(layout.KERNEL_DS, code=False, dpl=0)
    # DS/ES/FS/GS: null selectors whose hidden DPL is 3, so iretq to CPL3 keeps them
    # (and keeps the FS/GS bases user code relies on for TLS).
    for name in ("ds", "es", "fs", "gs"):
        setattr(sregs, name, _segment(0, code=False, dpl=3))
    point_at_area(sregs, area)
    sregs.ldt = kb.kvm_segment(selector=0, type=0x2, present=1, unusable=1)
    sregs.idt = kb.kvm_dtable(base=layout.IDT, limit=layout.IDT_VECTORS * 16 - 1)
    # AM lets user code enable alignment checks (RFLAGS.AC), as on Linux.
    sregs.cr0 = int(CR0.PE | CR0.MP | CR0.ET | CR0.NE | CR0.WP | CR0.AM | CR0.PG)
    sregs.cr4 = int(CR4.PAE | CR4.OSFXSR | CR4.OSXMMEXCPT | (CR4.OSXSAVE if xsave else 0))
    sregs.cr3 = kernel.cr3
    sregs.efer = int(EFER.SCE | EFER.LME | EFER.LMA | EFER.NXE)
    return sregs


def point_at_area(sregs: kb.kvm_sregs, area: layout.CpuArea) -> None:
    """Make ``sregs`` use the GDT and TSS of ``area`` (TR is loaded as ``ltr``
    would, busy: KVM_SET_SREGS sets its hidden part, the GDT is never written)."""
    sregs.tr = kb.kvm_segment(base=area.tss, limit=TSS_SIZE - 1,
                              selector=layout.TSS_SELECTOR, type=TSS_BUSY_64, present=1)
    sregs.gdt = kb.kvm_dtable(base=area.gdt, limit=layout.GDT_ENTRIES * 8 - 1)


def initial_msrs() -> dict[int, int]:
    return {
        MSR.STAR: (layout.SYSRET_BASE << 48) | (layout.KERNEL_CS << 32),
        MSR.LSTAR: layout.TRAMPOLINE + _trampoline.SYSCALL_ENTRY,
        MSR.CSTAR: layout.TRAMPOLINE + _trampoline.BAD_ENTRY,
        MSR.SFMASK: SYSCALL_MASK,
        # SYSENTER_CS 0: ``sysenter`` raises #GP (Intel) or #UD (AMD) in long mode.
        MSR.IA32_SYSENTER_CS: 0,
        MSR.FS_BASE: 0,
        MSR.GS_BASE: 0,
        MSR.KERNEL_GS_BASE: 0,
    }


def configure_vcpu(kvm: Kvm, vcpu: Vcpu, kernel: AddressSpace,
                   index: int = 0) -> kb.kvm_sregs:
    """CPUID (hardware KVM refuses long mode without it), segment and control
    registers (with vCPU ``index``'s supervisor area, which must be built), MSRs,
    and XCR0 when KVM offers XSAVE. Returns the sregs set."""
    cpuid = kvm.get_supported_cpuid()
    vcpu.set_cpuid2(cpuid)
    xcr0 = _xcr0(cpuid.entries[:cpuid.nent])
    sregs = initial_sregs(kernel, xsave=xcr0 is not None, area=layout.cpu_area(index))
    vcpu.set_sregs(sregs)
    vcpu.set_msrs(initial_msrs())
    if xcr0 is not None:
        xcrs = kb.kvm_xcrs()
        xcrs.nr_xcrs = 1
        xcrs.xcrs[0].xcr = 0
        xcrs.xcrs[0].value = xcr0
        vcpu.set_xcrs(xcrs)
    return sregs


def _xcr0(entries: list[kb.kvm_cpuid_entry2]) -> int | None:
    """The XCR0 to set, or None when KVM's CPUID offers no XSAVE."""
    if not any(e.function == CPUID_FEATURES_LEAF and e.ecx & CPUID_ECX_XSAVE
               for e in entries):
        return None
    supported = next((e.eax for e in entries
                      if e.function == CPUID_XSAVE_LEAF and e.index == 0), 0)
    return (supported & XCR0_WANTED) | 1   # x87 state is always enabled
