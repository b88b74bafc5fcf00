/* plugin.h - the contract between plugin_host.c and its plugins (the plugin sandbox
 * of the Dune lecture: a browser runs a third-party image filter at CPL3).
 *
 * A plugin is a self-contained, position-independent ELF image, linked alone and
 * against nothing (no libc, no host symbol: it cannot call or read anything of the
 * host's by accident, and a missing function is a link error):
 *
 *     gcc -O2 -static-pie -nostdlib -ffreestanding -fno-stack-protector \
 *         -Wl,-e,plugin_main -o plugin_filter.plugin plugin_filter.c
 *
 * The host loads it into fresh pages and runs plugin_main(args) with
 * dune_jump_to_user in a page table of its own where only the plugin's image, its
 * stack and the image buffer are user-accessible (PERM_U). args is at the top of
 * the plugin's stack. The plugin's only way out is the `syscall` instruction, and
 * every call reaches the host's system-call handler, which decides:
 *
 *     write(1, buf, len)     allowed when [buf, buf + len) lies in the image buffer
 *                            (the host makes the call);
 *     exit(status)           the plugin is done (exit_group too);
 *     anything else          -EPERM, and the host logs it.
 *
 * plugin_main never returns (its return address is 0: returning is a fault).
 */
#ifndef PLUGIN_H
#define PLUGIN_H

#include <stdint.h>

/* The system calls a plugin may make (Linux x86-64 numbers). */
#define PLUGIN_SYS_WRITE 1
#define PLUGIN_SYS_EXIT 60
#define PLUGIN_SYS_EXIT_GROUP 231
#define PLUGIN_STDOUT 1

/* plugin_filter's tasks. */
enum plugin_filter {
	PLUGIN_INVERT = 1,      /* each pixel p becomes 255 - p, in place */
	PLUGIN_BLUR = 2,        /* 3x3 box mean, edges clamped, into scratch */
};

/* plugin_hostile's attacks (the host's names for them: plugin_host.c). */
enum plugin_attack {
	ATTACK_READ_SECRET = 1,     /* reads host data by its address */
	ATTACK_SYSCALLS,            /* openat, write elsewhere, execve */
	ATTACK_LOOP,                /* never returns */
	ATTACK_STACK_BELOW,         /* writes below its granted stack */
	ATTACK_STACK_ABOVE,         /* writes above it */
	ATTACK_RETURN_ADDRESS,      /* code on its stack, reached through a return address */
	ATTACK_HOST_CODE,           /* calls a host function */
	ATTACK_HYPERCALL,           /* kvmdune hypercalls, then the secret */
	ATTACK_PAGE_TABLES,         /* writes its page-table entry through its address */
	ATTACK_PRIVILEGED,          /* mov to %cr3 */
};

struct plugin_args {
	uint64_t task;                  /* enum plugin_filter or enum plugin_attack */
	unsigned char *image;           /* the PGM file: header, then the pixels */
	uint64_t image_size;
	uint64_t pixels;                /* offset of the pixels in image */
	uint64_t width, height;
	unsigned char *scratch;         /* width * height bytes, also in the image buffer */
	/* What a hostile plugin is told, so that its attacks aim exactly. */
	uint64_t host_secret;           /* host data */
	uint64_t host_function;         /* host code */
	uint64_t page_table;            /* its root (the handle load_cr3 was given) */
	uint64_t page_table_entry;      /* the entry mapping the plugin's code in that root */
	uint64_t stack_low, stack_high; /* its granted stack */
};

/* A system call as Linux's ABI makes it: number in RAX, arguments in RDI, RSI,
 * RDX, R10, the result in RAX. */
static inline long plugin_syscall(long number, long a0, long a1, long a2, long a3)
{
	long ret;
	register long r10 __asm__("r10") = a3;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(number), "D"(a0), "S"(a1), "d"(a2), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}

static inline void __attribute__((noreturn)) plugin_exit(long status)
{
	plugin_syscall(PLUGIN_SYS_EXIT, status, 0, 0, 0);
	for (;;)                /* the host never resumes an exit */
		__asm__ volatile("" ::: "memory");
}

#endif
