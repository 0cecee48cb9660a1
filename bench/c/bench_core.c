/*
 * bench_core.c -- the C core against raw LMDB doing the same I/O, in one run.
 *
 * Each measurement runs in a forked child (so peak RSS is its own) and is repeated in
 * alternating rounds with its baseline; the median of the rounds is reported, with the
 * ratio cairn/baseline.  Usage: bench_core DIR [events]   (DIR on the disk to measure)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cairn.h"

#define BATCH 1000
#define ROUNDS 3

static const char *g_dir;
static long g_events = 1000000;
static char g_payload[4096];
static size_t g_payload_len = 200; /* CAIRN_BENCH_PAYLOAD=N: 2..4096 bytes of data */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc) {
    fprintf(stderr, "%s failed: %d %s\n", what, rc,
            rc < -30000 && rc > -30100 ? cairn_errmsg() : mdb_strerror(rc));
    exit(2);
}

static void rmrf(const char *path) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) exit(2);
}

static void path_of(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", g_dir, name);
}

/* ---------------------------------------------------------------- raw LMDB ------ */
static MDB_env *raw_open(const char *path, unsigned flags) {
    MDB_env *env;
    int rc;
    if (mkdir(path, 0755) != 0 && errno != EEXIST) die("mkdir", errno);
    if ((rc = mdb_env_create(&env))) die("env_create", rc);
    mdb_env_set_mapsize(env, 16ull << 30);
    if ((rc = mdb_env_open(env, path, flags, 0644))) die("env_open", rc);
    return env;
}

/* The same record bytes cairn stores (header + stream + type + data ~ 300 B). */
#define RAW_VAL 300

static double raw_batched(const char *path, long n) {
    MDB_env *env = raw_open(path, MDB_NOSYNC | MDB_NOMETASYNC);
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t val[RAW_VAL], key[8];
    double t0 = now();
    long pos = 0;
    memset(val, 'x', sizeof val);
    for (long b = 0; b < n / BATCH; b++) {
        int rc;
        if ((rc = mdb_txn_begin(env, NULL, 0, &txn))) die("begin", rc);
        mdb_dbi_open(txn, NULL, 0, &dbi);
        for (int i = 0; i < BATCH; i++) {
            MDB_val k = {8, key}, v = {sizeof val, val};
            pos++;
            for (int j = 7, x = 0; j >= 0; j--, x += 8) key[j] = (uint8_t)(pos >> x);
            if ((rc = mdb_put(txn, dbi, &k, &v, MDB_APPEND))) die("put", rc);
        }
        if ((rc = mdb_txn_commit(txn))) die("commit", rc);
    }
    t0 = now() - t0;
    mdb_env_close(env);
    return n / t0;
}

/* One put and commit per event; `flags` 0 is durable, MDB_NOSYNC | MDB_NOMETASYNC not. */
static double raw_single(const char *path, long n, unsigned flags) {
    MDB_env *env = raw_open(path, flags);
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t val[RAW_VAL], key[8];
    double t0 = now();
    memset(val, 'x', sizeof val);
    for (long pos = 1; pos <= n; pos++) {
        MDB_val k = {8, key}, v = {sizeof val, val};
        int rc;
        for (int j = 7, x = 0; j >= 0; j--, x += 8) key[j] = (uint8_t)(pos >> x);
        if ((rc = mdb_txn_begin(env, NULL, 0, &txn))) die("begin", rc);
        mdb_dbi_open(txn, NULL, 0, &dbi);
        if ((rc = mdb_put(txn, dbi, &k, &v, MDB_APPEND))) die("put", rc);
        if ((rc = mdb_txn_commit(txn))) die("commit", rc);
    }
    t0 = now() - t0;
    mdb_env_close(env);
    return n / t0;
}

/* Scans cairn's own log database with a bare cursor, touching every byte (a sum), so
 * both sides read exactly the same pages. */
static volatile uint64_t g_sink;
static double raw_scan(const char *path, long *count) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t sum = 0;
    long n = 0;
    double t0;
    int rc;
    if ((rc = mdb_env_create(&env))) die("create", rc);
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_mapsize(env, 16ull << 30);
    if ((rc = mdb_env_open(env, path, MDB_RDONLY | MDB_NOTLS, 0644))) die("open", rc);
    t0 = now();
    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if ((rc = mdb_dbi_open(txn, "log", 0, &dbi))) die("dbi", rc);
    mdb_cursor_open(txn, dbi, &c);
    while (mdb_cursor_get(c, &k, &v, MDB_NEXT) == 0) {
        const uint64_t *p = v.mv_data;
        size_t words = v.mv_size / 8;
        for (size_t i = 0; i < words; i++) sum += p[i];
        n++;
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    t0 = now() - t0;
    g_sink = sum;
    mdb_env_close(env);
    *count = n;
    return n / t0;
}

