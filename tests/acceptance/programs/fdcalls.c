#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
/* The descriptor table's own calls at their edges, each answer printed (compared
   with the native run): close, dup, dup2, dup3, fcntl's descriptor commands and
   open/openat of files and directories, in the directory given as argv[1].
   "loop N" repeats open/dup/fcntl/close N times (the fast path serves them);
   "exec-child A B" reports which of descriptors A and B survived an exec. */

static void show(const char *what, long result) {
    if (result < 0)
        printf("%s: -1 %s\n", what, strerrorname_np(errno));
    else
        printf("%s: %ld\n", what, result);
    fflush(stdout);
}

static void list_fds(const char *when) {
    DIR *dir = opendir("/proc/self/fd");
    int own = dirfd(dir), seen[64], n = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL && n < 64)
        if (entry->d_name[0] != '.' && atoi(entry->d_name) != own)
            seen[n++] = atoi(entry->d_name);
    closedir(dir);
    for (int i = 0; i < n; i++)          /* sorted: readdir's order is not Linux's */
        for (int j = i + 1; j < n; j++)
            if (seen[j] < seen[i]) {
                int t = seen[i]; seen[i] = seen[j]; seen[j] = t;
            }
    printf("%s:", when);
    for (int i = 0; i < n; i++)
        printf(" %d", seen[i]);
    printf("\n");
    fflush(stdout);
}

