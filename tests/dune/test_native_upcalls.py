"""The program's faults and exceptions delivered to its Dune handlers without Python
(kvmdune/dune/vmm_native/upcall.c): the same program, run with native delivery on
and off (KVMDUNE_NATIVE_UPCALLS), prints the same upcall frames, every byte of them
(registers, error code, RIP/RSP/RFLAGS, kind, vector, address, flags, FS base, where
each frame sits on the handler stack), the same register and FPU/SSE state after the
handler, the same crash at the handler stack's edge; and with it on, the upcalls were
delivered natively (``--syscall-stats``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from kvmdune.dune.upcalls import ENV_SWITCH

from .conftest import PROGRAMS, explain, lines

pytestmark = pytest.mark.kvm

SOURCE = PROGRAMS / "upcall_frames.c"
DELIVERED = re.compile(rb"(\d+) upcalls delivered natively")
#: The crash report's lines that do not depend on the run (no pid).
REPORT_LINE = re.compile(r"cannot take the frame|killed by|rip=|rax=")
PID = re.compile(r" \(pid \d+\)")


def run_frames(binary: str, case: str, native: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{ENV_SWITCH: "1" if native else "0"})
    return subprocess.run([sys.executable, "-m", "kvmdune", "run", "--syscall-stats", "--",
                           binary, case], capture_output=True, timeout=120, env=env)


def delivered(done: subprocess.CompletedProcess) -> int:
    counts = [int(count) for count in DELIVERED.findall(done.stderr)]
    assert len(counts) == 1, explain(done)
    return counts[0]


def both_ways(dune_build, case: str) -> tuple[subprocess.CompletedProcess, int]:
    """The case with native delivery on and off: the same output and status; the
    native run, and how many upcalls it delivered natively."""
    binary = dune_build(SOURCE)
    native, python = run_frames(binary, case, True), run_frames(binary, case, False)
    assert native.returncode == python.returncode, explain(native) + explain(python)
    assert lines(native) == lines(python), explain(native) + explain(python)
    assert delivered(python) == 0
    assert crash_report(native) == crash_report(python), explain(native) + explain(python)
    return native, delivered(native)


def crash_report(done: subprocess.CompletedProcess) -> list[str]:
    """The lines of a crash report that do not depend on the run (pids left out)."""
    return [PID.sub("", line) for line in done.stderr.decode().splitlines()
            if REPORT_LINE.search(line)]


def test_a_restricted_page_fault_frame_holds_every_register(dune_build):
    done, count = both_ways(dune_build, "registers")
    out = lines(done)
    assert count == 1, explain(done)
    assert out[-1] == "registers kept, page 0x42", explain(done)
    assert "rsi 0x5555555555555555" in out[1] and "r15 0xeeeeeeeeeeeeeeee" in out[2]
    assert "err 0x7 pad 0" in out[3] and "cs 0x33" in out[3] and "ss 0x2b" in out[3]
    assert out[4] == "  kind 0 vector 14 addr-pages 0 fec 0x7 flags 0 fs ok reserved 0"


def test_a_fault_in_a_handler_nests_below_its_red_zone(dune_build):
    done, count = both_ways(dune_build, "nested")
    out = lines(done)
    assert count == 2, explain(done)
    inner = [line for line in out if line.startswith("inner: frame top-")]
    assert len(inner) == 1 and int(inner[0].rsplit("-", 1)[1], 16) > 128, explain(done)
    assert out[-1] == "after: 9 5"


def test_faults_nesting_to_the_stack_edge_end_the_same_way(dune_build):
    done, count = both_ways(dune_build, "edge")
    assert done.returncode == 128 + 11, explain(done)
    depth = len(lines(done))
    assert depth > 2 and count == depth, explain(done)   # the last frame is the VMM's refusal
    assert any("it is full" in line for line in crash_report(done)), explain(done)


def test_a_trapped_exception_is_delivered_natively(dune_build):
    done, count = both_ways(dune_build, "vector")
    out = lines(done)
    assert count == 1 and out[-1] == "after ud2", explain(done)
    assert "rax 0x77" in out[2] and out[4].startswith("  kind 1 vector 6 "), explain(done)


def test_fpu_and_sse_state_survive_a_native_upcall(dune_build):
    done, count = both_ways(dune_build, "fpu")
    assert count == 1 and lines(done) == ["xmm registers preserved, mxcsr 0x1f80"], explain(done)


def test_a_handler_of_user_code_faults_then_ends_the_run(dune_build):
    done, count = both_ways(dune_build, "user")
    out = lines(done)
    assert count == 1, explain(done)      # the program's fault; user code's call is Python's
    assert out[0] == "user code's system call 60" and out[-1] == "jump_to_user returned 7, page 3"
