/*
 * pattern.c -- string.find, string.match, string.gmatch and string.gsub for the sandbox, with
 * the semantics of Lua 5.4's patterns (manual section 6.4.1) and one difference: the matcher
 * counts its steps and charges them to the call's instruction budget.  The stock matcher runs
 * in C, where the count hook never fires, and a backtracking pattern over a few kilobytes
 * ("a*a*a*b") runs for hours; here it ends with "instruction limit exceeded" like a loop.
 * Plain searches use memmem (linear) and pay for the bytes they scan.
 */
#include <ctype.h>
#include <string.h>

#include "host_impl.h"

#define PAT_ESC '%'
#define PAT_SPECIALS "^$*+?.([%-"
#define PAT_MAXCAP 32    /* captures in one pattern, as LUA_MAXCAPTURES */
#define PAT_MAXDEPTH 200 /* nested match() calls: "pattern too complex" past it */
#define PAT_TICK 1024

enum { CAP_OPEN = -1, CAP_POSITION = -2 };

typedef struct matcher {
    lua_State *L;
    const char *s0, *s_end; /* subject */
    const char *p_end;      /* pattern end (the Lua string's NUL terminator) */
    int depth;              /* match() calls left */
    unsigned steps;         /* not yet charged */
    int ncap;
    struct {
        const char *at;
        ptrdiff_t len; /* or CAP_OPEN / CAP_POSITION */
    } cap[PAT_MAXCAP];
} matcher;

static inline void step(matcher *m) {
    if (++m->steps >= PAT_TICK) {
        lh_charge(m->L, m->steps);
        m->steps = 0;
    }
}

/* ---------------------------------------------------------------------------------
 * Single-character classes
 * --------------------------------------------------------------------------------- */
static int in_class(int c, int cl) {
    int r;
    switch (tolower(cl)) {
    case 'a': r = isalpha(c); break;
    case 'c': r = iscntrl(c); break;
    case 'd': r = isdigit(c); break;
    case 'g': r = isgraph(c); break;
    case 'l': r = islower(c); break;
    case 'p': r = ispunct(c); break;
    case 's': r = isspace(c); break;
    case 'u': r = isupper(c); break;
    case 'w': r = isalnum(c); break;
    case 'x': r = isxdigit(c); break;
    case 'z': r = c == 0; break; /* deprecated, still in 5.4 */
    default: return cl == c;     /* %. and friends: the character itself */
    }
    if (isupper(cl)) r = !r;
    return r != 0;
}

/* After the item at p: one character, an escape or a [set]. */
static const char *item_end(matcher *m, const char *p) {
    switch (*p++) {
    case PAT_ESC:
        if (p >= m->p_end) luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 1;
    case '[':
        if (*p == '^') p++;
        do { /* the first character of a set may be ']' */
            if (p >= m->p_end) luaL_error(m->L, "malformed pattern (missing ']')");
            if (*p++ == PAT_ESC && p < m->p_end) p++;
        } while (*p != ']');
        return p + 1;
    default: return p;
    }
}

/* c against the set [..] spanning p .. close (close points at its ']'). */
static int in_set(int c, const char *p, const char *close) {
    int yes = 1;
    if (*++p == '^') {
        yes = 0;
        p++;
    }
    for (; p < close; p++) {
        if (*p == PAT_ESC) {
            p++;
            if (in_class(c, (unsigned char)*p)) return yes;
        } else if (p[1] == '-' && p + 2 < close) {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2]) return yes;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return yes;
        }
    }
    return !yes;
}

