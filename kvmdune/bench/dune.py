"""``kvmdune bench dune``: the Dune API's page-table primitives, measured from inside a
guest program (native/dune_vm.c, built against the API's library and run under
``kvmdune run``), each beside the Linux way of doing the same thing and beside the
platform floor it cannot avoid, all measured in the same run (medians of runs):

- protect + unprotect one page (two dune_vm_mprotect hypercalls, both served by the
  fast path's thread: vmm_native/fastvm.c): Linux's mprotect pair; floor: two
  call-ring round trips (a getppid through the ring, measured in the same guest)
  plus one host mprotect pair (the Linux baseline's) -- the issue's floor; the write
  removal is KVM's dirty-log write-protect of the frame instead, which costs less
  than that pair, so kvmdune may come in under it;
- Appel & Li's trap: protect, write fault, a handler that unprotects, retry, with
  the program's page-fault handler (an upcall) and with a SIGSEGV handler (Linux's
  way, under kvmdune): Linux's mprotect + SIGSEGV handler; floor: the machine's own
  trap (a CPL3 fault to the VMM, unprotected there, retried: ``bench core``'s);
- reading and clearing the dirty bits of 1 GiB, fully touched, with 1,024 pages
  written since the last clear, with the batched call (kvmdune_vm_clear_bits) and
  with libdune's dune_vm_page_walk + dune_flush_tlb: Linux's userfaultfd write
  protection read back with PAGEMAP_SCAN; floor: the A/D reader's own read and
  clear of the same range in the VMM (no exit). Clearing D must make the next write
  reach the MMU again: the batched call is measured both with KVM's dirty log
  write-protecting the cleared pages (KVM_CLEAR_DIRTY_LOG, the default where KVM
  offers it) and with the host-side mprotect pair instead.

``python3 -m kvmdune.bench.dune [--no-dirty-log] -- PROGRAM ARGS`` is the VMM the
guest runs under (``kvmdune run``'s with the Dune API, the dirty log off if asked).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..machine import Machine
from . import core
from .linux_baselines import run_baseline
from .programs import build

SOURCE = "dune_vm.c"
GIB = 1 << 30
MIB = 1 << 20
#: Guest memory for the dirty rounds: the 1 GiB heap, its tables, the program.
GUEST_MEMORY_BYTES = 2 * GIB
RUN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Row:
    """One primitive: kvmdune's cost, its floor and Linux's, in microseconds."""

    operation: str
    kvmdune_us: float
    floor_us: float | None
    floor: str
    linux_us: float | None
    linux: str

    @property
    def over_floor(self) -> float | None:
        return self.kvmdune_us / self.floor_us if self.floor_us else None

    @property
    def over_linux(self) -> float | None:
        return self.kvmdune_us / self.linux_us if self.linux_us else None


#: Runs ``argv`` as a guest (dirty log on or off); returns its stdout.
GuestRunner = Callable[[list[str], bool], str]


def build_guest(out: Path) -> str:
    """native/dune_vm.c against the Dune API's library (``kvmdune config``'s flags)."""
    return str(build(SOURCE, out, dune=True, name="dune_vm"))


def run_guest(argv: list[str], dirty_log: bool) -> str:
    """Runs a guest under this module's VMM entry (``kvmdune run``'s): its stdout."""
    command = [sys.executable, "-m", "kvmdune.bench.dune"]
    if not dirty_log:
        command.append("--no-dirty-log")
    result = subprocess.run([*command, "--", *argv], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{result.stdout[-500:]}{result.stderr[-1500:]}")
    return result.stdout


def guest_results(runner: GuestRunner, binary: str, samples: int, benchmark: str,
                  *args: int, dirty_log: bool = True) -> dict:
    """One benchmark of the guest program: its JSON result."""
    out = runner([binary, "--repeat", str(samples), benchmark, *map(str, args)], dirty_log)
    for line in out.splitlines():
        result = json.loads(line)
        if result.get("benchmark") == benchmark:
            if "error" in result:
                raise RuntimeError(f"{benchmark}: {result['error']}")
            if result.get("correct") is False:
                raise RuntimeError(f"{benchmark}: the dirty pages found were not those written")
            return result
    raise RuntimeError(f"{benchmark}: no result in {out!r}")


def machine_floors(samples: int, pages: int, dirty_size: int, written: int) -> tuple[float, float]:
    """The machine's own trap, and the reader's read and clear of ``dirty_size``
    (microseconds), measured in the VMM."""
    with Machine(dirty_size + 256 * MIB) as machine:
        trap = statistics.median(core.trap_us(machine, pages) for _ in range(samples))
        collect = statistics.median(core.dirty_round(machine, dirty_size, written).collect_us
                                    for _ in range(samples))
    return trap, collect


def run_dune_bench(samples: int = 5, quick: bool = False,
                   progress: Callable[[str], None] = lambda text: None) -> list[Row]:
    """Measure every primitive (``quick``: small sizes, for smoke tests)."""
    runner = run_guest
    iterations, pages = (200, 64) if quick else (2000, 1024)
    mb, written = (64, 64) if quick else (1024, 1024)
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-dune-") as scratch:
        progress("building the guest program")
        binary = build_guest(Path(scratch))
        progress("guest: a call through the ring, protect pairs, traps")
        ring = guest_results(runner, binary, samples, "getppid", iterations * 10)
        protect = guest_results(runner, binary, samples, "protect", iterations)
        trap = guest_results(runner, binary, samples, "trap", iterations // 2)
        trap_signal = guest_results(runner, binary, samples, "trap-signal", iterations // 2)
        progress(f"guest: dirty rounds over {mb} MiB")
        batched = guest_results(runner, binary, samples, "dirty", mb, written)
        batched_mprotect = guest_results(runner, binary, samples, "dirty", mb, written,
                                         dirty_log=False)
        walk = guest_results(runner, binary, samples, "walk", mb, written)
    progress("Linux baselines")
    pair = run_baseline("mprotect_pair", 500 if quick else 20000).per_op_ns / 1000
    linux_trap = run_baseline("trap", 500 if quick else 20000).per_op_ns / 1000
    uffd = run_baseline("dirty_uffd", mb, written)
    uffd_collect = uffd.extra.get("collect_ns", uffd.per_op_ns) / 1000
    progress("the machine's own trap and dirty read")
    machine_trap, machine_collect = machine_floors(samples, pages, mb * MIB, written)

    def us(result: dict) -> float:
        return result["per_op_ns"] / 1000

    dirty = f"dirty read+clear, {mb} MiB, {written} written"
    return [
        Row("protect + unprotect a page (2 hypercalls)", us(protect),
            2 * us(ring) + pair, "2 ring round trips + host mprotect pair",
            pair, "mprotect pair"),
        Row("trap: protect, fault, pgflt handler unprotects", us(trap),
            machine_trap, "the machine's trap (fault -> VMM -> retry)",
            linux_trap, "mprotect + SIGSEGV handler + mprotect"),
        Row("trap: protect, fault, SIGSEGV handler unprotects", us(trap_signal),
            machine_trap, "the machine's trap (fault -> VMM -> retry)",
            linux_trap, "mprotect + SIGSEGV handler + mprotect"),
        Row(f"{dirty}: kvmdune_vm_clear_bits", us(batched), machine_collect,
            "A/D reader read+clear in the VMM", uffd_collect,
            "userfaultfd-wp + PAGEMAP_SCAN (collect)"),
        Row(f"{dirty}: same, host mprotect invalidation", us(batched_mprotect),
            machine_collect, "A/D reader read+clear in the VMM", uffd_collect,
            "userfaultfd-wp + PAGEMAP_SCAN (collect)"),
        Row(f"{dirty}: dune_vm_page_walk + flush", us(walk), machine_collect,
            "A/D reader read+clear in the VMM", uffd_collect,
            "userfaultfd-wp + PAGEMAP_SCAN (collect)"),
    ]


def format_table(rows: list[Row]) -> str:
    def ratio(value: float | None) -> str:
        return f"{value:7.2f}x" if value is not None else "     n/a"

    header = (f"{'operation':<58} {'kvmdune':>11} {'floor':>11} {'/floor':>8} "
              f"{'Linux':>11} {'/Linux':>8}")
    lines = [header, "-" * len(header)]
    for row in rows:
        floor = f"{row.floor_us:9.2f}us" if row.floor_us is not None else "n/a"
        linux = f"{row.linux_us:9.2f}us" if row.linux_us is not None else "n/a"
        lines.append(f"{row.operation:<58} {row.kvmdune_us:9.2f}us {floor:>11} "
                     f"{ratio(row.over_floor)} {linux:>11} {ratio(row.over_linux)}")
    lines.append("")
    lines += [f"floor of '{row.operation}': {row.floor}; Linux: {row.linux}" for row in rows[:3]]
    return "\n".join(lines)


def vmm_main(argv: list[str]) -> int:
    """The VMM a benchmark guest runs under: ``kvmdune run``'s, with 2 GiB of guest
    memory and the Dune API, KVM's dirty log off if asked (so that clearing D falls
    back to the host mprotect pair)."""
    from ..dune.process import DuneProcess
    from ..linux.runner import RunOptions, run_command

    if argv[:1] == ["--no-dirty-log"]:
        from ..memory import guest_memory

        # A measurement switch: the dirty log is what makes clearing D cheap.
        guest_memory.GuestMemory._enable_dirty_log = lambda self, vm: False
        argv = argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    return run_command(argv, options=RunOptions(memory_size=GUEST_MEMORY_BYTES,
                                                privileged=DuneProcess))


__all__ = ["Row", "run_dune_bench", "format_table", "build_guest", "run_guest", "vmm_main",
           "guest_results"]

if __name__ == "__main__":
    sys.exit(vmm_main(sys.argv[1:]))
