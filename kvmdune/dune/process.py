"""The Dune API in the VMM, for one process: ``DuneProcess``, the ``Privileged``
extension the Linux layer hands every hypercall and (first) every event to.

It owns entry, traps and user code (hypercall ops below ``VM_OPS_START``; the page
tables' ops go to ``DuneVm``, kvmdune/dune/vm.py) and the *upcalls* that carry
faults, exceptions, signals and the system calls of user code to the program's
handlers (include/kvmdune/upcall.h has the frame and the rules).

Two kinds of code run at CPL3 in a Dune process: the *program*, in its own address
space (``proc.space``), and *user code* it starts with dune_jump_to_user, in the
user view of a root (``DuneVm.user_space()``), which holds only the root's PERM_U
pages and no call stub: its ``syscall`` faults (software KVM) or exits (hardware
KVM) at the stub's address, and comes here as a system call of user code.

- An upcall that interrupts the program writes the frame on the handler stack and
  restarts the program at the library's upcall entry; the library returns by
  itself (``iretq`` at CPL3), no VMM round trip.
- An upcall that interrupts user code also switches back to the program's view and
  FS base; the handler's return is the RESUME_USER hypercall, and
  dune_ret_from_user (RET_FROM_USER) ends the run: the program continues after its
  JUMP_TO_USER hypercall, registers as they were there, RAX the value.
- A signal for a sigaction handler arriving while user code runs waits (pending)
  until the program itself next makes a system call; one whose default action ends
  or stops the process does so at once.

Every guest-supplied pointer (tf, handler stack, upcall entry) is checked against
the program's own memory; bad ones are -EFAULT/-EINVAL, and a handler stack that
cannot take a frame ends the process with a crash report.
"""

from __future__ import annotations

import ctypes
import operator
import struct
from dataclasses import dataclass

from ..linux import signals as sig
from ..linux.abi import Errno, ProtFlags, SigHandler, Signal
from ..linux.exit_status import ExitStatus
from ..linux.privileged import Privileged
from ..linux.process import Process, crash_report
from ..machine import (Action, Cpu, ExceptionEvent, PageFaultEvent, PFError, Stop,
                       SyscallEvent, Vector, layout)
from ..machine.x86 import RFLAGS, USER_RFLAGS, USER_RFLAGS_FIXED
from ..memory import WRITE, Access, GuestFault, OutOfGuestMemory, is_canonical
from .hypercall import (ABI_VERSION, RED_ZONE, SIGNAL_INTR_BASE, TF_FIELDS, UPCALL_ALIGN,
                        UPCALL_SIZE, UPCALL_STACK_RESERVE, HypercallOp, TrapKind,
                        UpcallFlags)
from .upcalls import NativeUpcalls, UpcallConfig

__all__ = ["DuneProcess", "VM_OPS_START"]

#: Ops from here on are the page tables' (DuneVm).
VM_OPS_START = HypercallOp.VM_MPROTECT
#: The smallest handler stack ENTER accepts: a frame and the room below it.
MIN_HANDLER_STACK = 2 * UPCALL_STACK_RESERVE
#: The highest signal a vector can carry (DUNE_SIGNAL_INTR_BASE + 55 = 255).
LAST_SIGNAL_VECTOR = 255
#: ``struct dune_tf`` (libdune's packed layout): rdi..rax, err, pad, rip, cs,
#: rflags, rsp, ss.
_TF = struct.Struct("<15QIIQH6xQQH6x")
#: The rest of ``struct kvmdune_upcall``: kind, vector, addr, fec, flags, fs_base.
_UPCALL_TAIL = struct.Struct("<7Q")
#: A tf is written back at the end of a run: it must be writable, checked without
#: marking it dirty.
_WRITABLE = Access(write=True, track=False)
_MASK64 = (1 << 64) - 1
#: The general registers of a ``struct dune_tf``, read from kvm_regs in one call.
_tf_registers = operator.attrgetter(*TF_FIELDS)
_RCX_SLOT = TF_FIELDS.index("rcx")
_FROM_USER = int(UpcallFlags.FROM_USER)
_PF_VECTOR = int(Vector.PF)
_KIND_NAMES = {TrapKind.PGFLT: "page fault", TrapKind.VECTOR: "exception",
               TrapKind.SIGNAL: "signal", TrapKind.SYSCALL: "system call of user code"}


