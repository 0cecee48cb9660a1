/*
 * test_concurrency.c -- optimistic concurrency under real contention: threads sharing one
 * handle, threads with handles of their own, and processes, all appending to one stream
 * with exact expected versions and retrying on CAIRN_EVERSION.  No update may be lost,
 * versions and positions stay gapless, and readers never see a partial commit.
 */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

enum { NTHREADS = 4, PER_WORKER = 150, NPROCS = 3 };

typedef struct worker {
    fixture *fx;
    cairn_store *store;          /* shared handle, or NULL: open one of its own */
    cairn_durability durability; /* for a handle of its own */
    int id;
    int successes, conflicts, errors;
    char msg[256];
} worker;

/* Appends PER_WORKER events with data {"w":id,"k":k}, each with the expectation read just
 * before; a conflict re-reads and retries. */
static int append_with_retry(cairn_store *s, int id, int *conflicts, char *msg, size_t msglen) {
    for (int k = 0; k < PER_WORKER;) {
        int64_t v;
        int rc = cairn_stream_version(s, "counter", 7, &v);
        if (rc != CAIRN_OK) {
            snprintf(msg, msglen, "stream_version: %d %s", rc, cairn_errmsg());
            return -1;
        }
        char json[48];
        snprintf(json, sizeof json, "{\"w\":%d,\"k\":%d}", id, k);
        cairn_event_in e = ev_make("Inc", json);
        cairn_append_result r;
        rc = cairn_append(s, "counter", 7, v, &e, 1, &r);
        if (rc == CAIRN_EVERSION) {
            const cairn_error *err = cairn_last_error();
            if (err->expected != v || err->actual <= v) {
                snprintf(msg, msglen, "EVERSION fields: expected %lld (gave %lld) actual %lld",
                         (long long)err->expected, (long long)v, (long long)err->actual);
                return -1;
            }
            (*conflicts)++;
            continue;
        }
        if (rc != CAIRN_OK) {
            snprintf(msg, msglen, "append: %d %s", rc, cairn_errmsg());
            return -1;
        }
        if (r.version != v + 1) {
            snprintf(msg, msglen, "append with expected %lld gave version %lld", (long long)v,
                     (long long)r.version);
            return -1;
        }
        k++;
    }
    return 0;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    cairn_store *s = w->store;
    if (!s && open_store(w->fx->path, w->durability, 0, 0, &s) != CAIRN_OK) {
        snprintf(w->msg, sizeof w->msg, "open: %s", cairn_errmsg());
        w->errors++;
        return NULL;
    }
    if (append_with_retry(s, w->id, &w->conflicts, w->msg, sizeof w->msg) != 0)
        w->errors++;
    else
        w->successes = PER_WORKER;
    if (!w->store) cairn_close(s); /* while the others may still be writing */
    return NULL;
}

/* A reader that keeps re-reading the stream while writers run: every snapshot it sees must
 * be versions 0..n-1 and positions 1..n, never a hole or a half-written commit. */
typedef struct reader {
    cairn_store *store;
    volatile int stop;
    int rounds;
    char msg[256];
} reader;

static void *reader_main(void *arg) {
    reader *rd = arg;
    while (!rd->stop && !rd->msg[0]) {
        rec *v;
        size_t n;
        uint64_t head;
        int rc = read_stream(rd->store, "counter", -1, 0, 0, &v, &n);
        if (rc != 0) {
            snprintf(rd->msg, sizeof rd->msg, "read_stream: %d %s", rc, cairn_errmsg());
            free(v);
            break;
        }
        for (size_t i = 0; i < n && !rd->msg[0]; i++)
            if (v[i].version != (int64_t)i || v[i].position != i + 1)
                snprintf(rd->msg, sizeof rd->msg, "event %zu: version %lld position %llu", i,
                         (long long)v[i].version, (unsigned long long)v[i].position);
        free(v);
        if ((rc = cairn_head(rd->store, &head)) != CAIRN_OK || head < n)
            snprintf(rd->msg, sizeof rd->msg, "head %llu after reading %zu events (rc %d)",
                     (unsigned long long)head, n, rc);
        rd->rounds++;
    }
    return NULL;
}

