/*
 * linux_baselines.c — the Linux side of `kvmdune bench core`.
 *
 * Measures what a plain Linux process pays for the operations kvmdune makes
 * available inside a VM (system call, page protection, user-level fault
 * handling, dirty-page tracking), so each kvmdune figure can be printed next
 * to its Linux alternative measured in the same run.
 *
 * Build: gcc -O2 -o linux_baselines linux_baselines.c   (glibc >= 2.34: no -lpthread)
 * Usage: linux_baselines [--repeat N] BENCHMARK [ARGS...]
 *   getppid        [ITERATIONS]
 *   mprotect_pair  [ITERATIONS]
 *   trap           [ITERATIONS]
 *   dirty_mprotect [SIZE_MB [WRITE_PAGES]]
 *   dirty_uffd     [SIZE_MB [WRITE_PAGES [async|sync]]]
 *   all            (every benchmark with its defaults)
 *
 * Output: one JSON object per line, one line per benchmark run. Every object
 * has "benchmark"; a failed run has "error" (a sentence) and nothing measured.
 * Times are the median over the repetitions: nanoseconds from
 * clock_gettime(CLOCK_MONOTONIC), cycles from rdtsc (TSC ticks, the unit of
 * PLATFORM.md's tables).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

/* ---- uapi definitions newer than Debian 12's headers (values: Linux uapi) ---- */

/* linux/userfaultfd.h */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1ULL << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1ULL << 15)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00) /* /dev/userfaultfd (Linux 6.1) */
#endif

/* linux/fs.h: the PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux 6.7) */
#ifndef PAGEMAP_SCAN
struct page_region {
    uint64_t start;
    uint64_t end; /* exclusive */
    uint64_t categories;
};
struct pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif
#ifndef PAGE_IS_WRITTEN
#define PAGE_IS_WRITTEN (1ULL << 1)
#endif
#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING (1ULL << 0)
#endif
#ifndef PM_SCAN_CHECK_WPASYNC
#define PM_SCAN_CHECK_WPASYNC (1ULL << 1)
#endif

/* ---- parameters ---- */

#define PAGE_SIZE 4096UL
#define DEFAULT_REPEAT 5
#define MAX_REPEAT 101
/* Loop lengths chosen so each benchmark stays well under a second per
 * repetition on the project machine (see PLATFORM.md's Linux table). */
#define DEFAULT_GETPPID_ITERS 200000L
#define DEFAULT_MPROTECT_ITERS 20000L
#define DEFAULT_TRAP_ITERS 20000L
#define DEFAULT_DIRTY_SIZE_MB 1024L
/* 4096 of 262,144 pages (1.6%): a sparse write set, as a GC's mutator during
 * one marking phase would make. */
#define DEFAULT_DIRTY_WRITE_PAGES 4096L
#define MAX_DIRTY_SIZE_MB (16L * 1024) /* the machine has 24 GiB */
/* Each page unprotected inside the read-only range splits its VMA in up to
 * three; leave headroom under vm.max_map_count for the rest of the process. */
#define VMA_HEADROOM 1024L
#define PAGE_REGION_BATCH 4096 /* page_region entries per PAGEMAP_SCAN call */

static int g_repeat = DEFAULT_REPEAT;

/* ---- timing ---- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* lfence orders rdtsc after the work before it (AMD and Intel alike). */
static inline uint64_t now_tsc(void)
{
    _mm_lfence();
    uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
}

struct stamp {
    uint64_t ns, tsc;
};

static inline struct stamp stamp_now(void)
{
    struct stamp s;
    s.tsc = now_tsc();
    s.ns = now_ns();
    return s;
}

/* One measured span: both clocks. */
struct span {
    double ns, cycles;
};

static inline struct span span_since(struct stamp a)
{
    struct stamp b = stamp_now();
    struct span s = {(double)(b.ns - a.ns), (double)(b.tsc - a.tsc)};
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double tmp[MAX_REPEAT];
    memcpy(tmp, v, (size_t)n * sizeof(double));
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2.0;
}

/* ---- JSON output: one object per line, built field by field ---- */

static char g_line[16384];
static size_t g_len;

static void jraw(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g_line + g_len, sizeof g_line - g_len, fmt, ap);
    va_end(ap);
    if (n > 0)
        g_len += (size_t)n < sizeof g_line - g_len ? (size_t)n : sizeof g_line - g_len - 1;
}

static void jbegin(const char *bench)
{
    g_len = 0;
    jraw("{\"benchmark\":\"%s\"", bench);
}

