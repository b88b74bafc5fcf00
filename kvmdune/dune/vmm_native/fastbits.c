/* VM_BITS (kvmdune_vm_read_bits / kvmdune_vm_clear_bits) on pgroot or a clone (its
 * user view's bits only, as vm.py's) served without
 * Python, by the fast path's thread from the calling vCPU's ring, with the answer
 * vm.py's vm_bits gives, and the invalidations that make every vCPU see a cleared
 * bit before the call returns. Also the invalidations fastvm.c shares.
 *
 * The Dune API is one reader of A/D bits among several (memory/page_bits.py): each
 * sees the bits since its own last clear. The VMM tells this code, per space
 * (the program view and pgroot's user view), which software bit of each kind is
 * the Dune API's and which are the other readers' (NativeVm.set_bits_reader, after
 * every change of the readers, under the process's lock). A page is reported when
 * its entry has the hardware bit or the Dune API's own; clearing first hands a set
 * hardware bit to every other reader, then clears it and the Dune API's own, in one
 * compare-and-swap per entry (a vCPU's MMU may set A or D meanwhile).
 *
 * Handed back untouched (the VMM answers, errors included): an unknown root, bad bits
 * or flags, a range the VMM refuses, a Dune reader bit not allocated yet in either
 * space, a 2 MiB page in the range, a bitmap that is not writable user memory of
 * the program view in 4 KiB pages of guest memory or larger than MAX_BITMAP_PAGES,
 * a cleared entry whose frame is not in the main memory slot (a shared region's: its
 * invalidation is the VMM's; the entries cleared so far are put back first), an
 * invalidation that fails (likewise put back). */
#include "fastvm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "../include/kvmdune/hypercall.h"

/* libdune's PTE_A and PTE_D (mmu.h) are the hardware's. */
#define BITS_AD (H_A | H_D)
/* A bitmap of at most this many pages (a range of 8 GiB) is made here. */
#define MAX_BITMAP_PAGES 64
/* Ranges closer than this get one mprotect pair (guest_memory.INVALIDATION_GAP). */
#define INVALIDATION_GAP (64ULL << 10)
#define USER_HALF_END (1ULL << 47)

static const uint64_t KIND_BIT[KINDS] = {H_A, H_D};

/* -- growable arrays ------------------------------------------------------------------ */

int frames_add(struct frames *f, uint64_t frame) {
    if (f->count == f->capacity) {
        size_t capacity = f->capacity ? 2 * f->capacity : 256;
        uint64_t *items = realloc(f->items, capacity * sizeof *items);
        if (items == NULL)
            return -1;
        f->items = items;
        f->capacity = capacity;
    }
    f->items[f->count++] = frame;
    return 0;
}

static int undo_add(struct undo_log *log, volatile uint64_t *slot, uint64_t added,
                    uint64_t removed) {
    if (log->count == log->capacity) {
        size_t capacity = log->capacity ? 2 * log->capacity : 256;
        struct undo *items = realloc(log->items, capacity * sizeof *items);
        if (items == NULL)
            return -1;
        log->items = items;
        log->capacity = capacity;
    }
    log->items[log->count++] = (struct undo){slot, added, removed};
    return 0;
}

/* Back as before the clear (bits the MMU set meanwhile stay). */
static void undo_all(struct undo_log *log) {
    for (size_t i = 0; i < log->count; i++) {
        struct undo *u = &log->items[i];
        __atomic_fetch_or((uint64_t *)u->slot, u->removed, __ATOMIC_SEQ_CST);
        __atomic_fetch_and((uint64_t *)u->slot, ~u->added, __ATOMIC_SEQ_CST);
    }
}

/* -- invalidations (shared with fastvm.c) --------------------------------------------- */

