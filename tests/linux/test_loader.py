"""The loader's segments in guest memory (kvmdune.linux.loader.map_image over a real
AddressSpace of real guest memory): what `load_elf` leaves in the file (a big
program's segments are read from the file straight into guest frames) lands there
byte for byte, with zeros after p_filesz; a file changed between `load_elf` and the
mapping is refused, never mapped half old, half new; headers past the head that
`load_elf` reads first are still found."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kvmdune.linux.elf import HEAD_SIZE, ExecFormatError, load_elf, page_down, page_up, parse_elf
from kvmdune.linux.loader import map_image
from kvmdune.linux.mm import MemoryMap
from kvmdune.memory import PAGE_SIZE, VMM, AddressSpace
from kvmdune.memory.guest_memory import GuestMemory

MEMORY = 64 << 20
#: A load bias for PIE files, away from address 0.
BIAS = 0x5555_0000_0000
#: Bigger than HEAD_SIZE: its segments are read from the file, not from load_elf's bytes.
BIG_ARRAY = 256 * 1024
BIG_C = f"""
#include <stdio.h>
static const unsigned char table[{BIG_ARRAY}] = {{ 1, 2, 3, [{BIG_ARRAY} - 1] = 7 }};
static unsigned char data[{BIG_ARRAY}] = {{ 9, [{BIG_ARRAY} - 1] = 5 }};
static unsigned char bss[{BIG_ARRAY}];
int main(int argc, char **argv) {{
    (void)argv;
    printf("%d %d %d %d %d\\n", table[argc + 1], table[{BIG_ARRAY} - argc], data[argc - 1],
           data[{BIG_ARRAY} - argc], bss[argc]);
    return 0;
}}
"""
E_PHOFF = 0x20       # Elf64_Ehdr.e_phoff's offset


#: How the program is linked: a static ET_EXEC, and a PIE (ld.so maps its libraries).
LINK_FLAGS = {"static": ["-static"], "pie": ["-pie", "-fPIE"]}


def _build(directory: Path, link: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    source = directory / "big.c"
    source.write_text(BIG_C)
    program = directory / f"big-{link}"
    subprocess.run([gcc, "-O1", *LINK_FLAGS[link], "-o", str(program), str(source)], check=True)
    assert program.stat().st_size > HEAD_SIZE
    return program


@pytest.fixture(scope="module")
def big_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("loader"), "static")


@pytest.fixture()
def mm() -> MemoryMap:
    memory = GuestMemory(MEMORY)
    space = AddressSpace(memory)
    yield MemoryMap(space)
    space.close()


def _bias(image) -> int:
    return BIAS if image.needs_load_bias else 0


def assert_segments_in_memory(mm: MemoryMap, image, data: bytes) -> None:
    """Each segment's pages hold the file from their first page's start, up to
    p_filesz, and zeros from there to the end of its last page."""
    bias = _bias(image)
    for segment in image.segments:
        start = page_down(segment.vaddr + bias)
        lead = segment.vaddr + bias - start
        end = page_up(segment.vaddr + bias + segment.memsz)
        inside = mm.space.read(start, end - start, VMM)
        expected = data[segment.offset - lead:segment.offset + segment.filesz]
        assert inside[:len(expected)] == expected
        assert inside[len(expected):] == bytes(end - start - len(expected))


def test_segments_are_read_from_the_file(mm: MemoryMap, big_program: Path) -> None:
    image = load_elf(big_program)
    assert image.contents == b"", "load_elf read the head only"
    map_image(mm, image, _bias(image))
    assert_segments_in_memory(mm, image, big_program.read_bytes())


def test_segments_from_parsed_bytes_are_the_same(mm: MemoryMap, big_program: Path) -> None:
    data = big_program.read_bytes()
    image = parse_elf(data, str(big_program))
    assert image.contents == data
    map_image(mm, image, _bias(image))
    assert_segments_in_memory(mm, image, data)


def test_a_file_changed_after_load_elf_is_refused(mm: MemoryMap, big_program: Path,
                                                   tmp_path: Path) -> None:
    copy = tmp_path / "big"
    shutil.copy(big_program, copy)
    image = load_elf(copy)
    with open(copy, "r+b") as f:              # same size, new bytes: a new mtime
        f.seek(image.segments[-1].offset)
        f.write(b"\xff" * 16)
    os.utime(copy, ns=(0, 1))
    with pytest.raises(ExecFormatError) as caught:
        map_image(mm, image, _bias(image))
    assert caught.value.errno == errno.ETXTBSY
    assert mm.vmas == []


def test_a_replaced_file_is_refused(mm: MemoryMap, big_program: Path, tmp_path: Path) -> None:
    copy = tmp_path / "big"
    shutil.copy(big_program, copy)
    image = load_elf(copy)
    replacement = tmp_path / "other"
    shutil.copy(big_program, replacement)
    os.replace(replacement, copy)             # same bytes, another inode
    with pytest.raises(ExecFormatError) as caught:
        map_image(mm, image, _bias(image))
    assert caught.value.errno == errno.ETXTBSY


def test_program_headers_past_the_head_are_read(big_program: Path, tmp_path: Path) -> None:
    """A file whose program header table lies past HEAD_SIZE (moved to the end) is
    parsed as if it had been read whole."""
    data = big_program.read_bytes()
    phoff, = struct.unpack_from("<Q", data, E_PHOFF)
    phnum, = struct.unpack_from("<H", data, 0x38)
    table = data[phoff:phoff + phnum * 56]
    moved = bytearray(data) + table
    struct.pack_into("<Q", moved, E_PHOFF, len(data))
    assert len(data) > HEAD_SIZE
    path = tmp_path / "moved"
    path.write_bytes(bytes(moved))
    path.chmod(0o755)
    image = load_elf(path)
    whole = parse_elf(bytes(moved), str(path))
    assert image.segments == whole.segments
    assert image.phoff == len(data)


@pytest.mark.kvm
@pytest.mark.parametrize("link", sorted(LINK_FLAGS))
def test_the_guest_reads_its_segments(link: str, tmp_path: Path) -> None:
    """The program itself reads its initialized tables, its data and its bss (zero)
    as natively."""
    program = str(_build(tmp_path, link))
    native = subprocess.run([program], capture_output=True, check=True)
    ours = subprocess.run([sys.executable, "-m", "kvmdune", "run", "--", program],
                          capture_output=True, timeout=300)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == native.stdout == b"3 7 9 5 0\n"
