/*
 * projection.c -- Lua projections: catch-up in batches through the posting indexes, state and
 * position and emitted events in one commit, partitioned state, faults that stop only their
 * projection, inline projections that follow every append inside its own txn, and a
 * background runner thread.
 *
 * `proj`:   name -> u64 position BE, u64 script hash BE, u8 status, u32 line BE,
 *           u64 fault position BE, fault text
 * `pstate`: name + 0 (+ partition key) -> state JSON.  The unpartitioned state lives under
 *           name + 0; a partition key is never empty.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <lauxlib.h>

#include "script.h"

#define NAME_MAX_ CAIRN__NAME_MAX
#define BATCH 1000 /* source events per write txn when catching up */
#define REC_HDR 29
#define KEY_MAX 511 /* LMDB's default key limit */
#define STATUS_OK 0
#define STATUS_FAULTED 1

typedef struct prec {
    int exists;
    uint64_t position, hash, fault_pos;
    int status, line;
    int is_inline; /* the script runs in appends (stored as bit 7 of the status byte) */
    char error[sizeof((cairn_error *)0)->message + 64];
} prec;

typedef struct pemit { /* one emit() waiting for the end of the batch; offsets into ebuf */
    size_t stream, stream_len, type, type_len, data, data_len, meta, meta_len;
    uint8_t id[16];
} pemit;

typedef struct proj {
    cairn_store *s;
    cairn_lua *h;
    lua_State *L;
    MDB_txn *txn;
    char name[NAME_MAX_ + 1];
    size_t name_len;
    uint64_t hash, up_hash;
    int script, up, apply, star, part, init, cache; /* stack slots (0 when absent) */
    int is_inline;
    cairn_filter f;
    cairn_slice *vals; /* the filter's strings, pointing into the script table */
    /* emit() */
    const uint8_t *src_id; /* id of the event being applied */
    uint32_t emit_index;
    const cairn_event *fold_evs; /* a batch under cairn_lua_fold: src_id comes from it */
    size_t emit_at;              /* the batch index emit_index counts for */
    int reuse;                   /* the fold refills reusable event tables */
    cairn_buf ebuf;
    pemit *emits;
    size_t nemits, cap_emits;
} proj;

static int mdb_code(int mrc, const char *what) {
    return mrc == MDB_MAP_FULL ? CAIRN__EMAPFULL : cairn__mdb_fail(mrc, what);
}

/* ---------------------------------------------------------------------------------
 * The proj record
 * --------------------------------------------------------------------------------- */
static int rec_get(cairn_env *e, MDB_txn *txn, const char *name, size_t len, prec *r) {
    MDB_val k = {len, (void *)name}, v;
    int rc;
    memset(r, 0, sizeof *r);
    if (!cairn__senv(e)->proj) return CAIRN_OK;
    if ((rc = mdb_get(txn, cairn__senv(e)->proj, &k, &v)) == MDB_NOTFOUND) return CAIRN_OK;
    if (rc) return cairn__mdb_fail(rc, "read projection");
    if (v.mv_size < REC_HDR) return cairn__fail(CAIRN_ECORRUPT, "corrupt projection record");
    const uint8_t *p = v.mv_data;
    size_t n = v.mv_size - REC_HDR;
    r->exists = 1;
    r->position = cairn__get_be64(p), r->hash = cairn__get_be64(p + 8), r->status = p[16] & 0x7f;
    r->is_inline = p[16] >> 7;
    r->line = (int)cairn__get_be32(p + 17), r->fault_pos = cairn__get_be64(p + 21);
    if (n >= sizeof r->error) n = sizeof r->error - 1;
    memcpy(r->error, p + REC_HDR, n);
    r->error[n] = 0;
    return CAIRN_OK;
}

static int rec_put(cairn_env *e, MDB_txn *txn, const char *name, size_t len, const prec *r) {
    MDB_val k = {len, (void *)name}, v;
    size_t n = r->status == STATUS_FAULTED ? strlen(r->error) : 0;
    int mrc;
    if (!cairn__senv(e)->proj) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    v.mv_size = REC_HDR + n, v.mv_data = NULL;
    if ((mrc = mdb_put(txn, cairn__senv(e)->proj, &k, &v, MDB_RESERVE)))
        return mdb_code(mrc, "write projection");
    uint8_t *p = v.mv_data;
    cairn__put_be64(p, r->position), cairn__put_be64(p + 8, r->hash);
    p[16] = (uint8_t)(r->status | (r->is_inline ? 0x80 : 0));
    cairn__put_be32(p + 17, (uint32_t)r->line), cairn__put_be64(p + 21, r->fault_pos);
    memcpy(p + REC_HDR, r->error, n);
    return CAIRN_OK;
}

/* Deletes every state of a projection. */
static int states_drop(cairn_env *e, MDB_txn *txn, const char *name, size_t len) {
    uint8_t kb[NAME_MAX_ + 1];
    MDB_val k, v;
    MDB_cursor *c;
    int mrc;
    if (!cairn__senv(e)->pstate) return CAIRN_OK;
    memcpy(kb, name, len);
    kb[len] = 0;
    if ((mrc = mdb_cursor_open(txn, cairn__senv(e)->pstate, &c)))
        return cairn__mdb_fail(mrc, "projection state");
    k.mv_size = len + 1, k.mv_data = kb;
    mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (mrc == 0 && k.mv_size >= len + 1 && !memcmp(k.mv_data, kb, len + 1)) {
        if ((mrc = mdb_cursor_del(c, 0))) break;
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT); /* after a delete: the entry that followed */
    }
    mdb_cursor_close(c);
    return mrc == 0 || mrc == MDB_NOTFOUND ? CAIRN_OK : mdb_code(mrc, "drop projection state");
}

static int rec_reset(cairn_env *e, MDB_txn *txn, const char *name, size_t len, uint64_t hash) {
    prec r;
    int rc;
    memset(&r, 0, sizeof r);
    r.exists = 1, r.hash = hash;
    if ((rc = states_drop(e, txn, name, len))) return rc;
    return rec_put(e, txn, name, len, &r);
}

