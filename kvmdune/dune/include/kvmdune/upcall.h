/* The upcall frame: how the VMM hands a fault, an exception, a signal or a system
 * call of user code to the program's handler (the Dune API's trap delivery).
 *
 * The VMM writes a struct kvmdune_upcall (dune.h) on the thread's handler stack
 * (registered with KVMDUNE_HC_ENTER) and starts the library's upcall entry at CPL3
 * with RSP = RDI = the frame's address (KVMDUNE_UPCALL_ALIGN-aligned); every other
 * register is undefined, RFLAGS is 0x202. The frame holds:
 *
 *   0   struct dune_tf tf   the interrupted registers, libdune's packed layout
 *   168 kind               KVMDUNE_TRAP_* (hypercall.h): what happened
 *   176 vector             14 (T_PGFLT), the exception vector, or
 *                          DUNE_SIGNAL_INTR_BASE + signal; the call number for
 *                          KVMDUNE_TRAP_SYSCALL
 *   184 addr               the faulting address (CR2) of a page fault, else 0
 *   192 fec                the error code the CPU pushed (also in tf.err), else 0
 *   200 flags              KVMDUNE_UPCALL_FROM_USER: it interrupted user code
 *                          (dune_jump_to_user); else it interrupted the program
 *   208 fs_base            the FS base of the interrupted code
 *   216 reserved           0
 *
 * A system call of user code is in tf as libdune puts it: tf.rax the number,
 * ARG0..ARG5 = rdi, rsi, rdx, rcx (user code's r10), r8, r9; tf.rip the instruction
 * after the `syscall`; tf.rflags its RFLAGS. Resuming it loads r10 from tf.rcx and
 * sets rcx = tf.rip, r11 = tf.rflags, as `sysret` leaves them.
 *
 * Where: interrupting user code or the program outside its handler stack, the frame
 * ends at the top of the handler stack; interrupting code already on it (a nested
 * fault in a handler), it ends KVMDUNE_RED_ZONE bytes below the interrupted RSP
 * (for user code started from a handler: below that handler's RSP at the start).
 * Nothing is ever written below the interrupted RSP's red zone. A frame that would
 * leave less than KVMDUNE_UPCALL_STACK_RESERVE bytes below it on the handler stack,
 * or that cannot be written, ends the process with a crash report.
 *
 * Returning: for the program, the library restores tf with `iretq` at CPL3 (no
 * VMM round trip; CS and SS are forced to the user selectors); for user code it
 * asks the VMM with KVMDUNE_HC_RESUME_USER(&frame->tf, fs_base).
 *
 * kvmdune/dune/hypercall.py mirrors these numbers (a test checks they agree).
 */
#ifndef KVMDUNE_UPCALL_H
#define KVMDUNE_UPCALL_H

/* struct dune_tf */
#define KVMDUNE_TF_RDI     0
#define KVMDUNE_TF_RSI     8
#define KVMDUNE_TF_RDX     16
#define KVMDUNE_TF_RCX     24
#define KVMDUNE_TF_R8      32
#define KVMDUNE_TF_R9      40
#define KVMDUNE_TF_R10     48
#define KVMDUNE_TF_R11     56
#define KVMDUNE_TF_RBX     64
#define KVMDUNE_TF_RBP     72
#define KVMDUNE_TF_R12     80
#define KVMDUNE_TF_R13     88
#define KVMDUNE_TF_R14     96
#define KVMDUNE_TF_R15     104
#define KVMDUNE_TF_RAX     112
#define KVMDUNE_TF_ERR     120
#define KVMDUNE_TF_RIP     128   /* rip, cs, rflags, rsp, ss: an iretq frame */
#define KVMDUNE_TF_CS      136
#define KVMDUNE_TF_RFLAGS  144
#define KVMDUNE_TF_RSP     152
#define KVMDUNE_TF_SS      160
#define KVMDUNE_TF_SIZE    168

/* struct kvmdune_upcall */
#define KVMDUNE_UPCALL_KIND     168
#define KVMDUNE_UPCALL_VECTOR   176
#define KVMDUNE_UPCALL_ADDR     184
#define KVMDUNE_UPCALL_FEC      192
#define KVMDUNE_UPCALL_FLAGS    200
#define KVMDUNE_UPCALL_FS_BASE  208
#define KVMDUNE_UPCALL_SIZE     224

#define KVMDUNE_UPCALL_FROM_USER 1

#define KVMDUNE_UPCALL_ALIGN          64
#define KVMDUNE_RED_ZONE              128
#define KVMDUNE_UPCALL_STACK_RESERVE  4096   /* the FPU save area and a handler's call */

/* The selectors user code and the program run with (kvmdune's GDT, as Linux's). */
#define KVMDUNE_USER_CS 0x33
#define KVMDUNE_USER_DS 0x2b

#endif
