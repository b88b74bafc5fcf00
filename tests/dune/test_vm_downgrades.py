"""Every restricting change of the Dune API's page tables is seen by guest CPL3 code
at once: write removed, unmapped, user access removed, dirty bit cleared and set
again by the next write; in the program view (pgroot acts on it), in pgroot's user
view and in a clone's (where only the invalidation can remove a translation: the
frame stays the program's). Each page is touched before its downgrade. User code runs
by dune_jump_to_user under `kvmdune run` (the library's upcalls end each run at its
system call or fault: vm_programs/testdune.h)."""

from __future__ import annotations

import pytest

from .vm_support import passed_checks, program, run_dune, syscall_path  # noqa: F401

pytestmark = pytest.mark.kvm


def test_every_downgrade_is_seen_from_the_guest(program, syscall_path):
    checks = passed_checks(run_dune([program("downgrades")]))
    assert checks == ["program-write-removed", "program-unmapped",
                      "program-dirty-cleared-and-set-again", "user-write-removed",
                      "user-access-removed", "user-unmapped", "clone-user-unmapped",
                      "user-dirty-cleared-and-set-again"]
