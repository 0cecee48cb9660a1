/*
 * subscription.c -- cairn.Subscription, the iterator store.subscribe() returns, over a
 * core cairn_sub.  next() waits without the GIL in slices of at most SLICE_MS, taking the
 * GIL back between slices to run signal handlers (Ctrl-C) and to notice a closed store or
 * a close() from another thread.  Between slices it sleeps on the notify futex: no polling.
 */
#include "binding.h"

#include <math.h>
#include <time.h>

#define SLICE_MS 100

typedef struct cpy_sub {
    PyObject_HEAD
    cpy_store *store;    /* strong */
    cairn_sub *sub;      /* NULL once closed */
    double timeout;      /* seconds without an event before the iteration ends; < 0: forever */
    int busy;            /* a next() runs (maybe waiting without the GIL) */
    int close_requested; /* close() was called while busy: the waiting next() closes */
    int close_ack;       /* ... and acknowledges the event in hand (close(), not a failure) */
    cpy_namecache names;
} cpy_sub;

static inline cpy_state *sub_state(cpy_sub *self) {
    return cpy_state_of_module(self->store->module);
}

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Closes the core subscription, GIL released.  ack: the event in hand is acknowledged
 * (close(), a with block left normally); otherwise (a with block left through an exception,
 * the object collected unclosed) it is delivered again.  Returns the core code. */
static int sub_release(cpy_sub *self, int ack) {
    cairn_sub *sub = self->sub;
    int rc = CAIRN_OK;
    if (!sub) return CAIRN_OK;
    self->sub = NULL;
    if (ack)
        CPY_UNLOCKED(rc = cairn_sub_close(sub));
    else
        CPY_UNLOCKED(cairn_sub_discard(sub));
    return rc;
}

PyObject *cpy_store_subscribe(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"start",      "name",    "timeout", "types",
                             "categories", "streams", "tags",    NULL};
    static const char *fnames[4] = {"types", "categories", "streams", "tags"};
    cpy_state *st = cpy_state_of_module(s->module);
    PyObject *start_o = NULL, *name_o = Py_None, *timeout_o = Py_None;
    PyObject *fo[4] = {Py_None, Py_None, Py_None, Py_None}, *f[4] = {NULL, NULL, NULL, NULL};
    cairn_slice *slices = NULL;
    const cairn_slice *lists[4] = {NULL, NULL, NULL, NULL};
    size_t counts[4] = {0, 0, 0, 0}, total = 0, k = 0;
    static const cairn_slice nothing = {"", 0}; /* no event has an empty type */
    const char *name = NULL;
    Py_ssize_t name_len = 0;
    double timeout = -1;
    uint64_t start = 1;
    int has_start, i, rc;
    cairn_filter filt;
    cairn_sub *sub = NULL;
    cairn_store *h;
    cpy_sub *self = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$OOOOOO:subscribe", kwlist, &start_o, &name_o,
                                     &timeout_o, &fo[0], &fo[1], &fo[2], &fo[3]))
        return NULL;
    if (start_o && cpy_opt_uint(start_o, "start", &has_start, &start) < 0) return NULL;
    if (start_o && !has_start) start = 1;
    if (start == 0) start = 1; /* there is no position 0 */
    if (name_o != Py_None) {
        if (!PyUnicode_Check(name_o)) {
            PyErr_Format(PyExc_TypeError, "name must be a str or None, not %.100s",
                         Py_TYPE(name_o)->tp_name);
            return NULL;
        }
        if (!(name = cpy_stream_arg(name_o, "name", &name_len))) return NULL; /* surrogates */
    }
    if (timeout_o != Py_None) {
        if (PyBool_Check(timeout_o) || !(PyLong_Check(timeout_o) || PyFloat_Check(timeout_o))) {
            PyErr_Format(PyExc_TypeError, "timeout must be a number of seconds or None, not %.100s",
                         Py_TYPE(timeout_o)->tp_name);
            return NULL;
        }
        timeout = PyFloat_AsDouble(timeout_o);
        if (timeout == -1 && PyErr_Occurred()) return NULL;
        if (!(timeout >= 0) || isinf(timeout)) {
            PyErr_Format(PyExc_ValueError, "timeout must be a finite number >= 0, got %R",
                         timeout_o);
            return NULL;
        }
    }
    for (i = 0; i < 4; i++)
        if (cpy_filter_arg(fo[i], fnames[i], &f[i]) < 0) goto out;
    for (i = 0; i < 4; i++)
        if (f[i]) total += (size_t)PyTuple_GET_SIZE(f[i]);
    if (total && !(slices = PyMem_Calloc(total, sizeof(cairn_slice)))) {
        PyErr_NoMemory();
        goto out;
    }
    for (i = 0; i < 4; i++) {
        Py_ssize_t j;
        if (!f[i]) continue;
        if (PyTuple_GET_SIZE(f[i]) == 0) {
            /* an empty list matches no event (docs/API.md "Reading") */
            lists[0] = &nothing, counts[0] = 1;
            continue;
        }
        lists[i] = slices + k;
        counts[i] = (size_t)PyTuple_GET_SIZE(f[i]);
        for (j = 0; j < PyTuple_GET_SIZE(f[i]); j++, k++) {
            Py_ssize_t n;
            const char *p = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(f[i], j), &n);
            if (!p) goto out;
            slices[k].ptr = p;
            slices[k].len = (size_t)n;
        }
    }
    filt.types = lists[0], filt.ntypes = counts[0];
    filt.categories = lists[1], filt.ncategories = counts[1];
    filt.streams = lists[2], filt.nstreams = counts[2];
    filt.tags = lists[3], filt.ntags = counts[3];

    if (!(self = (cpy_sub *)st->Sub_Type->tp_alloc(st->Sub_Type, 0))) goto out;
    self->store = (cpy_store *)Py_NewRef(s);
    self->timeout = timeout;
    CPY_STORE_CALL(s, h, rc, cairn_subscribe(h, start, &filt, name, (size_t)name_len, &sub));
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) goto fail;
    self->sub = sub;
    goto out;
