"""``kvmdune bench run``: whole programs under ``kvmdune run`` (timed from outside,
start-up included, through the native client as the installed command runs them),
beside the same program run natively and under ``strace -f`` (ptrace), in the same
run: busybox workloads, and the process-heavy ones (a shell loop of fork+exec+wait of a dynamic
``/bin/true``, ``gcc -O2 -c`` of a 1,000-line C file, ``make -j2`` of a 10-file
project, ``python3 -c pass``), each with its target (issue 14) and whether it is
met; and how fast a program that allocates past the guest's memory limit is stopped."""

from __future__ import annotations

import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from .. import CLIENT_PATH
from ..linux.thp import HUGE_PAGES_VARIABLE
from ..memory.guest_memory import DEFAULT_GUEST_MEMORY
from .programs import build

MIB = 1 << 20
#: The CPU-bound kernel's array (MB) and steps (millions): big enough that first
#: touches of its pages (2 MiB pages or 4 KiB ones) show in its time.
KERNEL_MB = 128
KERNEL_STEPS_M = 25


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
    #: Variables for the VMM only (kvmdune's own settings), on top of the environment.
    vmm_env: dict[str, str] | None = None


@dataclass(frozen=True)
class RunRow:
    workload: str
    native_s: float
    dune_s: float | None         # None: the run failed (or timed out) under kvmdune
    strace_s: float | None
    repeats: int = 1
    target: Target | None = None
    #: The 1-minute load average before the samples, lowest and highest.
    load: tuple[float, float] | None = None

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
#: ``kvmdune run`` as the installed command runs it: this package's native client,
#: which hands the run to a resident server of this code (and runs it in-process
#: when no server can be used). The rows of ``bench run`` are timed through it.
CLIENT_RUN = [CLIENT_PATH, "run", "--"]
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
    progress("building the C int/memory kernel (gcc -static)")
    kernel = [str(build("cpu_kernel.c", Path(directory))), str(KERNEL_MB),
              "1" if quick else str(KERNEL_STEPS_M)]
    return [
        # Linux's rules (this host's THP mode) decide the page size, natively and here.
        Workload(f"C int/memory kernel, {KERNEL_MB} MB", kernel),
        Workload("the same, madvise(MADV_HUGEPAGE)", kernel + ["huge"]),
        Workload("the same, KVMDUNE_HUGE_PAGES=1", kernel, vmm_env={HUGE_PAGES_VARIABLE: "1"}),
        Workload("startup: true", ["/bin/true"]),
        Workload(f"dd bs=512 of {dd_size // MIB} MB to /dev/null",
                 [busybox, "dd", f"if={data}", "of=/dev/null", "bs=512",
                  f"count={dd_size // 512}"]),
        Workload(f"find over {files} files", [busybox, "find", tree, "-name", "f05*"]),
        Workload(f"sha256sum of {sha_size // MIB} MB", [busybox, "sha256sum", data]),
        # The same bytes through a pipe, 4 KiB at a time: a pipeline, not CPU-bound.
        Workload(f"head -c {sha_size // MIB} MB | sha256sum",
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
    and its exit status; subprocess.TimeoutExpired (the run killed) after
    `timeout` seconds."""
    started = time.perf_counter()
    with subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL,
                          env=env) as process:
        wait_for_exit(process, timeout)
        elapsed = time.perf_counter() - started
        return elapsed, process.wait()


def wait_for_exit(process: subprocess.Popen, timeout: float | None) -> None:
    """Return as soon as ``process`` ends (through its pidfd), or kill it and raise
    subprocess.TimeoutExpired after ``timeout`` seconds. Not Popen.wait(timeout):
    it polls at intervals that grow to 50 ms, so a run's end was seen up to 50 ms
    late (a 90 ms run read as 113 ms, every run between 63 and 113 ms alike)."""
    if timeout is None:
        process.wait()
        return
    pidfd = os.pidfd_open(process.pid)
    try:
        ready = select.poll()
        ready.register(pidfd, select.POLLIN)
        ended = ready.poll(timeout * 1000)
    finally:
        os.close(pidfd)
    if not ended:
        process.kill()
        process.wait()
        raise subprocess.TimeoutExpired(process.args, timeout)


#: A run of a workload that takes longer than this is reported as failed (quick: a
#: smoke test's sizes).
RUN_TIMEOUT_S = 600
QUICK_RUN_TIMEOUT_S = 120


def _time(argv: list[str], timeout: float = RUN_TIMEOUT_S,
          env: dict[str, str] | None = None) -> float | None:
    """Wall time of a successful run; None when it failed or timed out."""
    try:
        elapsed, status = time_command(argv, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return elapsed if status == 0 else None


def _median_time(argv: list[str], samples: int, timeout: float = RUN_TIMEOUT_S,
                 env: dict[str, str] | None = None) -> float | None:
    times = []
    for _ in range(samples):
        elapsed = _time(argv, timeout, env)
        if elapsed is None:
            return None          # one failure makes the row a failure
        times.append(elapsed)
    return statistics.median(times)


def measure(workloads: list[Workload], samples: int, progress: Callable[[str], None],
            timeout: float = RUN_TIMEOUT_S, dune_run: list[str] = CLIENT_RUN) -> list[RunRow]:
    """Each workload natively, under ``dune_run`` and under strace, in turn, sample
    by sample (so that each way meets the same machine load)."""
    strace = strace_prefix()
    progress(f"kvmdune run: the {_startup_path(dune_run)} path")
    rows = []
    for workload in workloads:
        progress(workload.name)
        env = os.environ | workload.vmm_env if workload.vmm_env else None
        ways = [(workload.argv, None), (dune_run + workload.argv, env)]
        if strace:
            ways.append((strace + workload.argv, None))
        times: list[list[float] | None] = [[] for _ in ways]
        loads = []
        for _ in range(samples):
            loads.append(os.getloadavg()[0])
            for way, (argv, way_env) in enumerate(ways):
                elapsed = _time(argv, timeout, way_env) if times[way] is not None else None
                if elapsed is None:
                    times[way] = None            # one failure makes the way a failure
                else:
                    times[way].append(elapsed)
        if times[0] is None:
            raise RuntimeError(f"{' '.join(workload.argv[:4])}... fails natively")
        native, ours, *traced = (statistics.median(t) if t else None for t in times)
        rows.append(RunRow(workload.name, native, ours, traced[0] if traced else None,
                           workload.repeats, workload.target, (min(loads), max(loads))))
    return rows


def _startup_path(dune_run: list[str]) -> str:
    """Run ``/bin/true`` through ``dune_run`` (which starts a resident server, if it
    can) and say which path the run took."""
    result = subprocess.run(dune_run + ["/bin/true"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            env=dict(os.environ, KVMDUNE_STARTUP_TRACE="1"))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(dune_run)} /bin/true exited with {result.returncode}: "
                           f"{result.stderr.decode(errors='replace')}")
    return ("in-process" if dune_run is DUNE_RUN or b"start-up: in-process" in result.stderr
            else "resident")


def run_bench(samples: int = 3, quick: bool = False,
              progress: Callable[[str], None] = lambda text: None,
              only: list[str] | None = None, in_process: bool = False) -> list[RunRow]:
    """The workloads' rows (those whose name holds one of ``only``'s words, if
    given), timed through the native client or, with ``in_process``, through
    ``python -m kvmdune run`` on the in-process path."""
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-") as directory:
        workloads = prepare(directory, quick, progress) + prepare_processes(directory, quick)
        if only:
            workloads = [w for w in workloads if any(word in w.name for word in only)]
        dune_run = DUNE_RUN if in_process else CLIENT_RUN
        return measure(workloads, samples, progress,
                       QUICK_RUN_TIMEOUT_S if quick else RUN_TIMEOUT_S, dune_run)


#: Issue 14's start-up targets: from the shell to the guest's first instruction and
#: back, through the installed command (median of at least 5 runs).
STARTUP_TARGETS_S = {"run": 0.050, "sandbox": 0.060}
STARTUP_SAMPLES = 5


@dataclass(frozen=True)
class StartupRow:
    way: str
    seconds: float
    target_s: float | None = None

    @property
    def holds(self) -> bool | None:
        return None if self.target_s is None else self.seconds <= self.target_s


def installed_command() -> str:
    """The ``kvmdune`` command setup.py installs beside this interpreter (a launcher
    of the native client), else the client of this package itself."""
    installed = os.path.join(os.path.dirname(sys.executable), "kvmdune")
    try:
        with open(installed, "rb") as launcher:
            if b"kvmdune-client" in launcher.read(4096):
                return installed
    except OSError:
        pass
    return CLIENT_PATH


def measure_startup(samples: int = STARTUP_SAMPLES,
                    progress: Callable[[str], None] = lambda text: None) -> list[StartupRow]:
    """``/bin/true`` natively, then under ``kvmdune run`` and ``kvmdune sandbox``
    through the installed command: on the resident path without a terminal (runs
    interleaved, the same machine load for each), on the resident path from a
    terminal's session (a server of that session), and on the in-process path."""
    command = installed_command()
    progress(f"start-up through {command}")
    resident = dict(os.environ, KVMDUNE_STARTUP_TRACE="1")
    resident.pop("KVMDUNE_STARTUP", None)
    in_process = dict(resident, KVMDUNE_STARTUP="inprocess")
    samples = max(samples, STARTUP_SAMPLES)
    ways = {"native /bin/true": (["/bin/true"], None, None)}
    for sub in STARTUP_TARGETS_S:
        argv = [command, sub, "--", "/bin/true"]
        ways[f"kvmdune {sub} (resident)"] = (argv, resident, STARTUP_TARGETS_S[sub])
        ways[f"kvmdune {sub} (in-process)"] = (argv, in_process, None)
    for argv, env, _ in ways.values():      # starts the server; warms the caches
        _time_startup(argv, env)
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(samples):
        for way, (argv, env, _) in ways.items():
            times[way].append(_time_startup(argv, env))
    rows = [StartupRow(way, statistics.median(times[way]), ways[way][2]) for way in ways]
    progress("start-up from a terminal's session")
    for sub, target in STARTUP_TARGETS_S.items():
        at_terminal = _time_in_terminal_session([command, sub, "--", "/bin/true"], resident,
                                                samples)
        rows.append(StartupRow(f"kvmdune {sub} (resident, tty)",
                               statistics.median(at_terminal), target))
    return rows


def _time_startup(argv: list[str], env: dict[str, str] | None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    elapsed = time.perf_counter() - started
    _check_startup(argv, env, result)
    return elapsed


def _check_startup(argv: list[str], env: dict[str, str] | None,
                   result: subprocess.CompletedProcess) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {result.returncode}: "
                           f"{result.stderr.decode(errors='replace')}")
    if env and "KVMDUNE_STARTUP" not in env and b"start-up: in-process" in result.stderr:
        raise RuntimeError(f"{' '.join(argv)} did not take the resident path: "
                           f"{result.stderr.decode(errors='replace').strip()}")


#: A shell's part: a session whose controlling terminal is a new pty, running
#: ``argv`` (after one warm-up run) ``samples`` times, each as a job of its own
#: (its process group); prints the wall times, or the first failure's stderr.
_TERMINAL_SESSION = """
import fcntl, json, os, subprocess, sys, termios, time
argv, samples = json.loads(sys.argv[1]), int(sys.argv[2])
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
times = []
for sample in range(samples + 1):
    started = time.perf_counter()
    result = subprocess.run(argv, stdin=0, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            process_group=0)
    if result.returncode != 0 or b"start-up: in-process" in result.stderr:
        sys.exit(result.stderr.decode(errors="replace") or f"status {result.returncode}")
    times.append(time.perf_counter() - started)
print(json.dumps(times[1:]))
"""


def _time_in_terminal_session(argv: list[str], env: dict[str, str], samples: int) -> list[float]:
    import json
    import pty

    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-c", _TERMINAL_SESSION, json.dumps(argv), str(samples)],
            stdin=terminal, capture_output=True, env=env, start_new_session=True)
    finally:
        os.close(controller)
        os.close(terminal)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} from a terminal: "
                           f"{result.stderr.decode(errors='replace').strip()}")
    return json.loads(result.stdout)


