/* The native fast path: a host thread that serves the guest's system calls from the
 * call rings (machine/native/callring.h: one per vCPU with a call slot, so one per
 * guest thread) without an exit and without Python. One thread serves every ring of
 * the process (spinning threads per ring would drown the machine's cores).
 *
 * The thread copies each request out of the ring before looking at it, then
 * decides from data the Python side installed: a per-call action (serve here, deny
 * with an errno, or hand to the VMM), the guest's descriptor table (guest number ->
 * host descriptor, and whether I/O on it can block), and the address space to
 * translate guest pointers through. Anything it cannot serve exactly as the Python
 * path would — an unmapped or unwritable buffer, a path under /proc or /dev, a
 * descriptor that may block, a signal waiting for the guest — goes back to the guest
 * marked CALLRING_SLOW, and the guest takes the ordinary exit path, where the VMM
 * decides. So this thread only ever gives answers the Python path gives.
 *
 * Waiting: the thread spins for `spin_ns` after each call, then sleeps on a futex;
 * a guest that gets no answer within its own spin exits to the VMM, which wakes the
 * thread and waits for the answer (wait_response). Nothing burns a core while idle.
 * The thread itself never waits for I/O: a read or write on a blocking pipe or
 * socket that is not ready is handed to the vCPU's own thread (CALLRING_HANDOFF:
 * the guest exits at once and its thread waits in the kernel, as Linux would).
 * The thread writes guest memory only while answering a request (callring.h).
 *
 * With threads the VMM changes the address space and the descriptor table while
 * requests are served (other vCPUs run on): every serve registers itself in the
 * current generation, and the VMM's quiesce() (before a freed frame is reused, before
 * a closed descriptor's number is) waits until no serve of an older generation is
 * left, so a serve never writes through a translation or a descriptor made stale.
 *
 * VMM calls (numbers from CALLRING_VMM_CALLS on: the Dune API's hypercalls) go to
 * the native handler a layer above installed (vmm_calls.h), under the same rule;
 * the ring's CALLRING_VMM_CALLS_ASKED says which the stub hands the thread first.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/limits.h>
#include <linux/openat2.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../../machine/native/callring.h"
#include "call_wait.h"
#include "fdstore.h"
#include "namedstat.h"
#include "proclock.h"
#include "sigstore.h"
#include "vmm_calls.h"

#define NR_CALLS 512
#define PAGE_SIZE 4096ULL
#define HUGE_PAGE_SIZE (2ULL << 20)
#define USER_SPACE_END (1ULL << 47)
#define PATH_MAX_BYTES 4096
/* Largest buffer served here; larger ones take the VMM's path (which clamps them). */
#define MAX_FAST_BUFFER (1ULL << 20)
#define MAX_PIECES 64
#define MAX_LEAVES (MAX_FAST_BUFFER / PAGE_SIZE + 2)
#define BOUNCE_SIZE 65536
#define AT_FDCWD_VALUE (-100)

/* x86-64 page-table entry bits (Intel SDM names). */
#define PTE_P 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_US 0x4ULL
#define PTE_A 0x20ULL
#define PTE_D 0x40ULL
#define PTE_PS 0x80ULL
#define PTE_ADDRESS 0x000FFFFFFFFFF000ULL
#define PTE_HUGE_ADDRESS 0x000FFFFFFFE00000ULL

/* BENEATH: serve the call only if its path resolves beneath one of the roots (the
 * kernel checks, with openat2's RESOLVE_BENEATH from a descriptor of the root);
 * anything else (outside, a symlink leading out, an error) goes to the VMM. */
enum action { ACTION_SLOW = 0, ACTION_FAST = 1, ACTION_DENY = 2, ACTION_BENEATH = 3 };
#define MAX_ROOTS 32
/* How I/O on a descriptor is served: FD_IO_NEVER_BLOCKS straight; FD_IO_PIPE and
 * FD_IO_SOCKET tried without waiting (call_rw_nowait); any other (a terminal, a
 * character device that may wait) by the VMM. */
enum fd_flag { FD_OPEN = FDS_OPEN, FD_IO_NEVER_BLOCKS = FDS_IO_NEVER_BLOCKS,
               FD_IO_PIPE = FDS_IO_PIPE, FD_IO_SOCKET = FDS_IO_SOCKET };
enum io_kind { IO_MAY_BLOCK = 0, IO_NEVER_BLOCKS = 1, IO_PIPE = 2, IO_SOCKET = 3 };
#define FD_IO_NOWAIT (FD_IO_PIPE | FD_IO_SOCKET)

/* One vCPU's ring and the serving state that goes with it. */
typedef struct {
    uint8_t *base;              /* the ring, in the VMM's mapping of guest memory */
    uint64_t served_seq;        /* the thread's own: the last request it saw answered */
    uint64_t claimed_seq;       /* atomic: the last request someone took to serve */
    uint32_t served_word;       /* futex: bumped after every response */
    int vcpu_waiting;           /* atomic */
    int force_slow;             /* atomic: a signal waits for this ring's thread */
    int active;                 /* atomic: a vCPU uses this slot */
    int vcpu_out;               /* atomic: the VMM serves a call of this vCPU (vcpu_out) */
    /* A request handed to the vCPU's thread (CALLRING_HANDOFF): the call as the
     * thread read it, and the bytes of a write already moved. Host memory: what
     * the guest rewrites in the ring meanwhile changes nothing here. */
    int handoff_pending;        /* atomic */
    uint64_t handoff_seq, handoff_nr, handoff_args[6], handoff_done;
    /* The vCPU thread's own (wait_response): exits counted since window_start, in
     * the spell generation window_generation (see judge_window). */
    uint64_t window_start;
    uint64_t window_exits;
    unsigned window_generation;
} Ring;

typedef struct {
    PyObject_HEAD
    Ring rings[CALLRING_SLOTS];
    uint8_t *memory;
    uint64_t memory_size;
    uint64_t cr3;
    uint64_t spin_ns;
    uint8_t action[NR_CALLS];
    uint16_t deny_errno[NR_CALLS];
    uint8_t fast_bitmap[CALLRING_MAX_NR / 8];   /* copied into every ring */
    /* The guest's descriptor table (fdstore.h; the Python FdTable's storage) and
     * the process's lock that its writers hold (NULL: nothing changes it here). */
    FdStore *fds;
    uint32_t *process_lock;
    /* The guest's signal dispositions (sigstore.h), changed under the same lock. */
    SigActions *sigactions;
    uint32_t sleep_word;        /* futex: 1 while the thread sleeps */
    int stop;                   /* atomic */
    unsigned generation;        /* atomic: bumped by quiesce() */
    int in_flight[2];           /* atomic: serves under way, by generation parity */
    pthread_t thread;
    int running;
    pid_t pid;
    int nroots;
    int root_fd[MAX_ROOTS];
    size_t root_length[MAX_ROOTS];
    char *root_path[MAX_ROOTS];
    /* The VMM's /proc/self/fd, held O_PATH while roots are set, by the process that
     * opened it (fd_directory_pid; a forked VMM's copy names its parent's table and
     * goes unused): a held descriptor's name read relative to it skips the walk of
     * "/proc/self/fd" on each call (~1 us of a single-file root's check). */
    int fd_directory;
    pid_t fd_directory_pid;
    /* The roots' generation for namedstat.h's remembered answers (0: no roots). */
    unsigned roots_generation;
    uint64_t served_fast, served_denied, sent_slow, sleeps, waits, served_here;
    uint64_t handoffs;          /* waits for I/O handed to the vCPU's thread */
    uint64_t served_fd_table;   /* of served_fast: calls that changed the table */
    uint64_t served_remembered; /* of served_fast: stats answered by namedstat.h */
    /* Direct spells (judge_window): while `direct`, the thread sleeps and every call
     * exits and is served by its vCPU's thread, until direct_until; spell_ns is the
     * next spell's length; spell_generation counts spells ended. */
    int direct;                 /* atomic */
    uint64_t direct_until, spell_ns, direct_spells;
    unsigned spell_generation;  /* atomic */
    /* VMM calls (vmm_calls.h): the handler a layer above installed, if any, the
     * capsule that keeps it alive and the ops the stub asks it for; the lock makes
     * serving one and replacing it exclusive. */
    pthread_mutex_t vmm_lock;
    const struct kvmdune_vmm_calls *vmm_calls;
    PyObject *vmm_capsule;
    uint64_t vmm_asked;
    uint64_t served_vmm;
} Server;

/* -- small helpers ------------------------------------------------------------------ */

#define RING64(r, off) ((volatile uint64_t *)((r)->base + (off)))
#define RING32(r, off) ((volatile uint32_t *)((r)->base + (off)))

static inline int64_t raw(long r) { return r == -1 ? -(int64_t)errno : (int64_t)r; }
static void count(uint64_t *counter);   /* atomic: statistics */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static long futex(uint32_t *word, int op, uint32_t value, const struct timespec *timeout) {
    return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, value, timeout, NULL, 0);
}

/* The HOST_STATE hint of every active ring, written outside a request: through
 * process_vm_writev, which returns EFAULT (the hint is skipped) where the page is
 * not writable for an instant, instead of a store's SIGSEGV (callring.h). */
static void hint_host_state(Server *s, uint32_t state) {
    struct iovec local = {&state, sizeof state}, remote[CALLRING_SLOTS];
    unsigned long count = 0;
    for (int i = 0; i < CALLRING_SLOTS; i++)
        if (__atomic_load_n(&s->rings[i].active, __ATOMIC_ACQUIRE)) {
            remote[count].iov_base = s->rings[i].base + CALLRING_HOST_STATE;
            remote[count++].iov_len = sizeof state;
        }
    for (unsigned long i = 0; i < count; i++)
        syscall(SYS_process_vm_writev, s->pid, &local, 1UL, &remote[i], 1UL, 0UL);
}

static inline int32_t as_int32(uint64_t value) { return (int32_t)(uint32_t)value; }

/* -- guest memory, checked as a CPL3 access would be ---------------------------------- */

static volatile uint64_t *entry_at(Server *s, uint64_t paddr) {
    if (paddr & 7 || paddr >= s->memory_size || s->memory_size - paddr < 8)
        return NULL;
    return (volatile uint64_t *)(s->memory + paddr);
}

/* The host address of guest virtual `vaddr` if user code may access it (and write it,
 * if `write`); `leaf` gets its leaf entry, `span` the bytes left in its page. */
static uint8_t *walk(Server *s, uint64_t vaddr, int write, volatile uint64_t **leaf,
                     uint64_t *span) {
    uint64_t table = s->cr3 & PTE_ADDRESS;
    for (int level = 4; level >= 1; level--) {
        unsigned index = (unsigned)(vaddr >> (12 + 9 * (level - 1))) & 511;
        volatile uint64_t *slot = entry_at(s, table + index * 8);
        if (slot == NULL)
            return NULL;
        uint64_t entry = *slot;
        if (!(entry & PTE_P) || !(entry & PTE_US) || (write && !(entry & PTE_RW)))
            return NULL;
        int huge = level == 2 && (entry & PTE_PS);
        if (level == 3 && (entry & PTE_PS))
            return NULL;   /* 1 GiB pages are never made by the VMM: let it decide */
        if (level == 1 || huge) {
            uint64_t size = huge ? HUGE_PAGE_SIZE : PAGE_SIZE;
            uint64_t base = entry & (huge ? PTE_HUGE_ADDRESS : PTE_ADDRESS);
            uint64_t paddr = base + (vaddr & (size - 1));
            *span = size - (vaddr & (size - 1));
            if (paddr >= s->memory_size || s->memory_size - paddr < *span)
                return NULL;   /* a shared region's slot, or nonsense: the VMM decides */
            *leaf = slot;
            return s->memory + paddr;
        }
        table = entry & PTE_ADDRESS;
    }
    return NULL;
}

/* The host pieces of [vaddr, vaddr+length), every page checked before any is used;
 * then A (and D for writes) set in the leaf entries, as the CPU and the VMM's own
 * checked access do. Returns the number of pieces, or -1: the VMM decides. */
static int translate(Server *s, uint64_t vaddr, uint64_t length, int write,
                     struct iovec *pieces) {
    volatile uint64_t *leaves[MAX_LEAVES];
    int count = 0, nleaves = 0;
    if (length == 0 || length > MAX_FAST_BUFFER || vaddr >= USER_SPACE_END
        || length > USER_SPACE_END - vaddr)
        return -1;
    for (uint64_t cursor = vaddr, end = vaddr + length; cursor < end;) {
        volatile uint64_t *leaf;
        uint64_t span;
        uint8_t *host = walk(s, cursor, write, &leaf, &span);
        if (host == NULL || nleaves == (int)MAX_LEAVES)
            return -1;
        uint64_t chunk = span < end - cursor ? span : end - cursor;
        leaves[nleaves++] = leaf;
        if (count && (uint8_t *)pieces[count - 1].iov_base + pieces[count - 1].iov_len == host) {
            pieces[count - 1].iov_len += chunk;
        } else {
            if (count == MAX_PIECES)
                return -1;
            pieces[count].iov_base = host;
            pieces[count].iov_len = chunk;
            count++;
        }
        cursor += chunk;
    }
    uint64_t bits = write ? (PTE_A | PTE_D) : PTE_A;
    for (int i = 0; i < nleaves; i++)
        if ((*leaves[i] & bits) != bits)
            __atomic_fetch_or((uint64_t *)leaves[i], bits, __ATOMIC_RELAXED);
    return count;
}

/* A NUL-terminated string of at most `limit` bytes with its NUL, read page by page
 * (no byte past the NUL is touched); 0, or -1: unreadable or too long. */
static int read_string(Server *s, uint64_t vaddr, char *out, size_t limit) {
    size_t have = 0;
    while (have < limit) {
        uint64_t page_left = PAGE_SIZE - ((vaddr + have) & (PAGE_SIZE - 1));
        uint64_t chunk = page_left < limit - have ? page_left : limit - have;
        struct iovec piece[MAX_PIECES];
        if (translate(s, vaddr + have, chunk, 0, piece) != 1)
            return -1;
        memcpy(out + have, piece[0].iov_base, chunk);
        if (memchr(out + have, 0, chunk) != NULL)
            return 0;
        have += chunk;
    }
    return -1;
}

/* A NUL-terminated path, read as the VMM reads it; 0, or -1 (the VMM decides:
 * unreadable, too long, or a name under /proc or /dev that it rewrites). */
static int read_path(Server *s, uint64_t vaddr, char *out) {
    if (read_string(s, vaddr, out, PATH_MAX_BYTES) < 0
        || strncmp(out, "/proc/", 6) == 0 || strncmp(out, "/dev/", 5) == 0)
        return -1;
    return 0;
}

