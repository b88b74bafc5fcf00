"""fork(2) of a guest process as the guest sees it: it returns a pid only once the
child can run.

A guest's child is a new VMM process that needs a VM of its own, whose kernel
worker thread (and the fast path's serving thread) count against RLIMIT_NPROC.
When the child cannot get them, Linux's fork would have failed in the parent
(EAGAIN), so the child says whether it is ready through a pipe before the parent's
fork returns; a child that is not is reaped by the parent, its SIGCHLD withheld
from the guest, and the parent's fork returns the errno.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass

from ..machine import sigmask

#: What fork(2) can fail with for want of resources; anything else is told as EAGAIN.
FORK_ERRNOS = (errno.EAGAIN, errno.ENOMEM)
_READY = b"\0"


@dataclass
class ForkHandshake:
    """A pipe from the child to the parent, and the parent's SIGCHLD held back while
    the child starts (so a child that dies unready is not reported to the guest)."""

    read_end: int
    write_end: int
    previous_mask: int = 0
    #: An unready child's SIGCHLD was taken here (else another thread takes it).
    sigchld_withheld: bool = False

    @classmethod
    def open(cls) -> "ForkHandshake":
        read_end, write_end = os.pipe()
        previous = sigmask.block(sigmask.bit(signal.SIGCHLD))
        return cls(read_end, write_end, previous)

    def fork_failed(self) -> None:
        """os.fork() itself failed: nothing to wait for."""
        os.close(self.read_end)
        os.close(self.write_end)
        sigmask.set_mask(self.previous_mask)

    # -- in the child ---------------------------------------------------------------
    def in_child(self) -> None:
        os.close(self.read_end)
        sigmask.set_mask(self.previous_mask)

    def child_ready(self) -> None:
        os.write(self.write_end, _READY)
        os.close(self.write_end)

    def child_cannot_run(self, error: int) -> None:
        """Tell the parent why, and end the child without a trace."""
        code = error if error in FORK_ERRNOS else errno.EAGAIN
        try:
            os.write(self.write_end, bytes([code]))
        finally:
            os._exit(127)

    # -- in the parent --------------------------------------------------------------
    def wait_for_child(self, pid: int) -> int:
        """0 once the child is ready; otherwise the child is reaped and the errno the
        parent's fork returns (negative)."""
        os.close(self.write_end)
        try:
            answer = _read_answer(self.read_end)
            if answer == _READY:
                return 0
            _reap(pid)
            self.sigchld_withheld = _withhold_sigchld()
            return -(answer[0] if answer else errno.EAGAIN)
        finally:
            os.close(self.read_end)
            sigmask.set_mask(self.previous_mask)


def _read_answer(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 1)
        except InterruptedError:
            continue


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


def _withhold_sigchld() -> bool:
    """Drop the SIGCHLD the unready child's death raised (blocked until now), unless
    another child has news too: then the guest must get it. Whether it was here to
    drop (another thread may have taken it from the host already)."""
    if signal.SIGCHLD not in signal.sigpending():
        return False
    if not other_child_has_news():
        signal.sigtimedwait({signal.SIGCHLD}, 0)
    return True


def other_child_has_news() -> bool:
    """Whether a child has exited, stopped or continued unreported (wait would say)."""
    try:
        other = os.waitid(os.P_ALL, 0, os.WEXITED | os.WSTOPPED | os.WCONTINUED
                          | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        other = None
    return other is not None