static int loop(long rounds) {
    for (long i = 0; i < rounds; i++) {
        int fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int copy = dup(fd);
        int moved = fcntl(copy, F_DUPFD_CLOEXEC, 20);
        if (fd < 0 || copy < 0 || moved < 20 || fcntl(moved, F_GETFD) != FD_CLOEXEC
            || dup2(fd, 30) != 30 || close(fd) || close(copy) || close(moved) || close(30)) {
            printf("round %ld failed: %s\n", i, strerror(errno));
            return 1;
        }
    }
    printf("%ld rounds\n", rounds);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "loop") == 0)
        return loop(atol(argv[2]));
    if (argc == 4 && strcmp(argv[1], "exec-child") == 0) {
        show("after exec, the O_CLOEXEC one", fcntl(atoi(argv[2]), F_GETFD));
        show("after exec, the other", fcntl(atoi(argv[3]), F_GETFD));
        return 0;
    }
    if (argc != 2 || chdir(argv[1]) != 0)
        return 2;
    mkdir("dir", 0755);
    close(open("file", O_CREAT | O_WRONLY | O_TRUNC, 0644));
    symlink("file", "link");

    show("close(-1)", close(-1));
    show("close(4321)", close(4321));
    show("close(1<<20)", close(1 << 20));
    show("dup(-1)", dup(-1));
    show("dup(99)", dup(99));
    int file = open("file", O_RDWR | O_APPEND);
    show("open file", file);
    show("dup lowest free", dup(file));
    show("dup2 onto itself", dup2(file, file));
    show("dup2 from a closed one", dup2(77, 5));
    show("dup2 onto -1", dup2(file, -1));
    show("dup2 onto the limit", dup2(file, 1 << 20));
    show("dup2 onto 9", dup2(file, 9));
    show("dup2 onto 9 again (replacing)", dup2(3, 9));
    show("dup3 same fd", dup3(file, file, 0));
    show("dup3 bad flags", dup3(file, 10, 1));
    show("dup3 from a closed one", dup3(77, 10, O_CLOEXEC));
    show("dup3 O_CLOEXEC", dup3(file, 10, O_CLOEXEC));
    show("  its F_GETFD", fcntl(10, F_GETFD));
    show("F_GETFD", fcntl(file, F_GETFD));
    show("F_SETFD", fcntl(file, F_SETFD, FD_CLOEXEC));
    show("  F_GETFD", fcntl(file, F_GETFD));
    show("F_SETFD 0", fcntl(file, F_SETFD, 0));
    show("F_GETFL", fcntl(file, F_GETFL));
    show("F_GETFL of a closed one", fcntl(55, F_GETFL));
    show("F_GETFD of a closed one", fcntl(55, F_GETFD));
    show("F_SETFD of a closed one", fcntl(55, F_SETFD, 1));
    show("F_DUPFD 20", fcntl(file, F_DUPFD, 20));
    show("F_DUPFD 20 again", fcntl(file, F_DUPFD, 20));
    int cloexec_copy = fcntl(file, F_DUPFD_CLOEXEC, 0);
    show("F_DUPFD_CLOEXEC 0", cloexec_copy);
    show("  its F_GETFD", fcntl(cloexec_copy, F_GETFD));
    show("F_DUPFD at the limit", fcntl(file, F_DUPFD, 1 << 20));
    show("F_DUPFD negative", fcntl(file, F_DUPFD, -1));
    show("F_DUPFD of a closed one", fcntl(55, F_DUPFD, 0));
    list_fds("open now");
    for (int fd = 4; fd < 30; fd++)
        close(fd);

    show("open missing", open("missing", O_RDONLY));
    show("open file/ (not a directory)", open("file/", O_RDONLY));
    show("open dir for writing", open("dir", O_WRONLY));
    show("open file O_DIRECTORY", open("file", O_RDONLY | O_DIRECTORY));
    show("open link O_NOFOLLOW", open("link", O_RDONLY | O_NOFOLLOW));
    show("open link", open("link", O_RDONLY));
    show("openat a closed dirfd", openat(66, "file", O_RDONLY));
    int dir = open("dir", O_RDONLY | O_DIRECTORY);
    show("open dir", dir);
    show("openat relative to it", openat(dir, "../file", O_RDONLY));
    show("openat absolute with a closed dirfd", openat(66, "/", O_RDONLY | O_DIRECTORY));
    show("open O_CREAT|O_EXCL existing", open("file", O_CREAT | O_EXCL | O_WRONLY, 0600));
    show("open O_TRUNC", open("file", O_WRONLY | O_TRUNC));
    show("  F_GETFL", fcntl(6, F_GETFL));
    show("open O_NONBLOCK", open("file", O_RDONLY | O_NONBLOCK));
    show("  F_GETFL", fcntl(7, F_GETFL));
    for (int fd = 4; fd < 30; fd++)
        close(fd);

    /* Standard streams: a closed 0 is the next open's number; a closed 2 fails. */
    int saved_in = dup(0), saved_err = dup(2);
    show("close(0)", close(0));
    show("open takes 0", open("file", O_RDONLY));
    show("close(2)", close(2));
    show("write to 2", write(2, "x", 1));
    show("dup takes 2", dup(file));
    dup2(saved_in, 0);
    dup2(saved_err, 2);
    close(saved_in);
    close(saved_err);

    /* RLIMIT_NOFILE: opens and dups fail at it with EMFILE. */
    struct rlimit small = {24, 24}, was;
    getrlimit(RLIMIT_NOFILE, &was);
    setrlimit(RLIMIT_NOFILE, &small);
    int fd, last = -1;
    while ((fd = open(".", O_RDONLY | O_DIRECTORY)) >= 0)
        last = fd;
    printf("open fails after %d: %s\n", last, strerrorname_np(errno));
    show("dup when full", dup(file));
    show("F_DUPFD when full", fcntl(file, F_DUPFD, 0));
    show("dup2 to the last", dup2(file, last));
    close(last - 3);
    show("the hole is reused", open(".", O_RDONLY));
    for (fd = 4; fd < 24; fd++)
        close(fd);
    setrlimit(RLIMIT_NOFILE, &was);

    /* Fork copies the table; exec closes the close-on-exec ones. */
    int keep = open("file", O_RDONLY), gone = open("file", O_RDONLY | O_CLOEXEC);
    pid_t child = fork();
    if (child == 0) {
        show("in the child, F_GETFD of the O_CLOEXEC one", fcntl(gone, F_GETFD));
        show("in the child, close", close(keep));
        list_fds("in the child");
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", gone);
        snprintf(b, sizeof b, "%d", keep);
        /* the child closed `keep`: exec with a fresh one at its number */
        dup2(gone, keep);
        char *args[] = {"/proc/self/exe", "exec-child", a, b, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);
    show("child status", WEXITSTATUS(status));
    show("in the parent, the child's close left it", fcntl(keep, F_GETFD));
    list_fds("at the end");
    return 0;
}
