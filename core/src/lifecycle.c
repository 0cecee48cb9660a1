/*
 * lifecycle.c -- streams that end and events that expire (spec 6): the reserved
 * `$lifecycle` stream every lifecycle call writes its event to, soft and hard deletes,
 * retention limits (max_count, max_age, truncate_before), the read-time rule that hides
 * removed events, and the holes removal leaves in the log.
 *
 * One rule for every read (storage.h: cairn__life_hides).  A stream named by a lifecycle
 * call gets an `smeta` entry (keyed like `streams`) and, once it has events, the
 * CAIRN__SF_LIFE flag in its `streams` entry, so a stream without one costs nothing: the
 * stream reads see the flag in the entry they read anyway, and the reads over the log look
 * at `smeta` only when it holds any entry (cairn__life_view_begin, once per refill).  The
 * entry's `first` is the first version not removed by truncate_before or max_count (and by
 * max_age as of the last change of limits); it only grows, so lowering a limit never
 * brings an event back.  max_age is judged against the clock at each read.
 */
#include <jansson.h>
#include <stdlib.h>

#include "storage.h"

/* ---------------------------------------------------------------------------------
 * Entries
 * --------------------------------------------------------------------------------- */
int cairn__life_get(cairn_env *e, MDB_txn *txn, const uint8_t *key, size_t klen, cairn_life *out,
                    int *found) {
    MDB_val k = {klen, (void *)key}, v;
    const uint8_t *p;
    int rc;

    *found = 0;
    if (!e->smeta) return CAIRN_OK; /* an older store opened read-only: no entries */
    rc = mdb_get(txn, e->smeta, &k, &v);
    if (rc == MDB_NOTFOUND) return CAIRN_OK;
    if (rc) return cairn__mdb_fail(rc, "read stream lifecycle");
    if (v.mv_size != CAIRN__SMETA_VAL)
        return cairn__fail(CAIRN_ECORRUPT, "corrupt lifecycle entry");
    p = v.mv_data;
    out->flags = cairn__get_be32(p);
    out->max_count = (int64_t)cairn__get_be64(p + 8);
    out->max_age = (int64_t)cairn__get_be64(p + 16);
    out->truncate_before = (int64_t)cairn__get_be64(p + 24);
    out->first = (int64_t)cairn__get_be64(p + 32);
    out->kept = (int64_t)cairn__get_be64(p + 40);
    *found = 1;
    return CAIRN_OK;
}

static int life_put(cairn_env *e, MDB_txn *txn, const cairn_slice *stream, const cairn_life *l) {
    uint8_t key[CAIRN_STREAM_KEY_MAX], b[CAIRN__SMETA_VAL];
    MDB_val k = {cairn__stream_key(stream->ptr, stream->len, key), key}, v = {sizeof b, b};
    int rc;
    if (!e->smeta) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    memset(b, 0, sizeof b);
    cairn__put_be32(b, l->flags);
    cairn__put_be64(b + 8, (uint64_t)l->max_count);
    cairn__put_be64(b + 16, (uint64_t)l->max_age);
    cairn__put_be64(b + 24, (uint64_t)l->truncate_before);
    cairn__put_be64(b + 32, (uint64_t)l->first);
    cairn__put_be64(b + 40, (uint64_t)l->kept);
    rc = mdb_put(txn, e->smeta, &k, &v, 0);
    if (rc == MDB_MAP_FULL) return CAIRN__EMAPFULL;
    return rc ? cairn__mdb_fail(rc, "write stream lifecycle") : CAIRN_OK;
}

/* The entry of a stream that had none: no limits, nothing removed. */
static void life_init(cairn_life *l, int64_t version) {
    memset(l, 0, sizeof *l);
    l->max_count = l->max_age = l->truncate_before = -1;
    l->kept = version;
}

/* Stores the entry of `stream` (as looked up in si) and flags its `streams` entry. */
static int life_store(cairn_env *e, MDB_txn *txn, const cairn_slice *stream,
                      cairn_stream_info *si) {
    int rc;
    if ((rc = life_put(e, txn, stream, &si->life))) return rc;
    if (si->exists && !(si->flags & CAIRN__SF_LIFE)) {
        si->flags |= CAIRN__SF_LIFE;
        if ((rc = cairn__stream_put(e, txn, stream, si)))
            return rc == MDB_MAP_FULL ? CAIRN__EMAPFULL : cairn__mdb_fail(rc, "write stream");
    }
    si->has_life = 1;
    return CAIRN_OK;
}

