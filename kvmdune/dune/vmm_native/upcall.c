/* The Dune API's upcalls delivered without Python: a vCPU's KVM_RUN loop that takes
 * the exits of the program's faults and exceptions its handlers trap, writes the
 * upcall frame on the thread's handler stack and re-enters the guest at the
 * library's upcall entry, all with the GIL released. Anything else returns to the
 * run loop in Python (kvmdune/machine/cpu.py), which decodes the exit as before.
 *
 * It delivers only what kvmdune/dune/process.py's `_upcall` would deliver, with the
 * same bytes: an exception entry's exit (include/kvmdune/upcall.h, trampoline.h)
 * from CPL3 of the program in its own view (CR3 = the program view's), for
 *   - a page fault at an address pgroot's mirror restricts (upcall.h's check, the
 *     native side of vm.py's restricts), with the program's pgflt handler on;
 *   - an exception vector the program traps;
 * when the thread's handler stack (ENTER) takes the frame (at least
 * KVMDUNE_UPCALL_STACK_RESERVE left below it) and every byte of the frame is
 * present, user-accessible and writable in the program view now. Everything else
 * (user code running, a fault demand paging resolves, a Linux-style SIGSEGV, a
 * system call's or the call stub's fault, a stack page not backed yet, the
 * process's lock held by the VMM) goes to Python untouched. The library saves the
 * FPU/SSE/AVX state itself (the VMM never does), as on the Python path.
 *
 * The frame is written with the process's lock held (proclock.h, tried, never
 * waited for), so no VMM change of the page tables is half seen; A and D are set in
 * the frame's leaf entries as AddressSpace.translate sets them for a write. The
 * re-entry is the run loop's own: the user registers go into the iret frame on the
 * vCPU's supervisor stack and the vCPU resumes at the trampoline's `iretq`.
 *
 * DuneProcess keeps each vCPU's configuration current (configure) whenever the
 * handler stack, the traps or user code's run change. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../include/kvmdune/upcall.h"
#include "../../linux/native/call_wait.h"
#include "../../linux/native/proclock.h"
#include "../../machine/native/reentry.h"
#include "upcall.h"

/* x86-64 paging (Intel SDM). */
#define PTE_P 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_US 0x4ULL
#define PTE_A 0x20ULL
#define PTE_D 0x40ULL
#define PTE_PS 0x80ULL
#define PTE_ADDRESS 0x000FFFFFFFFFF000ULL
#define PAGE_SIZE 4096ULL
#define LEVELS 4

/* include/kvmdune/hypercall.h's KVMDUNE_TRAP_PGFLT, _VECTOR. */
#define TRAP_PGFLT 0
#define TRAP_VECTOR 1
#if KVMDUNE_REENTRY_USER_CS != KVMDUNE_USER_CS || KVMDUNE_REENTRY_USER_DS != KVMDUNE_USER_DS
#error "reentry.h's user selectors disagree with upcall.h's"
#endif

typedef struct {
    PyObject_HEAD
    struct kvmdune_reentry m;        /* the machine (fixed for the vCPU) */
    uint32_t *process_lock;
    /* The process and the thread (configure). */
    int enabled;
    uint64_t program_cr3;
    int page_faults;
    uint32_t vectors;                /* trapped exception vectors (bit per vector) */
    uint64_t entry, stack_base, stack_top;
    PyObject *check_capsule;
    struct kvmdune_fault_check *check;
    uint64_t delivered, declined, waits;
} NativeUpcalls;

/* The guest-physical address of `vaddr` for a user write through the program view,
 * with its leaf entry; 0 when any level is missing or forbids it (the VMM's path
 * then pages it in or refuses it). */
static uint64_t user_write_paddr(NativeUpcalls *u, uint64_t vaddr, volatile uint64_t **leaf) {
    uint64_t table = u->program_cr3 & PTE_ADDRESS;
    for (int level = LEVELS; level >= 1; level--) {
        unsigned shift = 12 + 9 * (level - 1);
        volatile uint64_t *slot =
            kvmdune_guest_word(&u->m, table + ((vaddr >> shift) & 511) * 8);
        if (slot == NULL)
            return 0;
        uint64_t entry = *slot;
        if ((entry & (PTE_P | PTE_RW | PTE_US)) != (PTE_P | PTE_RW | PTE_US))
            return 0;
        if (level == 1 || (entry & PTE_PS)) {
            uint64_t span = 1ULL << shift;
            uint64_t paddr = (entry & PTE_ADDRESS & ~(span - 1)) | (vaddr & (span - 1));
            if (paddr >= u->m.memory_size)
                return 0;
            *leaf = slot;
            return paddr;
        }
        table = entry & PTE_ADDRESS;
    }
    return 0;
}

