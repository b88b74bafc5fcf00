"""Calling the host kernel on the guest's behalf: the raw ``syscall(2)`` entry.

The only module that hands pointers to the host kernel. Every pointer it passes
points into a buffer this process allocated (``HostBuffer``), never at an address
the guest chose: callers copy guest data in and out through checked accesses. The
one exception, futex words, which the host must wait on in place, are passed as
``GuestWordAddress``: the VMM's address of a translated, checked guest word.
"""

from __future__ import annotations

import ctypes

from ..memory.host_mapping_unsafe import load_libc

_libc = load_libc()
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 7


class HostBuffer:
    """A zeroed host buffer whose address may be passed to the host kernel."""

    __slots__ = ("_buffer", "size")

    def __init__(self, size_or_data: int | bytes) -> None:
        if isinstance(size_or_data, int):
            self._buffer = ctypes.create_string_buffer(max(size_or_data, 1))
            self.size = size_or_data
        else:
            self._buffer = ctypes.create_string_buffer(bytes(size_or_data), max(len(size_or_data), 1))
            self.size = len(size_or_data)

    @property
    def address(self) -> int:
        return ctypes.addressof(self._buffer)

    def read(self, length: int | None = None, offset: int = 0) -> bytes:
        length = self.size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError("read outside the host buffer")
        return self._buffer.raw[offset:offset + length]

    def write(self, data: bytes, offset: int = 0) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError("write outside the host buffer")
        ctypes.memmove(self.address + offset, data, len(data))


class GuestWordAddress:
    """Where a word of guest memory is in the VMM, for the one kind of host call
    that must act on guest memory in place: futexes (futex.py). Made only from a
    checked translation of a guest address (a mapped, user-accessible page of the
    guest's own memory), so it never points at the VMM's own memory."""

    __slots__ = ("address",)

    def __init__(self, address: int) -> None:
        self.address = address


#: An argument of a host system call: an integer value, or a pointer, which can only
#: be a buffer of the VMM's own or a translated guest word (a guest address is an
#: integer, never a pointer).
HostArg = int | HostBuffer | GuestWordAddress


def host_syscall(number: int, *args: HostArg) -> int:
    """Run a host system call; returns its result, or -errno on failure.

    Never retried on EINTR: an interrupted call is reported to the guest as Linux
    would, so that its signal handlers run.
    """
    padded = [(a.address if isinstance(a, (HostBuffer, GuestWordAddress)) else int(a))
              & 0xFFFF_FFFF_FFFF_FFFF for a in args] + [0] * (6 - len(args))
    # ctypes wants signed longs.
    signed = [a - (1 << 64) if a >= 1 << 63 else a for a in padded]
    result = _syscall(number, *signed)
    if result == -1:
        return -ctypes.get_errno()
    return result
