/* The page-table functions of the Dune API (libdune's vm.c, by its signatures and
 * return conventions), for programs running under kvmdune.
 *
 * The VMM owns the page tables (kvmdune/dune/vm.py): every function here is a
 * hypercall (kvmdune/hypercall.h), except dune_vm_page_walk, which asks the VMM to
 * bring the accessed and dirty bits of the range up to date and then walks the
 * root's mirror itself, calling the callback with pointers to live mirror entries
 * (a write through one takes effect at the next dune_flush_tlb*(), checked).
 *
 * Additions under kvmdune_* names: batched reads and clears of accessed/dirty bits
 * over a range into a bitmap, one bit per page, least significant bit first.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "dune.h"

#define HC(op, a0, a1, a2, a3, a4, a5)                                                   \
	kvmdune_hypercall(op, (long)(a0), (long)(a1), (long)(a2), (long)(a3), (long)(a4), \
			     (long)(a5))

int dune_vm_mprotect(ptent_t *root, void *va, size_t len, int perm)
{
	return (int)HC(KVMDUNE_HC_VM_MPROTECT, root, va, len, perm, 0, 0);
}

int dune_vm_map_phys(ptent_t *root, void *va, size_t len, void *pa, int perm)
{
	return (int)HC(KVMDUNE_HC_VM_MAP_PHYS, root, va, len, pa, perm, 0);
}

int dune_vm_map_pages(ptent_t *root, void *va, size_t len, int perm)
{
	return (int)HC(KVMDUNE_HC_VM_MAP_PAGES, root, va, len, perm, 0, 0);
}

void dune_vm_unmap(ptent_t *root, void *va, size_t len)
{
	HC(KVMDUNE_HC_VM_UNMAP, root, va, len, 0, 0, 0);
}

int dune_vm_lookup(ptent_t *root, void *va, int create, ptent_t **pte_out)
{
	return (int)HC(KVMDUNE_HC_VM_LOOKUP, root, va, create, pte_out, 0, 0);
}

ptent_t *dune_vm_clone(ptent_t *root)
{
	long ret = HC(KVMDUNE_HC_VM_CLONE, root, 0, 0, 0, 0, 0);

	return ret < 0 ? NULL : (ptent_t *)ret;
}

void dune_vm_free(ptent_t *root)
{
	HC(KVMDUNE_HC_VM_FREE, root, 0, 0, 0, 0, 0);
}

uintptr_t dune_va_to_pa(void *ptr)
{
	return (uintptr_t)HC(KVMDUNE_HC_VA_TO_PA, ptr, 0, 0, 0, 0, 0);
}

long kvmdune_vm_read_bits(ptent_t *root, void *va, size_t len, ptent_t bits,
			  unsigned char *bitmap)
{
	return HC(KVMDUNE_HC_VM_BITS, root, va, len, bits, bitmap, 0);
}

long kvmdune_vm_clear_bits(ptent_t *root, void *va, size_t len, ptent_t bits,
			   unsigned char *bitmap)
{
	return HC(KVMDUNE_HC_VM_BITS, root, va, len, bits, bitmap, KVMDUNE_BITS_CLEAR);
}

/* The entries of table `dir` (at `level`, 3 = PML4) for [start, end] (inclusive),
 * as libdune walks them: a leaf is given to `cb` when it is not zero (a large page
 * whatever it holds); a missing table is skipped. The first non-zero result of
 * `cb` ends the walk and is returned. */
static int walk_table(ptent_t *dir, uintptr_t start, uintptr_t end, page_walk_cb cb,
		      const void *arg, int level)
{
	uintptr_t span = (uintptr_t)1 << PDSHIFT(level);
	uintptr_t base = start & ~(((uintptr_t)1 << PDSHIFT(level + 1)) - 1);
	int first = PDX(level, start), last = PDX(level, end);

	for (int i = first; i <= last; i++) {
		ptent_t *pte = &dir[i];
		uintptr_t va = base + (uintptr_t)i * span;
		int ret;

		if (level == 0 || (level <= 2 && (*pte & PTE_PS))) {
			if (level == 0 && !*pte)
				continue;
			ret = cb(arg, pte, (void *)va);
			if (ret)
				return ret;
			continue;
		}
		if (!(*pte & PTE_P))
			continue;
		ret = walk_table((ptent_t *)PTE_ADDR(*pte), i == first ? start : va,
				 i == last ? end : va + span - 1, cb, arg, level - 1);
		if (ret)
			return ret;
	}
	return 0;
}

int dune_vm_page_walk(ptent_t *root, void *start_va, void *end_va, page_walk_cb cb,
		      const void *arg)
{
	long ret = HC(KVMDUNE_HC_VM_SYNC, root, start_va, end_va, 0, 0, 0);

	if (ret < 0)
		return (int)ret;
	return walk_table(root, (uintptr_t)start_va, (uintptr_t)end_va, cb, arg, NPTLVLS);
}
