/*
 * test_lua_host.c -- the Lua host: allocator cap, instruction budget and the kill that pcall
 * cannot swallow, reject(), the sandbox's contents and isolation, error objects and lines,
 * JSON <-> Lua exactness, the event table, script shapes, print and emit.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <lauxlib.h>
#include <lualib.h>

#include "cairn.h"
#include "../../lua/host.h"

#define MiB (1024u * 1024u)

/* ---------------------------------------------------------------------------------
 * Helpers
 * --------------------------------------------------------------------------------- */
static char g_log[4096];
static char g_log_script[128];
static int g_log_calls;

static void log_fn(void *ctx, const char *script, const char *msg, size_t len) {
    (void)ctx;
    g_log_calls++;
    snprintf(g_log, sizeof g_log, "%.*s", (int)len, msg);
    snprintf(g_log_script, sizeof g_log_script, "%s", script);
}

#define CHECK_RC(expr, want)                                                                      \
    do {                                                                                          \
        int rc_ = (expr);                                                                         \
        if (rc_ != (want))                                                                        \
            fail_msg("%s:%d: %s -> %d (%s), want %d; errmsg: %s", __FILE__, __LINE__, #expr, rc_, \
                     cairn_strerror(rc_), (int)(want), cairn_errmsg());                           \
    } while (0)
#define CHECK_OK(expr) CHECK_RC(expr, CAIRN_OK)
#define ASSERT_MSG_HAS(needle)                                                                 \
    do {                                                                                       \
        if (!strstr(cairn_errmsg(), (needle)))                                                 \
            fail_msg("%s:%d: message \"%s\" lacks \"%s\"", __FILE__, __LINE__, cairn_errmsg(), \
                     (needle));                                                                \
    } while (0)

static cairn_lua *open_host(uint64_t instr, size_t mem) {
    cairn_lua *h = NULL;
    CHECK_OK(cairn_lua_open(instr, mem, log_fn, NULL, &h));
    assert_non_null(h);
    return h;
}

static int setup(void **state) {
    *state = open_host(10 * 1000 * 1000, 32 * MiB);
    g_log[0] = '\0';
    g_log_calls = 0;
    return 0;
}

static int teardown(void **state) {
    cairn_lua_close(*state);
    return 0;
}

/* Loads "return { run = function(...) BODY end }" as script `name` and calls run with no
 * arguments and one result, left on the stack on success. */
static int run_in(cairn_lua *h, const char *name, const char *body, uint64_t position) {
    lua_State *L = cairn_lua_state(h);
    char src[16384];
    if ((size_t)snprintf(src, sizeof src, "return { run = function(...)\n%s\nend }", body) >=
        sizeof src)
        fail_msg("test body too long");
    int top = lua_gettop(L);
    int rc = cairn_lua_load(h, name, src, strlen(src));
    if (rc) {
        assert_int_equal(lua_gettop(L), top);
        return rc;
    }
    lua_getfield(L, -1, "run");
    lua_remove(L, -2);
    rc = cairn_lua_call(h, name, 0, 1, position);
    assert_int_equal(lua_gettop(L), top + (rc == CAIRN_OK));
    return rc;
}

static int run(cairn_lua *h, const char *body) { return run_in(h, "test", body, 0); }

/* Runs body (which must not fail) and pops its result. */
#define RUN_OK(h, body)                 \
    do {                                \
        CHECK_OK(run((h), (body)));     \
        lua_pop(cairn_lua_state(h), 1); \
    } while (0)

/* JSON text -> Lua -> JSON text. */
static char *roundtrip(cairn_lua *h, const char *json) {
    lua_State *L = cairn_lua_state(h);
    int top = lua_gettop(L);
    if (cairn_lua_push_json(h, json, strlen(json)) != CAIRN_OK) return NULL;
    cairn_buf b = {0};
    int rc = cairn_lua_to_json(h, -1, &b);
    lua_pop(L, 1);
    assert_int_equal(lua_gettop(L), top);
    if (rc) {
        free(b.p);
        return NULL;
    }
    cairn_buf_append(&b, "", 1);
    return b.p;
}

static void assert_roundtrip(cairn_lua *h, const char *in, const char *want) {
    char *out = roundtrip(h, in);
    if (!out) fail_msg("round trip of %s failed: %s", in, cairn_errmsg());
    if (strcmp(out, want) != 0) fail_msg("round trip of %s gave %s, want %s", in, out, want);
    free(out);
}

/* ---------------------------------------------------------------------------------
 * Sandbox
 * --------------------------------------------------------------------------------- */
static void sandbox_has_exactly_the_listed_globals(void **state) {
    cairn_lua *h = *state;
    RUN_OK(h,
           "local want = { assert=1, error=1, ipairs=1, next=1, pairs=1, pcall=1, xpcall=1,\n"
           "  select=1, tonumber=1, tostring=1, type=1, rawequal=1, rawget=1, rawset=1,\n"
           "  rawlen=1, setmetatable=1, getmetatable=1, print=1, load=1, string=1, table=1,\n"
           "  math=1, utf8=1, json=1, reject=1, emit=1, _G=1 }\n"
           "for k in pairs(want) do assert(_G[k] ~= nil, 'missing ' .. k) end\n"
           "for k in pairs(_G) do assert(want[k], 'unexpected global ' .. tostring(k)) end\n"
           "return true");
}

static void sandbox_lacks_dangerous_functions(void **state) {
    cairn_lua *h = *state;
    RUN_OK(h,
           "assert(io == nil and os == nil and debug == nil and package == nil)\n"
           "assert(require == nil and dofile == nil and loadfile == nil)\n"
           "assert(collectgarbage == nil and coroutine == nil and warn == nil)\n"
           "assert(math.random == nil and math.randomseed == nil)\n"
           "assert(string.dump == nil and ('').dump == nil)\n"
           "assert(getmetatable('') == false)\n"
           "assert(('abc'):upper() == 'ABC')\n"
           "return true");
}

