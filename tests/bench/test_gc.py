"""``kvmdune bench gc`` in its short mode: every row there, the collector's heap right
after every run (the script fails otherwise), and bdwgc's dirty bits as expected on
each side. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvmdune.bench.gc import dirty_bit_implementation

pytestmark = pytest.mark.kvm

needs_libgc = pytest.mark.skipif(not Path("/usr/include/gc.h").exists(),
                                 reason="libgc-dev is not installed (scripts/setup installs it)")


@needs_libgc
def test_bench_gc_quick_reports_every_configuration():
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "gc", "--quick",
                             "--samples", "1", "--json"], capture_output=True, timeout=900)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    rows = json.loads(result.stdout)
    configurations = {(row["workload"], row["incremental"], row["where"]) for row in rows}
    assert configurations == {(workload, incremental, where)
                              for workload in ("trees", "mutate")
                              for incremental in (False, True)
                              for where in ("native", "kvmdune")}
    for row in rows:
        assert row["collections"] > 0 and row["runs"] == 1
        assert row["total_s"] > 0 and 0 < row["pause_mean_ms"] <= row["pause_max_ms"]
        if not row["incremental"]:
            assert row["dirty_bits"] == "-"
        elif row["where"] == "native":
            # This host kernel has no soft-dirty bits: bdwgc falls back to mprotect.
            assert row["dirty_bits"] == "mprotect"
        else:
            assert row["dirty_bits"] == "soft-dirty"


def test_bench_gc_table_is_printed():
    from kvmdune.bench.gc import GcRow, format_table

    rows = [GcRow("trees", incremental, where, 1.0 + incremental, 10, 1.0, 2.0,
                  "mprotect" if incremental else "-", 1)
            for incremental in (False, True) for where in ("native", "kvmdune")]
    table = format_table(rows)
    assert table.count("trees") >= 4 and "incremental vs stop-the-world" in table
    assert "1.00x" in table     # kvmdune vs native of the same configuration


@pytest.mark.parametrize("log, implementation", [
    ("Initializing mprotect virtual dirty bit implementation\nUsing soft-dirty bit feature\n",
     "soft-dirty"),
    ("Initializing mprotect virtual dirty bit implementation\n"
     "Soft-dirty bit is not supported by kernel\n", "mprotect"),
    ("nothing about dirty bits\n", "unknown"),
])
def test_dirty_bit_implementation_read_from_bdwgc_log(log, implementation):
    assert dirty_bit_implementation(log) == implementation
