"""Resource limits of the guest: kept per guest process, never applied to the VMM
(a guest lowering RLIMIT_AS must not starve the Python that serves it)."""

from __future__ import annotations

import os
import resource
import struct

from .abi import Errno, RlimitResource
from .fdtable import NR_OPEN, reserve_vmm_fds
from .mm import AddressLimits
from .syscall_table import Sysno
from .uaccess import read_bytes, write_bytes

RLIM_NLIMITS = 16
RLIMIT_NOFILE = 7
RLIM_INFINITY = 0xFFFF_FFFF_FFFF_FFFF     # as the guest reads it (an unsigned 64-bit value)
_RLIMIT = struct.Struct("<QQ")
SYS_PRLIMIT64 = Sysno.prlimit64


def initial_limits() -> dict[int, tuple[int, int]]:
    limits = {}
    for which in range(RLIM_NLIMITS):
        try:
            soft, hard = resource.getrlimit(which)
        except (ValueError, OSError):
            continue
        limits[which] = (soft & RLIM_INFINITY, hard & RLIM_INFINITY)
    return limits


def guest_limits(nofile: tuple[int, int]) -> dict[int, tuple[int, int]]:
    """The limits a guest starts with: the VMM's own as it runs (the caller's, with
    those a sandbox sets), except RLIMIT_NOFILE: ``nofile``, the caller's (the VMM
    raises its own so that its descriptors do not count against the guest's)."""
    limits = initial_limits()
    limits[RLIMIT_NOFILE] = nofile
    return limits


def limits_of(proc) -> dict[int, tuple[int, int]]:
    """The guest process's own limits (its soft and hard value by resource)."""
    if not hasattr(proc, "rlimits"):
        proc.rlimits = initial_limits()
        proc.rlimits[RLIMIT_NOFILE] = (proc.fds.max_fds, proc.rlimits.get(RLIMIT_NOFILE, (0, proc.fds.max_fds))[1])
    return proc.rlimits


def address_limits(proc) -> AddressLimits | None:
    """The guest's RLIMIT_AS and RLIMIT_DATA for its memory calls (None: both
    unlimited, the usual case, which costs the calls nothing more)."""
    limits = limits_of(proc)
    address_space = limits.get(RlimitResource.RLIMIT_AS, (RLIM_INFINITY,))[0]
    data = limits.get(RlimitResource.RLIMIT_DATA, (RLIM_INFINITY,))[0]
    if address_space == data == RLIM_INFINITY:
        return None
    return AddressLimits(None if address_space == RLIM_INFINITY else address_space,
                         None if data == RLIM_INFINITY else data)


def _prlimit(proc, resource_id: int, new: int, old: int) -> int:
    limits = limits_of(proc)
    if resource_id not in limits:
        return -Errno.EINVAL
    if old:
        write_bytes(proc.space, old, _RLIMIT.pack(*limits[resource_id]))
    if new:
        soft, hard = _RLIMIT.unpack(read_bytes(proc.space, new, _RLIMIT.size))
        if soft > hard or (hard > limits[resource_id][1] and not _may_raise_hard_limits()):
            return -Errno.EINVAL if soft > hard else -Errno.EPERM
        if resource_id == RLIMIT_NOFILE:
            if hard > NR_OPEN:
                return -Errno.EPERM
            reserve_vmm_fds(soft)
            proc.fds.max_fds = soft
        limits[resource_id] = (soft, hard)
    return 0


CAP_SYS_RESOURCE = 24


def _may_raise_hard_limits() -> bool:
    """Whether Linux lets this process raise a hard limit (CAP_SYS_RESOURCE, which
    root may lack in a container)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def sys_prlimit64(proc, cpu, pid, resource_id, new, old, *_):
    """Implements prlimit64(2): the guest's own limits are the guest's; another
    process's go to the host."""
    if pid in (0, os.getpid()):
        return _prlimit(proc, resource_id, new, old)
    if new:
        return -Errno.EPERM
    return proc.forward_by_name("prlimit64", (pid, resource_id, 0, old, 0, 0))


def sys_getrlimit(proc, cpu, resource_id, old, *_):
    """Implements getrlimit(2)."""
    if not old and resource_id in limits_of(proc):
        return -Errno.EFAULT         # NULL is not "no output" here
    return _prlimit(proc, resource_id, 0, old)


def sys_setrlimit(proc, cpu, resource_id, new, *_):
    """Implements setrlimit(2)."""
    read_bytes(proc.space, new, _RLIMIT.size)    # copied in before anything, NULL too
    return _prlimit(proc, resource_id, new, 0)
