/* Fast walks of x86-64 page tables for kvmdune.memory: which leaf entries of a range
 * have some bits set (accessed, dirty, the software bits of kvmdune.memory.page_bits),
 * changing them on the way; clearing a range's leaf entries (unmap: an exec's teardown
 * of a forked shell's whole address space); listing the tables.
 *
 * A range of 1 GiB is 262,144 entries in 512 tables; walking them from Python costs
 * milliseconds, in C a fraction of one. The tables are the VMM's own (the guest never
 * writes them, except the A and D bits the CPU sets); still, every table address is
 * checked against the memory before it is read, so that a corrupt entry can never make
 * this code touch host memory outside the guest's.
 *
 * The entry bits below are kvmdune.memory.pagetable.PTE's (the module exports them,
 * and a test checks that they agree). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#define PTE_PRESENT 0x1ULL
#define PTE_ACCESSED 0x20ULL
#define PTE_DIRTY 0x40ULL
#define PTE_HUGE 0x80ULL                     /* PS: a leaf above level 1 */
#define PTE_PROTNONE 0x400ULL                /* software: mapped, no access */
#define PTE_ADDRESS 0x000FFFFFFFFFF000ULL
/* What a leaf entry has when the MMU may cache a translation through it. */
#define CACHED (PTE_PRESENT | PTE_ACCESSED)
#define ENTRIES_PER_TABLE 512
#define PAGE_SHIFT 12
#define LEVEL_BITS 9
#define PAGE_SIZE (1ULL << PAGE_SHIFT)
#define TOP_LEVEL 4

static int append_long(PyObject *list, unsigned long long value) {
    PyObject *item = PyLong_FromUnsignedLongLong(value);
    if (item == NULL)
        return -1;
    int result = PyList_Append(list, item);
    Py_DECREF(item);
    return result;
}

/* A growable array of (start, length) frame ranges. */
struct ranges {
    uint64_t *items; /* start, length pairs */
    size_t count, capacity;
};

static int ranges_add(struct ranges *r, uint64_t start, uint64_t length) {
    if (r->count > 0) { /* the common case: the next frame of a contiguous run */
        uint64_t *last = &r->items[2 * (r->count - 1)];
        if (last[0] + last[1] == start) {
            last[1] += length;
            return 0;
        }
    }
    if (r->count == r->capacity) {
        size_t capacity = r->capacity ? 2 * r->capacity : 64;
        uint64_t *items = realloc(r->items, capacity * 2 * sizeof(uint64_t));
        if (items == NULL)
            return -1;
        r->items = items;
        r->capacity = capacity;
    }
    r->items[2 * r->count] = start;
    r->items[2 * r->count + 1] = length;
    r->count++;
    return 0;
}

