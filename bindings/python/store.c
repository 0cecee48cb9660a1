/*
 * store.c -- the Store type: opening, the in-flight/close protocol, appends (one arena
 * per call, GIL released for the commit) and the single-shot reads.
 */
#include "binding.h"

#include "base.h" /* the subject rule of cairn.Event (check.c), for forget's argument */

#include <structmember.h>

static inline cpy_state *store_state(cpy_store *s) { return cpy_state_of_module(s->module); }

/* ---------------------------------------------------------------------------------
 * In-flight calls and closing.  close() only marks the store; the handle is closed by
 * whoever brings the in-flight count back to zero, so a call running without the GIL in
 * another thread never sees its handle vanish.
 * --------------------------------------------------------------------------------- */
static void store_really_close(cpy_store *s) {
    cairn_store *h = s->handle;
    if (!h) return;
    s->handle = NULL;
    cpy_projections_detach(s); /* the runner thread goes before the handle */
    cpy_readiters_detach(s);   /* their core iterators go before the handle */
    CPY_UNLOCKED(cairn_close(h));
}

cairn_store *cpy_store_enter(cpy_store *s) {
    if (s->closed || !s->handle) {
        cpy_raise_closed(store_state(s));
        return NULL;
    }
    s->inflight++;
    return s->handle;
}

static void store_leave(cpy_store *s) {
    if (--s->inflight == 0 && s->closed) store_really_close(s);
}

/* The end of CPY_STORE_CALL (binding.h).  The order matters: the error is read from the
 * core's thread-local record before logging (Python code) could make another core call,
 * and the store is left last, since leaving may close the handle. */
int cpy_store_call_end(cpy_store *s, cairn_store *h, int rc, PyObject *const *streams,
                       size_t nstreams) {
    cpy_state *st;
    if (!h) return rc; /* never entered: StoreClosed is set */
    st = store_state(s);
    if (rc < 0 && rc != CPY_ERAISED) cpy_raise(st, rc, streams, nstreams);
    cpy_log_flush(st); /* what the scripts this call ran printed; keeps the exception */
    store_leave(s);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Appends.  Everything is encoded with the GIL held into one arena; the cairn_event_in
 * array borrows the rest (type and tag UTF-8 from immutable str objects, bytes payloads)
 * from objects this call holds references to.  Arena offsets become pointers once the
 * arena has stopped growing; then the GIL is released for the commit.
 * --------------------------------------------------------------------------------- */
#define IN_ARENA_DATA 1u
#define IN_ARENA_META 2u

static int encode_event(cpy_buf *arena, cpy_event *e, cairn_event_in *in, cairn_slice *tags,
                        uint8_t *marks) {
    PyObject *d = e->data;
    Py_ssize_t n, i;
    const char *p;

    p = PyUnicode_AsUTF8AndSize(e->type, &n); /* validated at construction */
    if (!p) return -1;
    in->type.ptr = p;
    in->type.len = (size_t)n;
    in->schema = e->schema;
    in->flags = 0;
    memcpy(in->id, e->id, 16);
    in->has_id = 1;
    in->ntags = (size_t)PyTuple_GET_SIZE(e->tags);
    in->tags = tags;
    in->subject.ptr = NULL, in->subject.len = 0;
    if (e->subject != Py_None) { /* an exact str, checked by Event */
        if (!(p = PyUnicode_AsUTF8AndSize(e->subject, &n))) return -1;
        in->subject.ptr = p, in->subject.len = (size_t)n;
    }
    for (i = 0; i < PyTuple_GET_SIZE(e->tags); i++) {
        p = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(e->tags, i), &n);
        if (!p) return -1;
        tags[i].ptr = p;
        tags[i].len = (size_t)n;
    }

    *marks = 0;
    if (d == Py_None) {
        in->data.ptr = NULL;
        in->data.len = 0;
    } else if (PyBytes_Check(d)) {
        in->flags |= CAIRN_EVENT_BYTES;
        in->data.ptr = PyBytes_AS_STRING(d);
        in->data.len = (size_t)PyBytes_GET_SIZE(d);
    } else if (PyByteArray_Check(d) || PyMemoryView_Check(d)) {
        /* mutable: copy now, while nobody else can run */
        Py_buffer view;
        if (PyObject_GetBuffer(d, &view, PyBUF_SIMPLE) < 0) return -1;
        if (cpy_buf_reserve(arena, (size_t)view.len) < 0) {
            PyBuffer_Release(&view);
            return -1;
        }
        in->flags |= CAIRN_EVENT_BYTES;
        in->data.ptr = (const void *)(uintptr_t)arena->len;
        in->data.len = (size_t)view.len;
        memcpy(arena->ptr + arena->len, view.buf, (size_t)view.len);
        arena->len += (size_t)view.len;
        PyBuffer_Release(&view);
        *marks |= IN_ARENA_DATA;
    } else {
        size_t start = arena->len;
        if (cpy_json_encode(arena, d, "data") < 0) return -1;
        in->data.ptr = (const void *)(uintptr_t)start;
        in->data.len = arena->len - start;
        *marks |= IN_ARENA_DATA;
    }
    if (e->metadata == Py_None) {
        in->metadata.ptr = NULL;
        in->metadata.len = 0;
    } else {
        size_t start = arena->len;
        if (cpy_json_encode(arena, e->metadata, "metadata") < 0) return -1;
        in->metadata.ptr = (const void *)(uintptr_t)start;
        in->metadata.len = arena->len - start;
        *marks |= IN_ARENA_META;
    }
    return 0;
}

