"""Defense in depth for ``kvmdune sandbox``: the VMM process confines itself once the
run is set up (KVM open, privileges dropped), so that a bug in the supervisor's own
checks cannot hand the guest more than the policy grants.

Three kernel mechanisms, all inherited by the threads and the forked guest processes
made afterwards, none of them revocable:

- ``no_new_privs``: nothing the VMM could execute gains privileges;
- a seccomp filter (built here as classic BPF): the host calls the VMM itself makes,
  plus those the compiled policy can forward for the guest; anything else fails with
  EPERM. EPERM rather than a kill: a Python VMM that meets it raises an OSError the
  run reports (the guest gets an errno, the user a message), where a kill would end
  the run with no word about what was refused. A call from another architecture's
  entry (``int 0x80`` in the VMM) is killed: nothing in the VMM makes one;
- Landlock (where the kernel offers it): files readable only beneath the policy's
  read roots and the VMM's own Python files, writable only beneath its write roots,
  nothing executable; with ``--net none`` no TCP bind or connect; signals and
  abstract unix sockets only within the sandbox. Landlock also confines ptrace-style
  access (``process_vm_writev``, which the fast path uses on its own process) to the
  sandbox's own processes.

Why no library: libseccomp's own Python binding (Debian's python3-seccomp) is built
for Debian's interpreter, not for the one kvmdune runs on, and the PyPI wrappers
(pyseccomp: last release 2021) are not kept up; the filter here is one sorted table
compiled to a binary search, and Landlock is three system calls.
"""

from __future__ import annotations

import enum
import errno
import os
import struct
import sys
from dataclasses import dataclass
from typing import Iterable

from ..linux.abi import PrctlOption
from ..linux.host_unsafe import HostBuffer, host_syscall
from ..linux.routing import ROUTES, Support
from ..linux.syscall_table import BY_NAME, Sysno

# -- seccomp (linux/seccomp.h, linux/filter.h, linux/audit.h) ------------------------
SYS_SECCOMP = Sysno.seccomp
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_KILL_PROCESS = 0x8000_0000
SECCOMP_RET_ERRNO = 0x0005_0000
SECCOMP_RET_ALLOW = 0x7FFF_0000
AUDIT_ARCH_X86_64 = 0xC000_003E
X32_SYSCALL_BIT = 0x4000_0000
#: Offsets in struct seccomp_data: nr, arch, instruction_pointer, args[6].
SECCOMP_DATA_NR, SECCOMP_DATA_ARCH, SECCOMP_DATA_ARGS = 0, 4, 16
# Classic BPF opcodes.
BPF_LD_W_ABS = 0x20
BPF_ALU_AND_K = 0x54
BPF_JMP_JA = 0x05
BPF_JMP_JEQ_K = 0x15
BPF_JMP_JGE_K = 0x35
BPF_RET_K = 0x06
BPF_MAXINSNS = 4096

# -- Landlock (linux/landlock.h) -------------------------------------------------------
SYS_LANDLOCK_CREATE_RULESET = Sysno.landlock_create_ruleset
SYS_LANDLOCK_ADD_RULE = Sysno.landlock_add_rule
SYS_LANDLOCK_RESTRICT_SELF = Sysno.landlock_restrict_self
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1


class FsAccess(enum.IntFlag):
    """LANDLOCK_ACCESS_FS_*."""

    EXECUTE = 1 << 0
    WRITE_FILE = 1 << 1
    READ_FILE = 1 << 2
    READ_DIR = 1 << 3
    REMOVE_DIR = 1 << 4
    REMOVE_FILE = 1 << 5
    MAKE_CHAR = 1 << 6
    MAKE_DIR = 1 << 7
    MAKE_REG = 1 << 8
    MAKE_SOCK = 1 << 9
    MAKE_FIFO = 1 << 10
    MAKE_BLOCK = 1 << 11
    MAKE_SYM = 1 << 12
    REFER = 1 << 13        # ABI 2
    TRUNCATE = 1 << 14     # ABI 3
    IOCTL_DEV = 1 << 15    # ABI 5


class NetAccess(enum.IntFlag):
    """LANDLOCK_ACCESS_NET_* (ABI 4)."""

    BIND_TCP = 1 << 0
    CONNECT_TCP = 1 << 1


