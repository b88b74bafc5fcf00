/* libdune's way of tracking dirty pages served without Python: VM_SYNC (the A/D bits
 * brought into pgroot's mirror before dune_vm_page_walk walks it) and FLUSH_TLB
 * (dune_flush_tlb: the program's writes through entry pointers checked and applied),
 * in the vCPU's own thread after the guest exited with the call (serve_here), with
 * the answers vm.py's vm_sync and flush_tlb give.
 *
 * VM_SYNC on pgroot: per registered leaf table of the range, each present entry's
 * PTE_A/PTE_D (in the shadow and in the program's copy alike, nothing else of the
 * latter) becomes what the Dune API's reader sees in the program view and in
 * pgroot's user view (the hardware bit or the reader's own software bit): vm.py's
 * _sync. Handed back: another root, a reader bit not allocated yet, a large page.
 * (A hand-back after some tables were brought up to date costs nothing: the VMM's
 * sync of them finds them current.)
 *
 * FLUSH_TLB, when pgroot is the only root and no directory entry was written (the
 * caller, vm.py, knows both): every entry of the range whose program copy differs
 * from the shadow is classified first, and nothing is changed unless all of them are
 * changes the VMM accepts without a question:
 *   - A or D cleared (and A/D set, which is ignored: the entry goes back);
 *   - write or execute taken away or given back up to the page's ceiling (the rights
 *     its VMA allows, known where the VMM checked a protect of the page: fastvm.c),
 *     the frame, PTE_P, PTE_U and every other bit kept.
 * Anything else (a new frame, PERM_NONE, PTE_U, software bits, rights beyond the
 * ceiling or an unknown ceiling, a page outside the program's part) hands the whole
 * flush back, untouched: the VMM's Python path checks it, refuses what it refuses
 * and gives the errors. Accepted: the hardware entries of the program view and the
 * user view get the new rights, the cleared bits are cleared as VM_BITS clears them
 * (fastbits.c: other readers keep theirs), then the VMM's invalidations (the dirty
 * log's write-protect for a frame that lost only D or W, the host mprotect pair for
 * more) and the fast path's quiesce, then the mirror's shadow and copy are written.
 * An invalidation that fails puts everything back and hands the flush to the VMM. */
#include "fastvm.h"

#include <stdlib.h>
#include <string.h>

#include "../include/kvmdune/hypercall.h"

#define USER_HALF_END (1ULL << 47)
#define M_AD (M_A | M_D)
/* What a flush may change in an entry natively besides A and D. */
#define M_NATIVE_RIGHTS (M_W | M_NX)

static const uint64_t KIND_BIT[KINDS] = {H_A, H_D};

/* -- the leaf tables of a range -------------------------------------------------------- */

/* One registered table's part of [start, end): entries [first, last]. */
struct table_part {
    struct table *table;
    uint64_t base;               /* the address entry 0 maps */
    unsigned first, last;
};

typedef int (*part_fn)(NativeVm *vm, const struct table_part *part, void *context);

static int visit_part(NativeVm *vm, struct table *table, uint64_t start, uint64_t end,
                      part_fn fn, void *context) {
    uint64_t base = (table->key - 1) << TABLE_SPAN_SHIFT;
    uint64_t span_end = base + (1ULL << TABLE_SPAN_SHIFT);
    uint64_t low = start > base ? start : base, high = end < span_end ? end : span_end;
    if (low >= high)
        return 0;
    struct table_part part = {table, base, (unsigned)((low - base) / PAGE_SIZE),
                              (unsigned)((high - base) / PAGE_SIZE - 1)};
    return fn(vm, &part, context);
}

/* `fn` on every registered table's part of [start, end) (page-aligned): table by
 * table where the range has fewer 2 MiB pieces than the registry has slots, else by
 * the registry (any order). The first non-zero result ends it. */