/* Strings here are our own messages and strerror() text: no quotes or
 * control characters to escape, but be safe about quotes and backslashes. */
static void jstr(const char *key, const char *val)
{
    jraw(",\"%s\":\"", key);
    for (const char *p = val; *p; p++) {
        if (*p == '"' || *p == '\\')
            jraw("\\%c", *p);
        else if ((unsigned char)*p >= 0x20)
            jraw("%c", *p);
    }
    jraw("\"");
}

static void jint(const char *key, long long v) { jraw(",\"%s\":%lld", key, v); }
static void jnum(const char *key, double v) { jraw(",\"%s\":%.1f", key, v); }
static void jbool(const char *key, int v) { jraw(",\"%s\":%s", key, v ? "true" : "false"); }

static void jarray(const char *key, const double *v, int n)
{
    jraw(",\"%s\":[", key);
    for (int i = 0; i < n; i++)
        jraw("%s%.1f", i ? "," : "", v[i]);
    jraw("]");
}

static void jend(void)
{
    jraw("}\n");
    fputs(g_line, stdout);
    fflush(stdout);
}

/* Common fields of every result: the TSC rate seen over the run lets a
 * reader convert between the two clocks. */
static struct stamp g_run_start;

static void jcommon_tail(void)
{
    struct span run = span_since(g_run_start);
    jnum("tsc_mhz", run.ns > 0 ? run.cycles * 1000.0 / run.ns : 0.0);
}

static int report_error(const char *bench, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jbegin(bench);
    jstr("error", msg);
    jend();
    return 1;
}

/* A loop benchmark: g_repeat repetitions of `iters` operations; the median
 * per-operation cost on both clocks, plus every repetition's sample. */
static void report_loop(const char *bench, long iters, const double *ns, const double *cyc)
{
    double per_ns[MAX_REPEAT], per_cyc[MAX_REPEAT];
    for (int r = 0; r < g_repeat; r++) {
        per_ns[r] = ns[r] / (double)iters;
        per_cyc[r] = cyc[r] / (double)iters;
    }
    jbegin(bench);
    jint("iterations", iters);
    jint("repeat", g_repeat);
    jnum("per_op_ns", median(per_ns, g_repeat));
    jnum("per_op_cycles", median(per_cyc, g_repeat));
    jnum("loop_ns", median(ns, g_repeat));
    jarray("samples_per_op_ns", per_ns, g_repeat);
    jarray("samples_per_op_cycles", per_cyc, g_repeat);
    jcommon_tail();
    jend();
}

/* ---- 1. getppid ---- */

static int bench_getppid(long iters)
{
    double ns[MAX_REPEAT], cyc[MAX_REPEAT];
    for (long i = 0; i < 1000; i++) /* warm the path */
        syscall(SYS_getppid);
    for (int r = 0; r < g_repeat; r++) {
        struct stamp t0 = stamp_now();
        for (long i = 0; i < iters; i++)
            syscall(SYS_getppid); /* glibc's getppid() is a syscall too, but be explicit */
        struct span s = span_since(t0);
        ns[r] = s.ns;
        cyc[r] = s.cycles;
    }
    report_loop("getppid", iters, ns, cyc);
    return 0;
}

/* ---- 2. mprotect pair ---- */

static int bench_mprotect_pair(long iters)
{
    volatile char *page = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (page == MAP_FAILED)
        return report_error("mprotect_pair", "mmap: %s", strerror(errno));
    page[0] = 1; /* a present PTE, so each mprotect really changes it */
    double ns[MAX_REPEAT], cyc[MAX_REPEAT];
    for (int r = 0; r < g_repeat; r++) {
        struct stamp t0 = stamp_now();
        for (long i = 0; i < iters; i++) {
            if (mprotect((void *)page, PAGE_SIZE, PROT_READ) ||
                mprotect((void *)page, PAGE_SIZE, PROT_READ | PROT_WRITE))
                return report_error("mprotect_pair", "mprotect: %s", strerror(errno));
        }
        struct span s = span_since(t0);
        ns[r] = s.ns;
        cyc[r] = s.cycles;
    }
    munmap((void *)page, PAGE_SIZE);
    report_loop("mprotect_pair", iters, ns, cyc);
    return 0;
}

/* ---- SIGSEGV write barrier shared by `trap` and `dirty_mprotect` ---- */

/* The region the handler may unprotect; a fault anywhere else is a real bug
 * and gets the default action. */
static char *g_fault_base;
static size_t g_fault_len;
static uint64_t *g_fault_bitmap; /* NULL: `trap` (no recording) */
static volatile sig_atomic_t g_fault_count;

