"""Which signals the caller of ``kvmdune run|sandbox`` left ignored, which the program
inherits ignored (as across execve). Python's start-up ignores SIGPIPE and SIGXFSZ in
every interpreter, so its own dispositions cannot tell for those two: the native client
passes its set to the in-process interpreter (client.c's ``in_process``), a resident
worker records its client's (resident.py's ``adopt_signals``). Without either, the
interpreter's own dispositions serve (linux.signals.inherited_ignored)."""

from __future__ import annotations

_recorded: frozenset[int] | None = None


def record(mask: int) -> None:
    """The caller's set, as /proc/PID/status's SigIgn (bit N-1 for signal N)."""
    global _recorded
    _recorded = frozenset(n for n in range(1, mask.bit_length() + 1) if mask >> (n - 1) & 1)


def caller_ignored() -> frozenset[int] | None:
    """The recorded set, or None when start-up did not record one."""
    return _recorded
