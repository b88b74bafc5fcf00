"""The guest's vDSO: Linux's own, mapped into the guest with Linux's own clock data.

Linux gives every process a vDSO, a small shared object through which
``clock_gettime``, ``gettimeofday``, ``time``, ``clock_getres`` and ``getcpu`` run
without a system call: its code reads the kernel's clock data from the ``[vvar]``
pages mapped just before it, and the CPU's time-stamp counter. A guest without one
makes a system call for every clock read.

kvmdune gives the guest the host's own: the VMM's ``[vdso]`` pages are copied into
the guest (private, as Linux's are), and the VMM's ``[vvar]`` and ``[vvar_vclock]``
pages, which the kernel keeps current, are mapped read-only into the guest through
one read-only KVM memory slot over the VMM's mapping of them, at the same distance
from the code as in the VMM. Guest code at CPL3 then computes exactly the time the
host kernel would give: the same data, the same counter. So the guest's clocks
never disagree with a clock read the VMM forwards, and never go backwards across
the two. That holds only where the guest's time-stamp counter is the host's:
software KVM (guest user code runs as host user code; ``rdtsc`` is not offset),
``Platform.guest_reads_host_tsc``. Hardware KVM offsets and may
scale the guest's counter, so there the guest gets no vDSO (libc then makes the
calls, as before).

What this exposes is what Linux exposes to every process: the public clock data.
A page of the kernel's data that has nothing behind it (the time-namespace page
outside a time namespace) is left out of the guest's tables, so touching it faults
in the guest with SIGBUS, as on Linux. As on Linux, mprotect cannot give the data
pages write access (EACCES) or change their rights at all (EINVAL); mremap moves
them and munmap drops them.

``KVMDUNE_VDSO=0`` turns it off.
"""

from __future__ import annotations

import functools
import io
import os
import re
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile
from elftools.common.exceptions import ELFError

from ..memory import Perm
from ..memory.host_mapping_unsafe import HostMapping
from .abi import ProtFlags
from .mm import MemoryMap, Vma

ENVIRONMENT_VARIABLE = "KVMDUNE_VDSO"
PAGE_SIZE = 4096
#: The names the kernel gives its mappings in /proc/PID/maps: the clock data, then
#: the code. The guest's mappings carry the same names.
DATA_NAMES = ("[vvar]", "[vvar_vclock]")
CODE_NAME = "[vdso]"
#: A vDSO without this symbol is not one glibc or musl would use.
REQUIRED_SYMBOL = "__vdso_clock_gettime"
_MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(\[\w+\])$", re.M)


@dataclass(frozen=True)
class DataPages:
    """One mapping of the kernel's clock data in the VMM."""

    name: str
    address: int        # in the VMM
    size: int
    offset: int         # from the start of the whole vDSO block (data, then code)


@dataclass(frozen=True)
class HostVdso:
    """The VMM's vDSO: its data mappings, then its code, contiguous."""

    data: tuple[DataPages, ...]
    code: bytes
    code_offset: int

    @property
    def size(self) -> int:
        return self.code_offset + len(self.code)


def wanted() -> bool:
    return os.environ.get(ENVIRONMENT_VARIABLE, "1") != "0"


def _kernel_mappings(maps: str) -> dict[str, tuple[int, int]]:
    return {match.group(4): (int(match.group(1), 16), int(match.group(2), 16))
            for match in _MAPS_LINE.finditer(maps)}


def _valid_image(code: bytes) -> bool:
    try:
        elf = ELFFile(io.BytesIO(code))
        symbols = elf.get_section_by_name(".dynsym")
        return symbols is not None and bool(symbols.get_symbol_by_name(REQUIRED_SYMBOL))
    except (ELFError, ValueError, OSError):
        return False


def parse_host_vdso(maps: str, read: "callable[[int, int], bytes]") -> HostVdso | None:
    """The vDSO described by ``maps`` (a /proc/PID/maps text), its code read with
    ``read(address, size)``; None unless the data pages sit right before the code
    and the code is an ELF vDSO."""
    mappings = _kernel_mappings(maps)
    if CODE_NAME not in mappings:
        return None
    code_start, code_end = mappings[CODE_NAME]
    data, cursor = [], code_start
    for name in reversed(DATA_NAMES):
        if name in mappings and mappings[name][1] == cursor:
            start, end = mappings[name]
            data.append((name, start, end - start))
            cursor = start
    if not data:
        return None
    code = read(code_start, code_end - code_start)
    if not _valid_image(code):
        return None
    pages = tuple(DataPages(name, start, size, start - cursor)
                  for name, start, size in reversed(data))
    return HostVdso(pages, code, code_start - cursor)


@functools.lru_cache(maxsize=1)
def host_vdso() -> HostVdso | None:
    """The VMM's own vDSO (the same in every process of the VMM, forked ones too)."""
    import ctypes
    with open("/proc/self/maps") as maps:
        text = maps.read()
    # Safe: [vdso] is ordinary readable text the kernel mapped into this process.
    return parse_host_vdso(text, lambda address, size: ctypes.string_at(address, size))


def map_vdso(mm: MemoryMap, vdso: HostVdso) -> int | None:
    """Map ``vdso`` into ``mm`` where Linux would (the next free range of the mmap
    area, after the interpreter); its code's address (AT_SYSINFO_EHDR), or None if
    it does not fit."""
    start = mm.find_free(vdso.size)
    if start is None:
        return None
    # One memory slot for all the data pages (contiguous in the VMM, as in the
    # guest): each exec's teardown must make KVM forget the old mappings of the
    # slot by deleting and re-adding it, which waits for an SRCU grace period, and
    # a forked child registers every slot again.
    region = mm.space.memory.add_kernel_pages(vdso.data[0].address, vdso.code_offset)
    readable = region.mapping.readable_pages()
    for pages in vdso.data:
        vma = Vma(start + pages.offset, start + pages.offset + pages.size,
                  int(ProtFlags.PROT_READ), name=pages.name, region=region,
                  region_offset=pages.offset, vmm_backed=True,
                  max_prot=int(ProtFlags.PROT_READ))
        mm.map_kernel_pages(vma, [offset - pages.offset for offset in readable],
                            Perm.READ | Perm.USER)
    code = start + vdso.code_offset
    mm.map_fixed(Vma(code, code + len(vdso.code),
                     int(ProtFlags.PROT_READ | ProtFlags.PROT_EXEC), name=CODE_NAME),
                 vdso.code, eager=True)
    return code
