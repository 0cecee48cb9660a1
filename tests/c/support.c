/*
 * support.c -- fixtures, read/write helpers and the LMDB fault-injection wrappers shared by
 * every cmocka test (compiled into each test executable).
 */
#include <pthread.h>
#include "support.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <lmdb.h>

/* ---------------------------------------------------------------------------------
 * Fixtures
 * --------------------------------------------------------------------------------- */
int open_store(const char *path, cairn_durability dur, uint64_t map_size, int readonly,
               cairn_store **out) {
    cairn_options o;
    cairn_options_init(&o);
    o.durability = dur;
    o.map_size = map_size;
    o.readonly = readonly;
    return cairn_open(path, &o, out);
}

int fx_setup_dir(void **state) {
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/cairn-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/store", fx->dir);
    *state = fx;
    return 0;
}

int fx_setup(void **state) {
    if (fx_setup_dir(state) != 0) return -1;
    fixture *fx = *state;
    int rc = open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store);
    if (rc != CAIRN_OK) {
        fprintf(stderr, "fx_setup: cairn_open(%s) -> %d: %s\n", fx->path, rc, cairn_errmsg());
        return -1;
    }
    return 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

void rm_rf(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

int fx_teardown(void **state) {
    fixture *fx = *state;
    fault_disarm();
    if (!fx) return 0;
    cairn_close(fx->store);
    rm_rf(fx->dir);
    free(fx);
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Writing
 * --------------------------------------------------------------------------------- */
static cairn_slice str_slice(const char *s) {
    cairn_slice sl = {s, s ? strlen(s) : 0};
    return sl;
}

cairn_event_in ev_make(const char *type, const char *json) {
    cairn_event_in e;
    memset(&e, 0, sizeof e);
    e.type = str_slice(type);
    e.data = str_slice(json);
    e.schema = 1;
    return e;
}

cairn_event_in ev_with_id(const char *type, const char *json, uint64_t n) {
    cairn_event_in e = ev_make(type, json);
    for (int i = 0; i < 8; i++) e.id[i] = (uint8_t)(n >> (56 - 8 * i));
    memcpy(e.id + 8, "\x70\x00\x80\x00tst!", 8); /* constant tail, version nibble 7 */
    e.has_id = 1;
    return e;
}

int append_one(cairn_store *s, const char *stream, int64_t expected, const char *type,
               const char *json, cairn_append_result *res) {
    cairn_event_in e = ev_make(type, json);
    cairn_append_result r;
    return cairn_append(s, stream, strlen(stream), expected, &e, 1, res ? res : &r);
}

int append_n(cairn_store *s, const char *stream, int64_t expected, const char *type, size_t n,
             cairn_append_result *res) {
    cairn_event_in *evs = calloc(n ? n : 1, sizeof *evs);
    char(*data)[32] = calloc(n ? n : 1, sizeof *data);
    assert_non_null(evs);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++) {
        snprintf(data[i], sizeof data[i], "{\"i\":%zu}", i);
        evs[i] = ev_make(type, data[i]);
    }
    cairn_append_result r;
    int rc = cairn_append(s, stream, strlen(stream), expected, evs, n, res ? res : &r);
    free(evs);
    free(data);
    return rc;
}

uint64_t head_of(cairn_store *s) {
    uint64_t h = 0;
    CHECK_OK(cairn_head(s, &h));
    return h;
}

int64_t version_of(cairn_store *s, const char *stream) {
    int64_t v = -99;
    CHECK_OK(cairn_stream_version(s, stream, strlen(stream), &v));
    return v;
}

/* ---------------------------------------------------------------------------------
 * Reading
 * --------------------------------------------------------------------------------- */
static void copy_slice(char *dst, size_t cap, cairn_slice s, size_t *len) {
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n) memcpy(dst, s.ptr, n);
    dst[n] = 0;
    if (len) *len = s.len;
}

void rec_from(rec *r, const cairn_event *ev) {
    memset(r, 0, sizeof *r);
    r->position = ev->position;
    r->version = ev->version;
    r->timestamp = ev->timestamp;
    r->schema = ev->schema;
    r->flags = ev->flags;
    memcpy(r->id, ev->id, 16);
    copy_slice(r->stream, sizeof r->stream, ev->stream, NULL);
    copy_slice(r->type, sizeof r->type, ev->type, NULL);
    copy_slice(r->data, sizeof r->data, ev->data, &r->data_len);
    copy_slice(r->metadata, sizeof r->metadata, ev->metadata, &r->metadata_len);
    r->ntags = ev->ntags;
    size_t cur = 0;
    cairn_slice tag;
    for (int i = 0; i < 4 && cairn_event_tag(ev, &cur, &tag); i++)
        copy_slice(r->tags[i], sizeof r->tags[i], tag, NULL);
}

int collect(cairn_iter *it, rec **out, size_t *n) {
    size_t cap = 16, len = 0;
    rec *v = malloc(cap * sizeof *v);
    assert_non_null(v);
    int rc;
    cairn_event ev;
    while ((rc = cairn_iter_next(it, &ev)) == 1) {
        if (len == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof *v);
            assert_non_null(v);
        }
        rec_from(&v[len++], &ev);
    }
    cairn_iter_close(it);
    *out = v;
    *n = len;
    return rc;
}

int read_stream(cairn_store *s, const char *stream, int64_t start, int backwards, uint64_t limit,
                rec **out, size_t *n) {
    cairn_iter *it = NULL;
    *out = NULL;
    *n = 0;
    int rc = cairn_iter_stream(s, stream, strlen(stream), start, backwards, limit, &it);
    if (rc != CAIRN_OK) return rc;
    return collect(it, out, n);
}

