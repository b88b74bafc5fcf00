"""kvmdune.dune.PageTablesApi, a Python tool's access to a running guest process's
page tables (tools.py), on a real guest (vm_programs/tooled.c asks for each step and
checks what it sees): dirty bits read and cleared for the tool's own reader (the
program's reader keeps its bits), a page protected by call and one by entry (the
program's writes fault), a clone without a page loaded for user code, refusals as
DuneError with the program's errno, and a walk of the entries."""

from __future__ import annotations

import pytest

from kvmdune.dune import PageTablesApi, DuneError

from .vm_support import passed_checks, program, run_observed, syscall_path  # noqa: F401

pytestmark = pytest.mark.kvm


def test_a_python_tool_on_a_running_guest(program):
    result = run_observed(["--tool", "tests.dune.tools:dirty_tool", program("tooled")])
    assert passed_checks(result) == [
        "tool-reads-and-clears-dirty-bits", "tool-protects-by-call-and-by-entry",
        "tool-clones-and-loads-cr3", "tool-refusals-and-walk"]


def test_a_process_without_dune_init_has_no_tables():
    class Process:
        privileged = None
    with pytest.raises(DuneError):
        PageTablesApi.of(Process())
