/* The plugin sandbox's costs (kvmdune/dune/examples/plugin_host.c's mechanism),
 * measured for `kvmdune bench dune` (kvmdune/bench/dune_plugin.py puts the Linux
 * ways and the platform floor beside them). One JSON object per line:
 * {"benchmark": NAME, "per_op_ns": median, "per_op_cycles": median}.
 *
 * Under kvmdune (the Dune API; dune_init(0), user code in a clone of pgroot where
 * only the pages of its code and its stack are PERM_U, loaded with load_cr3):
 *   plugin-syscall [N]   user code makes N getppid calls; each traps into the
 *                        program's syscall handler, which decides (the policy
 *                        allows getppid) and answers it from what the host knows
 *                        (no call forwarded to Linux: the mechanism alone, not
 *                        kvmdune's forwarding, which the call ring's state would
 *                        make vary), and returns to user code
 *   plugin-call [N]      N calls into user code: dune_jump_to_user, user code's exit
 *                        call, the handler's dune_ret_from_user
 *   hypercall [N]        N PROBE hypercalls of the program (the floor's exit)
 * Natively (Linux's ways of calling isolated code):
 *   pipe-call [N]        N calls into a worker process forked once: a request
 *                        through one pipe, the answer through another
 *   function-call [N]    N calls of a function through a pointer, unisolated
 * Usage: dune_plugin [--repeat R] BENCHMARK [N]
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dune.h"
#include "bench_clock.h"

#define MAX_REPEAT 101
#define USER_STACK_WORDS 2048
#define USER_CODE_BYTES 256             /* ample for each user function below */
#define INITIAL_RFLAGS 0x202
#define SYS_USER_GETPPID 110
#define SYS_USER_EXIT 60

static int repeat = 5;


static void error(const char *name, const char *what)
{
	printf("{\"benchmark\": \"%s\", \"error\": \"%s\"}\n", name, what);
	fflush(stdout);
}

/* Runs fn(n) `repeat` times after a warm-up; prints the medians per operation. */
static int measure(const char *name, int (*fn)(long n), long n)
{
	double ns[MAX_REPEAT], cyc[MAX_REPEAT];

	if (fn(n / 10 + 1)) {
		error(name, "the warm-up failed");
		return 1;
	}
	for (int r = 0; r < repeat; r++) {
		uint64_t t0 = now_ns(), c0 = cycles();

		if (fn(n)) {
			error(name, "a run failed");
			return 1;
		}
		cyc[r] = (double)(cycles() - c0) / n;
		ns[r] = (double)(now_ns() - t0) / n;
	}
	printf("{\"benchmark\": \"%s\", \"per_op_ns\": %.1f, \"per_op_cycles\": %.1f}\n", name,
	       median_of(ns, repeat), median_of(cyc, repeat));
	fflush(stdout);
	return 0;
}

/* -- user code, and the host's side of it ------------------------------------------ */
static uint64_t user_stack[USER_STACK_WORDS] __attribute__((aligned(PGSIZE)));
static ptent_t *sandbox;

static inline long user_syscall(long number, long a0)
{
	long ret;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(number), "D"(a0) : "rcx", "r11", "memory");
	return ret;
}

static void __attribute__((noinline, noreturn)) user_makes_calls(long n)
{
	for (long i = 0; i < n; i++)
		user_syscall(SYS_USER_GETPPID, 0);
	user_syscall(SYS_USER_EXIT, 0);
	for (;;)
		;
}

static void __attribute__((noinline, noreturn)) user_returns(void)
{
	user_syscall(SYS_USER_EXIT, 0);
	for (;;)
		;
}

static pid_t host_ppid;

/* The plugin host's decision, as plugin_host.c makes it: a policy by number. */
static void on_user_syscall(struct dune_tf *tf)
{
	switch (tf->rax) {
	case SYS_USER_GETPPID:
		tf->rax = (uint64_t)host_ppid;
		return;
	case SYS_USER_EXIT:
		dune_ret_from_user((int)ARG0(tf));
	default:
		tf->rax = (uint64_t)-1;
	}
}

static int grant(void *start, size_t length, int perm)
{
	uintptr_t low = PGADDR((uintptr_t)start);
	uintptr_t high = PGADDR((uintptr_t)start + length + PGSIZE - 1);

	return dune_vm_mprotect(sandbox, (void *)low, high - low, perm);
}

