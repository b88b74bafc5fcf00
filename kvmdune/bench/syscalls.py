"""``kvmdune bench syscalls``: issue 5's targets for fast system calls, each figure
beside the Linux baseline measured in the same run (median of the samples).

1. per call: an allowed ``getppid`` from an unmodified static program
   (``native/syscall_costs.c``) natively, under ``strace -f``, ``kvmdune run`` and
   ``kvmdune sandbox`` (strict profile), and both of those on the slow path
   (``KVMDUNE_FAST_SYSCALLS=0``) for comparison, and its floor (``native/ring_floor.c``:
   a request filed in a ring laid out as the guest's to a spinning host thread that
   calls getppid natively); target (issue 13) ≤0.15x strace, ≤3.5x native and
   ≤1.3x the floor; libc's ``clock_gettime``; a 4 KiB ``pread`` of a cached file,
   its data unused and used (what each read of group 2's ``sha256sum`` costs);
2. CPU bound: busybox ``sha256sum`` of 200 MB, ``bzip2 -9`` of 50 MB and an
   integer/memory kernel (``native/cpu_kernel.c``); target ≥0.97x native speed;
3. system-call heavy: busybox ``dd bs=512`` of 100 MB to /dev/null and to a file
   (run ≤2x, sandbox ≤3x), ``find`` over 20,000 files, ``ls -lR`` of
   /usr/share/doc (≤3x native under both): issue 13's targets, start-up excluded
   (each way's own run of ``true`` in group 4 subtracted from its time, native's
   from native's), all ≤0.2x strace;
4. start-up and teardown of ``true`` on the in-process path these rows run on
   (``python -m kvmdune``), subtracted from group 3; issue 14's start-up target is
   the installed command's, measured by ``kvmdune bench run --startup``;
6. 100 MB through a pipe between two guest processes (busybox ``dd bs=64k`` into
   ``dd``), start-up subtracted (the same pipeline moving nothing, timed in the same
   round); target: at least 50% of native throughput (issue 13).

Whole programs are timed from the outside (start-up included); every run's output
is compared with the native run's. Targets are reported, never asserted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .run import (DUNE_RUN, DUNE_SANDBOX, MIB, find_busybox, make_tree, strace_prefix,
                  time_command, write_random_file, write_text_file)
from .sandbox import build, per_call_report, scratch_directory

NATIVE_DIR = Path(__file__).parent / "native"
FAST = {"KVMDUNE_FAST_SYSCALLS": "1", "KVMDUNE_PATCH_SITES": "1"}
UNPATCHED = {"KVMDUNE_FAST_SYSCALLS": "1", "KVMDUNE_PATCH_SITES": "0"}
SLOW = {"KVMDUNE_FAST_SYSCALLS": "0"}
SLOW_NOTE = " (slow path)"
UNPATCHED_NOTE = " (unpatched)"
NO_VDSO = {"KVMDUNE_VDSO": "0"}
NO_VDSO_NOTE = " (no vDSO)"
#: The binaries whose share of patched call sites the bench reports (issue 13).
SITE_SHARE_FILES = ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2",
                    "/bin/busybox", "/usr/bin/python3")
TIMEOUT = 1800.0

GROUPS = {
    "per-call": "1. per-call cost of an allowed getppid, and of libc's clock_gettime (µs per call)",
    "cpu": "2. CPU bound (seconds; target: kvmdune at least 0.97x native speed)",
    "syscall-heavy": "3. system-call heavy (seconds)",
    "startup": "4. start-up and teardown on the in-process path (seconds; the installed "
               "command's, issue 14's target: kvmdune bench run --startup)",
    "pipe": "6. a pipe between two processes (seconds, start-up subtracted; target: at "
            "least 50% of native throughput)",
}


@dataclass(frozen=True)
class Target:
    """Upper bounds on a measurement: ratios to native, to strace and to the floor
    measured beside it (per call), or seconds."""
    native: float | None = None
    strace: float | None = None
    seconds: float | None = None
    floor: float | None = None
    #: The ratio to native is taken with each side's start-up (group 4) subtracted.
    less_startup: bool = False

    def __str__(self) -> str:
        parts = []
        if self.native is not None:
            parts.append(f"≤{self.native:.3g}x native" + (" -start-up" if self.less_startup
                                                          else ""))
        if self.strace is not None:
            parts.append(f"≤{self.strace:.3g}x strace")
        if self.seconds is not None:
            parts.append(f"≤{self.seconds * 1e3:.0f} ms")
        if self.floor is not None:
            parts.append(f"≤{self.floor:.3g}x floor")
        return ", ".join(parts)


PER_CALL_TARGET = Target(native=3.5, strace=0.15, floor=1.3)
#: The per-call floor's way (``native/ring_floor.c``).
RING_FLOOR = "ring round trip + getppid (floor)"
#: libc's clock_gettime through the guest's vDSO: native code reading the host's data.
CLOCK_TARGET = Target(native=2)
#: The file the per-call pread rows read 4 KiB at a time (cached after the first pass).
FILE_READ_SPAN = 16 * MIB
CPU_TARGET = Target(native=round(1 / 0.97, 3))
#: find and ls -lR, under run and under the sandbox alike (issue 13).
HEAVY_TARGET = Target(native=3, strace=0.2, less_startup=True)
#: dd bs=512, to /dev/null and to a file (issue 13).
RUN_DD_TARGET = Target(native=2, strace=0.2, less_startup=True)
SANDBOX_DD_TARGET = Target(native=3, strace=0.2, less_startup=True)
#: ``ls -lR`` walks this tree (issue 13's workload), and reads these beside it to
#: name owners and show times (the sandbox must allow them for the same output).
LS_TREE = "/usr/share/doc"
LS_READS = (LS_TREE, "/etc/passwd", "/etc/group", "/etc/localtime", "/usr/share/zoneinfo")
#: Half native throughput: at most twice native's time for the same bytes.
PIPE_TARGET = Target(native=2)
PIPE_BLOCK = 64 * 1024
#: The file the dd-to-a-file benchmark writes (in the inputs' ``out`` directory).
DD_OUTPUT = "dd.out"


@dataclass(frozen=True)
class Way:
    """One way of running a benchmark's program."""
    name: str
    prefix: list[str] | None            # None: cannot run here (strace missing)
    env: dict[str, str] = field(default_factory=dict)
    target: Target | None = None
    iterations: int = 0                 # per-call group: calls in one timed loop


