/* Code mapped from a file, changed in the file, and mapped again (sitepatch.py keeps
 * patched code per file, offset and length): a copy of this program is mapped
 * private and executable at an address (its call site patched on the way in), run,
 * unmapped; the site's call number is changed in the file (same length, same
 * place), and the copy mapped again at the same address runs the new number; mapped
 * once more unchanged, it still does. Prints what is the same on every run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* movabs $MARKER,%r11 (found in the file), then a `mov $110,%eax; syscall` site. */
__asm__(".text\n.p2align 4\n.globl marked_call\nmarked_call:\n"
        "movabs $0x5a7e17e5a57e17e5,%r11\nmov $110,%eax\nsyscall\nret\n.p2align 4,0xcc\n");
static const unsigned char MARKER[] = {0x49, 0xbb, 0xe5, 0x17, 0x7e, 0xa5, 0xe5, 0x17, 0x7e, 0x5a};
#define SYS_GETPPID 110
#define SYS_GETPID 39

/* The file offset of the marked function (MARKER itself is in the file as data too). */
static long find_marked(const unsigned char *data, size_t size) {
    const unsigned char *end = data + size, *at = data;
    while ((at = memmem(at, end - at, MARKER, sizeof MARKER)) != NULL) {
        const unsigned char *site = at + sizeof MARKER;
        if (site + 7 <= end && site[0] == 0xb8 && site[5] == 0x0f && site[6] == 0x05)
            return at - data;
        at++;
    }
    return -1;
}

static unsigned char *read_all(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY);
    struct stat info;
    fstat(fd, &info);
    unsigned char *data = malloc(info.st_size);
    *size = pread(fd, data, info.st_size, 0);
    close(fd);
    return data;
}

/* Map the copy's pages holding the function at ``at`` (0: anywhere) and call it. */
static long map_and_call(int fd, long offset, void **at) {
    long page = sysconf(_SC_PAGESIZE), base = offset / page * page;
    int flags = MAP_PRIVATE | (*at ? MAP_FIXED_NOREPLACE : 0);
    void *mapped = mmap(*at, 2 * page, PROT_READ | PROT_EXEC, flags, fd, base);
    if (mapped == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    long result = ((long (*)(void))((char *)mapped + (offset - base)))();
    munmap(mapped, 2 * page);
    *at = mapped;
    return result;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]);
        return 2;
    }
    size_t size;
    unsigned char *self = read_all("/proc/self/exe", &size);
    long offset = find_marked(self, size);
    if (offset < 0) {
        printf("marked function not found\n");
        return 1;
    }
    char copy[4096];
    snprintf(copy, sizeof copy, "%s/code-copy", argv[1]);
    int fd = open(copy, O_RDWR | O_CREAT | O_TRUNC, 0755);
    if (fd < 0 || write(fd, self, size) != (ssize_t)size) {
        perror(copy);
        return 1;
    }
    void *at = NULL;
    long first = map_and_call(fd, offset, &at);
    printf("first mapping: %s\n", first == getppid() ? "getppid" : "wrong");
    unsigned char number = SYS_GETPID;
    pwrite(fd, &number, 1, offset + sizeof MARKER + 1);      /* mov $39,%eax */
    long changed = map_and_call(fd, offset, &at);
    printf("after the change, same address: %s\n", changed == getpid() ? "getpid" : "wrong");
    long again = map_and_call(fd, offset, &at);
    printf("mapped again unchanged: %s\n", again == getpid() ? "getpid" : "wrong");
    close(fd);
    unlink(copy);
    return 0;
}
