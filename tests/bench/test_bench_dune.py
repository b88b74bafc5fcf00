"""``kvmdune bench dune`` still runs (a smoke test with tiny sizes; no timing is
asserted): every row has kvmdune's, the floor's and Linux's figure."""

from __future__ import annotations

import pytest

from kvmdune.bench import dune

pytestmark = pytest.mark.kvm


def test_bench_dune_quick_reports_every_row():
    rows = dune.run_dune_bench(samples=1, quick=True)
    assert len(rows) == 6
    assert all(row.kvmdune_us > 0 and row.floor_us > 0 and row.linux_us > 0 for row in rows)
    assert "kvmdune_vm_clear_bits" in dune.format_table(rows)