@dataclass
class Row:
    group: str
    benchmark: str
    way: str
    unit: str                           # "us" (per call) or "s"
    value: float | None                 # median
    samples: list[float]
    native: float | None = None         # the same benchmark's native median
    strace: float | None = None         # ... and under strace -f
    target: Target | None = None
    error: str | None = None
    startup: float | None = None        # this way's start-up and teardown (group 4)
    native_startup: float | None = None
    bytes_moved: int | None = None      # the pipe group: bytes each sample moved
    floor: float | None = None          # the per-call floor's median (same run)

    @property
    def ratio_native(self) -> float | None:
        return self.value / self.native if self.value and self.native else None

    @property
    def ratio_native_less_startup(self) -> float | None:
        """The ratio to native with each side's start-up subtracted."""
        if not (self.value and self.native and self.startup is not None
                and self.native_startup is not None):
            return None
        native = self.native - self.native_startup
        return (self.value - self.startup) / native if native > 0 else None

    @property
    def ratio_strace(self) -> float | None:
        return self.value / self.strace if self.value and self.strace else None

    @property
    def ratio_floor(self) -> float | None:
        return self.value / self.floor if self.value and self.floor else None

    @property
    def holds(self) -> bool | None:
        """Whether the target holds (None: no target)."""
        if self.target is None:
            return None
        if self.error or self.value is None:
            return False
        checks = []
        if self.target.native is not None:
            ratio = (self.ratio_native_less_startup if self.target.less_startup
                     else self.ratio_native)
            checks.append(ratio is not None and ratio <= self.target.native)
        if self.target.strace is not None and self.strace is not None:
            checks.append(self.ratio_strace is not None
                          and self.ratio_strace <= self.target.strace)
        if self.target.seconds is not None:
            checks.append(self.value <= self.target.seconds)
        if self.target.floor is not None:
            checks.append(self.ratio_floor is not None
                          and self.ratio_floor <= self.target.floor)
        return all(checks)

    def as_dict(self) -> dict:
        return {"group": self.group, "benchmark": self.benchmark, "way": self.way,
                "unit": self.unit, "value": self.value, "samples": self.samples,
                "native": self.native, "strace": self.strace,
                "ratio_native": self.ratio_native, "ratio_strace": self.ratio_strace,
                "startup": self.startup,
                "ratio_native_less_startup": self.ratio_native_less_startup,
                "floor": self.floor, "ratio_floor": self.ratio_floor,
                "target": str(self.target) if self.target else None,
                "holds": self.holds, "error": self.error}


