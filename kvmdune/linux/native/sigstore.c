/* SigActions: the guest's signal dispositions in native memory (sigstore.h says why
 * and how it is shared); linux/signals.py's Dispositions is its Python face. */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include "sigstore.h"


#include <errno.h>
#include <signal.h>

/* asm-generic/signal-defs.h's special handlers: SIG_IGN is the one execve keeps. */
#define HANDLER_DEFAULT 0
#define HANDLER_IGNORE 1
/* The sa_flags Linux keeps (kernel/signal.c's UAPI_SA_FLAGS with x86's SA_RESTORER;
 * signals.py's KEPT_SA_FLAGS). */
#define SA_EXPOSE_TAGBITS_FLAG 0x800ULL
#define SA_RESTORER_FLAG 0x04000000ULL
#define KEPT_SA_FLAGS ((uint64_t)(SA_NOCLDSTOP | SA_NOCLDWAIT | SA_SIGINFO | SA_ONSTACK \
                                  | SA_RESTART | SA_NODEFER) | (uint64_t)(uint32_t)SA_RESETHAND \
                       | SA_EXPOSE_TAGBITS_FLAG | SA_RESTORER_FLAG)
#define SIGNAL_BIT(signo) (1ULL << ((signo) - 1))
#define UNBLOCKABLE_BITS (SIGNAL_BIT(SIGKILL) | SIGNAL_BIT(SIGSTOP))

void sigstore_read(SigActions *t, int signo, kernel_sigaction *out) {
    const kernel_sigaction *slot = &t->actions[signo - 1];
    for (;;) {
        uint32_t before = __atomic_load_n(&t->sequence, __ATOMIC_ACQUIRE);
        if (before & 1)
            continue;
        out->handler = __atomic_load_n(&slot->handler, __ATOMIC_RELAXED);
        out->flags = __atomic_load_n(&slot->flags, __ATOMIC_RELAXED);
        out->restorer = __atomic_load_n(&slot->restorer, __ATOMIC_RELAXED);
        out->mask = __atomic_load_n(&slot->mask, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&t->sequence, __ATOMIC_RELAXED) == before)
            return;
    }
}