/* The frame's bytes into the program view at `frame` (it may span two pages):
 * every page checked before any byte is written. 0, or -1 untouched. */
static int write_frame(NativeUpcalls *u, uint64_t frame, const uint8_t *data) {
    volatile uint64_t *leaves[2];
    uint64_t paddrs[2], sizes[2];
    int pieces = 0;
    for (uint64_t cursor = frame, end = frame + KVMDUNE_UPCALL_SIZE; cursor < end;) {
        uint64_t size = PAGE_SIZE - (cursor & (PAGE_SIZE - 1));
        if (size > end - cursor)
            size = end - cursor;
        if (pieces == 2)
            return -1;
        paddrs[pieces] = user_write_paddr(u, cursor, &leaves[pieces]);
        if (paddrs[pieces] == 0 || u->m.memory_size - paddrs[pieces] < size)
            return -1;
        sizes[pieces++] = size;
        cursor += size;
    }
    uint64_t offset = 0;
    for (int i = 0; i < pieces; i++) {
        if ((*leaves[i] & (PTE_A | PTE_D)) != (PTE_A | PTE_D))
            __atomic_fetch_or(leaves[i], PTE_A | PTE_D, __ATOMIC_RELAXED);
        memcpy(u->m.memory + paddrs[i], data + offset, sizes[i]);
        offset += sizes[i];
    }
    return 0;
}

static void put64(uint8_t *frame, unsigned offset, uint64_t value) {
    memcpy(frame + offset, &value, sizeof value);
}

/* `_pack_tf` and the upcall's tail: the interrupted registers (RIP, RFLAGS, RSP the
 * user's, from the exception frame). */
static void build_frame(uint8_t *frame, const struct kvm_regs *regs, uint64_t rip,
                        uint64_t rflags, uint64_t rsp, uint64_t fs_base, uint64_t kind,
                        uint64_t vector, uint64_t addr, uint64_t fec) {
    memset(frame, 0, KVMDUNE_UPCALL_SIZE);
    const uint64_t tf_registers[] = {regs->rdi, regs->rsi, regs->rdx, regs->rcx, regs->r8,
                                     regs->r9,  regs->r10, regs->r11, regs->rbx, regs->rbp,
                                     regs->r12, regs->r13, regs->r14, regs->r15, regs->rax};
    memcpy(frame + KVMDUNE_TF_RDI, tf_registers, sizeof tf_registers);
    put64(frame, KVMDUNE_TF_ERR, fec & 0xFFFFFFFFULL);     /* err, then a zero pad */
    put64(frame, KVMDUNE_TF_RIP, rip);
    put64(frame, KVMDUNE_TF_CS, KVMDUNE_USER_CS);
    /* User code always runs with interrupts enabled, as under libdune, and the frame
     * says so whatever the registers it came from say (reentry.h). */
    put64(frame, KVMDUNE_TF_RFLAGS, rflags | KVMDUNE_RFLAGS_IF);
    put64(frame, KVMDUNE_TF_RSP, rsp);
    put64(frame, KVMDUNE_TF_SS, KVMDUNE_USER_DS);
    put64(frame, KVMDUNE_UPCALL_KIND, kind);
    put64(frame, KVMDUNE_UPCALL_VECTOR, vector);
    put64(frame, KVMDUNE_UPCALL_ADDR, addr);
    put64(frame, KVMDUNE_UPCALL_FEC, fec);
    put64(frame, KVMDUNE_UPCALL_FLAGS, 0);                 /* it interrupted the program */
    put64(frame, KVMDUNE_UPCALL_FS_BASE, fs_base);
}

/* Where the frame goes for an interruption at `rsp` (`_upcall`): 0 when the stack
 * cannot take it (the VMM's crash report). Signed: every address here is below
 * 2^47, and an `end` below the stack must compare as below it. */
static uint64_t frame_address(NativeUpcalls *u, uint64_t rsp) {
    int64_t base = (int64_t)u->stack_base;
    int64_t end = u->stack_base <= rsp && rsp < u->stack_top
                      ? (int64_t)rsp - KVMDUNE_RED_ZONE : (int64_t)u->stack_top;
    int64_t frame = (end - KVMDUNE_UPCALL_SIZE) & ~(int64_t)(KVMDUNE_UPCALL_ALIGN - 1);
    return frame - KVMDUNE_UPCALL_STACK_RESERVE < base ? 0 : (uint64_t)frame;
}

/* The exception delivered as an upcall: 1, or 0 for Python (nothing changed).
 * Called with the GIL released. */
