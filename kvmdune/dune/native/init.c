/* init.c - entering Dune mode: dune_init (the probe, and re-executing a program
 * started natively under kvmdune), dune_enter (the handler stack and the upcall
 * entry), and the small utilities of libdune's API.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* The note that tells kvmdune's loader this program uses the Dune API
 * (kvmdune/hypercall.h): an ELF note, in the PT_NOTE segment the linker makes. */
static const struct {
    uint32_t namesz, descsz, type;
    char name[sizeof KVMDUNE_NOTE_OWNER];
} dune_api_note __attribute__((used, section(".note.kvmdune"), aligned(4))) = {
    sizeof KVMDUNE_NOTE_OWNER, 0, KVMDUNE_NOTE_DUNE_API, KVMDUNE_NOTE_OWNER,
};

/* Baked in by the package build (setup.py): how to start kvmdune. */
#ifndef KVMDUNE_PYTHON
#define KVMDUNE_PYTHON ""
#endif
#ifndef KVMDUNE_SOURCE_ROOT
#define KVMDUNE_SOURCE_ROOT ""
#endif

/* Set in the environment of a program re-executed under kvmdune, so that a kvmdune
 * without the Dune API fails clearly instead of re-executing forever; dune_init
 * removes it once the probe succeeds. It decides nothing else: the probe does. */
#define REEXEC_MARKER "KVMDUNE_DUNE_REEXEC"
/* Python that runs the kvmdune command from the build's source tree when the
 * package is not installed. */
#define BOOTSTRAP \
	"import sys; sys.path.insert(0, sys.argv.pop(1)); " \
	"from kvmdune.cli.main import main; sys.exit(main())"

#define HANDLER_STACK_SIZE (64 * 1024)
#define GUARD_SIZE 4096
#define FXSAVE_AREA_SIZE 512
#define CPUID_FEATURES 1
#define CPUID_OSXSAVE (1u << 27)
#define CPUID_XSAVE_LEAF 0xd

ptent_t *pgroot;

__thread struct kvmdune_thread kvmdune_self;
unsigned long kvmdune_fpu_area_size;
unsigned char kvmdune_fpu_uses_xsave;

static bool initialized;
static bool initialized_map_full;

long kvmdune_probe(void)
{
	return kvmdune_hypercall(KVMDUNE_HC_PROBE, 0, 0, 0, 0, 0, 0);
}

void kvmdune_fpu_detect(void)
{
	unsigned int eax, ebx, ecx, edx;

	if (kvmdune_fpu_area_size)
		return;
	__cpuid(CPUID_FEATURES, eax, ebx, ecx, edx);
	if (ecx & CPUID_OSXSAVE) {
		/* EBX: the area XSAVE needs for the components XCR0 enables. */
		__cpuid_count(CPUID_XSAVE_LEAF, 0, eax, ebx, ecx, edx);
		kvmdune_fpu_uses_xsave = 1;
		kvmdune_fpu_area_size = ebx;
	} else {
		kvmdune_fpu_area_size = FXSAVE_AREA_SIZE;
	}
	if (kvmdune_fpu_area_size < KVMDUNE_XSAVE_HEADER + KVMDUNE_XSAVE_HEADER_SIZE)
		kvmdune_fpu_area_size = KVMDUNE_XSAVE_HEADER + KVMDUNE_XSAVE_HEADER_SIZE;
}

// re-executing a program started natively

/* The program's own argv, from /proc/self/cmdline (main's may have been changed);
 * NULL-terminated, in one allocation, or NULL. */
