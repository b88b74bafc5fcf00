"""Signal system calls: dispositions, masks, alternate stacks, sigreturn, kill."""

from __future__ import annotations

import os
import struct

from ..machine import Stop
from . import signals as sig
from .abi import Errno
from .dispatch import handles
from .host_unsafe import host_syscall
from .uaccess import read_bytes, write_bytes


@handles("rt_sigaction")
def sys_rt_sigaction(proc, cpu, signo, act, oldact, sigsetsize, *_):
    """Implements rt_sigaction(2) (the guest's dispositions; the VMM keeps its own)."""
    return sig.sys_rt_sigaction(proc.signals, proc.space, signo, act, oldact, sigsetsize)


@handles("rt_sigprocmask")
def sys_rt_sigprocmask(proc, cpu, how, set_, oldset, sigsetsize, *_):
    """Implements rt_sigprocmask(2)."""
    return sig.sys_rt_sigprocmask(proc.signals, proc.space, how, set_, oldset, sigsetsize)


@handles("sigaltstack")
def sys_sigaltstack(proc, cpu, ss, old_ss, *_):
    """Implements sigaltstack(2)."""
    return sig.sys_sigaltstack(proc.signals, proc.space, cpu, ss, old_ss)


@handles("rt_sigreturn")
def sys_rt_sigreturn(proc, cpu, *_):
    """Implements rt_sigreturn(2)."""
    if not sig.sys_rt_sigreturn(proc.signals, cpu, proc.space):
        from .process import ExitStatus
        proc.log("kvmdune: bad signal frame in rt_sigreturn: killed by SIGSEGV")
        return Stop(value=ExitStatus(signal=sig.Signal.SIGSEGV))
    return None


@handles("rt_sigpending")
def sys_rt_sigpending(proc, cpu, set_, sigsetsize, *_):
    """Implements rt_sigpending(2): the pending signals that are blocked, in at most
    ``sigsetsize`` bytes."""
    if sigsetsize > sig.SIGSET_SIZE:
        return -Errno.EINVAL
    mask = sum(1 << (s - 1) for s in proc.signals.pending)
    write_bytes(proc.space, set_, struct.pack("<Q", mask & proc.signals.mask)[:sigsetsize])
    return 0


@handles("rt_sigsuspend")
def sys_rt_sigsuspend(proc, cpu, mask_ptr, sigsetsize, *_):
    """Implements rt_sigsuspend(2): wait with the given mask until a signal is
    delivered; always -EINTR."""
    if sigsetsize != sig.SIGSET_SIZE:
        return -Errno.EINVAL
    (mask,) = struct.unpack("<Q", read_bytes(proc.space, mask_ptr, 8))
    saved = proc.signals.mask
    proc.signals.mask = mask
    proc.wait_for_signal()
    # Deliver with the temporary mask; the handler's frame saves the original one.
    stop = proc.deliver_pending(cpu)
    proc.signals.mask = saved if proc.signals.mask == mask else proc.signals.mask
    return stop if stop is not None else -Errno.EINTR


@handles("pause")
def sys_pause(proc, cpu, *_):
    """Implements pause(2)."""
    proc.wait_for_signal()
    return -Errno.EINTR


@handles("kill")
def sys_kill(proc, cpu, pid, signo, *_):
    """Implements kill(2): host processes are the guest's processes; a signal to
    itself arrives back through the VMM's handlers."""
    return _send(proc, 62, pid, signo)


@handles("tkill")
def sys_tkill(proc, cpu, tid, signo, *_):
    """Implements tkill(2)."""
    return _send(proc, 200, tid, signo)


@handles("tgkill")
def sys_tgkill(proc, cpu, tgid, tid, signo, *_):
    """Implements tgkill(2)."""
    if signo and not sig.valid_signal(signo):
        return -Errno.EINVAL
    if tgid == tid == os.getpid():
        return proc.raise_signal(signo)
    return host_syscall(234, tgid, tid, signo)


def _send(proc, number: int, pid: int, signo: int) -> int:
    if signo and not sig.valid_signal(signo):
        return -Errno.EINVAL
    if pid == os.getpid():
        return proc.raise_signal(signo)
    return host_syscall(number, pid, signo)
