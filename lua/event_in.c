/*
 * event_in.c -- what a script hands the store as events: the list a decide or compensate
 * handler returns.  Read with lua_next and raw access only: nothing allocates and no script
 * code runs, so the checks are safe outside a protected call.
 */
#include <stdio.h>
#include <string.h>

#include "host_impl.h"

/* [-0, +0, -] A key for a message: a string as 'text' (printable ASCII kept, the rest as
 * '?', cut at 60 bytes), a number as [n], anything else as its type. */
static const char *show_key(lua_State *L, int idx, char *buf, size_t cap) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        if (lua_isinteger(L, idx))
            snprintf(buf, cap, "[%lld]", (long long)lua_tointeger(L, idx));
        else
            snprintf(buf, cap, "[%g]", lua_tonumber(L, idx));
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len, n = 0;
        const char *k = lua_tolstring(L, idx, &len);
        buf[n++] = '\'';
        for (size_t i = 0; i < len && i < 60 && n + 5 < cap; i++) {
            unsigned char c = (unsigned char)k[i];
            buf[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
        }
        if (len > 60 && n + 5 < cap) buf[n++] = '.', buf[n++] = '.', buf[n++] = '.';
        buf[n++] = '\'';
        buf[n] = '\0';
    } else {
        snprintf(buf, cap, "[a %s key]", luaL_typename(L, idx));
    }
    return buf;
}

/* [-0, +0, -] */
int cairn_lua_check_list(cairn_lua *h, int idx, size_t *n) {
    lua_State *L = h->L;
    lua_Integer max = 0;
    size_t count = 0;
    int strkey = 0, top = lua_gettop(L);
    char k[80];

    *n = 0;
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) return lh_fail(CAIRN_EINVAL, "returned a %s", luaL_typename(L, idx));
    if (!lua_checkstack(L, 3)) return lh_fail(CAIRN_ENOMEM, "out of Lua stack");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            if (lua_tointeger(L, -1) > max) max = lua_tointeger(L, -1);
            count++;
            continue;
        }
        if (lua_type(L, -1) == LUA_TSTRING) strkey = 1;
        show_key(L, -1, k, sizeof k);
        lua_settop(L, top);
        if (strkey && lua_rawlen(L, idx) == 0)
            return lh_fail(CAIRN_EINVAL,
                           "returned one event table, not a list of them: "
                           "return { event } for one event");
        return lh_fail(CAIRN_EINVAL, "returned a table with the key %s besides its items 1..n", k);
    }
    if ((lua_Unsigned)max != count) {
        lua_Integer i = 1;
        while (lua_rawgeti(L, idx, i) != LUA_TNIL) lua_pop(L, 1), i++;
        lua_settop(L, top);
        return lh_fail(CAIRN_EINVAL, "returned a list with a hole: [%lld] is nil but [%lld] is not",
                       (long long)i, (long long)max);
    }
    *n = count;
    return CAIRN_OK;
}
