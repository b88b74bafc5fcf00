"""Invariants of the x86-64 system call table (kvmdune.linux.syscall_table)."""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest

from kvmdune.linux import abi
from kvmdune.linux.abi import FlagSet
from kvmdune.linux.syscall_table import (
    BY_NAME,
    INTEGER_KINDS,
    SYSCALLS,
    Arg,
    ArgKind,
    Dep,
    Direction,
    Family,
    Ret,
    RetKind,
    SyscallSpec,
    arg_extent,
    lookup,
    pointer_extents,
    resolve_args,
    resolve_ret,
)

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


def _variants(slot: Arg | Dep) -> list[Arg]:
    """Every concrete declaration a slot can take."""
    if isinstance(slot, Dep):
        return [a for _, a in slot.cases if a is not None] + ([slot.default] if slot.default is not None else [])
    return [slot]


def _all_args(spec: SyscallSpec):
    for index, slot in enumerate(spec.args):
        for arg in _variants(slot):
            yield index, arg


def test_keys_and_names_unique() -> None:
    assert all(number == spec.number for number, spec in SYSCALLS.items())
    names = [spec.name for spec in SYSCALLS.values()]
    assert len(names) == len(set(names))
    assert set(BY_NAME) == set(names)


def test_covers_the_kernel_numbering() -> None:
    # 0..336 without gaps, then 424..469 (512..547 are x32-only).
    expected = set(range(0, 337)) | set(range(424, 470))
    assert set(SYSCALLS) == expected
    newer = {453: "map_shadow_stack", 454: "futex_wake", 455: "futex_wait", 456: "futex_requeue",
             457: "statmount", 458: "listmount", 459: "lsm_get_self_attr", 460: "lsm_set_self_attr",
             461: "lsm_list_modules", 462: "mseal", 451: "cachestat", 452: "fchmodat2"}
    for number, name in newer.items():
        assert SYSCALLS[number].name == name


@pytest.mark.skipif(not UNISTD.exists(), reason="needs the kernel headers (linux-libc-dev)")
def test_matches_unistd_64_h() -> None:
    header = dict((int(n), name) for name, n in re.findall(r"#define __NR_(\w+)\s+(\d+)", UNISTD.read_text()))
    assert len(header) > 300
    for number, name in header.items():
        assert number in SYSCALLS, f"{name} ({number}) missing"
        assert SYSCALLS[number].name == name


def test_argument_counts_and_indices() -> None:
    for spec in SYSCALLS.values():
        assert spec.nargs <= 6, spec.name
        for index, arg in _all_args(spec):
            for ref in (arg.size_arg, arg.count_arg):
                if ref is not None:
                    assert 0 <= ref < spec.nargs and ref != index, (spec.name, arg.name)
                    assert all(v.kind in INTEGER_KINDS for v in _variants(spec.args[ref])), (spec.name, arg.name)
            if arg.size_ptr_arg is not None:
                ref = arg.size_ptr_arg
                assert 0 <= ref < spec.nargs, (spec.name, arg.name)
                for target in _variants(spec.args[ref]):
                    assert target.kind is ArgKind.INOUT_BUF and target.fixed_size == 4, (spec.name, arg.name)
            if isinstance(spec.args[index], Dep):
                assert spec.args[index].on < spec.nargs and spec.args[index].on != index


def test_kinds_are_complete() -> None:
    for spec in SYSCALLS.values():
        for _, arg in _all_args(spec):
            if arg.kind is ArgKind.FLAGS:
                assert isinstance(arg.table, FlagSet), (spec.name, arg.name)
            elif arg.kind is ArgKind.ENUM:
                assert isinstance(arg.table, type) and issubclass(arg.table, enum.IntEnum), (spec.name, arg.name)
            else:
                assert arg.table is None, (spec.name, arg.name)
            if arg.kind in (ArgKind.IN_BUF, ArgKind.OUT_BUF, ArgKind.INOUT_BUF):
                expected = {ArgKind.IN_BUF: Direction.IN, ArgKind.OUT_BUF: Direction.OUT,
                            ArgKind.INOUT_BUF: Direction.INOUT}[arg.kind]
                assert arg.direction is expected
                sized = [arg.fixed_size, arg.size_arg, arg.count_arg, arg.size_ptr_arg]
                assert sum(x is not None for x in sized) == 1, (spec.name, arg.name)
                if arg.fixed_size is not None and arg.struct is not None:
                    assert arg.fixed_size == arg.struct.size
            if arg.kind in (ArgKind.IOVEC,):
                assert arg.count_arg is not None and arg.direction in (Direction.IN, Direction.OUT)
            if arg.out_size_from_ret:
                assert arg.direction in (Direction.OUT, Direction.INOUT)
            if arg.count_arg is not None:
                assert arg.struct is not None and arg.struct.size >= 1


