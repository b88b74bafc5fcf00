"""The ``kvmdune`` command: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..linux.internal_error import DEBUG_VARIABLE
from . import bench, info, run, sandbox, selftest, syscalls

DESCRIPTION = """\
kvmdune: Dune (OSDI 2012) on the standard Linux KVM API.

A Dune-mode process is an ordinary Linux process that runs inside hardware
virtualization, with its own page tables, fault handling and privilege rings.
"""

EPILOG = """\
examples:
  kvmdune run -- /bin/echo hi  run a Linux program in Dune mode
  kvmdune sandbox --allow-read /etc -- cat /etc/hostname
                               an untrusted program under a policy
  kvmdune info                 is KVM usable here, and how fast is it?
  kvmdune info --json          the same as one JSON object
  kvmdune bench core           the core costs beside their Linux equivalents
  kvmdune syscalls --only refused   which system calls are not served, and why
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvmdune", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kvmdune {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an internal error, print its details on stderr (they go "
                             "to a file otherwise)")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (run, sandbox, info, bench, syscalls, selftest):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    if args.debug:
        # An environment variable, so that forked VMM processes inherit it.
        os.environ[DEBUG_VARIABLE] = "1"
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
