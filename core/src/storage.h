/*
 * storage.h -- what the storage engine's files share (core/src): environments and handles,
 * the hooks through which the layer above acts, transactions and the one write helper, the
 * record codec, keys and indexes, writing and reading events, live delivery.  Built on LMDB
 * and the base layer (base.h: errors, the buffer, byte order); it names nothing of the Lua
 * host or the scripted features.  Nothing here is public.
 */
#ifndef CAIRN_STORAGE_H
#define CAIRN_STORAGE_H

#include <lmdb.h>
#include <pthread.h>
#include <string.h>
#include <sys/types.h>

#include "base.h"
#include "cairn.h"

/* ---------------------------------------------------------------------------------
 * Environments and handles (store.c).  One environment per (device, inode) of a store
 * directory per process, reference counted, shared by every cairn_store handle, iterator
 * and subscription on it.
 * --------------------------------------------------------------------------------- */
struct cairn_hooks;
struct cairn_iter;
struct cairn__wal_rec;
#define CAIRN__MAXDBS 34 /* mdb_env_set_maxdbs(32) + LMDB's two */

typedef struct cairn_env {
    struct cairn_env *next; /* registry list */
    dev_t dev;
    ino_t ino;
    char *path;             /* the store directory (for messages) */
    unsigned long fork_gen; /* g_fork_gen when opened; a mismatch means "we are a child" */
    int unmapped;           /* a map resize failed and LMDB was left without a map */
    int refs;               /* handles + iterators; guarded by the registry lock */
    int rdonly;             /* the LMDB env itself was opened MDB_RDONLY */
    MDB_env *env;
    MDB_dbi meta, log, streams, sidx, ids, post;
    MDB_dbi comp;  /* compensated event id (16 bytes) -> u64 position of its compensation */
    MDB_dbi subs;  /* subscription name -> u64 checkpoint BE; 0 when the db is absent */
    MDB_dbi smeta; /* stream key -> lifecycle entry (lifecycle.c); 0 when the db is absent */
    MDB_dbi holes; /* last position of a run of removed positions -> (first position of the
                    * run, chain hash at its end) (chain.c); 0 when the db is absent */
    /* (snapshot txn id << 1) | smeta holds entries, as last seen by a read txn: readers of
     * one snapshot look at smeta once (cairn__life_view_begin) */
    uint64_t life_seen;
    void *notify;  /* the mapped `notify` file (notify.c), NULL when unavailable */
    int notify_rw; /* mapped writable: this process can register as a waiter */
    /* One thread per process sleeps on the shared futex (the leader); the others wait on
     * this condition variable, woken by the leader: a commit's wake-up costs the writer
     * one woken thread per process, however many subscribers each process has. */
    pthread_mutex_t nlock;
    pthread_cond_t ncond;
    int n_leader;
    uint64_t n_gen;                  /* bumped by the leader each time it wakes */
    const struct cairn_hooks *hooks; /* the layer above's, given by the first open */
    void *upper;                     /* the layer above's per-environment data (hooks->env_open) */
    /* Every transaction of this process holds `resize` shared; changing the map size
     * (which LMDB allows only while this process has no transaction) holds it
     * exclusively. */
    pthread_rwlock_t resize;
    /* Writers: every write transaction of this environment holds `wlock` and an OFD lock on
     * one byte of data.mdb through `lockfd` (-1 for a read-only environment), from before
     * LMDB's begin to after its commit or abort, so that no two writers ever overlap, even
     * when lock.mdb was deleted and another process made a new one.  `lk_dev`/`lk_ino`:
     * the lock.mdb this environment opened; a write finding another refuses. */
    pthread_mutex_t wlock;
    int lockfd;
    dev_t lk_dev;
    ino_t lk_ino;
    char *lk_path;         /* <path>/lock.mdb, made once: each write stats it */
    unsigned long commits; /* under wlock: dead readers are cleared every few commits */
    /* Group commit (store.c: cairn__write_txn): durable writes that arrive while another
     * runs wait in `gq`; the next leader runs them all in one commit. */
    pthread_mutex_t gmu;
    pthread_cond_t gcv;  /* a group is done: its members return, a waiter may lead */
    pthread_cond_t garr; /* a writer queued (for a leader gathering its group) */
    struct cairn__gwait *gq, **gq_tail;
    int g_leading, g_gathering;
    size_t gq_len, g_last; /* writers queued; members of the last group */
    uint64_t g_write_ns;   /* how long the last group's write took */
    unsigned long grouped; /* writes that shared a commit with an earlier one (tests, bench) */
    /* Crypto-shredding (keys.c): subject -> key id, and key ids forgotten but maybe not yet
     * zeroed (0 when absent in a read-only store); the `keys` file (-1 / NULL when there is
     * none) mapped read-only over KEYS_MAP bytes of address space, and the file size last
     * seen (slots past it are looked for with fstat). */
    MDB_dbi subjects, kpend;
    int keyfd;
    uint8_t *kmap;
    size_t ksize;
    /* The write-ahead journal (wal.c): its file (-1: none, a read-only store without one),
     * held with a shared OFD lock for the environment's life; the snapshot this process
     * pins (NULL: none), and the recording of the write in progress (under wlock). */
    int walfd;
    MDB_txn *wal_pin;
    uint64_t wal_pin_id, wal_pin_gen; /* the pinned txn, and the generation it began */
    int64_t wal_trim_ns;              /* when a read last looked for a stale pin */
    unsigned wal_psize;
    int wal_dirty;               /* this process journaled since its last checkpoint */
    int wal_err;                 /* a flush failed (errno / MDB code): writes refused */
    unsigned long wal_ckpts;     /* checkpoints made by this process (tests, bench) */
    struct cairn__wal_rec *wrec; /* NULL until the first journaled write */
    char *dbname[CAIRN__MAXDBS]; /* dbi -> its name ("" for the main db), for the journal */
    unsigned dbflags[CAIRN__MAXDBS];
} cairn_env;

