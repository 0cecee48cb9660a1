/*
 * wal.c -- the write-ahead journal: one device flush per durable commit.
 *
 * LMDB's own durable commit flushes twice (the data pages, then the meta page).  A commit
 * with durability full instead writes the list of its LMDB writes (puts and deletes, with
 * their bytes) as one record to the `wal` file and flushes that once; LMDB then commits with
 * MDB_NOSYNC, so readers in every process see it at once.  Every CAIRN__WAL_CKPT_COMMITS
 * commits (or when the journal is full) a checkpoint flushes data.mdb (mdb_env_sync) and
 * starts a new generation of the journal whose header names the new base: the snapshot
 * data.mdb now holds durably, with a copy of its meta page.
 *
 * Between checkpoints this process pins the base with a read txn, so LMDB reuses none of
 * its pages: whatever a power loss leaves of the writes made since, the base's pages are
 * intact.  Recovery (at the first open after every process closed or died) writes the
 * base's meta page back over both of data.mdb's, which makes data.mdb the base again, and
 * replays the generation's records in order, stopping at the first that is torn or does
 * not follow.  The full argument is in docs/ARCHITECTURE.md ("One flush per commit").
 *
 * The rules that keep it true, enforced here under the writer lock:
 *  - a journaled commit appends only when the journal's records follow one another up to
 *    the txn before it (the `wal` key of meta, written with each journaled commit, says
 *    where the last one ended and which txn it was) and this process pins a snapshot no
 *    newer than the base; otherwise it checkpoints first;
 *  - an unjournaled commit (durability relaxed or none, a new store's setup) checkpoints
 *    first when the journal holds records: they could not be replayed past it.
 *
 * File layout (docs/FORMAT.md): two header slots at 0 and 4096 (the newer valid one
 * counts; a checkpoint writes the other), records from 8192, preallocated with zeros so
 * that a commit's flush changes no file size.
 */
#define CAIRN__WAL_SELF
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "storage.h"

#define SLOT_AT(i) ((off_t)(i)*4096)
#define REC_START ((off_t)8192)
#define WAL_AREA ((off_t)1 << 20) /* bytes of records before a checkpoint must wrap */
/* A checkpoint follows CAIRN__WAL_CKPT_COMMITS commits or this many bytes of records: the
 * pages the commits since the base freed are reused only after it (data.mdb grows by
 * about twice what they wrote; 32 commits of one event: under 1 MiB). */
#define WAL_CKPT_BYTES ((off_t)256 << 10)
#define META_COPY 256 /* bytes of a meta page kept: LMDB's meta is 152 */
#define META_TXNID_AT (CAIRN__MDB_PAGEHDR + CAIRN__MDB_META_TXNID)
#define META_LASTPG_AT (CAIRN__MDB_PAGEHDR + CAIRN__MDB_META_LAST)
#define HDR_MAGIC 0x4c415743u /* "CWAL" */
#define REC_MAGIC 0x43455243u /* "CREC" */
#define REC_HEAD 24           /* magic u32, len u32, gen u64, txnid u64 */
#define WAL_LOCK_AT ((off_t)1 << 62)

enum { OP_PUT = 1, OP_MULTI, OP_DEL, OP_DROP };
/* restore_base's refusals (beside MDB and errno codes) */
#define WAL_OLDER (-30210) /* data.mdb's meta pages are both older than the base */
#define WAL_CUT (-30211)   /* data.mdb lacks pages of the base */

/* A header slot: magic, version, gen, base, psize, the base's meta page bytes, XXH3. */
typedef struct wal_hdr {
    uint64_t gen, base;
    unsigned psize;
    uint8_t meta[META_COPY];
} wal_hdr;
#define HDR_SIZE (4 + 4 + 8 + 8 + 4 + META_COPY + 8)

/* The meta key: where the journal's last record ends and which txn wrote it. */
static const MDB_val K_WAL = {3, (void *)"wal"};

typedef struct cairn__wal_rec {
    cairn_env *env;
    MDB_txn *txn;   /* the top-level write txn being recorded */
    cairn_buf b;    /* REC_HEAD bytes, then the ops */
    size_t pend_at; /* a reserved value's place in b, or 0 */
    const void *pend_src;
    size_t pend_len;
    int failed; /* memory ran out while recording: the commit fails */
    int journaled;
} wal_rec;

static __thread wal_rec *g_cur;

/* ---------------------------------------------------------------------------------
 * Recording
 * --------------------------------------------------------------------------------- */
static wal_rec *recording(MDB_txn *txn) {
    wal_rec *r = g_cur;
    return r && r->journaled && mdb_txn_env(txn) == r->env->env ? r : NULL;
}

static void put_u32(wal_rec *r, uint32_t v) {
    if (cairn_buf_append(&r->b, &v, 4)) r->failed = 1;
}

