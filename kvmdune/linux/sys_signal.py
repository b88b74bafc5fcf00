"""Signal system calls: dispositions, masks, alternate stacks, sigreturn, kill."""

from __future__ import annotations

import os
import struct
from typing import Callable

from ..machine import Stop
from . import signals as sig
from .abi import Errno, Signal
from .exit_status import ExitStatus
from .host_unsafe import HostBuffer, host_syscall
from .syscall_table import Sysno
from .uaccess import Fault, read_bytes, write_bytes

_TIMESPEC = struct.Struct("<qq")
NSEC_PER_SEC = 1_000_000_000


def sys_rt_sigaction(proc, cpu, signo, act, oldact, sigsetsize, *_):
    """Implements rt_sigaction(2) (the process's dispositions, shared by its threads;
    the VMM keeps its own). A signal made ignored is dropped from every thread."""
    def discard_everywhere(ignored: int) -> None:
        proc.signals.discard(ignored)
        for task in proc.threads.tasks.values():
            task.signals.discard(ignored)

    return sig.sys_rt_sigaction(proc.signals, proc.space, signo, act, oldact, sigsetsize,
                                discard_everywhere)


def sys_rt_sigprocmask(proc, cpu, how, set_, oldset, sigsetsize, *_):
    """Implements rt_sigprocmask(2) for the calling thread. Signals pending for the
    process that it now blocks go to a thread that does not, as Linux retargets them."""
    signals = proc.signals
    result = sig.sys_rt_sigprocmask(signals, proc.space, how, set_, oldset, sigsetsize)
    proc.take_host_signals()       # pending for the process before the change: routed too
    if result == 0 and set_ and proc.threads.threaded:
        for signo in sorted(signals.shared.pending):
            if signals.blocks(signo):
                proc.threads.route(signo)
    return result


def sys_sigaltstack(proc, cpu, ss, old_ss, *_):
    """Implements sigaltstack(2)."""
    return sig.sys_sigaltstack(proc.signals, proc.space, cpu, ss, old_ss)


def sys_rt_sigreturn(proc, cpu, *_):
    """Implements rt_sigreturn(2)."""
    if not sig.sys_rt_sigreturn(proc.signals, cpu, proc.space):
        proc.log("kvmdune: bad signal frame in rt_sigreturn: killed by SIGSEGV")
        return Stop(value=ExitStatus(signal=sig.Signal.SIGSEGV))
    return None


def sys_rt_sigpending(proc, cpu, set_, sigsetsize, *_):
    """Implements rt_sigpending(2): the pending signals that are blocked, in at most
    ``sigsetsize`` bytes."""
    if sigsetsize > sig.SIGSET_SIZE:
        return -Errno.EINVAL
    proc.take_host_signals()
    mask = sum(1 << (s - 1) for s in proc.signals.all_pending())
    write_bytes(proc.space, set_, struct.pack("<Q", mask & proc.signals.mask)[:sigsetsize])
    return 0


def sys_rt_sigtimedwait(proc, cpu, set_, info, timeout, sigsetsize, *_):
    """Implements rt_sigtimedwait(2): take one of the signals in ``set`` from the
    pending ones, waiting at most ``timeout`` (NULL: for ever) for one to arrive.
    A signal outside the set that has a handler interrupts it (EINTR)."""
    if sigsetsize != sig.SIGSET_SIZE:
        return -Errno.EINVAL
    (wanted,) = struct.unpack("<Q", read_bytes(proc.space, set_, 8))
    wanted &= ~sum(1 << (s - 1) for s in sig.UNBLOCKABLE)
    seconds = None
    if timeout:
        tv_sec, tv_nsec = _TIMESPEC.unpack(read_bytes(proc.space, timeout, _TIMESPEC.size))
        if tv_sec < 0 or not 0 <= tv_nsec < NSEC_PER_SEC:
            return -Errno.EINVAL
        seconds = tv_sec + tv_nsec / NSEC_PER_SEC
    if not proc.wait_for_signal(seconds, wanted):
        return -Errno.EAGAIN
    taken = [s for s in sorted(proc.signals.all_pending()) if wanted & (1 << (s - 1))]
    if not taken:
        return -Errno.EINTR          # a deliverable signal outside the set came first
    signo = taken[0]
    host = proc.signals.take(signo)
    if info:
        sender = host or sig.SenderInfo(sig.SigCode.SI_USER, 0, 0)
        write_bytes(proc.space, info, sender.siginfo(signo))
    return signo


def sys_rt_sigsuspend(proc, cpu, mask_ptr, sigsetsize, *_):
    """Implements rt_sigsuspend(2): wait with the given mask until a signal is
    delivered; always -EINTR. The handler runs with the given mask at the call's
    end and its frame restores the original (the signal state's saved mask)."""
    if sigsetsize != sig.SIGSET_SIZE:
        return -Errno.EINVAL
    (mask,) = struct.unpack("<Q", read_bytes(proc.space, mask_ptr, 8))
    proc.signals.use_temporary_mask(mask)
    proc.wait_for_signal()
    return -Errno.EINTR


