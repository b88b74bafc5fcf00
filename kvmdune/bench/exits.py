"""``kvmdune bench exits``: what one exit to the VMM costs, for each way guest CPL3
code can leave for it without a system call.

The call stub leaves for the VMM when its spin runs out (the wait exit, callring.py):
today a jump to a supervisor address, whose #PF enters the trampoline at CPL0 (the
supervisor code software KVM emulates), which exits with ``out`` and returns with
``iretq``. Ways out of CPL3 that need no CPL0 code, measured beside it:

- a store to a user page whose entry points at guest-physical memory no KVM slot
  backs: KVM emulates the one instruction and exits with KVM_EXIT_MMIO;
- ``out`` at CPL3 to a port the TSS's I/O permission bitmap allows (KVM_EXIT_IO);
- ``out`` at CPL3 with RFLAGS.IOPL = 3 (it would also let CPL3 run ``cli``/``sti``);
- and, as the floor, ``out`` from a CPL0 loop (no privilege change at all).

Each guest loops on its exit with a counter in R12 and the other registers set; a
C loop (native/exit_loop.c) takes the exits and re-enters at once, timing them in
the thread's CPU time (the guest's time is charged to it, so other jobs on the
machine barely move it) and in wall time. After each run the guest's registers,
CS and RFLAGS are checked, and the counter must equal the exits taken: no fault was
delivered on the way. A way the platform does not offer is reported with the exit
it got instead.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from ..kvm.constants import SyncRegs
from ..kvm.exits import decode_exit
from ..machine import Machine, layout
from ..machine import _trampoline
from ..machine.descriptors import TSS_SIZE
from ..machine.x86 import RFLAGS, USER_RFLAGS, USER_RFLAGS_FIXED, Vector
from ..memory import PAGE_SIZE, Perm
from .linux_baselines import build_native

EXIT_LOOP_SOURCE = "exit_loop.c"
SHARED_OBJECT_FLAGS = ("-shared", "-fPIC")
CODE = 0x40_0000
STACK_TOP = 0x60_1000
MMIO_PAGE = 0x50_0000
#: A guest-physical page no slot backs: the last of a 39-bit physical address space
#: (the narrowest of current x86-64 CPUs), far above guest memory and shared regions.
UNBACKED_PADDR = (1 << 39) - PAGE_SIZE
#: The port the CPL3 ``out`` ways use: none of the trampoline's (trampoline.h).
EXIT_PORT = 0xE0
#: The exits a run starts with, untimed (KVM builds its shadow entries then).
WARM_UP_EXITS = 50
DEFAULT_EXITS = 2000
#: Registers the guests never touch: they must come back as they were set.
KEPT_REGISTERS = ("rbx", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r13", "r14", "r15")
#: The TSS's I/O map base field (Intel SDM vol. 3A, 8.7): the bitmap follows the TSS.
_IO_BITMAP_BYTES = (EXIT_PORT // 8) + 2      # through the port's byte, then 0xFF
_NS_PER_US = 1000


class ExitKind(IntEnum):
    """exit_loop.c's ``enum exit_kind``."""

    WAIT_EXIT = 0
    MMIO_WRITE = 1
    PORT_OUT = 2


class _ExitLoop(ctypes.Structure):
    _fields_ = [("memory", ctypes.c_void_p)] + [(name, ctypes.c_uint64) for name in (
        "iret_rip", "iret_frame", "iret_frame_paddr", "exception_stack",
        "exception_stack_paddr", "exception_stack_size", "user_rflags", "user_rflags_fixed",
        "supervisor_rflags", "user_cs", "user_ss", "page_fault_port", "expected")]


class _ExitTimes(ctypes.Structure):
    _fields_ = [("cpu_ns", ctypes.c_uint64), ("wall_ns", ctypes.c_uint64),
                ("last_reason", ctypes.c_int32)]


def _load_exit_loop() -> ctypes.CDLL:
    library = ctypes.CDLL(str(build_native(EXIT_LOOP_SOURCE, "exit_loop", SHARED_OBJECT_FLAGS)))
    library.exit_loop_run.argtypes = [ctypes.POINTER(_ExitLoop), ctypes.c_int, ctypes.c_void_p,
                                      ctypes.c_int, ctypes.c_long, ctypes.POINTER(_ExitTimes)]
    library.exit_loop_run.restype = ctypes.c_long
    library.exit_loop_enter_user.argtypes = [ctypes.POINTER(_ExitLoop), ctypes.c_void_p,
                                             ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]
    library.exit_loop_enter_user.restype = None
    return library


# -- the guests: each an endless loop, R12 counting its exits -----------------------
def _movabs(register: int, value: int) -> bytes:
    return bytes([0x48 | (register >> 3), 0xB8 + (register & 7)]) + struct.pack("<Q", value)


_RAX, _RDX = 0, 2
_INC_R12 = b"\x49\xff\xc4"


def _loop(prologue: bytes, body: bytes) -> bytes:
    """``prologue; L: body; jmp L``."""
    return prologue + body + b"\xeb" + bytes([(-(len(body) + 2)) & 0xFF])


