"""ELF executables and `#!` scripts, checked the way Linux's exec checks them.

This module owns turning the bytes of a file a guest asks to execute into a
validated, immutable description of what to map (`ElfImage`), or into an
`ExecFormatError` carrying the errno Linux's execve(2) would return. It follows
fs/binfmt_elf.c (load_elf_binary, load_elf_phdrs) and fs/binfmt_script.c, and
is stricter where Linux would go on to map a broken file and let the process
fault later: the guest is hostile, and a clear refusal is better than a
confusing crash inside the VM.

Only the ELF header and program headers are read, as Linux does; section
headers are never looked at, so stripped or section-less files load. `load_elf`
reads the head of the file that holds them (and PT_INTERP and the notes), not the
whole file: the loader reads each segment from the file straight into guest frames
(a 7 MB executable was read whole into the VMM's heap first, then copied again).
Both are fixed little-endian layouts read with `struct` after every bound is
checked (pyelftools would build every structure of the format for each file,
and importing it costs more than the rest of a short run); pyelftools' name
tables are consulted only to word a refusal. No exception other than
`ExecFormatError` leaves `parse_elf`.

Mapping the segments (choosing a load bias, zeroing the bss tail, placing the
interpreter) belongs to the loader that uses this module, not to it.
"""

from __future__ import annotations

import errno as _errno
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, IntFlag
from typing import Any, Iterator

from ..machine.layout import TASK_SIZE, USER_PROGRAM_END

__all__ = [
    "BINPRM_BUF_SIZE",
    "ELF64_EHDR_SIZE",
    "ELF64_PHDR_SIZE",
    "ElfClass",
    "ElfData",
    "ElfImage",
    "ElfMachine",
    "ElfType",
    "ExecFormatError",
    "FileIdentity",
    "MAX_PHDR_TABLE_SIZE",
    "PAGE_SIZE",
    "PATH_MAX",
    "Segment",
    "SegmentFlags",
    "SegmentType",
    "TASK_SIZE",
    "TlsInfo",
    "exit_status_for",
    "load_elf",
    "page_down",
    "page_up",
    "parse_elf",
    "read_shebang",
]

# --- Constants, named as in <elf.h> and the kernel -------------------------

ELF_MAGIC = b"\x7fELF"
EI_CLASS = 4  # e_ident index of the file class byte
EI_DATA = 5  # e_ident index of the data-encoding byte

ELF64_EHDR_SIZE = 64  # sizeof(Elf64_Ehdr)
ELF64_PHDR_SIZE = 56  # sizeof(Elf64_Phdr); Linux refuses any other e_phentsize

# Elf64_Ehdr and Elf64_Phdr (<elf.h>), little-endian, field by field.
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_EHDR_FIELDS = ("e_ident", "e_type", "e_machine", "e_version", "e_entry", "e_phoff", "e_shoff",
                "e_flags", "e_ehsize", "e_phentsize", "e_phnum", "e_shentsize", "e_shnum",
                "e_shstrndx")
_PHDR = struct.Struct("<IIQQQQQQ")
_PHDR_FIELDS = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz",
                "p_align")

# load_elf_phdrs() refuses a program header table larger than this.
MAX_PHDR_TABLE_SIZE = 64 * 1024

PAGE_SIZE = 4096  # ELF_MIN_ALIGN on x86-64

PATH_MAX = 4096  # longest PT_INTERP Linux accepts, NUL included
MIN_INTERP_SIZE = 2  # one character and its NUL; Linux refuses shorter

# fs/binfmt_script.c looks only at the first BINPRM_BUF_SIZE bytes of a file.
BINPRM_BUF_SIZE = 256
SHEBANG = b"#!"
SHEBANG_SPACES = b" \t"  # binfmt_script's spacetab(): not \r, not \n
SHEBANG_TERMINATORS = b" \t\0"  # binfmt_script's next_terminator()

