/* Mirror entries read and written through dune_vm_lookup's pointer: what they show,
 * writes applied at the flush (and seen by the program at once), and the refused
 * ones restored (a frame not the program's: a supervisor frame, a frame it gave
 * back; more rights than a read-only file mapping has; a directory entry). Then
 * the window itself: listed in /proc/self/maps, sealed against the program's
 * munmap, mprotect, MAP_FIXED and MADV_DONTNEED. Prints "ok NAME" per check. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testdune.h"

static sigjmp_buf env;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(env, 1);
}

static int can_write(volatile char *p)
{
	if (sigsetjmp(env, 1))
		return 0;
	*p = *p;
	return 1;
}

static int can_read(volatile char *p)
{
	if (sigsetjmp(env, 1))
		return 0;
	(void)*p;
	return 1;
}

static char *page(void)
{
	char *p = mmap(NULL, PGSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	return p;
}

static ptent_t *entry_of(void *va)
{
	ptent_t *pte = NULL;

	CHECK(dune_vm_lookup(pgroot, va, 0, &pte) == 0 && pte != NULL);
	return pte;
}

static void ok(const char *name)
{
	printf("ok %s\n", name);
	fflush(stdout);
}

/* The [dune-pagetables] line of /proc/self/maps: its start and end. */
static int window(unsigned long *start, unsigned long *end)
{
	char line[512];
	FILE *maps = fopen("/proc/self/maps", "r");
	int found = 0;

	CHECK(maps != NULL);
	while (fgets(line, sizeof(line), maps))
		if (strstr(line, "[dune-pagetables]") && sscanf(line, "%lx-%lx", start, end) == 2)
			found = 1;
	fclose(maps);
	return found;
}

int main(int argc, char **argv)
{
	ptent_t *pte, old;
	char *p, *q;
	(void)argc;

	signal(SIGSEGV, on_segv);
	CHECK(test_init(1) == 0);

	p = page();
	p[0] = 1;
	pte = entry_of(p);
	CHECK(PTE_ADDR(*pte) == dune_va_to_pa(p));
	CHECK((*pte & (PTE_P | PTE_W | PTE_U | PTE_D | PTE_A)) == (PTE_P | PTE_W | PTE_U | PTE_D | PTE_A));
	CHECK(*pte & PTE_NX);
	ok("entry-shows-frame-rights-and-bits");

	*pte &= ~PTE_W;
	CHECK(test_flush_tlb_one(p) == 0);
	CHECK(!can_write(p) && can_read(p));
	*pte |= PTE_W;
	CHECK(test_flush_tlb() == 0);
	CHECK(can_write(p));
	ok("write-bit-applied-at-flush");

	*pte &= ~PTE_D;
	CHECK(test_flush_tlb_one(p) == 0);
	CHECK(kvmdune_vm_read_bits(pgroot, p, PGSIZE, PTE_D, (unsigned char[1]){0}) == 0);
	p[1] = 2;
	CHECK(kvmdune_vm_read_bits(pgroot, p, PGSIZE, PTE_D, (unsigned char[1]){0}) == 1);
	pte = entry_of(p);
	CHECK(*pte & PTE_D);
	ok("dirty-bit-cleared-at-flush-and-set-again");

	/* Frames that are not the program's: the supervisor area's, the first ten
	 * of guest memory (its page tables, trampoline, descriptor tables and stacks:
	 * machine/boot.py maps them before anything else), and a frame it gave back. */
	old = *pte;
	for (uintptr_t frame = PGSIZE; frame <= 10 * PGSIZE; frame += PGSIZE) {
		*pte = frame | PTE_P | PTE_W | PTE_U;
		CHECK(test_flush_tlb() == -EPERM);
		CHECK(*pte == old);
	}
	CHECK(p[0] == 1 && p[1] == 2);
	q = page();
	q[0] = 3;
	{
		uintptr_t gone = dune_va_to_pa(q);

		CHECK(munmap(q, PGSIZE) == 0);
		*pte = gone | PTE_P | PTE_W | PTE_U;
		CHECK(test_flush_tlb_one(p) == -EPERM && *pte == old);
		CHECK(dune_vm_map_phys(pgroot, p, PGSIZE, (void *)gone, PERM_R | PERM_W) == -EPERM);
	}
	CHECK(p[0] == 1);
	ok("foreign-frames-refused-and-restored");

	/* More rights than the mapping: a read-only shared mapping of a file. */
	{
		int fd = open(argv[0], O_RDONLY);
		char *file;

		CHECK(fd >= 0);
		file = mmap(NULL, PGSIZE, PROT_READ, MAP_SHARED, fd, 0);
		CHECK(file != MAP_FAILED && file[1] == 'E');
		pte = entry_of(file);
		old = *pte;
		CHECK(!(old & PTE_W));
		*pte |= PTE_W;
		CHECK(test_flush_tlb() == -EACCES && *pte == old);
		CHECK(!can_write(file));
		CHECK(dune_vm_mprotect(pgroot, file, PGSIZE, PERM_R | PERM_W | PERM_U) == -EACCES);
		CHECK(!can_write(file));
		CHECK(dune_vm_map_phys(pgroot, p, PGSIZE, (void *)PTE_ADDR(old), PERM_R | PERM_W)
		      == -EACCES);
		close(fd);
	}
	ok("rights-beyond-the-mapping-refused");

	old = pgroot[0];
	pgroot[0] ^= PTE_W;
	CHECK(test_flush_tlb() == -EINVAL && pgroot[0] == old);
	ok("directory-entries-restored");

	/* A new entry written in place: the same frame at a second address. */
	q = page();
	CHECK(munmap(q, PGSIZE) == 0);         /* a free address */
	CHECK(dune_vm_lookup(pgroot, q, 1, &pte) == 0 && !(*pte & PTE_P));
	*pte = PTE_ADDR(dune_va_to_pa(p)) | PTE_P | PTE_W | PTE_U | PTE_NX;
	CHECK(test_flush_tlb() == 0);
	CHECK(q[0] == 1);
	q[2] = 9;
	CHECK(p[2] == 9);
	CHECK(munmap(p, PGSIZE) == 0);          /* the owner goes: so does the alias */
	CHECK(!can_read(q));
	ok("entry-written-in-place-maps-and-follows-the-owner");

	{
		unsigned long start, end;
		char *w;

		CHECK(window(&start, &end));
		w = (char *)start;
		CHECK((unsigned long)pgroot >= start && (unsigned long)pgroot < end);
		CHECK(munmap(w, PGSIZE) == -1 && errno == EPERM);
		CHECK(mprotect(w, PGSIZE, PROT_READ) == -1 && errno == EPERM);
		CHECK(madvise(w, PGSIZE, MADV_DONTNEED) == -1 && errno == EPERM);
		CHECK(mmap(w, PGSIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
		      == MAP_FAILED && errno == EPERM);
		CHECK(mremap(w, PGSIZE, 2 * PGSIZE, 0) == MAP_FAILED && errno == EPERM);
		CHECK(pgroot[0] & PTE_P);             /* still the program's to read */
		CHECK(dune_va_to_pa(w) == (uintptr_t)-EFAULT);
		CHECK(dune_vm_mprotect(pgroot, w, PGSIZE, PERM_R) == -EINVAL);
		CHECK(dune_vm_map_pages(pgroot, w, PGSIZE, PERM_R) == -EINVAL);
	}
	ok("window-sealed");

	printf("done\n");
	return 0;
}
