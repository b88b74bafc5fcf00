"""Memory system calls, emulated in the guest's own page tables (``mm``)."""

from __future__ import annotations

import fcntl
import os
import struct

from ..machine.layout import TASK_SIZE
from ..memory import PAGE_SIZE, PTE
from .fdtable import HOST_FD_FLOOR
from .abi import (MAP_TYPE, Errno, MapFlags, MapType, MempolicyFlags, MlockallFlags,
                  MlockFlags, PkeyAccess, ProtFlags, c_int)
from .host_unsafe import HostBuffer, host_syscall
from .sys_resource import address_limits
from .syscall_table import Sysno
from .uaccess import write_bytes

# As plain ints: testing an int against an IntFlag member builds a new member each time.
_MAP_TYPE, _MAP_ANONYMOUS = int(MAP_TYPE), int(MapFlags.MAP_ANONYMOUS)
_MAP_SHARED_TYPES = frozenset((int(MapType.MAP_SHARED), int(MapType.MAP_SHARED_VALIDATE)))
_PROT_WRITE = int(ProtFlags.PROT_WRITE)
_PKEY_RIGHTS = int(PkeyAccess.PKEY_DISABLE_ACCESS | PkeyAccess.PKEY_DISABLE_WRITE)


def sys_brk(proc, cpu, address, *_):
    """Implements brk(2)."""
    return proc.mm.sys_brk(address, limits=address_limits(proc))


def sys_mmap(proc, cpu, address, length, prot, flags, fd, offset):
    """Implements mmap(2): anonymous and private file mappings are guest frames
    (file contents copied in); shared mappings are host memory mapped into the guest
    through a memory slot of their own, so writes reach the file and other
    processes (a forked child shares them too, as on Linux)."""
    read_file = share = read_into = keep_file = None
    name = ""
    shared = flags & _MAP_TYPE in _MAP_SHARED_TYPES
    writable = bool(prot & _PROT_WRITE)
    memory = proc.space.memory
    if shared and flags & _MAP_ANONYMOUS:
        def share(size: int) -> object:
            shm = os.memfd_create("kvmdune-shared", os.MFD_CLOEXEC)
            try:
                os.ftruncate(shm, size)
                return memory.add_shared(size, shm, 0, writable=True)
            finally:
                os.close(shm)
        name = "/dev/zero (deleted)"
    elif not flags & _MAP_ANONYMOUS:
        host = proc.fds.host(fd)
        if host is None:
            return -Errno.EBADF
        if shared:
            def share(size: int, host: int = host) -> object:
                # The region keeps a descriptor of its own: mremap may grow the
                # mapping after the guest closed its descriptor.
                keep = fcntl.fcntl(host, fcntl.F_DUPFD_CLOEXEC, HOST_FD_FLOOR)
                try:
                    return memory.add_shared(size, host, offset, writable=writable,
                                             file_backed=True, keep=keep,
                                             release=proc.fds.close_own_copy)
                except BaseException:
                    proc.fds.close_own_copy(keep)
                    raise
        try:
            name = os.readlink(f"/proc/self/fd/{host}")
            size = os.fstat(host).st_size
        except OSError as exc:
            return -(exc.errno or Errno.EACCES)

        def read_file(file_offset: int, length: int, host: int = host, size: int = size) -> bytes:
            wanted = max(0, min(length, size - file_offset))
            data = os.pread(host, wanted, file_offset) if wanted else b""
            return data

        def read_into(file_offset: int, length: int, buffers: list, host: int = host,
                      size: int = size) -> int:
            wanted = max(0, min(length, size - file_offset))   # as read_file: no further
            clipped = []
            for buffer in buffers:
                if wanted <= 0:
                    break
                clipped.append(buffer[:wanted])
                wanted -= len(clipped[-1])
            return os.preadv(host, clipped, file_offset) if clipped else 0

        def keep_file(host: int = host) -> int:
            return fcntl.fcntl(host, fcntl.F_DUPFD_CLOEXEC, HOST_FD_FLOOR)
    # Patched call sites are found in the file the descriptor holds (not whatever
    # its path names by now): the VMM's own descriptor, through /proc.
    file_path = "" if read_file is None else f"/proc/self/fd/{host}"
    return proc.mm.sys_mmap(address, length, prot, flags, read_file, offset, name, share,
                            file_path=file_path, read_into=read_into, keep_file=keep_file,
                            file_size=None if read_file is None else size,
                            limits=address_limits(proc))


def sys_munmap(proc, cpu, address, length, *_):
    """Implements munmap(2)."""
    return proc.mm.sys_munmap(address, length)


def sys_mprotect(proc, cpu, address, length, prot, *_):
    """Implements mprotect(2)."""
    return proc.mm.sys_mprotect(address, length, prot, limits=address_limits(proc))


def sys_pkey_mprotect(proc, cpu, address, length, prot, pkey, *_):
    """Implements pkey_mprotect(2) (mm.py: the guest's CPU has no protection keys)."""
    return proc.mm.sys_pkey_mprotect(address, length, prot, c_int(pkey),
                                     limits=address_limits(proc))


def sys_pkey_alloc(proc, cpu, flags, access_rights, *_):
    """Implements pkey_alloc(2) as Linux 6.18 answers on a CPU without protection keys
    (the guest's; measured natively on such a host): no key is left (ENOSPC) for
    valid rights; flags, unknown rights, and no rights at all are EINVAL."""
    if flags or not access_rights or access_rights & ~_PKEY_RIGHTS:
        return -Errno.EINVAL
    return -Errno.ENOSPC