int cairn__life_after_write(cairn_store *s, MDB_txn *txn, const cairn_slice *stream,
                            const cairn_stream_info *si) {
    cairn_life l = si->life;
    if (l.max_count < 0) return CAIRN_OK; /* nothing moves with the version */
    if (si->version + 1 - l.max_count > l.first) l.first = si->version + 1 - l.max_count;
    l.kept = si->version;
    return life_put(s->env, txn, stream, &l);
}

/* ---------------------------------------------------------------------------------
 * The read-time view over the log
 * --------------------------------------------------------------------------------- */
int cairn__life_view_begin(cairn_env *e, MDB_txn *txn, cairn_life_view *v) {
    MDB_stat st;
    int rc;
    v->on = 0;
    v->name_len = SIZE_MAX;
    if (!e->smeta) return CAIRN_OK;
    if ((rc = mdb_stat(txn, e->smeta, &st))) return cairn__mdb_fail(rc, "read stream lifecycle");
    v->on = st.ms_entries != 0;
    if (v->on) v->now = cairn__now_ns();
    return CAIRN_OK;
}

int cairn__life_view_hides(cairn_env *e, MDB_txn *txn, cairn_life_view *v, const cairn_event *ev) {
    if (!v->on) return 0;
    if (ev->stream.len != v->name_len || memcmp(ev->stream.ptr, v->name, ev->stream.len) != 0) {
        uint8_t key[CAIRN_STREAM_KEY_MAX];
        size_t klen = cairn__stream_key(ev->stream.ptr, ev->stream.len, key);
        int rc = cairn__life_get(e, txn, key, klen, &v->life, &v->has);
        if (rc) return rc;
        if (ev->stream.len > sizeof v->name) return v->has; /* cannot be: names are <= 1 KiB */
        memcpy(v->name, ev->stream.ptr, ev->stream.len);
        v->name_len = ev->stream.len;
    }
    return v->has && cairn__life_hides(&v->life, ev->version, ev->timestamp, v->now);
}

/* ---------------------------------------------------------------------------------
 * The `$lifecycle` stream
 * --------------------------------------------------------------------------------- */
int cairn__lifecycle_append(cairn_store *s, MDB_txn *txn, const char *type, const char *json_data,
                            size_t json_len, uint64_t *position) {
    cairn_event_in ev;
    cairn_append_req q;
    cairn_append_result res;
    const cairn_hooks *hk = s->env->hooks;
    int rc;

    memset(&ev, 0, sizeof ev);
    ev.type.ptr = type, ev.type.len = strlen(type);
    ev.data.ptr = json_data, ev.data.len = json_len;
    ev.schema = 1;
    q.stream.ptr = CAIRN__LIFECYCLE, q.stream.len = sizeof CAIRN__LIFECYCLE - 1;
    q.expected = CAIRN_ANY;
    q.events = &ev, q.nevents = 1;
    if ((rc = cairn__write_requests(s, txn, &q, 1, &res, CAIRN__W_SYSTEM))) return rc;
    /* a normal event: inline projections whose source names `$lifecycle` see it */
    if (hk && hk->after_append && (rc = hk->after_append(s, txn, &q, 1, &res))) return rc;
    if (position) *position = res.position;
    return CAIRN_OK;
}

/* Dumps `o` (stolen) as compact JSON into a malloc'd string. */
static int json_text(json_t *o, char **out) {
    *out = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return *out ? CAIRN_OK : cairn__fail(CAIRN_ENOMEM, "out of memory");
}

static json_t *limit_json(int64_t x) { return x < 0 ? json_null() : json_integer(x); }

static int stream_arg(const char *stream, size_t len) {
    if (!stream) return cairn__fail(CAIRN_EINVAL, "stream: NULL");
    return cairn__check_stream(stream, len, "stream");
}

static int deleted(const char *stream, size_t len) {
    return cairn__fail(CAIRN_EDELETED, "stream %.*s was deleted (hard delete)",
                       (int)(len > 200 ? 200 : len), stream);
}

/* The first version that max_age leaves (as of now) at or after l->first: the walk stops at
 * the first event young enough (timestamps do not go back along a stream). */
