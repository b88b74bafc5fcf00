/* ld.so's pattern: a file mapped whole, then parts of it (other offsets, other rights)
 * mapped over it with MAP_FIXED. Where the pages underneath were never touched, the
 * VMM writes the new contents into their frames (mm.py); what the program reads must
 * be the new mapping's bytes, zeros past the end of the file, whether the pages
 * underneath were touched or not. Prints a digest of what it reads. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define FILE_PAGES 6
#define FILE_SIZE (FILE_PAGES * PAGE - PAGE / 2)    /* the last page half in the file */

static void describe(const char *what, const unsigned char *page, int pages) {
    printf("%s:", what);
    for (int i = 0; i < pages; i++) {
        const unsigned char *p = page + i * PAGE;
        int zeros = 0;
        for (int j = 0; j < PAGE; j++)
            zeros += p[j] == 0;
        printf(" [%d %d %d]", p[0], p[PAGE - 1], zeros);
    }
    printf("\n");
}

static void case_over(int fd, const char *what, int touch, int prot) {
    unsigned char *whole = mmap(NULL, FILE_PAGES * PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
    volatile unsigned char sink = 0;
    if (touch)
        for (int i = 0; i < FILE_PAGES; i++)
            sink += whole[i * PAGE];
    (void)sink;
    /* pages 3..5 of the file (the last one half beyond its end) over pages 0..2 */
    unsigned char *over = mmap(whole, 3 * PAGE, prot, MAP_PRIVATE | MAP_FIXED, fd, 3 * PAGE);
    if (over != whole) {
        perror("mmap");
        return;
    }
    describe(what, over, FILE_PAGES);
    /* the same pages again, over themselves (identical bytes) */
    over = mmap(whole, 3 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 3 * PAGE);
    describe("  same again", over, 3);
    /* anonymous memory over the first page */
    unsigned char *anon = mmap(whole, PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS,
                               -1, 0);
    describe("  anonymous over", anon, 1);
    munmap(whole, FILE_PAGES * PAGE);
}

/* The file rewritten between the two mappings of the same pages (ld.so's second
 * mapping of a segment, at the same offset): the new mapping reads the new bytes. */
static void case_rewritten(int fd) {
    unsigned char *whole = mmap(NULL, FILE_PAGES * PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
    unsigned char page[PAGE];
    memset(page, 0x55, PAGE);
    pwrite(fd, page, PAGE, PAGE);
    unsigned char *over = mmap(whole, 3 * PAGE, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED,
                               fd, 0);
    describe("rewritten, same offset", over, 3);
    munmap(whole, FILE_PAGES * PAGE);
}

int main(int argc, char **argv) {
    char path[4096];
    snprintf(path, sizeof path, "%s/pattern", argc > 1 ? argv[1] : "/tmp");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    unsigned char page[PAGE];
    for (int i = 0; i < FILE_PAGES; i++) {
        memset(page, 0x10 + i, PAGE);
        page[0] = page[PAGE - 1] = 0x80 + i;
        write(fd, page, i == FILE_PAGES - 1 ? PAGE / 2 : PAGE);
    }
    case_over(fd, "untouched, read", 0, PROT_READ);
    case_over(fd, "untouched, read-exec", 0, PROT_READ | PROT_EXEC);
    case_over(fd, "untouched, read-write", 0, PROT_READ | PROT_WRITE);
    case_over(fd, "touched, read", 1, PROT_READ);
    case_rewritten(fd);
    close(fd);
    unlink(path);
    return 0;
}
