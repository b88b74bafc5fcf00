/* The call stub: where `syscall` lands (MSR_LSTAR) when the fast path is on.
 *
 * It runs at CPL3, in a user page of its own (read-only, executable) followed by the
 * call ring page (callring.h), which it reaches RIP-relative. It stores the request
 * in the ring, spins until a host thread answers, and returns to the caller as
 * `sysret` would: RAX the result, RCX the return address, R11 and RFLAGS the
 * caller's flags. It never touches the guest's stack (the red zone below RSP may be
 * live): RFLAGS is restored with popfq from the ring, RSP pointing there briefly.
 *
 * Software KVM (kvm_pvm) runs `syscall` without leaving CPL3, so the stub runs as
 * user code there. On hardware KVM `syscall` enters CPL0; the stub then leaves at
 * once with `sysretq` to its own CPL3 part (5 instructions at CPL0).
 *
 * Calls the ring's bitmap does not mark as served by the host thread go to the VMM
 * at once (numbers from CALLRING_MAX_NR on too: the Dune API's hypercalls, from
 * CALLRING_VMM_CALLS, among them, unless CALLRING_VMM_CALLS_ASKED asks for one). Two ways out to the VMM, both jumps to supervisor
 * addresses the VMM patches into the stub (a CPL3 fetch there faults into the VMM
 * with RIP == CR2 == the target):
 * - the slow target, the trampoline's syscall entry: the VMM serves the call as if
 *   `syscall` had exited to it (RAX, RCX, R11 and the arguments as `syscall` left them);
 * - the wait target: the host thread sleeps (after a while without calls), or no
 *   answer came within CALLRING_GUEST_SPINS: the VMM wakes it, waits for the answer
 *   and resumes at RCX; also when the thread hands the call back to be served in
 *   the vCPU's own thread (CALLRING_HANDOFF: it would wait for a pipe or socket).
 *
 * This code is copied into guest memory as bytes and must be position-independent;
 * each vCPU has its own copy, CALLRING_SLOT_SIZE bytes after the previous one, so it
 * must fit in that many (callring.py checks).
 */
#include "callring.h"

#define RING(field) (kvmdune_callstub_start + 4096 + (field))(%rip)

    .section .rodata.kvmdune_callstub, "a"
    .code64
    .balign 16
    .globl kvmdune_callstub_start, kvmdune_callstub_end, kvmdune_callstub_resume
    .globl kvmdune_callstub_slow_target, kvmdune_callstub_wait_target
    .globl kvmdune_callstub_ring_entry
    /* Hidden: references inside the stub must resolve here, not through the GOT. */
    .hidden kvmdune_callstub_start, kvmdune_callstub_end, kvmdune_callstub_resume
    .hidden kvmdune_callstub_slow_target, kvmdune_callstub_wait_target
    .hidden kvmdune_callstub_ring_entry

kvmdune_callstub_start:
    movq %rcx, RING(CALLRING_SAVED_RCX)
    movq %r11, RING(CALLRING_SAVED_R11)
    movl %cs, %ecx
    testb $3, %cl
    jz 9f
/* Patched call sites (linux/sitepatch.py) enter here at CPL3, their own RCX and
 * RFLAGS already stored in the ring as `syscall` would have left them. */
kvmdune_callstub_ring_entry:
1:  cmpq $CALLRING_MAX_NR, %rax
    jae 8f
    btq %rax, RING(CALLRING_FAST_BITMAP)
    jnc 7f                                      /* the thread would hand it back */
10: movq %rax, RING(CALLRING_NR)
    movq %rdi, RING(CALLRING_ARG0)
    movq %rsi, RING(CALLRING_ARG0 + 8)
    movq %rdx, RING(CALLRING_ARG0 + 16)
    movq %r10, RING(CALLRING_ARG0 + 24)
    movq %r8, RING(CALLRING_ARG0 + 32)
    movq %r9, RING(CALLRING_ARG0 + 40)
    movq RING(CALLRING_REQUEST_SEQ), %rax
    incq %rax
    movq %rax, RING(CALLRING_REQUEST_SEQ)       /* published: stores are seen in order */
    cmpl $CALLRING_HOST_SLEEPING, RING(CALLRING_HOST_STATE)
    je 4f                                       /* no use spinning: the VMM wakes it */
2:  movl RING(CALLRING_SPIN_BUDGET), %ecx
3:  cmpq %rax, RING(CALLRING_RESPONSE_SEQ)
    je 5f
    pause
    decl %ecx
    jnz 3b                                      /* (a budget of 0 spins 2^32 times) */
4:  leaq kvmdune_callstub_resume(%rip), %rcx    /* the VMM waits, then resumes there */
    jmpq *kvmdune_callstub_wait_target(%rip)
kvmdune_callstub_resume:
    movq RING(CALLRING_REQUEST_SEQ), %rax
    jmp 2b
5:  cmpl $CALLRING_DONE, RING(CALLRING_DISPOSITION)
    jne 6f
    movq RING(CALLRING_RESULT), %rax
    movq RING(CALLRING_SAVED_RCX), %rcx
    movq %rsp, RING(CALLRING_SAVED_RSP)
    leaq RING(CALLRING_SAVED_R11), %rsp
    popfq
    movq RING(CALLRING_SAVED_RSP), %rsp
    movq RING(CALLRING_SAVED_R11), %r11
    jmpq *%rcx
6:  cmpl $CALLRING_HANDOFF, RING(CALLRING_DISPOSITION)
    je 4b                                       /* the vCPU's thread serves it: wait */
    movq RING(CALLRING_NR), %rax                /* the VMM serves this one */
7:  movq RING(CALLRING_SAVED_RCX), %rcx
    movq RING(CALLRING_SAVED_R11), %r11
    jmpq *kvmdune_callstub_slow_target(%rip)
8:  leaq -CALLRING_VMM_CALLS(%rax), %rcx        /* RCX and R11 are saved: scratch */
    cmpq $(CALLRING_VMM_CALLS_ASKABLE - 1), %rcx
    ja 7b
    movq RING(CALLRING_VMM_CALLS_ASKED), %r11
    btq %rcx, %r11
    jnc 7b                                      /* a VMM call not asked for: exit */
    jmp 10b
9:  leaq 1b(%rip), %rcx                         /* CPL0 (hardware KVM): leave at once */
    sysretq

    .balign 8
kvmdune_callstub_slow_target:
    .quad 0
kvmdune_callstub_wait_target:
    .quad 0
kvmdune_callstub_end:

    .section .note.GNU-stack, "", @progbits
