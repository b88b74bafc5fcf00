"""Entry and traps of the Dune API from C (tests/dune/programs/traps.c and the
divzero example): the probe, dune_init's re-execution of a program started
natively, page faults, exceptions and signals upcalled to the program's handlers
on its handler stack (nested ones too), the FPU state around them, and a handler
stack that cannot take a frame."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import pytest

from .conftest import EXAMPLES, PROGRAMS, explain, lines, run_dune, run_native

pytestmark = pytest.mark.kvm

TRAPS = PROGRAMS / "traps.c"
DIVZERO = EXAMPLES / "divzero.c"
ENOSYS = 38


def test_probe_fails_natively_and_answers_under_kvmdune(dune_build, syscall_path):
    program = dune_build(TRAPS)
    assert lines(run_native([program, "probe"])) == [f"probe {-ENOSYS}"]
    done = run_dune([program, "probe"])
    assert lines(done) == ["probe 1"], explain(done)


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_divide_by_zero_is_caught_and_skipped(dune_build, syscall_path, link):
    program = dune_build(DIVZERO, link)
    done = run_dune([program])
    assert lines(done) == ["84 / 0 = 42", "caught 1 divide error(s)"], explain(done)
    done = run_dune([program, "4"])      # the same code without a fault
    assert lines(done) == ["84 / 4 = 21", "caught 0 divide error(s)"], explain(done)


def test_started_natively_dune_init_reruns_it_under_kvmdune(dune_build):
    done = run_native([dune_build(DIVZERO)])
    # Only under kvmdune does a handler catch the #DE (natively: SIGFPE).
    assert lines(done) == ["84 / 0 = 42", "caught 1 divide error(s)"], explain(done)
    program = dune_build(TRAPS)
    done = run_native([program, "argv", "two words", ""], cwd="/")
    assert lines(done) == ["init: 0", f"argv[0] = {program}", "argv[1] = argv",
                           "argv[2] = two words", "argv[3] = ", "marker: unset"], explain(done)
    relative = os.path.basename(program)
    done = run_native([f"./{relative}", "argv"], cwd=os.path.dirname(program))
    assert lines(done)[1] == f"argv[0] = ./{relative}", explain(done)


def test_a_kvmdune_without_the_api_fails_clearly_instead_of_looping(dune_build):
    # Started again under kvmdune (the marker says so) and still no probe: no new exec.
    done = run_native([dune_build(TRAPS), "argv"],
                      env={**os.environ, "KVMDUNE_DUNE_REEXEC": "1"})
    assert lines(done)[0] == f"init: {-ENOSYS}", explain(done)
    assert b"does not offer it the Dune API" in done.stderr


def test_dune_init_twice(dune_build):
    done = run_dune([dune_build(TRAPS), "init-twice"])
    assert lines(done) == ["init 1: 0", "init again: 0", "init other: -16", "enter: 0",
                           "enter again: 0"], explain(done)


def test_page_fault_handler_maps_the_page_and_the_access_is_retried(dune_build, syscall_path):
    done = run_dune([dune_build(TRAPS), "page-fault"])
    # fec 6: a user-mode write to a page not present; the sigaction handler never runs.
    assert lines(done) == ["fault at page+0x8 fec 0x6 rip-in-main 1",
                           "after: 42 7, 1 fault(s)"], explain(done)


def test_without_a_pgflt_handler_the_fault_is_linux_sigsegv(dune_build):
    done = run_dune([dune_build(TRAPS), "page-fault-unhandled"])
    assert lines(done) == ["the sigaction SIGSEGV handler ran"], explain(done)
    assert done.returncode == 3


def test_a_fault_in_a_handler_nests_below_it(dune_build):
    done = run_dune([dune_build(TRAPS), "nested"])
    out = lines(done)
    assert [re.sub(r" 0x[0-9a-f]+$", "", line) for line in out] == [
        "depth 1: fault on the outer page, handler stack",
        "depth 2: fault on the inner page, handler stack",
        "after: 9 5, deepest 2"], explain(done)
    outer, inner = (int(line.rsplit(" ", 1)[1], 16) for line in out[:2])
    assert inner < outer - 128, "the nested frame is below the outer handler's red zone"


def test_fpu_sse_avx_state_survives_a_handler_that_clobbers_it(dune_build, syscall_path):
    done = run_dune([dune_build(TRAPS), "fpu"])
    assert lines(done) == ["handler clobbered the vector registers", "xmm registers preserved",
                           "ymm7 preserved", "x87 control word 0x37f, mxcsr 0x1f80"], explain(done)


def test_a_registered_signal_arrives_as_its_vector(dune_build, syscall_path):
    done = run_dune([dune_build(TRAPS), "signal"])
    assert lines(done) == ["register: 0", "register SIGKILL: -22",
                           "alarm arrived as vector 214", "alarms 2"], explain(done)


def test_passthrough_makes_the_call_but_refuses_hypercalls(dune_build):
    done = run_dune([dune_build(TRAPS), "passthrough"])
    assert lines(done) == ["getpid matches", "hypercall: -1", "hypercall with high bits: -1"], \
        explain(done)


@pytest.mark.parametrize("case, why", [("stack-gone", "it is not writable memory"),
                                       ("stack-full", "it is full")])
def test_a_handler_stack_that_cannot_take_a_frame_ends_the_process(dune_build, case, why):
    done = run_dune([dune_build(TRAPS), case])
    report = done.stderr.decode()
    assert done.returncode == 128 + 11, explain(done)
    assert f"cannot take the frame of an upcall" in report and why in report, report
    assert "killed by SIGSEGV" in report and "rip=" in report
    assert "internal error" not in report and "Traceback" not in report
    assert "not reached" not in done.stdout.decode()


def test_a_forked_child_keeps_the_handlers(dune_build, syscall_path):
    done = run_dune([dune_build(TRAPS), "fork"])
    assert lines(done) == ["child: 42, 1 caught", "child probe: 1", "child status 0",
                           "parent: 42, 1 caught"], explain(done)


def test_a_new_program_starts_without_the_old_ones_handlers(dune_build):
    done = run_dune([dune_build(TRAPS), "exec"])
    # The handler caught the #DE before execve; after it the same fault is SIGFPE.
    assert lines(done) == ["before exec: 42", "new program: probe 1, dividing by zero"], \
        explain(done)
    assert done.returncode == 128 + 8, explain(done)
    assert b"killed by SIGFPE" in done.stderr


def test_the_api_works_inside_kvmdune_sandbox(dune_build):
    # The sandbox drops to nobody: the programs go where nobody can read them.
    with tempfile.TemporaryDirectory(prefix="kvmdune-dune-") as directory:
        os.chmod(directory, 0o755)
        divzero, traps = (shutil.copy(dune_build(source), directory)
                          for source in (DIVZERO, TRAPS))
        done = run_dune([divzero], sandbox=True)
        assert lines(done) == ["84 / 0 = 42", "caught 1 divide error(s)"], explain(done)
        done = run_dune([traps, "page-fault"], sandbox=True)
        assert lines(done) == ["fault at page+0x8 fec 0x6 rip-in-main 1",
                               "after: 42 7, 1 fault(s)"], explain(done)


def test_a_threads_handler_stack_goes_with_the_thread(dune_build, syscall_path):
    # 64 threads one after another, each entering (its own handler stack) and taking
    # a trap on it: their stacks are withdrawn and unmapped at their exit, and the
    # main thread's still takes traps.
    done = run_dune([dune_build(TRAPS), "thread-churn"])
    assert lines(done) == ["threads 64, failures 0, breakpoints 64", "mappings grew by 0",
                           "breakpoints 65"], explain(done)
