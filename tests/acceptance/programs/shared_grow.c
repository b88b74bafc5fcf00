#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <unistd.h>
/* mremap growing a MAP_SHARED file mapping (Python's mmap.resize): moved and in
 * place, the pages the file's, writes both ways seen, after the descriptor closed. */
int main(void) {
    char path[] = "/tmp/kvmdune-shared-grow-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    ftruncate(fd, 10000);
    char *p = mmap(NULL, 10000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    memcpy(p, "hello", 5);
    ftruncate(fd, 20000);
    char *q = mremap(p, 10000, 20000, MREMAP_MAYMOVE);
    printf("grow: %s\n", q == MAP_FAILED ? strerror(errno) : "ok");
    if (q == MAP_FAILED) return 1;
    printf("kept: %.5s\n", q);
    q[19999] = 'z';
    q[12000] = 'y';
    msync(q, 20000, MS_SYNC);
    char buf[8] = {0};
    pread(fd, buf, 1, 19999); printf("file end: %s\n", buf);
    pread(fd, buf, 1, 12000); printf("file mid: %s\n", buf);
    pwrite(fd, "W", 1, 15000); printf("seen: %c\n", q[15000]);
    close(fd);
    char *r = mremap(q, 20000, 24000, 0);   /* in place, the file unopened now */
    printf("grow in place: %s\n", r == MAP_FAILED ? strerror(errno) : (r == q ? "same place" : "moved"));
    char *s = mremap(q, 20000, 30000, MREMAP_MAYMOVE);
    printf("grow again: %s %.5s %c\n", s == MAP_FAILED ? strerror(errno) : "ok", s == MAP_FAILED ? "" : s, s == MAP_FAILED ? '-' : s[19999]);
    return 0;
}
