/* The Dune API's hottest hypercall served without Python: dune_vm_mprotect of a
 * few pages of pgroot or of a clone, answered by the fast path's host thread from
 * whichever vCPU's call ring it arrives on (kvmdune/linux/native/vmm_calls.h), with
 * no exit.
 *
 * It serves only the case it can answer exactly as kvmdune/dune/vm.py would, and
 * only with success: anything else (an error to report, an unknown root, a range of
 * more than MAX_PAGES pages or over two page tables, a page of pgroot that is not
 * its own, rights going to or from PERM_NONE, PERM_U changing, a huge page, a table
 * it does not know, the process's lock held by the VMM) is handed back, untouched,
 * to the VMM's Python path, which gives the errors.
 *
 * The records the checks need live where this code can read them:
 *   - each root's mirror (pgroot's, and up to MAX_CLONES clones'): for each of its
 *     page tables (by the 2 MiB of address space it maps), the live entries (a guest
 *     frame), the VMM's shadow of them and a *ceiling* per entry, all registered by
 *     the VMM (add_root, add_table);
 *   - the ceiling byte: CEILING_KNOWN | the rights the entry may be given (pgroot:
 *     its page's VMA's; a clone: its frame's owner's VMA's, or all for a frame
 *     dune_vm_map_pages gave it), which the VMM writes when it has checked a Dune
 *     protect of the page and clears whenever the page's VMA, frame or alias status
 *     (a clone's: any VMA or frame owner) may change (vm.py);
 *   - the hardware tables of the program view (pgroot's rights are the program's
 *     too) and of each root's user view (guest memory, walked from their CR3).
 *
 * Serialized against the VMM by the process's lock (linux/native/proclock.h), which
 * every Python change of the page tables holds: a call that cannot take it at once
 * goes to the VMM. A change writes the hardware entries, then makes every vCPU see
 * it before the call returns, with the VMM's own invalidations: a frame that only
 * lost write access is write-protected again by KVM's dirty log (KVM_CLEAR_DIRTY_LOG,
 * as GuestMemory.write_protect), one that lost execute by the mprotect pair on its
 * host page (HostMapping.reprotect); both make KVM flush every vCPU's TLB. Then the
 * fast path's serves still under way are waited for (its quiesce, as after the
 * VMM's invalidations), then the mirror and its shadow are written. Python's
 * software TLB revalidates its cached translations against the leaf entries, so it
 * sees these changes too. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "../include/kvmdune/hypercall.h"
#include "../../linux/native/proclock.h"
#include "../../linux/native/vmm_calls.h"
#include "fastvm.h"
#include "upcall.h"

/* libdune's PERM_* (dune.h). */
#define PERM_R 0x0001U
#define PERM_W 0x0002U
#define PERM_X 0x0004U
#define PERM_U 0x0008U
#define PERM_UC 0x0010U
#define PERM_COW 0x0020U
#define PERM_BIG 0x0100U
#define PERM_BIG_1GB 0x0200U
#define PERM_USR1 0x1000U
#define PERM_USR2 0x2000U
/* -- the registries of the roots' tables ------------------------------------------- */

static size_t slot_of(uint64_t key, size_t capacity) {
    return (size_t)(key * 0x9E3779B97F4A7C15ULL >> 17) & (capacity - 1);
}

struct table *find_table(const struct registry *registry, uint64_t vaddr) {
    uint64_t key = (vaddr >> TABLE_SPAN_SHIFT) + 1;
    if (registry->capacity == 0)
        return NULL;
    for (size_t i = slot_of(key, registry->capacity);; i = (i + 1) & (registry->capacity - 1)) {
        if (registry->tables[i].key == key)
            return &registry->tables[i];
        if (registry->tables[i].key == 0)
            return NULL;
    }
}

static void insert_table(struct table *tables, size_t capacity, const struct table *table) {
    size_t i = slot_of(table->key, capacity);
    while (tables[i].key != 0 && tables[i].key != table->key)
        i = (i + 1) & (capacity - 1);
    tables[i] = *table;
}

