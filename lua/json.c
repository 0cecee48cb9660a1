/*
 * json.c -- the one place where Lua values and JSON text meet: the encoder (Lua -> JSON text,
 * never raising, never running script code), the decoder (JSON text -> Lua values pushed
 * straight onto the stack, no intermediate tree, so every byte it builds counts against the
 * state's memory cap), and the scripts' json library.
 *
 * Exactness: JSON integers are Lua integers over all of int64; other numbers are floats
 * parsed with a correctly rounded strtod and written in the shortest form that reads back to
 * the same double (floats with integral values keep a ".0").  Both directions are independent
 * of the process locale.
 */
#include <float.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_impl.h"

const char lh_json_null = 0;

/* A "C" locale for strtod_l / uselocale, made once per process. */
static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }
static locale_t get_c_locale(void) {
    pthread_once(&c_locale_once, make_c_locale);
    return c_locale;
}

/* ---------------------------------------------------------------------------------
 * Encoder.  Works on the Lua stack with raw access only (lua_next, lua_rawgeti, pushvalue):
 * none of these allocate or run metamethods, so it cannot raise.  Object keys are written in
 * bytewise order, so equal tables encode to equal text whatever Lua's hash seed.
 * --------------------------------------------------------------------------------- */
typedef struct enc_ent {
    const char *k;
    size_t len;
    int slot; /* stack index of the value */
} enc_ent;

#define ENC_TICK 1024 /* values encoded between charges */

typedef struct enc {
    lua_State *L;
    cairn_buf *out;
    size_t len0, cap; /* out->len at the start; the most bytes it may add (the memory cap) */
    unsigned ticks;   /* values not yet charged */
    char *err;
    size_t errlen;
    char path[256]; /* built from the failure outwards */
    size_t pathlen;
    enc_ent *ents; /* key-sort scratch, shared by all levels */
    size_t nents, capents;
    const void *seen[CAIRN_LUA_MAX_DEPTH + 2]; /* tables on the current path */
} enc;

