/*
 * store.c -- opening and closing stores: the per-process registry of LMDB environments,
 * the store's databases, map growth, durability, and fork() detection.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "storage.h"

#define DEFAULT_MAP_SIZE (16ull << 30) /* address space only: the file grows with use */
#define MIN_MAP_SIZE ((size_t)1 << 20) /* a smaller map_size is rounded up to this */
#define MAGIC "cairn-store"

/* LMDB allows one environment per file per process: closing a second one would drop
 * the first one's locks.  The registry hands every open of one directory the same
 * environment.  Its lock is held across fork() so that the child finds it consistent. */
static pthread_mutex_t g_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static cairn_env *g_registry;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
unsigned long cairn__fork_gen;

static void atfork_prepare(void) { pthread_mutex_lock(&g_registry_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_registry_lock); }
/* The environments inherited from parent processes: never closed, never freed, but kept
 * reachable (so that a leak checker sees them as held, not lost). */
static cairn_env *g_inherited;
static void atfork_child(void) {
    /* The parent's environments must not be touched here (LMDB forbids it); forget them
     * without closing.  Handles that still point at them fail with CAIRN_ECLOSED. */
    cairn__fork_gen++;
    if (g_registry) {
        cairn_env *t = g_registry;
        while (t->next) t = t->next;
        t->next = g_inherited;
        g_inherited = g_registry;
        /* the writer lock belongs to the parent's open file description: a child keeping
         * it open would keep the parent's lock held after the parent died */
        for (t = g_registry; t; t = t->next)
            if (t->lockfd >= 0) close(t->lockfd), t->lockfd = -1;
    }
    g_registry = NULL;
    pthread_mutex_unlock(&g_registry_lock);
}
static void init_once(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

int cairn__env_check(const cairn_env *e) {
    if (e->fork_gen != cairn__fork_gen)
        return cairn__fail(CAIRN_ECLOSED, "store was opened before fork(); open it again");
    if (e->unmapped)
        return cairn__fail(CAIRN_EIO,
                           "a failed map resize left the store unmapped; close and reopen it");
    return CAIRN_OK;
}

int cairn__store_check(const cairn_store *s) {
    if (!s || s->closed) return cairn__fail(CAIRN_ECLOSED, "store is closed");
    return cairn__env_check(s->env);
}

void cairn__env_retain(cairn_env *e) {
    pthread_mutex_lock(&g_registry_lock);
    e->refs++;
    pthread_mutex_unlock(&g_registry_lock);
}

static int writer_lock(cairn_env *e);
static void writer_unlock(cairn_env *e);

static void env_free(cairn_env *e) {
    /* a last checkpoint: the journal is empty after a clean close */
    if (e->env && e->wal_dirty && !e->wal_err && writer_lock(e) == CAIRN_OK) {
        cairn__wal_checkpoint(e);
        writer_unlock(e);
    }
    cairn__wal_close(e);
    free(e->path);
    free(e->lk_path);
    if (e->hooks && e->hooks->env_close) e->hooks->env_close(e, e->upper);
    cairn__notify_close(e);
    cairn__keys_close(e);
    pthread_mutex_destroy(&e->nlock);
    pthread_cond_destroy(&e->ncond);
    if (e->env) mdb_env_close(e->env);
    pthread_rwlock_destroy(&e->resize);
    pthread_mutex_destroy(&e->wlock);
    pthread_mutex_destroy(&e->gmu);
    pthread_cond_destroy(&e->gcv);
    pthread_cond_destroy(&e->garr);
    if (e->lockfd >= 0) close(e->lockfd);
    free(e);
}

void cairn__env_release(cairn_env *e) {
    int last;
    pthread_mutex_lock(&g_registry_lock);
    last = --e->refs == 0;
    if (last && e->fork_gen == cairn__fork_gen) {
        cairn_env **pp = &g_registry;
        while (*pp && *pp != e) pp = &(*pp)->next;
        if (*pp) *pp = e->next;
    }
    pthread_mutex_unlock(&g_registry_lock);
    if (!last) return;
    if (e->fork_gen == cairn__fork_gen) env_free(e);
    /* else: the parent's environment; leak it rather than let LMDB touch its locks */
}

/* ---------------------------------------------------------------------------------
 * Transactions
 * --------------------------------------------------------------------------------- */
static int txn_begin(cairn_env *e, unsigned flags, MDB_txn **txn) {
    for (;;) {
        int rc;
        pthread_rwlock_rdlock(&e->resize);
        if (e->unmapped) { /* a resize failed while this thread waited for the lock */
            pthread_rwlock_unlock(&e->resize);
            return cairn__env_check(e);
        }
        rc = mdb_txn_begin(e->env, NULL, flags, txn);
        if (rc == MDB_SUCCESS) return CAIRN_OK;
        pthread_rwlock_unlock(&e->resize);
        if (rc != MDB_MAP_RESIZED) return cairn__mdb_fail(rc, "begin transaction");
        /* Another process grew the map: adopt its size. */
        pthread_rwlock_wrlock(&e->resize);
        cairn__wal_unpin(e); /* LMDB maps anew only with no txn open in the process */
        rc = mdb_env_set_mapsize(e->env, 0);
        if (rc) e->unmapped = 1; /* LMDB unmapped the old map first */
        pthread_rwlock_unlock(&e->resize);
        if (rc) return cairn__mdb_fail(rc, "adopt map size");
    }
}

int cairn__read_begin(cairn_env *e, MDB_txn **txn) {
    int rc = cairn__env_check(e);
    if (rc) return rc;
    cairn__wal_trim(e);
    return txn_begin(e, MDB_RDONLY, txn);
}

void cairn__read_end(cairn_env *e, MDB_txn *txn) {
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&e->resize);
}

