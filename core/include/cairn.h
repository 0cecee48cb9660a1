/*
 * cairn.h -- the public C interface of cairn, an embedded event store on LMDB.
 *
 * One header, one prefix.  Every function returns an int: CAIRN_OK (0) or a negative
 * CAIRN_E* code; results travel through out-parameters.  After a failure the calling
 * thread's cairn_last_error() holds the code, a detail message and, where the failure
 * has them, the fields a caller needs to build a precise exception.
 */
#ifndef CAIRN_H
#define CAIRN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------
 * Return codes.  Failures are negative and live in one block.
 * --------------------------------------------------------------------------------- */
#define CAIRN_OK 0
#define CAIRN_EINVAL (-30001)          /* bad argument; message names it */
#define CAIRN_ENOMEM (-30002)          /* allocation failed */
#define CAIRN_EIO (-30003)             /* I/O error from LMDB or the OS; message has errno text */
#define CAIRN_ECORRUPT (-30004)        /* checksum mismatch or not a cairn store; .position set */
#define CAIRN_ECLOSED (-30005)         /* handle closed, or used in a child after fork() */
#define CAIRN_EREADONLY (-30006)       /* write on a store opened read-only */
#define CAIRN_ENOENT (-30007)          /* store directory missing (read-only open) */
#define CAIRN_EVERSION (-30008)        /* wrong expected version; .request .expected .actual */
#define CAIRN_EDUPLICATE (-30009)      /* event id reused; .request .position */
#define CAIRN_ENOTFOUND (-30010)       /* no event at that position */
#define CAIRN_ECONDITION (-30011)      /* DCB append condition failed (spec section 5) */
#define CAIRN_EDELETED (-30012)        /* stream hard-deleted (spec section 6) */
#define CAIRN_ESCRIPT (-30013)         /* Lua script error (spec section 3) */
#define CAIRN_EREJECTED (-30014)       /* command rejected by a script */
#define CAIRN_ETOOBIG (-30015)         /* event larger than CAIRN_MAX_RECORD */
#define CAIRN_EBUSY (-30016)           /* store opened in this process in an incompatible mode */
#define CAIRN_EALREADY (-30017)        /* event already compensated */
#define CAIRN_ENOTCOMPENSABLE (-30018) /* no compensate handler for the event's type */
#define CAIRN_EINTERNAL (-30099)       /* a bug in cairn; message says where */

/* Expected-version markers for appends.  Any value >= 0 means "exactly this version". */
#define CAIRN_ANY (-2)
#define CAIRN_NO_STREAM (-1)
#define CAIRN_STREAM_EXISTS (-4)

/* Limits of the model (spec section 1). */
#define CAIRN_MAX_TYPE 255           /* bytes of an event type */
#define CAIRN_MAX_STREAM 1024        /* bytes of a stream name */
#define CAIRN_MAX_TAG 1024           /* bytes of one tag */
#define CAIRN_MAX_TAGS 65535         /* tags on one event */
#define CAIRN_MAX_RECORD (16u << 20) /* bytes of one stored record, all fields together */
#define CAIRN_MAX_SUBJECT 1024       /* bytes of a data subject (spec section 6) */

/* Durability of commits made through one handle. */
typedef enum cairn_durability {
    CAIRN_DURABLE_FULL = 0, /* fsync data and meta page: survives power loss */
    CAIRN_DURABLE_RELAXED, /* fsync data, meta page lazily: last commit may be undone, never torn */
    CAIRN_DURABLE_NONE     /* no sync; cairn_sync() makes everything durable */
} cairn_durability;

/* Event flags, stored in the record header. */
#define CAIRN_EVENT_BYTES 0x01u /* data is an opaque byte string, not JSON text */
/* Read only: data was stored encrypted with its subject's key (spec section 6).  A read
 * hands over the plaintext, or, once the subject was forgotten, no data and `forgotten`. */
#define CAIRN_EVENT_ENCRYPTED 0x04u

/* ---------------------------------------------------------------------------------
 * Errors.  Thread-local: valid until the next cairn call on the same thread.
 * --------------------------------------------------------------------------------- */
