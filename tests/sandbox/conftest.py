"""Sandbox setup: the system-call path a test runs on, and the containment corpus run
once per path for the whole session (each run is ~35 sandboxes, about a minute)."""

from __future__ import annotations

import os

import pytest

#: The variable the runner reads at start; ``kvmdune sandbox`` subprocesses inherit it.
FAST_SYSCALLS = "KVMDUNE_FAST_SYSCALLS"
SYSCALL_PATHS = {"fast": "1", "slow": "0"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that uses ``syscall_path`` runs once per path."""
    if "syscall_path" in metafunc.fixturenames:
        metafunc.parametrize("syscall_path", list(SYSCALL_PATHS), indirect=True)


@pytest.fixture
def syscall_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sets KVMDUNE_FAST_SYSCALLS for this test and the sandboxes it starts."""
    monkeypatch.setenv(FAST_SYSCALLS, SYSCALL_PATHS[request.param])
    return request.param


def environment_for(path: str) -> dict[str, str]:
    return {**os.environ, FAST_SYSCALLS: SYSCALL_PATHS[path]}


@pytest.fixture(scope="session")
def hostile_corpus():
    """``hostile_corpus("fast")``: the corpus's outcomes on that path, run at most
    once per path in the session."""
    from kvmdune.sandbox.selftest import run_corpus

    runs: dict[str, list] = {}

    def outcomes(path: str) -> list:
        if path not in runs:
            runs[path] = run_corpus(env=environment_for(path))
        return runs[path]

    return outcomes


@pytest.fixture
def area():
    """The corpus's scratch tree: an allowed directory (world-writable: the sandbox
    runs as nobody) and a secret beside it."""
    import shutil

    from kvmdune.sandbox.selftest import prepare_area

    root, allowed, secret = prepare_area()
    yield allowed, secret
    shutil.rmtree(root, ignore_errors=True)
