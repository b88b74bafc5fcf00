"""Checked access to guest memory for system-call handlers (the guest's pointers are
hostile): strings, string arrays and fixed-size values, each failing with EFAULT."""

from __future__ import annotations

import struct

from ..machine.layout import TASK_SIZE
from ..memory import READ, WRITE, AddressSpace, FaultKind, GuestFault
from .abi import Errno

PATH_MAX = 4096
#: Longest single argv/envp string (MAX_ARG_STRLEN) and most entries we read.
MAX_ARG_STRLEN = 32 * 4096
MAX_ARG_COUNT = 0x7FFF_FFFF // 8
_U64 = struct.Struct("<Q")


class Fault(Exception):
    """A handler's way to return -errno from deep inside (EFAULT, ENAMETOOLONG, ...)."""

    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


def access_ok(address: int, length: int) -> bool:
    """Linux's first check of a user buffer, made even when it is empty: the whole
    range lies in the user half."""
    return 0 <= length <= TASK_SIZE and 0 <= address <= TASK_SIZE - length


def read_path(space: AddressSpace, address: int) -> bytes:
    """A NUL-terminated path of at most PATH_MAX bytes (ENAMETOOLONG beyond)."""
    if address == 0:
        raise Fault(Errno.EFAULT)
    try:
        return space.read_cstring(address, PATH_MAX)
    except GuestFault as exc:
        raise Fault(Errno.ENAMETOOLONG if exc.kind is FaultKind.UNTERMINATED else Errno.EFAULT) from exc


def read_string_array(space: AddressSpace, address: int, limit_bytes: int) -> list[bytes]:
    """argv/envp: pointers up to NULL, each to a string (E2BIG past ``limit_bytes``)."""
    out: list[bytes] = []
    if address == 0:
        return out
    total = 0
    while True:
        try:
            (pointer,) = _U64.unpack(space.read(address + 8 * len(out), 8, READ))
        except GuestFault as exc:
            raise Fault(Errno.EFAULT) from exc
        if pointer == 0:
            return out
        try:
            text = space.read_cstring(pointer, MAX_ARG_STRLEN)
        except GuestFault as exc:
            raise Fault(Errno.E2BIG if exc.kind is FaultKind.UNTERMINATED else Errno.EFAULT) from exc
        total += len(text) + 1 + 8
        if total > limit_bytes or len(out) > MAX_ARG_COUNT:
            raise Fault(Errno.E2BIG)
        out.append(text)


def read_bytes(space: AddressSpace, address: int, length: int) -> bytes:
    try:
        return space.read(address, length, READ)
    except GuestFault as exc:
        raise Fault(Errno.EFAULT) from exc


def write_bytes(space: AddressSpace, address: int, data: bytes) -> None:
    try:
        space.write(address, data, WRITE)
    except GuestFault as exc:
        raise Fault(Errno.EFAULT) from exc


def read_u64(space: AddressSpace, address: int) -> int:
    return _U64.unpack(read_bytes(space, address, 8))[0]


def write_u32(space: AddressSpace, address: int, value: int) -> None:
    write_bytes(space, address, struct.pack("<I", value & 0xFFFF_FFFF))


def write_u64(space: AddressSpace, address: int, value: int) -> None:
    write_bytes(space, address, _U64.pack(value & 0xFFFF_FFFF_FFFF_FFFF))

