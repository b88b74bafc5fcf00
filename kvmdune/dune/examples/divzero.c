/* divzero.c - catching a divide-by-zero with dune_register_intr_handler and
 * skipping the instruction (a Dune API example, built and run by tests/dune).
 *
 *     gcc -static -O1 -o divzero divzero.c $(kvmdune config --cflags --libs)
 *     kvmdune run -- ./divzero        # or ./divzero: it re-runs itself under kvmdune
 *
 * The handler gets the registers of the faulting instruction in its dune_tf;
 * advancing tf->rip past the `div` (3 bytes: REX.W, opcode, ModRM with a register
 * operand) resumes after it, with RAX as the handler set it.
 */
#include <stdio.h>
#include <stdlib.h>

#include <dune.h>

#define T_DIVIDE 0
#define DIV_LENGTH 3            /* div %rcx: 48 f7 f1 */
#define SKIPPED_QUOTIENT 42

static volatile int caught;

static void on_divide_error(struct dune_tf *tf)
{
	caught++;
	tf->rax = SKIPPED_QUOTIENT;
	tf->rip += DIV_LENGTH;
}

static long divide(long dividend, long divisor)
{
	long quotient;

	__asm__ volatile("xor %%edx, %%edx\n\t"
			 "div %%rcx"
			 : "=a"(quotient)
			 : "a"(dividend), "c"(divisor)
			 : "rdx");
	return quotient;
}

int main(int argc, char **argv)
{
	long divisor = argc > 1 ? atol(argv[1]) : 0;
	int ret;

	if ((ret = dune_init_and_enter())) {
		fprintf(stderr, "divzero: cannot enter Dune mode (%d)\n", ret);
		return 1;
	}
	if ((ret = dune_register_intr_handler(T_DIVIDE, on_divide_error))) {
		fprintf(stderr, "divzero: cannot register the handler (%d)\n", ret);
		return 1;
	}
	printf("84 / %ld = %ld\n", divisor, divide(84, divisor));
	printf("caught %d divide error(s)\n", caught);
	return 0;
}
