/* plugin_host.c - the plugin sandbox of the Dune lecture (lec21, "sandboxed code"):
 * a browser runs an untrusted, third-party image filter at CPL3 in a page table
 * where only the plugin's own pages are user-accessible, and every system call
 * of the plugin traps into the browser, which decides.
 *
 *     gcc -O2 -static -o plugin_host plugin_host.c $(kvmdune config --cflags --libs)
 *     (the plugins: plugin_filter.c, plugin_hostile.c; plugin.h says how to build one)
 *
 *     kvmdune run -- ./plugin_host run plugin_filter.plugin invert [IMAGE.pgm] > out.pgm
 *     ./plugin_host native plugin_filter.plugin invert [IMAGE.pgm] > reference.pgm
 *     kvmdune run -- ./plugin_host hostile plugin_hostile.plugin plugin_filter.plugin [ATTACK...]
 *
 * `run` filters the PGM image (a generated one without IMAGE) in the sandbox; the
 * plugin's output is on stdout, the host's log and verdicts on stderr. `native`
 * runs the same plugin code as a plain C function in a child process, its system
 * calls straight to Linux: the reference the sandboxed output must equal. `hostile`
 * runs each attack of the hostile plugin (all without ATTACK) in a sandbox of its
 * own, then the filter once more (invert, to stdout), and checks the host's data.
 *
 * How it works: dune_init(0) makes nothing user-accessible. For each run the host
 * clones pgroot (a root with no PERM_U page), grants the plugin's image, its stack
 * and the image buffer with dune_vm_mprotect(root, ..., PERM_U | ...), loads the
 * root with load_cr3 and starts plugin_main with dune_jump_to_user. The run ends
 * in a handler: the plugin's exit (system-call handler), a fault (page-fault
 * handler) or exception (interrupt handlers), or the time budget (SIGALRM through
 * dune_register_signal_handler); each calls dune_ret_from_user with the verdict.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dune.h>

#include "plugin.h"

#define LOG "plugin-host: "
#define PAGE ((uintptr_t)PGSIZE)
#define PAGE_DOWN(x) ((uintptr_t)(x) & ~(PAGE - 1))
#define PAGE_UP(x) (((uintptr_t)(x) + PAGE - 1) & ~(PAGE - 1))
#define MAX_FILE_SIZE (16u << 20)
#define MAX_PLUGIN_SPAN (16u << 20)
#define PLUGIN_STACK_SIZE (16 * 1024)
#define GUARD_PATTERN 0xa5
#define BUDGET_SECONDS 1
#define EXCEPTION_VECTORS 32
#define INITIAL_RFLAGS 0x202            /* IF, and the reserved bit 1 */
#define GENERATED_WIDTH 64
#define GENERATED_HEIGHT 48
#define PF_PRESENT 0x1                  /* page-fault error code bits */
#define PF_WRITE 0x2
#define PF_FETCH 0x10

/* How a run ended: what dune_jump_to_user returns (the handlers' dune_ret_from_user). */
enum outcome { EXITED = 1, FAULTED, EXCEPTION, TIMED_OUT };

// the host's own data, which no plugin may reach

#define SECRET_TEXT "the browser's cookie jar: session=5f3c9a71e2"

/* A page of its own, so that a grant next to it can never include it. */
static char host_secret[PGSIZE] __attribute__((aligned(PGSIZE))) = SECRET_TEXT;

/* Host code a hostile plugin is pointed at: it would leak the secret. */
static void __attribute__((noinline)) host_leak_secret(void)
{
	if (write(STDOUT_FILENO, host_secret, sizeof(SECRET_TEXT)) < 0)
		abort();
}

static void die(const char *what)
{
	fprintf(stderr, LOG "%s\n", what);
	exit(1);
}

static void *map_pages(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED)
		die("out of memory");
	return p;
}

static unsigned char *read_file(const char *path, size_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	unsigned char *data;
	struct stat st;
	ssize_t n;

	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size > MAX_FILE_SIZE) {
		fprintf(stderr, LOG "cannot read %s\n", path);
		exit(1);
	}
	data = malloc((size_t)st.st_size);
	if (!data || (n = read(fd, data, (size_t)st.st_size)) != st.st_size)
		die("short read");
	close(fd);
	*size = (size_t)st.st_size;
	return data;
}

// the image: a binary PGM (P5, maxval 255) in an image buffer of its own pages