PyObject *cpy_store_append(cpy_store *s, PyObject *const *streams, PyObject *const *evs,
                           const int64_t *exp, PyObject *const *conds, size_t nreq, int single) {
    cpy_state *st = store_state(s);
    cpy_buf arena = {NULL, 0, 0};
    cpy_core_query *cq = NULL; /* one per request with a condition */
    const cairn_condition **cps = NULL;
    cairn_append_req *reqs = NULL;
    cairn_append_result *results = NULL;
    cairn_event_in *ins = NULL;
    cairn_slice *tags = NULL;
    uint8_t *marks = NULL;
    size_t nev = 0, ntags = 0, i, k, ev_i, tag_i;
    cairn_store *h;
    PyObject *out = NULL;
    int rc;

    for (i = 0; i < nreq; i++) {
        Py_ssize_t j;
        nev += (size_t)PyTuple_GET_SIZE(evs[i]);
        for (j = 0; j < PyTuple_GET_SIZE(evs[i]); j++)
            ntags += (size_t)PyTuple_GET_SIZE(((cpy_event *)PyTuple_GET_ITEM(evs[i], j))->tags);
    }
    reqs = PyMem_Calloc(nreq, sizeof *reqs);
    results = PyMem_Calloc(nreq, sizeof *results);
    ins = PyMem_Calloc(nev, sizeof *ins);
    tags = PyMem_Calloc(ntags ? ntags : 1, sizeof *tags);
    marks = PyMem_Calloc(nev, 1);
    if (!reqs || !results || !ins || !tags || !marks) {
        PyErr_NoMemory();
        goto out;
    }
    for (i = 0; conds && i < nreq; i++) {
        if (conds[i] == Py_None) continue;
        if ((!cq &&
             (!(cq = PyMem_Calloc(nreq, sizeof *cq)) ||
              !(cps = PyMem_Calloc(nreq, sizeof *cps))))) {
            PyErr_NoMemory();
            goto out;
        }
        if (cpy_condition_core(st, conds[i], &cq[i]) < 0) goto out;
        cps[i] = &cq[i].cond;
    }

    for (i = 0, ev_i = 0, tag_i = 0; i < nreq; i++) {
        Py_ssize_t len, j;
        const char *p = PyUnicode_AsUTF8AndSize(streams[i], &len); /* checked by the caller */
        if (!p) goto out;
        reqs[i].stream.ptr = p;
        reqs[i].stream.len = (size_t)len;
        reqs[i].expected = exp[i];
        reqs[i].nevents = (size_t)PyTuple_GET_SIZE(evs[i]);
        reqs[i].events = ins + ev_i;
        for (j = 0; j < PyTuple_GET_SIZE(evs[i]); j++, ev_i++) {
            cpy_event *e = (cpy_event *)PyTuple_GET_ITEM(evs[i], j);
            if (encode_event(&arena, e, &ins[ev_i], tags + tag_i, &marks[ev_i]) < 0) goto out;
            tag_i += ins[ev_i].ntags;
        }
    }
    /* the arena is final: offsets become pointers */
    for (k = 0; k < nev; k++) {
        if (marks[k] & IN_ARENA_DATA) ins[k].data.ptr = arena.ptr + (uintptr_t)ins[k].data.ptr;
        if (marks[k] & IN_ARENA_META)
            ins[k].metadata.ptr = arena.ptr + (uintptr_t)ins[k].metadata.ptr;
    }

    /* reducers run for snapshots may print */
    CPY_STORE_CALL(s, h, rc, cairn_append_conditional(h, reqs, cps, nreq, results));
    if (cpy_store_call_end(s, h, rc, streams, nreq) < 0) goto out;
    if (single) {
        out = cpy_result_new(st, &results[0]);
    } else {
        out = PyList_New((Py_ssize_t)nreq);
        for (i = 0; out && i < nreq; i++) {
            PyObject *r = cpy_result_new(st, &results[i]);
            if (!r)
                Py_CLEAR(out);
            else
                PyList_SET_ITEM(out, (Py_ssize_t)i, r);
        }
    }
out:
    for (i = 0; cq && i < nreq; i++) cpy_query_core_free(&cq[i]);
    PyMem_Free(cq);
    PyMem_Free(cps);
    cpy_buf_free(&arena);
    PyMem_Free(reqs);
    PyMem_Free(results);
    PyMem_Free(ins);
    PyMem_Free(tags);
    PyMem_Free(marks);
    return out;
}

static PyObject *store_append(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "events", "expected_version", "condition", NULL};
    PyObject *stream, *events, *expected = NULL, *cond = Py_None, *t, *r;
    int64_t exp;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$OO:append", kwlist, &stream, &events,
                                     &expected, &cond))
        return NULL;
    if (self->closed) return cpy_raise_closed(store_state(self));
    if (cpy_check_condition(store_state(self), cond) < 0) return NULL;
    if (!(t = cpy_append_arg(store_state(self), stream, events, expected, &exp))) return NULL;
    r = cpy_store_append(self, &stream, &t, &exp, &cond, 1, 1);
    Py_DECREF(t);
    return r;
}

/* ---------------------------------------------------------------------------------
 * Reads.
 * --------------------------------------------------------------------------------- */
static PyObject *store_read_stream(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "start", "backwards", "limit", "raw", NULL};
    PyObject *stream, *start_o = Py_None, *back_o = Py_False, *limit_o = Py_None;
    PyObject *raw_o = Py_False;
    int has_start, has_limit, backwards, raw;
    uint64_t start, limit;
    Py_ssize_t len;

    int before_first = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O$OOO:read_stream", kwlist, &stream, &start_o,
                                     &back_o, &limit_o, &raw_o))
        return NULL;
    /* start=-1 is the version before the first: the end of a backwards paging loop
     * (start = page[-1].version - 1) reads nothing there, and forwards it is the start. */
    if (PyLong_Check(start_o) && !PyBool_Check(start_o) && _PyLong_Sign(start_o) < 0) {
        long v = PyLong_AsLong(start_o); /* -1 with OverflowError below LONG_MIN */
        if (v != -1 || PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError,
                         "start must be >= -1 (-1: the version before the first), got %R", start_o);
            return NULL;
        }
        before_first = 1;
        start_o = Py_None;
    }
    if (!cpy_stream_arg(stream, "stream", &len) ||
        cpy_opt_uint(start_o, "start", &has_start, &start) < 0 ||
        cpy_check_bool(back_o, "backwards", &backwards) < 0 ||
        cpy_opt_uint(limit_o, "limit", &has_limit, &limit) < 0 ||
        cpy_check_bool(raw_o, "raw", &raw) < 0)
        return NULL;
    if (has_start && start > INT64_MAX) start = INT64_MAX;
    if (before_first) has_start = 1, start = 0;
    return cpy_readiter_new_stream(self, stream, has_start ? (int64_t)start : -1, backwards, limit,
                                   (has_limit && limit == 0) || (before_first && backwards), raw);
}

static PyObject *store_read_all(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"start",   "backwards", "limit", "types", "categories",
                             "streams", "tags",      "raw",   NULL};
    static const char *fnames[4] = {"types", "categories", "streams", "tags"};
    PyObject *start_o = Py_None, *back_o = Py_False, *limit_o = Py_None, *raw_o = Py_False;
    PyObject *fo[4] = {Py_None, Py_None, Py_None, Py_None}, *f[4] = {NULL, NULL, NULL, NULL};
    int has_start, has_limit, backwards, raw, empty, i;
    uint64_t start, limit;
    PyObject *r = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$OOOOOOO:read_all", kwlist, &start_o, &back_o,
                                     &limit_o, &fo[0], &fo[1], &fo[2], &fo[3], &raw_o))
        return NULL;
    if (cpy_opt_uint(start_o, "start", &has_start, &start) < 0 ||
        cpy_check_bool(back_o, "backwards", &backwards) < 0 ||
        cpy_opt_uint(limit_o, "limit", &has_limit, &limit) < 0 ||
        cpy_check_bool(raw_o, "raw", &raw) < 0)
        return NULL;
    for (i = 0; i < 4; i++)
        if (cpy_filter_arg(fo[i], fnames[i], &f[i]) < 0) goto out;
    /* Nothing to yield: limit=0, an empty filter list (docs/API.md "Reading": an empty list
     * matches no event), or start=0 backwards: position 0 is before the first event, where a
     * backwards paging loop (start = page[-1].position - 1) ends; forwards it is the first
     * event.  Only start=None means "from the end" (the core's 0). */
    empty = (has_limit && limit == 0) || (has_start && start == 0 && backwards);
    for (i = 0; i < 4; i++)
        if (f[i] && PyTuple_GET_SIZE(f[i]) == 0) empty = 1;
    r = cpy_readiter_new_all(self, has_start ? start : 0, backwards, limit, empty, f, raw);
