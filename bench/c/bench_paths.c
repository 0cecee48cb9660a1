/*
 * bench_paths.c -- the append and read paths one at a time, for instruction counts under
 * callgrind (valgrind --tool=callgrind build/bench_paths DIR MODE): the work is fixed, so two
 * builds of the library compare exactly whatever the machine's load.  bench/RESULTS.md,
 * "Issue 13: the cost of the lifecycle rules".
 *
 *   write   20,000 single-event appends (durability none) over 100 streams, 100-byte data
 *   scan    read_all of every event
 *   filter  read_all of one category (1% of the events), forwards
 *   stream  read_stream of each of the 100 streams
 *   get     cairn_get of every position
 *   limit   sets max_count 1,000,000 on one stream (nothing is removed): from then on the
 *           reads over the log consult the lifecycle entries (build with -DBENCH_NO_LIFECYCLE
 *           against a library older than issue 13)
 * Each read mode expects the store `write` made in DIR.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"

#define EVENTS 20000
#define STREAMS 100

static void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, cairn_errmsg());
    exit(1);
}

static long drain(cairn_iter *it) {
    cairn_event ev;
    long n = 0;
    int rc;
    while ((rc = cairn_iter_next(it, &ev)) == 1) n++;
    if (rc < 0) die("next");
    cairn_iter_close(it);
    return n;
}

int main(int argc, char **argv) {
    cairn_options o;
    cairn_store *s;
    const char *mode;
    long n = 0;
    char name[32];

    if (argc < 3) {
        fprintf(stderr, "usage: bench_paths DIR write|scan|filter|stream|get\n");
        return 2;
    }
    mode = argv[2];
    cairn_options_init(&o);
    o.durability = CAIRN_DURABLE_NONE;
    if (cairn_open(argv[1], &o, &s)) die("open");
    if (!strcmp(mode, "write")) {
        static char data[101];
        memset(data, 'p', 100);
        data[0] = data[99] = '"';
        for (long i = 0; i < EVENTS; i++) {
            cairn_event_in ev;
            cairn_append_result r;
            memset(&ev, 0, sizeof ev);
            ev.type.ptr = "Tested", ev.type.len = 6;
            ev.data.ptr = data, ev.data.len = 100;
            ev.schema = 1;
            snprintf(name, sizeof name, "%s-%ld", i % STREAMS ? "s" : "rare", i % STREAMS);
            if (cairn_append(s, name, strlen(name), CAIRN_ANY, &ev, 1, &r)) die("append");
            n++;
        }
    } else if (!strcmp(mode, "scan") || !strcmp(mode, "filter")) {
        cairn_iter *it;
        cairn_slice cat = {"rare", 4};
        cairn_filter f;
        memset(&f, 0, sizeof f);
        f.categories = &cat, f.ncategories = 1;
        if (cairn_iter_all(s, 0, 0, 0, strcmp(mode, "scan") ? &f : NULL, &it)) die("iter");
        n = drain(it);
    } else if (!strcmp(mode, "stream")) {
        for (int k = 0; k < STREAMS; k++) {
            cairn_iter *it;
            snprintf(name, sizeof name, "%s-%d", k ? "s" : "rare", k);
            if (cairn_iter_stream(s, name, strlen(name), -1, 0, 0, &it)) die("iter");
            n += drain(it);
        }
    } else if (!strcmp(mode, "get")) {
        cairn_event ev;
        for (uint64_t p = 1; p <= EVENTS; p++) {
            if (cairn_get(s, p, &ev)) die("get");
            n++;
        }
#ifndef BENCH_NO_LIFECYCLE
    } else if (!strcmp(mode, "limit")) {
        cairn_stream_meta m = {1000000, CAIRN_NO_LIMIT, CAIRN_NO_LIMIT};
        if (cairn_set_stream_metadata(s, "s-1", 3, &m, NULL)) die("limit");
#endif
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("%s: %ld events\n", mode, n);
    cairn_close(s);
    return 0;
}
