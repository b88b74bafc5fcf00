"""``kvmdune run``: a Linux program in Dune mode."""

from __future__ import annotations

import argparse
import sys

from .sandbox import (add_call_path_options, add_policy_options, call_path_options,
                      capture_for_guest, execute, frozen_imports, tracer_for)
from .sizes import parse_guest_memory


def _policy_given(args: argparse.Namespace) -> bool:
    """Whether any sandbox option was used (``run`` is unrestricted otherwise)."""
    return any([args.profile, args.policy, args.allow_read, args.allow_write,
                args.allow_exec, args.net, args.allow_syscall, args.deny_syscall,
                args.on_deny, args.audit, args.mem, args.cpu, args.wall, args.max_procs,
                args.max_fsize, args.max_fds, args.env, args.clear_env, args.user,
                args.pass_fd])


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a Linux program in Dune mode",
        usage="kvmdune run [options] -- PROGRAM [ARGS...]",
        description="Run an unmodified x86-64 Linux program (static, static-pie or "
                    "dynamically linked, or a #! script) at CPL3 in a KVM virtual machine "
                    "of its own. It stays a normal Linux process: its system calls reach "
                    "Linux through the VMM, every pointer checked against the guest's own "
                    "memory. The exit status is the program's (128+N if signal N killed "
                    "it; 126/127 if it cannot be started). Programs built against the "
                    "Dune API (dune.h; see `kvmdune config`) get their own page tables, "
                    "fault handlers and user-mode code.",
        epilog="examples:\n  kvmdune run -- /bin/echo hello\n"
               "  kvmdune run --trace -- busybox ls /\n"
               "  kvmdune run --trace=out.txt -- bash -c 'echo $((6*7))'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", nargs="?", const="-", metavar="FILE",
                        help="print every system call in strace's format (to FILE, or "
                             "stderr), following children")
    parser.add_argument("--memory", type=parse_guest_memory, default=None, metavar="SIZE",
                        help="guest-physical memory to reserve (committed lazily), e.g. "
                             "4G (default)")
    parser.add_argument("--argv0", metavar="NAME",
                        help="the program's argv[0] (default: PROGRAM as given), as "
                             "bash's exec -a")
    add_policy_options(parser, "open")
    add_call_path_options(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="PROGRAM [ARGS...]")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # First, before the VMM opens anything: the caller's descriptors, for the guest.
    args.caller_fds = capture_for_guest()
    with frozen_imports():
        from ..linux.runner import RunOptions, run_command

    if _policy_given(args):
        if args.memory and not args.mem:
            args.mem = str(args.memory)
        return execute(args, "open")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("kvmdune run: no program given (usage: kvmdune run [options] -- PROGRAM "
              "[ARGS...])", file=sys.stderr)
        return 2
    options = RunOptions(tracer=tracer_for(args.trace), caller_fds=args.caller_fds,
                         **call_path_options(args),
                         **({"memory_size": args.memory} if args.memory else {}))
    return run_command(command, options=options)
