"""Where a guest process's VMM time goes, on request (issue 14's measurements).

``KVMDUNE_PHASE_TIMES=FILE``: every VMM process of a run (the first one and each
forked child) appends one JSON line to FILE when it ends: its pid, whether it is a
forked child, and the seconds and counts of each named phase (``fork.child.vm``,
``execve.load``, ``mmap``...). ``kvmdune bench phases FILE`` summarizes them.

``KVMDUNE_PHASE_CLOCK=thread``: the phases in the CPU time of the thread that ran
them (``time.thread_time``), not wall time: on a loaded machine a phase's wall time
is mostly the waits for a core, and only its CPU time compares from run to run.
``process`` is then the main thread's CPU time. ``KVMDUNE_PHASE_CLOCK=faults``: in
the host page faults the thread took (thousands of them per "second", so ``bench
phases`` prints faults where it prints milliseconds): after a fork, most are
copy-on-write copies of the VMM's own heap.

``KVMDUNE_PROFILE=DIR``: every VMM process runs under cProfile and writes
``DIR/PID.prof`` when it ends (a forked child's profile starts at the fork).

Both off (the default) cost one attribute test per phase.
"""

from __future__ import annotations

import json
import os
import resource
import time
from contextlib import contextmanager
from typing import Iterator

PHASE_TIMES_VARIABLE = "KVMDUNE_PHASE_TIMES"
PROFILE_VARIABLE = "KVMDUNE_PROFILE"
CLOCK_VARIABLE = "KVMDUNE_PHASE_CLOCK"
#: The clocks phases may be timed with (CLOCK_VARIABLE's values).
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time,
          "faults": lambda: resource.getrusage(resource.RUSAGE_THREAD).ru_minflt / 1e3}
#: The clocks of the calling thread alone, which a forked child starts from zero.
THREAD_CLOCKS = frozenset({"thread", "faults"})


class _Recorder:
    """This VMM process's phase totals and profiler (one per process)."""

    def __init__(self) -> None:
        self.times_path = os.environ.get(PHASE_TIMES_VARIABLE) or None
        self.profile_dir = os.environ.get(PROFILE_VARIABLE) or None
        clock_name = os.environ.get(CLOCK_VARIABLE, "")
        self.clock = CLOCKS.get(clock_name, time.perf_counter)
        #: A thread's CPU time and faults start again from zero in a forked child;
        #: the wall clock runs on through the fork.
        self.restarts_at_fork = clock_name in THREAD_CLOCKS
        #: Forks so far: a phase that spans one (clone, vfork) is timed in the child
        #: from the fork on, when its clock restarted there.
        self.forks = 0
        self.totals: dict[str, list[float]] = {}
        self.forked = False
        self.profiler = None
        self.started = self.clock()

    @property
    def timing(self) -> bool:
        return self.times_path is not None

    def add(self, name: str, seconds: float) -> None:
        entry = self.totals.setdefault(name, [0.0, 0])
        entry[0] += seconds
        entry[1] += 1

    def start_profiler(self) -> None:
        if self.profile_dir is None:
            return
        import cProfile

        self.profiler = cProfile.Profile()
        self.profiler.enable()

    def after_fork(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()
        self.totals = {}
        self.forked = True
        self.forks += 1
        self.started = self.clock()
        self.start_profiler()

    def finish(self) -> None:
        pid = os.getpid()
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(os.path.join(self.profile_dir, f"{pid}.prof"))
            self.profiler = None
        if self.times_path is None:
            return
        self.add("process", self.clock() - self.started)
        line = json.dumps({"pid": pid, "forked": self.forked,
                           "phases": {name: {"seconds": seconds, "count": count}
                                      for name, (seconds, count) in self.totals.items()}})
        fd = os.open(self.times_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())     # one write: lines never interleave
        finally:
            os.close(fd)
        self.times_path = None


_recorder = _Recorder()


@contextmanager
def _timed(name: str) -> Iterator[None]:
    clock, forks = _recorder.clock, _recorder.forks
    started = clock()
    try:
        yield
    finally:
        if _recorder.forks != forks and _recorder.restarts_at_fork:
            started = _recorder.started     # this child's clock began at the fork
        _recorder.add(name, clock() - started)


class _Untimed:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_UNTIMED = _Untimed()


def phase(name: str):
    """A context manager adding its duration to phase ``name`` (when timing is on)."""
    return _timed(name) if _recorder.timing else _UNTIMED


def add_phase(name: str, seconds: float) -> None:
    """Add ``seconds`` measured by the caller to phase ``name``."""
    if _recorder.timing:
        _recorder.add(name, seconds)


def timing() -> bool:
    """Whether phase times are being recorded (for callers that measure themselves)."""
    return _recorder.timing


def start() -> None:
    """The first VMM process begins its run (its profiler starts here)."""
    _recorder.start_profiler()


def after_fork() -> None:
    """In a forked child: its phases and profile start afresh."""
    _recorder.after_fork()


def finish() -> None:
    """The process ends: write what was asked for (at most once)."""
    _recorder.finish()
