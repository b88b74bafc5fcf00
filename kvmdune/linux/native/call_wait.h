/* How native code running a vCPU (a layer above's KVM_RUN loop) answers the call
 * stub's wait without Python: the guest got no answer to its ring request in its
 * spin and jumped to CALL_WAIT_TARGET (machine/cpu.py), and the vCPU's thread must
 * serve the request itself or wait for the serving thread's answer, as
 * FastPath's cpu.call_wait does (fastpath.c's wait_response).
 *
 * It comes as a PyCapsule named KVMDUNE_CALL_WAIT_CAPSULE around a
 * `struct kvmdune_call_wait` for one vCPU's ring (Server.call_wait_capsule). `wait`
 * is called with the GIL released, from the vCPU's own thread: 1 when the request
 * is answered, 0 when not within `timeout` seconds (the guest resumes the stub and
 * asks again). The capsule keeps the server alive. */
#ifndef KVMDUNE_CALL_WAIT_H
#define KVMDUNE_CALL_WAIT_H

#include <Python.h>

#include "../../machine/native/reentry.h"

#define KVMDUNE_CALL_WAIT_CAPSULE "kvmdune.call_wait"

struct kvmdune_call_wait {
    int (*wait)(void *server, int slot, double timeout);
    void *server;
    int slot;
    double timeout;
};

/* The wait in `capsule` (Py_None: *wait = NULL): 0, or -1 with an exception set. */
static inline int kvmdune_call_wait_from(PyObject *capsule,
                                         const struct kvmdune_call_wait **wait) {
    *wait = NULL;
    if (capsule == Py_None)
        return 0;
    *wait = PyCapsule_GetPointer(capsule, KVMDUNE_CALL_WAIT_CAPSULE);
    return *wait == NULL ? -1 : 0;
}

/* From a native run loop (machine/native/reentry.h): if the exception `e` is the
 * call stub's wait, answer it (`wait`) and resume the stub where it asked (RCX), as
 * cpu.py does; 1, or 0 (not one: the run loop's). */
static inline int kvmdune_answer_call_wait(const struct kvmdune_reentry *m,
                                           struct kvm_run *run,
                                           const struct kvmdune_exception *e,
                                           const struct kvmdune_call_wait *wait) {
    if (wait == NULL || !kvmdune_is_call_wait(m, run, e))
        return 0;
    wait->wait(wait->server, wait->slot, wait->timeout);
    kvmdune_resume_user(m, run, run->s.regs.regs.rcx, e->rflags, e->rsp);
    return 1;
}

#endif
