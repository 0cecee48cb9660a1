/*
 * verify.c -- the store's self-check: every record's checksum, gapless positions, and
 * every index in agreement with the log, in both directions.  Reports the first damage
 * precisely (CAIRN_ECORRUPT; .position names the event or the position an entry points at).
 *
 * Forward (per record, CHUNK records per read transaction): the record decodes at its key;
 * timestamps do not go back; its id maps to it in `ids` (and its append call covers it);
 * its stream exists and `sidx` holds (version, position) under the stream's sid; the
 * category, type, tag and correlation postings hold its position; a `compensates` link is
 * in `comp`.
 *
 * Reverse (one read transaction, counts only): every forward check finds a distinct index
 * entry, so an index whose entry count equals what the records imply holds nothing else.
 * `ids` and `sidx` must hold exactly one entry per event, `post` one category and one type
 * posting per event plus one per distinct tag digest and per correlation id, `comp` one per
 * compensation.  Only when a count is off is the index walked to name the first entry that
 * points at no record or at a record that does not match it.
 *
 * The index tail (storage.h): its events have no `ids` or posting entries yet, so the
 * forward pass skips those checks from the first tail record it meets on, and the counts
 * pass (one txn) checks the tail's bounds, the entries of records that have left the tail
 * since, and that no tail event carries links (those are never deferred).
 *
 * Streams (one read transaction): each entry's key is its name's key, its sid is at most
 * the `meta` sid counter, its versions run 0..n without gaps and its first event belongs to
 * it.
 *
 * Keys (keys.c: cairn__keys_verify, after the streams pass, 4,096 subjects per read
 * transaction): every live subject's key is in the keys file, not zeroed; the record pass
 * checks that every sealed event's key id names a slot of it.
 *
 * Going on past damage (cairn_verify_all with a damage callback): each damaged record of the
 * forward pass is reported and the pass goes on with the next; a run of missing positions is
 * one report.  The counts and streams passes then do not run (the skipped records make
 * every count disagree), and the first damage is the call's error.  The keys pass runs
 * either way and reports each damaged subject (position 0).
 *
 * Memory stays bounded: nothing is kept per event or per stream.
 */
#include <stdio.h>
#include <stdlib.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "storage.h"

#define CHUNK 4096 /* records checked per read transaction */

typedef struct vstate {
    uint64_t next;     /* next position to check */
    uint64_t head;     /* check up to here */
    int64_t last_ts;   /* timestamp of the previous record */
    uint64_t tags;     /* tag postings the records imply (distinct digests per event) */
    uint64_t corrs;    /* correlation postings */
    uint64_t comps;    /* `comp` entries */
    uint64_t deferred; /* first record met in the index tail (0: none yet); its id and
                        * posting entries, and every later record's, are checked and
                        * counted by verify_counts */
    MDB_dbi comp_dbi;
    cairn_verify_report *r;
    cairn_damage_fn damage; /* NULL: the first damage ends the check */
    void *damage_ctx;
    uint64_t damaged;  /* damages reported */
    cairn_error first; /* the first of them, returned at the end */
    /* the hash chain: the chain hash of position next-1 (known: 0 after a record that does
     * not decode), meta chain1, the store format, a format-2 record seen, runs of removed
     * positions met (each must have its hole entry) */
    uint8_t chain[CAIRN_CHAIN];
    int known, format, seen2;
    uint64_t unstored; /* format 3: the first of the records since the last stored hash */
    uint64_t c1pos, runs;
    uint64_t removed; /* meta removed as the pass started: reclamation meanwhile makes the
                       * counts of the records checked stale (the check runs again) */
    uint8_t c1hash[CAIRN_CHAIN];
} vstate;

static int has_dup(MDB_cursor *c, const void *key, size_t klen, const void *val, size_t vlen) {
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    return mdb_cursor_get(c, &k, &v, MDB_GET_BOTH) == 0;
}