# Exit statuses a POSIX shell uses when a command cannot be run.
#: kvmdune itself failed (no KVM, no memory for the guest), as env and timeout use it.
EXIT_VMM_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class ElfClass(IntEnum):
    """e_ident[EI_CLASS]."""

    ELFCLASSNONE = 0
    ELFCLASS32 = 1
    ELFCLASS64 = 2


class ElfData(IntEnum):
    """e_ident[EI_DATA]."""

    ELFDATANONE = 0
    ELFDATA2LSB = 1
    ELFDATA2MSB = 2


class ElfType(IntEnum):
    """e_type values kvmdune executes; EXEC and DYN are short aliases."""

    ET_EXEC = 2  # fixed-address executable (classic static or non-PIE)
    ET_DYN = 3  # position independent: PIE, static-pie, or ld.so itself
    EXEC = 2
    DYN = 3


class ElfMachine(IntEnum):
    """The e_machine values this module names in its messages."""

    EM_386 = 3
    EM_X86_64 = 62


class SegmentType(IntEnum):
    """p_type values the loader acts on (others are carried but ignored)."""

    PT_NULL = 0
    PT_LOAD = 1
    PT_DYNAMIC = 2
    PT_INTERP = 3
    PT_NOTE = 4
    PT_SHLIB = 5
    PT_PHDR = 6
    PT_TLS = 7
    PT_GNU_EH_FRAME = 0x6474E550
    PT_GNU_STACK = 0x6474E551
    PT_GNU_RELRO = 0x6474E552
    PT_GNU_PROPERTY = 0x6474E553


class SegmentFlags(IntFlag):
    """p_flags permission bits."""

    PF_X = 0x1
    PF_W = 0x2
    PF_R = 0x4


# Names for the e_type values we refuse, so the message says what the file is.
_REFUSED_TYPE_NAMES = {
    0: "ET_NONE (no file type)",
    1: "ET_REL (relocatable object file, not linked)",
    4: "ET_CORE (core dump)",
}
_EXPECTED_TYPES = "ET_EXEC (executable) or ET_DYN (PIE, static-pie, ld.so)"
_EXPECTED_ARCH = "x86-64 (ELFCLASS64, EM_X86_64) programs"


def page_down(value: int) -> int:
    """Round down to a page boundary (ELF_PAGESTART)."""
    return value & ~(PAGE_SIZE - 1)


def page_up(value: int) -> int:
    """Round up to a page boundary (ELF_PAGEALIGN)."""
    return page_down(value + PAGE_SIZE - 1)


# --- Errors -----------------------------------------------------------------


class ExecFormatError(Exception):
    """A file cannot be executed; `errno` is what Linux's execve(2) returns.

    ENOEXEC: not ELF, a malformed ELF, or the wrong class or machine.
    EACCES: no execute permission, a directory, or not a regular file.
    ENOENT: the file does not exist. Other errnos come from the host's open().
    """

    def __init__(self, errno: int, message: str, path: str = "") -> None:
        self.errno = errno
        self.message = message
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def exit_status_for(err: ExecFormatError) -> int:
    """The exit status a shell gives for this failure: 127 not found, else 126."""
    return EXIT_NOT_FOUND if err.errno == _errno.ENOENT else EXIT_CANNOT_EXECUTE


def _noexec(path: str, message: str) -> ExecFormatError:
    return ExecFormatError(_errno.ENOEXEC, message, path)


# --- Values -------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD: map the file's bytes [offset, offset+filesz) at vaddr (+ load
    bias), zero-fill up to memsz."""

    vaddr: int
    memsz: int
    filesz: int
    offset: int
    align: int
    flags: SegmentFlags

    @property
    def end(self) -> int:
        """First address past the segment's memory image (unaligned)."""
        return self.vaddr + self.memsz


@dataclass(frozen=True)
class TlsInfo:
    """The PT_TLS template: the initial thread-local image and its alignment."""

    vaddr: int
    memsz: int
    filesz: int
    offset: int
    align: int


