/*
 * iter.c -- the iterators a Store hands out: ReadIterator (read_all / read_stream, over a
 * core cairn_iter) and NamesIterator (streams(), paging through cairn_streams).  A read
 * iterator is linked into its store's list so that closing the store can close the core
 * iterator first; after that, next() raises StoreClosed.
 */
#include "binding.h"

struct cpy_readiter {
    PyObject_HEAD
    cpy_store *store; /* strong */
    cairn_iter *it;   /* NULL when exhausted, detached, or never opened */
    cpy_readiter *prev, *next;
    int linked;
    int busy;      /* a next() runs without the GIL */
    int done;      /* exhausted: StopIteration from now on */
    int raw;       /* upcasters do not apply */
    int upcasting; /* upcasters were defined at the last refill: next() runs Lua, GIL released */
    cpy_namecache names;
    int is_stream;     /* read_stream: names.e[0].s is the stream (for StreamDeleted.stream) */
    PyObject *head;    /* store.query(): cairn_iter_head as an int; NULL for other reads */
    uint64_t head_pos; /* its value */
};

static inline cpy_state *iter_state(cpy_store *s) { return cpy_state_of_module(s->module); }

static void readiter_unlink(cpy_readiter *self) {
    cpy_store *s = self->store;
    if (!self->linked) return;
    if (self->prev)
        self->prev->next = self->next;
    else
        s->iters = self->next;
    if (self->next) self->next->prev = self->prev;
    self->prev = self->next = NULL;
    self->linked = 0;
}

/* Drops the core iterator (cheap: frees its buffer; it holds no snapshot between refills). */
static void readiter_release(cpy_readiter *self) {
    if (self->it) {
        cairn_iter_close(self->it);
        self->it = NULL;
    }
    readiter_unlink(self);
}

void cpy_readiters_detach(cpy_store *s) {
    while (s->iters) readiter_release(s->iters);
}

/* A new iterator linked into `s`, or NULL + StoreClosed when the store is closed. */
static cpy_readiter *readiter_alloc(cpy_store *s, int raw) {
    cpy_state *st = iter_state(s);
    cpy_readiter *self;

    if (s->closed || !s->handle) return (cpy_readiter *)cpy_raise_closed(st);
    self = (cpy_readiter *)st->ReadIter_Type->tp_alloc(st->ReadIter_Type, 0);
    if (!self) return NULL;
    self->store = (cpy_store *)Py_NewRef(s);
    self->raw = raw;
    self->next = s->iters;
    if (s->iters) s->iters->prev = self;
    s->iters = self;
    self->linked = 1;
    return self;
}

PyObject *cpy_readiter_new_all(cpy_store *s, uint64_t start, int backwards, uint64_t limit,
                               int empty, PyObject *filters[4], int raw) {
    cpy_readiter *self = readiter_alloc(s, raw);
    cairn_filter f;
    cairn_slice *slices = NULL; /* the core copies the filter: ours lives for the call */
    const cairn_slice *lists[4] = {NULL, NULL, NULL, NULL};
    size_t counts[4] = {0, 0, 0, 0}, total = 0, k = 0;
    cairn_store *h;
    cairn_iter *it = NULL;
    int i, rc;

    if (!self) return NULL;
    if (empty) {
        self->done = 1;
        readiter_unlink(self);
        return (PyObject *)self;
    }
    for (i = 0; i < 4; i++)
        if (filters[i]) total += (size_t)PyTuple_GET_SIZE(filters[i]);
    if (total && !(slices = PyMem_Calloc(total, sizeof(cairn_slice)))) {
        PyErr_NoMemory();
        goto fail;
    }
    for (i = 0; i < 4; i++) {
        Py_ssize_t j;
        if (!filters[i]) continue;
        lists[i] = slices + k;
        counts[i] = (size_t)PyTuple_GET_SIZE(filters[i]);
        for (j = 0; j < PyTuple_GET_SIZE(filters[i]); j++, k++) {
            Py_ssize_t n;
            const char *p = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(filters[i], j), &n);
            if (!p) goto fail;
            slices[k].ptr = p;
            slices[k].len = (size_t)n;
        }
    }
    f.types = lists[0];
    f.ntypes = counts[0];
    f.categories = lists[1];
    f.ncategories = counts[1];
    f.streams = lists[2];
    f.nstreams = counts[2];
    f.tags = lists[3];
    f.ntags = counts[3];

    CPY_STORE_CALL(s, h, rc, cairn_iter_all(h, start, backwards, limit, &f, &it));
    if (rc >= 0) {
        cairn_iter_set_raw(it, raw);
        self->it = it;
    }
    /* leaving may detach (close) the new iterator: next() then raises */
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) goto fail;
    PyMem_Free(slices);
    return (PyObject *)self;
fail:
    PyMem_Free(slices);
    Py_DECREF(self);
    return NULL;
}

