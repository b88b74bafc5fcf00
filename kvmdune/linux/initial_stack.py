"""The initial process stack a new x86-64 Linux program finds at its entry point.

This module owns the byte layout Linux builds in exec (do_execveat_common's
string copies and fs/binfmt_elf.c's create_elf_tables), the auxiliary vector's
types and the list Linux passes, and the argument-size limits behind E2BIG. It
is pure: it returns bytes and guest addresses; placing them in guest memory is
the loader's job.

Layout, from the top of the stack down (higher addresses first):

    stack_top - 8   8 zero bytes (Linux's end marker)
                    execfn string            <- AT_EXECFN
                    env strings, envp[0] lowest
                    argv strings, argv[0] lowest
                    arch_align_stack: align_jitter bytes (below 8 KiB,
                    random under ASLR), then padding to 16 bytes
                    platform string          <- AT_PLATFORM
                    16 random bytes          <- AT_RANDOM
                    padding so that sp is 16-byte aligned
                    auxv pairs, ending (AT_NULL, 0)
                    NULL, envp pointers
                    NULL, argv pointers
    sp ->           argc
"""

from __future__ import annotations

import errno as _errno
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from kvmdune.linux.elf import ELF64_PHDR_SIZE, PAGE_SIZE, ElfImage, ExecFormatError

__all__ = [
    "ARG_MAX",
    "AT_RANDOM_SIZE",
    "ArgumentListTooLong",
    "AuxType",
    "CLOCKS_PER_SEC",
    "DEFAULT_STACK_RLIMIT",
    "InitialStack",
    "MAX_ARG_STRLEN",
    "PLATFORM_X86_64",
    "RLIM_INFINITY",
    "STACK_ALIGN",
    "argument_space",
    "build_initial_stack",
    "read_host_auxv",
    "standard_auxv",
]


class AuxType(IntEnum):
    """Auxiliary vector entry types (include/uapi/linux/auxvec.h, asm/auxvec.h)."""

    AT_NULL = 0
    AT_IGNORE = 1
    AT_EXECFD = 2
    AT_PHDR = 3
    AT_PHENT = 4
    AT_PHNUM = 5
    AT_PAGESZ = 6
    AT_BASE = 7
    AT_FLAGS = 8
    AT_ENTRY = 9
    AT_NOTELF = 10
    AT_UID = 11
    AT_EUID = 12
    AT_GID = 13
    AT_EGID = 14
    AT_PLATFORM = 15
    AT_HWCAP = 16
    AT_CLKTCK = 17
    AT_SECURE = 23
    AT_BASE_PLATFORM = 24
    AT_RANDOM = 25
    AT_HWCAP2 = 26
    AT_EXECFN = 31
    AT_SYSINFO_EHDR = 33
    AT_MINSIGSTKSZ = 51


WORD_SIZE = 8  # sizeof(elf_addr_t) on x86-64
WORD_MAX = (1 << 64) - 1
STACK_ALIGN = 16  # the x86-64 ABI wants rsp % 16 == 0 at process entry
AT_RANDOM_SIZE = 16  # create_elf_tables copies 16 bytes for AT_RANDOM
END_MARKER_SIZE = WORD_SIZE  # bprm->p starts one pointer below the stack top
MAX_ALIGN_JITTER = 8192  # arch_align_stack subtracts less than this
PLATFORM_X86_64 = b"x86_64"  # ELF_PLATFORM on x86-64
CLOCKS_PER_SEC = 100  # USER_HZ, what AT_CLKTCK reports

# Limits from fs/exec.c and include/uapi/linux/limits.h.
MAX_ARG_STRLEN = 32 * PAGE_SIZE  # longest single string, NUL included
ARG_MAX = 131072  # argument space is never smaller than this
STK_LIM = 8 * 1024 * 1024  # _STK_LIM, the default stack rlimit
DEFAULT_STACK_RLIMIT = STK_LIM
RLIM_INFINITY = WORD_MAX
# Arguments may use at most a quarter of the stack rlimit, and never more
# than three quarters of _STK_LIM, so that a huge rlimit cannot let them
# swallow the address space.
STACK_FRACTION_FOR_ARGS = 4
MAX_ARG_SPACE = STK_LIM // 4 * 3

