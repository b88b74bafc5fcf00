/* x86-64 paging for Dune programs: libdune's page-table entry type, bits and
 * address macros (libdune's mmu.h and mmu-x86.h, paging part), same names, same
 * values, same meanings.
 *
 * Under kvmdune an entry a program reads through dune_vm_lookup or
 * dune_vm_page_walk is a *mirror* entry (kvmdune/dune/vm.py): a leaf holds a
 * guest-physical frame address (dune_va_to_pa's kind) and the bits below; a
 * directory entry holds the address of the next table, a pointer the program can
 * follow (PTE_ADDR). PTE_A and PTE_D are the hardware's, current after
 * dune_vm_page_walk's start or dune_vm_lookup. A write through such a pointer takes
 * effect at the next dune_flush_tlb*(), after the VMM checks it.
 */
#ifndef KVMDUNE_MMU_H
#define KVMDUNE_MMU_H

#include <stdint.h>

#define UINT64(x) ((uint64_t)(x))
#define CAST64(x) ((uint64_t)(x))
#define ONE       UINT64(1)

typedef uint64_t ptent_t;
typedef uintptr_t physaddr_t;
typedef uint64_t ppn_t;

/* Page directory and page table constants. */
#define NPTBITS    9                    /* log2(NPTENTRIES) */
#define NPTLVLS    3                    /* page table depth - 1 */
#define NPTENTRIES (1 << NPTBITS)

/* Index into the table of level n for address la:
 * n = 0: page table, 1: page directory, 2: page directory pointer, 3: PML4. */
#define PDXMASK    ((1 << NPTBITS) - 1)
#define PDSHIFT(n) (12 + NPTBITS * (n))
#define PDX(n, la) ((((uintptr_t)(la)) >> PDSHIFT(n)) & PDXMASK)

/* Page number of an address. */
#define PPN(la) ((la) >> PGSHIFT)

/* Page size. */
#define PGSHIFT 12
#define PGSIZE  (1 << PGSHIFT)
#define PGMASK  (PGSIZE - 1)

/* Offset in a page, and the page of an address. */
#define PGOFF(la)  (((uintptr_t)(la)) & PGMASK)
#define PGADDR(la) (((uintptr_t)(la)) & ~CAST64(PGMASK))

/* Large (2 MiB) pages. kvmdune maps none: PERM_BIG is refused with ENOSYS. */
#define BIG_PGSHIFT 21
#define BIG_PGSIZE  (1 << BIG_PGSHIFT)
#define BIG_PGMASK  (BIG_PGSIZE - 1)
#define BIG_PGOFF(la)  (((uintptr_t)(la)) & BIG_PGMASK)
#define BIG_PGADDR(la) (((uintptr_t)(la)) & ~CAST64(BIG_PGMASK))

/* Page-table entry bits. */
#define PTE_P      0x0001               /* present */
#define PTE_W      0x0002               /* writable */
#define PTE_U      0x0004               /* user: code run by dune_jump_to_user may touch it */
#define PTE_PWT    0x0008               /* write-through (recorded only) */
#define PTE_PCD    0x0010               /* cache disable (recorded only) */
#define PTE_A      0x0020               /* accessed */
#define PTE_D      0x0040               /* dirty */
#define PTE_PS     0x0080               /* page size, in a directory entry */
#define PTE_PAT    0x0080               /* page attribute table, in a 4 KiB entry */
#define PTE_G      0x0100               /* global (recorded only) */
#define PTE_AVAIL  0x0E00               /* 3 bits for software */
#define PTE_PAT_PS 0x1000               /* page attribute table, in a 2 MiB entry */
#define PTE_AVAIL2 UINT64(0x7FF0000000000000)  /* 11 bits for software */
#define PTE_NX     UINT64(0x8000000000000000)  /* no execute */

/* libdune's software bits. */
#define PTE_COW  0x0200                       /* copy-on-write */
#define PTE_USR1 UINT64(0x4000000000000000)   /* for the program */
#define PTE_USR2 UINT64(0x2000000000000000)
#define PTE_USR3 UINT64(0x1000000000000000)

/* The address and the flags of an entry. */
#define PTE_ADDR(pte)  ((physaddr_t)(pte) & UINT64(0xffffffffff000))
#define PTE_FLAGS(pte) ((physaddr_t)(pte) & UINT64(0xfff0000000000fff))

/* Page-fault error code bits (a pgflt handler's fec). */
#define FEC_P   0x1                     /* protection violation (else: not present) */
#define FEC_W   0x2                     /* write */
#define FEC_U   0x4                     /* user mode */
#define FEC_RSV 0x8                     /* reserved bit set in an entry */
#define FEC_I   0x10                    /* instruction fetch */

/* kvmdune's additions (not in libdune): batched reads of the accessed and dirty bits
 * of a range, one bit per page (least significant first) in `bitmap`, for the pages
 * that had any of `bits` (PTE_A, PTE_D) since the program's last clear of them (other
 * readers, such as /proc/self/pagemap, keep their own). kvmdune_vm_clear_bits also
 * clears them (bitmap may then be NULL). Both return how many pages had them, or
 * -errno (EINVAL: a bad root, range or bits; EFAULT: a bitmap not writable). */
#include <stddef.h>

extern long kvmdune_vm_read_bits(ptent_t *root, void *va, size_t len, ptent_t bits,
				 unsigned char *bitmap);
extern long kvmdune_vm_clear_bits(ptent_t *root, void *va, size_t len, ptent_t bits,
				  unsigned char *bitmap);

#endif /* KVMDUNE_MMU_H */
