"""Acceptance setup: C programs compiled here, static, static-pie and dynamic."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

PROGRAMS = pathlib.Path(__file__).parent / "programs"
LINKS = {"static": ["-static"], "static-pie": ["-static-pie"], "dynamic": []}


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> dict[tuple[str, str], str]:
    out = tmp_path_factory.mktemp("programs")
    binaries = {}
    for source in sorted(PROGRAMS.glob("*.c")):
        for link, flags in LINKS.items():
            target = out / f"{source.stem}-{link}"
            subprocess.run(["gcc", "-O1", "-o", str(target), str(source), *flags], check=True)
            binaries[(source.stem, link)] = str(target)
    return binaries


def run_native(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=120, **kwargs)


def run_dune(argv, *options, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmdune", "run", *options, "--", *argv],
                          capture_output=True, timeout=300, **kwargs)
