"""The sandbox's enforcement: a ``Gate`` the Linux personality consults before every
system call, compiled from a ``Policy``, and the audit log.

Paths are checked by what they resolve to (symlinks followed by the host, relative
paths against the guest's cwd or directory descriptor), and every descriptor the
host opens for the guest is checked again on what was actually opened, so swapping
a symlink after the check gains nothing for opens.
"""

from __future__ import annotations

import enum
import fcntl
import hashlib
import ipaddress
import json
import mmap
import os
import socket
import stat
import struct
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from ..linux import strace
from ..linux.abi import AT_FDCWD, Errno
from ..linux.exit_status import ExitStatus
from ..linux.gate import ALLOW_RULE, CallRule, Gate, RuleKind
from ..linux.syscall_table import BY_NAME, SYSCALLS, ArgKind, Dep, resolve_args
from ..linux.uaccess import Fault
from ..machine import Stop
from ..memory import READ, GuestFault
from .confine import Confinement, ConfinementError, for_policy
from .policy import NetMode, OnDeny, Policy

O_ACCMODE, O_WRONLY, O_RDWR = 3, 1, 2
O_CREAT, O_TRUNC, O_APPEND, O_TMPFILE = 0o100, 0o1000, 0o2000, 0o20200000
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
SIGSYS = 31

#: Calls that only read what a path names (or its metadata).
READ_PATH_CALLS = {"stat", "lstat", "newfstatat", "statx", "access", "faccessat",
                   "faccessat2", "readlink", "readlinkat", "getxattr", "lgetxattr",
                   "listxattr", "llistxattr", "statfs", "chdir", "getcwd", "inotify_add_watch",
                   "fanotify_mark"}
#: Calls that change what a path names.
WRITE_PATH_CALLS = {"mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
                    "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmodat",
                    "fchmodat2", "chown", "lchown", "fchownat", "utime", "utimes", "futimesat",
                    "utimensat", "truncate", "mknod", "mknodat", "setxattr", "lsetxattr",
                    "removexattr", "lremovexattr", "acct", "swapon"}
#: Calls that do not follow a symlink in the last component.
NOFOLLOW_CALLS = {"lstat", "readlink", "readlinkat", "unlink", "unlinkat", "rmdir",
                  "rename", "renameat", "renameat2", "lchown", "symlink", "symlinkat",
                  "link", "linkat", "mkdir", "mkdirat", "mknod", "mknodat",
                  "lgetxattr", "llistxattr", "lsetxattr", "lremovexattr"}
EXEC_CALLS = {"execve", "execveat"}
#: Calls that read a path's metadata and nothing else (a subset of READ_PATH_CALLS).
STAT_CALLS = {"stat", "lstat", "newfstatat", "statx"}
#: Calls that describe one path without opening or listing it: allowed on the
#: ancestors of the read roots too (realpath(3) reads the link of every component).
METADATA_CALLS = STAT_CALLS | {"access", "faccessat", "faccessat2", "readlink", "readlinkat"}
#: Calls the fast path may serve beneath the read roots (BENEATH rules).
BENEATH_CALLS = STAT_CALLS | {"open", "openat", "getxattr", "lgetxattr", "listxattr",
                              "llistxattr", "readlink", "readlinkat"}
#: What the host answers for a path that cannot be looked up: its own answer to the
#: guest, not a decision of the policy.
LOOKUP_ERRORS = {Errno.ENOENT, Errno.ENOTDIR, Errno.ELOOP, Errno.ENAMETOOLONG}
OPEN_CALLS = {"open", "openat", "creat"}
#: Terminal and descriptor-state ioctls a sandboxed program may use.
IOCTL_ALLOWED = {0x5401: "TCGETS", 0x5402: "TCSETS", 0x5403: "TCSETSW", 0x5404: "TCSETSF",
                 0x5413: "TIOCGWINSZ", 0x5414: "TIOCSWINSZ", 0x540F: "TIOCGPGRP",
                 0x5410: "TIOCSPGRP", 0x5429: "TIOCGSID", 0x541B: "FIONREAD",
                 0x5421: "FIONBIO", 0x5451: "FIOCLEX", 0x5450: "FIONCLEX"}