def format_startup(rows: list[StartupRow]) -> str:
    native = rows[0].seconds
    header = f"{'start-up (median)':<30} {'time':>9} {'ratio':>8} {'target':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        verdict = ("" if row.holds is None else
                   f"{row.target_s * 1e3:>6.0f} ms {'ok' if row.holds else 'MISSED'}")
        lines.append(f"{row.way:<30} {row.seconds * 1e3:>6.1f} ms {row.seconds / native:>7.0f}x "
                     f"{verdict}")
    return "\n".join(lines)


def format_table(rows: list[RunRow]) -> str:
    header = (f"{'workload':<36} {'native':>9} {'kvmdune':>9} {'ratio':>8} "
              f"{'strace -f':>10} {'ratio':>8} {'load':>9}  target")
    lines = [header, "-" * len(header)]
    for row in rows:
        traced = (f"{row.strace_s:>9.3f}s {row.strace_ratio:>7.2f}x" if row.strace_s
                  else f"{'n/a':>10} {'':>8}")
        ours = (f"{row.dune_s:>8.3f}s {row.dune_ratio:>7.2f}x" if row.dune_s is not None
                else f"{'failed':>9} {'':>8}")
        load = f"{row.load[0]:.1f}-{row.load[1]:.1f}" if row.load else ""
        lines.append(f"{row.workload:<36} {row.native_s:>8.3f}s {ours} {traced} {load:>9}  "
                     f"{_describe_target(row)}")
        if row.repeats > 1 and row.dune_s is not None:
            lines.append(f"{'  each':<36} {row.native_s / row.repeats * 1e3:>7.2f}ms "
                         f"{row.dune_s / row.repeats * 1e3:>7.2f}ms")
    return "\n".join(lines)


