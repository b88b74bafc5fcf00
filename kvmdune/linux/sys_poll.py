"""poll, ppoll, select and pselect6: their descriptor sets name *guest* descriptors,
so they are translated to host descriptors and back (forwarding the arrays as bytes
would poll whatever the VMM holds under those numbers)."""

from __future__ import annotations

import struct

from ..memory import READ, WRITE, GuestFault
from .abi import Errno
from .host_unsafe import HostBuffer, host_syscall
from .syscall_table import Sysno
from .uaccess import Fault, access_ok, read_bytes, write_bytes

SYS_POLL, SYS_PPOLL, SYS_SELECT, SYS_PSELECT6 = (Sysno.poll, Sysno.ppoll, Sysno.select,
                                                Sysno.pselect6)
SYS_CLOCK_NANOSLEEP = Sysno.clock_nanosleep
CLOCK_REALTIME, CLOCK_MONOTONIC, TIMER_ABSTIME = 0, 1, 1
FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME = 128, 256
_POLLFD = struct.Struct("<ihh")
POLLNVAL = 0x20
FD_SETSIZE = 1024
MAX_POLL_FDS = 1 << 20
TIMESPEC_SIZE = 16
TIMEVAL_SIZE = 16


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
    if number == SYS_PPOLL:
        timeout, sigmask, sigsetsize = rest
        timeout_buffer = _copy_in(proc, timeout, timeout_size)
        keep.append(timeout_buffer)
        # The guest's mask is the VMM's business: ppoll blocks with the VMM's own.
        extra = [timeout_buffer or 0, 0, sigsetsize]
    result = host_syscall(number, table if nfds else 0, nfds, *extra)
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
            timeout_size: int, extra: list[int]) -> int:
    if nfds < 0 or nfds > FD_SETSIZE:
        return -Errno.EINVAL
    try:
        host_sets, mapping, host_nfds, size = _fd_sets(proc, nfds, pointers)
    except _BadFd:
        return -Errno.EBADF
    timeout_buffer = _copy_in(proc, timeout, timeout_size)
    result = host_syscall(number, host_nfds,
                          *[b if b is not None else 0 for b in host_sets],
                          timeout_buffer or 0, *extra)
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
    """Implements pselect6(2) over the guest's descriptors (blocking with the VMM's
    own signal mask; the guest's is applied when signals are delivered)."""
    return _select(proc, SYS_PSELECT6, nfds & 0xFFFF_FFFF, (readfds, writefds, exceptfds),
                   timeout, TIMESPEC_SIZE, [0])


def sys_futex(proc, cpu, uaddr, op, val, timeout, uaddr2, val3):
    """Implements futex(2) for one thread: WAKE wakes nobody; WAIT fails with EAGAIN
    when the word changed, else sleeps until a signal (or the timeout)."""
    FUTEX_WAIT, FUTEX_WAKE, FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 0, 1, 9, 10
    command = op & 0x7F
    waiting = command in (FUTEX_WAIT, FUTEX_WAIT_BITSET)
    if waiting and timeout:      # Linux reads and checks the timeout first
        seconds, nanoseconds = struct.unpack("<qq", read_bytes(proc.space, timeout, 16))
        if seconds < 0 or not 0 <= nanoseconds < 1_000_000_000:
            return -Errno.EINVAL
    if command in (FUTEX_WAKE, FUTEX_WAKE_BITSET, FUTEX_WAIT, FUTEX_WAIT_BITSET) and uaddr % 4:
        return -Errno.EINVAL
    if command in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        _check_futex_word(proc, uaddr, private=bool(op & FUTEX_PRIVATE_FLAG))
        return 0
    if waiting:
        (current,) = struct.unpack("<I", read_bytes(proc.space, uaddr, 4))
        if current != val & 0xFFFF_FFFF:
            return -Errno.EAGAIN
        if timeout:
            request = HostBuffer(struct.pack("<qq", seconds, nanoseconds))
            # FUTEX_WAIT's timeout is relative; WAIT_BITSET's is absolute, on
            # CLOCK_REALTIME with FUTEX_CLOCK_REALTIME, else CLOCK_MONOTONIC.
            clock = CLOCK_REALTIME if op & FUTEX_CLOCK_REALTIME else CLOCK_MONOTONIC
            flags = TIMER_ABSTIME if command == FUTEX_WAIT_BITSET else 0
            result = host_syscall(SYS_CLOCK_NANOSLEEP, clock, flags, request, 0)
            return -Errno.ETIMEDOUT if result == 0 else result
        proc.wait_for_signal()
        return -Errno.EINTR
    return -Errno.ENOSYS


def _check_futex_word(proc, uaddr: int, private: bool) -> None:
    """The checks Linux makes of a futex word it only hashes (a wake): a private
    futex's address must be in the user half; a shared one's page must be mapped,
    and writable when it is private anonymous memory (read-only anonymous pages
    have no key that another process could share)."""
    if private:
        if not access_ok(uaddr, 4):
            raise Fault(Errno.EFAULT)
        return
    vma = proc.mm.find(uaddr) if proc.mm is not None else None
    anonymous = vma is not None and not vma.shared and not vma.name.startswith("/")
    try:
        proc.space.translate(uaddr, 4, WRITE if anonymous else READ)
    except GuestFault as exc:
        raise Fault(Errno.EFAULT) from exc
