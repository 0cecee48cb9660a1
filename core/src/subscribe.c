/*
 * subscribe.c -- live subscriptions: catch up through a filtered cairn_iter_all, then
 * sleep on the notify counter (notify.c) until a commit, and continue where the catch-up
 * stopped.  Named subscriptions keep a checkpoint in the `subs` database.
 */
#include <stdlib.h>
#include <time.h>

#include "storage.h"

struct cairn_sub {
    cairn_env *env;              /* retained */
    cairn_durability durability; /* the opening handle's, for checkpoints */
    cairn_script_limits lim;     /* the opening handle's, for the catch-up iterators */
    cairn_filter f;              /* deep copy (one block: slices, then bytes) */
    void *fmem;
    char *name; /* NULL: not durable */
    size_t name_len;
    uint64_t next;    /* the next position not yet examined */
    uint64_t pending; /* position returned by the last call, not yet checkpointed */
    cairn_iter *it;   /* catch-up iterator, NULL between rounds */
    uint64_t it_head; /* head read before `it` was opened: it examines at least that far */
};

static int checkpoint_read(cairn_env *e, const char *name, size_t len, uint64_t *pos) {
    MDB_txn *txn;
    MDB_val k = {len, (void *)name}, v;
    int rc;
    *pos = 0;
    if (!e->subs) return CAIRN_OK; /* read-only store from before subscriptions */
    if ((rc = cairn__read_begin(e, &txn))) return rc;
    rc = mdb_get(txn, e->subs, &k, &v);
    if (rc == 0 && v.mv_size == 8) *pos = cairn__get_be64(v.mv_data);
    cairn__read_end(e, txn);
    if (rc == 0 && v.mv_size != 8) return cairn__fail(CAIRN_ECORRUPT, "subs: bad checkpoint");
    return rc && rc != MDB_NOTFOUND ? cairn__mdb_fail(rc, "read checkpoint") : CAIRN_OK;
}

typedef struct checkpoint_args {
    cairn_sub *sub;
    uint64_t pos;
} checkpoint_args;

static int checkpoint_body(cairn_wtxn *w, void *ctx) {
    checkpoint_args *a = ctx;
    uint8_t b[8];
    MDB_val k = {a->sub->name_len, a->sub->name}, v = {8, b};
    int rc;
    cairn__put_be64(b, a->pos);
    rc = mdb_put(w->txn, a->sub->env->subs, &k, &v, 0);
    return rc == MDB_MAP_FULL ? CAIRN__EMAPFULL
        : rc                  ? cairn__mdb_fail(rc, "store checkpoint")
                              : CAIRN_OK;
}

/* Stores the checkpoint in its own write txn, with the handle's durability.  Not a commit
 * of events: subscribers are not woken for it. */
static int checkpoint_write(cairn_sub *sub, uint64_t pos) {
    checkpoint_args a = {sub, pos};
    if (!sub->env->subs)
        return cairn__fail(CAIRN_EREADONLY, "no subs database (store opened read-only)");
    return cairn__write_txn(sub->env, sub->durability, checkpoint_body, &a);
}

int cairn_checkpoint(cairn_store *s, const char *name, size_t name_len, uint64_t *pos) {
    int rc;
    cairn__clear_error();
    if (!pos) return cairn__fail(CAIRN_EINVAL, "pos: NULL");
    *pos = 0;
    if ((rc = cairn__store_check(s))) return rc;
    if ((rc = cairn__check_name(name, name_len))) return rc;
    return checkpoint_read(s->env, name, name_len, pos);
}

