/*
 * transaction.c -- cairn.Transaction, what store.transaction() returns: appends to several
 * streams queued inside a with block and written in one commit when the block exits
 * without an exception.  Each append() checks its arguments at the call, as Store.append
 * does; the expectations are checked at the commit, in call order.
 */
#include "binding.h"

#include <structmember.h>

enum { TX_NEW, TX_OPEN, TX_DONE }; /* new -> open in the with block -> done */

typedef struct cpy_tx {
    PyObject_HEAD
    cpy_store *store;   /* strong */
    PyObject *requests; /* list of (stream, tuple of Event, int expected_version, condition) */
    PyObject *results;  /* None until a successful commit, then a list of AppendResult */
    int state;
} cpy_tx;

static cpy_tx *tx_alloc(PyTypeObject *tp, cpy_store *s) {
    cpy_tx *self = (cpy_tx *)tp->tp_alloc(tp, 0);
    if (!self) return NULL;
    self->store = (cpy_store *)Py_NewRef(s);
    self->results = Py_NewRef(Py_None);
    if (!(self->requests = PyList_New(0))) Py_CLEAR(self);
    return self;
}

PyObject *cpy_transaction_new(cpy_store *s) {
    return (PyObject *)tx_alloc(cpy_state_of_module(s->module)->Tx_Type, s);
}

/* Transaction(store): what store.transaction() does. */
static PyObject *tx_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"store", NULL};
    cpy_state *st = cpy_state_of_type(tp);
    PyObject *store;
    if (!st) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:Transaction", kwlist, st->Store_Type,
                                     &store))
        return NULL;
    return (PyObject *)tx_alloc(tp, (cpy_store *)store);
}

static PyObject *tx_enter(cpy_tx *self, PyObject *unused) {
    (void)unused;
    if (self->state != TX_NEW) {
        PyErr_SetString(PyExc_RuntimeError, "a Transaction can be used for one with block only");
        return NULL;
    }
    if (self->store->closed) return cpy_raise_closed(cpy_state_of_module(self->store->module));
    self->state = TX_OPEN;
    return Py_NewRef(self);
}

static PyObject *tx_append(cpy_tx *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "events", "expected_version", "condition", NULL};
    PyObject *stream, *events, *expected = NULL, *cond = Py_None, *t, *x, *item;
    int64_t exp;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$OO:append", kwlist, &stream, &events,
                                     &expected, &cond))
        return NULL;
    if (self->state != TX_OPEN) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Transaction.append() is only allowed inside its with block");
        return NULL;
    }
    if (cpy_check_condition(cpy_state_of_module(self->store->module), cond) < 0) return NULL;
    t = cpy_append_arg(cpy_state_of_module(self->store->module), stream, events, expected, &exp);
    if (!t) return NULL;
    x = PyLong_FromLongLong(exp);
    item = x ? PyTuple_Pack(4, stream, t, x, cond) : NULL;
    rc = item ? PyList_Append(self->requests, item) : -1;
    Py_DECREF(t);
    Py_XDECREF(x);
    Py_XDECREF(item);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

/* The commit: every queued request in one cpy_store_append. */
static PyObject *tx_commit(cpy_tx *self, PyObject *requests) {
    Py_ssize_t n = PyList_GET_SIZE(requests), i;
    PyObject **streams, **evs, **conds, *out = NULL;
    int64_t *exp;

    if (self->store->closed) return cpy_raise_closed(cpy_state_of_module(self->store->module));
    streams = PyMem_Calloc((size_t)n, sizeof *streams);
    evs = PyMem_Calloc((size_t)n, sizeof *evs);
    exp = PyMem_Calloc((size_t)n, sizeof *exp);
    conds = PyMem_Calloc((size_t)n, sizeof *conds);
    if (!streams || !evs || !exp || !conds) {
        PyErr_NoMemory();
        goto out;
    }
    for (i = 0; i < n; i++) { /* the list is ours: each item is as append() made it */
        PyObject *item = PyList_GET_ITEM(requests, i);
        streams[i] = PyTuple_GET_ITEM(item, 0);
        evs[i] = PyTuple_GET_ITEM(item, 1);
        exp[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 2));
        conds[i] = PyTuple_GET_ITEM(item, 3);
    }
    out = cpy_store_append(self->store, streams, evs, exp, conds, (size_t)n, 0);