static int for_each_part(NativeVm *vm, uint64_t start, uint64_t end, part_fn fn,
                         void *context) {
    uint64_t pieces = ((end - 1) >> TABLE_SPAN_SHIFT) - (start >> TABLE_SPAN_SHIFT) + 1;
    if (start >= end)
        return 0;
    const struct registry *registry = &vm->registry;
    if (pieces <= registry->capacity) {
        for (uint64_t piece = start >> TABLE_SPAN_SHIFT; piece <= (end - 1) >> TABLE_SPAN_SHIFT;
             piece++) {
            struct table *table = find_table(registry, piece << TABLE_SPAN_SHIFT);
            int done = table == NULL ? 0 : visit_part(vm, table, start, end, fn, context);
            if (done)
                return done;
        }
        return 0;
    }
    for (size_t i = 0; i < registry->capacity; i++) {
        int done = registry->tables[i].key == 0
                       ? 0 : visit_part(vm, &registry->tables[i], start, end, fn, context);
        if (done)
            return done;
    }
    return 0;
}

/* The hardware leaf table (its 512 entries) mapping the 2 MiB at `base` in the
 * tables at `cr3`: 0 with *entries NULL where a level is missing, -1 where a large
 * page maps it. */
static int hardware_table(NativeVm *vm, uint64_t cr3, uint64_t base, volatile uint64_t **entries) {
    uint64_t table = cr3 & H_ADDR;
    *entries = NULL;
    for (int level = 4; level >= 2; level--) {
        unsigned index = (unsigned)(base >> (12 + 9 * (level - 1))) & (ENTRIES - 1);
        volatile uint64_t *slot = word_at(vm, table + index * 8);
        if (slot == NULL)
            return 0;
        uint64_t entry = *slot;
        if (!(entry & H_P))
            return 0;
        if (entry & H_PS)
            return -1;
        table = entry & H_ADDR;
    }
    if (table % PAGE_SIZE || table >= vm->memory_size || vm->memory_size - table < PAGE_SIZE)
        return 0;
    *entries = (volatile uint64_t *)(vm->memory + table);
    return 0;
}

static uint64_t space_cr3(NativeVm *vm, int space) {
    return space == SPACE_PROGRAM ? vm->program_cr3 : vm->user_cr3;
}

/* -- VM_SYNC ---------------------------------------------------------------------------- */

/* Where a space has no table for the part: entries that say nothing. */
static const uint64_t NO_ENTRIES[ENTRIES];

static int sync_part(NativeVm *vm, const struct table_part *part, void *unused) {
    const volatile uint64_t *sources[BITS_SPACES];
    uint64_t a_test[BITS_SPACES], d_test[BITS_SPACES];
    for (int s = 0; s < BITS_SPACES; s++) {
        volatile uint64_t *entries;
        if (hardware_table(vm, space_cr3(vm, s), part->base, &entries) < 0)
            return -1;
        sources[s] = entries != NULL ? entries : NO_ENTRIES;
        a_test[s] = entries != NULL ? H_A | vm->readers[s].mine[KIND_A] : 0;
        d_test[s] = entries != NULL ? H_D | vm->readers[s].mine[KIND_D] : 0;
    }
    /* Branch-free but for the rare store: 262,144 entries a GiB, most current. */
    uint64_t *shadow = part->table->shadow, *live = part->table->live;
    const volatile uint64_t *program = sources[SPACE_PROGRAM], *user = sources[SPACE_USER];
    for (unsigned i = part->first; i <= part->last; i++) {
        uint64_t hw0 = program[i], hw1 = user[i], old = shadow[i];
        uint64_t a = ((hw0 & a_test[0]) | (hw1 & a_test[1])) != 0;
        uint64_t d = ((hw0 & d_test[0]) | (hw1 & d_test[1])) != 0;
        uint64_t bits = (a * M_A) | (d * M_D);
        uint64_t present = -(old & M_P);                /* all ones for a present entry */
        uint64_t new = (old & ~(M_AD & present)) | (bits & present);
        if (new != old) {
            shadow[i] = new;
            live[i] = (live[i] & ~M_AD) | bits;
        }
    }
    return 0;
}