/* ---------------------------------------------------------------- cairn ---------- */
static cairn_store *open_store(const char *path, cairn_durability d, int ro) {
    cairn_options o;
    cairn_store *s;
    int rc;
    cairn_options_init(&o);
    o.durability = d;
    o.readonly = ro;
    if ((rc = cairn_open(path, &o, &s))) die("cairn_open", rc);
    return s;
}

static void fill_events(cairn_event_in *ev, int n) {
    memset(ev, 0, sizeof *ev * (size_t)n);
    for (int i = 0; i < n; i++) {
        ev[i].type.ptr = (i & 1) ? "Deposited" : "Withdrawn";
        ev[i].type.len = 9;
        ev[i].data.ptr = g_payload;
        ev[i].data.len = g_payload_len;
        ev[i].schema = 1;
    }
}

/* With `subject`, every event's data is encrypted for a subject (spec 6): the stream's name
 * (one subject per stream, so 1,000 subjects, each with its own key). */
static void set_subject(cairn_event_in *ev, int n, const char *subject, size_t len) {
    for (int i = 0; i < n; i++) ev[i].subject.ptr = subject, ev[i].subject.len = len;
}

/* Streams of category "acct" hold 99% of events, category "rare" 1%. */
static double cairn_batched(const char *path, long n, int subject) {
    cairn_store *s = open_store(path, CAIRN_DURABLE_NONE, 0);
    static cairn_event_in ev[BATCH];
    cairn_append_result r;
    char name[32];
    double t0 = now();
    fill_events(ev, BATCH);
    for (long b = 0; b < n / BATCH; b++) {
        int len = snprintf(name, sizeof name, "%s-%ld", b % 100 == 7 ? "rare" : "acct", b % 1000);
        int rc;
        if (subject) set_subject(ev, BATCH, name, (size_t)len);
        rc = cairn_append(s, name, (size_t)len, CAIRN_ANY, ev, BATCH, &r);
        if (rc) die("append", rc);
    }
    t0 = now() - t0;
    cairn_close(s);
    return n / t0;
}

static double cairn_single(const char *path, long n, cairn_durability d, int subject) {
    cairn_store *s = open_store(path, d, 0);
    cairn_event_in ev[1];
    cairn_append_result r;
    double t0 = now();
    fill_events(ev, 1);
    if (subject) set_subject(ev, 1, "acct-1", 6);
    for (long i = 0; i < n; i++) {
        int rc = cairn_append(s, "acct-1", 6, CAIRN_ANY, ev, 1, &r);
        if (rc) die("append", rc);
    }
    t0 = now() - t0;
    cairn_close(s);
    return n / t0;
}

static double cairn_scan(const char *path, long *count, const char *category) {
    cairn_store *s = open_store(path, CAIRN_DURABLE_NONE, 1);
    cairn_iter *it;
    cairn_event ev;
    cairn_slice cat = {category, category ? strlen(category) : 0};
    cairn_filter f;
    uint64_t sum = 0;
    long n = 0;
    double t0 = now();
    int rc;
    memset(&f, 0, sizeof f);
    if (category) f.categories = &cat, f.ncategories = 1;
    if ((rc = cairn_iter_all(s, 0, 0, 0, category ? &f : NULL, &it))) die("iter", rc);
    while ((rc = cairn_iter_next(it, &ev)) == 1) sum += ev.data.len + (uint64_t)ev.version, n++;
    if (rc < 0) die("next", rc);
    cairn_iter_close(it);
    t0 = now() - t0;
    g_sink = sum;
    cairn_close(s);
    *count = n;
    return t0;
}

/* ---------------------------------------------------------------- harness -------- */
typedef struct {
    double value;
    long rss_kb;
} sample;

