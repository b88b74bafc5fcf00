"""Decoding and strace-style formatting of system calls.

Owns the human and machine renderings of one system call, driven only by
its declaration in :mod:`kvmdune.linux.syscall_table`:

- :func:`format_call` -- the call part, exactly as ``strace`` prints it
  (``openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC)``);
- :func:`format_result` -- ``= 3``, ``= -1 ENOENT (No such file or
  directory)``, ``= 0x7f...``, with `` <0.000012>`` like ``strace -T``;
- :func:`format_line` -- both, aligned on column 40 as strace aligns them;
- :func:`decode_args` -- the same values as plain Python data (names, ints,
  strings, dicts) for JSON audit records.

Memory is read through a callback, ``read_memory(addr, length) -> bytes |
None`` (None: unreadable, and the address is printed in hex as strace does).
Output buffers (read's data, stat's struct) are shown only when a return
value is given and is not an error, since only then has the kernel filled
them.  Struct layouts are x86-64's.  Decoding (bytes -> values) and
rendering (values -> text) are kept apart so both outputs agree.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Any, Callable, Final, Mapping

from kvmdune.linux import abi
from kvmdune.linux.abi import FlagSet
from kvmdune.linux.syscall_table import (
    Arg,
    ArgKind,
    Direction,
    Display,
    filled_extent,
    Ret,
    RetKind,
    SyscallSpec,
    arg_extent,
    int_value,
    resolve_args,
    resolve_ret,
)

ReadMemory = Callable[[int, int], "bytes | None"]

DEFAULT_MAX_STRING: Final = 32  # strace -s default
PATH_MAX: Final = 4096
RESULT_COLUMN: Final = 40  # strace aligns " = " results on this column
_PAGE: Final = 4096
_MAX_ARRAY: Final = 1024  # never walk more elements than this from guest memory


# --- primitive renderers ----------------------------------------------------


def quote_bytes(data: bytes, *, force_hex: bool = False) -> str:
    """``data`` between double quotes, escaped as strace escapes it.

    Printable ASCII stays as is (``"`` and ``\\`` escaped), \\t \\n \\v \\f
    \\r use their letters, other bytes are octal with as few digits as
    possible unless an octal digit follows.  ``force_hex`` prints every byte
    as ``\\xNN`` (strace does this for getrandom).
    """
    if force_hex:
        return '"' + "".join(f"\\x{b:02x}" for b in data) + '"'
    out = ['"']
    for i, b in enumerate(data):
        if b in _LETTER_ESCAPES:
            out.append(_LETTER_ESCAPES[b])
        elif 0x20 <= b < 0x7F:
            out.append("\\" + chr(b) if b in (0x22, 0x5C) else chr(b))
        elif i + 1 < len(data) and 0x30 <= data[i + 1] <= 0x37:
            out.append(f"\\{b:03o}")
        else:
            out.append(f"\\{b:o}")
    out.append('"')
    return "".join(out)


_LETTER_ESCAPES: Final = {0x09: "\\t", 0x0A: "\\n", 0x0B: "\\v", 0x0C: "\\f", 0x0D: "\\r"}


def hex_addr(value: int) -> str:
    """A pointer: NULL for 0, else lower-case hex."""
    return "NULL" if value == 0 else f"{value:#x}"


def hex_int(value: int) -> str:
    return "0" if value == 0 else f"{value:#x}"


def octal(value: int) -> str:
    """A mode as strace prints it: %#03o (``0644``, ``000``)."""
    return f"0{value:02o}" if value else "000"


def _prefix(table: type[enum.Enum]) -> str:
    """The name prefix strace shows for unknown values of a table (``SEEK_``)."""
    first = next(iter(table.__members__))
    head, sep, _ = first.lstrip("_").partition("_")
    return head + sep if sep else first


def enum_name(table: type[enum.IntEnum], value: int) -> str | None:
    try:
        return table(value).name
    except ValueError:
        return None


def render_enum(table: type[enum.IntEnum], value: int) -> str:
    """An enumerated value by name; unknown ones in hex with a NAME_??? comment."""
    if table is abi.IoctlRequest:
        return _render_ioctl(value)
    if table is abi.Signal:
        return render_signal(value)
    name = enum_name(table, value)
    if name is not None:
        return name
    shown = hex_int(value) if value >= 0 else str(value)
    return f"{shown} /* {_prefix(table)}??? */"


def _render_ioctl(value: int) -> str:
    name = enum_name(abi.IoctlRequest, value)
    if name is not None:
        return name
    direction, type_, nr, size = abi.ioc_fields(value)
    dirs = abi.IocDir(direction)
    dir_text = "|".join(m.name for m in abi.IocDir if m.value and m in dirs) or "_IOC_NONE"
    return f"_IOC({dir_text}, {type_:#x}, {nr:#x}, {hex_int(size)})"


def decompose_flags(table: FlagSet, value: int) -> tuple[list[str], int]:
    """Names for ``value`` in print order, and the bits no name covers."""
    names: list[str] = []
    rest = value
    field_name: str | None = None
    if table.field is not None:
        field_value = value & table.field_mask
        rest &= ~table.field_mask
        if table.field is abi.Signal:
            field_name = render_signal(field_value) if field_value else None
        else:
            field_name = enum_name(table.field, field_value)
            if field_name is None:
                field_name = hex_int(field_value)
    if field_name is not None and not table.field_last:
        names.append(field_name)
    if table.flags is not None:
        for name, member in table.flags.__members__.items():
            bits = int(member)
            if bits and rest & bits == bits:
                names.append(name)
                rest &= ~bits
    if field_name is not None and table.field_last:
        names.append(field_name)
    return names, rest


def render_flags(table: FlagSet, value: int) -> str:
    """``A|B|0x800000``; ``0`` (or the table's zero name) for no bits."""
    names, rest = decompose_flags(table, value)
    if not names and not rest:
        return _zero_name(table) or "0"
    if not names:
        return f"{rest:#x} /* {_flag_prefix(table)}??? */"
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names)


def _zero_name(table: FlagSet) -> str | None:
    if table.flags is None:
        return None
    for name, member in table.flags.__members__.items():
        if int(member) == 0:
            return name
    return None


def _flag_prefix(table: FlagSet) -> str:
    source = table.flags or table.field
    return _prefix(source) if source is not None else ""


def flag_names(table: FlagSet, value: int) -> list[str]:
    """Structured form of a flags word for audit records (unknown bits in hex)."""
    names, rest = decompose_flags(table, value)
    if rest:
        names.append(f"{rest:#x}")
    if not names:
        zero = _zero_name(table)
        return [zero] if zero else []
    return names


