/*
 * codec.c -- the stored record: its layout (see storage.h), checksum, validation,
 * and the tags and category of an event.
 */
#include <stdio.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "storage.h"

static size_t tags_size(const cairn_event_in *ev) {
    size_t n = 0;
    for (size_t i = 0; i < ev->ntags; i++) n += 2 + ev->tags[i].len;
    return n;
}

/* LEB128: 7 bits a byte, least significant first, the top bit set on all but the last */
static size_t uv_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

static uint8_t *uv_put(uint8_t *p, uint64_t v) {
    while (v >= 0x80) *p++ = (uint8_t)(v | 0x80), v >>= 7;
    *p++ = (uint8_t)v;
    return p;
}

/* 0 past the end or past 10 bytes */
static const uint8_t *uv_get(const uint8_t *p, const uint8_t *end, uint64_t *v) {
    uint64_t x = 0;
    for (unsigned s = 0; p < end && s < 70; s += 7) {
        uint8_t b = *p++;
        x |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) {
            *v = x;
            return p;
        }
    }
    return NULL;
}

/* The varints of a format-3 record, in their order (docs/FORMAT.md). */
#define REC3_NV 9
static void rec3_fields(uint64_t f[REC3_NV], const cairn_slice *stream, const cairn_event_in *ev,
                        const cairn_rec_extra *x, int64_t version) {
    f[0] = (uint64_t)version;
    f[1] = ev->schema;
    f[2] = stream->len;
    f[3] = ev->type.len;
    f[4] = ev->ntags;
    f[5] = tags_size(ev);
    f[6] = ev->metadata.len;
    f[7] = x ? x->key_id : 0;
    f[8] = x ? x->subject.len : 0;
}

size_t cairn__record_limit_size(const cairn_slice *stream, const cairn_event_in *ev,
                                const cairn_rec_extra *x) {
    return CAIRN_REC_LIMIT_HEADER + stream->len + ev->type.len + tags_size(ev) + ev->metadata.len +
        (x ? x->subject.len : 0) + ev->data.len;
}

size_t cairn__record_size(const cairn_slice *stream, const cairn_event_in *ev,
                          const cairn_rec_extra *x, int64_t version, int keep) {
    uint64_t f[REC3_NV];
    size_t n = CAIRN_REC_FIXED + (keep ? CAIRN_CHAIN : 0);
    rec3_fields(f, stream, ev, x, version);
    for (int i = 0; i < REC3_NV; i++) n += uv_size(f[i]);
    return n + stream->len + ev->type.len + f[5] + ev->metadata.len + f[8] + ev->data.len;
}

/* Where a format-3 record's hashed bytes skip the stored hash: [8, 34) and [from, end). */
static size_t rec3_after_hash(const uint8_t *r) {
    return CAIRN_REC_FIXED + ((r[9] & CAIRN_REC_CHAINED) ? CAIRN_CHAIN : 0);
}

void cairn__record_write(uint8_t *out, const cairn_slice *stream, const cairn_event_in *ev,
                         const cairn_rec_extra *x, const uint8_t *id, uint64_t position,
                         int64_t version, int64_t timestamp, int keep,
                         const uint8_t prev[CAIRN_CHAIN], uint8_t chain[CAIRN_CHAIN]) {
    uint64_t f[REC3_NV];
    uint8_t *p;

    rec3_fields(f, stream, ev, x, version);
    out[8] = CAIRN_REC_FORMAT;
    out[9] = (uint8_t)(ev->flags | (keep ? CAIRN_REC_CHAINED : 0));
    memcpy(out + 10, id, 16);
    cairn__put_le64(out + 26, (uint64_t)timestamp);
    p = out + rec3_after_hash(out);
    for (int i = 0; i < REC3_NV; i++) p = uv_put(p, f[i]);
    memcpy(p, stream->ptr, stream->len), p += stream->len;
    memcpy(p, ev->type.ptr, ev->type.len), p += ev->type.len;
    for (size_t i = 0; i < ev->ntags; i++) {
        cairn__put_le16(p, (uint16_t)ev->tags[i].len);
        memcpy(p + 2, ev->tags[i].ptr, ev->tags[i].len);
        p += 2 + ev->tags[i].len;
    }
    if (ev->metadata.len) memcpy(p, ev->metadata.ptr, ev->metadata.len), p += ev->metadata.len;
    if (f[8]) memcpy(p, x->subject.ptr, f[8]), p += f[8];
    if (ev->data.len) memcpy(p, ev->data.ptr, ev->data.len), p += ev->data.len;
    /* the chain hash covers the position and every byte but the checksum and itself; the
     * checksum, seeded with the position, then covers the hash too */
    cairn__chain_hash(prev, position, out, (size_t)(p - out), chain);
    if (keep) memcpy(out + CAIRN_REC_FIXED, chain, CAIRN_CHAIN);
    cairn__put_le64(out, XXH3_64bits_withSeed(out + 8, (size_t)(p - out) - 8, position));
}