/* Copy `length` bytes of `data` out to the guest pieces. */
static void scatter(const struct iovec *pieces, int count, const void *data, size_t length) {
    const uint8_t *from = data;
    for (int i = 0; i < count && length; i++) {
        size_t chunk = pieces[i].iov_len < length ? pieces[i].iov_len : length;
        memcpy(pieces[i].iov_base, from, chunk);
        from += chunk;
        length -= chunk;
    }
}

/* Copy the guest pieces, in order, into `data`. */
static void gather(const struct iovec *pieces, int count, void *data) {
    uint8_t *to = data;
    for (int i = 0; i < count; i++) {
        memcpy(to, pieces[i].iov_base, pieces[i].iov_len);
        to += pieces[i].iov_len;
    }
}

static int host_fd(Server *s, uint64_t value, int io, int *out) {
    uint32_t flags;
    const fd_slot *slot = s->fds != NULL ? fdstore_lookup(s->fds, as_int32(value), &flags) : NULL;
    if (slot == NULL)
        return -1;
    if (io && !(flags & FDS_IO_NEVER_BLOCKS))
        return -1;
    *out = slot->host;
    return 0;
}

/* A descriptor for I/O, and how its I/O is served (enum fd_flag's FD_IO_ bits). */
static int io_fd(Server *s, uint64_t value, int *out, int *kind) {
    uint32_t flags;
    const fd_slot *slot = s->fds != NULL ? fdstore_lookup(s->fds, as_int32(value), &flags) : NULL;
    if (slot == NULL)
        return -1;
    *kind = (int)(flags & (FD_IO_NEVER_BLOCKS | FD_IO_NOWAIT));
    *out = slot->host;
    return 0;
}

static int dir_fd(Server *s, uint64_t value, int *out) {
    if (as_int32(value) == AT_FDCWD_VALUE) {
        *out = AT_FDCWD_VALUE;
        return 0;
    }
    return host_fd(s, value, 0, out);
}

/* -- the calls served here (x86-64 numbers) ------------------------------------------ */
/* Each returns 0 with *result set, or -1: the VMM serves the call. */

typedef int (*fast_call)(Server *s, long nr, const uint64_t *a, int64_t *result);

static int call_plain(Server *s, long nr, const uint64_t *a, int64_t *result) {
    (void)s;
    *result = raw(syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]));
    return 0;
}

/* The guest's iovec array (readv/writev) as host pieces, each entry checked as
 * translate() checks a buffer; -1 (the VMM decides) for anything Linux would refuse
 * or that does not fit here: a count beyond MAX_PIECES, a negative or oversized
 * total, nothing to move at all. */
static int translate_iovec(Server *s, uint64_t vaddr, uint64_t iovcnt, int write,
                           struct iovec *pieces) {
    struct iovec guest[MAX_PIECES], part[MAX_PIECES];
    uint64_t total = 0;
    int count = 0;
    if (iovcnt == 0 || iovcnt > MAX_PIECES)
        return -1;
    int parts = translate(s, vaddr, iovcnt * sizeof guest[0], 0, part);
    if (parts < 0)
        return -1;
    gather(part, parts, guest);                 /* read once, into the thread's memory */
    for (uint64_t i = 0; i < iovcnt; i++) {
        uint64_t base = (uint64_t)guest[i].iov_base, length = guest[i].iov_len;
        if (length > MAX_FAST_BUFFER || (total += length) > MAX_FAST_BUFFER)
            return -1;
        if (length == 0)
            continue;
        int got = translate(s, base, length, write, part);
        if (got < 0 || count + got > MAX_PIECES)
            return -1;
        memcpy(pieces + count, part, (size_t)got * sizeof part[0]);
        count += got;
    }
    return count ? count : -1;
}

static uint64_t pieces_length(const struct iovec *pieces, int count) {
    uint64_t total = 0;
    for (int i = 0; i < count; i++)
        total += pieces[i].iov_len;
    return total;
}

static int descriptor_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK);
}

/* One try at moving the pieces without waiting: a read or write as read(2) and
 * write(2) make it, with RWF_NOWAIT (pipes and sockets take it: the kernel's own
 * read and write paths, MSG_EOR on a SOCK_SEQPACKET write included); a send or
 * receive (`flags`: the guest's MSG_ flags, or -1 for a read or write) with
 * MSG_DONTWAIT, and MSG_NOSIGNAL so that a broken connection raises nothing here.
 * The open file description's own O_NONBLOCK is never touched: other processes
 * share it. */
static int64_t move_nowait(int fd, int write, struct iovec *pieces, int count, int flags) {
    if (flags >= 0) {
        struct msghdr message = {.msg_iov = pieces, .msg_iovlen = (size_t)count};
        return write ? raw(sendmsg(fd, &message, flags | MSG_DONTWAIT | MSG_NOSIGNAL))
                     : raw(recvmsg(fd, &message, flags | MSG_DONTWAIT));
    }
    return write ? raw(pwritev2(fd, pieces, count, -1, RWF_NOWAIT))
                 : raw(preadv2(fd, pieces, count, -1, RWF_NOWAIT));
}

/* Drop the first `moved` bytes of the pieces. */
static void advance(struct iovec **pieces, int *count, uint64_t moved) {
    while (*count && moved >= (*pieces)->iov_len) {
        moved -= (*pieces)->iov_len;
        (*pieces)++;
        (*count)--;
    }
    if (*count) {
        (*pieces)->iov_base = (uint8_t *)(*pieces)->iov_base + moved;
        (*pieces)->iov_len -= moved;
    }
}

/* What a call handler answers: served (the result is the guest's), the VMM's to
 * serve, or handed to the vCPU's own thread (a pipe or socket that would wait). */
enum served { SERVED = 0, SERVE_SLOW = -1, SERVE_HANDOFF = 1 };

/* How the calling thread may wait for a pipe or socket to become ready. The serving
 * thread never waits: it serves every ring, and while it waited the guest would
 * spin for the answer on a core its peer needs (two guests joined by a pipe on two
 * cores: four busy threads). It hands the call to the vCPU's thread (the guest
 * exits), which waits in the kernel as Linux's own read or write would, in slices,
 * until `deadline`; then the VMM, which waits interruptibly by the guest's
 * signals, takes over. Set only in a vCPU's thread, for one serve. */
struct wait_here {
    Server *server;
    Ring *ring;                 /* whose signal (force_slow) ends the wait */
    int parity;                 /* the serve's generation (a quiesce ends the wait) */
    uint64_t deadline;          /* now_ns() when the VMM takes over */
    uint64_t skip;              /* bytes of the write moved before the handoff */
};
static __thread struct wait_here *waiting_here;
static void wake_server(Server *s);

/* A wait of a vCPU's thread is sliced, so that a signal for the guest (force_slow),
 * a quiesce of the VMM (which waits for serves under way) or a kick ends it soon. */
#define WAIT_HERE_SLICE_NS 1000000ULL

/* The vCPU of `r`, whose call its own thread serves (handed over, or taken while
 * the serving thread slept), goes back to the guest soon (its descriptor is
 * ready: a copy, then the return): have the serving thread awake by its next
 * call, so that the guest does not exit for want of an answer (100 MB through a
 * pipe, 3,200 calls a side: with the thread woken only on the return, ~840 calls
 * a side found it asleep; woken here, ~250). */
static void back_soon(Server *s, Ring *r) {
    __atomic_store_n(&r->vcpu_out, 0, __ATOMIC_SEQ_CST);
    if (s->running && !__atomic_load_n(&s->direct, __ATOMIC_ACQUIRE))
        wake_server(s);
}

/* Whether the descriptor became ready (or broken) before the wait had to end. */
static int ready_here(const struct wait_here *w, int fd, int write) {
    Server *s = w->server;
    struct pollfd watched = {fd, write ? POLLOUT : POLLIN, 0};
    for (;;) {
        uint64_t now = now_ns();
        if (now >= w->deadline || __atomic_load_n(&w->ring->force_slow, __ATOMIC_ACQUIRE)
            || (int)(__atomic_load_n(&s->generation, __ATOMIC_SEQ_CST) & 1) != w->parity)
            return 0;
        uint64_t left = w->deadline - now < WAIT_HERE_SLICE_NS ? w->deadline - now
                                                                : WAIT_HERE_SLICE_NS;
        struct timespec slice = {0, (long)left};
        int ready = ppoll(&watched, 1, &slice, NULL);
        if (ready > 0)
            back_soon(s, w->ring);
        if (ready != 0)
            return ready > 0;       /* an error, EINTR among them (a kick): the VMM's */
    }
}

/* Before a handoff the serving thread waits this long for the descriptor itself,
 * asleep in the kernel (the guest spins meanwhile): a peer that moves a little at
 * a time frees a pipe within microseconds, and a handoff costs the guest an exit
 * (~30 us) each time. Measured, 200 MB through `head -c | sha256sum` (4 KiB
 * writes, the reader hashing ~25 us per block): 5.0-5.1 s with a handoff at once,
 * 2.7-3.6 s with this wait (native 0.7 s); 64 KiB writes between two dd's
 * unchanged. The other rings of the process wait that long at most. */
#define BRIEF_WAIT_NS 50000

/* Whether `fd` became ready to read or write within BRIEF_WAIT_NS. */
static int ready_briefly(int fd, int write) {
    struct pollfd watched = {fd, write ? POLLOUT : POLLIN, 0};
    struct timespec brief = {0, BRIEF_WAIT_NS};
    return ppoll(&watched, 1, &brief, NULL) > 0;
}

/* A read or write on a pipe or socket, served without the serving thread waiting
 * (move_nowait). Every answer is one Linux gives:
 * - data moved in full, a read of what was there, end of file, an error: the answer;
 * - nothing ready: EAGAIN for a nonblocking descriptor (or the part of a write
 *   done), else the vCPU's thread waits (wait_here; the serving thread hands it
 *   the call with the part done), and after that the VMM (which waits,
 *   interruptible by the guest's signals);
 * - a broken pipe or connection: the VMM, which writes again, gets EPIPE and raises
 *   the guest's SIGPIPE (one raised here by a write stays pending on a thread that
 *   blocks it, or is the guest's anyway: see threads.py);
 * - a write on a blocking descriptor done in part (Linux would wait for the rest,
 *   or stop at a signal or a broken pipe): the VMM, told the count in the ring's
 *   result (carried_write), writes the rest and answers the whole. */
static int call_rw_nowait(Server *s, int fd, int write, struct iovec *pieces, int count,
                          int flags, int64_t *result) {
    uint64_t total = pieces_length(pieces, count), done = 0;
    int nonblocking = flags >= 0 && flags & MSG_DONTWAIT ? 1 : -1, waited_briefly = 0;
    const struct wait_here *here = waiting_here;
    if (here != NULL && here->skip > 0 && write) {
        /* The guest may have changed its iovec since: never more than it asks. */
        done = here->skip < total ? here->skip : total;
        advance(&pieces, &count, done);
        if (done == total) {
            *result = (int64_t)done;
            return SERVED;
        }
    }
    for (;;) {
        int64_t moved = move_nowait(fd, write, pieces, count, flags);
        if (moved >= 0 && (!write || done + (uint64_t)moved == total)) {
            *result = (int64_t)done + moved;
            return SERVED;
        }
        if (moved > 0) {
            done += (uint64_t)moved;
            advance(&pieces, &count, (uint64_t)moved);
        } else if (moved != -EAGAIN) {
            if (done == 0 && moved != -EPIPE && moved != -EOPNOTSUPP) {
                *result = moved;
                return SERVED;
            }
            *result = (int64_t)done;     /* the count carried to the VMM (or none) */
            return SERVE_SLOW;
        }
        if (nonblocking < 0)
            nonblocking = descriptor_nonblocking(fd);
        if (nonblocking) {
            *result = done ? (int64_t)done : -EAGAIN;
            return SERVED;
        }
        if (here == NULL && !waited_briefly) {
            waited_briefly = 1;
            if (ready_briefly(fd, write))
                continue;
        }
        if (here == NULL || !ready_here(here, fd, write)) {
            *result = (int64_t)done;     /* carried to the vCPU's thread, or the VMM */
            return here == NULL ? SERVE_HANDOFF : SERVE_SLOW;
        }
    }
}

/* read/write/pread64/pwrite64/readv/writev: straight into (or out of) guest memory;
 * on a pipe or socket without waiting (call_rw_nowait). */
static int call_rw(Server *s, long nr, const uint64_t *a, int64_t *result) {
    int fd, kind, into_guest = nr == SYS_read || nr == SYS_pread64 || nr == SYS_readv;
    int vectored = nr == SYS_readv || nr == SYS_writev;
    int positioned = nr == SYS_pread64 || nr == SYS_pwrite64;
    struct iovec pieces[MAX_PIECES];
    if (io_fd(s, a[0], &fd, &kind) < 0)
        return -1;
    /* (A pipe or socket has no position: pread64/pwrite64 fail at once, ESPIPE.) */
    if (kind == 0)
        return -1;
    int count = vectored ? translate_iovec(s, a[1], a[2], into_guest, pieces)
                         : translate(s, a[1], a[2], into_guest, pieces);
    if (count < 0)
        return -1;
    if (!(kind & FD_IO_NEVER_BLOCKS) && !positioned)
        return call_rw_nowait(s, fd, !into_guest, pieces, count, -1, result);
    if (nr == SYS_read || nr == SYS_readv)
        *result = raw(readv(fd, pieces, count));
    else if (nr == SYS_write || nr == SYS_writev)
        *result = raw(writev(fd, pieces, count));
    else if (nr == SYS_pread64)
        *result = raw(preadv(fd, pieces, count, (off_t)a[3]));
    else
        *result = raw(pwritev(fd, pieces, count, (off_t)a[3]));
    /* Past RLIMIT_FSIZE nothing was written, and Linux sends SIGXFSZ to the writer:
     * the VMM's thread must be the one to write, so that the guest gets the signal. */
    return *result == -EFBIG ? -1 : 0;
}

/* The flags of send and receive served here: the others (MSG_WAITALL, which waits
 * for more than is there; MSG_OOB, MSG_ERRQUEUE...) go to the VMM. */
#define SEND_FLAGS (MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE | MSG_EOR)
#define RECEIVE_FLAGS (MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC)

/* sendto and recvfrom without an address (send and recv) on a socket, as call_rw
 * serves write and read on it (the guest's MSG_DONTWAIT: its descriptor is
 * nonblocking for the call). */
