/* Memory protection keys as a program sees them on a CPU without them enabled:
 * no key can be allocated or freed, and pkey_mprotect with key -1 is mprotect. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static void show(const char *what, long result) {
    printf("%s: %ld %s\n", what, result, result < 0 ? strerror(errno) : "");
}

int main(void) {
    show("pkey_alloc(0, 0)", syscall(SYS_pkey_alloc, 0, 0));
    show("pkey_alloc(1, 0)", syscall(SYS_pkey_alloc, 1, 0));
    show("pkey_alloc(0, PKEY_DISABLE_WRITE)", syscall(SYS_pkey_alloc, 0, 2));
    show("pkey_alloc(0, 4)", syscall(SYS_pkey_alloc, 0, 4));
    show("pkey_free(0)", syscall(SYS_pkey_free, 0));
    show("pkey_free(1)", syscall(SYS_pkey_free, 1));
    show("pkey_free(-1)", syscall(SYS_pkey_free, -1));
    char *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    show("pkey_mprotect(RW, -1)", syscall(SYS_pkey_mprotect, page, 4096, PROT_READ | PROT_WRITE, -1));
    page[100] = 42;    /* the write the call allowed */
    printf("wrote %d\n", page[100]);
    show("pkey_mprotect(R, 0)", syscall(SYS_pkey_mprotect, page, 4096, PROT_READ, 0));
    show("pkey_mprotect(R, 1)", syscall(SYS_pkey_mprotect, page, 4096, PROT_READ, 1));
    show("pkey_mprotect(R, 16)", syscall(SYS_pkey_mprotect, page, 4096, PROT_READ, 16));
    show("pkey_mprotect(len 0, 1)", syscall(SYS_pkey_mprotect, page, 0, PROT_READ, 1));
    show("pkey_mprotect(unaligned, 1)", syscall(SYS_pkey_mprotect, page + 1, 4096, PROT_READ, 1));
    show("pkey_mprotect(bad prot, 1)", syscall(SYS_pkey_mprotect, page, 4096, 0x100, 1));
    show("pkey_mprotect(wrap, 1)", syscall(SYS_pkey_mprotect, page, (size_t)-4096, PROT_READ, 1));
    show("pkey_mprotect(unmapped, -1)", syscall(SYS_pkey_mprotect, (char *)0x10000, 4096, PROT_READ, -1));
    printf("still %d\n", page[100]);  /* the refused calls changed nothing */
    page[101] = 1;
    return 0;
}
