"""``kvmdune bench gc``: Debian's unmodified libgc (bdwgc) with incremental mode on and
off, natively and under ``kvmdune run``, on two workloads of ``native/gc_bench.c``
(GCBench-style binary trees; old objects rewritten to point at young ones).

Incremental mode needs to know which pages the program wrote since the collector
last looked. Natively this kernel has no soft-dirty bits, so bdwgc protects the heap
with mprotect and takes a SIGSEGV at the first write to each page; under kvmdune it
finds soft-dirty bits in the emulated /proc/self/pagemap (the PTE dirty bits) and
reads them at each collection instead. Which one bdwgc took is not assumed: a short
run with GC_PRINT_VERBOSE_STATS=1 on each side says it, and the table prints it.

Every figure is the median of ``samples`` runs; each run checks its own results
(a live object freed because a dirty page was missed fails the run).
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .programs import ProgramError, build, run

SOURCE = "gc_bench.c"
HEADER = Path("/usr/include/gc.h")
#: bdwgc starts parallel marker threads unless told otherwise; one marker keeps
#: the comparison about dirty bits (and kvmdune's guests single-threaded).
GC_ENV = {"GC_MARKERS": "1"}
VERBOSE_ENV = {**GC_ENV, "GC_PRINT_VERBOSE_STATS": "1"}
MS = 1e6

#: What bdwgc prints (GC_PRINT_VERBOSE_STATS) for each dirty-bit implementation.
SOFT_DIRTY_MESSAGE = "Using soft-dirty bit feature"
NO_SOFT_DIRTY_MESSAGE = "Soft-dirty bit is not supported by kernel"
MPROTECT_MESSAGE = "Initializing mprotect virtual dirty bit implementation"


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    args: tuple[int, ...]


def workloads(quick: bool) -> list[Workload]:
    if quick:
        return [Workload("trees", "binary trees, long-lived depth 12, max depth 12",
                         (12, 12, 50000)),
                Workload("mutate", "20,000 old objects rewritten 5 times", (20000, 5))]
    return [Workload("trees", "GCBench: long-lived depth 16, max depth 16, 500,000 doubles",
                     (16, 16, 500000)),
            Workload("mutate", "200,000 old objects rewritten 20 times", (200000, 20))]


@dataclass(frozen=True)
class GcRow:
    """One workload, one mode, one side: medians over the runs."""

    workload: str
    incremental: bool
    where: str                 # "native" or "kvmdune"
    total_s: float
    collections: int
    pause_mean_ms: float
    pause_max_ms: float
    dirty_bits: str            # bdwgc's implementation ("-" when not incremental)
    runs: int

    def as_dict(self) -> dict:
        return asdict(self)


def dirty_bit_implementation(stderr: str) -> str:
    """Which dirty-bit implementation bdwgc's verbose log says it took."""
    if SOFT_DIRTY_MESSAGE in stderr:
        return "soft-dirty"
    if NO_SOFT_DIRTY_MESSAGE in stderr or MPROTECT_MESSAGE in stderr:
        return "mprotect"
    return "unknown"


def detect_dirty_bits(binary: Path, dune: bool) -> str:
    """A short incremental run with bdwgc's verbose log: its implementation."""
    output = run([str(binary), "--incremental", "trees", "8", "8", "1000"], dune=dune,
                 env=VERBOSE_ENV)
    return dirty_bit_implementation(output.stderr)


def measure(binary: Path, workload: Workload, incremental: bool, dune: bool,
            samples: int) -> list[dict]:
    """``samples`` runs; each result checked (a wrong heap is an error, not a figure)."""
    argv = [str(binary), *(["--incremental"] if incremental else []), workload.name,
            *map(str, workload.args)]
    results = []
    for _ in range(samples):
        result = run(argv, dune=dune, env=GC_ENV).objects[-1]
        if result.get("correct") is not True:
            raise ProgramError(f"{' '.join(argv)}: the heap was wrong after the run "
                               f"({'under kvmdune' if dune else 'natively'}): {result}")
        if bool(result.get("incremental_mode")) != incremental:
            raise ProgramError(f"{' '.join(argv)}: bdwgc's incremental mode is "
                               f"{result.get('incremental_mode')}, not {incremental}")
        results.append(result)
    return results


