/*
 * host.c -- the sandboxed lua_State: allocator cap, instruction budget, the kill that pcall
 * cannot swallow, the environments scripts run in, and the call/load entry points that turn
 * every failure into one error shape (cairn_last_error()).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lualib.h>

#include "host_impl.h"

/* Registry keys (addresses of these). */
static const char tmpl_key = 0;      /* the template every environment is copied from */
static const char kill_key[5] = {0}; /* the error value raised for each LH_KILL_* */
static const char *const kill_text[5] = {"", "instruction limit exceeded", "memory limit exceeded",
                                         "command rejected", "time limit exceeded"};

#define LH_LINE_LEVELS 200 /* how far down the stack to look for the script's frame */
#define LH_STEP 1000       /* count-hook period while alive */

/* The details of the last reject() on this thread: cairn_error.details points here.  A
 * pthread key frees it when the thread exits. */
static _Thread_local cairn_buf tl_details;
static _Thread_local int tl_details_keyed;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void tl_free(void *p) { cairn_buf_free(p); }
static void tl_make_key(void) { (void)pthread_key_create(&tl_key, tl_free); }
static int set_tl_details(const char *p, size_t n) {
    if (!tl_details_keyed) {
        pthread_once(&tl_once, tl_make_key);
        if (pthread_setspecific(tl_key, &tl_details) == 0) tl_details_keyed = 1;
    }
    tl_details.len = 0;
    return cairn_buf_append(&tl_details, p, n) || !tl_details.p ? -1 : 0;
}

/* ---------------------------------------------------------------------------------
 * Errors
 * --------------------------------------------------------------------------------- */
int lh_fail(int code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cairn__fail(code, "%s", msg);
    cairn_error *e = cairn__err();
    e->script[0] = e->reason[0] = '\0';
    e->line = 0;
    e->position = 0;
    e->details = NULL;
    e->details_len = 0;
    return code;
}

/* Copies at most cap-1 bytes of s into dst, not cutting a UTF-8 sequence in two. */
static void copy_utf8(char *dst, size_t cap, const char *s, size_t n) {
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static void set_script_fields(const char *script, int line, uint64_t position) {
    cairn_error *e = cairn__err();
    copy_utf8(e->script, sizeof e->script, script ? script : "", script ? strlen(script) : 0);
    e->line = line;
    e->position = position;
}

/* ---------------------------------------------------------------------------------
 * Allocator: refuses growth past the cap, never a shrink or a free.  Only while `guarded`
 * (a script call or a protected host operation runs): a refusal anywhere else would raise
 * a memory error with no pcall to catch it, and Lua would abort the process.  The cap
 * counts what Lua holds; blocks kept in the free lists (LH_SMALL_MAX) are not Lua's.
 * --------------------------------------------------------------------------------- */
#if defined(__SANITIZE_ADDRESS__)
#define LH_CACHE_MAX 0 /* every free reaches ASan */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LH_CACHE_MAX 0
#endif
#endif
#ifndef LH_CACHE_MAX
#define LH_CACHE_MAX (1u << 20) /* bytes kept in the free lists, at most */
#endif

/* A block of n bytes; small ones are (n rounded up to 16) bytes, from their free list. */
static inline void *blk_get(cairn_lua *h, size_t n) {
    if (n <= LH_SMALL_MAX) {
        size_t c = (n - 1) >> 4;
        void *p = h->freelist[c];
        if (p) {
            h->freelist[c] = *(void **)p;
            h->cached -= (c + 1) << 4;
            return p;
        }
        return malloc((c + 1) << 4);
    }
    return malloc(n);
}

/* Gives back a block that held n bytes.  A small block always has room for its class: it
 * came from blk_get, or it is a bigger block that a shrink could not replace. */
static inline void blk_put(cairn_lua *h, void *p, size_t n) {
#if LH_CACHE_MAX > 0
    if (n <= LH_SMALL_MAX && h->cached < LH_CACHE_MAX) {
        size_t c = (n - 1) >> 4;
        *(void **)p = h->freelist[c];
        h->freelist[c] = p;
        h->cached += (c + 1) << 4;
        return;
    }
#else
    (void)h, (void)n;
#endif
    free(p);
}

static void blk_drain(cairn_lua *h) {
    for (int c = 0; c < LH_CLASSES; c++) {
        void *p = h->freelist[c], *next;
        for (; p; p = next) {
            next = *(void **)p;
            free(p);
        }
        h->freelist[c] = NULL;
    }
    h->cached = 0;
}

static void *lh_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    cairn_lua *h = ud;
    void *p;
    if (!ptr) osize = 0; /* osize then encodes the object's type */
    if (nsize == 0) {
        if (ptr) blk_put(h, ptr, osize);
        h->mem_used -= osize;
        return NULL;
    }
    if (nsize > osize && h->mem_limit && h->guarded &&
        (h->mem_used > h->mem_limit || nsize - osize > h->mem_limit - h->mem_used)) {
        h->mem_refused = 1;
        return NULL;
    }
    if (!ptr) {
        p = blk_get(h, nsize);
    } else if (osize > LH_SMALL_MAX && nsize > LH_SMALL_MAX) {
        p = realloc(ptr, nsize);
    } else if (osize <= LH_SMALL_MAX && nsize <= LH_SMALL_MAX &&
               (osize - 1) >> 4 == (nsize - 1) >> 4) {
        p = ptr; /* same class */
    } else if ((p = blk_get(h, nsize)) != NULL) {
        memcpy(p, ptr, osize < nsize ? osize : nsize);
        blk_put(h, ptr, osize);
    }
    if (!p) {
        if (nsize > osize) return NULL;
        p = ptr; /* a failed shrink keeps the bigger block; Lua assumes shrinks succeed */
    }
    h->mem_used = h->mem_used - osize + nsize;
    return p;
}

/* ---------------------------------------------------------------------------------
 * Locating the failure: the innermost frame whose chunk is the running script.
 * --------------------------------------------------------------------------------- */
