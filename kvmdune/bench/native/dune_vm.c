/* The Dune API's page-table primitives measured from inside a guest program (run
 * under kvmdune by kvmdune/bench/dune.py, which puts the Linux baselines and the
 * platform floors beside them). One JSON object per line per benchmark:
 * {"benchmark": NAME, "per_op_ns": median, "per_op_cycles": median, ...}.
 *
 *   getppid [N]         one system call answered through the call ring (the ring
 *                       round trip of the floor)
 *   protect [N]         dune_vm_mprotect of one page read-only, then read-write
 *   trap [N]            protect, write fault, the page-fault handler (an upcall)
 *                       unprotects, retry (Appel & Li)
 *   trap-signal [N]     the same with a SIGSEGV handler (Linux's way, under kvmdune)
 *   trap-phases [N]     the trap's phases timed one by one with the TSC (median and
 *                       90th percentile of each, in ns): the protect call, the fault
 *                       until the handler runs, the handler's unprotect call, the
 *                       return and retried write. A call the ring's thread misses
 *                       shows as a 90th percentile near an exit's cost.
 *   dirty [MB [PAGES]]  read and clear the dirty bits of MB MiB, fully touched, with
 *                       PAGES pages written since the last clear (kvmdune_vm_clear_bits)
 *   walk [MB [PAGES]]   the same with dune_vm_page_walk, clearing PTE_D through the
 *                       entries, and dune_flush_tlb()
 * Usage: dune_vm [--repeat R] BENCHMARK [ARGS] | all
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "dune.h"
#include "bench_clock.h"

#define MAX_REPEAT 101

static int repeat = 5;


static void report(const char *name, double *ns, double *cyc, const char *extra)
{
	printf("{\"benchmark\": \"%s\", \"per_op_ns\": %.1f, \"per_op_cycles\": %.1f%s}\n", name,
	       median_of(ns, repeat), median_of(cyc, repeat), extra ? extra : "");
	fflush(stdout);
}

static void error(const char *name, const char *what)
{
	printf("{\"benchmark\": \"%s\", \"error\": \"%s\"}\n", name, what);
	fflush(stdout);
}

static char *map(size_t length, int populate)
{
	char *p = mmap(NULL, length, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* -- per-operation loops -------------------------------------------------------- */
typedef void (*loop_fn)(long n, char *page);

static void getppid_loop(long n, char *page)
{
	(void)page;
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
}

static void protect_loop(long n, char *page)
{
	for (long i = 0; i < n; i++) {
		dune_vm_mprotect(pgroot, page, PGSIZE, PERM_R | PERM_U);
		dune_vm_mprotect(pgroot, page, PGSIZE, PERM_R | PERM_W | PERM_U);
	}
}

static void unprotect(int sig, siginfo_t *info, void *ctx)
{
	(void)sig, (void)ctx;
	dune_vm_mprotect(pgroot, (void *)PGADDR((uintptr_t)info->si_addr), PGSIZE,
			 PERM_R | PERM_W | PERM_U);
}

static void unprotect_upcall(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)fec, (void)tf;
	dune_vm_mprotect(pgroot, (void *)PGADDR(addr), PGSIZE, PERM_R | PERM_W | PERM_U);
}

static void trap_loop(long n, char *page)
{
	for (long i = 0; i < n; i++) {
		dune_vm_mprotect(pgroot, page, PGSIZE, PERM_R | PERM_U);
		((volatile char *)page)[0] = (char)i;
	}
}

/* -- the trap's phases ---------------------------------------------------------- */
enum phase { PHASE_PROTECT, PHASE_FAULT, PHASE_UNPROTECT, PHASE_RETRY, PHASES };
static const char *const phase_names[PHASES] = {"protect", "fault_to_handler", "unprotect",
						 "return_and_retry"};
static uint64_t handler_entered, handler_done;

static void unprotect_timed(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	handler_entered = cycles();
	unprotect_upcall(addr, fec, tf);
	handler_done = cycles();
}

static int trap_phases(long n)
{
	double *samples[PHASES];
	char *page = map(PGSIZE, 1);
	char extra[512];
	int length = 0;

	for (int p = 0; p < PHASES; p++)
		samples[p] = calloc((size_t)n, sizeof(double));
	if (page == NULL || samples[PHASES - 1] == NULL || n < 1) {
		error("trap-phases", "no memory");
		return 1;
	}
	calibrate_tsc();
	dune_register_pgflt_handler(unprotect_timed);
	trap_loop(n / 10 + 1, page);                /* warm up */
	for (long i = 0; i < n; i++) {
		uint64_t start = cycles(), protected_at, retried;

		dune_vm_mprotect(pgroot, page, PGSIZE, PERM_R | PERM_U);
		protected_at = cycles();
		((volatile char *)page)[0] = (char)i;
		retried = cycles();
		samples[PHASE_PROTECT][i] = (double)(protected_at - start);
		samples[PHASE_FAULT][i] = (double)(handler_entered - protected_at);
		samples[PHASE_UNPROTECT][i] = (double)(handler_done - handler_entered);
		samples[PHASE_RETRY][i] = (double)(retried - handler_done);
	}
	for (int p = 0; p < PHASES; p++) {
		double median = median_of(samples[p], (int)n);     /* sorted now */

		length += snprintf(extra + length, sizeof(extra) - (size_t)length,
				   ", \"%s_ns\": %.0f, \"%s_p90_ns\": %.0f", phase_names[p],
				   median / cycles_per_ns, phase_names[p],
				   samples[p][n * 9 / 10] / cycles_per_ns);
		free(samples[p]);
	}
	printf("{\"benchmark\": \"trap-phases\"%s}\n", extra);
	fflush(stdout);
	munmap(page, PGSIZE);
	return 0;
}

