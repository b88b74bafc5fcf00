"""/proc as the guest sees it: ``/proc/self`` (and ``/proc/<pid>``, ``/proc/thread-self``)
names the guest process, never the VMM.

``exe`` is the guest program, ``fd/N`` the guest's descriptor N, ``maps``,
``cmdline``, ``environ``, ``auxv``, ``status``, ``stat``, ``comm`` and ``personality``
are generated from the guest's own state; ``mem``, ``pagemap`` and everything else that would
expose the VMM's memory or descriptors is refused.
"""

from __future__ import annotations

import os
import re
import struct

from .abi import Errno
from .uaccess import Fault

#: Entries passed through to the host: they mean the same for the guest.
PASS_THROUGH = {"cwd", "root", "limits", "mounts", "mountinfo", "statm", "io",
                "oom_score_adj", "cgroup", "loginuid", "sessionid", "timerslack_ns"}
GENERATED = {"maps", "cmdline", "environ", "auxv", "status", "comm", "smaps", "stat",
             "personality"}


def _self_prefix() -> re.Pattern[bytes]:
    return re.compile(rb"^/proc/(self|thread-self|%d|%d/task/%d)(/.*)?$"
                      % (os.getpid(), os.getpid(), os.getpid()))


#: What a guest may open under another process's /proc/<pid>: that process may be
#: another guest's VMM, whose memory (mem, pagemap, map_files) and descriptors
#: (fd, fdinfo: its /dev/kvm, VM and vCPU) must stay out of reach.
OTHER_PROCESS_ENTRIES = {"stat", "status", "statm", "cmdline", "comm", "cwd", "root",
                         "limits", "cgroup", "io", "oom_score_adj", "loginuid",
                         "sessionid", "ns", "exe"}
#: /dev names that are symlinks into /proc/self/fd: they must reach the guest's
#: descriptors, not the VMM's.
DEV_FD_ALIASES = {b"/dev/stdin": 0, b"/dev/stdout": 1, b"/dev/stderr": 2}
_PID_PATH = re.compile(rb"^/proc/(\d+)/([^/]+)")


def rewrite(proc, path: bytes) -> bytes:
    """The host path to use for a guest path (the path itself unless it names the
    guest's /proc entries)."""
    if path.startswith(b"/dev/"):
        return _dev_fd(proc, path)
    if not path.startswith(b"/proc/"):
        return path
    normal = os.path.normpath(path)
    match = _self_prefix().match(normal)
    if match is None:
        other = _PID_PATH.match(normal)
        if other is not None and other.group(2).decode(errors="replace") not in OTHER_PROCESS_ENTRIES:
            raise Fault(Errno.EACCES)
        return path
    rest = (match.group(2) or b"").lstrip(b"/").decode("utf-8", "surrogateescape")
    if rest == "":
        return path
    head, _, tail = rest.partition("/")
    if head == "exe" and not tail:
        return proc.exe.encode()
    if head == "fd" and not tail:
        return proc.fd_directory()
    if head == "fd" and tail:
        if not tail.isdigit() or proc.fds.host(int(tail)) is None:
            raise Fault(Errno.ENOENT)
        return f"/proc/self/fd/{proc.fds.host(int(tail))}".encode()
    if head in GENERATED and not tail:
        return proc.transient_file(generate(proc, head))
    if head in PASS_THROUGH:
        return path
    raise Fault(Errno.EACCES)


def _dev_fd(proc, path: bytes) -> bytes:
    normal = os.path.normpath(path)
    if normal in DEV_FD_ALIASES:
        number = DEV_FD_ALIASES[normal]
    elif normal.startswith(b"/dev/fd/") and normal[8:].isdigit():
        number = int(normal[8:])
    elif normal == b"/dev/fd":
        return proc.fd_directory()
    else:
        return path
    host = proc.fds.host(number)
    if host is None:
        raise Fault(Errno.ENOENT)
    return f"/proc/self/fd/{host}".encode()


def opened_vmm_entry(host_fd: int) -> bool:
    """True when a descriptor the host opened for the guest is one of the VMM's own
    /proc entries outside what the guest may see (reached through a symlink the
    guest planted, for example): checked on what was opened, so no race helps."""
    try:
        target = os.readlink(f"/proc/self/fd/{host_fd}")
    except OSError:
        return False
    match = re.match(r"^/proc/(%d)(?:/task/\d+)?(?:/([^/]+))?" % os.getpid(), target)
    if match is None:
        return False
    return match.group(2) not in PASS_THROUGH


def readlink(proc, path: bytes) -> bytes | None:
    """The target of a /proc symlink of the guest, or None if ``path`` is not one."""
    if not path.startswith(b"/proc/"):
        return None
    match = _self_prefix().match(os.path.normpath(path))
    if match is None or match.group(2) is None:
        return None
    rest = match.group(2).lstrip(b"/").decode()
    if rest == "exe":
        return proc.exe.encode()
    if rest.startswith("fd/"):
        number = rest[3:]
        host = proc.fds.host(int(number)) if number.isdigit() else None
        if host is None:
            raise Fault(Errno.ENOENT)
        return os.readlink(f"/proc/self/fd/{host}").encode()
    return None


def generate(proc, entry: str) -> bytes:
    if entry == "maps" or entry == "smaps":
        return proc.mm.maps_text().encode()
    if entry == "cmdline":
        return b"".join(arg + b"\0" for arg in proc.argv)
    if entry == "environ":
        return b"".join(env + b"\0" for env in proc.envp)
    if entry == "auxv":
        return b"".join(struct.pack("<QQ", key, value) for key, value in proc.auxv)
    if entry == "comm":
        return proc.comm + b"\n"
    if entry == "personality":
        return b"%08x\n" % proc.personality
    if entry == "status":
        return _status(proc)
    if entry == "stat":
        return _stat(proc)
    raise Fault(Errno.ENOENT)


def _stat(proc) -> bytes:
    """The host's /proc/self/stat with the guest's name in field 2."""
    try:
        with open("/proc/self/stat", "rb") as f:
            text = f.read()
    except OSError:
        return b""
    close = text.rfind(b")")
    open_ = text.find(b"(")
    return text[:open_ + 1] + proc.comm + text[close:] if 0 <= open_ < close else text


def _status(proc) -> bytes:
    try:
        with open("/proc/self/status", "rb") as f:
            lines = f.read().splitlines(keepends=True)
    except OSError:
        lines = []
    out = []
    for line in lines:
        if line.startswith(b"Name:"):
            line = b"Name:\t" + proc.comm + b"\n"
        elif line.startswith(b"Threads:"):
            line = b"Threads:\t1\n"
        out.append(line)
    return b"".join(out)
