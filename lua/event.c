/*
 * event.c -- how Lua sees an event: the table of spec section 3 built from a decoded record,
 * one fresh table per event with its fields presized, data and metadata decoded straight from
 * the stored JSON text.
 *
 * The builder (lh_evb) keeps the field names and a small cache of recent strings (types,
 * streams) in stack slots of the frame that builds a batch, so that a field costs a raw set
 * with an interned key, and a repeated type or stream string is not hashed and interned again.
 */
#include <stdio.h>
#include <lauxlib.h>

#include "host_impl.h"

enum {
    EK_TYPE,
    EK_DATA,
    EK_METADATA,
    EK_ID,
    EK_STREAM,
    EK_VERSION,
    EK_POSITION,
    EK_TIMESTAMP,
    EK_SCHEMA,
    EK_TAGS,
    EK_FORGOTTEN,
    EK_BYTES,
    EK_SUBJECT,
    EK_N
};
_Static_assert(EK_N == LH_EVB_KEYS && EK_TYPE == LH_EVB_K_TYPE && EK_SCHEMA == LH_EVB_K_SCHEMA,
               "event keys");
static const char *const ek_name[EK_N] = {"type",      "data",     "metadata",  "id",     "stream",
                                          "version",   "position", "timestamp", "schema", "tags",
                                          "forgotten", "bytes",    "subject"};

/* [-0, +(LH_EVB_KEYS + (cache ? LH_EVB_CACHE : 0)), m] */
void lh_evb_open(lua_State *L, lh_evb *b, cairn_buf *scratch, int cache) {
    luaL_checkstack(L, EK_N + LH_EVB_CACHE + LH_EVB_ROOM, "building event tables");
    b->keys = lua_gettop(L) + 1;
    for (int i = 0; i < EK_N; i++) lua_pushstring(L, ek_name[i]);
    b->cache = cache ? lua_gettop(L) + 1 : 0;
    for (int i = 0; i < LH_EVB_CACHE; i++) {
        if (cache) lua_pushboolean(L, 0);
        b->sc[i].p = NULL;
        b->sc[i].len = 0;
    }
    b->scratch = scratch;
    b->bad = NULL;
    b->err[0] = '\0';
}

/* [-0, +1, m] through cache slot `slot` */
static inline void cached_string(lua_State *L, lh_evb *b, unsigned slot, const char *p,
                                 size_t len) {
    if (!b->cache) {
        lua_pushlstring(L, p, len);
        return;
    }
    if (b->sc[slot].len == len && b->sc[slot].p && memcmp(b->sc[slot].p, p, len) == 0) {
        lua_pushvalue(L, b->cache + (int)slot);
        return;
    }
    b->sc[slot].p = lua_pushlstring(L, p, len); /* stays valid while the slot holds it */
    b->sc[slot].len = len;
    lua_pushvalue(L, -1);
    lua_replace(L, b->cache + (int)slot);
}

/* [-0, +1, m] types and the like: slots 1 .. LH_EVB_CACHE - 1 (slot 0 is the stream's) */
void lh_evb_string(lua_State *L, lh_evb *b, const char *p, size_t len) {
    if (len == 0 || len > 64) {
        lua_pushlstring(L, p, len);
        return;
    }
    unsigned hsh = (unsigned)len * 31u + (unsigned char)p[0] * 7u + (unsigned char)p[len / 2] * 5u +
        (unsigned char)p[len - 1];
    cached_string(L, b, 1 + hsh % (LH_EVB_CACHE - 1), p, len);
}

/* [-0, +1, m] */
static void push_uuid(lua_State *L, const uint8_t id[16]) {
    char u[37];
    cairn__uuid_format(id, u);
    lua_pushlstring(L, u, 36);
}

/* pushes key k of the builder; the value follows, then lua_rawset(L, t) */
#define KEY(k) lua_pushvalue(L, b->keys + (k))

/* [-0, +0, m] the fields every event sets anew: version, position, timestamp */
static inline void set_counters(lua_State *L, const lh_evb *b, int t, const cairn_event *ev) {
    KEY(EK_VERSION);
    lua_pushinteger(L, (lua_Integer)ev->version);
    lua_rawset(L, t);
    KEY(EK_POSITION);
    lua_pushinteger(L, (lua_Integer)ev->position);
    lua_rawset(L, t);
    KEY(EK_TIMESTAMP);
    lua_pushinteger(L, (lua_Integer)ev->timestamp);
    lua_rawset(L, t);
}

