"""KVM ioctl request numbers, computed from the _IOC encoding of asm-generic/ioctl.h.

Grouped by the file descriptor they apply to; each notes the capability it needs.
"""

from __future__ import annotations

import ctypes

from . import bindings as b

# asm-generic/ioctl.h: | dir:2 | size:14 | type:8 | nr:8 |
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:
    return ((direction << _IOC_DIRSHIFT) | (type_ << _IOC_TYPESHIFT)
            | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT))


def _IO(type_: int, nr: int) -> int:
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int, nr: int, struct: type) -> int:
    return _IOC(_IOC_READ, type_, nr, ctypes.sizeof(struct))


def _IOW(type_: int, nr: int, struct: type) -> int:
    return _IOC(_IOC_WRITE, type_, nr, ctypes.sizeof(struct))


def _IOWR(type_: int, nr: int, struct: type) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, ctypes.sizeof(struct))


KVMIO = 0xAE

# /dev/kvm (system) ioctls
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, b.kvm_cpuid2)        # KVM_CAP_EXT_CPUID

# VM ioctls
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, b.kvm_userspace_memory_region)  # KVM_CAP_USER_MEMORY
KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47)                                # KVM_CAP_SET_TSS_ADDR
KVM_ENABLE_CAP = _IOW(KVMIO, 0xA3, b.kvm_enable_cap)               # KVM_CAP_ENABLE_CAP_VM
KVM_CLEAR_DIRTY_LOG = _IOWR(KVMIO, 0xC0, b.kvm_clear_dirty_log)    # KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2

# vCPU ioctls
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, b.kvm_regs)
KVM_SET_REGS = _IOW(KVMIO, 0x82, b.kvm_regs)
KVM_GET_SREGS = _IOR(KVMIO, 0x83, b.kvm_sregs)
KVM_SET_SREGS = _IOW(KVMIO, 0x84, b.kvm_sregs)
KVM_GET_MSRS = _IOWR(KVMIO, 0x88, b.kvm_msrs)
KVM_SET_MSRS = _IOW(KVMIO, 0x89, b.kvm_msrs)
#: struct kvm_signal_mask: len (u32), then the sigset; the request encodes the head only.
KVM_SET_SIGNAL_MASK = _IOC(_IOC_WRITE, KVMIO, 0x8B, ctypes.sizeof(ctypes.c_uint32))
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, b.kvm_cpuid2)                   # KVM_CAP_EXT_CPUID
KVM_GET_VCPU_EVENTS = _IOR(KVMIO, 0x9F, b.kvm_vcpu_events)         # KVM_CAP_VCPU_EVENTS
KVM_SET_VCPU_EVENTS = _IOW(KVMIO, 0xA0, b.kvm_vcpu_events)         # KVM_CAP_VCPU_EVENTS
KVM_GET_XSAVE = _IOR(KVMIO, 0xA4, b.kvm_xsave)                     # KVM_CAP_XSAVE
KVM_SET_XSAVE = _IOW(KVMIO, 0xA5, b.kvm_xsave)                     # KVM_CAP_XSAVE
KVM_GET_XCRS = _IOR(KVMIO, 0xA6, b.kvm_xcrs)                       # KVM_CAP_XCRS
KVM_SET_XCRS = _IOW(KVMIO, 0xA7, b.kvm_xcrs)                       # KVM_CAP_XCRS

NAMES = {value: name for name, value in list(globals().items())
         if name.startswith("KVM_") and isinstance(value, int)}
