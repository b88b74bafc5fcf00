#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* Allocation-heavy: brk (small mallocs), mmap (large), mremap (realloc growth). */
int main(void) {
    uint64_t sum = 0;
    void *start = sbrk(0);
    char *blocks[2000];
    for (int i = 0; i < 2000; i++) {
        blocks[i] = malloc(100 + i % 500);
        memset(blocks[i], i & 0xff, 100 + i % 500);
    }
    for (int i = 0; i < 2000; i += 2) free(blocks[i]);
    printf("brk grew: %d\n", sbrk(0) > start);
    char *big = malloc(64 << 20);
    for (size_t i = 0; i < (64u << 20); i += 4096) big[i] = (char)i;
    for (int step = 1; step <= 5; step++) {
        big = realloc(big, (size_t)(64 + 16 * step) << 20);
        big[((size_t)(64 + 16 * step) << 20) - 1] = 7;
    }
    for (size_t i = 0; i < (64u << 20); i += 4096) sum += (unsigned char)big[i];
    free(big);
    for (int i = 1; i < 2000; i += 2) sum += (unsigned char)blocks[i][50];
    printf("sum=%llu\n", (unsigned long long)sum);
    return 0;
}
