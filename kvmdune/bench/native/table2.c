/*
 * table2.c — the operations of the Dune paper's Table 2, for `kvmdune bench paper`:
 * what a process pays for a system call, a page fault and a page-table walk (a TLB
 * miss). The same static program runs natively and under `kvmdune run`.
 *
 *   table2 [--iterations N] syscall | fault | walk | all
 *
 *   syscall  getppid(2) through syscall(2) (Dune's bench used gettid/getpid)
 *   fault    a fresh anonymous page: its first write, per page, over N pages of one
 *            new mapping; the mmap call is included (kvmdune maps small mappings
 *            eagerly, at mmap: leaving it out would leave out its faults)
 *   walk     a dependent read (a pointer chase) of a random page of 256 MiB in
 *            4 KiB pages (MADV_NOHUGEPAGE): a TLB miss, its page walk and a
 *            data-cache miss (the same on both sides), minus a chase through 16
 *            pages (TLB hits)
 *
 * One JSON line each: median cycles (rdtsc) and ns per operation over `rounds`
 * rounds, and the TSC rate measured against CLOCK_MONOTONIC.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "bench_clock.h"

#define PAGE 4096
#define ROUNDS 7
#define WALK_PAGES (256L * 1024 * 1024 / PAGE)
#define HOT_PAGES 16




static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *bench, double *per_op, const char *unit, long operations)
{
    qsort(per_op, ROUNDS, sizeof *per_op, compare_double);
    double cycles = per_op[ROUNDS / 2];
    printf("{\"benchmark\": \"%s\", \"per_op_cycles\": %.1f, \"per_op_ns\": %.1f, "
           "\"unit\": \"%s\", \"operations\": %ld, \"tsc_ghz\": %.4f}\n",
           bench, cycles, cycles / cycles_per_ns, unit, operations, cycles_per_ns);
    fflush(stdout);
}

static void bench_syscall(long n)
{
    double per_op[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = __rdtsc();
        for (long i = 0; i < n; i++)
            syscall(SYS_getppid);
        per_op[r] = (double)(__rdtsc() - t0) / (double)n;
    }
    report("syscall", per_op, "getppid", n);
}

static void bench_fault(long n)
{
    double per_op[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = __rdtsc();
        char *fresh = mmap(NULL, (size_t)n * PAGE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fresh == MAP_FAILED) {
            perror("table2: mmap");
            exit(1);
        }
        for (long i = 0; i < n; i++)
            fresh[i * PAGE] = (char)i;
        per_op[r] = (double)(__rdtsc() - t0) / (double)n;
        munmap(fresh, (size_t)n * PAGE);
    }
    report("fault", per_op, "fresh page, first write", n);
}

static uint64_t xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* The word of `page` that a chase reads: a different cache line in each page, so
 * that the reads do not all fall in one cache set. */
static volatile uint64_t *slot(char *area, long page)
{
    return (volatile uint64_t *)(area + page * PAGE + (page * 64) % PAGE);
}

/* Links the first `pages` pages into one random cycle (Sattolo's shuffle). */
static void link_cycle(char *area, long pages)
{
    long *order = malloc((size_t)pages * sizeof *order);
    uint64_t state = 0x2545F4914F6CDD1Dull;
    for (long i = 0; i < pages; i++)
        order[i] = i;
    for (long i = pages - 1; i > 0; i--) {
        long j = (long)(xorshift(&state) % (uint64_t)i);
        long t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (long i = 0; i < pages; i++)
        *slot(area, order[i]) = (uint64_t)order[(i + 1) % pages];
    free(order);
}

/* Cycles per step of a chase through the cycle: each read's address depends on the
 * previous read, so each step pays its whole latency (no overlap). */
static double chase(char *area, long n)
{
    uint64_t page = 0;
    uint64_t t0 = __rdtsc();
    for (long i = 0; i < n; i++)
        page = *slot(area, (long)page);
    double cycles = (double)(__rdtsc() - t0) / (double)n;
    if (page == (uint64_t)-1)
        puts("");           /* keeps the chase */
    return cycles;
}

static void bench_walk(long n)
{
    size_t len = (size_t)WALK_PAGES * PAGE;
    char *area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *hot = mmap(NULL, HOT_PAGES * PAGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED || hot == MAP_FAILED) {
        perror("table2: mmap");
        exit(1);
    }
    madvise(area, len, MADV_NOHUGEPAGE);      /* 4 KiB pages: a walk per miss */
    link_cycle(area, WALK_PAGES);
    link_cycle(hot, HOT_PAGES);
    double per_op[ROUNDS];
    for (int r = 0; r < ROUNDS; r++)
        per_op[r] = chase(area, n) - chase(hot, n);
    munmap(area, len);
    munmap(hot, HOT_PAGES * PAGE);
    report("walk", per_op, "TLB miss: a dependent read of a random page of 256 MiB, "
           "minus one of 16 pages", n);
}

int main(int argc, char **argv)
{
    long n = 0;
    int first = 1;
    if (argc > 2 && !strcmp(argv[1], "--iterations")) {
        n = strtol(argv[2], NULL, 10);
        first = 3;
    }
    if (first >= argc || (n && n < 10)) {
        fprintf(stderr, "usage: table2 [--iterations N] syscall | fault | walk | all\n");
        return 2;
    }
    calibrate_tsc();
    for (int i = first; i < argc; i++) {
        int every = !strcmp(argv[i], "all");
        if (every || !strcmp(argv[i], "syscall"))
            bench_syscall(n ? n : 100000);
        if (every || !strcmp(argv[i], "fault"))
            bench_fault(n ? n : 10000);
        if (every || !strcmp(argv[i], "walk"))
            bench_walk(n ? n : 1000000);
    }
    return 0;
}
