"""The extension point through which a layer above gives a process privileged
features (``kvmdune.dune``: the Dune API), without this layer importing it.

The Linux layer reserves a range of system-call numbers for hypercalls (far above
any Linux call, so natively they fail with ENOSYS) and hands each of them to the
process's ``Privileged`` object, created on the first hypercall by the factory the
run was given (``RunOptions.privileged``). Without a factory a hypercall is ENOSYS,
as on Linux.

Once it exists, the object also sees the process's events before the Linux layer
handles them (``Process`` calls the ``on_*`` hooks first): each hook answers how the
event was handled, or ``None`` when it does not claim it, and Linux's own handling
follows (demand paging, signals, the system-call table). At execve the object is
closed and dropped (the new program starts without privileged features); a forked
child keeps a copy of its parent's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Final

from .abi import Errno

if TYPE_CHECKING:
    from ..machine import Action, Cpu, ExceptionEvent, PageFaultEvent, Stop, SyscallEvent

#: KVMDUNE_HYPERCALL_BASE and _COUNT (kvmdune/dune/include/kvmdune/hypercall.h).
HYPERCALL_BASE: Final = 0x00D0_0000
HYPERCALL_COUNT: Final = 64
HYPERCALLS: Final = range(HYPERCALL_BASE, HYPERCALL_BASE + HYPERCALL_COUNT)


class Privileged:
    """What a process with privileged features answers. The defaults are Linux's."""

    def hypercall(self, cpu, op: int, args: tuple[int, ...]):
        """The result of hypercall ``op`` (-errno on failure), None when the
        registers were set directly, or a Stop."""
        return -Errno.ENOSYS

    def on_syscall(self, cpu: "Cpu", event: "SyscallEvent") -> "Action | Stop | None":
        """Any ``syscall``, hypercall numbers included, before the Linux layer sees
        it: a Stop, an Action (claimed: the registers are set), or None."""
        return None

    def on_page_fault(self, cpu: "Cpu", event: "PageFaultEvent") -> "Action | Stop | None":
        """A page fault, before demand paging: how it was handled, or None."""
        return None

    def on_exception(self, cpu: "Cpu", event: "ExceptionEvent") -> "Action | Stop | None":
        """An exception (not #PF), before it becomes a signal: how, or None."""
        return None

    def on_signal(self, cpu: "Cpu", signo: int) -> "Action | Stop | None":
        """A signal about to be delivered (taken off the pending set, not blocked),
        before its Linux disposition is looked at: how it was handled (it may be
        put back on the pending set to wait), or None."""
        return None

    def thread_ended(self, cpu: "Cpu") -> None:
        """A guest thread ended; its vCPU goes back to the pool (a later thread may
        get it): forget what belonged to the thread."""

    def native_counts(self) -> dict[str, int]:
        """Events these features handled without Python, by what was done (for
        ``--syscall-stats``)."""
        return {}

    def close(self) -> None:
        """The process leaves the program that had these features (execve, exit)."""


#: Makes the Privileged object of a process on its first hypercall.
PrivilegedFactory = Callable[[object], Privileged]