out:
    for (i = 0; i < 4; i++) Py_XDECREF(f[i]);
    return r;
}

static PyObject *store_query(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"query", "start", "backwards", "limit", NULL};
    PyObject *query, *start_o = Py_None, *back_o = Py_False, *limit_o = Py_None;
    int has_start, has_limit, backwards;
    uint64_t start, limit;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O$OO:query", kwlist, &query, &start_o,
                                     &back_o, &limit_o))
        return NULL;
    if (cpy_check_query(store_state(self), query) < 0 ||
        cpy_opt_uint(start_o, "start", &has_start, &start) < 0 ||
        cpy_check_bool(back_o, "backwards", &backwards) < 0 ||
        cpy_opt_uint(limit_o, "limit", &has_limit, &limit) < 0)
        return NULL;
    /* as read_all: limit=0 yields nothing, and so does start=0 backwards (before the first) */
    return cpy_readiter_new_query(self, query, has_start ? start : 0, backwards, limit,
                                  (has_limit && limit == 0) ||
                                      (has_start && start == 0 && backwards));
}

static PyObject *store_stream_version(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", NULL};
    PyObject *stream;
    Py_ssize_t len;
    const char *p;
    cairn_store *h;
    int64_t v = -1;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:stream_version", kwlist, &stream))
        return NULL;
    if (!(p = cpy_stream_arg(stream, "stream", &len))) return NULL;
    CPY_STORE_CALL(self, h, rc, cairn_stream_version(h, p, (size_t)len, &v));
    if (cpy_store_call_end(self, h, rc, &stream, 1) < 0) return NULL;
    return PyLong_FromLongLong(v);
}

/* ---------------------------------------------------------------------------------
 * Stream lifecycle (spec 6)
 * --------------------------------------------------------------------------------- */
static PyObject *store_delete_stream(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "expected_version", "hard", NULL};
    PyObject *stream, *expected = NULL, *hard_o = Py_False;
    int64_t exp = CAIRN_ANY;
    uint64_t pos = 0;
    Py_ssize_t len;
    const char *p;
    cairn_store *h;
    int rc, hard;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OO:delete_stream", kwlist, &stream,
                                     &expected, &hard_o))
        return NULL;
    if (!(p = cpy_stream_arg(stream, "stream", &len))) return NULL;
    if ((expected && cpy_expected_arg(expected, &exp) < 0) ||
        cpy_check_bool(hard_o, "hard", &hard) < 0)
        return NULL;
    CPY_STORE_CALL(self, h, rc, cairn_delete_stream(h, p, (size_t)len, exp, hard, &pos));
    if (cpy_store_call_end(self, h, rc, &stream, 1) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(pos);
}

/* A limit: None (no limit) or an int >= min. */
static int limit_arg(PyObject *o, const char *name, int64_t min, int64_t *out) {
    long long v;
    int overflow;
    *out = CAIRN_NO_LIMIT;
    if (o == Py_None) return 0;
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int or None, not %.100s", name,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow > 0) v = INT64_MAX; /* beyond any version, count or age: as good as none */
    if (overflow < 0 || v < min) {
        PyErr_Format(PyExc_ValueError, "%s must be an int >= %lld or None, got %R", name,
                     (long long)min, o);
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *store_set_stream_metadata(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "max_count", "max_age", "truncate_before", NULL};
    PyObject *stream, *mc = Py_None, *ma = Py_None, *tb = Py_None;
    cairn_stream_meta m;
    uint64_t pos = 0;
    Py_ssize_t len;
    const char *p;
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OOO:set_stream_metadata", kwlist, &stream,
                                     &mc, &ma, &tb))
        return NULL;
    if (!(p = cpy_stream_arg(stream, "stream", &len))) return NULL;
    if (limit_arg(mc, "max_count", 1, &m.max_count) < 0 ||
        limit_arg(ma, "max_age", 0, &m.max_age) < 0 ||
        limit_arg(tb, "truncate_before", 0, &m.truncate_before) < 0)
        return NULL;
    CPY_STORE_CALL(self, h, rc, cairn_set_stream_metadata(h, p, (size_t)len, &m, &pos));
    if (cpy_store_call_end(self, h, rc, &stream, 1) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(pos);
}

