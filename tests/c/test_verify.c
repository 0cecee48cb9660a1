/*
 * test_verify.c -- cairn_verify in both directions.  Each test damages one index by hand
 * (raw LMDB calls on the closed store: an entry deleted, altered or added) and asserts that
 * verify fails with CAIRN_ECORRUPT naming the position and the index; a clean store passes.
 *
 * The store:  pos 1..3 stream acct-1 (tags t1, t2 on each), 4..5 acct-2 (tag t1),
 *             6 other-1 (metadata correlation_id "c-1"),
 *             7 other-1 (metadata compensates = id of event 1, correlation_id "c-1").
 */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>

#include <lmdb.h>

#define S(x) ((cairn_slice){(x), sizeof(x) - 1})

static uint8_t g_id1[16]; /* id of event 1 */

static int fx_setup_written(void **state) {
    if (fx_setup(state) != 0) return -1;
    fixture *fx = *state;
    cairn_slice tags[2] = {S("t1"), S("t2")};
    cairn_append_result r;
    cairn_event_in e[3];
    for (int i = 0; i < 3; i++) {
        e[i] = ev_make(i ? "Deposited" : "Opened", "{\"amount\":5}");
        e[i].tags = tags, e[i].ntags = 2;
    }
    if (cairn_append(fx->store, "acct-1", 6, CAIRN_NO_STREAM, e, 3, &r)) return -1;
    for (int i = 0; i < 2; i++) e[i].ntags = 1;
    if (cairn_append(fx->store, "acct-2", 6, CAIRN_NO_STREAM, e, 2, &r)) return -1;
    cairn_event ev;
    if (cairn_get(fx->store, 1, &ev)) return -1;
    memcpy(g_id1, ev.id, 16);
    char meta[160], hex[40];
    for (int i = 0; i < 16; i++) sprintf(hex + 2 * i, "%02x", g_id1[i]);
    e[0] = ev_make("Linked", "{}");
    e[0].metadata = S("{\"correlation_id\":\"c-1\"}");
    if (cairn_append(fx->store, "other-1", 7, CAIRN_NO_STREAM, e, 1, &r)) return -1;
    snprintf(meta, sizeof meta, "{\"correlation_id\":\"c-1\",\"compensates\":\"%s\"}", hex);
    e[0] = ev_make("Undone", "{}");
    e[0].metadata.ptr = meta, e[0].metadata.len = strlen(meta);
    if (cairn_append(fx->store, "other-1", 7, 0, e, 1, &r)) return -1;
    if (r.position != 7) return -1;
    cairn_close(fx->store);
    fx->store = NULL;
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Raw LMDB access to the closed store
 * --------------------------------------------------------------------------------- */
typedef struct raw {
    MDB_env *env;
    MDB_txn *txn;
} raw;

static void raw_open(raw *w, const char *path) {
    assert_int_equal(mdb_env_create(&w->env), 0);
    assert_int_equal(mdb_env_set_maxdbs(w->env, 32), 0);
    assert_int_equal(mdb_env_set_mapsize(w->env, 1ull << 30), 0);
    assert_int_equal(mdb_env_open(w->env, path, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(w->env, NULL, 0, &w->txn), 0);
}

static MDB_dbi raw_db(raw *w, const char *name) {
    MDB_dbi d;
    unsigned flags =
        (!strcmp(name, "sidx") || !strcmp(name, "post")) ? MDB_DUPSORT | MDB_DUPFIXED : 0;
    assert_int_equal(mdb_dbi_open(w->txn, name, flags, &d), 0);
    return d;
}

static void raw_close(raw *w) {
    assert_int_equal(mdb_txn_commit(w->txn), 0);
    mdb_env_close(w->env);
}

static void be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) p[i] = (uint8_t)v, v >>= 8;
}

static void raw_del(raw *w, const char *db, const void *key, size_t klen, const void *val,
                    size_t vlen) {
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    assert_int_equal(mdb_del(w->txn, raw_db(w, db), &k, val ? &v : NULL), 0);
}

