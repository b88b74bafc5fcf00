"""``kvmdune bench load``: the fast system-call path against the slow path on a
loaded machine (issue 13: "never slower than the slow path, under any load").

1, 2 and 4 copies of a system-call-heavy guest run at once under ``kvmdune run``,
with and without a CPU hog beside them (one busy-looping native process per core,
started and killed here), for each workload:

- a checked ``getppid`` loop (``native/syscall_costs.c``, static; its report must
  show no failed call);
- busybox ``dd bs=512`` of a file to /dev/null;
- busybox ``find`` over a generated tree (its output must equal the native run's);
- busybox ``ls -lR`` of /usr/share/doc (likewise);
- a pipe between two busybox ``dd``s in the guest, 64 KiB per write;

each on the fast path (call sites patched: the default), the fast path with
``--no-patch`` (KVMDUNE_PATCH_SITES=0) and the slow path (KVMDUNE_FAST_SYSCALLS=0).
Every configuration's wall time is the time until the last copy ends; the start-up
and teardown of the same number of ``kvmdune run -- true`` under the same load is
measured in the same round and subtracted (reported beside). The ways run
interleaved within each round, so that drift on a shared machine hits them alike;
ratios to the slow path are what to compare. A configuration where a fast way is
slower than the slow path is flagged. Guests start in process
(KVMDUNE_STARTUP=inprocess), so the start-up is not the resident server's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .run import MIB, find_busybox, make_tree, wait_for_exit, write_random_file
from .sandbox import build, scratch_directory

NATIVE_DIR = Path(__file__).parent / "native"
DUNE_RUN = [sys.executable, "-m", "kvmdune", "run", "--"]
IN_PROCESS = {"KVMDUNE_STARTUP": "inprocess"}
#: A configuration whose guests have not all ended by then is reported as failed.
TIMEOUT_S = 900.0
CONCURRENCY = (1, 2, 4)
#: Fast counts as slower than slow only past this margin (a shared machine's noise).
SLOWER_MARGIN = 1.0


@dataclass(frozen=True)
class Way:
    """One way of running a guest."""
    name: str
    env: dict[str, str]
    dune: bool = True


NATIVE = Way("native", {}, dune=False)
FAST = Way("fast", {"KVMDUNE_FAST_SYSCALLS": "1", "KVMDUNE_PATCH_SITES": "1"})
FAST_UNPATCHED = Way("fast --no-patch", {"KVMDUNE_FAST_SYSCALLS": "1",
                                         "KVMDUNE_PATCH_SITES": "0"})
SLOW = Way("slow", {"KVMDUNE_FAST_SYSCALLS": "0"})
WAYS = (NATIVE, FAST, FAST_UNPATCHED, SLOW)
FAST_WAYS = (FAST, FAST_UNPATCHED)


@dataclass(frozen=True)
class Sizes:
    getppid_calls: int
    dd_bytes: int
    files: int
    pipe_bytes: int


FULL = Sizes(getppid_calls=20_000, dd_bytes=8 * MIB, files=20_000, pipe_bytes=32 * MIB)
QUICK = Sizes(getppid_calls=5_000, dd_bytes=2 * MIB, files=5_000, pipe_bytes=4 * MIB)
#: What ``ls -lR`` lists (issue 13's workload), and the pipe's write size.
LS_TREE = "/usr/share/doc"
PIPE_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Workload:
    name: str
    argv: list[str]
    check: Callable[[bytes], str | None]    # a guest's stdout -> None, or what is wrong


@dataclass
class Row:
    """One workload at one concurrency and load, every way's medians."""
    workload: str
    guests: int
    hog: bool
    wall: dict[str, float | None] = field(default_factory=dict)      # way -> median s
    startup: dict[str, float | None] = field(default_factory=dict)   # way -> median s
    errors: dict[str, str] = field(default_factory=dict)

    def net(self, way: str) -> float | None:
        """Wall time less the same load's start-up (never below zero)."""
        wall, startup = self.wall.get(way), self.startup.get(way)
        if wall is None:
            return None
        return max(wall - (startup or 0.0), 0.0)

    def ratio(self, way: str) -> float | None:
        """``way``'s net time over the slow path's."""
        mine, slow = self.net(way), self.net(SLOW.name)
        return mine / slow if mine is not None and slow else None

    def slower(self, way: str) -> bool:
        ratio = self.ratio(way)
        return ratio is not None and ratio > SLOWER_MARGIN

    def as_dict(self) -> dict:
        return {"workload": self.workload, "guests": self.guests, "hog": self.hog,
                "wall": self.wall, "startup": self.startup, "errors": self.errors,
                "ratio_to_slow": {way.name: self.ratio(way.name) for way in FAST_WAYS},
                "fast_slower": [way.name for way in FAST_WAYS if self.slower(way.name)]}


