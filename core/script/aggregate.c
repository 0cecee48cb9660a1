/*
 * aggregate.c -- Lua aggregates: folding a stream through its reducers (from the newest
 * usable snapshot), commands decided inside the write transaction, decision models over a
 * boundary's query (decide), compensating actions, saga rollback by correlation id, and
 * snapshots kept as appends cross their interval.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "script.h"

#define NAME_MAX_ CAIRN__NAME_MAX
#define SNAP_HEADER 16 /* u64 aggregate script hash, u64 upcasters hash */

typedef struct agg {
    cairn_store *s;
    cairn_lua *h;
    lua_State *L;
    MDB_txn *txn;
    char name[NAME_MAX_ + 1];
    uint64_t hash, up_hash;
    int script, up, apply, star, state; /* stack indexes (up/apply/star 0 when absent) */
    int64_t snapshot_every;
    int reuse; /* this fold refills reusable event tables (see cairn_lua_fold) */
    cairn_stream_info si;
    int64_t version;  /* version folded to */
    uint64_t applied; /* events folded */
} agg;

/* ---------------------------------------------------------------------------------
 * Opening an aggregate: its script, the upcasters, the fixed stack slots
 * --------------------------------------------------------------------------------- */
static int agg_open(agg *a, cairn_store *s, cairn_lua *h, MDB_txn *txn, const char *stream,
                    size_t stream_len, const char *name, size_t name_len) {
    cairn_script_run run;
    int rc;

    memset(a, 0, sizeof *a);
    a->s = s, a->h = h, a->L = cairn_lua_state(h), a->txn = txn, a->version = -1;
    if (!name || !name_len) {
        cairn_slice c = cairn_category(stream, stream_len);
        name = c.ptr, name_len = c.len;
    }
    if (name_len == 0 || name_len > NAME_MAX_)
        return cairn__fail(CAIRN_ENOTFOUND, "no aggregate script for this stream");
    memcpy(a->name, name, name_len);
    a->name[name_len] = 0;
    if ((rc = cairn__stream_lookup(s->env, txn, stream, stream_len, &a->si))) return rc;
    if (a->si.has_life && (a->si.life.flags & CAIRN__LF_DELETED))
        return cairn__fail(CAIRN_EDELETED, "stream %.*s was deleted (hard delete)",
                           (int)(stream_len > 200 ? 200 : stream_len), stream);
    if ((rc = cairn__script_open(h, s->env, txn, CAIRN_SCRIPT_AGGREGATE, name, name_len, &run)))
        return rc;
    a->hash = run.hash, a->up_hash = run.up_hash, a->script = run.script, a->up = run.up;
    lua_pushliteral(a->L, "snapshot_every");
    if (lua_rawget(a->L, a->script) == LUA_TNUMBER) a->snapshot_every = lua_tointeger(a->L, -1);
    lua_pop(a->L, 1);
    lua_pushliteral(a->L, "apply");
    if (lua_rawget(a->L, a->script) == LUA_TTABLE) {
        a->apply = lua_gettop(a->L);
        lua_pushliteral(a->L, "*");
        if (lua_rawget(a->L, a->apply) == LUA_TFUNCTION)
            a->star = lua_gettop(a->L);
        else
            lua_pop(a->L, 1);
    } else {
        lua_pop(a->L, 1);
    }
    return CAIRN_OK;
}

