"""Tests for kvmdune.linux.strace: strace-exact formatting, structured decoding, fuzzing.

The differential test runs a C program under the real ``strace`` and checks
that our formatter, given the same registers and the same memory, prints the
same line.  The program keeps every pointer argument inside one fixed
mapping and, after each system call, writes (nr, args, return value, the
mapping) to a dump file with pwritev2 (which strace is told not to trace),
so the test can replay each call against a dict-free memory reader.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmdune.linux import abi
from kvmdune.linux import strace as fmt
from kvmdune.linux.syscall_table import BY_NAME, SYSCALLS, pointer_extents, unknown_spec

REGION = 0x10000000
REGION_SIZE = 0x8000

PROBE_C = r"""#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/futex.h>
#include <asm/prctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/un.h>
#include <sys/epoll.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <linux/stat.h>
#include <sys/random.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/select.h>
#include <linux/fs.h>

#define R ((char *)0x10000000L)
#define RSIZE 0x8000L
static int dumpfd;
static long sc(long nr, long a, long b, long c, long d, long e, long f) {
    errno = 0;
    long r = syscall(nr, a, b, c, d, e, f);
    long ret = (r == -1 && errno) ? -errno : r;
    long rec[8] = {nr, a, b, c, d, e, f, ret};
    struct iovec iov[2] = {{rec, sizeof rec}, {R, RSIZE}};
    syscall(SYS_pwritev2, dumpfd, iov, 2, -1L, -1L, 0L);
    return r;
}
#define S0(n) sc(SYS_##n, 0, 0, 0, 0, 0, 0)
#define S1(n, a) sc(SYS_##n, (long)(a), 0, 0, 0, 0, 0)
#define S2(n, a, b) sc(SYS_##n, (long)(a), (long)(b), 0, 0, 0, 0)
#define S3(n, a, b, c) sc(SYS_##n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define S4(n, a, b, c, d) sc(SYS_##n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define S5(n, a, b, c, d, e) sc(SYS_##n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)
#define S6(n, a, b, c, d, e, f) sc(SYS_##n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))
/* bump allocator in the region so every pointer argument is inside the dump */
static char *cur = R;
static char *put(const void *p, size_t n) { char *d = cur; memcpy(d, p, n); cur += (n + 15) & ~15L; return d; }
static char *str(const char *s) { return put(s, strlen(s) + 1); }
static char *buf(size_t n) { char *d = cur; memset(d, 0, n); cur += (n + 15) & ~15L; return d; }

