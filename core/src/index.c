/*
 * index.c -- keys of the index databases and stream lookups.
 *
 * streams: name (or, past 480 bytes, its first 480 bytes + XXH3-128 of the whole name)
 *          -> u64 sid, u32 flags (big-endian), full name; written when the stream is
 *          created, so that an append to an existing stream does not touch this tree
 * sidx:    u64 sid -> dups of (u64 version, u64 position), DUPFIXED
 * ids:     16-byte event id -> u64 position, u64 first position of its append call,
 *          u32 event count of that call
 * post:    kind byte + XXH3-64 of a category, type or tag -> dups of u64 positions
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "storage.h"

size_t cairn__stream_key(const void *name, size_t len, uint8_t out[CAIRN_STREAM_KEY_MAX]) {
    XXH128_hash_t h;
    if (len <= CAIRN_STREAM_KEY_INLINE) {
        memcpy(out, name, len);
        return len;
    }
    memcpy(out, name, CAIRN_STREAM_KEY_INLINE);
    h = XXH3_128bits(name, len);
    cairn__put_be64(out + CAIRN_STREAM_KEY_INLINE, h.high64);
    cairn__put_be64(out + CAIRN_STREAM_KEY_INLINE + 8, h.low64);
    return CAIRN_STREAM_KEY_MAX;
}

void cairn__post_key(int kind, const void *name, size_t len, uint8_t out[CAIRN_POST_KEY]) {
    out[0] = (uint8_t)kind;
    cairn__put_be64(out + 1, XXH3_64bits(name, len));
}

int cairn__stream_lookup(cairn_env *e, MDB_txn *txn, const void *name, size_t len,
                         cairn_stream_info *info) {
    uint8_t key[CAIRN_STREAM_KEY_MAX];
    MDB_val k, v;
    int rc;

    k.mv_size = cairn__stream_key(name, len, key);
    k.mv_data = key;
    memset(info, 0, sizeof *info);
    info->version = -1;
    rc = mdb_get(txn, e->streams, &k, &v);
    if (rc == MDB_NOTFOUND) { /* no event yet; a lifecycle entry may be waiting for it */
        int found;
        if ((rc = cairn__life_get(e, txn, key, k.mv_size, &info->life, &found))) return rc;
        if (found) info->has_life = 1, info->version = info->life.kept;
        return CAIRN_OK;
    }
    if (rc) return cairn__mdb_fail(rc, "stream lookup");
    if (v.mv_size != CAIRN_STREAM_VAL_HEADER + len ||
        memcmp((uint8_t *)v.mv_data + CAIRN_STREAM_VAL_HEADER, name, len) != 0) {
        if (v.mv_size < CAIRN_STREAM_VAL_HEADER || len <= CAIRN_STREAM_KEY_INLINE)
            return cairn__fail(CAIRN_ECORRUPT,
                               "corrupt stream entry"); /* a short name is its key */
        /* A 128-bit digest collision between two long names: refuse rather than mix. */
        return cairn__fail(CAIRN_EINTERNAL, "stream key collision");
    }
    info->exists = 1;
    info->sid = cairn__get_be64(v.mv_data);
    info->flags = cairn__get_be32((uint8_t *)v.mv_data + 8);
    {
        MDB_cursor *c;
        uint8_t sk[8];
        MDB_val xk = {8, sk}, xv;
        cairn__put_be64(sk, info->sid);
        if ((rc = mdb_cursor_open(txn, e->sidx, &c))) return cairn__mdb_fail(rc, "stream lookup");
        rc = mdb_cursor_get(c, &xk, &xv, MDB_SET);
        if (rc == 0) rc = mdb_cursor_get(c, &xk, &xv, MDB_LAST_DUP);
        if (rc == 0 && xv.mv_size == 16) {
            info->version = (int64_t)cairn__get_be64(xv.mv_data);
            info->last_pos = cairn__get_be64((uint8_t *)xv.mv_data + 8);
        }
        mdb_cursor_close(c);
        if (rc && rc != MDB_NOTFOUND) return cairn__mdb_fail(rc, "stream lookup");
        /* versions count from 0 and share positions with every other stream: version v sits
         * at a position > v.  Anything else is a damaged stream index (LMDB does not
         * checksum its pages). */
        if (rc == 0 &&
            (xv.mv_size != 16 || info->version < 0 || (uint64_t)info->version >= info->last_pos)) {
            cairn__err()->position = info->last_pos;
            return cairn__fail(CAIRN_ECORRUPT, "position %llu: damaged stream index entry",
                               (unsigned long long)info->last_pos);
        }
        if (info->flags & CAIRN__SF_LIFE) { /* deleted or limited (lifecycle.c) */
            int found, lrc = cairn__life_get(e, txn, key, k.mv_size, &info->life, &found);
            if (lrc) return lrc;
            if (!found)
                return cairn__fail(CAIRN_ECORRUPT, "stream %.*s: its lifecycle entry is missing",
                                   (int)(len > 200 ? 200 : len), (const char *)name);
            info->has_life = 1;
            /* every event removed: the entry keeps the version (numbering goes on) */
            if (rc == MDB_NOTFOUND && info->version < 0) info->version = info->life.kept;
        }
    }
    return CAIRN_OK;
}

/* The last position ever written: the log's last key, or the `meta` head kept when the
 * newest events are removed (positions are never reused): u64 head, i64 its timestamp. */
