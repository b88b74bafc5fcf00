"""The declarative forwarder: a guest system call run by the host kernel, with every
pointer argument copied through a host buffer after a checked access.

Driven entirely by ``syscall_table``: each argument's kind says whether it is a
descriptor (translated through the guest's table), a path or string (read up to
its limit), a buffer (copied in, out, or both, for its declared extent), an iovec
array, a socket address. A guest address is never handed to the host kernel: the
host sees only buffers of this process. Calls whose pointers the table cannot
describe (OPAQUE) or that would act on the VMM are never forwarded from here.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import termios
from dataclasses import dataclass

from ..memory import PAGE_SIZE, READ, WRITE, FaultKind, GuestFault
from .abi import AT_FDCWD, MAX_RW_COUNT, Errno, FdFlags, c_int
from .host_unsafe import HostBuffer, HostArg, host_syscall
from .syscall_table import (DEREF_KINDS, Arg, ArgKind, Direction, RetKind, SyscallSpec,
                            arg_extent, filled_extent, resolve_args, resolve_ret)
from .uaccess import Fault, access_ok, read_path

#: What a guest descriptor number the guest does not have becomes for the host.
NO_DESCRIPTOR = -1
#: Faults that stop a copy at a page (a shorter buffer is then still a buffer).
_PAGE_FAULT_KINDS = frozenset({FaultKind.NOT_MAPPED, FaultKind.NOT_USER, FaultKind.NOT_WRITABLE})
#: Most iovec entries one call takes (UIO_MAXIOV).
IOV_MAX = 1024
_IOVEC = struct.Struct("<QQ")


class NotForwardable(Exception):
    """The table cannot describe this call's pointers: it needs a handler."""


#: The most any copied-whole output holds on Linux (getgroups' NGROUPS_MAX gids;
#: xattr values and lists are capped at 64 KiB, paths and CPU masks are smaller):
#: a larger size the guest gives changes no result, so the VMM's buffer is cut to it.
WHOLE_OUTPUT_MAX = 65536 * 4


@dataclass
class _CopyOut:
    guest: int
    buffer: HostBuffer
    length: int
    filled_by: Arg | None = None     # the length is what the result says was filled
    #: The argument holding a value-result length (socklen_t): the call wrote at most
    #: as many bytes as it says afterwards (getsockopt, getsockname, accept).
    length_arg: int | None = None
    #: Written by the kernel only on EINTR (and holds the guest's own bytes until then).
    when_interrupted: bool = False


@dataclass
class _IovecOut:
    pieces: list[tuple[int, HostBuffer, int]]   # guest address, host buffer, length