static void die_in_handler(const char *msg)
{
    /* Only async-signal-safe calls here: write(2) a JSON error and leave. */
    static const char head[] = "{\"benchmark\":\"fault_handler\",\"error\":\"";
    static const char tail[] = "\"}\n";
    ssize_t ignored = write(1, head, sizeof head - 1);
    ignored = write(1, msg, strlen(msg));
    ignored = write(1, tail, sizeof tail - 1);
    (void)ignored;
    _exit(3);
}

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    char *addr = (char *)si->si_addr;
    if (addr < g_fault_base || addr >= g_fault_base + g_fault_len) {
        signal(sig, SIG_DFL); /* not ours: crash as usual on return */
        return;
    }
    size_t pageno = (size_t)(addr - g_fault_base) / PAGE_SIZE;
    if (g_fault_bitmap)
        g_fault_bitmap[pageno / 64] |= 1ULL << (pageno % 64);
    g_fault_count++;
    /* mprotect is a plain system call: safe in a handler in practice (it is
     * what every mprotect-based write barrier does). */
    if (mprotect(g_fault_base + pageno * PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE))
        die_in_handler("mprotect in SIGSEGV handler failed (vm.max_map_count reached?)");
}

static int install_segv_handler(char *base, size_t len, uint64_t *bitmap)
{
    g_fault_base = base;
    g_fault_len = len;
    g_fault_bitmap = bitmap;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGSEGV, &sa, NULL);
}

static void remove_segv_handler(void)
{
    signal(SIGSEGV, SIG_DFL);
    g_fault_base = NULL;
    g_fault_len = 0;
    g_fault_bitmap = NULL;
}

/* ---- 3. trap: Appel & Li prot1 + trap + unprot ---- */

static int bench_trap(long iters)
{
    volatile char *page = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (page == MAP_FAILED)
        return report_error("trap", "mmap: %s", strerror(errno));
    page[0] = 1;
    if (install_segv_handler((char *)page, PAGE_SIZE, NULL))
        return report_error("trap", "sigaction: %s", strerror(errno));
    double ns[MAX_REPEAT], cyc[MAX_REPEAT];
    for (int r = 0; r < g_repeat; r++) {
        g_fault_count = 0;
        struct stamp t0 = stamp_now();
        for (long i = 0; i < iters; i++) {
            if (mprotect((void *)page, PAGE_SIZE, PROT_READ)) /* prot1 */
                return report_error("trap", "mprotect: %s", strerror(errno));
            page[0] = (char)i; /* trap; the handler unprots; the write retries */
        }
        struct span s = span_since(t0);
        if (g_fault_count != iters)
            return report_error("trap", "expected %ld faults, saw %ld", iters, (long)g_fault_count);
        ns[r] = s.ns;
        cyc[r] = s.cycles;
    }
    remove_segv_handler();
    munmap((void *)page, PAGE_SIZE);
    report_loop("trap", iters, ns, cyc);
    return 0;
}

/* ---- dirty tracking: shared setup, write pattern, check, report ---- */

struct dirty_region {
    char *base;
    size_t len, pages;
    long write_pages;
    size_t stride;
    uint64_t *written;   /* pages this round wrote */
    uint64_t *collected; /* pages this round's collection reported (checking only) */
    uint64_t *barrier;   /* pages a fault handler saw written (mprotect, uffd sync) */
    size_t *dirty;       /* the collected dirty set: page numbers, as a GC would use it */
    size_t bitmap_words;
    double touch_ns;
};