static int call_send_receive(Server *s, long nr, const uint64_t *a, int64_t *result) {
    int fd, kind, receive = nr == SYS_recvfrom, flags = as_int32(a[3]);
    struct iovec pieces[MAX_PIECES];
    if (io_fd(s, a[0], &fd, &kind) < 0 || !(kind & FD_IO_SOCKET) || a[4] != 0
        || flags & ~(receive ? RECEIVE_FLAGS : SEND_FLAGS))
        return -1;
    int count = translate(s, a[1], a[2], receive, pieces);
    if (count < 0)
        return -1;
    return call_rw_nowait(s, fd, !receive, pieces, count, flags, result);
}

/* epoll_wait, and epoll_pwait without a signal mask: what is ready now; nothing
 * ready, with a timeout to wait, goes to the VMM. */
static int call_epoll_wait(Server *s, long nr, const uint64_t *a, int64_t *result) {
    static __thread struct epoll_event ready[BOUNCE_SIZE / sizeof(struct epoll_event)];
    int fd, most = as_int32(a[2]);
    struct iovec pieces[MAX_PIECES];
    if ((nr == SYS_epoll_pwait && a[4] != 0) || host_fd(s, a[0], 0, &fd) < 0 || most <= 0
        || (size_t)most > sizeof ready / sizeof ready[0])
        return -1;
    int count = translate(s, a[1], (uint64_t)most * sizeof ready[0], 1, pieces);
    if (count < 0)
        return -1;
    *result = raw(epoll_wait(fd, ready, most, 0));
    if (*result == 0 && as_int32(a[3]) != 0)
        return -1;
    if (*result > 0)
        scatter(pieces, count, ready, (size_t)*result * sizeof ready[0]);
    return 0;
}

/* Calls that fill a fixed-size structure: made into a host buffer, copied out on
 * success (the guest buffer is checked before the call, as the VMM checks it). */
static int finish_out(const struct iovec *pieces, int count, const void *data, size_t size,
                      int64_t result) {
    if (result >= 0)
        scatter(pieces, count, data, size);
    return 0;
}

/* poll, and ppoll without a signal mask and with no timeout or a zero one (a
 * nonzero one is written back with the time left, which is the VMM's): what is
 * ready now, over the guest's descriptors translated as sys_poll.py translates
 * them (one the guest has not: a host number nobody has, so POLLNVAL). Nothing
 * ready, with a timeout to wait, goes to the VMM; so do arrays longer than
 * MAX_NATIVE_POLL (the VMM checks them against the limit too). */
#define MAX_NATIVE_POLL 64
#define NO_HOST_FD 0x7FFFFFFF
static int call_poll(Server *s, long nr, const uint64_t *a, int64_t *result) {
    struct pollfd guest[MAX_NATIVE_POLL], host[MAX_NATIVE_POLL];
    struct iovec pieces[MAX_PIECES];
    struct timespec timeout;
    uint32_t nfds = (uint32_t)a[1];
    int waits;
    if (nr == SYS_ppoll) {
        struct iovec piece[MAX_PIECES];
        if (a[3] != 0)
            return -1;
        waits = a[2] == 0;
        if (!waits) {
            int pieces_of_timeout = translate(s, a[2], sizeof timeout, 0, piece);
            if (pieces_of_timeout < 0)
                return -1;
            gather(piece, pieces_of_timeout, &timeout);
            if (timeout.tv_sec != 0 || timeout.tv_nsec != 0)
                return -1;
        }
    } else {
        waits = as_int32(a[2]) != 0;
    }
    if (s->fds == NULL || nfds > MAX_NATIVE_POLL)
        return -1;
    if ((int64_t)nfds > __atomic_load_n(&s->fds->max_fds, __ATOMIC_RELAXED)) {
        *result = -EINVAL;
        return 0;
    }
    int count = 0;
    if (nfds > 0) {
        count = translate(s, a[0], nfds * sizeof guest[0], 1, pieces);
        if (count < 0)
            return -1;
        gather(pieces, count, guest);
    }
    for (uint32_t i = 0; i < nfds; i++) {
        host[i] = guest[i];
        host[i].revents = 0;
        if (guest[i].fd >= 0 && host_fd(s, (uint64_t)(uint32_t)guest[i].fd, 0, &host[i].fd) < 0)
            host[i].fd = NO_HOST_FD;
    }
    *result = raw(poll(host, nfds, 0));
    if (*result < 0 || (*result == 0 && waits))
        return -1;
    for (uint32_t i = 0; i < nfds; i++)
        guest[i].revents = host[i].revents;
    if (nfds > 0)
        scatter(pieces, count, guest, nfds * sizeof guest[0]);
    return 0;
}

static int call_fstat(Server *s, long nr, const uint64_t *a, int64_t *result) {
    int fd;
    struct stat st;
    struct iovec pieces[MAX_PIECES];
    (void)nr;
    if (host_fd(s, a[0], 0, &fd) < 0)
        return -1;
    int count = translate(s, a[1], sizeof st, 1, pieces);
    if (count < 0)
        return -1;
    *result = raw(fstat(fd, &st));
    return finish_out(pieces, count, &st, sizeof st, *result);
}

/* A path beneath one of the roots, opened O_PATH by the kernel's own walk
 * (RESOLVE_BENEATH: no "..", absolute symlink or magic link leads out); -1 when it
 * is not beneath any (or does not resolve): the VMM decides. Relative paths count
 * from the working directory (shared with the VMM); other directory descriptors
 * are left to the VMM. */
static int open_beneath_how(Server *s, int dirfd, const char *path, uint64_t flags);
static int open_checked(int dirfd, const char *path, int nofollow, int *error);

/* Whether a path has a ".." component. The gate judges the path with ".." taken
 * away lexically (normpath), the kernel walks it through symlinks: the two can
 * disagree, so such paths are the gate's. */
static int has_dotdot(const char *path) {
    for (const char *p = path; (p = strstr(p, "..")) != NULL; p += 2)
        if ((p == path || p[-1] == '/') && (p[2] == '/' || p[2] == '\0'))
            return 1;
    return 0;
}

/* Whether `path` is a root or beneath it, by name: the gate's _under(). */
static int under_root(const char *path, const char *root, size_t length) {
    while (length > 0 && root[length - 1] == '/')
        length--;                                  /* root.rstrip("/") + "/" */
    if (strncmp(path, root, length) == 0 && path[length] == '/')
        return 1;
    return strcmp(path, root) == 0;
}

/* Where the VMM's own descriptor `fd` shows in /proc/self/fd: the directory to
 * resolve `link` from (the held /proc/self/fd, or the walk from /). */
static int held_link(Server *s, int fd, char link[32]) {
    if (s->fd_directory >= 0 && s->fd_directory_pid == getpid()) {
        snprintf(link, 32, "%d", fd);
        return s->fd_directory;
    }
    snprintf(link, 32, "/proc/self/fd/%d", fd);
    return AT_FDCWD_VALUE;
}

/* The name /proc/self/fd/N shows for the VMM's own descriptor `fd` (readlink). */
static ssize_t held_name(Server *s, int fd, char *name, size_t size) {
    char link[32];
    int directory = held_link(s, fd, link);
    return readlinkat(directory, link, name, size);
}

/* A path the kernel resolves (outside /proc, through no magic link) to a file whose
 * name, as /proc/self/fd shows it, lies under a root by the gate's own comparison
 * of names: what the gate's pin checks last (guard.py _pin), for the roots
 * openat2 cannot take (single files, names that are not canonical). Held O_PATH;
 * -1 when it does not resolve or lies elsewhere: the VMM decides. */
static int hold_named(Server *s, int dirfd, const char *path, int nofollow, int *by_name) {
    static __thread char name[PATH_MAX_BYTES + 1];
    int error = 0;
    if (dirfd != AT_FDCWD_VALUE)
        return -1;
    int fd = open_checked(dirfd, path, nofollow, &error);
    if (fd < 0)
        return -1;
    ssize_t length = held_name(s, fd, name, sizeof name - 1);
    if (length > 0 && (size_t)length < sizeof name - 1) {
        name[length] = '\0';
        for (int i = 0; i < s->nroots; i++)
            if (under_root(name, s->root_path[i], s->root_length[i])) {
                if (by_name != NULL)
                    *by_name = 1;
                return fd;
            }
    }
    close(fd);
    return -1;
}

/* `*by_name` (unless NULL) is set when the path was accepted by hold_named (which
 * takes only paths from the current directory, AT_FDCWD). */