PyObject *cpy_readiter_new_query(cpy_store *s, PyObject *query, uint64_t start, int backwards,
                                 uint64_t limit, int empty) {
    cpy_state *st = iter_state(s);
    cpy_readiter *self = readiter_alloc(s, 0);
    cpy_core_query q;
    cairn_store *h;
    cairn_iter *it = NULL;
    uint64_t head = 0;
    int rc;

    if (!self) return NULL;
    if (cpy_query_core(st, query, &q) < 0) goto fail;
    /* the head is read even when nothing is to be yielded: it is the decision's `after` */
    CPY_STORE_CALL(s, h, rc, cairn_iter_query(h, &q.q, start, backwards, limit, &it, &head));
    cpy_query_core_free(&q);
    if (rc >= 0) self->it = it;
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) goto fail;
    if (!backwards && empty) head = start > 1 ? start - 1 : 0; /* limit=0: nothing seen */
    self->head_pos = head;
    if (!(self->head = PyLong_FromUnsignedLongLong(head))) goto fail;
    if (empty) {
        self->done = 1;
        readiter_release(self);
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

PyObject *cpy_readiter_new_stream(cpy_store *s, PyObject *stream, int64_t start, int backwards,
                                  uint64_t limit, int empty, int raw) {
    cpy_readiter *self = readiter_alloc(s, raw);
    cairn_store *h;
    cairn_iter *it = NULL;
    Py_ssize_t len;
    const char *p;
    int rc;

    if (!self) return NULL;
    if (empty) {
        self->done = 1;
        readiter_unlink(self);
        return (PyObject *)self;
    }
    p = PyUnicode_AsUTF8AndSize(stream, &len);
    if (!p) goto fail;
    CPY_STORE_CALL(s, h, rc, cairn_iter_stream(h, p, (size_t)len, start, backwards, limit, &it));
    if (rc >= 0) {
        cairn_iter_set_raw(it, raw);
        self->it = it;
    }
    if (cpy_store_call_end(s, h, rc, &stream, 1) < 0) goto fail;
    /* every event of this read has the caller's stream name: reuse that str */
    if (PyUnicode_CheckExact(stream)) {
        self->names.e[0].s = Py_NewRef(stream);
        self->names.e[0].u = p;
        self->names.e[0].n = len;
        self->names.next = 1;
        self->is_stream = 1;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyObject *readiter_next(cpy_readiter *self) {
    cpy_store *s = self->store;
    cpy_state *st;
    cairn_event ev;
    cairn_iter *it = self->it;
    cairn_store *h = NULL;
    PyObject *r = NULL;
    int rc;

    if (self->done || !s) return NULL;
    st = iter_state(s);
    if (self->busy) {
        PyErr_SetString(PyExc_ValueError, "iterator already executing");
        return NULL;
    }
    if (s->closed || !s->handle || !it) {
        readiter_release(self);
        return cpy_raise_closed(st);
    }
    if (cairn_iter_buffered(it) > 0 && !self->upcasting) {
        rc = cairn_iter_next(it, &ev); /* copies from the buffer only: the GIL is kept */
        if (rc < 0) return cpy_raise(st, rc, self->is_stream ? &self->names.e[0].s : NULL, 1);
    } else {
        /* A refill reads LMDB; with upcasters every next() runs Lua, buffered or not. */
        self->busy = 1;
        CPY_STORE_CALL(s, h, rc, cairn_iter_next(it, &ev));
        self->busy = 0;
        if (!h) return NULL;
        /* the refill just done tells whether the buffered next() calls run Lua too */
        self->upcasting = cairn_iter_upcasting(it);
    }
    if (rc > 0) {
        r = cpy_recorded_new(st, &ev, &self->names); /* ev lives in it: before leaving */
        /* a forward query its limit cut is complete only up to its last event (spec 5) */
        if (r && self->head && self->head_pos != cairn_iter_head(it)) {
            PyObject *head = PyLong_FromUnsignedLongLong(self->head_pos = cairn_iter_head(it));
            if (!head)
                Py_CLEAR(r);
            else
                Py_SETREF(self->head, head);
        }
    } else if (rc == 0) {
        self->done = 1;
        readiter_release(self);
    }
    /* upcasters may have printed */
    cpy_store_call_end(s, h, rc, self->is_stream ? &self->names.e[0].s : NULL, 1);
    return r;
}

static int readiter_traverse(cpy_readiter *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->store);
    return 0;
}

static int readiter_clear(cpy_readiter *self) {
    /* the core iterator and the link go before the store reference */
    if (self->store) readiter_release(self);
    Py_CLEAR(self->store);
    Py_CLEAR(self->head);
    cpy_namecache_clear(&self->names);
    return 0;
}

static PyObject *readiter_get_head(cpy_readiter *self, void *closure) {
    (void)closure;
    if (!self->head) {
        PyErr_SetString(PyExc_AttributeError,
                        "head: only an iterator from store.query() has one (store.head() is "
                        "the store's)");
        return NULL;
    }
    return Py_NewRef(self->head);
}

static PyGetSetDef readiter_getset[] = {
    {"head", (getter)readiter_get_head, NULL,
     "store.query(): store.head() when the query was made; nothing after it is yielded.", NULL},
    {NULL},
};

static void readiter_dealloc(cpy_readiter *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    readiter_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot readiter_slots[] = {
    {Py_tp_dealloc, readiter_dealloc},
    {Py_tp_traverse, readiter_traverse},
    {Py_tp_clear, readiter_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, readiter_next},
    {Py_tp_getset, readiter_getset},
    {Py_tp_doc, (void *)"Iterator over recorded events (from read_all, read_stream or query)."},
    {0, NULL},
};

static PyType_Spec readiter_spec = {
    .name = "cairn.ReadIterator",
    .basicsize = sizeof(cpy_readiter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = readiter_slots,
};

/* ---------------------------------------------------------------------------------
 * NamesIterator: pages of stream names, collected without the GIL (cpy_names).
 * --------------------------------------------------------------------------------- */
#define NAMES_PAGE 512

typedef struct cpy_namesiter {
    PyObject_HEAD
    cpy_store *store; /* strong */
    PyObject *prefix; /* str or NULL */
    PyObject *page;   /* list of str */
    Py_ssize_t idx;
    PyObject *after; /* bytes: the last name returned by the core, or NULL */
    int done;        /* the core has no more pages */
} cpy_namesiter;

PyObject *cpy_namesiter_new(cpy_store *s, PyObject *prefix) {
    cpy_state *st = iter_state(s);
    cpy_namesiter *self;

    if (s->closed || !s->handle) return cpy_raise_closed(st);
    self = (cpy_namesiter *)st->NamesIter_Type->tp_alloc(st->NamesIter_Type, 0);
    if (!self) return NULL;
    self->store = (cpy_store *)Py_NewRef(s);
    self->prefix = Py_XNewRef(prefix);
    return (PyObject *)self;
}

static int names_fetch(cpy_namesiter *self) {
    cpy_store *s = self->store;
    cpy_names c = {NULL, 0, 0, 0, 0, 0};
    const char *pp = "", *ap = NULL;
    Py_ssize_t plen = 0, alen = 0;
    cairn_store *h;
    PyObject *page = NULL, *last = NULL;
    int rc, ok = -1;

    if (self->prefix && !(pp = PyUnicode_AsUTF8AndSize(self->prefix, &plen))) return -1;
    if (self->after) {
        ap = PyBytes_AS_STRING(self->after);
        alen = PyBytes_GET_SIZE(self->after);
    }
    CPY_STORE_CALL(
        s, h, rc,
        cairn_streams(h, pp, (size_t)plen, ap, (size_t)alen, NAMES_PAGE, cpy_names_add, &c));
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) goto out;
    if (!(page = cpy_names_list(&c))) goto out;
    if (c.count && !(last = cpy_names_last(&c))) goto out; /* where the next page starts */
    if (c.count < NAMES_PAGE) self->done = 1;
    Py_XSETREF(self->after, last);
    last = NULL;
    Py_XSETREF(self->page, page);
    page = NULL;
    self->idx = 0;
    ok = 0;
out:
    Py_XDECREF(page);
    Py_XDECREF(last);
    cpy_names_free(&c);
    return ok;
}

static PyObject *namesiter_next(cpy_namesiter *self) {
    for (;;) {
        if (!self->store) return NULL;
        if (self->store->closed) return cpy_raise_closed(iter_state(self->store));
        if (self->page && self->idx < PyList_GET_SIZE(self->page))
            return Py_NewRef(PyList_GET_ITEM(self->page, self->idx++));
        if (self->done) return NULL;
        if (names_fetch(self) < 0) return NULL;
    }
}

static int namesiter_traverse(cpy_namesiter *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->store);
    Py_VISIT(self->page);
    return 0;
}

static int namesiter_clear(cpy_namesiter *self) {
    Py_CLEAR(self->store);
    Py_CLEAR(self->prefix);
    Py_CLEAR(self->page);
    Py_CLEAR(self->after);
    return 0;
}

static void namesiter_dealloc(cpy_namesiter *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    namesiter_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot namesiter_slots[] = {
    {Py_tp_dealloc, namesiter_dealloc},
    {Py_tp_traverse, namesiter_traverse},
    {Py_tp_clear, namesiter_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, namesiter_next},
    {Py_tp_doc, (void *)"Iterator over stream names (from Store.streams)."},
    {0, NULL},
};

static PyType_Spec namesiter_spec = {
    .name = "cairn.StreamNameIterator",
    .basicsize = sizeof(cpy_namesiter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = namesiter_slots,
};

int cpy_iter_types_init(PyObject *module, cpy_state *st) {
    st->ReadIter_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &readiter_spec, NULL);
    if (!st->ReadIter_Type || PyModule_AddType(module, st->ReadIter_Type) < 0) return -1;
    st->NamesIter_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &namesiter_spec, NULL);
    if (!st->NamesIter_Type || PyModule_AddType(module, st->NamesIter_Type) < 0) return -1;
    return 0;
}
