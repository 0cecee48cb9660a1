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
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "storage.h"

#define RECLAIM_BATCH 4096 /* events removed per commit (LMDB caps the pages a txn dirties) */

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
                            cairn_stream_info *si) {
    cairn_life *l = &si->life;
    uint64_t n = 0;
    int more, rc;
    if (l->max_count >= 0 && si->version + 1 - l->max_count > l->first) {
        l->first = si->version + 1 - l->max_count;
        l->kept = si->version;
        if ((rc = life_put(s->env, txn, stream, l))) return rc;
    }
    /* reclaimed at the next write to the stream (spec 6), a batch at most */
    return cairn__life_reclaim(s, txn, stream, si, RECLAIM_BATCH, &n, &more);
}

/* ---------------------------------------------------------------------------------
 * The read-time view over the log
 * --------------------------------------------------------------------------------- */
int cairn__life_on(cairn_env *e, MDB_txn *txn, int rdonly, int *on) {
    MDB_stat st;
    uint64_t id = mdb_txn_id(txn), seen;
    int rc;
    *on = 0;
    if (!e->smeta) return CAIRN_OK;
    /* a snapshot is immutable: the answer for its txn id holds for every reader of it (a
     * write txn's id is the one its commit will have, and it changes what it reads) */
    seen = __atomic_load_n(&e->life_seen, __ATOMIC_RELAXED);
    if (rdonly && id && seen >> 1 == id) {
        *on = (int)(seen & 1);
        return CAIRN_OK;
    }
    if ((rc = mdb_stat(txn, e->smeta, &st))) return cairn__mdb_fail(rc, "read stream lifecycle");
    *on = st.ms_entries != 0;
    if (rdonly)
        __atomic_store_n(&e->life_seen, ((uint64_t)id << 1) | (uint64_t)*on, __ATOMIC_RELAXED);
    return CAIRN_OK;
}

int cairn__life_event_hidden(cairn_env *e, MDB_txn *txn, const cairn_event *ev) {
    uint8_t key[CAIRN_STREAM_KEY_MAX];
    size_t klen = cairn__stream_key(ev->stream.ptr, ev->stream.len, key);
    cairn_life l;
    int found, rc = cairn__life_get(e, txn, key, klen, &l, &found);
    if (rc) return rc;
    return found && cairn__life_hides(&l, ev->version, ev->timestamp, cairn__now_ns());
}

int cairn__life_view_begin(cairn_env *e, MDB_txn *txn, int rdonly, cairn_life_view *v) {
    int rc;
    if (++v->gen == 0) { /* wrapped: no entry may look current */
        memset(v->seen, 0, sizeof v->seen);
        v->gen = 1;
    }
    v->nfew = 0;
    if ((rc = cairn__life_on(e, txn, rdonly, &v->on)) || !v->on) return rc;
    v->now = cairn__now_ns();
    { /* a few entries (the usual case: a few streams with limits) are read at once, and an
       * event's stream is found among them without a look-up */
        MDB_stat st;
        MDB_cursor *c;
        MDB_val k, d;
        size_t n = 0;
        if ((rc = mdb_stat(txn, e->smeta, &st)))
            return cairn__mdb_fail(rc, "read stream lifecycle");
        if (st.ms_entries > CAIRN__LIFE_FEW) return CAIRN_OK;
        if ((rc = mdb_cursor_open(txn, e->smeta, &c)))
            return cairn__mdb_fail(rc, "read stream lifecycle");
        rc = mdb_cursor_get(c, &k, &d, MDB_FIRST);
        while (rc == 0 && n < CAIRN__LIFE_FEW) {
            int found;
            if (k.mv_size > CAIRN_STREAM_KEY_INLINE) break; /* a long name: look-ups */
            if ((rc = cairn__life_get(e, txn, k.mv_data, k.mv_size, &v->few[n].life, &found)) ||
                !found)
                break;
            v->few[n].key = k.mv_data, v->few[n].klen = k.mv_size, n++;
            rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
        }
        mdb_cursor_close(c);
        if (rc == MDB_NOTFOUND)
            v->nfew = n; /* all of them: else the cache below serves */
        else if (rc < 0 && rc >= CAIRN_EINTERNAL && rc <= CAIRN_EINVAL)
            return rc;
    }
    return CAIRN_OK;
}

