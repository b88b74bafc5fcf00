/* Hypercalls with arguments read from stdin, for the hypothesis fuzz
 * (test_vm_fuzz.py). Each line: an operation number and six arguments, each a hex
 * number or a token: R (pgroot), K (a clone), A+hex (in a 64-page arena of the
 * program's), W+hex (in the page-table window), B (a writable 64 KiB buffer),
 * T (the program's text), P+hex (the frame behind A+hex, or what dune_va_to_pa
 * says), E+hex+bits (that frame's address with the bits xor'ed in).
 * Operation WRITE_ENTRY (100, not a hypercall) writes through a mirror pointer:
 * (root, va, value): dune_vm_lookup(root, va, 1, &pte), then *pte = value.
 * TOUCH (101, not a hypercall): (offset, write) reads, or writes, the arena's byte
 * at offset (modulo its size; a fault ends the program as natively). DIGEST (102):
 * prints a hash of the buffer (what VM_BITS wrote there).
 * With the argument "pgroot-only", no clone is made (K is then NULL): pgroot is the
 * only root, as the native flush (vmm_native/fastsync.c) needs.
 * Prints each result as a signed number, then "done". */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "testdune.h"

#define ARENA_PAGES 64
#define WRITE_ENTRY 100
#define TOUCH 101
#define DIGEST 102
#define BUFFER_BYTES (16 * PGSIZE)

int main(int argc, char **argv);

static char *arena, *buffer;
static ptent_t *clone;
static unsigned long window;

static unsigned long offset(const char *token)
{
	return token[1] == '+' ? strtoul(token + 2, NULL, 16) : 0;
}

static unsigned long value(const char *token)
{
	char *rest;

	switch (token[0]) {
	case 'R':
		return (unsigned long)pgroot;
	case 'K':
		return (unsigned long)clone;
	case 'A':
		return (unsigned long)arena + offset(token);
	case 'W':
		return window + offset(token);
	case 'B':
		return (unsigned long)buffer + offset(token);
	case 'T':
		return (unsigned long)main;
	case 'P':
		return dune_va_to_pa(arena + offset(token));
	case 'E': {
		unsigned long page = strtoul(token + 2, &rest, 16);

		return PTE_ADDR(dune_va_to_pa(arena + page)) ^ strtoul(rest + 1, NULL, 16);
	}
	default:
		return strtoul(token, NULL, 16);
	}
}

int main(int argc, char **argv)
{
	char line[512];

	CHECK(test_init(1) == 0);
	arena = mmap(NULL, ARENA_PAGES * PGSIZE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	buffer = mmap(NULL, BUFFER_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		      -1, 0);
	CHECK(arena != MAP_FAILED && buffer != MAP_FAILED);
	memset(arena, 0x5a, ARENA_PAGES * PGSIZE);
	if (argc < 2 || strcmp(argv[1], "pgroot-only") != 0) {
		clone = dune_vm_clone(pgroot);
		CHECK(clone != NULL);
	}
	window = PGADDR((unsigned long)pgroot);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		char tokens[7][64];
		unsigned long args[7];

		if (sscanf(line, "%63s %63s %63s %63s %63s %63s %63s", tokens[0], tokens[1],
			   tokens[2], tokens[3], tokens[4], tokens[5], tokens[6]) != 7)
			continue;
		for (int i = 0; i < 7; i++)
			args[i] = value(tokens[i]);
		if (args[0] == WRITE_ENTRY) {
			ptent_t *pte;
			long ret = dune_vm_lookup((ptent_t *)args[1], (void *)args[2], 1, &pte);

			if (ret == 0)
				*pte = args[3];
			printf("%ld\n", ret);
			continue;
		}
		if (args[0] == TOUCH) {
			volatile char *at = arena + args[1] % (ARENA_PAGES * PGSIZE);

			if (args[2] & 1)
				*at += 1;
			printf("%d\n", *at);
			continue;
		}
		if (args[0] == DIGEST) {
			unsigned long hash = 14695981039346656037UL;     /* FNV-1a */

			for (unsigned long i = 0; i < BUFFER_BYTES; i++)
				hash = (hash ^ (unsigned char)buffer[i]) * 1099511628211UL;
			printf("%lx\n", hash);
			continue;
		}
		printf("%ld\n", kvmdune_hypercall((long)args[0], (long)args[1], (long)args[2],
						  (long)args[3], (long)args[4], (long)args[5],
						  (long)args[6]));
	}
	printf("done\n");
	return 0;
}
