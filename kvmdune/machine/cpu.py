"""A vCPU that runs guest code at CPL3, and the run loop that turns exits into events.

The run loop is a small explicit state machine (Firecracker's vstate/vcpu.rs): the
vCPU is either *at the trampoline* (it exited through an entry stub; the user's
RIP/RSP/RFLAGS have been moved into the register file, and resuming means writing an
iret frame) or *in user mode* (interrupted at CPL3 by a kick; resuming means running
on). One step function; exits are dispatched through one table; an exit nobody
handles is raised as a ``MachineError`` with a register dump.

Registers travel through ``KVM_CAP_SYNC_REGS``: KVM fills ``kvm_run.s.regs`` on every
exit and takes it back when marked dirty, so no GET/SET_REGS ioctl is paid per exit.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import threading
from dataclasses import dataclass
from typing import Callable

from ..kvm import (HltExit, InternalErrorExit, IoExit, KvmInterrupted, MmioExit, ShutdownExit,
                   SyncRegs, Vcpu, VcpuExit)
from ..kvm.system import NativeRunner
from ..kvm import bindings as kb
from ..memory import READ, AddressSpace, GuestFault, GuestMemory
from ..memory.pagetable import coalesce
from . import _trampoline, kick, layout, sigmask
from .disasm import disassemble, instruction_length
from .events import (Action, Event, ExceptionEvent, HaltEvent, Handler, PageFaultEvent,
                     ShutdownEvent, Stop, StopReason, SyscallEvent)
from .x86 import (USER_RFLAGS, USER_RFLAGS_FIXED, VECTORS_WITH_ERROR_CODE, PFError, RFLAGS,
                  Vector)

MASK64 = (1 << 64) - 1
GPR_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
             "r11", "r12", "r13", "r14", "r15")
_FRAME = struct.Struct("<5Q")          # rip, cs, rflags, rsp, ss: what iretq pops
_WORD = struct.Struct("<Q")
_SYNC = int(SyncRegs.REGS | SyncRegs.SREGS)
_REGS_DIRTY, _SREGS_DIRTY = int(SyncRegs.REGS), int(SyncRegs.SREGS)
#: RFLAGS at CPL0 in the trampoline: interrupts off, nothing else.
_SUPERVISOR_RFLAGS = int(RFLAGS.FIXED)
#: As a plain int: an int OR'd with an IntFlag member builds a new member (enum's
#: machinery, microseconds), on every exception and system call.
_RFLAGS_IF = int(RFLAGS.IF)
_USER_CANONICAL_END = 1 << 47
_SYSCALL_PORT = _trampoline.SYSCALL_PORT
_BAD_ENTRY_PORT = _trampoline.BAD_ENTRY_PORT
_TLB_FLUSH_PORT = _trampoline.TLB_FLUSH_PORT
_EXCEPTION_PORT_BASE = _trampoline.EXCEPTION_PORT_BASE
_CALL_AREA = range(layout.CALL_STUB, layout.CALL_STUB + layout.CALL_AREA_SIZE)
#: The vector of each exception port, made once (an enum lookup per exit adds up).
_PORT_VECTORS = {_EXCEPTION_PORT_BASE + vector: Vector(vector)
                 for vector in range(_trampoline.EXCEPTION_VECTORS)}
#: Page-fault error codes seen so far, as PFError values.
_PF_ERRORS: dict[int, PFError] = {}
#: What ``_step`` returns when the VMM handled an exit itself and the guest goes on.
_HANDLED = object()


class MachineError(Exception):
    """The guest did something no handler can answer (a fault at CPL0, an exit
    KVM could not handle); the message carries a register dump."""


@dataclass(frozen=True, slots=True)
class RegisterSnapshot:
    """The user-visible registers at one moment, for reports."""

    values: dict[str, int]
    cr2: int
    cr3: int

    def format(self) -> str:
        names = GPR_NAMES + ("rip", "rflags")
        cells = [f"{name:>6}={self.values[name]:016x}" for name in names]
        rows = [" ".join(cells[i:i + 4]) for i in range(0, len(cells), 4)]
        rows.append(f"{'cr2':>6}={self.cr2:016x} {'cr3':>6}={self.cr3:016x}")
        return "\n".join(rows)


class Cpu:
    """One vCPU of a ``Machine``. Handlers read and change ``cpu.regs`` (a live
    ``kvm_regs``: rip, rsp and rflags hold the *user's* values while an event is
    handled) and guest memory through ``cpu.space``."""

    def __init__(self, vcpu: Vcpu, memory: GuestMemory, kernel_space: AddressSpace,
                 index: int = 0) -> None:
        self.vcpu = vcpu
        self.memory = memory
        self._kernel_space = kernel_space
        self._run = vcpu.run_struct
        self.regs: kb.kvm_regs = self._run.s.regs.regs
        self.sregs: kb.kvm_sregs = self._run.s.regs.sregs
        self._run.kvm_valid_regs = _SYNC
        self._use_area(index)
        self._iret_rip = layout.TRAMPOLINE + _trampoline.IRET
        self._tlb_flush_rip = layout.TRAMPOLINE + _trampoline.TLB_FLUSH
        #: Guest-physical ranges restricted since the guest last flushed its TLB.
        self._unflushed: list[tuple[int, int]] = []
        self._user_rax = 0
        #: Guest TLB flushes run so far (hardware KVM's invalidation, see request_tlb_flush).
        self.tlb_flushes = 0
        self._syscall_entry = layout.TRAMPOLINE + _trampoline.SYSCALL_ENTRY
        self._call_targets = (self._syscall_entry, layout.CALL_WAIT_TARGET)
        #: Another address where a CPL3 fetch fault is a ``syscall`` (see
        #: ``recognise_syscalls_at``); None: only the trampoline's entry.
        self._other_syscall_entry: int | None = None
        self._at_trampoline = True
        self._in_stub = False
        #: The GS base patched call sites use when the guest sets none (see
        #: ``set_ring_gs_base``); 0: none.
        self._ring_gs_base = 0
        self.space: AddressSpace | None = None
        self._stop_reason: StopReason | None = None
        self._thread: int | None = None
        #: Whether the vCPU is inside KVM_RUN now (see ``wait_until_out``).
        self.in_guest = False
        self._can_kick = kick.install_kick_handler()
        #: Called (with no arguments) when the call stub asks the VMM to wait for the
        #: answer to its request (see callring.py); set by whoever serves the ring.
        self.call_wait: Callable[[], object] | None = None
        #: Native code that runs this vCPU and handles some exits itself (a layer
        #: above installs it, see ``NativeRunner``); None: every exit comes here.
        self.native_runner: NativeRunner | None = None
        #: ``call_wait`` for native code (a capsule the runner takes), or None.
        self.native_call_wait: object | None = None
        self._dispatch: dict[type, Callable[[Handler], Callable]] = {
            SyscallEvent: lambda h: h.on_syscall,
            PageFaultEvent: lambda h: h.on_page_fault,
            ExceptionEvent: lambda h: h.on_exception,
            HaltEvent: lambda h: h.on_halt,
            ShutdownEvent: lambda h: h.on_shutdown,
        }

    # -- setup -------------------------------------------------------------------
    def _use_area(self, index: int) -> None:
        """Use vCPU ``index``'s supervisor area: its iret frame and IST1 stack."""
        self.index = index
        area = layout.cpu_area(index)
        self._iret_frame = area.iret_frame
        self._exception_stack = area.exception_stack
        self._iret_frame_paddr = _paddr(self._kernel_space, area.iret_frame)
        self._exception_stack_paddr = _paddr(self._kernel_space, area.exception_stack)

    def set_boot_sregs(self, sregs: kb.kvm_sregs) -> None:
        """The boot state (what ``reset`` returns to), loaded now."""
        self.boot_sregs = type(sregs).from_buffer_copy(sregs)
        self.load_sregs(sregs)

    def reset(self) -> None:
        """Back to the boot state, as a fresh vCPU: a pooled one handed out again."""
        self.load_sregs(type(self.boot_sregs).from_buffer_copy(self.boot_sregs))
        self._run.s.regs.regs = kb.kvm_regs(rflags=int(RFLAGS.FIXED))
        self._run.kvm_dirty_regs |= _REGS_DIRTY
        self._at_trampoline = True
        self._in_stub = False
        self._unflushed.clear()
        self.space = None
        self._stop_reason = None
        self._run.immediate_exit = 0
        self.call_wait = self.native_call_wait = None
        self.native_runner = None

    def load_sregs(self, sregs: kb.kvm_sregs) -> None:
        """KVM_SET_SREGS, and the same values into the sync area so later dirty
        marks start from them."""
        self.vcpu.set_sregs(sregs)
        self._run.s.regs.sregs = sregs

    def set_address_space(self, space: AddressSpace) -> None:
        """Run subsequent user code in ``space`` (CR3, applied at the next entry)."""
        self.space = space
        if self.sregs.cr3 != space.cr3:
            self.sregs.cr3 = space.cr3
            self._run.kvm_dirty_regs |= _SREGS_DIRTY

    def enter_user(self, space: AddressSpace, rip: int, rsp: int, rflags: int = 0) -> None:
        """Prepare to start user code at ``rip`` with stack ``rsp`` in ``space``."""
        self.set_address_space(space)
        self.regs.rip, self.regs.rsp = rip, rsp
        self.regs.rflags = (rflags & USER_RFLAGS) | USER_RFLAGS_FIXED
        # Interrupted at CPL3 (a stopped run), the registers are live user state and
        # take effect as they are; at the trampoline they go out through an iret frame.
        self._at_trampoline = self.sregs.cs.selector & 3 != 3
        self._run.kvm_dirty_regs |= _REGS_DIRTY

    @property
    def fs_base(self) -> int:
        return self.sregs.fs.base

    @fs_base.setter
    def fs_base(self, value: int) -> None:
        self.sregs.fs.base = value
        self._run.kvm_dirty_regs |= _SREGS_DIRTY

    @property
    def gs_base(self) -> int:
        """The GS base as the guest set it (0 while the machine's ring base stands
        in for an unset one)."""
        base = self.sregs.gs.base
        return 0 if base == self._ring_gs_base else base

    @gs_base.setter
    def gs_base(self, value: int) -> None:
        # An unset GS base (0) is where patched call sites find this vCPU's ring.
        self.sregs.gs.base = value or self._ring_gs_base
        self._run.kvm_dirty_regs |= _SREGS_DIRTY

    def set_ring_gs_base(self, address: int) -> None:
        """Lend the GS base, while the guest leaves it unset, to patched call sites:
        ``address`` is this vCPU's call ring (0: none; they then make the real
        ``syscall``). A base the guest set itself stays; patched sites check the base
        and fall back to ``syscall`` on any other value."""
        guest_value = self.gs_base
        self._ring_gs_base = address
        self.gs_base = guest_value

    def request_tlb_flush(self, ranges: list[tuple[int, int]]) -> None:
        """Invalidate restricted translations on hardware KVM (an address space's
        invalidator there): before user code runs again, the guest reloads CR3 at CPL0,
        which flushes its TLB and paging-structure caches (kvmdune maps no global
        pages). Software KVM's shadow tables ignore this: it needs the host-side
        mprotect pair instead (``GuestMemory.invalidate``)."""
        self._unflushed.extend(ranges)

    def native_run_parameters(self) -> dict[str, int]:
        """What native code re-entering the guest the run loop's way needs to know
        of this vCPU's supervisor area and entries (see ``NativeRunner``): where its
        exception frames arrive, its iret frame and ``iretq``, and the addresses a
        CPL3 #PF at which is no fault (a ``syscall``, the call stub's wait)."""
        return {
            "iret_rip": self._iret_rip, "iret_frame": self._iret_frame,
            "iret_frame_paddr": self._iret_frame_paddr,
            "exception_stack": self._exception_stack,
            "exception_stack_paddr": self._exception_stack_paddr,
            "exception_stack_size": layout.EXCEPTION_STACK_SIZE,
            "syscall_entry": self._syscall_entry, "call_wait_target": layout.CALL_WAIT_TARGET,
            "user_rflags": USER_RFLAGS, "user_rflags_fixed": USER_RFLAGS_FIXED,
            "supervisor_rflags": _SUPERVISOR_RFLAGS, "user_end": _USER_CANONICAL_END,
            "vectors_with_error": sum(1 << int(vector) for vector in VECTORS_WITH_ERROR_CODE),
        }

    def recognise_syscalls_at(self, address: int | None) -> None:
        """While user code runs in an address space that maps ``address`` (MSR_LSTAR's
        target) supervisor-only, a CPL3 fetch fault with RIP == CR2 == ``address`` is a
        ``syscall`` (software KVM runs ``syscall`` at CPL3, so its jump to LSTAR
        faults there; hardware KVM enters CPL0 and exits through the trampoline code
        mapped there). None: only the trampoline's own entry is one."""
        self._other_syscall_entry = address

    # -- stopping ----------------------------------------------------------------
    def stop(self, reason: StopReason = StopReason.REQUEST) -> None:
        """Stop ``run()`` at the next event boundary; callable from any thread."""
        self._stop_reason = reason
        self.interrupt()

    def interrupt(self) -> None:
        """Make ``run()`` leave guest code and call the handler's ``on_interrupt``
        soon (at once if KVM_RUN is running, else before the next one enters the
        guest); callable from any thread. The caller changes what the handler will
        look at first: the vCPU thread reads it after this."""
        self._run.immediate_exit = 1
        thread = self._thread
        if thread is not None and thread != threading.get_ident() and self._can_kick:
            kick.kick(thread)

    @property
    def thread_ident(self) -> int | None:
        """The ``threading.get_ident()`` of the thread in ``run()`` (None outside)."""
        return self._thread

    def kick(self) -> None:
        """Interrupt whatever host call the vCPU's thread is in (EINTR), without
        touching the vCPU: a thread blocked outside KVM_RUN on the guest's behalf."""
        thread = self._thread
        if thread is not None and thread != threading.get_ident() and self._can_kick:
            kick.kick(thread)

    # -- the run loop ------------------------------------------------------------
    def run(self, handler: Handler, budget: float | None = None) -> Stop:
        """Run user code, dispatching events to ``handler``, until a handler returns
        ``Stop``, the ``budget`` (seconds) runs out, or ``stop()`` is called."""
        if self.space is None:
            raise MachineError("no address space: call enter_user() first")
        if budget is not None and not self._can_kick:
            raise MachineError("a time budget needs the kick signal handler, which only "
                               "the main thread can install: create the Machine there")
        timer = None
        self._thread = threading.get_ident()
        self._stop_reason = None
        if budget is not None:
            timer = _QuietTimer(budget, self.stop, (StopReason.BUDGET,))
            timer.daemon = True
            # Signals sent to the process must interrupt KVM_RUN in this thread, so
            # the timer thread starts (and stays) with every signal blocked.
            with sigmask.blocked_for_new_threads():
                timer.start()
        try:
            return self._loop(handler)
        finally:
            if timer is not None:
                timer.cancel()
            self._thread = None
            self._run.immediate_exit = 0

    def _loop(self, handler: Handler) -> Stop:
        dispatch = self._dispatch
        while True:
            if self._stop_reason is not None and not self._in_stub:
                return Stop(self._stop_reason)
            event = self._step()
            if event is None or event is _HANDLED:
                if not self._in_stub:
                    stop = handler.on_interrupt(self)
                    if stop is not None:
                        return stop
                    # Interrupted at CPL3 the registers are live: whatever the handler
                    # changed (a signal frame) must go back to KVM.
                    self._run.kvm_dirty_regs |= _REGS_DIRTY
                continue
            outcome = dispatch[type(event)](handler)(self, event)
            stop = self._apply(event, outcome)
            if stop is not None:
                return stop

    @property
    def in_system_call(self) -> bool:
        """Whether user code, interrupted, is between a ``syscall`` and its answer:
        inside the call stub, or at one of the supervisor addresses a CPL3 jump
        reaches first (MSR_LSTAR's or the stub's), with the fault that ends the jump
        yet to come. No signal frame may be built there: the call is delivered to
        the VMM (or answered) first."""
        rip = self.regs.rip
        return rip in _CALL_AREA or rip in self._call_targets

    def _step(self) -> Event | None | object:
        """Enter the guest once; the event it exited with (None: nothing to report)."""
        if self._unflushed and not self._at_trampoline and self.sregs.cs.selector & 3 == 3:
            # Stopped at CPL3 (a kick), the vCPU cannot reach the trampoline's flush
            # without an exit: the host-side invalidation, which works everywhere.
            self.memory.invalidate(coalesce(self._unflushed))
            self._unflushed.clear()
        if self._at_trampoline:
            bad = self._write_iret_frame()
            if bad is not None:
                return bad
        self.in_guest = True
        try:
            exit_ = self._enter_guest()
        except KvmInterrupted:
            self._run.immediate_exit = 0
            self._interrupted()
            return None
        finally:
            self.in_guest = False
        return self._decode(exit_)

    def _enter_guest(self) -> VcpuExit:
        """KVM_RUN, through the native runner if one is installed. Raises
        ``KvmInterrupted`` on EINTR."""
        runner = self.native_runner
        if runner is None:
            return self.vcpu.run()
        exit_, handled = self.vcpu.run_with(runner, self.native_call_wait)
        if handled:
            self._in_stub = False      # it took the stub's exit and left through the iretq
        if exit_ is None:
            raise KvmInterrupted("KVM_RUN interrupted", ioctl="KVM_RUN", errno=errno.EINTR)
        return exit_

    def _write_iret_frame(self) -> Event | None:
        """Point the vCPU at ``iretq`` with a frame that returns to the user's
        registers. A non-canonical RIP would fault the iretq at CPL0: report it as
        the #GP that user code gets on Linux instead."""
        regs = self.regs
        if regs.rip >= _USER_CANONICAL_END:
            return ExceptionEvent(Vector.GP, 0, regs.rip)
        rflags = (regs.rflags & USER_RFLAGS) | USER_RFLAGS_FIXED
        _FRAME.pack_into(self.memory.view, self._iret_frame_paddr,
                         regs.rip, layout.USER_CS, rflags, regs.rsp, layout.USER_DS)
        regs.rip, regs.rsp, regs.rflags = self._iret_rip, self._iret_frame, _SUPERVISOR_RFLAGS
        if self._unflushed:
            # Through the trampoline's flush first (``mov cr3, rax``; ``out``); the
            # exit it ends with comes back here, nothing left to flush, for the ``iretq``.
            self._unflushed.clear()
            self._user_rax, regs.rax = regs.rax, self.sregs.cr3
            regs.rip = self._tlb_flush_rip
        self._run.kvm_dirty_regs |= _REGS_DIRTY
        self._at_trampoline = False
        return None

    def _tlb_flushed(self) -> object:
        """The guest reloaded CR3: back to the user's registers, kept in the frame."""
        regs = self.regs
        rip, _cs, rflags, rsp, _ss = _FRAME.unpack_from(self.memory.view, self._iret_frame_paddr)
        regs.rip, regs.rsp, regs.rflags, regs.rax = rip, rsp, rflags, self._user_rax
        self._at_trampoline = True
        self.tlb_flushes += 1
        return _HANDLED

    def _interrupted(self) -> None:
        """KVM_RUN returned EINTR. At CPL3 the registers are the user's, live. At the
        ``iretq`` we pointed it at, the user's registers are in our frame. Anywhere
        else at CPL0, an entry stub is about to exit: it is simply run on."""
        if self.sregs.cs.selector & 3 == 3:
            return
        regs = self.regs
        if regs.rip == self._iret_rip and regs.rsp == self._iret_frame:
            rip, _cs, rflags, rsp, _ss = _FRAME.unpack_from(self.memory.view,
                                                            self._iret_frame_paddr)
            regs.rip, regs.rsp, regs.rflags = rip, rsp, rflags
            self._at_trampoline = True
            self._run.kvm_dirty_regs |= _REGS_DIRTY
        else:
            # Inside an entry stub: let it reach its ``out`` before any stop is honoured.
            self._in_stub = True

    def _decode(self, exit_: VcpuExit) -> Event | object:
        self._in_stub = False
        if type(exit_) is IoExit:
            port = exit_.port
            if port == _SYSCALL_PORT:
                return self._syscall_event()
            vector = _PORT_VECTORS.get(port)
            if vector is not None:
                return self._exception_event(vector)
            if port == _TLB_FLUSH_PORT:
                return self._tlb_flushed()
            if port == _BAD_ENTRY_PORT:
                raise MachineError("entry through MSR_CSTAR (32-bit syscall), which has "
                                   "no code segment\n" + self.describe())
        if type(exit_) is MmioExit and self.memory.map_deferred(exit_.phys_addr, exit_.length):
            return self._complete_access(exit_)
        if type(exit_) is InternalErrorExit and self.memory.map_all_deferred():
            # An instruction KVM cannot emulate (AVX-512, say) reached a deferred
            # slot's memory: it failed before doing anything and runs again, now
            # natively, from the same place.
            return None
        if type(exit_) is HltExit:
            return HaltEvent()
        if type(exit_) is ShutdownExit:
            return ShutdownEvent()
        raise MachineError(f"unexpected exit {exit_}\n" + self.describe())

    def _complete_access(self, exit_: MmioExit) -> None:
        """Finish an access KVM took for MMIO because its memory's slot was deferred
        (registered now): the bytes go to or come from the region's memory, and a
        KVM_RUN that enters no guest (immediate_exit) completes the instruction, so
        its registers are final before anything (a signal frame) changes them. Told
        as an interruption: the run loop goes on as after a kick."""
        mmio = self._run.exit.mmio
        while True:
            length = min(exit_.length, len(mmio.data))
            memory = self.memory.slice(exit_.phys_addr, length)
            if exit_.is_write and memory.readonly:
                raise MachineError(f"a write to read-only memory at {exit_.phys_addr:#x}\n"
                                   + self.describe())
            if not self.memory.readable(exit_.phys_addr, length):
                # A shared file's page past its end (truncated after it was mapped):
                # touching it here would raise SIGBUS in the VMM. The access reads
                # zeros (a write is dropped); the next touch faults in the slot.
                ctypes.memset(mmio.data, 0, length)
            elif exit_.is_write:
                memory[:] = bytes(mmio.data)[:length]
            else:
                ctypes.memmove(mmio.data, bytes(memory), length)
            self._run.immediate_exit = 1
            try:
                exit_ = self.vcpu.run()
            except KvmInterrupted:
                break
            finally:
                self._run.immediate_exit = 0
            # An access split across pages comes back for its next piece.
            if type(exit_) is not MmioExit or not (
                    self.memory.map_deferred(exit_.phys_addr, exit_.length)
                    or self.memory.backs(exit_.phys_addr, exit_.length)):
                raise MachineError(f"unexpected exit {exit_} completing an access to "
                                   "a deferred memory slot\n" + self.describe())
        return None

    def _syscall_event(self) -> SyscallEvent:
        regs = self.regs
        # ``syscall`` left the user's RIP in RCX and RFLAGS in R11; RSP is the user's.
        regs.rip, regs.rflags = regs.rcx, regs.r11
        self._at_trampoline = True
        return SyscallEvent(regs.rax, (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8,
                                       regs.r9), regs.rcx)

    def _exception_event(self, vector: Vector) -> Event | object:
        regs = self.regs
        offset = regs.rsp - self._exception_stack
        has_error = vector in VECTORS_WITH_ERROR_CODE
        frame_size = _FRAME.size + (_WORD.size if has_error else 0)
        if not 0 <= offset <= layout.EXCEPTION_STACK_SIZE - frame_size:
            raise MachineError(f"{vector.mnemonic} with the stack outside the exception "
                               f"stack\n" + self.describe())
        paddr = self._exception_stack_paddr + offset
        error = None
        if has_error:
            (error,) = _WORD.unpack_from(self.memory.view, paddr)
            paddr += _WORD.size
        rip, cs, rflags, rsp, _ss = _FRAME.unpack_from(self.memory.view, paddr)
        if cs & 3 != 3:
            raise MachineError(f"{vector.mnemonic} in supervisor mode at {rip:#x} "
                               f"(error code {error})\n" + self.describe())
        # User code always runs with IF set (CPL3 cannot clear it); the copy this
        # software KVM pushes sometimes lacks it, which would make crash reports and
        # signal frames differ from run to run.
        regs.rip, regs.rsp, regs.rflags = rip, rsp, rflags | _RFLAGS_IF
        self._at_trampoline = True
        if vector == Vector.PF:
            if rip == self.sregs.cr2 and (rip == self._syscall_entry
                                          or rip == self._other_syscall_entry):
                # Software KVM (kvm_pvm) runs ``syscall`` without leaving CPL3: the
                # jump to MSR_LSTAR then faults on the supervisor-only trampoline
                # page. Everything else ``syscall`` does has happened (RCX, R11), so
                # this is the system call. (A plain jump there from CPL3 is the same
                # request as a ``syscall`` from the address in RCX.)
                return self._syscall_event()
            if rip == layout.CALL_WAIT_TARGET == self.sregs.cr2 and self.call_wait is not None:
                # The call stub got no answer in time: wait for it here, then resume
                # the stub where it asked (RCX).
                self.call_wait()
                regs.rip = regs.rcx
                return _HANDLED
            return PageFaultEvent(self.sregs.cr2, _pf_error(error), rip)
        return ExceptionEvent(vector, error, rip)

    def _apply(self, event: Event, outcome: object) -> Stop | None:
        """Carry out what a handler answered."""
        if isinstance(outcome, Stop):
            return outcome if outcome.event is not None else Stop(
                outcome.reason, outcome.value, event)
        if type(event) is SyscallEvent:
            if outcome is not None:
                self.regs.rax = int(outcome) & MASK64
            return None
        if outcome is Action.SKIP:
            length = self._current_instruction_length()
            if length is None:
                return Stop(StopReason.HANDLER, "cannot decode the instruction to skip", event)
            self.regs.rip += length
        elif outcome not in (Action.RETRY, Action.RESUME):
            raise MachineError(f"handler answered {outcome!r} to {event}")
        if isinstance(event, (HaltEvent, ShutdownEvent)):
            return Stop(StopReason.HANDLER, None, event)
        return None

    # -- inspection --------------------------------------------------------------
    def read_code(self, address: int, length: int = 64) -> bytes:
        """Up to ``length`` bytes of user-readable code at ``address`` (fewer where
        the mapping ends)."""
        if self.space is None:
            return b""
        out = b""
        while len(out) < length:
            chunk = min(length - len(out), 4096 - ((address + len(out)) & 4095))
            try:
                out += self.space.read(address + len(out), chunk, READ)
            except GuestFault:
                break
        return out

    def _current_instruction_length(self) -> int | None:
        return instruction_length(self.read_code(self.regs.rip, 16), self.regs.rip)

    def snapshot(self) -> RegisterSnapshot:
        values = {name: getattr(self.regs, name) for name in GPR_NAMES + ("rip", "rflags")}
        return RegisterSnapshot(values, self.sregs.cr2, self.sregs.cr3)

    def describe(self) -> str:
        """Registers and the code at RIP, for crash reports."""
        text = self.snapshot().format()
        listing = disassemble(self.read_code(self.regs.rip), self.regs.rip, 6)
        if listing:
            text += "\ncode:\n  " + "\n  ".join(listing)
        return text

    def rebind(self, vcpu: Vcpu, regs: kb.kvm_regs, sregs: kb.kvm_sregs,
               index: int | None = None) -> None:
        """Continue on another vCPU (a forked child's) from the given state, with
        supervisor area ``index`` (None: the same); ``sregs`` must name its GDT and
        TSS already."""
        if index is not None:
            self._use_area(index)
        self.native_runner = None      # set up for the old vCPU's process and memory
        self.vcpu = vcpu
        self._run = vcpu.run_struct
        self.regs = self._run.s.regs.regs
        self.sregs = self._run.s.regs.sregs
        self._run.kvm_valid_regs = _SYNC
        self.load_sregs(sregs)
        self._run.s.regs.regs = regs
        self._run.kvm_dirty_regs |= _REGS_DIRTY

    def close(self) -> None:
        """Drop the views into kvm_run before the vCPU unmaps it."""
        self.__dict__.pop("regs", None)
        self.__dict__.pop("sregs", None)
        self.__dict__.pop("_run", None)
        self.vcpu.close()


def _pf_error(code: int) -> PFError:
    found = _PF_ERRORS.get(code)
    if found is None:
        found = _PF_ERRORS[code] = PFError(code)
    return found


def _paddr(space: AddressSpace, vaddr: int) -> int:
    found = space.walk(vaddr)
    if found is None:
        raise MachineError(f"supervisor address {vaddr:#x} is not mapped")
    return found.paddr


class _QuietTimer(threading.Timer):
    """A timer thread that blocks every signal it can (sigmask.py): SIGCANCEL too."""

    def run(self) -> None:
        sigmask.block_in_new_thread()
        super().run()
