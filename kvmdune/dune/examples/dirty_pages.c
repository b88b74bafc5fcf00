/* Dirty-page tracking with the Dune API, as a garbage collector or a checkpointer
 * does it: clear the dirty bits of a heap, let the program run, then find the pages
 * it wrote from the page-table entries instead of taking a write fault per page.
 *
 * Two ways: libdune's dune_vm_page_walk over the heap (the callback reads PTE_D and
 * clears it through the entry pointer; dune_flush_tlb() applies the clears), and
 * kvmdune's batched kvmdune_vm_clear_bits (one call reads and clears the whole
 * range into a bitmap). Each round writes a known set of pages and checks that
 * exactly those are found.
 *
 * Build: gcc $(kvmdune config --cflags) dirty_pages.c $(kvmdune config --libs)
 * Run:   kvmdune run -- ./dirty_pages
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "dune.h"

#define HEAP_PAGES 4096                 /* 16 MiB */
#define ROUNDS     4

static char *heap;
static int found[HEAP_PAGES];

static int collect_dirty(const void *arg, ptent_t *pte, void *va)
{
	(void)arg;
	if ((char *)va >= heap && (char *)va < heap + HEAP_PAGES * PGSIZE && (*pte & PTE_D)) {
		found[((char *)va - heap) / PGSIZE] = 1;
		*pte &= ~PTE_D;                 /* applied at the next dune_flush_tlb() */
	}
	return 0;
}

/* Write a different, known set of pages each round: every `stride`-th from `first`. */
static int mutate(int round)
{
	int first = round * 7, stride = 13 + round * 17, count = 0;

	for (int page = first; page < HEAP_PAGES; page += stride, count++)
		heap[page * PGSIZE + round] = (char)round;
	return count;
}

static int check(const char *how, int round, int written)
{
	int first = round * 7, stride = 13 + round * 17, dirty = 0, wrong = 0;

	for (int page = 0; page < HEAP_PAGES; page++) {
		int expected = page >= first && (page - first) % stride == 0;

		dirty += found[page];
		wrong += found[page] != expected;
	}
	printf("%s round %d: %d pages written, %d found dirty, %s\n", how, round, written, dirty,
	       wrong ? "MISMATCH" : "exact");
	return wrong;
}

int main(void)
{
	static unsigned char bitmap[HEAP_PAGES / 8];
	int failures = 0;

	if (dune_init_and_enter()) {
		fprintf(stderr, "dune_init_and_enter failed: run under kvmdune\n");
		return 2;
	}
	heap = mmap(NULL, HEAP_PAGES * PGSIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (heap == MAP_FAILED)
		return 2;
	memset(heap, 0, HEAP_PAGES * PGSIZE);

	/* libdune's way: walk the entries, read and clear PTE_D, flush. */
	dune_vm_page_walk(pgroot, heap, heap + HEAP_PAGES * PGSIZE - 1, collect_dirty, NULL);
	dune_flush_tlb();
	for (int round = 0; round < ROUNDS; round++) {
		int written = mutate(round);

		memset(found, 0, sizeof(found));
		dune_vm_page_walk(pgroot, heap, heap + HEAP_PAGES * PGSIZE - 1, collect_dirty,
				  NULL);
		dune_flush_tlb();
		failures += check("page walk", round, written);
	}

	/* kvmdune's batched call: read and clear the whole heap's dirty bits at once. */
	kvmdune_vm_clear_bits(pgroot, heap, HEAP_PAGES * PGSIZE, PTE_D, NULL);
	for (int round = 0; round < ROUNDS; round++) {
		int written = mutate(round);
		long dirty = kvmdune_vm_clear_bits(pgroot, heap, HEAP_PAGES * PGSIZE, PTE_D, bitmap);

		for (int page = 0; page < HEAP_PAGES; page++)
			found[page] = bitmap[page / 8] >> (page % 8) & 1;
		failures += check("batched", round, written) + (dirty != written);
	}
	return failures ? 1 : 0;
}
