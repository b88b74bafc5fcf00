/* dune.h - the Dune API of kvmdune, source-compatible with libdune's dune.h
 * (project-dune/dune): where libdune has a function, macro or structure, this one
 * has its signature, layout and meaning. What kvmdune cannot honour is absent (the
 * page pool, procmap, the ELF helpers, dune_pop_trap_frame, which would run code at
 * CPL0) or fails with -ENOSYS; additions are named kvmdune_*.
 *
 * Compile and link with `kvmdune config`:
 *     gcc -static prog.c $(kvmdune config --cflags --libs)
 * and run with `kvmdune run -- ./prog` (started natively, dune_init re-executes the
 * program under kvmdune).
 *
 * What differs on this platform, and how each libdune meaning is kept:
 * - The program runs at CPL3 (kvmdune's VMM is its supervisor), so the privileged
 *   inline helpers (load_cr3, dune_flush_tlb, dune_flush_tlb_one) are hypercalls of
 *   the same names and effects.
 * - Handlers (page fault, exception, signal, system call of user code) run in the
 *   program at CPL3 on a handler stack of their own per thread (dune_enter makes
 *   it), with the FPU/SSE/AVX state saved around them; returning resumes at
 *   tf->rip with the frame's registers. A page fault the VMM's own demand paging
 *   resolves never reaches the handler.
 * - A fault with a handler registered (pgflt, or an intr handler for its vector)
 *   never becomes a Linux signal; without one the program gets Linux's behaviour
 *   (SIGSEGV, SIGFPE, ... to its sigaction handler, or death).
 * - Signals registered with dune_register_signal_handler arrive as vector
 *   DUNE_SIGNAL_INTR_BASE + signum whatever their Linux disposition, when not
 *   blocked by the signal mask. A signal for a sigaction handler that arrives while
 *   user code runs waits until the program itself next makes a system call.
 * - User code (dune_jump_to_user) runs at CPL3 in the root last loaded with
 *   load_cr3 (pgroot by default) and reaches only PERM_U pages there; its system
 *   calls (hypercall numbers included) reach the program's syscall handler, never
 *   the VMM. A fault, exception or system call of user code without a handler ends
 *   the process with a crash report.
 * - fork: the child inherits everything (roots, handlers, the handler stack, a
 *   user-code run in progress); calling dune_enter() again in it is harmless.
 * - execve: the new program starts without the Dune API (dune_init again).
 */
#ifndef KVMDUNE_DUNE_H
#define KVMDUNE_DUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mmu.h"
#include "kvmdune/hypercall.h"
#include "kvmdune/upcall.h"

