"""``kvmdune bench exits``' guests do what the bench says they do: each way of
leaving guest CPL3 for the VMM is taken once per loop turn, with no fault delivered
on the way and the guest's registers, CS and RFLAGS intact (checked by the bench's
own ``_check_guest``, which raises otherwise). Timings are never asserted."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kvmdune.bench import exits

pytestmark = pytest.mark.kvm

FEW_EXITS = 20


@pytest.fixture(scope="module")
def exit_loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The C loop, built into a private cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield exits._load_exit_loop()
    finally:
        if old is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = old


def _way(kind_name: str) -> exits.Way:
    return next(way for way in exits.WAYS if way.name.startswith(kind_name))


@pytest.mark.parametrize("name", ["today", "MMIO store", "`out` at CPL3, TSS", "floor"])
def test_way_is_taken_once_per_turn_with_the_guest_intact(exit_loop, name):
    outcome = exits.measure_once(_way(name), FEW_EXITS, exit_loop)
    assert not isinstance(outcome, str), outcome
    cpu_us, wall_us = outcome
    assert cpu_us > 0 and wall_us > 0


@pytest.mark.software_kvm
def test_iopl_3_is_refused_with_a_general_protection_fault_on_software_kvm(exit_loop):
    """kvm_pvm drops IOPL from the flags user code runs with: `out` faults (#GP)."""
    outcome = exits.measure_once(_way("`out` at CPL3, IOPL"), FEW_EXITS, exit_loop)
    assert isinstance(outcome, str) and "#GP" in outcome, outcome
