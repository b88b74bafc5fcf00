/*
 * gc_bench.c — the garbage-collector workload of `kvmdune bench gc`.
 *
 * Drives Debian's unmodified libgc (bdwgc), with its default settings, through
 * one of two workloads and prints one JSON line: how long it took, how many
 * collections bdwgc made, and how long the world stayed stopped in each.
 *
 *   gc_bench [--incremental] trees [LONG_LIVED_DEPTH [MAX_DEPTH [ARRAY_DOUBLES]]]
 *   gc_bench [--incremental] mutate [OLD_OBJECTS [ROUNDS]]
 *
 * trees: GCBench's shape (Ellis, Kovac and Boehm's binary-tree benchmark): a
 *   long-lived tree and a long-lived array of doubles stay reachable while
 *   short-lived trees of growing depth are built top-down (each node allocated
 *   before its children, then linked: old objects written) and bottom-up.
 * mutate: a table of OLD_OBJECTS objects made first (the old generation), then
 *   ROUNDS rounds, each rewriting OLD_OBJECTS randomly chosen old objects to point
 *   at a freshly allocated one (the previous one becomes garbage). Every rewrite
 *   dirties a page of old objects: the case an incremental collector's write
 *   barrier (mprotect faults natively, dirty bits under kvmdune) pays for.
 *
 * --incremental calls GC_enable_incremental(). Which dirty-bit implementation
 * bdwgc then takes it says itself with GC_PRINT_VERBOSE_STATS=1 (the harness
 * checks that in a run of its own: the messages cost time).
 *
 * A pause is one world-stopped interval, from bdwgc's GC_EVENT_PRE_STOP_WORLD to
 * its GC_EVENT_POST_START_WORLD (stopped marking: the whole mark phase when not
 * incremental, its final part when incremental). Marking done in increments
 * while allocating is not a pause by this measure; the total time holds it.
 *
 * The results are checked: every node of the long-lived tree and every value of
 * the array (trees), every old object's current child (mutate), against what was
 * written. A collector that missed a dirty page would free a live object, which a
 * later allocation overwrites: "correct" is then false and the exit status 1.
 */
#define _GNU_SOURCE
#include <gc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct node {
    struct node *left;
    struct node *right;
    long value;
};

/* An old object of the mutate workload and the young one it points at. */
struct child {
    long value;
    long pad[3];
};

