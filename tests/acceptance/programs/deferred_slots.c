/* A forked child's VM gets the slots of shared memory and of the kernel's clock
 * data only when the guest first reaches them (guest_memory.py, ``defer_regions``):
 * its first accesses there (a read and a write split across two pages, the vDSO's
 * clock, a string function's vector loads) complete as natively. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile unsigned char *shared_pages(void) {
    void *pages = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (pages == MAP_FAILED) {
        perror("mmap");
        _exit(1);
    }
    return pages;
}

int main(void) {
    volatile unsigned char *one = shared_pages(), *two = shared_pages();
    char *text = (char *)shared_pages();
    for (int i = 0; i < 8; i++)
        one[4092 + i] = 0x11 * (i + 1);
    strcpy(text + 4000, "a string across a page boundary, read with vector loads");
    struct timespec before, after;
    clock_gettime(CLOCK_MONOTONIC, &before);
    pid_t pid = fork();
    if (pid == 0) {
        clock_gettime(CLOCK_MONOTONIC, &after);
        long long moved = (after.tv_sec - before.tv_sec) * 1000000000LL
                          + after.tv_nsec - before.tv_nsec;
        unsigned long long split = *(volatile unsigned long long *)(one + 4092);
        *(volatile unsigned long long *)(two + 4092) = 0x0102030405060708ULL;
        printf("child: clock forward %d, split read %llx, word %x\n",
               moved >= 0 && moved < 60000000000LL, split, *(volatile unsigned *)(one + 100));
        printf("child: %zu bytes: %s\n", strlen(text + 4000), text + 4000);
        strcpy(text, "written by the child");
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    printf("parent: child exited %d, split write %llx, %s\n",
           WIFEXITED(status) ? WEXITSTATUS(status) : -1,
           *(volatile unsigned long long *)(two + 4092), text);
    return 0;
}