static int grow(struct registry *registry) {
    size_t capacity = registry->capacity ? registry->capacity * 2 : 64;
    struct table *tables = calloc(capacity, sizeof *tables);
    if (tables == NULL)
        return -1;
    for (size_t i = 0; i < registry->capacity; i++)
        if (registry->tables[i].key != 0)
            insert_table(tables, capacity, &registry->tables[i]);
    free(registry->tables);
    registry->tables = tables;
    registry->capacity = capacity;
    return 0;
}

static int registry_add(struct registry *registry, const struct table *table) {
    if ((registry->count + 1) * 2 > registry->capacity && grow(registry) < 0)
        return -1;
    if (find_table(registry, (table->key - 1) << TABLE_SPAN_SHIFT) == NULL)
        registry->count++;
    insert_table(registry->tables, registry->capacity, table);
    return 0;
}

static void registry_clear(struct registry *registry) {
    free(registry->tables);
    *registry = (struct registry){0};
}

static struct clone_records *find_clone(NativeVm *vm, uint64_t handle) {
    for (int i = 0; handle != 0 && i < MAX_CLONES; i++)
        if (vm->clones[i].handle == handle)
            return &vm->clones[i];
    return NULL;
}

int root_view(NativeVm *vm, uint64_t handle, struct root_view *view) {
    if (handle == vm->pgroot) {
        *view = (struct root_view){1, &vm->registry, BITS_SPACES,
                                   {vm->program_cr3, vm->user_cr3},
                                   {&vm->readers[SPACE_PROGRAM], &vm->readers[SPACE_USER]}};
        return 0;
    }
    struct clone_records *clone = find_clone(vm, handle);
    if (clone == NULL)
        return -1;
    *view = (struct root_view){0, &clone->registry, 1, {clone->user_cr3, 0},
                               {&clone->reader, NULL}};
    return 0;
}

/* -- libdune's entries -------------------------------------------------------------- */

/* libdune's get_pte_perm (entries.py's entry_bits). */
static uint64_t entry_bits(uint32_t perm) {
    uint64_t bits = 0;
    if (perm & PERM_R)
        bits = M_P;
    if (perm & PERM_W)
        bits |= M_W;
    if (!(perm & PERM_X))
        bits |= M_NX;
    if (perm & PERM_U)
        bits |= M_U;
    if (perm & PERM_UC)
        bits |= M_PCD;
    if (perm & PERM_COW)
        bits |= M_COW;
    if (perm & PERM_USR1)
        bits |= M_USR1;
    if (perm & PERM_USR2)
        bits |= M_USR2;
    if (perm & (PERM_USR1 | PERM_USR2))
        bits |= M_USR3;
    return bits;
}

unsigned rights(uint64_t entry) {
    if (!(entry & M_P))
        return 0;
    return RIGHT_R | (entry & M_W ? RIGHT_W : 0) | (entry & M_NX ? 0 : RIGHT_X);
}

static int user_visible(uint64_t entry) {
    return (entry & (M_P | M_U)) == (M_P | M_U) && (entry & M_ADDR);
}

/* -- the hardware tables ------------------------------------------------------------ */

volatile uint64_t *leaf_of(NativeVm *vm, uint64_t cr3, uint64_t vaddr) {
    uint64_t table = cr3 & H_ADDR;
    for (int level = 4; level >= 1; level--) {
        unsigned index = (unsigned)(vaddr >> (12 + 9 * (level - 1))) & (ENTRIES - 1);
        volatile uint64_t *slot = word_at(vm, table + index * 8);
        if (slot == NULL)
            return NULL;
        if (level == 1)
            return slot;
        uint64_t entry = *slot;
        if (!(entry & H_P) || (entry & H_PS))
            return NULL;
        table = entry & H_ADDR;
    }
    return NULL;
}

