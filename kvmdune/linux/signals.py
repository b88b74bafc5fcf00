"""Guest signals: dispositions, the mask, pending signals, delivery on the guest's
stack with a Linux-layout rt_sigframe, rt_sigreturn, and default actions.

Host signals aimed at the guest process (it *is* the VMM process, as far as Linux
is concerned) are taken by the VMM (host_signals.py) and queued here; they reach the
guest at the next event boundary. Synchronous faults become SIGSEGV, SIGILL, SIGFPE, ....
"""

from __future__ import annotations

import enum
import signal as host_signal
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..machine import Cpu, Vector
from ..machine.layout import USER_CS, USER_DS
from ..memory import WRITE, GuestFault
from ._fastpath import SigActions
from .abi import (SIGRTMAX, Errno, SigactionFlags, SigaltstackFlags, SigHandler, Signal,
                  c_int)
from ..machine.x86 import USER_RFLAGS, USER_RFLAGS_FIXED, RFLAGS

SIGSET_SIZE = 8
RED_ZONE = 128
_SIGACTION = struct.Struct("<QQQQ")          # handler, flags, restorer, mask (kernel)
_STACK_T = struct.Struct("<QiiQ")             # ss_sp, ss_flags, pad, ss_size
#: sigcontext_64 general registers, in the kernel's order.
MCONTEXT_REGS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi",
                 "rbp", "rbx", "rdx", "rax", "rcx", "rsp", "rip", "rflags")
_MCONTEXT = struct.Struct("<18Q4H4QQ8Q")      # regs, cs/gs/fs/ss, err/trapno/oldmask/cr2,
                                              # fpstate, reserved: 256 bytes
_UCONTEXT_HEAD = struct.Struct("<QQ")         # uc_flags, uc_link
UCONTEXT_SIZE = _UCONTEXT_HEAD.size + _STACK_T.size + _MCONTEXT.size + SIGSET_SIZE
SIGINFO_SIZE = 128
UC_SIGCONTEXT_SS = 0x2
UC_STRICT_RESTORE_SS = 0x4

#: Signals whose default action is to ignore them.
DEFAULT_IGNORE = {Signal.SIGCHLD, Signal.SIGURG, Signal.SIGWINCH, Signal.SIGCONT}
#: Signals whose default action dumps core (status shows it; we never write a core).
DEFAULT_CORE = {Signal.SIGQUIT, Signal.SIGILL, Signal.SIGTRAP, Signal.SIGABRT,
                Signal.SIGBUS, Signal.SIGFPE, Signal.SIGSEGV, Signal.SIGXCPU,
                Signal.SIGXFSZ, Signal.SIGSYS}
DEFAULT_STOP = {Signal.SIGSTOP, Signal.SIGTSTP, Signal.SIGTTIN, Signal.SIGTTOU}
UNBLOCKABLE = {Signal.SIGKILL, Signal.SIGSTOP}
#: The sa_flags Linux keeps (kernel/signal.c's UAPI_SA_FLAGS, x86's SA_RESTORER
#: included): rt_sigaction clears the others in the action it stores and shows.
KEPT_SA_FLAGS = (SigactionFlags.SA_NOCLDSTOP | SigactionFlags.SA_NOCLDWAIT
                 | SigactionFlags.SA_SIGINFO | SigactionFlags.SA_ONSTACK
                 | SigactionFlags.SA_RESTART | SigactionFlags.SA_NODEFER
                 | SigactionFlags.SA_RESETHAND | SigactionFlags.SA_EXPOSE_TAGBITS
                 | SigactionFlags.SA_RESTORER)
