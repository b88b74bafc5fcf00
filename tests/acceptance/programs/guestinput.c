/* Hostile and everyday input to the calls kvmdune emulates or copies itself: every
 * bad pointer must come back as the errno Linux gives (never a dead VMM), and the
 * calls whose results are counts of records (epoll_wait) must copy back exactly
 * what Linux writes. Output is compared with the native run byte for byte. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BAD ((void *)8)
#define KERNEL ((void *)0xffff800000001000UL)
#define NONCANONICAL ((void *)0x0000900000000000UL)

static void report(const char *what, long result) {
    if (result < 0)
        printf("%-28s -1 %s\n", what, strerrorname_np(errno));
    else
        printf("%-28s %ld\n", what, result);
}

static void bad_pointers(void *p, const char *label) {
    char name[64];
#define CALL(text, ...) (snprintf(name, sizeof name, "%s %s", text, label), \
                         report(name, syscall(__VA_ARGS__)))
    CALL("rt_sigpending", SYS_rt_sigpending, p, 8);
    CALL("rt_sigaction act", SYS_rt_sigaction, SIGUSR1, p, NULL, 8);
    CALL("rt_sigaction old", SYS_rt_sigaction, SIGUSR1, NULL, p, 8);
    CALL("rt_sigprocmask", SYS_rt_sigprocmask, SIG_BLOCK, p, NULL, 8);
    CALL("rt_sigprocmask old", SYS_rt_sigprocmask, SIG_BLOCK, NULL, p, 8);
    CALL("rt_sigsuspend", SYS_rt_sigsuspend, p, 8);
    CALL("rt_sigtimedwait", SYS_rt_sigtimedwait, p, NULL, NULL, 8);
    CALL("sigaltstack", SYS_sigaltstack, p, NULL);
    CALL("sigaltstack old", SYS_sigaltstack, NULL, p);
    CALL("poll", SYS_poll, p, 1, 0);
    CALL("ppoll", SYS_ppoll, p, 1, NULL, NULL, 8);
    CALL("select", SYS_select, 1, p, NULL, NULL, NULL);
    CALL("pselect6 timeout", SYS_pselect6, 0, NULL, NULL, NULL, p, NULL);
    CALL("futex", SYS_futex, p, 0 /* FUTEX_WAIT */, 1, NULL, NULL, 0);
    CALL("getrlimit", SYS_getrlimit, RLIMIT_NOFILE, p);
    CALL("setrlimit", SYS_setrlimit, RLIMIT_NOFILE, p);
    CALL("prlimit64 old", SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, p);
    CALL("pipe", SYS_pipe, p);
    CALL("pipe2", SYS_pipe2, p, 0);
    CALL("socketpair", SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, p);
    CALL("readlink path", SYS_readlink, p, name, sizeof name);
    CALL("readlink buf", SYS_readlink, "/proc/self/exe", p, 16);
    CALL("arch_prctl get_fs", SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, p);
    CALL("prctl get_name", SYS_prctl, 16 /* PR_GET_NAME */, p, 0, 0, 0);
    CALL("sendmsg", SYS_sendmsg, 1, p, 0);
    CALL("recvmsg", SYS_recvmsg, 0, p, MSG_DONTWAIT);
    CALL("execve", SYS_execve, p, NULL, NULL);
    CALL("get_mempolicy", SYS_get_mempolicy, p, NULL, 0, NULL, 0);
    CALL("mincore vec", SYS_mincore, (void *)((unsigned long)name & ~4095UL), 4096, p);
    CALL("clock_gettime", SYS_clock_gettime, CLOCK_MONOTONIC, p);
    CALL("uname", SYS_uname, p);
    CALL("openat", SYS_openat, AT_FDCWD, p, 0);
    CALL("read", SYS_read, 0, p, 0);
    CALL("write", SYS_write, 1, p, 5);
#undef CALL
}

static void epoll_counts(void) {
    int fds[2];
    pipe(fds);
    write(fds[1], "x", 1);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = 0x1122334455667788UL};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &event);
    struct epoll_event events[4];
    memset(events, 0xAA, sizeof events);
    int n = epoll_wait(ep, events, 4, 1000);
    printf("epoll_wait %d events=%#x data=%#lx\n", n, events[0].events, (unsigned long)events[0].data.u64);
    const unsigned char *bytes = (const unsigned char *)&events[1];
    int untouched = 1;
    for (size_t i = 0; i < 3 * sizeof events[0]; i++)
        untouched &= bytes[i] == 0xAA;
    printf("epoll_wait left the rest alone: %d\n", untouched);
    report("epoll_wait bad events", epoll_wait(ep, BAD, 4, 0));
}