/* Pushes init() (or {}) as the state. */
static int agg_init_state(agg *a) {
    int rc;
    lua_pushliteral(a->L, "init");
    if (lua_rawget(a->L, a->script) != LUA_TFUNCTION) {
        lua_pop(a->L, 1);
        lua_newtable(a->L);
    } else if ((rc = cairn_lua_call(a->h, a->name, 0, 1, 0))) {
        return rc;
    } else if (!lua_istable(a->L, -1)) {
        lua_pop(a->L, 1);
        return cairn__script_fail(a->name, 0, "%s: init must return a table", a->name);
    }
    a->state = lua_gettop(a->L);
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * Snapshots: key = sid + version (big-endian), value = hashes + state JSON
 * --------------------------------------------------------------------------------- */
static void snap_key(uint8_t out[16], uint64_t sid, int64_t version) {
    cairn__put_be64(out, sid);
    cairn__put_be64(out + 8, (uint64_t)version);
}

/* Starts from the newest snapshot at or below `target` made by this script and these
 * upcasters; otherwise from init(). */
static int agg_start(agg *a, int64_t target) {
    MDB_cursor *c;
    uint8_t kb[16];
    MDB_val k = {16, kb}, v;
    int rc, tries = 0;

    /* a snapshot folds every event up to its version: none is used once the lifecycle
     * rules removed any (spec 6), the fold then sees only the events that remain */
    if (a->si.exists && target >= 0 && a->snapshot_every > 0 &&
        !(a->si.has_life && (a->si.life.first > 0 || a->si.life.max_age >= 0))) {
        if ((rc = mdb_cursor_open(a->txn, cairn__senv(a->s->env)->snaps, &c)))
            return cairn__mdb_fail(rc, "snapshot");
        snap_key(kb, a->si.sid, target + 1);
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        rc = rc == 0 ? mdb_cursor_get(c, &k, &v, MDB_PREV) : mdb_cursor_get(c, &k, &v, MDB_LAST);
        while (rc == 0 && tries++ < 4 && k.mv_size == 16 &&
               cairn__get_be64(k.mv_data) == a->si.sid) {
            if (v.mv_size > SNAP_HEADER && cairn__get_be64(v.mv_data) == a->hash &&
                cairn__get_be64((uint8_t *)v.mv_data + 8) == a->up_hash &&
                cairn_lua_push_json(a->h, (uint8_t *)v.mv_data + SNAP_HEADER,
                                    v.mv_size - SNAP_HEADER) == 0) {
                if (lua_istable(a->L, -1)) {
                    a->state = lua_gettop(a->L);
                    a->version = (int64_t)cairn__get_be64((uint8_t *)k.mv_data + 8);
                    break;
                }
                lua_pop(a->L, 1);
            }
            cairn__clear_error();
            rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
        }
        mdb_cursor_close(c);
        if (a->state) return CAIRN_OK;
    }
    return agg_init_state(a);
}

static int snap_put(agg *a, const char *json, size_t len) {
    uint8_t kb[16];
    MDB_val k = {16, kb}, v = {SNAP_HEADER + len, NULL};
    int rc;
    snap_key(kb, a->si.sid, a->version);
    if ((rc = mdb_put(a->txn, cairn__senv(a->s->env)->snaps, &k, &v, MDB_RESERVE))) return rc;
    cairn__put_be64(v.mv_data, a->hash);
    cairn__put_be64((uint8_t *)v.mv_data + 8, a->up_hash);
    memcpy((uint8_t *)v.mv_data + SNAP_HEADER, json, len);
    return 0;
}

static int agg_snapshot(agg *a) {
    cairn_buf b = {0};
    int rc = cairn_lua_to_json(a->h, a->state, &b);
    if (rc == CAIRN_OK) {
        int mrc = snap_put(a, b.p, b.len);
        rc = mrc == MDB_MAP_FULL ? CAIRN__EMAPFULL
            : mrc                ? cairn__mdb_fail(mrc, "write snapshot")
                                 : 0;
    }
    cairn_buf_free(&b);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Folding
 * --------------------------------------------------------------------------------- */

/* Pushes the event table of a decoded record, through the upcasters. */
static int push_event(agg *a, const cairn_event *ev) {
    int rc, changed;
    if ((rc = cairn_lua_push_event(a->h, ev))) return rc;
    if (a->up && !ev->forgotten &&
        (rc = cairn_lua_upcast(a->h, a->up, -1, ev->position, &changed))) {
        lua_pop(a->L, 1);
        return rc;
    }
    return CAIRN_OK;
}

#define FOLD_BATCH 256 /* records decoded per cairn_lua_fold call */

/* Opens an event's sealed data (spec 6) into plain + plain->len, which must have room for
 * ev->data.len bytes; or marks it forgotten.  The record itself is in the read-only map. */
static int reveal_at(agg *a, cairn_event *ev, cairn_buf *plain) {
    int pend, rc;
    if ((rc = cairn__event_pending(a->s->env, a->txn, ev, &pend))) return rc;
    return cairn__event_reveal(a->s->env, ev, pend, (uint8_t *)plain->p + plain->len);
}

/* Folds the gathered batch through the reducers. */
static int reduce(agg *a, const cairn_event *evs, size_t n) {
    size_t done = 0;
    int rc =
        cairn_lua_fold(a->h, a->name, a->state, a->apply, a->star, a->up, evs, n, a->reuse, &done);
    a->applied += done;
    return rc;
}

/* Applies events a->version+1 .. target.  Records are decoded in batches inside the txn,
 * which stays open and unwritten for the whole fold, so the decoded events' pointers into
 * the map stay valid until their batch has been folded. */
static int fold_range(agg *a, int64_t target) {
    MDB_cursor *cs = NULL, *clog = NULL;
    uint8_t sk[8], vb[16];
    MDB_val k = {8, sk}, v;
    int rc = CAIRN_OK, mrc;
    cairn_event *evs = NULL;
    size_t n = 0, cap;
    int64_t last = a->version;      /* version of the newest record gathered */
    uint64_t prev = 0;              /* log position the log cursor was last sent to (0: none) */
    cairn_buf plain = {NULL, 0, 0}; /* the batch's opened sealed data */
    int64_t now = a->si.has_life ? cairn__now_ns() : 0;

    if (!a->si.exists || target <= a->version) return CAIRN_OK;
    cap = (uint64_t)(target - a->version) < FOLD_BATCH ? (size_t)(target - a->version) : FOLD_BATCH;
    if (!(evs = malloc(cap * sizeof *evs))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    if ((mrc = mdb_cursor_open(a->txn, a->s->env->sidx, &cs)) ||
        (mrc = mdb_cursor_open(a->txn, a->s->env->log, &clog)))
        goto mdb_fail;
    cairn__put_be64(sk, a->si.sid);
    cairn__put_be64(vb, (uint64_t)(a->version + 1));
    memset(vb + 8, 0, 8);
    v.mv_size = 16, v.mv_data = vb;
    mrc = mdb_cursor_get(cs, &k, &v, MDB_GET_BOTH_RANGE);
    while (mrc == 0) {
        int64_t ver = (int64_t)cairn__get_be64(v.mv_data);
        uint64_t pos = cairn__get_be64((uint8_t *)v.mv_data + 8);
        uint8_t pk[8];
        MDB_val lk = {8, pk}, lv;
        if (ver > target) break;
        cairn__put_be64(pk, pos);
        /* a stream's events often sit next to each other in the log: step to the next
         * record when it is the one wanted, search otherwise */
        if (pos == prev + 1 && mdb_cursor_get(clog, &lk, &lv, MDB_NEXT) == 0 && lk.mv_size == 8 &&
            cairn__get_be64(lk.mv_data) == pos)
            mrc = 0;
        else
            lk.mv_size = 8, lk.mv_data = pk, mrc = mdb_cursor_get(clog, &lk, &lv, MDB_SET_KEY);
        prev = pos;
        if (mrc) {
            if (mrc != MDB_NOTFOUND) goto mdb_fail;
            /* removed by retention: skipped */
        } else {
            if ((rc = cairn__record_decode(lv.mv_data, lv.mv_size, pos, &evs[n]))) goto out;
            if (a->si.has_life &&
                cairn__life_hides(&a->si.life, ver, evs[n].timestamp, now)) { /* spec 6 */
                last = ver;
                mrc = mdb_cursor_get(cs, &k, &v, MDB_NEXT_DUP);
                continue;
            }
            if (evs[n].flags & CAIRN_EVENT_ENCRYPTED) {
                /* plaintext goes to `plain`; the batch's events point into it, so when it
                 * must grow the batch is folded first */
                size_t need = evs[n].data.len;
                if (plain.cap - plain.len < need) {
                    if (plain.len && n) {
                        if ((rc = reduce(a, evs, n))) goto out;
                        evs[0] = evs[n], n = 0;
                    }
                    plain.len = 0;
                    if (cairn_buf_reserve(&plain, need < 65536 ? 65536 : need)) {
                        rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
                        goto out;
                    }
                }
                if ((rc = reveal_at(a, &evs[n], &plain))) goto out;
                plain.len += need;
            }
            if (++n == cap) {
                if ((rc = reduce(a, evs, n))) goto out;
                n = 0, plain.len = 0;
            }
        }
        last = ver;
        mrc = mdb_cursor_get(cs, &k, &v, MDB_NEXT_DUP);
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND) goto mdb_fail;
    if (n && (rc = reduce(a, evs, n))) goto out;
    /* the versions up to target that the lifecycle rules removed are gone from sidx too */
    if (a->si.has_life && last < target && target <= a->si.version) last = target;
    a->version = last;
    goto out;
mdb_fail:
    rc = cairn__mdb_fail(mrc, "fold");
out:
    if (clog) mdb_cursor_close(clog);
    if (cs) mdb_cursor_close(cs);
    free(evs);
    cairn_buf_free(&plain);
    return rc;
}

/* Folds of at least this many events refill one set of event tables instead of making
 * fresh ones for every event (table creation dominates a reducer's cost); afterwards the
 * fold checks that no handler kept them, and folds again with fresh tables if one did.  A
 * script found keeping them is remembered (per Lua state) and always gets fresh tables. */
#define REUSE_MIN 512
/* Applies events a->version+1 .. target (the state is the top of the stack). */
static int agg_fold(agg *a, int64_t target) {
    int64_t from = a->version;
    uint64_t applied = a->applied;
    int rc, escaped = 0;

    /* upcasters rewrite the event in place: they always get fresh tables */
    a->reuse = a->si.exists && !a->up && target - a->version >= REUSE_MIN &&
        !cairn__script_retains(a->L, CAIRN_SCRIPT_AGGREGATE, a->name, a->hash, 0);
    rc = fold_range(a, target);
    if (!a->reuse) return rc;
    a->reuse = 0;
    if (rc == CAIRN_OK)
        rc = cairn_lua_fold_escaped(a->h, a->state, a->apply, a->star, a->up, &escaped);
    if (rc != CAIRN_OK || escaped) {
        /* a handler kept an event (or failed on one that may have been reused): start
         * again from the same snapshot, with fresh tables */
        cairn__clear_error();
        cairn__script_retains(a->L, CAIRN_SCRIPT_AGGREGATE, a->name, a->hash, 1);
        lua_settop(a->L, a->state - 1);
        a->state = 0, a->version = -1, a->applied = applied;
        if ((rc = agg_start(a, target))) return rc; /* the same txn: the same snapshot */
        if (a->version != from)
            return cairn__fail(CAIRN_EINTERNAL, "fold restart found another start");
        rc = fold_range(a, target);
    }
    return rc;
}

/* Reads the event at a stream version (within the txn). */
static int event_at(agg *a, int64_t version, cairn_event *ev) {
    uint8_t sk[8], vb[16], pk[8];
    MDB_val k = {8, sk}, v = {16, vb}, lk = {8, pk}, lv;
    MDB_cursor *c;
    int rc;
    cairn__put_be64(sk, a->si.sid);
    cairn__put_be64(vb, (uint64_t)version);
    memset(vb + 8, 0, 8);
    if ((rc = mdb_cursor_open(a->txn, a->s->env->sidx, &c)))
        return cairn__mdb_fail(rc, "read stream");
    rc = mdb_cursor_get(c, &k, &v, MDB_GET_BOTH_RANGE);
    if (rc == 0 && (int64_t)cairn__get_be64(v.mv_data) != version) rc = MDB_NOTFOUND;
    if (rc == 0) memcpy(pk, (uint8_t *)v.mv_data + 8, 8);
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND)
        return cairn__fail(CAIRN_ENOTFOUND, "no event at version %lld", (long long)version);
    if (rc) return cairn__mdb_fail(rc, "read stream");
    if ((rc = mdb_get(a->txn, a->s->env->log, &lk, &lv)))
        return rc == MDB_NOTFOUND
            ? cairn__fail(CAIRN_ENOTFOUND, "event at version %lld was removed", (long long)version)
            : cairn__mdb_fail(rc, "read log");
    return cairn__record_decode(lv.mv_data, lv.mv_size, cairn__get_be64(pk), ev);
}

/* The last version whose timestamp is <= at_ns, or -1. */
static int version_at(agg *a, int64_t at_ns, int64_t *out) {
    int64_t lo = 0, hi = a->si.version, best = -1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        cairn_event ev;
        int rc = event_at(a, mid, &ev);
        if (rc == CAIRN_ENOTFOUND) {
            cairn__clear_error();
            lo = mid + 1;
            continue;
        }
        if (rc) return rc;
        if (ev.timestamp <= at_ns)
            best = mid, lo = mid + 1;
        else
            hi = mid - 1;
    }
    *out = best;
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * load
 * --------------------------------------------------------------------------------- */
int cairn_load(cairn_store *s, const char *stream, size_t stream_len, const char *aggregate,
               size_t aggregate_len, int64_t version, int64_t at_ns, cairn_state *out) {
    MDB_txn *txn;
    cairn_lua *h;
    cairn_buf b = {0};
    agg a;
    int64_t target;
    int rc;

    cairn__clear_error();
    memset(out, 0, sizeof *out);
    if ((rc = cairn__store_check(s))) return rc;
    if (!stream) return cairn__fail(CAIRN_EINVAL, "stream: NULL");
    if ((rc = cairn__check_stream(stream, stream_len, "stream"))) return rc;
    if (version < -1) return cairn__fail(CAIRN_EINVAL, "version: must be >= 0");
    if ((rc = cairn__lua_acquire(s->env, &s->lim, &h))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) goto release;
    if ((rc = agg_open(&a, s, h, txn, stream, stream_len, aggregate, aggregate_len))) goto end;
    target = a.si.version;
    if (version >= 0 && version < target) target = version;
    if (at_ns != CAIRN_AT_NONE && a.si.exists) {
        int64_t v;
        if ((rc = version_at(&a, at_ns, &v))) goto end;
        if (v < target) target = v;
    }
    if ((rc = agg_start(&a, target))) goto end;
    if ((rc = agg_fold(&a, target))) goto end;
    if ((rc = cairn_lua_to_json(h, a.state, &b))) { /* the encoder's text, and whose state */
        char m[sizeof cairn__err()->message];
        snprintf(m, sizeof m, "%s", cairn__err()->message);
        cairn__fail(rc, "%s: state: %.400s", a.name, m);
        snprintf(cairn__err()->script, sizeof cairn__err()->script, "%s", a.name);
        goto end;
    }
    if ((rc = cairn_buf_append(&b, "", 1))) goto end; /* NUL-terminated for C callers */
    out->json = b.p, out->len = b.len - 1, out->version = a.version, out->applied = a.applied;
    b.p = NULL;
end:
    cairn__read_end(s->env, txn);
    /* A load that folded a full interval leaves a snapshot behind (best effort). */
    if (rc == CAIRN_OK && a.snapshot_every > 0 && a.applied >= (uint64_t)a.snapshot_every &&
        !s->readonly && !s->env->rdonly &&
        cairn__write_begin(s->env, s->durability, &txn) == CAIRN_OK) {
        a.txn = txn;
        if (snap_put(&a, out->json, out->len) == 0)
            cairn__write_commit(s->env, txn);
        else
            cairn__write_abort(s->env, txn);
    }
release:
    cairn_buf_free(&b);
    cairn__lua_release(s->env, &s->lim, h);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Events returned by scripts -> append requests
 * --------------------------------------------------------------------------------- */
typedef struct produced {
    cairn_buf buf; /* JSON of data and metadata, and tag slices */
    cairn_event_in *evs;
    size_t n;
    size_t *offs; /* per event: data off, data len, meta off, meta len, tags off */
} produced;

static void produced_free(produced *p) {
    cairn_buf_free(&p->buf);
    free(p->evs);
    free(p->offs);
    memset(p, 0, sizeof *p);
}

/* Copies the string-keyed fields of the table at `src` into the table at `dst`. */
static void merge_into(lua_State *L, int dst, int src) {
    if (!src || !lua_istable(L, src)) return;
    lua_pushnil(L);
    while (lua_next(L, src)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, dst);
    }
}

/* The handler whose result produce() reads, for its messages: "<script>:<line>: what.name". */
typedef struct handler_ref {
    const char *what; /* "decide" or "compensate" */
    const char *name; /* the command or the event type */
    size_t name_len;
    int line;          /* where the handler's function begins, 0 when unknown */
    uint64_t position; /* compensate: the event compensated; 0 for decide */
} handler_ref;

/* [-0, +0, -] the handler is the function at fn */
static void handler_at(handler_ref *r, lua_State *L, const char *what, int fn, const char *name,
                       size_t name_len, uint64_t position) {
    lua_Debug ar;
    r->what = what, r->name = name, r->name_len = name_len > 200 ? 200 : name_len;
    r->position = position, r->line = 0;
    lua_pushvalue(L, fn);
    if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0) r->line = ar.linedefined;
}

/* CAIRN_ESCRIPT "<script>:<line>: <text>" with the handler's script, line and position. */
static int handler_fail(agg *a, const handler_ref *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int handler_fail(agg *a, const handler_ref *r, const char *fmt, ...) {
    char msg[400];
    cairn_error *err = cairn__err();
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->line)
        cairn__fail(CAIRN_ESCRIPT, "%s:%d: %s", a->name, r->line, msg);
    else
        cairn__fail(CAIRN_ESCRIPT, "%s: %s", a->name, msg);
    snprintf(err->script, sizeof err->script, "%s", a->name);
    err->line = r->line, err->position = r->position;
    return CAIRN_ESCRIPT;
}

/* handler_fail for event i (0-based) of the handler's list, on the message just failed,
 * prefixed with the field it concerns (NULL: none). */
static int event_fail(agg *a, const handler_ref *r, size_t i, const char *field) {
    char why[sizeof cairn__err()->message];
    snprintf(why, sizeof why, "%s", cairn__err()->message);
    return handler_fail(a, r, "%s.%.*s: event %zu: %s%s%.300s", r->what, (int)r->name_len, r->name,
                        i + 1, field ? field : "", field ? ": " : "", why);
}

/* Converts the list of event tables at `list` (as the handler r returned it) into
 * cairn_event_in entries.  Metadata is built from the tables at meta[0..2] (0 skipped) with
 * the event's own metadata inserted at position `own` of that order.  The Lua values stay on
 * the stack (types and tags point into them) until produced_free. */
static int produce_events(agg *a, int list, const handler_ref *r, const int *meta, int own,
                          produced *p);

/* The events one call returned are encoded as one more invocation (cairn_lua_encode_begin):
 * a budget and a time limit for all of them, not one per event. */
static int produce(agg *a, int list, const handler_ref *r, const int *meta, int own, produced *p) {
    int rc;
    cairn_lua_encode_begin(a->h);
    rc = produce_events(a, list, r, meta, own, p);
    cairn_lua_encode_end(a->h);
    return rc;
}

static int produce_events(agg *a, int list, const handler_ref *r, const int *meta, int own,
                          produced *p) {
    lua_State *L = a->L;
    const char *what = r->what;
    size_t n;
    int rc = CAIRN_OK;

    memset(p, 0, sizeof *p);
    if (lua_isnil(L, list)) return CAIRN_OK;
    if (cairn_lua_check_list(a->h, list, &n)) {
        char why[sizeof cairn__err()->message];
        snprintf(why, sizeof why, "%s", cairn__err()->message);
        return handler_fail(a, r, "%s must return a list of events: %s.%.*s %.300s", what, what,
                            (int)r->name_len, r->name, why);
    }
    if (!n) return CAIRN_OK;
    if (!(p->evs = calloc(n, sizeof *p->evs)) || !(p->offs = calloc(n * 5, sizeof *p->offs))) {
        produced_free(p);
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    }
    p->n = n;
    if (!lua_checkstack(L, 8)) return cairn__fail(CAIRN_ENOMEM, "Lua stack exhausted");
    /* Strings read from the event tables stay valid after they leave the stack: the list
     * (which stays on the stack until produced_free) references them, and Lua 5.4 never
     * moves a string. */
    for (size_t i = 0; i < n; i++) {
        cairn_event_in *ev = &p->evs[i];
        int e, m, top = lua_gettop(L);
        size_t before, len;
        const char *s;
        lua_rawgeti(L, list, (lua_Integer)i + 1);
        e = lua_gettop(L);
        /* as cairn.Event checks its arguments (lua/event_in.c, base/check.c) */
        if (cairn_lua_check_event(a->h, e, CAIRN_LUA_EVENT_NEW)) {
            rc = event_fail(a, r, i, NULL);
            goto fail;
        }
        lua_pushliteral(L, "type");
        lua_rawget(L, e);
        ev->type.ptr = lua_tolstring(L, -1, &ev->type.len); /* stays on the stack */
        ev->schema = 1;
        lua_pushliteral(L, "schema");
        if (lua_rawget(L, e) == LUA_TNUMBER) ev->schema = (uint32_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
        lua_pushliteral(L, "id");
        if (lua_rawget(L, e) == LUA_TSTRING && (s = lua_tolstring(L, -1, &len)))
            ev->has_id = cairn__parse_uuid(s, len, ev->id);
        lua_pop(L, 1);
        lua_pushliteral(L, "subject"); /* checked; the event table keeps the string alive */
        if (lua_rawget(L, e) == LUA_TSTRING)
            ev->subject.ptr = lua_tolstring(L, -1, &ev->subject.len);
        lua_pop(L, 1);
        /* data */
        before = p->buf.len;
        lua_pushliteral(L, "data");
        if (lua_rawget(L, e) != LUA_TNIL && cairn_lua_to_json(a->h, -1, &p->buf)) {
            rc = event_fail(a, r, i, "data");
            goto fail;
        }
        lua_pop(L, 1);
        p->offs[5 * i] = before, p->offs[5 * i + 1] = p->buf.len - before;
        /* metadata: the merge order given by the caller */
        lua_newtable(L);
        m = lua_gettop(L);
        for (int j = 0; j < 3; j++) {
            if (j == own) {
                lua_pushliteral(L, "metadata");
                lua_rawget(L, e);
                merge_into(L, m, lua_gettop(L));
                lua_pop(L, 1);
            }
            if (meta[j]) merge_into(L, m, meta[j]);
        }
        before = p->buf.len;
        lua_pushnil(L);
        if (lua_next(L, m)) {
            lua_pop(L, 2);
            if (cairn_lua_to_json(a->h, m, &p->buf)) {
                rc = event_fail(a, r, i, "metadata");
                goto fail;
            }
        }
        lua_pop(L, 1);
        p->offs[5 * i + 2] = before, p->offs[5 * i + 3] = p->buf.len - before;
        /* tags (a list of strings, checked): slices into the Lua strings, which the event
         * table keeps alive */
        lua_pushliteral(L, "tags");
        if (lua_rawget(L, e) == LUA_TTABLE) {
            size_t nt = lua_rawlen(L, -1);
            if (nt) {
                /* the slices follow JSON text in the buffer: align them (malloc aligns the base) */
                size_t pad = (size_t)(-p->buf.len) & (_Alignof(cairn_slice) - 1);
                size_t off = p->buf.len + pad;
                if ((rc = cairn_buf_reserve(&p->buf, pad + nt * sizeof(cairn_slice)))) {
                    rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
                    goto fail;
                }
                p->buf.len = off + nt * sizeof(cairn_slice);
                for (size_t t = 0; t < nt; t++) {
                    cairn_slice sl;
                    lua_rawgeti(L, -1, (lua_Integer)t + 1);
                    sl.ptr = lua_tolstring(L, -1, &sl.len);
                    memcpy(p->buf.p + off + t * sizeof sl, &sl, sizeof sl);
                    lua_pop(L, 1);
                }
                p->offs[5 * i + 4] = off;
                ev->ntags = nt;
            }
        }
        lua_settop(L, top);
    }
    for (size_t i = 0; i < n; i++) { /* the buffer has stopped moving: point into it */
        cairn_event_in *ev = &p->evs[i];
        ev->data.ptr = p->buf.p + p->offs[5 * i], ev->data.len = p->offs[5 * i + 1];
        ev->metadata.ptr = p->buf.p + p->offs[5 * i + 2], ev->metadata.len = p->offs[5 * i + 3];
        if (ev->ntags) ev->tags = (const cairn_slice *)(void *)(p->buf.p + p->offs[5 * i + 4]);
        /* the one check of an event (base/check.c) on what will be written: the merged
         * metadata's reserved keys included */
        if (cairn__event_check(ev)) {
            rc = event_fail(a, r, i, NULL);
            goto fail;
        }
    }
    return CAIRN_OK;
fail:
    produced_free(p);
    return rc;
}

/* Appends produced events to the aggregate's stream in the open txn; validation failures
 * are the script's. */
static int write_produced(agg *a, const char *stream, size_t stream_len, int64_t expected,
                          produced *p, const char *what, cairn_append_result *res) {
    cairn_append_req q;
    int rc;
    q.stream.ptr = stream, q.stream.len = stream_len;
    q.expected = expected, q.events = p->evs, q.nevents = p->n;
    if ((rc = cairn__validate_requests(&q, 1))) {
        char msg[sizeof cairn__err()->message];
        snprintf(msg, sizeof msg, "%s", cairn__err()->message);
        return cairn__script_fail(a->name, 0, "%s", msg[0] ? msg : what);
    }
    if ((rc = cairn__write_requests(a->s, a->txn, &q, NULL, 1, res, CAIRN__W_TAIL))) return rc;
    if ((rc = cairn__snapshot_after_append(a->s, a->txn, &q, 1, res))) return rc;
    return cairn__projections_after_append(a->s, a->txn);
}

/* Pushes a JSON object (or an empty table for none); 0 on success. */
static int push_meta(agg *a, cairn_slice m) {
    int rc;
    if (!m.len) {
        lua_newtable(a->L);
        return CAIRN_OK;
    }
    if ((rc = cairn_lua_push_json(a->h, m.ptr, m.len))) return rc;
    if (!lua_istable(a->L, -1)) {
        lua_pop(a->L, 1);
        return cairn__fail(CAIRN_EINVAL, "metadata: must be a JSON object");
    }
    return CAIRN_OK;
}

/* Runs one write body in a write transaction (cairn__write_txn), with a Lua state. */
typedef int (*write_body)(cairn_store *s, MDB_txn *txn, cairn_lua *h, void *ctx);

typedef struct lua_write {
    cairn_store *s;
    cairn_lua *h;
    write_body body;
    void *ctx;
} lua_write;

static int lua_write_body(cairn_wtxn *w, void *ctx) {
    lua_write *b = ctx;
    int rc = b->body(b->s, w->txn, b->h, b->ctx);
    lua_settop(cairn_lua_state(b->h), 0);
    w->notify = 1;
    return rc;
}

static int in_write_txn(cairn_store *s, write_body body, void *ctx) {
    lua_write b = {s, NULL, body, ctx};
    int rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    if ((rc = cairn__lua_acquire(s->env, &s->lim, &b.h))) return rc;
    rc = cairn__write_txn(s->env, s->durability, lua_write_body, &b);
    cairn__lua_release(s->env, &s->lim, b.h);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * execute
 * --------------------------------------------------------------------------------- */
typedef struct exec_args {
    const char *stream, *aggregate, *command;
    size_t stream_len, aggregate_len, command_len;
    cairn_slice data, metadata;
    int64_t expected;
    const uint8_t *command_id; /* NULL: none */
    cairn_append_result *result;
    uint8_t id0[16]; /* with a command id: its event 0's id */
} exec_args;

/* The events of a command id (spec 2 "Aggregates").  Event i's id is the first CMD_PREFIX
 * bytes of the id that emit's derivation gives for (name "", the command id, index 0), the
 * same for all of them, then 48 bits of a hash of what the command is (its id, stream,
 * aggregate, command and data as canonical JSON) plus i, big-endian: a UUIDv8.  So a retry
 * finds event 0's id exactly, and the prefix alone shows the command id used for another
 * command.  The prefix holds 74 bits of the hash, the rest 48. */
#define CMD_PREFIX 10

static int cmd_part(cairn_buf *b, const void *p, size_t n) {
    uint8_t len[4];
    cairn__put_be32(len, (uint32_t)n);
    return cairn_buf_append(b, len, 4) || cairn_buf_append(b, p, n);
}

/* Event 0's id (before the write txn: it holds no lock).  The data is hashed as canonical
 * JSON (keys sorted), so a retry that built its dict in another order is the same command. */
static int cmd_event0(const exec_args *x, uint8_t id[16]) {
    cairn_slice an = {x->aggregate, x->aggregate_len};
    cairn_buf b = {0};
    uint8_t h[16];
    char *canon = NULL;
    int rc = 0;

    if (!an.len) an = cairn_category(x->stream, x->stream_len);
    if (x->data.len) { /* data jansson cannot parse (a key holding NUL) is hashed as given */
        json_error_t err;
        json_t *j = json_loadb(x->data.ptr, x->data.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (j && !(canon = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY))) rc = 1;
        json_decref(j);
    }
    if (!rc) rc = cairn_buf_append(&b, x->command_id, 16);
    if (!rc) rc = cmd_part(&b, x->stream, x->stream_len);
    if (!rc) rc = cmd_part(&b, an.ptr, an.len);
    if (!rc) rc = cmd_part(&b, x->command, x->command_len);
    if (!rc && x->data.len)
        rc = canon ? cmd_part(&b, canon, strlen(canon)) : cmd_part(&b, x->data.ptr, x->data.len);
    if (!rc) {
        cairn__uuid_derive(b.p, b.len, h);
        cairn__uuid_derive_nth("", 0, x->command_id, 0, id);
        memcpy(id + CMD_PREFIX, h + CMD_PREFIX, 16 - CMD_PREFIX);
    }
    free(canon);
    cairn_buf_free(&b);
    return rc ? cairn__fail(CAIRN_ENOMEM, "out of memory") : CAIRN_OK;
}

static void cmd_event_id(const uint8_t id0[16], size_t i, uint8_t out[16]) {
    uint64_t n = 0;
    memcpy(out, id0, 16);
    for (int k = CMD_PREFIX; k < 16; k++) n = n << 8 | id0[k];
    n += i;
    for (int k = 15; k >= CMD_PREFIX; k--) out[k] = (uint8_t)n, n >>= 8;
}

/* Before decide: is the command in the store already?  Then *retry, and x->result is its
 * result, whatever the stream's state is now.  A command id whose prefix is there with
 * other events was used for another command: CAIRN_EDUPLICATE, as for an event id. */
static int cmd_retry(cairn_store *s, MDB_txn *txn, exec_args *x, int *retry) {
    cairn_env *e = s->env;
    const uint8_t *id0 = x->id0;
    uint64_t pos, first, count;
    cairn_event last;
    uint8_t idn[16];
    char cs[37];
    int rc, exact, found, same;

    *retry = 0;
    if ((rc = cairn__id_lookup(e, txn, id0, &exact, &pos, &first, &count))) return rc;
    found = exact;
    if (!found && (rc = cairn__id_find(e, txn, id0, CMD_PREFIX, &found, &pos, &first, &count)))
        return rc;
    if (!found) return CAIRN_OK;
    if ((rc = cairn__call_result(e, txn, first, count, x->result, &last))) return rc;
    cmd_event_id(id0, (size_t)(count - 1), idn);
    same = last.stream.len == x->stream_len && !memcmp(last.stream.ptr, x->stream, x->stream_len);
    /* the one call that wrote the command's events, and nothing else */
    if (exact && same && pos == first && !memcmp(last.id, idn, 16)) return *retry = 1, CAIRN_OK;
    cairn__uuid_format(x->command_id, cs);
    cairn__err()->position = first;
    if (!same)
        return cairn__fail(CAIRN_EDUPLICATE,
                           "command id %s was already executed at position %llu, for stream "
                           "%.*s; nothing was written",
                           cs, (unsigned long long)first,
                           (int)(last.stream.len > 200 ? 200 : last.stream.len),
                           (const char *)last.stream.ptr);
    return cairn__fail(CAIRN_EDUPLICATE,
                       "command id %s was already executed at position %llu with another "
                       "aggregate, command or data; nothing was written",
                       cs, (unsigned long long)first);
}

/* [-0, +4, -] Pushes what a command is decided with: the decide table, decide[command]
 * (*handler; r describes it), the call's metadata as a table (*call_meta) and cmd = {type =
 * command, data, metadata} (*cmd), as execute and decide hand them to the handler. */
static int push_command(agg *a, const char *command, size_t command_len, cairn_slice data,
                        cairn_slice metadata, handler_ref *r, int *handler, int *call_meta,
                        int *cmd) {
    lua_State *L = a->L;
    int rc;
    lua_pushliteral(L, "decide");
    if (lua_rawget(L, a->script) != LUA_TTABLE) lua_pop(L, 1), lua_newtable(L);
    if (memchr(command, 0, command_len)) /* printed with %.*s, it would be cut */
        return cairn__fail(CAIRN_EINVAL, "command: a command name must not contain NUL");
    lua_pushlstring(L, command, command_len);
    if (lua_rawget(L, -2) != LUA_TFUNCTION)
        return cairn__fail(CAIRN_EINVAL, "command: aggregate %s has no decide handler for %.*s",
                           a->name, (int)(command_len > 200 ? 200 : command_len), command);
    *handler = lua_gettop(L);
    handler_at(r, L, "decide", *handler, command, command_len, 0);
    if ((rc = push_meta(a, metadata))) return rc;
    *call_meta = lua_gettop(L);
    lua_createtable(L, 0, 3);
    *cmd = lua_gettop(L);
    lua_pushlstring(L, command, command_len);
    lua_setfield(L, *cmd, "type");
    if (data.len) {
        if ((rc = cairn_lua_push_json(a->h, data.ptr, data.len))) return rc;
        lua_setfield(L, *cmd, "data");
    }
    lua_pushvalue(L, *call_meta);
    lua_setfield(L, *cmd, "metadata");
    return CAIRN_OK;
}

/* decide[command](state, cmd), the handler and cmd on the stack (push_command), and the
 * events it returns produced with the call's metadata on top of each event's own. */
static int run_decide(agg *a, cairn_lua *h, int handler, int cmd, int call_meta, int meta[3],
                      handler_ref *r, produced *p) {
    lua_State *L = a->L;
    int rc;
    lua_pushvalue(L, handler);
    lua_pushvalue(L, a->state);
    lua_pushvalue(L, cmd);
    if ((rc = cairn_lua_call(h, a->name, 2, 1, 0))) return rc;
    meta[1] = call_meta; /* the event's own metadata first (own = 0), the call's on top */
    return produce(a, lua_gettop(L), r, meta, 0, p);
}

static int execute_body(cairn_store *s, MDB_txn *txn, cairn_lua *h, void *ctx) {
    exec_args *x = ctx;
    agg a;
    produced p;
    handler_ref r;
    int rc, handler, call_meta, cmd, meta[3] = {0, 0, 0};

    if (x->command_id) { /* a retry depends on nothing but the store's ids */
        int retry;
        if ((rc = cmd_retry(s, txn, x, &retry)) || retry) return rc;
    }
    if ((rc = agg_open(&a, s, h, txn, x->stream, x->stream_len, x->aggregate, x->aggregate_len)))
        return rc;
    if ((rc = agg_start(&a, a.si.version)) || (rc = agg_fold(&a, a.si.version))) return rc;
    if ((rc = push_command(&a, x->command, x->command_len, x->data, x->metadata, &r, &handler,
                           &call_meta, &cmd)))
        return rc;
    if ((rc = run_decide(&a, h, handler, cmd, call_meta, meta, &r, &p))) return rc;
    if (!p.n) {
        /* nothing to write; the expectation still has to hold */
        int ok = x->expected == CAIRN_ANY ||
            (x->expected == CAIRN_NO_STREAM && a.si.version == -1) ||
            (x->expected == CAIRN_STREAM_EXISTS && a.si.version >= 0) ||
            x->expected == a.si.version;
        if (!ok) {
            cairn__err()->expected = x->expected, cairn__err()->actual = a.si.version;
            return cairn__fail(CAIRN_EVERSION, "stream %.*s: expected version %lld, actual %lld",
                               (int)(x->stream_len > 200 ? 200 : x->stream_len), x->stream,
                               (long long)x->expected, (long long)a.si.version);
        }
        x->result->version = a.si.version, x->result->position = x->result->first_position = 0;
        return CAIRN_OK;
    }
    for (size_t i = 0; x->command_id && i < p.n; i++) {
        if (p.evs[i].has_id) { /* its own id would be dropped for the command's */
            produced_free(&p);
            return handler_fail(&a, &r,
                                "decide.%.*s: event %zu: an event's own id and a command id "
                                "exclude each other (the events of execute(..., id=...) get ids "
                                "derived from it)",
                                (int)r.name_len, r.name, i + 1);
        }
        p.evs[i].has_id = 1, cmd_event_id(x->id0, i, p.evs[i].id);
    }
    rc = write_produced(&a, x->stream, x->stream_len, x->expected, &p, "decide", x->result);
    produced_free(&p);
    return rc;
}

int cairn_execute(cairn_store *s, const char *stream, size_t stream_len, const char *aggregate,
                  size_t aggregate_len, const char *command, size_t command_len, cairn_slice data,
                  cairn_slice metadata, int64_t expected, const uint8_t *command_id,
                  cairn_append_result *result) {
    exec_args x = {stream, aggregate, command,  stream_len, aggregate_len, command_len,
                   data,   metadata,  expected, command_id, result,        {0}};
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!stream) return cairn__fail(CAIRN_EINVAL, "stream: NULL");
    if ((rc = cairn__check_stream(stream, stream_len, "stream"))) return rc;
    if (!command || !command_len) return cairn__fail(CAIRN_EINVAL, "command: must not be empty");
    if (expected < 0 && expected != CAIRN_ANY && expected != CAIRN_NO_STREAM &&
        expected != CAIRN_STREAM_EXISTS)
        return cairn__fail(CAIRN_EINVAL, "expected_version: %lld is not a valid expectation",
                           (long long)expected);
    /* the caller's metadata is the caller's mistake, not the script's */
    if (metadata.len && (rc = cairn__check_metadata(metadata.ptr, metadata.len))) return rc;
    if (command_id && (rc = cmd_event0(&x, x.id0))) return rc;
    return in_write_txn(s, execute_body, &x);
}

/* ---------------------------------------------------------------------------------
 * decide: a decision model over a consistency boundary (API.md section 5)
 * --------------------------------------------------------------------------------- */
/* Boundary snapshots.  The fold of a query's events up to position P is the same at every
 * later time as long as no event at or below P leaves the query's result, and events leave
 * it only by removal (spec 6; a stream gets an `smeta` entry before any of its events can be
 * removed, and entries are never deleted) or change only by forgetting (after_forget drops
 * every snapshot) and by upcasters (their hash is in the key).  So a snapshot is made and
 * used only while `smeta` is empty, and keyed by what the fold depends on: the aggregate's
 * name and the query (item for item, in order), checked against the script's and the
 * upcasters' hashes.  Key: u64 0 (no stream has sid 0) + u64 XXH3 of that canonical text;
 * value: u64 script hash, u64 upcasters hash, u64 P, u32 length of the canonical text, the
 * text (a hash collision is a miss), the state JSON. */
#define BSNAP_HEADER 28

static int canon_count(cairn_buf *b, size_t n) {
    uint8_t len[4];
    cairn__put_be32(len, (uint32_t)n);
    return cairn_buf_append(b, len, 4);
}

static int canon_part(cairn_buf *b, const void *p, size_t n) {
    return canon_count(b, n) || cairn_buf_append(b, p, n);
}

/* The aggregate's name and the query as one text (a count or a length before each part). */
static int boundary_canon(const agg *a, const cairn_query *q, cairn_buf *b) {
    int rc = canon_part(b, a->name, strlen(a->name)) || canon_count(b, q->nitems);
    for (size_t i = 0; !rc && i < q->nitems; i++) {
        const cairn_query_item *it = &q->items[i];
        rc = canon_count(b, it->ntypes);
        for (size_t j = 0; !rc && j < it->ntypes; j++)
            rc = canon_part(b, it->types[j].ptr, it->types[j].len);
        if (!rc) rc = canon_count(b, it->ntags);
        for (size_t j = 0; !rc && j < it->ntags; j++)
            rc = canon_part(b, it->tags[j].ptr, it->tags[j].len);
    }
    return rc ? cairn__fail(CAIRN_ENOMEM, "out of memory") : CAIRN_OK;
}

static void bsnap_key(uint8_t out[16], const cairn_buf *canon) {
    cairn__put_be64(out, 0);
    cairn__put_be64(out + 8, XXH3_64bits(canon->p, canon->len));
}

/* Pushes the state of the boundary's snapshot as a->state and sets *after to its position,
 * when there is a usable one; otherwise leaves both. */
static int bsnap_start(agg *a, const cairn_buf *canon, uint64_t head, uint64_t *after) {
    uint8_t kb[16];
    MDB_val k = {16, kb}, v;
    const uint8_t *p;
    uint64_t pos;
    int rc;
    bsnap_key(kb, canon);
    if ((rc = mdb_get(a->txn, cairn__senv(a->s->env)->snaps, &k, &v)) == MDB_NOTFOUND)
        return CAIRN_OK;
    if (rc) return cairn__mdb_fail(rc, "snapshot");
    p = v.mv_data;
    if (v.mv_size < BSNAP_HEADER || cairn__get_be64(p) != a->hash ||
        cairn__get_be64(p + 8) != a->up_hash || cairn__get_be32(p + 24) != canon->len ||
        v.mv_size - BSNAP_HEADER <= canon->len ||
        memcmp(p + BSNAP_HEADER, canon->p, canon->len) != 0)
        return CAIRN_OK;
    if ((pos = cairn__get_be64(p + 16)) > head) return CAIRN_OK; /* not this store's */
    if (cairn_lua_push_json(a->h, p + BSNAP_HEADER + canon->len,
                            v.mv_size - BSNAP_HEADER - canon->len) != CAIRN_OK) {
        cairn__clear_error();
        return CAIRN_OK;
    }
    if (!lua_istable(a->L, -1)) {
        lua_pop(a->L, 1);
        return CAIRN_OK;
    }
    a->state = lua_gettop(a->L), *after = pos;
    return CAIRN_OK;
}

/* Stores the state folded up to `head` (best effort: a state JSON cannot hold is not
 * decide's failure; only a full map is, to be grown and run again). */
static int bsnap_put(agg *a, const cairn_buf *canon, uint64_t head) {
    cairn_buf b = {0};
    uint8_t kb[16];
    MDB_val k = {16, kb}, v;
    int rc = CAIRN_OK, mrc;
    cairn_error saved = *cairn__err();
    if (cairn_lua_to_json(a->h, a->state, &b) == CAIRN_OK) {
        bsnap_key(kb, canon);
        v.mv_size = BSNAP_HEADER + canon->len + b.len, v.mv_data = NULL;
        mrc = mdb_put(a->txn, cairn__senv(a->s->env)->snaps, &k, &v, MDB_RESERVE);
        if (mrc == 0) {
            uint8_t *p = v.mv_data;
            cairn__put_be64(p, a->hash);
            cairn__put_be64(p + 8, a->up_hash);
            cairn__put_be64(p + 16, head);
            cairn__put_be32(p + 24, (uint32_t)canon->len);
            memcpy(p + BSNAP_HEADER, canon->p, canon->len);
            memcpy(p + BSNAP_HEADER + canon->len, b.p, b.len);
        } else {
            rc = mrc == MDB_MAP_FULL ? CAIRN__EMAPFULL : cairn__mdb_fail(mrc, "write snapshot");
        }
    }
    cairn_buf_free(&b);
    if (rc == CAIRN_OK) *cairn__err() = saved;
    return rc;
}

/* Folds every event `q` matches after position `after`, in position order, through the
 * reducers (the state is at a->state), reading through the write txn with the upcasters
 * applied by the fold. */
static int fold_query(agg *a, const cairn_query *q, uint64_t after) {
    cairn_iter *it = NULL;
    cairn_event *evs;
    int rc, end = 0;
    if (!(evs = malloc(FOLD_BATCH * sizeof *evs)))
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    if ((rc = cairn__iter_query(a->s->env, &a->s->lim, q, after + 1, 0, 0, 0, &it))) goto out;
    cairn__iter_bind_txn(it, a->txn);
    cairn_iter_set_raw(it, 1); /* the fold upcasts, in this Lua state */
    while (!end) {
        size_t k = 0, done = 0;
        /* a batch stops where the page does: its events point into it */
        while (k < FOLD_BATCH && (k == 0 || cairn_iter_buffered(it) > 0)) {
            if ((rc = cairn_iter_next(it, &evs[k])) < 0) goto out;
            if (rc == 0) {
                end = 1;
                break;
            }
            k++;
        }
        rc = CAIRN_OK;
        if (!k) break;
        rc = cairn_lua_fold(a->h, a->name, a->state, a->apply, a->star, a->up, evs, k, 0, &done);
        a->applied += done;
        if (rc) goto out;
    }
out:
    if (it) cairn_iter_close(it);
    free(evs);
    return rc;
}

/* The boundary's query folded (a->state pushed): from its snapshot when there is a usable
 * one, storing a new one once snapshot_every events or more were folded. */
static int fold_boundary(agg *a, const cairn_query *q) {
    cairn_buf canon = {0};
    uint64_t head = 0, after = 0;
    int rc = CAIRN_OK, life = 1;

    if (a->snapshot_every > 0) {
        if ((rc = cairn__life_on(a->s->env, a->txn, 0, &life))) goto out;
        if (!life &&
            ((rc = cairn__head(a->s->env, a->txn, &head)) || (rc = boundary_canon(a, q, &canon)) ||
             (rc = bsnap_start(a, &canon, head, &after))))
            goto out;
    }
    if (!a->state && (rc = agg_init_state(a))) goto out;
    if ((rc = fold_query(a, q, after))) goto out;
    if (a->snapshot_every > 0 && !life && a->applied >= (uint64_t)a->snapshot_every)
        rc = bsnap_put(a, &canon, head);
out:
    cairn_buf_free(&canon);
    return rc;
}

typedef struct decide_args {
    const char *aggregate, *command, *stream;
    size_t aggregate_len, command_len, stream_len;
    cairn_slice data, metadata;
    cairn_append_result *result;
} decide_args;

static int decide_body(cairn_store *s, MDB_txn *txn, cairn_lua *h, void *ctx) {
    decide_args *x = ctx;
    agg a;
    produced p;
    handler_ref r, br;
    cairn_query q;
    void *qmem = NULL;
    int rc, boundary, handler, call_meta, cmd, meta[3] = {0, 0, 0};
    lua_State *L;

    if ((rc = agg_open(&a, s, h, txn, x->stream, x->stream_len, x->aggregate, x->aggregate_len)))
        return rc;
    L = a.L;
    lua_pushliteral(L, "boundary");
    if (lua_rawget(L, a.script) != LUA_TFUNCTION)
        return cairn__fail(CAIRN_EINVAL,
                           "aggregate %s has no boundary: decide folds the events a boundary "
                           "selects (execute decides over one stream)",
                           a.name);
    boundary = lua_gettop(L);
    handler_at(&br, L, "boundary", boundary, "", 0, 0);
    if ((rc = push_command(&a, x->command, x->command_len, x->data, x->metadata, &r, &handler,
                           &call_meta, &cmd)))
        return rc;
    lua_pushvalue(L, boundary);
    lua_pushvalue(L, cmd);
    if ((rc = cairn_lua_call(h, a.name, 1, 1, 0))) return rc;
    /* the query's strings live in the returned table, which stays on the stack */
    if (cairn_lua_to_query(h, -1, &q, &qmem)) {
        char why[sizeof cairn__err()->message];
        snprintf(why, sizeof why, "%s", cairn__err()->message);
        if (!strncmp(why, "returned", 8))
            return handler_fail(&a, &br,
                                "boundary must return a list of query items: boundary %.300s", why);
        return handler_fail(&a, &br, "boundary: %.300s", why);
    }
    rc = fold_boundary(&a, &q);
    free(qmem);
    if (rc) return rc;
    if ((rc = run_decide(&a, h, handler, cmd, call_meta, meta, &r, &p))) return rc;
    if (!p.n) {
        x->result->version = a.si.version, x->result->position = x->result->first_position = 0;
        return CAIRN_OK;
    }
    rc = write_produced(&a, x->stream, x->stream_len, CAIRN_ANY, &p, "decide", x->result);
    produced_free(&p);
    return rc;
}

int cairn_decide(cairn_store *s, const char *aggregate, size_t aggregate_len, const char *command,
                 size_t command_len, cairn_slice data, cairn_slice metadata, const char *stream,
                 size_t stream_len, cairn_append_result *result) {
    decide_args x = {aggregate,  command, stream,   aggregate_len, command_len,
                     stream_len, data,    metadata, result};
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!aggregate || !aggregate_len)
        return cairn__fail(CAIRN_EINVAL, "aggregate: must not be empty");
    if (!stream) return cairn__fail(CAIRN_EINVAL, "stream: NULL");
    if ((rc = cairn__check_stream(stream, stream_len, "stream"))) return rc;
    if (!command || !command_len) return cairn__fail(CAIRN_EINVAL, "command: must not be empty");
    if (metadata.len && (rc = cairn__check_metadata(metadata.ptr, metadata.len))) return rc;
    return in_write_txn(s, decide_body, &x);
}

/* ---------------------------------------------------------------------------------
 * compensate and rollback
 * --------------------------------------------------------------------------------- */
/* Compensates the event at `version` of `stream` inside the txn. */
static int compensate_one(cairn_store *s, MDB_txn *txn, cairn_lua *h, const char *stream,
                          size_t stream_len, int64_t version, const char *aggregate,
                          size_t aggregate_len, cairn_slice metadata, cairn_append_result *res) {
    agg a;
    produced p;
    handler_ref r;
    cairn_event ev;
    char idstr[37];
    int rc, handler, call_meta, ids, meta[3] = {0, 0, 0};
    lua_State *L;
    MDB_val k, v;

    if ((rc = agg_open(&a, s, h, txn, stream, stream_len, aggregate, aggregate_len))) return rc;
    L = a.L;
    if (!a.si.exists || version < 0 || version > a.si.version)
        return cairn__fail(CAIRN_EINVAL, "version: stream %.*s has no version %lld",
                           (int)(stream_len > 200 ? 200 : stream_len), stream, (long long)version);
    if ((rc = event_at(&a, version, &ev))) {
        if (rc == CAIRN_ENOTFOUND)
            rc = cairn__fail(CAIRN_EINVAL, "version: %s", cairn__err()->message);
        return rc;
    }
    cairn__uuid_format(ev.id, idstr);
    k.mv_size = 16, k.mv_data = ev.id;
    if ((rc = mdb_get(txn, s->env->comp, &k, &v)) == 0) {
        cairn__err()->position = cairn__get_be64(v.mv_data);
        return cairn__fail(
            CAIRN_EALREADY, "event %s (version %lld) was already compensated at position %llu",
            idstr, (long long)version, (unsigned long long)cairn__get_be64(v.mv_data));
    }
    if (rc != MDB_NOTFOUND) return cairn__mdb_fail(rc, "read compensation index");
    lua_pushliteral(L, "compensate");
    if (lua_rawget(L, a.script) != LUA_TTABLE) lua_pop(L, 1), lua_newtable(L);
    lua_pushlstring(L, ev.type.ptr, ev.type.len);
    if (lua_rawget(L, -2) != LUA_TFUNCTION)
        return cairn__fail(CAIRN_ENOTCOMPENSABLE, "aggregate %s has no compensate handler for %.*s",
                           a.name, (int)(ev.type.len > 200 ? 200 : ev.type.len),
                           (const char *)ev.type.ptr);
    handler = lua_gettop(L);
    handler_at(&r, L, "compensate", handler, ev.type.ptr, ev.type.len, ev.position);
    if ((rc = push_meta(&a, metadata))) return rc;
    call_meta = lua_gettop(L);
    lua_createtable(L, 0, 2);
    ids = lua_gettop(L);
    lua_pushstring(L, idstr);
    lua_setfield(L, ids, "compensates");
    lua_pushstring(L, idstr);
    lua_setfield(L, ids, "causation_id");
    {
        cairn_buf plain = {NULL, 0, 0};
        if (ev.flags & CAIRN_EVENT_ENCRYPTED) {
            if (cairn_buf_reserve(&plain, ev.data.len))
                return cairn__fail(CAIRN_ENOMEM, "out of memory");
            rc = reveal_at(&a, &ev, &plain);
        }
        if (rc == CAIRN_OK) rc = push_event(&a, &ev); /* ev is still valid: nothing written */
        cairn_buf_free(&plain);
        if (rc) return rc;
    }
    /* the handler sees the stream's current state */
    lua_insert(L, handler + 1); /* handler, event, call_meta, ids */
    call_meta++, ids++;
    if ((rc = agg_start(&a, a.si.version)) || (rc = agg_fold(&a, a.si.version))) return rc;
    lua_pushvalue(L, handler);
    lua_pushvalue(L, a.state);
    lua_pushvalue(L, handler + 1);
    if ((rc = cairn_lua_call(h, a.name, 2, 1, ev.position))) return rc;
    meta[0] = call_meta, meta[1] = 0, meta[2] = ids; /* call's, then the script's, then the ids */
    if ((rc = produce(&a, lua_gettop(L), &r, meta, 1, &p))) return rc;
    if (!p.n)
        return handler_fail(&a, &r, "compensate.%.*s returned no events", (int)r.name_len, r.name);
    rc = write_produced(&a, stream, stream_len, CAIRN_ANY, &p, "compensate", res);
    produced_free(&p);
    return rc;
}

typedef struct comp_args {
    const char *stream, *aggregate;
    size_t stream_len, aggregate_len;
    int64_t version;
    cairn_slice metadata;
    cairn_append_result *result;
} comp_args;

static int compensate_body(cairn_store *s, MDB_txn *txn, cairn_lua *h, void *ctx) {
    comp_args *c = ctx;
    return compensate_one(s, txn, h, c->stream, c->stream_len, c->version, c->aggregate,
                          c->aggregate_len, c->metadata, c->result);
}

int cairn_compensate(cairn_store *s, const char *stream, size_t stream_len, int64_t version,
                     const char *aggregate, size_t aggregate_len, cairn_slice metadata,
                     cairn_append_result *result) {
    comp_args c = {stream, aggregate, stream_len, aggregate_len, version, metadata, result};
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!stream) return cairn__fail(CAIRN_EINVAL, "stream: NULL");
    if ((rc = cairn__check_stream(stream, stream_len, "stream"))) return rc;
    if (metadata.len && (rc = cairn__check_metadata(metadata.ptr, metadata.len))) return rc;
    return in_write_txn(s, compensate_body, &c);
}

