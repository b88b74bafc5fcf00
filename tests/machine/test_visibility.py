"""Every page-table change the VMM makes is what guest CPL3 code sees next.

On software KVM the VMM's writes to guest page tables are invisible to the guest
until invalidated (PLATFORM.md), so each restriction is checked from inside the
guest, running the guest between the changes as a real program would. Each test runs
with every invalidation the platform supports: the host-side mprotect pair everywhere,
and on hardware KVM also the guest's own TLB flush (its default there). Under QEMU's
TCG (scripts/test-on-svm) a missing flush can pass unnoticed: TCG may flush its TLB
on every world switch; the software-KVM runs are the ones that prove invalidation.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guestcode import DATA, STACK_TOP, Recorder, exit_with, load_program, run_program
from guestcode import TEST_MEMORY
from kvmdune.kvm import probe_platform
from kvmdune.machine import Invalidation, Machine, PageFaultEvent, PFError, Stop
from kvmdune.memory import PTE, VMM, Perm

pytestmark = pytest.mark.kvm
RW_USER = Perm.READ | Perm.WRITE | Perm.USER
CHECKPOINT = 1001      # the guest's "let the VMM act now" system call
PAGES = 64
TABLE = 0x2000_0000    # where the list of pages to write lives


@pytest.fixture(params=list(Invalidation), ids=lambda invalidation: invalidation.value)
def machine(request):
    if (request.param is Invalidation.GUEST_TLB_FLUSH
            and probe_platform().restricting_changes_need_host_invalidation):
        pytest.skip("software KVM ignores the guest's own TLB flush "
                    "(test_guest_tlb_flush_is_not_enough_on_software_kvm)")
    with Machine(TEST_MEMORY, invalidation=request.param) as m:
        yield m


def bits(space, vaddr: int, size: int, kind: PTE, clear: bool = False) -> list[int]:
    """The pages with ``kind`` set, through a reader of the test's own."""
    return space.page_bits.reader("test").read(vaddr, size, kind, clear)


def checkpoint_program(before: str, after: str) -> str:
    return f"{before}\nmov rax, {CHECKPOINT}\nsyscall\n{after}\n" + exit_with("rax")


def run_with_change(machine, space, before: str, after: str, change) -> Stop:
    def on_syscall(cpu, event):
        if event.number == CHECKPOINT:
            change()
        return 0

    return run_program(machine, checkpoint_program(before, after),
                       Recorder(syscall_result=on_syscall), space=space)


def fresh_space(machine, perm=RW_USER):
    space = machine.new_address_space()
    space.map(STACK_TOP - 0x4000, 0x4000, RW_USER)
    space.map(DATA, 0x1000, perm)
    return space


def test_write_permission_removed_is_seen(machine):
    space = fresh_space(machine)
    stop = run_with_change(machine, space, f"mov qword ptr [{DATA}], 1",
                           f"mov qword ptr [{DATA}], 2",
                           lambda: space.protect(DATA, 0x1000, Perm.READ | Perm.USER))
    assert isinstance(stop.value, PageFaultEvent)
    assert stop.value.error == PFError.PRESENT | PFError.WRITE | PFError.USER


@pytest.mark.software_kvm
def test_guest_tlb_flush_is_not_enough_on_software_kvm():
    """Why software KVM needs the host-side invalidation: after the guest's own CR3
    reload the stale shadow entry still lets it write a page made read-only."""
    with Machine(TEST_MEMORY, invalidation=Invalidation.GUEST_TLB_FLUSH) as machine:
        space = fresh_space(machine)
        stop = run_with_change(machine, space, f"mov qword ptr [{DATA}], 1",
                               f"mov qword ptr [{DATA}], 2",
                               lambda: space.protect(DATA, 0x1000, Perm.READ | Perm.USER))
        assert machine.cpu.tlb_flushes == 1                  # the flush did run
        assert not isinstance(stop.value, PageFaultEvent)    # ... and changed nothing
        assert space.read(DATA, 8, VMM) == struct.pack("<Q", 2)


