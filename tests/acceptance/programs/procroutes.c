/* Routes to /proc/self that are not spelled "/proc/self/...": a relative path from
 * /proc/self made the current directory, a directory descriptor of it, a symlink
 * planted elsewhere, and a symlink to a descriptor. Each must reach the program's
 * own descriptors (under kvmdune: the guest's, never the VMM's /dev/kvm, VM or vCPU
 * descriptors), by open, stat, access and readlink; compared with Linux. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void try_open(const char *how, int dirfd, const char *path) {
    int fd = openat(dirfd, path, O_RDONLY);
    char buffer[32] = "";
    if (fd < 0) {
        printf("%-24s open %s: %s\n", how, path, strerrorname_np(errno));
        return;
    }
    ssize_t got = read(fd, buffer, sizeof buffer - 1);
    printf("%-24s open %s: read %zd \"%.*s\"\n", how, path, got, (int)(got > 0 ? got : 0), buffer);
    close(fd);
}

static void try_stat(const char *how, int dirfd, const char *path) {
    struct stat st;
    int r = fstatat(dirfd, path, &st, 0);
    printf("%-24s stat %s: %s\n", how, path, r == 0 ? (S_ISREG(st.st_mode) ? "regular file" : "other") : strerrorname_np(errno));
    r = faccessat(dirfd, path, R_OK, 0);
    printf("%-24s access %s: %s\n", how, path, r == 0 ? "ok" : strerrorname_np(errno));
}

static void list_fds(const char *how, const char *path) {
    DIR *dir = opendir(path);
    if (dir == NULL) {
        printf("%-24s list %s: %s\n", how, path, strerrorname_np(errno));
        return;
    }
    int count = 0, has_nine = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL)
        if (entry->d_name[0] != '.') {
            count++;
            has_nine |= strcmp(entry->d_name, "9") == 0;
        }
    closedir(dir);
    printf("%-24s list %s: %d entries, fd 9 listed: %d\n", how, path, count, has_nine);
}

int main(int argc, char **argv) {
    const char *scratch = argc > 1 ? argv[1] : "/tmp";
    int file = open("/etc/hostname", O_RDONLY);
    dup2(file, 9);                      /* the program's fd 9: a file it may read */
    close(file);
    char link[4096];
    snprintf(link, sizeof link, "%s/procroutes-self", scratch);
    unlink(link);
    symlink("/proc/self", link);
    char fd_link[4096];
    snprintf(fd_link, sizeof fd_link, "%s/procroutes-fd9", scratch);
    unlink(fd_link);
    symlink("/proc/self/fd/9", fd_link);

    char path[4200];
    for (int fd = 3; fd <= 9; fd += 6) {
        snprintf(path, sizeof path, "%s/fd/%d", link, fd);
        try_open("planted symlink", AT_FDCWD, path);
        try_stat("planted symlink", AT_FDCWD, path);
    }
    try_open("link to a descriptor", AT_FDCWD, fd_link);
    snprintf(path, sizeof path, "%s/fd", link);
    list_fds("planted symlink", path);

    int self = open("/proc/self", O_RDONLY | O_DIRECTORY);
    try_open("directory descriptor", self, "fd/3");
    try_open("directory descriptor", self, "fd/9");
    try_stat("directory descriptor", self, "fd/4");

    if (chdir("/proc/self") == 0) {
        try_open("current directory", AT_FDCWD, "fd/3");
        try_open("current directory", AT_FDCWD, "fd/9");
        try_open("current directory", AT_FDCWD, "./fd/../fd/9");
        try_stat("current directory", AT_FDCWD, "fd/5");
        char target[256];
        ssize_t n = readlink("fd/9", target, sizeof target - 1);
        printf("%-24s readlink fd/9: %s\n", "current directory", n < 0 ? strerrorname_np(errno) : (target[n] = 0, target));
        list_fds("current directory", "fd");
    }
    unlink(link);
    unlink(fd_link);
    puts("the end");
    return 0;
}