typedef struct rollback_args {
    const char *cid;
    size_t len;
    cairn_append_result *results;
    size_t count, cap;
} rollback_args;

/* Does the record carry exactly this correlation id, and is it not itself a compensation
 * (a `compensates` that is an event id: what append indexes, cairn__links_parse)? */
static int rollback_candidate(const cairn_event *ev, const char *cid, size_t len) {
    cairn_links l;
    int ok;
    if (!cairn__links_parse(ev->metadata.ptr, ev->metadata.len, &l)) return 0;
    ok = l.corr && l.corr_len == len && !memcmp(l.corr, cid, len) && !l.has_comp;
    cairn__links_free(&l);
    return ok;
}

static int rollback_body(cairn_store *s, MDB_txn *txn, cairn_lua *h, void *ctx) {
    rollback_args *r = ctx;
    MDB_cursor *c;
    uint8_t kb[CAIRN_POST_KEY];
    MDB_val k = {CAIRN_POST_KEY, kb}, v;
    uint64_t *pos = NULL;
    size_t n = 0, cap = 0;
    int rc, mrc;
    json_t *meta;
    char *meta_json;

    r->count = 0;
    cairn__post_key(CAIRN_POST_CORRELATION, r->cid, r->len, kb);
    if ((mrc = mdb_cursor_open(txn, s->env->post, &c))) return cairn__mdb_fail(mrc, "rollback");
    mrc = mdb_cursor_get(c, &k, &v, MDB_SET);
    if (mrc == 0) mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST_DUP);
    while (mrc == 0) {
        if (n == cap) {
            uint64_t *np = realloc(pos, (cap = cap ? cap * 2 : 16) * sizeof *np);
            if (!np) {
                free(pos);
                mdb_cursor_close(c);
                return cairn__fail(CAIRN_ENOMEM, "out of memory");
            }
            pos = np;
        }
        pos[n++] = cairn__get_be64(v.mv_data);
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT_DUP);
    }
    mdb_cursor_close(c);
    if (mrc != MDB_NOTFOUND) {
        free(pos);
        return cairn__mdb_fail(mrc, "rollback");
    }
    meta = json_object();
    json_object_set_new(meta, "correlation_id", json_stringn(r->cid, r->len));
    meta_json = json_dumps(meta, JSON_COMPACT);
    json_decref(meta);
    rc = meta_json ? CAIRN_OK : cairn__fail(CAIRN_ENOMEM, "out of memory");
    for (size_t i = n; rc == CAIRN_OK && i-- > 0;) { /* newest first */
        uint8_t pk[8];
        MDB_val lk = {8, pk}, lv, ck, cv;
        cairn_event ev;
        char stream[CAIRN_MAX_STREAM];
        size_t stream_len;
        int64_t version;
        cairn_slice m = {meta_json, strlen(meta_json)};
        cairn__put_be64(pk, pos[i]);
        if ((mrc = mdb_get(txn, s->env->log, &lk, &lv))) {
            if (mrc == MDB_NOTFOUND) continue;
            rc = cairn__mdb_fail(mrc, "rollback");
            break;
        }
        if ((rc = cairn__record_decode(lv.mv_data, lv.mv_size, pos[i], &ev))) break;
        if (!rollback_candidate(&ev, r->cid, r->len)) continue;
        ck.mv_size = 16, ck.mv_data = ev.id;
        if (mdb_get(txn, s->env->comp, &ck, &cv) == 0) continue; /* already compensated */
        memcpy(stream, ev.stream.ptr, ev.stream.len);            /* ev dies with the next write */
        stream_len = ev.stream.len, version = ev.version;
        if (r->count == r->cap) {
            cairn_append_result *nr =
                realloc(r->results, (r->cap = r->cap ? r->cap * 2 : 8) * sizeof *nr);
            if (!nr) {
                rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
                break;
            }
            r->results = nr;
        }
        rc = compensate_one(s, txn, h, stream, stream_len, version, NULL, 0, m,
                            &r->results[r->count]);
        lua_settop(cairn_lua_state(h), 0);
        if (rc == CAIRN_OK) r->count++;
    }
    free(meta_json);
    free(pos);
    return rc;
}