static int compare_ranges(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The ranges sorted, overlapping and adjacent ones merged, as a list of tuples. */
static PyObject *ranges_to_list(struct ranges *r) {
    qsort(r->items, r->count, 2 * sizeof(uint64_t), compare_ranges);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    size_t i = 0;
    while (i < r->count) {
        uint64_t start = r->items[2 * i], end = start + r->items[2 * i + 1];
        for (i++; i < r->count && r->items[2 * i] <= end; i++) {
            uint64_t next_end = r->items[2 * i] + r->items[2 * i + 1];
            if (next_end > end)
                end = next_end;
        }
        PyObject *run = Py_BuildValue("(KK)", (unsigned long long)start,
                                      (unsigned long long)(end - start));
        if (run == NULL || PyList_Append(out, run) < 0) {
            Py_XDECREF(run);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(run);
    }
    return out;
}

/* One walk: which leaf entries to report (any bit of test), what to change in them
 * (set1 where cond1 is set, set2 where cond2 is set, then clear the clear bits: the
 * conditions see the entry as it was), and what it found. */
struct walk {
    uint64_t *words;
    uint64_t table_limit; /* guest-physical end of the memory the tables live in */
    uint64_t test, clear, cond1, set1, cond2, set2;
    uint64_t start, end;
    unsigned long long pages_hit; /* in 4 KiB pages */
    PyObject *pages;              /* the hit pages' addresses, or NULL */
    struct ranges full;           /* frames that lost A (or A and D): need invalidation */
    struct ranges dirty_only;     /* frames that lost only D: need write protection */
};

static int visit_leaf(struct walk *w, uint64_t *slot, uint64_t vaddr, uint64_t size) {
    uint64_t entry = *slot;
    if (!(entry & (PTE_PRESENT | PTE_PROTNONE)) || !(entry & w->test))
        return 0;
    w->pages_hit += size / PAGE_SIZE;
    if (w->pages != NULL && append_long(w->pages, vaddr) < 0)
        return -1;
    uint64_t changed = entry;
    if (entry & w->cond1)
        changed |= w->set1;
    if (entry & w->cond2)
        changed |= w->set2;
    changed &= ~w->clear;
    if (changed == entry)
        return 0;
    *slot = changed;
    /* Only the hardware bits matter to the MMU, and only in a present entry. */
    uint64_t lost = entry & ~changed;
    if (!(entry & PTE_PRESENT))
        return 0;
    uint64_t frame = entry & PTE_ADDRESS & ~(size - 1);
    if (lost & PTE_ACCESSED)
        return ranges_add(&w->full, frame, size);
    if (lost & PTE_DIRTY)
        return ranges_add(&w->dirty_only, frame, size);
    return 0;
}

static int walk_table(struct walk *w, uint64_t table, int level, uint64_t base) {
    if (table % PAGE_SIZE || table >= w->table_limit)
        return 0; /* not a table in guest memory: nothing to walk */
    int shift = PAGE_SHIFT + LEVEL_BITS * (level - 1);
    uint64_t span = 1ULL << shift;
    uint64_t first = w->start > base ? (w->start - base) >> shift : 0;
    uint64_t last = (w->end - 1 - base) >> shift;
    if (last >= ENTRIES_PER_TABLE)
        last = ENTRIES_PER_TABLE - 1;
    uint64_t *entries = w->words + table / sizeof(uint64_t);
    for (uint64_t i = first; i <= last; i++) {
        uint64_t entry = entries[i], vaddr = base + i * span;
        if (level == 1 || (entry & PTE_HUGE)) {
            if (visit_leaf(w, &entries[i], vaddr, span) < 0)
                return -1;
        } else if ((entry & PTE_PRESENT) &&
                   walk_table(w, entry & PTE_ADDRESS, level - 1, vaddr) < 0) {
            return -1;
        }
    }
    return 0;
}

/* walk(words, root, start, end, test, clear, cond1, set1, cond2, set2, collect)
 *   -> (pages_hit, pages, full, dirty_only)
 * Visits the leaf entries (present or PROT_NONE) mapping [start, end) of the user half
 * under the root table. An entry with any bit of test is a hit: counted (in 4 KiB
 * pages), its address listed when collect (a large page's once, by its base), and
 * changed: set1 added where cond1 is set, set2 where cond2 is, then the clear bits
 * cleared. full and dirty_only are the frames (as sorted, merged (start, length)
 * ranges) of present entries that lost A, or only D, by the change. */
static PyObject *walk(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long long root, start, end, test, clear, cond1, set1, cond2, set2;
    int collect;
    if (!PyArg_ParseTuple(args, "w*KKKKKKKKKp", &view, &root, &start, &end, &test, &clear,
                          &cond1, &set1, &cond2, &set2, &collect))
        return NULL;
    if (view.itemsize != 8 || view.len % PAGE_SIZE != 0 || !PyBuffer_IsContiguous(&view, 'C')) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "expected whole pages of 64-bit entries");
        return NULL;
    }
    struct walk w = {
        .words = view.buf, .table_limit = (uint64_t)view.len, .test = test, .clear = clear,
        .cond1 = cond1, .set1 = set1, .cond2 = cond2, .set2 = set2,
        .start = start, .end = end,
    };
    PyObject *full = NULL, *dirty_only = NULL, *result = NULL;
    if (collect && (w.pages = PyList_New(0)) == NULL)
        goto done;
    if (start < end && walk_table(&w, root, TOP_LEVEL, 0) < 0) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    if ((full = ranges_to_list(&w.full)) == NULL ||
        (dirty_only = ranges_to_list(&w.dirty_only)) == NULL)
        goto done;
    result = Py_BuildValue("(KOOO)", w.pages_hit, w.pages ? w.pages : Py_None, full, dirty_only);
done:
    Py_XDECREF(w.pages);
    Py_XDECREF(full);
    Py_XDECREF(dirty_only);
    free(w.full.items);
    free(w.dirty_only.items);
    PyBuffer_Release(&view);
    return result;
}

