/*
 * test_aggregate.c -- aggregates through the C API: define, load (with snapshots and time
 * travel), execute inside the write transaction, reject, compensate, rollback, upcasters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

static const char BANK[] =
    "return {\n"
    "  init = function() return { balance = 0 } end,\n"
    "  apply = {\n"
    "    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,\n"
    "    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,\n"
    "  },\n"
    "  decide = {\n"
    "    Deposit = function(s, c) return { { type = 'Deposited', data = { amount = c.data.amount } "
    "} } end,\n"
    "    Withdraw = function(s, c)\n"
    "      if s.balance < c.data.amount then reject('insufficient funds', { balance = s.balance }) "
    "end\n"
    "      return { { type = 'Withdrawn', data = { amount = c.data.amount } } }\n"
    "    end,\n"
    "    Nothing = function(s, c) return {} end,\n"
    "  },\n"
    "  compensate = {\n"
    "    Withdrawn = function(s, e) return { { type = 'Deposited', data = { amount = e.data.amount "
    "} } } end,\n"
    "  },\n"
    "  snapshot_every = 10,\n"
    "}\n";

static int define_bank(cairn_store *s) {
    return cairn_define_script(s, CAIRN_SCRIPT_AGGREGATE, "account", 7, BANK, strlen(BANK));
}

static long long balance_of(cairn_store *s, const char *stream, int64_t version, cairn_state *st) {
    long long b = -999;
    const char *p;
    CHECK_OK(cairn_load(s, stream, strlen(stream), NULL, 0, version, CAIRN_AT_NONE, st));
    p = strstr(st->json, "\"balance\":");
    if (p) b = atoll(p + 10);
    return b;
}

static int execute(cairn_store *s, const char *stream, const char *cmd, const char *data,
                   cairn_append_result *r) {
    cairn_slice d = {data, data ? strlen(data) : 0}, m = {NULL, 0};
    return cairn_execute(s, stream, strlen(stream), NULL, 0, cmd, strlen(cmd), d, m, CAIRN_ANY,
                         NULL, r);
}

static void load_folds_events(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    cairn_state st;
    CHECK_OK(define_bank(fx->store));
    CHECK_OK(append_one(fx->store, "account-1", CAIRN_ANY, "Deposited", "{\"amount\":100}", &r));
    CHECK_OK(append_one(fx->store, "account-1", CAIRN_ANY, "Withdrawn", "{\"amount\":30}", &r));
    assert_int_equal(balance_of(fx->store, "account-1", -1, &st), 70);
    assert_int_equal(st.version, 1);
    free(st.json);
    assert_int_equal(balance_of(fx->store, "account-1", 0, &st), 100);
    assert_int_equal(st.version, 0);
    free(st.json);
}

static void missing_aggregate_is_not_found(void **state) {
    fixture *fx = *state;
    cairn_state st;
    CHECK_RC(cairn_load(fx->store, "nothing-1", 9, NULL, 0, -1, CAIRN_AT_NONE, &st),
             CAIRN_ENOTFOUND);
}

static void execute_decides_inside_the_transaction(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    cairn_state st;
    CHECK_OK(define_bank(fx->store));
    CHECK_OK(execute(fx->store, "account-7", "Deposit", "{\"amount\":50}", &r));
    assert_int_equal(r.version, 0);
    CHECK_RC(execute(fx->store, "account-7", "Withdraw", "{\"amount\":80}", &r), CAIRN_EREJECTED);
    assert_string_equal(cairn_last_error()->reason, "insufficient funds");
    assert_non_null(cairn_last_error()->details);
    assert_non_null(memmem(cairn_last_error()->details, cairn_last_error()->details_len, "50", 2));
    assert_int_equal(version_of(fx->store, "account-7"), 0);
    CHECK_OK(execute(fx->store, "account-7", "Withdraw", "{\"amount\":20}", &r));
    assert_int_equal(balance_of(fx->store, "account-7", -1, &st), 30);
    free(st.json);
    CHECK_OK(execute(fx->store, "account-7", "Nothing", NULL, &r));
    assert_int_equal(r.position, 0);
    assert_int_equal(r.version, 1);
    CHECK_RC(execute(fx->store, "account-7", "Fly", NULL, &r), CAIRN_EINVAL);
}

static void compensate_once(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    cairn_state st;
    cairn_slice m = {NULL, 0};
    CHECK_OK(define_bank(fx->store));
    CHECK_OK(execute(fx->store, "account-2", "Deposit", "{\"amount\":50}", &r));
    CHECK_OK(execute(fx->store, "account-2", "Withdraw", "{\"amount\":20}", &r));
    CHECK_OK(cairn_compensate(fx->store, "account-2", 9, 1, NULL, 0, m, &r));
    assert_int_equal(r.version, 2);
    assert_int_equal(balance_of(fx->store, "account-2", -1, &st), 50);
    free(st.json);
    CHECK_RC(cairn_compensate(fx->store, "account-2", 9, 1, NULL, 0, m, &r), CAIRN_EALREADY);
    CHECK_RC(cairn_compensate(fx->store, "account-2", 9, 0, NULL, 0, m, &r), CAIRN_ENOTCOMPENSABLE);
    CHECK_RC(cairn_compensate(fx->store, "account-2", 9, 9, NULL, 0, m, &r), CAIRN_EINVAL);
}

/* The canonical text of an id, as metadata.compensates holds it. */
static void uuid_text(const uint8_t id[16], char out[37]) {
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hex[id[i] >> 4];
        *o++ = hex[id[i] & 15];
    }
    *o = '\0';
}