static int open_beneath(Server *s, int dirfd, const char *path, int nofollow, int *by_name) {
    if (has_dotdot(path))
        return -1;
    int fd = open_beneath_how(s, dirfd, path, O_PATH | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
    if (fd < 0)
        return hold_named(s, dirfd, path, nofollow, by_name);
    /* A root that holds /proc (the whole tree, say) may lead there from a relative
     * path: the VMM's /proc is not the guest's. */
    struct statfs where;
    if (fstatfs(fd, &where) < 0 || where.f_type == PROC_SUPER_MAGIC) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The walk beneath the directory roots, with openat2's flags `flags`. */
static int open_beneath_how(Server *s, int dirfd, const char *path, uint64_t flags) {
    static __thread char full[2 * PATH_MAX_BYTES + 2];
    const char *absolute = path;
    if (path[0] == '\0')
        return -1;
    if (path[0] != '/') {
        char cwd[PATH_MAX_BYTES];
        if (dirfd != AT_FDCWD_VALUE || getcwd(cwd, sizeof cwd) == NULL)
            return -1;
        snprintf(full, sizeof full, "%s/%s", cwd, path);
        absolute = full;
    }
    struct open_how how = {
        .flags = flags,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    for (int i = 0; i < s->nroots; i++) {
        size_t length = s->root_length[i];
        const char *rest;
        if (s->root_fd[i] < 0)
            continue;                             /* a name only (hold_named) */
        if (length == 1) {
            rest = absolute + 1;                  /* the root directory itself */
        } else if (strncmp(absolute, s->root_path[i], length) == 0
                   && (absolute[length] == '/' || absolute[length] == '\0')) {
            rest = absolute + length;
        } else {
            continue;
        }
        while (*rest == '/')
            rest++;
        int fd = (int)syscall(SYS_openat2, s->root_fd[i], *rest ? rest : ".", &how, sizeof how);
        if (fd >= 0)
            return fd;
    }
    return -1;
}

/* Whether a walk that failed may have failed inside /proc (where the VMM's answer
 * differs: its /proc/self is not the guest's): its directory part resolves there,
 * or does not resolve at all (then the VMM finds out where it failed). */
static int walk_reaches_proc(int dirfd, const char *path) {
    static __thread char parent[PATH_MAX_BYTES];
    const char *slash = strrchr(path, '/');
    struct statfs where;
    if (slash == NULL) {
        strcpy(parent, ".");
    } else if (slash == path) {
        strcpy(parent, "/");
    } else {
        size_t length = (size_t)(slash - path);
        memcpy(parent, path, length);
        parent[length] = '\0';
    }
    int fd = openat(dirfd, parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    int in_proc = fstatfs(fd, &where) < 0 || where.f_type == PROC_SUPER_MAGIC;
    close(fd);
    return in_proc;
}

/* Whether the path's last component is a symlink: a walk that failed through it
 * may have failed in /proc (a planted link to /proc/self/fd/N names the VMM's). */
static int ends_in_symlink(int dirfd, const char *path) {
    struct stat st;
    return fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
}

/* The file a path names, opened O_PATH by the kernel's own walk, for a call the VMM
 * would forward as it is; -1 when the walk passes a magic link (/proc/PID/fd/N and
 * friends) or ends in /proc: the VMM's /proc is not the guest's, and the VMM judges
 * every route there (a relative path from a /proc directory, a planted symlink).
 * Otherwise a walk error is the call's own answer, in *error. */
static int open_checked(int dirfd, const char *path, int nofollow, int *error) {
    struct open_how how = {
        .flags = O_PATH | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0),
        .resolve = RESOLVE_NO_MAGICLINKS,
    };
    struct statfs where;
    if (path[0] == '\0')
        return -1;
    int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd < 0) {
        int failed = errno;
        if (failed == ELOOP || failed == EXDEV || walk_reaches_proc(dirfd, path)
            || (!nofollow && ends_in_symlink(dirfd, path)))
            return -1;                 /* a magic link, a loop, or /proc: the VMM decides */
        *error = failed;
        return -2;
    }
    if (fstatfs(fd, &where) < 0 || where.f_type == PROC_SUPER_MAGIC) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The path a call names, held as an O_PATH descriptor the call then acts on (so
 * the file checked is the file used): beneath a root for a BENEATH action, else
 * anywhere outside /proc. -1: the VMM decides; -2: the walk failed, and *result is
 * the call's answer (-errno). */
static int hold_path(Server *s, long nr, int dirfd, const char *path, int flags,
                     int64_t *result, int *by_name) {
    int error = 0;
    int nofollow = flags & AT_SYMLINK_NOFOLLOW;
    /* The guest's own descriptor: no path to check (the gate allows an empty path
     * with a directory descriptor as it is, beneath the roots or not). */
    if (path[0] == '\0' && flags & AT_EMPTY_PATH && dirfd != AT_FDCWD_VALUE)
        return fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (s->action[nr] == ACTION_BENEATH)
        return open_beneath(s, dirfd, path, nofollow, by_name);
    int held = open_checked(dirfd, path, nofollow, &error);
    if (held == -2)
        *result = -error;
    return held;
}

/* stat, lstat, newfstatat: a path (and a directory descriptor) and a struct stat. */
static int call_stat_path(Server *s, long nr, const uint64_t *a, int64_t *result) {
    char path[PATH_MAX_BYTES];
    struct stat st;
    struct iovec pieces[MAX_PIECES];
    int dirfd = AT_FDCWD_VALUE, flags = 0;
    uint64_t path_arg = a[0], buf_arg = a[1];
    if (nr == SYS_newfstatat) {
        if (dir_fd(s, a[0], &dirfd) < 0)
            return -1;
        path_arg = a[1];
        buf_arg = a[2];
        flags = (int)a[3];
    } else if (nr == SYS_lstat) {
        flags = AT_SYMLINK_NOFOLLOW;
    }
    if (read_path(s, path_arg, path) < 0)
        return -1;
    int npieces = translate(s, buf_arg, sizeof st, 1, pieces);
    if (npieces < 0)
        return -1;
    if (flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT))
        return -1;
    /* A path accepted by name before, reaching the same file (namedstat.h). */
    if (s->action[nr] == ACTION_BENEATH && dirfd == AT_FDCWD_VALUE
        && namedstat_lookup(s->roots_generation, path, flags, &st)) {
        count(&s->served_remembered);
        *result = 0;
        return finish_out(pieces, npieces, &st, sizeof st, *result);
    }
    int by_name = 0;
    int held = hold_path(s, nr, dirfd, path, flags, result, &by_name);
    if (held == -1)
        return -1;
    if (held >= 0) {
        if (by_name && namedstat_remember(s->roots_generation, path, flags, held, &st))
            *result = 0;
        else
            *result = raw(syscall(SYS_newfstatat, held, "", &st, AT_EMPTY_PATH));
        close(held);
    }
    return finish_out(pieces, npieces, &st, sizeof st, *result);
}

static int call_statx(Server *s, long nr, const uint64_t *a, int64_t *result) {
    char path[PATH_MAX_BYTES];
    struct statx stx;
    struct iovec pieces[MAX_PIECES];
    int dirfd, flags = (int)a[2];
    (void)nr;
    if (dir_fd(s, a[0], &dirfd) < 0 || read_path(s, a[1], path) < 0)
        return -1;
    int count = translate(s, a[4], sizeof stx, 1, pieces);
    if (count < 0)
        return -1;
    if (flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE))
        return -1;
    int held = hold_path(s, nr, dirfd, path, flags, result, NULL);
    if (held == -1)
        return -1;
    if (held >= 0) {
        *result = raw(syscall(SYS_statx, held, "", AT_EMPTY_PATH | (flags & AT_STATX_SYNC_TYPE),
                              (unsigned)a[3], &stx));
        close(held);
    }
    return finish_out(pieces, count, &stx, sizeof stx, *result);
}

/* readlink, readlinkat: the link held as lstat holds it (O_NOFOLLOW; never in /proc,
 * whose links the VMM answers for the guest: procfs.readlink), its target read into
 * a bounce buffer, then only the bytes returned written to the guest (Linux writes
 * no more either). A size the kernel refuses (not a positive int) is the VMM's. */
static int call_readlink(Server *s, long nr, const uint64_t *a, int64_t *result) {
    char path[PATH_MAX_BYTES];
    static __thread char target[PATH_MAX_BYTES];
    struct iovec pieces[MAX_PIECES];
    int dirfd = AT_FDCWD_VALUE;
    uint64_t path_arg = a[0], buffer = a[1], size = a[2];
    if (nr == SYS_readlinkat) {
        if (dir_fd(s, a[0], &dirfd) < 0)
            return -1;
        path_arg = a[1];
        buffer = a[2];
        size = a[3];
    }
    if (as_int32(size) <= 0 || read_path(s, path_arg, path) < 0)
        return -1;
    int held = hold_path(s, nr, dirfd, path, AT_SYMLINK_NOFOLLOW, result, NULL);
    if (held < 0)
        return held == -1 ? -1 : 0;
    ssize_t length = readlinkat(held, "", target, sizeof target);
    int failed = errno;
    close(held);
    if (length < 0) {
        /* An empty path names the held file itself: ENOENT means it is no link. */
        *result = failed == ENOENT ? -EINVAL : -failed;
        return 0;
    }
    size_t limit = (size_t)as_int32(size);
    size_t wanted = (size_t)length < limit ? (size_t)length : limit;
    int count = translate(s, buffer, wanted, 1, pieces);
    if (count < 0)
        return -1;
    scatter(pieces, count, target, wanted);
    *result = (int64_t)wanted;
    return 0;
}

/* access, faccessat, faccessat2. */
static int call_access(Server *s, long nr, const uint64_t *a, int64_t *result) {
    char path[PATH_MAX_BYTES];
    int dirfd = AT_FDCWD_VALUE, mode, flags = 0;
    if (nr == SYS_access) {
        if (read_path(s, a[0], path) < 0)
            return -1;
        mode = (int)a[1];
    } else {
        if (dir_fd(s, a[0], &dirfd) < 0 || read_path(s, a[1], path) < 0)
            return -1;
        mode = (int)a[2];
        flags = nr == SYS_faccessat2 ? (int)a[3] : 0;
    }
    if (flags & ~(AT_SYMLINK_NOFOLLOW | AT_EACCESS))
        return -1;
    /* The file the walk found is the file asked about (its permission bits, by the
     * real or effective ids as the flags say); the walk's own error answers first. */
    int held = hold_path(s, nr, dirfd, path, flags, result, NULL);
    if (held < 0)
        return held == -1 ? -1 : 0;
    *result = raw(syscall(SYS_faccessat2, held, "", mode, (flags & AT_EACCESS) | AT_EMPTY_PATH));
    close(held);
    return 0;
}

/* getxattr, lgetxattr, listxattr, llistxattr: the file held as the other path calls
 * hold it, then asked through /proc/self/fd/N (an O_PATH descriptor has no xattr
 * calls of its own) -- as the gate's pin does. The l* calls on a symlink go to the
 * VMM (the /proc link would follow it). The value goes through a bounce buffer of
 * XATTR_SIZE_MAX (the kernel's own cap), so a larger size is the VMM's. */
static int call_xattr(Server *s, long nr, const uint64_t *a, int64_t *result) {
    char path[PATH_MAX_BYTES];
    char name[XATTR_NAME_MAX + 1];
    char link[32];
    struct iovec pieces[MAX_PIECES];
    struct stat held_stat;
    static __thread uint8_t bounce[XATTR_SIZE_MAX];
    int listing = nr == SYS_listxattr || nr == SYS_llistxattr;
    int nofollow = nr == SYS_lgetxattr || nr == SYS_llistxattr;
    uint64_t buffer = listing ? a[1] : a[2], size = listing ? a[2] : a[3];
    int count = 0;
    /* An empty name is refused before the walk (ERANGE): the VMM's, as a walk
     * error here would answer first. */
    if (read_path(s, a[0], path) < 0 || size > sizeof bounce
        || (!listing && (read_string(s, a[1], name, sizeof name) < 0 || name[0] == '\0')))
        return -1;
    if (size > 0 && (count = translate(s, buffer, size, 1, pieces)) < 0)
        return -1;
    int held = hold_path(s, nr, AT_FDCWD_VALUE, path, nofollow ? AT_SYMLINK_NOFOLLOW : 0, result,
                         NULL);
    if (held == -1)
        return -1;
    if (held >= 0) {
        if (fstat(held, &held_stat) < 0 || S_ISLNK(held_stat.st_mode)) {
            close(held);
            return -1;
        }
        snprintf(link, sizeof link, "/proc/self/fd/%d", held);
        *result = listing ? raw(listxattr(link, (char *)bounce, size))
                          : raw(getxattr(link, name, bounce, size));
        close(held);
    }
    if (*result > 0 && size > 0)
        scatter(pieces, count, bounce, (size_t)*result);
    return 0;
}

static int call_getdents64(Server *s, long nr, const uint64_t *a, int64_t *result) {
    int fd;
    struct iovec pieces[MAX_PIECES];
    static __thread uint8_t bounce[BOUNCE_SIZE];
    (void)nr;
    if (host_fd(s, a[0], 0, &fd) < 0 || a[2] > BOUNCE_SIZE)
        return -1;
    int count = translate(s, a[1], a[2], 1, pieces);
    if (count < 0)
        return -1;
    if (count == 1) {
        *result = raw(syscall(SYS_getdents64, fd, pieces[0].iov_base, pieces[0].iov_len));
        return 0;
    }
    *result = raw(syscall(SYS_getdents64, fd, bounce, (size_t)a[2]));
    if (*result > 0)
        scatter(pieces, count, bounce, (size_t)*result);
    return 0;
}

static int call_lseek(Server *s, long nr, const uint64_t *a, int64_t *result) {
    int fd;
    (void)nr;
    if (host_fd(s, a[0], 0, &fd) < 0)
        return -1;
    *result = raw(syscall(SYS_lseek, fd, a[1], a[2]));
    return 0;
}

/* Clocks that read the same from any thread of the process. */
static int process_wide_clock(uint64_t clock) {
    switch (as_int32(clock)) {
    case CLOCK_REALTIME: case CLOCK_MONOTONIC: case CLOCK_PROCESS_CPUTIME_ID:
    case CLOCK_MONOTONIC_RAW: case CLOCK_REALTIME_COARSE: case CLOCK_MONOTONIC_COARSE:
    case CLOCK_BOOTTIME:
        return 1;
    default:
        return 0;   /* the thread's own CPU clock, other processes' clocks: the VMM */
    }
}

static int call_clock_gettime(Server *s, long nr, const uint64_t *a, int64_t *result) {
    struct timespec ts;
    struct iovec pieces[MAX_PIECES];
    (void)nr;
    if (!process_wide_clock(a[0]))
        return -1;
    int count = translate(s, a[1], sizeof ts, 1, pieces);
    if (count < 0)
        return -1;
    *result = raw(syscall(SYS_clock_gettime, as_int32(a[0]), &ts));
    return finish_out(pieces, count, &ts, sizeof ts, *result);
}

static int call_time(Server *s, long nr, const uint64_t *a, int64_t *result) {
    struct iovec pieces[MAX_PIECES];
    int64_t now;
    int count = 0;
    (void)nr;
    if (a[0] != 0 && (count = translate(s, a[0], sizeof now, 1, pieces)) < 0)
        return -1;
    now = raw(syscall(SYS_time, NULL));
    *result = now;
    if (a[0] != 0)
        finish_out(pieces, count, &now, sizeof now, now);
    return 0;
}

/* fd-only calls that cannot block on I/O the guest waits for. */
static int call_fd_only(Server *s, long nr, const uint64_t *a, int64_t *result) {
    int fd;
    if (host_fd(s, a[0], 0, &fd) < 0)
        return -1;
    *result = raw(syscall(nr, fd, a[1], a[2], a[3]));
    return 0;
}

/* futex: the private commands that never sleep here. A wake acts on the host's
 * futex at the word's address in guest memory, as the VMM's futex.py does; a wait
 * whose word already differs answers EAGAIN; a wait that would sleep, a timeout
 * to check, a shared futex or anything else goes to the VMM (this thread serves
 * every vCPU: it never sleeps for one). */
static int call_futex(Server *s, long nr, const uint64_t *a, int64_t *result) {
    int op = as_int32(a[1]);
    int command = op & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    uint32_t value = (uint32_t)a[2], bitset = (uint32_t)a[5];
    struct iovec word;
    (void)nr;
    if (!(op & FUTEX_PRIVATE_FLAG) || a[0] & 3)
        return -1;
    if ((command == FUTEX_WAKE_BITSET || command == FUTEX_WAIT_BITSET) && bitset == 0)
        return -1;
    if (command == FUTEX_WAKE || command == FUTEX_WAKE_BITSET) {
        if (translate(s, a[0], 4, 0, &word) != 1)
            return -1;
        *result = raw(syscall(SYS_futex, word.iov_base, op, value, NULL, NULL, bitset));
        return 0;
    }
    if ((command == FUTEX_WAIT || command == FUTEX_WAIT_BITSET) && a[3] == 0) {
        if (translate(s, a[0], 4, 0, &word) != 1
            || __atomic_load_n((uint32_t *)word.iov_base, __ATOMIC_SEQ_CST) == value)
            return -1;
        *result = -EAGAIN;
        return 0;
    }
    return -1;
}

/* -- the descriptor table's calls (close, dup*, fcntl, open*) ------------------------ */
/* Served on the table the VMM uses (fdstore.h), only while this thread holds the
 * process's lock: held, the VMM is at work on the process and serves the call. */

static int lock_table(Server *s) {
    return s->fds != NULL && s->process_lock != NULL && proclock_try(s->process_lock);
}

static void unlock_table(Server *s) {
    proclock_release(s->process_lock);
}

/* A host descriptor just cleared from the table is closed only once no other serve
 * that may have looked it up is under way (the quiesce rule, less this serve's own
 * registration: it holds the process's lock, so no quiesce of the VMM's runs, and
 * the generation is still the one it registered in). */
static void close_cleared(Server *s, int host, int64_t *result) {
    int parity = (int)(__atomic_fetch_add(&s->generation, 1, __ATOMIC_SEQ_CST) & 1);
    while (__atomic_load_n(&s->in_flight[parity], __ATOMIC_SEQ_CST) > 1)
        __builtin_ia32_pause();
    int64_t closed = raw(close(host));
    if (result != NULL)
        *result = closed;
}

static int call_close(Server *s, long nr, const uint64_t *a, int64_t *result) {
    uint32_t flags;
    int slow = 0;
    (void)nr;
    if (!lock_table(s))
        return -1;
    const fd_slot *slot = fdstore_lookup(s->fds, as_int32(a[0]), &flags);
    if (slot == NULL)
        *result = -EBADF;
    else if (fdstore_held(s->fds, slot->host))
        slow = 1;                   /* a blocked call uses it: the VMM closes it later */
    else
        close_cleared(s, fdstore_clear(s->fds, as_int32(a[0])), result);
    unlock_table(s);
    if (!slow)
        count(&s->served_fd_table);
    return slow ? -1 : 0;
}

/* A new host descriptor (close-on-exec, at or above the floor) for the file of
 * `slot`, made the guest's `target` (replacing what it named), or, for target -1,
 * the guest's lowest free number at or above `minimum`. -1: the VMM decides. */
static int dup_slot(Server *s, const fd_slot *slot, uint32_t flags, int target, long minimum,
                    int cloexec, int64_t *result) {
    uint32_t replaced_flags;
    const fd_slot *replaced = target >= 0 ? fdstore_lookup(s->fds, target, &replaced_flags) : NULL;
    if (replaced != NULL && fdstore_held(s->fds, replaced->host))
        return -1;
    int host = fcntl(slot->host, F_DUPFD_CLOEXEC, FDSTORE_HOST_FLOOR);
    if (host < 0)
        return -1;
    int fd = target >= 0 ? target : fdstore_lowest_free(s->fds, minimum);
    if (fd < 0) {
        close(host);
        *result = -EMFILE;
        return 0;
    }
    if (replaced != NULL)
        close_cleared(s, fdstore_clear(s->fds, target), NULL);
    uint32_t kept = (flags & FDS_IO_KINDS) | (cloexec ? FDS_CLOEXEC : 0);
    if (fdstore_set(s->fds, fd, host, kept) < 0) {
        close(host);
        *result = -ENOMEM;
        return 0;
    }
    *result = fd;
    return 0;
}

/* dup, dup2, dup3 and fcntl's F_DUPFD/F_DUPFD_CLOEXEC on the locked table, with
 * sys_file.py's checks in its order. 0: answered; -1: the VMM decides. */
static int dup_locked(Server *s, long nr, const uint64_t *a, int cloexec, int64_t *result) {
    uint32_t flags;
    int old = as_int32(a[0]);
    const fd_slot *slot = fdstore_lookup(s->fds, old, &flags);
    int limit = __atomic_load_n(&s->fds->max_fds, __ATOMIC_ACQUIRE);
    if (slot == NULL) {
        *result = -EBADF;
        return 0;
    }
    if (nr == SYS_fcntl) {
        long minimum = (long)(uint32_t)a[2];       /* an unsigned int to Linux */
        if (minimum >= limit) {
            *result = -EINVAL;
            return 0;
        }
        return dup_slot(s, slot, flags, -1, minimum, cloexec, result);
    }
    if (nr == SYS_dup)
        return dup_slot(s, slot, flags, -1, 0, 0, result);
    int target = as_int32(a[1]);
    if (target < 0 || target >= limit || target == old) {
        *result = target == old && target >= 0 && target < limit ? target : -EBADF;
        return 0;
    }
    return dup_slot(s, slot, flags, target, 0, cloexec, result);
}

static int call_dup(Server *s, long nr, const uint64_t *a, int64_t *result) {
    int cloexec = 0;
    if (nr == SYS_dup3) {
        if (((uint32_t)a[2] & ~(uint32_t)O_CLOEXEC) || as_int32(a[0]) == as_int32(a[1])) {
            *result = -EINVAL;
            return 0;
        }
        cloexec = (a[2] & O_CLOEXEC) != 0;
    } else if (nr == SYS_fcntl) {
        cloexec = as_int32(a[1]) == F_DUPFD_CLOEXEC;
    }
    if (!lock_table(s))
        return -1;
    int answered = dup_locked(s, nr, a, cloexec, result) == 0;
    unlock_table(s);
    if (answered)
        count(&s->served_fd_table);
    return answered ? 0 : -1;
}

/* fcntl: the descriptor flag and the dups on the table, F_GETFL forwarded as the
 * VMM forwards it; other commands go to the VMM. */
static int call_fcntl(Server *s, long nr, const uint64_t *a, int64_t *result) {
    int cmd = as_int32(a[1]), host;
    uint32_t flags;
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
        return call_dup(s, nr, a, result);
    if (cmd == F_GETFL) {
        if (host_fd(s, a[0], 0, &host) < 0)
            return -1;
        *result = raw(fcntl(host, F_GETFL));
        return 0;
    }
    if (cmd != F_GETFD && cmd != F_SETFD)
        return -1;
    if (cmd == F_GETFD) {
        if (s->fds == NULL)
            return -1;
        const fd_slot *slot = fdstore_lookup(s->fds, as_int32(a[0]), &flags);
        *result = slot == NULL ? -EBADF : (flags & FDS_CLOEXEC ? FD_CLOEXEC : 0);
        return 0;
    }
    if (!lock_table(s))
        return -1;
    if (fdstore_lookup(s->fds, as_int32(a[0]), &flags) == NULL) {
        *result = -EBADF;
    } else {
        fdstore_set_cloexec(s->fds, as_int32(a[0]), (a[2] & FD_CLOEXEC) != 0);
        *result = 0;
    }
    unlock_table(s);
    count(&s->served_fd_table);
    return 0;
}

/* -- rt_sigaction on the dispositions the VMM delivers with (sigstore.h) ------------- */

#define SIGSET_BYTES 8

/* signals.py's sys_rt_sigaction in its (Linux's) order. A pointer that does not
 * translate goes to the VMM before anything changed (it pages in, or answers EFAULT),
 * as does a new action that ignores the signal (pending ones are dropped there). */
static int call_rt_sigaction(Server *s, long nr, const uint64_t *a, int64_t *result) {
    struct iovec act_pieces[2], old_pieces[2];
    int act_count = 0, old_count = 0;
    kernel_sigaction act, old;
    (void)nr;
    if (a[3] != SIGSET_BYTES) {
        *result = -EINVAL;
        return 0;
    }
    if (s->sigactions == NULL
        || (a[1] && (act_count = translate(s, a[1], sizeof act, 0, act_pieces)) < 0)
        || (a[2] && (old_count = translate(s, a[2], sizeof old, 1, old_pieces)) < 0))
        return -1;
    if (a[1])
        gather(act_pieces, act_count, &act);
    if (!lock_table(s))
        return -1;
    int slow = sigstore_sigaction(s->sigactions, (long)as_int32(a[0]), a[1] ? &act : NULL,
                                  a[2] ? &old : NULL, result) != 0;
    unlock_table(s);
    if (!slow && *result == 0 && a[2])
        scatter(old_pieces, old_count, &old, sizeof old);
    return slow ? -1 : 0;
}

/* -- ioctl: a terminal query on what is no terminal ------------------------------------ */

/* TCGETS and TIOCGWINSZ (isatty, stdio's buffering choice) on a file, pipe or socket:
 * the host's ENOTTY, asked on its descriptor (the queries change nothing, and Linux
 * never reads the argument before it refuses them). A terminal, a descriptor whose
 * I/O the VMM serves, any other answer or request: the VMM (sys_file.py's sys_ioctl,
 * whose first check, EBADF, is the one made here). */
static int call_ioctl(Server *s, long nr, const uint64_t *a, int64_t *result) {
    uint32_t request = (uint32_t)a[1], flags;
    union { struct termios terminal; struct winsize window; } answer;
    (void)nr;
    if (s->fds == NULL || (request != TCGETS && request != TIOCGWINSZ))
        return -1;
    const fd_slot *slot = fdstore_lookup(s->fds, as_int32(a[0]), &flags);
    if (slot == NULL) {
        *result = -EBADF;
        return 0;
    }
    if (!(flags & FDS_IO_KINDS) || ioctl(slot->host, request, &answer) == 0 || errno != ENOTTY)
        return -1;
    *result = -ENOTTY;
    return 0;
}

/* The file an O_PATH descriptor holds, opened with `flags` through /proc/self/fd. */
static int reopen_held(Server *s, int held, int flags) {
    char link[32];
    int directory = held_link(s, held, link);
    return (int)syscall(SYS_openat, directory, link, flags | O_CLOEXEC | O_NONBLOCK, 0);
}

/* The file a non-creating open names, opened as the VMM would open it, when it is a
 * regular file or a directory outside /proc (other files may block in open, or are
 * answered by the VMM): the walk is checked first on an O_PATH descriptor, then the
 * open's own descriptor must be the same file. Returns the descriptor, -1 (the VMM
 * decides) or -2 with *error (the call's answer). */

static int open_plain_file(Server *s, int beneath, int dirfd, const char *path, int flags,
                           int *error) {
    struct stat checked, opened;
    int held = beneath ? open_beneath(s, dirfd, path, flags & O_NOFOLLOW, NULL)
                       : open_checked(dirfd, path, flags & O_NOFOLLOW, error);
    if (held < 0)
        return held;
    int usable = fstat(held, &checked) == 0
                 && (S_ISREG(checked.st_mode) || S_ISDIR(checked.st_mode));
    if (!usable) {
        close(held);
        return -1;
    }
    /* O_NONBLOCK: a lease or a swapped-in FIFO must not make this thread wait.
     * Beneath the roots, the file checked is reopened through its descriptor, as
     * the gate's pin opens it (the walk is not repeated; O_NOFOLLOW was the held
     * walk's, and would refuse the /proc link itself). */
    int fd = beneath ? reopen_held(s, held, flags & ~O_NOFOLLOW)
                     : (int)syscall(SYS_openat, dirfd, path, flags | O_CLOEXEC | O_NONBLOCK, 0);
    close(held);
    if (fd < 0) {
        if (beneath || errno == EAGAIN || errno == ELOOP)
            return -1;
        *error = errno;
        return -2;
    }
    if (fstat(fd, &opened) < 0 || opened.st_dev != checked.st_dev
        || opened.st_ino != checked.st_ino
        || (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The open flags a gate's BENEATH rule lets through here: reading only (the rule
 * promises no more), and nothing openat2 would refuse that openat ignores. */
#define BENEATH_OPEN_FLAGS (O_NONBLOCK | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW | O_LARGEFILE \
                            | O_NOCTTY)

/* open, openat: where the VMM only forwards (no /proc or /dev path, nothing
 * created), the file opened here and installed in the table as the VMM's adopt_fd
 * installs it: at the lowest free number, above the host floor, close-on-exec.
 * Under a BENEATH rule only reading opens, of files beneath a root (as the kernel
 * resolves them from the root's descriptor); anything else goes to the gate. */
static int call_open(Server *s, long nr, const uint64_t *a, int64_t *result) {
    char path[PATH_MAX_BYTES];
    int dirfd = AT_FDCWD_VALUE, error = 0;
    uint64_t path_arg = a[0];
    int flags = as_int32(a[1]);
    if (nr == SYS_openat) {
        if (dir_fd(s, a[0], &dirfd) < 0)
            return -1;
        path_arg = a[1];
        flags = as_int32(a[2]);
    }
    int creates = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;  /* O_TMPFILE has O_DIRECTORY's bit */
    int beneath = s->action[nr] == ACTION_BENEATH;
    if (beneath && (flags & ~BENEATH_OPEN_FLAGS) != O_RDONLY)
        return -1;
    if (creates || s->fds == NULL || read_path(s, path_arg, path) < 0)
        return -1;
    int opened = open_plain_file(s, beneath, dirfd, path, flags, &error);
    if (opened == -2) {
        *result = -error;
        return 0;
    }
    if (opened < 0)
        return -1;
    int host = opened >= FDSTORE_HOST_FLOOR ? opened
                                            : fcntl(opened, F_DUPFD_CLOEXEC, FDSTORE_HOST_FLOOR);
    if (host != opened)
        close(opened);
    if (host < 0 || !lock_table(s)) {
        if (host >= 0)
            close(host);
        return -1;
    }
    int fd = fdstore_lowest_free(s->fds, 0);
    uint32_t installed = FDS_IO_NEVER_BLOCKS | (flags & O_CLOEXEC ? FDS_CLOEXEC : 0);
    if (fd < 0 || fdstore_set(s->fds, fd, host, installed) < 0) {
        close(host);
        *result = -EMFILE;
    } else {
        *result = fd;
    }
    unlock_table(s);
    count(&s->served_fd_table);
    return 0;
}

struct fast_entry {
    long nr;
    fast_call call;
};

static const struct fast_entry FAST_CALLS[] = {
    {SYS_getpid, call_plain}, {SYS_getppid, call_plain}, {SYS_getuid, call_plain},
    {SYS_geteuid, call_plain}, {SYS_getgid, call_plain}, {SYS_getegid, call_plain},
    {SYS_getpgrp, call_plain}, {SYS_getpgid, call_plain}, {SYS_getsid, call_plain},
    {SYS_read, call_rw}, {SYS_write, call_rw}, {SYS_pread64, call_rw},
    {SYS_pwrite64, call_rw}, {SYS_readv, call_rw}, {SYS_writev, call_rw},
    {SYS_sendto, call_send_receive}, {SYS_recvfrom, call_send_receive},
    {SYS_epoll_wait, call_epoll_wait}, {SYS_epoll_pwait, call_epoll_wait},
    {SYS_lseek, call_lseek}, {SYS_fstat, call_fstat},
    {SYS_stat, call_stat_path}, {SYS_lstat, call_stat_path},
    {SYS_newfstatat, call_stat_path}, {SYS_statx, call_statx},
    {SYS_access, call_access}, {SYS_faccessat, call_access}, {SYS_faccessat2, call_access},
    {SYS_getdents64, call_getdents64}, {SYS_clock_gettime, call_clock_gettime},
    {SYS_time, call_time}, {SYS_fsync, call_fd_only}, {SYS_fdatasync, call_fd_only},
    {SYS_fadvise64, call_fd_only}, {SYS_futex, call_futex},
    {SYS_close, call_close}, {SYS_dup, call_dup}, {SYS_dup2, call_dup}, {SYS_dup3, call_dup},
    {SYS_fcntl, call_fcntl}, {SYS_open, call_open}, {SYS_openat, call_open},
    {SYS_rt_sigaction, call_rt_sigaction}, {SYS_ioctl, call_ioctl},
    {SYS_getxattr, call_xattr}, {SYS_lgetxattr, call_xattr}, {SYS_listxattr, call_xattr},
    {SYS_llistxattr, call_xattr}, {SYS_poll, call_poll}, {SYS_ppoll, call_poll},
    {SYS_readlink, call_readlink}, {SYS_readlinkat, call_readlink},
};
#define N_FAST_CALLS (sizeof FAST_CALLS / sizeof FAST_CALLS[0])

static fast_call CALL_TABLE[NR_CALLS];

/* The calls that can be served only beneath the roots (their path is the only
 * thing a policy checks, for reading). */
static int takes_beneath(unsigned nr) {
    return nr == SYS_stat || nr == SYS_lstat || nr == SYS_newfstatat || nr == SYS_statx
        || nr == SYS_open || nr == SYS_openat || nr == SYS_getxattr || nr == SYS_lgetxattr
        || nr == SYS_listxattr || nr == SYS_llistxattr || nr == SYS_readlink
        || nr == SYS_readlinkat;
}

/* -- serving ------------------------------------------------------------------------- */

/* Exactly one of the thread and the waiting VMM serves each request, and only while
 * it is the newest: a thread that read a request, then was preempted while the VMM
 * served it and the next ones, must not claim it again (it would serve the current
 * request's arguments a second time and move RESPONSE_SEQ back, and the guest would
 * wait for an answer nobody gives). */
static int claim(Ring *r, uint64_t seq) {
    uint64_t previous = __atomic_load_n(&r->claimed_seq, __ATOMIC_ACQUIRE);
    return previous < seq
        && __atomic_compare_exchange_n(&r->claimed_seq, &previous, seq, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

static void count(uint64_t *counter) { __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }

/* A serve registers in the current generation before it translates anything; a
 * quiesce() that bumped the generation meanwhile makes it register again, so the
 * quiesce either waits for it or it sees the VMM's changes. */
static int enter_serving(Server *s) {
    for (;;) {
        int parity = (int)(__atomic_load_n(&s->generation, __ATOMIC_SEQ_CST) & 1);
        __atomic_fetch_add(&s->in_flight[parity], 1, __ATOMIC_SEQ_CST);
        if ((int)(__atomic_load_n(&s->generation, __ATOMIC_SEQ_CST) & 1) == parity)
            return parity;
        __atomic_fetch_sub(&s->in_flight[parity], 1, __ATOMIC_SEQ_CST);
    }
}

static void leave_serving(Server *s, int parity) {
    __atomic_fetch_sub(&s->in_flight[parity], 1, __ATOMIC_SEQ_CST);
}

static void quiesce_serves(void *server);

/* A VMM call (vmm_calls.h): 0 with *result when the installed handler answered it. */
static int serve_vmm_call(Server *s, Ring *r, uint64_t op, const uint64_t *args,
                          int64_t *result) {
    int slow = 1;
    if (__atomic_load_n(&r->force_slow, __ATOMIC_ACQUIRE))
        return 1;
    pthread_mutex_lock(&s->vmm_lock);
    if (s->vmm_calls != NULL)
        slow = s->vmm_calls->serve(s->vmm_calls->context, op, args, result, quiesce_serves,
                                   s) != 0;
    pthread_mutex_unlock(&s->vmm_lock);
    if (!slow)
        count(&s->served_vmm);
    return slow;
}

/* Answer the call (nr, args) of ring `r`: *result and CALLRING_DONE, CALLRING_SLOW
 * or CALLRING_HANDOFF; *tally the counter to bump once the guest has its answer. */
static uint32_t answer_call(Server *s, Ring *r, uint64_t nr, const uint64_t *args,
                            int64_t *result, uint64_t **tally) {
    int outcome = SERVE_SLOW;
    *result = 0;
    *tally = NULL;
    if (nr - CALLRING_VMM_CALLS < KVMDUNE_VMM_CALL_OPS)   /* unregistered: it may quiesce */
        outcome = serve_vmm_call(s, r, nr - CALLRING_VMM_CALLS, args, result) ? SERVE_SLOW
                                                                               : SERVED;
    int parity = enter_serving(s);
    if (waiting_here != NULL)
        waiting_here->parity = parity;
    if (!__atomic_load_n(&r->force_slow, __ATOMIC_ACQUIRE) && nr < NR_CALLS) {
        if (s->action[nr] == ACTION_DENY) {
            *result = -(int64_t)s->deny_errno[nr];
            outcome = SERVED;
            *tally = &s->served_denied;
        } else if ((s->action[nr] == ACTION_FAST || s->action[nr] == ACTION_BENEATH)
                   && CALL_TABLE[nr] != NULL) {
            outcome = CALL_TABLE[nr](s, (long)nr, args, result);
            *tally = &s->served_fast;
        }
    }
    leave_serving(s, parity);
    if (outcome == SERVE_HANDOFF) {
        *tally = &s->handoffs;
        return CALLRING_HANDOFF;
    }
    if (outcome != SERVED)
        *tally = &s->sent_slow;
    return outcome == SERVED ? CALLRING_DONE : CALLRING_SLOW;
}

/* The answer goes to the guest: the ring's result and disposition, then the
 * response (a handed-over call's second answer: the number the guest has already). */
static void publish(Ring *r, uint64_t seq, int64_t result, uint32_t disposition,
                    uint64_t *tally) {
    *RING64(r, CALLRING_RESULT) = (uint64_t)result;
    *RING32(r, CALLRING_DISPOSITION) = disposition;
    __atomic_store_n((uint64_t *)RING64(r, CALLRING_RESPONSE_SEQ), seq, __ATOMIC_RELEASE);
    __atomic_fetch_add(&r->served_word, 1, __ATOMIC_RELEASE);
    if (__atomic_load_n(&r->vcpu_waiting, __ATOMIC_ACQUIRE))
        futex(&r->served_word, FUTEX_WAKE, 1, NULL);
    if (tally != NULL)
        count(tally);
}

static void serve(Server *s, Ring *r, uint64_t seq) {
    uint64_t nr = *RING64(r, CALLRING_NR), args[6], *tally;
    for (int i = 0; i < 6; i++)
        args[i] = *RING64(r, CALLRING_ARG0 + 8 * i);
    int64_t result;
    uint32_t disposition = answer_call(s, r, nr, args, &result, &tally);
    if (disposition == CALLRING_HANDOFF) {
        /* The guest exits on this answer and its thread serves the call (the
         * thread need not spin for this vCPU meanwhile: vcpu_out). */
        r->handoff_seq = seq;
        r->handoff_nr = nr;
        memcpy(r->handoff_args, args, sizeof args);
        r->handoff_done = (uint64_t)result;
        __atomic_store_n(&r->vcpu_out, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&r->handoff_pending, 1, __ATOMIC_RELEASE);
        result = 0;
    }
    publish(r, seq, result, disposition, tally);
}

/* In the vCPU's thread (wait_for_response): serve the request `seq` of `r` here,
 * waiting for its descriptor until `timeout` from now if need be. With `handed`,
 * the one the serving thread handed over (the guest has the sequence number and
 * exited for this answer). */
static void serve_here(Server *s, Ring *r, uint64_t seq, double timeout, int handed) {
    struct wait_here here = {s, r, 0, now_ns() + (uint64_t)(timeout * 1e9), 0};
    uint64_t nr, args[6], *tally;
    if (handed) {
        nr = r->handoff_nr;
        memcpy(args, r->handoff_args, sizeof args);
        here.skip = r->handoff_done;
    } else {
        nr = *RING64(r, CALLRING_NR);
        for (int i = 0; i < 6; i++)
            args[i] = *RING64(r, CALLRING_ARG0 + 8 * i);
    }
    int64_t result;
    waiting_here = &here;
    uint32_t disposition = answer_call(s, r, nr, args, &result, &tally);
    waiting_here = NULL;
    /* Whatever sends the call to the VMM now (a signal, a descriptor gone), the
     * part the serving thread wrote stays written: the VMM is told (carried_write). */
    if (disposition == CALLRING_SLOW && result < (int64_t)here.skip)
        result = (int64_t)here.skip;
    publish(r, seq, result, disposition, tally);
}

static uint64_t pending_request(Ring *r) {
    return __atomic_load_n((uint64_t *)RING64(r, CALLRING_REQUEST_SEQ), __ATOMIC_ACQUIRE);
}

/* Whether any active ring holds a request the thread has not seen answered. */
static int anything_pending(Server *s) {
    for (int i = 0; i < CALLRING_SLOTS; i++) {
        Ring *r = &s->rings[i];
        if (__atomic_load_n(&r->active, __ATOMIC_ACQUIRE) && pending_request(r) != r->served_seq)
            return 1;
    }
    return 0;
}

/* The idle spin looks at the clock, and lets any thread waiting for this CPU run
 * (sched_yield: it returns at once when none is), every SPIN_POLLS_PER_CHECK polls
 * (~2-4 us). Without the yield the spin held the CPU for its whole spin_ns while
 * another guest's serving thread, woken with work to do, waited behind it: two guests
 * joined by a pipe on two cores put both serving threads on one core
 * (move_server_away), and each spun ~50 us after every call while the other's
 * answer waited (measured: ~80% of their CPU time spinning, 1,100-1,300 wait exits
 * per 100 MB; with the yield 490-980, and a third less CPU). */
#define SPIN_POLLS_PER_CHECK 64

/* glibc's own signals: SIGCANCEL, which pthread_create unblocks in every new thread
 * whatever its creator's mask, and SIGSETXID, for setuid() in a threaded process,
 * which every thread must answer. */
#define GLIBC_SIGCANCEL 32
#define GLIBC_SIGSETXID 33

/* Whether the VMM is serving a call of every vCPU with an active ring (none can
 * ask the thread anything until it is back: vcpu_out, wake). */
static int every_vcpu_out(Server *s) {
    int active = 0;
    for (int i = 0; i < CALLRING_SLOTS; i++) {
        Ring *r = &s->rings[i];
        if (!__atomic_load_n(&r->active, __ATOMIC_ACQUIRE))
            continue;
        if (!__atomic_load_n(&r->vcpu_out, __ATOMIC_SEQ_CST))
            return 0;
        active = 1;
    }
    return active;
}

static void *server_main(void *arg) {
    Server *s = arg;
    /* Signals for the guest never reach this thread (host_signals.py). */
    uint64_t cancel = UINT64_C(1) << (GLIBC_SIGCANCEL - 1);
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, &cancel, NULL, sizeof cancel);
    uint64_t idle_since = now_ns();
    unsigned polls = 0;
    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        int served = 0;
        for (int i = 0; i < CALLRING_SLOTS; i++) {
            Ring *r = &s->rings[i];
            if (!__atomic_load_n(&r->active, __ATOMIC_ACQUIRE))
                continue;
            uint64_t seq = pending_request(r);
            if (seq != r->served_seq) {
                if (claim(r, seq))
                    serve(s, r, seq);
                r->served_seq = seq;
                served = 1;
            }
        }
        if (served) {
            idle_since = now_ns();
            continue;
        }
        /* In a direct spell the vCPU threads serve, and while the VMM serves a call
         * of every vCPU none can ask: no spinning beside them. */
        int direct = __atomic_load_n(&s->direct, __ATOMIC_ACQUIRE);
        int all_out = every_vcpu_out(s);
        if (!direct && !all_out
            && (++polls % SPIN_POLLS_PER_CHECK || now_ns() - idle_since < s->spin_ns)) {
            if (polls % SPIN_POLLS_PER_CHECK == 0)
                sched_yield();      /* a thread waiting for this CPU runs first */
            else
                __builtin_ia32_pause();
            continue;
        }
        /* Idle: sleep until the VMM wakes us (a guest that sees the hint, or gets no
         * answer, exits to it); the recheck closes the race with a new request.
         * While every vCPU is out, the hint stays: the VMM wakes the thread as a vCPU
         * goes back to the guest (wake), and its next call finds the thread soon
         * enough not to exit; the recheck closes the race with that wake. */
        __atomic_store_n(&s->sleep_word, 1, __ATOMIC_SEQ_CST);
        int hinted = direct || !all_out;
        if (hinted)
            hint_host_state(s, CALLRING_HOST_SLEEPING);
        if (!anything_pending(s) && !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)
            && (hinted || every_vcpu_out(s))) {
            s->sleeps++;
            futex(&s->sleep_word, FUTEX_WAIT, 1, NULL);
        }
        __atomic_store_n(&s->sleep_word, 0, __ATOMIC_SEQ_CST);
        if (hinted && !__atomic_load_n(&s->direct, __ATOMIC_ACQUIRE))
            hint_host_state(s, CALLRING_HOST_AWAKE);
        idle_since = now_ns();
    }
    return NULL;
}

static void wake_server(Server *s) {
    if (__atomic_exchange_n(&s->sleep_word, 0, __ATOMIC_SEQ_CST) == 1)
        futex(&s->sleep_word, FUTEX_WAKE, 1, NULL);
}

/* -- the Python object --------------------------------------------------------------- */

static void copy_bitmap(Server *s, Ring *r) {
    memcpy(r->base + CALLRING_FAST_BITMAP, s->fast_bitmap, sizeof s->fast_bitmap);
    *RING64(r, CALLRING_VMM_CALLS_ASKED) = s->vmm_asked;
}

/* A ring starts afresh: everything asked so far counts as answered. */
static void reset_ring(Server *s, Ring *r) {
    copy_bitmap(s, r);
    r->served_seq = r->claimed_seq = pending_request(r);
    *RING64(r, CALLRING_RESPONSE_SEQ) = r->served_seq;
    *RING32(r, CALLRING_SPIN_BUDGET) = CALLRING_GUEST_SPINS;
    r->vcpu_waiting = 0;
    r->vcpu_out = 0;
    r->force_slow = 0;
    r->handoff_pending = 0;
}

static int Server_init(Server *s, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"ring", "memory", "memory_size", "spin_ns", NULL};
    unsigned long long ring, memory, memory_size, spin_ns = 50000;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKK|K", keywords, &ring, &memory,
                                     &memory_size, &spin_ns))
        return -1;
    if (s->running) {
        PyErr_SetString(PyExc_RuntimeError, "the server thread is running");
        return -1;
    }
    for (int i = 0; i < CALLRING_SLOTS; i++) {
        s->rings[i].base = (uint8_t *)(uintptr_t)ring + i * CALLRING_SLOT_SIZE;
        s->rings[i].active = 0;
    }
    s->memory = (uint8_t *)(uintptr_t)memory;
    s->memory_size = memory_size;
    s->spin_ns = spin_ns;
    reset_ring(s, &s->rings[0]);
    s->rings[0].active = 1;
    return 0;
}

