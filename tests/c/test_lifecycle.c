/*
 * test_lifecycle.c -- the stream lifecycle in the core (lifecycle.c, spec 6): the internal
 * primitive cairn__lifecycle_append that other writers (forget) call inside their own write
 * transaction, the reserved '$' streams, deletes and limits through the C API.
 */
#include <stdio.h>
#include <stdlib.h>

#include "support.h"
#include "../../core/src/storage.h"

/* A writer of the layer's own kind: a user event and a lifecycle event in one commit,
 * failing after both when `fail` is set. */
typedef struct both {
    cairn_store *s;
    int fail;
    uint64_t pos;
} both;

static int both_body(cairn_wtxn *w, void *ctx) {
    both *b = ctx;
    cairn_event_in ev = ev_make("Did", "{\"x\":1}");
    cairn_append_req q = {{"acct-1", 6}, CAIRN_ANY, &ev, 1};
    cairn_append_result r;
    int rc;
    if ((rc = cairn__write_requests(b->s, w->txn, &q, NULL, 1, &r, 0))) return rc;
    if ((rc = cairn__lifecycle_append(b->s, w->txn, "$SubjectForgotten", "{\"subject\":\"u-1\"}",
                                      18, &b->pos)))
        return rc;
    w->notify = 1, w->head = b->pos;
    return b->fail ? cairn__fail(CAIRN_EINVAL, "the effect failed") : CAIRN_OK;
}

