"""The call stubs and call rings of one machine: the exit-less way into the VMM.

With the stubs installed, ``syscall`` lands (MSR_LSTAR) on a user page of code that
hands the call to a host thread through the ring page after it and spins for the
answer (native/callstub.S, native/callring.h). Both pages are cut into slots, one
per vCPU (``layout.CALL_SLOT_SIZE`` bytes): slot k's copy of the stub stores into
ring k, one page further on, RIP-relative. The machine owns the two pages and maps
them into every address space at ``layout.CALL_STUB``; what serves the rings is the
business of the layer above (``linux.fastpath``).
"""

from __future__ import annotations

import struct

from ..memory import PAGE_SIZE, AddressSpace, GuestMemory, Perm
from . import _trampoline, layout

_ADDRESS = struct.Struct("<Q")

if layout.CALL_SLOT_SIZE != _trampoline.CALL_SLOT_SIZE:
    raise ImportError("layout.CALL_SLOT_SIZE disagrees with callring.h's CALLRING_SLOT_SIZE")


class CallRing:
    """Two frames of guest memory: the stubs' code (each copy patched with its exits)
    and the rings. Allocated once per machine; a forked child has its own copies."""

    def __init__(self, memory: GuestMemory) -> None:
        self.memory = memory
        self.stub_frame = memory.frames.alloc()
        self.ring_frame = memory.frames.alloc()
        code = bytearray(_trampoline.CALL_STUB)
        _ADDRESS.pack_into(code, _trampoline.CALL_STUB_SLOW_TARGET,
                           layout.TRAMPOLINE + _trampoline.SYSCALL_ENTRY)
        _ADDRESS.pack_into(code, _trampoline.CALL_STUB_WAIT_TARGET, layout.CALL_WAIT_TARGET)
        if len(code) > layout.CALL_SLOT_SIZE:
            raise ValueError("the call stub does not fit its slot")
        slot = bytes(code).ljust(layout.CALL_SLOT_SIZE, b"\xcc")   # int3 between copies
        memory.write(self.stub_frame, slot * layout.CALL_SLOTS)

    @property
    def ring_host_address(self) -> int:
        """Where slot 0's ring is in this (the VMM's) address space."""
        return self.ring_host_address_of(0)

    def ring_host_address_of(self, slot: int) -> int:
        """Where slot ``slot``'s ring is in this (the VMM's) address space."""
        layout.call_stub_of(slot)           # checks the slot
        return self.memory.mapping.address + self.ring_frame + slot * layout.CALL_SLOT_SIZE

    def map_into(self, space: AddressSpace) -> None:
        """Map the stubs (read, execute) and the rings (read, write) for user code."""
        if space.walk(layout.CALL_STUB) is not None:
            return
        space.map(layout.CALL_STUB, PAGE_SIZE, Perm.READ | Perm.EXEC | Perm.USER,
                  paddr=self.stub_frame)
        space.map(layout.CALL_RING, PAGE_SIZE, Perm.READ | Perm.WRITE | Perm.USER,
                  paddr=self.ring_frame)
