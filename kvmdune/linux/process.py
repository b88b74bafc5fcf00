"""A Linux process in Dune mode: the guest program, its address space, descriptors
and signals, and the event handler that gives it the Linux ABI.

System calls go to the handlers registered in ``dispatch`` (emulated ones and the
declarative forwarder); faults either page in memory the program owns or become
signals; host signals meant for the process are delivered at event boundaries.
"""

from __future__ import annotations

import enum
import os
import shutil
import signal as host_signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from ..kvm import KvmError
from ..machine import (Action, Cpu, ExceptionEvent, Handler, Machine, PageFaultEvent,
                       Stop, SyscallEvent)
from ..memory import AddressSpace, OutOfGuestMemory
from . import signals as sig
from .abi import Errno, SigactionFlags, SigHandler, Signal, signal_name
from . import procfs, task_name
from .dispatch import HANDLERS
from .forking import ForkHandshake
from .forward import NotForwardable, forward, host_fd_cloexec
from .fdtable import FdTable
from .mm import MemoryMap
from .syscall_table import SYSCALLS
from .fastpath import THREAD_STATE_CALLS
from .uaccess import Fault

#: System calls Linux restarts after a handler with SA_RESTART (the rest report EINTR).
NOT_RESTARTED = {"nanosleep", "clock_nanosleep", "pause", "rt_sigsuspend", "poll", "ppoll",
                 "select", "pselect6", "epoll_wait", "epoll_pwait", "rt_sigtimedwait"}


@dataclass(frozen=True)
class ExitStatus:
    """How the guest ended: an exit code, or a signal."""

    code: int | None = None
    signal: int | None = None

    @property
    def shell_status(self) -> int:
        """What a shell reports: the code, or 128 + the signal number."""
        return self.code if self.code is not None else 128 + (self.signal or 0)

    def describe(self) -> str:
        if self.code is not None:
            return f"exited with status {self.code}"
        return f"killed by {signal_name(self.signal or 0) or self.signal}"


