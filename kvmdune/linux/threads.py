"""Guest threads: each a vCPU of the process's VM, run by a host thread of the VMM.

clone(CLONE_VM|CLONE_THREAD|CLONE_SIGHAND|...) (and clone3) makes a ``Task``: a
vCPU from the machine's pool (``Machine.add_cpu``) started from a copy of the
caller's registers, and a new host thread running that vCPU's run loop with the
``Process`` as its handler. The guest's thread id is that host thread's id, so
gettid, tgkill and PI futexes agree with the host. The VMM's main thread runs the
task the process started with (the one whose id is the process id).

Locking. Guest code runs without any lock (KVM_RUN releases the GIL: vCPUs run in
parallel). Everything the VMM does for the guest (system calls, faults, signal
delivery) holds the process's lock, ``ThreadGroup.lock``, which keeps the Process
object (address space, descriptors, signals) consistent. A call that may block on
the host (a read from a pipe, a futex wait, waiting for a signal) drops the lock
around the host call (``ThreadGroup.blocking``) and holds the host descriptors it
uses meanwhile (``FdTable.hold``), so a blocked thread never stalls the others and
a concurrent close cannot make its call act on a reused descriptor number.

Interrupting a thread. A vCPU thread blocks every host signal but the kick
(machine/kick.py). To make a thread notice something (a signal to take, its end)
the VMM changes the state first, then interrupts its vCPU (``Cpu.interrupt``:
KVM_RUN returns at once) and kicks its host thread (a blocking host call returns
EINTR). A kick that lands just before a blocking call begins would be lost, so a
thread that is in one is kicked again every KICK_INTERVAL until it has left it.

Host signals (host_signals.py). Every VMM thread blocks those meant for the guest;
KVM_RUN unblocks them, so one pending for a vCPU thread interrupts its guest code,
and the thread takes it: its own guest thread's if it was sent to that thread alone,
the process's otherwise. ``route`` wakes one thread that does not block a signal
pending for the process, which takes it at its next event boundary, as Linux gives
a process's signal to any thread that does not block it; the signal-taking thread
routes those that arrive while no vCPU thread is in KVM_RUN. Thread-directed host
signals a vCPU thread caused itself (SIGPIPE, SIGXFSZ) are taken from the host as
its host call returns and given to its guest thread.

Ends. exit(2) ends one thread: its robust futex list is walked and its CLEARTID
word cleared and woken (both emulated: no guest address is ever registered with the
host kernel); the last thread's exit ends the process. exit_group(2), a fatal
signal or a VMM error end them all: every other thread is stopped at its next event
boundary, and the main thread waits for them all and returns the status. execve
from any thread ends the others first; a thread other than the main one then moves
to the main thread and takes the process id as its thread id, as on Linux. fork
from any thread first parks every other vCPU outside KVM_RUN (a safe point: a
parked thread needs the lock to go on), and the child has only the calling thread.
"""

from __future__ import annotations

import _signal       # signal's functions without the conversion of masks to enums
import errno
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..kvm import KvmError
from ..machine import Cpu, MachineError, Stop, StopReason, sigmask
from ..machine.kick import SIGKICK
from . import signals as sig
from .abi import Errno, Signal
from .exit_status import ExitStatus

try:    # native code can try it (the Dune API's hypercalls served without an exit)
    from ._proclock import ProcessLock as _ProcessLock
except ImportError:      # (not built: a plain lock; nothing native then needs it)
    _ProcessLock = None

#: How often a thread in a blocking host call is kicked again until it leaves it.
KICK_INTERVAL = 0.002
#: How long waiting for parked or ending threads sleeps between checks.
POLL_INTERVAL = 0.0005
#: Signals a vCPU thread's own host calls raise for itself (broken pipe, file too big).
SELF_DIRECTED = {-Errno.EPIPE: Signal.SIGPIPE, -Errno.EFBIG: Signal.SIGXFSZ}


@dataclass(frozen=True)
class ThreadExit:
    """The value of the Stop that ends one thread (exit(2) with others left)."""

    code: int


@dataclass(frozen=True)
class MoveToMain:
    """The value of the Stop with which a thread that called execve hands its vCPU
    to the main thread."""


