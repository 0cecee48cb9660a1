/*
 * aggregate.c -- aggregates from Python: the Aggregate type (a loaded state) and
 * Store.load / execute / decide / compensate / rollback.  Arguments are checked and encoded with
 * the GIL held; the core call (Lua and the write transaction) runs without it.
 */
#include "binding.h"

#include <datetime.h>
#include <stdlib.h>
#include <structmember.h>

/* ---------------------------------------------------------------------------------
 * Aggregate: what load() returns.  Plain values, no link back to the store.
 * --------------------------------------------------------------------------------- */
typedef struct cpy_aggregate {
    PyObject_HEAD
    PyObject *stream;    /* str */
    PyObject *aggregate; /* str: the script's name (the stream's category by default) */
    PyObject *state;     /* the reducers' result, decoded from JSON (a dict normally) */
    int64_t version;     /* last event applied, -1 when none */
    uint64_t applied;    /* events this load folded (after the snapshot it started from) */
} cpy_aggregate;

static int aggregate_traverse(cpy_aggregate *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->state);
    return 0;
}

static int aggregate_clear(cpy_aggregate *self) {
    Py_CLEAR(self->stream);
    Py_CLEAR(self->aggregate);
    Py_CLEAR(self->state);
    return 0;
}

static void aggregate_dealloc(cpy_aggregate *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    aggregate_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *aggregate_repr(cpy_aggregate *self) {
    int rc = Py_ReprEnter((PyObject *)self);
    PyObject *r;
    if (rc != 0) return rc > 0 ? PyUnicode_FromString("<cairn.Aggregate ...>") : NULL;
    r = PyUnicode_FromFormat("<cairn.Aggregate %R of %R version=%lld state=%R>", self->aggregate,
                             self->stream, (long long)self->version, self->state);
    Py_ReprLeave((PyObject *)self);
    return r;
}

static PyMemberDef aggregate_members[] = {
    {"stream", T_OBJECT, offsetof(cpy_aggregate, stream), READONLY, "The stream loaded."},
    {"aggregate", T_OBJECT, offsetof(cpy_aggregate, aggregate), READONLY,
     "The aggregate script's name."},
    {"state", T_OBJECT, offsetof(cpy_aggregate, state), READONLY,
     "The state the reducers built (JSON-shaped, a dict normally)."},
    {"version", T_LONGLONG, offsetof(cpy_aggregate, version), READONLY,
     "Version of the last event applied, -1 when none."},
    {"applied", T_ULONGLONG, offsetof(cpy_aggregate, applied), READONLY,
     "Events this load folded through the reducers (those after the snapshot it started "
     "from)."},
    {NULL},
};

static PyType_Slot aggregate_slots[] = {
    {Py_tp_dealloc, aggregate_dealloc},
    {Py_tp_traverse, aggregate_traverse},
    {Py_tp_clear, aggregate_clear},
    {Py_tp_repr, aggregate_repr},
    {Py_tp_members, aggregate_members},
    {Py_tp_doc,
     (void *)"An aggregate's state as loaded by Store.load(): .state, .version, "
             ".stream, .aggregate, .applied."},
    {0, NULL},
};

static PyType_Spec aggregate_spec = {
    .name = "cairn.Aggregate",
    .basicsize = sizeof(cpy_aggregate),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = aggregate_slots,
};

int cpy_aggregate_type_init(PyObject *module, cpy_state *st) {
    PyDateTime_IMPORT; /* PyDateTimeAPI is per translation unit */
    if (!PyDateTimeAPI) return -1;
    st->Aggregate_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &aggregate_spec, NULL);
    if (!st->Aggregate_Type || PyModule_AddType(module, st->Aggregate_Type) < 0) return -1;
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Arguments.
 * --------------------------------------------------------------------------------- */
static inline cpy_state *agg_state(cpy_store *s) { return cpy_state_of_module(s->module); }

/* aggregate=: None (*p = NULL: the stream's category) or a str. */
static int aggregate_arg(PyObject *o, const char **p, Py_ssize_t *len) {
    *p = NULL;
    *len = 0;
    if (o == Py_None) return 0;
    return cpy_stream_arg(o, "aggregate", len) && (*p = PyUnicode_AsUTF8(o)) ? 0 : -1;
}

/* A version: an int >= 0 (the versions a stream can have). */
/* exact: the version must exist (compensate), so one past any int64 is refused with the
 * number given instead of being clamped to "the last" as load(version=) does. */
static int version_arg(PyObject *o, int exact, int64_t *out) {
    long long v;
    int overflow;
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "version must be an int, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow < 0 || (!overflow && v < 0)) {
        PyErr_Format(PyExc_ValueError, "version must be >= 0, got %R", o);
        return -1;
    }
    if (overflow && exact) {
        PyErr_Format(PyExc_ValueError, "version: no stream has a version %R (at most 2**63 - 1)",
                     o);
        return -1;
    }
    *out = overflow ? INT64_MAX : v; /* beyond any stream: the same as "the last" */
    return 0;
}

