"""Hardware KVM: page-table restrictions reach the guest through its own TLB flush
(a CR3 reload at CPL0 before user code runs again), not a host-side mprotect pair.

Under QEMU's TCG a missing flush may pass unnoticed (TCG can flush its TLB on every
world switch), so these tests check that the flush runs, and when; that the guest
then sees each restriction is tests/machine/test_visibility.py's job, which runs with
both invalidations here and proves itself on software KVM.
"""

from __future__ import annotations

import pytest

from guestcode import DATA, Recorder, STACK_TOP, exit_with, run_program
from kvmdune.machine import Invalidation, PageFaultEvent, PFError
from kvmdune.memory import PTE, Perm

pytestmark = [pytest.mark.kvm, pytest.mark.hardware_kvm]
RW_USER = Perm.READ | Perm.WRITE | Perm.USER
CHECKPOINT = 1001


def run_with_change(machine, change) -> object:
    space = machine.new_address_space()
    space.map(STACK_TOP - 0x4000, 0x4000, RW_USER)
    space.map(DATA, 0x1000, RW_USER)

    def on_syscall(cpu, event):
        if event.number == CHECKPOINT:
            change(space)
        return 0

    source = (f"mov qword ptr [{DATA}], 1\nmov rax, {CHECKPOINT}\nsyscall\n"
              f"mov qword ptr [{DATA}], 2\n" + exit_with("rax"))
    return run_program(machine, source, Recorder(syscall_result=on_syscall), space=space)


def test_hardware_machines_invalidate_by_guest_tlb_flush(machine):
    assert machine.invalidation is Invalidation.GUEST_TLB_FLUSH


def test_a_restriction_runs_one_guest_flush_before_user_code(machine):
    stop = run_with_change(machine, lambda space: space.protect(DATA, 0x1000,
                                                                Perm.READ | Perm.USER))
    assert machine.cpu.tlb_flushes == 1
    assert isinstance(stop.value, PageFaultEvent)
    assert stop.value.error == PFError.PRESENT | PFError.WRITE | PFError.USER


def test_a_batch_of_restrictions_runs_one_flush(machine):
    def change(space):
        with space.batch():
            space.protect(DATA, 0x1000, Perm.READ | Perm.USER)
            space.page_bits.reader("test").read(DATA, 0x1000, PTE.DIRTY, clear=True)
            space.protect(DATA, 0x1000, RW_USER)

    stop = run_with_change(machine, change)
    assert machine.cpu.tlb_flushes == 1
    assert stop.value == 0                           # writable again: ran to exit


def test_adding_access_needs_no_flush(machine):
    stop = run_with_change(machine, lambda space: space.map(DATA + 0x1000, 0x1000, RW_USER))
    assert stop.value == 0
    assert machine.cpu.tlb_flushes == 0
