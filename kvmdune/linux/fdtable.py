"""The guest's file-descriptor table: guest numbers mapped to host descriptors
opened for the guest, and the caller's descriptors the guest starts with.

The VMM's own descriptors (/dev/kvm, the VM and vCPU, logs, Python's own) are
never in the table, so no number the guest tries can reach them. The caller's
descriptors are captured when the VMM starts, before it opens anything
(``capture_caller_fds``): each moves to a host number out of the way and keeps
its own number in the guest, and a closed 0, 1 or 2 stays closed for the guest
(the VMM plugs the hole with /dev/null so its own opens never land there).
"""

from __future__ import annotations

import fcntl
import os
import resource
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ._fastpath import FdStore
from .abi import Errno

#: Host descriptors the table creates are at least this, away from 0-2 and from
#: the numbers a guest expects to be its own.
HOST_FD_FLOOR = 100
#: RLIMIT_NOFILE the guest sees by default (Linux's usual soft limit).
DEFAULT_MAX_FDS = 1024
#: The largest RLIMIT_NOFILE the table enforces (Linux's default fs.nr_open).
NR_OPEN = 1 << 20
#: Descriptors the VMM needs beside the guest's (KVM, memory, logs, the fast path,
#: per-call holders): it raises its own RLIMIT_NOFILE by this much over the guest's
#: where it may, so they never count against the guest's limit.
VMM_FD_RESERVE = 256
STANDARD_STREAMS = (0, 1, 2)
#: ``FdTable.install``'s ``io`` for a descriptor whose reads and writes the VMM
#: answers itself (a live /proc file): the fast path hands them back.
VMM_IO = 0


class GuestFd:
    """One guest descriptor as the table holds it: its host descriptor and its
    close-on-exec flag (setting ``cloexec`` changes the table)."""

    __slots__ = ("_store", "fd", "host", "_cloexec")

    def __init__(self, store, fd: int, host: int, cloexec: bool) -> None:
        self._store, self.fd, self.host, self._cloexec = store, fd, host, cloexec

    @property
    def cloexec(self) -> bool:
        return self._cloexec

    @cloexec.setter
    def cloexec(self, value: bool) -> None:
        self._cloexec = bool(value)
        self._store.set_cloexec(self.fd, self._cloexec)


class Entries(Mapping):
    """The table's entries as a read-only mapping of guest number -> GuestFd."""

    def __init__(self, store) -> None:
        self._store = store

    def __getitem__(self, fd: int) -> GuestFd:
        found = self._store.get(fd) if isinstance(fd, int) else None
        if found is None:
            raise KeyError(fd)
        host, cloexec, _io = found
        return GuestFd(self._store, fd, host, cloexec)

    def __contains__(self, fd: object) -> bool:
        return isinstance(fd, int) and self._store.get(fd) is not None

    def __iter__(self) -> Iterator[int]:
        return iter(self._store.numbers())

    def __len__(self) -> int:
        return len(self._store.numbers())


