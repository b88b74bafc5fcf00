"""futex(2) and futex_waitv(2) on guest memory, and what a thread's death does to
futexes (its robust list, its CLEARTID word).

Guest memory is a host mapping inside the VMM, so the host's futexes wait and wake
on the VMM's address of the guest word: after a checked translation (a mapped page
user code may read; writable, with its dirty bit set, when the host will write the
word), the host kernel is given that address (``GuestWordAddress``), never one the
guest chose and never the VMM's own memory. Private futexes stay private on the
host and shared ones shared, so a word in a MAP_SHARED region works between guest
processes as it does natively. Waiters are keyed by host address, i.e. by frame:
two guest addresses of one frame share waiters (a spurious wakeup at most, which
futex users tolerate).

Waits drop the process's lock (threads.py) and keep the word's frame pinned
meanwhile, so it is not reused (as a page table, say) while the host may still
touch it. PI futexes run on the host's PI implementation: the owner id in the word
is a guest thread id, which is the host id of the owner's host thread.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from ..memory import READ, WRITE, GuestFault
from .abi import Errno, FutexOp
from .host_unsafe import GuestWordAddress, HostBuffer, host_syscall
from .syscall_table import Sysno
from .uaccess import Fault, access_ok, read_bytes

FUTEX_PRIVATE_FLAG = 128
FUTEX_CLOCK_REALTIME = 256
FUTEX_CMD_MASK = ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
FUTEX_BITSET_MATCH_ANY = 0xFFFF_FFFF
# The futex word's bits for robust and PI futexes (linux/futex.h).
FUTEX_WAITERS = 0x8000_0000
FUTEX_OWNER_DIED = 0x4000_0000
FUTEX_TID_MASK = 0x3FFF_FFFF
#: Most robust-list entries walked (ROBUST_LIST_LIMIT): a cyclic list ends.
ROBUST_LIST_LIMIT = 2048
# futex_waitv(2): at most this many waiters; each must say it is 32 bits wide.
FUTEX_WAITV_MAX = 128
FUTEX2_SIZE_U32 = 0x02
FUTEX2_PRIVATE = FUTEX_PRIVATE_FLAG
CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
NSEC_PER_SEC = 1_000_000_000
_TIMESPEC = struct.Struct("<qq")
_WAITV = struct.Struct("<QQII")
_ROBUST_HEAD = struct.Struct("<QqQ")      # list.next, futex_offset, list_op_pending
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_WORD = 4


@dataclass(frozen=True)
class Word:
    """A guest futex word, translated: its frame (pinned across waits) and the
    VMM's address of it."""

    paddr: int
    host: GuestWordAddress


def translate_word(proc, address: int, writable: bool) -> Word:
    """The word at ``address``, checked as user code would access it (a write sets
    the dirty bit, as the CPU would); GuestFault when it cannot be."""
    ((paddr, _length),) = proc.space.translate(address, _WORD, WRITE if writable else READ)
    return Word(paddr, GuestWordAddress(proc.space.memory.host_address(paddr, _WORD)))


def _word_or_fault(proc, address: int, writable: bool) -> Word:
    try:
        return translate_word(proc, address, writable)
    except GuestFault as exc:
        raise Fault(Errno.EFAULT) from exc


class _Pinned:
    """The frames of some words pinned for the duration of a host call."""

    def __init__(self, proc, words: list[Word]) -> None:
        self.frames = proc.space.memory.frames
        self.paddrs = [word.paddr for word in words]

    def __enter__(self) -> "_Pinned":
        for paddr in self.paddrs:
            self.frames.pin(paddr)
        return self

    def __exit__(self, *exc: object) -> None:
        for paddr in self.paddrs:
            self.frames.unpin(paddr)


def _host_futex(*args) -> int:
    return host_syscall(Sysno.futex, *args)


def _blocking(proc, words: list[Word], call) -> int:
    """A host call that may sleep: without the lock, its words' frames pinned."""
    with _Pinned(proc, words):
        return proc.host_call(call)


def _read_timespec(proc, address: int) -> tuple[int, int]:
    seconds, nanoseconds = _TIMESPEC.unpack(read_bytes(proc.space, address, _TIMESPEC.size))
    if seconds < 0 or not 0 <= nanoseconds < NSEC_PER_SEC:
        raise Fault(Errno.EINVAL)
    return seconds, nanoseconds


def _absolute_monotonic(seconds: int, nanoseconds: int) -> HostBuffer:
    """A relative timeout as an absolute CLOCK_MONOTONIC time: an interrupted wait
    that runs again keeps its deadline."""
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    deadline = now + seconds * NSEC_PER_SEC + nanoseconds
    return HostBuffer(_TIMESPEC.pack(*divmod(deadline, NSEC_PER_SEC)))


