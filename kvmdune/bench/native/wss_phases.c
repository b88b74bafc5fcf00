/*
 * wss_phases.c — a program with a known working set, phase by phase, for
 * `kvmdune wss` and `kvmdune bench wss`.
 *
 *   wss_phases [READ:WRITTEN:PASSES ...]      (default: 2048:512:60000 8192:4096:8000
 *                                                        1024:0:100000)
 *
 * One anonymous region as large as the largest phase. In each phase, PASSES
 * passes over the region's first READ pages: each pass reads a word of every one
 * of them and writes a word of the first WRITTEN of them (WRITTEN <= READ). So a
 * sample taken inside a phase sees READ pages touched and WRITTEN written, plus
 * the few pages of the program's own stack, data and code. The work is a fixed
 * number of passes, not a time: a watched program that runs slower shows the cost
 * of being watched in its own elapsed time.
 *
 * Prints one JSON line: each phase with its start and end (milliseconds since the
 * program started, by its own clock), the total, and a checksum of what was read.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096
#define MAX_PHASES 16

struct phase {
    long read;
    long written;
    long passes;
    double start_ms;
    double end_ms;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int parse_phase(const char *text, struct phase *phase)
{
    char tail;
    if (sscanf(text, "%ld:%ld:%ld%c", &phase->read, &phase->written, &phase->passes,
               &tail) != 3)
        return 0;
    return phase->read > 0 && phase->written >= 0 && phase->written <= phase->read &&
           phase->passes > 0 && phase->read <= (1L << 22);
}

int main(int argc, char **argv)
{
    static const char *defaults[] = {"2048:512:60000", "8192:4096:8000", "1024:0:100000"};
    struct phase phases[MAX_PHASES];
    int count = argc > 1 ? argc - 1 : 3;
    if (count > MAX_PHASES) {
        fprintf(stderr, "wss_phases: at most %d phases\n", MAX_PHASES);
        return 2;
    }
    long largest = 0;
    for (int i = 0; i < count; i++) {
        const char *text = argc > 1 ? argv[i + 1] : defaults[i];
        if (!parse_phase(text, &phases[i])) {
            fprintf(stderr, "wss_phases: bad phase %s (READ:WRITTEN:PASSES, "
                            "WRITTEN <= READ)\n", text);
            return 2;
        }
        if (phases[i].read > largest)
            largest = phases[i].read;
    }
    volatile uint64_t *region = mmap(NULL, (size_t)largest * PAGE, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) {
        perror("wss_phases: mmap");
        return 1;
    }
    const long words_per_page = PAGE / sizeof(uint64_t);
    uint64_t checksum = 0;
    double started = now_ms();
    for (int i = 0; i < count; i++) {
        struct phase *phase = &phases[i];
        phase->start_ms = now_ms() - started;
        for (long pass = 0; pass < phase->passes; pass++) {
            for (long page = 0; page < phase->read; page++) {
                /* A different word of the page each pass, the same pages always. */
                volatile uint64_t *word = region + page * words_per_page + (pass & 7);
                checksum += *word;
                if (page < phase->written)
                    *word = checksum ^ (uint64_t)pass;
            }
        }
        phase->end_ms = now_ms() - started;
    }
    double total = now_ms() - started;

    printf("{\"phases\": [");
    for (int i = 0; i < count; i++)
        printf("%s{\"read\": %ld, \"written\": %ld, \"passes\": %ld, \"start_ms\": %.3f, "
               "\"end_ms\": %.3f}", i ? ", " : "", phases[i].read, phases[i].written,
               phases[i].passes, phases[i].start_ms, phases[i].end_ms);
    printf("], \"total_ms\": %.3f, \"checksum\": %llu}\n", total,
           (unsigned long long)checksum);
    return 0;
}