/* vm.py's vm_sync on pgroot: 0 with *result, or -1 for the VMM. */
static int serve_sync(NativeVm *vm, const uint64_t *args, int64_t *result) {
    uint64_t root = args[0], start_va = args[1], end_va = args[2];
    if (root != vm->pgroot)
        return -1;
    for (int s = 0; s < BITS_SPACES; s++)
        for (int k = 0; k < KINDS; k++)
            if (vm->readers[s].mine[k] == 0)
                return -1;                  /* the VMM allocates the reader's bit */
    uint64_t start = start_va & ~(PAGE_SIZE - 1), last = end_va & ~(PAGE_SIZE - 1);
    uint64_t end = last >= USER_HALF_END ? USER_HALF_END : last + PAGE_SIZE;
    if (start < end && for_each_part(vm, start, end, sync_part, NULL) != 0)
        return -1;
    *result = 0;
    return 0;
}

/* -- FLUSH_TLB -------------------------------------------------------------------------- */

/* One written entry the flush accepts. */
struct written {
    struct table *table;
    unsigned index;
    uint64_t va, new;            /* the entry the mirror gets */
    uint64_t cleared;            /* M_A and/or M_D the program cleared */
    volatile uint64_t *hardware[BITS_SPACES];    /* the pages' entries, or NULL */
};

struct flush {
    struct written *items;
    size_t count, capacity;
    struct page_change *changes; /* the rights changes, planned */
    size_t nchanges, changes_capacity;
    uint64_t cleared;            /* every bit cleared somewhere */
};

static void *grown(void *items, size_t *capacity, size_t size) {
    size_t more = *capacity ? 2 * *capacity : 64;
    void *bigger = realloc(items, more * size);
    if (bigger != NULL)
        *capacity = more;
    return bigger;
}

static int add_change(struct flush *f, const struct page_change *change) {
    if (f->nchanges == f->changes_capacity) {
        void *bigger = grown(f->changes, &f->changes_capacity, sizeof *f->changes);
        if (bigger == NULL)
            return -1;
        f->changes = bigger;
    }
    f->changes[f->nchanges++] = *change;
    return 0;
}

/* One written entry classified: 0 accepted (recorded), -1 for the VMM. */
static int classify(NativeVm *vm, struct flush *f, struct table *table, unsigned index,
                    uint64_t va) {
    uint64_t old = table->shadow[index], wrote = table->live[index];
    uint64_t new = (wrote & ~M_AD) | (old & wrote & M_AD);    /* clears apply, sets do not */
    if ((new ^ old) & ~(M_AD | M_NATIVE_RIGHTS))
        return -1;                          /* a frame, PERM_NONE, PTE_U, software bits */
    if (va >= vm->program_end || (va < vm->window_end && va + PAGE_SIZE > vm->window_start))
        return -1;
    if ((new ^ old) & M_NATIVE_RIGHTS) {
        struct page_change change;
        struct root_view view;
        if (root_view(vm, vm->pgroot, &view) < 0
            || plan_entry(vm, &view, table, index, va, new, &change) != 1
            || add_change(f, &change) < 0)
            return -1;
    }
    if (f->count == f->capacity) {
        void *bigger = grown(f->items, &f->capacity, sizeof *f->items);
        if (bigger == NULL)
            return -1;
        f->items = bigger;
    }
    struct written *w = &f->items[f->count++];
    *w = (struct written){table, index, va, new, old & ~new & M_AD, {NULL, NULL}};
    if (w->cleared) {
        for (int s = 0; s < BITS_SPACES; s++) {
            volatile uint64_t *entries;
            if (hardware_table(vm, space_cr3(vm, s), va & ~((1ULL << TABLE_SPAN_SHIFT) - 1),
                               &entries) < 0)
                return -1;                  /* a large page: the VMM's */
            w->hardware[s] = entries == NULL ? NULL : &entries[index];
        }
        f->cleared |= w->cleared;
    }
    return 0;
}