@dataclass(eq=False)
class Task:
    """One guest thread: its id, its vCPU, its signal state and what Linux keeps
    per thread for its exit (the CLEARTID word, the robust futex list)."""

    tid: int
    cpu: Cpu
    signals: sig.SignalState
    clear_child_tid: int = 0
    robust_list: int = 0
    #: The thread's name (prctl PR_SET_NAME from a thread other than the first);
    #: None: the process's.
    comm: bytes | None = None
    #: The host thread running it; None for the main thread.
    thread: threading.Thread | None = None
    #: Asked to end (exit_group, execve, a fatal signal): it stops at its next
    #: event boundary and does nothing more for the guest.
    exiting: bool = False
    #: Its own exit is decided (exit(2)): it no longer counts as a live thread.
    dead: bool = False
    #: In a blocking host call without the lock (and the count of such calls, so a
    #: late kick of the previous one is not taken for this one).
    blocking: bool = False
    block_seq: int = 0
    #: Set once its run loop has returned for good.
    done: threading.Event = field(default_factory=threading.Event)
    #: Set when a new thread may start running guest code (its tid words written).
    go: threading.Event = field(default_factory=threading.Event)

    @property
    def live(self) -> bool:
        return not (self.dead or self.exiting)


class ThreadGroup:
    """The threads of one guest process, the process's lock, and their ends."""

    def __init__(self, proc, cpu: Cpu, signals: sig.SignalState) -> None:
        self.proc = proc
        #: The process's lock (``threading.Lock``'s interface). Native: its
        #: ``address`` is a futex word native code may try (native/proclock.h).
        self.lock = _ProcessLock() if _ProcessLock is not None else threading.Lock()
        self._local = threading.local()
        main = Task(os.getpid(), cpu, signals)
        self.tasks: dict[int, Task] = {main.tid: main}
        self._local.task = main
        #: The task the main thread runs (None: it has ended, the main thread waits).
        self.main_task: Task | None = main
        #: How the process ends, once decided (the first exit_group wins).
        self.exit_status: ExitStatus | None = None
        #: The wall-clock deadline of the whole run (time.monotonic), if any.
        self.deadline: float | None = None
        self.wall_seconds: float | None = None
        self.killed_at_wall_time = False
        #: Something the main thread does every so often at an event boundary,
        #: holding the lock (``next_at``: when, or None; ``tick(proc)``; runner.py).
        self.ticks = None
        #: Ends a process that a thread other than the VMM's main one became (the
        #: child of a fork from that thread): cleans up and exits with the status.
        self.end_process: Callable[[ExitStatus], None] | None = None
        self._wake_main = threading.Event()
        #: A thread that called execve, on its way to the main thread.
        self._moving: Task | None = None
        self._rekick: dict[Task, int] = {}
        # Re-entrant: the main thread's signal handlers may route while it holds it.
        self._rekick_lock = threading.RLock()
        self._rekicker: threading.Thread | None = None
        signals.shared.route = self.route

    # -- who is calling -----------------------------------------------------------------
    def current(self) -> Task:
        """The task the calling host thread runs."""
        return self._local.task

    @property
    def threaded(self) -> bool:
        return len(self.tasks) > 1

    def live_tids(self) -> list[int]:
        """The guest's threads as /proc/self/task lists them: the live ones, and the
        process id while the process lives (Linux keeps a group leader that exited
        before its threads listed, a zombie, until the whole group ends)."""
        live = {tid for tid, task in self.tasks.items() if not task.dead}
        return sorted(live | {os.getpid()})

    # -- blocking without the lock ------------------------------------------------------
    def blocking(self, call: Callable[[], int], fds: Iterable[int] = ()) -> int:
        """Run ``call`` (a host call returning a result or -errno that may block)
        without the process's lock, holding the host descriptors ``fds`` open. An
        EINTR that nothing explains (a kick for another reason; a host signal the
        guest ignores) runs the call again, as Linux would not have interrupted it.
        -EINTR at once when the thread must stop. With a signal to take already,
        the call is made (it may not block at all: getcwd, a read of a file) but
        kicked until it returns, as Linux interrupts a call that would sleep."""
        task = self.current()
        held = list(fds)
        fdtable = self.proc.fds
        fdtable.hold(held)
        task.block_seq += 1
        task.blocking = True       # before the check: an interrupter then sees it
        try:
            if task.exiting:
                return -Errno.EINTR
            self.proc.take_host_signals()     # one pending already interrupts the call
            if task.signals.next_deliverable() is not None:
                self._kick_again(task)
            self.lock.release()
            try:
                while True:
                    result = call()
                    if result != -Errno.EINTR or self._must_return(task):
                        return result
            finally:
                task.blocking = False
                self.lock.acquire()
        finally:
            task.blocking = False
            fdtable.release(held)

    @staticmethod
    def _must_return(task: Task) -> bool:
        return task.exiting or task.signals.next_deliverable() is not None

    def take_self_directed(self, result: int) -> None:
        """A host call of this thread failed with EPIPE or EFBIG: the host raised
        SIGPIPE or SIGXFSZ at this host thread, which blocks it: it is taken from the
        host and given to the guest thread."""
        signo = SELF_DIRECTED.get(result)
        if signo is None:
            return
        taken = _signal.sigtimedwait({signo}, 0)
        if taken is not None:
            self.current().signals.queue(signo, sig.SenderInfo(
                taken.si_code, taken.si_pid, taken.si_uid))

    # -- interrupting -------------------------------------------------------------------
    def interrupt(self, task: Task) -> None:
        """Make ``task`` notice what changed for it soon (see the module's doc). On
        the task's own thread (a host signal's handler) there is nothing to kick:
        the signal has interrupted its host call already."""
        task.cpu.interrupt()
        if task.blocking and task.cpu.thread_ident != threading.get_ident():
            self._kick_again(task)

    def route(self, signo: int) -> None:
        """A signal became pending for the process: wake a thread that can take it,
        which the others then leave it to (the thread group's leader first, as
        Linux prefers the thread kill(2) named, then the main thread's task)."""
        tasks = list(self.tasks.values())
        first = (self.tasks.get(os.getpid()), self.main_task)
        tasks.sort(key=lambda task: (task is not first[0], task is not first[1]))
        for task in tasks:
            if task.live and not task.done.is_set() and not task.signals.blocks(signo):
                task.signals.shared.routed_to[signo] = task.signals
                self.interrupt(task)
                return

    def _reroute_from(self, task: Task) -> None:
        """``task`` ends: the process's signals routed to it go to another thread."""
        task.signals.ended = True
        routed = task.signals.shared.routed_to
        for signo in [s for s, state in routed.items() if state is task.signals]:
            del routed[signo]
            if signo in task.signals.shared.pending:
                self.route(signo)

    def send_to_thread(self, tid: int, signo: int, info: sig.SenderInfo) -> bool:
        """tgkill/tkill at one of the process's threads: False if it has none by
        that id."""
        task = self.tasks.get(tid)
        if task is None or task.dead:
            return False
        if signo:
            task.signals.queue(signo, info)
            self.interrupt(task)
        return True

    def _kick_again(self, task: Task) -> None:
        with self._rekick_lock:
            self._rekick[task] = task.block_seq
            if self._rekicker is None or not self._rekicker.is_alive():
                self._rekicker = _quiet_thread(self._rekick_loop, "kvmdune-rekick")
                self._rekicker.start()

    def _rekick_loop(self) -> None:
        while True:
            time.sleep(KICK_INTERVAL)
            with self._rekick_lock:
                for task, seq in list(self._rekick.items()):
                    if task.blocking and task.block_seq == seq and not task.done.is_set():
                        task.cpu.kick()
                    else:
                        del self._rekick[task]
                if not self._rekick:
                    self._rekicker = None
                    return

    # -- creating threads ---------------------------------------------------------------
    def spawn(self, parent: Task, stack: int, tls: int | None) -> Task | int:
        """A new thread starting where ``parent``'s clone returns (RAX 0, the stack
        ``stack`` unless 0, FS base ``tls`` unless None), not yet running: its host
        thread waits for ``start``. Its id is set. -errno when none can be made."""
        machine = self.proc.machine
        try:
            cpu = machine.add_cpu()
        except KvmError as exc:
            return -(exc.errno or Errno.EAGAIN)
        except OSError as exc:
            return -(exc.errno or Errno.ENOMEM)
        _copy_user_state(parent.cpu, cpu, self.proc.space)
        if stack:
            cpu.regs.rsp = stack
        if tls is not None:
            cpu.fs_base = tls
        task = Task(0, cpu, parent.signals.for_new_thread())
        thread = _quiet_thread(self._thread_main, "kvmdune-task", task, keep=(SIGKICK,))
        try:
            thread.start()             # returns once the thread runs: its id is known
        except RuntimeError:           # the host could not make the thread (EAGAIN)
            machine.release_cpu(cpu)
            return -Errno.EAGAIN
        task.tid = thread.native_id
        task.thread = thread
        self.tasks[task.tid] = task
        self.proc.cpu_added(cpu)
        return task

    @staticmethod
    def start(task: Task) -> None:
        """Let a spawned thread run guest code."""
        task.go.set()

    def _thread_main(self, task: Task) -> None:
        self._local.task = task
        task.go.wait()
        try:
            self._drive(task)
        finally:
            self._thread_done(task)

    def _thread_done(self, task: Task) -> None:
        """A thread's run loop returned: it leaves the process (or, moved to the main
        thread, lives on there); in the child of a fork from it, it *is* the process."""
        if task.thread is None and threading.current_thread() is threading.main_thread():
            self._released_at_process_end(task)
            self._end_all()
            status = self.exit_status or ExitStatus(signal=Signal.SIGKILL)
            if self.end_process is not None:
                self.end_process(status)
            os._exit(status.shell_status)
        with self.lock:
            if task is self._moving:
                self._moving = None
                self.main_task = task        # the main thread runs it from now on
            else:
                self._release_at_process_end_locked(task)
                self.tasks.pop(task.tid, None)
                self.proc.release_cpu(task.cpu)
                task.done.set()
        self._wake_main.set()

    def _released_at_process_end(self, task: Task) -> None:
        with self.lock:
            self._release_at_process_end_locked(task)

    def _release_at_process_end_locked(self, task: Task) -> None:
        """A thread ended by the process's end (exit_group, a fatal signal) or by an
        execve of another: as on Linux its robust futexes are released (a process
        sharing them must learn their owner died); its CLEARTID word is of no use."""
        if (task.exiting or self.exit_status is not None) and not task.dead \
                and task.robust_list:
            try:
                self.proc.release_thread_futexes(task, robust_only=True)
            except Exception as exc:     # a bug in the VMM: the process ends anyway
                self.proc.log(f"kvmdune: releasing robust futexes at exit: {exc!r}")

    # -- running ------------------------------------------------------------------------
    def run_main(self) -> ExitStatus:
        """The VMM's main thread: run the main task while there is one, wait for the
        process to end otherwise; end every thread and return the status."""
        while True:
            task = self.main_task
            if task is not None and self.exit_status is None:
                self._local.task = task
                self._drive(task)
                self._released_at_process_end(task)
                with self.lock:
                    if self.main_task is task and (task.dead or task.exiting
                                                   or self.exit_status is not None):
                        self.main_task = None
                        if task.dead:
                            self.tasks.pop(task.tid, None)
                            self.proc.release_cpu(task.cpu)
                        task.done.set()
            if self.exit_status is not None:
                self._end_all()
                self.proc.release_vfork_parent(self.proc.space, self.proc.mm)
                # The vCPUs are about to close: host signals no longer go anywhere.
                self.proc.sighand.route = None
                return self.exit_status
            if self.main_task is None:
                self._wait_as_router()

    def _wait_as_router(self) -> None:
        """No guest thread on the main thread: wait for the process's end (or for a
        thread moving here), running the signal handlers that route host signals,
        and for the wall-time limit and the ticks."""
        if self._timed_out():
            return
        self._wake_main.wait(self._main_budget())
        self._wake_main.clear()
        self._timed_out()

    def _main_budget(self) -> float | None:
        """Seconds until the main thread must act: the wall-time limit or a tick."""
        due = [t for t in (self.deadline, self.ticks.next_at if self.ticks else None)
               if t is not None]
        return None if not due else max(min(due) - time.monotonic(), 0.001)

    def _timed_out(self) -> bool:
        """On the main thread, between runs: the wall-time limit (True: the process
        is ending), else a tick if one is due."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self._wall_time_reached()
            return True
        if self.ticks is not None and self.ticks.next_at is not None \
                and time.monotonic() >= self.ticks.next_at:
            with self.lock:
                self.ticks.tick(self.proc)
        return False

    def _wall_time_reached(self) -> None:
        self.killed_at_wall_time = True
        self.proc.log(f"kvmdune: wall-time limit of {self.wall_seconds:g} s reached: "
                      "the guest was killed (status 137)")
        self.exit_group(ExitStatus(signal=Signal.SIGKILL))

    def _drive(self, task: Task) -> None:
        """Run ``task``'s vCPU until its thread ends (or the process does)."""
        # Whether KVM_RUN failed with EFAULT with no page past a file's end left to
        # unmap: another thread may have unmapped the one this vCPU met (it then
        # runs on once); a second time in a row, the failure is of another kind.
        unexplained_fault = False
        while True:
            on_main = threading.current_thread() is threading.main_thread()
            budget = self._main_budget() if on_main else None
            try:
                stop = task.cpu.run(self.proc, budget=budget)
            except MachineError as exc:
                self.proc.log(f"kvmdune: internal error: {exc}")
                self.exit_group(ExitStatus(signal=Signal.SIGSEGV))
                return
            except KvmError as exc:
                if exc.errno == errno.EFAULT:
                    if self._pages_past_file_ends_dropped():
                        unexplained_fault = False
                        continue
                    if not unexplained_fault:
                        unexplained_fault = True
                        continue
                # KVM itself refused to go on (e.g. EAGAIN at a process limit it counts).
                self.proc.log(f"kvmdune: {self.proc.exe}: the virtual CPU cannot run: {exc}")
                self.exit_group(ExitStatus(signal=Signal.SIGKILL))
                return
            except Exception as exc:      # a bug in the VMM outside a system call
                self.exit_group(self.proc.internal_error("the run loop", exc).value)
                return
            unexplained_fault = False
            value = stop.value
            if isinstance(value, ExitStatus):
                self.exit_group(value)
                return
            if isinstance(value, (ThreadExit, MoveToMain)):
                return
            if stop.reason is StopReason.BUDGET:
                if self._timed_out():
                    return
                continue
            if stop.reason is StopReason.REQUEST:
                if not (task.exiting or self.exit_status is not None):
                    self.exit_group(ExitStatus(signal=Signal.SIGKILL))
                return

    def _pages_past_file_ends_dropped(self) -> bool:
        """KVM_RUN failed with EFAULT: the host memory behind a guest page could not
        be read, as when a shared file mapping's file was truncated under it. Its
        pages past the file's end are unmapped (True), so that the guest's access,
        run again, faults and gets SIGBUS as on Linux; False if there were none
        (a failure of another kind)."""
        mm = self.proc.mm
        if mm is None:
            return False
        with self.lock:
            return mm.drop_pages_past_file_ends()

    # -- ends ---------------------------------------------------------------------------
    def exit_thread(self, code: int) -> Stop:
        """exit(2) of the calling thread (lock held): the process's end if it is the
        last one; otherwise its futexes are released and its thread ends."""
        task = self.current()
        task.dead = True
        self._reroute_from(task)
        if not any(other.live for other in self.tasks.values()):
            self.proc.release_thread_futexes(task, robust_only=True)
            return Stop(value=ExitStatus(code=code))
        self.proc.release_thread_futexes(task)
        return Stop(value=ThreadExit(code))

    def exit_group(self, status: ExitStatus) -> None:
        """End the process with ``status`` (the first such call decides): every
        thread stops at its next event boundary."""
        with self.lock:
            if self.exit_status is None:
                self.exit_status = status
            me = getattr(self._local, "task", None)
            for task in list(self.tasks.values()):
                if task is not me:
                    self._stop(task)
        self._wake_main.set()

    def _stop(self, task: Task) -> None:
        task.exiting = True
        task.cpu.stop(StopReason.REQUEST)
        if task.blocking and task.cpu.thread_ident != threading.get_ident():
            self._kick_again(task)

    def _end_all(self) -> None:
        """The main thread, the process ending: wait for every other thread's end."""
        while True:
            with self.lock:
                left = [task for task in self.tasks.values()
                        if task.thread is not None and not task.done.is_set()]
                for task in left:
                    self._stop(task)
            if not left:
                return
            for task in left:
                task.done.wait(KICK_INTERVAL * 5)

    def end_others(self) -> None:
        """execve's de_thread (lock held): stop every other thread and wait, without
        the lock, until each has left its run loop."""
        me = self.current()
        others = [task for task in self.tasks.values() if task is not me]
        if not others:
            return
        for task in others:
            self._stop(task)
        self._wake_main.set()
        self.lock.release()
        try:
            for task in others:
                while not task.done.wait(KICK_INTERVAL * 5):
                    task.cpu.kick()
        finally:
            self.lock.acquire()
        for task in others:
            if self.tasks.get(task.tid) is task:
                del self.tasks[task.tid]
                self.proc.release_cpu(task.cpu)

    def become_main(self) -> Stop | None:
        """After execve from a thread other than the main one (the others ended):
        take the process id as thread id and move to the main thread; the Stop that
        ends this host thread's run loop (None when already on the main thread)."""
        task = self.current()
        if task.thread is None:
            return None
        del self.tasks[task.tid]
        task.tid = os.getpid()
        self.tasks[task.tid] = task
        # The main thread takes it once this thread has left its run loop.
        self._moving = task
        task.thread = None
        return Stop(value=MoveToMain())

    # -- fork ---------------------------------------------------------------------------
    def park_others(self) -> None:
        """Before os.fork() (lock held): every other vCPU leaves KVM_RUN and waits
        for the lock, so no guest code runs while the process is copied."""
        me = self.current()
        others = [task for task in self.tasks.values() if task is not me]
        for task in others:
            task.cpu.interrupt()
        while any(task.cpu.in_guest for task in others):
            time.sleep(POLL_INTERVAL)

    def after_fork_in_child(self) -> None:
        """In the child of fork: only the calling thread exists; it is the main
        thread now (CPython makes the forking thread the main one) and its id is
        the child's process id."""
        task = self.current()
        self.tasks = {os.getpid(): task}
        task.tid = os.getpid()
        task.thread = None
        # A child of fork starts with no pending signals (fork(2)): one the parent had
        # not taken yet (a SIGTSTP at the fork) would stop a vfork child before its
        # exec, and its parent with it.
        task.signals.clear_pending()
        self.main_task = task
        self._rekick = {}
        self._rekicker = None
        self._rekick_lock = threading.RLock()
        self._wake_main = threading.Event()


