#define _GNU_SOURCE
/* RLIMIT_AS and RLIMIT_DATA hold mmap, mremap and brk as Linux's may_expand_vm does,
 * each limit set a fixed distance above what the process maps now (VmSize and
 * VmData in /proc/self/status), so the output does not depend on that total. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define MIB (1UL << 20)

static unsigned long status_kib(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long value = 0;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':')
            value = strtoul(line + n + 1, NULL, 10);
    if (f) fclose(f);
    return value;
}

static void limit(int resource, unsigned long bytes) {
    struct rlimit r;
    getrlimit(resource, &r);
    r.rlim_cur = bytes;
    if (setrlimit(resource, &r)) perror("setrlimit");
}

static void *map(const char *what, void *at, size_t length, int prot, int flags) {
    void *p = mmap(at, length, prot, flags, -1, 0);
    printf("%-40s %s\n", what, p == MAP_FAILED ? strerror(errno) : "mapped");
    return p == MAP_FAILED ? NULL : p;
}

int main(void) {
    const int anon = MAP_PRIVATE | MAP_ANONYMOUS;
    unsigned long size = status_kib("VmSize") * 1024;
    limit(RLIMIT_AS, size + 64 * MIB);
    char *a = map("40 MiB under RLIMIT_AS", NULL, 40 * MIB, PROT_READ | PROT_WRITE, anon);
    munmap(a + 32 * MIB, 8 * MIB);                  /* 32 MiB, and a hole after it */
    map("40 MiB past it", NULL, 40 * MIB, PROT_READ | PROT_WRITE, anon);
    map("40 MiB PROT_NONE past it", NULL, 40 * MIB, PROT_NONE, anon);
    map("MAP_FIXED over the 32 MiB", a, 32 * MIB, PROT_READ, anon | MAP_FIXED);
    map("MAP_FIXED over it and the hole", a, 40 * MIB, PROT_READ, anon | MAP_FIXED);
    map("28 MiB more, past it", NULL, 28 * MIB, PROT_READ | PROT_WRITE, anon);
    char *b = map("20 MiB more", NULL, 20 * MIB, PROT_READ | PROT_WRITE, anon);
    void *r = mremap(b, 20 * MIB, 28 * MIB, MREMAP_MAYMOVE);
    printf("%-40s %s\n", "mremap 20 -> 28 MiB, past it", r == MAP_FAILED ? strerror(errno) : "moved");
    r = mremap(b, 20 * MIB, 4 * MIB, 0);
    printf("%-40s %s\n", "mremap down to 4 MiB", r == MAP_FAILED ? strerror(errno) : "done");
    r = mremap(b, 4 * MIB, 8 * MIB, MREMAP_MAYMOVE);
    printf("%-40s %s\n", "mremap 4 -> 8 MiB", r == MAP_FAILED ? strerror(errno) : "done");
    munmap(a, 40 * MIB);
    munmap(r == MAP_FAILED ? b : r, 8 * MIB);
    limit(RLIMIT_AS, RLIM_INFINITY);

    unsigned long data = status_kib("VmData") * 1024;
    limit(RLIMIT_DATA, data + 16 * MIB);
    char *c = map("8 MiB of data under RLIMIT_DATA", NULL, 8 * MIB, PROT_READ | PROT_WRITE, anon);
    map("12 MiB of data past it", NULL, 12 * MIB, PROT_READ | PROT_WRITE, anon);
    char *d = map("12 MiB read-only (not data)", NULL, 12 * MIB, PROT_READ, anon);
    map("12 MiB shared writable (not data)", NULL, 12 * MIB, PROT_READ | PROT_WRITE,
        MAP_SHARED | MAP_ANONYMOUS);
    printf("%-40s %s\n", "mprotect read-only to writable",
           mprotect(d, 12 * MIB, PROT_READ | PROT_WRITE) ? strerror(errno) : "done");
    void *top = sbrk(0);
    printf("%-40s %s\n", "brk 12 MiB past it", brk((char *)top + 12 * MIB) ? "refused" : "grown");
    printf("%-40s %s\n", "brk 4 MiB", brk((char *)top + 4 * MIB) ? "refused" : "grown");
    brk(top);
    munmap(c, 8 * MIB);
    limit(RLIMIT_DATA, RLIM_INFINITY);
    map("40 MiB with no limits", NULL, 40 * MIB, PROT_READ | PROT_WRITE, anon);
    return 0;
}
