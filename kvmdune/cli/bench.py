"""``kvmdune bench``: measurements beside their Linux equivalents, same machine, same run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .sizes import positive_int

#: The sections of ``kvmdune bench dune``.
DUNE_SECTIONS = ("page-tables", "plugin")
#: The groups of ``kvmdune bench syscalls`` (bench/syscalls.py's GROUPS, named here so
#: that parsing the command line imports no benchmark).
SYSCALL_GROUPS = ("per-call", "cpu", "syscall-heavy", "startup", "pipe")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure kvmdune against Linux on this machine",
        description="Benchmarks print each kvmdune figure beside the Linux baseline "
                    "measured in the same run, and their ratio (machines are shared and "
                    "noisy: compare ratios, not absolute times).")
    suites = parser.add_subparsers(title="suites", metavar="SUITE")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
    core = suites.add_parser(
        "core", help="system calls, faults, protection changes, dirty tracking, exits",
        description="The Dune core: a CPL3 system call served by a Python handler; "
                    "Appel & Li's trap (fault, unprotect, retry); protecting a page by "
                    "editing its page-table entry; a dirty-tracking round over 1 GiB "
                    "with PTE dirty bits; the exit round trip. Baselines: getppid, "
                    "mprotect + SIGSEGV, an mprotect pair, an mprotect write barrier, "
                    "userfaultfd write protection read back with PAGEMAP_SCAN.")
    _add_sampling(core)
    core.add_argument("--json", action="store_true", help="print JSON rows")
    core.set_defaults(handler=run_core)
    programs = suites.add_parser(
        "run", help="whole programs: startup, system-call-heavy and CPU-bound workloads",
        description="Startup of `true`; busybox `dd bs=512` of 100 MB to /dev/null and "
                    "`find` over 20,000 files (system-call heavy); busybox `sha256sum` of "
                    "a 200 MB file and `bzip2 -9` of 50 MB (CPU bound); the same 200 MB "
                    "through `head -c | sha256sum` (a pipeline of 4 KiB writes); "
                    "process-heavy: a bash loop "
                    "of 200 fork+exec+wait of /bin/true, `gcc -O2 -c` of a 1,000-line C "
                    "file, `make -j2` of a 10-file project, `python3 -c pass`, each with "
                    "its target; a C int/memory kernel over 128 MB (plain, with its array "
                    "advised MADV_HUGEPAGE, and with KVMDUNE_HUGE_PAGES=1). Each natively, "
                    "under `kvmdune run` (through the native client, as the installed "
                    "command runs it: the resident path), and under `strace -f -o "
                    "/dev/null`, in turn in the same run (median of 5 by default), with "
                    "the load average beside. First, the start-up table: "
                    "`kvmdune run|sandbox -- /bin/true` through the installed command, "
                    "resident and in-process, beside native. Last, a program allocating "
                    "past --memory 256M and past the default limit: how soon after the "
                    "crossing it is stopped.")
    _add_sampling(programs, default_samples=5)
    programs.add_argument("--json", action="store_true",
                          help="print the workloads' rows as JSON (without the start-up "
                               "and memory-limit tables)")
    programs.add_argument("--startup", action="store_true",
                          help="only the start-up table (issue 14's targets)")
    programs.add_argument("--only", action="append", metavar="WORD",
                          help="only the workloads whose name holds WORD (repeatable; "
                               "the CPU-bound rows: --only int/memory --only 'the same' "
                               "--only sha256sum --only bzip2), without the start-up "
                               "and limit tables")
    programs.add_argument("--in-process", action="store_true",
                          help="time the workloads through `python -m kvmdune run` on "
                               "the in-process path, not through the native client "
                               "(the installed command's resident path)")
    programs.set_defaults(handler=run_programs)
    confinement = suites.add_parser(
        "sandbox", help="a checked system call under each way of confining a program",
        description="Per-call cost of an allowed getppid, an allowed 1-byte read of "
                    "/dev/zero and a denied open, and the busybox workloads of `bench run` "
                    "(smaller): natively, under a seccomp-bpf filter, under seccomp user "
                    "notification, under `strace -f -o /dev/null` (ptrace) and under "
                    "`kvmdune sandbox`.")
    _add_sampling(confinement)
    confinement.set_defaults(handler=run_confinement)
    confine = suites.add_parser(
        "confine", help="the cost of the sandbox VMM's own confinement",
        description="Start-up of `true`, per-call costs (allowed getppid and 1-byte read "
                    "on the fast path, getppid and a denied open on the slow path) and "
                    "the seccomp filter's cost on each host call the VMM makes: natively, "
                    "under `kvmdune sandbox --no-confine` and under `kvmdune sandbox` "
                    "(no_new_privs, seccomp, Landlock).")
    _add_sampling(confine)
    confine.set_defaults(handler=run_confine)
    dune = suites.add_parser(
        "dune", help="the Dune API's page-table primitives, beside Linux and the floor",
        description="From a C program using the Dune API: protect + unprotect a page "
                    "(two dune_vm_mprotect calls), Appel & Li's trap (protect, fault, "
                    "handler unprotects), and a dirty read+clear of 1 GiB with 1,024 pages "
                    "written (kvmdune_vm_clear_bits with KVM's dirty log and with host "
                    "mprotect invalidation; dune_vm_page_walk + dune_flush_tlb). Beside: "
                    "Linux's mprotect pair, mprotect + SIGSEGV, userfaultfd-wp + "
                    "PAGEMAP_SCAN; and the floor each cannot avoid (ring round trips and a "
                    "host mprotect pair; the machine's own trap; the A/D reader's read). "
                    "Then the plugin sandbox (plugin_host.c's mechanism): a system call of "
                    "user code decided by the program's handler, beside a seccomp "
                    "user-notification round trip and a ptrace(PTRACE_SYSCALL) stop pair; a "
                    "call into user code (dune_jump_to_user + dune_ret_from_user), beside "
                    "a round trip through pipes to a forked worker and a function call.")
    _add_sampling(dune)
    dune.add_argument("--section", choices=DUNE_SECTIONS, action="append",
                      help="measure only this section (repeatable; default: all)")
    dune.add_argument("--json", action="store_true", help="print JSON rows")
    dune.set_defaults(handler=run_dune)
    syscalls = suites.add_parser(
        "syscalls", help="issues 5 and 13's targets for fast system calls, each marked ok or MISSED",
        description="1. per-call cost of an allowed getppid from a static C program: "
                    "natively, under `strace -f`, `kvmdune run` and `kvmdune sandbox` "
                    "(strict), and both of those on the slow path (KVMDUNE_FAST_SYSCALLS=0); "
                    "and its floor (a ring round trip to a spinning host thread that "
                    "calls getppid natively); target at most 0.15x strace, 3.5x native "
                    "and 1.3x the floor; libc's clock_gettime "
                    "natively, under `kvmdune run` (the guest's vDSO) and with "
                    "KVMDUNE_VDSO=0; a 4 KiB pread of a cached file natively and under "
                    "`kvmdune run`, its data unused and then used (each read of sha256sum's "
                    "below). 2. CPU bound: busybox "
                    "`sha256sum` of 200 MB, `bzip2 -9` of 50 MB, a C integer/memory kernel; "
                    "target at least 0.97x native speed. 3. System-call heavy: busybox "
                    "`dd bs=512` of 100 MB to /dev/null and to a file, `find` over 20,000 "
                    "files, `ls -lR` of /usr/share/doc; targets (issue 13) dd within 2x native "
                    "under run and 3x under the sandbox, find and ls -lR within 3x under "
                    "both (start-up, group 4, subtracted from both sides), all at least 5x "
                    "faster than strace. 4. Start-up and teardown of `true` on the in-process "
                    "path these rows take (subtracted from group 3; the installed command's "
                    "start-up, issue 14's target, is `kvmdune bench run --startup`'s). "
                    "6. 100 MB through a pipe between two busybox `dd`s (64 KiB writes), "
                    "start-up subtracted; target at least 50% of native throughput. "
                    "Whole programs are timed from outside, start-up included, and their "
                    "output is compared with the native run's.")
    _add_sampling(syscalls)
    syscalls.add_argument("--with-slow-path", action="store_true",
                          help="also run groups 2-4 on the slow path "
                               "(KVMDUNE_FAST_SYSCALLS=0), at smaller sizes beside a native "
                               "run of the same size (adds several minutes)")
    syscalls.add_argument("--group", choices=list(SYSCALL_GROUPS), action="append",
                          help="measure only this group (repeatable; default: all)")
    syscalls.add_argument("--json", action="store_true", help="print JSON rows")
    syscalls.set_defaults(handler=run_syscalls)
    load = suites.add_parser(
        "load", help="the fast system-call path against the slow path under load",
        description="1, 2 and 4 concurrent system-call-heavy guests under `kvmdune run` "
                    "on this machine, with the machine otherwise idle and with a CPU hog "
                    "(one busy-looping native process per core, started and killed by "
                    "the bench): a checked getppid loop (static C), busybox `dd bs=512` "
                    "of a file to /dev/null, busybox `find` over a generated tree of "
                    "20,000 files, busybox `ls -lR` of /usr/share/doc, and 32 MB through a "
                    "pipe between two busybox `dd`s in the guest (64 KiB writes). Each on the fast path (call sites patched), the fast "
                    "path with --no-patch and the slow path (KVMDUNE_FAST_SYSCALLS=0), "
                    "interleaved in every round, beside native. Prints each way's wall "
                    "time until the last guest ends, less the start-up of as many "
                    "`kvmdune run -- true` under the same load (shown in brackets), the "
                    "fast ways' ratio to the slow path, and SLOWER where a fast way lost "
                    "(issue 13: the fast path is never slower than the slow path).")
    _add_sampling(load)
    load.add_argument("--guests", type=positive_int, action="append",
                      help="only this many concurrent guests (repeatable; default 1, 2, 4)")
    load.add_argument("--load", choices=("idle", "hog"), action="append",
                      help="only this background load (repeatable; default both)")
    load.add_argument("--json", action="store_true", help="print JSON rows")
    load.set_defaults(handler=run_load)
    exits = suites.add_parser(
        "exits", help="one exit to the VMM from guest CPL3, each way there is",
        description="The call stub's wait exit as today (#PF on a supervisor address, "
                    "the trampoline's `out` and `iretq` at emulated CPL0) beside ways out "
                    "of CPL3 with no CPL0 code: an MMIO store to a guest-physical page no "
                    "slot backs, `out` at CPL3 allowed by the TSS I/O bitmap or by IOPL 3; "
                    "and `out` from a CPL0 loop as the floor. A C run loop; CPU time and "
                    "wall time per exit, medians; the guest's registers and flags checked.")
    _add_sampling(exits, default_samples=5)
    exits.add_argument("--exits", type=positive_int, default=2000,
                       help="timed exits per run (default 2000)")
    exits.set_defaults(handler=run_exits)
    mmcalls = suites.add_parser(
        "mmcalls", help="one mmap/munmap/mprotect/brk end to end, beside Linux",
        description="A C loop of one memory call per case (anonymous mmap+munmap "
                    "of 64 KiB and 1 MiB, mprotect, brk, and ld.so's MAP_FIXED of a file "
                    "over a reservation), timed inside the guest, with the VMM handler's "
                    "own time per call (issue 14: anonymous calls at most 100 µs).")
    _add_sampling(mmcalls)
    mmcalls.add_argument("--json", action="store_true", help="print JSON rows")
    mmcalls.set_defaults(handler=run_mmcalls)
    threads = suites.add_parser(
        "threads", help="issue 10's targets for threads, each marked ok or MISSED",
        description="Thread create+join latency (target at most 20x native) and a "
                    "condition-variable ping-pong, timed inside a static C program; "
                    "compute-bound multi-threaded work (target within 1.15x native): an "
                    "integer kernel on 2 threads, `xz -T2 -6` and `zstd -T2 -19` of 100 "
                    "MB, timed from outside with their output compared with the native "
                    "run's.")
    _add_sampling(threads)
    threads.add_argument("--json", action="store_true", help="print JSON rows")
    threads.set_defaults(handler=run_threads)
    sthreads = suites.add_parser(
        "sthreads", help="sthread create+join, fresh and recycled, beside fork and pthreads",
        description="Create+join latency of an sthread (Wedge on the Dune API, "
                    "include/sthread.h) under kvmdune, created fresh and recycled by its "
                    "dirty bits, beside native fork+wait and pthread_create+join (and "
                    "pthread_create+join under kvmdune), timed inside a static C program "
                    "in the same run; medians and ratios.")
    _add_sampling(sthreads)
    sthreads.add_argument("--json", action="store_true", help="print JSON rows")
    sthreads.set_defaults(handler=run_sthreads)
    gc = suites.add_parser(
        "gc", help="Debian's libgc, incremental on and off, mprotect vs dirty bits",
        description="Debian's unmodified libgc (bdwgc) driven by native/gc_bench.c "
                    "(GCBench-style binary trees; old objects rewritten to point at "
                    "young ones): total time, collections, mean and maximum pause, with "
                    "incremental mode on and off, natively (bdwgc's mprotect write "
                    "barrier: this kernel has no soft-dirty bits) and under `kvmdune "
                    "run` (soft-dirty bits from the PTE dirty bits). Which dirty-bit "
                    "implementation bdwgc took is checked with GC_PRINT_VERBOSE_STATS=1 "
                    "and printed.")
    _add_sampling(gc)
    gc.add_argument("--json", action="store_true", help="print JSON rows")
    gc.set_defaults(handler=run_gc)
    working_set = suites.add_parser(
        "wss", help="kvmdune wss beside clear_refs + smaps natively, and their overheads",
        description="native/wss_phases.c (three phases of known working sets: 2,048 "
                    "pages read / 512 written, 8,192 / 4,096, 1,024 / 0) sampled every "
                    "interval natively the Linux way (clear_refs 1 + smaps_rollup "
                    "Referenced, from outside) and under `kvmdune wss` (accessed and dirty "
                    "bits): both series, the program's time alone and watched (the "
                    "overhead of sampling) and the cost of one sample each way.")
    _add_sampling(working_set)
    working_set.add_argument("--interval", type=float, default=None, metavar="MS",
                             help="sampling interval (default 100 ms; 20 with --quick)")
    working_set.add_argument("--chart", metavar="FILE",
                             help="draw both series (.svg or .png; needs matplotlib)")
    working_set.add_argument("--json", action="store_true", help="print JSON")
    working_set.set_defaults(handler=run_wss_bench)
    paper = suites.add_parser(
        "paper", help="the Dune paper's Tables 2 and 3 on this machine, and a chart",
        description="Table 2: a system call, a page fault and a page-table walk (TLB "
                    "miss), one program natively and under `kvmdune run`. Table 3: "
                    "interposition on a system call (ptrace and seccomp user notification "
                    "natively; the Dune API's syscall handler for user code under kvmdune) "
                    "and Appel & Li's primitives (trap, appel1, appel2, prot1, protN, "
                    "unprot, dirty, map2: mprotect + SIGSEGV and userfaultfd-wp natively; "
                    "the Dune API under kvmdune). Cycles and ns, medians of the runs, the "
                    "platform kind stated; a chart (SVG and PNG), Linux vs kvmdune per "
                    "operation on a log scale.")
    _add_sampling(paper)
    paper.add_argument("--chart", metavar="STEM", default="kvmdune-paper",
                       help="write STEM.svg and STEM.png (default: kvmdune-paper in the "
                            "current directory; needs matplotlib)")
    paper.add_argument("--no-chart", action="store_true", help="print the tables only")
    paper.add_argument("--json", action="store_true", help="print JSON rows")
    paper.set_defaults(handler=run_paper)
    phases = suites.add_parser(
        "phases", help="where the VMM's time goes per forked child (fork+exec loop)",
        description="Runs a bash loop of fork+exec+wait of /bin/true (or COMMAND) "
                    "natively and under `kvmdune run` with KVMDUNE_PHASE_TIMES set, and "
                    "prints the loop's wall time per child (median of the samples) and "
                    "the median and mean milliseconds of each VMM phase per forked child "
                    "(fork, execve, each system call served by the VMM, machine close).")
    phases.add_argument("--samples", type=positive_int, default=3,
                        help="runs of the loop; the median is printed (default 3)")
    phases.add_argument("--loops", type=positive_int, default=200,
                        help="children the loop forks (default 200)")
    phases.add_argument("command", nargs="*", metavar="COMMAND",
                        help="a command to measure instead of the loop")
    phases.set_defaults(handler=run_phases)


def _add_sampling(parser: argparse.ArgumentParser, default_samples: int = 3) -> None:
    parser.add_argument("--samples", type=positive_int, default=default_samples,
                        help="runs of each measurement; the median is printed "
                             f"(default {default_samples})")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: a smoke test, not a measurement")


def run_core(args: argparse.Namespace) -> int:
    from ..bench.core import format_table, run_core as measure

    rows = measure(samples=args.samples, quick=args.quick,
                   progress=lambda text: print(f"... {text}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps([dataclasses.asdict(row) | {"ratio": row.ratio} for row in rows],
                         indent=2))
    else:
        print(format_table(rows))
    return 0


def run_dune(args: argparse.Namespace) -> int:
    from ..bench import dune, dune_plugin

    sections = args.section or DUNE_SECTIONS
    measured: list[dict] = []
    tables: list[str] = []

    def progress(text: str) -> None:
        print(f"... {text}", file=sys.stderr, flush=True)

    if "page-tables" in sections:
        rows = dune.run_dune_bench(samples=args.samples, quick=args.quick, progress=progress)
        measured += [dataclasses.asdict(row) | {"section": "page-tables",
                                                "over_floor": row.over_floor,
                                                "over_linux": row.over_linux}
                     for row in rows]
        tables.append(dune.format_table(rows))
    if "plugin" in sections:
        plugin_rows = dune_plugin.run_plugin_bench(samples=args.samples, quick=args.quick,
                                                   progress=progress)
        measured += [dataclasses.asdict(row) | {"section": "plugin",
                                                "over_floor": row.over_floor,
                                                "over_linux": row.over_linux()}
                     for row in plugin_rows]
        tables.append(dune_plugin.format_table(plugin_rows))
    print(json.dumps(measured, indent=2) if args.json else "\n\n".join(tables))
    return 0


def run_programs(args: argparse.Namespace) -> int:
    from ..bench.run import (format_limit_table, format_startup, format_table,
                             measure_startup, rows_as_json, run_bench, run_limit_bench)

    def progress(text: str) -> None:
        print(f"... {text}", file=sys.stderr, flush=True)

    def workload_rows() -> list:
        return run_bench(samples=args.samples, quick=args.quick, progress=progress,
                         only=args.only, in_process=args.in_process)

    if args.json:
        print(json.dumps(rows_as_json(workload_rows()), indent=2))
        return 0
    if args.only:
        print(format_table(workload_rows()))
        return 0
    startup = measure_startup(args.samples, progress)
    if args.startup:
        print(format_startup(startup))
        return 0 if all(row.holds is not False for row in startup) else 1
    print(format_startup(startup), end="\n\n", flush=True)
    print(format_table(workload_rows()), end="\n\n", flush=True)
    print(format_limit_table(run_limit_bench(progress=progress)))
    return 0


def run_confinement(args: argparse.Namespace) -> int:
    from ..bench.sandbox import format_table, run_sandbox_bench, run_workload_bench

    def progress(text: str) -> None:
        print(f"... {text}", file=sys.stderr, flush=True)

    calls = run_sandbox_bench(samples=args.samples, quick=args.quick, progress=progress)
    workloads = run_workload_bench(samples=args.samples, quick=args.quick, progress=progress)
    print(format_table(calls))
    print("(ratios against native; natively and under strace the denied open is allowed)\n")
    print(format_table(workloads, unit="s"))
    return 0


def run_confine(args: argparse.Namespace) -> int:
    from ..bench.sandbox import format_table, run_confinement_bench

    rows = run_confinement_bench(samples=args.samples, quick=args.quick,
                                 progress=lambda text: print(f"... {text}", file=sys.stderr,
                                                             flush=True))
    print(format_table(rows))
    print("(ratios against native; the last row is Python's own getppid() in the VMM "
          "process before and after the filter: the filter's cost per host call)")
    return 0


def run_syscalls(args: argparse.Namespace) -> int:
    from ..bench.syscalls import format_tables, run_syscalls_bench

    rows = run_syscalls_bench(samples=args.samples, quick=args.quick,
                              with_slow_path=args.with_slow_path,
                              groups=set(args.group) if args.group else None,
                              progress=lambda text: print(f"... {text}", file=sys.stderr,
                                                          flush=True))
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        print(format_tables(rows, args.samples))
    return 0


def run_load(args: argparse.Namespace) -> int:
    from ..bench.load import CONCURRENCY, format_table, run_load_bench

    rows = run_load_bench(samples=args.samples, quick=args.quick, progress=_progress,
                          guests=tuple(args.guests or CONCURRENCY),
                          hogs=tuple(load == "hog" for load in (args.load or ("idle", "hog"))))
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        print(format_table(rows, args.samples))
    return 0


def run_exits(args: argparse.Namespace) -> int:
    from ..bench.exits import format_table, load_average, run_exits_bench

    before = load_average()
    results = run_exits_bench(samples=args.samples, exits=args.exits, progress=_progress)
    print(format_table(results, before, load_average()))
    return 0


def run_mmcalls(args: argparse.Namespace) -> int:
    from ..bench.exits import load_average
    from ..bench.mmcalls import format_table, run_mmcalls_bench

    before = load_average()
    rows = run_mmcalls_bench(samples=args.samples, quick=args.quick, progress=_progress)
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        print(format_table(rows, args.samples, before, load_average()))
    return 0


def run_threads(args: argparse.Namespace) -> int:
    from ..bench.threads import format_table, run_threads_bench

    rows = run_threads_bench(samples=args.samples, quick=args.quick,
                             progress=lambda text: print(f"... {text}", file=sys.stderr,
                                                         flush=True))
    if args.json:
        print(json.dumps([dataclasses.asdict(row) | {"ratio": row.ratio,
                                                     "verdict": row.verdict}
                          for row in rows], indent=2))
    else:
        print(format_table(rows))
    return 0


def run_sthreads(args: argparse.Namespace) -> int:
    from ..bench.sthreads import baselines, format_table, run_sthreads_bench

    rows = run_sthreads_bench(samples=args.samples, quick=args.quick)
    if args.json:
        native = baselines(rows)
        print(json.dumps([dataclasses.asdict(row) | {"ratios": row.ratios(native)}
                          for row in rows], indent=2))
    else:
        print(format_table(rows))
    return 0


def _progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def run_gc(args: argparse.Namespace) -> int:
    from ..bench.gc import format_table, run_gc_bench
    from ..bench.programs import ProgramError

    try:
        rows = run_gc_bench(samples=args.samples, quick=args.quick, progress=_progress)
    except ProgramError as exc:
        print(f"kvmdune bench gc: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        print(format_table(rows, quick=args.quick))
    return 0


def run_wss_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bench import wss
    from ..bench.charts import ChartUnavailable, check_available
    from ..bench.programs import ProgramError

    interval = args.interval / 1000 if args.interval else wss.default_interval(args.quick)
    try:
        if args.chart:
            check_available()
        native, dune, phases = wss.run_wss_bench(samples=args.samples, quick=args.quick,
                                                 interval=interval, progress=_progress)
    except (ProgramError, ChartUnavailable) as exc:
        print(f"kvmdune bench wss: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"native": native.as_dict(), "kvmdune": dune.as_dict(),
                          "phases": phases}, indent=2))
    else:
        print(wss.format_comparison(native, dune, interval, phases))
    if args.chart:
        wss.draw_chart({"native": native.samples, "kvmdune": dune.samples},
                       Path(args.chart), "working set of wss_phases")
    return 0


def run_paper(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bench import paper
    from ..bench.charts import ChartUnavailable, check_available
    from ..bench.programs import ProgramError

    chart = None if args.no_chart else Path(args.chart)
    if chart is not None:
        try:
            check_available()
        except ChartUnavailable as exc:
            print(f"kvmdune bench paper: no chart: {exc} (the tables follow; --no-chart "
                  "says this is wanted)", file=sys.stderr)
            chart = None
    try:
        platform, table2, table3 = paper.run_paper_bench(samples=args.samples,
                                                         quick=args.quick,
                                                         progress=_progress)
    except ProgramError as exc:
        print(f"kvmdune bench paper: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"platform": platform,
                          "table2": [row.as_dict() for row in table2],
                          "table3": [row.as_dict() for row in table3]}, indent=2))
    else:
        print(paper.format_report(platform, table2, table3, args.samples, args.quick))
    if chart is not None:
        paths = paper.draw_chart(table2 + table3, chart, platform)
        print(f"chart: {', '.join(map(str, paths))}", file=sys.stderr)
    return 0


def run_phases(args: argparse.Namespace) -> int:
    from ..bench.phases import run_phases as measure

    print(measure(args.loops, args.samples, args.command or None))
    return 0
