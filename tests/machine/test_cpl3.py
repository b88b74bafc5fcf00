"""Guest code at CPL3 on real KVM: system calls, faults, exceptions, privilege."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guestcode import CODE, DATA, STACK_TOP, Recorder, exit_with, load_program, run_program
from kvmdune.machine import (Action, ExceptionEvent, PageFaultEvent, PFError, Stop,
                             SyscallEvent, Vector, layout)
from kvmdune.memory import Perm

pytestmark = pytest.mark.kvm
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
RW_USER = Perm.READ | Perm.WRITE | Perm.USER


def test_code_at_cpl3_computes_and_returns_through_syscall(machine):
    stop = run_program(machine, "mov rax, 6\nimul rax, rax, 7\n" + exit_with("rax"))
    assert stop.value == 42
    assert machine.cpu.sregs.cs.selector & 3 == 0  # back in the trampoline, not CPL3


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=U64, args=st.tuples(U64, U64, U64, U64, U64, U64), result=U64)
def test_syscall_number_args_and_result_round_trip(machine, number, args, result):
    regs = ["rdi", "rsi", "rdx", "r10", "r8", "r9"]
    source = f"mov rax, {number}\n" + "".join(
        f"mov {reg}, {value}\n" for reg, value in zip(regs, args))
    source += "syscall\nmov rbx, rax\nmov rax, 1000\nsyscall\n" + exit_with("rbx")
    recorder = Recorder(syscall_result=lambda cpu, ev: result if ev.number == number else 0)
    if number == 60:
        return  # that number is the test's own exit
    stop = run_program(machine, source, recorder)
    first = recorder.events[0]
    assert isinstance(first, SyscallEvent)
    assert first.number == number and first.args == args
    assert stop.value == result


def test_syscall_preserves_registers_and_red_zone(machine):
    # Data below RSP (the red zone) and callee registers survive a system call.
    source = """
        mov rbx, 0x1111
        mov rbp, 0x2222
        mov r12, 0x3333
        mov qword ptr [rsp-8], 0x4444
        mov qword ptr [rsp-128], 0x5555
        mov rax, 39
        syscall
        cmp rbx, 0x1111
        jne 1f
        cmp rbp, 0x2222
        jne 1f
        cmp r12, 0x3333
        jne 1f
        cmp qword ptr [rsp-8], 0x4444
        jne 1f
        cmp qword ptr [rsp-128], 0x5555
        jne 1f
        mov rax, 7
        jmp 2f
    1:  mov rax, 99
    2:
    """ + exit_with("rax")
    assert run_program(machine, source).value == 7


def test_unmapped_access_faults_and_retries_after_mapping(machine):
    source = f"mov rax, qword ptr [{DATA + 0x18}]\n" + exit_with("rax")
    space_holder = {}

    def fault(cpu, event):
        space = space_holder["space"]
        space.map(DATA, 0x1000, Perm.READ | Perm.USER)
        space.write(DATA + 0x18, (1234).to_bytes(8, "little"), access=__import__(
            "kvmdune.memory", fromlist=["VMM"]).VMM)
        return Action.RETRY

    recorder = Recorder(fault=fault)
    space = load_program(machine, source)
    space_holder["space"] = space
    stop = machine.run(recorder, budget=30)
    pf = recorder.events[0]
    assert isinstance(pf, PageFaultEvent)
    assert pf.address == DATA + 0x18
    assert pf.error == PFError.USER            # not present, read, user mode
    assert pf.rip == CODE
    assert stop.value == 1234


def test_write_to_read_only_page_traps_then_continues(machine):
    """Appel & Li's "trap": a write to a protected page faults, the handler
    unprotects it, and the write completes."""
    source = f"mov qword ptr [{DATA}], 77\nmov rax, qword ptr [{DATA}]\n" + exit_with("rax")
    space = machine.new_address_space()
    space.map(STACK_TOP - 0x4000, 0x4000, RW_USER)
    space.map(DATA, 0x1000, Perm.READ | Perm.USER)

    def fault(cpu, event):
        space.protect(DATA, 0x1000, RW_USER)
        return Action.RETRY

    recorder = Recorder(fault=fault)
    stop = run_program(machine, source, recorder, space=space)
    pf = recorder.events[0]
    assert pf.error == PFError.PRESENT | PFError.WRITE | PFError.USER
    assert pf.address == DATA
    assert stop.value == 77


def test_skip_continues_after_the_faulting_instruction(machine):
    source = "mov rax, 5\nud2\nadd rax, 1\n" + exit_with("rax")
    recorder = Recorder(fault=lambda cpu, event: Action.SKIP)
    assert run_program(machine, source, recorder).value == 6
    assert recorder.events[0] == ExceptionEvent(Vector.UD, None, CODE + 7)


def test_handler_changes_registers(machine):
    source = "ud2\n" + exit_with("rbx")

    def fault(cpu, event):
        cpu.regs.rbx = 0xABCDEF
        cpu.regs.rip += 2
        return Action.RESUME

    assert run_program(machine, source, Recorder(fault=fault)).value == 0xABCDEF


@pytest.mark.parametrize("instruction", [
    "hlt", "mov rax, cr3", "mov cr3, rax", "wrmsr", "rdmsr", "in al, 0x70",
    "out 0x70, al", "cli", "sti", "lgdt [rsp]", "lidt [rsp]", "ltr ax", "invlpg [rsp]",
    "mov dr0, rax", "wbinvd", "clts",
])
def test_privileged_instructions_raise_gp(machine, instruction):
    stop = run_program(machine, instruction + "\n" + exit_with("rax"))
    assert isinstance(stop.value, ExceptionEvent)
    assert stop.value.vector == Vector.GP
    assert stop.value.rip == CODE


@pytest.mark.parametrize("source,vector", [
    ("ud2", Vector.UD),
    ("xor edx, edx\nxor ecx, ecx\nmov eax, 1\ndiv ecx", Vector.DE),
    ("int3", Vector.BP),
    ("int 0x80", None),          # no gate 0x80 and no 32-bit table: contained
    ("sysenter", None),
])
def test_exceptions_by_name(machine, source, vector):
    stop = run_program(machine, source + "\n" + exit_with("rax"))
    assert isinstance(stop.value, ExceptionEvent)
    if vector is not None:
        assert stop.value.vector == vector
    else:
        assert stop.value.vector in (Vector.GP, Vector.UD)


def test_alignment_check(machine):
    source = """
        pushfq
        or qword ptr [rsp], 0x40000
        popfq
        mov rax, qword ptr [rsp+1]
    """ + exit_with("rax")
    stop = run_program(machine, source)
    assert stop.value.vector == Vector.AC


@pytest.mark.parametrize("address", [
    layout.TRAMPOLINE, layout.GDT, layout.IDT, layout.TSS, layout.ENTRY_STACK,
    layout.EXCEPTION_STACK,
])
@pytest.mark.parametrize("write", [False, True])
def test_supervisor_area_is_out_of_reach(machine, address, write):
    access = (f"mov qword ptr [rbx], rax" if write else "mov rax, qword ptr [rbx]")
    stop = run_program(machine, f"mov rbx, {address}\n{access}\n" + exit_with("rax"))
    event = stop.value
    assert isinstance(event, PageFaultEvent)
    assert event.address == address
    assert event.error & PFError.PRESENT and event.error & PFError.USER
    assert bool(event.error & PFError.WRITE) == write


def test_jump_into_supervisor_code_is_a_syscall_request_at_most(machine):
    # Jumping to the trampoline from CPL3 can at most ask for a system call (from
    # the address in RCX), never run supervisor code at CPL3.
    source = f"mov rax, 39\nlea rcx, [rip+1f]\nmov r11, 0x202\nmov rbx, {layout.TRAMPOLINE + 2}\njmp rbx\n1:\n" + exit_with("rax")
    stop = run_program(machine, source)
    assert isinstance(stop.value, PageFaultEvent)
    assert stop.value.error & PFError.INSTRUCTION


def test_no_user_mapping_reaches_a_page_table(machine):
    space = load_program(machine, "nop\n" + exit_with("rax"))
    space.map(DATA, 0x10000, RW_USER)
    tables = set(space.tables.tables()) | set(machine.kernel_space.tables.tables())
    # The positive control: the set really holds this space's tables (a root, and
    # the tables below it that map DATA), so "not in tables" is a real check.
    assert space.cr3 in tables and space.walk(DATA).entry_paddr & ~0xFFF in tables
    for vaddr in list(range(DATA, DATA + 0x10000, 0x1000)) + [CODE, STACK_TOP - 0x1000]:
        found = space.walk(vaddr)
        assert found is not None and found.paddr & ~0xFFF not in tables


def test_non_canonical_return_address_is_a_gp_for_the_guest(machine):
    bad_rip = 0x8000_0000_0000_0000
    seen = []

    def fault(cpu, event):
        seen.append(event)
        if len(seen) == 1:
            cpu.regs.rip = bad_rip
            return Action.RESUME
        return Stop(value=event)

    stop = run_program(machine, "ud2\n", Recorder(fault=fault))
    assert stop.value == ExceptionEvent(Vector.GP, 0, bad_rip)
