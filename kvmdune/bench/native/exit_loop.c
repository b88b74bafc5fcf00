/* The KVM_RUN loop of `kvmdune bench exits`: how much one exit to the VMM costs,
 * for each way guest CPL3 code can leave for it (bench/exits.py builds the guests).
 *
 * Built as a shared object and called through ctypes with the vCPU's fd and its
 * kvm_run (KVM_CAP_SYNC_REGS on). It takes `count` exits of one kind, re-entering
 * the guest after each the way the run loops would, and stops at the first exit of
 * any other kind (the caller reports it). Times are the calling thread's CPU time
 * (guest time is charged to it: a loaded machine's other jobs do not count) and
 * wall time. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

enum exit_kind {
    WAIT_EXIT = 0,    /* today's: a CPL3 jump to a supervisor address, #PF, `out` */
    MMIO_WRITE = 1,   /* a store to guest-physical memory no slot backs */
    PORT_OUT = 2,     /* an `out` to one port */
};

/* What the loop needs of the machine (Cpu.native_run_parameters' values). */
struct exit_loop {
    uint8_t *memory;
    uint64_t iret_rip, iret_frame, iret_frame_paddr;
    uint64_t exception_stack, exception_stack_paddr, exception_stack_size;
    uint64_t user_rflags, user_rflags_fixed, supervisor_rflags;
    uint64_t user_cs, user_ss, page_fault_port;
    uint64_t expected;    /* the wait target, the MMIO address or the port */
};

struct exit_times {
    uint64_t cpu_ns, wall_ns;
    int32_t last_reason;  /* the exit that ended the loop (or -errno) */
};

#define IRET_FRAME_WORDS 5

static uint64_t clock_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

/* Back to CPL3 at rip/rsp through the trampoline's `iretq`, as cpu.py does. */
void exit_loop_enter_user(const struct exit_loop *loop, struct kvm_run *run, uint64_t rip,
                          uint64_t rsp, uint64_t rflags) {
    struct kvm_regs *regs = &run->s.regs.regs;
    const uint64_t frame[IRET_FRAME_WORDS] = {rip, loop->user_cs, rflags, rsp, loop->user_ss};
    memcpy(loop->memory + loop->iret_frame_paddr, frame, sizeof frame);
    regs->rip = loop->iret_rip;
    regs->rsp = loop->iret_frame;
    regs->rflags = loop->supervisor_rflags;
    run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
}

/* Today's wait exit: a #PF at CPL3 with RIP == CR2 == the wait target; resumed at
 * RCX (the stub's resume point). 0 when the exit is not that. */
static int resume_wait(const struct exit_loop *loop, struct kvm_run *run) {
    struct kvm_regs *regs = &run->s.regs.regs;
    if (run->exit_reason != KVM_EXIT_IO || run->io.port != loop->page_fault_port)
        return 0;
    uint64_t offset = regs->rsp - loop->exception_stack;
    if (regs->rsp < loop->exception_stack
        || offset > loop->exception_stack_size - (IRET_FRAME_WORDS + 1) * 8)
        return 0;
    uint64_t words[IRET_FRAME_WORDS + 1];   /* error code, rip, cs, rflags, rsp, ss */
    memcpy(words, loop->memory + loop->exception_stack_paddr + offset, sizeof words);
    if (words[1] != loop->expected || run->s.regs.sregs.cr2 != loop->expected)
        return 0;
    exit_loop_enter_user(loop, run, regs->rcx,
                         words[4], (words[3] & loop->user_rflags) | loop->user_rflags_fixed);
    return 1;
}

static int expected_exit(const struct exit_loop *loop, struct kvm_run *run, int kind) {
    switch (kind) {
    case WAIT_EXIT:
        return resume_wait(loop, run);
    case MMIO_WRITE:
        return run->exit_reason == KVM_EXIT_MMIO && run->mmio.is_write
               && run->mmio.phys_addr == loop->expected;
    case PORT_OUT:
        return run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT
               && run->io.port == loop->expected;
    }
    return 0;
}

/* `count` exits of `kind`: how many were taken before another exit came. */
long exit_loop_run(const struct exit_loop *loop, int fd, struct kvm_run *run, int kind,
                   long count, struct exit_times *times) {
    long taken = 0;
    uint64_t cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID), wall = clock_ns(CLOCK_MONOTONIC);
    times->last_reason = 0;
    while (taken < count) {
        if (ioctl(fd, KVM_RUN, 0) < 0) {
            times->last_reason = -errno;
            break;
        }
        times->last_reason = (int32_t)run->exit_reason;
        if (!expected_exit(loop, run, kind))
            break;
        taken++;
    }
    times->cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu;
    times->wall_ns = clock_ns(CLOCK_MONOTONIC) - wall;
    return taken;
}
