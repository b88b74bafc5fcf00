"""The benchmark scripts still run (smoke tests with tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kvm


def test_bench_core_quick_reports_every_row():
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "core", "--quick",
                             "--samples", "1", "--json"], capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    rows = json.loads(result.stdout)
    assert len(rows) == 6
    assert all(row["kvmdune_us"] > 0 and row["baseline_us"] > 0 for row in rows)


def test_dirty_round_is_exact():
    from kvmdune.bench.core import dirty_round
    from kvmdune.machine import Machine

    with Machine(256 << 20) as machine:
        assert dirty_round(machine, 32 << 20, 64).correct


def test_bench_threads_quick_reports_every_row():
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "threads", "--quick",
                             "--samples", "1", "--json"], capture_output=True, timeout=900)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    rows = json.loads(result.stdout)
    names = [row["name"] for row in rows]
    assert names[:3] == ["thread create+join", "condvar ping-pong round trip",
                         "integer kernel, 2 threads (in-program)"], names
    assert all(row["native"] > 0 and row["dune"] > 0 for row in rows)


def _bench_run(*options: str) -> subprocess.CompletedProcess:
    """``kvmdune bench run`` with its own resident servers, ended afterwards."""
    import pathlib
    import tempfile

    # Short: a socket's path must fit in sun_path (108 bytes).
    socket_dir = pathlib.Path(tempfile.mkdtemp(prefix="kvd-", dir="/tmp"))
    env = dict(os.environ, KVMDUNE_RESIDENT_DIR=str(socket_dir))
    try:
        return subprocess.run([sys.executable, "-m", "kvmdune", "bench", "run", *options],
                              capture_output=True, timeout=600, env=env)
    finally:
        log = socket_dir / "server.log"
        for pid in re.findall(rb"\(pid (\d+)\)", log.read_bytes() if log.exists() else b""):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass        # a session's server leaves with its session
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_bench_run_startup_reports_both_paths():
    """Every way is timed (each run must succeed); the verdicts are not asserted."""
    result = _bench_run("--startup", "--samples", "1")
    assert result.returncode in (0, 1), result.stderr.decode()[-2000:]
    ways = [line.split("  ")[0] for line in result.stdout.decode().splitlines()[2:]]
    assert ways == ["native /bin/true", "kvmdune run (resident)", "kvmdune run (in-process)",
                    "kvmdune sandbox (resident)", "kvmdune sandbox (in-process)",
                    "kvmdune run (resident, tty)", "kvmdune sandbox (resident, tty)"]


def test_bench_run_only_times_the_chosen_rows_through_the_client():
    """--only picks rows by name; each is timed natively and through the native
    client (the resident path), with the load average beside."""
    result = _bench_run("--quick", "--samples", "1", "--json", "--only", "int/memory",
                        "--only", "bzip2")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"kvmdune run: the resident path" in result.stderr
    rows = json.loads(result.stdout)
    assert [row["workload"] for row in rows] == ["C int/memory kernel, 128 MB",
                                                 "bzip2 -9 of 4 MB"]
    assert all(row["native_s"] > 0 and row["dune_s"] > 0 for row in rows)
    assert all(0 <= low <= high for low, high in (row["load"] for row in rows))


def test_bench_sthreads_quick_reports_every_row():
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "sthreads", "--quick",
                             "--samples", "1", "--json"], capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    rows = json.loads(result.stdout)
    assert [(row["name"], row["where"]) for row in rows] == [
        ("fork+wait", "native"), ("pthread_create+join", "native"),
        ("pthread_create+join", "kvmdune"), ("sthread fresh", "kvmdune"),
        ("sthread recycled", "kvmdune")]
    assert all(row["us"] > 0 and set(row["ratios"]) == {"fork+wait", "pthread_create+join"}
               for row in rows)


def test_bench_mmcalls_quick_reports_every_case():
    """Each memory call case runs natively and under kvmdune with no error (the
    program checks every call's result), and the VMM's CPU times
    (KVMDUNE_PHASE_CLOCK=thread) come back for every case."""
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "mmcalls", "--quick",
                             "--samples", "1", "--json"], capture_output=True, timeout=900)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    rows = json.loads(result.stdout)
    assert [row["case"] for row in rows] == ["anon", "anon-big", "mprotect", "brk", "file"]
    # The CPU figures are differences with a run of none: in a quick run, noise.
    assert all(row["native_us"] > 0 and row["kvmdune_us"] > 0 and row["vmm_cpu_us"] is not None
               and row["handler_cpu_us"] is not None for row in rows), rows


def test_bench_phases_reports_every_child_and_phase():
    """Every forked VMM process writes its phases (KVMDUNE_PHASE_TIMES): the loop's 3
    children and the $(seq) subshell, each with its fork and exec phases."""
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "phases", "--loops",
                             "3", "--samples", "1"], capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    text = result.stdout.decode()
    assert "4 forked children" in text, text
    for phase in ("fork.child.vm", "execve.load", "execve.teardown", "call.execve"):
        assert re.search(rf"^{re.escape(phase)} .* 4/4$", text, re.M), (phase, text)
    assert re.search(r"^fork\.parent\.host_fork .* 4$", text, re.M), text


def test_thread_clock_phases_spanning_a_fork_are_timed_from_it():
    """A thread's CPU clock starts again at zero in a forked child: a clone timed from
    the parent's start came out negative there. The child times it from the fork."""
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "phases", "--loops",
                             "3", "--samples", "1"], capture_output=True, timeout=600,
                            env={**os.environ, "KVMDUNE_PHASE_CLOCK": "thread"})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    text = result.stdout.decode()
    clone = re.search(r"^call\.clone +(\S+) +(\S+) +4/4$", text, re.M)
    assert clone, text
    assert float(clone.group(1)) >= 0 and float(clone.group(2)) >= 0, text


def test_a_timed_run_past_its_timeout_is_killed():
    """time_command notices a run's end through its pidfd (Popen.wait with a timeout
    polls, seeing an end up to 50 ms late); past the timeout the run is killed."""
    import subprocess
    import time

    from kvmdune.bench.run import time_command

    elapsed, status = time_command(["sh", "-c", "exit 3"], timeout=60)
    assert status == 3
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        time_command(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - started < 20           # killed, not waited for
