/* User views downgraded, seen by user code run with the real API (dune.h, the
 * library, `kvmdune run`): write removed, user access removed, a clone's page
 * unmapped (the frame stays the program's: only the invalidation removes the
 * translation), the dirty bit cleared and set again by user code's next write. Each
 * page is touched by user code before its downgrade. Prints "ok NAME" per check. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <dune.h>

#define PAGE 4096UL
#define SYS_USER_EXIT 60
#define USER_FAULTED (-1)
#define STACK_WORDS 2048

static uint64_t user_stack[STACK_WORDS] __attribute__((aligned(PAGE)));
static volatile int in_user;
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

static void on_page_fault(uintptr_t addr, uint64_t fec, struct dune_tf *tf)
{
	(void)tf;
	if (!in_user) {
		printf("FAIL: the program itself faulted at %#lx\n", (unsigned long)addr);
		exit(2);
	}
	fault_addr = addr;
	fault_fec = fec;
	dune_ret_from_user(USER_FAULTED);
}

/* Run fn(p) as user code: what it returned, or USER_FAULTED. */
static int as_user(void (*fn)(long), void *p)
{
	struct dune_tf tf;
	int ret;

	memset(&tf, 0, sizeof(tf));
	tf.rip = (uintptr_t)fn;
	tf.rsp = (uintptr_t)&user_stack[STACK_WORDS - 1];
	tf.rflags = 0x202;
	tf.rdi = (uintptr_t)p;
	fault_addr = 0;
	in_user = 1;
	ret = dune_jump_to_user(&tf);
	in_user = 0;
	return ret;
}

static char *page(void)
{
	char *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED);
	return p;
}

static long dirty(char *p, int clear)
{
	unsigned char bitmap[1] = { 0 };

	return clear ? kvmdune_vm_clear_bits(pgroot, p, PAGE, PTE_D, NULL)
		     : kvmdune_vm_read_bits(pgroot, p, PAGE, PTE_D, bitmap);
}

static void ok(const char *name)
{
	printf("ok %s\n", name);
	fflush(stdout);
}

int main(void)
{
	ptent_t *clone;
	char *p;

	CHECK(dune_init_and_enter() == 0);
	dune_register_syscall_handler(on_syscall);
	dune_register_pgflt_handler(on_page_fault);

	p = page();
	CHECK(as_user(user_write, p) == 7 && *(long *)p == 42);
	CHECK(dune_vm_mprotect(pgroot, p, PAGE, PERM_R | PERM_U) == 0);
	CHECK(as_user(user_write, p) == USER_FAULTED && fault_addr == (uintptr_t)p);
	CHECK(fault_fec & FEC_W);
	CHECK(as_user(user_read, p) == 42);
	ok("user-write-removed");

	p = page();
	*(long *)p = 5;
	CHECK(as_user(user_read, p) == 5);
	CHECK(dune_vm_mprotect(pgroot, p, PAGE, PERM_R | PERM_W) == 0);
	CHECK(as_user(user_read, p) == USER_FAULTED && fault_addr == (uintptr_t)p);
	CHECK(*(volatile long *)p == 5);          /* the program still reads it */
	ok("user-access-removed");

	p = page();
	*(long *)p = 8;
	clone = dune_vm_clone(pgroot);
	CHECK(clone != NULL);
	load_cr3((unsigned long)clone);
	CHECK(as_user(user_read, p) == 8);
	dune_vm_unmap(clone, p, PAGE);
	CHECK(as_user(user_read, p) == USER_FAULTED && fault_addr == (uintptr_t)p);
	load_cr3((unsigned long)pgroot);
	CHECK(as_user(user_read, p) == 8);
	dune_vm_free(clone);
	ok("clone-user-unmapped");

	p = page();
	CHECK(as_user(user_write, p) == 7);
	CHECK(dirty(p, 1) == 1 && dirty(p, 0) == 0);
	CHECK(as_user(user_read, p) == 42 && dirty(p, 0) == 0);
	CHECK(as_user(user_write, p) == 7 && dirty(p, 0) == 1);
	ok("user-dirty-cleared-and-set-again");

	printf("done\n");
	return 0;
}