static int dirty_setup(const char *bench, struct dirty_region *d, long size_mb, long write_pages)
{
    if (size_mb < 1 || size_mb > MAX_DIRTY_SIZE_MB)
        return report_error(bench, "SIZE_MB must be in 1..%ld", MAX_DIRTY_SIZE_MB);
    d->len = (size_t)size_mb << 20;
    d->pages = d->len / PAGE_SIZE;
    if (write_pages < 1 || (size_t)write_pages > d->pages)
        return report_error(bench, "WRITE_PAGES must be in 1..%zu", d->pages);
    d->write_pages = write_pages;
    d->stride = d->pages / (size_t)write_pages;
    d->bitmap_words = (d->pages + 63) / 64;
    d->written = calloc(d->bitmap_words, sizeof(uint64_t));
    d->collected = calloc(d->bitmap_words, sizeof(uint64_t));
    d->barrier = calloc(d->bitmap_words, sizeof(uint64_t));
    d->dirty = calloc(d->pages, sizeof(size_t)); /* room for every page: no overflow check in the timed loop */
    if (!d->written || !d->collected || !d->barrier || !d->dirty)
        return report_error(bench, "out of memory for bitmaps");
    d->base = mmap(NULL, d->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (d->base == MAP_FAILED)
        return report_error(bench, "mmap %ld MiB: %s", size_mb, strerror(errno));
    /* Track 4 KiB pages, as Dune's dirty bits do: without THP the result does
     * not depend on the host's transparent_hugepage setting. */
    madvise(d->base, d->len, MADV_NOHUGEPAGE);
    struct stamp t0 = stamp_now();
    for (size_t off = 0; off < d->len; off += PAGE_SIZE) /* fully touched */
        d->base[off] = 1;
    d->touch_ns = span_since(t0).ns;
    return 0;
}

static void dirty_teardown(struct dirty_region *d)
{
    if (d->base && d->base != MAP_FAILED)
        munmap(d->base, d->len);
    free(d->written);
    free(d->collected);
    free(d->barrier);
    free(d->dirty);
}

/* Round r writes WRITE_PAGES pages spread evenly over the region; the offset
 * moves each round so consecutive rounds write different pages. */
static inline size_t dirty_page_of(const struct dirty_region *d, int round, long i)
{
    return (size_t)i * d->stride + (size_t)round % d->stride;
}

static void dirty_plan(struct dirty_region *d, int round)
{
    memset(d->written, 0, d->bitmap_words * sizeof(uint64_t));
    for (long i = 0; i < d->write_pages; i++) {
        size_t p = dirty_page_of(d, round, i);
        d->written[p / 64] |= 1ULL << (p % 64);
    }
}

static void dirty_write(struct dirty_region *d, int round)
{
    for (long i = 0; i < d->write_pages; i++)
        ((volatile char *)d->base)[dirty_page_of(d, round, i) * PAGE_SIZE] = (char)(round + 2);
}

/* Collect from a fault handler's bitmap: list the set pages and clear the
 * bitmap for the next round. Returns how many pages were listed. */
static size_t dirty_collect_bitmap(struct dirty_region *d)
{
    size_t n = 0;
    for (size_t w = 0; w < d->bitmap_words; w++) {
        uint64_t bits = __atomic_load_n(&d->barrier[w], __ATOMIC_ACQUIRE);
        if (!bits)
            continue;
        d->barrier[w] = 0;
        while (bits) {
            d->dirty[n++] = w * 64 + (size_t)__builtin_ctzll(bits);
            bits &= bits - 1;
        }
    }
    return n;
}

/* Checked outside the timed phases: the collected list names exactly the
 * pages written, each once. */
static int dirty_matches(struct dirty_region *d, size_t n)
{
    memset(d->collected, 0, d->bitmap_words * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++) {
        size_t p = d->dirty[i];
        if (p >= d->pages || (d->collected[p / 64] & (1ULL << (p % 64))))
            return 0; /* out of range or listed twice */
        d->collected[p / 64] |= 1ULL << (p % 64);
    }
    return n == (size_t)d->write_pages &&
           memcmp(d->written, d->collected, d->bitmap_words * sizeof(uint64_t)) == 0;
}

/* Per-round phase times, both clocks. */
struct dirty_samples {
    double arm_ns[MAX_REPEAT], arm_cyc[MAX_REPEAT];
    double write_ns[MAX_REPEAT], write_cyc[MAX_REPEAT];
    double collect_ns[MAX_REPEAT], collect_cyc[MAX_REPEAT];
    double total_ns[MAX_REPEAT], total_cyc[MAX_REPEAT];
};

static void dirty_record(struct dirty_samples *s, int r, struct span arm, struct span wr,
                         struct span col)
{
    s->arm_ns[r] = arm.ns;
    s->arm_cyc[r] = arm.cycles;
    s->write_ns[r] = wr.ns;
    s->write_cyc[r] = wr.cycles;
    s->collect_ns[r] = col.ns;
    s->collect_cyc[r] = col.cycles;
    s->total_ns[r] = arm.ns + wr.ns + col.ns;
    s->total_cyc[r] = arm.cycles + wr.cycles + col.cycles;
}

/* Fields common to both trackers; the caller adds its own and ends the line. */
static void dirty_report_begin(const char *bench, const struct dirty_region *d,
                               const struct dirty_samples *s, int correct, size_t found)
{
    int n = g_repeat;
    double per_write_ns[MAX_REPEAT], per_write_cyc[MAX_REPEAT];
    for (int r = 0; r < n; r++) {
        per_write_ns[r] = s->write_ns[r] / (double)d->write_pages;
        per_write_cyc[r] = s->write_cyc[r] / (double)d->write_pages;
    }
    jbegin(bench);
    jint("size_mb", (long long)(d->len >> 20));
    jint("pages", (long long)d->pages);
    jint("write_pages", d->write_pages);
    jint("repeat", n);
    jbool("correct", correct);
    jint("dirty_found", (long long)found);
    /* One operation = one whole tracking round. */
    jnum("per_op_ns", median(s->total_ns, n));
    jnum("per_op_cycles", median(s->total_cyc, n));
    jnum("arm_ns", median(s->arm_ns, n));
    jnum("arm_cycles", median(s->arm_cyc, n));
    jnum("writes_ns", median(s->write_ns, n));
    jnum("write_ns", median(per_write_ns, n));
    jnum("write_cycles", median(per_write_cyc, n));
    jnum("collect_ns", median(s->collect_ns, n));
    jnum("collect_cycles", median(s->collect_cyc, n));
    jnum("total_ns", median(s->total_ns, n));
    jnum("total_cycles", median(s->total_cyc, n));
    jarray("samples_total_ns", s->total_ns, n);
    jnum("touch_ns", d->touch_ns);
    jint("page_size", (long long)PAGE_SIZE);
}

/* ---- 4. dirty tracking by mprotect write barrier ---- */

static long read_max_map_count(void)
{
    long v = 65530; /* the kernel default */
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = 65530;
        fclose(f);
    }
    return v;
}

