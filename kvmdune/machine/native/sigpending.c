/* The calling thread's pending signals (its own and its process's) as one number,
 * raw rt_sigpending: the check the VMM makes before every look at the guest's
 * pending set (linux/host_signals.py), a fraction of what the same call costs
 * through ctypes (machine/sigmask.py). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

/* pending(): bit n-1 for each signal n pending for the calling thread. */
static PyObject *pending(PyObject *module, PyObject *unused) {
    uint64_t set = 0;
    if (syscall(SYS_rt_sigpending, &set, sizeof set) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromUnsignedLongLong(set);
}

static PyMethodDef sigpending_methods[] = {
    {"pending", pending, METH_NOARGS,
     "pending(): the calling thread's pending signals, bit n-1 for signal n."},
    {NULL},
};

static struct PyModuleDef sigpending_module = {
    PyModuleDef_HEAD_INIT, "_sigpending",
    "The calling thread's pending signals, read without ctypes.", 0, sigpending_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sigpending(void) { return PyModule_Create(&sigpending_module); }
