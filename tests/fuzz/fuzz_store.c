/*
 * fuzz_store.c -- libFuzzer target: the full write/read path against a real store.
 *
 * The input bytes drive a sequence of operations on a fresh store (a directory in /dev/shm,
 * durability none, a small map so that it has to grow): appends of 1..N events to a few
 * streams with every kind of expected version, with store-assigned, fresh, pooled and
 * reused ids (idempotent retries and duplicates, exact and partial), tags, metadata with and
 * without "correlation_id"; multi-stream batches; bursts of up to 256 single-event appends
 * (more than the 64-event index tail); invalid appends; stream reads and read_all forwards
 * and backwards with start, limit and type/category/stream/tag filters; point reads,
 * versions, the stream listing, reopening, cairn_verify.
 *
 * A small in-memory model (stream -> version, the log with every field of every event, the
 * append call that wrote each id) predicts every answer: a successful append's results, a
 * refused one's code (with its request, expected/actual or duplicate position) and that it
 * changed nothing, every event a read returns, the listing, verify's counts.  Any
 * disagreement aborts.
 *
 *   build-fuzz/fuzz_store -max_total_time=60 tests/fuzz/corpus/store
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn.h"

/* The harness itself is not instrumented for coverage: its model would add features (and
 * its comparisons hooks) that say nothing about the store. */
#pragma clang attribute push(__attribute__((no_sanitize("coverage"))), apply_to = function)

/* ------------------------------------------------------------------------------------
 * Pools: streams in a few categories (incl. one without a dash, one with two dashes and
 * two long names sharing their first 480 bytes), types, tags, metadata.
 * ------------------------------------------------------------------------------------ */
#define NSTREAMS 8
#define NTYPES 10
#define NTAGS 6
#define NMETA 8
static char g_long1[620], g_long2[620];
static const char *g_streams[NSTREAMS] = {"acct-1", "acct-2",   "order-1", "order",
                                          "x",      "acct-1-b", g_long1,   g_long2};
static char g_type255[256];
/* ten: a request of more than 8 distinct types takes put_types' second path */
static const char *g_types[NTYPES] = {
    "A", "B", "Created", "Deleted", g_type255, "\xc3\xa9t\xc3\xa9", "C", "D", "E", "F"};
static char g_tag1024[1025];
static const char *g_tags[NTAGS] = {"t1", "t2", "customer:alice", "x", g_tag1024, "\xc3\xbc-tag"};
static const char *g_meta[NMETA] = {NULL,
                                    NULL,
                                    NULL,
                                    "{\"k\":1}",
                                    "{\"correlation_id\":\"c1\"}",
                                    "{\"correlation_id\":\"c2\",\"x\":[1]}",
                                    "{\"correlation_id\":\"7\",\"causation_id\":\"c\"}",
                                    "{\"note\":\"correlation_id\"}"};
/* filter values: the pools plus values nothing has */
static const char *g_fcats[] = {"acct", "order", "x", "long", "acct-1", "nope"};
#define NFCATS 6

/* ------------------------------------------------------------------------------------
 * Input
 * ------------------------------------------------------------------------------------ */
static const uint8_t *g_in;
static size_t g_left;
static unsigned u8(void) {
    if (!g_left) return 0;
    g_left--;
    return *g_in++;
}

/* ------------------------------------------------------------------------------------
 * Model
 * ------------------------------------------------------------------------------------ */
#define MAXEV 16 /* events in one request */
#define MAXREQ 4 /* requests in one batch */
#define MAXTAGS 3
#define MAX_EVENTS 1000 /* events in one store: appends past it are skipped */

typedef struct mev {
    int stream, type, meta, ntags;
    uint8_t tags[MAXTAGS];
    int64_t version;
    uint8_t id[16];
    int id_known; /* store-assigned ids are learned after the append */
    int64_t ts;   /* learned after the append */
    uint32_t schema, flags;
    uint8_t *data;
    size_t data_len;
    uint64_t call_first; /* the append request that wrote it */
    uint32_t call_count;
} mev;

typedef struct call {
    int stream;
    uint64_t first;
    uint32_t count;
} call;

static struct {
    mev *ev;
    size_t n, cap;
    int64_t ver[NSTREAMS];
    call *calls;
    size_t ncalls, calls_cap;
} M;

static uint32_t g_fresh; /* counter for fresh ids */
static cairn_store *g_store;
static char g_dir[256];
static uint64_t g_map;
static unsigned long g_ops;

static void fail(const char *fmt, ...) {
    va_list ap;
    const cairn_error *e = cairn_last_error();
    fprintf(stderr, "\nfuzz_store: model disagreement after %lu ops (head %zu): ", g_ops, M.n);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  last cairn error: code %d, request %zu, position %llu: %s\n", e->code,
            e->request, (unsigned long long)e->position, e->message);
    abort();
}

static void model_push(const mev *e) {
    if (M.n == M.cap) {
        M.cap = M.cap ? 2 * M.cap : 256;
        if (!(M.ev = realloc(M.ev, M.cap * sizeof *M.ev))) abort();
    }
    M.ev[M.n] = *e;
    if (e->data_len) {
        if (!(M.ev[M.n].data = malloc(e->data_len))) abort();
        memcpy(M.ev[M.n].data, e->data, e->data_len);
    } else {
        M.ev[M.n].data = NULL;
    }
    M.n++;
}

static void model_truncate(size_t n) {
    while (M.n > n) free(M.ev[--M.n].data);
}