/* One unmap: the leaf entries of [start, end) cleared, and what they held. */
struct clearing {
    uint64_t *words;
    uint64_t table_limit;
    uint64_t owned_bit;
    uint64_t start, end;
    struct ranges present;  /* frames the MMU may have cached: need invalidation */
    struct ranges owned;    /* frames the space owned: to free */
    PyObject *partial;      /* 2 MiB pages only partly inside the range: left alone */
};

static int clear_leaf(struct clearing *c, uint64_t *slot, uint64_t vaddr, uint64_t size) {
    uint64_t entry = *slot;
    if (entry == 0)
        return 0;
    if (vaddr < c->start || vaddr + size > c->end)
        return append_long(c->partial, vaddr); /* the caller splits it */
    *slot = 0;
    uint64_t frame = entry & PTE_ADDRESS & ~(size - 1);
    /* An entry whose A bit is clear was never used by the MMU, so nothing caches it
     * (pagetable.py's CACHED rule): its frame needs no invalidation. */
    if ((entry & CACHED) == CACHED && ranges_add(&c->present, frame, size) < 0)
        return -1;
    if ((entry & c->owned_bit) && ranges_add(&c->owned, frame, size) < 0)
        return -1;
    return 0;
}

static int clear_table(struct clearing *c, uint64_t table, int level, uint64_t base) {
    if (table % PAGE_SIZE || table >= c->table_limit)
        return 0; /* not a table in guest memory: nothing to clear */
    int shift = PAGE_SHIFT + LEVEL_BITS * (level - 1);
    uint64_t span = 1ULL << shift;
    uint64_t first = c->start > base ? (c->start - base) >> shift : 0;
    uint64_t last = (c->end - 1 - base) >> shift;
    if (last >= ENTRIES_PER_TABLE)
        last = ENTRIES_PER_TABLE - 1;
    uint64_t *entries = c->words + table / sizeof(uint64_t);
    for (uint64_t i = first; i <= last; i++) {
        uint64_t entry = entries[i], vaddr = base + i * span;
        if (level == 1 || (level == 2 && (entry & PTE_HUGE))) {
            if (clear_leaf(c, &entries[i], vaddr, span) < 0)
                return -1;
        } else if ((entry & PTE_PRESENT) && !(entry & PTE_HUGE) &&
                   clear_table(c, entry & PTE_ADDRESS, level - 1, vaddr) < 0) {
            return -1;
        }
    }
    return 0;
}

/* clear(words, root, start, end, owned_bit) -> (present, owned, partial)
 * Clears every leaf entry mapping [start, end) of the user half (the tables stay), as
 * PageTables.unmap does: present are the frames of present, accessed entries (the
 * ones the MMU may have cached), owned those of
 * entries with owned_bit (sorted, merged (start, length) ranges), partial the bases of
 * 2 MiB pages only partly inside the range, left untouched for the caller to split. */