/* The writer lock (see cairn_env.lockfd), beside LMDB's own in lock.mdb: an OFD lock on
 * one byte of data.mdb far past its end, which nothing else locks.  OFD locks belong to
 * the open file description, not the thread: `wlock` orders this process's writers. */
#define WRITER_LOCK_AT ((off_t)1 << 62)

int cairn__byte_lock(int fd, off_t at, short type, int wait) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type, fl.l_whence = SEEK_SET, fl.l_start = at, fl.l_len = 1;
    while (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) != 0)
        if (errno != EINTR) return errno;
    return 0;
}

static int writer_fcntl(cairn_env *e, short type) {
    return cairn__byte_lock(e->lockfd, WRITER_LOCK_AT, type, type != F_UNLCK);
}

static void writer_unlock(cairn_env *e) {
    if (e->lockfd >= 0) writer_fcntl(e, F_UNLCK);
    pthread_mutex_unlock(&e->wlock);
}

static int writer_lock(cairn_env *e) {
    struct stat st;
    int err;
    pthread_mutex_lock(&e->wlock);
    if (e->lockfd < 0) return CAIRN_OK; /* read-only: LMDB refuses the write txn */
    if ((err = writer_fcntl(e, F_WRLCK))) {
        pthread_mutex_unlock(&e->wlock);
        return cairn__fail(CAIRN_EIO, "%s/data.mdb: writer lock: %s", e->path, strerror(err));
    }
    /* Checked while holding the lock: a writer that opened the store after lock.mdb was
     * replaced waits for this one, and this one refuses from its next write on. */
    if (stat(e->lk_path, &st) != 0 || st.st_dev != e->lk_dev || st.st_ino != e->lk_ino) {
        writer_unlock(e);
        return cairn__fail(CAIRN_EIO,
                           "%s: lock.mdb was deleted or replaced while the store was open; "
                           "writes refused: close the store and open it again",
                           e->path);
    }
    return CAIRN_OK;
}

/* Readers of processes that died (SIGKILL) keep their slot in lock.mdb, and the oldest one
 * pins its snapshot: no page freed since can be reused, and data.mdb grows with every
 * commit.  Cleared at open and every READER_CHECK_EVERY commits of this process. */
#define READER_CHECK_EVERY 64

/* Durability is a per-handle choice but LMDB's sync flags are per environment: they are
 * set while this thread holds LMDB's writer lock, so no other commit can see them. */
int cairn__write_begin(cairn_env *e, cairn_durability d, MDB_txn **txn) {
    unsigned on;
    int rc = cairn__env_check(e);
    if (rc) return rc;
    if ((rc = writer_lock(e))) return rc;
    if (e->wal_err) {
        writer_unlock(e);
        return cairn__fail(CAIRN_EIO,
                           "%s: a flush failed earlier (%s): this process writes no more to "
                           "the store; close every handle and open it again (the journal is "
                           "replayed then)",
                           e->path, mdb_strerror(e->wal_err));
    }
    if ((rc = txn_begin(e, 0, txn))) {
        writer_unlock(e);
        return rc;
    }
    on = d == CAIRN_DURABLE_NONE     ? MDB_NOSYNC | MDB_NOMETASYNC
        : d == CAIRN_DURABLE_RELAXED ? MDB_NOMETASYNC
                                     : 0;
    /* with the journal, a durable commit is flushed there, and LMDB's own is not */
    if (d == CAIRN_DURABLE_FULL && e->walfd >= 0) on = MDB_NOSYNC | MDB_NOMETASYNC;
    mdb_env_set_flags(e->env, MDB_NOSYNC | MDB_NOMETASYNC, 0);
    if (on) mdb_env_set_flags(e->env, on, 1);
    cairn__wal_begin(e, *txn, d == CAIRN_DURABLE_FULL);
    return CAIRN_OK;
}

