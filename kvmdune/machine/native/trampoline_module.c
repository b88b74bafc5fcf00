/* Hands the assembled trampoline (trampoline.S) to Python: its bytes, the offsets of
 * its entries, and the ports of trampoline.h. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "trampoline.h"

extern const unsigned char kvmdune_trampoline_start[], kvmdune_trampoline_end[];
extern const unsigned char kvmdune_syscall_entry[], kvmdune_iret[], kvmdune_bad_entry[];
extern const unsigned char kvmdune_exception_entries[];

static int add_offset(PyObject *module, const char *name, const unsigned char *label) {
    return PyModule_AddIntConstant(module, name, (long)(label - kvmdune_trampoline_start));
}

static int trampoline_exec(PyObject *module) {
    PyObject *code = PyBytes_FromStringAndSize(
        (const char *)kvmdune_trampoline_start,
        kvmdune_trampoline_end - kvmdune_trampoline_start);
    if (code == NULL || PyModule_AddObject(module, "CODE", code) < 0) {
        Py_XDECREF(code);
        return -1;
    }
    if (add_offset(module, "SYSCALL_ENTRY", kvmdune_syscall_entry) < 0
        || add_offset(module, "IRET", kvmdune_iret) < 0
        || add_offset(module, "BAD_ENTRY", kvmdune_bad_entry) < 0
        || add_offset(module, "EXCEPTION_ENTRIES", kvmdune_exception_entries) < 0
        || PyModule_AddIntConstant(module, "SYSCALL_PORT", KVMDUNE_SYSCALL_PORT) < 0
        || PyModule_AddIntConstant(module, "BAD_ENTRY_PORT", KVMDUNE_BAD_ENTRY_PORT) < 0
        || PyModule_AddIntConstant(module, "EXCEPTION_PORT_BASE",
                                   KVMDUNE_EXCEPTION_PORT_BASE) < 0
        || PyModule_AddIntConstant(module, "EXCEPTION_VECTORS",
                                   KVMDUNE_EXCEPTION_VECTORS) < 0
        || PyModule_AddIntConstant(module, "EXCEPTION_STRIDE",
                                   KVMDUNE_EXCEPTION_STRIDE) < 0)
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
