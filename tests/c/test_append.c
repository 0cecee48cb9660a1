/*
 * test_append.c -- writing: versions and positions, expected-version checks, idempotent
 * retries and duplicate ids, multi-request atomicity, argument validation, timestamps.
 */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define S(x) ((cairn_slice){(x), sizeof(x) - 1})

/* ---------------------------------------------------------------------------------
 * Versions, positions, head
 * --------------------------------------------------------------------------------- */
static void append_single_and_batch(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    assert_int_equal(head_of(fx->store), 0);
    assert_int_equal(version_of(fx->store, "a-1"), -1);

    CHECK_OK(append_one(fx->store, "a-1", CAIRN_ANY, "One", "{\"x\":1}", &r));
    assert_int_equal(r.version, 0);
    assert_int_equal(r.position, 1);
    assert_int_equal(r.first_position, 1);

    CHECK_OK(append_n(fx->store, "a-1", CAIRN_ANY, "Many", 5, &r));
    assert_int_equal(r.version, 5);
    assert_int_equal(r.first_position, 2);
    assert_int_equal(r.position, 6);

    CHECK_OK(append_n(fx->store, "b-1", CAIRN_ANY, "Other", 3, &r));
    assert_int_equal(r.version, 2);
    assert_int_equal(r.first_position, 7);
    assert_int_equal(r.position, 9);

    CHECK_OK(append_one(fx->store, "a-1", CAIRN_ANY, "One", NULL, &r));
    assert_int_equal(r.version, 6);
    assert_int_equal(r.position, 10);

    assert_int_equal(head_of(fx->store), 10);
    assert_int_equal(version_of(fx->store, "a-1"), 6);
    assert_int_equal(version_of(fx->store, "b-1"), 2);
}

/* Interleaved appends to several streams: positions 1..N without gaps in commit order,
 * each stream's versions 0..k without gaps. */
static void versions_and_positions_gapless(void **state) {
    fixture *fx = *state;
    const char *streams[] = {"x-1", "x-2", "y-1"};
    int64_t want_ver[3] = {-1, -1, -1};
    uint64_t pos = 0;
    for (int round = 0; round < 40; round++) {
        int si = (round * 7) % 3;
        size_t n = 1 + (size_t)(round % 4);
        cairn_append_result r;
        CHECK_OK(append_n(fx->store, streams[si], want_ver[si], "E", n, &r));
        assert_int_equal(r.first_position, pos + 1);
        assert_int_equal(r.position, pos + n);
        want_ver[si] += (int64_t)n;
        pos += n;
        assert_int_equal(r.version, want_ver[si]);
    }
    rec *v;
    size_t n;
    CHECK_RC(read_all(fx->store, 0, 0, 0, NULL, &v, &n), 0);
    assert_int_equal(n, pos);
    int64_t seen[3] = {-1, -1, -1};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(v[i].position, i + 1);
        int si = v[i].stream[0] == 'y' ? 2 : v[i].stream[2] - '1';
        assert_int_equal(v[i].version, seen[si] + 1);
        seen[si] = v[i].version;
    }
    free(v);
    for (int i = 0; i < 3; i++) assert_int_equal(seen[i], want_ver[i]);
}

/* ---------------------------------------------------------------------------------
 * Expected versions
 * --------------------------------------------------------------------------------- */
static void expect_wrong(cairn_store *s, const char *stream, int64_t expected, int64_t actual) {
    uint64_t h = head_of(s);
    CHECK_RC(append_one(s, stream, expected, "Bad", NULL, NULL), CAIRN_EVERSION);
    const cairn_error *e = cairn_last_error();
    assert_int_equal(e->code, CAIRN_EVERSION);
    assert_int_equal(e->request, 0);
    assert_int_equal(e->expected, expected);
    assert_int_equal(e->actual, actual);
    assert_true(strlen(e->message) > 0);
    assert_int_equal(head_of(s), h);
    assert_int_equal(version_of(s, stream), actual);
}