typedef struct cairn_error {
    int code;
    char message[512];
    size_t request;      /* index of the failing request in cairn_append_batch */
    int64_t expected;    /* CAIRN_EVERSION: the expectation given */
    int64_t actual;      /* CAIRN_EVERSION: the stream's current version (-1 when none) */
    uint64_t position;   /* CAIRN_ECORRUPT / CAIRN_EDUPLICATE / CAIRN_ESCRIPT: the position
                         concerned (for a script: the event being applied), 0 if none */
    char script[256];    /* CAIRN_ESCRIPT / CAIRN_EREJECTED: the script's name */
    int line;            /* CAIRN_ESCRIPT: 1-based line in the script's source, 0 if unknown */
    char reason[256];    /* CAIRN_EREJECTED: the reason given to reject() */
    const char *details; /* CAIRN_EREJECTED: details as JSON text (NULL if none) */
    size_t details_len;
    /* CAIRN_ECONDITION: the lowest positions after the condition's `after` holding events
     * its query matches, ascending (at least 1, at most CAIRN_CONDITION_POSITIONS) */
    uint64_t positions[5];
    size_t npositions;
} cairn_error;
#define CAIRN_CONDITION_POSITIONS 5

const cairn_error *cairn_last_error(void);
const char *cairn_errmsg(void);       /* cairn_last_error()->message */
const char *cairn_strerror(int code); /* static text for a code */

/* ---------------------------------------------------------------------------------
 * Store lifecycle.
 * --------------------------------------------------------------------------------- */
typedef struct cairn_store cairn_store;

typedef struct cairn_options {
    cairn_durability durability;
    int readonly;                      /* nonzero: no writes; the directory must exist */
    uint64_t map_size;                 /* initial LMDB map size in bytes; 0 for the default */
    uint64_t script_instruction_limit; /* VM instructions per script call; 0: 10,000,000 */
    uint64_t script_memory_limit;      /* bytes a script state may hold; 0: 64 MiB */
    /* Wall-clock ns one script invocation may run (each handler of a fold on its own);
     * 0: 1 s; UINT64_MAX: no time limit. */
    uint64_t script_time_limit_ns;
    /* Receives what scripts print(); NULL discards.  Called on the thread running the
     * script, possibly inside a write transaction: it must not call cairn. */
    void (*log)(void *ctx, const char *script, const char *msg, size_t len);
    void *log_ctx;
} cairn_options;

/* Default options: full durability, read-write, default map size. */
void cairn_options_init(cairn_options *opts);

/* Opens (creating when missing and not read-only) the store in directory `path`.
 * Handles on the same directory in one process share one LMDB environment.
 * Thread-safe; the handle may be used from any thread. */
int cairn_open(const char *path, const cairn_options *opts, cairn_store **out);

/* Closes the handle; other handles on the same directory keep working.  NULL is a no-op.
 * Must not race with other calls on the same handle. */
void cairn_close(cairn_store *store);

/* Makes every commit durable (for CAIRN_DURABLE_NONE / RELAXED). */
int cairn_sync(cairn_store *store);

/* ---------------------------------------------------------------------------------
 * Writing.
 * --------------------------------------------------------------------------------- */
typedef struct cairn_slice {
    const void *ptr;
    size_t len;
} cairn_slice;

/* One event to write.  All pointers are borrowed for the duration of the call. */
typedef struct cairn_event_in {
    cairn_slice type;        /* 1..255 bytes of UTF-8, no NUL */
    cairn_slice data;        /* JSON text, or bytes when flags has CAIRN_EVENT_BYTES;
                               len 0 without CAIRN_EVENT_BYTES means "no data" (None) */
    cairn_slice metadata;    /* JSON object text, or len 0 for none */
    const cairn_slice *tags; /* ntags tags, each 1..CAIRN_MAX_TAG bytes */
    size_t ntags;
    uint32_t schema; /* >= 1 */
    uint32_t flags;  /* CAIRN_EVENT_* */
    uint8_t id[16];  /* the event id (UUID bytes); see has_id */
    int has_id;      /* zero: the store assigns a UUIDv7 */
    /* The data subject (spec section 6), ptr NULL for none: 1..CAIRN_MAX_SUBJECT bytes of
     * UTF-8 without NUL.  `data` is then stored encrypted with the subject's key (the store
     * makes one at the subject's first event, and a fresh one after cairn_forget); no data
     * is encrypted too (it reads back as none, or as forgotten). */
    cairn_slice subject;
} cairn_event_in;

/* One stream's share of an atomic write. */
typedef struct cairn_append_req {
    cairn_slice stream;           /* 1..1024 bytes, no NUL, not starting with '$' (reserved) */
    int64_t expected;             /* CAIRN_ANY, CAIRN_NO_STREAM, CAIRN_STREAM_EXISTS or >= 0 */
    const cairn_event_in *events; /* at least one */
    size_t nevents;
} cairn_append_req;

