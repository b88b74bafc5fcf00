/* rt_sigaction at its edges, through the raw system call (the kernel's struct
 * sigaction): Linux's order of checks (the size, reading the new action, the signal
 * number, writing the old one, after the change), the old action as Linux writes it
 * back (flags outside its set cleared, SIGKILL/SIGSTOP out of the mask), pointers
 * that fault or straddle a page; then handlers installed this way taking signals (a
 * raise, a kill from another process, SIGCHLD), SA_RESETHAND, a handler without
 * SA_RESTORER, a pending signal dropped when its action becomes ignored, and what
 * fork and execve keep.
 *
 * `sigactions DIR`: the probes (DIR unused). `sigactions after-exec`: what an
 * execve'd program finds. `sigactions loop N`: N rounds of queries and changes. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define KERNEL_SA_RESTORER 0x04000000UL

struct kernel_sigaction {
    uint64_t handler, flags, restorer, mask;
};

extern void restore_rt(void);
__asm__(".text\n"
        "restore_rt:\n"
        "    mov $15, %eax\n"      /* rt_sigreturn */
        "    syscall\n");

static volatile sig_atomic_t taken[65];

static void handler(int signo) { taken[signo]++; }

static void loud_handler(int signo) {
    (void)signo;
    static const char said[] = "  a handler ran\n";
    write(1, said, sizeof said - 1);
}

static long sigaction_raw(long signo, const void *act, void *old, long size) {
    long result = syscall(SYS_rt_sigaction, signo, act, old, size);
    return result < 0 ? -errno : result;
}

static const char *error_name(long result) {
    switch (result) {
    case 0: return "0";
    case -EINVAL: return "EINVAL";
    case -EFAULT: return "EFAULT";
    default: return "other";
    }
}

static const char *handler_name(uint64_t value) {
    if (value == (uint64_t)(uintptr_t)SIG_DFL)
        return "DFL";
    if (value == (uint64_t)(uintptr_t)SIG_IGN)
        return "IGN";
    if (value == (uint64_t)(uintptr_t)handler)
        return "handler";
    return "other";
}

static const char *restorer_name(uint64_t value) {
    if (value == 0)
        return "0";
    if (value == (uint64_t)(uintptr_t)restore_rt)
        return "restore_rt";
    return value == 0x1234 ? "0x1234" : "other";
}

static void show(const char *what, const struct kernel_sigaction *a) {
    printf("%s: handler %s flags %#llx restorer %s mask %#llx\n", what,
           handler_name(a->handler), (unsigned long long)a->flags,
           restorer_name(a->restorer), (unsigned long long)a->mask);
}

static struct kernel_sigaction action(void (*to)(int), uint64_t flags, uint64_t mask) {
    struct kernel_sigaction a = {(uint64_t)(uintptr_t)to, flags | KERNEL_SA_RESTORER,
                                 (uint64_t)(uintptr_t)restore_rt, mask};
    return a;
}

static void show_current(const char *what, int signo) {
    struct kernel_sigaction old;
    memset(&old, 0xa5, sizeof old);
    long result = sigaction_raw(signo, NULL, &old, 8);
    if (result != 0)
        printf("%s: %s\n", what, error_name(result));
    else
        show(what, &old);
}