/* [-0, +(1|0), m] */
int lh_evb_event(lua_State *L, lh_evb *b, const cairn_event *ev, int type_idx) {
    lua_createtable(L, 0, EK_N);
    int t = lua_gettop(L);
    KEY(EK_TYPE);
    if (type_idx)
        lua_pushvalue(L, type_idx);
    else
        lh_evb_string(L, b, ev->type.ptr, ev->type.len);
    lua_rawset(L, t);
    /* a bytes payload and a JSON string are both Lua strings: e.bytes tells them apart */
    KEY(EK_BYTES);
    lua_pushboolean(L, !ev->forgotten && (ev->flags & CAIRN_EVENT_BYTES) != 0);
    lua_rawset(L, t);
    if (ev->forgotten) {
        /* no data: the subject's key is gone (spec 6) */
    } else if (ev->flags & CAIRN_EVENT_BYTES) {
        KEY(EK_DATA);
        lua_pushlstring(L, ev->data.ptr, ev->data.len);
        lua_rawset(L, t);
    } else if (ev->data.len) {
        KEY(EK_DATA);
        if (lh_decode(L, ev->data.ptr, ev->data.len, b->scratch, b->err, sizeof b->err)) {
            b->bad = "data";
            lua_settop(L, t - 1);
            return -1;
        }
        lua_rawset(L, t);
    }
    KEY(EK_METADATA);
    if (ev->metadata.len) {
        if (lh_decode(L, ev->metadata.ptr, ev->metadata.len, b->scratch, b->err, sizeof b->err)) {
            b->bad = "metadata";
            lua_settop(L, t - 1);
            return -1;
        }
    } else {
        lua_createtable(L, 0, 0);
    }
    lua_rawset(L, t);
    KEY(EK_ID);
    push_uuid(L, ev->id);
    lua_rawset(L, t);
    KEY(EK_STREAM);
    cached_string(L, b, 0, ev->stream.ptr, ev->stream.len);
    lua_rawset(L, t);
    set_counters(L, b, t, ev);
    KEY(EK_SCHEMA);
    lua_pushinteger(L, (lua_Integer)ev->schema);
    lua_rawset(L, t);
    KEY(EK_TAGS);
    lua_createtable(L, (int)(ev->ntags < 1u << 20 ? ev->ntags : 0), 0);
    size_t cursor = 0;
    cairn_slice tag;
    for (lua_Integer i = 1; cairn_event_tag(ev, &cursor, &tag); i++) {
        lh_evb_string(L, b, tag.ptr, tag.len);
        lua_rawseti(L, -2, i);
    }
    lua_rawset(L, t);
    KEY(EK_FORGOTTEN);
    lua_pushboolean(L, ev->forgotten != 0);
    lua_rawset(L, t);
    if (ev->subject.len) {
        KEY(EK_SUBJECT);
        lh_evb_string(L, b, ev->subject.ptr, ev->subject.len);
        lua_rawset(L, t);
    }
    return 0;
}
#undef KEY

typedef struct event_args {
    cairn_lua *h;
    const cairn_event *ev;
    lh_evb b;
} event_args;

/* [-1, +1, m] */
static int push_event_inner(lua_State *L) {
    event_args *a = lua_touserdata(L, 1);
    lh_evb_open(L, &a->b, &a->h->scratch, 0); /* one event: no cache */
    if (lh_evb_event(L, &a->b, a->ev, 0)) return 0;
    return 1;
}