static void signals_waited_for(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct timespec short_wait = {0, 50 * 1000 * 1000};
    report("sigtimedwait timeout", sigtimedwait(&set, NULL, &short_wait));
    kill(getpid(), SIGUSR1);
    siginfo_t info;
    long got = sigtimedwait(&set, &info, &short_wait);
    printf("sigtimedwait %ld signo=%d code=%d from self=%d\n", got, info.si_signo,
           info.si_code, info.si_pid == getpid());
    int signo = 0;
    raise(SIGUSR1);
    printf("sigwait %d %d\n", sigwait(&set, &signo), signo);
    struct timespec bad_time = {0, 2000000000L};
    report("sigtimedwait bad timeout", sigtimedwait(&set, NULL, &bad_time));
}

static void memory_questions(void) {
    int mode = 7;
    unsigned long mask[2] = {5, 5};
    report("get_mempolicy", syscall(SYS_get_mempolicy, &mode, mask, 128, NULL, 0));
    printf("  mode=%d mask=%#lx\n", mode, mask[0]);
    report("get_mempolicy addr", syscall(SYS_get_mempolicy, &mode, mask, 128, &mode, 2));
    printf("  mode=%d mask=%#lx\n", mode, mask[0]);
    report("get_mempolicy huge mask", syscall(SYS_get_mempolicy, &mode, BAD, 1UL << 62, NULL, 0));
    report("get_mempolicy bad flags", syscall(SYS_get_mempolicy, &mode, NULL, 0, NULL, 64));
    char *page = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page[0] = 1;
    unsigned char vec[3] = {9, 9, 9};
    report("mincore", syscall(SYS_mincore, page, 3 * 4096, vec));
    printf("  vec=%d,%d,%d\n", vec[0], vec[1] & 1, vec[2] & 1);
    munmap(page + 4096, 4096);
    report("mincore hole", syscall(SYS_mincore, page, 3 * 4096, vec));
    /* A read runs into the hole: Linux fills the mapped part and says how much. */
    int zero = open("/dev/zero", O_RDONLY);
    report("read into a hole", read(zero, page + 4000, 200));
    report("read an absurd length", syscall(SYS_read, zero, page, ~0UL));
    report("getrandom into a hole", syscall(SYS_getrandom, page + 4000, 200, 0));
    close(zero);
    report("mincore unaligned", syscall(SYS_mincore, page + 1, 4096, vec));
}

static void on_alarm(int signo) { (void)signo; }

/* Outputs Linux writes only in part (value-result lengths) or only when interrupted
 * (the remaining time of a sleep): the guest's other bytes stay as they were. */
static void partial_outputs(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    unsigned char option[16];
    memset(option, 0xAA, sizeof option);
    socklen_t length = sizeof option;
    int r = getsockopt(s, SOL_SOCKET, SO_TYPE, option, &length);
    printf("getsockopt %d length=%u beyond=%02x%02x\n", r, length, option[4], option[15]);
    unsigned char address[128];
    memset(address, 0xAA, sizeof address);
    length = sizeof address;
    r = getsockname(s, (struct sockaddr *)address, &length);
    printf("getsockname %d length=%u beyond=%02x%02x\n", r, length, address[16], address[127]);
    close(s);
    struct timespec remaining = {77, 77};
    r = nanosleep(&(struct timespec){0, 1000}, &remaining);
    printf("nanosleep %d remaining untouched=%d\n", r, remaining.tv_sec == 77 && remaining.tv_nsec == 77);
    struct sigaction action = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &action, NULL);
    alarm(1);
    r = nanosleep(&(struct timespec){3, 0}, &remaining);
    printf("nanosleep interrupted %d %s remaining in (1, 3) s=%d\n", r, strerrorname_np(errno),
           remaining.tv_sec >= 1 && remaining.tv_sec < 3);
}

int main(void) {
    bad_pointers(BAD, "small");
    bad_pointers(KERNEL, "kernel");
    bad_pointers(NONCANONICAL, "noncanonical");
    epoll_counts();
    signals_waited_for();
    memory_questions();
    partial_outputs();
    puts("the end");
    return 0;
}
