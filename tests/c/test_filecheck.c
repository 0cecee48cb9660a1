/*
 * test_filecheck.c -- a data.mdb cut short is refused before LMDB maps it (filecheck.c).
 *
 * The check reads LMDB's page layout itself, so first it is proven against stores LMDB wrote:
 * walked by force, every page the MDB_db records count (free, main, each named database, each
 * DUPSORT sub-database) is reached exactly once, and nothing else.  Then a store holding
 * every kind of page cairn writes (batches, single appends, transactions, tags, overflow
 * values, projection state, partitions, subscriptions, snapshots) is cut at every page
 * boundary: each copy is refused with CAIRN_ECORRUPT and left as it was, or (when only pages
 * nothing reaches were cut) opens, verifies and reads back in a child process that must not
 * die of a signal.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"
#include "../../core/src/storage.h"

static const char PROJ[] = "return {\n"
                           "  partition = function(e) return e.stream end,\n"
                           "  init = function() return { n = 0, seen = {} } end,\n"
                           "  apply = { ['*'] = function(s, e) s.n = s.n + 1;\n"
                           "    s.seen[#s.seen + 1] = e.type end },\n"
                           "}\n";
static const char AGG[] = "return {\n"
                          "  init = function() return { n = 0 } end,\n"
                          "  apply = { Done = function(s, e) s.n = s.n + 1 end },\n"
                          "  decide = { Do = function(s, c) return {{ type = 'Done', data = {\n"
                          "    n = s.n } }} end },\n"
                          "  snapshot_every = 3,\n"
                          "}\n";

/* State that fills overflow pages at the top of the file, dropped again by a reset: the
 * pages it held are free (unreachable from the trees), and a cut of them leaves the store
 * whole. */
static const char FAT[] = "return {\n"
                          "  partition = function(e) return e.stream end,\n"
                          "  init = function() return { pad = string.rep('p', 9000) } end,\n"
                          "  apply = { ['*'] = function(s, e) end },\n"
                          "}\n";

static void data_path(const fixture *fx, char *out, size_t n) {
    snprintf(out, n, "%s/data.mdb", fx->path);
}

/* Fills the store with every kind of record and page; `round` varies the contents. */
static void fill(cairn_store *s, int round) {
    cairn_append_result r;
    char big[24000], name[32];
    uint64_t n;
    cairn_slice none = {NULL, 0}, cmd = {"{}", 2};
    cairn_sub *sub;
    cairn_event ev;
    memset(big, 'x', sizeof big);
    memcpy(big, "{\"s\":\"", 6);
    memcpy(big + sizeof big - 3, "\"}", 3);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "s-%d", (i + round) % 9);
        CHECK_OK(append_one(s, name, CAIRN_ANY, i % 2 ? "A" : "B", "{\"k\":1}", &r));
    }
    CHECK_OK(append_n(s, "batch-1", CAIRN_ANY, "C", 300, &r));
    for (int i = 0; i < 3; i++) { /* overflow values of six pages */
        cairn_event_in e = ev_make("Big", big);
        const cairn_slice tags[2] = {{"t1", 2}, {"vip", 3}};
        e.tags = tags, e.ntags = 2;
        CHECK_OK(cairn_append(s, "big", 3, CAIRN_ANY, &e, 1, &r));
    }
    for (int i = 0; i < 7; i++)
        CHECK_OK(cairn_execute(s, "acct-1", 6, "acct", 4, "Do", 2, cmd, none, CAIRN_ANY, NULL, &r));
    CHECK_OK(cairn_run_projections(s, NULL, 0, &n));
    CHECK_OK(cairn_subscribe(s, 0, NULL, "reader", 6, &sub));
    for (int i = 0; i < 25; i++) assert_int_equal(cairn_sub_next(sub, 0, &ev), 1);
    CHECK_OK(cairn_sub_close(sub));
}

static cairn_store *fresh(fixture *fx) {
    cairn_store *s;
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &s));
    CHECK_OK(cairn_define_script(s, CAIRN_SCRIPT_PROJECTION, "parts", 5, PROJ, strlen(PROJ)));
    CHECK_OK(cairn_define_script(s, CAIRN_SCRIPT_AGGREGATE, "acct", 4, AGG, strlen(AGG)));
    return s;
}