static char **read_own_argv(int *argc_out)
{
	size_t size = 0, capacity = 4096;
	char *text = malloc(capacity + 1);
	char **argv;
	int fd, argc = 0;
	ssize_t n;

	if (!text)
		return NULL;
	fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(text);
		return NULL;
	}
	while ((n = read(fd, text + size, capacity - size)) > 0) {
		size += (size_t)n;
		if (size == capacity) {
			char *bigger = realloc(text, capacity * 2 + 1);
			if (!bigger) {
				n = -1;
				break;
			}
			text = bigger;
			capacity *= 2;
		}
	}
	close(fd);
	if (n < 0 || size == 0) {
		free(text);
		return NULL;
	}
	text[size] = '\0';
	for (size_t i = 0; i < size; i += strlen(text + i) + 1)
		argc++;
	argv = malloc(sizeof(char *) * (size_t)(argc + 1));
	if (!argv) {
		free(text);
		return NULL;
	}
	argc = 0;
	for (size_t i = 0; i < size; i += strlen(text + i) + 1)
		argv[argc++] = text + i;
	argv[argc] = NULL;
	*argc_out = argc;
	return argv;
}

/* exec `kvmdune run --argv0 ARGV0 -- EXE ARGS...`: the same binary, started again
 * under kvmdune. Returns only when that cannot be done, having said why. */
static void reexec_under_kvmdune(void)
{
	static const char fixed_tail[] = " (deleted)";
	char exe[PATH_MAX];
	char **argv, **command;
	ssize_t length;
	int argc, i = 0;

	if (getenv(REEXEC_MARKER)) {
		fprintf(stderr, "dune: this program was started again under kvmdune, but "
			"kvmdune does not offer it the Dune API (the probe hypercall fails): "
			"run it with `kvmdune run -- PROGRAM`\n");
		return;
	}
	if (!KVMDUNE_PYTHON[0]) {
		fprintf(stderr, "dune: not running under kvmdune, and this library was "
			"built without the path of kvmdune's Python: run the program with "
			"`kvmdune run -- PROGRAM`\n");
		return;
	}
	length = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (length <= 0) {
		fprintf(stderr, "dune: not running under kvmdune, and /proc/self/exe "
			"cannot be read (%s): run the program with `kvmdune run -- PROGRAM`\n",
			strerror(errno));
		return;
	}
	exe[length] = '\0';
	if ((size_t)length > sizeof(fixed_tail) - 1
	    && !strcmp(exe + length - (sizeof(fixed_tail) - 1), fixed_tail)) {
		fprintf(stderr, "dune: not running under kvmdune, and the program's file "
			"(%s) is gone: it cannot be started again under kvmdune\n", exe);
		return;
	}
	argv = read_own_argv(&argc);
	command = argv ? malloc(sizeof(char *) * (size_t)(argc + 10)) : NULL;
	if (!command) {
		fprintf(stderr, "dune: not running under kvmdune, and the program's "
			"arguments cannot be read: run it with `kvmdune run -- PROGRAM`\n");
		return;
	}
	command[i++] = (char *)KVMDUNE_PYTHON;
	command[i++] = (char *)"-c";
	command[i++] = (char *)BOOTSTRAP;
	command[i++] = (char *)KVMDUNE_SOURCE_ROOT;
	command[i++] = (char *)"run";
	command[i++] = (char *)"--argv0";
	command[i++] = argv[0];
	command[i++] = (char *)"--";
	command[i++] = exe;
	for (int arg = 1; arg < argc; arg++)
		command[i++] = argv[arg];
	command[i] = NULL;
	fflush(NULL);   /* what the program wrote so far is not lost */
	setenv(REEXEC_MARKER, "1", 1);
	execv(KVMDUNE_PYTHON, command);
	fprintf(stderr, "dune: not running under kvmdune, and kvmdune cannot be started "
		"(%s: %s): run the program with `kvmdune run -- PROGRAM`\n", KVMDUNE_PYTHON,
		strerror(errno));
	unsetenv(REEXEC_MARKER);
	free(command);
	free(argv[0]);
	free(argv);
}

// entry routines