static int bench_dirty_mprotect(long size_mb, long write_pages)
{
    const char *bench = "dirty_mprotect";
    long map_limit = read_max_map_count();
    if (2 * write_pages + VMA_HEADROOM > map_limit)
        return report_error(bench,
                            "WRITE_PAGES %ld needs ~%ld VMAs, vm.max_map_count is %ld",
                            write_pages, 2 * write_pages + VMA_HEADROOM, map_limit);
    struct dirty_region d = {0};
    if (dirty_setup(bench, &d, size_mb, write_pages)) {
        dirty_teardown(&d);
        return 1;
    }
    if (install_segv_handler(d.base, d.len, d.barrier)) {
        dirty_teardown(&d);
        return report_error(bench, "sigaction: %s", strerror(errno));
    }
    struct dirty_samples s;
    int correct = 1;
    size_t found = 0;
    for (int r = 0; r < g_repeat; r++) {
        dirty_plan(&d, r);
        g_fault_count = 0;

        struct stamp t0 = stamp_now();
        if (mprotect(d.base, d.len, PROT_READ)) { /* arm: start of tracking */
            remove_segv_handler();
            dirty_teardown(&d);
            return report_error(bench, "mprotect: %s", strerror(errno));
        }
        struct span arm = span_since(t0);

        t0 = stamp_now();
        dirty_write(&d, r); /* each write faults once; the handler records it */
        struct span wr = span_since(t0);

        /* Collect: scan the handler's bitmap into the dirty list, clearing it
         * (re-protection happens at the next round's arming). */
        t0 = stamp_now();
        size_t n = dirty_collect_bitmap(&d);
        struct span col = span_since(t0);

        correct &= dirty_matches(&d, n) && g_fault_count == write_pages;
        found = n;
        dirty_record(&s, r, arm, wr, col);
    }
    remove_segv_handler();
    dirty_report_begin(bench, &d, &s, correct, found);
    jcommon_tail();
    jend();
    dirty_teardown(&d);
    return 0;
}

/* ---- 5. dirty tracking by userfaultfd write protection ---- */

/* Open a userfaultfd: the system call (root, or unprivileged_userfaultfd=1,
 * or user-mode faults only), else /dev/userfaultfd (its file mode decides).
 * Non-blocking: poll() on a userfaultfd may report POLLIN while a read would
 * still block (the fault was resolved in between), which would hang the
 * sync-mode handler thread in read() past its stop signal. */
#define UFFD_OPEN_FLAGS (O_CLOEXEC | O_NONBLOCK)

static int open_uffd(char *why, size_t why_len)
{
    int fd = (int)syscall(SYS_userfaultfd, UFFD_OPEN_FLAGS);
    if (fd >= 0)
        return fd;
    int err1 = errno;
    /* Our faults all come from user mode, which unprivileged users may track. */
    fd = (int)syscall(SYS_userfaultfd, UFFD_OPEN_FLAGS | UFFD_USER_MODE_ONLY);
    if (fd >= 0)
        return fd;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, UFFD_OPEN_FLAGS);
        int err3 = errno;
        close(dev);
        if (fd >= 0)
            return fd;
        errno = err3;
    }
    snprintf(why, why_len,
             "userfaultfd not permitted (%s; check /proc/sys/vm/unprivileged_userfaultfd "
             "and the mode of /dev/userfaultfd)",
             strerror(err1));
    return -1;
}

