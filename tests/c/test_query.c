/*
 * test_query.c -- dynamic consistency boundaries in the core (docs/API.md section 5):
 * cairn_iter_query over the tag and type indexes (and the index tail), and conditions
 * checked inside the write transaction by cairn_append_conditional.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "storage.h"
#include "support.h"

#define S(x) \
    { x, sizeof(x) - 1 }

/* Appends one event of `type` with up to three tags (NULL-terminated) to `stream`. */
static uint64_t add(cairn_store *s, const char *stream, const char *type, const char *t1,
                    const char *t2, const char *t3) {
    cairn_slice tags[3];
    const char *in[3] = {t1, t2, t3};
    size_t n = 0;
    cairn_event_in ev = ev_make(type, "{}");
    cairn_append_result r;
    for (int i = 0; i < 3; i++)
        if (in[i]) tags[n].ptr = in[i], tags[n].len = strlen(in[i]), n++;
    ev.tags = tags, ev.ntags = n;
    CHECK_OK(cairn_append(s, stream, strlen(stream), CAIRN_ANY, &ev, 1, &r));
    return r.position;
}

/* The positions a query yields (forwards or backwards, from start, at most limit). */
static size_t positions(cairn_store *s, const cairn_query *q, uint64_t start, int backwards,
                        uint64_t limit, uint64_t *out, size_t max, uint64_t *head) {
    cairn_iter *it;
    cairn_event ev;
    size_t n = 0;
    int rc;
    CHECK_OK(cairn_iter_query(s, q, start, backwards, limit, &it, head));
    while ((rc = cairn_iter_next(it, &ev)) == 1) {
        assert_true(n < max);
        out[n++] = ev.position;
    }
    CHECK_OK(rc);
    cairn_iter_close(it);
    return n;
}

static void assert_positions(const uint64_t *got, size_t n, const uint64_t *want, size_t m) {
    if (n != m) fail_msg("got %zu positions, want %zu", n, m);
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("position %zu: got %llu, want %llu", i, (unsigned long long)got[i],
                     (unsigned long long)want[i]);
}

static void items_and_queries_match_as_specified(void **state) {
    fixture *fx = *state;
    cairn_store *s = fx->store;
    cairn_slice sub[] = {S("Subscribed")}, cap[] = {S("CapacityChanged")};
    cairn_slice c1[] = {S("course:c1")}, both[] = {S("course:c1"), S("student:s1")};
    uint64_t got[16], head;
    size_t n;
    add(s, "c-1", "CapacityChanged", "course:c1", NULL, NULL);    /* 1 */
    add(s, "s-1", "Subscribed", "course:c1", "student:s1", NULL); /* 2 */
    add(s, "s-2", "Subscribed", "course:c2", "student:s1", NULL); /* 3 */
    add(s, "s-3", "Subscribed", "course:c1", "student:s2", NULL); /* 4 */
    add(s, "c-2", "CapacityChanged", "course:c2", NULL, NULL);    /* 5 */
    add(s, "x-1", "Other", "course:c1", "student:s1", "misc");    /* 6 */
    {                                                             /* types AND all tags */
        cairn_query_item it = {sub, 1, c1, 1};
        cairn_query q = {&it, 1};
        uint64_t want[] = {2, 4};
        n = positions(s, &q, 0, 0, 0, got, 16, &head);
        assert_positions(got, n, want, 2);
        assert_int_equal(head, 6);
    }
    { /* several tags: all of them */
        cairn_query_item it = {NULL, 0, both, 2};
        cairn_query q = {&it, 1};
        uint64_t want[] = {2, 6};
        n = positions(s, &q, 0, 0, 0, got, 16, NULL);
        assert_positions(got, n, want, 2);
    }
    { /* two items: either, merged in position order without duplicates */
        cairn_query_item its[] = {{sub, 1, c1, 1}, {cap, 1, c1, 1}, {NULL, 0, both, 2}};
        cairn_query q = {its, 3};
        uint64_t want[] = {1, 2, 4, 6}, back[] = {6, 4, 2, 1}, lim[] = {4, 2};
        n = positions(s, &q, 0, 0, 0, got, 16, NULL);
        assert_positions(got, n, want, 4);
        n = positions(s, &q, 0, 1, 0, got, 16, NULL);
        assert_positions(got, n, back, 4);
        n = positions(s, &q, 5, 1, 2, got, 16, NULL); /* backwards from 5, two */
        assert_positions(got, n, lim, 2);
        n = positions(s, &q, 3, 0, 0, got, 16, NULL); /* start is inclusive */
        assert_positions(got, n, want + 2, 2);
    }
    { /* no items, and an item of nothing: every event */
        cairn_query_item it = {NULL, 0, NULL, 0};
        cairn_query q0 = {NULL, 0}, q1 = {&it, 1};
        uint64_t want[] = {1, 2, 3, 4, 5, 6};
        n = positions(s, &q0, 0, 0, 0, got, 16, NULL);
        assert_positions(got, n, want, 6);
        n = positions(s, &q1, 0, 0, 0, got, 16, NULL);
        assert_positions(got, n, want, 6);
    }
    { /* types only; a tag nobody has; a type nobody has */
        cairn_slice none[] = {S("course:c9")}, nt[] = {S("Nope")};
        cairn_query_item a = {cap, 1, NULL, 0}, b = {NULL, 0, none, 1}, c = {nt, 1, NULL, 0};
        cairn_query qa = {&a, 1}, qb = {&b, 1}, qc = {&c, 1};
        uint64_t want[] = {1, 5};
        n = positions(s, &qa, 0, 0, 0, got, 16, NULL);
        assert_positions(got, n, want, 2);
        assert_int_equal(positions(s, &qb, 0, 0, 0, got, 16, NULL), 0);
        assert_int_equal(positions(s, &qc, 0, 0, 0, got, 16, NULL), 0);
    }
}