struct image {
	unsigned char *buffer;  /* the PGM file, then width * height bytes of scratch */
	size_t buffer_size;
	size_t size;            /* of the PGM file */
	size_t pixels;          /* offset of the pixels */
	size_t width, height;
	unsigned char *scratch;
};

static size_t pgm_skip_space(const unsigned char *data, size_t size, size_t at)
{
	while (at < size && (data[at] == '#' || data[at] == ' ' || data[at] == '\t'
			     || data[at] == '\n' || data[at] == '\r')) {
		if (data[at] == '#')
			while (at < size && data[at] != '\n')
				at++;
		else
			at++;
	}
	return at;
}

static size_t pgm_number(const unsigned char *data, size_t size, size_t *at)
{
	size_t value = 0, digits = 0;

	*at = pgm_skip_space(data, size, *at);
	while (*at < size && data[*at] >= '0' && data[*at] <= '9' && digits++ < 6)
		value = value * 10 + (size_t)(data[(*at)++] - '0');
	return digits ? value : 0;
}

/* The PGM file's bytes in a fresh image buffer (a generated image when data is NULL). */
static void image_load(struct image *img, const unsigned char *data, size_t size)
{
	unsigned char generated[64 + GENERATED_WIDTH * GENERATED_HEIGHT];
	size_t at = 2, maxval;

	if (!data) {
		int header = snprintf((char *)generated, 64, "P5\n%d %d\n255\n", GENERATED_WIDTH,
				      GENERATED_HEIGHT);

		for (int y = 0; y < GENERATED_HEIGHT; y++)
			for (int x = 0; x < GENERATED_WIDTH; x++)
				generated[header + y * GENERATED_WIDTH + x] =
					(unsigned char)(x * 4 + y * 5 + (x * y) % 7 * 20);
		data = generated;
		size = (size_t)header + GENERATED_WIDTH * GENERATED_HEIGHT;
	}
	if (size < 2 || data[0] != 'P' || data[1] != '5')
		die("not a binary PGM image (P5)");
	img->width = pgm_number(data, size, &at);
	img->height = pgm_number(data, size, &at);
	maxval = pgm_number(data, size, &at);
	if (!img->width || !img->height || maxval != 255 || at >= size)
		die("unsupported PGM header (8-bit P5 only)");
	img->pixels = at + 1;           /* one whitespace byte ends the header */
	if (img->width * img->height > size - img->pixels)
		die("the PGM image is shorter than its header says");
	img->size = img->pixels + img->width * img->height;
	img->buffer_size = PAGE_UP(img->size) + PAGE_UP(img->width * img->height);
	img->buffer = map_pages(img->buffer_size);
	img->scratch = img->buffer + PAGE_UP(img->size);
	memcpy(img->buffer, data, img->size);
}

static void image_free(struct image *img)
{
	munmap(img->buffer, img->buffer_size);
}

// loading a plugin: a static-pie ELF image without relocations

struct plugin {
	const char *path;
	unsigned char *base;            /* where its image lives (the host chose) */
	size_t span;
	uintptr_t entry;
	unsigned char *rights;          /* PF_R/W/X per page of the span (0: not the image's) */
};

static void refuse_plugin(const char *path, const char *why)
{
	fprintf(stderr, LOG "%s: not a plugin: %s\n", path, why);
	exit(1);
}

/* Whether the dynamic section asks for relocations (the host performs none). */
static int needs_relocations(const Elf64_Dyn *dyn, size_t count)
{
	for (size_t i = 0; i < count && dyn[i].d_tag != DT_NULL; i++) {
		switch (dyn[i].d_tag) {
		case DT_RELASZ:
		case DT_RELSZ:
		case DT_PLTRELSZ:
		case DT_RELRSZ:
			if (dyn[i].d_un.d_val)
				return 1;
		}
	}
	return 0;
}

static int host_prot(unsigned flags)
{
	return (flags & PF_R ? PROT_READ : 0) | (flags & PF_W ? PROT_WRITE : 0)
	       | (flags & PF_X ? PROT_EXEC : 0);
}

