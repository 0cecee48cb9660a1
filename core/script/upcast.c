/*
 * upcast.c -- upcasting on the read paths: the storage's read hooks (cairn_hooks.read_*),
 * which keep an iterator's (or a thread's point reads') copy of the stored upcasters current
 * in each read txn and run a decoded event through their chain, writing the changed type,
 * data and metadata back as JSON.  Folds and projections upcast event tables themselves
 * (cairn_lua_fold, cairn_lua_upcast).
 */
#include <stdio.h>
#include <stdlib.h>

#include "script.h"

/* Writes a field of the event table at `ev` as JSON into buf at *off, *len bytes. */
static int field_json(cairn_lua *h, int ev, const char *field, cairn_buf *b, size_t *off,
                      size_t *len, int *is_string) {
    lua_State *L = cairn_lua_state(h);
    int t, rc = CAIRN_OK;
    lua_pushstring(L, field);
    t = lua_rawget(L, ev);
    *off = b->len, *len = 0;
    if (is_string) *is_string = 0;
    if (t == LUA_TNIL) goto out;
    if (t == LUA_TTABLE && !strcmp(field, "metadata")) {
        lua_pushnil(L);
        if (!lua_next(L, -2)) goto out; /* {} metadata: none */
        lua_pop(L, 2);
    }
    if (t == LUA_TSTRING && is_string) {
        size_t n;
        const char *p = lua_tolstring(L, -1, &n);
        *is_string = 1;
        if ((rc = cairn_buf_append(b, p, n))) goto out;
        *len = n;
        goto out;
    }
    if ((rc = cairn_lua_to_json(h, -1, b))) goto out;
    *len = b->len - *off;
out:
    lua_pop(L, 1);
    return rc;
}

/* The read hooks' state: the upcasters as of the last read txn, and the buffer that upcast
 * events point into. */
typedef struct upcast_state {
    uint64_t hash; /* 0: no upcasters */
    char *src;
    size_t len;
    cairn_buf buf;
} upcast_state;