static void errors(void) {
    struct kernel_sigaction act = action(handler, 0, 0), old;
    void *bad = (void *)16;
    printf("size 4: %s\n", error_name(sigaction_raw(SIGUSR1, &act, &old, 4)));
    printf("size 16: %s\n", error_name(sigaction_raw(SIGUSR1, NULL, &old, 16)));
    printf("size 4, bad act: %s\n", error_name(sigaction_raw(SIGUSR1, bad, &old, 4)));
    printf("signal 0: %s\n", error_name(sigaction_raw(0, NULL, &old, 8)));
    printf("signal 65: %s\n", error_name(sigaction_raw(65, &act, NULL, 8)));
    printf("signal -1: %s\n", error_name(sigaction_raw(-1, NULL, &old, 8)));
    printf("signal 2^32+10: %s\n", error_name(sigaction_raw((1L << 32) + 10, NULL, &old, 8)));
    printf("signal 0, bad act: %s\n", error_name(sigaction_raw(0, bad, NULL, 8)));
    printf("signal 0, bad old: %s\n", error_name(sigaction_raw(0, NULL, bad, 8)));
    printf("SIGKILL set: %s\n", error_name(sigaction_raw(SIGKILL, &act, NULL, 8)));
    printf("SIGSTOP set: %s\n", error_name(sigaction_raw(SIGSTOP, &act, NULL, 8)));
    show_current("SIGKILL query", SIGKILL);
    show_current("SIGSTOP query", SIGSTOP);
    printf("bad act: %s\n", error_name(sigaction_raw(SIGUSR1, bad, &old, 8)));
    show_current("after bad act", SIGUSR1);
    printf("query, no old: %s\n", error_name(sigaction_raw(SIGUSR1, NULL, NULL, 8)));
    /* The change is made before the old action's write faults, as Linux does. */
    printf("bad old: %s\n", error_name(sigaction_raw(SIGUSR1, &act, bad, 8)));
    show_current("after bad old", SIGUSR1);
    char *pages = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(pages + 4096, 4096, PROT_NONE);
    printf("act across a PROT_NONE page: %s\n",
           error_name(sigaction_raw(SIGUSR1, pages + 4096 - 16, &old, 8)));
    mprotect(pages, 4096, PROT_READ);
    printf("old in a read-only page: %s\n",
           error_name(sigaction_raw(SIGUSR2, &act, pages, 8)));
    show_current("after read-only old", SIGUSR2);
    mprotect(pages, 8192, PROT_READ | PROT_WRITE);
    struct kernel_sigaction straddling = action(SIG_DFL, 0, 0);
    memcpy(pages + 4096 - 16, &straddling, sizeof straddling);
    printf("act and old straddling pages: %s\n",
           error_name(sigaction_raw(SIGUSR2, pages + 4096 - 16, pages + 4096 - 8, 8)));
    memcpy(&old, pages + 4096 - 8, sizeof old);
    show("  the old one", &old);
    munmap(pages, 8192);
}

static void readback(void) {
    struct kernel_sigaction every = {(uint64_t)(uintptr_t)handler, ~0ULL, 0x1234, ~0ULL}, old;
    printf("every bit: %s\n", error_name(sigaction_raw(SIGUSR1, &every, NULL, 8)));
    show_current("  read back", SIGUSR1);
    struct kernel_sigaction plain = {(uint64_t)(uintptr_t)handler, 0, 0x1234, 0};
    printf("no SA_RESTORER: %s\n", error_name(sigaction_raw(SIGUSR1, &plain, &old, 8)));
    show("  the old one", &old);
    show_current("  read back", SIGUSR1);
    struct kernel_sigaction same = action(SIG_DFL, SA_RESTART, 1UL << (SIGHUP - 1));
    printf("act and old the same: %s\n", error_name(sigaction_raw(SIGUSR1, &same, &same, 8)));
    show("  the old one", &same);
    show_current("  read back", SIGUSR1);
    for (int signo = 32; signo <= 64; signo += 32) {
        struct kernel_sigaction rt = action(handler, SA_SIGINFO, 1UL << 63);
        sigaction_raw(signo, &rt, NULL, 8);
        char what[32];
        snprintf(what, sizeof what, "signal %d", signo);
        show_current(what, signo);
    }
}

static void delivery(void) {
    struct kernel_sigaction act = action(handler, 0, 0);
    sigaction_raw(SIGUSR1, &act, NULL, 8);
    raise(SIGUSR1);
    printf("raise: handler ran %d time(s)\n", taken[SIGUSR1]);
    sigaction_raw(SIGUSR2, &act, NULL, 8);
    sigset_t usr2, previous;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, &previous);
    pid_t child = fork();
    if (child == 0) {
        kill(getppid(), SIGUSR2);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    sigprocmask(SIG_SETMASK, &previous, NULL);
    printf("kill from another process: handler ran %d time(s)\n", taken[SIGUSR2]);
    sigaction_raw(SIGCHLD, &act, NULL, 8);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &previous);
    child = fork();
    if (child == 0)
        _exit(3);
    sigset_t wait_mask = previous;
    sigdelset(&wait_mask, SIGCHLD);
    while (!taken[SIGCHLD])
        sigsuspend(&wait_mask);
    sigprocmask(SIG_SETMASK, &previous, NULL);
    int status;
    waitpid(child, &status, 0);
    printf("SIGCHLD: handler ran %d time(s), child exit %d\n", taken[SIGCHLD],
           WEXITSTATUS(status));
    struct kernel_sigaction once = action(handler, SA_RESETHAND, 0);
    sigaction_raw(SIGUSR1, &once, NULL, 8);
    raise(SIGUSR1);
    printf("SA_RESETHAND: handler ran %d time(s)\n", taken[SIGUSR1]);
    show_current("  then", SIGUSR1);
}