# -- futex(2) ----------------------------------------------------------------------------
def sys_futex(proc, cpu, uaddr, op, val, timeout, uaddr2, val3):
    """Implements futex(2) on guest memory: every command but the obsolete FUTEX_FD
    (ENOSYS, as Linux)."""
    command = op & FUTEX_CMD_MASK
    private = op & FUTEX_PRIVATE_FLAG
    val &= 0xFFFF_FFFF
    val3 &= 0xFFFF_FFFF
    if command in (FutexOp.FUTEX_WAIT, FutexOp.FUTEX_WAIT_BITSET):
        return _wait(proc, command, op, uaddr, val, timeout, val3)
    if uaddr % _WORD:
        return -Errno.EINVAL
    if command in (FutexOp.FUTEX_WAKE, FutexOp.FUTEX_WAKE_BITSET):
        return _wake(proc, op, uaddr, val, val3, private)
    if command in (FutexOp.FUTEX_REQUEUE, FutexOp.FUTEX_CMP_REQUEUE, FutexOp.FUTEX_WAKE_OP,
                   FutexOp.FUTEX_CMP_REQUEUE_PI):
        if uaddr2 % _WORD:
            return -Errno.EINVAL
        # WAKE_OP writes the second word, CMP_REQUEUE_PI takes it as a PI lock.
        writes_second = command in (FutexOp.FUTEX_WAKE_OP, FutexOp.FUTEX_CMP_REQUEUE_PI)
        first = _word_or_fault(proc, uaddr, writable=False)
        second = _word_or_fault(proc, uaddr2, writable=writes_second)
        # val2 (how many to requeue, or to wake) travels in the timeout argument.
        return _host_futex(first.host, op, val, timeout & 0xFFFF_FFFF, second.host, val3)
    if command in (FutexOp.FUTEX_LOCK_PI, FutexOp.FUTEX_LOCK_PI2, FutexOp.FUTEX_TRYLOCK_PI,
                   FutexOp.FUTEX_UNLOCK_PI):
        return _pi(proc, command, op, uaddr, timeout)
    if command == FutexOp.FUTEX_WAIT_REQUEUE_PI:
        if uaddr2 % _WORD:
            return -Errno.EINVAL
        first = _word_or_fault(proc, uaddr, writable=False)
        second = _word_or_fault(proc, uaddr2, writable=True)
        deadline = HostBuffer(_TIMESPEC.pack(*_read_timespec(proc, timeout))) if timeout else 0
        return _blocking(proc, [first, second], lambda: _host_futex(
            first.host, op, val, deadline, second.host, val3))
    return -Errno.ENOSYS


def _wait(proc, command: int, op: int, uaddr: int, val: int, timeout: int, bitset: int) -> int:
    """FUTEX_WAIT (relative timeout) and FUTEX_WAIT_BITSET (absolute, on
    CLOCK_REALTIME with FUTEX_CLOCK_REALTIME, else CLOCK_MONOTONIC), in Linux's
    order of checks; both waited as WAIT_BITSET with an absolute time."""
    if command == FutexOp.FUTEX_WAIT:
        bitset = FUTEX_BITSET_MATCH_ANY
    deadline: HostBuffer | int = 0
    host_op = op
    if timeout:
        seconds, nanoseconds = _read_timespec(proc, timeout)
        if command == FutexOp.FUTEX_WAIT:
            deadline = _absolute_monotonic(seconds, nanoseconds)
            host_op = op & ~FUTEX_CLOCK_REALTIME
        else:
            deadline = HostBuffer(_TIMESPEC.pack(seconds, nanoseconds))
    host_op = (host_op & ~FUTEX_CMD_MASK) | FutexOp.FUTEX_WAIT_BITSET
    if uaddr % _WORD or not bitset:
        return -Errno.EINVAL
    word = _word_or_fault(proc, uaddr, writable=False)
    if proc.space.memory.read(word.paddr, _WORD) != _U32.pack(val):
        return -Errno.EAGAIN          # what the host would say, without the lock dance
    return _blocking(proc, [word], lambda: _host_futex(word.host, host_op, val, deadline, 0,
                                                       bitset))


def _wake(proc, op: int, uaddr: int, count: int, bitset: int, private: int) -> int:
    """FUTEX_WAKE(_BITSET): Linux's checks of a word it only hashes, then the host's
    wake (none to wake where the word is not mapped)."""
    if not private:
        _check_shared_word(proc, uaddr)
    elif not access_ok(uaddr, _WORD):
        return -Errno.EFAULT
    try:
        word = translate_word(proc, uaddr, writable=False)
    except GuestFault:
        return 0                 # nothing mapped there: nobody can be waiting on it
    return _host_futex(word.host, op, count, 0, 0, bitset)


def _check_shared_word(proc, uaddr: int) -> None:
    """A shared futex's page must be mapped, and writable when it is private
    anonymous memory (read-only anonymous pages have no key that another process
    could share)."""
    vma = proc.mm.find(uaddr) if proc.mm is not None else None
    anonymous = vma is not None and not vma.shared and not vma.name.startswith("/")
    try:
        proc.space.translate(uaddr, _WORD, WRITE if anonymous else READ)
    except GuestFault as exc:
        raise Fault(Errno.EFAULT) from exc


