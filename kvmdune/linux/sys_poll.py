"""poll, ppoll, select and pselect6: their descriptor sets name *guest* descriptors,
so they are translated to host descriptors and back (forwarding the arrays as bytes
would poll whatever the VMM holds under those numbers). They wait without the
process's lock (threads.py). The waits that take a signal mask (ppoll, pselect6,
epoll_pwait, epoll_pwait2) set the guest thread's mask for their duration
(sys_signal.with_temporary_mask), never the VMM's."""

from __future__ import annotations

import struct

from .abi import Errno
from .host_unsafe import HostBuffer, host_syscall
from .forward import forward
from .sys_signal import read_sigset, with_temporary_mask
from .syscall_table import SYSCALLS, Sysno
from .uaccess import read_bytes, read_u64, write_bytes

SYS_POLL, SYS_PPOLL, SYS_SELECT, SYS_PSELECT6 = (Sysno.poll, Sysno.ppoll, Sysno.select,
                                                Sysno.pselect6)
_POLLFD = struct.Struct("<ihh")
POLLNVAL = 0x20
FD_SETSIZE = 1024
MAX_POLL_FDS = 1 << 20
TIMESPEC_SIZE = 16
TIMEVAL_SIZE = 16
SIGSET_POINTER_SIZE = 8     # pselect6's sixth argument: {sigset_t *ss; size_t ss_len}


def _copy_in(proc, address: int, length: int) -> HostBuffer | None:
    return HostBuffer(read_bytes(proc.space, address, length)) if address else None


def _poll(proc, number: int, fds_ptr: int, nfds: int, rest: tuple[int, ...],
          timeout_size: int) -> int:
    if nfds > min(MAX_POLL_FDS, proc.fds.max_fds):
        return -Errno.EINVAL
    raw = read_bytes(proc.space, fds_ptr, nfds * _POLLFD.size) if nfds else b""
    entries = list(_POLLFD.iter_unpack(raw))
    host_entries = []
    for fd, events, _ in entries:
        host = proc.fds.host(fd) if fd >= 0 else -1
        # A guest descriptor that does not exist: a host number nobody has, so the
        # kernel answers POLLNVAL for it, as it would natively.
        host_entries.append((host if host is not None else 0x7FFF_FFFF if fd >= 0 else fd,
                             events, 0))
    table = HostBuffer(b"".join(_POLLFD.pack(*e) for e in host_entries))
    extra = [rest[0]] if number == SYS_POLL else []
    keep = []
    mask = None
    if number == SYS_PPOLL:
        timeout, sigmask, sigsetsize = rest
        timeout_buffer = _copy_in(proc, timeout, timeout_size)
        keep.append(timeout_buffer)
        mask = read_sigset(proc, sigmask, sigsetsize)
        # The guest's mask is the VMM's business (the guest thread's, while the
        # call waits): ppoll blocks with the VMM's own.
        extra = [timeout_buffer or 0, 0, sigsetsize]
    held = [host for host, _events, _ in host_entries if host >= 0]
    result = with_temporary_mask(proc, mask, lambda: proc.host_call(
        lambda: host_syscall(number, table if nfds else 0, nfds, *extra), held))
    if result < 0:
        return result
    out = b"".join(_POLLFD.pack(fd, events, _POLLFD.unpack_from(table.read(), i * _POLLFD.size)[2])
                   for i, (fd, events, _) in enumerate(entries))
    if out:
        write_bytes(proc.space, fds_ptr, out)
    if number == SYS_PPOLL and keep[0] is not None:
        write_bytes(proc.space, rest[0], keep[0].read())
    return result


def sys_poll(proc, cpu, fds, nfds, timeout, *_):
    """Implements poll(2) over the guest's descriptors."""
    return _poll(proc, SYS_POLL, fds, nfds, (timeout,), 0)


def sys_ppoll(proc, cpu, fds, nfds, timeout, sigmask, sigsetsize, _):
    """Implements ppoll(2) over the guest's descriptors."""
    return _poll(proc, SYS_PPOLL, fds, nfds, (timeout, sigmask, sigsetsize), TIMESPEC_SIZE)


