"""Working-set size over time: ``kvmdune wss``'s samples (accessed and dirty bits, read
by the VMM at event boundaries) beside the way Linux users estimate it, and what
sampling costs each.

Linux's way, from outside the running program: every interval, read ``Referenced:``
from /proc/PID/smaps_rollup (pages accessed since the last clear), then write ``1``
to /proc/PID/clear_refs. The pages *written* need soft-dirty bits (clear_refs 4 and
pagemap bit 55), which this kernel does not have, so natively that column is n/a.

Under kvmdune the same questions are answered from the guest's page-table bits
(kvmdune.linux.working_set). Clearing an accessed bit there needs an invalidation
(software KVM: a host mprotect pair over the touched frames; its next touch then
faults into KVM again), so sampling costs more than natively, where the MMU sets a
cleared A bit again on its own. Both overheads are measured the same way: the
program's elapsed time watched and alone (its own clock when it prints
``total_ms``, as native/wss_phases.c does; else the wall time).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from .programs import DUNE_RUN, ProgramError, build

PAGE_KIB = 4
PHASES_SOURCE = "wss_phases.c"
#: The phases of ``bench wss`` (READ:WRITTEN:PASSES): about 0.6 s, 0.45 s and 0.3 s
#: natively here.
PHASES = ("2048:512:60000", "8192:4096:8000", "1024:0:100000")
QUICK_PHASES = ("512:128:40000", "2048:1024:4000", "256:0:80000")
RUN_TIMEOUT_S = 1200.0


@dataclass(frozen=True)
class Sample:
    """One sample of either method (``written`` None where it cannot be known)."""

    time_s: float
    touched: int
    written: int | None
    cost_s: float


@dataclass(frozen=True)
class Watch:
    """One run of a program: its samples (none when not watched), its output and
    how long it took."""

    samples: list[Sample]
    stdout: str
    status: int
    wall_s: float

    @property
    def elapsed_s(self) -> float:
        """The program's own total when it prints one (``total_ms``), else the wall time."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                try:
                    total = json.loads(line).get("total_ms")
                except (json.JSONDecodeError, AttributeError):
                    total = None
                if isinstance(total, (int, float)):
                    return total / 1000
        return self.wall_s


# -- Linux's way: clear_refs 1 and smaps_rollup's Referenced, from outside -------------

