"""Tiny guest programs for the benchmarks, as machine code built here (no
assembler needed at run time): loops of system calls and of page writes."""

from __future__ import annotations

import struct

from ..machine import Machine
from ..memory import PAGE_SIZE, AddressSpace, Perm

CODE = 0x40_0000
SYS_GETPPID = 110
SYS_EXIT = 60
RW_USER = Perm.READ | Perm.WRITE | Perm.USER


def _mov_imm64(register_code: int, value: int) -> bytes:
    """movabs r64, imm64 (REX.W + B8+r; r8..r15 need REX.B)."""
    rex = 0x48 | (1 if register_code >= 8 else 0)
    return bytes([rex, 0xB8 + (register_code & 7)]) + struct.pack("<Q", value)


RAX, RCX, RDX, RBX, RDI = 0, 1, 2, 3, 7
SYSCALL = b"\x0f\x05"


def exit_code() -> bytes:
    return _mov_imm64(RAX, SYS_EXIT) + _mov_imm64(RDI, 0) + SYSCALL


def syscall_loop(count: int, number: int = SYS_GETPPID) -> bytes:
    """``count`` system calls of ``number``, then exit."""
    body = _mov_imm64(RAX, number) + SYSCALL          # 12 bytes
    loop = body + b"\x48\xff\xcb" + b"\x75" + bytes([(-(len(body) + 5)) & 0xFF])  # dec rbx; jnz
    return _mov_imm64(RBX, count) + loop + exit_code()


def page_write_loop(first: int, count: int, stride: int) -> bytes:
    """Write one byte to each of ``count`` pages from ``first``, ``stride`` apart."""
    body = b"\xc6\x02\x01" + b"\x48\x01\xca"           # mov byte [rdx], 1 ; add rdx, rcx
    loop = body + b"\x48\xff\xcb" + b"\x75" + bytes([(-(len(body) + 5)) & 0xFF])
    return (_mov_imm64(RDX, first) + _mov_imm64(RCX, stride) + _mov_imm64(RBX, count)
            + loop + exit_code())


def load(machine: Machine, code: bytes, space: AddressSpace | None = None) -> AddressSpace:
    """Put ``code`` at CODE in ``space`` (a new one unless given) and point the vCPU at it."""
    if space is None:
        space = machine.new_address_space()
    space.unmap(CODE, PAGE_SIZE)
    space.map(CODE, PAGE_SIZE, Perm.READ | Perm.EXEC | Perm.USER)
    space.memory.write(space.walk(CODE).paddr, code)
    machine.cpu.enter_user(space, CODE, 0)
    return space