static int frame_is_script(const cairn_lua *h, const lua_Debug *ar) {
    return h->script && ar->source[0] == '=' && strcmp(ar->source + 1, h->script) == 0 &&
        ar->currentline > 0;
}

static int find_line(cairn_lua *h, lua_State *L) {
    lua_Debug ar;
    for (int level = 0; level < LH_LINE_LEVELS && lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && frame_is_script(h, &ar)) return ar.currentline;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------
 * The kill.  Once a limit is hit or reject() runs, the call is over: the count hook fires on
 * every instruction and raises again, and pcall/xpcall/load re-raise, so no script code can
 * catch it.  Raising uses a string made at open: no allocation on this path.
 * --------------------------------------------------------------------------------- */
static void lh_hook(lua_State *L, lua_Debug *ar);

/* [-0, +1, v] raises the kill's error value */
static int raise_kill(lua_State *L, cairn_lua *h) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kill_key[h->killed]);
    return lua_error(L);
}

/* [-0, +0, -] marks the call killed and re-arms the hook to fire on every instruction */
static void kill_call(lua_State *L, cairn_lua *h, int why) {
    if (!h->killed) h->killed = why;
    lua_sethook(L, lh_hook, LUA_MASKCOUNT, 1);
}

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* 1 when the invocation under way is past its time limit.  A deadline of 0 (a fold's next
 * handler, armed without reading the clock) starts now. */
static inline int past_deadline(cairn_lua *h) {
    if (!h->time_limit) return 0;
    uint64_t now = mono_ns();
    if (!h->deadline) {
        h->deadline = now + h->time_limit;
        return 0;
    }
    return now >= h->deadline;
}

/* [-0, +0, v] the count hook: spends the budget, checks the clock, raises the kill */
static void lh_hook(lua_State *L, lua_Debug *ar) {
    cairn_lua *h = lh_host(L);
    if (h->killed) {
        raise_kill(L, h);
        return;
    }
    if (past_deadline(h)) {
        h->err_line = find_line(h, L);
        kill_call(L, h, LH_KILL_TIME);
        raise_kill(L, h);
        return;
    }
    if (h->mem_limit && lua_getinfo(L, "Sl", ar) && frame_is_script(h, ar))
        h->mem_line = ar->currentline; /* memory errors unwind without a handler: sample */
    if (h->instr_limit) {
        if (h->budget <= (uint64_t)h->step) {
            h->err_line = find_line(h, L);
            kill_call(L, h, LH_KILL_INSTR);
            raise_kill(L, h);
            return;
        }
        h->budget -= (uint64_t)h->step;
    }
}

/* [-0, +0, v] */
void lh_charge(lua_State *L, uint64_t n) {
    cairn_lua *h = lh_host(L);
    if (h->killed) raise_kill(L, h);
    if (!h->in_call) return;
    if (past_deadline(h)) {
        h->err_line = find_line(h, L);
        kill_call(L, h, LH_KILL_TIME);
        raise_kill(L, h);
    }
    if (!h->instr_limit) return;
    if (h->budget <= n) {
        h->err_line = find_line(h, L);
        kill_call(L, h, LH_KILL_INSTR);
        raise_kill(L, h);
    }
    h->budget -= n;
}

void lh_kill(lua_State *L, int why) {
    cairn_lua *h = lh_host(L);
    if (!h->in_call || h->killed) return;
    h->err_line = find_line(h, L);
    if (why == LH_KILL_MEM) h->mem_refused = 1;
    kill_call(L, h, why);
}

void lh_solo_begin(cairn_lua *h) {
    if (h->in_call) return;
    h->solo = 1, h->solo_why = 0;
    h->budget = h->instr_limit;
    h->deadline = h->time_limit ? mono_ns() + h->time_limit : 0;
}

void lh_solo_end(cairn_lua *h) { h->solo = 0; }

void cairn_lua_encode_begin(cairn_lua *h) { lh_solo_begin(h); }
void cairn_lua_encode_end(cairn_lua *h) { lh_solo_end(h); }

int lh_spent_why(lua_State *L) {
    cairn_lua *h = lh_host(L);
    return h->in_call ? h->killed : h->solo_why;
}

/* Outside a call: nothing to kill, the encoder fails on its own. */
static int solo_spend(cairn_lua *h, uint64_t n) {
    if (h->solo_why) return -1;
    if (h->time_limit && mono_ns() >= h->deadline)
        h->solo_why = LH_KILL_TIME;
    else if (h->instr_limit && h->budget <= n)
        h->solo_why = LH_KILL_INSTR;
    else if (h->instr_limit)
        h->budget -= n;
    return h->solo_why ? -1 : 0;
}