/* Runs fn in a child; the child writes its result to a pipe. */
static sample in_child(double (*fn)(void *), void *arg) {
    int p[2];
    sample s = {0, 0};
    pid_t pid;
    struct rusage ru;
    int status;
    if (pipe(p)) die("pipe", errno);
    fflush(stdout);
    if ((pid = fork()) == 0) {
        double v = fn(arg);
        if (write(p[1], &v, sizeof v) != sizeof v) _exit(3);
        _exit(0);
    }
    close(p[1]);
    if (read(p[0], &s.value, sizeof s.value) != sizeof s.value) die("child", 0);
    close(p[0]);
    wait4(pid, &status, 0, &ru);
    s.rss_kb = ru.ru_maxrss;
    return s;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

typedef struct {
    const char *name;
    long n;
    const char *category;
} job;

static double j_raw_batched(void *a) {
    job *j = a;
    char p[4096];
    path_of(p, sizeof p, "raw-b");
    rmrf(p);
    return raw_batched(p, j->n);
}
static double j_cairn_batched(void *a) {
    job *j = a;
    char p[4096];
    path_of(p, sizeof p, "cairn-b");
    rmrf(p);
    return cairn_batched(p, j->n, 0);
}
static double j_cairn_batched_subject(void *a) {
    job *j = a;
    char p[4096];
    path_of(p, sizeof p, "cairn-bs");
    rmrf(p);
    return cairn_batched(p, j->n, 1);
}
static double j_raw_durable(void *a) {
    job *j = a;
    char p[4096];
    path_of(p, sizeof p, "raw-d");
    rmrf(p);
    return raw_single(p, j->n, 0);
}
static double j_cairn_durable(void *a) {
    job *j = a;
    char p[4096];
    path_of(p, sizeof p, "cairn-d");
    rmrf(p);
    return cairn_single(p, j->n, CAIRN_DURABLE_FULL, 0);
}
static double j_cairn_durable_subject(void *a) {
    job *j = a;
    char p[4096];
    path_of(p, sizeof p, "cairn-ds");
    rmrf(p);
    return cairn_single(p, j->n, CAIRN_DURABLE_FULL, 1);
}
static double j_cairn_single_subject(void *a) {
    job *j = a;
    char p[4096];
    path_of(p, sizeof p, "cairn-ss");
    rmrf(p);
    return cairn_single(p, j->n, CAIRN_DURABLE_NONE, 1);
}
static double j_raw_single(void *a) {
    job *j = a;
    char p[4096];
    path_of(p, sizeof p, "raw-s");
    rmrf(p);
    return raw_single(p, j->n, MDB_NOSYNC | MDB_NOMETASYNC);
}
static double j_cairn_single(void *a) {
    job *j = a;
    char p[4096];
    path_of(p, sizeof p, "cairn-s");
    rmrf(p);
    return cairn_single(p, j->n, CAIRN_DURABLE_NONE, 0);
}
static double j_raw_scan(void *a) {
    job *j = a;
    char p[4096];
    long n;
    path_of(p, sizeof p, "cairn-b");
    (void)j;
    return raw_scan(p, &n);
}
static double j_cairn_scan(void *a) {
    job *j = a;
    char p[4096];
    long n;
    double t;
    path_of(p, sizeof p, "cairn-b");
    t = cairn_scan(p, &n, j->category);
    return n / t;
}
static double j_cairn_scan_subject(void *a) {
    job *j = a;
    char p[4096];
    long n;
    double t;
    path_of(p, sizeof p, "cairn-bs");
    t = cairn_scan(p, &n, j->category);
    return n / t;
}
static double j_cairn_scan_time(void *a) {
    job *j = a;
    char p[4096];
    long n;
    path_of(p, sizeof p, "cairn-b");
    return cairn_scan(p, &n, j->category);
}

static void pair(const char *title, const char *unit, double (*base)(void *),
                 double (*mine)(void *), job *jb, job *jm, const char *target, int rounds) {
    double b[16], m[16];
    long rb = 0, rm = 0;
    for (int i = 0; i < rounds; i++) {
        sample x = in_child(base, jb), y = in_child(mine, jm);
        b[i] = x.value, m[i] = y.value;
        if (x.rss_kb > rb) rb = x.rss_kb;
        if (y.rss_kb > rm) rm = y.rss_kb;
    }
    double mb = median(b, rounds), mm = median(m, rounds);
    printf("| %s | %.0f %s (%ld MiB) | %.0f %s (%ld MiB) | **%.2f** | %s |\n", title, mm, unit,
           rm / 1024, mb, unit, rb / 1024, mm / mb, target);
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *only;
    if (argc < 2) {
        fprintf(stderr, "usage: bench_core DIR [events]\n");
        return 2;
    }
    g_dir = argv[1];
    if (argc > 2 && atol(argv[2]) > 0) g_events = atol(argv[2]);
    /* run one: batched, durable, single, scan, filtered; or crypto (not in the full run):
     * the same with and without a subject, spec 6 */
    only = argc > 3 ? argv[3] : NULL;
    if (getenv("CAIRN_BENCH_PAYLOAD")) {
        long n = atol(getenv("CAIRN_BENCH_PAYLOAD"));
        if (n < 2 || n > (long)sizeof g_payload) {
            fprintf(stderr, "CAIRN_BENCH_PAYLOAD: 2..%zu\n", sizeof g_payload);
            return 2;
        }
        g_payload_len = (size_t)n;
    }
    memset(g_payload, 'p', g_payload_len);
    g_payload[0] = '"', g_payload[g_payload_len - 1] = '"';
    if (mkdir(g_dir, 0755) != 0 && errno != EEXIST) die("mkdir", errno);

    printf("C core vs raw LMDB, %ld events of %zu-byte data, median of %d alternating rounds (7 "
           "for durable)\n\n",
           g_events, g_payload_len, ROUNDS);
    printf("| benchmark | cairn (peak RSS) | baseline (peak RSS) | ratio | target "
           "|\n|---|---|---|---|---|\n");
    if (!only || !strcmp(only, "batched")) {
        job j = {"batched", g_events, NULL};
        pair("batched append, 1000/commit, durability none", "ev/s", j_raw_batched, j_cairn_batched,
             &j, &j, ">= 0.30 of raw LMDB MDB_APPEND", ROUNDS);
    }
    if (!only || !strcmp(only, "durable")) {
        job j = {"durable", 1000, NULL};
        pair("single-event durable appends, durability full", "commits/s", j_raw_durable,
             j_cairn_durable, &j, &j, ">= 0.90 of raw LMDB put+commit", 7);
    }
    if (!only || !strcmp(only, "single")) {
        /* what a commit costs besides the disk: the per-commit work durable appends hide */
        job j = {"single", 20000, NULL};
        pair("single-event appends, durability none", "commits/s", j_raw_single, j_cairn_single, &j,
             &j, "(no target: the CPU cost per commit)", ROUNDS);
    }
    if (!only || !strcmp(only, "scan")) {
        job j = {"scan", g_events, NULL};
        pair("full read with checksum verification", "ev/s", j_raw_scan, j_cairn_scan, &j, &j,
             ">= 0.50 of raw cursor scan", ROUNDS);
    }
    if (only && !strcmp(only, "crypto")) {
        /* cairn with `subject` (mine) against cairn without (the baseline), issue 13 */
        job j = {"batched", g_events, NULL}, d = {"durable", 1000, NULL};
        job s1 = {"single", 20000, NULL}, sc = {"scan", g_events, NULL};
        pair("batched append with subject / without, 1000/commit, durability none", "ev/s",
             j_cairn_batched, j_cairn_batched_subject, &j, &j, ">= 0.8", ROUNDS);
        pair("single-event durable append with subject / without", "commits/s", j_cairn_durable,
             j_cairn_durable_subject, &d, &d, ">= 0.8", 7);
        pair("single-event append with subject / without, durability none", "commits/s",
             j_cairn_single, j_cairn_single_subject, &s1, &s1, "(the CPU of a commit)", ROUNDS);
        pair("full read, decrypting / plain", "ev/s", j_cairn_scan, j_cairn_scan_subject, &sc, &sc,
             ">= 0.8", ROUNDS);
        return 0;
    }
    if (!only || !strcmp(only, "filtered")) {
        job full = {"full", g_events, NULL}, rare = {"rare", g_events, "rare"};
        double f[ROUNDS], r[ROUNDS];
        for (int i = 0; i < ROUNDS; i++) {
            f[i] = in_child(j_cairn_scan_time, &full).value;
            r[i] = in_child(j_cairn_scan_time, &rare).value;
        }
        double mf = median(f, ROUNDS), mr = median(r, ROUNDS);
        printf("| filtered read of a 1%% category | %.4f s | full read %.4f s | **%.2f%%** of full "
               "| <= 3%% |\n",
               mr, mf, 100 * mr / mf);
    }
    return 0;
}