int cairn__write_commit(cairn_env *e, MDB_txn *txn) {
    int rc = cairn__wal_commit(e, txn);
    pthread_rwlock_unlock(&e->resize);
    if (rc == MDB_SUCCESS && ++e->commits % READER_CHECK_EVERY == 0) mdb_reader_check(e->env, NULL);
    writer_unlock(e);
    return rc;
}

void cairn__write_abort(cairn_env *e, MDB_txn *txn) {
    cairn__wal_abort(e);
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&e->resize);
    writer_unlock(e);
}

int cairn__commit_fail(cairn_env *e, int rc) {
    struct statvfs fs;
    if ((rc == EIO || rc == ENOSPC) && e->path && statvfs(e->path, &fs) == 0 &&
        (uint64_t)fs.f_bavail * fs.f_frsize < (4u << 20))
        return cairn__fail(CAIRN_EIO, "commit: %s (the file system holding %s is full)",
                           mdb_strerror(rc), e->path);
    return cairn__mdb_fail(rc, "commit");
}

int cairn__env_grow(cairn_env *e) {
    MDB_envinfo info;
    int rc;
    size_t want;
    void *probe;
    int wal = e->walfd >= 0 && !e->rdonly;
    /* The pin goes while LMDB maps anew: first a checkpoint, so that the new pin (taken
     * before the writer lock is let go) is the base again. */
    if (wal) { /* the pin changes under the resize lock: a reader adopting a map drops it */
        if ((rc = writer_lock(e))) return rc;
        pthread_rwlock_rdlock(&e->resize);
        rc = e->unmapped ? 0 : cairn__wal_checkpoint(e);
        pthread_rwlock_unlock(&e->resize);
        if (rc) {
            writer_unlock(e);
            return cairn__commit_fail(e, rc);
        }
    }
    pthread_rwlock_wrlock(&e->resize);
    if (e->unmapped) {
        pthread_rwlock_unlock(&e->resize);
        if (wal) writer_unlock(e);
        return cairn__env_check(e);
    }
    mdb_env_info(e->env, &info);
    want = (size_t)info.me_mapsize * 2;
    /* mdb_env_set_mapsize unmaps the old map before it maps the new one, and when that mmap
     * fails it leaves none (me_map NULL, the meta pointers dangling: the next transaction
     * crashes).  Make sure the address space is there first; the store stays as it was. */
    probe = mmap(NULL, want, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (probe == MAP_FAILED) {
        int err = errno;
        pthread_rwlock_unlock(&e->resize);
        if (wal) writer_unlock(e);
        return cairn__fail(CAIRN_ENOMEM, "grow map to %zu bytes: %s", want, strerror(err));
    }
    munmap(probe, want);
    cairn__wal_unpin(e);
    rc = mdb_env_set_mapsize(e->env, want);
    if (rc)
        e->unmapped = 1;
    else if (wal)
        cairn__wal_repin(e);
    pthread_rwlock_unlock(&e->resize);
    if (wal) writer_unlock(e);
    return rc ? cairn__mdb_fail(rc, "grow map") : CAIRN_OK;
}

/* One write alone in its transaction. */
static int write_alone(cairn_env *e, cairn_durability d, cairn_write_body body, void *ctx) {
    for (;;) {
        cairn_wtxn w = {NULL, 0, 0, 0};
        int rc = cairn__write_begin(e, d, &w.txn);
        if (rc) return rc;
        rc = body(&w, ctx);
        if (rc == CAIRN_OK && !w.skip) {
            int mrc = cairn__write_commit(e, w.txn);
            if (mrc == MDB_SUCCESS) {
                if (w.notify) cairn__notify_commit(e, w.head);
                return CAIRN_OK;
            }
            if (mrc != MDB_MAP_FULL) return cairn__commit_fail(e, mrc);
        } else {
            cairn__write_abort(e, w.txn);
            if (rc == CAIRN__ERETRY) {
                cairn__clear_error();
                continue;
            }
            if (rc != CAIRN__EMAPFULL) return rc; /* CAIRN_OK when skipped */
        }
        if ((rc = cairn__env_grow(e))) return rc;
        cairn__clear_error();
    }
}

/* ---------------------------------------------------------------------------------
 * Group commit.  A durable commit waits for two device flushes; writers of this process
 * that arrive meanwhile queue up, and the first of them to find no leader leads the next
 * group: it takes the whole queue and runs every body, in arrival order, in a nested
 * transaction of one parent transaction, then commits the parent once.  A body that fails
 * aborts its nested transaction only, and the failure (its cairn_error, copied) is its
 * caller's alone; a full map grows and runs the whole group again (bodies are rerunnable).
 * Writers of other processes take the writer lock between groups, as before.
 * --------------------------------------------------------------------------------- */
typedef struct cairn__gwait {
    struct cairn__gwait *next;
    cairn_write_body body;
    void *ctx;
    int done, rc;
    cairn__err_copy err; /* rc != 0: its error, made on the leader's thread */
} gwait;

static void group_fail(gwait *w, int rc) {
    w->rc = rc;
    cairn__err_save(&w->err);
}

/* Runs one member's body in a nested transaction of `parent`.  Returns 1 when the map is
 * full (the group must grow and run again), else 0 with w->rc set. */
static int group_run_one(cairn_env *e, MDB_txn *parent, gwait *w, int *notify, uint64_t *head) {
    for (;;) {
        cairn_wtxn wt = {NULL, 0, 0, 0};
        size_t mark = cairn__wal_mark(e);
        int rc, mrc = mdb_txn_begin(e->env, parent, 0, &wt.txn);
        if (mrc) {
            group_fail(w, cairn__mdb_fail(mrc, "begin a nested transaction"));
            return mrc == MDB_MAP_FULL;
        }
        cairn__clear_error();
        rc = w->body(&wt, w->ctx);
        if (rc == CAIRN_OK && !wt.skip) {
            cairn__wal_settle(e);
            if ((mrc = mdb_txn_commit(wt.txn)) == MDB_MAP_FULL) return 1;
            if (mrc) {
                cairn__wal_undo(e, mark);
                group_fail(w, cairn__mdb_fail(mrc, "commit a nested transaction"));
                return 0;
            }
            if (wt.notify) {
                *notify = 1;
                if (wt.head > *head) *head = wt.head;
            }
            w->rc = CAIRN_OK;
            return 0;
        }
        mdb_txn_abort(wt.txn);
        cairn__wal_undo(e, mark);
        if (rc == CAIRN__ERETRY) continue;
        if (rc == CAIRN__EMAPFULL) return 1;
        if (rc)
            group_fail(w, rc);
        else
            w->rc = CAIRN_OK; /* skipped: nothing to write */
        return 0;
    }
}

static void group_run(cairn_env *e, cairn_durability d, gwait *group) {
    gwait *w;
    for (;;) {
        MDB_txn *parent;
        uint64_t head = 0;
        int notify = 0, grow = 0, rc, mrc;
        if ((rc = cairn__write_begin(e, d, &parent))) {
            for (w = group; w; w = w->next) group_fail(w, rc);
            return;
        }
        for (w = group; w && !grow; w = w->next) grow = group_run_one(e, parent, w, &notify, &head);
        if (!grow) {
            if ((mrc = cairn__write_commit(e, parent)) == MDB_SUCCESS) {
                if (notify) cairn__notify_commit(e, head);
                return;
            }
            if (mrc != MDB_MAP_FULL) {
                rc = cairn__commit_fail(e, mrc);
                for (w = group; w; w = w->next)
                    if (w->rc == CAIRN_OK) group_fail(w, rc);
                return;
            }
        } else {
            cairn__write_abort(e, parent);
        }
        for (w = group; w; w = w->next) /* a failure made before the map grew is undone */
            if (w->rc) free(w->err.details), w->err.details = NULL, w->rc = CAIRN_OK;
        if ((rc = cairn__env_grow(e))) {
            for (w = group; w; w = w->next) group_fail(w, rc);
            return;
        }
    }
}

/* A new leader whose last group had several members waits a little for them: they were
 * released a moment ago and most write again at once (a loop, a busy server), while the
 * writers queued meanwhile are only those that came during that group's flush.  Without the
 * wait, groups would alternate between the two halves.  The wait ends when as many writers
 * queue as the last group had, and lasts at most as long as that group's write (1 ms at
 * most); a wait that
 * gathers fewer makes the next one expect fewer, so a writer left alone stops waiting after
 * one short wait.  Called with gmu held. */
static void group_gather(cairn_env *e) {
    struct timespec until;
    uint64_t wait_ns = e->g_write_ns;
    if (e->g_last < 2 || e->gq_len >= e->g_last) return;
    if (wait_ns > 1000000) wait_ns = 1000000;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)wait_ns;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    e->g_gathering = 1;
    while (e->gq_len < e->g_last)
        if (pthread_cond_timedwait(&e->garr, &e->gmu, &until) == ETIMEDOUT) break;
    e->g_gathering = 0;
}