class Scope(enum.IntFlag):
    """LANDLOCK_SCOPE_* (ABI 6)."""

    ABSTRACT_UNIX_SOCKET = 1 << 0
    SIGNAL = 1 << 1


#: The file-system rights each Landlock ABI version knows (a ruleset may only
#: handle those).
_FS_BY_ABI = {1: FsAccess(0x1FFF), 2: FsAccess(0x3FFF), 3: FsAccess(0x7FFF),
              5: FsAccess(0xFFFF)}
#: Rights that make sense on a file (the rest apply to directories only).
FILE_ACCESS = (FsAccess.EXECUTE | FsAccess.WRITE_FILE | FsAccess.READ_FILE
               | FsAccess.TRUNCATE | FsAccess.IOCTL_DEV)
READ_ACCESS = FsAccess.READ_FILE | FsAccess.READ_DIR | FsAccess.IOCTL_DEV
WRITE_ACCESS = (READ_ACCESS | FsAccess.WRITE_FILE | FsAccess.TRUNCATE
                | FsAccess.REMOVE_DIR | FsAccess.REMOVE_FILE | FsAccess.MAKE_DIR
                | FsAccess.MAKE_REG | FsAccess.MAKE_SYM | FsAccess.MAKE_FIFO
                | FsAccess.MAKE_SOCK | FsAccess.REFER)

#: Host calls the VMM itself makes, whatever the policy forwards (STYLE.md 14: a
#: reason for each). Calls the guest's own calls become are added per policy.
VMM_CALLS: dict[str, str] = {
    # memory: guest memory, Python's heap, the fast path's thread stack
    "mmap": "guest memory and Python's heap", "munmap": "the same, released",
    "mprotect": "the shadow-page invalidation pair (PLATFORM.md)",
    "madvise": "returning guest memory", "mremap": "Python's allocator",
    "brk": "Python's allocator",
    # KVM, descriptors and files
    "ioctl": "KVM_RUN and the KVM API (only these requests, see below)",
    "read": "files and pipes", "write": "files, pipes and the VMM's messages",
    "pread64": "ELF loading", "pwrite64": "forwarded guest I/O",
    "readv": "forwarded guest I/O", "writev": "forwarded guest I/O",
    "openat": "files the gate allowed, ELF images, /proc",
    "openat2": "the fast path resolves paths beneath the read roots",
    "close": "descriptors", "close_range": "descriptors", "dup": "descriptors", "dup2": "descriptors",
    "dup3": "descriptors", "fcntl": "descriptor flags", "lseek": "files",
    "fstat": "files", "newfstatat": "the gate resolves paths", "statx": "files",
    "readlink": "the gate resolves paths", "readlinkat": "the gate resolves paths",
    "getdents64": "/proc listings", "pipe2": "vfork hand-over, guest pipes",
    "memfd_create": "generated /proc files", "ftruncate": "generated files",
    "getcwd": "the guest's cwd is the VMM's", "access": "path checks",
    "faccessat2": "path checks",
    # threads, time and waiting (Python, the fast path's thread and its futex)
    "futex": "the fast path's wake-ups, Python's locks", "clone": "fork of a guest",
    "clone3": "the fast path's thread", "set_robust_list": "threads",
    "rseq": "threads", "sched_yield": "spinning", "sched_getaffinity": "Python",
    "nanosleep": "waits", "clock_nanosleep": "waits", "clock_gettime": "time",
    "gettimeofday": "time", "getrandom": "Python's hash seed in children",
    "restart_syscall": "the kernel's resumption of an interrupted sleep or wait",
    "exit": "thread exit", "exit_group": "process exit", "wait4": "children",
    "waitid": "children",
    "process_vm_writev": "the fast path's hint into its own call ring (Landlock keeps "
                         "it to the sandbox's processes)",
    # signals: delivered to the guest by the VMM
    "rt_sigaction": "host handlers", "rt_sigprocmask": "masks", "rt_sigreturn": "handlers",
    "rt_sigtimedwait": "taking the guest's signals from the host",
    "rt_sigpending": "whether a guest's signal waits", "sigaltstack": "Python",
    "signalfd4": "waiting for the guest's signals", "poll": "waiting on that signalfd",
    "kill": "limits, the end of forked guests", "tgkill": "thread signals",
    "getpid": "identity", "gettid": "identity", "getppid": "identity",
    "getuid": "identity", "geteuid": "identity", "getgid": "identity",
    "getegid": "identity", "getpgrp": "the sandbox's process group",
    "getpgid": "the sandbox's process group", "setitimer": "wall-time limits",
    "prlimit64": "resource limits", "getrusage": "CPU limits",
    "prctl": "the task's name and PR_SET_DUMPABLE 0 only (see _prctl_check)",
}
#: The only ioctl requests, besides the KVM API's (type 0xAE), the VMM makes itself.
VMM_IOCTLS = {0x5401: "TCGETS (isatty)", 0x5413: "TIOCGWINSZ"}
KVMIO = 0xAE
#: Emulated calls whose handlers never make the same call on the host.
NEVER_ON_HOST = {"execve", "execveat", "seccomp", "landlock_create_ruleset",
                 "landlock_add_rule", "landlock_restrict_self", "personality",
                 "arch_prctl", "set_tid_address", "modify_ldt"}