static void put_bytes(wal_rec *r, const void *p, size_t n) {
    if (n && cairn_buf_append(&r->b, p, n)) r->failed = 1;
}

/* The value a put with MDB_RESERVE reserved is copied in before the next write (LMDB
 * keeps it in place until then). */
static void settle(wal_rec *r) {
    if (!r || !r->pend_at) return;
    memcpy(r->b.p + r->pend_at, r->pend_src, r->pend_len);
    r->pend_at = 0;
}

/* The recording of e's write in progress, NULL when none is journaled. */
static wal_rec *active(cairn_env *e) {
    wal_rec *r = e->wrec;
    return r && r->txn && r->journaled ? r : NULL;
}

void cairn__wal_settle(cairn_env *e) { settle(active(e)); }

static void op_head(wal_rec *r, int op, MDB_dbi dbi) {
    cairn_env *e = r->env;
    const char *name = dbi < CAIRN__MAXDBS ? e->dbname[dbi] : NULL;
    uint8_t h[2];
    size_t n;
    if (!name) { /* a dbi not opened through cairn__wal_dbi_open: cannot happen */
        r->failed = 1;
        return;
    }
    n = strlen(name);
    h[0] = (uint8_t)op, h[1] = (uint8_t)n;
    put_bytes(r, h, 2);
    put_bytes(r, name, n);
    put_u32(r, e->dbflags[dbi]);
}

static int record_put(wal_rec *r, MDB_dbi dbi, const MDB_val *k, MDB_val *d, unsigned flags) {
    size_t at;
    op_head(r, OP_PUT, dbi);
    put_u32(r, flags & (MDB_APPEND | MDB_APPENDDUP));
    put_u32(r, (uint32_t)k->mv_size);
    put_bytes(r, k->mv_data, k->mv_size);
    put_u32(r, (uint32_t)d->mv_size);
    at = r->b.len;
    if (flags & MDB_RESERVE) {
        if (cairn_buf_reserve(&r->b, d->mv_size)) {
            r->failed = 1;
        } else {
            r->b.len += d->mv_size;
            r->pend_at = at, r->pend_src = d->mv_data, r->pend_len = d->mv_size;
        }
    } else {
        put_bytes(r, d->mv_data, d->mv_size);
    }
    return r->failed ? ENOMEM : 0;
}

int cairn__wal_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags) {
    wal_rec *r = recording(txn);
    int rc;
    settle(r);
    rc = mdb_put(txn, dbi, key, data, flags);
    return rc || !r ? rc : record_put(r, dbi, key, data, flags);
}

int cairn__wal_cursor_put(MDB_cursor *c, MDB_val *key, MDB_val *data, unsigned flags) {
    wal_rec *r = recording(mdb_cursor_txn(c));
    const void *elems = data->mv_data; /* MDB_MULTIPLE moves it to the last one written */
    int rc;
    settle(r);
    if (r && (flags & MDB_CURRENT)) return EINVAL; /* not recorded: never used */
    rc = mdb_cursor_put(c, key, data, flags);
    if (rc || !r) return rc;
    if (flags & MDB_MULTIPLE) {
        op_head(r, OP_MULTI, mdb_cursor_dbi(c));
        put_u32(r, (uint32_t)key->mv_size);
        put_bytes(r, key->mv_data, key->mv_size);
        put_u32(r, (uint32_t)data[0].mv_size);
        put_u32(r, (uint32_t)data[1].mv_size); /* the number written */
        put_bytes(r, elems, data[0].mv_size * data[1].mv_size);
        return r->failed ? ENOMEM : 0;
    }
    return record_put(r, mdb_cursor_dbi(c), key, data, flags);
}

static int record_del(wal_rec *r, MDB_dbi dbi, const MDB_val *k, const MDB_val *d) {
    op_head(r, OP_DEL, dbi);
    put_u32(r, (uint32_t)k->mv_size);
    put_bytes(r, k->mv_data, k->mv_size);
    put_u32(r, d ? (uint32_t)d->mv_size + 1 : 0);
    if (d) put_bytes(r, d->mv_data, d->mv_size);
    return r->failed ? ENOMEM : 0;
}

int cairn__wal_del(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data) {
    wal_rec *r = recording(txn);
    int rc;
    settle(r);
    rc = mdb_del(txn, dbi, key, data);
    return rc || !r ? rc : record_del(r, dbi, key, data);
}

