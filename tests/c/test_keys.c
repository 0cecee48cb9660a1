/*
 * test_keys.c -- the keys of data subjects (core/src/keys.c): the keys file and its slots,
 * allocation inside a write txn (and reuse of a slot an aborted txn wrote), forgetting (the
 * LMDB side first, then the slot zeroed), the repair an open makes after a crash between
 * the two, other processes seeing new keys, and the AEAD around them.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"
#include "../../core/src/storage.h"

/* ---------------------------------------------------------------------------------
 * Helpers
 * --------------------------------------------------------------------------------- */
typedef struct kctx {
    const char *subject;
    int create, forget, fail; /* fail: the body fails after its work (the txn aborts) */
    uint32_t id;
    uint8_t key[CAIRN_KEY_BYTES];
    int fresh;
} kctx;

static cairn_env *g_env; /* the env key_body works on (cairn_wtxn carries none) */

static int key_body(cairn_wtxn *w, void *ctx) {
    kctx *k = ctx;
    cairn_env *e = g_env;
    int rc;
    if (k->forget)
        rc = cairn__subject_forget(e, w->txn, k->subject, strlen(k->subject), &k->id);
    else
        rc = cairn__key_for_subject(e, w->txn, k->subject, strlen(k->subject), k->create, &k->id,
                                    k->key, &k->fresh);
    if (rc == CAIRN_OK && k->fail) rc = cairn__fail(CAIRN_EINVAL, "made to fail");
    return rc;
}

static int run(cairn_store *s, kctx *k) {
    g_env = s->env;
    return cairn__write_txn(s->env, CAIRN_DURABLE_NONE, key_body, k);
}

static void key_of(cairn_store *s, const char *subject, uint8_t key[CAIRN_KEY_BYTES], int *found) {
    MDB_txn *txn;
    CHECK_OK(cairn__read_begin(s->env, &txn));
    CHECK_OK(cairn__key_current(s->env, txn, subject, strlen(subject), key, found));
    cairn__read_end(s->env, txn);
}

/* 1 when `needle` occurs in any file of directory `dir`. */
static int in_any_file(const char *dir, const void *needle, size_t n) {
    DIR *d = opendir(dir);
    struct dirent *de;
    int found = 0;
    assert_non_null(d);
    while (!found && (de = readdir(d))) {
        char p[600];
        struct stat st;
        FILE *f;
        char *buf;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode) || !(f = fopen(p, "rb"))) continue;
        buf = malloc((size_t)st.st_size + 1);
        assert_non_null(buf);
        if (fread(buf, 1, (size_t)st.st_size, f) == (size_t)st.st_size)
            found = memmem(buf, (size_t)st.st_size, needle, n) != NULL;
        free(buf);
        fclose(f);
    }
    closedir(d);
    return found;
}

static void keys_slot(const fixture *fx, uint32_t id, uint8_t out[CAIRN_KEY_BYTES]) {
    char p[400];
    int fd;
    snprintf(p, sizeof p, "%s/keys", fx->path);
    fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, out, CAIRN_KEY_BYTES, (off_t)id * CAIRN_KEY_BYTES), CAIRN_KEY_BYTES);
    close(fd);
}

/* ---------------------------------------------------------------------------------
 * Tests
 * --------------------------------------------------------------------------------- */
static void a_subject_keeps_its_key_and_others_get_their_own(void **state) {
    fixture *fx = *state;
    kctx a = {"user-1", 1, 0, 0, 0, {0}, 0}, a2 = a, b = a;
    uint8_t key[CAIRN_KEY_BYTES], slot[CAIRN_KEY_BYTES];
    int found;
    b.subject = "user-2";
    CHECK_OK(run(fx->store, &a));
    assert_int_equal(a.id, 1);
    assert_true(a.fresh);
    CHECK_OK(run(fx->store, &a2));
    assert_int_equal(a2.id, 1);
    assert_false(a2.fresh);
    assert_memory_equal(a.key, a2.key, CAIRN_KEY_BYTES);
    CHECK_OK(run(fx->store, &b));
    assert_int_equal(b.id, 2);
    assert_memory_not_equal(a.key, b.key, CAIRN_KEY_BYTES);
    key_of(fx->store, "user-1", key, &found);
    assert_true(found);
    assert_memory_equal(key, a.key, CAIRN_KEY_BYTES);
    keys_slot(fx, 1, slot); /* the slot of key id 1 holds it, in the keys file */
    assert_memory_equal(slot, a.key, CAIRN_KEY_BYTES);
    key_of(fx->store, "nobody", key, &found);
    assert_false(found);
    /* without create, an unknown subject has no key and gets none */
    kctx c = {"user-3", 0, 0, 0, 0, {0}, 0};
    CHECK_OK(run(fx->store, &c));
    assert_int_equal(c.id, 0);
    key_of(fx->store, "user-3", key, &found);
    assert_false(found);
}

