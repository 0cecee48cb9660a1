/*
 * test_read.c -- reading: one stream and the global log in both directions with start and
 * limit, read_all filters alone and combined, get, and the stream listing with paging.
 */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>

#define S(x) ((cairn_slice){(x), sizeof(x) - 1})

/* ---------------------------------------------------------------------------------
 * A fixed data set for the filter tests:
 *   pos stream      type        tags
 *   1   account-1   Opened      a, x
 *   2   account-2   Opened      a
 *   3   order-1     Placed      x
 *   4   account-1   Deposited   a, x, y
 *   5   order-1     Paid        y
 *   6   account-2   Deposited   (none)
 *   7   accounting  Opened      a, y        (category "accounting", not "account")
 *   8   order-2     Placed      x, y
 * --------------------------------------------------------------------------------- */
static const struct {
    const char *stream, *type, *tags[3];
} DATA[] = {
    {"account-1", "Opened", {"a", "x"}},  {"account-2", "Opened", {"a"}},
    {"order-1", "Placed", {"x"}},         {"account-1", "Deposited", {"a", "x", "y"}},
    {"order-1", "Paid", {"y"}},           {"account-2", "Deposited", {NULL}},
    {"accounting", "Opened", {"a", "y"}}, {"order-2", "Placed", {"x", "y"}},
};
#define NDATA (sizeof DATA / sizeof DATA[0])

static int fx_setup_data(void **state) {
    if (fx_setup(state) != 0) return -1;
    fixture *fx = *state;
    for (size_t i = 0; i < NDATA; i++) {
        cairn_slice tags[3];
        size_t nt = 0;
        while (nt < 3 && DATA[i].tags[nt]) {
            tags[nt].ptr = DATA[i].tags[nt];
            tags[nt].len = strlen(DATA[i].tags[nt]);
            nt++;
        }
        char json[32];
        snprintf(json, sizeof json, "{\"n\":%zu}", i + 1);
        cairn_event_in e = ev_make(DATA[i].type, json);
        e.tags = tags;
        e.ntags = nt;
        cairn_append_result r;
        int rc =
            cairn_append(fx->store, DATA[i].stream, strlen(DATA[i].stream), CAIRN_ANY, &e, 1, &r);
        if (rc != CAIRN_OK || r.position != i + 1) return -1;
    }
    return 0;
}

/* Reads with `f` and compares the positions against `want` (0-terminated). */
static void expect_positions(cairn_store *s, uint64_t start, int backwards, uint64_t limit,
                             const cairn_filter *f, const uint64_t *want, const char *what) {
    rec *v;
    size_t n, nwant = 0;
    while (want[nwant]) nwant++;
    CHECK_RC(read_all(s, start, backwards, limit, f, &v, &n), 0);
    int ok = n == nwant;
    for (size_t i = 0; ok && i < n; i++) ok = v[i].position == want[i];
    if (!ok) {
        char got[256] = "", *p = got;
        for (size_t i = 0; i < n && p < got + 200; i++)
            p += sprintf(p, "%llu ", (unsigned long long)v[i].position);
        free(v);
        fail_msg("%s: got positions [%s], want %zu of them", what, got, nwant);
    }
    free(v);
}

#define P(...) ((const uint64_t[]){__VA_ARGS__, 0})
#define NONE ((const uint64_t[]){0})

/* ---------------------------------------------------------------------------------
 * One stream
 * --------------------------------------------------------------------------------- */
