"""``kvmdune bench mmcalls``: what one memory call costs end to end (issue 14), beside
Linux in the same run.

``native/mm_costs.c`` loops one kind of call and times it from inside the guest:
an anonymous private mmap + munmap of 64 KiB (never touched), the same of 1 MiB,
mprotect of a touched 64 KiB mapping (read-only and back), brk up by 64 KiB and
back, and ld.so's way with a file (a 2 MiB PROT_NONE reservation, the first MiB of
libc mapped over it with MAP_FIXED, then the whole unmapped). Under kvmdune each
run also reports, in CPU time of the VMM's main thread (``linux/profiling.py``'s
phase times with ``KVMDUNE_PHASE_CLOCK=thread``), what its handlers took per call
and what the whole thread took per call (the handler, the dispatch, and KVM_RUN:
the exit and the guest's own loop), each less a run of no iterations (the
program's start-up). CPU time holds still on a loaded machine, where the wall
time per call is mostly waits for a core. Medians of the samples; the load
average is printed beside them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .linux_baselines import build_native

SOURCE = "mm_costs.c"
#: (case, iterations, the handlers whose time counts, as profiling's phase names).
CASES = (
    ("anon", 1000, ("call.mmap", "call.munmap")),
    ("anon-big", 1000, ("call.mmap", "call.munmap")),
    ("mprotect", 1000, ("call.mprotect",)),
    ("brk", 1000, ("call.brk",)),
    ("file", 300, ("call.mmap", "call.munmap")),
)
DUNE_RUN = [sys.executable, "-m", "kvmdune", "run", "--quiet", "--"]
TIMEOUT_S = 600.0
#: Target of issue 14 for the anonymous calls (µs per call at idle).
TARGET_US = 100.0


@dataclass
class Row:
    """One case's per-call figures in microseconds (medians over the samples)."""

    case: str
    native: list[float] = field(default_factory=list)
    kvmdune: list[float] = field(default_factory=list)
    handler: list[float] = field(default_factory=list)      # CPU time
    vmm: list[float] = field(default_factory=list)          # CPU time, whole thread

    def as_dict(self) -> dict:
        return {"case": self.case, "native_us": _median(self.native),
                "kvmdune_us": _median(self.kvmdune), "handler_cpu_us": _median(self.handler),
                "vmm_cpu_us": _median(self.vmm)}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _run(argv: list[str], env: dict[str, str] | None = None) -> dict:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{result.stdout}{result.stderr[-2000:]}")
    return json.loads(result.stdout)


@dataclass(frozen=True)
class VmmTimes:
    """CPU seconds of one run's VMM: in the handlers asked for (and their calls), and
    in its main thread altogether."""

    handler: float
    handler_calls: int
    process: float


def _vmm_times(path: Path, phases: tuple[str, ...]) -> VmmTimes:
    handler, calls, process = 0.0, 0, 0.0
    for line in path.read_text().splitlines():
        recorded = json.loads(line).get("phases", {})
        process += recorded.get("process", {}).get("seconds", 0.0)
        for name in phases:
            if name in recorded:
                handler += recorded[name]["seconds"]
                calls += recorded[name]["count"]
    return VmmTimes(handler, calls, process)


def run_mmcalls_bench(samples: int = 3, quick: bool = False,
                      progress: Callable[[str], None] = lambda text: None) -> list[Row]:
    binary = str(build_native(SOURCE, "mm_costs"))
    rows = []
    for case, iterations, phases in CASES:
        if quick:
            iterations = max(10, iterations // 50)
        row = Row(case)
        for sample in range(samples):
            progress(f"{case}: sample {sample + 1} of {samples}")
            row.native.append(_run([binary, case, str(iterations)])["per_call_ns"] / 1000)
            measured, times = _run_under_kvmdune(binary, case, iterations, phases)
            _, start = _run_under_kvmdune(binary, case, 0, phases)
            row.kvmdune.append(measured["per_call_ns"] / 1000)
            # Less the program's own start-up (ld.so's mappings): a run of none.
            looped = times.handler_calls - start.handler_calls
            if looped > 0:
                row.handler.append((times.handler - start.handler) / looped * 1e6)
            if measured["calls"]:
                row.vmm.append((times.process - start.process) / measured["calls"] * 1e6)
        rows.append(row)
    return rows


def _run_under_kvmdune(binary: str, case: str, iterations: int,
                       phases: tuple[str, ...]) -> tuple[dict, VmmTimes]:
    """The program's report, and its VMM's CPU times."""
    with tempfile.TemporaryDirectory(prefix="kvmdune-mmcalls-") as scratch:
        times = Path(scratch) / "phases.jsonl"
        env = dict(os.environ, KVMDUNE_PHASE_TIMES=str(times), KVMDUNE_PHASE_CLOCK="thread")
        measured = _run([*DUNE_RUN, binary, case, str(iterations)], env=env)
        return measured, _vmm_times(times, phases)


def format_table(rows: list[Row], samples: int, before: tuple[float, ...],
                 after: tuple[float, ...]) -> str:
    lines = [f"Memory calls, µs per call (median of {samples}; load average "
             f"{before[0]:.1f} before, {after[0]:.1f} after)",
             f"{'case':10s} {'native':>8s} {'kvmdune':>9s} {'VMM CPU':>8s} "
             f"{'handler':>8s}  target (wall)"]
    for row in rows:
        native, dune = _median(row.native), _median(row.kvmdune)
        vmm, handler = _median(row.vmm), _median(row.handler)
        anonymous = row.case in ("anon", "anon-big", "mprotect")
        target = (("ok" if dune <= TARGET_US else "MISSED") + f" (≤{TARGET_US:.0f})"
                  if anonymous else "")
        lines.append(f"{row.case:10s} {native:8.1f} {dune:9.1f} {_cell(vmm)} {_cell(handler)}"
                     f"  {target}")
    lines.append("native, kvmdune: wall time per call inside the guest. VMM CPU: the VMM "
                 "main thread's CPU time per call (handler, dispatch, exit and re-entry); "
                 "handler: the Python handler's alone.")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{value:8.1f}" if value is not None else f"{'-':>8s}"
