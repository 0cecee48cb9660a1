/*
 * append.c -- writing events: validation, the expected-version check, idempotent
 * retries, and the one LMDB write transaction that stores records and every index.
 */
#include <stdio.h>
#include <stdlib.h>

#include "storage.h"

#define EMAPFULL CAIRN__EMAPFULL

static const MDB_val K_SID = {3, (void *)"sid"};
static const MDB_val K_TAIL = {4, (void *)"tail"};

static int validate_event(const cairn_event_in *ev, const cairn_slice *stream, size_t r, size_t i) {
    cairn__err()->request = r;
    if (cairn__event_check(ev)) { /* the rules of spec 1 (base/check.c), and which event */
        char m[sizeof cairn__err()->message];
        snprintf(m, sizeof m, "%s", cairn__err()->message);
        return cairn__fail(CAIRN_EINVAL, "%.480s (event %zu)", m, i);
    }
    cairn_rec_extra x = {ev->subject.ptr ? 1 : 0, ev->subject};
    size_t sealed = ev->subject.ptr ? CAIRN_AEAD_OVERHEAD : 0; /* the sealed data's growth */
    if (cairn__record_limit_size(stream, ev, &x) + sealed > CAIRN_MAX_RECORD)
        return cairn__fail(CAIRN_ETOOBIG, "data: event %zu is larger than %u bytes", i,
                           CAIRN_MAX_RECORD);
    return CAIRN_OK;
}

int cairn__validate_requests(const cairn_append_req *reqs, size_t nreqs) {
    int rc;
    if (!reqs || nreqs == 0) return cairn__fail(CAIRN_EINVAL, "requests: none given");
    for (size_t r = 0; r < nreqs; r++) {
        const cairn_append_req *q = &reqs[r];
        cairn__err()->request = r;
        if (!q->stream.ptr) return cairn__fail(CAIRN_EINVAL, "stream: NULL");
        if ((rc = cairn__check_stream(q->stream.ptr, q->stream.len, "stream"))) return rc;
        if (q->expected < 0 && q->expected != CAIRN_ANY && q->expected != CAIRN_NO_STREAM &&
            q->expected != CAIRN_STREAM_EXISTS)
            return cairn__fail(CAIRN_EINVAL, "expected_version: %lld is not a valid expectation",
                               (long long)q->expected);
        if (!q->events || q->nevents == 0)
            return cairn__fail(CAIRN_EINVAL, "events: must not be empty");
        for (size_t i = 0; i < q->nevents; i++)
            if ((rc = validate_event(&q->events[i], &q->stream, r, i))) return rc;
    }
    return CAIRN_OK;
}

static int get_u64(MDB_txn *txn, MDB_dbi dbi, const MDB_val *key, uint64_t *out) {
    MDB_val v;
    int rc = mdb_get(txn, dbi, (MDB_val *)key, &v);
    *out = 0;
    if (rc == MDB_NOTFOUND) return CAIRN_OK;
    if (rc) return cairn__mdb_fail(rc, "read meta");
    if (v.mv_size != 8) return cairn__fail(CAIRN_ECORRUPT, "corrupt meta entry");
    *out = cairn__get_be64(v.mv_data);
    return CAIRN_OK;
}

static int put_u64(MDB_txn *txn, MDB_dbi dbi, const MDB_val *key, uint64_t x) {
    uint8_t b[8];
    MDB_val v = {8, b};
    cairn__put_be64(b, x);
    return mdb_put(txn, dbi, (MDB_val *)key, &v, 0);
}

static int duplicate(uint64_t pos, const uint8_t *id) {
    char s[37];
    cairn__uuid_format(id, s);
    cairn__err()->position = pos;
    return cairn__fail(CAIRN_EDUPLICATE, "event id %s was already written at position %llu", s,
                       (unsigned long long)pos);
}

/* An id that an earlier append of this same write holds (at or after txn_first): that
 * position was never committed, so no message may cite it. */
static int duplicate_here(const uint8_t *id) {
    char s[37];
    cairn__uuid_format(id, s);
    return cairn__fail(CAIRN_EDUPLICATE, "event id %s appears twice in this transaction", s);
}