static void model_reset(void) {
    model_truncate(0);
    for (int s = 0; s < NSTREAMS; s++) M.ver[s] = -1;
    M.ncalls = 0;
}

static void calls_push(int stream, uint64_t first, uint32_t count) {
    if (M.ncalls == M.calls_cap) {
        M.calls_cap = M.calls_cap ? 2 * M.calls_cap : 64;
        if (!(M.calls = realloc(M.calls, M.calls_cap * sizeof *M.calls))) abort();
    }
    M.calls[M.ncalls++] = (call){stream, first, count};
}

/* position of the event with this id, 0 if none (ids not learned yet cannot match); no
 * memcmp: libFuzzer hooks it, and this loop runs for every event written */
static uint64_t find_id(const uint8_t id[16]) {
    uint64_t a, b;
    memcpy(&a, id, 8), memcpy(&b, id + 8, 8);
    for (size_t i = 0; i < M.n; i++) {
        uint64_t x, y;
        memcpy(&x, M.ev[i].id, 8), memcpy(&y, M.ev[i].id + 8, 8);
        if (x == a && y == b && M.ev[i].id_known) return i + 1;
    }
    return 0;
}

static size_t slen(int s) { return strlen(g_streams[s]); }

static const char *category(const char *s, size_t *len) {
    const char *d = strchr(s, '-');
    *len = d ? (size_t)(d - s) : strlen(s);
    return s;
}

/* ------------------------------------------------------------------------------------
 * Comparing what the store returns with the model
 * ------------------------------------------------------------------------------------ */
static int eq(const void *p, size_t n, const char *s) {
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

static void check_event(const cairn_event *ev, uint64_t pos, const char *what) {
    const mev *m;
    size_t cur = 0, nt = 0;
    cairn_slice t;
    if (pos == 0 || pos > M.n)
        fail("%s: position %llu outside 1..%zu", what, (unsigned long long)pos, M.n);
    m = &M.ev[pos - 1];
    if (ev->position != pos)
        fail("%s: position %llu, model %llu", what, (unsigned long long)ev->position,
             (unsigned long long)pos);
    if (ev->version != m->version)
        fail("%s: position %llu: version %lld, model %lld", what, (unsigned long long)pos,
             (long long)ev->version, (long long)m->version);
    if (!eq(ev->stream.ptr, ev->stream.len, g_streams[m->stream]))
        fail("%s: position %llu: stream %.*s, model %.40s", what, (unsigned long long)pos,
             (int)(ev->stream.len > 40 ? 40 : ev->stream.len), (const char *)ev->stream.ptr,
             g_streams[m->stream]);
    if (!eq(ev->type.ptr, ev->type.len, g_types[m->type]))
        fail("%s: position %llu: type", what, (unsigned long long)pos);
    if (ev->schema != m->schema || ev->flags != m->flags)
        fail("%s: position %llu: schema %u flags %u, model %u %u", what, (unsigned long long)pos,
             ev->schema, ev->flags, m->schema, m->flags);
    if (ev->data.len != m->data_len || (m->data_len && memcmp(ev->data.ptr, m->data, m->data_len)))
        fail("%s: position %llu: data (%zu bytes, model %zu)", what, (unsigned long long)pos,
             ev->data.len, m->data_len);
    if (g_meta[m->meta] ? !eq(ev->metadata.ptr, ev->metadata.len, g_meta[m->meta])
                        : ev->metadata.len != 0)
        fail("%s: position %llu: metadata %.*s", what, (unsigned long long)pos,
             (int)ev->metadata.len, (const char *)ev->metadata.ptr);
    if (ev->ntags != (size_t)m->ntags)
        fail("%s: position %llu: %zu tags, model %d", what, (unsigned long long)pos, ev->ntags,
             m->ntags);
    while (cairn_event_tag(ev, &cur, &t)) {
        if (nt >= (size_t)m->ntags || !eq(t.ptr, t.len, g_tags[m->tags[nt]]))
            fail("%s: position %llu: tag %zu", what, (unsigned long long)pos, nt);
        nt++;
    }
    if (nt != (size_t)m->ntags)
        fail("%s: position %llu: tag iteration gave %zu", what, (unsigned long long)pos, nt);
    if (m->id_known && memcmp(ev->id, m->id, 16))
        fail("%s: position %llu: id", what, (unsigned long long)pos);
    if (m->ts && ev->timestamp != m->ts)
        fail("%s: position %llu: timestamp changed", what, (unsigned long long)pos);
}

static void check_head(const char *what) {
    uint64_t h;
    if (cairn_head(g_store, &h) != CAIRN_OK) fail("%s: cairn_head failed", what);
    if (h != M.n) fail("%s: head %llu, model %zu", what, (unsigned long long)h, M.n);
}

static void check_versions(const char *what) {
    for (int s = 0; s < NSTREAMS; s++) {
        int64_t v;
        if (cairn_stream_version(g_store, g_streams[s], slen(s), &v) != CAIRN_OK)
            fail("%s: stream_version(%d) failed", what, s);
        if (v != M.ver[s])
            fail("%s: stream %d version %lld, model %lld", what, s, (long long)v,
                 (long long)M.ver[s]);
    }
}

/* ------------------------------------------------------------------------------------
 * Appends
 * ------------------------------------------------------------------------------------ */
typedef struct qev {
    int type, meta, ntags;
    uint8_t tags[MAXTAGS];
    int has_id;
    uint8_t id[16];
    uint32_t schema, flags;
    uint8_t *data;
    size_t data_len;
} qev;

typedef struct qreq {
    int stream;
    int64_t expected;
    int n;
    qev ev[MAXEV];
} qreq;

static uint8_t g_arena[1 << 20];
static size_t g_arena_used;

static uint8_t *arena(size_t n) {
    if (g_arena_used + n > sizeof g_arena) return NULL;
    g_arena_used += n;
    return g_arena + g_arena_used - n;
}

static void fresh_id(uint8_t id[16], int descending) {
    uint32_t c = ++g_fresh;
    memset(id, 0, 16);
    id[0] = descending ? 0xE0 : 0xF0;
    if (descending) c = 0xFFFFFFFFu - c;
    id[12] = (uint8_t)(c >> 24), id[13] = (uint8_t)(c >> 16), id[14] = (uint8_t)(c >> 8),
    id[15] = (uint8_t)c;
}

static void pool_id(uint8_t id[16], unsigned k) {
    memset(id, 0x11, 16);
    id[0] = 0xA0, id[15] = (uint8_t)(k % 16);
}

/* The id, data, metadata, tags and schema of one event, from the input. */
static void gen_event(qev *e) {
    unsigned f = u8(), g = u8();
    memset(e, 0, sizeof *e);
    e->type = (int)(f % NTYPES);
    switch ((f >> 3) & 3) {
    case 0: break; /* the store assigns a UUIDv7 */
    case 1: e->has_id = 1, fresh_id(e->id, g & 0x80); break;
    case 2: e->has_id = 1, pool_id(e->id, u8()); break;
    default: { /* the id of an earlier event (a retry or a duplicate) */
        e->has_id = 1;
        if (M.n)
            memcpy(e->id, M.ev[u8() % M.n].id, 16);
        else
            pool_id(e->id, u8());
    }
    }
    switch (f >> 5) {
    case 0: break;
    case 1: { /* bytes, NULs included */
        size_t n = u8() % 48;
        unsigned seed = u8();
        e->flags = CAIRN_EVENT_BYTES;
        if ((e->data = arena(n ? n : 1)))
            for (size_t i = 0; i < n; i++) e->data[i] = (uint8_t)(seed + 31 * i);
        e->data_len = e->data ? n : 0;
        break;
    }
    case 2: { /* large: overflow pages, the map grows */
        size_t n = 2 + 512 * (u8() % 32);
        if ((e->data = arena(n))) {
            e->data[0] = '"';
            memset(e->data + 1, 'a' + (int)(n % 26), n - 2);
            e->data[n - 1] = '"';
            e->data_len = n;
        }
        break;
    }
    default: {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "{\"n\":%u,\"s\":\"%c\"}", u8(), 'a' + (int)(f % 26));
        if ((e->data = arena((size_t)n))) memcpy(e->data, buf, (size_t)n), e->data_len = (size_t)n;
    }
    }
    e->meta = (int)(g % NMETA);
    e->ntags = (int)((g >> 3) & 3);
    for (int t = 0; t < e->ntags; t++) e->tags[t] = (uint8_t)(u8() % NTAGS);
    e->schema = 1 + ((g >> 5) & 1);
}