/* What a script run needs, from cairn_options.  The storage only carries it: handles hold
 * it, iterators and subscriptions copy it, and it goes to the read hook as it is. */
typedef struct cairn_script_limits {
    uint64_t instructions, memory; /* 0: the defaults */
    uint64_t time_ns;              /* 0: the default; UINT64_MAX: none */
    void (*log)(void *ctx, const char *script, const char *msg, size_t len);
    void *log_ctx;
} cairn_script_limits;

struct cairn_store {
    cairn_env *env;
    cairn_durability durability;
    int readonly;
    int closed;
    cairn_script_limits lim;
};

extern unsigned long cairn__fork_gen;

/* Fails with CAIRN_ECLOSED when the env belongs to the parent of a fork(). */
int cairn__env_check(const cairn_env *e);
int cairn__store_check(const cairn_store *s);
void cairn__env_retain(cairn_env *e);
void cairn__env_release(cairn_env *e);

/* ---------------------------------------------------------------------------------
 * Hooks: how the storage lets the layer above act without naming it (as SQLite's btree
 * reaches the VDBE only through callbacks on the connection).  Called by store.c (opening,
 * teardown), append.c (after an append) and read.c (transforms on read).
 * --------------------------------------------------------------------------------- */
/* One table per process, given to cairn__store_open by that layer's cairn_open and held by
 * every environment; a NULL table or member is "nothing to do". */
typedef struct cairn_hooks {
    /* Inside the txn that opens an environment's databases: opens the layer's own and
     * keeps its per-environment data in *data.  fresh: a new store (every database is
     * created); writable: databases an older store lacks may be created. */
    int (*env_open)(cairn_env *e, MDB_txn *txn, int fresh, int writable, void **data);
    /* The environment is being freed (its last reference is gone in this process). */
    void (*env_close)(cairn_env *e, void *data);
    /* Inside an append's write txn, once its requests are written; a failure fails the
     * append (CAIRN__EMAPFULL: grow and run it again). */
    int (*after_append)(cairn_store *s, MDB_txn *txn, const cairn_append_req *reqs, size_t nreqs,
                        const cairn_append_result *results);
    /* Transforms on read.  read_prepare runs in each read txn of a refill or point read
     * that is not raw, keeping *state (NULL at first; freed by read_free) current with the
     * store; *active: read_transform has work to do.  read_transform rewrites a decoded
     * event; its pointers may then point into state, valid until the next transform with
     * it or read_free. */
    int (*read_prepare)(cairn_env *e, MDB_txn *txn, void **state, int *active);
    int (*read_transform)(cairn_env *e, const cairn_script_limits *lim, void *state,
                          cairn_event *ev);
    void (*read_free)(void *state);
    /* Inside cairn_forget's write txn (keys.c), once the subject's key is marked forgotten:
     * drops what the layer above keeps that may hold plaintext derived from the subject's
     * events (aggregate snapshots). */
    int (*after_forget)(cairn_store *s, MDB_txn *txn);
    /* Events of stream `sid` were removed (lifecycle.c, in its write txn): whatever the
     * layer keeps derived from them goes (aggregate snapshots). */
    int (*stream_removed)(cairn_env *e, MDB_txn *txn, uint64_t sid);
} cairn_hooks;

/* Opens (or joins) the environment of `path` with these hooks (used only when this open
 * creates it) and a handle on it: cairn_open without the layer above. */
int cairn__store_open(const char *path, const cairn_options *opts, const cairn_hooks *hooks,
                      cairn_store **out);

/* ---------------------------------------------------------------------------------
 * Transactions (store.c)
 * --------------------------------------------------------------------------------- */
/* read_begin/write_begin take the resize lock shared and deal with
 * MDB_MAP_RESIZED; the matching end/commit/abort releases it. */
int cairn__read_begin(cairn_env *e, MDB_txn **txn);
void cairn__read_end(cairn_env *e, MDB_txn *txn);
int cairn__write_begin(cairn_env *e, cairn_durability d, MDB_txn **txn);
/* An OFD lock (F_RDLCK, F_WRLCK, F_UNLCK) on byte `at` of fd, waiting for it or not: 0 or
 * errno (EAGAIN: another holds it).  The writer lock and the journal's are these. */
int cairn__byte_lock(int fd, off_t at, short type, int wait);
int cairn__write_commit(cairn_env *e, MDB_txn *txn); /* MDB code, lock released */
void cairn__write_abort(cairn_env *e, MDB_txn *txn);
/* The error of a failed commit: like cairn__mdb_fail, and when the file system holding the
 * store has (almost) no space left, the message says so -- LMDB reports a short write as
 * EIO. */
int cairn__commit_fail(cairn_env *e, int rc);
/* Doubles the map (called with no transaction of this thread active). */
int cairn__env_grow(cairn_env *e);

/* The one owner of a write transaction's life: every writer is a body run by
 * cairn__write_txn.  The body writes through w->txn and returns CAIRN_OK to commit (or,
 * with w->skip set, to abort: nothing to write), CAIRN__EMAPFULL to have the map grown and
 * run again, CAIRN__ERETRY to run again as it is, or an error to abort with.  A commit that
 * finds the map full also grows it and runs the body again, so a body must be rerunnable
 * (keep what it computes in ctx only once it commits).  After the commit, w->notify wakes
 * subscribers (w->head: the new head, 0 when unknown); a failed commit is
 * cairn__commit_fail's error.  d: the durability of this commit. */
