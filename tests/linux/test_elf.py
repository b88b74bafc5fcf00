"""kvmdune.linux.elf against readelf, real binaries, real execve(2) and hostile files."""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmdune.linux.elf import (
    BINPRM_BUF_SIZE,
    ELF64_EHDR_SIZE,
    ELF64_PHDR_SIZE,
    PAGE_SIZE,
    TASK_SIZE,
    ElfImage,
    ElfType,
    ExecFormatError,
    FileIdentity,
    SegmentFlags,
    SegmentType,
    exit_status_for,
    load_elf,
    parse_elf,
    read_shebang,
)

GCC = shutil.which("gcc")
READELF = shutil.which("readelf")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc is not installed")
needs_readelf = pytest.mark.skipif(READELF is None, reason="readelf (binutils) is not installed")

HELLO_C = r"""
#include <stdio.h>
__thread int per_thread = 7;          /* gives the program a PT_TLS */
int main(int argc, char **argv) { printf("hello %d\n", per_thread + argc); return 0; }
"""

# Prints each argument followed by a NUL, so the test sees argv exactly.
ARGDUMP_C = r"""
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) write(1, argv[i], strlen(argv[i]) + 1);
    return 0;
}
"""

# How each program is linked, and the ELF type that gives.
LINK_MODES = {
    "static": (["-static"], ElfType.ET_EXEC),
    "static-pie": (["-static-pie"], ElfType.ET_DYN),
    "dynamic": ([], ElfType.ET_DYN),
    "no-pie": (["-no-pie"], ElfType.ET_EXEC),
    "execstack": (["-z", "execstack"], ElfType.ET_DYN),
}

# Elf64_Ehdr field offsets and formats (<elf.h>).
EHDR_FIELDS = {
    "e_type": (16, "<H"),
    "e_machine": (18, "<H"),
    "e_entry": (24, "<Q"),
    "e_phoff": (32, "<Q"),
    "e_shoff": (40, "<Q"),
    "e_phentsize": (54, "<H"),
    "e_phnum": (56, "<H"),
    "e_shnum": (60, "<H"),
}
ELF64_PHDR = struct.Struct("<IIQQQQQQ")
PHDR_FIELDS = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_align")
EM_386 = 3
ET_REL = 1
ET_CORE = 4


