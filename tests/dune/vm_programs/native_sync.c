/* libdune's way of changing entries (dune_vm_page_walk / dune_vm_lookup, a write
 * through the entry pointer, dune_flush_tlb), which the native code serves when it
 * can (vmm_native/fastsync.c: VM_SYNC and FLUSH_TLB), seen from the guest:
 *   - D cleared through the entries of a walk: the next walk shows D only where the
 *     program wrote since, and the next write sets it again;
 *   - likewise A and a read;
 *   - PTE_W cleared through an entry: the program's write faults; set again (within
 *     the page's VMA): it lands;
 *   - refusals (a frame the program does not own, write on a read-only mapping,
 *     execute on a data page) and changes the native code leaves to the VMM
 *     (PERM_NONE and back, a software bit), and a refusal beside an accepted write
 *     removal: the
 *     flush's results and the entries afterwards, printed "NAME VALUE" (the VMM's
 *     Python path gives them; the test compares with the fast path off);
 *   - with two threads (two vCPUs): a write removal or D clear flushed by this thread
 *     is seen by the other thread's vCPU, whose translation was warm, at once.
 * Under tests/dune/vmm.py --tool ...native_sync_tool: "native syncs N flushes M",
 * what the native code answered. Prints "ok NAME" per check, then "done". */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "testdune.h"

#define PAGE 4096UL
#define PAGES 64
#define ROUNDS 20
#define TOOL 63
#define FOREIGN_FRAME 0x7ff000000000UL         /* beyond any guest memory */

static volatile char *area;
static unsigned char seen[PAGES];
static ptent_t clearing;                        /* the bits the walk clears */
static __thread sigjmp_buf on_fault;
static volatile char *fault_page;

static void segv(int signo, siginfo_t *info, void *context)
{
	(void)signo, (void)context;
	if ((char *)info->si_addr != (char *)fault_page)
		abort();
	siglongjmp(on_fault, 1);
}

/* One write of `value` to `page` by the calling thread: 1 if it landed. */
static int try_write(volatile char *page, char value)
{
	fault_page = page;
	if (sigsetjmp(on_fault, 1))
		return 0;
	page[0] = value;
	return 1;
}

/* The walk's callback: which pages of the area have `testing`'s bits (in seen[]),
 * `clearing`'s bits cleared through the entry. */
static ptent_t testing;

static int note_and_clear(const void *arg, ptent_t *pte, void *va)
{
	long page = ((char *)va - (char *)area) / (long)PAGE;

	(void)arg;
	if (page >= 0 && page < PAGES) {
		seen[page] = (*pte & testing) != 0;
		*pte &= ~clearing;
	}
	return 0;
}

/* A walk of the area: how many pages have `test`'s bits (seen[] says which);
 * `clear`'s bits cleared through the entries and flushed (0: a walk only). */
static int walk_area(ptent_t clear, ptent_t test)
{
	int count = 0;

	testing = test;
	clearing = clear;
	memset(seen, 0, sizeof seen);
	CHECK(dune_vm_page_walk(pgroot, (void *)area, (void *)(area + PAGES * PAGE - 1),
				note_and_clear, NULL) == 0);
	if (clear)
		CHECK(test_flush_tlb() == 0);
	for (int i = 0; i < PAGES; i++)
		count += seen[i];
	return count;
}

static void dirty_rounds(void)
{
	walk_area(PTE_D, PTE_D);
	for (int r = 0; r < ROUNDS; r++) {
		int a = r % PAGES, b = (r * 7 + 3) % PAGES;

		area[a * PAGE] = (char)r;
		area[b * PAGE + 100] = (char)r;
		CHECK(walk_area(PTE_D, PTE_D) == (a == b ? 1 : 2) && seen[a] && seen[b]);
		CHECK(walk_area(0, PTE_D) == 0);          /* cleared: nothing until a write */
		area[b * PAGE] = (char)(r + 1);
		CHECK(walk_area(0, PTE_D) == 1 && seen[b]);
		walk_area(PTE_D, PTE_D);
	}
	printf("ok dirty-cleared-by-entry-then-set-by-write\n");
}

static void accessed_rounds(void)
{
	walk_area(PTE_A | PTE_D, PTE_A | PTE_D);
	for (int r = 0; r < ROUNDS; r++) {
		int a = (r * 5 + 1) % PAGES;

		(void)area[a * PAGE + 8];
		CHECK(walk_area(0, PTE_D) == 0);
		CHECK(walk_area(PTE_A, PTE_A) == 1 && seen[a]);
		CHECK(walk_area(0, PTE_A) == 0);
		(void)area[a * PAGE + 16];
		CHECK(walk_area(PTE_A, PTE_A) == 1 && seen[a]);
	}
	printf("ok accessed-cleared-by-entry-then-set-by-read\n");
}

static ptent_t *entry_of(volatile char *va)
{
	ptent_t *pte;

	CHECK(dune_vm_lookup(pgroot, (void *)va, 0, &pte) == 0);
	return pte;
}

