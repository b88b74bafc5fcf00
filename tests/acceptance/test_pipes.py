"""Pipes, sockets and terminals seen from a real program (``programs/pipes.c``):
ping-pong between processes, writes larger than a pipe holds to a slow reader (never
short on a blocking descriptor), nonblocking descriptors' EAGAIN and short writes,
EPIPE with SIGPIPE caught and uncaught, stream and datagram socket pairs, send and
recv with their flags, epoll_wait with something ready or not, reads and
writes interrupted by signals with and without SA_RESTART, a pseudo-terminal: the
output matches the native run byte for byte on every system-call path. With the
fast path on, I/O on pipes and sockets that need not wait is served natively."""

from __future__ import annotations

import pytest

from .conftest import run_dune, run_native
from .test_fast_path import served

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True
#: Messages `pipes native` moves: each a write and a read on a pipe, a send and a
#: recv on a socket, and an epoll_wait.
MESSAGES = 2000


def test_pipes_sockets_and_terminals_match_native(compiled):
    argv = [compiled[("pipes", "static")], "all"]
    native, dune = run_native(argv), run_dune(argv)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    assert b"pipe write of 524288 to a slow reader: 524288" in dune.stdout
    assert b"SIGPIPE not caught: killed by 13" in dune.stdout


def test_pipe_and_socket_io_is_served_natively(compiled, syscall_path):
    argv = [compiled[("pipes", "static")], "native", str(MESSAGES)]
    native, dune = run_native(argv), run_dune(argv, "--syscall-stats")
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")
    assert dune.stdout == native.stdout == b"moved %d bytes, %d times ready\n" % (
        4 * MESSAGES * 100, MESSAGES)
    if syscall_path == "slow":
        assert b"the fast path is off" in dune.stderr
        return
    fast, denied, slow = served(dune.stderr)
    assert fast >= 5 * MESSAGES and denied == 0
    assert slow < 100      # start-up and exit: memory, signals, the exe
