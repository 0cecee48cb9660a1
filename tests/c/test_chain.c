/*
 * test_chain.c -- the hash chain (docs/FORMAT.md "The hash chain"): chain hashes recomputed
 * here from the stored bytes with libsodium alone, cairn_chain_head, removed positions
 * (cairn__chain_remove, as the lifecycle code calls it: runs in both orders, merging runs,
 * the newest record, everything) with verify passing across them, and every byte of a
 * record flipped (with and without its checksum resealed) and a hole entry altered, each
 * found by verify naming the position.
 *
 * The store: positions 1..10, event i in its own stream "x-i" (type T, data {"i":i}), so
 * that removing an event here (record, id, stream, postings) leaves a consistent store.
 */
#include "support.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include <lmdb.h>

#include "storage.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#define N 10

static int fx_setup_chain(void **state) {
    if (fx_setup(state) != 0) return -1;
    fixture *fx = *state;
    cairn_append_req q[N];
    cairn_append_result r[N];
    cairn_event_in e[N];
    static char names[N][8], data[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "x-%d", i + 1);
        snprintf(data[i], sizeof data[i], "{\"i\":%d}", i + 1);
        e[i] = ev_make("T", data[i]);
        q[i].stream.ptr = names[i], q[i].stream.len = strlen(names[i]);
        q[i].expected = CAIRN_NO_STREAM, q[i].events = &e[i], q[i].nevents = 1;
    }
    /* two batches, so that nothing stays in the index tail */
    if (cairn_append_batch(fx->store, q, 6, r) || cairn_append_batch(fx->store, q + 6, 4, r))
        return -1;
    return 0;
}

/* ---------------------------------------------------------------------------------
 * The chain recomputed from the stored bytes, independently of the core
 * --------------------------------------------------------------------------------- */
static void genesis(uint8_t h[32]) {
    static const uint8_t seed[16] = "cairn-chain-v1\0";
    crypto_generichash(h, 32, seed, 16, NULL, 0);
}

/* The chain hash of every position 1..head (holes taken from `holes`), into out[pos]. */
static void recompute(cairn_store *s, uint8_t (*out)[32], uint64_t head) {
    MDB_txn *txn;
    genesis(out[0]);
    CHECK_OK(cairn__read_begin(s->env, &txn));
    for (uint64_t p = 1; p <= head; p++) {
        uint8_t kb[8];
        MDB_val k = {8, kb}, v;
        cairn__put_be64(kb, p);
        if (mdb_get(txn, s->env->log, &k, &v) == 0) {
            const uint8_t *r = v.mv_data;
            size_t after = 34 + ((r[9] & 8) ? 32 : 0); /* format 3: hash at 34 when flag 8 */
            uint8_t pb[8];
            crypto_generichash_state st;
            assert_int_equal(r[8], 3);
            cairn__put_le64(pb, p);
            crypto_generichash_init(&st, NULL, 0, 32);
            crypto_generichash_update(&st, out[p - 1], 32);
            crypto_generichash_update(&st, pb, 8);
            crypto_generichash_update(&st, r + 8, 34 - 8);
            crypto_generichash_update(&st, r + after, v.mv_size - after);
            crypto_generichash_final(&st, out[p], 32);
            if (r[9] & 8) assert_memory_equal(out[p], r + 34, 32); /* the stored hash */
        } else {
            memset(out[p], 0, 32); /* inside a run: unknown */
            if (mdb_get(txn, s->env->holes, &k, &v) == 0)
                memcpy(out[p], (uint8_t *)v.mv_data + 8, 32);
        }
    }
    cairn__read_end(s->env, txn);
}

static void check_head(cairn_store *s, uint64_t want_pos, const uint8_t want[32]) {
    uint64_t pos;
    uint8_t h[32];
    CHECK_OK(cairn_chain_head(s, &pos, h));
    assert_int_equal(pos, want_pos);
    assert_memory_equal(h, want, 32);
}

static void verify_ok(cairn_store *s, uint64_t events) {
    cairn_verify_report rep;
    uint64_t pos;
    uint8_t h[32];
    CHECK_OK(cairn_verify(s, &rep, NULL, NULL));
    assert_int_equal(rep.events, events);
    CHECK_OK(cairn_chain_head(s, &pos, h));
    assert_int_equal(rep.head, pos);
    assert_memory_equal(rep.chain, h, 32);
}

