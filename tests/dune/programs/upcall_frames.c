/* upcall_frames.c - upcall frames as the program's handlers see them, printed in
 * full, for tests/dune/test_native_upcalls.py to compare with the VMM's native
 * delivery on and off (KVMDUNE_NATIVE_UPCALLS). Faults are on pages the program
 * restricted through the Dune API (dune_vm_mprotect: the program's own faults),
 * exceptions are trapped vectors. One case per argument. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <unistd.h>

#include <dune.h>

#define PAGE 4096UL
#define T_UD 6
#define UD2_LENGTH 2
#define XMM_REGISTERS 16
#define USER_STACK_WORDS 2048
#define SYS_USER_EXIT 60

/* The upcall's tail after the tf (include/kvmdune/upcall.h). */
struct tail {
	uint64_t kind, vector, addr, fec, flags, fs_base, reserved;
};

static char *pages;             /* restricted pages, PERM_R */
static uintptr_t stack_top;     /* the first handler frame's end, for offsets */
static int depth, edge_faults;

static void enter(void)
{
	int ret = dune_init(1);

	if (!ret)
		ret = dune_enter();
	if (ret) {
		printf("dune init/enter: %d\n", ret);
		exit(1);
	}
}

static char *restricted_pages(int count)
{
	char *area = mmap(NULL, count * PAGE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	for (int i = 0; i < count; i++)
		area[i * PAGE] = (char)i;
	if (dune_vm_mprotect(pgroot, area, count * PAGE, PERM_R | PERM_U)) {
		printf("protect failed\n");
		exit(1);
	}
	return area;
}

static void unprotect(uintptr_t addr)
{
	dune_vm_mprotect(pgroot, (void *)(addr & ~(PAGE - 1)), PAGE, PERM_R | PERM_W | PERM_U);
}

/* Everything in the frame; addresses as offsets from where they point into. */
static void print_frame(const char *what, struct dune_tf *tf)
{
	const struct tail *tail = (const struct tail *)(tf + 1);
	uintptr_t frame = (uintptr_t)tf;

	if (!stack_top)
		stack_top = frame;
	printf("%s: frame top-%#lx\n", what, (unsigned long)(stack_top - frame));
	printf("  rdi %#lx rsi %#lx rdx %#lx rcx %#lx r8 %#lx r9 %#lx r10 %#lx r11 %#lx\n",
	       tf->rdi, tf->rsi, tf->rdx, tf->rcx, tf->r8, tf->r9, tf->r10, tf->r11);
	printf("  rbx %#lx rbp %#lx r12 %#lx r13 %#lx r14 %#lx r15 %#lx rax %#lx\n",
	       tf->rbx, tf->rbp, tf->r12, tf->r13, tf->r14, tf->r15, tf->rax);
	printf("  err %#x pad %#x rip %#lx cs %#x rflags %#lx rsp-frame %#lx ss %#x\n", tf->err,
	       tf->pad1, tf->rip, tf->cs, tf->rflags, tf->rsp - frame, tf->ss);
	printf("  kind %lu vector %lu addr-pages %#lx fec %#lx flags %#lx fs %s reserved %lu\n",
	       tail->kind, tail->vector, tail->addr - (uintptr_t)pages, tail->fec, tail->flags,
	       tail->fs_base == (uintptr_t)__builtin_thread_pointer() ? "ok" : "WRONG",
	       tail->reserved);
}

// every register of the interrupted code, and back

#define PATTERN(n) (0x1111111111111111UL * (n))

/* A write to `target` with every other register holding a pattern; 1 when all
 * the registers were as before after the handler returned. */
static int store_with_patterns(char *target)
{
	uint64_t after[15];

	__asm__ volatile(
		"push %%rbx\n\t push %%rbp\n\t push %%r12\n\t push %%r13\n\t push %%r14\n\t"
		"push %%r15\n\t push %%rdi\n\t"
		"mov %[t], %%rdi\n\t"
		"movabs $0x1111111111111111, %%rax\n\t movabs $0x2222222222222222, %%rbx\n\t"
		"movabs $0x3333333333333333, %%rcx\n\t movabs $0x4444444444444444, %%rdx\n\t"
		"movabs $0x5555555555555555, %%rsi\n\t movabs $0x6666666666666666, %%rbp\n\t"
		"movabs $0x7777777777777777, %%r8\n\t movabs $0x8888888888888888, %%r9\n\t"
		"movabs $0x9999999999999999, %%r10\n\t movabs $0xaaaaaaaaaaaaaaaa, %%r11\n\t"
		"movabs $0xbbbbbbbbbbbbbbbb, %%r12\n\t movabs $0xcccccccccccccccc, %%r13\n\t"
		"movabs $0xdddddddddddddddd, %%r14\n\t movabs $0xeeeeeeeeeeeeeeee, %%r15\n\t"
		"movb $0x42, (%%rdi)\n\t"
		"push %%rdi\n\t mov 8(%%rsp), %%rdi\n\t"     /* the saved rdi: &after */
		"mov %%rax, 0(%%rdi)\n\t mov %%rbx, 8(%%rdi)\n\t mov %%rcx, 16(%%rdi)\n\t"
		"mov %%rdx, 24(%%rdi)\n\t mov %%rsi, 32(%%rdi)\n\t mov %%rbp, 40(%%rdi)\n\t"
		"mov %%r8, 48(%%rdi)\n\t mov %%r9, 56(%%rdi)\n\t mov %%r10, 64(%%rdi)\n\t"
		"mov %%r11, 72(%%rdi)\n\t mov %%r12, 80(%%rdi)\n\t mov %%r13, 88(%%rdi)\n\t"
		"mov %%r14, 96(%%rdi)\n\t mov %%r15, 104(%%rdi)\n\t"
		"pop %%rax\n\t mov %%rax, 112(%%rdi)\n\t"
		"pop %%rdi\n\t pop %%r15\n\t pop %%r14\n\t pop %%r13\n\t pop %%r12\n\t pop %%rbp\n\t"
		"pop %%rbx\n\t"
		: : [t] "r"(target), "D"(after)
		: "rax", "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "memory", "cc");
	const uint64_t expected[14] = {PATTERN(1), PATTERN(2), PATTERN(3), PATTERN(4), PATTERN(5),
				       PATTERN(6), PATTERN(7), PATTERN(8), PATTERN(9), PATTERN(10),
				       PATTERN(11), PATTERN(12), PATTERN(13), PATTERN(14)};
	return memcmp(after, expected, sizeof expected) == 0 && after[14] == (uintptr_t)target;
}

static void show_and_unprotect(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)fec;
	print_frame("fault", tf);
	unprotect(addr);
}

static int case_registers(void)
{
	enter();
	pages = restricted_pages(1);
	dune_register_pgflt_handler(show_and_unprotect);
	int kept = store_with_patterns(pages);
	printf("registers %s, page %#x\n", kept ? "kept" : "CHANGED", pages[0]);
	return 0;
}

// a fault in a handler nests below it

static void nesting(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)fec;
	depth++;
	print_frame(depth == 1 ? "outer" : "inner", tf);
	if (depth == 1)
		pages[PAGE + 8] = 5;            /* the second page: a fault inside the handler */
	unprotect(addr);
	depth--;
}