static void a_query_yields_nothing_after_its_head(void **state) {
    fixture *fx = *state;
    cairn_slice c1[] = {S("course:c1")};
    cairn_query_item item = {NULL, 0, c1, 1};
    cairn_query q = {&item, 1};
    cairn_iter *it;
    cairn_event ev;
    uint64_t head;
    add(fx->store, "a", "T", "course:c1", NULL, NULL);
    CHECK_OK(cairn_iter_query(fx->store, &q, 0, 0, 0, &it, &head));
    assert_int_equal(head, 1);
    add(fx->store, "a", "T", "course:c1", NULL, NULL); /* after the query began */
    assert_int_equal(cairn_iter_next(it, &ev), 1);
    assert_int_equal(ev.position, 1);
    assert_int_equal(cairn_iter_next(it, &ev), 0);
    cairn_iter_close(it);
    /* backwards starts at the head, not at the newest event */
    CHECK_OK(cairn_iter_query(fx->store, &q, 0, 1, 0, &it, &head));
    assert_int_equal(head, 2);
    add(fx->store, "a", "T", "course:c1", NULL, NULL);
    assert_int_equal(cairn_iter_next(it, &ev), 1);
    assert_int_equal(ev.position, 2);
    cairn_iter_close(it);
}

static void a_forward_read_cut_by_its_limit_is_complete_up_to_its_last_event(void **state) {
    fixture *fx = *state;
    cairn_slice c1[] = {S("course:c1")};
    cairn_query_item item = {NULL, 0, c1, 1};
    cairn_query q = {&item, 1};
    cairn_iter *it;
    cairn_event ev;
    uint64_t head;
    add(fx->store, "a", "T", "course:c1", NULL, NULL); /* 1 */
    add(fx->store, "b", "T", "other", NULL, NULL);     /* 2 */
    add(fx->store, "a", "T", "course:c1", NULL, NULL); /* 3 */
    CHECK_OK(cairn_iter_query(fx->store, &q, 0, 0, 1, &it, &head));
    assert_int_equal(cairn_iter_head(it), 3); /* nothing read yet: the head at the call */
    assert_int_equal(cairn_iter_next(it, &ev), 1);
    assert_int_equal(cairn_iter_head(it), 1); /* cut: 3 was not read */
    cairn_iter_close(it);
    CHECK_OK(cairn_iter_query(fx->store, &q, 0, 0, 5, &it, &head)); /* not cut */
    while (cairn_iter_next(it, &ev) == 1) {}
    assert_int_equal(cairn_iter_head(it), 3);
    cairn_iter_close(it);
    CHECK_OK(cairn_iter_query(fx->store, &q, 0, 1, 1, &it, &head)); /* backwards: the newest */
    assert_int_equal(cairn_iter_next(it, &ev), 1);
    assert_int_equal(ev.position, 3);
    assert_int_equal(cairn_iter_head(it), 3);
    cairn_iter_close(it);
    CHECK_OK(cairn_iter_all(fx->store, 0, 0, 1, NULL, &it)); /* no query */
    assert_int_equal(cairn_iter_next(it, &ev), 1);
    assert_int_equal(cairn_iter_head(it), 0);
    cairn_iter_close(it);
}

