"""Patched system-call sites: the loader rewrites ``mov $N,%eax; syscall``,
``xor %eax,%eax; syscall`` and ``<one relocatable instruction>; syscall`` in
file-backed code it maps executable, so that the guest reaches its call ring without
executing ``syscall`` (a world switch on software KVM).

How a site is patched (the ``syscall`` bytes always stay, so a restarted call, a
jump to the ``syscall`` itself, or a thread whose GS base is not its ring executes
the original instruction and traps as before):
- ``b8 imm32 0f 05`` -> ``e9 rel32 0f 05``: the ``mov`` becomes a jump to the site's
  stub;
- ``31 c0 0f 05`` -> ``eb rel8 0f 05``: the ``xor`` becomes a short jump into dead
  inter-function padding (after an unconditional ``ret``/``jmp``, nop or int3 bytes up
  to a 16-byte boundary, no branch target in it), where a ``jmp rel32`` to the stub
  is written;
- ``<insn> 0f 05``, where ``insn`` is a single instruction of 5 to MAX_RELOCATED bytes
  that runs the same anywhere and cannot fault (register and immediate operands, a
  stack operand at ``[rsp + d]``, or ``lea`` without RIP: ``relocatable``), the call
  number already in RAX -> ``e9 rel32 cc.. 0f 05``: the instruction moves into the
  stub. libc's ``syscall()`` ends in such a site (``mov 0x8(%rsp),%r9``), so calls made
  through it reach the ring too.
Each site's stub (in an anonymous mapping within +-2 GiB of its code) redoes
the replaced instruction, checks without touching the flags or RAX that the GS base is one
of the call rings (``Machine.use_patched_sites`` lends it to each vCPU), stores the
return address and RFLAGS where ``syscall`` would have left them for the call stub
(``callring.h``'s SAVED_RCX/SAVED_R11, RSP pointing into the ring for ``pushfq``, never
below the guest's RSP), and enters its vCPU's call stub. Otherwise it jumps to the
original ``syscall``. While a thread is inside a stub the VMM builds no signal frame
(``in_site_stub``): the call reaches the VMM first, as for the call stub.

Where: segments the loader maps executable, private file mappings mmap'd
executable, and private file mappings mprotect makes executable (patched in place,
where the guest has not changed a site's bytes). munmap unmaps a stub mapping once
none of its code is mapped any more (dlclose).

Analysis is a linear sweep (capstone) of the file's executable sections. It is
cached on disk per file contents (build-id and SHA-256), and found there through the
file's identity (device, inode, size, mtime, ctime) without reading the file, since
it is needed on every exec. Files that check their own code in memory (an
in-memory FIPS integrity check: ``FIPS_text_start``) are left unpatched.
``KVMDUNE_PATCH_SITES=0`` or ``--no-patch`` turns patching off.

The patched code and its stubs are kept too (``_patched``, per VMM process, so
inherited by every fork): each exec of a dynamic program maps libc's text again,
and the same bytes at the same distance from their stubs patch to the same bytes.
An entry is used only for exactly the bytes it was made from (compared, not
trusted from the file's identity) and the file's current analysis.
"""

from __future__ import annotations

import bisect
import enum
import functools
import os
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

from ..machine import _trampoline, layout
from ..memory import PAGE_SIZE
from .abi import ProtFlags

ENVIRONMENT_VARIABLE = "KVMDUNE_PATCH_SITES"
#: Stub mappings are anonymous (no name in /proc/PID/maps: the guest sees no trace
#: of the VMM there), read and execute only; ``MemoryMap.site_stubs`` knows them.
STUB_PROT = int(ProtFlags.PROT_READ | ProtFlags.PROT_EXEC)
#: Bytes per site stub (``_stub_template``: the replaced instruction, then 85 bytes).
STUB_SIZE = 96
#: The longest instruction moved into a stub (RELOCATED sites): what fits beside the
#: stub's own 85 bytes.
MAX_RELOCATED = 11
#: A jump's reach: stubs must be this close to every site that jumps to them.
REL32_REACH = (1 << 31) - PAGE_SIZE
#: Symbols of code that checks its own bytes in memory (OpenSSL's FIPS canister).
SELF_CHECK_MARKERS = (b"FIPS_text_start", b"FIPS_signature")
#: Bumped when the analysis changes, so that old cache entries are not used.
ANALYSIS_VERSION = 4
_JMP_REL32 = 0xE9
_JMP_REL8 = 0xEB
_MOV_EAX_IMM32 = 0xB8
_XOR_EAX_EAX = b"\x31\xc0"
_SYSCALL = b"\x0f\x05"
#: Inter-function padding ends at a boundary this aligned (a function's start).
_PADDING_ALIGN = 16
_UNCONDITIONAL = frozenset({"ret", "jmp", "ud2", "hlt", "bnd jmp", "bnd ret", "notrack jmp"})
_SHF_EXECINSTR = 0x4
_SHT_NOTE = 7
_SHT_NOBITS = 8
_NT_GNU_BUILD_ID = 3


