/*
 * budget.c -- the string, table and utf8 functions whose C loops grow with their operands,
 * wrapped so that they pay for that work first (lh_charge: the instruction budget and the
 * clock).  The count hook never fires inside a C function: string.rep('', math.maxinteger)
 * looped 2^63 times on zero-byte copies, table.insert(t, 1, x) on a big table and
 * table.sort of long strings ran for minutes, all inside the write transaction of execute.
 * Each wrapper charges, then calls the stock function (upvalue 1) with the same arguments,
 * so results and error messages stay Lua's.
 */
#include <string.h>

#include "host_impl.h"

/* [-n, +r, e] the stock function with the arguments as given */
static int call_stock(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* Elements i..j, 0 when empty. */
static uint64_t span(lua_Integer i, lua_Integer j) {
    return j >= i ? (uint64_t)((lua_Unsigned)j - (lua_Unsigned)i) + 1 : 0;
}

/* The byte count of the argument at idx when it is a string, else 0 (a number is short, and
 * converting it in place would change what the stock function sees). */
static size_t str_len(lua_State *L, int idx) {
    size_t n = 0;
    if (lua_type(L, idx) == LUA_TSTRING) (void)lua_tolstring(L, idx, &n);
    return n;
}

/* string.rep(s, n [, sep]): an empty result is returned at once (the stock loop would copy
 * zero bytes n times); otherwise the result's bytes are paid for. */
static int b_rep(lua_State *L) {
    size_t l, lsep;
    (void)luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    (void)luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || (l == 0 && lsep == 0)) {
        lua_pushliteral(L, "");
        return 1;
    }
    /* the stock function allocates the whole result before its loop, so the memory cap
     * bounds the loop; the copying is paid for after (a result too big for the cap stays
     * a memory error) */
    int r = call_stock(L);
    lh_charge(L, 1 + str_len(L, -1) / LH_PER_BYTE);
    return r;
}

/* one pass over the bytes of argument 1: upper, lower, reverse, utf8.len, utf8.offset */
static int b_scan(lua_State *L) {
    lh_charge(L, 1 + str_len(L, 1) / LH_PER_BYTE * 4);
    return call_stock(L);
}

/* string.byte(s [, i [, j]]) and utf8.codepoint: the scan plus one value per position */
static int b_slice(lua_State *L) {
    size_t l = str_len(L, 1);
    lua_Integer i = luaL_optinteger(L, 2, 1), j = luaL_optinteger(L, 3, i);
    uint64_t n = span(i < 0 ? (lua_Integer)l + i + 1 : i, j < 0 ? (lua_Integer)l + j + 1 : j);
    lh_charge(L, 1 + (n < l ? n : l) + l / LH_PER_BYTE);
    return call_stock(L);
}

/* table.insert(t, pos, v) and table.remove(t, pos): the stock loop shifts #t - pos + 1
 * elements (#t as luaL_len has it: a __len can claim any length) */
static int b_shift(lua_State *L) {
    int n = lua_gettop(L);
    int shifts = lua_toboolean(L, lua_upvalueindex(2)) ? n == 3 : n >= 2;
    if (shifts && !lua_isnoneornil(L, 1)) {
        lua_Integer e = luaL_len(L, 1);
        lua_Integer pos = lua_isinteger(L, 2) ? lua_tointeger(L, 2) : e;
        lh_charge(L, 1 + span(pos, e));
    }
    return call_stock(L);
}

/* table.concat(t [, sep [, i [, j]]]) and table.unpack(t [, i [, j]]): one step per element */
static int b_range(lua_State *L) {
    int first = lua_toboolean(L, lua_upvalueindex(2)) ? 3 : 2; /* concat: i is argument 3 */
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer i = luaL_optinteger(L, first, 1);
        lua_Integer j =
            lua_isnoneornil(L, first + 1) ? luaL_len(L, 1) : luaL_checkinteger(L, first + 1);
        lh_charge(L, 1 + span(i, j));
    }
    return call_stock(L);
}

/* the default order of table.sort, paying for each comparison by the bytes compared */
static int b_less(lua_State *L) {
    lh_charge(L, 1 + (str_len(L, 1) + str_len(L, 2)) / LH_PER_BYTE);
    lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
    return 1;
}

/* table.sort(t [, comp]): without comp, the comparisons go through b_less (a comparator
 * written in Lua is seen by the count hook) */
static int b_sort(lua_State *L) {
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_pushcfunction(L, b_less);
    }
    return call_stock(L);
}

/* [-0, +0, m] replaces lib[name] by the wrapper with the stock function as upvalue 1 and
 * flag as upvalue 2 */
static void wrap(lua_State *L, int lib, const char *name, lua_CFunction fn, int flag) {
    lua_getfield(L, lib, name);
    lua_pushboolean(L, flag);
    lua_pushcclosure(L, fn, 2);
    lua_setfield(L, lib, name);
}

void lh_open_budgeted(lua_State *L, int str, int tab, int utf8) {
    str = lua_absindex(L, str), tab = lua_absindex(L, tab), utf8 = lua_absindex(L, utf8);
    wrap(L, str, "rep", b_rep, 0);
    wrap(L, str, "upper", b_scan, 0);
    wrap(L, str, "lower", b_scan, 0);
    wrap(L, str, "reverse", b_scan, 0);
    wrap(L, str, "byte", b_slice, 0);
    wrap(L, utf8, "len", b_scan, 0);
    wrap(L, utf8, "offset", b_scan, 0);
    wrap(L, utf8, "codepoint", b_slice, 0);
    wrap(L, tab, "insert", b_shift, 1);
    wrap(L, tab, "remove", b_shift, 0);
    wrap(L, tab, "concat", b_range, 1);
    wrap(L, tab, "unpack", b_range, 0);
    wrap(L, tab, "sort", b_sort, 0);
}