static PyObject *limit_obj(int64_t v) {
    if (v < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

static PyObject *store_stream_metadata(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", NULL};
    PyObject *stream;
    cairn_stream_meta m;
    Py_ssize_t len;
    const char *p;
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:stream_metadata", kwlist, &stream))
        return NULL;
    if (!(p = cpy_stream_arg(stream, "stream", &len))) return NULL;
    CPY_STORE_CALL(self, h, rc, cairn_stream_metadata(h, p, (size_t)len, &m));
    if (cpy_store_call_end(self, h, rc, &stream, 1) < 0) return NULL;
    return Py_BuildValue("{sNsNsN}", "max_count", limit_obj(m.max_count), "max_age",
                         limit_obj(m.max_age), "truncate_before", limit_obj(m.truncate_before));
}

static PyObject *store_head(cpy_store *self, PyObject *unused) {
    cairn_store *h;
    uint64_t v = 0;
    int rc;

    (void)unused;
    CPY_STORE_CALL(self, h, rc, cairn_head(h, &v));
    if (cpy_store_call_end(self, h, rc, NULL, 0) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(v);
}

/* A chain hash as 64 lowercase hex digits. */
static PyObject *hex32(const uint8_t *h) {
    static const char digits[] = "0123456789abcdef";
    char s[64];
    for (int i = 0; i < 32; i++) s[2 * i] = digits[h[i] >> 4], s[2 * i + 1] = digits[h[i] & 15];
    return PyUnicode_FromStringAndSize(s, 64);
}

static PyObject *store_chain_head(cpy_store *self, PyObject *unused) {
    cairn_store *h;
    uint64_t pos = 0;
    uint8_t hash[32];
    int rc;

    (void)unused;
    CPY_STORE_CALL(self, h, rc, cairn_chain_head(h, &pos, hash));
    if (cpy_store_call_end(self, h, rc, NULL, 0) < 0) return NULL;
    return Py_BuildValue("(KN)", (unsigned long long)pos, hex32(hash));
}

static PyObject *store_get(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"position", "raw", NULL};
    cpy_state *st = store_state(self);
    unsigned long long p;
    cairn_store *h;
    cairn_event ev;
    int rc, raw = 0;
    PyObject *r = NULL, *pos, *raw_o = Py_False;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$O:get", kwlist, &pos, &raw_o)) return NULL;
    if (cpy_check_bool(raw_o, "raw", &raw) < 0) return NULL;
    if (!PyLong_Check(pos) || PyBool_Check(pos)) {
        PyErr_Format(PyExc_TypeError, "position must be an int, not %.100s", Py_TYPE(pos)->tp_name);
        return NULL;
    }
    if (_PyLong_Sign(pos) < 0) {
        PyErr_Format(PyExc_ValueError, "position must be >= 1, got %R", pos);
        return NULL;
    }
    p = PyLong_AsUnsignedLongLong(pos);
    if (p == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear(); /* beyond any position: not found */
    }
    CPY_STORE_CALL(self, h, rc,
                   p == 0 || p == (unsigned long long)-1 ? CAIRN_ENOTFOUND
                                                         : cairn_get_ex(h, p, raw, &ev));
    if (rc == CAIRN_ENOTFOUND)
        rc = cpy_raise_missing(pos);
    else if (rc >= 0)
        r = cpy_recorded_new(st, &ev, NULL);  /* ev borrowed until our next cairn call */
    cpy_store_call_end(self, h, rc, NULL, 0); /* upcasters may have printed */
    return r;
}

static PyObject *store_streams(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"prefix", NULL};
    PyObject *prefix = NULL;
    Py_ssize_t len;
    const char *p;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:streams", kwlist, &prefix)) return NULL;
    if (prefix && !(p = cpy_stream_arg(prefix, "prefix", &len))) return NULL;
    if (prefix && memchr(p, 0, (size_t)len)) { /* as a stream name: no stream holds NUL */
        PyErr_SetString(PyExc_ValueError, "prefix: a stream name must not contain NUL");
        return NULL;
    }
    return cpy_namesiter_new(self, prefix);
}

/* verify(progress=None, damage=None): the core calls back on this thread, without the GIL
 * -- progress once per chunk of records, damage once per damaged record -- and the
 * callbacks take it to call `progress(done, total)` / `damage(position, message)`.  The
 * first exception a callable raises is kept (the check goes on: the core cannot be stopped
 * there) and raised when the check is done, unless the check found damage. */
typedef struct verify_cb {
    PyObject *fn, *dfn;
    PyObject *exc, *val, *tb; /* the first exception a callable raised (PyErr_Fetch) */
} verify_cb;

static void verify_result(verify_cb *cb, PyObject *r) {
    if (r)
        Py_DECREF(r);
    else
        PyErr_Fetch(&cb->exc, &cb->val, &cb->tb);
}

static void verify_progress(void *ctx, uint64_t done, uint64_t total) {
    verify_cb *cb = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    if (!cb->exc)
        verify_result(cb,
                      PyObject_CallFunction(cb->fn, "KK", (unsigned long long)done,
                                            (unsigned long long)total));
    PyGILState_Release(g);
}

/* After the core call: its failure (damage wins over a callable's exception, which is
 * dropped), else the callable's kept exception; -1 with an exception set, 0 when neither. */
static int verify_end(cpy_store *self, cairn_store *h, int rc, verify_cb *cb) {
    if (cpy_store_call_end(self, h, rc, NULL, 0) < 0) {
        Py_XDECREF(cb->exc);
        Py_XDECREF(cb->val);
        Py_XDECREF(cb->tb);
        return -1;
    }
    if (cb->exc) {
        PyErr_Restore(cb->exc, cb->val, cb->tb);
        return -1;
    }
    return 0;
}

static void verify_damage(void *ctx, uint64_t position, const char *message) {
    verify_cb *cb = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    if (!cb->exc) { /* a message may cut a stream name inside a UTF-8 sequence */
        PyObject *m = PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message), "replace");
        verify_result(
            cb, m ? PyObject_CallFunction(cb->dfn, "KN", (unsigned long long)position, m) : NULL);
    }
    PyGILState_Release(g);
}

static PyObject *store_verify(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"progress", "damage", NULL};
    cpy_state *st = store_state(self);
    cairn_verify_report rep;
    verify_cb cb = {NULL, NULL, NULL, NULL, NULL};
    cairn_store *h;
    int rc;
    PyObject *r = NULL, *fn = Py_None, *dfn = Py_None;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OO:verify", kwlist, &fn, &dfn)) return NULL;
    if ((fn != Py_None && !PyCallable_Check(fn)) || (dfn != Py_None && !PyCallable_Check(dfn))) {
        PyObject *bad = fn != Py_None && !PyCallable_Check(fn) ? fn : dfn;
        PyErr_Format(PyExc_TypeError, "%s must be callable or None, not %.100s",
                     bad == fn ? "progress" : "damage", Py_TYPE(bad)->tp_name);
        return NULL;
    }
    cb.fn = fn, cb.dfn = dfn;
    memset(&rep, 0, sizeof rep);
    CPY_STORE_CALL(self, h, rc,
                   cairn_verify_all(h, &rep, fn == Py_None ? NULL : verify_progress, &cb,
                                    dfn == Py_None ? NULL : verify_damage, &cb));
    if (verify_end(self, h, rc, &cb) < 0) return NULL;
    if ((r = PyStructSequence_New(st->Verify_Type))) {
        PyObject *a = PyLong_FromUnsignedLongLong(rep.events);
        PyObject *b = PyLong_FromUnsignedLongLong(rep.streams);
        PyObject *c = PyLong_FromUnsignedLongLong(rep.head);
        PyObject *d = hex32(rep.chain);
        PyStructSequence_SetItem(r, 0, a);
        PyStructSequence_SetItem(r, 1, b);
        PyStructSequence_SetItem(r, 2, c);
        PyStructSequence_SetItem(r, 3, d);
        if (!a || !b || !c || !d) Py_CLEAR(r);
    }
    return r;
}

/* maintain(progress=None): reclaims what the lifecycle rules removed (spec 6); progress as
 * verify's, once per commit: (streams done, streams with limits). */
static PyObject *store_maintain(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"progress", NULL};
    cairn_maintain_report rep = {0, 0};
    verify_cb cb = {NULL, NULL, NULL, NULL, NULL};
    cairn_store *h;
    int rc;
    PyObject *fn = Py_None;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$O:maintain", kwlist, &fn)) return NULL;
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "progress must be callable or None, not %.100s",
                     Py_TYPE(fn)->tp_name);
        return NULL;
    }
    cb.fn = fn;
    CPY_STORE_CALL(self, h, rc,
                   cairn_maintain(h, &rep, fn == Py_None ? NULL : verify_progress, &cb));
    if (verify_end(self, h, rc, &cb) < 0) return NULL;
    return Py_BuildValue("{sKsK}", "streams", (unsigned long long)rep.streams, "removed",
                         (unsigned long long)rep.removed);
}

/* ---------------------------------------------------------------------------------
 * Operations: backup, the file's figures, subscriptions, events by id.
 * --------------------------------------------------------------------------------- */
static PyObject *store_backup(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"dest", NULL};
    PyObject *dest_o, *fs = NULL;
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:backup", kwlist, &dest_o)) return NULL;
    if (!PyUnicode_FSConverter(dest_o, &fs)) return NULL; /* str, bytes or os.PathLike */
    CPY_STORE_CALL(self, h, rc, cairn_backup(h, PyBytes_AS_STRING(fs)));
    rc = cpy_store_call_end(self, h, rc, NULL, 0);
    Py_DECREF(fs);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *store_stat(cpy_store *self, PyObject *unused) {
    cairn_filestat fs;
    cairn_store *h;
    int rc;

    (void)unused;
    CPY_STORE_CALL(self, h, rc, cairn_stat(h, &fs));
    if (cpy_store_call_end(self, h, rc, NULL, 0) < 0) return NULL;
    return Py_BuildValue(
        "{sKsKsIsKsKsK}", "file_bytes", (unsigned long long)fs.file_bytes, "map_bytes",
        (unsigned long long)fs.map_bytes, "page_size", (unsigned int)fs.page_size, "pages_used",
        (unsigned long long)fs.pages_used, "pages_free", (unsigned long long)fs.pages_free,
        "txn_id", (unsigned long long)fs.txn_id);
}

