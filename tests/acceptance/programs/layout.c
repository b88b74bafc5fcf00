/* Prints where the kernel put things: the program (main), the stack, the brk heap
 * (the initial break and a small malloc), the mmap area (a large malloc and an
 * anonymous mmap) and the end of the image, one "name 0x..." line each. With an
 * argument it forks, and parent and child each map one more page: a child's layout
 * is its parent's, so both get the same address. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char end;   /* the linker's end of the image (after .bss) */

int main(int argc, char **argv)
{
    int local = 0;
    void *initial_break = sbrk(0);
    void *small = malloc(64);
    void *large = malloc(4 << 20);
    void *anonymous = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!small || !large || anonymous == MAP_FAILED)
        return 1;
    printf("main %#lx\n", (unsigned long)(uintptr_t)main);
    printf("stack %#lx\n", (unsigned long)(uintptr_t)&local);
    printf("end %#lx\n", (unsigned long)(uintptr_t)&end);
    printf("brk %#lx\n", (unsigned long)(uintptr_t)initial_break);
    printf("small %#lx\n", (unsigned long)(uintptr_t)small);
    printf("large %#lx\n", (unsigned long)(uintptr_t)large);
    printf("mmap %#lx\n", (unsigned long)(uintptr_t)anonymous);
    printf("random %#lx\n", getauxval(AT_RANDOM));
    printf("execfn %#lx\n", getauxval(AT_EXECFN));
    if (argc > 1) {
        fflush(stdout);
        pid_t child = fork();
        if (child < 0)
            return 1;
        void *next = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        printf("%s %#lx\n", child == 0 ? "child_mmap" : "parent_mmap", (unsigned long)(uintptr_t)next);
        if (child == 0)
            return 0;
        fflush(stdout);
        if (waitpid(child, NULL, 0) != child)
            return 1;
    }
    return 0;
}