def test_returns_are_declared() -> None:
    for spec in SYSCALLS.values():
        rets = [r for _, r in spec.ret.cases] + [spec.ret.default] if isinstance(spec.ret, Dep) else [spec.ret]
        for ret in rets:
            assert isinstance(ret, Ret)
            if ret.kind in (RetKind.FLAGS, RetKind.ENUM):
                assert ret.table is not None
    assert {s.name for s in SYSCALLS.values() if s.ret == Ret(RetKind.NONE)} == {"exit", "exit_group"}
    for name in ("open", "openat", "openat2", "socket", "accept4", "dup", "epoll_create1", "memfd_create",
                 "pidfd_open", "timerfd_create", "eventfd2", "creat", "io_uring_setup"):
        assert BY_NAME[name].ret == Ret(RetKind.FD), name
    assert resolve_ret(BY_NAME["fcntl"], (3, abi.FcntlCmd.F_DUPFD_CLOEXEC, 0, 0, 0, 0)).kind is RetKind.FD
    assert resolve_ret(BY_NAME["fcntl"], (3, abi.FcntlCmd.F_SETFD, 1, 0, 0, 0)).kind is RetKind.INT


# Argument counts from the man-page prototypes (man 2), as the kernel receives them.
MAN_PAGE_ARGS = {
    "read": 3, "write": 3, "open": 3, "close": 1, "stat": 2, "fstat": 2, "lstat": 2, "poll": 3, "lseek": 3,
    "mmap": 6, "mprotect": 3, "munmap": 2, "brk": 1, "rt_sigaction": 4, "rt_sigprocmask": 4, "ioctl": 3,
    "pread64": 4, "readv": 3, "writev": 3, "access": 2, "pipe": 1, "select": 5, "mremap": 5, "dup2": 2,
    "nanosleep": 2, "getpid": 0, "socket": 3, "connect": 3, "accept": 3, "sendto": 6, "recvfrom": 6,
    "sendmsg": 3, "bind": 3, "listen": 2, "socketpair": 4, "setsockopt": 5, "getsockopt": 5, "clone": 5,
    "fork": 0, "execve": 3, "exit": 1, "wait4": 4, "kill": 2, "uname": 1, "fcntl": 3, "getcwd": 2,
    "chdir": 1, "rename": 2, "mkdir": 2, "readlink": 3, "chmod": 2, "chown": 3, "umask": 1,
    "gettimeofday": 2, "getrlimit": 2, "sysinfo": 1, "ptrace": 4, "prctl": 5, "arch_prctl": 2, "mount": 5,
    "futex": 6, "getdents64": 3, "set_tid_address": 1, "clock_gettime": 2, "clock_nanosleep": 4,
    "exit_group": 1, "epoll_wait": 4, "epoll_ctl": 4, "tgkill": 3, "waitid": 5, "openat": 4,
    "newfstatat": 4, "unlinkat": 3, "renameat2": 5, "utimensat": 4, "ppoll": 5, "pselect6": 6,
    "pipe2": 2, "dup3": 3, "prlimit64": 4, "getrandom": 3, "memfd_create": 2, "statx": 5, "rseq": 4,
    "clone3": 2, "close_range": 3, "openat2": 4, "faccessat2": 4, "epoll_pwait2": 6, "mseal": 3,
    "copy_file_range": 6, "splice": 6, "sendfile": 4, "get_robust_list": 3, "set_robust_list": 2,
}


def test_man_page_argument_counts() -> None:
    for name, count in MAN_PAGE_ARGS.items():
        assert BY_NAME[name].nargs == count, name


def test_argument_names_follow_man_pages() -> None:
    assert [a.name for a in BY_NAME["openat"].args[:3]] == ["dirfd", "pathname", "flags"]
    assert [a.name for a in BY_NAME["read"].args] == ["fd", "buf", "count"]
    assert [a.name for a in BY_NAME["mmap"].args] == ["addr", "length", "prot", "flags", "fd", "offset"]
    assert [a.name for a in BY_NAME["execve"].args] == ["pathname", "argv", "envp"]


VMM_SENSITIVE = {
    "ptrace", "process_vm_readv", "process_vm_writev", "prctl", "seccomp", "kcmp", "pidfd_getfd", "pidfd_open",
    "personality", "kill", "tkill", "tgkill", "setns", "unshare", "mount", "pivot_root", "chroot", "bpf",
    "perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "ioperm", "iopl", "modify_ldt", "arch_prctl", "clone", "clone3", "fork", "vfork", "execve", "execveat",
    "mmap", "munmap", "mprotect", "brk", "mremap", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "exit",
    "exit_group", "set_tid_address", "set_robust_list", "rseq", "userfaultfd", "memfd_secret",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "wait4", "waitid", "chdir", "fchdir",
    "close_range", "setuid", "setrlimit", "sigaltstack", "madvise", "shmat",
}
NOT_SENSITIVE = {"read", "write", "openat", "close", "fstat", "getpid", "socket", "connect", "futex",
                 "clock_gettime", "getrandom", "pipe2", "dup3", "uname", "lseek", "memfd_create"}