def compile_c(source: str, out: Path, flags: list[str]) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run([GCC, "-O1", "-o", str(out), str(src), *flags], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if GCC is None:
        pytest.skip("gcc is not installed")
    build = tmp_path_factory.mktemp("elf")
    return {mode: compile_c(HELLO_C, build / f"hello-{mode}", flags) for mode, (flags, _) in LINK_MODES.items()}


@pytest.fixture(scope="module")
def static_bytes(programs: dict[str, Path]) -> bytes:
    return programs["static"].read_bytes()


@pytest.fixture(scope="module")
def small_elf(programs: dict[str, Path]) -> bytes:
    """A small dynamic executable: cheap to copy for every fuzzing example."""
    return programs["dynamic"].read_bytes()


# --- readelf, parsed -------------------------------------------------------------


@dataclass
class ReadelfSegment:
    type: str
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    flags: str
    align: int


@dataclass
class ReadelfView:
    type: str
    entry: int
    phoff: int
    phnum: int
    segments: list[ReadelfSegment]
    interp: str | None


_PHDR_ROW = re.compile(
    r"^\s+(?P<type>[A-Z_0-9]+|LOOS\+0x[0-9a-f]+)\s+(?P<offset>0x[0-9a-f]+)\s+(?P<vaddr>0x[0-9a-f]+)\s+"
    r"0x[0-9a-f]+\s+(?P<filesz>0x[0-9a-f]+)\s+(?P<memsz>0x[0-9a-f]+)\s+(?P<flags>[RWE ]{3})\s+"
    r"(?P<align>0x[0-9a-f]+)\s*$"
)


def readelf(path: Path | str) -> ReadelfView:
    text = subprocess.run(
        [READELF, "-lhW", str(path)], check=True, capture_output=True, text=True, env={"LC_ALL": "C"}
    ).stdout

    def header(label: str) -> str:
        return re.search(rf"^\s*{label}:\s+(.*)$", text, re.M).group(1)

    segments = [
        ReadelfSegment(
            type=m["type"],
            offset=int(m["offset"], 16),
            vaddr=int(m["vaddr"], 16),
            filesz=int(m["filesz"], 16),
            memsz=int(m["memsz"], 16),
            flags=m["flags"],
            align=int(m["align"], 16),
        )
        for m in map(_PHDR_ROW.match, text.splitlines())
        if m
    ]
    interp = re.search(r"\[Requesting program interpreter: (.*)\]", text)
    return ReadelfView(
        type=header("Type").split()[0],
        entry=int(header("Entry point address"), 16),
        phoff=int(header("Start of program headers").split()[0]),
        phnum=int(header("Number of program headers")),
        segments=segments,
        interp=interp.group(1) if interp else None,
    )


def readelf_flags(flags: SegmentFlags) -> str:
    return "".join(
        letter if flags & bit else " "
        for letter, bit in (("R", SegmentFlags.PF_R), ("W", SegmentFlags.PF_W), ("E", SegmentFlags.PF_X))
    )


def assert_matches_readelf(image: ElfImage, path: Path | str) -> None:
    view = readelf(path)
    assert view.phnum == len(view.segments), "every program header row was parsed"
    assert image.kind.name == "ET_" + view.type
    assert image.entry == view.entry
    assert image.phoff == view.phoff
    assert image.phnum == view.phnum
    assert image.phentsize == ELF64_PHDR_SIZE
    assert image.interp == view.interp
    loads = [s for s in view.segments if s.type == "LOAD"]
    assert [(s.vaddr, s.offset, s.filesz, s.memsz, s.align, s.flags) for s in loads] == [
        (s.vaddr, s.offset, s.filesz, s.memsz, s.align, readelf_flags(s.flags)) for s in image.segments
    ]
    stacks = [s for s in view.segments if s.type == "GNU_STACK"]
    assert image.executable_stack == bool(stacks and "E" in stacks[0].flags)
    tls = [s for s in view.segments if s.type == "TLS"]
    if tls:
        assert image.tls is not None
        assert (image.tls.vaddr, image.tls.filesz, image.tls.memsz, image.tls.align) == (
            tls[0].vaddr, tls[0].filesz, tls[0].memsz, tls[0].align)
    else:
        assert image.tls is None
    phdrs = [s for s in view.segments if s.type == "PHDR"]
    if phdrs:
        assert image.phdr_vaddr(0) == phdrs[0].vaddr
    assert image.lowest_vaddr == min(s.vaddr for s in loads) // PAGE_SIZE * PAGE_SIZE
    assert image.highest_vaddr % PAGE_SIZE == 0
    assert image.highest_vaddr >= max(s.vaddr + s.memsz for s in loads)


def assert_segment_bytes(image: ElfImage, path: Path | str) -> None:
    """load_elf keeps the file's identity, and its bytes only when its head was the
    whole file: the loader reads each segment from the file otherwise."""
    info = os.stat(path)
    assert image.contents in (b"", Path(path).read_bytes())
    assert image.identity == FileIdentity.of(info)
    for segment in image.segments:
        assert segment.offset + segment.filesz <= info.st_size


# --- Good files ---------------------------------------------------------------------


@needs_readelf
@pytest.mark.parametrize("mode", list(LINK_MODES))
def test_compiled_programs_match_readelf(programs: dict[str, Path], mode: str) -> None:
    image = load_elf(programs[mode])
    assert_matches_readelf(image, programs[mode])
    assert_segment_bytes(image, programs[mode])
    assert image.kind == LINK_MODES[mode][1]
    assert image.needs_load_bias == (image.kind == ElfType.ET_DYN)
    assert image.tls is not None  # HELLO_C has a __thread variable
    assert image.executable_stack == (mode == "execstack")
    assert (image.interp is None) == mode.startswith("static")


def test_static_program_phdr_is_inside_its_first_segment(programs: dict[str, Path]) -> None:
    # Static glibc programs have no PT_PHDR: AT_PHDR must come from the
    # PT_LOAD that maps e_phoff, or glibc cannot find its own PT_TLS.
    image = load_elf(programs["static"])
    assert image.pt_phdr_vaddr is None
    first = image.segments[0]
    assert image.phdr_vaddr(0) == first.vaddr + image.phoff - first.offset
    assert image.phdr_vaddr(0x1000) == image.phdr_vaddr(0) + 0x1000


def test_static_pie_phdr_moves_with_the_load_bias(programs: dict[str, Path]) -> None:
    image = load_elf(programs["static-pie"])
    bias = 0x7F00_0000_0000
    assert image.phdr_vaddr(bias) == image.phdr_vaddr(0) + bias


@needs_readelf
@pytest.mark.parametrize("path", ["/bin/true", "/usr/bin/python3", "/lib64/ld-linux-x86-64.so.2"])
def test_system_binaries_match_readelf(path: str) -> None:
    real = os.path.realpath(path)
    if not os.path.exists(real):
        pytest.skip(f"{path} does not exist on this system")
    image = load_elf(real)
    assert_matches_readelf(image, real)
    assert image.path == real


def test_ld_so_is_a_dyn_without_interpreter() -> None:
    image = load_elf(os.path.realpath("/lib64/ld-linux-x86-64.so.2"))
    assert image.kind == ElfType.DYN
    assert image.interp is None
    assert image.needs_load_bias


def test_section_headers_are_ignored(static_bytes: bytes) -> None:
    # Linux never reads section headers; garbage there must not matter.
    data = patch_ehdr(static_bytes, e_shoff=0xFFFF_FFFF_FFFF, e_shnum=0xFFFF)
    layout = [(s.vaddr, s.memsz, s.filesz, s.offset, s.flags) for s in parse_elf(data).segments]
    assert layout == [(s.vaddr, s.memsz, s.filesz, s.offset, s.flags) for s in parse_elf(static_bytes).segments]


# --- Bad files, by hand ----------------------------------------------------------------


def patch_ehdr(data: bytes, **fields: int) -> bytes:
    out = bytearray(data)
    for name, value in fields.items():
        offset, fmt = EHDR_FIELDS[name]
        struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def read_phdrs(data: bytes) -> list[dict[str, int]]:
    (phoff,) = struct.unpack_from("<Q", data, EHDR_FIELDS["e_phoff"][0])
    (phnum,) = struct.unpack_from("<H", data, EHDR_FIELDS["e_phnum"][0])
    return [dict(zip(PHDR_FIELDS, ELF64_PHDR.unpack_from(data, phoff + i * ELF64_PHDR_SIZE))) for i in range(phnum)]


def patch_phdr(data: bytes, index: int, **fields: int) -> bytes:
    out = bytearray(data)
    (phoff,) = struct.unpack_from("<Q", data, EHDR_FIELDS["e_phoff"][0])
    phdr = read_phdrs(data)[index] | fields
    ELF64_PHDR.pack_into(out, phoff + index * ELF64_PHDR_SIZE, *(phdr[name] for name in PHDR_FIELDS))
    return bytes(out)


def phdr_index(data: bytes, kind: SegmentType, nth: int = 0) -> int:
    return [i for i, p in enumerate(read_phdrs(data)) if p["p_type"] == kind][nth]


def assert_noexec(data: bytes, *needles: str) -> ExecFormatError:
    with pytest.raises(ExecFormatError) as info:
        parse_elf(data, "prog")
    assert info.value.errno == errno.ENOEXEC
    assert exit_status_for(info.value) == 126
    for needle in needles:
        assert needle in str(info.value)
    return info.value


def handmade_elf32_header() -> bytes:
    """An i386 executable's ELF header, built from <elf.h> values."""
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)  # ELFCLASS32, ELFDATA2LSB, EV_CURRENT
    #                           e_type e_machine e_version e_entry e_phoff e_shoff e_flags
    rest = struct.pack("<HHIIIIIHHHHHH", 2, EM_386, 1, 0x8048000, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    return ident + rest


def test_32bit_elf_is_refused_with_a_clear_message() -> None:
    error = assert_noexec(handmade_elf32_header(), "32-bit ELF (ELFCLASS32)", "ELFCLASS64, EM_X86_64")
    assert error.path == "prog"


@needs_gcc
def test_32bit_program_from_gcc_m32(tmp_path: Path) -> None:
    try:
        prog = compile_c(HELLO_C, tmp_path / "hello32", ["-m32"])
    except subprocess.CalledProcessError:
        pytest.skip("gcc -m32 does not link here (no multilib); the hand-made ELF32 header test covers this")
    prog.chmod(0o755)
    with pytest.raises(ExecFormatError, match="ELFCLASS32") as info:
        load_elf(prog)
    assert info.value.errno == errno.ENOEXEC


@pytest.mark.parametrize(
    ("mutation", "needle"),
    [
        (lambda d: d[:4] + bytes([3]) + d[5:], "unknown class"),
        (lambda d: d[:5] + bytes([2]) + d[6:], "ELFDATA2MSB"),
        (lambda d: patch_ehdr(d, e_machine=EM_386), "EM_386"),
        (lambda d: patch_ehdr(d, e_machine=0xBEEF), "machine 48879"),
        (lambda d: patch_ehdr(d, e_type=ET_REL), "ET_REL"),
        (lambda d: patch_ehdr(d, e_type=ET_CORE), "ET_CORE"),
        (lambda d: patch_ehdr(d, e_type=0x1234), "unknown type"),
        (lambda d: patch_ehdr(d, e_phentsize=32), "e_phentsize"),
        (lambda d: patch_ehdr(d, e_phnum=0), "e_phnum"),
        (lambda d: patch_ehdr(d, e_phnum=65536 // ELF64_PHDR_SIZE + 1), "e_phnum"),
        (lambda d: patch_ehdr(d, e_phoff=len(d) - ELF64_PHDR_SIZE), "program headers"),
        (lambda d: patch_ehdr(d, e_phoff=2**64 - 1), "program headers"),
        (lambda d: patch_ehdr(d, e_entry=0), "entry point"),
        (lambda d: patch_ehdr(d, e_entry=TASK_SIZE + 5), "entry point"),
    ],
    ids=["class", "big-endian", "i386", "unknown-machine", "rel", "core", "unknown-type", "phentsize",
         "no-phdrs", "too-many-phdrs", "phdrs-past-eof", "phoff-overflow", "entry-zero", "entry-kernel"],
)
def test_bad_headers(static_bytes: bytes, mutation, needle: str) -> None:
    assert_noexec(mutation(static_bytes), needle)


def mutate_load(data: bytes, nth: int, **fields: int) -> bytes:
    return patch_phdr(data, phdr_index(data, SegmentType.PT_LOAD, nth), **fields)


@pytest.mark.parametrize(
    ("mutation", "needle"),
    [
        (lambda d, p: mutate_load(d, 1, p_filesz=p[1]["p_memsz"] + 1), "larger than p_memsz"),
        (lambda d, p: mutate_load(d, 1, p_offset=len(d) - PAGE_SIZE + p[1]["p_vaddr"] % PAGE_SIZE),
         "past the end"),
        (lambda d, p: mutate_load(d, 1, p_offset=2**64 - PAGE_SIZE), "past the end"),
        (lambda d, p: mutate_load(d, -1, p_memsz=TASK_SIZE), "beyond user space"),
        (lambda d, p: mutate_load(d, -1, p_vaddr=2**64 - PAGE_SIZE, p_offset=0, p_filesz=0),
         "beyond user space"),
        (lambda d, p: mutate_load(d, 1, p_offset=p[1]["p_offset"] + 8), "modulo"),
        (lambda d, p: mutate_load(d, 1, p_vaddr=p[0]["p_vaddr"] + 16, p_offset=16), "ascending"),
        (lambda d, p: mutate_load(d, 0, p_memsz=p[1]["p_vaddr"] - p[0]["p_vaddr"] + 1,
                                  p_filesz=p[1]["p_vaddr"] - p[0]["p_vaddr"] + 1), "overlap"),
    ],
    ids=["filesz>memsz", "offset-past-eof", "offset-overflow", "memsz-huge", "vaddr-wraps", "misaligned",
         "descending", "overlapping"],
)
def test_bad_load_segments(static_bytes: bytes, mutation, needle: str) -> None:
    loads = [p for p in read_phdrs(static_bytes) if p["p_type"] == SegmentType.PT_LOAD]
    assert_noexec(mutation(static_bytes, loads), needle)


def test_no_load_segment(static_bytes: bytes) -> None:
    data = static_bytes
    for index, phdr in enumerate(read_phdrs(data)):
        if phdr["p_type"] == SegmentType.PT_LOAD:
            data = patch_phdr(data, index, p_type=SegmentType.PT_NULL)
    assert_noexec(data, "no PT_LOAD")


def test_interp_checks(small_elf: bytes) -> None:
    index = phdr_index(small_elf, SegmentType.PT_INTERP)
    interp = read_phdrs(small_elf)[index]
    assert_noexec(patch_phdr(small_elf, index, p_filesz=interp["p_filesz"] - 1), "NUL-terminated")
    assert_noexec(patch_phdr(small_elf, index, p_filesz=4097), "PATH_MAX")
    assert_noexec(patch_phdr(small_elf, index, p_filesz=1), "PATH_MAX")
    assert_noexec(patch_phdr(small_elf, index, p_offset=len(small_elf) - 4), "past the end")
    empty = bytearray(small_elf)
    empty[interp["p_offset"]] = 0
    assert_noexec(bytes(empty), "empty")


def test_entry_in_a_non_executable_segment_is_left_to_fault(static_bytes: bytes) -> None:
    # Linux does not check that the entry is executable; neither do we.
    first = read_phdrs(static_bytes)[phdr_index(static_bytes, SegmentType.PT_LOAD)]
    assert not first["p_flags"] & SegmentFlags.PF_X
    assert parse_elf(patch_ehdr(static_bytes, e_entry=first["p_vaddr"])).entry == first["p_vaddr"]


# --- Bad files on disk: errno and exit status -------------------------------------------


def executable(path: Path, data: bytes, mode: int = 0o755) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def load_error(path: Path | str) -> ExecFormatError:
    with pytest.raises(ExecFormatError) as info:
        load_elf(path)
    return info.value


def test_text_file(tmp_path: Path) -> None:
    error = load_error(executable(tmp_path / "notes.txt", b"just some text\n"))
    assert (error.errno, exit_status_for(error)) == (errno.ENOEXEC, 126)
    assert "not an ELF file" in str(error) and "notes.txt" in str(error)


@pytest.mark.parametrize("cut", [0, 3, 4, 5, 17, ELF64_EHDR_SIZE - 1, ELF64_EHDR_SIZE, ELF64_EHDR_SIZE + 100,
                                 PAGE_SIZE, "half"])
def test_truncated_elf(tmp_path: Path, static_bytes: bytes, cut: int | str) -> None:
    # Cutting only the section headers at the end is harmless, as in Linux;
    # "half" cuts through the text segment.
    end = len(static_bytes) // 2 if cut == "half" else cut
    error = load_error(executable(tmp_path / "cut", static_bytes[:end]))
    assert (error.errno, exit_status_for(error)) == (errno.ENOEXEC, 126)


def test_directory(tmp_path: Path) -> None:
    error = load_error(tmp_path)
    assert (error.errno, exit_status_for(error)) == (errno.EACCES, 126)
    assert "directory" in str(error)


def test_missing_file(tmp_path: Path) -> None:
    error = load_error(tmp_path / "nope")
    assert (error.errno, exit_status_for(error)) == (errno.ENOENT, 127)


def test_no_execute_permission(tmp_path: Path, static_bytes: bytes) -> None:
    error = load_error(executable(tmp_path / "prog", static_bytes, mode=0o644))
    assert (error.errno, exit_status_for(error)) == (errno.EACCES, 126)
    assert "execute permission" in str(error)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o755)
    error = load_error(fifo)
    assert (error.errno, exit_status_for(error)) == (errno.EACCES, 126)


def test_errnos_agree_with_linux_execve(tmp_path: Path, static_bytes: bytes) -> None:
    cases = {
        "text": executable(tmp_path / "text", b"\x00hello"),
        "noexec": executable(tmp_path / "noexec", static_bytes, mode=0o644),
        "elf32": executable(tmp_path / "elf32", handmade_elf32_header()),
        "dir": tmp_path,
        "missing": tmp_path / "missing",
    }
    for name, path in cases.items():
        with pytest.raises(OSError) as native:
            subprocess.run([str(path)], capture_output=True, check=False)
        assert load_error(path).errno == native.value.errno, name


# --- Fuzzing: only ExecFormatError may come out ------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def parse_or_refuse(data: bytes) -> None:
    try:
        parse_elf(data, "fuzz")
    except ExecFormatError as error:
        assert error.errno == errno.ENOEXEC
        assert error.message


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(data: bytes) -> None:
    parse_or_refuse(data)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_after_a_valid_ident(tail: bytes) -> None:
    parse_or_refuse(b"\x7fELF\x02\x01\x01" + bytes(9) + tail)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_real_elf(small_elf: bytes, data: st.DataObject) -> None:
    # Most of what the parser reads is in the first kilobyte: aim there.
    hot = min(len(small_elf), 1024)
    mutated = bytearray(small_elf)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, hot - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.just(len(mutated)), st.integers(0, len(mutated))))
    parse_or_refuse(bytes(mutated[:cut]))


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_program_headers(small_elf: bytes, data: st.DataObject) -> None:
    # Whole 64-bit fields replaced: reaches the overflow and overlap checks.
    phdrs = read_phdrs(small_elf)
    index = data.draw(st.integers(0, len(phdrs) - 1))
    name = data.draw(st.sampled_from(PHDR_FIELDS[2:]))
    value = data.draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2 * len(small_elf)),
                                st.sampled_from([0, 1, PAGE_SIZE, TASK_SIZE, 2**63, 2**64 - 1])))
    parse_or_refuse(patch_phdr(small_elf, index, **{name: value}))


