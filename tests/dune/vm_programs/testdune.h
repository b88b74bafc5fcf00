/* What the page-table test programs need from the Dune API while dune.h and the
 * library (dune-traps') are not there yet: libdune's PERM_* and vm prototypes (as
 * in dune.h), raw hypercalls for init, flush, load_cr3, and the test harness's
 * user mode (tests/dune/harness.py: JUMP_TO_USER ends at the user code's first
 * system call, fault or exception). */
#ifndef TESTDUNE_H
#define TESTDUNE_H

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mmu.h"
#include "kvmdune/hypercall.h"

#define PERM_NONE 0
#define PERM_R    0x0001
#define PERM_W    0x0002
#define PERM_X    0x0004
#define PERM_U    0x0008
#define PERM_UC   0x0010
#define PERM_COW  0x0020
#define PERM_USR1 0x1000
#define PERM_USR2 0x2000
#define PERM_BIG  0x0100
#define CR3_NOFLUSH (1UL << 63)
#define VA_START ((void *)0)
#define VA_END   ((void *)-1)

typedef int (*page_walk_cb)(const void *arg, ptent_t *ptep, void *va);
int dune_vm_mprotect(ptent_t *root, void *va, size_t len, int perm);
int dune_vm_map_phys(ptent_t *root, void *va, size_t len, void *pa, int perm);
int dune_vm_map_pages(ptent_t *root, void *va, size_t len, int perm);
void dune_vm_unmap(ptent_t *root, void *va, size_t len);
int dune_vm_lookup(ptent_t *root, void *va, int create, ptent_t **pte_out);
int dune_vm_page_walk(ptent_t *root, void *start_va, void *end_va, page_walk_cb cb,
		      const void *arg);
ptent_t *dune_vm_clone(ptent_t *root);
void dune_vm_free(ptent_t *root);
uintptr_t dune_va_to_pa(void *ptr);

static inline long hc(long op, long a0, long a1, long a2, long a3, long a4, long a5)
{
	long ret;
	register long r10 __asm__("r10") = a3;
	register long r8 __asm__("r8") = a4;
	register long r9 __asm__("r9") = a5;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(KVMDUNE_HYPERCALL_BASE + op), "D"(a0), "S"(a1), "d"(a2), "r"(r10),
			   "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

static ptent_t *pgroot;

static inline int test_init(int map_full)
{
	long ret = hc(KVMDUNE_HC_INIT, map_full, 0, 0, 0, 0, 0);

	if (ret < 0)
		return (int)ret;
	pgroot = (ptent_t *)ret;
	return 0;
}

static inline long flush_tlb(void)
{
	return hc(KVMDUNE_HC_FLUSH_TLB, 0, 0, 0, 0, 0, 0);
}

static inline long flush_tlb_one(void *va)
{
	return hc(KVMDUNE_HC_FLUSH_TLB, (long)va, 1, 0, 0, 0, 0);
}

static inline long load_cr3(unsigned long cr3)
{
	return hc(KVMDUNE_HC_LOAD_CR3, (long)cr3, 0, 0, 0, 0, 0);
}

/* libdune's struct dune_tf (packed). */
struct dune_tf {
	uint64_t rdi, rsi, rdx, rcx, r8, r9, r10, r11;
	uint64_t rbx, rbp, r12, r13, r14, r15;
	uint64_t rax;
	uint32_t err;
	uint32_t pad1;
	uint64_t rip;
	uint16_t cs;
	uint16_t pad2[3];
	uint64_t rflags;
	uint64_t rsp;
	uint16_t ss;
	uint16_t pad3[3];
} __attribute__((packed));

enum { USER_SYSCALL = 0, USER_FAULT = 1, USER_EXCEPTION = 2 };

/* Run fn(arg) as user code on `stack` (its top) in the current root; what ended it
 * (USER_*), with tf->rax the code's value (or the fault address), tf->err the
 * error code. */
static inline long run_user(void (*fn)(long), long arg, void *stack_top, struct dune_tf *tf)
{
	memset(tf, 0, sizeof(*tf));
	tf->rip = (uint64_t)fn;
	tf->rsp = ((uint64_t)stack_top & ~15UL) - 8;
	tf->rdi = (uint64_t)arg;
	return hc(KVMDUNE_HC_JUMP_TO_USER, (long)tf, 0, 0, 0, 0, 0);
}

/* User code ends by a system call whose number is its result. */
static inline __attribute__((noreturn)) void user_exit(long value)
{
	__asm__ volatile("syscall" : : "a"(value) : "rcx", "r11", "memory");
	__builtin_unreachable();
}

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
			fflush(stdout);                                              \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

#endif