/* Whether a second CPU is there for the thread: on one, its spinning would only take
 * turns with the guest's, so the VMM serves every call when the guest exits. */
static int thread_worthwhile(void) {
    cpu_set_t allowed;
    return sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) >= 2;
}

static PyObject *Server_start(Server *s, PyObject *unused) {
    if (s->running)
        Py_RETURN_NONE;
    s->pid = getpid();
    if (!thread_worthwhile()) {
        hint_host_state(s, CALLRING_HOST_SLEEPING);   /* exit at once: nobody spins */
        Py_RETURN_NONE;
    }
    s->stop = 0;
    s->sleep_word = 0;
    for (int i = 0; i < CALLRING_SLOTS; i++)
        s->rings[i].served_seq = pending_request(&s->rings[i]);
    hint_host_state(s, CALLRING_HOST_AWAKE);
    /* Signals for the guest must never reach the thread (host_signals.py): it
     * starts with every one blocked (raw: glibc's sigprocmask leaves its own alone)
     * but SIGSETXID, and blocks SIGCANCEL itself (see server_main). */
    uint64_t all = ~(UINT64_C(1) << (GLIBC_SIGSETXID - 1)), previous;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &previous, sizeof all);
    int error = pthread_create(&s->thread, NULL, server_main, s);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &previous, NULL, sizeof previous);
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    s->running = 1;
    Py_RETURN_NONE;
}