static void expect_damage(cairn_store *s, uint64_t pos, const char *words) {
    cairn_verify_report rep;
    int rc = cairn_verify(s, &rep, NULL, NULL);
    if (rc != CAIRN_ECORRUPT)
        fail_msg("verify -> %d (%s), want CAIRN_ECORRUPT at %llu", rc, cairn_errmsg(),
                 (unsigned long long)pos);
    if (cairn_last_error()->position != pos || (words && !strstr(cairn_errmsg(), words)))
        fail_msg("verify reported position %llu: \"%s\"; want position %llu and \"%s\"",
                 (unsigned long long)cairn_last_error()->position, cairn_errmsg(),
                 (unsigned long long)pos, words ? words : "");
}

static void chain_of_a_new_store(void **state) {
    fixture *fx = *state;
    uint8_t want[N + 4][32], g[32];
    cairn_store *empty;
    char path[320];
    genesis(g);
    snprintf(path, sizeof path, "%s/empty", fx->dir);
    CHECK_OK(open_store(path, CAIRN_DURABLE_NONE, 0, 0, &empty));
    check_head(empty, 0, g);
    verify_ok(empty, 0);
    cairn_close(empty);

    recompute(fx->store, want, N);
    check_head(fx->store, N, want[N]);
    verify_ok(fx->store, N);
    /* single appends (the index tail) and a two-event call chain on */
    CHECK_OK(append_one(fx->store, "y-1", CAIRN_ANY, "T", NULL, NULL));
    CHECK_OK(append_n(fx->store, "y-2", CAIRN_ANY, "T", 2, NULL));
    recompute(fx->store, want, N + 3);
    check_head(fx->store, N + 3, want[N + 3]);
    verify_ok(fx->store, N + 3);
}

/* ---------------------------------------------------------------------------------
 * Removing events as the lifecycle code does: cairn__chain_remove, then the record and
 * every index entry of the event.  The stream's entry goes with its last event (removed
 * here only as whole streams, so that the stream checks of verify still hold).
 * --------------------------------------------------------------------------------- */
static void del_posting(MDB_txn *txn, MDB_dbi post, int kind, const void *name, size_t len,
                        uint8_t *posb) {
    uint8_t pk[CAIRN_POST_KEY];
    MDB_val x = {sizeof pk, pk}, v = {8, posb};
    cairn__post_key(kind, name, len, pk);
    int rc = mdb_del(txn, post, &x, &v);
    assert_true(rc == 0 || rc == MDB_NOTFOUND); /* a repeated tag has one posting */
}

static void remove_event(cairn_store *s, uint64_t pos) {
    cairn_env *e = s->env;
    MDB_txn *txn;
    uint8_t kb[8], sk[CAIRN_STREAM_KEY_MAX], sv[16];
    MDB_val k = {8, kb}, v, x;
    cairn_event ev;
    cairn_stream_info si;
    cairn_slice cat, tag;
    cairn_links l;
    size_t cur = 0;

    CHECK_OK(cairn__write_begin(e, CAIRN_DURABLE_NONE, &txn));
    cairn__put_be64(kb, pos);
    assert_int_equal(mdb_get(txn, e->log, &k, &v), 0);
    CHECK_OK(cairn__record_decode(v.mv_data, v.mv_size, pos, &ev));
    CHECK_OK(cairn__chain_remove(e, txn, pos, v.mv_data, v.mv_size));
    CHECK_OK(cairn__stream_lookup(e, txn, ev.stream.ptr, ev.stream.len, &si));
    assert_true(si.exists);
    x.mv_size = 16, x.mv_data = ev.id;
    assert_int_equal(mdb_del(txn, e->ids, &x, NULL), 0);
    cairn__put_be64(sk, si.sid);
    cairn__put_be64(sv, (uint64_t)ev.version);
    cairn__put_be64(sv + 8, pos);
    x.mv_size = 8, x.mv_data = sk;
    v.mv_size = 16, v.mv_data = sv;
    assert_int_equal(mdb_del(txn, e->sidx, &x, &v), 0);
    cat = cairn_category(ev.stream.ptr, ev.stream.len);
    del_posting(txn, e->post, CAIRN_POST_CATEGORY, cat.ptr, cat.len, kb);
    del_posting(txn, e->post, CAIRN_POST_TYPE, ev.type.ptr, ev.type.len, kb);
    while (cairn_event_tag(&ev, &cur, &tag))
        del_posting(txn, e->post, CAIRN_POST_TAG, tag.ptr, tag.len, kb);
    if (cairn__links_parse(ev.metadata.ptr, ev.metadata.len, &l) && l.corr)
        del_posting(txn, e->post, CAIRN_POST_CORRELATION, l.corr, l.corr_len, kb);
    cairn__links_free(&l);
    x.mv_size = 8, x.mv_data = sk;
    if (mdb_get(txn, e->sidx, &x, &v) == MDB_NOTFOUND) { /* its stream's last event */
        x.mv_size = cairn__stream_key(ev.stream.ptr, ev.stream.len, sk), x.mv_data = sk;
        assert_int_equal(mdb_del(txn, e->streams, &x, NULL), 0);
    }
    k.mv_size = 8, k.mv_data = kb;
    assert_int_equal(mdb_del(txn, e->log, &k, NULL), 0);
    assert_int_equal(cairn__write_commit(e, txn), 0);
}