def render_signal(value: int) -> str:
    name = abi.signal_name(value)
    return name if name is not None else str(value)


def render_mode(value: int) -> str:
    """A mode argument: file type by name if present, then the rest in octal."""
    kind = value & abi.S_IFMT
    if kind:
        type_name = enum_name(abi.FileType, kind)
        rest = value & ~abi.S_IFMT
        if type_name is not None:
            return f"{type_name}|{octal(rest)}"
    return octal(value)


def render_st_mode(value: int) -> str:
    """A mode inside a stat structure: type, set-id and sticky bits by name, then octal."""
    parts = []
    kind = value & abi.S_IFMT
    if kind:
        parts.append(enum_name(abi.FileType, kind) or octal(kind))
    for member in abi.ModeBits:
        if value & member:
            parts.append(member.name)
    parts.append(octal(value & 0o777))
    return "|".join(parts)


def makedev(dev: int) -> tuple[int, int]:
    """glibc's gnu_dev_major/minor of a 64-bit dev_t."""
    major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF)
    minor = (dev & 0xFF) | ((dev >> 12) & ~0xFF)
    return major & 0xFFFFFFFF, minor & 0xFFFFFFFF


def render_dev(dev: int) -> str:
    major, minor = makedev(dev)
    return f"makedev({major:#x}, {minor:#x})"


def render_sigset(data: bytes) -> str:
    """``[INT TERM]``; ``~[...]`` listing the missing ones when most are set."""
    bits = int.from_bytes(data, "little")
    nsig = len(data) * 8
    members = [n for n in range(1, nsig + 1) if bits >> (n - 1) & 1]
    if len(members) * 2 > nsig:
        missing = [n for n in range(1, nsig + 1) if not bits >> (n - 1) & 1]
        return "~[" + " ".join(_short_signal(n) for n in missing) + "]"
    return "[" + " ".join(_short_signal(n) for n in members) + "]"


def _short_signal(value: int) -> str:
    name = abi.signal_name(value)
    return name[3:] if name is not None else str(value)


def render_rlim(value: int) -> str:
    if value == abi.RLIM64_INFINITY:
        return "RLIM64_INFINITY"
    if value and value % 1024 == 0:
        return f"{value // 1024}*1024"
    return str(value)


# --- memory helpers ---------------------------------------------------------


def _read(read_memory: ReadMemory, addr: int, length: int) -> bytes | None:
    if addr == 0 or length < 0:
        return None
    if length == 0:
        return b""
    try:
        data = read_memory(addr, length)
    except Exception:  # a hostile guest must never break tracing
        return None
    if data is None or len(data) != length:
        return None
    return bytes(data)


def read_cstring(read_memory: ReadMemory, addr: int, limit: int) -> tuple[bytes, bool] | None:
    """The NUL-terminated string at ``addr``, at most ``limit`` bytes.

    Returns (bytes without the NUL, truncated) or None if the start is
    unreadable.  Reads page by page so a string ending just before an
    unmapped page is still found.
    """
    if addr == 0:
        return None
    out = bytearray()
    cursor = addr
    while len(out) < limit + 1:
        chunk_len = min(_PAGE - (cursor % _PAGE), limit + 1 - len(out))
        chunk = _read(read_memory, cursor, chunk_len)
        # A reader finer-grained than pages may refuse a whole page that
        # holds the string's end: retry with halves before giving up.
        while chunk is None and chunk_len > 1:
            chunk_len //= 2
            chunk = _read(read_memory, cursor, chunk_len)
        if chunk is None:
            return None if not out else (bytes(out), True)
        nul = chunk.find(0)
        if nul >= 0:
            out += chunk[:nul]
            return (bytes(out), False) if len(out) <= limit else (bytes(out[:limit]), True)
        out += chunk
        cursor += chunk_len
    return bytes(out[:limit]), True


def _u(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "little")


def _s(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "little", signed=True)


# --- struct decoders (bytes -> values) and renderers (values -> text) -------


def _timespec(data: bytes, offset: int = 0) -> dict[str, int]:
    return {"tv_sec": _s(data, offset, 8), "tv_nsec": _s(data, offset + 8, 8)}


def _timeval(data: bytes, offset: int = 0) -> dict[str, int]:
    return {"tv_sec": _s(data, offset, 8), "tv_usec": _s(data, offset + 8, 8)}


def _braces(fields: Mapping[str, object], *, more: bool = False) -> str:
    body = ", ".join(f"{k}={_render_value(v)}" for k, v in fields.items())
    if more:
        body = body + ", ..." if body else "..."
    return "{" + body + "}"


def _render_value(value: object) -> str:
    if isinstance(value, dict):
        return _braces(value)
    if isinstance(value, list):
        return "[" + ", ".join(_render_value(v) for v in value) + "]"
    if isinstance(value, _Text):
        return value.text
    return str(value)


