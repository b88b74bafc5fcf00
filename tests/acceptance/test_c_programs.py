"""C programs compiled here, run natively and under ``kvmdune run``: stdout and exit
status must match byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import LINKS, run_dune, run_in_scratch_dirs, run_native, vmm_env

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True
ENV = {**os.environ, "KVMDUNE_TEST_VALUE": "forty two"}


def assert_same(native, dune):
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode, dune.stderr.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("link", LINKS)
def test_hello_argv_env_stderr(compiled, link):
    argv = [compiled[("hello", link)], "one", "two words", ""]
    native, dune = run_native(argv, env=ENV), run_dune(argv, env=ENV)
    assert_same(native, dune)
    assert b"this goes to stderr" in dune.stderr


@pytest.mark.parametrize("link", LINKS)
def test_file_io_in_a_temp_dir(compiled, link, tmp_path):
    native, dune = run_in_scratch_dirs(compiled[("fileio", link)], tmp_path)
    assert_same(native, dune)
    assert sorted(os.listdir(tmp_path / "dune")) == sorted(os.listdir(tmp_path / "native"))


@pytest.mark.parametrize("program", ["alloc", "tls", "misc", "signals", "masked_waits", "remap_file",
                                     "mremap_ranges", "library_whole", "net", "pkeys",
                                     "address_limits", "shared_grow"])
@pytest.mark.parametrize("link", LINKS)
def test_programs_match_native(compiled, program, link):
    argv = [compiled[(program, link)]]
    assert_same(run_native(argv), run_dune(argv))


@pytest.mark.parametrize("link", LINKS)
def test_posix_locks_survive_the_vmms_own_descriptors(compiled, link, tmp_path):
    """The guest's POSIX record locks are the VMM process's: no descriptor the VMM
    opens and closes for itself (a file opened again, a shared mapping's copy) may
    drop them, while the guest's own closes do, as on Linux."""
    native, dune = run_in_scratch_dirs(compiled[("posix_locks", link)], tmp_path)
    assert_same(native, dune)
    assert b"opened again: child sees: locked by parent" in dune.stdout


@pytest.mark.parametrize("link", LINKS)
def test_segfault_is_139_with_a_crash_report(compiled, link):
    dune = run_dune([compiled[("crash", link)], "segv"])
    assert dune.returncode == 139
    report = dune.stderr.decode()
    assert "SIGSEGV" in report and "rip=" in report and "code:" in report


@pytest.mark.parametrize("link", LINKS)
def test_abort_is_134(compiled, link):
    assert run_dune([compiled[("crash", link)], "abort"]).returncode == 134


@pytest.mark.parametrize("code", [0, 1, 42, 127, 128, 255, 256, 300])
def test_exit_codes(compiled, code):
    argv = [compiled[("crash", "static")], "exit", str(code)]
    assert_same(run_native(argv), run_dune(argv))


@pytest.mark.parametrize("link", LINKS)
def test_shared_mappings_reach_files_and_children(compiled, link, tmp_path):
    native = run_native([compiled[("shared", link)], str(tmp_path / "native.dat")])
    dune = run_dune([compiled[("shared", link)], str(tmp_path / "dune.dat")])
    assert_same(native, dune)
    assert (tmp_path / "dune.dat").read_bytes() == (tmp_path / "native.dat").read_bytes()


#: A VMM like ``python -m kvmdune run`` (the variable read at its start), reporting
#: whether the fast path started and what its native server served.
_REPORTING_VMM = """
import json, sys
from kvmdune.linux import fastpath
from kvmdune.linux.runner import run_command
servers = []
real_start = fastpath.start
def start(proc, option=None):
    servers.append(real_start(proc, option))
    return servers[-1]
fastpath.start = start
status = run_command(sys.argv[2:])
with open(sys.argv[1], "w") as report:
    json.dump({"status": status,
               "servers": [None if s is None else s.stats() for s in servers]}, report)
"""


def test_the_variable_selects_the_path(compiled, syscall_path, tmp_path):
    """The parametrization is not vacuous: with KVMDUNE_FAST_SYSCALLS=1 the native
    server serves file I/O without exits, with =0 no server starts."""
    report = tmp_path / "report.json"
    (tmp_path / "work").mkdir()
    result = subprocess.run([sys.executable, "-c", _REPORTING_VMM, str(report),
                             compiled[("fileio", "static")], str(tmp_path / "work")],
                            capture_output=True, timeout=120, env=vmm_env(dict(os.environ)))
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    seen = json.loads(report.read_text())
    assert seen["status"] == 0
    assert len(seen["servers"]) == 1
    if syscall_path != "slow":
        assert seen["servers"][0] is not None, "the fast path did not start"
        assert seen["servers"][0]["fast"] > 0, seen
    else:
        assert seen["servers"] == [None]


@pytest.mark.parametrize("link", LINKS)
def test_hostile_pointers_and_counted_results(compiled, link):
    """Bad pointers (small, kernel-half, non-canonical) to every call the VMM serves
    itself come back as Linux's errno, in Linux's order of checks; epoll_wait copies
    back only the events it returned; rt_sigtimedwait, get_mempolicy and mincore
    answer as Linux does. The program's last line is its own: the VMM never died."""
    argv = [compiled[("guestinput", link)]]
    native, dune = run_native(argv), run_dune(argv)
    assert native.stdout.endswith(b"the end\n")     # the program completes natively
    assert_same(native, dune)
    assert b"Traceback" not in dune.stderr and b"internal error" not in dune.stderr


@pytest.mark.parametrize("link", LINKS)
def test_routes_to_proc_self_reach_the_guests_own(compiled, link, tmp_path):
    """/proc/self reached without being named (a planted symlink, a directory
    descriptor of it, a relative path from it as the current directory) answers with
    the program's own descriptors, as on Linux: never the VMM's /dev/kvm, VM or vCPU
    descriptors, by open, stat, access, readlink or a listing."""
    argv = [compiled[("procroutes", link)], str(tmp_path)]
    native, dune = run_native(argv), run_dune(argv)
    assert native.stdout.endswith(b"the end\n")
    assert b'fd/9: read 3' in native.stdout          # the routes do reach a descriptor
    assert_same(native, dune)