/* The hardware bits granting `granted` to user code (pagetable.perm_bits of
 * entries.perm_of(entry, user=True)). */
static uint64_t hardware_bits(unsigned granted) {
    return H_P | H_US | (granted & RIGHT_W ? H_RW : 0) | (granted & RIGHT_X ? 0 : H_NX);
}

/* What a present hardware entry loses going from `old` to `new` (same frame, still
 * present and user): pagetable._losses. */
static enum loss loss_of(uint64_t old, uint64_t new) {
    if ((new & H_NX) && !(old & H_NX))
        return LOSS_MORE;
    if ((old & H_RW) && !(new & H_RW))
        return LOSS_WRITE;
    return LOSS_NONE;
}

/* -- dune_vm_mprotect of a few pages of a root ---------------------------------------- */

int plan_entry(NativeVm *vm, const struct root_view *view, struct table *table, unsigned index,
               uint64_t va, uint64_t new, struct page_change *change) {
    uint64_t old = table->shadow[index];
    uint8_t ceiling = table->ceiling[index];
    if (!(old & M_ADDR))
        return 0;
    if (!(old & M_P) || !(new & M_P) || !(ceiling & CEILING_KNOWN))
        return -1;                              /* PERM_NONE, an alias, or unchecked */
    unsigned granted = rights(new);
    if (granted & ~ceiling & (RIGHT_R | RIGHT_W | RIGHT_X))
        return -1;                              /* EACCES: the VMM says so */
    int visible = user_visible(old);
    if (visible != user_visible(new))
        return -1;                              /* the user view maps or unmaps */
    change->index = index;
    change->new = new;
    change->nleaves = 0;
    change->loss = LOSS_NONE;
    if (!((old ^ new) & M_RIGHTS))
        return 1;
    /* pgroot's rights are the program view's too; a clone's only its user view's. */
    if (view->is_pgroot)
        change->leaves[change->nleaves++] = leaf_of(vm, vm->program_cr3, va);
    if (visible)
        change->leaves[change->nleaves++] = leaf_of(vm, view->cr3[view->nspaces - 1], va);
    for (int i = 0; i < change->nleaves; i++) {
        volatile uint64_t *leaf = change->leaves[i];
        if (leaf == NULL)
            return -1;
        uint64_t before = change->before[i] = *leaf;
        if (!(before & H_P) || !(before & H_US) || (before & H_ADDR) != (old & M_ADDR))
            return -1;
        change->after[i] = (before & ~H_PERM_BITS) | hardware_bits(granted);
        enum loss loss = loss_of(before, change->after[i]);
        if (loss > change->loss)
            change->loss = loss;
    }
    if ((change->loss == LOSS_WRITE && vm->vm_fd < 0)
        || (change->loss == LOSS_MORE && vm->host_prot < 0))
        return -1;                              /* the invalidation is the VMM's */
    return 1;
}

void write_leaves(struct page_change *changes, size_t count, int after) {
    for (size_t c = 0; c < count; c++)
        for (int i = 0; i < changes[c].nleaves; i++)
            *changes[c].leaves[i] = after ? changes[c].after[i] : changes[c].before[i];
}

/* 0 with *result = 0 when done exactly as vm.py's vm_mprotect would; -1: untouched,
 * for the VMM. Called with the process's lock held. */
