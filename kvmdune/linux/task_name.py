"""The guest's name, as Linux keeps it and as the host shows it.

Linux names a task after the path execve was given (its last component, not a
symlink's target: ``python3``, not ``python3.11``), cut to 15 bytes, and
prctl(PR_SET_NAME) renames it. From outside, the guest process *is* the VMM process,
so the VMM carries the guest's name: its comm (``ps -C``, ``pgrep -x``, ``killall``
read /proc/PID/stat) and its command line (``ps -f``, ``pgrep -f`` read
/proc/PID/cmdline), the latter written by the ``setproctitle`` package.
"""

from __future__ import annotations

import ctypes
import os
from typing import Callable

try:         # imported now: a sandbox drops to a user who may not reach site-packages
    import setproctitle
except ImportError:          # a dependency; without it only the comm is the guest's
    setproctitle = None

#: Linux's TASK_COMM_LEN: the name and its NUL.
TASK_COMM_LEN = 16
PR_SET_NAME = 15

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def comm_for_exec(filename: str | bytes) -> bytes:
    """What execve names the task: the last component of the path it was given."""
    return os.path.basename(os.fsencode(filename))[:TASK_COMM_LEN - 1]


def comm_from_user(data: bytes) -> bytes:
    """The name prctl(PR_SET_NAME) sets from a guest's 16-byte buffer."""
    return data.split(b"\0", 1)[0][:TASK_COMM_LEN - 1]


#: Told each new name (comm, and argv at an execve, else None): a resident start-up
#: worker shows it on its client process too (kvmdune/cli/resident.py).
_observers: list[Callable[[bytes, list[bytes] | None], None]] = []


def observe(callback: Callable[[bytes, list[bytes] | None], None]) -> None:
    """Call ``callback(comm, argv)`` after each ``show_on_host``."""
    _observers.append(callback)


def show_on_host(comm: bytes, argv: list[bytes] | None = None) -> None:
    """Name the VMM process after its guest: the command line when ``argv`` is given
    (an execve), then the comm. The comm is the calling thread's: the run loop's
    thread, the process's first, whose name ps shows."""
    if argv is not None:
        _set_command_line(argv)
    _libc.prctl(PR_SET_NAME, comm, 0, 0, 0)     # cannot fail for a valid pointer
    for observer in _observers:
        observer(comm, argv)


def _set_command_line(argv: list[bytes]) -> None:
    if setproctitle is None:
        return
    title = b" ".join(argv).decode("utf-8", "replace").replace("\0", "")
    setproctitle.setproctitle(title)