int cairn_lua_push_event(cairn_lua *h, const cairn_event *ev) {
    event_args a;
    a.h = h;
    a.ev = ev;
    a.b.bad = NULL;
    int status = lh_protect(h, push_event_inner, &a, 1);
    if (status != LUA_OK) return lh_fail_protected(h, status, "building an event table");
    if (a.b.bad) {
        lua_pop(h->L, 1);
        int rc = lh_fail(CAIRN_EINVAL, "event at position %llu: %s: %s",
                         (unsigned long long)ev->position, a.b.bad, a.b.err);
        cairn__err()->position = ev->position;
        return rc;
    }
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * Reusable event tables for long folds.  Reuse is only sound when no handler keeps a
 * reference to them or adds fields to the event: the fold checks that afterwards with
 * lh_reuse_reachable and folds again with fresh tables when it is not so.
 * --------------------------------------------------------------------------------- */
/* registry: {E, data, metadata, tags, E's metatable, id box, [7] E.stream, [8] E.schema,
 * [9] tampered, [10] the data table's key strings (lh_dkeys), [11] E.bytes} */
#define REUSE_KEY "cairn.reuse"

/* E's __index: materializes `id` from the id box (upvalue 1) on first read.  [-2, +1, m] */
static int reuse_index(lua_State *L) {
    uint8_t *id = lua_touserdata(L, lua_upvalueindex(1));
    size_t len;
    const char *k;
    if (lua_type(L, 2) != LUA_TSTRING) return 0;
    k = lua_tolstring(L, 2, &len);
    if (len != 2 || k[0] != 'i' || k[1] != 'd') return 0;
    push_uuid(L, id);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    id[16] = 1; /* the next event clears it */
    return 1;
}

static int reuse_tampered(lua_State *L, const lh_reuse *rp);

void lh_evb_reuse_open(lua_State *L, lh_reuse *r) {
    luaL_checkstack(L, LH_REUSE_SLOTS + 4, "reusable event tables");
    if (lua_getfield(L, LUA_REGISTRYINDEX, REUSE_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 6, 0);
        lua_createtable(L, 0, EK_N + 1);
        lua_rawseti(L, -2, 1);
        lua_createtable(L, 0, 4);
        lua_rawseti(L, -2, 2);
        lua_createtable(L, 0, 0);
        lua_rawseti(L, -2, 3);
        lua_createtable(L, 4, 0);
        lua_rawseti(L, -2, 4);
        lua_createtable(L, 0, 1);                   /* E's metatable */
        memset(lua_newuserdatauv(L, 17, 0), 0, 17); /* the id box: id + "materialized" */
        lua_pushvalue(L, -1);
        lua_rawseti(L, -4, 6);
        lua_pushcclosure(L, reuse_index, 1);
        lua_setfield(L, -2, "__index");
        lua_rawseti(L, -2, 5);
        lua_createtable(L, LH_DKEYS, 0);
        lua_rawseti(L, -2, 10);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, REUSE_KEY);
    }
    int t = lua_gettop(L);
    for (int i = 1; i <= LH_REUSE_SLOTS; i++) lua_rawgeti(L, t, i);
    lua_rawgeti(L, t, 6);
    r->idbox = lua_touserdata(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, t);
    lua_remove(L, t);
    lua_rawgeti(L, t + 5, 10);
    r->e = t, r->data = t + 1, r->meta = t + 2, r->tags = t + 3, r->mt = t + 4, r->reg = t + 5;
    r->stream = NULL, r->plain = 0, r->schema = -1, r->bytes = -1; /* the first event sets all */
    r->dk.tbl = t + 6, r->dk.n = -1, r->dk.tampered = 0; /* ... and empties the data table */
    if (reuse_tampered(L, r)) { /* by the previous batch: remember it for lh_reuse_reachable */
        lua_pushboolean(L, 1);
        lua_rawseti(L, r->reg, 9);
    }
}

void lh_evb_reuse_close(lua_State *L, lh_reuse *r) {
    lh_dkeys_check(L, r->data, &r->dk);
    if (r->dk.tampered) {
        lua_pushboolean(L, 1);
        lua_rawseti(L, r->reg, 9);
    }
}

void lh_evb_reuse_drop(lua_State *L) {
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, REUSE_KEY);
}

/* [-0, +0, -] empties a table in place (clearing fields during lua_next is allowed) */
static void clear_table(lua_State *L, int t) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, t);
    }
}

#define KEY(k) lua_pushvalue(L, b->keys + (k))

/* [-1, +0, m] E[key k] = the value at the top, recorded in the registry table's `slot`; the
 * value it replaces must be the one recorded there, else a handler wrote it (slot 9) */
static void reuse_keep(lua_State *L, const lh_evb *b, const lh_reuse *r, int k, int slot) {
    KEY(k);
    lua_rawget(L, r->e);
    lua_rawgeti(L, r->reg, slot);
    if (!lua_rawequal(L, -1, -2)) {
        lua_pushboolean(L, 1);
        lua_rawseti(L, r->reg, 9);
    }
    lua_pop(L, 2);
    lua_pushvalue(L, -1);
    lua_rawseti(L, r->reg, slot);
    KEY(k);
    lua_insert(L, -2);
    lua_rawset(L, r->e);
}