static int64_t gen_expected(int stream) {
    unsigned b = u8();
    switch (b % 6) {
    case 0: return CAIRN_ANY;
    case 1: return CAIRN_NO_STREAM;
    case 2: return CAIRN_STREAM_EXISTS;
    case 3:
    case 4: return M.ver[stream] >= 0 ? M.ver[stream] : (b & 8 ? CAIRN_NO_STREAM : 0);
    default: return (int64_t)((b >> 3) % 12); /* exact, mostly wrong */
    }
}

typedef struct pred {
    int rc;
    size_t request;
    int64_t expected, actual;
    uint64_t position; /* EDUPLICATE; 0: not predicted (the same call's own id) */
    cairn_append_result res[MAXREQ];
} pred;

/* Applies the batch to the model as the contract says (cairn.h, cairn_append_batch):
 * requests in order, each seeing the earlier ones; a request carrying exactly the ids of
 * one earlier request, in order, to the same stream is a retry; any other reuse of an id
 * is a duplicate; then the expected version.  On failure the model is left as it was. */
static void predict(const qreq *qs, int nq, pred *p, size_t *mark_n, size_t *mark_calls,
                    int64_t ver0[NSTREAMS]) {
    memset(p, 0, sizeof *p);
    *mark_n = M.n, *mark_calls = M.ncalls;
    memcpy(ver0, M.ver, sizeof M.ver);
    for (int r = 0; r < nq; r++) {
        const qreq *q = &qs[r];
        uint64_t at, first;
        int64_t cur;
        if (q->ev[0].has_id && (at = find_id(q->ev[0].id))) {
            const mev *e = &M.ev[at - 1];
            if (at >
                *mark_n) { /* an earlier request of this call: "appears twice", never a retry */
                p->rc = CAIRN_EDUPLICATE, p->request = (size_t)r, p->position = 0;
                goto undo;
            }
            uint64_t f = e->call_first, c = e->call_count;
            int retry = at == f && c == (uint64_t)q->n;
            for (int i = 1; retry && i < q->n; i++)
                retry = q->ev[i].has_id && find_id(q->ev[i].id) == f + (uint64_t)i;
            if (retry && M.ev[f + c - 2].stream != q->stream) retry = 0;
            if (!retry) {
                p->rc = CAIRN_EDUPLICATE, p->request = (size_t)r, p->position = at;
                goto undo;
            }
            p->res[r].version = M.ev[f + c - 2].version;
            p->res[r].position = f + c - 1;
            p->res[r].first_position = f;
            continue;
        }
        cur = M.ver[q->stream];
        if (!(q->expected == CAIRN_ANY || (q->expected == CAIRN_NO_STREAM && cur == -1) ||
              (q->expected == CAIRN_STREAM_EXISTS && cur >= 0) || q->expected == cur)) {
            p->rc = CAIRN_EVERSION, p->request = (size_t)r, p->expected = q->expected,
            p->actual = cur;
            goto undo;
        }
        first = M.n + 1;
        for (int i = 0; i < q->n; i++) {
            const qev *x = &q->ev[i];
            mev m;
            if (x->has_id && (at = find_id(x->id))) {
                p->rc = CAIRN_EDUPLICATE, p->request = (size_t)r,
                p->position = at >= first || at > *mark_n ? 0 : at; /* this call's: none cited */
                goto undo;
            }
            memset(&m, 0, sizeof m);
            m.stream = q->stream, m.type = x->type, m.meta = x->meta, m.ntags = x->ntags;
            memcpy(m.tags, x->tags, sizeof m.tags);
            m.version = cur + 1 + i;
            memcpy(m.id, x->id, 16);
            m.id_known = x->has_id;
            m.schema = x->schema, m.flags = x->flags;
            m.data = x->data, m.data_len = x->data_len;
            m.call_first = first, m.call_count = (uint32_t)q->n;
            model_push(&m);
        }
        M.ver[q->stream] = cur + q->n;
        calls_push(q->stream, first, (uint32_t)q->n);
        p->res[r].version = M.ver[q->stream];
        p->res[r].position = M.n;
        p->res[r].first_position = first;
    }
    return;
undo:
    model_truncate(*mark_n);
    M.ncalls = *mark_calls;
    memcpy(M.ver, ver0, sizeof M.ver);
}