static void plugin_load(struct plugin *plugin, const char *path)
{
	size_t size;
	unsigned char *file = read_file(path, &size);
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)file;
	const Elf64_Phdr *ph;
	uintptr_t span = 0;

	plugin->path = path;
	if (size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG)
	    || eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64)
		refuse_plugin(path, "not an x86-64 ELF file");
	if (eh->e_type != ET_DYN)
		refuse_plugin(path, "not position-independent (build it with -static-pie)");
	if (eh->e_phentsize != sizeof(*ph) || eh->e_phoff > size
	    || eh->e_phnum > (size - eh->e_phoff) / sizeof(*ph))
		refuse_plugin(path, "bad program headers");
	ph = (const Elf64_Phdr *)(file + eh->e_phoff);
	for (int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type == PT_INTERP || ph[i].p_type == PT_TLS)
			refuse_plugin(path, "it needs an interpreter or TLS");
		if (ph[i].p_offset > size || ph[i].p_filesz > size - ph[i].p_offset)
			refuse_plugin(path, "a segment lies outside the file");
		if (ph[i].p_type == PT_DYNAMIC
		    && needs_relocations((const Elf64_Dyn *)(file + ph[i].p_offset),
					 ph[i].p_filesz / sizeof(Elf64_Dyn)))
			refuse_plugin(path, "it needs relocations");
		if (ph[i].p_type != PT_LOAD)
			continue;
		if (ph[i].p_filesz > ph[i].p_memsz || ph[i].p_vaddr > MAX_PLUGIN_SPAN
		    || ph[i].p_memsz > MAX_PLUGIN_SPAN - ph[i].p_vaddr)
			refuse_plugin(path, "a segment is too large");
		if (PAGE_UP(ph[i].p_vaddr + ph[i].p_memsz) > span)
			span = PAGE_UP(ph[i].p_vaddr + ph[i].p_memsz);
	}
	if (!span)
		refuse_plugin(path, "nothing to load");
	plugin->span = span;
	plugin->base = map_pages(span);
	plugin->rights = calloc(span / PAGE, 1);
	if (!plugin->rights)
		die("out of memory");
	for (int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD)
			continue;
		memcpy(plugin->base + ph[i].p_vaddr, file + ph[i].p_offset, ph[i].p_filesz);
		for (uintptr_t page = PAGE_DOWN(ph[i].p_vaddr);
		     page < ph[i].p_vaddr + ph[i].p_memsz; page += PAGE)
			plugin->rights[page / PAGE] |= (unsigned char)(ph[i].p_flags & (PF_R | PF_W | PF_X));
	}
	plugin->entry = (uintptr_t)plugin->base + eh->e_entry;
	if (eh->e_entry >= span || !(plugin->rights[eh->e_entry / PAGE] & PF_X))
		refuse_plugin(path, "its entry point is not in its code");
	/* The host's own view of the image: what its segments say (W^X), nothing
	 * between them. */
	for (uintptr_t page = 0; page < span; page += PAGE)
		if (mprotect(plugin->base + page, PAGE, host_prot(plugin->rights[page / PAGE])))
			die("mprotect of the plugin image failed");
	free(file);
}

// the sandbox: a root per run, granting the plugin's pages and nothing else

static unsigned char *stack_region;     /* guard page, the plugin's stack, guard page */
static unsigned char *plugin_stack;
/* The host's code, as the linker bounds it. */
extern const char __executable_start[], etext[];

static struct {
	const char *name;       /* of the plugin of the run */
	int active;             /* between the jump into the plugin and its return */
	const struct plugin *plugin;
	const struct image *image;
	uintptr_t code_entry;   /* the root's entry for the plugin's code */
	long status;
	uintptr_t address, rip;
	uint64_t fec;
	int vector;
	int denied;
} run;

static void grant(ptent_t *root, void *start, size_t length, int perm)
{
	int ret = dune_vm_mprotect(root, start, length, perm);

	if (ret) {
		fprintf(stderr, LOG "dune_vm_mprotect(%p, %zu, %#x): %d\n", start, length, perm, ret);
		exit(1);
	}
}

static int plugin_perm(unsigned flags)
{
	return PERM_U | (flags & PF_R ? PERM_R : 0) | (flags & PF_W ? PERM_W : 0)
	       | (flags & PF_X ? PERM_X : 0);
}