class FdTable:
    """Guest fd -> host fd. All host descriptors here are close-on-exec on the host
    (the VMM never execs host programs for the guest).

    The table itself is native (``_fastpath.FdStore``): the fast path's server
    reads it and serves close, dup and opens on it too (native/fdstore.h), so this
    class keeps no copy of it. Every change is made holding the process's lock."""

    def __init__(self, max_fds: int = DEFAULT_MAX_FDS) -> None:
        self.store = FdStore(max_fds)
        self.entries = Entries(self.store)
        #: Called after a descriptor leaves the table, before its host number may be
        #: closed and reused: waits until no serve of the fast path still uses it.
        self.quiesce: Callable[[], None] | None = None
        #: The VMM's own descriptors of files the guest has open, kept open past
        #: their use (``close_own_copy``), with each file's identity.
        self.parked: list[tuple[tuple[int, int], int]] = []

    @property
    def max_fds(self) -> int:
        return self.store.max_fds

    @max_fds.setter
    def max_fds(self, value: int) -> None:
        self.store.max_fds = value

    @classmethod
    def with_standard_streams(cls, max_fds: int = DEFAULT_MAX_FDS) -> "FdTable":
        table = cls(max_fds)
        for fd in (0, 1, 2):
            try:
                table.store.install(fd, _dup_high(fd), False)
            except OSError:
                pass   # closed in the VMM: closed for the guest too
        return table

    def host(self, fd: int) -> int | None:
        found = self.store.get(fd)
        return found[0] if found is not None else None

    @classmethod
    def from_caller(cls, caller: "CallerFds", numbers: Iterable[int],
                    max_fds: int = DEFAULT_MAX_FDS) -> "FdTable":
        """The caller's descriptors ``numbers`` (those of them that were open) under
        their own numbers; the table takes them from ``caller``."""
        table = cls(max_fds)
        for fd in sorted(numbers):
            host = caller.take(fd)
            if host is not None:
                table.store.install(fd, host, False)
        return table

    def lowest_free(self, minimum: int = 0) -> int | None:
        return self.store.lowest_free(max(minimum, 0))

    def install(self, host_fd: int, cloexec: bool = False, minimum: int = 0,
                io: int | None = None) -> int:
        """Adopt a host descriptor (moved above HOST_FD_FLOOR); returns the guest
        number, or -EMFILE (closing the host descriptor). ``io``: how the fast path
        serves its reads and writes (VMM_IO: the VMM answers them itself; None: found
        out from the file)."""
        fd = self.lowest_free(minimum)
        if fd is None:
            os.close(host_fd)
            return -Errno.EMFILE
        if host_fd < HOST_FD_FLOOR:
            try:
                high = _dup_high(host_fd)
            except OSError:      # the VMM is at its own limit: any number will do
                high = None
                os.set_inheritable(host_fd, False)
            if high is not None:
                os.close(host_fd)
                host_fd = high
        else:
            os.set_inheritable(host_fd, False)
        self.store.install(fd, host_fd, cloexec, io)
        return fd

    def close(self, fd: int) -> int:
        host = self.store.remove(fd)
        if host is None:
            return -Errno.EBADF
        if self.quiesce is not None:
            self.quiesce()        # no serve still holds its host number
        if self.store.close_later(host):
            return 0
        try:
            os.close(host)
        except OSError as exc:
            return -(exc.errno or Errno.EIO)
        self._close_unneeded_parked()
        return 0

    def hold(self, host_fds: Iterable[int]) -> None:
        """Keep these host descriptors open until ``release``: a host call is using
        them without the process's lock (a blocked read on another thread). Closing
        one meanwhile waits until they are over, as Linux's file references make a
        close wait, so the number is not reused under the call."""
        for host in host_fds:
            self.store.hold(host)

    def release(self, host_fds: Iterable[int]) -> None:
        for host in host_fds:
            if self.store.release(host):
                try:
                    os.close(host)
                except OSError:
                    pass

    def dup(self, fd: int, minimum: int = 0, cloexec: bool = False) -> int:
        found = self.store.get(fd)
        if found is None:
            return -Errno.EBADF
        if minimum >= self.max_fds:
            return -Errno.EINVAL
        host, _cloexec, io = found
        return self.install(_dup_high(host), cloexec, minimum, io)

    def dup2(self, old: int, new: int, cloexec: bool = False) -> int:
        found = self.store.get(old)
        if found is None:
            return -Errno.EBADF
        if not 0 <= new < self.max_fds:
            return -Errno.EBADF
        if old == new:
            return new
        host, _cloexec, io = found
        host = _dup_high(host)
        if new in self.entries:
            self.close(new)
        self.store.install(new, host, cloexec, io)
        return new

    def close_own_copy(self, host: int) -> None:
        """Close a descriptor the VMM opened for its own use (a shared mapping's
        copy of its file), unless the guest has the same file open: Linux drops a
        process's POSIX record locks on a file at any close of a descriptor of it,
        and the guest's locks are the VMM process's, so that close would drop
        locks the guest holds (SQLite's on a database it maps). Such a descriptor
        is kept until the guest has no descriptor of the file left (by then the
        guest's own close has dropped its locks, as on Linux)."""
        identity = _file_identity(host)
        self._close_unneeded_parked()
        if identity is not None and identity in self._open_files():
            self.parked.append((identity, host))
        else:
            os.close(host)

    def _open_files(self) -> set[tuple[int, int]]:
        """The identities of the files the guest's descriptors hold."""
        return {identity for entry in self.entries.values()
                if (identity := _file_identity(entry.host)) is not None}

    def _close_unneeded_parked(self) -> None:
        if not self.parked:
            return
        open_files = self._open_files()
        still = []
        for identity, host in self.parked:
            if identity in open_files:
                still.append((identity, host))
            else:
                os.close(host)
        self.parked = still

    def close_on_exec(self) -> None:
        for fd in [fd for fd, entry in self.entries.items() if entry.cloexec]:
            self.close(fd)

    def close_all(self) -> None:
        for fd in list(self.entries):
            self.close(fd)