static void write_removal_rounds(void)
{
	volatile char *page = area + 40 * PAGE;
	ptent_t *pte = entry_of(page);

	/* A protect of the page first: the VMM records what its VMA allows. */
	CHECK(dune_vm_mprotect(pgroot, (void *)page, PAGE, PERM_R | PERM_W | PERM_U) == 0);
	for (int r = 0; r < ROUNDS; r++) {
		CHECK(try_write(page, (char)r));
		*pte &= ~PTE_W;
		CHECK(test_flush_tlb() == 0);
		CHECK(!try_write(page, -1) && page[0] == (char)r);
		*pte |= PTE_W;
		CHECK(test_flush_tlb_one((void *)page) == 0);
		CHECK(try_write(page, (char)(r + 1)) && page[0] == (char)(r + 1));
	}
	printf("ok write-removed-by-entry-faults-and-comes-back\n");
}

/* One refused (or not) change through the entry of `page`: the flush's result and
 * the entry afterwards, printed. */
static void refusal(const char *name, volatile char *page, ptent_t set, ptent_t clear)
{
	ptent_t *pte = entry_of(page);
	long result;

	*pte = (*pte | set) & ~clear;
	result = test_flush_tlb();
	printf("%s %ld\n", name, result);
	printf("%s-entry %#lx\n", name, (unsigned long)(PTE_FLAGS(*pte) & ~(PTE_A | PTE_D)));
}

static void refusals(void)
{
	volatile char *own = area + 50 * PAGE, *beside = area + 51 * PAGE;
	volatile char *read_only = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ptent_t *pte;

	CHECK(read_only != MAP_FAILED);
	(void)read_only[0];
	CHECK(dune_vm_mprotect(pgroot, (void *)read_only, PAGE, PERM_R | PERM_U) == 0);
	CHECK(dune_vm_mprotect(pgroot, (void *)own, 2 * PAGE, PERM_R | PERM_W | PERM_U) == 0);
	own[0] = beside[0] = 1;
	refusal("write-on-read-only-mapping", read_only, PTE_W, 0);
	CHECK(!try_write(read_only, 1));
	refusal("exec-on-data-page", own, 0, PTE_NX);
	pte = entry_of(own);
	refusal("foreign-frame", own, FOREIGN_FRAME, 0);
	CHECK(try_write(own, 2));
	refusal("perm-none", own, 0, PTE_P);              /* accepted: a restriction */
	CHECK(!try_write(own, 3));
	refusal("perm-none-lifted", own, PTE_P, 0);
	CHECK(try_write(own, 3));
	refusal("software-bit", own, PTE_COW, 0);
	refusal("set-dirty-ignored", own, PTE_D, 0);
	/* A refusal beside an accepted clear: the VMM refuses one, applies the other. */
	own[0] = 4;
	*entry_of(beside) &= ~PTE_W;
	*pte = PTE_FLAGS(*pte) | FOREIGN_FRAME;
	printf("refusal-beside-a-removal %ld\n", test_flush_tlb());
	CHECK(!try_write(beside, 5) && try_write(own, 5));
	*entry_of(beside) |= PTE_W;
	CHECK(test_flush_tlb() == 0 && try_write(beside, 6));
	printf("ok refusals-as-the-vmm-gives-them\n");
}

enum { IDLE, WRITE, QUIT };
static volatile int command, answered;
static volatile int landed;
static volatile char *target;

static void *writer(void *arg)
{
	(void)arg;
	for (;;) {
		int order;

		while ((order = command) == IDLE)
			__builtin_ia32_pause();
		if (order == QUIT)
			return NULL;
		landed = try_write(target, 7);
		command = IDLE;
		answered = 1;
	}
}

static int order_write(void)
{
	answered = 0;
	command = WRITE;
	while (!answered)
		__builtin_ia32_pause();
	return landed;
}

static void other_vcpu_rounds(void)
{
	pthread_t other;
	ptent_t *pte;

	target = area + 60 * PAGE;
	pte = entry_of(target);
	CHECK(dune_vm_mprotect(pgroot, (void *)target, PAGE, PERM_R | PERM_W | PERM_U) == 0);
	CHECK(pthread_create(&other, NULL, writer, NULL) == 0);
	for (int r = 0; r < ROUNDS; r++) {
		CHECK(order_write());                  /* warm: its vCPU writes the page */
		*pte &= ~PTE_W;
		CHECK(test_flush_tlb() == 0);
		CHECK(!order_write());                 /* must fault at once */
		*pte |= PTE_W;
		CHECK(test_flush_tlb() == 0);
		CHECK(order_write());
		walk_area(PTE_D, PTE_D);               /* D cleared through the entries */
		CHECK(walk_area(0, PTE_D) == 0);
		CHECK(order_write());                  /* must set D again */
		CHECK(walk_area(0, PTE_D) == 1 && seen[60]);
	}
	command = QUIT;
	CHECK(pthread_join(other, NULL) == 0);
	printf("ok other-vcpu-sees-entry-changes-at-once\n");
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_sigaction = segv, .sa_flags = SA_SIGINFO | SA_NODEFER };

	CHECK(test_init(1) == 0);
	CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
	area = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	CHECK(area != MAP_FAILED);
	for (int i = 0; i < PAGES; i++)
		area[i * PAGE] = 1;
	dirty_rounds();
	accessed_rounds();
	write_removal_rounds();
	refusals();
	other_vcpu_rounds();
	if (argc > 1)
		printf("native syncs %ld flushes %ld\n",
		       kvmdune_hypercall(TOOL, 0, 0, 0, 0, 0, 0),
		       kvmdune_hypercall(TOOL, 1, 0, 0, 0, 0, 0));
	printf("done\n");
	return 0;
}
