/* How a layer above hands the fast path's server a native handler for *VMM calls*:
 * the call numbers from CALLRING_VMM_CALLS on (the Dune API's hypercalls), which
 * this layer knows nothing about.
 *
 * The handler comes as a PyCapsule named KVMDUNE_VMM_CALLS_CAPSULE around a
 * `struct kvmdune_vmm_calls` (Server.set_vmm_calls). The server calls `serve` for a
 * VMM call `op` (number - CALLRING_VMM_CALLS, below KVMDUNE_VMM_CALL_OPS) with the
 * six arguments copied out of the ring, from its own thread or from a vCPU thread
 * in wait_response (GIL released), never while the handler is being replaced, and
 * outside any serve's registration (so `quiesce(server)` may be called: it waits
 * until no serve that began before it is under way, as the VMM's invalidations do).
 * It returns 0 with *result set (the guest gets the result), or -1: the VMM serves
 * the call (the guest takes the exit path), and then nothing may have changed.
 * `serve` must not touch Python objects. The capsule's owner keeps `context` alive
 * while the capsule lives; the server holds the capsule while it uses the handler. */
#ifndef KVMDUNE_VMM_CALLS_H
#define KVMDUNE_VMM_CALLS_H

#include <stdint.h>

#define KVMDUNE_VMM_CALLS_CAPSULE "kvmdune.vmm_calls"
#define KVMDUNE_VMM_CALL_OPS 64

struct kvmdune_vmm_calls {
    int (*serve)(void *context, uint64_t op, const uint64_t args[6], int64_t *result,
                 void (*quiesce)(void *server), void *server);
    void *context;
};

#endif
