#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
/* A private file mapping mapped again over itself with MAP_FIXED, as ld.so maps a
 * library whole and then each segment: the new mapping holds the file's bytes at
 * its offset, whatever was written to the old one (by the program or by a read(2)
 * into it), and what the file holds now if it changed in between. */
#define PAGES 8

static long page;

static unsigned sum(const unsigned char *p, size_t n) {
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + p[i];
    return s;
}

static void show(const char *what, const unsigned char *p, size_t n) {
    printf("%s: first %02x %02x, last %02x, sum %08x\n", what, p[0], p[1], p[n - 1], sum(p, n));
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    page = sysconf(_SC_PAGESIZE);
    char path[] = "/tmp/kvmdune-remap-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 1;
    unlink(path);
    unsigned char *content = malloc(PAGES * page);
    for (long i = 0; i < PAGES * page; i++)
        content[i] = (unsigned char)(i * 7 + i / page);
    if (write(fd, content, PAGES * page - 100) != PAGES * page - 100)   /* ends mid-page */
        return 1;

    unsigned char *whole = mmap(NULL, PAGES * page, PROT_READ, MAP_PRIVATE, fd, 0);
    mprotect(whole + 2 * page, (PAGES - 2) * page, PROT_NONE);
    unsigned char *text = mmap(whole + 2 * page, 3 * page, PROT_READ | PROT_EXEC,
                               MAP_PRIVATE | MAP_FIXED, fd, 2 * page);
    show("segment over the untouched reservation", text, 3 * page);
    unsigned char *data = mmap(whole + 5 * page, 3 * page, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_FIXED, fd, 5 * page);
    show("data segment up to past the end of the file", data, 3 * page);
    data[0] = 0xEE;
    data = mmap(data, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 5 * page);
    show("mapped again after a write", data, 3 * page);

    pwrite(fd, "ABCD", 4, 5 * page + 1);
    if (pread(fd, data + 8, 16, 0) != 16)          /* the kernel writes into it */
        return 1;
    data = mmap(data, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 5 * page);
    show("mapped again after a read into it and a change of the file", data, 3 * page);

    unsigned char *other = mmap(whole, page, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 3 * page);
    show("another offset over the first page", other, page);
    unsigned char *fresh = mmap(NULL, 2 * page, PROT_READ, MAP_PRIVATE, fd, 0);
    pwrite(fd, "wxyz", 4, 10);
    fresh = mmap(fresh, 2 * page, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    show("untouched, the file changed in place", fresh, 2 * page);
    (void)argc;
    (void)argv;
    return 0;
}
