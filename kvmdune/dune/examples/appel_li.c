/* appel_li.c - Appel & Li's user-level virtual-memory primitives with the Dune API:
 * prot1/protN (dune_vm_mprotect), trap (a page-fault handler of the program's own),
 * unprot (dune_vm_mprotect from the handler), dirty (PTE_D through dune_vm_lookup),
 * as a concurrent collector's write barrier or an incremental checkpointer uses them.
 * (A Dune API example, built and run by tests/dune.)
 *
 *     gcc -static -O1 -o appel_li appel_li.c $(kvmdune config --cflags --libs)
 *     kvmdune run -- ./appel_li
 *
 * Each round write-protects a heap (protN), writes a known set of pages; every first
 * write to a page traps to the handler, which records the page and unprotects it
 * (unprot), and the write is retried. The pages recorded must be exactly those
 * written, each trapping once; the entries of the pages written show PTE_W and PTE_D.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <dune.h>

#define HEAP_PAGES 256
#define ROUNDS     3

static char *heap;
static int trapped[HEAP_PAGES];
static volatile int traps, foreign;

static void on_page_fault(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	char *page = (char *)PGADDR(addr);

	(void)tf;
	if (page < heap || page >= heap + HEAP_PAGES * PGSIZE || !(fec & FEC_W)) {
		foreign++;                      /* not ours: nothing to unprotect */
		exit(3);
	}
	trapped[(page - heap) / PGSIZE]++;
	traps++;
	dune_vm_mprotect(pgroot, page, PGSIZE, PERM_R | PERM_W | PERM_U);   /* unprot */
}

static int written(int round, int page)
{
	return page % (round + 2) == 0;
}

int main(void)
{
	int failures = 0;

	if (dune_init_and_enter()) {
		fprintf(stderr, "appel_li: cannot enter Dune mode\n");
		return 2;
	}
	heap = mmap(NULL, HEAP_PAGES * PGSIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (heap == MAP_FAILED)
		return 2;
	dune_register_pgflt_handler(on_page_fault);

	for (int round = 0; round < ROUNDS; round++) {
		int expected = 0, exact = 1, entries = 1;

		memset(trapped, 0, sizeof(trapped));
		traps = 0;
		/* protN: the whole heap read-only (and its dirty bits cleared). */
		kvmdune_vm_clear_bits(pgroot, heap, HEAP_PAGES * PGSIZE, PTE_D, NULL);
		dune_vm_mprotect(pgroot, heap, HEAP_PAGES * PGSIZE, PERM_R | PERM_U);
		for (int page = 0; page < HEAP_PAGES; page++) {
			if (!written(round, page))
				continue;
			heap[page * PGSIZE] = (char)round;       /* traps once, then goes on */
			heap[page * PGSIZE + 1] = (char)round;   /* no trap: unprotected */
			expected++;
		}
		for (int page = 0; page < HEAP_PAGES; page++) {
			ptent_t *pte;

			exact &= trapped[page] == written(round, page);
			if (dune_vm_lookup(pgroot, heap + page * PGSIZE, 0, &pte))
				entries = 0;
			else if (!!(*pte & PTE_W) != written(round, page) ||
				 !!(*pte & PTE_D) != written(round, page))
				entries = 0;
		}
		printf("round %d: %d pages written, %d traps, %s, entries %s\n", round, expected,
		       traps, exact ? "each written page trapped once" : "WRONG PAGES TRAPPED",
		       entries ? "agree" : "DISAGREE");
		failures += !exact || !entries || traps != expected;
	}
	return failures || foreign ? 1 : 0;
}
