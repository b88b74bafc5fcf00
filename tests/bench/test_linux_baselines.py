"""Tests for kvmdune.bench.linux_baselines: the C baselines build, run at tiny
sizes, print well-formed results, and the dirty trackers collect exactly the
pages written. Timings are never asserted: only correctness and shape."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmdune.bench import linux_baselines as lb

# Small enough that the whole file runs in a few seconds.
TINY_ITERATIONS = 200
TINY_REPEAT = 2
TINY_SIZE_MB = 16
TINY_WRITE_PAGES = 37  # not a divisor of the page count: exercises the spread


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Build into a private cache so tests neither see nor disturb the user's."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = old


def _uffd_usable() -> bool:
    """userfaultfd needs root, vm.unprivileged_userfaultfd=1, or access to /dev/userfaultfd."""
    if os.geteuid() == 0:
        return True
    try:
        if Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() == "1":
            return True
    except OSError:
        pass
    return os.access("/dev/userfaultfd", os.R_OK | os.W_OK)


def test_build_is_cached_by_source_hash() -> None:
    first = lb.build_baselines()
    assert first.is_file() and os.access(first, os.X_OK)
    assert first.parent == lb.cache_dir()
    assert lb.build_baselines() == first  # unchanged source: no rebuild
    assert first.stat().st_mtime == lb.build_baselines().stat().st_mtime


def test_missing_gcc_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing built here yet
    monkeypatch.setattr(lb.shutil, "which", lambda name: None)
    with pytest.raises(lb.BaselineBuildError, match="apt-get install gcc"):
        lb.build_baselines()


@pytest.mark.parametrize("name", ["getppid", "mprotect_pair", "trap"])
def test_loop_benchmarks_shape(name: str) -> None:
    res = lb.run_baseline(name, TINY_ITERATIONS, repeat=TINY_REPEAT)
    assert isinstance(res, lb.BaselineResult)
    assert res.name == name
    assert res.per_op_ns > 0 and res.per_op_cycles > 0
    assert res.extra["iterations"] == TINY_ITERATIONS
    assert res.extra["repeat"] == TINY_REPEAT
    assert len(res.extra["samples_per_op_ns"]) == TINY_REPEAT
    assert len(res.extra["samples_per_op_cycles"]) == TINY_REPEAT
    assert res.extra["tsc_mhz"] > 0
    assert res.correct is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.per_op_ns = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        res.extra["iterations"] = 1  # type: ignore[index]


DIRTY_FIELDS = (
    "size_mb", "pages", "write_pages", "repeat", "correct", "dirty_found",
    "arm_ns", "arm_cycles", "writes_ns", "write_ns", "write_cycles",
    "collect_ns", "collect_cycles", "total_ns", "total_cycles", "samples_total_ns",
)


def _check_dirty(res: lb.BaselineResult, name: str, write_pages: int) -> None:
    assert res.name == name
    for key in DIRTY_FIELDS:
        assert key in res.extra, key
    assert res.correct is True
    assert res.extra["size_mb"] == TINY_SIZE_MB
    assert res.extra["pages"] == TINY_SIZE_MB * (1 << 20) // 4096
    assert res.extra["write_pages"] == write_pages
    assert res.extra["dirty_found"] == write_pages
    assert len(res.extra["samples_total_ns"]) == TINY_REPEAT
    # One operation is one whole round: the phases add up to it.
    phases = res.extra["arm_ns"] + res.extra["writes_ns"] + res.extra["collect_ns"]
    assert res.per_op_ns == res.extra["total_ns"]
    assert res.per_op_ns > 0 and phases > 0


@pytest.mark.parametrize("write_pages", [1, TINY_WRITE_PAGES])
def test_dirty_mprotect_collects_exactly_the_written_pages(write_pages: int) -> None:
    res = lb.run_baseline("dirty_mprotect", TINY_SIZE_MB, write_pages, repeat=TINY_REPEAT)
    _check_dirty(res, "dirty_mprotect", write_pages)


@pytest.mark.skipif(not _uffd_usable(), reason="userfaultfd not permitted for this user")
@pytest.mark.parametrize("mode", ["auto", "sync"])
def test_dirty_uffd_collects_exactly_the_written_pages(mode: str) -> None:
    res = lb.run_baseline("dirty_uffd", TINY_SIZE_MB, TINY_WRITE_PAGES, mode, repeat=TINY_REPEAT)
    _check_dirty(res, "dirty_uffd", TINY_WRITE_PAGES)
    assert res.extra["mode"] in ("async", "sync")
    if mode == "sync":
        assert res.extra["mode"] == "sync"
    elif res.extra["wp_async_available"]:
        assert res.extra["mode"] == "async"
        assert "steady_round_ns" in res.extra


@pytest.mark.skipif(not _uffd_usable(), reason="userfaultfd not permitted for this user")
def test_dirty_uffd_every_page_written_is_one_region() -> None:
    """Contiguous written pages come back merged into page_regions; still exact."""
    pages = TINY_SIZE_MB * (1 << 20) // 4096
    res = lb.run_baseline("dirty_uffd", TINY_SIZE_MB, pages, repeat=TINY_REPEAT)
    _check_dirty(res, "dirty_uffd", pages)


def test_program_prints_one_json_object_per_line() -> None:
    binary = lb.build_baselines()
    proc = subprocess.run(
        [str(binary), "--repeat", "1", "getppid", "100"], capture_output=True, text=True, check=True
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["benchmark"] == "getppid"
    assert "per_op_ns" in obj and "per_op_cycles" in obj


def test_errors_are_reported_not_crashed() -> None:
    with pytest.raises(lb.BaselineUnavailable, match="WRITE_PAGES"):
        lb.run_baseline("dirty_mprotect", TINY_SIZE_MB, 10**7, repeat=1)
    with pytest.raises(lb.BaselineUnavailable, match="mode"):
        lb.run_baseline("dirty_uffd", TINY_SIZE_MB, 8, "bogus", repeat=1)
    with pytest.raises(ValueError, match="unknown baseline"):
        lb.run_baseline("no_such_benchmark")
    with pytest.raises(ValueError, match="repeat"):
        lb.run_baseline("getppid", repeat=0)
