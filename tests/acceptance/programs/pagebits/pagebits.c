/* /proc/self/pagemap, clear_refs and smaps as a program sees them. Each mode prints
 * lines the tests compare (natively and under kvmdune) or check.
 *
 *   softdirty   clear_refs 4, write some pages, read bit 55 (one descriptor, read
 *               again and again); a new mapping is soft-dirty until the next clear
 *   present     bits 63, 61 and 56 of untouched, read and written pages
 *   referenced  clear_refs 1, read some written pages: smaps' Referenced
 *   peak        VmHWM after a big mapping is gone, and after clear_refs 5
 *   readers     clear_refs 4 interleaved with the VMM's own reader (tests call a
 *               marker system call the test's VMM answers)
 *   sparse      one write per 256 KiB, in address order, and one read, over 4 MiB
 *               of a mapping too big to be backed at once: pagemap, mincore, smaps
 *   fill        every page of 64 MiB of such a mapping written in order: where,
 *               and smaps */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 16
#define SOFT_DIRTY_BIT 55
#define PRESENT_BIT 63
#define FILE_BIT 61
#define EXCLUSIVE_BIT 56
/* A system call number Linux does not have: the readers test's VMM answers it. */
#define MARKER 1000

static int pagemap_fd;

static void clear_refs(const char *value) {
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    if (fd < 0 || write(fd, value, strlen(value)) != (ssize_t)strlen(value)) {
        perror("clear_refs");
        exit(2);
    }
    close(fd);
}

/* The pagemap entries of n pages at p, read with lseek and read as libgc does. */
static void entries(char *p, int n, uint64_t *out) {
    off_t where = (off_t)((uintptr_t)p / PAGE * sizeof(uint64_t));
    if (lseek(pagemap_fd, where, SEEK_SET) != where ||
        read(pagemap_fd, out, n * sizeof(uint64_t)) != (ssize_t)(n * sizeof(uint64_t))) {
        perror("pagemap");
        exit(2);
    }
}

static void print_bit(const char *label, char *p, int n, int bit) {
    uint64_t e[PAGES];
    entries(p, n, e);
    printf("%s ", label);
    for (int i = 0; i < n; i++)
        putchar('0' + (int)(e[i] >> bit & 1));
    putchar('\n');
}

static char *map_pages(int n) {
    char *p = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        exit(2);
    madvise(p, n * PAGE, MADV_NOHUGEPAGE);
    return p;
}

