/*
 * test_backup.c -- cairn_backup (a compacted snapshot copy, taken while writers write),
 * cairn_stat (the file's figures), cairn_subscriptions (named checkpoints) and
 * cairn_event_position (an event found by id, in the id index and in its tail).
 */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void dest_path(const fixture *fx, const char *name, char *out, size_t n) {
    snprintf(out, n, "%s/%s", fx->dir, name);
}

/* A copy holds the events, the checkpoints and verifies; positions, ids and data agree. */
static void backup_copies_everything(void **state) {
    fixture *fx = *state;
    char dest[400];
    cairn_store *b;
    cairn_sub *sub;
    cairn_event ev;
    cairn_verify_report rep;
    uint64_t cp = 0;
    rec *x, *y;
    size_t nx, ny;

    CHECK_OK(append_n(fx->store, "acct-1", CAIRN_NO_STREAM, "Deposited", 300, NULL));
    CHECK_OK(append_one(fx->store, "acct-2", CAIRN_NO_STREAM, "Opened", "{\"a\":1}", NULL));
    CHECK_OK(cairn_subscribe(fx->store, 1, NULL, "mailer", 6, &sub));
    for (int i = 0; i < 5; i++) assert_int_equal(cairn_sub_next(sub, 0, &ev), 1);
    CHECK_OK(cairn_sub_close(sub)); /* checkpoint 5 */
    dest_path(fx, "copy", dest, sizeof dest);
    CHECK_OK(cairn_backup(fx->store, dest));
    CHECK_OK(open_store(dest, CAIRN_DURABLE_NONE, 0, 1, &b));
    CHECK_OK(cairn_verify(b, &rep, NULL, NULL));
    assert_int_equal(rep.head, 301);
    assert_int_equal(rep.streams, 2);
    CHECK_OK(cairn_checkpoint(b, "mailer", 6, &cp));
    assert_int_equal(cp, 5);
    CHECK_OK(read_all(fx->store, 0, 0, 0, NULL, &x, &nx));
    CHECK_OK(read_all(b, 0, 0, 0, NULL, &y, &ny));
    assert_int_equal(nx, ny);
    for (size_t i = 0; i < nx; i++) {
        assert_int_equal(x[i].position, y[i].position);
        assert_memory_equal(x[i].id, y[i].id, 16);
        assert_int_equal(x[i].timestamp, y[i].timestamp);
        assert_string_equal(x[i].data, y[i].data);
    }
    free(x);
    free(y);
    cairn_close(b);
}

/* DEST must be missing or an empty directory; a refusal leaves it as it was. */
static void backup_refuses_a_used_dest(void **state) {
    fixture *fx = *state;
    char dest[400], file[460];
    struct stat st;
    FILE *f;

    CHECK_OK(append_one(fx->store, "a-1", CAIRN_ANY, "E", NULL, NULL));
    dest_path(fx, "full", dest, sizeof dest);
    assert_int_equal(mkdir(dest, 0700), 0);
    snprintf(file, sizeof file, "%s/keep.txt", dest);
    assert_non_null(f = fopen(file, "w"));
    fclose(f);
    CHECK_RC(cairn_backup(fx->store, dest), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_errmsg(), "not empty"));
    snprintf(file, sizeof file, "%s/data.mdb", dest);
    assert_int_not_equal(stat(file, &st), 0);
    /* a file as dest */
    snprintf(file, sizeof file, "%s/keep.txt", dest);
    CHECK_RC(cairn_backup(fx->store, file), CAIRN_EINVAL);
    /* the store itself is not empty either */
    CHECK_RC(cairn_backup(fx->store, fx->path), CAIRN_EINVAL);
    /* an empty directory is fine */
    dest_path(fx, "empty", dest, sizeof dest);
    assert_int_equal(mkdir(dest, 0700), 0);
    CHECK_OK(cairn_backup(fx->store, dest));
    /* a missing parent */
    dest_path(fx, "no/such", dest, sizeof dest);
    CHECK_RC(cairn_backup(fx->store, dest), CAIRN_ENOENT);
}

typedef struct writer_args {
    cairn_store *s;
    volatile int stop;
    int rc;
} writer_args;

static void *writer(void *p) {
    writer_args *a = p;
    while (!a->stop && !a->rc) a->rc = append_n(a->s, "busy-1", CAIRN_ANY, "W", 20, NULL);
    return NULL;
}