int cairn__wal_cursor_del(MDB_cursor *c, unsigned flags) {
    wal_rec *r = recording(mdb_cursor_txn(c));
    MDB_val k, d;
    MDB_dbi dbi = mdb_cursor_dbi(c);
    int rc, dups;
    settle(r);
    if (!r) return mdb_cursor_del(c, flags);
    if ((rc = mdb_cursor_get(c, &k, &d, MDB_GET_CURRENT))) return rc;
    dups = dbi < CAIRN__MAXDBS && (r->env->dbflags[dbi] & MDB_DUPSORT) && !(flags & MDB_NODUPDATA);
    /* recorded first: the key and data point into the page the delete changes */
    {
        size_t mark = r->b.len;
        record_del(r, dbi, &k, dups ? &d : NULL);
        if ((rc = mdb_cursor_del(c, flags))) r->b.len = mark;
    }
    return rc ? rc : r->failed ? ENOMEM : 0;
}

int cairn__wal_drop(MDB_txn *txn, MDB_dbi dbi, int del) {
    wal_rec *r = recording(txn);
    int rc;
    uint8_t d = (uint8_t)(del != 0);
    settle(r);
    rc = mdb_drop(txn, dbi, del);
    if (rc || !r) return rc;
    op_head(r, OP_DROP, dbi);
    put_bytes(r, &d, 1);
    return r->failed ? ENOMEM : 0;
}

int cairn__wal_dbi_open(MDB_txn *txn, const char *name, unsigned flags, MDB_dbi *dbi) {
    cairn_env *e;
    unsigned f;
    int rc = mdb_dbi_open(txn, name, flags, dbi);
    if (rc || *dbi >= CAIRN__MAXDBS) return rc;
    e = mdb_env_get_userctx(mdb_txn_env(txn));
    if (!e) return 0;
    if (!name) name = "";
    /* a handle an aborted txn made may come back under another name */
    if (!e->dbname[*dbi] || strcmp(e->dbname[*dbi], name)) {
        char *n = strdup(name);
        if (!n) return ENOMEM;
        free(e->dbname[*dbi]);
        e->dbname[*dbi] = n;
    }
    if (mdb_dbi_flags(txn, *dbi, &f) == 0) e->dbflags[*dbi] = f;
    return 0;
}

size_t cairn__wal_mark(cairn_env *e) {
    wal_rec *r = active(e);
    settle(r);
    return r ? r->b.len : 0;
}

void cairn__wal_undo(cairn_env *e, size_t mark) {
    wal_rec *r = active(e);
    if (!r) return;
    if (r->pend_at >= mark) r->pend_at = 0;
    r->b.len = mark;
}

/* ---------------------------------------------------------------------------------
 * The file: header slots, records, the lock
 * --------------------------------------------------------------------------------- */
static int pread_all(int fd, void *p, size_t n, off_t at) {
    size_t done = 0;
    while (done < n) {
        ssize_t k = pread(fd, (char *)p + done, n - done, at + (off_t)done);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return errno;
        if (k == 0) return -1; /* past the end */
        done += (size_t)k;
    }
    return 0;
}

static int pwrite_all(int fd, const void *p, size_t n, off_t at) {
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(fd, (const char *)p + done, n - done, at + (off_t)done);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return errno;
        done += (size_t)k;
    }
    return 0;
}

/* Reads both header slots; 0 with the newer valid one in *h, -1 when neither is valid. */
static int hdr_read(int fd, wal_hdr *h) {
    uint8_t b[2][HDR_SIZE];
    int i, best = -1;
    uint64_t gen[2];
    for (i = 0; i < 2; i++) {
        gen[i] = 0;
        if (pread_all(fd, b[i], HDR_SIZE, SLOT_AT(i))) continue;
        if (cairn__get_le32(b[i]) != HDR_MAGIC || cairn__get_le32(b[i] + 4) != 1) continue;
        if (cairn__get_le64(b[i] + HDR_SIZE - 8) != XXH3_64bits(b[i], HDR_SIZE - 8)) continue;
        gen[i] = cairn__get_le64(b[i] + 8);
        if (best < 0 || gen[i] > gen[best]) best = i;
    }
    if (best < 0) return -1;
    h->gen = gen[best];
    h->base = cairn__get_le64(b[best] + 16);
    h->psize = cairn__get_le32(b[best] + 24);
    memcpy(h->meta, b[best] + 28, META_COPY);
    return 0;
}

static int hdr_write(int fd, const wal_hdr *h) {
    uint8_t b[HDR_SIZE];
    cairn__put_le32(b, HDR_MAGIC);
    cairn__put_le32(b + 4, 1);
    cairn__put_le64(b + 8, h->gen);
    cairn__put_le64(b + 16, h->base);
    cairn__put_le32(b + 24, h->psize);
    memcpy(b + 28, h->meta, META_COPY);
    cairn__put_le64(b + HDR_SIZE - 8, XXH3_64bits(b, HDR_SIZE - 8));
    return pwrite_all(fd, b, HDR_SIZE, SLOT_AT(h->gen & 1));
}

/* Zeros up to REC_START + WAL_AREA, written once (a later commit's flush then changes no
 * file size or extent); before the first header is written. */