class ConfinementError(OSError):
    """The kernel refused to confine the VMM (the message says which part)."""


@dataclass(frozen=True)
class HostCalls:
    """What the seccomp filter lets through: call numbers, and for ioctl the requests
    (None: any), for prctl only PR_SET_DUMPABLE 0."""

    numbers: frozenset[int]
    ioctl_requests: frozenset[int] | None


def host_calls(guest_calls: Iterable[str], any_ioctl: bool,
               guest_ioctls: Iterable[int]) -> HostCalls:
    """The VMM's own calls plus ``guest_calls`` (the calls the policy can forward or
    emulate for the guest), by number."""
    names = set(VMM_CALLS) | (set(guest_calls) - NEVER_ON_HOST)
    numbers = frozenset(BY_NAME[name].number for name in names if name in BY_NAME)
    requests = None if any_ioctl else frozenset(set(VMM_IOCTLS) | set(guest_ioctls))
    return HostCalls(numbers, requests)


def reachable_guest_calls(denied_by_number: Iterable[str]) -> set[str]:
    """The calls a guest can make the VMM serve (forwarded or emulated) under a
    policy that denies ``denied_by_number`` whatever the arguments."""
    denied = set(denied_by_number)
    return {route.name for route in ROUTES.values()
            if route.support is not Support.REFUSED and route.name not in denied}


# -- the filter ------------------------------------------------------------------------
def _insn(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k & 0xFFFF_FFFF)


def _ret(action: int) -> tuple:
    return _insn(BPF_RET_K, action)


def _arg_low(index: int) -> tuple:
    return _insn(BPF_LD_W_ABS, SECCOMP_DATA_ARGS + 8 * index)


def _arg_high(index: int) -> tuple:
    return _insn(BPF_LD_W_ABS, SECCOMP_DATA_ARGS + 8 * index + 4)


DENY = SECCOMP_RET_ERRNO | errno.EPERM
ALLOW = SECCOMP_RET_ALLOW


def _ioctl_check(requests: frozenset[int]) -> list[tuple]:
    """ioctl: the KVM API, or one of ``requests`` (the low 32 bits: Linux's cmd is an
    unsigned int)."""
    code = [_arg_low(1), _insn(BPF_ALU_AND_K, 0xFF00),
            _insn(BPF_JMP_JEQ_K, KVMIO << 8, 0, 1), _ret(ALLOW), _arg_low(1)]
    for request in sorted(requests):
        code += [_insn(BPF_JMP_JEQ_K, request, 0, 1), _ret(ALLOW)]
    return code + [_ret(DENY)]


def _prctl_check() -> list[tuple]:
    """prctl: the task's name (the VMM carries its guest's, task_name.py) and
    PR_SET_DUMPABLE 0 (the VMM keeps itself out of reach), nothing else."""
    return [_arg_low(0),
            _insn(BPF_JMP_JEQ_K, PrctlOption.PR_SET_NAME, 0, 1), _ret(ALLOW),
            _insn(BPF_JMP_JEQ_K, PrctlOption.PR_GET_NAME, 0, 1), _ret(ALLOW),
            _insn(BPF_JMP_JEQ_K, PrctlOption.PR_SET_DUMPABLE, 1, 0), _ret(DENY),
            _arg_low(1), _insn(BPF_JMP_JEQ_K, 0, 1, 0), _ret(DENY),
            _arg_high(1), _insn(BPF_JMP_JEQ_K, 0, 0, 1), _ret(ALLOW), _ret(DENY)]


