/* The system calls kvmdune serves itself (its handlers) and a sample of those it
 * forwards, each with good arguments but one made hostile at a time: a pointer
 * (NULL, 8, the kernel half, non-canonical, a read-only page, 4 bytes before its
 * end, the unmapped page past it), then, where it is safe, an integer (-1 as int
 * and as long, the largest long, values whose low half is 0, 1000).  Prints one
 * line per call with the result's errno (or "ok"), so that the run under kvmdune
 * can be compared byte for byte with the native one.  Nothing here blocks (zero
 * timeouts, non-blocking pipes and sockets), ends the process (exec never gets a
 * usable argv), lets the kernel write past a buffer (no huge length where the
 * kernel fills what it is given) or acts outside the process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define INVALID_PID 0x3ffffff0L
#define ARCH_GET_FS 0x1003

struct template {
    const char *name;
    long nr;
    unsigned long args[6];
    unsigned positions;   /* bit i: argument i is a pointer to make hostile */
    unsigned nonnull;     /* bit i: never NULL there (it would block or exec) */
    unsigned ints;        /* bit i: an integer to make hostile too (none by default:
                             a huge length may let the kernel write past a buffer) */
};

static unsigned long hostile[7];
static const char *hostile_names[7] = {
    "NULL", "8", "kernel", "non-canonical", "read-only", "straddling", "past-end",
};
/* Integers: -1 as int and as long, the largest long, and two whose low half is 0. */
static const unsigned long hostile_ints[6] = {
    0xffffffffffffffffUL, 0xffffffffUL, 0x7fffffffffffffffUL, 0x8000000000000000UL,
    0xffff800000000000UL, 1000,
};

static void setup_pages(void)
{
    unsigned long base = (unsigned long)mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset((void *)base, 0xa5, PAGE);
    munmap((void *)(base + PAGE), PAGE);
    mprotect((void *)base, PAGE, PROT_READ);
    hostile[0] = 0;
    hostile[1] = 8;
    hostile[2] = 0xffff800000000000UL;
    hostile[3] = 0x0000800000000000UL;
    hostile[4] = base;
    hostile[5] = base + PAGE - 4;
    hostile[6] = base + PAGE;
}

static char buffer[4096] __attribute__((aligned(64)));
static char buffer2[4096] __attribute__((aligned(64)));
static fd_set readable;
static unsigned futex_word;
static socklen_t addrlen, optlen;

/* The good arguments' memory, as it was: calls write into it. */
static void reset_state(void)
{
    struct pollfd *pfd = (struct pollfd *)buffer2;
    int queued = 0;

    /* The second pipe (7, 8) always holds a byte for a read to take. */
    if (ioctl(7, FIONREAD, &queued) == 0 && queued == 0 && write(8, "y", 1) != 1)
        queued = -1;

    memset(buffer, 0, sizeof(buffer));
    memset(buffer2, 0, sizeof(buffer2));
    pfd->fd = 3;                        /* the pipe, which holds a byte */
    pfd->events = POLLIN;
    FD_ZERO(&readable);
    FD_SET(3, &readable);
    futex_word = 7;
    addrlen = 110;
    optlen = 4;
}

