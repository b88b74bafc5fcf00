"""kvmdune.kvm: the /dev/kvm API as Python objects, and the platform probe."""

from .constants import (KVM_API_VERSION, REQUIRED_CAPS, Cap, DirtyLogProtect, ExitReason,
                        MemFlags, SyncRegs)
from .errors import (KvmApiVersionError, KvmError, KvmInterrupted,
                     KvmMissingCapability, KvmUnavailable)
from .exits import (FailEntryExit, HltExit, InternalErrorExit, IoExit, MmioExit,
                    ShutdownExit, SystemEventExit, UnknownExit, VcpuExit)
from .probe import Platform, PlatformKind, probe_platform
from .system import Kvm, Vcpu, Vm

__all__ = [
    "KVM_API_VERSION", "REQUIRED_CAPS", "Cap", "DirtyLogProtect", "ExitReason", "MemFlags",
    "SyncRegs",
    "KvmApiVersionError", "KvmError", "KvmInterrupted", "KvmMissingCapability",
    "KvmUnavailable", "FailEntryExit", "HltExit", "InternalErrorExit", "IoExit",
    "MmioExit", "ShutdownExit", "SystemEventExit", "UnknownExit", "VcpuExit",
    "Platform", "PlatformKind", "probe_platform", "Kvm", "Vcpu", "Vm",
]