static void softdirty(void) {
    char *p = map_pages(PAGES);
    memset(p, 1, PAGES * PAGE);
    print_bit("written", p, PAGES, SOFT_DIRTY_BIT);
    clear_refs("4");
    print_bit("cleared", p, PAGES, SOFT_DIRTY_BIT);
    p[2 * PAGE] = 2;
    p[5 * PAGE + 100] = 2;
    p[11 * PAGE + 4095] = 2;
    (void)*(volatile char *)(p + 7 * PAGE);   /* a read is not a write */
    print_bit("wrote-2-5-11", p, PAGES, SOFT_DIRTY_BIT);
    print_bit("again", p, PAGES, SOFT_DIRTY_BIT);
    /* A new mapping, away from p so that it is not merged with it. */
    char *q = mmap(p - 64 * PAGE, 4 * PAGE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    print_bit("new-mapping", q, 4, SOFT_DIRTY_BIT);
    print_bit("old-mapping", p, PAGES, SOFT_DIRTY_BIT);
    clear_refs("4");
    print_bit("new-cleared", q, 4, SOFT_DIRTY_BIT);
    /* pread at an offset, from a descriptor opened before all this. */
    uint64_t e;
    if (pread(pagemap_fd, &e, sizeof e, (uintptr_t)(p + 5 * PAGE) / PAGE * 8) != sizeof e)
        exit(2);
    printf("pread-5 %d\n", (int)(e >> SOFT_DIRTY_BIT & 1));
    p[5 * PAGE] = 3;
    if (pread(pagemap_fd, &e, sizeof e, (uintptr_t)(p + 5 * PAGE) / PAGE * 8) != sizeof e)
        exit(2);
    printf("pread-5-written %d\n", (int)(e >> SOFT_DIRTY_BIT & 1));
}

static void present(void) {
    char *p = map_pages(8);
    (void)*(volatile char *)(p + 1 * PAGE);
    (void)*(volatile char *)(p + 2 * PAGE);
    p[2 * PAGE] = 1;
    p[4 * PAGE] = 1;
    print_bit("present", p, 8, PRESENT_BIT);
    print_bit("file", p, 8, FILE_BIT);
    print_bit("exclusive", p, 8, EXCLUSIVE_BIT);
    uint64_t e[8];
    entries(p, 8, e);
    int pfn = 0;
    for (int i = 0; i < 8; i++)
        pfn |= (e[i] & ((1ULL << 55) - 1)) != 0;
    /* Natively root sees frame numbers; kvmdune shows none, as to the unprivileged. */
    fprintf(stderr, "pfn-zero %d\n", !pfn);
    /* What Linux refuses: a read not a multiple of 8, at an offset not one. */
    char buf[8];
    ssize_t r = pread(pagemap_fd, buf, 7, 0);
    printf("odd-length %zd %d\n", r, r < 0 ? errno : 0);
    r = pread(pagemap_fd, buf, 8, 3);
    printf("odd-offset %zd %d\n", r, r < 0 ? errno : 0);
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    const char *values[] = {"9", "0\n", "x", "-1", "99999999999", "4\n", " 1 ", "5"};
    for (unsigned i = 0; i < sizeof values / sizeof *values; i++) {
        r = write(fd, values[i], strlen(values[i]));
        printf("clear_refs-%u %zd %d\n", i, r, r < 0 ? errno : 0);
    }
    r = read(fd, buf, 8);
    printf("clear_refs-read %zd %d\n", r, r < 0 ? errno : 0);
    close(fd);
}

/* The value of a "Name:   N kB" line of the smaps entry of the mapping holding p. */
static long smaps_value(char *p, const char *name) {
    char line[512];
    int inside = 0;
    long value = -1;
    FILE *f = fopen("/proc/self/smaps", "r");
    while (f && fgets(line, sizeof line, f)) {
        unsigned long start, end;
        char *space = strchr(line, ' ');
        if (space && sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < space)
            inside = start <= (unsigned long)p && (unsigned long)p < end;
        else if (inside && strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':')
            value = strtol(line + strlen(name) + 1, NULL, 10);
    }
    if (f)
        fclose(f);
    return value;
}

static void referenced(void) {
    char *p = map_pages(32);
    memset(p, 1, 32 * PAGE);
    printf("written rss=%ld referenced=%ld anonymous=%ld\n", smaps_value(p, "Rss"),
           smaps_value(p, "Referenced"), smaps_value(p, "Anonymous"));
    clear_refs("1");
    printf("cleared referenced=%ld\n", smaps_value(p, "Referenced"));
    for (int i = 0; i < 5; i++)
        (void)*(volatile char *)(p + 3 * i * PAGE);
    printf("read-5 referenced=%ld rss=%ld\n", smaps_value(p, "Referenced"), smaps_value(p, "Rss"));
}

static long status_value(const char *name) {
    char line[256];
    long value = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':')
            value = strtol(line + strlen(name) + 1, NULL, 10);
    if (f)
        fclose(f);
    return value;
}

static void peak(void) {
    size_t big = 16 << 20;
    char *p = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(p, 1, big);
    long with = status_value("VmRSS");
    munmap(p, big);
    long after = status_value("VmRSS"), hwm = status_value("VmHWM");
    clear_refs("5");
    long reset = status_value("VmHWM"), now = status_value("VmRSS");
    printf("rss-with %ld rss-after %ld hwm %ld hwm-reset %ld rss-now %ld\n", with, after, hwm,
           reset, now);
}

/* A reservation of 64 GiB with one page written in its middle: pagemap and smaps
 * answer for it without walking every page. */
static void reservation(void) {
    size_t size = 64UL << 30, middle = size / 2;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        exit(2);
    p[middle] = 1;
    print_bit("middle", p + middle - PAGE, 3, PRESENT_BIT);
    printf("rss %ld\n", smaps_value(p + middle, "Rss"));
    /* 16 MiB of entries at once: 8 GiB of the reservation around the page. */
    size_t count = 2UL << 20;
    uint64_t *e = malloc(count * sizeof *e);
    off_t where = (off_t)((uintptr_t)(p + middle) / PAGE - count / 2) * 8;
    ssize_t got = pread(pagemap_fd, e, count * sizeof *e, where);
    size_t present = 0;
    for (size_t i = 0; got > 0 && i < (size_t)got / 8; i++)
        present += e[i] >> PRESENT_BIT & 1;
    printf("wide-read %zd present %zu\n", got, present);
}