/* Copies taken while a thread appends: each is a whole-commit prefix of the store. */
static void backup_while_writing_is_a_prefix(void **state) {
    fixture *fx = *state;
    writer_args a = {fx->store, 0, 0};
    pthread_t t;
    char dest[400];

    CHECK_OK(append_n(fx->store, "busy-1", CAIRN_NO_STREAM, "W", 20, NULL));
    assert_int_equal(pthread_create(&t, NULL, writer, &a), 0);
    for (int i = 0; i < 3; i++) {
        cairn_store *b;
        cairn_verify_report rep;
        rec *x, *y;
        size_t nx, ny;
        char name[16];
        snprintf(name, sizeof name, "b%d", i);
        dest_path(fx, name, dest, sizeof dest);
        CHECK_OK(cairn_backup(fx->store, dest));
        CHECK_OK(open_store(dest, CAIRN_DURABLE_NONE, 0, 1, &b));
        CHECK_OK(cairn_verify(b, &rep, NULL, NULL));
        assert_int_equal(rep.head % 20, 0); /* whole commits of 20 */
        CHECK_OK(read_all(b, 0, 0, 0, NULL, &y, &ny));
        CHECK_OK(read_all(fx->store, 0, 0, ny, NULL, &x, &nx));
        assert_int_equal(nx, ny);
        for (size_t j = 0; j < ny; j++) assert_memory_equal(x[j].id, y[j].id, 16);
        free(x);
        free(y);
        cairn_close(b);
    }
    a.stop = 1;
    pthread_join(t, NULL);
    CHECK_OK(a.rc);
}

static void stat_reports_the_file(void **state) {
    fixture *fx = *state;
    cairn_filestat fs;
    struct stat st;
    char file[400];

    for (int i = 0; i < 50; i++) CHECK_OK(append_n(fx->store, "s-1", CAIRN_ANY, "E", 10, NULL));
    CHECK_OK(cairn_stat(fx->store, &fs));
    snprintf(file, sizeof file, "%s/data.mdb", fx->path);
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(fs.file_bytes, (uint64_t)st.st_size);
    assert_int_equal(fs.page_size, (uint32_t)sysconf(_SC_PAGESIZE));
    assert_true(fs.pages_used > 2 && fs.pages_used * fs.page_size <= fs.map_bytes);
    assert_true(fs.pages_free > 0); /* copy-on-write left old pages behind */
    assert_true(fs.pages_free < fs.pages_used);
    assert_true(fs.txn_id > 50);
    CHECK_RC(cairn_stat(fx->store, NULL), CAIRN_EINVAL);
}

typedef struct subs_seen {
    int n;
    char names[4][16];
    uint64_t cps[4];
} subs_seen;

static int on_sub(void *ctx, const char *name, size_t len, uint64_t cp) {
    subs_seen *s = ctx;
    if (s->n == 4 || len >= 16) return 1;
    memcpy(s->names[s->n], name, len);
    s->names[s->n][len] = 0;
    s->cps[s->n++] = cp;
    return 0;
}

static void subscriptions_lists_checkpoints(void **state) {
    fixture *fx = *state;
    subs_seen seen;
    cairn_sub *sub;
    cairn_event ev;

    memset(&seen, 0, sizeof seen);
    CHECK_OK(cairn_subscriptions(fx->store, on_sub, &seen));
    assert_int_equal(seen.n, 0);
    CHECK_OK(append_n(fx->store, "s-1", CAIRN_ANY, "E", 10, NULL));
    CHECK_OK(cairn_subscribe(fx->store, 1, NULL, "zeta", 4, &sub));
    for (int i = 0; i < 7; i++) assert_int_equal(cairn_sub_next(sub, 0, &ev), 1);
    CHECK_OK(cairn_sub_close(sub));
    CHECK_OK(cairn_subscribe(fx->store, 1, NULL, "alpha", 5, &sub));
    for (int i = 0; i < 2; i++) assert_int_equal(cairn_sub_next(sub, 0, &ev), 1);
    CHECK_OK(cairn_sub_close(sub));
    CHECK_OK(cairn_subscriptions(fx->store, on_sub, &seen));
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.names[0], "alpha");
    assert_int_equal(seen.cps[0], 2);
    assert_string_equal(seen.names[1], "zeta");
    assert_int_equal(seen.cps[1], 7);
    CHECK_RC(cairn_subscriptions(fx->store, NULL, NULL), CAIRN_EINVAL);
}

/* Found through the id index (a batch) and through the index tail (a single append). */
static void event_position_finds_ids(void **state) {
    fixture *fx = *state;
    cairn_event_in e[2] = {ev_with_id("A", "{}", 1), ev_with_id("B", "{}", 2)};
    cairn_event_in one = ev_with_id("C", "{}", 3), none = ev_with_id("D", "{}", 4);
    cairn_append_result r;
    uint64_t pos = 99;

    CHECK_OK(cairn_append(fx->store, "x-1", 3, CAIRN_ANY, e, 2, &r));
    CHECK_OK(cairn_append(fx->store, "x-1", 3, CAIRN_ANY, &one, 1, &r));
    CHECK_OK(cairn_event_position(fx->store, e[1].id, &pos));
    assert_int_equal(pos, 2);
    CHECK_OK(cairn_event_position(fx->store, one.id, &pos));
    assert_int_equal(pos, 3);
    CHECK_RC(cairn_event_position(fx->store, none.id, &pos), CAIRN_ENOTFOUND);
    assert_int_equal(pos, 0);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(backup_copies_everything),         T(backup_refuses_a_used_dest),
        T(backup_while_writing_is_a_prefix), T(stat_reports_the_file),
        T(subscriptions_lists_checkpoints),  T(event_position_finds_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
