/*
 * bench_projection.c -- a projection rebuild against an aggregate load with the same reducer.
 *
 * N events (default 1,000,000) in one stream of category "account".  A projection over
 * that category with the reducers of bench_lua's aggregate is reset and rebuilt with
 * cairn_run_projections (batches of 1,000 events per commit, durability none); the same
 * reducers fold the same stream through cairn_load.  Prints events/s of both and the peak
 * RSS after the rebuilds (before any load).
 * Usage: bench_projection DIR [events]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "bench_util.h"
#include "cairn.h"

#define ROUNDS 3

#define REDUCERS                                                                                   \
    "  init = function() return { balance = 0, count = 0 } end,\n"                                 \
    "  apply = {\n"                                                                                \
    "    Deposited = function(s, e) s.balance = s.balance + e.data.amount; s.count = s.count + 1 end,\n" \
    "    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount; s.count = s.count + 1 end,\n" \
    "  },\n"

static const char AGG[] = "return {\n" REDUCERS "}\n";
static const char PROJ[] = "return {\n  source = { categories = { 'account' } },\n" REDUCERS "}\n";

static void fill(cairn_store *s, const char *stream, long n) {
    static cairn_event_in ev[1000];
    static char data[1000][48];
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

int main(int argc, char **argv) {
    char path[4096], cmd[4200];
    long n = argc > 2 && atol(argv[2]) > 0 ? atol(argv[2]) : 1000000;
    double proj[ROUNDS], load[ROUNDS];
    long rss;
    cairn_options o;
    cairn_store *s;
    int rc;

    if (argc < 2) {
        fprintf(stderr, "usage: bench_projection DIR [events]\n");
        return 2;
    }
    if (mkdir(argv[1], 0755) != 0 && errno != EEXIST) die("mkdir", errno);
    snprintf(path, sizeof path, "%s/projection", argv[1]);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) return 2;
    cairn_options_init(&o);
    o.durability = CAIRN_DURABLE_NONE;
    if ((rc = cairn_open(path, &o, &s))) die("open", rc);
    if ((rc = cairn_define_script(s, CAIRN_SCRIPT_AGGREGATE, "account", 7, AGG, strlen(AGG)))) die("define", rc);
    if ((rc = cairn_define_script(s, CAIRN_SCRIPT_PROJECTION, "balances", 8, PROJ, strlen(PROJ))))
        die("define", rc);
    fill(s, "account-big", n);
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t done;
        double t;
        if ((rc = cairn_projection_reset(s, "balances", 8))) die("reset", rc);
        t = now();
        if ((rc = cairn_run_projections(s, "balances", 8, &done))) die("run", rc);
        proj[i] = (double)done / (now() - t);
        if (done != (uint64_t)n) die("processed", 0);
    }
    rss = rss_mb();
    for (int i = 0; i < ROUNDS; i++) {
        cairn_state st;
        double t = now();
        if ((rc = cairn_load(s, "account-big", 11, NULL, 0, -1, CAIRN_AT_NONE, &st))) die("load", rc);
        load[i] = (double)st.applied / (now() - t);
        free(st.json);
    }
    qsort(proj, ROUNDS, sizeof *proj, cmp_d);
    qsort(load, ROUNDS, sizeof *load, cmp_d);
    printf("Lua projections, %ld events, median of %d rounds\n\n", n, ROUNDS);
    printf("| benchmark | cairn | baseline | ratio |\n|---|---|---|---|\n");
    printf("| projection rebuild (reset + run_projections, 1,000 events per commit, durability none) "
           "| %.0f ev/s | %.0f ev/s (aggregate load, same reducers, same events) | **%.2f** |\n",
           proj[ROUNDS / 2], load[ROUNDS / 2], proj[ROUNDS / 2] / load[ROUNDS / 2]);
    printf("\npeak RSS after the rebuilds %ld MiB (the store is mapped: its pages read count)\n", rss);
    cairn_close(s);
    if (system(cmd) != 0) return 2;
    return 0;
}