typedef struct cairn_append_result {
    int64_t version;         /* stream version of the last event written */
    uint64_t position;       /* global position of the last event written */
    uint64_t first_position; /* global position of the first event written */
} cairn_append_result;

/* Appends the events of every request in one LMDB write transaction: all or nothing.
 * Requests are checked in order and see the effect of earlier ones.  A request whose
 * event ids are exactly those of one earlier request, in order, to the same stream, is
 * a retry: its result is the earlier one and nothing is written for it.  Any other reuse
 * of a written id fails with CAIRN_EDUPLICATE.  results must hold nreqs entries.  An event
 * that breaks a rule of cairn_event_in (metadata that is no JSON object included, or whose
 * reserved keys have the wrong types) is CAIRN_EINVAL worded as cairn.Event words it, with
 * " (event i)" added (i from 0 within its request), and nothing is written. */
int cairn_append_batch(cairn_store *store, const cairn_append_req *reqs, size_t nreqs,
                       cairn_append_result *results);

/* ---------------------------------------------------------------------------------
 * Dynamic consistency boundaries (docs/API.md section 5).
 * --------------------------------------------------------------------------------- */
/* Matches an event whose type is one of `types` and whose tags include every one of
 * `tags`; ntypes 0 means any type, ntags 0 any tags (so an item of neither matches every
 * event).  Matching reads the stored type and tags. */
typedef struct cairn_query_item {
    const cairn_slice *types;
    size_t ntypes;
    const cairn_slice *tags;
    size_t ntags;
} cairn_query_item;

/* Matches an event that any item matches; nitems 0 matches every event.  Events of '$'
 * streams (the store's own, section 6) never match, nor do removed ones. */
typedef struct cairn_query {
    const cairn_query_item *items;
    size_t nitems;
} cairn_query;

/* Holds when no event the query matches has a position greater than `after` (0: the
 * whole log). */
typedef struct cairn_condition {
    const cairn_query *query;
    uint64_t after;
} cairn_condition;

/* cairn_append_batch where request i also requires conditions[i] (NULL: none; conditions
 * NULL: none at all).  Each condition is checked inside the write transaction, after its
 * request's expected version, and sees the events of the earlier requests; a failing one
 * is CAIRN_ECONDITION with .request and .positions set, and nothing is written.  A retry
 * (see cairn_append_batch) checks neither. */
int cairn_append_conditional(cairn_store *store, const cairn_append_req *reqs,
                             const cairn_condition *const *conditions, size_t nreqs,
                             cairn_append_result *results);

/* cairn_append_batch with one request. */
int cairn_append(cairn_store *store, const char *stream, size_t stream_len, int64_t expected,
                 const cairn_event_in *events, size_t nevents, cairn_append_result *result);

/* Writes a fresh time-ordered UUID (version 7) into out. Thread-safe. */
void cairn_uuid7(uint8_t out[16]);

/* ---------------------------------------------------------------------------------
 * Reading.
 * --------------------------------------------------------------------------------- */

/* A decoded record.  Every pointer is borrowed: valid until the next call on the
 * iterator (or, for cairn_get, until the next cairn call on the same thread). */
typedef struct cairn_event {
    uint64_t position;
    int64_t version;
    int64_t timestamp; /* nanoseconds since the Unix epoch, UTC */
    uint32_t schema;
    uint32_t flags; /* CAIRN_EVENT_* */
    uint8_t id[16];
    cairn_slice stream;
    cairn_slice type;
    cairn_slice metadata; /* len 0 when none */
    cairn_slice data;
    size_t ntags;
    const uint8_t *tags_raw; /* ntags entries of (u16 little-endian length, bytes) */
    size_t tags_len;         /* bytes at tags_raw */
    cairn_slice subject;     /* the data subject (len 0: none) */
    uint32_t key_id;         /* CAIRN_EVENT_ENCRYPTED: the id of the subject's key it used */
    int forgotten; /* nonzero: the subject's key was forgotten; data is then len 0, NULL */
} cairn_event;

/* Iterates over the tags of an event: *cursor starts at 0; returns 0 when done. */
int cairn_event_tag(const cairn_event *ev, size_t *cursor, cairn_slice *tag);

/* A filter for cairn_iter_all.  Within one list any value matches; across lists all
 * must match; tags must all be present on the event.  Empty lists do not filter. */
