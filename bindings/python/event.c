/*
 * event.c -- the value types: Event (an event to write), RecordedEvent (an event read
 * back), AppendResult and VerifyReport, plus the uuid/datetime conversions they need.
 * RecordedEvent is built per event on every read, so it is cheap to make: it copies the
 * raw JSON bytes and decodes data, metadata, id and timestamp only when first asked.
 */
#include "binding.h"

#include "base.h" /* the event rules shared with append and the scripts (check.c) */

#include <datetime.h>
#include <structmember.h>

cpy_state *cpy_state_of_type(PyTypeObject *tp) {
    PyObject *m = PyType_GetModuleByDef(tp, &cpy_module_def);
    return m ? cpy_state_of_module(m) : NULL;
}

/* ---------------------------------------------------------------------------------
 * uuid.UUID from 16 bytes.  UUID(bytes=...) runs Python code (~1 us); building the
 * instance directly and setting its two slots is what UUID.__init__ ends up doing.
 * --------------------------------------------------------------------------------- */
static PyObject *uuid_from_bytes(cpy_state *st, const uint8_t b[16]) {
    PyTypeObject *tp = (PyTypeObject *)st->uuid_type;
    PyObject *n, *u;

    if (tp->tp_new == PyBaseObject_Type.tp_new) {
        n = _PyLong_FromByteArray(b, 16, 0, 0);
        if (!n) return NULL;
        u = tp->tp_new(tp, st->empty_tuple, NULL);
        if (!u || PyObject_GenericSetAttr(u, st->str_int, n) < 0 ||
            PyObject_GenericSetAttr(u, st->str_is_safe, st->uuid_unknown) < 0) {
            Py_XDECREF(u);
            Py_DECREF(n);
            return NULL;
        }
        Py_DECREF(n);
        return u;
    } else {
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)b, 16), *kw;
        if (!bytes) return NULL;
        kw = Py_BuildValue("{sN}", "bytes", bytes);
        if (!kw) return NULL;
        u = PyObject_Call(st->uuid_type, st->empty_tuple, kw);
        Py_DECREF(kw);
        return u;
    }
}

/* ---------------------------------------------------------------------------------
 * Timestamps: ns since the epoch -> aware datetime (UTC), truncated to microseconds.
 * --------------------------------------------------------------------------------- */
static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* Howard Hinnant's days_from_civil inverse. */
static void civil_from_days(int64_t z, int *y, int *m, int *d) {
    int64_t era, yoe, doy, mp;
    unsigned doe;
    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static PyObject *datetime_from_ns(int64_t ns) {
    int64_t us = floor_div(ns, 1000);
    int64_t days = floor_div(us, 86400000000LL);
    int64_t rem = us - days * 86400000000LL;
    int y, mo, d;

    civil_from_days(days, &y, &mo, &d);
    if (y < 1 || y > 9999) {
        PyErr_Format(PyExc_OverflowError, "timestamp %lld ns is out of datetime's range",
                     (long long)ns);
        return NULL;
    }
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        y, mo, d, (int)(rem / 3600000000LL), (int)(rem / 60000000LL % 60),
        (int)(rem / 1000000LL % 60), (int)(rem % 1000000LL), PyDateTime_TimeZone_UTC,
        PyDateTimeAPI->DateTimeType);
}

/* ---------------------------------------------------------------------------------
 * A small cache of str objects for names that repeat along a read.
 * --------------------------------------------------------------------------------- */
static PyObject *name_get(cpy_namecache *c, const void *p, size_t len) {
    PyObject *s;
    unsigned i;

    for (i = 0; i < CPY_NAMECACHE; i++) {
        if (c->e[i].s && (size_t)c->e[i].n == len && memcmp(c->e[i].u, p, len) == 0)
            return Py_NewRef(c->e[i].s);
    }
    s = PyUnicode_DecodeUTF8(p, (Py_ssize_t)len, "replace");
    if (!s) return NULL;
    i = c->next++ % CPY_NAMECACHE;
    {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(s, &n);
        if (!u) { /* cannot happen for a decoded str; do not cache */
            PyErr_Clear();
            return s;
        }
        Py_XDECREF(c->e[i].s);
        c->e[i].s = Py_NewRef(s);
        c->e[i].u = u;
        c->e[i].n = n;
    }
    return s;
}

void cpy_namecache_clear(cpy_namecache *c) {
    for (unsigned i = 0; i < CPY_NAMECACHE; i++) Py_CLEAR(c->e[i].s);
}

/* ---------------------------------------------------------------------------------
 * Event
 * --------------------------------------------------------------------------------- */

/* An exact str of 1..max UTF-8 bytes without NUL (base.h: cairn__check_text, the rule append
 * and the scripts' events obey, in its words), or NULL with an exception naming `what`. */
static PyObject *checked_name(PyObject *o, const char *what, Py_ssize_t max) {
    Py_ssize_t n;
    const char *u;
    PyObject *s;

    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what, Py_TYPE(o)->tp_name);
        return NULL;
    }
    s = PyUnicode_CheckExact(o) ? Py_NewRef(o) : PyUnicode_FromObject(o);
    if (!s) return NULL;
    u = PyUnicode_AsUTF8AndSize(s, &n);
    if (!u) {
        Py_DECREF(s);
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s is not valid UTF-8 (it contains a lone surrogate)",
                         what);
        }
        return NULL;
    }
    if (cairn__check_text(u, (size_t)n, (size_t)max, what)) {
        PyErr_SetString(PyExc_ValueError, cairn_errmsg());
        Py_DECREF(s);
        return NULL;
    }
    return s;
}

/* A data subject (spec 6): None, or a str as checked_name checks it. */
static PyObject *checked_subject(PyObject *o) {
    return o == Py_None ? Py_NewRef(o) : checked_name(o, "subject", CAIRN__SUBJECT_MAX);
}

static PyObject *checked_tags(PyObject *tags) {
    PyObject *t, *out;
    Py_ssize_t i, n;

    if (PyUnicode_Check(tags) || PyBytes_Check(tags) || PyByteArray_Check(tags)) {
        PyErr_Format(PyExc_TypeError, "tags must be an iterable of str, not a single %.100s",
                     Py_TYPE(tags)->tp_name);
        return NULL;
    }
    t = PySequence_Tuple(tags);
    if (!t) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "tags must be an iterable of str, not %.100s",
                         Py_TYPE(tags)->tp_name);
        }
        return NULL;
    }
    n = PyTuple_GET_SIZE(t);
    if (cairn__check_ntags((size_t)n)) {
        PyErr_SetString(PyExc_ValueError, cairn_errmsg());
        Py_DECREF(t);
        return NULL;
    }
    out = PyTuple_New(n);
    if (!out) {
        Py_DECREF(t);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *s = checked_name(PyTuple_GET_ITEM(t, i), "tags: each tag", CAIRN_MAX_TAG);
        if (!s) {
            Py_DECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, s);
    }
    Py_DECREF(t);
    return out;
}