/* A request whose first id is already stored is a retry only if it carries exactly the
 * ids of one earlier call, in order, to the same stream; then it yields that call's
 * result.  Anything else is a duplicate; so is an id an earlier request of this same write
 * (positions from txn_first) holds, which nothing committed yet. */
static int check_retry(cairn_env *e, MDB_txn *txn, const cairn_append_req *q, uint64_t txn_first,
                       cairn_append_result *res, int *retry) {
    uint64_t pos, first, count, p, f, c;
    cairn_event ev;
    int rc, found;

    *retry = 0;
    if (!q->events[0].has_id) return CAIRN_OK; /* ids assigned here cannot repeat */
    if ((rc = cairn__id_lookup(e, txn, q->events[0].id, &found, &pos, &first, &count))) return rc;
    if (!found) return CAIRN_OK;
    if (pos >= txn_first) return duplicate_here(q->events[0].id);
    if (pos != first || count != q->nevents) return duplicate(pos, q->events[0].id);
    for (size_t i = 1; i < q->nevents; i++) {
        if (!q->events[i].has_id) return duplicate(pos, q->events[0].id);
        if ((rc = cairn__id_lookup(e, txn, q->events[i].id, &found, &p, &f, &c))) return rc;
        if (!found || p != first + i) return duplicate(pos, q->events[0].id);
    }
    if ((rc = cairn__call_result(e, txn, first, count, res, &ev))) return rc;
    if (ev.stream.len != q->stream.len || memcmp(ev.stream.ptr, q->stream.ptr, q->stream.len))
        return duplicate(pos, q->events[0].id);
    *retry = 1;
    return CAIRN_OK;
}

int cairn__call_result(cairn_env *e, MDB_txn *txn, uint64_t first, uint64_t count,
                       cairn_append_result *res, cairn_event *last) {
    uint8_t kb[8];
    MDB_val lk = {8, kb}, lv;
    int rc;
    cairn__put_be64(kb, first + count - 1);
    if ((rc = mdb_get(txn, e->log, &lk, &lv))) return cairn__mdb_fail(rc, "read log");
    if ((rc = cairn__record_decode(lv.mv_data, lv.mv_size, first + count - 1, last))) return rc;
    res->version = last->version;
    res->position = first + count - 1;
    res->first_position = first;
    return CAIRN_OK;
}

int cairn__check_expected(const cairn_append_req *q, const cairn_stream_info *si, size_t r) {
    int ok;
    switch (q->expected) {
    case CAIRN_ANY: ok = 1; break;
    case CAIRN_NO_STREAM: ok = si->version == -1; break;
    case CAIRN_STREAM_EXISTS: ok = si->version >= 0; break;
    default: ok = si->version == q->expected; break;
    }
    if (ok) return CAIRN_OK;
    cairn__err()->request = r;
    cairn__err()->expected = q->expected;
    cairn__err()->actual = si->version;
    /* A marker is named, not printed as its code ("expected version -4" said nothing). */
    if (q->expected == CAIRN_NO_STREAM || q->expected == CAIRN_STREAM_EXISTS)
        return cairn__fail(CAIRN_EVERSION, "stream %.*s: expected %s, actual version %lld",
                           (int)(q->stream.len > 200 ? 200 : q->stream.len),
                           (const char *)q->stream.ptr,
                           q->expected == CAIRN_NO_STREAM ? "no stream (NO_STREAM)"
                                                          : "an existing stream (STREAM_EXISTS)",
                           (long long)si->version);
    return cairn__fail(CAIRN_EVERSION, "stream %.*s: expected version %lld, actual %lld",
                       (int)(q->stream.len > 200 ? 200 : q->stream.len),
                       (const char *)q->stream.ptr, (long long)q->expected, (long long)si->version);
}

#define MDB_TRY(call, what)                  \
    do {                                     \
        int rc_ = (call);                    \
        if (rc_ == MDB_MAP_FULL) {           \
            rc = EMAPFULL;                   \
            goto out;                        \
        }                                    \
        if (rc_) {                           \
            rc = cairn__mdb_fail(rc_, what); \
            goto out;                        \
        }                                    \
    } while (0)

