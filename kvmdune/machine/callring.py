"""The call stub and call ring of one machine: the exit-less way into the VMM.

With the stub installed, ``syscall`` lands (MSR_LSTAR) on a user page of code that
hands the call to a host thread through the ring page after it and spins for the
answer (native/callstub.S, native/callring.h). The machine owns the two pages and
maps them into every address space at ``layout.CALL_STUB``; what serves the ring is
the business of the layer above (``linux.fastpath``).
"""

from __future__ import annotations

import struct

from ..memory import PAGE_SIZE, AddressSpace, GuestMemory, Perm
from . import _trampoline, layout

_ADDRESS = struct.Struct("<Q")


class CallRing:
    """Two frames of guest memory: the stub's code (patched with its exits) and the
    ring. Allocated once per machine; a forked child has its own copies."""

    def __init__(self, memory: GuestMemory) -> None:
        self.memory = memory
        self.stub_frame = memory.frames.alloc()
        self.ring_frame = memory.frames.alloc()
        code = bytearray(_trampoline.CALL_STUB)
        _ADDRESS.pack_into(code, _trampoline.CALL_STUB_SLOW_TARGET,
                           layout.TRAMPOLINE + _trampoline.SYSCALL_ENTRY)
        _ADDRESS.pack_into(code, _trampoline.CALL_STUB_WAIT_TARGET, layout.CALL_WAIT_TARGET)
        if len(code) > PAGE_SIZE:
            raise ValueError("the call stub does not fit its page")
        memory.write(self.stub_frame, bytes(code))

    @property
    def ring_host_address(self) -> int:
        """Where the ring page is in this (the VMM's) address space."""
        return self.memory.mapping.address + self.ring_frame

    def map_into(self, space: AddressSpace) -> None:
        """Map the stub (read, execute) and the ring (read, write) for user code."""
        if space.walk(layout.CALL_STUB) is not None:
            return
        space.map(layout.CALL_STUB, PAGE_SIZE, Perm.READ | Perm.EXEC | Perm.USER,
                  paddr=self.stub_frame)
        space.map(layout.CALL_RING, PAGE_SIZE, Perm.READ | Perm.WRITE | Perm.USER,
                  paddr=self.ring_frame)
