/*
 * event.c -- how Lua sees an event: the table of spec section 3 built from a decoded record,
 * one table per event with its fields presized, data and metadata decoded straight from the
 * stored JSON text.
 */
#include <stdio.h>

#include "host_impl.h"
#include "internal.h"

typedef struct event_args {
    cairn_lua *h;
    const cairn_event *ev;
    const char *bad; /* "data" or "metadata" when its JSON did not decode */
    char err[160];
} event_args;

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

/* [-1, +1, m] */
static int push_event_inner(lua_State *L) {
    event_args *a = lua_touserdata(L, 1);
    const cairn_event *ev = a->ev;
    lua_createtable(L, 0, 11);
    lua_pushlstring(L, ev->type.ptr, ev->type.len);
    lua_setfield(L, -2, "type");
    if (ev->flags & CAIRN_EVENT_BYTES) {
        lua_pushlstring(L, ev->data.ptr, ev->data.len);
        lua_setfield(L, -2, "data");
    } else if (ev->data.len) {
        if (lh_decode(L, ev->data.ptr, ev->data.len, &a->h->scratch, a->err, sizeof a->err)) {
            a->bad = "data";
            return 0;
        }
        lua_setfield(L, -2, "data");
    }
    if (ev->metadata.len) {
        if (lh_decode(L, ev->metadata.ptr, ev->metadata.len, &a->h->scratch, a->err,
                      sizeof a->err)) {
            a->bad = "metadata";
            return 0;
        }
    } else {
        lua_createtable(L, 0, 0);
    }
    lua_setfield(L, -2, "metadata");
    push_uuid(L, ev->id);
    lua_setfield(L, -2, "id");
    lua_pushlstring(L, ev->stream.ptr, ev->stream.len);
    lua_setfield(L, -2, "stream");
    lua_pushinteger(L, (lua_Integer)ev->version);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, (lua_Integer)ev->position);
    lua_setfield(L, -2, "position");
    lua_pushinteger(L, (lua_Integer)ev->timestamp);
    lua_setfield(L, -2, "timestamp");
    lua_pushinteger(L, (lua_Integer)ev->schema);
    lua_setfield(L, -2, "schema");
    lua_createtable(L, (int)(ev->ntags < 1u << 20 ? ev->ntags : 0), 0);
    size_t cursor = 0;
    cairn_slice tag;
    for (lua_Integer i = 1; cairn_event_tag(ev, &cursor, &tag); i++) {
        lua_pushlstring(L, tag.ptr, tag.len);
        lua_rawseti(L, -2, i);
    }
    lua_setfield(L, -2, "tags");
#ifdef CAIRN_EVENT_FORGOTTEN
    lua_pushboolean(L, (ev->flags & CAIRN_EVENT_FORGOTTEN) != 0);
#else
    lua_pushboolean(L, 0);
#endif
    lua_setfield(L, -2, "forgotten");
    return 1;
}

int cairn_lua_push_event(cairn_lua *h, const cairn_event *ev) {
    event_args a = {h, ev, NULL, ""};
    int status = lh_protect(h, push_event_inner, &a, 1);
    if (status != LUA_OK) return lh_fail_protected(h, status, "building an event table");
    if (a.bad) {
        lua_pop(h->L, 1);
        int rc = lh_fail(CAIRN_EINVAL, "event at position %llu: %s: %s",
                         (unsigned long long)ev->position, a.bad, a.err);
        cairn__err()->position = ev->position;
        return rc;
    }
    return CAIRN_OK;
}
