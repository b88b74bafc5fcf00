/* Linux's memory calls and pgroot stay coherent (Linux wins over the range it
 * touches): new mappings join pgroot with dune_init's PERM_U, munmap takes pages out
 * of pgroot and out of clones, mprotect gives the VMA's rights back (lifting a
 * Dune restriction and a dune_vm_unmap), demand paging of a large mapping works for
 * user code, and a forked child keeps the roots. argv[1] is "full" or "precise"
 * (dune_init's argument). Prints "ok NAME" per check. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testdune.h"

static sigjmp_buf env;
static char ustack[4 * PGSIZE] __attribute__((aligned(PGSIZE)));
static struct dune_tf tf;

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

static void user_read(long p)
{
	user_exit(*(volatile long *)p);
}

static long as_user(void *p)
{
	return run_user(user_read, (long)p, ustack + sizeof(ustack), &tf);
}

static char *map(size_t len, int prot)
{
	char *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	return p;
}

static ptent_t entry(void *va)
{
	ptent_t *pte;

	return dune_vm_lookup(pgroot, va, 0, &pte) == 0 ? *pte : 0;
}

static void ok(const char *name)
{
	printf("ok %s\n", name);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int full = argc > 1 && strcmp(argv[1], "full") == 0;
	ptent_t user = full ? PTE_U : 0;
	char *p, *big;
	ptent_t *clone;

	signal(SIGSEGV, on_segv);
	CHECK(test_init(full) == 0);
	if (!full) {
		CHECK(dune_vm_mprotect(pgroot, (void *)user_read, 32, PERM_R | PERM_X | PERM_U) == 0);
		CHECK(dune_vm_mprotect(pgroot, ustack, sizeof(ustack), PERM_R | PERM_W | PERM_U) == 0);
	}

	p = map(PGSIZE, PROT_READ | PROT_WRITE);
	*(long *)p = 11;
	CHECK((entry(p) & (PTE_P | PTE_W | PTE_U)) == (PTE_P | PTE_W | user));
	CHECK(PTE_ADDR(entry(p)) == dune_va_to_pa(p));
	CHECK(as_user(p) == (full ? USER_SYSCALL : USER_FAULT));
	ok("mmap-joins-pgroot-with-the-default");

	CHECK(dune_vm_mprotect(pgroot, p, PGSIZE, PERM_R | PERM_U) == 0);
	CHECK(!can_write(p));
	CHECK(mprotect(p, PGSIZE, PROT_READ | PROT_WRITE) == 0);
	CHECK((entry(p) & (PTE_W | PTE_U)) == (PTE_W | PTE_U));   /* rights back, U kept */
	CHECK(can_write(p));
	CHECK(mprotect(p, PGSIZE, PROT_READ) == 0);
	CHECK(!(entry(p) & PTE_W) && !can_write(p));
	CHECK(dune_vm_mprotect(pgroot, p, PGSIZE, PERM_R | PERM_W) == -EACCES);
	CHECK(mprotect(p, PGSIZE, PROT_READ | PROT_WRITE) == 0);
	ok("mprotect-gives-the-vma-rights");

	dune_vm_unmap(pgroot, p, PGSIZE);
	CHECK(entry(p) == 0 && !can_write(p));
	CHECK(mprotect(p, PGSIZE, PROT_READ | PROT_WRITE) == 0);
	CHECK(can_write(p) && p[8] == 0);       /* a fresh page, on demand */
	ok("mprotect-lifts-dune-unmap");

	*(long *)p = 12;
	clone = dune_vm_clone(pgroot);
	CHECK(clone != NULL);
	CHECK(dune_vm_mprotect(clone, p, PGSIZE, PERM_R | PERM_U) == 0);
	CHECK(test_load_cr3((unsigned long)clone) == 0);
	CHECK(as_user(p) == USER_SYSCALL && tf.rax == 12);
	CHECK(munmap(p, PGSIZE) == 0);
	CHECK(entry(p) == 0);
	CHECK(as_user(p) == USER_FAULT);        /* the clone lost the frame too */
	CHECK(test_load_cr3((unsigned long)pgroot) == 0);
	dune_vm_free(clone);
	ok("munmap-leaves-every-root");

	big = map(256 << 20, PROT_READ | PROT_WRITE);   /* beyond eager mapping: on demand */
	CHECK(entry(big + (100 << 20)) == 0);
	if (full) {
		CHECK(as_user(big + (100 << 20)) == USER_SYSCALL && tf.rax == 0);
		CHECK(entry(big + (100 << 20)) & PTE_U);
	}
	big[200 << 20] = 1;
	CHECK((entry(big + (200 << 20)) & (PTE_P | PTE_U)) == (PTE_P | user));
	CHECK(munmap(big, 256 << 20) == 0);
	ok("demand-paging-joins-pgroot");

	p = map(PGSIZE, PROT_READ | PROT_WRITE);
	*(long *)p = 13;
	CHECK(dune_vm_mprotect(pgroot, p, PGSIZE, PERM_R | PERM_U) == 0);
	{
		pid_t child = fork();
		int status;

		CHECK(child >= 0);
		if (child == 0) {
			/* The child has the parent's roots and restrictions, its own copy. */
			CHECK(!can_write(p));
			CHECK(dune_vm_mprotect(pgroot, p, PGSIZE, PERM_R | PERM_W | PERM_U) == 0);
			CHECK(can_write(p));
			CHECK(as_user(p) == USER_SYSCALL && tf.rax == 1);
			_exit(0);
		}
		CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status));
		CHECK(WEXITSTATUS(status) == 0);
		CHECK(!can_write(p) && *(long *)p == 13);
	}
	ok("fork-keeps-the-roots");

	printf("done\n");
	return 0;
}
