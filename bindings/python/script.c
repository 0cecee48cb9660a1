/*
 * script.c -- Store.define_aggregate / define_upcasters / scripts, and the road from a
 * script's print() to the logging logger "cairn": a thread-local queue filled without the
 * GIL, emptied into logging once the core call has returned.
 */
#include "binding.h"

#include <pthread.h>
#include <stdlib.h>

/* ---------------------------------------------------------------------------------
 * print() -> logging.  The core calls cpy_log_line on whatever thread runs the script,
 * with the GIL released or held, possibly inside an LMDB write transaction: it must not
 * touch Python.  Lines wait in a per-thread list (plain malloc); the binding flushes it
 * with the GIL held after each core call that can run a script.  A thread that prints
 * without ever flushing (none of ours) is capped, and its list is freed when it exits.
 * --------------------------------------------------------------------------------- */
#define LOG_MAX_LINES 10000
#define LOG_MAX_BYTES (16u << 20)

typedef struct log_line {
    struct log_line *next;
    size_t script_len, msg_len;
    char text[]; /* script bytes, then msg bytes */
} log_line;

typedef struct log_queue {
    log_line *head, *tail;
    size_t lines, bytes;
    size_t dropped; /* lines refused by the caps (or by malloc) since the last flush */
    int keyed;
} log_queue;

static _Thread_local log_queue tl_log;
static pthread_key_t log_key;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_free_lines(log_line *l) {
    while (l) {
        log_line *next = l->next;
        free(l);
        l = next;
    }
}

static void log_thread_exit(void *p) {
    log_queue *q = p;
    log_free_lines(q->head);
    q->head = q->tail = NULL;
    q->lines = q->bytes = 0;
}

static void log_make_key(void) { (void)pthread_key_create(&log_key, log_thread_exit); }

void cpy_log_line(void *ctx, const char *script, const char *msg, size_t len) {
    log_queue *q = &tl_log;
    size_t slen = script ? strlen(script) : 0;
    log_line *l;

    (void)ctx;
    if (!q->keyed) {
        pthread_once(&log_once, log_make_key);
        if (pthread_setspecific(log_key, q) == 0) q->keyed = 1;
    }
    if (q->lines >= LOG_MAX_LINES || len > LOG_MAX_BYTES || q->bytes > LOG_MAX_BYTES - len ||
        !(l = malloc(sizeof *l + slen + len))) {
        q->dropped++;
        return;
    }
    l->next = NULL;
    l->script_len = slen;
    l->msg_len = len;
    if (slen) memcpy(l->text, script, slen);
    if (len) memcpy(l->text + slen, msg, len);
    if (q->tail)
        q->tail->next = l;
    else
        q->head = l;
    q->tail = l;
    q->lines++;
    q->bytes += len;
}

/* logger.info("%s: %s", script, msg, extra={"script": script}); errors go to
 * sys.unraisablehook (a print must never turn a successful call into a failure). */
static void log_one(cpy_state *st, PyObject *fmt, const char *script, size_t slen, const char *msg,
                    size_t mlen) {
    PyObject *name = NULL, *text = NULL, *args = NULL, *kw = NULL, *extra = NULL, *info = NULL,
             *r = NULL;

    name = PyUnicode_DecodeUTF8(script, (Py_ssize_t)slen, "replace");
    text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)mlen, "replace");
    if (!name || !text) goto out;
    args = PyTuple_Pack(3, fmt, name, text);
    extra = Py_BuildValue("{sO}", "script", name);
    kw = extra ? Py_BuildValue("{sO}", "extra", extra) : NULL;
    info = PyObject_GetAttrString(st->logger, "info");
    if (!args || !kw || !info) goto out;
    r = PyObject_Call(info, args, kw);
out:
    if (!r) PyErr_WriteUnraisable(st->logger ? st->logger : Py_None);
    Py_XDECREF(name);
    Py_XDECREF(text);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_XDECREF(extra);
    Py_XDECREF(info);
    Py_XDECREF(r);
}