const uint8_t *cairn__record_id(const void *rec, size_t len) {
    const uint8_t *r = rec;
    if (len >= CAIRN_REC_FIXED && r[8] == 3) return r + 10;
    if (len >= CAIRN_REC_HEADER1 && (r[8] == 1 || r[8] == 2)) return r + 56;
    return NULL;
}

int cairn__record_chain_input(const void *rec, size_t len, cairn_slice part[2]) {
    const uint8_t *r = rec;
    if (r[8] == 1) { /* every byte after the checksum */
        part[0].ptr = r + 8, part[0].len = len - 8, part[1].ptr = NULL, part[1].len = 0;
        return 0;
    }
    if (r[8] == 2) { /* every byte but the checksum and the hash; the position is in it */
        part[0].ptr = r + 8, part[0].len = 72 - 8;
        part[1].ptr = r + 104, part[1].len = len - 104;
        return 0;
    }
    part[0].ptr = r + 8, part[0].len = CAIRN_REC_FIXED - 8;
    part[1].ptr = r + rec3_after_hash(r), part[1].len = len - rec3_after_hash(r);
    return 1; /* the position is hashed before them */
}

/* A format-3 record (docs/FORMAT.md): lengths checked against the record's size before
 * any is used. */
static int decode3(const uint8_t *r, size_t len, uint64_t position, cairn_event *ev,
                   cairn_rec_info *info) {
    const uint8_t *p, *end = r + len;
    uint64_t f[REC3_NV], left;
    if (len < CAIRN_REC_FIXED || (r[9] & ~(1 | 4 | CAIRN_REC_CHAINED))) return -1;
    if ((size_t)rec3_after_hash(r) > len) return -1;
    p = r + rec3_after_hash(r);
    for (int i = 0; i < REC3_NV; i++)
        if (!(p = uv_get(p, end, &f[i]))) return -1;
    if (f[0] > INT64_MAX || f[1] > UINT32_MAX || f[2] > UINT16_MAX || f[3] > UINT16_MAX ||
        f[4] > UINT16_MAX || f[7] > UINT32_MAX || f[8] > UINT16_MAX)
        return -1;
    left = (uint64_t)(end - p); /* each length at most it before they are added */
    if (f[5] > left || f[6] > left || f[2] + f[3] + f[5] + f[6] + f[8] > left) return -1;
    ev->flags = r[9] & (1 | 4);
    memcpy(ev->id, r + 10, 16);
    ev->timestamp = (int64_t)cairn__get_le64(r + 26);
    ev->position = position;
    ev->version = (int64_t)f[0];
    ev->schema = (uint32_t)f[1];
    ev->stream.len = (size_t)f[2];
    ev->type.len = (size_t)f[3];
    ev->ntags = (size_t)f[4];
    ev->tags_len = (size_t)f[5];
    ev->metadata.len = (size_t)f[6];
    ev->key_id = (uint32_t)f[7];
    ev->subject.len = (size_t)f[8];
    ev->stream.ptr = p, p += f[2];
    ev->type.ptr = p, p += f[3];
    ev->tags_raw = p, p += f[5];
    ev->metadata.ptr = p, p += f[6];
    ev->subject.ptr = p, p += f[8];
    ev->data.ptr = p;
    ev->data.len = (size_t)(end - p);
    ev->forgotten = 0;
    if (info) {
        info->format = 3;
        info->key_id = ev->key_id;
        info->chain = (r[9] & CAIRN_REC_CHAINED) ? r + CAIRN_REC_FIXED : NULL;
        info->subject = ev->subject;
    }
    return 0;
}

int cairn__record_decode(const void *rec, size_t len, uint64_t position, cairn_event *ev) {
    return cairn__record_decode_ex(rec, len, position, ev, NULL);
}

/* Never trusts a length before checking it against the record's size: a damaged record
 * must end in CAIRN_ECORRUPT, not in a read past the buffer.  `sum` 0: the checksum is
 * not computed again (cairn__record_parse). */