static void raw_put(raw *w, const char *db, const void *key, size_t klen, const void *val,
                    size_t vlen) {
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    assert_int_equal(mdb_put(w->txn, raw_db(w, db), &k, &v, 0), 0);
}

/* Posting key as the core builds it (index.c, internal): kind + BE XXH3-64(name). */
#define XXH_INLINE_ALL
#include <xxhash.h>
static void post_key(uint8_t out[9], int kind, const char *name) {
    out[0] = (uint8_t)kind;
    be64(out + 1, XXH3_64bits(name, strlen(name)));
}

static void sidx_val(uint8_t v[16], uint64_t version, uint64_t pos) {
    be64(v, version);
    be64(v + 8, pos);
}

/* ---------------------------------------------------------------------------------
 * Assertions
 * --------------------------------------------------------------------------------- */
static void expect_damage(fixture *fx, uint64_t pos, const char *words) {
    cairn_verify_report rep;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    int rc = cairn_verify(fx->store, &rep, NULL, NULL);
    if (rc != CAIRN_ECORRUPT)
        fail_msg("verify -> %d (%s), want CAIRN_ECORRUPT naming %s at %llu", rc, cairn_errmsg(),
                 words, (unsigned long long)pos);
    if (cairn_last_error()->position != pos || !strstr(cairn_errmsg(), words))
        fail_msg("verify reported position %llu: \"%s\"; want position %llu and \"%s\"",
                 (unsigned long long)cairn_last_error()->position, cairn_errmsg(),
                 (unsigned long long)pos, words);
}

/* The read paths do not trust a damaged index either: they fail naming the position
 * instead of returning another event or silently skipping one. */
static void expect_read_corrupt(int rc, uint64_t pos) {
    if (rc != CAIRN_ECORRUPT || cairn_last_error()->position != pos)
        fail_msg("read -> %d (%s) at position %llu; want CAIRN_ECORRUPT at %llu", rc,
                 cairn_errmsg(), (unsigned long long)cairn_last_error()->position,
                 (unsigned long long)pos);
}

static void clean_store_passes(void **state) {
    fixture *fx = *state;
    cairn_verify_report rep;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    CHECK_OK(cairn_verify(fx->store, &rep, NULL, NULL));
    assert_int_equal(rep.events, 7);
    assert_int_equal(rep.streams, 3);
    assert_int_equal(rep.head, 7);
}

/* ---------------------------------------------------------------------------------
 * ids
 * --------------------------------------------------------------------------------- */
static void ids_entry_deleted(void **state) {
    fixture *fx = *state;
    raw w;
    raw_open(&w, fx->path);
    raw_del(&w, "ids", g_id1, 16, NULL, 0);
    raw_close(&w);
    expect_damage(fx, 1, "event id index");
}

static void ids_entry_points_elsewhere(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t v[20];
    raw_open(&w, fx->path);
    be64(v, 2), be64(v + 8, 1), v[16] = v[17] = v[18] = 0, v[19] = 3;
    raw_put(&w, "ids", g_id1, 16, v, 20);
    raw_close(&w);
    expect_damage(fx, 1, "event id index");
}

static void ids_entry_call_wrong(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t v[20];
    raw_open(&w, fx->path);
    be64(v, 1), be64(v + 8, 1), v[16] = v[17] = v[18] = 0, v[19] = 0; /* call of 0 events */
    raw_put(&w, "ids", g_id1, 16, v, 20);
    raw_close(&w);
    expect_damage(fx, 1, "append call");
}

static void ids_extra_entry(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t id[16], v[20];
    memset(id, 0xee, 16);
    raw_open(&w, fx->path);
    be64(v, 3), be64(v + 8, 1), v[16] = v[17] = v[18] = 0, v[19] = 3;
    raw_put(&w, "ids", id, 16, v, 20);
    raw_close(&w);
    expect_damage(fx, 3, "event id index entry names another event's id");
}

