"""``kvmdune bench dune`` still runs (a smoke test with tiny sizes; no timing is
asserted): every row has kvmdune's, the floor's and Linux's figures, in both
sections (page tables, the plugin sandbox)."""

from __future__ import annotations

import pytest

from kvmdune.bench import dune, dune_plugin

pytestmark = pytest.mark.kvm


def test_bench_dune_quick_reports_every_row():
    rows = dune.run_dune_bench(samples=1, quick=True)
    assert len(rows) == 6
    assert all(row.kvmdune_us > 0 and row.floor_us > 0 and row.linux_us > 0 for row in rows)
    assert "kvmdune_vm_clear_bits" in dune.format_table(rows)


def test_bench_dune_plugin_section_reports_both_costs():
    rows = dune_plugin.run_plugin_bench(samples=1, quick=True)
    assert [len(row.linux_us) for row in rows] == [2, 2]
    assert all(row.kvmdune_us > 0 and row.floor_us > 0 for row in rows)
    assert all(cost > 0 for row in rows for cost in row.linux_us.values())
    table = dune_plugin.format_table(rows)
    assert "seccomp user-notification round trip" in table and "ptrace" in table


def test_trap_phases_reports_every_phase(tmp_path):
    """The diagnosis of the Appel & Li trap (``dune_vm trap-phases``): each phase's
    median and 90th percentile, all measured (the handler ran every time)."""
    binary = dune.build_guest(tmp_path)
    result = dune.guest_results(dune.run_guest, binary, 1, "trap-phases", 50)
    for phase in ("protect", "fault_to_handler", "unprotect", "return_and_retry"):
        assert 0 < result[f"{phase}_ns"] <= result[f"{phase}_p90_ns"]