static void expected_version_checks(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    /* on a stream that does not exist */
    expect_wrong(fx->store, "s", CAIRN_STREAM_EXISTS, -1);
    expect_wrong(fx->store, "s", 0, -1);
    expect_wrong(fx->store, "s", 5, -1);
    CHECK_OK(append_one(fx->store, "s", CAIRN_NO_STREAM, "E", NULL, &r));
    assert_int_equal(r.version, 0);
    /* on a stream with events */
    expect_wrong(fx->store, "s", CAIRN_NO_STREAM, 0);
    expect_wrong(fx->store, "s", 1, 0);
    CHECK_OK(append_one(fx->store, "s", CAIRN_STREAM_EXISTS, "E", NULL, &r));
    assert_int_equal(r.version, 1);
    CHECK_OK(append_one(fx->store, "s", 1, "E", NULL, &r));
    assert_int_equal(r.version, 2);
    expect_wrong(fx->store, "s", 1, 2);
    expect_wrong(fx->store, "s", 3, 2);
    CHECK_OK(append_one(fx->store, "s", CAIRN_ANY, "E", NULL, &r));
    assert_int_equal(r.version, 3);
    /* ANY on a new stream */
    CHECK_OK(append_one(fx->store, "t", CAIRN_ANY, "E", NULL, &r));
    assert_int_equal(r.version, 0);
    assert_int_equal(head_of(fx->store), 5);
}

/* ---------------------------------------------------------------------------------
 * Idempotency and duplicate ids
 * --------------------------------------------------------------------------------- */
static void idempotent_retry_returns_same_result(void **state) {
    fixture *fx = *state;
    cairn_event_in a[3] = {ev_with_id("A", "1", 1), ev_with_id("A", "2", 2),
                           ev_with_id("A", "3", 3)};
    cairn_append_result r1, r2;
    CHECK_OK(append_one(fx->store, "s", CAIRN_ANY, "first", NULL, NULL));
    CHECK_OK(cairn_append(fx->store, "s", 1, 0, a, 3, &r1));
    assert_int_equal(r1.version, 3);
    assert_int_equal(r1.first_position, 2);
    assert_int_equal(r1.position, 4);
    CHECK_OK(append_one(fx->store, "other", CAIRN_ANY, "later", NULL, NULL));
    uint64_t h = head_of(fx->store);

    /* same ids, same order, same stream; the expectation is not checked again */
    CHECK_OK(cairn_append(fx->store, "s", 1, 0, a, 3, &r2));
    assert_int_equal(r2.version, r1.version);
    assert_int_equal(r2.position, r1.position);
    assert_int_equal(r2.first_position, r1.first_position);
    CHECK_OK(cairn_append(fx->store, "s", 1, CAIRN_NO_STREAM, a, 3, &r2));
    assert_int_equal(r2.position, r1.position);
    CHECK_OK(cairn_append(fx->store, "s", 1, CAIRN_ANY, a, 3, &r2));
    assert_int_equal(r2.version, r1.version);
    assert_int_equal(head_of(fx->store), h);
    assert_int_equal(version_of(fx->store, "s"), 3);

    /* a single-event call retried */
    cairn_event_in b = ev_with_id("B", NULL, 10);
    CHECK_OK(cairn_append(fx->store, "s", 1, CAIRN_ANY, &b, 1, &r1));
    CHECK_OK(cairn_append(fx->store, "s", 1, 0, &b, 1, &r2));
    assert_int_equal(r2.position, r1.position);
    assert_int_equal(r2.version, r1.version);
    assert_int_equal(head_of(fx->store), h + 1);
}

/* Single-event appends leave their id entry to a later commit (the index tail, see
 * core/src/storage.h); retries and duplicates must be found there as well, and after that
 * commit. */