int dune_init(bool map_full)
{
	long version, root;

	if (initialized)
		return map_full == initialized_map_full ? 0 : -EBUSY;
	version = kvmdune_probe();
	if (version == -ENOSYS) {
		reexec_under_kvmdune();
		return -ENOSYS;
	}
	if (version < 0)
		return (int)version;
	if (version != KVMDUNE_ABI_VERSION) {
		fprintf(stderr, "dune: kvmdune offers the Dune API version %ld; this program "
			"was built for version %d: rebuild it with this kvmdune's `kvmdune "
			"config` flags\n", version, KVMDUNE_ABI_VERSION);
		return -ENOSYS;
	}
	unsetenv(REEXEC_MARKER);
	root = kvmdune_hypercall(KVMDUNE_HC_INIT, map_full, 0, 0, 0, 0, 0);
	if (root < 0)
		return (int)root;
	pgroot = (ptent_t *)root;
	kvmdune_fpu_detect();
	initialized = true;
	initialized_map_full = map_full;
	return 0;
}

/* A thread's handler stack goes with the thread (a key's destructor runs at its
 * exit): the VMM forgets it first, so that no upcall can land on unmapped memory,
 * then it is unmapped. The main thread's lasts as long as the process. */
static pthread_key_t handler_stack_key;
static pthread_once_t handler_stack_key_once = PTHREAD_ONCE_INIT;
static bool handler_stack_key_made;

static void free_handler_stack(void *area)
{
	kvmdune_hypercall(KVMDUNE_HC_ENTER, 0, 0, 0, 0, 0, 0);
	kvmdune_self.stack_base = NULL;
	munmap(area, HANDLER_STACK_SIZE + GUARD_SIZE);
}

static void make_handler_stack_key(void)
{
	handler_stack_key_made = pthread_key_create(&handler_stack_key, free_handler_stack) == 0;
}

static int make_handler_stack(struct kvmdune_thread *self)
{
	unsigned long fs_base = 0;
	char *area;

	area = mmap(NULL, HANDLER_STACK_SIZE + GUARD_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (area == MAP_FAILED)
		return -ENOMEM;
	/* An overflowing handler faults on the guard page, below the stack. */
	if (mprotect(area, GUARD_SIZE, PROT_NONE)) {
		munmap(area, HANDLER_STACK_SIZE + GUARD_SIZE);
		return -ENOMEM;
	}
	if (syscall(SYS_arch_prctl, ARCH_GET_FS, &fs_base)) {
		munmap(area, HANDLER_STACK_SIZE + GUARD_SIZE);
		return -errno;
	}
	self->stack_base = area + GUARD_SIZE;
	self->stack_size = HANDLER_STACK_SIZE;
	pthread_once(&handler_stack_key_once, make_handler_stack_key);
	if (handler_stack_key_made)
		pthread_setspecific(handler_stack_key, area);
	self->user_fs = fs_base;      /* as libdune: user code starts with the program's */
	return 0;
}

int dune_enter(void)
{
	struct kvmdune_thread *self = &kvmdune_self;
	long ret;

	if (!initialized)
		return -EINVAL;
	if (!self->stack_base) {
		int made = make_handler_stack(self);
		if (made)
			return made;
	}
	ret = kvmdune_hypercall(KVMDUNE_HC_ENTER, (long)kvmdune_upcall_entry,
				(long)self->stack_base, (long)self->stack_size, 0, 0, 0);
	return ret < 0 ? (int)ret : 0;
}

// utilities

unsigned long dune_get_user_fs(void)
{
	return kvmdune_self.user_fs;
}

void dune_set_user_fs(unsigned long fs_base)
{
	kvmdune_self.user_fs = fs_base;
}

int dune_printf(const char *fmt, ...)
{
	va_list args;
	int ret;

	va_start(args, fmt);
	ret = vprintf(fmt, args);
	va_end(args);
	fflush(stdout);
	return ret;
}

void dune_die(void)
{
	fflush(NULL);
	syscall(SYS_exit_group, EXIT_FAILURE);
	_exit(EXIT_FAILURE);
}