static void pending(int signo, uint64_t made) {
    sigset_t set, seen;
    sigemptyset(&set);
    sigaddset(&set, signo);
    struct kernel_sigaction act = action(handler, 0, 0);
    sigaction_raw(signo, &act, NULL, 8);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(signo);
    sigpending(&seen);
    printf("signal %d pending before: %d\n", signo, sigismember(&seen, signo));
    struct kernel_sigaction ignoring = action((void (*)(int))(uintptr_t)made, 0, 0);
    sigaction_raw(signo, &ignoring, NULL, 8);
    sigpending(&seen);
    printf("  after its action became %s: %d\n", handler_name(made), sigismember(&seen, signo));
    int before = taken[signo];
    sigaction_raw(signo, &act, NULL, 8);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    printf("  handler ran %d time(s) once unblocked\n", taken[signo] - before);
}

/* A handler without SA_RESTORER: x86-64 Linux has no return stub to use. */
static void without_restorer(void) {
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        struct kernel_sigaction plain = {(uint64_t)(uintptr_t)loud_handler, 0, 0, 0};
        sigaction_raw(SIGUSR1, &plain, NULL, 8);
        raise(SIGUSR1);
        printf("without SA_RESTORER: handler ran %d time(s), and returned\n", taken[SIGUSR1]);
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    if (WIFSIGNALED(status))
        printf("without SA_RESTORER: killed by signal %d\n", WTERMSIG(status));
    else
        printf("without SA_RESTORER: exit %d\n", WEXITSTATUS(status));
}

static void set_for_inheritance(void) {
    struct kernel_sigaction handled = action(handler, SA_RESTART | SA_ONSTACK, 1UL << 5);
    struct kernel_sigaction ignored = action(SIG_IGN, SA_RESTART | SA_NODEFER, 1UL << 7);
    sigaction_raw(SIGUSR1, &handled, NULL, 8);
    sigaction_raw(SIGUSR2, &ignored, NULL, 8);
    sigaction_raw(SIGTERM, &handled, NULL, 8);
    sigaction_raw(SIGRTMIN + 1, &ignored, NULL, 8);
}

static void show_inherited(const char *where) {
    int signals[] = {SIGUSR1, SIGUSR2, SIGTERM, SIGRTMIN + 1};
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s, signal %d", where, signals[i]);
        show_current(what, signals[i]);
    }
}

static void inheritance(const char *self) {
    set_for_inheritance();
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        show_inherited("after fork");
        fflush(stdout);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    fflush(stdout);
    child = fork();
    if (child == 0) {
        execl(self, self, "after-exec", (char *)NULL);
        _exit(127);
    }
    waitpid(child, NULL, 0);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && !strcmp(argv[1], "after-exec")) {
        show_inherited("after exec");
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "loop")) {
        long rounds = strtol(argv[2], NULL, 10);
        struct kernel_sigaction act = action(handler, 0, 0);
        sigaction_raw(SIGUSR2, &act, NULL, 8);
        for (long i = 0; i < rounds; i++) {
            struct kernel_sigaction old, set = action(handler, SA_RESTART, 0),
                                         dfl = action(SIG_DFL, 0, 0);
            if (sigaction_raw(SIGUSR1, NULL, &old, 8) || sigaction_raw(SIGUSR1, &set, &old, 8)
                || sigaction_raw(SIGUSR1, &dfl, &old, 8) || old.handler != set.handler) {
                printf("round %ld failed\n", i);
                return 1;
            }
        }
        raise(SIGUSR2);
        printf("%ld rounds, handler ran %d time(s)\n", rounds, taken[SIGUSR2]);
        return 0;
    }
    errors();
    readback();
    delivery();
    pending(SIGUSR1, (uint64_t)(uintptr_t)SIG_IGN);
    pending(SIGWINCH, (uint64_t)(uintptr_t)SIG_DFL);
    pending(SIGURG, (uint64_t)(uintptr_t)SIG_IGN);
    without_restorer();
    inheritance(argv[0]);
    return 0;
}
