/*
 * binding.h -- what the files of the CPython extension `cairn._cairn` share: the module
 * state, the object layouts that cross files, and the helpers each file exports.
 * Python -> binding -> core: nothing here is seen by the core.
 */
#ifndef CAIRN_BINDING_H
#define CAIRN_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "cairn.h"

/* ---------------------------------------------------------------------------------
 * Exceptions: one enum, one table (errors.c), one raise site.
 * --------------------------------------------------------------------------------- */
enum {
    CPY_EXC_ERROR = 0,
    CPY_EXC_WRONG_VERSION,
    CPY_EXC_DUPLICATE,
    CPY_EXC_CONDITION,
    CPY_EXC_DELETED,
    CPY_EXC_SCRIPT,
    CPY_EXC_REJECTED,
    CPY_EXC_ALREADY_COMPENSATED,
    CPY_EXC_NOT_COMPENSABLE,
    CPY_EXC_CORRUPTION,
    CPY_EXC_CLOSED,
    CPY_EXC_COUNT
};

/* Per-module state.  Every object that needs it reaches it through a strong reference
 * to the module (Store -> module) or PyType_GetModuleByDef on its own type. */
typedef struct cpy_state {
    PyTypeObject *Store_Type;
    PyTypeObject *Event_Type;
    PyTypeObject *Recorded_Type;
    PyTypeObject *Result_Type;
    PyTypeObject *ReadIter_Type;
    PyTypeObject *NamesIter_Type;
    PyTypeObject *Verify_Type;
    PyTypeObject *Aggregate_Type;
    PyTypeObject *Sub_Type;       /* cairn.Subscription (subscription.c) */
    PyTypeObject *Tx_Type;        /* cairn.Transaction (transaction.c) */
    PyTypeObject *Proj_Type;      /* cairn.Projection (projection.c) */
    PyTypeObject *QueryItem_Type; /* cairn.QueryItem, cairn.Query, cairn.Condition (query.c) */
    PyTypeObject *Query_Type;
    PyTypeObject *Condition_Type;
    PyObject *exc[CPY_EXC_COUNT];
    PyObject *logger;       /* logging.getLogger("cairn"), fetched at the first print */
    PyObject *uuid_type;    /* uuid.UUID */
    PyObject *uuid_unknown; /* uuid.SafeUUID.unknown */
    PyObject *str_int;      /* "int", "is_safe", "bytes": UUID attribute names */
    PyObject *str_is_safe;
    PyObject *str_bytes;
    PyObject *empty_tuple;
} cpy_state;

extern PyModuleDef cpy_module_def;

static inline cpy_state *cpy_state_of_module(PyObject *module) {
    return (cpy_state *)PyModule_GetState(module);
}
/* The state reached from a heap type of this module (or a subclass); NULL + exception
 * when the type does not belong to it. */
cpy_state *cpy_state_of_type(PyTypeObject *tp);

/* ---------------------------------------------------------------------------------
 * Objects shared between files.
 * --------------------------------------------------------------------------------- */
typedef struct cpy_readiter cpy_readiter;

typedef struct cpy_store {
    PyObject_HEAD
    cairn_store *handle; /* NULL once really closed */
    PyObject *module;    /* strong: keeps the state alive */
    PyObject *path;      /* str */
    cairn_durability durability;
    int readonly;
    int closed;          /* close() was called: new calls raise StoreClosed */
    Py_ssize_t inflight; /* calls running without the GIL; touched with the GIL held */
    long long script_instruction_limit;
    long long script_memory_limit;
    double script_time_limit; /* seconds; 0: none */
    cpy_readiter *iters;      /* live read iterators (borrowed; they unlink on dealloc) */
    PyObject *weakrefs;
} cpy_store;

typedef struct cpy_event {
    PyObject_HEAD
    PyObject *type;     /* exact str, validated */
    PyObject *data;     /* anything; encoded at append time */
    PyObject *metadata; /* dict or None */
    PyObject *tags;     /* tuple of exact str */
    PyObject *id_obj;   /* cached uuid.UUID or NULL */
    PyObject *subject;  /* exact str, validated, or None (spec 6) */
    uint32_t schema;
    uint8_t id[16];
    uint8_t ready; /* Event.__init__ or __setstate__ ran: the fields are fixed */
} cpy_event;