/* The features this kernel offers: a UFFDIO_API handshake on a throwaway fd,
 * since each fd accepts exactly one. */
static int uffd_probe_features(uint64_t *features, char *why, size_t why_len)
{
    int fd = open_uffd(why, why_len);
    if (fd < 0)
        return -1;
    struct uffdio_api api = {.api = UFFD_API, .features = 0};
    int rc = ioctl(fd, UFFDIO_API, &api);
    if (rc)
        snprintf(why, why_len, "UFFDIO_API: %s", strerror(errno));
    close(fd);
    *features = api.features;
    return rc;
}

/* Sync mode (kernels without WP_ASYNC): a thread receives each write-protect
 * fault, records the page and resolves the fault by unprotecting that page. */
struct uffd_handler {
    int uffd, stop_fd;
    char *base;
    uint64_t *bitmap;
    long faults;
    int failed;
};

static void *uffd_handler_main(void *arg)
{
    struct uffd_handler *h = arg;
    struct pollfd pfd[2] = {{.fd = h->uffd, .events = POLLIN}, {.fd = h->stop_fd, .events = POLLIN}};
    for (;;) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            h->failed = 1;
            return NULL;
        }
        if (pfd[1].revents)
            return NULL;
        struct uffd_msg msg;
        ssize_t n = read(h->uffd, &msg, sizeof msg);
        if (n != sizeof msg) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            h->failed = 1;
            return NULL;
        }
        if (msg.event != UFFD_EVENT_PAGEFAULT || !(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
            h->failed = 1; /* nothing else is registered: a bug */
            return NULL;
        }
        uint64_t page_addr = msg.arg.pagefault.address & ~(uint64_t)(PAGE_SIZE - 1);
        size_t p = (size_t)(page_addr - (uint64_t)h->base) / PAGE_SIZE;
        /* Store before the wake: the writer's return from its fault (after
         * this ioctl) is what the main thread's collection waits on. */
        __atomic_or_fetch(&h->bitmap[p / 64], 1ULL << (p % 64), __ATOMIC_RELEASE);
        __atomic_add_fetch(&h->faults, 1, __ATOMIC_RELEASE);
        struct uffdio_writeprotect wp = {.range = {.start = page_addr, .len = PAGE_SIZE}, .mode = 0};
        if (ioctl(h->uffd, UFFDIO_WRITEPROTECT, &wp)) {
            h->failed = 1;
            return NULL;
        }
    }
}

/* Async collect: PAGEMAP_SCAN reports the written pages and write-protects
 * them again in the same walk. A full output vector stops the walk early, so
 * resume from walk_end until the whole range is done. */
