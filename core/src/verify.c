/*
 * verify.c -- the store's self-check: every record's checksum, gapless positions, and
 * every index in agreement with the log.  Reports the first damage precisely.
 */
#include <stdlib.h>

#include "internal.h"

#define CHUNK 4096 /* records checked per read transaction */

static int damage(uint64_t pos, const char *what) {
    cairn__err()->position = pos;
    return cairn__fail(CAIRN_ECORRUPT, "position %llu: %s", (unsigned long long)pos, what);
}

static int has_dup(MDB_cursor *c, const void *key, size_t klen, const void *val, size_t vlen) {
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    return mdb_cursor_get(c, &k, &v, MDB_GET_BOTH) == 0;
}

/* Checks records from *next on, at most CHUNK of them, in one read transaction. */
static int verify_chunk(cairn_env *e, uint64_t *next, uint64_t head, cairn_verify_report *r) {
    MDB_txn *txn;
    MDB_cursor *clog = NULL, *cids = NULL, *csidx = NULL, *cpost = NULL;
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    size_t n = 0;
    int rc;

    if ((rc = cairn__read_begin(e, &txn))) return rc;
    if ((rc = mdb_cursor_open(txn, e->log, &clog)) || (rc = mdb_cursor_open(txn, e->ids, &cids)) ||
        (rc = mdb_cursor_open(txn, e->sidx, &csidx)) || (rc = mdb_cursor_open(txn, e->post, &cpost))) {
        rc = cairn__mdb_fail(rc, "verify");
        goto out;
    }
    cairn__put_be64(kb, *next);
    rc = mdb_cursor_get(clog, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && n < CHUNK) {
        uint64_t pos = cairn__get_be64(k.mv_data);
        cairn_event ev;
        cairn_stream_info si;
        cairn_slice cat, tag;
        uint8_t pk[CAIRN_POST_KEY], sv[16], sk[8];
        MDB_val ik = {16, NULL}, iv;
        size_t cur = 0;

        if (k.mv_size != 8) { rc = damage(pos, "log key is not 8 bytes"); goto out; }
        if (pos != *next) { rc = damage(*next, "position missing from the log"); goto out; }
        if ((rc = cairn__record_decode(v.mv_data, v.mv_size, pos, &ev))) goto out;
        ik.mv_data = ev.id;
        if (mdb_cursor_get(cids, &ik, &iv, MDB_SET_KEY) != 0 || iv.mv_size != 20 ||
            cairn__get_be64(iv.mv_data) != pos) {
            rc = damage(pos, "event id index disagrees with the log");
            goto out;
        }
        if ((rc = cairn__stream_lookup(e, txn, ev.stream.ptr, ev.stream.len, &si))) goto out;
        if (!si.exists || si.version < ev.version) { rc = damage(pos, "stream entry disagrees with the log"); goto out; }
        cairn__put_be64(sk, si.sid);
        cairn__put_be64(sv, (uint64_t)ev.version);
        cairn__put_be64(sv + 8, pos);
        if (!has_dup(csidx, sk, 8, sv, 16)) { rc = damage(pos, "stream index lacks this event"); goto out; }
        cat = cairn_category(ev.stream.ptr, ev.stream.len);
        cairn__post_key(CAIRN_POST_CATEGORY, cat.ptr, cat.len, pk);
        if (!has_dup(cpost, pk, sizeof pk, k.mv_data, 8)) { rc = damage(pos, "category index lacks this event"); goto out; }
        cairn__post_key(CAIRN_POST_TYPE, ev.type.ptr, ev.type.len, pk);
        if (!has_dup(cpost, pk, sizeof pk, k.mv_data, 8)) { rc = damage(pos, "type index lacks this event"); goto out; }
        while (cairn_event_tag(&ev, &cur, &tag)) {
            cairn__post_key(CAIRN_POST_TAG, tag.ptr, tag.len, pk);
            if (!has_dup(cpost, pk, sizeof pk, k.mv_data, 8)) { rc = damage(pos, "tag index lacks this event"); goto out; }
        }
        r->events++;
        (*next)++;
        n++;
        rc = mdb_cursor_get(clog, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) {
        rc = *next <= head ? damage(*next, "position missing from the log") : CAIRN_OK;
        if (!rc) *next = head + 1;
    } else if (rc > 0) {
        rc = cairn__mdb_fail(rc, "verify");
    }
out:
    if (cpost) mdb_cursor_close(cpost);
    if (csidx) mdb_cursor_close(csidx);
    if (cids) mdb_cursor_close(cids);
    if (clog) mdb_cursor_close(clog);
    cairn__read_end(e, txn);
    return rc;
}

/* Every stream's versions must run 0..version without gaps. */
static int verify_streams(cairn_env *e, cairn_verify_report *r) {
    MDB_txn *txn;
    MDB_cursor *cs = NULL, *cx = NULL;
    MDB_val k, v;
    int rc;

    if ((rc = cairn__read_begin(e, &txn))) return rc;
    if ((rc = mdb_cursor_open(txn, e->streams, &cs)) || (rc = mdb_cursor_open(txn, e->sidx, &cx))) {
        rc = cairn__mdb_fail(rc, "verify");
        goto out;
    }
    rc = mdb_cursor_get(cs, &k, &v, MDB_FIRST);
    while (rc == 0) {
        uint8_t *sv = v.mv_data;
        int64_t expect = 0;
        MDB_val xk = {8, NULL}, xv;
        int xrc;
        if (v.mv_size < CAIRN_STREAM_VAL_HEADER) { rc = damage(0, "corrupt stream entry"); goto out; }
        xk.mv_data = sv;
        xrc = mdb_cursor_get(cx, &xk, &xv, MDB_SET);
        if (xrc == 0) xrc = mdb_cursor_get(cx, &xk, &xv, MDB_FIRST_DUP);
        while (xrc == 0) {
            if ((int64_t)cairn__get_be64(xv.mv_data) != expect) {
                rc = damage(cairn__get_be64((uint8_t *)xv.mv_data + 8), "stream versions have a gap");
                goto out;
            }
            expect++;
            xrc = mdb_cursor_get(cx, &xk, &xv, MDB_NEXT_DUP);
        }
        if (expect == 0) {
            rc = cairn__fail(CAIRN_ECORRUPT, "stream %.*s has no events indexed",
                             (int)(v.mv_size - CAIRN_STREAM_VAL_HEADER > 200 ? 200 : v.mv_size - CAIRN_STREAM_VAL_HEADER),
                             (const char *)sv + CAIRN_STREAM_VAL_HEADER);
            goto out;
        }
        r->streams++;
        rc = mdb_cursor_get(cs, &k, &v, MDB_NEXT);
    }
    rc = rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "verify");
out:
    if (cx) mdb_cursor_close(cx);
    if (cs) mdb_cursor_close(cs);
    cairn__read_end(e, txn);
    return rc;
}

int cairn_verify(cairn_store *s, cairn_verify_report *report, cairn_progress_fn progress,
                 void *ctx) {
    cairn_verify_report r = {0, 0, 0};
    uint64_t next = 1;
    int rc;

    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if ((rc = cairn_head(s, &r.head))) return rc;
    while (next <= r.head) {
        if ((rc = verify_chunk(s->env, &next, r.head, &r))) goto out;
        if (progress) progress(ctx, r.events, r.head);
    }
    rc = verify_streams(s->env, &r);
out:
    if (report) *report = r;
    return rc;
}
