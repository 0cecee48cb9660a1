/*
 * test_fault.c -- the paths a real disk rarely takes, reached by wrapping LMDB calls
 * (support.c): failed commits and puts leave nothing behind and the store keeps working;
 * a full map grows instead of failing; MDB_MAP_RESIZED is adopted.
 */
#include "support.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lmdb.h>

#define S(x) ((cairn_slice){(x), sizeof(x) - 1})

/* The store holds exactly `head` events and `stream` has version `version`; every read path
 * agrees. */
static void expect_state(cairn_store *s, uint64_t head, const char *stream, int64_t version) {
    assert_int_equal(head_of(s), head);
    assert_int_equal(version_of(s, stream), version);
    rec *v;
    size_t n;
    CHECK_RC(read_all(s, 0, 0, 0, NULL, &v, &n), 0);
    assert_int_equal(n, head);
    for (size_t i = 0; i < n; i++) assert_int_equal(v[i].position, i + 1);
    free(v);
    CHECK_RC(read_stream(s, stream, -1, 0, 0, &v, &n), 0);
    assert_int_equal(n, (size_t)(version + 1));
    free(v);
    cairn_event ev;
    CHECK_RC(cairn_get(s, head + 1, &ev), CAIRN_ENOTFOUND);
    cairn_slice t = S("Tagged"), g = S("tag-1");
    cairn_filter f = {.types = &t, .ntypes = 1, .tags = &g, .ntags = 1};
    CHECK_RC(read_all(s, 0, 0, 0, &f, &v, &n), 0);
    for (size_t i = 0; i < n; i++) assert_true(v[i].position <= head);
    free(v);
}

/* Three tagged events with fixed ids base..base+2. */
static int append_tagged(cairn_store *s, const char *stream, int64_t expected, uint64_t base,
                         cairn_append_result *r) {
    cairn_slice tags[2] = {S("tag-1"), S("tag-2")};
    cairn_event_in e[3];
    for (int i = 0; i < 3; i++) {
        e[i] = ev_with_id("Tagged", "{\"k\":1}", base + (uint64_t)i);
        e[i].tags = tags;
        e[i].ntags = 2;
    }
    return cairn_append(s, stream, strlen(stream), expected, e, 3, r);
}

/* ---------------------------------------------------------------------------------
 * Failed commit
 * --------------------------------------------------------------------------------- */
static void commit_failure_writes_nothing(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    CHECK_OK(append_tagged(fx->store, "s", CAIRN_NO_STREAM, 100, &r));

    fault_arm(FAULT_COMMIT, 1, EIO);
    int rc = append_tagged(fx->store, "s", 2, 200, &r);
    assert_true(fault_fired(FAULT_COMMIT));
    fault_disarm();
    assert_int_equal(rc, CAIRN_EIO);
    assert_int_equal(cairn_last_error()->code, CAIRN_EIO);
    expect_state(fx->store, 3, "s", 2);

    /* the same ids go in now (the failed commit recorded none of them) */
    CHECK_OK(append_tagged(fx->store, "s", 2, 200, &r));
    assert_int_equal(r.first_position, 4);
    assert_int_equal(r.version, 5);
    expect_state(fx->store, 6, "s", 5);
}

static void commit_failure_in_multi_request_batch(void **state) {
    fixture *fx = *state;
    cairn_event_in a = ev_make("A", NULL), b = ev_make("B", NULL);
    cairn_append_req reqs[2] = {{S("p"), CAIRN_NO_STREAM, &a, 1}, {S("q"), CAIRN_NO_STREAM, &b, 1}};
    cairn_append_result rs[2];
    fault_arm(FAULT_COMMIT, 1, ENOSPC);
    assert_true(cairn_append_batch(fx->store, reqs, 2, rs) < 0);
    assert_true(fault_fired(FAULT_COMMIT));
    fault_disarm();
    expect_state(fx->store, 0, "p", -1);
    assert_int_equal(version_of(fx->store, "q"), -1);
    CHECK_OK(cairn_append_batch(fx->store, reqs, 2, rs));
    assert_int_equal(rs[1].position, 2);
}

/* ---------------------------------------------------------------------------------
 * Failed puts, at every put an append makes
 * --------------------------------------------------------------------------------- */