/* ---------------------------------------------------------------------------------
 * Opening a projection: script, upcasters, slots, source filter
 * --------------------------------------------------------------------------------- */
static void proj_close(proj *p) {
    if (p->h) cairn_lua_set_emit(p->h, NULL, NULL);
    free(p->vals);
    cairn_buf_free(&p->ebuf);
    free(p->emits);
    p->vals = NULL, p->emits = NULL;
}

static int field_slot(lua_State *L, int t, const char *k, int type) {
    lua_pushstring(L, k);
    if (lua_rawget(L, t) == type) return lua_gettop(L);
    lua_pop(L, 1);
    return 0;
}

/* Reads source.<field> (a sequence of strings) into vals from *at. */
static const cairn_slice *source_list(lua_State *L, int src, const char *field, cairn_slice *vals,
                                      size_t *at, size_t *n) {
    const cairn_slice *first = vals + *at;
    *n = 0;
    lua_pushstring(L, field);
    if (lua_rawget(L, src) == LUA_TTABLE) {
        size_t m = lua_rawlen(L, -1);
        for (size_t i = 1; i <= m; i++) {
            if (lua_rawgeti(L, -1, (lua_Integer)i) == LUA_TSTRING) {
                vals[*at].ptr = lua_tolstring(L, -1, &vals[*at].len); /* kept by the script */
                (*at)++, (*n)++;
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return *n ? first : NULL;
}

static int count_list(lua_State *L, int src, const char *field) {
    size_t m = 0;
    lua_pushstring(L, field);
    if (lua_rawget(L, src) == LUA_TTABLE) m = lua_rawlen(L, -1);
    lua_pop(L, 1);
    return (int)m;
}

/* [-0, +k] pushes what the projection needs; the caller restores the stack. */
static int proj_open(proj *p, cairn_store *s, cairn_lua *h, MDB_txn *txn, const char *name,
                     size_t len) {
    cairn_script_run run;
    size_t total, at = 0;
    int rc, srct;
    lua_State *L = cairn_lua_state(h);

    memset(p, 0, sizeof *p);
    p->s = s, p->h = h, p->L = L, p->txn = txn, p->name_len = len;
    memcpy(p->name, name, len);
    p->name[len] = 0;
    if ((rc = cairn__script_open(h, s->env, txn, CAIRN_SCRIPT_PROJECTION, name, len, &run)))
        return rc;
    p->hash = run.hash, p->up_hash = run.up_hash, p->script = run.script, p->up = run.up;
    if ((p->apply = field_slot(L, p->script, "apply", LUA_TTABLE)))
        p->star = field_slot(L, p->apply, "*", LUA_TFUNCTION);
    p->part = field_slot(L, p->script, "partition", LUA_TFUNCTION);
    p->init = field_slot(L, p->script, "init", LUA_TFUNCTION);
    lua_pushliteral(L, "mode");
    if (lua_rawget(L, p->script) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "inline"))
        p->is_inline = 1;
    lua_pop(L, 1);
    if ((srct = field_slot(L, p->script, "source", LUA_TTABLE))) {
        total = (size_t)count_list(L, srct, "categories") + count_list(L, srct, "streams") +
            count_list(L, srct, "types") + count_list(L, srct, "tags");
        if (total && !(p->vals = malloc(total * sizeof *p->vals)))
            return cairn__fail(CAIRN_ENOMEM, "out of memory");
        p->f.categories = source_list(L, srct, "categories", p->vals, &at, &p->f.ncategories);
        p->f.streams = source_list(L, srct, "streams", p->vals, &at, &p->f.nstreams);
        p->f.types = source_list(L, srct, "types", p->vals, &at, &p->f.ntypes);
        p->f.tags = source_list(L, srct, "tags", p->vals, &at, &p->f.ntags);
    }
    lua_newtable(L);
    p->cache = lua_gettop(L); /* partition key -> state table, for this batch */
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * emit(stream, type, data, metadata)
 * --------------------------------------------------------------------------------- */
static int emit_fn(lua_State *L) {
    proj *p = cairn_lua_emit_ud(L);
    pemit m;
    size_t sl, tl;
    const char *stream = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &sl) : NULL;
    const char *type = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &tl) : NULL;
    size_t before = p->ebuf.len;
    cairn_event_in ev;
    cairn_append_req q;
    char msg[300];
    const char *field = "";

    if (!stream || !type) return luaL_error(L, "emit: stream and type must be strings");
    if (p->fold_evs) { /* a batched fold: which event is being applied */
        size_t i = cairn_lua_fold_index(p->h);
        if (!p->src_id || i != p->emit_at) p->emit_index = 0, p->emit_at = i;
        p->src_id = p->fold_evs[i].id;
    }
    if (!p->src_id) return luaL_error(L, "emit is only available in projection handlers");
    if (lua_gettop(L) > 4) /* a fifth argument (tags, say) would be dropped */
        return luaL_error(L, "emit takes (stream, type, data, metadata), not %d arguments",
                          lua_gettop(L));
    /* metadata as an event table's (lua/event_in.c): a list would be stored as one */
    if (!lua_isnoneornil(L, 4) && cairn_lua_check_metadata(p->h, 4)) goto bad;
    if (p->nemits == p->cap_emits) {
        size_t nc = p->cap_emits ? p->cap_emits * 2 : 16;
        pemit *ne = realloc(p->emits, nc * sizeof *ne);
        if (!ne) return luaL_error(L, "emit: out of memory");
        p->emits = ne, p->cap_emits = nc;
    }
    memset(&m, 0, sizeof m);
    m.stream = p->ebuf.len, m.stream_len = sl;
    if (cairn_buf_append(&p->ebuf, stream, sl)) goto oom;
    m.type = p->ebuf.len, m.type_len = tl;
    if (cairn_buf_append(&p->ebuf, type, tl)) goto oom;
    m.data = p->ebuf.len;
    if (!lua_isnoneornil(L, 3) && cairn_lua_to_json(p->h, 3, &p->ebuf)) {
        field = "data: ";
        goto bad;
    }
    m.data_len = p->ebuf.len - m.data;
    m.meta = p->ebuf.len;
    if (lua_istable(L, 4)) {
        lua_pushnil(L);
        if (lua_next(L, 4)) {
            lua_pop(L, 2);
            if (cairn_lua_to_json(p->h, 4, &p->ebuf)) {
                field = "metadata: ";
                goto bad;
            }
        }
    }
    m.meta_len = p->ebuf.len - m.meta;
    /* the id: (projection name, source event id, emit index) -> UUIDv8 */
    cairn__uuid_derive_nth(p->name, p->name_len, p->src_id, p->emit_index++, m.id);
    /* validate now, so the error has the handler's line */
    memset(&ev, 0, sizeof ev);
    ev.type.ptr = p->ebuf.p + m.type, ev.type.len = tl;
    ev.data.ptr = p->ebuf.p + m.data, ev.data.len = m.data_len;
    ev.metadata.ptr = p->ebuf.p + m.meta, ev.metadata.len = m.meta_len;
    ev.schema = 1, ev.has_id = 1;
    memcpy(ev.id, m.id, 16);
    q.stream.ptr = p->ebuf.p + m.stream, q.stream.len = sl, q.expected = CAIRN_ANY, q.events = &ev,
    q.nevents = 1;
    /* the one check of an event (base/check.c), then the stream's and the size's */
    if (cairn__event_check(&ev) || cairn__validate_requests(&q, 1)) goto bad;
    /* what the batch holds until its end counts against the script memory cap */
    if (cairn_lua_hold(p->h, p->ebuf.len + (p->nemits + 1) * sizeof m)) goto bad;
    p->emits[p->nemits++] = m;
    return 0;
bad:
    snprintf(msg, sizeof msg, "emit: %s%.280s", field, cairn__err()->message);
    p->ebuf.len = before;
    return luaL_error(L, "%s", msg);
oom:
    p->ebuf.len = before;
    return luaL_error(L, "emit: out of memory");
}

/* Appends the batch's emitted events whose ids are not written yet (a rebuild after reset()
 * derives the same ids, and skips them). */
static int emits_flush(proj *p, int *wrote) {
    cairn_env *e = p->s->env;
    int rc;
    for (size_t i = 0; i < p->nemits; i++) {
        pemit *m = &p->emits[i];
        cairn_event_in ev;
        cairn_append_req q;
        cairn_append_result res;
        uint64_t at, first, count;
        int found;
        if ((rc = cairn__id_lookup(e, p->txn, m->id, &found, &at, &first, &count))) return rc;
        if (found) continue;
        memset(&ev, 0, sizeof ev);
        ev.type.ptr = p->ebuf.p + m->type, ev.type.len = m->type_len;
        ev.data.ptr = p->ebuf.p + m->data, ev.data.len = m->data_len;
        ev.metadata.ptr = p->ebuf.p + m->meta, ev.metadata.len = m->meta_len;
        ev.schema = 1, ev.has_id = 1;
        memcpy(ev.id, m->id, 16);
        q.stream.ptr = p->ebuf.p + m->stream, q.stream.len = m->stream_len;
        q.expected = CAIRN_ANY, q.events = &ev, q.nevents = 1;
        if ((rc = cairn__write_requests(p->s, p->txn, &q, NULL, 1, &res, 0))) return rc;
        if ((rc = cairn__snapshot_after_append(p->s, p->txn, &q, 1, &res))) return rc;
        *wrote = 1;
    }
    p->nemits = 0, p->ebuf.len = 0;
    (void)cairn_lua_hold(p->h, 0);
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * Applying events
 * --------------------------------------------------------------------------------- */
static size_t state_key(const proj *p, const char *key, size_t len, uint8_t *out) {
    memcpy(out, p->name, p->name_len);
    out[p->name_len] = 0;
    memcpy(out + p->name_len + 1, key, len);
    return p->name_len + 1 + len;
}

/* [-0, +1] pushes the state of the partition whose key is the string at `ki`: from the
 * batch's cache, else from the store, else init() (or {}); it is then in the cache. */
static int state_push(proj *p, int ki, uint64_t position) {
    lua_State *L = p->L;
    size_t len;
    const char *key = lua_tolstring(L, ki, &len);
    uint8_t kb[KEY_MAX];
    MDB_val k, v;
    int rc, mrc;

    lua_pushvalue(L, ki);
    if (lua_rawget(L, p->cache) == LUA_TTABLE) return CAIRN_OK;
    lua_pop(L, 1);
    k.mv_size = state_key(p, key, len, kb), k.mv_data = kb;
    mrc = cairn__senv(p->s->env)->pstate ? mdb_get(p->txn, cairn__senv(p->s->env)->pstate, &k, &v)
                                         : MDB_NOTFOUND;
    if (mrc == 0) {
        if ((rc = cairn_lua_push_json(p->h, v.mv_data, v.mv_size))) return rc;
        if (!lua_istable(L, -1)) lua_pop(L, 1), lua_newtable(L);
    } else if (mrc != MDB_NOTFOUND) {
        return cairn__mdb_fail(mrc, "read projection state");
    } else if (p->init) {
        lua_pushvalue(L, p->init);
        if ((rc = cairn_lua_call(p->h, p->name, 0, 1, position))) return rc;
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            return cairn__script_fail(p->name, position, "%s: init must return a table", p->name);
        }
    } else {
        lua_newtable(L);
    }
    lua_pushvalue(L, ki);
    lua_pushvalue(L, -2);
    lua_rawset(L, p->cache);
    return CAIRN_OK;
}

/* Calls fn(state, event); a returned table becomes the partition's state. */
static int call_handler(proj *p, int fn, int ki, int st, int evt, uint64_t position) {
    lua_State *L = p->L;
    int rc;
    lua_pushvalue(L, fn);
    lua_pushvalue(L, st);
    lua_pushvalue(L, evt);
    if ((rc = cairn_lua_call(p->h, p->name, 2, 1, position))) return rc;
    if (lua_istable(L, -1)) {
        lua_replace(L, st);
        lua_pushvalue(L, ki);
        lua_pushvalue(L, st);
        lua_rawset(L, p->cache);
    } else {
        lua_pop(L, 1);
    }
    return CAIRN_OK;
}

static int apply_one(proj *p, const cairn_event *ev) {
    lua_State *L = p->L;
    int top = lua_gettop(L), evt, ki, st, fn, rc, changed;

    if ((rc = cairn_lua_push_event(p->h, ev))) {
        if (rc == CAIRN_EINVAL)
            rc = cairn__script_fail(p->name, ev->position, "%s", cairn__err()->message);
        goto out;
    }
    if (p->up && (rc = cairn_lua_upcast(p->h, p->up, -1, ev->position, &changed))) goto out;
    evt = lua_gettop(L);
    if (p->part) {
        lua_pushvalue(L, p->part);
        lua_pushvalue(L, evt);
        if ((rc = cairn_lua_call(p->h, p->name, 1, 1, ev->position))) goto out;
        if (lua_type(L, -1) == LUA_TNUMBER) lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0 ||
            lua_rawlen(L, -1) + p->name_len + 1 > KEY_MAX ||
            !cairn__check_utf8(lua_tostring(L, -1), lua_rawlen(L, -1))) {
            /* not UTF-8: its state could never be reached (partitions() and state() speak
             * str), so the projection faults, as for '' */
            rc = cairn__script_fail(p->name, ev->position,
                                    "%s: partition must return a non-empty UTF-8 string (at "
                                    "most 510 bytes with the name)",
                                    p->name);
            goto out;
        }
    } else {
        lua_pushliteral(L, "");
    }
    ki = lua_gettop(L);
    if ((rc = state_push(p, ki, ev->position))) goto out;
    st = lua_gettop(L);
    p->src_id = ev->id, p->emit_index = 0;
    if (p->apply) {
        lua_pushliteral(L, "type");
        lua_rawget(L, evt);
        if (lua_type(L, -1) == LUA_TSTRING && lua_rawget(L, p->apply) == LUA_TFUNCTION) {
            fn = lua_gettop(L);
            if ((rc = call_handler(p, fn, ki, st, evt, ev->position))) goto out;
        }
    }
    if (p->star && (rc = call_handler(p, p->star, ki, st, evt, ev->position))) goto out;
out:
    p->src_id = NULL;
    lua_settop(L, top);
    if (rc == CAIRN_ESCRIPT || rc == CAIRN_EREJECTED) {
        cairn_error *err = cairn__err();
        if (!err->position) err->position = ev->position;
        if (!err->script[0]) snprintf(err->script, sizeof err->script, "%s", p->name);
    }
    return rc;
}