static int preallocate(int fd) {
    static const uint8_t zero[65536];
    struct stat st;
    off_t at;
    int err;
    if (fstat(fd, &st) != 0) return errno;
    /* from 0 while there is no header: the slots' pages are allocated too (on a full file
     * system a later header write into a hole would fail) */
    for (at = st.st_size < REC_START ? 0 : st.st_size; at < REC_START + WAL_AREA;
         at += (off_t)sizeof zero) {
        size_t n = (size_t)(REC_START + WAL_AREA - at);
        if ((err = pwrite_all(fd, zero, n < sizeof zero ? n : sizeof zero, at))) return err;
    }
    return 0;
}

static int wal_lock(int fd, short type, int wait) {
    return cairn__byte_lock(fd, WAL_LOCK_AT, type, wait);
}

/* Is the lock held by another open of the file (another process, or this one)? */
static int wal_shared(int fd) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK, fl.l_whence = SEEK_SET, fl.l_start = WAL_LOCK_AT, fl.l_len = 1;
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return 1;
    return fl.l_type != F_UNLCK;
}

/* ---------------------------------------------------------------------------------
 * Checkpoints and the pin
 * --------------------------------------------------------------------------------- */
void cairn__wal_unpin(cairn_env *e) {
    if (e->wal_pin) mdb_txn_abort(e->wal_pin);
    e->wal_pin = NULL, e->wal_pin_id = 0;
}

void cairn__wal_repin(cairn_env *e) {
    cairn__wal_unpin(e);
    if (mdb_txn_begin(e->env, NULL, MDB_RDONLY, &e->wal_pin) != 0)
        e->wal_pin = NULL;
    else
        e->wal_pin_id = mdb_txn_id(e->wal_pin);
}

/* The meta page of txn `last` as data.mdb (fd) holds it: of its two meta pages, the one
 * with that txn id. */
static int meta_copy(int fd, unsigned psize, uint64_t last, uint8_t out[META_COPY]) {
    uint8_t m[2][META_COPY];
    int i, err;
    for (i = 0; i < 2; i++)
        if ((err = pread_all(fd, m[i], META_COPY, (off_t)i * psize))) return err < 0 ? EIO : err;
    for (i = 0; i < 2; i++)
        if (cairn__get_le64(m[i] + META_TXNID_AT) == last) {
            memcpy(out, m[i], META_COPY);
            return 0;
        }
    return EIO;
}

/* A failed flush leaves the page cache of that file in doubt (Linux may drop the pages
 * it could not write and call them clean): this environment writes no more, and the next
 * open of the store, alone, replays the journal over the base again. */
static int broken(cairn_env *e, int rc) {
    if (!e->wal_err) e->wal_err = rc;
    return rc;
}

/* *out (when given): the header written. */
static int checkpoint(cairn_env *e, uint64_t last, wal_hdr *out) {
    wal_hdr h, old;
    int rc;
    if ((rc = mdb_env_sync(e->env, 1))) return broken(e, rc);
    h.gen = hdr_read(e->walfd, &old) == 0 ? old.gen + 1 : 1;
    h.base = last;
    h.psize = e->wal_psize;
    if ((rc = meta_copy(e->lockfd, e->wal_psize, last, h.meta))) return broken(e, rc);
    if ((rc = preallocate(e->walfd)) || (rc = hdr_write(e->walfd, &h))) return broken(e, rc);
    if (fdatasync(e->walfd) != 0) return broken(e, errno);
    cairn__wal_repin(e); /* writer lock held: the pin sees `last` */
    if (e->wal_pin_id != last) cairn__wal_unpin(e);
    e->wal_pin_gen = h.gen;
    e->wal_dirty = 0;
    e->wal_ckpts++;
    if (out) *out = h;
    return 0;
}

/* Does this process pin a snapshot no newer than the base of header h (read: `have`)? */
static int pinned(const cairn_env *e, int have, const wal_hdr *h) {
    return have && e->wal_pin && e->wal_pin_id <= h->base;
}

/* A pin PIN_STALE_GENS generations old is another process's checkpoints' business no more:
 * each commit is protected by its own process's pin, so dropping it costs this process a
 * checkpoint at its next durable commit, and lets the others' freed pages be reused. */
#define PIN_STALE_GENS 8

static void pin_trim(cairn_env *e, uint64_t gen) {
    if (e->wal_pin && gen >= e->wal_pin_gen + PIN_STALE_GENS) cairn__wal_unpin(e);
}

