"""The guest's file-descriptor table: guest numbers mapped to host descriptors
opened for the guest.

The VMM's own descriptors (/dev/kvm, the VM and vCPU, logs, Python's own) are
never in the table, so no number the guest tries can reach them. Guest 0, 1 and 2
start as duplicates of the VMM's standard streams, so the guest closing or
replacing its stdout never touches the VMM's.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

from .abi import Errno

#: Host descriptors the table creates are at least this, away from 0-2 and from
#: the numbers a guest expects to be its own.
HOST_FD_FLOOR = 100
#: RLIMIT_NOFILE the guest sees by default (Linux's usual soft limit).
DEFAULT_MAX_FDS = 1024


@dataclass
class GuestFd:
    host: int
    cloexec: bool = False


class FdTable:
    """Guest fd -> host fd. All host descriptors here are close-on-exec on the host
    (the VMM never execs host programs for the guest)."""

    def __init__(self, max_fds: int = DEFAULT_MAX_FDS) -> None:
        self.entries: dict[int, GuestFd] = {}
        self.max_fds = max_fds
        #: Told of every change (``fd_installed(fd, host)``, ``fd_removed(fd)``): the
        #: fast path keeps a copy of the table.
        self.listener = None

    def _set(self, fd: int, entry: GuestFd) -> None:
        self.entries[fd] = entry
        if self.listener is not None:
            self.listener.fd_installed(fd, entry.host)

    @classmethod
    def with_standard_streams(cls, max_fds: int = DEFAULT_MAX_FDS) -> "FdTable":
        table = cls(max_fds)
        for fd in (0, 1, 2):
            try:
                table.entries[fd] = GuestFd(_dup_high(fd))
            except OSError:
                pass   # closed in the VMM: closed for the guest too
        return table

    def host(self, fd: int) -> int | None:
        entry = self.entries.get(fd)
        return entry.host if entry is not None else None

    def lowest_free(self, minimum: int = 0) -> int | None:
        fd = max(minimum, 0)
        while fd in self.entries:
            fd += 1
        return fd if fd < self.max_fds else None

    def install(self, host_fd: int, cloexec: bool = False, minimum: int = 0) -> int:
        """Adopt a host descriptor (moved above HOST_FD_FLOOR); returns the guest
        number, or -EMFILE (closing the host descriptor)."""
        fd = self.lowest_free(minimum)
        if fd is None:
            os.close(host_fd)
            return -Errno.EMFILE
        if host_fd < HOST_FD_FLOOR:
            high = _dup_high(host_fd)
            os.close(host_fd)
            host_fd = high
        self._set(fd, GuestFd(host_fd, cloexec))
        return fd

    def close(self, fd: int) -> int:
        entry = self.entries.pop(fd, None)
        if entry is None:
            return -Errno.EBADF
        if self.listener is not None:
            self.listener.fd_removed(fd)
        try:
            os.close(entry.host)
        except OSError as exc:
            return -(exc.errno or Errno.EIO)
        return 0

    def dup(self, fd: int, minimum: int = 0, cloexec: bool = False) -> int:
        entry = self.entries.get(fd)
        if entry is None:
            return -Errno.EBADF
        if minimum >= self.max_fds:
            return -Errno.EINVAL
        return self.install(_dup_high(entry.host), cloexec, minimum)

    def dup2(self, old: int, new: int, cloexec: bool = False) -> int:
        entry = self.entries.get(old)
        if entry is None:
            return -Errno.EBADF
        if not 0 <= new < self.max_fds:
            return -Errno.EBADF
        if old == new:
            return new
        host = _dup_high(entry.host)
        if new in self.entries:
            self.close(new)
        self._set(new, GuestFd(host, cloexec))
        return new

    def close_on_exec(self) -> None:
        for fd in [fd for fd, entry in self.entries.items() if entry.cloexec]:
            self.close(fd)

    def close_all(self) -> None:
        for fd in list(self.entries):
            self.close(fd)


def _dup_high(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HOST_FD_FLOOR)
