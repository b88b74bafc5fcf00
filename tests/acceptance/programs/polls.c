#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
/* poll and ppoll at their edges, each answer printed (compared with the native
   run): ready and not, descriptors that are not open, negative ones, no
   descriptors, more than RLIMIT_NOFILE, unmapped arrays and timeouts, zero, null,
   nonzero and invalid timeouts, a signal mask, a wait a child ends.
   "loop N" polls a ready pipe N times (the fast path serves them). */

static void show(const char *what, long result, const struct pollfd *fds, int n) {
    if (result < 0) {
        printf("%s: -1 %s\n", what, strerrorname_np(errno));
    } else {
        printf("%s: %ld", what, result);
        for (int i = 0; i < n; i++)
            printf(" [%d %#x %#x]", fds[i].fd, fds[i].events, fds[i].revents);
        printf("\n");
    }
    fflush(stdout);
}

static long ppoll_raw(struct pollfd *fds, unsigned n, void *timeout, void *mask) {
    return syscall(SYS_ppoll, fds, n, timeout, mask, 8);
}

static int loop(long rounds) {
    int pipe_fds[2];
    if (pipe(pipe_fds) || write(pipe_fds[1], "x", 1) != 1)
        return 1;
    for (long i = 0; i < rounds; i++) {
        struct pollfd fds[2] = {{pipe_fds[0], POLLIN, 0}, {pipe_fds[1], POLLOUT, 0}};
        struct timespec zero = {0, 0};
        if (poll(fds, 2, -1) != 2 || ppoll_raw(fds, 2, i % 2 ? &zero : NULL, NULL) != 2) {
            printf("round %ld failed: %s\n", i, strerror(errno));
            return 1;
        }
    }
    printf("%ld rounds\n", rounds);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "loop") == 0)
        return loop(atol(argv[2]));
    int p[2], q[2];
    if (pipe(p) || pipe(q))
        return 1;
    struct pollfd fds[4] = {{p[0], POLLIN, 0}, {p[1], POLLOUT, 0}, {50, POLLIN, 0},
                            {-1, POLLIN, 0x55}};
    show("empty pipe, zero timeout", poll(fds, 1, 0), fds, 1);
    show("four, zero timeout", poll(fds, 4, 0), fds, 4);
    write(p[1], "data", 4);
    show("four after a write", poll(fds, 4, 1000), fds, 4);
    show("none, zero timeout", poll(NULL, 0, 0), fds, 0);
    show("none, 20 ms", poll(NULL, 0, 20), fds, 0);
    struct pollfd empty = {q[0], POLLIN, 0};
    show("empty pipe, 30 ms", poll(&empty, 1, 30), &empty, 1);
    void *volatile unmapped = (void *)8;           /* volatile: no compiler warning */
    show("unmapped array", poll(unmapped, 1, 0), fds, 0);
    struct timespec zero = {0, 0}, second = {1, 0}, invalid = {0, 2000000000};
    show("ppoll null timeout", ppoll_raw(fds, 4, NULL, NULL), fds, 4);
    show("ppoll zero timeout, empty", ppoll_raw(&empty, 1, &zero, NULL), &empty, 1);
    printf("  timeout after: %ld %ld\n", (long)zero.tv_sec, zero.tv_nsec);
    show("ppoll one second, ready", ppoll_raw(fds, 2, &second, NULL), fds, 2);
    show("ppoll invalid timeout", ppoll_raw(fds, 2, &invalid, NULL), fds, 2);
    show("ppoll unmapped timeout", ppoll_raw(fds, 2, unmapped, NULL), fds, 2);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    show("ppoll with a mask", ppoll_raw(fds, 2, &zero, &mask), fds, 2);
    pid_t child = fork();
    if (child == 0) {
        usleep(20000);
        write(q[1], "y", 1);
        _exit(0);
    }
    show("wait for a child's write", poll(&empty, 1, -1), &empty, 1);
    waitpid(child, NULL, 0);
    struct pollfd many[70];
    for (int i = 0; i < 70; i++)
        many[i] = (struct pollfd){p[0], POLLIN, 0};
    struct rlimit limit = {32, 32};
    setrlimit(RLIMIT_NOFILE, &limit);
    show("40 over a limit of 32", poll(many, 40, 0), many, 0);
    show("70 over a limit of 32", poll(many, 70, 0), many, 0);
    show("32 at a limit of 32", poll(many, 32, 0), many, 2);
    return 0;
}