#define CAIRN__EMAPFULL (-30100) /* internal: abort, grow the map, run the write again */
#define CAIRN__ERETRY (-30101)   /* internal: abort and run the write again (see projection.c) */
typedef struct cairn_wtxn {
    MDB_txn *txn;
    int skip;      /* set by the body: abort instead of committing, return CAIRN_OK */
    int notify;    /* set by the body: the commit may have written events */
    uint64_t head; /* with notify: the new last position (0: unknown) */
} cairn_wtxn;
typedef int (*cairn_write_body)(cairn_wtxn *w, void *ctx);
/* With CAIRN_DURABLE_FULL the write may share its commit (and its flush) with writes of other
 * threads of this process that arrived while another commit ran (group commit): each body
 * then runs, on the leading writer's thread, in a nested transaction of its own, so that a
 * body's failure undoes only its own writes and is only its caller's; each caller gets its
 * own return code and error, and returns once the shared commit is durable.  A body must
 * not rely on running on its caller's thread. */
int cairn__write_txn(cairn_env *e, cairn_durability d, cairn_write_body body, void *ctx);

/* Maps an LMDB or errno code to a CAIRN_E* failure (mdb_error.c); `what` names the
 * operation.  The other error helpers are the base layer's (base.h). */
int cairn__mdb_fail(int rc, const char *what);

/* Before LMDB maps data.mdb (filecheck.c): the file must hold every page its newer meta page
 * can reach, else CAIRN_ECORRUPT naming the first missing or damaged page; a file that
 * cannot be judged (absent, no valid meta pages) is left to LMDB's open.  `force_walk`
 * walks the trees even when the file holds every page up to mm_last_pg (for tests). */
typedef struct cairn_filecheck {
    uint32_t psize;
    uint64_t txnid, last_page, file_bytes;
    int walked;                /* the trees were walked (the file is short, or forced) */
    uint64_t reached, claimed; /* pages the walk reached; pages the MDB_db records count */
    uint64_t bad_page;
} cairn_filecheck;
int cairn__file_check(const char *data, int force_walk, cairn_filecheck *out);
/* LMDB 0.9's meta pages (pages 0 and 1) on 64-bit hosts, as filecheck.c and wal.c read
 * them: a 16-byte page header, then MDB_meta with mm_last_pg at 120 and mm_txnid at 128. */
#define CAIRN__MDB_PAGEHDR 16u
#define CAIRN__MDB_META_LAST 120u
#define CAIRN__MDB_META_TXNID 128u
/* data.mdb as the power leaves it when it cut the making of a new store before the first
 * commit's flush (filecheck.c): not empty, no meta page of a commit, only zeros or LMDB's
 * new meta pages where they belong, at most a few pages.  1 when it is one.  _reset cuts it
 * to nothing, holding LMDB's lock against other processes, unless `path`/notify exists
 * meanwhile or another process opens the store (CAIRN_OK then too). */
int cairn__file_unmade(const char *data);
int cairn__file_unmade_reset(const char *path, const char *data);

/* ---------------------------------------------------------------------------------
 * Record codec (codec.c).  Format 2, little-endian (docs/FORMAT.md):
 *   0 u64 checksum (XXH3-64 of bytes 8..end)   8 u8 format (2)   9 u8 flags
 *  10 u16 type_len  12 u16 ntags  14 u16 stream_len  16 u64 position  24 i64 version
 *  32 i64 timestamp 40 u32 schema 44 u32 metadata_len 48 u32 data_len 52 u32 tags_len
 *  56 u8[16] event id  72 u8[32] chain hash  104 u32 key id  108 u16 subject_len  110 u16 0
 * 112: stream, type, tags (u16 len + bytes each), metadata, subject, data
 * Format 1 (written before issue 13, still read): bytes 0..72 alike, then the body without
 * a subject; its chain hash is computed, not stored.
 * --------------------------------------------------------------------------------- */
#define CAIRN_REC_FIXED 34    /* a format-3 record's fixed bytes, before its hash and varints */
#define CAIRN_REC_CHAINED 8   /* format 3's flag: the chain hash is stored (at 34) */
#define CAIRN_REC_HEADER2 112 /* a format-2 record's header */
#define CAIRN_REC_HEADER1 72  /* a format-1 record's header */
#define CAIRN_REC_LIMIT_HEADER 112 /* the record size limit's fixed part (API.md section 1) */
#define CAIRN_REC_FORMAT 3
#define CAIRN_STORE_FORMAT 3 /* the format number in meta `magic` */
#define CAIRN_CHAIN 32       /* bytes of a chain hash (BLAKE2b-256) */

/* What a record carries besides the event (NULL where taken: none): the key id of its
 * encrypted data (0: not encrypted) and its subject. */
typedef struct cairn_rec_extra {
    uint32_t key_id;
    cairn_slice subject;
} cairn_rec_extra;

/* What cairn__record_decode_ex tells besides the event. */
typedef struct cairn_rec_info {
    int format;           /* 1 or 2 */
    uint32_t key_id;      /* 0 for format 1 */
    cairn_slice subject;  /* empty for format 1 */
    const uint8_t *chain; /* the stored chain hash (format 2), NULL for format 1 */
} cairn_rec_info;

size_t cairn__record_size(const cairn_slice *stream, const cairn_event_in *ev,
                          const cairn_rec_extra *x, int64_t version, int keep);
/* Where a record keeps its event id (16 bytes; NULL: too short, an unknown format), for
 * a scan that compares ids before it decodes. */
const uint8_t *cairn__record_id(const void *rec, size_t len);
/* The size the record limit counts (API.md section 1: format 2's, whatever is stored). */
size_t cairn__record_limit_size(const cairn_slice *stream, const cairn_event_in *ev,
                                const cairn_rec_extra *x);
