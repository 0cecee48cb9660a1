/*
 * test_subscribe.c -- live subscriptions: catch-up then live delivery, filters, named
 * checkpoints (advance on the following request and at close, resume after them), argument
 * checks, and a commit from a forked child process waking a waiter in the parent.
 */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S(x) ((cairn_slice){(x), sizeof(x) - 1})

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Next event's position, or 0 on timeout; fails the test on an error. */
static uint64_t next_pos(cairn_sub *sub, int timeout_ms) {
    cairn_event ev;
    int rc = cairn_sub_next(sub, timeout_ms, &ev);
    if (rc < 0) fail_msg("cairn_sub_next -> %d: %s", rc, cairn_errmsg());
    return rc ? ev.position : 0;
}

static void catch_up_then_live(void **state) {
    fixture *fx = *state;
    cairn_sub *sub;
    CHECK_OK(append_n(fx->store, "a-1", CAIRN_ANY, "T", 3, NULL));
    CHECK_OK(cairn_subscribe(fx->store, 2, NULL, NULL, 0, &sub));
    assert_int_equal(cairn_sub_buffered(sub), 0);
    assert_int_equal(next_pos(sub, 0), 2);
    assert_int_equal(cairn_sub_buffered(sub), 1); /* event 3 waits in the page */
    assert_int_equal(next_pos(sub, 0), 3);
    assert_int_equal(next_pos(sub, 0), 0); /* caught up, no wait */
    int64_t t0 = now_ms();
    assert_int_equal(next_pos(sub, 50), 0);
    assert_true(now_ms() - t0 >= 45);
    CHECK_OK(append_n(fx->store, "b-1", CAIRN_ANY, "T", 2, NULL));
    assert_int_equal(next_pos(sub, 1000), 4);
    assert_int_equal(next_pos(sub, 1000), 5);
    assert_int_equal(next_pos(sub, 0), 0);
    CHECK_OK(cairn_sub_close(sub));
}

/* A thread appends while the subscriber sleeps in cairn_sub_next. */
static void *append_later(void *arg) {
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    append_one(arg, "late-1", CAIRN_ANY, "Late", NULL, NULL);
    return NULL;
}

static void waiting_thread_is_woken(void **state) {
    fixture *fx = *state;
    cairn_sub *sub;
    pthread_t t;
    CHECK_OK(cairn_subscribe(fx->store, 1, NULL, NULL, 0, &sub));
    pthread_create(&t, NULL, append_later, fx->store);
    int64_t t0 = now_ms();
    assert_int_equal(next_pos(sub, 5000), 1);
    assert_true(now_ms() - t0 < 1000);
    pthread_join(t, NULL);
    CHECK_OK(cairn_sub_close(sub));
}

static void filters_apply(void **state) {
    fixture *fx = *state;
    cairn_sub *sub;
    cairn_slice types[] = {S("Paid")}, cats[] = {S("order")};
    cairn_filter f = {0};
    f.types = types, f.ntypes = 1, f.categories = cats, f.ncategories = 1;
    CHECK_OK(append_one(fx->store, "order-1", CAIRN_ANY, "Placed", NULL, NULL)); /* 1 */
    CHECK_OK(append_one(fx->store, "order-1", CAIRN_ANY, "Paid", NULL, NULL));   /* 2 */
    CHECK_OK(append_one(fx->store, "user-1", CAIRN_ANY, "Paid", NULL, NULL));    /* 3 */
    CHECK_OK(cairn_subscribe(fx->store, 1, &f, NULL, 0, &sub));
    assert_int_equal(next_pos(sub, 0), 2);
    assert_int_equal(next_pos(sub, 0), 0);
    CHECK_OK(append_one(fx->store, "user-2", CAIRN_ANY, "Paid", NULL, NULL));  /* 4 */
    CHECK_OK(append_one(fx->store, "order-2", CAIRN_ANY, "Paid", NULL, NULL)); /* 5 */
    assert_int_equal(next_pos(sub, 1000), 5);
    assert_int_equal(next_pos(sub, 0), 0);
    CHECK_OK(cairn_sub_close(sub));
}

static void named_checkpoint_semantics(void **state) {
    fixture *fx = *state;
    cairn_sub *sub;
    uint64_t cp = 99;
    CHECK_OK(append_n(fx->store, "a-1", CAIRN_ANY, "T", 5, NULL));
    CHECK_OK(cairn_checkpoint(fx->store, "w", 1, &cp));
    assert_int_equal(cp, 0);
    CHECK_OK(cairn_subscribe(fx->store, 1, NULL, "w", 1, &sub));
    assert_int_equal(next_pos(sub, 0), 1);
    assert_int_equal(cairn_sub_buffered(sub), 0); /* the next call writes the checkpoint */
    CHECK_OK(cairn_checkpoint(fx->store, "w", 1, &cp));
    assert_int_equal(cp, 0); /* event 1 is still in hand */
    assert_int_equal(next_pos(sub, 0), 2);
    CHECK_OK(cairn_checkpoint(fx->store, "w", 1, &cp));
    assert_int_equal(cp, 1); /* requesting 2 stored 1 */
    CHECK_OK(cairn_sub_close(sub));
    CHECK_OK(cairn_checkpoint(fx->store, "w", 1, &cp));
    assert_int_equal(cp, 2); /* close stored the event in hand */

    /* resumes after the checkpoint, ignoring start */
    CHECK_OK(cairn_subscribe(fx->store, 1, NULL, "w", 1, &sub));
    assert_int_equal(next_pos(sub, 0), 3);
    /* event 3 in hand, not yet acknowledged: a crash now would deliver it again */
    CHECK_OK(cairn_checkpoint(fx->store, "w", 1, &cp));
    assert_int_equal(cp, 2);
    CHECK_OK(cairn_sub_close(sub));

    /* a fresh name honours start */
    CHECK_OK(cairn_subscribe(fx->store, 4, NULL, "v", 1, &sub));
    assert_int_equal(next_pos(sub, 0), 4);
    CHECK_OK(cairn_sub_close(sub));
}

