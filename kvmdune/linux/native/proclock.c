/* ProcessLock: the process's lock (linux/threads.py's ThreadGroup.lock), a lock
 * Python uses like threading.Lock and native code can try without Python
 * (proclock.h: the Dune API's hypercalls served by the fast path's thread act on
 * the page tables only while they hold it, so never beside the VMM).
 *
 * Waiting releases the GIL and sleeps on the futex in slices, between which the
 * main thread runs pending signal handlers (as threading.Lock's acquire does when a
 * signal interrupts it); an exception from one ends the wait. */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <time.h>

#include "proclock.h"

/* How long one sleep on the futex lasts before pending signals are looked at. */
#define WAIT_SLICE_NS 20000000LL

typedef struct {
    PyObject_HEAD
    uint32_t word;
} ProcessLock;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* 1 acquired, 0 timed out, -1 with an exception (a signal handler raised). */
static int wait_for(ProcessLock *lock, int64_t timeout_ns) {
    int64_t deadline = timeout_ns < 0 ? -1 : now_ns() + timeout_ns;
    for (;;) {
        if (__atomic_exchange_n(&lock->word, PROCLOCK_CONTENDED, __ATOMIC_ACQUIRE)
            == PROCLOCK_FREE)
            return 1;
        int64_t slice = WAIT_SLICE_NS;
        if (deadline >= 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0)
                return 0;
            if (left < slice)
                slice = left;
        }
        struct timespec wait = {slice / 1000000000LL, slice % 1000000000LL};
        Py_BEGIN_ALLOW_THREADS
        syscall(SYS_futex, &lock->word, FUTEX_WAIT | FUTEX_PRIVATE_FLAG, PROCLOCK_CONTENDED,
                &wait, NULL, 0);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

static PyObject *ProcessLock_acquire(ProcessLock *lock, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pd", keywords, &blocking, &timeout))
        return NULL;
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    if (proclock_try(&lock->word))
        Py_RETURN_TRUE;
    if (!blocking)
        Py_RETURN_FALSE;
    int got = wait_for(lock, timeout < 0 ? -1 : (int64_t)(timeout * 1e9));
    if (got < 0)
        return NULL;
    return PyBool_FromLong(got);
}

static PyObject *ProcessLock_release(ProcessLock *lock, PyObject *unused) {
    if (__atomic_load_n(&lock->word, __ATOMIC_ACQUIRE) == PROCLOCK_FREE) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    proclock_release(&lock->word);
    Py_RETURN_NONE;
}

static PyObject *ProcessLock_exit(ProcessLock *lock, PyObject *args) {
    return ProcessLock_release(lock, NULL);
}

static PyObject *ProcessLock_locked(ProcessLock *lock, PyObject *unused) {
    return PyBool_FromLong(__atomic_load_n(&lock->word, __ATOMIC_ACQUIRE) != PROCLOCK_FREE);
}

/* Where the futex word is, for native code (proclock.h); valid while the lock lives. */
static PyObject *ProcessLock_address(ProcessLock *lock, void *unused) {
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)&lock->word);
}

static PyMethodDef ProcessLock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))ProcessLock_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1): as threading.Lock's."},
    {"release", (PyCFunction)ProcessLock_release, METH_NOARGS, "Release the lock."},
    {"locked", (PyCFunction)ProcessLock_locked, METH_NOARGS, "Whether it is held."},
    {"__enter__", (PyCFunction)(void (*)(void))ProcessLock_acquire,
     METH_VARARGS | METH_KEYWORDS, "Acquire."},
    {"__exit__", (PyCFunction)ProcessLock_exit, METH_VARARGS, "Release."},
    {NULL},
};

static PyGetSetDef ProcessLock_getset[] = {
    {"address", (getter)ProcessLock_address, NULL,
     "The host address of the lock's futex word (for native code: proclock.h).", NULL},
    {NULL},
};

static PyTypeObject ProcessLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvmdune.linux._proclock.ProcessLock",
    .tp_basicsize = sizeof(ProcessLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The process's lock: threading.Lock's interface, a futex word native code can try.",
    .tp_new = PyType_GenericNew,
    .tp_methods = ProcessLock_methods,
    .tp_getset = ProcessLock_getset,
};

static int proclock_exec(PyObject *module) {
    if (PyType_Ready(&ProcessLockType) < 0)
        return -1;
    Py_INCREF(&ProcessLockType);
    if (PyModule_AddObject(module, "ProcessLock", (PyObject *)&ProcessLockType) < 0) {
        Py_DECREF(&ProcessLockType);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot proclock_slots[] = {
    {Py_mod_exec, proclock_exec},
    {0, NULL},
};

static struct PyModuleDef proclock_module = {
    PyModuleDef_HEAD_INIT, "_proclock",
    "The process's lock, which native code can try without Python.", 0, NULL,
    proclock_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__proclock(void) { return PyModuleDef_Init(&proclock_module); }