static void do_batch(const qreq *qs, int nq, int single) {
    cairn_append_req reqs[MAXREQ];
    cairn_event_in evs[MAXREQ][MAXEV];
    cairn_slice tags[MAXREQ][MAXEV][MAXTAGS];
    cairn_append_result res[MAXREQ];
    pred p;
    size_t mark_n, mark_calls;
    int64_t ver0[NSTREAMS];
    int rc;

    for (int r = 0; r < nq; r++) {
        const qreq *q = &qs[r];
        for (int i = 0; i < q->n; i++) {
            const qev *x = &q->ev[i];
            cairn_event_in *e = &evs[r][i];
            memset(e, 0, sizeof *e);
            e->type.ptr = g_types[x->type], e->type.len = strlen(g_types[x->type]);
            e->data.ptr = x->data, e->data.len = x->data_len;
            if (g_meta[x->meta])
                e->metadata.ptr = g_meta[x->meta], e->metadata.len = strlen(g_meta[x->meta]);
            for (int t = 0; t < x->ntags; t++)
                tags[r][i][t].ptr = g_tags[x->tags[t]],
                tags[r][i][t].len = strlen(g_tags[x->tags[t]]);
            e->tags = x->ntags ? tags[r][i] : NULL;
            e->ntags = (size_t)x->ntags;
            e->schema = x->schema, e->flags = x->flags;
            e->has_id = x->has_id;
            if (x->has_id) memcpy(e->id, x->id, 16);
        }
        reqs[r].stream.ptr = g_streams[q->stream], reqs[r].stream.len = slen(q->stream);
        reqs[r].expected = q->expected;
        reqs[r].events = evs[r];
        reqs[r].nevents = (size_t)q->n;
    }
    if (M.n >= MAX_EVENTS) return; /* keeps every input fast; the bytes are consumed all the same */
    predict(qs, nq, &p, &mark_n, &mark_calls, ver0);
    memset(res, 0xAB, sizeof res);
    rc = single ? cairn_append(g_store, reqs[0].stream.ptr, reqs[0].stream.len, reqs[0].expected,
                               reqs[0].events, reqs[0].nevents, res)
                : cairn_append_batch(g_store, reqs, (size_t)nq, res);
    if (rc != p.rc) fail("append of %d requests: rc %d, model %d", nq, rc, p.rc);
    if (rc == CAIRN_OK) {
        for (int r = 0; r < nq; r++)
            if (res[r].version != p.res[r].version || res[r].position != p.res[r].position ||
                res[r].first_position != p.res[r].first_position)
                fail("append request %d: result (%lld, %llu, %llu), model (%lld, %llu, %llu)", r,
                     (long long)res[r].version, (unsigned long long)res[r].position,
                     (unsigned long long)res[r].first_position, (long long)p.res[r].version,
                     (unsigned long long)p.res[r].position,
                     (unsigned long long)p.res[r].first_position);
        /* read back what was written: every field, and learn assigned ids and timestamps */
        for (uint64_t pos = mark_n + 1; pos <= M.n; pos++) {
            cairn_event ev;
            mev *m = &M.ev[pos - 1];
            if (cairn_get(g_store, pos, &ev) != CAIRN_OK)
                fail("get(%llu) after append", (unsigned long long)pos);
            check_event(&ev, pos, "get after append");
            if (!m->id_known) {
                if (find_id(ev.id))
                    fail("position %llu: the assigned id is taken", (unsigned long long)pos);
                memcpy(m->id, ev.id, 16), m->id_known = 1;
            }
            if (pos > 1 && ev.timestamp < M.ev[pos - 2].ts)
                fail("position %llu: timestamp goes back", (unsigned long long)pos);
            m->ts = ev.timestamp;
        }
    } else {
        const cairn_error *e = cairn_last_error();
        if (e->request != p.request)
            fail("failed append: request %zu, model %zu", e->request, p.request);
        if (rc == CAIRN_EVERSION && (e->expected != p.expected || e->actual != p.actual))
            fail("wrong version: expected %lld actual %lld, model %lld %lld",
                 (long long)e->expected, (long long)e->actual, (long long)p.expected,
                 (long long)p.actual);
        if (rc == CAIRN_EDUPLICATE && p.position && e->position != p.position)
            fail("duplicate: position %llu, model %llu", (unsigned long long)e->position,
                 (unsigned long long)p.position);
    }
    check_head("after append");
    for (int r = 0; r < nq; r++) {
        int64_t v;
        if (cairn_stream_version(g_store, reqs[r].stream.ptr, reqs[r].stream.len, &v) ||
            v != M.ver[qs[r].stream])
            fail("stream %d: version after append", qs[r].stream);
    }
}