#: The signal a synchronous exception raises, as Linux's trap handlers choose it.
EXCEPTION_SIGNALS = {
    Vector.DE: Signal.SIGFPE, Vector.DB: Signal.SIGTRAP, Vector.BP: Signal.SIGTRAP,
    Vector.OF: Signal.SIGSEGV, Vector.BR: Signal.SIGSEGV, Vector.UD: Signal.SIGILL,
    Vector.NM: Signal.SIGFPE, Vector.TS: Signal.SIGSEGV, Vector.NP: Signal.SIGBUS,
    Vector.SS: Signal.SIGBUS, Vector.GP: Signal.SIGSEGV, Vector.MF: Signal.SIGFPE,
    Vector.AC: Signal.SIGBUS, Vector.XM: Signal.SIGFPE,
}


class SigCode(enum.IntEnum):
    """siginfo's si_code for signals sent by a process (asm-generic/siginfo.h)."""

    SI_USER = 0       # kill(2), raise(3)
    SI_QUEUE = -1     # sigqueue(3)
    SI_TKILL = -6     # tkill(2), tgkill(2)


#: struct siginfo's head: si_signo, si_errno, si_code, padding, then the kill()
#: member of its union: si_pid, si_uid.
_SIGINFO_KILL = struct.Struct("<iiiiiI")


@dataclass(frozen=True)
class SenderInfo:
    """What siginfo says of who sent a signal."""

    si_code: int
    si_pid: int
    si_uid: int
    #: The whole siginfo, delivered as given (si_value and all), only si_signo set:
    #: what a process queued itself with rt_(tg)sigqueueinfo, or what the host made
    #: of a signal from outside (a timer's si_timerid, si_overrun, ...).
    queued: bytes = b""

    def siginfo(self, signo: int) -> bytes:
        """The SIGINFO_SIZE bytes a handler or sigtimedwait receives."""
        if self.queued:
            return struct.pack("<i", signo) + self.queued[4:SIGINFO_SIZE]
        return _SIGINFO_KILL.pack(signo, 0, self.si_code, 0, self.si_pid,
                                  self.si_uid).ljust(SIGINFO_SIZE, b"\0")


@dataclass
class SigAction:
    handler: int = SigHandler.SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0

    def pack(self) -> bytes:
        return _SIGACTION.pack(self.handler, self.flags, self.restorer, self.mask)


class Dispositions:
    """The process's 64 actions: a view of their native store (``SigActions``),
    which the fast path's rt_sigaction reads and changes too, so the VMM's delivery
    sees exactly what a natively served call set. Writes hold the process's lock,
    as the native server's do."""

    def __init__(self) -> None:
        self.store = SigActions()

    def get(self, signo: int) -> SigAction:
        return SigAction(*self.store.get(signo))

    def set(self, signo: int, action: SigAction) -> None:
        self.store.set(signo, action.handler, action.flags, action.restorer, action.mask)

    def items(self) -> list[tuple[int, SigAction]]:
        """The actions other than the default (all zero), lowest signal first."""
        return [(signo, SigAction(*action)) for signo, action in self.store.changed()]

    def reset_handled(self) -> None:
        """Linux's flush_signal_handlers: handlers back to SIG_DFL, SIG_IGN kept, and
        every action's flags, restorer and mask cleared."""
        self.store.reset_handled()


#: Extended (FPU/SSE/AVX) states kept for handlers still running: a handler that
#: longjmps away never returns its entry, so only the newest few are kept.
MAX_SAVED_EXTENDED_STATES = 64