static void ids_extra_entry_past_log(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t id[16], v[20];
    memset(id, 0x01, 16);
    raw_open(&w, fx->path);
    be64(v, 99), be64(v + 8, 99), v[16] = v[17] = v[18] = 0, v[19] = 1;
    raw_put(&w, "ids", id, 16, v, 20);
    raw_close(&w);
    expect_damage(fx, 99, "points past the log");
}

/* ---------------------------------------------------------------------------------
 * sidx
 * --------------------------------------------------------------------------------- */
static void sidx_entry_deleted(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t k[8], v[16];
    raw_open(&w, fx->path);
    be64(k, 1), sidx_val(v, 1, 2); /* acct-1 is sid 1; version 1 at position 2 */
    raw_del(&w, "sidx", k, 8, v, 16);
    raw_close(&w);
    expect_damage(fx, 2, "stream index lacks this event");
}

static void sidx_extra_version(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t k[8], v[16];
    raw_open(&w, fx->path);
    be64(k, 2), sidx_val(v, 2, 3); /* acct-2 (sid 2) gains a version 2 pointing at acct-1's event */
    raw_put(&w, "sidx", k, 8, v, 16);
    raw_close(&w);
    expect_damage(fx, 3, "stream index entry is filed under another stream");
    rec *got;
    size_t n;
    expect_read_corrupt(read_stream(fx->store, "acct-2", 0, 0, 0, &got, &n), 3);
    free(got);
}

static void sidx_wrong_version(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t k[8], v[16];
    raw_open(&w, fx->path);
    be64(k, 1),
        sidx_val(v, 1, 3); /* acct-1: a second version 1, pointing at the event of version 2 */
    raw_put(&w, "sidx", k, 8, v, 16);
    raw_close(&w);
    expect_damage(fx, 3, "stream index entry has the wrong version");
    rec *got;
    size_t n;
    expect_read_corrupt(read_stream(fx->store, "acct-1", 0, 0, 0, &got, &n), 3);
    free(got);
}

/* The stream's last entry claims a version its position cannot hold. */
static void sidx_version_beyond_position(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t k[8], v[16];
    raw_open(&w, fx->path);
    be64(k, 1), sidx_val(v, 3, 3); /* acct-1: version 3 at position 3 (versions < positions) */
    raw_put(&w, "sidx", k, 8, v, 16);
    raw_close(&w);
    expect_damage(fx, 3, "damaged stream index entry");
    int64_t ver;
    expect_read_corrupt(cairn_stream_version(fx->store, "acct-1", 6, &ver), 3);
    rec *got;
    size_t n;
    expect_read_corrupt(read_stream(fx->store, "acct-1", 0, 0, 0, &got, &n), 3);
    free(got);
}

/* The stream's last entry points at another stream's event: stream_version says so. */
static void sidx_last_entry_elsewhere(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t k[8], v[16];
    raw_open(&w, fx->path);
    be64(k, 2), sidx_val(v, 2, 6); /* acct-2 gains version 2 at position 6 (other-1's event) */
    raw_put(&w, "sidx", k, 8, v, 16);
    raw_close(&w);
    expect_damage(fx, 6, "filed under another stream");
    int64_t ver;
    expect_read_corrupt(cairn_stream_version(fx->store, "acct-2", 6, &ver), 6);
}

static void sidx_orphan_sid(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t k[8], v[16];
    raw_open(&w, fx->path);
    be64(k, 77), sidx_val(v, 0, 5); /* no stream has sid 77 */
    raw_put(&w, "sidx", k, 8, v, 16);
    raw_close(&w);
    expect_damage(fx, 5, "filed under another stream");
}

static void sidx_entry_past_log(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t k[8], v[16];
    raw_open(&w, fx->path);
    be64(k, 3),
        sidx_val(v, 2, 50); /* other-1 (sid 3) gains version 2 at a position never written */
    raw_put(&w, "sidx", k, 8, v, 16);
    raw_close(&w);
    expect_damage(fx, 50, "points past the log");
}