int cairn__upcast_prepare(cairn_env *e, MDB_txn *txn, void **state, int *active) {
    upcast_state *u = *state;
    uint64_t h;
    const char *p;
    size_t n;
    int rc = cairn__script_get(e, txn, CAIRN_SCRIPT_UPCASTERS, "upcasters", 9, &h, &p, &n);
    if (rc) return rc;
    if (!u) {
        if (!h) { /* nothing to do, and nothing to keep */
            *active = 0;
            return CAIRN_OK;
        }
        if (!(u = calloc(1, sizeof *u))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
        *state = u;
    }
    if (h != u->hash) {
        free(u->src);
        u->src = NULL, u->hash = 0, u->len = 0;
        if (p) {
            if (!(u->src = malloc(n ? n : 1))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
            memcpy(u->src, p, n);
            u->hash = h, u->len = n;
        }
    }
    *active = u->hash != 0;
    return CAIRN_OK;
}

void cairn__upcast_free(void *state) {
    upcast_state *u = state;
    free(u->src);
    cairn_buf_free(&u->buf);
    free(u);
}

/* Applies the upcasters to a decoded event; on change ev's type, data, metadata and schema
 * point into the state's buffer. */
int cairn__upcast_event(cairn_env *e, const cairn_script_limits *lim, void *state,
                        cairn_event *ev) {
    upcast_state *u = state;
    cairn_buf *b = &u->buf;
    cairn_lua *h;
    lua_State *L;
    int rc, changed = 0, up, bytes = (ev->flags & CAIRN_EVENT_BYTES) != 0, str, field_failed = 0;
    size_t toff, tlen, doff, dlen, moff, mlen;

    if ((rc = cairn__lua_acquire(e, lim, &h))) return rc;
    L = cairn_lua_state(h);
    if ((rc = cairn__script_push(h, CAIRN_SCRIPT_UPCASTERS, "upcasters", 9, u->hash, u->src,
                                 u->len)))
        goto out;
    up = lua_gettop(L);
    /* cheap test before building a table: is there an upcaster for this type and schema? */
    lua_pushlstring(L, ev->type.ptr, ev->type.len);
    if (lua_rawget(L, up) != LUA_TTABLE || lua_rawgeti(L, -1, ev->schema) != LUA_TFUNCTION)
        goto out;
    lua_settop(L, up);
    if ((rc = cairn_lua_push_event(h, ev))) goto out;
    if ((rc = cairn_lua_upcast(h, up, -1, ev->position, &changed)) || !changed) goto out;
    b->len = 0;
    {
        /* the chain checked the result as an event table (lua/event_in.c): type a string */
        int ev_idx = lua_gettop(L);
        const char *field = "data";
        lua_pushliteral(L, "type");
        lua_rawget(L, ev_idx);
        {
            size_t n;
            const char *p = lua_tolstring(L, -1, &n);
            toff = b->len, tlen = n;
            if (cairn_buf_append(b, p, n)) {
                rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
                goto out;
            }
        }
        lua_pop(L, 1);
        /* a string data stays opaque bytes, or becomes so, when the upcaster's e.bytes says
         * so (nil: as the event was; the chain refused any other value) */
        lua_pushliteral(L, "bytes");
        if (lua_rawget(L, ev_idx) == LUA_TBOOLEAN) bytes = lua_toboolean(L, -1);
        lua_pop(L, 1);
        str = bytes;
        if ((rc = field_json(h, ev_idx, "data", b, &doff, &dlen, bytes ? &str : NULL)) ||
            (field = "metadata", rc = field_json(h, ev_idx, "metadata", b, &moff, &mlen, NULL))) {
            if (rc == CAIRN_ESCRIPT) {
                char m[sizeof cairn__err()->message];
                snprintf(m, sizeof m, "%s", cairn__err()->message);
                rc = cairn__fail(CAIRN_ESCRIPT, "upcasters: %s: %.400s (event at position %llu)",
                                 field, m, (unsigned long long)ev->position);
                field_failed = 1;
            }
            goto out;
        }
        lua_pushliteral(L, "schema");
        lua_rawget(L, ev_idx);
        ev->schema = (uint32_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    ev->type.ptr = b->p + toff, ev->type.len = tlen;
    ev->data.ptr = b->p + doff, ev->data.len = dlen;
    ev->metadata.ptr = b->p + moff, ev->metadata.len = mlen;
    if (bytes && str)
        ev->flags |= CAIRN_EVENT_BYTES;
    else
        ev->flags &= ~(uint32_t)CAIRN_EVENT_BYTES;
    {
        /* the one check of an event (base/check.c) on what the read hands back */
        cairn_event_in in;
        memset(&in, 0, sizeof in);
        in.type = ev->type, in.data = ev->data, in.metadata = ev->metadata;
        in.schema = ev->schema;
        if (cairn__event_check(&in)) {
            char m[sizeof cairn__err()->message];
            snprintf(m, sizeof m, "%s", cairn__err()->message);
            rc = cairn__fail(CAIRN_ESCRIPT,
                             "upcasters: the upcast event: %.400s (event at position %llu)", m,
                             (unsigned long long)ev->position);
            field_failed = 1;
        }
    }
out:
    if (rc == CAIRN_ESCRIPT && field_failed) { /* ours: no Lua error set the fields */
        cairn_error *err = cairn__err();
        snprintf(err->script, sizeof err->script, "upcasters");
        err->line = 0, err->position = ev->position;
    }
    if (rc == CAIRN_ESCRIPT && !cairn__err()->script[0])
        snprintf(cairn__err()->script, sizeof cairn__err()->script, "upcasters");
    if (rc && !cairn__err()->position) cairn__err()->position = ev->position;
    cairn__lua_release(e, lim, h);
    return rc;
}
