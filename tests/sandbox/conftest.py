"""Sandbox setup: the system-call path a test runs on, and the containment corpus run
once per path for the whole session (each run is ~35 sandboxes, about a minute)."""

from __future__ import annotations

import os

import pytest

#: The variables the runner reads at start; ``kvmdune sandbox`` subprocesses inherit them.
FAST_SYSCALLS = "KVMDUNE_FAST_SYSCALLS"
PATCH_SITES = "KVMDUNE_PATCH_SITES"
#: Patched call sites on the fast path, the fast path through `syscall`, every call an exit.
SYSCALL_PATHS = {"patched": {FAST_SYSCALLS: "1", PATCH_SITES: "1"},
                 "fast": {FAST_SYSCALLS: "1", PATCH_SITES: "0"},
                 "slow": {FAST_SYSCALLS: "0", PATCH_SITES: "0"}}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that uses ``syscall_path`` runs on the fast and the slow path, and also
    with patched call sites in modules that set ``PATCHED_PATH`` (the containment
    corpus: patching changes how calls enter the ring, not what the gate decides,
    which the fast path's runs cover everywhere)."""
    if "syscall_path" in metafunc.fixturenames:
        paths = [name for name in SYSCALL_PATHS
                 if name != "patched" or getattr(metafunc.module, "PATCHED_PATH", False)]
        metafunc.parametrize("syscall_path", paths, indirect=True)


@pytest.fixture
def syscall_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sets the path's variables for this test and the sandboxes it starts."""
    for variable, value in SYSCALL_PATHS[request.param].items():
        monkeypatch.setenv(variable, value)
    return request.param


def environment_for(path: str) -> dict[str, str]:
    return {**os.environ, **SYSCALL_PATHS[path]}


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