static void the_empty_store_has_head_zero_and_no_events(void **state) {
    fixture *fx = *state;
    cairn_query q = {NULL, 0};
    uint64_t got[2], head = 99;
    assert_int_equal(positions(fx->store, &q, 0, 0, 0, got, 2, &head), 0);
    assert_int_equal(head, 0);
    assert_int_equal(positions(fx->store, &q, 0, 1, 0, got, 2, &head), 0);
}

static void lifecycle_and_removed_events_never_match(void **state) {
    fixture *fx = *state;
    cairn_query q = {NULL, 0};
    cairn_slice t[] = {S("k")};
    cairn_query_item item = {NULL, 0, t, 1};
    cairn_query qt = {&item, 1};
    uint64_t got[8], lpos;
    add(fx->store, "gone", "T", "k", NULL, NULL);
    add(fx->store, "kept", "T", "k", NULL, NULL);
    CHECK_OK(cairn_delete_stream(fx->store, "gone", 4, CAIRN_ANY, 0, &lpos));
    assert_int_equal(lpos, 3);
    {
        uint64_t want[] = {2};
        assert_positions(got, positions(fx->store, &q, 0, 0, 0, got, 8, NULL), want, 1);
        assert_positions(got, positions(fx->store, &qt, 0, 0, 0, got, 8, NULL), want, 1);
    }
    { /* and a condition over everything after 2 holds: $lifecycle's event does not count */
        cairn_condition c = {&q, 2};
        const cairn_condition *cs[] = {&c};
        cairn_event_in ev = ev_make("T", "{}");
        cairn_append_req r = {S("kept"), CAIRN_ANY, &ev, 1};
        cairn_append_result res;
        CHECK_OK(cairn_append_conditional(fx->store, &r, cs, 1, &res));
        assert_int_equal(res.position, 4);
    }
}

static void a_failed_condition_names_positions_and_writes_nothing(void **state) {
    fixture *fx = *state;
    cairn_store *s = fx->store;
    cairn_slice c1[] = {S("course:c1")};
    cairn_query_item item = {NULL, 0, c1, 1};
    cairn_query q = {&item, 1};
    cairn_event_in ev = ev_make("Subscribed", "{}");
    cairn_append_req r = {S("s-9"), CAIRN_ANY, &ev, 1};
    cairn_append_result res;
    const cairn_error *err;
    for (int i = 0; i < 8; i++) add(s, "c", "T", i % 2 ? "course:c1" : "other", NULL, NULL);
    /* c1 is at 2, 4, 6, 8 */
    {
        cairn_condition c = {&q, 0};
        const cairn_condition *cs[] = {&c};
        CHECK_RC(cairn_append_conditional(s, &r, cs, 1, &res), CAIRN_ECONDITION);
        err = cairn_last_error();
        assert_int_equal(err->npositions, 4);
        assert_int_equal(err->positions[0], 2);
        assert_int_equal(err->positions[3], 8);
        assert_int_equal(err->request, 0);
        assert_non_null(strstr(err->message, "condition"));
        assert_int_equal(head_of(s), 8);
        assert_int_equal(version_of(s, "s-9"), -1);
    }
    { /* after is exclusive */
        cairn_condition c = {&q, 4};
        const cairn_condition *cs[] = {&c};
        CHECK_RC(cairn_append_conditional(s, &r, cs, 1, &res), CAIRN_ECONDITION);
        err = cairn_last_error();
        assert_int_equal(err->npositions, 2);
        assert_int_equal(err->positions[0], 6);
        assert_int_equal(err->positions[1], 8);
    }
    { /* at most five, the lowest */
        cairn_query all = {NULL, 0};
        cairn_condition c = {&all, 1};
        const cairn_condition *cs[] = {&c};
        CHECK_RC(cairn_append_conditional(s, &r, cs, 1, &res), CAIRN_ECONDITION);
        err = cairn_last_error();
        assert_int_equal(err->npositions, 5);
        for (size_t i = 0; i < 5; i++) assert_int_equal(err->positions[i], 2 + i);
    }
    { /* after the last match: holds, and the store is still usable */
        cairn_condition c = {&q, 8};
        const cairn_condition *cs[] = {&c};
        CHECK_OK(cairn_append_conditional(s, &r, cs, 1, &res));
        assert_int_equal(res.position, 9);
    }
}