static int aged_first(cairn_env *e, MDB_txn *txn, const cairn_stream_info *si, int64_t *out) {
    MDB_cursor *cs = NULL;
    uint8_t sk[8], vb[16];
    MDB_val k = {8, sk}, v = {16, vb};
    int64_t now = cairn__now_ns();
    int rc;

    *out = si->life.first;
    if (si->life.max_age < 0 || !si->exists) return CAIRN_OK;
    if ((rc = mdb_cursor_open(txn, e->sidx, &cs))) return cairn__mdb_fail(rc, "read stream");
    cairn__put_be64(sk, si->sid);
    cairn__put_be64(vb, (uint64_t)(si->life.first > 0 ? si->life.first : 0));
    memset(vb + 8, 0, 8);
    rc = mdb_cursor_get(cs, &k, &v, MDB_GET_BOTH_RANGE);
    while (rc == 0) {
        uint8_t pk[8];
        MDB_val lk = {8, pk}, lv;
        cairn_event ev;
        int64_t ver = (int64_t)cairn__get_be64(v.mv_data);
        memcpy(pk, (uint8_t *)v.mv_data + 8, 8);
        if ((rc = mdb_get(txn, e->log, &lk, &lv))) break;
        if ((rc = cairn__record_decode(lv.mv_data, lv.mv_size, cairn__get_be64(pk), &ev))) goto out;
        if (!cairn__life_hides(&si->life, ver, ev.timestamp, now)) break;
        *out = ver + 1;
        rc = mdb_cursor_get(cs, &k, &v, MDB_NEXT_DUP);
    }
    rc = rc == 0 || rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "read stream");
out:
    mdb_cursor_close(cs);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * delete_stream
 * --------------------------------------------------------------------------------- */
typedef struct del_args {
    cairn_store *s;
    cairn_slice stream;
    int64_t expected;
    int hard;
    uint64_t position;
} del_args;

static int delete_body(cairn_wtxn *w, void *ctx) {
    del_args *a = ctx;
    cairn_env *e = a->s->env;
    cairn_stream_info si;
    cairn_append_req q;
    char *json = NULL;
    int rc;

    memset(&q, 0, sizeof q);
    q.stream = a->stream, q.expected = a->expected;
    if ((rc = cairn__stream_lookup(e, w->txn, a->stream.ptr, a->stream.len, &si))) return rc;
    if (si.has_life && (si.life.flags & CAIRN__LF_DELETED))
        return deleted(a->stream.ptr, a->stream.len);
    if ((rc = cairn__check_expected(&q, &si, 0))) return rc;
    if (!si.has_life) life_init(&si.life, si.version);
    si.life.kept = si.version;
    if (a->hard) si.life.flags |= CAIRN__LF_DELETED;
    if (!a->hard && si.version + 1 > si.life.truncate_before)
        si.life.truncate_before = si.version + 1;
    if (si.version + 1 > si.life.first) si.life.first = si.version + 1;
    /* a soft delete of a stream without events changes nothing: no entry for it */
    if ((a->hard || si.version >= 0 || si.has_life) &&
        (rc = life_store(e, w->txn, &a->stream, &si)))
        return rc;
    if ((rc =
             json_text(json_pack("{s:s%,s:b,s:I}", "stream", (const char *)a->stream.ptr,
                                 a->stream.len, "hard", a->hard, "version", (json_int_t)si.version),
                       &json)))
        return rc;
    rc = cairn__lifecycle_append(a->s, w->txn, "$StreamDeleted", json, strlen(json), &a->position);
    free(json);
    w->notify = 1, w->head = a->position;
    return rc;
}

