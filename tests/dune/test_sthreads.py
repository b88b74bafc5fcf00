"""sthreads (Wedge) on the Dune API: kvmdune/dune/examples/sthread_server.c handles
each connection in an sthread (include/sthread.h) under the real ``kvmdune run``.

- Normal handlers, several at once (each sthread a guest thread, a vCPU, in a root
  of its own), answer their own user with their own secret, in fresh sthreads and
  then in recycled ones.
- A compromised handler aimed at another connection's secret and descriptor is
  killed by the fault (read, write, the call ring) or refused (descriptors, files,
  buffers it does not reach), sees only its private copy of the globals, and finds
  no residue of the connection its recycled sthread served before (a run with the
  restore skipped finds it: the scan is real). The victim is served afterwards
  with its data intact.
"""

from __future__ import annotations

import pytest

from .conftest import EXAMPLES, explain, lines, run_dune

pytestmark = pytest.mark.kvm

SERVER = EXAMPLES / "sthread_server.c"
NAMES = ["alice", "bob", "carol", "dave"]
ALICE = "hello alice, your secret is secret-of-alice-17156075"
#: attack -> the server's verdict on it.
ATTACKS = {
    "residue": "replied 'residue of earlier connections: stack none, globals none'; "
               "0 system calls denied",
    "read-other-secret": "killed by a page fault (read) at alice's secret",
    "write-other-secret": "killed by a page fault (write) at alice's secret",
    "syscall-pointer": "replied 'write(own fd, alice's secret) -1 EFAULT, read(own fd, "
                       "into alice's secret) -1 EFAULT'; 2 system calls denied",
    "other-fd": "replied 'write(alice's fd) -1 EPERM, read(alice's fd) -1 EPERM, "
                "write(stdout) -1 EPERM'; 3 system calls denied",
    "open-file": "replied 'open(/etc/hostname) -1 EPERM'; 1 system call denied",
    "master-key": "replied 'master key seen: '''; 0 system calls denied",
    "call-ring": "killed by a page fault (read) at the call ring",
}


def greeting(name: str) -> str:
    return f"hello {name}, your secret is secret-of-{name}-{len(name) * 2654435761 % 2**32:08x}"


@pytest.fixture(scope="module", params=["static", "dynamic"])
def server(request, dune_build):
    return dune_build(SERVER, request.param)


def test_connections_in_parallel_sthreads_fresh_then_recycled(server, syscall_path):
    done = run_dune([server, "serve", str(len(NAMES))])
    assert done.returncode == 0, explain(done)
    assert lines(done) == [
        f"round {round_}, {name} ({origin} sthread): '{greeting(name)}': ok"
        for round_, origin in ((1, "fresh"), (2, "recycled")) for name in NAMES], explain(done)


def test_compromised_handlers_are_contained(server):
    done = run_dune([server, "attack"])
    assert done.returncode == 0, explain(done)
    assert greeting("alice") == ALICE
    assert lines(done) == [
        f"alice: '{ALICE}'",
        *(f"attack {attack} (recycled sthread): {verdict}" for attack, verdict in ATTACKS.items()),
        f"alice again: '{ALICE}'",
        "alice's secret and the master key: intact"], explain(done)