#ifdef __cplusplus
extern "C" {
#endif

// utilities

static inline unsigned long dune_get_ticks(void)
{
	unsigned int a, d;
	__asm__ volatile("rdtsc" : "=a"(a), "=d"(d));
	return ((unsigned long)a) | (((unsigned long)d) << 32);
}

extern int dune_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern void dune_die(void) __attribute__((noreturn));
/* The FS base user code runs with (the program's own, at dune_enter). */
extern unsigned long dune_get_user_fs(void);
extern void dune_set_user_fs(unsigned long fs_base);

// fault handling

/* kvmdune's GDT has Linux's layout, as libdune's (its TSS sits elsewhere). */
#define GD_KT 0x10
#define GD_KD 0x18
#define GD_UD 0x28
#define GD_UT 0x30

struct dune_tf {
	/* manually saved, arguments */
	uint64_t rdi;
	uint64_t rsi;
	uint64_t rdx;
	uint64_t rcx;
	uint64_t r8;
	uint64_t r9;
	uint64_t r10;
	uint64_t r11;

	/* saved by C calling conventions */
	uint64_t rbx;
	uint64_t rbp;
	uint64_t r12;
	uint64_t r13;
	uint64_t r14;
	uint64_t r15;

	/* system call number, ret */
	uint64_t rax;

	/* exception frame */
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

#define ARG0(tf) ((tf)->rdi)
#define ARG1(tf) ((tf)->rsi)
#define ARG2(tf) ((tf)->rdx)
#define ARG3(tf) ((tf)->rcx)
#define ARG4(tf) ((tf)->r8)
#define ARG5(tf) ((tf)->r9)

typedef void (*dune_intr_cb)(struct dune_tf *tf);
typedef void (*dune_pgflt_cb)(uintptr_t addr, uint64_t fec, struct dune_tf *tf);
typedef void (*dune_syscall_cb)(struct dune_tf *tf);

#define DUNE_SIGNAL_INTR_BASE 200

/* vec: 0..255; exception vectors 0..31 are raised, 200 + signum are signals. */
extern int dune_register_intr_handler(int vec, dune_intr_cb cb);
extern int dune_register_signal_handler(int signum, dune_intr_cb cb);
extern void dune_register_pgflt_handler(dune_pgflt_cb cb);
extern void dune_register_syscall_handler(dune_syscall_cb cb);

/* Runs user code with tf's registers until a handler calls dune_ret_from_user(ret);
 * returns ret, with user code's final registers in tf (negative errno when it
 * cannot start: -EFAULT for a bad tf, -EINVAL before dune_enter, -EBUSY while a
 * run waits in a handler). */
extern int dune_jump_to_user(struct dune_tf *tf);
extern void dune_ret_from_user(int ret) __attribute__((noreturn));
extern void dune_dump_trap_frame(struct dune_tf *tf);
/* Makes the system call in tf (tf->rax, ARG0..ARG5) with the program's own rights;
 * the result (or -errno) goes to tf->rax. Hypercall numbers are refused: -EPERM. */
extern void dune_passthrough_syscall(struct dune_tf *tf);

/* What the VMM writes on the handler stack for an upcall (kvmdune/upcall.h). */
struct kvmdune_upcall {
	struct dune_tf tf;
	uint64_t kind;     /* KVMDUNE_TRAP_* */
	uint64_t vector;
	uint64_t addr;
	uint64_t fec;
	uint64_t flags;    /* KVMDUNE_UPCALL_FROM_USER */
	uint64_t fs_base;
	uint64_t reserved;
};

#ifdef __cplusplus
#define KVMDUNE_LAYOUT_CHECK(condition, what) static_assert(condition, what)
#else
#define KVMDUNE_LAYOUT_CHECK(condition, what) _Static_assert(condition, what)
#endif
KVMDUNE_LAYOUT_CHECK(sizeof(struct dune_tf) == KVMDUNE_TF_SIZE, "struct dune_tf layout");
KVMDUNE_LAYOUT_CHECK(offsetof(struct dune_tf, rip) == KVMDUNE_TF_RIP, "struct dune_tf layout");
KVMDUNE_LAYOUT_CHECK(offsetof(struct dune_tf, ss) == KVMDUNE_TF_SS, "struct dune_tf layout");
KVMDUNE_LAYOUT_CHECK(offsetof(struct kvmdune_upcall, flags) == KVMDUNE_UPCALL_FLAGS,
		     "struct kvmdune_upcall layout");
KVMDUNE_LAYOUT_CHECK(sizeof(struct kvmdune_upcall) == KVMDUNE_UPCALL_SIZE,
		     "struct kvmdune_upcall layout");

// hypercalls (kvmdune/hypercall.h)

/* A raw hypercall: >= 0 on success, -errno on failure; -ENOSYS outside kvmdune. */
static inline long kvmdune_hypercall(long op, long a0, long a1, long a2, long a3, long a4,
				     long a5)
{
	long ret;
	register long r10 __asm__("r10") = a3;
	register long r8 __asm__("r8") = a4;
	register long r9 __asm__("r9") = a5;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(KVMDUNE_HYPERCALL_BASE + op), "D"(a0), "S"(a1), "d"(a2),
			   "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

/* KVMDUNE_ABI_VERSION under kvmdune, -ENOSYS elsewhere. */
extern long kvmdune_probe(void);

// virtual memory

extern ptent_t *pgroot;

/* libdune's is inline over its own physical layout; here the VMM answers. */
extern uintptr_t dune_va_to_pa(void *ptr);

#define PERM_NONE    0      /* no access */
#define PERM_R       0x0001 /* read permission */
#define PERM_W       0x0002 /* write permission */
#define PERM_X       0x0004 /* execute permission */
#define PERM_U       0x0008 /* user-level permission */
#define PERM_UC      0x0010 /* make uncachable */
#define PERM_COW     0x0020 /* COW flag */
#define PERM_USR1    0x1000 /* User flag 1 */
#define PERM_USR2    0x2000 /* User flag 2 */
#define PERM_USR3    0x3000 /* User flag 3 */
#define PERM_BIG     0x0100 /* Use large pages */
#define PERM_BIG_1GB 0x0200 /* Use large pages (1GB) */

// Helper Macros
#define PERM_SCODE  (PERM_R | PERM_X)
#define PERM_STEXT  (PERM_R | PERM_W)
#define PERM_SSTACK PERM_STEXT
#define PERM_UCODE  (PERM_R | PERM_U | PERM_X)
#define PERM_UTEXT  (PERM_R | PERM_U | PERM_W)
#define PERM_USTACK PERM_UTEXT

/* `invlpg` and `mov %cr3` in libdune; a write through a dune_vm_lookup or
 * dune_vm_page_walk pointer takes effect here, once the VMM has checked it. */
static inline void dune_flush_tlb_one(unsigned long addr)
{
	kvmdune_hypercall(KVMDUNE_HC_FLUSH_TLB, (long)addr, 4096, 0, 0, 0, 0);
}

static inline void dune_flush_tlb(void)
{
	kvmdune_hypercall(KVMDUNE_HC_FLUSH_TLB, 0, 0, 0, 0, 0, 0);
}

#define CR3_NOFLUSH (1UL << 63)

/* Chooses the root user code runs in next (it never changes the program's view). */
static inline void load_cr3(unsigned long cr3)
{
	kvmdune_hypercall(KVMDUNE_HC_LOAD_CR3, (long)cr3, 0, 0, 0, 0, 0);
}

/* Define beginning and end of VA space */
#define VA_START ((void *)0)
#define VA_END   ((void *)-1)

enum {
	CREATE_NONE = 0,
	CREATE_NORMAL = 1,
	CREATE_BIG = 2,
	CREATE_BIG_1GB = 3,
};

extern int dune_vm_mprotect(ptent_t *root, void *va, size_t len, int perm);
extern int dune_vm_map_phys(ptent_t *root, void *va, size_t len, void *pa, int perm);
extern int dune_vm_map_pages(ptent_t *root, void *va, size_t len, int perm);
extern void dune_vm_unmap(ptent_t *root, void *va, size_t len);
extern int dune_vm_lookup(ptent_t *root, void *va, int create, ptent_t **pte_out);

extern ptent_t *dune_vm_clone(ptent_t *root);
extern void dune_vm_free(ptent_t *root);

typedef int (*page_walk_cb)(const void *arg, ptent_t *ptep, void *va);
extern int dune_vm_page_walk(ptent_t *root, void *start_va, void *end_va, page_walk_cb cb,
			     const void *arg);

// entry routines

/* Under kvmdune: 0, or -errno. Started natively, it re-executes the program under
 * `kvmdune run` (the program starts again from main) and returns -ENOSYS, with a
 * message on stderr, only where that cannot work. A second call with the same
 * map_full does nothing; with the other one it fails with -EBUSY. */
extern int dune_init(bool map_full);
/* Makes this thread's handler stack and registers the upcall entry: 0 or -errno. */
extern int dune_enter(void);

/**
 * dune_init_and_enter - initializes libdune and enters "Dune mode"
 *
 * Returns 0 on success, otherwise failure.
 */
static inline int dune_init_and_enter(void)
{
	int ret;

	if ((ret = dune_init(1)))
		return ret;

	return dune_enter();
}

#ifdef __cplusplus
}
#endif

#endif
