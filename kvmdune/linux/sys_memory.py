"""Memory system calls, emulated in the guest's own page tables (``mm``)."""

from __future__ import annotations

import os

from .abi import MAP_TYPE, Errno, MapFlags, MapType, MlockallFlags, MlockFlags, ProtFlags
from .dispatch import handles


@handles("brk")
def sys_brk(proc, cpu, address, *_):
    """Implements brk(2)."""
    return proc.mm.sys_brk(address)


@handles("mmap")
def sys_mmap(proc, cpu, address, length, prot, flags, fd, offset):
    """Implements mmap(2): anonymous and private file mappings are guest frames
    (file contents copied in); shared mappings are host memory mapped into the guest
    through a memory slot of their own, so writes reach the file and other
    processes (a forked child shares them too, as on Linux)."""
    read_file = share = None
    name = ""
    shared = flags & MAP_TYPE in (MapType.MAP_SHARED, MapType.MAP_SHARED_VALIDATE)
    writable = bool(prot & ProtFlags.PROT_WRITE)
    memory = proc.space.memory
    if shared and flags & MapFlags.MAP_ANONYMOUS:
        def share(size: int) -> object:
            shm = os.memfd_create("kvmdune-shared", os.MFD_CLOEXEC)
            try:
                os.ftruncate(shm, size)
                return memory.add_shared(size, shm, 0, writable=True)
            finally:
                os.close(shm)
        name = "/dev/zero (deleted)"
    elif not flags & MapFlags.MAP_ANONYMOUS:
        host = proc.fds.host(fd & 0xFFFF_FFFF if fd < 1 << 63 else -1)
        if host is None:
            return -Errno.EBADF
        if shared:
            def share(size: int, host: int = host) -> object:
                return memory.add_shared(size, host, offset, writable=writable)
        try:
            name = os.readlink(f"/proc/self/fd/{host}")
            size = os.fstat(host).st_size
        except OSError as exc:
            return -(exc.errno or Errno.EACCES)

        def read_file(file_offset: int, length: int, host: int = host, size: int = size) -> bytes:
            wanted = max(0, min(length, size - file_offset))
            data = os.pread(host, wanted, file_offset) if wanted else b""
            return data
    return proc.mm.sys_mmap(address, length, prot, flags, read_file, offset, name, share)


@handles("munmap")
def sys_munmap(proc, cpu, address, length, *_):
    """Implements munmap(2)."""
    return proc.mm.sys_munmap(address, length)


@handles("mprotect")
def sys_mprotect(proc, cpu, address, length, prot, *_):
    """Implements mprotect(2)."""
    return proc.mm.sys_mprotect(address, length, prot)


@handles("mremap")
def sys_mremap(proc, cpu, old, old_length, new_length, flags, new_address, _):
    """Implements mremap(2)."""
    return proc.mm.sys_mremap(old, old_length, new_length, flags, new_address)


@handles("madvise")
def sys_madvise(proc, cpu, address, length, advice, *_):
    """Implements madvise(2)."""
    return proc.mm.sys_madvise(address, length, advice)


@handles("msync")
def sys_msync(proc, cpu, address, length, flags, *_):
    """Implements msync(2)."""
    return proc.mm.sys_msync(address, length, flags)


@handles("mlock", "munlock")
def sys_mlock(proc, cpu, address, length, *_):
    """Implements mlock(2) and munlock(2): guest memory is always resident."""
    return proc.mm.sys_mlock(address, length)


@handles("mlock2")
def sys_mlock2(proc, cpu, address, length, flags, *_):
    """Implements mlock2(2)."""
    if flags & 0xFFFF_FFFF & ~MlockFlags.MLOCK_ONFAULT:
        return -Errno.EINVAL
    return proc.mm.sys_mlock(address, length)


@handles("mlockall")
def sys_mlockall(proc, cpu, flags, *_):
    """Implements mlockall(2): the flags are checked; memory is resident anyway."""
    flags &= 0xFFFF_FFFF
    valid = MlockallFlags.MCL_CURRENT | MlockallFlags.MCL_FUTURE | MlockallFlags.MCL_ONFAULT
    if not flags or flags & ~valid or flags == MlockallFlags.MCL_ONFAULT:
        return -Errno.EINVAL
    return 0


@handles("munlockall")
def sys_munlockall(proc, cpu, *_):
    """Implements munlockall(2)."""
    return 0