/* Writes every state touched in this batch. */
static int states_write(proj *p) {
    lua_State *L = p->L;
    cairn_buf b = {0};
    int rc = CAIRN_OK;
    if (!cairn__senv(p->s->env)->pstate)
        return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    lua_pushnil(L);
    while (lua_next(L, p->cache)) {
        size_t len;
        const char *key = lua_tolstring(L, -2, &len);
        uint8_t kb[KEY_MAX];
        MDB_val k, v;
        int mrc;
        b.len = 0;
        if ((rc = cairn_lua_to_json(p->h, -1, &b))) {
            char m[sizeof cairn__err()->message];
            snprintf(m, sizeof m, "%s", cairn__err()->message);
            if (len)
                cairn__fail(rc, "%s: state of partition '%.*s': %.400s", p->name,
                            (int)(len > 60 ? 60 : len), key, m);
            else
                cairn__fail(rc, "%s: state: %.400s", p->name, m);
            snprintf(cairn__err()->script, sizeof cairn__err()->script, "%s", p->name);
            lua_pop(L, 2);
            break;
        }
        lua_pop(L, 1);
        k.mv_size = state_key(p, key, len, kb), k.mv_data = kb;
        v.mv_size = b.len, v.mv_data = b.p;
        if ((mrc = mdb_put(p->txn, cairn__senv(p->s->env)->pstate, &k, &v, 0))) {
            lua_pop(L, 1);
            rc = mdb_code(mrc, "write projection state");
            break;
        }
    }
    cairn_buf_free(&b);
    lua_newtable(L);
    lua_replace(L, p->cache);
    return rc;
}

