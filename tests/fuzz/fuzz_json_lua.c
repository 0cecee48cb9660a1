/*
 * fuzz_json_lua.c -- libFuzzer target: JSON text -> Lua -> JSON.  Any input either fails
 * cleanly or decodes; what decodes encodes, and encoding is a fixed point after one round.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"

static cairn_lua *g_h;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cairn_buf a = {0}, b = {0};
    lua_State *L;
    if (!g_h && cairn_lua_open(1000000, 16 << 20, NULL, NULL, &g_h)) abort();
    L = cairn_lua_state(g_h);
    if (cairn_lua_push_json(g_h, data, size) == CAIRN_OK) {
        int rc = cairn_lua_to_json(g_h, -1, &a);
        lua_pop(L, 1);
        if (rc == CAIRN_OK) {
            if (cairn_lua_push_json(g_h, a.p, a.len) != CAIRN_OK)
                abort(); /* our output must parse */
            if (cairn_lua_to_json(g_h, -1, &b) != CAIRN_OK) abort();
            lua_pop(L, 1);
            if (a.len != b.len || memcmp(a.p, b.p, a.len)) abort(); /* and be a fixed point */
        }
    }
    lua_settop(L, 0);
    cairn_buf_free(&a);
    cairn_buf_free(&b);
    return 0;
}
