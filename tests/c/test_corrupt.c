/*
 * test_corrupt.c -- damaged records: bytes flipped inside stored values (through LMDB
 * directly, after the store is closed) are reported as CAIRN_ECORRUPT naming the position,
 * by every read path and by cairn_verify; undamaged records stay readable.
 */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>

#include <lmdb.h>

enum { NEVENTS = 12 };

static void verify_counts_progress(void *ctx, uint64_t done, uint64_t total) {
    uint64_t *last = ctx;
    assert_true(done <= total);
    assert_true(done >= *last);
    *last = done;
}

/* Opens the store's LMDB environment itself and rewrites the record at `pos`:
 * mode 'f' flips byte `at` (negative: from the end), mode 't' truncates to `at` bytes. */
static void damage(const char *path, uint64_t pos, int mode, long at) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi log;
    uint8_t kb[8];
    for (int i = 0; i < 8; i++) kb[i] = (uint8_t)(pos >> (56 - 8 * i));
    MDB_val k = {8, kb}, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 1ull << 30), 0);
    assert_int_equal(mdb_env_open(env, path, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "log", 0, &log), 0);
    assert_int_equal(mdb_get(txn, log, &k, &v), 0);
    size_t n = v.mv_size;
    uint8_t *copy = malloc(n);
    memcpy(copy, v.mv_data, n);
    if (mode == 'f') {
        size_t i = at < 0 ? n - (size_t)(-at) : (size_t)at;
        assert_true(i < n);
        copy[i] ^= 0x5a;
    } else {
        assert_true((size_t)at < n);
        n = (size_t)at;
    }
    MDB_val nv = {n, copy};
    assert_int_equal(mdb_put(txn, log, &k, &nv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(copy);
}

static int fx_setup_written(void **state) {
    if (fx_setup(state) != 0) return -1;
    fixture *fx = *state;
    cairn_slice tag = {"t", 1};
    for (int i = 0; i < NEVENTS; i++) {
        cairn_event_in e = ev_make("E", "{\"payload\":\"some bytes to flip\"}");
        e.tags = &tag;
        e.ntags = 1;
        cairn_append_result r;
        if (cairn_append(fx->store, "s", 1, CAIRN_ANY, &e, 1, &r) != CAIRN_OK) return -1;
    }
    cairn_close(fx->store);
    fx->store = NULL;
    return 0;
}

static void reopen(fixture *fx) {
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
}

static void expect_corrupt_at(fixture *fx, uint64_t pos) {
    cairn_event ev;
    CHECK_RC(cairn_get(fx->store, pos, &ev), CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->code, CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, pos);
    /* neighbours are fine */
    CHECK_OK(cairn_get(fx->store, pos - 1, &ev));
    assert_int_equal(ev.position, pos - 1);
    if (pos < NEVENTS) CHECK_OK(cairn_get(fx->store, pos + 1, &ev));

    /* read_all stops at it with the error.  Events before it may or may not be delivered
     * first (the iterator reads pages), but only events before it, in order. */
    rec *v;
    size_t n;
    CHECK_RC(read_all(fx->store, 0, 0, 0, NULL, &v, &n), CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, pos);
    assert_true(n <= pos - 1);
    for (size_t i = 0; i < n; i++) assert_int_equal(v[i].position, i + 1);
    free(v);
    CHECK_RC(read_all(fx->store, 0, 1, 0, NULL, &v, &n), CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, pos);
    assert_true(n <= NEVENTS - pos);
    for (size_t i = 0; i < n; i++) assert_int_equal(v[i].position, NEVENTS - i);
    free(v);
    /* so do a stream read and a filtered read (index lookups lead to the same record) */
    CHECK_RC(read_stream(fx->store, "s", -1, 0, 0, &v, &n), CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, pos);
    free(v);
    cairn_slice tag = {"t", 1};
    cairn_filter f = {.tags = &tag, .ntags = 1};
    CHECK_RC(read_all(fx->store, 0, 0, 0, &f, &v, &n), CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, pos);
    free(v);
    /* reads that do not touch it still work */
    CHECK_RC(read_all(fx->store, pos + 1, 0, 0, NULL, &v, &n), 0);
    assert_int_equal(n, NEVENTS - pos);
    free(v);
    /* verify names it */
    cairn_verify_report rep;
    CHECK_RC(cairn_verify(fx->store, &rep, NULL, NULL), CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, pos);
}

static void flipped_byte_in_data(void **state) {
    fixture *fx = *state;
    damage(fx->path, 5, 'f', -2);
    reopen(fx);
    expect_corrupt_at(fx, 5);
}

static void flipped_byte_in_header(void **state) {
    fixture *fx = *state;
    damage(fx->path, 7, 'f', 10); /* a length field */
    reopen(fx);
    expect_corrupt_at(fx, 7);
}

static void flipped_byte_in_checksum(void **state) {
    fixture *fx = *state;
    damage(fx->path, 3, 'f', 0);
    reopen(fx);
    expect_corrupt_at(fx, 3);
}

static void truncated_record(void **state) {
    fixture *fx = *state;
    damage(fx->path, 9, 't', 20);
    reopen(fx);
    expect_corrupt_at(fx, 9);
}

static void verify_clean_store(void **state) {
    fixture *fx = *state;
    reopen(fx);
    CHECK_OK(append_one(fx->store, "other-1", CAIRN_ANY, "F", NULL, NULL));
    cairn_verify_report rep;
    uint64_t last = 0;
    CHECK_OK(cairn_verify(fx->store, &rep, verify_counts_progress, &last));
    assert_int_equal(rep.events, NEVENTS + 1);
    assert_int_equal(rep.streams, 2);
    assert_int_equal(rep.head, NEVENTS + 1);
    CHECK_OK(cairn_verify(fx->store, &rep, NULL, NULL));
}

/* The first damage is the one named. */
static void verify_names_first_damage(void **state) {
    fixture *fx = *state;
    damage(fx->path, 10, 'f', -1);
    damage(fx->path, 4, 'f', -1);
    reopen(fx);
    cairn_verify_report rep;
    CHECK_RC(cairn_verify(fx->store, &rep, NULL, NULL), CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, 4);
    /* the store still takes appends */
    cairn_append_result r;
    CHECK_OK(append_one(fx->store, "s2", CAIRN_NO_STREAM, "E", NULL, &r));
    assert_int_equal(r.position, NEVENTS + 1);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup_written, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(flipped_byte_in_data), T(flipped_byte_in_header), T(flipped_byte_in_checksum),
        T(truncated_record),     T(verify_clean_store),     T(verify_names_first_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
