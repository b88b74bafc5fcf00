"""The terminal queries isatty and stdio's buffering make (TCGETS, TIOCGWINSZ) as
real programs see them: on a file, a directory, a pipe, a socket and /dev/null they
fail with ENOTTY whatever the argument, on a closed number with EBADF, and a
pseudo-terminal answers -- byte for byte as natively on every path; with the fast
path on, the refused ones are served natively."""

from __future__ import annotations

import pytest

import sys

from .conftest import run_dune, run_native, assert_served_natively

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True

ROUNDS = 1000
#: ioctl calls of one round of ``ttyqueries loop``: TCGETS and TIOCGWINSZ.
CALLS_PER_ROUND = 2


def test_terminal_queries_match_native(compiled, tmp_path):
    program = compiled[("ttyqueries", "static")]
    native, dune = (run([program, str(tmp_path)]) for run in (run_native, run_dune))
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    # What the VMM's own path answered wrongly before (EFAULT): Linux refuses first.
    assert b"pipe read end: TCGETS ENOTTY, TIOCGWINSZ ENOTTY, " \
           b"TCGETS to a bad pointer ENOTTY" in dune.stdout
    assert b"closed: TCGETS EBADF" in dune.stdout


def test_terminal_queries_are_served_natively(compiled, syscall_path):
    dune = run_dune([compiled[("ttyqueries", "static")], "loop", str(ROUNDS)],
                    "--syscall-stats")
    assert dune.returncode == 0 and dune.stdout == f"{ROUNDS} rounds\n".encode()
    assert_served_natively(dune.stderr, ROUNDS * CALLS_PER_ROUND, syscall_path)


#: openpty(3) as glibc 2.36 makes it: /dev/ptmx, then TIOCGPTPEER for the other end,
#: a new descriptor (its number was the VMM's, not the guest's: 10 where Linux gives 4,
#: and the guest had no such descriptor).
OPENPTY = ("import os; m, s = os.openpty(); print(m, s, os.isatty(s), "
           "os.ttyname(s).startswith('/dev/pts/')); os.write(m, b'ab\\n'); print(os.read(s, 10)); "
           "print(os.get_inheritable(s), sorted(int(fd) for fd in os.listdir('/proc/self/fd')))")


def test_openpty_gives_the_guest_both_ends():
    argv = [sys.executable, "-c", OPENPTY]
    native, dune = run_native(argv), run_dune(argv)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.stdout.startswith(b"3 4 True True\n")