static void assert_walk_matches(const char *data) {
    cairn_filecheck fc;
    CHECK_OK(cairn__file_check(data, 1, &fc));
    assert_true(fc.walked);
    assert_true(fc.reached > 10);
    assert_int_equal(fc.reached, fc.claimed);        /* every counted page, each once */
    assert_true(fc.reached + 2 <= fc.last_page + 1); /* the two meta pages are not in a tree */
    assert_true(fc.file_bytes >= (fc.last_page + 1) * fc.psize);
}

/* Forced walks over stores LMDB wrote reach exactly the pages their records count. */
static void walk_reaches_every_counted_page_once(void **state) {
    fixture *fx = *state;
    char data[400];
    cairn_store *s = fresh(fx);
    data_path(fx, data, sizeof data);
    for (int round = 0; round < 4; round++) {
        fill(s, round);
        assert_walk_matches(data); /* while open: the committed state */
        if (round == 2) CHECK_OK(cairn_projection_reset(s, "parts", 5)); /* frees pages */
    }
    cairn_close(s);
    assert_walk_matches(data);
}

static void copy_file(const char *from, const char *to, off_t size) {
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char buf[65536];
    off_t done = 0;
    assert_true(in >= 0 && out >= 0);
    while (done < size) {
        ssize_t n = read(
            in, buf, (size_t)(size - done < (off_t)sizeof buf ? size - done : (off_t)sizeof buf));
        assert_true(n > 0);
        assert_int_equal(write(out, buf, (size_t)n), n);
        done += n;
    }
    close(in);
    close(out);
}

/* In a child: open (read-write or read-only), verify, read everything.  Exit 0 when it all
 * worked, 3 when the open was refused as corrupt, 1 otherwise; a signal is a crash. */
static int open_in_child(const char *path, int readonly) {
    int status;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cairn_store *s;
        cairn_iter *it;
        cairn_event ev;
        uint64_t n = 0;
        int rc = open_store(path, CAIRN_DURABLE_NONE, 0, readonly, &s);
        if (rc == CAIRN_ECORRUPT) _exit(3);
        if (rc) _exit(1);
        if (cairn_verify(s, NULL, NULL, NULL)) _exit(1);
        if (cairn_iter_all(s, 0, 0, 0, NULL, &it)) _exit(1);
        while ((rc = cairn_iter_next(it, &ev)) == 1) n++;
        cairn_iter_close(it);
        _exit(rc == 0 && n == head_of(s) ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("%s: the open was killed by signal %d", path, WTERMSIG(status));
    return WEXITSTATUS(status);
}

/* Every cut at a page boundary from one page up: refused (and the file untouched), or whole. */
static void every_cut_is_refused_or_whole(void **state) {
    fixture *fx = *state;
    char data[400], cut[400], cutdata[420];
    struct stat st;
    int refused = 0, whole = 0;
    cairn_store *s = fresh(fx);
    fill(s, 0);
    fill(s, 1);
    {
        uint64_t n;
        CHECK_OK(cairn_define_script(s, CAIRN_SCRIPT_PROJECTION, "fat", 3, FAT, strlen(FAT)));
        CHECK_OK(cairn_run_projections(s, "fat", 3, &n));
        CHECK_OK(cairn_projection_reset(s, "fat", 3));
    }
    cairn_close(s);
    data_path(fx, data, sizeof data);
    assert_int_equal(stat(data, &st), 0);
    assert_true(st.st_size >= 100 * 4096);
    snprintf(cut, sizeof cut, "%s/cut", fx->dir);
    snprintf(cutdata, sizeof cutdata, "%s/data.mdb", cut);
    for (off_t size = 4096; size < st.st_size; size += 4096) {
        struct stat after;
        cairn_filecheck fc;
        int rc;
        rm_rf(cut);
        assert_int_equal(mkdir(cut, 0755), 0);
        copy_file(data, cutdata, size);
        rc = cairn__file_check(cutdata, 0, &fc);
        if (rc == CAIRN_ECORRUPT) {
            cairn_store *t;
            assert_non_null(strstr(cairn_errmsg(), "page "));
            /* refused in this process: before the map, so no crash is possible */
            CHECK_RC(open_store(cut, CAIRN_DURABLE_NONE, 0, 1, &t), CAIRN_ECORRUPT);
            CHECK_RC(open_store(cut, CAIRN_DURABLE_NONE, 0, 0, &t), CAIRN_ECORRUPT);
            assert_int_equal(stat(cutdata, &after), 0);
            assert_int_equal(after.st_size, size);
            refused++;
        } else {
            /* below two pages LMDB's own open judges; else only unreachable pages were cut */
            CHECK_OK(rc);
            int ro = open_in_child(cut, 1), rw = open_in_child(cut, 0);
            if (size < 2 * 4096) {
                assert_int_equal(ro, 3);
                assert_int_equal(rw, 3);
            } else {
                assert_int_equal(ro, 0);
                assert_int_equal(rw, 0);
                whole++;
            }
        }
    }
    print_message("cuts: %d refused, %d whole (only unreachable pages cut)\n", refused, whole);
    assert_true(refused > 90);
    assert_true(whole > 0); /* the walk, not the page count, decided those */
    rm_rf(cut);
}

/* Writes `n` bytes of `b` as the file `path`. */
static void write_file(const char *path, const uint8_t *b, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, n), (ssize_t)n);
    close(fd);
}

