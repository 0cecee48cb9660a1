/*
 * bench_lua.c -- Lua aggregates against their baselines, in one run.
 *
 *  1. Aggregate load: events/s through a Lua reducer over one 100,000-event stream (no
 *     snapshots), against the same reducer in the same Lua over the same events already
 *     decoded into tables.
 *  2. execute: durable commits/s of a command against an aggregate with a snapshot, against
 *     the store's own single-event durable append rate.
 * Usage: bench_lua DIR [events]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include "../../lua/host.h"
#include "bench_util.h"
#include "cairn.h"

#define ROUNDS 3

static const char BANK[] =
    "return {\n"
    "  init = function() return { balance = 0, count = 0 } end,\n"
    "  apply = {\n"
    "    Deposited = function(s, e) s.balance = s.balance + e.data.amount; s.count = s.count + 1 end,\n"
    "    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount; s.count = s.count + 1 end,\n"
    "  },\n"
    "  decide = {\n"
    "    Deposit = function(s, c) return { { type = 'Deposited', data = { amount = c.data.amount } } } end,\n"
    "  },\n"
    "  %s\n"
    "}\n";

static cairn_store *open_at(const char *path, cairn_durability d) {
    cairn_options o;
    cairn_store *s;
    int rc;
    cairn_options_init(&o);
    o.durability = d;
    if ((rc = cairn_open(path, &o, &s))) die("open", rc);
    return s;
}

static void define(cairn_store *s, const char *extra) {
    char src[2048];
    int rc;
    snprintf(src, sizeof src, BANK, extra);
    if ((rc = cairn_define_script(s, CAIRN_SCRIPT_AGGREGATE, "account", 7, src, strlen(src)))) die("define", rc);
}

static void fill(cairn_store *s, const char *stream, long n) {
    static cairn_event_in ev[1000];
    char data[1000][48];
    cairn_append_result r;
    long done = 0;
    memset(ev, 0, sizeof ev);
    while (done < n) {
        int k = n - done > 1000 ? 1000 : (int)(n - done);
        for (int i = 0; i < k; i++) {
            long x = done + i;
            ev[i].type.ptr = x % 3 == 2 ? "Withdrawn" : "Deposited";
            ev[i].type.len = 9;
            ev[i].data.len = (size_t)snprintf(data[i], sizeof data[i], "{\"amount\":%ld,\"note\":\"hello\"}", x % 100);
            ev[i].data.ptr = data[i];
            ev[i].schema = 1;
        }
        int rc = cairn_append(s, stream, strlen(stream), CAIRN_ANY, ev, (size_t)k, &r);
        if (rc) die("append", rc);
        done += k;
    }
}

/* The baseline: the same reducers, the same events as tables built beforehand, a plain
 * Lua loop calling the handler per event.  `hooked`: run it the way cairn runs every
 * script, under an instruction limit (whose count hook slows the Lua VM down by itself);
 * otherwise with no limit at all. */
static double baseline_rate(cairn_store *s, const char *stream, long n, int hooked) {
    cairn_lua *h;
    lua_State *L;
    cairn_iter *it;
    cairn_event ev;
    char src[2048];
    double t;
    int rc, i = 0;
    static const char driver[] =
        "return { run = function(agg, evs)\n"
        "  local s = agg.init(); local apply = agg.apply\n"
        "  for i = 1, #evs do local e = evs[i]; local h = apply[e.type]; if h then local r = h(s, e); if r then s = r end end end\n"
        "  return s.count end }";
    if ((rc = cairn_lua_open(hooked ? 1000000000ull : 0, 0, NULL, NULL, &h))) die("lua", rc);
    L = cairn_lua_state(h);
    snprintf(src, sizeof src, BANK, "");
    if ((rc = cairn_lua_load(h, "account", src, strlen(src)))) die("load", rc);
    if ((rc = cairn_lua_load(h, "driver", driver, strlen(driver)))) die("load", rc);
    lua_createtable(L, (int)n, 0);
    if ((rc = cairn_iter_stream(s, stream, strlen(stream), -1, 0, 0, &it))) die("iter", rc);
    while ((rc = cairn_iter_next(it, &ev)) == 1) {
        if ((rc = cairn_lua_push_event(h, &ev))) die("push", rc);
        lua_rawseti(L, -2, ++i);
    }
    cairn_iter_close(it);
    lua_pushliteral(L, "run");
    lua_rawget(L, -3);
    lua_insert(L, -2);       /* run, events */
    lua_pushvalue(L, -4);    /* agg */
    lua_insert(L, -2);       /* run, agg, events */
    t = now();
    if ((rc = cairn_lua_call(h, "driver", 2, 1, 0))) die("baseline", rc);
    t = now() - t;
    if (lua_tointeger(L, -1) != n) die("baseline count", 0);
    cairn_lua_close(h);
    return n / t;
}

