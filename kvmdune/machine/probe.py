"""Measurements of the platform for ``kvmdune info``: the exit round trip, the cost
of the ``syscall`` instruction itself, and the speed of guest code at CPL0 against
CPL3 (CPL0 is emulated on software KVM).

The CPL0 probe maps a supervisor code page of its own and drives the vCPU directly;
it runs only in a machine made for the probe.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from ..kvm import IoExit, KvmInterrupted, SyncRegs
from ..memory import PAGE_SIZE, Perm
from . import _trampoline, layout
from .events import Handler, Stop, SyscallEvent
from .machine import Machine
from .x86 import MSR, RFLAGS

PROBE_PORT = 0x60
# Machine code, position-independent (hand-assembled, so no assembler is needed at
# run time):   mov ecx, imm32 ; 1: dec ecx ; jnz 1b ; out PROBE_PORT, al ; jmp $-?
_MOV_ECX = b"\xb9"            # mov ecx, imm32
_LOOP = b"\xff\xc9\x75\xfc"   # dec ecx ; jnz -4
_OUT = bytes([0xE6, PROBE_PORT])
_JMP_BACK_TO_OUT = b"\xeb\xfc"  # jmp -4 (back to the out): a loop of exits
_SYSCALL = b"\x0f\x05"
_JMP_SELF = b"\xeb\xfe"
# The cheapest possible MSR_LSTAR target: back to the caller at once, from CPL3 (where
# software KVM runs it) or CPL0 (hardware):  mov eax, cs ; test al, 3 ; jz 1f ;
# jmp rcx ; 1: sysretq
_RETURN_STUB = b"\x8c\xc8\xa8\x03\x74\x02\xff\xe1\x48\x0f\x07"
# mov r12d, imm32 ; 1: syscall ; dec r12d ; jnz 1b ; ud2 (the #UD ends the run)
_TRAP_LOOP_HEAD = b"\x41\xbc"
_TRAP_LOOP_BODY = b"\x0f\x05\x41\xff\xcc\x75\xf9\x0f\x0b"


def _loop_code(iterations: int, tail: bytes) -> bytes:
    return _MOV_ECX + struct.pack("<I", iterations) + _LOOP + tail


@dataclass(frozen=True)
class PlatformSpeed:
    exit_round_trip_us: float       # CPL0 ``out`` -> VMM (Python) -> guest
    syscall_round_trip_us: float    # CPL3 ``syscall`` -> Python handler -> CPL3
    cpl3_ns_per_iteration: float    # a 2-instruction loop at CPL3
    cpl0_ns_per_iteration: float    # the same loop at CPL0
    syscall_trap_us: float          # ``syscall`` to a stub that returns at once: the floor

    @property
    def cpl0_slowdown(self) -> float:
        return self.cpl0_ns_per_iteration / max(self.cpl3_ns_per_iteration, 1e-9)


class _CountSyscalls(Handler):
    def __init__(self, limit: int) -> None:
        self.count, self.limit = 0, limit

    def on_syscall(self, cpu, event: SyscallEvent) -> int | Stop:
        self.count += 1
        return Stop() if self.count >= self.limit else 0


def _finish_pending_exit(machine: Machine) -> None:
    """Let KVM finish the ``out`` the last run stopped at before RIP is moved.

    KVM completes a port-I/O exit at the next KVM_RUN; on hardware KVM that steps RIP
    past the instruction if RIP still points at it. A probe that restarts its code at
    the address where the previous one exited would otherwise resume two bytes in, in
    the middle of an instruction (#UD on SVM). A run with ``immediate_exit`` set
    completes the exit and returns at once (KVM API documentation, KVM_EXIT_IO).
    """
    run = machine.cpu._run
    run.immediate_exit = 1
    try:
        machine.cpu.vcpu.run()
    except KvmInterrupted:
        pass
    finally:
        run.immediate_exit = 0


def _run_cpl0(machine: Machine, code: bytes, exits: int) -> float:
    """Run ``code`` at CPL0 from PROBE_CODE until ``exits`` probe-port exits;
    seconds taken."""
    _finish_pending_exit(machine)
    kernel = machine.kernel_space
    if kernel.walk(layout.PROBE_CODE) is None:
        kernel.map(layout.PROBE_CODE, PAGE_SIZE, Perm.READ | Perm.EXEC)
    kernel.memory.write(kernel.walk(layout.PROBE_CODE).paddr, code)
    cpu = machine.cpu
    cpu.set_address_space(kernel)
    regs = cpu.regs
    regs.rip, regs.rsp, regs.rflags = layout.PROBE_CODE, layout.ENTRY_STACK_TOP, int(RFLAGS.FIXED)
    cpu._run.kvm_dirty_regs |= int(SyncRegs.REGS)
    started = time.perf_counter()
    for _ in range(exits):
        exit_ = cpu.vcpu.run()
        if not (isinstance(exit_, IoExit) and exit_.port == PROBE_PORT):
            raise RuntimeError(f"CPL0 probe ended with {exit_}")
    return time.perf_counter() - started


class _StopAtFault(Handler):
    def on_exception(self, cpu, event) -> Stop:
        return Stop()


def _syscall_trap_s(machine: Machine, calls: int) -> float:
    """Seconds per ``syscall`` whose MSR_LSTAR target returns at once: what entering
    and leaving costs on this platform before any work is done (the fast path's
    floor)."""
    space = machine.new_address_space()
    base, stub = 0x40_0000, 0x50_0000
    try:
        space.map(base, PAGE_SIZE, Perm.READ | Perm.EXEC | Perm.USER)
        space.map(stub, PAGE_SIZE, Perm.READ | Perm.EXEC | Perm.USER)
        space.memory.write(space.walk(base).paddr,
                           _TRAP_LOOP_HEAD + struct.pack("<I", calls) + _TRAP_LOOP_BODY)
        space.memory.write(space.walk(stub).paddr, _RETURN_STUB)
        machine.cpu.enter_user(space, base, 0)
        machine.cpu.vcpu.set_msrs({MSR.LSTAR: stub})
        started = time.perf_counter()
        machine.run(_StopAtFault(), budget=30)
        return (time.perf_counter() - started) / calls
    finally:
        machine.cpu.vcpu.set_msrs({MSR.LSTAR: layout.TRAMPOLINE + _trampoline.SYSCALL_ENTRY})
        space.close()


def measure_syscall_trap_us(calls: int = 200_000) -> float:
    """Microseconds per ``syscall`` to a stub that returns at once, in a machine of
    its own: the floor under any way of serving system calls without an exit."""
    with Machine(64 << 20) as machine:
        return _syscall_trap_s(machine, calls) * 1e6


def _run_cpl3(machine: Machine, code: bytes, syscalls: int) -> float:
    space = machine.new_address_space()
    try:
        base = 0x40_0000
        space.map(base, PAGE_SIZE, Perm.READ | Perm.EXEC | Perm.USER)
        space.memory.write(space.walk(base).paddr, code)
        machine.cpu.enter_user(space, base, 0)
        started = time.perf_counter()
        machine.run(_CountSyscalls(syscalls), budget=30)
        return time.perf_counter() - started
    finally:
        space.close()


def measure_platform(seconds: float = 1.0) -> PlatformSpeed:
    """About ``seconds`` of measurements in a machine of its own."""
    share = seconds / 4
    with Machine(64 << 20) as machine:
        # Exits: calibrate with a few, then run about a quarter of the time.
        exit_code = _OUT + _JMP_BACK_TO_OUT
        per_exit = _run_cpl0(machine, exit_code, 50) / 50
        exits = max(50, int(share / per_exit))
        exit_s = _run_cpl0(machine, exit_code, exits) / exits
        # CPL0 loop speed.
        cpl0_iterations = 2000
        cpl0_s = _run_cpl0(machine, _loop_code(cpl0_iterations, _OUT), 1)
        cpl0_iterations = max(2000, int(cpl0_iterations * share / max(cpl0_s, 1e-6)))
        cpl0_s = _run_cpl0(machine, _loop_code(cpl0_iterations, _OUT), 1)
        # CPL3: system calls through the Python run loop, and the same loop.
        syscall_code = _SYSCALL + b"\xeb\xfc"   # syscall ; jmp back to it
        per_call = _run_cpl3(machine, syscall_code, 50) / 50
        calls = max(50, int(share / per_call))
        syscall_s = _run_cpl3(machine, syscall_code, calls) / calls
        cpl3_iterations = 100_000_000
        cpl3_s = _run_cpl3(machine, _loop_code(cpl3_iterations, _SYSCALL), 1)
        per_trap = _syscall_trap_s(machine, 1000)
        trap_s = _syscall_trap_s(machine, max(1000, int(share / 4 / per_trap)))
    return PlatformSpeed(exit_s * 1e6, syscall_s * 1e6, cpl3_s / cpl3_iterations * 1e9,
                         cpl0_s / cpl0_iterations * 1e9, trap_s * 1e6)