static int per_op(const char *name, loop_fn fn, long n)
{
	double ns[MAX_REPEAT], cyc[MAX_REPEAT];
	char *page = map(PGSIZE, 1);

	if (page == NULL) {
		error(name, "mmap failed");
		return 1;
	}
	page[0] = 1;
	fn(n / 10 + 1, page);                       /* warm up */
	for (int r = 0; r < repeat; r++) {
		uint64_t t0 = now_ns(), c0 = cycles();

		fn(n, page);
		cyc[r] = (double)(cycles() - c0) / n;
		ns[r] = (double)(now_ns() - t0) / n;
	}
	report(name, ns, cyc, NULL);
	munmap(page, PGSIZE);
	return 0;
}

/* -- dirty tracking ---------------------------------------------------------------- */
static char *heap;
static size_t heap_pages;
static unsigned char *found;

static int clear_dirty(const void *arg, ptent_t *pte, void *va)
{
	(void)arg;
	if ((char *)va >= heap && (char *)va < heap + heap_pages * PGSIZE && (*pte & PTE_D)) {
		found[((char *)va - heap) / PGSIZE / 8] |= 1 << (((char *)va - heap) / PGSIZE % 8);
		*pte &= ~PTE_D;
	}
	return 0;
}

/* One collection: the dirty pages of the heap into `found`, their bits cleared. */
static long collect(int walk)
{
	if (!walk)
		return kvmdune_vm_clear_bits(pgroot, heap, heap_pages * PGSIZE, PTE_D, found);
	memset(found, 0, heap_pages / 8);
	dune_vm_page_walk(pgroot, heap, heap + heap_pages * PGSIZE - 1, clear_dirty, NULL);
	dune_flush_tlb();
	return 0;
}

static int dirty(const char *name, int walk, long mb, long written)
{
	double ns[MAX_REPEAT], cyc[MAX_REPEAT], write_ns[MAX_REPEAT];
	size_t stride;
	int correct = 1;
	char extra[128];

	heap_pages = (size_t)mb << 20 >> PGSHIFT;
	if (written < 1 || (size_t)written > heap_pages) {
		error(name, "bad arguments");
		return 1;
	}
	stride = heap_pages / written;
	heap = map(heap_pages * PGSIZE, 1);
	found = calloc(heap_pages / 8 + 1, 1);
	if (heap == NULL || found == NULL) {
		error(name, "no memory for the heap");
		return 1;
	}
	for (size_t i = 0; i < heap_pages; i++)
		heap[i * PGSIZE] = 1;                       /* fully touched */
	collect(walk);                                      /* arm */
	for (int r = 0; r < repeat; r++) {
		uint64_t t0 = now_ns(), c0;
		long count = 0;

		for (long i = 0; i < written; i++)
			heap[(size_t)i * stride * PGSIZE + r] = (char)r;
		write_ns[r] = (double)(now_ns() - t0);
		t0 = now_ns();
		c0 = cycles();
		collect(walk);
		cyc[r] = (double)(cycles() - c0);
		ns[r] = (double)(now_ns() - t0);
		for (size_t i = 0; i < heap_pages; i++) {
			int set = found[i / 8] >> (i % 8) & 1;

			count += set;
			correct &= set == (i % stride == 0 && i / stride < (size_t)written);
		}
		correct &= count == written;
	}
	snprintf(extra, sizeof(extra), ", \"correct\": %s, \"size_mb\": %ld, \"written\": %ld, "
		 "\"write_ns\": %.1f", correct ? "true" : "false", mb, written,
		 median_of(write_ns, repeat));
	report(name, ns, cyc, extra);
	munmap(heap, heap_pages * PGSIZE);
	free(found);
	return !correct;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_sigaction = unprotect, .sa_flags = SA_SIGINFO | SA_NODEFER };
	const char *name;
	int all, failed = 0;
	long a, b;

	if (argc > 2 && strcmp(argv[1], "--repeat") == 0) {
		repeat = atoi(argv[2]);
		argv += 2, argc -= 2;
	}
	if (repeat < 1 || repeat > MAX_REPEAT || argc < 2) {
		fprintf(stderr, "usage: dune_vm [--repeat 1..%d] getppid|protect|trap|trap-signal|"
			"trap-phases|dirty|"
			"walk|all "
			"[ARGS]\n", MAX_REPEAT);
		return 2;
	}
	if (dune_init_and_enter()) {
		error(argv[1], "dune_init failed: not under kvmdune with the Dune API");
		return 1;
	}
	sigaction(SIGSEGV, &sa, NULL);
	name = argv[1];
	all = strcmp(name, "all") == 0;
	a = argc > 2 ? atol(argv[2]) : 0;
	b = argc > 3 ? atol(argv[3]) : 0;
	if (all || strcmp(name, "getppid") == 0)
		failed |= per_op("getppid", getppid_loop, a ? a : 20000);
	if (all || strcmp(name, "protect") == 0)
		failed |= per_op("protect", protect_loop, a ? a : 2000);
	if (all || strcmp(name, "trap-signal") == 0)
		failed |= per_op("trap-signal", trap_loop, a ? a : 1000);
	if (all || strcmp(name, "trap") == 0) {
		dune_register_pgflt_handler(unprotect_upcall);
		failed |= per_op("trap", trap_loop, a ? a : 1000);
	}
	if (strcmp(name, "trap-phases") == 0)           /* a diagnosis: not in "all" */
		failed |= trap_phases(a ? a : 2000);
	if (all || strcmp(name, "dirty") == 0)
		failed |= dirty("dirty", 0, a ? a : 1024, b ? b : 1024);
	if (all || strcmp(name, "walk") == 0)
		failed |= dirty("walk", 1, a ? a : 1024, b ? b : 1024);
	return failed;
}
