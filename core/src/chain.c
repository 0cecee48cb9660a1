/*
 * chain.c -- the tamper-evident hash chain over the log (docs/FORMAT.md "The hash chain"):
 * each position's BLAKE2b-256 over the previous one's and the record, the hashes removed
 * positions leave in `holes`, and the upgrade of a format-1 store.
 */
#include <pthread.h>
#include <sodium.h>

#include "storage.h"

static const MDB_val K_MAGIC = {5, (void *)"magic"};
static const MDB_val K_CHAIN1 = {6, (void *)"chain1"};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_ok;
static uint8_t g_genesis[CAIRN_CHAIN];
/* A BLAKE2b-256 state just initialised: each link copies it rather than running init (its
 * parameter block and IV), a tenth of a small record's hashing. */
static crypto_generichash_state g_start;

static void init_once(void) {
    static const uint8_t seed[16] = "cairn-chain-v1\0"; /* 14 bytes and two NULs */
    if (sodium_init() < 0) return;
    crypto_generichash(g_genesis, CAIRN_CHAIN, seed, sizeof seed, NULL, 0);
    crypto_generichash_init(&g_start, NULL, 0, CAIRN_CHAIN);
    g_ok = 1;
}

int cairn__chain_init(void) {
    pthread_once(&g_once, init_once);
    return g_ok ? CAIRN_OK : cairn__fail(CAIRN_EINTERNAL, "libsodium failed to initialise");
}

const uint8_t *cairn__chain_genesis(void) { return g_genesis; }

void cairn__chain_hash(const uint8_t prev[CAIRN_CHAIN], uint64_t position, const void *rec,
                       size_t len, uint8_t chain[CAIRN_CHAIN]) {
    crypto_generichash_state st = g_start;
    cairn_slice part[2];
    crypto_generichash_update(&st, prev, CAIRN_CHAIN);
    if (cairn__record_chain_input(rec, len, part)) {
        uint8_t pb[8];
        cairn__put_le64(pb, position);
        crypto_generichash_update(&st, pb, 8);
    }
    crypto_generichash_update(&st, part[0].ptr, part[0].len);
    if (part[1].len) crypto_generichash_update(&st, part[1].ptr, part[1].len);
    crypto_generichash_final(&st, chain, CAIRN_CHAIN);
}

int cairn__store_format(cairn_env *e, MDB_txn *txn, int *format) {
    MDB_val v;
    int rc = mdb_get(txn, e->meta, (MDB_val *)&K_MAGIC, &v);
    if (rc) return cairn__mdb_fail(rc, "read meta");
    if (v.mv_size != 15) return cairn__fail(CAIRN_ECORRUPT, "meta: damaged magic");
    *format = (int)(((uint32_t)((uint8_t *)v.mv_data)[12] << 16) |
                    ((uint32_t)((uint8_t *)v.mv_data)[13] << 8) | ((uint8_t *)v.mv_data)[14]);
    return CAIRN_OK;
}

/* meta chain1: *pos 0 when absent */
static int get_chain1(cairn_env *e, MDB_txn *txn, uint64_t *pos, uint8_t hash[CAIRN_CHAIN]) {
    MDB_val v;
    int rc = mdb_get(txn, e->meta, (MDB_val *)&K_CHAIN1, &v);
    *pos = 0;
    if (rc == MDB_NOTFOUND) return CAIRN_OK;
    if (rc) return cairn__mdb_fail(rc, "read meta");
    if (v.mv_size != 8 + CAIRN_CHAIN || !cairn__get_be64(v.mv_data))
        return cairn__fail(CAIRN_ECORRUPT, "meta: damaged chain1 entry");
    *pos = cairn__get_be64(v.mv_data);
    memcpy(hash, (uint8_t *)v.mv_data + 8, CAIRN_CHAIN);
    return CAIRN_OK;
}

/* `holes` (storage.h): last position of a run -> (first position u64 BE, chain hash at the
 * last).  The entry at pos: 1 found, 0 none, or a negative code; first may be NULL. */