class _Text:
    """A pre-rendered fragment inside a struct rendering (a name, a quoted string)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _decode_stat(data: bytes) -> dict[str, Any]:
    return {
        "st_dev": _u(data, 0, 8),
        "st_ino": _u(data, 8, 8),
        "st_nlink": _u(data, 16, 8),
        "st_mode": _u(data, 24, 4),
        "st_uid": _u(data, 28, 4),
        "st_gid": _u(data, 32, 4),
        "st_rdev": _u(data, 40, 8),
        "st_size": _s(data, 48, 8),
        "st_blksize": _s(data, 56, 8),
        "st_blocks": _s(data, 64, 8),
        "st_atime": _timespec(data, 72),
        "st_mtime": _timespec(data, 88),
        "st_ctime": _timespec(data, 104),
    }


def _is_device(mode: int) -> bool:
    return mode & abi.S_IFMT in (abi.FileType.S_IFCHR, abi.FileType.S_IFBLK)


def _render_stat(v: dict[str, Any]) -> str:
    # strace's abbreviated form: mode, then rdev for devices or size otherwise.
    fields: dict[str, object] = {"st_mode": _Text(render_st_mode(v["st_mode"]))}
    if _is_device(v["st_mode"]):
        fields["st_rdev"] = _Text(render_dev(v["st_rdev"]))
    else:
        fields["st_size"] = v["st_size"]
    return _braces(fields, more=True)


def _decode_statx(data: bytes) -> dict[str, Any]:
    return {
        "stx_mask": _u(data, 0, 4),
        "stx_blksize": _u(data, 4, 4),
        "stx_attributes": _u(data, 8, 8),
        "stx_nlink": _u(data, 16, 4),
        "stx_uid": _u(data, 20, 4),
        "stx_gid": _u(data, 24, 4),
        "stx_mode": _u(data, 28, 2),
        "stx_ino": _u(data, 32, 8),
        "stx_size": _u(data, 40, 8),
        "stx_blocks": _u(data, 48, 8),
        "stx_attributes_mask": _u(data, 56, 8),
        "stx_rdev_major": _u(data, 128, 4),
        "stx_rdev_minor": _u(data, 132, 4),
        "stx_dev_major": _u(data, 136, 4),
        "stx_dev_minor": _u(data, 140, 4),
    }


_STATX_MASK: Final = FlagSet("statx_mask", abi.StatxMask)


def _render_statx(v: dict[str, Any]) -> str:
    fields: dict[str, object] = {
        "stx_mask": _Text(render_flags(_STATX_MASK, v["stx_mask"])),
        "stx_attributes": _Text(hex_int(v["stx_attributes"])),
        "stx_mode": _Text(render_st_mode(v["stx_mode"])),
    }
    if _is_device(v["stx_mode"]):
        fields["stx_rdev_major"] = v["stx_rdev_major"]
        fields["stx_rdev_minor"] = v["stx_rdev_minor"]
    else:
        fields["stx_size"] = v["stx_size"]
    return _braces(fields, more=True)


def _decode_sigaction(data: bytes) -> dict[str, Any]:
    return {
        "sa_handler": _u(data, 0, 8),
        "sa_mask": data[24:32],
        "sa_flags": _u(data, 8, 8),
        "sa_restorer": _u(data, 16, 8),
    }


_SA_FLAGS: Final = FlagSet("sa_flags", abi.SigactionFlags)


def _render_sigaction(v: dict[str, Any]) -> str:
    handler = enum_name(abi.SigHandler, v["sa_handler"]) or hex_addr(v["sa_handler"])
    fields: dict[str, object] = {
        "sa_handler": _Text(handler),
        "sa_mask": _Text(render_sigset(v["sa_mask"])),
        "sa_flags": _Text(render_flags(_SA_FLAGS, v["sa_flags"])),
    }
    if v["sa_flags"] & abi.SigactionFlags.SA_RESTORER:
        fields["sa_restorer"] = _Text(hex_addr(v["sa_restorer"]))
    return _braces(fields)


def _decode_utsname(data: bytes) -> dict[str, Any]:
    names = ("sysname", "nodename", "release", "version", "machine", "domainname")
    return {n: data[i * 65 : (i + 1) * 65].split(b"\0", 1)[0] for i, n in enumerate(names)}


def _render_utsname(v: dict[str, Any]) -> str:
    return _braces({k: _Text(quote_bytes(v[k])) for k in ("sysname", "nodename")}, more=True)


def _decode_sysinfo(data: bytes) -> dict[str, Any]:
    return {
        "uptime": _s(data, 0, 8),
        "loads": [_u(data, 8 + 8 * i, 8) for i in range(3)],
        "totalram": _u(data, 32, 8),
        "freeram": _u(data, 40, 8),
        "sharedram": _u(data, 48, 8),
        "bufferram": _u(data, 56, 8),
        "totalswap": _u(data, 64, 8),
        "freeswap": _u(data, 72, 8),
        "procs": _u(data, 80, 2),
        "totalhigh": _u(data, 88, 8),
        "freehigh": _u(data, 96, 8),
        "mem_unit": _u(data, 104, 4),
    }


def _decode_rusage(data: bytes) -> dict[str, Any]:
    names = (
        "ru_maxrss", "ru_ixrss", "ru_idrss", "ru_isrss", "ru_minflt", "ru_majflt", "ru_nswap",
        "ru_inblock", "ru_oublock", "ru_msgsnd", "ru_msgrcv", "ru_nsignals", "ru_nvcsw", "ru_nivcsw",
    )  # fmt: skip
    out: dict[str, Any] = {"ru_utime": _timeval(data, 0), "ru_stime": _timeval(data, 16)}
    out.update({n: _s(data, 32 + 8 * i, 8) for i, n in enumerate(names)})
    return out


def _render_rusage(v: dict[str, Any]) -> str:
    return _braces({"ru_utime": v["ru_utime"], "ru_stime": v["ru_stime"]}, more=True)


def _decode_rlimit(data: bytes) -> dict[str, Any]:
    return {"rlim_cur": _u(data, 0, 8), "rlim_max": _u(data, 8, 8)}


def _render_rlimit(v: dict[str, Any]) -> str:
    return _braces({k: _Text(render_rlim(x)) for k, x in v.items()})


def _decode_pollfd(data: bytes) -> dict[str, Any]:
    return {"fd": _s(data, 0, 4), "events": _u(data, 4, 2), "revents": _u(data, 6, 2)}


_POLL: Final = FlagSet("poll_events", abi.PollEvents)
_EPOLL: Final = FlagSet("epoll_events", abi.EpollEvents)


def _render_pollfd(v: dict[str, Any]) -> str:
    return _braces({"fd": v["fd"], "events": _Text(render_flags(_POLL, v["events"]))})


def _decode_epoll_event(data: bytes) -> dict[str, Any]:
    return {"events": _u(data, 0, 4), "data": _u(data, 4, 8)}


def _render_epoll_event(v: dict[str, Any]) -> str:
    data = v["data"]
    return _braces(
        {"events": _Text(render_flags(_EPOLL, v["events"])), "data": {"u32": data & 0xFFFFFFFF, "u64": data}}
    )


def _decode_winsize(data: bytes) -> dict[str, Any]:
    return {n: _u(data, 2 * i, 2) for i, n in enumerate(("ws_row", "ws_col", "ws_xpixel", "ws_ypixel"))}


def _decode_itimerspec(data: bytes) -> dict[str, Any]:
    return {"it_interval": _timespec(data, 0), "it_value": _timespec(data, 16)}


def _decode_itimerval(data: bytes) -> dict[str, Any]:
    return {"it_interval": _timeval(data, 0), "it_value": _timeval(data, 16)}


def _decode_stack_t(data: bytes) -> dict[str, Any]:
    return {"ss_sp": _u(data, 0, 8), "ss_flags": _s(data, 8, 4), "ss_size": _u(data, 16, 8)}


_SS_FLAGS: Final = FlagSet("ss_flags", abi.SigaltstackFlags)


def _render_stack_t(v: dict[str, Any]) -> str:
    return _braces(
        {
            "ss_sp": _Text(hex_addr(v["ss_sp"])),
            "ss_flags": _Text(render_flags(_SS_FLAGS, v["ss_flags"] & 0xFFFFFFFF)),
            "ss_size": v["ss_size"],
        }
    )


def _decode_wstatus(data: bytes) -> dict[str, Any]:
    return {"wstatus": _u(data, 0, 4)}


def _render_wstatus(v: dict[str, Any]) -> str:
    s = v["wstatus"]
    low = s & 0x7F
    if low == 0:
        text = f"WIFEXITED(s) && WEXITSTATUS(s) == {(s >> 8) & 0xFF}"
    elif s == 0xFFFF:
        text = "WIFCONTINUED(s)"
    elif low == 0x7F:
        text = f"WIFSTOPPED(s) && WSTOPSIG(s) == {render_signal((s >> 8) & 0xFF)}"
        if s >> 16:
            text += f" && s>>16 == {s >> 16}"
    else:
        text = f"WIFSIGNALED(s) && WTERMSIG(s) == {render_signal(low)}"
        if s & 0x80:
            text += " && WCOREDUMP(s)"
    return "[{" + text + "}]"


def _scalar(size: int, signed: bool) -> Callable[[bytes], dict[str, Any]]:
    return lambda data: {"value": int.from_bytes(data[:size], "little", signed=signed)}


def _render_int_box(v: dict[str, Any]) -> str:
    return f"[{v['value']}]"


def _render_hex_box(v: dict[str, Any]) -> str:
    return f"[{hex_addr(v['value'])}]"


def _decode_fd_pair(data: bytes) -> dict[str, Any]:
    return {"fds": [_s(data, 0, 4), _s(data, 4, 4)]}


def _decode_sched_param(data: bytes) -> dict[str, Any]:
    return {"sched_priority": _s(data, 0, 4)}


def _decode_timezone(data: bytes) -> dict[str, Any]:
    return {"tz_minuteswest": _s(data, 0, 4), "tz_dsttime": _s(data, 4, 4)}


def _decode_comm(data: bytes) -> dict[str, Any]:
    return {"comm": data.split(b"\0", 1)[0]}


def _decode_pair(one: Callable[[bytes, int], dict[str, int]], size: int) -> Callable[[bytes], dict[str, Any]]:
    return lambda data: {"times": [one(data, 0), one(data, size)]}


def _decode_flock(data: bytes) -> dict[str, Any]:
    return {
        "l_type": _s(data, 0, 2),
        "l_whence": _s(data, 2, 2),
        "l_start": _s(data, 8, 8),
        "l_len": _s(data, 16, 8),
        "l_pid": _s(data, 24, 4),
    }


def _render_flock(v: dict[str, Any]) -> str:
    return _braces(
        {
            "l_type": _Text(render_enum(abi.LockType, v["l_type"])),
            "l_whence": _Text(render_enum(abi.SeekWhence, v["l_whence"])),
            "l_start": v["l_start"],
            "l_len": v["l_len"],
            "l_pid": v["l_pid"],
        }
    )


def _decode_tms(data: bytes) -> dict[str, Any]:
    return {n: _s(data, 8 * i, 8) for i, n in enumerate(("tms_utime", "tms_stime", "tms_cutime", "tms_cstime"))}


_USER_HZ: Final = 100  # clock_t ticks per second on x86-64


def _render_tms(v: dict[str, Any]) -> str:
    def ticks(value: int) -> _Text:
        seconds = f" /* {value // _USER_HZ}.{value % _USER_HZ:02d} s */" if value else ""
        return _Text(f"{value}{seconds}")

    return _braces({k: ticks(x) for k, x in v.items()})


def _render_plain(v: dict[str, Any]) -> str:
    return _braces(v)


_CLONE_ARGS_FIELDS: Final = ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
                              "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")


def _decode_clone_args(data: bytes) -> dict[str, Any]:
    return {name: _u(data, 8 * i, 8) for i, name in enumerate(_CLONE_ARGS_FIELDS)
            if 8 * i + 8 <= len(data)}


def _render_clone_args(v: dict[str, Any]) -> str:
    """As strace prints clone3's struct clone_args: what is set, pointers in hex."""
    shown: dict[str, object] = {"flags": _Text(render_flags(abi.UNSHARE_FLAGS, v.get("flags", 0)))}
    if v.get("flags", 0) & abi.CloneFlags.CLONE_PIDFD:
        shown["pidfd"] = _Text(hex_addr(v.get("pidfd", 0)))
    for name in ("child_tid", "parent_tid"):
        if v.get(name):
            shown[name] = _Text(hex_addr(v[name]))
    signo = v.get("exit_signal", 0)
    shown["exit_signal"] = _Text(render_signal(signo)) if signo else 0
    for name in ("stack", "stack_size", "tls"):
        if name in v:
            shown[name] = _Text(hex_addr(v[name]))
    for name in ("set_tid", "set_tid_size", "cgroup"):
        if v.get(name):
            shown[name] = _Text(hex_addr(v[name]))
    return _braces(shown)