/* Does the compensation `c` undo the event `orig` (its compensates link, and the amount)? */
static void assert_compensates(const rec *c, const rec *orig, const char *amount) {
    char link[64], id[37];
    uuid_text(orig->id, id);
    snprintf(link, sizeof link, "\"compensates\":\"%s\"", id);
    assert_string_equal(c->type, "Deposited");
    assert_non_null(memmem(c->metadata, c->metadata_len, link, strlen(link)));
    assert_non_null(memmem(c->data, c->data_len, amount, strlen(amount)));
}

static void rollback_compensates_newest_first(void **state) {
    fixture *fx = *state;
    cairn_append_result r, *rs;
    cairn_state st;
    rec *evs;
    size_t n, nevs;
    const char *meta = "{\"correlation_id\":\"saga-1\"}";
    cairn_slice d10 = {"{\"amount\":10}", 13}, d25 = {"{\"amount\":25}", 13};
    cairn_slice m = {meta, strlen(meta)}, none = {NULL, 0};
    CHECK_OK(define_bank(fx->store));
    CHECK_OK(execute(fx->store, "account-a", "Deposit", "{\"amount\":100}", &r));
    CHECK_OK(cairn_execute(fx->store, "account-a", 9, NULL, 0, "Withdraw", 8, d10, m, CAIRN_ANY,
                           NULL, &r));
    CHECK_OK(cairn_execute(fx->store, "account-b", 9, NULL, 0, "Deposit", 7, d10, none, CAIRN_ANY,
                           NULL, &r));
    CHECK_OK(cairn_execute(fx->store, "account-a", 9, NULL, 0, "Withdraw", 8, d25, m, CAIRN_ANY,
                           NULL, &r));
    CHECK_OK(cairn_rollback(fx->store, "saga-1", 6, &rs, &n));
    assert_int_equal(n, 2);
    assert_true(rs[0].position < rs[1].position); /* results in the order written */
    assert_int_equal(rs[0].version, 3);
    assert_int_equal(rs[1].version, 4);
    free(rs);
    /* account-a: Deposited 100, Withdrawn 10 (saga), Withdrawn 25 (saga), then the
     * compensations: the newest original (25, version 2) first, then the older (10) */
    CHECK_OK(read_stream(fx->store, "account-a", 0, 0, 0, &evs, &nevs));
    assert_int_equal(nevs, 5);
    assert_compensates(&evs[3], &evs[2], "\"amount\":25");
    assert_compensates(&evs[4], &evs[1], "\"amount\":10");
    free(evs);
    assert_int_equal(balance_of(fx->store, "account-a", -1, &st), 100);
    free(st.json);
    CHECK_OK(cairn_rollback(fx->store, "saga-1", 6, &rs, &n));
    assert_int_equal(n, 0);
    free(rs);
}