static int enc_fail(enc *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int enc_fail(enc *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Prepends one path component ("[3]", ".name", "[\"odd key\"]") on the way out of a failure. */
static void enc_path(enc *e, const char *comp, size_t n) {
    if (n + e->pathlen > sizeof e->path - 1) {
        /* too long: keep the innermost part and mark the cut */
        if (e->pathlen > 3 && memcmp(e->path, "...", 3) == 0) return;
        comp = "...";
        n = 3;
        if (e->pathlen + n > sizeof e->path - 1) e->pathlen = sizeof e->path - 1 - n;
    }
    memmove(e->path + n, e->path, e->pathlen);
    memcpy(e->path, comp, n);
    e->pathlen += n;
}

static void enc_path_key(enc *e, const char *k, size_t len) {
    char c[80];
    size_t n = 0;
    int ident = len > 0 && len <= 40 && !(k[0] >= '0' && k[0] <= '9');
    for (size_t i = 0; ident && i < len; i++) {
        unsigned char ch = (unsigned char)k[i];
        if (!(ch == '_' || (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z')))
            ident = 0;
    }
    if (ident) {
        c[n++] = '.';
        memcpy(c + n, k, len);
        n += len;
    } else {
        c[n++] = '[';
        c[n++] = '"';
        for (size_t i = 0; i < len && i < 40; i++) {
            unsigned char ch = (unsigned char)k[i];
            c[n++] = (ch >= 0x20 && ch < 0x7f && ch != '"') ? (char)ch : '?';
        }
        if (len > 40) c[n++] = '.', c[n++] = '.', c[n++] = '.';
        c[n++] = '"';
        c[n++] = ']';
    }
    enc_path(e, c, n);
}

static void enc_path_index(enc *e, lua_Integer i) {
    char c[32];
    int n = snprintf(c, sizeof c, "[%lld]", (long long)i);
    enc_path(e, c, (size_t)n);
}

/* The text counts against the memory cap and the values against the budget and the clock:
 * a table shared many times over ({t, t} forty levels deep) is tiny in Lua and 2^40 values
 * of JSON. */
static int over_cap(enc *e) {
    lh_kill(e->L, LH_KILL_MEM);
    return enc_fail(e, "memory limit exceeded (%zu bytes) by the JSON text", e->cap);
}

static inline int put(enc *e, const char *s, size_t n) {
    if (e->out->len - e->len0 + n > e->cap) return over_cap(e);
    if (cairn_buf_append(e->out, s, n)) return enc_fail(e, "out of memory");
    return 0;
}

static int put_integer(enc *e, lua_Integer v) {
    char tmp[24], *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    return put(e, p, (size_t)(tmp + sizeof tmp - p));
}

/* Shortest of %.15g/%.16g/%.17g that reads back exactly; ".0" added to integral values so
 * the text stays a JSON real.  Formatting and parsing run in the C locale. */
static int put_float(enc *e, double d) {
    if (isnan(d)) return enc_fail(e, "cannot encode NaN");
    if (isinf(d)) return enc_fail(e, "cannot encode %s", d > 0 ? "inf" : "-inf");
    char tmp[40];
    int n = 0;
    locale_t old = uselocale(get_c_locale());
    /* Normal doubles: a decimal of <= 15 digits is unique, so %.15g is the shortest whenever
     * one that short exists.  Subnormals have fewer digits: search from 1. */
    for (int prec = fabs(d) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp - 2, "%.*g", prec, d);
        if (prec == 17 || strtod(tmp, NULL) == d) break;
    }
    uselocale(old);
    if (!strpbrk(tmp, ".eE")) {
        tmp[n++] = '.';
        tmp[n++] = '0';
    }
    return put(e, tmp, (size_t)n);
}

static const char hexdig[] = "0123456789abcdef";

static int put_string(enc *e, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    if (e->out->len - e->len0 + len + 2 > e->cap) return over_cap(e);
    if (cairn_buf_reserve(e->out, len * 6 + 2)) return enc_fail(e, "out of memory");
    char *o = e->out->p + e->out->len;
    *o++ = '"';
    size_t i = 0;
    while (i < len) {
        unsigned char c = u[i];
        if (c >= 0x80) {
            size_t k = cairn__utf8_seq(u + i, len - i);
            if (!k) return enc_fail(e, "cannot encode a string that is not UTF-8");
            memcpy(o, u + i, k);
            o += k;
            i += k;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
        } else {
            *o++ = '\\';
            switch (c) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                *o++ = 'u', *o++ = '0', *o++ = '0';
                *o++ = hexdig[c >> 4], *o++ = hexdig[c & 15];
            }
        }
        i++;
    }
    *o++ = '"';
    e->out->len = (size_t)(o - e->out->p);
    return 0;
}

/* Describes a non-string key for a message. */
/* [-0, +0, -] */
static void key_desc(lua_State *L, int idx, char *d, size_t n) {
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            snprintf(d, n, "%lld", (long long)lua_tointeger(L, idx));
        else
            snprintf(d, n, "%.17g", lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN: snprintf(d, n, "%s", lua_toboolean(L, idx) ? "true" : "false"); break;
    default: snprintf(d, n, "of type %s", lua_typename(L, lua_type(L, idx)));
    }
}

static int ent_cmp(const void *a, const void *b) {
    const enc_ent *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->k, y->k, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int enc_value(enc *e, int idx, int depth);

/* [-0, +0, -] (both encoder functions) */
static int enc_table(enc *e, int t, int depth) {
    lua_State *L = e->L;
    const void *self = lua_topointer(L, t);
    if (depth > CAIRN_LUA_MAX_DEPTH) {
        for (int i = 0; i < depth - 1; i++)
            if (e->seen[i] == self)
                return enc_fail(e, "cannot encode a table that contains itself");
        return enc_fail(e, "cannot encode tables nested deeper than %d", CAIRN_LUA_MAX_DEPTH);
    }
    e->seen[depth - 1] = self;
    if (!lua_checkstack(L, 4)) return enc_fail(e, "out of Lua stack");

    /* Pass 1: count the keys, see whether they are exactly 1..n, note a non-string key. */
    size_t n = 0;
    lua_Integer max = 0;
    int seq = 1;
    char bad[64] = "";
    lua_pushnil(L);
    while (lua_next(L, t)) {
        n++;
        if (seq) {
            if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1) {
                lua_Integer i = lua_tointeger(L, -2);
                if (i > max) max = i;
            } else {
                seq = 0;
            }
        }
        if (!bad[0] && lua_type(L, -2) != LUA_TSTRING) key_desc(L, -2, bad, sizeof bad);
        lua_pop(L, 1);
    }

    if (n > 0 && seq && (lua_Unsigned)max == n) { /* array */
        if (put(e, "[", 1)) return -1;
        for (lua_Integer i = 1; i <= max; i++) {
            if (i > 1 && put(e, ",", 1)) return -1;
            lua_rawgeti(L, t, i);
            int rc = enc_value(e, lua_gettop(L), depth);
            lua_pop(L, 1);
            if (rc) {
                enc_path_index(e, i);
                return -1;
            }
        }
        return put(e, "]", 1);
    }
    if (n > 0 && seq) /* positive integer keys with holes: name the one past the end */
        return enc_fail(e,
                        "cannot encode table key %lld: an array must have keys 1..n without "
                        "holes (this one has %zu keys)",
                        (long long)max, n);
    if (bad[0])
        return enc_fail(e,
                        "cannot encode table key %s: a table that is not a sequence 1..n "
                        "must have string keys only",
                        bad);
    if (n == 0) return put(e, "{}", 2);

    /* Pass 2: keys and values onto the stack, sorted references in e->ents. */
    if (n > (size_t)(INT32_MAX / 4) || !lua_checkstack(L, (int)(2 * n + 4)))
        return enc_fail(e, "table too large to encode");
    if (e->capents - e->nents < n) {
        size_t cap = e->capents ? e->capents : 16;
        while (cap - e->nents < n) cap *= 2;
        enc_ent *p = realloc(e->ents, cap * sizeof *p);
        if (!p) return enc_fail(e, "out of memory");
        e->ents = p;
        e->capents = cap;
    }
    size_t first = e->nents;
    int top = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pushvalue(L, -2); /* key value key: the pair stays, the copy drives lua_next */
        enc_ent *en = &e->ents[e->nents++];
        en->k = lua_tolstring(L, -3, &en->len); /* a string: no conversion, no allocation */
        en->slot = lua_gettop(L) - 1;
    }
    qsort(e->ents + first, n, sizeof *e->ents, ent_cmp);
    int rc = put(e, "{", 1);
    for (size_t i = 0; !rc && i < n; i++) {
        enc_ent en = e->ents[first + i]; /* a copy: nested levels may move e->ents */
        if (i > 0 && (rc = put(e, ",", 1))) break;
        if ((rc = put_string(e, en.k, en.len))) {
            if (strstr(e->err, "UTF-8")) enc_fail(e, "cannot encode a key that is not UTF-8");
            break;
        }
        if ((rc = put(e, ":", 1))) break;
        if ((rc = enc_value(e, en.slot, depth))) enc_path_key(e, en.k, en.len);
    }
    e->nents = first;
    lua_settop(L, top);
    return rc ? -1 : put(e, "}", 1);
}

static int enc_value(enc *e, int idx, int depth) {
    lua_State *L = e->L;
    if (++e->ticks >= ENC_TICK) {
        e->ticks = 0;
        if (lh_spend(L, ENC_TICK)) {
            cairn_lua *h = lh_host(L);
            if (lh_spent_why(L) == LH_KILL_TIME)
                return enc_fail(e, "time limit exceeded (%g s)", (double)h->time_limit / 1e9);
            return enc_fail(e, "instruction limit exceeded (%llu instructions)",
                            (unsigned long long)h->instr_limit);
        }
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return put(e, "null", 4);
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? put(e, "true", 4) : put(e, "false", 5);
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) return put_integer(e, lua_tointeger(L, idx));
        return put_float(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return put_string(e, s, len);
    }
    case LUA_TTABLE: return enc_table(e, idx, depth + 1);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == (void *)&lh_json_null) return put(e, "null", 4);
        /* fall through */
    default: return enc_fail(e, "cannot encode a %s value", lua_typename(L, lua_type(L, idx)));
    }
}

