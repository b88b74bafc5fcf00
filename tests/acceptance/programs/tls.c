#include <stdio.h>
#include <sys/auxv.h>
#include <string.h>
__thread int counter = 5;
__thread char name[16] = "initial";
int main(int argc, char **argv, char **envp) {
    counter += 10;
    strcpy(name, "changed");
    printf("tls counter=%d name=%s\n", counter, name);
    printf("pagesz=%lu clktck=%lu random=%s execfn=%s\n", getauxval(AT_PAGESZ),
           getauxval(AT_CLKTCK), getauxval(AT_RANDOM) ? "set" : "missing",
           getauxval(AT_EXECFN) ? "set" : "missing");
    printf("uid=%lu euid=%lu secure=%lu\n", getauxval(AT_UID), getauxval(AT_EUID),
           getauxval(AT_SECURE));
    int envc = 0;
    while (envp[envc]) envc++;
    printf("argc=%d envc>0=%d\n", argc, envc > 0);
    return 0;
}