def sys_pkey_free(proc, cpu, pkey, *_):
    """Implements pkey_free(2): no key was ever allocated (EINVAL)."""
    return -Errno.EINVAL


def sys_mremap(proc, cpu, old, old_length, new_length, flags, new_address, _):
    """Implements mremap(2)."""
    return proc.mm.sys_mremap(old, old_length, new_length, flags, new_address,
                              limits=address_limits(proc))


def sys_madvise(proc, cpu, address, length, advice, *_):
    """Implements madvise(2)."""
    return proc.mm.sys_madvise(address, length, advice)


def sys_msync(proc, cpu, address, length, flags, *_):
    """Implements msync(2)."""
    return proc.mm.sys_msync(address, length, flags)


def sys_mlock(proc, cpu, address, length, *_):
    """Implements mlock(2) and munlock(2): guest memory is always resident."""
    return proc.mm.sys_mlock(address, length)


def sys_mlock2(proc, cpu, address, length, flags, *_):
    """Implements mlock2(2)."""
    if flags & 0xFFFF_FFFF & ~MlockFlags.MLOCK_ONFAULT:
        return -Errno.EINVAL
    return proc.mm.sys_mlock(address, length)


def sys_mlockall(proc, cpu, flags, *_):
    """Implements mlockall(2): the flags are checked; memory is resident anyway."""
    flags &= 0xFFFF_FFFF
    valid = MlockallFlags.MCL_CURRENT | MlockallFlags.MCL_FUTURE | MlockallFlags.MCL_ONFAULT
    if not flags or flags & ~valid or flags == MlockallFlags.MCL_ONFAULT:
        return -Errno.EINVAL
    return 0


def sys_munlockall(proc, cpu, *_):
    """Implements munlockall(2)."""
    return 0


#: Pages whose residency mincore(2) reports per checked write of ``vec``.
_MINCORE_CHUNK_PAGES = 4096


def sys_mincore(proc, cpu, address, length, vec, *_):
    """Implements mincore(2) on the guest's page tables: an anonymous page is
    resident once the guest touched it (the accessed bit: fault-around maps
    neighbours it has not touched); a file or shared page once it is mapped (Linux
    reports the file's page cache, which kvmdune cannot see). Touched means since
    the page was mapped: clear_refs, which clears the accessed bits for its own
    reader, changes nothing here."""
    if address % PAGE_SIZE:
        return -Errno.EINVAL
    pages = -(-length // PAGE_SIZE)
    if address + pages * PAGE_SIZE > TASK_SIZE:
        return -Errno.ENOMEM
    touched_since_mapping = proc.space.page_bits.since_mapping
    for first in range(0, pages, _MINCORE_CHUNK_PAGES):
        chunk_start = address + first * PAGE_SIZE
        count = min(_MINCORE_CHUNK_PAGES, pages - first)
        touched = set(touched_since_mapping.read(chunk_start, count * PAGE_SIZE,
                                                 PTE.ACCESSED, clear=False))
        residency = bytearray()
        for page in range(count):
            vaddr = chunk_start + page * PAGE_SIZE
            vma = proc.mm.find(vaddr)
            if vma is None:
                return -Errno.ENOMEM
            found = proc.space.walk(vaddr)
            backed = vma.source is not None or vma.region is not None
            resident = found is not None and found.present and (
                backed or vaddr & ~(found.page_size - 1) in touched)
            residency.append(int(resident))
        write_bytes(proc.space, vec + first, bytes(residency))
    return 0


def sys_get_mempolicy(proc, cpu, mode, nodemask, maxnode, address, flags, _):
    """Implements get_mempolicy(2). The guest's policy is the process's own (the
    VMM's, which it shares with the caller), so the host answers for the process;
    a question about a guest address (MPOL_F_ADDR) is answered here: guest memory
    always has the default policy."""
    known = (MempolicyFlags.MPOL_F_NODE | MempolicyFlags.MPOL_F_ADDR
             | MempolicyFlags.MPOL_F_MEMS_ALLOWED)
    if flags & ~known:
        return -Errno.EINVAL
    # The kernel copies ALIGN(maxnode - 1, 64) bits, and refuses more than a page.
    mask_bytes = ((maxnode - 1) % (1 << 64) + 63) // 64 * 8 if nodemask else 0
    if mask_bytes > PAGE_SIZE:
        return -Errno.EINVAL
    if flags & MempolicyFlags.MPOL_F_ADDR:
        if flags & MempolicyFlags.MPOL_F_MEMS_ALLOWED:
            return -Errno.EINVAL
        if proc.mm.find(address) is None:
            return -Errno.EFAULT
        # MPOL_F_NODE: the node of the page; guest memory is one host mapping with
        # the default policy, so the host allocates it on the first node.
        answer, mask = 0, bytes(mask_bytes)
    else:
        mode_buffer, mask_buffer = HostBuffer(4), HostBuffer(mask_bytes)
        result = host_syscall(Sysno.get_mempolicy, mode_buffer, mask_buffer if nodemask else 0,
                              maxnode, 0, flags)
        if result < 0:
            return result
        (answer,), mask = struct.unpack("<i", mode_buffer.read()), mask_buffer.read()
    if mode:
        write_bytes(proc.space, mode, struct.pack("<i", answer))
    if nodemask:
        write_bytes(proc.space, nodemask, mask)
    return 0