int lh_encode(lua_State *L, int idx, cairn_buf *out, char *err, size_t errlen) {
    enc e;
    e.L = L;
    e.out = out;
    e.err = err;
    e.errlen = errlen;
    e.pathlen = 0;
    e.ents = NULL;
    e.nents = e.capents = 0;
    size_t len0 = out->len;
    e.len0 = len0;
    e.cap = lh_host(L)->mem_limit ? lh_host(L)->mem_limit : SIZE_MAX;
    e.ticks = 0;
    int top = lua_gettop(L);
    idx = lua_absindex(L, idx);
    int rc = enc_value(&e, idx, 0);
    free(e.ents);
    lua_settop(L, top);
    if (rc) {
        out->len = len0;
        if (e.pathlen) {
            size_t m = strlen(err);
            snprintf(err + m, errlen - m, " at $%.*s", (int)e.pathlen, e.path);
        }
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Decoder: recursive descent straight onto the Lua stack.  Strings without escapes are
 * pushed from the input in place; escaped ones are unescaped into the host's scratch
 * buffer.  Objects and arrays are built in a table presized from the first elements, which
 * are kept on the stack until either the container ends or LH_BATCH of them were read.
 * --------------------------------------------------------------------------------- */
#define LH_BATCH 16

typedef struct dec {
    lua_State *L;
    const unsigned char *p, *end, *start;
    cairn_buf *scratch;
    char *err;
    size_t errlen;
    int reuse;    /* stack index of the table to hold a top-level object, 0: none */
    lh_dkeys *dk; /* the keys that table holds (NULL: it is empty) */
} dec;

/* [-0, +1, -] the table for an object: the reusable one at the top level, else a new one */
static inline void object_table(dec *d, int depth, int nrec) {
    if (d->reuse && depth == 1) {
        lua_pushvalue(d->L, d->reuse);
        d->reuse = 0;
    } else {
        lua_createtable(d->L, 0, nrec);
    }
}

static int dec_fail(dec *d, const char *what) {
    snprintf(d->err, d->errlen, "invalid JSON: %s at byte %zu", what, (size_t)(d->p - d->start));
    return -1;
}

static inline void skip_ws(dec *d) {
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], x;
        if (c >= '0' && c <= '9')
            x = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            x = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | x;
    }
    *out = v;
    return 0;
}

