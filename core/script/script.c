/*
 * script.c -- stored scripts and the Lua states that run them: the `scripts` database,
 * a pool of sandboxed states per environment (each caching the scripts it has loaded),
 * definition and listing; cairn_open, which gives the storage the hooks of this layer
 * (cairn__script_hooks).
 */
#include <stdio.h>
#include <stdlib.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "script.h"

#define DEFAULT_INSTRUCTIONS 10000000ull
#define DEFAULT_MEMORY (64ull << 20)
#define DEFAULT_TIME_NS 1000000000ull /* 1 s */
#define SCRIPT_NAME_MAX CAIRN__NAME_MAX
#define CACHE_KEY "cairn.scripts" /* registry: "k:name" -> {hash, table} */

typedef struct lua_slot {
    struct lua_slot *next;
    cairn_lua *h;
    uint64_t ilimit, mlimit;
} lua_slot;

/* print() lands here; the limits the state was acquired with say where it goes. */
static _Thread_local const cairn_script_limits *g_log_lim;

static void log_trampoline(void *ctx, const char *script, const char *msg, size_t len) {
    const cairn_script_limits *lim = g_log_lim;
    (void)ctx;
    if (lim && lim->log) lim->log(lim->log_ctx, script, msg, len);
}

static uint64_t ilimit_of(const cairn_script_limits *lim) {
    return lim->instructions ? lim->instructions : DEFAULT_INSTRUCTIONS;
}
static uint64_t mlimit_of(const cairn_script_limits *lim) {
    return lim->memory ? lim->memory : DEFAULT_MEMORY;
}
static uint64_t tlimit_of(const cairn_script_limits *lim) {
    if (lim->time_ns == UINT64_MAX) return 0; /* none */
    return lim->time_ns ? lim->time_ns : DEFAULT_TIME_NS;
}

int cairn__lua_acquire(cairn_env *e, const cairn_script_limits *lim, cairn_lua **out) {
    cairn_script_env *se = cairn__senv(e);
    lua_slot **pp, *slot = NULL;
    int rc;

    *out = NULL;
    pthread_mutex_lock(&se->lua_lock);
    for (pp = &se->lua_idle; *pp; pp = &(*pp)->next)
        if ((*pp)->ilimit == ilimit_of(lim) && (*pp)->mlimit == mlimit_of(lim)) {
            slot = *pp;
            *pp = slot->next;
            break;
        }
    pthread_mutex_unlock(&se->lua_lock);
    if (slot) {
        *out = slot->h;
        free(slot);
    } else if ((rc = cairn_lua_open(ilimit_of(lim), (size_t)mlimit_of(lim), log_trampoline, NULL,
                                    out))) {
        *out = NULL;
        return rc;
    }
    cairn_lua_set_time_limit(*out, tlimit_of(lim));
    g_log_lim = lim;
    return CAIRN_OK;
}

void cairn__lua_release(cairn_env *e, const cairn_script_limits *lim, cairn_lua *h) {
    cairn_script_env *se = cairn__senv(e);
    lua_slot *slot;
    if (!h) return;
    lua_settop(cairn_lua_state(h), 0);
    if (!(slot = malloc(sizeof *slot))) {
        cairn_lua_close(h);
        return;
    }
    slot->h = h, slot->ilimit = ilimit_of(lim), slot->mlimit = mlimit_of(lim);
    pthread_mutex_lock(&se->lua_lock);
    slot->next = se->lua_idle;
    se->lua_idle = slot;
    pthread_mutex_unlock(&se->lua_lock);
}

/* ---------------------------------------------------------------------------------
 * The hooks the storage calls: this layer's databases and pool per environment, what
 * follows an append, and upcasting on reads (upcast.c)
 * --------------------------------------------------------------------------------- */
static int senv_open(cairn_env *e, MDB_txn *txn, int fresh, int writable, void **data) {
    cairn_script_env *se = calloc(1, sizeof *se);
    unsigned cf = fresh ? MDB_CREATE : 0;
    int rc;
    (void)e;
    if (!se) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    pthread_mutex_init(&se->lua_lock, NULL);
    *data = se; /* freed by senv_close, whatever happens next */
    if ((rc = mdb_dbi_open(txn, "scripts", cf, &se->scripts)) ||
        (rc = mdb_dbi_open(txn, "snaps", cf, &se->snaps)))
        return cairn__mdb_fail(rc, "open store");
    /* added after format 1 shipped: created in older stores when writable, absent (dbi 0,
     * read as empty) in a read-only one */
    if ((rc = mdb_dbi_open(txn, "proj", writable ? MDB_CREATE : 0, &se->proj)) == MDB_NOTFOUND)
        se->proj = 0;
    else if (rc)
        return cairn__mdb_fail(rc, "open store");
    if ((rc = mdb_dbi_open(txn, "pstate", writable ? MDB_CREATE : 0, &se->pstate)) == MDB_NOTFOUND)
        se->pstate = 0;
    else if (rc)
        return cairn__mdb_fail(rc, "open store");
    return CAIRN_OK;
}

static void senv_close(cairn_env *e, void *data) {
    cairn_script_env *se = data;
    lua_slot *slot, *next;
    (void)e;
    if (!se) return;
    for (slot = se->lua_idle; slot; slot = next) {
        next = slot->next;
        cairn_lua_close(slot->h);
        free(slot);
    }
    pthread_mutex_destroy(&se->lua_lock);
    free(se);
}

/* Aggregate snapshots, then inline projections, in the append's txn. */
static int after_append(cairn_store *s, MDB_txn *txn, const cairn_append_req *reqs, size_t nreqs,
                        const cairn_append_result *results) {
    int rc = cairn__snapshot_after_append(s, txn, reqs, nreqs, results);
    return rc ? rc : cairn__projections_after_append(s, txn);
}