struct old {
    struct child *child;
    long slot;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- pauses: bdwgc's own stop-the-world events ---- */

static uint64_t stop_started_ns;
static uint64_t pauses;
static uint64_t pause_total_ns;
static uint64_t pause_max_ns;

static void on_collection_event(GC_EventType event)
{
    if (event == GC_EVENT_PRE_STOP_WORLD) {
        stop_started_ns = now_ns();
    } else if (event == GC_EVENT_POST_START_WORLD && stop_started_ns) {
        uint64_t pause = now_ns() - stop_started_ns;
        stop_started_ns = 0;
        pauses++;
        pause_total_ns += pause;
        if (pause > pause_max_ns)
            pause_max_ns = pause;
    }
}

/* ---- trees (GCBench's shape) ---- */

static int tree_size(int depth)
{
    return (1 << (depth + 1)) - 1;
}

static struct node *new_node(struct node *left, struct node *right)
{
    struct node *n = GC_MALLOC(sizeof *n);
    if (!n) {
        fputs("gc_bench: out of memory\n", stderr);
        exit(2);
    }
    n->left = left;
    n->right = right;
    return n;
}

/* Top-down: the node exists before its children and is written as they come. */
static void populate(int depth, struct node *n)
{
    if (depth <= 0)
        return;
    n->left = new_node(NULL, NULL);
    n->right = new_node(NULL, NULL);
    populate(depth - 1, n->left);
    populate(depth - 1, n->right);
}

static struct node *make_tree(int depth)
{
    if (depth <= 0)
        return new_node(NULL, NULL);
    return new_node(make_tree(depth - 1), make_tree(depth - 1));
}

/* Numbers the tree's nodes in preorder from `first`; returns the next number. */
static long number(struct node *n, long first)
{
    if (!n)
        return first;
    n->value = first;
    return number(n->right, number(n->left, first + 1));
}

/* Whether the nodes still hold the preorder numbers from `*next` on. */
static int check_numbers(const struct node *n, long *next)
{
    if (!n)
        return 1;
    if (n->value != (*next)++)
        return 0;
    return check_numbers(n->left, next) && check_numbers(n->right, next);
}

static int run_trees(int long_lived_depth, int max_depth, long array_doubles)
{
    const int min_depth = 4;
    const int stretch_depth = max_depth + 2;
    int correct = 1;

    /* A stretch tree first: the heap grows to its working size. */
    make_tree(stretch_depth);

    struct node *long_lived = new_node(NULL, NULL);
    populate(long_lived_depth, long_lived);
    long nodes = number(long_lived, 0);
    double *array = GC_MALLOC_ATOMIC(sizeof(double) * (size_t)array_doubles);
    if (!array) {
        fputs("gc_bench: out of memory\n", stderr);
        exit(2);
    }
    for (long i = 0; i < array_doubles / 2; i++)
        array[i] = 1.0 / (double)(i + 1);

    for (int depth = min_depth; depth <= max_depth; depth += 2) {
        int iterations = 2 * tree_size(stretch_depth) / tree_size(depth);
        for (int i = 0; i < iterations; i++) {
            struct node *top_down = new_node(NULL, NULL);
            populate(depth, top_down);
            struct node *bottom_up = make_tree(depth);
            /* Both must be whole while they live. */
            long next = 0;
            if (number(top_down, 0) != tree_size(depth) ||
                number(bottom_up, 0) != tree_size(depth) ||
                !check_numbers(top_down, &next))
                correct = 0;
        }
    }

    long next = 0;
    if (nodes != tree_size(long_lived_depth) || !check_numbers(long_lived, &next))
        correct = 0;
    for (long i = 0; i < array_doubles / 2; i++)
        if (array[i] != 1.0 / (double)(i + 1))
            correct = 0;
    return correct;
}

/* ---- mutate: old objects rewritten to point at young ones ---- */

static uint64_t xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static struct child *new_child(long value)
{
    struct child *c = GC_MALLOC(sizeof *c);
    if (!c) {
        fputs("gc_bench: out of memory\n", stderr);
        exit(2);
    }
    c->value = value;
    return c;
}

static int run_mutate(long objects, int rounds)
{
    /* The table of old objects is itself collected memory (scanned, kept). */
    struct old **table = GC_MALLOC(sizeof(*table) * (size_t)objects);
    /* What each old object's child must hold: outside the collected heap. */
    long *expected = malloc(sizeof(*expected) * (size_t)objects);
    if (!table || !expected) {
        fputs("gc_bench: out of memory\n", stderr);
        exit(2);
    }
    for (long i = 0; i < objects; i++) {
        table[i] = GC_MALLOC(sizeof(struct old));
        table[i]->slot = i;
        table[i]->child = new_child(i);
        expected[i] = i;
    }

    uint64_t state = 0x9E3779B97F4A7C15ull;
    int correct = 1;
    for (int round = 1; round <= rounds; round++) {
        for (long k = 0; k < objects; k++) {
            long i = (long)(xorshift(&state) % (uint64_t)objects);
            long value = (long)round * objects + k;
            table[i]->child = new_child(value);
            expected[i] = value;
        }
        /* A sample checked every round: a freed live object shows up early. */
        for (long i = round % 97; i < objects; i += 97)
            if (table[i]->slot != i || table[i]->child->value != expected[i])
                correct = 0;
    }
    for (long i = 0; i < objects; i++)
        if (table[i]->slot != i || table[i]->child->value != expected[i])
            correct = 0;
    free(expected);
    return correct;
}

static void usage(void)
{
    fputs("usage: gc_bench [--incremental] trees [LONG_LIVED_DEPTH [MAX_DEPTH "
          "[ARRAY_DOUBLES]]]\n"
          "       gc_bench [--incremental] mutate [OLD_OBJECTS [ROUNDS]]\n", stderr);
    exit(2);
}

static long argument(int argc, char **argv, int index, long fallback, long low, long high)
{
    if (index >= argc)
        return fallback;
    char *end;
    long value = strtol(argv[index], &end, 10);
    if (*end || value < low || value > high)
        usage();
    return value;
}

int main(int argc, char **argv)
{
    int incremental = 0;
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "--incremental") == 0) {
        incremental = 1;
        first = 2;
    }
    if (first >= argc)
        usage();
    const char *workload = argv[first];

    GC_INIT();
    if (incremental)
        GC_enable_incremental();
    GC_set_on_collection_event(on_collection_event);
    GC_word collections_before = GC_get_gc_no();

    uint64_t started = now_ns();
    int correct;
    if (strcmp(workload, "trees") == 0) {
        int long_lived = (int)argument(argc, argv, first + 1, 16, 1, 24);
        int max_depth = (int)argument(argc, argv, first + 2, 16, 4, 22);
        long doubles = argument(argc, argv, first + 3, 500000, 2, 100000000);
        correct = run_trees(long_lived, max_depth, doubles);
    } else if (strcmp(workload, "mutate") == 0) {
        long objects = argument(argc, argv, first + 1, 200000, 1, 50000000);
        int rounds = (int)argument(argc, argv, first + 2, 20, 1, 100000);
        correct = run_mutate(objects, rounds);
    } else {
        usage();
        return 2;
    }
    uint64_t elapsed = now_ns() - started;

    printf("{\"workload\": \"%s\", \"incremental\": %s, \"incremental_mode\": %d, "
           "\"total_ns\": %llu, \"collections\": %llu, \"pauses\": %llu, "
           "\"pause_total_ns\": %llu, \"pause_max_ns\": %llu, \"heap_bytes\": %llu, "
           "\"correct\": %s}\n",
           workload, incremental ? "true" : "false", GC_is_incremental_mode(),
           (unsigned long long)elapsed,
           (unsigned long long)(GC_get_gc_no() - collections_before),
           (unsigned long long)pauses, (unsigned long long)pause_total_ns,
           (unsigned long long)pause_max_ns, (unsigned long long)GC_get_heap_size(),
           correct ? "true" : "false");
    return correct ? 0 : 1;
}