/* Parses the string whose opening quote is at d->p and pushes it. */
/* [-0, +(1|0), m] (all decoder functions) */
static int dec_string(dec *d) {
    const unsigned char *s = ++d->p, *p = s, *end = d->end;
    for (;;) { /* fast path: no escapes */
        if (p >= end) return d->p = p, dec_fail(d, "unterminated string");
        unsigned c = *p;
        if (c == '"') {
            lua_pushlstring(d->L, (const char *)s, (size_t)(p - s));
            d->p = p + 1;
            return 0;
        }
        if (c == '\\') break;
        if (c < 0x20) return d->p = p, dec_fail(d, "control character in string");
        if (c < 0x80) {
            p++;
        } else {
            size_t k = cairn__utf8_seq(p, (size_t)(end - p));
            if (!k) return d->p = p, dec_fail(d, "invalid UTF-8 in string");
            p += k;
        }
    }
    cairn_buf *b = d->scratch;
    b->len = 0;
    if (cairn_buf_append(b, s, (size_t)(p - s))) return dec_fail(d, "out of memory");
    while (p < end) {
        unsigned c = *p;
        if (c == '"') {
            lua_pushlstring(d->L, b->p, b->len);
            d->p = p + 1;
            return 0;
        }
        if (cairn_buf_reserve(b, 4)) return dec_fail(d, "out of memory");
        if (c == '\\') {
            if (end - p < 2) break;
            char ch;
            switch (p[1]) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (end - p < 6 || hex4(p + 2, &cp)) return d->p = p, dec_fail(d, "bad \\u escape");
                p += 6;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return d->p = p, dec_fail(d, "unpaired surrogate in \\u escape");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return d->p = p, dec_fail(d, "unpaired surrogate in \\u escape");
                }
                char *o = b->p + b->len;
                if (cp < 0x80) {
                    *o++ = (char)cp;
                } else if (cp < 0x800) {
                    *o++ = (char)(0xC0 | cp >> 6);
                    *o++ = (char)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000) {
                    *o++ = (char)(0xE0 | cp >> 12);
                    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                    *o++ = (char)(0x80 | (cp & 0x3F));
                } else {
                    *o++ = (char)(0xF0 | cp >> 18);
                    *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                    *o++ = (char)(0x80 | (cp & 0x3F));
                }
                b->len = (size_t)(o - b->p);
                continue;
            }
            default: return d->p = p, dec_fail(d, "bad escape in string");
            }
            b->p[b->len++] = ch;
            p += 2;
            continue;
        }
        if (c < 0x20) return d->p = p, dec_fail(d, "control character in string");
        size_t k = 1;
        if (c >= 0x80 && !(k = cairn__utf8_seq(p, (size_t)(end - p))))
            return d->p = p, dec_fail(d, "invalid UTF-8 in string");
        memcpy(b->p + b->len, p, k);
        b->len += k;
        p += k;
    }
    d->p = p;
    return dec_fail(d, "unterminated string");
}

