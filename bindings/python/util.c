/*
 * util.c -- what the files of the binding share that belongs to no one type: the argument
 * helpers (each error names the argument), the growable byte buffer, and the buffer of
 * names collected without the GIL.
 */
#include "binding.h"

/* ---------------------------------------------------------------------------------
 * Arguments.
 * --------------------------------------------------------------------------------- */
int cpy_check_bool(PyObject *o, const char *name, int *out) {
    if (!PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a bool, not %.100s", name, Py_TYPE(o)->tp_name);
        return -1;
    }
    *out = o == Py_True;
    return 0;
}

/* None (-> *has = 0) or an int >= 0. */
int cpy_opt_uint(PyObject *o, const char *name, int *has, uint64_t *out) {
    unsigned long long v;
    if (o == Py_None) {
        *has = 0;
        *out = 0;
        return 0;
    }
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int or None, not %.100s", name,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (_PyLong_Sign(o) < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %R", name, o);
        return -1;
    }
    v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s is too large: %R", name, o);
        }
        return -1;
    }
    *has = 1;
    *out = v;
    return 0;
}

/* A str argument (stream names, script names and sources, commands) as UTF-8 borrowed from
 * the str; the core checks lengths, NUL and '$' and names the argument. */
const char *cpy_stream_arg(PyObject *o, const char *name, Py_ssize_t *len) {
    const char *p;
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", name, Py_TYPE(o)->tp_name);
        return NULL;
    }
    p = PyUnicode_AsUTF8AndSize(o, len);
    if (!p && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s is not valid UTF-8 (it contains a lone surrogate)",
                     name);
    }
    return p;
}

int cpy_uuid_arg(cpy_state *st, PyObject *o, const char *name, uint8_t out[16], PyObject **obj) {
    PyObject *u, *b;
    int is_uuid = PyObject_IsInstance(o, st->uuid_type);
    if (is_uuid < 0) return -1;
    if (is_uuid) {
        u = Py_NewRef(o);
    } else if (PyUnicode_Check(o)) {
        if (!(u = PyObject_CallOneArg(st->uuid_type, o))) {
            if (PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%s: %R is not a UUID", name, o);
            }
            return -1;
        }
    } else {
        PyErr_Format(PyExc_TypeError, "%s must be a uuid.UUID, a str or None, not %.100s", name,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (!(b = PyObject_GetAttr(u, st->str_bytes)) || !PyBytes_Check(b) ||
        PyBytes_GET_SIZE(b) != 16) {
        if (b) PyErr_Format(PyExc_ValueError, "%s: UUID.bytes is not 16 bytes", name);
        Py_XDECREF(b);
        Py_DECREF(u);
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(b), 16);
    Py_DECREF(b);
    if (obj)
        *obj = u;
    else
        Py_DECREF(u);
    return 0;
}

int cpy_expected_arg(PyObject *o, int64_t *out) {
    long long v;
    int overflow;
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "expected_version must be an int, not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow > 0) { /* an int >= 0, but past what a version can be: say the real limit */
        PyErr_Format(PyExc_ValueError,
                     "expected_version must be at most 2**63 - 1 (the largest version), got %R", o);
        return -1;
    }
    if (overflow || (v < 0 && v != CAIRN_ANY && v != CAIRN_NO_STREAM && v != CAIRN_STREAM_EXISTS)) {
        PyErr_Format(PyExc_ValueError,
                     "expected_version must be cairn.ANY, cairn.NO_STREAM, cairn.STREAM_EXISTS "
                     "or an int >= 0, got %R",
                     o);
        return -1;
    }
    *out = v;
    return 0;
}

/* A filter argument: None (no filter: NULL), a str, or an iterable of str -> tuple. */
int cpy_filter_arg(PyObject *o, const char *name, PyObject **out) {
    PyObject *t;
    Py_ssize_t i;

    *out = NULL;
    if (o == Py_None) return 0;
    if (PyBytes_Check(o) || PyByteArray_Check(o)) { /* iterable, but of ints */
        PyErr_Format(PyExc_TypeError,
                     "%s must be None, a str or an iterable of str, not %.100s (bytes is not a "
                     "list of str)",
                     name, Py_TYPE(o)->tp_name);
        return -1;
    }
    if (PyUnicode_Check(o)) {
        t = PyTuple_Pack(1, o);
    } else {
        t = PySequence_Tuple(o);
        if (!t && PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "%s must be None, a str or an iterable of str, not %.100s", name,
                         Py_TYPE(o)->tp_name);
        }
    }
    if (!t) return -1;
    for (i = 0; i < PyTuple_GET_SIZE(t); i++) {
        PyObject *v = PyTuple_GET_ITEM(t, i);
        Py_ssize_t n;
        if (!PyUnicode_Check(v)) {
            PyErr_Format(PyExc_TypeError, "%s must contain only str, not %.100s", name,
                         Py_TYPE(v)->tp_name);
            Py_DECREF(t);
            return -1;
        }
        const char *u = PyUnicode_AsUTF8AndSize(v, &n);
        if (!u) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%s: %R is not valid UTF-8", name, v);
            }
            Py_DECREF(t);
            return -1;
        }
        /* No stored name, type or tag holds NUL (appends refuse it): refused here the same
         * way, rather than a filter that silently matches nothing. */
        if (memchr(u, 0, (size_t)n)) {
            PyErr_Format(PyExc_ValueError, "%s: %R must not contain NUL characters", name, v);
            Py_DECREF(t);
            return -1;
        }
    }
    *out = t;
    return 0;
}

