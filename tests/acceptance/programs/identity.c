/* A process's identity and its edges, one mode per argument:
 *   exec PATH           execve(PATH) directly (no execvp fallback); print the errno
 *   fork-until-fail N   fork up to N children that wait on a pipe; report the first
 *                       failure's errno, then release and reap the children
 *   set-name NAME SECS  prctl(PR_SET_NAME, NAME), print PR_GET_NAME, then sleep
 *   fdinfo              open a file at offset 3, an eventfd and an epoll watching
 *                       the eventfd; print each fd's /proc/self/fdinfo with the
 *                       values that differ from run to run (inodes, mount ids)
 *                       dropped
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int do_exec(const char *path) {
    char *argv[] = {(char *)path, NULL};
    execve(path, argv, environ);
    printf("execve %s: %s\n", path, strerror(errno));
    return 1;
}

static int fork_until_fail(int limit) {
    int gate[2];
    if (pipe(gate) != 0) return 2;
    int made = 0;
    for (; made < limit; made++) {
        pid_t pid = fork();
        if (pid == 0) {
            char byte;
            close(gate[1]);
            while (read(gate[0], &byte, 1) > 0) {}
            _exit(0);
        }
        if (pid < 0) {
            printf("fork failed after at least one child: %s\n",
                   made > 0 ? strerror(errno) : "(no child was made)");
            break;
        }
    }
    if (made == limit) printf("no fork failed\n");
    close(gate[1]);
    int reaped = 0;
    while (wait(NULL) > 0) reaped++;
    printf("reaped all: %s\n", reaped == made ? "yes" : "no");
    return 0;
}

static int set_name(const char *name, int seconds) {
    char got[17] = {0};
    prctl(PR_SET_NAME, name, 0, 0, 0);
    prctl(PR_GET_NAME, got, 0, 0, 0);
    printf("%s\n", got);
    fflush(stdout);
    sleep(seconds);
    return 0;
}

static void print_fdinfo(int fd) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("fdinfo/%d: %s\n", fd, strerror(errno));
        return;
    }
    printf("fdinfo/%d:\n", fd);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "mnt_id:", 7) || !strncmp(line, "ino:", 4) ||
            !strncmp(line, "eventfd-id:", 11)) continue;
        char *ino = strstr(line, " ino:");
        if (ino) strcpy(ino, "\n");       /* epoll's tfd lines end in the target's inode */
        fputs(line, stdout);
    }
    fclose(f);
}

static int fdinfo(void) {
    int file = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
    lseek(file, 3, SEEK_SET);
    int event = eventfd(5, EFD_NONBLOCK);
    int poller = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    epoll_ctl(poller, EPOLL_CTL_ADD, event, &ev);
    print_fdinfo(file);
    print_fdinfo(event);
    print_fdinfo(poller);
    print_fdinfo(99);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "exec")) return do_exec(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "fork-until-fail")) return fork_until_fail(atoi(argv[2]));
    if (argc >= 4 && !strcmp(argv[1], "set-name")) return set_name(argv[2], atoi(argv[3]));
    if (argc >= 2 && !strcmp(argv[1], "fdinfo")) return fdinfo();
    fprintf(stderr, "usage: identity exec PATH | fork-until-fail N | set-name NAME SECS | fdinfo\n");
    return 2;
}