static void the_key_never_reaches_lmdb(void **state) {
    fixture *fx = *state;
    kctx a = {"user-1", 1, 0, 0, 0, {0}, 0};
    char p[400];
    CHECK_OK(run(fx->store, &a));
    CHECK_OK(cairn_sync(fx->store));
    snprintf(p, sizeof p, "%s/keys", fx->path);
    assert_true(in_any_file(fx->path, a.key, sizeof a.key)); /* in `keys` ... */
    unlink(p);                                               /* ... and nowhere else */
    assert_false(in_any_file(fx->path, a.key, sizeof a.key));
}

static void an_aborted_allocation_leaves_a_slot_the_next_one_reuses(void **state) {
    fixture *fx = *state;
    kctx a = {"user-1", 1, 0, 1, 0, {0}, 0}, b = {"user-2", 1, 0, 0, 0, {0}, 0};
    uint8_t key[CAIRN_KEY_BYTES];
    int found;
    CHECK_RC(run(fx->store, &a), CAIRN_EINVAL);
    assert_int_equal(a.id, 1);
    key_of(fx->store, "user-1", key, &found);
    assert_false(found); /* nothing committed refers to it */
    CHECK_OK(run(fx->store, &b));
    assert_int_equal(b.id, 1); /* the same slot, overwritten */
    assert_false(in_any_file(fx->path, a.key, sizeof a.key));
}

static void forget_zeroes_the_slot_and_a_new_key_follows(void **state) {
    fixture *fx = *state;
    kctx a = {"user-1", 1, 0, 0, 0, {0}, 0}, f = {"user-1", 0, 1, 0, 0, {0}, 0}, again = a;
    uint8_t key[CAIRN_KEY_BYTES], slot[CAIRN_KEY_BYTES], zero[CAIRN_KEY_BYTES] = {0};
    uint8_t old[CAIRN_KEY_BYTES];
    int found;
    CHECK_OK(run(fx->store, &a));
    memcpy(old, a.key, sizeof old);
    CHECK_OK(run(fx->store, &f));
    assert_int_equal(f.id, 1);
    CHECK_OK(cairn__keys_zero_pending(fx->store->env));
    keys_slot(fx, 1, slot);
    assert_memory_equal(slot, zero, CAIRN_KEY_BYTES);
    key_of(fx->store, "user-1", key, &found);
    assert_false(found);
    /* idempotent: forgetting again, or an unknown subject, finds no key */
    CHECK_OK(run(fx->store, &f));
    assert_int_equal(f.id, 0);
    /* a fresh key (another id) for the subject from now on */
    CHECK_OK(run(fx->store, &again));
    assert_int_equal(again.id, 2);
    assert_true(again.fresh);
    assert_memory_not_equal(again.key, old, CAIRN_KEY_BYTES);
    cairn_close(fx->store), fx->store = NULL;
    assert_false(in_any_file(fx->path, old, sizeof old));
}

static void an_open_finishes_a_forget_a_crash_interrupted(void **state) {
    fixture *fx = *state;
    kctx a = {"user-1", 1, 0, 0, 0, {0}, 0}, f = {"user-1", 0, 1, 0, 0, {0}, 0};
    uint8_t slot[CAIRN_KEY_BYTES], zero[CAIRN_KEY_BYTES] = {0}, out[8];
    uint8_t id[16] = {1}, sealed[8 + CAIRN_AEAD_OVERHEAD];
    MDB_txn *txn;
    int gone, forgotten;
    CHECK_OK(run(fx->store, &a));
    cairn__aead_seal(sealed, "personal", 8, a.key, id, 7, a.id);
    CHECK_OK(run(fx->store, &f)); /* committed; the process "dies" before zeroing */
    keys_slot(fx, 1, slot);
    assert_memory_equal(slot, a.key, CAIRN_KEY_BYTES); /* the key is still in the slot */
    /* ... but a read treats the id as forgotten */
    CHECK_OK(cairn__read_begin(fx->store->env, &txn));
    CHECK_OK(cairn__key_forgotten(fx->store->env, txn, a.id, &gone));
    cairn__read_end(fx->store->env, txn);
    assert_true(gone);
    CHECK_OK(cairn__key_open_data(fx->store->env, a.id, gone, sealed, sizeof sealed, id, 7, out,
                                  &forgotten));
    assert_true(forgotten);
    cairn_close(fx->store), fx->store = NULL;
    /* a read-only open repairs nothing (it cannot write) */
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 1, &fx->store));
    cairn_close(fx->store), fx->store = NULL;
    keys_slot(fx, 1, slot);
    assert_memory_equal(slot, a.key, CAIRN_KEY_BYTES);
    /* the next writable open zeroes it */
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    keys_slot(fx, 1, slot);
    assert_memory_equal(slot, zero, CAIRN_KEY_BYTES);
    CHECK_OK(cairn__read_begin(fx->store->env, &txn));
    CHECK_OK(cairn__key_forgotten(fx->store->env, txn, a.id, &gone));
    cairn__read_end(fx->store->env, txn);
    assert_false(gone); /* kpend emptied; the zero slot says forgotten now */
    CHECK_OK(cairn__key_open_data(fx->store->env, a.id, 0, sealed, sizeof sealed, id, 7, out,
                                  &forgotten));
    assert_true(forgotten);
    cairn_close(fx->store), fx->store = NULL;
    assert_false(in_any_file(fx->path, a.key, sizeof a.key));
}

