/*
 * error.c -- return codes, their texts, and the per-thread detail of the last failure.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "base.h"

static _Thread_local cairn_error g_error;
/* the details of an error restored from another thread (cairn__err_restore): freed by the
 * next restore, or at the thread's exit (the key's destructor) */
static _Thread_local char *g_details;
static pthread_key_t g_details_key;
static pthread_once_t g_details_once = PTHREAD_ONCE_INIT;
static void details_key_make(void) { (void)pthread_key_create(&g_details_key, free); }

cairn_error *cairn__err(void) { return &g_error; }

const cairn_error *cairn_last_error(void) { return &g_error; }

const char *cairn_errmsg(void) { return g_error.message; }

void cairn__clear_error(void) {
    g_error.code = 0;
    g_error.message[0] = '\0';
    g_error.request = 0;
    g_error.expected = g_error.actual = 0;
    g_error.position = 0;
    g_error.script[0] = g_error.reason[0] = '\0';
    g_error.line = 0;
    g_error.details = NULL;
    g_error.details_len = 0;
    g_error.npositions = 0;
}

void cairn__err_save(cairn__err_copy *c) {
    c->e = g_error;
    c->details = NULL;
    if (g_error.details && g_error.details_len && (c->details = malloc(g_error.details_len)))
        memcpy(c->details, g_error.details, g_error.details_len);
    if (!c->details) c->e.details = NULL, c->e.details_len = 0;
}

void cairn__err_restore(cairn__err_copy *c) {
    pthread_once(&g_details_once, details_key_make);
    free(g_details);
    g_details = c->details;
    (void)pthread_setspecific(g_details_key, g_details);
    c->details = NULL;
    g_error = c->e;
    g_error.details = g_details;
}

int cairn__fail(int code, const char *fmt, ...) {
    va_list ap;
    g_error.code = code;
    va_start(ap, fmt);
    vsnprintf(g_error.message, sizeof g_error.message, fmt, ap);
    va_end(ap);
    return code;
}

int cairn__corrupt(uint64_t pos, const char *what) {
    g_error.position = pos;
    return cairn__fail(CAIRN_ECORRUPT, "position %llu: %s", (unsigned long long)pos, what);
}

const char *cairn_strerror(int code) {
    switch (code) {
    case CAIRN_OK: return "success";
    case CAIRN_EINVAL: return "invalid argument";
    case CAIRN_ENOMEM: return "out of memory";
    case CAIRN_EIO: return "I/O error";
    case CAIRN_ECORRUPT: return "store is corrupt or not a cairn store";
    case CAIRN_ECLOSED: return "store is closed";
    case CAIRN_EREADONLY: return "store is read-only";
    case CAIRN_ENOENT: return "store does not exist";
    case CAIRN_EVERSION: return "wrong expected version";
    case CAIRN_EDUPLICATE: return "duplicate event id";
    case CAIRN_ENOTFOUND: return "not found";
    case CAIRN_ECONDITION: return "append condition failed";
    case CAIRN_EDELETED: return "stream deleted";
    case CAIRN_ESCRIPT: return "script error";
    case CAIRN_EREJECTED: return "command rejected";
    case CAIRN_ETOOBIG: return "event too large";
    case CAIRN_EBUSY: return "store busy";
    case CAIRN_EALREADY: return "event already compensated";
    case CAIRN_ENOTCOMPENSABLE: return "event type has no compensating action";
    case CAIRN_EINTERNAL: return "internal error";
    default: return "unknown error";
    }
}
