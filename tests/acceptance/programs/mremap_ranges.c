/* mremap over ranges that span several mappings, as Linux 6.17+ does it: with
 * MREMAP_FIXED and the size unchanged every mapping in the range moves, split where
 * the range cuts it, the gaps between them kept and the target's pages over a gap
 * left as they were; a range starting in a gap is EFAULT, and so is one that grows
 * or shrinks while it moves. In place, keeping the size or shrinking acts on the
 * range whatever it spans. A part of a shared or file mapping moved keeps its place
 * in the region or file. Each case prints the result and every page of the old and
 * new ranges as the program sees it: unmapped, or its rights, first byte, and the
 * page of the file it maps. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGES 6
static long page;

/* One page as the program sees it: unmapped, or its rights in /proc/self/maps,
 * its first byte if readable, and which page of the file it maps if it does. */
static void show_page(const char *what, char *base, int index)
{
    char *address = base + index * page, line[512], perms[8];
    unsigned long start, end, offset;
    FILE *maps = fopen("/proc/self/maps", "r");
    int mapped = 0;
    while (!mapped && fgets(line, sizeof line, maps))
        mapped = sscanf(line, "%lx-%lx %4s %lx", &start, &end, perms, &offset) == 4
                 && start <= (unsigned long)address && (unsigned long)address < end;
    fclose(maps);
    printf("  %s page %d:", what, index);
    if (!mapped) {
        printf(" unmapped\n");
        return;
    }
    printf(" %s", perms);
    if (perms[0] == 'r')
        printf(" '%c'", *address);
    if (strstr(line, "kvmdune-mremap"))
        printf(" file page %lu", (offset + (unsigned long)address - start) / page);
    printf("\n");
}

static int file;         /* PAGES pages, page i holding 'A' + i */

/* PAGES pages, page i holding 'a' + i, then made into the mappings the case asks
 * for: 'r' read-only, 'w' read-write, '-' a gap (unmapped), 'n' PROT_NONE; a run
 * of 's' one shared mapping, and of 'f' one private mapping of the file (page i
 * of the layout its page i). */
static char *layout(const char *kinds)
{
    char *base = mmap(NULL, PAGES * page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0, run; i < PAGES; i += run) {
        for (run = 1; i + run < PAGES && kinds[i + run] == kinds[i]; run++)
            ;
        if (kinds[i] == 's')
            mmap(base + i * page, run * page, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        else if (kinds[i] == 'f')
            mmap(base + i * page, run * page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_FIXED, file, i * page);
    }
    for (int i = 0; i < PAGES; i++)
        if (kinds[i] != 'f')
            memset(base + i * page, 'a' + i, page);
    for (int i = 0; i < PAGES; i++) {
        if (kinds[i] == 'r')
            mprotect(base + i * page, page, PROT_READ);
        else if (kinds[i] == 'n')
            mprotect(base + i * page, page, PROT_NONE);
        else if (kinds[i] == '-')
            munmap(base + i * page, page);
    }
    return base;
}

/* A target of PAGES pages filled with 'T', read-write. */
static char *target_area(void)
{
    char *target = mmap(NULL, PAGES * page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(target, 'T', PAGES * page);
    return target;
}

static void run_case(const char *name, const char *kinds, int first, int count,
                     int new_count, int flags)
{
    char *target = target_area(), *base = layout(kinds);   /* the target first: the
                                         * gaps the layout makes stay free */
    char *result = mremap(base + first * page, count * page, new_count * page, flags,
                          target);
    printf("%s [%s] pages %d+%d -> %d: ", name, kinds, first, count, new_count);
    if (result == MAP_FAILED)
        printf("%s\n", strerror(errno));
    else
        printf("%s\n", result == target ? "the target" : result == base + first * page
               ? "in place" : "elsewhere");
    for (int i = 0; i < PAGES; i++)
        show_page("old", base, i);
    for (int i = 0; i < PAGES; i++)
        show_page("new", target, i);
    munmap(base, PAGES * page);
    munmap(target, PAGES * page);
    if (result != MAP_FAILED && result != target)
        munmap(result, new_count * page);
}

int main(void)
{
    int fixed = MREMAP_MAYMOVE | MREMAP_FIXED;
    page = sysconf(_SC_PAGESIZE);
    char path[] = "/tmp/kvmdune-mremap-XXXXXX";
    file = mkstemp(path);
    unlink(path);
    for (int i = 0; i < PAGES; i++) {
        char contents[page];
        memset(contents, 'A' + i, page);
        if (write(file, contents, page) != page)
            return 1;
    }
    run_case("two mappings, fixed", "wwrrww", 0, 6, 6, fixed);
    run_case("part of three, fixed", "wwrrnw", 1, 4, 4, fixed);
    run_case("gap inside, fixed", "ww--rw", 0, 6, 6, fixed);
    run_case("gap at the start, fixed", "--wwrr", 0, 6, 6, fixed);
    run_case("gap at the end, fixed", "wwrr--", 0, 6, 6, fixed);
    run_case("one mapping then a gap, fixed", "wwww--", 0, 6, 6, fixed);
    run_case("grown, fixed", "wwrrww", 0, 4, 5, fixed);
    run_case("shrunk, fixed", "wwrrww", 0, 4, 3, fixed);
    run_case("same size, may move", "wwrrww", 0, 4, 4, MREMAP_MAYMOVE);
    run_case("grown, may move", "wwrrww", 0, 4, 6, MREMAP_MAYMOVE);
    run_case("same size, in place", "wwrrww", 0, 4, 4, 0);
    run_case("same size, in place, gap inside", "ww--rw", 0, 6, 6, 0);
    run_case("same size, in place, gap at the start", "--wwrr", 0, 6, 6, 0);
    run_case("shrunk in place", "wwrrww", 0, 4, 1, 0);
    run_case("part of a shared mapping, fixed", "wsssww", 2, 2, 2, fixed);
    run_case("shared and private, fixed", "wwsswr", 1, 4, 4, fixed);
    run_case("part of a file mapping, fixed", "wffffw", 2, 3, 3, fixed);
    run_case("file then anonymous, fixed", "wwffrw", 2, 4, 4, fixed);
    return 0;
}