static int classify_part(NativeVm *vm, const struct table_part *part, void *context) {
    struct table *table = part->table;
    unsigned count = part->last - part->first + 1;
    if (memcmp(table->live + part->first, table->shadow + part->first, count * 8) == 0)
        return 0;
    for (unsigned i = part->first; i <= part->last; i++)
        if (table->live[i] != table->shadow[i]
            && classify(vm, context, table, i, part->base + (uint64_t)i * PAGE_SIZE) < 0)
            return -1;
    return 0;
}

/* The cleared bits of every accepted entry, in each space, as VM_BITS clears them. */
static int clear_bits(NativeVm *vm, struct flush *f, struct bits_walk *w) {
    for (int s = 0; s < BITS_SPACES; s++)
        for (int k = 0; k < KINDS; k++) {
            uint64_t bit = k == KIND_A ? M_A : M_D;
            if (!(f->cleared & bit))
                continue;
            if (bits_setup_space(w, &vm->readers[s], KIND_BIT[k]) < 0)
                return -1;
            for (size_t i = 0; i < f->count; i++) {
                struct written *item = &f->items[i];
                if ((item->cleared & bit) && item->hardware[s] != NULL
                    && bits_visit(w, item->hardware[s], item->va) < 0)
                    return -1;
            }
        }
    return 0;
}

/* The rights changes' frames to invalidate, with the clears'. */
static int note_losses(struct flush *f, struct bits_walk *w) {
    for (size_t c = 0; c < f->nchanges; c++) {
        uint64_t frame = f->changes[c].new & M_ADDR;
        if (f->changes[c].loss == LOSS_MORE && frames_add(&w->full, frame) < 0)
            return -1;
        if (f->changes[c].loss == LOSS_WRITE && frames_add(&w->dirty, frame) < 0)
            return -1;
    }
    return 0;
}

/* vm.py's flush_tlb of [start, end) when pgroot is the only root and its directories
 * are as the VMM wrote them: 0 with *result, or -1 untouched for the VMM. */
static int serve_flush(NativeVm *vm, uint64_t start, uint64_t end, int64_t *result,
                       void (*quiesce)(void *), void *server) {
    struct flush f = {0};
    struct bits_walk w = {.vm = vm, .clearing = 1};
    int answered = -1;
    if (for_each_part(vm, start, end, classify_part, &f) != 0)
        goto done;
    for (int s = 0; s < BITS_SPACES; s++)
        for (int k = 0; k < KINDS; k++)
            if ((f.cleared & (k == KIND_A ? M_A : M_D)) && vm->readers[s].mine[k] == 0)
                goto done;                  /* the VMM allocates the reader's bit */
    if ((f.cleared && vm->host_prot < 0) || note_losses(&f, &w) < 0)
        goto done;                          /* the invalidations are the VMM's */
    write_leaves(f.changes, f.nchanges, 1);
    if (clear_bits(vm, &f, &w) < 0 || bits_invalidate(&w, quiesce, server) < 0) {
        bits_undo(&w);
        write_leaves(f.changes, f.nchanges, 0);
        goto done;
    }
    for (size_t i = 0; i < f.count; i++) {
        struct written *item = &f.items[i];
        item->table->shadow[item->index] = item->new;
        item->table->live[item->index] = item->new;
    }
    *result = 0;
    answered = 0;
done:
    bits_walk_release(&w);
    free(f.items);
    free(f.changes);
    return answered;
}

int serve_sync_op(NativeVm *vm, uint64_t op, const uint64_t *args, int64_t *result,
                  void (*quiesce)(void *), void *server) {
    if (op == KVMDUNE_HC_VM_SYNC)
        return serve_sync(vm, args, result);
    if (op == KVMDUNE_HC_FLUSH_TLB) {
        /* vm.py's range: everything for length 0, else the pages the range touches
         * within the user half. */
        uint64_t va = args[0], length = args[1], start = 0, end = USER_HALF_END;
        if (length != 0) {
            uint64_t last = va + length < va ? UINT64_MAX : va + length;
            start = va & ~(PAGE_SIZE - 1);
            if (last <= USER_HALF_END)
                end = (last + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
        }
        return serve_flush(vm, start, end, result, quiesce, server);
    }
    return -1;
}
