"""The /dev/kvm API as objects: ``Kvm`` (the system fd), ``Vm``, ``Vcpu``.

One class per file descriptor, as in rust-vmm's kvm-ioctls. Each owns its fd from
the moment the kernel returns it, has ``close()``, is a context manager, and warns
(ResourceWarning) when garbage-collected unclosed. Children are made only by their
parent: ``Kvm.create_vm()``, ``Vm.create_vcpu()``. Methods are named after the ioctl
they wrap; errors carry the ioctl's name and errno.
"""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import grp
import mmap
import os
import struct
import warnings
from typing import Any, Protocol

from . import bindings as b
from . import ioctls as io
from .constants import KVM_API_VERSION, REQUIRED_CAPS, Cap, MemFlags
from .exits import VcpuExit, decode_exit
from .errors import (KvmApiVersionError, KvmError, KvmInterrupted,
                     KvmMissingCapability, KvmUnavailable)

#: The KVM device; KVMDUNE_KVM_DEVICE names another (a container's bind mount, a test).
KVM_DEVICE = os.environ.get("KVMDUNE_KVM_DEVICE", "/dev/kvm")
#: Upper bound of CPUID entries asked of KVM_GET_SUPPORTED_CPUID (KVM's own cap is 256).
KVM_MAX_CPUID_ENTRIES = 256


def _access_advice(path: str) -> str:
    """What a user denied access to /dev/kvm can do, for this machine's setup."""
    try:
        group = grp.getgrgid(os.stat(path).st_gid).gr_name
    except (KeyError, OSError):
        group = None
    if group and group != "root":
        return (f"add your user to the '{group}' group (sudo usermod -aG {group} $USER) "
                "and log in again, or run as root")
    return f"{path} is owned by root with no kvm group here: run kvmdune as root"


#: /dev/kvm as the caller opened it, when a resident worker runs on its behalf
#: (kvmdune/cli/resident.py): used instead of opening KVM_DEVICE, so that access to
#: KVM is the caller's.
_adopted_device: int | None = None


def adopt_device(fd: int) -> None:
    """Open KVM_DEVICE as a new descriptor of ``fd`` (the caller's /dev/kvm) from now on."""
    global _adopted_device
    _adopted_device = fd


def open_kvm(path: str = KVM_DEVICE) -> int:
    """Open /dev/kvm and return the fd, raising ``KvmUnavailable`` with advice."""
    if _adopted_device is not None and path == KVM_DEVICE:
        return os.dup(_adopted_device)
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise KvmUnavailable(
            f"{path} does not exist", errno=exc.errno,
            advice="load the KVM module (modprobe kvm_intel / kvm_amd), or enable nested "
                   "virtualization for this VM") from exc
    except PermissionError as exc:
        raise KvmUnavailable(f"no permission to open {path}", errno=exc.errno,
                             advice=_access_advice(path)) from exc
    except OSError as exc:
        raise KvmUnavailable(f"cannot open {path}", errno=exc.errno) from exc


class NativeRunner(Protocol):
    """Native code that runs a vCPU: KVM_RUN on ``vcpu_fd`` with ``kvm_run`` at
    ``run_address`` again after every exit it handles itself (with the GIL
    released); it returns (exits handled, errno of a failed KVM_RUN or 0). The
    caller passes what else it needs as ``context``."""

    def run(self, vcpu_fd: int, run_address: int, *context: object) -> tuple[int, int]: ...


