#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
/* stat and lstat of each path given, ROUNDS times over (what ls -l does to
   /etc/localtime), then the last answers printed whole: the errno name, or every
   byte of struct stat in hex (compared with the native run). Then it waits for a
   line on stdin (the test changes the files meanwhile) and does it again, until
   stdin ends. Usage: restat ROUNDS PATH... */

static void answer(const char *path, const char *what, int result, const struct stat *st) {
    printf("%s %s:", path, what);
    if (result < 0) {
        printf(" -1 %s\n", strerrorname_np(errno));
        return;
    }
    for (size_t i = 0; i < sizeof *st; i++)
        printf("%s%02x", i % 16 ? "" : " ", ((const unsigned char *)st)[i]);
    putchar('\n');
}

int main(int argc, char **argv) {
    char line[64];
    if (argc < 3)
        return 2;
    int rounds = atoi(argv[1]);
    do {
        for (int i = 2; i < argc; i++) {
            struct stat st;
            int result = 0;
            for (int round = 0; round < rounds; round++)
                result = stat(argv[i], &st);
            answer(argv[i], "stat", result, &st);
            for (int round = 0; round < rounds; round++)
                result = lstat(argv[i], &st);
            answer(argv[i], "lstat", result, &st);
        }
        printf("--\n");
        fflush(stdout);
    } while (fgets(line, sizeof line, stdin) != NULL);
    return 0;
}