# --- #! scripts -------------------------------------------------------------------------


def test_shebang_parsing() -> None:
    assert read_shebang(b"\x7fELF") is None
    assert read_shebang(b"") is None
    assert read_shebang(b"#!/bin/sh\n") == ("/bin/sh", None)
    assert read_shebang(b"#! /bin/sh  -e \t\necho") == ("/bin/sh", "-e")
    assert read_shebang(b"#!/usr/bin/env python3 -u -x\n") == ("/usr/bin/env", "python3 -u -x")
    assert read_shebang(b"#!/bin/sh\r\n") == ("/bin/sh\r", None)
    assert read_shebang(b"#!/bin/sh") == ("/bin/sh", None)
    with pytest.raises(ExecFormatError) as info:
        read_shebang(b"#!   \n")
    assert info.value.errno == errno.ENOEXEC
    with pytest.raises(ExecFormatError):
        read_shebang(b"#!/" + b"x" * BINPRM_BUF_SIZE)


@pytest.fixture(scope="module")
def argdump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GCC is None:
        pytest.skip("gcc is not installed")
    return compile_c(ARGDUMP_C, tmp_path_factory.mktemp("argdump") / "argdump", [])


def shebang_cases(interp: bytes) -> dict[str, bytes]:
    pad = BINPRM_BUF_SIZE
    return {
        "plain": b"#!" + interp + b"\n",
        "spaces": b"#!  " + interp + b" \t \n",
        "argument": b"#!" + interp + b"  one two \n",
        "tab-argument": b"#!" + interp + b"\tx y\n",
        "carriage-return": b"#!" + interp + b" -a\r\n",
        "no-newline": b"#!" + interp,
        "no-newline-argument": b"#!" + interp + b" arg",
        "nul-ends-argument": b"#!" + interp + b" a\0b\n",
        "long-argument-cut": b"#!" + interp + b" " + b"a" * pad + b"\n",
        "long-interp-cut": b"#!" + interp + b"x" * pad + b"\n",
        "empty": b"#!\n",
        "bare": b"#!",
        "nul-name": b"#!  \0/bin/sh\n",
        "only-spaces": b"#!" + b" " * pad,
    }


