"""The page-table examples shipped in kvmdune/dune/examples, built with `kvmdune
config`'s flags and run under `kvmdune run`: each prints what it checked; the test
reads it."""

from __future__ import annotations

import pytest

from .vm_support import example, run_dune, syscall_path  # noqa: F401

pytestmark = pytest.mark.kvm


def test_dirty_page_tracking_finds_exactly_the_pages_written(example, syscall_path):
    result = run_dune([example("dirty_pages")])
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert len(lines) == 8
    for how in ("page walk", "batched"):
        rounds = [line for line in lines if line.startswith(how + " round")]
        assert len(rounds) == 4 and all(line.endswith("exact") for line in rounds)
        written = [int(line.split(": ")[1].split()[0]) for line in rounds]
        assert all(count > 0 for count in written)


def test_appel_li_traps_each_written_page_once(example, syscall_path):
    result = run_dune([example("appel_li")])
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert len(lines) == 3
    for line in lines:
        written, traps = int(line.split()[2]), int(line.split(", ")[1].split()[0])
        assert written == traps > 0
        assert "each written page trapped once" in line and line.endswith("entries agree")
