/* Reads and writes on blocking pipes that wait for their peer, each wait a few
 * milliseconds (the serving thread never waits itself; the vCPU's thread waits
 * up to the VMM's wait slice, 10 ms, before the VMM takes over): a reader
 * whose writer naps before each message, and a writer of blocks larger than the
 * pipe holds whose reader naps before each read, so that each write waits part way.
 * Prints what arrived (count and checksum) on each side, as Linux has it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MESSAGES 100
#define MESSAGE_BYTES 64
#define BLOCKS 20
#define BLOCK_BYTES (192 * 1024)   /* three pipes' worth: each write waits */
#define READ_BYTES (64 * 1024)
#define NAP_MS 1

static void nap(long ms) {
    struct timespec pause = {0, ms * 1000000L};
    nanosleep(&pause, NULL);
}

static unsigned long checksum(const unsigned char *bytes, size_t length, unsigned long sum) {
    for (size_t i = 0; i < length; i++)
        sum = sum * 31 + bytes[i];
    return sum;
}

static unsigned char *pattern(size_t length, unsigned seed) {
    unsigned char *bytes = malloc(length);
    for (size_t i = 0; i < length; i++)
        bytes[i] = (unsigned char)(i * 7 + seed);
    return bytes;
}

/* The parent reads what a napping child writes: every read waits. */
static void reads_wait(void) {
    int ends[2];
    if (pipe(ends) != 0)
        exit(1);
    pid_t child = fork();
    if (child == 0) {
        close(ends[0]);
        unsigned char *message = pattern(MESSAGE_BYTES, 1);
        for (int i = 0; i < MESSAGES; i++) {
            nap(NAP_MS);
            message[0] = (unsigned char)i;
            if (write(ends[1], message, MESSAGE_BYTES) != MESSAGE_BYTES)
                _exit(2);
        }
        _exit(0);
    }
    close(ends[1]);
    unsigned char buffer[4096];
    unsigned long sum = 0, bytes = 0;
    ssize_t got;
    while ((got = read(ends[0], buffer, sizeof buffer)) > 0) {
        sum = checksum(buffer, (size_t)got, sum);
        bytes += (unsigned long)got;
    }
    int status;
    waitpid(child, &status, 0);
    printf("reads that waited: %lu bytes, checksum %lx, last read %zd, writer status %d\n",
           bytes, sum, got, status);
}

/* The parent writes blocks larger than the pipe to a napping child: every write
 * moves part, waits, and goes on; none is short. */
static void writes_wait(void) {
    int ends[2];
    if (pipe(ends) != 0)
        exit(1);
    pid_t child = fork();
    if (child == 0) {
        close(ends[1]);
        unsigned char *buffer = malloc(READ_BYTES);
        unsigned long sum = 0, bytes = 0;
        ssize_t got;
        for (;;) {
            nap(NAP_MS);
            if ((got = read(ends[0], buffer, READ_BYTES)) <= 0)
                break;
            sum = checksum(buffer, (size_t)got, sum);
            bytes += (unsigned long)got;
        }
        printf("writes that waited: reader got %lu bytes, checksum %lx\n", bytes, sum);
        fflush(stdout);
        _exit(0);
    }
    close(ends[0]);
    unsigned char *block = pattern(BLOCK_BYTES, 3);
    int short_writes = 0;
    for (int i = 0; i < BLOCKS; i++) {
        block[0] = (unsigned char)i;
        if (write(ends[1], block, BLOCK_BYTES) != BLOCK_BYTES)
            short_writes++;
    }
    close(ends[1]);
    int status;
    waitpid(child, &status, 0);
    printf("writes that waited: %d blocks of %d, %d short, reader status %d\n", BLOCKS,
           BLOCK_BYTES, short_writes, status);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    reads_wait();
    writes_wait();
    return 0;
}
