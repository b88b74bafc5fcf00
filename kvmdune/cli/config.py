"""``kvmdune config``: the compiler flags for programs that use the Dune API."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  gcc -static -o prog prog.c $(kvmdune config --cflags --libs)
  gcc -o prog prog.c $(kvmdune config --cflags --libs)     (dynamic works too)
  kvmdune run -- ./prog            (started natively, dune_init re-runs it under kvmdune)
  kvmdune config --pkg-config > kvmdune.pc && PKG_CONFIG_PATH=. pkg-config --libs kvmdune

The program includes <dune.h>, libdune's API (dune_init, dune_enter, dune_vm_*,
handlers, dune_jump_to_user, ...); the hypercall ABI underneath is in
<kvmdune/hypercall.h> and the upcall frame in <kvmdune/upcall.h>.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="compiler flags for C programs that use the Dune API",
        description="Print the flags that compile a C program against the Dune API "
                    "(dune.h, source-compatible with libdune) and link it with kvmdune's "
                    "library; with both options, the compile flags come first.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cflags", action="store_true",
                        help="the preprocessor flags (the include directory)")
    parser.add_argument("--libs", action="store_true",
                        help="the linker flags (put them after the program's sources)")
    parser.add_argument("--pkg-config", action="store_true",
                        help="a pkg-config file (kvmdune.pc) for this installation")
    parser.set_defaults(handler=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    from ..dune import library

    if not (args.cflags or args.libs or args.pkg_config):
        args.parser.print_help()
        return 2
    if args.pkg_config:
        sys.stdout.write(library.pkg_config())
        return 0
    flags = library.cflags() if args.cflags else []
    if args.libs:
        try:
            flags += library.libs()
        except library.LibraryNotBuilt as exc:
            print(f"kvmdune: {exc}", file=sys.stderr)
            return 1
    print(" ".join(flags))
    return 0