static void put_failure_at_each_point(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    CHECK_OK(append_tagged(fx->store, "s", CAIRN_ANY, 1000, &r));
    /* count the puts of one such append (to an existing stream: a new one may take more) */
    fault_arm(FAULT_PUT, 0, 0);
    CHECK_OK(append_tagged(fx->store, "s", 2, 2000, &r));
    long nputs = fault_calls(FAULT_PUT);
    fault_disarm();
    assert_true(nputs >= 3);
    uint64_t head = 6;
    int64_t ver = 5;
    uint64_t base = 3000;

    for (long k = 1; k <= nputs; k++) {
        fault_arm(FAULT_PUT, k, EIO);
        int rc = append_tagged(fx->store, "s", ver, base, &r);
        int fired = fault_fired(FAULT_PUT);
        fault_disarm();
        if (!fired) fail_msg("put %ld of %ld was never made", k, nputs);
        if (rc != CAIRN_EIO)
            fail_msg("put %ld of %ld failed: append rc %d, want CAIRN_EIO (%s)", k, nputs, rc,
                     cairn_errmsg());
        expect_state(fx->store, head, "s", ver);
        /* and the next append, with the same ids, works */
        CHECK_OK(append_tagged(fx->store, "s", ver, base, &r));
        head += 3, ver += 3, base += 10;
        assert_int_equal(r.position, head);
        assert_int_equal(r.version, ver);
        expect_state(fx->store, head, "s", ver);
    }
}

/* The same for the first append to a stream, which also creates its entry. */
static void put_failure_creating_a_stream(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    fault_arm(FAULT_PUT, 0, 0);
    CHECK_OK(append_tagged(fx->store, "first", CAIRN_NO_STREAM, 1, &r));
    long nputs = fault_calls(FAULT_PUT);
    fault_disarm();
    char name[32];
    for (long k = 1; k <= nputs; k++) {
        snprintf(name, sizeof name, "new-%ld", k);
        fault_arm(FAULT_PUT, k, ENOSPC);
        int rc = append_tagged(fx->store, name, CAIRN_NO_STREAM, 100 + 10 * (uint64_t)k, &r);
        int fired = fault_fired(FAULT_PUT);
        fault_disarm();
        if (!fired || rc >= 0)
            fail_msg("put %ld of %ld: fired %d, append rc %d", k, nputs, fired, rc);
        expect_state(fx->store, 3 * (uint64_t)k, name, -1);
        CHECK_OK(append_tagged(fx->store, name, CAIRN_NO_STREAM, 100 + 10 * (uint64_t)k, &r));
        assert_int_equal(r.version, 2);
        expect_state(fx->store, 3 * (uint64_t)k + 3, name, 2);
    }
}

static void begin_failure_writes_nothing(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    fault_arm(FAULT_BEGIN, 1, ENOMEM);
    CHECK_RC(append_tagged(fx->store, "s", CAIRN_ANY, 1, &r), CAIRN_ENOMEM);
    fault_disarm();
    expect_state(fx->store, 0, "s", -1);
    CHECK_OK(append_tagged(fx->store, "s", CAIRN_ANY, 1, &r));
    expect_state(fx->store, 3, "s", 2);
}

/* ---------------------------------------------------------------------------------
 * The map: full means grow, never an error
 * --------------------------------------------------------------------------------- */
static void tiny_map_grows(void **state) {
    fixture *fx = *state;
    cairn_close(fx->store);
    fx->store = NULL;
    rm_rf(fx->path);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 64 * 1024, 0, &fx->store));

    static char data[400];
    memset(data, 'x', sizeof data - 1);
    memcpy(data, "\"", 1);
    data[sizeof data - 2] = '"';
    cairn_event_in e[200];
    for (int i = 0; i < 200; i++) e[i] = ev_make("Big", data);
    cairn_append_result r;
    uint64_t head = 0;
    /* one by one, then a 200-event batch bigger than the first map on its own */
    for (int i = 0; i < 300; i++) {
        char stream[32];
        snprintf(stream, sizeof stream, "s-%d", i % 17);
        CHECK_OK(cairn_append(fx->store, stream, strlen(stream), CAIRN_ANY, e, 1, &r));
        assert_int_equal(r.position, ++head);
    }
    for (int b = 0; b < 3; b++) {
        CHECK_OK(cairn_append(fx->store, "bulk", 4, CAIRN_ANY, e, 200, &r));
        head += 200;
        assert_int_equal(r.position, head);
    }
    assert_int_equal(head_of(fx->store), 900);
    assert_int_equal(version_of(fx->store, "bulk"), 599);
    cairn_verify_report rep;
    CHECK_OK(cairn_verify(fx->store, &rep, NULL, NULL));
    assert_int_equal(rep.events, 900);

    /* a reopen with the tiny size again adopts the grown file */
    cairn_close(fx->store);
    fx->store = NULL;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 64 * 1024, 0, &fx->store));
    assert_int_equal(head_of(fx->store), 900);
    CHECK_OK(cairn_append(fx->store, "bulk", 4, 599, e, 200, &r));
    assert_int_equal(r.position, 1100);
}

/* MDB_MAP_FULL from a put or from the commit: the core grows and retries, once, and the
 * events land exactly once. */
