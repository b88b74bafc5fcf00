/* What the page-table test programs share, on top of the real API (dune.h and the
 * library, under `kvmdune run`): init and enter, flushes and load_cr3 that return
 * the hypercall's result (libdune's return nothing, and the tests check refusals),
 * and a run of user code that ends at its first system call or page fault:
 *
 *   run_user(fn, arg, stack_top, tf): fn(arg) as user code (dune_jump_to_user) in
 *   the root last loaded; USER_SYSCALL when it made a system call (tf->rax: its
 *   number, the value user_exit passed), USER_FAULT when it faulted (tf->rax: the
 *   address, tf->err: the error code, tf->rip: where). Page faults go to the
 *   program's handler only during the run: the program's own faults are Linux's
 *   (SIGSEGV), as the tests' sigaction handlers expect. */
#ifndef TESTDUNE_H
#define TESTDUNE_H

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dune.h>

enum { USER_SYSCALL = 0, USER_FAULT = 1 };

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
			fflush(stdout);                                              \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

static volatile uint64_t test_fault_addr, test_fault_fec;

static void test_on_syscall(struct dune_tf *tf)
{
	(void)tf;
	dune_ret_from_user(USER_SYSCALL);
}

static void test_on_page_fault(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)tf;
	test_fault_addr = addr;
	test_fault_fec = fec;
	dune_ret_from_user(USER_FAULT);
}

static inline int test_init(int map_full)
{
	int ret = dune_init(map_full);

	if (ret == 0)
		ret = dune_enter();
	if (ret == 0)
		dune_register_syscall_handler(test_on_syscall);
	return ret;
}

static inline long test_flush_tlb(void)
{
	return kvmdune_hypercall(KVMDUNE_HC_FLUSH_TLB, 0, 0, 0, 0, 0, 0);
}

static inline long test_flush_tlb_one(void *va)
{
	return kvmdune_hypercall(KVMDUNE_HC_FLUSH_TLB, (long)va, 1, 0, 0, 0, 0);
}

static inline long test_load_cr3(unsigned long cr3)
{
	return kvmdune_hypercall(KVMDUNE_HC_LOAD_CR3, (long)cr3, 0, 0, 0, 0, 0);
}

static inline long run_user(void (*fn)(long), long arg, void *stack_top, struct dune_tf *tf)
{
	int ret;

	memset(tf, 0, sizeof(*tf));
	tf->rip = (uint64_t)fn;
	tf->rsp = ((uint64_t)stack_top & ~15UL) - 8;
	tf->rdi = (uint64_t)arg;
	dune_register_pgflt_handler(test_on_page_fault);
	ret = dune_jump_to_user(tf);
	dune_register_pgflt_handler(NULL);
	if (ret == USER_FAULT) {
		tf->rax = test_fault_addr;
		tf->err = (uint32_t)test_fault_fec;
	}
	return ret;
}

/* User code ends by a system call whose number is its result. */
static inline __attribute__((noreturn)) void user_exit(long value)
{
	__asm__ volatile("syscall" : : "a"(value) : "rcx", "r11", "memory");
	__builtin_unreachable();
}

#endif
