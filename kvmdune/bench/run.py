"""``kvmdune bench run``: whole programs under ``kvmdune run``, beside the same
program run natively and under ``strace -f`` (ptrace), in the same run: busybox
workloads, and the process-heavy ones (a shell loop of fork+exec+wait of a dynamic
``/bin/true``, ``gcc -O2 -c`` of a 1,000-line C file, ``make -j2`` of a 10-file
project, ``python3 -c pass``), each with its target (issue 14) and whether it is met."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Callable

MIB = 1 << 20


@dataclass(frozen=True)
class Target:
    """What kvmdune's time should reach: at most ``ratio`` times native, or native
    plus ``extra_s``, or ``each_s`` per repetition (whichever are given)."""

    ratio: float | None = None
    extra_s: float | None = None
    each_s: float | None = None

    def met(self, native_s: float, dune_s: float, repeats: int) -> bool:
        return ((self.ratio is None or dune_s <= native_s * self.ratio)
                and (self.extra_s is None or dune_s <= native_s + self.extra_s)
                and (self.each_s is None or dune_s / repeats <= self.each_s))

    def describe(self) -> str:
        parts = ([f"<={self.ratio:g}x"] if self.ratio is not None else []) + \
                ([f"<=native+{self.extra_s * 1e3:g}ms"] if self.extra_s is not None else []) + \
                ([f"<={self.each_s * 1e3:g}ms each"] if self.each_s is not None else [])
        return " ".join(parts)


@dataclass(frozen=True)
class Workload:
    name: str
    argv: list[str]
    #: How many times the workload repeats its unit (a loop): times are also shown per unit.
    repeats: int = 1
    target: Target | None = None


@dataclass(frozen=True)
class RunRow:
    workload: str
    native_s: float
    dune_s: float | None         # None: the run failed (or timed out) under kvmdune
    strace_s: float | None
    repeats: int = 1
    target: Target | None = None

    @property
    def target_met(self) -> bool | None:
        if self.target is None:
            return None
        return self.dune_s is not None and self.target.met(self.native_s, self.dune_s,
                                                           self.repeats)

    @property
    def dune_ratio(self) -> float | None:
        return self.dune_s / self.native_s if self.dune_s is not None else None

    @property
    def strace_ratio(self) -> float | None:
        return self.strace_s / self.native_s if self.strace_s else None


# The commands of the ways a program is run (shared by the bench suites).
DUNE_RUN = [sys.executable, "-m", "kvmdune", "run", "--"]
DUNE_SANDBOX = [sys.executable, "-m", "kvmdune", "sandbox"]     # options, then "--"
STRACE_OPTIONS = ["-f", "-o", "/dev/null"]


def find_busybox(suite: str = "run") -> str:
    found = shutil.which("busybox")
    if found is None:
        raise SystemExit(f"kvmdune bench {suite} needs busybox "
                         "(apt-get install busybox-static)")
    return found


def strace_prefix() -> list[str] | None:
    """``strace -f -o /dev/null``, or None where strace is not installed."""
    strace = shutil.which("strace")
    return [strace, *STRACE_OPTIONS] if strace else None


def write_random_file(path: str, size: int) -> str:
    """`size` bytes (whole MiBs) of incompressible data."""
    with open(path, "wb") as f:
        chunk = os.urandom(MIB)
        for _ in range(size // MIB):
            f.write(chunk)
    return path


def write_text_file(path: str, size: int) -> str:
    """At least `size` bytes of compressible text."""
    with open(path, "wb") as f:
        line = b"".join(b"%d kvmdune bench line with some words to compress\n" % i
                        for i in range(20000))
        while f.tell() < size:
            f.write(line)
    return path


def make_tree(path: str, files: int, per_dir: int = 100) -> str:
    """A tree of `files` empty files, `per_dir` to a directory."""
    for d in range(files // per_dir):
        sub = os.path.join(path, f"d{d:04d}")
        os.makedirs(sub)
        for i in range(per_dir):
            open(os.path.join(sub, f"f{i:03d}"), "w").close()
    return path


def prepare(directory: str, quick: bool, progress: Callable[[str], None]) -> list[Workload]:
    """Create the input files and return the workloads."""
    busybox = find_busybox()
    dd_size, sha_size, bz_size, files = ((8 * MIB, 16 * MIB, 4 * MIB, 2000) if quick
                                         else (100 * MIB, 200 * MIB, 50 * MIB, 20000))
    progress("creating input files")
    data = write_random_file(os.path.join(directory, "data.bin"), max(dd_size, sha_size))
    text = write_text_file(os.path.join(directory, "text.txt"), bz_size)
    tree = make_tree(os.path.join(directory, "tree"), files)
    return [
        Workload("startup: true", ["/bin/true"]),
        Workload(f"dd bs=512 of {dd_size // MIB} MB to /dev/null",
                 [busybox, "dd", f"if={data}", "of=/dev/null", "bs=512",
                  f"count={dd_size // 512}"]),
        Workload(f"find over {files} files", [busybox, "find", tree, "-name", "f05*"]),
        Workload(f"sha256sum of {sha_size // MIB} MB",
                 [busybox, "sh", "-c", f"head -c {sha_size} {data} | sha256sum"]),
        Workload(f"bzip2 -9 of {bz_size // MIB} MB", [busybox, "bzip2", "-9", "-c", text]),
    ]


#: Issue 14's targets for the process-heavy workloads.
FORK_EXEC_TARGET = Target(each_s=10e-3)
COMPILE_TARGET = Target(ratio=2.0)
PYTHON_START_TARGET = Target(extra_s=60e-3)


def write_c_file(path: str, lines: int, name: str = "f") -> str:
    """A C file of about ``lines`` lines: small functions with loops and branches,
    enough for the optimizer to work on."""
    functions = max(1, lines // 10)
    with open(path, "w") as f:
        f.write("#include <stddef.h>\n")
        for i in range(functions):
            f.write(f"int {name}_{i}(const int *v, size_t n) {{\n"
                    f"    int acc = {i};\n"
                    "    for (size_t k = 0; k < n; k++) {\n"
                    f"        if (v[k] % {i % 7 + 2} == 0) acc += v[k] * {i + 3};\n"
                    f"        else acc ^= v[k] >> {i % 5 + 1};\n"
                    "    }\n"
                    "    return acc;\n"
                    "}\n\n")
    return path


def make_project(path: str, files: int, lines: int) -> str:
    """A directory of ``files`` C files of ``lines`` lines each and a Makefile that
    compiles them (-O2) and archives the objects."""
    os.makedirs(path)
    objects = []
    for i in range(files):
        write_c_file(os.path.join(path, f"unit{i}.c"), lines, name=f"unit{i}")
        objects.append(f"unit{i}.o")
    with open(os.path.join(path, "Makefile"), "w") as f:
        f.write(f"OBJS = {' '.join(objects)}\n"
                "libunits.a: $(OBJS)\n\tar rcs $@ $(OBJS)\n"
                "%.o: %.c\n\t$(CC) -O2 -c -o $@ $<\n")
    return path


def prepare_processes(directory: str, quick: bool) -> list[Workload]:
    """The process-heavy workloads (issue 14): what is missing on this machine
    (bash, gcc, make) is left out."""
    loops, lines, files = (10, 100, 3) if quick else (200, 1000, 10)
    workloads = []
    bash, true = shutil.which("bash"), shutil.which("true")
    if bash and true:
        workloads.append(Workload(
            f"fork+exec+wait of true, x{loops}",
            [bash, "-c", f"for i in $(seq {loops}); do {true}; done"],
            repeats=loops, target=FORK_EXEC_TARGET))
    gcc = shutil.which("gcc")
    if gcc:
        source = write_c_file(os.path.join(directory, "big.c"), lines)
        workloads.append(Workload(
            f"gcc -O2 -c of {lines} lines",
            [gcc, "-O2", "-c", "-o", os.path.join(directory, "big.o"), source],
            target=COMPILE_TARGET))
        make = shutil.which("make")
        if make:
            project = make_project(os.path.join(directory, "project"), files, lines // 10)
            workloads.append(Workload(
                f"make -j2 of {files} files", [make, "-s", "-B", "-j2", "-C", project],
                target=COMPILE_TARGET))
    workloads.append(Workload("python3 -c pass", [os.path.realpath(sys.executable), "-c", "pass"],
                              target=PYTHON_START_TARGET))
    return workloads


def time_command(argv: list[str], env: dict[str, str] | None = None,
                 stdout: int | IO[bytes] = subprocess.DEVNULL,
                 timeout: float | None = None) -> tuple[float, int]:
    """Wall time of one run of `argv` (output discarded unless `stdout` is given)
    and its exit status."""
    started = time.perf_counter()
    result = subprocess.run(argv, stdout=stdout, stderr=subprocess.DEVNULL, env=env,
                            timeout=timeout)
    return time.perf_counter() - started, result.returncode


#: A run of a workload that takes longer than this is reported as failed (quick: a
#: smoke test's sizes).
RUN_TIMEOUT_S = 600
QUICK_RUN_TIMEOUT_S = 120


def _time(argv: list[str], timeout: float = RUN_TIMEOUT_S) -> float | None:
    """Wall time of a successful run; None when it failed or timed out."""
    try:
        elapsed, status = time_command(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return elapsed if status == 0 else None


def _median_time(argv: list[str], samples: int,
                 timeout: float = RUN_TIMEOUT_S) -> float | None:
    times = []
    for _ in range(samples):
        elapsed = _time(argv, timeout)
        if elapsed is None:
            return None          # one failure makes the row a failure
        times.append(elapsed)
    return statistics.median(times)


def measure(workloads: list[Workload], samples: int, progress: Callable[[str], None],
            timeout: float = RUN_TIMEOUT_S) -> list[RunRow]:
    strace = strace_prefix()
    rows = []
    for workload in workloads:
        progress(workload.name)
        native = _median_time(workload.argv, samples)
        if native is None:
            raise RuntimeError(f"{' '.join(workload.argv[:4])}... fails natively")
        ours = _median_time(DUNE_RUN + workload.argv, samples, timeout)
        traced = _median_time(strace + workload.argv, samples, timeout) if strace else None
        rows.append(RunRow(workload.name, native, ours, traced, workload.repeats,
                           workload.target))
    return rows


def run_bench(samples: int = 3, quick: bool = False,
              progress: Callable[[str], None] = lambda text: None) -> list[RunRow]:
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-") as directory:
        workloads = prepare(directory, quick, progress) + prepare_processes(directory, quick)
        return measure(workloads, samples, progress,
                       QUICK_RUN_TIMEOUT_S if quick else RUN_TIMEOUT_S)


def format_table(rows: list[RunRow]) -> str:
    header = (f"{'workload':<36} {'native':>9} {'kvmdune':>9} {'ratio':>8} "
              f"{'strace -f':>10} {'ratio':>8}  target")
    lines = [header, "-" * len(header)]
    for row in rows:
        traced = (f"{row.strace_s:>9.3f}s {row.strace_ratio:>7.2f}x" if row.strace_s
                  else f"{'n/a':>10} {'':>8}")
        ours = (f"{row.dune_s:>8.3f}s {row.dune_ratio:>7.2f}x" if row.dune_s is not None
                else f"{'failed':>9} {'':>8}")
        lines.append(f"{row.workload:<36} {row.native_s:>8.3f}s {ours} {traced}  "
                     f"{_describe_target(row)}")
        if row.repeats > 1 and row.dune_s is not None:
            lines.append(f"{'  each':<36} {row.native_s / row.repeats * 1e3:>7.2f}ms "
                         f"{row.dune_s / row.repeats * 1e3:>7.2f}ms")
    return "\n".join(lines)


def rows_as_json(rows: list[RunRow]) -> list[dict]:
    return [{"workload": row.workload, "native_s": row.native_s, "dune_s": row.dune_s,
             "strace_s": row.strace_s, "repeats": row.repeats,
             "target": row.target.describe() if row.target else None,
             "target_met": row.target_met} for row in rows]


def _describe_target(row: RunRow) -> str:
    if row.target is None:
        return ""
    return f"{row.target.describe()}: {'met' if row.target_met else 'NOT met'}"
