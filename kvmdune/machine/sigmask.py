"""A host thread's signal mask as the kernel keeps it: 64 bits, bit ``n - 1`` for
signal ``n``, changed and read with raw rt_sigprocmask.

glibc's (and so Python's) sigprocmask silently drops signals 32 and 33 (SIGCANCEL,
SIGSETXID: its own), and Python turns a mask holding 32 into a set it then refuses
to set again (a warning, and 32 unblocked). The VMM blocks 32 on its threads (it is
a signal the guest may be sent: glibc's SIGTIMER), so every change of a VMM thread's
mask goes through here. 33 is never blocked: glibc's setuid() in a threaded process
(the VMM drops privileges; a guest's setuid is forwarded) signals every thread with
it and waits for each to answer.
"""

from __future__ import annotations

import ctypes
import enum

from ..memory.host_mapping_unsafe import load_libc
from . import _sigpending

SIGSET_BYTES = 8
#: glibc's internal signals (nptl/pthreadP.h).
SIGCANCEL = 32
SIGSETXID = 33
SIGKILL, SIGSTOP = 9, 19
_SYS_RT_SIGPROCMASK = 14


class How(enum.IntEnum):
    SIG_BLOCK = 0
    SIG_UNBLOCK = 1
    SIG_SETMASK = 2


def bit(signo: int) -> int:
    return 1 << (signo - 1)


def mask_of(signals) -> int:
    """The mask holding ``signals`` (numbers)."""
    mask = 0
    for signo in signals:
        mask |= bit(signo)
    return mask


def signals_in(mask: int) -> list[int]:
    return [signo for signo in range(1, 65) if mask & bit(signo)]


#: Every signal a VMM thread may block: all but SIGSETXID (and the two no thread can).
BLOCKABLE = ((1 << 64) - 1) & ~mask_of((SIGKILL, SIGSTOP, SIGSETXID))

_libc = load_libc()
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 5


def change(how: How, mask: int) -> int:
    """rt_sigprocmask(how, mask) on the calling thread; its mask before. SIGSETXID
    is never blocked (see the module's doc)."""
    new = ctypes.c_uint64(mask & ~bit(SIGSETXID))
    old = ctypes.c_uint64()
    if _syscall(_SYS_RT_SIGPROCMASK, int(how), ctypes.addressof(new),
                ctypes.addressof(old), SIGSET_BYTES) != 0:
        raise OSError(ctypes.get_errno(), "rt_sigprocmask")
    return old.value


def block(mask: int) -> int:
    """Block ``mask`` too; the mask before."""
    return change(How.SIG_BLOCK, mask)


def unblock(mask: int) -> int:
    return change(How.SIG_UNBLOCK, mask)


def set_mask(mask: int) -> int:
    """Set the mask to ``mask`` (the value another call returned); the one before."""
    return change(How.SIG_SETMASK, mask)


def current() -> int:
    old = ctypes.c_uint64()
    if _syscall(_SYS_RT_SIGPROCMASK, int(How.SIG_BLOCK), 0, ctypes.addressof(old),
                SIGSET_BYTES) != 0:
        raise OSError(ctypes.get_errno(), "rt_sigprocmask")
    return old.value


def pending() -> int:
    """The signals pending for the calling thread: its own and its process's. Native
    (a fraction of a microsecond): the VMM asks before every look at the guest's
    pending set."""
    return _sigpending.pending()


class blocked_for_new_threads:
    """``with blocked_for_new_threads(mask):`` the calling thread blocks ``mask`` for a
    moment, so the threads it starts meanwhile begin with it blocked (a thread
    inherits its creator's mask) -- all but SIGCANCEL, which glibc's pthread_create
    unblocks in every new thread: a thread that must block it too calls
    ``block_in_new_thread`` first."""

    def __init__(self, mask: int = BLOCKABLE) -> None:
        self.mask = mask
        self.previous = 0

    def __enter__(self) -> "blocked_for_new_threads":
        self.previous = block(self.mask)
        return self

    def __exit__(self, *exc) -> None:
        set_mask(self.previous)


def block_in_new_thread(mask: int = BLOCKABLE) -> None:
    """Block ``mask`` in the calling thread, newly started: SIGCANCEL too, which
    glibc's pthread_create left unblocked."""
    block(mask)
