"""The fast system-call path on a machine with more runnable threads than cores: a
guest whose serving thread cannot run still makes progress (its vCPU's thread serves
the calls natively, in direct spells without the thread), and guests running
several at once beside a CPU hog get exactly the native answers. Behaviour only:
nothing here asserts a timing (``kvmdune bench load`` measures)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from .conftest import run_dune, run_native, vmm_env

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True
#: Guests at once in the concurrency test: twice the cores of the machine it is for.
CONCURRENT_GUESTS = 4
BLOCKS = 1024

#: A VMM like ``python -m kvmdune run`` whose fast-path server thread is made unable
#: to run beside the guest: every thread of the VMM pinned to one CPU, the server's
#: at SCHED_IDLE (it gets the CPU only while the vCPU's thread does not want it).
#: With "restore", once a direct spell has begun the server gets its CPUs and its
#: policy back (the vCPU's thread stays pinned), and the report says how many calls
#: the thread (not the vCPU's thread) had served then. The server's counters are written to the report.
_STARVED_SERVER_VMM = """
import json, os, sys, threading, time
from kvmdune.linux import fastpath
from kvmdune.linux.runner import run_command

def threads():
    return set(os.listdir("/proc/self/task"))

def by_thread(stats):
    return stats["fast"] + stats["denied"] - stats["served_by_vmm_thread"]

servers, restored, cpus = [], {}, os.sched_getaffinity(0)
starved = []

def starve(before):
    # This (the vCPU's) thread and those made since before (the server's) on one
    # CPU, those at SCHED_IDLE.
    cpu = min(cpus)
    os.sched_setaffinity(0, {cpu})
    starved[:] = [int(tid) for tid in threads() - before]
    for tid in starved:
        os.sched_setaffinity(tid, {cpu})
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))

def restore(server):
    while server.stats()["direct_spells"] == 0:
        time.sleep(0.001)
    for tid in starved:
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(tid, cpus)
    restored["by_thread"] = by_thread(server.stats())

real_start = fastpath.start
def start(proc, option=None):
    before = threads()
    server = real_start(proc, option)
    servers.append(server)
    if server is not None:
        starve(before)
        if sys.argv[1] == "restore":
            threading.Thread(target=restore, args=(server,), daemon=True).start()
    return server

# A call that changes per-thread state replaces the server's thread (fastpath.py);
# it is made only where the VMM's thread may use every CPU: starved again after.
real_replace = fastpath.FastPath.thread_state_changed
def replace(self):
    os.sched_setaffinity(0, cpus)
    before = threads()
    real_replace(self)
    if not restored:
        starve(before)
fastpath.FastPath.thread_state_changed = replace
fastpath.start = start
status = run_command(sys.argv[3:])
with open(sys.argv[2], "w") as report:
    json.dump({"status": status, "restored": restored,
               "servers": [None if s is None else s.stats() for s in servers]}, report)
"""


def _starved(mode: str, argv: list[str], report, extra_env: dict | None = None) -> dict:
    result = subprocess.run([sys.executable, "-c", _STARVED_SERVER_VMM, mode, str(report),
                             *argv], capture_output=True, timeout=300,
                            env=vmm_env(dict(os.environ) | (extra_env or {})))
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    seen = json.loads(report.read_text())
    assert seen["status"] == 0
    return seen


def _data(tmp_path) -> str:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(512 * BLOCKS))
    return str(data)


@pytest.mark.parametrize("native_waits", [True, False], ids=["native-waits", "python-waits"])
def test_guest_progresses_while_the_serving_thread_cannot_run(tmp_path, syscall_path,
                                                               native_waits):
    """Every call of a dd of 1,024 blocks is answered although the serving thread
    never gets the CPU while the guest wants it: the vCPU's thread serves them
    natively, and the server stops spinning and being woken (a direct spell). The
    stub's wait exits that brings are answered in a native run loop
    (native/waitrunner.c), or by Python's with KVMDUNE_NATIVE_WAITS=0: the same
    bytes either way."""
    data, copy = _data(tmp_path), tmp_path / "copy"
    seen = _starved("starve", ["busybox", "dd", f"if={data}", f"of={copy}", "bs=512"],
                    tmp_path / "report.json",
                    {"KVMDUNE_NATIVE_WAITS": "1" if native_waits else "0"})
    assert copy.read_bytes() == open(data, "rb").read()
    if syscall_path == "slow":
        assert seen["servers"] == [None]
        return
    stats = seen["servers"][0]
    assert stats is not None, "the fast path did not start"
    assert stats["fast"] >= 2 * BLOCKS, stats                # served natively ...
    assert stats["served_by_vmm_thread"] >= BLOCKS, stats    # ... mostly by the vCPU's
    assert stats["direct_spells"] >= 1, stats                # and without the thread
    if native_waits:                                         # exits without Python
        assert stats["native_waits"] >= BLOCKS, stats
    else:
        assert stats["native_waits"] == 0, stats


@contextlib.contextmanager
def _cpu_hog():
    """A busy-looping process per core, killed on the way out."""
    hogs = [subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"], start_new_session=True)
            for _ in os.sched_getaffinity(0)]
    try:
        yield
    finally:
        for hog in hogs:
            os.killpg(hog.pid, signal.SIGKILL)
            hog.wait()


def test_concurrent_guests_beside_a_cpu_hog_get_native_answers(compiled, tmp_path):
    """Four guests at once beside a busy loop per core (more runnable threads than
    cores: spins time out, threads are descheduled mid-call, spells begin and end)
    each print what the program prints natively and copy a file exactly."""
    program = [compiled[("fastcalls", "static")]]
    native = run_native(program)
    assert native.returncode == 0
    data = _data(tmp_path)
    with _cpu_hog():
        guests = []
        for index in range(CONCURRENT_GUESTS):
            copy = tmp_path / f"copy{index}"
            script = (f"{program[0]} && busybox dd if={data} of={copy} bs=512 2>/dev/null")
            guests.append((copy, subprocess.Popen(
                [sys.executable, "-m", "kvmdune", "run", "--", "busybox", "sh", "-c", script],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=vmm_env(dict(os.environ)))))
        outputs = [(copy, *guest.communicate(timeout=600), guest.returncode)
                   for copy, guest in guests]
    for copy, stdout, stderr, status in outputs:
        assert status == 0, stderr.decode(errors="replace")[-3000:]
        assert stdout == native.stdout
        assert copy.read_bytes() == open(data, "rb").read()


def test_the_thread_serves_again_after_a_spell(tmp_path, syscall_path):
    """Direct spells do not switch the thread off for good: once it can run again,
    a spell ends and the thread answers calls once more."""
    if syscall_path == "slow":
        pytest.skip("no serving thread on the slow path")
    blocks = 20 * BLOCKS
    seen = _starved("restore", ["busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=512",
                                f"count={blocks}"], tmp_path / "report.json")
    stats = seen["servers"][0]
    assert stats["direct_spells"] >= 1 and "by_thread" in seen["restored"], seen
    by_thread = stats["fast"] + stats["denied"] - stats["served_by_vmm_thread"]
    assert by_thread > seen["restored"]["by_thread"], seen
