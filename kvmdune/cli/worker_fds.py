"""A resident worker's own descriptors (cli/resident.py): the client's /dev/kvm and
the connection, which the worker received among its caller's descriptors. The
commands (run, sandbox) take them back out of what they capture for the guest; kept
apart from resident.py so that the commands need not import the server."""

from __future__ import annotations

from typing import Callable

#: Each descriptor with what to do with its new number once moved out of the way.
_private_fds: dict[int, Callable[[int], None]] = {}


def register(fds: dict[int, Callable[[int], None]]) -> None:
    """Mark ``fds`` as the worker's own (never the guest's)."""
    _private_fds.update(fds)


def reclaim(caller) -> None:
    """Take the worker's own descriptors out of the caller's (``CallerFds``, just
    captured): they are the VMM's, never the guest's."""
    for fd, rebind in list(_private_fds.items()):
        moved = caller.take(fd)
        if moved is not None:
            rebind(moved)
    _private_fds.clear()