/* A small cache of str objects for names that repeat along a read (stream, type). */
#define CPY_NAMECACHE 8
typedef struct cpy_namecache {
    struct {
        PyObject *s;   /* strong */
        const char *u; /* its UTF-8, owned by s */
        Py_ssize_t n;
    } e[CPY_NAMECACHE];
    unsigned next;
} cpy_namecache;

/* ---------------------------------------------------------------------------------
 * errors.c
 * --------------------------------------------------------------------------------- */
int cpy_exceptions_init(PyObject *module, cpy_state *st);
/* Raises the exception for core code `rc` from the calling thread's cairn_last_error().
 * `streams` (may be NULL) are the stream names of the requests of an append batch, so
 * error->request can name the failing one.  Returns NULL. */
PyObject *cpy_raise(cpy_state *st, int rc, PyObject *const *streams, size_t nstreams);
PyObject *cpy_raise_closed(cpy_state *st);
/* KeyError(key), for a position or name the store does not have; returns CPY_ERAISED. */
int cpy_raise_missing(PyObject *key);

/* ---------------------------------------------------------------------------------
 * event.c
 * --------------------------------------------------------------------------------- */
int cpy_event_types_init(PyObject *module, cpy_state *st);
/* A RecordedEvent from a decoded record (copies everything it needs). */
PyObject *cpy_recorded_new(cpy_state *st, const cairn_event *ev, cpy_namecache *names);
PyObject *cpy_result_new(cpy_state *st, const cairn_append_result *r);
/* A new cairn.Event holding a RecordedEvent's id, type, data, metadata, tags and schema
 * (what appending a RecordedEvent writes); TypeError when its metadata is not a dict. */
PyObject *cpy_event_from_recorded(cpy_state *st, PyObject *recorded);
void cpy_namecache_clear(cpy_namecache *c);

/* ---------------------------------------------------------------------------------
 * util.c: the argument helpers, the growable byte buffer and the buffer of names collected
 * without the GIL, which every file uses.
 * --------------------------------------------------------------------------------- */
int cpy_check_bool(PyObject *o, const char *name, int *out);
/* None (-> *has = 0) or an int >= 0; TypeError / ValueError naming the argument. */
int cpy_opt_uint(PyObject *o, const char *name, int *has, uint64_t *out);
/* A str argument as UTF-8 (borrowed from o); TypeError / ValueError naming it. */
const char *cpy_stream_arg(PyObject *o, const char *name, Py_ssize_t *len);
/* An id: a uuid.UUID, or a str that uuid.UUID accepts, as 16 bytes; *obj (may be NULL) gets
 * the uuid.UUID (a new reference).  TypeError / ValueError naming the argument. */
int cpy_uuid_arg(cpy_state *st, PyObject *o, const char *name, uint8_t out[16], PyObject **obj);
/* An expected_version: cairn.ANY / NO_STREAM / STREAM_EXISTS or an int >= 0. */
int cpy_expected_arg(PyObject *o, int64_t *out);
/* A read_all-style filter argument: None (*out NULL), a str or an iterable of str (*out a
 * new tuple of str, each valid UTF-8). */
int cpy_filter_arg(PyObject *o, const char *name, PyObject **out);
/* One append's stream, events and expected_version (NULL: cairn.ANY), checked as
 * Store.append checks them; returns the events as a new tuple of cairn.Event. */
PyObject *cpy_append_arg(cpy_state *st, PyObject *stream, PyObject *events, PyObject *expected,
                         int64_t *exp);

typedef struct cpy_buf {
    char *ptr;
    size_t len, cap;
} cpy_buf;
int cpy_buf_reserve(cpy_buf *b, size_t extra); /* -1 + MemoryError */
void cpy_buf_free(cpy_buf *b);

/* Names (streams, scripts, partitions) a core listing hands to a callback that runs without
 * the GIL: cpy_names_add is that callback (ctx a zeroed cpy_names; it stops the walk when
 * out of memory), the rest run with the GIL once the call returned. */
typedef struct cpy_names {
    char *p; /* (size_t len, bytes) entries; PyMem_Raw */
    size_t len, cap, count;
    size_t last; /* offset of the last entry */
    int oom;     /* a name could not be kept */
} cpy_names;
int cpy_names_add(void *ctx, const char *name, size_t len);
/* A new list of str (bad UTF-8 replaced), or NULL + MemoryError when a name was lost. */
PyObject *cpy_names_list(const cpy_names *b);
/* The last name's exact bytes, as a new bytes object (b->count > 0). */
PyObject *cpy_names_last(const cpy_names *b);
void cpy_names_free(cpy_names *b);

