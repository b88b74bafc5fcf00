/* Queued signals and what a handler's siginfo says of their sender: sigqueue to
 * the process and pthread_sigqueue to one thread (si_value reaches the handler and
 * sigtimedwait), kill/tgkill/raise (si_code, si_pid, si_uid), and Linux's rule
 * that only a process signalling itself may claim a kill()/tkill() origin. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t got_signo, got_code, got_value, got_from_me, got_tid;

static void on_signal(int signo, siginfo_t *info, void *context)
{
    (void)context;
    got_signo = signo;
    got_code = info->si_code;
    got_value = info->si_value.sival_int;
    got_from_me = info->si_pid == getpid() && info->si_uid == getuid();
    got_tid = (int)syscall(SYS_gettid);
}

static void report(const char *what)
{
    printf("%s: signo %d code %d value %d from-me %d\n", what, (int)got_signo,
           (int)got_code, (int)got_value, (int)got_from_me);
    got_signo = got_code = got_value = got_from_me = 0;
}

static pid_t worker_tid;
static volatile int worker_done;
static pthread_barrier_t ready;

static void *worker(void *unused)
{
    (void)unused;
    worker_tid = (pid_t)syscall(SYS_gettid);
    pthread_barrier_wait(&ready);
    while (!got_signo)
        usleep(1000);
    worker_done = got_tid == worker_tid;
    return NULL;
}

int main(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_signal;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &action, NULL);
    sigaction(SIGRTMIN, &action, NULL);

    union sigval value = {.sival_int = 42};
    printf("sigqueue: %d\n", sigqueue(getpid(), SIGUSR1, value));
    report("  handler");

    kill(getpid(), SIGUSR1);
    report("kill");
    syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGUSR1);
    report("tgkill");

    /* pthread_sigqueue: rt_tgsigqueueinfo to another thread, which must take it. */
    pthread_t thread;
    pthread_barrier_init(&ready, NULL, 2);
    pthread_create(&thread, NULL, worker, NULL);
    pthread_barrier_wait(&ready);
    value.sival_int = 7;
    printf("pthread_sigqueue: %d\n", pthread_sigqueue(thread, SIGRTMIN, value));
    pthread_join(thread, NULL);
    printf("  taken by that thread: %d\n", worker_done);
    report("  handler");

    /* sigtimedwait sees the queued value too. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &set, NULL);
    value.sival_int = 99;
    sigqueue(getpid(), SIGRTMIN, value);
    siginfo_t info;
    struct timespec second = {1, 0};
    int signo = sigtimedwait(&set, &info, &second);
    printf("sigtimedwait: %d code %d value %d from-me %d\n", signo == SIGRTMIN, info.si_code,
           info.si_value.sival_int, info.si_pid == getpid());

    /* A siginfo claiming kill()'s origin, to another process: EPERM. */
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    memset(&info, 0, sizeof info);
    info.si_code = SI_USER;
    long result = syscall(SYS_rt_sigqueueinfo, child, SIGTERM, &info);
    printf("SI_USER to a child: %ld %s\n", result, result ? strerror(errno) : "");
    info.si_code = SI_QUEUE;
    result = syscall(SYS_rt_sigqueueinfo, child, SIGTERM, &info);
    int status;
    waitpid(child, &status, 0);
    printf("SI_QUEUE to a child: %ld, it died of %d\n", result, WTERMSIG(status));
    result = syscall(SYS_rt_sigqueueinfo, getpid(), SIGUSR1, (void *)8);
    printf("bad pointer: %ld %s\n", result, strerror(errno));

    /* A child of fork starts with none of its parent's pending signals. */
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, NULL);
    kill(getpid(), SIGUSR2);
    child = fork();
    if (child == 0) {
        sigset_t pending;
        sigpending(&pending);
        _exit(sigismember(&pending, SIGUSR2));
    }
    waitpid(child, &status, 0);
    sigset_t pending;
    sigpending(&pending);
    printf("pending in the parent %d, in the child of fork %d\n",
           sigismember(&pending, SIGUSR2), WEXITSTATUS(status));
    signal(SIGUSR2, SIG_IGN);          /* drops it */
    return 0;
}
