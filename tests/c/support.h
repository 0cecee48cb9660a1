/*
 * support.h -- what every cmocka test of the core shares: a fresh store in a temp directory
 * per test, helpers to write and read back events, and fault injection into LMDB through
 * the linker's --wrap (see CMakeLists.txt for the wrapped functions).
 */
#ifndef CAIRN_TEST_SUPPORT_H
#define CAIRN_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <string.h>

#include <cmocka.h>

#include "cairn.h"

/* ---------------------------------------------------------------------------------
 * Assertions that print the core's message on failure.
 * --------------------------------------------------------------------------------- */
#define CHECK_RC(expr, want)                                                                      \
    do {                                                                                          \
        int rc_ = (expr);                                                                         \
        if (rc_ != (want))                                                                        \
            fail_msg("%s:%d: %s -> %d (%s), want %d; errmsg: %s", __FILE__, __LINE__, #expr, rc_, \
                     cairn_strerror(rc_), (int)(want), cairn_errmsg());                           \
    } while (0)
#define CHECK_OK(expr) CHECK_RC(expr, CAIRN_OK)

/* ---------------------------------------------------------------------------------
 * Fixtures.  fx_setup opens a store (durability NONE: tests need no fsync unless they
 * say so) in a fresh mkdtemp directory; fx_setup_dir only makes the directory.
 * fx_teardown closes the store when open and deletes the directory.
 * --------------------------------------------------------------------------------- */
typedef struct fixture {
    char dir[256];  /* the temp directory */
    char path[300]; /* dir + "/store": the store directory */
    cairn_store *store;
} fixture;

int fx_setup(void **state);
int fx_setup_dir(void **state);
int fx_teardown(void **state);

/* Opens `path` with the given durability / map size / read-only flag. */
int open_store(const char *path, cairn_durability dur, uint64_t map_size, int readonly,
               cairn_store **out);
void rm_rf(const char *path);

/* ---------------------------------------------------------------------------------
 * Writing.
 * --------------------------------------------------------------------------------- */
/* An event of `type` with JSON `data` (NULL: none), schema 1, no id (the store assigns). */
cairn_event_in ev_make(const char *type, const char *json);
/* The same with a fixed id derived from `n` (bytes 0..7 = n big-endian, rest constant). */
cairn_event_in ev_with_id(const char *type, const char *json, uint64_t n);

int append_one(cairn_store *s, const char *stream, int64_t expected, const char *type,
               const char *json, cairn_append_result *res);
/* Appends n events of `type` with data {"i":k} in one call. */
int append_n(cairn_store *s, const char *stream, int64_t expected, const char *type, size_t n,
             cairn_append_result *res);

uint64_t head_of(cairn_store *s);
int64_t version_of(cairn_store *s, const char *stream);

/* ---------------------------------------------------------------------------------
 * Reading: an event copied out of the borrowed buffers.
 * --------------------------------------------------------------------------------- */
typedef struct rec {
    uint64_t position;
    int64_t version;
    int64_t timestamp;
    uint32_t schema, flags;
    uint8_t id[16];
    char stream[CAIRN_MAX_STREAM + 1];
    char type[CAIRN_MAX_TYPE + 1];
    char data[256];
    size_t data_len;
    char metadata[256];
    size_t metadata_len;
    size_t ntags;
    char tags[4][64]; /* the first four tags */
} rec;

void rec_from(rec *r, const cairn_event *ev);
/* Drains and closes an iterator into a malloc'd array; returns the iterator's final rc. */
int collect(cairn_iter *it, rec **out, size_t *n);
int read_stream(cairn_store *s, const char *stream, int64_t start, int backwards, uint64_t limit,
                rec **out, size_t *n);
int read_all(cairn_store *s, uint64_t start, int backwards, uint64_t limit, const cairn_filter *f,
             rec **out, size_t *n);

/* ---------------------------------------------------------------------------------
 * Fault injection.  Each wrapped LMDB function counts its calls; an armed fault makes the
 * nth call from now (1-based) return `err` instead of doing its work.  A failing commit
 * aborts the txn first, as the real one does on error.  mdb_put and mdb_cursor_put share
 * one counter (FAULT_PUT): the core may use either to write.
 * --------------------------------------------------------------------------------- */
/* FAULT_GET (mdb_cursor_get) is there to count what a read touches (test_query.c). */
typedef enum fault_fn { FAULT_COMMIT, FAULT_PUT, FAULT_BEGIN, FAULT_GET, FAULT_NFN } fault_fn;

void fault_arm(fault_fn fn, long nth, int err);
void fault_disarm(void);
long fault_calls(fault_fn fn); /* calls since the last fault_disarm */
/* The next mdb_txn_commit (of any thread) waits, holding its transaction, until
 * commit_gate_release(); commit_gate_wait() returns once a commit is held there. */
void commit_gate_arm(void);
void commit_gate_wait(void);
void commit_gate_release(void);
/* Is thread `tid` of this process asleep ('S' in /proc: blocked on a lock or a condition)? */
int thread_asleep(pid_t tid);
int fault_fired(fault_fn fn); /* nonzero once the armed failure was returned */

#endif