static void load_refuses_binary_chunks(void **state) {
    cairn_lua *h = *state;
    RUN_OK(h,
           "local f, err = load('\\27Lua\\84\\0garbage')\n"
           "assert(f == nil and err:find('binary'), err)\n"
           "f, err = load('\\27Lua', 'x', 'b')\n"
           "assert(f == nil and err:find('binary'), err)\n"
           "return true");
    /* and the host refuses a binary script */
    lua_State *L = cairn_lua_state(h);
    const char bin[] = "\x1bLua\x54\x00\x19\x93\r\n\x1a\n";
    CHECK_RC(cairn_lua_load(h, "bin", bin, sizeof bin - 1), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("binary");
    assert_int_equal(lua_gettop(L), 0);
}

static void load_runs_in_the_scripts_own_environment(void **state) {
    cairn_lua *h = *state;
    RUN_OK(h,
           "load('x_from_load = 5')()\n"
           "assert(x_from_load == 5)\n"
           "local env = {}\n"
           "load('y = 6', 'chunk', 't', env)()\n"
           "assert(env.y == 6 and y == nil)\n"
           "assert(not pcall(load, function() return nil end))\n"
           "return true");
}

static void globals_and_metatables_do_not_leak_between_scripts(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    const char *a = "leaked = 1\n"
                    "setmetatable(_G, { __index = function() return 42 end,\n"
                    "                   __newindex = function() error('nope') end })\n"
                    "string.upper = nil; table.insert = nil; math.pi = 3\n"
                    "rawset(_G, 'print', nil); rawset(_G, 'pcall', nil); json.null = 1\n"
                    "assert(unknown == 42)\n"
                    "return {}";
    CHECK_OK(cairn_lua_load(h, "a", a, strlen(a)));
    lua_pop(L, 1);
    RUN_OK(h,
           "assert(unknown_global == nil and leaked == nil)\n"
           "assert(getmetatable(_G) == nil)\n"
           "assert(('x'):upper() == 'X' and string.upper('y') == 'Y')\n"
           "assert(table.insert and math.pi > 3.14 and print and pcall)\n"
           "assert(type(json.null) == 'userdata')\n"
           "return true");
}

static void finalizers_are_refused(void **state) {
    cairn_lua *h = *state;
    CHECK_RC(run(h, "setmetatable({}, { __gc = function() while true do end end })"),
             CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("__gc");
    RUN_OK(h, "return setmetatable({}, { __index = function() return 1 end }).x == 1");
}

static void script_must_return_a_table(void **state) {
    cairn_lua *h = *state;
    CHECK_RC(cairn_lua_load(h, "s", "return 5", 8), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("must return a table");
    assert_string_equal(cairn_last_error()->script, "s");
    CHECK_RC(cairn_lua_load(h, "s", "x = 1", 5), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("must return a table");
    assert_int_equal(lua_gettop(cairn_lua_state(h)), 0);
}

/* ---------------------------------------------------------------------------------
 * Limits
 * --------------------------------------------------------------------------------- */
static void memory_bomb_is_a_script_error_and_the_state_recovers(void **state) {
    (void)state;
    cairn_lua *h = open_host(0, 16 * MiB);
    size_t base = cairn_lua_memory(h);
    CHECK_RC(run(h, "local t = {}\nfor i = 1, 1e9 do t[i] = i end"), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    assert_int_equal(cairn_last_error()->line, 3);
    assert_string_equal(cairn_last_error()->script, "test");
    assert_true(cairn_lua_memory(h) < base + 1 * MiB); /* collected after the failure */
    RUN_OK(h, "local t = {} for i = 1, 1000 do t[i] = i end return #t");
    cairn_lua_close(h);
}

static void memory_bomb_inside_pcall_is_not_swallowed(void **state) {
    (void)state;
    cairn_lua *h = open_host(0, 16 * MiB);
    CHECK_RC(
        run(h,
            "for _ = 1, 3 do\n"
            "  local ok, err = pcall(function() return string.rep('x', 64 * 1024 * 1024) end)\n"
            "end\n"
            "return 'survived'"),
        CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    CHECK_RC(run(h,
                 "local ok = xpcall(function() local t = {} for i = 1, 1e9 do t[i] = i end end,\n"
                 "                  function(e) return e end)\n"
                 "return ok"),
             CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    CHECK_RC(run(h, "local s = string.rep('x = 1 ', 1500000)\nreturn load(s)"), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    RUN_OK(h, "return pcall(error, 'ordinary errors are still caught')");
    cairn_lua_close(h);
}

static void compiling_past_the_memory_cap_is_a_script_error(void **state) {
    (void)state;
    cairn_lua *h = open_host(0, 1 * MiB);
    size_t n = 200000;
    char *src = malloc(n * 6 + 16);
    for (size_t i = 0; i < n; i++) memcpy(src + i * 6, "x = 1\n", 6);
    memcpy(src + n * 6, "return {}", 9);
    CHECK_RC(cairn_lua_load(h, "huge", src, n * 6 + 9), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    assert_string_equal(cairn_last_error()->script, "huge");
    assert_int_equal(lua_gettop(cairn_lua_state(h)), 0);
    free(src);
    CHECK_OK(cairn_lua_load(h, "small", "return {}", 9));
    cairn_lua_close(h);
}

/* The caller's own Lua API use between calls has no pcall around it: the cap must not
 * refuse it (Lua would abort the process).  The next script call pays instead. */
static void bare_api_use_outside_calls_is_never_refused(void **state) {
    (void)state;
    cairn_lua *h = open_host(0, 1 * MiB);
    lua_State *L = cairn_lua_state(h);
    char s[1024];
    memset(s, 'z', sizeof s);
    for (int i = 0; cairn_lua_memory(h) < 2 * MiB; i++) {
        snprintf(s, 16, "%015d", i);
        lua_pushlstring(L, s, sizeof s);
        if (!lua_checkstack(L, 8)) fail_msg("stack");
    }
    assert_true(cairn_lua_memory(h) > 1 * MiB);
    CHECK_RC(run(h, "local t = {} for i = 1, 100000 do t[i] = tostring(i) end return #t"),
             CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    RUN_OK(h, "local t = {} for i = 1, 1000 do t[i] = tostring(i) end return #t");
    cairn_lua_close(h);
}

/* The cap at its edge, through the host's own allocator (lua_getallocf) called from a C
 * function running inside a call: a new block or a growth that brings the count exactly to
 * the limit is granted, one byte more is refused. */
static cairn_lua *g_edge_h;
static size_t g_edge_limit;
static int g_edge_granted[2], g_edge_refused[2];

static int alloc_at_the_edge(lua_State *L) {
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    size_t room = g_edge_limit - cairn_lua_memory(g_edge_h);
    /* a new block: osize encodes the type of the object for a NULL ptr */
    void *p = f(ud, NULL, LUA_TUSERDATA, room);
    g_edge_granted[0] = p != NULL && cairn_lua_memory(g_edge_h) == g_edge_limit;
    if (p) f(ud, p, room, 0);
    room = g_edge_limit - cairn_lua_memory(g_edge_h);
    p = f(ud, NULL, LUA_TUSERDATA, room + 1);
    g_edge_refused[0] = p == NULL;
    if (p) f(ud, p, room + 1, 0);
    /* a growth of a block (the string builder's and table's way to grow) */
    void *q = f(ud, NULL, LUA_TUSERDATA, 64);
    assert_non_null(q);
    room = g_edge_limit - cairn_lua_memory(g_edge_h);
    void *r = f(ud, q, 64, 64 + room);
    g_edge_granted[1] = r != NULL && cairn_lua_memory(g_edge_h) == g_edge_limit;
    if (r) {
        q = f(ud, r, 64 + room, 64); /* a shrink is never refused */
        assert_non_null(q);
    }
    room = g_edge_limit - cairn_lua_memory(g_edge_h);
    r = f(ud, q, 64, 64 + room + 1);
    g_edge_refused[1] = r == NULL; /* and q is still the caller's */
    f(ud, r ? r : q, r ? 64 + room + 1 : 64, 0);
    return 0;
}

static void memory_cap_grants_exactly_the_limit_and_refuses_one_byte_more(void **state) {
    (void)state;
    g_edge_limit = 1 * MiB;
    cairn_lua *h = g_edge_h = open_host(0, g_edge_limit);
    lua_State *L = cairn_lua_state(h);
    assert_true(cairn_lua_memory(h) < g_edge_limit - 4096);
    lua_pushcfunction(L, alloc_at_the_edge);
    CHECK_OK(cairn_lua_call(h, "edge", 0, 0, 0));
    assert_true(g_edge_granted[0]); /* new block up to the limit */
    assert_true(g_edge_refused[0]); /* new block one byte past it */
    assert_true(g_edge_granted[1]); /* growth up to the limit */
    assert_true(g_edge_refused[1]); /* growth one byte past it */
    RUN_OK(h, "return 1");
    cairn_lua_close(h);
}

static void open_fails_cleanly_below_the_sandboxs_own_size(void **state) {
    (void)state;
    cairn_lua *h = (cairn_lua *)1;
    CHECK_RC(cairn_lua_open(0, 4096, NULL, NULL, &h), CAIRN_ENOMEM);
    assert_null(h);
}

static void instruction_limit_kills_an_endless_loop(void **state) {
    cairn_lua *h = *state;
    CHECK_RC(run_in(h, "loop", "local n = 0\nwhile true do\n n = n + 1\nend", 9), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("instruction limit exceeded");
    const cairn_error *e = cairn_last_error();
    assert_string_equal(e->script, "loop");
    assert_true(e->line >= 3 && e->line <= 5);
    assert_int_equal(e->position, 9);
    RUN_OK(h, "return 1");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The time limit holds where the instruction budget is off, over loops of the VM and of the
 * libraries' C code alike, pcall cannot swallow it, and the next call has its own. */
static void time_limit_kills_loops_in_the_vm_and_in_c(void **state) {
    (void)state;
    static const char *const bodies[] = {
        "local n = 0\nwhile true do\n n = n + 1\nend",
        "while true do pcall(function() while true do end end) end",
        "local s = string.rep('a', 1 << 22)\nwhile true do utf8.len(s) end",
        "local t = {}\nfor i = 1, 100000 do t[i] = i end\nwhile true do table.insert(t, 1, 0) "
        "table.remove(t, 1) end",
        "local s = string.rep('ab', 1 << 21)\nwhile true do s:find('c', 1, true) end",
    };
    cairn_lua *h = open_host(0, 64u << 20);
    cairn_lua_set_time_limit(h, 100u * 1000 * 1000); /* 0.1 s */
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        double t0 = now_s();
        CHECK_RC(run_in(h, "slow", bodies[i], 4), CAIRN_ESCRIPT);
        ASSERT_MSG_HAS("time limit exceeded (0.1 s)");
        assert_string_equal(cairn_last_error()->script, "slow");
        assert_int_equal(cairn_last_error()->position, 4);
        assert_true(now_s() - t0 < 3.0);
        RUN_OK(h, "return 1");
    }
    /* string.rep of nothing is nothing, at once (the stock one looped 2^63 times) */
    RUN_OK(h,
           "assert(string.rep('', math.maxinteger) == '' and string.rep('', 1 << 50, '') == '')");
    cairn_lua_set_time_limit(h, 0);
    RUN_OK(h, "local t = os == nil; for i = 1, 100000 do t = not t end");
    cairn_lua_close(h);
}

static void instruction_kill_is_not_swallowed_by_pcall(void **state) {
    cairn_lua *h = *state;
    CHECK_RC(run(h,
                 "while true do\n"
                 "  pcall(function() while true do end end)\n"
                 "end"),
             CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("instruction limit exceeded");
    /* an error handler that loops is killed too (the hook is re-armed) */
    CHECK_RC(run(h,
                 "while true do\n"
                 "  xpcall(function() while true do end end, function() while true do end end)\n"
                 "end"),
             CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("instruction limit exceeded");
    /* a to-be-closed variable cannot resume the script either */
    CHECK_RC(
        run(h,
            "local ok = pcall(function()\n"
            "  local c <close> = setmetatable({}, { __close = function() while true do end end })\n"
            "  while true do end\n"
            "end)\n"
            "return 'survived'"),
        CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("instruction limit exceeded");
    RUN_OK(h, "return 1");
}

/* The wrappers themselves: a kill inside pcall/xpcall must come out of the wrapper as an
 * error, never as (false, message) to its caller.  Script code cannot tell (once killed, the
 * count hook kills the caller's next instruction anyway, and cairn_lua_call fails a call
 * that ended killed), so the wrapper is called here from C, inside a call, and what it
 * did is recorded before anything else runs. */
static int g_wrapper_status;
static int g_wrapper_returned;

/* (wrapper, f [, handler]) -> calls wrapper(f [, handler]) and records how it ended */
static int call_the_wrapper(lua_State *L) {
    g_wrapper_status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    g_wrapper_returned = g_wrapper_status == LUA_OK;
    if (!g_wrapper_returned) return lua_error(L);
    return lua_gettop(L);
}

static void pcall_and_xpcall_reraise_every_kill_to_their_caller(void **state) {
    (void)state;
    static const char src[] = "return {\n"
                              "  pcall = pcall, xpcall = xpcall,\n"
                              "  handler = function(e) return e end,\n"
                              "  spin = function() while true do end end,\n"
                              "  bomb = function() return string.rep('x', 8 * 1024 * 1024) end,\n"
                              "  refuse = function() reject('no') end,\n"
                              "  fail = function() error('ordinary', 0) end,\n"
                              "}\n";
    static const struct {
        const char *wrapper, *f, *message;
        int rc;
    } cases[] = {
        {"pcall", "spin", "instruction limit exceeded", CAIRN_ESCRIPT},
        {"pcall", "bomb", "memory limit exceeded", CAIRN_ESCRIPT},
        {"pcall", "refuse", "command rejected: no", CAIRN_EREJECTED},
        {"xpcall", "spin", "instruction limit exceeded", CAIRN_ESCRIPT},
        {"xpcall", "bomb", "memory limit exceeded", CAIRN_ESCRIPT},
        {"xpcall", "refuse", "command rejected: no", CAIRN_EREJECTED},
    };
    cairn_lua *h = open_host(100000, 4 * MiB);
    lua_State *L = cairn_lua_state(h);
    CHECK_OK(cairn_lua_load(h, "wrappers", src, strlen(src)));
    int t = lua_gettop(L);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int xp = cases[i].wrapper[0] == 'x';
        lua_pushcfunction(L, call_the_wrapper);
        lua_getfield(L, t, cases[i].wrapper);
        lua_getfield(L, t, cases[i].f);
        if (xp) lua_getfield(L, t, "handler");
        g_wrapper_status = -1;
        CHECK_RC(cairn_lua_call(h, "wrappers", 2 + xp, 0, 0), cases[i].rc);
        ASSERT_MSG_HAS(cases[i].message);
        if (g_wrapper_returned)
            fail_msg("%s(%s) returned to its caller after the kill (%s)", cases[i].wrapper,
                     cases[i].f, cases[i].message);
        assert_int_equal(g_wrapper_status, LUA_ERRRUN); /* the kill's value, raised again */
        assert_int_equal(lua_gettop(L), t);
    }
    /* ordinary errors are still theirs to catch */
    lua_pushcfunction(L, call_the_wrapper);
    lua_getfield(L, t, "pcall");
    lua_getfield(L, t, "fail");
    CHECK_OK(cairn_lua_call(h, "wrappers", 2, 2, 0));
    assert_true(g_wrapper_returned);
    assert_false(lua_toboolean(L, -2));
    assert_string_equal(lua_tostring(L, -1), "ordinary");
    lua_settop(L, 0);
    cairn_lua_close(h);
}

/* The stock matcher runs in C, out of the count hook's reach; ours charges its steps. */
static void loops_in_c_library_functions_are_bounded_by_the_budget(void **state) {
    cairn_lua *h = *state;
    static const char *const bodies[] = {
        "return (string.rep('a', 20000)):find(string.rep('a*', 3) .. 'b')",
        "return string.match(string.rep('a', 20000), '(a-)(a-)(a-)b')",
        "for _ in string.gmatch(string.rep('a', 20000), 'a*a*a*b') do end",
        "return string.gsub(string.rep('a', 20000), 'a*a*a*b', 'x')",
        "return pcall(string.find, string.rep('(', 5000) .. 'x', '%b()%b()%b()')",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CHECK_RC(run(h, bodies[i]), CAIRN_ESCRIPT);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ASSERT_MSG_HAS("instruction limit exceeded");
        assert_true(t1.tv_sec - t0.tv_sec < 5);
    }
    /* table.move loops in C too */
    CHECK_RC(run(h, "return table.move({}, 1, 1e15, 2)"), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("instruction limit exceeded");
    RUN_OK(h,
           "local t = table.move({ 1, 2, 3 }, 1, 3, 2)\n"
           "assert(t[1] == 1 and t[2] == 1 and t[4] == 3)\n"
           "local u = table.move({ 1, 2 }, 1, 2, 1, {})\n"
           "assert(u[2] == 2 and table.move({}, 5, 1, 1))\n"
           "return true");
    /* plain finds are linear (memmem) */
    RUN_OK(h,
           "local s = string.rep('a', 1000000)\n"
           "assert(s:find(string.rep('a', 999) .. 'b', 1, true) == nil)\n"
           "assert(s:find(string.rep('a', 5000)) == 1)\n"
           "return true");
}

/* Our find/match/gmatch/gsub against the stock string library on a corpus. */
static const char pattern_corpus[] =
    "local function ser(...)\n"
    "  local t = {}\n"
    "  for i = 1, select('#', ...) do\n"
    "    local v = select(i, ...)\n"
    "    t[#t + 1] = type(v) == 'function' and 'function' or type(v) .. ':' .. tostring(v)\n"
    "  end\n"
    "  return table.concat(t, '|')\n"
    "end\n"
    "local S = { '', 'hello world', '  key = value  ', 'aaa', 'abc123def456', 'THE (quick) fox',\n"
    "  'f(a(b)c)d', '[x]%y', '\\0a\\0b', '\\xc3\\xa9t\\xc3\\xa9', 'x=1, y=2, z=3', 'a.b-c+d*e?f',\n"
    "  '((()))', 'THE (quick) (brown) fox', '\\n\\t x', 'aXbXc', '^$' }\n"
    "local P = { '', 'l+', 'l*', 'l-', 'l?', '^h', 'd$', '^$', '(h)(e)', '()ll()', '%a+', '%A+',\n"
    "  '%d+', '%s*(.-)%s*$', '(%w+)=(%w+)', '%b()', '%f[%w]%w+', '[%a_][%w_]*', '[^%s]+',\n"
    "  '[a-c]+', '[]]', '[^]]', '%', '[a', '(()', '%1', '(a)%1', '((a)(a))', '(.)%1', '%z', '.-',\n"
    "  'a.-b', '[%]]', 'x*$', '%f[%a]', '%g+', '%p', '[%-]', '%.', '.', '(', ')', 'a)', '%b',\n"
    "  '%bxy', '%f', '%f[', '[%a-]', '[a-]', '[-a]', '^', '$', '^(.-)$', '%u%l*', '%x+', '%c',\n"
    "  '[^%c%s]', '.?.?.?', '(a*(.)%w(%s*))', '%0', '(%d)(%d)(%d)', 'X', '[\\0-\\1]', '\\0',\n"
    "  '%W*', '%S+$', '(x)?', '%$', '^^', '$$', '%b%%', '[%w%p]+', '()', '(()())' }\n"
    "local I = { false, 1, 0, -1, -100, 3, 100 }\n"
    "local out = {}\n"
    "local function add(...) out[#out + 1] = ser(...) end\n"
    "for _, s in ipairs(S) do for _, p in ipairs(P) do for _, i in ipairs(I) do\n"
    "  local init = i or nil\n"
    "  add(s, p, init, pcall(string.find, s, p, init))\n"
    "  add(pcall(string.find, s, p, init, true))\n"
    "  add(pcall(string.match, s, p, init))\n"
    "  local ok, it = pcall(string.gmatch, s, p, init)\n"
    "  if ok then\n"
    "    local acc = {}\n"
    "    add(pcall(function() for a, b, c in it do acc[#acc + 1] = ser(a, b, c)\n"
    "      if #acc > 50 then break end end end))\n"
    "    add(table.concat(acc, ';'))\n"
    "  else add(ok, it) end\n"
    "  if not i then\n"
    "    add(pcall(string.gsub, s, p, '<%0>'))\n"
    "    add(pcall(string.gsub, s, p, '%1-%2'))\n"
    "    add(pcall(string.gsub, s, p, '%%%'))\n"
    "    add(pcall(string.gsub, s, p, function(...) return ser(...) end))\n"
    "    add(pcall(string.gsub, s, p, function() return false end, 2))\n"
    "    add(pcall(string.gsub, s, p, { a = 'A', h = 1, l = true }))\n"
    "    add(pcall(string.gsub, s, p, 7, -1))\n"
    "    add(pcall(string.gsub, s, p, {}, 1.5))\n"
    "  end\n"
    "end end end\n"
    "add(pcall(string.gsub, 'abc', 'b', tostring))\n"
    "add(pcall(string.gsub, 'abc', '%w', { a = {} }))\n"
    "add(pcall(string.gsub, 'abc', 'b'))\n"
    "add(pcall(string.rep('(a)', 33)))\n"
    "add(pcall(string.match, string.rep('a', 40), string.rep('(a)', 33)))\n"
    "add(pcall(string.match, string.rep('a', 300), string.rep('a?', 300)))\n"
    "return table.concat(out, '\\n')";

static void patterns_agree_with_the_stock_library(void **state) {
    (void)state;
    cairn_lua *h = open_host(0, 0);
    lua_State *L = cairn_lua_state(h);
    CHECK_OK(run(h, pattern_corpus));
    size_t n1;
    const char *ours = lua_tolstring(L, -1, &n1);
    assert_non_null(ours);

    lua_State *ref = luaL_newstate();
    luaL_openlibs(ref);
    char *src = malloc(sizeof pattern_corpus + 64);
    snprintf(src, sizeof pattern_corpus + 64, "return (function(...)\n%s\nend)()", pattern_corpus);
    if (luaL_loadbuffer(ref, src, strlen(src), "=test") || lua_pcall(ref, 0, 1, 0))
        fail_msg("reference: %s", lua_tostring(ref, -1));
    size_t n2;
    const char *theirs = lua_tolstring(ref, -1, &n2);
    if (n1 != n2 || memcmp(ours, theirs, n1) != 0) {
        size_t i = 0, line = 0, start = 0;
        while (i < n1 && i < n2 && ours[i] == theirs[i]) {
            if (ours[i] == '\n') line++, start = i + 1;
            i++;
        }
        const char *e1 = strchr(ours + start, '\n'), *e2 = strchr(theirs + start, '\n');
        fail_msg("result %zu differs:\n ours:  %.*s\n stock: %.*s", line,
                 (int)(e1 ? e1 - ours - (ptrdiff_t)start : 200), ours + start,
                 (int)(e2 ? e2 - theirs - (ptrdiff_t)start : 200), theirs + start);
    }
    size_t lines = 1;
    for (size_t i = 0; i < n1; i++) lines += ours[i] == '\n';
    print_message("%zu pattern results agree with the stock string library\n", lines);
    free(src);
    lua_close(ref);
    lua_pop(L, 1);
    cairn_lua_close(h);
}

static void instruction_budget_resets_on_each_call(void **state) {
    (void)state;
    cairn_lua *h = open_host(100000, 0);
    for (int i = 0; i < 5; i++) RUN_OK(h, "local n = 0 for i = 1, 10000 do n = n + i end return n");
    CHECK_RC(run(h, "local n = 0 for i = 1, 1000000 do n = n + i end return n"), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("instruction limit exceeded (100000 instructions)");
    cairn_lua_close(h);
}

static void deep_recursion_is_a_script_error(void **state) {
    cairn_lua *h = *state;
    const char *body = "local function f(n) return 1 + f(n + 1) end\nreturn f(1)";
    /* under a 32 MiB cap the stack runs into the memory limit first */
    CHECK_RC(run(h, body), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    assert_int_equal(cairn_last_error()->line, 2);
    cairn_lua *big = open_host(0, 256 * MiB);
    CHECK_RC(run(big, body), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("stack overflow");
    assert_int_equal(cairn_last_error()->line, 2);
    cairn_lua_close(big);
    /* nested pcalls through C hit the C-stack limit, also an ordinary error */
    CHECK_RC(run(h, "local function f() local ok, e = pcall(f) error(e, 0) end\nf()"),
             CAIRN_ESCRIPT);
    RUN_OK(h, "return 1");
}

/* ---------------------------------------------------------------------------------
 * reject()
 * --------------------------------------------------------------------------------- */
static void reject_is_command_rejected_with_reason_and_details(void **state) {
    cairn_lua *h = *state;
    CHECK_RC(run_in(h, "acct",
                    "local balance = 5\n"
                    "reject('insufficient funds', { balance = balance, need = 7.5 })",
                    3),
             CAIRN_EREJECTED);
    const cairn_error *e = cairn_last_error();
    assert_string_equal(e->reason, "insufficient funds");
    assert_non_null(e->details);
    assert_int_equal(e->details_len, strlen("{\"balance\":5,\"need\":7.5}"));
    assert_memory_equal(e->details, "{\"balance\":5,\"need\":7.5}", e->details_len);
    assert_string_equal(e->script, "acct");
    assert_int_equal(e->line, 3);
    ASSERT_MSG_HAS("insufficient funds");
}

static void reject_inside_pcall_is_still_rejected(void **state) {
    cairn_lua *h = *state;
    CHECK_RC(run(h,
                 "local ok, err = pcall(reject, 'no', { 1, 2 })\n"
                 "ok, err = pcall(function() reject('no again') end)\n"
                 "return 'swallowed'"),
             CAIRN_EREJECTED);
    assert_string_equal(cairn_last_error()->reason, "no");
    assert_memory_equal(cairn_last_error()->details, "[1,2]", 5);
    CHECK_RC(run(h, "xpcall(reject, function() return 'handled' end, 'x')\nreturn 1"),
             CAIRN_EREJECTED);
    assert_string_equal(cairn_last_error()->reason, "x");
    assert_null(cairn_last_error()->details);
    RUN_OK(h, "return 1");
}

static void *reject_in_thread(void *arg) {
    (void)arg;
    cairn_lua *h = NULL;
    if (cairn_lua_open(0, 0, NULL, NULL, &h)) return (void *)1;
    const char *src =
        "return { f = function() reject('later', { big = string.rep('x', 5000) }) end }";
    int rc = cairn_lua_load(h, "t", src, strlen(src));
    if (rc == CAIRN_OK) {
        lua_getfield(cairn_lua_state(h), -1, "f");
        rc = cairn_lua_call(h, "t", 0, 0, 0);
    }
    int ok = rc == CAIRN_EREJECTED && cairn_last_error()->details_len > 5000;
    cairn_lua_close(h);
    return ok ? NULL : (void *)1; /* the thread's details buffer is freed at exit (LSan) */
}

static void reject_details_live_per_thread(void **state) {
    cairn_lua *h = *state;
    CHECK_RC(run(h, "reject('mine', 'here')"), CAIRN_EREJECTED);
    pthread_t t;
    void *res = (void *)1;
    assert_int_equal(pthread_create(&t, NULL, reject_in_thread, NULL), 0);
    assert_int_equal(pthread_join(t, &res), 0);
    assert_null(res);
    /* this thread's error is untouched by the other's */
    assert_string_equal(cairn_last_error()->reason, "mine");
    assert_memory_equal(cairn_last_error()->details, "\"here\"", 6);
}

static void reject_with_bad_arguments_is_a_script_error(void **state) {
    cairn_lua *h = *state;
    CHECK_RC(run(h, "reject(42)"), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("reason must be a string");
    CHECK_RC(run(h, "reject('r', { f = print })"), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("cannot encode a function value at $.f");
    CHECK_RC(run(h, "reject('r', json.null)"), CAIRN_EREJECTED);
    assert_memory_equal(cairn_last_error()->details, "null", 4);
}

/* ---------------------------------------------------------------------------------
 * Errors: objects, lines, positions
 * --------------------------------------------------------------------------------- */
static void non_string_error_objects_get_a_clear_message(void **state) {
    cairn_lua *h = *state;
    static const struct {
        const char *body, *want;
    } cases[] = {
        {"error({ code = 1 })", "test:2: error object is a table"},
        {"error(nil)", "test:2: error object is nil"},
        {"error()", "test:2: error object is nil"},
        {"error(42)", "test:2: error object is a number (42)"},
        {"error(1.5)", "test:2: error object is a number (1.5)"},
        {"error(true)", "test:2: error object is a boolean (true)"},
        {"error(print)", "test:2: error object is a function"},
        {"error(setmetatable({}, { __tostring = function() while true do end end }))",
         "test:2: error object is a table"},
        {"error('plain', 0)", "plain"},
        {"error('here')", "test:2: here"},
        {"local t = nil\nreturn t.x", "test:3: attempt to index a nil value (local 't')"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        CHECK_RC(run(h, cases[i].body), CAIRN_ESCRIPT);
        if (strcmp(cairn_errmsg(), cases[i].want) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].body, cairn_errmsg(), cases[i].want);
        assert_true(cairn_last_error()->line >= 2);
    }
}

static void syntax_error_reports_the_line(void **state) {
    cairn_lua *h = *state;
    const char *src = "return {\n  apply = {\n    X = function(s, e) s.n = = 1 end,\n  },\n}";
    CHECK_RC(cairn_lua_load(h, "broken", src, strlen(src)), CAIRN_ESCRIPT);
    const cairn_error *e = cairn_last_error();
    assert_string_equal(e->script, "broken");
    assert_int_equal(e->line, 3);
    ASSERT_MSG_HAS("broken:3:");
    assert_int_equal(lua_gettop(cairn_lua_state(h)), 0);
}

static void runtime_error_reports_line_and_position(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    const char *src = "local function helper(e)\n"
                      "  return e.data.amount + 1\n" /* line 2 */
                      "end\n"
                      "return { apply = { X = function(s, e)\n"
                      "  s.n = helper(e)\n"
                      "end } }";
    CHECK_OK(cairn_lua_load(h, "acct", src, strlen(src)));
    lua_getfield(L, -1, "apply");
    lua_getfield(L, -1, "X");
    lua_newtable(L);
    lua_newtable(L); /* e without data */
    CHECK_RC(cairn_lua_call(h, "acct", 2, 0, 1234), CAIRN_ESCRIPT);
    const cairn_error *e = cairn_last_error();
    assert_int_equal(e->line, 2);
    assert_int_equal(e->position, 1234);
    assert_string_equal(e->script, "acct");
    ASSERT_MSG_HAS("acct:2: attempt to index a nil value (field 'data')");
    assert_int_equal(lua_gettop(L), 2); /* script table and apply remain; call consumed */
    /* a failure inside a chunk made by load() is reported at the script's line */
    lua_settop(L, 0);
    CHECK_RC(run(h, "local f = load('local x = nil; return x.y')\nlocal r = f()\nreturn r"),
             CAIRN_ESCRIPT);
    assert_int_equal(cairn_last_error()->line, 3);
}

/* ---------------------------------------------------------------------------------
 * Conversion
 * --------------------------------------------------------------------------------- */
static void integers_and_floats_round_trip_exactly(void **state) {
    cairn_lua *h = *state;
    static const char *const same[] = {
        "9223372036854775807",
        "-9223372036854775808",
        "9007199254740993",
        "0",
        "-1",
        "0.1",
        "1e+300",
        "-0.0",
        "2.0",
        "1.5e-300",
        "5e-324",
        "1.7976931348623157e+308",
        "0.30000000000000004",
        "123456789012345.0",
        "1e+16",
        "[1,2.0,-3]",
        "true",
        "false",
        "null",
        "\"\"",
        "{}",
        "{\"a\":{\"b\":[true,false,null]}}",
    };
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) assert_roundtrip(h, same[i], same[i]);
    assert_roundtrip(h, " 1E2 ", "100.0");
    assert_roundtrip(h, "-0", "0");
    assert_roundtrip(h, "0.10000000000000001", "0.1");
    assert_roundtrip(h, "[]", "{}"); /* an empty table is an object */
    assert_roundtrip(h, "{\"b\":1,\"a\":2,\"a\":3}", "{\"a\":3,\"b\":1}");
    RUN_OK(h,
           "assert(math.type(json.decode('9223372036854775807')) == 'integer')\n"
           "assert(json.decode('9223372036854775807') == math.maxinteger)\n"
           "assert(json.decode('-9223372036854775808') == math.mininteger)\n"
           "assert(json.decode('9007199254740993') == 9007199254740993)\n"
           "assert(math.type(json.decode('2.0')) == 'float')\n"
           "assert(json.decode('0.1') == 0.1 and json.decode('1e300') == 1e300)\n"
           "assert(1 / json.decode('-0.0') == -math.huge)\n"
           "assert(json.encode(2.0) == '2.0' and json.encode(2) == '2')\n"
           "assert(json.encode(-0.0) == '-0.0' and json.encode(0.1) == '0.1')\n"
           "assert(json.encode(math.maxinteger) == '9223372036854775807')\n"
           "assert(json.encode(math.mininteger) == '-9223372036854775808')\n"
           "assert(json.encode(2^53 + 1) == '9007199254740992.0')\n"
           "assert(json.encode(math.tointeger(2^53) + 1) == '9007199254740993')\n"
           "return true");
    /* outside int64: refused, never rounded */
    lua_State *L = cairn_lua_state(h);
    CHECK_RC(cairn_lua_push_json(h, "9223372036854775808", 19), CAIRN_EINVAL);
    ASSERT_MSG_HAS("64-bit");
    CHECK_RC(cairn_lua_push_json(h, "-9223372036854775809", 20), CAIRN_EINVAL);
    CHECK_RC(cairn_lua_push_json(h, "1e400", 5), CAIRN_EINVAL);
    assert_int_equal(lua_gettop(L), 0);
}

static void strings_round_trip_and_must_be_utf8(void **state) {
    cairn_lua *h = *state;
    assert_roundtrip(h, "\"a\\u0000b\\n\\t\\\"\\\\\\/\\u00e9\\ud83d\\ude00\\u001f\"",
                     "\"a\\u0000b\\n\\t\\\"\\\\/\xc3\xa9\xf0\x9f\x98\x80\\u001f\"");
    assert_roundtrip(h, "\"caf\xc3\xa9\"", "\"caf\xc3\xa9\"");
    lua_State *L = cairn_lua_state(h);
    static const char *const bad_json[] = {
        "\"\xff\"",    "\"\xc0\xaf\"", "\"\xed\xa0\x80\"",
        "\"\\ud800\"", "\"\\udc00x\"", "\"abc",
        "\"a\nb\"",    "[1,]",         "{\"a\" 1}",
        "01",          "1.",           "-",
        "nul",         "[1] x",        "",
        "{\"a\":1,}",  "\"\\x\"",
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof *bad_json; i++) {
        if (cairn_lua_push_json(h, bad_json[i], strlen(bad_json[i])) != CAIRN_EINVAL)
            fail_msg("accepted bad JSON %s", bad_json[i]);
        assert_int_equal(lua_gettop(L), 0);
    }
    RUN_OK(h,
           "local ok, err = pcall(json.encode, '\\xff')\n"
           "assert(not ok and err:find('not UTF%-8'), err)\n"
           "ok, err = pcall(json.encode, { ['\\xc0\\x80'] = 1 })\n"
           "assert(not ok and err:find('not UTF%-8'), err)\n"
           "ok, err = pcall(json.encode, '\\u{D800}')\n"
           "assert(not ok, 'surrogate accepted')\n"
           "assert(json.encode('\\u{10FFFF}') == '\"\\u{10FFFF}\"')\n"
           "return true");
}

static void nesting_limit_is_1000(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    for (int depth = 500; depth <= 1001; depth += 500) {
        int d = depth == 1500 ? 1001 : depth;
        char *s = malloc((size_t)d * 2 + 1);
        memset(s, '[', (size_t)d);
        memset(s + d, ']', (size_t)d);
        s[2 * d] = '\0';
        int rc = cairn_lua_push_json(h, s, strlen(s));
        if (d <= 1000) {
            CHECK_OK(rc);
            lua_pop(L, 1);
        } else {
            CHECK_RC(rc, CAIRN_EINVAL);
            ASSERT_MSG_HAS("deeper than 1000");
        }
        free(s);
    }
    /* exactly 1000 decodes; the encoder takes 1000 and refuses 1001 */
    RUN_OK(h,
           "local function nest(n) local t = { 1 } for _ = 2, n do t = { t } end return t end\n"
           "assert(json.encode(nest(500)):sub(1, 3) == '[[[')\n"
           "assert(json.encode(nest(1000)))\n"
           "local ok, err = pcall(json.encode, nest(1001))\n"
           "assert(not ok and err:find('deeper than 1000'), err)\n"
           "local s = string.rep('[', 1000) .. string.rep(']', 1000)\n"
           "assert(json.decode(s))\n"
           "ok, err = pcall(json.decode, '[' .. s .. ']')\n"
           "assert(not ok and err:find('deeper than 1000'), err)\n"
           "return true");
    assert_int_equal(lua_gettop(L), 0);
}

static void unencodable_values_are_refused_with_their_place(void **state) {
    cairn_lua *h = *state;
    static const struct {
        const char *expr, *want;
    } cases[] = {
        {"0/0", "cannot encode NaN"},
        {"math.huge", "cannot encode inf"},
        {"{ a = { -math.huge } }", "cannot encode -inf at $.a[1]"},
        {"{ items = { 1, 2, { f = print } } }", "cannot encode a function value at $.items[3].f"},
        {"{ 1, nil, 3 }", "cannot encode table key 3: an array must have keys 1..n without holes"},
        {"{ 1, a = 2 }", "cannot encode table key 1"},
        {"{ [0] = 'x' }", "cannot encode table key 0"},
        {"{ [1.5] = 'x' }", "cannot encode table key 1.5"},
        {"{ [true] = 'x' }", "cannot encode table key true"},
        {"{ ['odd key'] = { [2] = 1, y = 2 } }",
         "cannot encode table key 2: a table that is not a "
         "sequence 1..n must have string keys only at "
         "$[\"odd key\"]"},
        {"(function() local t = {} t.self = t return t end)()",
         "cannot encode a table that contains itself"},
        {"(function() local a, b = {}, {} a[1] = b b[1] = a return { x = a } end)()",
         "contains itself"},
        {"{ x = string.char(255) }", "not UTF-8 at $.x"},
        {"{ u = (function() return _G.nothing end)(), v = load }", "cannot encode a function"},
    };
    lua_State *L = cairn_lua_state(h);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char body[512];
        snprintf(body, sizeof body, "return %s", cases[i].expr);
        CHECK_OK(run(h, body));
        cairn_buf b = {0};
        cairn_buf_append(&b, "keep", 4);
        CHECK_RC(cairn_lua_to_json(h, -1, &b), CAIRN_ESCRIPT);
        if (!strstr(cairn_errmsg(), cases[i].want))
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].expr, cairn_errmsg(), cases[i].want);
        assert_int_equal(b.len, 4); /* untouched on failure */
        cairn_buf_free(&b);
        lua_pop(L, 1);
    }
    assert_int_equal(lua_gettop(L), 0);
}

/* A table shared by both halves of its parent, 40 levels deep, is 41 tables in Lua and 2^40
 * values of JSON: the encoder stops at the memory cap (the text counts against it) or the
 * budget (the values do), inside a call (json.encode, reject details: the kill, which pcall
 * cannot catch) and outside (the host converting a result). */
static void encoding_a_shared_subtree_is_bounded(void **state) {
    (void)state;
    static const char dag[] = "local t = {1}\nfor i = 1, 40 do t = {t, t} end\n";
    static const struct {
        const char *body, *want;
        uint64_t instr;
    } cases[] = {
        {"return json.encode(t)", "memory limit exceeded (4194304 bytes)", 0},
        {"return pcall(json.encode, t)", "memory limit exceeded (4194304 bytes)", 0},
        {"return pcall(json.encode, t)", "instruction limit exceeded (100000 instructions)",
         100000},
        {"reject('no', {t = t})", "memory limit exceeded (4194304 bytes)", 0},
    };
    /* bounded, not exponential: seconds at most (valgrind runs it some 50 times slower) */
    const double bound = getenv("CAIRN_UNDER_VALGRIND") ? 250.0 : 5.0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cairn_lua *h = open_host(cases[i].instr, 4 * MiB);
        char body[256];
        snprintf(body, sizeof body, "%s%s", dag, cases[i].body);
        double t0 = now_s();
        CHECK_RC(run(h, body), CAIRN_ESCRIPT);
        if (!strstr(cairn_errmsg(), cases[i].want))
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].body, cairn_errmsg(), cases[i].want);
        assert_true(now_s() - t0 < bound);
        RUN_OK(h, "return json.encode({1, {2}})");
        cairn_lua_close(h);
    }
    /* the time limit, with the budget off */
    cairn_lua *h = open_host(0, 0);
    cairn_lua_set_time_limit(h, 100u * 1000 * 1000);
    double t0 = now_s();
    CHECK_RC(run(h, "local t = {1}\nfor i = 1, 40 do t = {t, t} end\nreturn pcall(json.encode, t)"),
             CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("time limit exceeded (0.1 s)");
    assert_true(now_s() - t0 < bound);
    /* outside a call: a failure naming the cap, nothing appended */
    cairn_lua_close(h);
    h = open_host(0, 4 * MiB);
    lua_State *L = cairn_lua_state(h);
    CHECK_OK(run(h, "local t = {1}\nfor i = 1, 40 do t = {t, t} end\nreturn t"));
    cairn_buf b = {0};
    cairn_buf_append(&b, "keep", 4);
    t0 = now_s();
    CHECK_RC(cairn_lua_to_json(h, -1, &b), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded (4194304 bytes) by the JSON text");
    assert_true(now_s() - t0 < bound);
    assert_int_equal(b.len, 4);
    cairn_buf_free(&b);
    lua_pop(L, 1);
    cairn_lua_close(h);
}

static void tables_encode_as_arrays_or_sorted_objects(void **state) {
    cairn_lua *h = *state;
    static const struct {
        const char *expr, *want;
    } cases[] = {
        {"{}", "{}"},
        {"{ 1, 2, 3 }", "[1,2,3]"},
        {"{ [1] = 'a', [2] = 'b' }", "[\"a\",\"b\"]"},
        {"{ [2] = 'b', [1] = 'a' }", "[\"a\",\"b\"]"},
        {"{ b = 1, a = 2, c = { z = json.null, y = false } }",
         "{\"a\":2,\"b\":1,\"c\":{\"y\":false,\"z\":null}}"},
        {"{ json.null, 'x' }", "[null,\"x\"]"},
        {"nil", "null"},
        {"'\\1\\127'", "\"\\u0001\x7f\""},
        {"setmetatable({}, { __index = function() return 1 end, __len = function() return 3 end })",
         "{}"},
    };
    lua_State *L = cairn_lua_state(h);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char body[512];
        snprintf(body, sizeof body, "return %s", cases[i].expr);
        CHECK_OK(run(h, body));
        cairn_buf b = {0};
        CHECK_OK(cairn_lua_to_json(h, -1, &b));
        if (b.len != strlen(cases[i].want) || memcmp(b.p, cases[i].want, b.len) != 0)
            fail_msg("%s: got %.*s, want %s", cases[i].expr, (int)b.len, b.p, cases[i].want);
        cairn_buf_free(&b);
        lua_pop(L, 1);
    }
    RUN_OK(h,
           "assert(json.decode('null') == json.null and tostring(json.null) == 'null')\n"
           "assert(getmetatable(json.null) == false)\n"
           "assert(json.encode({ a = json.null }) == '{\"a\":null}')\n"
           "local t = json.decode('{\"a\":[1,{\"b\":null}],\"c\":\"d\"}')\n"
           "assert(t.a[1] == 1 and t.a[2].b == json.null and t.c == 'd')\n"
           "return true");
}

/* Differential check of the decoder and encoder against jansson on a corpus. */
static void conversion_agrees_with_jansson(void **state) {
    cairn_lua *h = *state;
    static const char *const corpus[] = {
        "{\"amount\":42,\"note\":\"hello\"}",
        "[1,-2,3.25,-0.5,1e-7,6.02214076e+23,\"\\u00fc\",{\"k\":[[],{}]}]",
        "{\"a\":{\"b\":{\"c\":{\"d\":[true,false,null,0,-0.0,1.0]}}}}",
        "[9223372036854775807,-9223372036854775808,4294967296,2147483648]",
        "{\"x\":\"\\ud834\\udd1e\",\"y\":\"tab\\there\",\"z\":\"\\u0001\"}",
        "[0.1,0.2,0.3,1.1,2.675,1e21,1e22,123.456e-89,3.141592653589793]",
    };
    for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
        char *mine = roundtrip(h, corpus[i]);
        assert_non_null(mine);
        json_error_t err;
        size_t flags = JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17);
        json_t *a = json_loads(corpus[i], JSON_DECODE_ANY, &err);
        json_t *b = json_loads(mine, JSON_DECODE_ANY, &err);
        assert_non_null(a);
        assert_non_null(b);
        char *ta = json_dumps(a, flags), *tb = json_dumps(b, flags);
        /* jansson keeps [] vs {}; we map empty arrays to {} by design */
        for (char *p = ta; (p = strstr(p, "[]")); p += 2) memcpy(p, "{}", 2);
        if (strcmp(ta, tb) != 0) fail_msg("corpus %zu: jansson %s, ours %s (%s)", i, ta, tb, mine);
        free(ta);
        free(tb);
        json_decref(a);
        json_decref(b);
        free(mine);
    }
}

static void host_conversion_under_the_memory_cap_fails_cleanly(void **state) {
    (void)state;
    cairn_lua *h = open_host(0, 2 * MiB);
    lua_State *L = cairn_lua_state(h);
    size_t n = 4 * MiB;
    char *s = malloc(n + 3);
    s[0] = '"';
    memset(s + 1, 'x', n);
    s[n + 1] = '"';
    s[n + 2] = '\0';
    CHECK_RC(cairn_lua_push_json(h, s, n + 2), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    assert_int_equal(lua_gettop(L), 0);
    free(s);
    CHECK_OK(cairn_lua_push_json(h, "{\"ok\":true}", 11));
    lua_pop(L, 1);
    cairn_lua_close(h);
}

/* ---------------------------------------------------------------------------------
 * Events
 * --------------------------------------------------------------------------------- */
typedef struct ev_buf {
    uint8_t raw[512];
    cairn_event ev;
} ev_buf;

/* An event laid out as in a stored record: tags, then metadata. */
static void make_event(ev_buf *b, const char *type, const char *data, uint32_t flags,
                       const char *metadata, const char *const *tags, size_t ntags) {
    memset(b, 0, sizeof *b);
    uint8_t *p = b->raw;
    b->ev.tags_raw = p;
    for (size_t i = 0; i < ntags; i++) {
        uint16_t n = (uint16_t)strlen(tags[i]);
        memcpy(p, &n, 2);
        memcpy(p + 2, tags[i], n);
        p += 2 + n;
    }
    b->ev.ntags = ntags;
    b->ev.tags_len = (size_t)(p - b->raw);
    size_t mlen = metadata ? strlen(metadata) : 0;
    memcpy(p, metadata ? metadata : "", mlen);
    b->ev.metadata.ptr = p;
    b->ev.metadata.len = mlen;
    b->ev.type.ptr = type;
    b->ev.type.len = strlen(type);
    b->ev.data.ptr = data;
    b->ev.data.len = data ? strlen(data) : 0;
    b->ev.flags = flags;
    b->ev.stream.ptr = "account-42";
    b->ev.stream.len = 10;
    b->ev.position = 77;
    b->ev.version = 3;
    b->ev.timestamp = 1700000000123456789LL;
    b->ev.schema = 2;
    for (int i = 0; i < 16; i++) b->ev.id[i] = (uint8_t)(0x01 + i * 0x11);
}

static void event_table_has_the_spec_fields(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    const char *src =
        "return { check = function(e)\n"
        "  assert(e.type == 'Deposited' and e.stream == 'account-42')\n"
        "  assert(e.data.amount == 42 and math.type(e.data.amount) == 'integer')\n"
        "  assert(e.data.note == 'hello')\n"
        "  assert(e.metadata.correlation_id == 'c-1')\n"
        "  assert(e.id == '01122334-4556-6778-899a-abbccddeef00', e.id)\n"
        "  assert(e.version == 3 and e.position == 77 and e.schema == 2)\n"
        "  assert(e.timestamp == 1700000000123456789 and math.type(e.timestamp) == 'integer')\n"
        "  assert(#e.tags == 2 and e.tags[1] == 'course:c1' and e.tags[2] == 'x')\n"
        "  assert(e.forgotten == false and e.bytes == false)\n"
        "  return true\n"
        "end,\n"
        "check_bare = function(e)\n"
        "  assert(e.data == nil and next(e.metadata) == nil and #e.tags == 0 and e.bytes == "
        "false)\n"
        "  return true\n"
        "end,\n"
        "check_bytes = function(e)\n"
        "  assert(e.data == '\\0\\1\\255' and e.bytes == true, e.data)\n"
        "  return true\n"
        "end }";
    CHECK_OK(cairn_lua_load(h, "ev", src, strlen(src)));
    static const char *const tags[] = {"course:c1", "x"};
    ev_buf b;
    make_event(&b, "Deposited", "{\"amount\":42,\"note\":\"hello\"}", 0,
               "{\"correlation_id\":\"c-1\"}", tags, 2);
    lua_getfield(L, -1, "check");
    CHECK_OK(cairn_lua_push_event(h, &b.ev));
    CHECK_OK(cairn_lua_call(h, "ev", 1, 1, 77));
    lua_pop(L, 1);

    make_event(&b, "Opened", NULL, 0, NULL, NULL, 0);
    lua_getfield(L, -1, "check_bare");
    CHECK_OK(cairn_lua_push_event(h, &b.ev));
    CHECK_OK(cairn_lua_call(h, "ev", 1, 1, 0));
    lua_pop(L, 1);

    make_event(&b, "Blob", NULL, CAIRN_EVENT_BYTES, NULL, NULL, 0);
    b.ev.data.ptr = "\0\1\xff";
    b.ev.data.len = 3;
    lua_getfield(L, -1, "check_bytes");
    CHECK_OK(cairn_lua_push_event(h, &b.ev));
    CHECK_OK(cairn_lua_call(h, "ev", 1, 1, 0));
    lua_pop(L, 2);

    make_event(&b, "Bad", "{\"amount\":", 0, NULL, NULL, 0);
    CHECK_RC(cairn_lua_push_event(h, &b.ev), CAIRN_EINVAL);
    ASSERT_MSG_HAS("position 77: data");
    assert_int_equal(lua_gettop(L), 0);
}

/* ---------------------------------------------------------------------------------
 * Folding batches (cairn_lua_fold)
 * --------------------------------------------------------------------------------- */
#define FOLD_MAX 16

/* A batch of events of one stream: types[i] with data[i] (NULL: none), at positions
 * 101, 102, ... and versions 0, 1, ... */
typedef struct fold_batch {
    ev_buf b[FOLD_MAX];
    cairn_event evs[FOLD_MAX];
    size_t n;
} fold_batch;

static void make_batch(fold_batch *fb, size_t n, const char *const *types,
                       const char *const *data) {
    assert_true(n <= FOLD_MAX);
    fb->n = n;
    for (size_t i = 0; i < n; i++) {
        make_event(&fb->b[i], types[i], data ? data[i] : NULL, 0, NULL, NULL, 0);
        fb->b[i].ev.position = 101 + i;
        fb->b[i].ev.version = (int64_t)i;
        fb->b[i].ev.schema = 1;
        fb->b[i].ev.id[15] = (uint8_t)i;
        fb->evs[i] = fb->b[i].ev;
    }
}

/* Loads an aggregate-like script and leaves: script table, state (init() or {}), apply,
 * apply["*"] or nil.  Returns the stack index of the state. */
static int push_agg(cairn_lua *h, const char *name, const char *src, int *apply, int *star) {
    lua_State *L = cairn_lua_state(h);
    CHECK_OK(cairn_lua_load(h, name, src, strlen(src)));
    int script = lua_gettop(L);
    lua_getfield(L, script, "init");
    if (lua_isfunction(L, -1)) {
        CHECK_OK(cairn_lua_call(h, name, 0, 1, 0));
    } else {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    int st = lua_gettop(L);
    lua_getfield(L, script, "apply");
    *apply = lua_istable(L, -1) ? lua_gettop(L) : 0;
    lua_getfield(L, -1, "*");
    *star = lua_isfunction(L, -1) ? lua_gettop(L) : 0;
    return st;
}

/* Runs check(state) from the script at index 1; it must return true. */
static void check_state(cairn_lua *h, const char *name, int st) {
    lua_State *L = cairn_lua_state(h);
    lua_getfield(L, 1, "check");
    lua_pushvalue(L, st);
    CHECK_OK(cairn_lua_call(h, name, 1, 1, 0));
    assert_true(lua_toboolean(L, -1));
    lua_pop(L, 1);
}

static void fold_applies_reducers_in_order(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    const char *src =
        "return {\n"
        "  init = function() return { log = {}, n = 0 } end,\n"
        "  apply = {\n"
        "    A = function(s, e) s.log[#s.log + 1] = 'A' .. e.data.x end,\n"
        "    B = function(s, e) return { log = s.log, n = s.n, replaced = true } end,\n"
        "    ['*'] = function(s, e) s.n = s.n + 1; s.log[#s.log + 1] = '*' .. e.version end,\n"
        "  },\n"
        "  check = function(s)\n"
        "    assert(s.replaced and s.n == 4, 'n ' .. s.n)\n"
        "    assert(table.concat(s.log, ',') == 'A1,*0,*1,A3,*2,*3', table.concat(s.log, ','))\n"
        "    return true\n"
        "  end }";
    static const char *const types[] = {"A", "B", "A", "C"};
    static const char *const data[] = {"{\"x\":1}", "{}", "{\"x\":3}", NULL};
    fold_batch fb;
    int apply, star;
    make_batch(&fb, 4, types, data);
    int st = push_agg(h, "agg", src, &apply, &star);
    int top = lua_gettop(L);
    size_t done = 99;
    CHECK_OK(cairn_lua_fold(h, "agg", st, apply, star, 0, fb.evs, fb.n, 0, &done));
    assert_int_equal(done, 4);
    assert_int_equal(lua_gettop(L), top);
    check_state(h, "agg", st);
    /* an empty batch does nothing */
    CHECK_OK(cairn_lua_fold(h, "agg", st, apply, star, 0, fb.evs, 0, 0, &done));
    assert_int_equal(done, 0);
    lua_settop(L, 0);
}

static void fold_budget_is_per_reducer_and_uncatchable(void **state) {
    (void)state;
    cairn_lua *h = open_host(100000, 32 * MiB);
    lua_State *L = cairn_lua_state(h);
    /* each reducer spends ~40,000 instructions: the batch spends far more than one budget */
    const char *src = "return {\n"
                      "  apply = { X = function(s, e)\n"
                      "    local n = 0\n"
                      "    for i = 1, 20000 do n = n + i end\n"
                      "    s.count = (s.count or 0) + 1\n"
                      "    if e.data and e.data.loop then\n"
                      "      pcall(function() while true do end end)\n" /* line 7 */
                      "    end\n"
                      "  end },\n"
                      "  check = function(s) return s.count == 10 end }";
    static const char *const types[] = {"X", "X", "X", "X", "X", "X", "X", "X", "X", "X"};
    static const char *const data[] = {"{}", "{}", "{\"loop\":true}", "{}", "{}", "{}", "{}", "{}",
                                       "{}", "{}"};
    static const char *const plain[] = {"{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}"};
    fold_batch fb;
    int apply, star;
    size_t done = 0;
    make_batch(&fb, 10, types, plain);
    int st = push_agg(h, "loopy", src, &apply, &star);
    CHECK_OK(cairn_lua_fold(h, "loopy", st, apply, star, 0, fb.evs, fb.n, 0, &done));
    assert_int_equal(done, 10);
    check_state(h, "loopy", st);

    /* an endless loop in the third event's reducer is killed, pcall notwithstanding */
    make_batch(&fb, 10, types, data);
    int top = lua_gettop(L);
    CHECK_RC(cairn_lua_fold(h, "loopy", st, apply, star, 0, fb.evs, fb.n, 0, &done), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("instruction limit exceeded (100000 instructions)");
    const cairn_error *e = cairn_last_error();
    assert_string_equal(e->script, "loopy");
    assert_int_equal(e->position, 103);
    assert_int_equal(e->line, 7);
    assert_int_equal(done, 2);
    assert_int_equal(lua_gettop(L), top);
    assert_true(lua_istable(L, st));
    /* the state is usable afterwards, with a fresh budget */
    RUN_OK(h, "local n = 0 for i = 1, 20000 do n = n + i end return n");
    lua_settop(L, 0);
    cairn_lua_close(h);
}

static void fold_memory_cap_holds_and_the_state_recovers(void **state) {
    (void)state;
    cairn_lua *h = open_host(0, 4 * MiB);
    lua_State *L = cairn_lua_state(h);
    const char *src = "return { apply = { X = function(s, e)\n"
                      "  if e.version == 1 then\n"
                      "    local t = {}\n"
                      "    for i = 1, 1e8 do t[i] = i end\n" /* line 4 */
                      "  end\n"
                      "end } }";
    static const char *const types[] = {"X", "X", "X"};
    fold_batch fb;
    int apply, star;
    size_t done;
    make_batch(&fb, 3, types, NULL);
    int st = push_agg(h, "mem", src, &apply, &star);
    int top = lua_gettop(L);
    CHECK_RC(cairn_lua_fold(h, "mem", st, apply, star, 0, fb.evs, fb.n, 0, &done), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    assert_string_equal(cairn_last_error()->script, "mem");
    assert_int_equal(cairn_last_error()->position, 102);
    assert_int_equal(done, 1);
    assert_int_equal(lua_gettop(L), top);
    assert_true(cairn_lua_memory(h) < 4 * MiB);
    /* the next batch runs */
    static const char *const other[] = {"Y", "Y", "Y"};
    make_batch(&fb, 3, other, NULL);
    CHECK_OK(cairn_lua_fold(h, "mem", st, apply, star, 0, fb.evs, fb.n, 0, &done));
    assert_int_equal(done, 3);
    lua_settop(L, 0);
    cairn_lua_close(h);
}

static void fold_event_tables_are_fresh(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    const char *src =
        "return {\n"
        "  init = function() return { evs = {}, datas = {} } end,\n"
        "  apply = { D = function(s, e)\n"
        "    assert(type(e) == 'table' and getmetatable(e) == nil)\n"
        "    local n = 0\n"
        "    for k in pairs(e) do n = n + 1 end\n"
        "    assert(n == 12, 'fields: ' .. n)\n"
        "    assert(json.decode(json.encode(e)).id == e.id)\n"
        "    assert(#e.tags == 0 and next(e.metadata) == nil)\n"
        "    s.evs[#s.evs + 1] = e\n"
        "    s.datas[#s.datas + 1] = e.data\n"
        "    e.data.amount = e.data.amount * 10\n"
        "    e.metadata.seen = e.version\n"
        "    e.tags[1] = 'mine'\n"
        "  end },\n"
        "  check = function(s)\n"
        "    assert(#s.evs == 3)\n"
        "    for i = 1, 3 do\n"
        "      local e = s.evs[i]\n"
        "      assert(e.data == s.datas[i] and e.data.amount == i * 10)\n"
        "      assert(e.metadata.seen == i - 1 and e.version == i - 1 and e.position == 100 + i)\n"
        "      for j = 1, 3 do if j ~= i then\n"
        "        local f = s.evs[j]\n"
        "        assert(e ~= f and e.data ~= f.data and e.metadata ~= f.metadata and e.tags ~= "
        "f.tags)\n"
        "        assert(e.id ~= f.id)\n"
        "      end end\n"
        "    end\n"
        "    return true\n"
        "  end }";
    static const char *const types[] = {"D", "D", "D"};
    static const char *const data[] = {"{\"amount\":1}", "{\"amount\":2}", "{\"amount\":3}"};
    fold_batch fb;
    int apply, star;
    size_t done;
    make_batch(&fb, 3, types, data);
    int st = push_agg(h, "fresh", src, &apply, &star);
    CHECK_OK(cairn_lua_fold(h, "fresh", st, apply, star, 0, fb.evs, fb.n, 0, &done));
    check_state(h, "fresh", st);
    /* the state encodes, events and all */
    cairn_buf b = {0};
    CHECK_OK(cairn_lua_to_json(h, st, &b));
    assert_non_null(memmem(b.p, b.len, "\"amount\":30", 11));
    cairn_buf_free(&b);
    lua_settop(L, 0);
}

static void fold_errors_report_line_and_position(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    const char *src = "return {\n"
                      "  apply = { X = function(s, e)\n"
                      "    s.n = (s.n or 0) + 1\n"
                      "    if e.version == 1 then\n"
                      "      error('boom')\n" /* line 5 */
                      "    end\n"
                      "  end } }";
    static const char *const types[] = {"X", "X", "X"};
    fold_batch fb;
    int apply, star;
    size_t done;
    make_batch(&fb, 3, types, NULL);
    int st = push_agg(h, "acct", src, &apply, &star);
    int top = lua_gettop(L);
    CHECK_RC(cairn_lua_fold(h, "acct", st, apply, star, 0, fb.evs, fb.n, 0, &done), CAIRN_ESCRIPT);
    const cairn_error *e = cairn_last_error();
    assert_string_equal(e->script, "acct");
    assert_int_equal(e->line, 5);
    assert_int_equal(e->position, 102);
    ASSERT_MSG_HAS("acct:5: boom");
    assert_int_equal(done, 1);
    assert_int_equal(lua_gettop(L), top);

    /* data that does not decode: as from cairn_lua_push_event */
    static const char *const bad[] = {"{}", "{\"amount\":", "{}"};
    make_batch(&fb, 3, types, bad);
    CHECK_RC(cairn_lua_fold(h, "acct", st, apply, star, 0, fb.evs, fb.n, 0, &done), CAIRN_EINVAL);
    ASSERT_MSG_HAS("position 102: data");
    assert_int_equal(cairn_last_error()->position, 102);
    assert_int_equal(done, 1);
    assert_int_equal(lua_gettop(L), top);

    /* a reject() inside a reducer is a rejection, as from cairn_lua_call */
    lua_settop(L, 0);
    const char *rej =
        "return { apply = { X = function(s, e) reject('no', { v = e.version }) end } }";
    st = push_agg(h, "rej", rej, &apply, &star);
    CHECK_RC(cairn_lua_fold(h, "rej", st, apply, star, 0, fb.evs, 1, 0, &done), CAIRN_EREJECTED);
    assert_string_equal(cairn_last_error()->reason, "no");
    lua_settop(L, 0);
    /* no state table: refused */
    CHECK_RC(cairn_lua_fold(h, "x", 0, 0, 0, 0, fb.evs, 1, 0, &done), CAIRN_EINVAL);
}

static void fold_runs_the_upcaster_chain(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    const char *up = "return {\n"
                     "  X = {\n"
                     "    [1] = function(e) e.data.v2 = true; e.schema = 42; return e end,\n"
                     "    [2] = function(e) local n = { type = e.type, data = e.data, schema = 7,\n"
                     "                                  position = e.position }\n"
                     "                      n.data.v3 = true; return n end,\n"
                     "  },\n"
                     "  Old = { [1] = function(e) e.type = 'X'; return e end },\n"
                     "  Bad = { [1] = function(e) return 5 end },\n"
                     "  Err = { [1] = function(e)\n"
                     "    error('up boom') end },\n" /* line 11 */
                     "}";
    const char *src = "return {\n"
                      "  init = function() return { seen = {} } end,\n"
                      "  apply = { X = function(s, e)\n"
                      "    s.seen[#s.seen + 1] = e.schema .. ':' .. tostring(e.data.v2) .. ':' .. "
                      "tostring(e.data.v3)\n"
                      "  end },\n"
                      "  check = function(s)\n"
                      "    assert(table.concat(s.seen, ',') == '3:true:true,3:nil:true', "
                      "table.concat(s.seen, ','))\n"
                      "    return true\n"
                      "  end }";
    static const char *const types[] = {"X", "X"};
    static const char *const data[] = {"{}", "{}"};
    fold_batch fb;
    int apply, star;
    size_t done;
    make_batch(&fb, 2, types, data);
    fb.evs[1].schema = 2;
    int st = push_agg(h, "agg", src, &apply, &star); /* the script at 1, for check_state */
    CHECK_OK(cairn_lua_load(h, "upcasters", up, strlen(up)));
    int upi = lua_gettop(L);
    CHECK_OK(cairn_lua_fold(h, "agg", st, apply, star, upi, fb.evs, fb.n, 0, &done));
    assert_int_equal(done, 2);
    check_state(h, "agg", st);

    /* an upcaster may change the type: the chain goes on with the new type's upcasters,
     * and the reducer is the new type's */
    static const char *const old_types[] = {"Old"};
    make_batch(&fb, 1, old_types, data);
    CHECK_OK(cairn_lua_fold(h, "agg", st, apply, star, upi, fb.evs, fb.n, 0, &done));
    assert_int_equal(done, 1);
    lua_getfield(L, st, "seen");
    assert_int_equal(luaL_len(L, -1), 3);
    lua_rawgeti(L, -1, 3);
    assert_string_equal(lua_tostring(L, -1), "3:nil:true");
    lua_pop(L, 2);

    static const char *const bad_types[] = {"X", "Bad"};
    make_batch(&fb, 2, bad_types, data);
    CHECK_RC(cairn_lua_fold(h, "agg", st, apply, star, upi, fb.evs, fb.n, 0, &done), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("upcaster for schema 1 did not return an event table");
    assert_string_equal(cairn_last_error()->script, "upcasters");
    assert_int_equal(cairn_last_error()->position, 102);

    static const char *const err_types[] = {"Err"};
    make_batch(&fb, 1, err_types, data);
    CHECK_RC(cairn_lua_fold(h, "agg", st, apply, star, upi, fb.evs, fb.n, 0, &done), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("up boom");
    assert_string_equal(cairn_last_error()->script, "upcasters");
    assert_int_equal(cairn_last_error()->line, 11);
    assert_int_equal(cairn_last_error()->position, 101);
    assert_int_equal(done, 0);
    lua_settop(L, 0);
}

/* cairn_lua_upcast, the chain the read paths, projections and aggregates run on one event
 * table (cairn_lua_fold runs the same on each event of a batch). */
static void upcast_runs_the_chain_on_one_event(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    const char *up =
        "local long = {}\n"
        "for i = 1, 1001 do long[i] = function(e) return e end end\n"
        "return {\n"
        "  X = {\n"
        "    [1] = function(e) e.data.v2 = true; e.schema = 42; return e end,\n"
        "    [2] = function(e) return { type = e.type, data = e.data, schema = 7 } end,\n"
        "  },\n"
        "  Bad = { [1] = function(e) return 5 end },\n"
        "  Err = { [1] = function(e)\n"
        "    error('up boom') end },\n" /* line 10 */
        "  Long = long,\n"
        "}";
    ev_buf b;
    int changed = -1;
    CHECK_OK(cairn_lua_load(h, "upcasters", up, strlen(up)));
    int upi = lua_gettop(L);

    make_event(&b, "X", "{}", 0, NULL, NULL, 0);
    b.ev.schema = 1;
    CHECK_OK(cairn_lua_push_event(h, &b.ev));
    CHECK_OK(cairn_lua_upcast(h, upi, -1, b.ev.position, &changed));
    assert_int_equal(changed, 1);
    assert_int_equal(lua_gettop(L), upi + 1);
    lua_getfield(L, -1, "schema");
    assert_int_equal(lua_tointeger(L, -1), 3); /* after [n] the schema is n + 1 */
    lua_getfield(L, -2, "data");
    lua_getfield(L, -1, "v2");
    assert_true(lua_toboolean(L, -1));
    lua_settop(L, upi);

    make_event(&b, "Y", "{}", 0, NULL, NULL, 0); /* no upcaster for it */
    CHECK_OK(cairn_lua_push_event(h, &b.ev));
    int ev = lua_gettop(L);
    const void *before = lua_topointer(L, ev);
    CHECK_OK(cairn_lua_upcast(h, upi, ev, b.ev.position, &changed));
    assert_int_equal(changed, 0);
    assert_ptr_equal(lua_topointer(L, ev), before);
    lua_settop(L, upi);

    make_event(&b, "Bad", "{}", 0, NULL, NULL, 0);
    b.ev.schema = 1;
    CHECK_OK(cairn_lua_push_event(h, &b.ev));
    before = lua_topointer(L, -1);
    CHECK_RC(cairn_lua_upcast(h, upi, -1, b.ev.position, &changed), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("upcaster for schema 1 did not return an event table");
    assert_string_equal(cairn_last_error()->script, "upcasters");
    assert_int_equal(cairn_last_error()->position, 77);
    assert_int_equal(lua_gettop(L), upi + 1); /* the slot is left as it was */
    assert_ptr_equal(lua_topointer(L, -1), before);
    lua_settop(L, upi);

    make_event(&b, "Err", "{}", 0, NULL, NULL, 0);
    b.ev.schema = 1;
    CHECK_OK(cairn_lua_push_event(h, &b.ev));
    CHECK_RC(cairn_lua_upcast(h, upi, -1, b.ev.position, &changed), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("up boom");
    assert_string_equal(cairn_last_error()->script, "upcasters");
    assert_int_equal(cairn_last_error()->line, 10);
    assert_int_equal(cairn_last_error()->position, 77);
    lua_settop(L, upi);

    make_event(&b, "Long", "{}", 0, NULL, NULL, 0);
    b.ev.schema = 1;
    CHECK_OK(cairn_lua_push_event(h, &b.ev));
    CHECK_RC(cairn_lua_upcast(h, upi, -1, b.ev.position, &changed), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("upcaster chain longer than 1000 steps");
    assert_string_equal(cairn_last_error()->script, "upcasters");
    assert_int_equal(cairn_last_error()->position, 77);
    lua_settop(L, 0);
}

/* What an upcaster returns is an event as cairn.Event would have it (event_in.c): a bad one
 * stops the chain with the upcaster's line and the event's position, on one event
 * (cairn_lua_upcast) as in a fold; an upcaster could set type = '' or tags = 'vip' before. */
static void upcast_checks_the_event_an_upcaster_returns(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    const char *up = "return {\n"
                     "  X = { [1] = function(e) e.type = ''; return e end },\n" /* line 2 */
                     "  Y = { [1] = function(e)\n"                              /* line 3 */
                     "    e.tags = 'vip'; return e end },\n"
                     "}";
    const char *src = "return { apply = { Y = function(s, e) s.y = true end } }";
    static const char *const types[] = {"Y", "Y"};
    fold_batch fb;
    ev_buf b;
    int changed = -1, apply, star;
    size_t done;

    CHECK_OK(cairn_lua_load(h, "upcasters", up, strlen(up)));
    int upi = lua_gettop(L);
    make_event(&b, "X", "{}", 0, NULL, NULL, 0);
    b.ev.schema = 1;
    CHECK_OK(cairn_lua_push_event(h, &b.ev));
    const void *before = lua_topointer(L, -1);
    CHECK_RC(cairn_lua_upcast(h, upi, -1, b.ev.position, &changed), CAIRN_ESCRIPT);
    assert_string_equal(cairn_errmsg(),
                        "upcasters:2: X[1] returned an invalid event: type must "
                        "be 1..255 bytes of UTF-8, got 0 (event at position 77)");
    assert_string_equal(cairn_last_error()->script, "upcasters");
    assert_int_equal(cairn_last_error()->line, 2);
    assert_int_equal(cairn_last_error()->position, 77);
    assert_int_equal(lua_gettop(L), upi + 1); /* the slot is left as it was */
    assert_ptr_equal(lua_topointer(L, -1), before);
    lua_settop(L, 0);

    int st = push_agg(h, "agg", src, &apply, &star);
    CHECK_OK(cairn_lua_load(h, "upcasters", up, strlen(up)));
    upi = lua_gettop(L);
    make_batch(&fb, 2, types, NULL);
    fb.evs[1].schema = 1;
    fb.evs[0].schema = 3; /* no upcaster for it: folded */
    CHECK_RC(cairn_lua_fold(h, "agg", st, apply, star, upi, fb.evs, fb.n, 0, &done), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("upcasters:3: Y[1] returned an invalid event: tags must be a list of strings, "
                   "not a string (event at position 102)");
    assert_string_equal(cairn_last_error()->script, "upcasters");
    assert_int_equal(cairn_last_error()->line, 3);
    assert_int_equal(cairn_last_error()->position, 102);
    assert_int_equal(done, 1);
    lua_settop(L, 0);
}

/* ---------------------------------------------------------------------------------
 * Script shapes
 * --------------------------------------------------------------------------------- */
static int shape_of(cairn_lua *h, const char *src, cairn_lua_kind kind) {
    lua_State *L = cairn_lua_state(h);
    CHECK_OK(cairn_lua_load(h, "s", src, strlen(src)));
    int rc = cairn_lua_check_shape(h, "s", kind);
    assert_int_equal(lua_gettop(L), 1);
    lua_pop(L, 1);
    return rc;
}

static void script_shapes_are_checked(void **state) {
    cairn_lua *h = *state;
    static const struct {
        cairn_lua_kind kind;
        const char *src, *want; /* want NULL: accepted */
    } cases[] = {
        {CAIRN_LUA_AGGREGATE,
         "return { init = function() return {} end, apply = { A = function() end },\n"
         "  decide = { D = function() end }, compensate = {}, snapshot_every = 100,\n"
         "  boundary = function() end }",
         NULL},
        {CAIRN_LUA_AGGREGATE, "return {}", NULL},
        {CAIRN_LUA_AGGREGATE, "return { apply = { Deposited = 5 } }",
         "s: apply.Deposited must be a function (got number)"},
        {CAIRN_LUA_AGGREGATE, "return { apply = { function() end } }",
         "apply[1]: keys must be event type names"},
        {CAIRN_LUA_AGGREGATE, "return { decide = 'x' }", "decide must be a table of functions"},
        {CAIRN_LUA_AGGREGATE, "return { snapshot_every = 0 }",
         "snapshot_every must be a positive integer"},
        {CAIRN_LUA_AGGREGATE, "return { snapshot_every = 1.5 }",
         "snapshot_every must be a positive integer"},
        {CAIRN_LUA_AGGREGATE, "return { init = {} }", "init must be a function (got table)"},
        {CAIRN_LUA_AGGREGATE, "return { aply = {} }", "unknown field aply"},
        {CAIRN_LUA_PROJECTION,
         "return { source = { categories = { 'account' }, tags = {} }, mode = 'inline',\n"
         "  partition = function(e) return e.stream end, init = function() return {} end,\n"
         "  apply = { ['*'] = function() end } }",
         NULL},
        {CAIRN_LUA_PROJECTION, "return { apply = {}, mode = 'sync' }",
         "mode must be \"async\" or \"inline\""},
        {CAIRN_LUA_PROJECTION, "return { init = function() end }", "needs an apply table"},
        {CAIRN_LUA_PROJECTION, "return { apply = {}, source = { category = { 'a' } } }",
         "source.category: unknown filter"},
        {CAIRN_LUA_PROJECTION, "return { apply = {}, source = { streams = { 1 } } }",
         "source.streams must be a list of strings"},
        {CAIRN_LUA_UPCASTERS, "return { Deposited = { [1] = function(e) return e end } }", NULL},
        {CAIRN_LUA_UPCASTERS, "return { Deposited = { [1] = 'x' } }",
         "upcasters.Deposited[1] must be a function (got string)"},
        {CAIRN_LUA_UPCASTERS, "return { Deposited = { [0] = function() end } }",
         "keys must be schema numbers"},
        {CAIRN_LUA_UPCASTERS, "return { Deposited = function() end }",
         "upcasters.Deposited must be a table"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = shape_of(h, cases[i].src, cases[i].kind);
        if (!cases[i].want) {
            if (rc) fail_msg("case %zu refused: %s", i, cairn_errmsg());
            continue;
        }
        if (rc != CAIRN_ESCRIPT) fail_msg("case %zu accepted", i);
        if (!strstr(cairn_errmsg(), cases[i].want))
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, cairn_errmsg(), cases[i].want);
        assert_string_equal(cairn_last_error()->script, "s");
    }
}

/* ---------------------------------------------------------------------------------
 * print and emit
 * --------------------------------------------------------------------------------- */
static void print_goes_to_the_log_callback(void **state) {
    cairn_lua *h = *state;
    RUN_OK(h,
           "print('a', 1, nil, true, 2.5, setmetatable({}, { __tostring = function() "
           "return 'T' end }))\nreturn 1");
    assert_int_equal(g_log_calls, 1);
    assert_string_equal(g_log, "a\t1\tnil\ttrue\t2.5\tT");
    assert_string_equal(g_log_script, "test");
    /* without a callback print discards */
    cairn_lua *quiet = NULL;
    CHECK_OK(cairn_lua_open(0, 0, NULL, NULL, &quiet));
    RUN_OK(quiet, "print('x') return 1");
    cairn_lua_close(quiet);
    assert_int_equal(g_log_calls, 1);
}

static int g_emitted;
static int emit_fn(lua_State *L) {
    int *counter = cairn_lua_emit_ud(L);
    (*counter)++;
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_pushinteger(L, *counter);
    return 1;
}

/* An emit hook converting a value that does not fit under the cap: the call is over. */
static int emit_big(lua_State *L) {
    cairn_lua *h = cairn_lua_emit_ud(L);
    static char big[3 * 1024 * 1024 + 3];
    big[0] = '"';
    memset(big + 1, 'y', sizeof big - 3);
    big[sizeof big - 2] = '"';
    if (cairn_lua_push_json(h, big, sizeof big - 1) != CAIRN_OK)
        return luaL_error(L, "emit: %s", cairn_errmsg());
    return 1;
}

static void memory_failure_inside_an_emit_hook_ends_the_call(void **state) {
    (void)state;
    cairn_lua *h = open_host(0, 2 * MiB);
    cairn_lua_set_emit(h, emit_big, h);
    CHECK_RC(run(h, "for _ = 1, 3 do pcall(emit, 's', 'T') end\nreturn 'survived'"), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("memory limit exceeded");
    cairn_lua_set_emit(h, NULL, NULL);
    RUN_OK(h, "return 1");
    cairn_lua_close(h);
}

static void emit_forwards_to_the_projection_hook(void **state) {
    cairn_lua *h = *state;
    CHECK_RC(run(h, "emit('s', 'T', {})"), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("only available in projection handlers");
    g_emitted = 0;
    cairn_lua_set_emit(h, emit_fn, &g_emitted);
    RUN_OK(h, "assert(emit('s', 'T', { a = 1 }) == 1)\nassert(emit('s', 'T') == 2)\nreturn 1");
    assert_int_equal(g_emitted, 2);
    CHECK_RC(run(h, "emit(nil, 'T')"), CAIRN_ESCRIPT);
    cairn_lua_set_emit(h, NULL, NULL);
    CHECK_RC(run(h, "emit('s', 'T', {})"), CAIRN_ESCRIPT);
}

static void call_argument_errors_leave_the_stack_alone(void **state) {
    cairn_lua *h = *state;
    lua_State *L = cairn_lua_state(h);
    CHECK_RC(cairn_lua_call(h, "x", 0, 0, 0), CAIRN_EINVAL);
    assert_int_equal(lua_gettop(L), 0);
    /* calling a non-function is a script error and consumes it */
    lua_pushinteger(L, 5);
    lua_pushinteger(L, 6);
    CHECK_RC(cairn_lua_call(h, "x", 1, 0, 0), CAIRN_ESCRIPT);
    ASSERT_MSG_HAS("attempt to call a number value");
    assert_int_equal(lua_gettop(L), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(sandbox_has_exactly_the_listed_globals),
        T(sandbox_lacks_dangerous_functions),
        T(load_refuses_binary_chunks),
        T(load_runs_in_the_scripts_own_environment),
        T(globals_and_metatables_do_not_leak_between_scripts),
        T(finalizers_are_refused),
        T(script_must_return_a_table),
        T(memory_bomb_is_a_script_error_and_the_state_recovers),
        T(memory_bomb_inside_pcall_is_not_swallowed),
        T(compiling_past_the_memory_cap_is_a_script_error),
        T(memory_cap_grants_exactly_the_limit_and_refuses_one_byte_more),
        T(bare_api_use_outside_calls_is_never_refused),
        T(open_fails_cleanly_below_the_sandboxs_own_size),
        T(instruction_limit_kills_an_endless_loop),
        cmocka_unit_test(time_limit_kills_loops_in_the_vm_and_in_c),
        T(instruction_kill_is_not_swallowed_by_pcall),
        T(pcall_and_xpcall_reraise_every_kill_to_their_caller),
        T(instruction_budget_resets_on_each_call),
        T(loops_in_c_library_functions_are_bounded_by_the_budget),
        T(patterns_agree_with_the_stock_library),
        T(deep_recursion_is_a_script_error),
        T(reject_is_command_rejected_with_reason_and_details),
        T(reject_inside_pcall_is_still_rejected),
        T(reject_details_live_per_thread),
        T(reject_with_bad_arguments_is_a_script_error),
        T(non_string_error_objects_get_a_clear_message),
        T(syntax_error_reports_the_line),
        T(runtime_error_reports_line_and_position),
        T(integers_and_floats_round_trip_exactly),
        T(strings_round_trip_and_must_be_utf8),
        T(nesting_limit_is_1000),
        T(unencodable_values_are_refused_with_their_place),
        T(tables_encode_as_arrays_or_sorted_objects),
        cmocka_unit_test(encoding_a_shared_subtree_is_bounded),
        T(conversion_agrees_with_jansson),
        T(host_conversion_under_the_memory_cap_fails_cleanly),
        T(event_table_has_the_spec_fields),
        T(fold_applies_reducers_in_order),
        T(fold_budget_is_per_reducer_and_uncatchable),
        T(fold_memory_cap_holds_and_the_state_recovers),
        T(fold_event_tables_are_fresh),
        T(fold_errors_report_line_and_position),
        T(fold_runs_the_upcaster_chain),
        T(upcast_runs_the_chain_on_one_event),
        T(upcast_checks_the_event_an_upcaster_returns),
        T(script_shapes_are_checked),
        T(print_goes_to_the_log_callback),
        T(emit_forwards_to_the_projection_hook),
        T(memory_failure_inside_an_emit_hook_ends_the_call),
        T(call_argument_errors_leave_the_stack_alone),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