static void ids_found_in_the_index_tail(void **state) {
    fixture *fx = *state;
    cairn_event_in a = ev_with_id("A", NULL, 100), b = ev_with_id("B", NULL, 101);
    cairn_append_result r1, r2, rr[2];
    CHECK_OK(append_n(fx->store, "s", CAIRN_ANY, "E", 3, NULL));      /* indexed */
    CHECK_OK(cairn_append(fx->store, "s", 1, CAIRN_ANY, &a, 1, &r1)); /* in the tail */
    CHECK_OK(append_one(fx->store, "t", CAIRN_ANY, "later", NULL, NULL));
    uint64_t h = head_of(fx->store);
    for (int round = 0; round < 2; round++) {
        /* a retry: the same result, nothing written */
        CHECK_OK(cairn_append(fx->store, "s", 1, 0, &a, 1, &r2));
        assert_int_equal(r2.position, r1.position);
        assert_int_equal(r2.version, r1.version);
        assert_int_equal(r2.first_position, r1.first_position);
        /* the same id to another stream, or inside a larger call: a duplicate naming it */
        CHECK_RC(cairn_append(fx->store, "u", 1, CAIRN_ANY, &a, 1, &r2), CAIRN_EDUPLICATE);
        assert_int_equal(cairn_last_error()->position, r1.position);
        cairn_event_in pair[2] = {b, a};
        CHECK_RC(cairn_append(fx->store, "s", 1, CAIRN_ANY, pair, 2, &r2), CAIRN_EDUPLICATE);
        cairn_append_req q[2] = {{{"v", 1}, CAIRN_ANY, &b, 1}, {{"w", 1}, CAIRN_ANY, &a, 1}};
        CHECK_RC(cairn_append_batch(fx->store, q, 2, rr), CAIRN_EDUPLICATE);
        assert_int_equal(head_of(fx->store), h);
        assert_int_equal(version_of(fx->store, "u"), -1);
        /* a batch indexes the tail: the same answers afterwards */
        if (round == 0) {
            CHECK_OK(append_n(fx->store, "x", CAIRN_ANY, "E", 2, NULL));
            h += 2;
        }
    }
    /* an id first written inside the tail is found by a batch in the same tail */
    CHECK_OK(cairn_append(fx->store, "s", 1, CAIRN_ANY, &b, 1, &r1));
    cairn_event_in pair[2] = {ev_with_id("C", NULL, 102), b};
    CHECK_RC(cairn_append(fx->store, "s", 1, CAIRN_ANY, pair, 2, &r2), CAIRN_EDUPLICATE);
    assert_int_equal(cairn_last_error()->position, r1.position);
    assert_int_equal(head_of(fx->store), h + 1);
    cairn_verify_report rep;
    CHECK_OK(cairn_verify(fx->store, &rep, NULL, NULL));
    assert_int_equal(rep.events, h + 1);
}