class Process(Handler):
    """The Linux personality of one guest process (one VM, one vCPU)."""

    def __init__(self, machine: Machine, *, tracer: "Callable | None" = None,
                 log: "Callable[[str], None] | None" = None,
                 gate: "Gate | None" = None) -> None:
        self.machine = machine
        self.cpu = machine.cpu
        self.fds = FdTable.with_standard_streams()
        self.signals = sig.SignalState()
        self.space: AddressSpace | None = None
        self.mm: MemoryMap | None = None
        self.exe = ""
        self.argv: list[bytes] = []
        self.envp: list[bytes] = []
        self.auxv: tuple[tuple[int, int], ...] = ()
        self.tracer = tracer
        self.gate = gate
        self.log = log or _stderr_log()
        self.forked = False
        self.vfork_done: int | None = None   # write end of the pipe a vfork parent waits on
        self.comm = b""
        self.clear_child_tid = 0
        self._transient: list[int] = []
        #: Host directories standing for guest /proc directories: host path -> guest path.
        self.scratch_dirs: dict[str, str] = {}
        self.pinned_paths: dict[bytes, bytes] = {}
        self.fast = None          # the native fast path (fastpath.FastPath), once started
        self._handlers = {number: HANDLERS.get(spec.name) or _forwarder_for(spec)
                          for number, spec in SYSCALLS.items()}

    def start_fast_path(self, option: bool | None = None) -> bool:
        """Serve what can be served without an exit through the native fast path
        (see fastpath.py); whether it is on."""
        from . import fastpath

        if self.fast is None:
            self.fast = fastpath.start(self, option)
        return self.fast is not None

    # -- starting programs -------------------------------------------------------------
    def replace_image(self, space: AddressSpace, mm: MemoryMap, exe: str, argv: list[bytes],
                      envp: list[bytes], entry: int, sp: int, auxv,
                      filename: str | None = None) -> None:
        """Switch to a freshly loaded program (the point of no return of execve).
        ``filename`` is the path execve was given: Linux names the task after it."""
        old, old_mm = self.space, self.mm
        self.space, self.mm = space, mm
        self.exe, self.argv, self.envp, self.auxv = exe, argv, envp, auxv
        self.comm = task_name.comm_for_exec(filename or exe)
        task_name.show_on_host(self.comm, argv)
        self.fds.close_on_exec()
        self.signals.reset_for_exec()
        regs = self.cpu.regs
        for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10",
                     "r11", "r12", "r13", "r14", "r15"):
            setattr(regs, name, 0)
        self.cpu.fs_base = 0
        self.cpu.gs_base = 0
        self.cpu.enter_user(space, entry, sp)
        if self.fast is not None:
            self.fast.address_space_changed(space)
        if old_mm is not None:
            old_mm.close()
        if old is not None:
            old.close()
        if self.vfork_done is not None:
            os.close(self.vfork_done)
            self.vfork_done = None

    def fork(self, vfork: bool) -> int:
        """fork(2) of the whole VMM process: the child continues this very system call
        in a new VM over a copy-on-write copy of guest memory and returns 0; the
        parent's fork returns once the child can run, or fails with EAGAIN (see
        forking.py); a vfork parent then waits until the child has exec'd or exited."""
        read_end = write_end = None
        if vfork:
            read_end, write_end = os.pipe()
        handshake = ForkHandshake.open()
        snapshot = self.machine.snapshot_for_fork()
        try:
            pid = os.fork()
        except OSError as exc:
            handshake.fork_failed()
            for fd in (read_end, write_end):
                if fd is not None:
                    os.close(fd)
            return -(exc.errno or Errno.EAGAIN)
        if pid == 0:
            handshake.in_child()
            self.forked = True
            try:
                self.machine.reinit_after_fork(snapshot)
                if self.fast is not None:
                    self.fast.after_fork()
            except (KvmError, OSError) as exc:   # no VM, or no thread, for the child
                handshake.child_cannot_run(exc.errno or Errno.EAGAIN)
            except Exception as exc:
                self.log(f"kvmdune: cannot run the child of fork: {exc}")
                handshake.child_cannot_run(Errno.EAGAIN)
            if self.vfork_done is not None:
                os.close(self.vfork_done)     # the grandparent waits on our parent only
                self.vfork_done = None
            if vfork:
                os.close(read_end)
                self.vfork_done = write_end
            handshake.child_ready()
            return 0
        failed = handshake.wait_for_child(pid)
        if vfork:
            os.close(write_end)
            while not failed and os.read(read_end, 1):
                pass
            os.close(read_end)
        return failed or pid

    def _gate_verdict(self, spec, event):
        """The policy's verdict; a policy that fails to decide refuses (fail closed)."""
        try:
            return self.gate.check(self, spec, event)
        except Exception as exc:
            self.log(f"kvmdune: policy check of {spec.name if spec else event.number} "
                     f"failed ({exc!r}): refused")
            return -Errno.EACCES

    # -- helpers for handlers -------------------------------------------------------------
    def adopt_fd(self, host_fd: int) -> int:
        """A host descriptor a forwarded call returned, now the guest's."""
        if procfs.opened_vmm_entry(host_fd):
            os.close(host_fd)
            return -Errno.EACCES
        if self.gate is not None:
            refused = self.gate.check_opened(self, host_fd)
            if refused is not None:
                os.close(host_fd)
                return refused
        return self.fds.install(host_fd, cloexec=host_fd_cloexec(host_fd))

    def host_path(self, path: bytes) -> bytes:
        """The host path for a guest path (/proc/self names the guest; a policy may
        have pinned it to what it checked)."""
        pinned = self.pinned_paths.get(path)
        return pinned if pinned is not None else procfs.rewrite(self, path)

    def pin_path(self, path: bytes, replacement: bytes, holder_fd: int) -> None:
        """For the current call, serve ``path`` as ``replacement`` (a path through
        ``holder_fd``, which is closed when the call ends)."""
        self.pinned_paths[path] = replacement
        self._transient.append(holder_fd)

    def transient_file(self, content: bytes, name: str = "") -> bytes:
        """A path to a file holding ``content``, valid for the current system call
        (``name``: the /proc entry it stands for, which readlink then shows)."""
        fd = os.memfd_create(procfs.transient_name(name), os.MFD_CLOEXEC)
        os.write(fd, content)
        os.lseek(fd, 0, os.SEEK_SET)
        self._transient.append(fd)
        return f"/proc/self/fd/{fd}".encode()

    def fd_directory(self) -> bytes:
        """A directory listing the guest's descriptors as /proc/self/fd does."""
        return procfs.fd_directory(self)

    def scratch_directory(self, guest_path: str) -> str:
        """A host directory standing for the guest's ``guest_path``; it lives until
        the process ends, since the guest reads it after the call that opened it."""
        directory = tempfile.mkdtemp(prefix=f"kvmdune-proc-{os.getpid()}-")
        self.scratch_dirs[directory] = guest_path
        return directory

    def cleanup(self) -> None:
        """Remove what the process made on the host for itself."""
        mine = f"kvmdune-proc-{os.getpid()}-"     # a forked child's parent keeps its own
        for directory in self.scratch_dirs:
            if os.path.basename(directory).startswith(mine):
                shutil.rmtree(directory, ignore_errors=True)
        self.scratch_dirs.clear()

    def forward_by_name(self, name: str, args: tuple[int, ...]) -> int:
        return forward(self, SYSCALLS_BY_NAME[name], args)

    def raise_signal(self, signo: int) -> int:
        """A signal the guest sends itself."""
        if signo == 0:
            return 0
        if signo in (Signal.SIGKILL, Signal.SIGSTOP):
            os.kill(os.getpid(), signo)
            return 0
        self.signals.pending.add(signo)
        return 0

    def wait_for_signal(self) -> None:
        """Block until a host signal for the guest arrives (or one is pending)."""
        forwarded = set(sig.FORWARDED)
        previous = host_signal.pthread_sigmask(host_signal.SIG_BLOCK, forwarded)
        try:
            if self.signals.next_deliverable() is None:
                info = host_signal.sigwaitinfo(forwarded)
                self.signals.pending.add(info.si_signo)
        finally:
            host_signal.pthread_sigmask(host_signal.SIG_SETMASK, previous)

    # -- events --------------------------------------------------------------------------
    def on_syscall(self, cpu: Cpu, event: SyscallEvent) -> Stop | None:
        handler = self._handlers.get(event.number) if event.number < 1024 else None
        spec = SYSCALLS.get(event.number)
        started = time.perf_counter() if self.tracer else 0.0
        entry = self.tracer.entry(self, event, spec) if self.tracer else None
        verdict = self._gate_verdict(spec, event) if self.gate is not None else None
        if verdict is not None:
            result = verdict
        elif handler is None:
            result = -Errno.ENOSYS
            if self.tracer is None:
                name = spec.name if spec else f"syscall_{event.number:#x}"
                self.log(f"kvmdune: unsupported system call {name} ({event.number}): ENOSYS")
        else:
            try:
                result = handler(self, cpu, *event.args)
            except Fault as exc:
                result = -exc.errno
            except NotForwardable as exc:
                self.log(f"kvmdune: {exc}: not supported, ENOSYS")
                result = -Errno.ENOSYS
            except OSError as exc:     # a host call made by a handler failed
                result = -(exc.errno or Errno.EIO)
        while self._transient:
            os.close(self._transient.pop())
        self.pinned_paths.clear()
        if self.tracer is not None:
            self.tracer.exit(self, event, spec, result, time.perf_counter() - started, entry)
        if isinstance(result, Stop):
            return result
        if result is not None:
            cpu.regs.rax = result & 0xFFFF_FFFF_FFFF_FFFF
        if self.fast is not None:
            self._after_slow_call(spec)
        if self.signals.pending:
            restart = (result == -Errno.EINTR and spec is not None
                       and spec.name not in NOT_RESTARTED)
            return self.deliver_pending(cpu, restart_number=event.number if restart else None)
        return None

    def on_page_fault(self, cpu: Cpu, event: PageFaultEvent) -> Action | Stop:
        try:
            if self.mm is not None and self.mm.handle_fault(event.address, event.error):
                return Action.RETRY
        except OutOfGuestMemory:
            self.log(f"kvmdune: {self.exe}: guest memory limit of "
                     f"{self.machine.memory.size >> 20} MiB reached: killed (status 137)")
            return Stop(value=ExitStatus(signal=Signal.SIGKILL))
        return self.fault(cpu, Signal.SIGSEGV, event.address, event)

    def on_exception(self, cpu: Cpu, event: ExceptionEvent) -> Action | Stop:
        signo = sig.EXCEPTION_SIGNALS.get(event.vector, Signal.SIGSEGV)
        return self.fault(cpu, signo, 0, event)

    def on_interrupt(self, cpu: Cpu) -> Stop | None:
        if not self.signals.pending:
            return None
        if cpu.in_system_call:
            # No frame on top of a call in flight: it reaches the VMM (the fast path
            # hands it over while a signal waits), which delivers at its end.
            if self.fast is not None:
                self.fast.signal_waiting(self.signals.next_deliverable() is not None)
            return None
        return self.deliver_pending(cpu)

    def _after_slow_call(self, spec) -> None:
        """Keep the fast path in step with what the call changed."""
        if spec is not None and spec.name in THREAD_STATE_CALLS:
            self.fast.thread_state_changed()
        self.fast.after_slow_call(self.signals.next_deliverable() is not None)

    # -- signals -------------------------------------------------------------------------
    def fault(self, cpu: Cpu, signo: int, address: int, event) -> Action | Stop:
        """A synchronous fault: run the guest's handler, or die with a crash report."""
        action = self.signals.action(signo)
        blocked = self.signals.mask & (1 << (signo - 1))
        if action.handler not in (SigHandler.SIG_DFL, SigHandler.SIG_IGN) and not blocked:
            if sig.deliver(self.signals, cpu, self.space, signo, address):
                return Action.RESUME
        self.log(crash_report(self, cpu, signo, address, event))
        return Stop(value=ExitStatus(signal=signo))

    def deliver_pending(self, cpu: Cpu, restart_number: int | None = None) -> Stop | None:
        while True:
            signo = self.signals.next_deliverable()
            if signo is None:
                return None
            self.signals.pending.discard(signo)
            action = self.signals.action(signo)
            if action.handler == SigHandler.SIG_IGN:
                continue
            if action.handler == SigHandler.SIG_DFL:
                if signo in sig.DEFAULT_IGNORE:
                    continue
                if signo in sig.DEFAULT_STOP:
                    os.kill(os.getpid(), Signal.SIGSTOP)
                    continue
                return Stop(value=ExitStatus(signal=signo))
            if restart_number is not None and action.flags & SigactionFlags.SA_RESTART:
                cpu.regs.rax = restart_number
                cpu.regs.rip -= 2          # run the ``syscall`` again after the handler
                restart_number = None
            if not sig.deliver(self.signals, cpu, self.space, signo):
                self.log(crash_report(self, cpu, Signal.SIGSEGV, cpu.regs.rsp, None))
                return Stop(value=ExitStatus(signal=Signal.SIGSEGV))
            return None


