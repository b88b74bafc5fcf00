"""What the machine reports to Python: events, the actions handlers answer with,
and the handler protocol.

The machine reports; it does not decide (gVisor's ring0 knows nothing of system
calls). Handlers (the Linux personality, the sandbox, tests) decide.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from .x86 import PFError, Vector

if TYPE_CHECKING:
    from .cpu import Cpu


@dataclass(frozen=True, slots=True)
class SyscallEvent:
    """``syscall`` at CPL3: RAX and the six argument registers of the Linux ABI."""

    number: int
    args: tuple[int, int, int, int, int, int]
    rip: int          # the instruction after the ``syscall``


@dataclass(frozen=True, slots=True)
class PageFaultEvent:
    """#PF at CPL3: the faulting address (CR2), the error code, the faulting RIP."""

    address: int
    error: PFError
    rip: int

    @property
    def vector(self) -> Vector:
        return Vector.PF


@dataclass(frozen=True, slots=True)
class ExceptionEvent:
    """Any other exception at CPL3, by vector; ``error_code`` when the CPU pushed one."""

    vector: Vector
    error_code: int | None
    rip: int

    @property
    def name(self) -> str:
        return self.vector.mnemonic


@dataclass(frozen=True, slots=True)
class HaltEvent:
    """``hlt`` reached the VMM (KVM_EXIT_HLT)."""


@dataclass(frozen=True, slots=True)
class ShutdownEvent:
    """The vCPU shut down (a triple fault)."""


Event = Union[SyscallEvent, PageFaultEvent, ExceptionEvent, HaltEvent, ShutdownEvent]


class Action(enum.Enum):
    """How to go on after a fault or exception."""

    RETRY = "retry"   # run the faulting instruction again (the handler fixed the cause)
    SKIP = "skip"     # continue after the faulting instruction
    RESUME = "resume" # continue at the (possibly changed) registers as they are


class StopReason(enum.Enum):
    HANDLER = "handler"   # a handler returned Stop
    BUDGET = "budget"     # the time budget ran out
    REQUEST = "request"   # Machine.stop() / Cpu.stop() from another thread


@dataclass(frozen=True)
class Stop:
    """Ends ``run()``; returned to its caller. ``value`` is the handler's to choose."""

    reason: StopReason = StopReason.HANDLER
    value: Any = None
    event: Any = field(default=None, compare=False)


class Handler:
    """Event handlers; override what you handle. Defaults: system calls get -ENOSYS,
    everything else stops the run with the event as the value."""

    ENOSYS = 38

    def on_syscall(self, cpu: "Cpu", event: SyscallEvent) -> int | Stop | None:
        """Return the value for RAX (None: leave RAX as set) or a Stop."""
        return -self.ENOSYS

    def on_page_fault(self, cpu: "Cpu", event: PageFaultEvent) -> Action | Stop:
        return Stop(value=event, event=event)

    def on_exception(self, cpu: "Cpu", event: ExceptionEvent) -> Action | Stop:
        return Stop(value=event, event=event)

    def on_halt(self, cpu: "Cpu", event: HaltEvent) -> Action | Stop:
        return Stop(value=event, event=event)

    def on_shutdown(self, cpu: "Cpu", event: ShutdownEvent) -> Action | Stop:
        return Stop(value=event, event=event)

    def on_interrupt(self, cpu: "Cpu") -> Stop | None:
        """KVM_RUN was interrupted by a host signal while user code ran; the
        registers are the user's. A place to deliver signals; None runs on."""
        return None
