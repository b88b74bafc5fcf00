"""``kvmdune bench sandbox``: what a checked system call, and whole busybox
workloads, cost under each way of confining a program — natively (no confinement),
a seccomp-bpf filter, seccomp user notification (a supervisor process deciding),
ptrace (`strace -f -o /dev/null`), and ``kvmdune sandbox`` — in the same run."""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .run import DUNE_SANDBOX, strace_prefix, time_command

SOURCE = Path(__file__).parent / "native" / "syscall_costs.c"
CASES = {"getppid": "allowed getppid", "read-zero": "allowed 1-byte read of /dev/zero",
         "denied": "denied open"}


@dataclass(frozen=True)
class CostRow:
    case: str
    costs_ns: dict[str, float | None]    # confinement -> per-call ns


def build(directory: Path, source: Path = SOURCE) -> Path:
    """Compile a static program from `source` (one of ``native/*.c``) into `directory`."""
    binary = directory / source.stem
    subprocess.run(["gcc", "-O2", "-static", "-w", "-o", str(binary), str(source)], check=True)
    binary.chmod(0o755)
    return binary


def scratch_directory(prefix: str) -> Path:
    """A directory under /tmp that a sandbox dropped to `nobody` can read."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    directory.chmod(0o755)
    return directory


@contextlib.contextmanager
def cost_program(prefix: str) -> Iterator[tuple[Path, str]]:
    """The per-call cost program built in a scratch directory, and a file in it for
    the denied case to try; removed afterwards."""
    directory = scratch_directory(prefix)
    try:
        binary = build(directory)
        denied = directory / "denied-file"
        denied.write_text("x")
        yield binary, str(denied)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def per_call_report(argv: list[str], env: dict[str, str] | None = None) -> dict | None:
    """What a timed run of ``syscall_costs`` reports: case, iterations, per_call_ns,
    errors (None if it reported nothing)."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return None


def _measure(argv: list[str]) -> float | None:
    report = per_call_report(argv)
    return report["per_call_ns"] if report else None


def run_sandbox_bench(samples: int = 3, quick: bool = False,
                      progress: Callable[[str], None] = lambda text: None) -> list[CostRow]:
    native_n, slow_n = (20000, 300) if quick else (1_000_000, 3000)
    with cost_program("kvmdune-bench-sandbox-") as (binary, denied):
        strace = strace_prefix()
        dune = DUNE_SANDBOX + ["--"]
        rows = []
        for case, label in CASES.items():
            progress(label)
            ways = {
                "native": [str(binary), case, str(native_n), "none", denied],
                "seccomp-bpf": [str(binary), case, str(native_n), "seccomp", denied],
                "seccomp-notify": [str(binary), case, str(slow_n * 10), "notify", denied],
                "strace -f": (strace + [str(binary), case, str(slow_n), "none", denied]
                              if strace else None),
                "kvmdune sandbox": dune + [str(binary), case, str(slow_n), "none", denied],
            }
            costs = {}
            for way, argv in ways.items():
                values = [v for v in (_measure(argv) for _ in range(samples)) if argv and v]
                costs[way] = statistics.median(values) if values else None
            rows.append(CostRow(label, costs))
        return rows


def _time(argv: list[str]) -> float | None:
    elapsed, status = time_command(argv, timeout=1200)
    return elapsed if status == 0 else None


