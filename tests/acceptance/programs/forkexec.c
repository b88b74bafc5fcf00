/* The fork+exec patterns of shells and spawners (issue 14), each printing what it
 * saw: compared byte for byte with the same program run natively. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
#define BUFFER (3 << 20)

static uint64_t checksum(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 31 + seed + (i >> 12));
}

static void report(const char *what, pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid) {
        printf("%s: waitpid failed\n", what);
        return;
    }
    printf("%s: exited %d\n", what, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    fflush(stdout);
}

static char *echo_argv[] = {"/bin/echo", "exec'd", "child", NULL};

/* The child execs at once (the shell pattern). */
static void fork_then_exec(void) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execve("/bin/echo", echo_argv, environ);
        _exit(127);
    }
    report("fork+exec", pid);
}

/* The child writes memory first, then execs; the parent's memory is its own. */
static void fork_touch_then_exec(unsigned char *buffer) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        fill(buffer, BUFFER, 7);
        printf("child wrote: %016llx\n", (unsigned long long)checksum(buffer, BUFFER));
        fflush(stdout);
        execve("/bin/echo", echo_argv, environ);
        _exit(127);
    }
    report("fork+touch+exec", pid);
    printf("parent kept: %016llx\n", (unsigned long long)checksum(buffer, BUFFER));
}

static void vfork_then_exec(void) {
    fflush(stdout);
    pid_t pid = vfork();
    if (pid == 0) {
        execve("/bin/echo", echo_argv, environ);
        _exit(127);
    }
    report("vfork+exec", pid);
}

static void spawn(void) {
    pid_t pid;
    fflush(stdout);
    int error = posix_spawn(&pid, "/bin/echo", NULL, NULL, echo_argv, environ);
    if (error) {
        printf("posix_spawn: %s\n", strerror(error));
        return;
    }
    report("posix_spawn", pid);
    /* Not compared: posix_spawn of a missing file. glibc's child (clone with
     * CLONE_VM|CLONE_VFORK) reports the exec's errno through the memory it shares
     * with the parent; kvmdune runs that clone as vfork, with memory of its own, so
     * the parent sees a child exiting 127 instead of ENOENT. */
}

/* The child's exec fails: it goes on in its own memory, intact. */
static void failed_exec_keeps_memory(unsigned char *buffer) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        fill(buffer, BUFFER, 11);
        uint64_t before = checksum(buffer, BUFFER);
        char *argv[] = {"/nonexistent/program", NULL};
        int result = execve(argv[0], argv, environ);
        int saved = errno;
        printf("failed exec: %d %s, memory %s\n", result, strerror(saved),
               checksum(buffer, BUFFER) == before ? "intact" : "CHANGED");
        int dir = execve("/", argv, environ);
        saved = errno;
        printf("exec of a directory: %d %s, memory %s\n", dir, strerror(saved),
               checksum(buffer, BUFFER) == before ? "intact" : "CHANGED");
        fflush(stdout);
        _exit(3);
    }
    report("failed exec", pid);
}

/* Shared file mappings unmapped and new ones made (a retired memory slot reused):
 * each shows its own file, before and after a fork and an exec. */
static void shared_files(const char *directory) {
    char path_a[4096], path_b[4096];
    snprintf(path_a, sizeof path_a, "%s/a", directory);
    snprintf(path_b, sizeof path_b, "%s/b", directory);
    int a = open(path_a, O_RDWR | O_CREAT | O_TRUNC, 0600);
    int b = open(path_b, O_RDWR | O_CREAT | O_TRUNC, 0600);
    char page[8192];
    memset(page, 'A', sizeof page);
    write(a, page, sizeof page);
    memset(page, 'B', 4096);
    write(b, page, 4096);
    char *first = mmap(NULL, 8192, PROT_READ, MAP_SHARED, a, 0);
    printf("a: %.4s %.4s\n", first, first + 4096);
    munmap(first, 8192);
    char *second = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, b, 0);
    printf("b: %.4s\n", second);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        printf("child sees b: %.4s\n", second);
        second[0] = 'c';
        fflush(stdout);
        execve("/bin/echo", echo_argv, environ);
        _exit(127);
    }
    report("shared fork+exec", pid);
    printf("parent sees b: %.4s\n", second);
    char *third = mmap(NULL, 8192, PROT_READ, MAP_SHARED, a, 0);
    printf("a again: %.4s %.4s\n", third, third + 4096);
}

int main(int argc, char **argv) {
    unsigned char *buffer = mmap(NULL, BUFFER, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fill(buffer, BUFFER, 3);
    printf("parent wrote: %016llx\n", (unsigned long long)checksum(buffer, BUFFER));
    fork_then_exec();
    fork_touch_then_exec(buffer);
    vfork_then_exec();
    spawn();
    failed_exec_keeps_memory(buffer);
    printf("parent still: %016llx\n", (unsigned long long)checksum(buffer, BUFFER));
    if (argc > 1)
        shared_files(argv[1]);
    return 0;
}
