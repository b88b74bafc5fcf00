"""A Dune-mode virtual machine: KVM VM, guest memory, the supervisor area, its vCPUs.

``Machine`` owns everything it creates and releases it all on ``close()``; thousands
can be created and destroyed in one process without descriptor or memory growth.
It starts with one vCPU (``machine.cpu``); ``add_cpu()`` gives more, each with a
supervisor area of its own (GDT, TSS, entry and exception stacks) and a call slot
of its own. KVM cannot destroy a vCPU, so ``release_cpu()`` keeps it for the next
``add_cpu()``.
"""

from __future__ import annotations

import enum
import errno

from ..kvm import Cap, Kvm, KvmError, KvmInterrupted, Platform, PlatformKind, probe_platform
from ..memory import AddressSpace, GuestMemory
from ..memory.guest_memory import DEFAULT_GUEST_MEMORY
from . import _trampoline, layout
from .boot import build_cpu_area, build_supervisor_area, configure_vcpu, point_at_area
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
    """One VM and its vCPUs; user code runs at CPL3 in address spaces it creates.

    ``invalidation`` defaults to the cheapest that works on this platform."""

    def __init__(self, memory_size: int = DEFAULT_GUEST_MEMORY,
                 invalidation: Invalidation | None = None) -> None:
        self._closers: list = []
        self.call_ring: CallRing | None = None
        #: Whether ``syscall`` lands on the call stubs (vCPUs with a call slot).
        self.call_stubs_on = False
        #: Whether patched call sites find their vCPU's ring (``use_patched_sites``).
        self.patched_sites_on = False
        #: Every vCPU made (index = KVM vCPU id), in use or pooled.
        self._all_cpus: list[Cpu] = []
        self._pooled: list[Cpu] = []
        #: The signal mask every vCPU's thread has inside KVM_RUN (None: its own).
        self._run_signal_mask: int | None = None
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
        self._create_vm()
        self.cpu = self._new_cpu()
        if invalidation is None:
            invalidation = (Invalidation.HOST_MPROTECT
                            if self.platform.restricting_changes_need_host_invalidation
                            else Invalidation.GUEST_TLB_FLUSH)
        self.invalidation = invalidation
        if invalidation is Invalidation.GUEST_TLB_FLUSH:
            # A cleared D bit too: the guest's TLB remembers the page as dirty.
            self.kernel_space.invalidate = self._invalidate_by_tlb_flush
            self.kernel_space.write_protect = self._write_protect_by_tlb_flush

    def _invalidate_by_tlb_flush(self, ranges: list[tuple[int, int]]) -> None:
        """Hardware KVM's invalidation. One vCPU in use: it flushes its own TLB before
        its user code runs again. More: they may be running user code right now, on
        other host CPUs, with the stale translations cached; the host-side mprotect
        pair makes KVM flush every vCPU's TLB (kvm_flush_remote_tlbs, an IPI to each)
        before it returns, which is what a TLB shootdown must guarantee."""
        in_use = self.cpus
        if len(in_use) == 1:
            in_use[0].request_tlb_flush(ranges)
        else:
            self.memory.invalidate(ranges)

    def _write_protect_by_tlb_flush(self, ranges: list[tuple[int, int]]) -> None:
        """The same for entries that only lost their D bit."""
        in_use = self.cpus
        if len(in_use) == 1:
            in_use[0].request_tlb_flush(ranges)
        else:
            self.memory.write_protect(ranges)

    @property
    def cpus(self) -> list[Cpu]:
        """The vCPUs in use (not pooled), the boot vCPU first while it is in use."""
        return [cpu for cpu in self._all_cpus if cpu not in self._pooled]

    def _new_cpu(self) -> Cpu:
        """A new vCPU (KVM id = its index) with its supervisor area, configured."""
        index = len(self._all_cpus)
        if index >= layout.MAX_VCPUS:
            raise KvmError(f"a VM has at most {layout.MAX_VCPUS} vCPUs here",
                           ioctl="KVM_CREATE_VCPU", errno=errno.EAGAIN)
        build_cpu_area(self.kernel_space, index)
        vcpu = self.vm.create_vcpu(index)
        try:
            sregs = configure_vcpu(self.kvm, vcpu, self.kernel_space, index)
            _prove_runnable(vcpu)
        except BaseException:
            vcpu.close()
            raise
        cpu = Cpu(vcpu, self.memory, self.kernel_space, index)
        cpu.set_boot_sregs(sregs)
        self._apply_run_signal_mask(vcpu)
        self._all_cpus.append(cpu)
        self._point_syscall(cpu)
        return cpu

    def add_cpu(self) -> Cpu:
        """Another vCPU of this VM, from the pool when one was released (KVM cannot
        destroy a vCPU). Its registers are the boot state, in the kernel space;
        callers set them (``Cpu.enter_user``) before running it."""
        if self._pooled:
            cpu = self._pooled.pop()
            cpu.reset()
            self._point_syscall(cpu)
            return cpu
        return self._new_cpu()

    def set_run_signal_mask(self, blocked: int) -> None:
        """Run every vCPU, present and to come, with the signal mask ``blocked`` while
        it is in KVM_RUN (KVM_SET_SIGNAL_MASK): a thread that blocks signals outside
        KVM_RUN, to take them itself (sigtimedwait), still has KVM_RUN interrupted by
        them (EINTR), and they stay pending for it."""
        self._run_signal_mask = blocked
        for cpu in self._all_cpus:
            self._apply_run_signal_mask(cpu.vcpu)

    def _apply_run_signal_mask(self, vcpu) -> None:
        if self._run_signal_mask is not None:
            vcpu.set_signal_mask(self._run_signal_mask)

    def release_cpu(self, cpu: Cpu) -> None:
        """Give back a vCPU (its thread no longer runs it) for a later ``add_cpu``
        (the boot vCPU too: ``machine.cpu`` keeps naming it)."""
        if cpu in self._all_cpus and cpu not in self._pooled:
            cpu.space = None
            self._pooled.append(cpu)

    def _create_vm(self, kvm: Kvm | None = None, platform: Platform | None = None,
                   defer_regions: bool = False) -> None:
        """/dev/kvm (opened, or the one given) and a VM with the guest memory
        registered; its vCPUs are closed with it. ``platform``: the one probed
        already (a forked child's host is its parent's); ``defer_regions``: shared
        regions get their slots at the guest's first access (GuestMemory.register)."""
        self.kvm = kvm if kvm is not None else Kvm()
        self._closers.append(self.kvm.close)
        self.kvm.require_capabilities()
        self.platform = platform or probe_platform()
        self.vm = self.kvm.create_vm()
        self._closers.append(self.vm.close)
        if self.platform.kind is PlatformKind.VMX and self.kvm.check_extension(Cap.SET_TSS_ADDR):
            self.vm.set_tss_addr(VMX_TSS_ADDRESS)
        # KVM's dirty log re-arms cleared D bits where restrictions need the host's
        # invalidation (software KVM); elsewhere the guest's TLB flush does.
        self.memory.register(
            self.vm, dirty_log=self.platform.restricting_changes_need_host_invalidation,
            defer_regions=defer_regions)
        self._closers.append(self._close_cpus)

    def _close_cpus(self) -> None:
        while self._all_cpus:
            self._all_cpus.pop().close()
        self._pooled.clear()

    def snapshot_for_fork(self, cpu: Cpu | None = None) -> tuple:
        """The state of ``cpu`` (the one calling fork; default the boot vCPU) to
        carry into a child; taken *before* ``os.fork()``, since the kvm_run page stays
        shared with the parent, whose vCPU goes on writing it."""
        cpu = cpu or self.cpu
        # No thread of this VMM is registering a slot as it forks (the child's has none).
        self.memory.settle_spare()
        try:
            xsave = cpu.vcpu.get_xsave()
        except Exception:    # a KVM without KVM_CAP_XSAVE: the child starts afresh
            xsave = None
        return (cpu, type(cpu.regs).from_buffer_copy(cpu.regs),
                type(cpu.sregs).from_buffer_copy(cpu.sregs), xsave)

    def reinit_after_fork(self, snapshot: tuple) -> None:
        """In the child of ``os.fork()``: the inherited VM belongs to the parent's
        address space and cannot run here. Build a new VM and vCPU over the same
        (now copy-on-write) guest memory and carry the forking vCPU's state over, so
        its run loop continues in the child as if nothing happened; it becomes the
        child's boot vCPU (index 0), and the other vCPUs (the parent's other threads)
        do not exist here. Nothing may write an inherited kvm_run page before this:
        the parent's vCPUs still use them."""
        cpu, regs, sregs, xsave = snapshot
        self._closers = [self.memory.close]      # the inherited fds are closed below
        for other in self._all_cpus:
            other.close()
        self._all_cpus, self._pooled = [], []
        self.vm.close()
        # The inherited /dev/kvm descriptor is reused: after a privilege drop the
        # device may no longer be openable, and KVM_CREATE_VM works from any process.
        self._create_vm(self.kvm, self.platform, defer_regions=True)
        vcpu = self.vm.create_vcpu(0)
        try:
            boot_sregs = configure_vcpu(self.kvm, vcpu, self.kernel_space, 0)
            _prove_runnable(vcpu)
        except BaseException:
            vcpu.close()
            raise
        point_at_area(sregs, layout.cpu_area(0))
        self._apply_run_signal_mask(vcpu)
        cpu.rebind(vcpu, regs, sregs, index=0)
        cpu.boot_sregs = boot_sregs
        if xsave is not None:
            vcpu.set_xsave(xsave)
        self._all_cpus = [cpu]
        self.cpu = cpu
        self._point_syscall(cpu)

    # -- the exit-less system call path -----------------------------------------------------
    def install_call_stub(self) -> CallRing:
        """Make ``syscall`` land on the call stubs (in every address space, current
        and future) instead of exiting to the VMM, on every vCPU that has a call
        slot (index below ``layout.CALL_SLOTS``); returns the rings to serve."""
        if self.call_ring is None:
            self.call_ring = CallRing(self.memory)
        for cpu in self.cpus:
            if cpu.space is not None:
                self.call_ring.map_into(cpu.space)
        self.call_stubs_on = True
        for cpu in self._all_cpus:
            self._point_syscall(cpu)
        return self.call_ring

    def remove_call_stub(self) -> None:
        """Every vCPU's ``syscall`` exits to the VMM again (the stubs stay mapped,
        unused)."""
        self.call_stubs_on = False
        for cpu in self._all_cpus:
            self._point_syscall(cpu)

    def syscall_target(self, cpu: Cpu) -> int:
        """Where ``syscall`` jumps on ``cpu`` (its MSR_LSTAR): its call slot's stub,
        or the trampoline's entry."""
        if self.call_stubs_on and cpu.index < layout.CALL_SLOTS:
            return layout.call_stub_of(cpu.index)
        return layout.TRAMPOLINE + _trampoline.SYSCALL_ENTRY

    def _point_syscall(self, cpu: Cpu) -> None:
        """MSR_LSTAR of ``cpu``: its call slot's stub, or the trampoline's entry."""
        cpu.vcpu.set_msrs({MSR.LSTAR: self.syscall_target(cpu)})
        # Patched call sites (linux/sitepatch.py) find the slot's ring through GS.
        with_ring = (self.patched_sites_on and self.call_stubs_on
                     and cpu.index < layout.CALL_SLOTS)
        cpu.set_ring_gs_base(layout.call_ring_of(cpu.index) if with_ring else 0)

    def use_patched_sites(self, on: bool) -> None:
        """Let patched call sites (linux/sitepatch.py) reach each vCPU's ring through
        its GS base, or (off) make them all fall back to ``syscall``."""
        self.patched_sites_on = on
        for cpu in self._all_cpus:
            self._point_syscall(cpu)

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
