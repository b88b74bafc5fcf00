"""A Linux process in Dune mode: the guest program, its address space, descriptors,
signals and threads, and the event handler that gives it the Linux ABI.

System calls go to the handlers registered in ``dispatch`` (emulated ones and the
declarative forwarder); faults either page in memory the program owns or become
signals; host signals meant for the guest (host_signals.py) are taken by the thread
they interrupt, or by the signal-taking thread, and delivered at event boundaries.
Every thread's vCPU calls the same handler, each from its own host thread; the
handler holds the process's lock (``threads.ThreadGroup``) while it works.
"""

from __future__ import annotations

import _signal       # signal's functions without converting masks to enums
import os
import shutil
import sys
import tempfile
import time
from typing import Callable

from ..kvm import KvmError
from ..machine import (Action, Cpu, ExceptionEvent, Handler, Machine, PageFaultEvent,
                       Stop, StopReason, SyscallEvent, sigmask)
from ..machine.kick import SIGKICK
from ..memory import AddressSpace, OutOfGuestMemory
from . import aslr, host_signals, internal_error, procfs, profiling, task_name
from . import signals as sig
from . import vfork as vfork_module
from .abi import BusCode, Errno, SigactionFlags, SigHandler, Signal, signal_name
from .dispatch import Dispatcher
from .exit_status import ExitStatus
from .fastpath import THREAD_STATE_CALLS
from .sitepatch import in_site_stub
from .fdtable import VMM_IO, FdTable
from .forking import ForkHandshake, other_child_has_news
from .forward import forward, host_fd_cloexec
from .gate import Gate
from .internal_error import InternalError
from .mm import MemoryMap
from .privileged import HYPERCALL_BASE, HYPERCALLS, Privileged, PrivilegedFactory
from .syscall_table import BY_NAME, SYSCALLS
from .threads import Task, ThreadGroup

#: System calls Linux restarts after a handler with SA_RESTART (the rest report EINTR).
NOT_RESTARTED = {"nanosleep", "clock_nanosleep", "pause", "rt_sigsuspend", "poll", "ppoll",
                 "select", "pselect6", "epoll_wait", "epoll_pwait", "rt_sigtimedwait"}


#: Live /proc files kept before those no descriptor holds are closed.
LIVE_FILES_BEFORE_PRUNING = 16


