"""The ctypes mirrors and ioctl numbers match the kernel headers, checked against
a C program compiled here (differential), and a few pinned values."""

from __future__ import annotations

import ctypes
import subprocess

import pytest

from kvmdune.kvm import bindings as b
from kvmdune.kvm import ioctls as io

STRUCTS = ["kvm_regs", "kvm_segment", "kvm_dtable", "kvm_sregs", "kvm_vcpu_events",
           "kvm_sync_regs", "kvm_run", "kvm_userspace_memory_region", "kvm_cpuid_entry2",
           "kvm_cpuid2", "kvm_msr_entry", "kvm_msrs", "kvm_xcr", "kvm_xcrs", "kvm_xsave",
           "kvm_enable_cap", "kvm_clear_dirty_log"]
OFFSETS = [("kvm_run", "exit_reason"), ("kvm_run", "kvm_valid_regs"),
           ("kvm_run", "kvm_dirty_regs"), ("kvm_run", "s"), ("kvm_sregs", "cr0"),
           ("kvm_sregs", "efer"), ("kvm_sregs", "interrupt_bitmap"),
           ("kvm_sync_regs", "sregs"), ("kvm_sync_regs", "events"),
           ("kvm_vcpu_events", "exception_payload"), ("kvm_segment", "unusable")]
IOCTLS = ["KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION",
          "KVM_GET_VCPU_MMAP_SIZE", "KVM_GET_SUPPORTED_CPUID", "KVM_CREATE_VCPU",
          "KVM_SET_USER_MEMORY_REGION", "KVM_SET_TSS_ADDR", "KVM_RUN", "KVM_GET_REGS",
          "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_GET_MSRS", "KVM_SET_MSRS",
          "KVM_SET_CPUID2", "KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS", "KVM_GET_XCRS",
          "KVM_SET_XCRS", "KVM_GET_XSAVE", "KVM_SET_XSAVE", "KVM_ENABLE_CAP",
          "KVM_CLEAR_DIRTY_LOG", "KVM_SET_SIGNAL_MASK"]


@pytest.fixture(scope="module")
def header_values(tmp_path_factory) -> dict[str, int]:
    lines = [f'printf("sizeof {s} %zu\\n", sizeof(struct {s}));' for s in STRUCTS]
    lines += [f'printf("offsetof {s}.{f} %zu\\n", offsetof(struct {s}, {f}));'
              for s, f in OFFSETS]
    lines += [f'printf("ioctl {name} %lu\\n", (unsigned long){name});' for name in IOCTLS]
    source = ("#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\n"
              "int main(void) {\n" + "\n".join(lines) + "\nreturn 0; }\n")
    tmp = tmp_path_factory.mktemp("kvmh")
    (tmp / "h.c").write_text(source)
    subprocess.run(["gcc", "-o", str(tmp / "h"), str(tmp / "h.c")], check=True)
    out = subprocess.run([str(tmp / "h")], check=True, capture_output=True, text=True).stdout
    return {f"{kind} {name}": int(value) for kind, name, value in
            (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_sizes_match_the_kernel(header_values, name):
    assert ctypes.sizeof(getattr(b, name)) == header_values[f"sizeof {name}"]


@pytest.mark.parametrize("struct,field", OFFSETS)
def test_field_offsets_match_the_kernel(header_values, struct, field):
    assert getattr(getattr(b, struct), field).offset == header_values[f"offsetof {struct}.{field}"]


@pytest.mark.parametrize("name", IOCTLS)
def test_ioctl_numbers_match_the_kernel(header_values, name):
    assert getattr(io, name) == header_values[f"ioctl {name}"]


def test_pinned_ioctl_numbers():
    assert io.KVM_CREATE_VM == 0xAE01
    assert io.KVM_SET_SREGS == 0x4138AE84
    assert io.KVM_RUN == 0xAE80
    assert io.KVM_SET_SIGNAL_MASK == 0x4004AE8B