static int dec_number(dec *d) {
    const unsigned char *s = d->p, *p = s, *end = d->end;
    int neg = 0, isreal = 0;
    if (p < end && *p == '-') neg = 1, p++;
    if (p >= end || *p < '0' || *p > '9') return dec_fail(d, "bad number");
    if (*p == '0') {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    const unsigned char *int_end = p;
    if (p < end && *p == '.') {
        isreal = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9') return d->p = p, dec_fail(d, "bad number");
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        isreal = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return d->p = p, dec_fail(d, "bad number");
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (!isreal) {
        unsigned long long u = 0, lim = neg ? 9223372036854775808ull : 9223372036854775807ull;
        for (const unsigned char *q = s + neg; q < int_end; q++) {
            unsigned dg = *q - '0';
            if (u > (lim - dg) / 10) return dec_fail(d, "integer out of the signed 64-bit range");
            u = u * 10 + dg;
        }
        lua_pushinteger(d->L, neg ? (lua_Integer)(0ull - u) : (lua_Integer)u);
        d->p = p;
        return 0;
    }
    size_t n = (size_t)(p - s);
    char tmp[64], *t = tmp;
    if (n >= sizeof tmp) {
        cairn_buf *b = d->scratch;
        b->len = 0;
        if (cairn_buf_reserve(b, n + 1)) return dec_fail(d, "out of memory");
        t = b->p;
    }
    memcpy(t, s, n);
    t[n] = '\0';
    double v = strtod_l(t, NULL, get_c_locale());
    if (isinf(v)) return dec_fail(d, "number out of the range of a double");
    lua_pushnumber(d->L, v);
    d->p = p;
    return 0;
}

static int dec_value(dec *d, int depth);

static int dec_array(dec *d, int depth) {
    lua_State *L = d->L;
    int base = lua_gettop(L), made = 0;
    lua_Integer n = 0;
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        lua_createtable(L, 0, 0);
        return 0;
    }
    for (;;) {
        if (dec_value(d, depth)) return -1;
        n++;
        if (made) {
            lua_rawseti(L, base + 1, n);
        } else if (n == LH_BATCH) { /* long: make the table, move the batch in */
            lua_createtable(L, 2 * LH_BATCH, 0);
            lua_insert(L, base + 1);
            for (lua_Integer i = n; i >= 1; i--) lua_rawseti(L, base + 1, i);
            made = 1;
        }
        skip_ws(d);
        if (d->p >= d->end) return dec_fail(d, "unterminated array");
        if (*d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (*d->p != ']') return dec_fail(d, "expected ',' or ']'");
        d->p++;
        break;
    }
    if (!made) {
        lua_createtable(L, (int)n, 0);
        lua_insert(L, base + 1);
        for (lua_Integer i = n; i >= 1; i--) lua_rawseti(L, base + 1, i);
    }
    return 0;
}

/* [-0, +0, -] t[k] = v for the n pairs (k, v) on the stack from index `first`, in order:
 * a repeated key keeps its last value */
static void set_pairs(lua_State *L, int t, int first, int n) {
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, first + 2 * i);
        lua_pushvalue(L, first + 1 + 2 * i);
        lua_rawset(L, t);
    }
}

