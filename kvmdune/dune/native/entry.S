/* The upcall entry: where the VMM starts the program's handlers (kvmdune/upcall.h).
 *
 * Runs at CPL3 on the thread's handler stack, RSP = RDI = the frame. It saves the
 * FPU/SSE/AVX state below the frame, calls the C dispatcher, restores the state, and
 * returns to what was interrupted: the program itself with `iretq` from the frame's
 * tf (CPL3 to CPL3: no VMM round trip), user code through KVMDUNE_HC_RESUME_USER.
 */
#include "kvmdune/hypercall.h"
#include "kvmdune/upcall.h"

    .text
    .globl kvmdune_upcall_entry
    .hidden kvmdune_upcall_entry
    .type kvmdune_upcall_entry, @function
    .balign 16
kvmdune_upcall_entry:
    .cfi_startproc
    .cfi_undefined rip                /* the bottom of a backtrace */
    movq %rsp, %rbx                   /* the frame, kept across the call */
    subq kvmdune_fpu_area_size(%rip), %rsp
    andq $-64, %rsp
    xorl %eax, %eax                   /* XRSTOR refuses junk in the XSAVE header */
    movq %rax, 512(%rsp)
    movq %rax, 520(%rsp)
    movq %rax, 528(%rsp)
    movq %rax, 536(%rsp)
    movq %rax, 544(%rsp)
    movq %rax, 552(%rsp)
    movq %rax, 560(%rsp)
    movq %rax, 568(%rsp)
    cmpb $0, kvmdune_fpu_uses_xsave(%rip)
    je 1f
    movl $-1, %eax
    movl $-1, %edx
    xsave64 (%rsp)
    jmp 2f
1:  fxsave64 (%rsp)
2:  movq %rbx, %rdi
    call kvmdune_upcall_dispatch
    cmpb $0, kvmdune_fpu_uses_xsave(%rip)
    je 3f
    movl $-1, %eax
    movl $-1, %edx
    xrstor64 (%rsp)
    jmp 4f
3:  fxrstor64 (%rsp)
4:  movq %rbx, %rsp
    testq $KVMDUNE_UPCALL_FROM_USER, KVMDUNE_UPCALL_FLAGS(%rsp)
    jnz 5f
    movq %rsp, %rdi
    jmp kvmdune_pop_tf
5:  movq %rsp, %rdi                   /* user code: the VMM resumes it */
    movq KVMDUNE_UPCALL_FS_BASE(%rsp), %rsi
    movl $(KVMDUNE_HYPERCALL_BASE + KVMDUNE_HC_RESUME_USER), %eax
    syscall
    movq %rax, %rdi                   /* only a refused resume comes back */
    andq $-16, %rsp
    call kvmdune_resume_failed
    ud2
    .cfi_endproc
    .size kvmdune_upcall_entry, . - kvmdune_upcall_entry

/* kvmdune_pop_tf(struct dune_tf *tf): load every register of tf and continue at
 * tf->rip with tf->rsp and tf->rflags, at CPL3. */
    .globl kvmdune_pop_tf
    .hidden kvmdune_pop_tf
    .type kvmdune_pop_tf, @function
    .balign 16
kvmdune_pop_tf:
    movq $KVMDUNE_USER_CS, KVMDUNE_TF_CS(%rdi)
    movq $KVMDUNE_USER_DS, KVMDUNE_TF_SS(%rdi)
    movq %rdi, %rsp
    movq KVMDUNE_TF_RSI(%rsp), %rsi
    movq KVMDUNE_TF_RDX(%rsp), %rdx
    movq KVMDUNE_TF_RCX(%rsp), %rcx
    movq KVMDUNE_TF_R8(%rsp), %r8
    movq KVMDUNE_TF_R9(%rsp), %r9
    movq KVMDUNE_TF_R10(%rsp), %r10
    movq KVMDUNE_TF_R11(%rsp), %r11
    movq KVMDUNE_TF_RBX(%rsp), %rbx
    movq KVMDUNE_TF_RBP(%rsp), %rbp
    movq KVMDUNE_TF_R12(%rsp), %r12
    movq KVMDUNE_TF_R13(%rsp), %r13
    movq KVMDUNE_TF_R14(%rsp), %r14
    movq KVMDUNE_TF_R15(%rsp), %r15
    movq KVMDUNE_TF_RAX(%rsp), %rax
    movq KVMDUNE_TF_RDI(%rsp), %rdi
    leaq KVMDUNE_TF_RIP(%rsp), %rsp
    iretq
    .size kvmdune_pop_tf, . - kvmdune_pop_tf

    .section .note.GNU-stack, "", @progbits