/* Forgetting a subject (spec 6): every aggregate snapshot goes, since a reducer may have
 * copied the subject's data into one; the next load folds from the events, where the data
 * now reads as forgotten.  All of them, because the snapshots do not record whose data they
 * hold; they are a cache.  Projection states are the user's to rebuild (docs/API.md 6). */
static int after_forget(cairn_store *s, MDB_txn *txn) {
    int rc = mdb_drop(txn, cairn__senv(s->env)->snaps, 0);
    if (rc == MDB_MAP_FULL) return CAIRN__EMAPFULL;
    return rc ? cairn__mdb_fail(rc, "drop snapshots") : CAIRN_OK;
}

const cairn_hooks cairn__script_hooks = {
    senv_open,           senv_close,         after_append, cairn__upcast_prepare,
    cairn__upcast_event, cairn__upcast_free, after_forget, cairn__snapshots_drop};

int cairn_open(const char *path, const cairn_options *opts, cairn_store **out) {
    return cairn__store_open(path, opts, &cairn__script_hooks, out);
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
    rc = mdb_get(txn, cairn__senv(e)->scripts, &k, &v);
    if (rc == MDB_NOTFOUND) return CAIRN_OK;
    if (rc) return cairn__mdb_fail(rc, "read script");
    if (v.mv_size < 8) return cairn__fail(CAIRN_ECORRUPT, "corrupt script entry");
    *hash = cairn__get_be64(v.mv_data);
    *src = (const char *)v.mv_data + 8;
    *src_len = v.mv_size - 8;
    return CAIRN_OK;
}

static const char *kind_name(int kind) {
    return kind == CAIRN_SCRIPT_AGGREGATE ? "aggregate"
        : kind == CAIRN_SCRIPT_PROJECTION ? "projection"
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
    lua_pushfstring(L, "%c:%s", kind + '0', nm); /* cache key */
    if (lua_rawget(L, -2) == LUA_TTABLE) {       /* {hash, table} */
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
    if ((rc = cairn_lua_check_shape(h, nm,
                                    kind == CAIRN_SCRIPT_AGGREGATE        ? CAIRN_LUA_AGGREGATE
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
    lua_rawset(L, -4);  /* cache[key] = {hash, table} */
    lua_replace(L, -2); /* drop the cache table, keep the script */
    return CAIRN_OK;
}

/* [-0, +(1|2), -] */
int cairn__script_open(cairn_lua *h, cairn_env *e, MDB_txn *txn, int kind, const char *name,
                       size_t len, cairn_script_run *out) {
    lua_State *L = cairn_lua_state(h);
    const char *src;
    size_t src_len;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = cairn__script_get(e, txn, kind, name, len, &out->hash, &src, &src_len))) return rc;
    if (!src)
        return cairn__fail(CAIRN_ENOTFOUND, "no %s named %.*s",
                           kind == CAIRN_SCRIPT_AGGREGATE ? "aggregate script" : kind_name(kind),
                           (int)len, name);
    if (!lua_checkstack(L, 16)) return cairn__fail(CAIRN_ENOMEM, "Lua stack exhausted");
    if ((rc = cairn__script_push(h, kind, name, len, out->hash, src, src_len))) return rc;
    out->script = lua_gettop(L);
    if ((rc = cairn__script_get(e, txn, CAIRN_SCRIPT_UPCASTERS, "upcasters", 9, &out->up_hash, &src,
                                &src_len)))
        return rc;
    if (src) {
        if ((rc = cairn__script_push(h, CAIRN_SCRIPT_UPCASTERS, "upcasters", 9, out->up_hash, src,
                                     src_len)))
            return rc;
        out->up = lua_gettop(L);
    }
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

    if ((rc = cairn__script_get(e, w->txn, d->kind, d->name, d->name_len, &old, &osrc, &olen)))
        return rc;
    if (old == d->hash && olen == d->src_len && memcmp(osrc, d->src, d->src_len) == 0) {
        w->skip = 1; /* same source: nothing changes */
        return CAIRN_OK;
    }
    k.mv_size = script_key(d->kind, d->name, d->name_len, kb), k.mv_data = kb;
    v.mv_size = 8 + d->src_len, v.mv_data = NULL;
    if ((rc = mdb_put(w->txn, cairn__senv(e)->scripts, &k, &v, MDB_RESERVE)))
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
    if ((rc = cairn__check_name(name, name_len))) return rc;
    if (!src && src_len) return cairn__fail(CAIRN_EINVAL, "source: NULL");
    d.hash = XXH3_64bits(src, src_len) | 1; /* never 0: 0 means "no script" */
    /* compile and check the shape in a state of our own before anything is stored */
    if ((rc = cairn__lua_acquire(s->env, &s->lim, &h))) return rc;
    rc = cairn__script_push(h, kind, name, name_len, d.hash, src ? src : "", src_len);
    if (rc == CAIRN_OK) lua_pop(cairn_lua_state(h), 1);
    cairn__lua_release(s->env, &s->lim, h);
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
    if ((rc = mdb_cursor_open(txn, cairn__senv(s->env)->scripts, &c))) {
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
    if ((rc = cairn__check_name(name, name_len))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    rc = cairn__script_get(s->env, txn, kind, name, name_len, &hash, &src, &n);
    if (rc == CAIRN_OK && !src)
        rc = cairn__fail(CAIRN_ENOTFOUND, "no %s script named %.*s", kind_name(kind), (int)name_len,
                         name);
    if (rc == CAIRN_OK && !(*out = malloc(n + 1))) rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
    if (rc == CAIRN_OK) memcpy(*out, src, n), (*out)[n] = 0, *len = n;
    cairn__read_end(s->env, txn);
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
