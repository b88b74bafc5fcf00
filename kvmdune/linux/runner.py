"""Running a Linux program in Dune mode from start to exit status."""

from __future__ import annotations

import os
import resource
import time
import signal as host_signal
from dataclasses import dataclass
from typing import Callable, Protocol

from ..machine import Machine, sigmask
from ..memory.guest_memory import DEFAULT_GUEST_MEMORY
from . import host_signals, internal_error, profiling
from . import signals as sig
from .abi import PrctlOption
from .elf import EXIT_VMM_FAILED, ExecFormatError, exit_status_for
from .exec import exec_command, resolve_command
from .fdtable import NR_OPEN, STANDARD_STREAMS, CallerFds, FdTable, capture_caller_fds
from .host_unsafe import host_syscall
from .syscall_table import SYSCALLS, Sysno
from .exit_status import ExitStatus
from .gate import Gate
from .privileged import PrivilegedFactory
from .process import Process
from .procfs import opened_vmm_entry
from .sys_resource import guest_limits


@dataclass(frozen=True)
class RunOptions:
    memory_size: int = DEFAULT_GUEST_MEMORY
    tracer: Callable | None = None
    gate: "Gate | None" = None              # a policy layer's verdicts (the sandbox)
    wall_seconds: float | None = None       # the whole run's wall-time limit
    cpu_seconds: float | None = None        # CPU time per process (RLIMIT_CPU)
    file_size: int | None = None            # RLIMIT_FSIZE
    max_fds: int | None = None
    max_processes: int | None = None        # RLIMIT_NPROC (per user: exact after a drop)
    user: str | None = None                 # drop to this user once KVM is open
    #: Serve what can be served without an exit natively (fastpath.py); None: on
    #: unless the environment says KVMDUNE_FAST_SYSCALLS=0.
    fast_syscalls: bool | None = None
    #: Patch system-call sites to reach the call ring without ``syscall``
    #: (sitepatch.py); None: on unless KVMDUNE_PATCH_SITES=0. Needs the fast path.
    patch_sites: bool | None = None
    syscall_stats: bool = False             # report how the calls were served, at exit
    #: The caller's descriptors as the VMM found them at start (capture_caller_fds);
    #: None: run_command captures them itself.
    caller_fds: CallerFds | None = None
    #: Under a gate, the caller's descriptors beyond 0-2 the guest is given (each
    #: checked as if the guest had opened it); without one it is given them all.
    pass_fds: tuple[int, ...] = ()
    #: Gives a process privileged features on its first hypercall (the Dune API:
    #: ``kvmdune.dune``); None: hypercalls fail with ENOSYS, as on Linux.
    privileged: "PrivilegedFactory | None" = None
    #: The program's argv[0] when it is not PROGRAM as given (bash's ``exec -a``).
    argv0: str | None = None
    #: Called every ``ticker.interval`` seconds at an event boundary (``kvmdune wss``).
    ticker: Ticker | None = None
    #: The signals the caller left ignored, which the program starts ignoring (as
    #: across execve); None: this process's own dispositions (sig.inherited_ignored).
    ignored_signals: frozenset[int] | None = None


def patch_sites_wanted(options: RunOptions) -> bool:
    """Whether the loader patches system-call sites: only with the fast path, whose
    ring they reach (tracing turns both off)."""
    from . import fastpath, sitepatch

    return (options.tracer is None and fastpath.wanted(options.fast_syscalls)
            and sitepatch.wanted(options.patch_sites))


def _site_patching(options: RunOptions, path: str) -> bool:
    """``patch_sites_wanted``, and where their analyses may be cached: not on disk
    where the gate lets the guest write. The program's own (and its libraries')
    are made now, before privileges are dropped."""
    from . import sitepatch

    if not patch_sites_wanted(options):
        return False
    sitepatch.use_disk_cache(options.gate is None
                             or not options.gate.guest_may_write(sitepatch.cache_directory()))
    sitepatch.prewarm(path)
    return True


class Ticker(Protocol):
    """Something done every ``interval`` seconds of a run, at an event boundary: the
    run loop stops the vCPU with a time budget (a timer kick, as for the wall-time
    limit) and calls ``tick`` while it is stopped, so the ticker may read and change
    the page tables (never from another thread while the vCPU runs). ``finish`` is
    called once the program has exited. A forked child does not tick."""

    interval: float

    def tick(self, process: Process) -> None: ...

    def finish(self, process: Process) -> None: ...


#: The status when a descriptor to pass cannot be given (as for a bad policy).
BAD_OPTIONS_STATUS = 2


