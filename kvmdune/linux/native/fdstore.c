/* FdStore: the guest's descriptor table in native memory (fdstore.h says why and
 * how it is shared); linux/fdtable.py's FdTable is its Python face. */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include "fdstore.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* Character devices whose reads and writes never wait (null, zero, full, random,
 * urandom: major 1). */
#define MEMORY_DEVICES_MAJOR 1
static const unsigned NEVER_BLOCKING_MINORS[] = {3, 5, 7, 8, 9};

uint32_t fdstore_io_flag(int host) {
    struct stat st;
    if (fstat(host, &st) < 0)
        return 0;
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode))
        return FDS_IO_NEVER_BLOCKS;
    if (S_ISFIFO(st.st_mode))
        return FDS_IO_PIPE;
    if (S_ISSOCK(st.st_mode))
        return FDS_IO_SOCKET;
    if (S_ISCHR(st.st_mode) && major(st.st_rdev) == MEMORY_DEVICES_MAJOR)
        for (size_t i = 0; i < sizeof NEVER_BLOCKING_MINORS / sizeof NEVER_BLOCKING_MINORS[0]; i++)
            if (minor(st.st_rdev) == NEVER_BLOCKING_MINORS[i])
                return FDS_IO_NEVER_BLOCKS;
    return 0;
}

static int limit_of(FdStore *t) {
    int limit = __atomic_load_n(&t->max_fds, __ATOMIC_ACQUIRE);
    return limit < FDSTORE_LIMIT ? limit : FDSTORE_LIMIT;
}

int fdstore_lowest_free(FdStore *t, long minimum) {
    int limit = limit_of(t);
    uint32_t flags;
    for (long fd = minimum > 0 ? minimum : 0; fd < limit; fd++) {
        fd_slot *chunk = t->chunks[fd / FDSTORE_CHUNK];
        if (chunk == NULL)
            return (int)fd;
        if (fdstore_lookup(t, (int)fd, &flags) == NULL)
            return (int)fd;
    }
    return -1;
}

int fdstore_set(FdStore *t, int fd, int host, uint32_t flags) {
    if (fd < 0 || fd >= FDSTORE_LIMIT)
        return -1;
    fd_slot *chunk = t->chunks[fd / FDSTORE_CHUNK];
    if (chunk == NULL) {
        chunk = calloc(FDSTORE_CHUNK, sizeof *chunk);
        if (chunk == NULL)
            return -1;
        __atomic_store_n(&t->chunks[fd / FDSTORE_CHUNK], chunk, __ATOMIC_RELEASE);
    }
    fd_slot *slot = &chunk[fd % FDSTORE_CHUNK];
    __atomic_store_n(&slot->host, host, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->flags, flags | FDS_OPEN, __ATOMIC_SEQ_CST);
    return 0;
}

int fdstore_clear(FdStore *t, int fd) {
    uint32_t flags;
    const fd_slot *found = fdstore_lookup(t, fd, &flags);
    if (found == NULL)
        return -1;
    fd_slot *slot = (fd_slot *)found;
    int host = slot->host;
    __atomic_store_n(&slot->flags, 0, __ATOMIC_SEQ_CST);
    return host;
}

void fdstore_set_cloexec(FdStore *t, int fd, int cloexec) {
    uint32_t flags;
    const fd_slot *found = fdstore_lookup(t, fd, &flags);
    if (found == NULL)
        return;
    flags = cloexec ? flags | FDS_CLOEXEC : flags & ~(uint32_t)FDS_CLOEXEC;
    __atomic_store_n(&((fd_slot *)found)->flags, flags, __ATOMIC_SEQ_CST);
}

static held_fd *find_held(FdStore *t, int host) {
    for (int i = 0; i < t->nheld; i++)
        if (t->held[i].host == host)
            return &t->held[i];
    return NULL;
}

int fdstore_held(FdStore *t, int host) {
    return t->held_overflow > 0 || find_held(t, host) != NULL;
}

/* -- the Python object ----------------------------------------------------------------- */

static int parse_fd(PyObject *arg, int *fd) {
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return -1;
    *fd = value < 0 || value >= FDSTORE_LIMIT ? -1 : (int)value;
    return 0;
}