int cairn__write_txn(cairn_env *e, cairn_durability d, cairn_write_body body, void *ctx) {
    gwait me, *group, *w;
    struct timespec t0, t1;
    size_t n = 0;
    int alone;
    if (d != CAIRN_DURABLE_FULL) return write_alone(e, d, body, ctx);
    memset(&me, 0, sizeof me);
    me.body = body, me.ctx = ctx;
    pthread_mutex_lock(&e->gmu);
    *e->gq_tail = &me;
    e->gq_tail = &me.next;
    e->gq_len++;
    if (e->g_gathering) pthread_cond_signal(&e->garr);
    while (!me.done && e->g_leading) pthread_cond_wait(&e->gcv, &e->gmu);
    if (me.done) { /* a leader ran it */
        pthread_mutex_unlock(&e->gmu);
        if (me.rc) cairn__err_restore(&me.err);
        return me.rc;
    }
    e->g_leading = 1;
    group_gather(e);
    group = e->gq;
    e->gq = NULL, e->gq_tail = &e->gq, e->gq_len = 0;
    pthread_mutex_unlock(&e->gmu);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    alone = group == &me && !me.next;
    if (alone)
        me.rc = write_alone(e, d, body, ctx); /* its error is this thread's already */
    else
        group_run(e, d, group);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_mutex_lock(&e->gmu); /* held while the members are touched: none leaves before */
    for (w = group; w; w = w->next, n++) {
        if (w != &me) w->done = 1;
        if (w != group) e->grouped++;
    }
    e->g_last = n;
    e->g_write_ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)t1.tv_nsec -
        (uint64_t)t0.tv_nsec;
    e->g_leading = 0;
    pthread_cond_broadcast(&e->gcv);
    pthread_mutex_unlock(&e->gmu);
    if (!alone && me.rc)
        cairn__err_restore(&me.err);
    else if (!alone)
        cairn__clear_error(); /* the others' failures were theirs */
    return me.rc;
}