typedef struct cairn_filter {
    const cairn_slice *types;
    size_t ntypes;
    const cairn_slice *categories;
    size_t ncategories;
    const cairn_slice *streams;
    size_t nstreams;
    const cairn_slice *tags;
    size_t ntags;
} cairn_filter;

typedef struct cairn_iter cairn_iter;

/* Iterates over the global log from position `start` (inclusive; 0 means the first
 * event forwards and the last backwards), at most `limit` events (0: no limit).
 * The filter is copied; an iterator holds no LMDB snapshot between refills. */
int cairn_iter_all(cairn_store *store, uint64_t start, int backwards, uint64_t limit,
                   const cairn_filter *filter, cairn_iter **out);

/* Iterates over the events `query` matches (the query is copied), in position order from
 * `start` (as cairn_iter_all), at most `limit`, answered from the tag and type indexes: an
 * item is read from the rarest of its tags, or from the union of its types.  *head (may be
 * NULL) receives the store's head when the call began; the iterator yields no event after
 * it (a decision read with it, then a condition with after = *head, sees exactly what the
 * decision saw). */
int cairn_iter_query(cairn_store *store, const cairn_query *query, uint64_t start, int backwards,
                     uint64_t limit, cairn_iter **out, uint64_t *head);
/* The head a query iterator's events are complete up to, for a condition's `after`: *head of
 * cairn_iter_query, or, once a forward read's limit is reached, the position of its last
 * event (the matches after it were not read).  0 for other iterators. */
uint64_t cairn_iter_head(const cairn_iter *it);

/* Iterates over one stream from version `start` (inclusive; -1 means the first forwards
 * and the last backwards).  A stream that does not exist reads as empty. */
int cairn_iter_stream(cairn_store *store, const char *stream, size_t stream_len, int64_t start,
                      int backwards, uint64_t limit, cairn_iter **out);

/* Produces the next event: returns 1 and fills *ev, 0 at the end, or a negative code.
 * When cairn_iter_buffered() is 0 the call reads LMDB (a caller holding a lock such as
 * Python's GIL should release it); otherwise it only copies from the buffer. */
int cairn_iter_next(cairn_iter *it, cairn_event *ev);
size_t cairn_iter_buffered(const cairn_iter *it);
void cairn_iter_close(cairn_iter *it);

/* Reads the event at `position` into *ev (pointers valid until the next cairn call on
 * this thread).  CAIRN_ENOTFOUND when there is none. */
int cairn_get(cairn_store *store, uint64_t position, cairn_event *ev);

int cairn_head(cairn_store *store, uint64_t *out);
/* The hash chain's head as of one snapshot (docs/API.md section 6): *pos the last position
 * ever assigned (0 for an empty store) and hash its chain hash (BLAKE2b-256; the genesis
 * constant for an empty store).  Recorded outside the store, it lets cairn_verify prove
 * that no event up to *pos was changed since. */
int cairn_chain_head(cairn_store *store, uint64_t *pos, uint8_t hash[32]);
int cairn_stream_version(cairn_store *store, const char *stream, size_t stream_len, int64_t *out);

/* Lists stream names starting with `prefix`, sorted bytewise, up to `max` names after
 * `after` (exclusive; NULL/0 to start).  The callback gets each name; a nonzero return
 * stops the listing.  Pages like an iterator: call again with the last name seen. */
typedef int (*cairn_name_fn)(void *ctx, const char *name, size_t len);
int cairn_streams(cairn_store *store, const char *prefix, size_t prefix_len, const char *after,
                  size_t after_len, size_t max, cairn_name_fn fn, void *ctx);

/* Checks every record's checksum and chain hash (recomputed from genesis over every
 * position), that positions count up, that every index agrees with the log, and that the
 * keys file holds what reads need (a slot for every sealed event's key id; every live
 * subject's key, not zeroed).  Fills the counts; the first damage is CAIRN_ECORRUPT naming it. */
typedef struct cairn_verify_report {
    uint64_t events;
    uint64_t streams;
    uint64_t head;
    uint8_t chain[32]; /* the chain hash at `head`, recomputed from genesis */
} cairn_verify_report;
typedef void (*cairn_progress_fn)(void *ctx, uint64_t done, uint64_t total);
int cairn_verify(cairn_store *store, cairn_verify_report *report, cairn_progress_fn progress,
                 void *ctx);

