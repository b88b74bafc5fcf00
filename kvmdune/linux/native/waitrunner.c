/* The call stub's waits answered without Python: a vCPU's KVM_RUN loop (the GIL
 * released) that takes the exits of the stub's wait (the guest spun for an answer
 * that did not come: the serving thread is off-CPU or asleep), answers each with
 * the fast path's wait (call_wait.h: the request served by this thread, or its
 * answer waited for) and re-enters the guest at the stub, as the run loop in Python
 * does (machine/cpu.py). Every other exit, and KVM_RUN interrupted (a kick: a stop,
 * a signal, a TLB flush to do), goes back to Python untouched.
 *
 * Measured (bench/native lat loop of getppid under load): a wait through Python
 * costs ~90,000 cycles of exit handling; this loop takes what a Dune process's
 * upcall runner (dune/vmm_native/upcall.c) takes for the same exit. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <linux/kvm.h>
#include <stdint.h>

#include "../../machine/native/reentry.h"
#include "call_wait.h"

typedef struct {
    PyObject_HEAD
    struct kvmdune_reentry m;
    uint64_t waits;
} WaitRunner;

struct taking {
    WaitRunner *runner;
    const struct kvmdune_call_wait *wait;
};

static int take_wait(void *context, struct kvm_run *run, const struct kvmdune_exception *e) {
    struct taking *taking = context;
    return kvmdune_answer_call_wait(&taking->runner->m, run, e, taking->wait);
}

/* run(vcpu_fd, kvm_run_address, call_wait): KVM_RUN until an exit that is not the
 * stub's wait (call_wait: the capsule of call_wait.h for this vCPU's ring, or None:
 * every exit is Python's): (exits taken, errno of the KVM_RUN that failed or 0). */
static PyObject *WaitRunner_run(WaitRunner *w, PyObject *args) {
    int fd, error;
    unsigned long long address;
    PyObject *capsule;
    struct taking taking = {w, NULL};
    if (!PyArg_ParseTuple(args, "iKO", &fd, &address, &capsule)
        || kvmdune_call_wait_from(capsule, &taking.wait) < 0)
        return NULL;
    long handled;
    Py_BEGIN_ALLOW_THREADS
    handled = kvmdune_run_taking(&w->m, fd, (struct kvm_run *)(uintptr_t)address, take_wait,
                                 &taking, &error);
    Py_END_ALLOW_THREADS
    w->waits += (uint64_t)handled;
    return Py_BuildValue("(li)", handled, error);
}

static PyObject *WaitRunner_stats(WaitRunner *w, PyObject *unused) {
    return Py_BuildValue("{sK}", "waits", (unsigned long long)w->waits);
}

/* WaitRunner(memory, memory_size, **cpu.native_run_parameters()). */
static int WaitRunner_init(WaitRunner *w, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"memory", "memory_size", "iret_rip", "iret_frame",
                               "iret_frame_paddr", "exception_stack", "exception_stack_paddr",
                               "exception_stack_size", "syscall_entry", "call_wait_target",
                               "user_rflags", "user_rflags_fixed", "supervisor_rflags",
                               "user_end", "vectors_with_error", NULL};
    unsigned long long memory;
    struct kvmdune_reentry *m = &w->m;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKKKKKKKKKKKKKI", keywords, &memory,
                                     &m->memory_size, &m->iret_rip, &m->iret_frame,
                                     &m->iret_frame_paddr, &m->exception_stack,
                                     &m->exception_stack_paddr, &m->exception_stack_size,
                                     &m->syscall_entry, &m->call_wait_target, &m->user_rflags,
                                     &m->user_rflags_fixed, &m->supervisor_rflags,
                                     &m->user_end, &m->vectors_with_error))
        return -1;
    m->memory = (uint8_t *)(uintptr_t)memory;
    if (!kvmdune_reentry_valid(m)) {
        PyErr_SetString(PyExc_ValueError, "guest memory or supervisor area out of shape");
        return -1;
    }
    return 0;
}

static PyMethodDef WaitRunner_methods[] = {
    {"run", (PyCFunction)WaitRunner_run, METH_VARARGS,
     "run(vcpu_fd, kvm_run_address, call_wait): KVM_RUN, answering the call stub's "
     "waits, until an exit for Python: (taken, errno)."},
    {"stats", (PyCFunction)WaitRunner_stats, METH_NOARGS, "Counters: waits answered."},
    {NULL},
};

static PyTypeObject WaitRunnerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvmdune.linux._waitrunner.WaitRunner",
    .tp_basicsize = sizeof(WaitRunner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One vCPU's run loop that answers the call stub's waits natively.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)WaitRunner_init,
    .tp_methods = WaitRunner_methods,
};

static int waitrunner_exec(PyObject *module) {
    if (PyType_Ready(&WaitRunnerType) < 0)
        return -1;
    Py_INCREF(&WaitRunnerType);
    if (PyModule_AddObject(module, "WaitRunner", (PyObject *)&WaitRunnerType) < 0)
        return -1;
    return PyModule_AddIntConstant(module, "USER_CS", KVMDUNE_REENTRY_USER_CS) < 0
        || PyModule_AddIntConstant(module, "USER_DS", KVMDUNE_REENTRY_USER_DS) < 0 ? -1 : 0;
}

static PyModuleDef_Slot waitrunner_slots[] = {
    {Py_mod_exec, waitrunner_exec},
    {0, NULL},
};

static struct PyModuleDef waitrunner_module = {
    PyModuleDef_HEAD_INIT, "_waitrunner",
    "The call stub's waits answered in a native KVM_RUN loop.", 0, NULL, waitrunner_slots,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__waitrunner(void) { return PyModuleDef_Init(&waitrunner_module); }