/* Event.__new__ makes a complete event with the defaults -- the class name as its type, a
 * fresh UUIDv7 -- and ignores its arguments: Event.__init__ reads them, and a subclass's
 * __init__ may take others.  So an event whose Event.__init__ never ran (a subclass's
 * __init__ that does not call it, unpickling before __setstate__) still appends. */
static PyObject *event_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    cpy_event *self;
    PyObject *name;

    (void)args, (void)kwargs;
    self = (cpy_event *)tp->tp_alloc(tp, 0);
    if (!self) return NULL;
    if (!(name = PyType_GetName(tp))) goto fail;
    self->type = checked_name(name, "type (by default the class name)", CAIRN_MAX_TYPE);
    Py_DECREF(name);
    if (!self->type) goto fail;
    self->data = Py_NewRef(Py_None);
    self->metadata = Py_NewRef(Py_None);
    self->subject = Py_NewRef(Py_None);
    if (!(self->tags = PyTuple_New(0))) goto fail;
    self->schema = 1;
    cairn_uuid7(self->id);
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* Sets the fields from Event's arguments: all of them or, when one is bad, none.  Once per
 * event (Event.__init__ or __setstate__): an Event is immutable, its id fixed. */
static int event_fill(cpy_event *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"type", "data", "metadata", "id", "schema", "tags", "subject", NULL};
    PyObject *type = NULL, *data = Py_None, *metadata = Py_None, *id = Py_None, *schema = NULL;
    PyObject *tags = NULL, *subject = Py_None, *new_type = NULL, *new_tags = NULL, *new_id = NULL;
    PyObject *new_subject;
    long long sv = 1;
    uint8_t idb[16];

    if (self->ready) {
        PyErr_Format(PyExc_TypeError, "%.100s is immutable: its __init__ ran already",
                     Py_TYPE(self)->tp_name);
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO$OOOOO:Event", kwlist, &type, &data,
                                     &metadata, &id, &schema, &tags, &subject))
        return -1;
    if (!(new_subject = checked_subject(subject))) return -1;
    if (type) {
        if (!(new_type = checked_name(type, "type", CAIRN_MAX_TYPE))) goto fail;
    } else {
        /* a subclass's type defaults to its class name; Event's own is required */
        cpy_state *st = cpy_state_of_type(Py_TYPE(self));
        if (!st) goto fail;
        if (Py_IS_TYPE(self, st->Event_Type)) {
            PyErr_SetString(PyExc_TypeError, "Event() missing required argument 'type' (pos 1)");
            goto fail;
        }
    }
    if (metadata != Py_None && !PyDict_Check(metadata)) {
        PyErr_Format(PyExc_TypeError, "metadata must be a dict or None, not %.100s",
                     Py_TYPE(metadata)->tp_name);
        goto fail;
    }
    if (schema) {
        int overflow;
        if (!PyLong_Check(schema) || PyBool_Check(schema)) {
            PyErr_Format(PyExc_TypeError, "schema must be an int, not %.100s",
                         Py_TYPE(schema)->tp_name);
            goto fail;
        }
        sv = PyLong_AsLongLongAndOverflow(schema, &overflow);
        if (sv == -1 && PyErr_Occurred()) goto fail;
        if (overflow) {
            PyErr_Format(PyExc_ValueError, CAIRN__SCHEMA_RULE ", got %R", schema);
            goto fail;
        }
        if (cairn__check_schema(sv)) {
            PyErr_SetString(PyExc_ValueError, cairn_errmsg());
            goto fail;
        }
    }
    if (tags && !(new_tags = checked_tags(tags))) goto fail;
    if (id != Py_None) {
        cpy_state *st = cpy_state_of_type(Py_TYPE(self));
        if (!st || cpy_uuid_arg(st, id, "id", idb, &new_id) < 0) goto fail;
    }
    /* all checked: set them (id None keeps the one __new__ made) */
    if (new_type) Py_SETREF(self->type, new_type);
    if (new_tags) Py_SETREF(self->tags, new_tags);
    if (new_id) {
        Py_XSETREF(self->id_obj, new_id);
        memcpy(self->id, idb, 16);
    }
    Py_SETREF(self->data, Py_NewRef(data));
    Py_SETREF(self->metadata, Py_NewRef(metadata));
    Py_SETREF(self->subject, new_subject);
    self->schema = (uint32_t)sv;
    self->ready = 1;
    return 0;
fail:
    Py_XDECREF(new_type);
    Py_XDECREF(new_tags);
    Py_DECREF(new_subject);
    return -1;
}

static int event_init(cpy_event *self, PyObject *args, PyObject *kwargs) {
    return event_fill(self, args, kwargs);
}

static int event_traverse(cpy_event *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->type);
    Py_VISIT(self->data);
    Py_VISIT(self->metadata);
    Py_VISIT(self->tags);
    Py_VISIT(self->id_obj);
    Py_VISIT(self->subject);
    return 0;
}

/* Breaks cycles through data and metadata and leaves a valid event (None for both): type
 * and tags, an exact str and a tuple of them, cannot be part of a cycle. */
static int event_clear(cpy_event *self) {
    Py_XSETREF(self->data, Py_NewRef(Py_None));
    Py_XSETREF(self->metadata, Py_NewRef(Py_None));
    Py_CLEAR(self->id_obj);
    return 0;
}

static void event_dealloc(cpy_event *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->type);
    Py_CLEAR(self->data);
    Py_CLEAR(self->metadata);
    Py_CLEAR(self->tags);
    Py_CLEAR(self->id_obj);
    Py_CLEAR(self->subject);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *event_get_id(cpy_event *self, void *closure) {
    (void)closure;
    if (!self->id_obj) {
        cpy_state *st = cpy_state_of_type(Py_TYPE(self));
        if (!st || !(self->id_obj = uuid_from_bytes(st, self->id))) return NULL;
    }
    return Py_NewRef(self->id_obj);
}