static int mprotect_pages(NativeVm *vm, const uint64_t *args, int64_t *result,
                          void (*quiesce)(void *), void *server) {
    uint64_t root = args[0], va = args[1], length = args[2];
    uint32_t perm = (uint32_t)args[3];
    struct root_view view;
    if (root_view(vm, root, &view) < 0 || perm & (PERM_BIG | PERM_BIG_1GB) || !(perm & PERM_R))
        return -1;
    if (length == 0 || va >= vm->program_end || length > vm->program_end - va)
        return -1;
    uint64_t start = va & ~(PAGE_SIZE - 1);
    uint64_t end = (va + length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
    if (end - start > MAX_PAGES * PAGE_SIZE || (start < vm->window_end && end > vm->window_start)
        || (start >> TABLE_SPAN_SHIFT) != ((end - 1) >> TABLE_SPAN_SHIFT))
        return -1;
    struct table *table = find_table(view.registry, start);
    if (table == NULL)
        return -1;
    uint64_t bits = entry_bits(perm);
    struct page_change changes[MAX_PAGES];
    int count = 0, write_lost = 0, more_lost = 0;
    for (uint64_t page = start; page < end; page += PAGE_SIZE) {
        unsigned index = (unsigned)(page / PAGE_SIZE) & (ENTRIES - 1);
        uint64_t new = (table->shadow[index] & (M_ADDR | M_PS)) | bits;
        int planned = plan_entry(vm, &view, table, index, page, new, &changes[count]);
        if (planned < 0)
            return -1;
        if (planned) {
            write_lost |= changes[count].loss == LOSS_WRITE;
            more_lost |= changes[count].loss == LOSS_MORE;
            count++;
        }
    }
    write_leaves(changes, count, 1);
    for (int c = 0; c < count; c++) {
        uint64_t frame = changes[c].new & M_ADDR;
        int failed = (changes[c].loss == LOSS_WRITE && write_protect_frames(vm, &frame, 1) < 0)
            || (changes[c].loss == LOSS_MORE && invalidate_frames(vm, &frame, 1) < 0);
        if (failed) {
            /* Back as it was (what was invalidated only costs the guest a walk). */
            write_leaves(changes, count, 0);
            return -1;
        }
    }
    if (write_lost || more_lost)
        quiesce(server);           /* no serve still writes through the old rights */
    for (int c = 0; c < count; c++) {
        table->shadow[changes[c].index] = changes[c].new;
        table->live[changes[c].index] = changes[c].new;
    }
    *result = 0;
    return 0;
}

static int serve(void *context, uint64_t op, const uint64_t args[6], int64_t *result,
                 void (*quiesce)(void *), void *server) {
    NativeVm *vm = context;
    int answered = -1;
    if ((op != KVMDUNE_HC_VM_MPROTECT && op != KVMDUNE_HC_VM_BITS)
        || !proclock_try(vm->process_lock)) {
        __atomic_fetch_add(&vm->handed_back, 1, __ATOMIC_RELAXED);
        return -1;
    }
    pthread_mutex_lock(&vm->lock);
    if (op == KVMDUNE_HC_VM_MPROTECT)
        answered = mprotect_pages(vm, args, result, quiesce, server);
    else
        answered = serve_bits(vm, args, RING_BITS_PAGES, result, quiesce, server);
    pthread_mutex_unlock(&vm->lock);
    proclock_release(vm->process_lock);
    __atomic_fetch_add(answered == 0 ? &vm->served : &vm->handed_back, 1, __ATOMIC_RELAXED);
    return answered;
}

/* -- the program's faults (upcall.h) ------------------------------------------------- */

/* x86 page-fault error code bits (Intel SDM). */
#define PF_WRITE 0x2ULL
#define PF_INSTRUCTION 0x10ULL

/* vm.py's restricts, where pgroot's mirror decides it: the page's entry holds a
 * frame and its rights lack the access (_allows). 0 (the VMM decides) for anything
 * else: no table registered here, no frame (an unmapped page, demand paging's). */
static int fault_restricted(void *context, uint64_t address, uint64_t error) {
    NativeVm *vm = context;
    int restricted = 0;
    if (address >= vm->program_end)
        return 0;
    pthread_mutex_lock(&vm->lock);
    struct table *table = find_table(&vm->registry, address);   /* pgroot's */
    if (table != NULL) {
        uint64_t entry = table->shadow[(address / PAGE_SIZE) & (ENTRIES - 1)];
        unsigned granted = rights(entry);
        unsigned needed = error & PF_WRITE ? RIGHT_W : error & PF_INSTRUCTION ? RIGHT_X : RIGHT_R;
        restricted = (entry & M_ADDR) && !(granted & needed);
    }
    pthread_mutex_unlock(&vm->lock);
    return restricted;
}

/* -- the Python object ---------------------------------------------------------------- */

/* serve_here's quiesce: the caller (the VMM) runs the fast path's after the call. */
static void defer_quiesce(void *asked) { *(int *)asked = 1; }

/* serve_here(op, args): VM_BITS, VM_SYNC or FLUSH_TLB served in the calling thread
 * (a vCPU's, after the guest exited with it: a VM_BITS range too large for the ring,
 * see RING_BITS_PAGES; the others always), with the process's lock held by the
 * caller (FLUSH_TLB only when pgroot is the only root and its directories are as
 * the VMM wrote them: fastsync.c). (result, quiesce) when answered, quiesce True when
 * the fast path's quiesce() must run before the guest goes on; None: the VMM's
 * Python path serves it. */
static PyObject *NativeVm_serve_here(NativeVm *vm, PyObject *args) {
    unsigned long long op, a[6];
    if (!PyArg_ParseTuple(args, "K(KKKKKK)", &op, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5]))
        return NULL;
    if (op != KVMDUNE_HC_VM_BITS && op != KVMDUNE_HC_VM_SYNC && op != KVMDUNE_HC_FLUSH_TLB)
        Py_RETURN_NONE;
    const uint64_t call[6] = {a[0], a[1], a[2], a[3], a[4], a[5]};
    int64_t result = 0;
    int answered, asked = 0;
    /* The GIL stays held: under a milli-second for 1 GiB, where handing it to another
     * thread and back costs a wake-up, milli-seconds on a busy machine. (vm->lock's
     * other holders never wait for the GIL.) */
    pthread_mutex_lock(&vm->lock);
    if (op == KVMDUNE_HC_VM_BITS)
        answered = serve_bits(vm, call, UINT64_MAX, &result, defer_quiesce, &asked);
    else
        answered = serve_sync_op(vm, op, call, &result, defer_quiesce, &asked);
    pthread_mutex_unlock(&vm->lock);
    __atomic_fetch_add(answered == 0 ? &vm->served : &vm->handed_back, 1, __ATOMIC_RELAXED);
    if (answered == 0 && op != KVMDUNE_HC_VM_BITS)
        __atomic_fetch_add(op == KVMDUNE_HC_VM_SYNC ? &vm->syncs : &vm->flushes, 1,
                           __ATOMIC_RELAXED);
    if (answered != 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(LO)", (long long)result, asked ? Py_True : Py_False);
}

static int NativeVm_init(NativeVm *vm, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"memory", "memory_size", "pgroot", "program_cr3", "user_cr3",
                               "window_start", "window_end", "program_end", "vm_fd", "slot",
                               "host_prot", "process_lock", NULL};
    unsigned long long memory, memory_size, pgroot, program_cr3, user_cr3, window_start,
        window_end, program_end;
    unsigned long long process_lock;
    int vm_fd, host_prot;
    unsigned int slot;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKKKKKKKiIiK", keywords, &memory,
                                     &memory_size, &pgroot, &program_cr3, &user_cr3,
                                     &window_start, &window_end, &program_end, &vm_fd, &slot,
                                     &host_prot, &process_lock))
        return -1;
    if (memory_size % PAGE_SIZE || window_start > window_end || process_lock == 0) {
        PyErr_SetString(PyExc_ValueError, "memory size, window or lock out of shape");
        return -1;
    }
    vm->memory = (uint8_t *)(uintptr_t)memory;
    vm->memory_size = memory_size;
    vm->pgroot = pgroot;
    vm->program_cr3 = program_cr3;
    vm->user_cr3 = user_cr3;
    vm->window_start = window_start;
    vm->window_end = window_end;
    vm->program_end = program_end;
    vm->vm_fd = vm_fd;
    vm->slot = slot;
    vm->host_prot = host_prot;
    vm->process_lock = (uint32_t *)(uintptr_t)process_lock;
    return 0;
}

