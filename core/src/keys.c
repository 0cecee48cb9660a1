/*
 * keys.c -- the per-subject keys of crypto-shredding (spec 6) and the AEAD around them.
 *
 * Keys never enter LMDB: its copy-on-write leaves freed pages holding old bytes for as long
 * as nothing reuses them, so a key written there could outlive its forgetting.  They live in
 * the side file `keys` beside data.mdb, in fixed 32-byte slots addressed by key id (slot 0
 * is the file's header), written with pwrite and, when forgotten, overwritten in place with
 * zeros and flushed.  LMDB holds only what points at them:
 *   meta "keys"  u32 BE: the last key id allocated (a counter; an aborted txn does not move
 *                it, so the next allocation reuses the slot it wrote)
 *   subjects     subject key (as a stream name's: <= 480 B inline, else 480 B + XXH3-128)
 *                -> u32 BE current key id, full subject (absent: no key, or forgotten)
 *   kpend        u32 BE key id -> empty: forgotten in LMDB, slot maybe not zeroed yet
 * Forgetting commits the LMDB side first (the subject's entry deleted, its key id put in
 * kpend, the $lifecycle event), then zeroes the slot, flushes it and deletes the kpend
 * entry; a crash in between leaves the kpend entry, which the next writable open finishes.
 * A read treats a key id in kpend, or an all-zero slot, as forgotten.
 *
 * Every process maps the file MAP_SHARED read-only over a fixed reservation of address
 * space (KEYS_MAP), so a key another process wrote is seen at once: a slot past the size
 * last seen only costs an fstat.  Writes to the file happen under the store's writer lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage.h"

#define SLOT CAIRN_KEY_BYTES
#define KEYS_MAP ((size_t)1 << 30) /* address space: key ids below 2^25 */
#define KEYS_MAX ((uint32_t)(KEYS_MAP / SLOT) - 1)
#define KEYS_MAGIC "cairn-keys\0\0" /* 12 bytes, then u32 LE version 1, u32 LE slot size */

static const MDB_val K_KEYS = {4, (void *)"keys"};

/* ---------------------------------------------------------------------------------
 * The file
 * --------------------------------------------------------------------------------- */
static int keys_header_ok(const uint8_t *h) {
    return memcmp(h, KEYS_MAGIC, 12) == 0 && cairn__get_le32(h + 12) == 1 &&
        cairn__get_le32(h + 16) == SLOT;
}

int cairn__keys_open(cairn_env *e, const char *path) {
    char file[PATH_MAX];
    struct stat st;
    uint8_t h[SLOT];
    void *p;
    int fd;

    e->keyfd = -1, e->kmap = NULL, e->ksize = 0;
    if (sodium_init() < 0) return cairn__fail(CAIRN_EINTERNAL, "libsodium failed to initialise");
    snprintf(file, sizeof file, "%s/keys", path);
    fd = open(file, e->rdonly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == ENOENT && e->rdonly) return CAIRN_OK; /* no key was ever made */
        return cairn__fail(errno == EACCES ? CAIRN_EREADONLY : CAIRN_EIO, "%s: %s", file,
                           strerror(errno));
    }
    if (fstat(fd, &st) != 0) goto io;
    if (st.st_size < SLOT) {
        /* new, or a creation cut short before its header: (re)write the header; two
         * processes racing here write the same bytes */
        if (e->rdonly) {
            close(fd);
            return CAIRN_OK;
        }
        memset(h, 0, sizeof h);
        memcpy(h, KEYS_MAGIC, 12);
        cairn__put_le32(h + 12, 1);
        cairn__put_le32(h + 16, SLOT);
        if (pwrite(fd, h, SLOT, 0) != SLOT || fdatasync(fd) != 0) goto io;
    } else if (pread(fd, h, SLOT, 0) != SLOT) {
        goto io;
    } else if (!keys_header_ok(h)) {
        close(fd);
        return cairn__fail(CAIRN_ECORRUPT, "%s: not a cairn keys file", file);
    }
    p = mmap(NULL, KEYS_MAP, PROT_READ, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) goto io;
    e->kmap = p;
    e->keyfd = fd;
    if (fstat(fd, &st) == 0) e->ksize = (size_t)st.st_size;
    return CAIRN_OK;
io : {
    int err = errno;
    close(fd);
    return cairn__fail(CAIRN_EIO, "%s: %s", file, strerror(err));
}
}

void cairn__keys_close(cairn_env *e) {
    if (e->kmap) munmap(e->kmap, KEYS_MAP);
    if (e->keyfd >= 0) close(e->keyfd);
    e->kmap = NULL, e->keyfd = -1;
}

/* Copies slot `id` out of the mapping; *zero: it holds only zeros (forgotten).  A slot past
 * the end of the file (as fstat sees it now) is damage: the id was committed, so its key
 * was written before. */