SYSCALLS_BY_NAME = {spec.name: spec for spec in SYSCALLS.values()}


class RuleKind(enum.Enum):
    ALLOW = "allow"     # allowed whatever the arguments
    DENY = "deny"       # refused with ``errno`` whatever the arguments
    BENEATH = "beneath"  # allowed when its path resolves beneath one of ``roots``


@dataclass(frozen=True)
class CallRule:
    """A gate's decision on a system call by its number (and, for BENEATH, where its
    path leads), for the layers below to apply without asking the gate (the fast
    path). BENEATH promises only the allowing half: a path that does not resolve
    beneath a root (or at all) still goes to the gate."""

    kind: RuleKind
    errno: int = 0
    roots: tuple[str, ...] = ()


ALLOW_RULE = CallRule(RuleKind.ALLOW)


def forwards_only(spec) -> bool:
    """Whether the Python path does nothing for this call but forward it to the host
    (no handler emulates it), so another server may forward it the same way."""
    return spec.name not in HANDLERS and _forwarder_for(spec) is not None


class Gate:
    """What a policy layer above (the sandbox) plugs in: a verdict on each system call
    before it is served, and on each descriptor the host opened for the guest. None
    lets it through; a negative errno is returned to the guest instead; a Stop ends
    the process. (``linux`` never imports the policy engine.)"""

    def rules(self) -> dict[int, CallRule]:
        """The verdicts that a call's number alone decides, compiled for the fast
        path; numbers missing here (the default: all) the gate must check itself.
        A rule must never differ from what ``check`` answers for any arguments."""
        return {}

    def check(self, proc: "Process", spec, event: SyscallEvent) -> "int | Stop | None":
        return None

    def check_opened(self, proc: "Process", host_fd: int) -> int | None:
        return None

