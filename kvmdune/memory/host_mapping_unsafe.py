"""Raw host memory: the one module that calls mmap/mprotect/madvise through ctypes.

Guest-physical memory is one anonymous private host mapping. Everything else in
kvmdune reaches it only through the bounds-checked memoryviews this module hands
out, never through raw pointers (gVisor keeps its ``unsafe`` code in few files in
the same spirit).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

def load_libc() -> ctypes.CDLL:
    """glibc by its soname; ctypes.util's search (which runs ldconfig) only elsewhere."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library
        return ctypes.CDLL(find_library("c"), use_errno=True)


_libc = load_libc()
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_libc.write.restype = ctypes.c_ssize_t

MAP_FAILED = ctypes.c_void_p(-1).value
MAP_NORESERVE = 0x4000  # linux/mman.h: do not reserve swap for the mapping
MAP_FIXED = 0x10       # linux/mman.h (Python 3.11's mmap module lacks it)
MADV_DONTNEED = 4
MADV_HUGEPAGE = 14      # linux/mman.h: back with transparent huge pages
HOST_HUGE_PAGE = 2 << 20
MADV_DONTFORK = 10
#: Linux 5.14: fault the range in, readable / writable, in one call (EINVAL before);
#: EFAULT where an access would raise SIGBUS (a file's pages past its end).
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
PROT_READ, PROT_WRITE, PROT_EXEC = mmap.PROT_READ, mmap.PROT_WRITE, mmap.PROT_EXEC


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class HostMapping:
    """An anonymous, private, lazily committed host mapping of ``size`` bytes.

    ``view`` is a memoryview of its bytes and ``words`` the same memory as 64-bit
    little-endian words; both check bounds on every access.
    """

    def __init__(self, size: int, fd: int = -1, offset: int = 0,
                 writable: bool = True, borrowed_address: int | None = None,
                 at: "Reservation | None" = None) -> None:
        """Anonymous private memory, or (``fd`` given) a shared mapping of a file, or
        (``borrowed_address`` given) pages the kernel mapped into the VMM itself:
        read-only, never unmapped or reprotected here (see ``borrow``); ``at``: the
        file mapped over the start of a reservation, which it replaces (it must be
        large enough)."""
        self.prot = PROT_READ | (PROT_WRITE if writable else 0)
        self.borrowed = borrowed_address is not None
        if self.borrowed:
            addr = borrowed_address
        elif fd < 0:
            addr = self._map_anonymous(size)
        elif at is not None:
            if size > at.size:
                raise ValueError(f"{size:#x} bytes do not fit a reservation of {at.size:#x}")
            addr = self._map(size, mmap.MAP_SHARED | MAP_FIXED, fd, offset, at.address)
        else:
            addr = self._map(size, mmap.MAP_SHARED, fd, offset)
        self.address: int = addr
        self.size = size
        # Safe: the array spans exactly the mapping, which lives until close().
        self._array = (ctypes.c_char * size).from_address(addr)
        self.view = memoryview(self._array).cast("B")
        if not writable:
            self.view = self.view.toreadonly()
        self.words = self.view.cast("Q")

    @classmethod
    def borrow(cls, address: int, size: int) -> "HostMapping":
        """A read-only view of ``size`` bytes the kernel mapped into this process at
        ``address`` (the vDSO's data pages). Some of its pages may have nothing
        behind them (reading one raises SIGBUS): only pages ``readable_pages`` found
        may be read, by the VMM or through a guest translation."""
        if address % mmap.PAGESIZE or size <= 0 or size % mmap.PAGESIZE:
            raise ValueError(f"borrowed range {address:#x}+{size:#x} is not whole pages")
        return cls(size, writable=False, borrowed_address=address)

    def readable_pages(self) -> list[int]:
        """Offsets of the pages that can be read: each is handed to write(2) on a
        pipe, which reports EFAULT (never a signal) for a page with nothing behind it."""
        found = []
        read_end, write_end = os.pipe()
        try:
            for offset in range(0, self.size, mmap.PAGESIZE):
                if _libc.write(write_end, ctypes.c_void_p(self.address + offset), 1) == 1:
                    found.append(offset)
                    os.read(read_end, 1)
        finally:
            os.close(read_end)
            os.close(write_end)
        return found

    def _map(self, size: int, flags: int, fd: int = -1, offset: int = 0,
             address: int | None = None) -> int:
        addr = _libc.mmap(address, size, self.prot, flags, fd, offset)
        if addr in (None, MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of {size} bytes for guest memory: {os.strerror(err)}")
        return addr

    def _map_anonymous(self, size: int) -> int:
        """Guest memory, 2 MiB-aligned: a guest 2 MiB frame is then a 2 MiB-aligned
        host range, which can be one host huge page (``advise_huge_pages``)."""
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE
        addr = self._map(size + HOST_HUGE_PAGE, flags)
        aligned = -(-addr // HOST_HUGE_PAGE) * HOST_HUGE_PAGE
        if aligned > addr:
            _check(_libc.munmap(addr, aligned - addr), "munmap")
        tail = addr + size + HOST_HUGE_PAGE - (aligned + size)
        if tail:
            _check(_libc.munmap(aligned + size, tail), "munmap")
        return aligned

    def advise_huge_pages(self, offset: int, length: int) -> None:
        """Ask for transparent huge pages behind [offset, offset+length) of the
        mapping (2 MiB-aligned), so that KVM can map a guest 2 MiB page there with one
        large entry and the host faults it in once, not 512 times. Only for ranges
        the guest uses whole: advice over the whole mapping made every 4 KiB guest
        page cost the host a 2 MiB page (and compaction at fault time). Advice: a
        refusal changes nothing."""
        if 0 <= offset and offset + length <= self.size:
            _libc.madvise(self.address + offset, length, MADV_HUGEPAGE)

    def close(self) -> None:
        if self.address:
            self._release_views()
            if not self.borrowed:
                _check(_libc.munmap(self.address, self.size), "munmap")
            self.address = 0

    def _release_views(self) -> None:
        self.words.release()
        self.view.release()
        del self._array

    def retire(self, reserved: int) -> "Reservation":
        """Replace the mapping, and what follows it up to ``reserved`` bytes, by an
        inaccessible reservation of the same addresses (one mmap, no munmap gap
        another mapping could fill): its pages are gone from here and from every
        translation KVM made of them (the mmap fires KVM's MMU notifier), while a
        memory slot over the addresses can stay. The mapping is closed."""
        if not self.address or self.borrowed:
            raise ValueError("the mapping is closed, or the kernel's own")
        self._release_views()
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED
        addr = _libc.mmap(self.address, reserved, 0, flags, -1, 0)   # PROT_NONE
        if addr in (None, MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of a reservation: {os.strerror(err)}")
        self.address = 0
        return Reservation(addr, reserved)

    def _checked_range(self, offset: int, length: int) -> int:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset:#x}+{length:#x} outside the guest memory")
        return self.address + offset

    def discard(self, offset: int, length: int) -> None:
        """Give the pages back to the host (they read as zero afterwards)."""
        _check(_libc.madvise(self._checked_range(offset, length), length, MADV_DONTNEED),
               "madvise(MADV_DONTNEED)")

    def populate(self, offset: int, length: int) -> None:
        """Fault the pages in, writable, in one call, before the VMM fills them: one
        trip into the host kernel instead of one page fault per page. Best effort
        (a host without MADV_POPULATE_WRITE faults them one by one as before)."""
        _libc.madvise(self._checked_range(offset, length), length, MADV_POPULATE_WRITE)

    def readable(self, offset: int, length: int) -> bool:
        """Whether every page of [offset, offset+length) can be read without a
        SIGBUS (a shared file mapping's pages past the file's end cannot; the file
        may have shrunk or grown since it was mapped). Asked of the kernel, which
        faults the pages in for reading and reports EFAULT where a fault would raise
        SIGBUS, never a signal. A kernel without MADV_POPULATE_READ (before 5.14)
        cannot tell: the pages count as readable."""
        start = self._checked_range(offset, length)
        if _libc.madvise(start, length, MADV_POPULATE_READ) == 0:
            return True
        return ctypes.get_errno() != errno.EFAULT

    def readable_end(self) -> int:
        """How many bytes from the mapping's start can be read (``readable``): all
        of it, or up to the page after the file's end. The pages that can be read
        are a prefix (a file ends once), found by bisection, one page read per step."""
        pages = self.size // mmap.PAGESIZE
        if self.readable((pages - 1) * mmap.PAGESIZE, mmap.PAGESIZE):
            return self.size
        low, high = 0, pages - 1      # pages [0, low) readable; page ``high`` is not
        while low < high:
            middle = (low + high) // 2
            if self.readable(middle * mmap.PAGESIZE, mmap.PAGESIZE):
                low = middle + 1
            else:
                high = middle
        return low * mmap.PAGESIZE

    def reprotect(self, offset: int, length: int) -> None:
        """An mprotect pair over the range that never removes access: execute
        permission added, then taken away again.

        The change itself is a no-op for the host, but mprotect fires KVM's MMU
        notifier for every populated part of the range whatever the direction of the
        change, and KVM drops every shadow (or EPT/NPT) entry mapping these pages and
        flushes every vCPU's TLB: the only invalidation that software KVM honours for
        host writes to guest page tables (PLATFORM.md). Write access is never taken
        away (a read-only step would do as well for KVM), so another vCPU's KVM_RUN
        or another host thread copying into guest memory meanwhile never faults.
        """
        if self.borrowed:
            raise ValueError("borrowed kernel pages cannot be reprotected")
        start = self._checked_range(offset, length)
        _check(_libc.mprotect(start, length, self.prot | PROT_EXEC), "mprotect(+PROT_EXEC)")
        _check(_libc.mprotect(start, length, self.prot), "mprotect (restore)")


class Reservation:
    """Host addresses held with no access (a retired shared mapping's), so that no
    other mapping lands where a memory slot still points."""

    def __init__(self, address: int, size: int) -> None:
        self.address, self.size = address, size

    @classmethod
    def anywhere(cls, size: int) -> "Reservation":
        """``size`` bytes of new inaccessible addresses, wherever the host puts them."""
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE
        addr = _libc.mmap(None, size, 0, flags, -1, 0)      # PROT_NONE
        if addr in (None, MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of a reservation: {os.strerror(err)}")
        return cls(addr, size)

    def close(self) -> None:
        if self.address:
            _check(_libc.munmap(self.address, self.size), "munmap")
            self.address = 0