/* Names go through cpy_names (the core's callback runs without the GIL), checkpoints into
 * an array beside them; the dict is made once the GIL is back. */
typedef struct subs_list {
    cpy_names names;
    uint64_t *cps; /* PyMem_Raw */
    size_t cap;
} subs_list;

static int subs_collect(void *ctx, const char *name, size_t len, uint64_t cp) {
    subs_list *l = ctx;
    if (l->names.count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *p = PyMem_RawRealloc(l->cps, cap * sizeof *p);
        if (!p) return l->names.oom = 1;
        l->cps = p, l->cap = cap;
    }
    l->cps[l->names.count] = cp;
    return cpy_names_add(&l->names, name, len);
}

static PyObject *store_subscriptions(cpy_store *self, PyObject *unused) {
    subs_list l;
    cairn_store *h;
    PyObject *d = NULL, *names = NULL;
    int rc;

    (void)unused;
    memset(&l, 0, sizeof l);
    CPY_STORE_CALL(self, h, rc, cairn_subscriptions(h, subs_collect, &l));
    if (cpy_store_call_end(self, h, rc, NULL, 0) < 0) goto out;
    if (!(names = cpy_names_list(&l.names)) || !(d = PyDict_New())) goto out;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(l.cps[i]);
        if (!v || PyDict_SetItem(d, PyList_GET_ITEM(names, i), v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            goto out;
        }
        Py_DECREF(v);
    }
out:
    Py_XDECREF(names);
    cpy_names_free(&l.names);
    PyMem_RawFree(l.cps);
    return d;
}

static PyObject *store_position_of(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"id", NULL};
    cpy_state *st = store_state(self);
    PyObject *id, *u = NULL, *b = NULL;
    uint8_t raw[16];
    uint64_t pos = 0;
    cairn_store *h;
    int rc, is_uuid;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:position_of", kwlist, &id)) return NULL;
    if ((is_uuid = PyObject_IsInstance(id, st->uuid_type)) < 0) return NULL;
    if (is_uuid) {
        u = Py_NewRef(id);
    } else if (PyUnicode_Check(id)) {
        if (!(u = PyObject_CallOneArg(st->uuid_type, id))) {
            if (PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "id: %R is not a UUID", id);
            }
            return NULL;
        }
    } else {
        PyErr_Format(PyExc_TypeError, "id must be a uuid.UUID or a str, not %.100s",
                     Py_TYPE(id)->tp_name);
        return NULL;
    }
    b = PyObject_GetAttrString(u, "bytes");
    Py_DECREF(u);
    if (!b) return NULL;
    if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) != 16) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_ValueError, "id: UUID.bytes is not 16 bytes");
        return NULL;
    }
    memcpy(raw, PyBytes_AS_STRING(b), 16);
    Py_DECREF(b);
    CPY_STORE_CALL(self, h, rc, cairn_event_position(h, raw, &pos));
    if (rc == CAIRN_ENOTFOUND) rc = CAIRN_OK, pos = 0;
    if (cpy_store_call_end(self, h, rc, NULL, 0) < 0) return NULL;
    if (pos == 0) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(pos);
}

/* ---------------------------------------------------------------------------------
 * Crypto-shredding (spec 6).
 * --------------------------------------------------------------------------------- */
/* The UTF-8 of a subject argument (borrowed from the str), or NULL with TypeError /
 * ValueError naming `subject`. */
static const char *subject_arg(PyObject *o, Py_ssize_t *n) {
    const char *p;
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "subject must be a str, not %.100s", Py_TYPE(o)->tp_name);
        return NULL;
    }
    if (!(p = PyUnicode_AsUTF8AndSize(o, n))) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError,
                            "subject is not valid UTF-8 (it contains a lone surrogate)");
        }
        return NULL;
    }
    if (cairn__check_subject(p, (size_t)*n)) {
        PyErr_SetString(PyExc_ValueError, cairn_errmsg());
        return NULL;
    }
    return p;
}

static PyObject *store_forget(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"subject", NULL};
    PyObject *subject;
    const char *p;
    Py_ssize_t n;
    cairn_store *h;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:forget", kwlist, &subject)) return NULL;
    if (!(p = subject_arg(subject, &n))) return NULL;
    CPY_STORE_CALL(self, h, rc, cairn_forget(h, p, (size_t)n, NULL));
    if (cpy_store_call_end(self, h, rc, NULL, 0) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *store_subject_key(cpy_store *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"subject", NULL};
    PyObject *subject, *r;
    const char *p;
    Py_ssize_t n;
    uint8_t key[32];
    cairn_store *h;
    int rc, found = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:_subject_key", kwlist, &subject)) return NULL;
    if (!(p = subject_arg(subject, &n))) return NULL;
    CPY_STORE_CALL(self, h, rc, cairn__subject_key(h, p, (size_t)n, key, &found));
    if (cpy_store_call_end(self, h, rc, NULL, 0) < 0) return NULL;
    if (!found) Py_RETURN_NONE;
    r = PyBytes_FromStringAndSize((const char *)key, sizeof key);
    memset(key, 0, sizeof key); /* the bytes object is the caller's copy */
    return r;
}