/* add_table(first_address, live, shadow, ceilings, root=pgroot): one of a root's page
 * tables (the 2 MiB it maps from first_address), by the host addresses of its live
 * entries (in guest memory), the shadow and the ceiling bytes, which stay put while
 * this object is installed (and the root is: remove_root). */
static PyObject *NativeVm_add_table(NativeVm *vm, PyObject *args) {
    unsigned long long first, live, shadow, ceiling, root = 0;
    if (!PyArg_ParseTuple(args, "KKKK|K", &first, &live, &shadow, &ceiling, &root))
        return NULL;
    uint64_t offset = live - (uint64_t)(uintptr_t)vm->memory;
    if (first & ((1ULL << TABLE_SPAN_SHIFT) - 1) || live < (uint64_t)(uintptr_t)vm->memory
        || offset % PAGE_SIZE || offset >= vm->memory_size || !shadow || !ceiling) {
        PyErr_SetString(PyExc_ValueError, "a page table out of shape");
        return NULL;
    }
    struct table table = {(first >> TABLE_SPAN_SHIFT) + 1, (uint64_t *)(uintptr_t)live,
                          (uint64_t *)(uintptr_t)shadow, (uint8_t *)(uintptr_t)ceiling};
    int failed = 0, unknown = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&vm->lock);
    struct root_view view;
    if (root_view(vm, root ? root : vm->pgroot, &view) < 0)
        unknown = 1;
    else
        failed = registry_add(view.registry, &table) < 0;
    pthread_mutex_unlock(&vm->lock);
    Py_END_ALLOW_THREADS
    if (unknown) {
        PyErr_SetString(PyExc_KeyError, "no such root");
        return NULL;
    }
    if (failed)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* add_root(handle, user_cr3): a clone, served from now on (its tables: add_table).
 * False when MAX_CLONES are served already (the VMM serves this one). */
