/*
 * test_decide.c -- cairn_decide, a decision model over a boundary (docs/API.md section 5),
 * where the C API has behaviour Python does not reach: its argument checks, and the one
 * write transaction run again after a full map or failing at commit, writing nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <lmdb.h>

#include "support.h"

#define S(x) \
    { x, sizeof(x) - 1 }

/* Seats of a course: the capacity and the subscriptions, both tagged with the course. */
static const char SEATS[] =
    "return {\n"
    "  boundary = function(cmd) return { { tags = { 'course:' .. cmd.data.course } } } end,\n"
    "  init = function() return { capacity = 0, taken = 0 } end,\n"
    "  apply = {\n"
    "    Defined = function(s, e) s.capacity = e.data.capacity end,\n"
    "    Subscribed = function(s, e) s.taken = s.taken + 1 end,\n"
    "  },\n"
    "  decide = {\n"
    "    Subscribe = function(s, cmd)\n"
    "      if s.taken >= s.capacity then reject('full', { taken = s.taken }) end\n"
    "      return { { type = 'Subscribed', data = cmd.data, tags = { 'course:' .. "
    "cmd.data.course } } }\n"
    "    end,\n"
    "  },\n"
    "  snapshot_every = 1,\n"
    "}\n";

static int seats(cairn_store *s, const char *data, cairn_append_result *r) {
    cairn_slice d = {data, strlen(data)}, m = {NULL, 0};
    return cairn_decide(s, "seats", 5, "Subscribe", 9, d, m, "subs", 4, r);
}

static void define_course(cairn_store *s, int capacity) {
    char data[64];
    cairn_slice tag = S("course:c1");
    cairn_event_in ev;
    cairn_append_result r;
    snprintf(data, sizeof data, "{\"capacity\":%d}", capacity);
    ev = ev_make("Defined", data);
    ev.tags = &tag, ev.ntags = 1;
    CHECK_OK(cairn_define_script(s, CAIRN_SCRIPT_AGGREGATE, "seats", 5, SEATS, strlen(SEATS)));
    CHECK_OK(cairn_append(s, "course-c1", 9, CAIRN_ANY, &ev, 1, &r));
}

static void arguments_are_checked(void **state) {
    fixture *fx = *state;
    cairn_store *s = fx->store;
    cairn_slice d = S("{\"course\":\"c1\"}"), m = {NULL, 0}, bad_meta = S("[1]");
    cairn_append_result r;
    define_course(s, 1);
    CHECK_RC(cairn_decide(s, NULL, 0, "Subscribe", 9, d, m, "subs", 4, &r), CAIRN_EINVAL);
    CHECK_RC(cairn_decide(s, "seats", 0, "Subscribe", 9, d, m, "subs", 4, &r), CAIRN_EINVAL);
    CHECK_RC(cairn_decide(s, "seats", 5, NULL, 0, d, m, "subs", 4, &r), CAIRN_EINVAL);
    CHECK_RC(cairn_decide(s, "seats", 5, "Subscribe", 9, d, m, NULL, 0, &r), CAIRN_EINVAL);
    CHECK_RC(cairn_decide(s, "seats", 5, "Subscribe", 9, d, m, "$subs", 5, &r), CAIRN_EINVAL);
    CHECK_RC(cairn_decide(s, "seats", 5, "Subscribe", 9, d, bad_meta, "subs", 4, &r), CAIRN_EINVAL);
    CHECK_RC(cairn_decide(s, "seats", 5, "Sub\0x", 5, d, m, "subs", 4, &r), CAIRN_EINVAL);
    CHECK_RC(cairn_decide(s, "none", 4, "Subscribe", 9, d, m, "subs", 4, &r), CAIRN_ENOTFOUND);
    assert_int_equal(head_of(s), 1);
    CHECK_OK(seats(s, "{\"course\":\"c1\"}", &r));
    assert_int_equal(r.version, 0);
    assert_int_equal(r.position, 2);
    assert_int_equal(r.first_position, 2);
    CHECK_RC(seats(s, "{\"course\":\"c1\"}", &r), CAIRN_EREJECTED);
    assert_string_equal(cairn_last_error()->reason, "full");
    assert_string_equal(cairn_last_error()->script, "seats");
}

/* MDB_MAP_FULL from a put of the body (the snapshot's or the append's) or from the commit:
 * the map grows and the whole transaction runs again -- boundary, fold, decide, write -- and
 * the events are written once. */
static void a_full_map_runs_the_decision_again(void **state) {
    fixture *fx = *state;
    cairn_store *s;
    cairn_append_result r;
    /* each MDB_MAP_FULL doubles the map: from 256 MiB, which valgrind can map too */
    cairn_close(fx->store);
    fx->store = NULL;
    rm_rf(fx->path);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 256ull << 20, 0, &fx->store));
    s = fx->store;
    define_course(s, 2);
    for (long nth = 1; nth <= 2; nth++) {
        fault_arm(FAULT_PUT, nth, MDB_MAP_FULL);
        CHECK_OK(seats(s, "{\"course\":\"c1\"}", &r));
        assert_true(fault_fired(FAULT_PUT));
        fault_disarm();
        assert_int_equal(r.version, nth - 1);
        assert_int_equal(head_of(s), (uint64_t)nth + 1);
    }
    CHECK_RC(seats(s, "{\"course\":\"c1\"}", &r), CAIRN_EREJECTED); /* two taken, not more */
    {                                                               /* one seat more */
        cairn_slice tag = S("course:c1");
        cairn_event_in ev = ev_make("Defined", "{\"capacity\":3}");
        ev.tags = &tag, ev.ntags = 1;
        CHECK_OK(cairn_append(s, "course-c1", 9, CAIRN_ANY, &ev, 1, &r));
    }
    fault_arm(FAULT_COMMIT, 1, MDB_MAP_FULL);
    CHECK_OK(seats(s, "{\"course\":\"c1\"}", &r));
    fault_disarm();
    assert_int_equal(r.version, 2);
    assert_int_equal(version_of(s, "subs"), 2);
    CHECK_RC(seats(s, "{\"course\":\"c1\"}", &r), CAIRN_EREJECTED);
}

/* A commit that fails writes nothing, and the next decide sees the store as it was. */
static void a_failed_commit_writes_nothing(void **state) {
    fixture *fx = *state;
    cairn_store *s = fx->store;
    cairn_append_result r;
    define_course(s, 1);
    fault_arm(FAULT_COMMIT, 1, EIO);
    CHECK_RC(seats(s, "{\"course\":\"c1\"}", &r), CAIRN_EIO);
    fault_disarm();
    assert_int_equal(head_of(s), 1);
    assert_int_equal(version_of(s, "subs"), -1);
    CHECK_OK(seats(s, "{\"course\":\"c1\"}", &r));
    assert_int_equal(r.position, 2);
    CHECK_RC(seats(s, "{\"course\":\"c1\"}", &r), CAIRN_EREJECTED);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(arguments_are_checked, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(a_full_map_runs_the_decision_again, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(a_failed_commit_writes_nothing, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