static void injected_map_full_is_retried(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    /* Each MDB_MAP_FULL below doubles the map: from the default 16 GiB to 64 GiB.  valgrind
     * cannot mmap 64 GiB (its address-space manager refuses with EINVAL), so under
     * `make valgrind` (CAIRN_UNDER_VALGRIND=1) the store starts from 1 GiB instead and grows
     * to 4 GiB: the same path (cairn__env_grow doubles whatever is mapped, then the write is
     * retried), only smaller. */
    if (getenv("CAIRN_UNDER_VALGRIND")) {
        cairn_close(fx->store);
        fx->store = NULL;
        rm_rf(fx->path);
        CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 1ull << 30, 0, &fx->store));
    }
    fault_arm(FAULT_PUT, 2, MDB_MAP_FULL);
    CHECK_OK(append_tagged(fx->store, "s", CAIRN_NO_STREAM, 10, &r));
    assert_true(fault_fired(FAULT_PUT));
    fault_disarm();
    assert_int_equal(r.position, 3);
    assert_int_equal(r.version, 2);
    expect_state(fx->store, 3, "s", 2);

    fault_arm(FAULT_COMMIT, 1, MDB_MAP_FULL);
    CHECK_OK(append_tagged(fx->store, "s", 2, 20, &r));
    assert_true(fault_fired(FAULT_COMMIT));
    fault_disarm();
    assert_int_equal(r.position, 6);
    assert_int_equal(r.version, 5);
    expect_state(fx->store, 6, "s", 5);
}

/* Another process grew the map: the next write transaction begin says MDB_MAP_RESIZED. */
static void injected_map_resized_is_adopted(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    fault_arm(FAULT_BEGIN, 1, MDB_MAP_RESIZED);
    CHECK_OK(append_tagged(fx->store, "s", CAIRN_ANY, 10, &r));
    assert_true(fault_fired(FAULT_BEGIN));
    fault_disarm();
    expect_state(fx->store, 3, "s", 2);
}

/* ---------------------------------------------------------------------------------
 * A grow that mmap refuses (address space exhausted: here RLIMIT_AS) fails that append with
 * CAIRN_ENOMEM and leaves the store as it was and usable; once address space is back, the
 * map grows.  Runs in a child (the limit and a crash stay there).  Not under ASan (its
 * shadow memory needs terabytes of address space) nor valgrind (it maps for itself).
 * --------------------------------------------------------------------------------- */
static long vm_size_kb(void) {
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmSize:", 7)) kb = atol(line + 7);
    fclose(f);
    return kb;
}

static void failed_grow_leaves_store_usable(void **state) {
    fixture *fx = *state;
#if defined(__SANITIZE_ADDRESS__)
    skip();
#endif
    if (getenv("CAIRN_UNDER_VALGRIND")) skip(); /* valgrind keeps its own address-space limit */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* exit codes: 0 ok, 10+k: step k gave the wrong answer */
        static char data[4002];
        cairn_store *s = NULL;
        cairn_append_result r;
        struct rlimit old, lim;
        int64_t v;
        uint64_t h, n = 0;
        int rc;
        signal(SIGSEGV, SIG_DFL); /* a crash ends the child, not cmocka's handler in it */
        signal(SIGBUS, SIG_DFL);
        memset(data, 'x', sizeof data - 1);
        data[0] = data[sizeof data - 2] = '"';
        cairn_event_in e = ev_make("Big", data);
        if (open_store(fx->path, CAIRN_DURABLE_NONE, 64 * 1024, 0, &s) != CAIRN_OK) _exit(11);
        if (getrlimit(RLIMIT_AS, &old) != 0 || vm_size_kb() < 0) _exit(12);
        lim = old;
        lim.rlim_cur = (rlim_t)(vm_size_kb() + 32 * 1024) * 1024;
        if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(12);
        while ((rc = cairn_append(s, "s", 1, CAIRN_ANY, &e, 1, &r)) == CAIRN_OK)
            if (++n > 100000) _exit(13); /* the limit never bit */
        if (rc != CAIRN_ENOMEM || n < 10) _exit(14);
        /* the store is as it was */
        if (cairn_head(s, &h) != CAIRN_OK || h != n) _exit(15);
        if (cairn_stream_version(s, "s", 1, &v) != CAIRN_OK || v != (int64_t)n - 1) _exit(16);
        cairn_verify_report rep;
        if (cairn_verify(s, &rep, NULL, NULL) != CAIRN_OK || rep.events != n) _exit(17);
        /* address space back: the same append grows the map and goes in */
        if (setrlimit(RLIMIT_AS, &old) != 0) _exit(18);
        if (cairn_append(s, "s", 1, (int64_t)n - 1, &e, 1, &r) != CAIRN_OK || r.position != n + 1)
            _exit(19);
        cairn_close(s);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("child: %s %d", WIFSIGNALED(status) ? "killed by signal" : "exit status",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(commit_failure_writes_nothing),
        T(commit_failure_in_multi_request_batch),
        T(put_failure_at_each_point),
        T(put_failure_creating_a_stream),
        T(begin_failure_writes_nothing),
        T(tiny_map_grows),
        T(injected_map_full_is_retried),
        T(injected_map_resized_is_adopted),
        cmocka_unit_test_setup_teardown(failed_grow_leaves_store_usable, fx_setup_dir, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