/* Cursors of one write, one per index so that each stays on its own leaf page. */
typedef struct writer {
    MDB_cursor *log, *sidx, *ids, *cat, *type, *tag;
    uint8_t last_id[16];        /* the largest key in `ids`: larger ids can use MDB_APPEND */
    uint8_t *scratch;           /* room for 16 bytes per event of the largest request */
    int tail;                   /* this write goes to the index tail: no id or posting entries */
    uint8_t chain[CAIRN_CHAIN]; /* the chain hash of the last position written */
    cairn_sealer seal;          /* keys and buffer for events with a subject (keys.c) */
    uint64_t txn_first;         /* the first position of this write: later ones are not committed */
} writer;

#define TYPE_GROUPS 8 /* distinct types per request whose postings are put in one go */

/* Puts `count` sorted 8-byte (or 16-byte) values under one key in a single cursor
 * operation: LMDB finds the key once and appends every dup. */
static int put_multiple(MDB_cursor *c, const void *key, size_t klen, uint8_t *vals, size_t vsize,
                        size_t count) {
    MDB_val k = {klen, (void *)key}, d[2];
    d[0].mv_size = vsize, d[0].mv_data = vals;
    d[1].mv_size = count, d[1].mv_data = NULL;
    return mdb_cursor_put(c, &k, d, MDB_MULTIPLE | MDB_APPENDDUP);
}

/* id -> (position, first position of its call, call size); ids larger than any stored one
 * (the usual UUIDv7) go in with MDB_APPEND.  MDB_KEYEXIST: the id is stored already, at
 * *at. */
static int put_id(writer *w, const uint8_t *id, uint64_t pos, uint64_t first, uint32_t count,
                  uint64_t *at) {
    uint8_t idv[20];
    MDB_val k = {16, (void *)id}, v = {20, idv};
    int rc;
    cairn__put_be64(idv, pos);
    cairn__put_be64(idv + 8, first);
    cairn__put_be32(idv + 16, count);
    if (memcmp(id, w->last_id, 16) > 0) {
        if ((rc = mdb_cursor_put(w->ids, &k, &v, MDB_APPEND)) == 0) memcpy(w->last_id, id, 16);
    } else {
        rc = mdb_cursor_put(w->ids, &k, &v, MDB_NOOVERWRITE);
    }
    if (rc == MDB_KEYEXIST) *at = v.mv_size >= 8 ? cairn__get_be64(v.mv_data) : 0;
    return rc;
}

static int put_posting(MDB_cursor *c, int kind, const void *name, size_t len, uint8_t *posb) {
    uint8_t kb[CAIRN_POST_KEY];
    MDB_val k = {CAIRN_POST_KEY, kb}, v = {8, posb};
    int rc;
    cairn__post_key(kind, name, len, kb);
    rc = mdb_cursor_put(c, &k, &v, MDB_APPENDDUP);
    /* KEYEXIST: the same tag twice on one event (or two names sharing a digest). */
    return rc == MDB_KEYEXIST ? 0 : rc;
}

static int same_type(const cairn_event_in *a, const cairn_event_in *b) {
    return a->type.len == b->type.len &&
        (a->type.ptr == b->type.ptr || memcmp(a->type.ptr, b->type.ptr, a->type.len) == 0);
}

/* Type postings of one request: the first TYPE_GROUPS distinct types get one multi-put
 * each; any further type is put event by event. */
