"""A Dune-mode virtual machine: KVM VM, guest memory, the supervisor area, one vCPU.

``Machine`` owns everything it creates and releases it all on ``close()``; thousands
can be created and destroyed in one process without descriptor or memory growth.
"""

from __future__ import annotations

import enum
import errno

from ..kvm import Cap, Kvm, KvmError, KvmInterrupted, PlatformKind, probe_platform
from ..memory import AddressSpace, GuestMemory
from ..memory.guest_memory import DEFAULT_GUEST_MEMORY
from . import layout
from .boot import build_supervisor_area, configure_vcpu
from .callring import CallRing
from .cpu import Cpu
from .events import Handler, Stop
from .x86 import MSR

#: Guest-physical address of the three pages VT-x needs for real-mode emulation;
#: above the guest memory kvmdune uses, as in QEMU.
VMX_TSS_ADDRESS = 0xFFFB_D000


class Invalidation(enum.Enum):
    """How the page-table restrictions the VMM makes reach guest CPL3 code."""

    #: An mprotect pair on the host pages of the affected frames: KVM's MMU notifier
    #: drops its shadow (or NPT/EPT) entries and flushes the guest's TLB. Works on
    #: every platform; the only way on software KVM (PLATFORM.md).
    HOST_MPROTECT = "host-mprotect"
    #: The guest reloads CR3 at CPL0 before its user code runs again: a TLB flush,
    #: no system call. Enough on hardware KVM, where the guest walks its own tables;
    #: ignored by software KVM's shadow tables.
    GUEST_TLB_FLUSH = "guest-tlb-flush"


