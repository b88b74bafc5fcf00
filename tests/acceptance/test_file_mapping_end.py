"""File mappings past the end of their file, against Linux (programs/past_eof.c):
the program's own touch there is SIGBUS (BUS_ADRERR, si_addr the address), a system
call's is EFAULT, in private and shared mappings, with the file grown after it was
mapped and, for shared ones, truncated after it was mapped (which once killed the
VMM: KVM_RUN failed with EFAULT, status 137). With no handler, death by SIGBUS."""

from __future__ import annotations

import pytest

from .conftest import LINKS, run_dune, run_native

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("link", LINKS)
def test_past_the_end_matches_native(compiled, link):
    argv = [compiled[("past_eof", link)]]
    native, dune = run_native(argv), run_dune(argv)
    assert b"SIGBUS code 2" in native.stdout and b"Bad address" in native.stdout
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0, dune.stderr.decode(errors="replace")


@pytest.mark.parametrize("kind", ["shared", "private"])
def test_no_handler_dies_of_sigbus(compiled, kind):
    argv = [compiled[("past_eof", "static")], kind]
    native, dune = run_native(argv), run_dune(argv)
    assert native.returncode == -7                  # SIGBUS natively: the shell's 135
    assert dune.returncode == 135, dune.stderr.decode(errors="replace")
    assert dune.stdout == native.stdout == b"reading past the end\n"
    assert b"killed by SIGBUS" in dune.stderr
