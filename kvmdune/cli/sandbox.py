"""``kvmdune sandbox``, the options it shares with ``kvmdune run``, and
``kvmdune policy show``."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Iterator

from . import inherited


POLICY_HELP = """\
policy precedence (lowest first): the profile's defaults, then --policy FILE, then
the options on the command line. Paths and system-call lists add up; single values
(--net, limits, --profile) are replaced; a call both allowed and denied is denied.

profiles:
  strict    stdin/stdout/stderr, read access to the program, its interpreter and
            libraries (/lib, /lib64, /usr/lib, /etc/ld.so.cache) and /dev/null,
            /dev/zero, /dev/urandom; nothing else; no network (sandbox's default)
  readonly  strict, plus the current directory tree readable
  open      everything allowed (run's default)
  trace     open, with every system call audited (--audit FILE, or stderr)

exit statuses: the program's own; 128+N after signal N (137: a wall-time or memory
limit, 152: a CPU limit, 153: the file-size limit, 159: a call denied with
--on-deny kill); 126/127 when the program cannot be started; 2 for a bad policy.
"""


def add_call_path_options(parser: argparse.ArgumentParser) -> None:
    """How system calls reach the VMM: the native fast path, or an exit each."""
    group = parser.add_argument_group("system calls")
    group.add_argument("--no-fast-syscalls", dest="fast_syscalls", action="store_false",
                       default=None,
                       help="serve every system call in the VMM after an exit, instead of "
                            "natively through the call ring where that gives the same "
                            "answer (also: KVMDUNE_FAST_SYSCALLS=0)")
    group.add_argument("--no-patch", dest="patch_sites", action="store_false", default=None,
                       help="leave the program's system-call instructions as they are, "
                            "instead of patching them to reach the call ring without "
                            "`syscall` (also: KVMDUNE_PATCH_SITES=0)")
    group.add_argument("--syscall-stats", action="store_true",
                       help="at exit, print how many calls were served natively and how "
                            "many by the VMM")


def call_path_options(args: argparse.Namespace) -> dict:
    """The RunOptions fields that ``add_call_path_options`` sets, and the Dune API
    that both commands offer their programs."""
    return {"fast_syscalls": args.fast_syscalls, "patch_sites": args.patch_sites,
            "syscall_stats": args.syscall_stats,
            "privileged": dune_api, "argv0": getattr(args, "argv0", None),
            "ignored_signals": inherited.caller_ignored()}


def dune_api(proc):
    """The Dune API of a process (kvmdune.dune), made on its first hypercall: the
    package is imported only then, so that other programs' start-up never pays."""
    from ..dune.process import DuneProcess

    return DuneProcess(proc)


def add_policy_options(parser: argparse.ArgumentParser, default_profile: str) -> None:
    group = parser.add_argument_group("policy")
    group.add_argument("--profile", choices=["strict", "readonly", "open", "trace"],
                       default=None, help=f"starting point (default: {default_profile})")
    group.add_argument("--policy", metavar="FILE", help="a TOML policy file")
    group.add_argument("--allow-read", action="append", default=[], metavar="PATH")
    group.add_argument("--allow-write", action="append", default=[], metavar="PATH")
    group.add_argument("--allow-exec", action="append", default=[], metavar="PATH")
    group.add_argument("--net", choices=["none", "loopback", "all"])
    group.add_argument("--allow-syscall", action="append", default=[], metavar="NAME")
    group.add_argument("--deny-syscall", action="append", default=[], metavar="NAME")
    group.add_argument("--on-deny", choices=["errno", "kill"],
                       help="answer a denied call with EACCES/EPERM (default) or kill")
    group.add_argument("--audit", metavar="FILE", help="JSON lines: every denied call "
                       "(every call with --profile trace)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--mem", metavar="SIZE", help="guest memory, e.g. 512M")
    limits.add_argument("--cpu", type=float, metavar="SECONDS", help="CPU time per process")
    limits.add_argument("--cpu-total", type=float, metavar="SECONDS",
                        help="CPU time of all the sandbox's processes together")
    limits.add_argument("--wall", type=float, metavar="SECONDS", help="wall time of the run")
    limits.add_argument("--max-procs", type=int, metavar="N", help="processes (per user)")
    limits.add_argument("--max-fsize", metavar="SIZE", help="largest file written")
    limits.add_argument("--max-fds", type=int, metavar="N", help="open descriptors")
    env = parser.add_argument_group("environment and privileges")
    env.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    env.add_argument("--clear-env", action="store_true", help="start from an empty environment")
    env.add_argument("--user", metavar="NAME",
                     help="when started as root, drop to this user once KVM is open "
                          "(sandbox default: nobody)")
    env.add_argument("--keep-root", action="store_true",
                     help="UNSAFE: keep root's rights (forwarded calls act as root)")
    env.add_argument("--pass-fd", action="append", type=int, default=[], metavar="N",
                     help="give the program descriptor N of the caller (e.g. with "
                          "3<FILE), checked as if it had opened it; only 0-2 are "
                          "given otherwise (repeatable)")
    parser.add_argument("--quiet", action="store_true",
                        help="no notes on stderr about denied calls and the options "
                             "that would allow them")
    parser.add_argument("--no-confine", dest="confine", action="store_false",
                        help="do not confine the VMM process itself (no_new_privs, a "
                             "seccomp filter, Landlock): one line of defence, the "
                             "supervisor's checks, instead of two")


def build_policy(args: argparse.Namespace, default_profile: str):
    from ..sandbox.policy import Profile, load_policy_file, merge, profile_defaults

    policy = profile_defaults(Profile(args.profile or default_profile))
    if args.policy:
        policy = load_policy_file(args.policy, None if args.profile else policy)
        if args.profile:
            policy = merge(policy, source=f"--profile {args.profile}")
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            from ..sandbox.policy import PolicyError
            raise PolicyError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    limits = {key: value for key, value in (
        ("memory", args.mem), ("cpu", args.cpu), ("cpu-total", args.cpu_total),
        ("wall", args.wall),
        ("max-procs", args.max_procs), ("max-fsize", args.max_fsize),
        ("max-fds", args.max_fds)) if value is not None}
    return merge(policy, read=args.allow_read, write=args.allow_write,
                 execute=args.allow_exec, net=args.net, allow_syscalls=args.allow_syscall,
                 deny_syscalls=args.deny_syscall, limits=limits, env=env,
                 clear_env=True if args.clear_env else None, on_deny=args.on_deny,
                 source="command line")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sandbox", help="run an untrusted program under a policy (strict by default)",
        usage="kvmdune sandbox [options] -- PROGRAM [ARGS...]",
        description="Run an untrusted x86-64 Linux program in Dune mode under a policy: "
                    "every system call and its arguments are checked by the supervisor "
                    "outside the VM before anything reaches Linux.",
        epilog=POLICY_HELP + "\nexamples:\n"
               "  kvmdune sandbox -- /bin/ls /          (denied: / is not readable)\n"
               "  kvmdune sandbox --allow-read /etc -- cat /etc/hostname\n"
               "  kvmdune sandbox --profile readonly --audit audit.jsonl -- busybox find .\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_policy_options(parser, "strict")
    add_call_path_options(parser)
    parser.add_argument("--trace", nargs="?", const="-", metavar="FILE",
                        help="strace-format lines of every call")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="PROGRAM [ARGS...]")
    parser.set_defaults(handler=run_sandbox, default_profile="strict")

    show = subparsers.add_parser(
        "policy", help="show the effective policy of a set of options",
        description="`kvmdune policy show [options]` prints the policy that `kvmdune "
                    "sandbox` with the same options would enforce.",
        epilog=POLICY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("action", choices=["show"])
    add_policy_options(show, "strict")
    show.add_argument("--program", metavar="PROGRAM",
                      help="also show the paths the program itself is given")
    show.set_defaults(handler=run_policy_show)


def run_policy_show(args: argparse.Namespace) -> int:
    from ..sandbox.policy import PolicyError

    try:
        policy = build_policy(args, "strict")
        if args.program:
            policy = _with_program(policy, args.program)
    except PolicyError as exc:
        print(f"kvmdune policy: {exc}", file=sys.stderr)
        return 2
    import json

    print(json.dumps(policy.describe(), indent=2))
    return 0


def _with_program(policy, program: str):
    from ..linux.elf import ExecFormatError, load_elf
    from ..linux.exec import resolve_command

    path = resolve_command(program)
    try:
        interp = load_elf(path).interp
    except ExecFormatError:
        interp = None
    return policy.for_program(os.path.realpath(path), os.path.realpath(interp) if interp else None)


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Import a run's modules with the cyclic garbage collector paused, then exempt
    everything that exists -- those modules, their classes and tables -- from it.

    They live until the process exits and hold no garbage, yet the collector
    would walk them over and over while they are imported, in every full
    collection of the run, and once more at exit (that walk alone costs tens of
    milliseconds). Objects the run creates are collected as usual: freezing only
    moves the existing ones to a generation the collector skips.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def tracer_for(trace: str | None):
    """The ``--trace`` tracer, or None: the strace formatter is imported only when tracing."""
    if not trace:
        return None
    from ..linux.trace import open_tracer

    return open_tracer(trace)


def capture_for_guest():
    """The caller's descriptors, for the guest (``capture_caller_fds(detach=True)``),
    less a resident worker's own (cli/resident.py: the client's /dev/kvm, its
    connection), which are the VMM's."""
    from ..linux.fdtable import capture_caller_fds
    from . import worker_fds

    caller = capture_caller_fds(detach=True)
    worker_fds.reclaim(caller)
    return caller


def run_sandbox(args: argparse.Namespace) -> int:
    # First, before the VMM opens anything: the caller's descriptors (--pass-fd).
    args.caller_fds = capture_for_guest()
    return execute(args, args.default_profile)


def execute(args: argparse.Namespace, default_profile: str) -> int:
    """Run ``args.command`` under the policy the options describe."""
    with frozen_imports():
        from ..linux.elf import ExecFormatError, exit_status_for
        from ..linux.runner import RunOptions, describe_exec_error, run_command
        from ..sandbox.guard import SandboxGate
        from ..sandbox.policy import PolicyError

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("kvmdune: no program given (usage: ... -- PROGRAM [ARGS...])", file=sys.stderr)
        return 2
    try:
        policy = build_policy(args, default_profile)
        policy = _with_program(policy, command[0])
    except PolicyError as exc:
        print(f"kvmdune: bad policy: {exc}", file=sys.stderr)
        return 2
    except ExecFormatError as exc:
        print(f"kvmdune: {describe_exec_error(exc)}", file=sys.stderr)
        return exit_status_for(exc)
    audit = None
    if args.audit:
        audit = open(args.audit, "a", buffering=1)
    elif policy.audit_everything:
        audit = os.fdopen(os.dup(2), "w", buffering=1)
    user = args.user
    if user is None and default_profile == "strict" and not args.keep_root and os.geteuid() == 0:
        user = "nobody"
    if args.keep_root:
        user = None
    from ..linux.runner import user_exists

    # An unknown user is the run's to report (status 125), before anything is loaded.
    if user is not None and os.geteuid() == 0 and user_exists(user):
        problem = _unreadable_after_drop(user, command[0], policy, args, args.user is None)
        if problem is not None:
            print(f"kvmdune: {problem}", file=sys.stderr)
            return 126
    gate = None
    if not (policy.all_paths and not policy.deny_syscalls and audit is None
            and default_profile == "open"):
        # The group first: the gate judges signals against the group it finds.
        _own_process_group()
        gate = SandboxGate(policy, audit,
                           notices=None if getattr(args, "quiet", False) else _notice_writer(),
                           confine=getattr(args, "confine", False))
    environment = {} if policy.clear_env else dict(os.environ)
    environment.update(dict(policy.env))
    limits = policy.limits
    memory = {} if limits.memory is None else {
        "memory_size": max(64 << 20, -(-limits.memory // (2 << 20)) * (2 << 20))}
    options = RunOptions(tracer=tracer_for(args.trace), gate=gate,
                         wall_seconds=limits.wall, cpu_seconds=limits.cpu,
                         file_size=limits.file_size, max_fds=limits.fds,
                         max_processes=limits.processes, user=user, **memory,
                         caller_fds=args.caller_fds, pass_fds=tuple(args.pass_fd),
                         **call_path_options(args))
    if default_profile == "open" and gate is None:
        return run_command(command, env=environment, options=options)
    return _contained_run(command, environment, options, limits.cpu_total)


def _notice_writer():
    """Lines to a private duplicate of stderr (the guest may close or move its fd 2);
    None when there is no stderr to write to."""
    try:
        fd = os.dup(2)
    except OSError:
        return None
    os.set_inheritable(fd, False)

    def write(text: str) -> None:
        try:
            os.write(fd, (text + "\n").encode("utf-8", "surrogateescape"))
        except OSError:
            pass
    return write


#: What writing into a path takes: a directory's entries, or the file itself.
_WRITE_ACCESS = {True: os.W_OK | os.X_OK, False: os.W_OK}


def _unreadable_after_drop(user: str, program: str, policy, args, by_default: bool) -> str | None:
    """What ``user`` could not read of the program or of the paths the options name
    (the run drops to it before it loads the program), as a message with what to do;
    None if nothing. The program's failure ends the run; the paths only get a note."""
    import pwd

    from ..linux.elf import ExecFormatError
    from ..linux.exec import resolve_command

    entry = pwd.getpwnam(user)
    try:
        path = resolve_command(program)
    except ExecFormatError:
        return None            # the run says what is wrong with it
    named = [(option, path) for option, paths in (("--allow-read", args.allow_read),
                                                  ("--allow-write", args.allow_write),
                                                  ("--allow-exec", args.allow_exec))
             for path in paths]
    why = "by default " if by_default else ""
    advice = ("choose a user who can with --user NAME, or keep root's rights with "
              "--keep-root (unsafe: forwarded calls then act as root)")
    existing = [(option, os.path.abspath(p)) for option, p in named if os.path.exists(p)]
    with _acting_as(entry):
        program_unreadable = not os.access(path, os.R_OK, effective_ids=True)
        unreadable = [(option, p, "reach it") for option, p in existing
                      if not os.access(p, os.R_OK, effective_ids=True)]
        # Allowed to write, but the user cannot: every write there fails with EACCES
        # from Linux itself, which the policy's notes and audit never see.
        unreadable += [(option, p, "write there") for option, p in existing
                       if option == "--allow-write" and (option, p, "reach it") not in unreadable
                       and not os.access(p, _WRITE_ACCESS[os.path.isdir(p)], effective_ids=True)]
    if not getattr(args, "quiet", False):
        for option, p, what in unreadable:
            print(f"kvmdune sandbox: note: {option} {p}: user {user} cannot {what} "
                  f"(the sandbox runs as {user} {why}once KVM is open); {advice}",
                  file=sys.stderr)
    if program_unreadable:
        return (f"{path}: Permission denied: the sandbox drops to user {user} {why}before it "
                f"loads the program, and {user} cannot read it. Move it where {user} can "
                f"read it, {advice}.")
    return None


@contextlib.contextmanager
def _acting_as(entry) -> Iterator[None]:
    """Root's effective identity switched to ``entry`` for file checks, then back."""
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(entry.pw_gid)
    os.seteuid(entry.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def _own_process_group() -> None:
    """Make this process the leader of a process group of its own (the sandbox's)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass    # already a group leader (a session leader cannot move)


def _contained_run(command, environment, options, cpu_total: float | None = None) -> int:
    """Run in a process group of its own, and leave no process of it behind."""
    import signal

    from ..linux.runner import run_command

    _own_process_group()
    group = os.getpgrp()
    if cpu_total is not None:
        _watch_total_cpu(group, cpu_total)
    status = run_command(command, env=environment, options=options)
    for _ in range(100):     # a fork bomb may still be forking: until none is left
        left = _others_in_group(group)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return status


CPU_POLL_SECONDS = 0.1


def _group_cpu_seconds(group: int) -> float:
    """CPU time used so far by the group's live processes and the children they reaped."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:      # pgrp
            total += sum(int(v) for v in fields[11:15])   # utime stime cutime cstime
    return total / ticks


def _watch_total_cpu(group: int, limit: float) -> None:
    """A watcher thread (all signals blocked in it) that ends the whole sandbox when
    its processes together have used ``limit`` seconds of CPU."""
    import signal
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(CPU_POLL_SECONDS)
            if _group_cpu_seconds(group) >= limit:
                os.write(2, f"kvmdune: total CPU limit of {limit:g} s reached: the sandbox "
                            "was killed (status 152)\n".encode())
                for pid in _others_in_group(group):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                os.kill(os.getpid(), signal.SIGXCPU)   # the guest here dies of it
                return

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        threading.Thread(target=watch, daemon=True).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _others_in_group(group: int) -> list[int]:
    """The processes other than this one in ``group``."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                if os.getpgid(int(entry)) == group:
                    found.append(int(entry))
            except OSError:
                continue
    return found
