/* Every kind of page-table downgrade, observed by the guest itself: write removed,
 * page unmapped, user access removed, dirty bit cleared and set again by the next
 * write; each in the program view (pgroot's changes act on the program) and in a
 * user view (user code started in pgroot). Each page is touched first, so that a
 * stale translation exists when the downgrade comes: without the invalidation the
 * second access would succeed. Prints one line per check, "ok NAME". */
#define _GNU_SOURCE
#include <setjmp.h>
#include <sys/mman.h>

#include "testdune.h"

static sigjmp_buf env;
static void *volatile fault_addr;
static char ustack[16384] __attribute__((aligned(16)));
static struct dune_tf tf;

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
	(void)sig, (void)ctx;
	fault_addr = info->si_addr;
	siglongjmp(env, 1);
}

static int can_write(volatile char *p)
{
	if (sigsetjmp(env, 1))
		return 0;
	*p = 1;
	return 1;
}

static int can_read(volatile char *p)
{
	if (sigsetjmp(env, 1))
		return 0;
	(void)*p;
	return 1;
}

static void user_write(long p)
{
	*(volatile long *)p = 42;
	user_exit(7);
}

static void user_read(long p)
{
	user_exit(*(volatile long *)p);
}

static char *page(void)
{
	char *p = mmap(NULL, PGSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	return p;
}

static long bits(char *p, ptent_t which, int clear)
{
	return clear ? kvmdune_vm_clear_bits(pgroot, p, PGSIZE, which, NULL)
		     : kvmdune_vm_read_bits(pgroot, p, PGSIZE, which, (unsigned char[1]){0});
}

static void ok(const char *name)
{
	printf("ok %s\n", name);
	fflush(stdout);
}

int main(void)
{
	struct sigaction sa = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO };
	char *p;

	sigaction(SIGSEGV, &sa, NULL);
	CHECK(test_init(1) == 0);

	/* The program view. */
	p = page();
	CHECK(can_write(p));
	CHECK(dune_vm_mprotect(pgroot, p, PGSIZE, PERM_R | PERM_U) == 0);
	CHECK(!can_write(p) && fault_addr == p);
	CHECK(can_read(p));
	CHECK(dune_vm_mprotect(pgroot, p, PGSIZE, PERM_R | PERM_W | PERM_U) == 0);
	CHECK(can_write(p));
	ok("program-write-removed");

	p = page();
	CHECK(can_write(p) && can_read(p));
	dune_vm_unmap(pgroot, p, PGSIZE);
	CHECK(!can_read(p) && fault_addr == p);
	ok("program-unmapped");

	p = page();
	CHECK(can_write(p));
	CHECK(bits(p, PTE_D, 1) == 1);
	CHECK(bits(p, PTE_D, 0) == 0);
	CHECK(can_read(p) && bits(p, PTE_D, 0) == 0);
	CHECK(can_write(p));
	CHECK(bits(p, PTE_D, 0) == 1);
	ok("program-dirty-cleared-and-set-again");

	/* A user view: pgroot's, with every page PERM_U (dune_init(1)). */
	p = page();
	CHECK(run_user(user_write, (long)p, ustack + sizeof(ustack), &tf) == USER_SYSCALL);
	CHECK(tf.rax == 7 && *(long *)p == 42);
	CHECK(dune_vm_mprotect(pgroot, p, PGSIZE, PERM_R | PERM_U) == 0);
	CHECK(run_user(user_write, (long)p, ustack + sizeof(ustack), &tf) == USER_FAULT);
	CHECK(tf.rax == (uint64_t)p && (tf.err & (FEC_W | FEC_U)) == (FEC_W | FEC_U));
	CHECK(run_user(user_read, (long)p, ustack + sizeof(ustack), &tf) == USER_SYSCALL);
	CHECK(tf.rax == 42);
	ok("user-write-removed");

	p = page();
	*(long *)p = 5;
	CHECK(run_user(user_read, (long)p, ustack + sizeof(ustack), &tf) == USER_SYSCALL);
	CHECK(tf.rax == 5);
	CHECK(dune_vm_mprotect(pgroot, p, PGSIZE, PERM_R | PERM_W) == 0);
	CHECK(run_user(user_read, (long)p, ustack + sizeof(ustack), &tf) == USER_FAULT);
	CHECK(tf.rax == (uint64_t)p);
	CHECK(can_write(p) && can_read(p));        /* the program still reaches it */
	ok("user-access-removed");

	p = page();
	*(long *)p = 6;
	CHECK(run_user(user_read, (long)p, ustack + sizeof(ustack), &tf) == USER_SYSCALL);
	dune_vm_unmap(pgroot, p, PGSIZE);
	CHECK(run_user(user_read, (long)p, ustack + sizeof(ustack), &tf) == USER_FAULT);
	CHECK(tf.rax == (uint64_t)p);
	ok("user-unmapped");

	/* A clone's user view: the frame stays the program's, so only the
	 * invalidation can take the stale translation away. */
	{
		ptent_t *clone;

		p = page();
		*(long *)p = 8;
		clone = dune_vm_clone(pgroot);      /* a clone has the pages of its time */
		CHECK(clone != NULL);
		CHECK(test_load_cr3((unsigned long)clone) == 0);
		CHECK(run_user(user_read, (long)p, ustack + sizeof(ustack), &tf) == USER_SYSCALL);
		CHECK(tf.rax == 8);
		dune_vm_unmap(clone, p, PGSIZE);
		CHECK(run_user(user_read, (long)p, ustack + sizeof(ustack), &tf) == USER_FAULT);
		CHECK(tf.rax == (uint64_t)p && can_read(p));
		CHECK(test_load_cr3((unsigned long)pgroot) == 0);
		CHECK(run_user(user_read, (long)p, ustack + sizeof(ustack), &tf) == USER_SYSCALL);
		CHECK(tf.rax == 8);
		dune_vm_free(clone);
		ok("clone-user-unmapped");
	}

	p = page();
	CHECK(run_user(user_write, (long)p, ustack + sizeof(ustack), &tf) == USER_SYSCALL);
	CHECK(bits(p, PTE_D, 1) == 1);
	CHECK(bits(p, PTE_D, 0) == 0);
	CHECK(run_user(user_read, (long)p, ustack + sizeof(ustack), &tf) == USER_SYSCALL);
	CHECK(bits(p, PTE_D, 0) == 0);
	CHECK(run_user(user_write, (long)p, ustack + sizeof(ustack), &tf) == USER_SYSCALL);
	CHECK(bits(p, PTE_D, 0) == 1);
	ok("user-dirty-cleared-and-set-again");

	printf("done\n");
	return 0;
}
