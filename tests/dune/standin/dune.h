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

/* A page-fault handler, here called from a SIGSEGV handler (the harness turns a
 * fault on a page pgroot restricts into SIGSEGV); the real one is an upcall. */
typedef void (*dune_pgflt_cb)(uintptr_t addr, uint64_t fec, struct dune_tf *tf);
static dune_pgflt_cb standin_pgflt;

static void standin_on_segv(int sig, siginfo_t *info, void *ctx)
{
	(void)sig, (void)ctx;
	standin_pgflt((uintptr_t)info->si_addr, FEC_P | FEC_W | FEC_U, NULL);
}

static inline void dune_register_pgflt_handler(dune_pgflt_cb cb)
{
	struct sigaction sa = { .sa_sigaction = standin_on_segv,
				.sa_flags = SA_SIGINFO | SA_NODEFER };

	standin_pgflt = cb;
	sigaction(SIGSEGV, &sa, NULL);
}

static inline void dune_flush_tlb_one(unsigned long addr)
{
	flush_tlb_one((void *)addr);
}

#endif