int cairn__head_kept(cairn_env *e, MDB_txn *txn, uint64_t *head, int64_t *ts) {
    MDB_val v, mk = {4, (void *)"head"};
    int rc = mdb_get(txn, e->meta, &mk, &v);
    *head = 0, *ts = 0;
    if (rc == 0 && (v.mv_size == 8 || v.mv_size == 16)) {
        *head = cairn__get_be64(v.mv_data);
        if (v.mv_size == 16) *ts = (int64_t)cairn__get_be64((uint8_t *)v.mv_data + 8);
    }
    return rc == 0 || rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "head");
}

int cairn__head_ts(cairn_env *e, MDB_txn *txn, uint64_t *out, int64_t *ts) {
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t kept;
    int64_t kept_ts;
    int rc;
    *out = 0;
    if (ts) *ts = 0;
    if ((rc = mdb_cursor_open(txn, e->log, &c))) return cairn__mdb_fail(rc, "head");
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8) *out = cairn__get_be64(k.mv_data);
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND) return cairn__mdb_fail(rc, "head");
    if ((rc = cairn__head_kept(e, txn, &kept, &kept_ts))) return rc;
    if (kept > *out) *out = kept;
    if (ts) *ts = kept_ts;
    return CAIRN_OK;
}

int cairn__head(cairn_env *e, MDB_txn *txn, uint64_t *out) {
    return cairn__head_ts(e, txn, out, NULL);
}

int cairn__head_keep(cairn_env *e, MDB_txn *txn, uint64_t head, int64_t ts) {
    uint8_t b[16];
    MDB_val k = {4, (void *)"head"}, v = {16, b};
    int rc;
    cairn__put_be64(b, head);
    cairn__put_be64(b + 8, (uint64_t)ts);
    rc = mdb_put(txn, e->meta, &k, &v, 0);
    if (rc == MDB_MAP_FULL) return CAIRN__EMAPFULL;
    return rc ? cairn__mdb_fail(rc, "write meta") : CAIRN_OK;
}

/* The index tail (see cairn__tail_start in storage.h): meta "tail" holds the first
 * position whose ids and posting entries are not written yet. */
int cairn__tail_start(cairn_env *e, MDB_txn *txn, uint64_t *out) {
    MDB_val k = {4, (void *)"tail"}, v;
    int rc = mdb_get(txn, e->meta, &k, &v);
    *out = 0;
    if (rc == MDB_NOTFOUND) return CAIRN_OK;
    if (rc) return cairn__mdb_fail(rc, "read meta");
    if (v.mv_size != 8 || cairn__get_be64(v.mv_data) == 0)
        return cairn__fail(CAIRN_ECORRUPT, "meta: damaged index tail entry");
    *out = cairn__get_be64(v.mv_data);
    return CAIRN_OK;
}

int cairn__id_find(cairn_env *e, MDB_txn *txn, const uint8_t *key, size_t len, int *found,
                   uint64_t *pos, uint64_t *first, uint64_t *count) {
    MDB_val k = {len, (void *)key}, v;
    MDB_cursor *c;
    uint64_t t;
    uint8_t kb[8];
    int rc;

    *found = 0;
    if (len == 16) {
        rc = mdb_get(txn, e->ids, &k, &v);
    } else { /* the smallest id with this prefix: ids sort bytewise */
        if ((rc = mdb_cursor_open(txn, e->ids, &c))) return cairn__mdb_fail(rc, "read id index");
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && (k.mv_size != 16 || memcmp(k.mv_data, key, len))) rc = MDB_NOTFOUND;
        mdb_cursor_close(c);
    }
    if (rc == 0) {
        if (v.mv_size != 20) return cairn__fail(CAIRN_ECORRUPT, "corrupt id index entry");
        *pos = cairn__get_be64(v.mv_data);
        *first = cairn__get_be64((uint8_t *)v.mv_data + 8);
        *count = cairn__get_be32((uint8_t *)v.mv_data + 16);
        *found = 1;
        return CAIRN_OK;
    }
    if (rc != MDB_NOTFOUND) return cairn__mdb_fail(rc, "read id index");
    if ((rc = cairn__tail_start(e, txn, &t)) || t == 0) return rc;
    /* the tail holds single-event appends only: each is its own call */
    if ((rc = mdb_cursor_open(txn, e->log, &c))) return cairn__mdb_fail(rc, "read log");
    cairn__put_be64(kb, t);
    k.mv_size = 8, k.mv_data = kb;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        const uint8_t *rid = cairn__record_id(v.mv_data, v.mv_size);
        if (rid && k.mv_size == 8 && memcmp(rid, key, len) == 0) {
            cairn_event ev;
            uint64_t p = cairn__get_be64(k.mv_data);
            if ((rc = cairn__record_decode(v.mv_data, v.mv_size, p, &ev))) break;
            *found = 1, *pos = *first = p, *count = 1;
            break;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) rc = 0;
    return rc > 0 ? cairn__mdb_fail(rc, "read log") : rc;
}

int cairn__id_lookup(cairn_env *e, MDB_txn *txn, const uint8_t id[16], int *found, uint64_t *pos,
                     uint64_t *first, uint64_t *count) {
    return cairn__id_find(e, txn, id, 16, found, pos, first, count);
}

int cairn_event_position(cairn_store *s, const uint8_t id[16], uint64_t *position) {
    MDB_txn *txn;
    uint64_t first, count;
    int rc, found = 0;

    cairn__clear_error();
    if (!position || !id) return cairn__fail(CAIRN_EINVAL, "id/position: NULL");
    *position = 0;
    if ((rc = cairn__store_check(s))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    rc = cairn__id_lookup(s->env, txn, id, &found, position, &first, &count);
    cairn__read_end(s->env, txn);
    if (rc) return rc;
    return found ? CAIRN_OK : cairn__fail(CAIRN_ENOTFOUND, "no event with this id");
}