@dataclass(frozen=True)
class Sizes:
    calls_native: int
    calls_strace: int
    calls_fast: int
    calls_slow: int
    sha: int
    bzip2: int
    kernel_mb: int
    kernel_steps_m: int
    dd: int
    files: int
    startup_samples: int
    pipe: int = 100 * MIB


FULL = Sizes(1_000_000, 20_000, 100_000, 3_000, 200 * MIB, 50 * MIB, 64, 25,
             100 * MIB, 20_000, 10)
QUICK = Sizes(20_000, 300, 3_000, 200, 8 * MIB, 2 * MIB, 16, 1, 4 * MIB, 1_000, 3,
              pipe=8 * MIB)
# The slow path's rows of the whole-program groups (--with-slow-path): scaled down,
# beside a native run at the same size.
SLOW_FULL = Sizes(0, 0, 0, 0, 10 * MIB, 5 * MIB, 64, 25, 5 * MIB, 2_000, 0)


def _environment(extra: dict[str, str]) -> dict[str, str]:
    return os.environ | extra


class _Runner:
    def __init__(self, directory: Path, samples: int, progress: Callable[[str], None]):
        self.directory = directory
        self.samples = samples
        self.progress = progress
        self.strace = strace_prefix()
        self.busybox = find_busybox("syscalls")

    def _sandbox(self, reads: list[str], writes: tuple[str, ...] = ()) -> list[str]:
        options = [option for path in reads for option in ("--allow-read", path)]
        options += [option for path in writes for option in ("--allow-write", path)]
        return [*DUNE_SANDBOX, *options, "--"]

    def ways(self, reads: list[str], strace: bool, slow: bool, fast: bool = True,
             run_target: Target | None = None,
             sandbox_target: Target | None = None,
             writes: tuple[str, ...] = ()) -> list[Way]:
        ways = [Way("native", [])]
        if strace:
            ways.append(Way("strace -f", self.strace))
        if fast:
            ways += [Way("kvmdune run", DUNE_RUN, FAST, run_target),
                     Way("kvmdune run" + UNPATCHED_NOTE, DUNE_RUN, UNPATCHED),
                     Way("kvmdune sandbox", self._sandbox(reads, writes), FAST,
                         sandbox_target)]
        if slow:
            ways += [Way("kvmdune run" + SLOW_NOTE, DUNE_RUN, SLOW),
                     Way("kvmdune sandbox" + SLOW_NOTE, self._sandbox(reads, writes), SLOW)]
        return ways

    def _rows(self, group: str, benchmark: str, unit: str, ways: list[Way],
              measure: Callable[[Way], tuple[float | None, str | None]],
              samples: int | None = None) -> list[Row]:
        """Measure every way `samples` times, the ways interleaved within each round
        so that drift on a shared machine hits them alike."""
        samples = samples or self.samples
        values: dict[str, list[float]] = {way.name: [] for way in ways}
        errors: dict[str, str | None] = {way.name: None for way in ways}
        for round_ in range(samples):
            for way in ways:
                if way.prefix is None or errors[way.name]:
                    continue
                self.progress(f"{benchmark}: {way.name} ({round_ + 1}/{samples})")
                value, error = measure(way)
                if error:
                    errors[way.name] = error
                else:
                    values[way.name].append(value)
        medians = {name: statistics.median(v) if v else None for name, v in values.items()}
        rows = []
        for way in ways:
            error = errors[way.name] or (None if way.prefix is not None else "not installed")
            rows.append(Row(group, benchmark, way.name, unit,
                            None if errors[way.name] else medians[way.name],
                            values[way.name], medians.get("native"), medians.get("strace -f"),
                            way.target, error))
        return rows

    # 1. per call
    def per_call(self, binary: Path, floor: Path, sizes: Sizes, slow: bool) -> list[Row]:
        counts = {"native": sizes.calls_native, "strace -f": sizes.calls_strace,
                  RING_FLOOR: sizes.calls_native}
        ways = self.ways([], strace=True, slow=slow, run_target=PER_CALL_TARGET,
                         sandbox_target=PER_CALL_TARGET) + [Way(RING_FLOOR, [])]

        def measure(way: Way) -> tuple[float | None, str | None]:
            iterations = counts.get(way.name, sizes.calls_slow if SLOW_NOTE in way.name
                                    else sizes.calls_fast)
            argv = ([str(floor), str(iterations)] if way.name == RING_FLOOR else
                    [*way.prefix, str(binary), "getppid", str(iterations), "none"])
            report = per_call_report(argv, env=_environment(way.env))
            if report is None:
                return None, "failed"
            if report.get("errors"):
                return None, f"{report['errors']} calls failed"
            return report["per_call_ns"] / 1e3, None

        rows = self._rows("per-call", "getppid", "us", ways, measure)
        ring_floor = rows[-1].value
        for row in rows:
            row.floor = ring_floor
        return (rows + [self._trap_floor(rows[0].value, rows[1].value)]
                + self.clock(binary, sizes) + self.file_reads(binary, sizes))

    def clock(self, binary: Path, sizes: Sizes) -> list[Row]:
        """libc's clock_gettime: through the guest's vDSO (linux/vdso.py: no system
        call, on software KVM) and without it, beside native (the host's vDSO)."""
        ways = [Way("native", []), Way("kvmdune run", DUNE_RUN, FAST, CLOCK_TARGET),
                Way("kvmdune run" + NO_VDSO_NOTE, DUNE_RUN, FAST | NO_VDSO)]

        def measure(way: Way) -> tuple[float | None, str | None]:
            report = per_call_report([*way.prefix, str(binary), "clock",
                                      str(sizes.calls_native), "none"], env=_environment(way.env))
            if report is None or report.get("errors"):
                return None, "failed"
            return report["per_call_ns"] / 1e3, None

        return self._rows("per-call", "clock_gettime", "us", ways, measure)

    def file_reads(self, binary: Path, sizes: Sizes) -> list[Row]:
        """A 4 KiB pread of a cached file, the data left alone and then used (a byte
        of each cache line read): what each of ``sha256sum``'s reads costs (group 2).
        Served natively, the read itself costs little more than Linux's; the data,
        copied in by the serving thread on the other core, is then pulled across to
        the guest's core when the program reads it."""
        path = write_random_file(str(self.directory / "pages"), FILE_READ_SPAN)
        ways = [Way("native", []), Way("kvmdune run", DUNE_RUN, FAST)]
        rows = []
        for case, benchmark in (("read-file", "pread of 4 KiB, data unused"),
                                ("read-file-used", "pread of 4 KiB, data used")):
            def measure(way: Way, case: str = case) -> tuple[float | None, str | None]:
                report = per_call_report([*way.prefix, str(binary), case,
                                          str(sizes.calls_fast), "none", path],
                                         env=_environment(way.env))
                if report is None or report.get("errors"):
                    return None, "failed"
                return report["per_call_ns"] / 1e3, None

            rows += self._rows("per-call", benchmark, "us", ways, measure)
        return rows

    def _trap_floor(self, native: float | None, strace: float | None) -> Row:
        """The ``syscall`` instruction alone, to an MSR_LSTAR stub that returns at once:
        the part of every fast-path call that no server can remove (it is a world
        switch on software KVM, a few hundred cycles on VT-x/SVM)."""
        from ..machine.probe import measure_syscall_trap_us

        samples = []
        for round_ in range(self.samples):
            self.progress(f"getppid: the syscall instruction alone ({round_ + 1}/{self.samples})")
            samples.append(measure_syscall_trap_us())
        return Row("per-call", "getppid", "`syscall` to a returning stub (floor)", "us",
                   statistics.median(samples), samples, native, strace)

    # 2 and 3: whole programs
    def program(self, group: str, benchmark: str, argv: list[str], ways: list[Way],
                samples: int | None = None) -> list[Row]:
        """Time `argv` each way; its standard output (to a file) must equal native's."""
        outputs: dict[str, str] = {}
        out_path = self.directory / "stdout"

        def measure(way: Way) -> tuple[float | None, str | None]:
            with open(out_path, "wb") as out:
                elapsed, status = time_command([*way.prefix, *argv], env=_environment(way.env),
                                               stdout=out, timeout=TIMEOUT)
            if status != 0:
                return None, f"exit status {status}"
            digest = hashlib.sha256(out_path.read_bytes()).hexdigest()
            reference = outputs.setdefault("native", digest) if way.name == "native" \
                else outputs.get("native")
            if reference is not None and digest != reference:
                return None, "output differs from native"
            return elapsed, None

        return self._rows(group, benchmark, "s", ways, measure, samples)


    # 6. a pipe between two guest processes
    def pipe(self, size: int) -> list[Row]:
        """``size`` bytes from one busybox ``dd`` to another through a pipe, 64 KiB
        per write, each way (the slow path's beside the fast one's: issue 13's
        before and after); each sample is the pipeline's time less that of the same
        pipeline moving nothing, measured just before it."""
        ways = [Way("native", []),
                Way("kvmdune run", DUNE_RUN, FAST, PIPE_TARGET),
                Way("kvmdune sandbox", self._sandbox([]), FAST, PIPE_TARGET),
                Way("kvmdune run" + SLOW_NOTE, DUNE_RUN, SLOW)]

        def measure(way: Way) -> tuple[float | None, str | None]:
            elapsed = []
            for blocks in (0, size // PIPE_BLOCK):
                seconds, status = time_command([*way.prefix, *self._pipeline(blocks)],
                                               env=_environment(way.env), timeout=TIMEOUT)
                if status != 0:
                    return None, f"exit status {status}"
                elapsed.append(seconds)
            return max(elapsed[1] - elapsed[0], 1e-6), None

        rows = self._rows("pipe", f"{_size(size)} through a pipe, 64 KiB writes", "s",
                          ways, measure)
        for row in rows:
            row.bytes_moved = size
        return rows

    def _pipeline(self, blocks: int) -> list[str]:
        dd = f"{self.busybox} dd"
        return [self.busybox, "sh", "-c",
                f"{dd} if=/dev/zero bs={PIPE_BLOCK} count={blocks} 2>/dev/null"
                f" | {dd} of=/dev/null bs={PIPE_BLOCK} 2>/dev/null"]


def prepare_inputs(directory: Path, sizes: Sizes, tag: str,
                   progress: Callable[[str], None]) -> dict[str, str]:
    assert sizes.sha >= sizes.dd
    progress(f"creating input files{tag}")
    data = directory / ("data-slow" if tag else "data")
    data.mkdir()
    inputs = {
        "random": write_random_file(str(data / "random.bin"), sizes.sha),  # dd reads a part
        "text": write_text_file(str(data / "text.txt"), sizes.bzip2),
        "tree": make_tree(str(data / "tree"), sizes.files),
        "dir": str(data),
        "out": str(data / "out"),       # where dd writes (a sandbox may write only there)
    }
    os.mkdir(inputs["out"])
    subprocess.run(["chmod", "-R", "a+rX", str(directory)], check=True)
    os.chmod(inputs["out"], 0o777)
    # Made here, writable by all: every way truncates it (a sandbox dropped to
    # `nobody` could not open a file another way's run created).
    target = Path(inputs["out"]) / DD_OUTPUT
    target.touch()
    target.chmod(0o666)
    return inputs


def _size(size: int) -> str:
    return f"{size // MIB} MB"


def run_syscalls_bench(samples: int = 3, quick: bool = False, with_slow_path: bool = False,
                       progress: Callable[[str], None] = lambda text: None,
                       groups: set[str] | None = None) -> list[Row]:
    """Every group's rows (only ``groups``' when given: names of GROUPS; start-up
    is measured whenever the system-call heavy group is, which subtracts it)."""
    sizes = QUICK if quick else FULL
    wanted = set(GROUPS) if groups is None else groups
    if not wanted <= set(GROUPS):
        raise ValueError(f"unknown groups: {', '.join(sorted(wanted - set(GROUPS)))}")
    slow_sizes = QUICK if quick else SLOW_FULL
    directory = scratch_directory("kvmdune-bench-syscalls-")
    try:
        runner = _Runner(directory, samples, progress)
        progress("building the C programs (gcc -static)")
        costs = build(directory, NATIVE_DIR / "syscall_costs.c")
        ring_floor = build(directory, NATIVE_DIR / "ring_floor.c")
        kernel = build(directory, NATIVE_DIR / "cpu_kernel.c")
        busybox = runner.busybox
        rows = (runner.per_call(costs, ring_floor, sizes, slow=True)
                if "per-call" in wanted else [])

        size_sets = [(sizes, "", False)] if wanted & {"cpu", "syscall-heavy"} else []
        if with_slow_path and size_sets:
            size_sets.append((slow_sizes, " (slow-path set)", True))
        cpu_rows, heavy_rows = [], []
        for set_sizes, tag, slow in size_sets:
            inputs = prepare_inputs(directory, set_sizes, tag, progress)
            reads = [inputs["dir"]]
            cpu_ways = runner.ways(reads, strace=False, slow=slow, fast=not slow,
                                   run_target=CPU_TARGET, sandbox_target=CPU_TARGET)
            cpu = [
                (f"sha256sum of {_size(set_sizes.sha)}",
                 [busybox, "sha256sum", inputs["random"]]),
                (f"bzip2 -9 of {_size(set_sizes.bzip2)}", [busybox, "bzip2", "-9", "-c",
                                                           inputs["text"]]),
                (f"C int/memory kernel, {set_sizes.kernel_mb} MB",
                 [str(kernel), str(set_sizes.kernel_mb), str(set_sizes.kernel_steps_m)]),
            ]
            for name, argv in cpu if "cpu" in wanted else []:
                cpu_rows += runner.program("cpu", name + tag, argv, cpu_ways)
            dd = [busybox, "dd", f"if={inputs['random']}", "bs=512",
                  f"count={set_sizes.dd // 512}"]
            heavy = [
                (f"dd bs=512 of {_size(set_sizes.dd)} to /dev/null", [*dd, "of=/dev/null"],
                 reads),
                (f"dd bs=512 of {_size(set_sizes.dd)} to a file",
                 [*dd, f"of={inputs['out']}/{DD_OUTPUT}"], reads),
                (f"find over {set_sizes.files} files",
                 [busybox, "find", inputs["tree"], "-name", "f05*"], reads),
                (f"ls -lR of {LS_TREE}", [busybox, "ls", "-lR", LS_TREE],
                 [path for path in LS_READS if os.path.exists(path)]),
            ]
            for name, argv, heavy_reads in heavy if "syscall-heavy" in wanted else []:
                to_file = name.endswith("to a file")
                is_dd = name.startswith("dd ")
                heavy_ways = runner.ways(heavy_reads, strace=not slow, slow=slow,
                                         fast=not slow,
                                         run_target=RUN_DD_TARGET if is_dd else HEAVY_TARGET,
                                         sandbox_target=SANDBOX_DD_TARGET if is_dd
                                         else HEAVY_TARGET,
                                         writes=(inputs["out"],) if to_file else ())
                heavy_rows += runner.program("syscall-heavy", name + tag, argv, heavy_ways)
        rows += cpu_rows + heavy_rows

        if wanted & {"startup", "syscall-heavy"}:
            true = shutil.which("true") or "/bin/true"
            startup_ways = runner.ways([], strace=False, slow=with_slow_path)
            startup = runner.program("startup", f"{true}", [true], startup_ways,
                                     samples=max(samples, sizes.startup_samples))
            _subtract_startup(heavy_rows, startup)
            rows += startup
        if "pipe" in wanted:
            rows += runner.pipe(sizes.pipe)
        return rows
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _subtract_startup(rows: list[Row], startup: list[Row]) -> None:
    """Give each row the start-up of its way (and native's), measured in this run."""
    by_way = {row.way: row.value for row in startup}
    for row in rows:
        row.startup = by_way.get(row.way)
        row.native_startup = by_way.get("native")


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if unit == "us" and value >= 100 else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}x" if value >= 0.995 or value == 1 else f"{value:.3f}x"