def test_unmap_is_seen(machine):
    space = fresh_space(machine)
    stop = run_with_change(machine, space, f"mov rax, qword ptr [{DATA}]",
                           f"mov rax, qword ptr [{DATA}]",
                           lambda: space.unmap(DATA, 0x1000))
    assert isinstance(stop.value, PageFaultEvent)
    assert stop.value.error == PFError.USER and stop.value.address == DATA


def test_user_access_removed_is_seen(machine):
    space = fresh_space(machine)
    stop = run_with_change(machine, space, f"mov rax, qword ptr [{DATA}]",
                           f"mov rax, qword ptr [{DATA}]",
                           lambda: space.protect(DATA, 0x1000, Perm.READ | Perm.WRITE))
    assert isinstance(stop.value, PageFaultEvent)
    assert stop.value.error == PFError.PRESENT | PFError.USER


def test_execute_permission_removed_is_seen(machine):
    space = fresh_space(machine, Perm.READ | Perm.EXEC | Perm.USER)
    space.write(DATA, b"\xc3", VMM)  # ret
    stop = run_with_change(machine, space, f"mov rbx, {DATA}\ncall rbx", "call rbx",
                           lambda: space.protect(DATA, 0x1000, Perm.READ | Perm.USER))
    assert isinstance(stop.value, PageFaultEvent)
    assert stop.value.error & PFError.INSTRUCTION and stop.value.address == DATA


def test_freed_frame_reused_elsewhere_is_unreachable_through_the_old_mapping(machine):
    space = fresh_space(machine)
    old = space.walk(DATA).paddr
    other = DATA + 0x10_0000

    def change():
        space.unmap(DATA, 0x1000)
        space.map(other, 0x1000, RW_USER)
        assert space.walk(other).paddr == old   # the allocator really reused it
        space.write(other, struct.pack("<Q", 0x5EC2E7), VMM)

    stop = run_with_change(machine, space, f"mov rax, qword ptr [{DATA}]",
                           f"mov rax, qword ptr [{DATA}]", change)
    assert isinstance(stop.value, PageFaultEvent) and stop.value.address == DATA
    # ... while the new mapping does reach it.
    assert run_program(machine, f"mov rax, qword ptr [{other}]\n" + exit_with("rax"),
                       space=space).value == 0x5EC2E7


def test_emptied_page_table_stays_and_gives_no_translation(machine):
    """A page table emptied by an unmap stays linked where it was (KVM's shadow may
    still link it there: freed and reused as another region's table, it would give
    the old region that region's pages; as data, the guest would write "entries"
    into it); the next page mapped gets another frame, and the old range faults
    even after the guest fills that page with entries aimed at another frame."""
    space = fresh_space(machine)
    lone = 0x5000_0000                      # a 2 MiB block of its own
    space.map(lone, 0x1000, RW_USER)
    table = space.walk(lone).entry_paddr & ~0xFFF
    target = machine.memory.frames.alloc()
    machine.memory.write(target, struct.pack("<Q", 0x5EC2E7))
    reused = DATA + 0x1000                  # DATA's block already has a table

    def change():
        space.unmap(lone, 0x1000)
        space.map(reused, 0x1000, RW_USER)
        assert table in set(space.tables.tables()) and space.tables.has_table(lone, 0x1000)
        assert space.walk(reused).paddr != table

    fill = (f"mov rax, {target | 0x7}\nmov rbx, {reused}\nmov ecx, 512\n"
            "1: mov [rbx + rcx*8 - 8], rax\ndec ecx\njnz 1b\n")
    stop = run_with_change(machine, space, f"mov rax, qword ptr [{lone}]",
                           fill + f"mov rax, qword ptr [{lone}]", change)
    assert isinstance(stop.value, PageFaultEvent) and stop.value.address == lone


