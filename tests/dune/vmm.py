"""``kvmdune run`` for the page-table tests that look inside the VMM: the real Dune
API (``DuneProcess``, what the CLI offers programs) with two test hooks added, and
nothing else changed:

- TOOL (hypercall op 63, unused by the ABI), with ``--tool MODULE:FUNCTION``:
  ``FUNCTION(process, *args) -> int``, a Python tool acting on the running process at
  the program's request (how ``kvmdune.dune.PageTablesApi`` is tested on a live guest);
- with KVMDUNE_TEST_VM_INVARIANTS=1, DuneVm's invariants (invariants.py) are checked
  when the program ends (exit or execve): "invariants: ok", or what broke, on stderr.

``python3 -m tests.dune.vmm [--tool MODULE:FUNCTION] -- PROGRAM ARGS...`` (from the
repository root).
"""

from __future__ import annotations

import importlib
import os
import sys

from kvmdune.dune.process import DuneProcess
from kvmdune.linux.runner import RunOptions, run_command

INVARIANTS = "KVMDUNE_TEST_VM_INVARIANTS"
#: The operation the test programs call the Python tool with (unused by the ABI).
TOOL = 63


class ObservedDuneProcess(DuneProcess):
    """DuneProcess, plus TOOL and the invariants' check at the end."""

    tool = None      # FUNCTION of --tool

    def hypercall(self, cpu, op, args):
        if op == TOOL and self.tool is not None and self.initialized:
            return type(self).tool(self.proc, *args)
        return super().hypercall(cpu, op, args)

    def close(self) -> None:
        if self.vm is not None and os.environ.get(INVARIANTS) == "1":
            from .invariants import check

            problems = check(self.vm)
            self.proc.log("invariants: " + ("; ".join(problems) if problems else "ok"))
        super().close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--tool"]:
        module, function = argv[1].split(":")
        ObservedDuneProcess.tool = getattr(importlib.import_module(module), function)
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    return run_command(argv, options=RunOptions(privileged=ObservedDuneProcess))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