/* The bytes of a record its chain hash covers after the previous hash: part[0] then
 * part[1]; returns 1 when the position (u64 LE) comes first (format 3). */
int cairn__record_chain_input(const void *rec, size_t len, cairn_slice part[2]);
/* Writes a record into `out` (cairn__record_size bytes): its chain hash follows from
 * `prev` (the chain hash of position-1) and is also copied to `chain` (may be `prev`),
 * then the checksum is sealed. */
void cairn__record_write(uint8_t *out, const cairn_slice *stream, const cairn_event_in *ev,
                         const cairn_rec_extra *x, const uint8_t *id, uint64_t position,
                         int64_t version, int64_t timestamp, int keep,
                         const uint8_t prev[CAIRN_CHAIN], uint8_t chain[CAIRN_CHAIN]);
/* Checks and decodes a record (format 1 or 2); `position` is the key it was stored under
 * (0: not checked).  Pointers in *ev and *info point into `rec`; info may be NULL. */
int cairn__record_decode(const void *rec, size_t len, uint64_t position, cairn_event *ev);
int cairn__record_decode_ex(const void *rec, size_t len, uint64_t position, cairn_event *ev,
                            cairn_rec_info *info);
/* cairn__record_decode without the checksum, for a private copy of a record whose
 * checksum its maker verified when it took it from LMDB (read.c's pages, cairn_get_ex). */
int cairn__record_parse(const void *rec, size_t len, uint64_t position, cairn_event *ev);

/* ---------------------------------------------------------------------------------
 * The hash chain (chain.c, docs/FORMAT.md "The hash chain").  The chain hash of position
 * p is BLAKE2b-256(chain(p-1) || the record's bytes 8..72 || bytes 104..end) for format 2
 * (stored at 72), BLAKE2b-256(chain(p-1) || bytes 8..end) for format 1 (computed);
 * chain(0) is the genesis constant.  `holes` holds one entry per run of removed positions:
 * its last position u64 BE -> its first position u64 BE and the chain hash of the last (what
 * the next record's link needs; cairn__holes_cover tells holes from damage with it); meta
 * `chain1` holds (last format-1 position u64 BE, its chain hash) from the upgrade of a
 * format-1 store on.
 * --------------------------------------------------------------------------------- */
/* sodium_init, once per process; CAIRN_EINTERNAL when libsodium cannot start. */
int cairn__chain_init(void);
const uint8_t *cairn__chain_genesis(void);
/* chain = the chain hash of the record `rec` (format 1 or 2, already checked) after `prev`
 * (may alias chain). */
void cairn__chain_hash(const uint8_t prev[CAIRN_CHAIN], uint64_t position, const void *rec,
                       size_t len, uint8_t chain[CAIRN_CHAIN]);
/* The chain hash of position `pos` as of txn (0: genesis): a format-2 record's stored one,
 * a hole entry's, meta chain1's, or computed over format-1 records from the nearest
 * position below whose hash is known.  CAIRN_ECORRUPT naming pos when it cannot be known. */
int cairn__chain_at(cairn_env *e, MDB_txn *txn, uint64_t pos, uint8_t out[CAIRN_CHAIN]);
/* For the writer that removes the record `rec` (len bytes, as stored at `pos`) from `log`:
 * call it in the same write txn, before the record is deleted, for each record removed (in
 * any order).  Keeps the run holding pos as one entry: at pos with rec's chain hash unless
 * pos+1 is a removed position below the head (then that run's entry, at its end, now starts
 * where pos's run does), and the entry at pos-1 (now inside the run) deleted; when pos is
 * the head, meta `head` is written so that the head stays.  CAIRN__EMAPFULL: grow, run
 * again; CAIRN_ECORRUPT when pos+1 is missing from the log without a hole entry. */
int cairn__chain_remove(cairn_env *e, MDB_txn *txn, uint64_t pos, const void *rec, size_t len);
/* A format-1 store's upgrade, in a write txn: computes the chain over its format-1 records
 * (one pass), writes meta chain1 (when there are any) and the store format 2 in `magic`. */
int cairn__chain_upgrade(cairn_env *e, MDB_txn *txn);
/* The store format of meta `magic` as of txn (1 or 2). */
int cairn__store_format(cairn_env *e, MDB_txn *txn, int *format);

/* LMDB does not checksum its tree: a damaged page can point anywhere.  map_bounds finds the
 * used part of the map for a read-only txn (cheap, once per txn); val_check fails with
 * CAIRN_ECORRUPT naming `position` when a value does not lie inside it. */
void cairn__map_bounds(cairn_env *e, MDB_txn *txn, uintptr_t *lo, uintptr_t *hi);
int cairn__val_check(uintptr_t lo, uintptr_t hi, const MDB_val *v, uint64_t position);

/* ---------------------------------------------------------------------------------
 * Keys and indexes (index.c)
 * --------------------------------------------------------------------------------- */
#define CAIRN_STREAM_KEY_INLINE 480 /* names up to this many bytes are their own key */
#define CAIRN_STREAM_KEY_MAX (CAIRN_STREAM_KEY_INLINE + 16)
/* Stream entry value: u64 sid BE, u32 flags BE, name bytes.  Written once, when the
 * stream is created; the version is the last dup of the stream's `sidx` entry. */
#define CAIRN_STREAM_VAL_HEADER 12

/* Posting kinds: key = kind byte + BE XXH3-64 of the name; dups = BE positions. */
#define CAIRN_POST_CATEGORY 'c'
#define CAIRN_POST_TYPE 't'
#define CAIRN_POST_TAG 'g'
#define CAIRN_POST_CORRELATION 'r' /* metadata.correlation_id (for rollback) */
#define CAIRN_POST_KEY 9

