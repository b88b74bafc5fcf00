"""``kvmdune bench paper``: the Dune paper's Tables 2 and 3 measured on this machine,
Linux beside kvmdune, in cycles and ns (medians of runs), with the platform kind.

Table 2 (native/table2.c, the same program natively and under ``kvmdune run``): a
system call, a page fault, a page-table walk (TLB miss).
Table 3: interposition on a system call (native/interpose.c: ptrace natively, the
Dune API's syscall handler for user code under kvmdune; seccomp user notification
natively from native/syscall_costs.c) and Appel & Li's primitives (native/appel_li.c:
mprotect + SIGSEGV and userfaultfd-wp natively, the Dune API under kvmdune): trap,
appel1, appel2, and the rest of the suite (prot1, protN, unprot, dirty, map2).

The paper's published figures are not printed: they could not be checked against
the paper's text here (the rule is to print only checked ones).
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .programs import ProgramError, build, run

APPEL_LI = "appel_li.c"
#: Table 3's rows from the Appel & Li suite, then the rest of it.
TABLE3_APPEL = ("trap", "appel1", "appel2")
SUITE_REST = ("prot1", "protN", "unprot", "dirty", "map2")
TABLE2 = ("syscall", "fault", "walk")
DESCRIPTIONS = {
    "syscall": "system call (getppid)",
    "fault": "page fault (fresh page, mmap included)",
    "walk": "page-table walk (TLB miss)",
    "interpose": "interposition on a system call",
    "trap": "trap (write fault to handler)",
    "appel1": "appel1 (prot1+trap+unprot, /page)",
    "appel2": "appel2 (protN+trap+unprot, /page)",
    "prot1": "prot1 (protect 1 page)",
    "protN": "protN (protect 100 pages)",
    "unprot": "unprot (unprotect 1 page)",
    "dirty": "dirty (10 of 100 written, found)",
    "map2": "map2 (a frame at a 2nd address)",
}
PAPER_NOTE = ("The paper's published figures are left out: their text could not be "
              "checked here.")


@dataclass(frozen=True)
class Figure:
    """One way of doing one operation: median cycles and ns per operation."""

    way: str
    cycles: float | None
    ns: float | None
    note: str = ""            # why there is no figure, or what it counts

    @property
    def present(self) -> bool:
        return self.ns is not None


@dataclass(frozen=True)
class PaperRow:
    operation: str
    linux: list[Figure] = field(default_factory=list)
    kvmdune: list[Figure] = field(default_factory=list)

    @property
    def description(self) -> str:
        return DESCRIPTIONS.get(self.operation, self.operation)

    @property
    def ratio(self) -> float | None:
        """kvmdune's first figure over Linux's first (the paper's comparison)."""
        if self.linux and self.kvmdune and self.linux[0].present and self.kvmdune[0].present:
            return self.kvmdune[0].ns / self.linux[0].ns
        return None

    def as_dict(self) -> dict:
        return asdict(self) | {"ratio": self.ratio}


@dataclass(frozen=True)
class Programs:
    table2: Path
    appel_linux: Path
    appel_dune: Path
    interpose_linux: Path
    interpose_dune: Path
    syscall_costs: Path


def build_all(directory: Path) -> Programs:
    return Programs(
        table2=build("table2.c", directory),
        appel_linux=build(APPEL_LI, directory, name="appel_li"),
        appel_dune=build(APPEL_LI, directory, dune=True, defines=("APPEL_LI_DUNE",),
                         name="appel_li_dune"),
        interpose_linux=build("interpose.c", directory, name="interpose"),
        interpose_dune=build("interpose.c", directory, dune=True,
                             defines=("INTERPOSE_DUNE",), name="interpose_dune"),
        syscall_costs=build("syscall_costs.c", directory))


def _median_results(argv: list[str], dune: bool, samples: int) -> dict[tuple, list[dict]]:
    """Every (benchmark, method) result of ``samples`` runs of ``argv``."""
    results: dict[tuple, list[dict]] = {}
    for _ in range(samples):
        for result in run(argv, dune=dune).objects:
            if result.get("correct") is False:
                raise ProgramError(f"{' '.join(argv)}: {result['benchmark']} "
                                   f"({result.get('method')}) gave a wrong result: {result}")
            key = (result["benchmark"], result.get("method"))
            results.setdefault(key, []).append(result)
    return results


def _figure(way: str, results: list[dict] | None) -> Figure:
    if not results:
        return Figure(way, None, None, "not measured")
    if "error" in results[0]:
        return Figure(way, None, None, results[0]["error"])
    return Figure(way, statistics.median(r["per_op_cycles"] for r in results),
                  statistics.median(r["per_op_ns"] for r in results),
                  results[0].get("unit", ""))


def measure(programs: Programs, samples: int, quick: bool,
            progress: Callable[[str], None]) -> tuple[list[PaperRow], list[PaperRow]]:
    iterations = 200 if quick else 2000
    progress("Table 2 natively and under kvmdune")
    # Quick: fewer calls and faults; the walk keeps enough steps to average its noise.
    # 20,000 calls a round: under kvmdune each waits for the serving thread, which a
    # loaded machine deschedules now and then.
    runs = ([["--iterations", "2000", "syscall", "fault"], ["--iterations", "200000", "walk"]]
            if quick else [["--iterations", "20000", "syscall"], ["fault", "walk"]])
    native2: dict[tuple, list[dict]] = {}
    dune2: dict[tuple, list[dict]] = {}
    for args in runs:
        native2 |= _median_results([str(programs.table2), *args], False, samples)
        dune2 |= _median_results([str(programs.table2), *args], True, samples)
    table2 = [PaperRow(name, [_figure("Linux", native2.get((name, None)))],
                       [_figure("kvmdune", dune2.get((name, None)))]) for name in TABLE2]
    tsc_ghz = statistics.median(r["tsc_ghz"] for r in native2[("syscall", None)])

    progress("interposition: ptrace, seccomp user notification, the Dune syscall handler")
    calls = 500 if quick else 5000
    ptrace = _median_results([str(programs.interpose_linux), str(calls)], False, samples)
    dune_calls = _median_results([str(programs.interpose_dune), str(calls // 5)], True,
                                 samples)
    notify = _notify(programs.syscall_costs, calls * 4, samples, tsc_ghz)
    interpose = PaperRow("interpose",
                         [_figure("ptrace", ptrace.get(("interpose", "ptrace"))), notify],
                         [_figure("Dune syscall handler",
                                  dune_calls.get(("interpose", "dune")))])

    progress("Appel & Li natively (mprotect, userfaultfd) and with the Dune API")
    appel_args = ["--iterations", str(iterations), "all"]
    native3 = _median_results([str(programs.appel_linux), *appel_args], False, samples)
    dune3 = _median_results([str(programs.appel_dune), *appel_args], True, samples)

    def appel_row(name: str) -> PaperRow:
        return PaperRow(name, [_figure("mprotect+SIGSEGV", native3.get((name, "mprotect"))),
                               _figure("userfaultfd-wp", native3.get((name, "uffd")))],
                        [_figure("Dune API", dune3.get((name, "dune")))])

    table3 = [interpose, *(appel_row(name) for name in TABLE3_APPEL + SUITE_REST)]
    return table2, table3


def _notify(binary: Path, calls: int, samples: int, tsc_ghz: float) -> Figure:
    """seccomp user notification (syscall_costs.c's notify mode): ns, cycles by the TSC."""
    values = []
    for _ in range(samples):
        output = run([str(binary), "getppid", str(calls), "notify"], dune=False)
        values.append(output.objects[-1]["per_call_ns"])
    ns = statistics.median(values)
    return Figure("seccomp notify", ns * tsc_ghz, ns, "getppid")


def run_paper_bench(samples: int = 3, quick: bool = False,
                    progress: Callable[[str], None] = lambda text: None
                    ) -> tuple[str, list[PaperRow], list[PaperRow]]:
    """The platform kind and both tables."""
    from ..kvm import probe_platform

    platform = probe_platform()
    with tempfile.TemporaryDirectory(prefix="kvmdune-bench-paper-") as scratch:
        progress("building the programs")
        programs = build_all(Path(scratch))
        table2, table3 = measure(programs, samples, quick, progress)
    return describe_platform(platform), table2, table3


def describe_platform(platform) -> str:
    """``kvmdune.kvm.probe_platform``'s answer in one line."""
    module = f", {platform.module}" if platform.module else ""
    return f"{platform.kind.value} KVM{module}: {platform.detail}"


# -- output ----------------------------------------------------------------------------------

def _cell(figure: Figure) -> str:
    if not figure.present:
        return f"{'n/a':>22}"
    return f"{figure.cycles:>11,.0f} {_ns(figure.ns):>10}"


def _ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f}ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f}us"
    return f"{ns:.0f}ns"


def format_table(title: str, rows: list[PaperRow]) -> str:
    linux_ways = max(len(row.linux) for row in rows)
    header = f"{'operation':<36}"
    for index in range(linux_ways):
        header += f" {'Linux' + (f' ({index + 1})' if linux_ways > 1 else ''):>22}"
    header += f" {'kvmdune':>22} {'kvmdune/Linux':>13}"
    sub = f"{'':<36}" + f" {'cycles':>11} {'time':>10}" * (linux_ways + 1)
    lines = [title, header, sub, "-" * len(header)]
    for row in rows:
        text = f"{row.description:<36}"
        for index in range(linux_ways):
            text += " " + (_cell(row.linux[index]) if index < len(row.linux)
                           else f"{'':>22}")
        text += " " + _cell(row.kvmdune[0])
        text += f" {row.ratio:12.1f}x" if row.ratio is not None else f" {'':>13}"
        lines.append(text)
    ways = []
    for row in rows:
        names = [f.way for f in row.linux] + [f.way for f in row.kvmdune]
        missing = [f"{f.way}: {f.note}" for f in row.linux + row.kvmdune if not f.present]
        ways.append(f"  {row.operation}: " + " | ".join(names)
                    + (f"  (n/a: {'; '.join(missing)})" if missing else ""))
    lines += ["", "ways (Linux columns in order, then kvmdune):", *ways]
    return "\n".join(lines)


def format_report(platform: str, table2: list[PaperRow], table3: list[PaperRow],
                  samples: int, quick: bool = False) -> str:
    parts = [f"platform: {platform}; medians of {samples} run(s); cycles are TSC ticks",
             "",
             format_table("Table 2: what a process pays (Linux natively, kvmdune: the "
                          "same program under kvmdune run)", table2),
             "",
             format_table("Table 3: interposition and Appel & Li's primitives (Linux "
                          "natively, kvmdune: the Dune API under kvmdune run)", table3),
             "", PAPER_NOTE]
    if quick:
        parts.append("(--quick: small sizes, a smoke test, not a measurement)")
    return "\n".join(parts)


def draw_chart(rows: list[PaperRow], stem: Path, platform: str) -> list[Path]:
    platform = platform.split(":", 1)[0]          # the kind and module: a short title
    """One chart, SVG and PNG: per operation, each Linux way and kvmdune, log scale."""
    from .charts import pyplot

    plt = pyplot()
    shown = [row for row in rows if any(f.present for f in row.linux + row.kvmdune)]
    figure, axes = plt.subplots(figsize=(10, 0.55 * len(shown) + 1.5))
    height = 0.8 / 3
    colours = {"linux0": "#4c72b0", "linux1": "#8fb0d9", "kvmdune": "#dd8452"}
    for position, row in enumerate(reversed(shown)):
        bars = [(f"linux{i}", f) for i, f in enumerate(row.linux[:2])] + \
               [("kvmdune", row.kvmdune[0])]
        for slot, (key, fig) in enumerate(bars):
            if not fig.present:
                continue
            y = position + (1 - slot) * height
            axes.barh(y, fig.ns, height=height * 0.95, color=colours[key])
            axes.text(fig.ns * 1.1, y, f"{fig.way} {_ns(fig.ns)}", va="center", fontsize=7)
    axes.set_yticks(range(len(shown)))
    axes.set_yticklabels([row.description for row in reversed(shown)], fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("time per operation (ns, log scale)")
    axes.set_title(f"Dune's Tables 2 and 3 on this machine: Linux (blue) vs kvmdune "
                   f"(orange)\n{platform}", fontsize=9)
    axes.grid(True, axis="x", which="both", alpha=0.3)
    right = max(f.ns for row in shown for f in row.linux + row.kvmdune if f.present)
    axes.set_xlim(right=right * 20)
    paths = []
    stem.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".svg", ".png"):
        path = stem.with_suffix(suffix)
        figure.savefig(path, bbox_inches="tight", dpi=120)
        paths.append(path)
    plt.close(figure)
    return paths