static PyObject *store_sync(cpy_store *self, PyObject *unused) {
    cairn_store *h;
    int rc;

    (void)unused;
    CPY_STORE_CALL(self, h, rc, cairn_sync(h));
    if (cpy_store_call_end(self, h, rc, NULL, 0) < 0) return NULL;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------
 * Lifecycle.
 * --------------------------------------------------------------------------------- */
static PyObject *store_close(cpy_store *self, PyObject *unused) {
    (void)unused;
    self->closed = 1;
    if (self->inflight == 0) store_really_close(self);
    Py_RETURN_NONE;
}

static PyObject *store_enter_ctx(cpy_store *self, PyObject *unused) {
    (void)unused;
    if (self->closed) return cpy_raise_closed(store_state(self));
    return Py_NewRef(self);
}

static PyObject *store_exit_ctx(cpy_store *self, PyObject *args) {
    (void)args;
    self->closed = 1;
    if (self->inflight == 0) store_really_close(self);
    Py_RETURN_FALSE;
}

static PyObject *store_transaction(cpy_store *self, PyObject *unused) {
    (void)unused;
    if (self->closed) return cpy_raise_closed(store_state(self));
    return cpy_transaction_new(self);
}

static const char *durability_name(cairn_durability d) {
    switch (d) {
    case CAIRN_DURABLE_FULL: return "full";
    case CAIRN_DURABLE_RELAXED: return "relaxed";
    case CAIRN_DURABLE_NONE: return "none";
    }
    return "?";
}

PyObject *cpy_store_open(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path",
                             "durability",
                             "readonly",
                             "map_size",
                             "script_instruction_limit",
                             "script_memory_limit",
                             "script_time_limit",
                             NULL};
    cpy_state *st = cpy_state_of_module(module);
    PyObject *path_o, *dur_o = NULL, *ro_o = Py_False, *map_o = Py_None, *sil_o = NULL;
    PyObject *sml_o = NULL, *stl_o = NULL, *fs = NULL, *path_str = NULL, *path_bytes = NULL;
    cairn_options opts;
    cairn_store *h = NULL;
    cpy_store *self = NULL;
    long long sil = 10000000, sml = 64ll << 20;
    double stl = 1.0; /* seconds; 0: none */
    int has_map, rc;
    uint64_t map_size;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OOOOOO:open", kwlist, &path_o, &dur_o, &ro_o,
                                     &map_o, &sil_o, &sml_o, &stl_o))
        return NULL;
    cairn_options_init(&opts);

    fs = PyOS_FSPath(path_o);
    if (!fs) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "path must be a str or os.PathLike, not %.100s",
                     Py_TYPE(path_o)->tp_name);
        return NULL;
    }
    if (PyUnicode_Check(fs)) {
        path_str = Py_NewRef(fs);
        path_bytes = PyUnicode_EncodeFSDefault(fs);
    } else {
        path_bytes = Py_NewRef(fs);
        path_str = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(fs), PyBytes_GET_SIZE(fs));
    }
    if (!path_str || !path_bytes) goto fail;
    if (PyBytes_GET_SIZE(path_bytes) == 0 ||
        memchr(PyBytes_AS_STRING(path_bytes), 0, (size_t)PyBytes_GET_SIZE(path_bytes))) {
        PyErr_SetString(PyExc_ValueError, "path must be a non-empty path without NUL characters");
        goto fail;
    }

    if (dur_o) {
        if (!PyUnicode_Check(dur_o)) {
            PyErr_Format(PyExc_TypeError, "durability must be a str, not %.100s",
                         Py_TYPE(dur_o)->tp_name);
            goto fail;
        }
        if (PyUnicode_CompareWithASCIIString(dur_o, "full") == 0)
            opts.durability = CAIRN_DURABLE_FULL;
        else if (PyUnicode_CompareWithASCIIString(dur_o, "relaxed") == 0)
            opts.durability = CAIRN_DURABLE_RELAXED;
        else if (PyUnicode_CompareWithASCIIString(dur_o, "none") == 0)
            opts.durability = CAIRN_DURABLE_NONE;
        else {
            PyErr_Format(PyExc_ValueError,
                         "durability must be \"full\", \"relaxed\" or \"none\", got %R", dur_o);
            goto fail;
        }
    }
    if (cpy_check_bool(ro_o, "readonly", &opts.readonly) < 0) goto fail;
    if (cpy_opt_uint(map_o, "map_size", &has_map, &map_size) < 0) goto fail;
    if (has_map) {
        if (map_size == 0) {
            PyErr_SetString(PyExc_ValueError, "map_size must be > 0 or None");
            goto fail;
        }
        opts.map_size = map_size;
    }
    {
        PyObject *lim[2] = {sil_o, sml_o};
        long long *dst[2] = {&sil, &sml};
        static const char *names[2] = {"script_instruction_limit", "script_memory_limit"};
        for (int i = 0; i < 2; i++) {
            int has;
            uint64_t v;
            if (!lim[i]) continue;
            if (lim[i] == Py_None) {
                PyErr_Format(PyExc_TypeError, "%s must be an int", names[i]);
                goto fail;
            }
            /* one rule, one wording: -1 and 0 are both "not a positive int" */
            if (PyLong_Check(lim[i]) && !PyBool_Check(lim[i]) && _PyLong_Sign(lim[i]) <= 0) {
                PyErr_Format(PyExc_ValueError, "%s must be a positive int, got %R", names[i],
                             lim[i]);
                goto fail;
            }
            if (cpy_opt_uint(lim[i], names[i], &has, &v) < 0) goto fail;
            if (v == 0 || v > INT64_MAX) {
                PyErr_Format(PyExc_ValueError, "%s must be a positive int, got %R", names[i],
                             lim[i]);
                goto fail;
            }
            *dst[i] = (long long)v;
        }
    }

    if (stl_o == Py_None) {
        stl = 0;
    } else if (stl_o) {
        if (PyBool_Check(stl_o) || !(PyFloat_Check(stl_o) || PyLong_Check(stl_o))) {
            PyErr_Format(PyExc_TypeError,
                         "script_time_limit must be a number of seconds or None, not %.100s",
                         Py_TYPE(stl_o)->tp_name);
            goto fail;
        }
        stl = PyFloat_AsDouble(stl_o);
        if (stl == -1.0 && PyErr_Occurred()) goto fail;
        if (!(stl > 0) || stl > 1e9) { /* NaN too */
            PyErr_Format(PyExc_ValueError,
                         "script_time_limit must be > 0 seconds (at most 1e9) or None, got %R",
                         stl_o);
            goto fail;
        }
    }
    opts.script_time_limit_ns = stl > 0 ? (uint64_t)(stl * 1e9) : UINT64_MAX;
    if (opts.script_time_limit_ns == 0) opts.script_time_limit_ns = 1;
    opts.script_instruction_limit = (uint64_t)sil;
    opts.script_memory_limit = (uint64_t)sml;
    opts.log = cpy_log_line; /* queues print() lines; flushed after each call */
    opts.log_ctx = NULL;
    {
        const char *cpath = PyBytes_AS_STRING(path_bytes);
        CPY_UNLOCKED(rc = cairn_open(cpath, &opts, &h));
    }
    if (rc < 0) {
        cpy_raise(st, rc, NULL, 0); /* the core's message names the path */
        goto fail;
    }
    self = (cpy_store *)st->Store_Type->tp_alloc(st->Store_Type, 0);
    if (!self) {
        CPY_UNLOCKED(cairn_close(h));
        goto fail;
    }
    self->handle = h;
    self->module = Py_NewRef(module);
    self->path = path_str;
    self->durability = opts.durability;
    self->readonly = opts.readonly != 0;
    self->script_instruction_limit = sil;
    self->script_memory_limit = sml;
    self->script_time_limit = stl;
    Py_DECREF(fs);
    Py_DECREF(path_bytes);
    return (PyObject *)self;
fail:
    Py_XDECREF(fs);
    Py_XDECREF(path_str);
    Py_XDECREF(path_bytes);
    return NULL;
}

static int store_traverse(cpy_store *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    return 0;
}

static int store_clear(cpy_store *self) {
    /* the handle goes in dealloc; the module must outlive it only for error reporting */
    Py_CLEAR(self->path);
    return 0;
}

