"""/proc as the guest sees it: ``/proc/self`` (and ``/proc/<pid>``, ``/proc/thread-self``,
``/proc/self/task/<pid>``) names the guest process, never the VMM.

``exe`` is the guest program, ``fd/N`` the guest's descriptor N (and ``fd`` a
directory of them, which readlink names as /proc/<pid>/fd), ``fdinfo/N`` the host's
fdinfo of that descriptor with the guest's numbers, ``task`` a directory holding the
guest's threads; ``maps``, ``cmdline``, ``environ``, ``auxv``, ``status``,
``stat``, ``comm``, ``personality`` and ``smaps`` are generated from the guest's own
state; ``pagemap`` and ``clear_refs`` are *live* files, answered at each read or
write from the guest's page tables (see ``LiveFile``); what is the same for the guest
as for the VMM (its network namespace's ``net``, ``ns``, ``mounts``, ...) is passed
through; ``mem`` and everything else that would expose the VMM's memory or
descriptors is refused.
"""

from __future__ import annotations

import os
import re
import struct
from typing import TYPE_CHECKING, Callable, Iterable

from ..machine.layout import TASK_SIZE
from ..memory import HUGE_PAGE_SIZE, PAGE_SIZE
from . import residency
from .abi import AT_FDCWD, O_CLOEXEC, Errno, ProtFlags, SigHandler
from .sys_resource import RLIM_INFINITY, limits_of
from .thp import HugeAdvice
from .uaccess import Fault

if TYPE_CHECKING:
    from .signals import SignalState

#: Entries passed through to the host: they mean the same for the guest.
PASS_THROUGH = {"cwd", "root", "mounts", "mountinfo", "statm", "io", "oom_score",
                "oom_score_adj", "cgroup", "loginuid", "sessionid", "timerslack_ns",
                "net", "ns"}
GENERATED = {"maps", "cmdline", "environ", "auxv", "status", "comm", "smaps", "stat",
             "personality", "limits"}


def _self_prefix(proc) -> re.Pattern[bytes]:
    """/proc/self and its aliases; group 2 is the entry path below it (a thread's
    directory, /proc/self/task/<tid> for any of the guest's threads, is served as
    the process's)."""
    tids = b"|".join(b"%d" % tid for tid in proc.thread_ids())
    return re.compile(rb"^/proc/(self|thread-self|%d)(?:/task/(?:%s)(?=/|$))?(/.*)?$"
                      % (os.getpid(), tids))


#: What a guest may open under another process's /proc/<pid>: that process may be
#: another guest's VMM, whose memory (mem, pagemap, map_files) and descriptors
#: (fd, fdinfo: its /dev/kvm, VM and vCPU) must stay out of reach.
OTHER_PROCESS_ENTRIES = {"stat", "status", "statm", "cmdline", "comm", "cwd", "root",
                         "limits", "cgroup", "io", "oom_score_adj", "loginuid",
                         "sessionid", "ns", "exe"}
#: /dev names that are symlinks into /proc/self/fd: they must reach the guest's
#: descriptors, not the VMM's.
DEV_FD_ALIASES = {b"/dev/stdin": 0, b"/dev/stdout": 1, b"/dev/stderr": 2}
#: Another process's entry, or one of its threads' (checked as the process's).
_PID_PATH = re.compile(rb"^/proc/(\d+)/(?:task/\d+/)?([^/]+)")


def rewrite(proc, path: bytes) -> bytes:
    """The host path to use for a guest path (the path itself unless it names the
    guest's /proc entries)."""
    if path.startswith(b"/dev/"):
        return _dev_fd(proc, path)
    if not path.startswith(b"/proc/"):
        return path
    normal = os.path.normpath(path)
    match = _self_prefix(proc).match(normal)
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
    if head in DIRECTORIES and not tail:
        return DIRECTORIES[head](proc)
    if head == "fd" and tail:
        if not tail.isdigit() or proc.fds.host(int(tail)) is None:
            raise Fault(Errno.ENOENT)
        return f"/proc/self/fd/{proc.fds.host(int(tail))}".encode()
    if head in GENERATED and not tail:
        return proc.transient_file(generate(proc, head), head)
    if head in LIVE and not tail:
        return proc.live_file(LIVE[head](head))
    if head == "fdinfo" and tail:
        return proc.transient_file(fdinfo(proc, tail), f"fdinfo/{tail}")
    if head in PASS_THROUGH:
        return path
    raise Fault(Errno.EACCES)