def _pi(proc, command: int, op: int, uaddr: int, timeout: int) -> int:
    """The PI lock commands, on the host's PI futexes (they write the word)."""
    word = _word_or_fault(proc, uaddr, writable=True)
    if command == FutexOp.FUTEX_TRYLOCK_PI or command == FutexOp.FUTEX_UNLOCK_PI:
        return _host_futex(word.host, op, 0, 0, 0, 0)
    deadline = HostBuffer(_TIMESPEC.pack(*_read_timespec(proc, timeout))) if timeout else 0
    return _blocking(proc, [word], lambda: _host_futex(word.host, op, 0, deadline, 0, 0))


# -- futex_waitv(2) ----------------------------------------------------------------------
def sys_futex_waitv(proc, cpu, waiters, count, flags, timeout, clockid, *_):
    """Implements futex_waitv(2): wait on up to 128 words at once."""
    if flags or not 0 < count <= FUTEX_WAITV_MAX:
        return -Errno.EINVAL
    if clockid not in (CLOCK_REALTIME, CLOCK_MONOTONIC):
        return -Errno.EINVAL
    deadline = HostBuffer(_TIMESPEC.pack(*_read_timespec(proc, timeout))) if timeout else 0
    raw = read_bytes(proc.space, waiters, count * _WAITV.size)
    words, host = [], bytearray()
    for value, address, word_flags, reserved in _WAITV.iter_unpack(raw):
        if reserved or word_flags & ~(FUTEX2_SIZE_U32 | FUTEX2_PRIVATE) \
                or word_flags & FUTEX2_SIZE_U32 != FUTEX2_SIZE_U32:
            return -Errno.EINVAL
        if address % _WORD or value >> 32:
            return -Errno.EINVAL
        word = _word_or_fault(proc, address, writable=False)
        words.append(word)
        host += _WAITV.pack(value, word.host.address, word_flags, 0)
    vector = HostBuffer(bytes(host))
    return _blocking(proc, words, lambda: host_syscall(Sysno.futex_waitv, vector, count, 0,
                                                       deadline, clockid))


# -- a thread's death --------------------------------------------------------------------
def release_thread(proc, task, robust_only: bool = False) -> None:
    """What Linux does with a dying thread's futexes (mm_release): each futex on its
    robust list that it holds is marked FUTEX_OWNER_DIED and one waiter woken; then
    (unless ``robust_only``: the whole process ends, nobody is left to join) its
    CLEARTID word is cleared and one waiter woken (pthread_join's)."""
    if task.robust_list:
        _walk_robust_list(proc, task.robust_list, task.tid)
    if task.clear_child_tid and not robust_only:
        try:
            word = translate_word(proc, task.clear_child_tid, writable=True)
        except GuestFault:
            return
        proc.space.memory.store32(word.paddr, 0)
        _host_futex(word.host, FutexOp.FUTEX_WAKE, 1, 0, 0, 0)


def _read_u64(proc, address: int) -> int | None:
    try:
        return _U64.unpack(proc.space.read(address, 8, READ))[0]
    except GuestFault:
        return None


def _walk_robust_list(proc, head: int, tid: int) -> None:
    """exit_robust_list: entries are pointers with bit 0 telling a PI futex; the
    futex of each is at entry + futex_offset; the entry being locked or unlocked
    (list_op_pending) is handled last."""
    try:
        first, futex_offset, pending = _ROBUST_HEAD.unpack(
            proc.space.read(head, _ROBUST_HEAD.size, READ))
    except GuestFault:
        return
    entry, pi = first & ~1, first & 1
    pending_entry, pending_pi = pending & ~1, pending & 1
    for _ in range(ROBUST_LIST_LIMIT):
        if entry == head:
            break
        following = _read_u64(proc, entry)
        if entry != pending_entry:
            if not _owner_died(proc, entry + futex_offset, tid, bool(pi), pending=False):
                return
        if following is None:
            return
        entry, pi = following & ~1, following & 1
    if pending_entry:
        _owner_died(proc, pending_entry + futex_offset, tid, bool(pending_pi), pending=True)


def _owner_died(proc, address: int, tid: int, pi: bool, pending: bool) -> bool:
    """handle_futex_death: False when the word cannot be reached (the walk stops)."""
    address &= (1 << 64) - 1
    if address % _WORD:
        return False
    try:
        word = translate_word(proc, address, writable=True)
    except GuestFault:
        return False
    memory = proc.space.memory
    while True:
        (value,) = _U32.unpack(memory.read(word.paddr, _WORD))
        if pending and not pi and value == 0:
            # Died between taking the lock and recording it: wake one to retry.
            _host_futex(word.host, FutexOp.FUTEX_WAKE, 1, 0, 0, 0)
            return True
        if value & FUTEX_TID_MASK != tid:
            return True
        new = (value & FUTEX_WAITERS) | FUTEX_OWNER_DIED
        if memory.cmpxchg32(word.paddr, value, new) == value:
            break
    if not pi and value & FUTEX_WAITERS:
        # Linux wakes robust futexes shared (glibc waits on them that way).
        _host_futex(word.host, FutexOp.FUTEX_WAKE, 1, 0, 0, 0)
    return True