/* ---------------------------------------------------------------------------------
 * post
 * --------------------------------------------------------------------------------- */
static void del_posting(fixture *fx, int kind, const char *name, uint64_t pos) {
    raw w;
    uint8_t k[9], v[8];
    post_key(k, kind, name);
    be64(v, pos);
    raw_open(&w, fx->path);
    raw_del(&w, "post", k, 9, v, 8);
    raw_close(&w);
}

static void add_posting(fixture *fx, int kind, const char *name, uint64_t pos) {
    raw w;
    uint8_t k[9], v[8];
    post_key(k, kind, name);
    be64(v, pos);
    raw_open(&w, fx->path);
    raw_put(&w, "post", k, 9, v, 8);
    raw_close(&w);
}

static void category_posting_deleted(void **state) {
    fixture *fx = *state;
    del_posting(fx, 'c', "acct", 4);
    expect_damage(fx, 4, "category index lacks this event");
}

static void type_posting_deleted(void **state) {
    fixture *fx = *state;
    del_posting(fx, 't', "Deposited", 3);
    expect_damage(fx, 3, "type index lacks this event");
}

static void tag_posting_deleted(void **state) {
    fixture *fx = *state;
    del_posting(fx, 'g', "t2", 2);
    expect_damage(fx, 2, "tag index lacks this event");
}

static void correlation_posting_deleted(void **state) {
    fixture *fx = *state;
    del_posting(fx, 'r', "c-1", 7);
    expect_damage(fx, 7, "correlation index lacks this event");
}

static void extra_tag_posting(void **state) {
    fixture *fx = *state;
    add_posting(fx, 'g', "t2", 4); /* event 4 has only t1 */
    expect_damage(fx, 4, "tag index entry does not match");
}

static void extra_type_posting(void **state) {
    fixture *fx = *state;
    add_posting(fx, 't', "Opened", 5); /* event 5 is Deposited */
    expect_damage(fx, 5, "type index entry does not match");
}

static void extra_category_posting(void **state) {
    fixture *fx = *state;
    add_posting(fx, 'c', "other", 1);
    expect_damage(fx, 1, "category index entry does not match");
}

static void extra_correlation_posting(void **state) {
    fixture *fx = *state;
    add_posting(fx, 'r', "c-1", 2);
    expect_damage(fx, 2, "correlation index entry does not match");
}

static void posting_past_log(void **state) {
    fixture *fx = *state;
    add_posting(fx, 'g', "t1", 40);
    expect_damage(fx, 40, "points past the log");
    rec *v;
    size_t n;
    cairn_slice t1 = S("t1");
    cairn_filter f = {.tags = &t1, .ntags = 1};
    expect_read_corrupt(read_all(fx->store, 0, 0, 0, &f, &v, &n), 40);
    free(v);
}

static void posting_unknown_kind(void **state) {
    fixture *fx = *state;
    add_posting(fx, 'z', "t1", 3);
    expect_damage(fx, 3, "unknown kind");
}

/* ---------------------------------------------------------------------------------
 * comp, streams, meta, log
 * --------------------------------------------------------------------------------- */
static void compensation_deleted(void **state) {
    fixture *fx = *state;
    raw w;
    raw_open(&w, fx->path);
    raw_del(&w, "comp", g_id1, 16, NULL, 0);
    raw_close(&w);
    expect_damage(fx, 7, "compensation index lacks this event");
}

static void compensation_extra(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t id[16], v[8];
    memset(id, 0x42, 16);
    be64(v, 6);
    raw_open(&w, fx->path);
    raw_put(&w, "comp", id, 16, v, 8);
    raw_close(&w);
    expect_damage(fx, 6, "compensation index entry does not match");
}

