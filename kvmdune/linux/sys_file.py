"""Descriptor system calls the guest's own table answers (close, dup, fcntl's fd
commands, pipes), and the path calls that need /proc rewriting."""

from __future__ import annotations

import fcntl
import os
import struct

from . import procfs
from .abi import CloseRangeFlags, Errno, FcntlCmd, IoctlRequest, c_int
from .forward import NotForwardable
from .uaccess import read_path, write_bytes

O_CLOEXEC = os.O_CLOEXEC
F_DUPFD, F_GETFD, F_SETFD, F_DUPFD_CLOEXEC = 0, 1, 2, 1030
FD_CLOEXEC = 1
#: The commands Linux takes from user space (F_CANCELLK is the kernel's own).
USER_FCNTL_COMMANDS = frozenset(int(cmd) for cmd in FcntlCmd) - {FcntlCmd.F_CANCELLK}
FIOCLEX, FIONCLEX = 0x5451, 0x5450
#: Read-only terminal queries Linux refuses (ENOTTY) on what is no terminal before it
#: looks at the argument, and a buffer that holds either answer.
TERMINAL_QUERIES = frozenset({IoctlRequest.TCGETS, IoctlRequest.TIOCGWINSZ})
_QUERY_BUFFER = bytes(64)
SOCK_CLOEXEC = 0o2000000


def sys_close(proc, cpu, fd, *_):
    """Implements close(2) on the guest's table."""
    return proc.fds.close(c_int(fd))


def sys_close_range(proc, cpu, first, last, flags, *_):
    """Implements close_range(2) (the table is this process's alone: UNSHARE is
    what it already is)."""
    first, last = first & 0xFFFF_FFFF, last & 0xFFFF_FFFF
    # As a plain int: an IntFlag's ~ keeps only the bits the flag type defines.
    known = int(CloseRangeFlags.CLOSE_RANGE_UNSHARE | CloseRangeFlags.CLOSE_RANGE_CLOEXEC)
    if flags & ~known or first > last:
        return -Errno.EINVAL
    for fd in [fd for fd in proc.fds.entries if first <= fd <= last]:
        if flags & CloseRangeFlags.CLOSE_RANGE_CLOEXEC:
            proc.fds.entries[fd].cloexec = True
        else:
            proc.fds.close(fd)
    return 0


def sys_dup(proc, cpu, fd, *_):
    """Implements dup(2)."""
    return proc.fds.dup(c_int(fd))


def sys_dup2(proc, cpu, old, new, *_):
    """Implements dup2(2)."""
    return proc.fds.dup2(c_int(old), c_int(new))


def sys_dup3(proc, cpu, old, new, flags, *_):
    """Implements dup3(2)."""
    if flags & ~O_CLOEXEC or c_int(old) == c_int(new):
        return -Errno.EINVAL
    return proc.fds.dup2(c_int(old), c_int(new), cloexec=bool(flags & O_CLOEXEC))


def sys_fcntl(proc, cpu, fd, cmd, arg, *_):
    """Implements fcntl(2): descriptor commands on the guest's table, the rest
    (status flags, locks, pipe sizes) forwarded."""
    fd = c_int(fd)
    entry = proc.fds.entries.get(fd)
    if entry is None:
        return -Errno.EBADF
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        # The lowest number is an unsigned int to Linux: a negative one is too large.
        return proc.fds.dup(fd, minimum=arg & 0xFFFF_FFFF, cloexec=cmd == F_DUPFD_CLOEXEC)
    if cmd == F_GETFD:
        return FD_CLOEXEC if entry.cloexec else 0
    if cmd == F_SETFD:
        entry.cloexec = bool(arg & FD_CLOEXEC)
        return 0
    if cmd & 0xFFFF_FFFF not in USER_FCNTL_COMMANDS:
        return -Errno.EINVAL     # Linux's answer to a command it does not know
    return proc.forward_by_name("fcntl", (fd, cmd, arg, 0, 0, 0))


