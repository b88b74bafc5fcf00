"""sendmsg and recvmsg: message headers hold pointers (name, iovecs, control data) and
SCM_RIGHTS control messages hold descriptors, so both are rebuilt on the host side:
buffers copied through checked accesses, descriptors translated both ways."""

from __future__ import annotations

import os
import stat
import struct

from .abi import Errno
from .forward import IOV_MAX
from .host_unsafe import HostBuffer, host_syscall
from .syscall_table import Sysno
from .uaccess import read_bytes, write_bytes

SYS_SENDMSG, SYS_RECVMSG = Sysno.sendmsg, Sysno.recvmsg
_MSGHDR = struct.Struct("<QI4xQQQQi4x")     # name, namelen, iov, iovlen, control, controllen, flags
_IOVEC = struct.Struct("<QQ")
_CMSGHDR = struct.Struct("<Qii")            # cmsg_len, cmsg_level, cmsg_type
SOL_SOCKET, SCM_RIGHTS = 1, 1
MSG_CMSG_CLOEXEC = 0x40000000
MAX_NAME = 128
MAX_CONTROL = 64 << 10
MAX_IO = 0x7FFF_F000


def _align(length: int) -> int:
    return (length + 7) & ~7


def _cmsgs(control: bytes):
    """(offset, level, type, data) of each control message."""
    offset = 0
    while offset + _CMSGHDR.size <= len(control):
        length, level, kind = _CMSGHDR.unpack_from(control, offset)
        if length < _CMSGHDR.size or offset + length > len(control):
            return
        yield offset, level, kind, control[offset + _CMSGHDR.size:offset + length]
        offset += _align(length)


def _rewrite_rights(control: bytes, translate) -> bytes:
    """The control data with every SCM_RIGHTS descriptor passed through ``translate``."""
    out = bytearray(control)
    for offset, level, kind, data in _cmsgs(control):
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            fds = struct.unpack(f"<{len(data) // 4}i", data[:len(data) // 4 * 4])
            start = offset + _CMSGHDR.size
            out[start:start + 4 * len(fds)] = struct.pack(f"<{len(fds)}i",
                                                          *[translate(fd) for fd in fds])
    return bytes(out)


class _Message:
    """The host-side copy of one guest msghdr."""

    def __init__(self, proc, address: int, receiving: bool) -> None:
        self.proc, self.address = proc, address
        (self.name, self.namelen, self.iov, self.iovlen, self.control, self.controllen,
         self.flags) = _MSGHDR.unpack(read_bytes(proc.space, address, _MSGHDR.size))
        if self.name and self.namelen >= 1 << 31:       # a negative int
            raise _Invalid(Errno.EINVAL)
        if self.iovlen > IOV_MAX:
            raise _Invalid(Errno.EMSGSIZE)
        self.namelen = min(self.namelen, MAX_NAME) if self.name else 0
        self.controllen = min(self.controllen, MAX_CONTROL) if self.control else 0
        self.pieces = []
        total = 0
        raw = read_bytes(proc.space, self.iov, self.iovlen * _IOVEC.size) if self.iovlen else b""
        for base, length in _IOVEC.iter_unpack(raw):
            length = min(length, MAX_IO - total)
            total += length
            data = b"" if receiving else read_bytes(proc.space, base, length)
            if receiving:
                read_bytes(proc.space, base, 0)
            self.pieces.append((base, HostBuffer(data if not receiving else length)))
        self.name_buffer = HostBuffer(read_bytes(proc.space, self.name, self.namelen)
                                      if self.name and not receiving else self.namelen)
        control = read_bytes(proc.space, self.control, self.controllen) if self.controllen else b""
        if not receiving and control:
            control = _rewrite_rights(control, self._host_fd)
        self.control_buffer = HostBuffer(control if not receiving else self.controllen)
        self.iov_buffer = HostBuffer(b"".join(
            _IOVEC.pack(buffer.address, buffer.size) for _, buffer in self.pieces))
        self.header = HostBuffer(_MSGHDR.pack(
            self.name_buffer.address if self.name else 0, self.namelen,
            self.iov_buffer.address if self.pieces else 0, len(self.pieces),
            self.control_buffer.address if self.controllen else 0, self.controllen, 0))

    def _host_fd(self, fd: int) -> int:
        host = self.proc.fds.host(fd)
        if host is None:
            raise _BadFd
        return host

    def deliver(self, received: int, flags: int) -> None:
        """Copy what the host received back into the guest's buffers and header."""
        left = received
        for base, buffer in self.pieces:
            if left <= 0:
                break
            chunk = min(buffer.size, left)
            write_bytes(self.proc.space, base, buffer.read(chunk))
            left -= chunk
        _, namelen, _, _, _, controllen, msg_flags = _MSGHDR.unpack(self.header.read())
        if self.name:
            write_bytes(self.proc.space, self.name, self.name_buffer.read(min(namelen, self.namelen)))
        control = self.control_buffer.read(controllen) if controllen else b""
        if control:
            cloexec = bool(flags & MSG_CMSG_CLOEXEC)
            control = _rewrite_rights(control, lambda host: self.proc.fds.install(
                host, cloexec=cloexec))
            write_bytes(self.proc.space, self.control, control)
        write_bytes(self.proc.space, self.address, _MSGHDR.pack(
            self.name, namelen if self.name else 0, self.iov, self.iovlen, self.control,
            controllen, msg_flags))


class _Invalid(Exception):
    """A msghdr Linux refuses, with the errno it gives (checked in its order)."""

    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


class _BadFd(Exception):
    pass


def _transfer(proc, number: int, fd: int, address: int, flags: int) -> int:
    host = proc.fds.host(fd)
    if host is None:
        return -Errno.EBADF
    if not stat.S_ISSOCK(os.fstat(host).st_mode):
        return -Errno.ENOTSOCK       # Linux looks at the descriptor before the message
    receiving = number == SYS_RECVMSG
    try:
        message = _Message(proc, address, receiving)
    except _Invalid as exc:
        return -exc.errno
    except _BadFd:
        return -Errno.EBADF
    # Without the process's lock: a socket may make it wait (threads.py).
    result = proc.host_call(lambda: host_syscall(number, host, message.header, flags), [host])
    if result >= 0 and receiving:
        message.deliver(result, flags)
    return result


def sys_sendmsg(proc, cpu, fd, msg, flags, *_):
    """Implements sendmsg(2), SCM_RIGHTS descriptors translated to the host's."""
    return _transfer(proc, SYS_SENDMSG, fd, msg, flags)


def sys_recvmsg(proc, cpu, fd, msg, flags, *_):
    """Implements recvmsg(2), received descriptors installed in the guest's table."""
    return _transfer(proc, SYS_RECVMSG, fd, msg, flags)
