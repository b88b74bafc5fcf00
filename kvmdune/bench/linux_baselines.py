"""Linux-side baselines for ``kvmdune bench core``.

This module owns building and running ``native/linux_baselines.c``: a small C
program that measures what a plain Linux process pays for the operations
kvmdune offers inside a VM (a system call, an mprotect pair, Appel & Li's
prot1+trap+unprot, and dirty-page tracking by mprotect write barrier and by
userfaultfd write protection read back with ``PAGEMAP_SCAN``).

The program is compiled with ``gcc -O2`` into the user's cache directory
(``$XDG_CACHE_HOME/kvmdune`` or ``~/.cache/kvmdune``), under a name keyed by a
hash of the source and the compiler command, so an edited source rebuilds and
an unchanged one is reused. It prints one JSON object per line; this module
parses them into frozen :class:`BaselineResult` objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "BENCHMARKS",
    "BaselineBuildError",
    "BaselineError",
    "BaselineResult",
    "BaselineUnavailable",
    "build_baselines",
    "build_native",
    "cache_dir",
    "run_all_baselines",
    "run_baseline",
]

COMPILER = "gcc"
COMPILER_FLAGS = ("-O2", "-Wall", "-Wextra")
SOURCE_PACKAGE = "kvmdune.bench"
SOURCE_PARTS = ("native", "linux_baselines.c")
BINARY_STEM = "linux_baselines"
# Enough hex digits of SHA-256 that two sources never share a binary.
HASH_CHARS = 16
DEFAULT_REPEAT = 5
MAX_REPEAT = 101  # the C program's limit
COMPILE_TIMEOUT_S = 120.0
# Each benchmark is sized to stay under ~10 s on the project machine; the
# timeout only catches a hung run (e.g. a fault handler that never returns).
RUN_TIMEOUT_S = 300.0

# The benchmarks the C program knows, and what their arguments mean.
BENCHMARKS: Mapping[str, str] = MappingProxyType(
    {
        "getppid": "[ITERATIONS]: one syscall(SYS_getppid)",
        "mprotect_pair": "[ITERATIONS]: mprotect one page read-only, then read-write",
        "trap": "[ITERATIONS]: prot1 + write fault + SIGSEGV handler unprot (Appel & Li)",
        "dirty_mprotect": "[SIZE_MB [WRITE_PAGES]]: one dirty-tracking round by mprotect write barrier",
        "dirty_uffd": "[SIZE_MB [WRITE_PAGES [async|sync|auto]]]: one round by userfaultfd WP + PAGEMAP_SCAN",
    }
)


class BaselineError(RuntimeError):
    """A baseline could not be built or run."""


class BaselineBuildError(BaselineError):
    """The C program could not be compiled (no gcc, or a compile error)."""


class BaselineUnavailable(BaselineError):
    """The program ran but reported an ``"error"``: the facility is missing or
    not permitted here (e.g. userfaultfd disabled), or the arguments were bad."""


@dataclass(frozen=True)
class BaselineResult:
    """One benchmark's result: the median per-operation cost on both clocks.

    ``per_op_cycles`` counts TSC ticks (rdtsc). For the dirty trackers one
    operation is one whole tracking round (arm + writes + collect). ``extra``
    holds every other field the program printed (read-only), e.g. ``correct``,
    ``arm_ns``, ``write_ns``, ``collect_ns``, ``samples_per_op_ns``.
    """

    name: str
    per_op_ns: float
    per_op_cycles: float
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def correct(self) -> bool | None:
        """The dirty trackers' self-check (collected set == written set); None elsewhere."""
        value = self.extra.get("correct")
        return None if value is None else bool(value)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BaselineResult:
        """Build from one JSON object the program printed (without ``"error"``)."""
        try:
            name = str(obj["benchmark"])
            per_op_ns = float(obj["per_op_ns"])
            per_op_cycles = float(obj["per_op_cycles"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"malformed baseline result {dict(obj)!r}: {exc}") from exc
        rest = {k: v for k, v in obj.items() if k not in ("benchmark", "per_op_ns", "per_op_cycles")}
        return cls(name, per_op_ns, per_op_cycles, MappingProxyType(rest))


def cache_dir() -> Path:
    """Where built binaries live: ``$XDG_CACHE_HOME/kvmdune`` or ``~/.cache/kvmdune``."""
    base = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says to ignore a relative value.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "kvmdune"


def _source_bytes(name: str = SOURCE_PARTS[-1]) -> bytes:
    return resources.files(SOURCE_PACKAGE).joinpath(SOURCE_PARTS[0], name).read_bytes()


def _binary_path(source: bytes, stem: str = BINARY_STEM,
                 flags: tuple[str, ...] = COMPILER_FLAGS) -> Path:
    digest = hashlib.sha256()
    digest.update(source)
    # The flags are part of the key: changing them must rebuild too.
    digest.update("\0".join((COMPILER, *flags)).encode())
    return cache_dir() / f"{stem}-{digest.hexdigest()[:HASH_CHARS]}"


def build_baselines() -> Path:
    """Compile the C program if this source has not been built yet; return the binary."""
    return build_native(SOURCE_PARTS[-1], BINARY_STEM)


def build_native(source_name: str, stem: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``native/<source_name>`` (with ``extra_flags``, e.g. ``-shared -fPIC``)
    into the cache unless this source was built already; return the output.

    Safe to call from several processes at once: each compiles to its own
    temporary file and renames it into place atomically.
    """
    source = _source_bytes(source_name)
    flags = (*COMPILER_FLAGS, *extra_flags)
    binary = _binary_path(source, stem, flags)
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise BaselineBuildError(
            f"{COMPILER} not found on PATH: the Linux baselines are a C program; "
            f"install a compiler with `apt-get install {COMPILER}`"
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".build-") as tmp:
        # Compile from a copy: the packaged source may not be a real file (zip import).
        src_copy = Path(tmp) / source_name
        src_copy.write_bytes(source)
        out = Path(tmp) / stem
        cmd = [compiler, *flags, "-o", str(out), str(src_copy)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise BaselineBuildError(f"{' '.join(cmd)} timed out after {COMPILE_TIMEOUT_S} s") from exc
        if proc.returncode != 0:
            raise BaselineBuildError(
                f"compiling {source_name} failed ({' '.join(cmd)}):\n{proc.stderr.strip()}"
            )
        os.replace(out, binary)
    return binary


def _run(argv: list[str]) -> list[dict[str, Any]]:
    """Run the binary; return its JSON lines (it exits non-zero when one reports an error)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise BaselineError(f"{' '.join(argv)} did not finish within {RUN_TIMEOUT_S} s") from exc
    objects: list[dict[str, Any]] = []
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BaselineError(f"{' '.join(argv)} printed a line that is not JSON: {line!r}") from exc
        if not isinstance(obj, dict) or "benchmark" not in obj:
            raise BaselineError(f"{' '.join(argv)} printed an unexpected object: {line!r}")
        objects.append(obj)
    if not objects:
        raise BaselineError(
            f"{' '.join(argv)} printed no result (exit status {proc.returncode}): {proc.stderr.strip()}"
        )
    return objects


def _check_repeat(repeat: int) -> None:
    if not 1 <= repeat <= MAX_REPEAT:
        raise ValueError(f"repeat must be in 1..{MAX_REPEAT}, not {repeat}")


def run_baseline(name: str, *args: str | int, repeat: int = DEFAULT_REPEAT) -> BaselineResult:
    """Run one benchmark (see :data:`BENCHMARKS`) and return its median result.

    ``args`` are passed on the command line (iterations, or SIZE_MB and
    WRITE_PAGES for the dirty trackers); none means the program's defaults.
    Raises :class:`BaselineUnavailable` when the program reports an error.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BENCHMARKS)}")
    _check_repeat(repeat)
    argv = [str(build_baselines()), "--repeat", str(repeat), name, *(str(a) for a in args)]
    objects = _run(argv)
    for obj in objects:
        if "error" in obj:
            raise BaselineUnavailable(f"{obj['benchmark']}: {obj['error']}")
    mine = [obj for obj in objects if obj["benchmark"] == name]
    if len(mine) != 1:
        raise BaselineError(f"{' '.join(argv)}: expected one {name!r} result, got {objects!r}")
    return BaselineResult.from_json(mine[0])


def run_all_baselines(repeat: int = DEFAULT_REPEAT) -> dict[str, BaselineResult | BaselineUnavailable]:
    """Run every benchmark with its defaults in one process.

    A benchmark that reports an error maps to its :class:`BaselineUnavailable`
    instead of aborting the others (a report can print "n/a" for it).
    """
    _check_repeat(repeat)
    argv = [str(build_baselines()), "--repeat", str(repeat), "all"]
    results: dict[str, BaselineResult | BaselineUnavailable] = {}
    for obj in _run(argv):
        name = str(obj["benchmark"])
        if "error" in obj:
            results[name] = BaselineUnavailable(f"{name}: {obj['error']}")
        else:
            results[name] = BaselineResult.from_json(obj)
    return results