out:
    PyMem_Free(conds);
    PyMem_Free(streams);
    PyMem_Free(evs);
    PyMem_Free(exp);
    return out;
}

static PyObject *tx_exit(cpy_tx *self, PyObject *args) {
    PyObject *exc_type, *exc, *tb, *requests, *fresh, *results = NULL;

    if (!PyArg_UnpackTuple(args, "__exit__", 3, 3, &exc_type, &exc, &tb)) return NULL;
    if (!(fresh = PyList_New(0))) return NULL;
    self->state = TX_DONE;
    requests = self->requests; /* the queue goes, whatever happens next */
    self->requests = fresh;
    if (exc_type == Py_None) {
        results = PyList_GET_SIZE(requests) ? tx_commit(self, requests) : PyList_New(0);
        if (results) Py_SETREF(self->results, results);
    }
    Py_DECREF(requests);
    if (exc_type == Py_None && !results) return NULL;
    Py_RETURN_FALSE;
}

static PyObject *tx_repr(cpy_tx *self) {
    static const char *names[] = {"new", "open", "done"};
    return PyUnicode_FromFormat("<cairn.Transaction %s, %zd append(s) queued>", names[self->state],
                                PyList_GET_SIZE(self->requests));
}

static int tx_traverse(cpy_tx *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->store);
    Py_VISIT(self->requests);
    Py_VISIT(self->results);
    return 0;
}

static int tx_clear(cpy_tx *self) {
    Py_CLEAR(self->store);
    Py_CLEAR(self->requests);
    Py_CLEAR(self->results);
    return 0;
}

static void tx_dealloc(cpy_tx *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    tx_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMemberDef tx_members[] = {
    {"results", T_OBJECT, offsetof(cpy_tx, results), 0,
     "None until a successful commit, then a list of AppendResult, in call order."},
    {NULL},
};

static PyMethodDef tx_methods[] = {
    {"__enter__", (PyCFunction)tx_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)tx_exit, METH_VARARGS, NULL},
    {"append", (PyCFunction)(void (*)(void))tx_append, METH_VARARGS | METH_KEYWORDS,
     "append($self, /, stream, events, *, expected_version=-2, condition=None)\n--\n\n"
     "Queue ``events`` for ``stream``; arguments are checked now, as ``Store.append`` does."},
    {NULL},
};

PyDoc_STRVAR(tx_doc,
             "Transaction(store)\n"
             "--\n\n"
             "An atomic write across streams, made by ``store.transaction()``.\n"
             "\n"
             "::\n"
             "\n"
             "    with store.transaction() as tx:\n"
             "        tx.append(\"order-1\", [...], expected_version=3)\n"
             "        tx.append(\"stock-9\", [...], expected_version=cairn.NO_STREAM)\n"
             "    tx.results   # list of AppendResult, in call order\n"
             "\n"
             "Nothing is written until the block exits without an exception; then every "
             "expectation is\n"
             "checked, in call order, and everything is written in one commit, or nothing is "
             "(the first\n"
             "failing check raises).  Appends to one stream within the block see each other.  "
             "The\n"
             "writer lock is not held while the block runs.  ``results`` is None until a "
             "successful\n"
             "commit, and stays None when the block or the commit fails.");

static PyType_Slot tx_slots[] = {
    {Py_tp_new, tx_new},         {Py_tp_dealloc, tx_dealloc}, {Py_tp_traverse, tx_traverse},
    {Py_tp_clear, tx_clear},     {Py_tp_repr, tx_repr},       {Py_tp_methods, tx_methods},
    {Py_tp_members, tx_members}, {Py_tp_doc, (void *)tx_doc}, {0, NULL},
};

static PyType_Spec tx_spec = {
    .name = "cairn.Transaction",
    .basicsize = sizeof(cpy_tx),
    .flags =
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = tx_slots,
};

int cpy_transaction_type_init(PyObject *module, cpy_state *st) {
    st->Tx_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tx_spec, NULL);
    if (!st->Tx_Type || PyModule_AddType(module, st->Tx_Type) < 0) return -1;
    return 0;
}