static int record_decode(const void *rec, size_t len, uint64_t position, cairn_event *ev,
                         cairn_rec_info *info, int sum) {
    const uint8_t *r = rec;
    uint64_t body, sl = 0;
    size_t header;

    if (len >= CAIRN_REC_FIXED && r[8] == CAIRN_REC_FORMAT) {
        if (!position ||
            (sum && XXH3_64bits_withSeed(r + 8, len - 8, position) != cairn__get_le64(r)) ||
            decode3(r, len, position, ev, info))
            goto bad;
        return CAIRN_OK;
    }
    if (len < CAIRN_REC_HEADER1) goto bad;
    if (sum && XXH3_64bits(r + 8, len - 8) != cairn__get_le64(r)) goto bad;
    if (r[8] == 2) {
        header = CAIRN_REC_HEADER2;
        if (len < header || cairn__get_le16(r + 110) != 0) goto bad;
        sl = cairn__get_le16(r + 108);
    } else if (r[8] == 1) {
        header = CAIRN_REC_HEADER1;
    } else {
        goto bad;
    }
    ev->flags = r[9];
    ev->type.len = cairn__get_le16(r + 10);
    ev->ntags = cairn__get_le16(r + 12);
    ev->stream.len = cairn__get_le16(r + 14);
    ev->position = cairn__get_le64(r + 16);
    ev->version = (int64_t)cairn__get_le64(r + 24);
    ev->timestamp = (int64_t)cairn__get_le64(r + 32);
    ev->schema = cairn__get_le32(r + 40);
    ev->metadata.len = cairn__get_le32(r + 44);
    ev->data.len = cairn__get_le32(r + 48);
    body = cairn__get_le32(r + 52);
    memcpy(ev->id, r + 56, 16);
    if (ev->position != position && position != 0) goto bad;
    if ((uint64_t)ev->stream.len + ev->type.len + body + ev->metadata.len + sl + ev->data.len !=
        len - header)
        goto bad;
    ev->key_id = header == CAIRN_REC_HEADER2 ? cairn__get_le32(r + 104) : 0;
    ev->forgotten = 0; /* cairn__event_reveal's to say (keys.c) */
    if (info) {
        info->format = r[8];
        info->key_id = ev->key_id;
        info->chain = header == CAIRN_REC_HEADER2 ? r + 72 : NULL;
    }
    r += header;
    ev->stream.ptr = r, r += ev->stream.len;
    ev->type.ptr = r, r += ev->type.len;
    ev->tags_raw = r, ev->tags_len = body, r += body;
    ev->metadata.ptr = r, r += ev->metadata.len;
    ev->subject.ptr = r, ev->subject.len = sl;
    if (info) info->subject = ev->subject;
    r += sl;
    ev->data.ptr = r;
    return CAIRN_OK;
bad:
    cairn__err()->position = position;
    return cairn__fail(CAIRN_ECORRUPT, "corrupt record at position %llu",
                       (unsigned long long)position);
}

int cairn__record_decode_ex(const void *rec, size_t len, uint64_t position, cairn_event *ev,
                            cairn_rec_info *info) {
    return record_decode(rec, len, position, ev, info, 1);
}

int cairn__record_parse(const void *rec, size_t len, uint64_t position, cairn_event *ev) {
    return record_decode(rec, len, position, ev, NULL, 0);
}

/* LMDB does not checksum its pages: a damaged node can hand back a pointer past the end of
 * the data file (touching it is SIGBUS) or a size running past it.  The used part of the map
 * is found from a value LMDB reached by a sound path (the `meta` magic): its page header
 * names its page number, which places the start of the map; the last page in use ends it.
 * Only for read-only txns (a write txn's dirty pages live outside the map).  On any doubt
 * the bounds are [0, UINTPTR_MAX]: no check rather than a false alarm. */
void cairn__map_bounds(cairn_env *e, MDB_txn *txn, uintptr_t *lo, uintptr_t *hi) {
    MDB_envinfo info;
    MDB_stat st;
    MDB_val k = {5, (void *)"magic"}, v;
    uintptr_t page;
    uint64_t pgno;
    *lo = 0, *hi = UINTPTR_MAX;
    if (mdb_env_info(e->env, &info) || mdb_env_stat(e->env, &st) || !st.ms_psize ||
        (st.ms_psize & (st.ms_psize - 1)) || mdb_get(txn, e->meta, &k, &v))
        return;
    page = (uintptr_t)v.mv_data & ~((uintptr_t)st.ms_psize - 1);
    memcpy(&pgno, (const void *)page, 8); /* MDB_page.mp_pgno, native endian */
    if (pgno < 2 || pgno > info.me_last_pgno || page < pgno * st.ms_psize) return;
    *lo = page - (uintptr_t)pgno * st.ms_psize;
    *hi = *lo + ((uintptr_t)info.me_last_pgno + 1) * st.ms_psize;
}

int cairn__val_check(uintptr_t lo, uintptr_t hi, const MDB_val *v, uint64_t position) {
    uintptr_t p = (uintptr_t)v->mv_data;
    if (p >= lo && p <= hi && v->mv_size <= hi - p) return CAIRN_OK;
    cairn__err()->position = position;
    return cairn__fail(
        CAIRN_ECORRUPT,
        "corrupt record at position %llu: the data file's tree points outside the file",
        (unsigned long long)position);
}

int cairn_event_tag(const cairn_event *ev, size_t *cursor, cairn_slice *tag) {
    /* *cursor counts bytes into tags_raw; sizes, not pointers, are compared (no pointer
     * is formed past the section, and an event without tags may have tags_raw NULL) */
    const uint8_t *p;
    size_t left;
    uint16_t n;
    if (!ev->tags_raw || *cursor > ev->tags_len) return 0;
    left = ev->tags_len - *cursor;
    p = ev->tags_raw + *cursor;
    if (left < 2) return 0;
    n = cairn__get_le16(p);
    if ((size_t)n > left - 2) return 0;
    tag->ptr = p + 2;
    tag->len = n;
    *cursor += 2 + (size_t)n;
    return 1;
}

cairn_slice cairn_category(const char *stream, size_t stream_len) {
    const char *dash = memchr(stream, '-', stream_len);
    cairn_slice s = {stream, dash ? (size_t)(dash - stream) : stream_len};
    return s;
}