def summarize(workload: str, incremental: bool, where: str, dirty_bits: str,
              results: list[dict]) -> GcRow:
    def median(values) -> float:
        return statistics.median(list(values))

    return GcRow(
        workload=workload, incremental=incremental, where=where,
        total_s=median(r["total_ns"] / 1e9 for r in results),
        collections=round(median(r["collections"] for r in results)),
        pause_mean_ms=median(r["pause_total_ns"] / max(r["pauses"], 1) / MS for r in results),
        pause_max_ms=median(r["pause_max_ns"] / MS for r in results),
        dirty_bits=dirty_bits if incremental else "-",
        runs=len(results))


def run_gc_bench(samples: int = 3, quick: bool = False,
                 progress: Callable[[str], None] = lambda text: None) -> list[GcRow]:
    if not HEADER.exists():
        raise ProgramError(f"{HEADER} is missing: `kvmdune bench gc` needs Debian's "
                           "libgc (apt-get install libgc-dev; scripts/setup installs it)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-gc-") as scratch:
        binary = build(SOURCE, Path(scratch), libraries=("gc",))
        implementations = {}
        for where, dune in (("native", False), ("kvmdune", True)):
            progress(f"which dirty bits bdwgc takes ({where})")
            implementations[where] = detect_dirty_bits(binary, dune)
        for workload in workloads(quick):
            for incremental in (False, True):
                for where, dune in (("native", False), ("kvmdune", True)):
                    mode = "incremental" if incremental else "stop-the-world"
                    progress(f"{workload.name}, {mode}, {where}")
                    results = measure(binary, workload, incremental, dune, samples)
                    rows.append(summarize(workload.name, incremental, where,
                                          implementations[where], results))
    return rows


def _find(rows: list[GcRow], row: GcRow, **change) -> GcRow | None:
    wanted = {"workload": row.workload, "incremental": row.incremental, "where": row.where,
              **change}
    for other in rows:
        if all(getattr(other, key) == value for key, value in wanted.items()):
            return other
    return None


def _ratio(value: float, base: float) -> str:
    return f"{value / base:6.2f}x" if base else "    n/a"


def format_table(rows: list[GcRow], quick: bool = False) -> str:
    header = (f"{'workload':<8} {'mode':<14} {'where':<8} {'total':>9} {'GCs':>5} "
              f"{'mean pause':>11} {'max pause':>10}  {'dirty bits':<11} "
              f"{'total/native':>12} {'max/native':>10}")
    lines = [header, "-" * len(header)]
    for row in rows:
        mode = "incremental" if row.incremental else "stop-the-world"
        native = _find(rows, row, where="native")
        total_ratio = max_ratio = ""
        if row.where != "native" and native is not None:
            total_ratio = _ratio(row.total_s, native.total_s)
            max_ratio = _ratio(row.pause_max_ms, native.pause_max_ms)
        lines.append(f"{row.workload:<8} {mode:<14} {row.where:<8} {row.total_s:8.3f}s "
                     f"{row.collections:>5} {row.pause_mean_ms:9.2f}ms "
                     f"{row.pause_max_ms:8.2f}ms  {row.dirty_bits:<11} "
                     f"{total_ratio:>12} {max_ratio:>10}")
    lines.append("")
    lines.append("incremental vs stop-the-world (same side): total time, max pause")
    for row in rows:
        if not row.incremental:
            continue
        base = _find(rows, row, incremental=False)
        if base is not None:
            lines.append(f"  {row.workload:<8} {row.where:<8} total "
                         f"{_ratio(row.total_s, base.total_s)}  max pause "
                         f"{_ratio(row.pause_max_ms, base.pause_max_ms)}")
    lines.append("")
    lines.append("A pause is one world-stopped interval (bdwgc's PRE_STOP_WORLD to "
                 "POST_START_WORLD events); incremental marking done while allocating is "
                 "in the total. Medians of the runs; GC_MARKERS=1.")
    if quick:
        lines.append("(--quick: small sizes, a smoke test, not a measurement)")
    return "\n".join(lines)
