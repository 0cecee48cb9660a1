/*
 * errors.c -- the exception classes of cairn and the one function that turns a core
 * failure (a CAIRN_E* code plus cairn_last_error()) into a Python exception.
 */
#include "binding.h"

#include <errno.h>

/* One row per class: every class but Error derives from Error.  `attrs` are class-level
 * defaults (None) so the attributes exist even on an instance raised from Python. */
static const struct {
    int index;
    const char *name;
    const char *attrs;
    const char *doc;
} exc_table[CPY_EXC_COUNT] = {
    {CPY_EXC_ERROR, "Error", NULL, "Base class of every cairn error."},
    {CPY_EXC_WRONG_VERSION, "WrongExpectedVersion", "stream expected actual",
     "An append's expected_version did not hold; nothing was written.\n\n"
     ".stream is the stream, .expected the expectation, .actual the stream's current "
     "version (-1 when it has no events)."},
    {CPY_EXC_DUPLICATE, "DuplicateEvent", "stream position",
     "An event id was written before and this append is not an exact retry of that "
     "append.\n\n.position is the position of the earlier event, where known."},
    {CPY_EXC_CONDITION, "ConditionFailed", "positions",
     "An append condition failed: events matching the query exist after the given "
     "position.\n\n.positions lists the first few conflicting positions."},
    {CPY_EXC_DELETED, "StreamDeleted", "stream", "The stream was hard-deleted."},
    {CPY_EXC_SCRIPT, "ScriptError", "script line position",
     "A Lua script failed (syntax, runtime, instruction or memory limit).\n\n"
     ".script names the script, .line is the 1-based line in its source where known, "
     ".position the event being applied, if any."},
    {CPY_EXC_REJECTED, "CommandRejected", "reason details script",
     "A command handler rejected the command; .reason and .details come from the "
     "script."},
    {CPY_EXC_ALREADY_COMPENSATED, "AlreadyCompensated", NULL,
     "The event has been compensated before."},
    {CPY_EXC_NOT_COMPENSABLE, "NotCompensable", NULL,
     "The aggregate script has no compensation handler for the event's type."},
    {CPY_EXC_CORRUPTION, "CorruptionError", "position",
     "Stored data failed a check (checksum, index, or not a cairn store).\n\n"
     ".position names the damaged record where known."},
    {CPY_EXC_CLOSED, "StoreClosed", NULL,
     "The store was closed (or was opened before fork() in a parent process)."},
};

int cpy_exceptions_init(PyObject *module, cpy_state *st) {
    for (int i = 0; i < CPY_EXC_COUNT; i++) {
        char qualname[64];
        PyObject *dict = NULL, *cls = NULL;
        int idx = exc_table[i].index;

        PyOS_snprintf(qualname, sizeof qualname, "cairn.%s", exc_table[i].name);
        dict = PyDict_New();
        if (!dict) return -1;
        if (exc_table[i].attrs) {
            /* "a b c" -> a = b = c = None on the class */
            const char *p = exc_table[i].attrs;
            while (*p) {
                const char *q = strchr(p, ' ');
                size_t n = q ? (size_t)(q - p) : strlen(p);
                PyObject *key = PyUnicode_FromStringAndSize(p, (Py_ssize_t)n);
                if (!key || PyDict_SetItem(dict, key, Py_None) < 0) {
                    Py_XDECREF(key);
                    Py_DECREF(dict);
                    return -1;
                }
                Py_DECREF(key);
                p += n;
                while (*p == ' ') p++;
            }
        }
        cls = PyErr_NewExceptionWithDoc(qualname, exc_table[i].doc,
                                        idx == CPY_EXC_ERROR ? NULL : st->exc[CPY_EXC_ERROR], dict);
        Py_DECREF(dict);
        if (!cls) return -1;
        st->exc[idx] = cls;
        if (PyModule_AddObjectRef(module, exc_table[i].name, cls) < 0) return -1;
    }
    return 0;
}

PyObject *cpy_raise_closed(cpy_state *st) {
    PyErr_SetString(st->exc[CPY_EXC_CLOSED], "the store is closed");
    return NULL;
}

int cpy_raise_missing(PyObject *key) {
    PyErr_SetObject(PyExc_KeyError, key);
    return CPY_ERAISED;
}

static int set_attr(PyObject *exc, const char *name, PyObject *value) {
    int rc;
    if (!value) return -1;
    rc = PyObject_SetAttrString(exc, name, value);
    Py_DECREF(value);
    return rc;
}

/* ConditionFailed.positions: the lowest conflicting positions, ascending (spec 5). */
static PyObject *condition_positions(const cairn_error *e) {
    size_t n = e ? e->npositions : 0;
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; l && i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(e->positions[i]);
        if (!v) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, v);
    }
    return l;
}

static PyObject *position_or_none(uint64_t pos) {
    if (pos == 0) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(pos);
}