@dataclass(frozen=True)
class ElfImage:
    """A validated x86-64 ELF executable, as found in the file (no bias added)."""

    path: str
    kind: ElfType
    entry: int
    phoff: int
    phentsize: int
    phnum: int
    segments: tuple[Segment, ...]  # the PT_LOADs, ascending, non-overlapping
    interp: str | None  # PT_INTERP path, e.g. "/lib64/ld-linux-x86-64.so.2"
    # PT_GNU_STACK with PF_X. Without PT_GNU_STACK a 64-bit x86 process still
    # gets a non-executable stack (READ_IMPLIES_EXEC applies to ia32 only).
    executable_stack: bool
    tls: TlsInfo | None
    pt_phdr_vaddr: int | None  # PT_PHDR's p_vaddr, when the file has one
    #: (owner, type) of every well-formed note in the PT_NOTE segments.
    notes: frozenset[tuple[bytes, int]] = frozenset()
    #: The whole file, when `parse_elf` was given it (the loader maps from it);
    #: empty from `load_elf`, whose loader reads the segments from the file.
    contents: bytes = field(default=b"", repr=False, compare=False)
    #: The file as `load_elf` found it (FileIdentity): the loader maps the
    #: segments only from the same file, unchanged (None: from ``contents``).
    identity: "FileIdentity | None" = field(default=None, compare=False)

    @property
    def needs_load_bias(self) -> bool:
        """ET_DYN files are linked at 0-based addresses and must be relocated."""
        return self.kind == ElfType.ET_DYN

    @property
    def lowest_vaddr(self) -> int:
        """Page-aligned start of the lowest PT_LOAD."""
        return page_down(self.segments[0].vaddr)

    @property
    def highest_vaddr(self) -> int:
        """Page-aligned end of the highest PT_LOAD (exclusive)."""
        return page_up(max(segment.end for segment in self.segments))

    @property
    def span(self) -> int:
        """Bytes of address space the PT_LOADs occupy, holes included."""
        return self.highest_vaddr - self.lowest_vaddr

    @property
    def max_align(self) -> int:
        """Alignment Linux gives the load bias: the largest power-of-two p_align.

        Mirrors binfmt_elf's maximum_alignment(): values that are not a power
        of two are ignored, and a page is the minimum.
        """
        aligns = [s.align for s in self.segments if _is_power_of_two(s.align)]
        return max([PAGE_SIZE, *aligns])

    def phdr_vaddr(self, load_bias: int) -> int:
        """AT_PHDR: where the program headers are in the loaded image.

        PT_PHDR's address if the file has one; otherwise the address of e_phoff
        inside the PT_LOAD whose file range contains it (what Linux computes
        since 5.18). If no PT_LOAD covers the table, Linux passes the bare load
        bias, and so does this.
        """
        if self.pt_phdr_vaddr is not None:
            return self.pt_phdr_vaddr + load_bias
        for segment in self.segments:
            if segment.offset <= self.phoff < segment.offset + segment.filesz:
                return self.phoff - segment.offset + segment.vaddr + load_bias
        return load_bias


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


#: The ELF header's fields ``first_load_size`` reads: the identification, then
#: e_phoff (at 0x20) and e_phentsize, e_phnum (at 0x36).
_IDENT_64_LE = b"\x7fELF\x02\x01"
_PHOFF = struct.Struct("<Q")
_PHENT = struct.Struct("<HH")
#: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz (of an Elf64_Phdr).
_PHDR_HEAD = struct.Struct("<IIQQQQ")
_PHDR_SIZE = 56