static int compare_frames(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int write_protect_frames(NativeVm *vm, const uint64_t *frames, size_t count) {
    uint64_t total = vm->memory_size / PAGE_SIZE, low = UINT64_MAX, high = 0;
    if (vm->vm_fd < 0)
        return -1;
    for (size_t i = 0; i < count; i++) {
        uint64_t page = frames[i] / PAGE_SIZE;
        if (page >= total)
            return -1;
        low = page < low ? page : low;
        high = page > high ? page : high;
    }
    if (count == 0)
        return 0;
    uint64_t first = low / DIRTY_LOG_ALIGN * DIRTY_LOG_ALIGN;
    uint64_t span = (high - first) / DIRTY_LOG_ALIGN * DIRTY_LOG_ALIGN + DIRTY_LOG_ALIGN;
    if (span > total - first)
        span = total - first;               /* KVM: a multiple of 64 or to the slot's end */
    uint64_t words = (span + DIRTY_LOG_ALIGN - 1) / DIRTY_LOG_ALIGN, one = 0;
    uint64_t *bitmap = words == 1 ? &one : calloc(words, sizeof *bitmap);
    if (bitmap == NULL)
        return -1;
    for (size_t i = 0; i < count; i++) {
        uint64_t page = frames[i] / PAGE_SIZE - first;
        bitmap[page / DIRTY_LOG_ALIGN] |= 1ULL << (page % DIRTY_LOG_ALIGN);
    }
    struct kvm_clear_dirty_log request = {
        .slot = vm->slot, .num_pages = (uint32_t)span, .first_page = first,
        .dirty_bitmap = bitmap,
    };
    int failed = ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &request) < 0;
    if (bitmap != &one)
        free(bitmap);
    return failed ? -1 : 0;
}

static int reprotect(NativeVm *vm, uint64_t start, uint64_t length) {
    void *host = vm->memory + start;
    if (mprotect(host, length, vm->host_prot | PROT_EXEC) < 0)
        return -1;
    return mprotect(host, length, vm->host_prot) < 0 ? -1 : 0;
}

int invalidate_frames(NativeVm *vm, uint64_t *frames, size_t count) {
    if (vm->host_prot < 0)
        return -1;
    qsort(frames, count, sizeof *frames, compare_frames);
    for (size_t i = 0; i < count;) {
        uint64_t start = frames[i], end = start + PAGE_SIZE;
        for (i++; i < count && frames[i] <= end + INVALIDATION_GAP; i++)
            end = frames[i] + PAGE_SIZE;
        if (end > vm->memory_size || reprotect(vm, start, end - start) < 0)
            return -1;
    }
    return 0;
}

void bits_undo(struct bits_walk *w) { undo_all(&w->log); }

void bits_walk_release(struct bits_walk *w) {
    free(w->full.items);
    free(w->dirty.items);
    free(w->log.items);
}

/* -- the guest's bitmap ---------------------------------------------------------------- */

/* The program view's 4 KiB leaf entry of `vaddr` when a CPL3 write may go through
 * it (every level present, user and writable), else NULL. */
static volatile uint64_t *writable_leaf(NativeVm *vm, uint64_t vaddr) {
    uint64_t table = vm->program_cr3 & H_ADDR;
    for (int level = 4; level >= 1; level--) {
        unsigned index = (unsigned)(vaddr >> (12 + 9 * (level - 1))) & (ENTRIES - 1);
        volatile uint64_t *slot = word_at(vm, table + index * 8);
        if (slot == NULL)
            return NULL;
        uint64_t entry = *slot;
        if ((entry & (H_P | H_US | H_RW)) != (H_P | H_US | H_RW)
            || (level > 1 && (entry & H_PS)))
            return NULL;
        if (level == 1)
            return slot;
        table = entry & H_ADDR;
    }
    return NULL;
}

/* The bitmap's pages, checked as vm.py's _check_writable would (before anything
 * else changes): 0, or -1 for the VMM. */
struct bitmap_pages {
    uint64_t address, size;
    int count;
    volatile uint64_t *leaves[MAX_BITMAP_PAGES];
    uint8_t *host[MAX_BITMAP_PAGES];     /* each page's frame, as checked */
};

static int check_bitmap(NativeVm *vm, uint64_t address, uint64_t size,
                        struct bitmap_pages *pages) {
    pages->address = address;
    pages->size = size;
    pages->count = 0;
    if (size == 0)
        return 0;
    if (address >= USER_HALF_END || size > USER_HALF_END - address)
        return -1;
    uint64_t first = address & ~(PAGE_SIZE - 1), last = (address + size - 1) & ~(PAGE_SIZE - 1);
    if ((last - first) / PAGE_SIZE >= MAX_BITMAP_PAGES)
        return -1;
    for (uint64_t page = first; page <= last; page += PAGE_SIZE) {
        volatile uint64_t *leaf = writable_leaf(vm, page);
        uint64_t frame = leaf == NULL ? 0 : *leaf & H_ADDR;
        if (leaf == NULL || frame > vm->memory_size - PAGE_SIZE)
            return -1;
        pages->host[pages->count] = vm->memory + frame;
        pages->leaves[pages->count++] = leaf;
    }
    /* The VMM's check is a checked write access: it sets A and D as the CPU would,
     * before the bits are read (a bitmap inside the range reports its own pages). */
    for (int i = 0; i < pages->count; i++)
        __atomic_fetch_or((uint64_t *)pages->leaves[i], BITS_AD, __ATOMIC_SEQ_CST);
    return 0;
}