static void snapshots_bound_the_fold(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    cairn_state st;
    CHECK_OK(define_bank(fx->store));
    for (int i = 0; i < 95; i++)
        CHECK_OK(append_one(fx->store, "account-s", CAIRN_ANY, "Deposited", "{\"amount\":1}", &r));
    assert_int_equal(balance_of(fx->store, "account-s", -1, &st), 95);
    assert_true(st.applied <= 10);
    free(st.json);
    /* time travel still exact with snapshots around */
    assert_int_equal(balance_of(fx->store, "account-s", 41, &st), 42);
    free(st.json);
    /* a new script invalidates the snapshots */
    {
        const char *src =
            "return { init = function() return { balance = 1000 } end, apply = { Deposited = "
            "function(s, e) s.balance = s.balance + 2 end }, snapshot_every = 10 }";
        CHECK_OK(
            cairn_define_script(fx->store, CAIRN_SCRIPT_AGGREGATE, "account", 7, src, strlen(src)));
    }
    assert_int_equal(balance_of(fx->store, "account-s", -1, &st), 1190);
    free(st.json);
}

static void script_errors_carry_line_and_position(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    cairn_state st;
    const char *bad = "return {\n apply = {\n  X = function(s, e)\n   error('boom')\n  end } }";
    CHECK_RC(cairn_define_script(fx->store, CAIRN_SCRIPT_AGGREGATE, "x", 1, "return {", 8),
             CAIRN_ESCRIPT);
    CHECK_RC(cairn_define_script(fx->store, CAIRN_SCRIPT_AGGREGATE, "x", 1, "return 5", 8),
             CAIRN_ESCRIPT);
    CHECK_OK(cairn_define_script(fx->store, CAIRN_SCRIPT_AGGREGATE, "x", 1, bad, strlen(bad)));
    CHECK_OK(append_one(fx->store, "x-1", CAIRN_ANY, "X", "{}", &r));
    CHECK_RC(cairn_load(fx->store, "x-1", 3, NULL, 0, -1, CAIRN_AT_NONE, &st), CAIRN_ESCRIPT);
    assert_string_equal(cairn_last_error()->script, "x");
    assert_int_equal(cairn_last_error()->line, 4);
    assert_int_equal(cairn_last_error()->position, r.position);
}

static void upcasters_apply_on_reads(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    cairn_event ev;
    const char *up =
        "return { Deposited = { [1] = function(e) e.data.currency = 'EUR'; return e end } }";
    CHECK_OK(append_one(fx->store, "account-u", CAIRN_ANY, "Deposited", "{\"amount\":5}", &r));
    CHECK_OK(
        cairn_define_script(fx->store, CAIRN_SCRIPT_UPCASTERS, "upcasters", 9, up, strlen(up)));
    CHECK_OK(cairn_get_ex(fx->store, r.position, 0, &ev));
    assert_int_equal(ev.schema, 2);
    assert_non_null(memmem(ev.data.ptr, ev.data.len, "EUR", 3));
    CHECK_OK(cairn_get_ex(fx->store, r.position, 1, &ev));
    assert_int_equal(ev.schema, 1);
}

/* Long folds refill one set of event tables; a reducer that keeps them, writes to them or
 * reads `id` must see exactly what fresh tables would give it. */
static long long field_of(const char *json, const char *name) {
    char key[64];
    const char *p;
    snprintf(key, sizeof key, "\"%s\":", name);
    p = strstr(json, key);
    return p ? atoll(p + strlen(key)) : -999;
}

