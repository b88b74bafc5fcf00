"""kvmdune.linux.sitepatch's analysis cache: looked up by the file's identity without
reading it, valid only for the contents it was made from. (What patched sites do in
a guest is tests/acceptance/test_patched_sites.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmdune.linux import sitepatch

#: Two ``mov $N,%eax; syscall`` sites whose numbers differ, same length either way.
PROGRAM = r"""
long call(long n);
__asm__(".globl call\ncall:\n  mov $39, %eax\n  syscall\n  mov $110, %eax\n  syscall\n  ret\n");
int main(void) { return (int)call(0) < 0; }
"""


@pytest.fixture
def binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sitepatch, "_memo", {})
    source = tmp_path / "sites.c"
    source.write_text(PROGRAM)
    out = tmp_path / "sites"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(source)], check=True)
    return out


def numbers(analysis: sitepatch.Analysis) -> list[int]:
    return sorted(site.number for site in analysis.sites if site.kind is sitepatch.SiteKind.MOV_IMM)


def test_sites_found_and_cached_on_disk(binary: Path):
    first = sitepatch.analyze(str(binary))
    assert {39, 110} <= set(numbers(first))
    sitepatch._memo.clear()
    again = sitepatch.analyze(str(binary))
    assert again == first
    entries = sorted(os.listdir(sitepatch.cache_directory()))
    assert len(entries) == 2                       # by identity, and by contents
    assert any(first.sha256.hex() in entry for entry in entries)


def test_file_rewritten_with_its_times_restored_is_analysed_again(binary: Path):
    before = sitepatch.analyze(str(binary))
    info = os.stat(binary)
    data = binary.read_bytes()
    changed = data.replace(b"\xb8\x27\x00\x00\x00\x0f\x05", b"\xb8\x66\x00\x00\x00\x0f\x05")
    assert changed != data and len(changed) == len(data)
    binary.write_bytes(changed)
    # Same size and mtime as before (utimensat): only the ctime tells the change.
    os.utime(binary, ns=(info.st_atime_ns, info.st_mtime_ns))
    sitepatch._memo.clear()
    after = sitepatch.analyze(str(binary))
    assert 102 in numbers(after) and 39 not in numbers(after)
    assert after.sha256 != before.sha256


def test_damaged_cache_entries_are_ignored(binary: Path):
    first = sitepatch.analyze(str(binary))
    for entry in Path(sitepatch.cache_directory()).iterdir():
        entry.write_bytes(entry.read_bytes()[:-3])
    sitepatch._memo.clear()
    assert sitepatch.analyze(str(binary)) == first


def test_an_entry_for_other_contents_is_not_used(binary: Path):
    """A contents entry is checked against the file's hash, not trusted by its name."""
    first = sitepatch.analyze(str(binary))
    directory = Path(sitepatch.cache_directory())
    for entry in directory.iterdir():
        if entry.name.split("-")[1] == "id":
            entry.unlink()
        else:
            forged = sitepatch.Analysis((), 0, False, bytes(32))
            sitepatch._store(str(entry), forged)
    sitepatch._memo.clear()
    assert sitepatch.analyze(str(binary)) == first
