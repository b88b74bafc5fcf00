"""Hostile arguments to the hypercalls of entry, traps and user code (ops 0..15),
from a C program that reads them from stdin (programs/hcfuzz.c): every call gets a
result (0 or -errno), or user code the program started ends it with a crash report;
the VMM never fails (no internal error, no traceback), and the program's own state
stays usable: a well-formed call after the hostile ones still works."""

from __future__ import annotations

import signal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from .conftest import PROGRAMS, explain, run_dune

pytestmark = pytest.mark.kvm

FUZZ = PROGRAMS / "hcfuzz.c"
#: Ops this part of the API owns: 0..6 and the unused numbers up to 15.
OPS = st.integers(min_value=0, max_value=15)
SYMBOLS = "SHCRGTN"
NUMBERS = st.sampled_from([0, 1, 2, 3, 14, 200, 4096, 8192, 65536, -1, -4096, 1 << 31,
                           1 << 47, (1 << 64) - 1, 1 << 63, 0xFFFF_FFFF_8000_0000,
                           0x7FFF_FFFF_D000, 0x00D0_0000]) | st.integers(0, (1 << 64) - 1)
POINTERS = st.builds(lambda symbol, offset: f"{symbol}{offset:+d}", st.sampled_from(SYMBOLS),
                     st.sampled_from([0, 8, 64, -64, 4096, -4096, 4095, 1 << 20, -(1 << 20)]))
ARGUMENT = NUMBERS.map(str) | POINTERS
CALL = st.tuples(OPS, st.lists(ARGUMENT, min_size=6, max_size=6))
#: How user code the fuzz happened to start may end: a crash report and a signal.
CRASH_STATUSES = {128 + s for s in (signal.SIGSEGV, signal.SIGSYS, signal.SIGILL,
                                    signal.SIGFPE, signal.SIGBUS, signal.SIGTRAP)}
PROBE = (0, ["0"] * 6)


def _script(calls) -> bytes:
    return "".join(f"{op} {' '.join(args)}\n" for op, args in calls).encode()


@pytest.fixture(scope="module")
def fuzz_program(dune_build):
    return dune_build(FUZZ)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(CALL, min_size=1, max_size=16))
@example(calls=[(4, ["T+0", "0", "0", "0", "0", "0"]), (4, ["N+0", "0", "0", "0", "0", "0"]),
                (4, ["G+0", "0", "0", "0", "0", "0"]), (6, ["S+0", "0", "0", "0", "0", "0"]),
                (5, ["7", "0", "0", "0", "0", "0"])])
@example(calls=[(2, ["T+0", "T+0", "8192", "0", "0", "0"]),
                (2, ["C+0", "G+0", "8192", "0", "0", "0"]),
                (2, ["G+0", "S+0", "8192", "0", "0", "0"]),
                (2, ["C+0", "R+0", "4096", "0", "0", "0"]),
                (2, ["C+0", "N+0", "65536", "0", "0", "0"]),
                (2, ["C+0", "H+0", "18446744073709551615", "0", "0", "0"])])
@example(calls=[(3, ["2", "9", "1", "0", "0", "0"]), (3, ["1", "14", "1", "0", "0", "0"]),
                (3, ["2", "64", "1", "0", "0", "0"]), (3, ["99", "0", "1", "0", "0", "0"]),
                (1, ["0", "0", "0", "0", "0", "0"])])
def test_hostile_hypercall_arguments_leave_the_vmm_intact(fuzz_program, calls):
    done = run_dune([fuzz_program], input=_script([*calls, PROBE]))
    report = done.stderr.decode(errors="replace")
    assert "internal error" not in report and "Traceback" not in report, explain(done)
    out = done.stdout.decode().splitlines()
    if done.returncode == 0:
        assert len(out) == len(calls) + 2 and out[-1] == "done", explain(done)
        assert out[-2] == "= 1", "the probe after the hostile calls still answers"
        for line in out[:-1]:
            result = int(line.removeprefix("= "))
            assert result <= 0 or result < 1 << 47, line    # 0, -errno, pgroot, version
        return
    # Only user code (JUMP_TO_USER) ends the program, and says why.
    assert done.returncode in CRASH_STATUSES, explain(done)
    assert "killed by" in report and "rip=" in report, explain(done)
    assert any(op == 4 for op, _args in calls), explain(done)