#define HOLE_VAL (8 + CAIRN_CHAIN)
static int hole_get(cairn_env *e, MDB_txn *txn, uint64_t pos, uint64_t *first,
                    uint8_t hash[CAIRN_CHAIN]) {
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    int rc;
    if (!e->holes) return 0; /* a read-only open of a store that never had one */
    cairn__put_be64(kb, pos);
    rc = mdb_get(txn, e->holes, &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return cairn__mdb_fail(rc, "read holes");
    if (v.mv_size != HOLE_VAL || cairn__get_be64(v.mv_data) > pos ||
        cairn__get_be64(v.mv_data) == 0)
        return cairn__corrupt(pos, "damaged hole entry");
    if (first) *first = cairn__get_be64(v.mv_data);
    memcpy(hash, (uint8_t *)v.mv_data + 8, CAIRN_CHAIN);
    return 1;
}

int cairn__holes_cover(cairn_env *e, MDB_txn *txn, uint64_t lo, uint64_t hi, int *yes) {
    MDB_cursor *c;
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    int rc;

    *yes = 0;
    if (!e->holes) return CAIRN_OK;
    if ((rc = mdb_cursor_open(txn, e->holes, &c))) return cairn__mdb_fail(rc, "read holes");
    cairn__put_be64(kb, hi); /* the run holding hi ends at the first entry at or after it */
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && k.mv_size == 8 && v.mv_size == HOLE_VAL && cairn__get_be64(v.mv_data) <= lo)
        *yes = 1;
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "read holes");
}

/* The largest hole entry below pos (*at 0: none). */
static int hole_below(cairn_env *e, MDB_txn *txn, uint64_t pos, uint64_t *at,
                      uint8_t hash[CAIRN_CHAIN]) {
    MDB_cursor *c;
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    int rc;
    *at = 0;
    if (!e->holes) return CAIRN_OK;
    if ((rc = mdb_cursor_open(txn, e->holes, &c))) return cairn__mdb_fail(rc, "read holes");
    cairn__put_be64(kb, pos);
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    rc = rc == 0 || rc == MDB_NOTFOUND ? mdb_cursor_get(c, &k, &v, rc ? MDB_LAST : MDB_PREV) : rc;
    if (rc == 0) {
        if (k.mv_size != 8 || v.mv_size != HOLE_VAL) {
            rc = cairn__corrupt(pos, "damaged hole entry");
        } else {
            *at = cairn__get_be64(k.mv_data);
            memcpy(hash, (uint8_t *)v.mv_data + 8, CAIRN_CHAIN);
        }
    } else {
        rc = rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "read holes");
    }
    mdb_cursor_close(c);
    return rc;
}

