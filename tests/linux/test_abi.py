"""kvmdune.linux.abi against the real headers (via gcc) and Python's own constant modules."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from kvmdune.linux import abi

# (C expression, Python value): compiled and printed by gcc against /usr/include.
# Kernel uapi headers only (no glibc <fcntl.h>), so the kernel's spellings are checked.
HEADERS = """
#include <asm/unistd.h>
#include <asm-generic/errno.h>
#include <asm/signal.h>
#include <asm/prctl.h>
#include <asm/mman.h>
#include <linux/mman.h>
#include <asm/termbits.h>
#include <asm/termios.h>
#include <asm/ioctls.h>
#include <asm/stat.h>
#include <asm/statfs.h>
#include <linux/fcntl.h>
#include <linux/sched.h>
#include <linux/wait.h>
#include <linux/futex.h>
#include <linux/fs.h>
#include <linux/prctl.h>
#include <linux/stat.h>
#include <linux/eventpoll.h>
#include <linux/poll.h>
#include <linux/time.h>
#include <linux/resource.h>
#include <linux/random.h>
#include <linux/in.h>
#include <linux/socket.h>
#include <linux/utsname.h>
#include <linux/sysinfo.h>
#include <linux/uio.h>
#include <linux/inotify.h>
#include <linux/memfd.h>
#include <linux/personality.h>
#include <linux/fadvise.h>
#include <stdio.h>
"""

C_CHECKS: dict[str, int] = {
    "O_ACCMODE": abi.O_ACCMODE,
    "O_CREAT": abi.OpenFlags.O_CREAT,
    "O_EXCL": abi.OpenFlags.O_EXCL,
    "O_NOCTTY": abi.OpenFlags.O_NOCTTY,
    "O_TRUNC": abi.OpenFlags.O_TRUNC,
    "O_APPEND": abi.OpenFlags.O_APPEND,
    "O_NONBLOCK": abi.OpenFlags.O_NONBLOCK,
    "O_DSYNC": abi.OpenFlags.O_DSYNC,
    "O_SYNC": abi.OpenFlags.O_SYNC,
    "__O_SYNC": abi.OpenFlags["__O_SYNC"],
    "O_DIRECT": abi.OpenFlags.O_DIRECT,
    "O_LARGEFILE": abi.OpenFlags.O_LARGEFILE,
    "O_DIRECTORY": abi.OpenFlags.O_DIRECTORY,
    "O_NOFOLLOW": abi.OpenFlags.O_NOFOLLOW,
    "O_NOATIME": abi.OpenFlags.O_NOATIME,
    "O_CLOEXEC": abi.OpenFlags.O_CLOEXEC,
    "O_PATH": abi.OpenFlags.O_PATH,
    "O_TMPFILE": abi.O_TMPFILE,
    "__O_TMPFILE": abi.O_TMPFILE_BIT,
    "FASYNC": abi.OpenFlags.FASYNC,
    "AT_FDCWD": abi.AT_FDCWD,
    "AT_SYMLINK_NOFOLLOW": abi.AtFlags.AT_SYMLINK_NOFOLLOW,
    "AT_REMOVEDIR": abi.AtFlags.AT_REMOVEDIR,
    "AT_EACCESS": abi.AccessAtFlags.AT_EACCESS,
    "AT_SYMLINK_FOLLOW": abi.AtFlags.AT_SYMLINK_FOLLOW,
    "AT_NO_AUTOMOUNT": abi.AtFlags.AT_NO_AUTOMOUNT,
    "AT_EMPTY_PATH": abi.AtFlags.AT_EMPTY_PATH,
    "AT_RECURSIVE": abi.AtFlags.AT_RECURSIVE,
    "AT_STATX_SYNC_TYPE": abi.AT_STATX_SYNC_TYPE,
    "AT_STATX_FORCE_SYNC": abi.StatxSync.AT_STATX_FORCE_SYNC,
    "AT_STATX_DONT_SYNC": abi.StatxSync.AT_STATX_DONT_SYNC,
    "F_DUPFD_CLOEXEC": abi.FcntlCmd.F_DUPFD_CLOEXEC,
    "F_SETLKW": abi.FcntlCmd.F_SETLKW,
    "F_GETOWN_EX": abi.FcntlCmd.F_GETOWN_EX,
    "F_OFD_SETLKW": abi.FcntlCmd.F_OFD_SETLKW,
    "F_SETPIPE_SZ": abi.FcntlCmd.F_SETPIPE_SZ,
    "F_GET_SEALS": abi.FcntlCmd.F_GET_SEALS,
    "F_SET_FILE_RW_HINT": abi.FcntlCmd.F_SET_FILE_RW_HINT,
    "F_NOTIFY": abi.FcntlCmd.F_NOTIFY,
    "PROT_GROWSDOWN": abi.ProtFlags.PROT_GROWSDOWN,
    "MAP_SHARED_VALIDATE": abi.MapType.MAP_SHARED_VALIDATE,
    "MAP_TYPE": abi.MAP_TYPE,
    "MAP_FIXED": abi.MapFlags.MAP_FIXED,
    "MAP_ANONYMOUS": abi.MapFlags.MAP_ANONYMOUS,
    "MAP_32BIT": abi.MapFlags.MAP_32BIT,
    "MAP_GROWSDOWN": abi.MapFlags.MAP_GROWSDOWN,
    "MAP_DENYWRITE": abi.MapFlags.MAP_DENYWRITE,
    "MAP_EXECUTABLE": abi.MapFlags.MAP_EXECUTABLE,
    "MAP_LOCKED": abi.MapFlags.MAP_LOCKED,
    "MAP_NORESERVE": abi.MapFlags.MAP_NORESERVE,
    "MAP_POPULATE": abi.MapFlags.MAP_POPULATE,
    "MAP_NONBLOCK": abi.MapFlags.MAP_NONBLOCK,
    "MAP_STACK": abi.MapFlags.MAP_STACK,
    "MAP_HUGETLB": abi.MapFlags.MAP_HUGETLB,
    "MAP_SYNC": abi.MapFlags.MAP_SYNC,
    "MAP_FIXED_NOREPLACE": abi.MapFlags.MAP_FIXED_NOREPLACE,
    "MAP_UNINITIALIZED": abi.MapFlags.MAP_UNINITIALIZED,
    "MREMAP_DONTUNMAP": abi.MremapFlags.MREMAP_DONTUNMAP,
    "MADV_DONTNEED": abi.MadviseAdvice.MADV_DONTNEED,
    "MADV_FREE": abi.MadviseAdvice.MADV_FREE,
    "MADV_HWPOISON": abi.MadviseAdvice.MADV_HWPOISON,
    "MADV_COLLAPSE": abi.MadviseAdvice.MADV_COLLAPSE,
    "MCL_ONFAULT": abi.MlockallFlags.MCL_ONFAULT,
    "CSIGNAL": abi.CSIGNAL,
    "CLONE_VM": abi.CloneFlags.CLONE_VM,
    "CLONE_PIDFD": abi.CloneFlags.CLONE_PIDFD,
    "CLONE_SETTLS": abi.CloneFlags.CLONE_SETTLS,
    "CLONE_CHILD_CLEARTID": abi.CloneFlags.CLONE_CHILD_CLEARTID,
    "CLONE_CHILD_SETTID": abi.CloneFlags.CLONE_CHILD_SETTID,
    "CLONE_NEWUSER": abi.CloneFlags.CLONE_NEWUSER,
    "CLONE_IO": abi.CloneFlags.CLONE_IO,
    "CLONE_NEWTIME": abi.CloneFlags.CLONE_NEWTIME,
    "CLONE_CLEAR_SIGHAND": abi.CloneFlags.CLONE_CLEAR_SIGHAND,
    "CLONE_INTO_CGROUP": abi.CloneFlags.CLONE_INTO_CGROUP,
    "SCHED_DEADLINE": abi.SchedPolicy.SCHED_DEADLINE,
    "WNOHANG": abi.WaitOptions.WNOHANG,
    "WEXITED": abi.WaitOptions.WEXITED,
    "WNOWAIT": abi.WaitOptions.WNOWAIT,
    "__WNOTHREAD": abi.WaitOptions["__WNOTHREAD"],
    "__WALL": abi.WaitOptions["__WALL"],
    "__WCLONE": abi.WaitOptions["__WCLONE"],
    "P_PIDFD": abi.IdType.P_PIDFD,
    "FUTEX_WAIT_BITSET_PRIVATE": abi.FutexOp.FUTEX_WAIT_BITSET_PRIVATE,
    "FUTEX_CMP_REQUEUE_PI_PRIVATE": abi.FutexOp.FUTEX_CMP_REQUEUE_PI_PRIVATE,
    "FUTEX_CLOCK_REALTIME": abi.FutexFlags.FUTEX_CLOCK_REALTIME,
    "FUTEX_PRIVATE_FLAG": abi.FUTEX_PRIVATE_FLAG,
    "SEEK_HOLE": abi.SeekWhence.SEEK_HOLE,
    "RENAME_WHITEOUT": abi.RenameFlags.RENAME_WHITEOUT,
    "ARCH_SET_GS": abi.ArchPrctlCode.ARCH_SET_GS,
    "ARCH_SET_FS": abi.ArchPrctlCode.ARCH_SET_FS,
    "ARCH_GET_FS": abi.ArchPrctlCode.ARCH_GET_FS,
    "ARCH_GET_GS": abi.ArchPrctlCode.ARCH_GET_GS,
    "ARCH_REQ_XCOMP_PERM": abi.ArchPrctlCode.ARCH_REQ_XCOMP_PERM,
    "ARCH_MAP_VDSO_64": abi.ArchPrctlCode.ARCH_MAP_VDSO_64,
    "PR_SET_NAME": abi.PrctlOption.PR_SET_NAME,
    "PR_SET_NO_NEW_PRIVS": abi.PrctlOption.PR_SET_NO_NEW_PRIVS,
    "PR_SET_SYSCALL_USER_DISPATCH": abi.PrctlOption.PR_SET_SYSCALL_USER_DISPATCH,
    "PR_SCHED_CORE": abi.PrctlOption.PR_SCHED_CORE,
    "SIG_BLOCK": abi.SigprocmaskHow.SIG_BLOCK,
    "SIG_SETMASK": abi.SigprocmaskHow.SIG_SETMASK,
    "SA_RESTORER": abi.SigactionFlags.SA_RESTORER,
    "SA_ONSTACK": abi.SigactionFlags.SA_ONSTACK,
    "SA_RESETHAND": abi.SigactionFlags.SA_RESETHAND,
    "SA_SIGINFO": abi.SigactionFlags.SA_SIGINFO,
    "SIGSTKFLT": abi.Signal.SIGSTKFLT,
    "SIGSYS": abi.Signal.SIGSYS,
    "SIGRTMIN": abi.SIGRTMIN,
    "TCGETS": abi.IoctlRequest.TCGETS,
    "TCSETSF": abi.IoctlRequest.TCSETSF,
    "TIOCGWINSZ": abi.IoctlRequest.TIOCGWINSZ,
    "TIOCSWINSZ": abi.IoctlRequest.TIOCSWINSZ,
    "TIOCGPGRP": abi.IoctlRequest.TIOCGPGRP,
    "TIOCSPGRP": abi.IoctlRequest.TIOCSPGRP,
    "TIOCGSID": abi.IoctlRequest.TIOCGSID,
    "FIONREAD": abi.IoctlRequest.FIONREAD,
    "FIONBIO": abi.IoctlRequest.FIONBIO,
    "FIOCLEX": abi.IoctlRequest.FIOCLEX,
    "FIONCLEX": abi.IoctlRequest.FIONCLEX,
    "TCGETS2": abi.IoctlRequest.TCGETS2,
    "TCSETSF2": abi.IoctlRequest.TCSETSF2,
    "TIOCGPTN": abi.IoctlRequest.TIOCGPTN,
    "TIOCSPTLCK": abi.IoctlRequest.TIOCSPTLCK,
    "TIOCSIG": abi.IoctlRequest.TIOCSIG,
    "TIOCGPTPEER": abi.IoctlRequest.TIOCGPTPEER,
    "TIOCGEXCL": abi.IoctlRequest.TIOCGEXCL,
    "FIOQSIZE": abi.IoctlRequest.FIOQSIZE,
    "STATX_BASIC_STATS": abi.StatxMask.STATX_BASIC_STATS,
    "STATX_MNT_ID": abi.StatxMask.STATX_MNT_ID,
    "EPOLLET": abi.EpollEvents.EPOLLET,
    "EPOLLONESHOT": abi.EpollEvents.EPOLLONESHOT,
    "EPOLLEXCLUSIVE": abi.EpollEvents.EPOLLEXCLUSIVE,
    "EPOLLRDHUP": abi.EpollEvents.EPOLLRDHUP,
    "EPOLL_CTL_MOD": abi.EpollCtlOp.EPOLL_CTL_MOD,
    "POLLRDHUP": abi.PollEvents.POLLRDHUP,
    "CLOCK_BOOTTIME": abi.ClockId.CLOCK_BOOTTIME,
    "CLOCK_TAI": abi.ClockId.CLOCK_TAI,
    "RLIMIT_NOFILE": abi.RlimitResource.RLIMIT_NOFILE,
    "RLIMIT_AS": abi.RlimitResource.RLIMIT_AS,
    "RLIMIT_RTTIME": abi.RlimitResource.RLIMIT_RTTIME,
    "GRND_INSECURE": abi.GrndFlags.GRND_INSECURE,
    "IPPROTO_TCP": abi.IpProto.IPPROTO_TCP,
    "IPPROTO_UDP": abi.IpProto.IPPROTO_UDP,
    "IPPROTO_MPTCP": abi.IpProto.IPPROTO_MPTCP,
    "IN_MASK_CREATE": abi.InotifyMask.IN_MASK_CREATE,
    "IN_ONESHOT": abi.InotifyMask.IN_ONESHOT,
    "MFD_ALLOW_SEALING": abi.MemfdFlags.MFD_ALLOW_SEALING,
    "ADDR_NO_RANDOMIZE": 0x0040000,
    "PER_LINUX32": abi.Personality.PER_LINUX32,
    **{flag.name: flag for flag in abi.PersonalityFlags},
    "POSIX_FADV_NOREUSE": abi.FadviseAdvice.POSIX_FADV_NOREUSE,
    "EHWPOISON": abi.Errno.EHWPOISON,
    "EDEADLOCK": abi.Errno.EDEADLOCK,
    "EWOULDBLOCK": abi.Errno.EWOULDBLOCK,
    "ENOTRECOVERABLE": abi.Errno.ENOTRECOVERABLE,
    "_IOC(_IOC_READ, 'T', 0x99, 4)": abi.ioc(abi.IocDir._IOC_READ, ord("T"), 0x99, 4),
    # Structure sizes the table relies on (x86-64 uapi layouts).
    "sizeof(struct stat)": 144,
    "sizeof(struct statx)": 256,
    "sizeof(struct statfs)": 120,
    "sizeof(struct termios)": 36,
    "sizeof(struct termios2)": 44,
    "sizeof(struct winsize)": 8,
    "sizeof(struct epoll_event)": 12,
    "sizeof(struct pollfd)": 8,
    "sizeof(struct __kernel_timespec)": 16,
    "sizeof(struct rlimit)": 16,
    "sizeof(struct rusage)": 144,
    "sizeof(struct new_utsname)": 390,
    "sizeof(struct sysinfo)": 112,
    "sizeof(struct iovec)": 16,
    "sizeof(struct flock)": 32,
    "sizeof(struct f_owner_ex)": 8,
    "sizeof(struct futex_waitv)": 24,
    "sizeof(struct itimerspec)": 32,
    "sizeof(struct itimerval)": 32,
    "sizeof(struct clone_args)": 88,
}


def _c_values(tmp_path: Path) -> dict[str, int]:
    lines = [HEADERS, "int main(void) {"]
    for expr in C_CHECKS:
        lines.append(f'    printf("%lld\\n", (long long)({expr}));')
    lines.append("    return 0;\n}")
    source = tmp_path / "abi.c"
    source.write_text("\n".join(lines))
    exe = tmp_path / "abi"
    build = subprocess.run(["gcc", "-o", str(exe), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    return dict(zip(C_CHECKS, (int(v) for v in out)))


@pytest.mark.skipif(shutil.which("gcc") is None or not Path("/usr/include/linux/fcntl.h").exists(),
                    reason="needs gcc and the kernel headers")
def test_values_match_the_kernel_headers(tmp_path: Path) -> None:
    values = _c_values(tmp_path)
    wrong = {k: (values[k], int(v)) for k, v in C_CHECKS.items() if values[k] != int(v)}
    assert not wrong


def test_errno_matches_python() -> None:
    for member in abi.Errno:
        # Python's errno module lacks a few recent names (EHWPOISON); the C check covers them.
        assert getattr(errno, member.name, member.value) == member.value, member.name
        assert abi.errno_message(member.value) == os.strerror(member.value)
    for name, value in errno.errorcode.items():
        if value.startswith("E") and name < 134 and value not in ("ENOTSUP",):
            assert abi.Errno[value] == name, value
    assert abi.errno_name(11) == "EAGAIN"
    assert abi.errno_name(35) == "EDEADLK"
    assert abi.errno_name(95) == "EOPNOTSUPP"
    assert abi.errno_name(999) is None
    assert {m.value for m in abi.Errno} == set(range(1, 134)) - {41, 58}  # 41 and 58 are unassigned


def test_signals_match_python() -> None:
    for member in abi.Signal:
        assert getattr(signal, member.name) == member.value
    assert signal.SIGRTMAX == abi.SIGRTMAX
    assert abi.signal_name(6) == "SIGABRT"
    assert abi.signal_name(29) == "SIGIO"
    assert abi.signal_name(32) == "SIGRTMIN"
    assert abi.signal_name(64) == "SIGRT_32"
    assert abi.signal_name(65) is None


def test_os_mmap_socket_constants_match_python() -> None:
    for name in ("O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_DSYNC", "O_SYNC",
                 "O_DIRECT", "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_PATH", "O_TMPFILE"):
        assert abi.OpenFlags[name] == getattr(os, name), name
    for name in ("O_RDONLY", "O_WRONLY", "O_RDWR"):
        assert abi.OpenAccess[name] == getattr(os, name)
    for name in ("SEEK_SET", "SEEK_CUR", "SEEK_END", "SEEK_DATA", "SEEK_HOLE"):
        assert abi.SeekWhence[name] == getattr(os, name)
    for name in ("WNOHANG", "WUNTRACED", "WEXITED", "WCONTINUED", "WNOWAIT"):
        assert abi.WaitOptions[name] == getattr(os, name)
    for name in ("R_OK", "W_OK", "X_OK", "F_OK"):
        assert abi.AccessMode[name] == getattr(os, name)
    for name in ("RTLD_LAZY",):
        assert hasattr(os, name)
    for name in ("PROT_READ", "PROT_WRITE", "PROT_EXEC"):
        assert abi.ProtFlags[name] == getattr(mmap, name)
    assert abi.MapType.MAP_SHARED == mmap.MAP_SHARED and abi.MapType.MAP_PRIVATE == mmap.MAP_PRIVATE
    for name in ("MAP_ANONYMOUS", "MAP_DENYWRITE", "MAP_EXECUTABLE", "MAP_POPULATE", "MAP_STACK"):
        if hasattr(mmap, name):
            assert abi.MapFlags[name] == getattr(mmap, name), name
    for name in ("MADV_DONTNEED", "MADV_FREE", "MADV_HUGEPAGE", "MADV_DONTDUMP"):
        if hasattr(mmap, name):
            assert abi.MadviseAdvice[name] == getattr(mmap, name), name
    for name in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_VSOCK", "AF_ALG"):
        assert abi.AddressFamily[name] == getattr(socket, name), name
    for name in ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_RAW", "SOCK_SEQPACKET"):
        assert abi.SocketType[name] == getattr(socket, name)
    assert abi.SocketFlags.SOCK_CLOEXEC == socket.SOCK_CLOEXEC
    assert abi.SocketFlags.SOCK_NONBLOCK == socket.SOCK_NONBLOCK
    for name in ("MSG_PEEK", "MSG_DONTWAIT", "MSG_NOSIGNAL", "MSG_WAITALL", "MSG_TRUNC", "MSG_CMSG_CLOEXEC"):
        assert abi.MsgFlags[name] == getattr(socket, name), name
    for name in ("SO_REUSEADDR", "SO_TYPE", "SO_ERROR", "SO_RCVBUF", "SO_PEERCRED", "SO_DOMAIN"):
        assert abi.SocketOption[name] == getattr(socket, name), name
    assert abi.SocketLevel.SOL_SOCKET == socket.SOL_SOCKET
    for name in ("SHUT_RD", "SHUT_WR", "SHUT_RDWR"):
        assert abi.ShutdownHow[name] == getattr(socket, name)
    for name in ("IPPROTO_TCP", "IPPROTO_UDP", "IPPROTO_ICMPV6", "IPPROTO_RAW"):
        assert abi.IpProto[name] == getattr(socket, name)


def test_ioctl_numbers_compose() -> None:
    read, write = abi.IocDir._IOC_READ, abi.IocDir._IOC_WRITE
    assert abi.IoctlRequest.TCGETS2 == abi.ioc(read, ord("T"), 0x2A, 44)
    assert abi.IoctlRequest.TCSETS2 == abi.ioc(write, ord("T"), 0x2B, 44)
    assert abi.IoctlRequest.TIOCGPTN == abi.ioc(read, ord("T"), 0x30, 4)
    assert abi.IoctlRequest.TIOCSPTLCK == abi.ioc(write, ord("T"), 0x31, 4)
    assert abi.IoctlRequest.TIOCGPTPEER == abi.ioc(0, ord("T"), 0x41, 0)
    assert abi.ioc_fields(abi.IoctlRequest.TCGETS2) == (read, ord("T"), 0x2A, 44)


def test_flag_tables_declare_multibit_names_first() -> None:
    # Decomposition walks members in order, so a name must precede the bits it contains.
    for table in (abi.OpenFlags, abi.StatxMask, abi.MapFlags, abi.CloneFlags, abi.WaitOptions):
        seen: list[tuple[str, int]] = []
        for name, member in table.__members__.items():
            value = int(member)
            for earlier_name, earlier in seen:
                assert not (earlier and earlier != value and earlier & value == earlier and value & ~earlier), (
                    f"{table.__name__}: {name} contains {earlier_name} but comes after it")
            seen.append((name, value))
