"""Dune API tests: C programs compiled here against the library with the flags
``kvmdune config`` prints, run natively and under ``kvmdune run``."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

PROGRAMS = pathlib.Path(__file__).parent / "programs"
CHECKOUT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = CHECKOUT / "kvmdune" / "dune" / "examples"
#: The variable the runner reads at start; the VMM subprocesses inherit it.
FAST_SYSCALLS = "KVMDUNE_FAST_SYSCALLS"
SYSCALL_PATHS = {"fast": "1", "slow": "0"}


def config_flags() -> list[str]:
    """What ``kvmdune config --cflags --libs`` prints, as arguments."""
    done = subprocess.run([sys.executable, "-m", "kvmdune", "config", "--cflags", "--libs"],
                          capture_output=True, text=True, check=True, cwd=CHECKOUT)
    return done.stdout.split()


LINKS = {"static": ["-static"], "static-pie": ["-static-pie"], "dynamic": []}
#: A directory of programs built beforehand by ``build_dune_programs``
#: (scripts/test-on-svm builds them on the host, where gcc is not emulated).
PREBUILT_PROGRAMS = "KVMDUNE_TEST_PROGRAMS"
PREBUILT_SUBDIRECTORY = "dune"


def compile_program(source: pathlib.Path, link: str, target: pathlib.Path,
                    flags: list[str]) -> None:
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", str(target), str(source),
                    *LINKS[link], *flags], check=True)


def build_dune_programs(out: pathlib.Path) -> None:
    """Every test program and example, static and dynamic, in ``out``."""
    flags = config_flags()
    for source in [*sorted(PROGRAMS.glob("*.c")), *sorted(EXAMPLES.glob("*.c"))]:
        for link in ("static", "dynamic"):
            compile_program(source, link, out / f"{source.stem}-{link}", flags)


@pytest.fixture(scope="session")
def dune_build(tmp_path_factory):
    """Build a C program against the Dune API: ``dune_build(source, link="static")``
    -> the binary's path ("static", "static-pie" or "dynamic")."""
    out = tmp_path_factory.mktemp("dune-programs")
    prebuilt = os.environ.get(PREBUILT_PROGRAMS)
    built: dict[tuple[str, str], str] = {}

    def build(source: pathlib.Path, link: str = "static") -> str:
        key = (str(source), link)
        if key not in built:
            name = f"{source.stem}-{link}"
            ready = pathlib.Path(prebuilt, PREBUILT_SUBDIRECTORY, name) if prebuilt else None
            if ready is not None and os.access(ready, os.X_OK):
                built[key] = str(ready)
            else:
                compile_program(source, link, out / name, config_flags())
                built[key] = str(out / name)
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
