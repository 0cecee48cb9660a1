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

size_t cairn__record_size(const cairn_slice *stream, const cairn_event_in *ev,
                          const cairn_rec_extra *x) {
    return CAIRN_REC_HEADER + stream->len + ev->type.len + tags_size(ev) + ev->metadata.len +
        (x ? x->subject.len : 0) + ev->data.len;
}

void cairn__record_write(uint8_t *out, const cairn_slice *stream, const cairn_event_in *ev,
                         const cairn_rec_extra *x, const uint8_t *id, uint64_t position,
                         int64_t version, int64_t timestamp, const uint8_t prev[CAIRN_CHAIN],
                         uint8_t chain[CAIRN_CHAIN]) {
    size_t tl = tags_size(ev), sl = x ? x->subject.len : 0;
    uint8_t *p = out + CAIRN_REC_HEADER;

    out[8] = CAIRN_REC_FORMAT;
    out[9] = (uint8_t)ev->flags;
    cairn__put_le16(out + 10, (uint16_t)ev->type.len);
    cairn__put_le16(out + 12, (uint16_t)ev->ntags);
    cairn__put_le16(out + 14, (uint16_t)stream->len);
    cairn__put_le64(out + 16, position);
    cairn__put_le64(out + 24, (uint64_t)version);
    cairn__put_le64(out + 32, (uint64_t)timestamp);
    cairn__put_le32(out + 40, ev->schema);
    cairn__put_le32(out + 44, (uint32_t)ev->metadata.len);
    cairn__put_le32(out + 48, (uint32_t)ev->data.len);
    cairn__put_le32(out + 52, (uint32_t)tl);
    memcpy(out + 56, id, 16);
    cairn__put_le32(out + 104, x ? x->key_id : 0);
    cairn__put_le16(out + 108, (uint16_t)sl);
    cairn__put_le16(out + 110, 0);
    memcpy(p, stream->ptr, stream->len), p += stream->len;
    memcpy(p, ev->type.ptr, ev->type.len), p += ev->type.len;
    for (size_t i = 0; i < ev->ntags; i++) {
        cairn__put_le16(p, (uint16_t)ev->tags[i].len);
        memcpy(p + 2, ev->tags[i].ptr, ev->tags[i].len);
        p += 2 + ev->tags[i].len;
    }
    if (ev->metadata.len) memcpy(p, ev->metadata.ptr, ev->metadata.len), p += ev->metadata.len;
    if (sl) memcpy(p, x->subject.ptr, sl), p += sl;
    if (ev->data.len) memcpy(p, ev->data.ptr, ev->data.len), p += ev->data.len;
    /* the chain hash covers every byte but the checksum and itself; the checksum then
     * covers the hash too */
    cairn__chain_hash(prev, out, (size_t)(p - out), out + 72);
    if (chain != out + 72) memcpy(chain, out + 72, CAIRN_CHAIN);
    cairn__put_le64(out, XXH3_64bits(out + 8, (size_t)(p - out) - 8));
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

    if (len < CAIRN_REC_HEADER1) goto bad;
    if (sum && XXH3_64bits(r + 8, len - 8) != cairn__get_le64(r)) goto bad;
    if (r[8] == CAIRN_REC_FORMAT) {
        header = CAIRN_REC_HEADER;
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
    ev->key_id = header == CAIRN_REC_HEADER ? cairn__get_le32(r + 104) : 0;
    ev->forgotten = 0; /* cairn__event_reveal's to say (keys.c) */
    if (info) {
        info->format = r[8];
        info->key_id = ev->key_id;
        info->chain = header == CAIRN_REC_HEADER ? r + 72 : NULL;
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
