"""The fast path: the guest's system calls served by a native host thread through the
machine's call ring, without an exit and without Python, where that gives exactly the
answer the Python path would.

This module decides *which* calls may be served there and keeps the native server's
view of the process current; ``native/fastpath.c`` serves them. The descriptor table
is not copied: it is native (``FdTable.store``), the server reads it and changes it
itself (close, dup*, fcntl's descriptor commands, opens) holding the process's lock.
A call is fast when
1. the native server implements it (``_fastpath.FAST_CALLS``: identity getters,
   read/write/readv/writev/pread64/pwrite64/lseek/fstat, sendto/recvfrom without an
   address, epoll_wait/epoll_pwait/poll/ppoll (what is ready now), the stat and
   access families,
   getdents64, fsync/fdatasync/fadvise64, clock_gettime and time, close, dup,
   dup2, dup3, fcntl, open, openat, rt_sigaction, ioctl's TCGETS/TIOCGWINSZ on
   what is no terminal, getxattr/lgetxattr/listxattr/llistxattr);
2. Python would only forward it to the host (no emulation in a handler); and
3. the gate (the sandbox's policy) allows it by its number alone — or, for the
   stat family, reading opens and getxattr/lgetxattr/listxattr/llistxattr,
   wherever its path resolves beneath one of the gate's read roots: the server
   has the kernel check that for canonical directory roots (openat2 with
   RESOLVE_BENEATH from a descriptor of each root, opened once), and for any other
   root (a single file such as /etc/passwd) compares the name of the file the
   path resolves to with the root's as the gate does; a path with a ".."
   component, or any other path, goes to the gate.
Calls a gate denies by number alone are denied natively with the same errno. At
run time the server still hands back to the VMM anything it cannot serve exactly
as the VMM would: I/O on a blocking pipe or socket that would wait longer than the
VMM's wait slice (the server tries without waiting and hands a call that must wait
to the vCPU's own thread, which waits in the kernel in short slices until a signal
for the guest, a quiesce or the slice's end; a write that went through in part is
then finished by the VMM: ``continue_write``), any I/O on a terminal or other
descriptor that may block, a buffer not mapped writable for user code, a path under /proc or /dev (which
the VMM rewrites), an open that creates or names anything but a regular file or
directory, a close of a descriptor a blocked call holds, the process's lock held by
the VMM, an fcntl command other than F_GETFD/F_SETFD/F_GETFL/F_DUPFD(_CLOEXEC), or
any call while a signal waits for the guest.

``KVMDUNE_FAST_SYSCALLS=0`` (or ``RunOptions(fast_syscalls=False)``) turns it off:
every call then exits to the VMM, as before.

When the guest gets no answer in its spin, it exits to wait (the call stub's wait
target), and its vCPU's thread serves the call or waits for the answer. A vCPU
without another native run loop (a Dune process's upcalls) gets one that answers
those exits without Python (``native/waitrunner.c``: a wait through Python's run
loop costs ~35 us on this machine, most of a loaded machine's per-call cost);
``KVMDUNE_NATIVE_WAITS=0`` leaves them to Python.
"""

from __future__ import annotations

import os
import struct

from ..machine.layout import CALL_SLOTS, USER_CS, USER_DS
from ..memory import READ, GuestFault
from .gate import RuleKind
from .host_unsafe import HostBuffer, host_syscall
from .routing import forwards_only
from .syscall_table import SYSCALLS, Sysno

ENVIRONMENT_VARIABLE = "KVMDUNE_FAST_SYSCALLS"
NATIVE_WAITS_VARIABLE = "KVMDUNE_NATIVE_WAITS"
#: set_force_slow's slot for every ring.
ALL_SLOTS = -1
#: How long the serving thread spins for the next call before it sleeps.
SPIN_SECONDS = 200e-6
#: How long the VMM waits for an answer before it lets the guest ask again (so that
#: stop requests and signals reach the run loop).
WAIT_SLICE_SECONDS = 0.01
#: Calls after which the serving thread is replaced: they change per-thread host
#: state (credentials, namespaces, seccomp filters, Landlock domains), and a thread
#: created afterwards inherits it from the VMM's thread.
THREAD_STATE_CALLS = frozenset({
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "setgroups", "capset", "unshare", "setns", "seccomp", "prctl",
    "landlock_restrict_self", "personality", "set_mempolicy"})
