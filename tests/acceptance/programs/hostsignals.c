/* Signals that come from outside the program, as Linux hands them to it: a
 * real-time signal sent by another process (handled, with what its siginfo says of
 * the sender; left at its default; ignored), and POSIX timers, whose signals the
 * kernel raises: SIGEV_THREAD (glibc's helper thread takes its SIGTIMER),
 * SIGEV_SIGNAL at the process and SIGEV_THREAD_ID at one thread (si_code SI_TIMER,
 * si_timerid, si_value). A child's SIGCHLD, blocked, once its parent's wait has
 * seen it exit: rt_sigpending lists it and unblocking it runs the handler there and
 * then, each time.
 *
 * Usage: hostsignals MODE. The modes that wait for a signal from outside print
 * "ready" once they can take it. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_signo, got_code, got_from_parent, got_value, got_timer,
    got_overrun_ok, got_tid;

static void on_signal(int signo, siginfo_t *info, void *context)
{
    (void)context;
    got_code = info->si_code;
    got_from_parent = info->si_pid == getppid() && info->si_uid == getuid();
    if (info->si_code == SI_TIMER) {
        got_value = info->si_value.sival_int;
        got_timer = info->si_timerid;
        got_overrun_ok = info->si_overrun >= 0;
    }
    got_tid = (int)syscall(SYS_gettid);
    got_signo = signo;
}

static void handle(int signo, void (*handler)(int, siginfo_t *, void *), int flags)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = handler;
    action.sa_flags = SA_SIGINFO | flags;
    sigaction(signo, &action, NULL);
}

static void ready(void)
{
    printf("ready\n");
    fflush(stdout);
}

/* A handled real-time signal from another process (the test, our parent), taken
 * while waiting in pause(2), or in a blocking read(2) that it interrupts. */
static int rt_handled(int in_read)
{
    handle(SIGRTMIN + 1, on_signal, 0);
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0)
        return 1;
    ready();
    while (!got_signo) {
        if (in_read) {
            char byte;
            ssize_t got = read(pipe_fds[0], &byte, 1);
            printf("read: %zd %s\n", got, got < 0 ? strerror(errno) : "");
        } else {
            pause();
        }
    }
    printf("handled SIGRTMIN+%d: si_code %d, sent by our parent: %d\n",
           got_signo - SIGRTMIN, (int)got_code, (int)got_from_parent);
    return 0;
}

/* SIGRTMIN+1 at its default action (or ignored): the test then sends SIGUSR1,
 * which ends the wait. */
static int rt_default(int ignored)
{
    if (ignored)
        signal(SIGRTMIN + 1, SIG_IGN);
    handle(SIGUSR1, on_signal, 0);
    ready();
    while (!got_signo)
        pause();
    printf("still here after SIGRTMIN+1, then signal %d\n", (int)got_signo);
    return 0;
}

static sem_t ticks;

static void on_tick(union sigval value)
{
    (void)value;
    sem_post(&ticks);
}

/* SIGEV_THREAD: glibc's helper thread waits for SIGTIMER and starts the callback. */
static int timer_thread(void)
{
    sem_init(&ticks, 0, 0);
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD;
    event.sigev_notify_function = on_tick;
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &event, &timer) != 0) {
        perror("timer_create");
        return 1;
    }
    struct itimerspec period = {{0, 20000000}, {0, 20000000}};
    if (timer_settime(timer, 0, &period, NULL) != 0) {
        perror("timer_settime");
        return 1;
    }
    for (int i = 0; i < 3; i++)
        while (sem_wait(&ticks) != 0 && errno == EINTR)
            ;
    timer_delete(timer);
    printf("SIGEV_THREAD: the callback ran 3 times\n");
    return 0;
}

/* A one-shot timer (its id may be 0: timer_t is the kernel's id here). */
static int arm_timer(struct sigevent *event, int value, timer_t *timer)
{
    event->sigev_value.sival_int = value;
    if (timer_create(CLOCK_MONOTONIC, event, timer) != 0) {
        perror("timer_create");
        return -1;
    }
    struct itimerspec once = {{0, 0}, {0, 20000000}};
    return timer_settime(*timer, 0, &once, NULL);
}

