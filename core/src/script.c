/*
 * script.c -- stored scripts and the Lua states that run them: the `scripts` database,
 * a pool of sandboxed states per environment (each caching the scripts it has loaded),
 * definition, listing, and upcasting of events on the read paths.
 */
#include <stdio.h>
#include <stdlib.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "host.h"
#include "internal.h"

#define DEFAULT_INSTRUCTIONS 10000000ull
#define DEFAULT_MEMORY (64ull << 20)
#define SCRIPT_NAME_MAX 255
#define CACHE_KEY "cairn.scripts" /* registry: "k:name" -> {hash, table} */

typedef struct lua_slot {
    struct lua_slot *next;
    cairn_lua *h;
    uint64_t ilimit, mlimit;
} lua_slot;

/* print() lands here; the store that acquired the state says where it goes. */
static _Thread_local cairn_store *g_log_store;

static void log_trampoline(void *ctx, const char *script, const char *msg, size_t len) {
    cairn_store *s = g_log_store;
    (void)ctx;
    if (s && s->log) s->log(s->log_ctx, script, msg, len);
}

static uint64_t ilimit_of(const cairn_store *s) {
    return s->instruction_limit ? s->instruction_limit : DEFAULT_INSTRUCTIONS;
}
static uint64_t mlimit_of(const cairn_store *s) {
    return s->memory_limit ? s->memory_limit : DEFAULT_MEMORY;
}

cairn_lua *cairn__lua_acquire(cairn_store *s) {
    cairn_env *e = s->env;
    lua_slot **pp, *slot = NULL;
    cairn_lua *h = NULL;

    pthread_mutex_lock(&e->lua_lock);
    for (pp = &e->lua_idle; *pp; pp = &(*pp)->next)
        if ((*pp)->ilimit == ilimit_of(s) && (*pp)->mlimit == mlimit_of(s)) {
            slot = *pp;
            *pp = slot->next;
            break;
        }
    pthread_mutex_unlock(&e->lua_lock);
    if (slot) {
        h = slot->h;
        free(slot);
    } else if (cairn_lua_open(ilimit_of(s), (size_t)mlimit_of(s), log_trampoline, NULL, &h)) {
        return NULL;
    }
    g_log_store = s;
    return h;
}

void cairn__lua_release(cairn_store *s, cairn_lua *h) {
    lua_slot *slot;
    if (!h) return;
    lua_settop(cairn_lua_state(h), 0);
    if (!(slot = malloc(sizeof *slot))) {
        cairn_lua_close(h);
        return;
    }
    slot->h = h, slot->ilimit = ilimit_of(s), slot->mlimit = mlimit_of(s);
    pthread_mutex_lock(&s->env->lua_lock);
    slot->next = s->env->lua_idle;
    s->env->lua_idle = slot;
    pthread_mutex_unlock(&s->env->lua_lock);
}

void cairn__lua_pool_free(cairn_env *e) {
    lua_slot *slot = e->lua_idle, *next;
    for (; slot; slot = next) {
        next = slot->next;
        cairn_lua_close(slot->h);
        free(slot);
    }
    e->lua_idle = NULL;
}

/* ---------------------------------------------------------------------------------
 * The scripts database
 * --------------------------------------------------------------------------------- */
static size_t script_key(int kind, const void *name, size_t len, uint8_t *out) {
    out[0] = (uint8_t)kind;
    memcpy(out + 1, name, len);
    return len + 1;
}

int cairn__script_get(cairn_env *e, MDB_txn *txn, int kind, const void *name, size_t len,
                      uint64_t *hash, const char **src, size_t *src_len) {
    uint8_t kb[1 + SCRIPT_NAME_MAX];
    MDB_val k, v;
    int rc;
    *hash = 0, *src = NULL, *src_len = 0;
    if (len > SCRIPT_NAME_MAX) return CAIRN_OK;
    k.mv_size = script_key(kind, name, len, kb), k.mv_data = kb;
    rc = mdb_get(txn, e->scripts, &k, &v);
    if (rc == MDB_NOTFOUND) return CAIRN_OK;
    if (rc) return cairn__mdb_fail(rc, "read script");
    if (v.mv_size < 8) return cairn__fail(CAIRN_ECORRUPT, "corrupt script entry");
    *hash = cairn__get_be64(v.mv_data);
    *src = (const char *)v.mv_data + 8;
    *src_len = v.mv_size - 8;
    return CAIRN_OK;
}