def run_command(argv: list[str], env: dict[str, str] | None = None,
                options: RunOptions = RunOptions(),
                log: Callable[[str], None] | None = None) -> int:
    """Run ``argv`` (PROGRAM resolved on PATH) in Dune mode; the shell-style exit
    status (126/127 when it cannot start, 128+N after signal N)."""
    caller = options.caller_fds if options.caller_fds is not None else capture_caller_fds()
    try:
        return _run_command(argv, env, options, log, caller)
    finally:
        caller.close()


def _run_command(argv: list[str], env: dict[str, str] | None, options: RunOptions,
                 log: Callable[[str], None] | None, caller: CallerFds) -> int:
    environment = dict(os.environ if env is None else env)
    say = log or (lambda text: os.write(2, (text.rstrip("\n") + "\n").encode()))
    try:
        path = resolve_command(argv[0], environment.get("PATH"))
    except ExecFormatError as exc:
        say(f"kvmdune: {describe_exec_error(exc)}")
        return exit_status_for(exc)
    envp = [f"{key}={value}".encode() for key, value in environment.items()]
    if options.argv0 is not None:
        argv = [options.argv0, *argv[1:]]
    args = [arg.encode("utf-8", "surrogateescape") for arg in argv]
    if options.user is not None and not user_exists(options.user):
        say(f"kvmdune: no user named {options.user!r} here (--user)")
        return EXIT_VMM_FAILED
    profiling.start()
    try:
        machine = Machine(options.memory_size)
    except OSError as exc:     # the reservation itself (mmap) failed
        say(f"kvmdune: cannot reserve {options.memory_size >> 20} MiB of guest memory "
            f"({os.strerror(exc.errno or 0)}): ask for less with --memory")
        return EXIT_VMM_FAILED
    with machine:
        apply_limits(options)
        patch_sites = _site_patching(options, path)
        if options.user is not None:
            drop_privileges(options.user)
        try:
            filename, new = exec_command(machine, path, args, envp, patch_sites=patch_sites)
        except ExecFormatError as exc:
            say(f"kvmdune: {describe_exec_error(exc)}")
            return exit_status_for(exc)
        process = Process(machine, tracer=options.tracer, log=log, gate=options.gate,
                          privileged=options.privileged)
        process.sighand.ignore(options.ignored_signals if options.ignored_signals is not None
                               else sig.inherited_ignored())
        refused = give_caller_fds(process, caller, options)
        if refused is not None:
            say(f"kvmdune: {refused}")
            return BAD_OPTIONS_STATUS
        process.replace_image(new.space, new.mm, new.exe, new.argv, envp, new.loaded.entry,
                              new.loaded.sp, new.loaded.auxv, filename=filename)
        try:
            process.start_fast_path(options.fast_syscalls)
        except OSError as exc:     # its thread counts against RLIMIT_NPROC too
            say(f"kvmdune: {path}: cannot start the thread that serves system calls "
                f"({os.strerror(exc.errno or 0)}): the process limit (RLIMIT_NPROC) is "
                "reached; raise it (--max-procs) or use --no-fast-syscalls")
            return EXIT_VMM_FAILED
        try:
            process.signal_taker.start()
        except OSError as exc:
            say(f"kvmdune: {path}: cannot start the thread that takes the guest's signals "
                f"({os.strerror(exc.errno or 0)}): the process limit (RLIMIT_NPROC) is "
                "reached; raise it (--max-procs)")
            return EXIT_VMM_FAILED
        # The child of a fork from a thread other than the main one ends where that
        # thread's loop ends (threads.py), not here: the same cleanup, then its exit.
        process.threads.end_process = lambda status: _end_child_of_thread(process, status)
        try:
            status = run_process(process, options.wall_seconds, options.ticker)
        finally:
            disarm_interval_timers()
            if options.syscall_stats:
                process.log(describe_call_stats(process))
            process.cleanup()
        if process.forked:
            # Its exit releases the VM, the vCPU, guest memory and the fast path's
            # thread at once; closing them one by one first costs milliseconds.
            end_forked_child(status)
        closing = time.perf_counter()
    profiling.add_phase("exit.machine_close", time.perf_counter() - closing)
    profiling.finish()
    return status.shell_status


