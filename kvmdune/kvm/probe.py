"""Which virtualization platform backs /dev/kvm: hardware VT-x, hardware SVM, or software.

Decided from facts the kernel publishes (CPU flags, loaded modules), not hostnames.
Software KVM here means kvm_pvm (PLATFORM.md): CPL0 guest code is emulated.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass


class PlatformKind(str, enum.Enum):
    VMX = "vmx"
    SVM = "svm"
    SOFTWARE = "software"


@dataclass(frozen=True)
class Platform:
    """Which KVM implementation backs /dev/kvm here, and how it was recognised."""

    kind: PlatformKind
    module: str | None  # the loaded KVM vendor module, when known
    detail: str

    @property
    def restricting_changes_need_host_invalidation(self) -> bool:
        """True where the guest's shadow tables ignore host writes (software KVM)."""
        return self.kind is PlatformKind.SOFTWARE

    @property
    def guest_reads_host_tsc(self) -> bool:
        """True where guest user code's rdtsc reads the host's counter unchanged:
        software KVM runs it as host user code (hardware KVM offsets the guest's)."""
        return self.kind is PlatformKind.SOFTWARE


_VENDOR_MODULES = (("kvm_pvm", PlatformKind.SOFTWARE), ("kvm_intel", PlatformKind.VMX),
                   ("kvm_amd", PlatformKind.SVM))


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def probe_platform(sys_module: str = "/sys/module") -> Platform:
    """Classify the KVM implementation on this host."""
    loaded = [(name, kind) for name, kind in _VENDOR_MODULES
              if os.path.isdir(os.path.join(sys_module, name))]
    flags = _cpu_flags()
    if any(name == "kvm_pvm" for name, _ in loaded) or not ({"vmx", "svm"} & flags):
        return Platform(PlatformKind.SOFTWARE, "kvm_pvm" if loaded else None,
                        "software virtualization (no vmx/svm CPU flag): guest CPL0 code "
                        "is emulated, page-table restrictions need host invalidation")
    if "vmx" in flags:
        return Platform(PlatformKind.VMX, "kvm_intel", "Intel VT-x")
    return Platform(PlatformKind.SVM, "kvm_amd", "AMD SVM")