static PyObject *clear(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long long root, start, end, owned_bit;
    if (!PyArg_ParseTuple(args, "w*KKKK", &view, &root, &start, &end, &owned_bit))
        return NULL;
    if (view.itemsize != 8 || view.len % PAGE_SIZE != 0 || !PyBuffer_IsContiguous(&view, 'C')) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "expected whole pages of 64-bit entries");
        return NULL;
    }
    struct clearing c = {
        .words = view.buf, .table_limit = (uint64_t)view.len, .owned_bit = owned_bit,
        .start = start, .end = end,
    };
    PyObject *present = NULL, *owned = NULL, *result = NULL;
    if ((c.partial = PyList_New(0)) == NULL)
        goto done;
    if (start < end && clear_table(&c, root, TOP_LEVEL, 0) < 0) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    if ((present = ranges_to_list(&c.present)) == NULL ||
        (owned = ranges_to_list(&c.owned)) == NULL)
        goto done;
    result = Py_BuildValue("(OOO)", present, owned, c.partial);
done:
    Py_XDECREF(c.partial);
    Py_XDECREF(present);
    Py_XDECREF(owned);
    free(c.present.items);
    free(c.owned.items);
    PyBuffer_Release(&view);
    return result;
}

static int list_tables(PyObject *out, const uint64_t *words, uint64_t limit, uint64_t table,
                       int level, int entries) {
    if (table % PAGE_SIZE || table >= limit)
        return 0;
    if (level > 1) {
        const uint64_t *row = words + table / sizeof(uint64_t);
        for (int i = 0; i < entries; i++) {
            if ((row[i] & PTE_PRESENT) && !(row[i] & PTE_HUGE) &&
                list_tables(out, words, limit, row[i] & PTE_ADDRESS, level - 1,
                            ENTRIES_PER_TABLE) < 0)
                return -1;
        }
    }
    return append_long(out, table);
}

/* tables(words, root, top_entries) -> [table]: every table under the root's first
 * top_entries entries (the user half: 256), children before parents, the root last. */
static PyObject *tables(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long long root;
    int top_entries;
    if (!PyArg_ParseTuple(args, "y*Ki", &view, &root, &top_entries))
        return NULL;
    if (view.itemsize != 8 || view.len % PAGE_SIZE != 0 || top_entries < 0 ||
        top_entries > ENTRIES_PER_TABLE) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "expected whole pages of 64-bit entries");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out != NULL &&
        list_tables(out, view.buf, (uint64_t)view.len, root, TOP_LEVEL, top_entries) < 0)
        Py_CLEAR(out);
    PyBuffer_Release(&view);
    return out;
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
    {"walk", walk, METH_VARARGS,
     "walk(words, root, start, end, test, clear, cond1, set1, cond2, set2, collect)"
     " -> (pages_hit, pages, full, dirty_only)."},
    {"runs", runs, METH_VARARGS, "runs(sorted_frames, size) -> [(start, length)]."},
    {"clear", clear, METH_VARARGS,
     "clear(words, root, start, end, owned_bit) -> (present, owned, partial)."},
    {"tables", tables, METH_VARARGS, "tables(words, root, top_entries) -> [table]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ptescan", "Fast page-table walks.", 0, methods,
};

PyMODINIT_FUNC PyInit__ptescan(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* The bits this code gives a meaning to, for the test that pins them. */
    if (PyModule_AddObject(m, "PRESENT", PyLong_FromUnsignedLongLong(PTE_PRESENT)) < 0 ||
        PyModule_AddObject(m, "ACCESSED", PyLong_FromUnsignedLongLong(PTE_ACCESSED)) < 0 ||
        PyModule_AddObject(m, "DIRTY", PyLong_FromUnsignedLongLong(PTE_DIRTY)) < 0 ||
        PyModule_AddObject(m, "HUGE", PyLong_FromUnsignedLongLong(PTE_HUGE)) < 0 ||
        PyModule_AddObject(m, "PROTNONE", PyLong_FromUnsignedLongLong(PTE_PROTNONE)) < 0 ||
        PyModule_AddObject(m, "ADDRESS", PyLong_FromUnsignedLongLong(PTE_ADDRESS)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
