/* Hands the assembled trampoline (trampoline.S) and call stub (callstub.S) to Python:
 * their bytes, the offsets of their entries, and the ports of trampoline.h. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "trampoline.h"
#include "callring.h"

extern const unsigned char kvmdune_trampoline_start[], kvmdune_trampoline_end[];
extern const unsigned char kvmdune_syscall_entry[], kvmdune_iret[], kvmdune_bad_entry[];
extern const unsigned char kvmdune_exception_entries[], kvmdune_tlb_flush[];
extern const unsigned char kvmdune_callstub_start[], kvmdune_callstub_end[];
extern const unsigned char kvmdune_callstub_slow_target[];
extern const unsigned char kvmdune_callstub_wait_target[];
extern const unsigned char kvmdune_callstub_ring_entry[];

/* `label`'s offset from `base`, as a module constant. */
static int add_offset(PyObject *module, const char *name, const unsigned char *base,
                      const unsigned char *label) {
    return PyModule_AddIntConstant(module, name, (long)(label - base));
}

/* The bytes from `start` to `end`, as a module constant. */
static int add_code(PyObject *module, const char *name, const unsigned char *start,
                    const unsigned char *end) {
    PyObject *code = PyBytes_FromStringAndSize((const char *)start, end - start);
    if (code == NULL || PyModule_AddObject(module, name, code) < 0) {
        Py_XDECREF(code);
        return -1;
    }
    return 0;
}

/* The call stub (callstub.S): its bytes and the offsets of the exits the VMM patches. */
static int add_call_stub(PyObject *module) {
    const unsigned char *base = kvmdune_callstub_start;
    if (add_code(module, "CALL_STUB", base, kvmdune_callstub_end) < 0
        || add_offset(module, "CALL_STUB_SLOW_TARGET", base, kvmdune_callstub_slow_target) < 0
        || add_offset(module, "CALL_STUB_WAIT_TARGET", base, kvmdune_callstub_wait_target) < 0
        || add_offset(module, "CALL_STUB_RING_ENTRY", base, kvmdune_callstub_ring_entry) < 0
        || PyModule_AddIntConstant(module, "CALL_RING_SAVED_RCX", CALLRING_SAVED_RCX) < 0
        || PyModule_AddIntConstant(module, "CALL_RING_SAVED_R11", CALLRING_SAVED_R11) < 0
        || PyModule_AddIntConstant(module, "CALL_RING_SAVED_RSP", CALLRING_SAVED_RSP) < 0
        || PyModule_AddIntConstant(module, "CALL_SLOT_SIZE", CALLRING_SLOT_SIZE) < 0)
        return -1;
    return 0;
}

static int trampoline_exec(PyObject *module) {
    const unsigned char *base = kvmdune_trampoline_start;
    if (add_call_stub(module) < 0
        || add_code(module, "CODE", base, kvmdune_trampoline_end) < 0)
        return -1;
    if (add_offset(module, "SYSCALL_ENTRY", base, kvmdune_syscall_entry) < 0
        || add_offset(module, "IRET", base, kvmdune_iret) < 0
        || add_offset(module, "BAD_ENTRY", base, kvmdune_bad_entry) < 0
        || add_offset(module, "EXCEPTION_ENTRIES", base, kvmdune_exception_entries) < 0
        || add_offset(module, "TLB_FLUSH", base, kvmdune_tlb_flush) < 0
        || PyModule_AddIntConstant(module, "SYSCALL_PORT", KVMDUNE_SYSCALL_PORT) < 0
        || PyModule_AddIntConstant(module, "BAD_ENTRY_PORT", KVMDUNE_BAD_ENTRY_PORT) < 0
        || PyModule_AddIntConstant(module, "TLB_FLUSH_PORT", KVMDUNE_TLB_FLUSH_PORT) < 0
        || PyModule_AddIntConstant(module, "EXCEPTION_PORT_BASE",
                                   KVMDUNE_EXCEPTION_PORT_BASE) < 0
        || PyModule_AddIntConstant(module, "EXCEPTION_VECTORS",
                                   KVMDUNE_EXCEPTION_VECTORS) < 0
        || PyModule_AddIntConstant(module, "EXCEPTION_STRIDE",
                                   KVMDUNE_EXCEPTION_STRIDE) < 0
        || PyModule_AddIntConstant(module, "CALL_STUB_VMM_CALLS", CALLRING_VMM_CALLS) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot trampoline_slots[] = {
    {Py_mod_exec, trampoline_exec},
    {0, NULL},
};

static struct PyModuleDef trampoline_module = {
    PyModuleDef_HEAD_INIT, "_trampoline",
    "The kvmdune ring-0 trampoline, assembled from trampoline.S.", 0, NULL,
    trampoline_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__trampoline(void) { return PyModuleDef_Init(&trampoline_module); }
