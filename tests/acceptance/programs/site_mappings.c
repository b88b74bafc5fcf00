/* Call sites in code a program maps itself (sitepatch.py): its own file mapped
 * private and read-only, then made executable by mprotect, has its site patched in
 * place (stderr: the site's first byte and how many anonymous stub mappings it
 * added); code called there answers as natively; and munmap takes the stubs away
 * again (stdout: the stub mappings are back to what they were, as natively). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* movabs $MARKER,%r11 (found in the mapped file), then a `mov $N,%eax; syscall` site. */
__asm__(".text\n.p2align 4\n.globl marked_getppid\nmarked_getppid:\n"
        "movabs $0x5a7e17e5a57e17e5,%r11\nmov $110,%eax\nsyscall\nret\n.p2align 4,0xcc\n");
static const unsigned char MARKER[] = {0x49, 0xbb, 0xe5, 0x17, 0x7e, 0xa5, 0xe5, 0x17, 0x7e, 0x5a};

/* The function in the mapped file: the marker followed by its site (MARKER itself is
 * in the file too, as data). */
static unsigned char *find_marked(unsigned char *start, size_t size) {
    unsigned char *end = start + size, *at = start;
    while ((at = memmem(at, end - at, MARKER, sizeof MARKER)) != NULL) {
        const unsigned char *site = at + sizeof MARKER;
        if (site + 7 <= end && site[5] == 0x0f && site[6] == 0x05)
            return at;
        at++;
    }
    return NULL;
}

/* Stub mappings are anonymous, read and execute only: a line with no name. */
static int is_stub_mapping(const char *line) {
    char perms[8], name[256] = "";
    unsigned long start, end, offset, inode;
    char device[16];
    return sscanf(line, "%lx-%lx %7s %lx %15s %lu %255s", &start, &end, perms, &offset, device,
                  &inode, name) >= 6
        && strcmp(perms, "r-xp") == 0 && name[0] == 0;
}

static int stub_mappings(void) {
    char line[512];
    int count = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (maps == NULL)
        return -1;
    while (fgets(line, sizeof line, maps) != NULL)
        count += is_stub_mapping(line);
    fclose(maps);
    return count;
}

int main(void) {
    int fd = open("/proc/self/exe", O_RDONLY);
    struct stat info;
    if (fd < 0 || fstat(fd, &info) != 0)
        return 1;
    int before = stub_mappings();
    unsigned char *copy = mmap(NULL, info.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (copy == MAP_FAILED)
        return 2;
    unsigned char *marked = find_marked(copy, info.st_size);
    if (marked == NULL)
        return 3;
    int mapped = stub_mappings();
    if (mprotect(copy, info.st_size, PROT_READ | PROT_EXEC) != 0)
        return 4;
    int protected = stub_mappings();
    long (*copied_getppid)(void) = (long (*)(void))marked;
    long answer = copied_getppid();
    fprintf(stderr, "site byte after mprotect: %02x; stub mappings added: mmap %d, mprotect %d\n",
            marked[sizeof MARKER], mapped - before, protected - mapped);
    printf("getppid through the mprotected copy: %s\n", answer == getppid() ? "ok" : "wrong");
    munmap(copy, info.st_size);
    printf("stub mappings after munmap: %s\n", stub_mappings() == before ? "as before" : "left");
    close(fd);
    return 0;
}