# -- the background load ------------------------------------------------------------

def _cores() -> int:
    return len(os.sched_getaffinity(0))


@contextlib.contextmanager
def cpu_hog(on: bool) -> Iterator[None]:
    """One busy-looping native process per core (none when ``on`` is false), killed
    on the way out."""
    hogs = []
    try:
        if on:
            for _ in range(_cores()):
                hogs.append(subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"],
                                             start_new_session=True))
            time.sleep(0.2)         # they are running before the first guest starts
        yield
    finally:
        for hog in hogs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hog.pid, signal.SIGKILL)
            hog.wait()


# -- one batch of concurrent guests ---------------------------------------------------

def run_batch(argv: list[str], copies: int, env: dict[str, str], directory: Path
              ) -> tuple[float, list[bytes], list[int]]:
    """Start ``copies`` of ``argv`` at once; wall time until the last ends, each one's
    standard output and exit status."""
    outputs = [directory / f"out{i}" for i in range(copies)]
    files = [open(path, "wb") for path in outputs]
    try:
        started = time.perf_counter()
        children = [subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, env=env)
                    for out in files]
        deadline = started + TIMEOUT_S
        statuses = []
        for child in children:
            try:
                wait_for_exit(child, max(deadline - time.perf_counter(), 0.1))
            except subprocess.TimeoutExpired:
                pass                        # killed: its status says so
            statuses.append(child.wait())
        elapsed = time.perf_counter() - started
    finally:
        for out in files:
            out.close()
    return elapsed, [path.read_bytes() for path in outputs], statuses


def _environment(way: Way) -> dict[str, str]:
    return os.environ | IN_PROCESS | way.env


def _argv(way: Way, argv: list[str]) -> list[str]:
    return [*DUNE_RUN, *argv] if way.dune else argv


# -- the workloads --------------------------------------------------------------------

def _getppid_checked(output: bytes) -> str | None:
    for line in output.decode(errors="replace").splitlines():
        if line.startswith("{"):
            errors = json.loads(line).get("errors")
            return f"{errors} calls failed" if errors else None
    return "no report"


def _same_as(reference: bytes) -> Callable[[bytes], str | None]:
    digest = hashlib.sha256(reference).hexdigest()
    return lambda output: (None if hashlib.sha256(output).hexdigest() == digest
                           else "output differs from native")


def prepare_workloads(directory: Path, sizes: Sizes,
                      progress: Callable[[str], None]) -> list[Workload]:
    progress("building the getppid loop (gcc -static), creating the inputs")
    costs = build(directory, NATIVE_DIR / "syscall_costs.c")
    busybox = find_busybox("load")
    data = directory / "data"
    data.mkdir()
    source = write_random_file(str(data / "random.bin"), sizes.dd_bytes)
    tree = make_tree(str(data / "tree"), sizes.files)
    subprocess.run(["chmod", "-R", "a+rX", str(directory)], check=True)
    find = [busybox, "find", tree, "-name", "f05*"]
    reference = subprocess.run(find, capture_output=True, check=True).stdout
    listing = [busybox, "ls", "-lR", LS_TREE]
    listed = subprocess.run(listing, capture_output=True, check=True).stdout
    blocks = sizes.pipe_bytes // PIPE_BLOCK
    pipe = [busybox, "sh", "-c",
            f"{busybox} dd if=/dev/zero bs={PIPE_BLOCK} count={blocks} 2>/dev/null"
            f" | {busybox} dd of=/dev/null bs={PIPE_BLOCK} 2>/dev/null"]
    return [
        Workload(f"getppid x{sizes.getppid_calls}",
                 [str(costs), "getppid", str(sizes.getppid_calls), "none"], _getppid_checked),
        Workload(f"dd bs=512 of {sizes.dd_bytes // MIB} MB",
                 [busybox, "dd", f"if={source}", "of=/dev/null", "bs=512"],
                 lambda output: None),
        Workload(f"find over {sizes.files} files", find, _same_as(reference)),
        Workload(f"ls -lR of {LS_TREE}", listing, _same_as(listed)),
        Workload(f"pipe of {sizes.pipe_bytes // MIB} MB, 64 KiB writes", pipe,
                 lambda output: None),
    ]


# -- measuring --------------------------------------------------------------------------

