"""The fast path's serving thread (linux/native/fastpath.c) on its own: its ring in
anonymous memory, read where the guest's call stub reads it. While the VMM serves a
call of every vCPU (``vcpu_out``) the thread sleeps instead of spinning, and keeps
the ring's hint AWAKE, so that the guest's next call, once the VMM is done
(``wake``), waits for the thread instead of exiting at once. Guest-level behaviour
(the answers on every path, under load) is tests/acceptance/test_fast_path_load.py's."""

from __future__ import annotations

import ctypes
import mmap
import struct
import time

import pytest

from kvmdune.linux import fastpath

#: machine/native/callring.h
HOST_STATE = 0x58
HOST_AWAKE, HOST_SLEEPING = 0, 1
MEMORY = 1 << 20
#: Long enough that the thread, once woken, is still spinning when the test looks.
SPIN_NS = 500_000_000
PATIENCE_S = 10.0


@pytest.fixture
def server():
    native = fastpath.native_module()
    if native is None:
        pytest.skip("the native fast path is not built")
    memory = mmap.mmap(-1, MEMORY)
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    server = native.Server(address, address, MEMORY, SPIN_NS)
    server.start()
    try:
        yield server, memory
    finally:
        server.stop()
        del address
        memory.close()


def _until(condition) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, "the thread did not get there"
        time.sleep(0.001)


def _sleeps(server) -> int:
    return server.stats()["sleeps"]


def _hint(memory) -> int:
    return struct.unpack_from("<I", memory, HOST_STATE)[0]


def test_thread_sleeps_unhinted_while_every_vcpu_is_out(server):
    server, memory = server
    # Idle after start: the thread sleeps, and says so (the guest would exit at once).
    _until(lambda: _sleeps(server) >= 1 and _hint(memory) == HOST_SLEEPING)
    server.wake(0)
    _until(lambda: _hint(memory) == HOST_AWAKE)
    before = _sleeps(server)
    server.vcpu_out(0)
    _until(lambda: _sleeps(server) > before)
    asleep = _sleeps(server)
    assert _hint(memory) == HOST_AWAKE       # the VMM wakes it before the guest runs
    time.sleep(0.05)
    assert _sleeps(server) == asleep          # asleep, not spinning and napping
    server.wake(0)
    # Awake again, and then idle for its spin: the usual hinted sleep.
    _until(lambda: _sleeps(server) > asleep and _hint(memory) == HOST_SLEEPING)


def test_thread_spins_while_a_vcpu_is_in_the_guest(server):
    """With another vCPU's ring active and its vCPU in the guest, one vCPU out does
    not put the thread to sleep before its idle spin ends (it is hinted then)."""
    server, memory = server
    _until(lambda: _sleeps(server) >= 1)
    server.add_ring(1)
    server.wake(0)
    _until(lambda: _hint(memory) == HOST_AWAKE)
    before = _sleeps(server)
    server.vcpu_out(0)
    _until(lambda: _sleeps(server) > before)
    assert _hint(memory) == HOST_SLEEPING    # the idle sleep, not the vCPU-out one