static int put_types(writer *w, const cairn_append_req *q, uint64_t first) {
    const cairn_event_in *groups[TYPE_GROUPS];
    size_t ng = 0;
    int rc;
    for (size_t i = 0; i < q->nevents; i++) {
        size_t g;
        for (g = 0; g < ng && !same_type(groups[g], &q->events[i]); g++) {}
        if (g == ng && ng < TYPE_GROUPS) groups[ng++] = &q->events[i];
    }
    for (size_t g = 0; g < ng; g++) {
        uint8_t kb[CAIRN_POST_KEY];
        size_t n = 0;
        for (size_t i = 0; i < q->nevents; i++)
            if (same_type(groups[g], &q->events[i]))
                cairn__put_be64(w->scratch + 8 * n++, first + i);
        cairn__post_key(CAIRN_POST_TYPE, groups[g]->type.ptr, groups[g]->type.len, kb);
        if ((rc = put_multiple(w->type, kb, sizeof kb, w->scratch, 8, n))) return rc;
    }
    if (ng < TYPE_GROUPS) return 0;
    for (size_t i = 0; i < q->nevents; i++) {
        size_t g;
        uint8_t posb[8];
        for (g = 0; g < ng && !same_type(groups[g], &q->events[i]); g++) {}
        if (g < ng) continue;
        cairn__put_be64(posb, first + i);
        if ((rc = put_posting(w->type, CAIRN_POST_TYPE, q->events[i].type.ptr,
                              q->events[i].type.len, posb)))
            return rc;
    }
    return 0;
}

/* Metadata that links events (cairn__links_parse): correlation_id (indexed for rollback) and
 * compensates (the compensated event, which can be compensated only once). */
static int index_metadata(cairn_env *e, writer *w, const cairn_event_in *ev, uint8_t *posb,
                          size_t r) {
    cairn_links l;
    int rc = CAIRN_OK;
    if (!cairn__links_parse(ev->metadata.ptr, ev->metadata.len, &l)) return CAIRN_OK;
    if (l.corr) {
        int prc = put_posting(w->tag, CAIRN_POST_CORRELATION, l.corr, l.corr_len, posb);
        if (prc == MDB_MAP_FULL)
            rc = EMAPFULL;
        else if (prc)
            rc = cairn__mdb_fail(prc, "write correlation index");
    }
    if (!rc && l.has_comp) {
        MDB_val k = {16, l.comp}, val = {8, posb};
        int prc = mdb_put(mdb_cursor_txn(w->log), e->comp, &k, &val, MDB_NOOVERWRITE);
        if (prc == MDB_KEYEXIST) {
            char id[37];
            cairn__uuid_format(l.comp, id);
            cairn__err()->request = r;
            cairn__err()->position = cairn__get_be64(val.mv_data);
            rc = cairn__fail(CAIRN_EALREADY, "event %s was already compensated at position %llu",
                             id, (unsigned long long)cairn__get_be64(val.mv_data));
        } else if (prc == MDB_MAP_FULL) {
            rc = EMAPFULL;
        } else if (prc) {
            rc = cairn__mdb_fail(prc, "write compensation index");
        }
    }
    cairn__links_free(&l);
    return rc;
}

/* Writes one request's events: ids, records, then the stream, category and type indexes
 * in multi-puts.  *head and si->version advance. */
