"""libdune's page-table entry format and permission flags, as the Dune API shows them
to programs (``include/mmu.h``, ``dune.h``'s ``PERM_*``), and their translation to
the rights kvmdune's own page tables grant.

A *mirror entry* is a leaf in libdune's format: a guest-physical frame address,
the x86 bits (P, W, U, NX, A, D, cache attributes) and libdune's software bits
(COW, USR1-3). Its P/W/NX bits are the rights (``Rights``); PTE_U says whether
code run with ``dune_jump_to_user`` may touch the page. Cache attributes and
software bits are kept for the program and change nothing in the hardware tables.
"""

from __future__ import annotations

import enum
import functools
from typing import Final

from ..memory import Perm


class PTE(enum.IntFlag):
    """libdune's ``PTE_*`` (mmu-x86.h): the x86-64 entry bits plus its software bits."""

    P = 0x001
    W = 0x002
    U = 0x004
    PWT = 0x008
    PCD = 0x010
    A = 0x020
    D = 0x040
    PS = 0x080      # a large page in a directory entry; PAT in a 4 KiB entry
    G = 0x100
    COW = 0x200     # libdune: copy-on-write (software)
    USR3 = 1 << 60  # libdune: reserved for the program (software)
    USR2 = 1 << 61
    USR1 = 1 << 62
    NX = 1 << 63


class PERM(enum.IntFlag):
    """libdune's ``PERM_*`` (dune.h). PERM_USR3 is libdune's 0x3000 (USR1|USR2)."""

    NONE = 0
    R = 0x0001
    W = 0x0002
    X = 0x0004
    U = 0x0008
    UC = 0x0010
    COW = 0x0020
    BIG = 0x0100
    BIG_1GB = 0x0200
    USR1 = 0x1000
    USR2 = 0x2000


#: PTE_ADDR's mask: bits 12-51.
ADDR_MASK: Final = 0x000F_FFFF_FFFF_F000
#: libdune's PTE_DEF_FLAGS: what a directory entry grants (the leaf decides).
DIRECTORY_FLAGS: Final = int(PTE.P | PTE.W | PTE.U)
AD: Final = int(PTE.A | PTE.D)
#: Bits with no effect on access that a program may set freely in a mirror entry:
#: cache attributes, PAT, global, and every bit the hardware leaves to software.
SOFTWARE_BITS: Final = int(PTE.PWT | PTE.PCD | PTE.PS | PTE.G) | 0xE00 | 0x7FF0_0000_0000_0000
RIGHTS_BITS: Final = int(PTE.P | PTE.W | PTE.NX)
# Plain ints for the hot paths (IntFlag arithmetic costs microseconds a call).
_P, _W, _U, _NX = int(PTE.P), int(PTE.W), int(PTE.U), int(PTE.NX)

#: PERM_BIG and PERM_BIG_1GB ask for large pages, which kvmdune does not map.
LARGE_PAGE_PERMS: Final = int(PERM.BIG | PERM.BIG_1GB)


class Rights(enum.IntFlag):
    """What an entry lets code do with its frame (x86: W or X imply R)."""

    NONE = 0
    R = 1
    W = 2
    X = 4


#: ``Rights`` as plain ints, for the hot paths.
RIGHT_R, RIGHT_W, RIGHT_X = int(Rights.R), int(Rights.W), int(Rights.X)
ALL_RIGHTS: Final = RIGHT_R | RIGHT_W | RIGHT_X


@functools.lru_cache(maxsize=256)
def entry_bits(perm: int) -> int:
    """libdune's get_pte_perm: the entry bits a PERM_* combination asks for."""
    bits = 0
    if perm & PERM.R:
        bits = _P
    if perm & PERM.W:
        bits |= _W
    if not perm & PERM.X:
        bits |= _NX
    if perm & PERM.U:
        bits |= _U
    if perm & PERM.UC:
        bits |= int(PTE.PCD)
    if perm & PERM.COW:
        bits |= int(PTE.COW)
    if perm & PERM.USR1:
        bits |= int(PTE.USR1)
    if perm & PERM.USR2:
        bits |= int(PTE.USR2)
    if perm & (PERM.USR1 | PERM.USR2):    # PERM_USR3 is 0x3000: either bit of it
        bits |= int(PTE.USR3)
    return bits


def rights(entry: int) -> int:
    """The rights (``Rights`` bits) of a mirror entry: none unless present."""
    if not entry & _P:
        return 0
    return RIGHT_R | (RIGHT_W if entry & _W else 0) | (0 if entry & _NX else RIGHT_X)


def user_visible(entry: int) -> bool:
    """Whether user code (dune_jump_to_user) reaches the entry's page."""
    return bool(entry & _P and entry & _U and entry & ADDR_MASK)


def perm_of(entry: int, user: bool) -> Perm:
    """The kvmdune page permission granting the entry's rights (``user``: reachable
    from CPL3). No rights is PROT_NONE: mapped, no access."""
    return _perm_of_rights(rights(entry), user)


@functools.lru_cache(maxsize=16)
def _perm_of_rights(granted: int, user: bool) -> Perm:
    perm = Perm.USER if user else Perm.NONE
    if granted & RIGHT_R:
        perm |= Perm.READ
    if granted & RIGHT_W:
        perm |= Perm.WRITE
    if granted & RIGHT_X:
        perm |= Perm.EXEC
    return perm


@functools.lru_cache(maxsize=32)
def rights_of_perm(perm: Perm) -> int:
    """The rights a kvmdune permission grants."""
    granted = 0
    if perm & (Perm.READ | Perm.WRITE | Perm.EXEC):
        granted |= RIGHT_R
    if perm & Perm.WRITE:
        granted |= RIGHT_W
    if perm & Perm.EXEC:
        granted |= RIGHT_X
    return granted


def rights_bits(granted: int) -> int:
    """The P/W/NX bits of a mirror entry granting ``granted``."""
    if not granted:
        return _NX
    return _P | (_W if granted & RIGHT_W else 0) | (0 if granted & RIGHT_X else _NX)


__all__ = ["PTE", "PERM", "RIGHT_R", "RIGHT_W", "RIGHT_X", "ADDR_MASK", "AD", "DIRECTORY_FLAGS", "SOFTWARE_BITS", "RIGHTS_BITS",
           "LARGE_PAGE_PERMS", "Rights", "ALL_RIGHTS", "entry_bits", "rights", "user_visible",
           "perm_of", "rights_of_perm", "rights_bits"]