/* cairn_verify going on past damage: each damaged event of the log pass (a record that does
 * not decode or check, or an index entry it lacks; a run of missing positions is one) is
 * reported to damage(damage_ctx, position, message) -- message valid during the call -- and
 * the pass goes on with the next event.  When it found any, the passes that compare index
 * totals and streams (which would only restate it) do not run, and the call fails with
 * CAIRN_ECORRUPT naming the first.  The check of the keys file runs after the log pass
 * either way: each live subject whose key is missing or zeroed is reported with position 0.
 * report->events counts the sound events.  damage NULL: cairn_verify. */
typedef void (*cairn_damage_fn)(void *ctx, uint64_t position, const char *message);
int cairn_verify_all(cairn_store *store, cairn_verify_report *report, cairn_progress_fn progress,
                     void *ctx, cairn_damage_fn damage, void *damage_ctx);

/* The position of the event with this id (the id index and its tail, as appends see
 * it): CAIRN_ENOTFOUND when no event has it. */
int cairn_event_position(cairn_store *store, const uint8_t id[16], uint64_t *position);

/* ---------------------------------------------------------------------------------
 * Stream lifecycle (spec section 6).  Every call that changes something appends, in the
 * same commit as its effect, one event to the reserved stream "$lifecycle" (read it with
 * cairn_iter_stream); a call that fails writes nothing.  Removed events are hidden from
 * every read at once and their space is reclaimed later; positions never come back.
 * --------------------------------------------------------------------------------- */
#define CAIRN_NO_LIMIT (-1) /* a cairn_stream_meta field without a limit */

typedef struct cairn_stream_meta {
    int64_t max_count;       /* keep the newest n >= 1 events, or CAIRN_NO_LIMIT */
    int64_t max_age;         /* remove events at least this many seconds (>= 0) old, or none */
    int64_t truncate_before; /* remove the versions below this one (>= 0), or none */
} cairn_stream_meta;

/* Deletes a stream: soft (hard 0) removes its events as truncate_before = last version + 1
 * would, and a later append continues numbering after the last version; hard (nonzero)
 * makes it a tombstone: every read and append of it fails with CAIRN_EDELETED, forever.
 * `expected` as for appends, checked against the last version (CAIRN_EVERSION).  Writes a
 * "$StreamDeleted" event {"stream","hard","version"}; *position (may be NULL) gets its
 * position.  A hard-deleted stream: CAIRN_EDELETED; a '$' name: CAIRN_EINVAL. */
int cairn_delete_stream(cairn_store *store, const char *stream, size_t stream_len, int64_t expected,
                        int hard, uint64_t *position);

/* Sets all three limits of a stream (also one without events yet), enforced by every read
 * from now on; a lowered limit never brings a removed event back.  Writes a
 * "$StreamMetadataSet" event {"stream","version","max_count","max_age","truncate_before"}
 * (version: the stream's last version; null for no limit); *position (may be NULL) gets its
 * position.  A bad value is CAIRN_EINVAL naming it; a hard-deleted stream CAIRN_EDELETED. */
int cairn_set_stream_metadata(cairn_store *store, const char *stream, size_t stream_len,
                              const cairn_stream_meta *meta, uint64_t *position);

/* The limits of a stream, CAIRN_NO_LIMIT where none (also for a stream never named). */
int cairn_stream_metadata(cairn_store *store, const char *stream, size_t stream_len,
                          cairn_stream_meta *out);

/* Reclaims the space of every removed event of every stream with limits or a delete: its
 * record and every index entry leave the file (its position stays a hole), in commits of
 * at most 4,096 events; writers of other processes go on between them.  Removed events
 * are reclaimed without it too, at the next write to their stream.  progress (may be
 * NULL) is called after each commit with (streams done, streams with limits). */
typedef struct cairn_maintain_report {
    uint64_t streams; /* streams with limits or a delete gone through */
    uint64_t removed; /* events reclaimed */
} cairn_maintain_report;
int cairn_maintain(cairn_store *store, cairn_maintain_report *report, cairn_progress_fn progress,
                   void *ctx);

/* ---------------------------------------------------------------------------------
 * Crypto-shredding (spec section 6; keys.c).
 * --------------------------------------------------------------------------------- */

/* Forgets a data subject: its key becomes unrecoverable from every file of the store
 * directory (it never was in LMDB; its slot in the `keys` file is overwritten with zeros
 * and flushed), and a `$SubjectForgotten` {"subject"} event is appended to `$lifecycle` in
 * the same commit (always made durable, whatever the handle's durability).  Its events then
 * read with `forgotten` set and no data; aggregate snapshots are dropped (they may hold what
 * a reducer took from the data).  One event per call, also for an unknown or forgotten
 * subject.  A bad subject is CAIRN_EINVAL, and nothing is written.  *position (may be
 * NULL): the position of the $SubjectForgotten event. */