int cairn_subscribe(cairn_store *s, uint64_t start, const cairn_filter *filter, const char *name,
                    size_t name_len, cairn_sub **out) {
    cairn_sub *sub;
    uint64_t cp = 0;
    int rc;

    cairn__clear_error();
    if (!out) return cairn__fail(CAIRN_EINVAL, "out: NULL");
    *out = NULL;
    if ((rc = cairn__store_check(s))) return rc;
    if (name) {
        if ((rc = cairn__check_name(name, name_len))) return rc;
        if (s->readonly)
            return cairn__fail(CAIRN_EREADONLY, "a named subscription needs a writable store");
        if ((rc = checkpoint_read(s->env, name, name_len, &cp))) return rc;
    }
    if (!(sub = calloc(1, sizeof *sub))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    if ((rc = cairn__filter_dup(filter, &sub->f, &sub->fmem))) goto fail;
    if (name) {
        if (!(sub->name = malloc(name_len))) {
            rc = cairn__fail(CAIRN_ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(sub->name, name, name_len);
        sub->name_len = name_len;
    }
    sub->env = s->env, sub->durability = s->durability, sub->lim = s->lim;
    sub->next = cp ? cp + 1 : start ? start : 1;
    cairn__env_retain(s->env);
    *out = sub;
    return CAIRN_OK;
fail:
    free(sub->fmem);
    free(sub->name);
    free(sub);
    return rc;
}

/* Events that the next calls return without touching LMDB or running a script: none when
 * the page's events are transformed on read (cairn_iter_upcasting: as of the refill that
 * read them) or a checkpoint is due. */
size_t cairn_sub_buffered(const cairn_sub *sub) {
    if (!sub || !sub->it || cairn_iter_upcasting(sub->it) || (sub->pending && sub->name)) return 0;
    return cairn_iter_buffered(sub->it);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Catch-up and waiting alternate: when the iterator is exhausted every position up to the
 * head read before opening it has been examined.  The notify counter is read before the
 * head, so a commit after the head was read changes the counter and the wait returns at
 * once. */
int cairn_sub_next(cairn_sub *sub, int timeout_ms, cairn_event *ev) {
    cairn_env *e;
    int64_t deadline;
    int rc;

    cairn__clear_error();
    if (!sub || !ev) return cairn__fail(CAIRN_EINVAL, "sub_next: NULL argument");
    e = sub->env;
    if ((rc = cairn__env_check(e))) return rc;
    if (timeout_ms < -1) return cairn__fail(CAIRN_EINVAL, "timeout_ms: must be >= -1");
    if (sub->pending && sub->name) {
        if ((rc = checkpoint_write(sub, sub->pending))) return rc;
    }
    sub->pending = 0;
    deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    for (;;) {
        uint32_t seen;
        uint64_t head;
        MDB_txn *txn;

        if (sub->it) {
            rc = cairn_iter_next(sub->it, ev);
            if (rc > 0) {
                sub->next = ev->position + 1;
                sub->pending = ev->position;
                return 1;
            }
            cairn_iter_close(sub->it);
            sub->it = NULL;
            if (rc < 0) return rc;
            if (sub->it_head + 1 > sub->next) sub->next = sub->it_head + 1;
        }
        seen = cairn__notify_seen(e);
        if ((rc = cairn__read_begin(e, &txn))) return rc;
        rc = cairn__head(e, txn, &head);
        cairn__read_end(e, txn);
        if (rc) return rc;
        if (head >= sub->next) {
            sub->it_head = head;
            if ((rc = cairn__iter_all(e, &sub->lim, sub->next, 0, 0, &sub->f, &sub->it))) return rc;
            continue;
        }
        if (timeout_ms >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0) return 0;
            cairn__notify_wait(e, seen, left > 1000 ? 1000 : (int)left);
        } else {
            cairn__notify_wait(e, seen, 1000); /* re-checks once a second regardless */
        }
    }
}

int cairn_sub_ack(cairn_sub *sub) {
    int rc;
    cairn__clear_error();
    if (!sub) return cairn__fail(CAIRN_EINVAL, "sub_ack: NULL argument");
    if ((rc = cairn__env_check(sub->env))) return rc;
    if (sub->pending && sub->name && (rc = checkpoint_write(sub, sub->pending))) return rc;
    sub->pending = 0;
    return CAIRN_OK;
}

void cairn_sub_discard(cairn_sub *sub) {
    if (!sub) return;
    sub->pending = 0; /* the event in hand is not acknowledged: it is delivered again */
    cairn_sub_close(sub);
}

int cairn_sub_close(cairn_sub *sub) {
    int rc = CAIRN_OK;
    if (!sub) return CAIRN_OK;
    cairn__clear_error();
    if (sub->pending && sub->name && cairn__env_check(sub->env) == CAIRN_OK)
        rc = checkpoint_write(sub, sub->pending);
    if (sub->it) cairn_iter_close(sub->it);
    cairn__env_release(sub->env);
    free(sub->fmem);
    free(sub->name);
    free(sub);
    return rc;
}

/* Every named subscription with its checkpoint, sorted by name, in one read transaction. */
int cairn_subscriptions(cairn_store *s, cairn_checkpoint_fn fn, void *ctx) {
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    int rc;

    cairn__clear_error();
    if (!fn) return cairn__fail(CAIRN_EINVAL, "fn: NULL");
    if ((rc = cairn__store_check(s))) return rc;
    if (!s->env->subs) return CAIRN_OK; /* read-only store from before subscriptions */
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    if ((rc = mdb_cursor_open(txn, s->env->subs, &c))) {
        cairn__read_end(s->env, txn);
        return cairn__mdb_fail(rc, "list subscriptions");
    }
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
        if (v.mv_size != 8) {
            rc = cairn__fail(CAIRN_ECORRUPT, "subs: bad checkpoint");
            break;
        }
        if (fn(ctx, k.mv_data, k.mv_size, cairn__get_be64(v.mv_data))) {
            rc = MDB_NOTFOUND;
            break;
        }
    }
    mdb_cursor_close(c);
    cairn__read_end(s->env, txn);
    return rc == MDB_NOTFOUND ? CAIRN_OK : rc < 0 ? rc : cairn__mdb_fail(rc, "list subscriptions");
}
