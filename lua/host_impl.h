/*
 * host_impl.h -- what the Lua host's files share: the cairn_lua struct, the kill states, the
 * JSON codec (json.c), the budgeted C loops (pattern.c) and the protected-call helpers.
 * Not installed.
 */
#ifndef CAIRN_LUA_HOST_IMPL_H
#define CAIRN_LUA_HOST_IMPL_H

#include <lauxlib.h>
#include <lua.h>

#include "host.h"

/* Why a call is being torn down.  Once set, every pcall/xpcall in the script re-raises and
 * the count hook fires on every instruction, until cairn_lua_call returns. */
enum { LH_ALIVE = 0, LH_KILL_INSTR, LH_KILL_MEM, LH_KILL_REJECT, LH_KILL_TIME };

/* The allocator keeps freed blocks up to LH_SMALL_MAX bytes in free lists, one per 16-byte
 * class, up to LH_CACHE_MAX bytes in all: events are built and dropped by the hundred
 * thousand, and malloc/free were a fifth of that cost. */
#define LH_SMALL_MAX 512
#define LH_CLASSES (LH_SMALL_MAX / 16)

struct cairn_lua {
    lua_State *L;
    void *freelist[LH_CLASSES];   /* class c holds blocks of (c + 1) * 16 bytes */
    size_t cached;                /* bytes held in the free lists */
    size_t mem_used, mem_limit;   /* limit 0: none; used includes `held` */
    size_t held;                  /* bytes the host holds for scripts (cairn_lua_hold) */
    uint64_t instr_limit, budget; /* limit 0: none; budget left in this call */
    uint64_t time_limit;          /* ns per invocation, 0: none */
    uint64_t deadline;            /* CLOCK_MONOTONIC ns; 0: starts at the next check */
    int step;                     /* count-hook period while alive */
    int killed;                   /* LH_* */
    int mem_refused;              /* the allocator refused growth in this call */
    int mem_line;                 /* script line when it last refused, 0 unknown */
    int err_line;                 /* line recorded by the message handler / at the kill */
    int in_call;
    /* Encoding a value a call returned (cairn_lua_to_json after the call): the encoder spends
     * a budget and a time limit of its own, one more invocation's worth; solo_why is the
     * LH_KILL_* that stopped it. */
    int solo, solo_why;
    int guarded;        /* > 0: the allocator enforces the cap (calls, lh_protect) */
    const char *script; /* name of the running call's script (borrowed) */
    char errmsg[512];   /* message recorded by the message handler */
    cairn_lua_log_fn log;
    void *log_ctx;
    lua_CFunction emit;
    void *emit_ud;
    char reason[256]; /* reject(): reason, details as JSON */
    cairn_buf details;
    int has_details;
    cairn_buf scratch; /* json.encode output, decoder string unescaping */
    size_t *fold_at;   /* during cairn_lua_fold: the index of the event under way */
};

static inline cairn_lua *lh_host(lua_State *L) { return *(cairn_lua **)lua_getextraspace(L); }

/* The json.null sentinel: a light userdata with this address. */
extern const char lh_json_null;
#define lh_push_null(L) lua_pushlightuserdata((L), (void *)&lh_json_null)

/* [-0, +0, -] A table key for a message into buf: a number as [n]; a string with printable
 * ASCII kept, the rest as '?', cut at 60 bytes, as 'text' (quoted) or .text; any other key
 * as [a T key] (quoted) or [T key]. */
const char *lh_show_key(lua_State *L, int idx, char *buf, size_t cap, int quoted);

/* Encoding outside a call (lh_solo_begin .. lh_solo_end): lh_spend charges a budget and a
 * deadline of its own.  lh_spent_why: the LH_KILL_* that made lh_spend fail. */
void lh_solo_begin(cairn_lua *h);
void lh_solo_end(cairn_lua *h);
int lh_spent_why(lua_State *L);

/* [-0, +0, -] Encodes the value at idx onto out.  Never raises and never allocates from
 * Lua.  On failure writes a message into err and returns -1 (out->len restored). */
int lh_encode(lua_State *L, int idx, cairn_buf *out, char *err, size_t errlen);

