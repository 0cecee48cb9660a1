/*
 * projection.c -- projections from Python: the Projection type (a live view: every attribute
 * reads the store), Store.run_projections / projection / delete_projection and the
 * background runner (start_projections / stop_projections).  Core calls run without the GIL.
 */
#include "binding.h"

#include <stdlib.h>

/* ---------------------------------------------------------------------------------
 * Runners: one per Store object, stopped before its handle closes.
 * --------------------------------------------------------------------------------- */
typedef struct runner_link {
    struct runner_link *next;
    cpy_store *store; /* borrowed: the link dies before the store's handle */
    cairn_runner *runner;
} runner_link;

static runner_link *g_runners; /* guarded by the GIL */

static cairn_runner *runner_take(cpy_store *s) {
    for (runner_link **pp = &g_runners; *pp; pp = &(*pp)->next)
        if ((*pp)->store == s) {
            runner_link *l = *pp;
            cairn_runner *r = l->runner;
            *pp = l->next;
            free(l);
            return r;
        }
    return NULL;
}

static int runner_running(cpy_store *s) {
    for (runner_link *l = g_runners; l; l = l->next)
        if (l->store == s) return 1;
    return 0;
}

void cpy_projections_detach(cpy_store *s) {
    cairn_runner *r = runner_take(s);
    if (!r) return;
    CPY_UNLOCKED(cairn_projections_stop(r));
}

/* ---------------------------------------------------------------------------------
 * Projection
 * --------------------------------------------------------------------------------- */
typedef struct cpy_projection {
    PyObject_HEAD
    cpy_store *store; /* strong */
    PyObject *name;   /* str */
    const char *n;    /* name's UTF-8, owned by name */
    size_t nlen;
} cpy_projection;

static int proj_traverse(cpy_projection *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->store);
    return 0;
}

static int proj_clear(cpy_projection *self) {
    Py_CLEAR(self->store);
    Py_CLEAR(self->name);
    return 0;
}