size_t cairn__stream_key(const void *name, size_t len, uint8_t out[CAIRN_STREAM_KEY_MAX]);
void cairn__post_key(int kind, const void *name, size_t len, uint8_t out[CAIRN_POST_KEY]);

/* A stream's lifecycle entry (`smeta`, keyed like `streams`; lifecycle.c), present once
 * a delete or set_stream_metadata named the stream: its `streams` entry then carries
 * CAIRN__SF_LIFE.  The one read-time rule is cairn__life_hides. */
#define CAIRN__SF_LIFE 1u    /* streams entry flag: the stream has an `smeta` entry */
#define CAIRN__LF_DELETED 1u /* smeta flag: hard-deleted (tombstone), forever */
#define CAIRN__SMETA_VAL 48  /* u32 flags, u32 0, i64 max_count, max_age, tb, first, kept (BE) */
typedef struct cairn_life {
    uint32_t flags;
    int64_t max_count, max_age, truncate_before; /* -1: no limit (max_age in seconds) */
    int64_t first; /* versions below are removed: hidden now, reclaimed later; never falls */
    int64_t kept;  /* the stream's last version when the entry was written (the version
                    * of a stream all of whose events were reclaimed) */
} cairn_life;

typedef struct cairn_stream_info {
    uint64_t sid;
    int64_t version;
    uint32_t flags;
    int exists;
    uint64_t last_pos; /* position of the event of `version` (0 when none, or removed) */
    int has_life;      /* flags has CAIRN__SF_LIFE: `life` holds the stream's entry */
    cairn_life life;
} cairn_stream_info;

/* Looks a stream up in `txn`; info->exists is 0 when it has no entry. */
int cairn__stream_lookup(cairn_env *e, MDB_txn *txn, const void *name, size_t len,
                         cairn_stream_info *info);

/* The index tail.  A commit of one single-event append (no rollback or compensation links)
 * writes the record and its stream index entry but leaves its id and posting entries to a
 * later commit, so that a durable single-event commit dirties few pages.  meta "tail" holds
 * the first such position (absent: everything is indexed); positions from there to the head
 * are "the tail", at most CAIRN_TAIL_MAX events.  The next commit that is not such an
 * append (or that finds the tail full) indexes the tail first.  Every lookup through the id
 * or posting indexes also scans the tail, so readers see complete indexes at every commit. */
#define CAIRN_TAIL_MAX 64
int cairn__tail_start(cairn_env *e, MDB_txn *txn, uint64_t *out); /* 0: no tail */
/* Finds an event id in the id index or the tail; *found 0 when absent.  *first and *count
 * describe the append call that wrote it. */
int cairn__id_lookup(cairn_env *e, MDB_txn *txn, const uint8_t id[16], int *found, uint64_t *pos,
                     uint64_t *first, uint64_t *count);
/* The same for the first `len` (1..16) bytes of an id: the smallest id in the index with
 * them, else the first tail event's (a command's event ids share a prefix, aggregate.c). */
int cairn__id_find(cairn_env *e, MDB_txn *txn, const uint8_t *key, size_t len, int *found,
                   uint64_t *pos, uint64_t *first, uint64_t *count);
/* The result of the append call (first, count) from cairn__id_lookup, as it returned it, and
 * its last event (pointers valid until the txn writes): what a retry of the call returns. */
int cairn__call_result(cairn_env *e, MDB_txn *txn, uint64_t first, uint64_t count,
                       cairn_append_result *res, cairn_event *last);

/* The last position ever written (0 for an empty store). */
int cairn__head(cairn_env *e, MDB_txn *txn, uint64_t *out);
/* The same, and the timestamp of that event (*ts, may be NULL; 0 when unknown): from the
 * log's last record, or from meta "head" when the newest events were removed. */
int cairn__head_ts(cairn_env *e, MDB_txn *txn, uint64_t *out, int64_t *ts);
/* Only meta "head": the head and timestamp kept when the newest events were removed (0, 0
 * when none), for a caller that has read the log's last record itself (append.c). */
int cairn__head_kept(cairn_env *e, MDB_txn *txn, uint64_t *head, int64_t *ts);
/* The newest events are being removed: keeps their head and timestamp in meta "head". */
int cairn__head_keep(cairn_env *e, MDB_txn *txn, uint64_t head, int64_t ts);

/* ---------------------------------------------------------------------------------
 * Stream lifecycle (lifecycle.c, spec 6): the reserved `$lifecycle` stream, deletes,
 * retention limits enforced at read time, reclamation, holes in the log.
 * --------------------------------------------------------------------------------- */
#define CAIRN__LIFECYCLE "$lifecycle"

/* Appends one event of `type` (a `$` type, e.g. "$StreamDeleted") with JSON data to
 * `$lifecycle` inside the caller's open write txn: a normal record (position, id,
 * timestamp, indexes) committed with the caller's effect.  *position (may be NULL): its
 * position.  For the layers that write lifecycle events (deletes, metadata, forget). */
int cairn__lifecycle_append(cairn_store *s, MDB_txn *txn, const char *type, const char *json_data,
                            size_t json_len, uint64_t *position);

/* After events were written to a stream with an entry (si: as looked up, version
 * advanced): its max_count moves `first` on (cairn__write_requests, same txn). */
int cairn__life_after_write(cairn_store *s, MDB_txn *txn, const cairn_slice *stream,
                            cairn_stream_info *si);
/* Reclaims what the rules remove from the stream (si: as looked up; its entry is kept
 * current), at most `budget` events: records, every index entry, holes, the head kept.
 * *removed grows by the count; *more: the budget ran out first. */
