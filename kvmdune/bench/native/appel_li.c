/*
 * appel_li.c — Appel & Li's user-level virtual-memory primitives ("Virtual Memory
 * Primitives for User Programs", ASPLOS 1991), measured as Dune's bench/ measures
 * them, for `kvmdune bench paper` (Table 3). One program, built twice:
 *
 *   gcc -O2 -static appel_li.c                       Linux: mprotect + SIGSEGV
 *                                                    ("mprotect"), and userfaultfd
 *                                                    write protection ("uffd") where
 *                                                    it applies
 *   gcc -O2 -static -DAPPEL_LI_DUNE appel_li.c $(kvmdune config --cflags --libs)
 *                                                    the Dune API ("dune"), run under
 *                                                    `kvmdune run`
 *
 *   appel_li [--iterations N] [--method NAME] BENCH... | all
 *
 * On a region of 2 x 100 pages (NRPGS, as Dune's bench.h), every benchmark times
 * each operation with rdtsc and prints one JSON line: the median cycles and ns per
 * operation (ns from the TSC rate, calibrated against CLOCK_MONOTONIC) and whether
 * the operation did what it should (checked after each one):
 *
 *   trap    a write to a write-protected page, until its fault handler starts
 *   prot1   write-protect one page
 *   protN   write-protect 100 pages with one call
 *   unprot  give one page its write permission back
 *   dirty   write 10 of 100 pages, then find which were written (the finding
 *           re-arms the tracking): one round
 *   map2    map a page's frame at a second address (read-only there), checked by
 *           writing through the first and reading through the second
 *   appel1  per page of 100: a write faults; the handler unprotects the page and
 *           protects another (prot1 + trap + unprot)
 *   appel2  per page of 100: protect all 100 with one call, then each write faults
 *           and the handler unprotects its page (protN + trap + unprot)
 *
 * A method that cannot do a benchmark prints {"error": ...} for it (map2 has no
 * userfaultfd form; dirty with uffd needs Linux's async write protection, 6.7+).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "bench_clock.h"

#ifdef APPEL_LI_DUNE
#include <dune.h>
#else
#include <linux/userfaultfd.h>
#define PGSIZE 4096
#endif

#define NRPGS 100
#define DIRTY_WRITTEN 10
#define DEFAULT_ITERATIONS 2000

/* ---- uapi definitions newer than Debian 12's headers (values: Linux uapi) ---- */
#ifndef APPEL_LI_DUNE
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1ULL << 15)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
    uint64_t start, end, categories;
};
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING (1ULL << 0)
#define PM_SCAN_CHECK_WPASYNC (1ULL << 1)
#define PAGE_IS_WRITTEN (1ULL << 1)
#endif
#endif

/* ---- time ---- */