int cairn__life_view_hides(cairn_env *e, MDB_txn *txn, cairn_life_view *v, const cairn_event *ev) {
    cairn_life_seen *c;
    if (!v->on) return 0;
    if (v->nfew && ev->stream.len <= CAIRN_STREAM_KEY_INLINE) { /* a name is its own key */
        for (size_t i = 0; i < v->nfew; i++)
            if (v->few[i].klen == ev->stream.len &&
                memcmp(v->few[i].key, ev->stream.ptr, ev->stream.len) == 0)
                return cairn__life_hides(&v->few[i].life, ev->version, ev->timestamp, v->now);
        return 0;
    }
    c = &v->seen[XXH3_64bits(ev->stream.ptr, ev->stream.len) % CAIRN__LIFE_CACHE];
    if (c->gen != v->gen || c->len != ev->stream.len ||
        (c->name != ev->stream.ptr && memcmp(c->name, ev->stream.ptr, c->len) != 0)) {
        uint8_t key[CAIRN_STREAM_KEY_MAX];
        size_t klen = cairn__stream_key(ev->stream.ptr, ev->stream.len, key);
        int rc = cairn__life_get(e, txn, key, klen, &c->life, &c->has);
        if (rc) {
            c->gen = v->gen - 1;
            return rc;
        }
        c->name = ev->stream.ptr, c->len = ev->stream.len, c->gen = v->gen;
    }
    return c->has && cairn__life_hides(&c->life, ev->version, ev->timestamp, v->now);
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
    if ((rc = cairn__write_requests(s, txn, &q, NULL, 1, &res, 0))) return rc;
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
    uint64_t n = 0;
    int rc, more;

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
        ((rc = life_store(e, w->txn, &a->stream, &si)) ||
         (rc = cairn__life_reclaim(a->s, w->txn, &a->stream, &si, RECLAIM_BATCH, &n, &more))))
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
    uint64_t n = 0;
    int rc, more;

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
    if ((rc = life_store(e, w->txn, &a->stream, &si)) ||
        (rc = cairn__life_reclaim(a->s, w->txn, &a->stream, &si, RECLAIM_BATCH, &n, &more)))
        return rc;
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

/* ---------------------------------------------------------------------------------
 * Reclamation: removed events leave the file.  Each goes with every index entry naming it
 * (sidx, ids, the category/type/tag/correlation postings, comp), its position joins a run
 * of `holes`, and when it was the newest record the head is kept in `meta`.  Bounded per
 * transaction (LMDB caps the pages one txn may dirty); the rest is left for the next write
 * to the stream or cairn_maintain.
 * --------------------------------------------------------------------------------- */
#define MDB_OK(call)                                                                        \
    do {                                                                                    \
        int mrc_ = (call);                                                                  \
        if (mrc_ && mrc_ != MDB_NOTFOUND) {                                                 \
            rc = mrc_ == MDB_MAP_FULL ? CAIRN__EMAPFULL : cairn__mdb_fail(mrc_, "reclaim"); \
            goto out;                                                                       \
        }                                                                                   \
    } while (0)

/* One posting dup; a tag repeated on the event (one posting) is gone the second time. */
static int del_posting(cairn_env *e, MDB_txn *txn, int kind, const void *name, size_t len,
                       uint8_t posb[8]) {
    uint8_t kb[CAIRN_POST_KEY];
    MDB_val k = {sizeof kb, kb}, v = {8, posb};
    cairn__post_key(kind, name, len, kb);
    return mdb_del(txn, e->post, &k, &v);
}

/* Every id, posting and compensation entry of `ev` at `pos`; events of the index tail
 * (pos >= tail) have no id or posting entries yet (and never links). */
