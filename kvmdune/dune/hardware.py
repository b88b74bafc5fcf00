"""How changes of a root's entries reach a hardware address space: the program view
(every page with a frame; rights as the entry's) or a root's user view (only the
PTE_U pages, U set), as few page-table operations as the runs of pages allow."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..memory import PAGE_SIZE, AddressSpace, Perm
from .entries import ADDR_MASK, PTE, RIGHTS_BITS, perm_of

_ADDR = ADDR_MASK
#: A user view shows an entry with a frame that is present and PTE_U (entries
#: without a frame are never present: the flush refuses them).
_USER_VISIBLE = int(PTE.P | PTE.U)

#: One change of one leaf entry: (page address, old entry, new entry).
Change = tuple[int, int, int]


@dataclass
class SpaceChanges:
    """Runs of pages to unmap, to reprotect (same frame), and to map (adjacent frames)."""

    unmaps: list[tuple[int, int]] = field(default_factory=list)
    protects: list[tuple[int, int, Perm]] = field(default_factory=list)
    maps: list[tuple[int, int, Perm, int]] = field(default_factory=list)


def space_changes(changes: list[Change], user: bool) -> SpaceChanges:
    """What brings a space from the old entries to the new ones (changes sorted by
    page): a user view (``user``) or the program view."""
    ops = SpaceChanges()
    unmaps, protects, maps = ops.unmaps, ops.protects, ops.maps
    visible = _USER_VISIBLE if user else _ADDR
    for va, old, new in changes:
        had = old & visible == visible if user else bool(old & _ADDR)
        has = new & visible == visible if user else bool(new & _ADDR)
        frame = new & _ADDR
        if had and has and old & _ADDR == frame:
            if (old ^ new) & RIGHTS_BITS:
                perm = perm_of(new, user=True)
                if protects and protects[-1][0] + protects[-1][1] == va \
                        and protects[-1][2] == perm:
                    protects[-1] = (protects[-1][0], protects[-1][1] + PAGE_SIZE, perm)
                else:
                    protects.append((va, PAGE_SIZE, perm))
            continue
        if had:
            if unmaps and unmaps[-1][0] + unmaps[-1][1] == va:
                unmaps[-1] = (unmaps[-1][0], unmaps[-1][1] + PAGE_SIZE)
            else:
                unmaps.append((va, PAGE_SIZE))
        if has:
            perm = perm_of(new, user=True)
            if maps and maps[-1][0] + maps[-1][1] == va and maps[-1][2] == perm \
                    and maps[-1][3] + maps[-1][1] == frame:
                maps[-1] = (maps[-1][0], maps[-1][1] + PAGE_SIZE, perm, maps[-1][3])
            else:
                maps.append((va, PAGE_SIZE, perm, frame))
    return ops


def apply_changes(space: AddressSpace, changes: list[Change], user: bool) -> None:
    """Bring ``space`` (a user view, or the program view) to the new entries."""
    if space.closed:
        return
    ops = space_changes(changes, user)
    for start, length in ops.unmaps:
        space.unmap(start, length)
    for start, length, perm in ops.protects:
        space.protect(start, length, perm)
    for start, length, perm, frame in ops.maps:
        space.map(start, length, perm, paddr=frame)


__all__ = ["Change", "SpaceChanges", "apply_changes", "space_changes"]