static void duplicate_ids_rejected(void **state) {
    fixture *fx = *state;
    cairn_event_in a[3] = {ev_with_id("A", NULL, 1), ev_with_id("A", NULL, 2),
                           ev_with_id("A", NULL, 3)};
    cairn_append_result r;
    CHECK_OK(cairn_append(fx->store, "s", 1, CAIRN_ANY, a, 3, &r));
    uint64_t h = head_of(fx->store);

    struct {
        const char *what, *stream;
        cairn_event_in ev[4];
        size_t n;
    } cases[] = {
        {"subset", "s", {a[0], a[1]}, 2},
        {"subset tail", "s", {a[1], a[2]}, 2},
        {"superset", "s", {a[0], a[1], a[2], ev_with_id("A", NULL, 4)}, 4},
        {"reordered", "s", {a[2], a[1], a[0]}, 3},
        {"other stream", "t", {a[0], a[1], a[2]}, 3},
        {"one reused among new", "t", {ev_with_id("A", NULL, 5), a[1]}, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc =
            cairn_append(fx->store, cases[i].stream, 1, CAIRN_ANY, cases[i].ev, cases[i].n, &r);
        if (rc != CAIRN_EDUPLICATE)
            fail_msg("%s: rc %d, want CAIRN_EDUPLICATE (%s)", cases[i].what, rc, cairn_errmsg());
        assert_int_equal(cairn_last_error()->code, CAIRN_EDUPLICATE);
        assert_int_equal(cairn_last_error()->request, 0);
        assert_int_equal(head_of(fx->store), h);
    }
    /* the position of the earlier event is named */
    CHECK_RC(cairn_append(fx->store, "t", 1, CAIRN_ANY, &a[1], 1, &r), CAIRN_EDUPLICATE);
    assert_int_equal(cairn_last_error()->position, 2);
    assert_int_equal(version_of(fx->store, "t"), -1);
    assert_int_equal(version_of(fx->store, "s"), 2);
}

static void duplicate_id_within_one_call(void **state) {
    fixture *fx = *state;
    cairn_event_in a[3] = {ev_with_id("A", NULL, 7), ev_with_id("B", NULL, 8),
                           ev_with_id("C", NULL, 7)};
    cairn_append_result r;
    CHECK_RC(cairn_append(fx->store, "s", 1, CAIRN_ANY, a, 3, &r), CAIRN_EDUPLICATE);
    assert_int_equal(head_of(fx->store), 0);
    /* the same id twice in two requests of one batch */
    cairn_append_req reqs[2] = {{S("p"), CAIRN_ANY, &a[0], 1}, {S("q"), CAIRN_ANY, &a[2], 1}};
    cairn_append_result rs[2];
    CHECK_RC(cairn_append_batch(fx->store, reqs, 2, rs), CAIRN_EDUPLICATE);
    assert_int_equal(cairn_last_error()->request, 1);
    assert_int_equal(head_of(fx->store), 0);
}

/* Ids the store assigns are distinct, and ids given are stored as given. */
static void ids_assigned_and_kept(void **state) {
    fixture *fx = *state;
    CHECK_OK(append_n(fx->store, "s", CAIRN_ANY, "E", 50, NULL));
    cairn_event_in given = ev_with_id("G", NULL, 0x0102030405060708ull);
    cairn_append_result r;
    CHECK_OK(cairn_append(fx->store, "s", 1, CAIRN_ANY, &given, 1, &r));
    rec *v;
    size_t n;
    CHECK_RC(read_all(fx->store, 0, 0, 0, NULL, &v, &n), 0);
    assert_int_equal(n, 51);
    for (size_t i = 0; i < 50; i++) {
        assert_int_equal(v[i].id[6] >> 4, 7); /* UUIDv7 */
        for (size_t j = 0; j < i; j++) assert_memory_not_equal(v[i].id, v[j].id, 16);
    }
    assert_memory_equal(v[50].id, given.id, 16);
    free(v);
    uint8_t u1[16], u2[16];
    cairn_uuid7(u1);
    cairn_uuid7(u2);
    assert_memory_not_equal(u1, u2, 16);
    assert_int_equal(u1[6] >> 4, 7);
    assert_int_equal(u1[8] >> 6, 2); /* RFC 4122 variant */
}

/* ---------------------------------------------------------------------------------
 * Multi-request batches
 * --------------------------------------------------------------------------------- */
static void batch_is_atomic(void **state) {
    fixture *fx = *state;
    cairn_event_in e = ev_make("E", "{}");
    cairn_append_result rs[3];
    CHECK_OK(append_one(fx->store, "existing", CAIRN_ANY, "E", NULL, NULL));
    cairn_append_req reqs[3] = {
        {S("order-1"), CAIRN_NO_STREAM, &e, 1},
        {S("existing"), 5, &e, 1}, /* wrong: actual 0 */
        {S("stock-9"), CAIRN_ANY, &e, 1},
    };
    CHECK_RC(cairn_append_batch(fx->store, reqs, 3, rs), CAIRN_EVERSION);
    const cairn_error *err = cairn_last_error();
    assert_int_equal(err->request, 1);
    assert_int_equal(err->expected, 5);
    assert_int_equal(err->actual, 0);
    assert_int_equal(head_of(fx->store), 1);
    assert_int_equal(version_of(fx->store, "order-1"), -1);
    assert_int_equal(version_of(fx->store, "stock-9"), -1);

    reqs[1].expected = 0;
    CHECK_OK(cairn_append_batch(fx->store, reqs, 3, rs));
    assert_int_equal(rs[0].version, 0);
    assert_int_equal(rs[0].position, 2);
    assert_int_equal(rs[1].version, 1);
    assert_int_equal(rs[1].position, 3);
    assert_int_equal(rs[2].version, 0);
    assert_int_equal(rs[2].first_position, 4);
    assert_int_equal(head_of(fx->store), 4);
}

static void batch_requests_see_each_other(void **state) {
    fixture *fx = *state;
    cairn_event_in two[2] = {ev_make("E", NULL), ev_make("E", NULL)};
    cairn_event_in one = ev_make("F", NULL);
    cairn_append_result rs[3];
    cairn_append_req ok[3] = {
        {S("s"), CAIRN_NO_STREAM, two, 2},
        {S("s"), 1, &one, 1},
        {S("s"), CAIRN_STREAM_EXISTS, &one, 1},
    };
    CHECK_OK(cairn_append_batch(fx->store, ok, 3, rs));
    assert_int_equal(rs[0].version, 1);
    assert_int_equal(rs[1].version, 2);
    assert_int_equal(rs[1].position, 3);
    assert_int_equal(rs[2].version, 3);
    assert_int_equal(rs[2].position, 4);

    /* the second request's NO_STREAM fails because the first created the stream */
    cairn_append_req bad[2] = {{S("t"), CAIRN_NO_STREAM, &one, 1},
                               {S("t"), CAIRN_NO_STREAM, &one, 1}};
    CHECK_RC(cairn_append_batch(fx->store, bad, 2, rs), CAIRN_EVERSION);
    assert_int_equal(cairn_last_error()->request, 1);
    assert_int_equal(cairn_last_error()->actual, 0);
    assert_int_equal(version_of(fx->store, "t"), -1);
    assert_int_equal(head_of(fx->store), 4);
}

/* ---------------------------------------------------------------------------------
 * Argument validation: CAIRN_EINVAL and nothing written
 * --------------------------------------------------------------------------------- */
static void bad_arguments_are_einval(void **state) {
    fixture *fx = *state;
    static char long_stream[CAIRN_MAX_STREAM + 2], long_type[CAIRN_MAX_TYPE + 2],
        long_tag[CAIRN_MAX_TAG + 2];
    memset(long_stream, 's', CAIRN_MAX_STREAM + 1);
    memset(long_type, 't', CAIRN_MAX_TYPE + 1);
    memset(long_tag, 'g', CAIRN_MAX_TAG + 1);
    cairn_slice empty_tag = {"", 0}, big_tag = {long_tag, CAIRN_MAX_TAG + 1};
    cairn_append_result r;

    struct {
        const char *what;
        cairn_slice stream;
        int64_t expected;
        cairn_event_in ev;
        size_t nevents;
    } cases[] = {
        /* clang-format off */
        {"empty stream", {"", 0}, CAIRN_ANY, ev_make("E", NULL), 1},
        {"stream too long", {long_stream, CAIRN_MAX_STREAM + 1}, CAIRN_ANY, ev_make("E", NULL), 1},
        {"stream with NUL", {"ab\0c", 4}, CAIRN_ANY, ev_make("E", NULL), 1},
        {"stream starting with $", S("$all"), CAIRN_ANY, ev_make("E", NULL), 1},
        {"empty type", S("s"), CAIRN_ANY, ev_make("", NULL), 1},
        {"type too long", S("s"), CAIRN_ANY, {.type = {long_type, CAIRN_MAX_TYPE + 1}, .schema = 1}, 1},
        {"type with NUL", S("s"), CAIRN_ANY, {.type = {"a\0b", 3}, .schema = 1}, 1},
        {"schema 0", S("s"), CAIRN_ANY, {.type = S("E"), .schema = 0}, 1},
        {"zero events", S("s"), CAIRN_ANY, ev_make("E", NULL), 0},
        {"expected -3", S("s"), -3, ev_make("E", NULL), 1},
        {"expected -5", S("s"), -5, ev_make("E", NULL), 1},
        {"empty tag", S("s"), CAIRN_ANY, {.type = S("E"), .schema = 1, .tags = &empty_tag, .ntags = 1}, 1},
        {"tag too long", S("s"), CAIRN_ANY, {.type = S("E"), .schema = 1, .tags = &big_tag, .ntags = 1}, 1},
        {"unknown flag bits", S("s"), CAIRN_ANY, {.type = S("E"), .schema = 1, .flags = 0x80}, 1},
        /* clang-format on */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = cairn_append(fx->store, cases[i].stream.ptr, cases[i].stream.len,
                              cases[i].expected, &cases[i].ev, cases[i].nevents, &r);
        if (rc != CAIRN_EINVAL)
            fail_msg("%s: rc %d, want CAIRN_EINVAL (%s)", cases[i].what, rc, cairn_errmsg());
        assert_int_equal(cairn_last_error()->code, CAIRN_EINVAL);
        assert_true(strlen(cairn_errmsg()) > 0);
        assert_int_equal(head_of(fx->store), 0);
    }
    /* a bad event after good ones, and a bad request after a good one: nothing written */
    cairn_event_in mixed[2] = {ev_make("E", NULL), ev_make("", NULL)};
    CHECK_RC(cairn_append(fx->store, "s", 1, CAIRN_ANY, mixed, 2, &r), CAIRN_EINVAL);
    cairn_append_req reqs[2] = {{S("s"), CAIRN_ANY, mixed, 1}, {S("$bad"), CAIRN_ANY, mixed, 1}};
    cairn_append_result rs[2];
    CHECK_RC(cairn_append_batch(fx->store, reqs, 2, rs), CAIRN_EINVAL);
    assert_int_equal(cairn_last_error()->request, 1);
    assert_int_equal(head_of(fx->store), 0);
    assert_int_equal(version_of(fx->store, "s"), -1);

    /* the limits themselves are fine */
    cairn_event_in edge = {.type = {long_type, CAIRN_MAX_TYPE},
                           .schema = 7,
                           .tags = &(cairn_slice){long_tag, CAIRN_MAX_TAG},
                           .ntags = 1};
    CHECK_OK(cairn_append(fx->store, long_stream, CAIRN_MAX_STREAM, CAIRN_ANY, &edge, 1, &r));
    cairn_event ev;
    CHECK_OK(cairn_get(fx->store, 1, &ev));
    assert_int_equal(ev.stream.len, CAIRN_MAX_STREAM);
    assert_int_equal(ev.type.len, CAIRN_MAX_TYPE);
    assert_int_equal(ev.schema, 7);
    assert_int_equal(ev.ntags, 1);
    size_t cur = 0;
    cairn_slice tag;
    assert_int_equal(cairn_event_tag(&ev, &cur, &tag), 1);
    assert_int_equal(tag.len, CAIRN_MAX_TAG);
    assert_int_equal(cairn_event_tag(&ev, &cur, &tag), 0);
}

/* Metadata is a JSON object or none (cairn.h): a list, a string, a number, a bool or null
 * was stored, and read back as what the contract forbids. */
static void metadata_that_is_not_an_object_is_einval(void **state) {
    fixture *fx = *state;
    static const char *const bad[] = {"[1,2]", "\"x\"", "42", "-1", "true", "null", " [ ]"};
    cairn_append_result r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cairn_event_in ev = ev_make("E", NULL);
        ev.metadata.ptr = bad[i], ev.metadata.len = strlen(bad[i]);
        int rc = cairn_append(fx->store, "s", 1, CAIRN_ANY, &ev, 1, &r);
        if (rc != CAIRN_EINVAL || !strstr(cairn_errmsg(), "metadata must be an object, not "))
            fail_msg("metadata %s: rc %d (%s)", bad[i], rc, cairn_errmsg());
        assert_int_equal(head_of(fx->store), 0);
    }
    cairn_event_in ok = ev_make("E", NULL);
    ok.metadata = S(" {\"a\":[1]}");
    CHECK_OK(cairn_append(fx->store, "s", 1, CAIRN_ANY, &ok, 1, &r));
    assert_int_equal(head_of(fx->store), 1);
}

