/* sthread.c - sthreads (Wedge) on the Dune API: contexts, tags, the per-sthread
 * root, the system-call policy and recycling by dirty bits (include/sthread.h says
 * what an sthread reaches).
 *
 * sthread_init takes the checkpoint: the program's mappings from /proc/self/maps
 * (read before dune_init, so that the library's own page-table window and handler
 * stacks are never part of it), every page touched so that it is mapped, and a copy
 * of every writable one.
 *
 * A fresh sthread gets a clone of pgroot (dune_init(0): no page is PERM_U in it),
 * where the read-only segments are granted as they are (dune_vm_mprotect), every
 * writable page is pointed at the sthread's private copy of it (written through
 * dune_vm_page_walk pointers, checked by the VMM at the flush), its stack and its
 * tags are granted with their rights. A worker pthread (a vCPU under kvmdune) runs
 * it: load_cr3 of its root, dune_jump_to_user into sthread_entry, which calls the
 * function and ends with the private STHREAD_EXIT_CALL. The run ends in a handler
 * (that call, exit, a fault, an exception) with dune_ret_from_user.
 *
 * The system-call handler runs on the worker's own handler stack in the program's
 * view: it serves a call only with the sthread's context, and passes a buffer to the
 * kernel only at the program's address of the memory the sthread itself reaches
 * there (a private copy's own address for a writable segment).
 *
 * Recycling (sthread_join with room in the pool): kvmdune_vm_clear_bits reads and
 * clears the dirty bits of the root over the writable segments and the stack; only
 * those pages are restored (from the checkpoint; stack pages zeroed).
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dune.h"
#include "sthread.h"

#define PAGE ((uintptr_t)PGSIZE)
#define PAGE_DOWN(x) ((uintptr_t)(x) & ~(PAGE - 1))
#define PAGE_UP(x) (((uintptr_t)(x) + PAGE - 1) & ~(PAGE - 1))
#define MAX_SEGMENTS 128
#define MAX_TAGS 256
#define STACK_SIZE (64 * 1024)
#define MAPS_LIMIT (1 << 20)
#define DEFAULT_POOL 8
#define INITIAL_RFLAGS 0x202            /* IF, and the reserved bit 1 */
#define EXCEPTION_VECTORS 22
#define T_PGFLT 14
#define PATH_LIMIT 4096
/* The private call sthread_entry ends with: far from any Linux system call. */
#define STHREAD_EXIT_CALL 0x5354
#define SMALLOC_ALIGN 16
#define USER_SPACE_END ((uintptr_t)1 << 47)

/* How a run ended: what dune_jump_to_user returns (1 + enum sthread_end). */
#define RUN_END(how) ((int)(how) + 1)

// the checkpoint

struct segment {
	uintptr_t start, end;
	int perm;               /* read-only ones: PERM_R, PERM_X */
	size_t offset;          /* writable ones: where their copy is in the checkpoint */
};

static struct segment readonly[MAX_SEGMENTS], writable[MAX_SEGMENTS];
static int readonly_count, writable_count;
static unsigned char *checkpoint;
static size_t checkpoint_size;
static unsigned long sthread_fs;        /* the FS base sthreads run with (a copy's TLS) */
static bool ready;

// tags

struct free_block {
	size_t size;                    /* of the block, header included */
	struct free_block *next;
};

struct tag {
	tag_t id;                       /* never reused: a grant names one region */
	unsigned char *base;            /* NULL: the slot is free */
	size_t size, top;
	struct free_block *free;
};

static struct tag tags[MAX_TAGS];
static tag_t last_tag_id;

// sthreads

enum state { IDLE, STARTING, RUNNING, EXITED, QUITTING };

struct sthread {
	ptent_t *root;
	unsigned char *copy;            /* the private copies of the writable segments */
	unsigned char *stack;
	sc_t sc;
	stcb_t cb;
	void *arg;
	void *ret;
	struct sthread_exit exit;
	/* Pages of the copies, then of the stack, the kernel wrote for the sthread's
	 * calls (through the program's view: the root's dirty bits do not see them). */
	unsigned char *written;
	int error;                      /* the worker could not run it: -errno */
	long recycled;                  /* -1 fresh, else the pages restored for this run */
	enum state state;
	pthread_t worker;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct sthread *next_idle;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;   /* tags, the pool */
static struct sthread *idle;
static int idle_count, pool_size = DEFAULT_POOL;
static __thread struct sthread *running;

// reading /proc/self/maps

static bool ignored_mapping(const char *name)
{
	static const char *const names[] = {"[stack]", "[vvar]", "[vvar_vclock]", "[vdso]",
					    "[vsyscall]", "[dune-pagetables]"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i]))
			return true;
	return false;
}

static int add_segment(uintptr_t start, uintptr_t end, const char *perms)
{
	if (perms[1] == 'w') {
		struct segment *last = writable_count ? &writable[writable_count - 1] : NULL;

		if (last && last->end == start) {   /* adjacent: one range, one copy */
			last->end = end;
			return 0;
		}
		if (writable_count == MAX_SEGMENTS)
			return -E2BIG;
		writable[writable_count++] = (struct segment){start, end, PERM_R | PERM_W, 0};
		return 0;
	}
	if (readonly_count == MAX_SEGMENTS)
		return -E2BIG;
	readonly[readonly_count++] = (struct segment){
		start, end, PERM_R | (perms[2] == 'x' ? PERM_X : 0), 0};
	return 0;
}