/* at=: an aware datetime -> ns since the epoch, rounded up to the end of its microsecond
 * (timestamps are stored in ns, datetimes carry us: load(at=e.timestamp) must include e).
 * Outside int64 ns (before 1677, after 2262) clamps to the ends. */
static int at_arg(PyObject *o, int64_t *out) {
    PyObject *off, *epoch, *delta;
    int64_t us, ns;

    if (!PyDateTime_Check(o)) {
        PyErr_Format(PyExc_TypeError, "at must be a datetime.datetime or None, not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (!(off = PyObject_CallMethod(o, "utcoffset", NULL))) return -1;
    Py_DECREF(off);
    if (off == Py_None) {
        PyErr_SetString(PyExc_ValueError,
                        "at must be an aware datetime (with a tzinfo, e.g. datetime.timezone.utc), "
                        "not a naive one");
        return -1;
    }
    epoch = PyDateTimeAPI->DateTime_FromDateAndTime(1970, 1, 1, 0, 0, 0, 0, PyDateTime_TimeZone_UTC,
                                                    PyDateTimeAPI->DateTimeType);
    if (!epoch) return -1;
    delta = PyNumber_Subtract(o, epoch);
    Py_DECREF(epoch);
    if (!delta) return -1;
    if (!PyDelta_Check(delta)) {
        Py_DECREF(delta);
        PyErr_SetString(PyExc_TypeError, "at must be a datetime.datetime or None");
        return -1;
    }
    /* |days| <= 999999999: the sum fits easily in int64 microseconds */
    us = (int64_t)PyDateTime_DELTA_GET_DAYS(delta) * 86400000000ll +
        (int64_t)PyDateTime_DELTA_GET_SECONDS(delta) * 1000000ll +
        (int64_t)PyDateTime_DELTA_GET_MICROSECONDS(delta);
    Py_DECREF(delta);
    if (__builtin_mul_overflow(us, (int64_t)1000, &ns) || __builtin_add_overflow(ns, 999, &ns))
        ns = us < 0 ? CAIRN_AT_NONE + 1 : INT64_MAX;
    if (ns == CAIRN_AT_NONE) ns = CAIRN_AT_NONE + 1;
    *out = ns;
    return 0;
}

/* metadata=: None (len 0) or a dict, encoded as JSON into b. */
static int metadata_arg(PyObject *o, cpy_buf *b, cairn_slice *out) {
    out->ptr = NULL;
    out->len = 0;
    if (o == Py_None) return 0;
    if (!PyDict_Check(o)) {
        PyErr_Format(PyExc_TypeError, "metadata must be a dict or None, not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (cpy_json_encode(b, o, "metadata") < 0) return -1;
    out->ptr = b->ptr;
    out->len = b->len;
    return 0;
}

/* A command's data (None: len 0; else JSON into db) and metadata= (metadata_arg). */
static int command_args(PyObject *data, PyObject *meta_o, cpy_buf *db, cpy_buf *mb,
                        cairn_slice *dslice, cairn_slice *mslice) {
    if (data != Py_None) {
        if (cpy_json_encode(db, data, "data") < 0) return -1;
        dslice->ptr = db->ptr;
        dslice->len = db->len;
    }
    return metadata_arg(meta_o, mb, mslice);
}

/* The name load() reports: the one given, or the stream's category. */
static PyObject *aggregate_name(PyObject *given, const char *stream, Py_ssize_t len) {
    cairn_slice c;
    if (given != Py_None) return Py_NewRef(given);
    c = cairn_category(stream, (size_t)len);
    return PyUnicode_DecodeUTF8(c.ptr, (Py_ssize_t)c.len, "replace");
}

/* ---------------------------------------------------------------------------------
 * load / execute / compensate / rollback.
 * --------------------------------------------------------------------------------- */
PyObject *cpy_store_load(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "aggregate", "version", "at", NULL};
    cpy_state *st = agg_state(s);
    PyObject *stream, *agg_o = Py_None, *ver_o = Py_None, *at_o = Py_None, *state = NULL;
    const char *sp, *ap;
    Py_ssize_t slen, alen;
    int64_t version = -1, at = CAIRN_AT_NONE;
    cairn_state out = {NULL, 0, -1, 0};
    cpy_aggregate *a = NULL;
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OOO:load", kwlist, &stream, &agg_o, &ver_o,
                                     &at_o))
        return NULL;
    if (!(sp = cpy_stream_arg(stream, "stream", &slen)) || aggregate_arg(agg_o, &ap, &alen) < 0 ||
        (ver_o != Py_None && version_arg(ver_o, 0, &version) < 0) ||
        (at_o != Py_None && at_arg(at_o, &at) < 0))
        return NULL;
    if (ver_o != Py_None && at_o != Py_None) {
        PyErr_SetString(PyExc_ValueError, "give version or at, not both");
        return NULL;
    }
    CPY_STORE_CALL(s, h, rc, cairn_load(h, sp, (size_t)slen, ap, (size_t)alen, version, at, &out));
    if (cpy_store_call_end(s, h, rc, &stream, 1) < 0) goto out;
    state = out.len ? cpy_json_decode(st, out.json, out.len, 0) : PyDict_New();
    if (!state) goto out;
    a = (cpy_aggregate *)st->Aggregate_Type->tp_alloc(st->Aggregate_Type, 0);
    if (!a) goto out;
    a->stream = Py_NewRef(stream);
    a->state = Py_NewRef(state);
    a->version = out.version;
    a->applied = out.applied;
    if (!(a->aggregate = aggregate_name(agg_o, sp, slen))) Py_CLEAR(a);
out:
    free(out.json);
    Py_XDECREF(state);
    return (PyObject *)a;
}

PyObject *cpy_store_execute(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream",           "command",  "data", "aggregate",
                             "expected_version", "metadata", "id",   NULL};
    cpy_state *st = agg_state(s);
    PyObject *stream, *command, *data = Py_None, *agg_o = Py_None, *exp_o = NULL;
    PyObject *meta_o = Py_None, *id_o = Py_None, *r = NULL;
    uint8_t id[16];
    const char *sp, *cp, *ap;
    Py_ssize_t slen, clen, alen;
    int64_t expected = CAIRN_ANY;
    cpy_buf db = {NULL, 0, 0}, mb = {NULL, 0, 0};
    cairn_slice dslice = {NULL, 0}, mslice = {NULL, 0};
    cairn_append_result res = {-1, 0, 0};
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O$OOOO:execute", kwlist, &stream, &command,
                                     &data, &agg_o, &exp_o, &meta_o, &id_o))
        return NULL;
    if (!(sp = cpy_stream_arg(stream, "stream", &slen)) ||
        !(cp = cpy_stream_arg(command, "command", &clen)) || aggregate_arg(agg_o, &ap, &alen) < 0 ||
        (exp_o && cpy_expected_arg(exp_o, &expected) < 0) ||
        (id_o != Py_None && cpy_uuid_arg(st, id_o, "id", id, NULL) < 0))
        return NULL;
    if (command_args(data, meta_o, &db, &mb, &dslice, &mslice) < 0) goto fail;
    CPY_STORE_CALL(s, h, rc,
                   cairn_execute(h, sp, (size_t)slen, ap, (size_t)alen, cp, (size_t)clen, dslice,
                                 mslice, expected, id_o != Py_None ? id : NULL, &res));
    if (cpy_store_call_end(s, h, rc, &stream, 1) >= 0)
        r = cpy_result_new(st, &res); /* position 0 (no events): None, None */
