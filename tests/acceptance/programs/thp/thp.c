/* Transparent huge pages as a program sees them: for an anonymous mapping with a
 * 2 MiB-aligned block, the pagemap entries, smaps counters and RSS after one byte is
 * touched, under each of Linux's rules (madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE),
 * prctl(PR_SET_THP_DISABLE) with and without PR_THP_DISABLE_EXCEPT_ADVISED).
 *   thp CASE       CASE: hugepage, nohugepage, plain, read, read-then-write,
 *                        disabled, except-advised
 * Prints "key value" lines; pagemap's soft-dirty bit (55) and frame numbers are left
 * out (this host's kernel has no soft-dirty; frame numbers differ). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#define HUGE (2ul << 20)
#define PAGE 4096ul
#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif

static long smaps_field(uintptr_t start, const char *field) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int inside = 0;
    long value = -1;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long low, high;
        if (sscanf(line, "%lx-%lx ", &low, &high) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = low <= start && start < high;
            continue;
        }
        if (!inside)
            continue;
        size_t n = strlen(field);
        if (!strncmp(line, field, n) && line[n] == ':') {
            if (!strcmp(field, "VmFlags"))
                value = (strstr(line, " hg") ? 1 : 0) | (strstr(line, " nh") ? 2 : 0);
            else
                value = strtol(line + n + 1, 0, 10);
        }
    }
    if (f)
        fclose(f);
    return value;
}

static long rss_anon_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long value = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "RssAnon:", 8))
            value = strtol(line + 8, 0, 10);
    if (f)
        fclose(f);
    return value;
}

/* The pagemap entries of one 2 MiB block: present, exclusive and file bits counted. */
static void pagemap_block(uintptr_t block) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    uint64_t entries[HUGE / PAGE];
    if (fd < 0 || pread(fd, entries, sizeof entries, block / PAGE * 8) != sizeof entries) {
        printf("pagemap unreadable\n");
        exit(1);
    }
    close(fd);
    int present = 0, exclusive = 0, file = 0, first = -1;
    for (unsigned i = 0; i < HUGE / PAGE; i++) {
        present += entries[i] >> 63 & 1;
        exclusive += entries[i] >> 56 & 1;
        file += entries[i] >> 61 & 1;
        if (first < 0 && entries[i] >> 63)
            first = i;
    }
    printf("present %d\nexclusive %d\nfile %d\nfirst-present %d\n", present, exclusive, file, first);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "hugepage";
    if (!strcmp(mode, "disabled"))
        printf("set-disable %d\n", prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0));
    if (!strcmp(mode, "except-advised"))
        printf("set-disable %d\n",
               prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0));
    printf("get-disable %d\n", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
    /* 8 MiB, of which the 4 MiB from the first 2 MiB boundary are advised. */
    char *raw = mmap(0, 4 * HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return 1;
    char *block = (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
    long before = rss_anon_kb();
    int advice = !strcmp(mode, "nohugepage") ? MADV_NOHUGEPAGE
               : !strcmp(mode, "plain") ? -1 : MADV_HUGEPAGE;
    if (advice >= 0)
        printf("madvise %d\n", madvise(block, 2 * HUGE, advice));
    volatile char *byte = block + 5 * PAGE + 17;
    if (!strcmp(mode, "read") || !strcmp(mode, "read-then-write"))
        printf("read %d\n", *byte);
    if (strcmp(mode, "read"))
        *byte = 1;
    pagemap_block((uintptr_t)block);
    const char *fields[] = {"Rss", "Anonymous", "AnonHugePages", "Referenced",
                            "Private_Dirty", "THPeligible", "VmFlags"};
    for (unsigned i = 0; i < sizeof fields / sizeof *fields; i++)
        printf("%s %ld\n", fields[i], smaps_field((uintptr_t)block, fields[i]));
    /* In whole MiB: the program's own pages (stdio, its stack) come and go too. */
    printf("RssAnon-grew-MiB %ld\n", (rss_anon_kb() - before) / 1024);
    return 0;
}
