/* A CPU-bound integer and memory kernel for `kvmdune bench syscalls`:
 *   cpu_kernel [MEGABYTES [MILLION_STEPS [huge]]]  (default: 64 MB, 25 million steps)
 * Fills an array of MEGABYTES with a pseudo-random sequence, then takes
 * MILLION_STEPS million steps, each mixing integer arithmetic (multiply, shifts,
 * a division, xorshift) with one pseudo-random read-modify-write of the array and
 * one sequential read. It makes no system call between its start and its printf,
 * and prints a checksum that depends on every step, so the result of a run can be
 * compared with the native one. With "huge", the array is a 2 MiB-aligned mapping
 * advised MADV_HUGEPAGE (transparent huge pages where the host's mode is madvise). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static inline uint64_t xorshift(uint64_t x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

int main(int argc, char **argv) {
    uint64_t megabytes = argc > 1 ? strtoull(argv[1], 0, 10) : 64;
    uint64_t steps = (argc > 2 ? strtoull(argv[2], 0, 10) : 25) * 1000000ull;
    uint64_t words = megabytes << 17;            /* 8-byte words */
    uint64_t mask = 1;
    while (mask * 2 <= words) mask *= 2;
    mask -= 1;                                   /* a power of two at most words */
    uint64_t *array;
    int huge = argc > 3 && !strcmp(argv[3], "huge");
    if (huge) {
        size_t align = 2u << 20, size = words * sizeof *array;
        char *raw = mmap(0, size + align, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) { perror("mmap"); return 1; }
        array = (uint64_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
        if (madvise(array, size, MADV_HUGEPAGE)) perror("madvise");
    } else {
        array = malloc(words * sizeof *array);
        if (!array) { perror("malloc"); return 1; }
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint64_t i = 0; i < words; i++) array[i] = x = xorshift(x);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < steps; i++) {
        x = xorshift(x);
        uint64_t *cell = &array[x & mask];
        uint64_t value = *cell * 0x2545F4914F6CDD1Dull + (x >> 29);
        *cell = value ^ (value >> 31);
        sum += value / ((i & 0xFF) | 1) + array[i & mask];
        sum = (sum << 7) | (sum >> 57);
    }
    printf("checksum %016llx\n", (unsigned long long)sum);
    if (!huge)
        free(array);
    return 0;
}