/* A root where the plugin reaches its image, its stack and the image buffer. */
static ptent_t *sandbox_root(const struct plugin *plugin, const struct image *img)
{
	ptent_t *root = dune_vm_clone(pgroot);

	if (!root)
		die("dune_vm_clone failed");
	for (uintptr_t page = 0; page < plugin->span; page += PAGE)
		if (plugin->rights[page / PAGE])
			grant(root, plugin->base + page, PAGE,
			      plugin_perm(plugin->rights[page / PAGE]));
	grant(root, plugin_stack, PLUGIN_STACK_SIZE, PERM_R | PERM_W | PERM_U);
	grant(root, img->buffer, img->buffer_size, PERM_R | PERM_W | PERM_U);
	return root;
}

// the handlers: each plugin event ends the run with a verdict, or is decided

static void __attribute__((noreturn)) host_bug(const char *what, struct dune_tf *tf)
{
	fprintf(stderr, LOG "%s in the host itself\n", what);
	dune_dump_trap_frame(tf);
	abort();
}

static const char *syscall_name(uint64_t number)
{
	static const struct {
		uint64_t number;
		const char *name;
	} names[] = {
		{0, "read"}, {1, "write"}, {2, "open"}, {9, "mmap"}, {10, "mprotect"},
		{39, "getpid"}, {41, "socket"}, {56, "clone"}, {57, "fork"}, {59, "execve"},
		{60, "exit"}, {62, "kill"}, {110, "getppid"}, {231, "exit_group"},
		{257, "openat"},
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].number == number)
			return names[i].name;
	return NULL;
}

static const char *hypercall_name(uint32_t op)
{
	static const char *const names[KVMDUNE_HYPERCALL_COUNT] = {
		[KVMDUNE_HC_PROBE] = "PROBE", [KVMDUNE_HC_INIT] = "INIT",
		[KVMDUNE_HC_ENTER] = "ENTER", [KVMDUNE_HC_SET_TRAP] = "SET_TRAP",
		[KVMDUNE_HC_JUMP_TO_USER] = "JUMP_TO_USER",
		[KVMDUNE_HC_RET_FROM_USER] = "RET_FROM_USER",
		[KVMDUNE_HC_RESUME_USER] = "RESUME_USER", [KVMDUNE_HC_VM_MPROTECT] = "VM_MPROTECT",
		[KVMDUNE_HC_VM_MAP_PHYS] = "VM_MAP_PHYS", [KVMDUNE_HC_VM_MAP_PAGES] = "VM_MAP_PAGES",
		[KVMDUNE_HC_VM_UNMAP] = "VM_UNMAP", [KVMDUNE_HC_VM_LOOKUP] = "VM_LOOKUP",
		[KVMDUNE_HC_VM_CLONE] = "VM_CLONE", [KVMDUNE_HC_VM_FREE] = "VM_FREE",
		[KVMDUNE_HC_VM_SYNC] = "VM_SYNC", [KVMDUNE_HC_FLUSH_TLB] = "FLUSH_TLB",
		[KVMDUNE_HC_LOAD_CR3] = "LOAD_CR3", [KVMDUNE_HC_VA_TO_PA] = "VA_TO_PA",
		[KVMDUNE_HC_VM_BITS] = "VM_BITS",
	};

	return op < KVMDUNE_HYPERCALL_COUNT && names[op] ? names[op] : "unknown";
}

/* Refuses the call with EPERM, and logs it. */
static void deny(struct dune_tf *tf)
{
	const char *name = syscall_name(tf->rax);
	/* The low 32 bits: what a Linux kernel and kvmdune read as the number. */
	uint32_t low = (uint32_t)tf->rax;

	run.denied++;
	fprintf(stderr, LOG "plugin %s: denied ", run.name);
	if (low >= KVMDUNE_HYPERCALL_BASE && low < KVMDUNE_HYPERCALL_BASE + KVMDUNE_HYPERCALL_COUNT)
		fprintf(stderr, "kvmdune hypercall %s", hypercall_name(low - KVMDUNE_HYPERCALL_BASE));
	else if (name)
		fprintf(stderr, "%s", name);
	else
		fprintf(stderr, "system call %" PRIu64, tf->rax);
	fprintf(stderr, "(%#" PRIx64 ", %#" PRIx64 ", %#" PRIx64 ") -> -EPERM\n",
		ARG0(tf), ARG1(tf), ARG2(tf));
	tf->rax = (uint64_t)-EPERM;
}

static int in_image_buffer(uint64_t start, uint64_t length)
{
	uintptr_t buffer = (uintptr_t)run.image->buffer;

	return start >= buffer && start - buffer <= run.image->buffer_size
	       && length <= run.image->buffer_size - (start - buffer);
}