static void the_aead_binds_the_data_to_its_record(void **state) {
    fixture *fx = *state;
    kctx a = {"user-1", 1, 0, 0, 0, {0}, 0};
    uint8_t id[16] = {9, 8, 7}, sealed[5 + CAIRN_AEAD_OVERHEAD], out[5];
    int forgotten;
    CHECK_OK(run(fx->store, &a));
    cairn__aead_seal(sealed, "hello", 5, a.key, id, 3, a.id);
    assert_null(memmem(sealed, sizeof sealed, "hello", 5));
    assert_int_equal(cairn__aead_open(out, sealed, sizeof sealed, a.key, id, 3, a.id), 0);
    assert_memory_equal(out, "hello", 5);
    CHECK_OK(cairn__key_open_data(fx->store->env, a.id, 0, sealed, sizeof sealed, id, 3, out,
                                  &forgotten));
    assert_false(forgotten);
    assert_memory_equal(out, "hello", 5);
    /* another position, id or key id does not open; a flipped bit neither */
    assert_int_equal(cairn__aead_open(out, sealed, sizeof sealed, a.key, id, 4, a.id), -1);
    assert_int_equal(cairn__aead_open(out, sealed, sizeof sealed, a.key, id, 3, a.id + 1), -1);
    id[0] ^= 1;
    assert_int_equal(cairn__aead_open(out, sealed, sizeof sealed, a.key, id, 3, a.id), -1);
    id[0] ^= 1;
    sealed[30] ^= 4;
    CHECK_RC(cairn__key_open_data(fx->store->env, a.id, 0, sealed, sizeof sealed, id, 3, out,
                                  &forgotten),
             CAIRN_ECORRUPT);
    assert_int_equal(cairn_last_error()->position, 3);
    /* in place: out is the ciphertext past the nonce */
    sealed[30] ^= 4;
    CHECK_OK(cairn__key_open_data(fx->store->env, a.id, 0, sealed, sizeof sealed, id, 3,
                                  sealed + CAIRN_AEAD_NONCE, &forgotten));
    assert_memory_equal(sealed + CAIRN_AEAD_NONCE, "hello", 5);
    /* a key id the file does not hold is damage */
    CHECK_RC(
        cairn__key_open_data(fx->store->env, 99, 0, sealed, sizeof sealed, id, 3, out, &forgotten),
        CAIRN_ECORRUPT);
}

/* A key another process makes is seen through this process's mapping at once. */
static void another_process_sees_new_keys(void **state) {
    fixture *fx = *state;
    uint8_t id[16] = {5}, sealed[3 + CAIRN_AEAD_OVERHEAD], out[3];
    int pfd[2], status, forgotten;
    pid_t pid;
    kctx warm = {"first", 1, 0, 0, 0, {0}, 0};
    CHECK_OK(run(fx->store, &warm)); /* this process has mapped the file, 2 slots long */
    assert_int_equal(pipe(pfd), 0);
    pid = fork();
    if (pid == 0) {
        cairn_store *s;
        kctx k = {"", 1, 0, 0, 0, {0}, 0};
        char name[32];
        close(pfd[0]);
        if (open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &s) != CAIRN_OK) _exit(2);
        for (int i = 0; i < 300; i++) { /* past a page of slots */
            snprintf(name, sizeof name, "user-%d", i);
            k.subject = name;
            if (run(s, &k) != CAIRN_OK) _exit(3);
        }
        cairn__aead_seal(sealed, "abc", 3, k.key, id, 1, k.id);
        if (write(pfd[1], &k.id, 4) != 4 || write(pfd[1], sealed, sizeof sealed) != sizeof sealed)
            _exit(4);
        cairn_close(s);
        _exit(0);
    }
    close(pfd[1]);
    uint32_t kid = 0;
    assert_int_equal(read(pfd[0], &kid, 4), 4);
    assert_int_equal(read(pfd[0], sealed, sizeof sealed), sizeof sealed);
    close(pfd[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(kid, 301);
    CHECK_OK(cairn__key_open_data(fx->store->env, kid, 0, sealed, sizeof sealed, id, 1, out,
                                  &forgotten));
    assert_false(forgotten);
    assert_memory_equal(out, "abc", 3);
}

static void a_damaged_keys_file_is_refused(void **state) {
    fixture *fx = *state;
    char p[400];
    cairn_store *s = NULL;
    int fd;
    cairn_close(fx->store), fx->store = NULL;
    snprintf(p, sizeof p, "%s/keys", fx->path);
    fd = open(p, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "X", 1, 0), 1);
    close(fd);
    CHECK_RC(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &s), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_errmsg(), "not a cairn keys file"));
}