def run_workload_bench(samples: int = 3, quick: bool = False,
                       progress: Callable[[str], None] = lambda text: None) -> list[CostRow]:
    """The busybox workloads of ``kvmdune bench run`` (smaller), under each way."""
    from .run import prepare

    directory = scratch_directory("kvmdune-bench-sandbox-")
    try:
        binary = build(directory)
        data = directory / "data"
        data.mkdir()
        workloads = prepare(str(data), quick=True, progress=progress)[1:]
        subprocess.run(["chmod", "-R", "a+rX", str(directory)], check=True)
        strace = strace_prefix()
        rows = []
        for workload in workloads:
            progress(workload.name)
            argv = workload.argv
            ways = {
                "native": argv,
                "seccomp-bpf": [str(binary), "exec", "seccomp-allow", *argv],
                "seccomp-notify": [str(binary), "exec", "notify", *argv],
                "strace -f": [*strace, *argv] if strace else None,
                "kvmdune sandbox": [*DUNE_SANDBOX, "--allow-read",
                                    str(data), "--allow-exec", "/bin", "--allow-exec",
                                    "/usr/bin", "--", *argv],
            }
            costs = {}
            for way, command in ways.items():
                values = [v for v in (_time(command) for _ in range(samples)) if command and v]
                costs[way] = statistics.median(values) * 1e9 if values else None
            rows.append(CostRow(workload.name, costs))
        return rows
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def format_table(rows: list[CostRow], unit: str = "us") -> str:
    ways = list(rows[0].costs_ns) if rows else []
    cell = max([17] + [len(way) + 2 for way in ways])
    label = max([34] + [len(row.case) + 2 for row in rows])
    header = f"{'per call' if unit == 'us' else 'workload':<{label}}" + "".join(
        f"{way:>{cell}}" for way in ways)
    lines = [header, "-" * len(header)]
    for row in rows:
        native = row.costs_ns.get("native") or 0
        cells = []
        for way in ways:
            value = row.costs_ns[way]
            if value is None:
                cells.append(f"{'n/a':>{cell}}")
            elif way == "native":
                cells.append(f"{_scaled(value, unit):>{cell - 2}.2f}{unit}")
            else:
                ratio = f"({value / native:.1f}x)" if native else ""
                cells.append(f"{_scaled(value, unit):>{cell - 10}.2f}{unit}{ratio:>8}")
        lines.append(f"{row.case:<{label}}" + "".join(cells))
    return "\n".join(lines)


def _scaled(nanoseconds: float, unit: str) -> float:
    return nanoseconds / (1e3 if unit == "us" else 1e9)


#: The VMM's own confinement (sandbox/confine.py) on and off, beside native.
CONFINEMENT_WAYS = {"native": None, "sandbox --no-confine": ["--no-confine"],
                    "sandbox (confined)": []}
#: Python's getppid() in a loop before and after the filter: the filter's own cost
#: on each host call the VMM makes.
_FILTER_PROBE = """
import os, sys, time
from kvmdune.sandbox.guard import SandboxGate
from kvmdune.sandbox.policy import Profile, profile_defaults
def per_call(n):
    started = time.perf_counter_ns()
    for _ in range(n):
        os.getppid()
    return (time.perf_counter_ns() - started) / n
n = int(sys.argv[1])
before = min(per_call(n) for _ in range(3))
SandboxGate(profile_defaults(Profile.STRICT), confine=True)._confine()
after = min(per_call(n) for _ in range(3))
print(before, after)
"""


def run_confinement_bench(samples: int = 3, quick: bool = False,
                          progress: Callable[[str], None] = lambda text: None
                          ) -> list[CostRow]:
    """Start-up of ``true``, per-call costs on the fast and the slow path, and the
    filter's cost per host call, with and without the VMM's confinement."""
    import os
    import sys

    native_n, dune_n = (20000, 300) if quick else (1_000_000, 5000)
    with cost_program("kvmdune-bench-confine-") as (binary, denied):
        rows = []
        progress("start-up of true")
        costs = {}
        for way, options in CONFINEMENT_WAYS.items():
            argv = (["true"] if options is None
                    else DUNE_SANDBOX + options + ["--quiet", "--", "true"])
            values = [v for v in (_time(argv) for _ in range(samples)) if v]
            costs[way] = statistics.median(values) * 1e9 if values else None
        rows.append(CostRow("start-up and teardown of true", costs))
        for case, path in (("getppid", "1"), ("read-zero", "1"), ("getppid", "0"),
                           ("denied", "0")):
            label = f"{CASES[case]} ({'fast' if path == '1' else 'slow'} path)"
            progress(label)
            costs = {}
            for way, options in CONFINEMENT_WAYS.items():
                count = native_n if options is None else dune_n
                tail = [str(binary), case, str(count), "none", denied]
                argv = tail if options is None else DUNE_SANDBOX + options + [
                    "--quiet", "--"] + tail
                env = {**os.environ, "KVMDUNE_FAST_SYSCALLS": path}
                values = [r["per_call_ns"] for r in
                          (per_call_report(argv, env) for _ in range(samples)) if r]
                costs[way] = statistics.median(values) if values else None
            rows.append(CostRow(label, costs))
        progress("the filter on each host call")
        probe = subprocess.run([sys.executable, "-c", _FILTER_PROBE,
                                str(20000 if quick else 500_000)],
                               capture_output=True, text=True, timeout=600)
        before, after = (float(v) for v in probe.stdout.split()) if probe.returncode == 0 \
            else (None, None)
        rows.append(CostRow("getppid from Python in the VMM",
                            {"native": before, "sandbox --no-confine": before,
                             "sandbox (confined)": after}))
        return rows