#define FOLD_MAX 512 /* events handed to one cairn_lua_fold */

/* An unpartitioned projection without upcasters folds its events in batches through the
 * Lua host (one protected call per batch, refilled event tables for async catch-up; see
 * cairn_lua_fold), like an aggregate load.  The batch is the events already in the
 * iterator's page: their pointers stay valid until it refills. */
static int advance_batched(proj *p, cairn_iter *it, uint64_t target, uint64_t limit, uint64_t *n,
                           uint64_t *last, int *more) {
    lua_State *L = p->L;
    cairn_event *evs = malloc(FOLD_MAX * sizeof *evs);
    int rc = CAIRN_OK, st, done_iter = 0, top = lua_gettop(L);

    if (!evs) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    p->reuse =
        !p->is_inline && !cairn__script_retains(p->L, CAIRN_SCRIPT_PROJECTION, p->name, p->hash, 0);
    lua_pushliteral(L, "");
    if ((rc = state_push(p, lua_gettop(L), 0))) goto out;
    st = lua_gettop(L);
    while (!done_iter) {
        size_t k = 0, done = 0;
        uint64_t room = limit ? limit - *n : UINT64_MAX;
        while (k < FOLD_MAX && k < room) {
            if (k && cairn_iter_buffered(it) == 0) break; /* a refill would move the page */
            rc = cairn_iter_next(it, &evs[k]);
            if (rc < 0) goto out;
            if (rc == 0 || evs[k].position > target) {
                done_iter = 1;
                break;
            }
            k++;
        }
        rc = CAIRN_OK;
        if (!k) break;
        p->fold_evs = evs, p->src_id = NULL;
        rc = cairn_lua_fold(p->h, p->name, st, p->apply, p->star, 0, evs, k, p->reuse, &done);
        p->fold_evs = NULL, p->src_id = NULL;
        if (rc) goto out;
        *n += k, *last = evs[k - 1].position;
        if (limit && *n >= limit) {
            *more = *last < target;
            break;
        }
    }
    if (p->reuse) {
        int escaped = 0;
        if ((rc = cairn_lua_fold_escaped(p->h, st, p->apply, p->star, 0, &escaped))) goto out;
        if (escaped) { /* a handler kept an event: this batch again, with fresh tables */
            cairn__script_retains(p->L, CAIRN_SCRIPT_PROJECTION, p->name, p->hash, 1);
            rc = CAIRN__ERETRY;
            goto out;
        }
    }
    lua_pushliteral(L, ""); /* the state (maybe a new table) back into the batch's cache */
    lua_pushvalue(L, st);
    lua_rawset(L, p->cache);
out:
    p->fold_evs = NULL;
    lua_settop(L, top);
    free(evs);
    return rc;
}

