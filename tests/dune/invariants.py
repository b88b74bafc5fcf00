"""What must hold of a DuneVm whatever the guest asked (the fuzz's oracle): every
hardware mapping a root's user view has is an entry of that root, on a frame the
program owns, within that frame's rights; pgroot's entries are exactly the program
view's pages; the trampoline is the only thing above the program's part; no mirror
frame is mapped anywhere but the window; the reference counts are the entries'; the
ceilings pgroot records for the native path are its pages' VMAs' rights."""

from __future__ import annotations

from collections import Counter

from kvmdune.dune.entries import ADDR_MASK, perm_of, rights, user_visible
from kvmdune.dune.mirror import CEILING_KNOWN
from kvmdune.dune.vm import PROGRAM_END, DuneVm
from kvmdune.machine import layout
from kvmdune.memory import PAGE_SIZE, Perm
from kvmdune.memory.pagetable import USER_SPACE_END


def leaves(space, start: int, end: int) -> dict[int, int]:
    """page -> hardware entry (present or PROT_NONE) of [start, end)."""
    found = {}
    for base, size, entries in space.tables.leaves(start, end - start):
        for i, entry in enumerate(entries.tolist()):
            if entry:
                found[base + i * size] = entry
    return found


def check(vm: DuneVm) -> list[str]:
    """The broken invariants (empty when all hold)."""
    problems: list[str] = []
    window_frames = {table.frame for root in vm.roots.values()
                     for table in root.mirror.by_address.values()}
    owners = vm._owner_map()
    refs: Counter[int] = Counter()
    for root in vm.roots.values():
        entries = {}
        for base, table in root.mirror.leaf_tables():
            for i, entry in enumerate(table.shadow.tolist()):
                if entry:
                    entries[base + i * PAGE_SIZE] = entry
        for va, entry in entries.items():
            frame = entry & ADDR_MASK
            if frame and (not root.is_pgroot or va in vm._aliases):
                refs[frame] += 1
            if frame in window_frames:
                problems.append(f"root {root.handle:#x}: entry {va:#x} maps a mirror frame")
            if frame and frame not in owners and frame not in vm._dune_frames:
                problems.append(f"root {root.handle:#x}: entry {va:#x} maps foreign {frame:#x}")
        view = leaves(root.view, 0, USER_SPACE_END)
        stub = view.pop(layout.CALL_STUB, None)
        if stub is None or stub & 0x000F_FFFF_FFFF_F000 != vm._user_syscall_frame \
                or Perm.from_pte(stub) & (Perm.USER | Perm.WRITE):
            problems.append(f"root {root.handle:#x}: no supervisor-only user-syscall page at the stub")
        for va, hw in view.items():
            entry = entries.get(va, 0)
            if va >= PROGRAM_END or not user_visible(entry):
                problems.append(f"root {root.handle:#x}: user view maps {va:#x} "
                                f"(entry {entry:#x})")
            elif hw & 0x000F_FFFF_FFFF_F000 != entry & ADDR_MASK \
                    or Perm.from_pte(hw) != perm_of(entry, user=True):
                problems.append(f"root {root.handle:#x}: user view {va:#x} is {hw:#x}, "
                                f"entry {entry:#x}")
        for va, entry in entries.items():
            if user_visible(entry) and va not in view:
                problems.append(f"root {root.handle:#x}: {va:#x} missing in the user view")
        if root.is_pgroot:
            program = {va: hw for va, hw in leaves(vm.space, 0, PROGRAM_END).items()
                       if not vm.window.overlaps(va, va + PAGE_SIZE)}
            for va in set(program) | {va for va, e in entries.items() if e & ADDR_MASK}:
                hw, entry = program.get(va, 0), entries.get(va, 0)
                if hw & 0x000F_FFFF_FFFF_F000 != entry & ADDR_MASK or \
                        (hw and Perm.from_pte(hw) != perm_of(entry, user=True)):
                    problems.append(f"pgroot {va:#x}: program view {hw:#x}, entry {entry:#x}")
                elif entry and va not in vm._aliases and vm.mm.find(va) is not None:
                    ceiling = vm._vma_ceiling(va)
                    if rights(entry) & ~ceiling:
                        problems.append(f"pgroot {va:#x}: {entry:#x} beyond its VMA")
    problems += ceiling_problems(vm)
    if +refs != +vm._refs:
        problems.append(f"references {dict(vm._refs)} != entries' {dict(refs)}")
    return problems


def ceiling_problems(vm: DuneVm) -> list[str]:
    """A ceiling pgroot's mirror records (what the native path may grant) is the
    rights of the page's VMA, for a page of the program's own (not an alias); a
    clone's is what its entry's frame may be given."""
    problems = []
    for base, table in vm.pgroot_root.mirror.leaf_tables():
        for i, ceiling in enumerate(table.ceilings.tolist()):
            if not ceiling:
                continue
            va, entry = base + i * PAGE_SIZE, table.shadow[i]
            if ceiling & ~CEILING_KNOWN != vm._vma_ceiling(va) or va in vm._aliases \
                    or not entry & ADDR_MASK:
                problems.append(f"pgroot {va:#x}: ceiling {ceiling:#x} for {entry:#x}, "
                                f"its VMA allows {vm._vma_ceiling(va):#x}")
    for root in vm.roots.values():
        if root.is_pgroot:
            continue
        for base, table in root.mirror.leaf_tables():
            for i, ceiling in enumerate(table.ceilings.tolist()):
                va, entry = base + i * PAGE_SIZE, table.shadow[i]
                allowed = vm._ceiling(root, va, entry & ADDR_MASK) if entry & ADDR_MASK else None
                if ceiling and (allowed is None or ceiling & ~CEILING_KNOWN != allowed):
                    problems.append(f"clone {root.handle:#x} {va:#x}: ceiling {ceiling:#x} "
                                    f"for {entry:#x}, its frame allows {allowed}")
    return problems