/* [-0, +1, m] Decodes JSON text and pushes the value.  On a syntax error returns -1 with a
 * message in err and nothing pushed; raises only memory errors (no C resources held). */
int lh_decode(lua_State *L, const char *s, size_t len, cairn_buf *scratch, char *err,
              size_t errlen);

/* The keys a reusable data table holds (lh_decode_into): when the next object has the same
 * keys in the same order its values are written over theirs, and their strings (and a
 * string value equal to that key's last one) are pushed from `tbl` instead of being hashed
 * again.  A key a handler added between two events is
 * not emptied then; it is found (`tampered`) when the table is next emptied or checked, and
 * the fold then runs again with fresh tables (lh_reuse_reachable). */
#define LH_DKEYS 16
typedef struct lh_dkeys {
    int tbl; /* stack index of the array of those key strings (it keeps them alive) */
    int n;   /* how many; -1: not known (the table is emptied with no check) */
    struct {
        const char *p;
        size_t len;
    } k[LH_DKEYS], v[LH_DKEYS];     /* v: the last string value of that key (p NULL: none), when
                                 * short and plain ASCII; at tbl[LH_DKEYS + i + 1] */
    unsigned char kplain[LH_DKEYS]; /* key i's JSON text is the key between quotes */
    int tampered;                   /* the table held a key that is none of them */
} lh_dkeys;

/* [-0, +1, m] lh_decode, but a top-level object is decoded into the table at `reuse`
 * instead of a new one (its old fields gone; dk, may be NULL: see lh_dkeys); 0: as
 * lh_decode. */
int lh_decode_into(lua_State *L, const char *s, size_t len, cairn_buf *scratch, char *err,
                   size_t errlen, int reuse, lh_dkeys *dk);
/* [-0, +0, -] dk->tampered when the table at t holds a key that is none of dk's (known) */
void lh_dkeys_check(lua_State *L, int t, lh_dkeys *dk);

/* [-0, +1, m] Pushes the json library table (encode, decode, null). */
void lh_open_json(lua_State *L);

/* [-0, +0, v] Charges n units of work done in C to the running call's instruction budget
 * and checks the clock; raises the kill when the budget is spent or the time limit passed
 * (or when the call is already being killed).  For the C loops a script can start: pattern
 * matching (pattern.c), the string, table and utf8 functions that loop over their operands
 * (lh_open_budgeted), table.move.  LH_PER_BYTE bytes of a linear scan cost one unit. */
#define LH_PER_BYTE 64
void lh_charge(lua_State *L, uint64_t n);

/* [-0, +0, -] As lh_charge, for C code that must not raise (the JSON encoder): -1 when the
 * call is (now) being killed, with the kill set so that the caller's error, whatever it is,
 * ends the call with the limit's message; 0 otherwise, and always 0 outside a call. */
int lh_spend(lua_State *L, uint64_t n);

/* [-0, +0, -] Kills the running call for `why` (LH_KILL_*) without raising; no-op outside
 * a call. */
void lh_kill(lua_State *L, int why);

/* [-0, +0, m] Replaces find/match/gmatch/gsub in the string table at idx (pattern.c). */
void lh_open_patterns(lua_State *L, int idx);

/* [-0, +0, m] Wraps the string, table and utf8 functions whose C loops grow with their
 * operands so that they charge that work first (budget.c); the library tables are at the
 * given indexes. */
void lh_open_budgeted(lua_State *L, int str, int tab, int utf8);

/* [-0, +(nres|1|0), -] Runs fn(L) with `ud` as its light-userdata argument under lua_pcall,
 * so that memory errors come back as a status instead of a panic.  nres results are left on
 * success; on failure the error object (none for LH_NOSTACK: the stack could not grow). */
#define LH_NOSTACK (-1)
int lh_protect(cairn_lua *h, lua_CFunction fn, void *ud, int nres);

/* [-(1|0), +0, -] Fills cairn_last_error() for a failure of a protected host operation
 * (status from lh_protect, error object on the top), pops it and returns the code. */
int lh_fail_protected(cairn_lua *h, int status, const char *what);

