/* A pthread stress program: every line it prints is deterministic, so a run in Dune
 * mode must print exactly what a native run prints. Usage: threads [SCALE] (the
 * work per thread; the benchmark raises it).
 *
 * mutex-protected counters over 8 threads, thread names, a condition-variable
 * producer/consumer,
 * barriers, __thread values, signals aimed at one thread (pthread_kill), at the
 * process (taken by the thread that does not block it) and on per-thread alternate
 * stacks, /proc/self/task, fork from a threaded process (from the main thread and
 * from another), and exit while other threads run (busy, blocked in read, waiting on
 * a condition variable). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 8
static long scale = 20000;

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

static void check(int ok, const char *what) {
    if (!ok) {
        printf("FAILED: %s\n", what);
        fflush(stdout);
        exit(1);
    }
}

/* -- counters --------------------------------------------------------------------- */
static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;
static __thread long my_count;
static __thread int initialised_tls = 5;

static void *count(void *arg) {
    long id = (long)arg;
    check(initialised_tls == 5, "a new thread sees __thread's initial value");
    initialised_tls = (int)id;
    for (long i = 0; i < scale; i++) {
        pthread_mutex_lock(&counter_lock);
        counter++;
        pthread_mutex_unlock(&counter_lock);
        my_count++;
    }
    check(initialised_tls == (int)id, "__thread values stay the thread's own");
    return (void *)my_count;
}

static int threads_in_proc(void) {
    DIR *dir = opendir("/proc/self/task");
    int n = 0;
    struct dirent *entry;
    while (dir && (entry = readdir(dir)) != NULL)
        if (entry->d_name[0] != '.')
            n++;
    if (dir)
        closedir(dir);
    return n;
}

static pthread_barrier_t started;

static void *count_and_wait(void *arg) {
    void *result = count(arg);
    pthread_barrier_wait(&started);     /* all alive while main counts them */
    pthread_barrier_wait(&started);
    return result;
}

static void counters(void) {
    pthread_t threads[THREADS];
    pthread_barrier_init(&started, NULL, THREADS + 1);
    for (long i = 0; i < THREADS; i++)
        check(pthread_create(&threads[i], NULL, count_and_wait, (void *)i) == 0, "create");
    pthread_barrier_wait(&started);
    printf("threads in /proc/self/task: %d\n", threads_in_proc());
    pthread_barrier_wait(&started);
    long own = 0;
    for (int i = 0; i < THREADS; i++) {
        void *result;
        pthread_join(threads[i], &result);
        own += (long)result;
    }
    pthread_barrier_destroy(&started);
    printf("counter %ld, per-thread counts %ld, main's __thread %ld %d\n", counter, own,
           my_count, initialised_tls);
}

/* -- names ------------------------------------------------------------------------ */
static void *rename_self(void *arg) {
    char name[16];
    prctl(PR_GET_NAME, name);
    printf("a thread starts with its creator's name: %s\n",
           strcmp(name, (char *)arg) == 0 ? "yes" : "no");
    prctl(PR_SET_NAME, "worker-1");
    prctl(PR_GET_NAME, name);
    printf("and renames itself: %s\n", name);
    return NULL;
}

static void names(void) {
    char before[16], after[16];
    prctl(PR_GET_NAME, before);
    pthread_t thread;
    pthread_create(&thread, NULL, rename_self, before);
    pthread_join(thread, NULL);
    prctl(PR_GET_NAME, after);
    printf("the process keeps its name: %s\n", strcmp(before, after) == 0 ? "yes" : "no");
}

/* -- producer/consumer ------------------------------------------------------------ */
#define SLOTS 4
#define PRODUCERS 2
#define CONSUMERS 3
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER, not_empty = PTHREAD_COND_INITIALIZER;
static long queue[SLOTS];
static int queued, head, producers_left = PRODUCERS;

static void *produce(void *arg) {
    long base = (long)arg * 1000000;
    for (long i = 1; i <= scale / 10; i++) {
        pthread_mutex_lock(&queue_lock);
        while (queued == SLOTS)
            pthread_cond_wait(&not_full, &queue_lock);
        queue[(head + queued++) % SLOTS] = base + i;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&queue_lock);
    }
    pthread_mutex_lock(&queue_lock);
    producers_left--;
    pthread_cond_broadcast(&not_empty);
    pthread_mutex_unlock(&queue_lock);
    return NULL;
}

