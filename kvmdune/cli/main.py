"""The ``kvmdune`` command: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .. import __version__
from ..linux import internal_error
from ..linux.internal_error import DEBUG_VARIABLE, debugging
from . import bench, config, info, run, sandbox, selftest, syscalls, wss

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
  kvmdune wss -- ./prog        its working-set size over time (A/D bits)
  kvmdune syscalls --only refused   which system calls are not served, and why
  gcc -static prog.c $(kvmdune config --cflags --libs)
                               a C program that uses the Dune API (dune.h)
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
    for module in (run, sandbox, info, bench, syscalls, selftest, config, wss):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """The command; ``parser`` is ``build_parser()``'s, built ahead by a resident server
    (argparse's gettext look-ups alone take milliseconds)."""
    parser = parser or build_parser()
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
        return 128 + signal.SIGINT
    except BrokenPipeError:
        return _reader_went_away()
    except Exception as exc:      # the one place a user's error becomes a message
        if debugging():
            raise
        from ..linux.elf import EXIT_VMM_FAILED   # not imported by every command's start

        explained = describe_error(exc)
        if explained is not None:
            print(f"kvmdune: {explained}", file=sys.stderr)
        else:
            internal_error.report(_to_stderr, f"kvmdune {argv_command(args)}", exc)
        return EXIT_VMM_FAILED


def describe_error(exc: Exception) -> str | None:
    """One line for an error a user can act on (what happened and, where known, what
    to do); None for a bug of ours."""
    from ..kvm import KvmError

    if isinstance(exc, KvmError):
        return exc.one_line()
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return None


def argv_command(args: argparse.Namespace) -> str:
    return getattr(args.handler, "__module__", "").rsplit(".", 1)[-1] or "command"


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _reader_went_away() -> int:
    """stdout's reader closed the pipe (``kvmdune syscalls | head``): stop quietly with
    the status of a process killed by SIGPIPE, as a C program would end."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())   # the final flush must not fail again
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