#: Calls the table marks as acting on the calling process that are forwarded all the
#: same: the guest process *is* the VMM process to Linux (one pid, one set of
#: credentials, one cwd, one set of children and timers), so these act on exactly
#: what they would act on natively, and none of them reaches the VMM's memory.
SHARED_IDENTITY = {
    "wait4", "waitid", "getcwd", "chdir", "fchdir", "umask", "setuid", "setgid",
    "setpgid", "setsid", "setreuid", "setregid", "setgroups", "setresuid", "setresgid",
    "setfsuid", "setfsgid", "getitimer", "alarm", "setitimer", "setpriority",
    "sched_setparam", "sched_setscheduler", "sched_setaffinity", "sched_setattr",
    "ioprio_set", "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun",
    "timer_delete", "membarrier", "pidfd_open", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
}


def _forwarder_for(spec):
    """The generic forwarder, for calls that are safe to run on the host as they are
    once their pointers are copied (never those that would act on the VMM)."""
    if spec.vmm_sensitive and spec.name not in SHARED_IDENTITY:
        return None
    return lambda proc, cpu, *args: forward(proc, spec, args)


def crash_report(proc: Process, cpu: Cpu, signo: int, address: int, event) -> str:
    name = signal_name(signo) or str(signo)
    what = f" at address {address:#x}" if address else ""
    cause = f" ({type(event).__name__}: {event})" if event is not None else ""
    return (f"kvmdune: {proc.exe or 'guest'} (pid {os.getpid()}) killed by {name}{what}"
            f"{cause}\n{cpu.describe()}")


def _stderr_log() -> Callable[[str], None]:
    """Diagnostics go to a private duplicate of the VMM's stderr, so the guest
    closing or redirecting its own fd 2 never swallows (or receives) them."""
    try:
        fd = os.dup(2)
        os.set_inheritable(fd, False)
        stream = os.fdopen(fd, "w", buffering=1)
    except OSError:
        stream = sys.stderr

    def log(text: str) -> None:
        try:
            stream.write(text.rstrip("\n") + "\n")
        except (OSError, ValueError):
            pass
    return log
