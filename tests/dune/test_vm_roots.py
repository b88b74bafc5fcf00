"""Roots as user code sees them (C program, dune_jump_to_user under `kvmdune run`): dune_init(0)
grants user code nothing and PERM_U grants it pages (rights within the mapping's:
a text page cannot be made writable); a clone's changes act on its own user view
only; load_cr3 chooses the root user code runs in, and CR3_NOFLUSH leaves written
entries for a later flush; map_pages/map_phys into a clone reach user code in that
clone only; unknown and freed roots are EINVAL, and pgroot cannot be freed."""

from __future__ import annotations

import pytest

from .vm_support import passed_checks, program, run_dune, syscall_path  # noqa: F401

pytestmark = pytest.mark.kvm


def test_roots_clones_and_load_cr3(program, syscall_path):
    assert passed_checks(run_dune([program("roots")])) == [
        "perm-u-grants-user-code-only", "clone-changes-only-its-own-view",
        "load-cr3-noflush-defers-the-flush", "map-pages-and-map-phys-in-a-clone",
        "unknown-and-freed-roots"]
