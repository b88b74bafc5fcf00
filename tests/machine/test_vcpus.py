"""Several vCPUs in one machine: each with its own supervisor area and call slot,
running at once on host threads of their own, pooled for reuse, and every
page-table restriction reaching the ones that are running."""

from __future__ import annotations

import struct
import threading
import time

import pytest

from guestcode import (CODE, DATA, STACK_SIZE, STACK_TOP, TEST_MEMORY, Recorder, assemble,
                       exit_with)
from kvmdune.machine import Machine, PageFaultEvent, PFError, Stop, layout
from kvmdune.machine.x86 import MSR
from kvmdune.memory import PTE, VMM, Perm

pytestmark = pytest.mark.kvm
RW_USER = Perm.READ | Perm.WRITE | Perm.USER
ASK = 500           # the guest's "answer me" system call (no Linux call has it)
ROUNDS = 3000


@pytest.fixture
def machine():
    with Machine(TEST_MEMORY) as m:
        yield m


def shared_space(machine, source: str, cpus: int):
    """One address space with the code and a stack per vCPU (vCPU i's stack ends at
    STACK_TOP - i * STACK_SIZE)."""
    space = machine.new_address_space()
    space.map(STACK_TOP - cpus * STACK_SIZE, cpus * STACK_SIZE, RW_USER)
    space.map(DATA, 0x1000, RW_USER)
    code = assemble(source)
    space.map(CODE, -(-len(code) // 4096) * 4096, Perm.READ | Perm.EXEC | Perm.USER)
    space.write(CODE, code, VMM)
    return space


def start(cpu, space, index: int, **registers) -> None:
    cpu.enter_user(space, CODE, STACK_TOP - index * STACK_SIZE)
    for name, value in registers.items():
        setattr(cpu.regs, name, value)


def run_in_threads(cpus, handler, budget=60.0) -> list[Stop]:
    results: list = [None] * len(cpus)

    def body(i):
        results[i] = cpus[i].run(handler, budget=budget)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(cpus))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_vcpus_exit_at_once_through_their_own_supervisor_areas(machine):
    # Four vCPUs make thousands of exits each at the same time; each exit's registers
    # pass through its vCPU's own iret frame and stack: a shared one would mix them.
    source = f"""
        xor r13, r13
        mov r14, {ROUNDS}
    1:  mov rax, {ASK}
        mov rdi, rbx
        syscall
        add r13, rax
        dec r14
        jnz 1b
    """ + exit_with("r13")
    cpus = [machine.cpu] + [machine.add_cpu() for _ in range(3)]
    assert [cpu.index for cpu in cpus] == [0, 1, 2, 3]
    space = shared_space(machine, source, len(cpus))
    for index, cpu in enumerate(cpus):
        start(cpu, space, index, rbx=index)
    handler = Recorder(syscall_result=lambda cpu, event: event.args[0] * 3 + 1)
    stops = run_in_threads(cpus, handler)
    assert [stop.value for stop in stops] == [ROUNDS * (3 * i + 1) for i in range(4)]
    areas = {(cpu.sregs.tr.base, cpu.sregs.gdt.base) for cpu in cpus}
    assert areas == {(layout.cpu_area(i).tss, layout.cpu_area(i).gdt) for i in range(4)}


def test_guest_code_runs_on_vcpus_in_parallel(machine):
    # Two spinning vCPUs on two host threads both make progress (KVM_RUN releases
    # the GIL): each counts for a while, then the VMM stops both.
    source = "xor rbx, rbx\n1: inc rbx\njmp 1b\n"
    cpus = [machine.cpu, machine.add_cpu()]
    space = shared_space(machine, source, 2)
    for index, cpu in enumerate(cpus):
        start(cpu, space, index)
    stops = run_in_threads(cpus, Recorder(), budget=0.5)
    counts = [cpu.regs.rbx for cpu in cpus]
    assert all(stop.value is None for stop in stops)
    assert min(counts) > 0.2 * max(counts) > 0


def wait_for_write(space, value_after: int = 0) -> None:
    deadline = time.monotonic() + 30
    while struct.unpack("<Q", space.read(DATA, 8, VMM))[0] <= value_after:
        assert time.monotonic() < deadline, "the guest never wrote"
        time.sleep(0.001)


@pytest.mark.parametrize("change", ["protect", "unmap"])
def test_restriction_reaches_a_vcpu_running_user_code(machine, change):
    # vCPU 1 writes DATA in a loop; while it runs, the VMM (on another thread) takes
    # write access away or unmaps the page: its next write must fault, with no exit
    # of its own in between.
    source = f"mov rax, 1\n1: mov qword ptr [{DATA}], rax\ninc rax\njmp 1b\n"
    cpu = machine.add_cpu()
    space = shared_space(machine, source, 2)
    start(cpu, space, 1)
    stops: list = []
    thread = threading.Thread(target=lambda: stops.append(cpu.run(Recorder(), budget=30)))
    thread.start()
    try:
        wait_for_write(space)
        if change == "protect":
            space.protect(DATA, 0x1000, Perm.READ | Perm.USER)
        else:
            space.unmap(DATA, 0x1000)
    finally:
        thread.join()
    event = stops[0].value
    assert isinstance(event, PageFaultEvent) and event.address == DATA
    assert event.error & PFError.WRITE
    assert bool(event.error & PFError.PRESENT) == (change == "protect")


def test_dirty_bit_cleared_while_a_vcpu_writes_is_set_again(machine):
    source = f"mov rax, 1\n1: mov qword ptr [{DATA}], rax\ninc rax\njmp 1b\n"
    cpu = machine.add_cpu()
    space = shared_space(machine, source, 2)
    start(cpu, space, 1)
    thread = threading.Thread(target=lambda: cpu.run(Recorder(), budget=30))
    thread.start()
    try:
        wait_for_write(space)
        dirty = space.page_bits.reader("test")
        assert dirty.read(DATA, 0x1000, PTE.DIRTY, clear=True) == [DATA]
        # (The guest may have set it again already: it writes without pause.)
        seen = struct.unpack("<Q", space.read(DATA, 8, VMM))[0]
        wait_for_write(space, seen)
        assert dirty.read(DATA, 0x1000, PTE.DIRTY, clear=False) == [DATA]
    finally:
        cpu.stop()
        thread.join()


def test_released_vcpu_is_reused_from_a_fresh_state(machine):
    first = machine.add_cpu()
    space = shared_space(machine, "mov rax, 7\n" + exit_with("rax"), 2)
    start(first, space, 1, rbx=99)
    first.fs_base = 0x1234_0000
    assert first.run(Recorder()).value == 7
    machine.release_cpu(first)
    assert machine.cpus == [machine.cpu]
    again = machine.add_cpu()
    assert again is first and again.index == 1
    assert again.regs.rbx == 0 and again.fs_base == 0 and again.space is None
    start(again, space, 1)
    assert again.run(Recorder()).value == 7
    fresh = machine.add_cpu()
    assert fresh.index == 2


# The call ring's fields (native/callring.h).
REQUEST_SEQ, NR, ARG0, RESPONSE_SEQ, RESULT, DISPOSITION, HOST_STATE, FAST_BITMAP = (
    0x00, 0x08, 0x10, 0x40, 0x48, 0x50, 0x58, 0xC0)
HOST_SLEEPING, DONE = 1, 0


def test_each_vcpu_calls_through_its_own_slot(machine):
    # With the stubs installed, vCPU k's ``syscall`` lands on slot k's copy of the
    # stub, which writes its request into ring k; a server that reads only ring k
    # for vCPU k answers each with its own value.
    cpus = [machine.cpu, machine.add_cpu(), machine.add_cpu()]
    ring = machine.install_call_stub()
    late = machine.add_cpu()          # made after the stubs: it gets its slot too
    cpus.append(late)
    for cpu in cpus:
        assert cpu.vcpu.get_msrs([MSR.LSTAR])[MSR.LSTAR] == layout.call_stub_of(cpu.index)
    memory = machine.memory
    served = [0] * len(cpus)

    def ring_offset(cpu, field):
        return ring.ring_frame + cpu.index * layout.CALL_SLOT_SIZE + field

    def server(cpu):
        def serve():
            view = memory.view
            seq, number, arg = struct.unpack_from("<QQQ", view, ring_offset(cpu, REQUEST_SEQ))
            assert seq > served[cpu.index], f"vCPU {cpu.index} found no request in its ring"
            served[cpu.index] = seq
            assert number == ASK, number
            struct.pack_into("<QI", view, ring_offset(cpu, RESULT), arg * 10 + cpu.index, DONE)
            struct.pack_into("<Q", view, ring_offset(cpu, RESPONSE_SEQ), seq)
        return serve

    for cpu in cpus:
        struct.pack_into("<I", memory.view, ring_offset(cpu, HOST_STATE), HOST_SLEEPING)
        # ASK goes through the ring; exit (not in the bitmap) straight to the VMM.
        memory.view[ring_offset(cpu, FAST_BITMAP) + ASK // 8] = 1 << (ASK % 8)
        cpu.call_wait = server(cpu)
    source = f"mov rax, {ASK}\nmov rdi, rbx\nsyscall\n" + exit_with("rax")
    space = shared_space(machine, source, len(cpus))
    ring.map_into(space)
    for index, cpu in enumerate(cpus):
        start(cpu, space, index, rbx=index + 5)
    stops = run_in_threads(cpus, Recorder())
    assert [stop.value for stop in stops] == [(i + 5) * 10 + i for i in range(4)]
    machine.remove_call_stub()
    entry = layout.TRAMPOLINE + machine_syscall_entry()
    assert all(cpu.vcpu.get_msrs([MSR.LSTAR])[MSR.LSTAR] == entry for cpu in cpus)


def machine_syscall_entry() -> int:
    from kvmdune.machine import _trampoline

    return _trampoline.SYSCALL_ENTRY
