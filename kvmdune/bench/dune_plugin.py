"""``kvmdune bench dune``'s plugin section: what the plugin sandbox costs (the
mechanism of kvmdune/dune/examples/plugin_host.c: dune_init(0), user code in a clone
of pgroot with only its pages PERM_U, every system call of it decided by the
program's handler), measured from a guest program (native/dune_plugin.c under
``kvmdune run``), beside Linux's closest ways of isolating code and the platform
floor, all in the same run (medians of runs):

- a system call of the plugin: user code's ``syscall`` -> the program's handler,
  which decides (a policy by number) and answers it itself -> back to user code
  (no call forwarded to Linux: kvmdune's forwarding is ``bench syscalls``' subject,
  and its call ring's state would make this figure vary). Linux: a seccomp
  user-notification round trip (a supervisor process receives the getppid, decides
  and lets it continue: native/syscall_costs.c's notify mode) and a
  ptrace(PTRACE_SYSCALL) stop pair (a tracing parent: native/interpose.c, as
  ``bench paper``'s Table 3). Floor: the two exits it cannot avoid on this
  platform: user code's syscall reaching the VMM (the machine's CPL3 syscall ->
  Python handler -> CPL3 round trip, ``bench core``'s) and the handler's return
  (RESUME_USER, a hypercall of the program: PROBE's round trip).
- a call into the plugin: dune_jump_to_user, user code's exit call, the handler's
  dune_ret_from_user. Linux: a round trip through two pipes to a worker process
  forked once (a request, the worker's function, the answer), and a plain function
  call through a pointer (no isolation at all). Floor: JUMP_TO_USER and
  RET_FROM_USER (two hypercalls) and user code's exit call (one syscall round trip).

Linux's cross-process ways run with both processes on one CPU: their best case
here. Spread over the two vCPUs, each round trip also wakes an idle vCPU, which
costs this VM 4-35 us more, varying from run to run.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..machine import Machine
from . import core
from .programs import ProgramError, build, run

#: Guest memory for the floor's machine (its guest is a few pages).
FLOOR_MACHINE_BYTES = 64 << 20


@dataclass(frozen=True)
class PluginRow:
    """One cost of the plugin sandbox, its floor, and Linux's ways (microseconds)."""

    operation: str
    kvmdune_us: float
    floor_us: float
    floor: str
    linux_us: dict[str, float]       # Linux's way -> its cost

    @property
    def over_floor(self) -> float:
        return self.kvmdune_us / self.floor_us

    def over_linux(self) -> dict[str, float]:
        return {way: self.kvmdune_us / cost for way, cost in self.linux_us.items() if cost}


@contextlib.contextmanager
def children_on_one_cpu() -> Iterator[None]:
    """Processes started inside run on one CPU (they inherit this process's
    affinity, which is restored afterwards)."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def per_op_us(argv: list[str], dune: bool, samples: int, benchmark: str) -> float:
    """The median over ``samples`` runs of ``argv`` of its ``benchmark``'s per-operation
    figure (``per_op_ns``, or syscall_costs.c's ``per_call_ns``), in microseconds."""
    values = []
    for _ in range(samples):
        found = [result for result in run(argv, dune=dune).objects
                 if result.get(benchmark_key(result)) == benchmark]
        if not found or "error" in found[0] or found[0].get("correct") is False \
                or found[0].get("errors"):
            raise ProgramError(f"{' '.join(argv)}: no valid {benchmark} result: {found}")
        values.append(found[0].get("per_op_ns", found[0].get("per_call_ns")) / 1000)
    return statistics.median(values)


def benchmark_key(result: dict) -> str:
    """syscall_costs.c names its benchmark "case", the others "benchmark"."""
    return "benchmark" if "benchmark" in result else "case"


def run_plugin_bench(samples: int = 5, quick: bool = False,
                     progress: Callable[[str], None] = lambda text: None) -> list[PluginRow]:
    """Measure both costs (``quick``: few iterations, for smoke tests)."""
    syscalls, calls, exits = (50, 20, 50) if quick else (1000, 500, 2000)
    linux_calls, native_calls = (200, 10000) if quick else (20000, 10_000_000)
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-plugin-") as scratch:
        progress("building the programs")
        directory = Path(scratch)
        guest = str(build("dune_plugin.c", directory, dune=True))
        interpose = str(build("interpose.c", directory))
        syscall_costs = str(build("syscall_costs.c", directory))

        def guest_us(benchmark: str, n: int) -> float:
            return per_op_us([guest, "--repeat", "5", benchmark, str(n)], True, samples,
                             benchmark)

        progress("guest: plugin system calls, calls into the plugin, hypercalls")
        plugin_syscall = guest_us("plugin-syscall", syscalls)
        plugin_call = guest_us("plugin-call", calls)
        hypercall = guest_us("hypercall", exits)
        progress("Linux: pipe round trips, function calls, seccomp user notification, "
                 "ptrace")
        with children_on_one_cpu():
            pipe_call = per_op_us([guest, "pipe-call", str(linux_calls)], False, samples,
                                  "pipe-call")
            function_call = per_op_us([guest, "function-call", str(native_calls)], False,
                                      samples, "function-call")
            notify = per_op_us([syscall_costs, "getppid", str(linux_calls), "notify"], False,
                               samples, "getppid")
            ptrace = per_op_us([interpose, str(linux_calls // 4)], False, samples, "interpose")
    progress("the machine's system-call round trip")
    with Machine(FLOOR_MACHINE_BYTES) as machine:
        syscall_exit = statistics.median(core.syscall_round_trip_us(machine, exits)
                                         for _ in range(samples))
    return [
        PluginRow("plugin system call (user code -> handler -> back)", plugin_syscall,
                  syscall_exit + hypercall,
                  "user code's syscall reaching the VMM + the handler's return (a hypercall)",
                  {"seccomp user-notification round trip": notify,
                   "ptrace(PTRACE_SYSCALL): entry + exit stops": ptrace}),
        PluginRow("call into the plugin (jump_to_user + ret_from_user)", plugin_call,
                  2 * hypercall + syscall_exit,
                  "two hypercalls (JUMP_TO_USER, RET_FROM_USER) + user code's exit call",
                  {"pipe round trip to a forked worker": pipe_call,
                   "plain function call (no isolation)": function_call}),
    ]


def format_table(rows: list[PluginRow]) -> str:
    header = (f"{'plugin sandbox':<62} {'kvmdune':>11} {'floor':>11} {'/floor':>8}"
              f" {'Linux':>11} {'ratio':>9}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.operation:<62} {row.kvmdune_us:9.2f}us {row.floor_us:9.2f}us "
                     f"{row.over_floor:7.2f}x")
        ratios = row.over_linux()
        for way, cost in row.linux_us.items():
            lines.append(f"  Linux: {way:<53} {'':>11} {'':>11} {'':>8} {cost:9.3f}us "
                         f"{ratios.get(way, float('nan')):8.1f}x")
    lines.append("")
    lines += [f"floor of '{row.operation}': {row.floor}" for row in rows]
    lines.append("ratio: kvmdune's cost over the Linux way's")
    return "\n".join(lines)


__all__ = ["PluginRow", "run_plugin_bench", "format_table"]
