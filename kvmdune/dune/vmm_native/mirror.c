/* Table-at-a-time work on the Dune API's mirrors for kvmdune.dune.vm, where a Python
 * loop over entries would cost milliseconds per GiB:
 *
 *   sync_ad(shadow, live, sources) -> changed
 *     Brings the PTE_A/PTE_D bits of the present entries of one mirror run (the VMM's
 *     shadow and the program's live copy alike, nothing else of the live entry) to
 *     what the hardware entries of the same pages say. Each source is (entries,
 *     a_test, d_test): A where any source entry has a bit of its a_test, D likewise
 *     (a reader's view of a space: the hardware bit or the reader's own).
 *
 *   track(hardware, shadow, live, base, user, skip_start, skip_end) -> (fresh, changed)
 *     The mirror entries (libdune format) of pages the program view maps (present or
 *     PROT_NONE; pages in [skip_start, skip_end) excepted): frame, P/W/NX from the
 *     hardware rights, PTE_U if `user`. An entry that was zero is written at once and
 *     reported in `fresh`, runs of (first index, count, first frame, rights) of the
 *     user-visible ones with adjacent frames; any other difference goes to `changed`
 *     as (index, old, new), unwritten, for the caller's checks.
 *
 *   differences(live, shadow) -> [index, ...]
 *     Where the program's copy of a run differs from the VMM's shadow.
 *
 * All buffers are runs of 64-bit entries of the same length (one table's run). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* libdune's entry bits (kvmdune/dune/entries.py; a test checks they agree). */
#define M_P 0x1ULL
#define M_W 0x2ULL
#define M_U 0x4ULL
#define M_A 0x20ULL
#define M_D 0x40ULL
#define M_NX (1ULL << 63)
#define M_ADDR 0x000FFFFFFFFFF000ULL
/* kvmdune.memory.pagetable.PTE's hardware bits. */
#define H_PRESENT 0x1ULL
#define H_WRITABLE 0x2ULL
#define H_PROTNONE 0x400ULL
#define H_NX (1ULL << 63)
#define PAGE_SIZE 4096ULL
#define MAX_SOURCES 4

static int get_run(PyObject *object, Py_buffer *view, int writable, Py_ssize_t *count) {
    if (PyObject_GetBuffer(object, view, writable ? PyBUF_FULL : PyBUF_FULL_RO) < 0)
        return -1;
    if (view->itemsize != 8 || view->len % 8 || !PyBuffer_IsContiguous(view, 'C') ||
        (*count >= 0 && view->len / 8 != *count)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "expected runs of 64-bit entries of one length");
        return -1;
    }
    *count = view->len / 8;
    return 0;
}

static PyObject *sync_ad(PyObject *self, PyObject *args) {
    PyObject *shadow_obj, *live_obj, *sources_obj;
    unsigned long long a_test[MAX_SOURCES], d_test[MAX_SOURCES];
    if (!PyArg_ParseTuple(args, "OOO!", &shadow_obj, &live_obj, &PyTuple_Type, &sources_obj))
        return NULL;
    Py_ssize_t nsources = PyTuple_GET_SIZE(sources_obj), count = -1, changed = 0;
    if (nsources > MAX_SOURCES) {
        PyErr_SetString(PyExc_ValueError, "too many sources");
        return NULL;
    }
    Py_buffer shadow, live, sources[MAX_SOURCES];
    if (get_run(shadow_obj, &shadow, 1, &count) < 0)
        return NULL;
    if (get_run(live_obj, &live, 1, &count) < 0) {
        PyBuffer_Release(&shadow);
        return NULL;
    }
    Py_ssize_t got = 0;
    for (; got < nsources; got++) {
        PyObject *entries;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(sources_obj, got), "OKK", &entries, &a_test[got],
                              &d_test[got]) ||
            get_run(entries, &sources[got], 0, &count) < 0)
            break;
    }
    if (got == nsources) {
        uint64_t *s = shadow.buf, *l = live.buf;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (!(s[i] & M_P))
                continue;
            uint64_t bits = 0;
            for (Py_ssize_t k = 0; k < nsources; k++) {
                uint64_t hw = ((uint64_t *)sources[k].buf)[i];
                bits |= (hw & a_test[k] ? M_A : 0) | (hw & d_test[k] ? M_D : 0);
            }
            if ((s[i] & (M_A | M_D)) != bits) {
                s[i] = (s[i] & ~(M_A | M_D)) | bits;
                l[i] = (l[i] & ~(M_A | M_D)) | bits;
                changed++;
            }
        }
    }
    for (Py_ssize_t k = 0; k < got; k++)
        PyBuffer_Release(&sources[k]);
    PyBuffer_Release(&live);
    PyBuffer_Release(&shadow);
    return got == nsources ? PyLong_FromSsize_t(changed) : NULL;
}

static uint64_t mirror_entry(uint64_t hw, uint64_t user) {
    if (!(hw & H_PRESENT))            /* PROT_NONE: the frame, no rights */
        return (hw & M_ADDR) | M_NX;
    return (hw & M_ADDR) | M_P | (hw & H_WRITABLE ? M_W : 0) | (hw & H_NX ? M_NX : 0) | user;
}

