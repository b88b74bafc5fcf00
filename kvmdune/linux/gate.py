"""The policy interface: what a policy layer above (the sandbox) plugs into the Linux
personality. ``linux`` never imports the policy engine; it asks a ``Gate``."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..machine import Stop, SyscallEvent
    from .process import Process


class RuleKind(enum.Enum):
    ALLOW = "allow"     # allowed whatever the arguments
    DENY = "deny"       # refused with ``errno`` whatever the arguments
    BENEATH = "beneath"  # allowed when its path resolves beneath one of ``roots``


@dataclass(frozen=True)
class CallRule:
    """A gate's decision on a system call by its number (and, for BENEATH, where its
    path leads), for the layers below to apply without asking the gate (the fast
    path). BENEATH promises only the allowing half: a path that does not resolve
    beneath a root (or at all) still goes to the gate."""

    kind: RuleKind
    errno: int = 0
    roots: tuple[str, ...] = ()


ALLOW_RULE = CallRule(RuleKind.ALLOW)


class Gate:
    """A verdict on each system call before it is served, and on each descriptor the
    host opened for the guest. None lets it through; a negative errno is returned to
    the guest instead; a Stop ends the process."""

    def rules(self) -> dict[int, CallRule]:
        """The verdicts that a call's number alone decides, compiled for the fast
        path; numbers missing here (the default: all) the gate must check itself.
        A rule must never differ from what ``check`` answers for any arguments."""
        return {}

    def check(self, proc: "Process", spec, event: "SyscallEvent") -> "int | Stop | None":
        return None

    def check_opened(self, proc: "Process", host_fd: int) -> int | None:
        return None

    def guest_may_write(self, path: str) -> bool:
        """Whether the guest may create or change files at or beneath ``path`` (the
        VMM keeps nothing it trusts where it may: sitepatch's analysis cache)."""
        return True

    def check_passed(self, proc: "Process", host_fd: int) -> int | None:
        """A descriptor the caller hands the guest at start (``--pass-fd``): checked
        as if the guest had just opened it."""
        return None
