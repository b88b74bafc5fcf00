"""The benchmark scripts still run (smoke tests with tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
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
