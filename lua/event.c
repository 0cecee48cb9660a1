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

#include "host_impl.h"
#include "internal.h"

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
    EK_N
};
_Static_assert(EK_N == LH_EVB_KEYS && EK_TYPE == LH_EVB_K_TYPE && EK_SCHEMA == LH_EVB_K_SCHEMA,
               "event keys");
static const char *const ek_name[EK_N] = {"type",   "data",    "metadata", "id",
                                          "stream", "version", "position", "timestamp",
                                          "schema", "tags",    "forgotten"};

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
    static const char hx[] = "0123456789abcdef";
    char u[36];
    int j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) u[j++] = '-';
        u[j++] = hx[id[i] >> 4];
        u[j++] = hx[id[i] & 15];
    }
    lua_pushlstring(L, u, sizeof u);
}

/* pushes key k of the builder; the value follows, then lua_rawset(L, t) */
#define KEY(k) lua_pushvalue(L, b->keys + (k))

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
    if (ev->flags & CAIRN_EVENT_BYTES) {
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
    KEY(EK_VERSION);
    lua_pushinteger(L, (lua_Integer)ev->version);
    lua_rawset(L, t);
    KEY(EK_POSITION);
    lua_pushinteger(L, (lua_Integer)ev->position);
    lua_rawset(L, t);
    KEY(EK_TIMESTAMP);
    lua_pushinteger(L, (lua_Integer)ev->timestamp);
    lua_rawset(L, t);
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
#ifdef CAIRN_EVENT_FORGOTTEN
    lua_pushboolean(L, (ev->flags & CAIRN_EVENT_FORGOTTEN) != 0);
#else
    lua_pushboolean(L, 0);
#endif
    lua_rawset(L, t);
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