int cairn_rollback(cairn_store *s, const char *correlation_id, size_t len,
                   cairn_append_result **results, size_t *count) {
    rollback_args r = {correlation_id, len, NULL, 0, 0};
    int rc;
    cairn__clear_error();
    *results = NULL, *count = 0;
    if ((rc = cairn__store_check(s))) return rc;
    if (!correlation_id || !len)
        return cairn__fail(CAIRN_EINVAL, "correlation_id: must not be empty");
    rc = in_write_txn(s, rollback_body, &r);
    if (rc) {
        free(r.results);
        return rc;
    }
    *results = r.results, *count = r.count;
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * Snapshots after appends
 * --------------------------------------------------------------------------------- */
static int snapshots_drop_sid(cairn_env *e, MDB_txn *txn, uint64_t sid) {
    MDB_cursor *c;
    uint8_t kb[16];
    MDB_val k = {16, kb}, v;
    int rc;
    if ((rc = mdb_cursor_open(txn, cairn__senv(e)->snaps, &c)))
        return cairn__mdb_fail(rc, "snapshot");
    snap_key(kb, sid, 0);
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size == 16 && cairn__get_be64(k.mv_data) == sid) {
        if ((rc = mdb_cursor_del(c, 0))) break;
        snap_key(kb, sid, 0);
        k.mv_size = 16, k.mv_data = kb;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    }
    mdb_cursor_close(c);
    if (rc == MDB_MAP_FULL) return CAIRN__EMAPFULL;
    return rc == 0 || rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "snapshot");
}