static void conditions_see_earlier_requests_and_follow_the_expected_version(void **state) {
    fixture *fx = *state;
    cairn_store *s = fx->store;
    cairn_slice tg[] = {S("user:ann")};
    cairn_query_item item = {NULL, 0, tg, 1};
    cairn_query q = {&item, 1};
    cairn_condition c = {&q, 0};
    cairn_event_in a = ev_make("Registered", "{}"), b = ev_make("Registered", "{}");
    cairn_append_result res[2];
    const cairn_error *err;
    a.tags = tg, a.ntags = 1;
    b.tags = tg, b.ntags = 1;
    { /* the second request's condition sees the first's event: nothing is written */
        cairn_append_req r[2] = {{S("u-1"), CAIRN_ANY, &a, 1}, {S("u-2"), CAIRN_ANY, &b, 1}};
        const cairn_condition *cs[] = {&c, &c};
        CHECK_RC(cairn_append_conditional(s, r, cs, 2, res), CAIRN_ECONDITION);
        err = cairn_last_error();
        assert_int_equal(err->request, 1);
        assert_int_equal(err->npositions, 1);
        assert_int_equal(err->positions[0], 1); /* the position it would have had */
        assert_int_equal(head_of(s), 0);
    }
    { /* both fail: the expected version is checked first */
        cairn_append_req r = {S("u-1"), 5, &a, 1};
        const cairn_condition *cs[] = {&c};
        add(s, "other", "Registered", "user:ann", NULL, NULL);
        CHECK_RC(cairn_append_conditional(s, &r, cs, 1, res), CAIRN_EVERSION);
        assert_int_equal(head_of(s), 1);
    }
    { /* a retry of a committed call returns its result and checks neither */
        cairn_event_in e = ev_with_id("Registered", "{}", 77);
        cairn_append_req r = {S("u-3"), CAIRN_NO_STREAM, &e, 1};
        cairn_condition c1 = {&q, 1};
        const cairn_condition *cs[] = {&c1};
        uint64_t first;
        e.tags = tg, e.ntags = 1;
        CHECK_OK(cairn_append_conditional(s, &r, cs, 1, res));
        first = res[0].position;
        assert_int_equal(first, 2);
        CHECK_OK(cairn_append_conditional(s, &r, cs, 1, res)); /* the condition is false now */
        assert_int_equal(res[0].position, first);
        assert_int_equal(head_of(s), 2);
    }
}

