/*
 * read.c -- reading: iterators over the global log (plain or filtered through the
 * posting indexes) and over one stream, point reads, and the stream listing.
 *
 * An iterator never keeps an LMDB snapshot between refills: each refill opens a read
 * transaction, copies a page of verified records into the iterator's buffer, and ends
 * the transaction, so an idle or abandoned iterator pins no pages.
 */
#include <stdlib.h>

#include "storage.h"

#define PAGE_EVENTS 512
#define PAGE_BYTES (1u << 20)
#define PAGE_CANDIDATES 4096 /* postings examined per refill, matching or not */

enum { IT_LOG, IT_STREAM, IT_POSTINGS };

/* One sorted source of positions: a posting list, or a stream's (version, position)
 * dups. */
typedef struct source {
    MDB_dbi dbi;
    uint8_t key[CAIRN_POST_KEY];
    size_t keylen;
    int is_stream;   /* dups are (version, position) instead of positions */
    MDB_cursor *cur; /* valid during one refill */
    uint64_t pos;    /* current candidate; 0 when exhausted */
} source;

/* The iterator's copy of its filter (cairn__filter_dup), its lists by index. */
typedef struct filter_copy {
    const cairn_slice *v[4];
    size_t n[4];
    void *mem;
} filter_copy;

enum { F_TYPES, F_CATEGORIES, F_STREAMS, F_TAGS };

struct cairn_iter {
    cairn_env *env;
    int kind;
    int backwards;
    int done;
    int planned;
    uint64_t next;      /* next position (log/postings) to consider */
    int64_t next_ver;   /* IT_STREAM: next version */
    uint64_t remaining; /* events still allowed by the limit */
    uint8_t *stream;    /* IT_STREAM: the name */
    size_t stream_len;
    filter_copy f;
    filter_copy *items; /* a query's items (cairn_iter_query): an event matching any is kept */
    size_t nitems;
    int query;     /* a query: its items, not `f`, decide */
    uint64_t hi;   /* no event after this position is yielded (0: no bound) */
    uint64_t last; /* the position of the last event yielded (cairn_iter_head) */
    int limited;   /* a limit was given */
    source *src;
    size_t nsrc;
    int complete; /* IT_POSTINGS over stream indexes, which the index tail never lacks */
    /* the page */
    cairn_buf page; /* the records, back to back */
    size_t *offs;   /* record i spans offs[i]..offs[i+1] of page */
    uint64_t *poss;
    uint8_t *pend; /* record i's key id was in kpend at the refill (forgotten; keys.c) */
    size_t count, at, cap;
    /* the transform on read (cairn_hooks.read_*): the opening handle's script limits, the
     * hooks' state, and whether it had work at the last refill */
    int raw;
    cairn_script_limits lim;
    void *xform;
    int xform_on;
    MDB_txn *ext;        /* cairn__iter_bind_txn: refills read through this txn (projections) */
    cairn_life_view *lv; /* log reads: what the lifecycle rules hide (made when any does) */
    int life_on;         /* ... this refill: some stream has a lifecycle entry */
    int64_t now;         /* IT_STREAM with has_life: the clock of this refill */
    cairn_life life;     /* IT_STREAM: the stream's lifecycle entry (has_life) */
    int has_life;
    MDB_txn *rtxn;            /* the txn of the refill under way */
    int kpend;                /* during a refill: some key id is in kpend (keys.c) */
    uintptr_t map_lo, map_hi; /* used part of the map during a refill (cairn__map_bounds) */
};

void cairn__iter_bind_txn(cairn_iter *it, MDB_txn *txn) { it->ext = txn; }

void cairn_iter_set_raw(cairn_iter *it, int raw) { it->raw = raw != 0; }

int cairn_iter_upcasting(const cairn_iter *it) { return !it->raw && it->xform_on; }

/* Keeps a transform state current with the store (in a read txn). */
static int xform_prepare(cairn_env *e, MDB_txn *txn, void **state, int *on) {
    const cairn_hooks *hk = e->hooks;
    if (!hk || !hk->read_prepare) {
        *on = 0;
        return CAIRN_OK;
    }
    return hk->read_prepare(e, txn, state, on);
}

static void xform_free(const cairn_hooks *hk, void *state) {
    if (state && hk && hk->read_free) hk->read_free(state);
}

size_t cairn_iter_buffered(const cairn_iter *it) { return it->count - it->at; }