fail:
    Py_CLEAR(self);
out:
    PyMem_Free(slices);
    for (i = 0; i < 4; i++) Py_XDECREF(f[i]);
    return (PyObject *)self;
}

PyObject *cpy_store_checkpoint(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"name", NULL};
    PyObject *name_o;
    const char *name;
    Py_ssize_t len;
    uint64_t pos = 0;
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:checkpoint", kwlist, &name_o)) return NULL;
    if (!(name = cpy_stream_arg(name_o, "name", &len))) return NULL;
    CPY_STORE_CALL(s, h, rc, cairn_checkpoint(h, name, (size_t)len, &pos));
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(pos);
}

static PyObject *sub_next(cpy_sub *self) {
    cpy_state *st;
    cpy_store *s = self->store;
    double deadline;
    cairn_event ev;
    int rc;

    if (!s || !self->sub) return NULL; /* closed: the iteration is over */
    st = sub_state(self);
    if (self->busy) {
        PyErr_SetString(PyExc_ValueError, "subscription already executing");
        return NULL;
    }
    if (cairn_sub_buffered(self->sub) > 0 && !s->closed && s->handle) {
        /* copies from the page buffer only: keep the GIL */
        rc = cairn_sub_next(self->sub, 0, &ev);
        if (rc > 0) return cpy_recorded_new(st, &ev, &self->names);
        if (rc < 0) return cpy_raise(st, rc, NULL, 0);
    }
    deadline = self->timeout >= 0 ? mono_now() + self->timeout : 0;
    self->busy = 1;
    for (;;) {
        cairn_sub *sub = self->sub;
        int slice = SLICE_MS;
        if (s->closed || !s->handle) {
            self->busy = 0;
            sub_release(self, 1);
            return cpy_raise_closed(st);
        }
        if (self->timeout >= 0) {
            double left = deadline - mono_now();
            if (left < 0) left = 0;
            if (left * 1000 < slice) slice = (int)(left * 1000);
        }
        /* the subscription holds its own environment: no store call, nothing in flight */
        CPY_UNLOCKED(rc = cairn_sub_next(sub, slice, &ev));
        cpy_log_flush(st); /* upcasters may have printed */
        if (self->close_requested) {
            self->busy = 0;
            rc = sub_release(self, self->close_ack);
            return rc < 0 ? cpy_raise(st, rc, NULL, 0) : NULL;
        }
        if (rc > 0) {
            self->busy = 0;
            return cpy_recorded_new(st, &ev, &self->names);
        }
        if (rc < 0) {
            self->busy = 0;
            return cpy_raise(st, rc, NULL, 0);
        }
        if (PyErr_CheckSignals() < 0) {
            self->busy = 0;
            return NULL;
        }
        if (self->timeout >= 0 && mono_now() >= deadline) {
            self->busy = 0;
            return NULL; /* timeout: StopIteration (a later next() waits again) */
        }
    }
}

