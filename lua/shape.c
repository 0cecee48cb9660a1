/*
 * shape.c -- the script kinds: checks that the table a script returned has the fields its
 * kind needs (aggregate, projection, upcasters), so a bad script fails when it is defined,
 * not at its first event.  Reads with lua_next and raw access only: nothing allocates and no
 * script code runs.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "host_impl.h"

typedef struct shape {
    lua_State *L;
    const char *name;
    char msg[400];
} shape;

static int bad(shape *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(shape *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    return -1;
}

const char *lh_show_key(lua_State *L, int idx, char *buf, size_t cap, int quoted) {
    size_t len, n = 0;
    const char *k;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        if (lua_isinteger(L, idx))
            snprintf(buf, cap, "[%lld]", (long long)lua_tointeger(L, idx));
        else
            snprintf(buf, cap, "[%g]", lua_tonumber(L, idx));
        return buf;
    }
    if (lua_type(L, idx) != LUA_TSTRING) {
        snprintf(buf, cap, quoted ? "[a %s key]" : "[%s key]", luaL_typename(L, idx));
        return buf;
    }
    k = lua_tolstring(L, idx, &len);
    buf[n++] = quoted ? '\'' : '.';
    for (size_t i = 0; i < len && i < 60 && n + 4 + (size_t)quoted < cap; i++) {
        unsigned char c = (unsigned char)k[i];
        buf[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (len > 60 && n + 4 + (size_t)quoted < cap) buf[n++] = '.', buf[n++] = '.', buf[n++] = '.';
    if (quoted) buf[n++] = '\'';
    buf[n] = '\0';
    return buf;
}

static int key_is(lua_State *L, int idx, const char *name) {
    size_t len;
    const char *k = lua_tolstring(L, idx, &len);
    return len == strlen(name) && memcmp(k, name, len) == 0;
}

/* [-0, +0, -] The value at the top is a function (or nil when optional). */
static int want_function(shape *s, const char *field, int optional) {
    int t = lua_type(s->L, -1);
    if (t == LUA_TFUNCTION || (optional && t == LUA_TNIL)) return 0;
    return bad(s, "%s must be a function (got %s)", field, lua_typename(s->L, t));
}

/* [-0, +0, -] The value at the top is a table of event type -> function. */
static int want_handlers(shape *s, const char *field) {
    lua_State *L = s->L;
    char k[80];
    if (!lua_istable(L, -1))
        return bad(s, "%s must be a table of functions (got %s)", field, luaL_typename(L, -1));
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            bad(s, "%s%s: keys must be event type names", field,
                lh_show_key(L, -2, k, sizeof k, 0));
            lua_settop(L, t);
            return -1;
        }
        if (!lua_isfunction(L, -1)) {
            bad(s, "%s%s must be a function (got %s)", field, lh_show_key(L, -2, k, sizeof k, 0),
                luaL_typename(L, -1));
            lua_settop(L, t);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* [-0, +0, -] The value at the top is a sequence 1..n of strings. */
static int want_strings(shape *s, const char *field) {
    lua_State *L = s->L;
    if (!lua_istable(L, -1))
        return bad(s, "source.%s must be a list of strings (got %s)", field, luaL_typename(L, -1));
    int t = lua_gettop(L);
    lua_Integer n = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        n++;
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 || lua_type(L, -1) != LUA_TSTRING) {
            lua_settop(L, t);
            return bad(s, "source.%s must be a list of strings", field);
        }
        if (lua_tointeger(L, -2) > max) max = lua_tointeger(L, -2);
        lua_pop(L, 1);
    }
    if (max != n) return bad(s, "source.%s must be a list of strings (it has holes)", field);
    return 0;
}

