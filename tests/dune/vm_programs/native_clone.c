/* dune_vm_mprotect and kvmdune_vm_read_bits/clear_bits on a root made by
 * dune_vm_clone, which the native code serves too (vmm_native/fastvm.c, fastbits.c),
 * seen from user code running in the clone (load_cr3) and from the program:
 *   - a write removed from the clone faults in user code at once, every round, and
 *     comes back; the program's own view (pgroot's) keeps its rights;
 *   - the clone's dirty bits are its user view's: user code's writes, not the
 *     program's; a clear is seen by the next write;
 *   - Linux's mprotect of the frame's page lowers what the clone may be given (the
 *     native path's recorded ceiling is forgotten): EACCES, as the VMM says;
 *   - a freed clone's handle is EINVAL, served natively or not.
 * Under tests/dune/vmm.py --tool ...native_sync_tool: "native served N", what the
 * native code answered. Prints "ok NAME" per check, then "done". */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "testdune.h"

#define PAGE 4096UL
#define PAGES 16
#define ROUNDS 20
#define TOOL 63
#define SERVED 2

static char ustack[4 * PGSIZE] __attribute__((aligned(PGSIZE)));
static struct dune_tf tf;
static volatile char *area;
static ptent_t *clone;

static void user_write(long p)
{
	*(volatile char *)p += 1;
	user_exit(7);
}

static long as_user(void (*fn)(long), volatile char *p)
{
	return run_user(fn, (long)p, ustack + sizeof(ustack), &tf);
}

/* The clone's pages of the area with `bits` since its last clear, as a mask. */
static long clone_bits(ptent_t bits, int clear)
{
	unsigned char map[PAGES / 8];
	long count = clear ? kvmdune_vm_clear_bits(clone, (void *)area, PAGES * PAGE, bits, map)
			   : kvmdune_vm_read_bits(clone, (void *)area, PAGES * PAGE, bits, map);

	CHECK(count >= 0);
	CHECK(__builtin_popcount(map[0] | map[1] << 8) == count);
	return map[0] | map[1] << 8;
}

static void protect_rounds(void)
{
	for (int r = 0; r < ROUNDS; r++) {
		volatile char *p = area + (r % 4) * PAGE;

		CHECK(dune_vm_mprotect(clone, (void *)p, PAGE, PERM_R | PERM_U) == 0);
		CHECK(as_user(user_write, p) == USER_FAULT && tf.rax == (uint64_t)p);
		p[0] = (char)r;                 /* the program's view keeps its rights */
		CHECK(dune_vm_mprotect(clone, (void *)p, PAGE, PERM_R | PERM_W | PERM_U) == 0);
		CHECK(as_user(user_write, p) == USER_SYSCALL && p[0] == (char)(r + 1));
	}
	printf("ok clone-write-removed-and-given-back\n");
}

static void bits_rounds(void)
{
	clone_bits(PTE_D | PTE_A, 1);
	for (int r = 0; r < ROUNDS; r++) {
		int q = (r * 3 + 1) % PAGES, own = (r * 5 + 2) % PAGES;

		CHECK(as_user(user_write, area + q * PAGE) == USER_SYSCALL);
		area[own * PAGE] = 1;           /* the program's write: not the clone's */
		CHECK(clone_bits(PTE_D, 0) == 1L << q);
		CHECK(clone_bits(PTE_D, 1) == 1L << q);
		CHECK(clone_bits(PTE_D, 0) == 0);
		CHECK(as_user(user_write, area + q * PAGE) == USER_SYSCALL);
		CHECK(clone_bits(PTE_D | PTE_A, 1) == 1L << q);
	}
	printf("ok clone-dirty-bits-are-its-user-views\n");
}

static void linux_lowers_the_ceiling(void)
{
	volatile char *p = area + 3 * PAGE;

	CHECK(dune_vm_mprotect(clone, (void *)p, PAGE, PERM_R | PERM_W | PERM_U) == 0);
	CHECK(dune_vm_mprotect(clone, (void *)p, PAGE, PERM_R | PERM_U) == 0);
	CHECK(mprotect((void *)p, PAGE, PROT_READ) == 0);
	CHECK(dune_vm_mprotect(clone, (void *)p, PAGE, PERM_R | PERM_W | PERM_U) == -EACCES);
	CHECK(as_user(user_write, p) == USER_FAULT);
	CHECK(mprotect((void *)p, PAGE, PROT_READ | PROT_WRITE) == 0);
	CHECK(dune_vm_mprotect(clone, (void *)p, PAGE, PERM_R | PERM_W | PERM_U) == 0);
	CHECK(as_user(user_write, p) == USER_SYSCALL);
	printf("ok linux-mprotect-lowers-the-clones-ceiling\n");
}

static void freed_clone(void)
{
	ptent_t *other = dune_vm_clone(pgroot);

	CHECK(other != NULL);
	CHECK(dune_vm_mprotect(other, (void *)area, PAGE, PERM_R | PERM_U) == 0);
	CHECK(dune_vm_mprotect(other, (void *)area, PAGE, PERM_R | PERM_U) == 0);
	dune_vm_free(other);
	CHECK(dune_vm_mprotect(other, (void *)area, PAGE, PERM_R | PERM_U) == -EINVAL);
	CHECK(kvmdune_vm_read_bits(other, (void *)area, PAGE, PTE_D, NULL) == -EINVAL);
	printf("ok freed-clone-is-unknown\n");
}

int main(int argc, char **argv)
{
	CHECK(test_init(1) == 0);
	area = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	CHECK(area != MAP_FAILED);
	for (int i = 0; i < PAGES; i++)
		area[i * PAGE] = 1;
	clone = dune_vm_clone(pgroot);
	CHECK(clone != NULL && test_load_cr3((unsigned long)clone) == 0);
	protect_rounds();
	bits_rounds();
	linux_lowers_the_ceiling();
	freed_clone();
	if (argc > 1)
		printf("native served %ld\n", kvmdune_hypercall(TOOL, SERVED, 0, 0, 0, 0, 0));
	printf("done\n");
	return 0;
}
