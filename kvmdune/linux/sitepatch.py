"""Patched system-call sites: the loader rewrites ``mov $N,%eax; syscall`` and
``xor %eax,%eax; syscall`` in file-backed code it maps executable, so that the guest
reaches its call ring without executing ``syscall`` (a world switch on software KVM).

How a site is patched (the ``syscall`` bytes always stay, so a restarted call, a
jump to the ``syscall`` itself, or a thread whose GS base is not its ring executes
the original instruction and traps as before):
- ``b8 imm32 0f 05`` -> ``e9 rel32 0f 05``: the ``mov`` becomes a jump to the site's
  stub;
- ``31 c0 0f 05`` -> ``eb rel8 0f 05``: the ``xor`` becomes a short jump into dead
  inter-function padding (after an unconditional ``ret``/``jmp``, nop or int3 bytes up
  to a 16-byte boundary, no branch target in it), where a ``jmp rel32`` to the stub
  is written.
Each site's stub (in a ``[kvmdune-sites]`` mapping within +-2 GiB of its code) redoes
the replaced instruction, checks without touching the flags that the GS base is one
of the call rings (``Machine.use_patched_sites`` lends it to each vCPU), stores the
return address and RFLAGS where ``syscall`` would have left them for the call stub
(``callring.h``'s SAVED_RCX/SAVED_R11, RSP pointing into the ring for ``pushfq``, never
below the guest's RSP), and enters its vCPU's call stub. Otherwise it jumps to the
original ``syscall``. While a thread is inside a stub the VMM builds no signal frame
(``in_site_stub``): the call reaches the VMM first, as for the call stub.

Analysis is a linear sweep (capstone) of the file's executable sections, cached per
file (build-id and SHA-256 of its contents). Files that check their own code in memory
(an in-memory FIPS integrity check: ``FIPS_text_start``) are left unpatched.
``KVMDUNE_PATCH_SITES=0`` or ``--no-patch`` turns patching off.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import struct
from dataclasses import dataclass

from ..machine import _trampoline, layout
from ..memory import PAGE_SIZE

ENVIRONMENT_VARIABLE = "KVMDUNE_PATCH_SITES"
#: The name patched sites' stubs have in /proc/PID/maps.
STUB_MAPPING_NAME = "[kvmdune-sites]"
#: Bytes per site stub (the longest is 94).
STUB_SIZE = 96
#: A jump's reach: stubs must be this close to every site that jumps to them.
REL32_REACH = (1 << 31) - PAGE_SIZE
#: Symbols of code that checks its own bytes in memory (OpenSSL's FIPS canister).
SELF_CHECK_MARKERS = (b"FIPS_text_start", b"FIPS_signature")
#: Bumped when the analysis changes, so that old cache entries are not used.
ANALYSIS_VERSION = 1
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
_NT_GNU_BUILD_ID = 3


class SiteKind(enum.IntEnum):
    MOV_IMM = 0      # mov $N,%eax; syscall
    XOR = 1          # xor %eax,%eax; syscall


@dataclass(frozen=True)
class Site:
    """A patchable site, by file offset: ``offset`` is the instruction before the
    ``syscall``; ``padding`` the 5 dead bytes an XOR site's short jump reaches."""

    offset: int
    kind: SiteKind
    number: int
    padding: int | None = None

    @property
    def syscall_offset(self) -> int:
        return self.offset + (5 if self.kind is SiteKind.MOV_IMM else 2)


@dataclass(frozen=True)
class Analysis:
    """A file's ``syscall`` instructions and the ones that can be patched."""

    sites: tuple[Site, ...]
    syscalls: int                # every ``syscall`` instruction found
    self_checking: bool = False

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


def analyze_bytes(data: bytes) -> Analysis:
    """The sites of an ELF file's contents (``data``)."""
    import capstone

    decoder = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    decoder.skipdata = True
    sites: list[Site] = []
    syscalls = 0
    for kind, flags, _addr, offset, size in _sections(data):
        if not flags & _SHF_EXECINSTR or kind == 8 or offset + size > len(data):   # NOBITS
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
                site = _site(data, previous, address, free)
                if site is not None:
                    sites.append(site)
            previous = insn
    self_checking = any(marker in data for marker in SELF_CHECK_MARKERS)
    return Analysis(tuple(sites), syscalls, self_checking)


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


def _site(data: bytes, previous, syscall_at: int, free: list[list[int]]) -> Site | None:
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


_memo: dict[tuple, Analysis] = {}


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kvmdune", "sites")