/* Advances the open projection inside p->txn: events after its position up to the head
 * (or up to stop_before - 1 when nonzero), at most `limit` source events (0: no limit).
 * Writes states, emitted events and the record.  *more: stopped at the limit. */
static int advance(proj *p, uint64_t stop_before, uint64_t limit, const prec *fault,
                   uint64_t *processed, int *more, int *wrote) {
    cairn_env *e = p->s->env;
    prec r;
    uint64_t head, target, last = 0, n = 0;
    cairn_iter *it = NULL;
    cairn_event ev;
    int rc;

    *more = 0;
    if ((rc = rec_get(e, p->txn, p->name, p->name_len, &r))) return rc;
    if (!r.exists || r.hash != p->hash) {
        if ((rc = rec_reset(e, p->txn, p->name, p->name_len, p->hash))) return rc;
        memset(&r, 0, sizeof r);
        r.exists = 1, r.hash = p->hash;
    }
    if (r.status == STATUS_FAULTED) return CAIRN_OK;
    if ((rc = cairn__head(e, p->txn, &head))) return rc;
    target = stop_before ? stop_before - 1 : head;
    if (!p->part &&
        !(fault &&
          r.position >= target)) { /* the unpartitioned state exists from the first run on */
        lua_pushliteral(p->L, "");
        if ((rc = state_push(p, lua_gettop(p->L), 0))) {
            lua_pop(p->L, 1);
            return rc;
        }
        lua_pop(p->L, 2);
    }
    cairn_lua_set_emit(p->h, emit_fn, p);
    if (r.position < target) {
        if ((rc = cairn_iter_all(p->s, r.position + 1, 0, 0, &p->f, &it))) goto out;
        cairn_iter_set_raw(it, 1); /* upcast here, in this state */
        cairn__iter_bind_txn(it, p->txn);
        if (!p->part && !p->up) {
            rc = advance_batched(p, it, target, limit, &n, &last, more);
            if (rc) goto out;
        } else {
            while ((rc = cairn_iter_next(it, &ev)) == 1) {
                if (ev.position > target) break;
                if ((rc = apply_one(p, &ev))) goto out;
                n++, last = ev.position;
                if (limit && n >= limit) {
                    *more = last < target;
                    break;
                }
            }
            if (rc < 0) goto out;
            rc = CAIRN_OK;
        }
    }
    r.position = *more ? last : (target > r.position ? target : r.position);
    r.is_inline = p->is_inline;
    if (fault) {
        r.status = STATUS_FAULTED, r.line = fault->line, r.fault_pos = fault->fault_pos;
        memcpy(r.error, fault->error, sizeof r.error);
    }
    if ((rc = emits_flush(p, wrote)) || (rc = states_write(p))) {
        if (rc == CAIRN_ESCRIPT && !cairn__err()->position && n == 1) cairn__err()->position = last;
        goto out;
    }
    rc = rec_put(e, p->txn, p->name, p->name_len, &r);
out:
    cairn_lua_set_emit(p->h, NULL, NULL);
    if (it) cairn_iter_close(it);
    *processed += rc == CAIRN_OK ? n : 0;
    return rc;
}

/* The fault record of the error just raised: "<name>: <message> (line L, event position P)". */
static void fault_of(prec *f, const char *name) {
    const cairn_error *err = cairn__err();
    const char *msg = err->code == CAIRN_EREJECTED ? err->reason : err->message;
    size_t nl = strlen(name);
    int named = !strncmp(msg, name, nl) && msg[nl] == ':'; /* Lua's "name:line: ..." */
    char where[96];
    memset(f, 0, sizeof *f);
    f->line = err->line, f->fault_pos = err->position;
    if (err->line > 0)
        snprintf(where, sizeof where, "line %d, event position %llu", err->line,
                 (unsigned long long)err->position);
    else
        snprintf(where, sizeof where, "event position %llu", (unsigned long long)err->position);
    snprintf(f->error, sizeof f->error, "%s%s%s%.400s (%s)", named ? "" : name, named ? "" : ": ",
             err->code == CAIRN_EREJECTED ? "reject: " : "", msg, where);
}

/* ---------------------------------------------------------------------------------
 * Running async projections
 * --------------------------------------------------------------------------------- */
/* One projection's run: its batches, then (after a handler failed) the events before the
 * failing one and the fault.  What a body computes is kept only once it commits. */
typedef struct run_args {
    cairn_store *s;
    cairn_lua *h;
    const char *name;
    size_t len;
    /* A failure not tied to an event (a state that does not encode at the end of a batch)
     * runs the batch again one event per commit, which finds the event. */
    uint64_t slow;     /* single-event commits left */
    const prec *fault; /* fault_body: the fault to record */
    uint64_t n;        /* source events processed by the body */
    int more, wrote;
} run_args;

static int batch_body(cairn_wtxn *w, void *ctx) {
    run_args *a = ctx;
    proj p;
    int rc, top = lua_gettop(cairn_lua_state(a->h));

    a->n = 0, a->more = 0, a->wrote = 0;
    /* inline projections are current already: for them this finds nothing to do */
    rc = proj_open(&p, a->s, a->h, w->txn, a->name, a->len);
    if (rc == CAIRN_OK) rc = advance(&p, 0, a->slow ? 1 : BATCH, NULL, &a->n, &a->more, &a->wrote);
    if (rc == CAIRN_OK && a->wrote) rc = cairn__projections_after_append(a->s, w->txn);
    proj_close(&p);
    lua_settop(cairn_lua_state(a->h), top);
    if (a->slow) a->slow--;
    if ((rc == CAIRN_ESCRIPT || rc == CAIRN_EREJECTED) && !cairn__err()->position && !a->slow) {
        a->slow = BATCH;
        return CAIRN__ERETRY;
    }
    w->notify = a->wrote;
    return rc;
}