/* ---------------------------------------------------------------------------------
 * Opening
 * --------------------------------------------------------------------------------- */
/* A condition variable whose timed waits count on CLOCK_MONOTONIC. */
static void cond_init_monotonic(pthread_cond_t *c) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}
void cairn_options_init(cairn_options *opts) {
    memset(opts, 0, sizeof *opts);
    opts->durability = CAIRN_DURABLE_FULL;
}

/* A database added after format 1 shipped: created when `create`, else *dbi 0 (read as
 * empty) when the store predates it.  Returns the MDB code. */
static int open_later_db(MDB_txn *txn, const char *name, int create, MDB_dbi *dbi) {
    int rc = mdb_dbi_open(txn, name, create ? MDB_CREATE : 0, dbi);
    if (rc == MDB_NOTFOUND) *dbi = 0, rc = 0;
    return rc;
}

/* A store is recognised by the "meta" database holding MAGIC.  An environment whose main
 * database holds anything else is somebody else's: refuse it without writing. */
static int env_setup(cairn_env *e, int create) {
    MDB_txn *txn;
    MDB_dbi main;
    MDB_val k = {5, (void *)"magic"}, v;
    MDB_stat st;
    const uint8_t *format;
    int rc;
    unsigned cf = create ? MDB_CREATE : 0;

    if (create && (rc = writer_lock(e))) return rc;
    if ((rc = mdb_txn_begin(e->env, NULL, create ? 0 : MDB_RDONLY, &txn))) {
        if (create) writer_unlock(e);
        return cairn__mdb_fail(rc, "open store");
    }
    if ((rc = mdb_dbi_open(txn, NULL, 0, &main))) goto mdb_fail;
    if ((rc = mdb_stat(txn, main, &st))) goto mdb_fail;
    rc = mdb_dbi_open(txn, "meta", 0, &e->meta);
    if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
        if (st.ms_entries || !create || rc == MDB_INCOMPATIBLE) goto not_ours;
    } else if (rc) {
        goto mdb_fail;
    } else {
        rc = mdb_get(txn, e->meta, &k, &v);
        if (rc || v.mv_size != sizeof MAGIC + 3 || memcmp(v.mv_data, MAGIC, sizeof MAGIC))
            goto not_ours;
        format = (const uint8_t *)v.mv_data + sizeof MAGIC;
        if (format[0] || format[1] || format[2] < 1 || format[2] > CAIRN_STORE_FORMAT) {
            unsigned f = ((unsigned)format[0] << 16) | ((unsigned)format[1] << 8) | format[2];
            mdb_txn_abort(txn);
            if (create) writer_unlock(e);
            return cairn__fail(CAIRN_ECORRUPT,
                               "%s: store format %u%s: this cairn reads store formats 1 to %d%s",
                               e->path, f, f ? " is newer than this cairn knows" : " is unknown",
                               CAIRN_STORE_FORMAT, f ? "; open it with a newer cairn" : "");
        }
        cf = 0; /* an existing store: its databases exist */
    }
    if ((rc = mdb_dbi_open(txn, "meta", cf, &e->meta)) ||
        (rc = mdb_dbi_open(txn, "log", cf, &e->log)) ||
        (rc = mdb_dbi_open(txn, "streams", cf, &e->streams)) ||
        (rc = mdb_dbi_open(txn, "sidx", cf | MDB_DUPSORT | MDB_DUPFIXED, &e->sidx)) ||
        (rc = mdb_dbi_open(txn, "ids", cf, &e->ids)) ||
        (rc = mdb_dbi_open(txn, "post", cf | MDB_DUPSORT | MDB_DUPFIXED, &e->post)) ||
        (rc = mdb_dbi_open(txn, "comp", cf, &e->comp)))
        goto mdb_fail;
    /* added after format 1 shipped: created in older stores when writable, absent (dbi 0,
     * read as empty) in a read-only one -- subscriptions, crypto-shredding's (keys.c), the
     * lifecycle's (spec 6) */
    if ((rc = open_later_db(txn, "subs", create, &e->subs)) ||
        (rc = open_later_db(txn, "subjects", create, &e->subjects)) ||
        (rc = open_later_db(txn, "kpend", create, &e->kpend)) ||
        (rc = open_later_db(txn, "smeta", create, &e->smeta)) ||
        (rc = open_later_db(txn, "holes", create, &e->holes)))
        goto mdb_fail;
    /* a format-1 store opened writable is upgraded now (chain.c; nothing rewritten) */
    if (create && !cf && (rc = cairn__chain_upgrade(e, txn))) {
        mdb_txn_abort(txn);
        writer_unlock(e);
        return rc == CAIRN__EMAPFULL ? cairn__fail(CAIRN_EIO, "upgrade: the map is full") : rc;
    }
    /* the layer above's databases */
    if (e->hooks && e->hooks->env_open &&
        (rc = e->hooks->env_open(e, txn, cf != 0, create, &e->upper))) {
        mdb_txn_abort(txn);
        if (create) writer_unlock(e);
        return rc;
    }
    if (cf) {
        uint8_t magic[sizeof MAGIC + 3] = MAGIC;
        magic[sizeof MAGIC + 2] = CAIRN_STORE_FORMAT; /* store format, big-endian u24 */
        v.mv_size = sizeof magic, v.mv_data = magic;
        if ((rc = mdb_put(txn, e->meta, &k, &v, 0))) goto mdb_fail;
    }
    rc = cairn__wal_commit(e, txn); /* unjournaled, flushed by LMDB */
    if (create) writer_unlock(e);
    if (rc) return cairn__mdb_fail(rc, "create store");
    return CAIRN_OK;
