#define _GNU_SOURCE
/* Stale guest translations: each case unmaps, moves or restricts memory, then
 * checks from the guest that the old addresses fault and the new ones hold
 * their own data. `stale_translations [CASE]` prints "ok CASE" for each case run,
 * or a line saying what went wrong (status 1). */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096ul
#define HUGE (2ul << 20)
#define MIB (1ul << 20)
/* Fixed places in one 1 GiB block (one page directory), 2 MiB-aligned. */
#define AREA ((char *)0x200000000ul)

static sigjmp_buf fault_jump;
static void on_fault(int signo) { (void)signo; siglongjmp(fault_jump, 1); }

/* Whether reading (or writing) *address faults. (The handler runs with SA_NODEFER,
 * so no signal mask needs restoring: sigsetjmp saves none.) */
static int faults(volatile char *address, int write) {
    if (sigsetjmp(fault_jump, 0))
        return 1;
    if (write)
        *address = 0x5a;
    else
        (void)*address;
    return 0;
}

static char *map_at(char *address, size_t length, int prot) {
    char *got = mmap(address, length, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (got != address) { perror("mmap"); exit(2); }
    return got;
}

static void touch(char *start, size_t length, int seed) {
    for (size_t offset = 0; offset < length; offset += PAGE)
        start[offset] = (char)(seed + offset / PAGE);
}

static int check(const char *name, char *start, size_t length, int seed) {
    for (size_t offset = 0; offset < length; offset += PAGE)
        if (start[offset] != (char)(seed + offset / PAGE)) {
            printf("%s: page %zu of %p holds %d, not %d\n", name, offset / PAGE,
                   (void *)start, start[offset], (char)(seed + offset / PAGE));
            return 1;
        }
    return 0;
}

/* A page table emptied by munmap, its frame reused for another region's table. */
static int table_reuse(void) {
    char *old = map_at(AREA, HUGE, PROT_READ | PROT_WRITE);
    touch(old, HUGE, 1);
    munmap(old, HUGE);
    char *other = map_at(AREA + 8 * HUGE, PAGE, PROT_READ | PROT_WRITE);
    other[0] = 42;
    if (!faults(old, 0) || !faults(old, 1)) {
        printf("table_reuse: the unmapped page is still reachable\n");
        return 1;
    }
    return other[0] != 42;
}

/* 2 MiB pages unmapped, their frames reused for 2 MiB pages elsewhere. */
static int huge_reuse(void) {
    size_t length = 128 * MIB;       /* paged in on demand: 2 MiB pages where aligned */
    char *old = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    touch(old, length, 3);
    munmap(old, length);
    map_at(old, PAGE, PROT_READ);    /* keeps the next mapping elsewhere */
    char *again = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    touch(again, length, 7);
    int bad = check("huge_reuse", again, length, 7);
    for (size_t offset = HUGE; offset < length; offset += HUGE)
        if (!faults(old + offset, 0) || !faults(old + offset, 1)) {
            printf("huge_reuse: unmapped %p is still reachable\n", (void *)(old + offset));
            return 1;
        }
    return bad;
}

/* mremap (growing, moving) of a block holding 2 MiB pages, as realloc does, then
 * writes to the old and new ranges. */
static int mremap_huge(void) {
    size_t length = 64 * MIB + PAGE;
    char *block = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    touch(block, length, 5);
    for (int step = 1; step <= 2; step++) {   /* the second grows in place or moves again */
        size_t grown = length + 16 * MIB;
        char *moved = mremap(block, length, grown, MREMAP_MAYMOVE);
        if (moved == MAP_FAILED) { perror("mremap"); return 1; }
        for (size_t offset = grown; offset > length; offset -= PAGE)
            moved[offset - 1] = 9;        /* the grown tail, from its last page down */
        if (check("mremap_huge", moved, length, 5))
            return 1;
        for (size_t offset = length; offset < grown; offset += PAGE)
            if (moved[offset + PAGE - 1] != 9) { printf("mremap_huge: tail page lost\n"); return 1; }
        if (moved != block)   /* every 16th page of the old range, and its last */
            for (size_t offset = 0; offset < length + 16 * PAGE; offset += 16 * PAGE) {
                char *old = block + (offset < length ? offset : length - PAGE);
                if (!(moved <= old && old < moved + grown) && (!faults(old, 1) || !faults(old, 0))) {
                    printf("mremap_huge: step %d: old %p still reachable\n", step, (void *)old);
                    return 1;
                }
            }
        touch(moved + length, grown - length, (int)(5 + length / PAGE));
        block = moved;
        length = grown;
    }
    return 0;
}

/* One 4 KiB page unmapped, another made read-only, inside a 2 MiB page. */
static int huge_split(void) {
    char *big = mmap(NULL, 64 * MIB + HUGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    char *huge = (char *)(((unsigned long)big + 2 * HUGE - 1) & ~(HUGE - 1));
    touch(huge, HUGE, 11);
    munmap(huge + 100 * PAGE, PAGE);
    mprotect(huge + 200 * PAGE, PAGE, PROT_READ);
    char *other = mmap(NULL, 64 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    touch(other, 64 * MIB, 13);                  /* reuses the freed frame, maybe */
    int bad = 0;
    if (!faults(huge + 100 * PAGE, 0) || !faults(huge + 100 * PAGE, 1)) {
        printf("huge_split: the unmapped page is still reachable\n");
        bad = 1;
    }
    if (!faults(huge + 200 * PAGE, 1) || faults(huge + 200 * PAGE, 0)) {
        printf("huge_split: the read-only page is writable or unreadable\n");
        bad = 1;
    }
    for (size_t page = 0; page < HUGE / PAGE; page++)
        if (page != 100 && huge[page * PAGE] != (char)(11 + page)) {
            printf("huge_split: page %zu changed\n", page);
            return 1;
        }
    return bad | check("huge_split (other)", other, 64 * MIB, 13);
}

/* Every kind of access taken from pages of one mapping of which some were written,
 * some only read and some never touched (kvmdune invalidates only the entries the
 * MMU used: those with the accessed bit), then the frames reused elsewhere. */
static int untouched_neighbours(void) {
    size_t pages = 64, length = pages * PAGE;
    /* One page only read, among pages never touched: its entry alone has A set. */
    char *lone = map_at(AREA + 20 * HUGE, 16 * PAGE, PROT_READ | PROT_WRITE);
    (void)*(volatile char *)(lone + 5 * PAGE);
    mprotect(lone, 16 * PAGE, PROT_NONE);
    if (!faults(lone + 5 * PAGE, 0)) {
        printf("untouched_neighbours: a page only read stays readable after PROT_NONE\n");
        return 1;
    }
    munmap(lone, 16 * PAGE);
    char *area = map_at(AREA + 16 * HUGE, length, PROT_READ | PROT_WRITE);
    for (size_t page = 0; page < pages; page++)
        if (page % 3 == 0)
            area[page * PAGE] = (char)page;                 /* written */
        else if (page % 3 == 1)
            (void)*(volatile char *)(area + page * PAGE);   /* read only */
    mprotect(area, length, PROT_READ);
    for (size_t page = 0; page < pages; page++)
        if (!faults(area + page * PAGE, 1) || faults(area + page * PAGE, 0)) {
            printf("untouched_neighbours: page %zu (kind %zu) writable or unreadable "
                   "after PROT_READ\n", page, page % 3);
            return 1;
        }
    mprotect(area, length, PROT_NONE);
    for (size_t page = 0; page < pages; page++)
        if (!faults(area + page * PAGE, 0)) {
            printf("untouched_neighbours: page %zu (kind %zu) readable after PROT_NONE\n",
                   page, page % 3);
            return 1;
        }
    mprotect(area, length, PROT_READ | PROT_WRITE);
    for (size_t page = 0; page < pages; page++)
        if (area[page * PAGE] != (page % 3 == 0 ? (char)page : 0)) {
            printf("untouched_neighbours: page %zu lost its contents\n", page);
            return 1;
        }
    munmap(area, length);
    char *other = map_at(AREA + 24 * HUGE, length, PROT_READ | PROT_WRITE);
    touch(other, length, 17);                     /* reuses the freed frames, maybe */
    for (size_t page = 0; page < pages; page++)
        if (!faults(area + page * PAGE, 0) || !faults(area + page * PAGE, 1)) {
            printf("untouched_neighbours: unmapped page %zu still reachable\n", page);
            return 1;
        }
    int bad = check("untouched_neighbours", other, length, 17);
    munmap(other, length);
    return bad;
}

/* An anonymous PROT_NONE reservation (as ld.so and thread stacks make), part of it
 * opened by mprotect: the opened part reads zero and keeps what is written, the rest
 * faults, and the frames of an unmapped neighbour never show through. */
static int reservation(void) {
    size_t length = 4 * MIB, opened = MIB + 3 * PAGE;
    char *freed = map_at(AREA + 32 * HUGE, length, PROT_READ | PROT_WRITE);
    touch(freed, length, 23);
    munmap(freed, length);
    char *area = mmap(NULL, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t offset = 0; offset < length; offset += 64 * PAGE)
        if (!faults(area + offset, 0) || !faults(area + offset, 1)) {
            printf("reservation: %p reachable before mprotect\n", (void *)(area + offset));
            return 1;
        }
    mprotect(area, opened, PROT_READ | PROT_WRITE);
    for (size_t offset = 0; offset < opened; offset += PAGE)
        if (area[offset] != 0 || area[offset + PAGE - 1] != 0) {
            printf("reservation: page %zu does not read zero\n", offset / PAGE);
            return 1;
        }
    touch(area, opened, 29);
    if (check("reservation", area, opened, 29))
        return 1;
    if (!faults(area + opened, 0) || !faults(area + length - PAGE, 1)) {
        printf("reservation: the part never opened is reachable\n");
        return 1;
    }
    return munmap(area, length) != 0;
}

int main(int argc, char **argv) {
    struct sigaction action = {.sa_handler = on_fault, .sa_flags = SA_NODEFER};
    sigaction(SIGSEGV, &action, 0);
    sigaction(SIGBUS, &action, 0);
    static const struct { const char *name; int (*run)(void); } cases[] = {
        {"table_reuse", table_reuse}, {"huge_reuse", huge_reuse},
        {"mremap_huge", mremap_huge}, {"huge_split", huge_split},
        {"untouched_neighbours", untouched_neighbours}, {"reservation", reservation},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (argc < 2 || !strcmp(argv[1], cases[i].name)) {
            if (cases[i].run())
                return 1;
            printf("ok %s\n", cases[i].name);
        }
    return 0;
}