static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *values, long count)
{
    qsort(values, (size_t)count, sizeof *values, compare_u64);
    return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

static const char *method_name;

static void report(const char *bench, uint64_t *cycles, long count, int correct,
                   const char *unit)
{
    uint64_t per_op = median(cycles, count);
    printf("{\"benchmark\": \"%s\", \"method\": \"%s\", \"per_op_cycles\": %llu, "
           "\"per_op_ns\": %.1f, \"operations\": %ld, \"unit\": \"%s\", \"correct\": %s}\n",
           bench, method_name, (unsigned long long)per_op, (double)per_op / cycles_per_ns,
           count, unit, correct ? "true" : "false");
    fflush(stdout);
}

static void report_error(const char *bench, const char *why)
{
    printf("{\"benchmark\": \"%s\", \"method\": \"%s\", \"error\": \"%s\"}\n", bench,
           method_name, why);
    fflush(stdout);
}

/* ---- a method: how pages are protected, and how their faults are handled ---- */

typedef void (*fault_fn)(char *page);

struct method {
    const char *name;
    int (*setup)(char *region, size_t len, char *why);
    int (*protect)(char *addr, size_t len);
    int (*unprotect)(char *addr, size_t len);
    void (*on_fault)(fault_fn fn);
    /* dirty: arm the tracking of [region, +len); collect: the written pages into
     * `pages` (at most max), re-armed; -1 when the method cannot. */
    int (*dirty_arm)(char *region, size_t len, char *why);
    long (*dirty_collect)(char *region, size_t len, char **pages, long max);
    int (*dirty_disarm)(char *region, size_t len);
    /* map2: map the frame of `page` at `alias` read-only; unmap it again. */
    int (*map2)(char *page, char *alias);
    int (*unmap2)(char *alias);
};

static char *region;            /* 2 * NRPGS pages, written once (resident) */
static char *dirty_region;      /* NRPGS pages for dirty tracking */
static char *shared_region;     /* NRPGS pages whose frames map2 maps again (a memfd's
                                   natively) */
static char *alias_area;        /* one page of address space for map2 */
static volatile fault_fn current_fault;
static volatile uint64_t fault_started, trap_cycles;

/* The dirty barrier of the trap-based methods: pages a fault handler saw written. */
static char *barrier_pages[NRPGS];
static volatile long barrier_count;

static void barrier_fault(char *page) __attribute__((unused));

#ifndef APPEL_LI_DUNE

/* -- mprotect + SIGSEGV -- */

static int mp_setup(char *r, size_t len, char *why)
{
    (void)r; (void)len; (void)why;
    return 0;
}

static int mp_protect(char *addr, size_t len)
{
    return mprotect(addr, len, PROT_READ);
}

static int mp_unprotect(char *addr, size_t len)
{
    return mprotect(addr, len, PROT_READ | PROT_WRITE);
}

static void on_sigsegv(int signo, siginfo_t *info, void *context)
{
    (void)signo; (void)context;
    uint64_t entered = __rdtsc();
    trap_cycles = entered - fault_started;
    current_fault((char *)((uintptr_t)info->si_addr & ~(uintptr_t)(PGSIZE - 1)));
}

static void mp_on_fault(fault_fn fn)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsegv;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    current_fault = fn;
    sigaction(SIGSEGV, &action, NULL);
}

static int mp_dirty_arm(char *r, size_t len, char *why)
{
    (void)why;
    barrier_count = 0;
    mp_on_fault(barrier_fault);
    return mprotect(r, len, PROT_READ);
}

static long mp_dirty_collect(char *r, size_t len, char **pages, long max)
{
    long count = barrier_count < max ? barrier_count : max;
    memcpy(pages, barrier_pages, (size_t)count * sizeof *pages);
    barrier_count = 0;
    if (mprotect(r, len, PROT_READ))        /* re-arm: one call for the region */
        return -1;
    return count;
}

static int mp_dirty_disarm(char *r, size_t len)
{
    return mprotect(r, len, PROT_READ | PROT_WRITE);
}

/* map2 natively: the frames are a memfd's, mapped twice. */
static int memfd = -1;

static int mp_map2(char *page, char *alias)
{
    off_t offset = page - shared_region;
    void *at = mmap(alias, PGSIZE, PROT_READ, MAP_SHARED | MAP_FIXED, memfd, offset);
    return at == alias ? 0 : -1;
}

