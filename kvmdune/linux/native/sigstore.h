/* The guest process's signal dispositions (its 64 struct sigaction, CLONE_SIGHAND's
 * shared table), held in native memory so that the fast path's serving thread
 * (rt_sigaction) and the VMM's Python (linux/signals.py's Dispositions, a view of it,
 * which delivery reads) use one table.
 *
 * Writers hold the process's lock (proclock.h: Python holds it whenever it serves
 * the guest; the serving thread only ever tries it). Readers that do not hold it
 * read through the sequence counter (a writer makes it odd while it writes), so
 * they never see half of one action and half of another. */
#ifndef KVMDUNE_SIGSTORE_H
#define KVMDUNE_SIGSTORE_H

#include <Python.h>
#include <stdint.h>

/* Signal numbers are 1..SIGSTORE_SIGNALS (Linux's _NSIG). */
#define SIGSTORE_SIGNALS 64

/* The kernel's struct sigaction on x86-64 (what rt_sigaction reads and writes). */
typedef struct {
    uint64_t handler;
    uint64_t flags;
    uint64_t restorer;
    uint64_t mask;
} kernel_sigaction;

typedef struct {
    PyObject_HEAD
    uint32_t sequence;                              /* atomic: odd while written */
    kernel_sigaction actions[SIGSTORE_SIGNALS];     /* signal n at n - 1 */
} SigActions;

extern PyTypeObject SigActionsType;

/* The module's type: added by the module's init. */
int sigstore_register(PyObject *module);

/* Signal `signo`'s action (1 <= signo <= SIGSTORE_SIGNALS), consistent without the
 * lock. */
void sigstore_read(SigActions *t, int signo, kernel_sigaction *out);
/* Replace it; the caller holds the process's lock. */
void sigstore_write(SigActions *t, int signo, const kernel_sigaction *action);

/* rt_sigaction's change on the store, after the caller checked the size and read
 * `act` (NULL: none) from the guest, and before it writes `old` (NULL: not asked):
 * Linux's do_sigaction. 0 with *result; -1 when the VMM must serve the call (the new
 * action ignores the signal, whose pending instances only the VMM can drop). The
 * caller holds the process's lock. */
int sigstore_sigaction(SigActions *t, long signo, const kernel_sigaction *act,
                       kernel_sigaction *old, int64_t *result);

#endif
