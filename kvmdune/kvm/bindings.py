"""ctypes mirrors of the kernel structures of the KVM API (x86-64).

One ``Structure`` per kernel struct, named as in C, with fixed-width fields and
explicit padding. Sources: include/uapi/linux/kvm.h and
arch/x86/include/uapi/asm/kvm.h. ``tests/kvm/test_bindings.py`` pins their sizes
and key offsets against the kernel's.
"""

from __future__ import annotations

import ctypes
from ctypes import c_char, c_uint8, c_uint16, c_uint32, c_uint64

u8, u16, u32, u64 = c_uint8, c_uint16, c_uint32, c_uint64


class kvm_regs(ctypes.Structure):
    """struct kvm_regs (asm/kvm.h): the general-purpose registers."""

    _fields_ = [
        ("rax", u64), ("rbx", u64), ("rcx", u64), ("rdx", u64),
        ("rsi", u64), ("rdi", u64), ("rsp", u64), ("rbp", u64),
        ("r8", u64), ("r9", u64), ("r10", u64), ("r11", u64),
        ("r12", u64), ("r13", u64), ("r14", u64), ("r15", u64),
        ("rip", u64), ("rflags", u64),
    ]


class kvm_segment(ctypes.Structure):
    """struct kvm_segment (asm/kvm.h): a segment register's hidden state."""

    _fields_ = [
        ("base", u64), ("limit", u32), ("selector", u16),
        ("type", u8), ("present", u8), ("dpl", u8), ("db", u8),
        ("s", u8), ("l", u8), ("g", u8), ("avl", u8),
        ("unusable", u8), ("padding", u8),
    ]