int cairn_forget(cairn_store *store, const char *subject, size_t len, uint64_t *position);

/* For tests and audits only: the subject's current key (the one new events get) into key;
 * *found 0 when the subject has none (never had one, or forgotten). */
int cairn__subject_key(cairn_store *store, const char *subject, size_t len, uint8_t key[32],
                       int *found);

/* ---------------------------------------------------------------------------------
 * Operations: backups and the file's figures (backup.c).
 * --------------------------------------------------------------------------------- */

/* Writes a consistent copy of the store into directory `dest` (missing, then made, or
 * empty; anything else is CAIRN_EINVAL): one read snapshot, so whole commits only,
 * compacted (free pages left out, LMDB's MDB_CP_COMPACT), with everything the store holds
 * -- events, indexes, scripts, projection state, checkpoints.  Writers of every process
 * go on meanwhile; the copy is fsync'd before the call returns.  On failure nothing is
 * left in `dest` (a directory made by the call is removed). */
int cairn_backup(cairn_store *store, const char *dest);

typedef struct cairn_filestat {
    uint64_t file_bytes; /* size of data.mdb */
    uint64_t map_bytes;  /* the current map (address space, not disk) */
    uint32_t page_size;
    uint64_t pages_used; /* pages up to the last one used (the rest of the file is unused) */
    uint64_t pages_free; /* pages in LMDB's free list, reused by later commits */
    uint64_t txn_id;     /* the last committed LMDB transaction */
} cairn_filestat;

/* The figures of the store's data.mdb as of one read snapshot. */
int cairn_stat(cairn_store *store, cairn_filestat *out);

/* ---------------------------------------------------------------------------------
 * Scripts (spec section 3).  Stored in the store: every process that opens it has them.
 * --------------------------------------------------------------------------------- */
typedef enum cairn_script_kind {
    CAIRN_SCRIPT_AGGREGATE = 1,
    CAIRN_SCRIPT_PROJECTION = 2,
    CAIRN_SCRIPT_UPCASTERS = 3 /* one script, named "upcasters" */
} cairn_script_kind;

/* Compiles and checks the script's shape (CAIRN_ESCRIPT on a syntax error or bad shape),
 * then stores it under (kind, name).  Redefining with the same source changes nothing. */
int cairn_define_script(cairn_store *store, cairn_script_kind kind, const char *name,
                        size_t name_len, const char *src, size_t src_len);

/* Lists the names of the scripts of one kind, sorted. */
int cairn_scripts(cairn_store *store, cairn_script_kind kind, cairn_name_fn fn, void *ctx);

/* Reads the stored source of a script into a malloc'd buffer (*src, *len; caller frees).
 * CAIRN_ENOTFOUND when there is none. */
int cairn_script_source(cairn_store *store, cairn_script_kind kind, const char *name,
                        size_t name_len, char **src, size_t *len);

/* Iterators and cairn_get apply upcasters unless raw is set (cairn_iter_set_raw, or
 * cairn_get_ex with raw).  The upcasted data/metadata live in the iterator until its next call. */
void cairn_iter_set_raw(cairn_iter *it, int raw);
/* Nonzero when the upcasters seen at the iterator's last refill apply to it: its next()
 * may run Lua even when it only copies from the buffer. */
int cairn_iter_upcasting(const cairn_iter *it);
int cairn_get_ex(cairn_store *store, uint64_t position, int raw, cairn_event *ev);

/* ---------------------------------------------------------------------------------
 * Aggregates (spec section 2 "Aggregates").  `aggregate` NULL means the stream's category.
 * A missing aggregate script is CAIRN_ENOTFOUND; a command the script's decide table lacks
 * is CAIRN_EINVAL naming it.
 * --------------------------------------------------------------------------------- */
#define CAIRN_AT_NONE INT64_MIN

typedef struct cairn_state {
    char *json; /* the state as JSON text, NUL-terminated (malloc'd; free with free()) */
    size_t len;
    int64_t version;  /* version of the last event applied, -1 when none */
    uint64_t applied; /* events folded by this load (after the snapshot used, if any) */
} cairn_state;

/* Folds the stream's events (up to `version` when >= 0, or up to the last event whose
 * timestamp <= at_ns when at_ns != CAIRN_AT_NONE) through the aggregate's reducers,
 * starting from the newest usable snapshot. */