/* Through the public API: data with a subject is stored sealed, read back as plaintext by
 * iterators and cairn_get, and as forgotten (no data) once cairn_forget committed. */
static void append_read_and_forget_through_the_api(void **state) {
    fixture *fx = *state;
    const char *secret = "\"p3rs0nal-d4ta\"";
    cairn_event_in e[2];
    cairn_append_result r;
    cairn_iter *it;
    cairn_event ev;
    uint8_t key[32];
    uint64_t pos = 0;
    int found, n = 0;
    e[0] = ev_make("Registered", secret);
    e[0].subject.ptr = "user-9", e[0].subject.len = 6;
    e[1] = ev_make("Plain", "{\"x\":1}");
    CHECK_OK(cairn_append(fx->store, "user-9", 6, CAIRN_ANY, e, 2, &r));
    CHECK_OK(cairn__subject_key(fx->store, "user-9", 6, key, &found));
    assert_true(found);
    CHECK_OK(cairn_sync(fx->store));
    assert_false(in_any_file(fx->path, secret, strlen(secret)));
    CHECK_OK(cairn_get(fx->store, 1, &ev));
    assert_true(ev.flags & CAIRN_EVENT_ENCRYPTED);
    assert_int_equal(ev.data.len, strlen(secret));
    assert_memory_equal(ev.data.ptr, secret, strlen(secret));
    assert_int_equal(ev.subject.len, 6);
    assert_false(ev.forgotten);
    /* a flag the store sets is refused from a caller */
    e[1].flags = CAIRN_EVENT_ENCRYPTED;
    CHECK_RC(cairn_append(fx->store, "user-9", 6, CAIRN_ANY, &e[1], 1, &r), CAIRN_EINVAL);
    e[1].flags = 0;
    /* a bad subject: nothing written */
    e[1].subject.ptr = "", e[1].subject.len = 0;
    CHECK_RC(cairn_append(fx->store, "user-9", 6, CAIRN_ANY, &e[1], 1, &r), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_errmsg(), "subject must be 1..1024 bytes"));
    CHECK_RC(cairn_forget(fx->store, "a\0b", 3, &pos), CAIRN_EINVAL);
    assert_int_equal(head_of(fx->store), 2);
    CHECK_OK(cairn_forget(fx->store, "user-9", 6, &pos));
    assert_int_equal(pos, 3);
    CHECK_OK(cairn__subject_key(fx->store, "user-9", 6, key, &found));
    assert_false(found);
    CHECK_OK(cairn_iter_stream(fx->store, "user-9", 6, -1, 0, 0, &it));
    while (cairn_iter_next(it, &ev) == 1) {
        assert_int_equal(ev.forgotten, n == 0);
        assert_int_equal(ev.data.len, n == 0 ? 0 : 7);
        n++;
    }
    cairn_iter_close(it);
    assert_int_equal(n, 2);
    CHECK_OK(cairn_get(fx->store, 1, &ev));
    assert_true(ev.forgotten);
    assert_null(ev.data.ptr);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_subject_keeps_its_key_and_others_get_their_own, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(the_key_never_reaches_lmdb, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(an_aborted_allocation_leaves_a_slot_the_next_one_reuses,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(forget_zeroes_the_slot_and_a_new_key_follows, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(an_open_finishes_a_forget_a_crash_interrupted, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(the_aead_binds_the_data_to_its_record, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(another_process_sees_new_keys, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(a_damaged_keys_file_is_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(append_read_and_forget_through_the_api, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
