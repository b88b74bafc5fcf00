"""vfork's shared memory, as the parent sees it.

Linux's vfork (and clone(CLONE_VM|CLONE_VFORK), glibc's posix_spawn) runs the child
in the parent's memory until the child execs or exits; the parent sleeps meanwhile.
What the child writes there is the parent's when it wakes: glibc's posix_spawn
child stores exec's errno in the parent's memory, so that posix_spawn of a missing
program returns ENOENT; `x = 1; _exit(0)` in a vfork child sets the parent's x.

A kvmdune child of vfork is a new VMM process on a copy-on-write copy of guest
memory (one VM belongs to one process), so its writes would stay its own. So, just
before the child's VM runs, the dirty bits of its entries are handed to the bit
readers (no reader loses a write; page_bits.py), and when the child execs or ends,
every page whose dirty bit is set again -- written by the child, at CPL3 or by the
VMM on its behalf -- goes back to the parent over the pipe the parent waits on,
and the parent writes it into its own memory before its vfork returns.

Not the same as sharing: the child's pages are written back whole, so a write
another thread of the parent makes to the same page while the child runs is lost
(Linux's vfork stops only the calling thread); and mappings the child makes or
changes (its mmap/munmap/mprotect, which vfork children do not make) stay its own.
"""

from __future__ import annotations

import os
import signal
import struct
from typing import Callable

from ..memory import HUGE_PAGE_SIZE, PAGE_SIZE, PTE, USER_SPACE_END, VMM, WRITE, AddressSpace, GuestFault
from .abi import Errno
from .host_unsafe import HostBuffer, host_syscall
from .syscall_table import Sysno

#: One record on the pipe: the guest address of a page and its length (4 KiB, or
#: 2 MiB for a huge page), then its bytes.
_RECORD = struct.Struct("<QI")
#: A record's length must be one of these: anything else is not from our child.
_PAGE_LENGTHS = (PAGE_SIZE, HUGE_PAGE_SIZE)


def start_in_child(space: AddressSpace) -> None:
    """In the child, before its new VM first runs: from here on, a set dirty bit
    means the child wrote the page. The bits set so far go to the readers, with no
    invalidation (the new VM holds no translation yet)."""
    space.page_bits.hand_over(PTE.DIRTY, 0, USER_SPACE_END)


def send_written_pages(space: AddressSpace, fd: int) -> None:
    """In the child at its exec (before the old memory goes) or its end: every page
    it wrote, to the parent waiting on ``fd``. A parent that went away is no error."""
    pages = space.tables.scan_bits(0, USER_SPACE_END, int(PTE.DIRTY)).pages
    try:
        for vaddr in pages:
            length = HUGE_PAGE_SIZE if _is_huge(space, vaddr) else PAGE_SIZE
            data = space.read(vaddr, length, VMM)
            _write_all(fd, _RECORD.pack(vaddr, length) + data)
    except (BrokenPipeError, GuestFault):
        pass


def receive_written_pages(fd: int, space: AddressSpace,
                          blocking: Callable[[Callable[[], int]], int]) -> int:
    """In the parent: read the child's pages until it execs or ends (end of file)
    and write each into ``space``, as the child's writes would have landed. Each
    read waits through ``blocking`` (without the process's lock); 0, or -errno
    (-EINTR) when the wait was interrupted."""
    header = HostBuffer(_RECORD.size)
    while True:
        got = blocking(lambda: _read_exactly(fd, header, _RECORD.size))
        if got <= 0:
            return got
        vaddr, length = _RECORD.unpack(header.read(_RECORD.size))
        if length not in _PAGE_LENGTHS or vaddr % PAGE_SIZE or vaddr + length > USER_SPACE_END:
            return -Errno.EIO         # not our child's: stop listening, leave memory be
        page = HostBuffer(length)
        got = blocking(lambda: _read_exactly(fd, page, length))
        if got <= 0:
            return got
        _write_page(space, vaddr, page.read(length))


def _write_page(space: AddressSpace, vaddr: int, data: bytes) -> None:
    """Where the parent can write (demand paging it in if need be), as a write of
    the child's would have; a page the parent no longer maps is left alone."""
    try:
        space.write(vaddr, data, WRITE)
    except GuestFault:
        try:
            space.write(vaddr, data, VMM)      # mapped read-only since: still its bytes
        except GuestFault:
            pass


def _is_huge(space: AddressSpace, vaddr: int) -> bool:
    found = space.walk(vaddr)
    return found is not None and found.page_size == HUGE_PAGE_SIZE


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to the parent's pipe. If the parent stopped listening, the
    SIGPIPE the write raises at this thread is taken here: it is no signal of the
    guest's (the VMM queues the ones its calls for the guest raise)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        signal.sigtimedwait({signal.SIGPIPE}, 0)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _read_exactly(fd: int, buffer: HostBuffer, length: int) -> int:
    """``length`` bytes into ``buffer``: ``length``, 0 at end of file, or -errno."""
    done = 0
    while done < length:
        got = host_syscall(Sysno.read, fd, buffer.address + done, length - done)
        if got <= 0:
            return got if got < 0 or done == 0 else -Errno.EIO
        done += got
    return done