def test_vmm_sensitive() -> None:
    for name in VMM_SENSITIVE:
        assert BY_NAME[name].vmm_sensitive, name
    for name in NOT_SENSITIVE:
        assert not BY_NAME[name].vmm_sensitive, name
    # Anything that takes an address in the guest's address space is emulated.
    for spec in SYSCALLS.values():
        if any(arg.kind is ArgKind.ADDR for _, arg in _all_args(spec)):
            assert spec.vmm_sensitive, spec.name


def test_families() -> None:
    assert BY_NAME["read"].family is Family.FILE
    assert BY_NAME["openat"].family is Family.FS
    assert BY_NAME["mmap"].family is Family.MEMORY
    assert BY_NAME["connect"].family is Family.NET
    assert BY_NAME["kill"].family is Family.SIGNAL
    assert BY_NAME["clock_gettime"].family is Family.TIME
    assert BY_NAME["futex"].family is Family.IPC
    assert BY_NAME["tuxcall"].family is Family.OBSOLETE
    assert lookup(400) is None


def test_resolve_dependent_arguments() -> None:
    openat = BY_NAME["openat"]
    assert resolve_args(openat, (0, 0, 0, 0o644, 0, 0))[3] is None
    assert resolve_args(openat, (0, 0, abi.O_CREAT, 0o644, 0, 0))[3].kind is ArgKind.MODE
    assert resolve_args(openat, (0, 0, abi.O_TMPFILE | 2, 0o644, 0, 0))[3].kind is ArgKind.MODE
    fcntl = BY_NAME["fcntl"]
    assert resolve_args(fcntl, (3, abi.FcntlCmd.F_GETFD, 0, 0, 0, 0))[2] is None
    lock = resolve_args(fcntl, (3, abi.FcntlCmd.F_GETLK, 0, 0, 0, 0))[2]
    assert lock.kind is ArgKind.INOUT_BUF and lock.fixed_size == 32
    assert resolve_args(fcntl, (3, 0x7777, 0, 0, 0, 0))[2].kind is ArgKind.OPAQUE
    ioctl = BY_NAME["ioctl"]
    winsz = resolve_args(ioctl, (1, abi.IoctlRequest.TIOCGWINSZ, 0, 0, 0, 0))[2]
    assert winsz.kind is ArgKind.OUT_BUF and winsz.fixed_size == 8
    assert resolve_args(ioctl, (1, abi.IoctlRequest.TCSETSW, 0, 0, 0, 0))[2].direction is Direction.IN
    assert resolve_args(ioctl, (1, 0xDEADBEEF, 0, 0, 0, 0))[2].kind is ArgKind.OPAQUE
    futex = BY_NAME["futex"]
    wake = resolve_args(futex, (0, abi.FutexOp.FUTEX_WAKE_PRIVATE, 1, 0, 0, 0))
    assert wake[3:] == (None, None, None)
    wait = resolve_args(futex, (0, abi.FutexOp.FUTEX_WAIT | 256, 1, 0, 0, 0))
    assert wait[3].kind is ArgKind.IN_BUF and wait[3].fixed_size == 16


def test_extents() -> None:
    def ext(name: str, *args: int, memory=None):
        spec = BY_NAME[name]
        regs = tuple(args) + (0,) * (6 - len(args))
        return {(e.index, e.length, e.direction) for e in pointer_extents(spec, regs, memory)}

    assert ext("read", 3, 0x1000, 100) == {(1, 100, Direction.OUT)}
    assert ext("write", 1, 0x1000, 2**64 - 1) == {(1, 2**64 - 1, Direction.IN)}
    assert ext("read", 3, 0, 100) == set()  # NULL is not a range
    assert ext("poll", 0x1000, 3, 0) == {(0, 24, Direction.INOUT)}
    assert ext("select", 65, 0x1000, 0, 0, 0x2000) == {(1, 16, Direction.INOUT), (4, 16, Direction.INOUT)}
    assert ext("mincore", 0x7000, 4097, 0x1000) == {(2, 2, Direction.OUT)}
    assert ext("newfstatat", 2**64 - 100, 0x1000, 0x2000, 0) == {(1, None, Direction.IN), (2, 144, Direction.OUT)}
    assert ext("rt_sigprocmask", 0, 0x1000, 0x2000, 8) == {(1, 8, Direction.IN), (2, 8, Direction.OUT)}
    assert ext("writev", 1, 0x1000, 3) == {(1, 48, Direction.IN)}
    assert ext("epoll_wait", 4, 0x1000, 10, 0) == {(1, 120, Direction.OUT)}
    assert ext("getsockopt", 3, 1, 3, 0x1000, 0x2000, memory=lambda a, n: (12).to_bytes(4, "little")) == {
        (3, 12, Direction.OUT), (4, 4, Direction.INOUT)}
    # int arguments use their low 32 bits: a huge 64-bit count is still a 32-bit socklen_t.
    connect = BY_NAME["connect"]
    assert arg_extent(connect, 1, (3, 0x1000, (1 << 32) | 16, 0, 0, 0)) == 16