static void bad_conditions_are_refused_before_writing(void **state) {
    fixture *fx = *state;
    cairn_event_in ev = ev_make("T", "{}");
    cairn_append_req r = {S("a"), CAIRN_ANY, &ev, 1};
    cairn_append_result res;
    cairn_query_item bad = {NULL, 2, NULL, 0};
    cairn_query q = {&bad, 1}, qn = {NULL, 3};
    cairn_condition c1 = {NULL, 0}, c2 = {&q, 0}, c3 = {&qn, 0};
    const cairn_condition *cs1[] = {&c1}, *cs2[] = {&c2}, *cs3[] = {&c3};
    cairn_iter *it;
    CHECK_RC(cairn_append_conditional(fx->store, &r, cs1, 1, &res), CAIRN_EINVAL);
    CHECK_RC(cairn_append_conditional(fx->store, &r, cs2, 1, &res), CAIRN_EINVAL);
    CHECK_RC(cairn_append_conditional(fx->store, &r, cs3, 1, &res), CAIRN_EINVAL);
    CHECK_RC(cairn_iter_query(fx->store, NULL, 0, 0, 0, &it, NULL), CAIRN_EINVAL);
    CHECK_RC(cairn_iter_query(fx->store, &q, 0, 0, 0, &it, NULL), CAIRN_EINVAL);
    assert_int_equal(head_of(fx->store), 0);
    CHECK_OK(cairn_append_conditional(fx->store, &r, NULL, 1, &res));
    assert_int_equal(res.position, 1);
}

/* A model check: random events (batched, so indexed at once, and single, so in the index
 * tail), random queries, against a brute-force filter of what was written. */
#define MN 400
static struct { int type, tags; /* tags: bit i = tag i */ } M[MN + 1];

static int model_match(int pos, const int *types, int ntypes, int tags) {
    int any = ntypes == 0;
    for (int i = 0; i < ntypes; i++) any |= M[pos].type == types[i];
    return any && (M[pos].tags & tags) == tags;
}

static void queries_agree_with_a_brute_force_filter(void **state) {
    fixture *fx = *state;
    static const char *types[] = {"A", "B", "C"}, *tags[] = {"t0", "t1", "t2", "t3"};
    cairn_slice ts[3] = {S("A"), S("B"), S("C")}, gs[4] = {S("t0"), S("t1"), S("t2"), S("t3")};
    unsigned seed = 12345;
    int pos = 0;
    while (pos < MN) {
        int batch = (int)(rand_r(&seed) % 3) == 0 ? 1 + (int)(rand_r(&seed) % 20) : 1;
        cairn_event_in ev[20];
        cairn_slice evtags[20][4];
        cairn_append_result r;
        if (pos + batch > MN) batch = MN - pos;
        for (int i = 0; i < batch; i++) {
            int p = pos + 1 + i, n = 0;
            M[p].type = (int)(rand_r(&seed) % 3);
            M[p].tags = (int)(rand_r(&seed) % 16);
            ev[i] = ev_make(types[M[p].type], "{}");
            for (int t = 0; t < 4; t++)
                if (M[p].tags & (1 << t)) evtags[i][n].ptr = tags[t], evtags[i][n++].len = 2;
            ev[i].tags = evtags[i], ev[i].ntags = (size_t)n;
        }
        CHECK_OK(cairn_append(fx->store, "m", 1, CAIRN_ANY, ev, (size_t)batch, &r));
        pos += batch;
    }
    for (int round = 0; round < 300; round++) {
        cairn_query_item items[3];
        cairn_slice itypes[3][3], itags[3][4];
        int ntypes[3], qt[3][3], qtags[3], nitems = (int)(rand_r(&seed) % 4);
        uint64_t got[MN], want[MN], start = rand_r(&seed) % 3 ? 0 : 1 + rand_r(&seed) % MN;
        int backwards = (int)(rand_r(&seed) % 2);
        size_t n, m = 0;
        cairn_query q = {items, (size_t)nitems};
        for (int i = 0; i < nitems; i++) {
            int nt = 0, ng = 0, tagbits = (int)(rand_r(&seed) % 16);
            ntypes[i] = (int)(rand_r(&seed) % 3);
            for (int k = 0; k < ntypes[i]; k++) qt[i][k] = (int)(rand_r(&seed) % 3);
            for (int k = 0; k < ntypes[i]; k++) itypes[i][nt++] = ts[qt[i][k]];
            for (int t = 0; t < 4; t++)
                if (tagbits & (1 << t)) itags[i][ng++] = gs[t];
            qtags[i] = tagbits;
            items[i].types = nt ? itypes[i] : NULL, items[i].ntypes = (size_t)nt;
            items[i].tags = ng ? itags[i] : NULL, items[i].ntags = (size_t)ng;
        }
        for (int k = 0; k < MN; k++) {
            int p = backwards ? MN - k : k + 1, hit = nitems == 0;
            if (start && (backwards ? (uint64_t)p > start : (uint64_t)p < start)) continue;
            for (int i = 0; i < nitems; i++) hit |= model_match(p, qt[i], ntypes[i], qtags[i]);
            if (hit) want[m++] = (uint64_t)p;
        }
        n = positions(fx->store, &q, start, backwards, 0, got, MN, NULL);
        assert_positions(got, n, want, m);
        { /* and the condition after a random position agrees: the lowest five after it */
            uint64_t after = rand_r(&seed) % (MN + 1);
            cairn_condition c = {&q, after};
            const cairn_condition *cs[] = {&c};
            cairn_event_in ev = ev_make("Z", "{}");
            cairn_append_req r = {S("z"), CAIRN_ANY, &ev, 1};
            cairn_append_result res;
            size_t k = 0, j;
            uint64_t lows[5];
            for (int p = (int)after + 1; p <= MN && k < 5; p++) {
                int hit = nitems == 0;
                for (int i = 0; i < nitems; i++) hit |= model_match(p, qt[i], ntypes[i], qtags[i]);
                if (hit) lows[k++] = (uint64_t)p;
            }
            if (k == 0) continue; /* it would hold: appending would change the model */
            CHECK_RC(cairn_append_conditional(fx->store, &r, cs, 1, &res), CAIRN_ECONDITION);
            assert_int_equal(cairn_last_error()->npositions, k);
            for (j = 0; j < k; j++) assert_int_equal(cairn_last_error()->positions[j], lows[j]);
        }
    }
}