@dataclass
class SignalHandlers:
    """What the threads of a process share (CLONE_SIGHAND): the dispositions, and
    the signals sent to the process as a whole that no thread has taken yet."""

    actions: Dispositions = field(default_factory=Dispositions)
    pending: set[int] = field(default_factory=set)
    #: Who sent each pending signal that says (``queue``), for its siginfo.
    pending_info: dict[int, SenderInfo] = field(default_factory=dict)
    #: The thread each pending signal was routed to (threads.py's ``route``): as
    #: Linux wakes one thread for a process's signal and only that one takes it,
    #: another thread leaves it to that one while it can take it. CPython runs its
    #: handlers only in the main thread, and learns of a signal promptly only when
    #: the main thread is the one that took it.
    routed_to: dict[int, "SignalState"] = field(default_factory=dict)
    #: Called when a host signal for the guest is taken (the fast path then sends
    #: every call to the VMM, which delivers it).
    on_arrival: Callable[[], None] | None = None
    #: Called with the number of a signal that just became pending for the process:
    #: wakes a thread that can take it (threads.py).
    route: Callable[[int], None] | None = None

    def queue(self, signo: int, info: SenderInfo | None = None) -> None:
        """``signo`` is pending for the process, sent by ``info``. A signal already
        pending is not queued twice and keeps its first siginfo, as Linux keeps it."""
        _queue(self.pending, self.pending_info, signo, info)

    def ignore(self, signals: Iterable[int]) -> None:
        """Start ignoring ``signals`` (those a program inherits ignored at execve)."""
        for signo in signals:
            if signo not in UNBLOCKABLE:
                self.actions.set(signo, SigAction(handler=SigHandler.SIG_IGN))

    def reset_handled(self) -> None:
        """Handled signals back to their default action; ignored ones stay ignored
        (execve, and clone3's CLONE_CLEAR_SIGHAND)."""
        self.actions.reset_handled()


def _queue(pending: set[int], infos: dict[int, SenderInfo], signo: int,
           info: SenderInfo | None) -> None:
    if signo in pending:
        return
    pending.add(signo)
    if info is not None:
        infos[signo] = info
    else:
        infos.pop(signo, None)


@dataclass
class SignalState:
    """One thread's signal state: its mask, the signals sent to it alone, its
    alternate stack, and (``shared``) the process's dispositions and pending ones."""

    shared: SignalHandlers = field(default_factory=SignalHandlers)
    # The interrupted code's FPU/SSE/AVX state, by the ucontext address of its frame.
    extended: dict[int, object] = field(default_factory=dict)
    mask: int = 0
    #: The mask to restore once a call that waits with a temporary one (pselect6,
    #: ppoll, epoll_pwait, rt_sigsuspend) has returned: Linux's saved_sigmask. A
    #: handler run at that call's end records it in its frame, so sigreturn restores it.
    saved_mask: int | None = None
    pending: set[int] = field(default_factory=set)
    #: Who sent each signal pending for this thread alone (tgkill, a fault...): each
    #: thread's own, as Linux keeps a siginfo per pending queue.
    pending_info: dict[int, SenderInfo] = field(default_factory=dict)
    #: The thread has ended: a process's signal routed to it goes to any other.
    ended: bool = False
    altstack: tuple[int, int, int] = (0, SigaltstackFlags.SS_DISABLE, 0)  # sp, flags, size

    @property
    def actions(self) -> Dispositions:
        return self.shared.actions

    @property
    def on_arrival(self) -> Callable[[], None] | None:
        return self.shared.on_arrival

    @on_arrival.setter
    def on_arrival(self, callback: Callable[[], None] | None) -> None:
        self.shared.on_arrival = callback

    def action(self, signo: int) -> SigAction:
        return self.shared.actions.get(signo)

    def all_pending(self) -> set[int]:
        """The signals this thread could take: its own and the process's."""
        return self.pending | self.shared.pending

    def has_pending(self) -> bool:
        return bool(self.pending or self.shared.pending)

    def blocks(self, signo: int) -> bool:
        return signo not in UNBLOCKABLE and bool(self.mask & _bit(signo))

    def next_deliverable(self) -> int | None:
        """The lowest pending signal the mask lets through. Ignored ones met on the
        way are dropped, as Linux drops an unblocked ignored signal: it neither
        interrupts a call nor reaches the guest."""
        for signo in sorted(self.all_pending()):
            if self.blocks(signo) or self._left_to_another(signo):
                continue
            if not is_ignored(self, signo):
                return signo
            self.discard(signo)
        return None

    def use_temporary_mask(self, mask: int) -> None:
        """Wait with ``mask`` (pselect6's, ppoll's, ...) until the call's end."""
        if self.saved_mask is None:
            self.saved_mask = self.mask
        self.mask = mask & ~_UNBLOCKABLE_BITS

    def restore_saved_mask(self) -> None:
        """The call that set a temporary mask is over and no handler took the
        original into its frame: it applies again."""
        if self.saved_mask is not None:
            self.mask, self.saved_mask = self.saved_mask, None

    def mask_to_save(self) -> int:
        """The mask a signal frame records (and sigreturn restores): the original
        one while a temporary mask is in force, which the frame then owns."""
        mask = self.mask if self.saved_mask is None else self.saved_mask
        self.saved_mask = None
        return mask

    def _left_to_another(self, signo: int) -> bool:
        """A signal pending for the process only (not this thread's own) that was
        routed to another thread that can still take it."""
        if signo in self.pending:
            return False
        other = self.shared.routed_to.get(signo)
        return other is not None and other is not self and not other.ended \
            and not other.blocks(signo)

    def queue(self, signo: int, info: SenderInfo | None = None) -> None:
        """``signo`` is pending for this thread alone, sent by ``info``."""
        _queue(self.pending, self.pending_info, signo, info)

    def take(self, signo: int) -> SenderInfo | None:
        """Remove ``signo`` from what is pending (the thread's own first); who sent
        it, if that is known."""
        if signo in self.pending:
            self.pending.discard(signo)
            return self.pending_info.pop(signo, None)
        self.shared.pending.discard(signo)
        self.shared.routed_to.pop(signo, None)
        return self.shared.pending_info.pop(signo, None)

    def discard(self, signo: int) -> None:
        """Drop ``signo`` wherever it is pending for this thread (an ignored one)."""
        for pending, info in ((self.pending, self.pending_info),
                              (self.shared.pending, self.shared.pending_info)):
            pending.discard(signo)
            info.pop(signo, None)

    def clear_pending(self) -> None:
        """Nothing pending for this thread or its process (a child of fork)."""
        for pending, info in ((self.pending, self.pending_info),
                              (self.shared.pending, self.shared.pending_info)):
            pending.clear()
            info.clear()

    def for_new_thread(self) -> "SignalState":
        """A thread's state as clone(CLONE_THREAD) makes it: the same mask, nothing
        pending of its own, no alternate stack (Linux clears it for CLONE_VM)."""
        return SignalState(shared=self.shared, mask=self.mask)

    def reset_for_exec(self) -> None:
        """execve keeps ignored dispositions and resets handled ones to default."""
        self.shared.reset_handled()
        self.altstack = (0, SigaltstackFlags.SS_DISABLE, 0)