def referenced_pages(pid: int) -> int:
    """Pages of ``pid`` accessed since its last clear_refs (smaps_rollup, kB)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Referenced:"):
                return int(line.split()[1]) // PAGE_KIB
    raise ProgramError(f"/proc/{pid}/smaps_rollup has no Referenced line")


def clear_referenced(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("1")


def watch_natively(argv: Sequence[str], interval: float) -> Watch:
    """Run ``argv`` natively, sampling it from this process every ``interval`` s."""
    # Its output goes to a file, read at the end: a pipe nobody reads could fill up.
    output = tempfile.TemporaryFile("w+")
    started = time.monotonic()
    child = subprocess.Popen(list(argv), stdout=output, text=True)
    samples = []
    next_at = started + interval
    while True:
        try:            # waiting, not sleeping: its exit ends the wait (and the wall time)
            child.wait(timeout=max(next_at - time.monotonic(), 0))
            break
        except subprocess.TimeoutExpired:
            pass
        next_at += interval
        before = time.monotonic()
        try:
            touched = referenced_pages(child.pid)
            clear_referenced(child.pid)
        except (FileNotFoundError, ProcessLookupError):
            break                          # it exited between poll and read
        except ProgramError:
            if child.poll() is not None:
                break                      # a zombie's rollup is empty
            raise
        after = time.monotonic()
        samples.append(Sample(after - started, touched, None, after - before))
    child.wait(timeout=RUN_TIMEOUT_S)
    wall = time.monotonic() - started
    with output:
        output.seek(0)
        stdout = output.read()
    return Watch(samples, stdout, child.returncode, wall)


# -- kvmdune's way: `kvmdune wss` ------------------------------------------------------------

def wss_command(argv: Sequence[str], interval: float, output: Path) -> list[str]:
    return [sys.executable, "-m", "kvmdune", "wss", "--interval", f"{interval * 1000:g}",
            "--json", "--output", str(output), "--", *argv]


def watch_under_kvmdune(argv: Sequence[str], interval: float) -> Watch:
    """Run ``argv`` under ``kvmdune wss`` (a process of its own, as the native run)."""
    with tempfile.TemporaryDirectory(prefix="kvmdune-wss-") as scratch:
        report = Path(scratch) / "wss.json"
        started = time.monotonic()
        result = subprocess.run(wss_command(argv, interval, report), capture_output=True,
                                text=True, timeout=RUN_TIMEOUT_S)
        wall = time.monotonic() - started
        if not report.exists():
            raise ProgramError(f"kvmdune wss -- {' '.join(argv)} wrote no report "
                               f"(status {result.returncode}): {result.stderr[-2000:]}")
        data = json.loads(report.read_text())
    samples = [Sample(**sample) for sample in data["samples"]]
    return Watch(samples, result.stdout, result.returncode, wall)


def time_alone(argv: Sequence[str], dune: bool) -> Watch:
    """Run ``argv`` unwatched, natively or under ``kvmdune run``."""
    command = [*DUNE_RUN, *argv] if dune else list(argv)
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return Watch([], result.stdout, result.returncode, time.monotonic() - started)


# -- the comparison ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Side:
    """One method over the runs: medians of the program's time alone and watched,
    the cost of one sample, and the samples of the watched run of median time."""

    name: str
    alone_s: float
    watched_s: float
    sample_cost_mean_ms: float
    sample_cost_max_ms: float
    samples: list[Sample]
    stdout: str

    @property
    def overhead(self) -> float:
        return self.watched_s / self.alone_s if self.alone_s else float("nan")

    def as_dict(self) -> dict:
        return asdict(self) | {"overhead": self.overhead}


def _side(name: str, alone: list[Watch], watched: list[Watch]) -> Side:
    typical = sorted(watched, key=lambda watch: watch.elapsed_s)[len(watched) // 2]
    costs = [sample.cost_s * 1000 for watch in watched for sample in watch.samples]
    return Side(name=name,
                alone_s=statistics.median(watch.elapsed_s for watch in alone),
                watched_s=statistics.median(watch.elapsed_s for watch in watched),
                sample_cost_mean_ms=statistics.mean(costs) if costs else 0.0,
                sample_cost_max_ms=max(costs, default=0.0),
                samples=typical.samples, stdout=typical.stdout)


def _checked(watch: Watch, what: str) -> Watch:
    if watch.status != 0:
        raise ProgramError(f"{what} exited with status {watch.status}")
    return watch


def compare(argv: Sequence[str], interval: float, runs: int = 1,
            progress: Callable[[str], None] = lambda text: None) -> tuple[Side, Side]:
    """The native method and kvmdune wss on the same program, ``runs`` times each."""
    native_alone, native_watched, dune_alone, dune_watched = [], [], [], []
    for run in range(1, runs + 1):
        progress(f"run {run}/{runs}: natively, alone and watched (clear_refs + smaps)")
        native_alone.append(_checked(time_alone(argv, dune=False), "the native run"))
        native_watched.append(_checked(watch_natively(argv, interval), "the watched native run"))
        progress(f"run {run}/{runs}: under kvmdune, alone and watched (kvmdune wss)")
        dune_alone.append(_checked(time_alone(argv, dune=True), "the kvmdune run"))
        dune_watched.append(_checked(watch_under_kvmdune(argv, interval), "kvmdune wss"))
    return (_side("native: clear_refs 1 + smaps_rollup", native_alone, native_watched),
            _side("kvmdune wss: A/D bits", dune_alone, dune_watched))


def default_interval(quick: bool) -> float:
    """``bench wss``'s sampling interval (s): shorter for the short phases of --quick."""
    return 0.02 if quick else 0.1


def run_wss_bench(samples: int = 3, quick: bool = False, interval: float | None = None,
                  progress: Callable[[str], None] = lambda text: None
                  ) -> tuple[Side, Side, list[dict]]:
    """``bench wss``: native/wss_phases.c compared both ways; also its phases as it
    reported them in the typical kvmdune run."""
    interval = interval or default_interval(quick)
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-wss-") as scratch:
        binary = build(PHASES_SOURCE, Path(scratch))
        argv = [str(binary), *(QUICK_PHASES if quick else PHASES)]
        native, dune = compare(argv, interval, samples, progress)
    mine, theirs = _report(dune.stdout), _report(native.stdout)
    if mine["checksum"] != theirs["checksum"]:
        raise ProgramError("wss_phases computed different checksums natively and under "
                           "kvmdune")
    return native, dune, mine["phases"]