# struct name -> (decode, render).  Structs not listed print as their address.
_STRUCTS: Final[Mapping[str, tuple[Callable[[bytes], dict[str, Any]], Callable[[dict[str, Any]], str]]]] = {
    "stat": (_decode_stat, _render_stat),
    "statx": (_decode_statx, _render_statx),
    "timespec": (_timespec, _render_plain),
    "timeval": (_timeval, _render_plain),
    "timespec[2]": (_decode_pair(_timespec, 16), lambda v: _render_value(v["times"])),
    "timeval[2]": (_decode_pair(_timeval, 16), lambda v: _render_value(v["times"])),
    "timezone": (_decode_timezone, _render_plain),
    "itimerspec": (_decode_itimerspec, _render_plain),
    "itimerval": (_decode_itimerval, _render_plain),
    "sigaction": (_decode_sigaction, _render_sigaction),
    "sigset": (lambda data: {"set": data}, lambda v: render_sigset(v["set"])),
    "utsname": (_decode_utsname, _render_utsname),
    "sysinfo": (_decode_sysinfo, _render_plain),
    "rusage": (_decode_rusage, _render_rusage),
    "rlimit": (_decode_rlimit, _render_rlimit),
    "pollfd": (_decode_pollfd, _render_pollfd),
    "epoll_event": (_decode_epoll_event, _render_epoll_event),
    "winsize": (_decode_winsize, _render_plain),
    "stack_t": (_decode_stack_t, _render_stack_t),
    "wstatus": (_decode_wstatus, _render_wstatus),
    "int": (_scalar(4, True), _render_int_box),
    "pid_t": (_scalar(4, True), _render_int_box),
    "uid_t": (_scalar(4, False), _render_int_box),
    "gid_t": (_scalar(4, False), _render_int_box),
    "unsigned int": (_scalar(4, False), _render_int_box),
    "socklen_t": (_scalar(4, False), _render_int_box),
    "loff_t": (_scalar(8, True), _render_int_box),
    "time_t": (_scalar(8, True), _render_int_box),
    "__u64": (_scalar(8, False), _render_int_box),
    "unsigned long": (_scalar(8, False), _render_hex_box),
    "int[2]": (_decode_fd_pair, lambda v: _render_value(v["fds"])),
    "sched_param": (_decode_sched_param, _render_plain),
    "comm": (_decode_comm, lambda v: quote_bytes(v["comm"])),
    "flock": (_decode_flock, _render_flock),
    "tms": (_decode_tms, _render_tms),
    "clone_args": (_decode_clone_args, _render_clone_args),
}