int lh_evb_event_reuse(lua_State *L, lh_evb *b, lh_reuse *r, const cairn_event *ev, int type_idx) {
    int t = r->e;
    int plain = !ev->metadata.len && !ev->ntags && !ev->subject.len; /* see r->plain */
    KEY(EK_TYPE);
    if (type_idx)
        lua_pushvalue(L, type_idx);
    else
        lh_evb_string(L, b, ev->type.ptr, ev->type.len);
    lua_rawset(L, t);
    if (r->idbox[16]) { /* materialized by the metatable when first read */
        KEY(EK_ID);
        lua_pushnil(L);
        lua_rawset(L, t);
        r->idbox[16] = 0;
    }
    memcpy(r->idbox, ev->id, 16);
    KEY(EK_DATA);
    if (ev->forgotten) {
        lua_pushnil(L);
    } else if (ev->flags & CAIRN_EVENT_BYTES) {
        lua_pushlstring(L, ev->data.ptr, ev->data.len);
    } else if (ev->data.len) {
        if (lh_decode_into(L, ev->data.ptr, ev->data.len, b->scratch, b->err, sizeof b->err,
                           r->data, &r->dk)) {
            b->bad = "data";
            lua_pop(L, 1);
            return -1;
        }
    } else {
        lua_pushnil(L);
    }
    lua_rawset(L, t);
    set_counters(L, b, t, ev);
    /* Fields that stay the same along a fold are set when they change (reuse_keep).  A
     * handler that overwrote one is found when it changes next or afterwards
     * (lh_reuse_reachable compares them with what was set, which the registry table
     * records) and the fold runs again with fresh tables. */
    if (r->schema != (lua_Integer)ev->schema) {
        lua_pushinteger(L, (lua_Integer)ev->schema);
        reuse_keep(L, b, r, EK_SCHEMA, 8);
        r->schema = (lua_Integer)ev->schema;
    }
    int bytes = !ev->forgotten && (ev->flags & CAIRN_EVENT_BYTES) != 0;
    if (r->bytes != bytes) {
        lua_pushboolean(L, bytes);
        reuse_keep(L, b, r, EK_BYTES, 11);
        r->bytes = bytes;
    }
    if (!r->stream || r->stream_len != ev->stream.len ||
        memcmp(r->stream, ev->stream.ptr, ev->stream.len) != 0) {
        cached_string(L, b, 0, ev->stream.ptr, ev->stream.len);
        r->stream = lua_tolstring(L, -1, &r->stream_len); /* kept by the registry's slot 7 */
        reuse_keep(L, b, r, EK_STREAM, 7);
    }
    if (plain && r->plain) goto done;
    lua_pushvalue(L, r->mt);
    lua_setmetatable(L, t);
    KEY(EK_METADATA);
    if (ev->metadata.len) {
        if (lh_decode(L, ev->metadata.ptr, ev->metadata.len, b->scratch, b->err, sizeof b->err)) {
            b->bad = "metadata";
            lua_pop(L, 1);
            return -1;
        }
    } else {
        clear_table(L, r->meta);
        lua_pushvalue(L, r->meta);
    }
    lua_rawset(L, t);
    KEY(EK_TAGS);
    {
        lua_Integer i = 1, old = (lua_Integer)lua_rawlen(L, r->tags);
        size_t cursor = 0;
        cairn_slice tag;
        for (; cairn_event_tag(ev, &cursor, &tag); i++) {
            lh_evb_string(L, b, tag.ptr, tag.len);
            lua_rawseti(L, r->tags, i);
        }
        for (; i <= old; i++) {
            lua_pushnil(L);
            lua_rawseti(L, r->tags, i);
        }
        if (lua_rawlen(L, r->tags) != (size_t)(i - 1)) clear_table(L, r->tags); /* not a sequence */
    }
    lua_pushvalue(L, r->tags);
    lua_rawset(L, t);
    KEY(EK_FORGOTTEN);
    lua_pushboolean(L, ev->forgotten != 0);
    lua_rawset(L, t);
    KEY(EK_SUBJECT);
    if (ev->subject.len)
        lh_evb_string(L, b, ev->subject.ptr, ev->subject.len);
    else
        lua_pushnil(L);
    lua_rawset(L, t);
    r->plain = plain;
done:
    lua_pushvalue(L, t);
    return 0;
}
#undef KEY

/* The reachability walk behind lh_reuse_reachable: an explicit stack of objects to visit,
 * a Lua table as the visited set. */
typedef struct walk {
    lua_State *L;
    int seen;    /* stack index of the visited set */
    int targets; /* stack index of the first reusable table */
    int found;
} walk;