def test_accessed_bit_cleared_is_set_again(machine):
    space = fresh_space(machine)
    seen = {}

    def change():
        seen["first"] = bits(space, DATA, 0x1000, PTE.ACCESSED, clear=True)
        seen["cleared"] = bits(space, DATA, 0x1000, PTE.ACCESSED)

    run_with_change(machine, space, f"mov rax, qword ptr [{DATA}]",
                    f"mov rax, qword ptr [{DATA}]", change)
    assert seen == {"first": [DATA], "cleared": []}
    assert bits(space, DATA, 0x1000, PTE.ACCESSED) == [DATA]


def write_pages_program(count: int) -> str:
    """Writes DATA + 4096*index for each of ``count`` indexes listed at TABLE."""
    return f"""
        mov rsi, {TABLE}
        mov rcx, {count}
        test rcx, rcx
        jz 2f
    1:  mov rax, qword ptr [rsi]
        shl rax, 12
        add rax, {DATA}
        mov byte ptr [rax], 1
        add rsi, 8
        dec rcx
        jnz 1b
    2:
    """ + exit_with("rcx")


subsets = st.sets(st.integers(min_value=0, max_value=PAGES - 1))


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=subsets, second=subsets)
def test_dirty_pages_reported_exactly(machine, first, second):
    space = machine.new_address_space()
    space.map(STACK_TOP - 0x4000, 0x4000, RW_USER)
    space.map(DATA, PAGES * 0x1000, RW_USER)
    space.map(TABLE, 0x1000, Perm.READ | Perm.USER)
    try:
        for written in (first, second):
            indexes = sorted(written)
            space.write(TABLE, struct.pack(f"<{len(indexes)}Q", *indexes), VMM)
            run_program(machine, write_pages_program(len(indexes)), space=space)
            reported = bits(space, DATA, PAGES * 0x1000, PTE.DIRTY, clear=True)
            assert reported == [DATA + i * 0x1000 for i in indexes]
            assert bits(space, DATA, PAGES * 0x1000, PTE.DIRTY) == []
    finally:
        space.close()


def write_rounds(machine, space, rounds, after_round) -> None:
    """Let the guest write each round's pages (indexes into DATA), calling
    ``after_round(index, written)`` after each, as a tracker's loop would."""
    for index, written in enumerate(rounds):
        indexes = sorted(written)
        space.write(TABLE, struct.pack(f"<{len(indexes)}Q", *indexes), VMM)
        run_program(machine, write_pages_program(len(indexes)), space=space)
        after_round(index, indexes)


def tracked_space(machine):
    space = machine.new_address_space()
    space.map(STACK_TOP - 0x4000, 0x4000, RW_USER)
    space.map(DATA, PAGES * 0x1000, RW_USER)
    space.map(TABLE, 0x1000, Perm.READ | Perm.USER)
    return space


def test_two_readers_of_dirty_bits_keep_their_own(machine):
    """A reader clearing every round, another reading every other round: each sees
    exactly the guest's writes since its own last clear."""
    space = tracked_space(machine)
    every, every_other = space.page_bits.reader("every"), space.page_bits.reader("other")
    rounds = [{1, 2, 3}, {3, 4}, {10}, {2, 11}]
    pending: set[int] = set()

    def after_round(index, written):
        nonlocal pending
        pending |= set(written)
        assert every.read(DATA, PAGES * 0x1000, PTE.DIRTY, clear=True) == \
            [DATA + i * 0x1000 for i in written]
        if index % 2:
            assert every_other.read(DATA, PAGES * 0x1000, PTE.DIRTY, clear=True) == \
                [DATA + i * 0x1000 for i in sorted(pending)]
            pending = set()

    try:
        write_rounds(machine, space, rounds, after_round)
    finally:
        space.close()


def rewrite_after_clear(machine, space) -> tuple[list[int], list[int]]:
    """The guest writes a page, the VMM reads and clears its D bit through a reader,
    the guest writes the page again: what the clear reported, and what the reader
    reports at the end."""
    page = DATA + 5 * 0x1000
    reader = space.page_bits.reader("test")
    seen = {}

    def change():
        seen["cleared"] = reader.read(DATA, PAGES * 0x1000, PTE.DIRTY, clear=True)

    run_with_change(machine, space, f"mov qword ptr [{page}], 1",
                    f"mov qword ptr [{page}], 2", change)
    return seen["cleared"], reader.read(DATA, PAGES * 0x1000, PTE.DIRTY, clear=False)