/* The positions that have a hole entry, as a bit mask; each entry's first position is
 * where its run of positions missing from the log starts. */
static unsigned holes_mask(cairn_store *s) {
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    unsigned m = 0;
    CHECK_OK(cairn__read_begin(s->env, &txn));
    assert_int_equal(mdb_cursor_open(txn, s->env->holes, &c), 0);
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        uint64_t end = cairn__get_be64(k.mv_data), first;
        uint8_t kb[8];
        MDB_val lk = {8, kb}, lv;
        assert_int_equal(v.mv_size, 40);
        first = cairn__get_be64(v.mv_data);
        assert_true(first >= 1 && first <= end);
        for (uint64_t p = first - 1; p <= end + 1; p++) { /* missing first..end, not around */
            int missing;
            cairn__put_be64(kb, p);
            missing = mdb_get(txn, s->env->log, &lk, &lv) == MDB_NOTFOUND;
            if (p == 0 || p > N) continue;
            assert_int_equal(missing, p >= first && p <= end);
        }
        m |= 1u << end;
    }
    mdb_cursor_close(c);
    cairn__read_end(s->env, txn);
    return m;
}

/* The read paths see a removed position as a hole, not as damage. */
static void reads_skip(cairn_store *s, unsigned removed) {
    rec *v;
    size_t n, want = 0;
    cairn_event ev;
    for (uint64_t p = 1; p <= N; p++) {
        int rc = cairn_get(s, p, &ev);
        if (removed & (1u << p)) {
            CHECK_RC(rc, CAIRN_ENOTFOUND);
        } else {
            CHECK_OK(rc);
            want++;
        }
    }
    for (int back = 0; back < 2; back++) {
        CHECK_OK(read_all(s, 0, back, 0, NULL, &v, &n));
        assert_int_equal(n, want);
        for (size_t i = 0; i < n; i++) assert_false(removed & (1u << v[i].position));
        free(v);
    }
}

#define BIT(p) (1u << (p))

static void removing_keeps_the_chain(void **state) {
    fixture *fx = *state;
    uint8_t want[N + 2][32], got[N + 2][32];
    recompute(fx->store, want, N);

    remove_event(fx->store, 5); /* one in the middle */
    assert_int_equal(holes_mask(fx->store), BIT(5));
    verify_ok(fx->store, N - 1);
    recompute(fx->store, got, N);
    assert_memory_equal(got[5], want[5], 32);

    remove_event(fx->store, 3); /* a run ascending: 3, 4 (5 is gone: 3..5 merge) */
    assert_int_equal(holes_mask(fx->store), BIT(3) | BIT(5));
    remove_event(fx->store, 4);
    assert_int_equal(holes_mask(fx->store), BIT(5));
    verify_ok(fx->store, N - 3);

    remove_event(fx->store, 8); /* a run descending: 8, 7 */
    remove_event(fx->store, 7);
    assert_int_equal(holes_mask(fx->store), BIT(5) | BIT(8));
    verify_ok(fx->store, N - 5);
    reads_skip(fx->store, BIT(3) | BIT(4) | BIT(5) | BIT(7) | BIT(8));
    remove_event(fx->store, 6); /* joins 3..5 and 7..8 */
    assert_int_equal(holes_mask(fx->store), BIT(8));
    verify_ok(fx->store, N - 6);
    reads_skip(fx->store, BIT(3) | BIT(4) | BIT(5) | BIT(6) | BIT(7) | BIT(8));
    recompute(fx->store, got, N);
    assert_memory_equal(got[8], want[8], 32);
    check_head(fx->store, N, want[N]);
}