/* Copy `found` into the guest's bitmap and set A and D in its pages' entries again
 * (a clear may have taken them), as the VMM's checked write does. */
static void store_bitmap(const struct bitmap_pages *pages, const uint8_t *found) {
    uint64_t cursor = pages->address, done = 0;
    for (int i = 0; i < pages->count; i++) {
        uint64_t offset = cursor & (PAGE_SIZE - 1);
        uint64_t piece = PAGE_SIZE - offset < pages->size - done ? PAGE_SIZE - offset
                                                                 : pages->size - done;
        memcpy(pages->host[i] + offset, found + done, piece);
        __atomic_fetch_or((uint64_t *)pages->leaves[i], BITS_AD, __ATOMIC_SEQ_CST);
        cursor += piece;
        done += piece;
    }
}

/* -- the walk ------------------------------------------------------------------------ */

/* Whether a level-3 or level-2 entry over [start, end) is a large page (vm.py
 * reports those by their base: the VMM's). */
static int has_large_page(NativeVm *vm, uint64_t table, int level, uint64_t base,
                          uint64_t start, uint64_t end) {
    int shift = 12 + 9 * (level - 1);
    uint64_t first = start > base ? (start - base) >> shift : 0;
    uint64_t last = (end - 1 - base) >> shift;
    if (last >= ENTRIES)
        last = ENTRIES - 1;
    for (uint64_t i = first; i <= last; i++) {
        volatile uint64_t *slot = word_at(vm, table + i * 8);
        if (slot == NULL)
            return 0;
        uint64_t entry = *slot;
        if (!(entry & H_P))
            continue;
        if (entry & H_PS)
            return 1;
        if (level > 2 && has_large_page(vm, entry & H_ADDR, level - 1, base + (i << shift),
                                        start, end))
            return 1;
    }
    return 0;
}

int bits_visit(struct bits_walk *w, volatile uint64_t *slot, uint64_t vaddr) {
    uint64_t entry = __atomic_load_n((uint64_t *)slot, __ATOMIC_ACQUIRE);
    if (!(entry & (H_P | H_PROTNONE)) || !(entry & w->test))
        return 0;
    if (w->found != NULL) {
        uint64_t page = (vaddr - w->start) / PAGE_SIZE;
        w->found[page / 8] |= (uint8_t)(1U << (page % 8));
    }
    if (!w->clearing)
        return 0;
    for (;;) {
        uint64_t changed = entry;
        for (int k = 0; k < KINDS; k++)
            if (entry & w->cond[k])
                changed |= w->set[k];
        changed &= ~w->clear;
        if (changed == entry)
            return 0;
        uint64_t lost = entry & ~changed, frame = entry & H_ADDR;
        int present = (entry & H_P) != 0;
        if (present && (lost & BITS_AD) && frame > w->vm->memory_size - PAGE_SIZE)
            return -1;                      /* a shared region's frame: the VMM's */
        if (__atomic_compare_exchange_n((uint64_t *)slot, &entry, changed, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)) {
            if (undo_add(&w->log, slot, changed & ~entry, lost) < 0)
                return -1;
            if (present && (lost & H_A))
                return frames_add(&w->full, frame);
            if (present && (lost & H_D))
                return frames_add(&w->dirty, frame);
            return 0;
        }
    }
}

/* One leaf table's entries [first, last]: the hits visited. Most entries are no
 * hit (1,024 pages written of 262,144): tested eight at a time. */
static int scan_leaf_table(struct bits_walk *w, volatile uint64_t *entries, uint64_t first,
                           uint64_t last, uint64_t base) {
    const uint64_t test = w->test;
    uint64_t i = first;
    while (i <= last) {
        if ((i & 7) == 0 && last - i >= 7) {
            uint64_t any = 0;
            for (int j = 0; j < 8; j++)
                any |= entries[i + j];
            if (!(any & test)) {
                i += 8;
                continue;
            }
        }
        if ((entries[i] & test) && bits_visit(w, &entries[i], base + (i << 12)) < 0)
            return -1;
        i++;
    }
    return 0;
}