def _copy_user_state(parent: Cpu, child: Cpu, space) -> None:
    """The child thread's registers at clone: the parent's user registers (the
    ``syscall`` return point, RFLAGS), its FS/GS bases, its FPU/SSE/AVX state."""
    regs = parent.regs
    child.enter_user(space, regs.rip, regs.rsp, regs.rflags)
    for name in ("rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11",
                 "r12", "r13", "r14", "r15"):
        setattr(child.regs, name, getattr(regs, name))
    child.regs.rax = 0
    child.fs_base = parent.fs_base
    child.gs_base = parent.gs_base
    try:
        child.vcpu.set_xsave(parent.vcpu.get_xsave())
    except Exception:      # a KVM without KVM_CAP_XSAVE: the thread starts afresh
        pass


def _quiet_thread(target, name: str, *args, keep: tuple[int, ...] = ()) -> threading.Thread:
    """A daemon host thread that starts with every signal blocked but ``keep``: none
    of the guest's signals takes its default action there (see host_signals.py)."""
    blocked = sigmask.BLOCKABLE & ~sigmask.mask_of(keep)

    def run(*arguments) -> None:
        sigmask.set_mask(blocked)        # SIGCANCEL too (see sigmask.py)
        target(*arguments)

    thread = threading.Thread(target=run, args=args, name=name, daemon=True)
    original_start = thread.start

    def start() -> None:
        previous = sigmask.set_mask(blocked)
        try:
            original_start()
        finally:
            sigmask.set_mask(previous)

    thread.start = start          # type: ignore[method-assign]
    return thread
