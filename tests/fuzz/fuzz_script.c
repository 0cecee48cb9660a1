/*
 * fuzz_script.c -- libFuzzer target: arbitrary text loaded as a script in the sandbox (with
 * small limits), its shape checked as an aggregate, and its apply handlers run against an
 * event.  Every outcome must be CAIRN_OK or a clean script error; the state stays usable.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"

static cairn_lua *g_h;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char json[] = "{\"amount\":42,\"note\":\"hello\"}";
    cairn_event ev;
    lua_State *L;
    if (!g_h && cairn_lua_open(200000, 8 << 20, NULL, NULL, &g_h)) abort();
    L = cairn_lua_state(g_h);
    if (cairn_lua_load(g_h, "fuzz", (const char *)data, size) == CAIRN_OK) {
        int script = lua_gettop(L);
        if (cairn_lua_check_shape(g_h, "fuzz", CAIRN_LUA_AGGREGATE) == CAIRN_OK) {
            memset(&ev, 0, sizeof ev);
            ev.type.ptr = "Deposited", ev.type.len = 9;
            ev.stream.ptr = "account-1", ev.stream.len = 9;
            ev.data.ptr = json, ev.data.len = sizeof json - 1;
            ev.position = 1, ev.schema = 1;
            lua_pushliteral(L, "apply");
            if (lua_rawget(L, script) == LUA_TTABLE) {
                int apply = lua_gettop(L);
                lua_newtable(L);
                int state = lua_gettop(L);
                size_t done;
                cairn_lua_fold(g_h, "fuzz", state, apply, 0, 0, &ev, 1, 0, &done);
            }
        }
    }
    lua_settop(L, 0);
    if (cairn_lua_memory(g_h) > (6u << 20)) { /* keep the process small across runs */
        cairn_lua_close(g_h);
        g_h = NULL;
    }
    return 0;
}