static int write_request(cairn_env *e, writer *w, const cairn_append_req *q, size_t r,
                         cairn_stream_info *si, uint64_t *head, int64_t ts,
                         cairn_append_result *res) {
    cairn_slice cat = cairn_category(q->stream.ptr, q->stream.len);
    uint64_t first = *head + 1;
    uint8_t sidb[8], kb[CAIRN_POST_KEY];
    int rc = CAIRN_OK, keep;
    MDB_val k, v;

    (void)e;
    res->first_position = first;
    for (size_t i = 0; i < q->nevents; i++) {
        const cairn_event_in *ev = &q->events[i], *rec;
        cairn_event_in sealed;
        cairn_rec_extra x, *xp;
        uint8_t posb[8], idb[16];
        const uint8_t *id = ev->id;
        uint64_t pos = first + i, at;
        int prc;

        if (!ev->has_id) cairn_uuid7(idb), id = idb;
        cairn__put_be64(posb, pos);

        /* id -> position; an id already present is a duplicate (in the index tail:
         * check_retry found no earlier event with this id) */
        prc = w->tail ? 0 : put_id(w, id, pos, first, (uint32_t)q->nevents, &at);
        if (prc == MDB_KEYEXIST) {
            cairn__err()->request = r;
            if (at >= first) /* written a moment ago by this very call: nothing is kept */
                return cairn__fail(CAIRN_EDUPLICATE,
                                   "event %zu has the id of an earlier event of the same call", i);
            if (at >= w->txn_first) return duplicate_here(id); /* an earlier append of it */
            return duplicate(at, id);
        }
        MDB_TRY(prc, "write id index");

        /* data with a subject is sealed with the subject's key first (keys.c; spec 6) */
        if (ev->subject.ptr) {
            if ((rc = cairn__seal_event(e, mdb_cursor_txn(w->log), &w->seal, ev, id, pos, &sealed,
                                        &x.key_id)))
                goto out;
            x.subject = ev->subject;
            rec = &sealed, xp = &x;
        } else {
            rec = ev, xp = NULL;
        }
        /* the record, written in place into the page LMDB reserves for it */
        k.mv_size = 8, k.mv_data = posb;
        /* the chain hash is stored in the request's last record and every 64th position
         * (FORMAT.md "The hash chain"): a hash never takes more than 64 records to find */
        keep = i + 1 == q->nevents || (pos & 63) == 0;
        v.mv_size = cairn__record_size(&q->stream, rec, xp, si->version + 1 + (int64_t)i, keep);
        v.mv_data = NULL;
        MDB_TRY(mdb_cursor_put(w->log, &k, &v, MDB_APPEND | MDB_RESERVE), "write log");
        cairn__record_write(v.mv_data, &q->stream, rec, xp, id, pos, si->version + 1 + (int64_t)i,
                            ts, keep, w->chain, w->chain);

        if (w->tail) continue;
        for (size_t t = 0; t < ev->ntags; t++)
            MDB_TRY(put_posting(w->tag, CAIRN_POST_TAG, ev->tags[t].ptr, ev->tags[t].len, posb),
                    "write tag index");
        if (ev->metadata.len && (rc = index_metadata(e, w, ev, posb, r))) goto out;
    }

    cairn__put_be64(sidb, si->sid);
    for (size_t i = 0; i < q->nevents; i++) {
        cairn__put_be64(w->scratch + 16 * i, (uint64_t)(si->version + 1 + (int64_t)i));
        cairn__put_be64(w->scratch + 16 * i + 8, first + i);
    }
    MDB_TRY(put_multiple(w->sidx, sidb, 8, w->scratch, 16, q->nevents), "write stream index");
    if (w->tail) goto done;
    for (size_t i = 0; i < q->nevents; i++) cairn__put_be64(w->scratch + 8 * i, first + i);
    cairn__post_key(CAIRN_POST_CATEGORY, cat.ptr, cat.len, kb);
    MDB_TRY(put_multiple(w->cat, kb, sizeof kb, w->scratch, 8, q->nevents), "write category index");
    MDB_TRY(put_types(w, q, first), "write type index");
done:
    *head += q->nevents;
    si->version += (int64_t)q->nevents;
    res->version = si->version;
    res->position = *head;
out:
    return rc;
}

int cairn__stream_put(cairn_env *e, MDB_txn *txn, const cairn_slice *name,
                      const cairn_stream_info *si) {
    uint8_t skey[CAIRN_STREAM_KEY_MAX], *sval;
    MDB_val k, v;
    int rc;
    k.mv_size = cairn__stream_key(name->ptr, name->len, skey);
    k.mv_data = skey;
    v.mv_size = CAIRN_STREAM_VAL_HEADER + name->len;
    if ((rc = mdb_put(txn, e->streams, &k, &v, MDB_RESERVE))) return rc;
    sval = v.mv_data;
    cairn__put_be64(sval, si->sid);
    cairn__put_be32(sval + 8, si->flags);
    memcpy(sval + CAIRN_STREAM_VAL_HEADER, name->ptr, name->len);
    return 0;
}

/* Writes the id and posting entries of the tail's events (positions t..head), oldest
 * first, so that every posting list stays sorted; the tail is then empty. */
