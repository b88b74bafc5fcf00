/* The vDSO as a program sees it: the clocks it serves agree with the system calls
 * (never backwards across the two), and Linux's rules for its data pages. Prints
 * only what is the same on every run, for comparison with the native run. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 2000

static const struct { clockid_t id; const char *name; int monotonic; } CLOCKS[] = {
    {CLOCK_REALTIME, "realtime", 0},
    {CLOCK_MONOTONIC, "monotonic", 1},
    {CLOCK_PROCESS_CPUTIME_ID, "process_cputime", 1},
    {CLOCK_THREAD_CPUTIME_ID, "thread_cputime", 1},
    {CLOCK_MONOTONIC_RAW, "monotonic_raw", 1},
    {CLOCK_REALTIME_COARSE, "realtime_coarse", 0},
    {CLOCK_MONOTONIC_COARSE, "monotonic_coarse", 1},
    {CLOCK_BOOTTIME, "boottime", 1},
    {CLOCK_TAI, "tai", 0},
};

static long long ns(const struct timespec *t) { return t->tv_sec * 1000000000LL + t->tv_nsec; }

/* libc's clock_gettime (the vDSO's where there is one) and the system call,
 * interleaved: a monotonic clock never reads less than the read before it. */
static void check_clock(clockid_t id, const char *name, int monotonic) {
    struct timespec a, b;
    long long last = 0;
    int backwards = 0;
    for (int i = 0; i < ROUNDS; i++) {
        if (clock_gettime(id, &a) != 0 || syscall(SYS_clock_gettime, id, &b) != 0) {
            printf("%s: failed: %s\n", name, strerror(errno));
            return;
        }
        if (monotonic && (ns(&a) < last || ns(&b) < ns(&a)))
            backwards++;
        last = ns(&b);
    }
    struct timespec res_libc, res_call;
    clock_getres(id, &res_libc);
    syscall(SYS_clock_getres, id, &res_call);
    printf("%s: %s, resolution %s\n", name, backwards ? "went backwards" : "ok",
           ns(&res_libc) == ns(&res_call) ? "same" : "differs");
}

static void check_wall_clocks(void) {
    struct timeval before, after;
    gettimeofday(&before, NULL);
    time_t now = time(NULL);
    gettimeofday(&after, NULL);
    /* Linux's time() returns the seconds of the last timekeeping tick, which may be a
     * tick behind gettimeofday across a second boundary (native runs show it too), so
     * it may trail `before` by one second, never more, and never lead `after`. */
    printf("time: %s\n", before.tv_sec - 1 <= now && now <= after.tv_sec ? "ok" : "out of order");
    int cpu = sched_getcpu();
    unsigned call_cpu = 0;
    syscall(SYS_getcpu, &call_cpu, NULL, NULL);
    printf("getcpu: %s\n", cpu >= 0 && cpu < 4096 && call_cpu < 4096 ? "ok" : "bad");
}

static int find_mapping(const char *name, unsigned long *start, unsigned long *end) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, maps))
        if (strstr(line, name) && sscanf(line, "%lx-%lx", start, end) == 2)
            found = 1;
    fclose(maps);
    return found;
}

static void touch_read(unsigned long address) { (void)*(volatile char *)address; }
static void touch_write(unsigned long address) { *(volatile char *)address = 1; }

/* The signal that ends a child touching ``address`` (0: none). */
static int signal_of(void (*touch)(unsigned long), unsigned long address) {
    pid_t child = fork();
    if (child == 0) {
        touch(address);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void check_data_pages(void) {
    unsigned long start, end, code_start, code_end;
    if (!find_mapping("[vvar]", &start, &end) || !find_mapping("[vdso]", &code_start, &code_end)) {
        printf("no vdso mappings\n");
        return;
    }
    printf("data before code: %s\n", end <= code_start ? "yes" : "no");
    printf("read data page: signal %d\n", signal_of(touch_read, start));
    for (unsigned long page = start + 4096; page < end; page += 4096)
        printf("read page %lu: signal %d\n", (page - start) / 4096, signal_of(touch_read, page));
    printf("write data page: signal %d\n", signal_of(touch_write, start));
    errno = 0;
    int made_writable = mprotect((void *)start, 4096, PROT_READ | PROT_WRITE);
    printf("mprotect read-write: %d %s\n", made_writable, strerror(errno));
    errno = 0;
    int made_none = mprotect((void *)start, 4096, PROT_NONE);
    printf("mprotect none: %d %s\n", made_none, strerror(errno));
    printf("read after mprotect: signal %d\n", signal_of(touch_read, start));
    printf("munmap: %d\n", munmap((void *)start, end - start));
    printf("read after munmap: signal %d\n", signal_of(touch_read, start));
    struct timespec t;
    printf("clock after munmap: %d\n", (int)syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &t));
}

int main(void) {
    printf("vdso: %s\n", getauxval(AT_SYSINFO_EHDR) ? "yes" : "no");
    for (size_t i = 0; i < sizeof CLOCKS / sizeof CLOCKS[0]; i++)
        check_clock(CLOCKS[i].id, CLOCKS[i].name, CLOCKS[i].monotonic);
    check_wall_clocks();
    fflush(stdout);
    check_data_pages();
    return 0;
}