def sys_ioctl(proc, cpu, fd, request, arg, *_):
    """Implements ioctl(2): FIOCLEX/FIONCLEX on the guest's table; the requests the
    table declares (terminal and FIONREAD-style) forwarded; others ENOTTY."""
    request &= 0xFFFF_FFFF
    entry = proc.fds.entries.get(c_int(fd))
    if entry is None:
        return -Errno.EBADF
    if request in (FIOCLEX, FIONCLEX):
        entry.cloexec = request == FIOCLEX
        return 0
    if request in TERMINAL_QUERIES:
        try:
            fcntl.ioctl(entry.host, request, _QUERY_BUFFER)
        except OSError as error:
            return -error.errno     # no terminal: refused whatever the argument
    try:
        return proc.forward_by_name("ioctl", (fd, request, arg, 0, 0, 0))
    except NotForwardable:
        return -Errno.ENOTTY     # a request the table does not describe


def _pipe(proc, fds_ptr: int, flags: int) -> int:
    if flags & ~(O_CLOEXEC | os.O_NONBLOCK | os.O_DIRECT):
        return -Errno.EINVAL
    read_end, write_end = os.pipe2(flags | O_CLOEXEC)
    return _install_pair(proc, (read_end, write_end), bool(flags & O_CLOEXEC), fds_ptr)


def _install_pair(proc, ends: tuple[int, int], cloexec: bool, fds_ptr: int) -> int:
    """Two new host descriptors (a pipe's or a socketpair's ends) made the guest's and
    their numbers written at ``fds_ptr``; on a fault neither stays open, as in Linux."""
    guest = [proc.fds.install(end, cloexec) for end in ends]
    if min(guest) < 0:
        for fd in guest:
            if fd >= 0:
                proc.fds.close(fd)
        return -Errno.EMFILE
    try:
        write_bytes(proc.space, fds_ptr, struct.pack("<ii", *guest))
    except Exception:
        for fd in guest:
            proc.fds.close(fd)
        raise
    return 0


def sys_pipe(proc, cpu, fds_ptr, *_):
    """Implements pipe(2)."""
    return _pipe(proc, fds_ptr, 0)


def sys_pipe2(proc, cpu, fds_ptr, flags, *_):
    """Implements pipe2(2)."""
    return _pipe(proc, fds_ptr, flags)


def sys_socketpair(proc, cpu, family, type_, protocol, fds_ptr, *_):
    """Implements socketpair(2)."""
    family, type_, protocol = c_int(family), c_int(type_), c_int(protocol)   # C ints
    try:
        import socket   # only here: the module costs milliseconds at every start

        a, b = socket.socketpair(family, type_ & ~SOCK_CLOEXEC & ~os.O_NONBLOCK, protocol)
    except OSError as exc:
        return -(exc.errno or Errno.EINVAL)
    ends = (a.detach(), b.detach())
    if type_ & os.O_NONBLOCK:
        for end in ends:
            os.set_blocking(end, False)
    return _install_pair(proc, ends, bool(type_ & SOCK_CLOEXEC), fds_ptr)


def _readlink(proc, path_ptr: int, buf: int, size: int, forward_name: str, args) -> int:
    if size <= 0 or size > 0x7FFF_FFFF:
        return -Errno.EINVAL
    target = procfs.readlink(proc, read_path(proc.space, path_ptr))
    if target is None:
        return proc.forward_by_name(forward_name, args)
    data = target[:size]
    write_bytes(proc.space, buf, data)
    return len(data)


def sys_readlink(proc, cpu, path, buf, size, *_):
    """Implements readlink(2), answering /proc/self/exe and fd/N for the guest."""
    return _readlink(proc, path, buf, size, "readlink", (path, buf, size, 0, 0, 0))


def sys_readlinkat(proc, cpu, dirfd, path, buf, size, *_):
    """Implements readlinkat(2), answering /proc/self/exe and fd/N for the guest."""
    return _readlink(proc, path, buf, size, "readlinkat", (dirfd, path, buf, size, 0, 0))
