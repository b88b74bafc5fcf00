"""The Dune API's hottest hypercalls served without an exit and without Python:
dune_vm_mprotect of a few pages of pgroot, and VM_BITS (kvmdune_vm_read_bits,
kvmdune_vm_clear_bits) on pgroot, answered by the fast path's host thread from
whichever vCPU's call ring they arrive on (vmm_native/fastvm.c, fastbits.c; the hook
is linux/native/vmm_calls.h); a VM_BITS range too large for the ring exits and is
answered natively by the vCPU's own thread (``serve_here``). VM_BITS reads and
clears as the Dune API's A/D reader: the readers' bits of each space are pushed to
the native side whenever they change (PageBits.observers).

The native code serves a call only when it can give exactly the answer vm.py would,
and that answer is success: pgroot, at most 16 pages within one page table, PERM_R
kept, PERM_U unchanged, each page pgroot's own (not an alias) with its ceiling known
(``Mirror.record_ceilings``, written by vm.py when it checks a protect of the page,
forgotten whenever the page's VMA, frame or alias status may change), the rights
within it. It holds the process's lock meanwhile (tried, never waited for: a VMM at
work gets the call), and makes the change seen by every vCPU before it answers
with the VMM's own invalidations (KVM's dirty log for a write removal, the host
mprotect pair for more). Everything else exits to the VMM as before. This module
sets it up for one DuneVm: the native object with pgroot's tables (every leaf table
of pgroot's mirror, now and later), the handler installed in the fast path, and the
rings' hint that sends VM_MPROTECT there first.

Without the fast path (turned off, tracing), the native modules or the process's
native lock, nothing is served natively. On hardware KVM (the invalidation is a
guest TLB flush, which native code cannot ask for) only changes that take no access
away are served natively. A forked child starts without the handler (its parent's
belongs to the parent's VM); the child's DuneVm installs its own at its next
protect (``ensure_installed``).
"""

from __future__ import annotations

from typing import Callable

from ..machine import layout
from ..memory.address_space import AddressSpace
from ..memory.pagetable import PTE
from ..memory.guest_memory import GUEST_MEMORY_SLOT
from .mirror import Table

#: The reader of A/D bits the Dune API is (each reader sees the bits since its own clear).
BITS_READER = "dune"

__all__ = ["NativeHypercalls"]

#: NativeVm's "no invalidation of this kind here" (the VMM's then).
_VMM_INVALIDATES = -1


def _module():
    try:
        from . import _fastvm
    except ImportError:
        return None
    return _fastvm


class NativeHypercalls:
    """The native server's view of one DuneVm's pgroot, and its installation."""

    def __init__(self, vm, native_module) -> None:
        self.vm = vm
        self._module = native_module
        self._native = None
        self._watched: list[tuple[AddressSpace, Callable[[], None]]] = []

    @classmethod
    def start(cls, vm) -> "NativeHypercalls | None":
        """Serve ``vm``'s hot hypercalls natively where the process has a fast path
        and a lock native code can take."""
        native_module = _module()
        proc = vm.proc
        # (A bare process object, as unit tests make, has no fast path at all.)
        threads = getattr(proc, "threads", None)
        if (native_module is None or getattr(proc, "fast", None) is None
                or not hasattr(getattr(threads, "lock", None), "address")):
            return None
        served = cls(vm, native_module)
        served._install()
        return served

    def _install(self) -> None:
        vm = self.vm
        memory, mirror = vm.memory, vm.pgroot_root.mirror
        spaces = (vm.space, vm.pgroot_root.view)
        # KVM's dirty log write-protects a frame in one ioctl, the host mprotect pair
        # invalidates it; where the spaces invalidate otherwise (a guest TLB flush on
        # hardware KVM), restrictions stay the VMM's.
        # (The Dune API reads dirty bits: its process logs from the start.)
        native_write_protect = memory.start_dirty_log() and all(
            space.write_protect == memory.write_protect for space in spaces)
        native_invalidate = all(space.invalidate == memory.invalidate for space in spaces)
        self._native = self._module.NativeVm(
            memory=memory.mapping.address, memory_size=memory.size, pgroot=vm.pgroot,
            program_cr3=vm.space.cr3, user_cr3=vm.pgroot_root.view.cr3,
            window_start=vm.window.start, window_end=vm.window.end,
            program_end=layout.USER_PROGRAM_END,
            vm_fd=vm.proc.machine.vm.fd if native_write_protect else _VMM_INVALIDATES,
            slot=GUEST_MEMORY_SLOT,
            host_prot=memory.mapping.prot if native_invalidate else _VMM_INVALIDATES,
            process_lock=vm.proc.threads.lock.address)
        for base, table in mirror.leaf_tables():
            self._add(base, table)
        mirror.on_new_leaf = self._add
        self._watch_readers(spaces)
        vm.proc.fast.set_vmm_calls(self._native.capsule(), self._module.SERVED_OPS)

    def _watch_readers(self, spaces: tuple[AddressSpace, ...]) -> None:
        """Keep the native side's copy of the A/D readers' bits of each space current
        (VM_BITS reads and clears them as the Dune API's reader)."""
        self._unwatch_readers()
        for index, space in enumerate(spaces):
            def push(index: int = index, space: AddressSpace = space) -> None:
                mine, others = space.page_bits.bit_masks(BITS_READER)
                self._native.set_bits_reader(index, mine[PTE.ACCESSED], mine[PTE.DIRTY],
                                             others[PTE.ACCESSED], others[PTE.DIRTY])
            push()
            space.page_bits.observers.append(push)
            self._watched.append((space, push))

    def _unwatch_readers(self) -> None:
        for space, push in self._watched:
            if push in space.page_bits.observers:
                space.page_bits.observers.remove(push)
        self._watched = []

    def _add(self, base: int, table: Table) -> None:
        live = self.vm.memory.mapping.address + table.frame
        self._native.add_table(base, live, table.shadow.buffer_info()[0],
                               table.ceilings.buffer_info()[0])

    def ensure_installed(self) -> None:
        """Install the handler again if the fast path lost it (in a forked child)."""
        fast = self.vm.proc.fast
        if fast is not None and not fast.has_vmm_calls():
            self._install()

    def serve_here(self, op: int, args: tuple[int, ...]) -> int | None:
        """A hypercall served natively in the calling (vCPU's) thread, which holds
        the process's lock: its result, or None for the VMM's Python path."""
        self.ensure_installed()          # a forked child's records are its own
        served = self._native.serve_here(op, tuple(args[:6]))
        if served is None:
            return None
        result, quiesce = served
        if quiesce and self.vm.memory.quiesce is not None:
            self.vm.memory.quiesce()      # as GuestMemory's own invalidations do
        return result

    def stats(self) -> dict[str, int]:
        return self._native.stats()

    def close(self) -> None:
        """Back to the VMM for every hypercall (before pgroot's tables go)."""
        self.vm.pgroot_root.mirror.on_new_leaf = None
        self._unwatch_readers()
        fast = self.vm.proc.fast
        if fast is not None:
            fast.set_vmm_calls(None)
