"""DuneVm's bookkeeping over real guest memory without a VM (as tests/linux/test_mm.py
does for MemoryMap): the frames no entry may ever map (every page-table frame of
every space, the mirrors', the trampoline's), the window's placement, frames given
back when roots and the API are done with them, and the invariants after each kind
of call. What the guest sees is tested by the other test_vm_* modules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kvmdune.dune.entries import PERM
from kvmdune.dune.hypercall import HypercallOp as Op
from kvmdune.dune.mirror import WINDOW_NAME, WINDOW_SIZE
from kvmdune.dune.vm import DuneVm
from kvmdune.linux.abi import Errno, MapFlags, MapType, ProtFlags
from kvmdune.linux.mm import MemoryMap
from kvmdune.machine import layout
from kvmdune.memory import PAGE_SIZE, AddressSpace, Perm
from kvmdune.memory.guest_memory import GuestMemory

from .invariants import check

RW = int(ProtFlags.PROT_READ | ProtFlags.PROT_WRITE)
ANONYMOUS = int(MapType.MAP_PRIVATE | MapFlags.MAP_ANONYMOUS)
URW = int(PERM.R | PERM.W | PERM.U)


class Guest:
    """A program's memory map and a DuneVm over real guest memory (no vCPU)."""

    def __init__(self, map_full: bool = True) -> None:
        self.memory = GuestMemory(64 << 20)
        self.kernel = AddressSpace(self.memory)
        self.kernel.map(layout.TRAMPOLINE, PAGE_SIZE, Perm.READ | Perm.EXEC)
        self.baseline = self.memory.frames.allocated_bytes
        self.space = AddressSpace(self.memory, kernel=self.kernel)
        self.mm = MemoryMap(self.space)
        self.data = self.mmap(16)
        proc = SimpleNamespace(space=self.space, mm=self.mm,
                               machine=SimpleNamespace(kernel_space=self.kernel))
        self.vm = DuneVm(proc, map_full)

    def mmap(self, pages: int) -> int:
        return self.mm.sys_mmap(0, pages * PAGE_SIZE, RW, ANONYMOUS, None, 0)

    def call(self, op: int, *args: int) -> int:
        return self.vm.hypercall(None, op, tuple(args) + (0,) * (6 - len(args)))

    def frame(self, va: int) -> int:
        return self.space.walk(va).paddr

    def close(self) -> None:
        self.vm.close()
        self.mm.close()
        self.space.close()


@pytest.fixture
def guest():
    g = Guest()
    yield g
    g.close()
    assert g.memory.frames.allocated_bytes == g.baseline, "frames leaked"


def test_no_page_table_mirror_or_trampoline_frame_is_ever_mappable(guest):
    clone = guest.call(Op.VM_CLONE, guest.vm.pgroot)
    assert clone > 0
    spaces = [guest.kernel, guest.space] + [root.view for root in guest.vm.roots.values()]
    forbidden = {table for space in spaces for table in space.tables.tables()}
    forbidden |= {table.frame for root in guest.vm.roots.values()
                  for table in root.mirror.by_address.values()}
    forbidden.add(guest.kernel.walk(layout.TRAMPOLINE).paddr)
    assert len(forbidden) > 10
    for frame in sorted(forbidden):
        for root in (guest.vm.pgroot, clone):
            assert guest.call(Op.VM_MAP_PHYS, root, guest.data, PAGE_SIZE, frame,
                              URW) == -Errno.EPERM
    assert check(guest.vm) == []


def test_the_window_is_a_sealed_vma_below_the_mmap_base(guest):
    window = guest.mm.find(guest.vm.pgroot)
    assert window.name == WINDOW_NAME and window.sealed and window.vmm_backed
    assert window.end - window.start == WINDOW_SIZE
    assert window.end <= guest.mm.mmap_base
    assert guest.mm.sys_munmap(window.start, PAGE_SIZE) == -Errno.EPERM
    assert guest.mm.sys_mprotect(window.start, PAGE_SIZE, 0) == -Errno.EPERM
    assert not guest.mm.handle_fault(window.start + 100 * PAGE_SIZE, 0)   # never demand-paged
    again = guest.mmap(1)
    assert not window.start <= again < window.end


def test_frames_come_back_when_roots_and_pages_go(guest):
    clone = guest.call(Op.VM_CLONE, guest.vm.pgroot)
    spare = guest.mmap(16)
    assert guest.mm.sys_munmap(spare, 16 * PAGE_SIZE) == 0   # a hole for map_pages
    allocated = guest.memory.frames.allocated_bytes
    assert guest.call(Op.VM_MAP_PAGES, clone, spare, 4 * PAGE_SIZE, URW) == 0
    assert guest.memory.frames.allocated_bytes >= allocated + 4 * PAGE_SIZE
    assert guest.call(Op.VM_MAP_PHYS, clone, spare + 8 * PAGE_SIZE, PAGE_SIZE,
                      guest.vm.roots[clone].view.walk(spare).paddr, URW) == 0
    assert check(guest.vm) == []
    assert guest.call(Op.VM_UNMAP, clone, spare, 4 * PAGE_SIZE) == 0
    assert check(guest.vm) == []                 # one of them still mapped at +8 pages
    assert guest.call(Op.VM_FREE, clone) == 0
    assert guest.memory.frames.allocated_bytes < allocated
    assert not guest.vm._dune_frames and not guest.vm._refs