def give_caller_fds(process: Process, caller: CallerFds, options: RunOptions) -> str | None:
    """Start the guest with the caller's descriptors under their own numbers (all of
    them without a gate; under one, 0-2 and ``pass_fds``, each checked as if newly
    opened: an inherited directory would otherwise bypass the path rules) and the
    caller's resource limits; what went wrong, or None."""
    numbers = set(caller.held) if options.gate is None else set(STANDARD_STREAMS)
    for fd in options.pass_fds:
        refused = _refuse_passed(process, caller, fd)
        if refused is not None:
            return refused
        numbers.add(fd)
    # The VMM's own /proc entries (a /proc/self/fd the caller opened before it
    # became the VMM) would reach its descriptors: closed for the guest.
    numbers = {fd for fd in numbers
               if fd not in caller.held or not opened_vmm_entry(caller.held[fd])}
    soft, hard = caller.nofile
    if options.max_fds is not None:
        soft, hard = min(soft, options.max_fds), min(hard, options.max_fds)
    process.fds.close_all()
    process.fds = FdTable.from_caller(caller, numbers, min(soft, NR_OPEN))
    caller.close()
    process.rlimits = guest_limits((soft, hard))
    return None


def _refuse_passed(process: Process, caller: CallerFds, fd: int) -> str | None:
    """Why the caller's ``fd`` cannot be passed to the guest, or None."""
    host = caller.held.get(fd)
    if host is None:
        return (f"--pass-fd {fd}: descriptor {fd} is not open (open it where kvmdune "
                f"is started, e.g. {fd}<FILE)")
    if process.gate is None:
        return None
    refused = process.gate.check_passed(process, host)
    if refused is None:
        return None
    try:
        what = os.readlink(f"/proc/self/fd/{host}")
    except OSError:
        what = "?"
    advice = ("allow its network with --net" if what.startswith("socket:") else
              "allow its file with --allow-read or --allow-write")
    return (f"--pass-fd {fd} ({what}): refused by the policy ({os.strerror(-refused)}): "
            f"{advice}, or do not pass it")


def describe_exec_error(exc: ExecFormatError) -> str:
    """``PATH: what is wrong (strerror)``, as a shell would say it, with the detail."""
    text = exc.message
    if exc.path and not text.startswith(exc.path):
        text = f"{exc.path}: {text}"
    reason = os.strerror(exc.errno)
    return text if reason.lower() in text.lower() else f"{text} ({reason})"