def measure_config(workload: Workload, guests: int, hog: bool, samples: int,
                   directory: Path, progress: Callable[[str], None]) -> Row:
    """Every way ``samples`` times at one concurrency and load, interleaved, each
    round with the start-up of as many ``true`` guests beside it."""
    row = Row(workload.name, guests, hog)
    walls: dict[str, list[float]] = {way.name: [] for way in WAYS}
    startups: dict[str, list[float]] = {way.name: [] for way in WAYS if way.dune}
    true = shutil.which("true") or "/bin/true"
    with cpu_hog(hog):
        for round_ in range(samples):
            for way in WAYS:
                if way.name in row.errors:
                    continue
                progress(f"{workload.name}, {guests} guest(s), "
                         f"{'CPU hog' if hog else 'idle'}: {way.name} ({round_ + 1}/{samples})")
                env = _environment(way)
                if way.dune:
                    elapsed, _, statuses = run_batch(_argv(way, [true]), guests, env, directory)
                    if any(statuses):
                        row.errors[way.name] = f"`true` exit status {max(statuses)}"
                        continue
                    startups[way.name].append(elapsed)
                elapsed, outputs, statuses = run_batch(_argv(way, workload.argv), guests, env,
                                                       directory)
                problem = next((f"exit status {status}" for status in statuses if status), None)
                problem = problem or next(filter(None, map(workload.check, outputs)), None)
                if problem:
                    row.errors[way.name] = problem
                    continue
                walls[way.name].append(elapsed)
    for way in WAYS:
        if way.name not in row.errors:
            row.wall[way.name] = statistics.median(walls[way.name]) if walls[way.name] else None
            if way.dune:
                row.startup[way.name] = (statistics.median(startups[way.name])
                                         if startups[way.name] else None)
    return row


def run_load_bench(samples: int = 3, quick: bool = False,
                   progress: Callable[[str], None] = lambda text: None,
                   guests: tuple[int, ...] = CONCURRENCY,
                   hogs: tuple[bool, ...] = (False, True)) -> list[Row]:
    directory = scratch_directory("kvmdune-bench-load-")
    try:
        workloads = prepare_workloads(directory, QUICK if quick else FULL, progress)
        return [measure_config(workload, count, hog, samples, directory, progress)
                for workload in workloads for hog in hogs for count in guests]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- the table ----------------------------------------------------------------------------

def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def format_table(rows: list[Row], samples: int) -> str:
    """One line per workload, concurrency and load: each way's wall time less the
    start-up of as many guests (start-up in brackets), the fast ways over the slow
    path, and SLOWER where a fast way lost to it."""
    dune_ways = [way for way in WAYS if way.dune]
    name_w = max(len("workload"), *(len(row.workload) for row in rows)) if rows else 8
    cells = [f"{way.name:>22}" for way in WAYS]
    ratios = [f"{way.name + '/slow':>20}" for way in FAST_WAYS]
    header = (f"{'workload':<{name_w}}  guests  load   " + "  ".join(cells) + "  "
              + "  ".join(ratios) + "  verdict")
    lines = [f"wall time s less start-up [start-up s], median of {samples}; "
             f"{_cores()} cores; load: idle, or a busy loop per core",
             header, "-" * len(header)]
    for row in rows:
        values = []
        for way in WAYS:
            if way.name in row.errors:
                values.append(f"{row.errors[way.name][:22]:>22}")
            elif way in dune_ways:
                values.append(f"{_seconds(row.net(way.name)):>9} [{_seconds(row.startup.get(way.name)):>5}]"
                              .rjust(22))
            else:
                values.append(f"{_seconds(row.wall.get(way.name)):>22}")
        flagged = [way.name for way in FAST_WAYS if row.slower(way.name)]
        verdict = ("SLOWER: " + ", ".join(flagged)) if flagged else (
            "ok" if all(row.ratio(way.name) is not None for way in FAST_WAYS) else "")
        lines.append(f"{row.workload:<{name_w}}  {row.guests:>6}  {'hog' if row.hog else 'idle':<5}  "
                     + "  ".join(values) + "  "
                     + "  ".join(f"{_ratio(row.ratio(way.name)):>20}" for way in FAST_WAYS)
                     + f"  {verdict}")
    flagged = sum(any(row.slower(way.name) for way in FAST_WAYS) for row in rows)
    lines.append(f"fast slower than slow in {flagged} of {len(rows)} configurations")
    return "\n".join(lines)


__all__ = ["Row", "format_table", "run_load_bench"]
