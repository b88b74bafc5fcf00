/* The process's lock (linux/threads.py's ThreadGroup.lock) as native code takes it.
 *
 * A futex word: 0 free, 1 held, 2 held with waiters (Drepper, "Futexes Are
 * Tricky", mutex2). Python takes it through proclock.c's ProcessLock; native code
 * that acts on the process's state outside Python (the Dune API's hypercalls served
 * by the fast path's thread) only ever tries it: a held lock means the VMM is at
 * work, and the call goes to the VMM, which waits for it. No owner is recorded:
 * like threading.Lock, any thread may release it. */
#ifndef KVMDUNE_PROCLOCK_H
#define KVMDUNE_PROCLOCK_H

#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { PROCLOCK_FREE = 0, PROCLOCK_HELD = 1, PROCLOCK_CONTENDED = 2 };

static inline int proclock_try(uint32_t *word) {
    uint32_t expected = PROCLOCK_FREE;
    return __atomic_compare_exchange_n(word, &expected, PROCLOCK_HELD, 0, __ATOMIC_ACQUIRE,
                                       __ATOMIC_RELAXED);
}

static inline void proclock_release(uint32_t *word) {
    if (__atomic_exchange_n(word, PROCLOCK_FREE, __ATOMIC_RELEASE) == PROCLOCK_CONTENDED)
        syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}

#endif
