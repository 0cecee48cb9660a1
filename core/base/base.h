/*
 * base.h -- the layer under both the storage engine (core/src) and the Lua host (lua/): errors,
 * the one growable buffer, byte order, the UTF-8 and name checks, UUIDs and the clock, the
 * metadata links.  Built on libc, jansson and xxHash; it includes neither
 * LMDB nor Lua, and nothing here is public.
 */
#ifndef CAIRN_BASE_H
#define CAIRN_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cairn.h"

/* ---------------------------------------------------------------------------------
 * Errors (error.c): the per-thread detail behind cairn_last_error().  Each returns `code`
 * so callers can `return cairn__fail(...)`.
 * --------------------------------------------------------------------------------- */
cairn_error *cairn__err(void);
int cairn__fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cairn__clear_error(void);
/* The calling thread's error, copied so that another thread can make it its own: a writer
 * that ran another thread's write (group commit, store.c) hands its failure over.  save
 * copies the details too (NULL + nothing when out of memory); restore sets the calling
 * thread's error to the copy (details live until its next restore) and frees the copy. */
typedef struct cairn__err_copy {
    cairn_error e;
    char *details;
} cairn__err_copy;
void cairn__err_save(cairn__err_copy *c);
void cairn__err_restore(cairn__err_copy *c);
/* CAIRN_ECORRUPT "position N: what", with .position = pos: damage found at a position. */
int cairn__corrupt(uint64_t pos, const char *what);

/* ---------------------------------------------------------------------------------
 * The growable byte buffer (buf.c).  Start it zeroed; the owner frees p (cairn_buf_free).
 * Plain malloc'd memory, outside any Lua memory cap.  reserve/append return 0, or -1 when
 * memory ran out (the buffer is then as it was).
 * --------------------------------------------------------------------------------- */
typedef struct cairn_buf {
    char *p;
    size_t len, cap;
} cairn_buf;

int cairn_buf_reserve(cairn_buf *b, size_t extra);
int cairn_buf_append(cairn_buf *b, const void *p, size_t n);
void cairn_buf_free(cairn_buf *b);

/* ---------------------------------------------------------------------------------
 * Byte order.  Keys and index values are big-endian (they sort with LMDB's default
 * memcmp comparator); the record header is little-endian.
 * --------------------------------------------------------------------------------- */
/* the little-endian accessors copy native words, so the host must be little-endian; a
 * big-endian word is then one byte swap (gcc does not make one of a byte loop) */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "cairn assumes a little-endian host");
static inline void cairn__put_be64(uint8_t *p, uint64_t v) {
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
}
static inline uint64_t cairn__get_be64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}
static inline void cairn__put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}
static inline uint32_t cairn__get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void cairn__put_le64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint64_t cairn__get_le64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline void cairn__put_le32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint32_t cairn__get_le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void cairn__put_le16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline uint16_t cairn__get_le16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* ---------------------------------------------------------------------------------
 * Checks (check.c).  UTF-8 is strict: no overlong forms, surrogates or code points above
 * U+10FFFF.
 * --------------------------------------------------------------------------------- */
/* The length of the valid UTF-8 sequence at s (s[0] >= 0x80, n bytes left), 0 when invalid. */
static inline size_t cairn__utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c >= 0xC2 && c <= 0xDF) {
        if (n >= 2 && (s[1] & 0xC0) == 0x80) return 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;  /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogate */
        return 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;  /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}
/* 1 when the len bytes at p are valid UTF-8. */
int cairn__check_utf8(const void *p, size_t len);

/* Script, projection and subscription names: 1..CAIRN__NAME_MAX bytes of UTF-8 without NUL;
 * CAIRN_EINVAL otherwise. */
#define CAIRN__NAME_MAX 255
int cairn__check_name(const char *name, size_t len);
/* Stream names (spec 1): 1..CAIRN_MAX_STREAM bytes of UTF-8 without NUL, not starting with
 * '$' (reserved); CAIRN_EINVAL naming `what` otherwise. */
int cairn__check_stream(const void *name, size_t len, const char *what);
/* The same rules without the reservation of '$' names: for reads, which may name the
 * store's own streams ($lifecycle, spec 6). */
int cairn__check_stream_name(const void *name, size_t len, const char *what);

/* ---------------------------------------------------------------------------------
 * The rules of an event as written (spec 1; check.c), one wording for every way in:
 * cairn_append (append.c), cairn.Event (the binding) and the events scripts hand over
 * (decide, compensate, emit, upcasters: lua/event_in.c and core/script).  Each is
 * CAIRN_EINVAL naming the field ("type must be 1..255 bytes of UTF-8, got 0"); what a
 * language calls its types ("must be a str", "must be a string") stays with the language.
 * --------------------------------------------------------------------------------- */