static int slot_read(cairn_env *e, uint32_t id, uint8_t key[SLOT], int *zero) {
    size_t end = ((size_t)id + 1) * SLOT;
    uint8_t acc = 0;
    if (!e->kmap || id == 0 || id > KEYS_MAX)
        return cairn__fail(CAIRN_ECORRUPT, "key %u: no such key in the keys file", id);
    if (end > __atomic_load_n(&e->ksize, __ATOMIC_ACQUIRE)) {
        struct stat st;
        if (fstat(e->keyfd, &st) != 0)
            return cairn__fail(CAIRN_EIO, "%s/keys: %s", e->path, strerror(errno));
        __atomic_store_n(&e->ksize, (size_t)st.st_size, __ATOMIC_RELEASE);
        if (end > (size_t)st.st_size)
            return cairn__fail(CAIRN_ECORRUPT,
                               "key %u is past the end of %s/keys (the file was cut short)", id,
                               e->path);
    }
    memcpy(key, e->kmap + (size_t)id * SLOT, SLOT);
    for (size_t i = 0; i < SLOT; i++) acc |= key[i];
    *zero = acc == 0;
    return CAIRN_OK;
}

static int slot_write(cairn_env *e, uint32_t id, const uint8_t key[SLOT]) {
    size_t end = ((size_t)id + 1) * SLOT;
    if (e->keyfd < 0 || e->rdonly) return cairn__fail(CAIRN_EREADONLY, "keys file not writable");
    if (pwrite(e->keyfd, key, SLOT, (off_t)id * SLOT) != SLOT)
        return cairn__fail(CAIRN_EIO, "%s/keys: write: %s", e->path, strerror(errno));
    if (end > __atomic_load_n(&e->ksize, __ATOMIC_ACQUIRE))
        __atomic_store_n(&e->ksize, end, __ATOMIC_RELEASE);
    return CAIRN_OK;
}

int cairn__keys_sync(cairn_env *e) {
    if (e->keyfd >= 0 && !e->rdonly && fdatasync(e->keyfd) != 0)
        return cairn__fail(CAIRN_EIO, "%s/keys: sync: %s", e->path, strerror(errno));
    return CAIRN_OK;
}

/* A backup's copy of the file (called once the LMDB snapshot is copied: every key that
 * snapshot refers to was written before it committed).  Slots allocated since are
 * referenced by nothing in the copy, whose counter reuses them; slots zeroed since stay
 * zero, so a backup never brings a forgotten key back. */
