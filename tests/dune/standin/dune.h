/* A stand-in for dune-traps' dune.h, for building the page-table examples in tests
 * until the real header and library are on main (the compiler finds the real one
 * first: kvmdune/dune/include comes before this directory). Only what the
 * examples use: dune_init/dune_enter through raw hypercalls, pgroot, the TLB
 * flushes and load_cr3 as hypercalls, PERM_*, and the vm prototypes. */
#ifndef KVMDUNE_TEST_STANDIN_DUNE_H
#define KVMDUNE_TEST_STANDIN_DUNE_H

#include <stdbool.h>

#include "testdune.h"

#define CREATE_NONE   0
#define CREATE_NORMAL 1

static inline int dune_init(bool map_full)
{
	return test_init(map_full);
}

static inline int dune_enter(void)
{
	return 0;
}

static inline int dune_init_and_enter(void)
{
	int ret = dune_init(1);

	return ret ? ret : dune_enter();
}

static inline void dune_flush_tlb(void)
{
	flush_tlb();
}

static inline void dune_flush_tlb_one(unsigned long addr)
{
	flush_tlb_one((void *)addr);
}

#endif
