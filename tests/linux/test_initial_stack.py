"""kvmdune.linux.initial_stack: parsed back, against Linux's own stack, and at its limits."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmdune.linux.elf import ELF64_PHDR_SIZE, PAGE_SIZE, exit_status_for, load_elf
from kvmdune.linux.initial_stack import (
    ARG_MAX,
    AT_RANDOM_SIZE,
    MAX_ARG_STRLEN,
    PLATFORM_X86_64,
    RLIM_INFINITY,
    STACK_ALIGN,
    ArgumentListTooLong,
    AuxType,
    InitialStack,
    build_initial_stack,
    read_host_auxv,
    standard_auxv,
)

GCC = shutil.which("gcc")
STACK_TOP = 0x7FFF_FFFF_F000
RANDOM = bytes(range(0xA0, 0xA0 + AT_RANDOM_SIZE))
WORD = struct.Struct("<Q")
ADDR_NO_RANDOMIZE = 0x0040000  # <linux/personality.h>
KIB = 1024
MIB = 1024 * KIB

# Writes its initial stack to stdout: sp, the stack top, then [sp, top).
STACKDUMP_C = r"""
#include <elf.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv, char **envp) {
    uint64_t sp = (uint64_t)(uintptr_t)argv - sizeof(uint64_t);   /* argc is just below argv */
    char **p = envp;
    while (*p) p++;
    uint64_t execfn = 0;
    for (Elf64_auxv_t *aux = (Elf64_auxv_t *)(p + 1); aux->a_type != AT_NULL; aux++)
        if (aux->a_type == AT_EXECFN) execfn = aux->a_un.a_val;
    uint64_t top = execfn + strlen((char *)(uintptr_t)execfn) + 1 + sizeof(uint64_t);
    write(1, &sp, sizeof sp);
    write(1, &top, sizeof top);
    write(1, (void *)(uintptr_t)sp, top - sp);
    return 0;
}
"""


# --- Reading a stack back, as a C runtime would ------------------------------------------


class StackReader:
    def __init__(self, stack: InitialStack) -> None:
        self.stack = stack

    def word(self, address: int) -> int:
        self.check(address, WORD.size)
        return WORD.unpack_from(self.stack.data, address - self.stack.base)[0]

    def bytes_at(self, address: int, size: int) -> bytes:
        self.check(address, size)
        offset = address - self.stack.base
        return self.stack.data[offset : offset + size]

    def c_string(self, address: int) -> bytes:
        self.check(address, 1)
        offset = address - self.stack.base
        end = self.stack.data.index(b"\0", offset)
        return self.stack.data[offset:end]

    def check(self, address: int, size: int) -> None:
        assert self.stack.base <= address and address + size <= self.stack.stack_top

    def parse(self) -> tuple[list[bytes], list[bytes], list[tuple[int, int]]]:
        """(argv, envp, auxv incl. AT_NULL) found by walking from sp."""
        cursor = self.stack.sp
        argc = self.word(cursor)
        cursor += WORD.size
        argv = [self.c_string(self.word(cursor + i * WORD.size)) for i in range(argc)]
        cursor += argc * WORD.size
        assert self.word(cursor) == 0
        cursor += WORD.size
        envp = []
        while (pointer := self.word(cursor)) != 0:
            envp.append(self.c_string(pointer))
            cursor += WORD.size
        cursor += WORD.size
        auxv = []
        while True:
            pair = (self.word(cursor), self.word(cursor + WORD.size))
            auxv.append(pair)
            cursor += 2 * WORD.size
            if pair[0] == AuxType.AT_NULL:
                return argv, envp, auxv


def check_stack(
    stack: InitialStack,
    argv: list[bytes],
    envp: list[bytes],
    auxv: list[tuple[int, int]],
    execfn: bytes,
    platform: bytes = PLATFORM_X86_64,
) -> None:
    reader = StackReader(stack)
    assert stack.sp % STACK_ALIGN == 0
    assert stack.base == stack.sp
    assert stack.base + len(stack.data) == stack.stack_top
    got_argv, got_envp, got_auxv = reader.parse()
    assert got_argv == (argv or [b""])
    assert got_envp == envp
    assert got_auxv == list(stack.auxv)
    values = dict(got_auxv)
    assert got_auxv[-1] == (AuxType.AT_NULL, 0)
    assert [kind for kind, _ in got_auxv if kind not in FILLED] == [int(kind) for kind, _ in auxv]
    assert {kind: value for kind, value in got_auxv if kind not in FILLED} == {k: v for k, v in auxv}
    assert reader.bytes_at(values[AuxType.AT_RANDOM], AT_RANDOM_SIZE) == RANDOM
    assert values[AuxType.AT_RANDOM] == stack.random_addr
    assert reader.c_string(values[AuxType.AT_EXECFN]) == execfn == reader.c_string(stack.execfn_addr)
    if platform:
        assert reader.c_string(values[AuxType.AT_PLATFORM]) == platform
    else:
        assert AuxType.AT_PLATFORM not in values and stack.platform_addr is None
    # Linux's layout at the top: execfn ends right below the 8-byte zero marker,
    # env strings right below execfn, argv strings right below those.
    assert stack.data[-WORD.size :] == bytes(WORD.size)
    assert stack.execfn_addr + len(execfn) + 1 == stack.stack_top - WORD.size
    strings = [*(argv or [b""]), *envp]
    addrs = [*stack.argv_addrs, *stack.envp_addrs, stack.execfn_addr]
    for string, address, following in zip(strings, addrs, addrs[1:]):
        assert address + len(string) + 1 == following
    assert addrs == [reader.word(stack.sp + WORD.size * (i + 1)) for i in range(len(stack.argv_addrs))] + [
        reader.word(stack.sp + WORD.size * (len(stack.argv_addrs) + 2 + i)) for i in range(len(envp))
    ] + [stack.execfn_addr]


FILLED = {AuxType.AT_RANDOM, AuxType.AT_EXECFN, AuxType.AT_PLATFORM, AuxType.AT_NULL}
SIMPLE_AUXV = [(AuxType.AT_PAGESZ, PAGE_SIZE), (AuxType.AT_ENTRY, 0x401000), (AuxType.AT_UID, 1000)]


def test_layout_reads_back() -> None:
    argv, envp = [b"/bin/prog", b"-x", b""], [b"HOME=/root", b"PATH=/bin"]
    stack = build_initial_stack(STACK_TOP, argv, envp, SIMPLE_AUXV, b"/bin/prog", PLATFORM_X86_64, RANDOM)
    check_stack(stack, argv, envp, SIMPLE_AUXV, b"/bin/prog")
    assert stack.argc == 3
    # The builder's own entries go after the caller's, in Linux's order.
    assert [kind for kind, _ in stack.auxv[-4:]] == [
        AuxType.AT_RANDOM, AuxType.AT_EXECFN, AuxType.AT_PLATFORM, AuxType.AT_NULL]


def test_platform_and_random_sit_just_below_the_aligned_strings() -> None:
    stack = build_initial_stack(STACK_TOP, [b"a"], [], SIMPLE_AUXV, b"/a", PLATFORM_X86_64, RANDOM)
    aligned = stack.argv_addrs[0] & ~(STACK_ALIGN - 1)
    assert stack.platform_addr == aligned - len(PLATFORM_X86_64) - 1
    assert stack.random_addr == stack.platform_addr - AT_RANDOM_SIZE


def test_align_jitter_moves_what_is_below_the_strings() -> None:
    # arch_align_stack under ASLR: up to 8 KiB lower, then 16-byte aligned; the
    # strings stay where they were.
    still = build_initial_stack(STACK_TOP, [b"a"], [], SIMPLE_AUXV, b"/a", PLATFORM_X86_64, RANDOM)
    for jitter in (1, 16, 4097, 8191):
        moved = build_initial_stack(STACK_TOP, [b"a"], [], SIMPLE_AUXV, b"/a", PLATFORM_X86_64, RANDOM,
                                    align_jitter=jitter)
        check_stack(moved, [b"a"], [], SIMPLE_AUXV, b"/a")
        assert moved.argv_addrs == still.argv_addrs and moved.execfn_addr == still.execfn_addr
        aligned = (still.argv_addrs[0] - jitter) & ~(STACK_ALIGN - 1)
        assert moved.platform_addr == aligned - len(PLATFORM_X86_64) - 1
        assert moved.sp % STACK_ALIGN == 0 and still.sp - moved.sp in range(jitter - 15, jitter + 16)


def test_empty_argv_becomes_one_empty_string() -> None:
    # Linux (since 5.18) gives argv = {"", NULL} rather than argc == 0.
    stack = build_initial_stack(STACK_TOP, [], [b"A=1"], SIMPLE_AUXV, b"/p", PLATFORM_X86_64, RANDOM)
    check_stack(stack, [], [b"A=1"], SIMPLE_AUXV, b"/p")
    assert stack.argc == 1


def test_no_platform_means_no_at_platform() -> None:
    stack = build_initial_stack(STACK_TOP, [b"p"], [], SIMPLE_AUXV, b"/p", b"", RANDOM)
    check_stack(stack, [b"p"], [], SIMPLE_AUXV, b"/p", platform=b"")


def test_caller_placeholders_keep_their_position() -> None:
    auxv = [(AuxType.AT_RANDOM, 0), (AuxType.AT_PAGESZ, PAGE_SIZE), (AuxType.AT_NULL, 0)]
    stack = build_initial_stack(STACK_TOP, [b"p"], [], auxv, b"/p", PLATFORM_X86_64, RANDOM)
    assert stack.auxv[0] == (AuxType.AT_RANDOM, stack.random_addr)
    assert stack.auxv[1] == (AuxType.AT_PAGESZ, PAGE_SIZE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"argv": [b"a\0b"]},
        {"envp": [b"X=\0"]},
        {"execfn": b"/a\0"},
        {"platform": b"x\0"},
        {"random_bytes": b"short"},
        {"stack_top": STACK_TOP + 8},
        {"stack_top": 0},
        {"auxv": [(AuxType.AT_NULL, 0), (AuxType.AT_PAGESZ, PAGE_SIZE)]},
        {"auxv": [(AuxType.AT_PAGESZ, -1)]},
        {"align_jitter": -1},
        {"align_jitter": 8192},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    call = {"stack_top": STACK_TOP, "argv": [b"p"], "envp": [], "auxv": SIMPLE_AUXV, "execfn": b"/p",
            "platform": PLATFORM_X86_64, "random_bytes": RANDOM} | kwargs
    with pytest.raises(ValueError):
        build_initial_stack(**call)


# --- E2BIG ---------------------------------------------------------------------------------


def build(argv: list[bytes], envp: list[bytes] = (), **kwargs) -> InitialStack:
    return build_initial_stack(STACK_TOP, argv, list(envp), SIMPLE_AUXV, b"/p", PLATFORM_X86_64, RANDOM,
                               **kwargs)


def assert_e2big(argv: list[bytes], envp: list[bytes] = (), **kwargs) -> None:
    with pytest.raises(ArgumentListTooLong) as info:
        build(argv, envp, **kwargs)
    assert info.value.errno == errno.E2BIG
    assert exit_status_for(info.value) == 126
    assert "argument list too long" in str(info.value)


def test_single_string_limit() -> None:
    longest = b"a" * (MAX_ARG_STRLEN - 1)  # with its NUL, exactly MAX_ARG_STRLEN
    assert build([b"p", longest]).argc == 2
    assert_e2big([b"p", longest + b"a"])
    assert_e2big([b"p"], [b"X=" + longest])


def test_total_limit_is_a_quarter_of_the_stack_rlimit() -> None:
    chunk = b"b" * (100 * KIB)
    assert build([chunk] * 19).argc == 19  # 1.9 MiB of the 2 MiB an 8 MiB rlimit allows
    assert_e2big([chunk] * 21)
    assert_e2big([b"p"], [chunk] * 21)
    assert build([chunk] * 21, stack_rlimit=16 * MIB).argc == 21


def test_total_limit_floor_and_ceiling() -> None:
    # Never below ARG_MAX, however small the rlimit; never above 6 MiB.
    assert build([b"c" * (100 * KIB)], stack_rlimit=4 * KIB).argc == 1
    assert_e2big([b"c" * (ARG_MAX // 2)] * 3, stack_rlimit=4 * KIB)
    assert_e2big([b"d" * (120 * KIB)] * 55, stack_rlimit=RLIM_INFINITY)


def test_pointers_count_against_the_limit() -> None:
    pointers_only = ARG_MAX // 8
    assert_e2big([b""] * pointers_only, stack_rlimit=4 * KIB)
    assert_e2big([b"p"], [b""] * pointers_only, stack_rlimit=4 * KIB)


# --- standard_auxv --------------------------------------------------------------------------


def test_standard_auxv_for_a_pie_with_interpreter() -> None:
    image = load_elf("/bin/true")
    bias, interp_base = 0x5555_5555_4000, 0x7FFF_F7FC_3000
    auxv = standard_auxv(image, bias, interp_base, hwcap=0x178BFBFF, hwcap2=2, minsigstksz=3376,
                         uid=1, euid=2, gid=3, egid=4)
    values = dict(auxv)
    assert values[AuxType.AT_PHDR] == image.phdr_vaddr(bias)
    assert values[AuxType.AT_PHENT] == ELF64_PHDR_SIZE
    assert values[AuxType.AT_PHNUM] == image.phnum
    assert values[AuxType.AT_ENTRY] == image.entry + bias
    assert values[AuxType.AT_BASE] == interp_base
    assert values[AuxType.AT_PAGESZ] == PAGE_SIZE and values[AuxType.AT_CLKTCK] == 100
    assert [values[k] for k in (AuxType.AT_UID, AuxType.AT_EUID, AuxType.AT_GID, AuxType.AT_EGID)] == [1, 2, 3, 4]
    assert AuxType.AT_SYSINFO_EHDR not in values
    stack = build_initial_stack(STACK_TOP, [b"true"], [], auxv, b"/bin/true", PLATFORM_X86_64, RANDOM)
    check_stack(stack, [b"true"], [], [(k, v) for k, v in auxv if k not in FILLED], b"/bin/true")


def test_standard_auxv_has_the_hosts_order() -> None:
    # Same entries in the same order as the kernel gave this very process,
    # minus the ones we do not provide (rseq), with a vDSO and without.
    host = [kind for kind in read_host_auxv() if kind in AuxType.__members__.values()]
    ours = [kind for kind, _ in standard_auxv(load_elf("/bin/true"), 0, 0, hwcap=0, hwcap2=0,
                                               minsigstksz=0, uid=0, euid=0, gid=0, egid=0,
                                               vdso=0x7FFF_F7FC_1000)]
    assert ours == host
    without = [kind for kind, _ in standard_auxv(load_elf("/bin/true"), 0, 0, hwcap=0, hwcap2=0,
                                                  minsigstksz=0, uid=0, euid=0, gid=0, egid=0)]
    assert without == [kind for kind in host if kind != AuxType.AT_SYSINFO_EHDR]


# --- Against Linux ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stackdump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GCC is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("stack") / "stackdump"
    src = out.with_suffix(".c")
    src.write_text(STACKDUMP_C)
    subprocess.run([GCC, "-O1", "-static", "-o", str(out), str(src)], check=True, capture_output=True)
    return out


def no_randomize() -> None:
    # Without ADDR_NO_RANDOMIZE, arch_align_stack() moves the stack by a
    # random amount below the strings and the layouts cannot be compared.
    if ctypes.CDLL(None, use_errno=True).personality(ADDR_NO_RANDOMIZE) < 0:
        os._exit(99)


@pytest.mark.parametrize(
    ("argv", "envp"),
    [
        ([b"x"], []),
        ([b"x", b"hello", b""], [b"A=1", b"LONGER_VARIABLE=" + b"v" * 37]),
        ([b"x"] + [b"%d" % i for i in range(50)], [b"E%d=%d" % (i, i) for i in range(33)]),
    ],
)
def test_byte_identical_to_linux(stackdump: Path, argv: list[bytes], envp: list[bytes]) -> None:
    env = dict(item.split(b"=", 1) for item in envp)
    run = subprocess.run([bytes(stackdump), *argv[1:]], env=env, capture_output=True,
                         preexec_fn=no_randomize)
    if run.returncode == 99:
        pytest.skip("personality(ADDR_NO_RANDOMIZE) is not allowed here")
    sp, top = struct.unpack_from("<QQ", run.stdout)
    native = run.stdout[16:]
    native_stack = InitialStack(base=sp, data=native, sp=sp, stack_top=top, argc=0, argv_addrs=(),
                                envp_addrs=(), random_addr=0, execfn_addr=0, platform_addr=None, auxv=())
    native_argv, native_envp, native_auxv = StackReader(native_stack).parse()
    assert native_argv == [bytes(stackdump), *argv[1:]] and native_envp == envp
    values = dict(native_auxv)
    random = StackReader(native_stack).bytes_at(values[AuxType.AT_RANDOM], AT_RANDOM_SIZE)
    platform = StackReader(native_stack).c_string(values[AuxType.AT_PLATFORM])

    ours = build_initial_stack(top, native_argv, envp, native_auxv, bytes(stackdump), platform, random)
    assert (ours.sp, ours.auxv) == (sp, tuple(native_auxv))
    assert ours.data == native


# --- Random argument lists ------------------------------------------------------------------

c_strings = st.binary(max_size=40).map(lambda raw: raw.replace(b"\0", b"@"))


@settings(max_examples=200, deadline=None)
@given(
    argv=st.lists(c_strings, max_size=12),
    envp=st.lists(c_strings, max_size=12),
    execfn=c_strings,
    platform=st.sampled_from([PLATFORM_X86_64, b"", b"i686x"]),
    top_pages=st.integers(1 << 10, (1 << 35) - 1),
    top_offset=st.integers(0, PAGE_SIZE // STACK_ALIGN - 1),
    extra=st.lists(st.tuples(st.sampled_from([AuxType.AT_HWCAP, AuxType.AT_FLAGS, AuxType.AT_UID, 99]),
                             st.integers(0, 2**64 - 1)), max_size=6),
)
def test_random_argument_lists(argv, envp, execfn, platform, top_pages, top_offset, extra) -> None:
    stack_top = top_pages * PAGE_SIZE + top_offset * STACK_ALIGN
    stack = build_initial_stack(stack_top, argv, envp, extra, execfn, platform, RANDOM)
    check_stack(stack, argv, envp, extra, execfn, platform)
