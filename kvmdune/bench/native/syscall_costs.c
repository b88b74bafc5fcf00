/* Per-call costs for `kvmdune bench sandbox`: CASE ITERATIONS [--seccomp]
 *   getppid    an allowed call with no arguments
 *   read-zero  an allowed, checked 1-byte read from /dev/zero
 *   denied     open() of a path the policy denies (natively: allowed)
 * With --seccomp a seccomp-bpf filter is installed first: it allows everything but
 * openat of anything, which gets EACCES (the "denied" call's cost under seccomp).
 * Prints one JSON object: {"case", "iterations", "per_call_ns", "errors"}. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int install_filter(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof filter / sizeof *filter, filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program);
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: syscall_costs CASE ITERATIONS [--seccomp] [PATH]\n"); return 2; }
    const char *name = argv[1];
    long iterations = atol(argv[2]);
    const char *denied_path = argc > 4 ? argv[4] : "/root/.kvmdune-denied";
    int zero = open("/dev/zero", O_RDONLY);
    if (argc > 3 && !strcmp(argv[3], "--seccomp") && install_filter()) { perror("seccomp"); return 1; }
    char byte;
    long errors = 0;
    double start = now_ns();
    for (long i = 0; i < iterations; i++) {
        if (!strcmp(name, "getppid")) syscall(SYS_getppid);
        else if (!strcmp(name, "read-zero")) { if (read(zero, &byte, 1) != 1) errors++; }
        else { int fd = open(denied_path, O_RDONLY); if (fd < 0) errors++; else close(fd); }
    }
    double elapsed = now_ns() - start;
    printf("{\"case\": \"%s\", \"iterations\": %ld, \"per_call_ns\": %.1f, \"errors\": %ld}\n",
           name, iterations, elapsed / iterations, errors);
    return 0;
}