class Call:
    """One forwarded call's host-side arguments and what to copy back."""

    def __init__(self, proc, spec: SyscallSpec, args: tuple[int, ...]) -> None:
        self.proc = proc
        self.space = proc.space
        self.spec = spec
        self.args = args
        #: What the host call gets: integers as decoded, and in every position the
        #: table says is a pointer, a buffer of the VMM's own (or NULL).
        self.host_args: list[HostArg] = list(args)
        self.keep: list[HostBuffer] = []
        #: The host descriptors the call uses (held open while it runs unlocked).
        self.host_fds: list[int] = []
        self.copy_out: list[_CopyOut] = []
        self.iovec_out: list[_IovecOut] = []

    def _read_memory(self, address: int, length: int) -> bytes | None:
        try:
            return self.space.read(address, length, READ)
        except GuestFault:
            return None

    def _buffer(self, data_or_size) -> HostBuffer:
        buffer = HostBuffer(data_or_size)
        self.keep.append(buffer)
        return buffer

    def prepare(self) -> None:
        dirfd = None        # the host directory the next relative path starts from
        for index, arg in enumerate(resolve_args(self.spec, self.args)):
            if arg is None:
                continue
            value = self.args[index]
            kind = arg.kind
            if kind is ArgKind.FD:
                self.host_args[index] = self._fd(value)
            elif kind is ArgKind.DIRFD:
                dirfd = None if c_int(value) == AT_FDCWD else self.proc.fds.host(c_int(value))
                # A descriptor the guest does not have is the host's -1: the kernel
                # then says EBADF for a relative path and ignores it for an absolute
                # one, as it would for the guest's bad number.
                self.host_args[index] = (value if c_int(value) == AT_FDCWD
                                         else NO_DESCRIPTOR if dirfd is None else dirfd)
                if dirfd is not None:
                    self.host_fds.append(dirfd)
            elif kind in (ArgKind.PATH, ArgKind.STRING):
                if value == 0:
                    continue   # NULL where the kernel allows it (utimensat, ...)
                text = read_path(self.space, value)
                if kind is ArgKind.PATH:
                    text = self.proc.host_path(text, dirfd)
                self.host_args[index] = self._buffer(text + b"\0")
            elif kind in (ArgKind.IN_BUF, ArgKind.OUT_BUF, ArgKind.INOUT_BUF,
                          ArgKind.SOCKADDR):
                self._plain_buffer(index, arg, value)
            elif kind is ArgKind.SOCKADDR_OUT:
                self._sockaddr_out(index, arg, value)
            elif kind is ArgKind.IOVEC:
                self._iovec(index, arg, value)
            elif kind in (ArgKind.PTR, ArgKind.ADDR, ArgKind.OPAQUE, ArgKind.MSGHDR,
                          ArgKind.STRING_ARRAY):
                if value != 0:
                    raise NotForwardable(f"{self.spec.name}: argument {arg.name} ({kind.value})")

    def _fd(self, value: int) -> int:
        host = self.proc.fds.host(c_int(value))
        if host is None:
            raise Fault(Errno.EBADF)
        self.host_fds.append(host)
        return host

    def _extent(self, index: int, clamp: bool = True) -> int:
        """Bytes the call may touch at a pointer argument (at most MAX_RW_COUNT, as
        Linux caps one transfer, unless ``clamp`` is off)."""
        length = arg_extent(self.spec, index, self.args, self._read_memory)
        if length is None:
            arg = resolve_args(self.spec, self.args)[index]
            if arg is not None and arg.size_ptr_arg is not None:
                raise Fault(Errno.EFAULT)     # its value-result length is unreadable
            raise NotForwardable(f"{self.spec.name}: extent of argument {index}")
        return min(length, MAX_RW_COUNT) if clamp else length

    def _plain_buffer(self, index: int, arg, value: int) -> None:
        if value == 0:
            return
        if arg.struct is not None and arg.struct.has_pointers:
            # Copying it would hand guest addresses to the host kernel as host ones.
            raise NotForwardable(f"{self.spec.name}: {arg.name} holds pointers")
        length = self._extent(index, clamp=False)
        if arg.written_when_interrupted:
            self._written_when_interrupted(index, value, length)
            return
        if not access_ok(value, length):     # Linux checks the length asked for, then caps it
            raise Fault(Errno.EFAULT)
        length = min(length, MAX_RW_COUNT)
        direction = Direction.IN if arg.kind is ArgKind.SOCKADDR else arg.direction
        access = WRITE if direction in (Direction.OUT, Direction.INOUT) else READ
        if direction is Direction.OUT and arg.copied_whole:
            # The host builds it in the VMM's buffer; copying it out checks the pages
            # it lands on (EFAULT), and only those, as the kernel's one copy does.
            length = min(length, WHOLE_OUTPUT_MAX)
            self._tell_host_the_length(arg, length)
            self.host_args[index] = self._buffer(length)
            self.copy_out.append(_CopyOut(value, self.host_args[index], length, arg))
            return
        if direction is Direction.OUT and arg.out_size_from_ret:
            length = self._writable_prefix(value, length)
        self._tell_host_the_length(arg, length)
        self.space.translate(value, length, access)       # all checked before the call
        data = (self.space.read(value, length, READ)
                if direction in (Direction.IN, Direction.INOUT) else None)
        buffer = self._buffer(data if data is not None else length)
        self.host_args[index] = buffer
        if direction in (Direction.OUT, Direction.INOUT):
            self.copy_out.append(_CopyOut(value, buffer, length,
                                          arg if arg.out_size_from_ret else None,
                                          arg.size_ptr_arg))

    def _tell_host_the_length(self, arg: Arg, length: int) -> None:
        """The host call is told the size of the VMM's buffer, never the guest's
        larger one: where the buffer was cut (MAX_RW_COUNT, a writable prefix) the
        length argument is cut with it, or the kernel would write or read past the
        end of the VMM's buffer (its own heap)."""
        if arg.size_arg is not None:
            if self.host_args[arg.size_arg] != length:
                self.host_args[arg.size_arg] = length
        elif arg.count_arg is not None and arg.struct is not None:
            units = length // arg.struct.size * arg.count_per_elem
            declared = self.host_args[arg.count_arg]
            if isinstance(declared, int) and declared > units:
                self.host_args[arg.count_arg] = units

    def _queued_beyond(self, room: int) -> bool:
        """Whether a pipe or socket the call reads holds more than ``room`` bytes:
        Linux then fails the copy with EFAULT and leaves the data queued, where a
        file (or /dev/zero, getrandom) fills what is mapped and says how much."""
        for index, arg in enumerate(resolve_args(self.spec, self.args)):
            if arg is not None and arg.kind is ArgKind.FD:
                host = self.host_args[index]
                try:
                    mode = os.fstat(host).st_mode
                    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
                        return False
                    queued = struct.unpack("i", fcntl.ioctl(host, termios.FIONREAD, b"\0" * 4))[0]
                except (OSError, TypeError):
                    return False
                return queued > room
        return False

    def _writable_prefix(self, address: int, length: int) -> int:
        """How much of an output buffer the call may fill, for a call that reports
        how much it filled (read, getcwd, getdents64): Linux fills what it has up to
        the first page it cannot write and returns that count (EFAULT only if it
        could write nothing), so the host call is given the writable prefix."""
        try:
            self.space.translate(address, length, WRITE)
            return length
        except GuestFault as fault:
            stops_at_a_page = fault.kind in _PAGE_FAULT_KINDS and fault.vaddr > address
            prefix = (fault.vaddr & ~(PAGE_SIZE - 1)) - address if stops_at_a_page else 0
        if prefix <= 0 or self._queued_beyond(prefix):
            raise Fault(Errno.EFAULT)
        return prefix

    def _written_when_interrupted(self, index: int, value: int, length: int) -> None:
        """An output Linux touches only if the call is interrupted (a sleep's
        remaining time): not checked before the call, as Linux does not; it holds
        the guest's own bytes, so an abstime sleep that writes nothing leaves them."""
        data = self._read_memory(value, length) if access_ok(value, length) else None
        buffer = self._buffer(data if data is not None else length)
        self.host_args[index] = buffer
        self.copy_out.append(_CopyOut(value, buffer, length, when_interrupted=True))

    def _sockaddr_out(self, index: int, arg, value: int) -> None:
        if value == 0:
            return
        length_ptr = self.args[arg.size_ptr_arg]
        capacity = self._extent(index)
        self.space.translate(value, capacity, WRITE)
        self.space.translate(length_ptr, 4, WRITE)
        buffer = self._buffer(capacity)
        length_buffer = self._buffer(struct.pack("<I", capacity))
        self.host_args[index] = buffer
        self.host_args[arg.size_ptr_arg] = length_buffer
        self.copy_out.append(_CopyOut(value, buffer, capacity, length_arg=arg.size_ptr_arg))
        self.copy_out.append(_CopyOut(length_ptr, length_buffer, 4))

    def _iovec(self, index: int, arg, value: int) -> None:
        count = self.args[arg.count_arg]
        if count > IOV_MAX:
            raise Fault(Errno.EINVAL)
        raw = self.space.read(value, count * _IOVEC.size, READ) if count else b""
        host_iov = bytearray()
        pieces = []
        total = 0
        writing = arg.direction in (Direction.OUT, Direction.INOUT)
        for base, length in _IOVEC.iter_unpack(raw):
            length = min(length, MAX_RW_COUNT - total)
            total += length
            if writing:
                self.space.translate(base, length, WRITE)
                buffer = self._buffer(length)
            else:
                buffer = self._buffer(self.space.read(base, length, READ))
            host_iov += _IOVEC.pack(buffer.address, length)
            pieces.append((base, buffer, length))
        self.host_args[index] = self._buffer(bytes(host_iov)) if host_iov else 0
        if writing:
            self.iovec_out.append(_IovecOut(pieces))

    def finish(self, result: int) -> int:
        """Copy back what the host call wrote; the call's result for the guest."""
        interrupted = result == -Errno.EINTR
        if result < 0 and not interrupted:
            return result
        try:
            for out in self.copy_out:
                if out.when_interrupted != interrupted:
                    continue
                length = self._written(out, result)
                self.space.write(out.guest, out.buffer.read(length), WRITE)
            if interrupted:
                return result
            for iov in self.iovec_out:
                left = result
                for base, buffer, length in iov.pieces:
                    if left <= 0:
                        break
                    chunk = min(length, left)
                    self.space.write(base, buffer.read(chunk), WRITE)
                    left -= chunk
        except GuestFault:
            return -Errno.EFAULT
        if resolve_ret(self.spec, self.args).kind is RetKind.FD:
            return self.proc.adopt_fd(result)
        return result

    def _written(self, out: _CopyOut, result: int) -> int:
        """How many bytes of an output buffer the host call wrote: never more than
        Linux writes, so the guest's bytes beyond stay as they were."""
        length = out.length
        if out.filled_by is not None:
            length = min(length, filled_extent(out.filled_by, result))
        if out.length_arg is not None:
            holder = self.host_args[out.length_arg]
            if isinstance(holder, HostBuffer) and holder.size >= 4:
                length = min(length, struct.unpack("<I", holder.read(4))[0])
        return length

    def check_pointers(self) -> None:
        """No guest address reaches the host kernel: every argument the table says
        is a pointer is a buffer of the VMM's own, or NULL."""
        for index, arg in enumerate(resolve_args(self.spec, self.args)):
            if arg is None or arg.kind not in DEREF_KINDS:
                continue
            host = self.host_args[index]
            if not (isinstance(host, HostBuffer) or host == 0):
                raise NotForwardable(f"{self.spec.name}: argument {arg.name} was not copied")