/* write(1, buf, len) of the image buffer: the host writes it. */
static void serve_write(struct dune_tf *tf)
{
	ssize_t written;

	if (ARG0(tf) != PLUGIN_STDOUT || !in_image_buffer(ARG1(tf), ARG2(tf))) {
		deny(tf);
		return;
	}
	written = write(STDOUT_FILENO, (const void *)ARG1(tf), ARG2(tf));
	tf->rax = written < 0 ? (uint64_t)-errno : (uint64_t)written;
}

static void serve_exit(struct dune_tf *tf)
{
	run.status = (long)ARG0(tf);
	dune_ret_from_user(EXITED);
}

/* The policy: what the host does with each system call; the rest is refused. */
static const struct {
	uint64_t number;
	void (*serve)(struct dune_tf *tf);
} POLICY[] = {
	{PLUGIN_SYS_WRITE, serve_write},
	{PLUGIN_SYS_EXIT, serve_exit},
	{PLUGIN_SYS_EXIT_GROUP, serve_exit},
};

static void on_plugin_syscall(struct dune_tf *tf)
{
	if (!run.active)
		host_bug("a system call of user code", tf);
	for (size_t i = 0; i < sizeof(POLICY) / sizeof(POLICY[0]); i++) {
		if (POLICY[i].number == tf->rax) {
			POLICY[i].serve(tf);
			return;
		}
	}
	deny(tf);
}

static void on_plugin_fault(uintptr_t address, uint64_t fec, struct dune_tf *tf)
{
	if (!run.active)
		host_bug("a page fault", tf);
	run.address = address;
	run.fec = fec;
	run.rip = tf->rip;
	dune_ret_from_user(FAULTED);
}

/* One handler for every exception vector: the vector is not in the tf, so each
 * vector gets a small function that records it. */
static void on_plugin_exception(struct dune_tf *tf, int vector)
{
	if (!run.active)
		host_bug("an exception", tf);
	run.vector = vector;
	run.rip = tf->rip;
	dune_ret_from_user(EXCEPTION);
}

#define EXCEPTION_HANDLER(n) \
	static void on_exception_##n(struct dune_tf *tf) { on_plugin_exception(tf, n); }
EXCEPTION_HANDLER(0) EXCEPTION_HANDLER(1) EXCEPTION_HANDLER(2) EXCEPTION_HANDLER(3)
EXCEPTION_HANDLER(4) EXCEPTION_HANDLER(5) EXCEPTION_HANDLER(6) EXCEPTION_HANDLER(7)
EXCEPTION_HANDLER(8) EXCEPTION_HANDLER(9) EXCEPTION_HANDLER(10) EXCEPTION_HANDLER(11)
EXCEPTION_HANDLER(12) EXCEPTION_HANDLER(13) EXCEPTION_HANDLER(15) EXCEPTION_HANDLER(16)
EXCEPTION_HANDLER(17) EXCEPTION_HANDLER(18) EXCEPTION_HANDLER(19) EXCEPTION_HANDLER(20)
EXCEPTION_HANDLER(21)

static const dune_intr_cb EXCEPTION_HANDLERS[EXCEPTION_VECTORS] = {
	on_exception_0, on_exception_1, on_exception_2, on_exception_3, on_exception_4,
	on_exception_5, on_exception_6, on_exception_7, on_exception_8, on_exception_9,
	on_exception_10, on_exception_11, on_exception_12, on_exception_13, NULL,
	on_exception_15, on_exception_16, on_exception_17, on_exception_18, on_exception_19,
	on_exception_20, on_exception_21,
};

static const char *exception_name(int vector)
{
	static const char *const names[] = {
		"divide error (#DE)", "debug (#DB)", "NMI", "breakpoint (#BP)", "overflow (#OF)",
		"bound range (#BR)", "invalid opcode (#UD)", "device not available (#NM)",
		"double fault (#DF)", "coprocessor segment overrun", "invalid TSS (#TS)",
		"segment not present (#NP)", "stack fault (#SS)", "general protection fault (#GP)",
		"page fault (#PF)", "reserved", "x87 error (#MF)", "alignment check (#AC)",
		"machine check (#MC)", "SIMD error (#XM)", "virtualization (#VE)",
		"control protection (#CP)",
	};

	return vector >= 0 && vector < (int)(sizeof(names) / sizeof(names[0]))
	       ? names[vector] : "exception";
}

