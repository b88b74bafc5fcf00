"""Issue 13: system-call sites patched by the loader (kvmdune/linux/sitepatch.py), seen
from inside the guest: the same answers, registers, flags and red zone as natively,
signals and SA_RESTART in a patched call, threads, and self-checking code left alone.
Every test runs on each system-call path (conftest.py): with the sites patched, on the
fast path through ``syscall``, and on the slow path."""

from __future__ import annotations

import pytest

from .conftest import LINKS, run_dune, run_in_scratch_dirs, run_native

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True

#: What the program prints to stderr: the first byte of its mov-, xor- and relocated
#: sites (``mov -8(%rsp),%r9``: 4c).
ORIGINAL_BYTES = b"site bytes: b8 31 4c"
PATCHED_BYTES = b"site bytes: e9 eb e9"


@pytest.mark.parametrize("link", LINKS)
def test_patched_sites_answer_as_natively(compiled, link, syscall_path):
    binary = compiled[("patched_sites", link)]
    native = run_native([binary])
    dune = run_dune([binary])
    assert native.returncode == 0, native.stderr
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.stdout == native.stdout
    assert b"threads: 0 bad calls" in dune.stdout
    assert b"handled 1" in dune.stdout
    # The parametrization is not vacuous: the sites are patched exactly when asked.
    expected = PATCHED_BYTES if syscall_path == "patched" else ORIGINAL_BYTES
    assert expected in dune.stderr, dune.stderr


@pytest.mark.parametrize("link", LINKS)
def test_no_patch_option_leaves_the_sites(compiled, link, syscall_path):
    binary = compiled[("patched_sites", link)]
    dune = run_dune([binary], "--no-patch")
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")[-3000:]
    assert ORIGINAL_BYTES in dune.stderr, dune.stderr


@pytest.mark.parametrize("link", LINKS)
def test_self_checking_code_is_left_unpatched(compiled, link, syscall_path):
    binary = compiled[("selfcheck", link)]
    native = run_native([binary])
    dune = run_dune([binary])
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.stdout == native.stdout
    assert b"site bytes b8 27 00 00 00 0f 05, getpid ok" in dune.stdout


@pytest.mark.parametrize("link", LINKS)
def test_sites_patched_on_mprotect_and_stubs_unmapped_with_their_code(compiled, link,
                                                                       syscall_path):
    binary = compiled[("site_mappings", link)]
    native = run_native([binary])
    dune = run_dune([binary])
    assert native.returncode == 0, native.stderr
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.stdout == native.stdout
    assert b"getppid through the mprotected copy: ok" in dune.stdout
    assert b"stub mappings after munmap: as before" in dune.stdout
    expected = (b"site byte after mprotect: e9; stub mappings added: mmap 0, mprotect 1"
                if syscall_path == "patched" else
                b"site byte after mprotect: b8; stub mappings added: mmap 0, mprotect 0")
    assert expected in dune.stderr, dune.stderr


@pytest.mark.parametrize("link", LINKS)
def test_code_changed_in_its_file_runs_changed_when_mapped_again(compiled, link, tmp_path,
                                                                  syscall_path):
    """programs/site_remap.c: patched code is kept per file, offset and length, but
    used again only for the very bytes it was made from: a site whose call number
    changed in the file, mapped again at the same address, makes the new call."""
    native, dune = run_in_scratch_dirs(compiled[("site_remap", link)], tmp_path)
    assert native.returncode == 0, native.stderr
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.stdout == native.stdout
    assert b"after the change, same address: getpid" in dune.stdout
    assert b"mapped again unchanged: getpid" in dune.stdout