static void lifecycle_append_commits_with_the_effect(void **state) {
    fixture *fx = *state;
    both b = {fx->store, 0, 0};
    rec *rs;
    size_t n;
    cairn_verify_report vr;

    CHECK_OK(append_one(fx->store, "other-1", CAIRN_ANY, "X", NULL, NULL));
    CHECK_OK(cairn__write_txn(fx->store->env, fx->store->durability, both_body, &b));
    assert_int_equal(b.pos, 3);
    CHECK_OK(read_stream(fx->store, "$lifecycle", -1, 0, 0, &rs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(rs[0].type, "$SubjectForgotten");
    assert_string_equal(rs[0].data, "{\"subject\":\"u-1\"}");
    assert_int_equal(rs[0].position, 3);
    assert_int_equal(rs[0].version, 0);
    free(rs);
    /* a normal record: id and posting indexes, found by a filter naming the stream */
    {
        cairn_slice t = {"$SubjectForgotten", 17}, st = {"$lifecycle", 10};
        cairn_filter f = {0};
        f.types = &t, f.ntypes = 1;
        CHECK_OK(read_all(fx->store, 0, 0, 0, &f, &rs, &n));
        assert_int_equal(n, 0); /* '$' events only when streams/categories name them */
        free(rs);
        f.streams = &st, f.nstreams = 1;
        CHECK_OK(read_all(fx->store, 0, 0, 0, &f, &rs, &n));
        assert_int_equal(n, 1);
        free(rs);
    }
    CHECK_OK(read_all(fx->store, 0, 0, 0, NULL, &rs, &n));
    assert_int_equal(n, 2); /* other-1, acct-1 */
    free(rs);
    CHECK_OK(cairn_verify(fx->store, &vr, NULL, NULL));
    assert_int_equal(vr.events, 3);

    /* the effect fails after both were written: neither is there */
    b.fail = 1;
    CHECK_RC(cairn__write_txn(fx->store->env, fx->store->durability, both_body, &b), CAIRN_EINVAL);
    assert_int_equal(head_of(fx->store), 3);
    assert_int_equal(version_of(fx->store, "$lifecycle"), 0);
    assert_int_equal(version_of(fx->store, "acct-1"), 0);
}

static void dollar_streams_are_refused_to_appends(void **state) {
    fixture *fx = *state;
    CHECK_RC(append_one(fx->store, "$lifecycle", CAIRN_ANY, "X", NULL, NULL), CAIRN_EINVAL);
    CHECK_RC(append_one(fx->store, "$x", CAIRN_ANY, "X", NULL, NULL), CAIRN_EINVAL);
    assert_int_equal(head_of(fx->store), 0);
    CHECK_RC(cairn_delete_stream(fx->store, "$lifecycle", 10, CAIRN_ANY, 0, NULL), CAIRN_EINVAL);
    assert_int_equal(head_of(fx->store), 0);
}

static void soft_and_hard_delete(void **state) {
    fixture *fx = *state;
    uint64_t pos;
    rec *rs;
    size_t n;
    cairn_iter *it;
    cairn_event ev;
    cairn_stream_meta m;

    CHECK_OK(append_n(fx->store, "s-1", CAIRN_NO_STREAM, "T", 3, NULL));
    CHECK_RC(cairn_delete_stream(fx->store, "s-1", 3, 1, 0, &pos), CAIRN_EVERSION);
    assert_int_equal(cairn_last_error()->actual, 2);
    CHECK_OK(cairn_delete_stream(fx->store, "s-1", 3, 2, 0, &pos));
    assert_int_equal(pos, 4);
    CHECK_OK(read_stream(fx->store, "s-1", -1, 0, 0, &rs, &n));
    assert_int_equal(n, 0);
    free(rs);
    assert_int_equal(version_of(fx->store, "s-1"), 2);
    CHECK_OK(cairn_stream_metadata(fx->store, "s-1", 3, &m));
    assert_int_equal(m.truncate_before, 3);
    assert_int_equal(m.max_count, CAIRN_NO_LIMIT);
    CHECK_RC(cairn_get(fx->store, 1, &ev), CAIRN_ENOTFOUND);

    CHECK_OK(cairn_delete_stream(fx->store, "s-1", 3, CAIRN_ANY, 1, NULL));
    CHECK_OK(cairn_iter_stream(fx->store, "s-1", 3, -1, 0, 0, &it));
    CHECK_RC(cairn_iter_next(it, &ev), CAIRN_EDELETED);
    cairn_iter_close(it);
    CHECK_RC(append_one(fx->store, "s-1", CAIRN_ANY, "T", NULL, NULL), CAIRN_EDELETED);
    m.max_count = 1, m.max_age = CAIRN_NO_LIMIT, m.truncate_before = CAIRN_NO_LIMIT;
    CHECK_RC(cairn_set_stream_metadata(fx->store, "s-1", 3, &m, NULL), CAIRN_EDELETED);
    CHECK_RC(cairn_delete_stream(fx->store, "s-1", 3, CAIRN_ANY, 0, NULL), CAIRN_EDELETED);
    assert_int_equal(version_of(fx->store, "s-1"), 2);
    assert_int_equal(version_of(fx->store, "$lifecycle"), 1);
}

static void limits_through_the_c_api(void **state) {
    fixture *fx = *state;
    cairn_stream_meta m = {2, CAIRN_NO_LIMIT, CAIRN_NO_LIMIT}, bad = m, got;
    rec *rs;
    size_t n;

    CHECK_OK(append_n(fx->store, "s-1", CAIRN_NO_STREAM, "T", 5, NULL));
    bad.max_count = 0;
    CHECK_RC(cairn_set_stream_metadata(fx->store, "s-1", 3, &bad, NULL), CAIRN_EINVAL);
    bad = m, bad.max_age = -5;
    CHECK_RC(cairn_set_stream_metadata(fx->store, "s-1", 3, &bad, NULL), CAIRN_EINVAL);
    bad = m, bad.truncate_before = -2;
    CHECK_RC(cairn_set_stream_metadata(fx->store, "s-1", 3, &bad, NULL), CAIRN_EINVAL);
    CHECK_RC(cairn_set_stream_metadata(fx->store, "s-1", 3, NULL, NULL), CAIRN_EINVAL);
    assert_int_equal(head_of(fx->store), 5);
    CHECK_OK(cairn_set_stream_metadata(fx->store, "s-1", 3, &m, NULL));
    CHECK_OK(read_stream(fx->store, "s-1", -1, 0, 0, &rs, &n));
    assert_int_equal(n, 2);
    assert_int_equal(rs[0].version, 3);
    free(rs);
    CHECK_OK(read_all(fx->store, 0, 1, 0, NULL, &rs, &n));
    assert_int_equal(n, 2);
    assert_int_equal(rs[0].version, 4);
    free(rs);
    CHECK_OK(cairn_stream_metadata(fx->store, "s-1", 3, &got));
    assert_int_equal(got.max_count, 2);
    assert_int_equal(got.max_age, CAIRN_NO_LIMIT);
}

/* Positions 1..3 of s-1 removed and reclaimed (4: the $StreamDeleted event, 5: keep-1). */
static void reclaimed_store(fixture *fx) {
    cairn_verify_report vr;
    CHECK_OK(append_n(fx->store, "s-1", CAIRN_NO_STREAM, "T", 3, NULL));
    CHECK_OK(cairn_delete_stream(fx->store, "s-1", 3, CAIRN_ANY, 0, NULL));
    CHECK_OK(append_one(fx->store, "keep-1", CAIRN_ANY, "T", NULL, NULL));
    CHECK_OK(cairn_verify(fx->store, &vr, NULL, NULL));
    assert_int_equal(vr.events, 2);
    assert_int_equal(vr.head, 5);
}

static void put_raw(fixture *fx, MDB_dbi dbi, const void *k, size_t klen, const void *v,
                    size_t vlen, int del) {
    cairn_env *e = fx->store->env;
    MDB_txn *txn;
    MDB_val mk = {klen, (void *)k}, mv = {vlen, (void *)v};
    CHECK_OK(cairn__write_begin(e, CAIRN_DURABLE_NONE, &txn));
    assert_int_equal(
        del ? mdb_del(txn, dbi, &mk, vlen ? &mv : NULL) : mdb_put(txn, dbi, &mk, &mv, 0), 0);
    assert_int_equal(cairn__write_commit(e, txn), 0);
}

static void verify_fails_at(fixture *fx, uint64_t pos, const char *what) {
    cairn_verify_report vr;
    CHECK_RC(cairn_verify(fx->store, &vr, NULL, NULL), CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, pos);
    if (!strstr(cairn_errmsg(), what)) fail_msg("message: %s (want %s)", cairn_errmsg(), what);
}

/* a hole is no damage; an index entry pointing at a removed position is */
static void posting_into_a_hole_is_damage(void **state) {
    fixture *fx = *state;
    uint8_t key[CAIRN_POST_KEY], pos[8];
    reclaimed_store(fx);
    cairn__post_key(CAIRN_POST_TYPE, "T", 1, key);
    cairn__put_be64(pos, 2);
    put_raw(fx, fx->store->env->post, key, sizeof key, pos, 8, 0);
    verify_fails_at(fx, 2, "missing event");
}

static void a_gap_without_its_hole_is_damage(void **state) {
    fixture *fx = *state;
    uint8_t k[8];
    rec *rs;
    size_t n;
    cairn_event ev;
    reclaimed_store(fx);
    cairn__put_be64(k, 3); /* the run 1..3's entry, at its last position (chain.c) */
    put_raw(fx, fx->store->env->holes, k, 8, NULL, 0, 1);
    verify_fails_at(fx, 1, "missing");
    CHECK_RC(read_all(fx->store, 0, 0, 0, NULL, &rs, &n), CAIRN_ECORRUPT);
    free(rs);
    CHECK_RC(cairn_get(fx->store, 2, &ev), CAIRN_ECORRUPT);
}

static void a_hole_over_an_event_is_damage(void **state) {
    fixture *fx = *state;
    uint8_t k[8], v[8 + CAIRN_CHAIN];
    reclaimed_store(fx);
    memset(v, 0, sizeof v);
    cairn__put_be64(k, 5), cairn__put_be64(v, 5);
    put_raw(fx, fx->store->env->holes, k, 8, v, sizeof v, 0);
    verify_fails_at(fx, 5, "the log holds");
}

static void a_removed_record_is_damage_unless_reclaimed(void **state) {
    fixture *fx = *state;
    uint8_t k[8];
    reclaimed_store(fx);
    cairn__put_be64(k, 5); /* keep-1's record vanishes without its indexes or a hole */
    put_raw(fx, fx->store->env->log, k, 8, NULL, 0, 1);
    {
        cairn_verify_report vr;
        CHECK_RC(cairn_verify(fx->store, &vr, NULL, NULL), CAIRN_ECORRUPT);
    }
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(lifecycle_append_commits_with_the_effect),
        T(dollar_streams_are_refused_to_appends),
        T(soft_and_hard_delete),
        T(limits_through_the_c_api),
        T(posting_into_a_hole_is_damage),
        T(a_gap_without_its_hole_is_damage),
        T(a_hole_over_an_event_is_damage),
        T(a_removed_record_is_damage_unless_reclaimed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