static int flush_tail(cairn_env *e, writer *w, MDB_txn *txn, uint64_t t) {
    MDB_cursor *c;
    MDB_val k, v;
    uint8_t kb[8];
    int rc;

    if ((rc = mdb_cursor_open(txn, e->log, &c))) return cairn__mdb_fail(rc, "open cursor");
    cairn__put_be64(kb, t);
    k.mv_size = 8, k.mv_data = kb;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        uint64_t pos = k.mv_size == 8 ? cairn__get_be64(k.mv_data) : 0, at;
        uint8_t posb[8];
        cairn_slice cat, tag;
        size_t cur = 0;
        cairn_event ev;
        int prc;

        if ((rc = cairn__record_decode(v.mv_data, v.mv_size, pos, &ev))) goto out;
        cairn__put_be64(posb, pos);
        prc = put_id(w, ev.id, pos, pos, 1, &at); /* the tail holds single-event calls */
        if (prc == MDB_KEYEXIST) { /* appends check the tail for ids: this is damage */
            cairn__err()->position = pos;
            rc = cairn__fail(CAIRN_ECORRUPT,
                             "position %llu: its id is indexed already (damaged index)",
                             (unsigned long long)pos);
            goto out;
        }
        if (prc) {
            rc = prc;
            goto out;
        }
        cat = cairn_category(ev.stream.ptr, ev.stream.len);
        if ((rc = put_posting(w->cat, CAIRN_POST_CATEGORY, cat.ptr, cat.len, posb))) goto out;
        if ((rc = put_posting(w->type, CAIRN_POST_TYPE, ev.type.ptr, ev.type.len, posb))) goto out;
        while (cairn_event_tag(&ev, &cur, &tag))
            if ((rc = put_posting(w->tag, CAIRN_POST_TAG, tag.ptr, tag.len, posb))) goto out;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) rc = mdb_del(txn, e->meta, (MDB_val *)&K_TAIL, NULL);
out:
    mdb_cursor_close(c);
    if (rc == MDB_MAP_FULL) return EMAPFULL;
    return rc > 0 ? cairn__mdb_fail(rc, "index the tail") : rc;
}

/* The head, the last timestamp and the chain hash of the head come from the log's last
 * record, so that a commit touches `meta` only when it creates a stream.  Otherwise (the
 * newest records were removed, the head is a format-1 record) cairn__chain_at finds the
 * hash; a format-1 store that was not upgraded yet (opened read-only first in this
 * process) is upgraded by this write. */
static int read_tail(cairn_env *e, MDB_txn *txn, MDB_cursor *clog, uint64_t *head, int64_t *last_ts,
                     uint8_t chain[CAIRN_CHAIN]) {
    MDB_val k, v;
    uint64_t pos = 0;
    int rc = mdb_cursor_get(clog, &k, &v, MDB_LAST), format;
    const uint8_t *stored = NULL;
    *head = 0, *last_ts = 0;
    if (rc == 0) {
        cairn_event ev;
        cairn_rec_info info;
        pos = k.mv_size == 8 ? cairn__get_be64(k.mv_data) : 0;
        if ((rc = cairn__record_decode_ex(v.mv_data, v.mv_size, pos, &ev, &info))) return rc;
        *last_ts = ev.timestamp;
        stored = info.chain;
    } else if (rc != MDB_NOTFOUND) {
        return cairn__mdb_fail(rc, "read log");
    }
    { /* the newest events may have been removed: their head and time are in meta */
        uint64_t kept;
        int64_t kept_ts;
        if ((rc = cairn__head_kept(e, txn, &kept, &kept_ts))) return rc;
        *head = kept > pos ? kept : pos;
        if (kept_ts > *last_ts) *last_ts = kept_ts;
    }
    /* an older store (opened read-only first by this process) is upgraded by this write:
     * its records are written in this format (one look-up in meta's hot page) */
    if ((rc = cairn__store_format(e, txn, &format))) return rc;
    if (format < CAIRN_STORE_FORMAT && (rc = cairn__chain_upgrade(e, txn))) return rc;
    if (stored && pos == *head) {
        memcpy(chain, stored, CAIRN_CHAIN);
        return CAIRN_OK;
    }
    return cairn__chain_at(e, txn, *head, chain);
}

