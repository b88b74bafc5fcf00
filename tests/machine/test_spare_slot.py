"""The memory slot registered in the background for the first shared regions
(``GuestMemory.start_spare_slot``): the first shared file mapping that fits takes it
with no KVM call, and guest code reads and writes the file through it."""

from __future__ import annotations

import os
import struct

import pytest

from guestcode import DATA, STACK_TOP, exit_with, run_program
from kvmdune.memory import Perm
from kvmdune.memory.guest_memory import SPARE_SLOT_SIZE

pytestmark = pytest.mark.kvm
RW_USER = Perm.READ | Perm.WRITE | Perm.USER


def test_the_first_shared_region_takes_the_spare_slot_and_the_guest_reaches_the_file(
        machine, tmp_path):
    memory = machine.memory
    memory.start_spare_slot()
    memory.settle_spare()
    added = []
    register = machine.vm.set_user_memory_region
    machine.vm.set_user_memory_region = lambda *args: (added.append(args), register(*args))
    path = tmp_path / "shared.dat"
    path.write_bytes(struct.pack("<Q", 0x1234_5678_9ABC) + bytes(4088))
    fd = os.open(path, os.O_RDWR)
    try:
        region = memory.add_shared(4096, fd, 0, writable=True)
    finally:
        os.close(fd)
    assert added == []                                 # no KVM call: the spare's slot
    assert region.slot_size == SPARE_SLOT_SIZE
    space = machine.new_address_space()
    space.map(STACK_TOP - 0x4000, 0x4000, RW_USER)
    space.map(DATA, 4096, RW_USER, paddr=region.base)
    # The guest reads the file's word and writes it back doubled.
    stop = run_program(machine, f"mov rax, qword ptr [{DATA}]\nadd rax, rax\n"
                                f"mov qword ptr [{DATA}], rax\n" + exit_with("rax"),
                       space=space)
    assert stop.value == 2 * 0x1234_5678_9ABC
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] == 2 * 0x1234_5678_9ABC


def test_a_spare_still_registering_at_close_is_left_to_its_thread(machine):
    memory = machine.memory
    memory.start_spare_slot()
    memory.close()                         # whether or not the thread is done: no error
    assert memory.retired == []
