#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    unsigned char r[16];
    printf("getrandom=%zd\n", getrandom(r, sizeof r, 0));
    struct timespec a, b, d = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    nanosleep(&d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("slept>=20ms: %d\n", ms >= 20);
    struct timespec rt;
    printf("realtime ok: %d\n", clock_gettime(CLOCK_REALTIME, &rt) == 0 && rt.tv_sec > 1600000000);
    errno = 0;
    printf("read bad fd: %zd %s\n", read(999, r, 1), strerror(errno));
    printf("write bad ptr: %zd %s\n", write(1, (void *)16, 5), strerror(errno));
    printf("close bad: %d %s\n", close(-1), strerror(errno));
    struct utsname u;
    uname(&u);
    printf("sysname=%s machine=%s\n", u.sysname, u.machine);
    printf("pid>0: %d ppid>0: %d\n", getpid() > 0, getppid() > 0);
    char cwd[4096];
    printf("getcwd ok: %d\n", getcwd(cwd, sizeof cwd) != NULL);
    return 0;
}