static int case_nested(void)
{
	enter();
	pages = restricted_pages(2);
	dune_register_pgflt_handler(nesting);
	pages[16] = 9;
	printf("after: %d %d\n", pages[16], pages[PAGE + 8]);
	return 0;
}

// faults nesting until the handler stack cannot take another frame

static void fault_again(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	char line[64];
	int length;

	(void)addr;
	(void)fec;
	if (!stack_top)
		stack_top = (uintptr_t)tf;
	edge_faults++;
	length = snprintf(line, sizeof line, "depth %d frame top-%#lx\n", edge_faults,
			  (unsigned long)(stack_top - (uintptr_t)tf));
	write(1, line, length);             /* the process dies at the edge: unbuffered */
	pages[0] = 1;                       /* never unprotected: one frame deeper each time */
}

static int case_edge(void)
{
	enter();
	pages = restricted_pages(1);
	dune_register_pgflt_handler(fault_again);
	pages[0] = 1;
	printf("not reached\n");
	return 0;
}

// a trapped exception

static void skip_ud2(struct dune_tf *tf)
{
	print_frame("ud2", tf);
	tf->rip += UD2_LENGTH;
}

static int case_vector(void)
{
	enter();
	pages = restricted_pages(1);
	dune_register_intr_handler(T_UD, skip_ud2);
	__asm__ volatile("mov $0x77, %%eax\n\t ud2" ::: "rax");
	printf("after ud2\n");
	return 0;
}