@dataclass
class CallerFds:
    """The descriptors the VMM's caller left open, as found at start: each number
    with the host descriptor now holding it (close-on-exec, above HOST_FD_FLOOR),
    and the caller's RLIMIT_NOFILE (the VMM raises its own)."""

    held: dict[int, int] = field(default_factory=dict)
    nofile: tuple[int, int] = (DEFAULT_MAX_FDS, DEFAULT_MAX_FDS)

    def take(self, fd: int) -> int | None:
        """The host descriptor for caller's ``fd``, now the taker's; None if closed."""
        return self.held.pop(fd, None)

    def close(self) -> None:
        """Release what nobody took (so the guest's close of its copy is the last)."""
        for host in self.held.values():
            os.close(host)
        self.held.clear()


def capture_caller_fds(detach: bool = False) -> CallerFds:
    """The caller's open descriptors and RLIMIT_NOFILE; call it before the VMM opens
    anything. Closed 0-2 are plugged with /dev/null in the VMM (and stay closed for
    the guest). ``detach`` also closes the originals above 2, so that the guest
    closing its copy is the last close (a pipe's reader sees EOF): only for a
    process that is nothing but the VMM, such as the command."""
    nofile = _rlimit_values(resource.getrlimit(resource.RLIMIT_NOFILE))
    reserve_vmm_fds(nofile[0])
    caller = CallerFds(nofile=nofile)
    for fd in _open_descriptors(nofile[0]):
        caller.held[fd] = _dup_high(fd)
        if detach and fd not in STANDARD_STREAMS:
            os.close(fd)
    for fd in STANDARD_STREAMS:
        if fd not in caller.held:
            _plug(fd)
    occupy_low_numbers()
    return caller


def occupy_low_numbers() -> None:
    """Fill every free host number from 3 up to HOST_FD_FLOOR with /dev/null, so
    that the descriptors the VMM opens for the guest land at the floor or above at
    once. Moving a new one up (a duplicate, then a close of the original) would
    drop the guest's POSIX record locks on that file: Linux releases a process's
    locks on a file at ANY close of a descriptor of it (fcntl(2)), and the guest's
    locks are the VMM process's. Left alone where the descriptor limit is too low
    to spare the numbers."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < HOST_FD_FLOOR + VMM_FD_RESERVE:
        return
    placeholder = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    if placeholder >= HOST_FD_FLOOR:
        os.close(placeholder)         # nothing free below the floor
        return
    while (fd := fcntl.fcntl(placeholder, fcntl.F_DUPFD_CLOEXEC, len(STANDARD_STREAMS))) \
            < HOST_FD_FLOOR:
        pass
    os.close(fd)


def reserve_vmm_fds(guest_limit: int) -> None:
    """Raise the VMM's own RLIMIT_NOFILE so that its descriptors fit beside
    ``guest_limit`` of the guest's: the soft limit to the hard one, and the hard one
    too where the VMM may (root). Falls short silently where it may not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(guest_limit, NR_OPEN) + VMM_FD_RESERVE
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            pass
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _rlimit_values(limits: tuple[int, int]) -> tuple[int, int]:
    """An rlimit pair as Linux reports it to a guest (RLIM_INFINITY is all ones)."""
    return tuple(value & 0xFFFF_FFFF_FFFF_FFFF for value in limits)


def _open_descriptors(limit: int) -> list[int]:
    """This process's open descriptors, lowest first (the listing's own excluded)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:       # no /proc: ask each number up to the limit
        names = [str(fd) for fd in range(min(limit, 1 << 16))]
    return sorted(fd for fd in map(int, names) if _is_open(fd))


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def _file_identity(host: int) -> tuple[int, int] | None:
    """A host descriptor's file as (device, inode); None if it cannot be asked."""
    try:
        status = os.fstat(host)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _plug(fd: int) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


def _dup_high(fd: int) -> int:
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HOST_FD_FLOOR)
    except OSError as exc:   # EINVAL: the VMM's own limit is below the floor
        if exc.errno != Errno.EINVAL:
            raise
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, len(STANDARD_STREAMS))
