/*
 * hello.c -- cairn from C (docs/c-api.md): open a store, append, read a stream and the log,
 * a conflict and its error details, an aggregate in Lua, verify.
 *
 *   cc hello.c -Icore/include build/libcairn.a -llmdb -ljansson -lxxhash -llua5.4 -lpthread -lm
 *   ./a.out hello-store      (a directory that does not exist yet)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"

#define S(text) ((cairn_slice){text, sizeof text - 1})

static int fail(const char *what) {
    const cairn_error *err = cairn_last_error();
    fprintf(stderr, "%s: %s (%s)\n", what, err->message, cairn_strerror(err->code));
    return 1;
}

static const char ACCOUNT[] =
    "return {\n"
    "  init = function() return { balance = 0 } end,\n"
    "  apply = { Deposited = function(s, e) s.balance = s.balance + e.data.amount end },\n"
    "  decide = { Deposit = function(s, cmd)\n"
    "    return { { type = 'Deposited', data = { amount = cmd.data.amount } } } end },\n"
    "}\n";

int main(int argc, char **argv) {
    cairn_options opts;
    cairn_store *store;
    cairn_append_result r;
    cairn_iter *it;
    cairn_event ev;
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: %s STORE_DIR\n", argv[0]);
        return 2;
    }
    cairn_options_init(&opts); /* durability full, read-write */
    if (cairn_open(argv[1], &opts, &store)) return fail("open");

    /* Two events to a new stream, in one commit. */
    cairn_slice tag = S("customer:ann");
    cairn_event_in events[2] = {
        {.type = S("OrderPlaced"), .data = S("{\"item\":\"lamp\"}"), .tags = &tag, .ntags = 1, .schema = 1},
        {.type = S("OrderPaid"), .data = S("{\"amount\":25}"), .schema = 1},
    };
    if (cairn_append(store, "order-1", 7, CAIRN_NO_STREAM, events, 2, &r)) return fail("append");
    printf("appended: version %lld, positions %llu..%llu\n", (long long)r.version,
           (unsigned long long)r.first_position, (unsigned long long)r.position);

    /* The same expectation again: the stream exists now. */
    if (cairn_append(store, "order-1", 7, CAIRN_NO_STREAM, events, 1, &r) == CAIRN_EVERSION)
        printf("conflict: expected %lld, actual %lld\n", (long long)cairn_last_error()->expected,
               (long long)cairn_last_error()->actual);

    /* Read the stream; every pointer in ev is valid until the next call on the iterator. */
    if (cairn_iter_stream(store, "order-1", 7, -1, 0, 0, &it)) return fail("read");
    while ((rc = cairn_iter_next(it, &ev)) == 1)
        printf("  v%lld @%llu %.*s %.*s\n", (long long)ev.version, (unsigned long long)ev.position,
               (int)ev.type.len, (const char *)ev.type.ptr, (int)ev.data.len,
               (const char *)ev.data.ptr);
    cairn_iter_close(it);
    if (rc < 0) return fail("read");

    /* The log filtered by tag, through the tag index. */
    cairn_filter filter = {.tags = &tag, .ntags = 1};
    if (cairn_iter_all(store, 0, 0, 0, &filter, &it)) return fail("read_all");
    while ((rc = cairn_iter_next(it, &ev)) == 1)
        printf("tagged customer:ann: @%llu %.*s\n", (unsigned long long)ev.position,
               (int)ev.stream.len, (const char *)ev.stream.ptr);
    cairn_iter_close(it);

    /* An aggregate in Lua: a command decided inside the write transaction, then its state. */
    cairn_state state;
    if (cairn_define_script(store, CAIRN_SCRIPT_AGGREGATE, "account", 7, ACCOUNT, sizeof ACCOUNT - 1))
        return fail("define");
    if (cairn_execute(store, "account-1", 9, NULL, 0, "Deposit", 7, S("{\"amount\":100}"),
                      (cairn_slice){NULL, 0}, CAIRN_ANY, NULL /* no command id */, &r))
        return fail("execute");
    if (cairn_load(store, "account-1", 9, NULL, 0, -1, CAIRN_AT_NONE, &state)) return fail("load");
    printf("account-1 at version %lld: %s\n", (long long)state.version, state.json);
    free(state.json);

    cairn_verify_report report;
    if (cairn_verify(store, &report, NULL, NULL)) return fail("verify");
    printf("verify: %llu events in %llu streams, head %llu\n", (unsigned long long)report.events,
           (unsigned long long)report.streams, (unsigned long long)report.head);
    cairn_close(store);
    return 0;
}
