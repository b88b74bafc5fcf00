/* Guest memory used past the part of it a VM registers with KVM up front (~258 MiB:
 * guest_memory.py's SLOT_HEADROOM): a forked child and the first process each fill
 * and check 320 MiB; then, with a second thread writing all along, clear_refs 4
 * (soft-dirty), which makes kvmdune move all guest memory into one memory slot,
 * and the memory is written and checked again. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#define PAGE 4096UL
#define BIG (320UL << 20)

static unsigned char pattern(unsigned long page, int round) {
    return (unsigned char)(page * 31 + round * 7 + 1);
}

static int fill_and_check(unsigned char *memory, int round) {
    for (unsigned long page = 0; page < BIG / PAGE; page++) {
        memory[page * PAGE] = pattern(page, round);
        memory[page * PAGE + PAGE - 1] = pattern(page, round);
    }
    for (unsigned long page = 0; page < BIG / PAGE; page++)
        if (memory[page * PAGE] != pattern(page, round)
            || memory[page * PAGE + PAGE - 1] != pattern(page, round))
            return -1;
    return 0;
}

static unsigned char *big_mapping(void) {
    void *memory = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return memory;
}

static atomic_int stop;
static atomic_long writes;

static void *writer(void *unused) {
    (void)unused;
    volatile unsigned char *mine = malloc(64 * PAGE);
    while (!atomic_load(&stop)) {
        for (unsigned long page = 0; page < 64; page++)
            mine[page * PAGE] = (unsigned char)page;
        atomic_fetch_add(&writes, 1);
    }
    return NULL;
}

int main(void) {
    pid_t child = fork();
    if (child == 0)
        _exit(fill_and_check(big_mapping(), 0) == 0 ? 0 : 3);
    int status;
    waitpid(child, &status, 0);
    printf("forked child: exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);

    unsigned char *memory = big_mapping();
    printf("first fill: %s\n", fill_and_check(memory, 1) == 0 ? "ok" : "WRONG");

    pthread_t thread;
    pthread_create(&thread, NULL, writer, NULL);
    while (atomic_load(&writes) < 10)
        ;
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    printf("clear_refs 4: %s\n", fd >= 0 && write(fd, "4", 1) == 1 ? "written" : "failed");
    if (fd >= 0)
        close(fd);
    long before = atomic_load(&writes);
    printf("second fill: %s\n", fill_and_check(memory, 2) == 0 ? "ok" : "WRONG");
    while (atomic_load(&writes) < before + 10)
        ;
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("writer thread: went on\n");
    return 0;
}
