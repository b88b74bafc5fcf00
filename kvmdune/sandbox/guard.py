"""The sandbox's enforcement: a ``Gate`` the Linux personality consults before every
system call, compiled from a ``Policy``, and the audit log.

Paths are checked by what they resolve to (symlinks followed by the host, relative
paths against the guest's cwd or directory descriptor), and every descriptor the
host opens for the guest is checked again on what was actually opened, so swapping
a symlink after the check gains nothing for opens.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import socket
import stat
import struct
import time
from dataclasses import dataclass
from typing import TextIO

from ..linux import strace
from ..linux.abi import AT_FDCWD, Errno
from ..linux.exit_status import ExitStatus
from ..linux.gate import ALLOW_RULE, CallRule, Gate, RuleKind
from ..linux.syscall_table import SYSCALLS, ArgKind, Dep, resolve_args
from ..linux.uaccess import Fault
from ..machine import Stop
from ..memory import READ, GuestFault
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


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    rule: str
    errno: int = 0


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


class SandboxGate(Gate):
    def __init__(self, policy: Policy, audit: TextIO | None = None) -> None:
        self.policy = policy
        self.audit = audit
        self.read_roots = tuple(policy.read) + tuple(policy.write) + tuple(policy.execute)
        self.write_roots = tuple(policy.write)
        self.exec_roots = tuple(policy.execute)
        self.group = os.getpgrp()
        self._opening: str | None = None     # the access the current open was allowed for
        self._with_paths = _calls_with_paths()

    # -- the gate ------------------------------------------------------------------------
    def check(self, proc, spec, event):
        if spec is None:
            return None
        verdict = self._decide(proc, spec, event.args)
        if self.audit is not None and (not verdict.allowed or self.policy.audit_everything):
            self._audit(proc, spec, event.args, verdict)
        if verdict.allowed:
            return None
        if self.policy.on_deny is OnDeny.KILL:
            proc.log(f"kvmdune sandbox: {spec.name} denied by {verdict.rule}: killed by SIGSYS")
            return Stop(value=ExitStatus(signal=SIGSYS))
        return -verdict.errno

    def rules(self) -> dict[int, CallRule]:
        """Every call whose verdict its number alone decides (``_by_number``), as data
        for the fast path. What must be audited or kill the process stays here."""
        policy = self.policy
        if self.audit is not None and policy.audit_everything:
            return {}
        rules = {}
        for number, spec in SYSCALLS.items():
            verdict = self._by_number(spec)
            if verdict is None:
                if spec.name in STAT_CALLS and not policy.all_paths:
                    # Reading metadata is allowed wherever it resolves beneath a read
                    # root (_paths): the kernel can check that much by itself.
                    rules[number] = CallRule(RuleKind.BENEATH, roots=self.read_roots)
                continue
            if verdict.allowed:
                rules[number] = ALLOW_RULE
            elif self.audit is None and policy.on_deny is not OnDeny.KILL:
                rules[number] = CallRule(RuleKind.DENY, verdict.errno)
        return rules

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
        if target.startswith("/memfd:") or _under(target, roots):
            return None
        return -Errno.EACCES

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
            return Verdict(False, f"syscalls.deny {name}", Errno.EPERM)
        if name in policy.allow_syscalls or policy.all_paths and policy.net is NetMode.ALL:
            return Verdict(True, "allowed")
        if name in IDENTITY_CALLS:
            return Verdict(False, f"profile {policy.profile.value}: {name} changes identity",
                           Errno.EPERM)
        if name in KILL_CALLS or name in ("ioctl", "socket") or name in SOCKET_CALLS:
            return None
        if not policy.all_paths and spec.number in self._with_paths:
            return None
        return Verdict(True, "allowed")

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
                return Verdict(False, f"ioctl {request:#x} is not on the allow-list", Errno.EPERM)
        if name == "socket":
            return self._socket(args[0])
        if name in SOCKET_CALLS:
            return self._address(proc, name, args)
        if not policy.all_paths and spec.number in self._with_paths:
            return self._paths(proc, spec, args)
        return Verdict(True, "allowed")

    def _kill(self, args, target_index: int) -> Verdict:
        pid = args[target_index] & 0xFFFF_FFFF
        pid = pid - (1 << 32) if pid >= 1 << 31 else pid
        if pid == os.getpid():
            return Verdict(True, "signal to itself")
        if pid > 0:
            try:
                if os.getpgid(pid) == self.group:
                    return Verdict(True, "signal inside the sandbox")
            except OSError:
                return Verdict(False, "no such process in the sandbox", Errno.ESRCH)
        return Verdict(False, f"signals only reach the sandbox's own processes (pid {pid})",
                       Errno.EPERM)

    def _socket(self, family: int) -> Verdict:
        net = self.policy.net
        if net is NetMode.ALL:
            return Verdict(True, "network all")
        if net is NetMode.LOOPBACK and family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
            return Verdict(True, "network loopback")
        return Verdict(False, f"network {net.value}: socket family {family}", Errno.EACCES)

    def _address(self, proc, name: str, args) -> Verdict:
        if self.policy.net is NetMode.ALL:
            return Verdict(True, "network all")
        address, length = (args[4], args[5]) if name == "sendto" else (args[1], args[2])
        if address == 0:
            return Verdict(True, "no address")
        try:
            raw = proc.space.read(address, min(length, 128), READ)
        except GuestFault:
            return Verdict(True, "unreadable address: EFAULT follows")
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
                return Verdict(False, "abstract unix sockets are outside the file system",
                               Errno.EACCES)
            resolved = os.path.realpath(os.path.join(os.getcwd(), path))
            roots = self.write_roots if name == "bind" else self.read_roots
            ok = self.policy.all_paths or _under(resolved, roots) is not None
            host = resolved
        else:
            return Verdict(False, f"address family {family} is not loopback", Errno.EACCES)
        if ok:
            return Verdict(True, f"loopback address {host}")
        return Verdict(False, f"network loopback: {host} is not allowed", Errno.EACCES)

    def _paths(self, proc, spec, args) -> Verdict:
        name = spec.name
        resolved = resolve_args(spec, args)
        access = self._access(name, args)
        verdict = Verdict(True, "no path")
        for index, arg in enumerate(resolved):
            if arg is None or arg.kind is not ArgKind.PATH or args[index] == 0:
                continue
            if name in ("symlink", "symlinkat") and index == 0:
                continue   # the link's target is checked when it is followed
            dirfd = self._dirfd_for(resolved, index, args)
            try:
                raw = proc.space.read_cstring(args[index], 4096)
            except GuestFault:
                return Verdict(True, "unreadable path: EFAULT follows")
            original = raw
            if raw == b"" and dirfd is not None:
                continue   # AT_EMPTY_PATH: the descriptor itself, already the guest's
            try:
                rewritten = proc.host_path(raw)
                if rewritten == raw:
                    rewritten = original
            except Fault as exc:
                return Verdict(False, f"{raw.decode(errors='replace')}: the process's own "
                               "/proc refuses it", exc.errno)
            if rewritten != raw:
                # /proc/self/exe, fd/N, /dev/fd/N: what they name for the guest counts.
                target = self._guest_target(rewritten)
                if target is None:
                    continue       # a pipe, socket or generated file of the guest's own
                raw = target.encode("utf-8", "surrogateescape")
            path = self._absolute(proc, raw, dirfd)
            if path is None:
                return Verdict(False, "a path relative to an unknown descriptor", Errno.EBADF)
            follow = name not in NOFOLLOW_CALLS and not self._nofollow_flag(resolved, args)
            verdict = self._allowed(path, access, follow=follow)
            if not verdict.allowed:
                return verdict
            if rewritten == original:
                verdict = self._pin(proc, original, path, access, follow)
                if not verdict.allowed:
                    return verdict
        if name in OPEN_CALLS and verdict.allowed:
            self._opening = access
        return verdict

    def _pin(self, proc, original: bytes, path: str, access: str, follow: bool) -> Verdict:
        """Hold what was checked so that the host call reaches exactly it: the file
        itself (an O_PATH descriptor) when the call follows the last component and it
        exists, else its parent directory; the call then goes through
        /proc/self/fd/N, and no symlink swapped afterwards can redirect it."""
        normal = os.path.normpath(path)
        parent, base = os.path.split(normal)
        if not base:
            return Verdict(True, "the root directory itself")
        holder, replacement = -1, b""
        try:
            if follow:
                try:
                    holder = os.open(normal, os.O_PATH | os.O_CLOEXEC)
                    replacement = f"/proc/self/fd/{holder}".encode()
                except FileNotFoundError:
                    holder = -1
            if holder < 0:
                holder = os.open(parent or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                replacement = f"/proc/self/fd/{holder}/".encode() + base.encode(
                    "utf-8", "surrogateescape")
        except OSError as exc:
            # Never let the call go unpinned: the guest gets the answer the host gave
            # for the path at this moment (ENOENT, ENOTDIR, ...).
            return Verdict(False, f"{normal}: {exc.strerror}", exc.errno or Errno.EACCES)
        held = os.readlink(f"/proc/self/fd/{holder}")
        target = held if replacement.endswith(f"/fd/{holder}".encode()) else \
            os.path.join(held, base)
        roots = {"read": self.read_roots, "write": self.write_roots,
                 "exec": self.exec_roots}[access]
        if _under(target, roots) is None:
            os.close(holder)
            return Verdict(False, f"{target} is outside the {access} paths (it changed while "
                           "it was checked)", Errno.EACCES)
        proc.pin_path(original, replacement, holder)
        return Verdict(True, f"paths.{access} {target}")

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

    def _allowed(self, path: str, access: str, follow: bool) -> Verdict:
        normal = os.path.normpath(path)
        try:
            if follow:
                real = os.path.realpath(normal)
            else:
                real = os.path.join(os.path.realpath(os.path.dirname(normal)),
                                    os.path.basename(normal))
        except OSError:
            # The path changed while it was resolved (a symlink being swapped): refuse.
            return Verdict(False, f"{normal} changed while it was checked", Errno.EACCES)
        roots = {"read": self.read_roots, "write": self.write_roots,
                 "exec": self.exec_roots}[access]
        root = _under(real, roots)
        if root is not None:
            return Verdict(True, f"paths.{access} {root}")
        return Verdict(False, f"{real} is outside the {access} paths", Errno.EACCES)

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
                  "args": decoded, "decision": "allow" if verdict.allowed else "deny",
                  "rule": verdict.rule}
        self.audit.write(json.dumps(record, default=str) + "\n")
        self.audit.flush()