static int deliver(NativeUpcalls *u, struct kvm_run *run, const struct kvmdune_exception *e) {
    unsigned vector = e->vector;
    /* Read once: another vCPU's thread may configure this one meanwhile (SET_TRAP). */
    const struct kvmdune_fault_check *check = __atomic_load_n(&u->check, __ATOMIC_ACQUIRE);
    if (!u->enabled)
        return 0;
    if (vector == KVMDUNE_PF_VECTOR ? !(u->page_faults && check) : !(u->vectors >> vector & 1))
        return 0;
    struct kvm_regs *regs = &run->s.regs.regs;
    struct kvm_sregs *sregs = &run->s.regs.sregs;
    if (sregs->cr3 != u->program_cr3 || u->entry >= u->m.user_end)
        return 0;
    uint64_t addr = 0;
    if (vector == KVMDUNE_PF_VECTOR) {
        addr = sregs->cr2;
        if (e->rip == addr && (e->rip == u->m.syscall_entry || e->rip == u->m.call_wait_target))
            return 0;
    }
    if (!proclock_try(u->process_lock))
        return 0;
    int delivered = 0;
    uint64_t frame = frame_address(u, e->rsp);
    if (frame != 0
        && (vector != KVMDUNE_PF_VECTOR || check->restricted(check->context, addr, e->error))) {
        uint8_t data[KVMDUNE_UPCALL_SIZE];
        build_frame(data, regs, e->rip, e->rflags, e->rsp, sregs->fs.base,
                    vector == KVMDUNE_PF_VECTOR ? TRAP_PGFLT : TRAP_VECTOR, vector, addr, e->error);
        delivered = write_frame(u, frame, data) == 0;
    }
    proclock_release(u->process_lock);
    if (!delivered) {
        u->declined++;
        return 0;
    }
    /* Into the handler (`_upcall`): RSP = RDI = the frame, RFLAGS the fixed ones. */
    regs->rdi = frame;
    kvmdune_resume_user(&u->m, run, u->entry, u->m.user_rflags_fixed, frame);
    u->delivered++;
    return 1;
}

struct taking {
    NativeUpcalls *upcalls;
    const struct kvmdune_call_wait *wait;
};

/* An upcall delivered, or else the call stub's wait (cpu.py: a #PF with RIP == CR2
 * == CALL_WAIT_TARGET) answered here and the stub resumed where it asked (RCX);
 * 1, or 0 for Python. */
static int take_exit(void *context, struct kvm_run *run, const struct kvmdune_exception *e) {
    struct taking *taking = context;
    NativeUpcalls *u = taking->upcalls;
    if (deliver(u, run, e))
        return 1;
    if (!kvmdune_answer_call_wait(&u->m, run, e, taking->wait))
        return 0;
    u->waits++;
    return 1;
}

/* run(vcpu_fd, kvm_run_address, call_wait): KVM_RUN until an exit this code does
 * not take (call_wait: the capsule of call_wait.h for this vCPU's ring, or None):
 * (exits taken, errno of the KVM_RUN that failed or 0). */
static PyObject *NativeUpcalls_run(NativeUpcalls *u, PyObject *args) {
    int fd, error;
    unsigned long long address;
    PyObject *capsule;
    struct taking taking = {u, NULL};
    if (!PyArg_ParseTuple(args, "iKO", &fd, &address, &capsule)
        || kvmdune_call_wait_from(capsule, &taking.wait) < 0)
        return NULL;
    long handled;
    Py_BEGIN_ALLOW_THREADS
    handled = kvmdune_run_taking(&u->m, fd, (struct kvm_run *)(uintptr_t)address, take_exit,
                                 &taking, &error);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(li)", handled, error);
}

/* configure(enabled, program_cr3, page_faults, vectors, entry, stack_base, stack_top,
 * fault_check): the process's traps and this thread's handler stack (fault_check: the
 * capsule of upcall.h, or None: page faults stay the VMM's). */
static PyObject *NativeUpcalls_configure(NativeUpcalls *u, PyObject *args) {
    int enabled, page_faults;
    unsigned long long cr3, entry, base, top;
    unsigned int vectors;
    PyObject *capsule;
    if (!PyArg_ParseTuple(args, "pKpIKKKO", &enabled, &cr3, &page_faults, &vectors, &entry,
                          &base, &top, &capsule))
        return NULL;
    struct kvmdune_fault_check *check = NULL;
    if (capsule != Py_None) {
        check = PyCapsule_GetPointer(capsule, KVMDUNE_FAULT_CHECK_CAPSULE);
        if (check == NULL)
            return NULL;
    }
    if (enabled && (base > top || top - base < 2 * KVMDUNE_UPCALL_STACK_RESERVE)) {
        PyErr_SetString(PyExc_ValueError, "a handler stack out of shape");
        return NULL;
    }
    /* The vCPU's thread may be in deliver() now (SET_TRAP on another thread): each
     * field is read as a word, and a check it may be using is never freed here
     * (the caller hands the same capsule again; another one only where no other
     * thread runs: a forked child, the process's end). */
    Py_XINCREF(capsule == Py_None ? NULL : capsule);
    PyObject *previous = u->check_capsule;
    __atomic_store_n(&u->check, check, __ATOMIC_RELEASE);
    u->check_capsule = capsule == Py_None ? NULL : capsule;
    Py_XDECREF(previous);
    u->enabled = enabled;
    u->program_cr3 = cr3;
    u->page_faults = page_faults;
    u->vectors = vectors;
    u->entry = entry;
    u->stack_base = base;
    u->stack_top = top;
    Py_RETURN_NONE;
}

