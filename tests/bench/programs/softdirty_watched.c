/* A program that uses soft-dirty bits itself (clear_refs 4, then pagemap bit 55)
 * while `kvmdune wss` samples it: it must see exactly the pages it wrote since
 * its own clear, whatever the sampler cleared meanwhile. It keeps running for a
 * while between its writes and its read, so that samples fall in between. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGES 64

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void keep_running(double ms)
{
    volatile uint64_t spin = 0;
    double until = now_ms() + ms;
    while (now_ms() < until)
        for (int i = 0; i < 10000; i++)
            spin++;
}

int main(void)
{
    volatile char *region = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        return 1;
    for (int i = 0; i < PAGES; i++)
        region[i * 4096] = 1;
    keep_running(50);
    int clear_refs = open("/proc/self/clear_refs", O_WRONLY);
    int pagemap = open("/proc/self/pagemap", O_RDONLY);
    if (clear_refs < 0 || pagemap < 0 || write(clear_refs, "4", 1) != 1)
        return 1;
    keep_running(50);
    region[5 * 4096] = 2;
    keep_running(50);
    region[40 * 4096] = 2;
    keep_running(50);
    uint64_t entries[PAGES];
    off_t offset = (off_t)((uintptr_t)region / 4096 * 8);
    if (pread(pagemap, entries, sizeof entries, offset) != sizeof entries)
        return 1;
    printf("soft-dirty:");
    for (int i = 0; i < PAGES; i++)
        if (entries[i] >> 55 & 1)
            printf(" %d", i);
    printf("\n");
    return 0;
}
