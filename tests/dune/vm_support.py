"""What the Dune API's page-table tests share (imported by each test_vm_* module):
C programs (vm_programs/) built here against the API's C side (include/,
native/vm.c), run under the test harness (harness.py) on each system-call path
(fast: the call ring; slow: every call exits)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

import kvmdune

PROGRAMS = pathlib.Path(__file__).parent / "vm_programs"
PACKAGE = pathlib.Path(kvmdune.__file__).parent
INCLUDE = PACKAGE / "dune" / "include"
VM_SOURCE = PACKAGE / "dune" / "native" / "vm.c"
EXAMPLES = PACKAGE / "dune" / "examples"
REPOSITORY = PACKAGE.parent
FAST_SYSCALLS = "KVMDUNE_FAST_SYSCALLS"
CFLAGS = ["-O1", "-fno-stack-protector", "-Wall", "-Werror", "-static"]


def build(source: pathlib.Path, out: pathlib.Path, extra: tuple[str, ...] = ()) -> str:
    """``source`` with the API's C side, statically linked."""
    target = out / source.stem
    subprocess.run(["gcc", *CFLAGS, "-I", str(INCLUDE), "-I", str(PROGRAMS), "-o",
                    str(target), str(source), str(VM_SOURCE), *extra], check=True)
    return str(target)


def build_example(source: pathlib.Path, out: pathlib.Path) -> str:
    """A program as a user builds it: ``kvmdune config``'s flags."""
    from kvmdune.dune import library

    target = out / source.stem
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-fno-stack-protector", "-static",
                    *library.cflags(), "-o", str(target), str(source), *library.libs()],
                   check=True)
    return str(target)


@pytest.fixture(scope="session")
def api_program(tmp_path_factory):
    """Builds a test program written against dune.h (vm_programs/NAME.c) with the
    library, as a user would: its path (run it with ``run_example``)."""
    out = tmp_path_factory.mktemp("dune-vm-api-programs")
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            built[name] = build_example(PROGRAMS / f"{name}.c", out)
        return built[name]
    return get


def run_example(argv: list[str]) -> subprocess.CompletedProcess:
    """A program built against dune.h under ``kvmdune run`` (the Dune API's)."""
    return subprocess.run([sys.executable, "-m", "kvmdune", "run", "--", *argv],
                          capture_output=True, timeout=300, cwd=REPOSITORY)


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


@pytest.fixture(scope="session")
def program(tmp_path_factory):
    """Builds a test program (tests/dune/vm_programs/NAME.c) once: its path."""
    out = tmp_path_factory.mktemp("dune-vm-programs")
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            built[name] = build(PROGRAMS / f"{name}.c", out)
        return built[name]
    return get


@pytest.fixture(params=["fast", "slow"])
def syscall_path(request, monkeypatch) -> str:
    monkeypatch.setenv(FAST_SYSCALLS, "1" if request.param == "fast" else "0")
    return request.param


def run_dune(argv: list[str], input: bytes | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """``argv`` under kvmdune with the page-table hypercalls (harness.py)."""
    return subprocess.run([sys.executable, "-m", "tests.dune.harness", *argv],
                          input=input, capture_output=True, timeout=timeout,
                          cwd=REPOSITORY, env=dict(os.environ))


def passed_checks(result: subprocess.CompletedProcess) -> list[str]:
    """The "ok NAME" lines of a test program that ran to its end ("done")."""
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0 and out.rstrip().endswith("done"), \
        out[-3000:] + result.stderr.decode(errors="replace")[-3000:]
    return [line[3:] for line in out.splitlines() if line.startswith("ok ")]