static PyObject *NativeVm_add_root(NativeVm *vm, PyObject *args) {
    unsigned long long handle, user_cr3;
    if (!PyArg_ParseTuple(args, "KK", &handle, &user_cr3))
        return NULL;
    if (handle == 0 || handle == vm->pgroot) {
        PyErr_SetString(PyExc_ValueError, "not a clone's handle");
        return NULL;
    }
    int added = 0;
    pthread_mutex_lock(&vm->lock);
    if (find_clone(vm, handle) == NULL)
        for (int i = 0; i < MAX_CLONES && !added; i++)
            if (vm->clones[i].handle == 0) {
                vm->clones[i] = (struct clone_records){.handle = handle, .user_cr3 = user_cr3};
                added = 1;
            }
    pthread_mutex_unlock(&vm->lock);
    return PyBool_FromLong(added);
}

/* remove_root(handle): the clone is served no more (before its tables go). */
static PyObject *NativeVm_remove_root(NativeVm *vm, PyObject *args) {
    unsigned long long handle;
    if (!PyArg_ParseTuple(args, "K", &handle))
        return NULL;
    pthread_mutex_lock(&vm->lock);
    struct clone_records *clone = find_clone(vm, handle);
    if (clone != NULL) {
        registry_clear(&clone->registry);
        *clone = (struct clone_records){0};
    }
    pthread_mutex_unlock(&vm->lock);
    Py_RETURN_NONE;
}

/* set_root_reader(handle, mine_a, mine_d, others_a, others_d): as set_bits_reader, for
 * a clone's user view. */
static PyObject *NativeVm_set_root_reader(NativeVm *vm, PyObject *args) {
    unsigned long long handle, mine_a, mine_d, others_a, others_d;
    if (!PyArg_ParseTuple(args, "KKKKK", &handle, &mine_a, &mine_d, &others_a, &others_d))
        return NULL;
    pthread_mutex_lock(&vm->lock);
    struct clone_records *clone = find_clone(vm, handle);
    if (clone != NULL)
        clone->reader = (struct bits_reader){{mine_a, mine_d}, {others_a, others_d}};
    pthread_mutex_unlock(&vm->lock);
    Py_RETURN_NONE;
}