static double load_rate(cairn_store *s, const char *stream, long n) {
    cairn_state st;
    double t = now();
    int rc = cairn_load(s, stream, strlen(stream), NULL, 0, -1, CAIRN_AT_NONE, &st);
    t = now() - t;
    if (rc) die("load", rc);
    if (st.applied != (uint64_t)n) die("applied", 0);
    free(st.json);
    return n / t;
}

static double durable_appends(cairn_store *s, const char *stream, long n) {
    cairn_event_in ev;
    cairn_append_result r;
    double t;
    memset(&ev, 0, sizeof ev);
    ev.type.ptr = "Deposited", ev.type.len = 9;
    ev.data.ptr = "{\"amount\":1}", ev.data.len = 12;
    ev.schema = 1;
    t = now();
    for (long i = 0; i < n; i++) {
        int rc = cairn_append(s, stream, strlen(stream), CAIRN_ANY, &ev, 1, &r);
        if (rc) die("append", rc);
    }
    return n / (now() - t);
}

static double durable_executes(cairn_store *s, const char *stream, long n) {
    cairn_slice d = {"{\"amount\":1}", 12}, m = {NULL, 0};
    cairn_append_result r;
    double t = now();
    for (long i = 0; i < n; i++) {
        int rc = cairn_execute(s, stream, strlen(stream), NULL, 0, "Deposit", 7, d, m, CAIRN_ANY,
                               NULL, &r);
        if (rc) die("execute", rc);
    }
    return n / (now() - t);
}

int main(int argc, char **argv) {
    char path[4096], cmd[4200];
    long n = argc > 2 && atol(argv[2]) > 0 ? atol(argv[2]) : 100000;
    double base[ROUNDS], bare[ROUNDS], load[ROUNDS], app[7], exe[7];
    cairn_store *s;

    if (argc < 2) {
        fprintf(stderr, "usage: bench_lua DIR [events]\n");
        return 2;
    }
    if (mkdir(argv[1], 0755) != 0 && errno != EEXIST) die("mkdir", errno);
    snprintf(path, sizeof path, "%s/lua", argv[1]);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) return 2;

    s = open_at(path, CAIRN_DURABLE_NONE);
    define(s, "");
    fill(s, "account-big", n);
    for (int i = 0; i < ROUNDS; i++) {
        base[i] = baseline_rate(s, "account-big", n, 1);
        bare[i] = baseline_rate(s, "account-big", n, 0);
        load[i] = load_rate(s, "account-big", n);
    }
    qsort(base, ROUNDS, sizeof *base, cmp_d);
    qsort(bare, ROUNDS, sizeof *bare, cmp_d);
    qsort(load, ROUNDS, sizeof *load, cmp_d);
    printf("Lua aggregates, %ld-event stream, median of %d rounds (7 for durable)\n\n", n, ROUNDS);
    printf("| benchmark | cairn | baseline | ratio | target |\n|---|---|---|---|---|\n");
    printf("| aggregate load, no snapshots | %.0f ev/s | %.0f ev/s (same reducer over pre-decoded tables, under the same instruction limit as every cairn script) | **%.2f** | >= 0.50 |\n",
           load[ROUNDS / 2], base[ROUNDS / 2], load[ROUNDS / 2] / base[ROUNDS / 2]);
    printf("| (the same, baseline with no instruction limit) | %.0f ev/s | %.0f ev/s | %.2f | |\n",
           load[ROUNDS / 2], bare[ROUNDS / 2], load[ROUNDS / 2] / bare[ROUNDS / 2]);
    cairn_close(s);

    /* durable: execute against a snapshotted aggregate vs plain single-event appends */
    s = open_at(path, CAIRN_DURABLE_FULL);
    define(s, "snapshot_every = 100,");
    fill(s, "account-exec", 1000);
    for (int i = 0; i < 7; i++) {
        app[i] = durable_appends(s, "account-plain", 150);
        exe[i] = durable_executes(s, "account-exec", 150);
    }
    qsort(app, 7, sizeof *app, cmp_d);
    qsort(exe, 7, sizeof *exe, cmp_d);
    printf("| execute, durability full, snapshot_every=100 | %.0f commits/s | %.0f commits/s (single-event durable append) | **%.2f** | >= 0.80 |\n",
           exe[3], app[3], exe[3] / app[3]);
    printf("\npeak RSS %ld MiB\n", rss_mb());
    cairn_close(s);
    if (system(cmd) != 0) return 2;
    return 0;
}