fail:
    cpy_buf_free(&db);
    cpy_buf_free(&mb);
    return r;
}

const char cpy_store_decide_doc[] =
    "decide($self, /, aggregate, command, data=None, *, stream, metadata=None)\n--\n\n"
    "A decision model over a consistency boundary, in one write transaction: fold the events "
    "the aggregate's boundary(cmd) selects through its reducers, run decide[command] on the "
    "result and append the events it returns to `stream` (metadata copied onto each); "
    "returns AppendResult (position None when it decided nothing).  KeyError: no such "
    "aggregate; ValueError: no such command, or no boundary; CommandRejected when the "
    "script rejects.";

PyObject *cpy_store_decide(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"aggregate", "command", "data", "stream", "metadata", NULL};
    cpy_state *st = agg_state(s);
    PyObject *agg_o, *command, *data = Py_None, *stream = NULL, *meta_o = Py_None, *r = NULL;
    const char *sp, *cp, *ap;
    Py_ssize_t slen, clen, alen;
    cpy_buf db = {NULL, 0, 0}, mb = {NULL, 0, 0};
    cairn_slice dslice = {NULL, 0}, mslice = {NULL, 0};
    cairn_append_result res = {-1, 0, 0};
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O$OO:decide", kwlist, &agg_o, &command,
                                     &data, &stream, &meta_o))
        return NULL;
    if (!stream) {
        PyErr_SetString(PyExc_TypeError,
                        "decide() missing required keyword-only argument: 'stream'");
        return NULL;
    }
    if (!(ap = cpy_stream_arg(agg_o, "aggregate", &alen)) ||
        !(cp = cpy_stream_arg(command, "command", &clen)) ||
        !(sp = cpy_stream_arg(stream, "stream", &slen)))
        return NULL;
    if (command_args(data, meta_o, &db, &mb, &dslice, &mslice) < 0) goto fail;
    CPY_STORE_CALL(s, h, rc,
                   cairn_decide(h, ap, (size_t)alen, cp, (size_t)clen, dslice, mslice, sp,
                                (size_t)slen, &res));
    if (cpy_store_call_end(s, h, rc, &stream, 1) >= 0)
        r = cpy_result_new(st, &res); /* position 0 (no events): None, None */
