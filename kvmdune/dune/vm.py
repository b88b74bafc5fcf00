"""The page-table half of the Dune API: roots, their mirrors and user views, and the
hypercalls on them (``KVMDUNE_HC_VM_*``, FLUSH_TLB, LOAD_CR3, VA_TO_PA, VM_BITS).

The model (DUNE-DESIGN.md). The program runs at CPL3 in its Linux address space
(``proc.space``, whose VMAs ``proc.mm`` keeps): the *program view*. A *root* is a
handle the program gets from dune_init (``pgroot``) or dune_vm_clone: the address
of the top table of the root's *mirror* (mirror.py), a page table in libdune's
format the program reads and writes in place. The VMM keeps, per root, the
shadow of that mirror (the entries as it last checked them) and the root's
*user view*: the hardware address space that code started with dune_jump_to_user
runs in, holding exactly the root's PTE_U pages (U set) and, at the call stub's
address, the trampoline's frame supervisor-only, so that a ``syscall`` there never
reaches the call ring.

pgroot describes the program's own memory. Its entries are the program view's
pages: the same frames, the same rights; PTE_U is the root's own. So a Dune change
of pgroot's rights or frames acts on the program view too (Appel & Li's traps see
it), while PTE_U acts only on the user view. A clone is separate from then on: it
acts only on its own user view.

Which wins, Linux or Dune. The Linux view (the VMAs) is the ceiling: a Dune call
never grants a page more than its VMA's rights (nor a frame more than the rights
of the VMA that owns it: a read-only file mapping stays read-only), and never
changes a VMA, except that dune_vm_map_pages/map_phys into a hole of pgroot
records the new mapping as an anonymous VMA with the rights asked. A Linux memory
call wins over the range it touches: mmap (and demand paging, brk, mremap) brings
new pages into pgroot with their VMA's rights and dune_init's PERM_U (all pages
with dune_init(1), none with dune_init(0)); munmap, mremap's old range and
MADV_DONTNEED/FREE take pages out of pgroot, and out of every root and alias that
used their frames; mprotect gives pgroot's entries the VMA's new rights (keeping
PTE_U and the software bits) and lifts dune_vm_unmap over the range. Pages
dune_vm_unmap'ed from pgroot stay in their VMA, and a touch faults to the
program (``restricts``), never to demand paging.

Checks. Every root handle, address, length, permission and frame from the guest is
checked before anything changes: an unknown root is EINVAL; a range outside the
program's part of the user half, or over the page-table window, is EINVAL;
PERM_BIG/PERM_BIG_1GB are ENOSYS (kvmdune maps no large pages); a frame address that
is not a frame the program owns (one of its pages in the program view, or a frame
dune_vm_map_pages gave a clone) is EPERM, so page tables, the trampoline, the call
ring and the mirrors themselves are never mappable; rights beyond the ceiling
above are EACCES. A call that fails changes nothing.

Writes through mirror pointers take effect at FLUSH_TLB (dune_flush_tlb*) or
LOAD_CR3 without CR3_NOFLUSH: each changed entry is checked as above and applied,
or restored to what it was (the flush then returns the first refusal's -errno).
Clearing A or D through a pointer clears the bit (for the "dune" reader); setting
one is ignored; directory entries cannot be changed.

Invalidation: every restriction of the program view or a user view goes through
``AddressSpace.batch()`` (one invalidation per space and call).
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Callable, Iterator

from ..linux.abi import Errno, ProtFlags
from ..linux.mm import Vma, perm_for
from ..machine import PFError, layout
from ..machine.boot import user_syscall_page
from ..memory import PAGE_SIZE, AddressSpace, GuestFault, OutOfGuestMemory, Perm, WRITE
from ..memory.address_space import Batch
from ..memory.pagetable import PTE as HW
from ..memory.pagetable import USER_SPACE_END
from .entries import (AD, ADDR_MASK, ALL_RIGHTS, LARGE_PAGE_PERMS, PERM, PTE, RIGHT_R,
                      RIGHT_W, RIGHT_X, RIGHTS_BITS, entry_bits, perm_of, rights, rights_bits,
                      rights_of_perm, user_visible)
from .hardware import Change, apply_changes
from .hypercall import BitsFlags, HypercallOp
from . import _mirror
from .mirror import Mirror, Window
from .native import BITS_READER, NativeHypercalls
from .ranges import RangeSet

#: The part of the user half that is the program's (above it: the call stub and ring).
PROGRAM_END = layout.USER_PROGRAM_END
#: LOAD_CR3: libdune's CR3_NOFLUSH, and the bits of CR3 that are not the table's address.
CR3_NOFLUSH = 1 << 63
CR3_FLAGS = PAGE_SIZE - 1
MASK64 = (1 << 64) - 1
#: Bytes of address space one leaf table maps.
LEAF_TABLE_SPAN = 512 * PAGE_SIZE
#: VM_BITS writes its bitmap in pieces of this many bytes (the VMM never holds more).
BITMAP_CHUNK = 64 << 10
MASK32 = (1 << 32) - 1
_P, _U, _W = int(PTE.P), int(PTE.U), int(PTE.W)
_A, _D, _PS = int(PTE.A), int(PTE.D), int(PTE.PS)
_HW_PRESENT = int(HW.PRESENT | HW.PROTNONE)
_HW_OWNED = int(HW.OWNED)
_HW_ADDR = 0x000F_FFFF_FFFF_F000
_PROT_WRITE = int(ProtFlags.PROT_WRITE)
_PERM_R, _PERM_W = int(PERM.R), int(PERM.W)
_PF_WRITE, _PF_INSTRUCTION = int(PFError.WRITE), int(PFError.INSTRUCTION)

#: Hypercalls the native code may answer in the vCPU's thread (native.py).
_NATIVE_IN_THREAD = frozenset({int(HypercallOp.VM_BITS), int(HypercallOp.VM_SYNC),
                               int(HypercallOp.FLUSH_TLB)})


class Refused(Exception):
    """A hypercall's request that is refused, with the errno the guest gets."""

    def __init__(self, errno: int, why: str = "") -> None:
        super().__init__(why or str(errno))
        self.errno = errno