def _fd_sets(proc, nfds: int, pointers: tuple[int, int, int]):
    """Read the guest's fd_sets; return (host sets, the guest<->host map, host nfds)."""
    size = (nfds + 63) // 64 * 8
    guest_sets = [read_bytes(proc.space, p, size) if p else None for p in pointers]
    mapping: dict[int, int] = {}
    for bits in guest_sets:
        if bits is None:
            continue
        value = int.from_bytes(bits, "little")
        for fd in range(nfds):
            if value >> fd & 1:
                host = proc.fds.host(fd)
                if host is None:
                    raise _BadFd
                mapping[fd] = host
    host_nfds = max(mapping.values(), default=-1) + 1
    host_size = (host_nfds + 63) // 64 * 8
    host_sets = []
    for bits in guest_sets:
        if bits is None:
            host_sets.append(None)
            continue
        value = int.from_bytes(bits, "little")
        host_value = sum(1 << mapping[fd] for fd in range(nfds) if value >> fd & 1)
        host_sets.append(HostBuffer(host_value.to_bytes(max(host_size, 8), "little")))
    return host_sets, mapping, host_nfds, size


class _BadFd(Exception):
    pass


def _select(proc, number: int, nfds: int, pointers: tuple[int, int, int], timeout: int,
            timeout_size: int, extra: list[int], mask: int | None = None) -> int:
    if nfds < 0 or nfds > FD_SETSIZE:
        return -Errno.EINVAL
    try:
        host_sets, mapping, host_nfds, size = _fd_sets(proc, nfds, pointers)
    except _BadFd:
        return -Errno.EBADF
    timeout_buffer = _copy_in(proc, timeout, timeout_size)
    sets = [b if b is not None else 0 for b in host_sets]
    result = with_temporary_mask(proc, mask, lambda: proc.host_call(
        lambda: host_syscall(number, host_nfds, *sets, timeout_buffer or 0, *extra),
        list(mapping.values())))
    if result < 0:
        return result
    for pointer, buffer in zip(pointers, host_sets):
        if buffer is None:
            continue
        host_value = int.from_bytes(buffer.read(), "little")
        value = sum(1 << fd for fd, host in mapping.items() if host_value >> host & 1)
        write_bytes(proc.space, pointer, value.to_bytes(size, "little"))
    if timeout_buffer is not None:
        write_bytes(proc.space, timeout, timeout_buffer.read())
    return result


def sys_select(proc, cpu, nfds, readfds, writefds, exceptfds, timeout, _):
    """Implements select(2) over the guest's descriptors."""
    return _select(proc, SYS_SELECT, nfds & 0xFFFF_FFFF, (readfds, writefds, exceptfds),
                   timeout, TIMEVAL_SIZE, [])


def sys_pselect6(proc, cpu, nfds, readfds, writefds, exceptfds, timeout, sigmask):
    """Implements pselect6(2) over the guest's descriptors: the host call blocks with
    the VMM's own signal mask, the guest thread's is the one ``sigmask`` names while
    it waits (a {sigset_t *, size} pair)."""
    mask = None
    if sigmask:
        mask = read_sigset(proc, read_u64(proc.space, sigmask),
                           read_u64(proc.space, sigmask + SIGSET_POINTER_SIZE))
    return _select(proc, SYS_PSELECT6, nfds & 0xFFFF_FFFF, (readfds, writefds, exceptfds),
                   timeout, TIMESPEC_SIZE, [0], mask)


def sys_epoll_pwait(proc, cpu, epfd, events, maxevents, timeout, sigmask, sigsetsize):
    """Implements epoll_pwait(2): forwarded without a mask (the host call blocks with
    the VMM's own); the guest thread's is ``sigmask`` while it waits."""
    return _forward_with_mask(proc, Sysno.epoll_pwait,
                              (epfd, events, maxevents, timeout, sigmask, sigsetsize))


def sys_epoll_pwait2(proc, cpu, epfd, events, maxevents, timeout, sigmask, sigsetsize):
    """Implements epoll_pwait2(2) as epoll_pwait (its timeout is a timespec)."""
    return _forward_with_mask(proc, Sysno.epoll_pwait2,
                              (epfd, events, maxevents, timeout, sigmask, sigsetsize))


def _forward_with_mask(proc, number: int, args: tuple[int, ...]) -> int:
    *head, sigmask, sigsetsize = args
    mask = read_sigset(proc, sigmask, sigsetsize)
    return with_temporary_mask(proc, mask, lambda: forward(
        proc, SYSCALLS[number], (*head, 0, sigsetsize)))