static void stream_entry_deleted(void **state) {
    fixture *fx = *state;
    raw w;
    raw_open(&w, fx->path);
    raw_del(&w, "streams", "acct-2", 6, NULL, 0);
    raw_close(&w);
    expect_damage(fx, 4, "stream entry disagrees with the log");
}

static void stream_sid_beyond_counter(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t v[8];
    be64(v, 2); /* three streams exist: sids 1..3 */
    raw_open(&w, fx->path);
    raw_put(&w, "meta", "sid", 3, v, 8);
    raw_close(&w);
    expect_damage(fx, 0, "beyond the counter in meta");
}

static void stream_sid_swapped(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t v[12 + 6];
    be64(v, 2); /* acct-1 claims acct-2's sid */
    v[8] = v[9] = v[10] = v[11] = 0;
    memcpy(v + 12, "acct-1", 6);
    raw_open(&w, fx->path);
    raw_put(&w, "streams", "acct-1", 6, v, sizeof v);
    raw_close(&w);
    expect_damage(fx, 1, "stream index lacks this event");
}

static void log_record_deleted(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t k[8];
    be64(k, 5);
    raw_open(&w, fx->path);
    raw_del(&w, "log", k, 8, NULL, 0);
    raw_close(&w);
    expect_damage(fx, 5, "position missing from the log");
    rec *v;
    size_t n;
    cairn_event ev;
    expect_read_corrupt(read_all(fx->store, 0, 0, 0, NULL, &v, &n), 5);
    free(v);
    expect_read_corrupt(read_all(fx->store, 0, 1, 0, NULL, &v, &n), 5);
    free(v);
    expect_read_corrupt(cairn_get(fx->store, 5, &ev), 5);
    expect_read_corrupt(read_stream(fx->store, "acct-2", 0, 0, 0, &v, &n), 5);
    free(v);
    CHECK_RC(cairn_get(fx->store, 8, &ev), CAIRN_ENOTFOUND); /* past the head: just absent */
}

static void last_record_deleted(void **state) {
    fixture *fx = *state;
    raw w;
    uint8_t k[8];
    be64(k, 7);
    raw_open(&w, fx->path);
    raw_del(&w, "log", k, 8, NULL, 0);
    raw_close(&w);
    /* the log now ends at 6: its indexes still point at 7 */
    expect_damage(fx, 7, "points past the log");
}

/* ---------------------------------------------------------------------------------
 * The index tail (meta "tail": the first position whose id and posting entries a later
 * commit writes; see core/src/storage.h)
 * --------------------------------------------------------------------------------- */
static void tail_with_events_passes(void **state) {
    fixture *fx = *state;
    cairn_verify_report rep;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    for (int i = 0; i < 10; i++)
        CHECK_OK(append_one(fx->store, "single-1", CAIRN_ANY, "S", "{}", NULL));
    CHECK_OK(cairn_verify(fx->store, &rep, NULL, NULL));
    assert_int_equal(rep.events, 17);
    cairn_close(fx->store);
    fx->store = NULL;
    /* the tail's events have no id entries: one there is damage */
    raw w;
    uint8_t v[20];
    cairn_event ev;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 1, &fx->store));
    CHECK_OK(cairn_get(fx->store, 12, &ev));
    uint8_t id[16];
    memcpy(id, ev.id, 16);
    cairn_close(fx->store);
    fx->store = NULL;
    raw_open(&w, fx->path);
    be64(v, 12), be64(v + 8, 12), v[16] = v[17] = v[18] = 0, v[19] = 1;
    raw_put(&w, "ids", id, 16, v, 20);
    raw_close(&w);
    expect_damage(fx, 12, "entry for an event of the index tail");
}

/* Writes meta "tail" = pos into the closed store. */
static void set_tail_start(fixture *fx, uint64_t pos) {
    raw w;
    uint8_t v[8];
    be64(v, pos);
    raw_open(&w, fx->path);
    raw_put(&w, "meta", "tail", 4, v, 8);
    raw_close(&w);
}