def forward(proc, spec: SyscallSpec, args: tuple[int, ...]) -> int:
    """Run ``spec`` on the host for the guest; -errno on failure."""
    call = Call(proc, spec, args[:spec.nargs])
    call.prepare()
    call.check_pointers()
    if spec.name in _LIVE_READS or spec.name in _LIVE_WRITES:
        live = proc.live_file_of(call.host_args[0])
        if live is not None:
            return _live_io(proc, live, call)
    # Without the process's lock: the call may block (a pipe, a socket, a sleep),
    # and the other threads go on meanwhile. It uses only the VMM's own buffers.
    result = proc.host_call(lambda: host_syscall(spec.number, *call.host_args),
                            call.host_fds)
    return call.finish(result)


#: Reads and writes a live /proc file (procfs.LiveFile) answers itself: for each
#: read, the index of its offset argument (None: the descriptor's own position).
_LIVE_READS = {"read": None, "readv": None, "pread64": 3, "preadv": 3, "preadv2": 3}
_LIVE_WRITES = frozenset({"write", "pwrite64", "writev", "pwritev", "pwritev2"})
_CURRENT_POSITION = -1      # preadv2's offset meaning "the descriptor's position"


def _live_io(proc, live, call: Call) -> int:
    """A read or write on a live /proc file: the file is filled for the range the
    read will see just before the host reads it; writes go to the VMM, never the
    host, each buffer one write as Linux's loop over an iovec does."""
    host_fd, name, args = call.host_args[0], call.spec.name, call.args
    mode = fcntl.fcntl(host_fd, fcntl.F_GETFL) & os.O_ACCMODE
    if name in _LIVE_WRITES:
        if mode == os.O_RDONLY:
            return -Errno.EBADF
        written = 0
        for data in _written_buffers(call):
            written += live.write(proc, data)
        return written
    if mode == os.O_WRONLY:
        return -Errno.EBADF
    where = _LIVE_READS[name]
    offset = args[where] if where is not None else _CURRENT_POSITION
    if offset == _CURRENT_POSITION:
        offset = os.lseek(host_fd, 0, os.SEEK_CUR)
    length = (sum(out.length for out in call.copy_out)
              + sum(length for iov in call.iovec_out for _, _, length in iov.pieces))
    live.before_read(proc, offset, length)
    try:
        return call.finish(host_syscall(call.spec.number, *call.host_args))
    finally:
        live.after_read()


def _written_buffers(call: Call) -> list[bytes]:
    """The guest's buffers of a write-family call, as copied in."""
    buffer = call.host_args[1]
    if call.spec.name in ("write", "pwrite64"):
        return [buffer.read()] if isinstance(buffer, HostBuffer) else [b""]
    count = call.args[2]
    raw = call.space.read(call.args[1], count * _IOVEC.size, READ) if count else b""
    return [call.space.read(base, min(length, MAX_RW_COUNT), READ)
            for base, length in _IOVEC.iter_unpack(raw)]


def host_fd_cloexec(host_fd: int) -> bool:
    return bool(fcntl.fcntl(host_fd, fcntl.F_GETFD) & FdFlags.FD_CLOEXEC)