def _bit(signo: int) -> int:
    return 1 << (signo - 1)


_UNBLOCKABLE_BITS = _bit(Signal.SIGKILL) | _bit(Signal.SIGSTOP)


def valid_signal(signo: int) -> bool:
    return 1 <= signo <= SIGRTMAX


def is_ignored(state: SignalState, signo: int) -> bool:
    action = state.action(signo)
    return action.handler == SigHandler.SIG_IGN or (
        action.handler == SigHandler.SIG_DFL and signo in DEFAULT_IGNORE)


# -- system calls ------------------------------------------------------------------
def sys_rt_sigaction(state: SignalState, space, signo: int, act: int, oldact: int,
                     sigsetsize: int, discard: Callable[[int], None] | None = None) -> int:
    """Implements rt_sigaction(2), in Linux's order: the size, reading the new
    action, the signal number, the change, then writing the old action (a fault
    there fails the call with the change made). A signal made ignored is dropped
    where it is pending (``discard``; default: for this thread and the process).
    The fast path serves the calls that ignore nothing natively (fastpath.c's
    call_rt_sigaction, sigstore.c) with the same checks, on the same store."""
    signo = c_int(signo)
    if sigsetsize != SIGSET_SIZE:
        return -Errno.EINVAL
    try:
        new = SigAction(*_SIGACTION.unpack(space.read(act, _SIGACTION.size))) if act else None
    except GuestFault:
        return -Errno.EFAULT
    if not valid_signal(signo) or (act and signo in UNBLOCKABLE):
        return -Errno.EINVAL
    old = state.action(signo)
    if new is not None:
        new.flags &= KEPT_SA_FLAGS
        new.mask &= ~_UNBLOCKABLE_BITS
        state.actions.set(signo, new)
        if is_ignored(state, signo):
            (discard or state.discard)(signo)
    if oldact:
        old.flags &= KEPT_SA_FLAGS
        try:
            space.write(oldact, old.pack(), WRITE)
        except GuestFault:
            return -Errno.EFAULT
    return 0


