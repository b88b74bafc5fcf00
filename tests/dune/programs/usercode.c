/* usercode.c - user code run with dune_jump_to_user, one case per argument: its
 * system calls, faults, exceptions and hypercalls reach the program's handlers; a
 * handler resumes it or ends the run with dune_ret_from_user; an alarm ends an
 * endless loop. Prints what it observed, for tests/dune/test_user_code.py. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <dune.h>

#define PAGE 4096UL
#define T_BRKPT 3
#define USER_STACK_WORDS 2048
#define SYS_USER_EXIT 60
#define SYS_USER_ASK 39
#define ASK_BASE 1000

static uint64_t user_stack[USER_STACK_WORDS] __attribute__((aligned(PAGE)));
static int syscalls_seen, breakpoints;
static uint64_t first_number;

static void enter(bool map_full)
{
	int ret = dune_init(map_full);

	if (!ret)
		ret = dune_enter();
	if (ret) {
		printf("dune init/enter: %d\n", ret);
		exit(1);
	}
}

static long user_syscall(long number, long a0, long a1, long a2, long a3)
{
	long ret;
	register long r10 __asm__("r10") = a3;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(number), "D"(a0), "S"(a1), "d"(a2), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}

static void __attribute__((noreturn)) user_exit(long status)
{
	user_syscall(SYS_USER_EXIT, status, 0, 0, 0);
	for (;;)
		;
}

/* Run fn as user code on the user stack; its value, with the final registers. */
static int run_user(void (*fn)(void), struct dune_tf *tf)
{
	memset(tf, 0, sizeof(*tf));
	tf->rip = (uintptr_t)fn;
	tf->rsp = (uintptr_t)&user_stack[USER_STACK_WORDS - 1];   /* as after a call */
	tf->rflags = 0x202;
	return dune_jump_to_user(tf);
}

static void syscall_handler(struct dune_tf *tf)
{
	if (!syscalls_seen++)
		first_number = tf->rax;
	switch (tf->rax) {
	case SYS_USER_ASK:
		tf->rax = ASK_BASE + ARG0(tf) + 2 * ARG1(tf) + 3 * ARG2(tf) + 4 * ARG3(tf);
		break;
	case SYS_USER_EXIT:
		dune_ret_from_user((int)ARG0(tf));
	default:
		dune_passthrough_syscall(tf);      /* a hypercall number: refused */
	}
}

// system calls, and the program's FPU control state across the run

static void user_asks(void)
{
	unsigned int mxcsr = 0x7f80;   /* user code changes its MXCSR: not the program's */

	__asm__ volatile("ldmxcsr %0" :: "m"(mxcsr));
	user_exit(user_syscall(SYS_USER_ASK, 1, 2, 3, 4));
}

static int case_syscall(void)
{
	struct dune_tf tf;
	unsigned int mxcsr;
	int ret;

	enter(true);
	dune_register_syscall_handler(syscall_handler);
	ret = run_user(user_asks, &tf);
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	printf("returned %d after %d system calls\n", ret, syscalls_seen);
	printf("final rax %lu, rip in user code: %s\n", (unsigned long)tf.rax,
	       tf.rip - (uintptr_t)user_exit < 256 ? "yes" : "no");
	printf("program mxcsr %#x\n", mxcsr);
	return 0;
}

// an exception the handler returns from (user code resumes), then a fault

static void on_breakpoint(struct dune_tf *tf)
{
	(void)tf;
	breakpoints++;
}

static void user_breaks(void)
{
	__asm__ volatile("int3\n\t int3");
	user_exit(breakpoints);
}

static int case_resume(void)
{
	struct dune_tf tf;

	enter(true);
	dune_register_syscall_handler(syscall_handler);
	dune_register_intr_handler(T_BRKPT, on_breakpoint);
	printf("returned %d\n", run_user(user_breaks, &tf));
	return 0;
}

static volatile char *fault_address;

static void user_faults(void)
{
	user_exit(*fault_address);
}

static void end_on_fault(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	printf("user fault at the address: %s, fec %#lx, rip in user code: %s\n",
	       addr == (uintptr_t)fault_address ? "yes" : "no", (unsigned long)fec,
	       tf->rip - (uintptr_t)user_faults < 64 ? "yes" : "no");
	dune_ret_from_user(77);
}

static int case_fault(void)
{
	struct dune_tf tf;

	enter(true);
	fault_address = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dune_register_syscall_handler(syscall_handler);
	dune_register_pgflt_handler(end_on_fault);
	printf("returned %d\n", run_user(user_faults, &tf));
	return 0;
}

// a hypercall from user code reaches the program's handler, never the VMM

static void user_hypercalls(void)
{
	user_exit(user_syscall(KVMDUNE_HYPERCALL_BASE + KVMDUNE_HC_RET_FROM_USER, 5, 0, 0, 0));
}

static int case_hypercall(void)
{
	struct dune_tf tf;
	int ret;

	enter(true);
	dune_register_syscall_handler(syscall_handler);
	ret = run_user(user_hypercalls, &tf);
	printf("returned %d; the handler saw %#lx, then %d more\n", ret,
	       (unsigned long)first_number, syscalls_seen - 1);
	return 0;
}

// an endless loop, ended by an alarm

static void user_loops(void)
{
	for (;;)
		__asm__ volatile("" ::: "memory");
}

static void on_alarm(struct dune_tf *tf)
{
	printf("alarm in user code: %s\n", tf->rip - (uintptr_t)user_loops < 64 ? "yes" : "no");
	dune_ret_from_user(7);
}

static int case_loop(void)
{
	struct dune_tf tf;

	enter(true);
	dune_register_signal_handler(SIGALRM, on_alarm);
	alarm(1);
	printf("returned %d\n", run_user(user_loops, &tf));
	return 0;
}