static int unindex(cairn_env *e, MDB_txn *txn, const cairn_event *ev, uint64_t pos, uint64_t tail) {
    uint8_t posb[8];
    cairn_slice cat, tag;
    size_t cur = 0;
    cairn_links l;
    int rc = CAIRN_OK;

    cairn__put_be64(posb, pos);
    if (!tail || pos < tail) {
        MDB_val ik = {16, (void *)ev->id}, iv;
        if (mdb_get(txn, e->ids, &ik, &iv) == 0 && iv.mv_size == 20 &&
            cairn__get_be64(iv.mv_data) == pos)
            MDB_OK(mdb_del(txn, e->ids, &ik, NULL));
        cat = cairn_category(ev->stream.ptr, ev->stream.len);
        MDB_OK(del_posting(e, txn, CAIRN_POST_CATEGORY, cat.ptr, cat.len, posb));
        MDB_OK(del_posting(e, txn, CAIRN_POST_TYPE, ev->type.ptr, ev->type.len, posb));
        while (cairn_event_tag(ev, &cur, &tag))
            MDB_OK(del_posting(e, txn, CAIRN_POST_TAG, tag.ptr, tag.len, posb));
    }
    if (ev->metadata.len && cairn__links_parse(ev->metadata.ptr, ev->metadata.len, &l)) {
        if (l.corr) rc = del_posting(e, txn, CAIRN_POST_CORRELATION, l.corr, l.corr_len, posb);
        if ((rc == 0 || rc == MDB_NOTFOUND) && l.has_comp) {
            MDB_val ck = {16, l.comp}, cv;
            rc = mdb_get(txn, e->comp, &ck, &cv);
            if (rc == 0 && cv.mv_size == 8 && cairn__get_be64(cv.mv_data) == pos)
                rc = mdb_del(txn, e->comp, &ck, NULL);
        }
        cairn__links_free(&l);
        MDB_OK(rc);
        rc = CAIRN_OK;
    }
out:
    return rc;
}