class Machine:
    """One VM with one vCPU; user code runs at CPL3 in address spaces it creates.

    ``invalidation`` defaults to the cheapest that works on this platform."""

    def __init__(self, memory_size: int = DEFAULT_GUEST_MEMORY,
                 invalidation: Invalidation | None = None) -> None:
        self._closers: list = []
        self.call_ring: CallRing | None = None
        try:
            self._build(memory_size, invalidation)
        except BaseException:
            self.close()
            raise

    def _build(self, memory_size: int, invalidation: Invalidation | None) -> None:
        self.memory = GuestMemory(memory_size)
        self._closers.append(self.memory.close)
        self.kernel_space = AddressSpace(self.memory)
        build_supervisor_area(self.kernel_space)
        vcpu = self._create_vm()
        sregs = configure_vcpu(self.kvm, vcpu, self.kernel_space)
        _prove_runnable(vcpu)
        self.cpu = Cpu(vcpu, self.memory, self.kernel_space)
        self.cpu.load_sregs(sregs)
        if invalidation is None:
            invalidation = (Invalidation.HOST_MPROTECT
                            if self.platform.restricting_changes_need_host_invalidation
                            else Invalidation.GUEST_TLB_FLUSH)
        self.invalidation = invalidation
        if invalidation is Invalidation.GUEST_TLB_FLUSH:
            # A cleared D bit too: the guest's TLB remembers the page as dirty.
            self.kernel_space.invalidate = self.cpu.request_tlb_flush
            self.kernel_space.write_protect = self.cpu.request_tlb_flush

    def _create_vm(self, kvm: Kvm | None = None):
        """/dev/kvm (opened, or the one given), a VM with the guest memory registered,
        and its vCPU."""
        self.kvm = kvm if kvm is not None else Kvm()
        self._closers.append(self.kvm.close)
        self.kvm.require_capabilities()
        self.platform = probe_platform()
        self.vm = self.kvm.create_vm()
        self._closers.append(self.vm.close)
        if self.platform.kind is PlatformKind.VMX and self.kvm.check_extension(Cap.SET_TSS_ADDR):
            self.vm.set_tss_addr(VMX_TSS_ADDRESS)
        # KVM's dirty log re-arms cleared D bits where restrictions need the host's
        # invalidation (software KVM); elsewhere the guest's TLB flush does.
        self.memory.register(
            self.vm, dirty_log=self.platform.restricting_changes_need_host_invalidation)
        vcpu = self.vm.create_vcpu(0)
        self._closers.append(lambda: self.cpu.close())
        return vcpu

    def snapshot_for_fork(self) -> tuple:
        """The vCPU state to carry into a child; taken *before* ``os.fork()``, since the
        kvm_run page stays shared with the parent, whose vCPU goes on writing it."""
        return (type(self.cpu.regs).from_buffer_copy(self.cpu.regs),
                type(self.cpu.sregs).from_buffer_copy(self.cpu.sregs))

    def reinit_after_fork(self, snapshot: tuple) -> None:
        """In the child of ``os.fork()``: the inherited VM belongs to the parent's
        address space and cannot run here. Build a new VM and vCPU over the same
        (now copy-on-write) guest memory and carry the vCPU state over, so the run
        loop continues in the child as if nothing happened. Nothing may write the
        inherited kvm_run page before this: the parent's vCPU still uses it."""
        regs, sregs = snapshot
        self._closers = [self.memory.close]      # the inherited fds are closed below
        self.cpu.close()
        self.vm.close()
        # The inherited /dev/kvm descriptor is reused: after a privilege drop the
        # device may no longer be openable, and KVM_CREATE_VM works from any process.
        vcpu = self._create_vm(self.kvm)
        configure_vcpu(self.kvm, vcpu, self.kernel_space)
        _prove_runnable(vcpu)
        self.cpu.rebind(vcpu, regs, sregs)
        if self.call_ring is not None:
            self._point_syscall_at(layout.CALL_STUB)

    # -- the exit-less system call path -----------------------------------------------------
    def install_call_stub(self) -> CallRing:
        """Make ``syscall`` land on the call stub (in every address space, current
        and future) instead of exiting to the VMM; returns the ring to serve."""
        if self.call_ring is None:
            self.call_ring = CallRing(self.memory)
        if self.cpu.space is not None:
            self.call_ring.map_into(self.cpu.space)
        self._point_syscall_at(layout.CALL_STUB)
        return self.call_ring

    def _point_syscall_at(self, address: int) -> None:
        self.cpu.vcpu.set_msrs({MSR.LSTAR: address})

    def on_close(self, callback) -> None:
        """Run ``callback`` when the machine closes, before its memory goes."""
        self._closers.append(callback)

    def new_address_space(self) -> AddressSpace:
        """An empty user address space sharing the supervisor area (and the call
        stub, when installed)."""
        space = AddressSpace(self.memory, kernel=self.kernel_space,
                             invalidate=self.kernel_space.invalidate,
                             write_protect=self.kernel_space.write_protect)
        if self.call_ring is not None:
            self.call_ring.map_into(space)
        return space

    def run(self, handler: Handler, budget: float | None = None) -> Stop:
        """Run the vCPU (see ``Cpu.run``)."""
        return self.cpu.run(handler, budget)

    def close(self) -> None:
        """Release the vCPU, the VM, guest memory and /dev/kvm, newest first."""
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prove_runnable(vcpu) -> None:
    """Make KVM do now what it does at a vCPU's first KVM_RUN, while the caller can
    still report a failure: start the VM's kernel worker thread, which counts against
    the user's RLIMIT_NPROC (EAGAIN at the limit). A KVM_RUN with ``immediate_exit``
    returns EINTR without entering the guest. Called before the vCPU's registers are
    synced through kvm_run: that early return would overwrite them."""
    run = vcpu.run_struct
    run.immediate_exit = 1
    try:
        vcpu.run()
    except KvmInterrupted:
        pass
    except KvmError as exc:
        if exc.errno != errno.EAGAIN:
            raise
        raise KvmError("KVM cannot start the kernel thread of a new VM", ioctl="KVM_RUN",
                       errno=exc.errno,
                       advice="the user's process limit (RLIMIT_NPROC: ulimit -u, "
                              "--max-procs) is reached; raise it") from exc
    finally:
        run.immediate_exit = 0