static void read_stream_forward_backward(void **state) {
    fixture *fx = *state;
    CHECK_OK(append_n(fx->store, "s", CAIRN_ANY, "E", 10, NULL)); /* versions 0..9 */
    CHECK_OK(append_n(fx->store, "other", CAIRN_ANY, "E", 3, NULL));
    struct {
        int64_t start;
        int backwards;
        uint64_t limit;
        int64_t first;
        size_t count;
    } cases[] = {
        {-1, 0, 0, 0, 10}, {0, 0, 0, 0, 10},  {4, 0, 0, 4, 6},    {9, 0, 0, 9, 1},
        {10, 0, 0, 0, 0},  {100, 0, 0, 0, 0}, {-1, 0, 3, 0, 3},   {4, 0, 2, 4, 2},
        {-1, 1, 0, 9, 10}, {9, 1, 0, 9, 10},  {4, 1, 0, 4, 5},    {0, 1, 0, 0, 1},
        {-1, 1, 3, 9, 3},  {4, 1, 2, 4, 2},   {100, 1, 0, 9, 10},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        rec *v;
        size_t n;
        CHECK_RC(
            read_stream(fx->store, "s", cases[c].start, cases[c].backwards, cases[c].limit, &v, &n),
            0);
        if (n != cases[c].count)
            fail_msg("case %zu (start %lld back %d limit %llu): %zu events, want %zu", c,
                     (long long)cases[c].start, cases[c].backwards,
                     (unsigned long long)cases[c].limit, n, cases[c].count);
        for (size_t i = 0; i < n; i++) {
            int64_t want =
                cases[c].backwards ? cases[c].first - (int64_t)i : cases[c].first + (int64_t)i;
            assert_int_equal(v[i].version, want);
            assert_string_equal(v[i].stream, "s");
            assert_int_equal(v[i].position, (uint64_t)want + 1);
            char json[32];
            snprintf(json, sizeof json, "{\"i\":%lld}", (long long)want);
            assert_string_equal(v[i].data, json);
        }
        free(v);
    }
}