static int dec_object(dec *d, int depth) {
    lua_State *L = d->L;
    int base = lua_gettop(L), made = 0, n = 0;
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        object_table(d, depth, 0);
        return 0;
    }
    for (;;) {
        if (d->p >= d->end || *d->p != '"') return dec_fail(d, "expected a string key");
        if (dec_string(d)) return -1;
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':') return dec_fail(d, "expected ':'");
        d->p++;
        if (dec_value(d, depth)) return -1;
        n++;
        if (made) {
            lua_rawset(L, base + 1);
        } else if (n == LH_BATCH) {
            object_table(d, depth, 2 * LH_BATCH);
            lua_insert(L, base + 1);
            set_pairs(L, base + 1, base + 2, n);
            lua_settop(L, base + 1);
            made = 1;
        }
        skip_ws(d);
        if (d->p >= d->end) return dec_fail(d, "unterminated object");
        if (*d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (*d->p != '}') return dec_fail(d, "expected ',' or '}'");
        d->p++;
        break;
    }
    if (!made) {
        object_table(d, depth, n);
        lua_insert(L, base + 1);
        set_pairs(L, base + 1, base + 2, n);
        lua_settop(L, base + 1);
    }
    return 0;
}

/* [-0, +0, -] empties the reusable table at t, checking its keys against dk's first */
static void reuse_clear(lua_State *L, int t, lh_dkeys *dk) {
    if (dk) {
        lh_dkeys_check(L, t, dk);
        dk->n = -1;
    }
    lua_pushnil(L);
    while (lua_next(L, t)) { /* clearing fields during lua_next is allowed */
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, t);
    }
}

void lh_dkeys_check(lua_State *L, int t, lh_dkeys *dk) {
    if (dk->n < 0 || dk->tampered) return;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        size_t len;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
        int i = 0;
        lua_pop(L, 1);
        while (k && i < dk->n && !(dk->k[i].len == len && memcmp(dk->k[i].p, k, len) == 0)) i++;
        if (!k || i == dk->n) {
            dk->tampered = 1;
            lua_pop(L, 1);
            return;
        }
    }
}

/* 1 when the JSON text of the string s is s between quotes: ASCII, no control character,
 * quote or backslash */
static int plain_text(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') return 0;
    }
    return 1;
}

/* The top-level object decoded into the reusable table d->reuse (dec_object otherwise).
 * Up to LH_DKEYS pairs are gathered on the stack; when their keys are the ones the table
 * holds, in order, the values are written over the old ones, else the table is emptied
 * first.  A key equal to the one the table holds at its place is pushed from dk->tbl. */
static int dec_object_reuse(dec *d) {
    lua_State *L = d->L;
    lh_dkeys *dk = d->dk;
    int t = d->reuse, base = lua_gettop(L), n = 0, same = dk->n >= 0;
    unsigned char hit[LH_DKEYS]; /* value i came from dk->v[i] */
    d->reuse = 0;                /* nested objects get tables of their own */
    if (!lua_checkstack(L, 2 * LH_DKEYS + 8)) return dec_fail(d, "out of Lua stack");
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        goto store;
    }
    for (;;) {
        if (d->p >= d->end || *d->p != '"') return dec_fail(d, "expected a string key");
        if (n == LH_DKEYS) break; /* more pairs than kept: the rest go straight in */
        /* the text of a plain key is the key itself between quotes */
        size_t kl = same && n < dk->n ? dk->k[n].len : 0;
        if (same && n < dk->n && dk->kplain[n] && (size_t)(d->end - d->p) >= kl + 2 &&
            d->p[kl + 1] == '"' && memcmp(d->p + 1, dk->k[n].p, kl) == 0) {
            lua_rawgeti(L, dk->tbl, n + 1);
            d->p += kl + 2;
        } else {
            same = 0;
            if (dec_string(d)) return -1;
        }
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':') return dec_fail(d, "expected ':'");
        d->p++;
        skip_ws(d);
        /* the same text as the key's last plain string value is that string */
        size_t vl = same ? dk->v[n].len : 0;
        hit[n] = same && dk->v[n].p && d->p < d->end && *d->p == '"' &&
            (size_t)(d->end - d->p) >= vl + 2 && d->p[vl + 1] == '"' &&
            memcmp(d->p + 1, dk->v[n].p, vl) == 0;
        if (hit[n]) {
            lua_rawgeti(L, dk->tbl, LH_DKEYS + n + 1);
            d->p += vl + 2;
        } else if (dec_value(d, 1)) {
            return -1;
        }
        n++;
        skip_ws(d);
        if (d->p >= d->end) return dec_fail(d, "unterminated object");
        if (*d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (*d->p != '}') return dec_fail(d, "expected ',' or '}'");
        d->p++;
        goto store;
    }
    /* LH_DKEYS pairs and more to come: the keys are not kept */
    reuse_clear(L, t, dk);
    set_pairs(L, t, base + 1, n);
    lua_settop(L, base);
    for (;;) {
        if (d->p >= d->end || *d->p != '"') return dec_fail(d, "expected a string key");
        if (dec_string(d)) return -1;
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':') return dec_fail(d, "expected ':'");
        d->p++;
        if (dec_value(d, 1)) return -1;
        lua_rawset(L, t);
        skip_ws(d);
        if (d->p >= d->end) return dec_fail(d, "unterminated object");
        if (*d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (*d->p != '}') return dec_fail(d, "expected ',' or '}'");
        d->p++;
        break;
    }
    lua_pushvalue(L, t);
    return 0;