/* What a power cut leaves of a new store's making (filecheck.c, cairn__file_unmade): parts of
 * LMDB's two new meta pages (or none) and of the first commit's pages, nothing of a commit's
 * meta page.  Anything else is not such a file. */
static void a_creation_the_power_cut_is_told_from_a_store(void **state) {
    fixture *fx = *state;
    char data[400], f[420];
    uint8_t b[9 * 4096], made[4 * 4096];
    long ps = sysconf(_SC_PAGESIZE);
    cairn_store *s;
    int fd;
    if (ps != 4096) skip(); /* the shapes below are of 4 KiB pages */
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &s));
    cairn_close(s); /* a new store: meta page 0 LMDB's new one, page 1 its first commit's */
    data_path(fx, data, sizeof data);
    assert_true((fd = open(data, O_RDONLY)) >= 0);
    assert_int_equal(read(fd, made, sizeof made), (ssize_t)sizeof made);
    close(fd);
    snprintf(f, sizeof f, "%s/other", fx->dir);
    assert_false(cairn__file_unmade(data)); /* the store itself */
    /* page 0 whole or in part, page 1 not written */
    write_file(f, made, 4096), assert_true(cairn__file_unmade(f));
    write_file(f, made, 512), assert_true(cairn__file_unmade(f));
    memset(b, 0, sizeof b), memcpy(b, made, 4096);
    write_file(f, b, 8192), assert_true(cairn__file_unmade(f));
    /* both of LMDB's new meta pages whole (LMDB opens it: an environment holding nothing) */
    memcpy(b + 4096, made, 4096), b[4096] = 1; /* pgno 1 */
    write_file(f, b, 8192), assert_true(cairn__file_unmade(f));
    /* no meta page at all, the first commit's pages after them (or nothing: zeros) */
    memset(b, 0, sizeof b), memcpy(b + 8192, made + 8192, 8192);
    write_file(f, b, 16384), assert_true(cairn__file_unmade(f));
    write_file(f, b, 8192), assert_true(cairn__file_unmade(f));
    write_file(f, b, 6 * 4096), assert_true(cairn__file_unmade(f));
    /* not one: the first commit's meta page, a meta page of another commit, a stray byte
     * beside a meta page, more pages than a creation writes, foreign bytes, nothing */
    memcpy(b, made, 8192);
    write_file(f, b, 16384), assert_false(cairn__file_unmade(f));
    memset(b, 0, sizeof b), memcpy(b + 4096, made + 4096, 4096);
    write_file(f, b, 8192), assert_false(cairn__file_unmade(f));
    memset(b, 0, sizeof b), memcpy(b, made, 4096), b[16 + 128] = 5; /* txnid 5 */
    write_file(f, b, 4096), assert_false(cairn__file_unmade(f));
    memset(b, 0, sizeof b), memcpy(b, made, 4096), b[1000] = 1;
    write_file(f, b, 4096), assert_false(cairn__file_unmade(f));
    memset(b, 0, sizeof b);
    write_file(f, b, 7 * 4096), assert_false(cairn__file_unmade(f));
    write_file(f, (const uint8_t *)"garbage", 7), assert_false(cairn__file_unmade(f));
    write_file(f, b, 0), assert_false(cairn__file_unmade(f));
    snprintf(f, sizeof f, "%s/missing", fx->dir);
    assert_false(cairn__file_unmade(f));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(walk_reaches_every_counted_page_once, fx_setup_dir,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(every_cut_is_refused_or_whole, fx_setup_dir, fx_teardown),
        cmocka_unit_test_setup_teardown(a_creation_the_power_cut_is_told_from_a_store, fx_setup_dir,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
