/*
 * test_open.c -- store lifecycle: create, reopen, read-only, foreign data.mdb files, several
 * handles on one directory, and a handle carried across fork().
 */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lmdb.h>

static size_t read_file(const char *path, unsigned char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void write_file(const char *path, const unsigned char *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* ---------------------------------------------------------------------------------
 * Create, close, reopen
 * --------------------------------------------------------------------------------- */
static void open_creates_directory_and_store(void **state) {
    fixture *fx = *state;
    struct stat st;
    assert_int_equal(stat(fx->path, &st), -1);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store));
    assert_int_equal(stat(fx->path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(head_of(fx->store), 0);
    assert_int_equal(version_of(fx->store, "nothing"), -1);
    cairn_close(fx->store);
    fx->store = NULL;
    cairn_close(NULL); /* documented no-op */
}

static void reopen_sees_data(void **state) {
    fixture *fx = *state;
    cairn_append_result r;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store));
    CHECK_OK(append_one(fx->store, "acct-1", CAIRN_NO_STREAM, "Opened", "{\"owner\":\"ann\"}", &r));
    CHECK_OK(append_one(fx->store, "acct-1", 0, "Deposited", "{\"amount\":5}", &r));
    cairn_close(fx->store);
    fx->store = NULL;

    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store));
    assert_int_equal(head_of(fx->store), 2);
    assert_int_equal(version_of(fx->store, "acct-1"), 1);
    rec *v;
    size_t n;
    CHECK_RC(read_stream(fx->store, "acct-1", -1, 0, 0, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].type, "Opened");
    assert_string_equal(v[0].data, "{\"owner\":\"ann\"}");
    assert_string_equal(v[1].type, "Deposited");
    free(v);
    /* the next append continues numbering */
    CHECK_OK(append_one(fx->store, "acct-1", 1, "Withdrawn", "{\"amount\":2}", &r));
    assert_int_equal(r.version, 2);
    assert_int_equal(r.position, 3);
}

static void readonly_open_of_missing_dir_is_enoent(void **state) {
    fixture *fx = *state;
    struct stat st;
    CHECK_RC(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 1, &fx->store), CAIRN_ENOENT);
    assert_null(fx->store);
    assert_int_equal(cairn_last_error()->code, CAIRN_ENOENT);
    assert_int_equal(stat(fx->path, &st), -1); /* nothing was created */
}

static void readonly_store_refuses_writes(void **state) {
    fixture *fx = *state;
    cairn_store *ro = NULL;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store));
    CHECK_OK(append_one(fx->store, "s", CAIRN_ANY, "T", "1", NULL));
    cairn_close(fx->store);
    fx->store = NULL;

    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 1, &ro));
    CHECK_RC(append_one(ro, "s", CAIRN_ANY, "T", "2", NULL), CAIRN_EREADONLY);
    assert_int_equal(cairn_last_error()->code, CAIRN_EREADONLY);
    /* reads work */
    assert_int_equal(head_of(ro), 1);
    assert_int_equal(version_of(ro, "s"), 0);
    cairn_event ev;
    CHECK_OK(cairn_get(ro, 1, &ev));
    assert_int_equal(ev.version, 0);
    cairn_close(ro);

    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store));
    assert_int_equal(head_of(fx->store), 1); /* the refused write left nothing */
}

/* A read-only and a read-write handle on one directory at once, and cairn_sync on both. */
static void readonly_beside_readwrite(void **state) {
    fixture *fx = *state;
    cairn_store *ro = NULL;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 1, &ro));
    CHECK_OK(append_n(fx->store, "s", CAIRN_NO_STREAM, "E", 3, NULL));
    assert_int_equal(head_of(ro), 3);
    assert_int_equal(version_of(ro, "s"), 2);
    CHECK_RC(append_one(ro, "s", CAIRN_ANY, "E", NULL, NULL), CAIRN_EREADONLY);
    cairn_append_req req = {{"s", 1}, CAIRN_ANY, NULL, 0};
    cairn_event_in e = ev_make("E", NULL);
    req.events = &e, req.nevents = 1;
    cairn_append_result r;
    CHECK_RC(cairn_append_batch(ro, &req, 1, &r), CAIRN_EREADONLY);
    CHECK_OK(cairn_sync(fx->store));
    CHECK_OK(cairn_sync(ro));
    cairn_close(ro);
    CHECK_OK(append_one(fx->store, "s", 2, "E", NULL, NULL));
    assert_int_equal(head_of(fx->store), 4);
}