def rows_as_json(rows: list[RunRow]) -> list[dict]:
    return [{"workload": row.workload, "native_s": row.native_s, "dune_s": row.dune_s,
             "strace_s": row.strace_s, "repeats": row.repeats, "load": row.load,
             "target": row.target.describe() if row.target else None,
             "target_met": row.target_met} for row in rows]


def _describe_target(row: RunRow) -> str:
    if row.target is None:
        return ""
    return f"{row.target.describe()}: {'met' if row.target_met else 'NOT met'}"


# -- the memory limit ------------------------------------------------------------------

#: The limits run into: ``--memory 256M`` and the default.
LIMITS_MIB = (256, None)
#: A stop within this long of crossing the limit holds the target.
STOP_TARGET_S = 1.0
#: The allocation chunk of the program (MiB): above the eager-mapping limit, so that
#: its memory comes by demand paging, the path whose limit was slow.
HOG_CHUNK_MIB = 128
LIMIT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class LimitStop:
    """One run of ``memory_hog`` into a memory limit: the MiBs it had touched at its
    last report, how long the last quarter before the limit took, and the time from
    its last report (at most a MiB before the crossing) to the end of ``kvmdune run``."""

    limit_mib: int
    default: bool
    reached_mib: int
    last_quarter_s: float
    stop_s: float
    status: int

    @property
    def name(self) -> str:
        return (f"default limit ({self.limit_mib} MiB)" if self.default
                else f"--memory {self.limit_mib}M")

    @property
    def holds(self) -> bool:
        return self.status == 128 + 9 and self.stop_s <= STOP_TARGET_S