static void begin_write(SigActions *t) {
    __atomic_fetch_add(&t->sequence, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void end_write(SigActions *t) {
    __atomic_fetch_add(&t->sequence, 1, __ATOMIC_RELEASE);
}

static void store_action(kernel_sigaction *slot, const kernel_sigaction *action) {
    __atomic_store_n(&slot->handler, action->handler, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->flags, action->flags, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->restorer, action->restorer, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->mask, action->mask, __ATOMIC_RELAXED);
}

void sigstore_write(SigActions *t, int signo, const kernel_sigaction *action) {
    begin_write(t);
    store_action(&t->actions[signo - 1], action);
    end_write(t);
}

/* Linux's sig_handler_ignored: SIG_IGN, or SIG_DFL of a signal ignored by default
 * (signals.py's DEFAULT_IGNORE). */
static int ignores(uint64_t handler, long signo) {
    return handler == HANDLER_IGNORE
        || (handler == HANDLER_DEFAULT && (signo == SIGCHLD || signo == SIGURG
                                           || signo == SIGWINCH || signo == SIGCONT));
}

int sigstore_sigaction(SigActions *t, long signo, const kernel_sigaction *act,
                       kernel_sigaction *old, int64_t *result) {
    if (signo < 1 || signo > SIGSTORE_SIGNALS
        || (act != NULL && (signo == SIGKILL || signo == SIGSTOP))) {
        *result = -EINVAL;
        return 0;
    }
    if (act != NULL && ignores(act->handler, signo))
        return -1;
    if (old != NULL) {
        sigstore_read(t, (int)signo, old);
        old->flags &= KEPT_SA_FLAGS;
    }
    if (act != NULL) {
        kernel_sigaction stored = *act;
        stored.flags &= KEPT_SA_FLAGS;
        stored.mask &= ~UNBLOCKABLE_BITS;
        sigstore_write(t, (int)signo, &stored);
    }
    *result = 0;
    return 0;
}

/* -- the Python object ----------------------------------------------------------------- */

static int parse_signo(PyObject *arg, int *signo) {
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < 1 || value > SIGSTORE_SIGNALS) {
        PyErr_Format(PyExc_ValueError, "no signal %ld", value);
        return -1;
    }
    *signo = (int)value;
    return 0;
}

static PyObject *as_tuple(const kernel_sigaction *action) {
    return Py_BuildValue("(KKKK)", (unsigned long long)action->handler,
                         (unsigned long long)action->flags,
                         (unsigned long long)action->restorer,
                         (unsigned long long)action->mask);
}

/* get(signo): (handler, flags, restorer, mask). */
static PyObject *SigActions_get(SigActions *t, PyObject *arg) {
    int signo;
    kernel_sigaction action;
    if (parse_signo(arg, &signo) < 0)
        return NULL;
    sigstore_read(t, signo, &action);
    return as_tuple(&action);
}

/* set(signo, handler, flags, restorer, mask): stored as given. */
static PyObject *SigActions_set(SigActions *t, PyObject *args) {
    PyObject *number;
    unsigned long long handler, flags, restorer, mask;
    int signo;
    if (!PyArg_ParseTuple(args, "OKKKK", &number, &handler, &flags, &restorer, &mask)
        || parse_signo(number, &signo) < 0)
        return NULL;
    kernel_sigaction action = {handler, flags, restorer, mask};
    sigstore_write(t, signo, &action);
    Py_RETURN_NONE;
}

/* changed(): [(signo, (handler, flags, restorer, mask))] of every action that is not
 * all zero (the default), lowest first. */
static PyObject *SigActions_changed(SigActions *t, PyObject *unused) {
    PyObject *list = PyList_New(0);
    for (int signo = 1; list != NULL && signo <= SIGSTORE_SIGNALS; signo++) {
        kernel_sigaction action;
        sigstore_read(t, signo, &action);
        if (!action.handler && !action.flags && !action.restorer && !action.mask)
            continue;
        PyObject *item = Py_BuildValue("(iN)", signo, as_tuple(&action));
        if (item == NULL || PyList_Append(list, item) < 0)
            Py_CLEAR(list);
        Py_XDECREF(item);
    }
    return list;
}

/* reset_handled(): what execve (and clone3's CLONE_CLEAR_SIGHAND) do, Linux's
 * flush_signal_handlers: every handler back to SIG_DFL, ignored ones stay SIG_IGN,
 * and every action's flags, restorer and mask cleared. */
static PyObject *SigActions_reset_handled(SigActions *t, PyObject *unused) {
    begin_write(t);
    for (int i = 0; i < SIGSTORE_SIGNALS; i++) {
        kernel_sigaction reset = {0, 0, 0, 0};
        if (t->actions[i].handler == HANDLER_IGNORE)
            reset.handler = HANDLER_IGNORE;
        store_action(&t->actions[i], &reset);
    }
    end_write(t);
    Py_RETURN_NONE;
}

static PyMethodDef SigActions_methods[] = {
    {"get", (PyCFunction)SigActions_get, METH_O,
     "get(signo): (handler, flags, restorer, mask)."},
    {"set", (PyCFunction)SigActions_set, METH_VARARGS,
     "set(signo, handler, flags, restorer, mask): the action, stored as given."},
    {"changed", (PyCFunction)SigActions_changed, METH_NOARGS,
     "changed(): [(signo, action)] of the actions that are not the default."},
    {"reset_handled", (PyCFunction)SigActions_reset_handled, METH_NOARGS,
     "reset_handled(): as execve: handlers to SIG_DFL, SIG_IGN kept, the rest cleared."},
    {NULL},
};

PyTypeObject SigActionsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvmdune.linux._fastpath.SigActions",
    .tp_basicsize = sizeof(SigActions),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The guest's signal dispositions, shared with the fast path's server.",
    .tp_new = PyType_GenericNew,
    .tp_methods = SigActions_methods,
};

int sigstore_register(PyObject *module) {
    if (PyType_Ready(&SigActionsType) < 0)
        return -1;
    Py_INCREF(&SigActionsType);
    if (PyModule_AddObject(module, "SigActions", (PyObject *)&SigActionsType) < 0) {
        Py_DECREF(&SigActionsType);
        return -1;
    }
    return 0;
}
