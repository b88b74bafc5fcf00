"""``kvmdune wss``: a program's working-set size over time, from its page-table
accessed and dirty bits, sampled by the VMM at event boundaries."""

from __future__ import annotations

import argparse
import sys

from .sandbox import add_call_path_options, call_path_options, frozen_imports
from .sizes import parse_guest_memory

DEFAULT_INTERVAL_MS = 100.0


def _interval_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not 1 <= value <= 3_600_000:
        raise argparse.ArgumentTypeError("the interval must be 1 ms to one hour")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "wss", help="a program's working-set size over time (accessed and dirty bits)",
        usage="kvmdune wss [--interval MS] [--chart FILE] [--compare] -- PROGRAM [ARGS...]",
        description="Run PROGRAM under kvmdune and, every interval, count the pages it "
                    "touched and the pages it wrote since the previous sample, from its "
                    "page tables' accessed and dirty bits (a reader of their own: the "
                    "program's clear_refs and the Dune API's readers are not disturbed). "
                    "The table goes to stderr (or --output) when the program exits, whose "
                    "status is kvmdune wss's. Each sample clears the bits it read, which "
                    "costs an invalidation that grows with the pages touched: the "
                    "'sample ms' column.",
        epilog="examples:\n  kvmdune wss -- busybox sha256sum /usr/bin/python3\n"
               "  kvmdune wss --interval 50 --chart wss.svg -- ./myprogram\n"
               "  kvmdune wss --compare -- ./myprogram   # beside clear_refs + smaps "
               "natively, with the overhead of each",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=_interval_ms, default=DEFAULT_INTERVAL_MS,
                        metavar="MS", help=f"sampling interval in milliseconds (default "
                                           f"{DEFAULT_INTERVAL_MS:g})")
    parser.add_argument("--chart", metavar="FILE",
                        help="also draw the samples (.svg or .png; needs matplotlib: "
                             "pip install 'kvmdune[chart]')")
    parser.add_argument("--output", metavar="FILE",
                        help="write the table (or JSON) there instead of stderr")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.add_argument("--compare", action="store_true",
                        help="also run PROGRAM natively, sampled the Linux way (clear_refs "
                             "1 + smaps_rollup Referenced, from outside), and unwatched both "
                             "ways: both series and the overhead of each method")
    parser.add_argument("--memory", type=parse_guest_memory, default=None, metavar="SIZE",
                        help="guest-physical memory to reserve, e.g. 4G (default)")
    add_call_path_options(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="PROGRAM [ARGS...]")
    parser.set_defaults(handler=run_wss)


def run_wss(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("kvmdune wss: no program given (usage: kvmdune wss [options] -- PROGRAM "
              "[ARGS...])", file=sys.stderr)
        return 2
    if args.chart:
        from ..bench.charts import ChartUnavailable, check_available
        try:
            check_available()
        except ChartUnavailable as exc:
            print(f"kvmdune wss: --chart: {exc}", file=sys.stderr)
            return 2
    if args.compare:
        return _compare(args, command)
    return _watch(args, command)


def _watch(args: argparse.Namespace, command: list[str]) -> int:
    # First, before the VMM opens anything: the caller's descriptors, for the guest.
    from ..linux.fdtable import capture_caller_fds

    caller_fds = capture_caller_fds(detach=True)
    with frozen_imports():
        from ..bench import wss
        from ..linux.runner import RunOptions, run_command
        from ..linux.working_set import WorkingSetSampler

    interval = args.interval / 1000
    sampler = WorkingSetSampler(interval)
    options = RunOptions(caller_fds=caller_fds, ticker=sampler, **call_path_options(args),
                         **({"memory_size": args.memory} if args.memory else {}))
    status = run_command(command, options=options)
    samples = [wss.Sample(s.time_s, s.touched, s.written, s.cost_s) for s in sampler.samples]
    if args.json:
        wss.write_text(args.output, wss.report_json(samples, interval, status, command))
    else:
        wss.write_text(args.output, f"kvmdune wss: {' '.join(command)} (every "
                                    f"{args.interval:g} ms; the last row runs to its exit)\n"
                       + wss.format_samples(samples))
    if args.chart:
        from pathlib import Path
        wss.draw_chart({"kvmdune": samples}, Path(args.chart),
                       f"working set of {Path(command[0]).name}")
    return status


def _compare(args: argparse.Namespace, command: list[str]) -> int:
    from pathlib import Path

    from ..bench import wss

    interval = args.interval / 1000
    native, dune = wss.compare(command, interval, progress=lambda text: print(
        f"... {text}", file=sys.stderr, flush=True))
    if args.json:
        import json
        wss.write_text(args.output, json.dumps({"native": native.as_dict(),
                                                "kvmdune": dune.as_dict()}))
    else:
        wss.write_text(args.output, wss.format_comparison(native, dune, interval))
    if args.chart:
        wss.draw_chart({"native": native.samples, "kvmdune": dune.samples},
                       Path(args.chart), f"working set of {Path(command[0]).name}")
    return 0
