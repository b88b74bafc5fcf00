/* dune_vm_mprotect of one page of pgroot served natively (the fast path's thread,
 * kvmdune/dune/vmm_native/fastvm.c), seen by the guest itself, with the real API
 * under `kvmdune run`. Every page is protected once first (the VMM checks it and
 * records its ceiling); the protects after that are the native ones:
 *   - the program view: write given back, write removed (with the page written
 *     since the last write-protect, and without), reads going on; each fault of the
 *     program reaches its page-fault handler, which unprotects natively (Appel & Li);
 *   - pgroot's user view: user code's write removed and given back;
 *   - the checks follow Linux: after mprotect(2) lowers the page's VMA, or a
 *     read-only file is mapped over it, more rights are EACCES;
 *   - the VMM's own accesses see native changes: read(2) from a pipe into a page
 *     write-protected natively is EFAULT;
 *   - a forked child gets its own native path (its parent's is the parent VM's).
 * Prints "ok NAME" per check, then "done". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dune.h>

#define PAGE 4096UL
#define SYS_USER_EXIT 60
#define USER_FAULTED (-1)
#define STACK_WORDS 2048
#define R (PERM_R | PERM_U)
#define RW (PERM_R | PERM_W | PERM_U)
#define PF_WRITE 0x2

static uint64_t user_stack[STACK_WORDS] __attribute__((aligned(PAGE)));
static volatile int in_user;
static volatile int program_faults;
static volatile uintptr_t fault_addr;
static volatile uint64_t fault_fec;

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

static void __attribute__((noreturn)) user_exit(long value)
{
	__asm__ volatile("syscall" : : "a"(SYS_USER_EXIT), "D"(value) : "rcx", "r11", "memory");
	for (;;)
		;
}

static void user_write(long p)
{
	*(volatile long *)p = 42;
	user_exit(7);
}

static void user_read(long p)
{
	user_exit(*(volatile long *)p);
}

static void on_syscall(struct dune_tf *tf)
{
	if (tf->rax == SYS_USER_EXIT)
		dune_ret_from_user((int)ARG0(tf));
	dune_passthrough_syscall(tf);
}

/* User code's faults end its run; the program's own are Appel & Li's: the page is
 * unprotected (natively) and the write retried. */
static void on_page_fault(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)tf;
	fault_addr = addr;
	fault_fec = fec;
	if (in_user)
		dune_ret_from_user(USER_FAULTED);
	program_faults++;
	if (dune_vm_mprotect(pgroot, (void *)(addr & ~(PAGE - 1)), PAGE, RW) != 0) {
		printf("FAIL: unprotect in the handler\n");
		exit(2);
	}
}

static int as_user(void (*fn)(long), void *p)
{
	struct dune_tf tf;
	int ret;

	memset(&tf, 0, sizeof(tf));
	tf.rip = (uintptr_t)fn;
	tf.rsp = (uintptr_t)&user_stack[STACK_WORDS - 1];
	tf.rflags = 0x202;
	tf.rdi = (uintptr_t)p;
	in_user = 1;
	ret = dune_jump_to_user(&tf);
	in_user = 0;
	return ret;
}

static char *page(void)
{
	char *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED);
	p[0] = 1;
	return p;
}

static int protect(void *p, int perm)
{
	return dune_vm_mprotect(pgroot, p, PAGE, perm);
}

static void ok(const char *name)
{
	printf("ok %s\n", name);
	fflush(stdout);
}

static void program_view(void)
{
	volatile char *p = page();

	CHECK(protect((void *)p, R) == 0);      /* checked by the VMM: its ceiling known */
	CHECK(protect((void *)p, RW) == 0);
	p[0] = 2;                                /* write given back: no fault */
	CHECK(program_faults == 0);
	CHECK(protect((void *)p, R) == 0);      /* written since: KVM protects it again */
	CHECK(p[0] == 2 && program_faults == 0);
	p[1] = 3;
	CHECK(program_faults == 1 && fault_addr == (uintptr_t)p + 1 && fault_fec & PF_WRITE);
	CHECK(p[1] == 3);
	CHECK(protect((void *)p, R) == 0);
	CHECK(protect((void *)p, RW) == 0);
	CHECK(protect((void *)p, R) == 0);      /* not written since the last protect */
	CHECK(p[0] == 2 && program_faults == 1);
	p[2] = 4;
	CHECK(program_faults == 2 && fault_addr == (uintptr_t)p + 2 && p[2] == 4);
	ok("program-write-removed-and-given-back");
}

static void user_view(void)
{
	char *p = page();

	CHECK(as_user(user_write, p) == 7);
	CHECK(protect(p, R) == 0);
	CHECK(protect(p, RW) == 0);
	CHECK(as_user(user_write, p) == 7);
	CHECK(protect(p, R) == 0);
	CHECK(as_user(user_write, p) == USER_FAULTED && fault_addr == (uintptr_t)p);
	CHECK(as_user(user_read, p) == 42);
	CHECK(protect(p, RW) == 0);
	*(long *)p = 0;
	CHECK(as_user(user_write, p) == 7 && *(long *)p == 42);
	ok("user-write-removed-and-given-back");
}

static void ceilings_follow_linux(void)
{
	char *p = page();
	int fd;

	CHECK(protect(p, R) == 0);
	CHECK(protect(p, RW) == 0);
	CHECK(mprotect(p, PAGE, PROT_READ) == 0);
	CHECK(protect(p, RW) == -EACCES);
	CHECK(protect(p, R) == 0);
	CHECK(mprotect(p, PAGE, PROT_READ | PROT_WRITE) == 0);
	CHECK(protect(p, R) == 0);
	CHECK(protect(p, RW) == 0);
	ok("linux-mprotect-lowers-the-ceiling");

	fd = open("/proc/self/exe", O_RDONLY);
	CHECK(fd >= 0);
	CHECK(mmap(p, PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0) == p);
	CHECK(protect(p, RW) == -EACCES);
	CHECK(protect(p, R) == 0);
	CHECK(protect(p, RW) == -EACCES);
	close(fd);
	ok("read-only-mapping-over-the-page");
}

static void vmm_sees_native_changes(void)
{
	char *p = page();
	int pipes[2];

	CHECK(pipe(pipes) == 0);
	CHECK(write(pipes[1], "12345678", 8) == 8 && read(pipes[0], p, 8) == 8);
	CHECK(protect(p, R) == 0);
	CHECK(protect(p, RW) == 0);
	CHECK(write(pipes[1], "abcdefgh", 8) == 8 && read(pipes[0], p, 8) == 8);
	CHECK(protect(p, R) == 0);
	CHECK(write(pipes[1], "ABCDEFGH", 8) == 8);
	CHECK(read(pipes[0], p, 8) == -1 && errno == EFAULT);
	CHECK(memcmp(p, "abcdefgh", 8) == 0);
	CHECK(protect(p, RW) == 0);
	CHECK(read(pipes[0], p, 8) == 8 && memcmp(p, "ABCDEFGH", 8) == 0);
	ok("vmm-access-sees-native-protect");
}

static void forked_child(void)
{
	int status;
	pid_t pid = fork();

	CHECK(pid >= 0);
	if (pid == 0) {
		program_faults = 0;
		program_view();
		exit(0);
	}
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ok("forked-child");
}

int main(void)
{
	CHECK(dune_init_and_enter() == 0);
	dune_register_syscall_handler(on_syscall);
	dune_register_pgflt_handler(on_page_fault);
	program_view();
	user_view();
	ceilings_follow_linux();
	vmm_sees_native_changes();
	forked_child();
	printf("done\n");
	return 0;
}
