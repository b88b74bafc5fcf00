"""How changes of a root's entries reach a hardware address space: the program view
(every page with a frame; rights as the entry's) or a root's user view (only the
PTE_U pages, U set), as few page-table operations as the runs of pages allow."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..memory import PAGE_SIZE, AddressSpace, Perm
from .entries import ADDR_MASK, perm_of, user_visible

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
    for va, old, new in changes:
        if user:
            had, has = user_visible(old), user_visible(new)
        else:
            had, has = bool(old & ADDR_MASK), bool(new & ADDR_MASK)
        old_frame, new_frame = old & ADDR_MASK, new & ADDR_MASK
        perm = perm_of(new, user=True)
        if had and has and old_frame == new_frame:
            if perm != perm_of(old, user=True):
                _extend(ops.protects, va, perm)
            continue
        if had:
            _extend(ops.unmaps, va)
        if has:
            maps = ops.maps
            if maps and maps[-1][0] + maps[-1][1] == va and maps[-1][2] == perm \
                    and maps[-1][3] + maps[-1][1] == new_frame:
                maps[-1] = (maps[-1][0], maps[-1][1] + PAGE_SIZE, perm, maps[-1][3])
            else:
                maps.append((va, PAGE_SIZE, perm, new_frame))
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


def _extend(runs: list, va: int, *key: object) -> None:
    if runs and runs[-1][0] + runs[-1][1] == va and tuple(runs[-1][2:]) == key:
        runs[-1] = (runs[-1][0], runs[-1][1] + PAGE_SIZE, *key)
    else:
        runs.append((va, PAGE_SIZE, *key))


__all__ = ["Change", "SpaceChanges", "apply_changes", "space_changes"]
