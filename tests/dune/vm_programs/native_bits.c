/* kvmdune_vm_read_bits / kvmdune_vm_clear_bits on pgroot, the way the native path
 * serves them (vmm_native/fastbits.c) and the VMM's Python path alike, seen from
 * the guest:
 *   - a dirty bit cleared is set again by the program's next write to the page, and
 *     only there (many rounds: the first goes to the VMM, the rest may be native);
 *   - likewise the accessed bit and a read;
 *   - the Dune API is one reader of the bits among others: /proc/self/pagemap's
 *     soft-dirty bits (cleared by clear_refs 4) and the Dune API's never steal
 *     each other's, whoever clears first;
 *   - a clear made on this vCPU is seen by another thread's vCPU, whose write
 *     translation of the page was warm, before the call returns: its next write
 *     sets D again;
 *   - the bitmap of a range not page-aligned, with bits before and after it;
 *   - a bitmap inside the range: writing it is a write, checked before the bits are
 *     read, so its page is reported (as the VMM's Python path does);
 *   - a forked child reads and clears its own bits (the native records are its own).
 * With the argument "large" (under tests/dune/vmm.py --tool ...native_served_tool):
 * the same over a range larger than the ring's (RING_BITS_PAGES: served in the
 * vCPU's own thread after an exit), then "served N", what the native code answered.
 * Prints "ok NAME" per check, then "done". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testdune.h"

#define PAGE 4096UL
#define PAGES 64
#define ROUNDS 50
#define SOFT_DIRTY (1ULL << 55)

static volatile char *area;
static unsigned char bitmap[PAGES / 8];

/* The pages set in `bitmap` as a sorted list; their number. */
static int set_pages(int *out)
{
	int n = 0;

	for (int i = 0; i < PAGES; i++)
		if (bitmap[i / 8] & (1 << (i % 8)))
			out[n++] = i;
	return n;
}

/* The Dune API's pages of the area with `bits` since its last clear are exactly
 * `want` (count of them), read (and cleared with `clear`). */
static void expect(ptent_t bits, int clear, const int *want, int count)
{
	int got[PAGES];
	long ret;

	memset(bitmap, 0xa5, sizeof bitmap);
	ret = clear ? kvmdune_vm_clear_bits(pgroot, (void *)area, PAGES * PAGE, bits, bitmap)
		    : kvmdune_vm_read_bits(pgroot, (void *)area, PAGES * PAGE, bits, bitmap);
	if (ret != count || set_pages(got) != count || memcmp(got, want, count * sizeof *got)) {
		printf("FAIL bits %#lx: %ld pages (want %d):", (unsigned long)bits, ret, count);
		for (int i = 0; i < set_pages(got); i++)
			printf(" %d", got[i]);
		printf("\n");
		exit(1);
	}
}

static void clear_all(ptent_t bits)
{
	CHECK(kvmdune_vm_clear_bits(pgroot, (void *)area, PAGES * PAGE, bits, NULL) >= 0);
}

static void dirty_rounds(void)
{
	for (int r = 0; r < ROUNDS; r++) {
		int a = r % PAGES, b = (r * 7 + 3) % PAGES;
		int want[2] = {a < b ? a : b, a < b ? b : a};

		clear_all(PTE_D);
		area[a * PAGE] = (char)r;
		area[b * PAGE + 100] = (char)r;
		expect(PTE_D, 0, want, a == b ? 1 : 2);
		expect(PTE_D, 1, want, a == b ? 1 : 2);
		expect(PTE_D, 0, want, 0);             /* cleared: nothing until a write */
		area[a * PAGE] = (char)(r + 1);
		expect(PTE_D, 0, &a, 1);
	}
	printf("ok dirty-cleared-then-set-by-write\n");
}

static void accessed_rounds(void)
{
	for (int r = 0; r < ROUNDS; r++) {
		int a = (r * 5 + 1) % PAGES;

		clear_all(PTE_A | PTE_D);
		(void)area[a * PAGE + 8];
		expect(PTE_A, 1, &a, 1);
		expect(PTE_A | PTE_D, 0, &a, 0);
	}
	printf("ok accessed-cleared-then-set-by-read\n");
}

static int soft_dirty(int page)
{
	uint64_t entry = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	CHECK(fd >= 0);
	CHECK(pread(fd, &entry, sizeof entry,
		    ((unsigned long)area / PAGE + page) * sizeof entry) == sizeof entry);
	close(fd);
	return (entry & SOFT_DIRTY) != 0;
}

static void clear_refs(void)
{
	int fd = open("/proc/self/clear_refs", O_WRONLY);

	CHECK(fd >= 0 && write(fd, "4", 1) == 1);
	close(fd);
}

static void readers_rounds(void)
{
	for (int r = 0; r < ROUNDS / 5; r++) {
		int both[2] = {5, 6}, seven = 7;

		clear_all(PTE_D);
		clear_refs();
		area[5 * PAGE] = 1;
		area[6 * PAGE] = 1;
		clear_refs();                          /* pagemap's clear: the Dune API keeps its */
		expect(PTE_D, 1, both, 2);
		CHECK(!soft_dirty(5) && !soft_dirty(6));
		area[7 * PAGE] = 1;
		CHECK(soft_dirty(7) && !soft_dirty(5));
		expect(PTE_D, 1, &seven, 1);           /* the Dune API's clear: pagemap keeps its */
		CHECK(soft_dirty(7));
	}
	printf("ok readers-keep-their-own-bits\n");
}

