"""The /dev/kvm objects and their errors, on the real device."""

from __future__ import annotations

import os
import pwd

import pytest

from kvmdune.kvm import (KVM_API_VERSION, REQUIRED_CAPS, Cap, Kvm, KvmError, KvmUnavailable,
                         PlatformKind, probe_platform)
from kvmdune.kvm.system import open_kvm


@pytest.mark.kvm
def test_api_version_and_capabilities():
    with Kvm() as kvm:
        assert kvm.get_api_version() == KVM_API_VERSION
        for cap in REQUIRED_CAPS:
            assert kvm.check_extension(cap)
        assert kvm.get_vcpu_mmap_size() >= 4096
        assert kvm.get_supported_cpuid().nent > 0
    assert kvm.closed


@pytest.mark.kvm
def test_vm_and_vcpu_close_their_descriptors():
    before = len(os.listdir("/proc/self/fd"))
    with Kvm() as kvm, kvm.create_vm() as vm, vm.create_vcpu() as vcpu:
        assert vcpu.get_regs().rip == 0xFFF0   # the architectural reset vector
        # The positive control: the three descriptors are open while in use.
        assert len(os.listdir("/proc/self/fd")) >= before + 3
    assert len(os.listdir("/proc/self/fd")) == before


def test_missing_device_says_what_to_do(tmp_path):
    with pytest.raises(KvmUnavailable) as info:
        open_kvm(str(tmp_path / "no-kvm"))
    assert "does not exist" in str(info.value) and "hint:" in str(info.value)


@pytest.mark.kvm
def test_permission_denied_says_how_to_get_access():
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    nobody = pwd.getpwnam("nobody").pw_uid
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            os.setgroups([])
            os.setuid(nobody)
            open_kvm()
            message = "opened"
        except KvmUnavailable as exc:
            message = str(exc)
        os.write(write_fd, message.encode())
        os._exit(0)
    os.close(write_fd)
    message = os.read(read_fd, 4096).decode()
    os.waitpid(pid, 0)
    os.close(read_fd)
    if os.stat("/dev/kvm").st_mode & 0o006:
        pytest.skip("/dev/kvm is world-accessible here")
    assert "no permission" in message and "hint:" in message


@pytest.mark.kvm
def test_errors_name_the_ioctl():
    with Kvm() as kvm, kvm.create_vm() as vm:
        with pytest.raises(KvmError) as info:
            vm.set_user_memory_region(0, 0, 4096, 1)  # a host address that is not page-aligned
        assert info.value.ioctl == "KVM_SET_USER_MEMORY_REGION"
        assert info.value.errno is not None


def _cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_platform_probe_on_this_machine():
    """The probe agrees with what /sys/module and /proc/cpuinfo say here (PLATFORM.md:
    kvm_pvm, or no vmx/svm flag, is software KVM)."""
    platform = probe_platform()
    flags = _cpu_flags()
    if os.path.isdir("/sys/module/kvm_pvm") or not {"vmx", "svm"} & flags:
        assert platform.kind is PlatformKind.SOFTWARE
        assert platform.restricting_changes_need_host_invalidation
    else:
        assert platform.kind is (PlatformKind.VMX if "vmx" in flags else PlatformKind.SVM)
        assert not platform.restricting_changes_need_host_invalidation


def test_platform_probe_recognises_the_software_module(tmp_path):
    """kvm_pvm loaded means software KVM whatever the CPU flags say."""
    (tmp_path / "kvm_pvm").mkdir()
    platform = probe_platform(str(tmp_path))
    assert platform.kind is PlatformKind.SOFTWARE and platform.module == "kvm_pvm"