not_ours:
    mdb_txn_abort(txn);
    if (create) writer_unlock(e);
    return cairn__fail(CAIRN_ECORRUPT, "not a cairn store (data.mdb belongs to something else)");
mdb_fail:
    mdb_txn_abort(txn);
    if (create) writer_unlock(e);
    return cairn__mdb_fail(rc, "open store");
}

/* The writer lock's file descriptor and the identity of the lock.mdb LMDB just opened. */
static int writer_setup(cairn_env *e, const char *data) {
    char lk[PATH_MAX];
    struct stat st;
    snprintf(lk, sizeof lk, "%s/lock.mdb", e->path);
    if (!(e->lk_path = strdup(lk))) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    if (stat(lk, &st) != 0) return cairn__fail(CAIRN_EIO, "%s: %s", lk, strerror(errno));
    e->lk_dev = st.st_dev, e->lk_ino = st.st_ino;
    if ((e->lockfd = open(data, O_RDWR | O_CLOEXEC)) < 0)
        return cairn__fail(errno == EACCES ? CAIRN_EREADONLY : CAIRN_EIO, "%s: %s", data,
                           strerror(errno));
    return CAIRN_OK;
}

/* An empty data.mdb is either a creation that never finished (LMDB makes the file, then
 * writes its meta pages) or a store cut to nothing; so is one holding only parts of LMDB's
 * new meta pages (written unflushed: the power cut the creation before the first commit's
 * flush, cairn__file_unmade).  The notify side file tells them apart: it is made only after
 * a store's first setup committed.  A read-write open completes an unfinished creation
 * (making the file afresh); a read-only one finds no store and writes nothing (LMDB, which
 * opens the environment read-write where it may, would write fresh meta pages). */
