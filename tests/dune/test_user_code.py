"""User code run with dune_jump_to_user (tests/dune/programs/usercode.c): its system
calls reach the program's syscall handler with libdune's tf (ARG3 from r10) and get
the handler's value; dune_ret_from_user ends the run with its value and the final
registers in the tf; exceptions resume after their handler; faults reach the pgflt
handler; a hypercall from user code reaches the handler, never the VMM (and the
passthrough refuses it); an alarm ends an endless loop; user code has its own FS
base; and what has no handler ends the process with a crash report."""

from __future__ import annotations

import pytest

from .conftest import PROGRAMS, explain, lines, run_dune

pytestmark = pytest.mark.kvm

USERCODE = PROGRAMS / "usercode.c"

#: case -> what the program prints.
CASES = {
    # 1000 + 1 + 2*2 + 3*3 + 4*4: ARG0..ARG3 (ARG3 from r10) reached the handler.
    "syscall": ["returned 1030 after 2 system calls", "final rax 60, rip in user code: yes",
                "program mxcsr 0x1f80"],
    "resume": ["returned 2"],
    "fault": ["user fault at the address: yes, fec 0x4, rip in user code: yes", "returned 77"],
    "hypercall": ["returned -1; the handler saw 0xd00005, then 1 more"],
    "loop": ["alarm in user code: yes", "returned 7"],
    "fs": ["returned 0xfeedface", "program fs unchanged: yes, user fs kept: yes"],
    "busy": ["jump from a handler: -16", "returned 1"],
    "before-enter": ["init: 0", "jump before dune_enter: -22"],
    # dune_init(0): user code cannot even fetch its code until the program grants it
    # (PERM_U), and then reaches only what was granted.
    "perm": ["user fault at the expected address: yes, fec 0x14, rip = address",
             "returned 55", "granted code: 0", "granted stack: 0",
             "user fault at the expected address: yes, fec 0x4, rip in user code",
             "returned 55", "the program still reads it: 99"],
    "jump-from-handler": ["user fault at the address: yes, fec 0x4, rip in user code: yes",
                          "from a handler: returned 77", "back in the program: 1234"],
}


@pytest.mark.parametrize("case", CASES)
def test_user_code(dune_build, syscall_path, case):
    done = run_dune([dune_build(USERCODE), case])
    assert lines(done) == CASES[case], explain(done)
    assert done.returncode == 0, explain(done)


@pytest.mark.parametrize("case, status, what", [
    ("no-syscall-handler", 128 + 31, "made system call 13631493"),
    ("no-fault-handler", 128 + 11, "faulted"),
])
def test_user_code_without_a_handler_ends_the_process(dune_build, case, status, what):
    done = run_dune([dune_build(USERCODE), case])
    report = done.stderr.decode()
    assert done.returncode == status, explain(done)
    assert f"user code (dune_jump_to_user) {what}" in report and "rip=" in report, report
    assert "internal error" not in report and "Traceback" not in report
    assert lines(done) == []


def test_dune_ret_from_user_outside_a_handler_aborts_with_a_message(dune_build):
    done = run_dune([dune_build(USERCODE), "ret-outside"])
    assert done.returncode == 128 + 6, explain(done)
    assert b"dune_ret_from_user(3) outside a handler running for user code" in done.stderr