static void removing_the_newest_keeps_the_head(void **state) {
    fixture *fx = *state;
    uint8_t want[N + 2][32], got[N + 2][32];
    uint64_t h;
    recompute(fx->store, want, N);
    remove_event(fx->store, N);
    assert_int_equal(holes_mask(fx->store), BIT(N));
    CHECK_OK(cairn_head(fx->store, &h));
    assert_int_equal(h, N); /* positions are never reused */
    check_head(fx->store, N, want[N]);
    verify_ok(fx->store, N - 1);
    remove_event(fx->store, N - 1); /* the run reaching the head grows downwards */
    assert_int_equal(holes_mask(fx->store), BIT(N));
    verify_ok(fx->store, N - 2);
    reads_skip(fx->store, BIT(N) | BIT(N - 1));
    /* a new event chains from the removed head */
    CHECK_OK(append_n(fx->store, "z-1", CAIRN_ANY, "T", 1, NULL));
    check_head(fx->store, N + 1, (recompute(fx->store, got, N + 1), got[N + 1]));
    verify_ok(fx->store, N - 1);
    cairn_close(fx->store);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    verify_ok(fx->store, N - 1);
}

static void removing_everything(void **state) {
    fixture *fx = *state;
    uint8_t want[N + 2][32];
    recompute(fx->store, want, N);
    for (uint64_t p = 1; p <= N; p++) remove_event(fx->store, p % 2 ? p : N + 2 - p);
    assert_int_equal(holes_mask(fx->store), BIT(N));
    check_head(fx->store, N, want[N]);
    verify_ok(fx->store, 0);
    reads_skip(fx->store, 0x7feu);
    CHECK_OK(append_n(fx->store, "z-1", CAIRN_ANY, "T", 2, NULL));
    verify_ok(fx->store, 2);
}

/* A format-1 store (tests/fixtures, upgraded by this open) whose format-1 records are removed:
 * their hashes are computed, not stored (cairn__chain_remove finds them from the hole below,
 * or from the genesis), and the chain still verifies up to meta chain1 and past it.
 * order-2 (positions 136..145) goes newest first, order-3 (146..155) oldest first: one run. */
static void removing_format1_records(void **state) {
    fixture *fx = *state;
    char cmd[700], path[320];
    cairn_store *s;
    uint64_t pos;
    uint8_t head[32], h[32];
    cairn_event ev;
    snprintf(path, sizeof path, "%s/format1-store", fx->dir);
    snprintf(cmd, sizeof cmd, "tar -xzf %s/tests/fixtures/format1-store.tar.gz -C %s",
             CAIRN_SOURCE_DIR, fx->dir);
    assert_int_equal(system(cmd), 0);
    CHECK_OK(open_store(path, CAIRN_DURABLE_NONE, 0, 0, &s));
    CHECK_OK(cairn_chain_head(s, &pos, head));
    assert_int_equal(pos, 200);
    verify_ok(s, 200);
    for (uint64_t p = 145; p >= 136; p--) remove_event(s, p);
    verify_ok(s, 190);
    for (uint64_t p = 146; p <= 155; p++) remove_event(s, p);
    verify_ok(s, 180);
    check_head(s, 200, head);
    CHECK_RC(cairn_get(s, 140, &ev), CAIRN_ENOTFOUND);
    CHECK_OK(cairn_get(s, 156, &ev));
    remove_event(s, 200); /* the last format-1 record: meta chain1's position */
    check_head(s, 200, head);
    verify_ok(s, 179);
    CHECK_OK(append_n(s, "new-1", CAIRN_ANY, "T", 2, NULL));
    verify_ok(s, 181);
    CHECK_OK(cairn_chain_head(s, &pos, h));
    assert_int_equal(pos, 202);
    cairn_close(s);
    CHECK_OK(open_store(path, CAIRN_DURABLE_NONE, 0, 1, &s));
    verify_ok(s, 181);
    check_head(s, 202, h);
    cairn_close(s);
}