static int empty_check(const char *path, const char *data, int readonly) {
    char nf[PATH_MAX];
    struct stat st;
    int unmade;
    if (stat(data, &st) != 0) return CAIRN_OK;
    unmade = st.st_size != 0;
    if (unmade && !cairn__file_unmade(data)) return CAIRN_OK; /* a store, or LMDB's to judge */
    snprintf(nf, sizeof nf, "%s/notify", path);
    if (access(nf, F_OK) == 0)
        return unmade ? cairn__fail(CAIRN_ECORRUPT,
                                    "%s holds no meta page of a commit, but this directory held "
                                    "a store (its notify file is there): the file was cut short "
                                    "or overwritten; restore it from a backup",
                                    data)
                      : cairn__fail(CAIRN_ECORRUPT,
                                    "%s is empty, but this directory held a store (its notify "
                                    "file is there): the file was cut to nothing; restore it "
                                    "from a backup",
                                    data);
    if (readonly)
        return cairn__fail(CAIRN_ENOENT,
                           unmade ? "%s: no store here (the making of data.mdb was cut short "
                                    "before its first commit)"
                                  : "%s: no store here (data.mdb is empty)",
                           path);
    return unmade ? cairn__file_unmade_reset(path, data) : CAIRN_OK;
}

static int env_open(const char *path, const struct stat *st, const cairn_options *o,
                    const cairn_hooks *hooks, cairn_env **out) {
    cairn_env *e = calloc(1, sizeof *e);
    char data[4096];
    int rc, exists;

    if (!e) return cairn__fail(CAIRN_ENOMEM, "out of memory");
    e->dev = st->st_dev, e->ino = st->st_ino, e->fork_gen = cairn__fork_gen, e->refs = 1;
    e->path = strdup(path);
    e->hooks = hooks;
    e->lockfd = -1;
    e->keyfd = -1;
    e->walfd = -1;
    pthread_rwlock_init(&e->resize, NULL);
    pthread_mutex_init(&e->wlock, NULL);
    pthread_mutex_init(&e->gmu, NULL);
    pthread_cond_init(&e->gcv, NULL);
    cond_init_monotonic(&e->garr);
    e->gq_tail = &e->gq;
    pthread_mutex_init(&e->nlock, NULL);
    cond_init_monotonic(&e->ncond);
    snprintf(data, sizeof data, "%s/data.mdb", path);
    exists = access(data, F_OK) == 0;
    if (!exists && o->readonly) {
        env_free(e);
        return cairn__fail(CAIRN_ENOENT, "%s: no store here", path);
    }
    /* A read-only handle still opens the environment read-write when it may, so that
     * read-write handles in this process can share it. */
    e->rdonly = access(path, W_OK) != 0 || (exists && access(data, W_OK) != 0);
    if (e->rdonly && !o->readonly) {
        env_free(e);
        return cairn__fail(CAIRN_EREADONLY, "%s: not writable", path);
    }
    /* before anything reads data.mdb: a journal left by a power loss is replayed into it */
    if (exists && (rc = cairn__wal_open(e, path, !e->rdonly, 0))) {
        env_free(e);
        return rc;
    }
    if (exists && (rc = empty_check(path, data, o->readonly))) {
        env_free(e);
        return rc;
    }
    if (exists) { /* before LMDB maps it: a page past the end of a cut file is a SIGBUS */
        cairn_filecheck fc;
        if ((rc = cairn__file_check(data, 0, &fc))) {
            env_free(e);
            return rc;
        }
    }
    if ((rc = mdb_env_create(&e->env))) goto mdb_fail;
    mdb_env_set_userctx(e->env, e);
    mdb_env_set_maxdbs(e->env, 32);
    mdb_env_set_maxreaders(e->env, 1022);
    /* A map too small for a new store's databases made the open fail with MDB_MAP_FULL (and
     * leave files behind); the map grows on demand anyway, so a small one is rounded up. */
    mdb_env_set_mapsize(e->env,
                        !o->map_size                     ? DEFAULT_MAP_SIZE
                            : o->map_size < MIN_MAP_SIZE ? MIN_MAP_SIZE
                                                         : o->map_size);
    rc = mdb_env_open(e->env, path, MDB_NOTLS | (e->rdonly ? MDB_RDONLY : 0), 0644);
    if (rc) goto mdb_fail;
    {
        MDB_stat ms;
        mdb_env_stat(e->env, &ms);
        e->wal_psize = ms.ms_psize;
    }
    if (!e->rdonly && (rc = writer_setup(e, data))) {
        env_free(e);
        return rc;
    }
    mdb_reader_check(e->env, NULL); /* fails harmlessly where lock.mdb is not writable */
    if ((rc = env_setup(e, !o->readonly))) {
        env_free(e);
        return rc;
    }
    /* a store without a journal yet gets one once it is known to be a store */
    if (e->walfd < 0 && !e->rdonly && (rc = cairn__wal_open(e, path, 1, 1))) {
        env_free(e);
        return rc;
    }
    /* the keys file; a forget that a crash interrupted between its commit and the zeroing
     * of its key is finished here, before anything else reads */
    if ((rc = cairn__keys_open(e, path)) || (!o->readonly && (rc = cairn__keys_zero_pending(e)))) {
        env_free(e);
        return rc;
    }
    cairn__notify_open(e, path);
    *out = e;
    return CAIRN_OK;
mdb_fail:
    env_free(e);
    return cairn__mdb_fail(rc, path);
}