/* Applies exactly the events before the failing one, and records the fault there. */
static int fault_body(cairn_wtxn *w, void *ctx) {
    run_args *a = ctx;
    const prec *fault = a->fault;
    cairn_env *e = a->s->env;
    proj p;
    int rc, top = lua_gettop(cairn_lua_state(a->h));

    a->n = 0, a->wrote = 0;
    rc = proj_open(&p, a->s, a->h, w->txn, a->name, a->len);
    if (rc == CAIRN_OK) {
        uint64_t stop = fault->fault_pos;
        if (!stop) { /* not at an event (init): stop where it stands */
            prec r;
            if ((rc = rec_get(e, w->txn, a->name, a->len, &r)) == CAIRN_OK) stop = r.position + 1;
        }
        if (rc == CAIRN_OK) rc = advance(&p, stop, 0, fault, &a->n, &a->more, &a->wrote);
        if (rc == CAIRN_ESCRIPT || rc == CAIRN_EREJECTED) { /* failed again: only the fault */
            prec r;
            a->n = 0;
            if ((rc = rec_get(e, w->txn, a->name, a->len, &r)) == CAIRN_OK) {
                r.status = STATUS_FAULTED, r.line = fault->line, r.fault_pos = fault->fault_pos;
                r.exists = 1, r.hash = p.hash;
                memcpy(r.error, fault->error, sizeof r.error);
                rc = rec_put(e, w->txn, a->name, a->len, &r);
            }
        }
    }
    if (rc == CAIRN_OK && a->wrote) rc = cairn__projections_after_append(a->s, w->txn);
    proj_close(&p);
    lua_settop(cairn_lua_state(a->h), top);
    w->notify = a->wrote;
    return rc;
}

static int run_one(cairn_store *s, cairn_lua *h, const char *name, size_t len,
                   uint64_t *processed) {
    run_args a = {s, h, name, len, 0, NULL, 0, 0, 0};
    prec fault;
    int rc;
    for (;;) {
        rc = cairn__write_txn(s->env, s->durability, batch_body, &a);
        if (rc != CAIRN_OK) break;
        *processed += a.n;
        if (!a.more) return CAIRN_OK;
    }
    if (rc != CAIRN_ESCRIPT && rc != CAIRN_EREJECTED) return rc;
    /* a handler failed: apply exactly the events before the failing one, and stop there */
    fault_of(&fault, name);
    a.fault = &fault;
    if ((rc = cairn__write_txn(s->env, s->durability, fault_body, &a))) return rc;
    *processed += a.n;
    cairn__clear_error();
    return CAIRN_OK;
}

typedef struct names {
    char (*v)[NAME_MAX_ + 1];
    size_t *len;
    size_t n, cap;
} names;

static int names_add(void *ctx, const char *name, size_t len) {
    names *ns = ctx;
    if (len > NAME_MAX_) return 0;
    if (ns->n == ns->cap) {
        size_t nc = ns->cap ? ns->cap * 2 : 8;
        void *nv = realloc(ns->v, nc * sizeof *ns->v), *nl;
        if (!nv) return 1;
        ns->v = nv;
        if (!(nl = realloc(ns->len, nc * sizeof *ns->len))) return 1;
        ns->len = nl, ns->cap = nc;
    }
    memcpy(ns->v[ns->n], name, len);
    ns->v[ns->n][len] = 0;
    ns->len[ns->n++] = len;
    return 0;
}

static void names_free(names *ns) {
    free(ns->v);
    free(ns->len);
}

