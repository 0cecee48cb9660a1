/*
 * script.h -- what the scripted features share (core/script: the scripts database, the pool of
 * Lua states, aggregates, projections, upcasting on reads).  This layer sits on the storage
 * (storage.h) and drives the Lua host (host.h); the storage reaches it only through the hooks
 * it fills in (cairn__script_hooks, given to cairn__store_open by cairn_open).  Nothing here is
 * public.
 */
#ifndef CAIRN_SCRIPT_H
#define CAIRN_SCRIPT_H

#include "host.h"
#include "storage.h"

/* ---------------------------------------------------------------------------------
 * Per environment (script.c): this layer's databases and the pool of idle Lua states,
 * kept in cairn_env.upper by the env_open hook.
 * --------------------------------------------------------------------------------- */
typedef struct cairn_script_env {
    MDB_dbi scripts; /* kind byte + name -> u64 XXH3 of source BE, source */
    MDB_dbi snaps;   /* u64 sid + u64 version -> u64 script hash, u64 upcasters hash, state JSON */
    MDB_dbi proj;    /* projection name -> position, script hash, status, fault (projection.c) */
    MDB_dbi pstate;  /* projection name + 0 + partition key -> state JSON ("" unpartitioned) */
    pthread_mutex_t lua_lock;  /* guards lua_idle */
    struct lua_slot *lua_idle; /* Lua states not in use, with their loaded scripts */
} cairn_script_env;

static inline cairn_script_env *cairn__senv(const cairn_env *e) {
    return (cairn_script_env *)e->upper;
}

/* The hooks the storage calls (script.c): this layer's databases and pool per environment,
 * snapshots and inline projections after an append, upcasting on reads. */
extern const cairn_hooks cairn__script_hooks;

/* A Lua state from the environment's pool for these limits (a new one when none is idle);
 * print() goes to lim->log until the next acquire on this thread.  Release returns it to
 * the pool with its loaded scripts. */
int cairn__lua_acquire(cairn_env *e, const cairn_script_limits *lim, cairn_lua **out);
void cairn__lua_release(cairn_env *e, const cairn_script_limits *lim, cairn_lua *h);

/* ---------------------------------------------------------------------------------
 * Stored scripts (script.c).  Each Lua state caches the scripts it has loaded by (kind,
 * name, hash of source).
 * --------------------------------------------------------------------------------- */
/* Borrowed (valid during txn): the stored source of a script; *hash 0 and CAIRN_OK with
 * *src NULL when there is none. */
int cairn__script_get(cairn_env *e, MDB_txn *txn, int kind, const void *name, size_t len,
                      uint64_t *hash, const char **src, size_t *src_len);
/* [-0, +1, -] pushes the script table, (re)loading it when the state's copy is stale. */
int cairn__script_push(cairn_lua *h, int kind, const char *name, size_t len, uint64_t hash,
                       const char *src, size_t src_len);
/* [-0, +(1|2), -] Opens a stored script for a run in txn, as aggregates and projections do:
 * pushes the script (kind, name), then the upcasters above it when there are any.  On
 * failure the caller restores the stack.  No such script: CAIRN_ENOTFOUND. */
typedef struct cairn_script_run {
    uint64_t hash, up_hash; /* sources' hashes (up_hash 0: no upcasters) */
    int script, up;         /* stack slots (up 0: no upcasters) */
} cairn_script_run;
int cairn__script_open(cairn_lua *h, cairn_env *e, MDB_txn *txn, int kind, const char *name,
                       size_t len, cairn_script_run *out);

/* ---------------------------------------------------------------------------------
 * Upcasting on reads (upcast.c): cairn_hooks.read_prepare, read_transform, read_free.
 * --------------------------------------------------------------------------------- */
int cairn__upcast_prepare(cairn_env *e, MDB_txn *txn, void **state, int *active);
int cairn__upcast_event(cairn_env *e, const cairn_script_limits *lim, void *state, cairn_event *ev);
void cairn__upcast_free(void *state);

/* ---------------------------------------------------------------------------------
 * Shared by aggregates and projections (script.c)
 * --------------------------------------------------------------------------------- */
/* A CAIRN_ESCRIPT failure of `script` at `position` (fmt has one %s: what). */
int cairn__script_fail(const char *script, uint64_t position, const char *fmt, const char *what);
/* [-0, +0, -] Whether a script was found keeping a fold's reused event tables (set:
 * remember that it was); per Lua state. */
int cairn__script_retains(lua_State *L, int kind, const char *name, uint64_t hash, int set);

/* ---------------------------------------------------------------------------------
 * After appends, inside the append's write txn
 * --------------------------------------------------------------------------------- */
/* Keeps aggregate snapshots current (aggregate.c); script failures there are not the
 * append's: they only skip the snapshot. */
/* Events of stream `sid` were removed (spec 6): its snapshots, which fold them, go. */
int cairn__snapshots_drop(cairn_env *e, MDB_txn *txn, uint64_t sid);
int cairn__snapshot_after_append(cairn_store *s, MDB_txn *txn, const cairn_append_req *reqs,
                                 size_t nreqs, const cairn_append_result *results);
/* Projections (projection.c).  Inline projections follow an append inside its txn (a
 * handler error fails the append with CAIRN_ESCRIPT); the define hook runs in the txn that
 * stores a projection script (resets on changed source, catches inline ones up). */
int cairn__projections_after_append(cairn_store *s, MDB_txn *txn);
int cairn__projection_defined(cairn_store *s, MDB_txn *txn, const char *name, size_t len,
                              uint64_t hash);

#endif
