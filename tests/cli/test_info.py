"""``kvmdune info`` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def kvmdune(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmdune", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def test_without_kvm_reports_unavailable_and_exits_1(tmp_path):
    result = kvmdune("info", "--json", env={"KVMDUNE_KVM_DEVICE": str(tmp_path / "none")})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["kvm"]["available"] is False
    assert report["platform"] is None
    assert "does not exist" in report["reason"]


def test_without_kvm_human_output_says_why(tmp_path):
    result = kvmdune("info", env={"KVMDUNE_KVM_DEVICE": str(tmp_path / "none")})
    assert result.returncode == 1
    assert "usable         no" in result.stdout and "hint:" in result.stdout


@pytest.mark.kvm
def test_json_report_with_measurements():
    result = kvmdune("info", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kvm"] == report["kvm"] | {"available": True, "api_version": 12}
    assert report["platform"] in ("vmx", "svm", "software")
    measured = report["measurements"]
    assert measured["exit_round_trip_us"] > 0 and measured["cpl0_slowdown"] > 0
    assert all(value for value in report["capabilities"].values())


def test_help_teaches():
    result = kvmdune("--help")
    assert result.returncode == 0 and "examples:" in result.stdout
    assert "info" in result.stdout