int cairn__write_requests(cairn_store *s, MDB_txn *txn, const cairn_append_req *reqs,
                          const cairn_condition *const *conds, size_t nreqs,
                          cairn_append_result *results, int flags) {
    cairn_env *e = s->env;
    writer w;
    uint64_t head, next_sid, sid0, tail;
    int64_t ts, last_ts;
    size_t most = 0;
    int rc = CAIRN_OK;
    MDB_val k, v;
    uint8_t small[16 * 64];

    memset(&w, 0, sizeof w);
    cairn__sealer_init(&w.seal);
    for (size_t r = 0; r < nreqs; r++)
        if (reqs[r].nevents > most) most = reqs[r].nevents;
    /* the usual call (a few events) needs no allocation */
    if (most <= sizeof small / 16)
        w.scratch = small;
    else if (!(w.scratch = malloc(16 * most)))
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    MDB_TRY(mdb_cursor_open(txn, e->log, &w.log), "open cursor");
    MDB_TRY(mdb_cursor_open(txn, e->sidx, &w.sidx), "open cursor");
    MDB_TRY(mdb_cursor_open(txn, e->ids, &w.ids), "open cursor");
    MDB_TRY(mdb_cursor_open(txn, e->post, &w.cat), "open cursor");
    MDB_TRY(mdb_cursor_open(txn, e->post, &w.type), "open cursor");
    MDB_TRY(mdb_cursor_open(txn, e->post, &w.tag), "open cursor");
    if ((rc = read_tail(e, txn, w.log, &head, &last_ts, w.chain))) goto out;
    w.txn_first = head + 1;
    if ((rc = get_u64(txn, e->meta, &K_SID, &next_sid))) goto out;
    sid0 = next_sid;
    if ((rc = cairn__tail_start(e, txn, &tail))) goto out;
    w.tail = (flags & CAIRN__W_TAIL) && nreqs == 1 && reqs[0].nevents == 1 &&
        !cairn__links_maybe(reqs[0].events[0].metadata.ptr, reqs[0].events[0].metadata.len) &&
        (!tail || head + 1 - tail < CAIRN_TAIL_MAX);
    if (!w.tail) {
        rc = mdb_cursor_get(w.ids, &k, &v, MDB_LAST);
        if (rc == 0 && k.mv_size == 16)
            memcpy(w.last_id, k.mv_data, 16);
        else if (rc && rc != MDB_NOTFOUND)
            MDB_TRY(rc, "read id index");
        rc = CAIRN_OK;
        if (tail && (rc = flush_tail(e, &w, txn, tail))) goto out;
    }
    ts = cairn__now_ns();
    if (ts < last_ts) ts = last_ts; /* the clock stepped back */

    for (size_t r = 0; r < nreqs; r++) {
        const cairn_append_req *q = &reqs[r];
        cairn_stream_info si;
        int retry;

        if ((rc = check_retry(e, txn, q, w.txn_first, &results[r], &retry))) {
            cairn__err()->request = r;
            goto out;
        }
        if (retry) continue;
        if ((rc = cairn__stream_lookup(e, txn, q->stream.ptr, q->stream.len, &si))) goto out;
        if (si.has_life && (si.life.flags & CAIRN__LF_DELETED)) { /* a tombstone: forever */
            cairn__err()->request = r;
            rc = cairn__fail(
                CAIRN_EDELETED, "stream %.*s was deleted (hard delete): it cannot be written again",
                (int)(q->stream.len > 200 ? 200 : q->stream.len), (const char *)q->stream.ptr);
            goto out;
        }
        if ((rc = cairn__check_expected(q, &si, r))) goto out;
        /* the DCB condition, after the expected version (spec 5), sees earlier requests */
        if (conds && conds[r] && (rc = cairn__condition_check(e, txn, conds[r], r))) goto out;
        if (!si.exists) {
            si.sid = ++next_sid;
            if (si.has_life) si.flags |= CAIRN__SF_LIFE; /* limits set before its first event */
            MDB_TRY(cairn__stream_put(e, txn, &q->stream, &si), "write stream");
        }
        if (w.tail && !tail) {
            uint8_t b[8];
            MDB_val tv = {8, b};
            cairn__put_be64(b, head + 1);
            MDB_TRY(mdb_put(txn, e->meta, (MDB_val *)&K_TAIL, &tv, 0), "write meta");
        }
        if ((rc = write_request(e, &w, q, r, &si, &head, ts, &results[r]))) goto out;
        if (si.has_life && (rc = cairn__life_after_write(s, txn, &q->stream, &si))) goto out;
    }
    if (next_sid != sid0) MDB_TRY(put_u64(txn, e->meta, &K_SID, next_sid), "write meta");
    /* a key made by this write reaches the disk before the commit that uses it */
    if ((rc = cairn__sealer_finish(e, &w.seal, s->durability))) goto out;
out:
    if (w.tag) mdb_cursor_close(w.tag);
    if (w.type) mdb_cursor_close(w.type);
    if (w.cat) mdb_cursor_close(w.cat);
    if (w.ids) mdb_cursor_close(w.ids);
    if (w.sidx) mdb_cursor_close(w.sidx);
    if (w.log) mdb_cursor_close(w.log);
    cairn__sealer_free(&w.seal);
    if (w.scratch != small) free(w.scratch);
    return rc;
}