/* set_bits_reader(space, mine_a, mine_d, others_a, others_d): the Dune API's
 * reader's software bits in one space (0: program view, 1: pgroot's user view; 0
 * where not allocated yet) and the other readers', after any change of them. */
static PyObject *NativeVm_set_bits_reader(NativeVm *vm, PyObject *args) {
    int space;
    unsigned long long mine_a, mine_d, others_a, others_d;
    if (!PyArg_ParseTuple(args, "iKKKK", &space, &mine_a, &mine_d, &others_a, &others_d))
        return NULL;
    if (space < 0 || space >= BITS_SPACES) {
        PyErr_SetString(PyExc_ValueError, "no such space");
        return NULL;
    }
    struct bits_reader reader = {{mine_a, mine_d}, {others_a, others_d}};
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&vm->lock);
    vm->readers[space] = reader;
    pthread_mutex_unlock(&vm->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static void release_capsule(PyObject *capsule) {
    Py_XDECREF((PyObject *)PyCapsule_GetContext(capsule));
}

/* capsule(): the handler for the fast path's set_vmm_calls; it keeps this object. */
static PyObject *NativeVm_capsule(NativeVm *vm, PyObject *unused) {
    PyObject *capsule = PyCapsule_New(&vm->calls, KVMDUNE_VMM_CALLS_CAPSULE, release_capsule);
    if (capsule == NULL)
        return NULL;
    Py_INCREF(vm);
    if (PyCapsule_SetContext(capsule, vm) < 0) {
        Py_DECREF(vm);
        Py_DECREF(capsule);
        return NULL;
    }
    return capsule;
}

static void release_fault_check(PyObject *capsule) {
    free(PyCapsule_GetPointer(capsule, KVMDUNE_FAULT_CHECK_CAPSULE));
    Py_XDECREF((PyObject *)PyCapsule_GetContext(capsule));
}

/* fault_check(): the check for the native upcall delivery (upcall.h); it keeps
 * this object. */
static PyObject *NativeVm_fault_check(NativeVm *vm, PyObject *unused) {
    struct kvmdune_fault_check *check = malloc(sizeof *check);
    if (check == NULL)
        return PyErr_NoMemory();
    check->restricted = fault_restricted;
    check->context = vm;
    PyObject *capsule = PyCapsule_New(check, KVMDUNE_FAULT_CHECK_CAPSULE, release_fault_check);
    if (capsule == NULL) {
        free(check);
        return NULL;
    }
    Py_INCREF(vm);
    if (PyCapsule_SetContext(capsule, vm) < 0) {
        Py_DECREF(capsule);    /* frees check; the context is not set yet */
        Py_DECREF(vm);
        return NULL;
    }
    return capsule;
}

static PyObject *NativeVm_stats(NativeVm *vm, PyObject *unused) {
    return Py_BuildValue("{sKsKsKsKsn}", "served", (unsigned long long)vm->served,
                         "handed_back", (unsigned long long)vm->handed_back, "syncs",
                         (unsigned long long)vm->syncs, "flushes",
                         (unsigned long long)vm->flushes, "tables",
                         (Py_ssize_t)vm->registry.count);
}

static PyObject *NativeVm_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    NativeVm *vm = (NativeVm *)type->tp_alloc(type, 0);
    if (vm != NULL) {
        pthread_mutex_init(&vm->lock, NULL);
        vm->calls.serve = serve;
        vm->calls.context = vm;
        vm->vm_fd = -1;
        vm->host_prot = -1;
    }
    return (PyObject *)vm;
}

static void NativeVm_dealloc(NativeVm *vm) {
    registry_clear(&vm->registry);
    for (int i = 0; i < MAX_CLONES; i++)
        registry_clear(&vm->clones[i].registry);
    pthread_mutex_destroy(&vm->lock);
    Py_TYPE(vm)->tp_free((PyObject *)vm);
}

