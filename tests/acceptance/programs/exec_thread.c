/* execve from a thread other than the main one, with a third thread busy: the other
 * threads end, the new program runs with the process id as its (only) thread's id. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
static char *self;
static int threads_in_proc(void) {
    DIR *d = opendir("/proc/self/task"); int n = 0; struct dirent *e;
    while (d && (e = readdir(d))) if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}
static void *busy(void *arg) { for (volatile long i = 0;; i++); return NULL; }
static void *execer(void *arg) {
    char pid[32];
    snprintf(pid, sizeof pid, "%d", getpid());
    usleep(100000);
    char *argv[] = {self, "after", pid, NULL};
    execv(self, argv);
    perror("execv");
    return NULL;
}
int main(int argc, char **argv) {
    self = argv[0];
    if (argc == 3 && !strcmp(argv[1], "after")) {
        printf("after execve: same pid %s, tid is pid %s, threads %d\n",
               getpid() == atoi(argv[2]) ? "yes" : "no",
               syscall(SYS_gettid) == getpid() ? "yes" : "no", threads_in_proc());
        return 5;
    }
    pthread_t t;
    pthread_create(&t, NULL, busy, NULL);
    pthread_create(&t, NULL, execer, NULL);
    printf("before execve: threads %d\n", threads_in_proc());
    fflush(stdout);
    for (;;) pause();
}
