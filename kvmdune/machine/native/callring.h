/* The call ring: how guest CPL3 code hands a system call to a host thread without
 * an exit (exception-less system calls, FlexSC, OSDI 2010).
 *
 * A slot of CALLRING_SLOT_SIZE bytes per vCPU in one page, shared by the guest
 * (mapped user read/write right after the call stubs' code page, where each vCPU
 * has its own copy of the stub, CALLRING_SLOT_SIZE bytes apart, so that every copy
 * finds its own ring one page after itself) and the VMM (through its mapping of
 * guest memory). One request at a time per ring. The guest writes the request, then bumps
 * REQUEST_SEQ; the host copies the request, serves it, writes the result and the
 * disposition, then sets RESPONSE_SEQ to the sequence number it served. Fields the
 * guest writes are never trusted: the host reads each once, into its own memory.
 */
#ifndef KVMDUNE_CALLRING_H
#define KVMDUNE_CALLRING_H

/* Bytes between two vCPUs' rings (and between their copies of the stub), and how
 * many fit in the page. */
#define CALLRING_SLOT_SIZE 512
#define CALLRING_SLOTS (4096 / CALLRING_SLOT_SIZE)

/* Guest -> host (the first cache line). */
#define CALLRING_REQUEST_SEQ 0x00
#define CALLRING_NR 0x08
#define CALLRING_ARG0 0x10          /* six arguments, 8 bytes apart */
/* Host -> guest (a cache line of its own, so the spinning sides do not collide). */
#define CALLRING_RESPONSE_SEQ 0x40
#define CALLRING_RESULT 0x48
#define CALLRING_DISPOSITION 0x50   /* CALLRING_DONE or CALLRING_SLOW */
#define CALLRING_HOST_STATE 0x58    /* a hint: CALLRING_HOST_SLEEPING, do not spin */
#define CALLRING_SPIN_BUDGET 0x5c   /* pause iterations to wait before exiting to the VMM */
/* Host -> guest: bit n asks the stub to hand VMM call CALLRING_VMM_CALLS + n to the
 * host thread first (a layer above serves some natively there); the others go to
 * the VMM at once. The guest can change its copy: it can only slow itself down. */
#define CALLRING_VMM_CALLS_ASKED 0x60
#define CALLRING_VMM_CALLS_ASKABLE 64
/* The guest stub's own scratch (what `syscall` left in RCX and R11, and RSP while
 * RFLAGS is restored with popfq from the ring instead of the guest's stack). */
#define CALLRING_SAVED_RCX 0x80
#define CALLRING_SAVED_R11 0x88
#define CALLRING_SAVED_RSP 0x90
/* Host -> guest: a bit per system call number below CALLRING_MAX_NR, set when the
 * host thread may serve it; the stub sends every other call straight to the VMM
 * (one exit, not a trip through the ring first). The guest can change its copy: it
 * only changes which of its own calls ask the thread first, which re-checks each. */
#define CALLRING_FAST_BITMAP 0xC0
#define CALLRING_MAX_NR 512

/* Call numbers from here on are the VMM's alone (the Dune API's hypercalls:
 * linux/privileged.py's HYPERCALL_BASE; a test checks they agree): the stub takes
 * the exit path at once, without waking the host thread only to be handed back
 * (as for every number from CALLRING_MAX_NR on). */
#define CALLRING_VMM_CALLS 0x00D00000

#define CALLRING_DONE 0
#define CALLRING_SLOW 1             /* take the exit path: the VMM serves the call */
/* Exit to wait (the wait target): the host thread handed the call to the vCPU's own
 * thread, which serves it (it waits for a pipe or socket) and answers in the ring,
 * the disposition DONE or SLOW then, before the guest resumes the stub. */
#define CALLRING_HANDOFF 2
#define CALLRING_HOST_AWAKE 0
#define CALLRING_HOST_SLEEPING 1

/* How long the guest spins for a response before it asks the VMM to wait for it:
 * at most ~40 us (~65 cycles per `pause` iteration); the VMM lowers the budget when
 * the host thread is not getting a core (the guest then exits sooner and the VMM
 * serves the call) and raises it again when the thread answers. */
#define CALLRING_GUEST_SPINS 1500
#define CALLRING_MIN_SPINS 50

/* The host thread writes the ring with plain stores only while answering a request:
 * the VMM's invalidations briefly make guest memory read-only on the host, and only
 * while the guest waits for an answer is the VMM sure not to be making one. The
 * HOST_STATE hint is written at other times, so it goes through process_vm_writev,
 * which fails (and the hint is skipped) where a store would fault. */

#endif