def measure_limit_stop(hog: Path, limit_mib: int | None) -> LimitStop:
    """Run the hog into ``limit_mib`` (None: the default), reading its reports as
    they come (timed here, on arrival)."""
    options = [] if limit_mib is None else ["--memory", f"{limit_mib}M"]
    argv = [sys.executable, "-m", "kvmdune", "run", *options, "--", str(hog),
            str(HOG_CHUNK_MIB)]
    limit = limit_mib or DEFAULT_GUEST_MEMORY // MIB
    reports: list[tuple[float, int]] = []
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    for line in process.stdout:
        reports.append((time.monotonic(), int(line)))
    status = process.wait(timeout=LIMIT_TIMEOUT_S)
    ended = time.monotonic()
    if not reports:
        raise RuntimeError(f"memory_hog under {' '.join(options) or 'the default'} "
                           f"reported nothing (status {status})")
    last_time, reached = reports[-1]
    quarter = next((at for at, mib in reports if mib >= limit * 3 // 4), last_time)
    return LimitStop(limit, limit_mib is None, reached, last_time - quarter,
                     ended - last_time, status)


def run_limit_bench(progress: Callable[[str], None] = lambda text: None) -> list[LimitStop]:
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-limit-") as directory:
        hog = build("memory_hog.c", Path(directory))
        stops = []
        for limit_mib in LIMITS_MIB:
            progress(f"allocating past {'--memory %dM' % limit_mib if limit_mib else 'the default limit'}")
            stops.append(measure_limit_stop(hog, limit_mib))
        return stops


def format_limit_table(stops: list[LimitStop]) -> str:
    header = (f"{'allocation past the memory limit':<36} {'reached':>9} {'last 1/4':>9} "
              f"{'stopped':>9} {'status':>7}  target (stop <= {STOP_TARGET_S:g} s, 137)")
    lines = [header, "-" * len(header)]
    for stop in stops:
        lines.append(f"{stop.name:<36} {stop.reached_mib:>5} MiB {stop.last_quarter_s:>8.3f}s "
                     f"{stop.stop_s:>8.3f}s {stop.status:>7}  "
                     f"{'holds' if stop.holds else 'MISSED'}")
    lines.append("reached: MiB the program had touched at its last report; last 1/4: from "
                 "its report at 3/4 of the limit to its last; stopped: from its last "
                 "report (at most 1 MiB before the crossing) to the end of kvmdune run.")
    return "\n".join(lines)