int cairn_delete_stream(cairn_store *s, const char *stream, size_t stream_len, int64_t expected,
                        int hard, uint64_t *position) {
    del_args a;
    int rc;

    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    if ((rc = stream_arg(stream, stream_len))) return rc;
    if (expected < 0 && expected != CAIRN_ANY && expected != CAIRN_NO_STREAM &&
        expected != CAIRN_STREAM_EXISTS)
        return cairn__fail(CAIRN_EINVAL, "expected_version: %lld is not a valid expectation",
                           (long long)expected);
    memset(&a, 0, sizeof a);
    a.s = s, a.stream.ptr = stream, a.stream.len = stream_len, a.expected = expected;
    a.hard = hard != 0;
    rc = cairn__write_txn(s->env, s->durability, delete_body, &a);
    if (rc == CAIRN_OK && position) *position = a.position;
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Stream metadata
 * --------------------------------------------------------------------------------- */
static int meta_check(const cairn_stream_meta *m) {
    if (!m) return cairn__fail(CAIRN_EINVAL, "meta: NULL");
    if (m->max_count != CAIRN_NO_LIMIT && m->max_count < 1)
        return cairn__fail(CAIRN_EINVAL, "max_count must be an int >= 1 or None, got %lld",
                           (long long)m->max_count);
    if (m->max_age != CAIRN_NO_LIMIT && m->max_age < 0)
        return cairn__fail(CAIRN_EINVAL, "max_age must be whole seconds >= 0 or None, got %lld",
                           (long long)m->max_age);
    if (m->truncate_before != CAIRN_NO_LIMIT && m->truncate_before < 0)
        return cairn__fail(CAIRN_EINVAL, "truncate_before must be a version >= 0 or None, got %lld",
                           (long long)m->truncate_before);
    return CAIRN_OK;
}

typedef struct meta_args {
    cairn_store *s;
    cairn_slice stream;
    cairn_stream_meta m;
    uint64_t position;
} meta_args;

static int meta_body(cairn_wtxn *w, void *ctx) {
    meta_args *a = ctx;
    cairn_env *e = a->s->env;
    cairn_stream_info si;
    int64_t first;
    char *json = NULL;
    int rc;

    if ((rc = cairn__stream_lookup(e, w->txn, a->stream.ptr, a->stream.len, &si))) return rc;
    if (si.has_life && (si.life.flags & CAIRN__LF_DELETED))
        return deleted(a->stream.ptr, a->stream.len);
    if (!si.has_life) life_init(&si.life, si.version);
    /* what the old limits hide stays hidden: max_age's share is fixed into `first` now */
    if ((rc = aged_first(e, w->txn, &si, &first))) return rc;
    si.life.first = first;
    si.life.max_count = a->m.max_count;
    si.life.max_age = a->m.max_age;
    si.life.truncate_before = a->m.truncate_before;
    si.life.kept = si.version;
    if (a->m.truncate_before > si.life.first) si.life.first = a->m.truncate_before;
    if (a->m.max_count > 0 && si.version + 1 - a->m.max_count > si.life.first)
        si.life.first = si.version + 1 - a->m.max_count;
    if ((rc = life_store(e, w->txn, &a->stream, &si))) return rc;
    if ((rc = json_text(json_pack("{s:s%,s:I,s:o,s:o,s:o}", "stream", (const char *)a->stream.ptr,
                                  a->stream.len, "version", (json_int_t)si.version, "max_count",
                                  limit_json(a->m.max_count), "max_age", limit_json(a->m.max_age),
                                  "truncate_before", limit_json(a->m.truncate_before)),
                        &json)))
        return rc;
    rc = cairn__lifecycle_append(a->s, w->txn, "$StreamMetadataSet", json, strlen(json),
                                 &a->position);
    free(json);
    w->notify = 1, w->head = a->position;
    return rc;
}

int cairn_set_stream_metadata(cairn_store *s, const char *stream, size_t stream_len,
                              const cairn_stream_meta *meta, uint64_t *position) {
    meta_args a;
    int rc;

    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    if ((rc = stream_arg(stream, stream_len)) || (rc = meta_check(meta))) return rc;
    memset(&a, 0, sizeof a);
    a.s = s, a.stream.ptr = stream, a.stream.len = stream_len, a.m = *meta;
    rc = cairn__write_txn(s->env, s->durability, meta_body, &a);
    if (rc == CAIRN_OK && position) *position = a.position;
    return rc;
}

int cairn_stream_metadata(cairn_store *s, const char *stream, size_t stream_len,
                          cairn_stream_meta *out) {
    MDB_txn *txn;
    cairn_stream_info si;
    int rc;

    cairn__clear_error();
    if (!out) return cairn__fail(CAIRN_EINVAL, "out: NULL");
    out->max_count = out->max_age = out->truncate_before = CAIRN_NO_LIMIT;
    if ((rc = cairn__store_check(s))) return rc;
    if (!stream) return cairn__fail(CAIRN_EINVAL, "stream: NULL");
    if ((rc = cairn__check_stream_name(stream, stream_len, "stream"))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    rc = cairn__stream_lookup(s->env, txn, stream, stream_len, &si);
    cairn__read_end(s->env, txn);
    if (rc == CAIRN_OK && si.has_life) {
        out->max_count = si.life.max_count;
        out->max_age = si.life.max_age;
        out->truncate_before = si.life.truncate_before;
    }
    return rc;
}
