"""poll and ppoll as real programs see them: a C program probing their edges
(descriptors ready or not, not open, negative, none; RLIMIT_NOFILE; unmapped arrays
and timeouts; zero, null, nonzero and invalid timeouts; a signal mask; a wait a
child's write ends) matches its native run byte for byte on every path; with the
fast path on, polls that find something ready (or do not wait) are served natively,
under ``run`` and the sandbox."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from .conftest import run_native, vmm_env

pytestmark = pytest.mark.kvm

#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True

ROUNDS = 1000
VMM_SERVED = re.compile(rb"served by the VMM: ([^\n]*)")


def run_dune(argv, *options, vmm: str = "run") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmdune", vmm, *options, "--", *argv],
                          capture_output=True, timeout=300, env=vmm_env(None))


def test_polls_match_native(compiled):
    program = compiled[("polls", "static")]
    native = run_native([program])
    dune = run_dune([program])
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    assert b"four, zero timeout: 2 [3 0x1 0] [4 0x4 0x4] [50 0x1 0x20] [-1 0x1 0]\n" \
        in dune.stdout


@pytest.fixture
def reachable_program(compiled):
    """The program where the sandbox's user (nobody) can run it (pytest's directory
    is root's alone)."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="kvmdune-polls-", dir="/tmp"))
    directory.chmod(0o755)
    program = directory / "polls"
    shutil.copy(compiled[("polls", "static")], program)
    yield str(program)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("vmm", ["run", "sandbox"])
def test_ready_polls_are_served_natively(reachable_program, syscall_path, vmm):
    program = reachable_program
    options = ["--quiet", "--allow-exec", program] if vmm == "sandbox" else []
    dune = run_dune([program, "loop", str(ROUNDS)], *options, "--syscall-stats", vmm=vmm)
    assert dune.returncode == 0 and dune.stdout == f"{ROUNDS} rounds\n".encode(), \
        dune.stderr.decode(errors="replace")[-2000:]
    if syscall_path == "slow":
        assert b"the fast path is off" in dune.stderr
        return
    served = VMM_SERVED.search(dune.stderr)
    assert served, dune.stderr.decode(errors="replace")[-2000:]
    names = dict(item.rsplit(" ", 1) for item in served.group(1).decode().split(", "))
    # Two polls a round: all but a few natively.
    for call in ("poll", "ppoll"):
        assert int(names.get(call, 0)) < ROUNDS // 10, names