static const char *kind_name(int kind) {
    return kind == CAIRN_SCRIPT_AGGREGATE ? "aggregate" : kind == CAIRN_SCRIPT_PROJECTION ? "projection"
                                                                                        : "upcasters";
}

/* [-0, +1] */
int cairn__script_push(cairn_lua *h, int kind, const char *name, size_t len, uint64_t hash,
                       const char *src, size_t src_len) {
    lua_State *L = cairn_lua_state(h);
    char nm[SCRIPT_NAME_MAX + 1];
    int rc;

    memcpy(nm, name, len);
    nm[len] = 0;
    if (lua_getfield(L, LUA_REGISTRYINDEX, CACHE_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
    }
    lua_pushfstring(L, "%c:%s", kind + '0', nm);          /* cache key */
    if (lua_rawget(L, -2) == LUA_TTABLE) {                  /* {hash, table} */
        lua_rawgeti(L, -1, 1);
        if ((uint64_t)lua_tointeger(L, -1) == hash) {
            lua_pop(L, 1);
            lua_rawgeti(L, -1, 2);
            lua_replace(L, -3);
            lua_pop(L, 1);
            return CAIRN_OK;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if ((rc = cairn_lua_load(h, nm, src, src_len))) {
        lua_pop(L, 1);
        return rc;
    }
    if ((rc = cairn_lua_check_shape(h, nm, kind == CAIRN_SCRIPT_AGGREGATE ? CAIRN_LUA_AGGREGATE
                                           : kind == CAIRN_SCRIPT_PROJECTION ? CAIRN_LUA_PROJECTION
                                                                              : CAIRN_LUA_UPCASTERS))) {
        lua_pop(L, 2);
        return rc;
    }
    lua_createtable(L, 2, 0);
    lua_pushinteger(L, (lua_Integer)hash);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 2);
    lua_pushfstring(L, "%c:%s", kind + '0', nm);
    lua_insert(L, -2);
    lua_rawset(L, -4);           /* cache[key] = {hash, table} */
    lua_replace(L, -2);          /* drop the cache table, keep the script */
    return CAIRN_OK;
}

static int check_name(const char *name, size_t len) {
    if (!name || len == 0 || len > SCRIPT_NAME_MAX || memchr(name, 0, len) ||
        !cairn__check_utf8(name, len))
        return cairn__fail(CAIRN_EINVAL, "name: must be 1..%d bytes of UTF-8 without NUL",
                           SCRIPT_NAME_MAX);
    return CAIRN_OK;
}

typedef struct define_args {
    cairn_store *s;
    int kind;
    const char *name, *src;
    size_t name_len, src_len;
    uint64_t hash;
} define_args;

static int define_body(cairn_wtxn *w, void *ctx) {
    define_args *d = ctx;
    cairn_env *e = d->s->env;
    uint8_t kb[1 + SCRIPT_NAME_MAX];
    uint64_t old;
    const char *osrc;
    size_t olen;
    MDB_val k, v;
    int rc;

    if ((rc = cairn__script_get(e, w->txn, d->kind, d->name, d->name_len, &old, &osrc, &olen))) return rc;
    if (old == d->hash && olen == d->src_len && memcmp(osrc, d->src, d->src_len) == 0) {
        w->skip = 1; /* same source: nothing changes */
        return CAIRN_OK;
    }
    k.mv_size = script_key(d->kind, d->name, d->name_len, kb), k.mv_data = kb;
    v.mv_size = 8 + d->src_len, v.mv_data = NULL;
    if ((rc = mdb_put(w->txn, e->scripts, &k, &v, MDB_RESERVE)))
        return rc == MDB_MAP_FULL ? CAIRN__EMAPFULL : cairn__mdb_fail(rc, "store script");
    cairn__put_be64(v.mv_data, d->hash);
    if (d->src_len) memcpy((uint8_t *)v.mv_data + 8, d->src, d->src_len);
    /* a changed projection starts over; an inline one catches up in this txn */
    if (d->kind == CAIRN_SCRIPT_PROJECTION &&
        (rc = cairn__projection_defined(d->s, w->txn, d->name, d->name_len, d->hash)))
        return rc;
    w->notify = 1;
    return CAIRN_OK;
}

int cairn_define_script(cairn_store *s, cairn_script_kind kind, const char *name, size_t name_len,
                        const char *src, size_t src_len) {
    define_args d = {s, (int)kind, name, src, name_len, src_len, 0};
    cairn_lua *h;
    int rc;

    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    if (kind < CAIRN_SCRIPT_AGGREGATE || kind > CAIRN_SCRIPT_UPCASTERS)
        return cairn__fail(CAIRN_EINVAL, "kind: unknown script kind %d", (int)kind);
    if ((rc = check_name(name, name_len))) return rc;
    if (!src && src_len) return cairn__fail(CAIRN_EINVAL, "source: NULL");
    d.hash = XXH3_64bits(src, src_len) | 1; /* never 0: 0 means "no script" */
    /* compile and check the shape in a state of our own before anything is stored */
    if (!(h = cairn__lua_acquire(s))) return cairn__err()->code ? cairn__err()->code : CAIRN_ENOMEM;
    rc = cairn__script_push(h, kind, name, name_len, d.hash, src ? src : "", src_len);
    if (rc == CAIRN_OK) lua_pop(cairn_lua_state(h), 1);
    cairn__lua_release(s, h);
    if (rc) return rc;
    return cairn__write_txn(s->env, s->durability, define_body, &d);
}

int cairn_scripts(cairn_store *s, cairn_script_kind kind, cairn_name_fn fn, void *ctx) {
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    uint8_t kb = (uint8_t)kind;
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!fn) return cairn__fail(CAIRN_EINVAL, "fn: NULL");
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    if ((rc = mdb_cursor_open(txn, s->env->scripts, &c))) {
        cairn__read_end(s->env, txn);
        return cairn__mdb_fail(rc, "list scripts");
    }
    k.mv_size = 1, k.mv_data = &kb;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && ((uint8_t *)k.mv_data)[0] == kb) {
        if (fn(ctx, (const char *)k.mv_data + 1, k.mv_size - 1)) break;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    cairn__read_end(s->env, txn);
    return rc == 0 || rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "list scripts");
}

