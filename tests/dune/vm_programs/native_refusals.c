/* dune_vm_mprotect of pgroot, the calls the native path is asked first (pages whose
 * ceiling the VMM recorded by an earlier protect) next to the ones it must leave to
 * the VMM: other roots, pages the program does not own (the page-table window, the
 * call stub's part of the user half), rights beyond the mapping (a read-only file
 * mapping, a page Linux's mprotect lowered, the program's text), PERM_BIG, PERM_W
 * without PERM_R, ranges over two page tables and of many pages. Prints each
 * result, a line per call, the same on the fast path (native) and off it (the
 * VMM's Python), which the test compares; then "done". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <dune.h>

#define PAGE 4096UL
#define HUGE (2UL << 20)
#define RW (PERM_R | PERM_W | PERM_U)
#define R (PERM_R | PERM_U)

static void show(const char *name, long result)
{
	printf("%s %ld\n", name, result);
}

static long protect_root(ptent_t *root, void *va, unsigned long length, int perm)
{
	return kvmdune_hypercall(KVMDUNE_HC_VM_MPROTECT, (long)root, (long)va, (long)length,
				 perm, 0, 0);
}

/* Twice each: the first records the page's ceiling, the second is asked natively. */
static void twice(const char *name, void *va, unsigned long length, int perm)
{
	char label[96];

	snprintf(label, sizeof(label), "%s-first", name);
	show(label, dune_vm_mprotect(pgroot, va, length, perm));
	snprintf(label, sizeof(label), "%s-again", name);
	show(label, dune_vm_mprotect(pgroot, va, length, perm));
}

int main(void)
{
	char *anon, *file, *span;
	int fd;

	setvbuf(stdout, NULL, _IONBF, 0);
	if (dune_init(1) != 0)
		return 1;
	anon = mmap(NULL, 32 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	span = mmap(NULL, 2 * HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fd = open("/proc/self/exe", O_RDONLY);
	file = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
	if (anon == MAP_FAILED || span == MAP_FAILED || file == MAP_FAILED)
		return 1;
	for (int i = 0; i < 32; i++)
		anon[i * PAGE] = 1;
	span = (char *)(((uintptr_t)span + HUGE - 1) & ~(HUGE - 1));
	span[-PAGE] = span[0] = 1;
	(void)*(volatile char *)file;

	twice("own-page-read-only", anon, PAGE, R);
	twice("own-page-writable", anon, PAGE, RW);
	twice("own-pages-16", anon, 16 * PAGE, R);
	twice("own-pages-16-writable", anon, 16 * PAGE, RW);
	twice("own-pages-32", anon, 32 * PAGE, R);
	twice("own-page-unaligned", anon + 100, 10, RW);
	twice("own-page-exec", anon, PAGE, RW | PERM_X);
	twice("own-page-no-exec", anon, PAGE, RW);
	twice("own-page-no-user", anon, PAGE, PERM_R | PERM_W);
	twice("own-page-user-again", anon, PAGE, RW);
	twice("own-page-none", anon, PAGE, 0);
	twice("own-page-back", anon, PAGE, RW);
	twice("over-two-tables", span - PAGE, 2 * PAGE, R);
	twice("over-two-tables-back", span - PAGE, 2 * PAGE, RW);
	twice("write-without-read", anon, PAGE, PERM_W | PERM_U);
	twice("big", anon, PAGE, RW | PERM_BIG);
	twice("read-only-file", file, PAGE, R);
	twice("read-only-file-writable", file, PAGE, RW);
	twice("text", (void *)((uintptr_t)main & ~(PAGE - 1)), PAGE, RW | PERM_X);
	twice("window", (void *)((uintptr_t)pgroot & ~(PAGE - 1)), PAGE, R);
	twice("beyond-the-program", (void *)(0x800000000000UL - PAGE), PAGE, R);
	twice("overflowing-length", anon, -PAGE, R);
	twice("zero-length", anon, 0, R);
	/* Linux lowers the ceiling of a page the VMM had recorded. */
	twice("before-linux-mprotect", anon + PAGE, PAGE, RW);
	show("linux-mprotect", mprotect(anon + PAGE, PAGE, PROT_READ));
	twice("after-linux-mprotect", anon + PAGE, PAGE, RW);
	show("linux-mprotect-back", mprotect(anon + PAGE, PAGE, PROT_READ | PROT_WRITE));
	twice("after-linux-mprotect-back", anon + PAGE, PAGE, RW);
	/* A read-only file mapped over a recorded page. */
	show("map-file-over", mmap(anon + 2 * PAGE, PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
	     == anon + 2 * PAGE);
	twice("file-over-writable", anon + 2 * PAGE, PAGE, RW);
	show("unknown-root", protect_root((ptent_t *)((uintptr_t)pgroot + PAGE), anon, PAGE, R));
	show("pgroot-again", protect_root(pgroot, anon, PAGE, RW));
	*(volatile char *)anon = 2;                    /* writable again: no fault */
	printf("done\n");
	return 0;
}
