"""A test-only privileged extension: ``DuneVm`` alone, answering the page-table
hypercalls, with a minimal user mode and a hook for Python tools, for the test
programs that use raw hypercalls (vm_programs/testdune.h). Programs written against
dune.h run under ``kvmdune run`` with dune-traps' DuneProcess instead.

``python3 -m tests.dune.harness PROGRAM ARGS...`` (from the repository root) runs
PROGRAM as ``kvmdune run`` would, with a privileged extension that answers
  PROBE, INIT (map_full) -> pgroot, ops >= 16 -> DuneVm.hypercall, and
  JUMP_TO_USER(struct dune_tf *): run user code at tf->rip, tf->rsp, tf->rdi in the
  current root's user view until it makes a system call (the call returns
  USER_SYSCALL, tf->rax = the code's RAX), faults (USER_FAULT, tf->rax = the
  address, tf->err = the error code, tf->rip) or raises another exception
  (USER_EXCEPTION, tf->err = the vector).
  TOOL (63, with ``--tool MODULE:FUNCTION``): FUNCTION(process, *args) -> int, a
  Python tool acting on the running process at the program's request.
A program's own page fault on a page pgroot restricts becomes SIGSEGV (never demand
paging), as DuneVm.restricts asks. With KVMDUNE_TEST_VM_INVARIANTS=1 the VMM checks
DuneVm's invariants (invariants.py) when the process ends and prints "invariants:
ok" or what broke to stderr. Only the test programs in tests/dune use this.
"""

from __future__ import annotations

import importlib
import os
import struct
import sys

from kvmdune.dune.hypercall import ABI_VERSION, HypercallOp
from kvmdune.dune.vm import DuneVm
from kvmdune.linux import process as linux_process
from kvmdune.linux.abi import Errno, Signal
from kvmdune.linux.privileged import Privileged
from kvmdune.linux.runner import RunOptions, run_command
from kvmdune.machine import Action, layout
from kvmdune.memory import VMM

USER_SYSCALL, USER_FAULT, USER_EXCEPTION = 0, 1, 2
INVARIANTS = "KVMDUNE_TEST_VM_INVARIANTS"
#: The operation the test programs call the Python tool with (unused by the ABI).
TOOL = 63
#: libdune's struct dune_tf (packed): 15 registers, err, pad, rip, cs, pad, rflags, rsp, ss.
TF_SIZE = 168
TF_RDI, TF_RAX, TF_ERR, TF_RIP, TF_RSP = 0, 112, 120, 128, 152
_Q = struct.Struct("<Q")
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15")


class VmOnly(Privileged):
    """The page-table hypercalls, plus a minimal user mode to observe user views."""

    tool = None      # FUNCTION of --tool

    def __init__(self, proc) -> None:
        self.proc = proc
        self.vm: DuneVm | None = None
        self.user: tuple | None = None      # (saved registers, tf address) in user mode

    def hypercall(self, cpu, op, args):
        if op == HypercallOp.PROBE:
            return ABI_VERSION
        if op == HypercallOp.INIT:
            if self.vm is None:
                self.vm = DuneVm(self.proc, bool(args[0] & 0xFFFF_FFFF))
            return self.vm.pgroot
        if op == TOOL and self.tool is not None:
            return type(self).tool(self.proc, *args)
        if op == HypercallOp.JUMP_TO_USER and self.vm is not None:
            return self.jump(cpu, args[0])
        if op >= HypercallOp.VM_MPROTECT and self.vm is not None:
            return self.vm.hypercall(cpu, op, args)
        return -Errno.ENOSYS

    def jump(self, cpu, tf: int):
        try:
            frame = self.proc.space.read(tf, TF_SIZE)
        except Exception:
            return -Errno.EFAULT
        saved = {name: getattr(cpu.regs, name) for name in GPRS + ("rip", "rsp", "rflags")}
        self.user = (saved, tf)
        cpu.enter_user(self.vm.user_space(), _Q.unpack_from(frame, TF_RIP)[0],
                       _Q.unpack_from(frame, TF_RSP)[0])
        cpu.regs.rdi = _Q.unpack_from(frame, TF_RDI)[0]
        return None

    def end_user(self, cpu, kind: int, value: int, error: int = 0, rip: int = 0) -> Action:
        saved, tf = self.user
        self.user = None
        cpu.enter_user(self.proc.space, saved["rip"], saved["rsp"], saved["rflags"])
        for name in GPRS:
            setattr(cpu.regs, name, saved[name])
        cpu.regs.rax = kind
        space = self.proc.space
        space.write(tf + TF_RAX, _Q.pack(value & (2**64 - 1)), VMM)
        space.write(tf + TF_ERR, struct.pack("<I", error & 0xFFFF_FFFF), VMM)
        space.write(tf + TF_RIP, _Q.pack(rip), VMM)
        return Action.RESUME


def install() -> None:
    """Route user-mode events and restricted faults (Process's handlers, wrapped)."""
    process_class = linux_process.Process
    on_syscall, on_page_fault = process_class.on_syscall, process_class.on_page_fault
    on_exception = process_class.on_exception

    def in_user(proc) -> VmOnly | None:
        privileged = proc.privileged
        return privileged if isinstance(privileged, VmOnly) and privileged.user else None

    def syscall(self, cpu, event):
        user = in_user(self)
        if user is not None:          # slow path: the #PF at LSTAR came back as a syscall
            user.end_user(cpu, USER_SYSCALL, event.number)
            return None
        return on_syscall(self, cpu, event)

    def page_fault(self, cpu, event):
        user = in_user(self)
        if user is not None:
            if event.address == layout.CALL_STUB == event.rip:    # a syscall, software KVM
                return user.end_user(cpu, USER_SYSCALL, cpu.regs.rax)
            if user.vm.resolve_user_fault(event.address, event.error):
                return Action.RETRY
            return user.end_user(cpu, USER_FAULT, event.address, int(event.error), event.rip)
        privileged = self.privileged
        vm = getattr(privileged, "vm", None)
        if vm is not None and vm.restricts(event.address, event.error):
            return self.fault(cpu, Signal.SIGSEGV, event.address, event)
        return on_page_fault(self, cpu, event)

    def exception(self, cpu, event):
        user = in_user(self)
        if user is not None:
            return user.end_user(cpu, USER_EXCEPTION, 0, int(event.vector), event.rip)
        return on_exception(self, cpu, event)

    cleanup = process_class.cleanup

    def checked_cleanup(self):
        vm = getattr(self.privileged, "vm", None)
        if vm is not None and os.environ.get(INVARIANTS) == "1":
            from .invariants import check
            problems = check(vm)
            self.log("invariants: " + ("; ".join(problems) if problems else "ok"))
        cleanup(self)

    process_class.on_syscall = syscall
    process_class.on_page_fault = page_fault
    process_class.on_exception = exception
    process_class.cleanup = checked_cleanup


def main(argv: list[str]) -> int:
    if argv[:1] == ["--tool"]:
        module, function = argv[1].split(":")
        VmOnly.tool = getattr(importlib.import_module(module), function)
        argv = argv[2:]
    install()
    return run_command(argv, options=RunOptions(privileged=VmOnly))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
