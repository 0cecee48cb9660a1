/*
 * query.c -- the values of dynamic consistency boundaries (docs/API.md section 5):
 * cairn.QueryItem, cairn.Query and cairn.Condition, immutable and compared by value, and
 * their conversion into the core's cairn_query / cairn_condition for one call.
 */
#include "binding.h"
#include <structmember.h>

typedef struct cpy_qitem {
    PyObject_HEAD
    PyObject *types; /* tuple of str, or None: any type */
    PyObject *tags;  /* tuple of str, or None: any tags */
} cpy_qitem;

typedef struct cpy_query {
    PyObject_HEAD
    PyObject *items; /* tuple of QueryItem */
    PyObject *none;  /* NULL: the three types share one two-field layout (value_*) */
} cpy_query;

typedef struct cpy_cond {
    PyObject_HEAD
    PyObject *query; /* Query */
    PyObject *after; /* int >= 0 or None */
} cpy_cond;

/* ---------------------------------------------------------------------------------
 * QueryItem(types=None, tags=None)
 * --------------------------------------------------------------------------------- */
/* One list of an item: None, a str or an iterable of str; empty is refused (it would match
 * nothing: omitting it matches any), as is a value no stored name can be. */
static int item_list(PyObject *o, const char *name, size_t max, PyObject **out) {
    Py_ssize_t i;
    if (cpy_filter_arg(o, name, out) < 0) return -1;
    if (!*out) {
        *out = Py_NewRef(Py_None);
        return 0;
    }
    if (PyTuple_GET_SIZE(*out) == 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: an empty list would match no event; omit it (None) to match any", name);
        goto fail;
    }
    for (i = 0; i < PyTuple_GET_SIZE(*out); i++) {
        PyObject *v = PyTuple_GET_ITEM(*out, i);
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(v, &n); /* valid: cpy_filter_arg checked */
        if (n == 0 || (size_t)n > max || memchr(u, '\0', (size_t)n)) {
            PyErr_Format(PyExc_ValueError, "%s: %R is no %s (1..%zu bytes of UTF-8 without NUL)",
                         name, v, max == CAIRN_MAX_TYPE ? "event type" : "tag", max);
            goto fail;
        }
    }
    return 0;
fail:
    Py_CLEAR(*out);
    return -1;
}

static PyObject *qitem_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"types", "tags", NULL};
    PyObject *types = Py_None, *tags = Py_None;
    cpy_qitem *self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO:QueryItem", kwlist, &types, &tags))
        return NULL;
    if (!(self = (cpy_qitem *)tp->tp_alloc(tp, 0))) return NULL;
    if (item_list(types, "types", CAIRN_MAX_TYPE, &self->types) < 0 ||
        item_list(tags, "tags", CAIRN_MAX_TAG, &self->tags) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *qitem_repr(cpy_qitem *self) {
    return PyUnicode_FromFormat("cairn.QueryItem(types=%R, tags=%R)", self->types, self->tags);
}

static PyObject *qitem_reduce(cpy_qitem *self, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("O(OO)", Py_TYPE(self), self->types, self->tags);
}

/* ---------------------------------------------------------------------------------
 * Query(*items)
 * --------------------------------------------------------------------------------- */
static PyObject *query_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    cpy_state *st = cpy_state_of_type(tp);
    cpy_query *self;
    Py_ssize_t i;
    if (!st) return NULL;
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Query() takes QueryItems as positional arguments only");
        return NULL;
    }
    for (i = 0; i < PyTuple_GET_SIZE(args); i++) {
        PyObject *v = PyTuple_GET_ITEM(args, i);
        if (!PyObject_TypeCheck(v, st->QueryItem_Type)) {
            PyErr_Format(PyExc_TypeError, "Query() takes cairn.QueryItem arguments, not %.100s%s",
                         Py_TYPE(v)->tp_name,
                         PyList_Check(v) || PyTuple_Check(v) ? " (unpack a list: Query(*items))"
                                                             : "");
            return NULL;
        }
    }
    if (!(self = (cpy_query *)tp->tp_alloc(tp, 0))) return NULL;
    self->items = Py_NewRef(args);
    return (PyObject *)self;
}