# --- sockaddr -----------------------------------------------------------------


def decode_sockaddr(data: bytes) -> dict[str, Any]:
    """A struct sockaddr of ``len(data)`` bytes as values."""
    if len(data) < 2:
        return {"sa_family": None, "raw": data}
    family = _u(data, 0, 2)
    out: dict[str, Any] = {"sa_family": enum_name(abi.AddressFamily, family) or family}
    if family == abi.AddressFamily.AF_UNIX:
        path = data[2:]
        if path[:1] == b"\0":
            out["sun_path"] = path[1:]
            out["abstract"] = True
        else:
            out["sun_path"] = path.split(b"\0", 1)[0]
            out["abstract"] = False
    elif family == abi.AddressFamily.AF_INET and len(data) >= 8:
        out["sin_port"] = int.from_bytes(data[2:4], "big")
        out["sin_addr"] = str(ipaddress.IPv4Address(data[4:8]))
    elif family == abi.AddressFamily.AF_INET6 and len(data) >= 24:
        out["sin6_port"] = int.from_bytes(data[2:4], "big")
        out["sin6_flowinfo"] = int.from_bytes(data[4:8], "big")
        out["sin6_addr"] = str(ipaddress.IPv6Address(data[8:24]))
        out["sin6_scope_id"] = _u(data, 24, 4) if len(data) >= 28 else 0
    else:
        out["sa_data"] = data[2:]
    return out


def render_sockaddr(v: dict[str, Any]) -> str:
    family = v["sa_family"]
    head = f"sa_family={family}" if family is not None else ""
    if "sun_path" in v:
        path = ("@" if v["abstract"] else "") + quote_bytes(v["sun_path"])
        return f"{{{head}, sun_path={path}}}"
    if "sin_addr" in v:
        return f'{{{head}, sin_port=htons({v["sin_port"]}), sin_addr=inet_addr("{v["sin_addr"]}")}}'
    if "sin6_addr" in v:
        return (
            f'{{{head}, sin6_port=htons({v["sin6_port"]}), sin6_flowinfo=htonl({v["sin6_flowinfo"]}), '
            f'inet_pton(AF_INET6, "{v["sin6_addr"]}", &sin6_addr), sin6_scope_id={v["sin6_scope_id"]}}}'
        )
    if "sa_data" in v:
        return f"{{{head}, sa_data={quote_bytes(v['sa_data'])}}}"
    return "{}"


def _sockaddr_json(v: dict[str, Any]) -> dict[str, Any]:
    return {k: (x.decode("utf-8", "backslashreplace") if isinstance(x, bytes) else x) for k, x in v.items()}


# --- the per-argument decoder -----------------------------------------------


