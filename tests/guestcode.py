"""Test helpers: assemble x86-64 guest code and run it at CPL3 in a Machine."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from dataclasses import dataclass, field

from kvmdune.machine import (Action, ExceptionEvent, Handler, Machine, PageFaultEvent,
                             Stop, SyscallEvent)
from kvmdune.memory import VMM, AddressSpace, Perm

CODE = 0x40_0000
STACK_TOP = 0x7FF0_0000
STACK_SIZE = 0x4000
DATA = 0x1000_0000
SYS_EXIT = 60
TEST_MEMORY = 64 << 20


@functools.lru_cache(maxsize=None)
def assemble(source: str) -> bytes:
    """Assemble Intel-syntax x86-64 code (gcc + objcopy) into flat bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, out = (os.path.join(tmp, name) for name in ("g.S", "g.o", "g.bin"))
        with open(src, "w") as f:
            f.write(".intel_syntax noprefix\n.text\n.globl _start\n_start:\n" + source + "\n")
        subprocess.run(["gcc", "-c", "-o", obj, src], check=True, capture_output=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", obj, out], check=True)
        with open(out, "rb") as f:
            return f.read()


def exit_with(register: str = "rax") -> str:
    """Guest code that ends the program with ``register`` as the exit value."""
    return f"mov rdi, {register}\nmov rax, {SYS_EXIT}\nsyscall\n"


@dataclass
class Recorder(Handler):
    """Records every event; exit(60) stops with its argument; other calls return
    ``syscall_result(event)``; faults go to ``fault`` (default: stop)."""

    events: list = field(default_factory=list)
    syscall_result: object = None
    fault: object = None

    def on_syscall(self, cpu, event: SyscallEvent):
        self.events.append(event)
        if event.number == SYS_EXIT:
            return Stop(value=event.args[0])
        return self.syscall_result(cpu, event) if self.syscall_result else 0

    def on_page_fault(self, cpu, event: PageFaultEvent):
        self.events.append(event)
        return self.fault(cpu, event) if self.fault else Stop(value=event)

    def on_exception(self, cpu, event: ExceptionEvent):
        self.events.append(event)
        return self.fault(cpu, event) if self.fault else Stop(value=event)


def load_program(machine: Machine, source: str, space: AddressSpace | None = None) -> AddressSpace:
    """A new address space (unless given) with the code at CODE and a stack, ready
    to run."""
    code = assemble(source)
    if space is None:
        space = machine.new_address_space()
        space.map(STACK_TOP - STACK_SIZE, STACK_SIZE, Perm.READ | Perm.WRITE | Perm.USER)
    size = -(-len(code) // 4096) * 4096
    space.unmap(CODE, 0x10000)   # a program run before in this space
    space.map(CODE, size, Perm.READ | Perm.EXEC | Perm.USER)
    space.write(CODE, code, VMM)
    machine.cpu.enter_user(space, CODE, STACK_TOP)
    return space


def run_program(machine: Machine, source: str, handler: Handler | None = None,
                space: AddressSpace | None = None, budget: float | None = 30.0) -> Stop:
    own = space is None
    space = load_program(machine, source, space)
    try:
        return machine.run(handler or Recorder(), budget=budget)
    finally:
        if own:
            space.close()