/* The condition is checked under the writer lock: writer A holds its write transaction
 * (it has appended an event the query matches, not committed yet) while B's conditional
 * append, made with the head before A's event, waits for the lock; once B is seen blocked,
 * A commits.  A check made before taking the lock would find nothing and let B commit. */
typedef struct hold {
    cairn_store *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int holding, release, b_rc;
    pid_t b_tid;
    uint64_t b_pos;
} hold;

static int hold_body(cairn_wtxn *w, void *ctx) {
    hold *h = ctx;
    cairn_slice tg[] = {S("seat:last")};
    cairn_event_in ev = ev_make("Taken", "{}");
    cairn_append_req q = {S("a"), CAIRN_ANY, &ev, 1};
    cairn_append_result r;
    int rc;
    ev.tags = tg, ev.ntags = 1;
    if ((rc = cairn__write_requests(h->s, w->txn, &q, NULL, 1, &r, 0))) return rc;
    pthread_mutex_lock(&h->mu);
    h->holding = 1;
    pthread_cond_broadcast(&h->cv);
    while (!h->release) pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    w->notify = 1, w->head = r.position;
    return CAIRN_OK;
}

static void *writer_a(void *arg) {
    hold *h = arg;
    CHECK_OK(cairn__write_txn(h->s->env, CAIRN_DURABLE_NONE, hold_body, h));
    return NULL;
}

static void *writer_b(void *arg) {
    hold *h = arg;
    cairn_slice tg[] = {S("seat:last")};
    cairn_query_item item = {NULL, 0, tg, 1};
    cairn_query q = {&item, 1};
    cairn_condition c = {&q, 0}; /* the head B's decision saw: nothing */
    const cairn_condition *cs[] = {&c};
    cairn_event_in ev = ev_make("Taken", "{}");
    cairn_append_req r = {S("b"), CAIRN_ANY, &ev, 1};
    cairn_append_result res;
    ev.tags = tg, ev.ntags = 1;
    h->b_tid = (pid_t)syscall(SYS_gettid);
    h->b_rc = cairn_append_conditional(h->s, &r, cs, 1, &res);
    h->b_pos = h->b_rc == CAIRN_ECONDITION ? cairn_last_error()->positions[0] : 0;
    return NULL;
}