// user code's FS base

static uint64_t user_tls[4] = {0xfeedface};

static void user_reads_fs(void)
{
	long value;

	__asm__ volatile("mov %%fs:0, %0" : "=r"(value));
	user_exit(value);
}

static int case_fs(void)
{
	struct dune_tf tf;
	unsigned long fs_before, fs_after;

	enter(true);
	syscall(SYS_arch_prctl, ARCH_GET_FS, &fs_before);
	dune_register_syscall_handler(syscall_handler);
	dune_set_user_fs((unsigned long)user_tls);
	printf("returned %#x\n", (unsigned)run_user(user_reads_fs, &tf));
	syscall(SYS_arch_prctl, ARCH_GET_FS, &fs_after);
	printf("program fs unchanged: %s, user fs kept: %s\n", fs_after == fs_before ? "yes" : "no",
	       dune_get_user_fs() == (unsigned long)user_tls ? "yes" : "no");
	return 0;
}

// what the program cannot do

static void nested_jump(struct dune_tf *tf)
{
	struct dune_tf inner;

	(void)tf;
	printf("jump from a handler: %d\n", run_user(user_loops, &inner));
	dune_ret_from_user(1);
}

static int case_busy(void)
{
	struct dune_tf tf;

	enter(true);
	dune_register_syscall_handler(nested_jump);
	printf("returned %d\n", run_user(user_hypercalls, &tf));
	return 0;
}

/* A handler of the program's own (an exception) runs user code: user code's
 * upcalls go below it, and it returns to the program intact afterwards. */
static void run_from_handler(struct dune_tf *tf)
{
	struct dune_tf user;

	(void)tf;
	printf("from a handler: returned %d\n", run_user(user_faults, &user));
}

static int case_jump_from_handler(void)
{
	volatile long kept = 1234;

	enter(true);
	fault_address = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dune_register_syscall_handler(syscall_handler);
	dune_register_pgflt_handler(end_on_fault);
	dune_register_intr_handler(T_BRKPT, run_from_handler);
	__asm__ volatile("int3");
	printf("back in the program: %ld\n", kept);
	return 0;
}

/* dune_init(0): nothing is PERM_U; user code reaches only what the program grants. */
static long secret = 99;
static uintptr_t expected_fault;

static void report_fault(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	printf("user fault at the expected address: %s, fec %#lx, rip %s\n",
	       addr == expected_fault ? "yes" : "no", (unsigned long)fec,
	       tf->rip == addr ? "= address" : "in user code");
	dune_ret_from_user(55);
}

static void user_reads_secret(void)
{
	user_exit(secret);
}

static int case_perm(void)
{
	struct dune_tf tf;
	uintptr_t functions[] = {(uintptr_t)user_reads_secret, (uintptr_t)user_exit,
				 (uintptr_t)user_syscall};
	uintptr_t low = functions[0], high = functions[0];
	int ret;

	for (size_t i = 1; i < sizeof(functions) / sizeof(functions[0]); i++) {
		low = functions[i] < low ? functions[i] : low;
		high = functions[i] > high ? functions[i] : high;
	}
	low &= ~(PAGE - 1);
	high = (high + 256 + PAGE - 1) & ~(PAGE - 1);     /* the functions' code */

	enter(false);
	dune_register_syscall_handler(syscall_handler);
	dune_register_pgflt_handler(report_fault);
	expected_fault = (uintptr_t)user_reads_secret;     /* its code is not PERM_U */
	printf("returned %d\n", run_user(user_reads_secret, &tf));
	ret = dune_vm_mprotect(pgroot, (void *)low, high - low, PERM_R | PERM_X | PERM_U);
	printf("granted code: %d\n", ret);
	ret = dune_vm_mprotect(pgroot, user_stack, sizeof(user_stack), PERM_R | PERM_W | PERM_U);
	printf("granted stack: %d\n", ret);
	expected_fault = (uintptr_t)&secret;               /* the program's data is not */
	printf("returned %d\n", run_user(user_reads_secret, &tf));
	printf("the program still reads it: %ld\n", secret);
	return 0;
}

static int case_no_syscall_handler(void)
{
	struct dune_tf tf;

	enter(true);
	printf("returned %d\n", run_user(user_hypercalls, &tf));
	return 0;
}

static int case_no_fault_handler(void)
{
	struct dune_tf tf;

	enter(true);
	fault_address = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dune_register_syscall_handler(syscall_handler);
	printf("returned %d\n", run_user(user_faults, &tf));
	return 0;
}

static int case_ret_outside(void)
{
	enter(true);
	dune_ret_from_user(3);
}

static int case_before_enter(void)
{
	struct dune_tf tf;

	printf("init: %d\n", dune_init(true));
	printf("jump before dune_enter: %d\n", run_user(user_loops, &tf));
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(void);
	} cases[] = {
		{"syscall", case_syscall}, {"resume", case_resume}, {"fault", case_fault},
		{"hypercall", case_hypercall}, {"loop", case_loop}, {"fs", case_fs},
		{"busy", case_busy}, {"no-syscall-handler", case_no_syscall_handler},
		{"jump-from-handler", case_jump_from_handler}, {"perm", case_perm},
		{"no-fault-handler", case_no_fault_handler}, {"ret-outside", case_ret_outside},
		{"before-enter", case_before_enter},
	};

	setvbuf(stdout, NULL, _IONBF, 0);
	for (size_t i = 0; argc > 1 && i < sizeof(cases) / sizeof(cases[0]); i++)
		if (!strcmp(argv[1], cases[i].name))
			return cases[i].run();
	fprintf(stderr, "usage: usercode CASE\n");
	return 2;
}