class _Call:
    """One call being decoded: registers, memory, and whether outputs are filled."""

    def __init__(
        self, spec: SyscallSpec, args: tuple[int, ...], read_memory: ReadMemory, ret: int | None, max_string: int
    ) -> None:
        self.spec = spec
        self.args = tuple(args) + (0,) * (6 - len(args))
        self.read = read_memory
        self.ret = ret
        self.max_string = max(0, max_string)
        self.succeeded = ret is not None and not is_error(ret)
        self.resolved = resolve_args(spec, self.args)

    def shows_output(self, arg: Arg) -> bool:
        if arg.direction in (Direction.OUT, Direction.INOUT) and arg.kind is not ArgKind.IOVEC:
            return self.succeeded if arg.direction is Direction.OUT else (self.ret is None or self.succeeded)
        if arg.kind is ArgKind.IOVEC and arg.direction is Direction.OUT:
            return self.succeeded
        return True

    def extent(self, index: int) -> int | None:
        return arg_extent(self.spec, index, self.args, self.read)

    # -- strace text --

    def render(self, index: int, arg: Arg) -> str:
        raw = self.args[index]
        kind = arg.kind
        if kind in _INTEGER_RENDERERS:
            return _INTEGER_RENDERERS[kind](arg, int_value(arg, raw))
        if kind in (ArgKind.PTR, ArgKind.ADDR, ArgKind.OPAQUE):
            return hex_addr(raw)
        if raw == 0:
            return "NULL"
        if kind is ArgKind.MSGHDR and arg.direction is Direction.INOUT and self.ret is not None and not self.succeeded:
            # strace shows only the in-part of a failed recvmsg's header.
            data = _read(self.read, raw, 12)
            return hex_addr(raw) if data is None else f"{{msg_namelen={_u(data, 8, 4)}}}"
        if not self.shows_output(arg):
            return hex_addr(raw)
        return _POINTER_RENDERERS[kind](self, index, arg, raw)

    def render_path(self, index: int, arg: Arg, raw: int) -> str:
        full = arg.kind is ArgKind.PATH or arg.display is Display.FULL_STRING
        found = read_cstring(self.read, raw, PATH_MAX if full else self.max_string)
        if found is None:
            return hex_addr(raw)
        text, truncated = found
        return quote_bytes(text) + ("..." if truncated else "")

    def buffer_length(self, index: int, arg: Arg) -> int | None:
        length = self.extent(index)
        if arg.out_size_from_ret and self.ret is not None and arg.direction is not Direction.IN:
            filled = filled_extent(arg, self.ret)
            length = filled if length is None else min(length, filled)
        return length

    def render_buffer(self, index: int, arg: Arg, raw: int) -> str:
        struct = arg.struct
        if struct is not None and struct.name in _SPECIAL_BUFFERS:
            return _SPECIAL_BUFFERS[struct.name](self, index, arg, raw)
        length = self.buffer_length(index, arg)
        if length is None:
            return hex_addr(raw)
        if struct is not None and struct.size > 1 or (struct is not None and struct.name in _STRUCTS):
            return self.render_structs(index, arg, raw, length)
        if arg.display is Display.CSTRING:
            data = _read(self.read, raw, min(length, PATH_MAX))
            return hex_addr(raw) if data is None else quote_bytes(data.split(b"\0", 1)[0])
        if arg.display is Display.OPTVAL and length == 4:
            data = _read(self.read, raw, 4)
            return hex_addr(raw) if data is None else f"[{_s(data, 0, 4)}]"
        return self.render_bytes(raw, length, force_hex=arg.display is Display.HEX_STRING)

    def render_bytes(self, raw: int, length: int, *, force_hex: bool = False) -> str:
        shown = min(length, self.max_string)
        data = _read(self.read, raw, shown)
        if data is None:
            return hex_addr(raw)
        return quote_bytes(data, force_hex=force_hex) + ("..." if length > shown else "")

    def render_structs(self, index: int, arg: Arg, raw: int, length: int) -> str:
        struct = arg.struct
        assert struct is not None
        codec = _STRUCTS.get(struct.name)
        if codec is None:
            return hex_addr(raw)
        decode, render = codec
        if arg.count_arg is None:
            data = _read(self.read, raw, length)
            if data is None or len(data) < min(length, 1):
                return hex_addr(raw)
            return render(decode(data))
        count = min(length // struct.size, _MAX_ARRAY)
        data = _read(self.read, raw, count * struct.size)
        if data is None:
            return hex_addr(raw)
        shown = min(count, max(self.max_string, 1))
        items = [render(decode(data[i * struct.size : (i + 1) * struct.size])) for i in range(shown)]
        return "[" + ", ".join(items) + (", ..." if count > shown else "") + "]"

    def render_iovec(self, index: int, arg: Arg, raw: int) -> str:
        count_arg = self.resolved[arg.count_arg] if arg.count_arg is not None else None
        count = self.args[arg.count_arg] if arg.count_arg is not None else 0
        if count_arg is not None:
            count = int_value(count_arg, count)
        return self.iovec_list(raw, count, arg.direction)

    def iovec_list(self, raw: int, count: int, direction: Direction) -> str:
        """``[{iov_base="..", iov_len=N}, ...]``; filled buffers show only ``ret`` bytes in all."""
        count = min(max(count, 0), _MAX_ARRAY)
        data = _read(self.read, raw, count * 16)
        if data is None:
            return hex_addr(raw)
        budget = self.ret if direction is Direction.OUT and self.ret is not None else None
        items = []
        for i in range(min(count, max(self.max_string, 1))):
            base, size = _u(data, 16 * i, 8), _u(data, 16 * i + 8, 8)
            take = size if budget is None else max(0, min(size, budget))
            if budget is not None:
                budget -= take
            items.append(f"{{iov_base={self.render_bytes(base, take) if base else 'NULL'}, iov_len={size}}}")
        return "[" + ", ".join(items) + (", ..." if count > len(items) else "") + "]"

    def render_msghdr(self, index: int, arg: Arg, raw: int) -> str:
        data = _read(self.read, raw, 56)
        if data is None:
            return hex_addr(raw)
        name, namelen = _u(data, 0, 8), _u(data, 8, 4)
        iov, iovlen = _u(data, 16, 8), _u(data, 24, 8)
        control, controllen, flags = _u(data, 32, 8), _u(data, 40, 8), _u(data, 48, 4)
        name_text = "NULL"
        if name:
            addr = _read(self.read, name, min(namelen, 128))
            name_text = render_sockaddr(decode_sockaddr(addr)) if addr is not None else hex_addr(name)
        # recvmsg's header is in-out, its buffers are filled: show only what was received.
        iov_dir = Direction.OUT if arg.direction is not Direction.IN else Direction.IN
        iov_text = self.iovec_list(iov, iovlen, iov_dir) if iov else "NULL"
        parts = [f"msg_name={name_text}", f"msg_namelen={namelen}", f"msg_iov={iov_text}", f"msg_iovlen={iovlen}"]
        if controllen:
            parts.append(f"msg_control={hex_addr(control)}")
        parts += [f"msg_controllen={controllen}", f"msg_flags={render_flags(_MSG, flags)}"]
        return "{" + ", ".join(parts) + "}"

    def render_sockaddr_arg(self, index: int, arg: Arg, raw: int) -> str:
        length = self.extent(index)
        if not length:
            return hex_addr(raw)
        data = _read(self.read, raw, min(length, 128))
        if data is None:
            return hex_addr(raw)
        return render_sockaddr(decode_sockaddr(data))

    def render_argv(self, index: int, arg: Arg, raw: int) -> str:
        pointers = self.string_array(raw)
        if pointers is None:
            return hex_addr(raw)
        if arg.display is Display.ENV_COUNT:
            return f"{hex_addr(raw)} /* {len(pointers)} var{'' if len(pointers) == 1 else 's'} */"
        items = []
        for pointer in pointers[: max(self.max_string, 1)]:
            found = read_cstring(self.read, pointer, self.max_string)
            items.append(hex_addr(pointer) if found is None else quote_bytes(found[0]) + ("..." if found[1] else ""))
        more = ", ..." if len(pointers) > len(items) else ""
        return "[" + ", ".join(items) + more + "]"

    def string_array(self, raw: int) -> list[int] | None:
        pointers = []
        for i in range(_MAX_ARRAY):
            word = _read(self.read, raw + 8 * i, 8)
            if word is None:
                return None if i == 0 else pointers
            value = _u(word, 0, 8)
            if value == 0:
                break
            pointers.append(value)
        return pointers

    def render_dirents(self, index: int, arg: Arg, raw: int) -> str:
        length = self.buffer_length(index, arg)
        data = _read(self.read, raw, length) if length else None
        if data is None:
            return hex_addr(raw)
        entries, offset = 0, 0
        while offset + 18 < len(data) + 1 and entries < 1 << 20:
            reclen = _u(data, offset + 16, 2)
            if reclen == 0:
                break
            entries += 1
            offset += reclen
        return f"{hex_addr(raw)} /* {entries} entr{'y' if entries == 1 else 'ies'} */"

    def render_cpuset(self, index: int, arg: Arg, raw: int) -> str:
        length = self.buffer_length(index, arg)
        data = _read(self.read, raw, min(length, 1024)) if length else None
        if data is None:
            return hex_addr(raw)
        bits = int.from_bytes(data, "little")
        return "[" + " ".join(str(cpu) for cpu in range(len(data) * 8) if bits >> cpu & 1) + "]"

    def render_fdset(self, index: int, arg: Arg, raw: int) -> str:
        nfds = max(int_value(Arg("n", ArgKind.INT), self.args[0]), 0)
        length = self.extent(index)
        data = _read(self.read, raw, length) if length else None
        if data is None:
            return hex_addr(raw)
        bits = int.from_bytes(data, "little")
        return "[" + " ".join(str(fd) for fd in range(min(nfds, len(data) * 8)) if bits >> fd & 1) + "]"

    # -- structured values --

    def value(self, index: int, arg: Arg) -> object:
        raw = self.args[index]
        kind = arg.kind
        number = int_value(arg, raw) if kind in _INTEGER_RENDERERS else raw
        if kind is ArgKind.DIRFD:
            return "AT_FDCWD" if number == abi.AT_FDCWD else number
        if kind is ArgKind.SIGNAL:
            return abi.signal_name(number) or number
        if kind is ArgKind.FLAGS:
            assert isinstance(arg.table, FlagSet)
            return flag_names(arg.table, number)
        if kind is ArgKind.ENUM:
            assert arg.table is not None and not isinstance(arg.table, FlagSet)
            name = enum_name(arg.table, number)
            return name if name is not None else number
        if kind in _INTEGER_RENDERERS or raw == 0 or kind in (ArgKind.PTR, ArgKind.ADDR, ArgKind.OPAQUE):
            return number
        if kind in (ArgKind.PATH, ArgKind.STRING):
            found = read_cstring(self.read, raw, PATH_MAX)
            return raw if found is None else found[0].decode("utf-8", "backslashreplace")
        if kind is ArgKind.STRING_ARRAY:
            pointers = self.string_array(raw)
            if pointers is None:
                return raw
            strings = [read_cstring(self.read, p, PATH_MAX) for p in pointers]
            return [p if s is None else s[0].decode("utf-8", "backslashreplace") for p, s in zip(pointers, strings)]
        if kind is ArgKind.SOCKADDR or (kind is ArgKind.SOCKADDR_OUT and self.succeeded):
            length = self.extent(index)
            data = _read(self.read, raw, min(length, 128)) if length else None
            return {"addr": raw} if data is None else _sockaddr_json(decode_sockaddr(data))
        out: dict[str, object] = {"addr": raw, "len": self.buffer_length(index, arg)}
        struct = arg.struct
        if struct is not None and struct.name in _STRUCTS and arg.count_arg is None and self.shows_output(arg):
            length = out["len"]
            data = _read(self.read, raw, length) if isinstance(length, int) and length > 0 else None
            if data is not None:
                decoded = _STRUCTS[struct.name][0](data)
                out["value"] = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in decoded.items()}
        return out


