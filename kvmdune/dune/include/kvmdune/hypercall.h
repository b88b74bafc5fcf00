/* The kvmdune hypercall ABI: how a Dune-mode program asks the VMM for privileged
 * operations (its page tables, its traps, running code at "user" privilege).
 *
 * A hypercall is a `syscall` instruction whose number (RAX) is
 * KVMDUNE_HYPERCALL_BASE + op, with up to six arguments in RDI, RSI, RDX, R10, R8,
 * R9 as for Linux system calls, and the result in RAX: >= 0 on success, -errno on
 * failure. `vmcall`/`vmmcall` are not used: at CPL3 they never reach the VMM (#UD,
 * or KVM's -KVM_EPERM).
 *
 * The numbers are far above any Linux system call, so on Linux itself (a program
 * started natively) every hypercall fails with -ENOSYS: KVMDUNE_HC_PROBE is how a
 * program learns whether it runs under kvmdune.
 *
 * Only the program itself can make hypercalls. Code the program runs at "user"
 * privilege (dune_jump_to_user) cannot: its `syscall` reaches the program's system
 * call handler, never the VMM.
 *
 * kvmdune/dune/hypercall.py mirrors these numbers (a test checks they agree).
 */
#ifndef KVMDUNE_HYPERCALL_H
#define KVMDUNE_HYPERCALL_H

#define KVMDUNE_HYPERCALL_BASE  0x00D00000

/* A program linked with libkvmdune carries an ELF note (PT_NOTE) of owner
 * "kvmdune" and this type: kvmdune's loader then leaves its system-call sites
 * unpatched (its user code and roots map no call ring for a patched site). */
#define KVMDUNE_NOTE_OWNER "kvmdune"
#define KVMDUNE_NOTE_DUNE_API 1
#define KVMDUNE_HYPERCALL_COUNT 64
#define KVMDUNE_ABI_VERSION     1

/* entry, traps and user mode */
#define KVMDUNE_HC_PROBE          0   /* () -> KVMDUNE_ABI_VERSION */
#define KVMDUNE_HC_INIT           1   /* (map_full) -> pgroot */
#define KVMDUNE_HC_ENTER          2   /* (upcall_entry, stack_base, stack_size) -> 0;
                                         (0, 0, 0): the thread has no handler stack
                                         any more (its upcalls act as before ENTER) */
#define KVMDUNE_HC_SET_TRAP       3   /* (kind, number, on) -> 0 */
#define KVMDUNE_HC_JUMP_TO_USER   4   /* (struct dune_tf *, user_fs_base) -> ret of
                                         dune_ret_from_user; the tf then holds user
                                         code's final registers */
#define KVMDUNE_HC_RET_FROM_USER  5   /* (ret): does not return */
#define KVMDUNE_HC_RESUME_USER    6   /* (struct dune_tf *, user_fs_base): does not
                                         return */
/* The upcall frame the VMM writes for ENTER's entry: kvmdune/upcall.h. */

/* page tables */
#define KVMDUNE_HC_VM_MPROTECT   16   /* (root, va, len, perm) */
#define KVMDUNE_HC_VM_MAP_PHYS   17   /* (root, va, len, pa, perm) */
#define KVMDUNE_HC_VM_MAP_PAGES  18   /* (root, va, len, perm) */
#define KVMDUNE_HC_VM_UNMAP      19   /* (root, va, len) */
#define KVMDUNE_HC_VM_LOOKUP     20   /* (root, va, create, ptent_t **out) */
#define KVMDUNE_HC_VM_CLONE      21   /* (root) -> new root */
#define KVMDUNE_HC_VM_FREE       22   /* (root) */
#define KVMDUNE_HC_VM_SYNC       23   /* (root, start_va, end_va): entries current */
#define KVMDUNE_HC_FLUSH_TLB     24   /* (va, len): len 0 flushes everything */
#define KVMDUNE_HC_LOAD_CR3      25   /* (cr3) */
#define KVMDUNE_HC_VA_TO_PA      26   /* (va) -> guest-physical address */
#define KVMDUNE_HC_VM_BITS       27   /* (root, va, len, bits, bitmap, flags) -> pages set */

/* KVMDUNE_HC_SET_TRAP kinds */
#define KVMDUNE_TRAP_PGFLT        0
#define KVMDUNE_TRAP_VECTOR       1   /* number: an exception vector, 0..31 */
#define KVMDUNE_TRAP_SIGNAL       2   /* number: a signal, delivered as vector
                                         DUNE_SIGNAL_INTR_BASE + signal */
#define KVMDUNE_TRAP_SYSCALL      3   /* system calls of user code */

/* KVMDUNE_HC_VM_BITS flags */
#define KVMDUNE_BITS_CLEAR        1   /* clear the bits read (for this reader) */

#endif