static int same_bytes(const void *a, size_t alen, const void *b, size_t blen) {
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Distinct tag digests of an event: tags repeated on one event (or sharing a digest) are
 * one posting.  Sorted, so that 65,535 tags cost n log n, not n^2; *ok is 0 when memory
 * ran out. */
static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t distinct_tag_keys(const cairn_event *ev, int *ok) {
    uint64_t small[16], *h = ev->ntags <= 16 ? small : malloc(ev->ntags * sizeof *h), n = 0, d = 0;
    size_t cur = 0;
    cairn_slice tag;
    *ok = h != NULL;
    if (!h) return 0;
    while (n < ev->ntags && cairn_event_tag(ev, &cur, &tag)) h[n++] = XXH3_64bits(tag.ptr, tag.len);
    qsort(h, n, sizeof *h, cmp_u64);
    for (uint64_t i = 0; i < n; i++) d += i == 0 || h[i] != h[i - 1];
    if (h != small) free(h);
    return d;
}

/* Reads and decodes the record at `pos` through `clog`; CAIRN_ECORRUPT naming `pos` when
 * there is none (an index entry pointing nowhere) or it is damaged. */
static _Thread_local uintptr_t g_lo, g_hi; /* used part of the map in the current txn */

static int record_at(MDB_cursor *clog, uint64_t pos, cairn_event *ev, const char *what) {
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    int rc;
    cairn__put_be64(kb, pos);
    rc = mdb_cursor_get(clog, &k, &v, MDB_SET_KEY);
    if (rc == MDB_NOTFOUND) return cairn__corrupt(pos, what);
    if (rc) return cairn__mdb_fail(rc, "verify");
    if ((rc = cairn__val_check(g_lo, g_hi, &v, pos))) return rc;
    return cairn__record_decode(v.mv_data, v.mv_size, pos, ev);
}

/* The id, posting and link index entries of one record outside the index tail. */
static int check_indexed(vstate *vs, MDB_txn *txn, MDB_cursor *cids, MDB_cursor *cpost,
                         const cairn_event *ev, uint64_t pos) {
    uint8_t pk[CAIRN_POST_KEY], posb[8];
    MDB_val ik = {16, (void *)ev->id}, iv;
    uint64_t first, count;
    cairn_slice cat, tag;
    size_t cur = 0;
    const char *bad = NULL;
    cairn_links l;

    cairn__put_be64(posb, pos);
    if (mdb_cursor_get(cids, &ik, &iv, MDB_SET_KEY) != 0 || iv.mv_size != 20 ||
        cairn__get_be64(iv.mv_data) != pos)
        return cairn__corrupt(pos, "event id index disagrees with the log");
    first = cairn__get_be64((uint8_t *)iv.mv_data + 8);
    count = cairn__get_be32((uint8_t *)iv.mv_data + 16);
    if (first > pos || pos - first >= count)
        return cairn__corrupt(pos,
                              "event id index: the append call recorded does not cover this event");
    cat = cairn_category(ev->stream.ptr, ev->stream.len);
    cairn__post_key(CAIRN_POST_CATEGORY, cat.ptr, cat.len, pk);
    if (!has_dup(cpost, pk, sizeof pk, posb, 8))
        return cairn__corrupt(pos, "category index lacks this event");
    cairn__post_key(CAIRN_POST_TYPE, ev->type.ptr, ev->type.len, pk);
    if (!has_dup(cpost, pk, sizeof pk, posb, 8))
        return cairn__corrupt(pos, "type index lacks this event");
    while (cairn_event_tag(ev, &cur, &tag)) {
        cairn__post_key(CAIRN_POST_TAG, tag.ptr, tag.len, pk);
        if (!has_dup(cpost, pk, sizeof pk, posb, 8))
            return cairn__corrupt(pos, "tag index lacks this event");
    }
    {
        int ok;
        vs->tags += distinct_tag_keys(ev, &ok);
        if (!ok) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    }
    if (!cairn__links_parse(ev->metadata.ptr, ev->metadata.len, &l)) return CAIRN_OK;
    if (l.corr) {
        cairn__post_key(CAIRN_POST_CORRELATION, l.corr, l.corr_len, pk);
        if (!has_dup(cpost, pk, sizeof pk, posb, 8)) bad = "correlation index lacks this event";
        vs->corrs++;
    }
    if (!bad && l.has_comp) {
        MDB_val ck = {16, l.comp}, cv;
        int crc = mdb_get(txn, vs->comp_dbi, &ck, &cv);
        if (crc != 0 || cv.mv_size != 8 || cairn__get_be64(cv.mv_data) != pos)
            bad = "compensation index lacks this event";
        vs->comps++;
    }
    cairn__links_free(&l);
    return bad ? cairn__corrupt(pos, bad) : CAIRN_OK;
}

/* The chain link of the record at pos (decoded: info): recomputed from the chain hash of
 * pos-1 and compared with the stored one (format 2), or computed (format 1) and compared
 * with meta chain1 at the last format-1 position.  After a mismatch the chain goes on from
 * the stored hash, so that one damaged link is one report. */
static int check_chain(vstate *vs, const MDB_val *v, uint64_t pos, const cairn_rec_info *info,
                       uint64_t after_hole) {
    uint8_t h[CAIRN_CHAIN];
    if (info->format == 1) {
        if (vs->seen2) return cairn__corrupt(pos, "a format-1 record after format-2 records");
        if (vs->format > 1 && (!vs->c1pos || pos > vs->c1pos))
            return cairn__corrupt(pos, "a format-1 record past the upgrade's chain1 in meta");
        if (!vs->known) return CAIRN_OK; /* after a damaged record: nothing to go on */
        cairn__chain_hash(vs->chain, pos, v->mv_data, v->mv_size, vs->chain);
        if (pos == vs->c1pos && memcmp(vs->chain, vs->c1hash, CAIRN_CHAIN)) {
            memcpy(vs->chain, vs->c1hash, CAIRN_CHAIN);
            return cairn__corrupt(pos,
                                  "the format-1 records up to here do not hash to the chain "
                                  "recorded when the store was upgraded (meta chain1): one of "
                                  "them was changed");
        }
        return CAIRN_OK;
    }
    if (!vs->seen2) {
        vs->seen2 = 1;
        if (vs->c1pos >= pos)
            return cairn__corrupt(pos, "meta chain1 names a position after this format-2 record");
    }
    if (!info->chain) { /* format 3 keeps a hash in some records: the next one checks */
        if (vs->known) cairn__chain_hash(vs->chain, pos, v->mv_data, v->mv_size, vs->chain);
        if (!vs->unstored) vs->unstored = pos;
        return CAIRN_OK;
    }
    if (vs->known) {
        uint64_t since = vs->unstored;
        cairn__chain_hash(vs->chain, pos, v->mv_data, v->mv_size, h);
        memcpy(vs->chain, info->chain, CAIRN_CHAIN);
        vs->unstored = 0;
        if (memcmp(h, info->chain, CAIRN_CHAIN)) {
            if (since) { /* the records between stored hashes cannot be told apart */
                char m[200];
                snprintf(m, sizeof m,
                         "chain hash does not match the records from position %llu to this "
                         "one (one of them, or this record's chain hash, was changed)",
                         (unsigned long long)since);
                return cairn__corrupt(pos, m);
            }
            if (after_hole) {
                char m[160];
                snprintf(m, sizeof m,
                         "chain hash does not match this record after the removed positions "
                         "ending at %llu (the record or their hole entry was changed)",
                         (unsigned long long)after_hole);
                return cairn__corrupt(pos, m);
            }
            return cairn__corrupt(pos,
                                  "chain hash does not match this record and the chain "
                                  "before it (the record or its chain hash was changed)");
        }
    }
    memcpy(vs->chain, info->chain, CAIRN_CHAIN);
    vs->known = 1, vs->unstored = 0;
    return CAIRN_OK;
}

/* One record of the log pass, at `pos` (its key): it decodes, a lookup by position finds
 * it, its timestamp does not go back, its stream and stream index entries hold it, and
 * (outside the index tail) its id and posting entries. */
static int check_record(cairn_env *e, vstate *vs, MDB_txn *txn, MDB_cursor *cids, MDB_cursor *csidx,
                        MDB_cursor *cpost, const MDB_val *k, const MDB_val *v, uint64_t pos,
                        uint64_t tail, uint64_t after_hole) {
    cairn_event ev;
    cairn_stream_info si;
    cairn_rec_info info;
    uint8_t sv[16], sk[8];
    int rc;

    if ((rc = cairn__val_check(g_lo, g_hi, v, pos)) ||
        (rc = cairn__record_decode_ex(v->mv_data, v->mv_size, pos, &ev, &info))) {
        vs->known = 0;
        return rc;
    }
    if ((rc = check_chain(vs, v, pos, &info, after_hole))) return rc;
    { /* found by key too: a damaged branch page can hide a record from lookups (every
         * read but a scan) while a sequential walk still reaches it */
        MDB_val lk = {8, k->mv_data}, lv;
        if (mdb_get(txn, e->log, &lk, &lv) != 0 || lv.mv_data != v->mv_data)
            return cairn__corrupt(pos,
                                  "a lookup by position does not find this event (damaged tree)");
    }
    if (ev.timestamp < vs->last_ts)
        return cairn__corrupt(pos, "timestamp earlier than the previous event's");
    vs->last_ts = ev.timestamp;
    if ((ev.flags & CAIRN_EVENT_ENCRYPTED) &&
        (rc = cairn__keys_verify_event(e, txn, ev.key_id, pos)))
        return rc;
    if ((rc = cairn__stream_lookup(e, txn, ev.stream.ptr, ev.stream.len, &si))) {
        if ((rc == CAIRN_ECORRUPT && !cairn__err()->position) || rc == CAIRN_EINTERNAL)
            rc = cairn__corrupt(pos, "stream entry of this event is damaged");
        return rc;
    }
    if (!si.exists || si.version < ev.version || ev.version < 0)
        return cairn__corrupt(pos, "stream entry disagrees with the log");
    cairn__put_be64(sk, si.sid);
    cairn__put_be64(sv, (uint64_t)ev.version);
    cairn__put_be64(sv + 8, pos);
    if (!has_dup(csidx, sk, 8, sv, 16)) return cairn__corrupt(pos, "stream index lacks this event");
    if (!vs->deferred && tail && pos >= tail) vs->deferred = pos;
    if (!vs->deferred) return check_indexed(vs, txn, cids, cpost, &ev, pos);
    return CAIRN_OK;
}

/* A damage the log pass met (rc): without a damage callback it ends the check; with one, it
 * is reported, the first one is kept to be returned at the end, and the pass goes on. */
static int damage_seen(vstate *vs, int rc) {
    const cairn_error *err = cairn__err();
    if (rc != CAIRN_ECORRUPT || !vs->damage) return rc;
    if (vs->damaged++ == 0) vs->first = *err;
    vs->damage(vs->damage_ctx, err->position, err->message);
    cairn__clear_error();
    return CAIRN_OK;
}

static int keys_seen(void *vs, int rc) { return damage_seen(vs, rc); }

/* A run of removed positions first..end: 1 when its hole entry is there (the chain goes on
 * from it), 0 when not (the positions are missing), or a negative code. */
static int hole_end(cairn_env *e, vstate *vs, MDB_txn *txn, uint64_t first, uint64_t end) {
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    int rc;
    if (!e->holes) return 0;
    cairn__put_be64(kb, end);
    rc = mdb_get(txn, e->holes, &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    /* A stream loses its oldest events first and every append request's last record keeps
     * its hash, so the record before a removed run keeps one: else the run's entry would
     * be all that vouches for the records before it */
    if (rc == 0 && vs->unstored && vs->known)
        return cairn__corrupt(first - 1,
                              "a run of removed positions follows this record, "
                              "which keeps no chain hash (a record was removed)");
    if (rc) return cairn__mdb_fail(rc, "verify");
    if (v.mv_size != 8 + CAIRN_CHAIN) return cairn__corrupt(end, "damaged hole entry");
    if (cairn__get_be64(v.mv_data) != first)
        return cairn__corrupt(end, "the hole entry of this run names another first position");
    memcpy(vs->chain, (uint8_t *)v.mv_data + 8, CAIRN_CHAIN);
    vs->known = 1, vs->unstored = 0;
    vs->runs++;
    if (end == vs->c1pos && memcmp(vs->chain, vs->c1hash, CAIRN_CHAIN))
        return cairn__corrupt(end,
                              "the hole entry at the last format-1 position does not match "
                              "meta chain1");
    return 1;
}

/* Checks records from vs->next on, at most CHUNK of them, in one read transaction. */
static int verify_chunk(cairn_env *e, vstate *vs) {
    MDB_txn *txn;
    MDB_cursor *clog = NULL, *cids = NULL, *csidx = NULL, *cpost = NULL;
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    uint64_t tail;
    size_t n = 0;
    int rc;

    if ((rc = cairn__read_begin(e, &txn))) return rc;
    if ((rc = mdb_cursor_open(txn, e->log, &clog)) || (rc = mdb_cursor_open(txn, e->ids, &cids)) ||
        (rc = mdb_cursor_open(txn, e->sidx, &csidx)) ||
        (rc = mdb_cursor_open(txn, e->post, &cpost))) {
        rc = cairn__mdb_fail(rc, "verify");
        goto out;
    }
    if ((rc = cairn__tail_start(e, txn, &tail))) goto out;
    cairn__map_bounds(e, txn, &g_lo, &g_hi);
    cairn__put_be64(kb, vs->next);
    rc = mdb_cursor_get(clog, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && n < CHUNK && vs->next <= vs->head) {
        uint64_t pos, after_hole = 0;

        if (k.mv_size != 8) { /* the walk cannot go on from a key it cannot read */
            rc = cairn__corrupt(vs->next, "log key is not 8 bytes");
            goto out;
        }
        pos = cairn__get_be64(k.mv_data);
        if (pos != vs->next) { /* removed positions, whose last keeps its chain hash */
            if (pos > vs->next && pos <= vs->head &&
                (rc = hole_end(e, vs, txn, vs->next, pos - 1)) != 0) {
                if (rc < 0) goto out;
                after_hole = pos - 1;
            } else {
                rc = cairn__corrupt(vs->next, "position missing from the log");
                if (pos < vs->next || pos > vs->head || (rc = damage_seen(vs, rc))) goto out;
                vs->known = 0;
            }
            vs->next = pos; /* one report for the run of missing positions */
        }
        rc = check_record(e, vs, txn, cids, csidx, cpost, &k, &v, pos, tail, after_hole);
        if (rc == CAIRN_OK)
            vs->r->events++;
        else if ((rc = damage_seen(vs, rc)))
            goto out;
        vs->next++;
        n++;
        rc = mdb_cursor_get(clog, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) {
        rc = CAIRN_OK;
        if (vs->next <= vs->head) { /* removed up to the head, or missing */
            int h = hole_end(e, vs, txn, vs->next, vs->head);
            if (h < 0) {
                rc = h;
            } else if (h) {
                vs->next = vs->head + 1;
            } else if ((rc = damage_seen(
                            vs, cairn__corrupt(vs->next, "position missing from the log"))) ==
                       CAIRN_OK) {
                vs->next = vs->head + 1, vs->known = 0;
            }
        }
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

/* ---------------------------------------------------------------------------------
 * Reverse direction: locating the entry that points at no matching record.  Run only when
 * an index holds more entries than the records imply.
 * --------------------------------------------------------------------------------- */
static int locate_ids(cairn_env *e, MDB_txn *txn, MDB_cursor *clog, uint64_t head, uint64_t tail) {
    MDB_cursor *c;
    MDB_val k, v;
    int rc;
    if ((rc = mdb_cursor_open(txn, e->ids, &c))) return cairn__mdb_fail(rc, "verify");
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        cairn_event ev;
        uint64_t pos;
        if (k.mv_size != 16 || v.mv_size != 20) {
            rc = cairn__corrupt(0, "event id index: malformed entry");
            goto out;
        }
        pos = cairn__get_be64(v.mv_data);
        if (pos == 0 || pos > head) {
            rc = cairn__corrupt(pos, "event id index entry points past the log");
            goto out;
        }
        if (tail && pos >= tail) {
            rc = cairn__corrupt(pos, "event id index has an entry for an event of the index tail");
            goto out;
        }
        if ((rc = record_at(clog, pos, &ev, "event id index entry points at a missing event")))
            goto out;
        if (memcmp(ev.id, k.mv_data, 16) != 0) {
            rc = cairn__corrupt(pos, "event id index entry names another event's id");
            goto out;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    rc = rc == MDB_NOTFOUND
        ? cairn__corrupt(0, "event id index holds more entries than the log has events")
        : cairn__mdb_fail(rc, "verify");
out:
    mdb_cursor_close(c);
    return rc;
}

static int locate_sidx(cairn_env *e, MDB_txn *txn, MDB_cursor *clog, uint64_t head) {
    MDB_cursor *c;
    MDB_val k, v;
    int rc;
    if ((rc = mdb_cursor_open(txn, e->sidx, &c))) return cairn__mdb_fail(rc, "verify");
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        cairn_event ev;
        cairn_stream_info si;
        uint64_t pos;
        if (k.mv_size != 8 || v.mv_size != 16) {
            rc = cairn__corrupt(0, "stream index: malformed entry");
            goto out;
        }
        pos = cairn__get_be64((uint8_t *)v.mv_data + 8);
        if (pos == 0 || pos > head) {
            rc = cairn__corrupt(pos, "stream index entry points past the log");
            goto out;
        }
        if ((rc = record_at(clog, pos, &ev, "stream index entry points at a missing event")))
            goto out;
        if ((rc = cairn__stream_lookup(e, txn, ev.stream.ptr, ev.stream.len, &si))) goto out;
        if (!si.exists || si.sid != cairn__get_be64(k.mv_data)) {
            rc = cairn__corrupt(pos, "stream index entry is filed under another stream");
            goto out;
        }
        if ((uint64_t)ev.version != cairn__get_be64(v.mv_data)) {
            rc = cairn__corrupt(pos, "stream index entry has the wrong version");
            goto out;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    rc = rc == MDB_NOTFOUND
        ? cairn__corrupt(0, "stream index holds more entries than the log has events")
        : cairn__mdb_fail(rc, "verify");
out:
    mdb_cursor_close(c);
    return rc;
}

/* Does the posting key `key` belong to the event? */
static int posting_matches(const uint8_t *key, const cairn_event *ev) {
    uint8_t pk[CAIRN_POST_KEY];
    cairn_slice s;
    size_t cur = 0;
    switch (key[0]) {
    case CAIRN_POST_CATEGORY:
        s = cairn_category(ev->stream.ptr, ev->stream.len);
        cairn__post_key(CAIRN_POST_CATEGORY, s.ptr, s.len, pk);
        return memcmp(pk, key, sizeof pk) == 0;
    case CAIRN_POST_TYPE:
        cairn__post_key(CAIRN_POST_TYPE, ev->type.ptr, ev->type.len, pk);
        return memcmp(pk, key, sizeof pk) == 0;
    case CAIRN_POST_TAG:
        while (cairn_event_tag(ev, &cur, &s)) {
            cairn__post_key(CAIRN_POST_TAG, s.ptr, s.len, pk);
            if (memcmp(pk, key, sizeof pk) == 0) return 1;
        }
        return 0;
    case CAIRN_POST_CORRELATION: {
        cairn_links l;
        int ok = 0;
        if (cairn__links_parse(ev->metadata.ptr, ev->metadata.len, &l) && l.corr) {
            cairn__post_key(CAIRN_POST_CORRELATION, l.corr, l.corr_len, pk);
            ok = memcmp(pk, key, sizeof pk) == 0;
        }
        cairn__links_free(&l);
        return ok;
    }
    default: return 0;
    }
}

static int locate_post(cairn_env *e, MDB_txn *txn, MDB_cursor *clog, uint64_t head, uint64_t tail) {
    MDB_cursor *c;
    MDB_val k, v;
    int rc;
    if ((rc = mdb_cursor_open(txn, e->post, &c))) return cairn__mdb_fail(rc, "verify");
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        cairn_event ev;
        uint64_t pos;
        const uint8_t *key = k.mv_data;
        const char *what;
        if (k.mv_size != CAIRN_POST_KEY || v.mv_size != 8) {
            rc = cairn__corrupt(0, "posting index: malformed entry");
            goto out;
        }
        switch (key[0]) {
        case CAIRN_POST_CATEGORY:
            what = "category index entry does not match the event it points at";
            break;
        case CAIRN_POST_TYPE:
            what = "type index entry does not match the event it points at";
            break;
        case CAIRN_POST_TAG: what = "tag index entry does not match the event it points at"; break;
        case CAIRN_POST_CORRELATION:
            what = "correlation index entry does not match the event it points at";
            break;
        default:
            rc = cairn__corrupt(cairn__get_be64(v.mv_data),
                                "posting index: unknown kind of posting");
            goto out;
        }
        pos = cairn__get_be64(v.mv_data);
        if (pos == 0 || pos > head) {
            rc = cairn__corrupt(pos, "posting index entry points past the log");
            goto out;
        }
        if (tail && pos >= tail) {
            rc = cairn__corrupt(pos, "posting index has an entry for an event of the index tail");
            goto out;
        }
        if ((rc = record_at(clog, pos, &ev, "posting index entry points at a missing event")))
            goto out;
        if (!posting_matches(key, &ev)) {
            rc = cairn__corrupt(pos, what);
            goto out;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    rc = rc == MDB_NOTFOUND
        ? cairn__corrupt(0, "posting index holds more entries than the events imply")
        : cairn__mdb_fail(rc, "verify");
out:
    mdb_cursor_close(c);
    return rc;
}

static int locate_comp(cairn_env *e, MDB_txn *txn, MDB_cursor *clog, uint64_t head) {
    MDB_cursor *c;
    MDB_val k, v;
    int rc;
    if ((rc = mdb_cursor_open(txn, e->comp, &c))) return cairn__mdb_fail(rc, "verify");
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        cairn_event ev;
        uint64_t pos;
        cairn_links l;
        int ok;
        if (k.mv_size != 16 || v.mv_size != 8) {
            rc = cairn__corrupt(0, "compensation index: malformed entry");
            goto out;
        }
        pos = cairn__get_be64(v.mv_data);
        if (pos == 0 || pos > head) {
            rc = cairn__corrupt(pos, "compensation index entry points past the log");
            goto out;
        }
        if ((rc = record_at(clog, pos, &ev, "compensation index entry points at a missing event")))
            goto out;
        ok = cairn__links_parse(ev.metadata.ptr, ev.metadata.len, &l) && l.has_comp &&
            memcmp(l.comp, k.mv_data, 16) == 0;
        cairn__links_free(&l);
        if (!ok) {
            rc = cairn__corrupt(pos,
                                "compensation index entry does not match the event it points at");
            goto out;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    rc = rc == MDB_NOTFOUND
        ? cairn__corrupt(0, "compensation index holds more entries than the events imply")
        : cairn__mdb_fail(rc, "verify");
out:
    mdb_cursor_close(c);
    return rc;
}

/* The record at pos, or 1 when pos is a hole. */
static int record_or_hole(cairn_env *e, MDB_txn *txn, MDB_cursor *clog, uint64_t pos,
                          cairn_event *ev) {
    int rc = record_at(clog, pos, ev, "position missing from the log"), hole = 0;
    if (rc == CAIRN_ECORRUPT && cairn__err()->position == pos &&
        cairn__holes_cover(e, txn, pos, pos, &hole) == CAIRN_OK && hole) {
        cairn__clear_error();
        return 1;
    }
    return rc;
}

/* Every hole entry ends a run of removed positions at or below the head (each run the log
 * pass met had its entry: here is the one that ends none). */
static int locate_holes(cairn_env *e, MDB_txn *txn, MDB_cursor *clog, uint64_t head) {
    MDB_cursor *c;
    MDB_val k, v;
    int rc;
    if ((rc = mdb_cursor_open(txn, e->holes, &c))) return cairn__mdb_fail(rc, "verify");
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        uint8_t kb[8];
        MDB_val lk = {8, kb}, lv;
        uint64_t pos;
        if (k.mv_size != 8 || v.mv_size != 8 + CAIRN_CHAIN) {
            rc = cairn__corrupt(0, "holes: malformed entry");
            goto out;
        }
        pos = cairn__get_be64(k.mv_data);
        if (pos == 0 || pos > head) {
            rc = cairn__corrupt(pos, "hole entry past the head");
            goto out;
        }
        cairn__put_be64(kb, pos);
        if (mdb_cursor_get(clog, &lk, &lv, MDB_SET) == 0) {
            rc = cairn__corrupt(pos, "hole entry for a position the log holds");
            goto out;
        }
        cairn__put_be64(kb, pos + 1);
        if (pos < head && mdb_cursor_get(clog, &lk, &lv, MDB_SET) != 0) {
            rc = cairn__corrupt(pos, "hole entry inside a run of removed positions");
            goto out;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    rc = rc == MDB_NOTFOUND ? cairn__corrupt(0,
                                             "holes holds more entries than the log has runs "
                                             "of removed positions")
                            : cairn__mdb_fail(rc, "verify");
out:
    mdb_cursor_close(c);
    return rc;
}

/* The index tail as of `txn`: its start lies within CAIRN_TAIL_MAX events of the head, its
 * events carry no rollback or compensation links (those are never deferred), and the
 * records verify_chunk met in a tail that has been indexed since are checked now. */
static int verify_tail(cairn_env *e, vstate *vs, MDB_txn *txn, MDB_cursor *clog, uint64_t head,
                       uint64_t *tail, uint64_t *in_tail) {
    MDB_cursor *cids = NULL, *cpost = NULL;
    uint64_t end;
    int rc;

    if ((rc = cairn__tail_start(e, txn, tail))) return rc;
    if (*tail && (*tail > head || head - *tail >= CAIRN_TAIL_MAX))
        return cairn__corrupt(*tail, "meta: the index tail starts out of range");
    end = *tail ? *tail : head + 1;
    if (vs->deferred && vs->deferred < end) {
        if ((rc = mdb_cursor_open(txn, e->ids, &cids)) ||
            (rc = mdb_cursor_open(txn, e->post, &cpost))) {
            rc = cairn__mdb_fail(rc, "verify");
            goto out;
        }
        for (uint64_t pos = vs->deferred; pos < end; pos++) {
            cairn_event ev;
            if ((rc = record_or_hole(e, txn, clog, pos, &ev)) == 1) continue;
            if (rc) goto out;
            if ((rc = check_indexed(vs, txn, cids, cpost, &ev, pos))) goto out;
        }
        vs->deferred = end;
    }
    *in_tail = 0;
    for (uint64_t pos = *tail ? *tail : end; pos <= head; pos++) {
        cairn_event ev;
        cairn_links l;
        int linked;
        if ((rc = record_or_hole(e, txn, clog, pos, &ev)) == 1) continue;
        if (rc) goto out;
        if (*tail) ++*in_tail;
        linked = cairn__links_parse(ev.metadata.ptr, ev.metadata.len, &l);
        cairn__links_free(&l);
        if (linked) {
            rc = cairn__corrupt(pos,
                                "an event with rollback or compensation links in the index tail");
            goto out;
        }
    }
out:
    if (cpost) mdb_cursor_close(cpost);
    if (cids) mdb_cursor_close(cids);
    return rc;
}

/* meta removed (lifecycle.c): events reclaimed ever, 0 when none. */
static uint64_t removed_total(cairn_env *e, MDB_txn *txn) {
    MDB_val k = {7, (void *)"removed"}, v;
    return mdb_get(txn, e->meta, &k, &v) == 0 && v.mv_size == 8 ? cairn__get_be64(v.mv_data) : 0;
}

/* Compares each index's entry count with what the records checked so far imply, in one
 * read transaction whose head must be the one checked: when appends moved the head on,
 * the new records are checked first and the counts taken again. */
static int verify_counts(cairn_env *e, vstate *vs, cairn_progress_fn progress, void *ctx) {
    for (;;) {
        MDB_txn *txn;
        MDB_cursor *clog = NULL;
        MDB_stat st;
        uint64_t head, tail, events, in_tail = 0;
        int rc;

        if ((rc = cairn__read_begin(e, &txn))) return rc;
        cairn__map_bounds(e, txn, &g_lo, &g_hi);
        if ((rc = cairn__head(e, txn, &head))) goto out;
        if (head > vs->head) { /* appended meanwhile: check the new records first */
            cairn__read_end(e, txn);
            vs->head = vs->r->head = head;
            while (vs->next <= vs->head) {
                if ((rc = verify_chunk(e, vs))) return rc;
                if (progress) progress(ctx, vs->r->events, vs->head);
            }
            continue;
        }
        if (removed_total(e, txn) != vs->removed) { /* events reclaimed since the pass began */
            rc = CAIRN__ERETRY;
            goto out;
        }
        if ((rc = mdb_cursor_open(txn, e->log, &clog))) {
            rc = cairn__mdb_fail(rc, "verify");
            goto out;
        }
        if ((rc = verify_tail(e, vs, txn, clog, head, &tail, &in_tail))) goto out;
        events = vs->r->events - in_tail; /* those with id and posting entries */
        if ((rc = mdb_stat(txn, e->ids, &st))) {
            rc = cairn__mdb_fail(rc, "verify");
            goto out;
        }
        if (st.ms_entries != events && (rc = locate_ids(e, txn, clog, head, tail))) goto out;
        if ((rc = mdb_stat(txn, e->sidx, &st))) {
            rc = cairn__mdb_fail(rc, "verify");
            goto out;
        }
        if (st.ms_entries != vs->r->events && (rc = locate_sidx(e, txn, clog, head))) goto out;
        if ((rc = mdb_stat(txn, e->post, &st))) {
            rc = cairn__mdb_fail(rc, "verify");
            goto out;
        }
        if (st.ms_entries != 2 * events + vs->tags + vs->corrs &&
            (rc = locate_post(e, txn, clog, head, tail)))
            goto out;
        if ((rc = mdb_stat(txn, e->comp, &st))) {
            rc = cairn__mdb_fail(rc, "verify");
            goto out;
        }
        if (st.ms_entries != vs->comps && (rc = locate_comp(e, txn, clog, head))) goto out;
        if (e->holes && (rc = mdb_stat(txn, e->holes, &st))) {
            rc = cairn__mdb_fail(rc, "verify");
            goto out;
        }
        if (e->holes && st.ms_entries != vs->runs && (rc = locate_holes(e, txn, clog, head)))
            goto out;
    out:
        if (clog) mdb_cursor_close(clog);
        cairn__read_end(e, txn);
        return rc;
    }
}

/* Every stream's entry matches its key and the sid counter, its versions run 0..version
 * without gaps (from its oldest version left, for a stream the lifecycle rules removed
 * events of: its entry says so and its lifecycle entry exists), and its first event is its
 * own. */
static int verify_streams(cairn_env *e, cairn_verify_report *r) {
    MDB_txn *txn;
    MDB_cursor *cs = NULL, *cx = NULL, *clog = NULL;
    MDB_val k, v, mk = {3, (void *)"sid"}, mv;
    uint64_t max_sid = 0;
    int rc;

    if ((rc = cairn__read_begin(e, &txn))) return rc;
    cairn__map_bounds(e, txn, &g_lo, &g_hi);
    if ((rc = mdb_cursor_open(txn, e->streams, &cs)) || (rc = mdb_cursor_open(txn, e->sidx, &cx)) ||
        (rc = mdb_cursor_open(txn, e->log, &clog))) {
        rc = cairn__mdb_fail(rc, "verify");
        goto out;
    }
    rc = mdb_get(txn, e->meta, &mk, &mv);
    if (rc == 0 && mv.mv_size == 8)
        max_sid = cairn__get_be64(mv.mv_data);
    else if (rc == 0) {
        rc = cairn__corrupt(0, "meta: the stream id counter is not 8 bytes");
        goto out;
    } else if (rc != MDB_NOTFOUND) {
        rc = cairn__mdb_fail(rc, "verify");
        goto out;
    }
    rc = mdb_cursor_get(cs, &k, &v, MDB_FIRST);
    while (rc == 0) {
        uint8_t *sv = v.mv_data, key[CAIRN_STREAM_KEY_MAX];
        const char *name = (const char *)sv + CAIRN_STREAM_VAL_HEADER;
        size_t name_len = v.mv_size - CAIRN_STREAM_VAL_HEADER, klen;
        int show = (int)(v.mv_size < CAIRN_STREAM_VAL_HEADER ? 0 : name_len > 200 ? 200 : name_len);
        int64_t expect = 0, first_ver = 0;
        uint64_t first_pos = 0, sid;
        MDB_val xk = {8, NULL}, xv;
        int xrc, life;
        if (v.mv_size < CAIRN_STREAM_VAL_HEADER || name_len == 0 || name_len > CAIRN_MAX_STREAM) {
            rc = cairn__corrupt(0, "corrupt stream entry");
            goto out;
        }
        klen = cairn__stream_key(name, name_len, key);
        if (!same_bytes(k.mv_data, k.mv_size, key, klen)) {
            rc = cairn__fail(CAIRN_ECORRUPT, "stream %.*s: entry filed under another name's key",
                             show, name);
            goto out;
        }
        sid = cairn__get_be64(sv);
        if (sid == 0 || sid > max_sid) {
            rc = cairn__fail(CAIRN_ECORRUPT,
                             "stream %.*s: stream id %llu beyond the counter in meta (%llu)", show,
                             name, (unsigned long long)sid, (unsigned long long)max_sid);
            goto out;
        }
        if ((life = (cairn__get_be32(sv + 8) & CAIRN__SF_LIFE) != 0)) {
            cairn_life l;
            int found;
            if ((rc = cairn__life_get(e, txn, key, klen, &l, &found))) goto out;
            if (!found) {
                rc = cairn__fail(CAIRN_ECORRUPT, "stream %.*s: its lifecycle entry is missing",
                                 show, name);
                goto out;
            }
        }
        xk.mv_data = sv;
        xrc = mdb_cursor_get(cx, &xk, &xv, MDB_SET);
        if (xrc == 0) xrc = mdb_cursor_get(cx, &xk, &xv, MDB_FIRST_DUP);
        if (xrc == 0 && life && xv.mv_size == 16) /* its oldest events may be gone */
            expect = first_ver = (int64_t)cairn__get_be64(xv.mv_data);
        while (xrc == 0) {
            if (xv.mv_size != 16) {
                rc = cairn__corrupt(0, "stream index: malformed entry");
                goto out;
            }
            if ((int64_t)cairn__get_be64(xv.mv_data) != expect) {
                rc = cairn__corrupt(cairn__get_be64((uint8_t *)xv.mv_data + 8),
                                    "stream versions have a gap");
                goto out;
            }
            if (expect == first_ver) first_pos = cairn__get_be64((uint8_t *)xv.mv_data + 8);
            expect++;
            xrc = mdb_cursor_get(cx, &xk, &xv, MDB_NEXT_DUP);
        }
        if (xrc != MDB_NOTFOUND) {
            rc = cairn__mdb_fail(xrc, "verify");
            goto out;
        }
        if (expect == 0 && !life) {
            rc = cairn__fail(CAIRN_ECORRUPT, "stream %.*s has no events indexed", show, name);
            goto out;
        }
        if (expect > first_ver) {
            cairn_event ev;
            if ((rc = record_at(clog, first_pos, &ev,
                                "stream index entry points at a missing event")))
                goto out;
            if (!same_bytes(ev.stream.ptr, ev.stream.len, name, name_len) ||
                ev.version != first_ver) {
                rc = cairn__corrupt(
                    first_pos, "stream index: the stream's first event belongs to another stream");
                goto out;
            }
        }
        r->streams++;
        rc = mdb_cursor_get(cs, &k, &v, MDB_NEXT);
    }
    rc = rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "verify");
out:
    if (clog) mdb_cursor_close(clog);
    if (cx) mdb_cursor_close(cx);
    if (cs) mdb_cursor_close(cs);
    cairn__read_end(e, txn);
    return rc;
}

/* The chain from genesis, the store format and meta chain1 as the pass starts. */
static int chain_start(cairn_env *e, vstate *vs) {
    MDB_txn *txn;
    MDB_val k = {6, (void *)"chain1"}, v;
    int rc;
    memcpy(vs->chain, cairn__chain_genesis(), CAIRN_CHAIN);
    vs->known = 1;
    if ((rc = cairn__read_begin(e, &txn))) return rc;
    vs->removed = removed_total(e, txn);
    if ((rc = cairn__store_format(e, txn, &vs->format))) goto out;
    rc = mdb_get(txn, e->meta, &k, &v);
    if (rc == 0 && v.mv_size == 8 + CAIRN_CHAIN && cairn__get_be64(v.mv_data)) {
        vs->c1pos = cairn__get_be64(v.mv_data);
        memcpy(vs->c1hash, (uint8_t *)v.mv_data + 8, CAIRN_CHAIN);
        rc = vs->c1pos > vs->head ? cairn__corrupt(vs->c1pos,
                                                   "meta chain1 names a position "
                                                   "past the head")
                                  : CAIRN_OK;
    } else if (rc == 0) {
        rc = cairn__corrupt(0, "meta: damaged chain1 entry");
    } else {
        rc = rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "verify");
    }
out:
    cairn__read_end(e, txn);
    return rc;
}

int cairn_verify_all(cairn_store *s, cairn_verify_report *report, cairn_progress_fn progress,
                     void *ctx, cairn_damage_fn damage, void *damage_ctx) {
    cairn_verify_report r;
    vstate *vs;
    int rc, tries = 0;

    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!(vs = calloc(1, sizeof *vs))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
again:
    memset(&r, 0, sizeof r);
    memset(vs, 0, sizeof *vs);
    if ((rc = cairn_head(s, &r.head))) goto out;
    vs->next = 1;
    vs->head = r.head;
    vs->r = &r;
    vs->comp_dbi = s->env->comp;
    vs->damage = damage, vs->damage_ctx = damage_ctx;
    if ((rc = chain_start(s->env, vs))) goto out;
    while (vs->next <= vs->head) {
        if ((rc = verify_chunk(s->env, vs))) goto out;
        if (progress) progress(ctx, vs->next - 1, r.head);
    }
    /* the counts and streams passes compare totals: after a damaged record they would only
     * restate it */
    if (!vs->damaged && (rc = verify_counts(s->env, vs, progress, ctx))) {
        /* retention removed events the pass had counted: what it compared is gone, and the
         * check starts again (a store reclaiming without pause: after a few tries, the
         * counts are not compared) */
        if (rc == CAIRN__ERETRY && ++tries < 4) goto again;
        if (rc != CAIRN__ERETRY) goto out;
        rc = CAIRN_OK;
    }
    if (!vs->damaged) rc = verify_streams(s->env, &r);
    /* the keys of live subjects: damage of its own, looked for after damage found above too */
    if (rc == CAIRN_OK) rc = cairn__keys_verify(s->env, keys_seen, vs);
    memcpy(r.chain, vs->chain, CAIRN_CHAIN);
    if (vs->damaged) {
        *cairn__err() = vs->first;
        rc = CAIRN_ECORRUPT;
    }
out:
    if (report) *report = r;
    free(vs);
    return rc;
}

int cairn_verify(cairn_store *s, cairn_verify_report *report, cairn_progress_fn progress,
                 void *ctx) {
    return cairn_verify_all(s, report, progress, ctx, NULL, NULL);
}
