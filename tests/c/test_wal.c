/*
 * test_wal.c -- the write-ahead journal (core/src/wal.c): a durable commit is flushed in the
 * `wal` file only, and what a power loss takes from data.mdb comes back from it.
 *
 * A power loss is made exactly: a child process opens the store, checkpoints, copies
 * data.mdb as the checkpoint left it (what the disk holds once every unflushed write of
 * data.mdb is lost: LMDB commits without a flush until the next checkpoint), makes more
 * durable commits and dies without closing (_exit).  The parent puts the copy back over
 * data.mdb and opens the store: every acknowledged commit must be there, and nothing else.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage.h"
#include "support.h"

static void copy_file(const char *from, const char *to) {
    char buf[65536];
    ssize_t n;
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(in >= 0 && out >= 0);
    while ((n = read(in, buf, sizeof buf)) > 0) assert_int_equal(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
}

static void path_of(const fixture *fx, const char *name, char *out, size_t n) {
    snprintf(out, n, "%s/%s", fx->path, name);
}

/* What the child does after its checkpoint and copy: commits that must survive.  Each
 * calls step() after each commit: when a checkpoint came with it, data.mdb is copied again
 * (the disk then holds at least that: what a checkpoint flushed, and maybe more). */
typedef void (*after_fn)(cairn_store *s);
static char g_data[400], g_snap[400];
static unsigned long g_ckpts;

static void step(cairn_store *s) {
    if (s->env->wal_ckpts == g_ckpts) return;
    g_ckpts = s->env->wal_ckpts;
    copy_file(g_data, g_snap);
}

/* Child: open (durability full), `before` single appends to "a-1", a checkpoint, the copy
 * of data.mdb, then `after(s)`, then death without a close.  Parent: when `lose`, the copy
 * put back (the power loss). */
static void crash_after(fixture *fx, int before, after_fn after, int lose) {
    pid_t pid;
    int st;
    path_of(fx, "data.mdb", g_data, sizeof g_data);
    snprintf(g_snap, sizeof g_snap, "%s/data.snap", fx->dir);
    if (fx->store) cairn_close(fx->store), fx->store = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cairn_store *s;
        if (open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &s)) _exit(10);
        for (int i = 0; i < before; i++)
            if (append_one(s, "a-1", i - 1, "T", "{}", NULL)) _exit(11);
        if (cairn__wal_checkpoint(s->env)) _exit(12);
        g_ckpts = s->env->wal_ckpts;
        copy_file(g_data, g_snap);
        after(s);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    if (lose) copy_file(g_snap, g_data);
}

static void ten_more(cairn_store *s) {
    for (int i = 0; i < 10; i++) {
        if (append_one(s, "a-1", 4 + i, "T", "{}", NULL)) _exit(20);
        step(s);
    }
}

static void check_events(fixture *fx, uint64_t want) {
    cairn_verify_report vr;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store));
    assert_int_equal(head_of(fx->store), want);
    assert_int_equal(version_of(fx->store, "a-1"), (int64_t)want - 1);
    CHECK_OK(cairn_verify(fx->store, &vr, NULL, NULL));
    assert_int_equal(vr.events, want);
}

static void test_acknowledged_commits_come_back(void **state) {
    fixture *fx = *state;
    crash_after(fx, 5, ten_more, 1);
    check_events(fx, 15);
    /* and the store goes on: a write, a clean close, an open without replay */
    CHECK_OK(append_one(fx->store, "a-1", 14, "T", "{}", NULL));
    cairn_close(fx->store);
    fx->store = NULL;
    check_events(fx, 16);
}

/* The last record torn (its checksum no longer matches): replay stops before it. */
static void test_a_torn_last_record_is_not_replayed(void **state) {
    fixture *fx = *state;
    char wal[400];
    uint8_t head[24], b = 0;
    off_t at = 8192, last = 0;
    uint64_t prev = 0;
    int fd;
    crash_after(fx, 5, ten_more, 1);
    path_of(fx, "wal", wal, sizeof wal);
    fd = open(wal, O_RDWR);
    assert_true(fd >= 0);
    while (pread(fd, head, sizeof head, at) == (ssize_t)sizeof head &&
           cairn__get_le32(head) == 0x43455243u &&
           (last == 0 || cairn__get_le64(head + 16) == prev + 1)) {
        prev = cairn__get_le64(head + 16);
        last = at;
        at += cairn__get_le32(head + 4);
    }
    assert_true(last > 8192);
    assert_int_equal(pread(fd, &b, 1, at - 9), 1);
    b ^= 0xff;
    assert_int_equal(pwrite(fd, &b, 1, at - 9), 1);
    close(fd);
    check_events(fx, 14);
}

/* A commit that LMDB refused after its record was flushed is not revived by a replay. */
static void failed_then_more(cairn_store *s) {
    ten_more(s);
    fault_arm(FAULT_COMMIT, 1, MDB_PANIC);
    if (append_one(s, "a-1", 14, "T", "{}", NULL) == CAIRN_OK) _exit(30);
    fault_disarm();
}

static void test_a_failed_commit_is_not_replayed(void **state) {
    fixture *fx = *state;
    crash_after(fx, 5, failed_then_more, 1);
    check_events(fx, 15);
}

/* A commit with durability none between durable ones: the journal is checkpointed before
 * it (its records could not be replayed past it), and the durable ones after it count. */