static void proj_dealloc(cpy_projection *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    proj_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Reads the projection's record; 0, or -1 with an exception (KeyError when undefined). */
static int info_of(cpy_store *s, PyObject *name, cairn_projection_status *out) {
    const char *n;
    Py_ssize_t len;
    cairn_store *h;
    int rc;
    if (!(n = cpy_stream_arg(name, "name", &len))) return -1;
    CPY_STORE_CALL(s, h, rc, cairn_projection_info(h, n, (size_t)len, out));
    if (rc == CAIRN_ENOTFOUND) rc = cpy_raise_missing(name);
    return cpy_store_call_end(s, h, rc, NULL, 0) < 0 ? -1 : 0;
}

static PyObject *proj_get_position(cpy_projection *self, void *c) {
    cairn_projection_status info;
    (void)c;
    if (info_of(self->store, self->name, &info) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(info.position);
}

static PyObject *proj_get_status(cpy_projection *self, void *c) {
    cairn_projection_status info;
    (void)c;
    if (info_of(self->store, self->name, &info) < 0) return NULL;
    return PyUnicode_FromString(info.faulted ? "faulted" : "ok");
}

static PyObject *proj_get_error(cpy_projection *self, void *c) {
    cairn_projection_status info;
    (void)c;
    if (info_of(self->store, self->name, &info) < 0) return NULL;
    if (!info.faulted) Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(info.error, (Py_ssize_t)strlen(info.error), "replace");
}

static PyObject *proj_get_name(cpy_projection *self, void *c) {
    (void)c;
    return Py_NewRef(self->name);
}

static PyObject *proj_state(cpy_projection *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"partition", NULL};
    cpy_state *st = cpy_state_of_module(self->store->module);
    PyObject *part = Py_None, *r;
    const char *p = NULL;
    Py_ssize_t plen = 0;
    char *json = NULL;
    size_t len = 0;
    cairn_store *h;
    int rc, missing;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:state", kwlist, &part)) return NULL;
    if (part != Py_None && !(p = cpy_stream_arg(part, "partition", &plen))) return NULL;
    CPY_STORE_CALL(self->store, h, rc,
                   cairn_projection_state(h, self->n, self->nlen, p, (size_t)plen, &json, &len));
    if ((missing = rc == CAIRN_ENOTFOUND)) rc = CAIRN_OK; /* told apart below */
    if (cpy_store_call_end(self->store, h, rc, NULL, 0) < 0) return NULL;
    if (missing) {
        /* an undefined projection is a KeyError; a state not there yet is None */
        cairn_projection_status info;
        if (info_of(self->store, self->name, &info) < 0) return NULL;
        Py_RETURN_NONE;
    }
    r = cpy_json_decode(st, json, len, 0);
    free(json);
    return r;
}

static PyObject *proj_partitions(cpy_projection *self, PyObject *unused) {
    cpy_names b = {NULL, 0, 0, 0, 0, 0};
    PyObject *list = NULL, *it = NULL;
    cairn_store *h;
    int rc;
    (void)unused;
    CPY_STORE_CALL(self->store, h, rc,
                   cairn_projection_partitions(h, self->n, self->nlen, cpy_names_add, &b));
    if (rc == CAIRN_ENOTFOUND) rc = cpy_raise_missing(self->name);
    if (cpy_store_call_end(self->store, h, rc, NULL, 0) >= 0 && (list = cpy_names_list(&b)))
        it = PyObject_GetIter(list);
    Py_XDECREF(list);
    cpy_names_free(&b);
    return it;
}

static PyObject *proj_reset(cpy_projection *self, PyObject *unused) {
    cairn_store *h;
    int rc;
    (void)unused;
    CPY_STORE_CALL(self->store, h, rc, cairn_projection_reset(h, self->n, self->nlen));
    if (rc == CAIRN_ENOTFOUND) rc = cpy_raise_missing(self->name);
    if (cpy_store_call_end(self->store, h, rc, NULL, 0) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *proj_repr(cpy_projection *self) {
    return PyUnicode_FromFormat("<cairn.Projection %R>", self->name);
}

static PyGetSetDef proj_getset[] = {
    {"name", (getter)proj_get_name, NULL, "The projection's name.", NULL},
    {"position", (getter)proj_get_position, NULL, "Last position processed (int).", NULL},
    {"status", (getter)proj_get_status, NULL, "\"ok\" or \"faulted\".", NULL},
    {"error", (getter)proj_get_error, NULL,
     "None, or the fault: message, script line and event position.", NULL},
    {NULL},
};

static PyMethodDef proj_methods[] = {
    {"state", (PyCFunction)(void (*)(void))proj_state, METH_VARARGS | METH_KEYWORDS,
     "state($self, /, partition=None)\n--\n\n"
     "The state (a dict), or None before the first run (for a partition: before its first "
     "event)."},
    {"partitions", (PyCFunction)proj_partitions, METH_NOARGS,
     "partitions($self, /)\n--\n\nAn iterator of the partition keys, sorted."},
    {"reset", (PyCFunction)proj_reset, METH_NOARGS,
     "reset($self, /)\n--\n\nClears state, position and fault: the next run rebuilds from "
     "position 1.  Emitted events are not emitted again."},
    {NULL},
};

static PyType_Slot proj_slots[] = {
    {Py_tp_dealloc, proj_dealloc},
    {Py_tp_traverse, proj_traverse},
    {Py_tp_clear, proj_clear},
    {Py_tp_repr, proj_repr},
    {Py_tp_getset, proj_getset},
    {Py_tp_methods, proj_methods},
    {Py_tp_doc, (void *)"A live view of a projection: every attribute reads the store."},
    {0, NULL},
};

static PyType_Spec proj_spec = {
    .name = "cairn.Projection",
    .basicsize = sizeof(cpy_projection),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = proj_slots,
};

int cpy_projection_type_init(PyObject *module, cpy_state *st) {
    st->Proj_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &proj_spec, NULL);
    if (!st->Proj_Type || PyModule_AddType(module, st->Proj_Type) < 0) return -1;
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Store methods
 * --------------------------------------------------------------------------------- */
PyObject *cpy_store_projection(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"name", NULL};
    PyTypeObject *tp = cpy_state_of_module(s->module)->Proj_Type;
    cairn_projection_status info;
    PyObject *name;
    cpy_projection *p;
    Py_ssize_t len;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:projection", kwlist, &name)) return NULL;
    if (info_of(s, name, &info) < 0) return NULL;
    if (!(p = (cpy_projection *)tp->tp_alloc(tp, 0))) return NULL;
    p->store = (cpy_store *)Py_NewRef((PyObject *)s);
    p->name = Py_NewRef(name);
    p->n = PyUnicode_AsUTF8AndSize(name, &len); /* checked by info_of: cached, no failure */
    p->nlen = (size_t)len;
    return (PyObject *)p;
}

PyObject *cpy_store_run_projections(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"name", NULL};
    PyObject *name = Py_None;
    const char *n = NULL;
    Py_ssize_t nlen = 0;
    uint64_t processed = 0;
    cairn_store *h;
    int rc;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:run_projections", kwlist, &name))
        return NULL;
    if (name != Py_None && !(n = cpy_stream_arg(name, "name", &nlen))) return NULL;
    CPY_STORE_CALL(s, h, rc, cairn_run_projections(h, n, (size_t)nlen, &processed));
    if (rc == CAIRN_ENOTFOUND) rc = cpy_raise_missing(name);
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(processed);
}

PyObject *cpy_store_delete_projection(cpy_store *s, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"name", NULL};
    PyObject *name;
    const char *n;
    Py_ssize_t nlen;
    cairn_store *h;
    int rc;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:delete_projection", kwlist, &name))
        return NULL;
    if (!(n = cpy_stream_arg(name, "name", &nlen))) return NULL;
    CPY_STORE_CALL(s, h, rc, cairn_delete_projection(h, n, (size_t)nlen));
    if (rc == CAIRN_ENOTFOUND) rc = cpy_raise_missing(name);
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) return NULL;
    Py_RETURN_NONE;
}

/* The one store call that keeps the GIL: cairn_projections_start only starts a thread (no
 * LMDB, no Lua), and with the GIL held the check for a runner and the start are one step
 * for other threads starting one. */
PyObject *cpy_store_start_projections(cpy_store *s, PyObject *unused) {
    cairn_runner *r = NULL;
    runner_link *l;
    cairn_store *h;
    int rc = CAIRN_OK;
    (void)unused;
    if (!(h = cpy_store_enter(s))) return NULL;
    if (!runner_running(s)) { /* else already running */
        if (!(l = malloc(sizeof *l))) {
            PyErr_NoMemory();
            rc = CPY_ERAISED;
        } else if ((rc = cairn_projections_start(h, &r)) < 0) {
            free(l);
        } else {
            l->store = s, l->runner = r, l->next = g_runners;
            g_runners = l;
        }
    }
    if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) return NULL;
    Py_RETURN_NONE;
}

PyObject *cpy_store_stop_projections(cpy_store *s, PyObject *unused) {
    (void)unused;
    cpy_projections_detach(s);
    Py_RETURN_NONE;
}