class Process(Handler):
    """The Linux personality of one guest process (one VM, a vCPU per thread)."""

    def __init__(self, machine: Machine, *, tracer: "Callable | None" = None,
                 log: "Callable[[str], None] | None" = None,
                 gate: "Gate | None" = None,
                 privileged: "PrivilegedFactory | None" = None) -> None:
        self.machine = machine
        self.fds = FdTable.with_standard_streams()
        #: The dispositions and process-directed pending signals all threads share.
        self.sighand = sig.SignalHandlers()
        self.threads = ThreadGroup(self, machine.cpu, sig.SignalState(shared=self.sighand))
        machine.memory.stop_guest = self._stop_other_threads
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
        #: personality(2): the guest's own, kept across fork and execve; it starts as
        #: the VMM's (setarch -R kvmdune ...), limited to what kvmdune honours.
        self.personality = aslr.host_personality()
        self._transient: list[int] = []
        #: /proc files answered at each read or write (procfs.LiveFile), by the
        #: (device, inode) of the memfd the guest's descriptors refer to.
        self.live_files: dict[tuple[int, int], procfs.LiveFile] = {}
        #: Host directories standing for guest /proc directories: host path -> guest path.
        self.scratch_dirs: dict[str, str] = {}
        self.pinned_paths: dict[bytes, bytes] = {}
        #: Takes the process's host signals while no vCPU thread can (run_process).
        self.signal_taker = host_signals.ProcessSignalTaker(self._take_process_signals)
        #: Children a fork started that could not run: their SIGCHLD is not the guest's.
        self.unready_children: set[int] = set()
        self.fast = None          # the native fast path (fastpath.FastPath), once started
        #: System calls the VMM served (every exit for one; --syscall-stats).
        self.vmm_calls = 0
        #: The same, by call number (--syscall-stats names the most frequent).
        self.vmm_calls_by_number: dict[int, int] = {}
        self.dispatcher = Dispatcher(self.log)
        #: Makes ``privileged`` on the first hypercall (None: hypercalls are ENOSYS).
        self.privileged_factory = privileged
        #: The process's privileged features (the Dune API), once it asked for them.
        self.privileged: Privileged | None = None

    # -- the calling thread ---------------------------------------------------------------
    @property
    def task(self) -> Task:
        """The guest thread whose host thread is calling."""
        return self.threads.current()

    @property
    def signals(self) -> sig.SignalState:
        """The calling thread's signal state (its mask; the shared dispositions)."""
        return self.threads.current().signals

    @property
    def cpu(self) -> Cpu:
        """The calling thread's vCPU."""
        return self.threads.current().cpu

    def thread_ids(self) -> list[int]:
        """The ids of the guest's live threads (/proc/self/task)."""
        return self.threads.live_tids()

    def host_call(self, call: Callable[[], int], host_fds=()) -> int:
        """A host call that may block, made without the process's lock (see
        ``ThreadGroup.blocking``); a signal it raised at this thread is the guest's."""
        result = self.threads.blocking(call, host_fds)
        if result < 0:
            self.threads.take_self_directed(result)
        return result

    def release_thread_futexes(self, task: Task, robust_only: bool = False) -> None:
        """A thread's exit: its robust futexes and CLEARTID word (futex.py); at the
        process's end only the robust ones (another process may share them)."""
        from . import futex

        futex.release_thread(self, task, robust_only)

    def start_fast_path(self, option: bool | None = None) -> bool:
        """Serve what can be served without an exit through the native fast path
        (see fastpath.py); whether it is on."""
        from . import fastpath

        if self.fast is None:
            self.fast = fastpath.start(self, option)
        return self.fast is not None

    def cpu_added(self, cpu: Cpu) -> None:
        """A new thread's vCPU: the fast path serves its ring too."""
        if self.fast is not None:
            self.fast.attach(cpu)

    def release_cpu(self, cpu: Cpu) -> None:
        """A thread has ended: its vCPU goes back to the machine's pool."""
        if self.privileged is not None:
            self.privileged.thread_ended(cpu)
        if self.fast is not None:
            self.fast.detach_cpu(cpu)
        self.machine.release_cpu(cpu)

    # -- starting programs -------------------------------------------------------------
    def replace_image(self, space: AddressSpace, mm: MemoryMap, exe: str, argv: list[bytes],
                      envp: list[bytes], entry: int, sp: int, auxv,
                      filename: str | None = None) -> None:
        """Switch to a freshly loaded program (the point of no return of execve).
        ``filename`` is the path execve was given: Linux names the task after it."""
        old, old_mm = self.space, self.mm
        if self.privileged is not None:
            # The new program starts without privileged features (it asks again).
            self.privileged.close()
            self.privileged = None
        if old_mm is not None:
            mm.thp_disabled = old_mm.thp_disabled     # kept across execve, as on Linux
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
        self.release_vfork_parent(old, old_mm)
        with profiling.phase("execve.teardown"):
            if old_mm is not None:
                old_mm.close()
            if old is not None:
                old.close()

    def release_vfork_parent(self, space: AddressSpace | None, mm: MemoryMap | None) -> None:
        """A child of vfork is done with its parent's memory (it execs, or ends):
        what it wrote there goes back to the parent, which then resumes (vfork.py)."""
        if self.vfork_done is None:
            return
        if space is not None and not space.closed:
            vfork_module.send_written_pages(space, self.vfork_done,
                                            lambda vaddr: _program_memory(mm, vaddr))
        os.close(self.vfork_done)
        self.vfork_done = None

    def _stop_other_threads(self) -> None:
        """Keep guest code off every other vCPU while the caller (holding the
        process's lock) changes what KVM maps."""
        if self.threads.threaded:
            self.threads.park_others()

    def fork(self, vfork: bool) -> int:
        """fork(2) of the whole VMM process: the child continues this very system call
        in a new VM over a copy-on-write copy of guest memory and returns 0; the
        parent's fork returns once the child can run, or fails with EAGAIN (see
        forking.py); a vfork parent then waits until the child has exec'd or exited.
        From a threaded process the child has only the calling thread: every other
        vCPU is parked outside KVM_RUN first, and the calling one is carried over."""
        read_end = write_end = None
        if vfork:
            read_end, write_end = os.pipe()
        self.threads.park_others()
        handshake = ForkHandshake.open()
        snapshot = self.machine.snapshot_for_fork(self.cpu)
        try:
            with profiling.phase("fork.parent.host_fork"):
                pid = os.fork()
        except OSError as exc:
            handshake.fork_failed()
            for fd in (read_end, write_end):
                if fd is not None:
                    os.close(fd)
            return -(exc.errno or Errno.EAGAIN)
        if pid == 0:
            profiling.after_fork()
            handshake.in_child()
            self.forked = True
            try:
                with profiling.phase("fork.child.vm"):
                    self.machine.reinit_after_fork(snapshot)
                    if self.mm is not None:
                        self.mm.vm_rebuilt()
                self.threads.after_fork_in_child()
                self.signal_taker.restart_in_child()
                if self.fast is not None:
                    with profiling.phase("fork.child.fast_path"):
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
                vfork_module.start_in_child(self.space)
            handshake.child_ready()
            return 0
        with profiling.phase("fork.parent.wait_child"):
            failed = handshake.wait_for_child(pid)
        if failed and not handshake.sigchld_withheld:
            self.unready_children.add(pid)      # its SIGCHLD is on its way still
        if vfork:
            os.close(write_end)
            if not failed:
                # Only this thread waits (as vfork suspends only the caller).
                vfork_module.receive_written_pages(read_end, self.space,
                                                   lambda vaddr: _program_memory(self.mm, vaddr),
                                                   self.threads.blocking)
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
        # A live /proc file's reads and writes are the VMM's to answer (never the
        # fast path's): it looks at every one.
        live = self.live_file_of(host_fd) is not None
        return self.fds.install(host_fd, cloexec=host_fd_cloexec(host_fd),
                                io=VMM_IO if live else None)

    def host_path(self, path: bytes, dirfd: int | None = None) -> bytes:
        """The host path for a guest path, relative to the host descriptor ``dirfd``
        (None: the current directory): /proc/self names the guest, however the path
        reaches it; a policy may have pinned it to what it checked."""
        pinned = self.pinned_paths.get(path)
        if pinned is not None:
            return pinned
        if not path.startswith((b"/proc/", b"/dev/")):
            landing = procfs.proc_landing(path, dirfd)
            if landing is None:
                return path
            path = landing
        return procfs.rewrite(self, path)

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

    def live_file(self, live: "procfs.LiveFile") -> bytes:
        """A path to open ``live`` by (valid for the current system call)."""
        if len(self.live_files) >= LIVE_FILES_BEFORE_PRUNING:
            self._prune_live_files()
        info = os.fstat(live.fd)
        self.live_files[(info.st_dev, info.st_ino)] = live
        return f"/proc/self/fd/{live.fd}".encode()

    def live_file_of(self, host_fd: int) -> "procfs.LiveFile | None":
        """The live /proc file a host descriptor of the guest's refers to, if any."""
        if not self.live_files:
            return None
        info = os.fstat(host_fd)
        return self.live_files.get((info.st_dev, info.st_ino))

    def _prune_live_files(self) -> None:
        """Close the live files no guest descriptor refers to any more."""
        held = set()
        for entry in self.fds.entries.values():
            try:
                info = os.fstat(entry.host)
            except OSError:
                continue
            held.add((info.st_dev, info.st_ino))
        for key in [key for key in self.live_files if key not in held]:
            self.live_files.pop(key).close()

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
        """Remove what the process made on the host for itself, and close its
        privileged features (the program is gone, as at execve)."""
        if self.privileged is not None:
            self.privileged.close()
            self.privileged = None
        mine = f"kvmdune-proc-{os.getpid()}-"     # a forked child's parent keeps its own
        for directory in self.scratch_dirs:
            if os.path.basename(directory).startswith(mine):
                shutil.rmtree(directory, ignore_errors=True)
        self.scratch_dirs.clear()

    def forward_by_name(self, name: str, args: tuple[int, ...]) -> int:
        return forward(self, BY_NAME[name], args)

    def raise_signal(self, signo: int, code: int = sig.SigCode.SI_USER,
                     sender: sig.SenderInfo | None = None) -> int:
        """A signal the guest sends its own process (``code``: how, for its siginfo,
        or the whole ``sender``); any of its threads that does not block it takes it."""
        if signo == 0:
            return 0
        if signo in (Signal.SIGKILL, Signal.SIGSTOP):
            os.kill(os.getpid(), signo)
            return 0
        self.sighand.queue(signo, sender or sig.SenderInfo(code, os.getpid(), os.getuid()))
        self.threads.route(signo)
        return 0

    def wait_for_signal(self, timeout: float | None = None, wanted: int = 0) -> bool:
        """Block (without the process's lock) until the calling thread has a signal
        to take: one it can be delivered now, or one in the mask ``wanted``
        (rt_sigtimedwait); False when ``timeout`` seconds passed first; True at once
        when the thread must end. It wakes for the kick (another thread's news for
        this one: blocked while waiting, so none is lost) and for a host signal for
        the guest pending for this thread or the process, which it takes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        task = self.task
        previous = sigmask.block(sigmask.bit(SIGKICK))
        try:
            while True:
                self.take_host_signals()
                if task.exiting or self._signal_ready(wanted):
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.threads.lock.release()
                try:
                    host_signals.wait_until_pending(left)
                    _signal.sigtimedwait({SIGKICK}, 0)    # news, looked at next
                finally:
                    self.threads.lock.acquire()
        finally:
            sigmask.set_mask(previous)

    # -- host signals for the guest ------------------------------------------------------
    def take_host_signals(self) -> None:
        """Take the host signals for the guest pending for the calling thread (lock
        held): its guest thread's own, and the process's."""
        for taken in host_signals.take_pending():
            self.queue_host_signal(taken, self.task)

    def queue_host_signal(self, taken: host_signals.HostSignal, task: Task | None) -> None:
        """A host signal for the guest (lock held), with the siginfo the guest sees:
        ``task``'s alone when it was sent to that thread, else the process's (a
        thread that does not block it is woken to take it)."""
        signo = taken.signo
        if signo == Signal.SIGCHLD and self._withheld_sigchld(taken.pid):
            return
        receiver = task if taken.thread_directed else (
            self.threads.main_task or next(iter(self.threads.tasks.values()), None))
        if receiver is not None and sig.is_ignored(receiver.signals, signo) \
                and not receiver.signals.blocks(signo):
            return      # Linux drops it when it is sent: it interrupts nothing
        info = sig.SenderInfo(taken.code, taken.pid, taken.uid, queued=taken.info)
        if taken.thread_directed and task is not None:
            task.signals.queue(signo, info)     # the calling thread's: it is looking
        else:
            self.sighand.queue(signo, info)
            self.threads.route(signo)
        if self.sighand.on_arrival is not None:
            self.sighand.on_arrival()

    def _withheld_sigchld(self, pid: int) -> bool:
        """The SIGCHLD of a child fork reaped unready (forking.py) is not reported,
        unless another child has news too: then the guest must get one."""
        if pid not in self.unready_children:
            return False
        self.unready_children.discard(pid)
        return not other_child_has_news()

    def _take_process_signals(self) -> None:
        """The signal-taking thread saw a process's signal for the guest pending: take
        it and queue it in one step under the lock (see host_signals.py); once the
        guest is gone, take it all the same (it must not stay pending)."""
        with self.threads.lock:
            taken = host_signals.take_pending()
            if self.threads.exit_status is not None:
                return
            for one in taken:
                try:
                    self.queue_host_signal(one, None)
                except Exception as exc:     # a bug in the VMM: the thread takes on
                    self.log(f"kvmdune: queueing host signal {one.signo}: {exc!r}")

    def _signal_ready(self, wanted: int) -> bool:
        signals = self.signals
        if any(wanted & (1 << (signo - 1)) for signo in signals.all_pending()):
            return True
        signo = signals.next_deliverable()
        while signo is not None and sig.is_ignored(signals, signo):
            signals.discard(signo)    # Linux drops it when it is sent
            signo = signals.next_deliverable()
        return signo is not None

    # -- events --------------------------------------------------------------------------
    # Each holds the process's lock; a thread asked to end does nothing more.
    def on_syscall(self, cpu: Cpu, event: SyscallEvent) -> Stop | None:
        with self.threads.lock:
            if self.task.exiting:
                return Stop(StopReason.REQUEST)
            return self._syscall(cpu, event)

    def on_page_fault(self, cpu: Cpu, event: PageFaultEvent) -> Action | Stop:
        with self.threads.lock:
            if self.task.exiting:
                return Stop(StopReason.REQUEST)
            return self._page_fault(cpu, event)

    def on_exception(self, cpu: Cpu, event: ExceptionEvent) -> Action | Stop:
        with self.threads.lock:
            if self.task.exiting:
                return Stop(StopReason.REQUEST)
            return self._exception(cpu, event)

    def on_interrupt(self, cpu: Cpu) -> Stop | None:
        with self.threads.lock:
            if self.task.exiting:
                return Stop(StopReason.REQUEST)
            return self._interrupted(cpu)

    def _syscall(self, cpu: Cpu, event: SyscallEvent) -> Stop | None:
        if self.privileged is not None:
            claimed = self.privileged.on_syscall(cpu, event)
            if claimed is not None:
                return claimed if isinstance(claimed, Stop) else None
        if event.number in HYPERCALLS:
            return self._hypercall(cpu, event)
        self.vmm_calls += 1
        if self.fast is not None:
            self.fast.before_slow_call(cpu)
        counts = self.vmm_calls_by_number
        counts[event.number] = counts.get(event.number, 0) + 1
        spec = SYSCALLS.get(event.number)
        started = time.perf_counter() if self.tracer else 0.0
        entry = self.tracer.entry(self, event, spec) if self.tracer else None
        verdict = self._gate_verdict(spec, event) if self.gate is not None else None
        if verdict is None and self.fast is not None:
            verdict = self.fast.continue_write(cpu, event.number, event.args)
        try:
            result = verdict if verdict is not None else self.dispatcher.serve(
                self, cpu, event.number, event.args, quiet=self.tracer is not None)
        except InternalError as exc:
            result = self.internal_error(exc.where, exc)
        finally:
            while self._transient:
                os.close(self._transient.pop())
            self.pinned_paths.clear()
        if self.tracer is not None:
            self.tracer.exit(self, event, spec, result, time.perf_counter() - started, entry)
        if isinstance(result, Stop):
            return result
        if result is not None:
            cpu.regs.rax = result & 0xFFFF_FFFF_FFFF_FFFF
        # What the host made pending during the call (a child's SIGCHLD, a signal
        # the guest just unblocked) is seen before the guest runs on.
        self.take_host_signals()
        if self.fast is not None:
            self._after_slow_call(spec)
        if self.task.exiting:
            return Stop(StopReason.REQUEST)
        stop = None
        if self.signals.has_pending():
            restart = (result == -Errno.EINTR and spec is not None
                       and spec.name not in NOT_RESTARTED)
            stop = self.deliver_pending(cpu, restart_number=event.number if restart else None)
        # A call that waited with a temporary mask: a handler's frame took the
        # original, or it applies again now.
        self.signals.restore_saved_mask()
        return stop

    def _hypercall(self, cpu: Cpu, event: SyscallEvent) -> Stop | None:
        """A request for privileged features (``privileged.py``): ENOSYS, as on
        Linux, unless the run provides them."""
        if self.privileged is None:
            if self.privileged_factory is None:
                cpu.regs.rax = -Errno.ENOSYS & 0xFFFF_FFFF_FFFF_FFFF
                return None
            self.privileged = self.privileged_factory(self)
            if self.fast is not None:
                self.fast.privileged_started()
        op = event.number - HYPERCALL_BASE
        try:
            result = self.privileged.hypercall(cpu, op, event.args)
        except Exception as exc:     # a bug in the VMM: fail closed
            return self.internal_error(f"hypercall {op}", exc)
        if isinstance(result, Stop):
            return result
        if result is not None:
            cpu.regs.rax = result & 0xFFFF_FFFF_FFFF_FFFF
        return None

    def internal_error(self, where: str, error: BaseException) -> Stop:
        """A bug in the VMM: end the guest (fail closed) and say so in one line."""
        internal_error.report(self.log, where, error)
        return Stop(value=ExitStatus(signal=Signal.SIGKILL))

    def _page_fault(self, cpu: Cpu, event: PageFaultEvent) -> Action | Stop:
        if self.privileged is not None:
            claimed = self.privileged.on_page_fault(cpu, event)
            if claimed is not None:
                return claimed
        paged = self.page_in(event)
        if paged is not None:
            return paged
        if self.mm is not None and self.mm.bus_error(event.address, event.error):
            return self.fault(cpu, Signal.SIGBUS, event.address, event, BusCode.BUS_ADRERR)
        return self.fault(cpu, Signal.SIGSEGV, event.address, event)

    def page_in(self, event: PageFaultEvent) -> Action | Stop | None:
        """Demand paging: RETRY when the fault was memory the program owns and is
        now mapped, a Stop when guest memory ran out, None when it is the program's
        fault."""
        try:
            if self.mm is not None and self.mm.handle_fault(event.address, event.error):
                return Action.RETRY
        except OutOfGuestMemory:
            self.log(f"kvmdune: {self.exe}: guest memory limit of "
                     f"{self.machine.memory.size >> 20} MiB reached: killed (status 137)")
            return Stop(value=ExitStatus(signal=Signal.SIGKILL))
        return None

    def _exception(self, cpu: Cpu, event: ExceptionEvent) -> Action | Stop:
        if self.privileged is not None:
            claimed = self.privileged.on_exception(cpu, event)
            if claimed is not None:
                return claimed
        signo = sig.EXCEPTION_SIGNALS.get(event.vector, Signal.SIGSEGV)
        return self.fault(cpu, signo, 0, event)

    def _interrupted(self, cpu: Cpu) -> Stop | None:
        self.take_host_signals()
        if not self.signals.has_pending():
            return None
        if cpu.in_system_call or (self.mm is not None and in_site_stub(self.mm, cpu.regs.rip)):
            # No frame on top of a call in flight: it reaches the VMM (the fast path
            # hands it over while a signal waits), which delivers at its end.
            if self.fast is not None:
                self.fast.signal_waiting(cpu, self.signals.next_deliverable() is not None)
            return None
        return self.deliver_pending(cpu)

    def _after_slow_call(self, spec) -> None:
        """Keep the fast path in step with what the call changed."""
        if spec is not None and spec.name in THREAD_STATE_CALLS:
            self.fast.thread_state_changed()
        self.fast.after_slow_call(self.cpu, self.signals.next_deliverable() is not None)

    # -- signals -------------------------------------------------------------------------
    def fault(self, cpu: Cpu, signo: int, address: int, event, code: int = 0) -> Action | Stop:
        """A synchronous fault: run the guest's handler (``code``: its si_code), or
        die with a crash report."""
        action = self.signals.action(signo)
        blocked = self.signals.mask & (1 << (signo - 1))
        if action.handler not in (SigHandler.SIG_DFL, SigHandler.SIG_IGN) and not blocked:
            if sig.deliver(self.signals, cpu, self.space, signo, address, code):
                return Action.RESUME
        self.log(crash_report(self, cpu, signo, address, event))
        return Stop(value=ExitStatus(signal=signo))

    def deliver_pending(self, cpu: Cpu, restart_number: int | None = None) -> Stop | None:
        while True:
            signo = self.signals.next_deliverable()
            if signo is None:
                return None
            sender = self.signals.take(signo)
            if self.privileged is not None:
                claimed = self.privileged.on_signal(cpu, signo)
                if claimed is not None:
                    return claimed if isinstance(claimed, Stop) else None
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
            if not sig.deliver(self.signals, cpu, self.space, signo, sender=sender):
                self.log(crash_report(self, cpu, Signal.SIGSEGV, cpu.regs.rsp, None))
                return Stop(value=ExitStatus(signal=Signal.SIGSEGV))
            return None



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


def _program_memory(mm: MemoryMap | None, vaddr: int) -> bool:
    """Whether ``vaddr`` is in the program's own private memory in ``mm``: a mapping
    of its own, not shared and not the VMM's (the vDSO's data, the call rings)."""
    vma = mm.find(vaddr) if mm is not None else None
    return vma is not None and not vma.shared and not vma.vmm_backed
