"""Shared test setup: the ``kvm`` marker gate, and the platform markers.

Tests marked ``kvm`` run real guest code on /dev/kvm. Where KVM is unusable they
skip with the reason, except when KVMDUNE_REQUIRE_KVM=1 (CI): then they fail.

Tests marked ``hardware_kvm`` describe hardware KVM (VT-x, SVM: ``syscall`` enters
CPL0, CPL0 code runs unemulated); tests marked ``software_kvm`` describe software KVM
(kvm_pvm: ``syscall`` stays at CPL3, host writes to page tables need a host-side
invalidation). Each skips on the other platform, except that with
KVMDUNE_REQUIRE_HARDWARE_KVM=1 (scripts/test-on-svm) a hardware test fails instead.
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


PLATFORM_MARKERS = {
    "hardware_kvm": "describes hardware KVM (VT-x, SVM); skipped on software KVM",
    "software_kvm": "describes software KVM (kvm_pvm); skipped on hardware KVM",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in PLATFORM_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


@functools.lru_cache(maxsize=1)
def platform_kind() -> str:
    from kvmdune.kvm import probe_platform

    return probe_platform().kind.value


@pytest.fixture(autouse=True)
def _platform_gate(request: pytest.FixtureRequest, _kvm_gate: None) -> None:
    kind = platform_kind()
    if request.node.get_closest_marker("hardware_kvm") is not None and kind == "software":
        if os.environ.get("KVMDUNE_REQUIRE_HARDWARE_KVM") == "1":
            pytest.fail("hardware KVM is required (KVMDUNE_REQUIRE_HARDWARE_KVM=1) "
                        "but /dev/kvm is software KVM")
        pytest.skip("describes hardware KVM; this is software KVM")
    if request.node.get_closest_marker("software_kvm") is not None and kind != "software":
        pytest.skip(f"describes software KVM; this is hardware KVM ({kind})")


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
