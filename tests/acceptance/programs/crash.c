#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* crash segv | crash abort | crash exit N */
int main(int argc, char **argv) {
    if (argc < 2) return 1;
    if (!strcmp(argv[1], "segv")) { volatile int *p = (int *)8; *p = 1; }
    if (!strcmp(argv[1], "abort")) abort();
    if (!strcmp(argv[1], "exit")) exit(atoi(argv[2]));
    return 1;
}
