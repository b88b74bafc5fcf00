/* traps.c - the Dune API's entry and trap plumbing, one case per argument; each
 * prints what it observed, for tests/dune/test_traps.py to compare. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dune.h>

#define PAGE 4096
#define T_BRKPT 3
#define XMM_REGISTERS 16

static void enter(void)
{
	int ret = dune_init_and_enter();

	if (ret) {
		printf("dune_init_and_enter: %d\n", ret);
		exit(1);
	}
}

/* A page the program owns no mapping for (mapped, then unmapped). */
static char *unmapped_page(void)
{
	char *page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	munmap(page, PAGE);
	return page;
}

static void on_sigsegv(int signo)
{
	(void)signo;
	printf("the sigaction SIGSEGV handler ran\n");
	exit(3);
}

// probe and init

static int probe(void)
{
	printf("probe %ld\n", kvmdune_probe());
	return 0;
}

static int saved_argc;
static char **saved_argv;

/* The program as dune_init left it: started natively, it runs again under kvmdune
 * with the same argv. */
static int show_argv(void)
{
	printf("init: %d\n", dune_init(1));
	for (int i = 0; i < saved_argc; i++)
		printf("argv[%d] = %s\n", i, saved_argv[i]);
	printf("marker: %s\n", getenv("KVMDUNE_DUNE_REEXEC") ? "set" : "unset");
	return 0;
}

static int init_twice(void)
{
	printf("init 1: %d\n", dune_init(1));
	printf("init again: %d\n", dune_init(1));
	printf("init other: %d\n", dune_init(0));
	printf("enter: %d\n", dune_enter());
	printf("enter again: %d\n", dune_enter());
	return 0;
}

// page faults: the handler maps the page and the access is retried

static char *fault_page;
static int faults;