/* dune_init(0), and a root where user code reaches its code and stack only. */
static int make_sandbox(void)
{
	if (dune_init(0) || dune_enter())
		return -1;
	dune_register_syscall_handler(on_user_syscall);
	host_ppid = getppid();
	memset(user_stack, 0, sizeof(user_stack));
	sandbox = dune_vm_clone(pgroot);
	if (!sandbox || grant(user_makes_calls, USER_CODE_BYTES, PERM_R | PERM_X | PERM_U)
	    || grant(user_returns, USER_CODE_BYTES, PERM_R | PERM_X | PERM_U)
	    || grant(user_stack, sizeof(user_stack), PERM_R | PERM_W | PERM_U))
		return -1;
	load_cr3((unsigned long)sandbox);
	return 0;
}

static int jump(void (*fn)(void), long arg)
{
	struct dune_tf tf;

	memset(&tf, 0, sizeof(tf));
	tf.rip = (uintptr_t)fn;
	tf.rdi = (uint64_t)arg;
	tf.rsp = (uintptr_t)&user_stack[USER_STACK_WORDS - 1];
	tf.rflags = INITIAL_RFLAGS;
	return dune_jump_to_user(&tf);
}

static int plugin_syscalls(long n)
{
	return jump((void (*)(void))user_makes_calls, n);
}

static int plugin_calls(long n)
{
	for (long i = 0; i < n; i++)
		if (jump(user_returns, 0))
			return 1;
	return 0;
}

static int hypercalls(long n)
{
	for (long i = 0; i < n; i++)
		if (kvmdune_probe() < 0)
			return 1;
	return 0;
}

/* -- Linux's ways ------------------------------------------------------------------- */
static long __attribute__((noinline)) answer(long request)
{
	return request + 1;
}

static long (*volatile called)(long) = answer;

static int function_calls(long n)
{
	long value = 0;

	for (long i = 0; i < n; i++)
		value = called(value);
	return value != n;
}

static int requests[2], answers[2];

static void serve_requests(void)
{
	long request;

	while (read(requests[0], &request, sizeof(request)) == sizeof(request)) {
		long reply = answer(request);

		if (write(answers[1], &reply, sizeof(reply)) != sizeof(reply))
			break;
	}
	_exit(0);
}

static int pipe_calls(long n)
{
	for (long i = 0; i < n; i++) {
		long reply;

		if (write(requests[1], &i, sizeof(i)) != sizeof(i)
		    || read(answers[0], &reply, sizeof(reply)) != sizeof(reply) || reply != i + 1)
			return 1;
	}
	return 0;
}

static int start_worker(void)
{
	pid_t worker;

	if (pipe(requests) || pipe(answers))
		return -1;
	worker = fork();
	if (worker < 0)
		return -1;
	if (worker == 0) {
		close(requests[1]);     /* so that the host's close is its end of input */
		close(answers[0]);
		serve_requests();
	}
	close(requests[0]);
	close(answers[1]);
	return 0;
}

static void stop_worker(void)
{
	close(requests[1]);
	wait(NULL);
}

static const struct {
	const char *name;
	int (*run)(long n);
	int needs_sandbox;      /* else it runs natively */
} BENCHMARKS[] = {
	{"plugin-syscall", plugin_syscalls, 1},
	{"plugin-call", plugin_calls, 1},
	{"hypercall", hypercalls, 1},
	{"pipe-call", pipe_calls, 0},
	{"function-call", function_calls, 0},
};

int main(int argc, char **argv)
{
	long n;
	int failed;

	if (argc > 2 && strcmp(argv[1], "--repeat") == 0) {
		repeat = atoi(argv[2]);
		argv += 2, argc -= 2;
	}
	n = argc > 2 ? atol(argv[2]) : 1000;
	for (size_t i = 0; argc > 1 && repeat >= 1 && repeat <= MAX_REPEAT && n > 0
			   && i < sizeof(BENCHMARKS) / sizeof(BENCHMARKS[0]); i++) {
		if (strcmp(argv[1], BENCHMARKS[i].name))
			continue;
		if (BENCHMARKS[i].needs_sandbox && make_sandbox()) {
			error(argv[1], "no sandbox: not under kvmdune with the Dune API");
			return 1;
		}
		if (BENCHMARKS[i].run == pipe_calls && start_worker()) {
			error(argv[1], "cannot start the worker");
			return 1;
		}
		failed = measure(argv[1], BENCHMARKS[i].run, n);
		if (BENCHMARKS[i].run == pipe_calls)
			stop_worker();
		return failed;
	}
	fprintf(stderr, "usage: dune_plugin [--repeat 1..%d] BENCHMARK [N > 0]; benchmarks:",
		MAX_REPEAT);
	for (size_t i = 0; i < sizeof(BENCHMARKS) / sizeof(BENCHMARKS[0]); i++)
		fprintf(stderr, " %s", BENCHMARKS[i].name);
	fprintf(stderr, "\n");
	return 2;
}