static PyObject *event_repr(cpy_event *self) {
    PyObject *id = event_get_id(self, NULL), *name, *r = NULL;
    if (!id) return NULL;
    if ((name = PyType_GetName(Py_TYPE(self)))) {
        r = PyUnicode_FromFormat("%U(%R, %R, id=%R)", name, self->type, self->data, id);
        Py_DECREF(name);
    }
    Py_DECREF(id);
    return r;
}

/* Value equality: the same class, id, type, data, metadata, schema and tags (data and
 * metadata compare as Python values).  The hash is the id's, which equal events share. */
static PyObject *event_richcompare(PyObject *a, PyObject *b, int op) {
    cpy_event *x = (cpy_event *)a, *y = (cpy_event *)b;
    int eq;

    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b)) Py_RETURN_NOTIMPLEMENTED;
    eq = x == y || (x->schema == y->schema && memcmp(x->id, y->id, 16) == 0);
    if (eq && x != y) {
        PyObject *const fx[] = {x->type, x->tags, x->subject, x->data, x->metadata};
        PyObject *const fy[] = {y->type, y->tags, y->subject, y->data, y->metadata};
        for (int i = 0; eq > 0 && i < 5; i++) eq = PyObject_RichCompareBool(fx[i], fy[i], Py_EQ);
        if (eq < 0) return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t id_hash(const uint8_t id[16]) {
    uint64_t h, l;
    memcpy(&h, id, 8);
    memcpy(&l, id + 8, 8);
    return (Py_hash_t)((h ^ l * 0x9E3779B97F4A7C15ull) >> 1); /* never -1 */
}

static Py_hash_t event_hash(cpy_event *self) { return id_hash(self->id); }

/* Pickling and copying: copyreg.__newobj__(cls), then __setstate__((fields, state)) -- the
 * fields as Event's keywords, and what object.__getstate__ gives for a subclass's own
 * attributes (None for Event).  A subclass's __init__ does not run again, as for any
 * class pickle restores. */
static PyObject *event_reduce(cpy_event *self, PyObject *unused) {
    PyObject *newobj, *id, *fields, *inst;
    cpy_state *st = cpy_state_of_type(Py_TYPE(self));

    (void)unused;
    if (!st || !(id = event_get_id(self, NULL))) return NULL;
    fields = Py_BuildValue("{sOsOsOsNsIsOsO}", "type", self->type, "data", self->data, "metadata",
                           self->metadata, "id", id, "schema", (unsigned)self->schema, "tags",
                           self->tags, "subject", self->subject);
    if (!fields) return NULL;
    if (Py_IS_TYPE(self, st->Event_Type))
        inst = Py_NewRef(Py_None);
    else if (!(inst = PyObject_CallMethod((PyObject *)self, "__getstate__", NULL))) {
        Py_DECREF(fields);
        return NULL;
    }
    if ((newobj = PyImport_ImportModule("copyreg")))
        Py_SETREF(newobj, PyObject_GetAttrString(newobj, "__newobj__"));
    if (!newobj) {
        Py_DECREF(fields);
        Py_DECREF(inst);
        return NULL;
    }
    return Py_BuildValue("N(O)(NN)", newobj, (PyObject *)Py_TYPE(self), fields, inst);
}

/* Object state as pickle's BUILD applies it: None, a dict for __dict__, or (dict or None,
 * dict of slots).  -1 with TypeError when it has another shape (checked before anything
 * is set); 0 when `apply` is 0 and the shape is right. */
static int event_inst_state(PyObject *self, PyObject *inst, int apply) {
    PyObject *d = inst, *slots = Py_None, *k, *v;
    Py_ssize_t pos = 0;

    if (PyTuple_Check(inst) && PyTuple_GET_SIZE(inst) == 2)
        d = PyTuple_GET_ITEM(inst, 0), slots = PyTuple_GET_ITEM(inst, 1);
    if ((d != Py_None && !PyDict_Check(d)) || (slots != Py_None && !PyDict_Check(slots))) {
        PyErr_Format(PyExc_TypeError,
                     "Event.__setstate__: the instance state must be None, a dict or (dict, "
                     "dict of slots), not %.100s",
                     Py_TYPE(inst)->tp_name);
        return -1;
    }
    if (!apply) return 0;
    if (d != Py_None && PyDict_GET_SIZE(d)) {
        PyObject *dict = PyObject_GetAttrString(self, "__dict__");
        int rc;
        if (!dict) return -1;
        rc = PyDict_Check(dict) ? PyDict_Update(dict, d) : -1;
        if (rc < 0 && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "__dict__ is no dict");
        Py_DECREF(dict);
        if (rc < 0) return -1;
    }
    while (slots != Py_None && PyDict_Next(slots, &pos, &k, &v))
        if (PyObject_SetAttr(self, k, v) < 0) return -1;
    return 0;
}

static PyObject *event_setstate(cpy_event *self, PyObject *state) {
    PyObject *fields, *inst;
    cpy_state *st = cpy_state_of_type(Py_TYPE(self));

    if (!st) return NULL;
    if (!PyTuple_Check(state) || PyTuple_GET_SIZE(state) != 2 ||
        !PyDict_Check(PyTuple_GET_ITEM(state, 0))) {
        PyErr_Format(PyExc_TypeError,
                     "Event.__setstate__: the state must be a (dict of fields, instance state) "
                     "tuple as __reduce__ makes it, not %.100s",
                     Py_TYPE(state)->tp_name);
        return NULL;
    }
    fields = PyTuple_GET_ITEM(state, 0), inst = PyTuple_GET_ITEM(state, 1);
    if (event_inst_state((PyObject *)self, inst, 0) < 0 ||
        event_fill(self, st->empty_tuple, fields) < 0 ||
        event_inst_state((PyObject *)self, inst, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* A subclass may add attributes and methods, not redefine the fields: the store writes what
 * the C fields hold, so a `type = "x"` class attribute or a `data` property would show one
 * thing and store another. */
static PyObject *event_init_subclass(PyObject *cls, PyObject *args, PyObject *kwargs) {
    static const char *const fields[] = {"type",   "data", "metadata", "id",
                                         "schema", "tags", "subject",  NULL};
    PyTypeObject *tp = (PyTypeObject *)cls;
    cpy_state *st = cpy_state_of_type(tp);
    PyObject *mro, *sup, *r;

    if (!st || !(mro = PyObject_GetAttrString(cls, "__mro__"))) return NULL;
    for (Py_ssize_t i = 0; PyTuple_Check(mro) && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *k = PyTuple_GET_ITEM(mro, i);
        if (k == (PyObject *)st->Event_Type) break;
        if (!PyType_Check(k)) continue;
        for (int f = 0; fields[f]; f++) {
            PyObject *v = PyDict_GetItemString(((PyTypeObject *)k)->tp_dict, fields[f]);
            if (v) {
                PyErr_Format(PyExc_TypeError,
                             "%.100s.%s: a subclass of cairn.Event must not redefine the field "
                             "'%s' (the store writes the event's own fields); pass %s=... to "
                             "Event.__init__ instead",
                             ((PyTypeObject *)k)->tp_name, fields[f], fields[f], fields[f]);
                Py_DECREF(mro);
                return NULL;
            }
        }
    }
    Py_DECREF(mro);
    sup = PyObject_CallFunctionObjArgs((PyObject *)&PySuper_Type, (PyObject *)st->Event_Type, cls,
                                       NULL);
    if (!sup) return NULL;
    r = PyObject_GetAttrString(sup, "__init_subclass__");
    Py_DECREF(sup);
    if (!r) return NULL;
    Py_SETREF(r, PyObject_Call(r, args, kwargs));
    return r;
}

static PyObject *event_from_recorded(PyObject *cls, PyObject *args, PyObject *kwargs);

static PyMethodDef event_methods[] = {
    {"__reduce__", (PyCFunction)event_reduce, METH_NOARGS, NULL},
    {"__setstate__", (PyCFunction)event_setstate, METH_O, NULL},
    {"__init_subclass__", (PyCFunction)(void (*)(void))event_init_subclass,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS, NULL},
    {"from_recorded", (PyCFunction)(void (*)(void))event_from_recorded,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "from_recorded(recorded, /, **changes)\n--\n\n"
     "The event a RecordedEvent was: its type, data, metadata, id, schema and tags, with\n"
     "any of them replaced by `changes` (Event's keywords; id=None gives a new id).\n"
     "Calls cls(**fields), so on a subclass its __init__ must take Event's keywords."},
    {NULL},
};

static PyMemberDef event_members[] = {
    {"type", T_OBJECT, offsetof(cpy_event, type), READONLY, "The event type (str)."},
    {"data", T_OBJECT, offsetof(cpy_event, data), READONLY,
     "The payload: a JSON-compatible value, bytes, or None."},
    {"metadata", T_OBJECT, offsetof(cpy_event, metadata), READONLY, "A dict or None."},
    {"schema", T_UINT, offsetof(cpy_event, schema), READONLY, "The schema version (int >= 1)."},
    {"tags", T_OBJECT, offsetof(cpy_event, tags), READONLY, "Tags (tuple of str)."},
    {"subject", T_OBJECT, offsetof(cpy_event, subject), READONLY,
     "The data subject whose key encrypts `data` (str), or None."},
    {NULL},
};

static PyGetSetDef event_getset[] = {
    {"id", (getter)event_get_id, NULL, "The event id (uuid.UUID), fixed at construction.", NULL},
    {NULL},
};

PyDoc_STRVAR(event_doc,
             "Event(type, data=None, *, metadata=None, id=None, schema=1, tags=(), subject=None)\n"
             "--\n\n"
             "An event to append.  It gets its id when constructed (a UUIDv7 unless `id` is\n"
             "given), so appending the same Event objects again is an idempotent retry.\n"
             "`data` is a JSON-compatible value or bytes; it is encoded when appended.\n"
             "`subject` (a str, or None) names the data subject whose key encrypts `data`:\n"
             "store.forget(subject) makes it unreadable for good (crypto-shredding).\n"
             "Events compare equal by class, id and content; they pickle and copy.  A subclass's\n"
             "type defaults to its class name.");

static PyType_Slot event_slots[] = {
    {Py_tp_new, event_new},
    {Py_tp_init, event_init},
    {Py_tp_dealloc, event_dealloc},
    {Py_tp_traverse, event_traverse},
    {Py_tp_clear, event_clear},
    {Py_tp_repr, event_repr},
    {Py_tp_richcompare, event_richcompare},
    {Py_tp_hash, event_hash},
    {Py_tp_methods, event_methods},
    {Py_tp_members, event_members},
    {Py_tp_getset, event_getset},
    {Py_tp_doc, (void *)event_doc},
    {0, NULL},
};

/* A base type: a subclass's instances are heap-type objects of this layout plus a __dict__,
 * which subtype_dealloc/traverse/clear handle before calling ours (ours visit and release
 * Py_TYPE(self), the subclass, as a heap base type must). */
static PyType_Spec event_spec = {
    .name = "cairn.Event",
    .basicsize = sizeof(cpy_event),
    .flags =
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE,
    .slots = event_slots,
};

/* ---------------------------------------------------------------------------------
 * RecordedEvent: one allocation; data then metadata bytes live inline after the fields.
 * --------------------------------------------------------------------------------- */
typedef struct cpy_recorded {
    PyObject_VAR_HEAD
    PyObject *stream;
    PyObject *type;
    PyObject *tags;
    PyObject *data_obj; /* lazily decoded; NULL until first access */
    PyObject *meta_obj;
    PyObject *id_obj;
    PyObject *ts_obj;
    PyObject *subject; /* str or None */
    uint64_t position;
    int64_t version;
    int64_t timestamp;
    uint32_t schema;
    uint32_t flags;
    int forgotten;
    size_t data_len;
    size_t meta_len;
    uint8_t id[16];
    char raw[1];
} cpy_recorded;

PyObject *cpy_recorded_new(cpy_state *st, const cairn_event *ev, cpy_namecache *names) {
    PyTypeObject *tp = st->Recorded_Type;
    size_t n = ev->data.len + ev->metadata.len;
    cpy_recorded *self;

    if (n > (size_t)PY_SSIZE_T_MAX - 1) return PyErr_NoMemory();
    self = (cpy_recorded *)tp->tp_alloc(tp, (Py_ssize_t)n);
    if (!self) return NULL;
    self->position = ev->position;
    self->version = ev->version;
    self->timestamp = ev->timestamp;
    self->schema = ev->schema;
    self->flags = ev->flags;
    self->forgotten = ev->forgotten != 0;
    memcpy(self->id, ev->id, 16);
    self->data_len = ev->data.len;
    self->meta_len = ev->metadata.len;
    if (ev->data.len) memcpy(self->raw, ev->data.ptr, ev->data.len);
    if (ev->metadata.len) memcpy(self->raw + ev->data.len, ev->metadata.ptr, ev->metadata.len);

    if (names) {
        self->stream = name_get(names, ev->stream.ptr, ev->stream.len);
        self->type = self->stream ? name_get(names, ev->type.ptr, ev->type.len) : NULL;
    } else {
        self->stream = PyUnicode_DecodeUTF8(ev->stream.ptr, (Py_ssize_t)ev->stream.len, "replace");
        self->type = self->stream
            ? PyUnicode_DecodeUTF8(ev->type.ptr, (Py_ssize_t)ev->type.len, "replace")
            : NULL;
    }
    if (!self->type) goto fail;
    self->subject = ev->subject.len
        ? PyUnicode_DecodeUTF8(ev->subject.ptr, (Py_ssize_t)ev->subject.len, "replace")
        : Py_NewRef(Py_None);
    if (!self->subject) goto fail;
    if (ev->ntags == 0) {
        self->tags = Py_NewRef(st->empty_tuple);
    } else {
        size_t cursor = 0;
        Py_ssize_t i = 0;
        cairn_slice tag;
        self->tags = PyTuple_New((Py_ssize_t)ev->ntags);
        if (!self->tags) goto fail;
        while (i < (Py_ssize_t)ev->ntags && cairn_event_tag(ev, &cursor, &tag)) {
            PyObject *s = PyUnicode_DecodeUTF8(tag.ptr, (Py_ssize_t)tag.len, "replace");
            if (!s) goto fail;
            PyTuple_SET_ITEM(self->tags, i++, s);
        }
        if (i != (Py_ssize_t)ev->ntags && _PyTuple_Resize(&self->tags, i) < 0) goto fail;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int recorded_traverse(cpy_recorded *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->stream);
    Py_VISIT(self->type);
    Py_VISIT(self->tags);
    Py_VISIT(self->data_obj);
    Py_VISIT(self->meta_obj);
    Py_VISIT(self->id_obj);
    Py_VISIT(self->ts_obj);
    Py_VISIT(self->subject);
    return 0;
}

/* Breaks cycles through the decoded values; stream, type and tags (exact str and a tuple
 * of them) cannot be part of one and stay, so the record stays valid. */
static int recorded_clear(cpy_recorded *self) {
    Py_CLEAR(self->data_obj);
    Py_CLEAR(self->meta_obj);
    Py_CLEAR(self->id_obj);
    Py_CLEAR(self->ts_obj);
    return 0;
}

static void recorded_dealloc(cpy_recorded *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->stream);
    Py_CLEAR(self->type);
    Py_CLEAR(self->tags);
    Py_CLEAR(self->subject);
    recorded_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *recorded_get_data(cpy_recorded *self, void *closure) {
    (void)closure;
    if (!self->data_obj) {
        if (self->forgotten)
            self->data_obj = Py_NewRef(Py_None);
        else if (self->flags & CAIRN_EVENT_BYTES)
            self->data_obj = PyBytes_FromStringAndSize(self->raw, (Py_ssize_t)self->data_len);
        else if (self->data_len == 0)
            self->data_obj = Py_NewRef(Py_None);
        else
            self->data_obj = cpy_json_decode(cpy_state_of_type(Py_TYPE(self)), self->raw,
                                             self->data_len, self->position);
        if (!self->data_obj) return NULL;
    }
    return Py_NewRef(self->data_obj);
}

static PyObject *recorded_get_metadata(cpy_recorded *self, void *closure) {
    (void)closure;
    if (!self->meta_obj) {
        if (self->meta_len == 0)
            self->meta_obj = Py_NewRef(Py_None);
        else
            self->meta_obj =
                cpy_json_decode(cpy_state_of_type(Py_TYPE(self)), self->raw + self->data_len,
                                self->meta_len, self->position);
        if (!self->meta_obj) return NULL;
    }
    return Py_NewRef(self->meta_obj);
}

static PyObject *recorded_get_id(cpy_recorded *self, void *closure) {
    (void)closure;
    if (!self->id_obj) {
        cpy_state *st = cpy_state_of_type(Py_TYPE(self));
        if (!st || !(self->id_obj = uuid_from_bytes(st, self->id))) return NULL;
    }
    return Py_NewRef(self->id_obj);
}

static PyObject *recorded_get_timestamp(cpy_recorded *self, void *closure) {
    (void)closure;
    if (!self->ts_obj && !(self->ts_obj = datetime_from_ns(self->timestamp))) return NULL;
    return Py_NewRef(self->ts_obj);
}

static PyObject *recorded_get_forgotten(cpy_recorded *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->forgotten);
}

static PyObject *recorded_get_subject(cpy_recorded *self, void *closure) {
    (void)closure;
    return Py_NewRef(self->subject ? self->subject : Py_None);
}

static PyObject *recorded_repr(cpy_recorded *self) {
    return PyUnicode_FromFormat("RecordedEvent(stream=%R, version=%lld, position=%llu, type=%R)",
                                self->stream, (long long)self->version,
                                (unsigned long long)self->position, self->type);
}

/* Data (meta 0) or metadata (meta 1) of two records equal: the stored bytes when both are
 * still undecoded and the same, else the decoded values.  1, 0 or -1 with an exception. */
static int recorded_payload_eq(cpy_recorded *x, cpy_recorded *y, int meta) {
    PyObject *a, *b;
    int eq;

    if (!(meta ? x->meta_obj : x->data_obj) && !(meta ? y->meta_obj : y->data_obj) &&
        (meta || ((x->flags ^ y->flags) & CAIRN_EVENT_BYTES) == 0)) {
        size_t xl = meta ? x->meta_len : x->data_len, yl = meta ? y->meta_len : y->data_len;
        if (xl == yl &&
            memcmp(x->raw + (meta ? x->data_len : 0), y->raw + (meta ? y->data_len : 0), xl) == 0)
            return 1;
    }
    a = meta ? recorded_get_metadata(x, NULL) : recorded_get_data(x, NULL);
    if (!a) return -1;
    b = meta ? recorded_get_metadata(y, NULL) : recorded_get_data(y, NULL);
    if (!b) {
        Py_DECREF(a);
        return -1;
    }
    eq = PyObject_RichCompareBool(a, b, Py_EQ);
    Py_DECREF(a);
    Py_DECREF(b);
    return eq;
}

/* Value equality: every field the same (stream, version, position, id, timestamp, type,
 * schema, tags, data, metadata), so one stored event read raw and upcast is two values.  The
 * hash is of id and position, which equal records share. */
static PyObject *recorded_richcompare(PyObject *a, PyObject *b, int op) {
    cpy_recorded *x = (cpy_recorded *)a, *y = (cpy_recorded *)b;
    int eq;

    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b)) Py_RETURN_NOTIMPLEMENTED;
    eq = x == y ||
        (x->position == y->position && x->version == y->version && x->timestamp == y->timestamp &&
         x->schema == y->schema && memcmp(x->id, y->id, 16) == 0);
    if (eq && x != y) {
        PyObject *const fx[] = {x->stream, x->type, x->tags, x->subject ? x->subject : Py_None};
        PyObject *const fy[] = {y->stream, y->type, y->tags, y->subject ? y->subject : Py_None};
        for (int i = 0; eq > 0 && i < 4; i++) eq = PyObject_RichCompareBool(fx[i], fy[i], Py_EQ);
        if (eq > 0) eq = x->forgotten == y->forgotten;
        if (eq > 0) eq = recorded_payload_eq(x, y, 0);
        if (eq > 0) eq = recorded_payload_eq(x, y, 1);
        if (eq < 0) return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t recorded_hash(cpy_recorded *self) {
    uint64_t h;
    memcpy(&h, self->id + 8, 8);
    h ^= self->position * 0x9E3779B97F4A7C15ull;
    h >>= 1; /* never -1 */
    return (Py_hash_t)h;
}

/* Pickling and copying: cairn._cairn._restore_recorded_event(fields), the fields a dict of
 * Python values (data decoded; bytes payloads as bytes), so a pickle does not depend on the
 * record format. */
static PyObject *recorded_reduce(cpy_recorded *self, PyObject *unused) {
    PyObject *m = PyType_GetModuleByDef(Py_TYPE(self), &cpy_module_def), *fn, *data, *meta, *id;

    (void)unused;
    if (!m || !(fn = PyObject_GetAttrString(m, "_restore_recorded_event"))) return NULL;
    data = recorded_get_data(self, NULL);
    meta = data ? recorded_get_metadata(self, NULL) : NULL;
    id = meta ? recorded_get_id(self, NULL) : NULL;
    if (!id) {
        Py_XDECREF(data);
        Py_XDECREF(meta);
        Py_DECREF(fn);
        return NULL;
    }
    return Py_BuildValue(
        "N({sOsLsKsOsNsNsNsIsOsLsOsO})", fn, "stream", self->stream, "version",
        (long long)self->version, "position", (unsigned long long)self->position, "type",
        self->type, "data", data, "metadata", meta, "id", id, "schema", (unsigned)self->schema,
        "tags", self->tags, "timestamp_ns", (long long)self->timestamp, "subject",
        self->subject ? self->subject : Py_None, "forgotten", self->forgotten ? Py_True : Py_False);
}

/* An int field of a pickled record in [lo, hi] (hi above LLONG_MAX: lo >= 0, read as
 * unsigned); TypeError / ValueError naming it. */
static int restore_int(PyObject *o, const char *name, long long lo, unsigned long long hi,
                       unsigned long long *out) {
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", name, Py_TYPE(o)->tp_name);
        return -1;
    }
    if (hi > (unsigned long long)LLONG_MAX) {
        unsigned long long u = PyLong_AsUnsignedLongLong(o);
        if (!PyErr_Occurred() && u >= (unsigned long long)lo && u <= hi) {
            *out = u;
            return 0;
        }
    } else {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (!PyErr_Occurred() && !overflow && v >= lo && (v < 0 || (unsigned long long)v <= hi)) {
            *out = (unsigned long long)v;
            return 0;
        }
    }
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
    }
    PyErr_Format(PyExc_ValueError, "%s: %R is out of range", name, o);
    return -1;
}

/* _restore_recorded_event(fields): a RecordedEvent from what recorded_reduce made, every
 * field checked as where it came from would have checked it. */
static PyObject *restore_recorded(PyObject *module, PyObject *fields) {
    static char *kwlist[] = {"stream",   "version",   "position", "type", "data",
                             "metadata", "id",        "schema",   "tags", "timestamp_ns",
                             "subject",  "forgotten", NULL};
    cpy_state *st = cpy_state_of_module(module);
    PyObject *stream, *version, *position, *type, *data, *meta, *id, *schema, *tags, *ts;
    PyObject *subject = Py_None, *forgotten = Py_False;
    unsigned long long v, p, sv, t;
    cpy_recorded *self;

    if (!PyDict_Check(fields)) {
        PyErr_Format(PyExc_TypeError, "a pickled RecordedEvent is a dict of fields, not %.100s",
                     Py_TYPE(fields)->tp_name);
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(st->empty_tuple, fields, "OOOOOOOOOO|OO:RecordedEvent", kwlist,
                                     &stream, &version, &position, &type, &data, &meta, &id,
                                     &schema, &tags, &ts, &subject, &forgotten))
        return NULL;
    if (!PyBool_Check(forgotten)) {
        PyErr_Format(PyExc_TypeError, "forgotten must be a bool, not %.100s",
                     Py_TYPE(forgotten)->tp_name);
        return NULL;
    }
    if (forgotten == Py_True && data != Py_None) {
        PyErr_SetString(PyExc_ValueError, "a forgotten event has data None");
        return NULL;
    }
    if (restore_int(version, "version", 0, INT64_MAX, &v) < 0 ||
        restore_int(position, "position", 1, UINT64_MAX, &p) < 0 ||
        restore_int(schema, "schema", 1, UINT32_MAX, &sv) < 0 ||
        restore_int(ts, "timestamp_ns", INT64_MIN, INT64_MAX, &t) < 0)
        return NULL;
    if (meta != Py_None && !PyDict_Check(meta)) {
        PyErr_Format(PyExc_TypeError, "metadata must be a dict or None, not %.100s",
                     Py_TYPE(meta)->tp_name);
        return NULL;
    }
    self = (cpy_recorded *)st->Recorded_Type->tp_alloc(st->Recorded_Type, 0);
    if (!self) return NULL;
    self->version = (int64_t)v;
    self->position = p;
    self->schema = (uint32_t)sv;
    self->timestamp = (int64_t)t;
    self->flags = PyBytes_Check(data) ? CAIRN_EVENT_BYTES : 0;
    self->data_obj = Py_NewRef(data); /* decoded already: nothing inline */
    self->meta_obj = Py_NewRef(meta);
    self->forgotten = forgotten == Py_True;
    if (!(self->subject = checked_subject(subject)) ||
        !(self->stream = checked_name(stream, "stream", CAIRN_MAX_STREAM)) ||
        !(self->type = checked_name(type, "type", CAIRN_MAX_TYPE)) ||
        !(self->tags = checked_tags(tags)) ||
        cpy_uuid_arg(st, id, "id", self->id, &self->id_obj) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyMethodDef recorded_module_functions[] = {
    {"_restore_recorded_event", (PyCFunction)restore_recorded, METH_O,
     "Rebuilds a pickled RecordedEvent (what RecordedEvent.__reduce__ names)."},
    {NULL},
};

static PyMethodDef recorded_methods[] = {
    {"__reduce__", (PyCFunction)recorded_reduce, METH_NOARGS, NULL},
    {NULL},
};

/* ---------------------------------------------------------------------------------
 * A RecordedEvent as an Event again: appending one, Event.from_recorded.
 * --------------------------------------------------------------------------------- */
PyObject *cpy_event_from_recorded(cpy_state *st, PyObject *o) {
    cpy_recorded *r = (cpy_recorded *)o;
    PyObject *data, *meta;
    cpy_event *e;

    if (r->forgotten) { /* its data is gone: a copy would be an event with no data */
        PyErr_Format(PyExc_ValueError,
                     "the RecordedEvent at position %llu is forgotten (its subject's key was "
                     "forgotten): its data cannot be written again",
                     (unsigned long long)r->position);
        return NULL;
    }
    if (!(data = recorded_get_data(r, NULL))) return NULL;
    if (!(meta = recorded_get_metadata(r, NULL))) {
        Py_DECREF(data);
        return NULL;
    }
    if (meta != Py_None && !PyDict_Check(meta)) { /* stored by a script before they were checked */
        PyErr_Format(PyExc_TypeError,
                     "the RecordedEvent at position %llu: metadata must be a dict or None, not "
                     "%.100s",
                     (unsigned long long)r->position, Py_TYPE(meta)->tp_name);
        Py_DECREF(data);
        Py_DECREF(meta);
        return NULL;
    }
    e = (cpy_event *)st->Event_Type->tp_alloc(st->Event_Type, 0);
    if (!e) {
        Py_DECREF(data);
        Py_DECREF(meta);
        return NULL;
    }
    e->data = data;
    e->metadata = meta;
    e->tags = Py_NewRef(r->tags); /* a tuple of exact str, checked when it was made */
    e->id_obj = Py_XNewRef(r->id_obj);
    e->subject = Py_NewRef(r->subject ? r->subject : Py_None);
    memcpy(e->id, r->id, 16);
    e->schema = r->schema;
    e->ready = 1;
    /* an upcaster may have set the type: check it as Event does */
    if (!(e->type = checked_name(r->type, "type", CAIRN_MAX_TYPE))) {
        Py_DECREF(e);
        return NULL;
    }
    return (PyObject *)e;
}

static PyObject *event_from_recorded(PyObject *cls, PyObject *args, PyObject *kwargs) {
    cpy_state *st = cpy_state_of_type((PyTypeObject *)cls);
    PyObject *rec, *kw, *r = NULL;

    if (!st || !PyArg_ParseTuple(args, "O:from_recorded", &rec)) return NULL;
    if (!PyObject_TypeCheck(rec, st->Recorded_Type)) {
        PyErr_Format(PyExc_TypeError, "from_recorded: expected a cairn.RecordedEvent, not %.100s",
                     Py_TYPE(rec)->tp_name);
        return NULL;
    }
    if (((cpy_recorded *)rec)->forgotten) {
        PyErr_Format(PyExc_ValueError,
                     "from_recorded: the RecordedEvent at position %llu is forgotten (its "
                     "subject's key was forgotten): its data cannot be written again",
                     (unsigned long long)((cpy_recorded *)rec)->position);
        return NULL;
    }
    {
        cpy_recorded *x = (cpy_recorded *)rec;
        PyObject *data = recorded_get_data(x, NULL), *meta = NULL, *id = NULL;
        if (data && (meta = recorded_get_metadata(x, NULL))) id = recorded_get_id(x, NULL);
        if (id) {
            kw = Py_BuildValue("{sOsNsNsNsIsOsO}", "type", x->type, "data", data, "metadata", meta,
                               "id", id, "schema", (unsigned)x->schema, "tags", x->tags, "subject",
                               x->subject ? x->subject : Py_None);
        } else {
            kw = NULL;
            Py_XDECREF(data);
            Py_XDECREF(meta);
        }
    }
    if (kw && (!kwargs || PyDict_Update(kw, kwargs) == 0))
        r = PyObject_Call(cls, st->empty_tuple, kw);
    Py_XDECREF(kw);
    return r;
}

static PyMemberDef recorded_members[] = {
    {"stream", T_OBJECT, offsetof(cpy_recorded, stream), READONLY, "The stream name."},
    {"type", T_OBJECT, offsetof(cpy_recorded, type), READONLY, "The event type."},
    {"tags", T_OBJECT, offsetof(cpy_recorded, tags), READONLY, "Tags (tuple of str)."},
    {"version", T_LONGLONG, offsetof(cpy_recorded, version), READONLY,
     "The event's version in its stream (0, 1, 2, ...)."},
    {"position", T_ULONGLONG, offsetof(cpy_recorded, position), READONLY,
     "The event's global position (1, 2, 3, ...)."},
    {"schema", T_UINT, offsetof(cpy_recorded, schema), READONLY, "The schema version."},
    {"timestamp_ns", T_LONGLONG, offsetof(cpy_recorded, timestamp), READONLY,
     "Commit time in nanoseconds since the Unix epoch (UTC)."},
    {NULL},
};

static PyGetSetDef recorded_getset[] = {
    {"data", (getter)recorded_get_data, NULL,
     "The payload: JSON values as Python values, bytes as bytes, or None.", NULL},
    {"metadata", (getter)recorded_get_metadata, NULL, "The metadata dict, or None.", NULL},
    {"id", (getter)recorded_get_id, NULL, "The event id (uuid.UUID).", NULL},
    {"timestamp", (getter)recorded_get_timestamp, NULL,
     "Commit time as an aware datetime (UTC, microsecond precision).", NULL},
    {"subject", (getter)recorded_get_subject, NULL,
     "The data subject whose key encrypted `data` (str), or None.", NULL},
    {"forgotten", (getter)recorded_get_forgotten, NULL,
     "True when the subject's key was forgotten (store.forget): `data` is then None.", NULL},
    {NULL},
};

static PyType_Slot recorded_slots[] = {
    {Py_tp_dealloc, recorded_dealloc},
    {Py_tp_traverse, recorded_traverse},
    {Py_tp_clear, recorded_clear},
    {Py_tp_repr, recorded_repr},
    {Py_tp_richcompare, recorded_richcompare},
    {Py_tp_hash, recorded_hash},
    {Py_tp_methods, recorded_methods},
    {Py_tp_members, recorded_members},
    {Py_tp_getset, recorded_getset},
    {Py_tp_doc, (void *)"An event read from the store."},
    {0, NULL},
};

static PyType_Spec recorded_spec = {
    .name = "cairn.RecordedEvent",
    .basicsize = offsetof(cpy_recorded, raw),
    .itemsize = 1,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = recorded_slots,
};

/* ---------------------------------------------------------------------------------
 * AppendResult
 * --------------------------------------------------------------------------------- */
typedef struct cpy_result {
    PyObject_HEAD
    int64_t version;
    uint64_t position;       /* 0: None */
    uint64_t first_position; /* 0: None */
} cpy_result;

PyObject *cpy_result_new(cpy_state *st, const cairn_append_result *r) {
    cpy_result *self = (cpy_result *)st->Result_Type->tp_alloc(st->Result_Type, 0);
    if (!self) return NULL;
    self->version = r->version;
    self->position = r->position;
    self->first_position = r->first_position;
    return (PyObject *)self;
}

static int position_arg(PyObject *o, const char *name, uint64_t *out) {
    unsigned long long v;
    if (o == Py_None) {
        *out = 0;
        return 0;
    }
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int or None", name);
        return -1;
    }
    v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    if (v == 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 1 or None", name);
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *result_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"version", "position", "first_position", NULL};
    long long version;
    PyObject *pos = Py_None, *first = Py_None;
    cpy_result *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "L|OO:AppendResult", kwlist, &version, &pos,
                                     &first))
        return NULL;
    self = (cpy_result *)tp->tp_alloc(tp, 0);
    if (!self) return NULL;
    self->version = version;
    if (position_arg(pos, "position", &self->position) < 0 ||
        position_arg(first, "first_position", &self->first_position) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void result_dealloc(cpy_result *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *pos_obj(uint64_t p) {
    if (!p) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(p);
}

static PyObject *result_get_position(cpy_result *self, void *c) {
    (void)c;
    return pos_obj(self->position);
}

static PyObject *result_get_first(cpy_result *self, void *c) {
    (void)c;
    return pos_obj(self->first_position);
}

static PyObject *result_repr(cpy_result *self) {
    PyObject *p = pos_obj(self->position), *f = pos_obj(self->first_position), *r = NULL;
    if (p && f)
        r = PyUnicode_FromFormat("AppendResult(version=%lld, position=%R, first_position=%R)",
                                 (long long)self->version, p, f);
    Py_XDECREF(p);
    Py_XDECREF(f);
    return r;
}

static PyObject *result_richcompare(PyObject *a, PyObject *b, int op) {
    cpy_result *x = (cpy_result *)a, *y = (cpy_result *)b;
    int eq;
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b)) Py_RETURN_NOTIMPLEMENTED;
    eq = x->version == y->version && x->position == y->position &&
        x->first_position == y->first_position;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t result_hash(cpy_result *self) {
    uint64_t h = (uint64_t)self->version * 0x9E3779B97F4A7C15ull ^ self->position * 31u ^
        self->first_position;
    return (Py_hash_t)(h >> 1);
}

static PyObject *result_reduce(cpy_result *self, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("O(LNN)", Py_TYPE(self), (long long)self->version, pos_obj(self->position),
                         pos_obj(self->first_position));
}

static PyMemberDef result_members[] = {
    {"version", T_LONGLONG, offsetof(cpy_result, version), READONLY,
     "Stream version of the last event written."},
    {NULL},
};

static PyGetSetDef result_getset[] = {
    {"position", (getter)result_get_position, NULL,
     "Global position of the last event written (None when nothing was written).", NULL},
    {"first_position", (getter)result_get_first, NULL,
     "Global position of the first event written (None when nothing was written).", NULL},
    {NULL},
};

static PyMethodDef result_methods[] = {
    {"__reduce__", (PyCFunction)result_reduce, METH_NOARGS, NULL},
    {NULL},
};

static PyType_Slot result_slots[] = {
    {Py_tp_new, result_new},
    {Py_tp_dealloc, result_dealloc},
    {Py_tp_repr, result_repr},
    {Py_tp_richcompare, result_richcompare},
    {Py_tp_hash, result_hash},
    {Py_tp_members, result_members},
    {Py_tp_getset, result_getset},
    {Py_tp_methods, result_methods},
    {Py_tp_doc,
     (void *)"AppendResult(version, position=None, first_position=None)\n--\n\n"
             "What an append wrote: the stream's new version and the global\n"
             "positions of the last and first events written."},
    {0, NULL},
};

static PyType_Spec result_spec = {
    .name = "cairn.AppendResult",
    .basicsize = sizeof(cpy_result),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = result_slots,
};

/* ---------------------------------------------------------------------------------
 * VerifyReport: a struct sequence (attributes and tuple unpacking).
 * --------------------------------------------------------------------------------- */
static PyStructSequence_Field verify_fields[] = {
    {"events", "number of events checked"},
    {"streams", "number of streams"},
    {"head", "last global position"},
    {"chain", "the chain hash at head (hex), recomputed from genesis"},
    {NULL, NULL},
};

/* chain is an attribute only: (events, streams, head) = report keeps working */
static PyStructSequence_Desc verify_desc = {
    "cairn.VerifyReport",
    "What store.verify() checked: events, streams, head, and the chain hash at head.",
    verify_fields,
    3,
};

int cpy_event_types_init(PyObject *module, cpy_state *st) {
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI) return -1;
    st->Event_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &event_spec, NULL);
    if (!st->Event_Type || PyModule_AddType(module, st->Event_Type) < 0) return -1;
    st->Recorded_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &recorded_spec, NULL);
    if (!st->Recorded_Type || PyModule_AddType(module, st->Recorded_Type) < 0 ||
        PyModule_AddFunctions(module, recorded_module_functions) < 0)
        return -1;
    st->Result_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &result_spec, NULL);
    if (!st->Result_Type || PyModule_AddType(module, st->Result_Type) < 0) return -1;
    st->Verify_Type = PyStructSequence_NewType(&verify_desc);
    if (!st->Verify_Type || PyModule_AddType(module, st->Verify_Type) < 0) return -1;
    return 0;
}
