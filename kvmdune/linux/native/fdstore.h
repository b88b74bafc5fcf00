/* The guest's descriptor table, held in native memory so that the fast path's
 * serving thread and the VMM's Python (linux/fdtable.py, a view of it) use one table:
 * guest number -> host descriptor, its close-on-exec flag, and whether I/O on it can
 * never block; and the host descriptors blocked host calls hold open.
 *
 * Writers hold the process's lock (proclock.h: Python holds it whenever it runs a
 * handler; the serving thread only ever tries it). Readers (the serving thread's
 * reads and writes) take no lock: a slot's host number is written before its flags
 * are published, and a cleared slot's host number is not reused before the fast
 * path's quiesce, so a reader that saw a slot open uses the descriptor it named.
 *
 * Storage: chunks of FDSTORE_CHUNK slots, allocated when first written and never
 * freed while the table lives, so a reader never follows a freed pointer. */
#ifndef KVMDUNE_FDSTORE_H
#define KVMDUNE_FDSTORE_H

#include <Python.h>
#include <stdint.h>

/* Host descriptors the table makes are at least this (fdtable.py's HOST_FD_FLOOR). */
#define FDSTORE_HOST_FLOOR 100
/* The largest guest number + 1 the table can hold (Linux's default fs.nr_open). */
#define FDSTORE_LIMIT (1 << 20)
#define FDSTORE_CHUNK 1024
#define FDSTORE_CHUNKS (FDSTORE_LIMIT / FDSTORE_CHUNK)
/* Distinct host descriptors held by blocked calls that are tracked one by one;
 * beyond, every close is left to the VMM (fdstore_held answers "maybe"). */
#define FDSTORE_MAX_HELD 64

/* How I/O on it is served (fastpath.c): FDS_IO_NEVER_BLOCKS straight, FDS_IO_PIPE
 * and FDS_IO_SOCKET tried without waiting; none of them: by the VMM. */
enum fdstore_flag { FDS_OPEN = 1, FDS_IO_NEVER_BLOCKS = 2, FDS_IO_PIPE = 4, FDS_IO_SOCKET = 8,
                    FDS_CLOEXEC = 16 };
#define FDS_IO_KINDS (FDS_IO_NEVER_BLOCKS | FDS_IO_PIPE | FDS_IO_SOCKET)

typedef struct {
    int32_t host;
    uint32_t flags;     /* atomic: enum fdstore_flag */
} fd_slot;

typedef struct {
    int32_t host;
    uint32_t count;
    int close_pending;  /* the guest closed it: the last release closes it */
} held_fd;

typedef struct {
    PyObject_HEAD
    fd_slot *chunks[FDSTORE_CHUNKS];   /* atomic pointers */
    int max_fds;                       /* atomic: RLIMIT_NOFILE for the guest */
    int nheld;
    int held_overflow;                 /* holds not tracked in `held` */
    held_fd held[FDSTORE_MAX_HELD];
} FdStore;

extern PyTypeObject FdStoreType;

/* The module's type: added by the module's init. */
int fdstore_register(PyObject *module);

/* A guest descriptor's slot if open (its flags in *flags), else NULL. Lock-free. */
static inline const fd_slot *fdstore_lookup(FdStore *t, int fd, uint32_t *flags) {
    if (fd < 0 || fd >= FDSTORE_LIMIT)
        return NULL;
    fd_slot *chunk = __atomic_load_n(&t->chunks[fd / FDSTORE_CHUNK], __ATOMIC_ACQUIRE);
    if (chunk == NULL)
        return NULL;
    fd_slot *slot = &chunk[fd % FDSTORE_CHUNK];
    uint32_t seen = __atomic_load_n(&slot->flags, __ATOMIC_ACQUIRE);
    if (!(seen & FDS_OPEN))
        return NULL;
    *flags = seen;
    return slot;
}

/* The rest write; the caller holds the process's lock. */
int fdstore_lowest_free(FdStore *t, long minimum);
int fdstore_set(FdStore *t, int fd, int host, uint32_t flags);
int fdstore_clear(FdStore *t, int fd);        /* the host number it held, or -1 */
void fdstore_set_cloexec(FdStore *t, int fd, int cloexec);
int fdstore_held(FdStore *t, int host);       /* 1: held (or maybe), 0: not */
uint32_t fdstore_io_flag(int host);           /* its FDS_IO_ kind (or 0), by fstat */

#endif
