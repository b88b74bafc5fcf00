/* futex(2) and futex_waitv(2) as a program sees them, every result printed: the
 * commands, their errors, timeouts on both clocks, wake and requeue counts, bitsets,
 * PI locks (the owner's tid in the word), robust mutexes whose owner died (plain and
 * PI), futex_waitv, and a futex shared with a child through MAP_SHARED memory.
 * Each waiter waits once; a waker gives waiters time to fall asleep first (they
 * announce themselves, then 100 ms), so the counts are deterministic. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif

struct waitv {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

static long futex(uint32_t *uaddr, int op, uint32_t val, const void *timeout, uint32_t *uaddr2,
                  uint32_t val3) {
    return syscall(SYS_futex, uaddr, op, val, timeout, uaddr2, val3);
}

static const char *result(long r) {
    static char text[64];
    if (r >= 0)
        snprintf(text, sizeof text, "%ld", r);
    else
        snprintf(text, sizeof text, "-1 %s", strerrorname_np(errno));
    return text;
}

static void show(const char *what, long r) { printf("%-44s %s\n", what, result(r)); }

static uint32_t word, word2;
static int sleepers;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;

static void *sleeper(void *arg) {
    uint32_t *on = arg;
    pthread_mutex_lock(&count_lock);
    sleepers++;
    pthread_mutex_unlock(&count_lock);
    futex(on, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);      /* once */
    return NULL;
}

/* Starts n threads waiting once on `on` (which holds 0) and waits until they sleep. */
static void start_sleepers(pthread_t *threads, int n, uint32_t *on) {
    sleepers = 0;
    for (int i = 0; i < n; i++)
        pthread_create(&threads[i], NULL, sleeper, on);
    for (;;) {
        pthread_mutex_lock(&count_lock);
        int ready = sleepers == n;
        pthread_mutex_unlock(&count_lock);
        if (ready)
            break;
        usleep(1000);
    }
    usleep(100000);   /* from announcing to sleeping in the kernel */
}

