#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
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
int main(void) {
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
