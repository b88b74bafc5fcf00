/* Native code that runs a vCPU (a KVM_RUN loop with the GIL released) takes some
 * exits itself and enters the guest again the way the run loop does (machine/cpu.py):
 * what it must know of the vCPU's supervisor area (cpu.py's native_run_parameters),
 * how an exception entry's exit is read (_exception_event), and how user code is
 * resumed through the trampoline's `iretq` (_write_iret_frame).
 *
 * Used by the Dune API's upcalls (dune/vmm_native/upcall.c) and the Linux fast
 * path's wait runner (linux/native/waitrunner.c). */
#ifndef KVMDUNE_REENTRY_H
#define KVMDUNE_REENTRY_H

#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#include "trampoline.h"

#define KVMDUNE_RFLAGS_IF 0x200ULL    /* RFLAGS.IF, the interrupt flag */

/* What `iretq` pops: rip, cs, rflags, rsp, ss. */
#define KVMDUNE_IRET_FRAME_WORDS 5
#define KVMDUNE_PF_VECTOR 14
/* User code's selectors (layout.py's USER_CS, USER_DS; the modules export them and
 * their Python side checks they agree). */
#define KVMDUNE_REENTRY_USER_CS 0x33
#define KVMDUNE_REENTRY_USER_DS 0x2b

/* One vCPU's supervisor area and entries (fixed for the vCPU). */
struct kvmdune_reentry {
    uint8_t *memory;                /* guest memory in this address space */
    uint64_t memory_size;
    uint64_t iret_rip, iret_frame, iret_frame_paddr;
    uint64_t exception_stack, exception_stack_paddr, exception_stack_size;
    uint64_t syscall_entry;         /* a CPL3 #PF with RIP == CR2 here is a `syscall` */
    uint64_t call_wait_target;      /* ... here the call stub's wait */
    uint64_t user_rflags, user_rflags_fixed, supervisor_rflags, user_end;
    uint32_t vectors_with_error;
};

/* An exception entry's exit from CPL3: its vector, the error code and the user's
 * RIP, RFLAGS, RSP. */
struct kvmdune_exception {
    unsigned vector;
    uint64_t error, rip, rflags, rsp;
};

/* Whether the areas lie inside guest memory (checked once, when configured). */
static inline int kvmdune_reentry_valid(const struct kvmdune_reentry *m) {
    return m->memory != NULL && m->iret_frame_paddr <= m->memory_size
        && m->memory_size - m->iret_frame_paddr >= KVMDUNE_IRET_FRAME_WORDS * 8
        && m->exception_stack_paddr <= m->memory_size
        && m->memory_size - m->exception_stack_paddr >= m->exception_stack_size
        && m->exception_stack_size >= (KVMDUNE_IRET_FRAME_WORDS + 1) * 8;
}

static inline volatile uint64_t *kvmdune_guest_word(const struct kvmdune_reentry *m,
                                                    uint64_t paddr) {
    if (paddr & 7 || paddr >= m->memory_size || m->memory_size - paddr < 8)
        return NULL;
    return (volatile uint64_t *)(m->memory + paddr);
}

/* The exception entry's exit in `run`, from CPL3: 1 with *e filled, else 0 (another
 * exit, or one at CPL0: the run loop's error to report). */
static inline int kvmdune_exception_of(const struct kvmdune_reentry *m, struct kvm_run *run,
                                       struct kvmdune_exception *e) {
    if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT
        || run->io.port < KVMDUNE_EXCEPTION_PORT_BASE)
        return 0;
    e->vector = (unsigned)run->io.port - KVMDUNE_EXCEPTION_PORT_BASE;
    if (e->vector >= KVMDUNE_EXCEPTION_VECTORS)
        return 0;
    struct kvm_regs *regs = &run->s.regs.regs;
    int has_error = m->vectors_with_error >> e->vector & 1;
    uint64_t frame_bytes = (KVMDUNE_IRET_FRAME_WORDS + has_error) * 8;
    uint64_t offset = regs->rsp - m->exception_stack;
    if (regs->rsp < m->exception_stack || offset > m->exception_stack_size - frame_bytes)
        return 0;
    uint64_t words[KVMDUNE_IRET_FRAME_WORDS + 1];
    for (int i = 0; i < KVMDUNE_IRET_FRAME_WORDS + has_error; i++) {
        volatile uint64_t *word = kvmdune_guest_word(m, m->exception_stack_paddr + offset + i * 8);
        if (word == NULL)
            return 0;
        words[i] = *word;
    }
    const uint64_t *iret = words + has_error;
    if ((iret[1] & 3) != 3)
        return 0;
    e->error = has_error ? words[0] : 0;
    e->rip = iret[0];
    /* User code always runs with IF set (CPL3 cannot clear it); the copy this
     * software KVM pushes sometimes lacks it (cpu.py's _exception_event says so). */
    e->rflags = iret[2] | KVMDUNE_RFLAGS_IF;
    e->rsp = iret[3];
    return 1;
}

/* Back to CPL3 at rip/rsp with `rflags` through the trampoline's `iretq`. */
static inline void kvmdune_resume_user(const struct kvmdune_reentry *m, struct kvm_run *run,
                                       uint64_t rip, uint64_t rflags, uint64_t rsp) {
    struct kvm_regs *regs = &run->s.regs.regs;
    const uint64_t out[KVMDUNE_IRET_FRAME_WORDS] = {
        rip, KVMDUNE_REENTRY_USER_CS, (rflags & m->user_rflags) | m->user_rflags_fixed, rsp,
        KVMDUNE_REENTRY_USER_DS};
    memcpy(m->memory + m->iret_frame_paddr, out, sizeof out);
    regs->rip = m->iret_rip;
    regs->rsp = m->iret_frame;
    regs->rflags = m->supervisor_rflags;
    run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
}

/* Whether the exception is the call stub's wait (cpu.py: a #PF with RIP == CR2 ==
 * the wait target, the stub's resume address in RCX, a user address). */
static inline int kvmdune_is_call_wait(const struct kvmdune_reentry *m, struct kvm_run *run,
                                       const struct kvmdune_exception *e) {
    return e->vector == KVMDUNE_PF_VECTOR && e->rip == m->call_wait_target
        && run->s.regs.sregs.cr2 == e->rip && run->s.regs.regs.rcx < m->user_end;
}

/* KVM_RUN until an exit that is no exception entry's or that `take` declines (0):
 * the exits taken; *error the errno of a KVM_RUN that failed (EINTR: interrupted, a
 * kick) or 0. With the GIL released: the caller's loop, before Python decodes. */
typedef int (*kvmdune_exit_taker)(void *context, struct kvm_run *run,
                                  const struct kvmdune_exception *e);

static inline long kvmdune_run_taking(const struct kvmdune_reentry *m, int fd,
                                      struct kvm_run *run, kvmdune_exit_taker take,
                                      void *context, int *error) {
    long handled = 0;
    *error = 0;
    for (;;) {
        struct kvmdune_exception e;
        if (ioctl(fd, KVM_RUN, 0) < 0) {
            *error = errno;
            return handled;
        }
        if (!kvmdune_exception_of(m, run, &e) || !take(context, run, &e))
            return handled;
        handled++;
    }
}

#endif
