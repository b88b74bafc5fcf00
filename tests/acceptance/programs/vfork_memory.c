/* A vfork child runs in its parent's memory until it execs or exits: what it
 * writes there (a static, the parent's stack, the heap, several pages, a page the
 * parent never touched) is the parent's when vfork returns. glibc's posix_spawn
 * relies on it to report an exec that failed (ENOENT), and posix_spawnp to try the
 * next PATH entry. */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void spawn(const char *what, int use_path, const char *file)
{
    pid_t pid;
    char *argv[] = {(char *)file, NULL};
    int status = 0;
    int error = use_path ? posix_spawnp(&pid, file, NULL, NULL, argv, environ)
                         : posix_spawn(&pid, file, NULL, NULL, argv, environ);
    if (error == 0)
        waitpid(pid, &status, 0);
    printf("%s: %s, status %d\n", what, error ? strerror(error) : "started",
           WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int main(void)
{
    static volatile int in_data;
    volatile int on_stack = 1;
    long page = sysconf(_SC_PAGESIZE);
    char *heap = malloc(16);
    char *pages = malloc(3 * page);
    char *untouched = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int status;
    strcpy(heap, "parent");
    memset(pages, 'p', 3 * page);

    spawn("posix_spawn of a missing file", 0, "/nonexistent/program");
    spawn("posix_spawnp of a missing command", 1, "no-such-command-anywhere");
    spawn("posix_spawn of true", 0, "/bin/true");

    pid_t pid = vfork();
    if (pid == 0) {
        in_data = 42;
        on_stack = 7;
        strcpy(heap, "child");
        memset(pages + page / 2, 'c', 2 * page);
        untouched[100] = 'u';
        _exit(3);
    }
    waitpid(pid, &status, 0);
    printf("after _exit: data %d, stack %d, heap %s, pages %c%c%c%c, untouched %c, status %d\n",
           in_data, on_stack, heap, pages[0], pages[page / 2], pages[2 * page],
           pages[3 * page - 1], untouched[100] ? untouched[100] : '0', WEXITSTATUS(status));

    pid = vfork();
    if (pid == 0) {
        in_data = 99;
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    printf("after exec: data %d, status %d\n", in_data, WEXITSTATUS(status));
    return 0;
}