void cpy_log_flush(cpy_state *st) {
    log_queue *q = &tl_log;
    log_line *lines = q->head, *l;
    size_t dropped = q->dropped;
    PyObject *type, *value, *tb, *fmt;

    if (!lines && !dropped) return;
    q->head = q->tail = NULL;
    q->lines = q->bytes = 0;
    q->dropped = 0;

    PyErr_Fetch(&type, &value, &tb);
    if (!st->logger) {
        PyObject *logging = PyImport_ImportModule("logging");
        if (logging) {
            st->logger = PyObject_CallMethod(logging, "getLogger", "s", "cairn");
            Py_DECREF(logging);
        }
        if (!st->logger) {
            PyErr_WriteUnraisable(Py_None);
            goto out;
        }
    }
    fmt = PyUnicode_FromString("%s: %s");
    if (!fmt) {
        PyErr_WriteUnraisable(st->logger);
        goto out;
    }
    for (l = lines; l; l = l->next)
        log_one(st, fmt, l->text, l->script_len, l->text + l->script_len, l->msg_len);
    Py_DECREF(fmt);
    if (dropped) {
        PyObject *r =
            PyObject_CallMethod(st->logger, "warning", "sn",
                                "%d line(s) printed by scripts were dropped", (Py_ssize_t)dropped);
        if (!r) PyErr_WriteUnraisable(st->logger);
        Py_XDECREF(r);
    }
out:
    log_free_lines(lines);
    PyErr_Restore(type, value, tb);
}

/* ---------------------------------------------------------------------------------
 * Defining scripts.
 * --------------------------------------------------------------------------------- */
static PyObject *define(cpy_store *s, cairn_script_kind kind, PyObject *name, PyObject *source) {
    const char *n, *src;
    Py_ssize_t nlen, slen;
    cairn_store *h;
    int rc;

    if (!(n = cpy_stream_arg(name, "name", &nlen)) ||
        !(src = cpy_stream_arg(source, "source", &slen)))
        return NULL;
    /* the chunk's top level runs: it may print */
    CPY_STORE_CALL(s, h, rc, cairn_define_script(h, kind, n, (size_t)nlen, src, (size_t)slen));
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) return NULL;
    Py_RETURN_NONE;
}

PyObject *cpy_store_define_aggregate(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"name", "source", NULL};
    PyObject *name, *source;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:define_aggregate", kwlist, &name, &source))
        return NULL;
    return define(s, CAIRN_SCRIPT_AGGREGATE, name, source);
}

PyObject *cpy_store_define_projection(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"name", "source", NULL};
    PyObject *name, *source;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:define_projection", kwlist, &name, &source))
        return NULL;
    return define(s, CAIRN_SCRIPT_PROJECTION, name, source);
}

PyObject *cpy_store_define_upcasters(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"source", NULL};
    PyObject *source, *name, *r;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:define_upcasters", kwlist, &source))
        return NULL;
    if (!(name = PyUnicode_FromString("upcasters"))) return NULL;
    r = define(s, CAIRN_SCRIPT_UPCASTERS, name, source);
    Py_DECREF(name);
    return r;
}

static const struct {
    const char *key;
    cairn_script_kind kind;
} kinds[] = {{"aggregate", CAIRN_SCRIPT_AGGREGATE},
             {"projection", CAIRN_SCRIPT_PROJECTION},
             {"upcasters", CAIRN_SCRIPT_UPCASTERS}};

/* The names of every kind, one list each (no GIL: one core call per kind). */
static int scripts_of_kinds(cairn_store *h, cpy_names b[3]) {
    int rc = 0;
    for (int i = 0; i < 3 && rc >= 0; i++)
        rc = cairn_scripts(h, kinds[i].kind, cpy_names_add, &b[i]);
    return rc;
}

PyObject *cpy_store_scripts(cpy_store *s, PyObject *unused) {
    cpy_names b[3] = {{NULL, 0, 0, 0, 0, 0}, {NULL, 0, 0, 0, 0, 0}, {NULL, 0, 0, 0, 0, 0}};
    PyObject *out = NULL;
    cairn_store *h;
    int rc = 0, i;

    (void)unused;
    CPY_STORE_CALL(s, h, rc, scripts_of_kinds(h, b));
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) goto out;
    if (!(out = PyDict_New())) goto out;
    for (i = 0; i < 3; i++) {
        PyObject *list = cpy_names_list(&b[i]);
        if (!list || PyDict_SetItemString(out, kinds[i].key, list) < 0) {
            Py_XDECREF(list);
            Py_CLEAR(out);
            goto out;
        }
        Py_DECREF(list);
    }
out:
    for (i = 0; i < 3; i++) cpy_names_free(&b[i]);
    return out;
}
