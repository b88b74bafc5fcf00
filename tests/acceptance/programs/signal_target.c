/* Which thread takes a signal another process sends the whole process: Linux wakes
 * the thread kill(2) names (the group leader) when it can take it, and only that
 * thread takes it, even while other threads run. CPython relies on it: its handlers
 * run in the main thread only, so a SIGINT another thread took reached Python late
 * or, with the main thread asleep in poll, not at all (http.server ignored it). */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 2
#define ROUNDS 20

static volatile sig_atomic_t taken_by_leader, taken_elsewhere, stop;
/* Each signal taken is acknowledged before the next is sent: a second SIGUSR1 sent
 * while the first is still pending would merge with it (a standard signal is
 * pending once), and the count would never be reached, on a loaded machine even
 * natively. */
static int acknowledged[2];

static void on_signal(int signo)
{
    (void)signo;
    if (syscall(SYS_gettid) == getpid())
        taken_by_leader++;
    else
        taken_elsewhere++;
    char taken = 1;
    (void)!write(acknowledged[1], &taken, 1);
}

static void *spinner(void *unused)
{
    (void)unused;
    while (!stop)
        ;
    return NULL;
}

int main(void)
{
    pthread_t workers[WORKERS];
    if (pipe(acknowledged) != 0)
        return 1;
    signal(SIGUSR1, on_signal);
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&workers[i], NULL, spinner, NULL);
    pid_t leader = getpid();
    pid_t sender = fork();
    if (sender == 0) {
        for (int round = 0; round < ROUNDS; round++) {
            char taken;
            kill(leader, SIGUSR1);
            if (read(acknowledged[0], &taken, 1) != 1)
                _exit(1);
            usleep(20000);
        }
        _exit(0);
    }
    while (taken_by_leader + taken_elsewhere < ROUNDS)
        poll(NULL, 0, 50);          /* the leader asleep, as a server's select loop */
    stop = 1;
    waitpid(sender, NULL, 0);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(workers[i], NULL);
    /* Linux's choice is a preference, not a promise (a leader still flagged for an
     * earlier signal passes one on), so: most of them. */
    printf("signals taken by the leader: %s\n",
           taken_by_leader >= ROUNDS * 3 / 4 ? "most" : "few");
    return 0;
}