/* get(fd): (host, cloexec, io: its FDS_IO_ bits), or None when not open. */
static PyObject *FdStore_get(FdStore *t, PyObject *arg) {
    int fd;
    uint32_t flags;
    if (parse_fd(arg, &fd) < 0)
        return NULL;
    const fd_slot *slot = fdstore_lookup(t, fd, &flags);
    if (slot == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("(iOI)", slot->host, flags & FDS_CLOEXEC ? Py_True : Py_False,
                         flags & FDS_IO_KINDS);
}

/* install(fd, host, cloexec, io=None): io, the FDS_IO_ bits (as get() gives them;
 * 0: the VMM serves its I/O); None: found out by fstat. */
static PyObject *FdStore_install(FdStore *t, PyObject *args) {
    int fd, host, cloexec;
    PyObject *io = Py_None;
    if (!PyArg_ParseTuple(args, "iip|O", &fd, &host, &cloexec, &io))
        return NULL;
    uint32_t flags = fdstore_io_flag(host);
    if (io != Py_None) {
        unsigned long given = PyLong_AsUnsignedLong(io);
        if (PyErr_Occurred())
            return NULL;
        flags = (uint32_t)given & FDS_IO_KINDS;
    }
    if (fdstore_set(t, fd, host, flags | (cloexec ? FDS_CLOEXEC : 0)) < 0)
        return PyErr_Format(PyExc_ValueError, "descriptor %d outside the table", fd);
    Py_RETURN_NONE;
}

/* remove(fd): the host descriptor it held (the caller closes it), or None. */
static PyObject *FdStore_remove(FdStore *t, PyObject *arg) {
    int fd;
    if (parse_fd(arg, &fd) < 0)
        return NULL;
    int host = fdstore_clear(t, fd);
    if (host < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(host);
}

static PyObject *FdStore_set_cloexec(FdStore *t, PyObject *args) {
    int fd, cloexec;
    if (!PyArg_ParseTuple(args, "ip", &fd, &cloexec))
        return NULL;
    fdstore_set_cloexec(t, fd, cloexec);
    Py_RETURN_NONE;
}

static PyObject *FdStore_lowest_free(FdStore *t, PyObject *args) {
    long long minimum = 0;
    if (!PyArg_ParseTuple(args, "|L", &minimum))
        return NULL;
    int fd = minimum >= FDSTORE_LIMIT ? -1 : fdstore_lowest_free(t, (long)minimum);
    if (fd < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(fd);
}

/* numbers(): the open guest numbers, lowest first. */
static PyObject *FdStore_numbers(FdStore *t, PyObject *unused) {
    PyObject *list = PyList_New(0);
    uint32_t flags;
    for (int c = 0; list != NULL && c < FDSTORE_CHUNKS; c++) {
        if (t->chunks[c] == NULL)
            continue;
        for (int i = 0; i < FDSTORE_CHUNK; i++) {
            int fd = c * FDSTORE_CHUNK + i;
            if (fdstore_lookup(t, fd, &flags) == NULL)
                continue;
            PyObject *number = PyLong_FromLong(fd);
            if (number == NULL || PyList_Append(list, number) < 0)
                Py_CLEAR(list);
            Py_XDECREF(number);
            if (list == NULL)
                break;
        }
    }
    return list;
}

/* hold(host): a blocked call uses it; it stays open until the matching release. */
static PyObject *FdStore_hold(FdStore *t, PyObject *arg) {
    int host;
    if (parse_fd(arg, &host) < 0)
        return NULL;
    held_fd *entry = find_held(t, host);
    if (entry != NULL) {
        entry->count++;
    } else if (t->nheld < FDSTORE_MAX_HELD) {
        t->held[t->nheld++] = (held_fd){host, 1, 0};
    } else {
        t->held_overflow++;
    }
    Py_RETURN_NONE;
}

/* release(host): True when this was the last hold of a descriptor the guest closed
 * meanwhile (the caller closes it now). */
static PyObject *FdStore_release(FdStore *t, PyObject *arg) {
    int host;
    if (parse_fd(arg, &host) < 0)
        return NULL;
    held_fd *entry = find_held(t, host);
    if (entry == NULL) {
        if (t->held_overflow > 0)
            t->held_overflow--;
        Py_RETURN_FALSE;
    }
    if (--entry->count > 0)
        Py_RETURN_FALSE;
    int pending = entry->close_pending;
    *entry = t->held[--t->nheld];
    return PyBool_FromLong(pending);
}

/* close_later(host): True when a blocked call holds it: the last release closes it
 * (False: not held, the caller closes it now). */
static PyObject *FdStore_close_later(FdStore *t, PyObject *arg) {
    int host;
    if (parse_fd(arg, &host) < 0)
        return NULL;
    held_fd *entry = find_held(t, host);
    if (entry == NULL)
        Py_RETURN_FALSE;
    entry->close_pending = 1;
    Py_RETURN_TRUE;
}

static PyObject *FdStore_get_max_fds(FdStore *t, void *unused) {
    return PyLong_FromLong(__atomic_load_n(&t->max_fds, __ATOMIC_ACQUIRE));
}

static int FdStore_set_max_fds(FdStore *t, PyObject *value, void *unused) {
    long limit = value == NULL ? -1 : PyLong_AsLong(value);
    if (limit == -1 && PyErr_Occurred())
        return -1;
    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "max_fds must be a non-negative number");
        return -1;
    }
    __atomic_store_n(&t->max_fds, limit > INT32_MAX ? INT32_MAX : (int)limit, __ATOMIC_RELEASE);
    return 0;
}

static int FdStore_init(FdStore *t, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"max_fds", NULL};
    PyObject *limit = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", keywords, &limit))
        return -1;
    return FdStore_set_max_fds(t, limit, NULL);
}

