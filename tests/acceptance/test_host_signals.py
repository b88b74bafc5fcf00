"""Signals from outside the guest reach its dispositions as on Linux, with the siginfo
Linux makes: any real-time signal another process sends (handled, at its default,
ignored), and the signals of POSIX timers (SIGEV_THREAD, SIGEV_SIGNAL,
SIGEV_THREAD_ID). Each program runs natively and under kvmdune; the two must agree
byte for byte (programs/hostsignals.c)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import run_dune, run_native, vmm_env

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True

#: The real-time signal the test sends; the programs' SIGRTMIN+1 (glibc's SIGRTMIN is
#: the same natively and in the guest: both are static glibc programs' view, 34).
RT_SIGNAL = signal.SIGRTMIN + 1
#: Under the resident start-up path the run's process is a client that passes the
#: signals it gets on to the VMM, a process the test does not see: the guest's
#: parent is the server there, and the signal's sender the client (README.md).
RESIDENT = os.environ.get("KVMDUNE_STARTUP") == "resident"
#: x86-64's read(2).
SYS_READ = 0


def wait_until_reading(pid: int) -> None:
    """Until the main thread of ``pid`` (the program natively, the VMM under
    kvmdune, which makes the guest's blocking read itself) sleeps in read(2)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall") as status:
            if status.read().split()[0] == str(SYS_READ):
                return
        time.sleep(0.01)
    raise AssertionError(f"{pid} never blocked in read(2)")


def signalled(argv: list[str], signals: tuple[int, ...], dune: bool,
              in_read: bool = False) -> tuple[bytes, int]:
    """Run ``argv`` (under kvmdune when ``dune``), send it ``signals`` once it says it
    is ready (and, ``in_read``, once it blocks in read(2)), one after the other from
    this process (its parent); its output and return code."""
    command = [sys.executable, "-m", "kvmdune", "run", "--", *argv] if dune else argv
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=vmm_env(None))
    try:
        first = process.stdout.readline()
        assert first == b"ready\n", process.stderr.read()
        if in_read:
            wait_until_reading(process.pid)
        for signo in signals:
            process.send_signal(signo)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert b"Traceback" not in err, err
    return first + out, process.returncode


def both(program: str, mode: str, signals: tuple[int, ...], in_read: bool = False):
    return (signalled([program, mode], signals, dune=False, in_read=in_read),
            signalled([program, mode], signals, dune=True, in_read=in_read))


def test_handled_realtime_signal_from_outside(compiled):
    """kill -35 from another process runs the guest's SA_SIGINFO handler (the guest
    waits in pause(2): the VMM waits for its signals), which sees si_code SI_USER and
    the sender's pid and uid."""
    native, dune = both(compiled[("hostsignals", "static")], "rt-handled", (RT_SIGNAL,))
    control = b"ready\nhandled SIGRTMIN+1: si_code 0, sent by our parent: 1\n"
    assert native == (control, 0)
    if RESIDENT:     # the sender the guest sees is the client there (see RESIDENT)
        assert dune == (control.replace(b"parent: 1", b"parent: 0"), 0)
    else:
        assert dune == native


@pytest.mark.skipif(RESIDENT, reason="the VMM is not a process the test sees")
def test_realtime_signal_from_outside_interrupts_a_blocking_read(compiled):
    """The guest blocks in read(2) of an empty pipe (the VMM's main thread blocks in
    the host's read for it): the signal interrupts it (EINTR), then the handler runs."""
    native, dune = both(compiled[("hostsignals", "static")], "rt-handled-in-read",
                        (RT_SIGNAL,), in_read=True)
    assert native == (b"ready\nread: -1 Interrupted system call\n"
                      b"handled SIGRTMIN+1: si_code 0, sent by our parent: 1\n", 0)
    assert dune == native


def test_unhandled_realtime_signal_from_outside_kills_with_its_status(compiled):
    native, dune = both(compiled[("hostsignals", "static")], "rt-default", (RT_SIGNAL,))
    assert native == (b"ready\n", -RT_SIGNAL)
    # A run killed by a signal exits as a shell reports it: 128 + the signal.
    assert dune == (b"ready\n", 128 + RT_SIGNAL)


def test_ignored_realtime_signal_from_outside_is_ignored(compiled):
    """SIGRTMIN+1 ignored, then SIGUSR1 handled: the program goes on after both (it
    would die of the first if it reached it at its default action)."""
    native, dune = both(compiled[("hostsignals", "static")], "rt-ignored",
                        (RT_SIGNAL, signal.SIGUSR1))
    assert native == (b"ready\nstill here after SIGRTMIN+1, then signal 10\n", 0)
    assert dune == native


@pytest.mark.parametrize("mode", ["timer-thread", "timer-signal", "timer-thread-id"])
def test_posix_timer_signals(compiled, mode):
    """SIGEV_THREAD: glibc's helper thread takes the timer's SIGTIMER (signal 32) and
    the callback runs. SIGEV_SIGNAL and SIGEV_THREAD_ID: the handler sees si_code
    SI_TIMER, the timer's si_value and si_timerid; the thread-directed one runs on
    the thread the timer names."""
    program = compiled[("hostsignals", "static")]
    native = run_native([program, mode])
    # The positive control: every check the program prints holds natively.
    assert native.returncode == 0 and native.stdout and b": 0" not in native.stdout
    dune = run_dune([program, mode], timeout=120)
    assert (dune.stdout, dune.returncode) == (native.stdout, native.returncode), dune.stderr


def test_sigchld_is_pending_at_once_and_handled_at_the_unblock(compiled):
    """A child's SIGCHLD, blocked, that the host raised before the parent's wait saw
    the child exit: rt_sigpending lists it and the unblock runs the handler, every
    round (the VMM takes the host's pending signals before each look at the guest's;
    its signal-taking thread never holds one outside the process's lock)."""
    program = compiled[("hostsignals", "static")]
    native = run_native([program, "chld-unblock"])
    assert native.returncode == 0 and native.stdout == (
        b"40 rounds: SIGCHLD not listed pending 0, not handled at the unblock 0\n")
    dune = run_dune([program, "chld-unblock"], timeout=180)
    assert (dune.stdout, dune.returncode) == (native.stdout, native.returncode), dune.stderr
