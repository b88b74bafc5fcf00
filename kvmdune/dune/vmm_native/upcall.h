/* How the native upcall delivery (upcall.c) asks the page tables' native side
 * (fastvm.c) whether a fault of the program is the program's own: a page pgroot's
 * mirror maps with rights the access lacks (vm.py's DuneVm.restricts says True).
 *
 * The check comes as a PyCapsule named KVMDUNE_FAULT_CHECK_CAPSULE around a
 * `struct kvmdune_fault_check`. `restricted` is called with the process's lock held
 * (proclock.h) and the GIL released: 1 when the fault is certainly the program's (a
 * Dune restriction: no demand paging undoes it), 0 when this side does not know (the
 * VMM decides). It never touches Python objects. The capsule keeps `context` alive. */
#ifndef KVMDUNE_DUNE_UPCALL_H
#define KVMDUNE_DUNE_UPCALL_H

#include <stdint.h>

#define KVMDUNE_FAULT_CHECK_CAPSULE "kvmdune.dune.fault_check"

struct kvmdune_fault_check {
    int (*restricted)(void *context, uint64_t address, uint64_t error);
    void *context;
};

#endif