static void bad_arguments(void **state) {
    fixture *fx = *state;
    cairn_sub *sub = NULL;
    cairn_event ev;
    uint64_t cp;
    char big[300];
    memset(big, 'n', sizeof big);
    CHECK_RC(cairn_subscribe(fx->store, 1, NULL, "", 0, &sub), CAIRN_EINVAL);
    CHECK_RC(cairn_subscribe(fx->store, 1, NULL, big, sizeof big, &sub), CAIRN_EINVAL);
    CHECK_RC(cairn_subscribe(fx->store, 1, NULL, "\xff", 1, &sub), CAIRN_EINVAL);
    CHECK_RC(cairn_checkpoint(fx->store, "", 0, &cp), CAIRN_EINVAL);
    CHECK_OK(cairn_subscribe(fx->store, 1, NULL, NULL, 0, &sub));
    CHECK_RC(cairn_sub_next(sub, -2, &ev), CAIRN_EINVAL);
    CHECK_OK(cairn_sub_close(sub));
    CHECK_OK(cairn_sub_close(NULL));

    cairn_store *ro;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 1, &ro));
    CHECK_RC(cairn_subscribe(ro, 1, NULL, "w", 1, &sub), CAIRN_EREADONLY);
    CHECK_OK(cairn_subscribe(ro, 1, NULL, NULL, 0, &sub)); /* unnamed is fine */
    CHECK_OK(cairn_sub_close(sub));
    cairn_close(ro);
}

/* The subscription holds its own reference: it outlives the handle that opened it. */
static void outlives_its_handle(void **state) {
    fixture *fx = *state;
    cairn_store *b;
    cairn_sub *sub;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &b));
    CHECK_OK(cairn_subscribe(b, 1, NULL, "keep", 4, &sub));
    cairn_close(b);
    CHECK_OK(append_one(fx->store, "a-1", CAIRN_ANY, "T", NULL, NULL));
    assert_int_equal(next_pos(sub, 1000), 1);
    CHECK_OK(cairn_sub_close(sub));
    uint64_t cp;
    CHECK_OK(cairn_checkpoint(fx->store, "keep", 4, &cp));
    assert_int_equal(cp, 1);
}

/* A child process opens the store and appends; the parent, asleep in cairn_sub_next with
 * a long timeout, wakes within a second (the futex wake crosses processes). */
static void commit_in_child_wakes_parent(void **state) {
    fixture *fx = *state;
    cairn_sub *sub;
    CHECK_OK(append_one(fx->store, "a-1", CAIRN_ANY, "T", NULL, NULL));
    CHECK_OK(cairn_subscribe(fx->store, 2, NULL, NULL, 0, &sub));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cairn_store *c = NULL;
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL); /* let the parent fall asleep */
        if (open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &c) != CAIRN_OK) _exit(11);
        if (append_one(c, "child-1", CAIRN_ANY, "FromChild", NULL, NULL) != CAIRN_OK) _exit(12);
        cairn_close(c);
        _exit(0);
    }
    int64_t t0 = now_ms();
    cairn_event ev;
    int rc = cairn_sub_next(sub, 10000, &ev);
    int64_t waited = now_ms() - t0;
    assert_int_equal(rc, 1);
    assert_int_equal(ev.position, 2);
    assert_int_equal(ev.type.len, 9);
    assert_memory_equal(ev.type.ptr, "FromChild", 9);
    assert_true(waited < 1200); /* 200 ms of sleep in the child + the wake */
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    CHECK_OK(cairn_sub_close(sub));
}

/* A subscription carried into a child of fork() is closed there. */
static void subscription_in_child_is_eclosed(void **state) {
    fixture *fx = *state;
    cairn_sub *sub;
    CHECK_OK(cairn_subscribe(fx->store, 1, NULL, NULL, 0, &sub));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cairn_event ev;
        _exit(cairn_sub_next(sub, 0, &ev) == CAIRN_ECLOSED ? 0 : 11);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    CHECK_OK(cairn_sub_close(sub));
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(catch_up_then_live),
        T(waiting_thread_is_woken),
        T(filters_apply),
        T(named_checkpoint_semantics),
        T(bad_arguments),
        T(outlives_its_handle),
        T(commit_in_child_wakes_parent),
        T(subscription_in_child_is_eclosed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