void cairn__wal_trim(cairn_env *e) {
    wal_hdr h;
    int64_t now;
    if (e->walfd < 0 || e->rdonly || !e->wal_pin) return;
    now = cairn__now_ns();
    if (now - __atomic_load_n(&e->wal_trim_ns, __ATOMIC_RELAXED) < 100000000) return;
    __atomic_store_n(&e->wal_trim_ns, now, __ATOMIC_RELAXED);
    /* the writer lock of this process: no commit of ours is using the pin meanwhile */
    if (pthread_mutex_trylock(&e->wlock) != 0) return;
    pthread_rwlock_rdlock(&e->resize);
    if (hdr_read(e->walfd, &h) == 0) pin_trim(e, h.gen);
    pthread_rwlock_unlock(&e->resize);
    pthread_mutex_unlock(&e->wlock);
}

int cairn__wal_checkpoint(cairn_env *e) {
    MDB_envinfo info;
    if (e->walfd < 0 || e->rdonly) return 0;
    mdb_env_info(e->env, &info);
    return checkpoint(e, (uint64_t)info.me_last_txnid, NULL);
}

/* ---------------------------------------------------------------------------------
 * Commits
 * --------------------------------------------------------------------------------- */
void cairn__wal_begin(cairn_env *e, MDB_txn *txn, int journaled) {
    wal_rec *r = e->wrec;
    if (e->walfd < 0 || e->rdonly) return;
    if (!r) {
        if (!(r = calloc(1, sizeof *r))) return; /* the commit finds no recording: fails */
        r->env = e;
        e->wrec = r;
    }
    r->txn = txn;
    r->b.len = 0;
    r->pend_at = 0;
    r->failed = cairn_buf_reserve(&r->b, REC_HEAD) != 0;
    r->b.len = REC_HEAD;
    r->journaled = journaled;
    g_cur = r;
}

void cairn__wal_abort(cairn_env *e) {
    if (e->wrec) e->wrec->txn = NULL;
    g_cur = NULL;
}

/* The `wal` key: generation, end offset and txn of the last journaled record. */
static void tail_get(cairn_env *e, MDB_txn *txn, uint64_t t[3]) {
    MDB_val v;
    t[0] = t[1] = t[2] = 0;
    if (mdb_get(txn, e->meta, (MDB_val *)&K_WAL, &v) == 0 && v.mv_size == 24)
        for (int i = 0; i < 3; i++) t[i] = cairn__get_le64((const uint8_t *)v.mv_data + 8 * i);
}

static int tail_put(cairn_env *e, MDB_txn *txn, uint64_t gen, uint64_t end, uint64_t id) {
    uint8_t b[24];
    MDB_val v = {24, b};
    cairn__put_le64(b, gen), cairn__put_le64(b + 8, end), cairn__put_le64(b + 16, id);
    return mdb_put(txn, e->meta, (MDB_val *)&K_WAL, &v, 0);
}

/* Does the current generation hold records (as of txn's snapshot)? */
static int has_records(cairn_env *e, MDB_txn *txn, const wal_hdr *h) {
    uint64_t t[3];
    tail_get(e, txn, t);
    return t[0] == h->gen && t[2] > h->base;
}

static int commit_unjournaled(cairn_env *e, MDB_txn *txn) {
    wal_hdr h;
    int rc;
    if (hdr_read(e->walfd, &h) == 0 && has_records(e, txn, &h) &&
        (rc = checkpoint(e, mdb_txn_id(txn) - 1, NULL))) {
        mdb_txn_abort(txn);
        return rc;
    }
    cairn__wal_unpin(e); /* nothing to protect: the journal is empty */
    return mdb_txn_commit(txn);
}

