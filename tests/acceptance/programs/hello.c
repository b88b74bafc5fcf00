#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv, char **envp) {
    printf("hello from %s with %d arguments\n", argc > 0 ? "a guest" : "nobody", argc);
    for (int i = 1; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    const char *v = getenv("KVMDUNE_TEST_VALUE");
    printf("env=%s\n", v ? v : "(unset)");
    fflush(stdout);
    fprintf(stderr, "this goes to stderr\n");
    return 0;
}
