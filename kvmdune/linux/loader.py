"""Starting a program image in a guest address space, as Linux's execve does: the
PT_LOAD segments (and the interpreter's, for dynamically linked programs), brk after
the highest segment, an 8 MiB stack with a guard page, and the initial stack with
argv, envp and the auxiliary vector; each base where aslr.py draws it."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Protocol

from ..memory import PAGE_SIZE, VMM
from . import aslr
from .elf import (ElfImage, ElfType, ExecFormatError, FileIdentity, SegmentFlags, load_elf,
                  page_down, page_up)
from .initial_stack import (AuxType, InitialStack, build_initial_stack, read_host_auxv,
                            standard_auxv)
from .abi import ProtFlags
from .sitepatch import has_sites, patch_mapping
from .mm import STACK_EAGER, STACK_SIZE, MemoryMap, Vma, perm_for
from .vdso import HostVdso, map_vdso

PLATFORM = b"x86_64"
RANDOM_BYTES = 16
#: Default AT_MINSIGSTKSZ when the host's auxv lacks it (Linux's MINSIGSTKSZ).
DEFAULT_MINSIGSTKSZ = 2048


@dataclass(frozen=True)
class LoadedProgram:
    """A program mapped and ready to start: where it begins, where it and its
    interpreter were placed, and its initial stack."""

    image: ElfImage
    entry: int            # where execution starts (the interpreter's entry if any)
    load_bias: int
    interp_base: int
    stack: InitialStack
    auxv: tuple[tuple[int, int], ...]

    @property
    def sp(self) -> int:
        return self.stack.sp


def _prot(flags: int) -> int:
    prot = 0
    if flags & SegmentFlags.PF_R:
        prot |= ProtFlags.PROT_READ
    if flags & SegmentFlags.PF_W:
        prot |= ProtFlags.PROT_WRITE
    if flags & SegmentFlags.PF_X:
        prot |= ProtFlags.PROT_EXEC
    return int(prot)


def map_image(mm: MemoryMap, image: ElfImage, bias: int) -> None:
    """Map every PT_LOAD at its address plus ``bias``: the file's bytes from the start
    of the first page, zeros after p_filesz (the bss), like binfmt_elf. Each segment
    is read from the file straight into its frames (one copy), unless its call sites
    are patched (read, patched, then copied in)."""
    if image.contents:
        _map_segments(mm, image, bias, _ContentsReader(memoryview(image.contents)),
                      os.path.realpath(image.path))
        return
    fd = _reopen(image)
    try:
        _map_segments(mm, image, bias, _FileReader(fd), os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)


def _map_segments(mm: MemoryMap, image: ElfImage, bias: int, reader: "_SegmentReader",
                  name: str) -> None:
    """Map ``image``'s segments, named ``name`` in /proc/PID/maps: the file's own
    path, as Linux shows it (/usr/bin/cat for /bin/cat on a merged /usr)."""
    for segment in image.segments:
        start = page_down(segment.vaddr + bias)
        end = page_up(segment.vaddr + bias + segment.memsz)
        lead = (segment.vaddr + bias) - start
        file_offset, length = segment.offset - lead, lead + segment.filesz
        vma = Vma(start, end, _prot(segment.flags), name=name, offset=file_offset)
        if mm.patch_sites and segment.flags & SegmentFlags.PF_X and has_sites(image.path):
            data = mm.kept_patched_code(start, file_offset, length, reader.read_into,
                                        image.path)
            if data is None:
                data = patch_mapping(mm, start, file_offset, reader.read(file_offset, length),
                                     image.path)
            mm.map_fixed(vma, data, eager=True)
        else:
            mm.map_file(vma, file_offset, length, reader.read_into)


def _reopen(image: ElfImage) -> int:
    """The file ``load_elf`` read ``image`` from, opened again; refused if it is no
    longer the same file as it was (replaced, or written since)."""
    try:
        fd = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ExecFormatError(exc.errno or errno.ENOENT, "cannot open it again to load it",
                              image.path) from exc
    if FileIdentity.of(os.fstat(fd)) != image.identity:
        os.close(fd)
        raise ExecFormatError(errno.ETXTBSY, "changed while it was being loaded", image.path)
    return fd


class _SegmentReader(Protocol):
    def read(self, offset: int, length: int) -> bytes | memoryview: ...

    def read_into(self, offset: int, length: int, buffers: list) -> int: ...


class _FileReader:
    """Segments from an open file (a short read leaves zeros: a file cut meanwhile)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def read_into(self, offset: int, length: int, buffers: list) -> int:
        clipped, left = [], length
        for buffer in buffers:
            if left <= 0:
                break
            clipped.append(buffer[:left])
            left -= len(clipped[-1])
        return os.preadv(self.fd, clipped, offset) if clipped else 0


