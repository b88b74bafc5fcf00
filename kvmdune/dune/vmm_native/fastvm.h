/* What the natively served hypercalls share (fastvm.c: dune_vm_mprotect of a few
 * pages of pgroot; fastbits.c: reading and clearing pgroot's A/D bits): the native
 * object with the VMM's records, the hardware entry bits, and the invalidations
 * that make every vCPU see a restriction before a call returns. */
#ifndef KVMDUNE_FASTVM_H
#define KVMDUNE_FASTVM_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "../../linux/native/vmm_calls.h"

/* kvmdune.memory.pagetable.PTE's hardware bits. */
#define H_P 0x1ULL
#define H_RW 0x2ULL
#define H_US 0x4ULL
#define H_A 0x20ULL
#define H_D 0x40ULL
#define H_PS 0x80ULL
#define H_PROTNONE 0x400ULL
#define H_NX (1ULL << 63)
#define H_ADDR 0x000FFFFFFFFFF000ULL
#define H_PERM_BITS (H_P | H_RW | H_US | H_NX | H_PROTNONE)

/* libdune's entry bits (kvmdune/dune/entries.py; a test checks they agree). */
#define M_P 0x1ULL
#define M_W 0x2ULL
#define M_U 0x4ULL
#define M_PCD 0x10ULL
#define M_A 0x20ULL
#define M_D 0x40ULL
#define M_PS 0x80ULL
#define M_COW 0x200ULL
#define M_USR3 (1ULL << 60)
#define M_USR2 (1ULL << 61)
#define M_USR1 (1ULL << 62)
#define M_NX (1ULL << 63)
#define M_ADDR 0x000FFFFFFFFFF000ULL
#define M_RIGHTS (M_P | M_W | M_NX)
/* Rights (entries.py) and the ceiling bytes the VMM keeps (mirror.py). */
#define RIGHT_R 1U
#define RIGHT_W 2U
#define RIGHT_X 4U
#define CEILING_KNOWN 0x80U

#define PAGE_SIZE 4096ULL
#define TABLE_SPAN_SHIFT 21      /* one page table maps 2 MiB */
#define ENTRIES 512
#define DIRTY_LOG_ALIGN 64       /* KVM_CLEAR_DIRTY_LOG's page granularity */
/* The most pages one call changes here (a protect of more goes to the VMM). */
#define MAX_PAGES 16

/* One of pgroot's page tables: where its entries are. */
struct table {
    uint64_t key;                /* (first address >> 21) + 1; 0: a free slot */
    uint64_t *live;              /* the program's copy (a guest frame) */
    uint64_t *shadow;            /* the VMM's */
    uint8_t *ceiling;            /* per entry: CEILING_KNOWN | rights, or 0 */
};

/* The A/D kinds a reader reads (kvmdune.memory.page_bits.KINDS). */
enum bits_kind { KIND_A, KIND_D, KINDS };

/* The spaces whose A/D bits are pgroot's (vm.py's _hardware): the program view,
 * and pgroot's user view. */
enum bits_space { SPACE_PROGRAM, SPACE_USER, BITS_SPACES };

/* The Dune API's reader of one space's bits (page_bits.py): its own software bit
 * per kind (0: not allocated yet, the VMM's to do) and every other reader's. */
struct bits_reader {
    uint64_t mine[KINDS];
    uint64_t others[KINDS];
};

/* A root's page tables by the 2 MiB they map (open addressing, power-of-two
 * capacity). */
struct registry {
    struct table *tables;
    size_t capacity, count;
};

/* The most clones the native code serves (more: the VMM serves the rest). */
#define MAX_CLONES 32

/* A root made by dune_vm_clone: its tables, its user view (the only space whose
 * entries are the clone's) and the Dune API's reader of that view's bits. */
struct clone_records {
    uint64_t handle;             /* 0: a free slot */
    uint64_t user_cr3;
    struct registry registry;
    struct bits_reader reader;
};

typedef struct {
    PyObject_HEAD
    struct kvmdune_vmm_calls calls;   /* what the capsule hands the fast path */
    pthread_mutex_t lock;
    uint8_t *memory;
    uint64_t memory_size;
    uint64_t pgroot;
    uint64_t program_cr3, user_cr3;
    uint64_t window_start, window_end, program_end;
    int vm_fd;                   /* -1: write-protects are the VMM's (hand back) */
    uint32_t slot;
    int host_prot;               /* the guest memory mapping's; -1: invalidations are the VMM's */
    uint32_t *process_lock;      /* proclock.h */
    struct registry registry;    /* pgroot's tables */
    struct bits_reader readers[BITS_SPACES];
    struct clone_records clones[MAX_CLONES];
    uint64_t served, handed_back;
    uint64_t syncs, flushes;     /* of `served`: VM_SYNC and FLUSH_TLB (fastsync.c) */
} NativeVm;

/* The word of guest memory at `paddr`, NULL outside it or unaligned. */
static inline volatile uint64_t *word_at(NativeVm *vm, uint64_t paddr) {
    if (paddr & 7 || paddr >= vm->memory_size || vm->memory_size - paddr < 8)
        return NULL;
    return (volatile uint64_t *)(vm->memory + paddr);
}

/* KVM_CLEAR_DIRTY_LOG for these frames of the main slot (`count` guest-physical
 * page addresses, any order): their next write reaches KVM, which walks the guest
 * tables again (GuestMemory.write_protect). 0, or -1 (nothing to rely on). */
int write_protect_frames(NativeVm *vm, const uint64_t *frames, size_t count);

/* The mprotect pair on the frames' host pages that never takes access away
 * (GuestMemory.invalidate, HostMapping.reprotect): KVM's MMU notifier drops its
 * translations of them and flushes every vCPU's TLB. Sorts `frames`. */
