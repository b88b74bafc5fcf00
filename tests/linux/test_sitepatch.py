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


#: A site whose number is set before the instruction that precedes its ``syscall``
#: (as in libc's syscall()), and one that must stay: a load through RDI could fault.
#: (The ``mov $39,%eax`` site makes the file one that is swept at all.)
RELOCATED_PROGRAM = r"""
long call(long n);
__asm__(".globl call\ncall:\n  mov %rdi,%rax\n  mov 0x8(%rsp),%r9\n  syscall\n"
        "  mov %rdi,%rax\n  mov 0x10(%rdi),%r9\n  syscall\n  mov $39,%eax\n  syscall\n"
        "  ret\n");
int main(void) { return (int)call(39) < 0; }
"""


def test_a_relocatable_instruction_before_syscall_is_a_site(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    """The stack load before the first ``syscall`` moves into the stub (RELOCATED,
    its bytes kept, also through the disk cache); the load through RDI does not."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sitepatch, "_memo", {})
    source = tmp_path / "relocated.c"
    source.write_text(RELOCATED_PROGRAM)
    out = tmp_path / "relocated"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(source)], check=True)
    analysis = sitepatch.analyze(str(out))
    stack_load = bytes.fromhex("4c8b4c2408")              # mov 0x8(%rsp),%r9
    relocated = [site for site in analysis.sites if site.kind is sitepatch.SiteKind.RELOCATED]
    assert [site.code for site in relocated] == [stack_load]
    data = out.read_bytes()
    site = relocated[0]
    assert data[site.syscall_offset:site.syscall_offset + 2] == b"\x0f\x05"
    sitepatch._memo.clear()
    assert sitepatch.analyze(str(out)) == analysis           # from the disk cache


@pytest.mark.parametrize("insn, expected", [
    ((0, 5, "mov", "r9, qword ptr [rsp + 8]"), True),
    ((0, 5, "mov", "esi, 0x80"), True),
    ((0, 7, "lea", "rdx, [rbx + 0x630]"), True),             # lea reads no memory
    ((0, 7, "lea", "rsi, [rip + 0x18aa29]"), False),         # RIP-relative
    ((0, 4, "mov", "edi, dword ptr [rsp + 8]"), False),      # too short for a jmp rel32
    ((0, 5, "mov", "r9, qword ptr [rdi + 8]"), False),       # could fault in the stub
    ((0, 5, "mov", "qword ptr [rsp + 8], r9"), False),       # writes the stack
    ((0, 9, "mov", "rax, qword ptr fs:[0x28]"), False),      # a segment
    ((0, 5, "call", "0x1234"), False),
    ((0, 12, "movabs", "rax, 0x1122334455667788"), False),   # longer than a stub takes
])
def test_relocatable_instructions(insn, expected):
    assert sitepatch.relocatable(insn) is expected


#: A VMM that patches ld.so and libc ahead (as a resident server does before it
#: forks its workers), then runs a dynamic program, counting the patches it makes.
_PREPATCHED_VMM = """
import json, sys
from kvmdune.linux import sitepatch
from kvmdune.linux.runner import run_command
sitepatch.prewarm(sys.argv[2], patch=True)
ahead = len(sitepatch._patched)
made = []
real_patch = sitepatch._patch
def counted(*args):
    made.append(args[2])            # the file offset of what was patched in the run
    return real_patch(*args)
sitepatch._patch = counted
status = run_command(sys.argv[2:])
with open(sys.argv[1], "w") as report:
    json.dump({"status": status, "ahead": ahead, "made": made}, report)
"""


@pytest.mark.kvm
def test_code_patched_ahead_is_what_a_run_maps(tmp_path: Path):
    """ld.so's and libc's code patched before any run (``prewarm(patch=True)``) is
    the code a run maps: the run patches nothing itself, and the dynamic program,
    whose every call goes through those stubs, runs as natively."""
    import json
    import sys

    shell = "/bin/sh"
    report = tmp_path / "report.json"
    script = "echo $((6 * 7)); cat /proc/self/maps | grep -c ' r-xp .*libc'"
    native = subprocess.run([shell, "-c", script], capture_output=True, timeout=60)
    result = subprocess.run([sys.executable, "-c", _PREPATCHED_VMM, str(report), shell,
                             "-c", script], capture_output=True, timeout=120,
                            env=dict(os.environ, KVMDUNE_PATCH_SITES="1"))
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    seen = json.loads(report.read_text())
    assert seen["status"] == 0
    assert seen["ahead"] >= 2                 # ld.so's and libc's text, each way mapped
    assert seen["made"] == [], "the run patched code it had been given ahead"
    assert result.stdout == native.stdout