class Root:
    """One root: its mirror (the program's handle and entries) and its user view."""

    def __init__(self, mirror: Mirror, view: AddressSpace, is_pgroot: bool) -> None:
        self.mirror, self.view, self.is_pgroot = mirror, view, is_pgroot

    @property
    def handle(self) -> int:
        return self.mirror.handle


def page_down(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


def page_up(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def read_bits(space: AddressSpace, start: int, size: int, bits: int, clear: bool,
              reader: str = BITS_READER) -> list[int]:
    """Pages of the range whose A/D ``bits`` were set since ``reader``'s last clear
    (the program's Dune API has its own; /proc/self/pagemap's and tools' are theirs)."""
    return space.page_bits.reader(reader).read(start, size, HW(bits), clear)


class DuneVm:
    """The page tables of one Dune process (see the module docstring).

    ``proc`` is the Linux process (``space``, ``mm``, ``machine``); ``map_full`` is
    dune_init's argument. The VMM calls ``hypercall`` for ops >= 16,
    ``restricts`` before its demand paging, ``resolve_user_fault`` for faults of
    user code, ``user_space`` for the space user code runs in, and ``close`` at
    exec and exit."""

    def __init__(self, proc, map_full: bool) -> None:
        self.proc = proc
        self.space: AddressSpace = proc.space
        self.mm = proc.mm
        self.memory = self.space.memory
        self.kernel_space: AddressSpace = proc.machine.kernel_space
        self.map_full = bool(map_full)
        self._user_syscall_frame = self._new_user_syscall_frame()
        self.window = Window(self.mm, self.space)
        self.roots: dict[int, Root] = {}
        #: References to frames from entries that do not own them: every clone entry,
        #: and pgroot's aliases (a frame mapped at a second address by map_phys).
        self._refs: Counter[int] = Counter()
        #: pgroot's alias pages: address -> frame.
        self._aliases: dict[int, int] = {}
        #: Frames dune_vm_map_pages gave clones; freed when no entry uses them.
        self._dune_frames: set[int] = set()
        self._to_free: set[int] = set()
        #: Pages dune_vm_unmap took out of pgroot that Linux still maps.
        self._unmapped = RangeSet()
        self._owners: dict[int, int] | None = None
        self.closed = False
        self.pgroot_root = self._new_root(is_pgroot=True)
        #: load_cr3's choice per vCPU (each guest thread loads its own root, as each
        #: CPU has its own CR3); pgroot where a thread loaded none.
        self._current: dict[object, Root] = {}
        # The roots mirror the program's pages 4 KiB by 4 KiB: no 2 MiB pages from now.
        self.mm.huge_pages = False
        self.space.tables.split_huge_pages(0, PROGRAM_END)
        self._track(0, PROGRAM_END)
        self.mm.observer = self
        #: The hot hypercall served natively (native.py), where the process can.
        self.native = NativeHypercalls.start(self)
        self._ops: dict[int, Callable[..., int]] = {
            HypercallOp.VM_MPROTECT: self.vm_mprotect,
            HypercallOp.VM_MAP_PHYS: self.vm_map_phys,
            HypercallOp.VM_MAP_PAGES: self.vm_map_pages,
            HypercallOp.VM_UNMAP: self.vm_unmap,
            HypercallOp.VM_LOOKUP: self.vm_lookup,
            HypercallOp.VM_CLONE: self.vm_clone,
            HypercallOp.VM_FREE: self.vm_free,
            HypercallOp.VM_SYNC: self.vm_sync,
            HypercallOp.FLUSH_TLB: self.flush_tlb,
            HypercallOp.LOAD_CR3: self.load_cr3,
            HypercallOp.VA_TO_PA: self.va_to_pa,
            HypercallOp.VM_BITS: self.vm_bits,
        }

    # -- the VMM's interface --------------------------------------------------------
    @property
    def pgroot(self) -> int:
        """pgroot's handle (what dune_init gives the program)."""
        return self.pgroot_root.handle

    def hypercall(self, cpu, op: int, args: tuple[int, ...]) -> int:
        """Serve page-table hypercall ``op``: its result, or -errno."""
        handler = self._ops.get(op)
        if handler is None or self.closed:
            return -Errno.ENOSYS
        if op == HypercallOp.LOAD_CR3:
            return self.serve(handler, (args[0], cpu))     # the caller's thread's CR3
        if self.native is not None and self._native_may_serve(op):
            served = self.native.serve_here(op, args)      # natively, in this thread
            if served is not None:
                return served
        return self.serve(handler, args)

    def _native_may_serve(self, op: int) -> bool:
        """Whether the native code may try ``op`` (it hands back what it cannot
        answer as this module would): VM_BITS and VM_SYNC always; FLUSH_TLB while
        pgroot is the only root and no directory entry was written (the native code
        knows pgroot's leaf tables only)."""
        if op == HypercallOp.FLUSH_TLB:
            return len(self.roots) == 1 and not any(
                table.differs() for table in self.pgroot_root.mirror.directories())
        return op in _NATIVE_IN_THREAD

    def current(self, cpu=None) -> Root:
        """The root user code of ``cpu``'s thread runs in next (None: the main
        thread's, for tools)."""
        return self._current.get(self._thread_key(cpu), self.pgroot_root)

    def forget_thread(self, cpu) -> None:
        """The thread of ``cpu`` ended: a new thread on its vCPU starts in pgroot."""
        self._current.pop(cpu, None)

    def _thread_key(self, cpu):
        if cpu is not None:
            return cpu
        threads = getattr(self.proc, "threads", None)
        return threads.main_task.cpu if threads is not None else None

    def serve(self, operation: Callable[..., int], args: tuple[int, ...]) -> int:
        """Run one of the operations below on (the first of) ``args``: its result,
        or -errno when refused (then nothing changed)."""
        try:
            return operation(*args[:operation.__code__.co_argcount - 1])
        except Refused as refused:
            return -refused.errno
        except OutOfGuestMemory:          # guest memory, or the window, is full
            return -Errno.ENOMEM
        finally:
            self._release_frames()

    def restricts(self, address: int, error: PFError) -> bool:
        """Whether a fault of the program at ``address`` comes from a Dune restriction
        of pgroot (then it is the program's to handle, never demand paging's)."""
        page = page_down(address)
        if self.closed or not 0 <= page < PROGRAM_END:
            return False
        if page in self._unmapped:
            return True
        entry = self.pgroot_root.mirror.get(page)
        if not entry & ADDR_MASK:
            return False
        return not _allows(rights(entry), error)

    def resolve_user_fault(self, cpu, address: int, error: PFError) -> bool:
        """A fault of user code in ``cpu``'s current root: True when the VMM's demand
        paging resolved it (a page of the program's not backed yet that pgroot grants
        user code by dune_init(1)'s default); retry then."""
        root = self.current(cpu)
        page = page_down(address)
        if (self.closed or not root.is_pgroot or not self.map_full
                or not 0 <= page < PROGRAM_END or self.window.overlaps(page, page + PAGE_SIZE)
                or page in self._unmapped or root.mirror.get(page)):
            return False
        if not self.mm.handle_fault(address, error & ~PFError.USER):
            return False
        return user_visible(root.mirror.get(page)) and _allows(rights(root.mirror.get(page)), error)

    def user_space(self, cpu) -> AddressSpace:
        """The hardware address space ``cpu``'s user code runs in: its current
        root's view."""
        return self.current(cpu).view

    def close(self) -> None:
        """Release every root, the window and the frames the API gave (at exec and
        exit, while the machine's memory is still there)."""
        if self.closed:
            return
        self.closed = True
        if self.native is not None:
            self.native.close()
        if self.mm.observer is self:
            self.mm.observer = None
            self.mm.huge_pages = self.mm.thp.may_map_huge
        with self.space.batch():
            if not self.space.closed:
                for address in self._aliases:
                    self.space.unmap(address, PAGE_SIZE)
            for root in self.roots.values():
                root.mirror.close()
                root.view.close()
        for frame in self._dune_frames:
            self.memory.frames.free(frame)
        self._dune_frames.clear()
        self.roots.clear()
        self.memory.frames.free(self._user_syscall_frame)
        self.window.close()

    # -- MapObserver: Linux's changes of the program's memory -----------------------
    def mapped(self, start: int, end: int) -> None:
        """New pages in the program view join pgroot with dune_init's default."""
        self._forget_clone_ceilings()
        for start, end in self._program_parts(start, end):
            self.pgroot_root.mirror.forget_ceilings(start, end)
            self._unmapped.remove(start, end)
            self._track(start, end)

    def unmapping(self, start: int, end: int) -> None:
        """Pages leave the program view: out of pgroot and of every root using them."""
        self._forget_clone_ceilings()
        root = self.pgroot_root
        for start, end in self._program_parts(start, end):
            root.mirror.forget_ceilings(start, end)
            self._unmapped.remove(start, end)
            changes = [(va, old, 0) for va, old in self._entries(root, start, end) if old]
            with self._batch():
                self._commit(root, changes)
            self._release_frames()

    def protected(self, start: int, end: int) -> None:
        """Linux mprotect: pgroot's entries get the VMA's rights (aliases no more than
        their frame's), keeping PTE_U and the software bits."""
        self._forget_clone_ceilings()
        root = self.pgroot_root
        for start, end in self._program_parts(start, end):
            root.mirror.forget_ceilings(start, end)
            self._unmapped.remove(start, end)
            changes = []
            vma_ceiling = self._vma_ceiling(start)      # one prot over the whole range
            for va, old in self._entries(root, start, end):
                if not old & ADDR_MASK:
                    continue
                ceiling = (self._ceiling(root, va, old & ADDR_MASK) or 0
                           if va in self._aliases else vma_ceiling)
                changes.append((va, old, (old & ~RIGHTS_BITS) | rights_bits(ceiling)))
            aliases = [(va, new) for va, _old, new in changes if va in self._aliases]
            with self._batch():
                self._commit(root, changes)
                for va, new in aliases:      # Linux gave the VMA's rights; cap them
                    self.space.protect(va, PAGE_SIZE, perm_of(new, user=True))

    # -- hypercalls ------------------------------------------------------------------
    def vm_mprotect(self, root: int, va: int, length: int, perm: int) -> int:
        """dune_vm_mprotect: set ``perm`` on every entry of the range (holes skipped);
        without PERM_R it is PERM_NONE (with PERM_W: EINVAL), as libdune."""
        target = self._root(root)
        perm = _perm(perm)
        if not perm & _PERM_R:
            if perm & _PERM_W:
                raise Refused(Errno.EINVAL, "PERM_W without PERM_R")
            perm = 0
        bits = entry_bits(perm)
        span = self._range(va, length)
        if span is None:
            return 0
        changes = [(page, old, (old & (ADDR_MASK | _PS)) | bits)
                   for page, old in self._entries(target, *span) if old & ADDR_MASK]
        ceilings = self._check_rights(target, changes)
        with self._batch():
            self._commit(target, changes, program_view=True)
        # Checked: the native path may serve the next protects of these pages.
        target.mirror.record_ceilings(ceilings)
        if self.native is not None:
            self.native.ensure_installed()
        return 0

    def vm_map_pages(self, root: int, va: int, length: int, perm: int) -> int:
        """dune_vm_map_pages: fresh zeroed frames for every page of the range."""
        target = self._root(root)
        perm = _perm(perm)
        if not perm & _PERM_R and perm & ~_PERM_R:
            raise Refused(Errno.EINVAL, "rights without PERM_R")
        bits = entry_bits(perm)
        span = self._range(va, length)
        if span is None:
            return 0
        start, end = span
        # Enough for the frames and their tables, so that the call fails before it
        # changes anything rather than halfway.
        if self.memory.frames.free_bytes < (end - start) * 2 + 8 * PAGE_SIZE:
            raise Refused(Errno.ENOMEM, "guest memory limit")
        if target.is_pgroot:
            self._map_program_pages(start, end, bits)
            return 0
        frames = [self.memory.frames.alloc() for _ in range(start, end, PAGE_SIZE)]
        self._dune_frames.update(frames)
        changes = [(page, old, frame | bits) for (page, old), frame
                   in zip(self._all_entries(target, start, end), frames)]
        with self._batch():
            self._commit(target, changes)
        return 0

    def vm_map_phys(self, root: int, va: int, length: int, pa: int, perm: int) -> int:
        """dune_vm_map_phys: frames from ``pa`` on, which must be the program's."""
        target = self._root(root)
        bits = entry_bits(_perm(perm))
        span = self._range(va, length)
        if span is None:
            return 0
        start, end = span
        changes = [(page, old, ((page - va + pa) & MASK64 & ADDR_MASK) | bits)
                   for page, old in self._all_entries(target, start, end)]
        self._check_frames(target, changes)
        if target.is_pgroot:
            self._map_program_phys(changes)
            return 0
        with self._batch():
            self._commit(target, changes)
        return 0

    def vm_unmap(self, root: int, va: int, length: int) -> int:
        """dune_vm_unmap: remove the range's entries (for pgroot: from the program
        view too; its frames are freed, and a touch faults to the program)."""
        target = self._root(root)
        span = self._range(va, length)
        if span is None:
            return 0
        changes = [(page, old, 0) for page, old in self._entries(target, *span) if old]
        with self._batch():
            self._commit(target, changes, program_view=True)
        if target.is_pgroot:
            self._unmapped.add(*span)
        return 0

    def vm_lookup(self, root: int, va: int, create: int, out: int) -> int:
        """dune_vm_lookup: the address of ``va``'s live entry, stored at ``out``;
        -ENOENT where a table is missing and ``create`` is 0 (libdune's rule: a
        present table gives its entry, whatever the entry holds)."""
        target = self._root(root)
        if not 0 <= va < PROGRAM_END:
            raise Refused(Errno.EINVAL, "address outside the program's user half")
        table = target.mirror.leaf_table(va, create=bool(create & MASK32))
        if table is None:
            raise Refused(Errno.ENOENT)
        page = page_down(va)
        self._sync(target, page, page + PAGE_SIZE)
        self._store(out, table.pointer((va >> 12) & 511).to_bytes(8, "little"))
        return 0

    def vm_clone(self, root: int) -> int:
        """dune_vm_clone: a new root with the same entries (the frames shared)."""
        source = self._root(root)
        clone = self._new_root(is_pgroot=False)
        try:
            with self._batch():
                for base, table in list(source.mirror.leaf_tables()):
                    entries = table.shadow.tolist()
                    self._commit(clone, [(base + i * PAGE_SIZE, 0, entry)
                                         for i, entry in enumerate(entries) if entry])
        except BaseException:
            self._free_root(clone)
            raise
        if self.native is not None:
            self.native.add_root(clone)
        return clone.handle

    def vm_free(self, root: int) -> int:
        """dune_vm_free: release a clone (pgroot cannot be freed: EINVAL)."""
        target = self._root(root)
        if target.is_pgroot:
            raise Refused(Errno.EINVAL, "pgroot cannot be freed")
        self._free_root(target)
        return 0

    def vm_sync(self, root: int, start_va: int, end_va: int) -> int:
        """Bring the A and D bits of the entries of [start_va, end_va] (inclusive, as
        dune_vm_page_walk's range) up to date, before a walk of the mirror."""
        target = self._root(root)
        start, end = page_down(start_va), min(page_down(end_va) + PAGE_SIZE, USER_SPACE_END)
        if start < end:
            self._sync(target, start, end)
        return 0

    def flush_tlb(self, va: int, length: int) -> int:
        """dune_flush_tlb (``length`` 0) and dune_flush_tlb_one: apply the program's
        writes to mirror entries of the range, each checked; refused ones are
        restored and the first refusal is the result."""
        if length == 0:
            start, end = 0, USER_SPACE_END
        else:
            start, end = page_down(va), min(page_up(min(va + length, MASK64)), USER_SPACE_END)
        refusal = 0
        for root in list(self.roots.values()):
            if root.mirror.restore_directories():
                refusal = refusal or -Errno.EINVAL
            if start < end:
                refusal = self._apply_writes(root, start, end) or refusal
        return refusal

    def load_cr3(self, cr3: int, cpu=None) -> int:
        """load_cr3: the root the user code of ``cpu``'s thread (None: the main
        thread's) runs in from now on (a TLB flush first unless CR3_NOFLUSH)."""
        target = self._root(cr3 & ~CR3_NOFLUSH & ~CR3_FLAGS)
        result = 0 if cr3 & CR3_NOFLUSH else self.flush_tlb(0, 0)
        self._current[self._thread_key(cpu)] = target
        return result

    def va_to_pa(self, va: int) -> int:
        """dune_va_to_pa: the guest-physical address behind ``va`` in the program
        view (a page not backed yet is backed first); -EFAULT where nothing is."""
        if not 0 <= va < PROGRAM_END or self.window.overlaps(va, va + 1):
            return -Errno.EFAULT
        found = self.space.walk(va)
        if found is None and page_down(va) not in self._unmapped:
            if self.mm.handle_fault(va, PFError(0)):
                found = self.space.walk(va)
        return -Errno.EFAULT if found is None else found.paddr

    def vm_bits(self, root: int, va: int, length: int, bits: int, bitmap: int,
                flags: int) -> int:
        """kvmdune_vm_read_bits/clear_bits: which pages of the range had any of
        ``bits`` (PTE_A, PTE_D) set since the Dune API's last clear, one bit per page
        (LSB first) at ``bitmap``; with KVMDUNE_BITS_CLEAR they are cleared (bitmap may
        then be NULL). Returns how many pages had them."""
        target = self._root(root)
        if not bits or bits & ~AD or flags & ~int(BitsFlags.CLEAR):
            raise Refused(Errno.EINVAL, "bits or flags")
        clear = bool(flags & BitsFlags.CLEAR)
        span = self._range(va, length)
        if span is None:
            return 0
        start, end = span
        count = (end - start) // PAGE_SIZE
        if bitmap or not clear:
            self._check_writable(bitmap, (count + 7) // 8)
        with self._batch():
            pages = self._bits(target, start, end, bits, clear)
        if bitmap:
            self._store_bitmap(bitmap, start, count, pages)
        return len(pages)

    # -- roots -----------------------------------------------------------------------
    def _new_root(self, is_pgroot: bool) -> Root:
        mirror = Mirror(self.window, keeps_ceilings=True)
        # Not machine.new_address_space(): a user view maps no call stub or ring. The
        # user-syscall page at the stubs' address, supervisor-only, turns a syscall of
        # user code on any vCPU into an exit (hardware) or a #PF at that vCPU's call
        # slot (software KVM).
        view = AddressSpace(self.memory, kernel=self.kernel_space,
                            invalidate=self.kernel_space.invalidate,
                            write_protect=self.kernel_space.write_protect)
        try:
            view.map(layout.CALL_STUB, PAGE_SIZE, Perm.READ | Perm.EXEC,
                     paddr=self._user_syscall_frame)
        except BaseException:
            view.close()
            mirror.close()
            raise
        root = Root(mirror, view, is_pgroot)
        self.roots[root.handle] = root
        return root

    def _new_user_syscall_frame(self) -> int:
        """A frame of the VMM's (the program owns it in no root) holding
        ``user_syscall_page()``."""
        frame = self.memory.frames.alloc()
        page = user_syscall_page()
        self.memory.slice(frame, len(page))[:] = page
        return frame

    def _free_root(self, root: Root) -> None:
        with self._batch():
            for base, table in list(root.mirror.leaf_tables()):
                self._commit(root, [(base + i * PAGE_SIZE, entry, 0)
                                    for i, entry in enumerate(table.shadow.tolist()) if entry])
        for cpu in [cpu for cpu, current in self._current.items() if current is root]:
            del self._current[cpu]          # back to pgroot
        self.roots.pop(root.handle, None)
        if self.native is not None and not root.is_pgroot:
            self.native.remove_root(root)
        root.mirror.close()
        root.view.close()

    def _root(self, handle: int) -> Root:
        root = self.roots.get(handle & MASK64)
        if root is None:
            raise Refused(Errno.EINVAL, "unknown root")
        return root

    # -- ranges and entries ----------------------------------------------------------
    def _range(self, va: int, length: int) -> tuple[int, int] | None:
        """The pages [va, va+length) touches, checked; None when ``length`` is 0."""
        if length == 0:
            return None
        end = va + length
        if end > PROGRAM_END or va >= PROGRAM_END:
            raise Refused(Errno.EINVAL, "range outside the program's user half")
        start, end = page_down(va), page_up(end)
        if self.window.overlaps(start, end):
            raise Refused(Errno.EINVAL, "range over the page-table window")
        return start, end

    def _program_parts(self, start: int, end: int) -> list[tuple[int, int]]:
        """[start, end) within the program's part, less the window."""
        start, end = max(start, 0), min(end, PROGRAM_END)
        parts = []
        if start < min(end, self.window.start):
            parts.append((start, min(end, self.window.start)))
        if max(start, self.window.end) < end:
            parts.append((max(start, self.window.end), end))
        return parts

    def _entries(self, root: Root, start: int, end: int) -> list[tuple[int, int]]:
        """(page, entry) for the pages of the range that have a page table."""
        return [(base + i * PAGE_SIZE, entry)
                for base, table, first, count in root.mirror.runs(start, end)
                for i, entry in enumerate(table.shadow[first:first + count])]

    def _all_entries(self, root: Root, start: int, end: int) -> Iterator[tuple[int, int]]:
        """(page, entry) for every page of the range (0 where there is none)."""
        known = dict(self._entries(root, start, end))
        for page in range(start, end, PAGE_SIZE):
            yield page, known.get(page, 0)

    def _track(self, start: int, end: int) -> None:
        """pgroot takes the program view's pages of the range as they are: their
        frames and rights, PTE_U by dune_init's argument. New entries are written
        table by table natively; any other difference is committed as a change."""
        root = self.pgroot_root
        changes: list[Change] = []
        fresh: list[tuple[int, int, Perm, int]] = []
        for part_start, part_end in self._program_parts(start, end):
            for base, _size, entries in self.space.tables.leaves(part_start,
                                                                 part_end - part_start):
                table = root.mirror.leaf_table(base, create=True)
                first, count = (base >> 12) & 511, len(entries)
                runs, changed = _mirror.track(
                    entries, memoryview(table.shadow)[first:first + count],
                    table.live[first:first + count], base, self.map_full, self.window.start,
                    self.window.end)
                fresh.extend((base + index * PAGE_SIZE, pages * PAGE_SIZE,
                              perm_of(bits, user=True), frame)
                             for index, pages, frame, bits in runs)
                changes.extend((base + index * PAGE_SIZE, old, new)
                               for index, old, new in changed)
        self._owners_changed()
        if fresh or changes:
            with self._batch():
                for va, length, perm, frame in fresh:
                    root.view.map(va, length, perm, paddr=frame)
                self._commit(root, changes)

    # -- checks ----------------------------------------------------------------------
    def _owner_map(self) -> dict[int, int]:
        """Frame -> the program's page that owns it (its own or a shared region's)."""
        if self._owners is None:
            owners: dict[int, int] = {}
            limit = self.memory.size
            for start, end in self._program_parts(0, PROGRAM_END):
                for base, size, entries in self.space.tables.leaves(start, end - start):
                    for i, hw in enumerate(entries.tolist()):
                        if hw & _HW_PRESENT:
                            frame = hw & _HW_ADDR
                            if hw & _HW_OWNED or frame >= limit:
                                owners[frame] = base + i * size
            self._owners = owners
        return self._owners

    def _owners_changed(self) -> None:
        """The program view's frames changed: which page owns a frame is found
        again, and no clone's ceiling (its frames' owners' rights) is known."""
        self._owners = None
        self._forget_clone_ceilings()

    def _forget_clone_ceilings(self) -> None:
        """The VMAs or the frames' owners may change: the ceilings recorded for
        clones' entries (their frames' owners' VMAs' rights) are unknown again."""
        for root in self.roots.values():
            if not root.is_pgroot:
                root.mirror.forget_all_ceilings()

    def _vma_ceiling(self, va: int) -> int:
        """The most the Linux view lets the page at ``va`` be given (Rights bits)."""
        return _vma_rights(self.mm.find(va))

    def _frame_ceiling(self, frame: int) -> int | None:
        """The most any entry may grant on ``frame``; None: not the program's."""
        if frame in self._dune_frames:
            return ALL_RIGHTS
        owner = self._owner_map().get(frame)
        return None if owner is None else self._vma_ceiling(owner)

    def _ceiling(self, root: Root, va: int, frame: int) -> int | None:
        """The most an entry of ``root`` at ``va`` may grant on ``frame``."""
        if not root.is_pgroot:
            return self._frame_ceiling(frame)
        here = self._vma_ceiling(va) if self.mm.find(va) is not None else ALL_RIGHTS
        if frame == self._owned_frame(va):
            return here
        of_frame = self._frame_ceiling(frame)
        return None if of_frame is None else here & of_frame

    def _owned_frame(self, va: int) -> int:
        """The frame pgroot's page ``va`` owns (0: none, or an alias)."""
        if va in self._aliases:
            return 0
        return self.pgroot_root.mirror.get(va) & ADDR_MASK

    def _check_rights(self, root: Root, changes: list[Change]) -> list[tuple[int, int]]:
        """The new rights of entries keeping their frames are within the ceiling.
        Returns (page, ceiling) for pgroot's own pages that keep some rights (their
        VMA's) and for a clone's (their frame's owner's VMA's, or all for a frame
        map_pages gave): what the native path may grant them."""
        vma, ceiling = None, 0
        ceilings: list[tuple[int, int]] = []
        for va, _old, new in changes:
            granted = rights(new)
            if not granted:
                continue
            if not root.is_pgroot:
                limit = self._ceiling(root, va, new & ADDR_MASK) or 0
                ceilings.append((va, limit))
            elif va in self._aliases:
                limit = self._ceiling(root, va, new & ADDR_MASK) or 0
            else:                         # pgroot's own page: its VMA decides
                if vma is None or not vma.start <= va < vma.end:
                    vma = self.mm.find(va)
                    ceiling = _vma_rights(vma)
                limit = ceiling
                ceilings.append((va, ceiling))
            if granted & ~limit:
                raise Refused(Errno.EACCES, f"rights beyond the mapping at {va:#x}")
        return ceilings

    def _check_frames(self, root: Root, changes: list[Change]) -> None:
        """Every frame an entry gets must be the program's, within its rights."""
        for va, _old, new in changes:
            frame = new & ADDR_MASK
            ceiling = self._ceiling(root, va, frame) if frame else None
            if ceiling is None:
                raise Refused(Errno.EPERM, f"frame {frame:#x} is not the program's")
            if rights(new) & ~ceiling:
                raise Refused(Errno.EACCES, f"rights beyond the frame's mapping at {va:#x}")
        if root.is_pgroot:
            for va, _old, new in changes:
                vma = self.mm.find(va)
                if vma is not None and vma.region is not None \
                        and new & ADDR_MASK != self._owned_frame(va):
                    raise Refused(Errno.EINVAL, "a shared mapping's pages cannot be replaced")

    # -- pgroot's changes that need the program view ---------------------------------
    def _map_program_pages(self, start: int, end: int, bits: int) -> None:
        """map_pages into pgroot: fresh frames of the program view (holes become
        anonymous VMAs with the rights asked)."""
        granted = rights(bits)
        for vma in self.mm.overlapping(start, end):
            if vma.region is not None or vma.vmm_backed:
                raise Refused(Errno.EINVAL, "a shared mapping's pages cannot be replaced")
            if granted & ~self._vma_ceiling(vma.start):
                raise Refused(Errno.EACCES, "rights beyond the mapping")
        root = self.pgroot_root
        with self._batch():
            self._commit(root, [(page, old, 0) for page, old in self._entries(root, start, end)
                                if old], program_view=True)
            self._adopt_holes(start, end, granted)
            self.space.map(start, end - start, perm_of(bits, user=True))
            self._owners_changed()
            self._unmapped.remove(start, end)
            changes = [(page, 0, (found.paddr & ADDR_MASK) | bits)
                       for page in range(start, end, PAGE_SIZE)
                       for found in (self.space.walk(page),)]
            self._commit(root, changes)

    def _map_program_phys(self, changes: list[Change]) -> None:
        """map_phys into pgroot: a page keeping its own frame changes rights; any
        other frame is mapped as an alias (holes become anonymous VMAs)."""
        root = self.pgroot_root
        aliases = {va for va, _old, new in changes if new & ADDR_MASK != self._owned_frame(va)}
        with self._batch():
            for va, _old, new in changes:
                if self.mm.find(va) is None:
                    self._adopt_holes(va, va + PAGE_SIZE, rights(new))
            self._unmapped.remove(changes[0][0], changes[-1][0] + PAGE_SIZE)
            self._commit(root, changes, program_view=True, aliases=aliases)

    def _adopt_holes(self, start: int, end: int, granted: int) -> None:
        """Record the unmapped parts of [start, end) as anonymous private VMAs."""
        prot = _prot_of(granted)
        cursor = start
        for vma in self.mm.overlapping(start, end) + [None]:
            hole_end = end if vma is None else max(vma.start, cursor)
            if cursor < hole_end:
                self.mm.adopt(Vma(cursor, hole_end, prot))
            if vma is not None:
                cursor = max(cursor, vma.end)

    # -- applying changes ------------------------------------------------------------
    def _batch(self) -> Batch:
        """One invalidation for everything changed inside, in every space (the
        program view and the user views share frames: each is invalidated once)."""
        spaces = [root.view for root in self.roots.values()]
        if not self.space.closed:
            spaces.append(self.space)
        return Batch(*spaces)

    def _commit(self, root: Root, changes: list[Change], program_view: bool = False,
                aliases: set[int] = frozenset()) -> None:
        """Give ``root``'s pages their new entries (sorted by page): the mirror and
        its shadow, references, the user view, and for pgroot (``program_view``) the
        program view; ``aliases`` are pgroot pages whose new frame they do not own."""
        if not changes:
            return
        # pgroot's own pages need no accounting while nothing refers to their frames
        # and nothing is an alias (the common case, and every Linux change's).
        if not root.is_pgroot or aliases or self._aliases or self._refs:
            dropped: list[int] = []
            for va, old, new in changes:
                frame = self._account(root, va, old, new, va in aliases)
                if frame and frame in self._refs:
                    dropped.append(frame)
            if dropped:
                self._purge(set(dropped), root)
        self._write_entries(root, changes)
        apply_changes(root.view, changes, user=True)
        if root.is_pgroot and program_view:
            self._owners_changed()
            apply_changes(self.space, changes, user=False)
            for va, old, new in changes:
                if old & ADDR_MASK and not new & ADDR_MASK:
                    self._unmapped.add(va, va + PAGE_SIZE)

    def _account(self, root: Root, va: int, old: int, new: int, alias: bool) -> int:
        """Keep references right for one change; the owned frame it drops (or 0)."""
        old_frame, new_frame = old & ADDR_MASK, new & ADDR_MASK
        if root.is_pgroot:
            was_alias = va in self._aliases
            is_alias = bool(new_frame) and (alias or (was_alias and new_frame == old_frame))
            if is_alias:
                self._aliases[va] = new_frame
            else:
                self._aliases.pop(va, None)
        else:
            was_alias = is_alias = True
        if old_frame and was_alias and not (is_alias and new_frame == old_frame):
            self._unref(old_frame)
        if new_frame and is_alias and not (was_alias and new_frame == old_frame):
            self._refs[new_frame] += 1
        if root.is_pgroot and old_frame and not was_alias and (new_frame != old_frame or is_alias):
            return old_frame
        return 0

    def _unref(self, frame: int) -> None:
        self._refs[frame] -= 1
        if self._refs[frame] <= 0:
            del self._refs[frame]
            if frame in self._dune_frames:
                self._to_free.add(frame)

    def _purge(self, frames: set[int], origin: Root) -> None:
        """The program view is dropping ``frames``: no entry may use them any more."""
        frames = {frame for frame in frames if self._refs.get(frame)}
        if not frames:
            return
        for root in list(self.roots.values()):
            if root.is_pgroot:
                changes = [(va, self.pgroot_root.mirror.get(va), 0)
                           for va, frame in sorted(self._aliases.items()) if frame in frames]
                self._commit(root, changes, program_view=True)
                continue
            changes = []
            for base, table in root.mirror.leaf_tables():
                for i, entry in enumerate(table.shadow):
                    if entry & ADDR_MASK in frames:
                        changes.append((base + i * PAGE_SIZE, entry, 0))
            self._commit(root, changes)

    def _write_entries(self, root: Root, changes: list[Change]) -> None:
        mirror = root.mirror
        table, table_base = None, -1
        for va, _old, new in changes:
            base = va & ~(LEAF_TABLE_SPAN - 1)
            if base != table_base or (table is None and new):
                table = mirror.leaf_table(va, create=bool(new))
                table_base = base
            if table is not None:
                table.set((va >> 12) & 511, new)

    def _release_frames(self) -> None:
        """Free the Dune frames no entry uses (after the invalidations)."""
        for frame in self._to_free:
            if frame in self._dune_frames and not self._refs.get(frame):
                self._dune_frames.discard(frame)
                self.memory.frames.free(frame)
        self._to_free.clear()

    # -- program writes through mirror pointers --------------------------------------
    def _apply_writes(self, root: Root, start: int, end: int) -> int:
        """Check and apply what the program wrote to ``root``'s leaf entries of the
        range; restore what is refused. Returns 0 or the first refusal's -errno."""
        written: list[Change] = []
        clears: dict[int, list[int]] = {_A: [], _D: []}
        for base, table, first, count in root.mirror.runs(start, end):
            if not table.differs(first, count):
                continue
            live, shadow = table.live, table.shadow
            for i in _mirror.differences(live[first:first + count],
                                         memoryview(shadow)[first:first + count]):
                old, new = shadow[first + i], live[first + i]
                new = (new & ~AD) | (old & new & AD)      # A/D: clears apply, sets do not
                va = base + i * PAGE_SIZE
                if (new ^ old) & ~AD == 0:                # only A/D: nothing to check
                    _note_clears(clears, va, old, new)
                    table.set(first + i, new)
                    continue
                written.append((va, old, new))
        refusal = 0
        accepted: list[Change] = []
        for va, old, new in written:
            try:
                self._check_write(root, va, old, new)
            except Refused as refused:
                refusal = refusal or -refused.errno
                continue
            _note_clears(clears, va, old, new)
            accepted.append((va, old, new))
        with self._batch():
            for bit, pages in clears.items():
                for run_start, run_end in _runs(pages):
                    self._bits(root, run_start, run_end, bit, clear=True)
        if not written:
            return 0
        if root.is_pgroot:
            aliases = {va for va, old, new in accepted
                       if new & ADDR_MASK and new & ADDR_MASK != self._owned_frame(va)}
            with self._batch():
                for va, _old, new in accepted:
                    if new & ADDR_MASK and self.mm.find(va) is None:
                        self._adopt_holes(va, va + PAGE_SIZE, rights(new))
                        self._unmapped.remove(va, va + PAGE_SIZE)
                self._commit(root, accepted, program_view=True, aliases=aliases)
        else:
            with self._batch():
                self._commit(root, accepted)
        # Whatever was refused goes back to what the VMM last wrote.
        if refusal:
            for va, old, _new in written:
                table = root.mirror.leaf_table(va, create=False)
                index = (va >> 12) & 511
                if table is not None and table.live[index] != table.shadow[index]:
                    table.live[index] = table.shadow[index]
        return refusal

    def _check_write(self, root: Root, va: int, old: int, new: int) -> None:
        """One written entry: the frame must be the program's, the rights within
        its ceiling, the page the program's."""
        if not 0 <= va < PROGRAM_END or self.window.overlaps(va, va + PAGE_SIZE):
            raise Refused(Errno.EINVAL, "entry outside the program's part")
        frame = new & ADDR_MASK
        if not frame:
            if new & _P:
                raise Refused(Errno.EINVAL, "present entry without a frame")
            return
        if root.is_pgroot:
            vma = self.mm.find(va)
            if vma is not None and (vma.vmm_backed or (vma.region is not None
                                                       and frame != self._owned_frame(va))):
                raise Refused(Errno.EINVAL, "a shared mapping's pages cannot be replaced")
        ceiling = self._ceiling(root, va, frame)
        if ceiling is None:
            raise Refused(Errno.EPERM, f"frame {frame:#x} is not the program's")
        if rights(new) & ~ceiling:
            raise Refused(Errno.EACCES, "rights beyond the frame's mapping")

    # -- accessed and dirty bits -----------------------------------------------------
    def _hardware(self, root: Root) -> list[AddressSpace]:
        """The spaces whose A/D bits are the root's: the user view, and for pgroot the
        program view too (the program itself runs there)."""
        return [self.space, root.view] if root.is_pgroot else [root.view]

    def _bits(self, root: Root, start: int, end: int, bits: int, clear: bool,
              reader: str = BITS_READER) -> list[int]:
        pages: set[int] = set()
        for space in self._hardware(root):
            pages.update(read_bits(space, start, end - start, bits, clear, reader))
        return sorted(page for page in pages if start <= page < end)

    def _sync(self, root: Root, start: int, end: int) -> None:
        """Write the current A/D bits into the root's entries of [start, end), in
        the mirror and its shadow alike (what else the program wrote stays pending):
        table by table, natively, from the Dune API's reader's view of each space."""
        spaces = [(space, _reader_masks(space.page_bits.reader(BITS_READER)))
                  for space in self._hardware(root)]
        for base, table, first, count in root.mirror.runs(start, end):
            sources = []
            for space, (a_test, d_test) in spaces:
                for _vaddr, _size, entries in space.tables.leaves(base, count * PAGE_SIZE):
                    sources.append((entries, a_test, d_test))
            _mirror.sync_ad(memoryview(table.shadow)[first:first + count],
                            table.live[first:first + count], tuple(sources))

    # -- guest memory ----------------------------------------------------------------
    def _store(self, address: int, data: bytes) -> None:
        try:
            self.space.write(address, data, WRITE)
        except GuestFault as fault:
            raise Refused(Errno.EFAULT, str(fault)) from fault

    def _store_bitmap(self, address: int, start: int, count: int, pages: list[int]) -> None:
        """One bit per page of ``count`` from ``start`` (LSB first), set for ``pages``
        (sorted), written piece by piece."""
        size = (count + 7) // 8
        cursor = 0
        for offset in range(0, size, BITMAP_CHUNK):
            chunk = bytearray(min(BITMAP_CHUNK, size - offset))
            limit = start + (offset + len(chunk)) * 8 * PAGE_SIZE
            while cursor < len(pages) and pages[cursor] < limit:
                index = (pages[cursor] - start) // PAGE_SIZE - offset * 8
                chunk[index // 8] |= 1 << (index % 8)
                cursor += 1
            self._store(address + offset, bytes(chunk))

    def _check_writable(self, address: int, length: int) -> None:
        try:
            self.space.translate(address, length, WRITE)
        except GuestFault as fault:
            raise Refused(Errno.EFAULT, str(fault)) from fault


# -- helpers ----------------------------------------------------------------------------
def _perm(perm: int) -> int:
    """A PERM_* argument (a C int); large pages are not kvmdune's."""
    perm &= MASK32
    if perm & LARGE_PAGE_PERMS:
        raise Refused(Errno.ENOSYS, "kvmdune maps no large pages")
    return perm


def _note_clears(clears: dict[int, list[int]], va: int, old: int, new: int) -> None:
    """Which of A and D the program cleared in ``va``'s entry."""
    for bit, pages in clears.items():
        if old & bit and not new & bit:
            pages.append(va)


def _reader_masks(reader) -> tuple[int, int]:
    """The entry bits that say "accessed", "written" since ``reader``'s last clear."""
    return reader.mask(HW.ACCESSED), reader.mask(HW.DIRTY)


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted pages as [start, end) runs of adjacent ones."""
    runs: list[tuple[int, int]] = []
    for page in pages:
        if runs and runs[-1][1] == page:
            runs[-1] = (runs[-1][0], page + PAGE_SIZE)
        else:
            runs.append((page, page + PAGE_SIZE))
    return runs


def _allows(granted: int, error: PFError) -> bool:
    error = int(error)      # (IntFlag arithmetic costs a microsecond a test)
    if error & _PF_WRITE:
        return bool(granted & RIGHT_W)
    if error & _PF_INSTRUCTION:
        return bool(granted & RIGHT_X)
    return bool(granted & RIGHT_R)


def _prot_of(granted: int) -> int:
    prot = 0
    if granted & RIGHT_R:
        prot |= ProtFlags.PROT_READ
    if granted & RIGHT_W:
        prot |= ProtFlags.PROT_WRITE
    if granted & RIGHT_X:
        prot |= ProtFlags.PROT_EXEC
    return int(prot)


def _vma_rights(vma: Vma | None) -> int:
    """The most a VMA lets its pages be given (Rights bits; none without a VMA)."""
    if vma is None:
        return 0
    read_only_file = vma.region is not None and not vma.region.mapping.prot & _PROT_WRITE
    return _prot_ceiling(vma.prot, read_only_file)


@functools.lru_cache(maxsize=64)
def _prot_ceiling(prot: int, read_only_file: bool) -> int:
    """The rights a VMA of ``prot`` allows (a read-only file's: never W)."""
    ceiling = rights_of_perm(perm_for(prot))
    return ceiling & ~RIGHT_W if read_only_file else ceiling


__all__ = ["DuneVm", "Refused", "Root", "CR3_NOFLUSH", "BITS_READER", "read_bits"]