static PyMethodDef NativeVm_methods[] = {
    {"add_table", (PyCFunction)NativeVm_add_table, METH_VARARGS,
     "add_table(first_address, live, shadow, ceilings, root=pgroot): a root's page table."},
    {"add_root", (PyCFunction)NativeVm_add_root, METH_VARARGS,
     "add_root(handle, user_cr3): a clone served from now on; False when too many."},
    {"remove_root", (PyCFunction)NativeVm_remove_root, METH_VARARGS,
     "remove_root(handle): a clone served no more."},
    {"set_root_reader", (PyCFunction)NativeVm_set_root_reader, METH_VARARGS,
     "set_root_reader(handle, mine_a, mine_d, others_a, others_d): a clone's readers' bits."},
    {"set_bits_reader", (PyCFunction)NativeVm_set_bits_reader, METH_VARARGS,
     "set_bits_reader(space, mine_a, mine_d, others_a, others_d): the A/D readers' bits."},
    {"serve_here", (PyCFunction)NativeVm_serve_here, METH_VARARGS,
     "serve_here(op, args): VM_BITS in this thread, the process's lock held: "
     "(result, quiesce) or None."},
    {"capsule", (PyCFunction)NativeVm_capsule, METH_NOARGS,
     "The handler of VMM calls for the fast path (set_vmm_calls)."},
    {"fault_check", (PyCFunction)NativeVm_fault_check, METH_NOARGS,
     "The check of the program's faults for the native upcall delivery (upcall.h)."},
    {"stats", (PyCFunction)NativeVm_stats, METH_NOARGS, "Counters."},
    {NULL},
};

static PyTypeObject NativeVmType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvmdune.dune._fastvm.NativeVm",
    .tp_basicsize = sizeof(NativeVm),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The roots' records for the hypercalls served natively.",
    .tp_new = NativeVm_new,
    .tp_init = (initproc)NativeVm_init,
    .tp_dealloc = (destructor)NativeVm_dealloc,
    .tp_methods = NativeVm_methods,
};

static int fastvm_exec(PyObject *module) {
    if (PyType_Ready(&NativeVmType) < 0)
        return -1;
    Py_INCREF(&NativeVmType);
    if (PyModule_AddObject(module, "NativeVm", (PyObject *)&NativeVmType) < 0
        || PyModule_AddIntConstant(module, "CEILING_KNOWN", CEILING_KNOWN) < 0
        || PyModule_AddIntConstant(module, "SERVED_OPS",
                                   (1L << KVMDUNE_HC_VM_MPROTECT) | (1L << KVMDUNE_HC_VM_BITS)) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot fastvm_slots[] = {
    {Py_mod_exec, fastvm_exec},
    {0, NULL},
};

/* entry_bits(perm): this code's libdune get_pte_perm, for a test to compare with
 * entries.py's; hardware_bits(rights) likewise with pagetable.perm_bits. */
static PyObject *py_entry_bits(PyObject *module, PyObject *arg) {
    unsigned long perm = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLongLong(entry_bits((uint32_t)perm));
}

static PyObject *py_hardware_bits(PyObject *module, PyObject *arg) {
    unsigned long granted = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLongLong(hardware_bits((unsigned)granted));
}

static PyMethodDef fastvm_functions[] = {
    {"entry_bits", py_entry_bits, METH_O, "libdune's entry bits for a PERM_* value."},
    {"hardware_bits", py_hardware_bits, METH_O, "The user page bits granting rights."},
    {NULL},
};

static struct PyModuleDef fastvm_module = {
    PyModuleDef_HEAD_INIT, "_fastvm",
    "dune_vm_mprotect of a few pages of a root, served by the fast path's host thread.", 0,
    fastvm_functions, fastvm_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastvm(void) { return PyModuleDef_Init(&fastvm_module); }