/* The event-table builder (event.c).  lh_evb_open pushes the field names and a small cache
 * of recent strings (types, streams) onto the stack of the frame that builds events; the
 * builder is valid while those slots stay.  Each event table is fresh, as are its data,
 * metadata and tags tables. */
#define LH_EVB_KEYS 13
#define LH_EVB_CACHE 8    /* slot 0: the stream; 1..7: types and tags */
#define LH_EVB_ROOM 8     /* free slots lh_evb_event needs above the builder */
#define LH_EVB_K_TYPE 0   /* keys + LH_EVB_K_TYPE holds "type" */
#define LH_EVB_K_SCHEMA 8 /* keys + LH_EVB_K_SCHEMA holds "schema" */
typedef struct lh_evb {
    int keys;  /* stack index of the first field name */
    int cache; /* stack index of the first cache slot, 0: no cache */
    struct {
        const char *p; /* the bytes of the string in that slot, NULL when empty */
        size_t len;
    } sc[LH_EVB_CACHE];
    cairn_buf *scratch;
    const char *bad; /* "data" or "metadata" when lh_evb_event met JSON it cannot decode */
    char err[160];
} lh_evb;

/* [-0, +(LH_EVB_KEYS + (cache ? LH_EVB_CACHE : 0)), m] */
void lh_evb_open(lua_State *L, lh_evb *b, cairn_buf *scratch, int cache);

/* [-0, +1, m] Pushes a string, from the cache when it holds the same bytes. */
void lh_evb_string(lua_State *L, lh_evb *b, const char *p, size_t len);

/* [-0, +(1|0), m] Pushes the event table of spec section 3 (see cairn_lua_push_event); its
 * type is the string at type_idx when non-zero.  A data or metadata text that does not decode:
 * -1 with b->bad and b->err set, nothing pushed. */
int lh_evb_event(lua_State *L, lh_evb *b, const cairn_event *ev, int type_idx);

/* Reusable event tables for long folds (event.c): the event table E (whose metatable
 * materializes `id` on first read), its data table, an empty metadata table and the tags
 * table, refilled for every event.  lh_evb_reuse_open pushes them; lh_evb_event_reuse fills
 * E (left at the top) from ev. */
#define LH_REUSE_SLOTS 5
typedef struct lh_reuse {
    int e, data, meta, tags, mt; /* stack indexes */
    uint8_t *idbox;              /* the id of the event E holds (a userdata of E's __index) */
    int reg;                     /* stack index of the registry's reuse table */
    const char *stream;          /* the bytes of the stream string E holds */
    size_t stream_len;
    int plain;          /* E holds the empty metadata and tags tables, forgotten=false */
    lua_Integer schema; /* the schema E holds */
    int bytes;          /* E.bytes (-1: not set yet) */
    lh_dkeys dk;        /* the keys the data table holds */
} lh_reuse;
/* [-0, +(LH_REUSE_SLOTS + 2), m] the tables are taken from (or made into) the registry */
void lh_evb_reuse_open(lua_State *L, lh_reuse *r);
/* [-0, +0, m] at the end of a batch: records in the registry a key a handler added to the
 * data table (lh_dkeys), for lh_reuse_reachable */
void lh_evb_reuse_close(lua_State *L, lh_reuse *r);
/* [-0, +(1|0), m] as lh_evb_event */
int lh_evb_event_reuse(lua_State *L, lh_evb *b, lh_reuse *r, const cairn_event *ev, int type_idx);
/* [-0, +0, m] forgets the registry's reusable tables (after they were found retained) */
void lh_evb_reuse_drop(lua_State *L);
/* [-0, +0, m] 1 when any of the reusable tables is reachable from the values at the given
 * stack indexes (0 entries are skipped): through table keys, values and metatables, and
 * function upvalues. */
int lh_reuse_reachable(lua_State *L, const int *roots, int nroots);

/* [-0, +0, -] cairn_lua_check_event on a bare state (event_in.c; the upcaster chain). */
int lh_check_event(lua_State *L, int e, int kind);

/* cairn__fail plus the script fields reset (script, line, position, reason, details). */
int lh_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
