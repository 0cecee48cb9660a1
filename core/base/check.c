/*
 * check.c -- what every name and text the store keeps must be: strict UTF-8 (the one
 * validator, also the Lua host's), script/projection/subscription names, stream names.
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
    if (len == 0 || len > CAIRN_MAX_STREAM)
        return cairn__fail(CAIRN_EINVAL, "%s: a stream name must be 1..%d bytes, got %zu", what,
                           CAIRN_MAX_STREAM, len);
    if (((const char *)name)[0] == '$')
        return cairn__fail(CAIRN_EINVAL, "%s: stream names starting with '$' are reserved", what);
    if (memchr(name, 0, len))
        return cairn__fail(CAIRN_EINVAL, "%s: a stream name must not contain NUL", what);
    if (!cairn__check_utf8(name, len))
        return cairn__fail(CAIRN_EINVAL, "%s: a stream name must be UTF-8", what);
    return CAIRN_OK;
}