/* ---------------------------------------------------------------------------------
 * json.c: the one place where Python values become JSON text and back.
 * --------------------------------------------------------------------------------- */
/* Appends the JSON text of `obj` to `b`; `what` ("data"/"metadata") names the argument
 * in errors.  Returns 0 or -1 with an exception set. */
int cpy_json_encode(cpy_buf *b, PyObject *obj, const char *what);
/* Decodes JSON text into a Python value.  With a `position` (and `st`), text that does
 * not decode raises CorruptionError naming the record; else ValueError. */
PyObject *cpy_json_decode(cpy_state *st, const char *p, size_t len, uint64_t position);

/* ---------------------------------------------------------------------------------
 * store.c: the Store type, and its in-flight/close protocol.
 * --------------------------------------------------------------------------------- */
int cpy_store_type_init(PyObject *module, cpy_state *st);
PyObject *cpy_store_open(PyObject *module, PyObject *args, PyObject *kwargs);
/* Appends nreq requests (streams[i] a checked str, evs[i] a tuple of Event, exp[i]) in one
 * commit: one AppendResult (single) or a list of them, in request order. */
PyObject *cpy_store_append(cpy_store *s, PyObject *const *streams, PyObject *const *evs,
                           const int64_t *exp, PyObject *const *conds, size_t nreq, int single);

/* None or a cairn.Condition (TypeError naming `condition` otherwise). */
int cpy_check_condition(cpy_state *st, PyObject *cond);
/* A cairn.Query (TypeError naming `query` otherwise). */
int cpy_check_query(cpy_state *st, PyObject *query);
/* ---------------------------------------------------------------------------------
 * query.c: cairn.QueryItem, Query, Condition, and the core's view of one for a call (its
 * slices borrow the value's str objects, which are immutable and outlive the call).
 * --------------------------------------------------------------------------------- */
typedef struct cpy_core_query {
    cairn_query q;
    cairn_condition cond; /* cpy_condition_core: .query = &q */
    cairn_query_item *items;
    cairn_slice *slices;
} cpy_core_query;
int cpy_query_types_init(PyObject *module, cpy_state *st);
/* TypeError unless `query` is a cairn.Query (resp. cond a cairn.Condition). */
int cpy_query_core(cpy_state *st, PyObject *query, cpy_core_query *out);
int cpy_condition_core(cpy_state *st, PyObject *cond, cpy_core_query *out);
void cpy_query_core_free(cpy_core_query *q);

/* Marks a call as in flight and returns the handle, or NULL + StoreClosed; with the GIL
 * held.  Every successful enter is matched by one cpy_store_call_end (below), which
 * leaves.  Core calls go through CPY_STORE_CALL, which enters. */
cairn_store *cpy_store_enter(cpy_store *s);

/* ---------------------------------------------------------------------------------
 * The GIL-released core call.  CPY_UNLOCKED(stmt) runs `stmt` without the GIL, as
 * py-lmdb's UNLOCKED: the one place the binding lets the GIL go.  `stmt` touches C data
 * only (handles, and UTF-8 or buffers borrowed from objects the caller holds).
 *
 * A call on a store wraps it in the in-flight protocol, always in this shape:
 *
 *     CPY_STORE_CALL(s, h, rc, cairn_head(h, &v));
 *     ... convert what the core lent (rc >= 0), while s is still in flight ...
 *     if (cpy_store_call_end(s, h, rc, NULL, 0) < 0) return NULL;
 *
 * CPY_STORE_CALL enters s -- h is its handle, and a close() from another thread waits for
 * the call (whoever leaves last closes the handle) -- and sets rc to what `call` returns,
 * run without the GIL.  When s is closed, h is NULL, rc is CPY_ERAISED with StoreClosed
 * set, and `call` does not run.  cpy_store_call_end, with the GIL: raises for rc < 0 (as
 * cpy_raise; `streams` name the requests of a batch; a code the caller turned into its own
 * exception first is CPY_ERAISED), hands what scripts printed to logging, then leaves s
 * (which may close the handle: nothing the core lent survives it).  Returns rc; when it is
 * below zero, an exception is set.  With h NULL it does nothing.  (It also ends the one
 * call that keeps the GIL, start_projections: cpy_store_enter, the call, this.)
 * --------------------------------------------------------------------------------- */