/* A data.mdb full of garbage: CAIRN_ECORRUPT, and not one byte of it changed. */
static void garbage_data_mdb_is_ecorrupt_and_untouched(void **state) {
    fixture *fx = *state;
    char file[400];
    enum { N = 64 * 1024 };
    static unsigned char orig[N], after[N + 1];
    assert_int_equal(mkdir(fx->path, 0755), 0);
    snprintf(file, sizeof file, "%s/data.mdb", fx->path);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        orig[i] = (unsigned char)x;
    }
    write_file(file, orig, N);

    CHECK_RC(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store), CAIRN_ECORRUPT);
    assert_null(fx->store);
    assert_int_equal(read_file(file, after, sizeof after), N);
    assert_memory_equal(orig, after, N);
    /* read-only: same answer */
    CHECK_RC(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 1, &fx->store), CAIRN_ECORRUPT);
    assert_int_equal(read_file(file, after, sizeof after), N);
    assert_memory_equal(orig, after, N);
}

/* A real LMDB environment written by someone else: not a cairn store, left untouched. */
static void foreign_lmdb_env_is_ecorrupt_and_untouched(void **state) {
    fixture *fx = *state;
    char file[400];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mkdir(fx->path, 0755), 0);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, fx->path, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "other", MDB_CREATE, &dbi), 0);
    MDB_val k = {5, "hello"}, v = {5, "world"};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    snprintf(file, sizeof file, "%s/data.mdb", fx->path);
    static unsigned char orig[1 << 20], after[1 << 20];
    size_t n = read_file(file, orig, sizeof orig);
    assert_true(n > 0 && n < sizeof orig);

    CHECK_RC(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store), CAIRN_ECORRUPT);
    assert_null(fx->store);
    assert_int_equal(read_file(file, after, sizeof after), n);
    assert_memory_equal(orig, after, n);
}

/* ---------------------------------------------------------------------------------
 * Several handles on one directory in one process
 * --------------------------------------------------------------------------------- */
static void two_handles_close_one_other_works(void **state) {
    fixture *fx = *state;
    cairn_store *a = NULL, *b = NULL;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &a));
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &b));
    CHECK_OK(append_one(a, "s", CAIRN_NO_STREAM, "A", "1", NULL));
    assert_int_equal(version_of(b, "s"), 0); /* b sees a's commit */
    CHECK_OK(append_one(b, "s", 0, "B", "2", NULL));
    assert_int_equal(head_of(a), 2);

    cairn_close(a);
    CHECK_OK(append_one(b, "s", 1, "B", "3", NULL));
    assert_int_equal(head_of(b), 3);
    rec *v;
    size_t n;
    CHECK_RC(read_all(b, 0, 0, 0, NULL, &v, &n), 0);
    assert_int_equal(n, 3);
    free(v);

    /* and a third handle opened after the close shares with b */
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &a));
    assert_int_equal(head_of(a), 3);
    cairn_close(b);
    CHECK_OK(append_one(a, "s", 2, "A", "4", NULL));
    assert_int_equal(head_of(a), 4);
    fx->store = a;
}

/* Two directories stay independent (the registry keys by device and inode). */
static void two_directories_are_independent(void **state) {
    fixture *fx = *state;
    char other[400];
    cairn_store *b = NULL;
    snprintf(other, sizeof other, "%s/other", fx->dir);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    CHECK_OK(open_store(other, CAIRN_DURABLE_NONE, 0, 0, &b));
    CHECK_OK(append_one(fx->store, "s", CAIRN_ANY, "A", NULL, NULL));
    assert_int_equal(head_of(fx->store), 1);
    assert_int_equal(head_of(b), 0);
    cairn_close(b);
}