static int item_matches(matcher *m, const char *s, const char *p, const char *ep) {
    if (s >= m->s_end) return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case PAT_ESC: return in_class(c, (unsigned char)p[1]);
    case '[': return in_set(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

/* ---------------------------------------------------------------------------------
 * The matcher: returns the end of the match of pattern p at s, or NULL.
 * --------------------------------------------------------------------------------- */
static const char *match_at(matcher *m, const char *s, const char *p);

static const char *greedy(matcher *m, const char *s, const char *p, const char *ep) {
    ptrdiff_t n = 0;
    while (item_matches(m, s + n, p, ep)) {
        n++;
        step(m);
    }
    for (; n >= 0; n--) { /* longest first, then give back one at a time */
        const char *r = match_at(m, s + n, ep + 1);
        if (r) return r;
        step(m);
    }
    return NULL;
}

static const char *lazy(matcher *m, const char *s, const char *p, const char *ep) {
    for (;;) {
        const char *r = match_at(m, s, ep + 1);
        if (r) return r;
        if (!item_matches(m, s, p, ep)) return NULL;
        s++;
        step(m);
    }
}

static const char *open_capture(matcher *m, const char *s, const char *p, ptrdiff_t what) {
    if (m->ncap >= PAT_MAXCAP) luaL_error(m->L, "too many captures");
    m->cap[m->ncap].at = s;
    m->cap[m->ncap].len = what;
    m->ncap++;
    const char *r = match_at(m, s, p);
    if (!r) m->ncap--;
    return r;
}

static const char *close_capture(matcher *m, const char *s, const char *p) {
    int i = m->ncap - 1;
    while (i >= 0 && m->cap[i].len != CAP_OPEN) i--;
    if (i < 0) luaL_error(m->L, "invalid pattern capture");
    m->cap[i].len = s - m->cap[i].at;
    const char *r = match_at(m, s, p);
    if (!r) m->cap[i].len = CAP_OPEN;
    return r;
}

/* %bxy */
static const char *balanced(matcher *m, const char *s, const char *p) {
    if (p >= m->p_end - 1) luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->s_end || *s != p[0]) return NULL;
    int open = 1;
    while (++s < m->s_end) {
        step(m);
        if (*s == p[1]) {
            if (--open == 0) return s + 1;
        } else if (*s == p[0]) {
            open++;
        }
    }
    return NULL;
}

static int capture_index(matcher *m, int c) {
    int i = c - '1';
    if (i < 0 || i >= m->ncap || m->cap[i].len == CAP_OPEN)
        return luaL_error(m->L, "invalid capture index %%%d", i + 1);
    return i;
}

/* %1 .. %9: the text of an earlier capture again */
static const char *backref(matcher *m, const char *s, int c) {
    int i = capture_index(m, c);
    ptrdiff_t len = m->cap[i].len;
    if (len < 0 || m->s_end - s < len) return NULL; /* a position capture never matches */
    return memcmp(m->cap[i].at, s, (size_t)len) == 0 ? s + len : NULL;
}

/* [-0, +0, v] (the matcher functions raise on malformed patterns and on the budget) */
static const char *match_at(matcher *m, const char *s, const char *p) {
    if (m->depth-- == 0) luaL_error(m->L, "pattern too complex");
    step(m);
    for (;;) {
        if (p == m->p_end) break;
        if (*p == '(') {
            s = p[1] == ')' ? open_capture(m, s, p + 2, CAP_POSITION)
                            : open_capture(m, s, p + 1, CAP_OPEN);
            break;
        }
        if (*p == ')') {
            s = close_capture(m, s, p + 1);
            break;
        }
        if (*p == '$' && p + 1 == m->p_end) {
            if (s != m->s_end) s = NULL;
            break;
        }
        if (*p == PAT_ESC && p[1] == 'b') {
            s = balanced(m, s, p + 2);
            if (!s) break;
            p += 4;
            continue;
        }
        if (*p == PAT_ESC && p[1] == 'f') {
            p += 2;
            if (*p != '[') luaL_error(m->L, "missing '[' after '%%f' in pattern");
            const char *ep = item_end(m, p);
            int before = s == m->s0 ? '\0' : (unsigned char)s[-1];
            int here = s < m->s_end ? (unsigned char)*s : '\0';
            if (in_set(before, p, ep - 1) || !in_set(here, p, ep - 1)) {
                s = NULL;
                break;
            }
            p = ep;
            continue;
        }
        if (*p == PAT_ESC && p[1] >= '0' && p[1] <= '9') {
            s = backref(m, s, (unsigned char)p[1]);
            if (!s) break;
            p += 2;
            continue;
        }
        const char *ep = item_end(m, p);
        if (!item_matches(m, s, p, ep)) {
            if (*ep == '*' || *ep == '?' || *ep == '-') { /* zero repetitions are fine */
                p = ep + 1;
                continue;
            }
            s = NULL;
            break;
        }
        if (*ep == '?') {
            const char *r = match_at(m, s + 1, ep + 1);
            if (r) {
                s = r;
                break;
            }
            p = ep + 1;
            continue;
        }
        if (*ep == '+') {
            s = greedy(m, s + 1, p, ep);
            break;
        }
        if (*ep == '*') {
            s = greedy(m, s, p, ep);
            break;
        }
        if (*ep == '-') {
            s = lazy(m, s, p, ep);
            break;
        }
        s++;
        p = ep;
    }
    m->depth++;
    return s;
}

/* ---------------------------------------------------------------------------------
 * Results
 * --------------------------------------------------------------------------------- */

/* Pushes capture i of the match s..e (capture 0 of a pattern without any: the match). */
/* [-0, +1, v] */
static void push_capture(matcher *m, int i, const char *s, const char *e) {
    if (i >= m->ncap) {
        if (i != 0) luaL_error(m->L, "invalid capture index %%%d", i + 1);
        lua_pushlstring(m->L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = m->cap[i].len;
    if (len == CAP_OPEN) luaL_error(m->L, "unfinished capture");
    if (len == CAP_POSITION)
        lua_pushinteger(m->L, (lua_Integer)(m->cap[i].at - m->s0) + 1);
    else
        lua_pushlstring(m->L, m->cap[i].at, (size_t)len);
}

/* Pushes every capture (or the whole match when s is given and there are none). */
/* [-0, +n, v] */
static int push_captures(matcher *m, const char *s, const char *e) {
    int n = (m->ncap == 0 && s) ? 1 : m->ncap;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++) push_capture(m, i, s, e);
    return n;
}

static void matcher_init(matcher *m, lua_State *L, const char *s, size_t ls, const char *p,
                         size_t lp) {
    m->L = L;
    m->s0 = s;
    m->s_end = s + ls;
    m->p_end = p + lp;
    m->steps = 0;
}

static inline void matcher_reset(matcher *m) {
    m->ncap = 0;
    m->depth = PAT_MAXDEPTH;
}

static void matcher_done(matcher *m) {
    if (m->steps) lh_charge(m->L, m->steps);
    m->steps = 0;
}

/* A 1-based start position, negative counting from the end, clipped to 1. */
static size_t start_pos(lua_Integer pos, size_t len) {
    if (pos > 0) return (size_t)pos;
    if (pos == 0 || pos < -(lua_Integer)len) return 1;
    return len + (size_t)pos + 1;
}

static int has_specials(const char *p, size_t lp) {
    for (size_t i = 0; i < lp; i++)
        if (p[i] && strchr(PAT_SPECIALS, p[i])) return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------
 * The library functions
 * --------------------------------------------------------------------------------- */
static int find_or_match(lua_State *L, int find) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_pos(luaL_optinteger(L, 3, 1), ls);
    if (init > ls + 1) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
        const char *at = lp == 0 ? s + init - 1 : memmem(s + init - 1, ls - init + 1, p, lp);
        /* linear, but over a long subject long enough that a loop of them must be paid for */
        lh_charge(L, 1 + (uint64_t)((at ? (size_t)(at - s) + lp : ls) - (init - 1)) / LH_PER_BYTE);
        if (!at) {
            luaL_pushfail(L);
            return 1;
        }
        lua_pushinteger(L, (lua_Integer)(at - s) + 1);
        lua_pushinteger(L, (lua_Integer)(at - s + (ptrdiff_t)lp));
        return 2;
    }
    matcher m;
    const char *from = s + init - 1;
    int anchored = *p == '^';
    if (anchored) p++, lp--;
    matcher_init(&m, L, s, ls, p, lp);
    do {
        matcher_reset(&m);
        const char *e = match_at(&m, from, p);
        if (e) {
            matcher_done(&m);
            if (!find) return push_captures(&m, from, e);
            lua_pushinteger(L, (lua_Integer)(from - s) + 1);
            lua_pushinteger(L, (lua_Integer)(e - s));
            return push_captures(&m, NULL, NULL) + 2;
        }
    } while (from++ < m.s_end && !anchored);
    matcher_done(&m);
    luaL_pushfail(L);
    return 1;
}

/* string.find(s, pattern [, init [, plain]])   [-(2|3|4), +(1|2+n), v] */
static int l_find(lua_State *L) { return find_or_match(L, 1); }

/* string.match(s, pattern [, init])   [-(2|3), +(1|n), v] */
static int l_match(lua_State *L) { return find_or_match(L, 0); }

typedef struct gmatch_state {
    const char *at, *p, *last; /* next start, pattern, end of the previous match */
    matcher m;
} gmatch_state;

/* The gmatch iterator; upvalues: subject, pattern, state.   [-0, +(0|n), v] */
static int gmatch_next(lua_State *L) {
    gmatch_state *g = lua_touserdata(L, lua_upvalueindex(3));
    g->m.L = L;
    for (const char *s = g->at; s <= g->m.s_end; s++) {
        matcher_reset(&g->m);
        const char *e = match_at(&g->m, s, g->p);
        if (e && e != g->last) { /* an empty match right after a match does not count */
            g->at = g->last = e;
            matcher_done(&g->m);
            return push_captures(&g->m, s, e);
        }
    }
    matcher_done(&g->m);
    g->at = g->m.s_end + 1;
    return 0;
}

/* string.gmatch(s, pattern [, init])   [-(2|3), +1, m] */
static int l_gmatch(lua_State *L) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_pos(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) init = ls + 1;
    lua_settop(L, 2); /* the closure keeps both strings alive */
    gmatch_state *g = lua_newuserdatauv(L, sizeof *g, 0);
    matcher_init(&g->m, L, s, ls, p, lp);
    g->at = s + init;
    g->p = p;
    g->last = NULL;
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* [-0, +0, v] Appends the replacement string (argument 3) with %0..%9 and %% expanded. */
static void add_template(matcher *m, luaL_Buffer *b, const char *s, const char *e) {
    lua_State *L = m->L;
    size_t len;
    const char *r = lua_tolstring(L, 3, &len), *end = r + len, *q;
    while ((q = memchr(r, PAT_ESC, (size_t)(end - r))) != NULL) {
        luaL_addlstring(b, r, (size_t)(q - r));
        q++; /* the character after '%' (the NUL terminator when '%' ends it) */
        if (*q == PAT_ESC) {
            luaL_addchar(b, PAT_ESC);
        } else if (*q == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit((unsigned char)*q)) {
            push_capture(m, *q - '1', s, e);
            luaL_addvalue(b); /* converts a position capture (an integer) */
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", PAT_ESC);
        }
        r = q + 1;
    }
    luaL_addlstring(b, r, (size_t)(end - r));
}

/* [-0, +0, e] Appends the replacement of the match s..e; returns whether it changed
 * anything. */
static int add_replacement(matcher *m, luaL_Buffer *b, const char *s, const char *e, int kind) {
    lua_State *L = m->L;
    if (kind == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(m, s, e);
        lua_call(L, n, 1);
    } else if (kind == LUA_TTABLE) {
        push_capture(m, 0, s, e);
        lua_gettable(L, 3);
    } else {
        add_template(m, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) { /* nil or false: keep the original text */
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

/* string.gsub(s, pattern, repl [, n])   [-(3|4), +2, v] */
static int l_gsub(lua_State *L) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *last = NULL;
    int kind = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1), n = 0;
    int anchored = *p == '^', changed = 0;
    luaL_argexpected(L,
                     kind == LUA_TNUMBER || kind == LUA_TSTRING || kind == LUA_TFUNCTION ||
                         kind == LUA_TTABLE,
                     3, "string/function/table");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (anchored) p++, lp--;
    matcher m;
    matcher_init(&m, L, s, ls, p, lp);
    while (n < max) {
        matcher_reset(&m);
        const char *e = match_at(&m, s, p);
        if (e && e != last) {
            n++;
            changed |= add_replacement(&m, &b, s, e, kind);
            s = last = e;
        } else if (s < m.s_end) {
            luaL_addchar(&b, *s++);
            step(&m);
        } else {
            break;
        }
        if (anchored) break;
    }
    matcher_done(&m);
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, s, (size_t)(m.s_end - s));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

/* [-0, +0, m] */
void lh_open_patterns(lua_State *L, int strlib) {
    static const luaL_Reg fns[] = {
        {"find", l_find}, {"match", l_match}, {"gmatch", l_gmatch}, {"gsub", l_gsub}, {NULL, NULL}};
    strlib = lua_absindex(L, strlib);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, strlib, f->name);
    }
}