def _report(stdout: str) -> dict:
    """wss_phases's JSON line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ProgramError(f"wss_phases printed no report: {stdout[-500:]!r}")


# -- output ---------------------------------------------------------------------------------

def _mib(pages: int | None) -> str:
    return "n/a" if pages is None else f"{pages * PAGE_KIB / 1024:.1f}"


def format_samples(samples: list[Sample]) -> str:
    header = (f"{'time ms':>9} {'touched':>9} {'MiB':>7} {'written':>9} {'MiB':>7} "
              f"{'sample ms':>10}")
    lines = [header, "-" * len(header)]
    for sample in samples:
        written = "n/a" if sample.written is None else str(sample.written)
        lines.append(f"{sample.time_s * 1000:9.0f} {sample.touched:9d} "
                     f"{_mib(sample.touched):>7} {written:>9} {_mib(sample.written):>7} "
                     f"{sample.cost_s * 1000:10.2f}")
    return "\n".join(lines)


def format_comparison(native: Side, dune: Side, interval: float,
                      phases: list[dict] | None = None) -> str:
    lines = [f"working set every {interval * 1000:g} ms: pages touched (and written) "
             "since the previous sample", ""]
    if phases:
        lines.append("the program's phases (pages read / written; its own clock):")
        for phase in phases:
            lines.append(f"  {phase['read']:6d} / {phase['written']:6d}   "
                         f"{phase['start_ms']:8.0f} - {phase['end_ms']:8.0f} ms")
        lines.append("")
    header = (f"{'#':>3}  {'native ms':>9} {'touched':>8}   {'kvmdune ms':>10} {'touched':>8} "
              f"{'written':>8} {'sample ms':>9}")
    lines += [header, "-" * len(header)]
    for index in range(max(len(native.samples), len(dune.samples))):
        left = native.samples[index] if index < len(native.samples) else None
        right = dune.samples[index] if index < len(dune.samples) else None
        text = f"{index + 1:3d}  "
        text += (f"{left.time_s * 1000:9.0f} {left.touched:8d}   " if left
                 else f"{'':9} {'':8}   ")
        if right:
            text += (f"{right.time_s * 1000:10.0f} {right.touched:8d} {right.written:8d} "
                     f"{right.cost_s * 1000:9.2f}")
        lines.append(text.rstrip())
    lines.append("")
    header = f"{'':34} {'alone':>9} {'watched':>9} {'overhead':>9} {'per sample mean/max':>21}"
    lines += [header, "-" * len(header)]
    for side in (native, dune):
        lines.append(f"{side.name:<34} {side.alone_s:8.3f}s {side.watched_s:8.3f}s "
                     f"{side.overhead:8.2f}x {side.sample_cost_mean_ms:9.2f} / "
                     f"{side.sample_cost_max_ms:.2f} ms")
    lines.append("")
    lines += [
        "Natively the pages written are n/a: this kernel has no soft-dirty bits. Natively",
        "a page only read maps Linux's shared zero page, which Referenced never counts;",
        "and on this host, itself a guest on software-virtualised paging, accessed bits its",
        "kernel clears are not reliably set again (tests/acceptance/test_pagemap.py): the",
        "native column undercounts here. kvmdune's per-sample cost includes invalidating",
        "the cleared bits; its overhead also holds the faults that set them again.",
        "kvmdune's last sample runs to the program's exit."]
    return "\n".join(lines)


def draw_chart(series: dict[str, list[Sample]], path: Path, title: str) -> Path:
    """Pages touched (and written) over time, one line per series."""
    from .charts import pyplot, save

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(8, 4))
    for label, samples in series.items():
        times = [sample.time_s for sample in samples]
        # A sample counts the interval that ends at its time: steps drawn before it.
        axes.step(times, [sample.touched * PAGE_KIB / 1024 for sample in samples],
                  where="pre", label=f"{label}: touched")
        if samples and samples[0].written is not None:
            axes.step(times, [sample.written * PAGE_KIB / 1024 for sample in samples],
                      where="pre", linestyle="--", label=f"{label}: written")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("MiB since the previous sample")
    axes.set_title(title)
    axes.legend()
    axes.grid(True, alpha=0.3)
    return save(figure, path)


def report_json(samples: list[Sample], interval: float, status: int,
                argv: Sequence[str]) -> str:
    return json.dumps({"program": list(argv), "interval_ms": interval * 1000,
                       "status": status, "samples": [asdict(sample) for sample in samples]})


def write_text(path: str | None, text: str) -> None:
    """To ``path``, or stderr (the program's own output is on stdout)."""
    if path is None:
        print(text, file=sys.stderr)
    else:
        Path(path).write_text(text + "\n")