int cairn_run_projections(cairn_store *s, const char *name, size_t name_len, uint64_t *processed) {
    cairn_lua *h;
    names ns = {0};
    int rc;
    uint64_t total = 0;

    cairn__clear_error();
    if (processed) *processed = 0;
    if ((rc = cairn__store_check(s))) return rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    if (name) {
        if ((rc = cairn__check_name(name, name_len))) return rc;
        if ((rc = names_add(&ns, name, name_len)))
            return cairn__fail(CAIRN_ENOMEM, "out of memory");
    } else if ((rc = cairn_scripts(s, CAIRN_SCRIPT_PROJECTION, names_add, &ns))) {
        names_free(&ns);
        return rc;
    }
    if ((rc = cairn__lua_acquire(s->env, &s->lim, &h))) {
        names_free(&ns);
        return rc;
    }
    for (size_t i = 0; i < ns.n; i++) {
        rc = run_one(s, h, ns.v[i], ns.len[i], &total);
        if (rc == CAIRN_ENOTFOUND && !name) rc = CAIRN_OK; /* deleted meanwhile */
        if (rc) break;
    }
    cairn__lua_release(s->env, &s->lim, h);
    names_free(&ns);
    if (processed) *processed = total;
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Inline projections
 * --------------------------------------------------------------------------------- */
static int inline_catch_up(cairn_store *s, MDB_txn *txn, cairn_lua *h, const char *name, size_t len,
                           int only_inline) {
    proj p;
    int rc, more, wrote = 0, top = lua_gettop(cairn_lua_state(h));
    uint64_t n = 0;
    rc = proj_open(&p, s, h, txn, name, len);
    if (rc == CAIRN_OK && (p.is_inline || !only_inline)) {
        if (p.is_inline) rc = advance(&p, 0, 0, NULL, &n, &more, &wrote);
    }
    proj_close(&p);
    lua_settop(cairn_lua_state(h), top);
    return rc;
}

/* An inline projection that fails fails the write that fed it, and every later one it fails
 * on: say which refused, and the way out (Python's names: store.define_projection,
 * store.delete_projection).  A reject() there is no command's rejection: a script error. */
static int inline_refused(int rc, const char *name) {
    cairn_error *err = cairn__err();
    char msg[sizeof err->message];
    if (rc != CAIRN_ESCRIPT && rc != CAIRN_EREJECTED) return rc;
    if (rc == CAIRN_EREJECTED)
        snprintf(msg, sizeof msg, "reject: %s", err->reason);
    else
        snprintf(msg, sizeof msg, "%s", err->message);
    cairn__fail(CAIRN_ESCRIPT,
                "inline projection %s refused the write (nothing was written): %.300s; to write "
                "again, fix it (define_projection) or remove it (delete_projection)",
                name, msg);
    snprintf(err->script, sizeof err->script, "%s", name);
    err->reason[0] = '\0', err->details = NULL, err->details_len = 0;
    return CAIRN_ESCRIPT;
}

int cairn__projections_after_append(cairn_store *s, MDB_txn *txn) {
    MDB_cursor *c;
    MDB_val k, v;
    names ns = {0};
    cairn_lua *h;
    int rc = CAIRN_OK, mrc;

    /* the records say which projections are inline (written by their catch-up at define
     * and after every reset), so no script is loaded for the others */
    if (!cairn__senv(s->env)->proj) return CAIRN_OK;
    if ((mrc = mdb_cursor_open(txn, cairn__senv(s->env)->proj, &c)))
        return cairn__mdb_fail(mrc, "list projections");
    mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (mrc == 0) {
        if (v.mv_size >= REC_HDR && (((uint8_t *)v.mv_data)[16] & 0x80) &&
            names_add(&ns, (const char *)k.mv_data, k.mv_size)) {
            rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
            break;
        }
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc || !ns.n) {
        names_free(&ns);
        return rc;
    }
    if ((rc = cairn__lua_acquire(s->env, &s->lim, &h))) {
        names_free(&ns);
        return rc;
    }
    for (size_t i = 0; i < ns.n && rc == CAIRN_OK; i++)
        rc = inline_refused(inline_catch_up(s, txn, h, ns.v[i], ns.len[i], 1), ns.v[i]);
    cairn__lua_release(s->env, &s->lim, h);
    names_free(&ns);
    return rc;
}

int cairn__projection_defined(cairn_store *s, MDB_txn *txn, const char *name, size_t len,
                              uint64_t hash) {
    prec r;
    cairn_lua *h;
    int rc;
    if ((rc = rec_get(s->env, txn, name, len, &r))) return rc;
    if (r.exists && r.hash != hash && (rc = rec_reset(s->env, txn, name, len, hash))) return rc;
    if ((rc = cairn__lua_acquire(s->env, &s->lim, &h))) return rc;
    rc = inline_catch_up(s, txn, h, name, len, 1);
    cairn__lua_release(s->env, &s->lim, h);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Reading, resetting, deleting
 * --------------------------------------------------------------------------------- */
/* The record as the current script sees it: a stale hash reads as a fresh start. */
static int rec_current(cairn_store *s, MDB_txn *txn, const char *name, size_t len, prec *r) {
    uint64_t hash;
    const char *src;
    size_t src_len;
    int rc;
    if ((rc = cairn__script_get(s->env, txn, CAIRN_SCRIPT_PROJECTION, name, len, &hash, &src,
                                &src_len)))
        return rc;
    if (!src) return cairn__fail(CAIRN_ENOTFOUND, "no projection named %.*s", (int)len, name);
    if ((rc = rec_get(s->env, txn, name, len, r))) return rc;
    if (r->exists && r->hash != hash) memset(r, 0, sizeof *r);
    return CAIRN_OK;
}

int cairn_projection_info(cairn_store *s, const char *name, size_t name_len,
                          cairn_projection_status *out) {
    MDB_txn *txn;
    prec r;
    int rc;
    cairn__clear_error();
    memset(out, 0, sizeof *out);
    if ((rc = cairn__store_check(s)) || (rc = cairn__check_name(name, name_len))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    rc = rec_current(s, txn, name, name_len, &r);
    cairn__read_end(s->env, txn);
    if (rc) return rc;
    out->position = r.position, out->faulted = r.status == STATUS_FAULTED, out->started = r.exists;
    if (out->faulted) {
        out->error_line = r.line, out->error_position = r.fault_pos;
        snprintf(out->error, sizeof out->error, "%s", r.error);
    }
    return CAIRN_OK;
}

int cairn_projection_state(cairn_store *s, const char *name, size_t name_len, const char *partition,
                           size_t partition_len, char **json, size_t *len) {
    MDB_txn *txn;
    prec r;
    uint8_t kb[KEY_MAX];
    MDB_val k, v;
    int rc, mrc;
    cairn__clear_error();
    *json = NULL, *len = 0;
    if ((rc = cairn__store_check(s)) || (rc = cairn__check_name(name, name_len))) return rc;
    if (partition && partition_len + name_len + 1 > KEY_MAX)
        return cairn__fail(CAIRN_ENOTFOUND, "no such partition");
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    if ((rc = rec_current(s, txn, name, name_len, &r))) goto out;
    if (!r.exists || !cairn__senv(s->env)->pstate) {
        rc = cairn__fail(CAIRN_ENOTFOUND, "projection %.*s has not run yet", (int)name_len, name);
        goto out;
    }
    memcpy(kb, name, name_len);
    kb[name_len] = 0;
    if (partition_len) memcpy(kb + name_len + 1, partition, partition_len);
    k.mv_size = name_len + 1 + (partition ? partition_len : 0), k.mv_data = kb;
    if ((mrc = mdb_get(txn, cairn__senv(s->env)->pstate, &k, &v))) {
        rc = mrc == MDB_NOTFOUND ? cairn__fail(CAIRN_ENOTFOUND, "no state")
                                 : cairn__mdb_fail(mrc, "read state");
        goto out;
    }
    if (!(*json = malloc(v.mv_size + 1))) {
        rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(*json, v.mv_data, v.mv_size);
    (*json)[v.mv_size] = 0, *len = v.mv_size;
out:
    cairn__read_end(s->env, txn);
    return rc;
}

int cairn_projection_partitions(cairn_store *s, const char *name, size_t name_len, cairn_name_fn fn,
                                void *ctx) {
    MDB_txn *txn;
    MDB_cursor *c;
    prec r;
    uint8_t kb[NAME_MAX_ + 1];
    MDB_val k, v;
    int rc, mrc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s)) || (rc = cairn__check_name(name, name_len))) return rc;
    if (!fn) return cairn__fail(CAIRN_EINVAL, "fn: NULL");
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    if ((rc = rec_current(s, txn, name, name_len, &r)) || !r.exists || !cairn__senv(s->env)->pstate)
        goto out;
    if ((mrc = mdb_cursor_open(txn, cairn__senv(s->env)->pstate, &c))) {
        rc = cairn__mdb_fail(mrc, "list partitions");
        goto out;
    }
    memcpy(kb, name, name_len);
    kb[name_len] = 0;
    k.mv_size = name_len + 1, k.mv_data = kb;
    mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (mrc == 0 && k.mv_size >= name_len + 1 && !memcmp(k.mv_data, kb, name_len + 1)) {
        if (k.mv_size > name_len + 1 &&
            fn(ctx, (const char *)k.mv_data + name_len + 1, k.mv_size - name_len - 1))
            break;
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (mrc != 0 && mrc != MDB_NOTFOUND) rc = cairn__mdb_fail(mrc, "list partitions");
out:
    cairn__read_end(s->env, txn);
    return rc;
}

typedef struct reset_args {
    cairn_store *s;
    const char *name;
    size_t len;
    int drop; /* delete instead of reset */
} reset_args;

static int reset_body(cairn_wtxn *w, void *ctx) {
    reset_args *a = ctx;
    cairn_store *s = a->s;
    MDB_txn *txn = w->txn;
    uint64_t hash;
    const char *src;
    size_t src_len;
    int rc, mrc;
    if ((rc = cairn__script_get(s->env, txn, CAIRN_SCRIPT_PROJECTION, a->name, a->len, &hash, &src,
                                &src_len)))
        return rc;
    if (!src) return cairn__fail(CAIRN_ENOTFOUND, "no projection named %.*s", (int)a->len, a->name);
    if (a->drop) {
        uint8_t kb[1 + NAME_MAX_];
        MDB_val k = {a->len + 1, kb};
        kb[0] = CAIRN_SCRIPT_PROJECTION;
        memcpy(kb + 1, a->name, a->len);
        if ((rc = states_drop(s->env, txn, a->name, a->len))) return rc;
        if ((mrc = mdb_del(txn, cairn__senv(s->env)->scripts, &k, NULL)))
            return mdb_code(mrc, "delete projection");
        k.mv_size = a->len, k.mv_data = (void *)a->name;
        if (cairn__senv(s->env)->proj &&
            (mrc = mdb_del(txn, cairn__senv(s->env)->proj, &k, NULL)) && mrc != MDB_NOTFOUND)
            return mdb_code(mrc, "delete projection");
        return CAIRN_OK;
    }
    if ((rc = rec_reset(s->env, txn, a->name, a->len, hash))) return rc;
    {
        cairn_lua *h;
        if ((rc = cairn__lua_acquire(s->env, &s->lim, &h))) return rc;
        rc = inline_catch_up(s, txn, h, a->name, a->len, 1);
        cairn__lua_release(s->env, &s->lim, h);
    }
    w->notify = 1; /* an inline rebuild may have emitted */
    return rc;
}

static int reset_or_drop(cairn_store *s, const char *name, size_t len, int drop) {
    reset_args a = {s, name, len, drop};
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s)) || (rc = cairn__check_name(name, len))) return rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    return cairn__write_txn(s->env, s->durability, reset_body, &a);
}

