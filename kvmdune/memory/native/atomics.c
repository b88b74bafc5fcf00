/* Atomic operations on guest memory, for the VMM's writes to words that guest code
 * running on other vCPUs updates at the same time (robust futex words at a thread's
 * death): a plain read-modify-write from Python could lose the guest's own update.
 *
 * Each takes a writable buffer (a view of guest memory) and an offset into it, and
 * checks that the word lies inside the buffer and is aligned: nothing outside the
 * view is ever touched. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static uint32_t *word_at(Py_buffer *view, Py_ssize_t offset) {
    if (offset < 0 || offset % 4 != 0 || offset > view->len - 4) {
        PyErr_SetString(PyExc_ValueError, "word outside the buffer or misaligned");
        return NULL;
    }
    return (uint32_t *)((char *)view->buf + offset);
}

/* cmpxchg32(buffer, offset, expected, new) -> the word's old value; it was replaced
 * by new only if it equalled expected. */
static PyObject *cmpxchg32(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t offset;
    unsigned int expected, desired;
    if (!PyArg_ParseTuple(args, "w*nII", &view, &offset, &expected, &desired))
        return NULL;
    uint32_t *word = word_at(&view, offset);
    if (word == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint32_t old = expected;
    __atomic_compare_exchange_n(word, &old, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(old);
}

/* store32(buffer, offset, value): one atomic 4-byte store. */
static PyObject *store32(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t offset;
    unsigned int value;
    if (!PyArg_ParseTuple(args, "w*nI", &view, &offset, &value))
        return NULL;
    uint32_t *word = word_at(&view, offset);
    if (word != NULL)
        __atomic_store_n(word, value, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&view);
    if (word == NULL)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef atomics_methods[] = {
    {"cmpxchg32", cmpxchg32, METH_VARARGS,
     "cmpxchg32(buffer, offset, expected, new) -> old: atomic compare-and-exchange."},
    {"store32", store32, METH_VARARGS, "store32(buffer, offset, value): atomic store."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef atomics_module = {
    PyModuleDef_HEAD_INIT, "_atomics", "Atomic operations on guest memory.", -1,
    atomics_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__atomics(void) { return PyModule_Create(&atomics_module); }