static int walk_leaves(struct bits_walk *w, uint64_t table, int level, uint64_t base) {
    int shift = 12 + 9 * (level - 1);
    uint64_t first = w->start > base ? (w->start - base) >> shift : 0;
    uint64_t last = (w->end - 1 - base) >> shift;
    if (last >= ENTRIES)
        last = ENTRIES - 1;
    volatile uint64_t *entries = word_at(w->vm, table);
    if (entries == NULL || table % PAGE_SIZE || w->vm->memory_size - table < PAGE_SIZE)
        return 0;                           /* not a table in guest memory */
    if (level == 1)
        return scan_leaf_table(w, entries, first, last, base);
    for (uint64_t i = first; i <= last; i++) {
        uint64_t entry = entries[i];
        if ((entry & H_P) && walk_leaves(w, entry & H_ADDR, level - 1, base + (i << shift)) < 0)
            return -1;
    }
    return 0;
}

int bits_setup_space(struct bits_walk *w, const struct bits_reader *reader, uint64_t bits) {
    w->test = bits;
    for (int k = 0; k < KINDS; k++) {
        w->cond[k] = w->set[k] = 0;
        if (!(bits & KIND_BIT[k]))
            continue;
        if (reader->mine[k] == 0)
            return -1;
        w->test |= reader->mine[k];
        w->cond[k] = KIND_BIT[k];
        w->set[k] = reader->others[k];
    }
    w->clear = w->test;
    return 0;
}

int bits_invalidate(struct bits_walk *w, void (*quiesce)(void *), void *server) {
    NativeVm *vm = w->vm;
    if (w->full.count && invalidate_frames(vm, w->full.items, w->full.count) < 0)
        return -1;
    if (w->dirty.count && write_protect_frames(vm, w->dirty.items, w->dirty.count) < 0
        && invalidate_frames(vm, w->dirty.items, w->dirty.count) < 0)
        return -1;
    if (w->full.count || w->dirty.count)
        quiesce(server);
    return 0;
}

static int64_t count_found(const uint8_t *found, uint64_t bytes) {
    int64_t total = 0;
    for (uint64_t i = 0; i < bytes; i++)
        total += __builtin_popcount(found[i]);
    return total;
}

int serve_bits(NativeVm *vm, const uint64_t *args, uint64_t max_pages, int64_t *result,
               void (*quiesce)(void *), void *server) {
    uint64_t root = args[0], va = args[1], length = args[2], bits = args[3], bitmap = args[4];
    uint64_t flags = args[5];
    struct root_view view;
    if (root_view(vm, root, &view) < 0 || !bits || bits & ~BITS_AD
        || flags & ~(uint64_t)KVMDUNE_BITS_CLEAR)
        return -1;
    int clearing = (flags & KVMDUNE_BITS_CLEAR) != 0;
    for (int s = 0; s < view.nspaces; s++)
        for (int k = 0; k < KINDS; k++)
            if ((bits & KIND_BIT[k]) && view.readers[s]->mine[k] == 0)
                return -1;                  /* the VMM allocates the reader's bit */
    if (length == 0) {
        *result = 0;
        return 0;
    }
    if (va >= vm->program_end || length > vm->program_end - va)
        return -1;
    uint64_t start = va & ~(PAGE_SIZE - 1);
    uint64_t end = (va + length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
    if (start < vm->window_end && end > vm->window_start)
        return -1;
    if (clearing && vm->host_prot < 0)
        return -1;                          /* the invalidations are the VMM's */
    uint64_t pages = (end - start) / PAGE_SIZE, bytes = (pages + 7) / 8;
    if (pages > max_pages || bytes > MAX_BITMAP_PAGES * PAGE_SIZE)
        return -1;                          /* the VMM's, in pieces */
    struct bitmap_pages out;
    if (check_bitmap(vm, bitmap, bitmap || !clearing ? bytes : 0, &out) < 0)
        return -1;
    if (bitmap == 0)
        out.count = 0;                      /* checked (vm.py does), never written */
    for (int s = 0; s < view.nspaces; s++)
        if (has_large_page(vm, view.cr3[s] & H_ADDR, 4, 0, start, end))
            return -1;
    struct bits_walk w = {.vm = vm, .start = start, .end = end, .clearing = clearing};
    int answered = -1;
    if ((w.found = calloc(bytes, 1)) == NULL)
        return -1;
    for (int s = 0; s < view.nspaces; s++)
        if (bits_setup_space(&w, view.readers[s], bits) < 0
            || walk_leaves(&w, view.cr3[s] & H_ADDR, 4, 0) < 0)
            goto undo;
    if (bits_invalidate(&w, quiesce, server) < 0)
        goto undo;
    store_bitmap(&out, w.found);
    *result = count_found(w.found, bytes);
    answered = 0;
    goto done;
undo:
    undo_all(&w.log);
done:
    free(w.found);
    bits_walk_release(&w);
    return answered;
}