static int buf_add(cairn_iter *it, const void *rec, size_t len, uint64_t pos, int pending) {
    if (it->count + 1 >= it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 64;
        size_t *o = realloc(it->offs, (cap + 1) * sizeof *o);
        uint64_t *p;
        uint8_t *pd;
        if (!o) return cairn__fail(CAIRN_ENOMEM, "out of memory");
        it->offs = o;
        if (!(p = realloc(it->poss, cap * sizeof *p)))
            return cairn__fail(CAIRN_ENOMEM, "out of memory");
        it->poss = p;
        if (!(pd = realloc(it->pend, cap))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
        it->pend = pd;
        it->cap = cap;
    }
    it->pend[it->count] = (uint8_t)pending;
    /* the first page is given 64 KiB at once: one allocation for a usual page */
    if ((!it->page.cap && cairn_buf_reserve(&it->page, 65536)) ||
        cairn_buf_append(&it->page, rec, len))
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    it->offs[it->count] = it->page.len - len;
    it->poss[it->count] = pos;
    it->count++;
    it->offs[it->count] = it->page.len;
    return CAIRN_OK;
}

static int page_full(const cairn_iter *it) {
    return it->count >= PAGE_EVENTS || it->page.len >= PAGE_BYTES || it->count >= it->remaining;
}

/* ---------------------------------------------------------------------------------
 * Filters
 * --------------------------------------------------------------------------------- */
static int slice_in(const cairn_slice *set, size_t n, const void *p, size_t len) {
    for (size_t i = 0; i < n; i++)
        if (set[i].len == len && memcmp(set[i].ptr, p, len) == 0) return 1;
    return 0;
}

static int has_tag(const cairn_event *ev, const cairn_slice *want) {
    size_t cur = 0;
    cairn_slice t;
    while (cairn_event_tag(ev, &cur, &t))
        if (t.len == want->len && memcmp(t.ptr, want->ptr, t.len) == 0) return 1;
    return 0;
}

/* Postings are keyed by digests, so every candidate is checked against the filter. */
static int matches(const filter_copy *f, const cairn_event *ev) {
    if (f->n[F_TYPES] && !slice_in(f->v[F_TYPES], f->n[F_TYPES], ev->type.ptr, ev->type.len))
        return 0;
    if (f->n[F_CATEGORIES]) {
        cairn_slice c = cairn_category(ev->stream.ptr, ev->stream.len);
        if (!slice_in(f->v[F_CATEGORIES], f->n[F_CATEGORIES], c.ptr, c.len)) return 0;
    }
    if (f->n[F_STREAMS] &&
        !slice_in(f->v[F_STREAMS], f->n[F_STREAMS], ev->stream.ptr, ev->stream.len))
        return 0;
    for (size_t i = 0; i < f->n[F_TAGS]; i++)
        if (!has_tag(ev, &f->v[F_TAGS][i])) return 0;
    return 1;
}

/* The iterator's test of a candidate: its filter, or any item of its query. */
static int it_matches(const cairn_iter *it, const cairn_event *ev) {
    if (!it->query) return matches(&it->f, ev);
    if (!it->nitems) return 1; /* a query of no items: every event */
    for (size_t i = 0; i < it->nitems; i++)
        if (matches(&it->items[i], ev)) return 1;
    return 0;
}

/* An event of a '$' stream is read over the log only when the filter names its stream or
 * its category (spec 6). */
static int dollar_named(const filter_copy *f, const cairn_event *ev) {
    cairn_slice c;
    if (slice_in(f->v[F_STREAMS], f->n[F_STREAMS], ev->stream.ptr, ev->stream.len)) return 1;
    c = cairn_category(ev->stream.ptr, ev->stream.len);
    return slice_in(f->v[F_CATEGORIES], f->n[F_CATEGORIES], c.ptr, c.len);
}

/* One allocation holding every slice of `in` and their bytes (storage.h). */
int cairn__filter_dup(const cairn_filter *in, cairn_filter *out, void **mem) {
    const cairn_slice *lists[4];
    size_t counts[4], total = 0, bytes = 0, i, j;
    cairn_slice *sl;
    char *p;

    memset(out, 0, sizeof *out);
    *mem = NULL;
    if (!in) return CAIRN_OK;
    lists[0] = in->types, counts[0] = in->ntypes;
    lists[1] = in->categories, counts[1] = in->ncategories;
    lists[2] = in->streams, counts[2] = in->nstreams;
    lists[3] = in->tags, counts[3] = in->ntags;
    for (i = 0; i < 4; i++) {
        if (counts[i] && !lists[i]) return cairn__fail(CAIRN_EINVAL, "filter: NULL list");
        total += counts[i];
        for (j = 0; j < counts[i]; j++) bytes += lists[i][j].len;
    }
    if (!total) return CAIRN_OK;
    if (!(*mem = malloc(total * sizeof(cairn_slice) + bytes + 1)))
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    sl = *mem;
    p = (char *)(sl + total);
    for (i = 0; i < 4; i++) {
        cairn_slice *first = sl;
        for (j = 0; j < counts[i]; j++, sl++) {
            if (lists[i][j].len) memcpy(p, lists[i][j].ptr, lists[i][j].len);
            sl->ptr = p, sl->len = lists[i][j].len;
            p += lists[i][j].len;
        }
        switch (i) {
        case 0: out->types = first, out->ntypes = counts[i]; break;
        case 1: out->categories = first, out->ncategories = counts[i]; break;
        case 2: out->streams = first, out->nstreams = counts[i]; break;
        default: out->tags = first, out->ntags = counts[i]; break;
        }
    }
    return CAIRN_OK;
}

static int filter_copy_init(filter_copy *f, const cairn_filter *in) {
    cairn_filter c;
    int rc;

    memset(f, 0, sizeof *f);
    if ((rc = cairn__filter_dup(in, &c, &f->mem))) return rc;
    f->v[F_TYPES] = c.types, f->n[F_TYPES] = c.ntypes;
    f->v[F_CATEGORIES] = c.categories, f->n[F_CATEGORIES] = c.ncategories;
    f->v[F_STREAMS] = c.streams, f->n[F_STREAMS] = c.nstreams;
    f->v[F_TAGS] = c.tags, f->n[F_TAGS] = c.ntags;
    return CAIRN_OK;
}

/* Picks the index of one filter that yields the fewest candidates: all categories, all
 * types, all streams (their union is needed), or the single rarest tag (tags combine with
 * AND).  *best_k 4: none (the filter has no list). */
static int plan_pick(cairn_iter *it, MDB_txn *txn, MDB_cursor *c, const filter_copy *f,
                     size_t *best_k, size_t *best_tag, size_t *best_cost) {
    int rc;
    *best_k = 4, *best_cost = (size_t)-1, *best_tag = 0;
    for (int k = 0; k < 4; k++) {
        size_t cost = 0, tag_min = (size_t)-1, tag_at = 0;
        if (!f->n[k]) continue;
        for (size_t i = 0; i < f->n[k]; i++) {
            size_t cnt = 0;
            if (k == F_STREAMS) {
                cairn_stream_info si;
                if ((rc = cairn__stream_lookup(it->env, txn, f->v[k][i].ptr, f->v[k][i].len, &si)))
                    return rc;
                cnt = si.exists ? (size_t)(si.version + 1) : 0;
            } else {
                uint8_t kb[CAIRN_POST_KEY];
                MDB_val key = {CAIRN_POST_KEY, kb}, val;
                int kind = k == F_TYPES ? CAIRN_POST_TYPE
                    : k == F_TAGS       ? CAIRN_POST_TAG
                                        : CAIRN_POST_CATEGORY;
                cairn__post_key(kind, f->v[k][i].ptr, f->v[k][i].len, kb);
                rc = mdb_cursor_get(c, &key, &val, MDB_SET);
                if (rc == 0)
                    rc = mdb_cursor_count(c, &cnt);
                else if (rc == MDB_NOTFOUND)
                    rc = 0;
                if (rc) return cairn__mdb_fail(rc, "plan");
            }
            if (k == F_TAGS) {
                if (cnt < tag_min) tag_min = cnt, tag_at = i;
            } else {
                cost += cnt;
            }
        }
        if (k == F_TAGS) cost = tag_min;
        if (cost < *best_cost) *best_cost = cost, *best_k = (size_t)k, *best_tag = tag_at;
    }
    return CAIRN_OK;
}

/* Adds the sources of filter f's chosen index (plan_pick) to the iterator's. */
static int plan_add(cairn_iter *it, MDB_txn *txn, const filter_copy *f, size_t best_k,
                    size_t best_tag) {
    size_t n = best_k == F_TAGS ? 1 : f->n[best_k];
    source *more = realloc(it->src, (it->nsrc + n) * sizeof *more);
    int rc;
    if (!more) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    it->src = more;
    for (size_t i = 0; i < n; i++) {
        const cairn_slice *name = &f->v[best_k][best_k == F_TAGS ? best_tag : i];
        source *s = &it->src[it->nsrc];
        memset(s, 0, sizeof *s);
        if (best_k == F_STREAMS) {
            cairn_stream_info si;
            if ((rc = cairn__stream_lookup(it->env, txn, name->ptr, name->len, &si))) return rc;
            if (!si.exists) continue;
            s->dbi = it->env->sidx, s->is_stream = 1, s->keylen = 8;
            cairn__put_be64(s->key, si.sid);
        } else {
            int kind = best_k == F_TYPES ? CAIRN_POST_TYPE
                : best_k == F_TAGS       ? CAIRN_POST_TAG
                                         : CAIRN_POST_CATEGORY;
            s->dbi = it->env->post, s->keylen = CAIRN_POST_KEY;
            cairn__post_key(kind, name->ptr, name->len, s->key);
        }
        it->nsrc++;
    }
    return CAIRN_OK;
}

/* Chooses the sources of a filtered read, or of a query: each item's cheapest index, their
 * candidates merged (an item without lists reads the whole log).  A plan whose indexes
 * hold nothing reads only the index tail, or nothing. */
static int plan(cairn_iter *it, MDB_txn *txn) {
    size_t k, tag, cost, total = 0;
    size_t nf = it->query ? it->nitems : 1;
    int rc;
    MDB_cursor *c;

    if ((rc = mdb_cursor_open(txn, it->env->post, &c))) return cairn__mdb_fail(rc, "plan");
    it->complete = 1;
    for (size_t i = 0; i < nf; i++) {
        const filter_copy *f = it->query ? &it->items[i] : &it->f;
        if ((rc = plan_pick(it, txn, c, f, &k, &tag, &cost))) goto out;
        if (k == 4) { /* matches every event: the log it is */
            it->kind = IT_LOG;
            goto out;
        }
        it->complete &= k == F_STREAMS;
        total += cost;
        if (cost && (rc = plan_add(it, txn, f, k, tag))) goto out;
    }
    it->kind = IT_POSTINGS;
    if (total == 0) {
        uint64_t t = 0;
        /* nothing indexed yet; the index tail may still hold matches */
        if (!it->complete && (rc = cairn__tail_start(it->env, txn, &t))) goto out;
        if (!t) it->done = 1;
    }
out:
    mdb_cursor_close(c);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Sources: seek to the first position >= (forwards) or <= (backwards) a target.
 * --------------------------------------------------------------------------------- */
static uint64_t dup_pos(const source *s, const MDB_val *v) {
    return cairn__get_be64((const uint8_t *)v->mv_data + (s->is_stream ? 8 : 0));
}

/* Stream dups are ordered by version; positions grow with versions, so a binary search
 * over versions finds a position. */
static int stream_seek(source *s, uint64_t target, int backwards) {
    MDB_val k = {8, s->key}, v;
    uint8_t vb[16];
    int64_t lo, hi;
    int rc;

    s->pos = 0;
    if ((rc = mdb_cursor_get(s->cur, &k, &v, MDB_SET))) return rc == MDB_NOTFOUND ? 0 : rc;
    if ((rc = mdb_cursor_get(s->cur, &k, &v, MDB_FIRST_DUP))) return rc;
    lo = (int64_t)cairn__get_be64(v.mv_data);
    if ((rc = mdb_cursor_get(s->cur, &k, &v, MDB_LAST_DUP))) return rc;
    hi = (int64_t)cairn__get_be64(v.mv_data);
    /* find the first version whose position >= target (or last <= target) */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + (backwards ? 1 : 0)) / 2;
        uint64_t p;
        cairn__put_be64(vb, (uint64_t)mid);
        memset(vb + 8, 0, 8);
        v.mv_size = 16, v.mv_data = vb;
        if ((rc = mdb_cursor_get(s->cur, &k, &v, MDB_GET_BOTH_RANGE))) return rc;
        p = cairn__get_be64((uint8_t *)v.mv_data + 8);
        mid = (int64_t)cairn__get_be64(v.mv_data);
        if (!backwards) {
            if (p >= target)
                hi = mid;
            else
                lo = mid + 1;
        } else {
            if (p <= target)
                lo = mid;
            else
                hi = mid - 1;
        }
    }
    cairn__put_be64(vb, (uint64_t)lo);
    memset(vb + 8, 0, 8);
    v.mv_size = 16, v.mv_data = vb;
    if ((rc = mdb_cursor_get(s->cur, &k, &v, MDB_GET_BOTH_RANGE)))
        return rc == MDB_NOTFOUND ? 0 : rc;
    s->pos = cairn__get_be64((uint8_t *)v.mv_data + 8);
    if (backwards ? s->pos > target : s->pos < target) s->pos = 0;
    return 0;
}