@dataclass
class HandlerStack:
    """What ENTER registered for the thread: the upcall entry and the stack."""

    entry: int
    base: int
    top: int

    def holds(self, rsp: int) -> bool:
        return self.base <= rsp < self.top


@dataclass
class UserRun:
    """A dune_jump_to_user in progress."""

    tf_address: int          # the caller's tf, which gets the final registers
    program_regs: object     # the program's registers at its JUMP_TO_USER (kvm_regs)
    program_fs: int
    user_fs: int
    #: Where user code's upcall frames end: the top of the handler stack, or below
    #: the program's red zone when it started the run from a handler.
    frame_ceiling: int
    running: bool = True     # False: waiting in a handler (an upcall took it out)
    user_regs: object = None # user code's registers at its last upcall (kvm_regs)
    resume_as_sysret: bool = False   # that upcall was one of its system calls


@dataclass
class DuneThread:
    """One guest thread's part of the Dune API (each thread is a vCPU): its handler
    stack (ENTER) and its dune_jump_to_user in progress, as libdune keeps them per
    thread."""

    stack: HandlerStack | None = None
    run: UserRun | None = None


@dataclass(frozen=True)
class Upcall:
    """What to tell the program's handler."""

    kind: TrapKind
    vector: int
    addr: int = 0
    fec: int = 0


