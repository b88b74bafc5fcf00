"""Software KVM (kvm_pvm): ``syscall`` does not leave CPL3 (PLATFORM.md). The exit
path and the call stub rely on what follows; tests/hardware/ holds the hardware
counterparts (``syscall`` entering CPL0, ``sysretq`` back)."""

from __future__ import annotations

import pytest

from guestcode import Recorder, assemble, load_program
from kvmdune.machine import ExceptionEvent, PageFaultEvent, Vector, layout
from kvmdune.machine.x86 import MSR
from kvmdune.memory import PAGE_SIZE, VMM, Perm

pytestmark = [pytest.mark.kvm, pytest.mark.software_kvm]
USER_STUB = 0x50_0000


def test_syscall_runs_a_user_page_at_lstar_at_cpl3(machine):
    space = load_program(machine, "mov rax, 39\nsyscall\nud2")
    space.map(USER_STUB, PAGE_SIZE, Perm.READ | Perm.EXEC | Perm.USER)
    space.write(USER_STUB, assemble("mov ebx, cs\nud2"), VMM)
    machine.cpu.vcpu.set_msrs({MSR.LSTAR: USER_STUB})
    stop = machine.run(Recorder(), budget=30)
    assert isinstance(stop.value, ExceptionEvent) and stop.value.vector == Vector.UD
    assert stop.value.rip == USER_STUB + 2          # the stub's ud2, run at CPL3
    assert machine.cpu.regs.rbx == layout.USER_CS


def test_syscall_to_a_supervisor_page_faults_at_lstar(machine):
    kernel = machine.kernel_space
    kernel.map(layout.PROBE_CODE, PAGE_SIZE, Perm.READ | Perm.EXEC)
    machine.memory.write(kernel.walk(layout.PROBE_CODE).paddr, assemble("hlt"))
    machine.cpu.vcpu.set_msrs({MSR.LSTAR: layout.PROBE_CODE})
    load_program(machine, "mov rax, 39\nsyscall\nud2")
    stop = machine.run(Recorder(), budget=30)
    assert isinstance(stop.value, PageFaultEvent)
    assert stop.value.address == stop.value.rip == layout.PROBE_CODE