def apply_limits(options: RunOptions) -> None:
    """Kernel-enforced limits on this process (and so on the guest it serves)."""
    for limit, value in ((resource.RLIMIT_CPU, options.cpu_seconds),
                         (resource.RLIMIT_FSIZE, options.file_size),
                         (resource.RLIMIT_NPROC, options.max_processes)):
        if value is not None:
            soft = int(-(-value // 1))
            resource.setrlimit(limit, (soft, soft + 1 if limit == resource.RLIMIT_CPU else soft))


def user_exists(user: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def drop_privileges(user: str) -> None:
    """Become ``user`` (KVM is open already): forwarded calls then never act with
    root's rights. What is imported lazily is imported first: the new user may not
    be able to read this Python installation."""
    import pwd

    from ..machine.disasm import _decoder
    _decoder()
    internal_error.prepare()
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PermissionError(f"could not drop root privileges to {user}")


def run_process(process: Process, wall_seconds: float | None = None,
                ticker: Ticker | None = None) -> ExitStatus:
    """Run until the guest exits or is killed (or its wall-time limit passes): the
    main thread runs the first guest thread, others run on threads of their own
    (threads.py). With a ``ticker``, the main thread stops at an event boundary every
    ``ticker.interval`` seconds and ticks it, holding the process's lock."""
    # Not dumpable: other processes of the same user (other guests among them) cannot
    # read this VMM's memory through /proc/<pid>/mem or attach to it.
    host_syscall(Sysno.prctl, PrctlOption.PR_SET_DUMPABLE, 0)
    # The guest's host signals: held by every VMM thread, taken by the vCPU thread
    # they interrupt or by the signal-taking thread (host_signals.py).
    previous_mask = host_signals.hold_on_this_thread()
    process.machine.set_run_signal_mask(host_signals.RUN_SIGNAL_MASK)
    process.signal_taker.start()          # (started already by ``run``)
    try:
        group = process.threads
        group.wall_seconds = wall_seconds
        group.deadline = None if wall_seconds is None else time.monotonic() + wall_seconds
        ticks = _Ticks(ticker)
        group.ticks = ticks
        # A memory slot for the program's first shared file mappings (python3's
        # gconv cache), registered while it starts instead of when it maps one.
        with sigmask.blocked_for_new_threads():
            process.machine.memory.start_spare_slot()
        status = group.run_main()
        if not group.killed_at_wall_time:
            ticks.finish(process)
        return status
    finally:
        process.signal_taker.stop()
        host_signals.discard_pending()
        sigmask.set_mask(previous_mask)


def _end_child_of_thread(process: Process, status: ExitStatus) -> None:
    """The end of a forked child whose only thread is not the VMM's first one."""
    process.signal_taker.stop()
    disarm_interval_timers()
    process.cleanup()
    end_forked_child(status)


class _Ticks:
    """When the run loop next stops for its ticker; only the process that started
    the run ticks (a forked child runs on without it)."""

    def __init__(self, ticker: Ticker | None) -> None:
        self.ticker = ticker
        self.owner = os.getpid()
        self.next_at = None if ticker is None else time.monotonic() + ticker.interval

    def _mine(self) -> bool:
        if self.ticker is not None and os.getpid() != self.owner:
            self.ticker = self.next_at = None
        return self.ticker is not None

    def tick(self, process: Process) -> None:
        if not self._mine() or time.monotonic() < self.next_at:
            return
        self.ticker.tick(process)
        # The next tick is one interval after this one was due, or after now when a
        # long stretch without events (a blocking call) made it late.
        self.next_at = max(self.next_at + self.ticker.interval,
                           time.monotonic() + self.ticker.interval / 2)

    def finish(self, process: Process) -> None:
        if self._mine():
            self.ticker.finish(process)


def describe_call_stats(process: Process) -> str:
    """One line: how many system calls the fast path served, refused, handed over."""
    if process.fast is None:
        return (f"kvmdune: {process.exe}: system calls: the fast path is off "
                "(every call was served by the VMM)")
    stats = process.fast.stats()
    return (f"kvmdune: {process.exe} (pid {os.getpid()}): system calls: "
            f"{stats['fast']} served natively, {stats['denied']} refused natively, "
            f"{stats['slow']} served by the VMM; {stats['fd_table']} of the native ones "
            f"changed the descriptor table; {process.vmm_calls} calls reached the VMM in "
            f"all; the serving thread slept "
            f"{stats['sleeps']} times; the guest exited to wait {stats['waits']} times "
            f"({stats['native_waits']} answered without Python, "
            f"{stats['served_by_vmm_thread']} calls then served by the VMM's thread, "
            f"{stats['handoffs']} handed to it to wait for I/O, "
            f"{stats['direct_spells']} spells without the thread); "
            f"{stats['vmm']} hypercalls served natively"
            + (f", {stats['remembered_stats']} stats answered from the sandbox's earlier "
               "check by name" if stats['remembered_stats'] else "")
            + "".join(f", {count} {what}" for what, count in privileged_counts(process).items())
            + _most_frequent_vmm_calls(process))


#: How many call names --syscall-stats lists among those the VMM served.
STATS_NAMED_CALLS = 12


def _most_frequent_vmm_calls(process: Process) -> str:
    """The calls the VMM served most often, by name and count ("" when none)."""
    ranked = sorted(process.vmm_calls_by_number.items(), key=lambda item: -item[1])
    named = [f"{SYSCALLS[number].name if number in SYSCALLS else number} {count}"
             for number, count in ranked[:STATS_NAMED_CALLS]]
    return f"; served by the VMM: {', '.join(named)}" if named else ""


def privileged_counts(process: Process) -> dict[str, int]:
    """What the process's privileged features did natively (nothing without them)."""
    return process.privileged.native_counts() if process.privileged is not None else {}


def disarm_interval_timers() -> None:
    """The guest's interval timers are this process's: they die with the guest, not
    fire into the VMM's teardown (where Python's default handlers are back)."""
    for which in (host_signal.ITIMER_REAL, host_signal.ITIMER_VIRTUAL,
                  host_signal.ITIMER_PROF):
        host_signal.setitimer(which, 0)


def end_forked_child(status: ExitStatus) -> None:
    """A forked guest process ends the way its parent's wait4 must see it: exit
    code, or death by the same signal (without a core dump of the VMM)."""
    profiling.finish()
    if status.code is not None:
        os._exit(status.code)
    signo = status.signal or sig.Signal.SIGKILL
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if signo not in (sig.Signal.SIGKILL, sig.Signal.SIGSTOP):   # these cannot be caught
        try:
            host_signal.signal(signo, host_signal.SIG_DFL)
        except (OSError, ValueError):   # glibc's own (32): never given a handler here
            pass
    sigmask.unblock(sigmask.bit(signo))
    os.kill(os.getpid(), signo)
    os._exit(128 + signo)
