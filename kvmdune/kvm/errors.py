"""The KVM layer's exceptions: what failed (the ioctl, the errno) and what to do."""

from __future__ import annotations

import errno as _errno
import os


class KvmError(Exception):
    """An operation on /dev/kvm, a VM or a vCPU failed.

    ``ioctl`` names the request (or the operation), ``errno`` is the kernel's error
    number, ``advice`` says what a user can do about it (may be empty).
    """

    def __init__(self, message: str, *, ioctl: str | None = None,
                 errno: int | None = None, advice: str = "") -> None:
        self.ioctl = ioctl
        self.errno = errno
        self.advice = advice
        parts = [message]
        if ioctl:
            parts.append(f"[{ioctl}]")
        if errno is not None:
            parts.append(f"({_errno.errorcode.get(errno, errno)}: {os.strerror(errno)})")
        self.summary = " ".join(parts)
        text = self.summary
        if advice:
            text += f"\n  hint: {advice}"
        super().__init__(text)

    def one_line(self) -> str:
        """What failed and what to do, on one line (for a command's error message)."""
        return f"{self.summary}: {self.advice}" if self.advice else self.summary

    @classmethod
    def from_oserror(cls, ioctl: str, exc: OSError, advice: str = "") -> "KvmError":
        return cls(f"{ioctl} failed", ioctl=ioctl, errno=exc.errno, advice=advice)


class KvmUnavailable(KvmError):
    """/dev/kvm is missing or cannot be opened."""


class KvmApiVersionError(KvmError):
    """/dev/kvm speaks another KVM API version than the one kvmdune was written for."""


class KvmMissingCapability(KvmError):
    """KVM lacks a capability kvmdune needs."""


class KvmInterrupted(KvmError):
    """KVM_RUN returned EINTR: a kick from another thread or a signal."""
