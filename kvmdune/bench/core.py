"""``kvmdune bench core``: the costs of the Dune core beside the Linux ways of doing
the same thing, measured in the same run (medians of repeated runs)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

from ..machine import Action, Handler, Machine, Stop
from ..machine.probe import measure_platform
from ..memory import PAGE_SIZE, PTE, Perm
from . import guest
from .linux_baselines import run_baseline

GIB = 1 << 30


@dataclass(frozen=True)
class Row:
    operation: str
    kvmdune_us: float
    baseline: str
    baseline_us: float

    @property
    def ratio(self) -> float:
        return self.kvmdune_us / self.baseline_us if self.baseline_us else float("nan")


class _Exit(Handler):
    """Answers every call with 0 and stops at exit."""

    def on_syscall(self, cpu, event):
        return Stop() if event.number == guest.SYS_EXIT else 0


class _Unprotect(Handler):
    """Appel & Li "trap": a write fault unprotects the page and retries."""

    def __init__(self, space) -> None:
        self.space = space

    def on_syscall(self, cpu, event):
        return Stop() if event.number == guest.SYS_EXIT else 0

    def on_page_fault(self, cpu, event):
        self.space.protect(event.address & ~(PAGE_SIZE - 1), PAGE_SIZE, guest.RW_USER)
        return Action.RETRY


def _median(samples: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(samples))


def syscall_round_trip_us(machine: Machine, calls: int) -> float:
    space = guest.load(machine, guest.syscall_loop(calls))
    started = time.perf_counter()
    machine.run(_Exit())
    elapsed = time.perf_counter() - started
    space.close()
    return elapsed / calls * 1e6


def trap_us(machine: Machine, pages: int) -> float:
    """prot1 + trap + unprot per page: the protection of all pages is one batch."""
    space = guest.load(machine, guest.page_write_loop(0x1000_0000, pages, PAGE_SIZE))
    space.map(0x1000_0000, pages * PAGE_SIZE, guest.RW_USER)
    started = time.perf_counter()
    space.protect(0x1000_0000, pages * PAGE_SIZE, Perm.READ | Perm.USER)
    machine.run(_Unprotect(space))
    elapsed = time.perf_counter() - started
    space.close()
    return elapsed / pages * 1e6


def protect_pair_us(machine: Machine, pairs: int) -> float:
    space = machine.new_address_space()
    space.map(0x1000_0000, PAGE_SIZE, guest.RW_USER)
    started = time.perf_counter()
    for _ in range(pairs):
        space.protect(0x1000_0000, PAGE_SIZE, Perm.READ | Perm.USER)
        space.protect(0x1000_0000, PAGE_SIZE, guest.RW_USER)
    elapsed = time.perf_counter() - started
    space.close()
    return elapsed / pairs * 1e6


@dataclass(frozen=True)
class DirtyRound:
    arm_us: float
    writes_us: float
    collect_us: float
    correct: bool

    @property
    def total_us(self) -> float:
        return self.arm_us + self.writes_us + self.collect_us


def dirty_round(machine: Machine, size: int, written: int) -> DirtyRound:
    """One tracking round over ``size`` bytes, fully touched first: clear all D
    bits (arm), let the guest write ``written`` pages spread over the range, then
    collect and clear the dirty set."""
    base = 0x1_0000_0000
    pages = size // PAGE_SIZE
    stride = (pages // written) * PAGE_SIZE
    space = guest.load(machine, guest.page_write_loop(base, pages, PAGE_SIZE))
    space.map(base, size, guest.RW_USER)
    machine.run(_Exit())                                  # touch every page once
    t0 = time.perf_counter()
    reader = space.page_bits.reader("bench")
    reader.read(base, size, PTE.DIRTY, clear=True)        # arm
    t1 = time.perf_counter()
    guest.load(machine, guest.page_write_loop(base, written, stride), space)
    machine.run(_Exit())
    t2 = time.perf_counter()
    dirty = reader.read(base, size, PTE.DIRTY, clear=True)  # collect
    t3 = time.perf_counter()
    expected = [base + i * stride for i in range(written)]
    space.close()
    return DirtyRound((t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6, dirty == expected)


def run_core(samples: int = 3, quick: bool = False,
             progress: Callable[[str], None] = lambda text: None) -> list[Row]:
    """Measure everything; ``quick`` uses small sizes (for smoke tests)."""
    calls, pages, pairs = (200, 64, 200) if quick else (5000, 2048, 2000)
    dirty_size, dirty_written = (64 << 20, 256) if quick else (GIB, 1024)
    rows: list[Row] = []
    with Machine(dirty_size + (256 << 20)) as machine:
        progress("system call round trip")
        getppid = run_baseline("getppid", 100000 if not quick else 1000)
        rows.append(Row("CPL3 syscall -> Python handler -> CPL3",
                        _median(samples, lambda: syscall_round_trip_us(machine, calls)),
                        "getppid(2) natively", getppid.per_op_ns / 1000))
        progress("trap (prot1 + fault + unprot)")
        trap = run_baseline("trap", 20000 if not quick else 500)
        rows.append(Row("write fault -> handler unprotects -> retry",
                        _median(samples, lambda: trap_us(machine, pages)),
                        "mprotect + SIGSEGV handler + mprotect", trap.per_op_ns / 1000))
        progress("protect / unprotect one page")
        pair = run_baseline("mprotect_pair", 20000 if not quick else 500)
        rows.append(Row("protect + unprotect a page (page-table edit)",
                        _median(samples, lambda: protect_pair_us(machine, pairs)),
                        "mprotect pair", pair.per_op_ns / 1000))
        progress(f"dirty tracking over {dirty_size >> 20} MiB")
        rounds = [dirty_round(machine, dirty_size, dirty_written) for _ in range(samples)]
        ours = statistics.median(r.total_us for r in rounds)
        mb = dirty_size >> 20
        for name, label in (("dirty_mprotect", "mprotect write barrier + SIGSEGV"),
                            ("dirty_uffd", "userfaultfd-wp + PAGEMAP_SCAN")):
            baseline = run_baseline(name, mb, dirty_written)
            rows.append(Row(f"dirty round, {mb} MiB, {dirty_written} pages written "
                            "(PTE dirty bits)", ours, label, baseline.per_op_ns / 1000))
        progress("exit round trip")
        speed = measure_platform(0.5 if quick else 1.0)
        rows.append(Row("exit round trip (CPL0 out -> VMM -> guest)",
                        speed.exit_round_trip_us, "getppid(2) natively",
                        getppid.per_op_ns / 1000))
    return rows


def format_table(rows: list[Row]) -> str:
    header = f"{'operation':<52} {'kvmdune':>12} {'Linux':>12}  {'ratio':>8}  Linux baseline"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.operation:<52} {row.kvmdune_us:>10.2f}us {row.baseline_us:>10.2f}us "
                     f" {row.ratio:>7.2f}x  {row.baseline}")
    return "\n".join(lines)