class SiteKind(enum.IntEnum):
    MOV_IMM = 0      # mov $N,%eax; syscall
    XOR = 1          # xor %eax,%eax; syscall
    RELOCATED = 2    # <a relocatable instruction>; syscall (the number set earlier)


#: Instructions a RELOCATED site may move into its stub: they compute from registers,
#: immediates and (``relocatable``) the stack only, so they do the same there.
_RELOCATABLE = frozenset({"mov", "movabs", "movzx", "movsx", "movsxd", "lea", "and", "or",
                          "xor", "add", "sub"})
#: A memory operand a moved instruction may read or write: the stack at RSP (just
#: used by the call that got here, so no fault can land in the stub instead of the
#: site); anything else could fault with RIP in the stub.
_STACK_OPERAND = re.compile(r"\[rsp(?: [+-] (?:0x[0-9a-f]+|\d+))?\]")


class Site(NamedTuple):
    """A patchable site, by file offset: ``offset`` is the instruction before the
    ``syscall``; ``padding`` the 5 dead bytes an XOR site's short jump reaches;
    ``code`` the instruction a RELOCATED site moves into its stub (its number is 0:
    set at run time). (A tuple: libc has hundreds, made on every VMM start from the
    cache.)"""

    offset: int
    kind: SiteKind
    number: int
    padding: int | None = None
    code: bytes = b""

    @property
    def syscall_offset(self) -> int:
        return self.offset + self.replaced

    @property
    def replaced(self) -> int:
        """Bytes of the instruction before the ``syscall`` that the patch replaces."""
        if self.kind is SiteKind.RELOCATED:
            return len(self.code)
        return 5 if self.kind is SiteKind.MOV_IMM else 2


@dataclass(frozen=True)
class Analysis:
    """A file's ``syscall`` instructions and the ones that can be patched."""

    sites: tuple[Site, ...]
    syscalls: int                # every ``syscall`` instruction found
    self_checking: bool = False
    sha256: bytes = bytes(32)    # of the file analysed (what a cache entry is valid for)
    swept: bool = True           # disassembled (False: no byte pattern of a site in it)

    @property
    def patchable(self) -> tuple[Site, ...]:
        return () if self.self_checking else self.sites


def wanted(option: bool | None = None) -> bool:
    """Patching is on unless turned off by the option or the environment, and only
    where the stubs' instructions run at CPL3: FSGSBASE (``rdgsbase``, which the
    guest's CR4 enables on software KVM, whose CPL3 runs with the host's) and BMI2."""
    if option is None:
        value = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower()
        option = value not in ("0", "off", "no", "false")
    return option and _cpu_supports_stubs()


def _cpu_supports_stubs() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return ("fsgsbase" in flags and "bmi2" in flags
            and os.path.exists("/sys/module/kvm_pvm"))