/* Every (worker, k) pair exactly once, versions gapless. */
static void check_counter(cairn_store *s, int nworkers) {
    size_t total = (size_t)nworkers * PER_WORKER;
    assert_int_equal(version_of(s, "counter"), (int64_t)total - 1);
    assert_int_equal(head_of(s), total);
    rec *v;
    size_t n;
    CHECK_RC(read_stream(s, "counter", -1, 0, 0, &v, &n), 0);
    assert_int_equal(n, total);
    char *seen = calloc(total, 1);
    for (size_t i = 0; i < n; i++) {
        int w, k;
        assert_int_equal(v[i].version, (int64_t)i);
        assert_int_equal(v[i].position, i + 1);
        assert_int_equal(sscanf(v[i].data, "{\"w\":%d,\"k\":%d}", &w, &k), 2);
        assert_in_range(w, 0, nworkers - 1);
        assert_in_range(k, 0, PER_WORKER - 1);
        size_t slot = (size_t)w * PER_WORKER + (size_t)k;
        if (seen[slot]) fail_msg("worker %d event %d written twice", w, k);
        seen[slot] = 1;
        /* each worker's events are in its own order */
        if (k > 0) assert_true(seen[slot - 1]);
    }
    free(seen);
    free(v);
}

static void run_threads(fixture *fx, int shared) {
    worker w[NTHREADS];
    pthread_t th[NTHREADS], rth;
    reader rd = {.store = fx->store};
    CHECK_OK(pthread_create(&rth, NULL, reader_main, &rd));
    for (int i = 0; i < NTHREADS; i++) {
        /* handles of their own mix durabilities: LMDB's sync flags are per environment */
        w[i] = (worker){.fx = fx,
                        .store = shared ? fx->store : NULL,
                        .id = i,
                        .durability = i == 0 ? CAIRN_DURABLE_FULL
                            : i == 1         ? CAIRN_DURABLE_RELAXED
                                             : CAIRN_DURABLE_NONE};
        CHECK_OK(pthread_create(&th[i], NULL, worker_main, &w[i]));
    }
    int total = 0, conflicts = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        if (w[i].errors) fail_msg("worker %d: %s", i, w[i].msg);
        total += w[i].successes;
        conflicts += w[i].conflicts;
    }
    rd.stop = 1;
    pthread_join(rth, NULL);
    if (rd.msg[0]) fail_msg("reader: %s", rd.msg);
    assert_int_equal(total, NTHREADS * PER_WORKER);
    print_message("%d appends, %d conflicts retried, %d reader rounds\n", total, conflicts,
                  rd.rounds);
    check_counter(fx->store, NTHREADS);
}

static void threads_share_one_handle(void **state) { run_threads(*state, 1); }

static void threads_with_own_handles(void **state) { run_threads(*state, 0); }

/* Processes: NPROCS children open the store afresh and append with retries while the parent
 * keeps its own handle open and reads. */
static void processes_append_with_retry(void **state) {
    fixture *fx = *state;
    pid_t pids[NPROCS];
    for (int i = 0; i < NPROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            cairn_store *s;
            char msg[256] = "";
            int conflicts = 0;
            if (open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &s) != CAIRN_OK) {
                fprintf(stderr, "child %d: open: %s\n", i, cairn_errmsg());
                _exit(2);
            }
            if (append_with_retry(s, i, &conflicts, msg, sizeof msg) != 0) {
                fprintf(stderr, "child %d: %s\n", i, msg);
                _exit(3);
            }
            cairn_close(s);
            _exit(0);
        }
    }
    reader rd = {.store = fx->store};
    pthread_t rth;
    CHECK_OK(pthread_create(&rth, NULL, reader_main, &rd));
    int failed = 0;
    for (int i = 0; i < NPROCS; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            print_error("child %d: status 0x%x\n", i, status);
            failed++;
        }
    }
    rd.stop = 1;
    pthread_join(rth, NULL);
    assert_int_equal(failed, 0);
    if (rd.msg[0]) fail_msg("reader: %s", rd.msg);
    check_counter(fx->store, NPROCS);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(threads_share_one_handle),
        T(threads_with_own_handles),
        T(processes_append_with_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