static void tail_start_past_head(void **state) {
    set_tail_start(*state, 100);
    expect_damage(*state, 100, "index tail starts out of range");
}

/* Events with rollback or compensation links are never deferred: a tail that covers them
 * (here from position 1, so 6 and 7 with their correlation and compensation) is damage. */
static void tail_covers_linked_events(void **state) {
    set_tail_start(*state, 1);
    expect_damage(*state, 6, "links in the index tail");
}

/* A larger store (several verify chunks) passes and is counted. */
static void verify_after_more_appends(void **state) {
    fixture *fx = *state;
    cairn_verify_report rep;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    for (int i = 0; i < 5; i++) CHECK_OK(append_n(fx->store, "bulk-1", CAIRN_ANY, "B", 1000, NULL));
    CHECK_OK(cairn_verify(fx->store, &rep, NULL, NULL));
    assert_int_equal(rep.events, 5007);
    assert_int_equal(rep.head, 5007);
    assert_int_equal(rep.streams, 4);
}

/* cairn_verify_all goes on past damage: every damaged event of the log pass is reported, the
 * call fails with the first one, and the events counted are the sound ones. */
typedef struct damages {
    int n;
    uint64_t pos[8];
    char msg[8][160];
} damages;

static void on_damage(void *ctx, uint64_t position, const char *message) {
    damages *d = ctx;
    if (d->n == 8) return;
    d->pos[d->n] = position;
    snprintf(d->msg[d->n++], sizeof d->msg[0], "%s", message);
}

static void all_damages_reported(void **state) {
    fixture *fx = *state;
    uint8_t pk[9], pos4[8];
    cairn_verify_report rep;
    damages d;
    raw w;

    raw_open(&w, fx->path);
    raw_del(&w, "ids", g_id1, 16, NULL, 0);
    post_key(pk, 'c', "acct");
    be64(pos4, 4);
    raw_del(&w, "post", pk, 9, pos4, 8);
    raw_close(&w);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    memset(&d, 0, sizeof d);
    CHECK_RC(cairn_verify_all(fx->store, &rep, NULL, NULL, on_damage, &d), CAIRN_ECORRUPT);
    assert_int_equal(d.n, 2);
    assert_int_equal(d.pos[0], 1);
    assert_non_null(strstr(d.msg[0], "event id index"));
    assert_int_equal(d.pos[1], 4);
    assert_non_null(strstr(d.msg[1], "category index lacks this event"));
    assert_int_equal(cairn_last_error()->position, 1); /* the first damage is the error */
    assert_int_equal(rep.events, 5);
    /* without a callback: the first damage ends the check, as cairn_verify */
    CHECK_RC(cairn_verify_all(fx->store, &rep, NULL, NULL, NULL, NULL), CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, 1);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup_written, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(clean_store_passes),
        T(ids_entry_deleted),
        T(ids_entry_points_elsewhere),
        T(ids_entry_call_wrong),
        T(ids_extra_entry),
        T(ids_extra_entry_past_log),
        T(sidx_entry_deleted),
        T(sidx_extra_version),
        T(sidx_wrong_version),
        T(sidx_orphan_sid),
        T(sidx_version_beyond_position),
        T(sidx_last_entry_elsewhere),
        T(sidx_entry_past_log),
        T(category_posting_deleted),
        T(type_posting_deleted),
        T(tag_posting_deleted),
        T(correlation_posting_deleted),
        T(extra_tag_posting),
        T(extra_type_posting),
        T(extra_category_posting),
        T(extra_correlation_posting),
        T(posting_past_log),
        T(posting_unknown_kind),
        T(compensation_deleted),
        T(compensation_extra),
        T(stream_entry_deleted),
        T(stream_sid_beyond_counter),
        T(stream_sid_swapped),
        T(log_record_deleted),
        T(last_record_deleted),
        T(tail_with_events_passes),
        T(tail_start_past_head),
        T(tail_covers_linked_events),
        T(verify_after_more_appends),
        T(all_damages_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