# Entries build_initial_stack fills in itself, in the order Linux writes them.
_FILLED_BY_BUILDER = (AuxType.AT_RANDOM, AuxType.AT_EXECFN, AuxType.AT_PLATFORM)

_WORD = struct.Struct("<Q")
_AUXV_PAIR = struct.Struct("<QQ")


class ArgumentListTooLong(ExecFormatError):
    """execve's E2BIG: the strings do not fit in the space Linux allows."""

    def __init__(self, message: str) -> None:
        super().__init__(_errno.E2BIG, f"argument list too long: {message}")


@dataclass(frozen=True)
class InitialStack:
    """The bytes to copy to guest address `base`, and where things are in them."""

    base: int  # guest address of data[0]; equals sp
    data: bytes  # covers [base, stack_top) exactly
    sp: int  # the initial rsp: points at argc, 16-byte aligned
    stack_top: int
    argc: int
    argv_addrs: tuple[int, ...]  # guest address of each argv string
    envp_addrs: tuple[int, ...]  # guest address of each env string
    random_addr: int  # AT_RANDOM
    execfn_addr: int  # AT_EXECFN
    platform_addr: int | None  # AT_PLATFORM; None when no platform was given
    auxv: tuple[tuple[int, int], ...]  # as written, ending with (AT_NULL, 0)


