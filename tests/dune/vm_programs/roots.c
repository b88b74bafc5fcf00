/* Roots seen by user code: dune_init(0) grants nothing; PERM_U grants a page to
 * user code only; a clone changes only its own user view; load_cr3 chooses the
 * root user code runs in (CR3_NOFLUSH: written entries wait for a flush);
 * dune_vm_map_pages and dune_vm_map_phys in a clone; unknown and freed roots are
 * EINVAL. Prints "ok NAME" per check. */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "testdune.h"

static char ustack[4 * PGSIZE] __attribute__((aligned(PGSIZE)));
static struct dune_tf tf;

static void user_write(long p)
{
	*(volatile long *)p = 42;
	user_exit(7);
}

static void user_read(long p)
{
	user_exit(*(volatile long *)p);
}

static long as_user(void (*fn)(long), void *p)
{
	return run_user(fn, (long)p, ustack + sizeof(ustack), &tf);
}

static char *page(void)
{
	char *p = mmap(NULL, PGSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	return p;
}

static void ok(const char *name)
{
	printf("ok %s\n", name);
	fflush(stdout);
}

int main(void)
{
	char *d, *e, *x, *y;
	uintptr_t low = (uintptr_t)user_write < (uintptr_t)user_read ? (uintptr_t)user_write
								 : (uintptr_t)user_read;
	uintptr_t high = (uintptr_t)user_write ^ (uintptr_t)user_read ^ low;
	ptent_t *clone, *pte;

	CHECK(test_init(0) == 0);
	d = page();
	e = page();
	*(long *)d = 5;
	*(long *)e = 6;

	/* dune_init(0): nothing is the user's, not even its code. */
	CHECK(as_user(user_read, d) == USER_FAULT && tf.rax == (uint64_t)user_read);
	/* The user code's pages (a text page: r-x, so PERM_W would be EACCES). */
	CHECK(dune_vm_mprotect(pgroot, (void *)low, high + 64 - low,
			       PERM_R | PERM_W | PERM_X | PERM_U) == -EACCES);
	CHECK(dune_vm_mprotect(pgroot, (void *)low, high + 64 - low, PERM_R | PERM_X | PERM_U) == 0);
	CHECK(dune_vm_mprotect(pgroot, ustack, sizeof(ustack), PERM_R | PERM_W | PERM_U) == 0);
	CHECK(as_user(user_read, d) == USER_FAULT && tf.rax == (uint64_t)d);
	CHECK(tf.err & FEC_U);
	CHECK(dune_vm_mprotect(pgroot, d, PGSIZE, PERM_R | PERM_U) == 0);
	CHECK(as_user(user_read, d) == USER_SYSCALL && tf.rax == 5);
	CHECK(as_user(user_write, d) == USER_FAULT && tf.rax == (uint64_t)d);
	CHECK(tf.err & FEC_W);
	CHECK(*(volatile long *)d == 5);        /* pgroot's rights are the program's too */
	ok("perm-u-grants-user-code-only");

	/* A clone: its own changes, its own user view. */
	clone = dune_vm_clone(pgroot);
	CHECK(clone != NULL && clone != pgroot);
	CHECK(dune_vm_mprotect(clone, d, PGSIZE, PERM_R | PERM_W | PERM_U) == 0);
	CHECK(as_user(user_write, d) == USER_FAULT);             /* pgroot: still R */
	CHECK(test_load_cr3((unsigned long)clone) == 0);
	CHECK(as_user(user_write, d) == USER_SYSCALL && *(long *)d == 42);
	CHECK(test_load_cr3((unsigned long)pgroot) == 0);
	CHECK(as_user(user_write, d) == USER_FAULT);
	ok("clone-changes-only-its-own-view");

	/* CR3_NOFLUSH: an entry written in the clone waits for a flush. */
	CHECK(dune_vm_lookup(clone, d, 0, &pte) == 0 && (*pte & PTE_U));
	*pte &= ~PTE_U;
	CHECK(test_load_cr3((unsigned long)clone | CR3_NOFLUSH) == 0);
	CHECK(as_user(user_read, d) == USER_SYSCALL && tf.rax == 42);
	CHECK(test_load_cr3((unsigned long)clone) == 0);
	CHECK(as_user(user_read, d) == USER_FAULT);
	ok("load-cr3-noflush-defers-the-flush");

	/* Fresh pages and another frame's page, in the clone only. */
	x = page();
	CHECK(munmap(x, PGSIZE) == 0);           /* a free address in the program */
	y = x;
	CHECK(dune_vm_map_pages(clone, x, PGSIZE, PERM_R | PERM_W | PERM_U) == 0);
	CHECK(as_user(user_read, x) == USER_SYSCALL && tf.rax == 0);
	CHECK(as_user(user_write, x) == USER_SYSCALL);
	CHECK(as_user(user_read, x) == USER_SYSCALL && tf.rax == 42);
	CHECK(dune_vm_map_phys(clone, y + PGSIZE, PGSIZE, (void *)dune_va_to_pa(e),
			       PERM_R | PERM_U) == 0);
	CHECK(as_user(user_read, y + PGSIZE) == USER_SYSCALL && tf.rax == 6);
	CHECK(as_user(user_write, y + PGSIZE) == USER_FAULT);
	CHECK(test_load_cr3((unsigned long)pgroot) == 0);
	CHECK(as_user(user_read, x) == USER_FAULT);
	ok("map-pages-and-map-phys-in-a-clone");

	/* Handles: unknown ones are EINVAL; a freed clone is gone; pgroot stays. */
	CHECK(test_load_cr3((unsigned long)clone + PGSIZE) == -EINVAL);
	CHECK(dune_vm_mprotect((ptent_t *)d, d, PGSIZE, PERM_R) == -EINVAL);
	CHECK(test_load_cr3((unsigned long)clone) == 0);
	dune_vm_free(clone);
	CHECK(dune_vm_mprotect(clone, d, PGSIZE, PERM_R) == -EINVAL);
	CHECK(test_load_cr3((unsigned long)clone) == -EINVAL);
	CHECK(as_user(user_read, d) == USER_SYSCALL && tf.rax == 42);   /* back in pgroot */
	dune_vm_free(pgroot);
	CHECK(dune_vm_mprotect(pgroot, d, PGSIZE, PERM_R | PERM_U) == 0);
	ok("unknown-and-freed-roots");

	printf("done\n");
	return 0;
}
