"""Shared test setup: the ``kvm`` marker gate.

Tests marked ``kvm`` run real guest code on /dev/kvm. Where KVM is unusable they
skip with the reason, except when KVMDUNE_REQUIRE_KVM=1 (CI): then they fail.
"""

from __future__ import annotations

import functools
import os

import pytest


@functools.lru_cache(maxsize=1)
def kvm_unavailable_reason() -> str | None:
    from kvmdune.kvm import Kvm, KvmError

    try:
        with Kvm() as kvm:
            kvm.require_capabilities()
    except KvmError as exc:
        return str(exc)
    return None


@pytest.fixture(autouse=True)
def _kvm_gate(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("kvm") is None:
        return
    reason = kvm_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("KVMDUNE_REQUIRE_KVM") == "1":
        pytest.fail(f"KVM is required (KVMDUNE_REQUIRE_KVM=1) but unusable: {reason}")
    pytest.skip(f"KVM unusable: {reason}")