static void *consume(void *arg) {
    long sum = 0;
    for (;;) {
        pthread_mutex_lock(&queue_lock);
        while (queued == 0 && producers_left)
            pthread_cond_wait(&not_empty, &queue_lock);
        if (queued == 0) {
            pthread_mutex_unlock(&queue_lock);
            return (void *)sum;
        }
        sum += queue[head];
        head = (head + 1) % SLOTS;
        queued--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&queue_lock);
    }
}

static void producer_consumer(void) {
    pthread_t producers[PRODUCERS], consumers[CONSUMERS];
    for (long i = 0; i < CONSUMERS; i++)
        pthread_create(&consumers[i], NULL, consume, NULL);
    for (long i = 0; i < PRODUCERS; i++)
        pthread_create(&producers[i], NULL, produce, (void *)(i + 1));
    long total = 0;
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(producers[i], NULL);
    for (int i = 0; i < CONSUMERS; i++) {
        void *sum;
        pthread_join(consumers[i], &sum);
        total += (long)sum;
    }
    printf("consumed total %ld\n", total);
}

/* -- barriers --------------------------------------------------------------------- */
#define ROUNDS 50
static pthread_barrier_t round_barrier;
static int slots[THREADS];
static int barrier_errors;

static void *rounds(void *arg) {
    long id = (long)arg;
    for (int round = 1; round <= ROUNDS; round++) {
        slots[id] = round;
        pthread_barrier_wait(&round_barrier);
        for (int i = 0; i < THREADS; i++)
            if (slots[i] != round)
                __atomic_fetch_add(&barrier_errors, 1, __ATOMIC_SEQ_CST);
        pthread_barrier_wait(&round_barrier);
    }
    return NULL;
}

static void barriers(void) {
    pthread_t threads[THREADS];
    pthread_barrier_init(&round_barrier, NULL, THREADS);
    for (long i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, rounds, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&round_barrier);
    printf("barrier rounds %d, errors %d\n", ROUNDS, barrier_errors);
}

/* -- signals ---------------------------------------------------------------------- */
static volatile pid_t handled_by;
static volatile int handled_on_altstack;
static __thread char *altstack_base;
static __thread size_t altstack_size;

static void note_thread(int signo) {
    char here;
    handled_by = gettid_();
    handled_on_altstack = altstack_base && &here >= altstack_base
                          && &here < altstack_base + altstack_size;
}

static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cond = PTHREAD_COND_INITIALIZER;
static int ready;
static volatile int stop_waiting;
static pid_t target_tid;

static void announce_ready(void) {
    pthread_mutex_lock(&ready_lock);
    ready++;
    pthread_cond_broadcast(&ready_cond);
    pthread_mutex_unlock(&ready_lock);
}

static void wait_ready(int count) {
    pthread_mutex_lock(&ready_lock);
    while (ready < count)
        pthread_cond_wait(&ready_cond, &ready_lock);
    pthread_mutex_unlock(&ready_lock);
}

static void *signal_target(void *arg) {
    altstack_size = 64 * 1024;
    altstack_base = malloc(altstack_size);
    stack_t stack = {.ss_sp = altstack_base, .ss_size = altstack_size};
    check(sigaltstack(&stack, NULL) == 0, "sigaltstack");
    target_tid = gettid_();
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGUSR2);
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);   /* main blocks it; this one takes it */
    announce_ready();
    while (!stop_waiting)
        pause();
    return NULL;
}

static void *bystander(void *arg) {
    announce_ready();
    while (!stop_waiting)
        pause();
    return NULL;
}