def test_pgroot_changes_are_the_program_views(guest):
    page = guest.data
    assert guest.call(Op.VM_MPROTECT, guest.vm.pgroot, page, PAGE_SIZE, PERM.R) == 0
    found = guest.space.walk(page)
    assert found.present and not found.writable and found.nx
    assert guest.vm.restricts(page, 2) and not guest.vm.restricts(page, 0)
    assert guest.call(Op.VM_MPROTECT, guest.vm.pgroot, page, PAGE_SIZE, 0) == 0
    assert not guest.space.walk(page).present and guest.vm.restricts(page, 0)
    assert guest.call(Op.VM_UNMAP, guest.vm.pgroot, page, PAGE_SIZE) == 0
    assert guest.space.walk(page) is None and guest.vm.restricts(page, 0)
    assert guest.mm.find(page) is not None               # Linux still maps it
    assert guest.mm.sys_mprotect(page, PAGE_SIZE, RW) == 0
    assert not guest.vm.restricts(page, 2)
    assert check(guest.vm) == []


def test_map_pages_into_a_hole_of_pgroot_is_a_new_vma(guest):
    hole = guest.mmap(4)
    assert guest.mm.sys_munmap(hole, 4 * PAGE_SIZE) == 0
    assert guest.call(Op.VM_MAP_PAGES, guest.vm.pgroot, hole, 4 * PAGE_SIZE,
                      int(PERM.R | PERM.U)) == 0
    vma = guest.mm.find(hole)
    assert (vma.start, vma.end, vma.prot) == (hole, hole + 4 * PAGE_SIZE,
                                               int(ProtFlags.PROT_READ))
    assert guest.vm.roots[guest.vm.pgroot].view.walk(hole).user
    # Now the mapping's rights are the ceiling.
    assert guest.call(Op.VM_MPROTECT, guest.vm.pgroot, hole, PAGE_SIZE, URW) == -Errno.EACCES
    assert check(guest.vm) == []


def test_a_failed_call_changes_nothing(guest):
    last = guest.data + 15 * PAGE_SIZE
    read_only = guest.mm.sys_mmap(last + PAGE_SIZE, PAGE_SIZE, int(ProtFlags.PROT_READ),
                                  ANONYMOUS | int(MapFlags.MAP_FIXED), None, 0)
    assert read_only == last + PAGE_SIZE
    root = guest.vm.pgroot
    assert guest.call(Op.VM_MPROTECT, root, last, PAGE_SIZE, int(PERM.R | PERM.U)) == 0
    before = guest.vm.pgroot_root.mirror.get(last)
    # The second page of the range allows no write: nothing of the range changes.
    assert guest.call(Op.VM_MPROTECT, root, last, 2 * PAGE_SIZE, URW) == -Errno.EACCES
    assert guest.call(Op.VM_MPROTECT, root, last, 2 * PAGE_SIZE, int(PERM.R | PERM.X)) \
        == -Errno.EACCES
    assert guest.call(Op.VM_MAP_PHYS, root, read_only, PAGE_SIZE, guest.frame(read_only),
                      URW) == -Errno.EACCES
    assert guest.call(Op.VM_MAP_PHYS, root, last, 2 * PAGE_SIZE, guest.frame(last),
                      URW) in (-Errno.EACCES, -Errno.EPERM)
    assert guest.call(Op.VM_MAP_PHYS, root, last, 2 * PAGE_SIZE, PAGE_SIZE, URW) \
        == -Errno.EPERM
    assert guest.vm.pgroot_root.mirror.get(last) == before
    assert not guest.space.walk(last).writable
    assert check(guest.vm) == []


def test_the_api_gives_everything_back_at_close():
    g = Guest(map_full=False)
    clone = g.call(Op.VM_CLONE, g.vm.pgroot)
    g.call(Op.VM_MAP_PAGES, clone, 0x1000_0000, 8 * PAGE_SIZE, URW)
    g.close()
    assert g.memory.frames.allocated_bytes == g.baseline


def test_the_call_stub_leaves_hypercalls_to_the_vmm():
    """The stub sends every number from the hypercall base on straight to the VMM
    (callring.h's CALLRING_VMM_CALLS), without handing it to the host thread."""
    from kvmdune.linux.privileged import HYPERCALL_BASE
    from kvmdune.machine import _trampoline

    assert _trampoline.CALL_STUB_VMM_CALLS == HYPERCALL_BASE