def wait_exit_guest() -> bytes:
    """The call stub's wait exit: RCX = where to resume, a jump to the wait target."""
    resume = _movabs(_RAX, layout.CALL_WAIT_TARGET) + b"\xff\xe0"    # movabs; jmp *%rax
    lea_rcx = b"\x48\x8d\x0d" + struct.pack("<i", len(resume))      # lea resume(%rip),%rcx
    return _loop(b"", _INC_R12 + lea_rcx + resume)


def mmio_guest() -> bytes:
    """``mov %r12,(MMIO_PAGE)`` in a loop."""
    return _loop(_movabs(_RDX, MMIO_PAGE), _INC_R12 + b"\x4c\x89\x22")


def port_guest() -> bytes:
    """``out %al,$EXIT_PORT`` in a loop."""
    return _loop(b"", _INC_R12 + bytes([0xE6, EXIT_PORT]))


# -- the ways -----------------------------------------------------------------------
@dataclass(frozen=True)
class Way:
    name: str
    kind: ExitKind
    guest: Callable[[], bytes]
    prepare: Callable[[Machine], int]      # sets the vCPU up; the RFLAGS to start with
    user_mode: bool = True


def _allow_exit_port(machine: Machine) -> int:
    """Give the TSS an I/O permission bitmap allowing EXIT_PORT alone."""
    tss = machine.kernel_space.walk(layout.cpu_area(machine.cpu.index).tss).paddr
    bitmap = bytearray(b"\xff" * _IO_BITMAP_BYTES)
    bitmap[EXIT_PORT // 8] &= ~(1 << (EXIT_PORT % 8))
    machine.memory.write(tss + TSS_SIZE, bytes(bitmap))   # the map base is TSS_SIZE
    sregs = type(machine.cpu.sregs).from_buffer_copy(machine.cpu.sregs)
    sregs.tr.limit = TSS_SIZE + _IO_BITMAP_BYTES - 1
    machine.cpu.load_sregs(sregs)
    return USER_RFLAGS_FIXED


WAYS = (
    Way("today: #PF on the wait target, CPL0 `out`, `iretq`", ExitKind.WAIT_EXIT,
        wait_exit_guest, lambda machine: USER_RFLAGS_FIXED),
    Way("MMIO store to an unbacked guest-physical page", ExitKind.MMIO_WRITE, mmio_guest,
        lambda machine: USER_RFLAGS_FIXED),
    Way("`out` at CPL3, TSS I/O bitmap", ExitKind.PORT_OUT, port_guest, _allow_exit_port),
    Way("`out` at CPL3, IOPL 3", ExitKind.PORT_OUT, port_guest,
        lambda machine: USER_RFLAGS_FIXED | int(RFLAGS.IOPL)),
    Way("floor: `out` in a CPL0 loop", ExitKind.PORT_OUT, port_guest,
        lambda machine: int(RFLAGS.FIXED), user_mode=False),
)


@dataclass
class WayResult:
    way: Way
    cpu_us: list[float]
    wall_us: list[float]
    refused: str | None = None


def _loop_parameters(machine: Machine, way: Way) -> _ExitLoop:
    parameters = machine.cpu.native_run_parameters()
    expected = {ExitKind.WAIT_EXIT: layout.CALL_WAIT_TARGET, ExitKind.MMIO_WRITE: UNBACKED_PADDR,
                ExitKind.PORT_OUT: EXIT_PORT}[way.kind]
    return _ExitLoop(
        machine.memory.mapping.address, parameters["iret_rip"], parameters["iret_frame"],
        parameters["iret_frame_paddr"], parameters["exception_stack"],
        parameters["exception_stack_paddr"], parameters["exception_stack_size"],
        USER_RFLAGS, USER_RFLAGS_FIXED, parameters["supervisor_rflags"], layout.USER_CS,
        layout.USER_DS, _trampoline.EXCEPTION_PORT_BASE + int(Vector.PF), expected)


def _start(machine: Machine, way: Way, library: ctypes.CDLL, loop: _ExitLoop) -> None:
    cpu = machine.cpu
    rflags = way.prepare(machine)
    if not way.user_mode:
        kernel = machine.kernel_space
        kernel.map(layout.PROBE_CODE, PAGE_SIZE, Perm.READ | Perm.EXEC)
        machine.memory.write(kernel.walk(layout.PROBE_CODE).paddr, way.guest())
        cpu.set_address_space(kernel)
        regs = cpu.regs
        regs.rip, regs.rsp, regs.rflags = layout.PROBE_CODE, layout.ENTRY_STACK_TOP, rflags
        cpu.vcpu.run_struct.kvm_dirty_regs |= int(SyncRegs.REGS)
        return
    space = machine.new_address_space()
    space.map(CODE, PAGE_SIZE, Perm.READ | Perm.EXEC | Perm.USER)
    machine.memory.write(space.walk(CODE).paddr, way.guest())
    space.map(STACK_TOP - PAGE_SIZE, PAGE_SIZE, Perm.READ | Perm.WRITE | Perm.USER)
    space.map(MMIO_PAGE, PAGE_SIZE, Perm.READ | Perm.WRITE | Perm.USER, paddr=UNBACKED_PADDR)
    cpu.set_address_space(space)
    library.exit_loop_enter_user(ctypes.byref(loop), ctypes.addressof(cpu.vcpu.run_struct),
                                 CODE, STACK_TOP, rflags)


def measure_once(way: Way, exits: int, library: ctypes.CDLL) -> tuple[float, float] | str:
    """One run of ``exits`` timed exits: (CPU µs, wall µs) per exit, or why the way
    is not offered (the exit it got instead)."""
    with Machine() as machine:
        if machine.memory.size >= UNBACKED_PADDR:
            raise RuntimeError("guest memory reaches the unbacked page")
        loop = _loop_parameters(machine, way)
        _start(machine, way, library, loop)
        cpu, times = machine.cpu, _ExitTimes()
        run = ctypes.addressof(cpu.vcpu.run_struct)
        regs = cpu.regs
        for index, name in enumerate(KEPT_REGISTERS):
            setattr(regs, name, 0x1111_0000 + index)
        regs.r12 = 0
        cpu.vcpu.run_struct.kvm_dirty_regs |= int(SyncRegs.REGS)
        taken = library.exit_loop_run(ctypes.byref(loop), cpu.vcpu.fd, run, way.kind,
                                      WARM_UP_EXITS, ctypes.byref(times))
        if taken != WARM_UP_EXITS:
            return "not offered: " + _describe_exit(machine)
        taken = library.exit_loop_run(ctypes.byref(loop), cpu.vcpu.fd, run, way.kind, exits,
                                      ctypes.byref(times))
        _check_guest(machine, way, taken, exits)
        return times.cpu_ns / _NS_PER_US / exits, times.wall_ns / _NS_PER_US / exits


def _describe_exit(machine: Machine) -> str:
    """The exit a way got instead of its own: an exception the guest took, by name."""
    exit_ = decode_exit(machine.cpu.vcpu.run_struct)
    vector = getattr(exit_, "port", -1) - _trampoline.EXCEPTION_PORT_BASE
    if 0 <= vector < _trampoline.EXCEPTION_VECTORS:
        return f"the guest took {Vector(vector).mnemonic} (the trampoline's exception entry)"
    return f"{exit_} at RIP {machine.cpu.regs.rip:#x}"


def _check_guest(machine: Machine, way: Way, taken: int, exits: int) -> None:
    """Every exit was one loop turn (no fault delivered), the registers are intact,
    and a CPL3 way is still at CPL3 with the flags it started with."""
    cpu, regs = machine.cpu, machine.cpu.regs
    problems = []
    if taken != exits or regs.r12 != WARM_UP_EXITS + exits:
        problems.append(f"{taken} exits taken, R12 = {regs.r12}")
    changed = [name for index, name in enumerate(KEPT_REGISTERS)
               if getattr(regs, name) != 0x1111_0000 + index]
    if changed:
        problems.append(f"registers changed: {changed}")
    if way.user_mode and way.kind is not ExitKind.WAIT_EXIT:
        if cpu.sregs.cs.selector != layout.USER_CS or regs.rflags & ~int(RFLAGS.IOPL) \
                != USER_RFLAGS_FIXED:
            problems.append(f"CS {cpu.sregs.cs.selector:#x}, RFLAGS {regs.rflags:#x}")
    if problems:
        raise RuntimeError(f"{way.name}: " + "; ".join(problems))


def run_exits_bench(samples: int = 5, exits: int = DEFAULT_EXITS,
                    progress: Callable[[str], None] = lambda text: None) -> list[WayResult]:
    """``samples`` rounds, every way once per round (interleaved)."""
    library = _load_exit_loop()
    results = [WayResult(way, [], []) for way in WAYS]
    for round_ in range(samples):
        progress(f"round {round_ + 1} of {samples}")
        for result in results:
            if result.refused is not None:
                continue
            outcome = measure_once(result.way, exits, library)
            if isinstance(outcome, str):
                result.refused = outcome
                continue
            result.cpu_us.append(outcome[0])
            result.wall_us.append(outcome[1])
    return results


def format_table(results: list[WayResult], load_before: tuple[float, ...],
                 load_after: tuple[float, ...]) -> str:
    today = statistics.median(results[0].cpu_us) if results[0].cpu_us else None
    lines = [f"one exit to the VMM and back, C run loop, median of {len(results[0].cpu_us)} "
             f"runs (load {load_before[0]:.1f} before, {load_after[0]:.1f} after)",
             f"{'way':<52} {'CPU µs':>8} {'wall µs':>8} {'of today':>9}"]
    for result in results:
        if result.refused is not None:
            lines.append(f"{result.way.name:<52} {result.refused}")
            continue
        cpu = statistics.median(result.cpu_us)
        share = f"{cpu / today:.0%}" if today else "-"
        lines.append(f"{result.way.name:<52} {cpu:8.1f} "
                     f"{statistics.median(result.wall_us):8.1f} {share:>9}")
    return "\n".join(lines)


def load_average() -> tuple[float, ...]:
    return os.getloadavg()
