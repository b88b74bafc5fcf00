/* Signals sent to several threads at once keep each thread's own siginfo: each of
 * four sleeping threads gets a tgkill of the same signal, and its handler sees
 * SI_TKILL from its own process (one siginfo per process used to be kept, so all
 * but the first thread saw si_code 0 and si_pid 0). glibc's setuid in a threaded
 * process relies on it: it sends SIGSETXID to every thread and each handler acts
 * only on a SI_TKILL from its own pid, so setuid used to hang forever. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define THREADS 4

static pid_t tids[THREADS];
static volatile sig_atomic_t from_me[THREADS], codes[THREADS];
static __thread int my_index;
static pthread_barrier_t started;

static void on_signal(int signo, siginfo_t *info, void *context)
{
    (void)signo;
    (void)context;
    from_me[my_index] = info->si_pid == getpid() && info->si_uid == getuid();
    codes[my_index] = info->si_code;
}

static void *sleeper(void *index)
{
    my_index = (int)(long)index;
    tids[my_index] = (pid_t)syscall(SYS_gettid);
    pthread_barrier_wait(&started);
    usleep(300000);             /* interrupted by the signal, as natively */
    return NULL;
}

static void run_sleepers(void (*between)(void))
{
    pthread_t threads[THREADS];
    pthread_barrier_init(&started, NULL, THREADS + 1);
    for (long i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, sleeper, (void *)i);
    pthread_barrier_wait(&started);
    usleep(50000);              /* all asleep */
    between();
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&started);
}

static void signal_each(void)
{
    for (int i = 0; i < THREADS; i++)
        syscall(SYS_tgkill, getpid(), tids[i], SIGUSR1);
}

static void set_own_uid(void)
{
    /* Broadcast to every thread by glibc even when nothing changes. */
    printf("setuid: %d\n", setuid(getuid()));
}

int main(void)
{
    struct sigaction action = {.sa_sigaction = on_signal, .sa_flags = SA_SIGINFO};
    sigaction(SIGUSR1, &action, NULL);
    run_sleepers(signal_each);
    for (int i = 0; i < THREADS; i++)
        printf("thread %d: from me %d, code %d\n", i, (int)from_me[i], (int)codes[i]);
    run_sleepers(set_own_uid);
    printf("uid after: %s\n", getuid() == geteuid() ? "same" : "differs");
    return 0;
}