int lh_spend(lua_State *L, uint64_t n) {
    cairn_lua *h = lh_host(L);
    if (h->killed) return -1;
    if (!h->in_call) return h->solo ? solo_spend(h, n) : 0;
    if (past_deadline(h)) {
        lh_kill(L, LH_KILL_TIME);
        return -1;
    }
    if (h->instr_limit) {
        if (h->budget <= n) {
            lh_kill(L, LH_KILL_INSTR);
            return -1;
        }
        h->budget -= n;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Base functions replaced in the sandbox.
 * --------------------------------------------------------------------------------- */

/* pcall(f, ...)   [-(n), +(1|r), e] -- as Lua's, but a kill goes through */
static int l_pcall(lua_State *L) {
    cairn_lua *h = lh_host(L);
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
    if (status == LUA_ERRMEM) kill_call(L, h, LH_KILL_MEM);
    if (h->killed) return raise_kill(L, h);
    if (status == LUA_OK) return lua_gettop(L);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

/* The message handler xpcall installs around the script's own (upvalue 1).  A kill can be
 * raised from the count hook, and Lua runs message handlers before unwinding, with hooks
 * still disabled: the script's handler must not run then, or it could loop forever. */
static int l_xpcall_handler(lua_State *L) {
    cairn_lua *h = lh_host(L);
    if (h->killed) return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* xpcall(f, msgh, ...)   [-(n), +(1|r), e] */
static int l_xpcall(lua_State *L) {
    cairn_lua *h = lh_host(L);
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, l_xpcall_handler, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* f msgh true f args... */
    int status = lua_pcall(L, n - 2, LUA_MULTRET, 2);
    if (status == LUA_ERRMEM) kill_call(L, h, LH_KILL_MEM);
    if (h->killed) return raise_kill(L, h);
    if (status == LUA_OK) return lua_gettop(L) - 2;
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

/* print(...) -> the log callback   [-n, +0, e] */
static int l_print(lua_State *L) {
    cairn_lua *h = lh_host(L);
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    if (h->log) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        h->log(h->log_ctx, h->script ? h->script : "", s, len);
    }
    return 0;
}

/* load(chunk [, chunkname [, mode [, env]]])   [-(n), +(1|2), e]
 * Text chunks only; the environment defaults to the calling script's (upvalue 1). */
static int l_load(lua_State *L) {
    cairn_lua *h = lh_host(L);
    size_t len;
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_argerror(L, 1, "string expected (only source text can be loaded)");
    const char *s = lua_tolstring(L, 1, &len);
    const char *chunkname = luaL_optstring(L, 2, s);
    int has_env = !lua_isnone(L, 4);
    int status = luaL_loadbufferx(L, s, len, chunkname, "t");
    if (status == LUA_ERRMEM) kill_call(L, h, LH_KILL_MEM);
    if (h->killed) return raise_kill(L, h);
    if (status != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushvalue(L, has_env ? 4 : lua_upvalueindex(1));
    if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    return 1;
}

/* setmetatable(t, mt)   [-2, +1, e] -- as Lua's, without finalizers: a __gc would run
 * script code at arbitrary points of the host (and after a call's limits are gone). */
static int l_setmetatable(lua_State *L) {
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        int gc = lua_rawget(L, 2);
        lua_pop(L, 1);
        if (gc != LUA_TNIL) return luaL_error(L, "setmetatable: __gc metamethods are not allowed");
    }
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* reject(reason [, details])   [-(n), +0, v] -- ends the call with CAIRN_EREJECTED */
static int l_reject(lua_State *L) {
    cairn_lua *h = lh_host(L);
    size_t len;
    if (h->killed) return raise_kill(L, h);
    if (lua_type(L, 1) != LUA_TSTRING) return luaL_argerror(L, 1, "reason must be a string");
    const char *r = lua_tolstring(L, 1, &len);
    if (!cairn__check_utf8(r, len)) return luaL_argerror(L, 1, "reason must be UTF-8");
    h->details.len = 0;
    h->has_details = 0;
    if (!lua_isnoneornil(L, 2)) {
        char err[320];
        if (lh_encode(L, 2, &h->details, err, sizeof err))
            return luaL_error(L, "reject: details: %s", err);
        h->has_details = 1;
    }
    copy_utf8(h->reason, sizeof h->reason, r, len);
    h->err_line = find_line(h, L);
    kill_call(L, h, LH_KILL_REJECT);
    return raise_kill(L, h);
}

/* table.move(a1, f, e, t [, a2])   [-(n), +1, e] -- the stock one, after charging the
 * budget for its e - f + 1 steps: its loop runs in C, where the count hook never fires,
 * and table.move({}, 1, 1e15, 2) would otherwise spin for days. */
static int l_table_move(lua_State *L) {
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f) lh_charge(L, (uint64_t)((lua_Unsigned)e - (lua_Unsigned)f) + 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* emit(stream, type, data, metadata)   [-n, +?, v] -- forwards to the projection's hook */
static int l_emit(lua_State *L) {
    cairn_lua *h = lh_host(L);
    if (!h->emit) return luaL_error(L, "emit is only available in projection handlers");
    return h->emit(L);
}

/* ---------------------------------------------------------------------------------
 * Sandbox construction.  The standard libraries are opened into the state's own globals;
 * what scripts may see is copied into a template table kept in the registry; each script
 * then gets a fresh environment with its own copies of the library tables, so nothing a
 * script can reach (assignments, rawset, setmetatable(_G, ...), string.x = nil) is shared
 * with another script or with the host.
 * --------------------------------------------------------------------------------- */
static const char *const base_keep[] = {
    "assert", "error",    "ipairs", "next",   "pairs",  "select",       "tonumber", "tostring",
    "type",   "rawequal", "rawget", "rawset", "rawlen", "getmetatable", NULL};
static const luaL_Reg base_wrap[] = {{"pcall", l_pcall},   {"xpcall", l_xpcall},
                                     {"print", l_print},   {"setmetatable", l_setmetatable},
                                     {"reject", l_reject}, {"emit", l_emit},
                                     {NULL, NULL}};
static const char *const libs[] = {LUA_STRLIBNAME, LUA_TABLIBNAME, LUA_MATHLIBNAME, LUA_UTF8LIBNAME,
                                   NULL};

/* [-0, +1, m] A fresh environment: the template with library tables copied one level. */
static void new_env(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &tmpl_key);
    int tmpl = lua_gettop(L);
    lua_createtable(L, 0, 32);
    int env = tmpl + 1;
    lua_pushnil(L);
    while (lua_next(L, tmpl)) { /* key value */
        if (lua_type(L, -1) == LUA_TTABLE) {
            int lib = lua_gettop(L);
            lua_createtable(L, 0, 32);
            lua_pushnil(L);
            while (lua_next(L, lib)) {
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, lib + 1);
            }
            lua_remove(L, lib);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, env);
    }
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_pushvalue(L, env);
    lua_pushcclosure(L, l_load, 1);
    lua_setfield(L, env, "load");
    lua_remove(L, tmpl);
}

/* [-0, +0, m] Runs under lh_protect at open. */
static int lh_setup(lua_State *L) {
    static const luaL_Reg opens[] = {
        {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
    for (const luaL_Reg *o = opens; o->name; o++) {
        luaL_requiref(L, o->name, o->func, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    int G = lua_gettop(L);
    /* what no script may reach, even through a library table's methods */
    lua_getfield(L, G, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lh_open_patterns(L, -1); /* matchers that count their steps */
    lua_getfield(L, G, LUA_TABLIBNAME);
    lua_getfield(L, G, LUA_UTF8LIBNAME);
    lh_open_budgeted(L, -3, -2, -1); /* and the other C loops */
    lua_pop(L, 2);
    lua_getfield(L, G, LUA_TABLIBNAME);
    lua_getfield(L, -1, "move");
    lua_pushcclosure(L, l_table_move, 1);
    lua_setfield(L, -2, "move");
    lua_pop(L, 1);
    lua_getfield(L, G, LUA_MATHLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "random");
    lua_pushnil(L);
    lua_setfield(L, -2, "randomseed");
    lua_pop(L, 2);

    lua_createtable(L, 0, 32);
    int tmpl = lua_gettop(L);
    for (const char *const *k = base_keep; *k; k++) {
        lua_getfield(L, G, *k);
        lua_setfield(L, tmpl, *k);
    }
    luaL_setfuncs(L, base_wrap, 0);
    for (const char *const *k = libs; *k; k++) {
        lua_getfield(L, G, *k);
        lua_setfield(L, tmpl, *k);
    }
    lh_open_json(L);
    lua_setfield(L, tmpl, "json");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &tmpl_key);

    /* Strings share one metatable whose __index is the real string table: hide it. */
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    for (int k = 1; k < 5; k++) {
        lua_pushstring(L, kill_text[k]);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &kill_key[k]);
    }
    /* Chunks loaded without an environment of their own (by anyone) get a sandbox too. */
    new_env(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_pop(L, 1); /* the old globals */
    return 0;
}

/* [-0, +0, -] never returns */
static int lh_panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "cairn: unprotected error in the Lua host: %s\n", msg ? msg : "?");
    abort();
}

/* ---------------------------------------------------------------------------------
 * Protected host operations.
 * --------------------------------------------------------------------------------- */
int lh_protect(cairn_lua *h, lua_CFunction fn, void *ud, int nres) {
    lua_State *L = h->L;
    if (!lua_checkstack(L, nres + 3)) return LH_NOSTACK;
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, ud);
    h->guarded++;
    int status = lua_pcall(L, 1, nres, 0);
    h->guarded--;
    return status;
}

int lh_fail_protected(cairn_lua *h, int status, const char *what) {
    int rc;
    if (status == LH_NOSTACK) return lh_fail(CAIRN_ESCRIPT, "Lua stack overflow while %s", what);
    if (status == LUA_ERRMEM) {
        rc = lh_fail(CAIRN_ESCRIPT, "memory limit exceeded (%zu bytes) while %s", h->mem_limit,
                     what);
        lua_pop(h->L, 1);
        if (h->in_call) {
            /* inside a script (an emit hook converting values): the call is over too;
             * end_call collects */
            kill_call(h->L, h, LH_KILL_MEM);
        } else {
            lua_gc(h->L, LUA_GCCOLLECT);
            h->mem_refused = 0;
        }
        return rc;
    }
    /* the only other failure a host operation can meet: the C stack (deeply nested calls) */
    const char *msg = lua_tostring(h->L, -1);
    rc = lh_fail(CAIRN_ESCRIPT, "%s while %s", msg ? msg : "error", what);
    lua_pop(h->L, 1);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Open / close
 * --------------------------------------------------------------------------------- */
int cairn_lua_open(uint64_t instruction_limit, size_t memory_limit, cairn_lua_log_fn log, void *ctx,
                   cairn_lua **out) {
    *out = NULL;
    cairn_lua *h = calloc(1, sizeof *h);
    if (!h) return lh_fail(CAIRN_ENOMEM, "out of memory opening the Lua host");
    h->mem_limit = memory_limit;
    h->instr_limit = instruction_limit;
    h->step = instruction_limit && instruction_limit < LH_STEP ? (int)instruction_limit : LH_STEP;
    h->log = log;
    h->log_ctx = ctx;
    h->L = lua_newstate(lh_alloc, h);
    if (!h->L) {
        free(h);
        return lh_fail(CAIRN_ENOMEM, "cannot create a Lua state (memory limit %zu bytes)",
                       memory_limit);
    }
    *(cairn_lua **)lua_getextraspace(h->L) = h;
    lua_atpanic(h->L, lh_panic);
    int status = lh_protect(h, lh_setup, h, 0);
    if (status != LUA_OK) {
        lua_close(h->L);
        blk_drain(h);
        free(h);
        return lh_fail(CAIRN_ENOMEM, "cannot build the Lua sandbox within %zu bytes", memory_limit);
    }
    h->mem_refused = 0;
    *out = h;
    return CAIRN_OK;
}

void cairn_lua_set_time_limit(cairn_lua *h, uint64_t ns) { h->time_limit = ns; }

void cairn_lua_close(cairn_lua *h) {
    if (!h) return;
    lua_close(h->L);
    blk_drain(h);
    cairn_buf_free(&h->scratch);
    cairn_buf_free(&h->details);
    free(h);
}

lua_State *cairn_lua_state(cairn_lua *h) { return h->L; }

size_t cairn_lua_memory(const cairn_lua *h) { return h->mem_used; }

int cairn_lua_hold(cairn_lua *h, size_t bytes) {
    if (bytes > h->held && h->mem_limit &&
        (h->mem_used > h->mem_limit || bytes - h->held > h->mem_limit - h->mem_used)) {
        lh_kill(h->L, LH_KILL_MEM);
        return lh_fail(CAIRN_ESCRIPT, "memory limit exceeded (%zu bytes)", h->mem_limit);
    }
    h->mem_used = h->mem_used - h->held + bytes;
    h->held = bytes;
    return CAIRN_OK;
}

void cairn_lua_set_emit(cairn_lua *h, lua_CFunction fn, void *ud) {
    if (!fn) (void)cairn_lua_hold(h, 0);
    h->emit = fn;
    h->emit_ud = fn ? ud : NULL;
}

void *cairn_lua_emit_ud(lua_State *L) { return lh_host(L)->emit_ud; }

/* ---------------------------------------------------------------------------------
 * Calls
 * --------------------------------------------------------------------------------- */

/* [-1, +1, -] Message handler of every call: records the message and the script's line
 * without allocating (so it cannot fail itself), and returns the error object unchanged. */
static int lh_msgh(lua_State *L) {
    cairn_lua *h = lh_host(L);
    if (h->killed) return 1; /* line and message were fixed at the kill */
    char *m = h->errmsg;
    size_t cap = sizeof h->errmsg, len;
    switch (lua_type(L, 1)) {
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, 1, &len);
        copy_utf8(m, cap, s, len);
        break;
    }
    case LUA_TNIL: snprintf(m, cap, "error object is nil"); break;
    case LUA_TBOOLEAN:
        snprintf(m, cap, "error object is a boolean (%s)", lua_toboolean(L, 1) ? "true" : "false");
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, 1))
            snprintf(m, cap, "error object is a number (%lld)", (long long)lua_tointeger(L, 1));
        else
            snprintf(m, cap, "error object is a number (%.14g)", lua_tonumber(L, 1));
        break;
    default: snprintf(m, cap, "error object is a %s", luaL_typename(L, 1));
    }
    h->err_line = find_line(h, L);
    return 1;
}

static void begin_call(cairn_lua *h, const char *script) {
    h->in_call = 1;
    h->guarded++;
    h->script = script;
    h->killed = LH_ALIVE;
    h->mem_refused = 0;
    h->mem_line = h->err_line = 0;
    h->errmsg[0] = '\0';
    h->budget = h->instr_limit;
    h->deadline = h->time_limit ? mono_ns() + h->time_limit : 0;
    if (h->instr_limit || h->mem_limit || h->time_limit)
        lua_sethook(h->L, lh_hook, LUA_MASKCOUNT, h->step); /* also restarts the count */
    else
        lua_sethook(h->L, NULL, 0, 0);
}

static void end_call(cairn_lua *h) {
    lua_sethook(h->L, NULL, 0, 0);
    if (h->mem_refused) lua_gc(h->L, LUA_GCCOLLECT);
    h->mem_refused = 0;
    h->killed = LH_ALIVE;
    h->script = NULL;
    h->in_call = 0;
    h->guarded--;
}

/* Builds cairn_last_error() for a failed call; the error object is at the top. */
static int call_error(cairn_lua *h, const char *script, int status, uint64_t position) {
    lua_State *L = h->L;
    int line = h->err_line, rc = CAIRN_ESCRIPT;
    char where[160];
    int killed = h->killed;
    if (!killed && status == LUA_ERRMEM) killed = LH_KILL_MEM;
    if (killed == LH_KILL_MEM && !line) line = h->mem_line;
    if (line)
        snprintf(where, sizeof where, "%s:%d: ", script, line);
    else
        snprintf(where, sizeof where, "%s: ", script);
    switch (killed) {
    case LH_KILL_INSTR:
        lh_fail(rc, "%sinstruction limit exceeded (%llu instructions)", where,
                (unsigned long long)h->instr_limit);
        break;
    case LH_KILL_MEM:
        if (h->mem_limit && h->mem_refused)
            lh_fail(rc, "%smemory limit exceeded (%zu bytes)", where, h->mem_limit);
        else
            lh_fail(rc, "%snot enough memory", where);
        break;
    case LH_KILL_TIME:
        lh_fail(rc, "%stime limit exceeded (%g s)", where, (double)h->time_limit / 1e9);
        break;
    case LH_KILL_REJECT: rc = lh_fail(CAIRN_EREJECTED, "command rejected: %s", h->reason); break;
    default:
        if (!h->errmsg[0]) { /* the handler did not run (error in error handling) */
            const char *s = lua_tostring(L, -1);
            copy_utf8(h->errmsg, sizeof h->errmsg, s ? s : "error", s ? strlen(s) : 5);
        }
        if (lua_type(L, -1) != LUA_TSTRING && line) /* our own text: give it a place */
            lh_fail(rc, "%s%s", where, h->errmsg);
        else
            lh_fail(rc, "%s", h->errmsg);
    }
    set_script_fields(script, line, position);
    if (rc == CAIRN_EREJECTED) {
        cairn_error *e = cairn__err();
        copy_utf8(e->reason, sizeof e->reason, h->reason, strlen(h->reason));
        if (h->has_details && set_tl_details(h->details.p, h->details.len) == 0) {
            e->details = tl_details.p;
            e->details_len = tl_details.len;
        }
    }
    return rc;
}

int cairn_lua_call(cairn_lua *h, const char *script, int nargs, int nresults, uint64_t position) {
    lua_State *L = h->L;
    int fn = lua_gettop(L) - nargs; /* the function's index */
    if (!script) script = "?";
    if (nargs < 0 || fn < 1) return lh_fail(CAIRN_EINVAL, "cairn_lua_call: no function to call");
    if (h->in_call) {
        lua_settop(L, fn - 1);
        return lh_fail(CAIRN_EINVAL, "cairn_lua_call: nested call");
    }
    if (!lua_checkstack(L, 2)) {
        lua_settop(L, fn - 1);
        return lh_fail(CAIRN_ENOMEM, "cairn_lua_call: out of Lua stack");
    }
    lua_pushcfunction(L, lh_msgh);
    lua_insert(L, fn);
    begin_call(h, script);
    int status = lua_pcall(L, nargs, nresults, fn);
    int rc = CAIRN_OK;
    if (status == LUA_OK && !h->killed) {
        lua_remove(L, fn);
    } else {
        if (status == LUA_OK) lua_pushnil(L); /* a kill swallowed by nothing we know of */
        rc = call_error(h, script, status, position);
        lua_settop(L, fn - 1);
    }
    end_call(h);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Loading scripts
 * --------------------------------------------------------------------------------- */
typedef struct load_args {
    const char *name, *src;
    size_t len;
    int status;
} load_args;

/* [-1, +1, e] Compiles the chunk and gives it an environment of its own. */
static int load_inner(lua_State *L) {
    load_args *a = lua_touserdata(L, 1);
    const char *chunkname = lua_pushfstring(L, "=%s", a->name);
    a->status = luaL_loadbufferx(L, a->src, a->len, chunkname, "t");
    if (a->status != LUA_OK) return lua_error(L);
    new_env(L);
    if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    return 1;
}

/* The line of "name:LINE: ..." in a compile error, 0 if it has none. */
static int message_line(const char *msg, const char *name) {
    size_t n = strlen(name);
    if (n > LUA_IDSIZE - 1) n = LUA_IDSIZE - 1; /* Lua shortens long chunk names */
    if (strncmp(msg, name, n) != 0 || msg[n] != ':') return 0;
    int line = 0;
    const char *p = msg + n + 1;
    for (; *p >= '0' && *p <= '9' && line < 100000000; p++) line = line * 10 + (*p - '0');
    return *p == ':' ? line : 0;
}

int cairn_lua_load(cairn_lua *h, const char *name, const char *src, size_t len) {
    lua_State *L = h->L;
    if (h->in_call) return lh_fail(CAIRN_EINVAL, "cairn_lua_load: inside a call");
    load_args a = {name, src, len, LUA_OK};
    int status = lh_protect(h, load_inner, &a, 1);
    if (a.status == LUA_ERRMEM) status = LUA_ERRMEM; /* the compiler's, re-raised by us */
    if (status != LUA_OK) {
        if (a.status == LUA_ERRSYNTAX) {
            const char *msg = lua_tostring(L, -1);
            lh_fail(CAIRN_ESCRIPT, "%s", msg ? msg : "syntax error");
            set_script_fields(name, msg ? message_line(msg, name) : 0, 0);
            lua_pop(L, 1);
            return CAIRN_ESCRIPT;
        }
        int rc = lh_fail_protected(h, status, "compiling the script");
        set_script_fields(name, 0, 0);
        return rc;
    }
    int rc = cairn_lua_call(h, name, 0, 1, 0);
    if (rc) return rc;
    if (!lua_istable(L, -1)) {
        const char *got = luaL_typename(L, -1);
        lh_fail(CAIRN_ESCRIPT, "%s: the script must return a table (it returned %s)", name,
                lua_isnil(L, -1) ? "nothing" : got);
        set_script_fields(name, 0, 0);
        lua_pop(L, 1);
        return CAIRN_ESCRIPT;
    }
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * Folding a batch of events: one protected call for the batch, a fresh budget for every
 * reducer and upcaster invocation inside it.
 * --------------------------------------------------------------------------------- */
enum { FOLD_OK = 0, FOLD_JSON, FOLD_UPCAST, FOLD_CHAIN, FOLD_EVENT };
#define FOLD_CHAIN_MAX 1000 /* upcasters applied to one event, at most */

typedef struct fold_args {
    cairn_lua *h;
    const char *script; /* the aggregate's name */
    const cairn_event *evs;
    size_t n, done;
    const char *cur;    /* the script of the work under way, for error reports */
    uint64_t pos;       /* the position of the event under way */
    int fail;           /* FOLD_*: the fold stopped without a Lua error */
    lua_Integer schema; /* FOLD_UPCAST: the schema whose upcaster returned no table */
    int line;           /* FOLD_EVENT: where that upcaster begins */
    char msg[400];      /* FOLD_EVENT: which upcaster, and the rule its result broke */
    int reuse;          /* refill reusable event tables instead of making fresh ones */
    int upcast;         /* cairn_lua_upcast: an upcaster ran */
    lh_evb b;
    lh_reuse r;
} fold_args;

/* Starts one script invocation inside the batch: what cairn_lua_call's begin_call does per
 * call (fresh budget, count restarted), without leaving the protected call. */
static inline void fold_arm(cairn_lua *h, lua_State *L, const char *script) {
    h->script = script;
    h->mem_line = 0;
    h->deadline = 0; /* this handler's time starts at the next check: no clock read here */
    if (h->instr_limit >= 4 * (uint64_t)h->step) {
        /* the hook (set by begin_call) keeps counting: a period already begun is added to
         * the budget, so no invocation is stopped before its limit, nor runs more than one
         * period (LH_STEP instructions) past it -- and lua_sethook stays off the hot path */
        h->budget = h->instr_limit + (uint64_t)h->step;
    } else if (h->instr_limit) {
        h->budget = h->instr_limit;
        lua_sethook(L, lh_hook, LUA_MASKCOUNT, h->step); /* restarts the count */
    }
}

/* [-0, +0, e] handler at fn called with (state, event at ev); a table result is the state */
static inline void fold_call(lua_State *L, fold_args *a, int fn, int ev) {
    cairn_lua *h = a->h;
    lua_pushvalue(L, fn);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, ev);
    fold_arm(h, L, a->script);
    lua_call(L, 2, 1);
    if (h->killed) raise_kill(L, h);
    if (lua_type(L, -1) == LUA_TTABLE)
        lua_replace(L, 2);
    else
        lua_pop(L, 1);
}

/* [-0, +0, e] The one upcaster chain (cairn_lua_upcast, and every event of cairn_lua_fold):
 * on the event table at ev (replaced by each result), with the upcasters table at up and the
 * strings "type" and "schema" at ktype and kschema.  1 when an upcaster ran, 0 when none
 * applied, -1 when the chain failed (a->fail set). */
static int upcast_chain(lua_State *L, fold_args *a, int up, int ev, int ktype, int kschema) {
    cairn_lua *h = a->h;
    int changed = 0;
    for (int guard = 0; guard < FOLD_CHAIN_MAX; guard++) {
        lua_pushvalue(L, ktype);
        lua_rawget(L, ev);
        lua_pushvalue(L, -1); /* the type stays below, for a message */
        if (lua_rawget(L, up) != LUA_TTABLE) {
            lua_pop(L, 2);
            return changed;
        }
        lua_pushvalue(L, kschema);
        lua_rawget(L, ev);
        lua_Integer schema = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (lua_rawgeti(L, -1, schema) != LUA_TFUNCTION) {
            lua_pop(L, 3);
            return changed;
        }
        lua_remove(L, -2);    /* type fn */
        lua_pushvalue(L, -1); /* the upcaster stays below too, for its line */
        lua_pushvalue(L, ev);
        a->cur = "upcasters";
        fold_arm(h, L, "upcasters");
        lua_call(L, 1, 1);
        if (h->killed) raise_kill(L, h);
        if (!lua_istable(L, -1)) {
            a->fail = FOLD_UPCAST;
            a->schema = schema;
            return -1;
        }
        /* what it returns is an event, as cairn.Event would have it (event_in.c) */
        if (lh_check_event(L, -1, CAIRN_LUA_EVENT_UPCAST)) {
            lua_Debug ar;
            size_t tl;
            const char *t = lua_tolstring(L, -3, &tl);
            lua_pushvalue(L, -2);
            a->line = lua_getinfo(L, ">S", &ar) && ar.linedefined > 0 ? ar.linedefined : 0;
            snprintf(a->msg, sizeof a->msg, "%.*s[%lld] returned an invalid event: %.300s",
                     (int)(tl > 60 ? 60 : tl), t, (long long)schema, cairn__err()->message);
            a->fail = FOLD_EVENT;
            return -1;
        }
        lua_pushinteger(L, schema + 1);
        lua_setfield(L, -2, "schema");
        lua_replace(L, ev);
        lua_pop(L, 2);
        a->cur = a->script;
        changed = 1;
    }
    a->fail = FOLD_CHAIN;
    return -1;
}

/* [-5, +(1|0), e] (args, state, apply|nil, star|nil, up|nil) -> the state */
static int fold_inner(lua_State *L) {
    fold_args *a = lua_touserdata(L, 1);
    int has_apply = lua_type(L, 3) == LUA_TTABLE, has_star = lua_type(L, 4) == LUA_TFUNCTION,
        has_up = lua_type(L, 5) == LUA_TTABLE;
    lh_evb_open(L, &a->b, &a->h->scratch, 1);
    if (a->reuse) lh_evb_reuse_open(L, &a->r);
    int base = lua_gettop(L), type = base + 1, fn = base + 2, ev = base + 3;
    for (size_t i = 0; i < a->n; i++) {
        const cairn_event *e = &a->evs[i];
        a->pos = e->position;
        a->cur = a->script;
        lh_evb_string(L, &a->b, e->type.ptr, e->type.len);
        if (has_apply) {
            lua_pushvalue(L, type);
            lua_rawget(L, 3);
        } else {
            lua_pushnil(L);
        }
        int has_fn = lua_type(L, fn) == LUA_TFUNCTION;
        if (has_fn || has_star || has_up) {
            if (a->reuse ? lh_evb_event_reuse(L, &a->b, &a->r, e, type)
                         : lh_evb_event(L, &a->b, e, type)) {
                a->fail = FOLD_JSON;
                return 0;
            }
            if (has_up && !e->forgotten) { /* spec 6: not applied to forgotten events */
                int up = upcast_chain(L, a, 5, ev, a->b.keys + LH_EVB_K_TYPE,
                                      a->b.keys + LH_EVB_K_SCHEMA);
                if (up < 0) return 0;
                if (up && has_apply) { /* the reducer goes by the type as upcast */
                    lua_pushvalue(L, a->b.keys + LH_EVB_K_TYPE);
                    lua_rawget(L, ev);
                    lua_rawget(L, 3);
                    lua_replace(L, fn);
                    has_fn = lua_type(L, fn) == LUA_TFUNCTION;
                }
            }
            if (has_fn) fold_call(L, a, fn, ev);
            if (has_star) fold_call(L, a, 4, ev);
        }
        lua_settop(L, base);
        a->done++;
    }
    if (a->reuse) lh_evb_reuse_close(L, &a->r);
    lua_pushvalue(L, 2);
    return 1;
}

/* Builds cairn_last_error() for a fold or an upcast that stopped: a->fail set without a Lua
 * error, or a failed call (status; the error object at the top). */
static int fold_error(cairn_lua *h, fold_args *a, int status) {
    int rc;
    if (status == LUA_OK && !h->killed) {
        switch (a->fail) {
        case FOLD_JSON:
            rc = lh_fail(CAIRN_EINVAL, "event at position %llu: %s: %s", (unsigned long long)a->pos,
                         a->b.bad, a->b.err);
            cairn__err()->position = a->pos;
            return rc;
        case FOLD_UPCAST:
            rc = lh_fail(CAIRN_ESCRIPT, "upcaster for schema %lld did not return an event table",
                         (long long)a->schema);
            break;
        case FOLD_EVENT:
            if (a->line)
                rc = lh_fail(CAIRN_ESCRIPT, "upcasters:%d: %s (event at position %llu)", a->line,
                             a->msg, (unsigned long long)a->pos);
            else
                rc = lh_fail(CAIRN_ESCRIPT, "upcasters: %s (event at position %llu)", a->msg,
                             (unsigned long long)a->pos);
            set_script_fields("upcasters", a->line, a->pos);
            return rc;
        default: rc = lh_fail(CAIRN_ESCRIPT, "upcaster chain longer than %d steps", FOLD_CHAIN_MAX);
        }
        set_script_fields("upcasters", 0, a->pos);
        return rc;
    }
    if (status == LUA_OK) lua_pushnil(h->L); /* a kill swallowed by nothing we know of */
    return call_error(h, a->cur, status, a->pos);
}

int cairn_lua_fold(cairn_lua *h, const char *script, int state, int apply, int star, int up,
                   const cairn_event *evs, size_t n, int reuse, size_t *done) {
    lua_State *L = h->L;
    fold_args a;
    int rc = CAIRN_OK;
    *done = 0;
    if (!script) script = "?";
    if (h->in_call) return lh_fail(CAIRN_EINVAL, "cairn_lua_fold: nested call");
    if (!state || !lua_istable(L, state)) return lh_fail(CAIRN_EINVAL, "cairn_lua_fold: no state");
    if (n == 0) return CAIRN_OK;
    state = lua_absindex(L, state);
    if (apply) apply = lua_absindex(L, apply);
    if (star) star = lua_absindex(L, star);
    if (up) up = lua_absindex(L, up);
    if (!lua_checkstack(L, 8)) return lh_fail(CAIRN_ENOMEM, "cairn_lua_fold: out of Lua stack");
    memset(&a, 0, sizeof a);
    a.h = h, a.script = script, a.evs = evs, a.n = n, a.cur = script, a.pos = evs[0].position;
    a.reuse = reuse;
    int top = lua_gettop(L);
    lua_pushcfunction(L, lh_msgh);
    lua_pushcfunction(L, fold_inner);
    lua_pushlightuserdata(L, &a);
    lua_pushvalue(L, state);
    if (apply)
        lua_pushvalue(L, apply);
    else
        lua_pushnil(L);
    if (star)
        lua_pushvalue(L, star);
    else
        lua_pushnil(L);
    if (up)
        lua_pushvalue(L, up);
    else
        lua_pushnil(L);
    begin_call(h, script);
    h->fold_at = &a.done;
    int status = lua_pcall(L, 5, 1, top + 1);
    h->fold_at = NULL;
    if (status == LUA_OK && !h->killed && !a.fail)
        lua_replace(L, state);
    else
        rc = fold_error(h, &a, status);
    lua_settop(L, top);
    end_call(h);
    *done = a.done;
    return rc;
}

/* [-3, +(1|0), e] (args, up, event) -> the event as upcast */
static int upcast_inner(lua_State *L) {
    fold_args *a = lua_touserdata(L, 1);
    lua_pushliteral(L, "type");
    lua_pushliteral(L, "schema");
    int r = upcast_chain(L, a, 2, 3, 4, 5);
    if (r < 0) return 0;
    a->upcast = r;
    lua_pushvalue(L, 3);
    return 1;
}

int cairn_lua_upcast(cairn_lua *h, int up, int ev, uint64_t position, int *changed) {
    lua_State *L = h->L;
    fold_args a;
    int rc = CAIRN_OK;
    *changed = 0;
    if (h->in_call) return lh_fail(CAIRN_EINVAL, "cairn_lua_upcast: nested call");
    if (!lua_istable(L, up) || !lua_istable(L, ev))
        return lh_fail(CAIRN_EINVAL, "cairn_lua_upcast: no upcasters or event table");
    if (!lua_checkstack(L, 8)) return lh_fail(CAIRN_ENOMEM, "cairn_lua_upcast: out of Lua stack");
    up = lua_absindex(L, up), ev = lua_absindex(L, ev);
    memset(&a, 0, sizeof a);
    a.h = h, a.script = a.cur = "upcasters", a.pos = position;
    int top = lua_gettop(L);
    lua_pushcfunction(L, lh_msgh);
    lua_pushcfunction(L, upcast_inner);
    lua_pushlightuserdata(L, &a);
    lua_pushvalue(L, up);
    lua_pushvalue(L, ev);
    begin_call(h, "upcasters");
    int status = lua_pcall(L, 3, 1, top + 1);
    if (status == LUA_OK && !h->killed && !a.fail) {
        lua_replace(L, ev);
        *changed = a.upcast;
    } else {
        rc = fold_error(h, &a, status);
    }
    lua_settop(L, top);
    end_call(h);
    return rc;
}

typedef struct escaped_args {
    int found;
} escaped_args;

/* [-5, +0, m] (args, state, apply, star, up): the roots are this frame's 2..5 */
static int escaped_inner(lua_State *L) {
    escaped_args *a = lua_touserdata(L, 1);
    int roots[4];
    for (int i = 0; i < 4; i++) roots[i] = lua_isnil(L, 2 + i) ? 0 : 2 + i;
    a->found = lh_reuse_reachable(L, roots, 4);
    return 0;
}

int cairn_lua_fold_escaped(cairn_lua *h, int state, int apply, int star, int up, int *escaped) {
    lua_State *L = h->L;
    escaped_args a = {1};
    int idx[4] = {state, apply, star, up}, status;
    *escaped = 1;
    if (!lua_checkstack(L, 8)) return lh_fail(CAIRN_ENOMEM, "out of Lua stack");
    for (int i = 0; i < 4; i++) idx[i] = idx[i] ? lua_absindex(L, idx[i]) : 0;
    lua_pushcfunction(L, escaped_inner);
    lua_pushlightuserdata(L, &a);
    for (int i = 0; i < 4; i++) {
        if (idx[i])
            lua_pushvalue(L, idx[i]);
        else
            lua_pushnil(L);
    }
    h->guarded++;
    status = lua_pcall(L, 5, 0, 0);
    h->guarded--;
    if (status != LUA_OK) return lh_fail_protected(h, status, "checking the reused event tables");
    *escaped = a.found;
    if (a.found) lh_evb_reuse_drop(L); /* somebody holds them: never refill these again */
    return CAIRN_OK;
}

size_t cairn_lua_fold_index(const cairn_lua *h) { return h->fold_at ? *h->fold_at : 0; }
