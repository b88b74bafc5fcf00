/* trap.c - the program's handlers: registration (told to the VMM with
 * KVMDUNE_HC_SET_TRAP), the dispatch of an upcall to them, and user code:
 * dune_jump_to_user, dune_ret_from_user, dune_passthrough_syscall.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

#define IDT_ENTRIES 256
#define T_PGFLT 14
#define FIRST_NON_EXCEPTION_VECTOR 32
/* The last signal a vector can carry (DUNE_SIGNAL_INTR_BASE + 55 = 255). */
#define LAST_SIGNAL_VECTOR (IDT_ENTRIES - 1)

static dune_syscall_cb syscall_cb;
static dune_pgflt_cb pgflt_cb;
static dune_intr_cb intr_cbs[IDT_ENTRIES];

static long set_trap(long kind, long number, bool on)
{
	return kvmdune_hypercall(KVMDUNE_HC_SET_TRAP, kind, number, on, 0, 0, 0);
}

/* Page faults go to intr_cbs[T_PGFLT] if set (as libdune), else to pgflt_cb. */
static long sync_page_fault_trap(void)
{
	return set_trap(KVMDUNE_TRAP_PGFLT, T_PGFLT, pgflt_cb || intr_cbs[T_PGFLT]);
}

/* Tell the VMM whether vector vec has a handler; vectors that are neither
 * exceptions nor signals are never raised and need nothing. */
static long sync_vector_trap(int vec)
{
	if (vec == T_PGFLT)
		return sync_page_fault_trap();
	if (vec < FIRST_NON_EXCEPTION_VECTOR)
		return set_trap(KVMDUNE_TRAP_VECTOR, vec, intr_cbs[vec] != NULL);
	if (vec > DUNE_SIGNAL_INTR_BASE)
		return set_trap(KVMDUNE_TRAP_SIGNAL, vec - DUNE_SIGNAL_INTR_BASE,
				intr_cbs[vec] != NULL);
	return 0;
}

int dune_register_intr_handler(int vec, dune_intr_cb cb)
{
	dune_intr_cb previous;
	long ret;

	if (vec >= IDT_ENTRIES || vec < 0)
		return -EINVAL;
	previous = intr_cbs[vec];
	intr_cbs[vec] = cb;
	ret = sync_vector_trap(vec);
	if (ret < 0) {
		intr_cbs[vec] = previous;
		return (int)ret;
	}
	return 0;
}

int dune_register_signal_handler(int signum, dune_intr_cb cb)
{
	return dune_register_intr_handler(DUNE_SIGNAL_INTR_BASE + signum, cb);
}

void dune_register_syscall_handler(dune_syscall_cb cb)
{
	syscall_cb = cb;
	set_trap(KVMDUNE_TRAP_SYSCALL, 0, cb != NULL);
}

void dune_register_pgflt_handler(dune_pgflt_cb cb)
{
	pgflt_cb = cb;
	sync_page_fault_trap();
}

// the upcall dispatch

static const char *upcall_kind_name(uint64_t kind)
{
	switch (kind) {
	case KVMDUNE_TRAP_PGFLT:
		return "page fault";
	case KVMDUNE_TRAP_VECTOR:
		return "exception";
	case KVMDUNE_TRAP_SIGNAL:
		return "signal";
	case KVMDUNE_TRAP_SYSCALL:
		return "system call";
	}
	return "upcall";
}

static void dump_trap_frame_to(FILE *out, struct dune_tf *tf)
{
	fprintf(out, "dune: --- Begin Trap Dump ---\n");
	fprintf(out, "dune: RIP 0x%016" PRIx64 "\n", tf->rip);
	fprintf(out, "dune: CS 0x%02x SS 0x%02x\n", tf->cs, tf->ss);
	fprintf(out, "dune: ERR 0x%08" PRIx32 " RFLAGS 0x%08" PRIx64 "\n", tf->err, tf->rflags);
	fprintf(out, "dune: RAX 0x%016" PRIx64 " RCX 0x%016" PRIx64 "\n", tf->rax, tf->rcx);
	fprintf(out, "dune: RDX 0x%016" PRIx64 " RBX 0x%016" PRIx64 "\n", tf->rdx, tf->rbx);
	fprintf(out, "dune: RSP 0x%016" PRIx64 " RBP 0x%016" PRIx64 "\n", tf->rsp, tf->rbp);
	fprintf(out, "dune: RSI 0x%016" PRIx64 " RDI 0x%016" PRIx64 "\n", tf->rsi, tf->rdi);
	fprintf(out, "dune: R8  0x%016" PRIx64 " R9  0x%016" PRIx64 "\n", tf->r8, tf->r9);
	fprintf(out, "dune: R10 0x%016" PRIx64 " R11 0x%016" PRIx64 "\n", tf->r10, tf->r11);
	fprintf(out, "dune: R12 0x%016" PRIx64 " R13 0x%016" PRIx64 "\n", tf->r12, tf->r13);
	fprintf(out, "dune: R14 0x%016" PRIx64 " R15 0x%016" PRIx64 "\n", tf->r14, tf->r15);
	fprintf(out, "dune: --- End Trap Dump ---\n");
	fflush(out);
}

