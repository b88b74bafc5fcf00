/* The ring-0 trampoline's contract with the VMM: the I/O ports its entries signal on.
 *
 * Every path into CPL0 is one `out` (an exit to the VMM, which reads the port to know
 * why) followed by one `iretq` (back to CPL3 through a frame the VMM wrote on a fixed
 * supervisor stack). Budget: 2 instructions per path; CPL0 code is emulated on
 * software KVM, so each one costs about a microsecond there.
 */
#ifndef KVMDUNE_TRAMPOLINE_H
#define KVMDUNE_TRAMPOLINE_H

#define KVMDUNE_SYSCALL_PORT 0x70        /* `syscall` from CPL3 (MSR_LSTAR) */
#define KVMDUNE_BAD_ENTRY_PORT 0x71      /* an entry that must never be used (MSR_CSTAR) */
#define KVMDUNE_TLB_FLUSH_PORT 0x72      /* the guest flushed its TLB (hardware KVM only) */
#define KVMDUNE_EXCEPTION_PORT_BASE 0x80 /* + vector, for vectors 0..31 */
#define KVMDUNE_EXCEPTION_VECTORS 32
#define KVMDUNE_EXCEPTION_STRIDE 8       /* bytes between exception entries */

#endif