static int NativeUpcalls_init(NativeUpcalls *u, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"memory", "memory_size", "iret_rip", "iret_frame",
                               "iret_frame_paddr", "exception_stack", "exception_stack_paddr",
                               "exception_stack_size", "syscall_entry", "call_wait_target",
                               "user_rflags", "user_rflags_fixed", "supervisor_rflags",
                               "user_end", "vectors_with_error", "process_lock", NULL};
    unsigned long long memory, size, iret_rip, iret_frame, iret_paddr, stack, stack_paddr,
        stack_size, syscall_entry, wait_target, user_rflags, fixed, supervisor, user_end,
        lock;
    unsigned int with_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKKKKKKKKKKKKKIK", keywords, &memory,
                                     &size, &iret_rip, &iret_frame, &iret_paddr, &stack,
                                     &stack_paddr, &stack_size, &syscall_entry, &wait_target,
                                     &user_rflags, &fixed, &supervisor, &user_end, &with_error,
                                     &lock))
        return -1;
    u->m = (struct kvmdune_reentry){
        .memory = (uint8_t *)(uintptr_t)memory, .memory_size = size, .iret_rip = iret_rip,
        .iret_frame = iret_frame, .iret_frame_paddr = iret_paddr, .exception_stack = stack,
        .exception_stack_paddr = stack_paddr, .exception_stack_size = stack_size,
        .syscall_entry = syscall_entry, .call_wait_target = wait_target,
        .user_rflags = user_rflags, .user_rflags_fixed = fixed, .supervisor_rflags = supervisor,
        .user_end = user_end, .vectors_with_error = with_error};
    if (lock == 0 || !kvmdune_reentry_valid(&u->m)) {
        PyErr_SetString(PyExc_ValueError, "guest memory, supervisor area or lock out of shape");
        return -1;
    }
    u->process_lock = (uint32_t *)(uintptr_t)lock;
    return 0;
}

static PyObject *NativeUpcalls_stats(NativeUpcalls *u, PyObject *unused) {
    return Py_BuildValue("{sKsKsK}", "delivered", (unsigned long long)u->delivered,
                         "declined", (unsigned long long)u->declined, "waits",
                         (unsigned long long)u->waits);
}

static void NativeUpcalls_dealloc(NativeUpcalls *u) {
    Py_XDECREF(u->check_capsule);
    Py_TYPE(u)->tp_free((PyObject *)u);
}

static PyMethodDef NativeUpcalls_methods[] = {
    {"run", (PyCFunction)NativeUpcalls_run, METH_VARARGS,
     "run(vcpu_fd, kvm_run_address, call_wait): KVM_RUN, delivering upcalls and "
     "answering the call stub's waits, until an exit for Python: (taken, errno)."},
    {"configure", (PyCFunction)NativeUpcalls_configure, METH_VARARGS,
     "configure(enabled, program_cr3, page_faults, vectors, entry, stack_base, stack_top, "
     "fault_check)."},
    {"stats", (PyCFunction)NativeUpcalls_stats, METH_NOARGS, "Counters."},
    {NULL},
};

static PyTypeObject NativeUpcallsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvmdune.dune._upcall.NativeUpcalls",
    .tp_basicsize = sizeof(NativeUpcalls),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One vCPU's run loop that delivers the program's upcalls natively.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)NativeUpcalls_init,
    .tp_dealloc = (destructor)NativeUpcalls_dealloc,
    .tp_methods = NativeUpcalls_methods,
};

static int upcall_exec(PyObject *module) {
    if (PyType_Ready(&NativeUpcallsType) < 0)
        return -1;
    Py_INCREF(&NativeUpcallsType);
    return PyModule_AddObject(module, "NativeUpcalls", (PyObject *)&NativeUpcallsType);
}

static PyModuleDef_Slot upcall_slots[] = {
    {Py_mod_exec, upcall_exec},
    {0, NULL},
};

static struct PyModuleDef upcall_module = {
    PyModuleDef_HEAD_INIT, "_upcall",
    "The program's faults and exceptions delivered to its Dune handlers without Python.", 0,
    NULL, upcall_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__upcall(void) { return PyModuleDef_Init(&upcall_module); }