static void fold_with(cairn_store *s, const char *name, const char *src, long n, cairn_state *st) {
    cairn_append_result r;
    char stream[64];
    snprintf(stream, sizeof stream, "%s-1", name);
    CHECK_OK(cairn_define_script(s, CAIRN_SCRIPT_AGGREGATE, name, strlen(name), src, strlen(src)));
    for (long i = 0; i < n; i += 100) CHECK_OK(append_n(s, stream, CAIRN_ANY, "T", 100, &r));
    CHECK_OK(cairn_load(s, stream, strlen(stream), NULL, 0, -1, CAIRN_AT_NONE, st));
    assert_int_equal(st->applied, n);
}

static void long_folds_keep_event_semantics(void **state) {
    fixture *fx = *state;
    cairn_state st;
    /* keeps every e.data: each must still hold its own event's value */
    fold_with(fx->store, "keep",
              "return { init = function() return { items = {} } end, apply = { T = function(s, e)"
              " s.items[#s.items + 1] = e.data end }, }",
              1000, &st);
    assert_non_null(strstr(st.json, "{\"i\":0}"));
    assert_non_null(strstr(st.json, "{\"i\":99}"));
    free(st.json);
    /* keeps the event in a global and compares with it */
    fold_with(fx->store, "glob",
              "local prev\nreturn { init = function() return { same = 0, n = 0 } end, apply = { T "
              "= function(s, e)"
              " if prev and prev.version == e.version then s.same = s.same + 1 end; prev = e; s.n "
              "= s.n + 1 end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "same"), 0);
    assert_int_equal(field_of(st.json, "n"), 1000);
    free(st.json);
    /* writes a field into the event and looks for it on the next one */
    fold_with(fx->store, "mark",
              "return { init = function() return { seen = 0 } end, apply = { T = function(s, e)"
              " if e.mark then s.seen = s.seen + 1 end; e.mark = true end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "seen"), 0);
    free(st.json);
    /* overwrites a field that is the same for every event */
    fold_with(fx->store, "strm",
              "return { init = function() return { bad = 0 } end, apply = { T = function(s, e)"
              " if e.stream ~= 'strm-1' then s.bad = s.bad + 1 end; e.stream = 'x' end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "bad"), 0);
    free(st.json);
    /* ids are distinct and well-formed */
    fold_with(fx->store, "ids",
              "return { init = function() return { n = 0, bad = 0, seen = {} } end, apply = { T = "
              "function(s, e)"
              " if #e.id ~= 36 or s.seen[e.id] then s.bad = s.bad + 1 end; s.seen[e.id] = true; "
              "s.n = s.n + 1 end },"
              " }",
              1000, &st);
    assert_int_equal(field_of(st.json, "bad"), 0);
    assert_int_equal(field_of(st.json, "n"), 1000);
    free(st.json);
    /* writes the schema of one event */
    fold_with(fx->store, "schm",
              "return { init = function() return { bad = 0 } end, apply = { T = function(s, e)"
              " if e.schema ~= 1 then s.bad = s.bad + 1 end; if e.version == 10 then e.schema = 7 "
              "end end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "bad"), 0);
    free(st.json);
    /* writes `bytes` of one event (set only when it changes) */
    fold_with(fx->store, "byts",
              "return { init = function() return { bad = 0 } end, apply = { T = function(s, e)"
              " if e.bytes ~= false then s.bad = s.bad + 1 end; if e.version == 10 then e.bytes = "
              "true end end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "bad"), 0);
    free(st.json);
    /* writes its own id */
    fold_with(fx->store, "myid",
              "return { init = function() return { bad = 0 } end, apply = { T = function(s, e)"
              " if e.id == 'mine' then s.bad = s.bad + 1 end; if e.version == 10 then e.id = "
              "'mine' end end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "bad"), 0);
    free(st.json);
    /* adds a key to e.data (whose keys are the same for every event, so the reused data
     * table is written over, not emptied) and looks for it on the next one */
    fold_with(fx->store, "dmrk",
              "return { init = function() return { seen = 0 } end, apply = { T = function(s, e)"
              " if e.data.mark then s.seen = s.seen + 1 end; e.data.mark = true end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "seen"), 0);
    free(st.json);
    /* the same through rawset, on one event only */
    fold_with(fx->store, "draw",
              "return { init = function() return { bad = 0 } end, apply = { T = function(s, e)"
              " if rawget(e.data, 'x') then s.bad = s.bad + 1 end;"
              " if e.version == 10 then rawset(e.data, 'x', 1) end end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "bad"), 0);
    free(st.json);
    /* removes or changes a key of e.data: every later event still has its own value */
    fold_with(fx->store, "ddel",
              "return { init = function() return { total = 0 } end, apply = { T = function(s, e)"
              " s.total = s.total + e.data.i; if e.version % 2 == 0 then e.data.i = nil else"
              " e.data.i = 1000000 end end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "total"), 10 * (99 * 100 / 2));
    free(st.json);
    /* and a plain reducer still folds every event (through the reused tables) */
    fold_with(fx->store, "sum",
              "return { init = function() return { total = 0 } end, apply = { T = function(s, e)"
              " s.total = s.total + e.data.i end }, }",
              1000, &st);
    assert_int_equal(field_of(st.json, "total"), 10 * (99 * 100 / 2));
    free(st.json);
}

/* The reused data table over events whose keys change from one to the next (other keys,
 * more, fewer, the same in another order, escaped, not an object, more than the table's
 * key list holds): every event sees exactly its own keys and values. */
static void long_folds_see_each_events_own_data_keys(void **state) {
    fixture *fx = *state;
    static const char *shapes[] = {
        "{\"a\":1}",
        "{\"a\":1}",
        "{\"b\":2}",
        "{\"a\":1,\"b\":2}",
        "{\"b\":2,\"a\":1}",
        "{}",
        "[1,2]",
        "\"s\"",
        "{\"\\u0061\":1}",
        "{\"a\":1,\"c\":{\"a\":5}}",
        "{\"k1\":0,\"k2\":0,\"k3\":0,\"k4\":0,\"k5\":0,\"k6\":0,\"k7\":0,\"k8\":0,\"k9\":0,"
        "\"k10\":0,\"k11\":0,\"k12\":0,\"k13\":0,\"k14\":0,\"k15\":0,\"k16\":0,\"a\":1,\"b\":2}",
        /* string values: one equal to the last (reused), a longer one, escaped ones */
        "{\"s\":\"a\"}",
        "{\"s\":\"a\"}",
        "{\"s\":\"ab\"}",
        "{\"s\":\"a\\\"b\"}",
        "{\"s\":\"\\u0061\"}",
        "{\"s\":\"a\",\"t\":\"a\"}",
        "{\"s\":\"\"}",
    };
    /* keys of each shape's data, and a + 10 b over them */
    static const int nkeys[] = {1, 1, 1, 2, 2, 0, 2, 0, 1, 2, 18, 1, 1, 1, 1, 1, 2, 1};
    /* ... and 100 * #s + its first byte */
    static const int sum[] = {1, 1, 20, 21, 21, 0, 0, 0, 1, 1, 21, 197, 197, 297, 397, 197, 197, 0};
    const size_t ns = sizeof shapes / sizeof *shapes;
    static const char src[] =
        "return { init = function() return { keys = 0, sum = 0 } end, apply = { T = function(s, e)"
        " if type(e.data) == 'table' and not e.data[1] then"
        "  for k in pairs(e.data) do s.keys = s.keys + 1 end;"
        "  s.sum = s.sum + (e.data.a or 0) + 10 * (e.data.b or 0)"
        "  if e.data.s then s.sum = s.sum + 100 * #e.data.s + (e.data.s:byte(1) or 0) end"
        " elseif type(e.data) == 'table' then s.keys = s.keys + #e.data end end }, }";
    cairn_event_in evs[100];
    cairn_append_result r;
    cairn_state st;
    long keys = 0, total = 0;
    CHECK_OK(cairn_define_script(fx->store, CAIRN_SCRIPT_AGGREGATE, "shp", 3, src, strlen(src)));
    for (int b = 0; b < 10; b++) {
        for (size_t i = 0; i < 100; i++) {
            size_t k = (b * 100 + i) % ns;
            evs[i] = ev_make("T", shapes[k]);
            keys += nkeys[k], total += sum[k];
        }
        CHECK_OK(cairn_append(fx->store, "shp-1", 5, CAIRN_ANY, evs, 100, &r));
    }
    CHECK_OK(cairn_load(fx->store, "shp-1", 5, NULL, 0, -1, CAIRN_AT_NONE, &st));
    assert_int_equal(st.applied, 1000);
    assert_int_equal(field_of(st.json, "keys"), keys);
    assert_int_equal(field_of(st.json, "sum"), total);
    free(st.json);
}

/* A command id (spec 2 "Aggregates"): a retry returns the first result without running decide
 * (the balance no longer pays for it) and writes nothing; the id for another command is a
 * duplicate, also when the first event waits in the index tail. */
static void execute_with_a_command_id_is_idempotent(void **state) {
    fixture *fx = *state;
    static const uint8_t cid[16] = {0x5a, 0x1e, 0x0c, 0x3d, 0x77, 0x10, 0x4b, 0x2a,
                                    0x9c, 0x01, 0x52, 0x6e, 0x33, 0x44, 0x55, 0x66};
    cairn_slice d100 = {"{\"amount\":100}", 14}, d99 = {"{\"amount\":99}", 13}, none = {NULL, 0};
    cairn_append_result r1, r2;
    cairn_event ev;
    uint64_t head;
    CHECK_OK(define_bank(fx->store));
    CHECK_OK(execute(fx->store, "account-1", "Deposit", "{\"amount\":100}", &r1));
    CHECK_OK(cairn_execute(fx->store, "account-1", 9, NULL, 0, "Withdraw", 8, d100, none, CAIRN_ANY,
                           cid, &r1));
    assert_int_equal(r1.version, 1);
    assert_int_equal(r1.position, 2);
    CHECK_OK(cairn_get(fx->store, r1.position, &ev));
    assert_int_equal(ev.id[6] >> 4, 8); /* a UUIDv8 derived from the command id */
    assert_memory_not_equal(ev.id, cid, 16);
    head = head_of(fx->store);
    CHECK_OK(
        cairn_execute(fx->store, "account-1", 9, NULL, 0, "Withdraw", 8, d100, none, 0, cid, &r2));
    assert_int_equal(r2.version, r1.version);
    assert_int_equal(r2.position, r1.position);
    assert_int_equal(r2.first_position, r1.first_position);
    assert_int_equal(head_of(fx->store), head);
    CHECK_RC(cairn_execute(fx->store, "account-1", 9, NULL, 0, "Withdraw", 8, d99, none, CAIRN_ANY,
                           cid, &r2),
             CAIRN_EDUPLICATE);
    assert_int_equal(cairn_last_error()->position, r1.position);
    CHECK_RC(cairn_execute(fx->store, "account-2", 9, NULL, 0, "Withdraw", 8, d100, none, CAIRN_ANY,
                           cid, &r2),
             CAIRN_EDUPLICATE);
    assert_non_null(strstr(cairn_errmsg(), "for stream account-1"));
    assert_int_equal(head_of(fx->store), head);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(load_folds_events, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(missing_aggregate_is_not_found, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(execute_decides_inside_the_transaction, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(compensate_once, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(rollback_compensates_newest_first, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(snapshots_bound_the_fold, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(script_errors_carry_line_and_position, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(upcasters_apply_on_reads, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(long_folds_keep_event_semantics, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(long_folds_see_each_events_own_data_keys, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(execute_with_a_command_id_is_idempotent, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