static void op_append(int nmax) {
    static qreq q;
    q.stream = (int)(u8() % NSTREAMS);
    q.expected = gen_expected(q.stream);
    q.n = nmax > 1 ? 1 + (int)(u8() % (unsigned)nmax) : 1;
    for (int i = 0; i < q.n; i++) gen_event(&q.ev[i]);
    do_batch(&q, 1, nmax == 1);
}

static void op_batch(void) {
    static qreq qs[MAXREQ];
    int nq = 2 + (int)(u8() % (MAXREQ - 1));
    for (int r = 0; r < nq; r++) {
        qs[r].stream = (int)(u8() % NSTREAMS);
        qs[r].expected = gen_expected(qs[r].stream);
        qs[r].n = 1 + (int)(u8() % 4);
        for (int i = 0; i < qs[r].n; i++) gen_event(&qs[r].ev[i]);
    }
    do_batch(qs, nq, 0);
}

/* The events of an earlier call, resent with variations: an exact retry (with any
 * expectation), one event fewer or more, reversed, to another stream, without the first
 * id, twice in one batch, or beside a fresh request. */
static void retry_req(qreq *q, const call *c) {
    q->stream = c->stream;
    q->n = (int)(c->count > MAXEV ? MAXEV : c->count);
    for (int i = 0; i < q->n; i++) {
        const mev *m = &M.ev[c->first - 1 + (uint64_t)i];
        qev *x = &q->ev[i];
        memset(x, 0, sizeof *x);
        x->type = m->type, x->meta = m->meta, x->ntags = m->ntags;
        memcpy(x->tags, m->tags, sizeof x->tags);
        x->has_id = 1;
        memcpy(x->id, m->id, 16);
        x->schema = m->schema, x->flags = m->flags;
        x->data = m->data, x->data_len = m->data_len;
    }
}

static void op_retry(void) {
    static qreq qs[3];
    unsigned v = u8(), k = u8();
    int nq = 1;
    if (!M.ncalls) return;
    retry_req(&qs[0], &M.calls[k % M.ncalls]);
    qs[0].expected = gen_expected(qs[0].stream);
    switch (v % 8) {
    case 0:
    case 1: break; /* exact */
    case 2:
        if (qs[0].n > 1) qs[0].n--;
        break;
    case 3:
        if (qs[0].n < MAXEV) gen_event(&qs[0].ev[qs[0].n++]);
        break;
    case 4:
        for (int i = 0; i < qs[0].n / 2; i++) {
            qev t = qs[0].ev[i];
            qs[0].ev[i] = qs[0].ev[qs[0].n - 1 - i], qs[0].ev[qs[0].n - 1 - i] = t;
        }
        break;
    case 5: qs[0].stream = (qs[0].stream + 1 + (int)(v >> 3) % (NSTREAMS - 1)) % NSTREAMS; break;
    case 6: qs[0].ev[0].has_id = 0; break;
    default: { /* in a batch: twice, or beside a fresh request (before or after) */
        qreq *o = &qs[1];
        nq = 2;
        if (v & 8) {
            qs[1] = qs[0];
        } else {
            o->stream = (int)(u8() % NSTREAMS);
            o->expected = gen_expected(o->stream);
            o->n = 1 + (int)(u8() % 3);
            for (int i = 0; i < o->n; i++) gen_event(&o->ev[i]);
            if (v & 16) {
                qreq t = qs[0];
                qs[0] = qs[1];
                qs[1] = t;
            }
        }
    }
    }
    do_batch(qs, nq, 0);
}

