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
    struct table *tables;        /* open addressing, power-of-two capacity */
    size_t capacity, count;
    struct bits_reader readers[BITS_SPACES];
    uint64_t served, handed_back;
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

#endif