class DuneProcess(Privileged):
    """The Dune API of one process (made on its first hypercall)."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.initialized = False
        self.map_full = False
        self.vm = None                       # DuneVm, after INIT
        #: Per vCPU (guest thread): its handler stack and user-code run.
        self._threads: dict[Cpu, DuneThread] = {}
        self.page_faults = False             # TrapKind.PGFLT
        self.vectors: set[int] = set()       # TrapKind.VECTOR
        self.signals: set[int] = set()       # TrapKind.SIGNAL
        self.syscalls = False                # TrapKind.SYSCALL
        #: The upcalls delivered without Python (upcalls.py), where the process can.
        self.native_upcalls = NativeUpcalls.start(proc)
        self._ops = {
            HypercallOp.PROBE: self._probe,
            HypercallOp.INIT: self._init,
            HypercallOp.ENTER: self._enter,
            HypercallOp.SET_TRAP: self._set_trap,
            HypercallOp.JUMP_TO_USER: self._jump_to_user,
            HypercallOp.RET_FROM_USER: self._ret_from_user,
            HypercallOp.RESUME_USER: self._resume_user,
        }

    # -- hypercalls ----------------------------------------------------------------
    def hypercall(self, cpu: Cpu, op: int, args: tuple[int, ...]) -> int | None:
        handler = self._ops.get(op)
        if handler is not None:
            return handler(cpu, *args)
        if op < VM_OPS_START:
            return -Errno.ENOSYS
        if not self.initialized:
            return -Errno.EINVAL
        if self.vm is None:        # the page-table part is not there
            return -Errno.ENOSYS
        return self.vm.hypercall(cpu, op, args)

    def _probe(self, cpu: Cpu, *_args: int) -> int:
        """PROBE(): the ABI version (natively: ENOSYS)."""
        return ABI_VERSION

    def _init(self, cpu: Cpu, map_full: int, *_args: int) -> int:
        """INIT(map_full): the page tables (DuneVm), once; the pgroot handle. Again
        with the same map_full: the same pgroot; with the other: EBUSY."""
        full = bool(map_full & 0xFF)      # a C bool
        if self.initialized:
            return self._pgroot() if full == self.map_full else -Errno.EBUSY
        vm_class = _dune_vm_class()
        if vm_class is not None:
            try:
                self.vm = vm_class(self.proc, full)
            except OutOfGuestMemory:
                return -Errno.ENOMEM
        self.initialized, self.map_full = True, full
        return self._pgroot()

    def _pgroot(self) -> int:
        return self.vm.pgroot if self.vm is not None else 0

    def _enter(self, cpu: Cpu, entry: int, base: int, size: int, *_args: int) -> int:
        """ENTER(upcall_entry, stack_base, stack_size): where upcalls run; (0, 0, 0)
        withdraws the thread's handler stack (the library's, at the thread's exit)."""
        if not self.initialized:
            return -Errno.EINVAL
        thread = self._thread(cpu)
        if thread.run is not None:
            return -Errno.EBUSY
        if entry == base == size == 0:
            thread.stack = None
            self._sync_native(cpu)
            return 0
        top = base + size
        if (size < MIN_HANDLER_STACK or base % UPCALL_ALIGN or top % UPCALL_ALIGN
                or top > layout.USER_PROGRAM_END):
            return -Errno.EINVAL
        if not self._program_owns(entry, entry + 1, ProtFlags.PROT_EXEC):
            return -Errno.EFAULT
        if not self._program_owns(base, top, ProtFlags.PROT_WRITE):
            return -Errno.EFAULT
        thread.stack = HandlerStack(entry, base, top)
        self._sync_native(cpu)
        return 0

    def _set_trap(self, cpu: Cpu, kind: int, number: int, on: int, *_args: int) -> int:
        """SET_TRAP(kind, number, on): which events go to the program's handlers."""
        on_ = bool(on & 0xFF)
        if kind == TrapKind.PGFLT:
            self.page_faults = on_
        elif kind == TrapKind.SYSCALL:
            self.syscalls = on_
        elif kind == TrapKind.VECTOR:
            if not 0 <= number < layout.IDT_VECTORS or number == Vector.PF:
                return -Errno.EINVAL
            _switch(self.vectors, number, on_)
        elif kind == TrapKind.SIGNAL:
            if (not sig.valid_signal(number) or number in sig.UNBLOCKABLE
                    or SIGNAL_INTR_BASE + number > LAST_SIGNAL_VECTOR):
                return -Errno.EINVAL
            _switch(self.signals, number, on_)
        else:
            return -Errno.EINVAL
        for thread_cpu in list(self._threads):
            self._sync_native(thread_cpu)
        return 0

    def _jump_to_user(self, cpu: Cpu, tf_address: int, user_fs: int, *_args: int) -> int | None:
        """JUMP_TO_USER(tf, user_fs): run user code with tf's registers; the call
        returns when a handler calls dune_ret_from_user."""
        if not self.initialized:
            return -Errno.EINVAL
        if self.vm is None:
            return -Errno.ENOSYS
        thread = self._thread(cpu)
        if thread.stack is None:
            return -Errno.EINVAL     # no handler stack: nothing could take its events
        if thread.run is not None:
            return -Errno.EBUSY
        tf = self._read_tf(tf_address, for_writeback=True)
        if tf is None:
            return -Errno.EFAULT
        if not _usable_registers(tf, user_fs):
            return -Errno.EINVAL
        regs = cpu.regs
        ceiling = regs.rsp - RED_ZONE if thread.stack.holds(regs.rsp) else thread.stack.top
        thread.run = UserRun(tf_address, _copy_registers(regs), cpu.fs_base, user_fs, ceiling)
        self._enter_user_code(cpu, tf, resume_as_sysret=False)
        return None

    def _resume_user(self, cpu: Cpu, tf_address: int, user_fs: int, *_args: int) -> int | None:
        """RESUME_USER(tf, user_fs): a handler for user code returned."""
        run = self._thread(cpu).run
        if run is None or run.running:
            return -Errno.EINVAL
        tf = self._read_tf(tf_address)
        if tf is None:
            return -Errno.EFAULT
        if not _usable_registers(tf, user_fs):
            return -Errno.EINVAL
        run.user_fs = user_fs
        run.program_fs = cpu.fs_base
        self._enter_user_code(cpu, tf, resume_as_sysret=run.resume_as_sysret)
        return None

    def _ret_from_user(self, cpu: Cpu, ret: int, *_args: int) -> int | None:
        """RET_FROM_USER(ret): end the run; JUMP_TO_USER returns ``ret`` (a C int)
        with user code's last registers in its tf."""
        thread = self._thread(cpu)
        run = thread.run
        if run is None or run.running:
            return -Errno.EINVAL
        thread.run = None
        try:
            self.proc.space.write(run.tf_address, _pack_tf(run.user_regs), WRITE)
        except GuestFault:
            pass    # unmapped since JUMP_TO_USER checked it: the program's own doing
        _restore_registers(cpu.regs, run.program_regs)
        cpu.regs.rax = _c_int(ret) & _MASK64
        self._sync_native(cpu)
        return None

    # -- events --------------------------------------------------------------------
    def on_syscall(self, cpu: Cpu, event: SyscallEvent) -> Action | Stop | None:
        if not self._user_code_running(cpu):
            return None
        if not self.syscalls:
            return self._end_user_code(cpu, Signal.SIGSYS, 0, event,
                                       f"made system call {event.number}")
        return self._upcall(cpu, Upcall(TrapKind.SYSCALL, event.number & _MASK64),
                            syscall=True)

    def on_page_fault(self, cpu: Cpu, event: PageFaultEvent) -> Action | Stop | None:
        if self._user_code_running(cpu):
            if self.vm.resolve_user_fault(cpu, event.address, event.error):
                return Action.RETRY      # a page of the root's the VMM had not backed yet
            if not self.page_faults:
                return self._end_user_code(cpu, Signal.SIGSEGV, event.address, event,
                                           "faulted")
            return self._upcall(cpu, self._page_fault(event))
        restricted = self.vm is not None and self.vm.restricts(event.address, event.error)
        if not restricted:
            if not self._traps_page_faults(cpu):
                return None          # Linux's way: demand paging, then SIGSEGV
            paged = self.proc.page_in(event)
            if paged is not None:
                return paged
        if self._traps_page_faults(cpu):
            return self._upcall(cpu, self._page_fault(event))
        # Dune's restriction stands: no demand paging undoes it.
        return self.proc.fault(cpu, Signal.SIGSEGV, event.address, event)

    def on_exception(self, cpu: Cpu, event: ExceptionEvent) -> Action | Stop | None:
        trapped = event.vector in self.vectors and self._thread(cpu).stack is not None
        if self._user_code_running(cpu):
            if not trapped:
                signo = sig.EXCEPTION_SIGNALS.get(event.vector, Signal.SIGSEGV)
                return self._end_user_code(cpu, signo, 0, event,
                                           f"raised {event.vector.mnemonic}")
        elif not trapped:
            return None
        error = event.error_code or 0
        return self._upcall(cpu, Upcall(TrapKind.VECTOR, int(event.vector), fec=error))

    def on_signal(self, cpu: Cpu, signo: int) -> Action | Stop | None:
        if signo in self.signals and self._thread(cpu).stack is not None:
            return self._upcall(cpu, Upcall(TrapKind.SIGNAL, SIGNAL_INTR_BASE + signo))
        if self._user_code_running(cpu) and self._has_linux_handler(signo):
            # Its handler belongs to the program: it runs when the program next makes
            # a system call of its own (user code's context has no place for it).
            self.proc.signals.queue(signo)
            return Action.RESUME
        return None

    def native_counts(self) -> dict[str, int]:
        stats = self.native_upcalls.stats() if self.native_upcalls else {}
        return {"upcalls delivered natively": stats.get("delivered", 0),
                "call waits answered natively": stats.get("waits", 0)}

    def close(self) -> None:
        if self.native_upcalls is not None:
            self.native_upcalls.close()      # before the page tables they look at go
        if self.vm is not None:
            self.vm.close()
            self.vm = None
        for cpu, thread in self._threads.items():
            if thread.run is not None:
                cpu.recognise_syscalls_at(None)
        self._threads.clear()

    def thread_ended(self, cpu: Cpu) -> None:
        """The thread of ``cpu`` is gone: its vCPU returns to the pool without its
        handler stack, run or root."""
        self._threads.pop(cpu, None)
        if self.native_upcalls is not None:
            self.native_upcalls.forget(cpu)
        if self.vm is not None:
            self.vm.forget_thread(cpu)

    # -- upcalls -------------------------------------------------------------------
    def _upcall(self, cpu: Cpu, upcall: Upcall, syscall: bool = False) -> Action | Stop:
        """Hand ``upcall`` to the program's handler on the handler stack."""
        thread = self._thread(cpu)
        stack = thread.stack
        assert stack is not None
        regs = cpu.regs
        from_user = self._user_code_running(cpu)
        if from_user:
            end = thread.run.frame_ceiling
        elif stack.holds(regs.rsp):            # a fault in a handler: below it
            end = regs.rsp - RED_ZONE
        else:
            end = stack.top
        frame = (end - UPCALL_SIZE) & ~(UPCALL_ALIGN - 1)
        if frame - UPCALL_STACK_RESERVE < stack.base:
            return self._stack_cannot_take(cpu, upcall, "it is full")
        flags = _FROM_USER if from_user else 0
        data = (_pack_tf(regs, syscall=syscall, err=upcall.fec)
                + _UPCALL_TAIL.pack(upcall.kind, upcall.vector, upcall.addr,
                                    upcall.fec, flags, cpu.fs_base, 0))
        if not self._write_program(frame, data):
            return self._stack_cannot_take(cpu, upcall, "it is not writable memory")
        if from_user:
            self._leave_user_code(cpu, syscall)
        regs.rip, regs.rsp, regs.rdi = stack.entry, frame, frame
        regs.rflags = USER_RFLAGS_FIXED
        return Action.RESUME

    def _page_fault(self, event: PageFaultEvent) -> Upcall:
        return Upcall(TrapKind.PGFLT, _PF_VECTOR, event.address, int(event.error))

    def _enter_user_code(self, cpu: Cpu, tf: dict[str, int], resume_as_sysret: bool) -> None:
        run = self._thread(cpu).run
        assert run is not None
        regs = cpu.regs
        for name in TF_FIELDS:
            setattr(regs, name, tf[name])
        regs.rip, regs.rsp = tf["rip"], tf["rsp"]
        regs.rflags = (tf["rflags"] & USER_RFLAGS) | USER_RFLAGS_FIXED
        if resume_as_sysret:
            # As libdune's sysret: ARG3 back to r10, RCX/R11 as `sysret` leaves them.
            regs.r10, regs.rcx, regs.r11 = tf["rcx"], regs.rip, regs.rflags
        cpu.set_address_space(self.vm.user_space(cpu))
        cpu.fs_base = run.user_fs
        # Its `syscall` jumps to MSR_LSTAR's target (this vCPU's call slot in the
        # stub's page), which the user view maps supervisor-only: software KVM
        # faults there.
        cpu.recognise_syscalls_at(self.proc.machine.syscall_target(cpu))
        run.running = True
        self._sync_native(cpu)

    def _leave_user_code(self, cpu: Cpu, syscall: bool) -> None:
        """Back to the program's view (an upcall took user code out)."""
        run = self._thread(cpu).run
        assert run is not None
        run.running = False
        run.user_regs = _copy_registers(cpu.regs)
        run.user_fs = cpu.fs_base
        run.resume_as_sysret = syscall
        cpu.recognise_syscalls_at(None)
        cpu.set_address_space(self.proc.space)
        cpu.fs_base = run.program_fs
        self._sync_native(cpu)

    def _sync_native(self, cpu: Cpu) -> None:
        """Tell ``cpu``'s native delivery what it may deliver now: what ``_upcall``
        would for the program (not for user code, whose upcalls switch views)."""
        native = self.native_upcalls
        if native is None:
            return
        thread = self._thread(cpu)
        stack = thread.stack
        if stack is None or self._user_code_running(cpu):
            native.configure(cpu, UpcallConfig(False, False, frozenset()), None)
            return
        hypercalls = self.vm.native if self.vm is not None else None
        check = hypercalls.fault_check() if hypercalls is not None else None
        native.configure(cpu, UpcallConfig(True, self.page_faults, frozenset(self.vectors),
                                           stack.entry, stack.base, stack.top), check)

    def _thread(self, cpu: Cpu) -> DuneThread:
        thread = self._threads.get(cpu)
        if thread is None:
            thread = self._threads[cpu] = DuneThread()
        return thread

    def _user_code_running(self, cpu: Cpu) -> bool:
        run = self._thread(cpu).run
        return run is not None and run.running

    def _traps_page_faults(self, cpu: Cpu) -> bool:
        return self.page_faults and self._thread(cpu).stack is not None

    def _has_linux_handler(self, signo: int) -> bool:
        action = self.proc.signals.action(signo)
        return action.handler not in (SigHandler.SIG_DFL, SigHandler.SIG_IGN)

    # -- ending the process ----------------------------------------------------------
    def _end_user_code(self, cpu: Cpu, signo: int, address: int, event, what: str) -> Stop:
        """User code did something the program has no handler for (as libdune,
        which dies): a crash report, and the process ends by ``signo``."""
        self.proc.log(f"kvmdune: user code (dune_jump_to_user) {what}, and the program "
                      "registered no handler for it")
        self.proc.log(crash_report(self.proc, cpu, signo, address, event))
        return Stop(value=ExitStatus(signal=signo))

    def _stack_cannot_take(self, cpu: Cpu, upcall: Upcall, why: str) -> Stop:
        stack = self._thread(cpu).stack
        assert stack is not None
        self.proc.log(
            f"kvmdune: {self.proc.exe}: the Dune handler stack "
            f"[{stack.base:#x}, {stack.top:#x}) cannot take the frame of an upcall "
            f"({_KIND_NAMES[upcall.kind]}, vector {upcall.vector}): {why}")
        self.proc.log(crash_report(self.proc, cpu, Signal.SIGSEGV, upcall.addr, None))
        return Stop(value=ExitStatus(signal=Signal.SIGSEGV))

    # -- the program's memory ------------------------------------------------------
    def _program_owns(self, start: int, end: int, prot: int) -> bool:
        """Whether [start, end) is mapped in the program with ``prot`` throughout."""
        mm = self.proc.mm
        if mm is None or not 0 <= start < end <= layout.USER_PROGRAM_END:
            return False
        cursor = start
        while cursor < end:
            vma = mm.find(cursor)
            if vma is None or not vma.prot & prot:
                return False
            cursor = vma.end
        return True

    def _read_tf(self, address: int, for_writeback: bool = False) -> dict[str, int] | None:
        """A struct dune_tf of the program's (checked), or None."""
        space = self.proc.space
        try:
            raw = space.read(address, _TF.size)
            if for_writeback:
                space.translate(address, _TF.size, _WRITABLE)
        except GuestFault:
            return None
        values = _TF.unpack(raw)
        tf = dict(zip(TF_FIELDS, values))
        _err, _pad, tf["rip"], _cs, tf["rflags"], tf["rsp"], _ss = values[len(TF_FIELDS):]
        return tf

    def _write_program(self, address: int, data: bytes) -> bool:
        """Write to the program's memory as its own store would: pages it owns that
        demand paging has not backed yet are paged in (never undoing a restriction
        the program made through the Dune API)."""
        space = self.proc.space
        for _attempt in range(len(data) // 4096 + 2):
            try:
                space.write(address, data, WRITE)
                return True
            except GuestFault as fault:
                if not self._page_in(fault.vaddr, PFError.WRITE | PFError.USER):
                    return False
        return False

    def _page_in(self, address: int, error: PFError) -> bool:
        mm = self.proc.mm
        if mm is None or (self.vm is not None and self.vm.restricts(address, error)):
            return False
        try:
            return mm.handle_fault(address, error)
        except OutOfGuestMemory:
            return False


def _dune_vm_class():
    """DuneVm (kvmdune/dune/vm.py), or None while that part of the API is missing."""
    try:
        from .vm import DuneVm
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.vm":
            raise
        return None
    return DuneVm


def _switch(numbers: set[int], number: int, on: bool) -> None:
    if on:
        numbers.add(number)
    else:
        numbers.discard(number)


def _usable_registers(tf: dict[str, int], user_fs: int) -> bool:
    """What the VMM cannot hand to the CPU as it is: a non-canonical RSP (the
    ``iretq`` to user code would fault at CPL0) or FS base (KVM refuses it). A bad
    RIP is user code's own #GP."""
    return is_canonical(tf["rsp"]) and 0 <= user_fs < layout.TASK_SIZE


def _copy_registers(regs):
    return type(regs).from_buffer_copy(regs)


def _restore_registers(regs, saved) -> None:
    # One copy of the whole struct kvm_regs (a ctypes structure), not a field each.
    ctypes.memmove(ctypes.addressof(regs), ctypes.addressof(saved), ctypes.sizeof(regs))


def _pack_tf(regs, syscall: bool = False, err: int = 0) -> bytes:
    """``struct dune_tf`` of the registers; for a system call as libdune's entry
    stores it (ARG3 = r10 in the rcx slot)."""
    values = _tf_registers(regs)
    if syscall:
        values = values[:_RCX_SLOT] + (regs.r10,) + values[_RCX_SLOT + 1:]
    # IF always: user code runs with interrupts enabled (upcall.c's RFLAGS_IF says why).
    return _TF.pack(*values, err & 0xFFFF_FFFF, 0, regs.rip, layout.USER_CS,
                    regs.rflags | RFLAGS.IF, regs.rsp, layout.USER_DS)


def _c_int(value: int) -> int:
    """The low 32 bits as a C int."""
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value & 0x8000_0000 else value
