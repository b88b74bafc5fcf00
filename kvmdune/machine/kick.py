"""Interrupting KVM_RUN from another thread: a signal with a no-op handler.

KVM_RUN returns EINTR when a signal is pending for the vCPU thread; together with
``kvm_run.immediate_exit`` (set before the signal, so a kick that lands outside
KVM_RUN still stops the next one) this interrupts even an infinite loop at CPL3.
"""

from __future__ import annotations

import signal
import threading

#: A real-time signal: glibc keeps the first two for itself; nothing else uses this.
SIGKICK = signal.SIGRTMIN + 4

_installed = False


def _ignore_kick(signum: int, frame: object) -> None:
    """Nothing to do: the signal only has to interrupt KVM_RUN."""


def install_kick_handler() -> bool:
    """Install the handler (only possible from the main thread); True when installed."""
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(SIGKICK, _ignore_kick)
    signal.siginterrupt(SIGKICK, True)
    _installed = True
    return True


def kick(thread_ident: int) -> None:
    """Send the kick signal to a thread (it must be alive)."""
    signal.pthread_kill(thread_ident, SIGKICK)