#: Symlinks followed before giving up, as the kernel's MAXSYMLINKS.
MAX_SYMLINKS = 40


def proc_landing(path: bytes, dirfd: int | None = None) -> bytes | None:
    """Where the resolution of ``path`` (relative to the host descriptor ``dirfd``,
    or the current directory) enters /proc, by a route ``rewrite`` cannot see: a
    relative path from a /proc directory the guest made its current one (its own,
    or a parent VMM's it inherited at fork), or a symlink planted anywhere. The
    absolute /proc path it reaches, for ``rewrite`` to judge; None when it never
    gets there.
    The kernel resolves every directory on the way (O_PATH), so no route is missed;
    only the last component is followed here, link by link."""
    base = AT_FDCWD if dirfd is None else dirfd
    held: list[int] = []
    try:
        for _ in range(MAX_SYMLINKS):
            parent, name = os.path.split(path)
            try:
                fd = os.open(parent or b".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                             dir_fd=None if parent.startswith(b"/") else base)
            except OSError:
                return None       # the host call fails the same way on its own
            held.append(fd)
            where = os.readlink(f"/proc/self/fd/{fd}").encode()
            if name in (b"", b".", b".."):
                where = os.path.normpath(os.path.join(where, name))
                return where if _in_proc(where) else None
            if _in_proc(where):
                return os.path.join(where, name)
            try:
                path = os.readlink(name, dir_fd=fd)     # the last component a link?
            except OSError:
                return None
            base = fd
        return None
    finally:
        for fd in held:
            os.close(fd)


def _in_proc(path: bytes) -> bool:
    return path == b"/proc" or path.startswith(b"/proc/")


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
    if match is None or match.group(2) is None:
        return False      # not its /proc, or the directory itself (paths from it are rewritten)
    return match.group(2) not in PASS_THROUGH


def readlink(proc, path: bytes) -> bytes | None:
    """The target of a /proc symlink of the guest (or of /dev/fd/N, which leads to
    one), or None if ``path`` is not one."""
    normal = os.path.normpath(path)
    if normal.startswith(b"/dev/fd/"):
        normal = b"/proc/self/fd/" + normal[8:]
    if not normal.startswith(b"/proc/"):
        return None
    match = _self_prefix(proc).match(normal)
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
        return guest_fd_target(proc, host).encode("utf-8", "surrogateescape")
    return None


# -- what the guest's descriptors name ------------------------------------------------

#: The memfd a generated entry is served from is named after the entry, so that
#: readlink of its descriptor can name the entry.
TRANSIENT_PREFIX = "kvmdune-proc:"
_TRANSIENT_TARGET = re.compile(r"^/memfd:%s(.*) \(deleted\)$" % re.escape(TRANSIENT_PREFIX))


def transient_name(entry: str) -> str:
    return TRANSIENT_PREFIX + entry


def guest_fd_target(proc, host_fd: int) -> str:
    """What readlink of the guest's /proc/self/fd/N shows for the host descriptor
    behind it: the host's answer, except for what stands in for a guest /proc entry
    (a scratch directory, a generated file), which is named as that entry."""
    target = os.readlink(f"/proc/self/fd/{host_fd}")
    return guest_view_of_target(target, proc.scratch_dirs)


def guest_view_of_target(target: str, scratch_dirs: dict[str, str],
                         pid: int | None = None) -> str:
    for directory, guest_path in scratch_dirs.items():
        if target == directory or target.startswith(directory + "/"):
            return guest_path + target[len(directory):]
    generated = _TRANSIENT_TARGET.match(target)
    if generated is not None:
        return f"/proc/{os.getpid() if pid is None else pid}/{generated.group(1)}"
    return target


# -- live files -------------------------------------------------------------------------

class LiveFile:
    """A /proc file whose every read or write is answered by the VMM when it happens,
    not from a snapshot taken at open: Linux answers pagemap from the page tables
    of the moment, and a program reads it again and again from one descriptor
    (libgc does, between collections).

    The guest's descriptor is an ordinary memfd (so that dup, fork, lseek, fstat and
    close need nothing special); the forwarder calls ``before_read`` to fill the
    range a read will see and ``after_read`` to empty it again, and hands writes
    to ``write`` instead of the host. Reads and writes on such descriptors are
    never served by the fast path (``Process.adopt_fd``)."""

    def __init__(self, entry: str) -> None:
        self.entry = entry
        # The VMM's own read-write handle: the guest's may be read- or write-only.
        self.fd = os.memfd_create(transient_name(entry), os.MFD_CLOEXEC)

    def before_read(self, proc, offset: int, length: int) -> None:
        """Make [offset, offset+length) of the file hold what a read sees now."""
        raise Fault(Errno.EINVAL)          # Linux: the entry has no read operation

    def after_read(self) -> None:
        os.ftruncate(self.fd, 0)

    def write(self, proc, data: bytes) -> int:
        raise Fault(Errno.EINVAL)          # Linux: the entry has no write operation

    def close(self) -> None:
        os.close(self.fd)


class PagemapFile(LiveFile):
    """/proc/self/pagemap: 8 bytes per page of the user address space, at offset
    vaddr / 4096 * 8 (residency.py makes the entries)."""

    def before_read(self, proc, offset: int, length: int) -> None:
        entry = residency.PAGEMAP_ENTRY_SIZE
        if offset % entry or length % entry:
            raise Fault(Errno.EINVAL)      # as pagemap_read
        first = offset // entry
        last = min(first + length // entry, TASK_SIZE // PAGE_SIZE)
        os.ftruncate(self.fd, 0)           # unmapped pages read as zero
        if first >= last:
            return                         # past the end: the read finds EOF
        os.ftruncate(self.fd, last * entry)
        for page, entries in residency.pagemap_entries(proc.space, proc.mm.vmas, first,
                                                       last - first):
            os.pwrite(self.fd, entries, page * entry)


#: clear_refs_write copies at most PROC_NUMBUF - 1 bytes.
CLEAR_REFS_MAX_INPUT = 12
_INT_TEXT = re.compile(rb"[+-]?[0-9]+")
_INT_MAX = (1 << 31) - 1


class ClearRefsFile(LiveFile):
    """/proc/self/clear_refs: "1" clears the accessed bits (Referenced:), "2" those
    of anonymous mappings, "3" those of file-backed ones, "4" the soft-dirty bits,
    "5" resets the peak RSS; anything else is EINVAL, as Linux (kstrtoint's ERANGE
    for a number beyond an int)."""

    def write(self, proc, data: bytes) -> int:
        data = data[:CLEAR_REFS_MAX_INPUT]
        text = data.strip(b" \t\n\v\f\r")
        if not _INT_TEXT.fullmatch(text):
            raise Fault(Errno.EINVAL)
        value = int(text)
        if not -_INT_MAX - 1 <= value <= _INT_MAX:
            raise Fault(Errno.ERANGE)
        try:
            request = residency.ClearRefs(value)
        except ValueError:
            raise Fault(Errno.EINVAL) from None
        residency.clear_refs(proc.mm, request)
        return len(data)


#: Entries served as live files.
LIVE: dict[str, type[LiveFile]] = {"pagemap": PagemapFile, "clear_refs": ClearRefsFile}


# -- directories ------------------------------------------------------------------------

def fd_directory(proc) -> bytes:
    """/proc/self/fd: a symlink per guest descriptor, named by its guest number,
    and one for the descriptor about to be opened on the directory itself."""
    guest_path = f"/proc/{os.getpid()}/fd"
    directory = proc.scratch_directory(guest_path)
    for fd, entry in sorted(proc.fds.entries.items()):
        try:
            os.symlink(guest_fd_target(proc, entry.host), os.path.join(directory, str(fd)))
        except OSError:
            pass
    upcoming = proc.fds.lowest_free()   # the descriptor the open will return
    if upcoming is not None:
        os.symlink(guest_path, os.path.join(directory, str(upcoming)))
    return directory.encode()


def fdinfo_directory(proc) -> bytes:
    """/proc/self/fdinfo: an entry per guest descriptor (and the upcoming one)."""
    directory = proc.scratch_directory(f"/proc/{os.getpid()}/fdinfo")
    numbers = set(proc.fds.entries)
    upcoming = proc.fds.lowest_free()
    if upcoming is not None:
        numbers.add(upcoming)
    for fd in numbers:
        with open(os.path.join(directory, str(fd)), "wb"):
            pass
    return directory.encode()


def task_directory(proc) -> bytes:
    """/proc/self/task: a directory per guest thread, named by its id (never the
    VMM's own threads)."""
    pid = os.getpid()
    directory = proc.scratch_directory(f"/proc/{pid}/task")
    for tid in proc.thread_ids():
        os.mkdir(os.path.join(directory, str(tid)))
    return directory.encode()


#: Directories under /proc/self served from a scratch directory of their own.
DIRECTORIES: dict[str, Callable[..., bytes]] = {
    "fd": fd_directory, "fdinfo": fdinfo_directory, "task": task_directory}


# -- fdinfo --------------------------------------------------------------------------------

def fdinfo(proc, number_text: str) -> bytes:
    """/proc/self/fdinfo/N for guest descriptor N: the host's fdinfo of the descriptor
    behind it, in guest terms."""
    entry = proc.fds.entries.get(int(number_text)) if number_text.isdigit() else None
    if entry is None:
        raise Fault(Errno.ENOENT)
    with open(f"/proc/self/fdinfo/{entry.host}", "rb") as f:
        text = f.read()
    guest_numbers: dict[int, int] = {}
    for fd, other in sorted(proc.fds.entries.items(), reverse=True):
        guest_numbers[other.host] = fd         # the lowest guest number wins
    return guest_fdinfo(text, entry.cloexec, guest_numbers.get)


_FDINFO_FLAGS = re.compile(rb"^(flags:\s*)([0-7]+)$")
_FDINFO_TARGET_FD = re.compile(rb"^(tfd:\s*)(\d+)(.*)$")


def guest_fdinfo(text: bytes, cloexec: bool, guest_fd_of: Callable[[int], int | None]) -> bytes:
    """Rewrite the host's fdinfo text for the guest: ``flags`` carry the guest's
    close-on-exec (every host descriptor of the VMM has it), and an epoll's ``tfd``
    lines name the watched descriptors by guest number; a watched descriptor the
    guest has no number for is left out rather than shown by its host number."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip(b"\n")
        flags = _FDINFO_FLAGS.match(body)
        target = _FDINFO_TARGET_FD.match(body)
        if flags is not None:
            value = int(flags.group(2), 8) & ~O_CLOEXEC
            value |= O_CLOEXEC if cloexec else 0
            line = flags.group(1) + b"0%o\n" % value
        elif target is not None:
            guest = guest_fd_of(int(target.group(2)))
            if guest is None:
                continue
            width = len(target.group(2))
            line = target.group(1) + b"%*d" % (width, guest) + target.group(3) + b"\n"
        out.append(line)
    return b"".join(out)


def generate(proc, entry: str) -> bytes:
    if entry == "maps":
        return proc.mm.maps_text().encode()
    if entry == "smaps":
        return _smaps(proc)
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
    if entry == "limits":
        return _limits(proc)
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


#: Columns of /proc/PID/limits: the name (25 wide), soft and hard (20 each), units.
_LIMIT_NAME_END, _LIMIT_UNITS_START = 26, 68


def _limits(proc) -> bytes:
    """The host's /proc/self/limits (names and units, one line per resource in
    order) with the guest's own values, which are not the VMM's."""
    try:
        with open("/proc/self/limits", "rb") as f:
            lines = f.read().splitlines(keepends=True)
    except OSError:
        return b""
    limits = limits_of(proc)
    out = lines[:1]
    for resource_id, line in enumerate(lines[1:]):
        if resource_id in limits and len(line) > _LIMIT_UNITS_START:
            fields = b"".join(b"%-20s " % (b"unlimited" if value == RLIM_INFINITY else
                                           str(value).encode())
                              for value in limits[resource_id])
            line = line[:_LIMIT_NAME_END] + fields + line[_LIMIT_UNITS_START:]
        out.append(line)
    return b"".join(out)


def _status(proc) -> bytes:
    """The host's /proc/self/status with the guest's name, its threads, its signal
    state (the VMM's own handlers and mask are not the program's) and its resident
    set from its own page tables (VmHWM, VmRSS, RssAnon, RssFile, RssShmem) and
    its sizes from its own mappings (VmPeak, VmSize, VmData, VmStk, VmExe, VmLib;
    VmLck, VmPin, VmPTE and VmSwap are still the VMM's)."""
    try:
        with open("/proc/self/status", "rb") as f:
            lines = f.read().splitlines(keepends=True)
    except OSError:
        lines = []
    memory = _rss_lines(proc)
    signals = _signal_lines(proc.signals)
    out = []
    for line in lines:
        key = line.split(b":", 1)[0]
        if key == b"Name":
            line = b"Name:\t" + proc.comm + b"\n"
        elif key == b"Threads":
            line = b"Threads:\t%d\n" % len(proc.thread_ids())
        elif key in memory:
            line = b"%s:\t%8d kB\n" % (key, memory[key])
        elif key in signals:
            line = b"%s:\t%016x\n" % (key, signals[key])
        out.append(line)
    return b"".join(out)


def _signal_lines(state: SignalState) -> dict[bytes, int]:
    """status's signal sets for the calling thread, as bit N-1 for signal N."""
    def bits(signals: Iterable[int]) -> int:
        return sum(1 << (signo - 1) for signo in set(signals))

    actions = state.actions.items()
    return {b"SigPnd": bits(state.pending), b"ShdPnd": bits(state.shared.pending),
            b"SigBlk": state.mask,
            b"SigIgn": bits(s for s, a in actions if a.handler == SigHandler.SIG_IGN),
            b"SigCgt": bits(s for s, a in actions
                            if a.handler not in (SigHandler.SIG_IGN, SigHandler.SIG_DFL))}


def _rss_lines(proc) -> dict[bytes, int]:
    """status's resident-set lines for the guest, in kB."""
    if proc.mm is None:
        return {}
    now = residency.rss(proc.space, proc.mm.vmas)
    # The peak is noted before each unmap, as Linux does; a resident set the program
    # has seen is noted too, so that VmHWM never falls below a VmRSS it read (frames
    # the VMM drops by other ways than an unmap would otherwise lower it).
    proc.mm.rss_peak_pages = max(proc.mm.rss_peak_pages, now.total)
    totals = proc.mm.vm_totals(program=proc.exe)
    # VmPeak as VmHWM's: never below a size the program has seen (Linux notes it at
    # each unmap too; kvmdune only when it is read).
    proc.mm.vm_peak_pages = max(proc.mm.vm_peak_pages, totals.size)
    page_kb = PAGE_SIZE // 1024
    return {b"VmHWM": proc.mm.rss_peak_pages * page_kb,
            b"VmRSS": now.total * page_kb, b"RssAnon": now.anonymous * page_kb,
            b"RssFile": now.file * page_kb, b"RssShmem": now.shmem * page_kb,
            b"VmPeak": proc.mm.vm_peak_pages * page_kb, b"VmSize": totals.size * page_kb,
            b"VmData": totals.data * page_kb, b"VmStk": totals.stack * page_kb,
            b"VmExe": totals.program_code * page_kb,
            b"VmLib": (totals.code - totals.program_code) * page_kb}


#: smaps' counters after Size (Linux 6.x's order and names); those kvmdune never
#: has (hugetlb and file huge pages, swap, KSM, locked) are zero.
_SMAPS_FIELDS = ("KernelPageSize", "MMUPageSize", "Rss", "Pss", "Pss_Dirty", "Shared_Clean",
                 "Shared_Dirty", "Private_Clean", "Private_Dirty", "Referenced",
                 "Anonymous", "KSM", "LazyFree", "AnonHugePages", "ShmemPmdMapped",
                 "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb", "Swap", "SwapPss",
                 "Locked")


def _smaps(proc) -> bytes:
    """/proc/self/smaps: each mapping's maps line, its counters from the page tables
    (residency.py says what each means here) and its VmFlags."""
    page_kb = PAGE_SIZE // 1024
    out = []
    for vma in proc.mm.vmas:
        usage = residency.vma_usage(proc.space, vma)
        values = {"KernelPageSize": page_kb, "MMUPageSize": page_kb,
                  "Rss": usage.rss * page_kb, "Pss": usage.rss * page_kb,
                  "Pss_Dirty": usage.private_dirty * page_kb,
                  "Private_Clean": usage.private_clean * page_kb,
                  "Private_Dirty": usage.private_dirty * page_kb,
                  "Referenced": usage.referenced * page_kb,
                  "Anonymous": usage.anonymous * page_kb,
                  "AnonHugePages": usage.anonymous_huge * HUGE_PAGE_SIZE // 1024}
        out.append(vma.format() + "\n")
        out.append(f"{'Size:':<16}{(vma.end - vma.start) // 1024:>8} kB\n")
        out.extend(f"{name + ':':<16}{values.get(name, 0):>8} kB\n" for name in _SMAPS_FIELDS)
        out.append(f"THPeligible:    {int(_thp_eligible(proc.mm, vma))}\n")
        out.append(f"VmFlags: {' '.join(_vm_flags(vma))} \n")
    return "".join(out).encode()


#: VmFlags of madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE) (after "ac", before "sd").
_HUGE_ADVICE_FLAGS = {HugeAdvice.HUGEPAGE: ["hg"], HugeAdvice.NOHUGEPAGE: ["nh"]}


def _thp_eligible(mm, vma) -> bool:
    """smaps' THPeligible: a fault in the mapping may map a 2 MiB page, and a whole
    2 MiB-aligned block fits in it (Linux checks the last one)."""
    last_block = (vma.end - HUGE_PAGE_SIZE) // HUGE_PAGE_SIZE * HUGE_PAGE_SIZE
    return vma.end >= HUGE_PAGE_SIZE and last_block >= vma.start and mm.thp_allows(vma)


def _vm_flags(vma) -> list[str]:
    """The two-letter VmFlags of a mapping (fs/proc/task_mmu.c: show_smap_vma_flags)."""
    flags = [name for name, bit in (("rd", ProtFlags.PROT_READ), ("wr", ProtFlags.PROT_WRITE),
                                    ("ex", ProtFlags.PROT_EXEC)) if vma.prot & bit]
    if vma.shared:
        flags.append("sh")
    flags += ["mr", "mw", "me"]
    if vma.shared:
        flags.append("ms")
    if vma.grows_down:
        flags.append("gd")
    if not vma.shared and vma.prot & ProtFlags.PROT_WRITE:
        flags.append("ac")
    flags += _HUGE_ADVICE_FLAGS.get(vma.huge_advice, [])
    if vma.soft_dirty:
        flags.append("sd")
    return flags