enum { IDLE, WRITE, QUIT };
static volatile int command, answered;

static void *writer(void *arg)
{
	(void)arg;
	for (;;) {
		int seen;

		while ((seen = command) == IDLE)
			__builtin_ia32_pause();
		if (seen == QUIT)
			return NULL;
		area[9 * PAGE] += 1;
		command = IDLE;
		answered = 1;
	}
}

static void order_write(void)
{
	answered = 0;
	command = WRITE;
	while (!answered)
		__builtin_ia32_pause();
}

static void other_vcpu_rounds(void)
{
	pthread_t other;
	int nine = 9;

	CHECK(pthread_create(&other, NULL, writer, NULL) == 0);
	for (int r = 0; r < ROUNDS; r++) {
		order_write();                         /* warm: its vCPU writes the page */
		clear_all(PTE_D);
		order_write();                         /* must set D again */
		expect(PTE_D, 0, &nine, 1);
	}
	command = QUIT;
	CHECK(pthread_join(other, NULL) == 0);
	printf("ok other-vcpu-write-after-clear-seen\n");
}

/* A range from the middle of page 2 to the middle of page 12: 11 pages, bits
 * beyond them in the last byte untouched by a clear and zero. */
static void unaligned_range(void)
{
	unsigned char out[4];
	long ret;

	clear_all(PTE_D);
	area[3 * PAGE] = 1;
	area[12 * PAGE + 5] = 1;
	area[13 * PAGE] = 1;
	memset(out, 0xff, sizeof out);
	ret = kvmdune_vm_read_bits(pgroot, (void *)(area + 2 * PAGE + 100), 10 * PAGE, PTE_D, out);
	CHECK(ret == 2);
	CHECK(out[0] == 0x02 && out[1] == 0x04 && out[2] == 0xff);
	printf("ok unaligned-range\n");
}

static void bitmap_inside(void)
{
	unsigned char *inside = (unsigned char *)area + 20 * PAGE + 64;
	int want[2] = {4, 20};

	for (int r = 0; r < ROUNDS / 5; r++) {
		clear_all(PTE_D);
		area[4 * PAGE] = 1;
		CHECK(kvmdune_vm_read_bits(pgroot, (void *)area, PAGES * PAGE, PTE_D, inside) == 2);
		memcpy(bitmap, inside, sizeof bitmap);
		CHECK(bitmap[0] == 1 << 4 && bitmap[2] == 1 << 4 && bitmap[1] == 0);
		expect(PTE_D, 1, want, 2);
	}
	printf("ok bitmap-inside-the-range\n");
}

static void forked_child(void)
{
	int status, three = 3;
	pid_t child = fork();

	CHECK(child >= 0);
	if (child == 0) {
		for (int r = 0; r < ROUNDS / 5; r++) {
			clear_all(PTE_D);
			area[3 * PAGE] = (char)r;
			expect(PTE_D, 1, &three, 1);
			expect(PTE_D, 0, &three, 0);
		}
		_exit(0);
	}
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	clear_all(PTE_D);
	area[3 * PAGE] = 1;
	expect(PTE_D, 1, &three, 1);
	printf("ok forked-child\n");
}

#define TOOL 63
#define LARGE_PAGES 32768UL                    /* 128 MiB: twice the ring's */

static void large_range(void)
{
	static unsigned char large[LARGE_PAGES / 8];
	volatile char *big = mmap(NULL, LARGE_PAGES * PAGE, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long before;

	CHECK(big != MAP_FAILED);
	for (unsigned long i = 0; i < LARGE_PAGES; i += 1000)
		big[i * PAGE] = 1;
	CHECK(kvmdune_vm_clear_bits(pgroot, (void *)big, LARGE_PAGES * PAGE, PTE_D, NULL) >= 33);
	before = kvmdune_hypercall(TOOL, 0, 0, 0, 0, 0, 0);
	for (int r = 0; r < ROUNDS / 5; r++) {
		unsigned long a = 1000UL * r + 7, b = LARGE_PAGES - 1 - r;

		big[a * PAGE] = 2;
		big[b * PAGE] = 2;
		memset(large, 0x5a, sizeof large);
		CHECK(kvmdune_vm_clear_bits(pgroot, (void *)big, LARGE_PAGES * PAGE, PTE_D,
					    large) == 2);
		for (unsigned long i = 0; i < LARGE_PAGES; i++)
			CHECK(!!(large[i / 8] & (1 << (i % 8))) == (i == a || i == b));
		CHECK(kvmdune_vm_read_bits(pgroot, (void *)big, LARGE_PAGES * PAGE, PTE_D,
					   large) == 0);
	}
	printf("ok large-range\n");
	printf("served %ld\n", before < 0 ? -1 : kvmdune_hypercall(TOOL, 0, 0, 0, 0, 0, 0) - before);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	CHECK(dune_init(1) == 0);
	if (argc > 1 && strcmp(argv[1], "large") == 0) {
		large_range();
		printf("done\n");
		return 0;
	}
	area = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		    -1, 0);
	CHECK(area != MAP_FAILED);
	for (int i = 0; i < PAGES; i++)
		area[i * PAGE] = 1;
	dirty_rounds();
	accessed_rounds();
	readers_rounds();
	other_vcpu_rounds();
	unaligned_range();
	bitmap_inside();
	forked_child();
	printf("done\n");
	return 0;
}
