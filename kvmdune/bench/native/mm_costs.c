/* Per-call costs of the memory calls (`kvmdune bench mmcalls`, issue 14):
 *   mm_costs CASE ITERATIONS
 * CASE: anon (mmap 64 KiB anonymous private + munmap: one pair per iteration),
 * anon-big (the same with 1 MiB, never touched), mprotect (a 64 KiB mapping
 * toggled PROT_READ / PROT_READ|PROT_WRITE, one call per iteration), brk (grow
 * by 64 KiB, shrink back: two calls), file (ld.so's way: reserve 2 MiB
 * PROT_NONE, map libc's first 1 MiB over it with MAP_FIXED, unmap: three calls).
 * Prints {"case", "iterations", "calls", "per_call_ns", "errors"}. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SMALL (64 << 10)
#define BIG (1 << 20)
#define LIBC "/lib/x86_64-linux-gnu/libc.so.6"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static long anon(long size, long iterations, long *errors) {
    for (long i = 0; i < iterations; i++) {
        char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { ++*errors; continue; }
        if (munmap(p, size)) ++*errors;
    }
    return 2 * iterations;
}

static long protect(long iterations, long *errors) {
    char *p = mmap(NULL, SMALL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { ++*errors; return 0; }
    p[0] = 1;
    for (long i = 0; i < iterations; i++)
        if (mprotect(p, SMALL, i & 1 ? PROT_READ | PROT_WRITE : PROT_READ)) ++*errors;
    munmap(p, SMALL);
    return iterations;
}

static long heap(long iterations, long *errors) {
    char *base = sbrk(0);
    for (long i = 0; i < iterations; i++) {
        if (brk(base + SMALL)) ++*errors;
        if (brk(base)) ++*errors;
    }
    return 2 * iterations;
}

static long file(long iterations, long *errors) {
    int fd = open(LIBC, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { ++*errors; return 0; }
    for (long i = 0; i < iterations; i++) {
        char *r = mmap(NULL, 2 * BIG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r == MAP_FAILED) { ++*errors; continue; }
        if (mmap(r, BIG, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, fd, 0) == MAP_FAILED)
            ++*errors;
        if (munmap(r, 2 * BIG)) ++*errors;
    }
    close(fd);
    return 3 * iterations;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mm_costs anon|anon-big|mprotect|brk|file ITERATIONS\n");
        return 2;
    }
    const char *name = argv[1];
    long iterations = atol(argv[2]), errors = 0, calls;
    double start = now_ns();
    if (!strcmp(name, "anon")) calls = anon(SMALL, iterations, &errors);
    else if (!strcmp(name, "anon-big")) calls = anon(BIG, iterations, &errors);
    else if (!strcmp(name, "mprotect")) calls = protect(iterations, &errors);
    else if (!strcmp(name, "brk")) calls = heap(iterations, &errors);
    else if (!strcmp(name, "file")) calls = file(iterations, &errors);
    else { fprintf(stderr, "unknown case %s\n", name); return 2; }
    double elapsed = now_ns() - start;
    printf("{\"case\": \"%s\", \"iterations\": %ld, \"calls\": %ld, \"per_call_ns\": %.0f, "
           "\"errors\": %ld}\n", name, iterations, calls, calls ? elapsed / calls : 0.0, errors);
    return errors != 0;
}