class _ContentsReader:
    """Segments from the file's bytes already read (an image ``parse_elf`` made)."""

    def __init__(self, contents: memoryview) -> None:
        self.contents = contents

    def read(self, offset: int, length: int) -> memoryview:
        return self.contents[offset:offset + length]

    def read_into(self, offset: int, length: int, buffers: list) -> int:
        done = 0
        for buffer in buffers:
            chunk = self.contents[offset + done:offset + min(length, done + len(buffer))]
            buffer[:len(chunk)] = chunk
            done += len(chunk)
            if done >= length or len(chunk) < len(buffer):
                break
        return done


def _bias_in_mmap_area(mm: MemoryMap, image: ElfImage) -> int:
    """The load bias mmap gives ``image`` (the interpreter, or a static-pie program,
    which Linux loads like a library): top-down from the mmap base, aligned to its
    largest PT_LOAD alignment inside a reservation that leaves room for it."""
    align = image.max_align
    start = mm.find_free(image.span + align - PAGE_SIZE)
    if start is None:
        raise ExecFormatError(errno.ENOMEM, f"no room for {image.span:#x} bytes of "
                              "address space", image.path)
    return ((start + align - 1) & ~(align - 1)) - image.lowest_vaddr


def _bias_for(mm: MemoryMap, image: ElfImage, rnd: aslr.Randomization) -> int:
    """binfmt_elf's load_bias: none for ET_EXEC, ELF_ET_DYN_BASE (randomized) for a
    PIE program, the mmap area for a static-pie one."""
    if image.kind != ElfType.ET_DYN:
        return 0
    if image.interp is None:
        return _bias_in_mmap_area(mm, image)
    return page_down(aslr.pie_base(rnd, image.max_align) - image.segments[0].vaddr)


def host_auxv() -> dict[int, int]:
    try:
        return read_host_auxv()
    except OSError:
        return {}


def load_program(mm: MemoryMap, image: ElfImage, argv: list[bytes], envp: list[bytes],
                 execfn: bytes, rnd: aslr.Randomization,
                 random_bytes: bytes | None = None,
                 interp: ElfImage | None = None,
                 vdso: HostVdso | None = None) -> LoadedProgram:
    """Map ``image`` (and its interpreter: ``interp`` if the caller loaded it
    already, and ``vdso`` if given) into ``mm`` and build the initial stack, at the
    bases ``rnd`` draws (the mmap base too: ``mm`` is a fresh map)."""
    mm.mmap_base = aslr.mmap_base(rnd, aslr.stack_rlimit())
    bias = _bias_for(mm, image, rnd)
    map_image(mm, image, bias)
    static_pie = image.kind == ElfType.ET_DYN and image.interp is None
    mm.brk_start = mm.brk = aslr.brk_start(rnd, image.highest_vaddr + bias, static_pie)
    interp_base, entry = 0, image.entry + bias
    if image.interp is not None:
        interp = interp or load_elf(image.interp)
        interp_bias = _bias_in_mmap_area(mm, interp) if interp.kind == ElfType.ET_DYN else 0
        map_image(mm, interp, interp_bias)
        interp_base = interp.lowest_vaddr + interp_bias
        entry = interp.entry + interp_bias
    vdso_base = map_vdso(mm, vdso) if vdso is not None else None
    top = aslr.stack_top(rnd)
    stack_vma = Vma(top - STACK_SIZE, top,
                    int(ProtFlags.PROT_READ | ProtFlags.PROT_WRITE
                        | (ProtFlags.PROT_EXEC if image.executable_stack else 0)),
                    name="[stack]", grows_down=True)
    mm.map_fixed(stack_vma, eager=False)
    mm.space.map(top - STACK_EAGER, STACK_EAGER, perm_for(stack_vma.prot))
    host = host_auxv()
    auxv = standard_auxv(image, bias, interp_base,
                         hwcap=host.get(AuxType.AT_HWCAP, 0),
                         hwcap2=host.get(AuxType.AT_HWCAP2, 0),
                         minsigstksz=host.get(AuxType.AT_MINSIGSTKSZ, DEFAULT_MINSIGSTKSZ),
                         uid=os.getuid(), euid=os.geteuid(), gid=os.getgid(),
                         egid=os.getegid(), vdso=vdso_base)
    stack = build_initial_stack(top, argv, envp, auxv, execfn, PLATFORM,
                                random_bytes or os.urandom(RANDOM_BYTES),
                                align_jitter=aslr.stack_jitter(rnd))
    if stack.base < top - STACK_EAGER:
        mm.space.unmap(top - STACK_EAGER, STACK_EAGER)
        mm.space.map(page_down(stack.base), top - page_down(stack.base),
                     perm_for(stack_vma.prot))
    mm.space.write(stack.base, stack.data, VMM)
    return LoadedProgram(image, entry, bias, interp_base, stack, stack.auxv)