/* One line of /proc/self/maps; [skip_start, skip_end) (the buffer holding the text,
 * gone after the parse) is left out. */
static int parse_maps_line(char *line, uintptr_t skip_start, uintptr_t skip_end)
{
	unsigned long start, end;
	char perms[5], name[256] = "";
	int ret = 0;

	if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %255s", &start, &end, perms, name) < 3)
		return -EINVAL;
	/* Private mappings the program can read; shared ones stay the program's. */
	if (perms[0] != 'r' || perms[3] != 'p' || end > USER_SPACE_END || ignored_mapping(name))
		return 0;
	if (start < skip_start)
		ret = add_segment(start, end < skip_start ? end : skip_start, perms);
	if (!ret && end > skip_end)
		ret = add_segment(start > skip_end ? start : skip_end, end, perms);
	return ret;
}

static int read_maps(void)
{
	char *text = mmap(NULL, MAPS_LIMIT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	size_t size = 0;
	ssize_t got;
	int ret = 0;

	if (text == MAP_FAILED || fd < 0) {
		if (text != MAP_FAILED)
			munmap(text, MAPS_LIMIT);
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	while ((got = read(fd, text + size, MAPS_LIMIT - 1 - size)) > 0)
		size += (size_t)got;
	close(fd);
	text[size] = 0;
	for (char *line = text, *next; line && *line && !ret; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		ret = parse_maps_line(line, (uintptr_t)text, (uintptr_t)text + MAPS_LIMIT);
	}
	munmap(text, MAPS_LIMIT);
	return ret;
}

/* Every page mapped now (a fresh clone has only pages the program view has). */
static void touch_segments(void)
{
	for (int i = 0; i < readonly_count; i++)
		for (uintptr_t page = readonly[i].start; page < readonly[i].end; page += PAGE)
			(void)*(volatile unsigned char *)page;
	for (int i = 0; i < writable_count; i++)
		for (uintptr_t page = writable[i].start; page < writable[i].end; page += PAGE) {
			volatile unsigned char *byte = (volatile unsigned char *)page;
			*byte = *byte;
		}
}

static void *map_populated(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static bool within(uintptr_t start, size_t length, uintptr_t range_start, uintptr_t range_end)
{
	return start >= range_start && start < range_end && length <= range_end - start;
}

// handlers: every event of user code ends its run or is decided here

static void __attribute__((noreturn)) host_bug(const char *what, struct dune_tf *tf)
{
	fprintf(stderr, "sthread: %s outside any sthread (in the program itself)\n", what);
	dune_dump_trap_frame(tf);
	abort();
}

static void on_syscall(struct dune_tf *tf);

static void on_page_fault(uintptr_t address, uint64_t fec, struct dune_tf *tf)
{
	struct sthread *s = running;

	if (!s)
		host_bug("a page fault", tf);
	s->exit.address = address;
	s->exit.fec = fec;
	s->exit.rip = tf->rip;
	dune_ret_from_user(RUN_END(STHREAD_FAULTED));
}

static void on_exception(struct dune_tf *tf, int vector)
{
	struct sthread *s = running;

	if (!s)
		host_bug("an exception", tf);
	s->exit.vector = vector;
	s->exit.rip = tf->rip;
	dune_ret_from_user(RUN_END(STHREAD_EXCEPTION));
}

/* The tf does not carry the vector: one small function per vector records it. */
#define EXCEPTION_HANDLER(n) \
	static void on_vector_##n(struct dune_tf *tf) { on_exception(tf, n); }
EXCEPTION_HANDLER(0) EXCEPTION_HANDLER(1) EXCEPTION_HANDLER(3) EXCEPTION_HANDLER(4)
EXCEPTION_HANDLER(5) EXCEPTION_HANDLER(6) EXCEPTION_HANDLER(7) EXCEPTION_HANDLER(10)
EXCEPTION_HANDLER(11) EXCEPTION_HANDLER(12) EXCEPTION_HANDLER(13) EXCEPTION_HANDLER(16)
EXCEPTION_HANDLER(17) EXCEPTION_HANDLER(19) EXCEPTION_HANDLER(21)

static const dune_intr_cb EXCEPTION_HANDLERS[EXCEPTION_VECTORS] = {
	[0] = on_vector_0, [1] = on_vector_1, [3] = on_vector_3, [4] = on_vector_4,
	[5] = on_vector_5, [6] = on_vector_6, [7] = on_vector_7, [10] = on_vector_10,
	[11] = on_vector_11, [12] = on_vector_12, [13] = on_vector_13, [16] = on_vector_16,
	[17] = on_vector_17, [19] = on_vector_19, [21] = on_vector_21,
};

static int install_handlers(void)
{
	dune_register_syscall_handler(on_syscall);
	dune_register_pgflt_handler(on_page_fault);
	for (int vector = 0; vector < EXCEPTION_VECTORS; vector++) {
		int ret = EXCEPTION_HANDLERS[vector]
			  ? dune_register_intr_handler(vector, EXCEPTION_HANDLERS[vector]) : 0;

		if (ret)
			return ret;
	}
	return 0;
}

int sthread_init(void)
{
	unsigned char *at;
	int ret;

	if (ready)
		return 0;
	ret = read_maps();
	if (ret)
		return ret;
	if ((ret = dune_init(0)) || (ret = dune_enter()) || (ret = install_handlers()))
		return ret;
	if (syscall(SYS_arch_prctl, ARCH_GET_FS, &sthread_fs))
		return -errno;
	touch_segments();
	for (int i = 0; i < writable_count; i++) {
		writable[i].offset = checkpoint_size;
		checkpoint_size += writable[i].end - writable[i].start;
	}
	/* Sthreads run with this thread's TLS, in their copy of it. */
	bool tls_copied = false;
	for (int i = 0; i < writable_count; i++)
		tls_copied |= within(sthread_fs, 64, writable[i].start, writable[i].end);
	if (!tls_copied || !(checkpoint = map_populated(checkpoint_size)))
		return tls_copied ? -ENOMEM : -ENOTSUP;
	at = checkpoint;
	for (int i = 0; i < writable_count; i++) {
		memcpy(at, (void *)writable[i].start, writable[i].end - writable[i].start);
		at += writable[i].end - writable[i].start;
	}
	ready = true;
	return 0;
}

// contexts

void sc_init(sc_t *sc)
{
	memset(sc, 0, sizeof(*sc));
}

static struct tag *find_tag(tag_t tag)
{
	for (int i = 0; tag > 0 && i < MAX_TAGS; i++)
		if (tags[i].base && tags[i].id == tag)
			return &tags[i];
	return NULL;
}

int sc_mem_add(sc_t *sc, tag_t tag, int prot)
{
	if (prot & ~(PROT_READ | PROT_WRITE) || !(prot & PROT_READ))
		return -EINVAL;
	pthread_mutex_lock(&lock);
	bool known = find_tag(tag) != NULL;
	pthread_mutex_unlock(&lock);
	if (!known)
		return -EINVAL;
	for (int i = 0; i < sc->sc_mem_count; i++)
		if (sc->sc_mem[i].tag == tag) {
			sc->sc_mem[i].prot |= prot;
			return 0;
		}
	if (sc->sc_mem_count == SC_MAX_TAGS)
		return -ENOSPC;
	sc->sc_mem[sc->sc_mem_count].tag = tag;
	sc->sc_mem[sc->sc_mem_count++].prot = prot;
	return 0;
}

int sc_fd_add(sc_t *sc, int fd, int prot)
{
	if (fd < 0 || !prot || prot & ~(PROT_READ | PROT_WRITE))
		return -EINVAL;
	for (int i = 0; i < sc->sc_fd_count; i++)
		if (sc->sc_fd[i].fd == fd) {
			sc->sc_fd[i].prot |= prot;
			return 0;
		}
	if (sc->sc_fd_count == SC_MAX_FDS)
		return -ENOSPC;
	sc->sc_fd[sc->sc_fd_count].fd = fd;
	sc->sc_fd[sc->sc_fd_count++].prot = prot;
	return 0;
}

int sc_sys_add(sc_t *sc, int sysno)
{
	if (sysno < 0 || sysno >= SC_MAX_SYSCALLS)
		return -EINVAL;
	sc->sc_sys[sysno / 8] |= (unsigned char)(1u << (sysno % 8));
	return 0;
}

static bool sc_allows_call(const sc_t *sc, uint64_t sysno)
{
	return sysno < SC_MAX_SYSCALLS && sc->sc_sys[sysno / 8] & (1u << (sysno % 8));
}

static int sc_fd_rights(const sc_t *sc, int fd)
{
	for (int i = 0; i < sc->sc_fd_count; i++)
		if (sc->sc_fd[i].fd == fd)
			return sc->sc_fd[i].prot;
	return 0;
}

static void sc_fd_remove(sc_t *sc, int fd)
{
	for (int i = 0; i < sc->sc_fd_count; i++)
		if (sc->sc_fd[i].fd == fd) {
			sc->sc_fd[i] = sc->sc_fd[--sc->sc_fd_count];
			return;
		}
}

// tags

tag_t tag_new_sized(size_t size)
{
	unsigned char *base;
	tag_t tag = -ENOSPC;

	if (!ready)
		return -EINVAL;       /* a tag from before the checkpoint would be copied */
	if (!size || size > ((size_t)1 << 40))
		return -EINVAL;
	size = PAGE_UP(size);
	/* Mapped now: every sthread root cloned from here on has its pages. */
	base = map_populated(size);
	if (!base)
		return -ENOMEM;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_TAGS; i++)
		if (!tags[i].base && last_tag_id < INT32_MAX) {
			tag = ++last_tag_id;
			tags[i] = (struct tag){tag, base, size, 0, NULL};
			break;
		}
	pthread_mutex_unlock(&lock);
	if (tag < 0)
		munmap(base, size);
	return tag;
}

tag_t tag_new(void)
{
	return tag_new_sized(STHREAD_TAG_SIZE);
}

int tag_delete(tag_t tag)
{
	struct tag *t;
	unsigned char *base;
	size_t size;

	pthread_mutex_lock(&lock);
	t = find_tag(tag);
	if (!t) {
		pthread_mutex_unlock(&lock);
		return -EINVAL;
	}
	base = t->base;
	size = t->size;
	*t = (struct tag){0};
	pthread_mutex_unlock(&lock);
	/* munmap takes the pages out of every root that has them. */
	return munmap(base, size) ? -errno : 0;
}

void *tag_base(tag_t tag, size_t *size)
{
	void *base = NULL;

	pthread_mutex_lock(&lock);
	struct tag *t = find_tag(tag);
	if (t) {
		base = t->base;
		if (size)
			*size = t->size;
	}
	pthread_mutex_unlock(&lock);
	return base;
}

/* A block: a free_block header (its size), then the caller's bytes. */
void *smalloc(tag_t tag, size_t size)
{
	size_t need;
	void *p = NULL;
	struct tag *t;

	if (size > ((size_t)1 << 40))
		return NULL;
	need = (sizeof(struct free_block) + size + SMALLOC_ALIGN - 1) & ~(size_t)(SMALLOC_ALIGN - 1);
	pthread_mutex_lock(&lock);
	t = find_tag(tag);
	if (t) {
		struct free_block **link = &t->free;

		while (*link && (*link)->size < need)
			link = &(*link)->next;
		if (*link) {                       /* first fit, taken whole */
			struct free_block *block = *link;
			*link = block->next;
			p = block + 1;
		} else if (need <= t->size - t->top) {
			struct free_block *block = (struct free_block *)(t->base + t->top);
			block->size = need;
			t->top += need;
			p = block + 1;
		}
	}
	pthread_mutex_unlock(&lock);
	return p;
}

void sfree(void *ptr)
{
	struct free_block *block = (struct free_block *)ptr - 1;

	if (!ptr)
		return;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_TAGS; i++) {
		struct tag *t = &tags[i];

		if (t->base && (unsigned char *)ptr > t->base && (unsigned char *)ptr < t->base + t->top) {
			block->next = t->free;
			t->free = block;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
}

// building an sthread's root

static int tag_perm(int prot)
{
	return PERM_U | PERM_R | (prot & PROT_WRITE ? PERM_W : 0);
}

struct frames {
	uintptr_t *pa;
	size_t count, capacity;
};

static int collect_frame(const void *arg, ptent_t *pte, void *va)
{
	struct frames *frames = (struct frames *)arg;

	(void)va;
	if (!(*pte & PTE_P) || frames->count == frames->capacity)
		return -EFAULT;
	frames->pa[frames->count++] = PTE_ADDR(*pte);
	return 0;
}

/* The guest-physical frames of [start, start + size) in pgroot, one per page. */
static int frames_of(void *start, size_t size, struct frames *frames)
{
	int ret;

	frames->capacity = size / PAGE;
	frames->count = 0;
	frames->pa = malloc(frames->capacity * sizeof(uintptr_t));
	if (!frames->pa)
		return -ENOMEM;
	ret = dune_vm_page_walk(pgroot, start, (char *)start + size - 1, collect_frame, frames);
	if (!ret && frames->count != frames->capacity)
		ret = -EFAULT;
	if (ret) {
		free(frames->pa);
		frames->pa = NULL;
		frames->count = 0;
	}
	return ret;
}

struct remap {
	const struct frames *frames;
	const struct segment *segment;
	unsigned char *done;            /* per page of the segment: pointed at its copy */
};

static int point_at_copy(const void *arg, ptent_t *pte, void *va)
{
	const struct remap *remap = arg;
	size_t page = ((uintptr_t)va - remap->segment->start) / PAGE;

	*pte = remap->frames->pa[remap->segment->offset / PAGE + page] | PTE_P | PTE_W | PTE_U
	       | PTE_NX;
	remap->done[page] = 1;
	return 0;
}

/* Every page of the writable segments, in the root, at its copy in s->copy. */
static int grant_copies(struct sthread *s)
{
	struct frames frames;
	int ret = frames_of(s->copy, checkpoint_size, &frames);

	for (int i = 0; !ret && i < writable_count; i++) {
		const struct segment *seg = &writable[i];
		size_t pages = (seg->end - seg->start) / PAGE;
		struct remap remap = {&frames, seg, calloc(pages, 1)};

		if (!remap.done) {
			ret = -ENOMEM;
			break;
		}
		ret = dune_vm_page_walk(s->root, (void *)seg->start, (void *)(seg->end - 1),
					point_at_copy, &remap);
		if (!ret)
			ret = (int)kvmdune_hypercall(KVMDUNE_HC_FLUSH_TLB, (long)seg->start,
						     (long)(seg->end - seg->start), 0, 0, 0, 0);
		/* Pages the clone did not have (the program unmapped and remapped them
		 * since the checkpoint): mapped one by one. */
		for (size_t page = 0; !ret && page < pages; page++)
			if (!remap.done[page])
				ret = dune_vm_map_phys(s->root, (void *)(seg->start + page * PAGE), PAGE,
						       (void *)frames.pa[seg->offset / PAGE + page],
						       PERM_U | PERM_R | PERM_W);
		free(remap.done);
	}
	free(frames.pa);
	return ret;
}

static int count_present(const void *arg, ptent_t *pte, void *va)
{
	(void)va;
	if (*pte & PTE_P)
		++*(size_t *)arg;
	return 0;
}

/* The tag's pages in the root with rights prot; pages the root lacks (a tag made
 * after the root was cloned) are mapped at their frames. */
static int grant_tag(ptent_t *root, const struct tag *t, int prot)
{
	struct frames frames;
	size_t present = 0;
	int ret = dune_vm_page_walk(root, t->base, t->base + t->size - 1, count_present, &present);

	if (ret)
		return ret;
	if (present == t->size / PAGE)
		return dune_vm_mprotect(root, t->base, t->size, tag_perm(prot));
	ret = frames_of(t->base, t->size, &frames);
	for (size_t page = 0; !ret && page < frames.count; page++)
		ret = dune_vm_map_phys(root, t->base + page * PAGE, PAGE, (void *)frames.pa[page],
				       tag_perm(prot));
	free(frames.pa);
	return ret;
}

static int revoke_tag(ptent_t *root, const struct tag *t)
{
	return dune_vm_mprotect(root, t->base, t->size, PERM_R);   /* no PERM_U */
}

/* The tags of sc (checked to exist) granted in the root, those of old revoked. */
static int grant_tags(ptent_t *root, const sc_t *old, const sc_t *sc)
{
	int ret = 0;

	pthread_mutex_lock(&lock);
	for (int i = 0; old && !ret && i < old->sc_mem_count; i++) {
		struct tag *t = find_tag(old->sc_mem[i].tag);
		bool kept = false;

		for (int j = 0; j < sc->sc_mem_count; j++)
			kept |= sc->sc_mem[j].tag == old->sc_mem[i].tag
				&& sc->sc_mem[j].prot == old->sc_mem[i].prot;
		if (t && !kept)
			ret = revoke_tag(root, t);
	}
	for (int i = 0; !ret && i < sc->sc_mem_count; i++) {
		struct tag *t = find_tag(sc->sc_mem[i].tag);
		bool had = false;

		for (int j = 0; old && j < old->sc_mem_count; j++)
			had |= old->sc_mem[j].tag == sc->sc_mem[i].tag
			       && old->sc_mem[j].prot == sc->sc_mem[i].prot;
		if (!t)
			ret = -EINVAL;
		else if (!had)
			ret = grant_tag(root, t, sc->sc_mem[i].prot);
	}
	pthread_mutex_unlock(&lock);
	return ret;
}

static int build_root(struct sthread *s)
{
	int ret = 0;

	s->root = dune_vm_clone(pgroot);
	if (!s->root)
		return -ENOMEM;
	for (int i = 0; !ret && i < readonly_count; i++)
		ret = dune_vm_mprotect(s->root, (void *)readonly[i].start,
				       readonly[i].end - readonly[i].start,
				       PERM_U | readonly[i].perm);
	if (!ret)
		ret = grant_copies(s);
	if (!ret)
		ret = dune_vm_mprotect(s->root, s->stack, STACK_SIZE, PERM_U | PERM_R | PERM_W);
	return ret;
}

// recycling

static bool test_bit(const unsigned char *bitmap, size_t bit)
{
	return bitmap[bit / 8] & (1u << (bit % 8));
}

static void set_bit(unsigned char *bitmap, size_t bit)
{
	bitmap[bit / 8] |= (unsigned char)(1u << (bit % 8));
}

static size_t copy_pages(void)
{
	return checkpoint_size / PAGE;
}

/* Index in s->written of the page at `at` in the copies or the stack, or -1. */
static long written_index(const struct sthread *s, uintptr_t at)
{
	if (at >= (uintptr_t)s->copy && at < (uintptr_t)s->copy + checkpoint_size)
		return (long)((at - (uintptr_t)s->copy) / PAGE);
	if (at >= (uintptr_t)s->stack && at < (uintptr_t)s->stack + STACK_SIZE)
		return (long)(copy_pages() + (at - (uintptr_t)s->stack) / PAGE);
	return -1;
}

static void note_kernel_write(struct sthread *s, uintptr_t at, size_t length)
{
	for (uintptr_t page = PAGE_DOWN(at); page < at + length; page += PAGE) {
		long index = written_index(s, page);

		if (index >= 0)
			set_bit(s->written, (size_t)index);
	}
}

/* Restores each page of [start, end) (its memory at `memory`) that the sthread
 * wrote since the last call (its dirty bits, read and cleared in one call) or the
 * kernel wrote for it (s->written from `first`): from `original`, or zeroes when
 * that is NULL. The count restored, or -errno. */
static long restore_written(struct sthread *s, uintptr_t start, uintptr_t end,
			    unsigned char *memory, const unsigned char *original, size_t first)
{
	size_t pages = (end - start) / PAGE;
	unsigned char *dirty = calloc((pages + 7) / 8, 1);
	long restored = 0, ret;

	if (!dirty)
		return -ENOMEM;
	ret = kvmdune_vm_clear_bits(s->root, (void *)start, end - start, PTE_D, dirty);
	for (size_t page = 0; ret >= 0 && page < pages; page++) {
		if (!test_bit(dirty, page) && !test_bit(s->written, first + page))
			continue;
		if (original)
			memcpy(memory + page * PAGE, original + page * PAGE, PAGE);
		else
			memset(memory + page * PAGE, 0, PAGE);
		restored++;
	}
	free(dirty);
	return ret < 0 ? ret : restored;
}

/* The root's memory as a fresh sthread's: the pages restored, or -errno. */
static long recycle(struct sthread *s)
{
	long restored = 0, ret = 0;

	for (int i = 0; ret >= 0 && i < writable_count; i++) {
		const struct segment *seg = &writable[i];

		ret = restore_written(s, seg->start, seg->end, s->copy + seg->offset,
				      checkpoint + seg->offset, seg->offset / PAGE);
		restored += ret;
	}
	if (ret >= 0)
		ret = restore_written(s, (uintptr_t)s->stack, (uintptr_t)s->stack + STACK_SIZE,
				      s->stack, NULL, copy_pages());
	memset(s->written, 0, (copy_pages() + STACK_SIZE / PAGE + 7) / 8);
	return ret < 0 ? ret : restored + ret;
}

// running

/* User level: the sthread's function, then the end of the run. */
static void __attribute__((noreturn, noinline)) sthread_entry(stcb_t cb, void *arg)
{
	void *ret = cb(arg);

	for (;;)
		__asm__ volatile("syscall" : : "a"(STHREAD_EXIT_CALL), "D"(ret) : "rcx", "r11",
				 "memory");
}

static int run_once(struct sthread *s)
{
	struct dune_tf tf;
	uint64_t *top = (uint64_t *)(s->stack + STACK_SIZE) - 1;
	int outcome;

	memset(&tf, 0, sizeof(tf));
	memset(&s->exit, 0, sizeof(s->exit));
	s->exit.recycled = s->recycled;
	*top = 0;                       /* sthread_entry's return address: none */
	tf.rip = (uintptr_t)sthread_entry;
	tf.rsp = (uintptr_t)top;        /* as after a call: 8 past 16-byte alignment */
	tf.rdi = (uintptr_t)s->cb;
	tf.rsi = (uintptr_t)s->arg;
	tf.rflags = INITIAL_RFLAGS;
	dune_set_user_fs(sthread_fs);
	load_cr3((unsigned long)s->root | CR3_NOFLUSH);
	running = s;
	outcome = dune_jump_to_user(&tf);
	running = NULL;
	if (outcome < RUN_END(STHREAD_RETURNED) || outcome > RUN_END(STHREAD_EXCEPTION))
		return outcome < 0 ? outcome : -EIO;
	s->exit.how = (enum sthread_end)(outcome - 1);
	return 0;
}

static void set_state(struct sthread *s, enum state state)
{
	pthread_mutex_lock(&s->lock);
	s->state = state;
	pthread_cond_broadcast(&s->changed);
	pthread_mutex_unlock(&s->lock);
}

static void *worker_main(void *arg)
{
	struct sthread *s = arg;
	int entered = dune_enter();     /* this thread's handler stack */

	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (s->state != STARTING && s->state != QUITTING)
			pthread_cond_wait(&s->changed, &s->lock);
		if (s->state == QUITTING)
			break;
		s->state = RUNNING;
		pthread_mutex_unlock(&s->lock);
		s->error = entered ? entered : run_once(s);
		pthread_mutex_lock(&s->lock);
		s->state = EXITED;
		pthread_cond_broadcast(&s->changed);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void destroy(struct sthread *s)
{
	if (s->worker) {
		set_state(s, QUITTING);
		pthread_join(s->worker, NULL);
	}
	if (s->root)
		dune_vm_free(s->root);
	if (s->copy)
		munmap(s->copy, checkpoint_size);
	if (s->stack)
		munmap(s->stack, STACK_SIZE);
	free(s->written);
	pthread_cond_destroy(&s->changed);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static struct sthread *create_fresh(const sc_t *sc, int *error)
{
	struct sthread *s = calloc(1, sizeof(*s));

	if (!s) {
		*error = -ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->changed, NULL);
	s->state = IDLE;
	s->recycled = -1;
	s->stack = map_populated(STACK_SIZE);
	s->copy = map_populated(checkpoint_size);
	s->written = calloc((copy_pages() + STACK_SIZE / PAGE + 7) / 8, 1);
	*error = s->stack && s->copy && s->written ? 0 : -ENOMEM;
	if (!*error) {
		memcpy(s->copy, checkpoint, checkpoint_size);
		*error = build_root(s);
	}
	if (!*error)
		*error = grant_tags(s->root, NULL, sc);
	if (!*error)
		*error = -pthread_create(&s->worker, NULL, worker_main, s);
	if (*error) {
		s->worker = 0;
		destroy(s);
		return NULL;
	}
	return s;
}

static struct sthread *take_idle(void)
{
	struct sthread *s;

	pthread_mutex_lock(&lock);
	s = idle;
	if (s) {
		idle = s->next_idle;
		idle_count--;
	}
	pthread_mutex_unlock(&lock);
	return s;
}

int sthread_create(sthread_t *st, const sc_t *sc, stcb_t cb, void *arg)
{
	struct sthread *s;
	int error = 0;

	if (!ready)
		return -EINVAL;
	s = take_idle();
	if (s) {
		error = grant_tags(s->root, &s->sc, sc);
		if (error) {
			destroy(s);
			return error;
		}
	} else {
		s = create_fresh(sc, &error);
		if (!s)
			return error;
	}
	s->sc = *sc;
	s->cb = cb;
	s->arg = arg;
	s->ret = NULL;
	s->error = 0;
	*st = s;
	set_state(s, STARTING);
	return 0;
}

void sthread_set_pool(int count)
{
	struct sthread *surplus = NULL;

	pthread_mutex_lock(&lock);
	pool_size = count < 0 ? 0 : count;
	while (idle_count > pool_size) {
		struct sthread *s = idle;
		idle = s->next_idle;
		idle_count--;
		s->next_idle = surplus;
		surplus = s;
	}
	pthread_mutex_unlock(&lock);
	while (surplus) {
		struct sthread *s = surplus;
		surplus = s->next_idle;
		destroy(s);
	}
}

/* Into the pool when it has room (restored), else destroyed. */
static void release(struct sthread *s)
{
	bool keep;

	pthread_mutex_lock(&lock);
	keep = idle_count < pool_size;
	if (keep)
		idle_count++;           /* the place is taken now; the sthread joins below */
	pthread_mutex_unlock(&lock);
	if (keep && (s->recycled = recycle(s)) < 0) {
		pthread_mutex_lock(&lock);
		idle_count--;
		pthread_mutex_unlock(&lock);
		keep = false;
	}
	if (!keep) {
		destroy(s);
		return;
	}
	set_state(s, IDLE);
	pthread_mutex_lock(&lock);
	s->next_idle = idle;
	idle = s;
	pthread_mutex_unlock(&lock);
}

int sthread_join_exit(sthread_t s, void **ret, struct sthread_exit *exit_info)
{
	int result;

	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	if (s->state != STARTING && s->state != RUNNING && s->state != EXITED) {
		pthread_mutex_unlock(&s->lock);
		return -EINVAL;
	}
	while (s->state != EXITED)
		pthread_cond_wait(&s->changed, &s->lock);
	pthread_mutex_unlock(&s->lock);
	result = s->error ? s->error : (int)s->exit.how;
	if (ret)
		*ret = s->exit.how == STHREAD_RETURNED ? s->ret : NULL;
	if (exit_info)
		*exit_info = s->exit;
	release(s);
	return result;
}

int sthread_join(sthread_t s, void **ret)
{
	return sthread_join_exit(s, ret, NULL);
}

// the system-call policy

enum effect { NO_EFFECT, RETURNS_FD, CLOSES_FD };

/* A pointer argument: its size is argument len_arg's value, or size. */
struct pointer_arg {
	signed char arg;                /* -1: none */
	signed char len_arg;            /* -1: the fixed size */
	unsigned short size;
	bool kernel_writes;
	bool may_be_null;
};

struct call_rule {
	int sysno;
	signed char fd_arg;             /* -1: none */
	unsigned char fd_prot;          /* rights needed on it (0: either) */
	bool fd_may_be_cwd;             /* AT_FDCWD instead of a descriptor */
	signed char path_arg;           /* -1: none */
	struct pointer_arg pointers[2];
	unsigned char null_args;        /* arguments that must be 0 (a bit each) */
	enum effect effect;
};

#define NO_POINTER {-1, -1, 0, false, false}
#define BUFFER(arg, len_arg, writes) {arg, len_arg, 0, writes, false}
#define FIXED(arg, size, writes, null_ok) {arg, -1, size, writes, null_ok}
#define ARG_BIT(n) (1u << (n))

/* The calls an sthread can be allowed: those whose arguments the handler knows. */
static const struct call_rule RULES[] = {
	{SYS_read, 0, PROT_READ, false, -1, {BUFFER(1, 2, true), NO_POINTER}, 0, NO_EFFECT},
	{SYS_write, 0, PROT_WRITE, false, -1, {BUFFER(1, 2, false), NO_POINTER}, 0, NO_EFFECT},
	{SYS_pread64, 0, PROT_READ, false, -1, {BUFFER(1, 2, true), NO_POINTER}, 0, NO_EFFECT},
	{SYS_pwrite64, 0, PROT_WRITE, false, -1, {BUFFER(1, 2, false), NO_POINTER}, 0, NO_EFFECT},
	{SYS_recvfrom, 0, PROT_READ, false, -1, {BUFFER(1, 2, true), NO_POINTER},
	 ARG_BIT(4) | ARG_BIT(5), NO_EFFECT},
	{SYS_sendto, 0, PROT_WRITE, false, -1, {BUFFER(1, 2, false), NO_POINTER}, ARG_BIT(4),
	 NO_EFFECT},
	{SYS_close, 0, 0, false, -1, {NO_POINTER, NO_POINTER}, 0, CLOSES_FD},
	{SYS_shutdown, 0, PROT_WRITE, false, -1, {NO_POINTER, NO_POINTER}, 0, NO_EFFECT},
	{SYS_lseek, 0, 0, false, -1, {NO_POINTER, NO_POINTER}, 0, NO_EFFECT},
	{SYS_fsync, 0, PROT_WRITE, false, -1, {NO_POINTER, NO_POINTER}, 0, NO_EFFECT},
	{SYS_fstat, 0, 0, false, -1, {FIXED(1, sizeof(struct stat), true, false), NO_POINTER}, 0,
	 NO_EFFECT},
	{SYS_open, -1, 0, false, 0, {NO_POINTER, NO_POINTER}, 0, RETURNS_FD},
	{SYS_openat, 0, 0, true, 1, {NO_POINTER, NO_POINTER}, 0, RETURNS_FD},
	{SYS_getpid, -1, 0, false, -1, {NO_POINTER, NO_POINTER}, 0, NO_EFFECT},
	{SYS_getppid, -1, 0, false, -1, {NO_POINTER, NO_POINTER}, 0, NO_EFFECT},
	{SYS_gettid, -1, 0, false, -1, {NO_POINTER, NO_POINTER}, 0, NO_EFFECT},
	{SYS_getuid, -1, 0, false, -1, {NO_POINTER, NO_POINTER}, 0, NO_EFFECT},
	{SYS_sched_yield, -1, 0, false, -1, {NO_POINTER, NO_POINTER}, 0, NO_EFFECT},
	{SYS_clock_gettime, -1, 0, false, -1, {FIXED(1, 16, true, false), NO_POINTER}, 0,
	 NO_EFFECT},
	{SYS_nanosleep, -1, 0, false, -1, {FIXED(0, 16, false, false), FIXED(1, 16, true, true)}, 0,
	 NO_EFFECT},
};

static const struct call_rule *rule_of(uint64_t sysno)
{
	for (size_t i = 0; i < sizeof(RULES) / sizeof(RULES[0]); i++)
		if ((uint64_t)RULES[i].sysno == sysno)
			return &RULES[i];
	return NULL;
}

/* Argument n of a system call in a tf (struct dune_tf is packed: no pointers
 * to its members). */
static uint64_t arg_of(const struct dune_tf *tf, int n)
{
	switch (n) {
	case 0: return ARG0(tf);
	case 1: return ARG1(tf);
	case 2: return ARG2(tf);
	case 3: return ARG3(tf);
	case 4: return ARG4(tf);
	default: return ARG5(tf);
	}
}

static void set_arg(struct dune_tf *tf, int n, uint64_t value)
{
	switch (n) {
	case 0: ARG0(tf) = value; break;
	case 1: ARG1(tf) = value; break;
	case 2: ARG2(tf) = value; break;
	case 3: ARG3(tf) = value; break;
	case 4: ARG4(tf) = value; break;
	default: ARG5(tf) = value; break;
	}
}

/* Where the program reaches the sthread's [p, p + length) (with write rights when
 * asked), or 0: a private copy's own address for a writable segment; the same
 * address for its stack, its tags and read-only segments. */
static uintptr_t program_address(const struct sthread *s, uintptr_t p, size_t length,
				 bool write)
{
	if (length == 0)
		length = 1;
	for (int i = 0; i < writable_count; i++)
		if (within(p, length, writable[i].start, writable[i].end))
			return (uintptr_t)s->copy + writable[i].offset + (p - writable[i].start);
	if (within(p, length, (uintptr_t)s->stack, (uintptr_t)s->stack + STACK_SIZE))
		return p;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < s->sc.sc_mem_count; i++) {
		const struct tag *t = find_tag(s->sc.sc_mem[i].tag);

		if (t && within(p, length, (uintptr_t)t->base, (uintptr_t)t->base + t->size)
		    && (!write || s->sc.sc_mem[i].prot & PROT_WRITE)) {
			pthread_mutex_unlock(&lock);
			return p;
		}
	}
	pthread_mutex_unlock(&lock);
	for (int i = 0; !write && i < readonly_count; i++)
		if (within(p, length, readonly[i].start, readonly[i].end))
			return p;
	return 0;
}

/* A NUL-terminated path the sthread reaches, at the program's address, or 0. */
static uintptr_t program_path(const struct sthread *s, uintptr_t p)
{
	for (size_t length = 1; length <= PATH_LIMIT; length++) {
		uintptr_t at = program_address(s, p, length, false);

		if (!at)
			return 0;
		if (!*(const char *)(at + length - 1))
			return at;
	}
	return 0;
}

static int check_call(struct sthread *s, const struct call_rule *rule, struct dune_tf *call)
{
	if (rule->fd_arg >= 0) {
		int fd = (int)arg_of(call, rule->fd_arg);
		int rights = sc_fd_rights(&s->sc, fd);

		if (!(rule->fd_may_be_cwd && fd == AT_FDCWD)
		    && (!rights || (rule->fd_prot && !(rights & rule->fd_prot))))
			return -EPERM;
	}
	for (int n = 0; n < 6; n++)
		if (rule->null_args & ARG_BIT(n) && arg_of(call, n))
			return -EPERM;
	if (rule->path_arg >= 0) {
		uintptr_t at = program_path(s, arg_of(call, rule->path_arg));

		if (!at)
			return -EFAULT;
		set_arg(call, rule->path_arg, at);
	}
	for (int i = 0; i < 2; i++) {
		const struct pointer_arg *ptr = &rule->pointers[i];
		uint64_t pointer;
		size_t length;
		uintptr_t at;

		if (ptr->arg < 0)
			continue;
		pointer = arg_of(call, ptr->arg);
		if (!pointer && ptr->may_be_null)
			continue;
		length = ptr->len_arg >= 0 ? arg_of(call, ptr->len_arg) : ptr->size;
		at = program_address(s, pointer, length, ptr->kernel_writes);
		if (!at)
			return -EFAULT;
		if (ptr->kernel_writes)
			note_kernel_write(s, at, length);
		set_arg(call, ptr->arg, at);
	}
	return 0;
}

static void after_call(struct sthread *s, const struct call_rule *rule, struct dune_tf *call,
		       long result)
{
	if (result < 0)
		return;
	if (rule->effect == CLOSES_FD)
		sc_fd_remove(&s->sc, (int)arg_of(call, rule->fd_arg));
	if (rule->effect == RETURNS_FD && sc_fd_add(&s->sc, (int)result, PROT_READ | PROT_WRITE)) {
		close((int)result);        /* the context is full: the sthread gets none */
		call->rax = (uint64_t)-EMFILE;
	}
}

static void end_sthread(struct sthread *s, uint64_t value)
{
	s->ret = (void *)value;
	dune_ret_from_user(RUN_END(STHREAD_RETURNED));
}

static void on_syscall(struct dune_tf *tf)
{
	struct sthread *s = running;
	const struct call_rule *rule;
	struct dune_tf call;
	int refused;

	if (!s)
		host_bug("a system call of user code", tf);
	if (tf->rax == STHREAD_EXIT_CALL)
		end_sthread(s, ARG0(tf));
	if (tf->rax == SYS_exit || tf->rax == SYS_exit_group)
		end_sthread(s, (uint64_t)(int)ARG0(tf));
	rule = rule_of(tf->rax);
	if (!rule || !sc_allows_call(&s->sc, tf->rax)) {
		s->exit.denied++;
		tf->rax = (uint64_t)-EPERM;
		return;
	}
	/* User code's registers stay as they are: the call is made with a copy whose
	 * pointers are the program's addresses of the same memory. */
	call = *tf;
	refused = check_call(s, rule, &call);
	if (refused) {
		s->exit.denied++;
		tf->rax = (uint64_t)(long)refused;
		return;
	}
	dune_passthrough_syscall(&call);
	after_call(s, rule, &call, (long)call.rax);
	tf->rax = call.rax;
}