# -- analysis ------------------------------------------------------------------------
def _sections(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """(type, flags, addr, offset, size) of every section ([] without section headers)."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return []
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    out = []
    for index in range(shnum):
        base = shoff + index * shentsize
        if shentsize < 64 or base + 64 > len(data):
            return []
        _name, kind, flags, addr, offset, size = struct.unpack_from("<IIQQQQ", data, base)
        out.append((kind, flags, addr, offset, size))
    return out


def _build_id(data: bytes, sections) -> str:
    for kind, _flags, _addr, offset, size in sections:
        if kind != _SHT_NOTE:
            continue
        note = data[offset:offset + size]
        if len(note) >= 16:
            namesz, descsz, note_type = struct.unpack_from("<III", note)
            if note_type == _NT_GNU_BUILD_ID and namesz == 4:
                return note[16:16 + descsz].hex()
    return ""


#: Bytes that may be a site: ``mov $N,%eax`` or ``xor %eax,%eax`` right before
#: ``syscall`` (a byte search at C speed, before any disassembly).
_CANDIDATE = re.compile(rb"\xb8[\x00-\xff]{4}\x0f\x05|\x31\xc0\x0f\x05")


#: Executable bytes beyond which a file is not swept (a sweep costs ~0.7 s per MiB in
#: Python, once per file version, and memory for every instruction): rustc's 130 MB
#: librustc_driver makes its calls through libc. Such a file runs unpatched.
MAX_SWEPT_BYTES = 8 << 20


def _worth_sweeping(data: bytes, sections) -> bool:
    code = [(offset, size) for kind, flags, _addr, offset, size in sections
            if flags & _SHF_EXECINSTR and kind != _SHT_NOBITS]
    return (sum(size for _offset, size in code) <= MAX_SWEPT_BYTES
            and any(_CANDIDATE.search(data, offset, offset + size) is not None
                    for offset, size in code))


def analyze_bytes(data: bytes) -> Analysis:
    """The sites of an ELF file's contents (``data``). Code without a single byte
    pattern of a MOV_IMM or XOR site (a dynamically linked program: its calls are in
    libc; RELOCATED sites are found only in files swept for those), or more than
    MAX_SWEPT_BYTES of it, is not disassembled (gcc's 25 MB cc1
    would take seconds): ``swept`` is then False, and no site or ``syscall``
    instruction counted."""
    if not _worth_sweeping(data, _sections(data)):
        return Analysis((), 0, any(marker in data for marker in SELF_CHECK_MARKERS),
                        swept=False)
    import capstone

    decoder = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    decoder.skipdata = True
    sites: list[Site] = []
    syscalls = 0
    for kind, flags, _addr, offset, size in _sections(data):
        if not flags & _SHF_EXECINSTR or kind == _SHT_NOBITS or offset + size > len(data):
            continue
        code = data[offset:offset + size]
        # Addresses in the sweep are file offsets: sites and targets in one space.
        insns = list(decoder.disasm_lite(code, offset))
        targets = set()
        for address, length, mnemonic, operands in insns:
            if (mnemonic.startswith(("j", "call", "loop")) or mnemonic.startswith("bnd j")) \
                    and operands.startswith("0x"):
                targets.add(int(operands, 16))
        free = _padding(insns, targets)
        previous = None
        for insn in insns:
            address, length, mnemonic, _operands = insn
            if mnemonic == "syscall":
                syscalls += 1
                site = _site(data, previous, address, free, targets)
                if site is not None:
                    sites.append(site)
            previous = insn
    self_checking = any(marker in data for marker in SELF_CHECK_MARKERS)
    return Analysis(tuple(sorted(sites)), syscalls, self_checking)


def _padding(insns, targets: set[int]) -> list[list[int]]:
    """Dead byte runs [start, end) (mutable: sites take 5 bytes each from the start)."""
    runs = []
    index, count = 0, len(insns)
    while index < count:
        address, length, mnemonic, _ = insns[index]
        index += 1
        if mnemonic not in _UNCONDITIONAL:
            continue
        start = end = address + length
        while index < count and insns[index][2] in ("nop", "int3"):
            end = insns[index][0] + insns[index][1]
            index += 1
        if end - start >= 5 and end % _PADDING_ALIGN == 0 and \
                not any(target in targets for target in range(start, end)):
            runs.append([start, end])
    return runs


def _site(data: bytes, previous, syscall_at: int, free: list[list[int]],
          targets: set[int]) -> Site | None:
    if previous is None or previous[0] + previous[1] != syscall_at:
        return None
    address, length, _mnemonic, _ = previous
    raw = data[address:address + length]
    if length == 5 and raw[0] == _MOV_EAX_IMM32:
        return Site(address, SiteKind.MOV_IMM, struct.unpack_from("<I", raw, 1)[0])
    if raw == _XOR_EAX_EAX:
        jump_end = address + 2
        for run in free:
            if run[1] - run[0] >= 5 and -128 <= run[0] - jump_end <= 127:
                padding = run[0]
                run[0] += 5
                return Site(address, SiteKind.XOR, 0, padding)
        return None
    if relocatable(previous) and \
            not any(target in targets for target in range(address + 1, syscall_at)):
        return Site(address, SiteKind.RELOCATED, 0, code=raw)
    return None


def relocatable(insn) -> bool:
    """Whether a decoded instruction (address, length, mnemonic, operands) can run in
    a stub instead of its place: long enough for a ``jmp rel32``, short enough for the
    stub, no RIP or segment in it, a memory access only to the stack (``lea`` makes
    none), and nothing that changes the flow."""
    _address, length, mnemonic, operands = insn
    if not 5 <= length <= MAX_RELOCATED or \
            not (mnemonic in _RELOCATABLE or mnemonic.startswith("cmov")):
        return False
    if "rip" in operands or ":" in operands or "rsp" in operands.split(",")[0]:
        return False
    if "[" not in operands or mnemonic == "lea":
        return True
    return all(_STACK_OPERAND.fullmatch(part) for part in re.findall(r"\[[^]]*\]", operands))


#: Analyses already made in this VMM process (its forks inherit them), by file
#: identity (``_identity``).
_memo: dict[tuple, Analysis] = {}
#: A cache file: magic and version, the file's SHA-256, its ``syscall`` count, whether
#: it checks its own code, whether it was swept, how many sites follow; then one
#: record per site.
_CACHE_MAGIC = b"KDSITES"
_CACHE_HEADER = struct.Struct("<7sB32sIBBI")
#: offset, kind, number, padding (-1: none), code's length, code (a RELOCATED site's).
_CACHE_RECORD = struct.Struct("<QBIqB16s")
_KINDS = tuple(SiteKind)


#: Whether analyses are read from and written to the disk cache (``use_disk_cache``).
_disk_cache = True


def cache_directory() -> str:
    """Where analyses are cached: $XDG_CACHE_HOME/kvmdune/sites (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kvmdune", "sites")


def use_disk_cache(on: bool) -> None:
    """Turn the disk cache off where the guest could write it: a forged entry would
    have the VMM write jumps at offsets of the forger's choosing into later runs'
    code (``runner`` asks the gate). Analyses then stay in memory."""
    global _disk_cache
    _disk_cache = on


#: Where the file's size is in its identity (``_identity``).
_IDENTITY_SIZE = 2


def _identity(info: os.stat_result) -> tuple[int, ...]:
    """What identifies one version of a file without reading it. The ctime is in
    it because nothing can set it back: a guest that rewrites a file in place and
    restores its mtime (utimensat) still changes it."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def file_identity(path: str) -> tuple[int, ...] | None:
    """The identity (``_identity``) of the file at ``path`` now; None when it is gone."""
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


def analyze(path: str) -> Analysis:
    """The sites of the file at ``path``: from memory, the on-disk cache, or a fresh
    sweep. The cache is looked up by the file's identity first (no read of the file:
    this runs on every exec and every executable mmap), then by its contents
    (build-id and SHA-256: a copy, or the same file touched), which are what an
    entry is valid for."""
    return _identified(path)[1]


def has_sites(path: str) -> bool:
    """Whether the file at ``path`` has call sites to patch: code without any (a
    Python extension module, libpython, libm: their calls go through libc) is
    mapped as data is, not read, "patched" and copied in."""
    return bool(analyze(path).patchable)


def _identified(path: str) -> tuple[tuple[int, ...] | None, Analysis]:
    """The file's identity now (None when it is gone) and its analysis (one stat)."""
    identity = file_identity(path)
    if identity is None:
        return None, Analysis((), 0)
    found = _memo.get(identity)
    if found is not None:
        return identity, found
    directory = cache_directory() if _disk_cache else None
    by_identity = None if directory is None else os.path.join(
        directory, "v{}-id-{}.sites".format(ANALYSIS_VERSION, "-".join(map(str, identity))))
    analysis = None if by_identity is None else _load(by_identity)
    if analysis is None:
        try:
            analysis = _analyze_contents(path, directory)
        except ImportError:            # no capstone (or out of a confined VMM's reach)
            analysis = Analysis((), 0, swept=False)
        else:
            if by_identity is not None:
                _store(by_identity, analysis)
    _memo[identity] = analysis
    return identity, analysis


#: Where prewarm looks for the libraries a program names (the x86-64 Debian and
#: generic multilib directories ld.so searches by default).
LIBRARY_DIRECTORIES = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64",
                       "/usr/lib64", "/lib", "/usr/lib")
