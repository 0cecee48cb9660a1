/*
 * uuid.c -- event ids: RFC 9562 UUIDv7 for new events, UUIDv8 derived from a hash for ids that
 * must come out the same on every run (a projection's emitted events, a command's events), the
 * canonical text form and its parser; and the wall clock that the ids and timestamps read.
 */
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "base.h"

int64_t cairn__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Random bytes come from getrandom() in blocks so that an id costs no system call. */
static _Thread_local uint8_t g_rand[256];
static _Thread_local size_t g_rand_left;
static _Thread_local uint64_t g_last_ms;
static _Thread_local uint32_t g_seq;

static void rand_bytes(uint8_t *out, size_t n) {
    while (n) {
        size_t k;
        if (!g_rand_left) {
            size_t got = 0;
            while (got < sizeof g_rand) {
                ssize_t r = getrandom(g_rand + got, sizeof g_rand - got, 0);
                if (r > 0) got += (size_t)r;
            }
            g_rand_left = sizeof g_rand;
        }
        k = n < g_rand_left ? n : g_rand_left;
        memcpy(out, g_rand + sizeof g_rand - g_rand_left, k);
        g_rand_left -= k, out += k, n -= k;
    }
}

/* RFC 9562 UUIDv7: 48-bit Unix milliseconds, then a 12-bit counter that keeps ids from
 * one thread strictly increasing within a millisecond, then 62 random bits. */
void cairn_uuid7(uint8_t out[16]) {
    uint64_t ms = (uint64_t)(cairn__now_ns() / 1000000);
    if (ms <= g_last_ms) {
        ms = g_last_ms;
        if (++g_seq > 0xfff) g_seq = 0, ms = ++g_last_ms;
    } else {
        uint8_t r[2];
        rand_bytes(r, 2);
        g_seq = ((uint32_t)r[0] << 8 | r[1]) & 0x3ff; /* leave room to count up */
        g_last_ms = ms;
    }
    for (int i = 5; i >= 0; i--) out[i] = (uint8_t)ms, ms >>= 8;
    out[6] = (uint8_t)(0x70 | (g_seq >> 8));
    out[7] = (uint8_t)g_seq;
    rand_bytes(out + 8, 8);
    out[8] = (uint8_t)(0x80 | (out[8] & 0x3f));
}

/* RFC 9562 UUIDv8 (custom): the first 122 bits of XXH3-128 of the bytes, version 8 and the
 * RFC variant in their places.  The same bytes give the same id on every run. */
void cairn__uuid_derive(const void *p, size_t n, uint8_t out[16]) {
    XXH128_hash_t hh = XXH3_128bits(p, n);
    cairn__put_be64(out, hh.high64), cairn__put_be64(out + 8, hh.low64);
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x80), out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}

void cairn__uuid_derive_nth(const char *name, size_t name_len, const uint8_t src[16],
                            uint32_t index, uint8_t out[16]) {
    uint8_t hb[CAIRN__NAME_MAX + 1 + 16 + 4];
    if (name_len > CAIRN__NAME_MAX) name_len = CAIRN__NAME_MAX; /* names are checked before */
    memcpy(hb, name, name_len);
    hb[name_len] = 0;
    memcpy(hb + name_len + 1, src, 16);
    cairn__put_be32(hb + name_len + 17, index);
    cairn__uuid_derive(hb, name_len + 21, out);
}

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0'
        : c >= 'a' && c <= 'f'  ? c - 'a' + 10
        : c >= 'A' && c <= 'F'  ? c - 'A' + 10
                                : -1;
}

int cairn__parse_uuid(const char *s, size_t len, uint8_t out[16]) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (s[i] == '-') continue;
        if (n == 16 || i + 1 >= len) return 0;
        hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0) return 0;
        out[n++] = (uint8_t)(hi << 4 | lo);
        i++;
    }
    return n == 16;
}

void cairn__uuid_format(const uint8_t id[16], char out[37]) {
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
        *p++ = hex[id[i] >> 4], *p++ = hex[id[i] & 15];
    }
    *p = 0;
}