static PyObject *track(PyObject *self, PyObject *args) {
    PyObject *hw_obj, *shadow_obj, *live_obj;
    unsigned long long base, skip_start, skip_end;
    int user;
    if (!PyArg_ParseTuple(args, "OOOKpKK", &hw_obj, &shadow_obj, &live_obj, &base, &user,
                          &skip_start, &skip_end))
        return NULL;
    Py_buffer hw, shadow, live;
    Py_ssize_t count = -1;
    if (get_run(hw_obj, &hw, 0, &count) < 0)
        return NULL;
    if (get_run(shadow_obj, &shadow, 1, &count) < 0) {
        PyBuffer_Release(&hw);
        return NULL;
    }
    if (get_run(live_obj, &live, 1, &count) < 0) {
        PyBuffer_Release(&shadow);
        PyBuffer_Release(&hw);
        return NULL;
    }
    PyObject *fresh = PyList_New(0), *changed = PyList_New(0), *result = NULL;
    uint64_t *h = hw.buf, *s = shadow.buf, *l = live.buf;
    Py_ssize_t run_first = -1, run_count = 0;
    uint64_t run_frame = 0, run_rights = 0;
    if (fresh == NULL || changed == NULL)
        goto done;
    for (Py_ssize_t i = 0; i <= count; i++) {
        uint64_t entry = 0, old = 0;
        int visible = 0;
        if (i < count) {
            uint64_t page = base + (uint64_t)i * PAGE_SIZE;
            if ((h[i] & (H_PRESENT | H_PROTNONE)) && !(page >= skip_start && page < skip_end)) {
                entry = mirror_entry(h[i], user ? M_U : 0);
                old = s[i];
                if (old == entry) {
                    entry = 0;
                } else if (old) {
                    PyObject *item = Py_BuildValue("(nKK)", i, old, entry);
                    if (item == NULL || PyList_Append(changed, item) < 0) {
                        Py_XDECREF(item);
                        goto done;
                    }
                    Py_DECREF(item);
                    entry = 0;
                } else {
                    s[i] = l[i] = entry;
                    visible = (entry & M_P) && (entry & M_U);
                }
            }
        }
        uint64_t rights = entry & (M_P | M_W | M_NX);
        if (visible && run_count && run_first + run_count == i && rights == run_rights &&
            run_frame + (uint64_t)run_count * PAGE_SIZE == (entry & M_ADDR)) {
            run_count++;
            continue;
        }
        if (run_count) {
            PyObject *item = Py_BuildValue("(nnKK)", run_first, run_count, run_frame, run_rights);
            if (item == NULL || PyList_Append(fresh, item) < 0) {
                Py_XDECREF(item);
                goto done;
            }
            Py_DECREF(item);
            run_count = 0;
        }
        if (visible) {
            run_first = i;
            run_count = 1;
            run_frame = entry & M_ADDR;
            run_rights = rights;
        }
    }
    result = Py_BuildValue("(OO)", fresh, changed);
done:
    Py_XDECREF(fresh);
    Py_XDECREF(changed);
    PyBuffer_Release(&live);
    PyBuffer_Release(&shadow);
    PyBuffer_Release(&hw);
    return result;
}

static PyObject *differences(PyObject *self, PyObject *args) {
    PyObject *live_obj, *shadow_obj;
    if (!PyArg_ParseTuple(args, "OO", &live_obj, &shadow_obj))
        return NULL;
    Py_buffer live, shadow;
    Py_ssize_t count = -1;
    if (get_run(live_obj, &live, 0, &count) < 0)
        return NULL;
    if (get_run(shadow_obj, &shadow, 0, &count) < 0) {
        PyBuffer_Release(&live);
        return NULL;
    }
    PyObject *found = PyList_New(0);
    const uint64_t *l = live.buf, *s = shadow.buf;
    for (Py_ssize_t i = 0; found != NULL && i < count; i++) {
        if (l[i] == s[i])
            continue;
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(found, index) < 0)
            Py_CLEAR(found);
        Py_XDECREF(index);
    }
    PyBuffer_Release(&shadow);
    PyBuffer_Release(&live);
    return found;
}

static PyMethodDef methods[] = {
    {"differences", differences, METH_VARARGS, "differences(live, shadow) -> [index, ...]."},
    {"sync_ad", sync_ad, METH_VARARGS,
     "sync_ad(shadow, live, ((entries, a_test, d_test), ...)) -> changed."},
    {"track", track, METH_VARARGS,
     "track(hardware, shadow, live, base, user, skip_start, skip_end) -> (fresh, changed)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mirror", "Table-at-a-time work on Dune mirrors.", 0, methods,
};

PyMODINIT_FUNC PyInit__mirror(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "PTE_P", (long)M_P) < 0 ||
        PyModule_AddIntConstant(m, "PTE_W", (long)M_W) < 0 ||
        PyModule_AddIntConstant(m, "PTE_U", (long)M_U) < 0 ||
        PyModule_AddIntConstant(m, "PTE_A", (long)M_A) < 0 ||
        PyModule_AddIntConstant(m, "PTE_D", (long)M_D) < 0 ||
        PyModule_AddIntConstant(m, "HW_PROTNONE", (long)H_PROTNONE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