static void map_fault_page(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	char *page = (char *)(addr & ~(uintptr_t)(PAGE - 1));

	faults++;
	printf("fault at page+%#lx fec %#lx rip-in-main %d\n", (unsigned long)(addr - (uintptr_t)fault_page),
	       (unsigned long)fec, tf->rip != 0);
	if (page != fault_page || mmap(page, PAGE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		exit(2);
	page[0] = 42;
}

static int page_fault(void)
{
	enter();
	signal(SIGSEGV, on_sigsegv);
	fault_page = unmapped_page();
	dune_register_pgflt_handler(map_fault_page);
	fault_page[8] = 7;                      /* faults; the handler maps it; retried */
	printf("after: %d %d, %d fault(s)\n", fault_page[0], fault_page[8], faults);
	return 0;
}

/* Without a handler: Linux's behaviour (the sigaction handler). */
static int page_fault_unhandled(void)
{
	enter();
	signal(SIGSEGV, on_sigsegv);
	*(volatile char *)unmapped_page() = 1;
	printf("not reached\n");
	return 0;
}

// nested: the handler itself faults; the inner handler runs below it

static char *outer_page, *inner_page;
static int depth, max_depth;

static void nested_handler(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	char *page = (char *)(addr & ~(uintptr_t)(PAGE - 1));
	char local;

	(void)fec;
	(void)tf;
	depth++;
	if (depth > max_depth)
		max_depth = depth;
	printf("depth %d: fault on the %s page, handler stack %p\n", depth,
	       page == outer_page ? "outer" : page == inner_page ? "inner" : "other", (void *)&local);
	mprotect(page, PAGE, PROT_READ | PROT_WRITE);
	if (page == outer_page)
		inner_page[0] = 5;              /* a fault inside the handler */
	depth--;
}

static int nested(void)
{
	enter();
	outer_page = mmap(NULL, 2 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	inner_page = outer_page + PAGE;
	dune_register_pgflt_handler(nested_handler);
	outer_page[0] = 9;
	printf("after: %d %d, deepest %d\n", outer_page[0], inner_page[0], max_depth);
	return 0;
}

// FPU/SSE/AVX state across an upcall whose handler clobbers it

static void clobber_vector_registers(struct dune_tf *tf)
{
	(void)tf;
	__asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\t"
			 "movdqa %%xmm0, %%xmm1\n\t movdqa %%xmm0, %%xmm2\n\t movdqa %%xmm0, %%xmm3\n\t"
			 "movdqa %%xmm0, %%xmm4\n\t movdqa %%xmm0, %%xmm5\n\t movdqa %%xmm0, %%xmm6\n\t"
			 "movdqa %%xmm0, %%xmm7\n\t movdqa %%xmm0, %%xmm8\n\t movdqa %%xmm0, %%xmm9\n\t"
			 "movdqa %%xmm0, %%xmm10\n\t movdqa %%xmm0, %%xmm11\n\t movdqa %%xmm0, %%xmm12\n\t"
			 "movdqa %%xmm0, %%xmm13\n\t movdqa %%xmm0, %%xmm14\n\t movdqa %%xmm0, %%xmm15\n\t"
			 ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
			 "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
	if (__builtin_cpu_supports("avx"))
		__asm__ volatile("vpcmpeqd %%ymm0, %%ymm0, %%ymm0\n\t vmovdqa %%ymm0, %%ymm15"
				 ::: "xmm0", "xmm15");
	/* The x87 control word and MXCSR too: rounding toward zero. */
	{
		unsigned short cw = 0x0f7f;
		unsigned int mxcsr = 0x7f80;
		__asm__ volatile("fldcw %0\n\t ldmxcsr %1" :: "m"(cw), "m"(mxcsr));
	}
	printf("handler clobbered the vector registers\n");
}

static int fpu(void)
{
	uint8_t in[XMM_REGISTERS][16], out[XMM_REGISTERS][16];
	uint8_t high_in[32] __attribute__((aligned(32))), high_out[32] __attribute__((aligned(32)));
	unsigned short cw_out;
	unsigned int mxcsr_out;
	int avx = __builtin_cpu_supports("avx");

	enter();
	for (int r = 0; r < XMM_REGISTERS; r++)
		for (int b = 0; b < 16; b++)
			in[r][b] = (uint8_t)(r * 16 + b + 1);
	for (int b = 0; b < 32; b++)
		high_in[b] = (uint8_t)(0xa0 + b);
	dune_register_intr_handler(T_BRKPT, clobber_vector_registers);
	if (avx)
		__asm__ volatile("vmovdqa %0, %%ymm7" :: "m"(high_in) : "xmm7");
	__asm__ volatile(
		"movdqu 0(%2), %%xmm0\n\t movdqu 16(%2), %%xmm1\n\t movdqu 32(%2), %%xmm2\n\t"
		"movdqu 48(%2), %%xmm3\n\t movdqu 64(%2), %%xmm4\n\t movdqu 80(%2), %%xmm5\n\t"
		"movdqu 96(%2), %%xmm6\n\t"
		"movdqu 128(%2), %%xmm8\n\t movdqu 144(%2), %%xmm9\n\t movdqu 160(%2), %%xmm10\n\t"
		"movdqu 176(%2), %%xmm11\n\t movdqu 192(%2), %%xmm12\n\t movdqu 208(%2), %%xmm13\n\t"
		"movdqu 224(%2), %%xmm14\n\t movdqu 240(%2), %%xmm15\n\t"
		"int3\n\t"
		"movdqu %%xmm0, 0(%3)\n\t movdqu %%xmm1, 16(%3)\n\t movdqu %%xmm2, 32(%3)\n\t"
		"movdqu %%xmm3, 48(%3)\n\t movdqu %%xmm4, 64(%3)\n\t movdqu %%xmm5, 80(%3)\n\t"
		"movdqu %%xmm6, 96(%3)\n\t movdqu %%xmm7, 112(%3)\n\t"
		"movdqu %%xmm8, 128(%3)\n\t movdqu %%xmm9, 144(%3)\n\t movdqu %%xmm10, 160(%3)\n\t"
		"movdqu %%xmm11, 176(%3)\n\t movdqu %%xmm12, 192(%3)\n\t movdqu %%xmm13, 208(%3)\n\t"
		"movdqu %%xmm14, 224(%3)\n\t movdqu %%xmm15, 240(%3)\n\t"
		"fnstcw %0\n\t stmxcsr %1\n\t"
		: "=m"(cw_out), "=m"(mxcsr_out)
		: "r"(in), "r"(out)
		: "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm8",
		  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
	if (avx)
		__asm__ volatile("vmovdqa %%ymm7, %0" : "=m"(high_out) :: "memory");
	memcpy(in[7], avx ? high_in : out[7], 16);     /* xmm7 was loaded with the ymm */
	printf("xmm registers %s\n", memcmp(in, out, sizeof(in)) ? "CHANGED" : "preserved");
	printf("ymm7 %s\n", !avx ? "preserved (no AVX)"
	       : memcmp(high_in, high_out, 32) ? "CHANGED" : "preserved");
	printf("x87 control word %#x, mxcsr %#x\n", cw_out, mxcsr_out);
	return 0;
}

// signals as vectors

static volatile sig_atomic_t alarms;

static void on_alarm_vector(struct dune_tf *tf)
{
	(void)tf;
	alarms++;
}

static int signal_vector(void)
{
	enter();
	printf("register: %d\n", dune_register_signal_handler(SIGALRM, on_alarm_vector));
	printf("register SIGKILL: %d\n", dune_register_signal_handler(SIGKILL, on_alarm_vector));
	alarm(1);
	while (!alarms)
		;                               /* interrupted by the signal, at CPL3 */
	printf("alarm arrived as vector %d\n", DUNE_SIGNAL_INTR_BASE + SIGALRM);
	kill(getpid(), SIGALRM);                /* and once at a system call's end */
	printf("alarms %d\n", (int)alarms);
	return 0;
}

// a handler stack that cannot take a frame: gone, or full

static void never_called(struct dune_tf *tf)
{
	(void)tf;
	printf("the handler ran\n");
}

int main(int argc, char **argv);

static int stack_gone(void)
{
	char *stack = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long ret;

	enter();
	/* Any code of the program is an acceptable entry; it is never reached here. */
	ret = kvmdune_hypercall(KVMDUNE_HC_ENTER, (long)main, (long)stack, 4 * PAGE, 0, 0, 0);
	printf("enter: %ld\n", ret);
	munmap(stack, 4 * PAGE);
	dune_register_intr_handler(T_BRKPT, never_called);
	__asm__ volatile("int3");
	printf("not reached\n");
	return 0;
}

static char *always_faulting;

static void fault_again(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)addr;
	(void)fec;
	(void)tf;
	faults++;
	always_faulting[0] = 1;         /* never fixed: each fault nests one deeper */
}

static int stack_full(void)
{
	enter();
	always_faulting = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dune_register_pgflt_handler(fault_again);
	always_faulting[0] = 1;
	printf("not reached\n");
	return 0;
}

// threads come and go: each one's handler stack goes with it

#define CHURNED_THREADS 64

static volatile int thread_breakpoints;

static void count_breakpoint(struct dune_tf *tf)
{
	(void)tf;
	thread_breakpoints++;
}

static void *entering_thread(void *unused)
{
	(void)unused;
	if (dune_enter())
		return (void *)1;
	__asm__ volatile("int3");       /* taken on this thread's own handler stack */
	return NULL;
}

static int count_mappings(void)
{
	FILE *maps = fopen("/proc/self/maps", "r");
	int lines = 0;

	for (int c; (c = fgetc(maps)) != EOF;)
		lines += c == '\n';
	fclose(maps);
	return lines;
}

static int run_entering_thread(void)
{
	pthread_t thread;
	void *failed;

	if (pthread_create(&thread, NULL, entering_thread, NULL) || pthread_join(thread, &failed))
		return -1;
	return failed ? -1 : 0;
}

static int thread_churn(void)
{
	int failures = 0, first;

	enter();
	dune_register_intr_handler(T_BRKPT, count_breakpoint);
	/* After one thread: glibc keeps that thread's own stack for the next. */
	failures -= run_entering_thread();
	first = count_mappings();
	for (int i = 1; i < CHURNED_THREADS; i++)
		failures -= run_entering_thread();
	printf("threads %d, failures %d, breakpoints %d\n", CHURNED_THREADS, failures,
	       thread_breakpoints);
	printf("mappings grew by %d\n", count_mappings() - first);
	__asm__ volatile("int3");       /* the main thread's stack is still there */
	printf("breakpoints %d\n", thread_breakpoints);
	return 0;
}

// fork and execve: the child keeps the handlers; a new program starts without

#define T_DIVIDE 0
#define DIV_LENGTH 3            /* div %rcx */

static int divide_errors;

static void skip_divide(struct dune_tf *tf)
{
	divide_errors++;
	tf->rax = 42;
	tf->rip += DIV_LENGTH;
}

static long divide(long dividend, long divisor)
{
	long quotient;

	__asm__ volatile("xor %%edx, %%edx\n\t div %%rcx" : "=a"(quotient)
			 : "a"(dividend), "c"(divisor) : "rdx");
	return quotient;
}

static int forked(void)
{
	int status;
	pid_t child;

	enter();
	dune_register_intr_handler(T_DIVIDE, skip_divide);
	child = fork();
	if (child == 0) {
		printf("child: %ld, %d caught\n", divide(84, 0), divide_errors);
		printf("child probe: %ld\n", kvmdune_probe());
		_exit(0);
	}
	waitpid(child, &status, 0);
	printf("child status %d\n", status);
	printf("parent: %ld, %d caught\n", divide(84, 0), divide_errors);
	return 0;
}

static int exec_after(void)
{
	printf("new program: probe %ld, dividing by zero\n", kvmdune_probe());
	printf("%ld\n", divide(84, 0));
	return 0;
}

static int exec_before(void)
{
	enter();
	dune_register_intr_handler(T_DIVIDE, skip_divide);
	printf("before exec: %ld\n", divide(84, 0));
	execl("/proc/self/exe", "traps", "exec-after", (char *)NULL);
	return 1;
}

// dune_passthrough_syscall

static int passthrough(void)
{
	struct dune_tf tf;

	enter();
	memset(&tf, 0, sizeof(tf));
	tf.rax = 39;        /* getpid */
	dune_passthrough_syscall(&tf);
	printf("getpid %s\n", (long)tf.rax == (long)getpid() ? "matches" : "DIFFERS");
	tf.rax = KVMDUNE_HYPERCALL_BASE + KVMDUNE_HC_PROBE;
	dune_passthrough_syscall(&tf);
	printf("hypercall: %ld\n", (long)tf.rax);
	tf.rax = (1UL << 32) | (KVMDUNE_HYPERCALL_BASE + KVMDUNE_HC_INIT);
	dune_passthrough_syscall(&tf);
	printf("hypercall with high bits: %ld\n", (long)tf.rax);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(void);
	} cases[] = {
		{"probe", probe}, {"argv", show_argv}, {"init-twice", init_twice}, {"page-fault", page_fault},
		{"page-fault-unhandled", page_fault_unhandled}, {"nested", nested}, {"fpu", fpu},
		{"signal", signal_vector}, {"passthrough", passthrough},
		{"stack-gone", stack_gone}, {"stack-full", stack_full}, {"fork", forked},
		{"exec", exec_before}, {"exec-after", exec_after}, {"thread-churn", thread_churn},
	};

	setvbuf(stdout, NULL, _IONBF, 0);
	saved_argc = argc;
	saved_argv = argv;
	for (size_t i = 0; argc > 1 && i < sizeof(cases) / sizeof(cases[0]); i++)
		if (!strcmp(argv[1], cases[i].name))
			return cases[i].run();
	fprintf(stderr, "usage: traps CASE\n");
	return 2;
}