def sys_rt_sigprocmask(state: SignalState, space, how: int, set_: int, oldset: int,
                       sigsetsize: int) -> int:
    """Implements rt_sigprocmask(2)."""
    if sigsetsize != SIGSET_SIZE:
        return -Errno.EINVAL
    try:
        new = struct.unpack("<Q", space.read(set_, 8))[0] if set_ else None
        if oldset:
            space.write(oldset, struct.pack("<Q", state.mask), WRITE)
    except GuestFault:
        return -Errno.EFAULT
    if new is not None:
        if how == 0:
            state.mask |= new
        elif how == 1:
            state.mask &= ~new
        elif how == 2:
            state.mask = new
        else:
            return -Errno.EINVAL
        state.mask &= ~_UNBLOCKABLE_BITS
    return 0


def sys_sigaltstack(state: SignalState, space, cpu: Cpu, ss: int, old_ss: int) -> int:
    """Implements sigaltstack(2)."""
    sp, flags, size = state.altstack
    on_stack = not flags & SigaltstackFlags.SS_DISABLE and sp <= cpu.regs.rsp < sp + size
    try:
        if old_ss:
            shown = SigaltstackFlags.SS_ONSTACK if on_stack else flags
            space.write(old_ss, _STACK_T.pack(sp, int(shown), 0, size), WRITE)
        if ss:
            new_sp, new_flags, _pad, new_size = _STACK_T.unpack(space.read(ss, _STACK_T.size))
            if on_stack:
                return -Errno.EPERM
            if new_flags & ~(SigaltstackFlags.SS_DISABLE | SigaltstackFlags.SS_AUTODISARM
                             | SigaltstackFlags.SS_ONSTACK):
                return -Errno.EINVAL
            if not new_flags & SigaltstackFlags.SS_DISABLE and new_size < 2048:
                return -Errno.ENOMEM
            state.altstack = (new_sp, new_flags & ~SigaltstackFlags.SS_ONSTACK, new_size)
    except GuestFault:
        return -Errno.EFAULT
    return 0