def first_load_size(head: bytes) -> int | None:
    """The file size of the first PT_LOAD of the 64-bit little-endian ELF file whose
    first bytes are ``head``, when it starts the file (offset 0, as ld.so maps a
    library whole and keeps that part of it); None for anything else, or program
    headers not wholly in ``head``."""
    if not head.startswith(_IDENT_64_LE) or len(head) < 0x38 + _PHENT.size:
        return None
    phoff, = _PHOFF.unpack_from(head, 0x20)
    phentsize, phnum = _PHENT.unpack_from(head, 0x36)
    if phentsize != _PHDR_SIZE or phoff + phnum * phentsize > len(head):
        return None
    for index in range(phnum):
        kind, _flags, offset, _vaddr, _paddr, filesz = _PHDR_HEAD.unpack_from(
            head, phoff + index * phentsize)
        if kind == SegmentType.PT_LOAD:
            return filesz if offset == 0 else None
    return None


# --- Loading --------------------------------------------------------------------


#: What `load_elf` reads first: the ELF header, the program headers, PT_INTERP and
#: the notes lie in it in every linker's output (all of them is read otherwise).
HEAD_SIZE = 16 * 1024


@dataclass(frozen=True)
class FileIdentity:
    """Which file, in which state: a file with the same identity later is the
    same inode with the same size, contents time and change time."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> "FileIdentity":
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class _BeyondHead(Exception):
    """A header `parse_elf` needs lies past the bytes it was given."""


#: Executables parsed before from their head, by path and file identity: a
#: program's interpreter (ld.so) is parsed once per VMM lineage, as forked children
#: inherit this, not on every execve. (Images holding a whole file are not kept.)
_parsed: dict[tuple[str, FileIdentity], ElfImage] = {}
PARSED_CACHE_ENTRIES = 64


def load_elf(path: str | os.PathLike[str]) -> ElfImage:
    """Read and validate the ELF executable at `path` (one open; its head only,
    unless its headers lie further in; none when the same file, unchanged, was
    loaded before)."""
    name = os.fsdecode(path)
    fd = _open_executable(name)
    try:
        info = os.fstat(fd)
        key = (name, FileIdentity.of(info))
        kept = _parsed.get(key)
        if kept is not None:
            return kept
        head = os.pread(fd, HEAD_SIZE, 0)
        try:
            image = parse_elf(head, name, file_size=info.st_size, identity=key[1])
        except _BeyondHead:
            # All of it, as read now (a file cut meanwhile is parsed as it is).
            return parse_elf(_read_all(fd), name)
        if len(_parsed) >= PARSED_CACHE_ENTRIES:
            _parsed.clear()
        _parsed[key] = image
        return image
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _open_executable(path: str) -> int:
    """The file opened, after the permission checks execve(2) makes."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang the VMM; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except IsADirectoryError as exc:
        raise ExecFormatError(_errno.EACCES, "is a directory, not a program", path) from exc
    except FileNotFoundError as exc:
        raise ExecFormatError(_errno.ENOENT, "no such file", path) from exc
    except OSError as exc:
        raise ExecFormatError(exc.errno or _errno.EACCES, f"cannot open: {exc.strerror}", path) from exc
    try:
        _check_executable(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_executable(fd: int, path: str) -> None:
    """execve's checks on the opened file: a regular file with an x bit."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise ExecFormatError(_errno.EACCES, "is a directory, not a program", path)
    if not stat.S_ISREG(mode):
        raise ExecFormatError(_errno.EACCES, "not a regular file, cannot be executed", path)
    # os.access applies the same rule as execve: even root needs one x bit.
    if not os.access(path, os.X_OK):
        raise ExecFormatError(
            _errno.EACCES, "permission denied: the file has no execute permission (chmod +x)", path
        )


def parse_elf(data: bytes, path: str = "", file_size: int | None = None,
              identity: FileIdentity | None = None) -> ElfImage:
    """Validate `data` as an x86-64 ELF executable; only ExecFormatError escapes.
    `data` is the whole file, or (with `file_size`, the file's) its head: a header
    needed past it raises _BeyondHead, which `load_elf` answers by reading it all."""
    whole = file_size is None or file_size <= len(data)
    size = len(data) if whole else file_size
    _check_ident(data, path)
    try:
        header = dict(zip(_EHDR_FIELDS, _EHDR.unpack_from(data)))
        _check_header(header, path)
        phdrs = _read_phdrs(data, size, header, path)
    except struct.error as exc:  # unreachable: every read is bounds-checked first
        raise _noexec(path, f"malformed ELF headers ({exc})") from exc
    image = _build_image(data, size, path, header, phdrs)
    return replace(image, contents=data if whole else b"", identity=identity)


def _within_head(data: bytes, end: int) -> None:
    if end > len(data):
        raise _BeyondHead()


def _check_ident(data: bytes, path: str) -> None:
    """Magic, class and byte order, checked before pyelftools looks at them."""
    if not data.startswith(ELF_MAGIC):
        raise _noexec(path, "not an ELF file (no \\x7fELF magic) and not a #! script")
    if len(data) <= EI_DATA:
        raise _noexec(path, "truncated ELF file: the identification bytes are cut off")
    elf_class = data[EI_CLASS]
    if elf_class != ElfClass.ELFCLASS64:
        described = _enum_name(ElfClass, elf_class)
        bits = "32-bit ELF" if elf_class == ElfClass.ELFCLASS32 else "ELF of unknown class"
        raise _noexec(path, f"{bits} ({described}): kvmdune runs {_EXPECTED_ARCH}")
    if data[EI_DATA] != ElfData.ELFDATA2LSB:
        described = _enum_name(ElfData, data[EI_DATA])
        raise _noexec(path, f"byte order {described}: x86-64 programs are little-endian (ELFDATA2LSB)")
    if len(data) < ELF64_EHDR_SIZE:
        raise _noexec(
            path, f"truncated ELF file: {len(data)} bytes, the ELF header alone is {ELF64_EHDR_SIZE}"
        )


def _enum_name(enum: type[IntEnum], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return f"unknown value {value}"


def _check_header(header: Mapping[str, Any], path: str) -> None:
    """e_type, e_machine, e_phentsize, e_phnum: load_elf_binary's first checks."""
    e_type = _raw_enum(header["e_type"], ElfType)
    if e_type not in (ElfType.ET_EXEC, ElfType.ET_DYN):
        described = _describe_type(_elf_name("ENUM_E_TYPE", header["e_type"]))
        raise _noexec(path, f"ELF type {described}: kvmdune runs {_EXPECTED_TYPES}")
    machine = _raw_enum(header["e_machine"], ElfMachine)
    if machine != ElfMachine.EM_X86_64:
        name = _elf_name("ENUM_E_MACHINE", header["e_machine"])
        described = name if isinstance(name, str) else f"machine {machine}"
        raise _noexec(path, f"ELF for {described}: kvmdune runs {_EXPECTED_ARCH}")
    if header["e_phentsize"] != ELF64_PHDR_SIZE:
        raise _noexec(
            path, f"e_phentsize is {header['e_phentsize']}, an Elf64_Phdr is {ELF64_PHDR_SIZE} bytes"
        )
    table_size = header["e_phnum"] * ELF64_PHDR_SIZE
    if table_size == 0 or table_size > MAX_PHDR_TABLE_SIZE:
        raise _noexec(
            path,
            f"e_phnum is {header['e_phnum']}: the program header table must hold at least one entry "
            f"and at most {MAX_PHDR_TABLE_SIZE // ELF64_PHDR_SIZE}",
        )


def _elf_name(table: str, value: int) -> int | str:
    """pyelftools' name for a header value (the last name of a shared value, as it
    decodes), or the value itself when it has none: the words of a refusal."""
    from elftools.elf import enums

    names = {number: name for name, number in getattr(enums, table).items() if name != "_default_"}
    return names.get(value, value)


def _describe_type(e_type: int | str) -> str:
    if isinstance(e_type, str):
        known = {name.split(" ", 1)[0]: name for name in _REFUSED_TYPE_NAMES.values()}
        return known.get(e_type, e_type)
    return _REFUSED_TYPE_NAMES.get(e_type, f"unknown type {e_type:#x}")


def _raw_enum(value: int | str, enum: type[IntEnum]) -> int:
    """A header value as a number, should it come as one of pyelftools' names."""
    if isinstance(value, int):
        return value
    if value in enum.__members__:
        return int(enum[value])
    # A name pyelftools knows but we do not: never one we accept.
    return -1


def _read_phdrs(data: bytes, file_size: int, header: Mapping[str, Any],
                path: str) -> list[Mapping[str, Any]]:
    phoff, phnum = header["e_phoff"], header["e_phnum"]
    if phoff + phnum * ELF64_PHDR_SIZE > file_size:
        raise _noexec(
            path,
            f"truncated ELF file: the program headers (offset {phoff:#x}, {phnum} entries) "
            f"run past the end of the {file_size}-byte file",
        )
    _within_head(data, phoff + phnum * ELF64_PHDR_SIZE)
    return [
        dict(zip(_PHDR_FIELDS, _PHDR.unpack_from(data, phoff + index * ELF64_PHDR_SIZE)))
        for index in range(phnum)
    ]


def _segment_type(p_type: int | str) -> int:
    if isinstance(p_type, int):
        return p_type
    return int(SegmentType[p_type]) if p_type in SegmentType.__members__ else -1


def _build_image(data: bytes, file_size: int, path: str, header: Mapping[str, Any],
                 phdrs: list[Mapping[str, Any]]) -> ElfImage:
    loads: list[Segment] = []
    interp: str | None = None
    executable_stack = False
    tls: TlsInfo | None = None
    pt_phdr: int | None = None
    notes: set[tuple[bytes, int]] = set()
    for index, phdr in enumerate(phdrs):
        kind = _segment_type(phdr["p_type"])
        if kind == SegmentType.PT_LOAD:
            loads.append(_load_segment(file_size, path, index, phdr, loads[-1] if loads else None))
        elif kind == SegmentType.PT_INTERP and interp is None:
            # Linux uses the first PT_INTERP and ignores any others.
            interp = _interp_path(data, file_size, path, phdr)
        elif kind == SegmentType.PT_GNU_STACK:
            executable_stack = bool(phdr["p_flags"] & SegmentFlags.PF_X)
        elif kind == SegmentType.PT_TLS and tls is None:
            tls = _tls_info(path, phdr)
        elif kind == SegmentType.PT_PHDR and pt_phdr is None:
            pt_phdr = phdr["p_vaddr"]
        elif kind == SegmentType.PT_NOTE:
            notes.update(_read_notes(data, file_size, phdr))
    if not loads:
        raise _noexec(path, "no PT_LOAD segment: nothing to map")
    _check_entry(path, header["e_entry"], loads)
    return ElfImage(
        path=path,
        kind=ElfType(_raw_enum(header["e_type"], ElfType)),
        entry=header["e_entry"],
        phoff=header["e_phoff"],
        phentsize=header["e_phentsize"],
        phnum=header["e_phnum"],
        segments=tuple(loads),
        interp=interp,
        executable_stack=executable_stack,
        tls=tls,
        pt_phdr_vaddr=pt_phdr,
        notes=frozenset(notes),
    )


_NOTE_HEADER = struct.Struct("<III")    # namesz, descsz, type (Elf64_Nhdr)
_NOTE_ALIGN = 4


def _read_notes(data: bytes, file_size: int,
                phdr: Mapping[str, Any]) -> Iterator[tuple[bytes, int]]:
    """The (owner, type) of each note in a PT_NOTE segment; a malformed one ends the
    walk (notes are hints here: nothing about loading depends on them)."""
    start, size = phdr["p_offset"], phdr["p_filesz"]
    end = min(start + size, file_size)
    _within_head(data, end)
    offset = start
    while offset + _NOTE_HEADER.size <= end:
        namesz, descsz, kind = _NOTE_HEADER.unpack_from(data, offset)
        name_at = offset + _NOTE_HEADER.size
        desc_at = name_at + -(-namesz // _NOTE_ALIGN) * _NOTE_ALIGN
        offset = desc_at + -(-descsz // _NOTE_ALIGN) * _NOTE_ALIGN
        if offset > end:
            return
        yield bytes(data[name_at:name_at + namesz]).rstrip(b"\0"), kind


def _load_segment(file_size: int, path: str, index: int, phdr: Mapping[str, Any],
                  previous: Segment | None) -> Segment:
    """One PT_LOAD, checked against the file, user space and its predecessor."""
    vaddr, memsz = phdr["p_vaddr"], phdr["p_memsz"]
    offset, filesz = phdr["p_offset"], phdr["p_filesz"]
    where = f"PT_LOAD (program header {index}, vaddr {vaddr:#x})"
    if filesz > memsz:
        raise _noexec(path, f"{where}: p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}")
    if offset + filesz > file_size:
        raise _noexec(
            path, f"{where}: file bytes {offset:#x}+{filesz:#x} run past the end of the {file_size}-byte file"
        )
    if page_up(vaddr + memsz) > USER_PROGRAM_END:
        raise _noexec(
            path, f"{where}: ends at {vaddr + memsz:#x}, beyond user space (which ends at "
            f"{USER_PROGRAM_END:#x}, below Linux's TASK_SIZE {TASK_SIZE:#x}: kvmdune's call "
            "area takes the pages between)"
        )
    if offset % PAGE_SIZE != vaddr % PAGE_SIZE:
        raise _noexec(
            path, f"{where}: p_offset {offset:#x} and p_vaddr differ modulo the {PAGE_SIZE}-byte page, "
            "so the file cannot be mapped there"
        )
    if previous is not None and vaddr < previous.end:
        raise _noexec(
            path, f"{where}: PT_LOAD segments must be in ascending order and must not overlap "
            f"(the previous one ends at {previous.end:#x})"
        )
    return Segment(
        vaddr=vaddr,
        memsz=memsz,
        filesz=filesz,
        offset=offset,
        align=phdr["p_align"],
        flags=SegmentFlags(phdr["p_flags"] & (SegmentFlags.PF_R | SegmentFlags.PF_W | SegmentFlags.PF_X)),
    )


def _interp_path(data: bytes, file_size: int, path: str, phdr: Mapping[str, Any]) -> str:
    """PT_INTERP's path, checked as load_elf_binary checks it."""
    offset, size = phdr["p_offset"], phdr["p_filesz"]
    if not MIN_INTERP_SIZE <= size <= PATH_MAX:
        raise _noexec(path, f"PT_INTERP is {size} bytes; it must be {MIN_INTERP_SIZE} to {PATH_MAX} (PATH_MAX)")
    if offset + size > file_size:
        raise _noexec(path, "PT_INTERP runs past the end of the file")
    _within_head(data, offset + size)
    raw = data[offset : offset + size]
    if raw[-1] != 0:
        raise _noexec(path, "PT_INTERP is not NUL-terminated")
    name = raw.split(b"\0", 1)[0]
    if not name:
        raise _noexec(path, "PT_INTERP names an empty interpreter path")
    return os.fsdecode(name)


def _tls_info(path: str, phdr: Mapping[str, Any]) -> TlsInfo:
    if phdr["p_filesz"] > phdr["p_memsz"]:
        raise _noexec(path, "PT_TLS: p_filesz is larger than p_memsz")
    return TlsInfo(
        vaddr=phdr["p_vaddr"],
        memsz=phdr["p_memsz"],
        filesz=phdr["p_filesz"],
        offset=phdr["p_offset"],
        align=phdr["p_align"],
    )


def _check_entry(path: str, entry: int, loads: list[Segment]) -> None:
    # Linux would start the process at any entry and let it fault; an entry in
    # no segment at all can only crash, so refuse it. An entry in a mapped but
    # non-executable segment is left to fault as it would natively.
    if not any(segment.vaddr <= entry < segment.end for segment in loads):
        raise _noexec(path, f"entry point {entry:#x} is outside every PT_LOAD segment")


# --- Scripts --------------------------------------------------------------------


def read_shebang(data: bytes) -> tuple[str, str | None] | None:
    """Parse a `#!` line as fs/binfmt_script.c does.

    Returns None when `data` does not start with "#!" (not a script), else
    (interpreter, optional single argument). Only the first BINPRM_BUF_SIZE
    bytes count; spaces and tabs around the interpreter are trimmed (a
    carriage return is not, as in Linux); everything after the interpreter
    name, up to the end of the line, is the one argument. Raises
    ExecFormatError(ENOEXEC) for "#!" with no interpreter, or when the line is
    longer than the buffer and the interpreter path itself was cut off; and
    ExecFormatError(EACCES) when a NUL leaves the interpreter name empty
    (for instance a file holding only "#!"), the errno execve gives then.
    """
    if not data.startswith(SHEBANG):
        return None
    buf = data[:BINPRM_BUF_SIZE].ljust(BINPRM_BUF_SIZE, b"\0")
    line_end = _line_end(buf)
    if line_end is None:
        raise _noexec("", "#! line names no interpreter, or the interpreter path is too long")
    while line_end > len(SHEBANG) and buf[line_end - 1] in SHEBANG_SPACES:
        line_end -= 1
    name_start = _skip(buf, len(SHEBANG), line_end, SHEBANG_SPACES)
    if name_start == line_end:
        raise _noexec("", "#! line names no interpreter")
    name_end = _find_any(buf, name_start, line_end, SHEBANG_TERMINATORS)
    if name_end == name_start:
        # A NUL right where the name starts: Linux goes on to open "" as the
        # interpreter, which (as Linux 6.x behaves) fails with EACCES.
        raise ExecFormatError(_errno.EACCES, "#! line names an empty interpreter path")
    interpreter = os.fsdecode(buf[name_start:name_end])
    argument = None
    if name_end < line_end and buf[name_end] != 0:
        arg_start = _skip(buf, name_end, line_end, SHEBANG_SPACES)
        # The argument is a C string: it stops at a NUL, like the kernel's.
        raw_argument = buf[arg_start:line_end].split(b"\0", 1)[0]
        argument = os.fsdecode(raw_argument) if arg_start < line_end else None
    return interpreter, argument


def _line_end(buf: bytes) -> int | None:
    """Where the #! line ends in the buffer, or None if it cannot be used.

    Like the kernel's strnchr, the newline search stops at the first NUL. With
    no newline, the line is taken as filling the buffer only when a separator
    after the interpreter shows its path was not truncated.
    """
    last = len(buf) - 1  # the kernel keeps one byte for its own terminator
    first_nul = buf.find(b"\0")
    newline = buf.find(b"\n", 0, first_nul if first_nul >= 0 else len(buf))
    if newline >= 0:
        return newline
    name_start = _skip(buf, len(SHEBANG), last, SHEBANG_SPACES)
    if name_start == last:
        return None
    if _find_any(buf, name_start, last, SHEBANG_TERMINATORS) == last:
        return None
    return last


def _skip(buf: bytes, start: int, end: int, chars: bytes) -> int:
    """First index in [start, end) whose byte is not in chars, else end."""
    index = start
    while index < end and buf[index] in chars:
        index += 1
    return index


def _find_any(buf: bytes, start: int, end: int, chars: bytes) -> int:
    """First index in [start, end) whose byte is in chars, else end."""
    index = start
    while index < end and buf[index] not in chars:
        index += 1
    return index
