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

#define KVMDUNE_CALL_WAIT_CAPSULE "kvmdune.call_wait"

struct kvmdune_call_wait {
    int (*wait)(void *server, int slot, double timeout);
    void *server;
    int slot;
    double timeout;
};

#endif
