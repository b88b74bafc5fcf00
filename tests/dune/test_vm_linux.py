"""Linux's memory calls and pgroot stay coherent, seen by a C program with each
dune_init argument: mmap and demand paging bring pages into pgroot with the
default PERM_U (and user code gets a big lazily backed mapping's pages on demand
with dune_init(1)); mprotect gives the VMA's rights back over a Dune restriction
and a dune_vm_unmap, keeping PTE_U; munmap takes pages out of pgroot and of clones;
a forked child keeps the roots (its own copy)."""

from __future__ import annotations

import pytest

from .vm_support import passed_checks, program, run_dune, syscall_path  # noqa: F401

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("mode", ["full", "precise"])
def test_linux_calls_keep_pgroot_coherent(program, syscall_path, mode):
    assert passed_checks(run_dune([program("linux"), mode])) == [
        "mmap-joins-pgroot-with-the-default", "mprotect-gives-the-vma-rights",
        "mprotect-lifts-dune-unmap", "munmap-leaves-every-root",
        "demand-paging-joins-pgroot", "fork-keeps-the-roots"]