store:
    if (!same || n != dk->n) {
        reuse_clear(L, t, dk);
        for (int i = 0; i < n; i++) { /* the keys now held, kept alive by dk->tbl */
            lua_pushvalue(L, base + 1 + 2 * i);
            dk->k[i].p = lua_tolstring(L, -1, &dk->k[i].len);
            dk->kplain[i] = (unsigned char)plain_text(dk->k[i].p, dk->k[i].len);
            lua_rawseti(L, dk->tbl, i + 1);
            dk->v[i].p = NULL, hit[i] = 0;
        }
    }
    for (int i = 0; i < n; i++) {
        if (!hit[i] && lua_type(L, base + 2 + 2 * i) == LUA_TSTRING) { /* the value to reuse */
            size_t len;
            const char *v = lua_tolstring(L, base + 2 + 2 * i, &len);
            if (len <= 64 && plain_text(v, len)) {
                lua_pushvalue(L, base + 2 + 2 * i);
                lua_rawseti(L, dk->tbl, LH_DKEYS + i + 1);
                dk->v[i].p = v, dk->v[i].len = len;
            }
        }
        lua_pushvalue(L, base + 1 + 2 * i);
        lua_pushvalue(L, base + 2 + 2 * i);
        lua_rawset(L, t);
    }
    dk->n = n;
    lua_settop(L, base);
    lua_pushvalue(L, t);
    return 0;
}

static int dec_value(dec *d, int depth) {
    skip_ws(d);
    if (d->p >= d->end) return dec_fail(d, "unexpected end of text");
    /* room for a container's batch (2 per element) plus the table and scratch */
    if (!lua_checkstack(d->L, 2 * LH_BATCH + 4)) return dec_fail(d, "out of Lua stack");
    switch (*d->p) {
    case '{':
        if (depth >= CAIRN_LUA_MAX_DEPTH) return dec_fail(d, "nesting deeper than 1000");
        if (depth == 0 && d->reuse && d->dk) return dec_object_reuse(d);
        return dec_object(d, depth + 1);
    case '[':
        if (depth >= CAIRN_LUA_MAX_DEPTH) return dec_fail(d, "nesting deeper than 1000");
        return dec_array(d, depth + 1);
    case '"': return dec_string(d);
    case 't':
        if (d->end - d->p >= 4 && memcmp(d->p, "true", 4) == 0) {
            d->p += 4;
            lua_pushboolean(d->L, 1);
            return 0;
        }
        break;
    case 'f':
        if (d->end - d->p >= 5 && memcmp(d->p, "false", 5) == 0) {
            d->p += 5;
            lua_pushboolean(d->L, 0);
            return 0;
        }
        break;
    case 'n':
        if (d->end - d->p >= 4 && memcmp(d->p, "null", 4) == 0) {
            d->p += 4;
            lh_push_null(d->L);
            return 0;
        }
        break;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) return dec_number(d);
    }
    return dec_fail(d, "unexpected character");
}