# -- delivery ------------------------------------------------------------------------
def deliver(state: SignalState, cpu: Cpu, space, signo: int,
            fault_address: int = 0, code: int = 0, sender: SenderInfo | None = None) -> bool:
    """Set up the guest to run its handler for ``signo`` (``sender``: who sent it,
    when known). Returns False if the frame cannot be written (the caller then kills
    the guest with SIGSEGV, as Linux does)."""
    action = state.action(signo)
    if not action.flags & SigactionFlags.SA_RESTORER:
        return False        # x86-64 Linux has no return stub of its own to use
    regs = cpu.regs
    sp = regs.rsp
    alt_sp, alt_flags, alt_size = state.altstack
    if (action.flags & SigactionFlags.SA_ONSTACK and not alt_flags & SigaltstackFlags.SS_DISABLE
            and not alt_sp <= sp < alt_sp + alt_size):
        sp = alt_sp + alt_size
    else:
        sp -= RED_ZONE
    frame = ((sp - 8 - UCONTEXT_SIZE - SIGINFO_SIZE) & ~15) - 8
    uc = frame + 8
    info = uc + UCONTEXT_SIZE
    values = [getattr(regs, name) for name in MCONTEXT_REGS]
    interrupted_mask = state.mask_to_save()
    mcontext = _MCONTEXT.pack(*values, USER_CS, 0, 0, USER_DS, 0, 0, interrupted_mask,
                              fault_address, 0, *([0] * 8))
    ucontext = (_UCONTEXT_HEAD.pack(UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, 0)
                + _STACK_T.pack(alt_sp, int(alt_flags), 0, alt_size) + mcontext
                + struct.pack("<Q", interrupted_mask))
    siginfo = (sender.siginfo(signo) if sender is not None else
               struct.pack("<iii4xQ", signo, 0, code, fault_address).ljust(SIGINFO_SIZE, b"\0"))
    try:
        space.write(frame, struct.pack("<Q", action.restorer) + ucontext + siginfo, WRITE)
    except GuestFault:
        return False
    _save_extended(state, cpu, uc)
    state.mask |= action.mask
    if not action.flags & SigactionFlags.SA_NODEFER:
        state.mask |= _bit(signo)
    if action.flags & SigactionFlags.SA_RESETHAND:
        # Linux resets the handler alone: flags, restorer and mask stay.
        state.actions.set(signo, SigAction(SigHandler.SIG_DFL, action.flags, action.restorer,
                                           action.mask))
    regs.rdi, regs.rsi, regs.rdx, regs.rax = signo, info, uc, 0
    regs.rip, regs.rsp = action.handler, frame
    regs.rflags &= ~int(RFLAGS.DF | RFLAGS.TF)
    return True


def sys_rt_sigreturn(state: SignalState, cpu: Cpu, space) -> bool:
    """Implements rt_sigreturn(2): restore the registers and mask saved in the frame
    at RSP (after the handler's ``ret`` popped the return address)."""
    uc = cpu.regs.rsp
    try:
        raw = space.read(uc, UCONTEXT_SIZE)
    except GuestFault:
        return False
    offset = _UCONTEXT_HEAD.size + _STACK_T.size
    fields = _MCONTEXT.unpack_from(raw, offset)
    for name, value in zip(MCONTEXT_REGS, fields):
        setattr(cpu.regs, name, value)
    cpu.regs.rflags = (cpu.regs.rflags & USER_RFLAGS) | USER_RFLAGS_FIXED
    (mask,) = struct.unpack_from("<Q", raw, offset + _MCONTEXT.size)
    state.mask = mask & ~_UNBLOCKABLE_BITS
    saved = state.extended.pop(uc, None)
    if saved is not None:
        cpu.vcpu.set_xsave(saved)
    return True


def _save_extended(state: SignalState, cpu: Cpu, uc: int) -> None:
    """Keep the FPU/SSE/AVX registers of the interrupted code: the handler may use
    them (memcpy does), and the code it interrupted must find them unchanged."""
    try:
        state.extended[uc] = cpu.vcpu.get_xsave()
    except Exception:   # a KVM without KVM_CAP_XSAVE: nothing to keep
        return
    while len(state.extended) > MAX_SAVED_EXTENDED_STATES:
        state.extended.pop(next(iter(state.extended)))


# -- host side -------------------------------------------------------------------------
#: Signals Python's own start-up ignores in every interpreter: whether this VMM's
#: caller ignored them cannot be told from here (the native client tells; see
#: kvmdune.cli.inherited).
IGNORED_BY_PYTHON = frozenset({Signal.SIGPIPE, Signal.SIGXFSZ})


def inherited_ignored() -> frozenset[int]:
    """The signals this VMM process was started with ignored, which a program it runs
    inherits ignored as across execve (an ignored SIGINT leaves Python's handler
    out, so ``getsignal`` shows it)."""
    ignored = set()
    for signo in range(1, host_signal.NSIG):
        if signo in IGNORED_BY_PYTHON or signo in UNBLOCKABLE:
            continue
        try:
            if host_signal.getsignal(signo) == host_signal.SIG_IGN:
                ignored.add(signo)
        except ValueError:      # numbers the host does not define
            continue
    return frozenset(ignored)