static void mixed(cairn_store *s) {
    cairn_store *none;
    ten_more(s);
    if (open_store(s->env->path, CAIRN_DURABLE_NONE, 0, 0, &none)) _exit(40);
    if (append_one(none, "a-1", 14, "T", "{}", NULL)) _exit(41);
    cairn_close(none); /* the environment stays: s holds it */
    step(s);
    for (int i = 0; i < 3; i++) {
        if (append_one(s, "a-1", 15 + i, "T", "{}", NULL)) _exit(42);
        step(s);
    }
}

static void test_a_commit_without_the_journal_between(void **state) {
    fixture *fx = *state;
    crash_after(fx, 5, mixed, 1);
    check_events(fx, 19);
}

/* Many commits: checkpoints on the way (every CAIRN__WAL_CKPT_COMMITS), the journal wraps
 * to its start in each new generation, and the last generation's records come back. */
static void many(cairn_store *s) {
    for (int i = 0; i < 3 * CAIRN__WAL_CKPT_COMMITS + 7; i++) {
        if (append_one(s, "a-1", 4 + i, "T", "{}", NULL)) _exit(50);
        step(s);
    }
    if (s->env->wal_ckpts < 4) _exit(51);
}

static void test_checkpoints_on_the_way(void **state) {
    fixture *fx = *state;
    crash_after(fx, 5, many, 1);
    check_events(fx, 5 + 3 * CAIRN__WAL_CKPT_COMMITS + 7);
}

/* Without a power loss (the child only dies), data.mdb holds everything and the replay of
 * the records it already holds changes nothing. */
static void test_a_crash_without_power_loss(void **state) {
    fixture *fx = *state;
    crash_after(fx, 5, ten_more, 0);
    check_events(fx, 15);
}

/* data.mdb put back from an older copy beside a journal written after it: the open refuses
 * (it would write the journal's base over a file that is not its own) and writes nothing. */
static void test_an_older_data_file_beside_the_journal_is_refused(void **state) {
    fixture *fx = *state;
    char old[400], back[400];
    pid_t pid;
    int st, c1, c2;
    FILE *x, *y;
    path_of(fx, "data.mdb", g_data, sizeof g_data);
    snprintf(old, sizeof old, "%s/data.old", fx->dir);
    snprintf(back, sizeof back, "%s/data.back", fx->dir);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cairn_store *s;
        if (open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &s)) _exit(10);
        copy_file(g_data, old); /* before any event */
        for (int i = 0; i < 5; i++)
            if (append_one(s, "a-1", i - 1, "T", "{}", NULL)) _exit(11);
        if (cairn__wal_checkpoint(s->env)) _exit(12);
        for (int i = 0; i < 3; i++)
            if (append_one(s, "a-1", 4 + i, "T", "{}", NULL)) _exit(13);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    copy_file(old, g_data);
    copy_file(g_data, back);
    CHECK_RC(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store), CAIRN_ECORRUPT);
    if (!strstr(cairn_errmsg(), "put back from a copy")) fail_msg("errmsg: %s", cairn_errmsg());
    fx->store = NULL;
    x = fopen(g_data, "rb"), y = fopen(back, "rb");
    assert_true(x && y);
    do c1 = fgetc(x), c2 = fgetc(y);
    while (c1 == c2 && c1 != EOF);
    fclose(x), fclose(y);
    assert_int_equal(c1, c2); /* data.mdb unchanged */
}

/* A nested transaction that aborts (a failing member of a group commit) leaves nothing in
 * the record: after the power loss, the replay has the parent's write and not the child's. */
static void nested_undo(cairn_store *s) {
    cairn_env *e = s->env;
    MDB_txn *txn, *child;
    MDB_val keep = {4, (void *)"keep"}, drop = {4, (void *)"drop"}, v = {1, (void *)"x"};
    size_t mark;
    if (cairn__write_begin(e, CAIRN_DURABLE_FULL, &txn)) _exit(60);
    if (mdb_put(txn, e->meta, &keep, &v, 0)) _exit(61);
    mark = cairn__wal_mark(e);
    if (mdb_txn_begin(e->env, txn, 0, &child)) _exit(62);
    if (mdb_put(child, e->meta, &drop, &v, 0)) _exit(63);
    mdb_txn_abort(child);
    cairn__wal_undo(e, mark);
    if (cairn__write_commit(e, txn)) _exit(64);
}

static void test_an_aborted_nested_transaction_is_not_replayed(void **state) {
    fixture *fx = *state;
    MDB_txn *txn;
    MDB_val keep = {4, (void *)"keep"}, drop = {4, (void *)"drop"}, v;
    crash_after(fx, 2, nested_undo, 1);
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_FULL, 0, 0, &fx->store));
    CHECK_OK(cairn__read_begin(fx->store->env, &txn));
    assert_int_equal(mdb_get(txn, fx->store->env->meta, &keep, &v), 0);
    assert_int_equal(mdb_get(txn, fx->store->env->meta, &drop, &v), MDB_NOTFOUND);
    cairn__read_end(fx->store->env, txn);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_acknowledged_commits_come_back, fx_setup_dir,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_a_torn_last_record_is_not_replayed, fx_setup_dir,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_commit_is_not_replayed, fx_setup_dir,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_a_commit_without_the_journal_between, fx_setup_dir,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints_on_the_way, fx_setup_dir, fx_teardown),
        cmocka_unit_test_setup_teardown(test_a_crash_without_power_loss, fx_setup_dir, fx_teardown),
        cmocka_unit_test_setup_teardown(test_an_older_data_file_beside_the_journal_is_refused,
                                        fx_setup_dir, fx_teardown),
        cmocka_unit_test_setup_teardown(test_an_aborted_nested_transaction_is_not_replayed,
                                        fx_setup_dir, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