static void readers(void) {
    char *p = map_pages(PAGES);
    memset(p, 1, PAGES * PAGE);
    syscall(MARKER, p, PAGES * PAGE);              /* the VMM's reader: everything */
    p[1 * PAGE] = 2;
    p[2 * PAGE] = 2;
    syscall(MARKER, p, PAGES * PAGE);              /* ... 1 and 2 */
    p[3 * PAGE] = 2;
    clear_refs("4");                               /* pagemap's reader clears */
    syscall(MARKER, p, PAGES * PAGE);              /* ... still sees 3 */
    print_bit("after-both", p, PAGES, SOFT_DIRTY_BIT);
    p[4 * PAGE] = 2;
    syscall(MARKER, p, PAGES * PAGE);              /* the VMM clears 4 for itself */
    print_bit("wrote-4", p, PAGES, SOFT_DIRTY_BIT); /* ... pagemap still sees it */
}

/* A mapping over the VMM's eager-mapping limit (so it is paged in on first touch),
 * with 4 KiB pages whatever the host's transparent huge page mode. */
static char *map_big(size_t size) {
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        exit(2);
    madvise(p, size, MADV_NOHUGEPAGE);
    return p;
}

#define BIG (96UL << 20)
#define SPARSE_PAGES 1024
#define SPARSE_STRIDE 64
#define SPARSE_READ 200

/* The indexes of the pages among n at p whose value (pagemap bit, or mincore
 * byte's bit 0) is set. */
static void print_indexes(const char *label, const uint64_t *values, int n, int bit) {
    printf("%s", label);
    for (int i = 0; i < n; i++)
        if (values[i] >> bit & 1)
            printf(" %d", i);
    putchar('\n');
}

static void sparse(void) {
    char *p = map_big(BIG);
    for (int i = 0; i < SPARSE_PAGES; i += SPARSE_STRIDE)
        p[(size_t)i * PAGE] = 1;
    (void)*(volatile char *)(p + (size_t)SPARSE_READ * PAGE);
    static uint64_t e[SPARSE_PAGES], resident[SPARSE_PAGES];
    static unsigned char vec[SPARSE_PAGES];
    entries(p, SPARSE_PAGES, e);
    print_indexes("present", e, SPARSE_PAGES, PRESENT_BIT);
    print_indexes("exclusive", e, SPARSE_PAGES, EXCLUSIVE_BIT);
    if (mincore(p, (size_t)SPARSE_PAGES * PAGE, vec))
        exit(2);
    for (int i = 0; i < SPARSE_PAGES; i++)
        resident[i] = vec[i] & 1;
    print_indexes("mincore", resident, SPARSE_PAGES, 0);
    printf("smaps rss=%ld anonymous=%ld private-dirty=%ld\n", smaps_value(p, "Rss"),
           smaps_value(p, "Anonymous"), smaps_value(p, "Private_Dirty"));
}

static void fill(void) {
    char *p = map_big(BIG);
    memset(p, 1, 64UL << 20);
    printf("at %p\n", (void *)p);
    printf("smaps rss=%ld anonymous=%ld\n", smaps_value(p, "Rss"), smaps_value(p, "Anonymous"));
}

int main(int argc, char **argv) {
    pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
    if (pagemap_fd < 0 || argc < 2) {
        perror("pagemap");
        return 2;
    }
    if (!strcmp(argv[1], "softdirty"))
        softdirty();
    else if (!strcmp(argv[1], "present"))
        present();
    else if (!strcmp(argv[1], "referenced"))
        referenced();
    else if (!strcmp(argv[1], "peak"))
        peak();
    else if (!strcmp(argv[1], "reservation"))
        reservation();
    else if (!strcmp(argv[1], "readers"))
        readers();
    else if (!strcmp(argv[1], "sparse"))
        sparse();
    else if (!strcmp(argv[1], "fill"))
        fill();
    else
        return 2;
    return 0;
}