/* Up to 256 single-event appends from three bytes: well past the 64-event index tail. */
static void op_burst(void) {
    static qreq q;
    unsigned n = 1 + u8(), seed = u8(), mode = u8();
    for (unsigned i = 0; i < n; i++) {
        qev *x = &q.ev[0];
        unsigned h = seed * 131 + i * 17 + (i >> 3);
        q.stream = (int)((seed + i * (1 + (mode & 3))) % ((mode >> 2) % NSTREAMS + 1));
        q.expected =
            mode & 0x20 ? M.ver[q.stream] >= 0 ? M.ver[q.stream] : CAIRN_NO_STREAM : CAIRN_ANY;
        q.n = 1;
        memset(x, 0, sizeof *x);
        x->type = (int)(h % NTYPES);
        x->ntags = (int)((h >> 4) % 3);
        for (int t = 0; t < x->ntags; t++) x->tags[t] = (uint8_t)((h >> (6 + 2 * t)) % NTAGS);
        x->meta = mode & 0x40 ? (int)((h >> 3) % NMETA) : 0; /* correlation ids end the tail */
        x->schema = 1;
        if (mode & 0x80) x->has_id = 1, fresh_id(x->id, i & 1);
        if (i % 7 == 3 && M.n && (mode & 0x10)) x->has_id = 1, memcpy(x->id, M.ev[h % M.n].id, 16);
        do_batch(&q, 1, 1);
    }
}

/* Appends the validation must refuse: nothing may change. */
static void op_invalid(void) {
    static qreq q;
    cairn_event_in e;
    cairn_slice t = {"", 0};
    cairn_append_result res;
    const char *stream = g_streams[u8() % NSTREAMS];
    int64_t expected = CAIRN_ANY;
    unsigned k = u8() % 7;
    int rc;
    size_t n = 1;
    (void)q;
    memset(&e, 0, sizeof e);
    e.type.ptr = "A", e.type.len = 1, e.schema = 1;
    switch (k) {
    case 0: e.type.len = 0; break;
    case 1: e.schema = 0; break;
    case 2: expected = -3; break;
    case 3: stream = "$system"; break;
    case 4: e.tags = &t, e.ntags = 1; break;
    case 5: e.flags = 0x80; break;
    default: n = 0; break;
    }
    rc = cairn_append(g_store, stream, strlen(stream), expected, &e, n, &res);
    if (rc != CAIRN_EINVAL) fail("invalid append %u: rc %d", k, rc);
    check_head("after an invalid append");
}

/* ------------------------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------------------------ */
static void read_stream(int s, int64_t start, int backwards, uint64_t limit) {
    cairn_iter *it;
    cairn_event ev;
    int64_t last = M.ver[s];
    uint64_t want[1024], nwant = 0, got = 0;
    int rc;
    /* the model: versions from start (-1: the first forwards, the last backwards) */
    if (last >= 0) {
        if (backwards) {
            int64_t v = start < 0 || start > last ? last : start;
            for (; v >= 0 && (!limit || nwant < limit); v--) nwant++;
        } else {
            int64_t v = start < 0 ? 0 : start;
            for (; v <= last && (!limit || nwant < limit); v++) nwant++;
        }
    }
    if (cairn_iter_stream(g_store, g_streams[s], slen(s), start, backwards, limit, &it) != CAIRN_OK)
        fail("iter_stream failed");
    {
        /* positions of the stream's events by version */
        size_t cnt = 0;
        static uint64_t bypos[1 << 16];
        for (size_t i = 0; i < M.n && cnt < sizeof bypos / sizeof *bypos; i++)
            if (M.ev[i].stream == s) bypos[cnt++] = i + 1;
        int64_t v =
            backwards ? (start < 0 || start > last ? last : start) : (start < 0 ? 0 : start);
        for (uint64_t i = 0; i < nwant && i < 1024; i++)
            want[i] = bypos[backwards ? v - (int64_t)i : v + (int64_t)i];
    }
    while ((rc = cairn_iter_next(it, &ev)) == 1) {
        if (got >= nwant)
            fail("read_stream(%d, %lld, %d, %llu): more than %llu events", s, (long long)start,
                 backwards, (unsigned long long)limit, (unsigned long long)nwant);
        if (got < 1024) check_event(&ev, want[got], "read_stream");
        got++;
    }
    if (rc != 0) fail("read_stream: iter_next %d", rc);
    if (got != nwant)
        fail("read_stream(%d, %lld, %d, %llu): %llu events, model %llu", s, (long long)start,
             backwards, (unsigned long long)limit, (unsigned long long)got,
             (unsigned long long)nwant);
    cairn_iter_close(it);
}

static void op_read_stream(void) {
    int s = (int)(u8() % NSTREAMS);
    unsigned b = u8(), l = u8();
    int64_t start = b & 1 ? -1 : (int64_t)((b >> 2) % (unsigned)(M.ver[s] + 4));
    read_stream(s, start, (b >> 1) & 1, l & 1 ? 0 : l >> 1);
}

typedef struct mfilter {
    int n[4];
    int v[4][3];
} mfilter;

static int match(const mfilter *f, const mev *m) {
    if (f->n[0]) {
        int ok = 0;
        for (int i = 0; i < f->n[0]; i++) ok |= f->v[0][i] == m->type;
        if (!ok) return 0;
    }
    if (f->n[1]) {
        int ok = 0;
        size_t cl;
        const char *c = category(g_streams[m->stream], &cl);
        for (int i = 0; i < f->n[1]; i++) ok |= eq(c, cl, g_fcats[f->v[1][i]]);
        if (!ok) return 0;
    }
    if (f->n[2]) {
        int ok = 0;
        for (int i = 0; i < f->n[2]; i++) ok |= f->v[2][i] == m->stream;
        if (!ok) return 0;
    }
    for (int i = 0; i < f->n[3]; i++) {
        int ok = 0;
        for (int t = 0; t < m->ntags; t++) ok |= m->tags[t] == f->v[3][i];
        if (!ok) return 0;
    }
    return 1;
}

