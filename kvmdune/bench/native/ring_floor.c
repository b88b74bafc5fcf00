/* The floor of a fast-path call (issue 13), for `kvmdune bench syscalls`:
 *   ring_floor ITERATIONS
 * A request filed in a call ring laid out as the guest's (callring.h: the request
 * line, then the response line) to a host thread spinning on it, which makes the
 * call natively (getppid) and answers; the caller spins for the answer. No VMM, no
 * guest, no checks: what a patched call cannot go below on this machine (two
 * cache-line transfers each way and the call itself). Prints
 * {"case": "ring-floor", "iterations", "per_call_ns", "errors"}. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../../machine/native/callring.h"

static uint8_t ring[CALLRING_SLOT_SIZE] __attribute__((aligned(4096)));
static volatile int stop;

#define FIELD(offset) ((volatile uint64_t *)(ring + (offset)))

static void *serve(void *unused) {
    uint64_t seen = 0;
    (void)unused;
    while (!stop) {
        uint64_t seq = __atomic_load_n(FIELD(CALLRING_REQUEST_SEQ), __ATOMIC_ACQUIRE);
        if (seq == seen) {
            __builtin_ia32_pause();
            continue;
        }
        seen = seq;
        uint64_t nr = *FIELD(CALLRING_NR), args[6];
        for (int i = 0; i < 6; i++)
            args[i] = *FIELD(CALLRING_ARG0 + 8 * i);
        *FIELD(CALLRING_RESULT) = (uint64_t)syscall((long)nr, args[0], args[1], args[2],
                                                     args[3], args[4], args[5]);
        *(volatile uint32_t *)(ring + CALLRING_DISPOSITION) = CALLRING_DONE;
        __atomic_store_n(FIELD(CALLRING_RESPONSE_SEQ), seq, __ATOMIC_RELEASE);
    }
    return NULL;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: ring_floor ITERATIONS\n");
        return 2;
    }
    long iterations = atol(argv[1]), errors = 0;
    pid_t parent = getppid();
    pthread_t server;
    if (pthread_create(&server, NULL, serve, NULL) != 0)
        return 1;
    double start = now_ns();
    for (long i = 1; i <= iterations; i++) {
        *FIELD(CALLRING_NR) = SYS_getppid;
        for (int arg = 0; arg < 6; arg++)
            *FIELD(CALLRING_ARG0 + 8 * arg) = 0;
        __atomic_store_n(FIELD(CALLRING_REQUEST_SEQ), (uint64_t)i, __ATOMIC_RELEASE);
        while (__atomic_load_n(FIELD(CALLRING_RESPONSE_SEQ), __ATOMIC_ACQUIRE) != (uint64_t)i)
            __builtin_ia32_pause();
        errors += *(volatile uint32_t *)(ring + CALLRING_DISPOSITION) != CALLRING_DONE
            || (pid_t)*FIELD(CALLRING_RESULT) != parent;
    }
    double elapsed = now_ns() - start;
    stop = 1;
    pthread_join(server, NULL);
    printf("{\"case\": \"ring-floor\", \"iterations\": %ld, \"per_call_ns\": %.1f, "
           "\"errors\": %ld}\n", iterations, elapsed / iterations, errors);
    return 0;
}
