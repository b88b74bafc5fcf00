"""VM exits as values (kvm-ioctls' ``VcpuExit``): one frozen dataclass per KVM_EXIT_*.

``decode_exit`` turns the kvm_run page into one of these; an exit reason kvmdune
does not know becomes ``UnknownExit`` rather than an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import bindings as b
from .constants import ExitReason, IoDirection


@dataclass(frozen=True, slots=True)
class IoExit:
    """KVM_EXIT_IO: an in/out instruction. kvmdune's trampoline signals with ``out``."""

    port: int
    direction: IoDirection
    size: int
    count: int


@dataclass(frozen=True, slots=True)
class HltExit:
    """KVM_EXIT_HLT: ``hlt`` executed at CPL0."""


@dataclass(frozen=True, slots=True)
class ShutdownExit:
    """KVM_EXIT_SHUTDOWN: a triple fault."""


@dataclass(frozen=True, slots=True)
class MmioExit:
    """KVM_EXIT_MMIO: an access to guest-physical memory no slot backs."""

    phys_addr: int
    length: int
    is_write: bool


@dataclass(frozen=True, slots=True)
class InternalErrorExit:
    """KVM_EXIT_INTERNAL_ERROR (e.g. an instruction KVM could not emulate)."""

    suberror: int
    data: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FailEntryExit:
    """KVM_EXIT_FAIL_ENTRY: the hardware refused to enter the guest."""

    hardware_entry_failure_reason: int


@dataclass(frozen=True, slots=True)
class SystemEventExit:
    """KVM_EXIT_SYSTEM_EVENT (shutdown, reset, crash requests)."""

    type: int


@dataclass(frozen=True, slots=True)
class UnknownExit:
    """Any exit reason this module does not decode."""

    reason: int


VcpuExit = (IoExit | HltExit | ShutdownExit | MmioExit | InternalErrorExit
            | FailEntryExit | SystemEventExit | UnknownExit)

_HLT, _SHUTDOWN = HltExit(), ShutdownExit()
_IO = int(ExitReason.IO)
#: IoDirection by its value, without an enum lookup per exit.
_DIRECTIONS = {int(direction): direction for direction in IoDirection}


def decode_exit(run: b.kvm_run) -> VcpuExit:
    """The exit KVM reported in ``run`` after KVM_RUN returned."""
    reason = run.exit_reason
    if reason == _IO:
        io = run.exit.io
        direction = io.direction
        return IoExit(io.port, _DIRECTIONS.get(direction) or IoDirection(direction), io.size,
                      io.count)
    if reason == ExitReason.HLT:
        return _HLT
    if reason == ExitReason.SHUTDOWN:
        return _SHUTDOWN
    if reason == ExitReason.MMIO:
        mmio = run.exit.mmio
        return MmioExit(mmio.phys_addr, mmio.len, bool(mmio.is_write))
    if reason == ExitReason.INTERNAL_ERROR:
        internal = run.exit.internal
        count = min(internal.ndata, len(internal.data))
        return InternalErrorExit(internal.suberror, tuple(internal.data[:count]))
    if reason == ExitReason.FAIL_ENTRY:
        return FailEntryExit(run.exit.fail_entry.hardware_entry_failure_reason)
    if reason == ExitReason.SYSTEM_EVENT:
        return SystemEventExit(run.exit.system_event.type)
    return UnknownExit(reason)