#: Calls Python emulates whose native server gives the same answer or hands them
#: back: futex (private wakes, and waits whose word already differs; see fastpath.c);
#: epoll_pwait without a signal mask (Python's forwards it as epoll_wait would be);
#: the descriptor table's own calls (on the same table, under the same lock);
#: poll and ppoll (what is ready now, over the same table; a wait goes to Python);
#: rt_sigaction (on the dispositions' native store, under the same lock; an action
#: that ignores the signal is handed back: the VMM drops what is pending); and ioctl
#: (only TCGETS/TIOCGWINSZ answered ENOTTY on what is no terminal, the rest handed back);
#: readlink and readlinkat (links outside /proc; the VMM answers /proc's for the guest).
NATIVE_EMULATIONS = frozenset({"futex", "epoll_pwait", "close", "dup", "dup2", "dup3",
                               "fcntl", "rt_sigaction", "ioctl", "poll", "ppoll",
                               "readlink", "readlinkat"})
#: Writes the native server may hand over with part of them done (continue_write).
_CONTINUED_WRITES = frozenset({Sysno.write, Sysno.writev, Sysno.sendto})
_IOVEC = struct.Struct("<QQ")
#: The server's limits on the roots it is given (fastpath.c MAX_ROOTS, PATH_MAX_BYTES).
MAX_ROOTS = 32
MAX_ROOT_BYTES = 4096
_U64 = 0xFFFF_FFFF_FFFF_FFFF


def wanted(option: bool | None = None) -> bool:
    """The fast path is on unless turned off by the option or the environment."""
    if option is not None:
        return option
    value = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower()
    return value not in ("0", "off", "no", "false")


def native_module():
    """The native server, or None where it was not built (the Python path serves)."""
    try:
        from . import _fastpath
    except ImportError:
        return None
    return _fastpath


def wait_runner_module():
    """The native run loop that answers the stub's waits, or None (not built, or
    turned off by KVMDUNE_NATIVE_WAITS=0)."""
    if os.environ.get(NATIVE_WAITS_VARIABLE, "1").strip().lower() in ("0", "off", "no", "false"):
        return None
    try:
        from . import _waitrunner
    except ImportError:
        return None
    if (_waitrunner.USER_CS, _waitrunner.USER_DS) != (USER_CS, USER_DS):
        raise ImportError("reentry.h's user selectors disagree with layout.py's")
    return _waitrunner


def plan(native, rules: dict | None) -> dict[int, tuple[int, int]]:
    """The action (and errno) for every call number the server should not simply
    hand back: ``{number: (native.FAST or native.DENY, errno)}``. ``rules`` are the
    gate's verdicts by number (``Gate.rules()``; None: no gate)."""
    actions: dict[int, tuple[int, int]] = {}
    implemented = set(native.FAST_CALLS)
    for number, spec in SYSCALLS.items():
        rule = rules.get(number) if rules is not None else None
        if rule is not None and rule.kind is RuleKind.DENY:
            actions[number] = (native.DENY, rule.errno)
            continue
        if rule is not None and rule.kind is RuleKind.BENEATH:
            if number in native.BENEATH_CALLS and (forwards_only(spec)
                                                   or spec.name in NATIVE_EMULATIONS):
                actions[number] = (native.BENEATH, 0)
            continue
        allowed = rules is None or (rule is not None and rule.kind is RuleKind.ALLOW)
        if allowed and number in implemented and (forwards_only(spec)
                                                  or spec.name in NATIVE_EMULATIONS):
            actions[number] = (native.FAST, 0)
    return actions