static int source_seek(source *s, uint64_t target, int backwards) {
    MDB_val k = {s->keylen, s->key}, v;
    uint8_t vb[8];
    int rc;

    if (s->is_stream) return stream_seek(s, target, backwards);
    s->pos = 0;
    cairn__put_be64(vb, target);
    v.mv_size = 8, v.mv_data = vb;
    rc = mdb_cursor_get(s->cur, &k, &v, MDB_GET_BOTH_RANGE);
    if (!backwards) {
        if (rc == 0) s->pos = dup_pos(s, &v);
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    if (rc == 0) {
        if (dup_pos(s, &v) <= target) {
            s->pos = dup_pos(s, &v);
            return 0;
        }
        rc = mdb_cursor_get(s->cur, &k, &v, MDB_PREV_DUP);
    } else if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(s->cur, &k, &v, MDB_SET);
        if (rc == 0) rc = mdb_cursor_get(s->cur, &k, &v, MDB_LAST_DUP);
    }
    if (rc == 0) s->pos = dup_pos(s, &v);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int source_step(source *s, int backwards) {
    MDB_val k, v;
    int rc = mdb_cursor_get(s->cur, &k, &v, backwards ? MDB_PREV_DUP : MDB_NEXT_DUP);
    s->pos = rc == 0 ? dup_pos(s, &v) : 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---------------------------------------------------------------------------------
 * Refills
 * --------------------------------------------------------------------------------- */
/* Copies a record into the page.  A damaged record ends the page before it (returning
 * STOP) so that the reader gets every good event up to the damage; the error comes when
 * the reader reaches it. */
#define STOP 1

/* LMDB does not checksum its tree: what it hands back is checked before it is trusted --
 * the value lies in the file (own read txns only), the record decodes at its key, and a
 * stream read's record is the stream's event of version `ver` (-1: not a stream read). */
static int take(cairn_iter *it, MDB_txn *txn, const MDB_val *v, uint64_t pos, int check,
                int64_t ver) {
    cairn_event ev;
    int pending;
    int rc;
    if (it->hi && !it->backwards && pos > it->hi) { /* a query's bound: its head */
        it->done = 1;
        return STOP;
    }
    rc = cairn__val_check(it->map_lo, it->map_hi, v, pos);
    if (rc == CAIRN_OK) rc = cairn__record_decode(v->mv_data, v->mv_size, pos, &ev);
    if (rc == CAIRN_OK && ver >= 0 &&
        (ev.version != ver || ev.stream.len != it->stream_len ||
         memcmp(ev.stream.ptr, it->stream, it->stream_len) != 0))
        rc =
            cairn__corrupt(pos, "the stream index points at an event of another stream or version");
    if (rc == CAIRN_OK && ver < 0) {
        /* reads over the log skip the store's own streams unless the filter names them
         * (spec 6), and every event the lifecycle rules removed */
        if (ev.stream.len && *(const char *)ev.stream.ptr == '$' && !dollar_named(&it->f, &ev))
            return CAIRN_OK;
        if (it->life_on && (rc = cairn__life_view_hides(it->env, txn, it->lv, &ev)) == 1)
            return CAIRN_OK;
    } else if (rc == CAIRN_OK && it->has_life &&
               cairn__life_hides(&it->life, ev.version, ev.timestamp, it->now)) {
        return CAIRN_OK;
    }
    if (rc) return it->count ? STOP : rc;
    if (check && !it_matches(it, &ev)) return CAIRN_OK;
    /* a forgotten key is known from LMDB now, while the refill's txn is open */
    pending = 0;
    if (it->kpend && (rc = cairn__event_pending(it->env, it->rtxn, &ev, &pending)))
        return it->count ? STOP : rc;
    return buf_add(it, v->mv_data, v->mv_size, pos, pending);
}

/* Walks the log from it->next; `check`: only records matching the filter are kept.
 * Backwards, the walk stops before position `lo`. */
static int refill_log(cairn_iter *it, MDB_txn *txn, int check, uint64_t lo) {
    MDB_cursor *c;
    MDB_val k, v;
    uint8_t kb[8];
    int rc;

    if ((rc = mdb_cursor_open(txn, it->env->log, &c))) return cairn__mdb_fail(rc, "read log");
    cairn__put_be64(kb, it->next);
    k.mv_size = 8, k.mv_data = kb;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (it->backwards) {
        if (rc == MDB_NOTFOUND) {
            rc = mdb_cursor_get(c, &k, &v, MDB_LAST); /* started past the end */
            if (rc == 0 && k.mv_size == 8) it->next = cairn__get_be64(k.mv_data);
        } else if (rc == 0 && cairn__get_be64(k.mv_data) > it->next) {
            rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
        }
    }
    while (rc == 0) {
        uint64_t pos = k.mv_size == 8 ? cairn__get_be64(k.mv_data) : 0;
        /* Positions are contiguous but for the holes removed events leave (lifecycle.c
         * records them): a key that is not the next one, over a gap that is no hole, means
         * a damaged tree skipped or invented records. */
        if (pos != it->next) {
            int hole = 0;
            if (it->backwards ? pos < it->next : pos > it->next)
                rc = it->backwards ? cairn__holes_cover(it->env, txn, pos + 1, it->next, &hole)
                                   : cairn__holes_cover(it->env, txn, it->next, pos - 1, &hole);
            if (rc) goto out;
            if (!hole) {
                rc = it->count
                    ? 0
                    : cairn__corrupt(it->next, "the log skips this position (damaged tree)");
                goto out;
            }
            it->next = pos;
            if (it->backwards && pos < lo) break; /* the tail's walk ends at its start */
        }
        if ((rc = take(it, txn, &v, pos, check, -1))) {
            if (rc == STOP) rc = 0;
            goto out;
        }
        if (it->backwards) {
            if (pos <= 1) {
                it->done = 1;
                break;
            }
            it->next = pos - 1;
            if (it->next < lo) break;
        } else {
            it->next = pos + 1;
        }
        if (page_full(it)) break;
        rc = mdb_cursor_get(c, &k, &v, it->backwards ? MDB_PREV : MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) it->done = 1, rc = 0;
    if (rc > 0) rc = cairn__mdb_fail(rc, "read log");
out:
    mdb_cursor_close(c);
    return rc;
}

/* Positions from the posting lists, then (forwards) or first (backwards) the index tail,
 * whose events are matched record by record. */
static int refill_postings(cairn_iter *it, MDB_txn *txn) {
    MDB_cursor *clog = NULL;
    size_t examined = 0, i;
    uint64_t tail = 0;
    int rc;

    if (!it->complete && (rc = cairn__tail_start(it->env, txn, &tail))) return rc;
    if (tail && it->next >= tail) return refill_log(it, txn, 1, tail);
    if ((rc = mdb_cursor_open(txn, it->env->log, &clog))) return cairn__mdb_fail(rc, "read");
    for (i = 0; i < it->nsrc; i++) {
        if ((rc = mdb_cursor_open(txn, it->src[i].dbi, &it->src[i].cur))) goto mdb_out;
        if ((rc = source_seek(&it->src[i], it->next, it->backwards))) goto mdb_out;
    }
    while (!page_full(it) && examined < PAGE_CANDIDATES) {
        uint64_t best = 0;
        uint8_t kb[8];
        MDB_val k = {8, kb}, v;
        for (i = 0; i < it->nsrc; i++) {
            uint64_t p = it->src[i].pos;
            if (p && (!best || (it->backwards ? p > best : p < best))) best = p;
        }
        if (!best) { /* past the indexed events: the tail is next */
            if (tail && !it->backwards)
                it->next = tail;
            else
                it->done = 1;
            break;
        }
        /* posting lists are sorted: a candidate behind the last one means damage */
        if (it->backwards ? best > it->next : best < it->next) {
            rc = cairn__corrupt(best, "an index lists positions out of order (damaged tree)");
            goto out;
        }
        for (i = 0; i < it->nsrc; i++) /* several sources may hold one position */
            if (it->src[i].pos == best && (rc = source_step(&it->src[i], it->backwards)))
                goto mdb_out;
        examined++;
        cairn__put_be64(kb, best);
        rc = mdb_cursor_get(clog, &k, &v, MDB_SET_KEY);
        if (rc == 0) {
            if ((rc = take(it, txn, &v, best, 1, -1))) {
                if (rc == STOP) rc = 0;
                goto out;
            }
        } else if (rc == MDB_NOTFOUND) {
            rc = cairn__corrupt(best, "an index points at a missing event");
            goto out;
        } else {
            goto mdb_out;
        }
        if (it->backwards) {
            if (best <= 1) {
                it->done = 1;
                break;
            }
            it->next = best - 1;
        } else {
            it->next = best + 1;
        }
    }
    rc = 0;
    goto out;
mdb_out:
    rc = cairn__mdb_fail(rc, "read index");
out:
    for (i = 0; i < it->nsrc; i++)
        if (it->src[i].cur) mdb_cursor_close(it->src[i].cur), it->src[i].cur = NULL;
    mdb_cursor_close(clog);
    return rc;
}

static int refill_stream(cairn_iter *it, MDB_txn *txn) {
    cairn_stream_info si;
    MDB_cursor *cs = NULL, *clog = NULL;
    uint8_t sk[8], vb[16];
    MDB_val k = {8, sk}, v;
    int rc, first_entry = 1;

    if ((rc = cairn__stream_lookup(it->env, txn, it->stream, it->stream_len, &si))) return rc;
    if (si.has_life && (si.life.flags & CAIRN__LF_DELETED))
        return cairn__fail(CAIRN_EDELETED, "stream %.*s was deleted (hard delete)",
                           (int)(it->stream_len > 200 ? 200 : it->stream_len),
                           (const char *)it->stream);
    if (!si.exists) {
        it->done = 1;
        return CAIRN_OK;
    }
    if (si.version < 0 && !si.has_life) /* entries are written with the stream's first event */
        return cairn__fail(
            CAIRN_ECORRUPT, "stream %.*s: its entry has no events indexed (damaged index)",
            (int)(it->stream_len > 200 ? 200 : it->stream_len), (const char *)it->stream);
    if ((it->has_life = si.has_life)) { /* removed versions are skipped (spec 6) */
        it->life = si.life;
        it->now = cairn__now_ns();
        if (!it->backwards && it->next_ver < si.life.first) it->next_ver = si.life.first;
    }
    if (it->next_ver < 0 || (it->backwards && it->next_ver > si.version)) {
        it->next_ver = si.version; /* start at the end, backwards */
    } else if (it->next_ver > si.version) {
        it->done = 1;
        return CAIRN_OK;
    }
    if (si.has_life && it->next_ver < si.life.first) { /* backwards, into the removed ones */
        it->done = 1;
        return CAIRN_OK;
    }
    if ((rc = mdb_cursor_open(txn, it->env->sidx, &cs)) ||
        (rc = mdb_cursor_open(txn, it->env->log, &clog)))
        goto mdb_out;
    cairn__put_be64(sk, si.sid);
    cairn__put_be64(vb, (uint64_t)it->next_ver);
    memset(vb + 8, 0, 8);
    v.mv_size = 16, v.mv_data = vb;
    rc = mdb_cursor_get(cs, &k, &v, MDB_GET_BOTH_RANGE);
    if (it->backwards) {
        if (rc == 0 && (int64_t)cairn__get_be64(v.mv_data) > it->next_ver)
            rc = mdb_cursor_get(cs, &k, &v, MDB_PREV_DUP);
        else if (rc == MDB_NOTFOUND) {
            rc = mdb_cursor_get(cs, &k, &v, MDB_SET);
            if (rc == 0) rc = mdb_cursor_get(cs, &k, &v, MDB_LAST_DUP);
        }
    }
    while (rc == 0) {
        int64_t ver = (int64_t)cairn__get_be64(v.mv_data);
        uint64_t pos = cairn__get_be64((uint8_t *)v.mv_data + 8);
        uint8_t pk[8];
        MDB_val lk = {8, pk}, lv;
        /* versions are gapless, but for the oldest ones reclaimed (lifecycle.c) */
        if (ver != it->next_ver &&
            !(si.has_life && !it->backwards && ver > it->next_ver && first_entry)) {
            rc = cairn__corrupt(pos, "the stream index skips a version (damaged tree)");
            goto out;
        }
        if (si.has_life && it->backwards && ver < si.life.first) {
            it->done = 1;
            break;
        }
        first_entry = 0;
        it->next_ver = ver;
        cairn__put_be64(pk, pos);
        rc = mdb_cursor_get(clog, &lk, &lv, MDB_SET_KEY);
        if (rc == 0) {
            if ((rc = take(it, txn, &lv, pos, 0, ver))) {
                if (rc == STOP) rc = 0;
                goto out;
            }
        } else if (rc == MDB_NOTFOUND) {
            rc = cairn__corrupt(pos, "the stream index points at a missing event");
            goto out;
        } else {
            goto mdb_out;
        }
        if (it->backwards) {
            if (ver <= 0) {
                it->done = 1;
                break;
            }
            it->next_ver = ver - 1;
        } else {
            it->next_ver = ver + 1;
        }
        if (page_full(it)) break;
        rc = mdb_cursor_get(cs, &k, &v, it->backwards ? MDB_PREV_DUP : MDB_NEXT_DUP);
    }
    if (rc == MDB_NOTFOUND) it->done = 1, rc = 0;
    if (rc == 0) goto out;
mdb_out:
    rc = cairn__mdb_fail(rc, "read stream");
out:
    if (clog) mdb_cursor_close(clog);
    if (cs) mdb_cursor_close(cs);
    return rc;
}

static int refill(cairn_iter *it) {
    MDB_txn *txn;
    int rc;

    it->count = it->at = it->page.len = 0;
    if (it->ext)
        txn = it->ext;
    else if ((rc = cairn__read_begin(it->env, &txn)))
        return rc;
    if (!it->planned) {
        it->planned = 1;
        if (it->kind == IT_POSTINGS && (rc = plan(it, txn))) goto out;
        if (it->backwards && it->next == 0 && it->kind != IT_STREAM) {
            if ((rc = cairn__head(it->env, txn, &it->next))) goto out;
            if (it->next == 0) it->done = 1;
        }
    }
    if (!it->raw && (rc = xform_prepare(it->env, txn, &it->xform, &it->xform_on))) goto out;
    if (it->done) goto out;
    if (it->kind != IT_STREAM) {
        if ((rc = cairn__life_on(it->env, txn, !it->ext, &it->life_on))) goto out;
        if (it->life_on && !it->lv && !(it->lv = calloc(1, sizeof *it->lv))) {
            rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
            goto out;
        }
        if (it->life_on && (rc = cairn__life_view_begin(it->env, txn, !it->ext, it->lv))) goto out;
    }
    if (it->ext)
        it->map_lo = 0, it->map_hi = UINTPTR_MAX; /* a write txn: no bounds */
    else
        cairn__map_bounds(it->env, txn, &it->map_lo, &it->map_hi);
    it->rtxn = txn;
    if ((rc = cairn__keys_pending_any(it->env, txn, &it->kpend))) goto out;
    switch (it->kind) {
    case IT_LOG: rc = refill_log(it, txn, it->query, 0); break;
    case IT_STREAM: rc = refill_stream(it, txn); break;
    default: rc = refill_postings(it, txn); break;
    }
out:
    if (!it->ext) cairn__read_end(it->env, txn);
    return rc;
}

int cairn_iter_next(cairn_iter *it, cairn_event *ev) {
    int rc;
    cairn__clear_error();
    if ((rc = cairn__env_check(it->env))) return rc; /* a child after fork(): not even the page */
    while (it->at >= it->count) {
        if (it->done || it->remaining == 0) return 0;
        if ((rc = refill(it))) {
            it->done = 1;
            return rc;
        }
    }
    /* take() verified the checksum as it copied the record from LMDB: the copy is parsed */
    rc = cairn__record_parse(it->page.p + it->offs[it->at], it->offs[it->at + 1] - it->offs[it->at],
                             it->poss[it->at], ev);
    /* sealed data opens in place: the page is this iterator's copy, decoded this once */
    if (rc == CAIRN_OK) rc = cairn__event_reveal(it->env, ev, it->pend[it->at], NULL);
    it->at++;
    if (rc) return rc;
    if (!it->raw && it->xform_on && !ev->forgotten &&
        (rc = it->env->hooks->read_transform(it->env, &it->lim, it->xform, ev)))
        return rc;
    it->remaining--;
    it->last = ev->position;
    return 1;
}

/* ---------------------------------------------------------------------------------
 * Construction
 * --------------------------------------------------------------------------------- */
static int iter_new(cairn_env *e, const cairn_script_limits *lim, int kind, int backwards,
                    uint64_t limit, cairn_iter **out) {
    cairn_iter *it = NULL;
    if (!(it = calloc(1, sizeof *it))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    it->env = e;
    it->lim = *lim;
    cairn__env_retain(e);
    it->kind = kind;
    it->backwards = backwards != 0;
    it->remaining = limit ? limit : UINT64_MAX;
    it->limited = limit != 0;
    *out = it;
    return CAIRN_OK;
}

int cairn__iter_all(cairn_env *e, const cairn_script_limits *lim, uint64_t start, int backwards,
                    uint64_t limit, const cairn_filter *filter, cairn_iter **out) {
    cairn_iter *it = NULL;
    int rc, any;
    cairn__clear_error();
    if ((rc = cairn__env_check(e))) return rc;
    if ((rc = iter_new(e, lim, IT_LOG, backwards, limit, &it))) return rc;
    if ((rc = filter_copy_init(&it->f, filter))) {
        cairn_iter_close(it);
        return rc;
    }
    any = it->f.n[0] || it->f.n[1] || it->f.n[2] || it->f.n[3];
    it->kind = any ? IT_POSTINGS : IT_LOG;
    it->next = start ? start : (backwards ? 0 : 1);
    *out = it;
    return CAIRN_OK;
}

int cairn_iter_all(cairn_store *s, uint64_t start, int backwards, uint64_t limit,
                   const cairn_filter *filter, cairn_iter **out) {
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    return cairn__iter_all(s->env, &s->lim, start, backwards, limit, filter, out);
}

int cairn__iter_query(cairn_env *e, const cairn_script_limits *lim, const cairn_query *q,
                      uint64_t start, int backwards, uint64_t limit, uint64_t hi,
                      cairn_iter **out) {
    cairn_iter *it = NULL;
    int rc;
    if (!q) return cairn__fail(CAIRN_EINVAL, "query: NULL");
    if (q->nitems && !q->items) return cairn__fail(CAIRN_EINVAL, "query: items: NULL");
    if ((rc = cairn__env_check(e))) return rc;
    if ((rc = iter_new(e, lim, IT_POSTINGS, backwards, limit, &it))) return rc;
    it->query = 1, it->hi = hi;
    if (q->nitems && !(it->items = calloc(q->nitems, sizeof *it->items))) {
        cairn_iter_close(it);
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < q->nitems; i++) {
        cairn_filter f;
        memset(&f, 0, sizeof f);
        f.types = q->items[i].types, f.ntypes = q->items[i].ntypes;
        f.tags = q->items[i].tags, f.ntags = q->items[i].ntags;
        it->nitems = i + 1;
        if ((rc = filter_copy_init(&it->items[i], &f))) {
            cairn_iter_close(it);
            return rc;
        }
    }
    if (!q->nitems) it->kind = IT_LOG; /* no item: every event */
    it->next = start ? start : (backwards ? 0 : 1);
    if (backwards && hi && (it->next == 0 || it->next > hi)) it->next = hi;
    *out = it;
    return CAIRN_OK;
}

int cairn_iter_query(cairn_store *s, const cairn_query *q, uint64_t start, int backwards,
                     uint64_t limit, cairn_iter **out, uint64_t *head) {
    MDB_txn *txn;
    uint64_t h = 0;
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!out) return cairn__fail(CAIRN_EINVAL, "out: NULL");
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    rc = cairn__head(s->env, txn, &h);
    cairn__read_end(s->env, txn);
    if (rc) return rc;
    if ((rc = cairn__iter_query(s->env, &s->lim, q, start, backwards, limit, h, out))) return rc;
    if (h == 0) (*out)->done = 1; /* an empty store: nothing up to its head */
    if (head) *head = h;
    return CAIRN_OK;
}

uint64_t cairn_iter_head(const cairn_iter *it) {
    if (!it->query) return 0;
    /* a forward read its limit cut is complete only up to its last event (spec 5) */
    if (!it->backwards && it->limited && it->remaining == 0) return it->last;
    return it->hi;
}

int cairn__condition_check(cairn_env *e, MDB_txn *txn, const cairn_condition *c, size_t r) {
    static const cairn_script_limits no_limits;
    cairn_error *err;
    cairn_iter *it;
    uint64_t found[CAIRN_CONDITION_POSITIONS];
    size_t n = 0;
    int rc;
    if (c->after == UINT64_MAX) return CAIRN_OK; /* no position comes after it */
    if ((rc = cairn__iter_query(e, &no_limits, c->query, c->after + 1, 0, CAIRN_CONDITION_POSITIONS,
                                0, &it)))
        return rc;
    cairn__iter_bind_txn(it, txn);
    it->raw = 1; /* matching reads the stored events; nothing is decoded past them */
    while (n < CAIRN_CONDITION_POSITIONS && !it->done) {
        if ((rc = refill(it))) break;
        for (size_t i = 0; i < it->count && n < CAIRN_CONDITION_POSITIONS; i++)
            found[n++] = it->poss[i];
        it->remaining = CAIRN_CONDITION_POSITIONS - n;
    }
    cairn_iter_close(it);
    if (rc) return rc;
    if (!n) return CAIRN_OK;
    if (c->after)
        rc = cairn__fail(CAIRN_ECONDITION,
                         "append condition failed: an event the query matches was appended "
                         "after position %llu (at position %llu)",
                         (unsigned long long)c->after, (unsigned long long)found[0]);
    else
        rc = cairn__fail(CAIRN_ECONDITION,
                         "append condition failed: an event the query matches exists (at "
                         "position %llu)",
                         (unsigned long long)found[0]);
    err = cairn__err();
    err->request = r;
    memcpy(err->positions, found, n * sizeof *found);
    err->npositions = n;
    return rc;
}

int cairn_iter_stream(cairn_store *s, const char *stream, size_t stream_len, int64_t start,
                      int backwards, uint64_t limit, cairn_iter **out) {
    cairn_iter *it = NULL;
    int rc;
    cairn__clear_error();
    if (!stream) return cairn__fail(CAIRN_EINVAL, "stream: NULL");
    if ((rc = cairn__check_stream_name(stream, stream_len, "stream"))) return rc; /* $ too */
    if (start < -1) return cairn__fail(CAIRN_EINVAL, "start: must be >= 0");
    if ((rc = cairn__store_check(s))) return rc;
    if ((rc = iter_new(s->env, &s->lim, IT_STREAM, backwards, limit, &it))) return rc;
    if (!(it->stream = malloc(stream_len))) {
        cairn_iter_close(it);
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    }
    memcpy(it->stream, stream, stream_len);
    it->stream_len = stream_len;
    it->next_ver = start >= 0 ? start : (backwards ? -1 : 0);
    *out = it;
    return CAIRN_OK;
}

void cairn_iter_close(cairn_iter *it) {
    if (!it) return;
    cairn__env_release(it->env);
    free(it->f.mem);
    for (size_t i = 0; i < it->nitems; i++) free(it->items[i].mem);
    free(it->items);
    free(it->src);
    free(it->lv);
    free(it->stream);
    cairn_buf_free(&it->page);
    free(it->offs);
    free(it->poss);
    free(it->pend);
    xform_free(it->env->hooks, it->xform);
    free(it);
}

/* ---------------------------------------------------------------------------------
 * Point reads
 * --------------------------------------------------------------------------------- */
static pthread_key_t g_get_key; /* this thread's copy of the record cairn_get returned */
static pthread_once_t g_get_once = PTHREAD_ONCE_INIT;
static void get_buf_free(void *p) {
    cairn_buf_free(p);
    free(p);
}

/* The transform state of this thread's point reads (events it returns point into it). */
typedef struct get_xform {
    const cairn_hooks *hooks;
    void *state;
} get_xform;

static pthread_key_t g_xform_key;
static void get_xform_free(void *p) {
    get_xform *g = p;
    xform_free(g->hooks, g->state);
    free(g);
}
static void get_key_init(void) {
    pthread_key_create(&g_get_key, get_buf_free);
    pthread_key_create(&g_xform_key, get_xform_free);
}

/* This thread's point-read transform state for environments with these hooks. */
static get_xform *get_xform_of(const cairn_hooks *hk) {
    get_xform *g = pthread_getspecific(g_xform_key);
    if (g && g->hooks != hk) {
        xform_free(g->hooks, g->state);
        g->hooks = hk, g->state = NULL;
    }
    if (!g && (g = calloc(1, sizeof *g))) {
        g->hooks = hk;
        pthread_setspecific(g_xform_key, g);
    }
    return g;
}

int cairn_get(cairn_store *s, uint64_t position, cairn_event *ev) {
    return cairn_get_ex(s, position, 0, ev);
}

int cairn_get_ex(cairn_store *s, uint64_t position, int raw, cairn_event *ev) {
    MDB_txn *txn;
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    cairn_buf *b;
    get_xform *g = NULL;
    int rc, on = 0, hidden = 0, pending = 0;

    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (position == 0) return cairn__fail(CAIRN_ENOTFOUND, "no event at position 0");
    pthread_once(&g_get_once, get_key_init);
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    cairn__put_be64(kb, position);
    rc = mdb_get(txn, s->env->log, &k, &v);
    if (rc == 0) {
        uintptr_t lo, hi;
        cairn__map_bounds(s->env, txn, &lo, &hi);
        rc = cairn__val_check(lo, hi, &v, position);
    }
    if (rc == 0) { /* an event the lifecycle rules removed is not there any more */
        cairn_event e0;
        int lon, lrc = cairn__record_decode(v.mv_data, v.mv_size, position, &e0); /* the sum */
        if (lrc == CAIRN_OK) lrc = cairn__life_on(s->env, txn, 1, &lon);
        if (lrc == CAIRN_OK && lon && (lrc = cairn__life_event_hidden(s->env, txn, &e0)) == 1)
            rc = MDB_NOTFOUND, hidden = 1;
        else if (lrc < 0) {
            cairn__read_end(s->env, txn);
            return lrc;
        }
    }
    if (rc) {
        uint64_t head = 0;
        int hole = 0;
        /* positions 1..head all exist but for holes: one the tree cannot find is damage */
        if (rc == MDB_NOTFOUND && !hidden && cairn__head(s->env, txn, &head) == CAIRN_OK &&
            position <= head &&
            cairn__holes_cover(s->env, txn, position, position, &hole) == CAIRN_OK && !hole)
            rc = cairn__corrupt(position, "missing from the log (damaged tree)");
        cairn__read_end(s->env, txn);
        if (rc == MDB_NOTFOUND)
            return cairn__fail(CAIRN_ENOTFOUND, "no event at position %llu",
                               (unsigned long long)position);
        return rc == CAIRN_ECORRUPT ? rc : cairn__mdb_fail(rc, "get");
    }
    if (!(b = pthread_getspecific(g_get_key)) && (b = calloc(1, sizeof *b)) &&
        pthread_setspecific(g_get_key, b))
        free(b), b = NULL;
    if (b) b->len = 0;
    if (!b || cairn_buf_append(b, v.mv_data, v.mv_size)) {
        cairn__read_end(s->env, txn);
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    }
    if (!raw && s->env->hooks && s->env->hooks->read_prepare)
        rc = (g = get_xform_of(s->env->hooks)) ? xform_prepare(s->env, txn, &g->state, &on)
                                               : cairn__fail(CAIRN_ENOMEM, "out of memory");
    /* decoded here so that the txn tells whether its key is being forgotten; the copy of
     * the record verified above is parsed */
    if (rc == CAIRN_OK) rc = cairn__record_parse(b->p, b->len, position, ev);
    if (rc == CAIRN_OK) rc = cairn__event_pending(s->env, txn, ev, &pending);
    cairn__read_end(s->env, txn);
    if (rc == CAIRN_OK) rc = cairn__event_reveal(s->env, ev, pending, NULL); /* b: our copy */
    if (rc == CAIRN_OK && on && !ev->forgotten)
        rc = s->env->hooks->read_transform(s->env, &s->lim, g->state, ev);
    return rc;
}

int cairn_head(cairn_store *s, uint64_t *out) {
    MDB_txn *txn;
    int rc;
    cairn__clear_error();
    *out = 0;
    if ((rc = cairn__store_check(s))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    rc = cairn__head(s->env, txn, out);
    cairn__read_end(s->env, txn);
    return rc;
}

int cairn_stream_version(cairn_store *s, const char *stream, size_t stream_len, int64_t *out) {
    MDB_txn *txn;
    cairn_stream_info si;
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!stream) return cairn__fail(CAIRN_EINVAL, "stream: NULL");
    if ((rc = cairn__check_stream_name(stream, stream_len, "stream"))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    rc = cairn__stream_lookup(s->env, txn, stream, stream_len, &si);
    if (rc == CAIRN_OK && si.has_life && !si.last_pos) {
        /* every event removed (or none yet): the lifecycle entry keeps the version */
    } else if (rc == CAIRN_OK && si.exists && si.version < 0) {
        rc = cairn__fail(CAIRN_ECORRUPT,
                         "stream %.*s: its entry has no events indexed (damaged index)",
                         (int)(stream_len > 200 ? 200 : stream_len), stream);
    } else if (rc == CAIRN_OK && si.exists) {
        /* the stream index's last entry is checked against the event it points at */
        uint8_t kb[8];
        MDB_val k = {8, kb}, v;
        uintptr_t lo, hi;
        cairn_event ev;
        int mrc;
        cairn__put_be64(kb, si.last_pos);
        cairn__map_bounds(s->env, txn, &lo, &hi);
        if ((mrc = mdb_get(txn, s->env->log, &k, &v)) == MDB_NOTFOUND)
            rc = cairn__corrupt(si.last_pos, "the stream index points at a missing event");
        else if (mrc)
            rc = cairn__mdb_fail(mrc, "stream version");
        else if (!(rc = cairn__val_check(lo, hi, &v, si.last_pos)) &&
                 !(rc = cairn__record_decode(v.mv_data, v.mv_size, si.last_pos, &ev)) &&
                 (ev.version != si.version || ev.stream.len != stream_len ||
                  memcmp(ev.stream.ptr, stream, stream_len) != 0))
            rc = cairn__corrupt(si.last_pos,
                                "the stream index points at an event of another stream or version");
    }
    cairn__read_end(s->env, txn);
    *out = si.version;
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Stream listing.  Keys of names past 480 bytes are a prefix plus a digest, so a run of
 * long names sharing their first 480 bytes is sorted by full name before it is listed.
 * --------------------------------------------------------------------------------- */
typedef struct name_ref {
    const uint8_t *p;
    size_t len;
} name_ref;

static int name_cmp(const void *a, const void *b) {
    const name_ref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

typedef struct lister {
    const uint8_t *prefix;
    size_t prefix_len;
    const uint8_t *after;
    size_t after_len;
    size_t max, emitted;
    cairn_name_fn fn;
    void *ctx;
    int stop;
} lister;

static void emit_name(lister *l, const uint8_t *p, size_t len) {
    name_ref a = {p, len}, b = {l->after, l->after_len};
    if (l->stop) return;
    if (len < l->prefix_len || memcmp(p, l->prefix, l->prefix_len) != 0) return;
    /* the store's own streams are listed only for a '$' prefix (spec 6) */
    if (len && p[0] == '$' && !(l->prefix_len && l->prefix[0] == '$')) return;
    if (l->after && name_cmp(&a, &b) <= 0) return;
    if (l->fn(l->ctx, (const char *)p, len) != 0 || ++l->emitted >= l->max) l->stop = 1;
}

int cairn_streams(cairn_store *s, const char *prefix, size_t prefix_len, const char *after,
                  size_t after_len, size_t max, cairn_name_fn fn, void *ctx) {
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    uint8_t start[CAIRN_STREAM_KEY_MAX];
    size_t slen, plen_key;
    name_ref *group = NULL;
    size_t ng = 0, gcap = 0;
    lister l = {(const uint8_t *)(prefix ? prefix : ""),
                prefix ? prefix_len : 0,
                (const uint8_t *)after,
                after ? after_len : 0,
                max ? max : (size_t)-1,
                0,
                fn,
                ctx,
                0};
    int rc;

    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!fn) return cairn__fail(CAIRN_EINVAL, "fn: NULL");
    /* start at the larger of the prefix and `after`, both cut to the inline key length */
    plen_key = l.prefix_len < CAIRN_STREAM_KEY_INLINE ? l.prefix_len : CAIRN_STREAM_KEY_INLINE;
    if (plen_key) memcpy(start, l.prefix, plen_key);
    slen = plen_key;
    if (l.after) {
        size_t alen = l.after_len < CAIRN_STREAM_KEY_INLINE ? l.after_len : CAIRN_STREAM_KEY_INLINE;
        name_ref a = {l.after, alen}, p = {start, slen};
        if (name_cmp(&a, &p) > 0) memcpy(start, l.after, alen), slen = alen;
    }
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    if ((rc = mdb_cursor_open(txn, s->env->streams, &c))) {
        cairn__read_end(s->env, txn);
        return cairn__mdb_fail(rc, "list streams");
    }
    k.mv_size = slen, k.mv_data = start;
    rc = slen ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0 && !l.stop) {
        const uint8_t *name = (const uint8_t *)v.mv_data + CAIRN_STREAM_VAL_HEADER;
        size_t nlen = v.mv_size - CAIRN_STREAM_VAL_HEADER;
        size_t cmp_len = k.mv_size < plen_key ? k.mv_size : plen_key;
        if (v.mv_size < CAIRN_STREAM_VAL_HEADER) {
            rc = cairn__fail(CAIRN_ECORRUPT, "corrupt stream entry");
            goto out;
        }
        { /* the name in the value must be the one the entry is filed under (LMDB does not
             * checksum its pages: a flipped byte in a name would list a stream that does
             * not exist) */
            uint8_t kk[CAIRN_STREAM_KEY_MAX];
            if (nlen == 0 || nlen > CAIRN_MAX_STREAM ||
                cairn__stream_key(name, nlen, kk) != k.mv_size ||
                memcmp(kk, k.mv_data, k.mv_size)) {
                rc = cairn__fail(CAIRN_ECORRUPT,
                                 "corrupt stream entry (its name does not match its key)");
                goto out;
            }
        }
        if (memcmp(k.mv_data, l.prefix, cmp_len) > 0) break; /* past the prefix */
        if (k.mv_size == CAIRN_STREAM_KEY_MAX && nlen > CAIRN_STREAM_KEY_INLINE) {
            if (ng && memcmp(group[0].p, name, CAIRN_STREAM_KEY_INLINE) != 0) {
                qsort(group, ng, sizeof *group, name_cmp);
                for (size_t i = 0; i < ng; i++) emit_name(&l, group[i].p, group[i].len);
                ng = 0;
                if (l.stop) break;
            }
            if (ng == gcap) {
                name_ref *g = realloc(group, (gcap = gcap ? gcap * 2 : 16) * sizeof *g);
                if (!g) {
                    rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
                    goto out;
                }
                group = g;
            }
            group[ng].p = name, group[ng].len = nlen, ng++;
        } else {
            if (ng) {
                qsort(group, ng, sizeof *group, name_cmp);
                for (size_t i = 0; i < ng; i++) emit_name(&l, group[i].p, group[i].len);
                ng = 0;
                if (l.stop) break;
            }
            emit_name(&l, name, nlen);
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (ng && !l.stop) {
        qsort(group, ng, sizeof *group, name_cmp);
        for (size_t i = 0; i < ng; i++) emit_name(&l, group[i].p, group[i].len);
    }
    rc = rc == 0 || rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "list streams");
out:
    free(group);
    mdb_cursor_close(c);
    cairn__read_end(s->env, txn);
    return rc;
}
