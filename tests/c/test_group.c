/*
 * test_group.c -- group commit (store.c: cairn__write_txn): durable writes of several
 * threads that arrive while one commits share the next commit, and each caller still gets
 * its own result or its own error.  Made deterministic with the commit gate of support.c:
 * writer A is held inside its commit while B, C and D queue behind it (seen asleep in
 * /proc), then A is let go and one of them leads the other two.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "storage.h"
#include "support.h"

#define S(x) \
    { x, sizeof(x) - 1 }

typedef struct writer {
    cairn_store *s;
    const char *stream;
    int64_t expected;
    int conditional; /* append on "no event tagged k anywhere" */
    pid_t tid;
    int rc;
    cairn_append_result res;
    cairn_error err; /* this thread's cairn_last_error() after the call */
} writer;

static void *run_writer(void *arg) {
    writer *w = arg;
    cairn_slice tg[] = {S("k")};
    cairn_query_item item = {NULL, 0, tg, 1};
    cairn_query q = {&item, 1};
    cairn_condition c = {&q, 0};
    const cairn_condition *cs[] = {&c};
    cairn_event_in ev = ev_make("T", "{}");
    cairn_append_req r = {{w->stream, strlen(w->stream)}, w->expected, &ev, 1};
    ev.tags = tg, ev.ntags = 1;
    w->tid = (pid_t)syscall(SYS_gettid);
    w->rc = cairn_append_conditional(w->s, &r, w->conditional ? cs : NULL, 1, &w->res);
    w->err = *cairn_last_error();
    return NULL;
}

static void wait_asleep(writer *w) {
    for (int i = 0; i < 5000 && !(w->tid && thread_asleep(w->tid)); i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    assert_true(w->tid && thread_asleep(w->tid));
}

/* A held in its commit; then `n` more writers queued behind it; then A let go. */
static void run_held(writer *a, writer *more, int n) {
    pthread_t ta, t[8];
    commit_gate_arm();
    assert_int_equal(pthread_create(&ta, NULL, run_writer, a), 0);
    commit_gate_wait();
    for (int i = 0; i < n; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, run_writer, &more[i]), 0);
        wait_asleep(&more[i]);
    }
    commit_gate_release();
    pthread_join(ta, NULL);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

static cairn_store *durable(fixture *fx) {
    cairn_store *s;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &s));
    return s;
}

static void writers_queued_behind_a_commit_share_the_next_one(void **state) {
    fixture *fx = *state;
    cairn_store *s = durable(fx);
    writer a = {s, "a", CAIRN_ANY, 0, 0, 0, {0, 0, 0}, {0}};
    writer more[3] = {{s, "b", CAIRN_ANY, 0, 0, 0, {0, 0, 0}, {0}},
                      {s, "c", CAIRN_ANY, 0, 0, 0, {0, 0, 0}, {0}},
                      {s, "d", CAIRN_ANY, 0, 0, 0, {0, 0, 0}, {0}}};
    unsigned long commits = s->env->commits, grouped = s->env->grouped;
    uint64_t seen = 0;
    run_held(&a, more, 3);
    CHECK_OK(a.rc);
    assert_int_equal(a.res.position, 1);
    for (int i = 0; i < 3; i++) {
        CHECK_OK(more[i].rc);
        assert_int_equal(more[i].res.version, 0);
        assert_true(more[i].res.position >= 2 && more[i].res.position <= 4);
        seen |= 1u << more[i].res.position;
    }
    assert_int_equal(seen, 0x1c);                   /* 2, 3, 4: one each */
    assert_int_equal(s->env->commits - commits, 2); /* A's, then one for B, C and D */
    assert_int_equal(s->env->grouped - grouped, 2); /* two joined the first of them */
    assert_int_equal(head_of(s), 4);
    cairn_close(s);
}