/* The arguments of one append (Store.append, Transaction.append).  A RecordedEvent among
 * the events is appended as the Event it was (cpy_event_from_recorded): the tuple returned
 * is a new one then, never the caller's. */
PyObject *cpy_append_arg(cpy_state *st, PyObject *stream, PyObject *events, PyObject *expected,
                         int64_t *exp) {
    Py_ssize_t len, i, recorded = 0;
    PyObject *t;

    if (!cpy_stream_arg(stream, "stream", &len)) return NULL;
    if (!expected)
        *exp = CAIRN_ANY;
    else if (cpy_expected_arg(expected, exp) < 0)
        return NULL;
    if (PyObject_TypeCheck(events, st->Event_Type) || Py_IS_TYPE(events, st->Recorded_Type)) {
        PyErr_Format(PyExc_TypeError,
                     "events must be an iterable of cairn.Event, not a single %.100s "
                     "(wrap it in a list)",
                     Py_IS_TYPE(events, st->Recorded_Type) ? "RecordedEvent" : "Event");
        return NULL;
    }
    t = PySequence_Tuple(events);
    if (!t) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "events must be an iterable of cairn.Event, not %.100s",
                         Py_TYPE(events)->tp_name);
        }
        return NULL;
    }
    if (PyTuple_GET_SIZE(t) == 0) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_ValueError, "events must not be empty");
        return NULL;
    }
    for (i = 0; i < PyTuple_GET_SIZE(t); i++) {
        PyObject *e = PyTuple_GET_ITEM(t, i);
        if (Py_IS_TYPE(e, st->Recorded_Type)) {
            recorded++;
        } else if (!PyObject_TypeCheck(e, st->Event_Type)) {
            PyErr_Format(PyExc_TypeError,
                         "events must be an iterable of cairn.Event (or cairn.RecordedEvent); "
                         "item %zd is a %.100s",
                         i, Py_TYPE(e)->tp_name);
            Py_DECREF(t);
            return NULL;
        }
    }
    if (recorded) {
        PyObject *n = PyTuple_New(PyTuple_GET_SIZE(t));
        for (i = 0; n && i < PyTuple_GET_SIZE(t); i++) {
            PyObject *e = PyTuple_GET_ITEM(t, i);
            e = Py_IS_TYPE(e, st->Recorded_Type) ? cpy_event_from_recorded(st, e) : Py_NewRef(e);
            if (!e)
                Py_CLEAR(n);
            else
                PyTuple_SET_ITEM(n, i, e);
        }
        Py_SETREF(t, n);
    }
    return t;
}

/* ---------------------------------------------------------------------------------
 * The growable byte buffer (GIL held: PyMem): encoded JSON, append arenas.
 * --------------------------------------------------------------------------------- */
int cpy_buf_reserve(cpy_buf *b, size_t extra) {
    size_t need, cap;
    char *p;

    if (b->cap - b->len >= extra) return 0;
    if (extra > PY_SSIZE_T_MAX - b->len) goto nomem;
    need = b->len + extra;
    cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    p = PyMem_Realloc(b->ptr, cap);
    if (!p) goto nomem;
    b->ptr = p;
    b->cap = cap;
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

void cpy_buf_free(cpy_buf *b) {
    PyMem_Free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------------------------
 * Names collected without the GIL.  The core hands names one by one to a callback that
 * runs on the calling thread with the GIL released: it may not touch Python, so it copies
 * the bytes into one PyMem_Raw buffer ((size_t len, bytes) entries), and the str objects
 * are made once the GIL is back.
 * --------------------------------------------------------------------------------- */
int cpy_names_add(void *ctx, const char *name, size_t len) {
    cpy_names *b = ctx;
    size_t need = sizeof len + len;
    if (b->cap - b->len < need) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        char *p;
        while (cap - b->len < need) cap *= 2;
        if (!(p = PyMem_RawRealloc(b->p, cap))) {
            b->oom = 1;
            return 1; /* stops the core's walk */
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, &len, sizeof len);
    memcpy(b->p + b->len + sizeof len, name, len);
    b->last = b->len;
    b->len += need;
    b->count++;
    return 0;
}

PyObject *cpy_names_list(const cpy_names *b) {
    PyObject *list;
    size_t i, off = 0;

    if (b->oom) return PyErr_NoMemory();
    if (!(list = PyList_New((Py_ssize_t)b->count))) return NULL;
    for (i = 0; i < b->count; i++) {
        size_t len;
        PyObject *name;
        memcpy(&len, b->p + off, sizeof len);
        name = PyUnicode_DecodeUTF8(b->p + off + sizeof len, (Py_ssize_t)len, "replace");
        if (!name) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, name);
        off += sizeof len + len;
    }
    return list;
}

PyObject *cpy_names_last(const cpy_names *b) {
    size_t len;
    memcpy(&len, b->p + b->last, sizeof len);
    return PyBytes_FromStringAndSize(b->p + b->last + sizeof len, (Py_ssize_t)len);
}

void cpy_names_free(cpy_names *b) {
    PyMem_RawFree(b->p);
    memset(b, 0, sizeof *b);
}