int cairn__keys_backup(cairn_env *e, const char *dest) {
    char file[PATH_MAX];
    uint8_t buf[65536];
    off_t at = 0;
    ssize_t n;
    int fd, rc = CAIRN_OK;
    if (e->keyfd < 0) return CAIRN_OK;
    if (snprintf(file, sizeof file, "%s/keys", dest) >= (int)sizeof file)
        return cairn__fail(CAIRN_EINVAL, "dest: path too long");
    if ((fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
        return cairn__fail(CAIRN_EIO, "dest: %s: %s", file, strerror(errno));
    while ((n = pread(e->keyfd, buf, sizeof buf, at)) > 0) {
        if (write(fd, buf, (size_t)n) != n) break;
        at += n;
    }
    if (n != 0 || fsync(fd) != 0)
        rc = cairn__fail(CAIRN_EIO, "backup: %s: %s", file, strerror(errno));
    sodium_memzero(buf, sizeof buf);
    if (close(fd) != 0 && rc == CAIRN_OK)
        rc = cairn__fail(CAIRN_EIO, "backup: close %s: %s", file, strerror(errno));
    if (rc) unlink(file);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Subjects (inside a write txn)
 * --------------------------------------------------------------------------------- */
/* The subject's current key id (0: none). */
static int subject_get(cairn_env *e, MDB_txn *txn, const void *subj, size_t len, uint32_t *id) {
    uint8_t kb[CAIRN_STREAM_KEY_MAX];
    MDB_val k, v;
    int rc;
    *id = 0;
    if (!e->subjects) return CAIRN_OK; /* an older store opened read-only: no subject yet */
    k.mv_size = cairn__stream_key(subj, len, kb), k.mv_data = kb;
    rc = mdb_get(txn, e->subjects, &k, &v);
    if (rc == MDB_NOTFOUND) return CAIRN_OK;
    if (rc) return cairn__mdb_fail(rc, "read subjects");
    if (v.mv_size != 4 + len || memcmp((uint8_t *)v.mv_data + 4, subj, len))
        return cairn__fail(CAIRN_ECORRUPT, "subjects: an entry holds another subject");
    *id = cairn__get_be32(v.mv_data);
    return CAIRN_OK;
}

int cairn__key_for_subject(cairn_env *e, MDB_txn *txn, const void *subj, size_t len, int create,
                           uint32_t *id, uint8_t key[CAIRN_KEY_BYTES], int *fresh) {
    uint8_t kb[CAIRN_STREAM_KEY_MAX], cb[4];
    MDB_val k, v, ck = K_KEYS, cv = {4, cb};
    uint32_t last = 0;
    int rc, zero;

    *fresh = 0;
    if ((rc = subject_get(e, txn, subj, len, id))) return rc;
    if (*id) {
        if ((rc = slot_read(e, *id, key, &zero))) return rc;
        if (!zero) return CAIRN_OK;
        /* an entry whose slot is zero cannot be: forget deletes the entry first */
        return cairn__fail(CAIRN_ECORRUPT, "key %u of a live subject is zeroed", *id);
    }
    if (!create) return CAIRN_OK;
    if (!e->subjects || !e->kpend || e->keyfd < 0)
        return cairn__fail(CAIRN_EBUSY,
                           "subject: this process opened the store read-only "
                           "first; open it read-write in a new process to "
                           "encrypt");
    rc = mdb_get(txn, e->meta, &ck, &cv);
    if (rc == 0 && cv.mv_size == 4)
        last = cairn__get_be32(cv.mv_data);
    else if (rc == 0)
        return cairn__fail(CAIRN_ECORRUPT, "corrupt meta entry (keys)");
    else if (rc != MDB_NOTFOUND)
        return cairn__mdb_fail(rc, "read meta");
    if (last >= KEYS_MAX)
        return cairn__fail(CAIRN_EINVAL, "subject: the store holds %u keys, the most it can",
                           KEYS_MAX);
    *id = last + 1;
    randombytes_buf(key, CAIRN_KEY_BYTES);
    if ((rc = slot_write(e, *id, key))) return rc;
    cairn__put_be32(cb, *id);
    cv.mv_size = 4, cv.mv_data = cb;
    if ((rc = mdb_put(txn, e->meta, &ck, &cv, 0))) goto mdb;
    k.mv_size = cairn__stream_key(subj, len, kb), k.mv_data = kb;
    v.mv_size = 4 + len, v.mv_data = NULL;
    if ((rc = mdb_put(txn, e->subjects, &k, &v, MDB_RESERVE))) goto mdb;
    cairn__put_be32(v.mv_data, *id);
    memcpy((uint8_t *)v.mv_data + 4, subj, len);
    *fresh = 1;
    return CAIRN_OK;
mdb:
    return rc == MDB_MAP_FULL ? CAIRN__EMAPFULL : cairn__mdb_fail(rc, "write subjects");
}

int cairn__subject_forget(cairn_env *e, MDB_txn *txn, const void *subj, size_t len, uint32_t *id) {
    uint8_t kb[CAIRN_STREAM_KEY_MAX], ib[4];
    MDB_val k, v = {0, (void *)""}, ik = {4, ib};
    int rc;
    if ((rc = subject_get(e, txn, subj, len, id)) || !*id) return rc;
    k.mv_size = cairn__stream_key(subj, len, kb), k.mv_data = kb;
    if ((rc = mdb_del(txn, e->subjects, &k, NULL))) goto mdb;
    cairn__put_be32(ib, *id);
    if ((rc = mdb_put(txn, e->kpend, &ik, &v, 0))) goto mdb;
    return CAIRN_OK;
mdb:
    return rc == MDB_MAP_FULL ? CAIRN__EMAPFULL : cairn__mdb_fail(rc, "forget");
}

/* After the commit that forgot them: zero the slots, flush, then drop the kpend entries
 * (with no sync of their own: one lost comes back at an open, which zeroes it again). */
static int zero_body(cairn_wtxn *w, void *ctx) {
    cairn_env *e = ctx;
    MDB_cursor *c;
    MDB_val k, v;
    static const uint8_t zeros[SLOT];
    int rc, any = 0;
    if ((rc = mdb_cursor_open(w->txn, e->kpend, &c))) return cairn__mdb_fail(rc, "read kpend");
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0) {
        uint32_t id = k.mv_size == 4 ? cairn__get_be32(k.mv_data) : 0;
        if (id && id <= KEYS_MAX && e->keyfd >= 0) {
            if ((rc = slot_write(e, id, zeros))) break;
            any = 1;
        }
        if ((rc = mdb_cursor_del(c, 0))) break;
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) rc = CAIRN_OK;
    if (rc > 0) return rc == MDB_MAP_FULL ? CAIRN__EMAPFULL : cairn__mdb_fail(rc, "zero keys");
    if (rc) return rc;
    return any ? cairn__keys_sync(e) : CAIRN_OK; /* before kpend forgets them */
}

int cairn__keys_zero_pending(cairn_env *e) {
    MDB_txn *txn;
    MDB_stat st;
    int rc;
    if (e->rdonly || !e->kpend) return CAIRN_OK;
    /* most opens find nothing: look without the writer lock first */
    if ((rc = cairn__read_begin(e, &txn))) return rc;
    rc = mdb_stat(txn, e->kpend, &st);
    cairn__read_end(e, txn);
    if (rc) return cairn__mdb_fail(rc, "read kpend");
    if (!st.ms_entries) return CAIRN_OK;
    return cairn__write_txn(e, CAIRN_DURABLE_NONE, zero_body, e);
}

/* ---------------------------------------------------------------------------------
 * Reading
 * --------------------------------------------------------------------------------- */
int cairn__key_forgotten(cairn_env *e, MDB_txn *txn, uint32_t id, int *forgotten) {
    uint8_t ib[4];
    MDB_val k = {4, ib}, v;
    int rc;
    *forgotten = 0;
    if (!e->kpend) return CAIRN_OK;
    cairn__put_be32(ib, id);
    rc = mdb_get(txn, e->kpend, &k, &v);
    if (rc == 0) *forgotten = 1;
    return rc == 0 || rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "read kpend");
}

int cairn__key_current(cairn_env *e, MDB_txn *txn, const void *subj, size_t len,
                       uint8_t key[CAIRN_KEY_BYTES], int *found) {
    uint32_t id;
    int rc, zero = 0, gone;
    *found = 0;
    if ((rc = subject_get(e, txn, subj, len, &id)) || !id) return rc;
    if ((rc = cairn__key_forgotten(e, txn, id, &gone)) || gone) return rc;
    if ((rc = slot_read(e, id, key, &zero))) return rc;
    if (zero) {
        sodium_memzero(key, CAIRN_KEY_BYTES);
        return CAIRN_OK;
    }
    *found = 1;
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * AEAD: XChaCha20-Poly1305 (IETF).  Stored data = nonce (24) || ciphertext || tag (16);
 * associated data = event id (16) || position u64 LE || key id u32 LE, so a ciphertext
 * moved to another record does not open.
 * --------------------------------------------------------------------------------- */
static void aead_ad(uint8_t ad[28], const uint8_t id[16], uint64_t position, uint32_t key_id) {
    memcpy(ad, id, 16);
    cairn__put_le64(ad + 16, position);
    cairn__put_le32(ad + 24, key_id);
}

void cairn__aead_seal(uint8_t *out, const void *plain, size_t len,
                      const uint8_t key[CAIRN_KEY_BYTES], const uint8_t id[16], uint64_t position,
                      uint32_t key_id) {
    uint8_t ad[28];
    unsigned long long clen;
    aead_ad(ad, id, position, key_id);
    randombytes_buf(out, CAIRN_AEAD_NONCE);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + CAIRN_AEAD_NONCE, &clen, plain, len, ad,
                                               sizeof ad, NULL, out, key);
}

int cairn__aead_open(uint8_t *out, const uint8_t *sealed, size_t len,
                     const uint8_t key[CAIRN_KEY_BYTES], const uint8_t id[16], uint64_t position,
                     uint32_t key_id) {
    uint8_t ad[28];
    unsigned long long mlen;
    if (len < CAIRN_AEAD_OVERHEAD) return -1;
    aead_ad(ad, id, position, key_id);
    return crypto_aead_xchacha20poly1305_ietf_decrypt(out, &mlen, NULL, sealed + CAIRN_AEAD_NONCE,
                                                      len - CAIRN_AEAD_NONCE, ad, sizeof ad, sealed,
                                                      key);
}

/* Opens an encrypted event's data into `out` (len - CAIRN_AEAD_OVERHEAD bytes; `out` may be
 * sealed + CAIRN_AEAD_NONCE, opening in place).  pending: the txn found key_id in kpend.
 * *forgotten: the key is gone (nothing written to out). */
/* The subkey of the last (key, nonce prefix) this thread opened with: a write's events share
 * both (see cairn__sealer_init), so a read derives it once per write and subject.  It is
 * used only after the key itself was read from its slot and found equal, so a forgotten
 * (zeroed) key is never opened with it. */
static __thread struct {
    uint8_t key[SLOT], prefix[16], subkey[SLOT];
    int valid;
} t_sub;

static int open_cached(uint8_t *out, const uint8_t *sealed, size_t len, const uint8_t key[SLOT],
                       const uint8_t id[16], uint64_t position, uint32_t key_id) {
    uint8_t ad[28], n12[12] = {0};
    unsigned long long mlen;
    if (len < CAIRN_AEAD_OVERHEAD) return -1;
    if (!t_sub.valid || sodium_memcmp(t_sub.key, key, SLOT) || memcmp(t_sub.prefix, sealed, 16)) {
        memcpy(t_sub.key, key, SLOT);
        memcpy(t_sub.prefix, sealed, 16);
        crypto_core_hchacha20(t_sub.subkey, sealed, key, NULL);
        t_sub.valid = 1;
    }
    memcpy(n12 + 4, sealed + 16, 8);
    aead_ad(ad, id, position, key_id);
    return crypto_aead_chacha20poly1305_ietf_decrypt(out, &mlen, NULL, sealed + CAIRN_AEAD_NONCE,
                                                     len - CAIRN_AEAD_NONCE, ad, sizeof ad, n12,
                                                     t_sub.subkey);
}

int cairn__key_open_data(cairn_env *e, uint32_t key_id, int pending, const uint8_t *sealed,
                         size_t len, const uint8_t id[16], uint64_t position, uint8_t *out,
                         int *forgotten) {
    uint8_t key[SLOT];
    int rc, zero;
    *forgotten = 0;
    if (pending) {
        *forgotten = 1;
        return CAIRN_OK;
    }
    if ((rc = slot_read(e, key_id, key, &zero))) return rc;
    if (!zero && open_cached(out, sealed, len, key, id, position, key_id) == 0) {
        sodium_memzero(key, sizeof key);
        return CAIRN_OK;
    }
    /* a slot being zeroed while it was read fails to open: look again */
    if (!zero && (rc = slot_read(e, key_id, key, &zero)) == CAIRN_OK && !zero) {
        sodium_memzero(key, sizeof key);
        cairn__err()->position = position;
        return cairn__fail(CAIRN_ECORRUPT,
                           "corrupt record at position %llu: its data does not decrypt",
                           (unsigned long long)position);
    }
    sodium_memzero(key, sizeof key);
    if (rc) return rc;
    *forgotten = 1;
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * Events: what the read paths call on a decoded event
 * --------------------------------------------------------------------------------- */
int cairn__keys_pending_any(cairn_env *e, MDB_txn *txn, int *any) {
    MDB_stat st;
    int rc;
    *any = 0;
    if (!e->kpend) return CAIRN_OK;
    if ((rc = mdb_stat(txn, e->kpend, &st))) return cairn__mdb_fail(rc, "read kpend");
    *any = st.ms_entries != 0;
    return CAIRN_OK;
}

int cairn__event_pending(cairn_env *e, MDB_txn *txn, const cairn_event *ev, int *pending) {
    *pending = 0;
    if (!(ev->flags & CAIRN_EVENT_ENCRYPTED)) return CAIRN_OK;
    return cairn__key_forgotten(e, txn, ev->key_id, pending);
}

int cairn__event_reveal(cairn_env *e, cairn_event *ev, int pending, uint8_t *out) {
    const uint8_t *sealed = ev->data.ptr;
    int rc, forgotten;
    if (!(ev->flags & CAIRN_EVENT_ENCRYPTED)) return CAIRN_OK;
    if (ev->data.len < CAIRN_AEAD_OVERHEAD) {
        cairn__err()->position = ev->position;
        return cairn__fail(CAIRN_ECORRUPT, "corrupt record at position %llu: sealed data too short",
                           (unsigned long long)ev->position);
    }
    if (!out) out = (uint8_t *)(uintptr_t)sealed + CAIRN_AEAD_NONCE; /* in place */
    if ((rc = cairn__key_open_data(e, ev->key_id, pending, sealed, ev->data.len, ev->id,
                                   ev->position, out, &forgotten)))
        return rc;
    if (forgotten) {
        ev->forgotten = 1;
        ev->data.ptr = NULL, ev->data.len = 0;
    } else {
        ev->data.ptr = out, ev->data.len -= CAIRN_AEAD_OVERHEAD;
    }
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * The public calls
 * --------------------------------------------------------------------------------- */
typedef struct forget_args {
    cairn_store *s;
    const char *subj;
    size_t len;
    const char *json; /* the $SubjectForgotten event's data */
    size_t json_len;
    uint64_t position;
} forget_args;

/* One commit: the key id to kpend, the subject without a key, snapshots dropped (the
 * hook), the $lifecycle event. */
static int forget_body(cairn_wtxn *w, void *ctx) {
    forget_args *a = ctx;
    cairn_env *e = a->s->env;
    const cairn_hooks *hk = e->hooks;
    uint32_t id;
    int rc;
    if ((rc = cairn__subject_forget(e, w->txn, a->subj, a->len, &id))) return rc;
    if (hk && hk->after_forget && (rc = hk->after_forget(a->s, w->txn))) return rc;
    if ((rc = cairn__lifecycle_append(a->s, w->txn, "$SubjectForgotten", a->json, a->json_len,
                                      &a->position)))
        return rc;
    w->notify = 1, w->head = a->position;
    return CAIRN_OK;
}

int cairn_forget(cairn_store *s, const char *subject, size_t len, uint64_t *position) {
    forget_args a;
    json_t *o;
    char *json;
    int rc;
    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!subject) return cairn__fail(CAIRN_EINVAL, "subject: NULL");
    if ((rc = cairn__check_subject(subject, len))) return rc;
    if (s->readonly) return cairn__fail(CAIRN_EREADONLY, "store is opened read-only");
    if (!s->env->subjects || !s->env->kpend || s->env->keyfd < 0)
        return cairn__fail(CAIRN_EBUSY,
                           "forget: this process opened the store read-only "
                           "first; open it read-write in a new process");
    if (!(o = json_pack("{s:s%}", "subject", subject, len)) ||
        !(json = json_dumps(o, JSON_COMPACT))) {
        json_decref(o);
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    }
    json_decref(o);
    a.s = s, a.subj = subject, a.len = len, a.json = json, a.json_len = strlen(json);
    a.position = 0;
    /* always durable: the zeroing that follows is, and an OS crash must not leave a zeroed
     * key whose forgetting LMDB lost */
    rc = cairn__write_txn(s->env, CAIRN_DURABLE_FULL, forget_body, &a);
    free(json);
    if (rc) return rc;
    if (position) *position = a.position;
    sodium_memzero(&t_sub, sizeof t_sub); /* this thread's copy may be of that key */
    /* committed: now the slot (a failure here is finished by the next writable open, and
     * reads already treat the key as forgotten) */
    return cairn__keys_zero_pending(s->env);
}

int cairn__subject_key(cairn_store *s, const char *subject, size_t len, uint8_t key[32],
                       int *found) {
    MDB_txn *txn;
    int rc;
    cairn__clear_error();
    *found = 0;
    if ((rc = cairn__store_check(s))) return rc;
    if (!subject) return cairn__fail(CAIRN_EINVAL, "subject: NULL");
    if ((rc = cairn__check_subject(subject, len))) return rc;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    rc = cairn__key_current(s->env, txn, subject, len, key, found);
    cairn__read_end(s->env, txn);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * Sealing events as they are written (append.c)
 * --------------------------------------------------------------------------------- */
/* XChaCha20-Poly1305 is HChaCha20(key, nonce[0..16]) as a subkey, then ChaCha20-Poly1305
 * (IETF) with nonce 0^4 || nonce[16..24].  A write's nonces share a random 16-byte prefix
 * (drawn once per write: a write run again after a full map draws another) and end with
 * the event's position, unique in the write: so the subkey is computed once per write and
 * subject, and no random bytes are drawn per event.  What is stored is the standard
 * construction (cairn__aead_open, libsodium's own xchacha20poly1305_ietf, opens it). */
void cairn__sealer_init(cairn_sealer *sl) {
    memset(sl, 0, sizeof *sl);
    randombytes_buf(sl->prefix, sizeof sl->prefix);
}

void cairn__sealer_free(cairn_sealer *sl) {
    sodium_memzero(sl->key, sizeof sl->key);
    sodium_memzero(sl->subkey, sizeof sl->subkey);
    cairn_buf_free(&sl->buf);
    free(sl->subj);
    memset(sl, 0, sizeof *sl);
}

int cairn__seal_event(cairn_env *e, MDB_txn *txn, cairn_sealer *sl, const cairn_event_in *ev,
                      const uint8_t id[16], uint64_t position, cairn_event_in *out,
                      uint32_t *key_id) {
    const cairn_slice *sj = &ev->subject;
    int rc, fresh;
    /* one subject's events often come together: its key is looked up once per write */
    if (!sl->id || sl->subj_len != sj->len || memcmp(sl->subj, sj->ptr, sj->len)) {
        char *copy = realloc(sl->subj, sj->len ? sj->len : 1);
        if (!copy) return cairn__fail(CAIRN_ENOMEM, "out of memory");
        sl->subj = copy, sl->id = 0;
        if ((rc = cairn__key_for_subject(e, txn, sj->ptr, sj->len, 1, &sl->id, sl->key, &fresh))) {
            sl->id = 0;
            return rc;
        }
        memcpy(sl->subj, sj->ptr, sj->len);
        sl->subj_len = sj->len;
        sl->fresh |= fresh;
        crypto_core_hchacha20(sl->subkey, sl->prefix, sl->key, NULL);
    }
    sl->buf.len = 0;
    if (cairn_buf_reserve(&sl->buf, ev->data.len + CAIRN_AEAD_OVERHEAD))
        return cairn__fail(CAIRN_ENOMEM, "out of memory");
    {
        uint8_t *dst = (uint8_t *)sl->buf.p, n12[12] = {0}, ad[28];
        unsigned long long clen;
        memcpy(dst, sl->prefix, 16);
        cairn__put_le64(dst + 16, position);
        memcpy(n12 + 4, dst + 16, 8);
        aead_ad(ad, id, position, sl->id);
        crypto_aead_chacha20poly1305_ietf_encrypt(dst + CAIRN_AEAD_NONCE, &clen, ev->data.ptr,
                                                  ev->data.len, ad, sizeof ad, NULL, n12,
                                                  sl->subkey);
    }
    *out = *ev;
    out->data.ptr = sl->buf.p;
    out->data.len = ev->data.len + CAIRN_AEAD_OVERHEAD;
    out->flags |= CAIRN_EVENT_ENCRYPTED;
    *key_id = sl->id;
    return CAIRN_OK;
}

int cairn__sealer_finish(cairn_env *e, cairn_sealer *sl, cairn_durability d) {
    /* a key new in this write is on disk before the commit that refers to it is */
    if (sl->fresh && d != CAIRN_DURABLE_NONE) return cairn__keys_sync(e);
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * verify (verify.c): what the reads need of the keys file.  A live subject (its entry in
 * `subjects`) has a key in its slot: present, not zeroed (forget deletes the entry before it
 * zeroes the slot), not in kpend; a sealed event's key id names a slot of the file, unless
 * it is being forgotten (kpend: reads do not look at the slot).  A slot of a forgotten
 * subject is zeros, which is what it should be.
 * --------------------------------------------------------------------------------- */
#define VERIFY_CHUNK 4096 /* subjects checked per read transaction */

/* Slot `id` lies inside the file: CAIRN_OK, or CAIRN_ECORRUPT "<who>: ...; <what>" (position
 * 0). */
static int slot_inside(cairn_env *e, uint32_t id, const char *who, const char *what) {
    size_t end = ((size_t)id + 1) * SLOT;
    struct stat st;
    cairn__err()->position = 0;
    if (id == 0 || id > KEYS_MAX)
        return cairn__fail(CAIRN_ECORRUPT, "%s: key id %u, which no slot of %s/keys has", who, id,
                           e->path);
    if (!e->kmap)
        return cairn__fail(CAIRN_ECORRUPT,
                           "%s: key %u, but %s/keys is missing or shorter than its header", who, id,
                           e->path);
    if (end <= __atomic_load_n(&e->ksize, __ATOMIC_ACQUIRE)) return CAIRN_OK;
    if (fstat(e->keyfd, &st) != 0)
        return cairn__fail(CAIRN_EIO, "%s/keys: %s", e->path, strerror(errno));
    __atomic_store_n(&e->ksize, (size_t)st.st_size, __ATOMIC_RELEASE);
    if (end <= (size_t)st.st_size) return CAIRN_OK;
    return cairn__fail(CAIRN_ECORRUPT,
                       "%s: key %u is past the end of %s/keys (the file holds %lld bytes: it was "
                       "cut short); %s",
                       who, id, e->path, (long long)st.st_size, what);
}

int cairn__keys_verify_event(cairn_env *e, MDB_txn *txn, uint32_t key_id, uint64_t pos) {
    char who[64];
    int rc, gone;
    snprintf(who, sizeof who, "position %llu", (unsigned long long)pos);
    if ((rc = slot_inside(e, key_id, who, "the event's data cannot be read")) != CAIRN_ECORRUPT)
        return rc;
    if (key_id && cairn__key_forgotten(e, txn, key_id, &gone) == CAIRN_OK && gone) {
        cairn__clear_error(); /* its slot is zeroed at the next writable open */
        return CAIRN_OK;
    }
    cairn__err()->position = pos;
    return CAIRN_ECORRUPT;
}

/* Slot `id` of a live subject holds a key: CAIRN_OK, 1 when it is zeroed, or the error. */
static int subject_slot(cairn_env *e, uint32_t id, const char *who) {
    uint8_t key[SLOT];
    int rc, zero;
    if ((rc = slot_inside(e, id, who, "its events cannot be read")) ||
        (rc = slot_read(e, id, key, &zero)))
        return rc;
    sodium_memzero(key, sizeof key);
    return zero;
}

/* One entry of `subjects`: CAIRN_OK, a damage, or 1 when its slot is zeroed (looked at again
 * in a newer snapshot: a forget may have zeroed it since this one).  *id: its key id. */
static int subject_check(cairn_env *e, MDB_txn *txn, const MDB_val *k, const MDB_val *v,
                         uint32_t last, uint32_t *id, char *who, size_t who_size) {
    uint8_t kb[CAIRN_STREAM_KEY_MAX];
    const char *subj = (const char *)v->mv_data + 4;
    size_t len = v->mv_size >= 4 ? v->mv_size - 4 : 0, klen;
    int rc, gone;
    cairn__err()->position = 0;
    snprintf(who, who_size, "subject \"%.*s\"", (int)(len > 200 ? 200 : len), subj);
    if (v->mv_size <= 4 || len > CAIRN_MAX_SUBJECT)
        return cairn__fail(CAIRN_ECORRUPT, "subjects: a malformed entry");
    klen = cairn__stream_key(subj, len, kb);
    if (k->mv_size != klen || memcmp(k->mv_data, kb, klen))
        return cairn__fail(CAIRN_ECORRUPT, "%s: entry filed under another subject's key", who);
    *id = cairn__get_be32(v->mv_data);
    if (*id == 0 || *id > last)
        return cairn__fail(CAIRN_ECORRUPT, "%s: key id %u beyond the key counter in meta (%u)", who,
                           *id, last);
    if ((rc = cairn__key_forgotten(e, txn, *id, &gone))) return rc;
    if (gone)
        return cairn__fail(CAIRN_ECORRUPT,
                           "%s: its key %u is being forgotten (kpend), yet the subject is live",
                           who, *id);
    return subject_slot(e, *id, who);
}

/* The zeroed slot of the subject filed under `at` seen again, in a newer snapshot. */
static int subject_zeroed(cairn_env *e, const uint8_t *at, size_t at_len, uint32_t id,
                          const char *who) {
    MDB_txn *txn;
    MDB_val k = {at_len, (void *)at}, v;
    int rc;
    if ((rc = cairn__read_begin(e, &txn))) return rc;
    rc = mdb_get(txn, e->subjects, &k, &v);
    if (rc == MDB_NOTFOUND || (rc == 0 && (v.mv_size < 4 || cairn__get_be32(v.mv_data) != id)))
        rc = CAIRN_OK; /* forgotten (or forgotten and given a new key) meanwhile */
    else if (rc)
        rc = cairn__mdb_fail(rc, "verify");
    else if ((rc = subject_slot(e, id, who)) == 1)
        rc = cairn__fail(CAIRN_ECORRUPT,
                         "%s: its key %u in %s/keys is zeroed, but the subject was not forgotten "
                         "(its events read as forgotten)",
                         who, id, e->path);
    cairn__read_end(e, txn);
    return rc;
}

int cairn__keys_verify(cairn_env *e, int (*seen)(void *ctx, int rc), void *ctx) {
    uint8_t at[CAIRN_STREAM_KEY_MAX];
    size_t at_len = 0;
    int started = 0;
    char who[240];
    if (!e->subjects) return CAIRN_OK; /* an older store opened read-only: no subject */
    for (;;) {
        MDB_txn *txn;
        MDB_cursor *c = NULL;
        MDB_val k = {at_len, at}, v, ck = K_KEYS, cv;
        uint32_t last = 0, id = 0;
        size_t n = 0;
        int rc, mrc, zeroed = 0, done = 0;
        if ((rc = cairn__read_begin(e, &txn))) return rc;
        mrc = mdb_get(txn, e->meta, &ck, &cv);
        if (mrc == 0 && cv.mv_size == 4) {
            last = cairn__get_be32(cv.mv_data);
        } else if (mrc == 0) {
            rc = cairn__corrupt(0, "meta: the key counter is not 4 bytes");
            goto out;
        } else if (mrc != MDB_NOTFOUND) {
            rc = cairn__mdb_fail(mrc, "verify");
            goto out;
        }
        if ((mrc = mdb_cursor_open(txn, e->subjects, &c))) {
            rc = cairn__mdb_fail(mrc, "verify");
            goto out;
        }
        if (!started) {
            mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        } else if ((mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)) == 0 && k.mv_size == at_len &&
                   !memcmp(k.mv_data, at, at_len)) {
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT); /* resumes after the last one checked */
        }
        while (mrc == 0 && n++ < VERIFY_CHUNK) {
            int r;
            if (k.mv_size > sizeof at) { /* cannot be resumed from: the last one looked at */
                rc = seen(ctx, cairn__corrupt(0, "subjects: a malformed entry"));
                done = 1;
                goto out;
            }
            memcpy(at, k.mv_data, k.mv_size);
            at_len = k.mv_size, started = 1;
            if ((r = subject_check(e, txn, &k, &v, last, &id, who, sizeof who)) == 1) {
                zeroed = 1;
                break;
            }
            if (r && (rc = seen(ctx, r))) goto out;
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        if (mrc == MDB_NOTFOUND)
            done = 1;
        else if (mrc)
            rc = cairn__mdb_fail(mrc, "verify");
    out:
        if (c) mdb_cursor_close(c);
        cairn__read_end(e, txn);
        if (rc) return rc;
        if (zeroed && (rc = subject_zeroed(e, at, at_len, id, who)) && (rc = seen(ctx, rc)))
            return rc;
        if (done) return CAIRN_OK;
    }
}
