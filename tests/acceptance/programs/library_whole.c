#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
/* A library mapped whole as ld.so maps it (MAP_DENYWRITE, from offset 0), its
 * descriptor closed at once, and then read everywhere before anything is mapped
 * over it: every page holds the file's bytes, whether read at the mmap or later
 * (past the first PT_LOAD, the VMM pages it in when first touched). Then what
 * ld.so and programs do to such a mapping: a segment mapped over part of it from
 * another offset, a gap made PROT_NONE and readable again, a write to a private
 * page, a move with mremap, a forked child reading it. */
#define LIBRARY "/lib/x86_64-linux-gnu/libc.so.6"

static long page;
static unsigned char *file;
static size_t size;

static int same(const unsigned char *mapped, size_t offset, size_t length) {
    return memcmp(mapped, file + offset, length) == 0;
}

static int zeros(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    page = sysconf(_SC_PAGESIZE);
    int fd = open(LIBRARY, O_RDONLY | O_CLOEXEC);
    struct stat info;
    if (fd < 0 || fstat(fd, &info))
        return 1;
    size = info.st_size;
    file = malloc(size);
    if (pread(fd, file, size, 0) != (ssize_t)size)
        return 1;
    size_t span = (size + page - 1) & ~(page - 1);      /* (a page past it: SIGBUS) */
    unsigned char *whole = mmap(NULL, span, PROT_READ, MAP_PRIVATE | MAP_DENYWRITE, fd, 0);
    if (whole == MAP_FAILED)
        return 1;
    close(fd);
    size_t last = size & ~(page - 1);
    printf("whole mapping holds the file: %d, zeros after its end: %d\n",
           same(whole, 0, size), zeros(whole + size, span - size));
    /* Backwards, one byte a page: every page's first touch comes from the end. */
    unsigned sum = 0;
    for (size_t at = last; at + page > 0 && at <= last; at -= page)
        sum = sum * 31 + whole[at];
    printf("one byte a page from the end: %08x\n", sum);

    size_t gap = (size / 2) & ~(page - 1);
    printf("gap made PROT_NONE: %d\n", mprotect(whole + gap, 4 * page, PROT_NONE));
    int readable = mprotect(whole + gap, 4 * page, PROT_READ);
    printf("readable again: %d, holds the file: %d\n", readable, same(whole + gap, gap, 4 * page));

    fd = open(LIBRARY, O_RDONLY | O_CLOEXEC);
    size_t over = last - 8 * page;                     /* a shifted segment, as data's */
    unsigned char *segment = mmap(whole + over, 4 * page, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_FIXED | MAP_DENYWRITE, fd, over - page);
    close(fd);
    printf("segment over the tail holds its offset: %d, the page after it the file: %d\n",
           segment == whole + over && same(segment, over - page, 4 * page),
           same(whole + over + 4 * page, over + 4 * page, page));
    segment[5] ^= 0xFF;
    int private_copy = segment[5] == (file[over - page + 5] ^ 0xFF);
    printf("a write lands in the private copy only: %d\n",
           private_copy && same(whole + over + 4 * page, over + 4 * page, page));

    pid_t child = fork();
    if (child == 0)
        _exit(same(whole, 0, over) && same(whole + over + 4 * page, over + 4 * page,
                                           size - over - 4 * page) ? 0 : 1);
    int status;
    waitpid(child, &status, 0);
    printf("a forked child reads the same: %d\n", WIFEXITED(status) && !WEXITSTATUS(status));

    /* Moved: the part after the segment (one mapping: Linux before 6.17 moves no
     * more than one at a time). */
    size_t after = over + 4 * page, rest = span - after;
    unsigned char *target = mmap(NULL, rest, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *moved = mremap(whole + after, rest, rest, MREMAP_MAYMOVE | MREMAP_FIXED,
                                  target);
    if (target == MAP_FAILED || moved == MAP_FAILED)
        return 2;
    printf("moved: %d, holds the file: %d\n", moved == target,
           same(moved, after, size - after));
    printf("unmapped: %d %d\n", munmap(moved, rest), munmap(whole, after));
    return 0;
}
