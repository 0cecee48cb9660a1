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
    if ((rc = cairn__write_requests(b->s, w->txn, &q, 1, &r, 0))) return rc;
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

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(lifecycle_append_commits_with_the_effect),
        T(dollar_streams_are_refused_to_appends),
        T(soft_and_hard_delete),
        T(limits_through_the_c_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