def with_temporary_mask(proc, mask: int | None, call: Callable[[], int]) -> int:
    """Run ``call`` (a wait: pselect6, ppoll, epoll_pwait) with the guest thread's
    mask set to ``mask`` (None: unchanged), as the race-free idiom needs: a signal
    blocked until now interrupts the wait, and its handler runs with ``mask`` at
    the call's end. Any other result restores the mask at once (Linux's
    restore_saved_sigmask_unless(EINTR)), the signal then staying pending."""
    if mask is None:
        return call()
    proc.signals.use_temporary_mask(mask)
    result = call()
    if result != -Errno.EINTR:
        proc.signals.restore_saved_mask()
    return result


def read_sigset(proc, pointer: int, size: int) -> int | None:
    """The guest's sigset_t at ``pointer`` of ``size`` bytes; None for NULL. A size
    other than the kernel's fails the call with EINVAL."""
    if not pointer:
        return None
    if size != sig.SIGSET_SIZE:
        raise Fault(Errno.EINVAL)
    (mask,) = struct.unpack("<Q", read_bytes(proc.space, pointer, sig.SIGSET_SIZE))
    return mask


def sys_pause(proc, cpu, *_):
    """Implements pause(2)."""
    proc.wait_for_signal()
    return -Errno.EINTR


def sys_kill(proc, cpu, pid, signo, *_):
    """Implements kill(2): host processes are the guest's processes; a signal to
    itself arrives back through the VMM's handlers."""
    return _send(proc, Sysno.kill, pid, signo)


def sys_tkill(proc, cpu, tid, signo, *_):
    """Implements tkill(2): one of the process's threads, or another process's."""
    if signo and not sig.valid_signal(signo):
        return -Errno.EINVAL
    if tid <= 0:
        return -Errno.EINVAL
    return _to_thread(proc, os.getpid() if tid in proc.threads.tasks else 0, tid, signo,
                      lambda: host_syscall(Sysno.tkill, tid, signo))


def sys_tgkill(proc, cpu, tgid, tid, signo, *_):
    """Implements tgkill(2): one of the process's threads, or another process's."""
    if signo and not sig.valid_signal(signo):
        return -Errno.EINVAL
    if tgid <= 0 or tid <= 0:
        return -Errno.EINVAL
    return _to_thread(proc, tgid, tid, signo,
                      lambda: host_syscall(Sysno.tgkill, tgid, tid, signo))


def sys_rt_sigqueueinfo(proc, cpu, tgid, signo, info, *_):
    """Implements rt_sigqueueinfo(2). To the guest itself it is queued here with the
    siginfo as given (the host would queue it on the VMM, whose handlers never see a
    siginfo); to any other process, the host's."""
    queued = _queued_siginfo(proc, tgid, info)
    if isinstance(queued, int):
        return queued
    if signo and not sig.valid_signal(signo):
        return -Errno.EINVAL
    if tgid != os.getpid():
        return host_syscall(Sysno.rt_sigqueueinfo, tgid, signo, HostBuffer(queued.queued))
    return proc.raise_signal(signo, sender=queued)


def sys_rt_tgsigqueueinfo(proc, cpu, tgid, tid, signo, info, *_):
    """Implements rt_tgsigqueueinfo(2) (pthread_sigqueue): one of the guest's threads
    gets the siginfo as given; another process's thread, the host's."""
    queued = _queued_siginfo(proc, tgid, info)
    if isinstance(queued, int):
        return queued
    if signo and not sig.valid_signal(signo):
        return -Errno.EINVAL
    if tgid <= 0 or tid <= 0:
        return -Errno.EINVAL
    return _to_thread(proc, tgid, tid, signo,
                      lambda: host_syscall(Sysno.rt_tgsigqueueinfo, tgid, tid, signo,
                                           HostBuffer(queued.queued)), queued)


def _queued_siginfo(proc, tgid: int, info: int) -> sig.SenderInfo | int:
    """The guest's siginfo for a queued signal, or -errno. Linux's rule: only a
    process signalling itself may claim a kernel or kill()/tgkill() origin."""
    raw = read_bytes(proc.space, info, sig.SIGINFO_SIZE)
    _signo, _errno, code, _pad, pid, uid = struct.unpack_from("<iiiiiI", raw)
    if (code >= 0 or code == sig.SigCode.SI_TKILL) and tgid != os.getpid():
        return -Errno.EPERM
    return sig.SenderInfo(code, pid, uid, queued=raw)


def _to_thread(proc, tgid: int, tid: int, signo: int, on_host,
               sender: sig.SenderInfo | None = None) -> int:
    """A signal for thread ``tid``: queued for it when it is one of the guest's
    (SIGKILL and SIGSTOP act on the whole process, as on Linux); ESRCH for the
    VMM's own threads, which the guest does not have; the host's for others."""
    if tgid != os.getpid():
        if os.path.exists(f"/proc/self/task/{tid}") and tid not in proc.threads.tasks:
            return -Errno.ESRCH      # a thread of the VMM (tkill names no group)
        return on_host()
    if signo in (Signal.SIGKILL, Signal.SIGSTOP):
        return proc.raise_signal(signo) if tid in proc.threads.tasks else -Errno.ESRCH
    info = sender or sig.SenderInfo(sig.SigCode.SI_TKILL, os.getpid(), os.getuid())
    return 0 if proc.threads.send_to_thread(tid, signo, info) else -Errno.ESRCH


def _send(proc, number: int, pid: int, signo: int) -> int:
    if signo and not sig.valid_signal(signo):
        return -Errno.EINVAL
    if pid == os.getpid():
        return proc.raise_signal(signo, sig.SigCode.SI_USER)
    return host_syscall(number, pid, signo)