PyObject *cpy_raise(cpy_state *st, int rc, PyObject *const *streams, size_t nstreams) {
    const cairn_error *e = cairn_last_error();
    const char *text;
    PyObject *cls, *msg, *exc = NULL, *stream = Py_None;
    int fail = 0;

    /* The thread-local error belongs to the last failing call; if it is about some other
     * code (which would be a core bug) fall back to the static text. */
    if (e && e->code == rc && e->message[0])
        text = e->message;
    else
        text = cairn_strerror(rc);
    if (e && e->code == rc && streams && e->request < nstreams) stream = streams[e->request];

    switch (rc) {
    case CAIRN_EVERSION: cls = st->exc[CPY_EXC_WRONG_VERSION]; break;
    case CAIRN_EDUPLICATE: cls = st->exc[CPY_EXC_DUPLICATE]; break;
    case CAIRN_ECORRUPT: cls = st->exc[CPY_EXC_CORRUPTION]; break;
    case CAIRN_ECLOSED: cls = st->exc[CPY_EXC_CLOSED]; break;
    case CAIRN_ECONDITION: cls = st->exc[CPY_EXC_CONDITION]; break;
    case CAIRN_EDELETED: cls = st->exc[CPY_EXC_DELETED]; break;
    case CAIRN_ESCRIPT: cls = st->exc[CPY_EXC_SCRIPT]; break;
    case CAIRN_EREJECTED: cls = st->exc[CPY_EXC_REJECTED]; break;
    case CAIRN_EALREADY: cls = st->exc[CPY_EXC_ALREADY_COMPENSATED]; break;
    case CAIRN_ENOTCOMPENSABLE: cls = st->exc[CPY_EXC_NOT_COMPENSABLE]; break;
    case CAIRN_EREADONLY: cls = PyExc_PermissionError; break;
    case CAIRN_ENOTFOUND: cls = PyExc_KeyError; break;
    case CAIRN_EINVAL:
    case CAIRN_ETOOBIG: cls = PyExc_ValueError; break;
    case CAIRN_ENOMEM: cls = PyExc_MemoryError; break; /* with the core's text: what ran out */
    case CAIRN_EIO: cls = PyExc_OSError; break;
    case CAIRN_ENOENT:
        /* FileNotFoundError(errno, text) so .errno is set, as for open() */
        exc = PyObject_CallFunction(PyExc_FileNotFoundError, "is", ENOENT, text);
        if (exc) {
            PyErr_SetObject(PyExc_FileNotFoundError, exc);
            Py_DECREF(exc);
        }
        return NULL;
    default: cls = st->exc[CPY_EXC_ERROR]; break;
    }

    msg = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    if (!msg) return NULL;
    exc = PyObject_CallOneArg(cls, msg);
    Py_DECREF(msg);
    if (!exc) return NULL;

    switch (rc) {
    case CAIRN_EVERSION:
        fail = PyObject_SetAttrString(exc, "stream", stream) < 0 ||
            set_attr(exc, "expected", PyLong_FromLongLong(e ? e->expected : 0)) < 0 ||
            set_attr(exc, "actual", PyLong_FromLongLong(e ? e->actual : -1)) < 0;
        break;
    case CAIRN_EDUPLICATE:
        fail = PyObject_SetAttrString(exc, "stream", stream) < 0 ||
            set_attr(exc, "position", position_or_none(e ? e->position : 0)) < 0;
        break;
    case CAIRN_ECORRUPT:
        fail = set_attr(exc, "position", position_or_none(e ? e->position : 0)) < 0;
        break;
    case CAIRN_ECONDITION: fail = set_attr(exc, "positions", condition_positions(e)) < 0; break;
    case CAIRN_EDELETED: fail = PyObject_SetAttrString(exc, "stream", stream) < 0; break;
    case CAIRN_ESCRIPT:
        fail = (e && e->script[0] &&
                set_attr(exc, "script",
                         PyUnicode_DecodeUTF8(e->script,
                                              (Py_ssize_t)strnlen(e->script, sizeof e->script),
                                              "replace")) < 0) ||
            (e && e->line > 0 && set_attr(exc, "line", PyLong_FromLong(e->line)) < 0) ||
            (e && e->position &&
             set_attr(exc, "position", PyLong_FromUnsignedLongLong(e->position)) < 0);
        break;
    case CAIRN_EREJECTED:
        fail = (e &&
                set_attr(exc, "reason",
                         PyUnicode_DecodeUTF8(e->reason,
                                              (Py_ssize_t)strnlen(e->reason, sizeof e->reason),
                                              "replace")) < 0) ||
            (e && e->script[0] &&
             set_attr(exc, "script",
                      PyUnicode_DecodeUTF8(e->script,
                                           (Py_ssize_t)strnlen(e->script, sizeof e->script),
                                           "replace")) < 0) ||
            (e && e->details && e->details_len &&
             set_attr(exc, "details", cpy_json_decode(st, e->details, e->details_len, 0)) < 0);
        break;
    default: break;
    }
    if (fail) {
        Py_DECREF(exc);
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}