static int uffd_scan_collect(int pagemap_fd, struct dirty_region *d, struct page_region *vec,
                             size_t *found, char *why, size_t why_len)
{
    uint64_t start = (uint64_t)d->base, end = start + d->len;
    *found = 0;
    while (start < end) {
        struct pm_scan_arg arg = {
            .size = sizeof arg,
            .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            .start = start,
            .end = end,
            .vec = (uint64_t)vec,
            .vec_len = PAGE_REGION_BATCH,
            .category_mask = PAGE_IS_WRITTEN,
            .return_mask = PAGE_IS_WRITTEN,
        };
        int n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
        if (n < 0) {
            snprintf(why, why_len, "PAGEMAP_SCAN: %s", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++) {
            size_t first = (size_t)(vec[i].start - (uint64_t)d->base) / PAGE_SIZE;
            size_t last = (size_t)(vec[i].end - (uint64_t)d->base) / PAGE_SIZE;
            /* A region may hold more pages than were written (a bug we want to
             * see, not overflow on): never list past the region's page count. */
            for (size_t p = first; p < last && *found < d->pages; p++)
                d->dirty[(*found)++] = p;
        }
        if (arg.walk_end <= start) {
            snprintf(why, why_len, "PAGEMAP_SCAN made no progress at %#llx",
                     (unsigned long long)start);
            return -1;
        }
        start = arg.walk_end;
    }
    return 0;
}

static int bench_dirty_uffd(long size_mb, long write_pages, const char *mode_arg)
{
    const char *bench = "dirty_uffd";
    char why[512] = "";
    uint64_t features = 0;
    if (uffd_probe_features(&features, why, sizeof why))
        return report_error(bench, "%s", why);
    int have_async = (features & UFFD_FEATURE_WP_ASYNC) != 0;
    int async;
    if (!mode_arg || !strcmp(mode_arg, "auto"))
        async = have_async;
    else if (!strcmp(mode_arg, "async"))
        async = 1;
    else if (!strcmp(mode_arg, "sync"))
        async = 0;
    else
        return report_error(bench, "mode must be async, sync or auto, not '%s'", mode_arg);
    if (async && !have_async)
        return report_error(bench, "kernel lacks UFFD_FEATURE_WP_ASYNC (Linux >= 6.7)");

    int pagemap_fd = -1;
    if (async) {
        pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        if (pagemap_fd < 0)
            return report_error(bench, "open /proc/self/pagemap: %s", strerror(errno));
    }

    struct dirty_region d = {0};
    if (dirty_setup(bench, &d, size_mb, write_pages)) {
        dirty_teardown(&d);
        return 1;
    }

    int uffd = open_uffd(why, sizeof why);
    if (uffd < 0) {
        dirty_teardown(&d);
        return report_error(bench, "%s", why);
    }
    /* WP_ASYNC: a write to a protected page just clears its uffd-wp bit (no
     * message, no blocking); PAGEMAP_SCAN reads the cleared bits back as
     * PAGE_IS_WRITTEN. It implies WP_UNPOPULATED; ask for both explicitly. */
    struct uffdio_api api = {.api = UFFD_API};
    if (async)
        api.features = UFFD_FEATURE_WP_ASYNC | (features & UFFD_FEATURE_WP_UNPOPULATED);
    if (ioctl(uffd, UFFDIO_API, &api)) {
        close(uffd);
        dirty_teardown(&d);
        return report_error(bench, "UFFDIO_API: %s", strerror(errno));
    }
    struct uffdio_register reg = {.range = {.start = (uint64_t)d.base, .len = d.len},
                                  .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) {
        close(uffd);
        dirty_teardown(&d);
        return report_error(bench, "UFFDIO_REGISTER (WP): %s", strerror(errno));
    }

    struct uffd_handler h = {.uffd = uffd, .stop_fd = -1, .base = d.base, .bitmap = d.barrier};
    pthread_t thread;
    int thread_started = 0;
    struct page_region *vec = NULL;
    if (async) {
        vec = calloc(PAGE_REGION_BATCH, sizeof *vec);
        if (!vec) {
            close(uffd);
            dirty_teardown(&d);
            return report_error(bench, "out of memory");
        }
    } else {
        h.stop_fd = eventfd(0, EFD_CLOEXEC);
        if (h.stop_fd < 0 || pthread_create(&thread, NULL, uffd_handler_main, &h)) {
            close(uffd);
            dirty_teardown(&d);
            return report_error(bench, "handler thread: %s", strerror(errno));
        }
        thread_started = 1;
    }

    struct dirty_samples s;
    int correct = 1, failed = 0;
    size_t found = 0;
    for (int r = 0; r < g_repeat && !failed; r++) {
        dirty_plan(&d, r);
        h.faults = 0;

        /* Arm: write-protect the whole range (start of tracking). */
        struct stamp t0 = stamp_now();
        struct uffdio_writeprotect wp = {.range = {.start = (uint64_t)d.base, .len = d.len},
                                         .mode = UFFDIO_WRITEPROTECT_MODE_WP};
        if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp)) {
            snprintf(why, sizeof why, "UFFDIO_WRITEPROTECT: %s", strerror(errno));
            failed = 1;
            break;
        }
        struct span arm = span_since(t0);

        t0 = stamp_now();
        dirty_write(&d, r);
        struct span wr = span_since(t0);

        t0 = stamp_now();
        size_t n = 0;
        if (async) {
            /* Collect: scan for written pages and re-protect them, one walk. */
            if (uffd_scan_collect(pagemap_fd, &d, vec, &n, why, sizeof why)) {
                failed = 1;
                break;
            }
        } else {
            /* Collect: the handler thread's bitmap into the dirty list
             * (protection is re-armed at the next round's UFFDIO_WRITEPROTECT). */
            n = dirty_collect_bitmap(&d);
        }
        struct span col = span_since(t0);

        int ok = dirty_matches(&d, n);
        if (!async)
            ok &= __atomic_load_n(&h.faults, __ATOMIC_ACQUIRE) == write_pages && !h.failed;
        correct &= ok;
        found = n;
        dirty_record(&s, r, arm, wr, col);
    }

    if (thread_started) {
        uint64_t one = 1;
        if (write(h.stop_fd, &one, sizeof one) != sizeof one)
            failed = 1;
        pthread_join(thread, NULL);
        close(h.stop_fd);
    }
    free(vec);
    struct uffdio_range range = {.start = (uint64_t)d.base, .len = d.len};
    ioctl(uffd, UFFDIO_UNREGISTER, &range);
    close(uffd);
    if (pagemap_fd >= 0)
        close(pagemap_fd);
    if (failed) {
        dirty_teardown(&d);
        return report_error(bench, "%s", why[0] ? why : "uffd handler thread failed");
    }
    dirty_report_begin(bench, &d, &s, correct, found);
    jstr("mode", async ? "async" : "sync");
    if (async) {
        /* The async scan re-protects what it reports, so a tracker that runs
         * round after round never arms again: its round is writes + collect. */
        double steady_ns[MAX_REPEAT], steady_cyc[MAX_REPEAT];
        for (int r = 0; r < g_repeat; r++) {
            steady_ns[r] = s.write_ns[r] + s.collect_ns[r];
            steady_cyc[r] = s.write_cyc[r] + s.collect_cyc[r];
        }
        jnum("steady_round_ns", median(steady_ns, g_repeat));
        jnum("steady_round_cycles", median(steady_cyc, g_repeat));
    }
    jbool("wp_async_available", have_async);
    jcommon_tail();
    jend();
    dirty_teardown(&d);
    return 0;
}

