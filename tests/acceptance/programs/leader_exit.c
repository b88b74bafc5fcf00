/* The main thread exits (pthread_exit) while another runs on: the process lives on,
 * /proc/self/task still lists the leader (a zombie, as on Linux), a signal sent to
 * the process is taken by the remaining thread, and its exit() is the status. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/syscall.h>
static volatile int got;
static void on_usr1(int s) { got = (int)syscall(SYS_gettid); }
static void *worker(void *arg) {
    pid_t me = (pid_t)syscall(SYS_gettid);
    usleep(200000);
    DIR *d = opendir("/proc/self/task"); int n = 0; struct dirent *e;
    while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
    closedir(d);
    printf("worker alive after main exited; tasks listed %d\n", n);
    kill(getpid(), SIGUSR1);
    while (!got) usleep(1000);
    printf("process signal handled by the worker: %s\n", got == me ? "yes" : "no");
    fflush(stdout);
    exit(4);
}
int main(void) {
    signal(SIGUSR1, on_usr1);
    pthread_t t; pthread_create(&t, NULL, worker, NULL);
    pthread_exit(NULL);
}