/* ---------------------------------------------------------------------------------
 * Damage the chain must find
 * --------------------------------------------------------------------------------- */
typedef struct raw {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi log, holes;
} raw;

static void raw_open(raw *w, const char *path) {
    assert_int_equal(mdb_env_create(&w->env), 0);
    assert_int_equal(mdb_env_set_maxdbs(w->env, 32), 0);
    assert_int_equal(mdb_env_set_mapsize(w->env, 1ull << 30), 0);
    assert_int_equal(mdb_env_open(w->env, path, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(w->env, NULL, 0, &w->txn), 0);
    assert_int_equal(mdb_dbi_open(w->txn, "log", 0, &w->log), 0);
    assert_int_equal(mdb_dbi_open(w->txn, "holes", 0, &w->holes), 0);
}

static void raw_close(raw *w) {
    assert_int_equal(mdb_txn_commit(w->txn), 0);
    mdb_env_close(w->env);
}

/* Record `pos` of the closed store: read into buf, or written from it. */
static size_t raw_record(const char *path, uint64_t pos, uint8_t *buf, size_t len) {
    raw w;
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    cairn__put_be64(kb, pos);
    raw_open(&w, path);
    if (len) {
        v.mv_size = len, v.mv_data = buf;
        assert_int_equal(mdb_put(w.txn, w.log, &k, &v, 0), 0);
    } else {
        assert_int_equal(mdb_get(w.txn, w.log, &k, &v), 0);
        memcpy(buf, v.mv_data, v.mv_size);
        len = v.mv_size;
    }
    raw_close(&w);
    return len;
}

/* Every bit position class of record 6 (the last of its batch: it stores its chain hash):
 * each byte flipped, as it is (the checksum finds it) and with the checksum resealed (the
 * chain, or the decoder's own checks, find it); every case names position 6, and the store
 * verifies again once the byte is back. */
static void every_byte_flipped_is_found(void **state) {
    fixture *fx = *state;
    uint8_t rb[256], bad[256];
    size_t len;
    cairn_close(fx->store);
    fx->store = NULL;
    len = raw_record(fx->path, 6, rb, 0);
    assert_true(len > CAIRN_REC_FIXED + CAIRN_CHAIN && len < sizeof rb);
    assert_true(rb[9] & CAIRN_REC_CHAINED);
    for (size_t i = 0; i < len; i++) {
        for (int reseal = 0; reseal < 2; reseal++) {
            if (reseal && i < 8) continue; /* the checksum itself */
            memcpy(bad, rb, len);
            bad[i] ^= (uint8_t)(1u << (i % 8));
            if (reseal) cairn__put_le64(bad, XXH3_64bits_withSeed(bad + 8, len - 8, 6));
            raw_record(fx->path, 6, bad, len);
            CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 1, &fx->store));
            expect_damage(fx->store, 6, NULL);
            if (reseal && i >= CAIRN_REC_FIXED && i < CAIRN_REC_FIXED + CAIRN_CHAIN)
                /* the hash: only the chain can tell */
                assert_non_null(strstr(cairn_errmsg(), "chain hash does not match"));
            cairn_close(fx->store);
            fx->store = NULL;
        }
    }
    raw_record(fx->path, 6, rb, len);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 1, &fx->store));
    verify_ok(fx->store, N);
}

/* A record replaced by another that decodes and checks (its own checksum, position and
 * stream entries intact, only its data changed): the chain breaks there. */
static void a_resealed_record_breaks_the_chain(void **state) {
    fixture *fx = *state;
    uint8_t rb[256];
    size_t len;
    cairn_close(fx->store);
    fx->store = NULL;
    len = raw_record(fx->path, 7, rb, 0);
    assert_int_equal(rb[len - 2], '7'); /* data {"i":7} */
    rb[len - 2] = '8';
    cairn__put_le64(rb, XXH3_64bits_withSeed(rb + 8, len - 8, 7));
    raw_record(fx->path, 7, rb, len);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    expect_damage(fx->store, 7, "chain hash does not match");
}