int cairn__store_open(const char *path, const cairn_options *opts, const cairn_hooks *hooks,
                      cairn_store **out) {
    cairn_options defaults;
    cairn_store *s;
    cairn_env *e;
    struct stat st;
    int rc = CAIRN_OK;

    cairn__clear_error();
    pthread_once(&g_once, init_once);
    if (!opts) cairn_options_init(&defaults), opts = &defaults;
    if (!path || !*path) return cairn__fail(CAIRN_EINVAL, "path: must not be empty");
    if ((rc = cairn__chain_init())) return rc; /* sodium_init: once, thread-safe */
    if ((unsigned)opts->durability > CAIRN_DURABLE_NONE)
        return cairn__fail(CAIRN_EINVAL, "durability: unknown value %d", (int)opts->durability);
    if (stat(path, &st) != 0) {
        if (errno != ENOENT) return cairn__fail(CAIRN_EIO, "%s: %s", path, strerror(errno));
        if (opts->readonly) return cairn__fail(CAIRN_ENOENT, "%s: no store here", path);
        /* the umask narrows these further; never writable by others, whatever the umask */
        if (mkdir(path, 0775) != 0 && errno != EEXIST)
            return cairn__fail(errno == EACCES       ? CAIRN_EREADONLY
                                   : errno == ENOENT ? CAIRN_ENOENT
                                                     : CAIRN_EIO,
                               "%s: %s", path, strerror(errno));
        if (stat(path, &st) != 0) return cairn__fail(CAIRN_EIO, "%s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return cairn__fail(CAIRN_EINVAL, "%s: not a directory", path);
    if (!(s = calloc(1, sizeof *s))) return cairn__fail(CAIRN_ENOMEM, "out of memory");

    pthread_mutex_lock(&g_registry_lock);
    for (e = g_registry; e; e = e->next)
        if (e->dev == st.st_dev && e->ino == st.st_ino) break;
    if (e) {
        if (e->rdonly && !opts->readonly)
            rc = cairn__fail(CAIRN_EBUSY, "%s: already open read-only in this process", path);
        else
            e->refs++;
    } else if ((rc = env_open(path, &st, opts, hooks, &e)) == CAIRN_OK) {
        e->next = g_registry;
        g_registry = e;
    }
    pthread_mutex_unlock(&g_registry_lock);
    if (rc) {
        free(s);
        return rc;
    }
    s->env = e;
    s->durability = opts->durability;
    s->readonly = opts->readonly;
    s->lim.instructions = opts->script_instruction_limit;
    s->lim.memory = opts->script_memory_limit;
    s->lim.time_ns = opts->script_time_limit_ns;
    s->lim.log = opts->log;
    s->lim.log_ctx = opts->log_ctx;
    *out = s;
    return CAIRN_OK;
}

void cairn_close(cairn_store *s) {
    if (!s) return;
    if (!s->closed) cairn__env_release(s->env);
    free(s);
}

int cairn_sync(cairn_store *s) {
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (s->env->rdonly) return CAIRN_OK;
    if ((rc = cairn__keys_sync(s->env))) return rc; /* keys a durability "none" commit wrote */
    rc = mdb_env_sync(s->env->env, 1);
    return rc ? cairn__mdb_fail(rc, "sync") : CAIRN_OK;
}