static PyObject *query_repr(cpy_query *self) {
    PyObject *inner = PyObject_Repr(self->items), *r;
    Py_ssize_t n = PyTuple_GET_SIZE(self->items);
    if (!inner) return NULL;
    /* "(a,)" / "(a, b)" -> "a" / "a, b" */
    if (n == 0)
        r = PyUnicode_FromString("cairn.Query()");
    else {
        Py_ssize_t len = PyUnicode_GET_LENGTH(inner) - (n == 1 ? 3 : 2);
        PyObject *mid = PyUnicode_Substring(inner, 1, 1 + len);
        r = mid ? PyUnicode_FromFormat("cairn.Query(%U)", mid) : NULL;
        Py_XDECREF(mid);
    }
    Py_DECREF(inner);
    return r;
}

static PyObject *query_reduce(cpy_query *self, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("OO", Py_TYPE(self), self->items);
}

/* ---------------------------------------------------------------------------------
 * Condition(query, after=None)
 * --------------------------------------------------------------------------------- */
static PyObject *cond_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"query", "after", NULL};
    cpy_state *st = cpy_state_of_type(tp);
    PyObject *query, *after = Py_None;
    cpy_cond *self;
    int has;
    uint64_t v;
    if (!st) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:Condition", kwlist, &query, &after))
        return NULL;
    if (cpy_check_query(st, query) < 0 || cpy_opt_uint(after, "after", &has, &v) < 0) return NULL;
    if (!(self = (cpy_cond *)tp->tp_alloc(tp, 0))) return NULL;
    self->query = Py_NewRef(query);
    self->after = has ? PyLong_FromUnsignedLongLong(v) : Py_NewRef(Py_None);
    if (!self->after) Py_CLEAR(self);
    return (PyObject *)self;
}

static PyObject *cond_repr(cpy_cond *self) {
    return PyUnicode_FromFormat("cairn.Condition(%R, after=%R)", self->query, self->after);
}

static PyObject *cond_reduce(cpy_cond *self, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("O(OO)", Py_TYPE(self), self->query, self->after);
}

/* ---------------------------------------------------------------------------------
 * What the three share: value semantics over their fields, GC, dealloc.
 * --------------------------------------------------------------------------------- */
/* The three types are PyObject_HEAD + two object fields (Query's second one NULL). */
typedef struct cpy_pair {
    PyObject_HEAD
    PyObject *a, *b;
} cpy_pair;

static PyObject *value_fields(PyObject *o) {
    cpy_pair *p = (cpy_pair *)o;
    if (!p->b) return Py_NewRef(p->a); /* a Query: its items */
    return PyTuple_Pack(2, p->a, p->b);
}

static PyObject *value_richcompare(PyObject *a, PyObject *b, int op) {
    PyObject *fa, *fb, *r;
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b)) Py_RETURN_NOTIMPLEMENTED;
    if (!(fa = value_fields(a))) return NULL;
    if (!(fb = value_fields(b))) {
        Py_DECREF(fa);
        return NULL;
    }
    r = PyObject_RichCompare(fa, fb, op);
    Py_DECREF(fa);
    Py_DECREF(fb);
    return r;
}

static Py_hash_t value_hash(PyObject *o) {
    PyObject *f = value_fields(o);
    Py_hash_t h;
    if (!f) return -1;
    h = PyObject_Hash(f);
    Py_DECREF(f);
    return h;
}

static int value_traverse(PyObject *o, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(o));
    Py_VISIT(((cpy_pair *)o)->a);
    Py_VISIT(((cpy_pair *)o)->b);
    return 0;
}

static int value_clear(PyObject *o) {
    Py_CLEAR(((cpy_pair *)o)->a);
    Py_CLEAR(((cpy_pair *)o)->b);
    return 0;
}

