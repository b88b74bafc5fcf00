"""Starting a program image in a guest address space, as Linux's execve does: the
PT_LOAD segments (and the interpreter's, for dynamically linked programs), brk after
the highest segment, an 8 MiB stack with a guard page, and the initial stack with
argv, envp and the auxiliary vector."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..memory import PAGE_SIZE, VMM
from .elf import ElfImage, ElfType, SegmentFlags, load_elf, page_down, page_up
from .initial_stack import (AuxType, InitialStack, build_initial_stack, read_host_auxv,
                            standard_auxv)
from .abi import ProtFlags
from .mm import ET_DYN_BASE, STACK_EAGER, STACK_SIZE, STACK_TOP, MemoryMap, Vma, perm_for

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
    of the first page, zeros after p_filesz (the bss), like binfmt_elf."""
    with open(image.path, "rb") as f:
        file_data = f.read()
    for segment in image.segments:
        start = page_down(segment.vaddr + bias)
        end = page_up(segment.vaddr + bias + segment.memsz)
        lead = (segment.vaddr + bias) - start
        data = file_data[segment.offset - lead:segment.offset + segment.filesz]
        mm.map_fixed(Vma(start, end, _prot(segment.flags), name=image.path,
                         offset=segment.offset - lead), data, eager=True)


def _bias_for(image: ElfImage, base: int) -> int:
    if image.kind != ElfType.ET_DYN:
        return 0
    align = max(image.max_align, PAGE_SIZE)
    return ((base + align - 1) & ~(align - 1)) - image.lowest_vaddr


def host_auxv() -> dict[int, int]:
    try:
        return read_host_auxv()
    except OSError:
        return {}


def load_program(mm: MemoryMap, image: ElfImage, argv: list[bytes], envp: list[bytes],
                 execfn: bytes, random_bytes: bytes | None = None) -> LoadedProgram:
    """Map ``image`` (and its interpreter) into ``mm`` and build the initial stack."""
    bias = _bias_for(image, ET_DYN_BASE)
    map_image(mm, image, bias)
    mm.brk_start = mm.brk = page_up(image.highest_vaddr + bias)
    interp_base, entry = 0, image.entry + bias
    if image.interp is not None:
        interp = load_elf(image.interp)
        below = mm.find_free(interp.span + interp.max_align)
        interp_bias = _bias_for(interp, below)
        map_image(mm, interp, interp_bias)
        interp_base = interp.lowest_vaddr + interp_bias
        entry = interp.entry + interp_bias
    stack_vma = Vma(STACK_TOP - STACK_SIZE, STACK_TOP,
                    int(ProtFlags.PROT_READ | ProtFlags.PROT_WRITE
                        | (ProtFlags.PROT_EXEC if image.executable_stack else 0)),
                    name="[stack]", grows_down=True)
    mm.map_fixed(stack_vma, eager=False)
    mm.space.map(STACK_TOP - STACK_EAGER, STACK_EAGER,
                 perm_for(stack_vma.prot))
    host = host_auxv()
    auxv = standard_auxv(image, bias, interp_base,
                         hwcap=host.get(AuxType.AT_HWCAP, 0),
                         hwcap2=host.get(AuxType.AT_HWCAP2, 0),
                         minsigstksz=host.get(AuxType.AT_MINSIGSTKSZ, DEFAULT_MINSIGSTKSZ),
                         uid=os.getuid(), euid=os.geteuid(), gid=os.getgid(),
                         egid=os.getegid())
    stack = build_initial_stack(STACK_TOP, argv, envp, auxv, execfn, PLATFORM,
                                random_bytes or os.urandom(RANDOM_BYTES))
    if stack.base < STACK_TOP - STACK_EAGER:
        mm.space.unmap(STACK_TOP - STACK_EAGER, STACK_EAGER)
        mm.space.map(page_down(stack.base), STACK_TOP - page_down(stack.base),
                     perm_for(stack_vma.prot))
    mm.space.write(stack.base, stack.data, VMM)
    return LoadedProgram(image, entry, bias, interp_base, stack, stack.auxv)