fail:
    cpy_buf_free(&db);
    cpy_buf_free(&mb);
    return r;
}

PyObject *cpy_store_compensate(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "version", "aggregate", "metadata", NULL};
    cpy_state *st = agg_state(s);
    PyObject *stream, *ver_o, *agg_o = Py_None, *meta_o = Py_None, *r = NULL;
    const char *sp, *ap;
    Py_ssize_t slen, alen;
    int64_t version;
    cpy_buf mb = {NULL, 0, 0};
    cairn_slice mslice = {NULL, 0};
    cairn_append_result res = {-1, 0, 0};
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$OO:compensate", kwlist, &stream, &ver_o,
                                     &agg_o, &meta_o))
        return NULL;
    if (!(sp = cpy_stream_arg(stream, "stream", &slen)) || version_arg(ver_o, 1, &version) < 0 ||
        aggregate_arg(agg_o, &ap, &alen) < 0)
        return NULL;
    if (metadata_arg(meta_o, &mb, &mslice) < 0) goto fail;
    CPY_STORE_CALL(s, h, rc,
                   cairn_compensate(h, sp, (size_t)slen, version, ap, (size_t)alen, mslice, &res));
    if (cpy_store_call_end(s, h, rc, &stream, 1) >= 0) r = cpy_result_new(st, &res);
fail:
    cpy_buf_free(&mb);
    return r;
}

PyObject *cpy_store_rollback(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"correlation_id", NULL};
    cpy_state *st = agg_state(s);
    PyObject *cid, *r = NULL;
    const char *p;
    Py_ssize_t len;
    cairn_append_result *res = NULL;
    size_t count = 0, i;
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:rollback", kwlist, &cid)) return NULL;
    if (!(p = cpy_stream_arg(cid, "correlation_id", &len))) return NULL;
    CPY_STORE_CALL(s, h, rc, cairn_rollback(h, p, (size_t)len, &res, &count));
    if (cpy_store_call_end(s, h, rc, NULL, 0) >= 0 && (r = PyList_New((Py_ssize_t)count))) {
        for (i = 0; i < count; i++) {
            PyObject *x = cpy_result_new(st, &res[i]);
            if (!x) {
                Py_CLEAR(r);
                break;
            }
            PyList_SET_ITEM(r, (Py_ssize_t)i, x);
        }
    }
    free(res);
    return r;
}