@pytest.mark.parametrize("case", list(shebang_cases(b"")))
def test_shebang_agrees_with_linux(tmp_path: Path, argdump: Path, case: str) -> None:
    script = executable(tmp_path / "script", shebang_cases(bytes(argdump))[case])
    data = script.read_bytes()
    try:
        native = subprocess.run([str(script)], capture_output=True, check=True).stdout.split(b"\0")[:-1]
    except OSError as exc:
        with pytest.raises(ExecFormatError) as info:
            read_shebang(data)
        assert info.value.errno == exc.errno
        return
    interpreter, argument = read_shebang(data)
    expected = [os.fsencode(interpreter)] + ([os.fsencode(argument)] if argument is not None else [])
    assert native == [*expected, bytes(script)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300).map(lambda tail: b"#!" + tail))
def test_fuzz_shebang(data: bytes) -> None:
    try:
        result = read_shebang(data)
    except ExecFormatError as error:
        assert error.errno in (errno.ENOEXEC, errno.EACCES)
    else:
        assert result is not None
        interpreter, argument = result
        assert interpreter and "\0" not in interpreter
        assert argument is None or "\0" not in argument


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_first_load_size_is_the_first_pt_load_when_it_starts_the_file():
    from kvmdune.linux.elf import first_load_size

    library = Path("/lib/x86_64-linux-gnu/libc.so.6").read_bytes()
    phoff, = struct.unpack_from("<Q", library, 0x20)
    phnum, = struct.unpack_from("<H", library, 0x38)
    loads = [struct.unpack_from("<IIQQQQ", library, phoff + 56 * i) for i in range(phnum)]
    first = next(p for p in loads if p[0] == 1)
    assert first[2] == 0 and first_load_size(library[:4096]) == first[5]
    assert first_load_size(library[:0x40]) is None           # headers cut off
    assert first_load_size(b"#!/bin/sh\n" + bytes(4096)) is None
    moved = bytearray(library[:4096])
    struct.pack_into("<Q", moved, phoff + 56 * loads.index(first) + 8, 4096)
    assert first_load_size(bytes(moved)) is None             # not from offset 0