static void stop_thread(Server *s) {
    if (!s->running)
        return;
    __atomic_store_n(&s->stop, 1, __ATOMIC_SEQ_CST);
    wake_server(s);
    pthread_join(s->thread, NULL);
    s->running = 0;
}

static PyObject *Server_stop(Server *s, PyObject *unused) {
    Py_BEGIN_ALLOW_THREADS
    stop_thread(s);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Server_forget_thread(Server *s, PyObject *unused) {
    /* In the child of fork(): the thread and the other vCPUs were not copied; only
     * slot 0 (the calling vCPU, the child's first) is served, from a fresh start. */
    s->running = 0;
    s->in_flight[0] = s->in_flight[1] = 0;
    /* The VMM-call handler belongs to the parent's VM: dropped (the layer above
     * installs the child's); its lock may have been held by a thread now gone. */
    pthread_mutex_init(&s->vmm_lock, NULL);
    s->vmm_calls = NULL;
    s->vmm_asked = 0;
    Py_CLEAR(s->vmm_capsule);
    for (int i = 0; i < CALLRING_SLOTS; i++)
        s->rings[i].active = 0;
    reset_ring(s, &s->rings[0]);
    s->rings[0].active = 1;
    Py_RETURN_NONE;
}

static Ring *ring_of(Server *s, PyObject *arg) {
    long slot = PyLong_AsLong(arg);
    if (slot == -1 && PyErr_Occurred())
        return NULL;
    if (slot < 0 || slot >= CALLRING_SLOTS) {
        PyErr_Format(PyExc_ValueError, "call slot %ld outside 0..%d", slot, CALLRING_SLOTS - 1);
        return NULL;
    }
    return &s->rings[slot];
}

static PyObject *Server_add_ring(Server *s, PyObject *arg) {
    Ring *r = ring_of(s, arg);
    if (r == NULL)
        return NULL;
    reset_ring(s, r);
    __atomic_store_n(&r->active, 1, __ATOMIC_RELEASE);
    if (s->running)
        wake_server(s);
    Py_RETURN_NONE;
}

static PyObject *Server_remove_ring(Server *s, PyObject *arg) {
    Ring *r = ring_of(s, arg);
    if (r == NULL)
        return NULL;
    __atomic_store_n(&r->active, 0, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* Wait until every serve that began before this call has ended (see the header). */
static int quiesce_begin(Server *s) {
    return (int)(__atomic_fetch_add(&s->generation, 1, __ATOMIC_SEQ_CST) & 1);
}

static void quiesce_wait(Server *s, int old) {
    while (__atomic_load_n(&s->in_flight[old], __ATOMIC_SEQ_CST) != 0)
        __builtin_ia32_pause();
}

static void quiesce_serves(void *server) {
    Server *s = server;
    quiesce_wait(s, quiesce_begin(s));
}

static PyObject *Server_quiesce(Server *s, PyObject *unused) {
    int old = quiesce_begin(s);
    if (__atomic_load_n(&s->in_flight[old], __ATOMIC_SEQ_CST) == 0)
        Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS
    quiesce_wait(s, old);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* set_vmm_calls(capsule or None, ops): the handler of VMM calls (vmm_calls.h) and
 * the ops (bit n: VMM call n) the stub hands the thread first. Waits for a call
 * being served with the old handler to finish. */
static PyObject *Server_set_vmm_calls(Server *s, PyObject *args) {
    PyObject *capsule;
    unsigned long long ops = 0;
    if (!PyArg_ParseTuple(args, "O|K", &capsule, &ops))
        return NULL;
    const struct kvmdune_vmm_calls *calls = NULL;
    if (capsule != Py_None) {
        calls = PyCapsule_GetPointer(capsule, KVMDUNE_VMM_CALLS_CAPSULE);
        if (calls == NULL)
            return NULL;
        Py_INCREF(capsule);
    } else {
        capsule = NULL;
        ops = 0;
    }
    PyObject *previous = s->vmm_capsule;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&s->vmm_lock);
    s->vmm_calls = calls;
    s->vmm_capsule = capsule;
    s->vmm_asked = ops;
    for (int i = 0; i < CALLRING_SLOTS; i++)
        if (__atomic_load_n(&s->rings[i].active, __ATOMIC_ACQUIRE))
            copy_bitmap(s, &s->rings[i]);
    pthread_mutex_unlock(&s->vmm_lock);
    Py_END_ALLOW_THREADS
    Py_XDECREF(previous);
    Py_RETURN_NONE;
}

static PyObject *Server_has_vmm_calls(Server *s, PyObject *unused) {
    return PyBool_FromLong(s->vmm_calls != NULL);
}

/* Halve (the thread did not get to the request) or double (it was serving it) how
 * long the guest spins before exiting. Written while the guest is stopped. */
static void adjust_spin_budget(Ring *r, int longer) {
    uint32_t budget = *RING32(r, CALLRING_SPIN_BUDGET);
    if (budget < CALLRING_MIN_SPINS || budget > CALLRING_GUEST_SPINS)
        budget = CALLRING_GUEST_SPINS;      /* the guest wrote it: start over */
    budget = longer ? budget * 2 : budget / 2;
    if (budget < CALLRING_MIN_SPINS)
        budget = CALLRING_MIN_SPINS;
    if (budget > CALLRING_GUEST_SPINS)
        budget = CALLRING_GUEST_SPINS;
    *RING32(r, CALLRING_SPIN_BUDGET) = budget;
}

/* The thread was awake but had not answered in time: most often it shares
 * this thread's CPU (the scheduler puts a woken thread beside its waker), where the
 * guest's spin only keeps it off. Let it run anywhere but here. Only if it may still
 * run here: setting its affinity again costs a migration (measured: 5-20 us a call,
 * paid on every such wait while the thread was off-CPU), asking costs a lookup. */
static void move_server_away(Server *s) {
    cpu_set_t allowed, current;
    int here = sched_getcpu();
    if (here < 0 || pthread_getaffinity_np(s->thread, sizeof current, &current) != 0
        || !CPU_ISSET(here, &current))
        return;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < 2)
        return;
    CPU_CLR(here, &allowed);
    pthread_setaffinity_np(s->thread, sizeof allowed, &allowed);
}

/* -- adaptive waiting: direct spells --------------------------------------------------
 * The thread pays only while it answers most calls before the guest gives up: an
 * exit costs as much as the slow path's, and on a machine with more runnable threads
 * than cores (several guests, a CPU hog) the thread and the guest are seldom on a
 * core together, so the guest exits anyway and the thread's spinning and wake-ups
 * only take CPU from it and everything else. Measured per ring: when nearly every
 * request of a window exited, a direct spell begins: the thread sleeps, the stub
 * exits at once (the SLEEPING hint) and each call is served natively in its vCPU's
 * thread, with no second thread involved. The spell ends after spell_ns, and the
 * thread is tried again; spells that keep following each other grow longer, so that
 * trying costs little beside them, and a window that pays shortens them again.
 * Only nearly every request: the budget's halving makes a spin that fails cheap,
 * so calls that exit in bursts (the thread descheduled for a while) still cost
 * less with the thread than the same calls in a spell, where every one exits
 * (measured: spells begun at half a window made a loaded getppid loop slower). */
#define WINDOW_REQUESTS 256
#define SPELL_EXITS (WINDOW_REQUESTS * 7 / 8)
#define SPELL_MIN_NS 10000000ULL        /* 10 ms */
#define SPELL_MAX_NS 320000000ULL

static void begin_direct_spell(Server *s, uint64_t now) {
    uint64_t length = s->spell_ns < SPELL_MIN_NS ? SPELL_MIN_NS : s->spell_ns;
    s->direct_until = now + length;
    s->spell_ns = length * 2 < SPELL_MAX_NS ? length * 2 : SPELL_MAX_NS;
    count(&s->direct_spells);
    __atomic_store_n(&s->direct, 1, __ATOMIC_RELEASE);
    hint_host_state(s, CALLRING_HOST_SLEEPING);    /* the stubs stop spinning */
}

/* The spell is over: the caller wakes the thread, which says it is awake (the hint);
 * every ring's window starts afresh. */
static void end_direct_spell(Server *s) {
    __atomic_fetch_add(&s->spell_generation, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&s->direct, 0, __ATOMIC_RELEASE);
}

/* Count one exit of the guest of `r` for its request `seq`, outside a spell, and
 * begin a spell when the window shows the thread not paying. */
static void judge_window(Server *s, Ring *r, uint64_t seq, uint64_t now) {
    unsigned generation = __atomic_load_n(&s->spell_generation, __ATOMIC_ACQUIRE);
    if (r->window_generation != generation || seq <= r->window_start) {
        r->window_generation = generation;
        r->window_start = seq - 1;
        r->window_exits = 0;
    }
    r->window_exits++;
    if (r->window_exits > SPELL_EXITS) {
        begin_direct_spell(s, now);
    } else if (seq - r->window_start >= WINDOW_REQUESTS) {
        s->spell_ns = SPELL_MIN_NS;             /* the thread paid: try it sooner */
    } else {
        return;
    }
    r->window_start = seq;
    r->window_exits = 0;
}

/* wait_response(slot, timeout), here with the GIL released (also called from a
 * native run loop: call_wait.h): the guest of `slot` exited because no answer came
 * (or the thread slept, or a direct spell is on): serve the request here unless the
 * thread has taken it (then wait up to `timeout` seconds for its answer), and,
 * outside a direct spell, wake the thread for the calls to come. 1 when answered;
 * on 0 the guest resumes and asks again, so stop requests and signals reach the run
 * loop meanwhile (a native one returns on them: they interrupt KVM_RUN). Serving
 * here keeps a machine whose cores are all busy from paying a thread wake-up per
 * call. */
static int wait_for_response(Server *s, Ring *r, double timeout) {
    uint64_t want = pending_request(r);
    int handed = __atomic_load_n(&r->handoff_pending, __ATOMIC_ACQUIRE)
                 && r->handoff_seq == want
                 && __atomic_exchange_n(&r->handoff_pending, 0, __ATOMIC_ACQ_REL);
    if (!handed)
        __atomic_store_n(&r->vcpu_out, 0, __ATOMIC_SEQ_CST);    /* it runs guest code */
    uint64_t now = now_ns();
    if (__atomic_load_n(&s->direct, __ATOMIC_ACQUIRE) && now >= s->direct_until)
        end_direct_spell(s);
    int direct = __atomic_load_n(&s->direct, __ATOMIC_ACQUIRE);
    int was_sleeping = __atomic_load_n(&s->sleep_word, __ATOMIC_ACQUIRE);
    count(&s->waits);
    if (handed) {
        /* An inherent wait (a pipe's peer), not the thread's failing: no judging.
         * The thread sleeps meanwhile (vcpu_out, set with the handoff) and is woken
         * for this vCPU's next call. */
        serve_here(s, r, want, timeout, 1);
        __atomic_store_n(&r->vcpu_out, 0, __ATOMIC_SEQ_CST);
        if (!direct && s->running)
            wake_server(s);
        return 1;
    }
    if (claim(r, want)) {
        serve_here(s, r, want, timeout, 0);
        count(&s->served_here);
        if (!direct && !was_sleeping && s->running) {
            adjust_spin_budget(r, 0);   /* awake but not getting to it: spin less */
            move_server_away(s);
        }
    } else {
        adjust_spin_budget(r, 1);       /* the thread had it: the guest gave up too soon */
        if (*RING64(r, CALLRING_RESPONSE_SEQ) != want) {
            __atomic_store_n(&r->vcpu_waiting, 1, __ATOMIC_SEQ_CST);
            uint64_t deadline = now_ns() + (uint64_t)(timeout * 1e9);
            for (;;) {
                uint32_t seen = __atomic_load_n(&r->served_word, __ATOMIC_ACQUIRE);
                if (*RING64(r, CALLRING_RESPONSE_SEQ) == want || now_ns() >= deadline)
                    break;
                struct timespec slice = {0, 1000000};
                futex(&r->served_word, FUTEX_WAIT, seen, &slice);
            }
            __atomic_store_n(&r->vcpu_waiting, 0, __ATOMIC_SEQ_CST);
        }
    }
    if (!direct && s->running) {
        judge_window(s, r, want, now);
        /* The thread says it is awake (the hint) only once it runs: until then the
         * guest exits at once rather than spin for a thread that is not scheduled. */
        if (!__atomic_load_n(&s->direct, __ATOMIC_ACQUIRE))
            wake_server(s);
    }
    return *RING64(r, CALLRING_RESPONSE_SEQ) == want;
}

/* The (slot, seconds) arguments: the slot's ring (NULL with an exception set). */
static Ring *ring_and_timeout(Server *s, PyObject *args, double *timeout) {
    PyObject *slot;
    if (!PyArg_ParseTuple(args, "Od", &slot, timeout))
        return NULL;
    return ring_of(s, slot);
}

static PyObject *Server_wait_response(Server *s, PyObject *args) {
    double timeout;
    Ring *r = ring_and_timeout(s, args, &timeout);
    if (r == NULL)
        return NULL;
    int answered;
    Py_BEGIN_ALLOW_THREADS
    answered = wait_for_response(s, r, timeout);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(answered);
}

/* call_wait.h's wait: wait_response from native code (the GIL released). */
static int wait_natively(void *server, int slot, double timeout) {
    Server *s = server;
    if (slot < 0 || slot >= CALLRING_SLOTS)
        return 0;
    return wait_for_response(s, &s->rings[slot], timeout);
}

static void release_call_wait(PyObject *capsule) {
    PyMem_Free(PyCapsule_GetPointer(capsule, KVMDUNE_CALL_WAIT_CAPSULE));
    Py_XDECREF((PyObject *)PyCapsule_GetContext(capsule));
}

/* call_wait_capsule(slot, timeout): wait_response(slot, timeout) for native code
 * (call_wait.h); the capsule keeps this server. */
static PyObject *Server_call_wait_capsule(Server *s, PyObject *args) {
    double timeout;
    Ring *r = ring_and_timeout(s, args, &timeout);
    if (r == NULL)
        return NULL;
    struct kvmdune_call_wait *wait = PyMem_Malloc(sizeof *wait);
    if (wait == NULL)
        return PyErr_NoMemory();
    *wait = (struct kvmdune_call_wait){wait_natively, s, (int)(r - s->rings), timeout};
    PyObject *capsule = PyCapsule_New(wait, KVMDUNE_CALL_WAIT_CAPSULE, release_call_wait);
    if (capsule == NULL) {
        PyMem_Free(wait);
        return NULL;
    }
    Py_INCREF(s);
    if (PyCapsule_SetContext(capsule, s) < 0) {
        Py_DECREF(capsule);
        Py_DECREF(s);
        return NULL;
    }
    return capsule;
}

/* vcpu_out(slot): the VMM serves a call of the vCPU of `slot` (its ring asks
 * nothing until wake(slot)); while it serves one of every vCPU, the thread sleeps
 * instead of spinning for calls that cannot come (a perf profile of a fork+exec
 * loop, whose calls are mostly the VMM's, had the spin at ~12% of the CPU; with
 * this, the loop's CPU time did not move measurably on a machine at load 10-15). */
static PyObject *Server_vcpu_out(Server *s, PyObject *arg) {
    Ring *r = ring_of(s, arg);
    if (r == NULL)
        return NULL;
    __atomic_store_n(&r->vcpu_out, 1, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

/* wake(slot=-1): the VMM has served a call itself and the guest (of `slot`, which
 * is back from vcpu_out) goes on: have the thread spinning again by the guest's
 * next call (it slept if the VMM took longer than its spin, or had every vCPU). */
static PyObject *Server_wake(Server *s, PyObject *args) {
    int slot = -1;
    if (!PyArg_ParseTuple(args, "|i", &slot))
        return NULL;
    if (slot >= 0 && slot < CALLRING_SLOTS)
        __atomic_store_n(&s->rings[slot].vcpu_out, 0, __ATOMIC_SEQ_CST);
    if (s->running && __atomic_load_n(&s->sleep_word, __ATOMIC_SEQ_CST)
        && !__atomic_load_n(&s->direct, __ATOMIC_ACQUIRE))
        wake_server(s);
    Py_RETURN_NONE;
}

static PyObject *Server_set_action(Server *s, PyObject *args) {
    unsigned int nr, action, error = 0;
    if (!PyArg_ParseTuple(args, "II|I", &nr, &action, &error))
        return NULL;
    if (nr >= NR_CALLS || action > ACTION_BENEATH || error > 4095) {
        PyErr_SetString(PyExc_ValueError, "system call number, action or errno out of range");
        return NULL;
    }
    if ((action == ACTION_FAST && CALL_TABLE[nr] == NULL)
        || (action == ACTION_BENEATH && !takes_beneath(nr))) {
        PyErr_Format(PyExc_ValueError, "system call %u has no fast implementation", nr);
        return NULL;
    }
    s->action[nr] = (uint8_t)action;
    s->deny_errno[nr] = (uint16_t)error;
    if (nr < CALLRING_MAX_NR) {
        uint8_t bit = (uint8_t)(1u << (nr % 8));
        if (action == ACTION_SLOW)
            s->fast_bitmap[nr / 8] &= (uint8_t)~bit;
        else
            s->fast_bitmap[nr / 8] |= bit;
        for (int i = 0; i < CALLRING_SLOTS; i++)
            if (s->rings[i].active)
                copy_bitmap(s, &s->rings[i]);
    }
    Py_RETURN_NONE;
}

static void forget_roots(Server *s) {
    for (int i = 0; i < s->nroots; i++)
        PyMem_Free(s->root_path[i]);
    s->nroots = 0;
    if (s->fd_directory >= 0 && s->fd_directory_pid == getpid())
        close(s->fd_directory);
    s->fd_directory = -1;
    s->roots_generation = 0;
}

/* set_roots([(canonical path, O_PATH descriptor), ...]): where BENEATH calls may go.
 * The descriptors stay the caller's (open while the server runs). */
static PyObject *Server_set_roots(Server *s, PyObject *arg) {
    PyObject *items = PySequence_Fast(arg, "roots must be a sequence of (path, fd)");
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    if (n > MAX_ROOTS) {
        Py_DECREF(items);
        return PyErr_Format(PyExc_ValueError, "at most %d roots", MAX_ROOTS);
    }
    forget_roots(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *path;
        Py_ssize_t length;
        int fd;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, i), "s#i", &path, &length, &fd)
            || path[0] != '/' || length >= PATH_MAX_BYTES) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a root must be an absolute path");
            forget_roots(s);
            Py_DECREF(items);
            return NULL;
        }
        s->root_path[i] = PyMem_Malloc((size_t)length + 1);
        memcpy(s->root_path[i], path, (size_t)length + 1);
        s->root_length[i] = (size_t)length;
        s->root_fd[i] = fd;
        s->nroots = (int)i + 1;
    }
    Py_DECREF(items);
    if (s->nroots > 0) {
        s->fd_directory = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
        s->fd_directory_pid = getpid();
        s->roots_generation = namedstat_new_generation();
    }
    Py_RETURN_NONE;
}