static void damaged_hole_entries_are_found(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t kb[8], h[40];
    MDB_val k = {8, kb}, v;
    remove_event(fx->store, 4);
    remove_event(fx->store, 5);
    verify_ok(fx->store, N - 2);
    cairn_close(fx->store);
    fx->store = NULL;

    /* a bit of the chain hash in the hole entry at 5 flipped: the link of 6 breaks */
    raw_open(&w, fx->path);
    cairn__put_be64(kb, 5);
    assert_int_equal(mdb_get(w.txn, w.holes, &k, &v), 0);
    assert_int_equal(v.mv_size, 40);
    memcpy(h, v.mv_data, 40);
    assert_int_equal(cairn__get_be64(h), 4);
    h[8 + 17] ^= 0x10;
    v.mv_data = h;
    assert_int_equal(mdb_put(w.txn, w.holes, &k, &v, 0), 0);
    raw_close(&w);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    expect_damage(fx->store, 6, "removed positions ending at 5");
    cairn_close(fx->store);
    fx->store = NULL;

    /* its first position changed: the run 4..5 is not what it says */
    raw_open(&w, fx->path);
    h[8 + 17] ^= 0x10;
    cairn__put_be64(h, 3);
    v.mv_size = 40, v.mv_data = h;
    assert_int_equal(mdb_put(w.txn, w.holes, &k, &v, 0), 0);
    raw_close(&w);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    expect_damage(fx->store, 5, "names another first position");
    cairn_close(fx->store);
    fx->store = NULL;

    /* the entry moved inside the run (at 4): the run has no hash to go on from */
    raw_open(&w, fx->path);
    assert_int_equal(mdb_del(w.txn, w.holes, &k, NULL), 0);
    cairn__put_be64(kb, 4);
    cairn__put_be64(h, 4);
    assert_int_equal(mdb_put(w.txn, w.holes, &k, &v, 0), 0);
    raw_close(&w);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    expect_damage(fx->store, 4, "position missing from the log");
    cairn_close(fx->store);
    fx->store = NULL;

    /* back at 5, plus a stray entry at a position the log holds */
    raw_open(&w, fx->path);
    assert_int_equal(mdb_del(w.txn, w.holes, &k, NULL), 0);
    cairn__put_be64(kb, 5);
    assert_int_equal(mdb_put(w.txn, w.holes, &k, &v, 0), 0);
    cairn__put_be64(kb, 2);
    cairn__put_be64(h, 2);
    assert_int_equal(mdb_put(w.txn, w.holes, &k, &v, 0), 0);
    raw_close(&w);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    expect_damage(fx->store, 2, "hole entry for a position the log holds");
}

/* A store format newer than this code knows is refused at open, nothing written. */
static void a_newer_store_format_is_refused(void **state) {
    fixture *fx = *state;
    raw w;
    MDB_dbi meta;
    MDB_val k = {5, "magic"}, v;
    uint8_t magic[15];
    cairn_store *s = NULL;
    cairn_close(fx->store);
    fx->store = NULL;
    raw_open(&w, fx->path);
    assert_int_equal(mdb_dbi_open(w.txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_get(w.txn, meta, &k, &v), 0);
    assert_int_equal(v.mv_size, 15);
    memcpy(magic, v.mv_data, 15);
    assert_int_equal(magic[14], 3);
    magic[14] = 4;
    v.mv_data = magic;
    assert_int_equal(mdb_put(w.txn, meta, &k, &v, 0), 0);
    raw_close(&w);
    for (int ro = 0; ro < 2; ro++) {
        CHECK_RC(open_store(fx->path, CAIRN_DURABLE_NONE, 0, ro, &s), CAIRN_ECORRUPT);
        assert_non_null(strstr(cairn_errmsg(), "store format 4 is newer"));
        assert_non_null(strstr(cairn_errmsg(), "formats 1 to 3"));
    }
    raw_open(&w, fx->path);
    assert_int_equal(mdb_dbi_open(w.txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_get(w.txn, meta, &k, &v), 0);
    assert_int_equal(((uint8_t *)v.mv_data)[14], 4); /* untouched */
    magic[14] = 3;
    v.mv_data = magic;
    assert_int_equal(mdb_put(w.txn, meta, &k, &v, 0), 0);
    raw_close(&w);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    verify_ok(fx->store, N);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup_chain, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(chain_of_a_new_store),
        T(removing_keeps_the_chain),
        T(removing_the_newest_keeps_the_head),
        T(removing_everything),
        T(removing_format1_records),
        T(every_byte_flipped_is_found),
        T(a_resealed_record_breaks_the_chain),
        T(damaged_hole_entries_are_found),
        T(a_newer_store_format_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