/* The stream's snapshots go, and the boundary snapshots (sid 0), which may fold its events
 * too: none is used once a stream has a lifecycle entry, which it has before any removal. */
int cairn__snapshots_drop(cairn_env *e, MDB_txn *txn, uint64_t sid) {
    int rc;
    if (!cairn__senv(e)->snaps) return CAIRN_OK;
    if ((rc = snapshots_drop_sid(e, txn, sid))) return rc;
    return snapshots_drop_sid(e, txn, 0);
}

int cairn__snapshot_after_append(cairn_store *s, MDB_txn *txn, const cairn_append_req *reqs,
                                 size_t nreqs, const cairn_append_result *results) {
    cairn_lua *h = NULL;
    int rc = CAIRN_OK;
    cairn_error saved = *cairn__err();

    for (size_t r = 0; r < nreqs && rc != CAIRN__EMAPFULL; r++) {
        const cairn_append_req *q = &reqs[r];
        cairn_slice cat = cairn_category(q->stream.ptr, q->stream.len);
        uint64_t hash;
        const char *src;
        size_t len;
        int64_t before = results[r].version - (int64_t)q->nevents;
        agg a;
        int top;

        if (cairn__script_get(s->env, txn, CAIRN_SCRIPT_AGGREGATE, cat.ptr, cat.len, &hash, &src,
                              &len) ||
            !src)
            continue;
        if (!h && cairn__lua_acquire(s->env, &s->lim, &h)) break;
        top = lua_gettop(cairn_lua_state(h));
        if (agg_open(&a, s, h, txn, q->stream.ptr, q->stream.len, NULL, 0) == CAIRN_OK &&
            a.snapshot_every > 0 &&
            (before + 1) / a.snapshot_every < (results[r].version + 1) / a.snapshot_every &&
            agg_start(&a, results[r].version) == CAIRN_OK &&
            agg_fold(&a, results[r].version) == CAIRN_OK)
            rc = agg_snapshot(&a); /* only a full map is the append's business */
        if (rc != CAIRN__EMAPFULL) rc = CAIRN_OK;
        lua_settop(cairn_lua_state(h), top);
    }
    if (h) cairn__lua_release(s->env, &s->lim, h);
    *cairn__err() = saved; /* a reducer's failure here is not the append's */
    return rc;
}
