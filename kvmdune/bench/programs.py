"""Building and running the benchmark programs of ``native/`` (gcc, static), natively
and under ``kvmdune run``, and reading the one JSON object per line they print.

Shared by the suites that measure a C program on both sides (``bench gc``, ``bench
paper``): each builds its programs into a scratch directory of its own and runs them
with the same environment natively and under kvmdune.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NATIVE_DIR = Path(__file__).parent / "native"
COMPILER = "gcc"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-static")
#: ``kvmdune run`` as a command prefix (this interpreter, this tree's package).
DUNE_RUN = (sys.executable, "-m", "kvmdune", "run", "--quiet", "--")
RUN_TIMEOUT_S = 1200.0


class ProgramError(RuntimeError):
    """A benchmark program could not be built, failed, or printed nonsense."""


@dataclass(frozen=True)
class Output:
    """What one run printed: its JSON objects (one per line) and its stderr."""

    objects: list[dict]
    stderr: str
    status: int


def build(source: str, directory: Path, *, libraries: tuple[str, ...] = (),
          dune: bool = False, defines: tuple[str, ...] = (), name: str | None = None) -> Path:
    """Compile ``native/<source>`` into ``directory`` (static, -O2); ``dune`` adds the
    Dune API's flags (``kvmdune config --cflags --libs``); ``defines`` are ``-D``
    macros (one program built twice, e.g. for Linux and for the Dune API)."""
    if shutil.which(COMPILER) is None:
        raise ProgramError(f"{COMPILER} is not installed: the benchmark programs are C "
                           f"(apt-get install {COMPILER})")
    binary = directory / (name or Path(source).stem)
    command = [COMPILER, *CFLAGS, *(f"-D{define}" for define in defines)]
    if dune:
        from ..dune import library
        command += library.cflags()
    command += ["-o", str(binary), str(NATIVE_DIR / source)]
    if dune:
        command += library.libs()
    command += [f"-l{lib}" for lib in libraries]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ProgramError(f"building {source} failed ({' '.join(command)}):\n"
                           f"{result.stderr.strip()}")
    return binary


def run(argv: list[str], *, dune: bool, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = RUN_TIMEOUT_S) -> Output:
    """Run ``argv`` natively or under ``kvmdune run`` with ``env`` added to this
    process's environment; with ``check``, a failure (or no JSON) raises."""
    command = [*DUNE_RUN, *argv] if dune else list(argv)
    environment = {**os.environ, **(env or {})}
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=environment,
                                timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ProgramError(f"{' '.join(command)} did not finish in {timeout:g} s") from exc
    objects = []
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            try:
                objects.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ProgramError(f"{' '.join(command)} printed bad JSON: {line!r}") from exc
    if check and (result.returncode != 0 or not objects):
        where = "under kvmdune" if dune else "natively"
        raise ProgramError(f"{' '.join(argv)} failed {where} (status {result.returncode}):"
                           f"\n{result.stdout[-1000:]}{result.stderr[-2000:]}")
    return Output(objects, result.stderr, result.returncode)
