"""``kvmdune bench mmcalls``: what one memory call costs end to end (issue 14), beside
Linux in the same run.

``native/mm_costs.c`` loops one kind of call and times it from inside the guest:
an anonymous private mmap + munmap of 64 KiB (never touched), the same of 1 MiB,
mprotect of a touched 64 KiB mapping (read-only and back), brk up by 64 KiB and
back, and ld.so's way with a file (a 2 MiB PROT_NONE reservation, the first MiB of
libc mapped over it with MAP_FIXED, then the whole unmapped). Under kvmdune each
run also reports how long the VMM's handlers took per call (the phase times of
``linux/profiling.py``): the rest of the per-call cost is the exit to the VMM and
the dispatch. Medians of the samples; the load average is printed beside them,
since on a shared machine it moves every figure.
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
    handler: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"case": self.case, "native_us": _median(self.native),
                "kvmdune_us": _median(self.kvmdune), "handler_us": _median(self.handler)}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _run(argv: list[str], env: dict[str, str] | None = None) -> dict:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{result.stdout}{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def _handler_seconds(path: Path, phases: tuple[str, ...]) -> tuple[float, int]:
    """The seconds and calls of ``phases`` over every VMM process of a run."""
    seconds, calls = 0.0, 0
    for line in path.read_text().splitlines():
        recorded = json.loads(line).get("phases", {})
        for name in phases:
            if name in recorded:
                seconds += recorded[name]["seconds"]
                calls += recorded[name]["count"]
    return seconds, calls


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
            measured, seconds, calls = _run_under_kvmdune(binary, case, iterations, phases)
            _, start_seconds, start_calls = _run_under_kvmdune(binary, case, 0, phases)
            row.kvmdune.append(measured["per_call_ns"] / 1000)
            # Less the program's own start-up calls (ld.so's mappings): a run of none.
            looped = calls - start_calls
            row.handler.append((seconds - start_seconds) / looped * 1e6 if looped > 0 else 0.0)
        rows.append(row)
    return rows


def _run_under_kvmdune(binary: str, case: str, iterations: int,
                       phases: tuple[str, ...]) -> tuple[dict, float, int]:
    """The program's report, and the seconds and calls of the handlers ``phases``."""
    with tempfile.TemporaryDirectory(prefix="kvmdune-mmcalls-") as scratch:
        times = Path(scratch) / "phases.jsonl"
        env = dict(os.environ, KVMDUNE_PHASE_TIMES=str(times))
        measured = _run([*DUNE_RUN, binary, case, str(iterations)], env=env)
        return (measured, *_handler_seconds(times, phases))


def format_table(rows: list[Row], samples: int, before: tuple[float, ...],
                 after: tuple[float, ...]) -> str:
    lines = [f"Memory calls, µs per call (median of {samples}; load average "
             f"{before[0]:.1f} before, {after[0]:.1f} after)",
             f"{'case':10s} {'native':>8s} {'kvmdune':>9s} {'handler':>8s} "
             f"{'exit+dispatch':>14s}  target"]
    for row in rows:
        native, dune, handler = _median(row.native), _median(row.kvmdune), _median(row.handler)
        anonymous = row.case in ("anon", "anon-big", "mprotect")
        target = (("ok" if dune <= TARGET_US else "MISSED") + f" (≤{TARGET_US:.0f})"
                  if anonymous else "")
        lines.append(f"{row.case:10s} {native:8.1f} {dune:9.1f} {handler:8.1f} "
                     f"{dune - handler:14.1f}  {target}")
    lines.append("handler: the VMM's Python handler alone (phase times); the rest is "
                 "the exit to the VMM, the dispatch and the return.")
    return "\n".join(lines)