static void on_budget_spent(struct dune_tf *tf)
{
	(void)tf;
	if (run.active)   /* else the plugin ended just before: nothing to stop */
		dune_ret_from_user(TIMED_OUT);
}

static void install_handlers(void)
{
	dune_register_syscall_handler(on_plugin_syscall);
	dune_register_pgflt_handler(on_plugin_fault);
	for (int vector = 0; vector < EXCEPTION_VECTORS; vector++)
		if (EXCEPTION_HANDLERS[vector]
		    && dune_register_intr_handler(vector, EXCEPTION_HANDLERS[vector]))
			die("cannot register an exception handler");
	if (dune_register_signal_handler(SIGALRM, on_budget_spent))
		die("cannot register the SIGALRM handler");
}

// running a plugin

static int within(uintptr_t address, const void *start, size_t length)
{
	return address >= (uintptr_t)start && address - (uintptr_t)start < length;
}

/* What lies at an address the plugin touched, for the verdict. */
static const char *describe_address(uintptr_t address)
{
	if (address / sizeof(ptent_t) == run.code_entry / sizeof(ptent_t))
		return "its own page-table entry";
	if (within(address, run.plugin->base, run.plugin->span))
		return "its image";
	if (within(address, plugin_stack, PLUGIN_STACK_SIZE))
		return "its stack";
	if (within(address, stack_region, PAGE))
		return "host memory below its stack";
	if (within(address, plugin_stack + PLUGIN_STACK_SIZE, PAGE))
		return "host memory above its stack";
	if (within(address, run.image->buffer, run.image->buffer_size))
		return "the image buffer";
	if (within(address, host_secret, sizeof(host_secret)))
		return "the host's secret";
	if (address >= (uintptr_t)__executable_start && address < (uintptr_t)etext)
		return "host code";
	return "host memory";
}

static void describe_fault(char *out, size_t size)
{
	const char *access = run.fec & PF_FETCH ? "instruction fetch"
			     : run.fec & PF_WRITE ? "write" : "read";
	const char *why = !(run.fec & PF_PRESENT) ? "no PERM_U"
			  : run.fec & PF_FETCH ? "not executable"
			  : run.fec & PF_WRITE ? "read-only" : "not allowed";

	snprintf(out, size, "killed: page fault at %#" PRIxPTR " in %s (%s, %s), rip %#"
		 PRIxPTR " in %s", run.address, describe_address(run.address), access, why,
		 run.rip, describe_address(run.rip));
}

static void print_verdict(int outcome)
{
	char text[256];

	switch (outcome) {
	case EXITED:
		snprintf(text, sizeof(text), "exited with status %ld", run.status);
		break;
	case FAULTED:
		describe_fault(text, sizeof(text));
		break;
	case EXCEPTION:
		snprintf(text, sizeof(text), "killed: %s, rip %#" PRIxPTR " in %s",
			 exception_name(run.vector), run.rip, describe_address(run.rip));
		break;
	case TIMED_OUT:
		snprintf(text, sizeof(text), "killed: still running after %d s (SIGALRM)",
			 BUDGET_SECONDS);
		break;
	default:
		snprintf(text, sizeof(text), "could not run: %d", outcome);
	}
	fprintf(stderr, LOG "plugin %s: %s", run.name, text);
	if (run.denied)
		fprintf(stderr, "; %d system call%s denied", run.denied, run.denied > 1 ? "s" : "");
	fprintf(stderr, "\n");
}

static void set_image_args(struct plugin_args *args, const struct image *img)
{
	args->image = img->buffer;
	args->image_size = img->size;
	args->pixels = img->pixels;
	args->width = img->width;
	args->height = img->height;
	args->scratch = img->scratch;
}

/* What plugin_main gets: the image and, for hostile plugins to aim at, the host's
 * secret and code, its root and its own page-table entry; placed at the top of its
 * stack. */