static void signals(void) {
    struct sigaction action = {.sa_handler = note_thread, .sa_flags = SA_ONSTACK};
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR1, &action, NULL);
    sigaction(SIGUSR2, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &block, NULL);       /* new threads inherit it */
    pthread_t target, others[2];
    pthread_create(&others[0], NULL, bystander, NULL);
    pthread_create(&target, NULL, signal_target, NULL);
    pthread_create(&others[1], NULL, bystander, NULL);
    wait_ready(3);

    handled_by = 0;
    pthread_kill(target, SIGUSR1);
    while (!handled_by)
        sched_yield();
    printf("pthread_kill: handled by the target %s, on its alternate stack %s\n",
           handled_by == target_tid ? "yes" : "no", handled_on_altstack ? "yes" : "no");

    handled_by = 0;
    pthread_kill(pthread_self(), SIGUSR1);
    printf("pthread_kill to itself: handled at once by itself %s, not on an altstack %s\n",
           handled_by == gettid_() ? "yes" : "no", !handled_on_altstack ? "yes" : "no");

    handled_by = 0;
    kill(getpid(), SIGUSR2);                          /* only the target does not block it */
    while (!handled_by)
        sched_yield();
    printf("process signal blocked elsewhere: taken by the one thread that can %s\n",
           handled_by == target_tid ? "yes" : "no");

    sigset_t pending;
    handled_by = 0;
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    syscall(SYS_tgkill, getpid(), gettid_(), SIGTERM);  /* aimed at main, which blocks it */
    sigpending(&pending);
    printf("a thread's blocked signal stays its own: pending %s, handled %s\n",
           sigismember(&pending, SIGTERM) ? "yes" : "no", handled_by ? "yes" : "no");
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &block, NULL);
    printf("unblocked: handled by main %s\n", handled_by == gettid_() ? "yes" : "no");

    stop_waiting = 1;
    pthread_kill(target, SIGUSR1);
    pthread_kill(others[0], SIGUSR1);
    pthread_kill(others[1], SIGUSR1);
    pthread_join(target, NULL);
    pthread_join(others[0], NULL);
    pthread_join(others[1], NULL);
    printf("tids: main's is the pid %s, the target's is not %s\n",
           gettid_() == getpid() ? "yes" : "no", target_tid != getpid() ? "yes" : "no");
}

/* -- fork ------------------------------------------------------------------------- */
static volatile int spin_stop;
static pthread_mutex_t spin_lock = PTHREAD_MUTEX_INITIALIZER;
static long spins;

static void *spinner(void *arg) {
    while (!spin_stop) {
        pthread_mutex_lock(&spin_lock);
        spins++;
        pthread_mutex_unlock(&spin_lock);
    }
    return NULL;
}

static int fork_and_wait(int code) {
    pid_t pid = fork();
    if (pid == 0) {
        char line[80];
        int n = snprintf(line, sizeof line, "  child: threads %d, tid is pid %s\n",
                         threads_in_proc(), gettid_() == getpid() ? "yes" : "no");
        write(1, line, n);
        _exit(code);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void *fork_from_thread(void *arg) {
    return (void *)(long)fork_and_wait(9);
}

static void forks(void) {
    pthread_t spinners[3], forker;
    for (int i = 0; i < 3; i++)
        pthread_create(&spinners[i], NULL, spinner, NULL);
    fflush(stdout);
    printf("fork from main with 3 threads running:\n");
    fflush(stdout);
    int status = fork_and_wait(7);
    printf("  parent: child exited %d\n", status);
    printf("fork from another thread:\n");
    fflush(stdout);
    void *result;
    pthread_create(&forker, NULL, fork_from_thread, NULL);
    pthread_join(forker, &result);
    printf("  parent: child exited %ld\n", (long)result);
    spin_stop = 1;
    for (int i = 0; i < 3; i++)
        pthread_join(spinners[i], NULL);
}

/* -- exit while others run -------------------------------------------------------- */
static int blocked_pipe[2];
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;

static void *busy(void *arg) {
    announce_ready();
    for (volatile unsigned long i = 0;; i++)
        ;
    return NULL;
}

static void *reader(void *arg) {
    char byte;
    announce_ready();
    read(blocked_pipe[0], &byte, 1);
    return NULL;
}

static void *waiter(void *arg) {
    pthread_mutex_lock(&queue_lock);
    announce_ready();
    for (;;)
        pthread_cond_wait(&never, &queue_lock);
    return NULL;
}

static void exit_while_running(void) {
    pthread_t thread;
    ready = 0;
    pipe(blocked_pipe);
    pthread_create(&thread, NULL, busy, NULL);
    pthread_create(&thread, NULL, reader, NULL);
    pthread_create(&thread, NULL, waiter, NULL);
    wait_ready(3);
    printf("exit with 3 threads running (busy, in read, in a condition wait)\n");
    fflush(stdout);
    exit(3);
}

int main(int argc, char **argv) {
    if (argc > 1)
        scale = atol(argv[1]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    counters();
    names();
    producer_consumer();
    barriers();
    signals();
    forks();
    exit_while_running();
}
