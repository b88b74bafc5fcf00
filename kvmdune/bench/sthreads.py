"""``kvmdune bench sthreads``: sthread (Wedge, kvmdune/dune/include/sthread.h)
create+join latency under kvmdune, fresh and recycled, beside native fork+wait and
pthread_create+join measured in the same run (and pthread_create+join under kvmdune).

Each figure is timed inside ``native/sthread_costs.c`` (the median of N rounds),
the program run ``--samples`` times; the table gives the median of the runs and the
ratio of each sthread figure to each native baseline. ``--quick`` shrinks N.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import programs

SOURCE = "sthread_costs.c"
ROUNDS, QUICK_ROUNDS = 40, 3
#: The native baselines the sthread figures are divided by.
BASELINES = ("fork+wait", "pthread_create+join")


@dataclass(frozen=True)
class SthreadRow:
    name: str
    where: str            # "native" or "kvmdune"
    us: float             # median create+join latency

    def ratios(self, baselines: dict[str, float]) -> dict[str, float]:
        return {name: self.us / us for name, us in baselines.items()}


def run_sthreads_bench(samples: int = 3, quick: bool = False) -> list[SthreadRow]:
    rounds = str(QUICK_ROUNDS if quick else ROUNDS)
    runs: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="kvmdune-sthreads-") as directory:
        binary = str(programs.build(SOURCE, Path(directory), dune=True))
        for _sample in range(samples):
            for mode, dune in (("native", False), ("sthreads", True)):
                output = programs.run([binary, mode, rounds], dune=dune)
                where = "kvmdune" if dune else "native"
                for row in output.objects:
                    runs.setdefault((row["name"], where), []).append(row["ns"] / 1000)
    return [SthreadRow(name, where, statistics.median(values))
            for (name, where), values in runs.items()]


def baselines(rows: list[SthreadRow]) -> dict[str, float]:
    return {row.name: row.us for row in rows if row.where == "native" and row.name in BASELINES}


def format_table(rows: list[SthreadRow]) -> str:
    native = baselines(rows)
    header = f"{'create+join':<22} {'where':<8} {'median us':>10}" + "".join(
        f" {'/ native ' + name:>26}" for name in native)
    lines = [header, "-" * len(header)]
    for row in rows:
        ratios = row.ratios(native)
        lines.append(f"{row.name:<22} {row.where:<8} {row.us:>10.1f}" + "".join(
            f" {ratios[name]:>25.1f}x" for name in native))
    return "\n".join(lines)