_MSG: Final = FlagSet("msg_flags", abi.MsgFlags)


def _render_int(arg: Arg, value: int) -> str:
    return str(value)


def _render_hex_arg(arg: Arg, value: int) -> str:
    return hex_int(value)


def _render_dirfd(arg: Arg, value: int) -> str:
    return "AT_FDCWD" if value == abi.AT_FDCWD else str(value)


def _render_signal_arg(arg: Arg, value: int) -> str:
    return render_signal(value) if value else "0"


def _render_flags_arg(arg: Arg, value: int) -> str:
    assert isinstance(arg.table, FlagSet)
    return render_flags(arg.table, value)


def _render_enum_arg(arg: Arg, value: int) -> str:
    assert arg.table is not None and not isinstance(arg.table, FlagSet)
    return render_enum(arg.table, value)


_INTEGER_RENDERERS: Final[Mapping[ArgKind, Callable[[Arg, int], str]]] = {
    ArgKind.INT: _render_int,
    ArgKind.UINT: _render_int,
    ArgKind.FD: _render_int,
    ArgKind.PID: _render_int,
    ArgKind.HEX: _render_hex_arg,
    ArgKind.DIRFD: _render_dirfd,
    ArgKind.SIGNAL: _render_signal_arg,
    ArgKind.MODE: lambda arg, value: render_mode(value),
    ArgKind.DEV: lambda arg, value: render_dev(value),
    ArgKind.FLAGS: _render_flags_arg,
    ArgKind.ENUM: _render_enum_arg,
}

_POINTER_RENDERERS: Final[Mapping[ArgKind, Callable[[_Call, int, Arg, int], str]]] = {
    ArgKind.PATH: _Call.render_path,
    ArgKind.STRING: _Call.render_path,
    ArgKind.IN_BUF: _Call.render_buffer,
    ArgKind.OUT_BUF: _Call.render_buffer,
    ArgKind.INOUT_BUF: _Call.render_buffer,
    ArgKind.IOVEC: _Call.render_iovec,
    ArgKind.MSGHDR: _Call.render_msghdr,
    ArgKind.SOCKADDR: _Call.render_sockaddr_arg,
    ArgKind.SOCKADDR_OUT: _Call.render_sockaddr_arg,
    ArgKind.STRING_ARRAY: _Call.render_argv,
}

# Buffers whose strace form is not "each element in braces".
_SPECIAL_BUFFERS: Final[Mapping[str, Callable[[_Call, int, Arg, int], str]]] = {
    "linux_dirent64": _Call.render_dirents,
    "linux_dirent": _Call.render_dirents,
    "fd_set": _Call.render_fdset,
    "cpu_set": _Call.render_cpuset,
}


# --- calls whose strace form is not "name(arg, arg, ...)" -----------------------


def _format_clone(call: _Call) -> str:
    """clone(2): strace names the arguments and prints only those the flags use."""
    flags = call.args[0]
    parts = [f"child_stack={hex_addr(call.args[1])}", f"flags={render_flags(abi.CLONE_FLAGS, flags)}"]
    if flags & (abi.CloneFlags.CLONE_PARENT_SETTID | abi.CloneFlags.CLONE_PIDFD):
        parts.append(f"parent_tid={hex_addr(call.args[2])}")
    if flags & (abi.CloneFlags.CLONE_CHILD_SETTID | abi.CloneFlags.CLONE_CHILD_CLEARTID):
        parts.append(f"child_tidptr={hex_addr(call.args[3])}")
    if flags & abi.CloneFlags.CLONE_SETTLS:
        parts.append(f"tls={hex_addr(call.args[4])}")
    return ", ".join(parts)


