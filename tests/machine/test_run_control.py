"""Stopping runs (time budget, another thread) and tearing machines down."""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from dataclasses import dataclass, field

import pytest

from guestcode import TEST_MEMORY, Recorder, exit_with, run_program
from kvmdune.linux.host_signals import discard_pending
from kvmdune.machine import Machine, Stop, StopReason, sigmask

pytestmark = pytest.mark.kvm
SPIN = "1: jmp 1b\n"


def test_infinite_loop_stopped_by_budget_and_machine_stays_usable(machine):
    started = time.monotonic()
    stop = run_program(machine, SPIN, budget=0.3)
    assert stop.reason is StopReason.BUDGET
    assert time.monotonic() - started < 10
    assert machine.cpu.sregs.cs.selector & 3 == 3       # it was stopped at CPL3
    assert run_program(machine, "mov rax, 9\n" + exit_with("rax")).value == 9


def test_stopped_from_another_thread(machine):
    timer = threading.Timer(0.2, machine.cpu.stop)
    timer.start()
    try:
        stop = run_program(machine, SPIN, budget=None)
    finally:
        timer.cancel()
    assert stop.reason is StopReason.REQUEST


def test_stopped_run_resumes_where_it_was(machine):
    # A loop counting in rbx is interrupted, resumed, and still finishes. A billion
    # iterations take at least 0.2 s on any CPU (one cycle each at 5 GHz), so the
    # 0.05 s budget always interrupts it: the resume is always exercised.
    source = "xor rbx, rbx\n1: inc rbx\ncmp rbx, 1000000000\njne 1b\n" + exit_with("rbx")
    from guestcode import Recorder, load_program

    space = load_program(machine, source)
    stop = machine.run(Recorder(), budget=0.05)
    assert stop.reason is StopReason.BUDGET
    assert 0 < machine.cpu.regs.rbx < 1000000000
    stop = machine.run(Recorder(), budget=60)
    assert stop.value == 1000000000
    space.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_thousand_machines_leave_no_descriptors_or_memory_behind():
    program = "mov rax, 3\n" + exit_with("rax")

    def one() -> None:
        with Machine(TEST_MEMORY) as m:
            assert run_program(m, program).value == 3

    for _ in range(20):   # warm caches and allocator pools first
        one()
    gc.collect()
    fds, rss = _open_fds(), _rss_kib()
    for _ in range(1000):
        one()
    gc.collect()
    assert _open_fds() == fds
    assert _rss_kib() - rss < 16 * 1024   # KiB: no per-VM growth (16 KiB/VM would be 16 MiB)


@dataclass
class _TakesSignal(Recorder):
    """Stops the run with the signals pending for this thread that it watches, unless
    the watchdog stopped it (a kick also interrupts KVM_RUN, the signal still pending)."""

    watchdog: threading.Event = field(default_factory=threading.Event)

    def on_interrupt(self, cpu):
        pending = sigmask.pending() & WATCHED
        return Stop(value=pending) if pending and not self.watchdog.is_set() else None


#: A real-time signal, and glibc's SIGCANCEL, which only raw calls can block.
WATCHED = sigmask.bit(35) | sigmask.bit(sigmask.SIGCANCEL)
_SYS_TGKILL = 234


def _tgkill(tid: int, signo: int) -> None:
    """tgkill at a thread of this process (glibc refuses to send SIGCANCEL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_SYS_TGKILL, os.getpid(), tid, signo) == 0


@pytest.mark.parametrize("signo", [35, sigmask.SIGCANCEL])
def test_a_signal_blocked_outside_kvm_run_interrupts_user_code_and_stays_pending(
        machine, signo):
    """With KVM_SET_SIGNAL_MASK leaving it unblocked, a signal the thread blocks
    ends KVM_RUN in a CPL3 loop that never exits, and stays pending for the thread
    to take with sigtimedwait: its default action (to end the process) never runs."""
    machine.set_run_signal_mask(0)
    previous = sigmask.block(WATCHED)
    sender = threading.Timer(0.1, _tgkill, (threading.get_native_id(), signo))
    handler = _TakesSignal()

    def give_up() -> None:
        handler.watchdog.set()
        machine.cpu.stop()

    watchdog = threading.Timer(30, give_up)
    try:
        sender.start()
        watchdog.start()
        stop = run_program(machine, SPIN, handler=handler, budget=None)
        assert stop.value == sigmask.bit(signo)
        assert sigmask.pending() & WATCHED == sigmask.bit(signo)
    finally:
        for timer in (sender, watchdog):
            timer.cancel()
            timer.join()
        discard_pending()
        sigmask.set_mask(previous)