SOCKET_CALLS = {"connect", "bind", "sendto"}
KILL_CALLS = {"kill": 0, "tkill": 0, "tgkill": 1}
#: Calls refused in every profile but open/trace (they change who the process is).
#: (set*id calls are allowed: run as an unprivileged user they can only give rights up.)
IDENTITY_CALLS = {"setns", "unshare", "chroot", "pivot_root", "mount", "umount2", "openat2",
                  "open_by_handle_at", "name_to_handle_at", "memfd_secret", "setsid",
                  "setpgid"}


class Decision(str, enum.Enum):
    ALLOW = "allow"
    DENY = "deny"     # the policy refused it
    ERROR = "error"   # allowed, but the host's own lookup failed (ENOENT, ...): its answer


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    rule: str
    errno: int = 0
    #: What would allow a denied call (``--allow-read /etc/x``), for the notice.
    hint: str = ""

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


def allow(rule: str) -> Verdict:
    return Verdict(Decision.ALLOW, rule)


def deny(rule: str, errno: int, hint: str = "") -> Verdict:
    return Verdict(Decision.DENY, rule, errno, hint)


def _calls_with_paths() -> frozenset[int]:
    """The numbers of the calls that take a path (the only ones path rules concern)."""
    def kinds(slot):
        if isinstance(slot, Dep):
            return {c.kind for _, c in slot.cases if c is not None} | (
                {slot.default.kind} if slot.default is not None else set())
        return {slot.kind}

    return frozenset(spec.number for spec in SYSCALLS.values()
                     if any(ArgKind.PATH in kinds(slot) for slot in spec.args))


def _under(path: str, roots: tuple[str, ...]) -> str | None:
    """The root ``path`` lies beneath, if any."""
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return root
    return None


def _root_of(real: str, roots: tuple[str, ...]) -> str | None:
    """The root ``real`` lies under, by its own name or, for the process's own
    /proc/PID, by the /proc/self name a policy gives it; None if none."""
    root = _under(real, roots)
    own = _as_proc_self(real) if root is None else None
    return _under(own, roots) if own is not None else root


def _as_proc_self(real: str) -> str | None:
    """``real`` with the process's own /proc/PID spelt /proc/self, as a policy can
    name it (each process of a sandbox has a pid of its own; the VMM's pid is the
    guest's), or None when it is not under the process's own /proc/PID."""
    own = f"/proc/{os.getpid()}"
    if real == own or real.startswith(own + "/"):
        return "/proc/self" + real[len(own):]
    return None


class SharedSeen:
    """A set of strings shared by the sandbox's processes (an anonymous shared
    mapping made before the first fork), so that a note is given once per sandbox,
    not once per process. Two processes adding the same string at the same moment
    may both see it as new: a repeated note, nothing worse."""

    SLOTS = 8192
    PROBES = 32

    def __init__(self) -> None:
        self._table = mmap.mmap(-1, self.SLOTS * 8)

    def add(self, text: str) -> bool:
        """Add ``text``; whether it was new."""
        key = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"),
                                             digest_size=8).digest(), "little") or 1
        start = key % self.SLOTS
        for probe in range(self.PROBES):
            offset = (start + probe) % self.SLOTS * 8
            found = int.from_bytes(self._table[offset:offset + 8], "little")
            if found == key:
                return False
            if found == 0:
                self._table[offset:offset + 8] = key.to_bytes(8, "little")
                return True
        return True      # a full neighbourhood: say it again rather than never


def _ancestors(paths) -> frozenset[str]:
    """Every directory above ``paths`` (and above what they resolve to), "/" included."""
    found = set()
    for path in paths:
        for name in {path, os.path.realpath(path)}:
            while name not in ("/", ""):
                name = os.path.dirname(name)
                found.add(name)
    return frozenset(found)


