/*
 * bench_live.c -- live delivery latency across processes: a writer process appends one
 * event at a time; a subscriber process, asleep in cairn_sub_next, receives it.  Latency
 * is measured from the writer's append call returning (and, beside it, from the call
 * starting) to the subscriber holding the event, CLOCK_MONOTONIC (system-wide) on both
 * sides.  The writer waits for each event to be received, then 200 us more, so every
 * measurement starts from a sleeping subscriber.
 * Usage: bench_live DIR [events]   (default 10,000; durability "none": no fsync measured)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cairn.h"

typedef struct shared {
    volatile long received; /* events the subscriber holds */
    volatile int ready;     /* the subscriber is subscribed */
    int64_t t[];            /* per event i: t[3i] call start, t[3i+1] call return, t[3i+2]
                               received (ns) */
} shared;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, int rc) {
    fprintf(stderr, "%s failed: %d %s\n", what, rc, cairn_errmsg());
    exit(2);
}

static cairn_store *open_dir(const char *dir) {
    cairn_options o;
    cairn_store *s;
    int rc;
    cairn_options_init(&o);
    o.durability = CAIRN_DURABLE_NONE;
    if ((rc = cairn_open(dir, &o, &s))) die("open", rc);
    return s;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, int64_t *v, long n) {
    qsort(v, (size_t)n, sizeof *v, cmp64);
    printf("  %-34s p50 %7.1f us   p99 %7.1f us   max %8.1f us\n", what, v[n / 2] / 1e3,
           v[(long)(n * 0.99)] / 1e3, v[n - 1] / 1e3);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "bench-live";
    long n = argc > 2 ? atol(argv[2]) : 10000, i;
    size_t bytes = sizeof(shared) + (size_t)n * 3 * sizeof(int64_t);
    shared *sh = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cairn_store *s;
    pid_t pid;
    int rc, status;

    if (sh == MAP_FAILED || n < 1) return 2;
    s = open_dir(dir); /* creates the store (and its notify file) before the fork */
    cairn_close(s);
    pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) { /* writer */
        cairn_store *w = open_dir(dir);
        struct timespec gap = {0, 200 * 1000};
        char json[64];
        while (!sh->ready) nanosleep(&gap, NULL);
        for (i = 0; i < n; i++) {
            cairn_event_in e;
            memset(&e, 0, sizeof e);
            snprintf(json, sizeof json, "{\"i\":%ld}", i);
            e.type = (cairn_slice){"Tick", 4};
            e.data = (cairn_slice){json, strlen(json)};
            e.schema = 1;
            nanosleep(&gap, NULL);
            sh->t[3 * i] = now_ns();
            {
                cairn_append_result r;
                if ((rc = cairn_append(w, "live-1", 6, CAIRN_ANY, &e, 1, &r))) die("append", rc);
            }
            sh->t[3 * i + 1] = now_ns();
            while (sh->received <= i) __builtin_ia32_pause();
        }
        cairn_close(w);
        _exit(0);
    }
    { /* subscriber */
        cairn_sub *sub;
        cairn_event ev;
        struct rusage r0, r1;
        int64_t *lat_ret = malloc((size_t)n * sizeof(int64_t)),
                *lat_call = malloc((size_t)n * sizeof(int64_t));
        s = open_dir(dir);
        if ((rc = cairn_subscribe(s, 1, NULL, NULL, 0, &sub))) die("subscribe", rc);
        getrusage(RUSAGE_SELF, &r0);
        sh->ready = 1;
        for (i = 0; i < n; i++) {
            if ((rc = cairn_sub_next(sub, 10000, &ev)) != 1) die("sub_next", rc);
            sh->t[3 * i + 2] = now_ns();
            if (ev.position != (uint64_t)i + 1) die("order", -1);
            __atomic_store_n(&sh->received, i + 1, __ATOMIC_SEQ_CST);
        }
        getrusage(RUSAGE_SELF, &r1);
        waitpid(pid, &status, 0);
        for (i = 0; i < n; i++) {
            lat_call[i] = sh->t[3 * i + 2] - sh->t[3 * i];
            lat_ret[i] = sh->t[3 * i + 2] - sh->t[3 * i + 1];
        }
        printf(
            "live delivery, writer process -> subscriber process, %ld events (durability none)\n",
            n);
        /* negative: the subscriber had the event before the writer's call returned (the
         * wake is sent from inside the append, right after the commit) */
        report("append returned -> received", lat_ret, n);
        report("append called -> received", lat_call, n);
        printf("  subscriber CPU %.1f us/event\n",
               ((r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1e6 +
                (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) +
                (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e6 +
                (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec)) /
                   n);
        cairn_sub_close(sub);
        cairn_close(s);
        free(lat_ret);
        free(lat_call);
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
