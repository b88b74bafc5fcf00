"""Host signals meant for the guest: which they are, how the VMM's threads hold them,
and how they are taken from the host with their whole siginfo and told apart as a
guest thread's or the process's.

The guest process *is* the VMM process as far as Linux is concerned: a signal sent
to the guest (kill from a shell, a POSIX timer, SIGCHLD, a terminal's SIGINT) is sent
to the VMM. Every signal 1..64 is the guest's (``GUEST_BOUND``) except the two no one
can catch, those the VMM's own faults raise (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
SIGTRAP, SIGSYS), glibc's SIGSETXID (its setuid() in a threaded process) and the
VMM's kick (machine/kick.py).

Every VMM thread blocks them, so none takes its default action in the VMM, and a
thread that runs a vCPU has KVM_RUN unblock them (KVM_SET_SIGNAL_MASK: one pending
for it ends KVM_RUN with EINTR and stays pending). The thread then takes them with
rt_sigtimedwait, which gives the siginfo Linux made (si_code, si_pid, si_uid, a
timer's si_timerid, si_overrun and si_value), and reads its own pending set first
(/proc/thread-self/status): one pending for the thread alone was sent to it (tgkill,
a SIGEV_THREAD_ID timer) and is that guest thread's, as guest thread ids are the
host ids of the threads that run them; any other was sent to the process. A thread
waiting for a signal for the guest (sigsuspend, sigtimedwait, pause) waits for one
to be pending through a signalfd, which tells without taking it.

A process-directed signal arriving while every vCPU thread is in a blocking host
call would wait until one returns: ``ProcessSignalTaker``, a thread of its own,
waits for those and takes them, and the process wakes a guest thread that can take
the signal, which interrupts its host call (threads.py).

Taking and queueing are one step under the process's lock, and every look at the
guest's pending set (the end of each system call the VMM serves, a mask change,
sigsuspend, sigtimedwait, rt_sigpending, a wait with a temporary mask) takes what
the host holds first, under the same lock: so a signal the host had made pending
before the look (a child's SIGCHLD before its parent's wait returned) is seen, as
on Linux. The check costs one rt_sigpending (native: machine/sigmask.py).

Known limit: a thread-directed one for a guest thread that is in a blocking host
call (a read, a sleep) is taken when that call returns, not at once.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import struct
import _thread
import threading
from dataclasses import dataclass
from typing import Callable

from ..machine import sigmask
from ..machine.kick import SIGKICK
from ..memory.host_mapping_unsafe import load_libc
from .abi import Signal

#: Signals the VMM keeps for itself (see the module's doc).
VMM_OWN = frozenset({Signal.SIGKILL, Signal.SIGSTOP, Signal.SIGSEGV, Signal.SIGBUS,
                     Signal.SIGILL, Signal.SIGFPE, Signal.SIGTRAP, Signal.SIGSYS,
                     sigmask.SIGSETXID, SIGKICK})
GUEST_BOUND = sigmask.mask_of(signo for signo in range(1, 65) if signo not in VMM_OWN)
#: Inside KVM_RUN nothing is blocked: the guest's signals end it and stay pending
#: (the thread blocks them again before KVM_RUN returns), the kick ends it, and
#: SIGSETXID is answered at once (a setuid() of another thread waits for it).
RUN_SIGNAL_MASK = 0

SIGINFO_SIZE = 128
_SIGINFO_HEAD = struct.Struct("<iiiiiI")      # signo, errno, code, pad, pid, uid
_SYS_RT_SIGTIMEDWAIT = 128
_SYS_SIGNALFD4 = 289
_SFD_CLOEXEC = 0o2000000
_SFD_NONBLOCK = 0o4000
_EAGAIN, _EINTR = 11, 4
_TIMESPEC = struct.Struct("<qq")

_libc = load_libc()
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 6


@dataclass(frozen=True)
class HostSignal:
    """One signal taken from the host for the guest."""

    signo: int
    #: The siginfo Linux made, SIGINFO_SIZE bytes.
    info: bytes
    #: Sent to the taking thread alone (its guest thread's), not to the process.
    thread_directed: bool

    @property
    def code(self) -> int:
        return _SIGINFO_HEAD.unpack_from(self.info)[2]

    @property
    def pid(self) -> int:
        return _SIGINFO_HEAD.unpack_from(self.info)[4]

    @property
    def uid(self) -> int:
        return _SIGINFO_HEAD.unpack_from(self.info)[5]


def hold_on_this_thread() -> int:
    """Block the guest's signals on the calling thread; its mask before."""
    return sigmask.block(GUEST_BOUND)


def _take_one(mask: int, seconds: float | None) -> tuple[int, bytes] | None:
    """rt_sigtimedwait for ``mask``: (signo, siginfo), or None when none came in
    ``seconds`` (0: none pending) or a signal outside ``mask`` interrupted it."""
    wanted = ctypes.c_uint64(mask)
    info = ctypes.create_string_buffer(SIGINFO_SIZE)
    timeout = None
    if seconds is not None:
        whole = int(seconds)
        timeout = ctypes.create_string_buffer(
            _TIMESPEC.pack(whole, int((seconds - whole) * 1e9)))
    signo = _syscall(_SYS_RT_SIGTIMEDWAIT, ctypes.addressof(wanted), ctypes.addressof(info),
                     ctypes.addressof(timeout) if timeout is not None else 0,
                     sigmask.SIGSET_BYTES, 0, 0)
    if signo <= 0:
        return None
    return signo, info.raw


