"""``kvmdune syscalls``: how each x86-64 Linux system call is served."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "syscalls", help="list the system calls and how kvmdune serves each",
        description="Every x86-64 Linux system call kvmdune knows, with how `kvmdune run` "
                    "serves it: emulated (a handler acting on the guest's own memory, "
                    "descriptors, signals or processes), forwarded (run by Linux with every "
                    "pointer copied through checked buffers), partial (forwarded where the "
                    "table describes every pointer, ENOSYS elsewhere), or refused (ENOSYS: it would "
                    "act on the VMM itself, or is not supported yet). Calls marked `fast` "
                    "are served by the native fast path without an exit whenever it can "
                    "give the same answer (files and devices that never block, buffers "
                    "mapped for user code, no /proc or /dev path, no signal waiting); "
                    "under `kvmdune sandbox` only those the policy allows by number, and "
                    "the stat family beneath the readable paths. Partial and refused calls "
                    "say why. The dispatch table is kvmdune/linux/routing.py.")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    parser.add_argument("--only", choices=["emulated", "forwarded", "partial", "refused",
                                           "fast"],
                        help="list only the calls served this way")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..linux.support import support_table

    rows = [row for row in support_table()
            if not args.only or row.support.value == args.only or args.only == "fast" and row.fast]
    if args.json:
        print(json.dumps([{"number": r.number, "name": r.name, "support": r.support.value,
                           "family": r.family, "fast": r.fast, "reason": r.reason}
                          for r in rows], indent=1))
        return 0
    for row in rows:
        fast = "fast" if row.fast else ""
        reason = f"  ({row.reason})" if row.reason else ""
        print(f"{row.number:>4}  {row.name:<24} {row.support.value:<10} {fast:<5} "
              f"{row.family}{reason}")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.support.value] = counts.get(row.support.value, 0) + 1
    print("total: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
          + f"; {sum(row.fast for row in rows)} served natively when they can be")
    return 0