#define CPY_ERAISED (-31000) /* no CAIRN_E* code (they are -30001..-30099): raised already */

#define CPY_UNLOCKED(stmt)     \
    do {                       \
        Py_BEGIN_ALLOW_THREADS \
            stmt;              \
        Py_END_ALLOW_THREADS   \
    } while (0)

#define CPY_STORE_CALL(s, h, rc, call)          \
    do {                                        \
        if (((h) = cpy_store_enter(s)) != NULL) \
            CPY_UNLOCKED((rc) = (call));        \
        else                                    \
            (rc) = CPY_ERAISED;                 \
    } while (0)

int cpy_store_call_end(cpy_store *s, cairn_store *h, int rc, PyObject *const *streams,
                       size_t nstreams);

/* ---------------------------------------------------------------------------------
 * iter.c: iterators over the log or a stream, and over stream names.
 * --------------------------------------------------------------------------------- */
int cpy_iter_types_init(PyObject *module, cpy_state *st);
PyObject *cpy_readiter_new_all(cpy_store *s, uint64_t start, int backwards, uint64_t limit,
                               int empty, PyObject *filters[4], int raw);
/* store.query(): a ReadIterator over cairn_iter_query whose .head is the head at the call. */
PyObject *cpy_readiter_new_query(cpy_store *s, PyObject *query, uint64_t start, int backwards,
                                 uint64_t limit, int empty);
PyObject *cpy_readiter_new_stream(cpy_store *s, PyObject *stream, int64_t start, int backwards,
                                  uint64_t limit, int empty, int raw);
PyObject *cpy_namesiter_new(cpy_store *s, PyObject *prefix);
/* Closes the core iterators of every live read iterator of `s` (before cairn_close). */
void cpy_readiters_detach(cpy_store *s);

/* ---------------------------------------------------------------------------------
 * transaction.c: cairn.Transaction, what store.transaction() returns.
 * --------------------------------------------------------------------------------- */
int cpy_transaction_type_init(PyObject *module, cpy_state *st);
PyObject *cpy_transaction_new(cpy_store *s);

/* ---------------------------------------------------------------------------------
 * script.c: defining scripts, and what scripts print().  The core calls cpy_log_line on
 * the thread running a script -- without the GIL, maybe inside an LMDB write txn -- so
 * it only queues the line in a thread-local list; cpy_log_flush (GIL held, after the core
 * call returned) hands the queue to the logging logger "cairn".
 * --------------------------------------------------------------------------------- */
void cpy_log_line(void *ctx, const char *script, const char *msg, size_t len);
/* Logs the lines queued on this thread, if any.  Keeps a pending exception as it is. */
void cpy_log_flush(cpy_state *st);
PyObject *cpy_store_define_aggregate(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_define_upcasters(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_scripts(cpy_store *s, PyObject *unused);

/* ---------------------------------------------------------------------------------
 * aggregate.c: the Aggregate type and load / execute / decide / compensate / rollback.
 * --------------------------------------------------------------------------------- */
int cpy_aggregate_type_init(PyObject *module, cpy_state *st);
PyObject *cpy_store_load(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_execute(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_decide(cpy_store *s, PyObject *args, PyObject *kwargs);
extern const char cpy_store_decide_doc[];
PyObject *cpy_store_compensate(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_rollback(cpy_store *s, PyObject *args, PyObject *kwargs);

/* ---------------------------------------------------------------------------------
 * subscription.c: the Subscription type, store.subscribe() and store.checkpoint().
 * --------------------------------------------------------------------------------- */
int cpy_sub_type_init(PyObject *module, cpy_state *st);
PyObject *cpy_store_subscribe(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_checkpoint(cpy_store *s, PyObject *args, PyObject *kwargs);
/* ---------------------------------------------------------------------------------
 * projection.c: the Projection type, run/delete, and the background runner (stopped by
 * cpy_projections_detach before the store's handle closes).
 * --------------------------------------------------------------------------------- */
int cpy_projection_type_init(PyObject *module, cpy_state *st);
PyObject *cpy_store_define_projection(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_projection(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_run_projections(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_delete_projection(cpy_store *s, PyObject *args, PyObject *kwargs);
PyObject *cpy_store_start_projections(cpy_store *s, PyObject *unused);
PyObject *cpy_store_stop_projections(cpy_store *s, PyObject *unused);
void cpy_projections_detach(cpy_store *s);

#endif