def _own_pending() -> int:
    """The signals pending for the calling thread alone (not its process's)."""
    with open("/proc/thread-self/status", "rb") as status:
        for line in status:
            if line.startswith(b"SigPnd:"):
                return int(line.split()[1], 16)
    return 0


def take_pending() -> list[HostSignal]:
    """Take the guest's signals pending for the calling thread (its own and the
    process's) from the host, in the order Linux gives them (its own first). One of a
    number pending for the thread alone is taken as its own: a process-directed one
    of the same number arriving meanwhile would be too (a rare race)."""
    if not sigmask.pending() & GUEST_BOUND:
        return []
    own = _own_pending()
    taken = []
    while True:
        got = _take_one(GUEST_BOUND, 0)
        if got is None:
            return taken
        signo, info = got
        taken.append(HostSignal(signo, info, bool(own & sigmask.bit(signo))))


_signalfd: int | None = None
_signalfd_lock = threading.Lock()


def _fresh_lock_in_child() -> None:
    global _signalfd_lock
    _signalfd_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_in_child)


def _watch_fd() -> int:
    """A signalfd for the guest's signals and the kick (one for the VMM: what it
    reports is the polling thread's)."""
    global _signalfd
    # Made once and never changed: read without the lock, which a forked child
    # inherits held when the parent's signal taker was in here at the fork (its new
    # taker then waited on it forever, and the child's exit on that taker).
    if _signalfd is not None:
        return _signalfd
    with _signalfd_lock:
        if _signalfd is None:
            mask = ctypes.c_uint64(GUEST_BOUND | sigmask.bit(SIGKICK))
            fd = _syscall(_SYS_SIGNALFD4, -1, ctypes.addressof(mask), sigmask.SIGSET_BYTES,
                          _SFD_CLOEXEC | _SFD_NONBLOCK, 0, 0)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "signalfd4")
            _signalfd = fd
        return _signalfd


def wait_until_pending(seconds: float | None) -> None:
    """Wait until a guest signal or a kick is pending for the calling thread (which
    blocks them all), without taking it, or ``seconds`` have passed."""
    poller = select.poll()
    poller.register(_watch_fd(), select.POLLIN)
    poller.poll(None if seconds is None else seconds * 1000)     # rounded up to 1 ms


class ProcessSignalTaker:
    """A host thread that watches for the process's signals for the guest: when one
    is pending it calls ``take``, which must take them (``take_pending``) holding the
    lock under which the VMM looks at the guest's pending set. It never takes one
    itself outside that lock: a signal it held while waiting for the lock would be
    neither pending on the host nor queued for the guest, and a thread that looked
    then (a guest unblocking it) would miss it. It blocks every signal, and is the
    target of none but its own stop request: what it sees was sent to the process."""

    def __init__(self, take: Callable[[], None]) -> None:
        self._take = take
        self._stopping = False
        #: The thread's id while it runs; ``_running`` is held from its start until
        #: its end (what ``stop`` waits on).
        self._ident: int | None = None
        self._running = _thread.allocate_lock()

    def start(self) -> None:
        """Start the thread (if it is not running); OSError (EAGAIN) when the host
        cannot make it (RLIMIT_NPROC counts threads). It does not wait for the thread
        to be scheduled, as threading.Thread.start does: a forked child would wait for
        a core on a busy machine before running its guest. What the thread may miss
        meanwhile stays pending on the host (every signal it takes is blocked
        everywhere), and it looks first thing."""
        if self._running.locked():
            return
        self._stopping = False
        self._running.acquire()
        try:
            with sigmask.blocked_for_new_threads():
                self._ident = _thread.start_new_thread(self._loop, ())
        except RuntimeError as exc:        # "can't start new thread"
            self._running.release()
            raise OSError(errno.EAGAIN, str(exc)) from exc

    def stop(self) -> None:
        """End the thread (it takes nothing more); returns once it has ended."""
        if self._ident is None:
            return
        self._stopping = True
        if self._running.locked():
            try:
                signal.pthread_kill(self._ident, SIGKICK)
            except (OSError, ProcessLookupError):     # it has just ended
                pass
            with self._running:         # released as the thread ends
                pass
        self._ident = None

    def restart_in_child(self) -> None:
        """In the child of a fork, where only the forking thread exists: a new
        taker, if the parent had one (OSError as ``start``)."""
        if self._ident is not None:
            self._ident = None
            # The parent's thread held it; no thread here will release it.
            self._running = _thread.allocate_lock()
            self.start()

    def _loop(self) -> None:
        try:
            sigmask.block_in_new_thread()
            while not self._stopping:
                wait_until_pending(None)
                _take_one(sigmask.bit(SIGKICK), 0)      # a stop request, looked at next
                if not self._stopping and sigmask.pending() & GUEST_BOUND:
                    self._take()
        finally:
            self._running.release()


def discard_pending() -> None:
    """Drop the guest's signals still pending for the calling thread (the guest is
    gone): they must not take their default action in the VMM once unblocked."""
    while _take_one(GUEST_BOUND, 0) is not None:
        pass

