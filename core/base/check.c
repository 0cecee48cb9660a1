/*
 * check.c -- what every name and text the store keeps must be: strict UTF-8 (the one
 * validator, also the Lua host's), script/projection/subscription names, stream names, and
 * the fields of an event as written (the rules cairn_append, cairn.Event and the events
 * scripts hand over all apply, in one wording).
 */
#include "base.h"

int cairn__check_utf8(const void *p, size_t len) {
    const unsigned char *s = p;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = cairn__utf8_seq(s + i, len - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

int cairn__check_name(const char *name, size_t len) {
    if (!name || len == 0 || len > CAIRN__NAME_MAX || memchr(name, 0, len) ||
        !cairn__check_utf8(name, len))
        return cairn__fail(CAIRN_EINVAL, "name: must be 1..%d bytes of UTF-8 without NUL",
                           CAIRN__NAME_MAX);
    return CAIRN_OK;
}

int cairn__check_stream(const void *name, size_t len, const char *what) {
    int rc = cairn__check_stream_name(name, len, what);
    if (rc == CAIRN_OK && ((const char *)name)[0] == '$')
        return cairn__fail(CAIRN_EINVAL, "%s: stream names starting with '$' are reserved", what);
    return rc;
}

int cairn__check_stream_name(const void *name, size_t len, const char *what) {
    if (len == 0 || len > CAIRN_MAX_STREAM)
        return cairn__fail(CAIRN_EINVAL, "%s: a stream name must be 1..%d bytes, got %zu", what,
                           CAIRN_MAX_STREAM, len);
    if (memchr(name, 0, len))
        return cairn__fail(CAIRN_EINVAL, "%s: a stream name must not contain NUL", what);
    if (!cairn__check_utf8(name, len))
        return cairn__fail(CAIRN_EINVAL, "%s: a stream name must be UTF-8", what);
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * The rules of an event as written (spec 1), one wording for every way in.
 * --------------------------------------------------------------------------------- */
int cairn__check_text(const void *p, size_t len, size_t max, const char *what) {
    if (len == 0 || len > max)
        return cairn__fail(CAIRN_EINVAL, "%s must be 1..%zu bytes of UTF-8, got %zu", what, max,
                           len);
    if (memchr(p, 0, len))
        return cairn__fail(CAIRN_EINVAL, "%s must not contain NUL characters", what);
    if (!cairn__check_utf8(p, len)) return cairn__fail(CAIRN_EINVAL, "%s is not valid UTF-8", what);
    return CAIRN_OK;
}

int cairn__check_type(const void *p, size_t len) {
    return cairn__check_text(p, len, CAIRN_MAX_TYPE, "type");
}

int cairn__check_subject(const void *p, size_t len) {
    return cairn__check_text(p, len, CAIRN__SUBJECT_MAX, "subject");
}

int cairn__check_tag(const void *p, size_t len) {
    return cairn__check_text(p, len, CAIRN_MAX_TAG, "tags: each tag");
}

int cairn__check_ntags(size_t n) {
    if (n > CAIRN_MAX_TAGS)
        return cairn__fail(CAIRN_EINVAL, "tags: at most %d tags per event, got %zu", CAIRN_MAX_TAGS,
                           n);
    return CAIRN_OK;
}

int cairn__check_schema(int64_t schema) {
    if (schema < 1 || schema > (int64_t)UINT32_MAX)
        return cairn__fail(CAIRN_EINVAL, CAIRN__SCHEMA_RULE ", got %lld", (long long)schema);
    return CAIRN_OK;
}

int cairn__check_metadata(const void *json, size_t len) {
    const unsigned char *s = json;
    size_t i = 0;
    const char *kind;
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    if (i == len) return CAIRN_OK; /* none */
    switch (s[i]) {
    case '{': return cairn__links_check(json, len);
    case '[': kind = "a list"; break;
    case '"': kind = "a str"; break;
    case 't':
    case 'f': kind = "a bool"; break;
    case 'n': kind = "null"; break;
    default: kind = "a number";
    }
    return cairn__fail(CAIRN_EINVAL, "metadata must be an object, not %s", kind);
}

int cairn__event_check(const cairn_event_in *ev) {
    int rc;
    if ((ev->type.len && !ev->type.ptr) || (ev->data.len && !ev->data.ptr) ||
        (ev->metadata.len && !ev->metadata.ptr) || (ev->ntags && !ev->tags) ||
        (ev->subject.len && !ev->subject.ptr))
        return cairn__fail(CAIRN_EINVAL, "event: NULL pointer with a length");
    if ((rc = cairn__check_type(ev->type.ptr, ev->type.len))) return rc;
    if ((rc = cairn__check_schema(ev->schema))) return rc;
    if (ev->flags & ~(uint32_t)CAIRN_EVENT_BYTES)
        return cairn__fail(CAIRN_EINVAL, "flags: unknown bits 0x%x", ev->flags);
    if ((rc = cairn__check_ntags(ev->ntags))) return rc;
    for (size_t t = 0; t < ev->ntags; t++)
        if ((rc = cairn__check_tag(ev->tags[t].ptr, ev->tags[t].len))) return rc;
    if (ev->subject.ptr && (rc = cairn__check_subject(ev->subject.ptr, ev->subject.len))) return rc;
    return cairn__check_metadata(ev->metadata.ptr, ev->metadata.len);
}
