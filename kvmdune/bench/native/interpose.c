/*
 * interpose.c — interposition on a system call, for `kvmdune bench paper` (Table 3's
 * first row): what a monitor pays to see, and let through, each getppid(2) of the
 * code it watches. One program, built twice:
 *
 *   gcc -O2 -static interpose.c                      Linux: ptrace(PTRACE_SYSCALL) by
 *                                                    a parent (two stops per call)
 *   gcc -O2 -static -DINTERPOSE_DUNE interpose.c $(kvmdune config --cflags --libs)
 *                                                    the Dune API: the code runs as
 *                                                    user code (dune_jump_to_user);
 *                                                    each call reaches the program's
 *                                                    syscall handler, which passes it
 *                                                    through (dune_passthrough_syscall)
 *
 *   interpose [ITERATIONS]
 *
 * The watched code times its own loop of ITERATIONS calls with rdtsc and one JSON
 * line is printed: median cycles and ns per call over 5 rounds, and whether every
 * call returned the right answer (getppid's value without a monitor). Seccomp user
 * notification, the third way, is syscall_costs.c's "notify" mode.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "bench_clock.h"

#ifdef INTERPOSE_DUNE
#include <dune.h>
#define METHOD "dune"
#else
#include <sys/ptrace.h>
#include <sys/wait.h>
#define METHOD "ptrace"
#endif

#define ROUNDS 5
#define STACK_WORDS 4096

static long iterations = 20000;
static long expected_ppid;



static inline long raw_getppid(void)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"((long)SYS_getppid)
                     : "rcx", "r11", "memory");
    return ret;
}

/* The watched code: ROUNDS timed loops of getppid; cycles per call of each. */
static uint64_t round_cycles[ROUNDS];
static volatile long wrong_answers;

static void watched_loops(void)
{
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = __rdtsc();
        for (long i = 0; i < iterations; i++)
            if (raw_getppid() != expected_ppid)
                wrong_answers++;
        round_cycles[r] = (__rdtsc() - t0) / (uint64_t)iterations;
    }
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(void)
{
    qsort(round_cycles, ROUNDS, sizeof *round_cycles, compare_u64);
    uint64_t cycles = round_cycles[ROUNDS / 2];
    printf("{\"benchmark\": \"interpose\", \"method\": \"%s\", \"per_op_cycles\": %llu, "
           "\"per_op_ns\": %.1f, \"operations\": %ld, \"tsc_ghz\": %.4f, "
           "\"correct\": %s}\n",
           METHOD, (unsigned long long)cycles, (double)cycles / cycles_per_ns,
           iterations, cycles_per_ns, wrong_answers ? "false" : "true");
    fflush(stdout);
}

#ifdef INTERPOSE_DUNE

static uint64_t user_stack[STACK_WORDS] __attribute__((aligned(4096)));
#define SYS_WATCHED_DONE 60

static void user_code(void)
{
    watched_loops();
    __asm__ volatile("syscall" :: "a"((long)SYS_WATCHED_DONE) : "rcx", "r11", "memory");
    for (;;)
        ;
}

static void on_syscall(struct dune_tf *tf)
{
    if (tf->rax == SYS_WATCHED_DONE)
        dune_ret_from_user(0);
    dune_passthrough_syscall(tf);
}

static int watch(void)
{
    if (dune_init_and_enter()) {
        fputs("interpose: cannot enter Dune mode\n", stderr);
        return 1;
    }
    dune_register_syscall_handler(on_syscall);
    struct dune_tf tf;
    memset(&tf, 0, sizeof tf);
    tf.rip = (uintptr_t)user_code;
    tf.rsp = (uintptr_t)&user_stack[STACK_WORDS - 1];
    tf.rflags = 0x202;
    int ret = dune_jump_to_user(&tf);
    if (ret) {
        fprintf(stderr, "interpose: user code ended with %d\n", ret);
        return 1;
    }
    report();
    return 0;
}

#else

static int watch(void)
{
    pid_t child = fork();
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        raise(SIGSTOP);
        expected_ppid = getppid();          /* the tracer is the parent */
        watched_loops();
        report();
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    ptrace(PTRACE_SETOPTIONS, child, NULL, (void *)PTRACE_O_TRACESYSGOOD);
    for (;;) {
        if (ptrace(PTRACE_SYSCALL, child, NULL, NULL))
            return 1;
        if (waitpid(child, &status, 0) < 0)
            return 1;
        if (WIFEXITED(status))
            return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
            return 1;
    }
}

#endif

int main(int argc, char **argv)
{
    if (argc > 1)
        iterations = strtol(argv[1], NULL, 10);
    if (iterations < 10) {
        fputs("usage: interpose [ITERATIONS (>= 10)]\n", stderr);
        return 2;
    }
    calibrate_tsc();
    expected_ppid = getppid();
    return watch();
}