static void each_caller_gets_its_own_error_and_the_others_commit(void **state) {
    fixture *fx = *state;
    cairn_store *s = durable(fx);
    writer a = {s, "a", CAIRN_ANY, 0, 0, 0, {0, 0, 0}, {0}};
    /* B expects a stream that does not exist to be at 5; C is fine; D's condition (nothing
     * tagged k) fails */
    writer more[3] = {{s, "b", 5, 0, 0, 0, {0, 0, 0}, {0}},
                      {s, "c", CAIRN_NO_STREAM, 0, 0, 0, {0, 0, 0}, {0}},
                      {s, "d", CAIRN_ANY, 1, 0, 0, {0, 0, 0}, {0}}};
    run_held(&a, more, 3);
    CHECK_OK(a.rc);
    assert_int_equal(more[0].rc, CAIRN_EVERSION);
    assert_int_equal(more[0].err.code, CAIRN_EVERSION);
    assert_int_equal(more[0].err.expected, 5);
    assert_int_equal(more[0].err.actual, -1);
    assert_non_null(strstr(more[0].err.message, "b"));
    CHECK_OK(more[1].rc);
    assert_int_equal(more[1].err.code, 0);
    assert_int_equal(more[2].rc, CAIRN_ECONDITION);
    /* D's condition saw A's event and C's, committed in D's group ahead of it */
    assert_int_equal(more[2].err.npositions, 2);
    assert_int_equal(more[2].err.positions[0], 1);
    assert_int_equal(more[2].err.positions[1], 2);
    assert_int_equal(head_of(s), 2); /* A and C only */
    assert_int_equal(version_of(s, "b"), -1);
    assert_int_equal(version_of(s, "c"), 0);
    assert_int_equal(version_of(s, "d"), -1);
    cairn_close(s);
}

static void writes_without_full_durability_are_not_grouped(void **state) {
    fixture *fx = *state; /* the fixture's handle: durability none */
    writer a = {fx->store, "a", CAIRN_ANY, 0, 0, 0, {0, 0, 0}, {0}};
    writer more[2] = {{fx->store, "b", CAIRN_ANY, 0, 0, 0, {0, 0, 0}, {0}},
                      {fx->store, "c", CAIRN_ANY, 0, 0, 0, {0, 0, 0}, {0}}};
    unsigned long commits = fx->store->env->commits;
    run_held(&a, more, 2);
    CHECK_OK(a.rc);
    CHECK_OK(more[0].rc);
    CHECK_OK(more[1].rc);
    assert_int_equal(fx->store->env->commits - commits, 3);
    assert_int_equal(fx->store->env->grouped, 0);
}

/* Many threads appending durably at once: every append is there once, each stream's
 * versions are gapless, and (almost always) some commits were shared. */
#define THREADS 8
#define EACH 40
typedef struct burst {
    cairn_store *s;
    int n;
    int failed;
} burst;

static void *run_burst(void *arg) {
    burst *b = arg;
    char name[16];
    snprintf(name, sizeof name, "t-%d", b->n);
    for (int i = 0; i < EACH; i++) {
        cairn_append_result r;
        if (append_one(b->s, name, i - 1, "T", "{}", &r) != CAIRN_OK) b->failed++;
    }
    return NULL;
}

static void a_burst_of_durable_writers_loses_nothing(void **state) {
    fixture *fx = *state;
    cairn_store *s = durable(fx);
    pthread_t t[THREADS];
    burst b[THREADS];
    for (int i = 0; i < THREADS; i++) {
        b[i].s = s, b[i].n = i, b[i].failed = 0;
        assert_int_equal(pthread_create(&t[i], NULL, run_burst, &b[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        char name[16];
        snprintf(name, sizeof name, "t-%d", i);
        assert_int_equal(b[i].failed, 0);
        assert_int_equal(version_of(s, name), EACH - 1);
    }
    assert_int_equal(head_of(s), THREADS * EACH);
    {
        cairn_verify_report rep;
        CHECK_OK(cairn_verify(s, &rep, NULL, NULL));
    }
    cairn_close(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(writers_queued_behind_a_commit_share_the_next_one, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(each_caller_gets_its_own_error_and_the_others_commit,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(writes_without_full_durability_are_not_grouped, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(a_burst_of_durable_writers_loses_nothing, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
