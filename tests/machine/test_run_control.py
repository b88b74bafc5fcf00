"""Stopping runs (time budget, another thread) and tearing machines down."""

from __future__ import annotations

import gc
import os
import threading
import time

import pytest

from guestcode import TEST_MEMORY, exit_with, run_program
from kvmdune.machine import Machine, StopReason

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
