"""The descriptor table's own calls (close, dup, dup2, dup3, fcntl, open, openat)
as real programs see them: a C program probing their edges (EBADF, EINVAL, EMFILE
at RLIMIT_NOFILE, dup2 onto itself, dup3 onto itself, lowest free number, closing
0-2, O_CLOEXEC across fork and exec, /proc/self/fd) matches its native run byte for
byte on every path; with the fast path on they are served natively, on the one
table the VMM uses too; and under the sandbox a denied path stays denied, while
opens beneath a read root are served natively."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from .conftest import run_in_scratch_dirs, vmm_env

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True

TABLE_CALLS = re.compile(rb"(\d+) of the native ones changed the descriptor table; "
                         rb"(\d+) calls reached the VMM in all")
ROUNDS = 500
#: Calls of one round of ``fdcalls loop`` that change the table: open, dup,
#: F_DUPFD_CLOEXEC, dup2 and four closes.
TABLE_CALLS_PER_ROUND = 8


def run_dune(argv, *options, vmm: str = "run", **kwargs) -> subprocess.CompletedProcess:
    """``kvmdune VMM options -- argv`` on this test's system-call path."""
    return subprocess.run([sys.executable, "-m", "kvmdune", vmm, *options, "--", *argv],
                          capture_output=True, timeout=300, env=vmm_env(None), **kwargs)


def test_descriptor_calls_match_native(compiled, tmp_path):
    native, dune = run_in_scratch_dirs(compiled[("fdcalls", "static")], tmp_path)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    assert b"dup3 same fd: -1 EINVAL" in dune.stdout
    assert b"after exec, the O_CLOEXEC one: -1 EBADF" in dune.stdout


def test_the_table_calls_are_served_natively(compiled, syscall_path):
    dune = run_dune([compiled[("fdcalls", "static")], "loop", str(ROUNDS)], "--syscall-stats")
    assert dune.returncode == 0 and dune.stdout == f"{ROUNDS} rounds\n".encode()
    if syscall_path == "slow":
        assert b"the fast path is off" in dune.stderr
        return
    found = TABLE_CALLS.search(dune.stderr)
    assert found, dune.stderr.decode(errors="replace")[-2000:]
    changed, reached_vmm = (int(n) for n in found.groups())
    # All but a few (the VMM at work on the process holds its lock) natively.
    assert changed >= ROUNDS * TABLE_CALLS_PER_ROUND * 9 // 10
    assert reached_vmm < ROUNDS


@pytest.fixture
def reachable_tmp():
    """A directory the sandbox's user (nobody) can reach (pytest's is root's alone)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="kvmdune-fd-calls-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_an_open_the_sandbox_denies_stays_denied(compiled, reachable_tmp, syscall_path):
    allowed, denied = reachable_tmp / "allowed", reachable_tmp / "denied"
    for directory, text in ((allowed, "in\n"), (denied, "out\n")):
        directory.mkdir(mode=0o755)
        (directory / "file").write_text(text)
        (directory / "file").chmod(0o644)
    program = allowed / "fdcalls"
    shutil.copy(compiled[("fdcalls", "static")], program)
    dune = run_dune(["busybox", "sh", "-c",
                     f"cat file; cat {denied}/file; cat ../denied/file; ./fdcalls loop 20"],
                    "--quiet", "--syscall-stats", "--allow-read", str(allowed),
                    "--allow-exec", str(program),
                    vmm="sandbox", cwd=allowed)
    assert dune.stdout == b"in\n20 rounds\n", dune.stderr.decode(errors="replace")[-2000:]
    assert dune.stderr.count(b"Permission denied") == 2
    if syscall_path != "slow":
        # The loop's opens of its directory resolve beneath the read root: served
        # natively with the rest of its table calls (the denied ones went to the gate).
        changed = max(int(found.group(1)) for found in TABLE_CALLS.finditer(dune.stderr))
        assert changed >= 20 * TABLE_CALLS_PER_ROUND * 9 // 10