typedef struct append_args {
    cairn_store *s;
    const cairn_append_req *reqs;
    const cairn_condition *const *conds;
    size_t nreqs;
    cairn_append_result *results;
} append_args;

static int append_body(cairn_wtxn *w, void *ctx) {
    append_args *a = ctx;
    const cairn_hooks *hk = a->s->env->hooks;
    int rc =
        cairn__write_requests(a->s, w->txn, a->reqs, a->conds, a->nreqs, a->results, CAIRN__W_TAIL);
    if (rc == CAIRN_OK && hk && hk->after_append)
        rc = hk->after_append(a->s, w->txn, a->reqs, a->nreqs, a->results);
    w->notify = 1, w->head = a->results[a->nreqs - 1].position;
    return rc;
}

static int check_condition(const cairn_condition *c, size_t r) {
    const cairn_query *q = c->query;
    if (!q) return cairn__fail(CAIRN_EINVAL, "condition %zu: query: NULL", r);
    if (q->nitems && !q->items) return cairn__fail(CAIRN_EINVAL, "condition %zu: items: NULL", r);
    for (size_t i = 0; i < q->nitems; i++)
        if ((q->items[i].ntypes && !q->items[i].types) || (q->items[i].ntags && !q->items[i].tags))
            return cairn__fail(CAIRN_EINVAL, "condition %zu: item %zu: NULL list", r, i);
    return CAIRN_OK;
}

int cairn_append_conditional(cairn_store *s, const cairn_append_req *reqs,
                             const cairn_condition *const *conds, size_t nreqs,
                             cairn_append_result *results) {
    append_args a = {s, reqs, conds, nreqs, results};
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    if (!results) return cairn__fail(CAIRN_EINVAL, "results: NULL");
    if ((rc = cairn__validate_requests(reqs, nreqs))) return rc;
    for (size_t r = 0; conds && r < nreqs; r++)
        if (conds[r] && (rc = check_condition(conds[r], r))) return rc;
    cairn__clear_error();
    return cairn__write_txn(s->env, s->durability, append_body, &a);
}

int cairn_append_batch(cairn_store *s, const cairn_append_req *reqs, size_t nreqs,
                       cairn_append_result *results) {
    return cairn_append_conditional(s, reqs, NULL, nreqs, results);
}

int cairn_append(cairn_store *s, const char *stream, size_t stream_len, int64_t expected,
                 const cairn_event_in *events, size_t nevents, cairn_append_result *result) {
    cairn_append_req q;
    q.stream.ptr = stream;
    q.stream.len = stream_len;
    q.expected = expected;
    q.events = events;
    q.nevents = nevents;
    return cairn_append_batch(s, &q, 1, result);
}
