"""kvmdune.machine: a VM with its boot state, the ring-0 trampoline, vCPUs, and the
run loop that turns exits into events for Python handlers."""

from .cpu import Cpu, MachineError, RegisterSnapshot
from .events import (Action, Event, ExceptionEvent, HaltEvent, Handler, PageFaultEvent,
                     ShutdownEvent, Stop, StopReason, SyscallEvent)
from .machine import Invalidation, Machine
from .x86 import PFError, Vector

__all__ = [
    "Cpu", "MachineError", "RegisterSnapshot", "Action", "Event", "ExceptionEvent",
    "HaltEvent", "Handler", "PageFaultEvent", "ShutdownEvent", "Stop", "StopReason",
    "SyscallEvent", "Invalidation", "Machine", "PFError", "Vector",
]
