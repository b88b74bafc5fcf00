"""Hardware KVM (VT-x, SVM): ``syscall`` really enters CPL0 at MSR_LSTAR, and
``sysretq`` really returns to CPL3 (PLATFORM.md: software KVM does neither, so these
are skipped there; scripts/test-on-svm runs them under emulated AMD SVM).

Each test maps a supervisor-only code page of its own at layout.PROBE_CODE and points
MSR_LSTAR at it, as the call stub's hardware branch relies on.
"""

from __future__ import annotations

import pytest

from guestcode import CODE, Recorder, assemble, exit_with, load_program
from kvmdune.machine import ExceptionEvent, Stop, SyscallEvent, Vector, _trampoline, layout
from kvmdune.machine.x86 import MSR
from kvmdune.memory import PAGE_SIZE, Perm

pytestmark = [pytest.mark.kvm, pytest.mark.hardware_kvm]
SYSCALL_ENTRY = layout.TRAMPOLINE + _trampoline.SYSCALL_ENTRY
CF, DF = 1 << 0, 1 << 10


def install_lstar_code(machine, source: str) -> None:
    """Supervisor-only code at PROBE_CODE, and MSR_LSTAR pointing at it."""
    kernel = machine.kernel_space
    kernel.map(layout.PROBE_CODE, PAGE_SIZE, Perm.READ | Perm.EXEC)
    machine.memory.write(kernel.walk(layout.PROBE_CODE).paddr, assemble(source))
    machine.cpu.vcpu.set_msrs({MSR.LSTAR: layout.PROBE_CODE})


def test_syscall_enters_cpl0_at_lstar(machine):
    # At LSTAR: record CS and the address `syscall` left in RCX, then exit through
    # the trampoline's own syscall entry (an `out`), as a real kernel entry would.
    install_lstar_code(machine, "mov ebx, cs\nmov r12, rcx\n"
                                f"mov r13, {SYSCALL_ENTRY}\njmp r13")
    seen = {}

    def on_syscall(cpu, event):
        seen.update(cs=cpu.regs.rbx, rcx=cpu.regs.r12, number=event.number)
        return Stop()

    load_program(machine, "mov rax, 39\nsyscall\nud2")
    machine.run(Recorder(syscall_result=on_syscall), budget=30)
    code = assemble("mov rax, 39\nsyscall\nud2")
    assert seen["cs"] == layout.KERNEL_CS          # CPL0: the code at LSTAR ran there
    assert seen["rcx"] == CODE + code.index(b"\x0f\x05") + 2
    assert seen["number"] == 39


def test_sysretq_returns_to_cpl3_at_rcx_with_r11_flags(machine):
    # LSTAR: straight back, as the call stub's CPL0 branch does.
    install_lstar_code(machine, "sysretq")
    # CF and DF set before the call: MSR_SFMASK clears DF at CPL0, sysretq restores
    # both from R11.
    source = ("stc\nstd\nmov rax, 39\nsyscall\n"
              "pushfq\npop r14\ncld\nmov ebx, cs\nmov ecx, ss\nud2")
    stop = _run(machine, source)
    assert isinstance(stop.value, ExceptionEvent) and stop.value.vector == Vector.UD
    regs = machine.cpu.regs
    assert regs.rbx == layout.USER_CS and regs.rcx == layout.USER_DS
    assert regs.r14 & (CF | DF) == CF | DF
    assert stop.value.rip == CODE + len(assemble(source)) - 2


def _run(machine, source: str):
    load_program(machine, source)
    return machine.run(Recorder(), budget=30)


def test_exit_path_syscall_arrives_as_a_port_exit_not_a_fault(machine):
    """With MSR_LSTAR at the trampoline, a hardware ``syscall`` reaches the ``out`` of
    the syscall entry at CPL0 (software KVM instead faults on the page at LSTAR)."""
    exits = []
    original = machine.cpu._decode

    def decode(exit_):
        exits.append(exit_)
        return original(exit_)

    machine.cpu._decode = decode
    load_program(machine, "mov rax, 7\n" + exit_with("rax"))
    stop = machine.run(Recorder(), budget=30)
    assert stop.value == 7
    assert [getattr(e, "port", None) for e in exits] == [_trampoline.SYSCALL_PORT]
    assert isinstance(stop.event, SyscallEvent)


def test_the_platform_is_recognised_as_hardware():
    from kvmdune.kvm import PlatformKind, probe_platform

    platform = probe_platform()
    assert platform.kind in (PlatformKind.SVM, PlatformKind.VMX)
    assert not platform.restricting_changes_need_host_invalidation
