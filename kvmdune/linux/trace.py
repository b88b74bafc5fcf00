"""``--trace``: strace-format lines for every guest system call, following children
and threads (their lines start with ``[pid N]``, N the thread's id, as under
``strace -f``)."""

from __future__ import annotations

import os
from typing import TextIO

from ..memory import READ, GuestFault
from . import strace

#: Calls whose arguments are gone once they succeed: formatted at entry.
FORMAT_AT_ENTRY = {"execve", "execveat", "exit", "exit_group", "rt_sigreturn"}


class Tracer:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.root_pid = os.getpid()

    @staticmethod
    def _reader(proc):
        def read_memory(address: int, length: int) -> bytes | None:
            try:
                return proc.space.read(address, length, READ) if proc.space else None
            except GuestFault:
                return None
        return read_memory

    def entry(self, proc, event, spec) -> str | None:
        """The call as seen at entry, for the calls that replace their own memory."""
        if spec is None or spec.name not in FORMAT_AT_ENTRY:
            return None
        return strace.format_call(spec, event.args, self._reader(proc))

    def exit(self, proc, event, spec, result, duration: float, entry: str | None) -> None:
        # strace -f names the thread (its tid) of every line but the first thread's.
        tid = proc.task.tid
        prefix = f"[pid {tid}] " if tid != self.root_pid else ""
        if spec is None:
            args = ", ".join(hex(a) for a in event.args)
            line = f"{prefix}syscall_{event.number:#x}({args}) = -1 ENOSYS (Function not implemented)"
        elif entry is not None or not isinstance(result, int):
            head = prefix + (entry or strace.format_call(spec, event.args, self._reader(proc)))
            shown = 0 if not isinstance(result, int) else result
            tail = ("= ?" if spec.name in ("exit", "exit_group") else
                    strace.format_result(spec, event.args, shown, self._reader(proc), duration))
            line = f"{head:<{strace.RESULT_COLUMN - 1}} {tail}"
        else:
            line = strace.format_line(spec, event.args, result, self._reader(proc),
                                      duration=duration, prefix=prefix)
        self.stream.write(line + "\n")


def open_tracer(target: str) -> Tracer:
    """A tracer writing to ``target`` (a file name, or "-" for the VMM's stderr)."""
    if target == "-":
        return Tracer(os.fdopen(os.dup(2), "w", buffering=1))
    return Tracer(open(target, "w", buffering=1))