def analyze(path: str) -> Analysis:
    """The sites of the file at ``path``: from memory, the on-disk cache (build-id
    and content hash), or a fresh sweep."""
    try:
        info = os.stat(path)
    except OSError:
        return Analysis((), 0)
    key = (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    found = _memo.get(key)
    if found is not None:
        return found
    with open(path, "rb") as f:
        data = f.read()
    name = f"{_build_id(data, _sections(data)) or 'none'}-{hashlib.sha256(data).hexdigest()}"
    cache_file = os.path.join(_cache_dir(), f"v{ANALYSIS_VERSION}-{name}.json")
    analysis = _load(cache_file)
    if analysis is None:
        analysis = analyze_bytes(data)
        _store(cache_file, analysis)
    _memo[key] = analysis
    return analysis


def _load(cache_file: str) -> Analysis | None:
    try:
        with open(cache_file) as f:
            raw = json.load(f)
        return Analysis(tuple(Site(o, SiteKind(k), n, p) for o, k, n, p in raw["sites"]),
                        raw["syscalls"], raw["self_checking"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(cache_file: str, analysis: Analysis) -> None:
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        temporary = f"{cache_file}.{os.getpid()}"
        with open(temporary, "w") as f:
            json.dump({"sites": [[s.offset, int(s.kind), s.number, s.padding]
                                 for s in analysis.sites],
                       "syscalls": analysis.syscalls,
                       "self_checking": analysis.self_checking}, f)
        os.replace(temporary, cache_file)
    except OSError:
        pass             # no cache: analysed again next time


# -- stubs and patches -------------------------------------------------------------------
_RING_MASK_ROTATE = (layout.CALL_SLOT_SIZE.bit_length() - 1)       # 9
_SLOTS_SHIFT = layout.CALL_SLOTS.bit_length() - 1                  # 3


def _rel32(source_end: int, target: int) -> bytes:
    return struct.pack("<i", target - source_end)


def build_stub(stub: int, site: Site, site_address: int) -> bytes:
    """The stub at guest address ``stub`` for ``site`` mapped at ``site_address``."""
    code = bytearray()
    if site.kind is SiteKind.XOR:
        code += _XOR_EAX_EAX                                    # the flags, as native
    code += b"\xf3\x49\x0f\xae\xcb"                             # rdgsbase %r11
    code += b"\x48\xb9" + struct.pack("<q", -layout.CALL_RING)  # movabs $-CALL_RING,%rcx
    code += b"\x49\x8d\x0c\x0b"                                 # lea (%r11,%rcx),%rcx
    code += b"\xc4\xe3\xfb\xf0\xc9" + bytes([_RING_MASK_ROTATE])  # rorx $9,%rcx,%rcx
    code += b"\xb8" + struct.pack("<I", _SLOTS_SHIFT)           # mov $3,%eax
    code += b"\xc4\xe2\xfb\xf7\xc9"                             # shrx %rax,%rcx,%rcx
    code += b"\xb8" + struct.pack("<I", site.number)            # mov $N,%eax
    code += b"\xe3\x05"                                         # jrcxz: a ring slot
    syscall_address = site_address + (site.syscall_offset - site.offset)
    code += bytes([_JMP_REL32]) + _rel32(stub + len(code) + 5, syscall_address)
    saved_rsp = _trampoline.CALL_RING_SAVED_RSP
    code += b"\x49\x89\xa3" + struct.pack("<i", saved_rsp)      # mov %rsp,SAVED_RSP(%r11)
    code += b"\x49\x8d\xa3" + struct.pack("<i", _trampoline.CALL_RING_SAVED_R11 + 8)
    code += b"\x9c"                                             # pushfq -> SAVED_R11
    code += b"\x49\x8b\xa3" + struct.pack("<i", saved_rsp)      # mov SAVED_RSP(%r11),%rsp
    code += b"\x48\x8d\x0d" + _rel32(stub + len(code) + 7, syscall_address + 2)
    code += b"\x49\x89\x8b" + struct.pack("<i", _trampoline.CALL_RING_SAVED_RCX)
    code += b"\x49\x8d\x8b" + struct.pack("<i", _trampoline.CALL_STUB_RING_ENTRY - PAGE_SIZE)
    code += b"\xff\xe1"                                         # jmp *%rcx: the call stub
    if len(code) > STUB_SIZE:
        raise AssertionError("site stub larger than STUB_SIZE")
    return bytes(code).ljust(STUB_SIZE, b"\xcc")


def _in_window(site: Site, file_offset: int, length: int) -> bool:
    end = file_offset + length
    if not (file_offset <= site.offset and site.syscall_offset + 2 <= end):
        return False
    return site.padding is None or file_offset <= site.padding and site.padding + 5 <= end


def patch_mapping(mm, start: int, file_offset: int, data: bytes, path: str) -> bytes:
    """``data`` (the file's bytes from ``file_offset``, to be mapped executable at
    ``start``) with its sites patched, their stubs mapped nearby; ``data`` as it is
    when nothing can be patched (no site, no room within reach)."""
    analysis = analyze(path)
    sites = [site for site in analysis.patchable if _in_window(site, file_offset, len(data))]
    if not sites:
        return data
    size = -(-len(sites) * STUB_SIZE // PAGE_SIZE) * PAGE_SIZE
    stubs_at = mm.find_free(size, below=start)
    if stubs_at is None or start + len(data) - stubs_at > REL32_REACH:
        return data
    from .abi import ProtFlags
    from .mm import Vma

    patched = bytearray(data)
    stubs = bytearray()
    for index, site in enumerate(sites):
        stub = stubs_at + index * STUB_SIZE
        at = site.offset - file_offset
        site_address = start + at
        stubs += build_stub(stub, site, site_address)
        if site.kind is SiteKind.MOV_IMM:
            patched[at:at + 5] = bytes([_JMP_REL32]) + _rel32(site_address + 5, stub)
        else:
            pad = site.padding - file_offset
            patched[at:at + 2] = bytes([_JMP_REL8, (pad - (at + 2)) & 0xFF])
            patched[pad:pad + 5] = bytes([_JMP_REL32]) + _rel32(start + pad + 5, stub)
    mm.map_fixed(Vma(stubs_at, stubs_at + size,
                     int(ProtFlags.PROT_READ | ProtFlags.PROT_EXEC), name=STUB_MAPPING_NAME),
                 bytes(stubs), eager=True)
    return bytes(patched)


def in_site_stub(mm, address: int) -> bool:
    """Whether ``address`` is inside a patched site's stub (between the site and
    the call stub: no signal frame may be built there)."""
    vma = mm.find(address)
    return vma is not None and vma.name == STUB_MAPPING_NAME


__all__ = ["Analysis", "ENVIRONMENT_VARIABLE", "Site", "SiteKind", "STUB_MAPPING_NAME",
           "analyze", "analyze_bytes", "build_stub", "in_site_stub", "patch_mapping",
           "wanted"]