static void FdStore_dealloc(FdStore *t) {
    for (int c = 0; c < FDSTORE_CHUNKS; c++)
        free(t->chunks[c]);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef FdStore_methods[] = {
    {"get", (PyCFunction)FdStore_get, METH_O,
     "get(fd): (host, cloexec, io), or None when not open (io: how its I/O is served)."},
    {"install", (PyCFunction)FdStore_install, METH_VARARGS,
     "install(fd, host, cloexec, io=None): fd now names host (io: as get() gives "
     "it, 0: the VMM serves its I/O; None: found out)."},
    {"remove", (PyCFunction)FdStore_remove, METH_O,
     "remove(fd): the host descriptor fd named (now the caller's), or None."},
    {"set_cloexec", (PyCFunction)FdStore_set_cloexec, METH_VARARGS,
     "set_cloexec(fd, value): the guest's close-on-exec flag."},
    {"lowest_free", (PyCFunction)FdStore_lowest_free, METH_VARARGS,
     "lowest_free(minimum=0): the lowest free number below max_fds, or None."},
    {"numbers", (PyCFunction)FdStore_numbers, METH_NOARGS, "The open numbers, lowest first."},
    {"hold", (PyCFunction)FdStore_hold, METH_O, "hold(host): a blocked call uses host."},
    {"release", (PyCFunction)FdStore_release, METH_O,
     "release(host): True when the caller must now close host (closed meanwhile)."},
    {"close_later", (PyCFunction)FdStore_close_later, METH_O,
     "close_later(host): True when held (its last release closes it)."},
    {NULL},
};

static PyGetSetDef FdStore_getset[] = {
    {"max_fds", (getter)FdStore_get_max_fds, (setter)FdStore_set_max_fds,
     "RLIMIT_NOFILE: numbers at or above it are never handed out.", NULL},
    {NULL},
};

PyTypeObject FdStoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvmdune.linux._fastpath.FdStore",
    .tp_basicsize = sizeof(FdStore),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The guest's descriptor table, shared with the fast path's server.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FdStore_init,
    .tp_dealloc = (destructor)FdStore_dealloc,
    .tp_methods = FdStore_methods,
    .tp_getset = FdStore_getset,
};

int fdstore_register(PyObject *module) {
    if (PyType_Ready(&FdStoreType) < 0)
        return -1;
    Py_INCREF(&FdStoreType);
    if (PyModule_AddObject(module, "FdStore", (PyObject *)&FdStoreType) < 0) {
        Py_DECREF(&FdStoreType);
        return -1;
    }
    return 0;
}
