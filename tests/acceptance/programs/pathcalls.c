#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>
/* The calls that name a path for reading, each answer printed (compared with the
   native run, and under the sandbox with its slow path): for every path given,
   stat, lstat, an open for reading (and its first bytes), access, getxattr,
   lgetxattr, listxattr and llistxattr (with the value or list).
   "edges PATH" adds the extended-attribute calls' edges on PATH: sizes 0, too
   small, the kernel's cap and above it, names empty and too long, a value buffer,
   a name and a path that are not mapped, a name running into an unmapped page.
   "loop N PATH..." repeats the calls N times on each path, quietly; "follow N
   PATH..." only those that follow a final symlink; "links N LINK..." readlink. */

#define ATTRIBUTE "user.kvmdune"

static void show(const char *path, const char *what, long result) {
    if (result < 0)
        printf("%s %s: -1 %s\n", path, what, strerrorname_np(errno));
    else
        printf("%s %s: %ld\n", path, what, result);
}

static void show_bytes(const char *path, const char *what, long result, const char *bytes) {
    show(path, what, result);
    if (result > 0) {
        printf("  ");
        for (long i = 0; i < result; i++)
            putchar(bytes[i] >= ' ' && bytes[i] < 127 ? bytes[i] : '.');
        putchar('\n');
    }
}

static void stat_line(const char *path, const char *what, int result, const struct stat *st) {
    show(path, what, result);
    if (result == 0)
        printf("  mode %o size %lld links %lu ino %lu\n", st->st_mode,
               (long long)st->st_size, (unsigned long)st->st_nlink, (unsigned long)st->st_ino);
}

static void probe(const char *path) {
    struct stat st;
    char buffer[256];
    stat_line(path, "stat", stat(path, &st), &st);
    stat_line(path, "lstat", lstat(path, &st), &st);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    show(path, "open", fd < 0 ? -1 : 0);
    if (fd >= 0) {
        long got = read(fd, buffer, 16);
        show_bytes(path, "read", got < 0 && errno == EISDIR ? 0 : got, buffer);
        close(fd);
    }
    show(path, "access", access(path, R_OK));
    show_bytes(path, "getxattr", getxattr(path, ATTRIBUTE, buffer, sizeof buffer), buffer);
    show_bytes(path, "lgetxattr", lgetxattr(path, ATTRIBUTE, buffer, sizeof buffer), buffer);
    show_bytes(path, "listxattr", listxattr(path, buffer, sizeof buffer), buffer);
    show_bytes(path, "llistxattr", llistxattr(path, buffer, sizeof buffer), buffer);
    show_bytes(path, "readlink", readlink(path, buffer, sizeof buffer), buffer);
    fflush(stdout);
}