int read_all(cairn_store *s, uint64_t start, int backwards, uint64_t limit, const cairn_filter *f,
             rec **out, size_t *n) {
    cairn_iter *it = NULL;
    *out = NULL;
    *n = 0;
    int rc = cairn_iter_all(s, start, backwards, limit, f, &it);
    if (rc != CAIRN_OK) return rc;
    return collect(it, out, n);
}

/* ---------------------------------------------------------------------------------
 * Fault injection through -Wl,--wrap
 * --------------------------------------------------------------------------------- */
static long f_calls[FAULT_NFN];
static long f_nth[FAULT_NFN];
static int f_err[FAULT_NFN];
static int f_fired[FAULT_NFN];

void fault_arm(fault_fn fn, long nth, int err) {
    __atomic_store_n(&f_calls[fn], 0, __ATOMIC_SEQ_CST);
    f_err[fn] = err;
    f_fired[fn] = 0;
    __atomic_store_n(&f_nth[fn], nth, __ATOMIC_SEQ_CST);
}

void fault_disarm(void) {
    for (int i = 0; i < FAULT_NFN; i++) {
        __atomic_store_n(&f_nth[i], 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&f_calls[i], 0, __ATOMIC_SEQ_CST);
        f_fired[i] = 0;
    }
}

long fault_calls(fault_fn fn) { return __atomic_load_n(&f_calls[fn], __ATOMIC_SEQ_CST); }

int fault_fired(fault_fn fn) { return f_fired[fn]; }

/* Counts a call; returns the error to inject, or 0 to call the real function. */
static int fault_hit(fault_fn fn) {
    long c = __atomic_add_fetch(&f_calls[fn], 1, __ATOMIC_SEQ_CST);
    long nth = __atomic_load_n(&f_nth[fn], __ATOMIC_SEQ_CST);
    if (nth > 0 && c == nth) {
        f_fired[fn] = 1;
        return f_err[fn];
    }
    return 0;
}

int __real_mdb_txn_commit(MDB_txn *txn);
int __wrap_mdb_txn_commit(MDB_txn *txn);
int __real_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags);
int __wrap_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags);
int __real_mdb_cursor_put(MDB_cursor *c, MDB_val *key, MDB_val *data, unsigned flags);
int __wrap_mdb_cursor_put(MDB_cursor *c, MDB_val *key, MDB_val *data, unsigned flags);
int __real_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn);
int __wrap_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn);
int __real_mdb_cursor_get(MDB_cursor *c, MDB_val *key, MDB_val *data, MDB_cursor_op op);
int __wrap_mdb_cursor_get(MDB_cursor *c, MDB_val *key, MDB_val *data, MDB_cursor_op op);

int __wrap_mdb_cursor_get(MDB_cursor *c, MDB_val *key, MDB_val *data, MDB_cursor_op op) {
    int err = fault_hit(FAULT_GET);
    return err ? err : __real_mdb_cursor_get(c, key, data, op);
}

static pthread_mutex_t g_gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_gate_cv = PTHREAD_COND_INITIALIZER;
static int g_gate_armed, g_gate_held, g_gate_open;

void commit_gate_arm(void) {
    pthread_mutex_lock(&g_gate_mu);
    g_gate_armed = 1, g_gate_held = 0, g_gate_open = 0;
    pthread_mutex_unlock(&g_gate_mu);
}

void commit_gate_wait(void) {
    pthread_mutex_lock(&g_gate_mu);
    while (!g_gate_held) pthread_cond_wait(&g_gate_cv, &g_gate_mu);
    pthread_mutex_unlock(&g_gate_mu);
}

void commit_gate_release(void) {
    pthread_mutex_lock(&g_gate_mu);
    g_gate_open = 1;
    pthread_cond_broadcast(&g_gate_cv);
    pthread_mutex_unlock(&g_gate_mu);
}

int thread_asleep(pid_t tid) {
    char path[64], buf[256], *p;
    FILE *f;
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    if (!(f = fopen(path, "r"))) return 0;
    p = fgets(buf, sizeof buf, f);
    fclose(f);
    if (!p || !(p = strrchr(buf, ')'))) return 0;
    return p[2] == 'S';
}

static void gate_pass(void) {
    pthread_mutex_lock(&g_gate_mu);
    if (g_gate_armed) {
        g_gate_armed = 0, g_gate_held = 1;
        pthread_cond_broadcast(&g_gate_cv);
        while (!g_gate_open) pthread_cond_wait(&g_gate_cv, &g_gate_mu);
    }
    pthread_mutex_unlock(&g_gate_mu);
}

int __wrap_mdb_txn_commit(MDB_txn *txn) {
    int err;
    gate_pass();
    err = fault_hit(FAULT_COMMIT);
    if (err) {
        mdb_txn_abort(txn); /* a failed commit frees the txn */
        return err;
    }
    return __real_mdb_txn_commit(txn);
}

int __wrap_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags) {
    int err = fault_hit(FAULT_PUT);
    return err ? err : __real_mdb_put(txn, dbi, key, data, flags);
}

int __wrap_mdb_cursor_put(MDB_cursor *c, MDB_val *key, MDB_val *data, unsigned flags) {
    int err = fault_hit(FAULT_PUT);
    return err ? err : __real_mdb_cursor_put(c, key, data, flags);
}

/* Only write transactions count: reads are too many and too timing-dependent to aim at. */
int __wrap_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn) {
    if (!(flags & MDB_RDONLY)) {
        int err = fault_hit(FAULT_BEGIN);
        if (err) return err;
    }
    return __real_mdb_txn_begin(env, parent, flags, txn);
}