static struct plugin_args *place_args(struct plugin_args *args, const struct image *img,
				      ptent_t *root, ptent_t *code_entry)
{
	uintptr_t top = (uintptr_t)plugin_stack + PLUGIN_STACK_SIZE;
	struct plugin_args *placed = (struct plugin_args *)((top - sizeof(*args)) & ~(uintptr_t)15);

	set_image_args(args, img);
	args->host_secret = (uintptr_t)host_secret;
	args->host_function = (uintptr_t)host_leak_secret;
	args->page_table = (uintptr_t)root;
	args->page_table_entry = (uintptr_t)code_entry;
	args->stack_low = (uintptr_t)plugin_stack;
	args->stack_high = top;
	memset(plugin_stack, 0, PLUGIN_STACK_SIZE);
	*placed = *args;
	return placed;
}

/* plugin_main(args) as if called, with a return address of 0. */
static void start_frame(struct dune_tf *tf, const struct plugin *plugin,
			const struct plugin_args *placed)
{
	memset(tf, 0, sizeof(*tf));
	tf->rip = plugin->entry;
	tf->rdi = (uintptr_t)placed;
	tf->rsp = (uintptr_t)placed - sizeof(uint64_t);
	*(uint64_t *)tf->rsp = 0;
	tf->rflags = INITIAL_RFLAGS;
}

static ptent_t code_entry_of(ptent_t *root, const struct plugin *plugin, ptent_t **where)
{
	if (dune_vm_lookup(root, (void *)plugin->entry, 0, where))
		die("dune_vm_lookup of the plugin's code failed");
	return **where & ~(ptent_t)(PTE_A | PTE_D);     /* the hardware's bits may change */
}

/* Runs the plugin in a sandbox of its own; the outcome (enum outcome). */
static int run_plugin(const char *name, const struct plugin *plugin, const struct image *img,
		      struct plugin_args *args)
{
	ptent_t *root = sandbox_root(plugin, img);
	ptent_t *code_entry, code_entry_before = code_entry_of(root, plugin, &code_entry);
	struct dune_tf tf;
	int outcome;

	start_frame(&tf, plugin, place_args(args, img, root, code_entry));
	memset(&run, 0, sizeof(run));
	run.name = name;
	run.plugin = plugin;
	run.image = img;
	run.code_entry = (uintptr_t)code_entry;
	load_cr3((unsigned long)root);
	/* An alarm that fired before the jump would end a run not yet started (the
	 * library aborts then): the budget is far longer than the few instructions
	 * between here and the jump. */
	run.active = 1;
	alarm(BUDGET_SECONDS);
	outcome = dune_jump_to_user(&tf);
	alarm(0);
	run.active = 0;
	load_cr3((unsigned long)pgroot);

	print_verdict(outcome);
	if (code_entry_of(root, plugin, &code_entry) != code_entry_before)
		die("the plugin's page-table entry changed");
	dune_vm_free(root);
	return outcome;
}

// the host's integrity

static int guards_intact(void)
{
	for (size_t i = 0; i < PAGE; i++)
		if (stack_region[i] != GUARD_PATTERN
		    || stack_region[PAGE + PLUGIN_STACK_SIZE + i] != GUARD_PATTERN)
			return 0;
	return 1;
}

static int host_intact(void)
{
	return !memcmp(host_secret, SECRET_TEXT, sizeof(SECRET_TEXT)) && guards_intact();
}

static void enter_dune(void)
{
	int ret = dune_init(0);        /* nothing user-accessible until granted */

	if (!ret)
		ret = dune_enter();
	if (ret) {
		fprintf(stderr, LOG "cannot enter Dune mode (%d)\n", ret);
		exit(1);
	}
	install_handlers();
	stack_region = map_pages(PLUGIN_STACK_SIZE + 2 * PAGE);
	memset(stack_region, GUARD_PATTERN, PLUGIN_STACK_SIZE + 2 * PAGE);
	plugin_stack = stack_region + PAGE;
}

static int filter_task(const char *filter)
{
	if (!strcmp(filter, "invert"))
		return PLUGIN_INVERT;
	if (!strcmp(filter, "blur"))
		return PLUGIN_BLUR;
	fprintf(stderr, LOG "unknown filter %s (invert, blur)\n", filter);
	exit(2);
}

static void load_image(struct image *img, const char *path)
{
	size_t size = 0;
	unsigned char *data = path ? read_file(path, &size) : NULL;

	image_load(img, data, size);
	free(data);
}

// the commands