static void value_dealloc(PyObject *o) {
    PyTypeObject *tp = Py_TYPE(o);
    PyObject_GC_UnTrack(o);
    value_clear(o);
    tp->tp_free(o);
    Py_DECREF(tp);
}

static PyMemberDef qitem_members[] = {
    {"types", T_OBJECT, offsetof(cpy_qitem, types), READONLY,
     "Tuple of event types (any of them matches), or None: any type."},
    {"tags", T_OBJECT, offsetof(cpy_qitem, tags), READONLY,
     "Tuple of tags (the event must carry all of them), or None: any tags."},
    {NULL},
};
static PyMemberDef query_members[] = {
    {"items", T_OBJECT, offsetof(cpy_query, items), READONLY,
     "Tuple of QueryItem; an event matches when any item does (no items: every event)."},
    {NULL},
};
static PyMemberDef cond_members[] = {
    {"query", T_OBJECT, offsetof(cpy_cond, query), READONLY, "The Query."},
    {"after", T_OBJECT, offsetof(cpy_cond, after), READONLY,
     "The append fails if an event matching query has a position greater than this (None: "
     "any position)."},
    {NULL},
};
static PyMethodDef qitem_methods[] = {{"__reduce__", (PyCFunction)qitem_reduce, METH_NOARGS, NULL},
                                      {NULL}};
static PyMethodDef query_methods[] = {{"__reduce__", (PyCFunction)query_reduce, METH_NOARGS, NULL},
                                      {NULL}};
static PyMethodDef cond_methods[] = {{"__reduce__", (PyCFunction)cond_reduce, METH_NOARGS, NULL},
                                     {NULL}};

#define VALUE_SLOTS                                                                               \
    {Py_tp_dealloc, value_dealloc}, {Py_tp_traverse, value_traverse}, {Py_tp_clear, value_clear}, \
        {Py_tp_richcompare, value_richcompare}, {                                                 \
        Py_tp_hash, value_hash                                                                    \
    }

static PyType_Slot qitem_slots[] = {
    VALUE_SLOTS,
    {Py_tp_new, qitem_new},
    {Py_tp_repr, qitem_repr},
    {Py_tp_members, qitem_members},
    {Py_tp_methods, qitem_methods},
    {Py_tp_doc,
     (void *)"QueryItem(types=None, tags=None)\n--\n\n"
             "Matches an event whose type is one of `types` and whose tags include "
             "all of `tags` (docs/API.md section 5)."},
    {0, NULL},
};
static PyType_Slot query_slots[] = {
    VALUE_SLOTS,
    {Py_tp_new, query_new},
    {Py_tp_repr, query_repr},
    {Py_tp_members, query_members},
    {Py_tp_methods, query_methods},
    {Py_tp_doc,
     (void *)"Query(*items)\n--\n\n"
             "Matches an event that any QueryItem matches; Query() matches every "
             "event."},
    {0, NULL},
};
static PyType_Slot cond_slots[] = {
    VALUE_SLOTS,
    {Py_tp_new, cond_new},
    {Py_tp_repr, cond_repr},
    {Py_tp_members, cond_members},
    {Py_tp_methods, cond_methods},
    {Py_tp_doc,
     (void *)"Condition(query, after=None)\n--\n\n"
             "An append condition: no event matching `query` after position `after` "
             "(None: in the whole log)."},
    {0, NULL},
};

#define VALUE_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE)
static PyType_Spec qitem_spec = {"cairn.QueryItem", sizeof(cpy_qitem), 0, VALUE_FLAGS, qitem_slots};
static PyType_Spec query_spec = {"cairn.Query", sizeof(cpy_query), 0, VALUE_FLAGS, query_slots};
static PyType_Spec cond_spec = {"cairn.Condition", sizeof(cpy_cond), 0, VALUE_FLAGS, cond_slots};