/* ---------------------------------------------------------------------------------
 * fork(): a handle carried into a child is closed there; the parent carries on.
 * --------------------------------------------------------------------------------- */
static void handle_in_child_after_fork_is_eclosed(void **state) {
    fixture *fx = *state;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    CHECK_OK(append_one(fx->store, "s", CAIRN_ANY, "before", NULL, NULL));

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* exit codes: 0 ok, 10+k: step k gave the wrong answer */
        uint64_t h;
        int64_t v;
        cairn_event ev;
        cairn_iter *it = NULL;
        if (cairn_head(fx->store, &h) != CAIRN_ECLOSED) _exit(11);
        if (append_one(fx->store, "s", CAIRN_ANY, "child", NULL, NULL) != CAIRN_ECLOSED) _exit(12);
        if (cairn_stream_version(fx->store, "s", 1, &v) != CAIRN_ECLOSED) _exit(13);
        if (cairn_get(fx->store, 1, &ev) != CAIRN_ECLOSED) _exit(14);
        if (cairn_iter_all(fx->store, 0, 0, 0, NULL, &it) != CAIRN_ECLOSED) _exit(15);
        if (cairn_last_error()->code != CAIRN_ECLOSED) _exit(16);
        /* closing the inherited handle must not disturb the parent's environment */
        cairn_close(fx->store);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    CHECK_OK(append_one(fx->store, "s", 0, "after", NULL, NULL));
    assert_int_equal(head_of(fx->store), 2);
    rec *v;
    size_t n;
    CHECK_RC(read_stream(fx->store, "s", -1, 0, 0, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[1].type, "after");
    free(v);
}

/* A child that opens the directory afresh gets a working handle of its own, even though
 * the parent still has the same directory open (its registry entry is the parent's). */
static void fresh_open_in_child_works(void **state) {
    fixture *fx = *state;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    CHECK_OK(append_one(fx->store, "s", CAIRN_ANY, "parent", NULL, NULL));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cairn_store *c = NULL;
        uint64_t h = 0;
        if (open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &c) != CAIRN_OK) _exit(11);
        if (cairn_head(c, &h) != CAIRN_OK || h != 1) _exit(12);
        if (append_one(c, "s", 0, "child", NULL, NULL) != CAIRN_OK) _exit(13);
        cairn_close(c);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(head_of(fx->store), 2);
    assert_int_equal(version_of(fx->store, "s"), 1);
}

static void strerror_and_category(void **state) {
    (void)state;
    int codes[] = {CAIRN_OK,       CAIRN_EINVAL,     CAIRN_ENOMEM,    CAIRN_EIO,
                   CAIRN_ECORRUPT, CAIRN_ECLOSED,    CAIRN_EREADONLY, CAIRN_ENOENT,
                   CAIRN_EVERSION, CAIRN_EDUPLICATE, CAIRN_ENOTFOUND, CAIRN_EINTERNAL};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = cairn_strerror(codes[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
    }
    assert_non_null(cairn_strerror(-1234567));

    struct {
        const char *name, *cat;
    } cases[] = {
        {"account-42", "account"}, {"account", "account"}, {"a-b-c", "a"}, {"order-", "order"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cairn_slice c = cairn_category(cases[i].name, strlen(cases[i].name));
        assert_int_equal(c.len, strlen(cases[i].cat));
        assert_memory_equal(c.ptr, cases[i].cat, c.len);
    }
}

int main(void) {
/* every test starts from an empty temp directory; fx->path does not exist yet */
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup_dir, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(open_creates_directory_and_store),
        T(reopen_sees_data),
        T(readonly_open_of_missing_dir_is_enoent),
        T(readonly_store_refuses_writes),
        T(readonly_beside_readwrite),
        T(garbage_data_mdb_is_ecorrupt_and_untouched),
        T(foreign_lmdb_env_is_ecorrupt_and_untouched),
        T(two_handles_close_one_other_works),
        T(two_directories_are_independent),
        T(handle_in_child_after_fork_is_eclosed),
        T(fresh_open_in_child_works),
        cmocka_unit_test(strerror_and_category),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
