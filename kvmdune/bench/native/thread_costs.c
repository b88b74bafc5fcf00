/* Thread costs for `kvmdune bench threads`, timed inside the program (so start-up is
 * not counted) and printed as one number:
 *   thread_costs create N        nanoseconds per pthread_create + pthread_join
 *   thread_costs pingpong N      nanoseconds per round trip between two threads
 *                                through a mutex and two condition variables
 *   thread_costs compute T N     seconds for T threads each running N rounds of an
 *                                integer kernel (no system calls), then joined
 * The compute mode also prints a checksum, compared with the native run's. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void *nothing(void *arg) { return arg; }

static int create(long n) {
    uint64_t start = now_ns();
    for (long i = 0; i < n; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, nothing, NULL) != 0 || pthread_join(thread, NULL) != 0)
            return 1;
    }
    printf("%.0f\n", (double)(now_ns() - start) / n);
    return 0;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t to_pong = PTHREAD_COND_INITIALIZER, to_ping = PTHREAD_COND_INITIALIZER;
static long turn, rounds;

static void *pong(void *arg) {
    pthread_mutex_lock(&lock);
    for (long i = 0; i < rounds; i++) {
        while (turn != 1)
            pthread_cond_wait(&to_pong, &lock);
        turn = 0;
        pthread_cond_signal(&to_ping);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

static int pingpong(long n) {
    pthread_t thread;
    rounds = n;
    pthread_create(&thread, NULL, pong, NULL);
    uint64_t start = now_ns();
    pthread_mutex_lock(&lock);
    for (long i = 0; i < n; i++) {
        turn = 1;
        pthread_cond_signal(&to_pong);
        while (turn != 0)
            pthread_cond_wait(&to_ping, &lock);
    }
    pthread_mutex_unlock(&lock);
    uint64_t elapsed = now_ns() - start;
    pthread_join(thread, NULL);
    printf("%.0f\n", (double)elapsed / n);
    return 0;
}

#define KERNEL_WORDS (1 << 16)
static long compute_rounds;

static void *kernel(void *arg) {
    uint64_t *words = calloc(KERNEL_WORDS, sizeof *words);
    uint64_t x = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ULL + 1;
    for (long r = 0; r < compute_rounds; r++)
        for (int i = 0; i < KERNEL_WORDS; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            words[(x >> 7) & (KERNEL_WORDS - 1)] += x;
        }
    uint64_t sum = 0;
    for (int i = 0; i < KERNEL_WORDS; i++)
        sum += words[i] * (uint64_t)(i + 1);
    free(words);
    return (void *)(uintptr_t)sum;
}

static int compute(int threads, long n) {
    pthread_t ids[64];
    if (threads < 1 || threads > 64)
        return 2;
    compute_rounds = n;
    uint64_t start = now_ns(), checksum = 0;
    for (long i = 0; i < threads; i++)
        pthread_create(&ids[i], NULL, kernel, (void *)(i + 1));
    for (int i = 0; i < threads; i++) {
        void *sum;
        pthread_join(ids[i], &sum);
        checksum ^= (uint64_t)(uintptr_t)sum;
    }
    printf("%.6f %016llx\n", (double)(now_ns() - start) / 1e9, (unsigned long long)checksum);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "create") == 0)
        return create(atol(argv[2]));
    if (argc == 3 && strcmp(argv[1], "pingpong") == 0)
        return pingpong(atol(argv[2]));
    if (argc == 4 && strcmp(argv[1], "compute") == 0)
        return compute(atoi(argv[2]), atol(argv[3]));
    fprintf(stderr, "usage: thread_costs create N | pingpong N | compute THREADS N\n");
    return 2;
}
