"""The Dune API's hottest hypercalls served without an exit and without Python:
dune_vm_mprotect of a few pages of pgroot or of a clone, and VM_BITS
(kvmdune_vm_read_bits, kvmdune_vm_clear_bits) on pgroot or a clone, answered by the
fast path's host thread from whichever vCPU's call ring they arrive on
(vmm_native/fastvm.c, fastbits.c; the hook is linux/native/vmm_calls.h); a VM_BITS
range too large for the ring exits and is answered natively by the vCPU's own thread
(``serve_here``). VM_BITS reads and clears as the Dune API's A/D reader: the
readers' bits of each space are pushed to the native side whenever they change
(PageBits.observers). libdune's own way of tracking dirty pages is served natively
by the vCPU's thread too (fastsync.c): VM_SYNC before dune_vm_page_walk (pgroot's
mirror given the A/D bits), and FLUSH_TLB while pgroot is the only root, when every
entry the program wrote is an A/D clear or a rights change within the page's
recorded ceiling (anything else, and every refusal, is vm.py's).

The native code serves a call only when it can give exactly the answer vm.py would,
and that answer is success: pgroot or a clone it knows (``add_root``: up to 32), at
most 16 pages within one page table, PERM_R kept, PERM_U unchanged, each page with
its ceiling known (``Mirror.record_ceilings``, written by vm.py when it checks a
protect of the page: for pgroot only its own pages, not aliases; forgotten whenever
the page's VMA, frame or alias status, or for a clone any VMA or frame's owner, may
change), the rights within it. It holds the process's lock meanwhile (tried, never
waited for: a VMM at work gets the call), and makes the change seen by every vCPU
before it answers with the VMM's own invalidations (KVM's dirty log for a write
removal, the host mprotect pair for more). Everything else exits to the VMM as
before. This module sets it up for one DuneVm: the native object with its roots'
tables (every leaf table of their mirrors, now and later), the handler installed in
the fast path, and the rings' hint that sends VM_MPROTECT there first.

Without the fast path (turned off, tracing), the native modules or the process's
native lock, nothing is served natively. On hardware KVM (the invalidation is a
guest TLB flush, which native code cannot ask for) only changes that take no access
away are served natively. A forked child starts without the handler (its parent's
belongs to the parent's VM); the child's DuneVm installs its own at its next protect
(``ensure_installed``).
"""

from __future__ import annotations

import functools
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
        self._fault_check = self._fault_check_of = None

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
        native_write_protect = memory.dirty_log and all(
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
        self._unwatch_readers()
        for index, space in enumerate(spaces):
            self._watch_reader(space, functools.partial(self._native.set_bits_reader, index))
        for root in vm.roots.values():
            if not root.is_pgroot:
                self.add_root(root)
        vm.proc.fast.set_vmm_calls(self._native.capsule(), self._module.SERVED_OPS)

    def _watch_reader(self, space: AddressSpace, push_masks: Callable[..., None]) -> None:
        """Keep the native side's copy of the A/D readers' bits of ``space`` current
        (VM_BITS reads and clears them as the Dune API's reader)."""
        def push() -> None:
            mine, others = space.page_bits.bit_masks(BITS_READER)
            push_masks(mine[PTE.ACCESSED], mine[PTE.DIRTY], others[PTE.ACCESSED],
                       others[PTE.DIRTY])
        push()
        space.page_bits.observers.append(push)
        self._watched.append((space, push))

    def _unwatch_readers(self, spaces: tuple[AddressSpace, ...] | None = None) -> None:
        """Stop pushing the readers' bits of ``spaces`` (None: of every space)."""
        kept = []
        for space, push in self._watched:
            if spaces is not None and space not in spaces:
                kept.append((space, push))
            elif push in space.page_bits.observers:
                space.page_bits.observers.remove(push)
        self._watched = kept

    def _add(self, base: int, table: Table, root: int = 0) -> None:
        live = self.vm.memory.mapping.address + table.frame
        self._native.add_table(base, live, table.shadow.buffer_info()[0],
                               table.ceilings.buffer_info()[0], root)

    def add_root(self, root) -> None:
        """Serve a clone's protects and A/D bits natively too (its tables, now and
        later, and its user view's readers), while there is room for it."""
        if self._native is None or not self._native.add_root(root.handle, root.view.cr3):
            return
        add = functools.partial(self._add, root=root.handle)
        for base, table in root.mirror.leaf_tables():
            add(base, table)
        root.mirror.on_new_leaf = add
        self._watch_reader(root.view, functools.partial(self._native.set_root_reader,
                                                        root.handle))

    def remove_root(self, root) -> None:
        """A clone is going: served no more (before its tables are released)."""
        root.mirror.on_new_leaf = None
        self._unwatch_readers((root.view,))
        self._native.remove_root(root.handle)

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

    def fault_check(self):
        """The native check of which faults of the program are its own (vm.py's
        ``restricts`` where pgroot's mirror decides it), for the native upcall
        delivery (upcalls.py); None while the handler is not installed in this
        process (a forked child before its first protect)."""
        fast = self.vm.proc.fast
        if self._native is None or fast is None or not fast.has_vmm_calls():
            return None
        if self._fault_check_of is not self._native:     # one capsule per native object
            self._fault_check, self._fault_check_of = self._native.fault_check(), self._native
        return self._fault_check

    def stats(self) -> dict[str, int]:
        return self._native.stats()

    def close(self) -> None:
        """Back to the VMM for every hypercall (before pgroot's tables go)."""
        for root in self.vm.roots.values():
            root.mirror.on_new_leaf = None
        self._unwatch_readers()
        fast = self.vm.proc.fast
        if fast is not None:
            fast.set_vmm_calls(None)
