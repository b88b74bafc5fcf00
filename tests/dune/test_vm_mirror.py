"""Mirror entries through dune_vm_lookup's pointer, seen and written by a C program:
what an entry shows (the frame dune_va_to_pa gives, rights, PTE_U, A and D); writes
applied at the flush (a write bit removed, a dirty bit cleared, a new entry mapping
a frame at a second address, which goes when its owner is unmapped); refused writes
restored (supervisor frames, a frame given back, write rights on a read-only file
mapping, a directory entry); and the [dune-pagetables] window sealed against the
program's munmap, mprotect, MAP_FIXED, mremap and MADV_DONTNEED."""

from __future__ import annotations

import pytest

from .vm_support import passed_checks, program, run_dune, syscall_path  # noqa: F401

pytestmark = pytest.mark.kvm


def test_mirror_entries_writes_refusals_and_the_window(program, syscall_path):
    assert passed_checks(run_dune([program("mirror")])) == [
        "entry-shows-frame-rights-and-bits", "write-bit-applied-at-flush",
        "dirty-bit-cleared-at-flush-and-set-again", "foreign-frames-refused-and-restored",
        "rights-beyond-the-mapping-refused", "directory-entries-restored",
        "entry-written-in-place-maps-and-follows-the-owner", "window-sealed"]
