"""What the Dune API's page-table tests share (imported by each test_vm_* module):
C programs (vm_programs/) built here against the API (dune.h and the library, with
``kvmdune config``'s flags, as a user builds them), run under ``kvmdune run`` on each
system-call path (fast: the call ring; slow: every call exits); the few that look
inside the VMM (a Python tool, the invariants) under vmm.py, the same VMM with two
test hooks."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

import kvmdune

PROGRAMS = pathlib.Path(__file__).parent / "vm_programs"
PACKAGE = pathlib.Path(kvmdune.__file__).parent
EXAMPLES = PACKAGE / "dune" / "examples"
REPOSITORY = PACKAGE.parent
FAST_SYSCALLS = "KVMDUNE_FAST_SYSCALLS"


def build_example(source: pathlib.Path, out: pathlib.Path) -> str:
    """A program as a user builds it: ``kvmdune config``'s flags (and vm_programs/
    for testdune.h)."""
    from kvmdune.dune import library

    target = out / source.stem
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-fno-stack-protector", "-static",
                    "-I", str(PROGRAMS), *library.cflags(), "-o", str(target), str(source),
                    *library.libs()], check=True)
    return str(target)


@pytest.fixture(scope="session")
def program(tmp_path_factory):
    """Builds a test program (vm_programs/NAME.c) once, as a user would build a
    program written against dune.h: its path."""
    out = tmp_path_factory.mktemp("dune-vm-programs")
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            built[name] = build_example(PROGRAMS / f"{name}.c", out)
        return built[name]
    return get


@pytest.fixture(scope="session")
def example(tmp_path_factory):
    """Builds an example (kvmdune/dune/examples/NAME.c) once: its path."""
    out = tmp_path_factory.mktemp("dune-vm-examples")
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            source = EXAMPLES / f"{name}.c"
            built[name] = build_example(source, out)
        return built[name]
    return get


@pytest.fixture(params=["fast", "slow"])
def syscall_path(request, monkeypatch) -> str:
    monkeypatch.setenv(FAST_SYSCALLS, "1" if request.param == "fast" else "0")
    return request.param


def run_dune(argv: list[str], input: bytes | None = None, timeout: float = 300,
             options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``kvmdune run OPTIONS -- argv`` (the CLI, with its Dune API)."""
    return subprocess.run([sys.executable, "-m", "kvmdune", "run", *options, "--", *argv],
                          input=input, capture_output=True, timeout=timeout,
                          cwd=REPOSITORY, env=dict(os.environ))


def run_observed(argv: list[str], input: bytes | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    """``argv`` under vmm.py: ``kvmdune run``'s VMM with the tests' hooks (a Python
    tool with ``--tool``, the invariants checked at the end)."""
    return subprocess.run([sys.executable, "-m", "tests.dune.vmm", *argv],
                          input=input, capture_output=True, timeout=timeout,
                          cwd=REPOSITORY, env=dict(os.environ))


def passed_checks(result: subprocess.CompletedProcess) -> list[str]:
    """The "ok NAME" lines of a test program that ran to its end ("done")."""
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0 and out.rstrip().endswith("done"), \
        out[-3000:] + result.stderr.decode(errors="replace")[-3000:]
    return [line[3:] for line in out.splitlines() if line.startswith("ok ")]
