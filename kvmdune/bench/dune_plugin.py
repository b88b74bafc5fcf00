"""``kvmdune bench dune``'s plugin section: what the plugin sandbox costs (the
mechanism of kvmdune/dune/examples/plugin_host.c: dune_init(0), user code in a clone
of pgroot with only its pages PERM_U, every system call of it decided by the
program's handler), measured from a guest program (native/dune_plugin.c under
``kvmdune run``), beside Linux's closest ways of isolating code and the platform
floor, all in the same run (medians of runs):

- a system call of the plugin: user code's ``syscall`` -> the program's handler,
  which decides (a policy by number) and answers it itself -> back to user code
  (no call forwarded to Linux: kvmdune's forwarding is ``bench syscalls``' subject,
  and its call ring's state would make this figure vary). Linux: a seccomp user-notification round trip (a supervisor
  process receives the call, decides, and lets it continue: native/syscall_costs.c's
  notify mode) and a ptrace(PTRACE_SYSCALL) stop pair (a tracer reads the registers
  at entry: its ptrace mode), each for getppid. Floor: the two exits it cannot avoid
  on this platform: user code's syscall reaching the VMM (the machine's CPL3 syscall
  -> Python handler -> CPL3 round trip, ``bench core``'s) and the handler's return
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
import json
import os
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..machine import Machine
from . import core, dune, sandbox

SOURCE = ("native", "dune_plugin.c")
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


def native_us(binary: str, samples: int, benchmark: str, n: int) -> float:
    """A benchmark of dune_plugin.c that runs natively (a Linux way): per op, in us."""
    done = subprocess.run([binary, "--repeat", str(samples), benchmark, str(n)],
                          capture_output=True, text=True, timeout=dune.RUN_TIMEOUT_S)
    for line in done.stdout.splitlines():
        result = json.loads(line)
        if result.get("benchmark") == benchmark and "per_op_ns" in result:
            return result["per_op_ns"] / 1000
    raise RuntimeError(f"{benchmark}: no result ({done.returncode}): {done.stdout[-300:]}"
                       f"{done.stderr[-1000:]}")


def confined_getppid_us(binary: Path, samples: int, mode: str, n: int) -> float:
    """getppid under syscall_costs.c's confinement ``mode``: per call, in us."""
    values = []
    for _ in range(samples):
        report = sandbox.per_call_report([str(binary), "getppid", str(n), mode])
        if report is None or report.get("errors"):
            raise RuntimeError(f"syscall_costs getppid {n} {mode} reported {report}")
        values.append(report["per_call_ns"] / 1000)
    return statistics.median(values)


def run_plugin_bench(samples: int = 5, quick: bool = False,
                     progress: Callable[[str], None] = lambda text: None) -> list[PluginRow]:
    """Measure both costs (``quick``: few iterations, for smoke tests)."""
    syscalls, calls, exits = (50, 20, 50) if quick else (1000, 500, 2000)
    linux_calls, native_calls = (200, 10000) if quick else (20000, 10_000_000)
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-plugin-") as scratch:
        progress("building the guest program")
        binary = dune.build_guest(Path(scratch), SOURCE)

        def guest_us(benchmark: str, n: int) -> float:
            result = dune.guest_results(dune.run_guest, binary, samples, benchmark, n)
            return result["per_op_ns"] / 1000

        progress("guest: plugin system calls, calls into the plugin, hypercalls")
        plugin_syscall = guest_us("plugin-syscall", syscalls)
        plugin_call = guest_us("plugin-call", calls)
        hypercall = guest_us("hypercall", exits)
        costs = sandbox.build(Path(scratch))
        progress("Linux: pipe round trips to a worker, function calls, seccomp user "
                 "notification, ptrace")
        with children_on_one_cpu():
            pipe_call = native_us(binary, samples, "pipe-call", linux_calls)
            function_call = native_us(binary, samples, "function-call", native_calls)
            notify = confined_getppid_us(costs, samples, "notify", linux_calls)
            ptrace = confined_getppid_us(costs, samples, "ptrace", linux_calls // 4)
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