int cairn_projection_reset(cairn_store *s, const char *name, size_t name_len) {
    return reset_or_drop(s, name, name_len, 0);
}

int cairn_delete_projection(cairn_store *s, const char *name, size_t name_len) {
    return reset_or_drop(s, name, name_len, 1);
}

/* ---------------------------------------------------------------------------------
 * The background runner: runs every async projection whenever the head moved, sleeping on
 * the commit notification in between.
 * --------------------------------------------------------------------------------- */
struct cairn_runner {
    cairn_store *s;
    pthread_t thread;
    pthread_mutex_t lock;
    int stop;
    int last_rc;
    pid_t pid; /* the process that started it: a child after fork() has no such thread */
};

static int runner_stopping(cairn_runner *r) {
    int stop;
    pthread_mutex_lock(&r->lock);
    stop = r->stop;
    pthread_mutex_unlock(&r->lock);
    return stop;
}

/* Sleeps on the store's commit notification (notify.c: woken by commits in any process;
 * where it cannot register it polls in short slices); re-checks at least every 250 ms. */
static void *runner_main(void *arg) {
    cairn_runner *r = arg;
    uint64_t done = UINT64_MAX; /* the head the projections were last run to */
    while (!runner_stopping(r)) {
        uint32_t seen = cairn__notify_seen(r->s->env);
        uint64_t head = 0, n;
        if (cairn_head(r->s, &head) == CAIRN_OK && head != done) {
            int rc = cairn_run_projections(r->s, NULL, 0, &n);
            if (rc == CAIRN_OK) done = head;
            r->last_rc = rc;
            continue; /* more may have come meanwhile */
        }
        if (!runner_stopping(r)) cairn__notify_wait(r->s->env, seen, 250);
    }
    return NULL;
}

int cairn_projections_start(cairn_store *s, cairn_runner **out) {
    cairn_runner *r;
    int rc;
    cairn__clear_error();
    *out = NULL;
    if ((rc = cairn__store_check(s))) return rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    if (!(r = calloc(1, sizeof *r))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    r->s = s, r->pid = getpid();
    pthread_mutex_init(&r->lock, NULL);
    if ((rc = pthread_create(&r->thread, NULL, runner_main, r))) {
        pthread_mutex_destroy(&r->lock);
        free(r);
        return cairn__fail(CAIRN_EIO, "start projection runner: %s", strerror(rc));
    }
    *out = r;
    return CAIRN_OK;
}

void cairn_projections_stop(cairn_runner *r) {
    if (!r || r->pid != getpid()) return; /* in a child after fork(): nothing to join (leaked) */
    pthread_mutex_lock(&r->lock);
    r->stop = 1;
    pthread_mutex_unlock(&r->lock);
    cairn__notify_commit(r->s->env, 0); /* wakes the runner (and, harmlessly, any waiter) */
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
