"""The program's faults and exceptions delivered to its Dune handlers without Python
(vmm_native/upcall.c): one native run loop per vCPU (the machine's ``NativeRunner``)
that takes the exits of the faults and exceptions the program traps, writes the
upcall frame as ``DuneProcess._upcall`` would and re-enters the guest; every other
exit, and every case it is not sure of, comes to the Python run loop as before.

This module keeps each vCPU's native configuration in step with DuneProcess's
records: the trapped vectors and page faults, the thread's handler stack, whether
user code runs (then nothing is delivered natively), and the page tables' native
check of which faults are the program's own (vm.py's ``restricts``, served by
vmm_native/fastvm.c; without it, page faults stay with Python).

Off with ``KVMDUNE_NATIVE_UPCALLS=0`` (what the tests compare against), without the
native module, or without a process lock native code can take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..machine import Cpu
from ..machine._trampoline import EXCEPTION_VECTORS

__all__ = ["NativeUpcalls", "UpcallConfig", "ENV_SWITCH"]

#: The environment switch: "0" turns native delivery off.
ENV_SWITCH = "KVMDUNE_NATIVE_UPCALLS"


def _module():
    try:
        from . import _upcall
    except ImportError:
        return None
    return _upcall


@dataclass(frozen=True)
class UpcallConfig:
    """What one thread's native delivery may deliver now."""

    deliver: bool          # a handler stack, and the program (not user code) runs
    page_faults: bool
    vectors: frozenset[int]
    entry: int = 0
    stack_base: int = 0
    stack_top: int = 0


class NativeUpcalls:
    """Native delivery for one process's vCPUs."""

    def __init__(self, proc, native_module) -> None:
        self.proc = proc
        self._module = native_module
        self._runners: dict[Cpu, object] = {}
        #: Counts of runners gone with their vCPU (thread ended, exec).
        self._retired = {"delivered": 0, "declined": 0, "waits": 0}

    @classmethod
    def start(cls, proc) -> "NativeUpcalls | None":
        if os.environ.get(ENV_SWITCH, "1") == "0":
            return None
        module = _module()
        lock = getattr(getattr(proc, "threads", None), "lock", None)
        if module is None or not hasattr(lock, "address"):
            return None
        return cls(proc, module)

    def configure(self, cpu: Cpu, config: UpcallConfig, fault_check) -> None:
        """Install or update ``cpu``'s runner (``fault_check``: the page tables'
        native check, or None; the same object each time while it stands, since
        the runner of another thread may be using it)."""
        runner = self._runners.get(cpu)
        if runner is None or cpu.native_runner is not runner:
            if runner is not None:
                self._retire(cpu)
            if not config.deliver:
                return
            runner = self._new_runner(cpu)
        # (Only exceptions reach the VMM through an exception entry's exit.)
        vectors = sum(1 << vector for vector in config.vectors if vector < EXCEPTION_VECTORS)
        runner.configure(config.deliver, self.proc.space.cr3, config.page_faults, vectors,
                         config.entry, config.stack_base, config.stack_top, fault_check)

    def _new_runner(self, cpu: Cpu):
        memory = self.proc.machine.memory
        runner = self._module.NativeUpcalls(
            memory=memory.mapping.address, memory_size=memory.size,
            process_lock=self.proc.threads.lock.address, **cpu.native_run_parameters())
        self._runners[cpu] = runner
        cpu.native_runner = runner
        return runner

    def forget(self, cpu: Cpu) -> None:
        """``cpu``'s thread ended: its vCPU runs without native delivery."""
        if cpu in self._runners:
            self._retire(cpu)

    def _retire(self, cpu: Cpu) -> None:
        runner = self._runners.pop(cpu)
        for name, count in runner.stats().items():
            self._retired[name] += count
        if cpu.native_runner is runner:
            cpu.native_runner = None

    def close(self) -> None:
        for cpu in list(self._runners):
            self._retire(cpu)

    def stats(self) -> dict[str, int]:
        totals = dict(self._retired)
        for runner in self._runners.values():
            for name, count in runner.stats().items():
                totals[name] += count
        return totals