def open_roots(rules: dict | None) -> list[tuple[str, int]]:
    """The roots BENEATH rules name, for the server: ``(root, O_PATH descriptor)``
    for a canonical directory (no symlink in it, so that beneath the descriptor is
    beneath the name the gate compares with), which the kernel resolves paths from;
    ``(root, -1)`` for any other (a single file, a name with a symlink in it),
    which the server compares by name with what a path resolves to, as the gate
    does. At most the server's limit: a root left out only sends its calls to the
    gate."""
    roots: list[str] = []
    for rule in (rules or {}).values():
        if rule.kind is RuleKind.BENEATH:
            roots.extend(root for root in rule.roots if root not in roots)
    opened = []
    for root in roots:
        if not root.startswith("/") or "\0" in root or len(root) >= MAX_ROOT_BYTES:
            continue
        fd = -1
        if os.path.realpath(root) == root:
            try:
                fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                fd = -1
        opened.append((root, fd))
    return opened[:MAX_ROOTS]


class FastPath:
    """The native server of one process, fed with its descriptors, its address space
    and its action table; the machine's call stub points ``syscall`` at it."""

    def __init__(self, proc, native, rules: dict | None) -> None:
        self.proc = proc
        machine = proc.machine
        memory = machine.memory
        ring = machine.install_call_stub()
        self.native = native
        self._wait_runners: dict = {}       # cpu -> the WaitRunner installed for it
        self._waits_answered_natively = 0   # by runners since removed
        self.server = native.Server(ring.ring_host_address, memory.mapping.address,
                                    memory.size, int(SPIN_SECONDS * 1e9))
        for number, (action, errno) in plan(native, rules).items():
            self.server.set_action(number, action, errno)
        self._root_fds = open_roots(rules)
        self.server.set_roots(self._root_fds)
        self.server.set_table(proc.fds.store, _lock_address(proc))
        self.server.set_dispositions(proc.sighand.actions.store)
        # A descriptor the VMM closes is not reused while a serve may still use it.
        proc.fds.quiesce = self.server.quiesce
        if proc.space is not None:
            self.server.set_cr3(proc.space.cr3)
        self.attach(proc.task.cpu)
        # Patched call sites (sitepatch.py) find each vCPU's ring through its GS base.
        machine.use_patched_sites(proc.mm.patch_sites)
        # A signal for the process: any thread may take it, every call goes to the VMM.
        proc.sighand.on_arrival = lambda: self.server.set_force_slow(ALL_SLOTS, True)
        # A frame freed by the VMM (munmap, a page table) is not reused, nor a closed
        # descriptor's number, while a serve that may still use it is under way.
        memory.quiesce = self.server.quiesce
        machine.on_close(self.close)
        self.server.start()

    # -- the vCPUs it serves (one ring each) -----------------------------------------
    def attach(self, cpu) -> None:
        """Serve ``cpu``'s ring (a new thread's vCPU); vCPUs beyond the call slots
        exit for every call (the machine points their MSR_LSTAR at the trampoline)."""
        if cpu.index >= CALL_SLOTS:
            return
        self.server.add_ring(cpu.index)
        self._wait_here(cpu)

    def _wait_here(self, cpu) -> None:
        """The call stub's wait exits of ``cpu`` are answered by its own thread, from
        Python or from a native run loop (call_wait.h)."""
        cpu.call_wait = lambda: self.server.wait_response(cpu.index, WAIT_SLICE_SECONDS)
        cpu.native_call_wait = self.server.call_wait_capsule(cpu.index, WAIT_SLICE_SECONDS)
        self._run_waits_natively(cpu)

    def _run_waits_natively(self, cpu) -> None:
        """Give ``cpu`` a native run loop for the stub's waits, unless it has one or
        the process uses privileged features (the Dune API: its layer runs the vCPUs,
        and its upcall runner answers the waits where it delivers natively)."""
        module = wait_runner_module()
        if module is None or cpu.native_runner is not None or self.proc.privileged is not None:
            return
        memory = self.proc.machine.memory
        runner = module.WaitRunner(memory=memory.mapping.address, memory_size=memory.size,
                                   **cpu.native_run_parameters())
        cpu.native_runner = runner
        self._wait_runners[cpu] = runner

    def _stop_running_waits(self, cpu) -> None:
        runner = self._wait_runners.pop(cpu, None)
        if runner is None:
            return
        self._waits_answered_natively += runner.stats()["waits"]
        if cpu.native_runner is runner:
            cpu.native_runner = None

    def privileged_started(self) -> None:
        """The process asked for privileged features: its vCPUs' run loops are its
        layer's from now on (``_run_waits_natively``)."""
        for cpu in list(self._wait_runners):
            self._stop_running_waits(cpu)

    def detach_cpu(self, cpu) -> None:
        """``cpu`` goes back to the pool: its ring is no longer served."""
        if cpu.index < CALL_SLOTS:
            self.server.remove_ring(cpu.index)
        cpu.call_wait = cpu.native_call_wait = None
        self._stop_running_waits(cpu)

    # -- what the process tells it ---------------------------------------------------
    def address_space_changed(self, space) -> None:
        self.server.set_cr3(space.cr3)

    def before_slow_call(self, cpu) -> None:
        """The VMM is about to serve a call of ``cpu``: the thread need not spin for
        that vCPU's calls until ``after_slow_call``."""
        if cpu.index < CALL_SLOTS:
            self.server.vcpu_out(cpu.index)

    def after_slow_call(self, cpu, signal_waiting: bool) -> None:
        """The VMM served a call of ``cpu``: its next ones should find the thread
        spinning, unless a signal waits (then they come to the VMM)."""
        self.signal_waiting(cpu, signal_waiting)
        self.server.wake(cpu.index if cpu.index < CALL_SLOTS else -1)

    def signal_waiting(self, cpu, waiting: bool) -> None:
        """While a signal waits for the thread on ``cpu``, every call of it goes to
        the VMM, which delivers the signal at the call's end."""
        if cpu.index < CALL_SLOTS:
            self.server.set_force_slow(cpu.index, waiting)

    def continue_write(self, cpu, number: int, args: tuple[int, ...]) -> int | None:
        """The result of a write the native server began and handed over with part
        of it done (a blocking pipe or socket that took only some of the bytes
        without waiting): the rest is written here, waiting as Linux waits, and the
        whole count answered (or the part done, where Linux stops early: a signal,
        a broken pipe, which raises SIGPIPE as ever). None: not such a write."""
        if number not in _CONTINUED_WRITES or cpu.index >= CALL_SLOTS:
            return None
        fd, buffer, count = (value & _U64 for value in args[:3])
        done = self.server.carried_write(cpu.index, number, fd, buffer, count)
        if done <= 0:
            return None
        # The ring is the guest's: what it says is bounded as the server bounds a
        # call it serves, and a count beyond the write is no carried count.
        proc = self.proc
        native = self.native
        if number == Sysno.writev and count > native.MAX_PIECES:
            return None
        try:
            pieces = ([(buffer, count)] if number == Sysno.write else
                      list(_IOVEC.iter_unpack(proc.space.read(buffer, count * _IOVEC.size,
                                                              READ))))
            if sum(length for _, length in pieces) > native.MAX_FAST_BUFFER:
                return None
            rest = b"".join(proc.space.read(base, length, READ)
                            for base, length in _skip(pieces, done))
        except GuestFault:
            return done
        host = proc.fds.host(fd & 0xFFFF_FFFF)
        if not rest:
            return None             # it claims all of it done: not a carried write
        if host is None:
            return done
        data = HostBuffer(rest)
        # sendto's flags as the guest gave them (MSG_NOSIGNAL: no SIGPIPE); its
        # address is NULL (the server serves no other).
        extra = (args[3] & 0xFFFF_FFFF, 0, 0) if number == Sysno.sendto else ()
        written = proc.host_call(lambda: host_syscall(number if extra else Sysno.write, host,
                                                      data, len(rest), *extra), [host])
        return done + written if written > 0 else done

    def thread_state_changed(self) -> None:
        """Replace the serving thread, so that it acts with the VMM thread's
        credentials and filters (see THREAD_STATE_CALLS)."""
        self.server.stop()
        self.server.start()

    def set_vmm_calls(self, handler: object | None, ops: int = 0) -> None:
        """Have the server answer the VMM calls (hypercalls) of ``ops`` (bit n: op n)
        with ``handler``, a layer above's native handler (a capsule:
        native/vmm_calls.h), handing back what it does not serve; None: every VMM
        call exits to the VMM again. Every ring's stub asks the thread for ``ops``."""
        self.server.set_vmm_calls(handler, ops)

    def has_vmm_calls(self) -> bool:
        """Whether a native handler of VMM calls is installed (a forked child starts
        without: its parent's belonged to the parent's VM)."""
        return self.server.has_vmm_calls()

    def after_fork(self) -> None:
        """In a forked child: the serving thread was not copied, nor the other
        vCPUs; the calling one is the child's vCPU 0 (slot 0): start a thread here."""
        self.server.forget_thread()
        self._wait_runners.clear()          # the parent's vCPUs (rebind dropped them)
        self._waits_answered_natively = 0
        self._wait_here(self.proc.task.cpu)
        self.proc.machine.on_close(self.close)
        self.server.start()

    def stats(self) -> dict[str, int]:
        """The server's counters, and ``native_waits``: the stub's waits answered
        by native run loops (of these vCPUs' ``waits``)."""
        return self.server.stats() | {"native_waits": self._waits_answered_natively + sum(
            runner.stats()["waits"] for runner in self._wait_runners.values())}

    def detach(self) -> None:
        """Stop serving for good: every vCPU's ``syscall`` exits to the VMM again."""
        self.close()
        proc = self.proc
        proc.fds.quiesce = None
        self.server.set_table(proc.fds.store, 0)     # nothing changes it but the VMM
        proc.sighand.on_arrival = None
        proc.machine.memory.quiesce = None
        for cpu in proc.machine.cpus:
            cpu.call_wait = cpu.native_call_wait = None
            self._stop_running_waits(cpu)
        proc.machine.use_patched_sites(False)
        proc.machine.remove_call_stub()

    def close(self) -> None:
        """Stop the thread (before guest memory goes away)."""
        self.server.stop()
        for _path, fd in self._root_fds:
            if fd >= 0:
                os.close(fd)
        self._root_fds = []


def _lock_address(proc) -> int:
    """The process's lock as native code tries it (0 where it is a plain lock: the
    server then leaves every change of the table to the VMM)."""
    return getattr(proc.threads.lock, "address", 0)


def _skip(pieces: list[tuple[int, int]], done: int) -> list[tuple[int, int]]:
    """``pieces`` (address, length) without their first ``done`` bytes."""
    rest = []
    for base, length in pieces:
        if done >= length:
            done -= length
            continue
        rest.append((base + done, length - done))
        done = 0
    return rest


def start(proc, option: bool | None = None) -> FastPath | None:
    """Put ``proc`` on the fast path if wanted and possible (None: it stays on the
    exit path: turned off, tracing, or no native module)."""
    if not wanted(option) or proc.tracer is not None:
        return None
    native = native_module()
    if native is None:
        return None
    rules = proc.gate.rules() if proc.gate is not None else None
    return FastPath(proc, native, rules)


__all__ = ["ENVIRONMENT_VARIABLE", "FastPath", "plan", "start", "wanted"]