/* ---- command line ---- */

static long arg_long(int argc, char **argv, int i, long dflt)
{
    if (i >= argc)
        return dflt;
    char *end;
    errno = 0;
    long v = strtol(argv[i], &end, 0);
    if (errno || *end || v <= 0) {
        fprintf(stderr, "linux_baselines: bad number '%s'\n", argv[i]);
        exit(2);
    }
    return v;
}

static int run(const char *name, int argc, char **argv)
{
    g_run_start = stamp_now();
    if (!strcmp(name, "getppid"))
        return bench_getppid(arg_long(argc, argv, 0, DEFAULT_GETPPID_ITERS));
    if (!strcmp(name, "mprotect_pair"))
        return bench_mprotect_pair(arg_long(argc, argv, 0, DEFAULT_MPROTECT_ITERS));
    if (!strcmp(name, "trap"))
        return bench_trap(arg_long(argc, argv, 0, DEFAULT_TRAP_ITERS));
    if (!strcmp(name, "dirty_mprotect"))
        return bench_dirty_mprotect(arg_long(argc, argv, 0, DEFAULT_DIRTY_SIZE_MB),
                                    arg_long(argc, argv, 1, DEFAULT_DIRTY_WRITE_PAGES));
    if (!strcmp(name, "dirty_uffd"))
        return bench_dirty_uffd(arg_long(argc, argv, 0, DEFAULT_DIRTY_SIZE_MB),
                                arg_long(argc, argv, 1, DEFAULT_DIRTY_WRITE_PAGES),
                                argc > 2 ? argv[2] : NULL);
    if (!strcmp(name, "all")) {
        static const char *const every[] = {"getppid", "mprotect_pair", "trap", "dirty_mprotect",
                                            "dirty_uffd"};
        int rc = 0;
        for (size_t i = 0; i < sizeof every / sizeof every[0]; i++)
            rc |= run(every[i], 0, NULL);
        return rc;
    }
    return report_error(name, "unknown benchmark (getppid, mprotect_pair, trap, dirty_mprotect, "
                              "dirty_uffd, all)");
}

int main(int argc, char **argv)
{
    int i = 1;
    if (i + 1 < argc && !strcmp(argv[i], "--repeat")) {
        g_repeat = (int)arg_long(argc, argv, i + 1, DEFAULT_REPEAT);
        if (g_repeat > MAX_REPEAT) {
            fprintf(stderr, "linux_baselines: --repeat at most %d\n", MAX_REPEAT);
            return 2;
        }
        i += 2;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: %s [--repeat N] BENCHMARK [ARGS...]\n"
                        "  getppid|mprotect_pair|trap [ITERATIONS]\n"
                        "  dirty_mprotect [SIZE_MB [WRITE_PAGES]]\n"
                        "  dirty_uffd [SIZE_MB [WRITE_PAGES [async|sync|auto]]]\n"
                        "  all\n",
                argv[0]);
        return 2;
    }
    return run(argv[i], argc - i - 1, argv + i + 1);
}