int cairn_load(cairn_store *store, const char *stream, size_t stream_len, const char *aggregate,
               size_t aggregate_len, int64_t version, int64_t at_ns, cairn_state *out);

/* Runs decide[command](state, {type=command, data, metadata}) on the current state inside
 * the write transaction and appends the events it returns, each with `metadata` merged in.
 * No events: result version = current version, position = first_position = 0.
 * CAIRN_EREJECTED when the script called reject().
 * `command_id` (16 bytes, or NULL: none) makes the call idempotent (spec 2 "Aggregates"):
 * the events get ids derived from it, and when they are in the store already the call
 * returns their result without running decide or checking `expected`, and writes nothing.
 * The id used before with another stream, aggregate, command or data: CAIRN_EDUPLICATE. */
int cairn_execute(cairn_store *store, const char *stream, size_t stream_len, const char *aggregate,
                  size_t aggregate_len, const char *command, size_t command_len, cairn_slice data,
                  cairn_slice metadata, int64_t expected, const uint8_t *command_id,
                  cairn_append_result *result);

/* A decision model over a consistency boundary (docs/API.md section 5), in one write
 * transaction: the aggregate script's boundary(cmd) gives a query (a list of query items);
 * every event it matches is folded, in position order, through init/apply (upcasters
 * applied; from a boundary snapshot where one is sound, see API.md); decide[command](state,
 * cmd) runs on the result, cmd = {type = command, data, metadata}; the events it returns are
 * appended to `stream`, each with `metadata` merged in.  Nothing can be appended between the
 * fold and the write.  No events: result version = the stream's current version, position =
 * first_position = 0.  No such script: CAIRN_ENOTFOUND; a script without boundary, or a
 * command its decide table lacks: CAIRN_EINVAL; reject(): CAIRN_EREJECTED; a boundary that
 * fails or returns no list of query items: CAIRN_ESCRIPT.  Nothing is written on failure. */
int cairn_decide(cairn_store *store, const char *aggregate, size_t aggregate_len,
                 const char *command, size_t command_len, cairn_slice data, cairn_slice metadata,
                 const char *stream, size_t stream_len, cairn_append_result *result);

/* Appends what compensate[type](state, event) returns for the event at `version`, with
 * metadata.compensates = metadata.causation_id = that event's id over `metadata`.
 * CAIRN_EALREADY / CAIRN_ENOTCOMPENSABLE / CAIRN_ESCRIPT (no events) / CAIRN_EINVAL (no
 * such version). */
int cairn_compensate(cairn_store *store, const char *stream, size_t stream_len, int64_t version,
                     const char *aggregate, size_t aggregate_len, cairn_slice metadata,
                     cairn_append_result *result);

/* Compensates every not-yet-compensated event whose metadata.correlation_id equals
 * `correlation_id` (events that are compensations excluded), newest first, in one commit.
 * *results (malloc'd, caller frees) gets one entry per compensated event. */
int cairn_rollback(cairn_store *store, const char *correlation_id, size_t len,
                   cairn_append_result **results, size_t *count);

/* ---------------------------------------------------------------------------------
 * Projections (spec section 2 "Projections", section 3 "Projection").  Defined with
 * cairn_define_script(CAIRN_SCRIPT_PROJECTION, ...): redefining with other source resets the
 * projection; an inline one catches up inside the define.  A missing projection is
 * CAIRN_ENOTFOUND.
 * --------------------------------------------------------------------------------- */

/* Catches up one async projection (`name`), or every one (`name` NULL), in batches of up
 * to 1,000 source events per commit; state, position and emitted events commit together.
 * A handler failure faults only its projection (its state and position stay as of the
 * event before the failing one) and is not this call's error.  Faulted and inline
 * projections are skipped.  *processed (may be NULL) counts source events applied. */
int cairn_run_projections(cairn_store *store, const char *name, size_t name_len,
                          uint64_t *processed);

typedef struct cairn_projection_status {
    uint64_t position;       /* last position processed (0 before the first run) */
    int started;             /* it has run (or been caught up) at least once */
    int faulted;             /* stopped at a failing handler until reset or redefined */
    char error[600];         /* faulted: message, script line and event position */
    int error_line;          /* faulted: 1-based line in the script, 0 if unknown */
    uint64_t error_position; /* faulted: position of the failing event (0 if none) */
} cairn_projection_status;

int cairn_projection_info(cairn_store *store, const char *name, size_t name_len,
                          cairn_projection_status *out);

