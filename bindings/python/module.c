/*
 * module.c -- the extension module cairn._cairn: multi-phase init (PEP 489), the module
 * state that holds the types and exception classes, and the module-level functions.
 */
#include "binding.h"

PyDoc_STRVAR(open_doc,
             "open($module, /, path, *, durability='full', readonly=False, map_size=None,\n"
             "     script_instruction_limit=10000000, script_memory_limit=67108864,\n"
             "     script_time_limit=1.0)\n"
             "--\n\n"
             "Open (creating when missing, unless readonly) the cairn store in directory "
             "`path`.");

/* _json_dumps(value, what="data") -> bytes: the JSON text append would store (for tests). */
static PyObject *mod_json_dumps(PyObject *module, PyObject *args) {
    PyObject *obj, *r;
    const char *what = "data";
    cpy_buf b = {NULL, 0, 0};

    (void)module;
    if (!PyArg_ParseTuple(args, "O|s:_json_dumps", &obj, &what)) return NULL;
    if (cpy_json_encode(&b, obj, what) < 0) {
        cpy_buf_free(&b);
        return NULL;
    }
    r = PyBytes_FromStringAndSize(b.ptr ? b.ptr : "", (Py_ssize_t)b.len);
    cpy_buf_free(&b);
    return r;
}

/* _json_loads(data) -> value: how stored JSON text reads back (for tests). */
static PyObject *mod_json_loads(PyObject *module, PyObject *arg) {
    Py_buffer view;
    PyObject *r;

    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    r = cpy_json_decode(cpy_state_of_module(module), view.buf, (size_t)view.len, 0);
    PyBuffer_Release(&view);
    return r;
}

static PyMethodDef module_methods[] = {
    {"open", (PyCFunction)(void (*)(void))cpy_store_open, METH_VARARGS | METH_KEYWORDS, open_doc},
    {"_json_dumps", (PyCFunction)mod_json_dumps, METH_VARARGS,
     "_json_dumps($module, value, what='data', /)\n--\n\nThe JSON text (bytes) append would "
     "store."},
    {"_json_loads", (PyCFunction)mod_json_loads, METH_O,
     "_json_loads($module, data, /)\n--\n\nDecode JSON text (a bytes-like object) as stored "
     "data reads back."},
    {NULL},
};