static int check_source(shape *s) {
    lua_State *L = s->L;
    char k[80];
    if (!lua_istable(L, -1)) return bad(s, "source must be a table (got %s)", luaL_typename(L, -1));
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int rc;
        if (lua_type(L, -2) == LUA_TSTRING &&
            (key_is(L, -2, "categories") || key_is(L, -2, "streams") || key_is(L, -2, "types") ||
             key_is(L, -2, "tags")))
            rc = want_strings(s, lua_tostring(L, -2));
        else
            rc = bad(s, "source%s: unknown filter (use categories, streams, types or tags)",
                     lh_show_key(L, -2, k, sizeof k, 0));
        if (rc) {
            lua_settop(L, t);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* [-0, +0, -] (every checker: balanced on success; the caller resets the top) */
static int check_aggregate(shape *s, int t) {
    lua_State *L = s->L;
    char k[80];
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int rc = 0;
        if (lua_type(L, -2) != LUA_TSTRING) {
            rc = bad(s, "unexpected key %s in an aggregate script",
                     lh_show_key(L, -2, k, sizeof k, 0));
        } else if (key_is(L, -2, "init")) {
            rc = want_function(s, "init", 1);
        } else if (key_is(L, -2, "boundary")) {
            rc = want_function(s, "boundary", 1);
        } else if (key_is(L, -2, "apply") || key_is(L, -2, "decide") ||
                   key_is(L, -2, "compensate")) {
            rc = want_handlers(s, lua_tostring(L, -2));
        } else if (key_is(L, -2, "snapshot_every")) {
            int isnum = 0;
            lua_Integer n = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isnum) : 0;
            if (!isnum || n < 1) rc = bad(s, "snapshot_every must be a positive integer");
        } else {
            rc = bad(s,
                     "unknown field %s in an aggregate script (expected init, apply, decide, "
                     "compensate, snapshot_every, boundary)",
                     lh_show_key(L, -2, k, sizeof k, 0) + 1);
        }
        if (rc) return -1;
        lua_pop(L, 1);
    }
    return 0;
}

static int check_projection(shape *s, int t) {
    lua_State *L = s->L;
    char k[80];
    int has_apply = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int rc = 0;
        if (lua_type(L, -2) != LUA_TSTRING) {
            rc = bad(s, "unexpected key %s in a projection script",
                     lh_show_key(L, -2, k, sizeof k, 0));
        } else if (key_is(L, -2, "init")) {
            rc = want_function(s, "init", 1);
        } else if (key_is(L, -2, "partition")) {
            rc = want_function(s, "partition", 1);
        } else if (key_is(L, -2, "apply")) {
            has_apply = 1;
            rc = want_handlers(s, "apply");
        } else if (key_is(L, -2, "source")) {
            rc = check_source(s);
        } else if (key_is(L, -2, "mode")) {
            if (lua_type(L, -1) != LUA_TSTRING ||
                !(key_is(L, -1, "async") || key_is(L, -1, "inline")))
                rc = bad(s, "mode must be \"async\" or \"inline\"");
        } else {
            rc = bad(s,
                     "unknown field %s in a projection script (expected source, mode, "
                     "partition, init, apply)",
                     lh_show_key(L, -2, k, sizeof k, 0) + 1);
        }
        if (rc) return -1;
        lua_pop(L, 1);
    }
    if (!has_apply) return bad(s, "a projection needs an apply table");
    return 0;
}

static int check_upcasters(shape *s, int t) {
    lua_State *L = s->L;
    char k[80], k2[80];
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return bad(s, "upcasters%s: keys must be event type names",
                       lh_show_key(L, -2, k, sizeof k, 0));
        lh_show_key(L, -2, k, sizeof k, 0);
        if (!lua_istable(L, -1))
            return bad(s, "upcasters%s must be a table of [schema] = function (got %s)", k,
                       luaL_typename(L, -1));
        int u = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, u)) {
            if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1)
                return bad(s, "upcasters%s%s: keys must be schema numbers (integers >= 1)", k,
                           lh_show_key(L, -2, k2, sizeof k2, 0));
            if (!lua_isfunction(L, -1))
                return bad(s, "upcasters%s%s must be a function (got %s)", k,
                           lh_show_key(L, -2, k2, sizeof k2, 0), luaL_typename(L, -1));
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return 0;
}

int cairn_lua_check_shape(cairn_lua *h, const char *name, cairn_lua_kind kind) {
    lua_State *L = h->L;
    shape s = {L, name ? name : "?", ""};
    int top = lua_gettop(L), rc;
    if (top < 1 || !lua_istable(L, top)) {
        rc = bad(&s, "the script must return a table");
    } else if (!lua_checkstack(L, 12)) {
        rc = bad(&s, "out of Lua stack");
    } else {
        switch (kind) {
        case CAIRN_LUA_AGGREGATE: rc = check_aggregate(&s, top); break;
        case CAIRN_LUA_PROJECTION: rc = check_projection(&s, top); break;
        case CAIRN_LUA_UPCASTERS: rc = check_upcasters(&s, top); break;
        default: rc = bad(&s, "unknown script kind %d", (int)kind);
        }
    }
    lua_settop(L, top);
    if (rc == 0) return CAIRN_OK;
    lh_fail(CAIRN_ESCRIPT, "%s: %s", s.name, s.msg);
    cairn_error *e = cairn__err();
    size_t n = strlen(s.name);
    if (n >= sizeof e->script) n = sizeof e->script - 1;
    memcpy(e->script, s.name, n);
    e->script[n] = '\0';
    return CAIRN_ESCRIPT;
}