def argument_space(stack_rlimit: int, argc: int, envc: int) -> int:
    """Bytes available for the strings (execfn, env, argv), as bprm_stack_limits computes.

    Raises ArgumentListTooLong if the pointers alone do not fit.
    """
    limit = max(min(MAX_ARG_SPACE, stack_rlimit // STACK_FRACTION_FOR_ARGS), ARG_MAX)
    # Linux reserves room for one argv pointer even when argv is empty.
    pointer_bytes = (max(argc, 1) + envc) * WORD_SIZE
    if limit <= pointer_bytes:
        raise ArgumentListTooLong(f"{argc} arguments and {envc} environment strings need more pointers "
                                  f"than the {limit}-byte argument space holds")
    return limit - pointer_bytes


def build_initial_stack(
    stack_top: int,
    argv: Sequence[bytes],
    envp: Sequence[bytes],
    auxv: Iterable[tuple[AuxType | int, int]],
    execfn: bytes,
    platform: bytes,
    random_bytes: bytes,
    *,
    stack_rlimit: int = DEFAULT_STACK_RLIMIT,
    align_jitter: int = 0,
) -> InitialStack:
    """Lay out a new process's stack below `stack_top`, as Linux's exec does.

    `auxv` is every entry but the ones this function fills: AT_RANDOM,
    AT_EXECFN and AT_PLATFORM get their addresses here (entries already in
    `auxv` keep their position, missing ones are appended in Linux's order);
    an empty `platform` means no AT_PLATFORM, as on a kernel without
    ELF_PLATFORM. A trailing AT_NULL is optional. An empty argv becomes [b""],
    as Linux has done since 5.18. Strings are given without their NUL and may
    not contain one (ValueError). Raises ArgumentListTooLong (E2BIG) when the
    strings exceed Linux's limits for `stack_rlimit` (RLIMIT_STACK's soft limit).
    `align_jitter` is how far arch_align_stack moves the pointer down below the
    strings before aligning it (0 without randomization).
    """
    _check_layout_inputs(stack_top, random_bytes)
    if not 0 <= align_jitter < MAX_ALIGN_JITTER:
        raise ValueError(f"align_jitter {align_jitter} is outside [0, {MAX_ALIGN_JITTER})")
    args = list(argv) if argv else [b""]
    envs = list(envp)
    _check_strings(args, envs, execfn, platform, stack_rlimit)
    entries = _auxv_entries(auxv, include_platform=bool(platform))

    # Strings, copied downwards: execfn first, then env, then argv, each list
    # so that its first string ends up lowest (copy_strings goes backwards).
    cursor = stack_top - END_MARKER_SIZE
    cursor, (execfn_addr,) = _place_strings(cursor, [execfn])
    cursor, env_addrs = _place_strings(cursor, envs)
    cursor, arg_addrs = _place_strings(cursor, args)
    cursor = _align_down(cursor - align_jitter, STACK_ALIGN)
    platform_addr = None
    if platform:
        cursor, (platform_addr,) = _place_strings(cursor, [platform])
    random_addr = cursor - AT_RANDOM_SIZE
    vector_words = (len(args) + 1) + (len(envs) + 1) + 1 + 2 * len(entries)
    sp = _align_down(random_addr - vector_words * WORD_SIZE, STACK_ALIGN)
    if sp <= 0:
        raise ValueError(f"stack_top {stack_top:#x} is too low for a {stack_top - sp}-byte initial stack")

    filled = {AuxType.AT_RANDOM: random_addr, AuxType.AT_EXECFN: execfn_addr,
              AuxType.AT_PLATFORM: platform_addr or 0}
    final_auxv = tuple((kind, filled.get(kind, value)) for kind, value in entries)

    image = bytearray(stack_top - sp)
    _write_strings(image, sp, [*args, *envs, execfn], [*arg_addrs, *env_addrs, execfn_addr])
    if platform_addr is not None:
        _write_strings(image, sp, [platform], [platform_addr])
    image[random_addr - sp : random_addr - sp + AT_RANDOM_SIZE] = random_bytes
    words = [len(args), *arg_addrs, 0, *env_addrs, 0]
    words += [word for pair in final_auxv for word in pair]
    image[0 : len(words) * WORD_SIZE] = b"".join(_WORD.pack(word) for word in words)

    return InitialStack(
        base=sp,
        data=bytes(image),
        sp=sp,
        stack_top=stack_top,
        argc=len(args),
        argv_addrs=tuple(arg_addrs),
        envp_addrs=tuple(env_addrs),
        random_addr=random_addr,
        execfn_addr=execfn_addr,
        platform_addr=platform_addr,
        auxv=tuple((int(kind), value) for kind, value in final_auxv),
    )


def _check_layout_inputs(stack_top: int, random_bytes: bytes) -> None:
    if not 0 < stack_top <= WORD_MAX or stack_top % STACK_ALIGN:
        raise ValueError(f"stack_top {stack_top:#x} must be a positive multiple of {STACK_ALIGN}")
    if len(random_bytes) != AT_RANDOM_SIZE:
        raise ValueError(f"AT_RANDOM needs exactly {AT_RANDOM_SIZE} random bytes, got {len(random_bytes)}")


def _check_strings(
    args: list[bytes], envs: list[bytes], execfn: bytes, platform: bytes, stack_rlimit: int
) -> None:
    """NULs are a caller bug; sizes beyond Linux's limits are E2BIG."""
    if b"\0" in platform:
        raise ValueError("platform contains a NUL byte; C strings cannot")
    for name, values in (("argv", args), ("envp", envs), ("execfn", [execfn])):
        for index, value in enumerate(values):
            if b"\0" in value:
                raise ValueError(f"{name}[{index}] contains a NUL byte; C strings cannot")
            if len(value) + 1 > MAX_ARG_STRLEN:
                raise ArgumentListTooLong(
                    f"{name}[{index}] is {len(value)} bytes; one string may be at most "
                    f"{MAX_ARG_STRLEN - 1} (MAX_ARG_STRLEN {MAX_ARG_STRLEN} with its NUL)"
                )
    space = argument_space(stack_rlimit, len(args), len(envs))
    used = sum(len(value) + 1 for value in (*args, *envs, execfn))
    if used > space:
        raise ArgumentListTooLong(
            f"the strings take {used} bytes and the limit is {space} "
            f"(a quarter of the {stack_rlimit}-byte stack rlimit, less the pointers)"
        )


def _auxv_entries(
    auxv: Iterable[tuple[AuxType | int, int]], include_platform: bool
) -> list[tuple[AuxType | int, int]]:
    """The caller's entries plus the builder's, ending with AT_NULL."""
    entries = [(_aux_type(kind), value) for kind, value in auxv]
    if entries and entries[-1][0] == AuxType.AT_NULL:
        entries.pop()
    for kind, value in entries:
        if kind == AuxType.AT_NULL:
            raise ValueError("AT_NULL may only end the auxiliary vector")
        if not 0 <= value <= WORD_MAX:
            raise ValueError(f"auxv value {value!r} for {kind!r} does not fit in 64 bits")
    present = {kind for kind, _ in entries}
    entries += [(kind, 0) for kind in _FILLED_BY_BUILDER if kind not in present]
    if not include_platform:
        entries = [(kind, value) for kind, value in entries if kind != AuxType.AT_PLATFORM]
    entries.append((AuxType.AT_NULL, 0))
    return entries


def _aux_type(kind: AuxType | int) -> AuxType | int:
    try:
        return AuxType(kind)
    except ValueError:
        if not 0 <= kind <= WORD_MAX:
            raise ValueError(f"auxv type {kind!r} does not fit in 64 bits") from None
        return kind  # a type this module does not name; written as given


def _place_strings(cursor: int, strings: list[bytes]) -> tuple[int, list[int]]:
    """Allocate NUL-terminated strings downwards so strings[0] is lowest."""
    total = sum(len(value) + 1 for value in strings)
    start = cursor - total
    addrs = []
    address = start
    for value in strings:
        addrs.append(address)
        address += len(value) + 1
    return start, addrs


def _write_strings(image: bytearray, base: int, strings: list[bytes], addrs: list[int]) -> None:
    for value, address in zip(strings, addrs):
        offset = address - base
        image[offset : offset + len(value)] = value  # the NUL is already zero


def _align_down(value: int, alignment: int) -> int:
    return value & ~(alignment - 1)


def standard_auxv(
    image: ElfImage,
    load_bias: int,
    interp_base: int,
    *,
    hwcap: int,
    hwcap2: int,
    minsigstksz: int,
    uid: int,
    euid: int,
    gid: int,
    egid: int,
    secure: bool = False,
    vdso: int | None = None,
) -> list[tuple[AuxType, int]]:
    """The auxiliary vector Linux gives an x86-64 program, in Linux's order.

    `load_bias` is what was added to the executable's addresses (0 for
    ET_EXEC); `interp_base` is where the interpreter was loaded (0 without
    one). `hwcap` is CPUID leaf 1 EDX, `hwcap2` the x86 HWCAP2 bits, and
    `minsigstksz` the signal frame size for the guest's XSAVE features; the
    caller knows the guest CPU, this module does not. AT_SYSINFO_EHDR (first, as
    in Linux's ARCH_DLINFO) is there when ``vdso`` gives the vDSO's address.
    AT_RANDOM, AT_EXECFN and AT_PLATFORM are placeholders that
    build_initial_stack fills in.
    """
    return ([(AuxType.AT_SYSINFO_EHDR, vdso)] if vdso is not None else []) + [
        (AuxType.AT_MINSIGSTKSZ, minsigstksz),
        (AuxType.AT_HWCAP, hwcap),
        (AuxType.AT_PAGESZ, PAGE_SIZE),
        (AuxType.AT_CLKTCK, CLOCKS_PER_SEC),
        (AuxType.AT_PHDR, image.phdr_vaddr(load_bias)),
        (AuxType.AT_PHENT, ELF64_PHDR_SIZE),
        (AuxType.AT_PHNUM, image.phnum),
        (AuxType.AT_BASE, interp_base),
        (AuxType.AT_FLAGS, 0),
        (AuxType.AT_ENTRY, image.entry + load_bias),
        (AuxType.AT_UID, uid),
        (AuxType.AT_EUID, euid),
        (AuxType.AT_GID, gid),
        (AuxType.AT_EGID, egid),
        (AuxType.AT_SECURE, int(secure)),
        (AuxType.AT_RANDOM, 0),
        (AuxType.AT_HWCAP2, hwcap2),
        (AuxType.AT_EXECFN, 0),
        (AuxType.AT_PLATFORM, 0),
    ]


def read_host_auxv(path: str = "/proc/self/auxv") -> dict[int, int]:
    """The VMM's own auxiliary vector, for values like AT_HWCAP and AT_MINSIGSTKSZ.

    Only a starting point for the guest's values: the guest sees the CPU KVM
    presents, which may have fewer features than the host.
    """
    with open(path, "rb") as file:
        raw = file.read()
    values: dict[int, int] = {}
    for kind, value in _AUXV_PAIR.iter_unpack(raw[: len(raw) - len(raw) % _AUXV_PAIR.size]):
        if kind == AuxType.AT_NULL:
            break
        values[kind] = value
    return values
