/*
 * test_projection.c -- projections through the C API: catch-up in batches, position over
 * events outside the source, partitions, faults, emit exactly-once across reset, inline mode.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support.h"

static int define(cairn_store *s, const char *name, const char *src) {
    return cairn_define_script(s, CAIRN_SCRIPT_PROJECTION, name, strlen(name), src, strlen(src));
}

static long long field_of(cairn_store *s, const char *name, const char *part, const char *field) {
    char *json;
    size_t len;
    char pat[64];
    const char *p;
    long long v = -999;
    int rc =
        cairn_projection_state(s, name, strlen(name), part, part ? strlen(part) : 0, &json, &len);
    if (rc == CAIRN_ENOTFOUND) return -1;
    CHECK_OK(rc);
    snprintf(pat, sizeof pat, "\"%s\":", field);
    if ((p = strstr(json, pat))) v = atoll(p + strlen(pat));
    free(json);
    return v;
}

static const char COUNT[] =
    "return {\n"
    "  source = { categories = { 'account' } },\n"
    "  init = function() return { n = 0, sum = 0 } end,\n"
    "  apply = { Deposited = function(s, e) s.n = s.n + 1; s.sum = s.sum + e.data.i end },\n"
    "}\n";

static void catch_up_in_batches(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    cairn_projection_status st;
    uint64_t n;
    CHECK_OK(define(fx->store, "count", COUNT));
    assert_int_equal(field_of(fx->store, "count", NULL, "n"), -1); /* not run yet */
    CHECK_OK(append_n(fx->store, "account-1", CAIRN_ANY, "Deposited", 2500, &r));
    CHECK_OK(append_n(fx->store, "other-1", CAIRN_ANY, "Deposited", 10, &r));
    CHECK_OK(cairn_run_projections(fx->store, "count", 5, &n));
    assert_int_equal(n, 2500);
    assert_int_equal(field_of(fx->store, "count", NULL, "n"), 2500);
    assert_int_equal(field_of(fx->store, "count", NULL, "sum"), 2499LL * 2500 / 2);
    CHECK_OK(cairn_projection_info(fx->store, "count", 5, &st));
    assert_int_equal(st.position, 2510); /* over the events outside the source too */
    assert_false(st.faulted);
    CHECK_OK(cairn_run_projections(fx->store, NULL, 0, &n));
    assert_int_equal(n, 0);
    CHECK_RC(cairn_projection_info(fx->store, "nope", 4, &st), CAIRN_ENOTFOUND);
}

static const char PARTS[] = "return {\n"
                            "  partition = function(e) return e.stream end,\n"
                            "  init = function() return { n = 0 } end,\n"
                            "  apply = { ['*'] = function(s, e) s.n = s.n + 1 end },\n"
                            "}\n";

static int collect_name(void *ctx, const char *name, size_t len) {
    char *out = ctx;
    strncat(out, name, len);
    strcat(out, ",");
    return 0;
}

static void partitions_sorted(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    char names[256] = "";
    CHECK_OK(define(fx->store, "parts", PARTS));
    CHECK_OK(append_n(fx->store, "b-1", CAIRN_ANY, "X", 3, &r));
    CHECK_OK(append_n(fx->store, "a-1", CAIRN_ANY, "Y", 2, &r));
    CHECK_OK(cairn_run_projections(fx->store, NULL, 0, NULL));
    CHECK_OK(cairn_projection_partitions(fx->store, "parts", 5, collect_name, names));
    assert_string_equal(names, "a-1,b-1,");
    assert_int_equal(field_of(fx->store, "parts", "b-1", "n"), 3);
    assert_int_equal(field_of(fx->store, "parts", "a-1", "n"), 2);
    assert_int_equal(field_of(fx->store, "parts", "c-1", "n"), -1);
    assert_int_equal(field_of(fx->store, "parts", NULL, "n"), -1);
}

static const char FAULTY[] = "return {\n"
                             "  init = function() return { n = 0 } end,\n"
                             "  apply = { X = function(s, e)\n"
                             "    if e.data.i == 1500 then error('boom') end\n"
                             "    s.n = s.n + 1\n"
                             "  end },\n"
                             "}\n";

static void fault_stops_only_that_projection(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    cairn_projection_status st;
    uint64_t n;
    CHECK_OK(define(fx->store, "faulty", FAULTY));
    CHECK_OK(define(fx->store, "count", COUNT));
    CHECK_OK(append_n(fx->store, "x-1", CAIRN_ANY, "X", 2000, &r));
    CHECK_OK(append_n(fx->store, "account-1", CAIRN_ANY, "Deposited", 5, &r));
    CHECK_OK(cairn_run_projections(fx->store, NULL, 0, &n));
    CHECK_OK(cairn_projection_info(fx->store, "faulty", 6, &st));
    assert_true(st.faulted);
    assert_int_equal(st.error_position, 1501);
    assert_int_equal(st.position, 1500);
    assert_int_equal(st.error_line, 4);
    assert_non_null(strstr(st.error, "boom"));
    assert_int_equal(field_of(fx->store, "faulty", NULL, "n"), 1500); /* all events before it */
    assert_int_equal(field_of(fx->store, "count", NULL, "n"), 5);
    /* skipped until reset */
    CHECK_OK(cairn_run_projections(fx->store, "faulty", 6, &n));
    assert_int_equal(n, 0);
    CHECK_OK(cairn_projection_reset(fx->store, "faulty", 6));
    CHECK_OK(cairn_projection_info(fx->store, "faulty", 6, &st));
    assert_false(st.faulted);
    assert_int_equal(st.position, 0);
    CHECK_OK(cairn_run_projections(fx->store, "faulty", 6, &n));
    CHECK_OK(cairn_projection_info(fx->store, "faulty", 6, &st));
    assert_true(st.faulted); /* same data, same fault */
    assert_int_equal(st.position, 1500);
}