static void join(pthread_t *threads, int n) {
    futex(&word, FUTEX_WAKE_PRIVATE, 1000, NULL, NULL, 0);
    futex(&word2, FUTEX_WAKE_PRIVATE, 1000, NULL, NULL, 0);
    for (int i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
}

static void basics(void) {
    struct timespec short_wait = {0, 20 * 1000 * 1000}, now;
    word = 5;
    show("WAIT on a changed value", futex(&word, FUTEX_WAIT_PRIVATE, 4, NULL, NULL, 0));
    show("WAIT relative timeout", futex(&word, FUTEX_WAIT_PRIVATE, 5, &short_wait, NULL, 0));
    clock_gettime(CLOCK_MONOTONIC, &now);
    now.tv_nsec += 20 * 1000 * 1000;
    if (now.tv_nsec >= 1000000000) {
        now.tv_sec++;
        now.tv_nsec -= 1000000000;
    }
    show("WAIT_BITSET absolute monotonic timeout",
         futex(&word, FUTEX_WAIT_BITSET_PRIVATE, 5, &now, NULL, FUTEX_BITSET_MATCH_ANY));
    clock_gettime(CLOCK_REALTIME, &now);
    show("WAIT_BITSET realtime, in the past",
         futex(&word, FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME, 5, &now, NULL,
               FUTEX_BITSET_MATCH_ANY));
    struct timespec bad = {0, 2000000000};
    show("WAIT with a bad timeout", futex(&word, FUTEX_WAIT_PRIVATE, 5, &bad, NULL, 0));
    show("WAIT_BITSET with bitset 0", futex(&word, FUTEX_WAIT_BITSET_PRIVATE, 5, NULL, NULL, 0));
    show("WAIT unaligned", futex((uint32_t *)((char *)&word + 1), FUTEX_WAIT_PRIVATE, 5, NULL,
                                 NULL, 0));
    show("WAIT at an unmapped address", futex((uint32_t *)8, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0));
    show("WAKE with nobody waiting", futex(&word, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0));
    show("WAKE at an unmapped private address", futex((uint32_t *)8, FUTEX_WAKE_PRIVATE, 1, NULL,
                                                      NULL, 0));
    show("WAKE at an unmapped shared address", futex((uint32_t *)8, FUTEX_WAKE, 1, NULL, NULL, 0));
    show("FUTEX_FD (gone)", futex(&word, FUTEX_FD, 0, NULL, NULL, 0));
    show("unknown command", futex(&word, 99, 0, NULL, NULL, 0));
}

static void wakes_and_requeues(void) {
    pthread_t threads[6];
    word = 0;
    start_sleepers(threads, 4, &word);
    show("WAKE 3 of 4 sleepers", futex(&word, FUTEX_WAKE_PRIVATE, 3, NULL, NULL, 0));
    show("WAKE the rest", futex(&word, FUTEX_WAKE_PRIVATE, 100, NULL, NULL, 0));
    join(threads, 4);

    word = 0;
    word2 = 0;
    start_sleepers(threads, 5, &word);
    show("CMP_REQUEUE on a changed value",
         futex(&word, FUTEX_CMP_REQUEUE_PRIVATE, 1, (void *)2, &word2, 7));
    show("CMP_REQUEUE wake 1, move 2",
         futex(&word, FUTEX_CMP_REQUEUE_PRIVATE, 1, (void *)2, &word2, 0));
    show("WAKE the 2 moved, on the second word", futex(&word2, FUTEX_WAKE_PRIVATE, 10, NULL,
                                                       NULL, 0));
    show("REQUEUE wake 0, move 1", futex(&word, FUTEX_REQUEUE_PRIVATE, 0, (void *)1, &word2, 0));
    show("WAKE the 1 left on the first word", futex(&word, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0));
    show("WAKE the 1 moved", futex(&word2, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0));
    join(threads, 5);

    word = 0;
    word2 = 3;
    start_sleepers(threads, 2, &word);
    /* word2 += 4; old 3 < 5, so besides 1 on word, 1 on word2 (nobody there) */
    int op = FUTEX_OP(FUTEX_OP_ADD, 4, FUTEX_OP_CMP_LT, 5);
    show("WAKE_OP add 4, old < 5: wakes 1 + 0", futex(&word, FUTEX_WAKE_OP_PRIVATE, 1,
                                                      (void *)1, &word2, op));
    printf("%-44s %u\n", "second word after WAKE_OP", word2);
    uint32_t *read_only = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    show("WAKE_OP on a read-only page", futex(&word, FUTEX_WAKE_OP_PRIVATE, 1, (void *)1,
                                              read_only, op));
    show("WAKE_OP unaligned", futex(&word, FUTEX_WAKE_OP_PRIVATE, 1, (void *)1,
                                    (uint32_t *)((char *)&word2 + 2), op));
    show("LOCK_PI on a read-only page", futex(read_only, FUTEX_LOCK_PI_PRIVATE, 0, NULL, NULL, 0));
    join(threads, 2);
}

static uint32_t bit_word;
static int bit_woken;

static void *bit_sleeper(void *arg) {
    uint32_t bits = (uint32_t)(uintptr_t)arg;
    pthread_mutex_lock(&count_lock);
    sleepers++;
    pthread_mutex_unlock(&count_lock);
    futex(&bit_word, FUTEX_WAIT_BITSET_PRIVATE, 0, NULL, NULL, bits);
    __atomic_fetch_add(&bit_woken, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void bitsets(void) {
    pthread_t threads[2];
    sleepers = 0;
    pthread_create(&threads[0], NULL, bit_sleeper, (void *)1);
    pthread_create(&threads[1], NULL, bit_sleeper, (void *)2);
    while (__atomic_load_n(&sleepers, __ATOMIC_SEQ_CST) < 2)
        usleep(1000);
    usleep(100000);
    show("WAKE_BITSET bit 2 of two waiters", futex(&bit_word, FUTEX_WAKE_BITSET_PRIVATE, 10, NULL,
                                                   NULL, 2));
    usleep(50000);
    printf("%-44s %d\n", "woken so far", __atomic_load_n(&bit_woken, __ATOMIC_SEQ_CST));
    show("WAKE_BITSET bit 1", futex(&bit_word, FUTEX_WAKE_BITSET_PRIVATE, 10, NULL, NULL, 1));
    pthread_join(threads[0], NULL);
    pthread_join(threads[1], NULL);
}

static uint32_t pi_word;

static void *pi_contender(void *arg) {
    long r = futex(&pi_word, FUTEX_LOCK_PI_PRIVATE, 0, NULL, NULL, 0);
    int owner = (pi_word & FUTEX_TID_MASK) == (uint32_t)syscall(SYS_gettid);
    futex(&pi_word, FUTEX_UNLOCK_PI_PRIVATE, 0, NULL, NULL, 0);
    return (void *)(long)(r == 0 && owner);
}

static void pi(void) {
    pid_t me = (pid_t)syscall(SYS_gettid);
    show("LOCK_PI uncontended", futex(&pi_word, FUTEX_LOCK_PI_PRIVATE, 0, NULL, NULL, 0));
    printf("%-44s %s\n", "the word holds the owner's tid", pi_word == (uint32_t)me ? "yes" : "no");
    show("LOCK_PI again (deadlock)", futex(&pi_word, FUTEX_LOCK_PI_PRIVATE, 0, NULL, NULL, 0));
    pthread_t contender;
    pthread_create(&contender, NULL, pi_contender, NULL);
    usleep(100000);
    printf("%-44s %s\n", "a waiter set FUTEX_WAITERS",
           pi_word == ((uint32_t)me | FUTEX_WAITERS) ? "yes" : "no");
    show("UNLOCK_PI hands it over", futex(&pi_word, FUTEX_UNLOCK_PI_PRIVATE, 0, NULL, NULL, 0));
    void *ok;
    pthread_join(contender, &ok);
    printf("%-44s %s\n", "the waiter got it", ok ? "yes" : "no");
    show("TRYLOCK_PI free", futex(&pi_word, FUTEX_TRYLOCK_PI_PRIVATE, 0, NULL, NULL, 0));
    show("UNLOCK_PI", futex(&pi_word, FUTEX_UNLOCK_PI_PRIVATE, 0, NULL, NULL, 0));
    show("UNLOCK_PI not owned", futex(&pi_word, FUTEX_UNLOCK_PI_PRIVATE, 0, NULL, NULL, 0));
}

static pthread_mutex_t robust;
static volatile int holder_locked, holder_may_die;

static void *die_holding(void *arg) {
    pthread_mutex_lock(&robust);
    holder_locked = 1;
    while (!holder_may_die)
        usleep(1000);
    return NULL;         /* exits with the lock held */
}

static void *wait_for_robust(void *arg) {
    int r = pthread_mutex_lock(&robust);
    if (r == EOWNERDEAD)
        pthread_mutex_consistent(&robust);
    pthread_mutex_unlock(&robust);
    return (void *)(long)r;
}

static void robust_lists(int pi) {
    const char *kind = pi ? "robust PI mutex" : "robust mutex";
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (pi)
        pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_INHERIT);
    pthread_mutex_init(&robust, &attr);
    pthread_t holder, waiter;
    holder_locked = 0;
    holder_may_die = 1;
    pthread_create(&holder, NULL, die_holding, NULL);
    pthread_join(holder, NULL);
    int r = pthread_mutex_lock(&robust);
    printf("%s, its owner dead: %s\n", kind, r == EOWNERDEAD ? "EOWNERDEAD" : strerrorname_np(r));
    pthread_mutex_consistent(&robust);
    pthread_mutex_unlock(&robust);
    /* and with a waiter asleep when the owner dies */
    holder_locked = holder_may_die = 0;
    pthread_create(&holder, NULL, die_holding, NULL);
    while (!holder_locked)
        usleep(1000);
    pthread_create(&waiter, NULL, wait_for_robust, NULL);
    usleep(100000);
    holder_may_die = 1;
    void *got;
    pthread_join(holder, NULL);
    pthread_join(waiter, &got);
    printf("%s, its owner dead with a waiter asleep: %s\n", kind,
           (long)got == EOWNERDEAD ? "EOWNERDEAD" : strerrorname_np((int)(long)got));
    pthread_mutex_destroy(&robust);
}

static uint32_t waitv_words[3];

static void *waitv_waker(void *arg) {
    usleep(100000);
    __atomic_store_n(&waitv_words[2], 1, __ATOMIC_SEQ_CST);
    futex(&waitv_words[2], FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    return NULL;
}

static void waitv(void) {
    struct waitv waiters[3];
    for (int i = 0; i < 3; i++)
        waiters[i] = (struct waitv){.val = 0, .uaddr = (uintptr_t)&waitv_words[i],
                                    .flags = FUTEX2_SIZE_U32 | FUTEX_PRIVATE_FLAG};
    pthread_t waker;
    pthread_create(&waker, NULL, waitv_waker, NULL);
    show("futex_waitv woken on the third word",
         syscall(SYS_futex_waitv, waiters, 3, 0, NULL, CLOCK_MONOTONIC));
    pthread_join(waker, NULL);
    show("futex_waitv with a changed value", syscall(SYS_futex_waitv, waiters, 3, 0, NULL,
                                                     CLOCK_MONOTONIC));
    struct timespec soon;
    clock_gettime(CLOCK_MONOTONIC, &soon);
    waitv_words[2] = 0;
    show("futex_waitv timeout", syscall(SYS_futex_waitv, waiters, 3, 0, &soon, CLOCK_MONOTONIC));
    waiters[1].flags = 0;
    show("futex_waitv without a size", syscall(SYS_futex_waitv, waiters, 3, 0, NULL,
                                               CLOCK_MONOTONIC));
    show("futex_waitv of none", syscall(SYS_futex_waitv, waiters, 0, 0, NULL, CLOCK_MONOTONIC));
}

static void shared_between_processes(void) {
    uint32_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    *shared = 0;
    pid_t child = fork();
    if (child == 0) {
        while (__atomic_load_n(shared, __ATOMIC_SEQ_CST) == 0)
            futex(shared, FUTEX_WAIT, 0, NULL, NULL, 0);
        _exit(*shared);
    }
    usleep(100000);
    __atomic_store_n(shared, 42, __ATOMIC_SEQ_CST);
    futex(shared, FUTEX_WAKE, 1, NULL, NULL, 0);
    int status;
    waitpid(child, &status, 0);
    printf("%-44s %d\n", "a child woken through shared memory", WEXITSTATUS(status));
}

/* A process-shared robust mutex in MAP_SHARED memory, held by a child when it
 * exits: the parent's lock says EOWNERDEAD (the child's robust list was walked at
 * its end), with a plain exit and with exit_group from a second thread. */
static void *exit_group_from_thread(void *arg) { exit(0); }

static void robust_across_processes(int from_thread) {
    pthread_mutex_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                                   -1, 0);
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(shared, &attr);
    pid_t child = fork();
    if (child == 0) {
        pthread_mutex_lock(shared);
        if (from_thread) {
            pthread_t thread;
            pthread_create(&thread, NULL, exit_group_from_thread, NULL);
            pthread_join(thread, NULL);
        }
        _exit(0);
    }
    waitpid(child, NULL, 0);
    int r = pthread_mutex_lock(shared);
    printf("pshared robust mutex of a dead child%s: %s\n", from_thread ? " (exit_group from a thread)" : "",
           r == EOWNERDEAD ? "EOWNERDEAD" : strerrorname_np(r));
    munmap(shared, 4096);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    basics();
    wakes_and_requeues();
    bitsets();
    pi();
    robust_lists(0);
    robust_lists(1);
    waitv();
    shared_between_processes();
    robust_across_processes(0);
    robust_across_processes(1);
    return 0;
}
