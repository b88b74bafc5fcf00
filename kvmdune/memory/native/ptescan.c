/* Fast scans of page-table entries for kvmdune.memory.pagetable: which entries of a
 * run have any of some bits set (accessed, dirty), optionally clearing them.
 *
 * Python walks the tables and hands one run of leaf entries (at most 512 words of one
 * table) per call; the loop over the entries is the part worth doing in C (a 1 GiB
 * range is 262,144 entries). Pure-Python code does the same where this is missing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static int append_long(PyObject *list, unsigned long long value) {
    PyObject *item = PyLong_FromUnsignedLongLong(value);
    if (item == NULL)
        return -1;
    int result = PyList_Append(list, item);
    Py_DECREF(item);
    return result;
}

/* scan(entries, mask, clear, frame_mask, present) -> (indexes, frames): the entries
 * with any bit of mask set, and (entry & frame_mask) of those that have the present
 * bit too; with clear, the mask bits are cleared. */
static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long long mask, frame_mask, present;
    int clear;
    if (!PyArg_ParseTuple(args, "w*KpKK", &view, &mask, &clear, &frame_mask, &present))
        return NULL;
    if (view.itemsize != 8 || view.len % 8 != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "expected a buffer of 64-bit entries");
        return NULL;
    }
    uint64_t *entries = (uint64_t *)view.buf;
    Py_ssize_t count = view.len / 8;
    PyObject *hits = PyList_New(0), *frames = PyList_New(0);
    if (hits == NULL || frames == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t entry = entries[i];
        if (!(entry & mask))
            continue;
        if (append_long(hits, (unsigned long long)i) < 0)
            goto fail;
        if ((entry & present) && append_long(frames, entry & frame_mask) < 0)
            goto fail;
        if (clear)
            entries[i] = entry & ~(uint64_t)mask;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(NN)", hits, frames);
fail:
    Py_XDECREF(hits);
    Py_XDECREF(frames);
    PyBuffer_Release(&view);
    return NULL;
}

/* runs(sorted_frames, size) -> [(start, length)]: adjacent frames merged. */
static PyObject *runs(PyObject *self, PyObject *args) {
    PyObject *frames;
    unsigned long long size;
    if (!PyArg_ParseTuple(args, "O!K", &PyList_Type, &frames, &size))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(frames);
    unsigned long long start = 0, end = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        unsigned long long frame = 0;
        if (i < n) {
            frame = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(frames, i));
            if (frame == (unsigned long long)-1 && PyErr_Occurred())
                goto fail;
            if (i > 0 && frame == end) {
                end += size;
                continue;
            }
        }
        if (i > 0) {
            PyObject *run = Py_BuildValue("(KK)", start, end - start);
            if (run == NULL || PyList_Append(out, run) < 0) {
                Py_XDECREF(run);
                goto fail;
            }
            Py_DECREF(run);
        }
        start = frame;
        end = frame + size;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(entries, mask, clear, frame_mask, present) -> (indexes, frames)."},
    {"runs", runs, METH_VARARGS, "runs(sorted_frames, size) -> [(start, length)]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ptescan", "Fast page-table entry scans.", 0, methods,
};

PyMODINIT_FUNC PyInit__ptescan(void) { return PyModule_Create(&module); }
