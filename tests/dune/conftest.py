"""Dune API tests: C programs compiled here against the library with the flags
``kvmdune config`` prints, run natively and under ``kvmdune run``."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

PROGRAMS = pathlib.Path(__file__).parent / "programs"
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "kvmdune" / "dune" / "examples"
#: The variable the runner reads at start; the VMM subprocesses inherit it.
FAST_SYSCALLS = "KVMDUNE_FAST_SYSCALLS"
SYSCALL_PATHS = {"fast": "1", "slow": "0"}


def config_flags() -> list[str]:
    """What ``kvmdune config --cflags --libs`` prints, as arguments."""
    done = subprocess.run([sys.executable, "-m", "kvmdune", "config", "--cflags", "--libs"],
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.fixture(scope="session")
def dune_build(tmp_path_factory):
    """Build a C program against the Dune API: ``dune_build(source, link="static")``
    -> the binary's path ("static", "static-pie" or "dynamic")."""
    out = tmp_path_factory.mktemp("dune-programs")
    flags = config_flags()
    built: dict[tuple[str, str], str] = {}
    links = {"static": ["-static"], "static-pie": ["-static-pie"], "dynamic": []}

    def build(source: pathlib.Path, link: str = "static") -> str:
        key = (str(source), link)
        if key not in built:
            target = out / f"{source.stem}-{link}"
            subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", str(target), str(source),
                            *links[link], *flags], check=True)
            built[key] = str(target)
        return built[key]
    return build


@pytest.fixture(params=list(SYSCALL_PATHS))
def syscall_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a hypercall reaches the VMM: through the fast path's call stub
    (handed back to the VMM) and by an exit for every call."""
    monkeypatch.setenv(FAST_SYSCALLS, SYSCALL_PATHS[request.param])
    return request.param


def run_dune(argv, *options, sandbox: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """``kvmdune run`` (or ``kvmdune sandbox``, its default strict policy) of argv."""
    command = "sandbox" if sandbox else "run"
    return subprocess.run([sys.executable, "-m", "kvmdune", command, *options, "--", *argv],
                          capture_output=True, timeout=120, **kwargs)


def run_native(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=120, **kwargs)


def lines(done: subprocess.CompletedProcess) -> list[str]:
    return done.stdout.decode().splitlines()


def explain(done: subprocess.CompletedProcess) -> str:
    return (f"status {done.returncode}\nstdout:\n{done.stdout.decode(errors='replace')}"
            f"\nstderr:\n{done.stderr.decode(errors='replace')[-3000:]}")