static int command_run(const char *path, const char *filter, const char *image_path)
{
	struct plugin_args args = {.task = filter_task(filter)};
	struct plugin plugin;
	struct image img;
	int outcome;

	plugin_load(&plugin, path);
	load_image(&img, image_path);
	enter_dune();
	outcome = run_plugin(filter, &plugin, &img, &args);
	return outcome == EXITED && run.status == 0 && host_intact() ? 0 : 1;
}

/* The same plugin code as a plain function, in a child process, natively. */
static int command_native(const char *path, const char *filter, const char *image_path)
{
	struct plugin_args args = {.task = filter_task(filter)};
	struct plugin plugin;
	struct image img;
	int status;
	pid_t child;

	plugin_load(&plugin, path);
	load_image(&img, image_path);
	set_image_args(&args, &img);
	fflush(NULL);
	child = fork();
	if (child < 0)
		die("fork failed");
	if (child == 0) {
		((void (*)(const struct plugin_args *))plugin.entry)(&args);
		_exit(127);     /* plugin_main does not return */
	}
	if (waitpid(child, &status, 0) != child)
		die("waitpid failed");
	fprintf(stderr, LOG "plugin %s (native): exited with status %d\n", filter,
		WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static const struct attack {
	const char *name;
	enum plugin_attack attack;
} ATTACKS[] = {
	{"read-secret", ATTACK_READ_SECRET},
	{"syscalls", ATTACK_SYSCALLS},
	{"loop", ATTACK_LOOP},
	{"stack-below", ATTACK_STACK_BELOW},
	{"stack-above", ATTACK_STACK_ABOVE},
	{"return-address", ATTACK_RETURN_ADDRESS},
	{"host-code", ATTACK_HOST_CODE},
	{"hypercall", ATTACK_HYPERCALL},
	{"page-tables", ATTACK_PAGE_TABLES},
	{"privileged", ATTACK_PRIVILEGED},
};
#define ATTACK_COUNT (sizeof(ATTACKS) / sizeof(ATTACKS[0]))

static const struct attack *find_attack(const char *name)
{
	for (size_t i = 0; i < ATTACK_COUNT; i++)
		if (!strcmp(ATTACKS[i].name, name))
			return &ATTACKS[i];
	return NULL;
}

static void run_attack(const struct attack *attack, const struct plugin *hostile)
{
	struct plugin_args args = {.task = attack->attack};
	struct image img;

	load_image(&img, NULL);
	run_plugin(attack->name, hostile, &img, &args);
	image_free(&img);
	if (!host_intact())
		die("the host's data changed");
}

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr, "usage: plugin_host run PLUGIN invert|blur [IMAGE.pgm]\n"
		"       plugin_host native PLUGIN invert|blur [IMAGE.pgm]\n"
		"       plugin_host hostile HOSTILE_PLUGIN FILTER_PLUGIN [ATTACK...]\n"
		"attacks:");
	for (size_t i = 0; i < ATTACK_COUNT; i++)
		fprintf(stderr, " %s", ATTACKS[i].name);
	fprintf(stderr, "\n");
	exit(2);
}

static int command_hostile(const char *hostile_path, const char *filter_path, int count,
			   char **attacks)
{
	struct plugin_args args = {.task = PLUGIN_INVERT};
	struct plugin hostile, filter;
	struct image img;
	int outcome;

	for (int i = 0; i < count; i++)
		if (!find_attack(attacks[i]))
			usage();
	plugin_load(&hostile, hostile_path);
	plugin_load(&filter, filter_path);
	enter_dune();
	if (!count)
		for (size_t i = 0; i < ATTACK_COUNT; i++)
			run_attack(&ATTACKS[i], &hostile);
	for (int i = 0; i < count; i++)
		run_attack(find_attack(attacks[i]), &hostile);
	load_image(&img, NULL);
	outcome = run_plugin("invert", &filter, &img, &args);
	if (!host_intact())
		die("the host's data changed");
	fprintf(stderr, LOG "host data intact: secret, stack guards, page-table entries\n");
	return outcome == EXITED && run.status == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	setvbuf(stderr, NULL, _IOLBF, 0);
	if (argc >= 4 && argc <= 5 && !strcmp(argv[1], "run"))
		return command_run(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
	if (argc >= 4 && argc <= 5 && !strcmp(argv[1], "native"))
		return command_native(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
	if (argc >= 4 && !strcmp(argv[1], "hostile"))
		return command_hostile(argv[2], argv[3], argc - 4, argv + 4);
	usage();
}
