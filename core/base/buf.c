/*
 * buf.c -- the one growable byte buffer (cairn_buf): JSON text, scratch space, copies of
 * records and upcast events.  Doubles from 256 bytes, so appends are amortized O(1).
 */
#include <stdlib.h>

#include "base.h"

int cairn_buf_reserve(cairn_buf *b, size_t extra) {
    if (b->cap - b->len >= extra) return 0;
    if (extra > SIZE_MAX / 2 - b->len) return -1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int cairn_buf_append(cairn_buf *b, const void *p, size_t n) {
    if (n == 0) return 0;
    if (cairn_buf_reserve(b, n)) return -1;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void cairn_buf_free(cairn_buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