int lh_decode(lua_State *L, const char *s, size_t len, cairn_buf *scratch, char *err,
              size_t errlen) {
    return lh_decode_into(L, s, len, scratch, err, errlen, 0, NULL);
}

int lh_decode_into(lua_State *L, const char *s, size_t len, cairn_buf *scratch, char *err,
                   size_t errlen, int reuse, lh_dkeys *dk) {
    dec d = {L,
             (const unsigned char *)s,
             (const unsigned char *)s + len,
             (const unsigned char *)s,
             scratch,
             err,
             errlen,
             0,
             NULL};
    if (reuse) {
        reuse = lua_absindex(L, reuse);
        d.reuse = reuse;
        skip_ws(&d);
        if (dk && d.p < d.end && *d.p == '{')
            d.dk = dk; /* dec_object_reuse empties it or writes over it */
        else
            reuse_clear(L, reuse, dk);
    }
    int top = lua_gettop(L);
    if (dec_value(&d, 0) == 0) {
        skip_ws(&d);
        if (d.p == d.end) return 0;
        dec_fail(&d, "text after the value");
    }
    lua_settop(L, top);
    return -1;
}

/* ---------------------------------------------------------------------------------
 * The scripts' json library.
 * --------------------------------------------------------------------------------- */

/* json.encode(v) -> string   [-1, +1, e] */
static int l_encode(lua_State *L) {
    cairn_lua *h = lh_host(L);
    char err[320];
    luaL_checkany(L, 1);
    h->scratch.len = 0;
    if (lh_encode(L, 1, &h->scratch, err, sizeof err)) return luaL_error(L, "json.encode: %s", err);
    lua_pushlstring(L, h->scratch.p,
                    h->scratch.len); /* scratch belongs to h: no leak if this raises */
    return 1;
}

/* json.decode(s) -> value   [-1, +1, e] */
static int l_decode(lua_State *L) {
    cairn_lua *h = lh_host(L);
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char err[160];
    if (lh_decode(L, s, len, &h->scratch, err, sizeof err))
        return luaL_error(L, "json.decode: %s", err);
    return 1;
}

/* [-1, +1, m] */
static int l_null_tostring(lua_State *L) {
    lua_pushliteral(L, "null");
    return 1;
}

void lh_open_json(lua_State *L) {
    /* Light userdata share one metatable; json.null is the only one scripts can see. */
    lh_push_null(L);
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "json.null");
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);

    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    lh_push_null(L);
    lua_setfield(L, -2, "null");
}

/* ---------------------------------------------------------------------------------
 * Host entry points.
 * --------------------------------------------------------------------------------- */
typedef struct decode_args {
    cairn_lua *h;
    const char *s;
    size_t len;
    int bad;
    char err[160];
} decode_args;

/* [-1, +1, m] */
static int push_json_inner(lua_State *L) {
    decode_args *a = lua_touserdata(L, 1);
    if (lh_decode(L, a->s, a->len, &a->h->scratch, a->err, sizeof a->err)) {
        a->bad = 1;
        return 0;
    }
    return 1;
}

int cairn_lua_push_json(cairn_lua *h, const void *json, size_t len) {
    decode_args a = {h, json, len, 0, ""};
    int status = lh_protect(h, push_json_inner, &a, 1);
    if (status != LUA_OK) return lh_fail_protected(h, status, "converting JSON to Lua");
    if (a.bad) {
        lua_pop(h->L, 1);
        return lh_fail(CAIRN_EINVAL, "%s", a.err);
    }
    return CAIRN_OK;
}

/* Outside a call (a value a call returned: event data, a state) the encoding is bounded as
 * one more invocation: a budget and a time limit of its own. */
int cairn_lua_to_json(cairn_lua *h, int idx, cairn_buf *buf) {
    char err[400];
    int solo = !h->in_call && !h->solo, rc;
    if (solo) lh_solo_begin(h);
    rc = lh_encode(h->L, idx, buf, err, sizeof err);
    if (solo) lh_solo_end(h);
    return rc ? lh_fail(CAIRN_ESCRIPT, "%s", err) : CAIRN_OK;
}