static void report_timer(const char *what, timer_t timer, int value)
{
    printf("%s: signal SIGRTMIN+%d, si_code SI_TIMER: %d, si_value %d: %d, "
           "si_timerid is the timer's: %d, si_overrun >= 0: %d\n", what,
           got_signo - SIGRTMIN, got_code == SI_TIMER, value, got_value == value,
           got_timer == (int)(intptr_t)timer, (int)got_overrun_ok);
}

/* SIGEV_SIGNAL: the timer's signal goes to the process. */
static int timer_signal(void)
{
    handle(SIGRTMIN + 2, on_signal, 0);
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_SIGNAL;
    event.sigev_signo = SIGRTMIN + 2;
    timer_t timer;
    if (arm_timer(&event, 4242, &timer) != 0)
        return 1;
    while (!got_signo)
        pause();
    report_timer("SIGEV_SIGNAL", timer, 4242);
    timer_delete(timer);
    return 0;
}

static volatile pid_t target_tid;

static void *target(void *unused)
{
    (void)unused;
    target_tid = (pid_t)syscall(SYS_gettid);
    while (!got_signo)
        pause();
    return NULL;
}

/* SIGEV_THREAD_ID: the timer's signal goes to one thread, which runs the handler;
 * the main thread meanwhile waits for that thread in pthread_join. */
static int timer_thread_id(void)
{
    handle(SIGRTMIN + 3, on_signal, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, target, NULL);
    while (!target_tid)
        usleep(1000);
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = SIGRTMIN + 3;
    event._sigev_un._tid = target_tid;
    timer_t timer;
    if (arm_timer(&event, 77, &timer) != 0)
        return 1;
    pthread_join(thread, NULL);
    report_timer("SIGEV_THREAD_ID", timer, 77);
    printf("the handler ran on the target thread: %d\n", got_tid == target_tid);
    timer_delete(timer);
    return 0;
}

/* SIGCHLD blocked; a child exits and its parent's waitid(WNOWAIT) sees it (the
 * kernel raised SIGCHLD before waking the wait): rt_sigpending must list it, and
 * the unblock must run the handler before sigprocmask returns. Repeated, as the
 * VMM's threads race to take the host's signal. */
#define CHLD_ROUNDS 40

static volatile sig_atomic_t chld_handled;

static void on_chld(int signo)
{
    (void)signo;
    chld_handled++;
}

static int chld_unblock(void)
{
    signal(SIGCHLD, on_chld);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int unlisted = 0, late = 0;
    for (int round = 0; round < CHLD_ROUNDS; round++) {
        sigprocmask(SIG_BLOCK, &chld, NULL);
        chld_handled = 0;
        pid_t child = fork();
        if (child == 0)
            _exit(0);
        siginfo_t info;
        while (waitid(P_PID, child, &info, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
        }
        sigset_t pending;
        sigpending(&pending);
        unlisted += !sigismember(&pending, SIGCHLD);
        sigprocmask(SIG_UNBLOCK, &chld, NULL);
        late += chld_handled != 1;
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    printf("%d rounds: SIGCHLD not listed pending %d, not handled at the unblock %d\n",
           CHLD_ROUNDS, unlisted, late);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "rt-handled"))
        return rt_handled(0);
    if (!strcmp(mode, "rt-handled-in-read"))
        return rt_handled(1);
    if (!strcmp(mode, "rt-default"))
        return rt_default(0);
    if (!strcmp(mode, "rt-ignored"))
        return rt_default(1);
    if (!strcmp(mode, "timer-thread"))
        return timer_thread();
    if (!strcmp(mode, "timer-signal"))
        return timer_signal();
    if (!strcmp(mode, "timer-thread-id"))
        return timer_thread_id();
    if (!strcmp(mode, "chld-unblock"))
        return chld_unblock();
    fprintf(stderr, "usage: hostsignals MODE\n");
    return 2;
}