static const char EMITTER[] =
    "return {\n"
    "  source = { types = { 'X' } },\n"
    "  init = function() return { n = 0 } end,\n"
    "  apply = { X = function(s, e) s.n = s.n + 1; emit('out-1', 'Seen', { i = e.data.i }) end },\n"
    "}\n";

static void emit_exactly_once_across_reset(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    uint64_t n;
    CHECK_OK(define(fx->store, "em", EMITTER));
    CHECK_OK(append_n(fx->store, "x-1", CAIRN_ANY, "X", 1200, &r));
    CHECK_OK(cairn_run_projections(fx->store, NULL, 0, &n));
    assert_int_equal(n, 1200);
    assert_int_equal(version_of(fx->store, "out-1"), 1199);
    CHECK_OK(cairn_projection_reset(fx->store, "em", 2));
    CHECK_OK(cairn_run_projections(fx->store, NULL, 0, &n));
    assert_int_equal(version_of(fx->store, "out-1"), 1199);
    assert_int_equal(field_of(fx->store, "em", NULL, "n"), 1200);
    assert_int_equal(head_of(fx->store), 2400);
}

static const char INLINE[] = "return {\n"
                             "  mode = 'inline',\n"
                             "  init = function() return { n = 0 } end,\n"
                             "  apply = { X = function(s, e) if e.data.i == 7 then error('seven') "
                             "end; s.n = s.n + 1 end },\n"
                             "}\n";

static void inline_follows_appends(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    CHECK_OK(append_n(fx->store, "x-1", CAIRN_ANY, "X", 5, &r));
    CHECK_OK(define(fx->store, "inl", INLINE)); /* catches up inside the define */
    assert_int_equal(field_of(fx->store, "inl", NULL, "n"), 5);
    CHECK_OK(append_one(fx->store, "x-2", CAIRN_ANY, "X", "{\"i\":1}", &r));
    assert_int_equal(field_of(fx->store, "inl", NULL, "n"), 6);
    CHECK_RC(append_one(fx->store, "x-2", CAIRN_ANY, "X", "{\"i\":7}", &r), CAIRN_ESCRIPT);
    assert_int_equal(head_of(fx->store), 6);
    assert_int_equal(field_of(fx->store, "inl", NULL, "n"), 6);
    CHECK_OK(cairn_delete_projection(fx->store, "inl", 3));
    CHECK_OK(append_one(fx->store, "x-2", CAIRN_ANY, "X", "{\"i\":7}", &r));
}

static void runner_keeps_current(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    cairn_runner *run;
    CHECK_OK(define(fx->store, "count", COUNT));
    CHECK_OK(cairn_projections_start(fx->store, &run));
    CHECK_OK(append_n(fx->store, "account-1", CAIRN_ANY, "Deposited", 10, &r));
    for (int i = 0; i < 200 && field_of(fx->store, "count", NULL, "n") != 10; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    cairn_projections_stop(run);
    assert_int_equal(field_of(fx->store, "count", NULL, "n"), 10);
}

/* One name rule for scripts, projections and subscriptions (docs/API.md: 1..255 bytes of
 * UTF-8 without NUL): a projection name that is not UTF-8 is refused by every projection
 * call, as define refuses it, instead of being looked up. */
static void projection_names_must_be_utf8(void **state) {
    fixture *fx = *state;
    cairn_projection_status st;
    char big[256], *json;
    size_t len;
    uint64_t n;
    memset(big, 'p', sizeof big);
    CHECK_RC(define(fx->store, "\xff", COUNT), CAIRN_EINVAL);
    CHECK_RC(cairn_projection_info(fx->store, "\xff", 1, &st), CAIRN_EINVAL);
    CHECK_RC(cairn_projection_info(fx->store, "\xc0\x80", 2, &st), CAIRN_EINVAL); /* overlong */
    CHECK_RC(cairn_projection_info(fx->store, "\xed\xa0\x80", 3, &st),
             CAIRN_EINVAL); /* surrogate */
    CHECK_RC(cairn_projection_state(fx->store, "\xff", 1, NULL, 0, &json, &len), CAIRN_EINVAL);
    CHECK_RC(cairn_projection_partitions(fx->store, "\xff", 1, collect_name, big), CAIRN_EINVAL);
    CHECK_RC(cairn_projection_reset(fx->store, "\xff", 1), CAIRN_EINVAL);
    CHECK_RC(cairn_delete_projection(fx->store, "\xff", 1), CAIRN_EINVAL);
    CHECK_RC(cairn_run_projections(fx->store, "\xff", 1, &n), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_errmsg(), "UTF-8"));
    CHECK_RC(cairn_projection_info(fx->store, "", 0, &st), CAIRN_EINVAL);
    CHECK_RC(cairn_projection_info(fx->store, "a\0b", 3, &st), CAIRN_EINVAL);
    CHECK_RC(cairn_projection_info(fx->store, big, sizeof big, &st), CAIRN_EINVAL);
    CHECK_RC(cairn_projection_info(fx->store, big, sizeof big - 1, &st), CAIRN_ENOTFOUND);
    CHECK_RC(cairn_projection_info(fx->store, "caf\xc3\xa9", 5, &st), CAIRN_ENOTFOUND);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(catch_up_in_batches, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(partitions_sorted, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(fault_stops_only_that_projection, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(emit_exactly_once_across_reset, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(inline_follows_appends, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(runner_keeps_current, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(projection_names_must_be_utf8, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