static int module_exec(PyObject *module) {
    cpy_state *st = cpy_state_of_module(module);
    PyObject *uuid_mod, *safe;

    if (!(st->empty_tuple = PyTuple_New(0))) return -1;
    if (!(st->str_int = PyUnicode_InternFromString("int")) ||
        !(st->str_is_safe = PyUnicode_InternFromString("is_safe")) ||
        !(st->str_bytes = PyUnicode_InternFromString("bytes")))
        return -1;

    uuid_mod = PyImport_ImportModule("uuid");
    if (!uuid_mod) return -1;
    st->uuid_type = PyObject_GetAttrString(uuid_mod, "UUID");
    safe = PyObject_GetAttrString(uuid_mod, "SafeUUID");
    Py_DECREF(uuid_mod);
    if (!st->uuid_type || !safe) {
        Py_XDECREF(safe);
        return -1;
    }
    st->uuid_unknown = PyObject_GetAttrString(safe, "unknown");
    Py_DECREF(safe);
    if (!st->uuid_unknown) return -1;
    if (!PyType_Check(st->uuid_type)) {
        PyErr_SetString(PyExc_ImportError, "cairn: uuid.UUID is not a class");
        return -1;
    }

    if (cpy_exceptions_init(module, st) < 0) return -1;
    if (cpy_event_types_init(module, st) < 0) return -1;
    if (cpy_store_type_init(module, st) < 0) return -1;
    if (cpy_transaction_type_init(module, st) < 0) return -1;
    if (cpy_iter_types_init(module, st) < 0) return -1;
    if (cpy_aggregate_type_init(module, st) < 0) return -1;
    if (cpy_sub_type_init(module, st) < 0) return -1;
    if (cpy_projection_type_init(module, st) < 0) return -1;
    if (cpy_query_types_init(module, st) < 0) return -1;

    if (PyModule_AddIntConstant(module, "ANY", CAIRN_ANY) < 0 ||
        PyModule_AddIntConstant(module, "NO_STREAM", CAIRN_NO_STREAM) < 0 ||
        PyModule_AddIntConstant(module, "STREAM_EXISTS", CAIRN_STREAM_EXISTS) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TYPE", CAIRN_MAX_TYPE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_STREAM", CAIRN_MAX_STREAM) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TAG", CAIRN_MAX_TAG) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TAGS", CAIRN_MAX_TAGS) < 0 ||
        PyModule_AddIntConstant(module, "MAX_RECORD", (long)CAIRN_MAX_RECORD) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg) {
    cpy_state *st = cpy_state_of_module(module);
    Py_VISIT(st->Store_Type);
    Py_VISIT(st->Event_Type);
    Py_VISIT(st->Recorded_Type);
    Py_VISIT(st->Result_Type);
    Py_VISIT(st->ReadIter_Type);
    Py_VISIT(st->NamesIter_Type);
    Py_VISIT(st->Verify_Type);
    Py_VISIT(st->Aggregate_Type);
    Py_VISIT(st->Sub_Type);
    Py_VISIT(st->Tx_Type);
    Py_VISIT(st->Proj_Type);
    Py_VISIT(st->QueryItem_Type);
    Py_VISIT(st->Query_Type);
    Py_VISIT(st->Condition_Type);
    Py_VISIT(st->logger);
    for (int i = 0; i < CPY_EXC_COUNT; i++) Py_VISIT(st->exc[i]);
    Py_VISIT(st->uuid_type);
    Py_VISIT(st->uuid_unknown);
    return 0;
}

static int module_clear(PyObject *module) {
    cpy_state *st = cpy_state_of_module(module);
    Py_CLEAR(st->Store_Type);
    Py_CLEAR(st->Event_Type);
    Py_CLEAR(st->Recorded_Type);
    Py_CLEAR(st->Result_Type);
    Py_CLEAR(st->ReadIter_Type);
    Py_CLEAR(st->NamesIter_Type);
    Py_CLEAR(st->Verify_Type);
    Py_CLEAR(st->Aggregate_Type);
    Py_CLEAR(st->Sub_Type);
    Py_CLEAR(st->Tx_Type);
    Py_CLEAR(st->Proj_Type);
    Py_CLEAR(st->QueryItem_Type);
    Py_CLEAR(st->Query_Type);
    Py_CLEAR(st->Condition_Type);
    Py_CLEAR(st->logger);
    for (int i = 0; i < CPY_EXC_COUNT; i++) Py_CLEAR(st->exc[i]);
    Py_CLEAR(st->uuid_type);
    Py_CLEAR(st->uuid_unknown);
    Py_CLEAR(st->str_int);
    Py_CLEAR(st->str_is_safe);
    Py_CLEAR(st->str_bytes);
    Py_CLEAR(st->empty_tuple);
    return 0;
}

static void module_free(void *module) { module_clear((PyObject *)module); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
             "The C core of cairn, an embedded event store on LMDB.  Use the "
             "`cairn` package, which re-exports everything public from here.");

PyModuleDef cpy_module_def = {
    PyModuleDef_HEAD_INIT,         .m_name = "cairn._cairn",    .m_doc = module_doc,
    .m_size = sizeof(cpy_state),   .m_methods = module_methods, .m_slots = module_slots,
    .m_traverse = module_traverse, .m_clear = module_clear,     .m_free = module_free,
};

PyMODINIT_FUNC PyInit__cairn(void) { return PyModuleDef_Init(&cpy_module_def); }
