/* Allocates and touches memory until it is stopped, for `kvmdune bench run`'s rows
 * of the memory limit:
 *   memory_hog [CHUNK_MEGABYTES]        (default: 64; chunks above 64 MB are paged
 *                                        in on first touch under kvmdune)
 * After each MiB touched it writes the MiBs touched so far as one line to stdout
 * (write(2), unbuffered), so that the reader knows how close to the limit it got
 * and when. It never frees; if malloc fails it exits with status 3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1ul << 20)
#define PAGE 4096ul

int main(int argc, char **argv) {
    size_t chunk = (argc > 1 ? strtoul(argv[1], 0, 10) : 64) * MIB;
    size_t touched = 0;
    for (;;) {
        char *block = malloc(chunk);
        if (!block)
            return 3;
        for (size_t offset = 0; offset < chunk; offset += PAGE) {
            block[offset] = 1;
            touched += PAGE;
            if (touched % MIB == 0) {
                char line[32];
                int length = snprintf(line, sizeof line, "%zu\n", touched / MIB);
                if (write(1, line, length) != length)
                    return 4;
            }
        }
    }
}