class _FdObject:
    """Owns one file descriptor; shared close/context-manager/ResourceWarning logic."""

    _fd: int = -1

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise KvmError(f"{type(self).__name__} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._fd >= 0:
            warnings.warn(f"unclosed {type(self).__name__} (fd {self._fd})",
                          ResourceWarning, stacklevel=2)
            self.close()

    def _ioctl(self, request: int, arg: Any = 0) -> int:
        try:
            return fcntl.ioctl(self.fd, request, arg)
        except OSError as exc:
            raise KvmError.from_oserror(io.NAMES.get(request, hex(request)), exc) from exc


class Kvm(_FdObject):
    """The KVM system: /dev/kvm. Checks the API version on open."""

    def __init__(self, path: str = KVM_DEVICE) -> None:
        super().__init__(open_kvm(path))
        self.path = path
        self._supported_cpuid: ctypes.Structure | None = None
        try:
            version = self.get_api_version()
            if version != KVM_API_VERSION:
                raise KvmApiVersionError(
                    f"{path} speaks KVM API version {version}, kvmdune needs "
                    f"{KVM_API_VERSION}", ioctl="KVM_GET_API_VERSION")
        except BaseException:
            self.close()
            raise

    def get_api_version(self) -> int:
        """KVM_GET_API_VERSION."""
        return self._ioctl(io.KVM_GET_API_VERSION)

    def check_extension(self, cap: Cap | int) -> int:
        """KVM_CHECK_EXTENSION: 0 when absent, else a capability-specific value."""
        return self._ioctl(io.KVM_CHECK_EXTENSION, int(cap))

    def require_capabilities(self, caps: tuple[Cap, ...] = REQUIRED_CAPS) -> None:
        """Raise ``KvmMissingCapability`` naming the first capability KVM lacks."""
        for cap in caps:
            if not self.check_extension(cap):
                raise KvmMissingCapability(
                    f"KVM lacks KVM_CAP_{cap.name}, which kvmdune needs",
                    ioctl="KVM_CHECK_EXTENSION",
                    advice="use a newer Linux kernel (5.x or later)")

    def get_vcpu_mmap_size(self) -> int:
        """KVM_GET_VCPU_MMAP_SIZE: bytes to mmap from a vCPU fd (kvm_run and beyond)."""
        return self._ioctl(io.KVM_GET_VCPU_MMAP_SIZE)

    def get_supported_cpuid(self) -> ctypes.Structure:
        """KVM_GET_SUPPORTED_CPUID: a kvm_cpuid2 with the entries KVM can offer. The
        answer is the module's, fixed while it is loaded: asked once per descriptor
        (a forked child's new vCPU reuses it), a copy handed out each time."""
        supported = self._supported_cpuid
        if supported is None:
            supported = b.cpuid2_buffer(KVM_MAX_CPUID_ENTRIES)
            self._ioctl(io.KVM_GET_SUPPORTED_CPUID, supported)
            self._supported_cpuid = supported
        return type(supported).from_buffer_copy(supported)

    def create_vm(self) -> "Vm":
        """KVM_CREATE_VM."""
        return Vm(self, self._ioctl(io.KVM_CREATE_VM, 0))


class Vm(_FdObject):
    """A KVM virtual machine fd."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        super().__init__(fd)
        self.kvm = kvm

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, memory_size: int,
                               userspace_addr: int, flags: MemFlags = MemFlags(0)) -> None:
        """KVM_SET_USER_MEMORY_REGION (memory_size 0 deletes the slot)."""
        region = b.kvm_userspace_memory_region(slot, int(flags), guest_phys_addr,
                                               memory_size, userspace_addr)
        self._ioctl(io.KVM_SET_USER_MEMORY_REGION, region)

    def enable_cap(self, cap: Cap, *args: int) -> None:
        """KVM_ENABLE_CAP on the VM, with up to four arguments."""
        request = b.kvm_enable_cap(cap=int(cap))
        for index, value in enumerate(args):
            request.args[index] = value
        self._ioctl(io.KVM_ENABLE_CAP, request)

    def clear_dirty_log(self, slot: int, first_page: int, num_pages: int,
                        bitmap: "bytearray | array.array") -> None:
        """KVM_CLEAR_DIRTY_LOG: write-protect again the pages of the slot whose bits
        are set in ``bitmap`` (bit i: page first_page + i) and KVM saw written
        (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2; first_page a multiple of 64)."""
        buffer = (ctypes.c_char * memoryview(bitmap).nbytes).from_buffer(bitmap)
        request = b.kvm_clear_dirty_log(slot, num_pages, first_page, ctypes.addressof(buffer))
        self._ioctl(io.KVM_CLEAR_DIRTY_LOG, request)

    def set_tss_addr(self, address: int) -> None:
        """KVM_SET_TSS_ADDR: three pages of guest-physical space Intel VT-x needs for
        real-mode emulation; unused in long mode but required before running on VMX."""
        self._ioctl(io.KVM_SET_TSS_ADDR, address)

    def create_vcpu(self, vcpu_id: int = 0) -> "Vcpu":
        """KVM_CREATE_VCPU, and the mapping of its kvm_run page."""
        fd = self._ioctl(io.KVM_CREATE_VCPU, vcpu_id)
        try:
            return Vcpu(self, fd, self.kvm.get_vcpu_mmap_size())
        except BaseException:
            os.close(fd)
            raise


class Vcpu(_FdObject):
    """A virtual CPU fd and its mapped ``kvm_run`` page."""

    def __init__(self, vm: Vm, fd: int, mmap_size: int) -> None:
        super().__init__(fd)
        self.vm = vm
        self._mmap = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE)
        # A ctypes view of the shared page: reading a field reads what KVM wrote.
        self.run_struct: b.kvm_run = b.kvm_run.from_buffer(self._mmap)

    def close(self) -> None:
        if self._fd >= 0:
            # Drop the ctypes view first: mmap refuses to close while it is exported.
            self.__dict__.pop("run_struct", None)
            try:
                self._mmap.close()
            except BufferError:
                pass  # views still held elsewhere: the mapping goes when they do
        super().close()

    def run(self) -> VcpuExit:
        """KVM_RUN, and the exit it ended with. Raises ``KvmInterrupted`` on EINTR."""
        try:
            fcntl.ioctl(self.fd, io.KVM_RUN, 0)
        except InterruptedError as exc:
            raise KvmInterrupted("KVM_RUN interrupted", ioctl="KVM_RUN",
                                 errno=errno.EINTR) from exc
        except OSError as exc:
            raise KvmError.from_oserror("KVM_RUN", exc) from exc
        return decode_exit(self.run_struct)

    def run_with(self, runner: NativeRunner, *context: object) -> tuple[VcpuExit | None, int]:
        """KVM_RUN through ``runner``, native code that enters the guest again after
        the exits it handles itself (``context``: what else it needs, its own
        business): the exit it left for the caller (None: KVM_RUN was interrupted,
        EINTR), and how many it handled."""
        handled, error = runner.run(self.fd, ctypes.addressof(self.run_struct), *context)
        if error == errno.EINTR:
            return None, handled
        if error:
            raise KvmError.from_oserror("KVM_RUN", OSError(error, os.strerror(error)))
        return decode_exit(self.run_struct), handled

    def get_regs(self) -> b.kvm_regs:
        """KVM_GET_REGS."""
        regs = b.kvm_regs()
        self._ioctl(io.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: b.kvm_regs) -> None:
        """KVM_SET_REGS."""
        self._ioctl(io.KVM_SET_REGS, regs)

    def get_sregs(self) -> b.kvm_sregs:
        """KVM_GET_SREGS."""
        sregs = b.kvm_sregs()
        self._ioctl(io.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: b.kvm_sregs) -> None:
        """KVM_SET_SREGS."""
        self._ioctl(io.KVM_SET_SREGS, sregs)

    def set_cpuid2(self, cpuid: ctypes.Structure) -> None:
        """KVM_SET_CPUID2."""
        self._ioctl(io.KVM_SET_CPUID2, cpuid)

    def set_msrs(self, msrs: dict[int, int]) -> None:
        """KVM_SET_MSRS; every MSR must be accepted."""
        done = self._ioctl(io.KVM_SET_MSRS, b.msrs_buffer(msrs))
        if done != len(msrs):
            failed = list(msrs)[done]
            raise KvmError(f"KVM refused MSR {failed:#x}", ioctl="KVM_SET_MSRS")

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        """KVM_GET_MSRS."""
        buf = b.msrs_buffer({index: 0 for index in indices})
        done = self._ioctl(io.KVM_GET_MSRS, buf)
        return {buf.entries[i].index: buf.entries[i].data for i in range(done)}

    def get_xcrs(self) -> b.kvm_xcrs:
        """KVM_GET_XCRS."""
        xcrs = b.kvm_xcrs()
        self._ioctl(io.KVM_GET_XCRS, xcrs)
        return xcrs

    def set_signal_mask(self, blocked: int) -> None:
        """KVM_SET_SIGNAL_MASK: the calling thread's signal mask while it is in
        KVM_RUN (``blocked``: bit n-1 for signal n). A signal it leaves unblocked
        that is pending, or arrives, ends KVM_RUN with EINTR; the thread's own mask
        is back before KVM_RUN returns, so a signal blocked there stays pending."""
        self._ioctl(io.KVM_SET_SIGNAL_MASK, struct.pack("<IQ", 8, blocked))

    def set_xcrs(self, xcrs: b.kvm_xcrs) -> None:
        """KVM_SET_XCRS."""
        self._ioctl(io.KVM_SET_XCRS, xcrs)

    def get_xsave(self) -> b.kvm_xsave:
        """KVM_GET_XSAVE: the vCPU's FPU/SSE/AVX state."""
        state = b.kvm_xsave()
        self._ioctl(io.KVM_GET_XSAVE, state)
        return state

    def set_xsave(self, state: b.kvm_xsave) -> None:
        """KVM_SET_XSAVE."""
        self._ioctl(io.KVM_SET_XSAVE, state)

    def get_vcpu_events(self) -> b.kvm_vcpu_events:
        """KVM_GET_VCPU_EVENTS."""
        events = b.kvm_vcpu_events()
        self._ioctl(io.KVM_GET_VCPU_EVENTS, events)
        return events
