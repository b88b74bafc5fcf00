/* sthread.h - sthreads (Wedge, NSDI 2008, as in Dune's apps/wedge) on the Dune API.
 *
 * An sthread is a thread with a security context of its own: it runs a function at
 * user level (dune_jump_to_user) in a root made for it, where it reaches
 *   - the program's read-only pages (code, constants) as they are,
 *   - a private copy of every page that was writable when sthread_init ran (the
 *     globals, the heap, the initial thread's TLS), taken at that moment: later
 *     values of the program's globals are not visible to it, and its writes stay
 *     its own,
 *   - its own stack,
 *   - the tagged memory its context grants (sc_mem_add), with the rights granted,
 * and nothing else: memory mapped after sthread_init is reachable only as tagged
 * memory. Its system calls come to the library's handler, which serves them only
 * when the context allows the call (sc_sys_add) and its descriptors (sc_fd_add),
 * and every buffer lies in memory the sthread reaches (with write rights where the
 * kernel writes); else -EPERM (call or descriptor) or -EFAULT (buffer). A page fault
 * or exception ends the sthread (sthread_join reports how).
 *
 * Each sthread runs on a guest thread (pthread) of its own, a vCPU under kvmdune, so
 * sthreads run in parallel; each loads its own root, so no sthread's root maps
 * another's memory or call ring.
 *
 * An exited sthread is kept (up to sthread_set_pool's count) and recycled by the
 * next sthread_create: only the pages its root's dirty bits show it wrote are
 * restored (private copies from the checkpoint, stack pages zeroed).
 *
 *     gcc -static prog.c $(kvmdune config --cflags --libs) -lpthread
 *     kvmdune run -- ./prog
 *
 * Sthreads should not call malloc (their heap is a private copy of sthread_init's,
 * with no right to grow it): they use the tagged memory they are given. An sthread
 * ends by returning from its function, or by exit(2)/exit_group(2), which end only
 * the sthread (the status as its return value).
 */
#ifndef KVMDUNE_STHREAD_H
#define KVMDUNE_STHREAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>          /* PROT_READ, PROT_WRITE: the rights of grants */

#ifdef __cplusplus
extern "C" {
#endif

#define SC_MAX_TAGS 16
#define SC_MAX_FDS 16
/* System calls numbered below this can be granted (x86-64 numbers). */
#define SC_MAX_SYSCALLS 512

typedef int tag_t;
typedef struct sthread *sthread_t;
typedef void *(*stcb_t)(void *);

/* A security context: the tags and descriptors granted (rights PROT_READ and
 * PROT_WRITE) and the system calls allowed. */
typedef struct sc {
	struct {
		tag_t tag;
		int prot;
	} sc_mem[SC_MAX_TAGS];
	int sc_mem_count;
	struct {
		int fd;
		int prot;
	} sc_fd[SC_MAX_FDS];
	int sc_fd_count;
	unsigned char sc_sys[SC_MAX_SYSCALLS / 8];
} sc_t;

/* How an sthread ended (sthread_join's result). */
enum sthread_end {
	STHREAD_RETURNED = 0,   /* its function returned (or it called exit) */
	STHREAD_FAULTED = 1,    /* a page fault it had no right to cause */
	STHREAD_EXCEPTION = 2,  /* an exception (#GP, #UD, #DE, ...) */
};

struct sthread_exit {
	enum sthread_end how;
	uintptr_t address;      /* STHREAD_FAULTED: the fault's address */
	uint64_t fec;           /* STHREAD_FAULTED: its error code (FEC_*) */
	int vector;             /* STHREAD_EXCEPTION: the vector */
	uintptr_t rip;          /* where it was */
	int denied;             /* system calls refused during its run */
	long recycled;          /* -1: a fresh sthread; else the pages restored when it
				   was recycled for this run */
};

/* Enters Dune mode (dune_init(0), dune_enter) and takes the checkpoint of the
 * program's writable memory. 0, or -errno. Call it once, early, from the main
 * thread, before any secret is in memory. */
extern int sthread_init(void);

extern void sc_init(sc_t *sc);
/* 0, or -EINVAL (an unknown tag, bad rights) or -ENOSPC (the context is full). */
extern int sc_mem_add(sc_t *sc, tag_t tag, int prot);
extern int sc_fd_add(sc_t *sc, int fd, int prot);
extern int sc_sys_add(sc_t *sc, int sysno);

/* Starts cb(arg) in a new (or recycled) sthread with context sc: 0, or -errno. */
extern int sthread_create(sthread_t *st, const sc_t *sc, stcb_t cb, void *arg);
/* Waits for the sthread's end: its enum sthread_end (its return value in *ret when
 * it returned), or -errno. The sthread is recycled or destroyed: join it once. */
extern int sthread_join(sthread_t st, void **ret);
extern int sthread_join_exit(sthread_t st, void **ret, struct sthread_exit *exit_info);
/* How many exited sthreads are kept for recycling (default 8; 0: none, each exit
 * destroys its sthread: root, memory and thread). */
extern void sthread_set_pool(int count);

/* Tagged memory: a region of its own (STHREAD_TAG_SIZE bytes unless made with
 * tag_new_sized), granted to sthreads by sc_mem_add: a tag (> 0, never reused),
 * or -errno. */
#define STHREAD_TAG_SIZE (64 * 1024)
extern tag_t tag_new(void);
extern tag_t tag_new_sized(size_t size);
extern int tag_delete(tag_t tag);
/* Memory from tag's region (16-byte aligned), or NULL when it is full. */
extern void *smalloc(tag_t tag, size_t size);
extern void sfree(void *ptr);
/* Where a tag's region is (for tests and tools). */
extern void *tag_base(tag_t tag, size_t *size);

#ifdef __cplusplus
}
#endif

#endif