static void a_condition_is_checked_under_the_writer_lock(void **state) {
    fixture *fx = *state;
    hold h;
    pthread_t a, b;
    memset(&h, 0, sizeof h);
    h.s = fx->store;
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    assert_int_equal(pthread_create(&a, NULL, writer_a, &h), 0);
    pthread_mutex_lock(&h.mu);
    while (!h.holding) pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    assert_int_equal(pthread_create(&b, NULL, writer_b, &h), 0);
    for (int i = 0; i < 5000 && !(h.b_tid && thread_asleep(h.b_tid)); i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    assert_true(h.b_tid && thread_asleep(h.b_tid)); /* B waits for A's transaction */
    assert_int_equal(head_of(fx->store), 0);        /* A has not committed */
    pthread_mutex_lock(&h.mu);
    h.release = 1;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    assert_int_equal(h.b_rc, CAIRN_ECONDITION); /* B saw A's commit */
    assert_int_equal(h.b_pos, 1);
    assert_int_equal(head_of(fx->store), 1);
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
}

/* A query reads the index of its rarest tag: cursor steps (counted by the test's wrapper
 * of mdb_cursor_get) follow the matches, not the store. */
static void a_query_touches_only_its_rarest_tags_entries(void **state) {
    fixture *fx = *state;
    enum { N = 2000, B = 100 };
    static char names[N][16];
    cairn_slice tags[N][3];
    cairn_event_in ev[B];
    cairn_append_result r;
    uint64_t got[N];
    long common_gets, rare_gets, unique_gets;
    for (int b = 0; b < N / B; b++) {
        for (int i = 0; i < B; i++) {
            int k = b * B + i, n = 0;
            snprintf(names[k], sizeof names[k], "u-%d", k);
            tags[k][n].ptr = names[k], tags[k][n++].len = strlen(names[k]);
            tags[k][n].ptr = "common", tags[k][n++].len = 6;
            if (k % 200 == 7) tags[k][n].ptr = "rare", tags[k][n++].len = 4;
            ev[i] = ev_make("T", "{}");
            ev[i].tags = tags[k], ev[i].ntags = (size_t)n;
        }
        CHECK_OK(cairn_append(fx->store, "t", 1, CAIRN_ANY, ev, B, &r));
    }
    {
        cairn_slice both[] = {S("common"), S("rare")}, one[] = {S("common")}, u[] = {S("u-1234")};
        cairn_query_item ib = {NULL, 0, both, 2}, io = {NULL, 0, one, 1}, iu = {NULL, 0, u, 1};
        cairn_query qb = {&ib, 1}, qo = {&io, 1}, qu = {&iu, 1};
        fault_disarm();
        assert_int_equal(positions(fx->store, &qb, 0, 0, 0, got, N, NULL), 10);
        rare_gets = fault_calls(FAULT_GET);
        fault_disarm();
        assert_int_equal(positions(fx->store, &qu, 0, 0, 0, got, N, NULL), 1);
        unique_gets = fault_calls(FAULT_GET);
        assert_int_equal(got[0], 1235);
        fault_disarm();
        assert_int_equal(positions(fx->store, &qo, 0, 0, 0, got, N, NULL), N);
        common_gets = fault_calls(FAULT_GET);
    }
    /* a handful of steps per match, not per event of the store */
    if (rare_gets > 10 * 8 || unique_gets > 20 || common_gets < N)
        fail_msg("cursor steps: common,rare %ld, one unique tag %ld, common %ld", rare_gets,
                 unique_gets, common_gets);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(items_and_queries_match_as_specified, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(a_query_yields_nothing_after_its_head, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(
            a_forward_read_cut_by_its_limit_is_complete_up_to_its_last_event, fx_setup,
            fx_teardown),
        cmocka_unit_test_setup_teardown(the_empty_store_has_head_zero_and_no_events, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(lifecycle_and_removed_events_never_match, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(a_failed_condition_names_positions_and_writes_nothing,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(
            conditions_see_earlier_requests_and_follow_the_expected_version, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(bad_conditions_are_refused_before_writing, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(queries_agree_with_a_brute_force_filter, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(a_condition_is_checked_under_the_writer_lock, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(a_query_touches_only_its_rarest_tags_entries, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
