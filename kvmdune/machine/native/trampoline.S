/* The kvmdune ring-0 trampoline: every entry into CPL0, two instructions each.
 *
 * Entries never touch the stack they arrive on. `syscall` arrives on the guest's own
 * (hostile) RSP, with the red zone below it possibly live: the entry exits at once,
 * and the VMM points RSP at an iret frame it wrote on a supervisor-only stack before
 * the `iretq` runs. Exceptions arrive through IDT gates with IST1, so the CPU itself
 * switches to a fixed stack before it pushes the exception frame.
 *
 * This code is copied into guest memory as bytes and must be position-independent.
 */
#include "trampoline.h"

    .section .rodata.kvmdune_trampoline, "a"
    .code64
    .balign 16
    .globl kvmdune_trampoline_start, kvmdune_trampoline_end
    .globl kvmdune_syscall_entry, kvmdune_iret, kvmdune_bad_entry
    .globl kvmdune_exception_entries, kvmdune_tlb_flush

kvmdune_trampoline_start:
kvmdune_syscall_entry:          /* MSR_LSTAR: RCX = user RIP, R11 = user RFLAGS */
    outb %al, $KVMDUNE_SYSCALL_PORT
kvmdune_iret:                   /* the one way back to CPL3 */
    iretq

    .balign KVMDUNE_EXCEPTION_STRIDE
kvmdune_bad_entry:              /* MSR_CSTAR: no 32-bit code segment exists */
    outb %al, $KVMDUNE_BAD_ENTRY_PORT
    iretq

    .balign KVMDUNE_EXCEPTION_STRIDE
kvmdune_tlb_flush:              /* hardware KVM, after a restricting page-table change: */
    movq %rax, %cr3             /* RAX = CR3 (set by the VMM); the reload flushes the */
    outb %al, $KVMDUNE_TLB_FLUSH_PORT  /* guest's TLB. Software KVM ignores it. */

    .balign KVMDUNE_EXCEPTION_STRIDE
kvmdune_exception_entries:      /* IDT vectors 0..31, KVMDUNE_EXCEPTION_STRIDE apart */
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign KVMDUNE_EXCEPTION_STRIDE
    outb %al, $(KVMDUNE_EXCEPTION_PORT_BASE + \vector)
    iretq
    .endr
kvmdune_trampoline_end:

    .section .note.GNU-stack, "", @progbits