int invalidate_frames(NativeVm *vm, uint64_t *frames, size_t count);

/* -- pgroot's records and its entries' changes (fastvm.c; fastsync.c too) ------- */

/* The registered page table of `registry` mapping `vaddr`, or NULL. Under vm->lock. */
struct table *find_table(const struct registry *registry, uint64_t vaddr);

/* What one root's calls act on: its tables, and the spaces whose entries are the
 * root's (pgroot: the program view, then its user view; a clone: its user view). */
struct root_view {
    int is_pgroot;
    struct registry *registry;
    int nspaces;
    uint64_t cr3[BITS_SPACES];
    const struct bits_reader *readers[BITS_SPACES];
};

/* The view of the root the program calls `handle`: 0, or -1 (not a root served here). */
int root_view(NativeVm *vm, uint64_t handle, struct root_view *view);

/* The rights (RIGHT_*) a mirror entry grants. */
unsigned rights(uint64_t entry);

/* The 4 KiB leaf entry of `vaddr` in the tables at `cr3`; NULL where a level is
 * missing or a large page maps it (the VMM splits those). */
volatile uint64_t *leaf_of(NativeVm *vm, uint64_t cr3, uint64_t vaddr);

/* What a present hardware entry loses (pagetable._losses). */
enum loss { LOSS_NONE, LOSS_WRITE, LOSS_MORE };

/* One page's change, worked out before anything is written. */
struct page_change {
    unsigned index;              /* in the leaf table */
    uint64_t new;                /* the mirror entry */
    int nleaves;                 /* hardware entries to write (program view, user view) */
    volatile uint64_t *leaves[2];
    uint64_t before[2], after[2];
    enum loss loss;              /* the most any of them loses */
};

/* The change of the root's page at `index` of `table` (address `va`) to the entry
 * `new` (its frame and PTE_PS kept), checked as vm.py's vm_mprotect and
 * _check_rights would, with what the hardware entries lose: 1 to make, 0 a hole
 * (vm.py skips it), -1 for the VMM (PERM_NONE, an alias, an unchecked ceiling,
 * rights beyond it, PTE_U's visibility changing, an invalidation not native). */
int plan_entry(NativeVm *vm, const struct root_view *view, struct table *table, unsigned index,
               uint64_t va, uint64_t new, struct page_change *change);

/* The planned hardware entries written (`after`) or put back. */
void write_leaves(struct page_change *changes, size_t count, int after);

/* -- clearing the Dune API's A/D bits entry by entry (fastbits.c; fastsync.c too) -- */

/* A growable list of guest frames. */
struct frames {
    uint64_t *items;
    size_t count, capacity;
};

int frames_add(struct frames *f, uint64_t frame);

/* What a clear did to one entry, to put it back. */
struct undo {
    volatile uint64_t *slot;
    uint64_t added, removed;
};

struct undo_log {
    struct undo *items;
    size_t count, capacity;
};

struct bits_walk {
    NativeVm *vm;
    uint64_t start, end;
    uint64_t test, clear;        /* this space's: the entries reported, the bits cleared */
    uint64_t cond[KINDS], set[KINDS];
    int clearing;
    uint8_t *found;              /* one bit per page of [start, end), or NULL */
    struct frames full, dirty;   /* frames that lost A (or more); only D (or W) */
    struct undo_log log;
};

/* The masks of one space's walk (page_bits' BitReader.mask and _clearing), or -1
 * where the Dune API's reader has no bit of a kind asked for yet. */
int bits_setup_space(struct bits_walk *w, const struct bits_reader *reader, uint64_t bits);

/* One 4 KiB hardware entry: reported (in w->found), and cleared as page_bits'
 * BitReader.read would (w->clearing); 0, or -1 (a shared region's frame, no memory). */
int bits_visit(struct bits_walk *w, volatile uint64_t *slot, uint64_t vaddr);

/* The invalidations of w->full (the mprotect pair) and w->dirty (the dirty log's
 * write-protect, the mprotect pair without it), then the fast path's quiesce when
 * there was any: no serve still goes through what was there before. 0 or -1. */
int bits_invalidate(struct bits_walk *w, void (*quiesce)(void *), void *server);

/* Every clear of the walk put back; the walk's lists freed. */
void bits_undo(struct bits_walk *w);
void bits_walk_release(struct bits_walk *w);

/* The most pages a VM_BITS range covers when the fast path's thread serves it from
 * the ring (64 MiB: about the guest's spin). A larger one costs far more than an
 * exit, and served by the thread the guest would exit to wait for it anyway, then
 * wait for a wake-up: the vCPU's own thread serves it after the exit (serve_here). */
#define RING_BITS_PAGES 16384ULL

/* VM_BITS on pgroot over at most max_pages (fastbits.c): 0 with *result as vm.py's
 * vm_bits would answer, or -1 untouched, for the VMM. Called with the process's lock
 * and vm->lock held. */
int serve_bits(NativeVm *vm, const uint64_t *args, uint64_t max_pages, int64_t *result,
               void (*quiesce)(void *), void *server);

/* VM_SYNC or FLUSH_TLB (fastsync.c), in a vCPU's thread: 0 with *result as vm.py's
 * vm_sync / flush_tlb would answer, or -1 untouched, for the VMM. FLUSH_TLB only when
 * pgroot is the only root and no directory entry was written (the caller checks).
 * Called with the process's lock and vm->lock held. */
int serve_sync_op(NativeVm *vm, uint64_t op, const uint64_t *args, int64_t *result,
                  void (*quiesce)(void *), void *server);

#endif