_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NEEDED, _DT_STRTAB = 1, 5
_PHDR = struct.Struct("<IIQQQQQQ")
_DYN = struct.Struct("<qQ")


def prewarm(path: str, patch: bool = False) -> None:
    """Analyse ``path``, its interpreter and the libraries it names (found in
    LIBRARY_DIRECTORIES) now, into memory: before the VMM drops privileges and
    confines itself, while the disk cache is still in its reach (a sandbox run as
    another user, or under Landlock, would otherwise sweep libc again every time).
    With ``patch``, its interpreter and libraries are patched too (``prepatch``)."""
    try:
        with open(path, "rb") as f:
            names = _dependencies(f.fileno())
    except (OSError, struct.error):
        return
    analyze(path)
    for name in names:
        found = name if name.startswith("/") else next(
            (os.path.join(d, name) for d in LIBRARY_DIRECTORIES
             if os.path.exists(os.path.join(d, name))), None)
        if found is not None:
            analyze(found)
            if patch:
                prepatch(found)


def _program_headers(fd: int) -> list[tuple]:
    """The program headers (``_PHDR`` fields) of the ELF file open at ``fd`` ([] for
    anything else); struct.error for a file cut short."""
    header = os.pread(fd, 64, 0)
    if len(header) < 64 or header[:4] != b"\x7fELF":
        return []
    phoff, = struct.unpack_from("<Q", header, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
    if phentsize != _PHDR.size:
        return []
    table = os.pread(fd, phnum * phentsize, phoff)
    return [_PHDR.unpack_from(table, i * phentsize) for i in range(phnum)]


def _dependencies(fd: int) -> list[str]:
    """The interpreter and DT_NEEDED names of the ELF file open at ``fd`` ([] for
    anything else); struct.error for a file cut short."""
    phdrs = _program_headers(fd)
    names = [os.pread(fd, min(p[5], PAGE_SIZE), p[2]).split(b"\0")[0]
             .decode("utf-8", "replace") for p in phdrs if p[0] == _PT_INTERP]
    dynamic = next((p for p in phdrs if p[0] == _PT_DYNAMIC), None)
    if dynamic is None:
        return names
    raw = os.pread(fd, min(dynamic[5], 1 << 16), dynamic[2])
    entries = [_DYN.unpack_from(raw, offset) for offset in range(0, len(raw) - 15, _DYN.size)]
    strtab = next((value for tag, value in entries if tag == _DT_STRTAB), None)
    load = next((p for p in phdrs if p[0] == _PT_LOAD and strtab is not None
                 and p[3] <= strtab < p[3] + p[5]), None)
    if load is None:
        return names
    for tag, value in entries:
        if tag == _DT_NEEDED:
            name = os.pread(fd, 256, load[2] + strtab - load[3] + value).split(b"\0")[0]
            names.append(name.decode("utf-8", "replace"))
    return names


def _analyze_contents(path: str, directory: str | None) -> Analysis:
    """The file's analysis, from the cache in ``directory`` by contents (None: no
    cache) or a fresh sweep."""
    import hashlib

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return Analysis((), 0)
    digest = hashlib.sha256(data).digest()
    by_contents = None if directory is None else os.path.join(directory, "v{}-{}-{}.sites".format(
        ANALYSIS_VERSION, _build_id(data, _sections(data)) or "none", digest.hex()))
    analysis = None if by_contents is None else _load(by_contents, digest)
    if analysis is None:
        analysis = replace(analyze_bytes(data), sha256=digest)
        if by_contents is not None:
            _store(by_contents, analysis)
    return analysis


def _load(cache_file: str, digest: bytes | None = None) -> Analysis | None:
    """The analysis in ``cache_file`` (None: none, unreadable, or not for ``digest``)."""
    try:
        with open(cache_file, "rb") as f:
            raw = f.read()
        magic, version, sha256, syscalls, self_checking, swept, count = \
            _CACHE_HEADER.unpack_from(raw)
        if magic != _CACHE_MAGIC or version != ANALYSIS_VERSION or \
                len(raw) != _CACHE_HEADER.size + count * _CACHE_RECORD.size or \
                digest is not None and sha256 != digest:
            return None
        sites = tuple(Site(offset, _KINDS[kind], number, None if padding < 0 else padding,
                           code[:length])
                      for offset, kind, number, padding, length, code
                      in _CACHE_RECORD.iter_unpack(raw[_CACHE_HEADER.size:]))
        return Analysis(sites, syscalls, bool(self_checking), sha256, bool(swept))
    except (OSError, struct.error, IndexError):
        return None


def _store(cache_file: str, analysis: Analysis) -> None:
    records = b"".join(_CACHE_RECORD.pack(site.offset, site.kind, site.number,
                                          -1 if site.padding is None else site.padding,
                                          len(site.code), site.code)
                       for site in analysis.sites)
    header = _CACHE_HEADER.pack(_CACHE_MAGIC, ANALYSIS_VERSION, analysis.sha256,
                                analysis.syscalls, analysis.self_checking,
                                analysis.swept, len(analysis.sites))
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        temporary = f"{cache_file}.{os.getpid()}"
        with open(temporary, "wb") as f:
            f.write(header + records)
        os.replace(temporary, cache_file)
    except OSError:
        pass             # no cache: analysed again next time


# -- stubs and patches -------------------------------------------------------------------
#: Where rorx puts the 12 bits of a ring's offset in the call page (``_RING_CHECK``).
_PAGE_BITS = PAGE_SIZE.bit_length() - 1                             # 12
_SLOTS_SHIFT = layout.CALL_SLOTS.bit_length() - 1                   # 3
if layout.CALL_SLOT_SIZE << _SLOTS_SHIFT != PAGE_SIZE:
    raise ImportError("the ring check assumes CALL_SLOTS slots filling the page")

#: RCX = 0 exactly when the GS base (into R11) is one of the call rings, flags and RAX
#: untouched: x = GS - CALL_RING must be k * CALL_SLOT_SIZE, k < CALL_SLOTS. Rotating x
#: right by 12 puts its page offset in bits 52-63 and the rest below; scaling by 8
#: (lea) then drops the slot number k (bits 61-63) and leaves zero only for a ring.
_RING_CHECK = (b"\xf3\x49\x0f\xae\xcb"                              # rdgsbase %r11
               + b"\x48\xb9" + struct.pack("<q", -layout.CALL_RING)  # movabs $-CALL_RING,%rcx
               + b"\x49\x8d\x0c\x0b"                                 # lea (%r11,%rcx),%rcx
               + b"\xc4\xe3\xfb\xf0\xc9" + bytes([_PAGE_BITS])      # rorx $12,%rcx,%rcx
               # lea 0(,%rcx,8),%rcx: SIB scale 2**_SLOTS_SHIFT, index RCX, no base
               + b"\x48\x8d\x0c" + bytes([_SLOTS_SHIFT << 6 | 0x0D]) + bytes(4))


def _rel32(source_end: int, target: int) -> bytes:
    return struct.pack("<i", target - source_end)


@dataclass(frozen=True)
class _StubTemplate:
    """A stub with its per-site fields left zero, and where they are: the call number
    (MOV_IMM sites), and two rel32 to the site's ``syscall`` (the fallback jump) and
    to the instruction after it (the return address)."""

    code: bytes
    number_at: int | None
    fallback_at: int         # rel32 of ``jmp syscall``, from the end of its 4 bytes
    return_at: int           # rel32 of ``lea after-syscall(%rip),%rcx``, likewise


@functools.lru_cache(maxsize=None)
def _stub_template(replaced: bytes) -> _StubTemplate:
    """The stub that first redoes ``replaced``, the instruction before the site's
    ``syscall`` (``mov $0,%eax``'s number is patched in per site; ``xor`` sets the
    flags as natively), then checks the ring (_RING_CHECK) and enters the call stub."""
    code = bytearray(replaced)
    number_at = 1 if replaced[:1] == bytes([_MOV_EAX_IMM32]) and len(replaced) == 5 else None
    code += _RING_CHECK
    code += b"\xe3\x05"                                         # jrcxz: a ring slot
    code += bytes([_JMP_REL32])                                 # jmp syscall
    fallback_at = len(code)
    code += bytes(4)
    saved_rsp = _trampoline.CALL_RING_SAVED_RSP
    code += b"\x49\x89\xa3" + struct.pack("<i", saved_rsp)      # mov %rsp,SAVED_RSP(%r11)
    code += b"\x49\x8d\xa3" + struct.pack("<i", _trampoline.CALL_RING_SAVED_R11 + 8)
    code += b"\x9c"                                             # pushfq -> SAVED_R11
    code += b"\x49\x8b\xa3" + struct.pack("<i", saved_rsp)      # mov SAVED_RSP(%r11),%rsp
    code += b"\x48\x8d\x0d"                                     # lea after-syscall,%rcx
    return_at = len(code)
    code += bytes(4)
    code += b"\x49\x89\x8b" + struct.pack("<i", _trampoline.CALL_RING_SAVED_RCX)
    code += b"\x49\x8d\x8b" + struct.pack("<i", _trampoline.CALL_STUB_RING_ENTRY - PAGE_SIZE)
    code += b"\xff\xe1"                                         # jmp *%rcx: the call stub
    if len(code) > STUB_SIZE:
        raise AssertionError("site stub larger than STUB_SIZE")
    return _StubTemplate(bytes(code).ljust(STUB_SIZE, b"\xcc"), number_at, fallback_at,
                         return_at)


if len(_stub_template(bytes(MAX_RELOCATED)).code) != STUB_SIZE:
    raise ImportError("MAX_RELOCATED does not fit a stub")


def _replaced_code(site: Site) -> bytes:
    """The instruction a site's stub redoes (a MOV_IMM site's without its number)."""
    if site.kind is SiteKind.MOV_IMM:
        return bytes([_MOV_EAX_IMM32]) + bytes(4)
    return _XOR_EAX_EAX if site.kind is SiteKind.XOR else site.code


def _site_bytes(site: Site) -> bytes:
    """The bytes a site has in the file (checked before patching: ``data`` may not be
    what was analysed if the file changed in between)."""
    if site.kind is SiteKind.MOV_IMM:
        return bytes([_MOV_EAX_IMM32]) + struct.pack("<I", site.number) + _SYSCALL
    return _replaced_code(site) + _SYSCALL


def _write_stub(stubs: bytearray, at: int, stub: int, site: Site, site_address: int) -> None:
    """Site ``site``'s stub (guest address ``stub``) into ``stubs[at:]``."""
    template = _stub_template(_replaced_code(site))
    syscall_address = site_address + site.replaced
    stubs[at:at + STUB_SIZE] = template.code
    if template.number_at is not None:
        struct.pack_into("<I", stubs, at + template.number_at, site.number)
    struct.pack_into("<i", stubs, at + template.fallback_at,
                     syscall_address - (stub + template.fallback_at + 4))
    struct.pack_into("<i", stubs, at + template.return_at,
                     syscall_address + len(_SYSCALL) - (stub + template.return_at + 4))


def build_stub(stub: int, site: Site, site_address: int) -> bytes:
    """The stub at guest address ``stub`` for ``site`` mapped at ``site_address``."""
    code = bytearray(STUB_SIZE)
    _write_stub(code, 0, stub, site, site_address)
    return bytes(code)


def _sites_in(analysis: Analysis, data: bytes, file_offset: int) -> list[Site]:
    """The patchable sites wholly inside ``data`` (the file from ``file_offset``)
    whose bytes there are still the analysed ones."""
    sites = analysis.patchable
    end = file_offset + len(data)
    first = bisect.bisect_left(sites, file_offset, key=lambda site: site.offset)
    found = []
    for site in sites[first:]:
        if site.offset >= end:
            break
        at = site.offset - file_offset
        if site.syscall_offset + len(_SYSCALL) > end:
            continue
        expected = _site_bytes(site)
        if data[at:at + len(expected)] != expected or site.kind is SiteKind.XOR and \
                not file_offset <= site.padding <= end - 5:
            continue
        found.append(site)
    return found


def kept_patch(mm, start: int, file_offset: int, length: int, path: str,
               is_original: Callable[[bytes], bool]) -> bytes | None:
    """The patched code kept for ``length`` bytes of the file from ``file_offset``
    (to be mapped at ``start``), with its stubs mapped, when ``is_original`` says
    the file's bytes are still those it was made from, the file's analysis is the
    same and the stubs land at the same distance; None otherwise."""
    identity, analysis = _identified(path)
    return _kept(mm, start, file_offset, length, identity, analysis, is_original)


def kept_patch_in_file(mm, start: int, file_offset: int, length: int, path: str,
                       file_holds: Callable[[bytes], bool]) -> bytes | None:
    """``kept_patch`` for a mapping of ``length`` bytes of the file at ``path`` from
    ``file_offset`` (what a read of them gives: cut at the file's end), found
    without reading them whole: ``file_holds(original)`` compares the file there
    with the kept original. (Reading libc's text, 1.4 MB, into a fresh buffer only
    to find its patched code kept faulted in ~340 host pages per exec.)"""
    identity, analysis = _identified(path)
    if identity is None:
        return None
    read_length = max(0, min(length, identity[_IDENTITY_SIZE] - file_offset))
    return _kept(mm, start, file_offset, read_length, identity, analysis, file_holds)


def _kept(mm, start: int, file_offset: int, length: int, identity: tuple[int, ...] | None,
          analysis: Analysis, is_original: Callable[[bytes], bool]) -> bytes | None:
    key = (identity, file_offset, length)
    kept = _patched.get(key)
    if kept is None or kept.analysis is not analysis or not is_original(kept.original):
        return None
    stubs_at = mm.find_free(len(kept.stubs), below=start)
    if stubs_at != start - kept.stubs_below:
        return None
    _patched.move_to_end(key)
    _map_stubs(mm, stubs_at, kept.stubs, start, length)
    return kept.code


def patch_mapping(mm, start: int, file_offset: int, data: bytes,
                  path: str) -> bytes | bytearray:
    """``data`` (the file's bytes from ``file_offset``, to be mapped executable at
    ``start``) with its sites patched, their stubs mapped nearby in one mapping;
    ``data`` as it is when nothing can be patched (no site, no room within reach).
    (A bytearray, not copied again: libc's text is megabytes, patched per exec.)"""
    identity, analysis = _identified(path)
    kept = _kept(mm, start, file_offset, len(data), identity, analysis,
                 lambda original: original.startswith(data))
    if kept is not None:
        return kept
    sites = _sites_in(analysis, data, file_offset)
    if not sites:
        return data
    size = _stubs_size(sites)
    stubs_at = mm.find_free(size, below=start)
    if stubs_at is None or start + len(data) - stubs_at > REL32_REACH:
        return data
    patched, stubs = _patch(sites, data, file_offset, start, stubs_at, size)
    _map_stubs(mm, stubs_at, stubs, start, len(data))
    if identity is not None:
        _keep_patched((identity, file_offset, len(data)),
                      _PatchedCode(analysis, bytes(data), start - stubs_at, bytes(patched),
                                   stubs))
    return patched


def _stubs_size(sites: list[Site]) -> int:
    """The pages the stubs of ``sites`` take."""
    return -(-len(sites) * STUB_SIZE // PAGE_SIZE) * PAGE_SIZE


def _patch(sites: list[Site], data: bytes, file_offset: int, start: int, stubs_at: int,
           size: int) -> tuple[bytearray, bytes]:
    """``data`` (the file from ``file_offset``, mapped at ``start``) with ``sites``
    jumping to their stubs at ``stubs_at``, and the ``size`` bytes of those stubs."""
    patched = bytearray(data)
    stubs = bytearray(size)
    jump = struct.Struct("<Bi")
    for index, site in enumerate(sites):
        stub = stubs_at + index * STUB_SIZE
        at = site.offset - file_offset
        site_address = start + at
        _write_stub(stubs, index * STUB_SIZE, stub, site, site_address)
        if site.kind is not SiteKind.XOR:
            jump.pack_into(patched, at, _JMP_REL32, stub - (site_address + 5))
            # A RELOCATED instruction's bytes after the jump are never run: int3.
            patched[at + 5:at + site.replaced] = b"\xcc" * (site.replaced - 5)
        else:
            pad = site.padding - file_offset
            patched[at:at + 2] = bytes([_JMP_REL8, (pad - (at + 2)) & 0xFF])
            jump.pack_into(patched, pad, _JMP_REL32, stub - (start + pad + 5))
    stubs[len(sites) * STUB_SIZE:] = b"\xcc" * (size - len(sites) * STUB_SIZE)
    return patched, bytes(stubs)


#: Where ``prepatch`` pretends a file's lowest page is mapped: every jump is relative,
#: so only the distances from it matter.
_PREPATCH_BASE = 0x7F00_0000_0000
_PF_X = 1


def prepatch(path: str) -> None:
    """Patch the executable segments of the ELF file at ``path`` now, into the kept
    code, as they are mapped in a run: by the VMM's loader (an interpreter, or a
    program, from its segment's first byte in the file to its last) and by ld.so (a
    library, whole pages), their stubs right below the file's lowest page, where
    the space is free in a fresh address space. A resident server does this for
    ld.so and libc before it forks its workers, so that no run patches them again
    (they inherit the kept code, which a run uses only for the very bytes it maps,
    under the file's current analysis)."""
    identity, analysis = _identified(path)
    if identity is None or not analysis.patchable:
        return
    try:
        with open(path, "rb") as f:
            loads = [p for p in _program_headers(f.fileno()) if p[0] == _PT_LOAD]
            if not loads:
                return
            lowest = min(p[3] for p in loads) & ~(PAGE_SIZE - 1)
            for p in loads:
                if p[1] & _PF_X:
                    _prepatch_segment(f.fileno(), identity, analysis, p, lowest)
    except (OSError, struct.error):
        return


def _prepatch_segment(fd: int, identity: tuple, analysis: Analysis, header: tuple,
                      lowest: int) -> None:
    _, _, offset, vaddr, _, filesz, _, _ = header
    mapped_from = offset & ~(PAGE_SIZE - 1)
    start = _PREPATCH_BASE + (vaddr & ~(PAGE_SIZE - 1)) - lowest
    end_in_file = offset + filesz
    by_loader = end_in_file - mapped_from
    by_ld_so = -(-end_in_file // PAGE_SIZE) * PAGE_SIZE - mapped_from
    for length in dict.fromkeys((by_loader, by_ld_so)):
        data = os.pread(fd, length, mapped_from)
        sites = _sites_in(analysis, data, mapped_from)
        if not sites:
            continue
        size = _stubs_size(sites)
        stubs_at = _PREPATCH_BASE - size
        patched, stubs = _patch(sites, data, mapped_from, start, stubs_at, size)
        _keep_patched((identity, mapped_from, len(data)),
                      _PatchedCode(analysis, data, start - stubs_at, bytes(patched), stubs))


def _map_stubs(mm, stubs_at: int, stubs: bytes, code_start: int, code_length: int) -> None:
    mm.map_private_code(stubs_at, stubs, STUB_PROT)
    mm.site_stubs.append(StubMapping(stubs_at, stubs_at + len(stubs), code_start,
                                     code_start + code_length))


@dataclass(frozen=True)
class _PatchedCode:
    """Code patched once: valid again for exactly ``original`` under ``analysis``,
    mapped ``stubs_below`` bytes above its stubs (every jump is relative, so the
    patched bytes do not depend on where the pair is)."""

    analysis: Analysis
    original: bytes
    stubs_below: int
    code: bytes
    stubs: bytes

    @property
    def size(self) -> int:
        return len(self.original) + len(self.code) + len(self.stubs)


#: Patched code kept per (file identity, file offset, length), least recently used
#: first, at most ``PATCHED_CACHE_BYTES`` in all (libc's text, original and patched,
#: is about 3 MiB).
_patched: "OrderedDict[tuple[tuple, int, int], _PatchedCode]" = OrderedDict()
PATCHED_CACHE_BYTES = 32 << 20


def _keep_patched(key: tuple[tuple, int, int], entry: _PatchedCode) -> None:
    _patched.pop(key, None)
    if entry.size > PATCHED_CACHE_BYTES:
        return
    _patched[key] = entry
    total = sum(kept.size for kept in _patched.values())
    while total > PATCHED_CACHE_BYTES:
        _, dropped = _patched.popitem(last=False)
        total -= dropped.size


@dataclass(frozen=True)
class StubMapping:
    """A stub mapping, and the code whose sites jump into it."""

    start: int
    end: int
    code_start: int
    code_end: int


def release_stubs(mm) -> None:
    """Unmap the stubs whose code is no longer mapped at all (munmap, dlclose).
    A stub range the guest has mapped something else over, or sealed, stays."""
    for record in [r for r in mm.site_stubs if not mm.overlapping(r.code_start, r.code_end)]:
        mm.site_stubs.remove(record)
        pieces = mm.overlapping(record.start, record.end)
        if pieces and all(_is_stub_vma(vma) for vma in pieces):
            mm.unmap(record.start, record.end - record.start)


def patch_in_place(mm, vma) -> None:
    """Patch the sites of ``vma``, a piece of a private file mapping that mprotect
    has just made executable, in its contents as the guest left them (a site whose
    bytes the guest changed is left alone)."""
    length = vma.end - vma.start
    data = mm.read_mapped(vma.start, length)
    patched = patch_mapping(mm, vma.start, vma.offset, data, vma.name)
    if patched is data:
        return
    for offset in range(0, length, PAGE_SIZE):
        page = patched[offset:offset + PAGE_SIZE]
        if page != data[offset:offset + PAGE_SIZE]:
            mm.store(vma.start + offset, bytes(page))


def _is_stub_vma(vma) -> bool:
    return vma.prot == STUB_PROT and not vma.name and not vma.shared and not vma.sealed


def in_site_stub(mm, address: int) -> bool:
    """Whether ``address`` is inside a patched site's stub (between the site and
    the call stub: no signal frame may be built there)."""
    if not any(record.start <= address < record.end for record in mm.site_stubs):
        return False
    vma = mm.find(address)
    return vma is not None and _is_stub_vma(vma)


__all__ = ["Analysis", "ENVIRONMENT_VARIABLE", "Site", "SiteKind", "STUB_PROT",
           "StubMapping", "analyze", "analyze_bytes", "build_stub", "has_sites", "in_site_stub",
           "patch_in_place", "patch_mapping", "prepatch", "prewarm", "relocatable", "release_stubs", "wanted"]
