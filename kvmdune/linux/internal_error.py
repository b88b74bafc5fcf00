"""What happens when the VMM itself has a bug: the guest is ended (fail closed), the
user gets one line, and the details go to a file (or to stderr with ``--debug``).

A guest must never see a half-served call, and a user must never see a Python
traceback for a bug they did not make: the line says where the details are.
"""

from __future__ import annotations

import os
from typing import Callable

#: Set (to anything but 0) by ``kvmdune --debug``: details go to stderr, not a file.
DEBUG_VARIABLE = "KVMDUNE_DEBUG"


class InternalError(Exception):
    """A bug in the VMM while serving ``where`` (a system call's name, or an event)."""

    def __init__(self, where: str, cause: BaseException) -> None:
        super().__init__(f"internal error in {where}: {type(cause).__name__}: {cause}")
        self.where = where
        self.cause = cause


def prepare() -> None:
    """Import what a report needs now (it is imported lazily to keep start-up short):
    after a drop of privileges the Python installation may be unreadable."""
    import tempfile  # noqa: F401
    import time  # noqa: F401
    import traceback  # noqa: F401


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "0") not in ("", "0")


def report(log: Callable[[str], None], where: str, error: BaseException) -> None:
    """Tell the user in one line; keep the traceback where they can send it to us."""
    import traceback

    cause = error.cause if isinstance(error, InternalError) else error
    details = "".join(traceback.format_exception(cause))
    summary = f"{type(cause).__name__}: {cause}".splitlines()[0][:200]
    if debugging():
        log(details)
        log(f"kvmdune: internal error in {where}: {summary}; the guest was ended; "
            "please report")
        return
    saved = _save(details, where)
    place = (f"details in {saved}" if saved is not None
             else "run again with --debug for details")
    log(f"kvmdune: internal error in {where}: {summary}; the guest was ended; "
        f"{place}; please report")


def _save(details: str, where: str) -> str | None:
    """The traceback in a new private file; None where no file can be made."""
    import tempfile
    import time

    try:
        fd, path = tempfile.mkstemp(prefix=f"kvmdune-internal-error-{os.getpid()}-",
                                    suffix=".txt")
    except OSError:
        return None
    with os.fdopen(fd, "w") as stream:
        stream.write(f"kvmdune internal error in {where}, "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}, pid {os.getpid()}\n\n{details}")
    return path
