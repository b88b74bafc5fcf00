"""``kvmdune selftest --hostile``: attacks on the sandbox, each of which must fail."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "selftest", help="check that the sandbox contains hostile programs",
        description="Builds the containment corpus (a C program with one attack per case: "
                    "pointers at the VMM's memory, bad addresses and lengths, every "
                    "descriptor number, other entries into the supervisor, path escapes, "
                    "signals, ptrace/prctl/seccomp, fork/memory/CPU/disk bombs, huge "
                    "arguments) and runs each case under `kvmdune sandbox`. Prints a table; "
                    "exits 1 if any case was not contained.")
    parser.add_argument("--hostile", action="store_true", required=True,
                        help="run the containment corpus")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..sandbox.selftest import format_table, run_corpus

    outcomes = run_corpus(progress=lambda name: print(f"... {name}", file=sys.stderr,
                                                      flush=True))
    print(format_table(outcomes))
    return 0 if all(o.contained for o in outcomes) else 1