void dune_dump_trap_frame(struct dune_tf *tf)
{
	dump_trap_frame_to(stdout, tf);
}

/* The VMM upcalls only what SET_TRAP asked for; a frame nobody handles means the
 * program told the VMM otherwise behind the library's back. */
static void __attribute__((noreturn)) unhandled(struct kvmdune_upcall *up)
{
	fprintf(stderr, "dune: unhandled %s (vector %" PRIu64 ", address 0x%" PRIx64
		", error code 0x%" PRIx64 ")%s\n", upcall_kind_name(up->kind), up->vector,
		up->addr, up->fec, up->flags & KVMDUNE_UPCALL_FROM_USER ? " in user code" : "");
	dump_trap_frame_to(stderr, &up->tf);
	abort();
}

void kvmdune_upcall_dispatch(struct kvmdune_upcall *up)
{
	struct dune_tf *tf = &up->tf;
	bool from_user = up->flags & KVMDUNE_UPCALL_FROM_USER;
	dune_intr_cb intr = up->vector < IDT_ENTRIES ? intr_cbs[up->vector] : NULL;

	if (from_user)
		kvmdune_self.user_fs = up->fs_base;
	switch (up->kind) {
	case KVMDUNE_TRAP_SYSCALL:
		if (!syscall_cb)
			unhandled(up);
		syscall_cb(tf);
		break;
	case KVMDUNE_TRAP_PGFLT:
		if (intr_cbs[T_PGFLT])
			intr_cbs[T_PGFLT](tf);
		else if (pgflt_cb)
			pgflt_cb(up->addr, up->fec, tf);
		else
			unhandled(up);
		break;
	case KVMDUNE_TRAP_VECTOR:
	case KVMDUNE_TRAP_SIGNAL:
		if (!intr)
			unhandled(up);
		intr(tf);
		break;
	default:
		unhandled(up);
	}
	if (from_user)
		up->fs_base = kvmdune_self.user_fs;   /* dune_set_user_fs in the handler */
}

void kvmdune_resume_failed(long error)
{
	fprintf(stderr, "dune: the VMM refused to resume user code after its handler "
		"(error %ld): the frame's tf is not readable\n", error);
	abort();
}

// user code

int dune_jump_to_user(struct dune_tf *tf)
{
	/* User code leaves the FPU/SSE/AVX registers as it likes: the program's own
	 * come back as they were (control words included). */
	unsigned char *area = __builtin_alloca(kvmdune_fpu_area_size + KVMDUNE_FPU_ALIGN);
	void *aligned = (void *)(((uintptr_t)area + KVMDUNE_FPU_ALIGN - 1)
				 & ~(uintptr_t)(KVMDUNE_FPU_ALIGN - 1));
	long ret;

	if (!kvmdune_fpu_area_size)
		return -EINVAL;          /* dune_enter was not called */
	kvmdune_fpu_save(aligned);
	ret = kvmdune_hypercall(KVMDUNE_HC_JUMP_TO_USER, (long)tf, (long)kvmdune_self.user_fs,
				0, 0, 0, 0);
	kvmdune_fpu_restore(aligned);
	return (int)ret;
}

void dune_ret_from_user(int ret)
{
	long error = kvmdune_hypercall(KVMDUNE_HC_RET_FROM_USER, ret, 0, 0, 0, 0, 0);

	fprintf(stderr, "dune: dune_ret_from_user(%d) outside a handler running for user "
		"code (error %ld)\n", ret, error);
	abort();
}

static bool is_hypercall_number(uint64_t number)
{
	/* The low 32 bits: what a Linux kernel of either kind of syscall entry reads. */
	uint32_t low = (uint32_t)number;

	return low >= KVMDUNE_HYPERCALL_BASE
	       && low < KVMDUNE_HYPERCALL_BASE + KVMDUNE_HYPERCALL_COUNT;
}

void dune_passthrough_syscall(struct dune_tf *tf)
{
	long ret;
	register long r10 __asm__("r10") = (long)ARG3(tf);
	register long r8 __asm__("r8") = (long)ARG4(tf);
	register long r9 __asm__("r9") = (long)ARG5(tf);

	/* The call runs with the program's rights: user code never gets a hypercall. */
	if (is_hypercall_number(tf->rax)) {
		tf->rax = (uint64_t)-EPERM;
		return;
	}
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(tf->rax), "D"(ARG0(tf)), "S"(ARG1(tf)), "d"(ARG2(tf)), "r"(r10),
			   "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	tf->rax = (uint64_t)ret;
}