#define CAIRN__SCHEMA_RULE "schema must be an int from 1 to 4294967295" /* + ", got N" */
/* A name-like field: 1..max bytes of UTF-8 without NUL, `what` leading the message ("type must
 * be 1..255 bytes of UTF-8, got 0", "... must not contain NUL characters", "... is not valid
 * UTF-8"); the two below are it for a type and a tag. */
int cairn__check_text(const void *p, size_t len, size_t max, const char *what);
int cairn__check_type(const void *p, size_t len); /* 1..CAIRN_MAX_TYPE bytes of UTF-8, no NUL */
int cairn__check_tag(const void *p, size_t len);  /* 1..CAIRN_MAX_TAG bytes of UTF-8, no NUL */
int cairn__check_ntags(size_t n);                 /* at most CAIRN_MAX_TAGS */
int cairn__check_schema(int64_t schema);          /* 1..UINT32_MAX */
/* A data subject (spec 6): 1..CAIRN__SUBJECT_MAX bytes of UTF-8 without NUL. */
#define CAIRN__SUBJECT_MAX 1024
int cairn__check_subject(const void *p, size_t len);
/* Metadata JSON text (len 0: none) is an object, and its reserved keys have their types
 * (cairn__links_check).  The text itself is trusted to be JSON (an encoder wrote it). */
int cairn__check_metadata(const void *json, size_t len);
/* All of the above for one event, and its flags (data is any JSON text, or bytes). */
int cairn__event_check(const cairn_event_in *ev);

/* ---------------------------------------------------------------------------------
 * UUIDs and the clock (uuid.c).  cairn_uuid7 (public) makes the ids of new events.
 * --------------------------------------------------------------------------------- */
/* The wall clock, ns since the Unix epoch (event timestamps, UUIDv7 milliseconds). */
int64_t cairn__now_ns(void);
/* A UUIDv8 derived from the n bytes at p (XXH3-128): the same bytes, the same id. */
void cairn__uuid_derive(const void *p, size_t n, uint8_t out[16]);
/* The id of the index-th event written on behalf of `src` (the id of a projection's source
 * event, or a command id) by `name` (0..CAIRN__NAME_MAX bytes: the projection; "" for a
 * command): cairn__uuid_derive of (name, NUL, src, index big-endian u32). */
void cairn__uuid_derive_nth(const char *name, size_t name_len, const uint8_t src[16],
                            uint32_t index, uint8_t out[16]);
/* Parses 32 hex digits (either case, dashes anywhere ignored) into out: 1, else 0. */
int cairn__parse_uuid(const char *s, size_t len, uint8_t out[16]);
/* The canonical lowercase form, 36 characters and a NUL. */
void cairn__uuid_format(const uint8_t id[16], char out[37]);

/* ---------------------------------------------------------------------------------
 * Metadata links (links.c): `correlation_id` when it is a string, `compensates` when it is
 * a UUID string.  What these say is what append indexes, verify checks and rollback skips.
 * --------------------------------------------------------------------------------- */
struct json_t;
typedef struct cairn_links {
    const char *corr; /* correlation_id, NULL when none; valid until cairn__links_free */
    size_t corr_len;
    int has_comp; /* the event is a compensation of the event `comp` */
    uint8_t comp[16];
    struct json_t *doc; /* the parsed metadata */
} cairn_links;
/* Whether metadata may carry links (its bytes name either key); no parse. */
int cairn__links_maybe(const void *metadata, size_t len);
/* 1 when the metadata (JSON text, len 0 for none) has a link: then *l holds the parse until
 * cairn__links_free.  0 when it has none or is not JSON: nothing is held. */
int cairn__links_parse(const void *metadata, size_t len, cairn_links *l);
void cairn__links_free(cairn_links *l);
/* The reserved keys have types: correlation_id and causation_id are strings, compensates a
 * UUID string.  CAIRN_EINVAL naming the key otherwise (metadata that is no JSON object, or
 * carries none of them, passes). */
int cairn__links_check(const void *metadata, size_t len);
/* The same rule for one key and its value: str (len bytes) when the value is a string, else
 * NULL and `kind` saying what it is ("a number").  CAIRN_OK for a key that is not reserved. */
int cairn__links_check_key(const char *key, size_t klen, const char *str, size_t len,
                           const char *kind);

#endif