int cairn__life_reclaim(cairn_store *s, MDB_txn *txn, const cairn_slice *stream,
                        cairn_stream_info *si, uint64_t budget, uint64_t *removed, int *more);

/* Reads the stream's entry (key: its `streams` key); *found 0 when absent. */
int cairn__life_get(cairn_env *e, MDB_txn *txn, const uint8_t *key, size_t klen, cairn_life *out,
                    int *found);

/* The read-time rule: is an event of a stream with entry `l`, at `version` with timestamp
 * `ts`, removed at time `now` (ns)?  Removed events are hidden by every read until
 * reclaimed. */
static inline int cairn__life_hides(const cairn_life *l, int64_t version, int64_t ts, int64_t now) {
    if ((l->flags & CAIRN__LF_DELETED) || version < l->first) return 1;
    if (l->max_age < 0) return 0;
    /* older than max_age: now - ts >= max_age s (saturating: 292 years and up is "never") */
    return l->max_age < INT64_MAX / 1000000000 && ts <= now - l->max_age * 1000000000;
}

/* Per read txn: which events the lifecycle rules hide, for the reads over the log
 * (read_all, filtered reads, subscriptions, projections, get).  `on` is 0 when no stream
 * has an entry: then nothing but the '$' rule costs anything.  Otherwise the streams looked
 * up are remembered, by a hash of the name, during the txn (their names point into the
 * map, valid while the txn reads). */
#define CAIRN__LIFE_CACHE 256
typedef struct cairn_life_seen {
    const void *name;
    size_t len;
    uint32_t gen; /* the view's gen when filled (else empty) */
    int has;
    cairn_life life;
} cairn_life_seen;
#define CAIRN__LIFE_FEW 16 /* up to this many entries are all read at the view's start */
typedef struct cairn_life_view {
    int on;
    uint32_t gen;
    int64_t now;
    size_t nfew; /* > 0: every entry is in few[] (keys point into the map) */
    struct {
        const void *key;
        size_t klen;
        cairn_life life;
    } few[CAIRN__LIFE_FEW];
    cairn_life_seen seen[CAIRN__LIFE_CACHE];
} cairn_life_view;
/* Does any stream have an entry (*on)?  rdonly: txn is a read txn (its snapshot never
 * changes: the answer is remembered for its txn id). */
int cairn__life_on(cairn_env *e, MDB_txn *txn, int rdonly, int *on);
/* 1: `ev` is removed (hidden), 0: visible, or a negative code (one look-up, no view). */
int cairn__life_event_hidden(cairn_env *e, MDB_txn *txn, const cairn_event *ev);
/* Starts a view (zeroed before its first use) for the reads of one txn. */
int cairn__life_view_begin(cairn_env *e, MDB_txn *txn, int rdonly, cairn_life_view *v);
/* 1: `ev` is removed (hidden), 0: visible, or a negative code. */
int cairn__life_view_hides(cairn_env *e, MDB_txn *txn, cairn_life_view *v, const cairn_event *ev);

/* Is every position of lo..hi (lo <= hi) a hole: an event removed by the lifecycle rules?
 * Else the log lost records (damage).  *yes 1 or 0.  (chain.c: `holes` is the chain's.) */
int cairn__holes_cover(cairn_env *e, MDB_txn *txn, uint64_t lo, uint64_t hi, int *yes);

/* ---------------------------------------------------------------------------------
 * Writing events (append.c)
 * --------------------------------------------------------------------------------- */
/* Writes append requests inside an open write transaction.  The rules of an event and of a
 * stream name (base/check.c, '$' reserved included) are the caller's to check first, with
 * cairn__validate_requests, as every user path does; the store's own write to `$lifecycle`
 * (lifecycle.c) skips that check, which is how it reaches a '$' stream. */
#define CAIRN__W_TAIL 1 /* the write may go to the index tail (see cairn__tail_start) */
/* conds: NULL, or one condition (or NULL) per request, checked after its expected version
 * (cairn_append_conditional). */
int cairn__write_requests(cairn_store *s, MDB_txn *txn, const cairn_append_req *reqs,
                          const cairn_condition *const *conds, size_t nreqs,
                          cairn_append_result *results, int flags);
int cairn__validate_requests(const cairn_append_req *reqs, size_t nreqs);
/* The expected-version check of request r against the stream as looked up (CAIRN_EVERSION
 * with .expected, .actual, .request set). */
int cairn__check_expected(const cairn_append_req *q, const cairn_stream_info *si, size_t r);
/* Writes the `streams` entry of `name` (sid, flags): an MDB code. */
int cairn__stream_put(cairn_env *e, MDB_txn *txn, const cairn_slice *name,
                      const cairn_stream_info *si);

/* ---------------------------------------------------------------------------------
 * Reading (read.c)
 * --------------------------------------------------------------------------------- */
/* Refills of this iterator read through `txn` (which outlives them) instead of their own. */
void cairn__iter_bind_txn(struct cairn_iter *it, MDB_txn *txn);
/* cairn_iter_all on an environment (retained by the iterator) with these limits. */
int cairn__iter_all(cairn_env *e, const cairn_script_limits *lim, uint64_t start, int backwards,
                    uint64_t limit, const cairn_filter *filter, struct cairn_iter **out);
/* cairn_iter_query on an environment; no event after `hi` is yielded (0: no bound). */
int cairn__iter_query(cairn_env *e, const cairn_script_limits *lim, const cairn_query *q,
                      uint64_t start, int backwards, uint64_t limit, uint64_t hi,
                      struct cairn_iter **out);
/* Checks condition `c` of request r in `txn` (a write txn: the events it wrote already
 * count): CAIRN_OK, or CAIRN_ECONDITION with .request and .positions set. */
