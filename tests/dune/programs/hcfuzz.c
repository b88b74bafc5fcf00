/* hcfuzz.c - hypercalls with arguments read from stdin, one call a line:
 *     OP A0 A1 A2 A3 A4 A5
 * Each value is a number (strtoull, base 0) or a symbol plus an offset: S (a
 * stack buffer), H (a heap buffer), C (code: main), R (read-only data), G (a
 * PROT_NONE page), T (the VMM's trampoline, the kernel half), N (a non-canonical
 * address), e.g. "S+8" or "H-4096". Prints "= RESULT" per call, "done" at EOF.
 * It enters Dune mode first, so every hypercall is reachable. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <dune.h>

#define PAGE 4096

static const char rodata[PAGE] = "read-only";

static unsigned long value_of(const char *token, const unsigned long *symbols)
{
	const char *letters = "SHCRGTN";
	const char *found = strchr(letters, token[0]);

	if (token[0] && found)
		return symbols[found - letters] + strtoll(token + 1, NULL, 0);
	return strtoull(token, NULL, 0);
}

int main(void)
{
	static char line[1024];
	unsigned long stack[PAGE / sizeof(unsigned long)] = {0};
	unsigned long symbols[7];
	int ret;

	setvbuf(stdout, NULL, _IONBF, 0);
	if ((ret = dune_init_and_enter())) {
		printf("dune_init_and_enter: %d\n", ret);
		return 1;
	}
	symbols[0] = (unsigned long)stack;
	symbols[1] = (unsigned long)calloc(1, 4 * PAGE);
	symbols[2] = (unsigned long)main;
	symbols[3] = (unsigned long)rodata;
	symbols[4] = (unsigned long)mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	symbols[5] = 0xffffffff80000000UL;
	symbols[6] = 0x0000800000000000UL;
	while (fgets(line, sizeof(line), stdin)) {
		unsigned long values[7] = {0};
		char *save = NULL, *token = strtok_r(line, " \t\n", &save);
		int count = 0;

		for (; token && count < 7; token = strtok_r(NULL, " \t\n", &save))
			values[count++] = value_of(token, symbols);
		if (!count)
			continue;
		printf("= %ld\n", kvmdune_hypercall((long)values[0], (long)values[1],
						    (long)values[2], (long)values[3],
						    (long)values[4], (long)values[5],
						    (long)values[6]));
	}
	printf("done\n");
	return 0;
}