/* The state of a projection as JSON (malloc'd, NUL-terminated; caller frees).  partition
 * NULL: the unpartitioned state.  CAIRN_ENOTFOUND before the first run, or for a partition
 * that has seen no event. */
int cairn_projection_state(cairn_store *store, const char *name, size_t name_len,
                           const char *partition, size_t partition_len, char **json, size_t *len);

/* Lists a partitioned projection's partition keys, sorted bytewise. */
int cairn_projection_partitions(cairn_store *store, const char *name, size_t name_len,
                                cairn_name_fn fn, void *ctx);

/* Clears state, position and fault: the next run rebuilds from position 1 (an inline
 * projection rebuilds now).  Emitted events are not emitted again (their ids exist). */
int cairn_projection_reset(cairn_store *store, const char *name, size_t name_len);

/* Removes the projection's script, state and record. */
int cairn_delete_projection(cairn_store *store, const char *name, size_t name_len);

/* A background thread running cairn_run_projections(store, NULL) whenever the head moves:
 * it sleeps on the store's commit notification (woken by commits of any process; it looks
 * again every 250 ms).  Stop it before closing the store. */
typedef struct cairn_runner cairn_runner;
int cairn_projections_start(cairn_store *store, cairn_runner **out);
void cairn_projections_stop(cairn_runner *runner); /* joins the thread; NULL, or a runner
                                                    started before fork() (in the child): no-op */

/* The category of a stream name: the part before the first '-', or the whole name. */
cairn_slice cairn_category(const char *stream, size_t stream_len);

/* ---------------------------------------------------------------------------------
 * Subscriptions (spec section 2 "Subscriptions").  Catch-up from `start` through the
 * filtered log (as cairn_iter_all, upcasters applied), then live: a commit in any process
 * wakes a waiting cairn_sub_next (docs/API.md "Subscriptions").
 * --------------------------------------------------------------------------------- */
typedef struct cairn_sub cairn_sub;

/* Opens a subscription from position `start` (0 or 1: the first event).  `filter` (NULL
 * for none) is copied.  With a `name` (1..255 bytes) the subscription is durable: it
 * starts after the stored checkpoint when there is one (ignoring `start`), and the
 * checkpoint advances to an event's position when the following event is requested and at
 * cairn_sub_close; a named subscription needs a writable handle.  The subscription keeps
 * its own reference to the store's environment and a copy of the handle's settings
 * (durability, script limits): it may outlive `store`.  One thread at a time. */
int cairn_subscribe(cairn_store *store, uint64_t start, const cairn_filter *filter,
                    const char *name, size_t name_len, cairn_sub **out);

/* Waits up to timeout_ms (-1: forever, 0: do not wait) for the next matching event:
 * 1 and *ev filled (pointers valid until the next call on sub), 0 on timeout, or a
 * negative code.  A named subscription first stores the position of the event the
 * previous call returned. */
int cairn_sub_next(cairn_sub *sub, int timeout_ms, cairn_event *ev);

/* Events the next cairn_sub_next calls can return by copying from a buffer: no LMDB read,
 * no checkpoint write, no upcaster run, no wait.  0: the next call may do any of those (a
 * caller holding a lock such as Python's GIL should release it). */
size_t cairn_sub_buffered(const cairn_sub *sub);

/* Stores a named subscription's checkpoint (the last event returned) and frees it.
 * NULL is a no-op.  Returns the checkpoint write's code (CAIRN_OK for unnamed). */
int cairn_sub_close(cairn_sub *sub);

/* Stores a named subscription's checkpoint at the event the last cairn_sub_next returned
 * now, instead of at the next call or at close.  CAIRN_OK for unnamed ones. */
int cairn_sub_ack(cairn_sub *sub);

/* Frees a subscription without acknowledging the event in hand: a named subscription opened
 * again starts at that event (the consumer failed on it).  NULL is a no-op. */
void cairn_sub_discard(cairn_sub *sub);

/* The stored checkpoint of subscription `name`: 0 when there is none. */
int cairn_checkpoint(cairn_store *store, const char *name, size_t name_len, uint64_t *pos);

/* Lists every named subscription with its stored checkpoint, sorted by name bytewise; a
 * nonzero return from fn stops the listing. */
typedef int (*cairn_checkpoint_fn)(void *ctx, const char *name, size_t len, uint64_t checkpoint);
int cairn_subscriptions(cairn_store *store, cairn_checkpoint_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* CAIRN_H */
