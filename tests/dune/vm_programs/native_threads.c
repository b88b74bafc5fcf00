/* dune_vm_mprotect served natively (the fast path's thread answers from whichever
 * vCPU's ring the call arrives on) with two guest threads, each a vCPU: a protect
 * made by one thread is seen by the other thread's vCPU as soon as the call
 * returns. The other thread keeps its vCPU in the guest, spinning on a command word,
 * with the page's writable translation warm (it wrote the page just before); told
 * to write after the protect returned, its write must fault (SIGSEGV: no Dune
 * handler), and the page keep its old value; after the unprotect its write lands.
 * Each round is made by both threads in turn (a protect arriving on either ring).
 * Prints "ok NAME" per check, then "done". */
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
#define ROUNDS 200

enum { IDLE, WRITE, QUIT };

/* The shared page the protects act on, and the writer's commands and answers. */
static volatile long *page;
static volatile int command, answered;
static volatile long written, faulted;
static __thread sigjmp_buf on_fault;

static void segv(int signo, siginfo_t *info, void *context)
{
	(void)signo, (void)context;
	if (info->si_addr != (void *)page)
		abort();
	siglongjmp(on_fault, 1);
}

/* One write of `value` to the page by the calling thread: 1 if it landed. */
static int try_write(long value)
{
	if (sigsetjmp(on_fault, 1))
		return 0;
	*page = value;
	return 1;
}

/* The other thread: writes when told, answers whether the write landed. */
static void *writer(void *arg)
{
	(void)arg;
	for (;;) {
		int seen;

		while ((seen = command) == IDLE)
			__builtin_ia32_pause();
		if (seen == QUIT)
			return NULL;
		faulted = !try_write(written);
		command = IDLE;
		answered = 1;
	}
}

static void order(long value)
{
	written = value;
	answered = 0;
	command = WRITE;
	while (!answered)
		__builtin_ia32_pause();
}

static int protect(int perm)
{
	return dune_vm_mprotect(pgroot, (void *)page, PAGE, perm);
}

/* One round with the calling thread protecting and the writer thread checking. */
static void round_here(long value)
{
	CHECK(protect(PERM_R | PERM_W | PERM_U) == 0);
	order(value);                                  /* warm: the writer's vCPU writes */
	CHECK(!faulted && *page == value);
	CHECK(protect(PERM_R | PERM_U) == 0);
	order(value + 1);                              /* must fault, at once */
	CHECK(faulted && *page == value);
	CHECK(protect(PERM_R | PERM_W | PERM_U) == 0);
	order(value + 2);                              /* lands again */
	CHECK(!faulted && *page == value + 2);
}

/* Swapped: the writer thread protects (its ring), the main thread writes. */
static void *swapped(void *arg)
{
	(void)arg;
	CHECK(protect(PERM_R | PERM_U) == 0);
	return NULL;
}

static void round_swapped(long value)
{
	pthread_t other;

	CHECK(try_write(value) && *page == value);     /* warm on this vCPU */
	CHECK(pthread_create(&other, NULL, swapped, NULL) == 0);
	CHECK(pthread_join(other, NULL) == 0);
	CHECK(!try_write(value + 1) && *page == value);
	CHECK(protect(PERM_R | PERM_W | PERM_U) == 0);
}

int main(void)
{
	struct sigaction sa = { .sa_sigaction = segv, .sa_flags = SA_SIGINFO };
	pthread_t other;

	setvbuf(stdout, NULL, _IONBF, 0);
	CHECK(dune_init(1) == 0);
	CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
	page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(page != MAP_FAILED);
	*page = 1;
	CHECK(protect(PERM_R | PERM_U) == 0);          /* the VMM checks the page once */
	CHECK(protect(PERM_R | PERM_W | PERM_U) == 0);
	CHECK(pthread_create(&other, NULL, writer, NULL) == 0);
	for (long r = 0; r < ROUNDS; r++)
		round_here(10 * r);
	printf("ok other-vcpu-sees-protect-at-once\n");
	command = QUIT;
	CHECK(pthread_join(other, NULL) == 0);
	for (long r = 0; r < ROUNDS / 10; r++)
		round_swapped(10 * r + 5);
	printf("ok protect-from-another-vcpu-seen-here\n");
	printf("done\n");
	return 0;
}
