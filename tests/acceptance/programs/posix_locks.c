/* POSIX record locks belong to the process and go with any close of the file
 * (fcntl(2)): a lock survives the process opening, mapping and unmapping the
 * same file again, and is gone once any descriptor of the file is closed. OFD
 * locks conflict with the process's own POSIX locks. Each step is checked from
 * a forked child, which sees the parent's locks as another process does. The
 * lock file is made in the directory argv[1]. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static char path[4096];

static const char *seen_by_child(void) {
    fflush(stdout);
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return "pipe failed";
    pid_t child = fork();
    if (child == 0) {
        int fd = open(path, O_RDWR);
        struct flock probe = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
        const char *answer = "error";
        if (fd >= 0 && fcntl(fd, F_GETLK, &probe) == 0)
            answer = probe.l_type == F_UNLCK ? "unlocked"
                     : probe.l_pid == getppid() ? "locked by parent" : "locked by another";
        if (write(pipefd[1], answer, strlen(answer) + 1) < 0)
            _exit(1);
        _exit(0);
    }
    static char buffer[64];
    close(pipefd[1]);
    ssize_t got = read(pipefd[0], buffer, sizeof buffer - 1);
    buffer[got > 0 ? got : 0] = 0;
    close(pipefd[0]);
    waitpid(child, NULL, 0);
    return buffer;
}

static int lock(int fd) {
    struct flock request = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    return fcntl(fd, F_SETLK, &request);
}

int main(int argc, char **argv) {
    snprintf(path, sizeof path, "%s/posix_locks.data", argc > 1 ? argv[1] : ".");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 8192) != 0)
        return 1;
    int locked = lock(fd);
    printf("lock: %d, child sees: %s\n", locked, seen_by_child());

    int again = open(path, O_RDONLY);
    printf("opened again: child sees: %s\n", seen_by_child());

    struct flock ofd = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    int ofd_fd = open(path, O_RDWR);
    int taken = fcntl(ofd_fd, F_OFD_SETLK, &ofd);
    printf("OFD lock over own POSIX lock: %d %s\n", taken, taken ? strerror(errno) : "");
    struct flock query = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    fcntl(ofd_fd, F_OFD_GETLK, &query);
    printf("OFD query sees: %s\n", query.l_type == F_UNLCK ? "unlocked" : "locked");

    void *shared = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    munmap(shared, 8192);
    printf("shared map and unmap: child sees: %s\n", seen_by_child());
    void *private = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
    munmap(private, 8192);
    printf("private map and unmap: child sees: %s\n", seen_by_child());

    close(again);
    printf("another descriptor closed: child sees: %s\n", seen_by_child());
    locked = lock(fd);
    printf("lock again: %d, child sees: %s\n", locked, seen_by_child());
    int copy = dup(fd);
    close(copy);
    printf("a dup closed: child sees: %s\n", seen_by_child());
    locked = lock(fd);
    printf("lock again: %d, child sees: %s\n", locked, seen_by_child());
    pid_t child = fork();
    if (child == 0) {
        close(fd);           /* the child's close: the parent's lock stays */
        _exit(0);
    }
    waitpid(child, NULL, 0);
    printf("a child closed its copy: child sees: %s\n", seen_by_child());
    unlink(path);
    return 0;
}
