"""``kvmdune bench threads``: threads in Dune mode beside the same program run
natively, in the same run (issue 10's targets).

1. Thread create+join latency (``thread_costs create``, timed inside the program):
   target at most 20x native. Every guest thread is a vCPU (pooled: KVM cannot
   destroy one, and KVM_CREATE_VCPU alone costs ~110 us here) and a host thread.
2. A condition-variable ping-pong between two threads (futex wait and wake on both
   sides): what a contended hand-off costs. No target.
3. Compute-bound multi-threaded work: two threads running an integer kernel (timed
   inside the program, so only guest execution counts), and ``xz -T2 -6`` and
   ``zstd -T2 -19`` of 100 MB (timed from outside, start-up included): target
   within 1.15x native. Outputs are compared with the native run's.
Medians of ``--samples`` runs; ``--quick`` shrinks every size to a smoke test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .run import DUNE_RUN, MIB, time_command

NATIVE_DIR = Path(__file__).parent / "native"
#: Issue 10's targets: create+join within 20x native, compute-bound within 1.15x.
CREATE_TARGET = 20.0
COMPUTE_TARGET = 1.15


@dataclass(frozen=True)
class ThreadRow:
    name: str
    unit: str             # "us" (in-program, per operation) or "s" (wall)
    native: float
    dune: float
    target: float | None  # the largest ratio that meets the target, or None

    @property
    def ratio(self) -> float:
        return self.dune / self.native

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "ok" if self.ratio <= self.target else "MISSED"


@dataclass(frozen=True)
class Sizes:
    creates: int
    pingpongs: int
    compute_rounds: int
    compress_bytes: int


FULL = Sizes(creates=2000, pingpongs=2000, compute_rounds=20000, compress_bytes=100 * MIB)
QUICK = Sizes(creates=100, pingpongs=100, compute_rounds=200, compress_bytes=4 * MIB)


def build_thread_costs(directory: str) -> str:
    """thread_costs.c, built with gcc -static."""
    binary = os.path.join(directory, "thread_costs")
    subprocess.run(["gcc", "-O2", "-static", "-o", binary,
                    str(NATIVE_DIR / "thread_costs.c")], check=True)
    return binary


def write_compressible(path: str, size: int) -> str:
    """Text with some incompressible blocks: neither trivial nor hopeless to compress."""
    line = b"".join(b"%d kvmdune bench line with some words to compress\n" % i
                    for i in range(20000))
    noise = os.urandom(4096)
    with open(path, "wb") as f:
        while f.tell() < size:
            f.write(line[:size - f.tell()])
            f.write(noise[:max(0, size - f.tell())])
    return path


def _output(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... exited with {result.returncode}: "
                           f"{result.stderr.decode(errors='replace')[-500:]}")
    return result.stdout.decode()


def _in_program(argv: list[str], samples: int, scale: float) -> tuple[float, float]:
    """Medians of what the program prints (first field, times ``scale``), natively
    and under kvmdune; the rest of its output must agree."""
    results = {}
    for name, prefix in (("native", []), ("dune", DUNE_RUN)):
        values, tails = [], set()
        for _ in range(samples):
            fields = _output(prefix + argv).split()
            values.append(float(fields[0]) * scale)
            tails.add(tuple(fields[1:]))
        results[name] = (statistics.median(values), tails)
    if results["native"][1] != results["dune"][1]:
        raise RuntimeError(f"{argv[1]}: kvmdune's output differs from the native run's")
    return results["native"][0], results["dune"][0]


def _wall(argv: list[str], samples: int) -> tuple[float, float]:
    """Median wall times natively and under kvmdune; the outputs must be equal."""
    times, digests = {}, {}
    for name, prefix in (("native", []), ("dune", DUNE_RUN)):
        elapsed = []
        for _ in range(samples):
            with tempfile.TemporaryFile() as out:
                seconds, status = time_command(prefix + argv, stdout=out)
                if status != 0:
                    raise RuntimeError(f"{' '.join(argv[:3])}... exited with {status}")
                out.seek(0)
                digests.setdefault(name, set()).add(hashlib.sha256(out.read()).hexdigest())
            elapsed.append(seconds)
        times[name] = statistics.median(elapsed)
    if digests["native"] != digests["dune"]:
        raise RuntimeError(f"{argv[0]}: kvmdune's output differs from the native run's")
    return times["native"], times["dune"]


def run_threads_bench(samples: int = 3, quick: bool = False,
                      progress: Callable[[str], None] = lambda text: None) -> list[ThreadRow]:
    sizes = QUICK if quick else FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-threads-") as directory:
        progress("building thread_costs.c (gcc -static)")
        costs = build_thread_costs(directory)
        progress(f"create+join x{sizes.creates}")
        native, dune = _in_program([costs, "create", str(sizes.creates)], samples, 1e-3)
        rows.append(ThreadRow("thread create+join", "us", native, dune, CREATE_TARGET))
        progress(f"ping-pong x{sizes.pingpongs}")
        native, dune = _in_program([costs, "pingpong", str(sizes.pingpongs)], samples, 1e-3)
        rows.append(ThreadRow("condvar ping-pong round trip", "us", native, dune, None))
        progress("compute: 2 threads")
        native, dune = _in_program([costs, "compute", "2", str(sizes.compute_rounds)],
                                   samples, 1.0)
        rows.append(ThreadRow("integer kernel, 2 threads (in-program)", "s", native, dune,
                              COMPUTE_TARGET))
        data = write_compressible(os.path.join(directory, "data.txt"), sizes.compress_bytes)
        megabytes = sizes.compress_bytes // MIB
        for tool, argv in (("xz", ["-T2", "-6", "-c", data]),
                           ("zstd", ["-q", "-T2", "-19", "-c", data])):
            path = shutil.which(tool)
            if path is None:
                progress(f"{tool} is not installed: skipped")
                continue
            progress(f"{tool} {' '.join(argv[:-2])} of {megabytes} MB")
            native, dune = _wall([path, *argv], samples)
            rows.append(ThreadRow(f"{tool} {' '.join(argv[:2] if tool == 'xz' else argv[1:3])}"
                                  f" of {megabytes} MB", "s", native, dune, COMPUTE_TARGET))
    return rows


def format_table(rows: list[ThreadRow]) -> str:
    header = (f"{'workload':<42} {'native':>11} {'kvmdune':>11} {'ratio':>8} "
              f"{'target':>8}  ")
    lines = [header, "-" * len(header)]
    for row in rows:
        target = f"<={row.target:g}x" if row.target is not None else ""
        lines.append(f"{row.name:<42} {row.native:>9.3f}{row.unit:<2} "
                     f"{row.dune:>9.3f}{row.unit:<2} {row.ratio:>7.2f}x {target:>8}  "
                     f"{row.verdict}")
    return "\n".join(lines)