/* carried_write(slot, nr, fd, buffer, count): the bytes a write of the ring's
 * last request already moved, when it was handed to the VMM with the rest to
 * write (call_rw_nowait) and is the call (number and arguments) the VMM now
 * serves; 0 otherwise. Taken once: the ring's result is cleared. The ring is the
 * guest's to write: the VMM bounds what it reads (a guest that lies about the count
 * only changes which of its own bytes go out, as a shorter write of its own would). */
static PyObject *Server_carried_write(Server *s, PyObject *args) {
    PyObject *slot;
    unsigned long long nr, fd, buffer, length;
    if (!PyArg_ParseTuple(args, "OKKKK", &slot, &nr, &fd, &buffer, &length))
        return NULL;
    Ring *r = ring_of(s, slot);
    if (r == NULL)
        return NULL;
    int64_t moved = (int64_t)*RING64(r, CALLRING_RESULT);
    if (*RING32(r, CALLRING_DISPOSITION) != CALLRING_SLOW
        || *RING64(r, CALLRING_RESPONSE_SEQ) != *RING64(r, CALLRING_REQUEST_SEQ)
        || *RING64(r, CALLRING_NR) != nr || *RING64(r, CALLRING_ARG0) != fd
        || *RING64(r, CALLRING_ARG0 + 8) != buffer || *RING64(r, CALLRING_ARG0 + 16) != length
        || moved <= 0)
        return PyLong_FromLong(0);
    *RING64(r, CALLRING_RESULT) = 0;
    return PyLong_FromLongLong(moved);
}