int cairn__life_reclaim(cairn_store *s, MDB_txn *txn, const cairn_slice *stream,
                        cairn_stream_info *si, uint64_t budget, uint64_t *removed, int *more) {
    cairn_env *e = s->env;
    MDB_cursor *cs = NULL, *clog = NULL;
    uint8_t sk[8];
    MDB_val k = {8, sk}, v, lk, lv;
    uint64_t tail, head, last_key = 0, n = 0;
    int64_t now = cairn__now_ns(), last_ts = 0, top = -1;
    int rc = CAIRN_OK, mrc, newest = 0;

    *more = 0;
    if (!si->exists || !si->has_life) goto done;
    if ((rc = cairn__tail_start(e, txn, &tail)) || (rc = cairn__head(e, txn, &head))) goto done;
    if ((mrc = mdb_cursor_open(txn, e->sidx, &cs)) || (mrc = mdb_cursor_open(txn, e->log, &clog))) {
        rc = cairn__mdb_fail(mrc, "reclaim");
        goto out;
    }
    if ((mrc = mdb_cursor_get(clog, &lk, &lv, MDB_LAST)) == 0 && lk.mv_size == 8)
        last_key = cairn__get_be64(lk.mv_data);
    cairn__put_be64(sk, si->sid);
    for (;;) {
        cairn_event ev;
        uint8_t pk[8];
        uint64_t pos;
        int64_t ver;
        k.mv_size = 8, k.mv_data = sk;
        mrc = mdb_cursor_get(cs, &k, &v, MDB_SET); /* the oldest version left */
        if (mrc == 0) mrc = mdb_cursor_get(cs, &k, &v, MDB_FIRST_DUP);
        if (mrc == MDB_NOTFOUND) break;
        MDB_OK(mrc);
        if (v.mv_size != 16) {
            rc = cairn__fail(CAIRN_ECORRUPT, "stream index: malformed entry");
            goto out;
        }
        ver = (int64_t)cairn__get_be64(v.mv_data);
        pos = cairn__get_be64((uint8_t *)v.mv_data + 8);
        memcpy(pk, (uint8_t *)v.mv_data + 8, 8);
        lk.mv_size = 8, lk.mv_data = pk;
        if ((mrc = mdb_cursor_get(clog, &lk, &lv, MDB_SET_KEY)) == MDB_NOTFOUND) {
            rc = cairn__corrupt(pos, "the stream index points at a missing event");
            goto out;
        }
        MDB_OK(mrc);
        if ((rc = cairn__record_decode(lv.mv_data, lv.mv_size, pos, &ev))) goto out;
        if (!cairn__life_hides(&si->life, ver, ev.timestamp, now)) break; /* the rest stays */
        if (n == budget) {
            *more = 1;
            break;
        }
        /* indexes first, the record last: until the log is written, ev points into it */
        if ((rc = unindex(e, txn, &ev, pos, tail))) goto out;
        /* the chain keeps the removed record's hash, in its run of `holes` (chain.c) */
        if ((rc = cairn__chain_remove(e, txn, pos, lv.mv_data, lv.mv_size))) goto out;
        if (pos == last_key) newest = 1, last_ts = ev.timestamp;
        MDB_OK(mdb_cursor_del(cs, 0));
        MDB_OK(mdb_cursor_del(clog, 0));
        top = ver;
        n++;
    }
    if (n) {
        uint8_t rb[8];
        MDB_val rk = {7, (void *)"removed"}, rv = {8, rb};
        uint64_t total = 0;
        /* meta removed: events reclaimed ever, so that a verify running meanwhile knows its
         * counts went stale (verify.c) */
        if ((mrc = mdb_get(txn, e->meta, &rk, &rv)) == 0 && rv.mv_size == 8)
            total = cairn__get_be64(rv.mv_data);
        else if (mrc != MDB_NOTFOUND)
            MDB_OK(mrc ? mrc : MDB_CORRUPTED);
        cairn__put_be64(rb, total + n);
        rv.mv_size = 8, rv.mv_data = rb;
        MDB_OK(mdb_put(txn, e->meta, &rk, &rv, 0));
        if (top + 1 > si->life.first) si->life.first = top + 1; /* what max_age took too */
        si->life.kept = si->version;
        if ((rc = life_put(e, txn, stream, &si->life))) goto out;
        if (newest && (rc = cairn__head_keep(e, txn, head, last_ts))) goto out;
        if (e->hooks && e->hooks->stream_removed &&
            (rc = e->hooks->stream_removed(e, txn, si->sid)))
            goto out;
    }
out:
    if (clog) mdb_cursor_close(clog);
    if (cs) mdb_cursor_close(cs);
done:
    if (removed) *removed += n;
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Maintenance: every stream with an entry, reclaimed in commits of at most
 * RECLAIM_BATCH events.
 * --------------------------------------------------------------------------------- */
typedef struct maint_pos {
    uint8_t after[CAIRN_STREAM_KEY_MAX]; /* go on after this smeta key (len 0: at the start) */
    size_t after_len;
    int resume_same; /* ... or at it: its stream has more to reclaim */
    uint64_t streams, removed;
    int done;
} maint_pos;

/* `at` is where the committed work stands; a body computes `next`, taken once it commits
 * (a map-full rerun of the body starts from `at` again). */
typedef struct maint_args {
    cairn_store *s;
    maint_pos at, next;
} maint_args;

static int maint_body(cairn_wtxn *w, void *ctx) {
    maint_args *a = ctx;
    cairn_env *e = a->s->env;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    uint64_t budget = RECLAIM_BATCH, removed = 0, streams = 0;
    int rc = CAIRN_OK, mrc, more = 0;
    uint8_t last[CAIRN_STREAM_KEY_MAX];
    size_t last_len = a->at.after_len;

    memcpy(last, a->at.after, last_len);
    a->next = a->at;
    w->skip = 1; /* nothing to write unless something is reclaimed */
    if (!e->smeta) {
        a->next.done = 1;
        return CAIRN_OK;
    }
    if ((mrc = mdb_cursor_open(w->txn, e->smeta, &c))) return cairn__mdb_fail(mrc, "maintain");
    if (last_len) {
        k.mv_size = last_len, k.mv_data = last;
        mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (mrc == 0 && !a->at.resume_same && k.mv_size == last_len &&
            memcmp(k.mv_data, last, last_len) == 0)
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    } else {
        mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    while (mrc == 0 && budget) {
        uint8_t key[CAIRN_STREAM_KEY_MAX];
        size_t klen = k.mv_size;
        MDB_val sk, sv;
        uint64_t n = 0;
        if (klen > sizeof key) {
            rc = cairn__fail(CAIRN_ECORRUPT, "corrupt lifecycle entry key");
            goto out;
        }
        memcpy(key, k.mv_data, klen);
        sk.mv_size = klen, sk.mv_data = key;
        mrc = mdb_get(w->txn, e->streams, &sk, &sv); /* the name, if it has events */
        if (mrc == 0 && sv.mv_size > CAIRN_STREAM_VAL_HEADER) {
            char name[CAIRN_MAX_STREAM];
            cairn_slice nm = {name, sv.mv_size - CAIRN_STREAM_VAL_HEADER};
            cairn_stream_info si;
            if (nm.len > sizeof name) {
                rc = cairn__fail(CAIRN_ECORRUPT, "corrupt stream entry");
                goto out;
            }
            memcpy(name, (uint8_t *)sv.mv_data + CAIRN_STREAM_VAL_HEADER, nm.len);
            mdb_cursor_close(c), c = NULL; /* the reclaim writes smeta */
            if ((rc = cairn__stream_lookup(e, w->txn, name, nm.len, &si)) ||
                (rc = cairn__life_reclaim(a->s, w->txn, &nm, &si, budget, &n, &more)))
                goto out;
        } else if (mrc != MDB_NOTFOUND && mrc) {
            rc = cairn__mdb_fail(mrc, "maintain");
            goto out;
        }
        removed += n, budget -= n;
        memcpy(last, key, klen), last_len = klen;
        if (more) break;
        streams++;
        if (!c && (mrc = mdb_cursor_open(w->txn, e->smeta, &c))) {
            rc = cairn__mdb_fail(mrc, "maintain");
            goto out;
        }
        k.mv_size = klen, k.mv_data = key;
        mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (mrc == 0 && k.mv_size == klen && memcmp(k.mv_data, key, klen) == 0)
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (mrc && mrc != MDB_NOTFOUND) {
        rc = cairn__mdb_fail(mrc, "maintain");
        goto out;
    }
out:
    if (c) mdb_cursor_close(c);
    if (rc) return rc;
    w->skip = removed == 0;
    memcpy(a->next.after, last, last_len), a->next.after_len = last_len;
    a->next.resume_same = more;
    a->next.streams += streams, a->next.removed += removed;
    a->next.done = !more && mrc == MDB_NOTFOUND;
    return CAIRN_OK;
}

int cairn_maintain(cairn_store *s, cairn_maintain_report *report, cairn_progress_fn progress,
                   void *ctx) {
    maint_args *a;
    MDB_txn *txn;
    MDB_stat st;
    uint64_t total = 0;
    int rc;

    cairn__clear_error();
    if (report) memset(report, 0, sizeof *report);
    if ((rc = cairn__store_check(s))) return rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    if (!(a = calloc(1, sizeof *a))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    a->s = s;
    if (s->env->smeta) {
        if ((rc = cairn__read_begin(s->env, &txn))) goto out;
        rc = mdb_stat(txn, s->env->smeta, &st);
        cairn__read_end(s->env, txn);
        if (rc) {
            rc = cairn__mdb_fail(rc, "maintain");
            goto out;
        }
        total = st.ms_entries;
    }
    while (!a->at.done) {
        if ((rc = cairn__write_txn(s->env, s->durability, maint_body, a))) goto out;
        a->at = a->next;
        if (progress) progress(ctx, a->at.streams, total);
    }
out:
    if (report) report->streams = a->at.streams, report->removed = a->at.removed;
    free(a);
    return rc;
}