// FPU/SSE state across a native upcall whose handler clobbers it

static void clobber_and_unprotect(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	unsigned int mxcsr = 0x7f80;

	(void)fec;
	(void)tf;
	__asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\t movdqa %%xmm0, %%xmm1\n\t"
			 "movdqa %%xmm0, %%xmm8\n\t movdqa %%xmm0, %%xmm15\n\t ldmxcsr %0"
			 :: "m"(mxcsr) : "xmm0", "xmm1", "xmm8", "xmm15");
	unprotect(addr);
}

static int case_fpu(void)
{
	uint8_t in[XMM_REGISTERS][16], out[XMM_REGISTERS][16];
	unsigned int mxcsr_out;

	enter();
	pages = restricted_pages(1);
	for (int r = 0; r < XMM_REGISTERS; r++)
		for (int b = 0; b < 16; b++)
			in[r][b] = (uint8_t)(r * 16 + b + 1);
	dune_register_pgflt_handler(clobber_and_unprotect);
	__asm__ volatile(
		"movdqu 0(%2), %%xmm0\n\t movdqu 16(%2), %%xmm1\n\t movdqu 128(%2), %%xmm8\n\t"
		"movdqu 240(%2), %%xmm15\n\t"
		"movb $1, (%4)\n\t"
		"movdqu %%xmm0, 0(%3)\n\t movdqu %%xmm1, 16(%3)\n\t movdqu %%xmm8, 128(%3)\n\t"
		"movdqu %%xmm15, 240(%3)\n\t stmxcsr %0\n\t"
		: "=m"(mxcsr_out), "=m"(out)
		: "r"(in), "r"(out), "r"(pages)
		: "memory", "xmm0", "xmm1", "xmm8", "xmm15");
	int same = !memcmp(in[0], out[0], 32) && !memcmp(in[8], out[8], 16)
		   && !memcmp(in[15], out[15], 16);
	printf("xmm registers %s, mxcsr %#x\n", same ? "preserved" : "CHANGED", mxcsr_out);
	return 0;
}

// a handler of user code's system call faults (natively delivered, the run
// waiting), then ends the run with dune_ret_from_user

static uint64_t user_stack[USER_STACK_WORDS] __attribute__((aligned(PAGE)));

static void user_exits(void)
{
	long ret;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(SYS_USER_EXIT), "D"(7L)
			 : "rcx", "r11", "memory");
	for (;;)
		;
}

static void syscall_handler(struct dune_tf *tf)
{
	printf("user code's system call %lu\n", tf->rax);
	pages[24] = 3;                      /* a program fault inside the handler */
	dune_ret_from_user((int)tf->rdi);
}

static int case_user(void)
{
	struct dune_tf tf;

	enter();
	pages = restricted_pages(1);
	dune_register_pgflt_handler(show_and_unprotect);
	dune_register_syscall_handler(syscall_handler);
	memset(&tf, 0, sizeof tf);
	tf.rip = (uintptr_t)user_exits;
	tf.rsp = (uintptr_t)&user_stack[USER_STACK_WORDS - 1];
	tf.rflags = 0x202;
	int ret = dune_jump_to_user(&tf);
	printf("jump_to_user returned %d, page %d\n", ret, pages[24]);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(void);
	} cases[] = {
		{"registers", case_registers}, {"nested", case_nested}, {"edge", case_edge},
		{"vector", case_vector}, {"fpu", case_fpu}, {"user", case_user},
	};

	/* The same addresses in every run (the outputs are compared): no ASLR. */
	int persona = personality(0xffffffff);
	if (persona != -1 && !(persona & ADDR_NO_RANDOMIZE)) {
		personality(persona | ADDR_NO_RANDOMIZE);
		execv("/proc/self/exe", argv);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; argc == 2 && i < sizeof cases / sizeof cases[0]; i++)
		if (!strcmp(argv[1], cases[i].name))
			return cases[i].run();
	fprintf(stderr, "usage: upcall_frames registers|nested|edge|vector|fpu|user\n");
	return 2;
}