static void read_all(uint64_t start, int backwards, uint64_t limit, const mfilter *mf) {
    cairn_slice sl[4][3];
    cairn_filter f;
    cairn_iter *it;
    cairn_event ev;
    uint64_t got = 0, pos;
    int rc, any = 0;
    /* pool index NTYPES / NSTREAMS / NTAGS: a value no event has */
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < mf->n[k]; i++) {
            int x = mf->v[k][i];
            const char *s = k == 0 ? (x < NTYPES ? g_types[x] : "absent")
                : k == 1           ? g_fcats[x]
                : k == 2           ? (x < NSTREAMS ? g_streams[x] : "absent-1")
                                   : (x < NTAGS ? g_tags[x] : "absent");
            sl[k][i].ptr = s, sl[k][i].len = strlen(s);
            any = 1;
        }
    f.types = sl[0], f.ntypes = (size_t)mf->n[0];
    f.categories = sl[1], f.ncategories = (size_t)mf->n[1];
    f.streams = sl[2], f.nstreams = (size_t)mf->n[2];
    f.tags = sl[3], f.ntags = (size_t)mf->n[3];
    if (cairn_iter_all(g_store, start, backwards, limit, any ? &f : NULL, &it) != CAIRN_OK)
        fail("iter_all failed");
    /* the model's next position */
    pos = backwards ? (start == 0 || start > M.n ? M.n : start) : (start ? start : 1);
    while ((rc = cairn_iter_next(it, &ev)) == 1) {
        while (pos >= 1 && pos <= M.n && !match(mf, &M.ev[pos - 1]))
            pos = backwards ? pos - 1 : pos + 1;
        if (pos < 1 || pos > M.n || (limit && got >= limit))
            fail("read_all(%llu, %d, %llu, filter %d/%d/%d/%d): extra event at %llu",
                 (unsigned long long)start, backwards, (unsigned long long)limit, mf->n[0],
                 mf->n[1], mf->n[2], mf->n[3], (unsigned long long)ev.position);
        if (ev.position != pos)
            fail("read_all(%llu, %d, %llu, filter %d/%d/%d/%d): event %llu at %llu, model %llu",
                 (unsigned long long)start, backwards, (unsigned long long)limit, mf->n[0],
                 mf->n[1], mf->n[2], mf->n[3], (unsigned long long)got,
                 (unsigned long long)ev.position, (unsigned long long)pos);
        check_event(&ev, pos, "read_all");
        got++;
        pos = backwards ? pos - 1 : pos + 1;
    }
    if (rc != 0) fail("read_all: iter_next %d", rc);
    cairn_iter_close(it);
    if (!limit || got < limit) { /* the model has nothing more */
        while (pos >= 1 && pos <= M.n && !match(mf, &M.ev[pos - 1]))
            pos = backwards ? pos - 1 : pos + 1;
        if (pos >= 1 && pos <= M.n)
            fail("read_all(%llu, %d, %llu, filter %d/%d/%d/%d): ended after %llu events, model has "
                 "%llu next",
                 (unsigned long long)start, backwards, (unsigned long long)limit, mf->n[0],
                 mf->n[1], mf->n[2], mf->n[3], (unsigned long long)got, (unsigned long long)pos);
    }
}

static void op_read_all(int filtered) {
    mfilter mf;
    unsigned b = u8(), l = u8(), which = filtered ? u8() : 0;
    static const int pool[4] = {NTYPES + 1, NFCATS, NSTREAMS + 1, NTAGS + 1};
    uint64_t start = b & 1 ? 0 : (uint64_t)((b >> 2) % (M.n + 3));
    memset(&mf, 0, sizeof mf);
    for (int k = 0; k < 4; k++)
        if (which & (1u << k)) {
            mf.n[k] = 1 + (int)((which >> (4 + k)) & 1); /* one or two values */
            for (int i = 0; i < mf.n[k]; i++) mf.v[k][i] = (int)(u8() % (unsigned)pool[k]);
        }
    read_all(start, (b >> 1) & 1, l & 1 ? 0 : l >> 1, &mf);
}

typedef struct names {
    char *v[NSTREAMS + 1];
    size_t n;
} names;

static int name_cb(void *ctx, const char *name, size_t len) {
    names *ns = ctx;
    if (ns->n > NSTREAMS) fail("streams: more names than streams");
    if (!(ns->v[ns->n] = malloc(len + 1))) abort();
    memcpy(ns->v[ns->n], name, len), ns->v[ns->n][len] = 0;
    ns->n++;
    return 0;
}

static int cmp_names(const void *a, const void *b) {
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    size_t lx = strlen(x), ly = strlen(y);
    int c = memcmp(x, y, lx < ly ? lx : ly);
    return c ? c : (lx > ly) - (lx < ly);
}