@pytest.mark.software_kvm
def test_cleared_dirty_bits_are_armed_by_kvms_dirty_log(machine):
    """On software KVM a D-only clear is made visible by KVM_CLEAR_DIRTY_LOG, never
    by the mprotect pair: the guest's next write sets D again. The log starts with
    the first clear of a dirty bit (until then KVM may map 2 MiB pieces)."""
    assert machine.memory.dirty_log_available and not machine.memory.dirty_log
    space = tracked_space(machine)
    space.invalidate = lambda ranges: pytest.fail(f"invalidated {ranges}")
    assert rewrite_after_clear(machine, space) == ([DATA + 5 * 0x1000], [DATA + 5 * 0x1000])
    assert machine.memory.dirty_log


@pytest.mark.software_kvm
def test_a_dirty_bit_cleared_without_write_protection_is_not_set_again(machine):
    """The control for the test above: without the write protection, the guest's
    second write does not set D again (its shadow entry is still writable)."""
    space = tracked_space(machine)
    space.write_protect = lambda ranges: None
    assert rewrite_after_clear(machine, space) == ([DATA + 5 * 0x1000], [])


def test_two_address_spaces_see_their_own_frames(machine):
    program = f"mov rax, qword ptr [{DATA}]\n" + exit_with("rax")
    spaces = []
    for value in (111, 222):
        space = fresh_space(machine)
        space.write(DATA, struct.pack("<Q", value), VMM)
        spaces.append(space)
    assert spaces[0].walk(DATA).paddr != spaces[1].walk(DATA).paddr
    results = [run_program(machine, program, space=space).value
               for space in spaces + spaces]
    assert results == [111, 222, 111, 222]


def test_huge_page_mapping_and_split_protection_seen_by_guest(machine):
    space = machine.new_address_space()
    space.map(STACK_TOP - 0x4000, 0x4000, RW_USER)
    huge = 0x4000_0000
    space.map(huge, 2 << 20, RW_USER, huge=True)
    target = huge + 0x12_3000
    seen = {}

    def change():
        seen["dirty"] = bits(space, huge, 2 << 20, PTE.DIRTY, clear=True)
        space.protect(target, 0x1000, Perm.READ | Perm.USER)

    stop = run_with_change(machine, space,
                           f"mov qword ptr [{target}], 5\nmov qword ptr [{huge}], 6",
                           f"mov qword ptr [{huge}], 7\nmov qword ptr [{target}], 8", change)
    assert seen["dirty"] == [huge]                      # one 2 MiB page, written
    assert isinstance(stop.value, PageFaultEvent) and stop.value.address == target
    assert space.walk(huge).page_size == 0x1000        # split into 4 KiB entries
    assert space.read(huge, 8) == struct.pack("<Q", 7)  # the rest stayed writable
    assert bits(space, huge, 2 << 20, PTE.DIRTY) == [huge]  # D cleared, then set again


@pytest.mark.parametrize("perm,before,after", [
    (RW_USER, f"mov qword ptr [{DATA}], 1", f"mov qword ptr [{DATA}], 2"),
    (RW_USER, f"mov rax, qword ptr [{DATA}]", f"mov rax, qword ptr [{DATA}]"),
    (Perm.READ | Perm.EXEC | Perm.USER, f"mov rbx, {DATA}\ncall rbx", "call rbx"),
], ids=["write", "read", "execute"])
def test_the_same_programs_run_clean_when_nothing_changes(machine, perm, before, after):
    """The positive control of the restriction tests above: their guest programs, with
    no change at the checkpoint, run to their exit — so the faults those tests see
    come from the change, not from the program."""
    space = fresh_space(machine, perm)
    if perm & Perm.EXEC:
        space.write(DATA, b"\xc3", VMM)  # ret
    stop = run_with_change(machine, space, before, after, lambda: None)
    assert not isinstance(stop.value, PageFaultEvent), stop
    assert isinstance(stop.value, int), stop