/* Hashes the records from..to (every one present, format 1) onto h. */
static int walk(cairn_env *e, MDB_txn *txn, uint64_t from, uint64_t to, uint8_t h[CAIRN_CHAIN]) {
    MDB_cursor *c;
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    uint64_t p = from;
    int rc;
    if (from > to) return CAIRN_OK;
    if ((rc = mdb_cursor_open(txn, e->log, &c))) return cairn__mdb_fail(rc, "read log");
    cairn__put_be64(kb, from);
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    for (; rc == 0 && p <= to; p++) {
        cairn_event ev;
        cairn_rec_info info;
        if (k.mv_size != 8 || cairn__get_be64(k.mv_data) != p) {
            rc = cairn__corrupt(p, "position missing from the log (its chain hash is unknown)");
            goto out;
        }
        if ((rc = cairn__record_decode_ex(v.mv_data, v.mv_size, p, &ev, &info))) goto out;
        if (info.chain)
            memcpy(h, info.chain, CAIRN_CHAIN);
        else
            cairn__chain_hash(h, p, v.mv_data, v.mv_size, h);
        if (p < to) rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
        rc = cairn__corrupt(p, "position missing from the log");
    else if (rc > 0)
        rc = cairn__mdb_fail(rc, "read log");
out:
    mdb_cursor_close(c);
    return rc;
}

/* The nearest position below pos whose hash is known without hashing records (*at, its
 * hash into h): a record that stores it, the end of a run of removed positions (its hole
 * entry), the genesis (0), or a format-1 record (computed as such). */
static int known_below(cairn_env *e, MDB_txn *txn, uint64_t pos, uint64_t *at,
                       uint8_t h[CAIRN_CHAIN]) {
    MDB_cursor *c;
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    uint64_t p = pos - 1;
    int rc;
    *at = 0;
    if ((rc = mdb_cursor_open(txn, e->log, &c))) return cairn__mdb_fail(rc, "read log");
    cairn__put_be64(kb, pos);
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
    for (;;) {
        cairn_event ev;
        cairn_rec_info info;
        if (rc == 0) rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
        if (p == 0) {
            memcpy(h, g_genesis, CAIRN_CHAIN);
            rc = CAIRN_OK;
            break;
        }
        if (rc == MDB_NOTFOUND ||
            (rc == 0 && (k.mv_size != 8 || cairn__get_be64(k.mv_data) != p))) {
            rc = hole_get(e, txn, p, NULL, h); /* p is missing: it ends a run */
            rc = rc < 0 ? rc
                : rc    ? CAIRN_OK
                        : cairn__corrupt(p, "position missing from the log with no hole entry");
            break;
        }
        if (rc) {
            rc = cairn__mdb_fail(rc, "read log");
            break;
        }
        if ((rc = cairn__record_decode_ex(v.mv_data, v.mv_size, p, &ev, &info))) break;
        if (info.chain) {
            memcpy(h, info.chain, CAIRN_CHAIN);
            break;
        }
        if (info.format == 1) {
            rc = cairn__chain_at(e, txn, p, h);
            break;
        }
        p--;
    }
    mdb_cursor_close(c);
    *at = p;
    return rc;
}

int cairn__chain_at(cairn_env *e, MDB_txn *txn, uint64_t pos, uint8_t out[CAIRN_CHAIN]) {
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    uint64_t c1, from;
    cairn_event ev;
    cairn_rec_info info;
    int rc;

    if (pos == 0) {
        memcpy(out, g_genesis, CAIRN_CHAIN);
        return CAIRN_OK;
    }
    cairn__put_be64(kb, pos);
    rc = mdb_get(txn, e->log, &k, &v);
    if (rc == MDB_NOTFOUND) {
        if ((rc = hole_get(e, txn, pos, NULL, out)) < 0) return rc;
        return rc ? CAIRN_OK
                  : cairn__corrupt(pos, "position missing from the log with no hole entry");
    }
    if (rc) return cairn__mdb_fail(rc, "read log");
    if ((rc = cairn__record_decode_ex(v.mv_data, v.mv_size, pos, &ev, &info))) return rc;
    if (info.chain) {
        memcpy(out, info.chain, CAIRN_CHAIN);
        return CAIRN_OK;
    }
    if (info.format == 3) { /* from the nearest known hash below (at most 64 back) */
        if ((rc = known_below(e, txn, pos, &from, out))) return rc;
        return walk(e, txn, from + 1, pos, out);
    }
    /* format 1: meta chain1, else from the nearest known hash below (a hole entry: the
     * records between are all there; else genesis) */
    if ((rc = get_chain1(e, txn, &c1, out))) return rc;
    if (c1 == pos) return CAIRN_OK;
    if ((rc = hole_below(e, txn, pos, &from, out))) return rc;
    if (!from) memcpy(out, g_genesis, CAIRN_CHAIN);
    return walk(e, txn, from + 1, pos, out);
}

static int present(cairn_env *e, MDB_txn *txn, uint64_t pos, int *yes) {
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    int rc;
    cairn__put_be64(kb, pos);
    rc = mdb_get(txn, e->log, &k, &v);
    *yes = rc == 0;
    return rc == 0 || rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "read log");
}

#define PUT(call, what)                                                         \
    do {                                                                        \
        int prc_ = (call);                                                      \
        if (prc_ == MDB_MAP_FULL) return CAIRN__EMAPFULL;                       \
        if (prc_ && prc_ != MDB_NOTFOUND) return cairn__mdb_fail(prc_, (what)); \
    } while (0)