static void call(const struct template *t, const unsigned long *a, const char *what,
                 int position, const char *value)
{
    long result;

    reset_state();
    errno = 0;
    result = syscall(t->nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (result >= 0)
        printf("%s %s%d=%s: ok\n", t->name, what, position, value);
    else
        printf("%s %s%d=%s: %s\n", t->name, what, position, value, strerrorname_np(errno));
    fflush(stdout);
    /* Whatever a call opened or mapped: the next one starts the same. */
    syscall(SYS_close_range, 10, ~0U, 0);
    munmap((void *)hostile[6], PAGE);
}

/* Each hostile integer where ``t->ints`` allows, the pointers good. */
static void run_ints(const struct template *t)
{
    char name[24];
    int position, v;

    for (position = 0; position < 6; position++) {
        if (!(t->ints & (1u << position)))
            continue;
        for (v = 0; v < 6; v++) {
            unsigned long a[6];

            memcpy(a, t->args, sizeof(a));
            a[position] = hostile_ints[v];
            snprintf(name, sizeof(name), "%#lx", hostile_ints[v]);
            call(t, a, "int", position, name);
        }
    }
}

static void run(const struct template *t)
{
    int position, v;

    for (position = 0; position < 6; position++) {
        if (!(t->positions & (1u << position)))
            continue;
        for (v = 0; v < 7; v++) {
            unsigned long a[6];

            memcpy(a, t->args, sizeof(a));
            a[position] = hostile[v];
            if (v == 0 && (t->nonnull & (1u << position)))
                continue;
            call(t, a, "arg", position, hostile_names[v]);
        }
    }
}

/* clone(2) as fork, each pointer it takes hostile in turn (stack, parent tid,
 * child tid, TLS): whether a child was made, and how it ended (it exits with 7 at
 * once, or dies of SIGSEGV on a hostile stack). */
static void run_clone(void)
{
    const unsigned long flags = SIGCHLD | CLONE_PARENT_SETTID | CLONE_CHILD_SETTID
        | CLONE_CHILD_CLEARTID | CLONE_SETTLS;
    int position, v;

    for (position = 1; position <= 4; position++) {
        for (v = 0; v < 7; v++) {
            unsigned long a[5] = {flags, 0, 0, 0, 0};
            int status = 0;
            long child;

            a[position] = hostile[v];
            child = syscall(SYS_clone, a[0], a[1], a[2], a[3], a[4]);
            if (child == 0)
                syscall(SYS_exit_group, 7);     /* no libc: the TLS may be garbage */
            if (child > 0) {
                while (waitpid(child, &status, 0) < 0 && errno == EINTR)
                    ;
                printf("clone arg%d=%s: child, status %#x\n", position, hostile_names[v],
                       status);
            } else {
                printf("clone arg%d=%s: %s\n", position, hostile_names[v],
                       strerrorname_np(errno));
            }
            fflush(stdout);
        }
    }
}

int main(void)
{
    static struct timespec zero_ts;
    static struct timeval zero_tv;
    static char self_exe[] = "/proc/self/exe";
    static char true_path[] = "/bin/true";
    static char *true_argv[] = {true_path, NULL};
    static struct iovec iov = {buffer, 16};
    static struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    static char dot[] = ".";
    unsigned long buf = (unsigned long)buffer, buf2 = (unsigned long)buffer2;
    int pipe_fds[2], pair[2];
    unsigned long pfd = buf2, set = (unsigned long)&readable;
    size_t i;

    static const struct rlimit no_core = {0, 0};

    setrlimit(RLIMIT_CORE, &no_core);   /* clone children die on hostile stacks */
    setup_pages();
    /* Descriptors the templates use, at fixed numbers (the same in every run). */
    if (pipe(pipe_fds) || dup2(pipe_fds[0], 3) < 0 || dup2(pipe_fds[1], 4) < 0 ||
        socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, pair) || dup2(pair[0], 5) < 0 ||
        dup2(pair[1], 6) < 0) {
        perror("setup");
        return 2;
    }
    if (pipe2(pipe_fds, O_NONBLOCK) || dup2(pipe_fds[0], 7) < 0 || dup2(pipe_fds[1], 8) < 0) {
        perror("setup");
        return 2;
    }
    if (dup2(open("/", O_RDONLY | O_DIRECTORY), 9) < 0) {
        perror("setup");
        return 2;
    }
    syscall(SYS_close_range, 10, ~0U, 0);
    if (write(4, "x", 1) != 1)                  /* the pipe is readable */
        return 2;

    struct template templates[] = {
        {"rt_sigaction", SYS_rt_sigaction, {SIGUSR1, buf2, buf, 8}, 0x6, 0, 0x9},
        {"rt_sigprocmask", SYS_rt_sigprocmask, {SIG_BLOCK, buf2, buf, 8}, 0x6, 0, 0x9},
        {"rt_sigpending", SYS_rt_sigpending, {buf, 8}, 0x1, 0, 0x2},
        {"sigaltstack", SYS_sigaltstack, {0, buf}, 0x3},
        {"pipe", SYS_pipe, {buf}, 0x1},
        {"pipe2", SYS_pipe2, {buf, O_CLOEXEC}, 0x1, 0, 0x2},
        {"socketpair", SYS_socketpair, {AF_UNIX, SOCK_STREAM, 0, buf}, 0x8, 0, 0x7},
        {"getrlimit", SYS_getrlimit, {RLIMIT_NOFILE, buf}, 0x2, 0, 0x1},
        /* No hostile resource: the low half of some is RLIMIT_CPU, and {0, 0} kills. */
        {"setrlimit", SYS_setrlimit, {RLIMIT_CORE, buf}, 0x2},
        {"prlimit64", SYS_prlimit64, {0, RLIMIT_NOFILE, 0, buf}, 0x8, 0, 0x2},
        {"readlink", SYS_readlink, {(unsigned long)self_exe, buf, 64}, 0x3, 0, 0x4},
        {"readlinkat", SYS_readlinkat, {(unsigned long)-100, (unsigned long)self_exe, buf, 64}, 0x6, 0, 0x9},
        {"arch_prctl", SYS_arch_prctl, {ARCH_GET_FS, buf}, 0x2, 0, 0x1},
        {"futex_wake", SYS_futex, {(unsigned long)&futex_word, FUTEX_WAKE, 1}, 0x1, 0, 0x2},
        {"futex_wake_private", SYS_futex, {(unsigned long)&futex_word, FUTEX_WAKE_PRIVATE, 1}, 0x1, 0, 0x2},
        {"futex_wait", SYS_futex, {(unsigned long)&futex_word, FUTEX_WAIT_PRIVATE, 0,
                                   (unsigned long)&zero_ts}, 0x9, 0, 0x6},
        {"poll", SYS_poll, {pfd, 1, 0}, 0x1, 0, 0x6},
        {"ppoll", SYS_ppoll, {pfd, 1, (unsigned long)&zero_ts, 0, 8}, 0x5, 0, 0x12},
        {"select", SYS_select, {5, set, 0, 0, (unsigned long)&zero_tv}, 0x12, 0, 0x1},
        {"pselect6", SYS_pselect6, {5, set, 0, 0, (unsigned long)&zero_ts, 0}, 0x12, 0, 0x1},
        {"sendmsg", SYS_sendmsg, {5, (unsigned long)&msg, MSG_DONTWAIT}, 0x2, 0, 0x5},
        {"recvmsg", SYS_recvmsg, {6, (unsigned long)&msg, MSG_DONTWAIT}, 0x2, 0, 0x5},
        {"ioctl_fionread", SYS_ioctl, {3, FIONREAD, buf}, 0x4, 0, 0x3},
        {"fcntl_getown_ex", SYS_fcntl, {3, F_GETOWN_EX, buf}, 0x4, 0, 0x3},
        {"prctl_get_name", SYS_prctl, {PR_GET_NAME, buf}, 0x2, 0, 0x1},
        {"prctl_get_pdeathsig", SYS_prctl, {PR_GET_PDEATHSIG, buf}, 0x2, 0, 0x1},
        {"clone3", SYS_clone3, {buf, 88}, 0x1},
        /* NULL argv or envp is allowed: it would run /bin/true. */
        {"execve_path", SYS_execve, {(unsigned long)true_path, (unsigned long)true_argv, 0}, 0x1},
        {"execve_argv", SYS_execve, {(unsigned long)true_path, 0, 0}, 0x2, 0x2},
        {"execve_envp", SYS_execve, {(unsigned long)true_path, (unsigned long)true_argv, 0}, 0x4, 0x4},
        {"munmap", SYS_munmap, {0, PAGE}, 0x1},
        {"mprotect", SYS_mprotect, {0, PAGE, PROT_READ}, 0x1},
        {"madvise", SYS_madvise, {0, PAGE, MADV_DONTNEED}, 0x1},
        {"msync", SYS_msync, {0, PAGE, MS_SYNC}, 0x1},
        {"mlock", SYS_mlock, {0, PAGE}, 0x1},
        {"munlock", SYS_munlock, {0, PAGE}, 0x1},
        {"mremap", SYS_mremap, {0, PAGE, 2 * PAGE, MREMAP_MAYMOVE}, 0x1},
        {"mmap_fixed", SYS_mmap, {0, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                                  (unsigned long)-1, 0}, 0x1},
        {"rt_sigsuspend_size", SYS_rt_sigsuspend, {0, 4}, 0x1, 0, 0x2},
        /* Forwarded (the declarative forwarder checks their pointers). */
        {"read", SYS_read, {7, buf, 1}, 0x2, 0, 0x5},
        {"write", SYS_write, {8, buf, 1}, 0x2, 0, 0x1},
        {"readv", SYS_readv, {7, (unsigned long)&iov, 1}, 0x2, 0, 0x1},
        {"writev", SYS_writev, {8, (unsigned long)&iov, 1}, 0x2, 0, 0x1},
        {"openat", SYS_openat, {(unsigned long)-100, (unsigned long)self_exe, O_RDONLY}, 0x2, 0, 0x1},
        {"newfstatat", SYS_newfstatat, {9, (unsigned long)dot, buf, 0}, 0x6, 0, 0x9},
        {"fstat", SYS_fstat, {3, buf}, 0x2, 0, 0x1},
        {"getcwd", SYS_getcwd, {buf, 64}, 0x1, 0, 0x2},
        {"uname", SYS_uname, {buf}, 0x1},
        {"sysinfo", SYS_sysinfo, {buf}, 0x1},
        {"getrusage", SYS_getrusage, {RUSAGE_SELF, buf}, 0x2, 0, 0x1},
        {"clock_gettime", SYS_clock_gettime, {CLOCK_MONOTONIC, buf}, 0x2, 0, 0x1},
        {"clock_getres", SYS_clock_getres, {CLOCK_MONOTONIC, buf}, 0x2, 0, 0x1},
        {"gettimeofday", SYS_gettimeofday, {buf, 0}, 0x3},
        {"time", SYS_time, {buf}, 0x1},
        {"nanosleep", SYS_nanosleep, {(unsigned long)&zero_ts, 0}, 0x3},
        {"getrandom", SYS_getrandom, {buf, 8, 0}, 0x1, 0, 0x4},
        {"sched_getaffinity", SYS_sched_getaffinity, {0, 128, buf}, 0x4, 0, 0x2},
        {"getsockname", SYS_getsockname, {5, buf, (unsigned long)&addrlen}, 0x6, 0, 0x1},
        {"getsockopt", SYS_getsockopt, {5, SOL_SOCKET, SO_TYPE, buf, (unsigned long)&optlen}, 0x18, 0, 0x7},
        {"sendto", SYS_sendto, {5, buf, 4, MSG_DONTWAIT, 0, 0}, 0x2, 0, 0x9},
        {"set_robust_list", SYS_set_robust_list, {0, 24}, 0x1, 0, 0x2},
    };

    for (i = 0; i < sizeof(templates) / sizeof(templates[0]); i++)
        run(&templates[i]);
    for (i = 0; i < sizeof(templates) / sizeof(templates[0]); i++)
        run_ints(&templates[i]);
    run_clone();
    printf("hostile pointers: done\n");
    return 0;
}
