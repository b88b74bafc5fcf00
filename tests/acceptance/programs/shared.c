#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    *shared = 1;
    if (fork() == 0) { *shared = 42; _exit(0); }
    wait(NULL);
    printf("shared anon after child: %d\n", *shared);
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    ftruncate(fd, 8192);
    char *file = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    strcpy(file + 4096, "written through a shared mapping");
    munmap(file, 8192);
    char buf[64] = {0};
    pread(fd, buf, 40, 4096);
    printf("file: %s\n", buf);
    char *ro = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 4096);
    printf("read-only shared: %.7s\n", ro);
    return 0;
}