static void op_point(void) {
    static const char *prefixes[] = {"", "acct", "acct-1", "order-", "long-", "z"};
    unsigned b = u8(), m = u8();
    const char *prefix = prefixes[b % 6];
    const char *want[NSTREAMS];
    size_t nw = 0;
    names all = {{0}, 0};
    size_t max = m % 4;
    cairn_event ev;
    uint64_t pos = (uint64_t)(u8() % (M.n + 2));
    int rc = cairn_get(g_store, pos, &ev);
    if (pos >= 1 && pos <= M.n) {
        if (rc != CAIRN_OK) fail("get(%llu): %d", (unsigned long long)pos, rc);
        check_event(&ev, pos, "get");
    } else if (rc != CAIRN_ENOTFOUND) {
        fail("get(%llu) past the head: %d", (unsigned long long)pos, rc);
    }
    check_versions("op_point");
    check_head("op_point");
    /* the listing, in pages of `max` names (0: all at once) */
    for (int s = 0; s < NSTREAMS; s++)
        if (M.ver[s] >= 0 && strncmp(g_streams[s], prefix, strlen(prefix)) == 0)
            want[nw++] = g_streams[s];
    qsort(want, nw, sizeof *want, cmp_names);
    for (;;) {
        size_t before = all.n;
        const char *after = all.n ? all.v[all.n - 1] : NULL;
        rc = cairn_streams(g_store, prefix, strlen(prefix), after, after ? strlen(after) : 0, max,
                           name_cb, &all);
        if (rc != CAIRN_OK) fail("streams: %d", rc);
        if (max && all.n - before > max)
            fail("streams: page of %zu names, max %zu", all.n - before, max);
        if (!max || all.n - before < max) break;
        if (all.n > NSTREAMS) fail("streams: paging does not end");
    }
    if (all.n != nw) fail("streams(%s, max %zu): %zu names, model %zu", prefix, max, all.n, nw);
    for (size_t i = 0; i < nw; i++)
        if (strcmp(all.v[i], want[i]))
            fail("streams(%s): name %zu is %.40s, model %.40s", prefix, i, all.v[i], want[i]);
    for (size_t i = 0; i < all.n; i++) free(all.v[i]);
}

static void op_verify(void) {
    cairn_verify_report r;
    uint64_t streams = 0;
    int rc = cairn_verify(g_store, &r, NULL, NULL);
    for (int s = 0; s < NSTREAMS; s++) streams += M.ver[s] >= 0;
    if (rc != CAIRN_OK) fail("verify: %d", rc);
    if (r.events != M.n || r.head != M.n || r.streams != streams)
        fail("verify: %llu events, %llu streams, head %llu; model %zu, %llu, %zu",
             (unsigned long long)r.events, (unsigned long long)r.streams,
             (unsigned long long)r.head, M.n, (unsigned long long)streams, M.n);
}

/* ------------------------------------------------------------------------------------
 * The store
 * ------------------------------------------------------------------------------------ */
static void store_open(int durability) {
    cairn_options o;
    cairn_options_init(&o);
    o.durability = durability ? CAIRN_DURABLE_RELAXED : CAIRN_DURABLE_NONE;
    o.map_size = g_map;
    if (cairn_open(g_dir, &o, &g_store) != CAIRN_OK) fail("open %s: %s", g_dir, cairn_errmsg());
}

static void wipe(void) {
    DIR *d = opendir(g_dir);
    struct dirent *de;
    char p[512];
    if (!d) return;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') snprintf(p, sizeof p, "%s/%s", g_dir, de->d_name), unlink(p);
    closedir(d);
}

static void cleanup(void) {
    if (g_store) cairn_close(g_store), g_store = NULL;
    wipe();
    rmdir(g_dir);
}

static void init_once(void) {
    memset(g_long1, 'a', sizeof g_long1 - 1), memcpy(g_long1, "long-", 5);
    memcpy(g_long2, g_long1, sizeof g_long2);
    g_long2[sizeof g_long2 - 2] = 'b'; /* shares its first 618 bytes with g_long1 */
    memset(g_type255, 'T', 255);
    memset(g_tag1024, 'g', 1024);
    snprintf(g_dir, sizeof g_dir, "%s/cairn-fuzz-store-%d",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int inited;
    unsigned first, verifies = 0;
    if (!inited) inited = 1, init_once();
    g_in = data, g_left = size;
    g_ops = 0, g_fresh = 0;
    model_reset();
    wipe(); /* the directory is removed after every input: libFuzzer may _exit without atexit */
    if (mkdir(g_dir, 0700) && access(g_dir, W_OK)) fail("mkdir %s", g_dir);
    first = u8();
    g_map = (uint64_t)(64 << 10) << (first % 4); /* 64 KiB .. 512 KiB: appends grow the map */
    store_open(0);
    while (g_left) {
        unsigned op = u8();
        g_arena_used = 0;
        g_ops++;
        switch (op % 20) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4: op_append(1); break; /* cairn_append, one event */
        case 5: op_append(6); break;
        case 6: op_append(MAXEV); break;
        case 7: op_batch(); break;
        case 8:
        case 9: op_retry(); break;
        case 10: op_burst(); break;
        case 11: op_invalid(); break;
        case 12:
        case 13: op_read_stream(); break;
        case 14:
        case 15:
        case 16: op_read_all(1); break;
        case 17: op_read_all(0); break;
        case 18: op_point(); break;
        default:
            if (op & 0x20) { /* reopen: the tail and everything else must survive */
                cairn_close(g_store);
                store_open(op & 0x40);
            } else if (verifies++ < 2) { /* verify is slow under ASan: twice, plus at the end */
                op_verify();
            }
        }
    }
    /* the end: the whole log, every stream both ways, verify */
    {
        mfilter none;
        memset(&none, 0, sizeof none);
        read_all(0, 0, 0, &none);
        read_all(0, 1, 0, &none);
        for (int s = 0; s < NSTREAMS; s++) read_stream(s, -1, s & 1, 0);
        check_versions("end");
        op_verify();
    }
    cleanup();
    return 0;
}

#pragma clang attribute pop
