"""rt_sigaction as real programs see it, on the dispositions' one store (native,
shared by the fast path's server and the VMM's delivery): a C program probing its
edges (Linux's order of checks, EFAULT and EINVAL, the old action written back as
Linux does, pointers straddling pages), handlers installed by natively served calls
then taking signals the VMM delivers (a raise, a kill from another process,
SIGCHLD), SA_RESETHAND, a handler without SA_RESTORER, a pending signal dropped when
its action becomes ignored, and what fork and execve keep, matches its native run
byte for byte on every path; with the fast path on, the calls are served natively,
under the sandbox too."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from .conftest import run_native, assert_served_natively, vmm_env

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True

ROUNDS = 1000
#: rt_sigaction calls in one round of ``sigactions loop``: a query, a change that
#: installs a handler, a change back to SIG_DFL (SIGUSR1's default is not to ignore).
CALLS_PER_ROUND = 3


def run_dune(argv, *options, vmm: str = "run") -> subprocess.CompletedProcess:
    """``kvmdune VMM options -- argv`` on this test's system-call path."""
    return subprocess.run([sys.executable, "-m", "kvmdune", vmm, *options, "--", *argv],
                          capture_output=True, timeout=300, env=vmm_env(None))


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_sigaction_edges_and_delivery_match_native(compiled, tmp_path, link):
    program = compiled[("sigactions", link)]
    native = run_native([program, str(tmp_path)])
    dune = run_dune([program, str(tmp_path)])
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    # The cases that differed before the store followed Linux (the output is native's).
    for line in (b"signal 0, bad act: EFAULT",
                 b"after bad old: handler handler flags 0x4000000",
                 b"read back: handler handler flags 0xdc000807 restorer 0x1234 "
                 b"mask 0xfffffffffffbfeff",
                 b"then: handler DFL flags 0x84000000",
                 b"after its action became DFL: 0",
                 b"without SA_RESTORER: killed by signal 11",
                 b"after fork, signal 10: handler handler flags 0x1c000000",
                 b"after exec, signal 12: handler IGN flags 0 restorer 0 mask 0"):
        assert line in dune.stdout
    assert b"a handler ran" not in dune.stdout


@pytest.fixture
def reachable_program(compiled):
    """The program where the sandbox's user (nobody) can run it (pytest's temporary
    directories are root's alone)."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="kvmdune-sigactions-", dir="/tmp"))
    directory.chmod(0o755)
    program = directory / "sigactions"
    shutil.copy(compiled[("sigactions", "static")], program)
    program.chmod(0o755)
    yield str(program)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("vmm", ["run", "sandbox"])
def test_rt_sigaction_is_served_natively(reachable_program, syscall_path, vmm):
    program = reachable_program
    options = ["--syscall-stats"] + (["--quiet", "--allow-exec", program]
                                     if vmm == "sandbox" else [])
    dune = run_dune([program, "loop", str(ROUNDS)], *options, vmm=vmm)
    # The handler a natively served call installed is the one the VMM delivers to.
    assert dune.stdout == f"{ROUNDS} rounds, handler ran 1 time(s)\n".encode(), \
        dune.stderr.decode(errors="replace")[-2000:]
    assert dune.returncode == 0
    assert_served_natively(dune.stderr, ROUNDS * CALLS_PER_ROUND, syscall_path)
