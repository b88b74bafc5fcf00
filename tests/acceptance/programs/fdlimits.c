#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
/* RLIMIT_NOFILE as a program sees and meets it: its value, the descriptor at which
   open fails (EMFILE), dup2 and F_DUPFD at the limit, and the same after lowering it. */
static void fill(const char *when) {
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    printf("%s: soft=%llu hard=%llu\n", when, (unsigned long long)lim.rlim_cur,
           (unsigned long long)lim.rlim_max);
    if (lim.rlim_cur > 4096) {
        printf("too many to fill\n");
        return;
    }
    int fd, last = -1;
    while ((fd = open("/dev/null", O_RDONLY)) >= 0) last = fd;
    printf("open fails after %d: %s\n", last, strerror(errno));
    int result = dup2(0, (int)lim.rlim_cur);
    printf("dup2 to the limit: %d %s\n", result, strerror(errno));
    result = fcntl(0, F_DUPFD, (int)lim.rlim_cur);
    printf("F_DUPFD at the limit: %d %s\n", result, strerror(errno));
    close(last / 2);
    printf("the hole is reused: %d\n", open("/dev/null", O_RDONLY) == last / 2);
    for (fd = 3; fd <= last; fd++) close(fd);
}
static void report(const char *what, long result) {
    printf("%s: %ld %s\n", what, result, strerror(result < 0 ? errno : 0));
}
/* The descriptor calls' edge cases: unsigned numbers, flags, ranges. */
static void edges(void) {
    report("F_DUPFD -1", fcntl(0, F_DUPFD, -1));
    int a = fcntl(0, F_DUPFD_CLOEXEC, 40);
    report("F_DUPFD_CLOEXEC 40", a);
    report("F_GETFD of it", fcntl(a, F_GETFD));
    report("dup3 same", dup3(a, a, O_CLOEXEC));
    report("dup3 bad flags", dup3(a, a + 1, 1));
    report("dup3 to the next", dup3(a, a + 1, 0));
    report("F_GETFD of the next", fcntl(a + 1, F_GETFD));
    report("dup2 to -1", dup2(0, -1));
    report("close_range reversed", syscall(SYS_close_range, a + 1, a, 0));
    report("close_range bad flags", syscall(SYS_close_range, a, a + 1, 0x80));
    report("close_range cloexec", syscall(SYS_close_range, a + 1, a + 1, 4));
    report("F_GETFD of the next", fcntl(a + 1, F_GETFD));
    report("close_range", syscall(SYS_close_range, a, a + 1, 0));
    report("close", close(a));
    report("F_GETFD of the next", fcntl(a + 1, F_GETFD));
}
int main(void) {
    edges();
    fill("start");
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = 20;
    printf("lowered: %d\n", setrlimit(RLIMIT_NOFILE, &lim));
    fill("lowered");
    lim.rlim_max = lim.rlim_max + 1;
    errno = 0;
    int raised = setrlimit(RLIMIT_NOFILE, &lim);
    printf("raise hard: %d %s\n", raised, strerror(raised ? errno : 0));
    return 0;
}