static void store_dealloc(cpy_store *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
    self->closed = 1;
    if (self->handle) store_really_close(self);
    Py_CLEAR(self->path);
    Py_CLEAR(self->module);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *store_repr(cpy_store *self) {
    return PyUnicode_FromFormat("<cairn.Store path=%R durability='%s'%s%s>",
                                self->path ? self->path : Py_None,
                                durability_name(self->durability),
                                self->readonly ? " readonly" : "", self->closed ? " closed" : "");
}

static PyObject *store_get_path(cpy_store *self, void *c) {
    (void)c;
    return Py_NewRef(self->path ? self->path : Py_None);
}
static PyObject *store_get_readonly(cpy_store *self, void *c) {
    (void)c;
    return PyBool_FromLong(self->readonly);
}
static PyObject *store_get_closed(cpy_store *self, void *c) {
    (void)c;
    return PyBool_FromLong(self->closed);
}
static PyObject *store_get_script_time_limit(cpy_store *self, void *c) {
    (void)c;
    if (self->script_time_limit <= 0) Py_RETURN_NONE;
    return PyFloat_FromDouble(self->script_time_limit);
}
static PyObject *store_get_durability(cpy_store *self, void *c) {
    (void)c;
    return PyUnicode_FromString(durability_name(self->durability));
}

static PyGetSetDef store_getset[] = {
    {"path", (getter)store_get_path, NULL, "The store directory (str).", NULL},
    {"readonly", (getter)store_get_readonly, NULL, "True when opened with readonly=True.", NULL},
    {"durability", (getter)store_get_durability, NULL, "\"full\", \"relaxed\" or \"none\".", NULL},
    {"closed", (getter)store_get_closed, NULL, "True once close() was called.", NULL},
    {"script_time_limit", (getter)store_get_script_time_limit, NULL,
     "Seconds one script invocation may run (float), or None: no time limit.", NULL},
    {NULL},
};

static PyMemberDef store_members[] = {
    {"script_instruction_limit", T_LONGLONG, offsetof(cpy_store, script_instruction_limit),
     READONLY, "Lua instructions one script call may run."},
    {"script_memory_limit", T_LONGLONG, offsetof(cpy_store, script_memory_limit), READONLY,
     "Bytes of memory one script state may use."},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(cpy_store, weakrefs), READONLY, NULL},
    {NULL},
};

