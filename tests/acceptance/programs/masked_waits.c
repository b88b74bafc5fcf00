#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
/* Waits with a temporary signal mask, as GNU make's jobserver and shells use them:
 * SIGCHLD blocked, then pselect()/ppoll()/epoll_pwait() with a mask that lets it through (the
 * race-free idiom), the signal arriving before or during the wait; the handler runs
 * with the temporary mask (SIGUSR2, blocked outside the wait, is not blocked in it)
 * and the original one is back afterwards; a ready
 * descriptor wins over a pending signal; sigsuspend()'s frame restores the original
 * mask; a child's death while SIGCHLD is ignored interrupts nothing. */
static volatile sig_atomic_t handled;
static volatile sig_atomic_t usr2_blocked_in_handler;

static void on_signal(int signo) {
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    usr2_blocked_in_handler = sigismember(&now, SIGUSR2);
    handled++;
    (void)signo;
}

static int blocked(int signo) {
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    return sigismember(&now, signo);
}

/* A child that exits after ``delay_us``; returns once it is a zombie when ``settle``. */
static pid_t child_exiting(int delay_us, int settle) {
    pid_t pid = fork();
    if (pid == 0) {
        usleep(delay_us);
        _exit(7);
    }
    if (settle) {
        siginfo_t info;
        waitid(P_PID, pid, &info, WEXITED | WNOWAIT);   /* a zombie now, not reaped */
    }
    return pid;
}

static int reap(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WEXITSTATUS(status);
}

static void report(const char *what, int result, int saved_errno, pid_t child) {
    printf("%s: result %d errno %s, handled %d, SIGUSR2 blocked in handler %d, "
           "SIGCHLD and SIGUSR2 blocked after %d %d, child status %d\n", what, result,
           result < 0 ? strerror(saved_errno) : "-", handled, usr2_blocked_in_handler,
           blocked(SIGCHLD), blocked(SIGUSR2), reap(child));
    handled = 0;
    usr2_blocked_in_handler = 0;
}

static void pselect_case(const char *what, int fd, int delay_us, int settle) {
    sigset_t empty;
    sigemptyset(&empty);
    pid_t child = child_exiting(delay_us, settle);
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(fd, &readable);
    int result = pselect(fd + 1, &readable, NULL, NULL, NULL, &empty);
    report(what, result, errno, child);
}

static void ppoll_case(const char *what, int fd, int delay_us, int settle) {
    sigset_t empty;
    sigemptyset(&empty);
    pid_t child = child_exiting(delay_us, settle);
    struct pollfd entry = {.fd = fd, .events = POLLIN};
    int result = ppoll(&entry, 1, NULL, &empty);
    report(what, result, errno, child);
}

static void epoll_case(const char *what, int fd, int delay_us, int settle) {
    sigset_t empty;
    sigemptyset(&empty);
    int epoll = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event event = {.events = EPOLLIN}, out;
    epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
    pid_t child = child_exiting(delay_us, settle);
    int result = epoll_pwait(epoll, &out, 1, -1, &empty);
    report(what, result, errno, child);
    close(epoll);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigset_t chld_usr2 = chld;
    sigaddset(&chld_usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &chld_usr2, NULL);

    int quiet[2], ready[2];
    if (pipe(quiet) || pipe(ready))
        return 1;
    pselect_case("pselect, child dead before", quiet[0], 0, 1);
    pselect_case("pselect, child dies during", quiet[0], 100000, 0);
    ppoll_case("ppoll, child dead before", quiet[0], 0, 1);
    ppoll_case("ppoll, child dies during", quiet[0], 100000, 0);
    epoll_case("epoll_pwait, child dead before", quiet[0], 0, 1);
    epoll_case("epoll_pwait, child dies during", quiet[0], 100000, 0);

    write(ready[1], "x", 1);
    pselect_case("pselect, descriptor ready and child dead", ready[0], 0, 1);
    sigprocmask(SIG_UNBLOCK, &chld, NULL);
    printf("pending SIGCHLD handled once unblocked: %d\n", handled);
    handled = 0;

    /* sigsuspend: the handler's frame restores the mask from before the call. */
    sigset_t alrm, empty;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    sigemptyset(&empty);
    sigprocmask(SIG_BLOCK, &alrm, NULL);
    struct itimerval soon = {.it_value = {.tv_usec = 50000}};
    setitimer(ITIMER_REAL, &soon, NULL);
    int suspended = sigsuspend(&empty);
    printf("sigsuspend: %d %s, handled %d, SIGALRM blocked after %d\n", suspended,
           strerror(errno), handled, blocked(SIGALRM));
    handled = 0;

    /* SIGCHLD ignored (its default): a child's death does not interrupt a read. */
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_UNBLOCK, &chld, NULL);
    pid_t quick = child_exiting(0, 0);
    pid_t writer = fork();
    if (writer == 0) {
        usleep(200000);
        write(ready[1], "y", 1);
        _exit(0);
    }
    char byte = 0;
    ssize_t got = read(ready[0], &byte, 1);   /* the "x" written above first */
    got = read(ready[0], &byte, 1);
    printf("read while a child died: %zd %c %s\n", got, byte, got < 0 ? strerror(errno) : "-");
    reap(quick);
    reap(writer);
    return 0;
}