int cairn__chain_remove(cairn_env *e, MDB_txn *txn, uint64_t pos, const void *rec, size_t len) {
    uint8_t kb[8], val[HOLE_VAL];
    MDB_val k = {8, kb}, v = {HOLE_VAL, val};
    cairn_event ev;
    cairn_rec_info info;
    uint64_t head, first = pos, left_first;
    int rc, next = 1, left = 0;

    if (!e->holes) /* as subscriptions: the environment was set up by a read-only open */
        return cairn__fail(CAIRN_EREADONLY,
                           "no holes database (the store was first opened read-only here)");
    if ((rc = cairn__record_decode_ex(rec, len, pos, &ev, &info))) return rc;
    if ((rc = cairn__head(e, txn, &head))) return rc;
    if (pos < head && (rc = present(e, txn, pos + 1, &next))) return rc;
    /* the run ending at pos-1, if any, now ends at pos or later: it starts this one */
    if (pos > 1 && (left = hole_get(e, txn, pos - 1, &left_first, val + 8)) < 0) return left;
    if (left) first = left_first;
    cairn__put_be64(val, first);
    if (next) { /* pos ends its run: the entry is here, with rec's hash */
        if (info.chain) {
            memcpy(val + 8, info.chain, CAIRN_CHAIN);
        } else { /* format 1: from the hash of pos-1 (val + 8 already when it is a hole) */
            if (!left && (rc = cairn__chain_at(e, txn, pos - 1, val + 8))) return rc;
            cairn__chain_hash(val + 8, pos, rec, len, val + 8);
        }
    } else { /* pos+1 starts a run: its entry (at its end, the first one after pos) now
              * starts at `first` */
        MDB_cursor *c;
        cairn__put_be64(kb, pos + 1);
        if ((rc = mdb_cursor_open(txn, e->holes, &c))) return cairn__mdb_fail(rc, "read holes");
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == 8 && v.mv_size == HOLE_VAL &&
            cairn__get_be64(v.mv_data) == pos + 1) {
            memcpy(val + 8, (uint8_t *)v.mv_data + 8, CAIRN_CHAIN);
            memcpy(kb, k.mv_data, 8); /* not LMDB's pointer: the put below may move its page */
        } else {
            rc = rc && rc != MDB_NOTFOUND
                ? cairn__mdb_fail(rc, "read holes")
                : cairn__corrupt(pos + 1, "removed position with no hole entry for its run");
        }
        mdb_cursor_close(c);
        if (rc) return rc;
    }
    k.mv_size = 8, k.mv_data = kb;
    if (next) cairn__put_be64(kb, pos);
    v.mv_size = HOLE_VAL, v.mv_data = val;
    PUT(mdb_put(txn, e->holes, &k, &v, 0), "write holes");
    if (left) {
        cairn__put_be64(kb, pos - 1);
        k.mv_size = 8, k.mv_data = kb;
        PUT(mdb_del(txn, e->holes, &k, NULL), "write holes");
    }
    /* the head (and its timestamp) stays when its record goes: positions are never reused
     * and timestamps never go back */
    if (pos == head) return cairn__head_keep(e, txn, head, ev.timestamp);
    return CAIRN_OK;
}

int cairn__chain_upgrade(cairn_env *e, MDB_txn *txn) {
    MDB_cursor *c;
    MDB_val k, v;
    uint8_t h[CAIRN_CHAIN], c1[8 + CAIRN_CHAIN], magic[15];
    uint64_t last = 0;
    int rc, format;

    if ((rc = cairn__store_format(e, txn, &format))) return rc;
    if (format >= CAIRN_STORE_FORMAT) return CAIRN_OK;
    if (format != 1) goto bump; /* format 2: its records stay as they are */
    memcpy(h, g_genesis, CAIRN_CHAIN);
    if ((rc = mdb_cursor_open(txn, e->log, &c))) return cairn__mdb_fail(rc, "read log");
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        cairn_event ev;
        uint64_t pos = k.mv_size == 8 ? cairn__get_be64(k.mv_data) : 0;
        if (pos != last + 1) { /* a format-1 store has no holes */
            rc = cairn__corrupt(last + 1, "position missing from the log");
            break;
        }
        if ((rc = cairn__record_decode(v.mv_data, v.mv_size, pos, &ev))) break;
        if (((const uint8_t *)v.mv_data)[8] != 1) {
            rc = cairn__corrupt(pos, "a format-2 record in a format-1 store");
            break;
        }
        cairn__chain_hash(h, pos, v.mv_data, v.mv_size, h);
        last = pos;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) rc = CAIRN_OK;
    if (rc) return rc > 0 ? cairn__mdb_fail(rc, "read log") : rc;
    if (last) {
        cairn__put_be64(c1, last);
        memcpy(c1 + 8, h, CAIRN_CHAIN);
        v.mv_size = sizeof c1, v.mv_data = c1;
        PUT(mdb_put(txn, e->meta, (MDB_val *)&K_CHAIN1, &v, 0), "write meta");
    }
bump:
    memcpy(magic, "cairn-store\0\0\0", 15);
    magic[14] = CAIRN_STORE_FORMAT;
    v.mv_size = sizeof magic, v.mv_data = magic;
    PUT(mdb_put(txn, e->meta, (MDB_val *)&K_MAGIC, &v, 0), "write meta");
    return CAIRN_OK;
}

int cairn_chain_head(cairn_store *s, uint64_t *pos, uint8_t hash[32]) {
    MDB_txn *txn;
    uint64_t head;
    int rc;
    cairn__clear_error();
    if (!pos || !hash) return cairn__fail(CAIRN_EINVAL, "pos/hash: NULL");
    if ((rc = cairn__store_check(s))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    if ((rc = cairn__head(s->env, txn, &head)) == CAIRN_OK &&
        (rc = cairn__chain_at(s->env, txn, head, hash)) == CAIRN_OK)
        *pos = head;
    cairn__read_end(s->env, txn);
    return rc;
}