int cairn__condition_check(cairn_env *e, MDB_txn *txn, const cairn_condition *c, size_t r);
/* A deep copy of a caller's filter (iterators and subscriptions keep one): `out`'s lists point
 * into *mem, one allocation the caller frees (NULL when the filter is empty or NULL). */
int cairn__filter_dup(const cairn_filter *in, cairn_filter *out, void **mem);

/* ---------------------------------------------------------------------------------
 * Keys of data subjects and their AEAD (keys.c; docs/FORMAT.md "The keys file").  Key bytes
 * live only in the `keys` file and on the stack of the call using them (wiped after use);
 * LMDB holds subject -> key id, the key id counter and the key ids being forgotten.
 * --------------------------------------------------------------------------------- */
#define CAIRN_KEY_BYTES 32     /* crypto_aead_xchacha20poly1305_ietf_KEYBYTES */
#define CAIRN_AEAD_NONCE 24    /* stored before the ciphertext */
#define CAIRN_AEAD_OVERHEAD 40 /* nonce + the 16-byte tag after it */
/* Opens (a writable env: creates) <path>/keys and maps it; a read-only env without the
 * file has no keys (its encrypted events cannot be read: CAIRN_ECORRUPT). */
int cairn__keys_open(cairn_env *e, const char *path);
void cairn__keys_close(cairn_env *e);
int cairn__keys_sync(cairn_env *e); /* fdatasync of the keys file (writable envs) */
/* Copies the keys file into directory dest (fsync'd; nothing left behind on failure). */
int cairn__keys_backup(cairn_env *e, const char *dest);
/* Inside a write txn: the subject's current key into key[] and its id; with `create`, a
 * subject without one gets a fresh key (written to its slot now, *fresh set: the caller
 * syncs the file before the commit when the commit is to be durable).  *id 0: none. */
int cairn__key_for_subject(cairn_env *e, MDB_txn *txn, const void *subj, size_t len, int create,
                           uint32_t *id, uint8_t key[CAIRN_KEY_BYTES], int *fresh);
/* Inside a write txn: the subject's key id (0: it has none) is marked forgotten (kpend) and
 * the subject has no key any more.  After the commit, cairn__keys_zero_pending zeroes it. */
int cairn__subject_forget(cairn_env *e, MDB_txn *txn, const void *subj, size_t len, uint32_t *id);
/* Zeroes and flushes every slot in kpend, then empties kpend (its own write txn; a writable
 * open calls it to finish a forget a crash interrupted). */
int cairn__keys_zero_pending(cairn_env *e);
/* The subject's current key (for cairn__subject_key): *found 0 when it has none. */
int cairn__key_current(cairn_env *e, MDB_txn *txn, const void *subj, size_t len,
                       uint8_t key[CAIRN_KEY_BYTES], int *found);
/* In a read txn: key id in kpend (forgotten, the slot maybe not zeroed yet). */
int cairn__key_forgotten(cairn_env *e, MDB_txn *txn, uint32_t id, int *forgotten);
/* Seals len bytes into out (len + CAIRN_AEAD_OVERHEAD bytes), a random nonce first; the
 * associated data binds it to (event id, position, key id). */
void cairn__aead_seal(uint8_t *out, const void *plain, size_t len,
                      const uint8_t key[CAIRN_KEY_BYTES], const uint8_t id[16], uint64_t position,
                      uint32_t key_id);
/* 0 when it opens (len - CAIRN_AEAD_OVERHEAD bytes into out), -1 otherwise. */
int cairn__aead_open(uint8_t *out, const uint8_t *sealed, size_t len,
                     const uint8_t key[CAIRN_KEY_BYTES], const uint8_t id[16], uint64_t position,
                     uint32_t key_id);
/* Opens an encrypted event's data with key `key_id` from the keys file into `out` (may be
 * sealed + CAIRN_AEAD_NONCE: in place).  pending: a txn found the id in kpend.  *forgotten:
 * the key is gone, nothing written; data that does not open under a live key is
 * CAIRN_ECORRUPT naming the position. */
int cairn__key_open_data(cairn_env *e, uint32_t key_id, int pending, const uint8_t *sealed,
                         size_t len, const uint8_t id[16], uint64_t position, uint8_t *out,
                         int *forgotten);
/* verify: a sealed event's key id (at `pos`, in txn) names a slot of the keys file, unless
 * it is being forgotten; else CAIRN_ECORRUPT naming the position, key and file. */
int cairn__keys_verify_event(cairn_env *e, MDB_txn *txn, uint32_t key_id, uint64_t pos);
/* verify: every live subject's slot holds a key (there, not zeroed, not in kpend, its id
 * within the counter).  Each damage (CAIRN_ECORRUPT, position 0, naming the subject, key id
 * and file) goes to seen(ctx, rc), which returns rc to end the check or CAIRN_OK to go on. */
int cairn__keys_verify(cairn_env *e, int (*seen)(void *ctx, int rc), void *ctx);

/* Sealing events as a write stores them (append.c): one sealer per write caches the last
 * subject's key.  seal_event: *out is ev with its data sealed (pointing into the sealer,
 * valid until its next seal) and CAIRN_EVENT_ENCRYPTED, *key_id the key used (made when the
 * subject has none: a fresh key).  sealer_finish, before the commit: flushes the keys file
 * when a fresh key was made and the commit is to be durable. */
typedef struct cairn_sealer {
    cairn_buf buf;
    char *subj; /* the cached subject */
    size_t subj_len;
    uint32_t id; /* its key id, 0: nothing cached */
    uint8_t key[CAIRN_KEY_BYTES];
    uint8_t prefix[16];              /* this write's nonce prefix (random) */
    uint8_t subkey[CAIRN_KEY_BYTES]; /* HChaCha20(key, prefix): XChaCha20's subkey */
    int fresh;                       /* a key was made in this write */
} cairn_sealer;
void cairn__sealer_init(cairn_sealer *sl);
void cairn__sealer_free(cairn_sealer *sl); /* wipes the cached key */
int cairn__seal_event(cairn_env *e, MDB_txn *txn, cairn_sealer *sl, const cairn_event_in *ev,
                      const uint8_t id[16], uint64_t position, cairn_event_in *out,
                      uint32_t *key_id);
