/* A program a Python tool works on (tests/dune/tools.py, through tests/dune/vmm.py's
 * TOOL operation): it writes pages of its heap and checks what the tool found and did.
 * Prints "ok NAME" per check. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <sys/mman.h>

#include "testdune.h"

#define PAGES 64
#define TOOL  63

static sigjmp_buf env;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(env, 1);
}

static int can_write(volatile char *p)
{
	if (sigsetjmp(env, 1))
		return 0;
	*p = 1;
	return 1;
}

static long tool(long phase, char *heap)
{
	return kvmdune_hypercall(TOOL, phase, (long)heap, 0, 0, 0, 0);
}

static void ok(const char *name)
{
	printf("ok %s\n", name);
	fflush(stdout);
}

int main(void)
{
	char *heap = mmap(NULL, PAGES * PGSIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ptent_t *clone, *pte;

	signal(SIGSEGV, on_segv);
	CHECK(heap != MAP_FAILED && test_init(1) == 0);
	memset(heap, 1, PAGES * PGSIZE);
	CHECK(tool(0, heap) == 0);
	heap[3 * PGSIZE] = heap[10 * PGSIZE + 5] = heap[40 * PGSIZE + 9] = 2;
	CHECK(tool(1, heap) == (1L << 3 | 1L << 10 | 1L << 40));
	CHECK(tool(1, heap) == 0);                      /* the tool cleared them */
	/* for itself: the program's own reader still sees every page it wrote */
	CHECK(kvmdune_vm_read_bits(pgroot, heap, PAGES * PGSIZE, PTE_D,
				   (unsigned char[PAGES / 8]){0}) == PAGES);
	ok("tool-reads-and-clears-dirty-bits");

	CHECK(tool(2, heap) == 1);
	CHECK(!can_write(heap + 5 * PGSIZE) && !can_write(heap + 6 * PGSIZE));
	CHECK(can_write(heap + 7 * PGSIZE));
	ok("tool-protects-by-call-and-by-entry");

	clone = (ptent_t *)tool(3, heap);
	CHECK(dune_vm_lookup(clone, heap, 0, &pte) == 0 && *pte == 0);
	CHECK(dune_vm_lookup(clone, heap + PGSIZE, 0, &pte) == 0 && (*pte & PTE_P));
	CHECK(test_load_cr3((unsigned long)pgroot) == 0);
	ok("tool-clones-and-loads-cr3");

	CHECK(tool(4, heap) == 5);
	CHECK(tool(5, heap) == PAGES);
	ok("tool-refusals-and-walk");
	printf("done\n");
	return 0;
}