/* [-1, +0, m] visits the value at the top (popped) */
static void visit(walk *w, int depth) {
    lua_State *L = w->L;
    int t = lua_type(L, -1);
    if (w->found || (t != LUA_TTABLE && t != LUA_TFUNCTION && t != LUA_TUSERDATA)) {
        lua_pop(L, 1);
        return;
    }
    for (int i = 0; i < 4; i++) /* E, its data, metadata and tags tables */
        if (lua_rawequal(L, -1, w->targets + i)) {
            w->found = 1;
            lua_pop(L, 1);
            return;
        }
    lua_pushvalue(L, -1);
    if (lua_rawget(L, w->seen) != LUA_TNIL) {
        lua_pop(L, 2);
        return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, w->seen);
    if (depth > 180 || !lua_checkstack(L, 6)) { /* too deep to follow: assume the worst */
        w->found = 1;
        lua_pop(L, 1);
        return;
    }
    int o = lua_gettop(L);
    if (lua_getmetatable(L, o)) visit(w, depth + 1);
    if (t == LUA_TTABLE) {
        lua_pushnil(L);
        while (!w->found && lua_next(L, o)) {
            lua_pushvalue(L, -2);
            visit(w, depth + 1); /* the key */
            visit(w, depth + 1); /* the value */
        }
        if (w->found) lua_settop(L, o);
    } else if (t == LUA_TFUNCTION) {
        for (int i = 1; !w->found && lua_getupvalue(L, o, i); i++) visit(w, depth + 1);
    } else {
        for (int i = 1; !w->found && lua_getiuservalue(L, o, i) != LUA_TNONE; i++)
            visit(w, depth + 1);
        if (!w->found) lua_pop(L, 1); /* the LUA_TNONE push */
    }
    lua_settop(L, o - 1);
}

/* [-0, +0, -] 1 when a handler changed one of the fields set only when they change (or
 * E's metatable, or the empty metadata table) since the fold set them, or did so in an
 * earlier batch of this fold (recorded in the registry table's slot 9). */
static int reuse_tampered(lua_State *L, const lh_reuse *rp) {
    lh_reuse r = *rp;
    int ok = 1, top = lua_gettop(L);
    if (lua_rawgeti(L, r.reg, 9) != LUA_TNIL) ok = 0;
    lua_pop(L, 1);
    if (ok && lua_rawgeti(L, r.reg, 7) != LUA_TNIL) { /* E has been filled */
        lua_pushliteral(L, "stream");
        lua_rawget(L, r.e);
        ok = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
        lua_pushliteral(L, "forgotten");
        ok = ok && lua_rawget(L, r.e) == LUA_TBOOLEAN;
        lua_pop(L, 1);
        lua_pushliteral(L, "schema");
        lua_rawget(L, r.e);
        lua_rawgeti(L, r.reg, 8);
        ok = ok && lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        lua_pushliteral(L, "bytes");
        lua_rawget(L, r.e);
        lua_rawgeti(L, r.reg, 11);
        ok = ok && lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        lua_pushliteral(L, "id"); /* absent, or the one the metatable made */
        if (lua_rawget(L, r.e) != LUA_TNIL) {
            if (!r.idbox[16]) {
                ok = 0;
            } else {
                push_uuid(L, r.idbox);
                ok = ok && lua_rawequal(L, -1, -2);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
        lua_pushliteral(L, "metadata");
        ok = ok && lua_rawget(L, r.e) == LUA_TTABLE;
        lua_pop(L, 1);
        lua_pushliteral(L, "tags");
        ok = ok && lua_rawget(L, r.e) == LUA_TTABLE;
        lua_pop(L, 1);
        lua_pushnil(L);
        if (lua_next(L, r.meta)) ok = 0; /* the empty metadata table is still empty */
        lua_settop(L, top + 1);
        lua_getmetatable(L, r.e);
        ok = ok && lua_rawequal(L, -1, r.mt);
    }
    lua_settop(L, top);
    return !ok;
}

int lh_reuse_reachable(lua_State *L, const int *roots, int nroots) {
    lh_reuse r;
    walk w = {L, 0, 0, 0};
    int top = lua_gettop(L);
    int abs[8];
    for (int i = 0; i < nroots && i < 8; i++) abs[i] = roots[i] ? lua_absindex(L, roots[i]) : 0;
    lh_evb_reuse_open(L, &r);
    w.targets = r.e;
    /* a field the fold did not put there means a handler wrote to the event */
    lua_pushnil(L);
    while (lua_next(L, r.e)) {
        int known = 0;
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (int i = 0; i < EK_N && !known; i++) known = strcmp(k, ek_name[i]) == 0;
        }
        if (!known) {
            lua_settop(L, top);
            return 1;
        }
    }
    if (reuse_tampered(L, &r)) {
        lua_settop(L, top);
        return 1;
    }
    lua_newtable(L);
    w.seen = lua_gettop(L);
    for (int i = 0; i < nroots && i < 8 && !w.found; i++) {
        if (!abs[i]) continue;
        lua_pushvalue(L, abs[i]);
        visit(&w, 0);
    }
    lua_settop(L, top);
    return w.found;
}