static PyMethodDef store_methods[] = {
    {"close", (PyCFunction)store_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose the store.  Later calls raise StoreClosed; calls already "
     "running in "
     "other threads finish first."},
    {"__enter__", (PyCFunction)store_enter_ctx, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)store_exit_ctx, METH_VARARGS, NULL},
    {"append", (PyCFunction)(void (*)(void))store_append, METH_VARARGS | METH_KEYWORDS,
     "append($self, /, stream, events, *, expected_version=-2, condition=None)\n--\n\n"
     "Append events (an iterable of Event) to a stream atomically; returns AppendResult. "
     "A cairn.Condition is checked inside the write transaction."},
    {"transaction", (PyCFunction)store_transaction, METH_NOARGS,
     "transaction($self, /)\n--\n\nA Transaction: `with store.transaction() as tx: "
     "tx.append(...)`."},
    {"read_stream", (PyCFunction)(void (*)(void))store_read_stream, METH_VARARGS | METH_KEYWORDS,
     "read_stream($self, /, stream, start=None, *, backwards=False, limit=None, raw=False)\n--\n\n"
     "Iterate over a stream's events from version `start` (inclusive)."},
    {"query", (PyCFunction)(void (*)(void))store_query, METH_VARARGS | METH_KEYWORDS,
     "query($self, /, query, start=None, *, backwards=False, limit=None)\n--\n\n"
     "Iterate over the events a cairn.Query matches, up to the head at the call "
     "(``.head``), in position order from `start` (inclusive)."},
    {"read_all", (PyCFunction)(void (*)(void))store_read_all, METH_VARARGS | METH_KEYWORDS,
     "read_all($self, /, start=None, *, backwards=False, limit=None, types=None, categories=None, "
     "streams=None, tags=None, raw=False)\n--\n\n"
     "Iterate over the global log from position `start` (inclusive)."},
    {"stream_version", (PyCFunction)(void (*)(void))store_stream_version,
     METH_VARARGS | METH_KEYWORDS,
     "stream_version($self, /, stream)\n--\n\nThe stream's current version, -1 when it has no "
     "events."},
    {"delete_stream", (PyCFunction)(void (*)(void))store_delete_stream,
     METH_VARARGS | METH_KEYWORDS,
     "delete_stream($self, /, stream, *, expected_version=ANY, hard=False)\n--\n\nDelete a "
     "stream: soft (its events removed, numbering goes on) or hard (a tombstone: reads and "
     "appends raise StreamDeleted forever).  Writes a $StreamDeleted event to $lifecycle in "
     "the same commit and returns its position."},
    {"set_stream_metadata", (PyCFunction)(void (*)(void))store_set_stream_metadata,
     METH_VARARGS | METH_KEYWORDS,
     "set_stream_metadata($self, /, stream, *, max_count=None, max_age=None, "
     "truncate_before=None)\n--\n\nSet all three retention limits of a stream (None: no "
     "limit), enforced by every read at once.  Writes a $StreamMetadataSet event to "
     "$lifecycle in the same commit and returns its position."},
    {"stream_metadata", (PyCFunction)(void (*)(void))store_stream_metadata,
     METH_VARARGS | METH_KEYWORDS,
     "stream_metadata($self, /, stream)\n--\n\nThe stream's limits: a dict of max_count, "
     "max_age and truncate_before, None where unset."},
    {"maintain", (PyCFunction)(void (*)(void))store_maintain, METH_VARARGS | METH_KEYWORDS,
     "maintain($self, /, *, progress=None)\n--\n\nReclaim the space of every event the "
     "lifecycle rules removed (deletes, max_count, max_age, truncate_before): records and "
     "index entries leave the file.  Returns {'streams': n, 'removed': n}."},
    {"head", (PyCFunction)store_head, METH_NOARGS,
     "head($self, /)\n--\n\nThe last global position, 0 when the store is empty."},
    {"chain_head", (PyCFunction)store_chain_head, METH_NOARGS,
     "chain_head($self, /)\n--\n\n(position, hex): the last position ever assigned and its chain "
     "hash (BLAKE2b-256);\n(0, the genesis hash) for an empty store.  Record it outside the "
     "store: verify()\nthen proves that nothing up to it was changed."},
    {"get", (PyCFunction)(void (*)(void))store_get, METH_VARARGS | METH_KEYWORDS,
     "get($self, /, position, *, raw=False)\n--\n\nThe event at a global position; KeyError when "
     "there is none.  Upcasters apply unless raw=True."},
    {"streams", (PyCFunction)(void (*)(void))store_streams, METH_VARARGS | METH_KEYWORDS,
     "streams($self, /, prefix='')\n--\n\nIterate over stream names starting with prefix, sorted."},
    {"verify", (PyCFunction)(void (*)(void))store_verify, METH_VARARGS | METH_KEYWORDS,
     "verify($self, /, *, progress=None, damage=None)\n--\n\nCheck every record and index; "
     "returns VerifyReport(events, streams, head; chain).\nRaises CorruptionError naming the first "
     "damage. progress(done, total) is called as records are checked;\nwith damage, "
     "damage(position, message) is called for each damaged event and the check goes on."},
    {"backup", (PyCFunction)(void (*)(void))store_backup, METH_VARARGS | METH_KEYWORDS,
     "backup($self, /, dest)\n--\n\nWrite a consistent, compacted copy of the store into "
     "directory dest\n(missing or empty), while writers keep writing."},
    {"stat", (PyCFunction)store_stat, METH_NOARGS,
     "stat($self, /)\n--\n\nThe figures of data.mdb: a dict with file_bytes, map_bytes, "
     "page_size,\npages_used, pages_free, txn_id."},
    {"subscriptions", (PyCFunction)store_subscriptions, METH_NOARGS,
     "subscriptions($self, /)\n--\n\nEvery named subscription with its checkpoint: "
     "{name: position}, sorted by name."},
    {"position_of", (PyCFunction)(void (*)(void))store_position_of, METH_VARARGS | METH_KEYWORDS,
     "position_of($self, /, id)\n--\n\nThe position of the event with this id (uuid.UUID or "
     "str), or None."},
    {"sync", (PyCFunction)store_sync, METH_NOARGS,
     "sync($self, /)\n--\n\nMake every commit durable."},
    {"forget", (PyCFunction)(void (*)(void))store_forget, METH_VARARGS | METH_KEYWORDS,
     "forget($self, /, subject)\n--\n\nCrypto-shredding: the subject's key is made "
     "unrecoverable from every file of\nthe store and a $SubjectForgotten event is appended "
     "to $lifecycle in the same\ncommit; the subject's events then read with data None and "
     "forgotten True."},
    {"_subject_key", (PyCFunction)(void (*)(void))store_subject_key, METH_VARARGS | METH_KEYWORDS,
     "_subject_key($self, /, subject)\n--\n\nFor tests and audits: the subject's current key "
     "(bytes), or None once\nforgotten (or before its first event)."},
    {"define_projection", (PyCFunction)(void (*)(void))cpy_store_define_projection,
     METH_VARARGS | METH_KEYWORDS,
     "define_projection($self, /, name, source)\n--\n\nStores a projection script (ScriptError on "
     "a syntax error or bad shape); other source than before resets it."},
    {"projection", (PyCFunction)(void (*)(void))cpy_store_projection, METH_VARARGS | METH_KEYWORDS,
     "projection($self, /, name)\n--\n\nA live view of a projection (KeyError when undefined)."},
    {"run_projections", (PyCFunction)(void (*)(void))cpy_store_run_projections,
     METH_VARARGS | METH_KEYWORDS,
     "run_projections($self, /, name=None)\n--\n\nCatches up one or every async projection; "
     "returns the number of events processed."},
    {"delete_projection", (PyCFunction)(void (*)(void))cpy_store_delete_projection,
     METH_VARARGS | METH_KEYWORDS,
     "delete_projection($self, /, name)\n--\n\nRemoves a projection, its state and record."},
    {"start_projections", (PyCFunction)cpy_store_start_projections, METH_NOARGS,
     "start_projections($self, /)\n--\n\nStarts a background thread keeping every async "
     "projection current."},
    {"stop_projections", (PyCFunction)cpy_store_stop_projections, METH_NOARGS,
     "stop_projections($self, /)\n--\n\nStops the background runner (no-op when none)."},
    {"define_aggregate", (PyCFunction)(void (*)(void))cpy_store_define_aggregate,
     METH_VARARGS | METH_KEYWORDS,
     "define_aggregate($self, /, name, source)\n--\n\n"
     "Store the Lua aggregate script `name` (ScriptError on a syntax error or a bad shape).  "
     "Redefining with the same source changes nothing."},
    {"define_upcasters", (PyCFunction)(void (*)(void))cpy_store_define_upcasters,
     METH_VARARGS | METH_KEYWORDS,
     "define_upcasters($self, /, source)\n--\n\n"
     "Store the Lua upcasters script (named \"upcasters\"); it applies to every read from now on "
     "unless raw=True."},
    {"scripts", (PyCFunction)cpy_store_scripts, METH_NOARGS,
     "scripts($self, /)\n--\n\n"
     "The stored scripts: {\"aggregate\": [...], \"projection\": [...], \"upcasters\": [...]}, "
     "names sorted."},
    {"load", (PyCFunction)(void (*)(void))cpy_store_load, METH_VARARGS | METH_KEYWORDS,
     "load($self, /, stream, *, aggregate=None, version=None, at=None)\n--\n\n"
     "Fold the stream's events through the aggregate's reducers; returns an Aggregate.  "
     "version= or at= (an aware datetime, inclusive) load the state as it was then.  "
     "aggregate defaults to the stream's category; KeyError when there is no such script."},
    {"execute", (PyCFunction)(void (*)(void))cpy_store_execute, METH_VARARGS | METH_KEYWORDS,
     "execute($self, /, stream, command, data=None, *, aggregate=None, expected_version=-2, "
     "metadata=None, id=None)\n--\n\n"
     "Run the aggregate's decide[command] on the current state inside the write transaction "
     "and append the events it returns (metadata copied onto each); returns AppendResult "
     "(position None when it decided nothing).  CommandRejected when the script rejects.\n\n"
     "id: a command id (UUID or str).  A retry of the command returns the first result and "
     "writes nothing, without running decide again; the id used for another command raises "
     "DuplicateEvent."},
    {"decide", (PyCFunction)(void (*)(void))cpy_store_decide, METH_VARARGS | METH_KEYWORDS,
     cpy_store_decide_doc},
    {"compensate", (PyCFunction)(void (*)(void))cpy_store_compensate, METH_VARARGS | METH_KEYWORDS,
     "compensate($self, /, stream, version, *, aggregate=None, metadata=None)\n--\n\n"
     "Append the events the aggregate's compensate handler returns for the event at "
     "`version`; returns AppendResult."},
    {"rollback", (PyCFunction)(void (*)(void))cpy_store_rollback, METH_VARARGS | METH_KEYWORDS,
     "rollback($self, /, correlation_id)\n--\n\n"
     "Compensate every not-yet-compensated event with this metadata.correlation_id, newest "
     "first, in one commit; returns a list of AppendResult (newest first, [] when none)."},
    {"subscribe", (PyCFunction)(void (*)(void))cpy_store_subscribe, METH_VARARGS | METH_KEYWORDS,
     "subscribe($self, /, start=1, *, name=None, timeout=None, types=None, categories=None, "
     "streams=None, tags=None)\n--\n\n"
     "Every matching event from `start` on, in position order, then new ones as they are "
     "committed (by any thread or process); returns a Subscription."},
    {"checkpoint", (PyCFunction)(void (*)(void))cpy_store_checkpoint, METH_VARARGS | METH_KEYWORDS,
     "checkpoint($self, /, name)\n--\n\n"
     "The stored checkpoint of the named subscription (0 when none)."},
    {NULL},
};

static PyType_Slot store_slots[] = {
    {Py_tp_dealloc, store_dealloc},
    {Py_tp_traverse, store_traverse},
    {Py_tp_clear, store_clear},
    {Py_tp_repr, store_repr},
    {Py_tp_methods, store_methods},
    {Py_tp_getset, store_getset},
    {Py_tp_members, store_members},
    {Py_tp_doc, (void *)"An open cairn store; create one with cairn.open(path)."},
    {0, NULL},
};

static PyType_Spec store_spec = {
    .name = "cairn.Store",
    .basicsize = sizeof(cpy_store),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = store_slots,
};

int cpy_store_type_init(PyObject *module, cpy_state *st) {
    st->Store_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &store_spec, NULL);
    if (!st->Store_Type || PyModule_AddType(module, st->Store_Type) < 0) return -1;
    return 0;
}