static int mp_unmap2(char *alias)
{
    void *at = mmap(alias, PGSIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    return at == alias ? 0 : -1;
}

/* -- userfaultfd write protection: faults served by a handler thread -- */

static int uffd = -1, uffd_async = -1, pagemap_fd = -1;

static int open_uffd(uint64_t features, char *why)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd < 0)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (fd < 0) {
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
            close(dev);
        }
    }
    if (fd < 0) {
        snprintf(why, 200, "userfaultfd: %s", strerror(errno));
        return -1;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = features};
    if (ioctl(fd, UFFDIO_API, &api)) {
        snprintf(why, 200, "UFFDIO_API (features %#llx): %s",
                 (unsigned long long)features, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int uffd_register(int fd, char *r, size_t len, char *why)
{
    struct uffdio_register reg = {.range = {.start = (uintptr_t)r, .len = len},
                                  .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(fd, UFFDIO_REGISTER, &reg)) {
        snprintf(why, 200, "UFFDIO_REGISTER (WP): %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int uffd_wp(int fd, char *addr, size_t len, int protect)
{
    struct uffdio_writeprotect wp = {.range = {.start = (uintptr_t)addr, .len = len},
                                     .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
    return ioctl(fd, UFFDIO_WRITEPROTECT, &wp);
}

static void *uffd_handler(void *unused)
{
    (void)unused;
    for (;;) {
        struct uffd_msg msg;
        struct pollfd pfd = {.fd = uffd, .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            return NULL;
        if (read(uffd, &msg, sizeof msg) != sizeof msg)
            continue;
        uint64_t entered = __rdtsc();
        if (msg.event != UFFD_EVENT_PAGEFAULT)
            continue;
        trap_cycles = entered - fault_started;
        /* The fault function unprotects the page: mode 0 also wakes the writer. */
        current_fault((char *)(uintptr_t)(msg.arg.pagefault.address &
                                          ~(uint64_t)(PGSIZE - 1)));
    }
}

static int uf_setup(char *r, size_t len, char *why)
{
    uffd = open_uffd(0, why);
    if (uffd < 0 || uffd_register(uffd, r, len, why))
        return -1;
    pthread_t thread;
    if (pthread_create(&thread, NULL, uffd_handler, NULL)) {
        snprintf(why, 200, "pthread_create failed");
        return -1;
    }
    pthread_detach(thread);
    return 0;
}

static int uf_protect(char *addr, size_t len)
{
    return uffd_wp(uffd, addr, len, 1);
}

static int uf_unprotect(char *addr, size_t len)
{
    return uffd_wp(uffd, addr, len, 0);
}

static void uf_on_fault(fault_fn fn)
{
    current_fault = fn;
}

/* dirty with async write protection: a write just clears the page's uffd-wp bit
 * (no message); PAGEMAP_SCAN reports those pages and protects them again. */
static int uf_dirty_arm(char *r, size_t len, char *why)
{
    if (uffd_async < 0) {
        uffd_async = open_uffd(UFFD_FEATURE_WP_ASYNC, why);
        if (uffd_async < 0 || uffd_register(uffd_async, r, len, why))
            return -1;
        pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        if (pagemap_fd < 0) {
            snprintf(why, 200, "/proc/self/pagemap: %s", strerror(errno));
            return -1;
        }
    }
    return uffd_wp(uffd_async, r, len, 1);
}

static long uf_dirty_collect(char *r, size_t len, char **pages, long max)
{
    struct page_region regions[NRPGS];
    struct pm_scan_arg arg = {
        .size = sizeof arg, .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        .start = (uintptr_t)r, .end = (uintptr_t)r + len, .vec = (uintptr_t)regions,
        .vec_len = NRPGS, .category_mask = PAGE_IS_WRITTEN,
        .return_mask = PAGE_IS_WRITTEN};
    int found = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
    if (found < 0)
        return -1;
    long count = 0;
    for (int i = 0; i < found; i++)
        for (uint64_t page = regions[i].start; page < regions[i].end && count < max;
             page += PGSIZE)
            pages[count++] = (char *)(uintptr_t)page;
    return count;
}

static int uf_dirty_disarm(char *r, size_t len)
{
    return uffd_wp(uffd_async, r, len, 0);
}

static const struct method methods[] = {
    {"mprotect", mp_setup, mp_protect, mp_unprotect, mp_on_fault, mp_dirty_arm,
     mp_dirty_collect, mp_dirty_disarm, mp_map2, mp_unmap2},
    {"uffd", uf_setup, uf_protect, uf_unprotect, uf_on_fault, uf_dirty_arm,
     uf_dirty_collect, uf_dirty_disarm, NULL, NULL},
};

#else /* APPEL_LI_DUNE */

/* -- the Dune API: pgroot's entries, the program's own page-fault handler -- */

static int du_setup(char *r, size_t len, char *why)
{
    (void)r; (void)len;
    int rc = dune_init_and_enter();
    if (rc) {
        snprintf(why, 200, "dune_init_and_enter: %d", rc);
        return -1;
    }
    /* map2's second address: a hole of the program view (pgroot maps a frame
     * again only where the program has no mapping; over a PROT_NONE one it refuses
     * the rights), found after dune_init, whose page-table window takes address
     * space too (EINVAL there), away from its neighbours. */
    char *hole = mmap(NULL, 2 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (hole == MAP_FAILED || munmap(hole, 2 << 20)) {
        snprintf(why, 200, "no hole for map2");
        return -1;
    }
    alias_area = hole + (1 << 20);
    return 0;
}

static int du_protect(char *addr, size_t len)
{
    return dune_vm_mprotect(pgroot, addr, len, PERM_R | PERM_U);
}

static int du_unprotect(char *addr, size_t len)
{
    return dune_vm_mprotect(pgroot, addr, len, PERM_R | PERM_W | PERM_U);
}

static void du_pgflt(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
    (void)fec; (void)tf;
    uint64_t entered = __rdtsc();
    trap_cycles = entered - fault_started;
    current_fault((char *)(addr & ~(uintptr_t)(PGSIZE - 1)));
}

static void du_on_fault(fault_fn fn)
{
    current_fault = fn;
    dune_register_pgflt_handler(du_pgflt);
}

/* dirty from the PTE dirty bits: read and clear them in one batched call. */
static int du_dirty_arm(char *r, size_t len, char *why)
{
    long rc = kvmdune_vm_clear_bits(pgroot, r, len, PTE_D, NULL);
    if (rc < 0) {
        snprintf(why, 200, "kvmdune_vm_clear_bits: %ld", rc);
        return -1;
    }
    return 0;
}

static long du_dirty_collect(char *r, size_t len, char **pages, long max)
{
    unsigned char bitmap[(NRPGS + 7) / 8];
    memset(bitmap, 0, sizeof bitmap);
    long rc = kvmdune_vm_clear_bits(pgroot, r, len, PTE_D, bitmap);
    if (rc < 0)
        return -1;
    long count = 0;
    for (long i = 0; i < (long)(len / PGSIZE) && count < max; i++)
        if (bitmap[i / 8] >> (i % 8) & 1)
            pages[count++] = r + i * PGSIZE;
    return count;
}

static int du_dirty_disarm(char *r, size_t len)
{
    (void)r; (void)len;
    return 0;               /* reading dirty bits never restricts the pages */
}

static int du_map2(char *page, char *alias)
{
    return dune_vm_map_phys(pgroot, alias, PGSIZE, (void *)dune_va_to_pa(page),
                            PERM_R | PERM_U);
}

static int du_unmap2(char *alias)
{
    dune_vm_unmap(pgroot, alias, PGSIZE);
    return 0;
}

static const struct method methods[] = {
    {"dune", du_setup, du_protect, du_unprotect, du_on_fault, du_dirty_arm,
     du_dirty_collect, du_dirty_disarm, du_map2, du_unmap2},
};

#endif

static const struct method *method;

static void barrier_fault(char *page)
{
    if (barrier_count < NRPGS)
        barrier_pages[barrier_count++] = page;
    method->unprotect(page, PGSIZE);
}

/* ---- the benchmarks ---- */

static long iterations = DEFAULT_ITERATIONS;

static char *page_at(long index)
{
    return region + index * PGSIZE;
}

static void write_page(char *page, long value)
{
    *(volatile long *)page = value;
}

static void unprotect_fault(char *page)
{
    method->unprotect(page, PGSIZE);
}

static void appel1_fault(char *page)
{
    method->unprotect(page, PGSIZE);
    method->protect(page + NRPGS * PGSIZE, PGSIZE);
}

static void bench_trap(uint64_t *cycles)
{
    int correct = 1;
    method->on_fault(unprotect_fault);
    for (long i = 0; i < iterations; i++) {
        char *page = page_at(i % NRPGS);
        correct &= method->protect(page, PGSIZE) == 0;
        trap_cycles = 0;
        fault_started = __rdtsc();
        write_page(page, i);
        cycles[i] = trap_cycles;
        correct &= trap_cycles != 0 && *(volatile long *)page == i;
    }
    report("trap", cycles, iterations, correct, "fault");
}

static void bench_prot1(uint64_t *cycles)
{
    int correct = 1;
    for (long i = 0; i < iterations; i++) {
        char *page = page_at(i % NRPGS);
        uint64_t t0 = __rdtsc();
        int rc = method->protect(page, PGSIZE);
        cycles[i] = __rdtsc() - t0;
        correct &= rc == 0 && method->unprotect(page, PGSIZE) == 0;
    }
    report("prot1", cycles, iterations, correct, "call");
}

static void bench_protN(uint64_t *cycles)
{
    int correct = 1;
    for (long i = 0; i < iterations; i++) {
        uint64_t t0 = __rdtsc();
        int rc = method->protect(region, NRPGS * PGSIZE);
        cycles[i] = __rdtsc() - t0;
        correct &= rc == 0 && method->unprotect(region, NRPGS * PGSIZE) == 0;
    }
    report("protN", cycles, iterations, correct, "call of 100 pages");
}

static void bench_unprot(uint64_t *cycles)
{
    int correct = 1;
    method->on_fault(unprotect_fault);
    for (long i = 0; i < iterations; i++) {
        char *page = page_at(i % NRPGS);
        correct &= method->protect(page, PGSIZE) == 0;
        uint64_t t0 = __rdtsc();
        int rc = method->unprotect(page, PGSIZE);
        cycles[i] = __rdtsc() - t0;
        trap_cycles = 0;
        write_page(page, i);                /* no fault: it is writable again */
        correct &= rc == 0 && trap_cycles == 0;
    }
    report("unprot", cycles, iterations, correct, "call");
}

static void bench_dirty(uint64_t *cycles)
{
    char why[200] = "";
    char *found[NRPGS];
    size_t len = NRPGS * PGSIZE;
    if (method->dirty_arm(dirty_region, len, why)) {
        report_error("dirty", why[0] ? why : "cannot track dirty pages");
        return;
    }
    int correct = 1;
    long rounds = iterations / 4 > 0 ? iterations / 4 : 1;
    for (long round = 0; round < rounds; round++) {
        long stride = NRPGS / DIRTY_WRITTEN, first = round % stride;
        uint64_t t0 = __rdtsc();
        for (long k = 0; k < DIRTY_WRITTEN; k++)
            write_page(dirty_region + (first + k * stride) * PGSIZE, round);
        long count = method->dirty_collect(dirty_region, len, found, NRPGS);
        cycles[round] = __rdtsc() - t0;
        if (count != DIRTY_WRITTEN) {
            correct = 0;
            continue;
        }
        for (long k = 0; k < DIRTY_WRITTEN; k++)
            correct &= found[k] == dirty_region + (first + k * stride) * PGSIZE;
    }
    correct &= method->dirty_disarm(dirty_region, len) == 0;
    report("dirty", cycles, rounds, correct, "round: 10 of 100 pages written, then found");
}

static void bench_map2(uint64_t *cycles)
{
    if (!method->map2) {
        report_error("map2", "no userfaultfd form: a second mapping is mmap's (see mprotect)");
        return;
    }
    int correct = 1;
    for (long i = 0; i < iterations; i++) {
        char *page = shared_region + (i % NRPGS) * PGSIZE;
        uint64_t t0 = __rdtsc();
        int rc = method->map2(page, alias_area);
        cycles[i] = __rdtsc() - t0;
        write_page(page, i * 7 + 1);
        correct &= rc == 0 && *(volatile long *)alias_area == i * 7 + 1;
        correct &= method->unmap2(alias_area) == 0;
    }
    report("map2", cycles, iterations, correct, "call");
}

static void bench_appel(uint64_t *cycles, int which)
{
    int correct = 1;
    long rounds = iterations / 10 > 0 ? iterations / 10 : 1;
    method->on_fault(which == 1 ? appel1_fault : unprotect_fault);
    for (long round = 0; round < rounds; round++) {
        correct &= method->unprotect(region, 2 * NRPGS * PGSIZE) == 0;
        if (which == 1)
            correct &= method->protect(region, NRPGS * PGSIZE) == 0;
        uint64_t t0 = __rdtsc();
        if (which == 2)
            correct &= method->protect(region, NRPGS * PGSIZE) == 0;
        for (long i = 0; i < NRPGS; i++)
            write_page(page_at(i), round);
        cycles[round] = (__rdtsc() - t0) / NRPGS;
        for (long i = 0; i < NRPGS; i++)
            correct &= *(volatile long *)page_at(i) == round;
    }
    correct &= method->unprotect(region, 2 * NRPGS * PGSIZE) == 0;
    report(which == 1 ? "appel1" : "appel2", cycles, rounds, correct,
           which == 1 ? "page (prot1 + trap + unprot)" : "page (protN + trap + unprot)");
}

static void run(const char *name, uint64_t *cycles)
{
    if (!strcmp(name, "trap")) bench_trap(cycles);
    else if (!strcmp(name, "prot1")) bench_prot1(cycles);
    else if (!strcmp(name, "protN")) bench_protN(cycles);
    else if (!strcmp(name, "unprot")) bench_unprot(cycles);
    else if (!strcmp(name, "dirty")) bench_dirty(cycles);
    else if (!strcmp(name, "map2")) bench_map2(cycles);
    else if (!strcmp(name, "appel1")) bench_appel(cycles, 1);
    else if (!strcmp(name, "appel2")) bench_appel(cycles, 2);
    else report_error(name, "unknown benchmark");
}

static const char *all[] = {"trap", "prot1", "protN", "unprot", "dirty", "map2",
                            "appel1", "appel2"};

static char *map_region(size_t len, int shared)
{
    char *at;
    if (shared) {
#ifndef APPEL_LI_DUNE
        memfd = memfd_create("appel_li", MFD_CLOEXEC);
        if (memfd < 0 || ftruncate(memfd, (off_t)len))
            return NULL;
        at = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
#else
        at = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
#endif
    } else {
        at = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (at == MAP_FAILED)
        return NULL;
    for (size_t off = 0; off < len; off += PGSIZE)
        at[off] = 1;                        /* resident, as Dune's prime_memory */
    return at;
}

int main(int argc, char **argv)
{
    const char *wanted = NULL;
    int first = 1;
    while (first < argc && !strncmp(argv[first], "--", 2)) {
        if (!strcmp(argv[first], "--iterations") && first + 1 < argc) {
            iterations = strtol(argv[first + 1], NULL, 10);
            first += 2;
        } else if (!strcmp(argv[first], "--method") && first + 1 < argc) {
            wanted = argv[first + 1];
            first += 2;
        } else {
            break;
        }
    }
    if (first >= argc || iterations < 10 || iterations > 10000000) {
        fprintf(stderr, "usage: appel_li [--iterations N (>= 10)] [--method NAME] "
                        "BENCH... | all\n");
        return 2;
    }
    calibrate_tsc();
    uint64_t *cycles = calloc((size_t)iterations, sizeof *cycles);
    region = map_region(2 * NRPGS * PGSIZE, 0);
    dirty_region = map_region(NRPGS * PGSIZE, 0);
    shared_region = map_region(NRPGS * PGSIZE, 1);
    alias_area = mmap(NULL, PGSIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!cycles || !region || !dirty_region || !shared_region || alias_area == MAP_FAILED) {
        perror("appel_li: memory");
        return 1;
    }
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++) {
        method = &methods[m];
        method_name = method->name;
        if (wanted && strcmp(wanted, method->name))
            continue;
        char why[200] = "";
        int ready = method->setup(region, 2 * NRPGS * PGSIZE, why) == 0;
        for (int i = first; i < argc; i++) {
            int every = !strcmp(argv[i], "all");
            for (size_t b = 0; b < sizeof all / sizeof *all; b++) {
                const char *name = every ? all[b] : argv[i];
                if (!ready)
                    report_error(name, why);
                else
                    run(name, cycles);
                if (!every)
                    break;
            }
        }
    }
    return 0;
}