int main(int argc, char **argv) {
    const char *tmp = argv[2];
    if (mmap(R, RSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != R) return 2;
    dumpfd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char path[256];
    S1(close, 4242);
    long fd = S4(openat, AT_FDCWD, str("/etc/passwd"), O_RDONLY | O_CLOEXEC, 0);
    char *b = buf(64);
    S3(read, fd, b, 16);
    S3(read, 99, b, 16);
    long nul = S3(open, str("/dev/null"), O_WRONLY, 0);
    S3(write, nul, str("hello\n\t\"\\\x01\x7f\x80\xff" "0\0010"), 16);
    S3(write, nul, str("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"), 46);
    S4(pread64, fd, b, 8, 4);
    S4(pwrite64, nul, str("xyz"), 3, 100);
    S3(lseek, fd, 10, SEEK_SET);
    S3(lseek, fd, -1, SEEK_END);
    char *st = buf(144);
    S4(newfstatat, AT_FDCWD, str("/etc/passwd"), st, 0);
    S4(newfstatat, AT_FDCWD, str("/dev/null"), st, 0);
    S4(newfstatat, fd, str(""), st, AT_EMPTY_PATH);
    S2(fstat, fd, st);
    S2(stat, str("/nonexistent"), st);
    S2(lstat, str("/tmp"), st);
    char *stx = buf(256);
    S5(statx, AT_FDCWD, str("/etc/passwd"), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, stx);
    S3(open, str("/nonexistent"), O_RDONLY, 0);
    snprintf(path, sizeof path, "%s/f", tmp);
    long f2 = S3(open, str(path), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    S4(openat, AT_FDCWD, str(path), O_RDWR | O_APPEND | O_NONBLOCK | 0x800000, 0);
    S4(openat, AT_FDCWD, str(tmp), O_RDWR | O_TMPFILE, 0600);
    S4(openat, 77, str("rel"), O_WRONLY | O_SYNC | O_DIRECTORY | O_NOFOLLOW | O_PATH, 0);
    S2(access, str(path), R_OK | W_OK);
    S2(access, str(path), F_OK);
    S4(faccessat2, AT_FDCWD, str(path), X_OK, AT_EACCESS);
    S6(mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    long m = S6(mmap, 0, 8192, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    S6(mmap, 0, 8192, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0x1000);
    S3(mprotect, m, 4096, PROT_READ);
    S3(madvise, m, 4096, MADV_DONTNEED);
    S2(munmap, m, 8192);
    S1(brk, 0);
    long dfd = S4(openat, AT_FDCWD, str("/"), O_RDONLY | O_DIRECTORY, 0);
    char *db = buf(4096);
    S3(getdents64, dfd, db, 4096);
    S3(readlink, str("/proc/self/cwd"), b, 64);
    S4(readlinkat, AT_FDCWD, str("/etc/passwd"), b, 64);
    S2(getcwd, b, 64);
    char *un = buf(390);
    S1(uname, un);
    long pid = S0(getpid);
    S0(getuid); S0(gettid); S0(getppid);
    S2(kill, pid, 0);
    S2(kill, 99999999, SIGTERM);
    S3(tgkill, pid, 99999999, SIGKILL);
    struct timespec ts = {0, 1000};
    S2(nanosleep, put(&ts, sizeof ts), 0);
    S4(clock_nanosleep, CLOCK_MONOTONIC, 0, put(&ts, sizeof ts), 0);
    char *tsb = buf(16);
    S2(clock_gettime, CLOCK_REALTIME, tsb);
    S2(clock_gettime, CLOCK_MONOTONIC, tsb);
    S2(gettimeofday, tsb, 0);
    long s = S3(socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_IP);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(1), .sin_addr.s_addr = htonl(0x7f000001)};
    S3(connect, s, put(&sin, sizeof sin), sizeof sin);
    long us = S3(socket, AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, "/nonexistent/sock");
    S3(connect, us, put(&sun, sizeof sun), sizeof sun);
    S3(socket, AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, IPPROTO_UDP);
    struct sigaction_k { void *h; unsigned long flags; void *restorer; unsigned long mask; } sa = {SIG_IGN, 0x04000000, (void*)0x1234, 0};
    char *oldsa = buf(32);
    S4(rt_sigaction, SIGUSR1, put(&sa, sizeof sa), oldsa, 8);
    S4(rt_sigaction, SIGUSR1, 0, oldsa, 8);
    unsigned long set = (1UL << (SIGINT - 1)) | (1UL << (SIGTERM - 1));
    char *oset = buf(8);
    S4(rt_sigprocmask, SIG_BLOCK, put(&set, 8), oset, 8);
    S4(rt_sigprocmask, SIG_SETMASK, oset, 0, 8);
    char *rl = buf(16);
    S2(getrlimit, RLIMIT_NOFILE, rl);
    S4(prlimit64, 0, RLIMIT_STACK, 0, rl);
    struct iovec iov[2] = {{str("ab"), 2}, {str("cd"), 2}};
    S3(writev, nul, put(iov, sizeof iov), 2);
    int pfd[2];
    char *pp = buf(8);
    S2(pipe2, pp, O_CLOEXEC);
    memcpy(pfd, pp, 8);
    S3(write, pfd[1], str("zz"), 2);
    char *rb1 = buf(8), *rb2 = buf(8);
    struct iovec riov[2] = {{rb1, 1}, {rb2, 8}};
    S3(readv, pfd[0], put(riov, sizeof riov), 2);
    S1(dup, fd);
    S2(dup2, fd, 100);
    S3(dup3, fd, 101, O_CLOEXEC);
    S2(fcntl, fd, F_GETFD);
    S3(fcntl, fd, F_SETFD, FD_CLOEXEC);
    S3(fcntl, fd, F_SETFL, O_RDONLY | O_NONBLOCK);
    S2(fcntl, fd, F_GETFL);
    S3(fcntl, fd, F_DUPFD_CLOEXEC, 10);
    S3(ioctl, fd, TCGETS, buf(64));
    S3(ioctl, pfd[0], FIONREAD, buf(4));
    S3(ioctl, fd, TIOCGWINSZ, buf(8));
    S3(ioctl, fd, 0x5499, 0x1234);
    struct pollfd pl = {pfd[0], POLLIN, 0};
    S3(poll, put(&pl, sizeof pl), 1, 0);
    S3(write, pfd[1], str("q"), 1);
    struct pollfd pl2[2] = {{pfd[0], POLLIN | POLLPRI, 0}, {pfd[1], POLLOUT, 0}};
    S3(poll, put(pl2, sizeof pl2), 2, 100);
    snprintf(path, sizeof path, "%s/d", tmp);
    S2(mkdir, str(path), 0755);
    S1(rmdir, str(path));
    snprintf(path, sizeof path, "%s/f", tmp);
    S2(chmod, str(path), 0600);
    S2(chmod, str(path), 04755);
    S1(umask, 022);
    S1(umask, 022);
    S1(chdir, str("/"));
    S1(unlink, str("/nonexistent"));
    S3(unlinkat, AT_FDCWD, str("/nonexistent"), AT_REMOVEDIR);
    S2(rename, str("/nonexistent"), str("/nonexistent2"));
    char *argvv[] = {str("/nonexistent"), str("-l"), NULL};
    char *envv[] = {str("A=1"), str("B=2"), NULL};
    S3(execve, str("/nonexistent"), put(argvv, sizeof argvv), put(envv, sizeof envv));
    S4(wait4, -1, 0, WNOHANG, 0);
    S4(wait4, -1, buf(4), WNOHANG | __WALL, buf(144));
    int fut = 0;
    char *fp = put(&fut, 4);
    S3(futex, fp, FUTEX_WAKE_PRIVATE, 1);
    ts.tv_nsec = 1000;
    S4(futex, fp, FUTEX_WAIT_PRIVATE, 1, put(&ts, sizeof ts));
    S2(arch_prctl, ARCH_GET_FS, buf(8));
    S3(getrandom, b, 8, GRND_NONBLOCK);
    S0(sched_yield);
    long ep = S1(epoll_create1, EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = 5};
    S4(epoll_ctl, ep, EPOLL_CTL_ADD, pfd[0], put(&ev, sizeof ev));
    S4(epoll_wait, ep, buf(120), 10, 0);
    S2(ftruncate, f2, 100);
    S1(fsync, f2);
    S2(getrusage, RUSAGE_SELF, buf(144));
    S1(sysinfo, buf(112));
    S2(prctl, PR_GET_DUMPABLE, 0);

    /* batch 2 */
    long sp = S4(socketpair, AF_UNIX, SOCK_STREAM, 0, buf(8));
    int sv[2]; memcpy(sv, cur - 16, 8);
    S6(sendto, sv[0], str("ping"), 4, MSG_DONTWAIT | MSG_NOSIGNAL, 0, 0);
    char *rbuf = buf(16); char *alen = buf(4); *(int*)alen = 16;
    S6(recvfrom, sv[1], rbuf, 16, 0, buf(16), alen);
    struct iovec mv[1] = {{str("msg!"), 4}};
    struct msghdr mh = {0}; mh.msg_iov = (struct iovec *)put(mv, sizeof mv); mh.msg_iovlen = 1;
    S3(sendmsg, sv[0], put(&mh, sizeof mh), 0);
    char *mb = buf(8); struct iovec rv[1] = {{mb, 8}};
    struct msghdr rh = {0}; rh.msg_iov = (struct iovec *)put(rv, sizeof rv); rh.msg_iovlen = 1;
    S3(recvmsg, sv[1], put(&rh, sizeof rh), MSG_DONTWAIT);
    S3(recvmsg, sv[1], put(&rh, sizeof rh), MSG_DONTWAIT);
    int one = 1;
    S5(setsockopt, s, SOL_SOCKET, SO_REUSEADDR, put(&one, 4), 4);
    char *ov = buf(4); char *ol = buf(4); *(int*)ol = 4;
    S5(getsockopt, s, SOL_SOCKET, SO_TYPE, ov, ol);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(0x7f000001)};
    long ls = S3(socket, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    S3(bind, ls, put(&any, sizeof any), sizeof any);
    S2(listen, ls, 5);
    char *gl = buf(4); *(int*)gl = 16;
    S3(getsockname, ls, buf(16), gl);
    S4(accept4, ls, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC);
    S2(shutdown, sv[0], SHUT_WR);
    unsigned long rfds = (1UL << sv[1]);
    struct timeval tv = {0, 0};
    S5(select, sv[1] + 1, put(&rfds, 8), 0, 0, put(&tv, sizeof tv));
    struct pollfd ppf = {sv[1], POLLIN, 0};
    ts.tv_sec = 0; ts.tv_nsec = 0;
    S5(ppoll, put(&ppf, sizeof ppf), 1, put(&ts, sizeof ts), 0, 8);
    stack_t ss = {.ss_sp = (void*)0x20000, .ss_flags = 0, .ss_size = 8192};
    S2(sigaltstack, 0, buf(24));
    struct itimerval itv = {{0, 0}, {0, 0}};
    S3(setitimer, ITIMER_REAL, put(&itv, sizeof itv), buf(32));
    S2(getitimer, ITIMER_PROF, buf(32));
    S2(clock_getres, CLOCK_MONOTONIC, buf(16));
    S2(prctl, PR_SET_NAME, str("probe-name"));
    S2(prctl, PR_GET_NAME, buf(16));
    S5(prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    S3(ioctl, pfd[0], FIONBIO, put(&one, 4));
    S3(ioctl, pfd[0], FIOCLEX, 0);
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    S3(fcntl, fd, F_GETLK, put(&fl, sizeof fl));
    S2(flock, fd, LOCK_SH | LOCK_NB);
    S3(lseek, fd, 0, 7);
    S4(fadvise64, fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    snprintf(path, sizeof path, "%s/l", tmp);
    S2(symlink, str("/etc/passwd-target-that-is-long-enough-to-pass-32"), str(path));
    S3(readlink, str(path), b, 64);
    S4(utimensat, AT_FDCWD, str(path), 0, AT_SYMLINK_NOFOLLOW);
    S3(mknod, str("/nonexistent/fifo"), S_IFIFO | 0600, 0);
    S3(mknod, str("/nonexistent/chr"), S_IFCHR | 0600, makedev(1, 3));
    S5(renameat2, AT_FDCWD, str("/nonexistent/a"), AT_FDCWD, str("/nonexistent/b"), RENAME_NOREPLACE);
    S2(timerfd_create, CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    S2(eventfd2, 3, EFD_CLOEXEC | EFD_SEMAPHORE);
    S2(memfd_create, str("mem"), MFD_CLOEXEC | MFD_ALLOW_SEALING);
    S1(inotify_init1, IN_CLOEXEC);
    S2(getgroups, 0, 0);
    S3(getresuid, buf(4), buf(4), buf(4));
    S3(sched_getaffinity, 0, 8, buf(8));
    S1(sched_getscheduler, 0);
    S2(getpriority, PRIO_PROCESS, 0);
    S1(times, buf(32));
    S1(personality, 0xffffffff);
    S2(statfs, str("/nonexistent"), buf(120));
    long mm = S6(mmap, 0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    S3(msync, mm, 4096, MS_ASYNC | MS_INVALIDATE);
    S2(mlock, mm, 4096);
    S4(mremap, mm, 8192, 4096, 0);
    S5(mremap, mm, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, mm + 0x100000);
    S6(mmap, 0x30000000, 4096, PROT_READ, MAP_SHARED_VALIDATE | MAP_FIXED_NOREPLACE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    S1(epoll_create1, 0x1);
    S4(pipe2, buf(8), O_NONBLOCK | O_DIRECT, 0, 0);
    char *off = buf(8);
    S4(sendfile, nul, fd, off, 10);
    S3(getcpu, buf(4), buf(4), 0);
    S2(clock_gettime, 99, tsb);
    S3(rt_sigaction, 99, 0, 0);
    S3(tgkill, pid, 99999999, SIGRTMIN + 2);
    S1(inotify_init1, IN_CLOEXEC | IN_NONBLOCK);
    S2(timerfd_create, CLOCK_REALTIME, 0);
    unsigned long most = ~0UL & ~(1UL << 8), all = ~0UL;
    S4(rt_sigprocmask, SIG_BLOCK, put(&most, 8), 0, 8);
    S4(rt_sigprocmask, SIG_UNBLOCK, put(&all, 8), 0, 8);
    S3(write, nul, str(""), 0);
    S3(write, nul, 0xdead0000, 10);
    S1(chdir, 0xdead0000);
    S4(newfstatat, AT_FDCWD, str("/"), 0xdead0000, 0);
    S3(read, fd, b, 0);
    S4(openat, AT_FDCWD, str("/etc/passwd"), O_RDONLY, 0);
    S1(set_tid_address, 0x1000);
    S1(exit_group, 0);
    return 0;
}
"""

# Calls whose strace line depends on memory as it was on entry (value-result
# arguments print "[in => out]"); the dump holds only the exit state.
ENTRY_STATE_NEEDED = {"recvfrom", "sendfile"}


def _strace_usable() -> bool:
    if shutil.which("strace") is None or shutil.which("gcc") is None:
        return False
    probe = subprocess.run(["strace", "-o", os.devnull, "true"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple], list[str]]:
    if not _strace_usable():
        pytest.skip("needs gcc and a working strace (apt-get install strace)")
    tmp = tmp_path_factory.mktemp("probe")
    (tmp / "probe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-O1", "-o", str(tmp / "probe"), str(tmp / "probe.c")], check=True)
    work = tmp / "work"
    work.mkdir()
    out = tmp / "strace.txt"
    subprocess.run(
        ["strace", "-o", str(out), "-e", "trace=!pwritev2", "-e", "signal=none",
         str(tmp / "probe"), str(tmp / "dump.bin"), str(work)],
        check=True, timeout=60, cwd=tmp,
    )
    dump = (tmp / "dump.bin").read_bytes()
    size = 64 + REGION_SIZE
    records = []
    for i in range(len(dump) // size):
        chunk = dump[i * size : (i + 1) * size]
        nr, *args, ret = struct.unpack("<q6qq", chunk[:64])
        records.append((nr, tuple(a & (2**64 - 1) for a in args), ret, chunk[64:]))
    lines = out.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("close(4242)"))
    lines = [line for line in lines[start:] if not line.startswith(("+++", "---"))]
    return records, lines


def _region_reader(memory: bytes):
    def read(addr: int, length: int) -> bytes | None:
        if REGION <= addr and addr + length <= REGION + REGION_SIZE:
            return memory[addr - REGION : addr - REGION + length]
        return None

    return read


def test_matches_real_strace(probe_run: tuple[list[tuple], list[str]]) -> None:
    records, lines = probe_run
    assert len(records) > 150
    compared = 0
    mismatches = []
    for (nr, args, ret, memory), line in zip(records, lines):
        spec = SYSCALLS[nr]
        if spec.name in ENTRY_STATE_NEEDED:
            continue
        got = fmt.format_line(spec, args, ret, _region_reader(memory))
        compared += 1
        if got != line:
            mismatches.append(f"strace: {line}\nours:   {got}")
    assert not mismatches, "\n".join(mismatches)
    assert compared > 150


def test_exit_group_line_matches(probe_run: tuple[list[tuple], list[str]]) -> None:
    records, lines = probe_run
    assert lines[len(records)] == fmt.format_line(BY_NAME["exit_group"], (0,) * 6, 0, lambda a, n: None)


# --- hand-built memory ------------------------------------------------------


class Memory:
    """A sparse guest memory: bytes placed at addresses; anything else unreadable."""

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}

    def put(self, addr: int, data: bytes) -> int:
        self.chunks[addr] = data
        return addr

    def read(self, addr: int, length: int) -> bytes | None:
        for start, data in self.chunks.items():
            if start <= addr and addr + length <= start + len(data):
                return data[addr - start : addr - start + length]
        return None


def _call(name: str, *args: int) -> tuple:
    return BY_NAME[name], tuple(args) + (0,) * (6 - len(args))


def test_examples_from_strace() -> None:
    m = Memory()
    path = m.put(0x1000, b"/etc/passwd\0")
    buf = m.put(0x2000, b"hello\n" + b"\0" * 10)
    st = bytearray(144)
    struct.pack_into("<I", st, 24, 0o100644)
    struct.pack_into("<q", st, 48, 123)
    stat = m.put(0x3000, bytes(st))
    ts = m.put(0x4000, struct.pack("<qq", 1, 0))
    sin = m.put(0x5000, struct.pack("<HH4s8x", 2, 80 << 8 | 0, bytes([127, 0, 0, 1])))
    sun = m.put(0x5100, struct.pack("<H", 1) + b"/run/sock\0")
    argv_strings = [m.put(0x6000, b"ls\0"), m.put(0x6010, b"-l\0")]
    argv = m.put(0x6100, struct.pack("<3Q", *argv_strings, 0))
    envp = m.put(0x6200, struct.pack("<3Q", argv_strings[0], argv_strings[1], 0))
    iov = m.put(0x7000, struct.pack("<4Q", 0x2000, 2, 0x2002, 3))
    # clone3's struct clone_args as glibc's pthread_create fills it (strace 6.1's line,
    # without its " => {parent_tid=[...]}" after the call).
    clone_args = m.put(0x7100, struct.pack("<11Q", 0x3D0F00, 0x7F2077509990, 0x7F207750A990,
                                           0x7F207750A990, 0, 0x7F2076D0A000, 0x800300,
                                           0x7F207750A6C0, 0, 0, 0))
    cases = [
        (("openat", 2**64 - 100, path, abi.O_CLOEXEC, 0), 3, 'openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3'),
        (("openat", 0xFFFFFF9C, path, 0o101, 0o644), 3, 'openat(AT_FDCWD, "/etc/passwd", O_WRONLY|O_CREAT, 0644) = 3'),
        (("open", path, 0x800000, 0), -2, 'open("/etc/passwd", O_RDONLY|0x800000) = -1 ENOENT (No such file or directory)'),
        (("read", 3, buf, 4096), 6, 'read(3, "hello\\n", 4096) = 6'),
        (("read", 3, buf, 4096), -9, "read(3, 0x2000, 4096) = -1 EBADF (Bad file descriptor)"),
        (("write", 1, buf, 6), 6, 'write(1, "hello\\n", 6) = 6'),
        (("write", 1, 0xDEAD, 6), -14, "write(1, 0xdead, 6) = -1 EFAULT (Bad address)"),
        (("close", 3), 0, "close(3) = 0"),
        (("fstat", 3, stat), 0, "fstat(3, {st_mode=S_IFREG|0644, st_size=123, ...}) = 0"),
        (("nanosleep", ts, 0), 0, "nanosleep({tv_sec=1, tv_nsec=0}, NULL) = 0"),
        (("mmap", 0, 4096, 3, 0x22, 2**64 - 1, 0), 0x7F0000000000,
         "mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000"),
        (("mprotect", 0x7F0000000000, 4096, 0), 0, "mprotect(0x7f0000000000, 4096, PROT_NONE) = 0"),
        (("kill", 1234, 15), 0, "kill(1234, SIGTERM) = 0"),
        (("kill", 1234, 34), 0, "kill(1234, SIGRT_2) = 0"),
        (("connect", 3, sin, 16), -111,
         'connect(3, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("127.0.0.1")}, 16)'
         " = -1 ECONNREFUSED (Connection refused)"),
        (("connect", 3, sun, 12), 0, 'connect(3, {sa_family=AF_UNIX, sun_path="/run/sock"}, 12) = 0'),
        (("execve", argv_strings[0], argv, envp), 0, 'execve("ls", ["ls", "-l"], 0x6200 /* 2 vars */) = 0'),
        (("writev", 1, iov, 2), 5, 'writev(1, [{iov_base="he", iov_len=2}, {iov_base="llo", iov_len=3}], 2) = 5'),
        (("socket", 2, 1 | abi.O_CLOEXEC, 6), 4, "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP) = 4"),
        (("socket", 1, 2, 0), 4, "socket(AF_UNIX, SOCK_DGRAM, 0) = 4"),
        (("lseek", 3, 2**64 - 1, 9), -22, "lseek(3, -1, 0x9 /* SEEK_??? */) = -1 EINVAL (Invalid argument)"),
        (("umask", 0o22), 0o77, "umask(022) = 077"),
        (("exit_group", 1), 0, "exit_group(1) = ?"),
        (("getpid",), 42, "getpid() = 42"),
        (("fcntl", 3, 1), 1, "fcntl(3, F_GETFD) = 0x1 (flags FD_CLOEXEC)"),
        (("fcntl", 3, 4, 0o4000), 0, "fcntl(3, F_SETFL, O_RDONLY|O_NONBLOCK) = 0"),
        (("ioctl", 3, 0x5401, 0x2000), -25, "ioctl(3, TCGETS, 0x2000) = -1 ENOTTY (Inappropriate ioctl for device)"),
        (("ioctl", 3, 0x5451), 0, "ioctl(3, FIOCLEX) = 0"),
        (("ioctl", 3, 0x80045499, 0x10), -25,
         "ioctl(3, _IOC(_IOC_READ, 0x54, 0x99, 0x4), 0x10) = -1 ENOTTY (Inappropriate ioctl for device)"),
        (("futex", 0x2000, 128, 2, 0), -11,
         "futex(0x2000, FUTEX_WAIT_PRIVATE, 2, NULL) = -1 EAGAIN (Resource temporarily unavailable)"),
        (("futex", 0x2000, 129, 1), 1, "futex(0x2000, FUTEX_WAKE_PRIVATE, 1) = 1"),
        (("futex", 0x2000, 137 | 256, 0, 0, 0, 0xFFFFFFFF), 0,
         "futex(0x2000, FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME, 0, NULL, 0xffffffff) = 0"),
        (("clone", 0x1200011, 0, 0, 0x7F00, 0), 77,
         "clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f00) = 77"),
        (("clone3", clone_args, 88), 27990,
         "clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM"
         "|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, child_tid=0x7f207750a990, "
         "parent_tid=0x7f207750a990, exit_signal=0, stack=0x7f2076d0a000, stack_size=0x800300, "
         "tls=0x7f207750a6c0}, 88) = 27990"),
        (("unlinkat", 2**32 - 100, path, 0x200), 0, 'unlinkat(AT_FDCWD, "/etc/passwd", AT_REMOVEDIR) = 0'),
        (("wait4", 2**64 - 1, 0, 1, 0), -10, "wait4(-1, NULL, WNOHANG, NULL) = -1 ECHILD (No child processes)"),
        (("arch_prctl", 0x1002, 0x7F0000001000), 0, "arch_prctl(ARCH_SET_FS, 0x7f0000001000) = 0"),
        (("mknod", path, 0o20600, 0x103), 0, 'mknod("/etc/passwd", S_IFCHR|0600, makedev(0x1, 0x3)) = 0'),
        (("syscall_999",), -38, None),
    ]
    for (name, *args), ret, expected in cases:
        if expected is None:
            continue
        spec, regs = _call(name, *args)
        line = fmt.format_call(spec, regs, m.read, ret=ret) + " " + fmt.format_result(spec, regs, ret, m.read)
        assert line == expected, name


def test_string_escapes_and_truncation() -> None:
    assert fmt.quote_bytes(b'a"b\\c\n\t\r\v\f') == '"a\\"b\\\\c\\n\\t\\r\\v\\f"'
    assert fmt.quote_bytes(b"\x01" b"8" b"\x02" b"7" b"\x1b[0m\x07\x08\x00") == '"\\18\\0027\\33[0m\\7\\10\\0"'
    assert fmt.quote_bytes(b"\x18z", force_hex=True) == '"\\x18\\x7a"'
    m = Memory()
    long = m.put(0x1000, bytes(range(48, 48 + 40)))
    spec, regs = _call("write", 1, long, 40)
    assert fmt.format_call(spec, regs, m.read) == 'write(1, "0123456789:;<=>?@ABCDEFGHIJKLMNO"..., 40)'
    assert fmt.format_call(spec, regs, m.read, max_string=4) == 'write(1, "0123"..., 40)'
    name = m.put(0x3000, b"x" * 40 + b"\0")
    spec, regs = _call("memfd_create", name, 1)
    assert fmt.format_call(spec, regs, m.read) == f'memfd_create("{"x" * 32}"..., MFD_CLOEXEC)'


def test_duration_and_alignment() -> None:
    spec, regs = _call("close", 3)
    assert fmt.format_result(spec, regs, 0, lambda a, n: None, duration=0.0000123) == "= 0 <0.000012>"
    line = fmt.format_line(spec, regs, 0, lambda a, n: None)
    assert line == "close(3)" + " " * 32 + "= 0"
    assert line.index("=") == 40


def test_output_buffers_wait_for_the_result() -> None:
    m = Memory()
    m.put(0x2000, b"data")
    spec, regs = _call("read", 3, 0x2000, 4)
    assert fmt.format_call(spec, regs, m.read) == "read(3, 0x2000, 4)"
    assert fmt.format_call(spec, regs, m.read, ret=4) == 'read(3, "data", 4)'
    assert fmt.format_call(spec, regs, m.read, ret=2) == 'read(3, "da", 4)'


def test_flags_rendering() -> None:
    assert fmt.render_flags(abi.OPEN_FLAGS, 0o20200002) == "O_RDWR|O_TMPFILE"
    assert fmt.render_flags(abi.OPEN_FLAGS, 0o4010001) == "O_WRONLY|O_SYNC"
    assert fmt.render_flags(abi.PROT_FLAGS, 0) == "PROT_NONE"
    assert fmt.render_flags(abi.AT_FLAGS, 0) == "0"
    assert fmt.render_flags(abi.AT_FLAGS, 0x10000000) == "0x10000000 /* AT_??? */"
    assert fmt.render_flags(abi.CLONE_FLAGS, 0x11 | 0x100) == "CLONE_VM|SIGCHLD"
    assert fmt.render_flags(abi.MAP_FLAGS, 0x3 | 0x100000) == "MAP_SHARED_VALIDATE|MAP_FIXED_NOREPLACE"
    wait = fmt.render_flags(fmt.FlagSet("w", abi.WaitOptions), 0x40000001)
    assert wait == "WNOHANG|__WALL"
    assert fmt.render_mode(0o4755) == "04755"
    assert fmt.render_st_mode(0o41777) == "S_IFDIR|S_ISVTX|0777"
    assert fmt.render_sigset(struct.pack("<Q", (1 << 1) | (1 << 14))) == "[INT TERM]"
    assert fmt.render_sigset(struct.pack("<Q", ~(1 << 10) & (2**64 - 1))) == "~[SEGV]"
    assert fmt.render_rlim(8 << 20) == "8192*1024"
    assert fmt.render_rlim(2**64 - 1) == "RLIM64_INFINITY"


def test_wstatus_rendering() -> None:
    m = Memory()
    spec = BY_NAME["wait4"]
    for status, text in ((0x0100, "[{WIFEXITED(s) && WEXITSTATUS(s) == 1}]"),
                         (0x0009, "[{WIFSIGNALED(s) && WTERMSIG(s) == SIGKILL}]"),
                         (0x008B, "[{WIFSIGNALED(s) && WTERMSIG(s) == SIGSEGV && WCOREDUMP(s)}]"),
                         (0x137F, "[{WIFSTOPPED(s) && WSTOPSIG(s) == SIGSTOP}]")):
        m.put(0x100, struct.pack("<i", status))
        regs = (5, 0x100, 0, 0, 0, 0)
        assert fmt.format_call(spec, regs, m.read, ret=5) == f"wait4(5, {text}, 0, NULL)"


def test_decode_args_structured() -> None:
    m = Memory()
    path = m.put(0x1000, b"/etc/passwd\0")
    spec, regs = _call("openat", 2**64 - 100, path, abi.O_CLOEXEC | 0o100, 0o600)
    assert fmt.decode_args(spec, regs, m.read) == {
        "dirfd": "AT_FDCWD",
        "pathname": "/etc/passwd",
        "flags": ["O_RDONLY", "O_CREAT", "O_CLOEXEC"],
        "mode": 0o600,
    }
    spec, regs = _call("openat", 2**64 - 100, path, 0, 0o600)
    assert "mode" not in fmt.decode_args(spec, regs, m.read)
    sin = m.put(0x5000, struct.pack("<HH4s8x", 2, 0x5000, bytes([10, 0, 0, 1])))
    spec, regs = _call("connect", 3, sin, 16)
    decoded = fmt.decode_args(spec, regs, m.read)
    assert decoded["addr"] == {"sa_family": "AF_INET", "sin_port": 80, "sin_addr": "10.0.0.1"}
    spec, regs = _call("kill", 1, 9)
    assert fmt.decode_args(spec, regs, m.read) == {"pid": 1, "sig": "SIGKILL"}
    json.dumps(decoded)


# --- fuzzing ------------------------------------------------------------------

_NUMBERS = sorted(SYSCALLS) + [337, 500, 1000]
_FUZZ_BASE = 0x10000


def _fuzz_memory(blob: bytes, holes: list[int]):
    def read(addr: int, length: int) -> bytes | None:
        if length > 1 << 20:
            return None
        offset = addr - _FUZZ_BASE
        if offset < 0 or offset + length > len(blob):
            return None
        if any(offset <= h * 256 < offset + length for h in holes):
            return None
        return blob[offset : offset + length]

    return read


_register = st.one_of(
    st.integers(0, 2**64 - 1),
    st.integers(0, 64),
    st.integers(_FUZZ_BASE, _FUZZ_BASE + 4096),
    st.sampled_from([0, 2**64 - 100, 2**32 - 1, 2**63, 0o100 | 0o20000000, 0xFFFFFFFFFFFFF000]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    number=st.sampled_from(_NUMBERS),
    regs=st.tuples(*[_register] * 6),
    ret=st.one_of(st.integers(-4200, 4200), st.integers(0, 2**64 - 1)),
    blob=st.binary(min_size=0, max_size=4096),
    holes=st.lists(st.integers(0, 16), max_size=4),
    max_string=st.integers(0, 64),
)
def test_fuzz_never_raises(number, regs, ret, blob, holes, max_string) -> None:
    spec = SYSCALLS.get(number) or unknown_spec(number)
    read = _fuzz_memory(blob, holes)
    text = fmt.format_call(spec, regs, read, max_string=max_string)
    assert text.startswith(spec.name + "(") and text.endswith(")")
    fmt.format_call(spec, regs, read, max_string=max_string, ret=ret)
    assert fmt.format_result(spec, regs, ret, read, duration=0.5).startswith("=")
    fmt.format_line(spec, regs, ret, read)
    json.dumps(fmt.decode_args(spec, regs, read, ret=ret))
    json.dumps(fmt.decode_args(spec, regs, read))
    pointer_extents(spec, regs, read)


def test_every_call_formats_with_zero_registers() -> None:
    for spec in SYSCALLS.values():
        assert fmt.format_call(spec, (0,) * 6, lambda a, n: None).startswith(spec.name + "(")