int cairn_script_source(cairn_store *s, cairn_script_kind kind, const char *name, size_t name_len,
                        char **out, size_t *len) {
    MDB_txn *txn;
    uint64_t hash;
    const char *src;
    size_t n;
    int rc;
    cairn__clear_error();
    *out = NULL, *len = 0;
    if ((rc = cairn__store_check(s))) return rc;
    if ((rc = check_name(name, name_len))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    rc = cairn__script_get(s->env, txn, kind, name, name_len, &hash, &src, &n);
    if (rc == CAIRN_OK && !src)
        rc = cairn__fail(CAIRN_ENOTFOUND, "no %s script named %.*s", kind_name(kind), (int)name_len, name);
    if (rc == CAIRN_OK && !(*out = malloc(n + 1))) rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
    if (rc == CAIRN_OK) memcpy(*out, src, n), (*out)[n] = 0, *len = n;
    cairn__read_end(s->env, txn);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Upcasting
 * --------------------------------------------------------------------------------- */

/* [-0, +0] The event table is at the top; `up` is the upcasters table. */
int cairn__upcast_table(cairn_lua *h, int up, int *changed) {
    lua_State *L = cairn_lua_state(h);
    int ev = lua_gettop(L), rc;
    uint64_t position;
    *changed = 0;
    lua_pushliteral(L, "position");
    lua_rawget(L, ev);
    position = (uint64_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    for (int guard = 0; guard < 1000; guard++) {
        lua_Integer schema;
        lua_pushliteral(L, "type");
        lua_rawget(L, ev);
        if (lua_rawget(L, up) != LUA_TTABLE) { lua_pop(L, 1); return CAIRN_OK; }
        lua_pushliteral(L, "schema");
        lua_rawget(L, ev);
        schema = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (lua_rawgeti(L, -1, schema) != LUA_TFUNCTION) { lua_pop(L, 2); return CAIRN_OK; }
        lua_remove(L, -2);
        lua_pushvalue(L, ev);
        if ((rc = cairn_lua_call(h, "upcasters", 1, 1, position))) return rc;
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            cairn__err()->position = position;
            snprintf(cairn__err()->script, sizeof cairn__err()->script, "upcasters");
            return cairn__fail(CAIRN_ESCRIPT, "upcaster for schema %lld did not return an event table",
                               (long long)schema);
        }
        lua_pushinteger(L, schema + 1);
        lua_setfield(L, -2, "schema");
        lua_replace(L, ev);
        *changed = 1;
    }
    return cairn__fail(CAIRN_ESCRIPT, "upcaster chain longer than 1000 steps");
}

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

int cairn__upcast_event(cairn_store *s, uint64_t hash, const char *src, size_t src_len,
                        cairn_event *ev, cairn_buf *b) {
    cairn_lua *h;
    lua_State *L;
    int rc, changed = 0, up, bytes = (ev->flags & CAIRN_EVENT_BYTES) != 0, str;
    size_t toff, tlen, doff, dlen, moff, mlen;

    if (!(h = cairn__lua_acquire(s))) return cairn__err()->code ? cairn__err()->code : CAIRN_ENOMEM;
    L = cairn_lua_state(h);
    if ((rc = cairn__script_push(h, CAIRN_SCRIPT_UPCASTERS, "upcasters", 9, hash, src, src_len))) goto out;
    up = lua_gettop(L);
    /* cheap test before building a table: is there an upcaster for this type and schema? */
    lua_pushlstring(L, ev->type.ptr, ev->type.len);
    if (lua_rawget(L, up) != LUA_TTABLE || lua_rawgeti(L, -1, ev->schema) != LUA_TFUNCTION) goto out;
    lua_settop(L, up);
    if ((rc = cairn_lua_push_event(h, ev))) goto out;
    if ((rc = cairn__upcast_table(h, up, &changed)) || !changed) goto out;
    b->len = 0;
    {
        int ev_idx = lua_gettop(L), t;
        lua_pushliteral(L, "type");
        t = lua_rawget(L, ev_idx);
        if (t != LUA_TSTRING) {
            rc = cairn__fail(CAIRN_ESCRIPT, "an upcaster left the event without a string type");
            snprintf(cairn__err()->script, sizeof cairn__err()->script, "upcasters");
            goto out;
        }
        {
            size_t n;
            const char *p = lua_tolstring(L, -1, &n);
            toff = b->len, tlen = n;
            if ((rc = cairn_buf_append(b, p, n))) goto out;
        }
        lua_pop(L, 1);
        str = bytes;
        if ((rc = field_json(h, ev_idx, "data", b, &doff, &dlen, bytes ? &str : NULL))) goto out;
        if ((rc = field_json(h, ev_idx, "metadata", b, &moff, &mlen, NULL))) goto out;
        lua_pushliteral(L, "schema");
        lua_rawget(L, ev_idx);
        ev->schema = (uint32_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    ev->type.ptr = b->p + toff, ev->type.len = tlen;
    ev->data.ptr = b->p + doff, ev->data.len = dlen;
    ev->metadata.ptr = b->p + moff, ev->metadata.len = mlen;
    if (!(bytes && str)) ev->flags &= ~(uint32_t)CAIRN_EVENT_BYTES;
out:
    if (rc == CAIRN_ESCRIPT && !cairn__err()->script[0])
        snprintf(cairn__err()->script, sizeof cairn__err()->script, "upcasters");
    if (rc && !cairn__err()->position) cairn__err()->position = ev->position;
    cairn__lua_release(s, h);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Shared by aggregates and projections
 * --------------------------------------------------------------------------------- */
int cairn__script_fail(const char *script, uint64_t position, const char *fmt, const char *what) {
    cairn_error *err = cairn__err();
    snprintf(err->script, sizeof err->script, "%s", script);
    err->position = position;
    return cairn__fail(CAIRN_ESCRIPT, fmt, what);
}

#define RETAINS_KEY "cairn.retains" /* registry: "kind:name:hash" -> true */

/* [-0, +0] Was this script (kind, name, source hash) found keeping the reused event tables
 * of a fold (cairn_lua_fold_escaped)?  With set, remember that it was; per Lua state. */
int cairn__script_retains(lua_State *L, int kind, const char *name, uint64_t hash, int set) {
    int r = 1;
    if (lua_getfield(L, LUA_REGISTRYINDEX, RETAINS_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        if (!set) return 0;
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, RETAINS_KEY);
    }
    lua_pushfstring(L, "%d:%s:%I", kind, name, (lua_Integer)hash);
    if (set) {
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
    } else {
        r = lua_rawget(L, -2) != LUA_TNIL;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return r;
}