int cairn__sealer_finish(cairn_env *e, cairn_sealer *sl, cairn_durability d);

/* For the read paths, on a decoded event.  event_pending (in a read txn): its data is
 * sealed and its key id is in kpend.  event_reveal: opens sealed data into `out` (len -
 * CAIRN_AEAD_OVERHEAD bytes; NULL: in place, the record's bytes must be a writable copy),
 * or sets ev->forgotten with no data; ev->data then describes the plaintext.  Events
 * without CAIRN_EVENT_ENCRYPTED pass through both unchanged. */
int cairn__event_pending(cairn_env *e, MDB_txn *txn, const cairn_event *ev, int *pending);
/* In a txn: is any key id in kpend (almost never: only between a forget's two steps)?  A
 * reader that knows there is none skips cairn__event_pending's look-ups. */
int cairn__keys_pending_any(cairn_env *e, MDB_txn *txn, int *any);
int cairn__event_reveal(cairn_env *e, cairn_event *ev, int pending, uint8_t *out);

/* ---------------------------------------------------------------------------------
 * The write-ahead journal (wal.c; docs/ARCHITECTURE.md "One flush per commit", FORMAT.md).
 * A commit with durability full is written to the `wal` file as the list of its LMDB
 * writes and flushed there once; LMDB then commits without a flush, and a checkpoint
 * (mdb_env_sync, then a new generation of the journal) makes data.mdb durable every
 * CAIRN__WAL_CKPT_COMMITS commits.  Until then the snapshot of the last checkpoint (the
 * base) is pinned by a read txn, so none of its pages is reused: after a power loss the
 * base's meta page, kept in the journal's header, is written back and the journal replayed.
 * Every LMDB write of the storage and the layer above goes through the wrappers below
 * (the macros make mdb_put & co. these), which record it while a journaled write runs.
 * --------------------------------------------------------------------------------- */
#define CAIRN__WAL_CKPT_COMMITS 32
int cairn__wal_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags);
int cairn__wal_cursor_put(MDB_cursor *c, MDB_val *key, MDB_val *data, unsigned flags);
int cairn__wal_del(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data);
int cairn__wal_cursor_del(MDB_cursor *c, unsigned flags);
int cairn__wal_drop(MDB_txn *txn, MDB_dbi dbi, int del);
int cairn__wal_dbi_open(MDB_txn *txn, const char *name, unsigned flags, MDB_dbi *dbi);
#ifndef CAIRN__WAL_SELF
#define mdb_put cairn__wal_put
#define mdb_cursor_put cairn__wal_cursor_put
#define mdb_del cairn__wal_del
#define mdb_cursor_del cairn__wal_cursor_del
#define mdb_drop cairn__wal_drop
#define mdb_dbi_open cairn__wal_dbi_open
#endif
/* Before anything reads data.mdb: opens <path>/wal (made when `create`; else a missing one
 * leaves walfd -1) and takes its lock; when no other process has the store open and the
 * journal holds commits, replays them into data.mdb (a store a power loss cut) -- a store
 * that needs it but can't be written refuses. */
int cairn__wal_open(cairn_env *e, const char *path, int writable, int create);
/* The write of `txn` (writer lock held) starts: journaled (durability full) or not. */
void cairn__wal_begin(cairn_env *e, MDB_txn *txn, int journaled);
/* Commits `txn` in place of mdb_txn_commit (MDB code); journaled as begun.  An unjournaled
 * commit first checkpoints when the journal holds commits (they could not be replayed
 * past it). */
int cairn__wal_commit(cairn_env *e, MDB_txn *txn);
void cairn__wal_abort(cairn_env *e);
/* Nested transactions (group commit): a mark before one begins, undo when it aborts,
 * settle before it commits. */
size_t cairn__wal_mark(cairn_env *e);
void cairn__wal_undo(cairn_env *e, size_t mark);
void cairn__wal_settle(cairn_env *e);
/* Writer lock held, no write txn of this thread: data.mdb made durable, the journal
 * emptied (a new generation), the new base pinned.  MDB code or errno. */
int cairn__wal_checkpoint(cairn_env *e);
/* The pin goes (before mdb_env_set_mapsize; resize lock held exclusively) and comes back. */
void cairn__wal_unpin(cairn_env *e);
void cairn__wal_repin(cairn_env *e);
/* A read txn is about to begin (no lock held): at most every 100 ms, a pin other processes'
 * checkpoints have left far behind is dropped (it would keep their freed pages from reuse). */
void cairn__wal_trim(cairn_env *e);
/* At the environment's end (writer lock free): a last checkpoint when this process
 * journaled since its last one, the pin and the file closed. */
void cairn__wal_close(cairn_env *e);

/* ---------------------------------------------------------------------------------
 * Live delivery (notify.c).  cairn__notify_commit goes after every successful commit
 * that writes events (cairn__write_txn: w->notify); `head` is the new last position (0
 * when unknown).
 * --------------------------------------------------------------------------------- */
void cairn__notify_open(cairn_env *e, const char *path);
void cairn__notify_close(cairn_env *e);
void cairn__notify_commit(cairn_env *e, uint64_t head);
uint32_t cairn__notify_seen(cairn_env *e);
void cairn__notify_wait(cairn_env *e, uint32_t seen, int ms);

#endif
