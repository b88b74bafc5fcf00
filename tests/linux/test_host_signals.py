"""The signal-taking thread (host_signals.ProcessSignalTaker) with real host signals:
it never holds one outside the lock its ``take`` takes, so a thread that holds that
lock and looks at the host's pending set sees every signal not yet queued."""

from __future__ import annotations

import os
import subprocess
import sys

#: Runs in a child Python of its own: it sends itself a signal whose default action
#: would end it, with every thread blocking it (what the VMM does).
_SCRIPT = """
import os, signal, threading, time
from kvmdune.linux import host_signals
from kvmdune.machine import sigmask

host_signals.hold_on_this_thread()
lock = threading.Lock()
taken = []
took = threading.Event()

def take():
    with lock:
        taken.extend(host_signals.take_pending())
    took.set()

taker = host_signals.ProcessSignalTaker(take)
taker.start()
with lock:
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(0.3)         # the taker's turn: it has seen the signal by now
    still_pending = bool(sigmask.pending() & sigmask.bit(signal.SIGUSR1))
took.wait(30)
taker.stop()
print(still_pending, [(one.signo, one.pid == os.getpid(), one.thread_directed)
                      for one in taken], bool(sigmask.pending() & host_signals.GUEST_BOUND))
"""


def test_the_taker_takes_only_under_the_lock_and_takes_it_then():
    """While the lock is held the signal stays pending on the host (a taker that took
    it first and waited for the lock with it would hide it from the lock's holder);
    once the lock is free the taker takes it, with its sender, as the process's."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    ran = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         cwd=repo, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "True [(10, True, False)] False\n", ran.stderr


#: In a child Python of its own: the parent holds the signalfd's lock (as its taker
#: does for an instant on every wake) while it forks; the child asks for the fd.
_FORK_SCRIPT = """
import os, signal
from kvmdune.linux import host_signals

host_signals._watch_fd()
with host_signals._signalfd_lock:
    pid = os.fork()
    if pid == 0:
        signal.alarm(5)                      # a hang ends the child with SIGALRM
        os._exit(0 if host_signals._watch_fd() >= 0 else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_gets_the_signalfd_whatever_lock_the_parent_held():
    """A child forked while the parent's signal taker held the signalfd's lock
    inherits it held, with no thread to release it. Its own taker must still get the
    signalfd: it waited forever, and the child's exit waited on the taker (a run that
    never ended, seen under load in a full test run)."""
    out = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], capture_output=True,
                         timeout=60, text=True)
    assert out.stdout.strip() == "0", out.stderr
