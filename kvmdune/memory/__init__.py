"""kvmdune.memory: guest-physical memory, frames, x86-64 page tables, address spaces.

Every restricting page-table change is invalidated before the guest runs again
(PLATFORM.md); checked access never reaches host memory the guest could not.
"""

from .address_space import READ, VMM, WRITE, Access, AddressSpace, FaultKind, GuestFault
from .frames import (HUGE_PAGE_SIZE, PAGE_SIZE, FrameAllocator, OutOfGuestMemory)
from .guest_memory import DEFAULT_GUEST_MEMORY, GuestMemory
from .pagetable import (PTE, USER_SPACE_END, AlreadyMapped, PageTableError, PageTables,
                        Perm, Translation, is_canonical)

__all__ = [
    "READ", "VMM", "WRITE", "Access", "AddressSpace", "FaultKind", "GuestFault", "HUGE_PAGE_SIZE",
    "PAGE_SIZE", "FrameAllocator", "OutOfGuestMemory", "DEFAULT_GUEST_MEMORY",
    "GuestMemory", "PTE", "USER_SPACE_END", "AlreadyMapped", "PageTableError",
    "PageTables", "Perm", "Translation", "is_canonical",
]