_CALL_FORMATS: Final[Mapping[str, Callable[[_Call], str]]] = {"clone": _format_clone}


def _poll_annotation(call: _Call, ret: int) -> str | None:
    if ret == 0:
        return "Timeout"
    nfds = min(call.args[1] & 0xFFFFFFFF, _MAX_ARRAY)
    data = _read(call.read, call.args[0], nfds * 8)
    if data is None:
        return None
    ready = []
    for i in range(nfds):
        fd, revents = _s(data, 8 * i, 4), _u(data, 8 * i + 6, 2)
        if revents:
            ready.append(f"{{fd={fd}, revents={render_flags(_POLL, revents)}}}")
    note = "[" + ", ".join(ready) + "]"
    return note + _left(call, 2)


def _left(call: _Call, index: int) -> str:
    """strace's ", left {...}": the time remaining that the kernel wrote back."""
    arg = call.resolved[index]
    if arg is None or arg.struct is None or not call.args[index]:
        return ""
    data = _read(call.read, call.args[index], arg.struct.size)
    if data is None or arg.struct.name not in _STRUCTS:
        return ""
    decode, render = _STRUCTS[arg.struct.name]
    return f", left {render(decode(data))}"


def _select_annotation(call: _Call, ret: int) -> str | None:
    if ret == 0:
        return "Timeout"
    parts = []
    for index, label in ((1, "in"), (2, "out"), (3, "except")):
        arg = call.resolved[index]
        if call.args[index] and arg is not None:
            text = call.render_fdset(index, arg, call.args[index])
            if text not in ("[]",) and text.startswith("["):
                parts.append(f"{label} {text}")
    return (", ".join(parts) + _left(call, 4)) if parts else None


_RESULT_ANNOTATIONS: Final[Mapping[str, Callable[[_Call, int], str | None]]] = {
    "poll": _poll_annotation,
    "ppoll": _poll_annotation,
    "select": _select_annotation,
    "pselect6": _select_annotation,
}


# --- public API ---------------------------------------------------------------


def is_error(ret: int) -> bool:
    """True if a raw return value (rax, signed or not) is -errno."""
    value = _signed64(ret)
    return -abi.MAX_ERRNO <= value < 0


def _signed64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >> 63 else value


def format_call(
    spec: SyscallSpec,
    args: tuple[int, ...],
    read_memory: ReadMemory,
    *,
    max_string: int = DEFAULT_MAX_STRING,
    ret: int | None = None,
) -> str:
    """``name(arg, ...)`` as strace prints it.

    Without ``ret`` the call is seen at entry: output buffers print as
    addresses.  With ``ret`` (the raw return value) it is seen at exit and
    output buffers show what the kernel wrote, if the call succeeded.
    """
    call = _Call(spec, args, read_memory, None if ret is None else _signed64(ret), max_string)
    special = _CALL_FORMATS.get(spec.name)
    if special is not None:
        return f"{spec.name}({special(call)})"
    parts = [call.render(i, arg) for i, arg in enumerate(call.resolved) if arg is not None and not arg.hidden]
    return f"{spec.name}({', '.join(parts)})"


def format_result(
    spec: SyscallSpec,
    args: tuple[int, ...],
    ret: int,
    read_memory: ReadMemory,
    duration: float | None = None,
) -> str:
    """``= 3``, ``= -1 ENOENT (No such file or directory)``, ``= 0x7f...``, ``= ?``."""
    value = _signed64(ret)
    call = _Call(spec, args, read_memory, value, DEFAULT_MAX_STRING)
    kind = resolve_ret(spec, call.args)
    if kind.kind is RetKind.NONE:
        text = "= ?"
    elif is_error(value):
        errno = -value
        name = abi.errno_name(errno) or f"E??? /* {errno} */"
        text = f"= -1 {name} ({abi.errno_message(errno)})"
    else:
        text = "= " + _render_ret(kind, value)
        annotate = _RESULT_ANNOTATIONS.get(spec.name)
        note = annotate(call, value) if annotate is not None else None
        if note:
            text += f" ({note})"
    if duration is not None:
        text += f" <{duration:.6f}>"
    return text


def _render_ret(kind: Ret, value: int) -> str:
    if kind.kind is RetKind.HEX:
        return hex_int(value & 0xFFFFFFFFFFFFFFFF)
    if kind.kind is RetKind.OCTAL:
        return octal(value)
    if kind.kind is RetKind.FLAGS and isinstance(kind.table, FlagSet):
        return f"{hex_int(value)} (flags {render_flags(kind.table, value)})"
    if kind.kind is RetKind.ENUM and kind.table is not None and not isinstance(kind.table, FlagSet):
        name = enum_name(kind.table, value)
        return f"{value} ({name})" if name else str(value)
    return str(value)


def format_line(
    spec: SyscallSpec,
    args: tuple[int, ...],
    ret: int,
    read_memory: ReadMemory,
    *,
    max_string: int = DEFAULT_MAX_STRING,
    duration: float | None = None,
    prefix: str = "",
) -> str:
    """One complete strace line: ``prefix`` + call, padded to column 40, + result."""
    head = prefix + format_call(spec, args, read_memory, max_string=max_string, ret=ret)
    pad = " " * max(RESULT_COLUMN - 1 - len(head), 0)
    return f"{head}{pad} {format_result(spec, args, ret, read_memory, duration)}"


def decode_args(
    spec: SyscallSpec, args: tuple[int, ...], read_memory: ReadMemory, *, ret: int | None = None
) -> dict[str, object]:
    """Argument name -> plain value, for audit records (JSON-ready).

    Integers stay ints (AT_FDCWD and signals by name), flags become lists of
    names, enums names, strings and paths ``str``, argv lists of ``str``,
    sockaddrs dicts; other pointers ``{"addr", "len"}`` plus a decoded
    ``value`` for structs this module knows.  Arguments the call does not
    use for these values are left out.
    """
    call = _Call(spec, args, read_memory, None if ret is None else _signed64(ret), DEFAULT_MAX_STRING)
    return {arg.name: call.value(i, arg) for i, arg in enumerate(call.resolved) if arg is not None}