static void edges(const char *path) {
    static char big[70000];
    char small[2], name[300];
    void *volatile unmapped = (void *)8;         /* volatile: no compiler warning */
    long page = sysconf(_SC_PAGESIZE);
    char *two = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(two + page, page);                    /* a hole right after the first page */
    show(path, "getxattr size 0", getxattr(path, ATTRIBUTE, NULL, 0));
    show(path, "getxattr too small", getxattr(path, ATTRIBUTE, small, sizeof small));
    show(path, "getxattr at the cap", getxattr(path, ATTRIBUTE, big, 65536));
    show(path, "getxattr above the cap", getxattr(path, ATTRIBUTE, big, sizeof big));
    show(path, "getxattr missing", getxattr(path, "user.missing", big, 64));
    show(path, "getxattr empty name", getxattr(path, "", big, 64));
    memset(name, 'a', sizeof name - 1);
    memcpy(name, "user.", 5);
    name[sizeof name - 1] = '\0';
    show(path, "getxattr long name", getxattr(path, name, big, 64));
    show(path, "getxattr bad value", getxattr(path, ATTRIBUTE, unmapped, 64));
    show(path, "getxattr bad name", getxattr(path, unmapped, big, 64));
    show(path, "getxattr bad path", getxattr(unmapped, ATTRIBUTE, big, 64));
    /* a name that runs into the hole, and a value whose end lies in it */
    memset(two, 'u', page);
    show(path, "getxattr name into a hole", getxattr(path, two + page - 10, big, 64));
    /* An output the kernel copies whole: EFAULT if what it copies runs into the hole,
     * the result if it fits before it, however large the size given. */
    show(path, "getxattr value into a hole", getxattr(path, ATTRIBUTE, two + page - 2, 64));
    show(path, "getxattr value before a hole", getxattr(path, ATTRIBUTE, two + page - 40, 64));
    show(path, "listxattr into a hole", listxattr(path, two + page - 2, 64));
    show(path, "listxattr before a hole", listxattr(path, two + page - 40, 64));
    show(path, "lgetxattr value into a hole", lgetxattr(path, ATTRIBUTE, two + page - 2, 64));
    show(path, "llistxattr into a hole", llistxattr(path, two + page - 2, 64));
    show(path, "getxattr above the cap into a hole",
         getxattr(path, ATTRIBUTE, two + page - 2, 1 << 20));
    show(path, "readlink into a hole", readlink("/proc/self/exe", two + page - 2, 64));
    /* readlink writes only what it returns: a target that fits before the hole. */
    show(path, "readlink of it into a hole", readlink(path, two + page - 2, 64));
    show(path, "readlink of it before a hole", readlink(path, two + page - 40, 64));
    show_bytes(path, "readlink too small", readlink(path, small, sizeof small), small);
    show(path, "readlink size 0", readlink(path, small, 0));
    show(path, "readlink size -1", readlink(path, small, -1));
    show(path, "readlink bad buffer", readlink(path, unmapped, 64));
    show(path, "readlink bad path", readlink(unmapped, big, 64));
    show(path, "readlink with a slash after", readlink(strcat(strcpy(name, path), "/"), big, 64));
    show(path, "readlinkat", readlinkat(AT_FDCWD, path, big, 64));
    show(path, "getcwd into a hole", getcwd(two + page - 2, 64) ? 0 : -1);
    show(path, "listxattr size 0", listxattr(path, NULL, 0));
    show(path, "listxattr too small", listxattr(path, small, sizeof small));
    show(path, "listxattr bad list", listxattr(path, unmapped, 64));
    show(path, "llistxattr above the cap", llistxattr(path, big, sizeof big));
    show(path, "getxattr empty path", getxattr("", ATTRIBUTE, big, 64));
    show(path, "getxattr missing file, empty name", getxattr("/nonexistent/x", "", big, 64));
    show(path, "getxattr missing file, bad name", getxattr("/nonexistent/x", unmapped, big, 64));
    fflush(stdout);
}

static int loop(long rounds, int follow_only, int count, char **paths) {
    struct stat st;
    char buffer[256];
    for (long i = 0; i < rounds; i++)
        for (int p = 0; p < count; p++) {
            int fd = open(paths[p], O_RDONLY | O_CLOEXEC);
            if (fd < 0 || close(fd) || stat(paths[p], &st)
                || getxattr(paths[p], ATTRIBUTE, buffer, sizeof buffer) < 0
                || listxattr(paths[p], buffer, sizeof buffer) < 0
                || (!follow_only && (lstat(paths[p], &st)
                                     || lgetxattr(paths[p], ATTRIBUTE, buffer, sizeof buffer) < 0
                                     || llistxattr(paths[p], buffer, sizeof buffer) < 0))) {
                printf("round %ld, %s: %s\n", i, paths[p], strerror(errno));
                return 1;
            }
        }
    printf("%ld rounds\n", rounds);
    return 0;
}

static int links(long rounds, int count, char **paths) {
    char buffer[256];
    for (long i = 0; i < rounds; i++)
        for (int p = 0; p < count; p++)
            if (readlink(paths[p], buffer, sizeof buffer) < 0) {
                printf("round %ld, %s: %s\n", i, paths[p], strerror(errno));
                return 1;
            }
    printf("%ld rounds\n", rounds);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "edges") == 0) {
        edges(argv[2]);
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "links") == 0)
        return links(atol(argv[2]), argc - 3, argv + 3);
    if (argc >= 4 && (strcmp(argv[1], "loop") == 0 || strcmp(argv[1], "follow") == 0))
        return loop(atol(argv[2]), argv[1][0] == 'f', argc - 3, argv + 3);
    for (int i = 1; i < argc; i++)
        probe(argv[i]);
    return 0;
}
