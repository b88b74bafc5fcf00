/* mmu.h - page-table entry types for the Dune API (libdune's mmu.h/mmu-x86.h).
 *
 * A minimal placeholder so that dune.h compiles before the page-table part of the
 * API lands: it is owned by the page-table work (issue 11, "dune-vm"), which
 * replaces it with libdune's full set (PTE_*, PGSIZE, PTE_ADDR, ...).
 */
#ifndef KVMDUNE_MMU_H
#define KVMDUNE_MMU_H

#include <stdint.h>

typedef uint64_t ptent_t;

#endif