static void missing_stream_reads_empty(void **state) {
    fixture *fx = *state;
    rec *v;
    size_t n;
    CHECK_RC(read_stream(fx->store, "nope", -1, 0, 0, &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
    CHECK_RC(read_stream(fx->store, "nope", -1, 1, 0, &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
    CHECK_OK(append_one(fx->store, "nope-not", CAIRN_ANY, "E", NULL, NULL));
    CHECK_RC(read_stream(fx->store, "nope", -1, 0, 0, &v, &n), 0); /* a prefix is not the stream */
    assert_int_equal(n, 0);
    free(v);
    assert_int_equal(version_of(fx->store, "nope"), -1);
    /* an empty store reads empty too */
    CHECK_RC(read_all(fx->store, 2, 0, 0, NULL, &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
}

/* Many streams whose names share a prefix and hash nowhere near each other. */
static void streams_do_not_mix(void **state) {
    fixture *fx = *state;
    char name[32];
    for (int round = 0; round < 5; round++)
        for (int s = 0; s < 20; s++) {
            snprintf(name, sizeof name, "st-%d", s);
            CHECK_OK(append_one(fx->store, name, round - 1, "E", NULL, NULL));
        }
    for (int s = 0; s < 20; s++) {
        rec *v;
        size_t n;
        snprintf(name, sizeof name, "st-%d", s);
        CHECK_RC(read_stream(fx->store, name, -1, 0, 0, &v, &n), 0);
        assert_int_equal(n, 5);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(v[i].stream, name);
            assert_int_equal(v[i].version, (int64_t)i);
            assert_int_equal(v[i].position, (uint64_t)(i * 20 + (size_t)s + 1));
        }
        free(v);
    }
}

/* ---------------------------------------------------------------------------------
 * The global log and its filters
 * --------------------------------------------------------------------------------- */
static void read_all_start_limit(void **state) {
    fixture *fx = *state;
    expect_positions(fx->store, 0, 0, 0, NULL, P(1, 2, 3, 4, 5, 6, 7, 8), "all");
    expect_positions(fx->store, 1, 0, 0, NULL, P(1, 2, 3, 4, 5, 6, 7, 8), "from 1");
    expect_positions(fx->store, 5, 0, 0, NULL, P(5, 6, 7, 8), "from 5");
    expect_positions(fx->store, 5, 0, 2, NULL, P(5, 6), "from 5 limit 2");
    expect_positions(fx->store, 9, 0, 0, NULL, NONE, "past head");
    expect_positions(fx->store, 0, 1, 0, NULL, P(8, 7, 6, 5, 4, 3, 2, 1), "backwards");
    expect_positions(fx->store, 5, 1, 0, NULL, P(5, 4, 3, 2, 1), "backwards from 5");
    expect_positions(fx->store, 5, 1, 3, NULL, P(5, 4, 3), "backwards from 5 limit 3");
    expect_positions(fx->store, 1, 1, 0, NULL, P(1), "backwards from 1");
    expect_positions(fx->store, 100, 1, 2, NULL, P(8, 7), "backwards from past head");
    cairn_filter none = {0};
    expect_positions(fx->store, 0, 0, 0, &none, P(1, 2, 3, 4, 5, 6, 7, 8), "empty filter");
}

static void read_all_filters(void **state) {
    fixture *fx = *state;
    cairn_slice opened = S("Opened"), placed = S("Placed"), dep = S("Deposited"),
                nosuch = S("Nope");
    cairn_slice account = S("account"), order = S("order"), accounting = S("accounting");
    cairn_slice a1 = S("account-1"), o1 = S("order-1"), ghost = S("ghost-1");
    cairn_slice ta = S("a"), tx = S("x"), ty = S("y"), tz = S("z");
    cairn_slice types2[] = {opened, placed}, cats2[] = {account, order}, tags_ax[] = {ta, tx},
                tags_xy[] = {tx, ty}, streams2[] = {a1, o1};
    struct {
        const char *what;
        cairn_filter f;
        int backwards;
        uint64_t limit;
        const uint64_t *want;
    } cases[] = {
        /* clang-format off */
        {"type Opened", {.types = &opened, .ntypes = 1}, 0, 0, P(1, 2, 7)},
        {"types Opened|Placed", {.types = types2, .ntypes = 2}, 0, 0, P(1, 2, 3, 7, 8)},
        {"unknown type", {.types = &nosuch, .ntypes = 1}, 0, 0, NONE},
        {"category account", {.categories = &account, .ncategories = 1}, 0, 0, P(1, 2, 4, 6)},
        {"category accounting", {.categories = &accounting, .ncategories = 1}, 0, 0, P(7)},
        {"categories account|order", {.categories = cats2, .ncategories = 2}, 0, 0,
         P(1, 2, 3, 4, 5, 6, 8)},
        {"stream account-1", {.streams = &a1, .nstreams = 1}, 0, 0, P(1, 4)},
        {"streams account-1|order-1", {.streams = streams2, .nstreams = 2}, 0, 0, P(1, 3, 4, 5)},
        {"unknown stream", {.streams = &ghost, .nstreams = 1}, 0, 0, NONE},
        {"tag a", {.tags = &ta, .ntags = 1}, 0, 0, P(1, 2, 4, 7)},
        {"tags a AND x", {.tags = tags_ax, .ntags = 2}, 0, 0, P(1, 4)},
        {"tags x AND y", {.tags = tags_xy, .ntags = 2}, 0, 0, P(4, 8)},
        {"unknown tag", {.tags = &tz, .ntags = 1}, 0, 0, NONE},
        {"type Opened + category account",
         {.types = &opened, .ntypes = 1, .categories = &account, .ncategories = 1}, 0, 0, P(1, 2)},
        {"type Deposited + tag x", {.types = &dep, .ntypes = 1, .tags = &tx, .ntags = 1}, 0, 0, P(4)},
        {"category order + tag y",
         {.categories = &order, .ncategories = 1, .tags = &ty, .ntags = 1}, 0, 0, P(5, 8)},
        {"stream order-1 + type Placed",
         {.streams = &o1, .nstreams = 1, .types = &placed, .ntypes = 1}, 0, 0, P(3)},
        {"all four kinds",
         {.types = types2, .ntypes = 2, .categories = cats2, .ncategories = 2,
          .streams = streams2, .nstreams = 2, .tags = &tx, .ntags = 1}, 0, 0, P(1, 3)},
        {"type Opened backwards", {.types = &opened, .ntypes = 1}, 1, 0, P(7, 2, 1)},
        {"tag a backwards limit 2", {.tags = &ta, .ntags = 1}, 1, 2, P(7, 4)},
        {"category order limit 2", {.categories = &order, .ncategories = 1}, 0, 2, P(3, 5)},
        /* clang-format on */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_positions(fx->store, 0, cases[i].backwards, cases[i].limit, &cases[i].f,
                         cases[i].want, cases[i].what);
    /* start inside the range, with a filter */
    expect_positions(fx->store, 3, 0, 0, &cases[0].f, P(7), "type Opened from 3");
    expect_positions(fx->store, 6, 1, 0, &cases[9].f, P(4, 2, 1), "tag a backwards from 6");
}

/* The filter is copied: the caller's arrays may change after cairn_iter_all returns. */
static void filter_is_copied(void **state) {
    fixture *fx = *state;
    char type[16] = "Opened";
    cairn_slice t = {type, 6};
    cairn_filter f = {.types = &t, .ntypes = 1};
    cairn_iter *it;
    CHECK_OK(cairn_iter_all(fx->store, 0, 0, 0, &f, &it));
    memcpy(type, "Placed", 6);
    t.len = 0;
    rec *v;
    size_t n;
    CHECK_RC(collect(it, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(v[2].position, 7);
    free(v);
}

/* An iterator keeps going across refills and sees events committed while it is open. */
static void iterator_spans_refills(void **state) {
    fixture *fx = *state;
    for (int i = 0; i < 10; i++) CHECK_OK(append_n(fx->store, "big", CAIRN_ANY, "E", 100, NULL));
    cairn_iter *it;
    cairn_event ev;
    CHECK_OK(cairn_iter_all(fx->store, 0, 0, 0, NULL, &it));
    uint64_t want = 1;
    int rc;
    while ((rc = cairn_iter_next(it, &ev)) == 1) {
        assert_int_equal(ev.position, want);
        if (want == 500) CHECK_OK(append_n(fx->store, "late", CAIRN_ANY, "E", 5, NULL));
        want++;
    }
    assert_int_equal(rc, 0);
    cairn_iter_close(it);
    /* whether events committed mid-iteration show up is not promised; none may be lost */
    assert_true(want - 1 == 1000 + NDATA || want - 1 == 1000 + NDATA + 5);
    /* a stream iterator across refills */
    rec *v;
    size_t n;
    CHECK_RC(read_stream(fx->store, "big", -1, 1, 0, &v, &n), 0);
    assert_int_equal(n, 1000);
    for (size_t i = 0; i < n; i++) assert_int_equal(v[i].version, 999 - (int64_t)i);
    free(v);
}

/* ---------------------------------------------------------------------------------
 * The index tail.  A single-event append leaves its id, category, type and tag entries to
 * a later commit (at most 64 such events; any other write indexes them first), and every
 * filtered read scans that tail.  These tests mix single-event appends, batches and
 * multi-stream batches and compare every kind of filter, both ways, with starts and limits,
 * against a plain filter over the whole log.
 * --------------------------------------------------------------------------------- */
static const char *const TS_STREAMS[] = {"cart-1", "cart-2", "user-1", "users-9"};
static const char *const TS_TYPES[] = {"Added", "Removed", "Named"};
static const char *const TS_TAGS[] = {"red", "blue", "green"};
#define TS_MAX 2000

typedef struct {
    int stream, type, tags; /* tags: bit mask over TS_TAGS */
} tev;

typedef struct {
    tev ev[TS_MAX + 1]; /* by position */
    uint64_t head;
    uint32_t seed;
} tmodel;

static uint32_t rnd(tmodel *m, uint32_t n) {
    m->seed = m->seed * 1103515245u + 12345u;
    return (m->seed >> 16) % n;
}

static void tev_fill(tmodel *m, cairn_event_in *e, cairn_slice *tags, tev *t) {
    size_t nt = 0;
    t->type = (int)rnd(m, 3);
    t->tags = (int)rnd(m, 8);
    *e = ev_make(TS_TYPES[t->type], "{\"k\":1}");
    for (int b = 0; b < 3; b++)
        if (t->tags & (1 << b)) tags[nt].ptr = TS_TAGS[b], tags[nt].len = strlen(TS_TAGS[b]), nt++;
    e->tags = tags, e->ntags = nt;
}

/* `singles` single-event appends, then (batch_every > 0) a batch or a two-stream batch
 * every batch_every appends. */
static void tail_append(cairn_store *s, tmodel *m, int n, int batch_every) {
    for (int i = 0; i < n; i++) {
        cairn_event_in e[4];
        cairn_slice tags[4][3];
        cairn_append_result r[2];
        tev t[4];
        int st = (int)rnd(m, 4);
        if (batch_every && i % batch_every == batch_every - 1) {
            int k = 2 + (int)rnd(m, 3);
            if (rnd(m, 2)) { /* one stream, k events */
                for (int j = 0; j < k; j++) tev_fill(m, &e[j], tags[j], &t[j]), t[j].stream = st;
                CHECK_OK(cairn_append(s, TS_STREAMS[st], strlen(TS_STREAMS[st]), CAIRN_ANY, e,
                                      (size_t)k, r));
            } else { /* two streams, one event each, one commit */
                int st2 = (st + 1) % 4;
                cairn_append_req q[2] = {
                    {{TS_STREAMS[st], strlen(TS_STREAMS[st])}, CAIRN_ANY, &e[0], 1},
                    {{TS_STREAMS[st2], strlen(TS_STREAMS[st2])}, CAIRN_ANY, &e[1], 1}};
                tev_fill(m, &e[0], tags[0], &t[0]), t[0].stream = st;
                tev_fill(m, &e[1], tags[1], &t[1]), t[1].stream = st2;
                k = 2;
                CHECK_OK(cairn_append_batch(s, q, 2, r));
            }
            for (int j = 0; j < k; j++) m->ev[++m->head] = t[j];
        } else {
            tev_fill(m, &e[0], tags[0], &t[0]);
            t[0].stream = st;
            CHECK_OK(cairn_append(s, TS_STREAMS[st], strlen(TS_STREAMS[st]), CAIRN_ANY, e, 1, r));
            m->ev[++m->head] = t[0];
        }
        assert_int_equal(head_of(s), m->head);
    }
}

/* A filter over the model: masks of wanted types, categories (0 cart, 1 user, 2 users),
 * streams and tags (all of them). */
typedef struct {
    int types, cats, streams, tags;
} tfilter;

static int tcat(int stream) { return stream < 2 ? 0 : stream == 2 ? 1 : 2; }

static int tmatch(const tev *t, const tfilter *f) {
    return (!f->types || (f->types >> t->type & 1)) &&
        (!f->cats || (f->cats >> tcat(t->stream) & 1)) &&
        (!f->streams || (f->streams >> t->stream & 1)) && (t->tags & f->tags) == f->tags;
}

static void tail_check(cairn_store *s, const tmodel *m, const char *when) {
    static const char *const CATS[] = {"cart", "user", "users"};
    static const tfilter FS[] = {
        {1, 0, 0, 0}, {2, 0, 0, 0}, {5, 0, 0, 0}, {0, 1, 0, 0}, {0, 2, 0, 0}, {0, 6, 0, 0},
        {0, 0, 1, 0}, {0, 0, 9, 0}, {0, 0, 0, 1}, {0, 0, 0, 6}, {0, 0, 0, 7}, {2, 1, 0, 0},
        {4, 0, 0, 2}, {0, 1, 0, 4}, {3, 3, 3, 1}, {0, 0, 8, 2},
    };
    for (size_t fi = 0; fi < sizeof FS / sizeof FS[0]; fi++) {
        const tfilter *tf = &FS[fi];
        cairn_slice ty[3], ca[3], st[4], tg[3];
        cairn_filter f = {0};
        for (int b = 0; b < 3; b++)
            if (tf->types >> b & 1)
                ty[f.ntypes++] = (cairn_slice){TS_TYPES[b], strlen(TS_TYPES[b])};
        for (int b = 0; b < 3; b++)
            if (tf->cats >> b & 1) ca[f.ncategories++] = (cairn_slice){CATS[b], strlen(CATS[b])};
        for (int b = 0; b < 4; b++)
            if (tf->streams >> b & 1)
                st[f.nstreams++] = (cairn_slice){TS_STREAMS[b], strlen(TS_STREAMS[b])};
        for (int b = 0; b < 3; b++)
            if (tf->tags >> b & 1) tg[f.ntags++] = (cairn_slice){TS_TAGS[b], strlen(TS_TAGS[b])};
        f.types = ty, f.categories = ca, f.streams = st, f.tags = tg;
        const uint64_t starts[] = {0, 1, m->head / 2, m->head > 3 ? m->head - 3 : 1, m->head + 5};
        for (size_t si = 0; si < sizeof starts / sizeof starts[0]; si++) {
            for (int back = 0; back < 2; back++) {
                for (uint64_t limit = 0; limit <= 7; limit += 7) {
                    uint64_t want[TS_MAX + 1], n = 0, start = starts[si];
                    if (!back) {
                        for (uint64_t p = start ? start : 1; p <= m->head && (!limit || n < limit);
                             p++)
                            if (tmatch(&m->ev[p], tf)) want[n++] = p;
                    } else {
                        uint64_t from = !start || start > m->head ? m->head : start;
                        for (uint64_t p = from; p >= 1 && (!limit || n < limit); p--)
                            if (tmatch(&m->ev[p], tf)) want[n++] = p;
                    }
                    rec *v;
                    size_t got;
                    CHECK_RC(read_all(s, start, back, limit, &f, &v, &got), 0);
                    int ok = got == n;
                    for (size_t i = 0; ok && i < got; i++) ok = v[i].position == want[i];
                    free(v);
                    if (!ok)
                        fail_msg(
                            "%s: filter %zu (types %d cats %d streams %d tags %d) start %llu %s "
                            "limit %llu: got %zu events, want %llu",
                            when, fi, tf->types, tf->cats, tf->streams, tf->tags,
                            (unsigned long long)start, back ? "backwards" : "forwards",
                            (unsigned long long)limit, got, (unsigned long long)n);
                }
            }
        }
    }
    cairn_verify_report rep;
    CHECK_OK(cairn_verify(s, &rep, NULL, NULL));
    assert_int_equal(rep.events, m->head);
}

static void tail_reads_match_the_log(void **state) {
    fixture *fx = *state;
    tmodel *m = calloc(1, sizeof *m);
    m->seed = 7;
    tail_append(fx->store, m, 20, 0); /* all in the tail: nothing indexed yet */
    tail_check(fx->store, m, "20 single appends");
    tail_append(fx->store, m, 1, 1); /* a batch indexes the tail */
    tail_check(fx->store, m, "after a batch");
    tail_append(fx->store, m, 150, 0); /* the tail fills (64) and is indexed, twice */
    tail_check(fx->store, m, "150 single appends");
    tail_append(fx->store, m, 300, 9); /* mixed */
    tail_check(fx->store, m, "mixed");
    cairn_close(fx->store); /* the tail survives a reopen */
    CHECK_OK(open_store(fx->path, CAIRN_DURABLE_NONE, 0, 0, &fx->store));
    tail_check(fx->store, m, "reopened");
    tail_append(fx->store, m, 30, 0);
    tail_check(fx->store, m, "reopened, appended");
    free(m);
}

/* Iterators opened before the tail is indexed carry on across it without losing or
 * repeating an event, in both directions. */
static void tail_indexed_under_an_open_iterator(void **state) {
    fixture *fx = *state;
    cairn_slice cart = S("cart");
    cairn_filter f = {.categories = &cart, .ncategories = 1};
    tmodel *m = calloc(1, sizeof *m);
    m->seed = 11;
    tail_append(fx->store, m, 1400, 0); /* ends with a tail of (1400 mod 64) events */
    uint64_t head0 = m->head, want[TS_MAX + 1], nwant = 0;
    for (int back = 0; back < 2; back++) {
        tfilter tf = {0, 1, 0, 0};
        cairn_iter *it;
        cairn_event ev;
        uint64_t n = 0;
        int rc;
        nwant = 0;
        if (!back) {
            for (uint64_t p = 1; p <= head0; p++)
                if (tmatch(&m->ev[p], &tf)) want[nwant++] = p;
        } else {
            for (uint64_t p = head0; p >= 1; p--)
                if (tmatch(&m->ev[p], &tf)) want[nwant++] = p;
        }
        CHECK_OK(cairn_iter_all(fx->store, 0, back, 0, &f, &it));
        while ((rc = cairn_iter_next(it, &ev)) == 1) {
            if (n < nwant)
                assert_int_equal(ev.position, want[n]);
            else
                assert_true(!back && ev.position > head0); /* committed meanwhile */
            if (n == 3 || n == 600)
                tail_append(fx->store, m, 2, 2); /* a batch: the tail is indexed */
            n++;
        }
        assert_int_equal(rc, 0);
        cairn_iter_close(it);
        assert_true(n >= nwant);
        head0 = m->head;
    }
    free(m);
}

/* ---------------------------------------------------------------------------------
 * get
 * --------------------------------------------------------------------------------- */
static void get_by_position(void **state) {
    fixture *fx = *state;
    cairn_event ev;
    for (uint64_t p = 1; p <= NDATA; p++) {
        CHECK_OK(cairn_get(fx->store, p, &ev));
        assert_int_equal(ev.position, p);
        assert_int_equal(ev.stream.len, strlen(DATA[p - 1].stream));
        assert_memory_equal(ev.stream.ptr, DATA[p - 1].stream, ev.stream.len);
        assert_memory_equal(ev.type.ptr, DATA[p - 1].type, ev.type.len);
    }
    CHECK_RC(cairn_get(fx->store, NDATA + 1, &ev), CAIRN_ENOTFOUND);
    assert_int_equal(cairn_last_error()->code, CAIRN_ENOTFOUND);
    CHECK_RC(cairn_get(fx->store, UINT64_MAX, &ev), CAIRN_ENOTFOUND);
    int rc = cairn_get(fx->store, 0, &ev);
    assert_true(rc == CAIRN_ENOTFOUND || rc == CAIRN_EINVAL);
}

/* ---------------------------------------------------------------------------------
 * The stream listing
 * --------------------------------------------------------------------------------- */
typedef struct names {
    size_t n, stop_after;
    char *v[64];
    size_t len[64];
} names;

static int collect_name(void *ctx, const char *name, size_t len) {
    names *ns = ctx;
    assert_true(ns->n < 64);
    ns->v[ns->n] = malloc(len + 1);
    memcpy(ns->v[ns->n], name, len);
    ns->v[ns->n][len] = 0;
    ns->len[ns->n++] = len;
    return ns->stop_after && ns->n >= ns->stop_after;
}

static void names_free(names *ns) {
    for (size_t i = 0; i < ns->n; i++) free(ns->v[i]);
    ns->n = 0;
}

static void list(cairn_store *s, const char *prefix, const char *after, size_t max, names *ns) {
    names_free(ns);
    CHECK_OK(cairn_streams(s, prefix, prefix ? strlen(prefix) : 0, after, after ? strlen(after) : 0,
                           max, collect_name, ns));
}

static void streams_listing_prefix_and_paging(void **state) {
    fixture *fx = *state;
    names ns = {0};
    list(fx->store, NULL, NULL, 0, &ns);
    const char *all[] = {"account-1", "account-2", "accounting", "order-1", "order-2"};
    assert_int_equal(ns.n, 5);
    for (size_t i = 0; i < 5; i++) assert_string_equal(ns.v[i], all[i]);

    list(fx->store, "account", NULL, 0, &ns);
    assert_int_equal(ns.n, 3);
    assert_string_equal(ns.v[2], "accounting");
    list(fx->store, "account-", NULL, 0, &ns);
    assert_int_equal(ns.n, 2);
    list(fx->store, "order-2", NULL, 0, &ns);
    assert_int_equal(ns.n, 1);
    list(fx->store, "zzz", NULL, 0, &ns);
    assert_int_equal(ns.n, 0);
    list(fx->store, "", NULL, 0, &ns);
    assert_int_equal(ns.n, 5);

    /* paging: max 2 at a time, continuing after the last name seen */
    const char *after = NULL;
    char last[64];
    size_t total = 0;
    for (int page = 0; page < 5; page++) {
        list(fx->store, NULL, after, 2, &ns);
        if (ns.n == 0) break;
        assert_true(ns.n <= 2);
        for (size_t i = 0; i < ns.n; i++) assert_string_equal(ns.v[i], all[total + i]);
        total += ns.n;
        snprintf(last, sizeof last, "%s", ns.v[ns.n - 1]);
        after = last;
    }
    assert_int_equal(total, 5);
    list(fx->store, "account", "account-2", 0, &ns);
    assert_int_equal(ns.n, 1);
    assert_string_equal(ns.v[0], "accounting");
    list(fx->store, NULL, "b", 0, &ns); /* `after` need not be a stream */
    assert_int_equal(ns.n, 2);
    assert_string_equal(ns.v[0], "order-1");

    /* the callback stops the listing */
    names_free(&ns);
    ns.stop_after = 2;
    CHECK_OK(cairn_streams(fx->store, NULL, 0, NULL, 0, 0, collect_name, &ns));
    assert_int_equal(ns.n, 2);
    names_free(&ns);
}

/* Names at and near the 1,024-byte limit, sharing a long prefix, list sorted and read back. */
static void long_stream_names(void **state) {
    fixture *fx = *state;
    enum { K = 12 };
    static char nm[K][CAIRN_MAX_STREAM + 1];
    static const size_t lens[K] = {1024, 1024, 1024, 1023, 1023, 1000,
                                   1001, 1024, 999,  600,  1022, 1024};
    static const char tails[K] = {'z', 'a', 'm', 'b', 'z', 'q', 'q', 'b', 'c', 'x', 'a', 'n'};
    for (int i = 0; i < K; i++) {
        memset(nm[i], 'p', lens[i]);
        memcpy(nm[i], "long-", 5);
        nm[i][lens[i] - 1] = tails[i];
        nm[i][lens[i]] = 0;
        cairn_append_result r;
        CHECK_OK(append_n(fx->store, nm[i], CAIRN_NO_STREAM, "E", (size_t)i + 1, &r));
        assert_int_equal(r.version, i);
    }
    for (int i = 0; i < K; i++) {
        assert_int_equal(version_of(fx->store, nm[i]), i);
        rec *v;
        size_t n;
        CHECK_RC(read_stream(fx->store, nm[i], -1, 0, 0, &v, &n), 0);
        assert_int_equal(n, (size_t)i + 1);
        for (size_t j = 0; j < n; j++) assert_string_equal(v[j].stream, nm[i]);
        free(v);
    }
    /* expected order: bytewise */
    const char *sorted[K];
    for (int i = 0; i < K; i++) sorted[i] = nm[i];
    for (int i = 1; i < K; i++)
        for (int j = i; j > 0 && strcmp(sorted[j - 1], sorted[j]) > 0; j--) {
            const char *t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    names ns = {0};
    char prefix[601];
    memset(prefix, 'p', 600);
    memcpy(prefix, "long-", 5);
    prefix[600] = 0;
    list(fx->store, prefix, NULL, 0, &ns); /* all but the 600-byte one, whose byte 600 differs */
    assert_int_equal(ns.n, K - 1);
    for (size_t i = 0, j = 0; i < (size_t)K; i++) {
        if (strlen(sorted[i]) == 600) continue;
        assert_int_equal(ns.len[j], strlen(sorted[i]));
        assert_string_equal(ns.v[j], sorted[i]);
        j++;
    }
    /* paging through them three at a time */
    char after[CAIRN_MAX_STREAM + 1] = "";
    size_t seen = 0;
    for (;;) {
        list(fx->store, "long-", seen ? after : NULL, 3, &ns);
        if (!ns.n) break;
        for (size_t i = 0; i < ns.n; i++) assert_string_equal(ns.v[i], sorted[seen + i]);
        seen += ns.n;
        memcpy(after, ns.v[ns.n - 1], ns.len[ns.n - 1] + 1);
    }
    assert_int_equal(seen, K);
    names_free(&ns);
    /* a 1,025-byte name is refused, for reading too it is simply not there */
    static char too_long[CAIRN_MAX_STREAM + 2];
    memset(too_long, 'p', CAIRN_MAX_STREAM + 1);
    CHECK_RC(append_one(fx->store, too_long, CAIRN_ANY, "E", NULL, NULL), CAIRN_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(read_stream_forward_backward, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(missing_stream_reads_empty, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(streams_do_not_mix, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(read_all_start_limit, fx_setup_data, fx_teardown),
        cmocka_unit_test_setup_teardown(read_all_filters, fx_setup_data, fx_teardown),
        cmocka_unit_test_setup_teardown(filter_is_copied, fx_setup_data, fx_teardown),
        cmocka_unit_test_setup_teardown(iterator_spans_refills, fx_setup_data, fx_teardown),
        cmocka_unit_test_setup_teardown(get_by_position, fx_setup_data, fx_teardown),
        cmocka_unit_test_setup_teardown(tail_reads_match_the_log, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(tail_indexed_under_an_open_iterator, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(streams_listing_prefix_and_paging, fx_setup_data,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(long_stream_names, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