class SandboxGate(Gate):
    """The policy's verdict on each call. ``notices`` receives, once per path or
    call, a line saying what was denied and which option would allow it (None: say
    nothing). With ``confine``, the VMM process confines itself (confine.py) the
    first time the gate is consulted: after the run's set-up (KVM open, privileges
    dropped) and before the guest's first system call is served -- ``rules`` comes
    first when the fast path starts, before its thread; ``check`` otherwise."""

    def __init__(self, policy: Policy, audit: TextIO | None = None,
                 notices: Callable[[str], None] | None = None,
                 confine: bool = False) -> None:
        self.policy = policy
        self.audit = audit
        self.notices = notices
        self._noticed = SharedSeen() if notices is not None else None
        self.read_roots = tuple(policy.read) + tuple(policy.write) + tuple(policy.execute)
        self.write_roots = tuple(policy.write)
        self.exec_roots = tuple(policy.execute)
        self._above_read_roots = _ancestors(self.read_roots)
        self.group = os.getpgrp()
        self._opening: str | None = None     # the access the current open was allowed for
        self._with_paths = _calls_with_paths()
        # Built now: after the drop of privileges the interpreter's files may be
        # out of reach, so applying it must need no import.
        self._confinement = self.confinement() if confine else None

    def confinement(self) -> Confinement:
        """What the VMM may do on the host under this policy (confine.py)."""
        denied = [spec.name for spec in SYSCALLS.values()
                  if (verdict := self._by_number(spec)) is not None and not verdict.allowed]
        ioctl = self._by_number(BY_NAME["ioctl"])
        return for_policy(self.policy, denied, any_ioctl=ioctl is not None and ioctl.allowed,
                          guest_ioctls=IOCTL_ALLOWED)

    # -- the gate ------------------------------------------------------------------------
    def check(self, proc, spec, event):
        self._confine()
        if spec is None:
            return None
        verdict = self._decide(proc, spec, event.args)
        if self.audit is not None and (not verdict.allowed or self.policy.audit_everything):
            self._audit(proc, spec, event.args, verdict)
        if verdict.allowed:
            return None
        if verdict.decision is Decision.DENY:
            self._notice(spec.name, verdict)
        if self.policy.on_deny is OnDeny.KILL and verdict.decision is Decision.DENY:
            proc.log(f"kvmdune sandbox: {spec.name} denied by {verdict.rule}: killed by SIGSYS")
            return Stop(value=ExitStatus(signal=SIGSYS))
        return -verdict.errno

    def rules(self) -> dict[int, CallRule]:
        """Every call whose verdict its number alone decides (``_by_number``), as data
        for the fast path. What must be audited, noticed or kill the process stays
        here."""
        self._confine()
        policy = self.policy
        if self.audit is not None and policy.audit_everything:
            return {}
        rules = {}
        for number, spec in SYSCALLS.items():
            verdict = self._by_number(spec)
            if verdict is None:
                if spec.name in BENEATH_CALLS and not policy.all_paths:
                    # Reading metadata, or opening for reading, is allowed wherever it
                    # resolves beneath a read root (_paths): the kernel can check that
                    # much by itself. (The fast path serves only reading opens so.)
                    rules[number] = CallRule(RuleKind.BENEATH, roots=self.read_roots)
                continue
            if verdict.allowed:
                rules[number] = ALLOW_RULE
            elif (self.audit is None and policy.on_deny is not OnDeny.KILL
                  and (self.notices is None or not verdict.hint)):
                rules[number] = CallRule(RuleKind.DENY, verdict.errno)
        return rules

    def _confine(self) -> None:
        """Apply the confinement once; a VMM that cannot be confined does not run
        the guest (fail closed)."""
        confinement, self._confinement = self._confinement, None
        if confinement is None:
            return
        try:
            confinement.apply()
        except ConfinementError as exc:
            os.write(2, f"kvmdune sandbox: cannot confine the VMM process: {exc.strerror} "
                        f"({os.strerror(exc.errno)}); --no-confine runs without this "
                        "second line of defence\n".encode())
            os._exit(126)

    def _notice(self, name: str, verdict: Verdict) -> None:
        """Say once per path (or call) what the policy denied and what would allow it."""
        if self.notices is None or not verdict.hint:
            return
        if not self._noticed.add(verdict.hint):
            return
        self.notices(f"kvmdune sandbox: {name} denied: {verdict.rule}; {verdict.hint} "
                     "would allow it (--quiet: no such notes)")

    def check_opened(self, proc, host_fd: int) -> int | None:
        access, self._opening = self._opening, None
        if self.policy.all_paths or access is None:
            return None
        try:
            target = os.readlink(f"/proc/self/fd/{host_fd}")
        except OSError:
            return -Errno.EACCES
        if not target.startswith("/"):
            return None      # a pipe, socket or anonymous object: no path to check
        roots = self.write_roots if access == "write" else self.read_roots
        if target.startswith("/memfd:") or _root_of(target, roots):
            return None
        return -Errno.EACCES

    def guest_may_write(self, path: str) -> bool:
        real = os.path.realpath(path)
        return self.policy.all_paths or any(_under(candidate, self.write_roots) is not None
                                            for candidate in (path, real))

    def check_passed(self, proc, host_fd: int) -> int | None:
        """A descriptor passed in at start, checked as if opened for the access its
        mode gives (read-only: the read roots; writable: the write roots)."""
        try:
            mode = fcntl.fcntl(host_fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            return -Errno.EBADF
        if stat.S_ISSOCK(os.fstat(host_fd).st_mode):
            return self._passed_socket(host_fd)
        self._opening = "read" if mode == os.O_RDONLY else "write"
        return self.check_opened(proc, host_fd)

    def _passed_socket(self, host_fd: int) -> int | None:
        """A passed socket as if the guest had made and connected it: its family by
        the network rule; under ``loopback``, an IP socket's peer (or, unconnected,
        its own address) must be a loopback one."""
        with socket.socket(fileno=os.dup(host_fd)) as sock:
            verdict = self._socket(sock.family)
            if not verdict.allowed:
                return -verdict.errno
            if self.policy.net is NetMode.LOOPBACK and sock.family in (socket.AF_INET,
                                                                       socket.AF_INET6):
                try:
                    address = sock.getpeername()[0]
                except OSError:
                    address = sock.getsockname()[0]
                if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
                    return -Errno.EACCES
        return None

    # -- decisions -------------------------------------------------------------------------
    def _by_number(self, spec) -> Verdict | None:
        """The verdict the call's number alone decides; None when its arguments do."""
        name = spec.name
        policy = self.policy
        if name in policy.deny_syscalls:
            return deny(f"syscalls.deny {name}", Errno.EPERM)
        if name in policy.allow_syscalls or policy.all_paths and policy.net is NetMode.ALL:
            return allow("allowed")
        if name in IDENTITY_CALLS:
            return deny(f"profile {policy.profile.value}: {name} changes identity",
                        Errno.EPERM, f"--allow-syscall {name}")
        if name in KILL_CALLS or name in ("ioctl", "socket") or name in SOCKET_CALLS:
            return None
        if not policy.all_paths and spec.number in self._with_paths:
            return None
        return allow("allowed")

    def _decide(self, proc, spec, args) -> Verdict:
        verdict = self._by_number(spec)
        if verdict is not None:
            return verdict
        name = spec.name
        policy = self.policy
        if name in KILL_CALLS:
            return self._kill(args, KILL_CALLS[name])
        if name == "ioctl":
            request = args[1] & 0xFFFF_FFFF
            if request not in IOCTL_ALLOWED:
                return deny(f"ioctl {request:#x} is not on the allow-list", Errno.EPERM,
                            "--allow-syscall ioctl")
        if name == "socket":
            return self._socket(args[0])
        if name in SOCKET_CALLS:
            return self._address(proc, name, args)
        if not policy.all_paths and spec.number in self._with_paths:
            return self._paths(proc, spec, args)
        return allow("allowed")

    def _kill(self, args, target_index: int) -> Verdict:
        pid = args[target_index] & 0xFFFF_FFFF
        pid = pid - (1 << 32) if pid >= 1 << 31 else pid
        if pid == os.getpid():
            return allow("signal to itself")
        if pid > 0:
            try:
                if os.getpgid(pid) == self.group:
                    return allow("signal inside the sandbox")
            except OSError:
                return deny("no such process in the sandbox", Errno.ESRCH)
        return deny(f"signals only reach the sandbox's own processes (pid {pid})",
                       Errno.EPERM)

    def _socket(self, family: int) -> Verdict:
        net = self.policy.net
        if net is NetMode.ALL:
            return allow("network all")
        if net is NetMode.LOOPBACK and family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
            return allow("network loopback")
        wider = "--net loopback" if net is NetMode.NONE and family in (
            socket.AF_UNIX, socket.AF_INET, socket.AF_INET6) else "--net all"
        return deny(f"network {net.value}: socket family {family}", Errno.EACCES, wider)

    def _address(self, proc, name: str, args) -> Verdict:
        if self.policy.net is NetMode.ALL:
            return allow("network all")
        address, length = (args[4], args[5]) if name == "sendto" else (args[1], args[2])
        if address == 0:
            return allow("no address")
        try:
            raw = proc.space.read(address, min(length, 128), READ)
        except GuestFault:
            return allow("unreadable address: EFAULT follows")
        family = struct.unpack_from("<H", raw)[0] if len(raw) >= 2 else -1
        if family == socket.AF_INET and len(raw) >= 8:
            host = ipaddress.IPv4Address(raw[4:8])
            ok = host.is_loopback
        elif family == socket.AF_INET6 and len(raw) >= 24:
            host = ipaddress.IPv6Address(raw[8:24])
            ok = host.is_loopback or (host.ipv4_mapped is not None and host.ipv4_mapped.is_loopback)
        elif family == socket.AF_UNIX:
            path = raw[2:].split(b"\0")[0].decode("utf-8", "surrogateescape")
            if not path:
                return deny("abstract unix sockets are outside the file system",
                            Errno.EACCES, "--net all")
            resolved = os.path.realpath(os.path.join(os.getcwd(), path))
            roots = self.write_roots if name == "bind" else self.read_roots
            ok = self.policy.all_paths or _under(resolved, roots) is not None
            host = resolved
        else:
            return deny(f"address family {family} is not loopback", Errno.EACCES,
                        "--net all")
        if ok:
            return allow(f"loopback address {host}")
        hint = f"--allow-{'write' if name == 'bind' else 'read'} {host}" \
            if family == socket.AF_UNIX else "--net all"
        return deny(f"network loopback: {host} is not allowed", Errno.EACCES, hint)

    def _paths(self, proc, spec, args) -> Verdict:
        name = spec.name
        resolved = resolve_args(spec, args)
        access = self._access(name, args)
        verdict = allow("no path")
        for index, arg in enumerate(resolved):
            if arg is None or arg.kind is not ArgKind.PATH or args[index] == 0:
                continue
            if name in ("symlink", "symlinkat") and index == 0:
                continue   # the link's target is checked when it is followed
            dirfd = self._dirfd_for(resolved, index, args)
            try:
                raw = proc.space.read_cstring(args[index], 4096)
            except GuestFault:
                return allow("unreadable path: EFAULT follows")
            original = raw
            if raw == b"":
                if dirfd is not None:
                    continue   # AT_EMPTY_PATH: the descriptor itself, already the guest's
                # Linux: ENOENT. Never resolved against the cwd: that would pin (and
                # let the call act on) the working directory itself.
                return Verdict(Decision.ERROR, "an empty path", Errno.ENOENT)
            try:
                rewritten = proc.host_path(raw)
                if rewritten == raw:
                    rewritten = original
            except Fault as exc:
                return deny(f"{raw.decode(errors='replace')}: the process's own "
                            "/proc refuses it", exc.errno)
            except OSError as exc:
                # The VMM could not make what describes it (a confined VMM has no
                # scratch directory for /proc/self/fd): refused, as outside paths are.
                return deny(f"{raw.decode(errors='replace')}: {exc.strerror}", Errno.EACCES)
            if rewritten != raw:
                # /proc/self/exe, fd/N, /dev/fd/N: what they name for the guest counts.
                target = self._guest_target(rewritten)
                if target is None:
                    continue       # a pipe, socket or generated file of the guest's own
                raw = target.encode("utf-8", "surrogateescape")
            path = self._absolute(proc, raw, dirfd)
            if path is None:
                return deny("a path relative to an unknown descriptor", Errno.EBADF)
            follow = name not in NOFOLLOW_CALLS and not self._nofollow_flag(resolved, args)
            metadata = name in METADATA_CALLS
            verdict = self._allowed(path, access, follow=follow, metadata=metadata)
            if not verdict.allowed:
                return verdict
            if rewritten == original:
                verdict = self._pin(proc, original, path, access, follow, metadata)
                if not verdict.allowed:
                    return verdict
        if name in OPEN_CALLS and verdict.allowed:
            self._opening = access
        return verdict

    def _pin(self, proc, original: bytes, path: str, access: str, follow: bool,
             metadata: bool = False) -> Verdict:
        """Hold what was checked so that the host call reaches exactly it: the file
        itself (an O_PATH descriptor) when the call follows the last component and it
        exists, else its parent directory; the call then goes through
        /proc/self/fd/N, and no symlink swapped afterwards can redirect it."""
        # The kernel resolves what was given, not its normpath: ``link/..`` is the
        # parent of the link's target, or ENOTDIR when that is a file.
        normal = os.path.normpath(path)
        stripped = path.rstrip("/")
        if not stripped:
            return allow("the root directory itself")
        trailing = "/" if stripped != path else ""
        parent, base = os.path.split(stripped)
        holder, replacement = -1, b""
        try:
            if follow:
                try:
                    holder = os.open(path, os.O_PATH | os.O_CLOEXEC)
                    replacement = f"/proc/self/fd/{holder}".encode()
                except FileNotFoundError:
                    holder = -1
            if holder < 0:
                holder = os.open(parent or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                replacement = f"/proc/self/fd/{holder}/".encode() + (base + trailing).encode(
                    "utf-8", "surrogateescape")
        except OSError as exc:
            # Never let the call go unpinned: the guest gets the answer the host gave
            # for the path at this moment (ENOENT, ENOTDIR, ...) -- the host's, not
            # the policy's, unless it is a refusal.
            if exc.errno in LOOKUP_ERRORS:
                return Verdict(Decision.ERROR, f"{normal}: {exc.strerror}", exc.errno)
            return deny(f"{normal}: {exc.strerror}", exc.errno or Errno.EACCES)
        held = os.readlink(f"/proc/self/fd/{holder}")
        target = held if replacement.endswith(f"/fd/{holder}".encode()) else \
            os.path.normpath(os.path.join(held, base))     # held is real: ".." is too
        reason = self._permits(target, access, metadata)
        if reason is None:
            os.close(holder)
            return deny(f"{target} is outside the {access} paths (it changed while "
                        "it was checked)", Errno.EACCES)
        proc.pin_path(original, replacement, holder)
        return allow(reason)

    @staticmethod
    def _nofollow_flag(resolved, args) -> bool:
        """Whether the call's flags say not to follow a final symlink."""
        for arg, value in zip(resolved, args):
            if arg is not None and arg.name == "flags" and value & AT_SYMLINK_NOFOLLOW:
                return True
        return False

    @staticmethod
    def _guest_target(rewritten: bytes) -> str | None:
        """The file a rewritten guest path reaches, or None when it is no file."""
        text = rewritten.decode("utf-8", "surrogateescape")
        if not text.startswith("/proc/self/fd/"):
            return text
        try:
            target = os.readlink(text)
        except OSError:
            return None
        return target if target.startswith("/") and not target.startswith("/memfd:") else None

    @staticmethod
    def _access(name: str, args) -> str:
        if name in EXEC_CALLS:
            return "exec"
        if name in WRITE_PATH_CALLS:
            return "write"
        if name in OPEN_CALLS:
            flags = args[1] if name == "open" else args[2] if name == "openat" else O_WRONLY | O_CREAT
            if flags & O_ACCMODE in (O_WRONLY, O_RDWR) or flags & (O_CREAT | O_TRUNC | O_APPEND):
                return "write"
        return "read"

    @staticmethod
    def _dirfd_for(resolved, index: int, args) -> int | None:
        for j in range(index - 1, -1, -1):
            if resolved[j] is not None and resolved[j].kind is ArgKind.DIRFD:
                value = args[j] & 0xFFFF_FFFF
                return value - (1 << 32) if value >= 1 << 31 else value
        return None

    @staticmethod
    def _absolute(proc, raw: bytes, dirfd: int | None) -> str | None:
        path = raw.decode("utf-8", "surrogateescape")
        if path.startswith("/"):
            return path
        if dirfd is None or dirfd == AT_FDCWD:
            return os.path.join(os.getcwd(), path)
        host = proc.fds.host(dirfd)
        if host is None:
            return None
        try:
            return os.path.join(os.readlink(f"/proc/self/fd/{host}"), path)
        except OSError:
            return None

    def _permits(self, real: str, access: str, metadata: bool) -> str | None:
        """Why ``real`` (a resolved path) may be used for ``access``, or None. A call
        that only describes a path may also describe the directories above the
        read roots: what Linux answers for them (EINVAL from readlink, a stat) tells
        nothing beneath them, and no call here lists them."""
        roots = {"read": self.read_roots, "write": self.write_roots,
                 "exec": self.exec_roots}[access]
        root = _root_of(real, roots)
        if root is not None:
            return f"paths.{access} {root}"
        if metadata and access == "read" and real in self._above_read_roots:
            return f"{real} is above a read path"
        return None

    def _allowed(self, path: str, access: str, follow: bool,
                 metadata: bool = False) -> Verdict:
        normal = os.path.normpath(path)
        try:
            if follow:
                real = os.path.realpath(normal)
            else:
                real = os.path.join(os.path.realpath(os.path.dirname(normal)),
                                    os.path.basename(normal))
        except OSError:
            # The path changed while it was resolved (a symlink being swapped): refuse.
            return deny(f"{normal} changed while it was checked", Errno.EACCES)
        reason = self._permits(real, access, metadata)
        if reason is not None:
            return allow(reason)
        return deny(f"{real} is outside the {access} paths", Errno.EACCES,
                    self._hint(real, access, metadata, _as_proc_self(real) or real))

    @staticmethod
    def _hint(real: str, access: str, metadata: bool, named: str) -> str:
        """The option that would allow ``access`` to ``real``, spelt ``named`` (the
        process's own /proc/PID as /proc/self: the next run has another pid): none
        to read or run what does not exist (bash looks for locale files, busybox
        for /etc/busybox.conf at each start); a shell looking for a command is told
        how to run it. (The note reaches whoever reads the VMM's stderr: the user.)"""
        try:
            mode = os.stat(real).st_mode
        except OSError:
            return f"--allow-write {named}" if access == "write" else ""
        if metadata and stat.S_ISREG(mode) and mode & 0o111:
            return f"--allow-exec {named} (to run it) or --allow-read {named}"
        return f"--allow-{access} {named}"
    # -- audit -----------------------------------------------------------------------------
    def _audit(self, proc, spec, args, verdict: Verdict) -> None:
        def read_memory(address: int, length: int) -> bytes | None:
            try:
                return proc.space.read(address, length, READ)
            except GuestFault:
                return None
        try:
            decoded = strace.decode_args(spec, args, read_memory)
        except Exception:   # never let a decoding problem hide the decision
            decoded = {"raw": [hex(a) for a in args]}
        record = {"time": round(time.time(), 6), "pid": os.getpid(), "syscall": spec.name,
                  "args": decoded, "decision": verdict.decision.value,
                  "rule": verdict.rule}
        if verdict.decision is Decision.ERROR:
            record["errno"] = Errno(verdict.errno).name
        self.audit.write(json.dumps(record, default=str) + "\n")
        self.audit.flush()