def site_shares() -> str:
    """Issue 13's share of system-call sites the loader patches, per binary."""
    from ..linux import sitepatch

    lines = ["5. system-call sites patched by the loader (issue 13)"]
    for path in SITE_SHARE_FILES:
        real = os.path.realpath(path)
        if not os.path.exists(real):
            continue
        analysis = sitepatch.analyze(real)
        patched = len(analysis.patchable)
        share = f"{patched / analysis.syscalls:.0%}" if analysis.syscalls else "-"
        lines.append(f"{path:<32} {patched:>4} of {analysis.syscalls:>4} `syscall` sites "
                     f"({share})")
    return "\n".join(lines)


def _throughput(row: Row) -> str:
    """A pipe row's median as MB/s."""
    return f"{row.bytes_moved / MIB / row.value:.0f} MB/s"


def format_tables(rows: list[Row], samples: int) -> str:
    """One table per group: each way's median beside native (and strace), the target
    and whether it holds."""
    out = []
    for group, title in GROUPS.items():
        members = [row for row in rows if row.group == group]
        if not members:
            continue
        unit = members[0].unit
        counts = sorted({len(row.samples) for row in members if row.samples})
        how = f"median of {counts[-1] if counts else samples}"
        bench_w = max(len("benchmark"), *(len(row.benchmark) for row in members))
        way_w = max(len("way"), *(len(row.way) for row in members))
        target_w = max(len("target"), *(len(str(row.target or "")) for row in members))
        value_label = "µs/call" if unit == "us" else "time s"
        header = (f"{'benchmark':<{bench_w}}  {'way':<{way_w}}  {value_label:>10}  "
                  f"{'x native':>9}  {'-start-up':>9}  {'x strace':>9}  "
                  f"{'target':<{target_w}}  holds")
        lines = [f"{title}, {how}", header, "-" * len(header)]
        previous = None
        for row in members:
            name = row.benchmark if row.benchmark != previous else ""
            previous = row.benchmark
            if row.error:
                value, native, less, strace = row.error, "", "", ""
            else:
                value = _cell(row.value, unit)
                native = _ratio(row.ratio_native) if row.way != "native" else ""
                less = _ratio(row.ratio_native_less_startup) if row.way != "native" else ""
                strace = (_ratio(row.ratio_strace) if row.way not in ("native", "strace -f")
                          else "")
            holds = {None: "", True: "ok", False: "MISSED"}[row.holds]
            lines.append(f"{name:<{bench_w}}  {row.way:<{way_w}}  {value:>10}  {native:>9}  "
                         f"{less:>9}  {strace:>9}  {str(row.target or ''):<{target_w}}  "
                         f"{holds}".rstrip())
        if group == "cpu":
            lines.append("(whole runs timed from outside: start-up and teardown included, "
                         "see group 4)")
        if group == "per-call":
            lines += [f"{row.way}: {_ratio(row.ratio_floor)} its floor ({RING_FLOOR})"
                      for row in members if row.target is not None and row.ratio_floor]
        if group == "pipe":
            lines += [f"{row.way}: {_throughput(row)}" for row in members
                      if row.value and row.bytes_moved]
        out.append("\n".join(lines))
    missed = sum(row.holds is False for row in rows)
    checked = sum(row.holds is not None for row in rows)
    out.append(site_shares())
    out.append(f"targets: {checked - missed} of {checked} hold ({missed} missed)")
    return "\n\n".join(out)