/* set_table(store, lock_address): the table the calls on descriptors use. */
static PyObject *Server_set_table(Server *s, PyObject *args) {
    PyObject *store;
    unsigned long long lock = 0;
    if (!PyArg_ParseTuple(args, "O!|K", &FdStoreType, &store, &lock))
        return NULL;
    if (s->running) {
        PyErr_SetString(PyExc_RuntimeError, "the server thread is running");
        return NULL;
    }
    Py_INCREF(store);
    Py_XSETREF(s->fds, (FdStore *)store);
    s->process_lock = (uint32_t *)(uintptr_t)lock;
    Py_RETURN_NONE;
}

/* set_dispositions(store): the guest's signal dispositions rt_sigaction changes
 * (SigActions), under the lock set_table named. */
static PyObject *Server_set_dispositions(Server *s, PyObject *arg) {
    if (!PyObject_TypeCheck(arg, &SigActionsType))
        return PyErr_Format(PyExc_TypeError, "a SigActions is needed");
    if (s->running) {
        PyErr_SetString(PyExc_RuntimeError, "the server thread is running");
        return NULL;
    }
    Py_INCREF(arg);
    Py_XSETREF(s->sigactions, (SigActions *)arg);
    Py_RETURN_NONE;
}

static PyObject *Server_set_cr3(Server *s, PyObject *arg) {
    unsigned long long cr3 = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    s->cr3 = cr3;
    Py_RETURN_NONE;
}

/* set_force_slow(slot, value): while true every call of that slot's vCPU takes the
 * VMM's path (a signal waits for its thread); slot -1: every slot's. */
static PyObject *Server_set_force_slow(Server *s, PyObject *args) {
    int slot, value;
    if (!PyArg_ParseTuple(args, "ip", &slot, &value))
        return NULL;
    if (slot < -1 || slot >= CALLRING_SLOTS) {
        PyErr_Format(PyExc_ValueError, "call slot %d outside 0..%d", slot, CALLRING_SLOTS - 1);
        return NULL;
    }
    for (int i = 0; i < CALLRING_SLOTS; i++)
        if (slot == -1 || i == slot)
            __atomic_store_n(&s->rings[i].force_slow, value, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *Server_stats(Server *s, PyObject *unused) {
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsK}", "fast", (unsigned long long)s->served_fast,
                         "fd_table", (unsigned long long)s->served_fd_table,
                         "remembered_stats", (unsigned long long)s->served_remembered,
                         "vmm", (unsigned long long)s->served_vmm,
                         "denied", (unsigned long long)s->served_denied,
                         "slow", (unsigned long long)s->sent_slow,
                         "sleeps", (unsigned long long)s->sleeps,
                         "waits", (unsigned long long)s->waits,
                         "served_by_vmm_thread", (unsigned long long)s->served_here,
                         "handoffs", (unsigned long long)s->handoffs,
                         "direct_spells", (unsigned long long)s->direct_spells);
}

static void Server_dealloc(Server *s) {
    stop_thread(s);
    forget_roots(s);
    Py_CLEAR(s->vmm_capsule);
    Py_CLEAR(s->fds);
    Py_CLEAR(s->sigactions);
    pthread_mutex_destroy(&s->vmm_lock);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *Server_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Server *s = (Server *)type->tp_alloc(type, 0);
    if (s != NULL) {
        pthread_mutex_init(&s->vmm_lock, NULL);
        s->fd_directory = -1;
    }
    return (PyObject *)s;
}

static PyMethodDef Server_methods[] = {
    {"start", (PyCFunction)Server_start, METH_NOARGS, "Start the serving thread."},
    {"stop", (PyCFunction)Server_stop, METH_NOARGS, "Stop and join the serving thread."},
    {"forget_thread", (PyCFunction)Server_forget_thread, METH_NOARGS,
     "In a fork child: the thread is gone (start() makes a new one)."},
    {"wait_response", (PyCFunction)Server_wait_response, METH_VARARGS,
     "wait_response(slot, seconds): serve or wait for slot's pending request."},
    {"call_wait_capsule", (PyCFunction)Server_call_wait_capsule, METH_VARARGS,
     "call_wait_capsule(slot, seconds): wait_response for native code (call_wait.h)."},
    {"add_ring", (PyCFunction)Server_add_ring, METH_O,
     "add_ring(slot): serve that call slot's ring (a vCPU uses it), from a fresh start."},
    {"remove_ring", (PyCFunction)Server_remove_ring, METH_O,
     "remove_ring(slot): stop serving that slot's ring."},
    {"quiesce", (PyCFunction)Server_quiesce, METH_NOARGS,
     "Wait until every serve that began before has ended."},
    {"wake", (PyCFunction)Server_wake, METH_VARARGS,
     "wake(slot=-1): the vCPU of slot is back from vcpu_out; wake the thread if it "
     "sleeps (the guest is about to run on)."},
    {"vcpu_out", (PyCFunction)Server_vcpu_out, METH_O,
     "vcpu_out(slot): the VMM serves a call of that vCPU until wake(slot)."},
    {"set_action", (PyCFunction)Server_set_action, METH_VARARGS,
     "set_action(nr, action, errno=0): SLOW, FAST, DENY or BENEATH for one call."},
    {"set_roots", (PyCFunction)Server_set_roots, METH_O,
     "set_roots([(path, fd), ...]): the directories BENEATH calls may resolve in."},
    {"carried_write", (PyCFunction)Server_carried_write, METH_VARARGS,
     "carried_write(slot, nr, fd, buffer, count): bytes a write handed to the VMM "
     "has moved already (0: none)."},
    {"set_table", (PyCFunction)Server_set_table, METH_VARARGS,
     "set_table(store, lock_address): the guest's descriptor table (FdStore) and the "
     "process's lock its writers hold (0: the table is changed by the VMM only)."},
    {"set_dispositions", (PyCFunction)Server_set_dispositions, METH_O,
     "set_dispositions(store): the guest's signal dispositions (SigActions) that "
     "rt_sigaction changes, under set_table's lock."},
    {"set_cr3", (PyCFunction)Server_set_cr3, METH_O, "The address space to translate in."},
    {"set_force_slow", (PyCFunction)Server_set_force_slow, METH_VARARGS,
     "set_force_slow(slot, value): while true the slot's calls take the VMM's path "
     "(a signal waits); slot -1: every slot."},
    {"set_vmm_calls", (PyCFunction)Server_set_vmm_calls, METH_VARARGS,
     "set_vmm_calls(capsule or None, ops): the native handler of VMM calls (vmm_calls.h)."},
    {"has_vmm_calls", (PyCFunction)Server_has_vmm_calls, METH_NOARGS,
     "Whether a handler of VMM calls is installed."},
    {"stats", (PyCFunction)Server_stats, METH_NOARGS, "Counters of served calls."},
    {NULL},
};

static PyTypeObject ServerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvmdune.linux._fastpath.Server",
    .tp_basicsize = sizeof(Server),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The host thread serving one guest's call rings.",
    .tp_new = Server_new,
    .tp_init = (initproc)Server_init,
    .tp_dealloc = (destructor)Server_dealloc,
    .tp_methods = Server_methods,
};

static int fastpath_exec(PyObject *module) {
    PyObject *numbers = PyTuple_New(N_FAST_CALLS);
    if (numbers == NULL)
        return -1;
    for (size_t i = 0; i < N_FAST_CALLS; i++) {
        CALL_TABLE[FAST_CALLS[i].nr] = FAST_CALLS[i].call;
        PyTuple_SET_ITEM(numbers, i, PyLong_FromLong(FAST_CALLS[i].nr));
    }
    if (PyModule_AddObject(module, "FAST_CALLS", numbers) < 0) {
        Py_DECREF(numbers);
        return -1;
    }
    PyObject *beneath = PyList_New(0);
    for (unsigned nr = 0; beneath != NULL && nr < NR_CALLS; nr++) {
        PyObject *number = takes_beneath(nr) ? PyLong_FromUnsignedLong(nr) : NULL;
        if (number != NULL && PyList_Append(beneath, number) < 0)
            Py_CLEAR(beneath);
        Py_XDECREF(number);
    }
    if (beneath == NULL || PyModule_AddObject(module, "BENEATH_CALLS", beneath) < 0) {
        Py_XDECREF(beneath);
        return -1;
    }
    if (PyType_Ready(&ServerType) < 0 || fdstore_register(module) < 0
        || sigstore_register(module) < 0)
        return -1;
    Py_INCREF(&ServerType);
    if (PyModule_AddObject(module, "Server", (PyObject *)&ServerType) < 0
        || PyModule_AddIntConstant(module, "SLOW", ACTION_SLOW) < 0
        || PyModule_AddIntConstant(module, "MAX_FAST_BUFFER", (long)MAX_FAST_BUFFER) < 0
        || PyModule_AddIntConstant(module, "MAX_PIECES", MAX_PIECES) < 0
        || PyModule_AddIntConstant(module, "IO_MAY_BLOCK", IO_MAY_BLOCK) < 0
        || PyModule_AddIntConstant(module, "IO_NEVER_BLOCKS", IO_NEVER_BLOCKS) < 0
        || PyModule_AddIntConstant(module, "IO_PIPE", IO_PIPE) < 0
        || PyModule_AddIntConstant(module, "IO_SOCKET", IO_SOCKET) < 0
        || PyModule_AddIntConstant(module, "FAST", ACTION_FAST) < 0
        || PyModule_AddIntConstant(module, "DENY", ACTION_DENY) < 0
        || PyModule_AddIntConstant(module, "BENEATH", ACTION_BENEATH) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot fastpath_slots[] = {
    {Py_mod_exec, fastpath_exec},
    {0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "_fastpath",
    "The native fast path: a host thread serving the guest's call ring.", 0, NULL,
    fastpath_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) { return PyModuleDef_Init(&fastpath_module); }
