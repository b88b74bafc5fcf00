"""The extension point through which a layer above gives a process privileged
features (``kvmdune.dune``: the Dune API), without this layer importing it.

The Linux layer reserves a range of system-call numbers for hypercalls (far above
any Linux call, so natively they fail with ENOSYS) and hands each of them to the
process's ``Privileged`` object, created on the first hypercall by the factory the
run was given (``RunOptions.privileged``). Without a factory a hypercall is ENOSYS,
as on Linux.
"""

from __future__ import annotations

from typing import Callable, Final

from .abi import Errno

#: KVMDUNE_HYPERCALL_BASE and _COUNT (kvmdune/dune/include/kvmdune/hypercall.h).
HYPERCALL_BASE: Final = 0x00D0_0000
HYPERCALL_COUNT: Final = 64
HYPERCALLS: Final = range(HYPERCALL_BASE, HYPERCALL_BASE + HYPERCALL_COUNT)


class Privileged:
    """What a process with privileged features answers. The defaults are Linux's."""

    def hypercall(self, cpu, op: int, args: tuple[int, ...]):
        """The result of hypercall ``op`` (-errno on failure), None when the
        registers were set directly, or a Stop."""
        return -Errno.ENOSYS


#: Makes the Privileged object of a process on its first hypercall.
PrivilegedFactory = Callable[[object], Privileged]