int cpy_query_types_init(PyObject *module, cpy_state *st) {
    if (!(st->QueryItem_Type =
              (PyTypeObject *)PyType_FromModuleAndSpec(module, &qitem_spec, NULL)) ||
        PyModule_AddType(module, st->QueryItem_Type) < 0)
        return -1;
    if (!(st->Query_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &query_spec, NULL)) ||
        PyModule_AddType(module, st->Query_Type) < 0)
        return -1;
    if (!(st->Condition_Type =
              (PyTypeObject *)PyType_FromModuleAndSpec(module, &cond_spec, NULL)) ||
        PyModule_AddType(module, st->Condition_Type) < 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Into the core, for one call
 * --------------------------------------------------------------------------------- */
static size_t list_len(PyObject *t) { return t == Py_None ? 0 : (size_t)PyTuple_GET_SIZE(t); }

/* The slices of one list, from *next on. */
static void list_slices(PyObject *t, cairn_slice **next, const cairn_slice **list, size_t *n) {
    Py_ssize_t len;
    *list = NULL, *n = list_len(t);
    if (!*n) return;
    *list = *next;
    for (size_t i = 0; i < *n; i++, (*next)++) {
        (*next)->ptr = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(t, (Py_ssize_t)i), &len);
        (*next)->len = (size_t)len; /* checked at construction: never NULL */
    }
}

int cpy_query_core(cpy_state *st, PyObject *query, cpy_core_query *out) {
    PyObject *items;
    Py_ssize_t n, i;
    size_t nslices = 0;
    cairn_slice *next;
    memset(out, 0, sizeof *out);
    if (cpy_check_query(st, query) < 0) return -1;
    items = ((cpy_query *)query)->items;
    n = PyTuple_GET_SIZE(items);
    for (i = 0; i < n; i++) {
        cpy_qitem *it = (cpy_qitem *)PyTuple_GET_ITEM(items, i);
        nslices += list_len(it->types) + list_len(it->tags);
    }
    out->items = PyMem_Calloc(n ? (size_t)n : 1, sizeof *out->items);
    out->slices = PyMem_Calloc(nslices ? nslices : 1, sizeof *out->slices);
    if (!out->items || !out->slices) {
        cpy_query_core_free(out);
        PyErr_NoMemory();
        return -1;
    }
    next = out->slices;
    for (i = 0; i < n; i++) {
        cpy_qitem *it = (cpy_qitem *)PyTuple_GET_ITEM(items, i);
        list_slices(it->types, &next, &out->items[i].types, &out->items[i].ntypes);
        list_slices(it->tags, &next, &out->items[i].tags, &out->items[i].ntags);
    }
    out->q.items = out->items;
    out->q.nitems = (size_t)n;
    return 0;
}

int cpy_condition_core(cpy_state *st, PyObject *cond, cpy_core_query *out) {
    cpy_cond *c = (cpy_cond *)cond;
    if (cond == Py_None || cpy_check_condition(st, cond) < 0) { /* callers pass a Condition */
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_SystemError, "condition: None");
        return -1;
    }
    if (cpy_query_core(st, c->query, out) < 0) return -1;
    out->cond.query = &out->q;
    out->cond.after = c->after == Py_None ? 0 : PyLong_AsUnsignedLongLong(c->after);
    return 0;
}

int cpy_check_query(cpy_state *st, PyObject *query) {
    if (PyObject_TypeCheck(query, st->Query_Type)) return 0;
    PyErr_Format(PyExc_TypeError, "query must be a cairn.Query, not %.100s",
                 Py_TYPE(query)->tp_name);
    return -1;
}

int cpy_check_condition(cpy_state *st, PyObject *cond) {
    if (cond == Py_None || PyObject_TypeCheck(cond, st->Condition_Type)) return 0;
    PyErr_Format(PyExc_TypeError, "condition must be a cairn.Condition or None, not %.100s",
                 Py_TYPE(cond)->tp_name);
    return -1;
}

void cpy_query_core_free(cpy_core_query *q) {
    PyMem_Free(q->items);
    PyMem_Free(q->slices);
    q->items = NULL, q->slices = NULL;
}