int cairn__wal_commit(cairn_env *e, MDB_txn *txn) {
    wal_rec *r = e->wrec;
    uint64_t id = mdb_txn_id(txn), t[3];
    wal_hdr h;
    off_t at = 0;
    size_t len;
    int rc, have, ok, mine = r && r->txn == txn;
    g_cur = NULL;
    if (r) r->txn = NULL;
    if (e->walfd < 0 || e->rdonly) return mdb_txn_commit(txn);
    if (!mine || !r->journaled) return commit_unjournaled(e, txn);
    settle(r);
    if (r->failed) {
        mdb_txn_abort(txn);
        return ENOMEM;
    }
    have = hdr_read(e->walfd, &h) == 0;
    if (r->b.len == REC_HEAD) /* nothing recorded (at most a database made) */
        return pinned(e, have, &h) ? mdb_txn_commit(txn) : commit_unjournaled(e, txn);
    len = r->b.len + 8;
    if ((off_t)len > WAL_AREA) {
        /* too big for the journal: LMDB's commit, made durable by a checkpoint at once */
        if ((rc = mdb_txn_commit(txn))) return rc;
        return checkpoint(e, id, NULL);
    }
    if ((ok = pinned(e, have, &h))) {
        tail_get(e, txn, t);
        if (t[0] == h.gen && t[2] == id - 1)
            at = (off_t)t[1];
        else if (t[0] != h.gen && h.base == id - 1)
            at = REC_START;
        else
            ok = 0;
    }
    if (!ok || at < REC_START || at + (off_t)len > REC_START + WAL_AREA) {
        if ((rc = checkpoint(e, id - 1, &h))) {
            mdb_txn_abort(txn);
            return rc;
        }
        at = REC_START;
    }
    cairn__put_le32((uint8_t *)r->b.p, REC_MAGIC);
    cairn__put_le32((uint8_t *)r->b.p + 4, (uint32_t)len);
    cairn__put_le64((uint8_t *)r->b.p + 8, h.gen);
    cairn__put_le64((uint8_t *)r->b.p + 16, id);
    {
        uint64_t sum = XXH3_64bits(r->b.p, r->b.len);
        uint8_t s8[8];
        cairn__put_le64(s8, sum);
        if (cairn_buf_append(&r->b, s8, 8)) {
            mdb_txn_abort(txn);
            return ENOMEM;
        }
    }
    if ((rc = pwrite_all(e->walfd, r->b.p, len, at)) || fdatasync(e->walfd) != 0) {
        if (!rc) rc = errno;
        mdb_txn_abort(txn);
        return broken(e, rc); /* the record may be on the disk: only a replay may say */
    }
    if ((rc = tail_put(e, txn, h.gen, (uint64_t)at + len, id))) mdb_txn_abort(txn);
    if (rc || (rc = mdb_txn_commit(txn))) {
        /* durable in the journal but not committed: void it, or a replay would revive it */
        static const uint8_t zero[REC_HEAD];
        if (pwrite_all(e->walfd, zero, sizeof zero, at) != 0 || fdatasync(e->walfd) != 0)
            broken(e, errno);
        return rc;
    }
    e->wal_dirty = 1;
    pin_trim(e, h.gen);
    /* The commit is durable (its record is): a failed checkpoint now fails the writes
     * after it, not this one. */
    if (id - h.base >= CAIRN__WAL_CKPT_COMMITS || at + (off_t)len - REC_START >= WAL_CKPT_BYTES)
        checkpoint(e, id, NULL);
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Recovery
 * --------------------------------------------------------------------------------- */
typedef struct rd {
    const uint8_t *p, *end;
    int bad;
} rd;

static uint32_t rd_u32(rd *r) {
    uint32_t v;
    if (r->end - r->p < 4) return r->bad = 1, 0;
    v = cairn__get_le32(r->p);
    r->p += 4;
    return v;
}

static const uint8_t *rd_bytes(rd *r, size_t n) {
    const uint8_t *q = r->p;
    if ((size_t)(r->end - r->p) < n) return r->bad = 1, NULL;
    r->p += n;
    return q;
}

/* The records of generation h->gen that follow h->base one by one, read into *out one after
 * another; *n: how many, *last: the txn of the last one (h->base when none). */
static int scan(int fd, const wal_hdr *h, cairn_buf *out, size_t *n, uint64_t *last) {
    off_t at = REC_START;
    uint64_t prev = h->base;
    uint8_t head[REC_HEAD];
    *n = 0;
    out->len = 0;
    for (;;) {
        uint32_t len;
        size_t from = out->len;
        if (pread_all(fd, head, REC_HEAD, at)) break;
        len = cairn__get_le32(head + 4);
        if (cairn__get_le32(head) != REC_MAGIC || cairn__get_le64(head + 8) != h->gen ||
            cairn__get_le64(head + 16) != prev + 1 || len < REC_HEAD + 8 ||
            at + (off_t)len > REC_START + WAL_AREA)
            break;
        if (cairn_buf_reserve(out, len)) return ENOMEM;
        if (pread_all(fd, out->p + from, len, at)) break;
        if (cairn__get_le64((uint8_t *)out->p + from + len - 8) !=
            XXH3_64bits(out->p + from, len - 8))
            break;
        out->len += len;
        at += len;
        prev++;
        (*n)++;
    }
    *last = prev;
    return 0;
}

static int replay_ops(MDB_txn *txn, rd *r) {
    MDB_dbi dbi;
    MDB_cursor *c = NULL;
    int rc = 0;
    while (!rc && r->p < r->end) {
        const uint8_t *h = rd_bytes(r, 2), *name;
        char nm[256];
        unsigned flags;
        MDB_val k, d[2];
        if (!h) break;
        name = rd_bytes(r, h[1]);
        flags = rd_u32(r);
        if (r->bad) break;
        memcpy(nm, name, h[1]);
        nm[h[1]] = 0;
        if ((rc = mdb_dbi_open(txn, h[1] ? nm : NULL,
                               (h[1] ? MDB_CREATE : 0) |
                                   (flags &
                                    (MDB_DUPSORT | MDB_DUPFIXED | MDB_INTEGERKEY | MDB_INTEGERDUP |
                                     MDB_REVERSEKEY | MDB_REVERSEDUP)),
                               &dbi)))
            break;
        switch (h[0]) {
        case OP_PUT: {
            unsigned pf = rd_u32(r);
            k.mv_size = rd_u32(r), k.mv_data = (void *)rd_bytes(r, k.mv_size);
            d[0].mv_size = rd_u32(r), d[0].mv_data = (void *)rd_bytes(r, d[0].mv_size);
            if (!r->bad) rc = mdb_put(txn, dbi, &k, d, pf);
            break;
        }
        case OP_MULTI: {
            size_t es, cnt;
            k.mv_size = rd_u32(r), k.mv_data = (void *)rd_bytes(r, k.mv_size);
            es = rd_u32(r), cnt = rd_u32(r);
            d[0].mv_size = es, d[0].mv_data = (void *)rd_bytes(r, es * cnt);
            d[1].mv_size = cnt;
            if (r->bad) break;
            if (!(rc = mdb_cursor_open(txn, dbi, &c))) {
                rc = cnt ? mdb_cursor_put(c, &k, d, MDB_MULTIPLE) : 0;
                mdb_cursor_close(c);
            }
            break;
        }
        case OP_DEL: {
            uint32_t dl;
            k.mv_size = rd_u32(r), k.mv_data = (void *)rd_bytes(r, k.mv_size);
            dl = rd_u32(r);
            if (dl) d[0].mv_size = dl - 1, d[0].mv_data = (void *)rd_bytes(r, dl - 1);
            if (!r->bad) rc = mdb_del(txn, dbi, &k, dl ? d : NULL);
            break;
        }
        case OP_DROP: {
            const uint8_t *del = rd_bytes(r, 1);
            if (del) rc = mdb_drop(txn, dbi, *del);
            break;
        }
        default: r->bad = 1;
        }
    }
    return rc ? rc : r->bad ? MDB_CORRUPTED : 0;
}

/* data.mdb becomes the base again: its meta page over both of data.mdb's. */
static int restore_base(const char *data, const wal_hdr *h) {
    uint8_t m[META_COPY], t[8];
    struct stat st;
    int fd = open(data, O_RDWR | O_CLOEXEC), err = 0, i, newer = 0;
    if (fd < 0) return errno;
    /* the base was flushed whole: a file without its pages was cut since, and one whose
     * meta pages are both older than the base is not the file the journal was written for
     * (data.mdb put back from elsewhere beside this wal) */
    for (i = 0; i < 2; i++) /* a meta page cut off: the size check below says it */
        if (pread_all(fd, t, 8, (off_t)i * h->psize + META_TXNID_AT) == 0 &&
            cairn__get_le64(t) >= cairn__get_le64(h->meta + META_TXNID_AT))
            newer = 1;
    if (fstat(fd, &st) != 0)
        err = errno;
    else if (!newer)
        err = WAL_OLDER;
    else if ((uint64_t)st.st_size < (cairn__get_le64(h->meta + META_LASTPG_AT) + 1) * h->psize)
        err = WAL_CUT;
    for (i = 0; !err && i < 2; i++) {
        memcpy(m, h->meta, META_COPY);
        cairn__put_le64(m, (uint64_t)i); /* the page's own number */
        err = pwrite_all(fd, m, META_COPY, (off_t)i * h->psize);
    }
    if (!err && fdatasync(fd) != 0) err = errno;
    close(fd);
    return err;
}

static int replay(const char *path, const char *data, int walfd, const wal_hdr *h,
                  const cairn_buf *recs, size_t n) {
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_envinfo info;
    struct stat st;
    wal_hdr nh;
    size_t map;
    int rc, fd;
    if ((rc = restore_base(data, h))) return rc;
    if (stat(data, &st) != 0) return errno;
    for (map = (size_t)st.st_size * 2 + (64u << 20);; map *= 2) {
        size_t off = 0, i;
        if ((rc = mdb_env_create(&env))) return rc;
        mdb_env_set_maxdbs(env, 32);
        mdb_env_set_mapsize(env, map);
        if ((rc = mdb_env_open(env, path, MDB_NOTLS, 0644)) ||
            (rc = mdb_txn_begin(env, NULL, 0, &txn)))
            break;
        for (i = 0; !rc && i < n; i++) {
            uint32_t len = cairn__get_le32((const uint8_t *)recs->p + off + 4);
            rd r = {(const uint8_t *)recs->p + off + REC_HEAD,
                    (const uint8_t *)recs->p + off + len - 8, 0};
            rc = replay_ops(txn, &r);
            off += len;
        }
        if (rc == MDB_MAP_FULL) {
            mdb_txn_abort(txn), txn = NULL;
            mdb_env_close(env), env = NULL;
            continue;
        }
        if (rc) break;
        rc = mdb_txn_commit(txn), txn = NULL; /* flushed: the env syncs */
        break;
    }
    if (txn) mdb_txn_abort(txn);
    if (rc) {
        if (env) mdb_env_close(env);
        return rc;
    }
    /* a new generation, empty, based on what data.mdb now durably holds */
    mdb_env_info(env, &info);
    nh.gen = h->gen + 1;
    nh.base = (uint64_t)info.me_last_txnid;
    nh.psize = h->psize;
    mdb_env_close(env);
    if ((fd = open(data, O_RDONLY | O_CLOEXEC)) < 0) return errno;
    rc = meta_copy(fd, h->psize, nh.base, nh.meta);
    close(fd);
    if (rc || (rc = hdr_write(walfd, &nh))) return rc;
    return fdatasync(walfd) != 0 ? errno : 0;
}

static int recover(const char *path, int fd, int writable) {
    char data[PATH_MAX];
    wal_hdr h;
    cairn_buf recs = {0};
    size_t n;
    uint64_t last;
    int rc;
    if (hdr_read(fd, &h)) return CAIRN_OK; /* new, or never checkpointed: nothing in it */
    if (h.psize < 512 || h.psize > 65536)
        return cairn__fail(CAIRN_ECORRUPT, "%s/wal: page size %u in its header", path, h.psize);
    if ((rc = scan(fd, &h, &recs, &n, &last))) {
        cairn_buf_free(&recs);
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    }
    if (n == 0) {
        cairn_buf_free(&recs);
        return CAIRN_OK;
    }
    if (!writable) {
        cairn_buf_free(&recs);
        return cairn__fail(CAIRN_EREADONLY,
                           "%s: the journal (wal) holds %zu commits that data.mdb may lack "
                           "(the store was not closed); open it once where it is writable",
                           path, n);
    }
    snprintf(data, sizeof data, "%s/data.mdb", path);
    rc = replay(path, data, fd, &h, &recs, n);
    cairn_buf_free(&recs);
    if (rc == WAL_CUT)
        return cairn__fail(CAIRN_ECORRUPT,
                           "%s: data.mdb is shorter than the journal's base (txn %llu) needs: "
                           "it was cut short; restore it from a backup",
                           path, (unsigned long long)h.base);
    if (rc == WAL_OLDER)
        return cairn__fail(CAIRN_ECORRUPT,
                           "%s: the journal (wal) holds commits after txn %llu, but data.mdb "
                           "is older than that: was data.mdb put back from a copy? Restore a "
                           "whole directory (a backup has no wal), or move wal away to open "
                           "data.mdb as it is",
                           path, (unsigned long long)h.base);
    if (rc)
        return cairn__fail(
            rc == MDB_CORRUPTED || rc == MDB_INVALID || rc == MDB_PAGE_NOTFOUND ? CAIRN_ECORRUPT
                : rc == ENOMEM                                                  ? CAIRN_ENOMEM
                                                                                : CAIRN_EIO,
            "%s: replaying the journal (txns %llu to %llu): %s%s", path,
            (unsigned long long)h.base + 1, (unsigned long long)last, mdb_strerror(rc),
            rc == ENOSPC || rc == EIO ? " (is the file system full?)" : "");
    return CAIRN_OK;
}

int cairn__wal_open(cairn_env *e, const char *path, int writable, int create) {
    char p[PATH_MAX];
    int fd, alone, rc;
    e->walfd = -1;
    snprintf(p, sizeof p, "%s/wal", path);
    fd = open(p, (writable ? O_RDWR : O_RDONLY) | (create ? O_CREAT : 0) | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (errno == ENOENT) return CAIRN_OK; /* no journal: nothing to replay */
        return cairn__fail(errno == EACCES ? CAIRN_EREADONLY : CAIRN_EIO, "%s: %s", p,
                           strerror(errno));
    }
    if (writable && wal_lock(fd, F_WRLCK, 0) == 0) {
        alone = 1;
    } else if ((rc = wal_lock(fd, F_RDLCK, 1))) {
        close(fd);
        return cairn__fail(CAIRN_EIO, "%s: lock: %s", p, strerror(rc));
    } else {
        alone = !writable && !wal_shared(fd);
    }
    if (alone && (rc = recover(path, fd, writable))) {
        close(fd);
        return rc;
    }
    if (writable && alone && (rc = wal_lock(fd, F_RDLCK, 0))) {
        close(fd);
        return cairn__fail(CAIRN_EIO, "%s: lock: %s", p, strerror(rc));
    }
    e->walfd = fd;
    return CAIRN_OK;
}

void cairn__wal_close(cairn_env *e) {
    int i;
    if (e->env) cairn__wal_unpin(e);
    if (e->walfd >= 0) close(e->walfd);
    e->walfd = -1;
    if (e->wrec) cairn_buf_free(&e->wrec->b), free(e->wrec);
    e->wrec = NULL;
    for (i = 0; i < CAIRN__MAXDBS; i++) free(e->dbname[i]), e->dbname[i] = NULL;
}