def _intervals(calls: HostCalls, highest: int) -> list[tuple[int, object]]:
    """(first number, action) for each run of numbers with the same action, from 0."""
    special = {BY_NAME["prctl"].number: "prctl"}
    if calls.ioctl_requests is not None:
        special[BY_NAME["ioctl"].number] = "ioctl"
    runs: list[tuple[int, object]] = []
    for number in range(highest + 1):
        action = special.get(number) or (ALLOW if number in calls.numbers else DENY)
        if not runs or runs[-1][1] != action or action in ("ioctl", "prctl"):
            runs.append((number, action))
    return runs


def _leaf(action, calls: HostCalls) -> list[tuple]:
    if action == "ioctl":
        return _ioctl_check(calls.ioctl_requests)
    if action == "prctl":
        return _prctl_check()
    return [_ret(action)]


def _search(runs: list[tuple[int, object]], calls: HostCalls) -> list[tuple]:
    """A binary search over the runs on the call number (in A): log2(runs)
    comparisons per call. A far "greater or equal" branch goes through a JA (its
    offset has 32 bits; a conditional jump's only 8)."""
    if len(runs) == 1:
        return _leaf(runs[0][1], calls)
    middle = len(runs) // 2
    left, right = _search(runs[:middle], calls), _search(runs[middle:], calls)
    return ([_insn(BPF_JMP_JGE_K, runs[middle][0], 0, 1), _insn(BPF_JMP_JA, len(left))]
            + left + right)


