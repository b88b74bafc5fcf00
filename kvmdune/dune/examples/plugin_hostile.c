/* plugin_hostile.c - hostile plugins for plugin_host.c: each attack tries to get
 * out of the sandbox in one way, and the host must contain it and carry on. Built
 * alone as plugin.h says, with kvmdune's headers for the hypercall numbers:
 *
 *     gcc -O2 -static-pie -nostdlib -ffreestanding -fno-stack-protector \
 *         $(kvmdune config --cflags) -Wl,-e,plugin_main \
 *         -o plugin_hostile.plugin plugin_hostile.c
 *
 * args->task chooses the attack; the host tells each attack exactly where to aim
 * (the address of its secret, of one of its functions, of the plugin's own
 * page-table entry), so that containment does not rest on the plugin guessing
 * wrong.
 */
#include <dune.h>

#include "plugin.h"

#define AT_FDCWD (-100)
#define O_RDONLY 0
#define SYS_OPENAT 257
#define SYS_EXECVE 59
#define EPERM 1
#define FORGED_FRAME 0x1000
#define BEYOND_THE_BUFFER (1L << 20)

/* exit(0) as machine code: mov $60, %eax; xor %edi, %edi; syscall. */
static const unsigned char EXIT_CODE[] = {0xb8, 0x3c, 0x00, 0x00, 0x00, 0x31, 0xff, 0x0f, 0x05};

/* Returns to the address in %rdi: its own return address overwritten, as a stack
 * overflow would leave it. */
void return_through(const void *target);
__asm__(".text\n"
	".type return_through, @function\n"
	"return_through:\n\t"
	"mov %rdi, (%rsp)\n\t"
	"ret\n"
	".size return_through, . - return_through\n");

static void __attribute__((noreturn)) read_secret(const struct plugin_args *args)
{
	plugin_exit(*(volatile unsigned char *)args->host_secret);
}

/* Every call is refused: the exit status counts the EPERMs it got. */
static void __attribute__((noreturn)) syscalls(const struct plugin_args *args)
{
	static const char path[] = "/etc/passwd", shell[] = "/bin/sh", note[] = "plugin was here\n";
	const char *argv[] = {shell, 0};
	long results[] = {
		plugin_syscall(SYS_OPENAT, AT_FDCWD, (long)path, O_RDONLY, 0),
		plugin_syscall(PLUGIN_SYS_WRITE, 2, (long)note, sizeof(note) - 1, 0),
		plugin_syscall(PLUGIN_SYS_WRITE, PLUGIN_STDOUT, (long)args->host_secret, 16, 0),
		plugin_syscall(PLUGIN_SYS_WRITE, PLUGIN_STDOUT, (long)args->image,
			       (long)args->image_size + BEYOND_THE_BUFFER, 0),
		plugin_syscall(PLUGIN_SYS_WRITE, PLUGIN_STDOUT, (long)args->image + 16, -1L, 0),
		plugin_syscall(SYS_EXECVE, (long)shell, (long)argv, 0, 0),
	};
	long refused = 0;

	for (unsigned i = 0; i < sizeof(results) / sizeof(results[0]); i++)
		refused += results[i] == -EPERM;
	plugin_exit(refused);
}

static void __attribute__((noreturn)) loop(void)
{
	for (;;)
		__asm__ volatile("" ::: "memory");
}

static void __attribute__((noreturn)) write_at(uint64_t address)
{
	*(volatile uint64_t *)address = 0x4141414141414141;
	plugin_exit(0);
}

/* Code copied onto the stack and reached through a corrupted return address. */
static void __attribute__((noreturn)) return_address(void)
{
	unsigned char code[sizeof(EXIT_CODE)];

	for (unsigned i = 0; i < sizeof(code); i++)
		((volatile unsigned char *)code)[i] = EXIT_CODE[i];
	return_through(code);
	plugin_exit(1);
}

static void __attribute__((noreturn)) host_code(const struct plugin_args *args)
{
	((void (*)(void))args->host_function)();
	plugin_exit(1);
}

/* The hypercalls that would free it: grant itself the secret, end its own run. */
static void __attribute__((noreturn)) hypercall(const struct plugin_args *args)
{
	plugin_syscall(KVMDUNE_HYPERCALL_BASE + KVMDUNE_HC_VM_MPROTECT, (long)args->page_table,
		       (long)args->host_secret, PGSIZE, PERM_R | PERM_U);
	plugin_syscall(KVMDUNE_HYPERCALL_BASE + KVMDUNE_HC_LOAD_CR3, 0, 0, 0, 0);
	plugin_syscall(KVMDUNE_HYPERCALL_BASE + KVMDUNE_HC_RET_FROM_USER, 0, 0, 0, 0);
	read_secret(args);
}

/* Its own entry, rewritten to a writable user page of a frame it chose. */
static void __attribute__((noreturn)) page_tables(const struct plugin_args *args)
{
	*(volatile ptent_t *)args->page_table_entry = FORGED_FRAME | PTE_P | PTE_W | PTE_U;
	plugin_exit(0);
}

static void __attribute__((noreturn)) privileged(const struct plugin_args *args)
{
	__asm__ volatile("mov %0, %%cr3" :: "r"(args->page_table) : "memory");
	plugin_exit(0);
}

void __attribute__((noreturn)) plugin_main(const struct plugin_args *args)
{
	switch (args->task) {
	case ATTACK_READ_SECRET:
		read_secret(args);
	case ATTACK_SYSCALLS:
		syscalls(args);
	case ATTACK_LOOP:
		loop();
	case ATTACK_STACK_BELOW:
		write_at(args->stack_low - sizeof(uint64_t));
	case ATTACK_STACK_ABOVE:
		write_at(args->stack_high);
	case ATTACK_RETURN_ADDRESS:
		return_address();
	case ATTACK_HOST_CODE:
		host_code(args);
	case ATTACK_HYPERCALL:
		hypercall(args);
	case ATTACK_PAGE_TABLES:
		page_tables(args);
	case ATTACK_PRIVILEGED:
		privileged(args);
	}
	plugin_exit(255);
}