static PyObject *sub_end(cpy_sub *self, int ack) {
    int rc;
    if (!self->sub) Py_RETURN_NONE;
    if (self->busy) { /* another thread waits in next(): it closes after its slice */
        self->close_requested = 1;
        self->close_ack = ack;
        Py_RETURN_NONE;
    }
    rc = sub_release(self, ack);
    if (rc < 0) return cpy_raise(sub_state(self), rc, NULL, 0);
    Py_RETURN_NONE;
}

static PyObject *sub_close(cpy_sub *self, PyObject *unused) {
    (void)unused;
    return sub_end(self, 1);
}

static PyObject *sub_ack(cpy_sub *self, PyObject *unused) {
    cpy_state *st = sub_state(self);
    int rc;
    (void)unused;
    if (!self->sub) return cpy_raise_closed(st);
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "ack() while another thread waits in next()");
        return NULL;
    }
    CPY_UNLOCKED(rc = cairn_sub_ack(self->sub));
    if (rc < 0) return cpy_raise(st, rc, NULL, 0);
    Py_RETURN_NONE;
}

static PyObject *sub_enter(cpy_sub *self, PyObject *unused) {
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *sub_exit(cpy_sub *self, PyObject *args) {
    PyObject *r;
    /* left through an exception: the event in hand was not processed */
    int failed = PyTuple_GET_SIZE(args) > 0 && PyTuple_GET_ITEM(args, 0) != Py_None;
    r = sub_end(self, !failed);
    if (!r) return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *sub_get_closed(cpy_sub *self, void *unused) {
    (void)unused;
    return PyBool_FromLong(self->sub == NULL || self->close_requested);
}

static int sub_traverse(cpy_sub *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->store);
    return 0;
}

static int sub_clear(cpy_sub *self) {
    if (self->sub && !self->busy) sub_release(self, 0); /* collected unclosed: no ack */
    Py_CLEAR(self->store);
    cpy_namecache_clear(&self->names);
    return 0;
}

static void sub_dealloc(cpy_sub *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    sub_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef sub_methods[] = {
    {"close", (PyCFunction)sub_close, METH_NOARGS,
     "close($self, /)\n--\n\nAcknowledge the event in hand (named subscriptions: store the "
     "checkpoint) and end the iteration."},
    {"ack", (PyCFunction)sub_ack, METH_NOARGS,
     "ack($self, /)\n--\n\nAcknowledge the event in hand now (named subscriptions: store the "
     "checkpoint), instead of when the next one is asked for or at close()."},
    {"__enter__", (PyCFunction)sub_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)sub_exit, METH_VARARGS, NULL},
    {NULL},
};

static PyGetSetDef sub_getset[] = {
    {"closed", (getter)sub_get_closed, NULL, "True once close() was called.", NULL},
    {NULL},
};

static PyType_Slot sub_slots[] = {
    {Py_tp_dealloc, sub_dealloc},
    {Py_tp_traverse, sub_traverse},
    {Py_tp_clear, sub_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, sub_next},
    {Py_tp_methods, sub_methods},
    {Py_tp_getset, sub_getset},
    {Py_tp_doc, (void *)"A live subscription (from Store.subscribe): iterate for events."},
    {0, NULL},
};

static PyType_Spec sub_spec = {
    .name = "cairn.Subscription",
    .basicsize = sizeof(cpy_sub),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = sub_slots,
};

int cpy_sub_type_init(PyObject *module, cpy_state *st) {
    st->Sub_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &sub_spec, NULL);
    if (!st->Sub_Type || PyModule_AddType(module, st->Sub_Type) < 0) return -1;
    return 0;
}