def build_filter(calls: HostCalls) -> bytes:
    """The seccomp program for ``calls``, as struct sock_filter[]."""
    highest = max(BY_NAME[name].number for name in BY_NAME)
    program = [
        _insn(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        _insn(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        _ret(SECCOMP_RET_KILL_PROCESS),
        _insn(BPF_LD_W_ABS, SECCOMP_DATA_NR),
        _insn(BPF_JMP_JGE_K, highest + 1, 0, 1),      # x32 numbers and beyond the table
        _ret(DENY),
    ] + _search(_intervals(calls, highest), calls)
    if len(program) > BPF_MAXINSNS:
        raise ConfinementError(errno.E2BIG, f"the seccomp filter has {len(program)} "
                                            f"instructions (at most {BPF_MAXINSNS})")
    return b"".join(struct.pack("<HBBI", *insn) for insn in program)


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): also what lets an unprivileged process install a
    seccomp filter or a Landlock domain."""
    result = host_syscall(157, PrctlOption.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if result < 0:
        raise ConfinementError(-result, "prctl(PR_SET_NO_NEW_PRIVS) failed")


def install_filter(program: bytes) -> None:
    """The filter, on every thread of the process (TSYNC)."""
    instructions = HostBuffer(program)
    fprog = HostBuffer(struct.pack("<HxxxxxxQ", len(program) // 8, instructions.address))
    # No SECCOMP_FILTER_FLAG_SPEC_ALLOW: where the kernel turns on the speculative
    # store bypass mitigation for filtered processes, a VMM running hostile code
    # wants it.
    result = host_syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC,
                          fprog.address)
    if result != 0:
        what = f"thread {result} could not take it" if result > 0 else os.strerror(-result)
        raise ConfinementError(errno.EPERM if result > 0 else -result,
                               f"the seccomp filter was refused: {what}")


# -- Landlock --------------------------------------------------------------------------
def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or it is disabled)."""
    result = host_syscall(SYS_LANDLOCK_CREATE_RULESET, 0, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return max(result, 0)


@dataclass(frozen=True)
class HeldPath:
    """A path a Landlock rule names, held open (O_PATH) since the policy was read:
    the rule is added after the drop of privileges, when the new user may no longer
    reach the path by name (a file passed with --pass-fd from a private directory)."""

    path: str
    fd: int
    access: FsAccess


@dataclass(frozen=True)
class FileRules:
    """Where the VMM may read and write once confined."""

    held: tuple[HeldPath, ...]
    no_tcp: bool              # handle TCP bind/connect with no port allowed

    @classmethod
    def hold(cls, read: Iterable[str], write: Iterable[str], no_tcp: bool) -> "FileRules":
        """Open every path now; one that does not exist gets no rule (the gate
        refuses it anyway)."""
        held = []
        for paths, access in ((read, READ_ACCESS), (write, WRITE_ACCESS)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                is_directory = os.path.isdir(f"/proc/self/fd/{fd}")
                held.append(HeldPath(path, fd, FsAccess(access) if is_directory
                                     else FsAccess(access) & FILE_ACCESS))
        return cls(tuple(held), no_tcp)

    def release(self) -> None:
        for held in self.held:
            os.close(held.fd)


def vmm_read_paths() -> tuple[str, ...]:
    """What the VMM itself reads after confinement: its own package, Python's
    standard library and site packages (a lazy import), and /proc (the guest's
    /proc/self is generated from the VMM's)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stdlib = os.path.dirname(os.path.abspath(os.__file__))     # lib-dynload is inside
    paths = {package, stdlib, "/proc"}
    # (sysconfig.get_paths would say the same, for 15 ms of start-up.)
    paths.update(entry for entry in sys.path
                 if os.path.basename(entry) in ("site-packages", "dist-packages"))
    return tuple(sorted(p for p in paths if os.path.exists(p)))


def _ruleset_attr(abi: int, handled_fs: int, handled_net: int, scoped: int) -> bytes:
    if abi >= 6:
        return struct.pack("<QQQ", handled_fs, handled_net, scoped)
    if abi >= 4:
        return struct.pack("<QQ", handled_fs, handled_net)
    return struct.pack("<Q", handled_fs)


def apply_landlock(rules: FileRules, abi: int) -> None:
    """Restrict the calling thread (and what it creates afterwards) to ``rules``."""
    handled = _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= abi)]
    handled_net = int(NetAccess.BIND_TCP | NetAccess.CONNECT_TCP) if rules.no_tcp and abi >= 4 else 0
    scoped = int(Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL) if abi >= 6 else 0
    attr = HostBuffer(_ruleset_attr(abi, handled, handled_net, scoped))
    ruleset = host_syscall(SYS_LANDLOCK_CREATE_RULESET, attr.address, attr.size, 0)
    if ruleset < 0:
        raise ConfinementError(-ruleset, "landlock_create_ruleset failed")
    try:
        for held in rules.held:
            _add_path_rule(ruleset, held, held.access & handled)
        result = host_syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)
        if result < 0:
            raise ConfinementError(-result, "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def _add_path_rule(ruleset: int, held: HeldPath, access: FsAccess) -> None:
    beneath = HostBuffer(struct.pack("<Qi", int(access), held.fd))
    result = host_syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                          beneath.address, 0)
    if result < 0:
        raise ConfinementError(-result, f"landlock_add_rule({held.path}) failed")


# -- the whole ------------------------------------------------------------------------
@dataclass(frozen=True)
class Confinement:
    """What ``apply`` will do: the host calls to allow and the file rules (None: the
    policy allows every path, so Landlock would add nothing)."""

    calls: HostCalls
    files: FileRules | None

    def apply(self) -> str:
        """Confine this process; a one-line account of what was applied."""
        program = build_filter(self.calls)
        set_no_new_privs()
        landlock = "Landlock: not used (every path allowed)"
        if self.files is not None:
            abi = landlock_abi()
            try:
                if abi:
                    apply_landlock(self.files, abi)
                    landlock = f"Landlock ABI {abi}"
                else:
                    landlock = "Landlock: not offered by this kernel"
            finally:
                self.files.release()
        install_filter(program)
        return (f"no_new_privs, seccomp ({len(program) // 8} instructions, "
                f"{len(self.calls.numbers)} calls), {landlock}")


def for_policy(policy, denied_by_number: Iterable[str], any_ioctl: bool,
               guest_ioctls: Iterable[int]) -> Confinement:
    """The confinement of a VMM enforcing ``policy`` (see ``SandboxGate.confinement``)."""
    calls = host_calls(reachable_guest_calls(denied_by_number), any_ioctl, guest_ioctls)
    if policy.all_paths:
        return Confinement(calls, None)
    read = tuple(dict.fromkeys(tuple(policy.read) + tuple(policy.execute) + vmm_read_paths()))
    files = FileRules.hold(read, policy.write, no_tcp=policy.net.value == "none")
    return Confinement(calls, files)
