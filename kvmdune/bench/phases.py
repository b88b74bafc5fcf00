"""``kvmdune bench phases``: where the VMM's time goes per guest process, for the
fork+exec loop of issue 14 (a bash loop of fork+exec+wait of /bin/true) or any
command: runs it under ``kvmdune run`` with KVMDUNE_PHASE_TIMES set
(linux/profiling.py), then prints the median milliseconds of each phase per forked
child, beside the loop's wall time per child and the native loop's."""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

from ..linux.profiling import PHASE_TIMES_VARIABLE
from .run import DUNE_RUN


def fork_exec_loop(loops: int) -> list[str]:
    """bash forking and exec'ing /bin/true ``loops`` times."""
    bash, true = shutil.which("bash"), shutil.which("true")
    if bash is None or true is None:
        raise FileNotFoundError("bash and true are needed for the fork+exec loop")
    return [bash, "-c", f"for i in $(seq {loops}); do {true}; done"]


def read_phase_lines(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(records: list[dict]) -> list[tuple[str, float, float, int]]:
    """Per phase over the forked children: (name, median ms per child, mean ms per
    child, children that had it), the costliest first."""
    children = [record["phases"] for record in records if record["forked"]]
    names = sorted({name for phases in children for name in phases})
    rows = []
    for name in names:
        per_child = [phases.get(name, {"seconds": 0.0})["seconds"] * 1e3
                     for phases in children]
        had = sum(1 for phases in children if name in phases)
        rows.append((name, statistics.median(per_child), statistics.fmean(per_child), had))
    rows.sort(key=lambda row: -row[2])
    return rows


def summarize_parents(records: list[dict], children: int) -> list[tuple[str, float, int]]:
    """The processes that were not forked (the first one, which forks the loop's
    children): each phase's milliseconds divided by the number of forked children,
    and its count; the costliest first."""
    totals: dict[str, list[float]] = {}
    for record in records:
        if record["forked"]:
            continue
        for name, phase in record["phases"].items():
            entry = totals.setdefault(name, [0.0, 0])
            entry[0] += phase["seconds"]
            entry[1] += phase["count"]
    per = max(children, 1)
    rows = [(name, seconds * 1e3 / per, count) for name, (seconds, count) in totals.items()]
    return sorted(rows, key=lambda row: -row[1])


def format_summary(rows: list[tuple[str, float, float, int]], children: int) -> str:
    lines = [f"{'phase (per forked child)':40} {'median ms':>10} {'mean ms':>10} "
             f"{'children':>9}"]
    for name, median, mean, had in rows:
        lines.append(f"{name:40} {median:10.2f} {mean:10.2f} {had:5}/{children}")
    return "\n".join(lines)


def _wall(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Seconds of wall time and of CPU (user and system, the whole process tree) of
    one run: CPU time moves less than wall time with the machine's load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, env=env, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_phases(loops: int, samples: int, command: list[str] | None = None) -> str:
    """Time the loop (median of ``samples``) natively and under kvmdune, and the
    phases of the last kvmdune sample."""
    argv = command or fork_exec_loop(loops)
    native, dune = [], []
    with tempfile.TemporaryDirectory(prefix="kvmdune-phases-") as directory:
        path = os.path.join(directory, "phases.jsonl")
        for _ in range(samples):
            native.append(_wall(argv))
            if os.path.exists(path):
                os.unlink(path)
            env = dict(os.environ, **{PHASE_TIMES_VARIABLE: path})
            dune.append(_wall(DUNE_RUN + argv, env))
        records = read_phase_lines(path)
    children = sum(1 for record in records if record["forked"])
    per = max(children, 1) / 1e3
    walls, cpus = [wall / per for wall, _ in dune], [cpu / per for _, cpu in dune]
    header = (f"{' '.join(argv)}: {children} forked children; per child, over {samples} "
              f"runs (load {os.getloadavg()[0]:.1f}): kvmdune wall min {min(walls):.2f} ms, "
              f"median {statistics.median(walls):.2f} ms, CPU median "
              f"{statistics.median(cpus):.2f} ms; native wall median "
              f"{statistics.median(wall for wall, _ in native) / per:.2f} ms")
    parents = [f"{'first process, per forked child':40} {'ms':>10} {'count':>10}"]
    parents += [f"{name:40} {ms:10.2f} {count:10}"
                for name, ms, count in summarize_parents(records, children)[:8]]
    return "\n".join([header, format_summary(summarize(records), children), *parents])