class kvm_dtable(ctypes.Structure):
    """struct kvm_dtable (asm/kvm.h): GDTR / IDTR."""

    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(ctypes.Structure):
    """struct kvm_sregs (asm/kvm.h): segment and control registers."""

    _fields_ = [
        ("cs", kvm_segment), ("ds", kvm_segment), ("es", kvm_segment),
        ("fs", kvm_segment), ("gs", kvm_segment), ("ss", kvm_segment),
        ("tr", kvm_segment), ("ldt", kvm_segment),
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", u64), ("cr2", u64), ("cr3", u64), ("cr4", u64), ("cr8", u64),
        ("efer", u64), ("apic_base", u64),
        ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_vcpu_events_exception(ctypes.Structure):
    _fields_ = [("injected", u8), ("nr", u8), ("has_error_code", u8),
                ("pending", u8), ("error_code", u32)]


class kvm_vcpu_events(ctypes.Structure):
    """struct kvm_vcpu_events (asm/kvm.h); only the exception part is used by name."""

    _fields_ = [
        ("exception", kvm_vcpu_events_exception),
        ("interrupt", u8 * 4),
        ("nmi", u8 * 4),
        ("sipi_vector", u32),
        ("flags", u32),
        ("smi", u8 * 4),
        ("triple_fault", u8 * 1),
        ("reserved", u8 * 26),
        ("exception_has_payload", u8),
        ("exception_payload", u64),
    ]


class kvm_sync_regs(ctypes.Structure):
    """struct kvm_sync_regs (asm/kvm.h): registers shared through kvm_run."""

    _fields_ = [("regs", kvm_regs), ("sregs", kvm_sregs), ("events", kvm_vcpu_events)]


class kvm_run_io(ctypes.Structure):
    """The ``io`` member of kvm_run's exit union (KVM_EXIT_IO)."""

    _fields_ = [("direction", u8), ("size", u8), ("port", u16),
                ("count", u32), ("data_offset", u64)]


class kvm_run_mmio(ctypes.Structure):
    """The ``mmio`` member of kvm_run's exit union (KVM_EXIT_MMIO)."""

    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class kvm_run_internal(ctypes.Structure):
    """The ``internal`` member of kvm_run's exit union (KVM_EXIT_INTERNAL_ERROR)."""

    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_run_fail_entry(ctypes.Structure):
    """The ``fail_entry`` member (KVM_EXIT_FAIL_ENTRY)."""

    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class kvm_run_system_event(ctypes.Structure):
    """The ``system_event`` member (KVM_EXIT_SYSTEM_EVENT)."""

    _fields_ = [("type", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_run_exit(ctypes.Union):
    """kvm_run's 256-byte exit-information union."""

    _fields_ = [
        ("hw_exit_reason", u64),
        ("fail_entry", kvm_run_fail_entry),
        ("io", kvm_run_io),
        ("mmio", kvm_run_mmio),
        ("internal", kvm_run_internal),
        ("system_event", kvm_run_system_event),
        ("padding", c_char * 256),
    ]


SYNC_REGS_SIZE_BYTES = 2048


class kvm_run_sync(ctypes.Union):
    _fields_ = [("regs", kvm_sync_regs), ("padding", c_char * SYNC_REGS_SIZE_BYTES)]


class kvm_run(ctypes.Structure):
    """struct kvm_run (linux/kvm.h): the vCPU's shared page, mapped from the vCPU fd."""

    _fields_ = [
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("exit", kvm_run_exit),
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
        ("s", kvm_run_sync),
    ]


class kvm_userspace_memory_region(ctypes.Structure):
    """struct kvm_userspace_memory_region (linux/kvm.h)."""

    _fields_ = [("slot", u32), ("flags", u32), ("guest_phys_addr", u64),
                ("memory_size", u64), ("userspace_addr", u64)]


class kvm_enable_cap(ctypes.Structure):
    """struct kvm_enable_cap (linux/kvm.h)."""

    _fields_ = [("cap", u32), ("flags", u32), ("args", u64 * 4), ("pad", u8 * 64)]


class kvm_clear_dirty_log(ctypes.Structure):
    """struct kvm_clear_dirty_log (linux/kvm.h); the bitmap pointer's union is a u64."""

    _fields_ = [("slot", u32), ("num_pages", u32), ("first_page", u64),
                ("dirty_bitmap", u64)]


class kvm_cpuid_entry2(ctypes.Structure):
    """struct kvm_cpuid_entry2 (asm/kvm.h)."""

    _fields_ = [("function", u32), ("index", u32), ("flags", u32),
                ("eax", u32), ("ebx", u32), ("ecx", u32), ("edx", u32),
                ("padding", u32 * 3)]


class kvm_cpuid2(ctypes.Structure):
    """struct kvm_cpuid2 (asm/kvm.h) header; entries follow (see ``cpuid2_buffer``)."""

    _fields_ = [("nent", u32), ("padding", u32)]


def cpuid2_buffer(nent: int) -> ctypes.Structure:
    """A kvm_cpuid2 with room for ``nent`` entries (a C flexible array member)."""

    class kvm_cpuid2_n(ctypes.Structure):
        _fields_ = [("nent", u32), ("padding", u32), ("entries", kvm_cpuid_entry2 * nent)]

    buf = kvm_cpuid2_n()
    buf.nent = nent
    return buf


class kvm_msr_entry(ctypes.Structure):
    """struct kvm_msr_entry (asm/kvm.h)."""

    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class kvm_msrs(ctypes.Structure):
    """struct kvm_msrs (asm/kvm.h) header; entries follow (see ``msrs_buffer``)."""

    _fields_ = [("nmsrs", u32), ("pad", u32)]


def msrs_buffer(entries: dict[int, int]) -> ctypes.Structure:
    """A kvm_msrs holding ``entries`` (index -> value)."""

    class kvm_msrs_n(ctypes.Structure):
        _fields_ = [("nmsrs", u32), ("pad", u32), ("entries", kvm_msr_entry * len(entries))]

    buf = kvm_msrs_n()
    buf.nmsrs = len(entries)
    for slot, (index, value) in enumerate(entries.items()):
        buf.entries[slot].index = index
        buf.entries[slot].data = value
    return buf


KVM_MAX_XCRS = 16


class kvm_xcr(ctypes.Structure):
    """struct kvm_xcr (asm/kvm.h)."""

    _fields_ = [("xcr", u32), ("reserved", u32), ("value", u64)]


class kvm_xcrs(ctypes.Structure):
    """struct kvm_xcrs (asm/kvm.h)."""

    _fields_ = [("nr_xcrs", u32), ("flags", u32), ("xcrs", kvm_xcr * KVM_MAX_XCRS),
                ("padding", u64 * 16)]


KVM_XSAVE_SIZE = 4096


class kvm_xsave(ctypes.Structure):
    """struct kvm_xsave (asm/kvm.h): the XSAVE area (FPU, SSE, AVX state)."""

    _fields_ = [("region", u32 * (KVM_XSAVE_SIZE // 4))]