/* The rules of spec 1 speak as cairn.Event does, whichever way an event comes in
 * (base/check.c), and say which event of the call broke one. */
static void event_rules_are_worded_as_cairn_event(void **state) {
    fixture *fx = *state;
    cairn_slice nul_tag = {"a\0b", 3};
    cairn_append_result r;
    struct {
        cairn_event_in ev;
        const char *want;
    } cases[] = {
        {{.type = S(""), .schema = 1}, "type must be 1..255 bytes of UTF-8, got 0 (event 1)"},
        {{.type = S("\xff"), .schema = 1}, "type is not valid UTF-8 (event 1)"},
        {{.type = {"a\0", 2}, .schema = 1}, "type must not contain NUL characters (event 1)"},
        {{.type = S("E"), .schema = 0},
         "schema must be an int from 1 to 4294967295, got 0 (event 1)"},
        {{.type = S("E"), .schema = 1, .tags = &nul_tag, .ntags = 1},
         "tags: each tag must not contain NUL characters (event 1)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cairn_event_in evs[2] = {ev_make("Fine", NULL), cases[i].ev};
        CHECK_RC(cairn_append(fx->store, "s", 1, CAIRN_ANY, evs, 2, &r), CAIRN_EINVAL);
        if (strcmp(cairn_errmsg(), cases[i].want))
            fail_msg("got \"%s\", want \"%s\"", cairn_errmsg(), cases[i].want);
    }
    assert_int_equal(head_of(fx->store), 0);
}

/* ---------------------------------------------------------------------------------
 * Stored fields and timestamps
 * --------------------------------------------------------------------------------- */
static void fields_round_trip(void **state) {
    fixture *fx = *state;
    cairn_slice tags[3] = {S("course:c1"), S("student:s9"), S("x")};
    static const unsigned char blob[5] = {0, 1, 2, 0xff, 0};
    cairn_event_in e[2] = {
        {.type = S("Subscribed"),
         .data = S("{\"a\":[1,2.5,\"x\"]}"),
         .metadata = S("{\"m\":1}"),
         .tags = tags,
         .ntags = 3,
         .schema = 3},
        {.type = S("Blob"), .data = {blob, sizeof blob}, .flags = CAIRN_EVENT_BYTES, .schema = 1},
    };
    cairn_append_result r;
    CHECK_OK(cairn_append(fx->store, "course-c1", 9, CAIRN_ANY, e, 2, &r));

    cairn_event ev;
    CHECK_OK(cairn_get(fx->store, 1, &ev));
    assert_int_equal(ev.position, 1);
    assert_int_equal(ev.version, 0);
    assert_int_equal(ev.schema, 3);
    assert_int_equal(ev.flags & CAIRN_EVENT_BYTES, 0);
    assert_int_equal(ev.stream.len, 9);
    assert_memory_equal(ev.stream.ptr, "course-c1", 9);
    assert_int_equal(ev.type.len, 10);
    assert_memory_equal(ev.type.ptr, "Subscribed", 10);
    assert_int_equal(ev.data.len, e[0].data.len);
    assert_memory_equal(ev.data.ptr, e[0].data.ptr, ev.data.len);
    assert_int_equal(ev.metadata.len, 7);
    assert_memory_equal(ev.metadata.ptr, "{\"m\":1}", 7);
    assert_int_equal(ev.ntags, 3);
    size_t cur = 0;
    cairn_slice tag;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cairn_event_tag(&ev, &cur, &tag), 1);
        assert_int_equal(tag.len, tags[i].len);
        assert_memory_equal(tag.ptr, tags[i].ptr, tag.len);
    }
    assert_int_equal(cairn_event_tag(&ev, &cur, &tag), 0);

    CHECK_OK(cairn_get(fx->store, 2, &ev));
    assert_int_equal(ev.flags & CAIRN_EVENT_BYTES, CAIRN_EVENT_BYTES);
    assert_int_equal(ev.data.len, sizeof blob);
    assert_memory_equal(ev.data.ptr, blob, sizeof blob);
    assert_int_equal(ev.metadata.len, 0);
    assert_int_equal(ev.ntags, 0);

    /* no data at all */
    CHECK_OK(append_one(fx->store, "course-c1", 1, "Empty", NULL, NULL));
    CHECK_OK(cairn_get(fx->store, 3, &ev));
    assert_int_equal(ev.data.len, 0);
    assert_int_equal(ev.flags & CAIRN_EVENT_BYTES, 0);
}

static void timestamps_non_decreasing(void **state) {
    fixture *fx = *state;
    struct timespec t0, t1;
    clock_gettime(CLOCK_REALTIME, &t0);
    for (int i = 0; i < 30; i++)
        CHECK_OK(append_n(fx->store, "s", CAIRN_ANY, "E", 1 + i % 3, NULL));
    clock_gettime(CLOCK_REALTIME, &t1);
    int64_t lo = (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec - 1000000000; /* 1 s slack */
    int64_t hi = (int64_t)t1.tv_sec * 1000000000 + t1.tv_nsec + 1000000000;
    rec *v;
    size_t n;
    CHECK_RC(read_all(fx->store, 0, 0, 0, NULL, &v, &n), 0);
    assert_int_equal(n, 60);
    for (size_t i = 0; i < n; i++) {
        assert_in_range(v[i].timestamp, lo, hi);
        if (i) assert_true(v[i].timestamp >= v[i - 1].timestamp);
    }
    free(v);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(append_single_and_batch),
        T(versions_and_positions_gapless),
        T(expected_version_checks),
        T(idempotent_retry_returns_same_result),
        T(ids_found_in_the_index_tail),
        T(duplicate_ids_rejected),
        T(duplicate_id_within_one_call),
        T(ids_assigned_and_kept),
        T(batch_is_atomic),
        T(batch_requests_see_each_other),
        T(bad_arguments_are_einval),
        T(metadata_that_is_not_an_object_is_einval),
        T(event_rules_are_worded_as_cairn_event),
        T(fields_round_trip),
        T(timestamps_non_decreasing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
