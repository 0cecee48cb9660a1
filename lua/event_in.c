/*
 * event_in.c -- what a script hands the store: the list a decide or compensate handler
 * returns, event tables (decide's, compensate's, an upcaster's result, emit's metadata),
 * checked as cairn.Event checks its arguments, and the query a boundary returns.  Read with
 * lua_next and raw access only: no Lua value is allocated and no script code runs, so the
 * checks are safe outside a protected call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_impl.h"

/* [-0, +0, -] */
int cairn_lua_check_list(cairn_lua *h, int idx, size_t *n) {
    lua_State *L = h->L;
    lua_Integer max = 0;
    size_t count = 0;
    int strkey = 0, top = lua_gettop(L);
    char k[80];

    *n = 0;
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) return lh_fail(CAIRN_EINVAL, "returned a %s", luaL_typename(L, idx));
    if (!lua_checkstack(L, 3)) return lh_fail(CAIRN_ENOMEM, "out of Lua stack");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            if (lua_tointeger(L, -1) > max) max = lua_tointeger(L, -1);
            count++;
            continue;
        }
        if (lua_type(L, -1) == LUA_TSTRING) strkey = 1;
        lh_show_key(L, -1, k, sizeof k, 1);
        lua_settop(L, top);
        if (strkey && lua_rawlen(L, idx) == 0)
            return lh_fail(CAIRN_EINVAL,
                           "returned one event table, not a list of them: "
                           "return { event } for one event");
        return lh_fail(CAIRN_EINVAL, "returned a table with the key %s besides its items 1..n", k);
    }
    if ((lua_Unsigned)max != count) {
        lua_Integer i = 1;
        while (lua_rawgeti(L, idx, i) != LUA_TNIL) lua_pop(L, 1), i++;
        lua_settop(L, top);
        return lh_fail(CAIRN_EINVAL, "returned a list with a hole: [%lld] is nil but [%lld] is not",
                       (long long)i, (long long)max);
    }
    *n = count;
    return CAIRN_OK;
}

/* ---------------------------------------------------------------------------------
 * Event tables: the rules of cairn.Event in Lua's terms (what a field's Lua type must be);
 * the rules of what a field holds are the base layer's (base.h: cairn__check_type and the
 * rest), so that a script hears what Python hears.
 * --------------------------------------------------------------------------------- */
/* [-0, +0, -] What the value at idx is, for "must be X, not Y". */
static const char *what_is(lua_State *L, int idx) {
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return "nil";
    case LUA_TBOOLEAN: return "a boolean";
    case LUA_TNUMBER: return lua_isinteger(L, idx) ? "an integer" : "a float";
    case LUA_TSTRING: return "a string";
    case LUA_TTABLE: return "a table";
    case LUA_TFUNCTION: return "a function";
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == (void *)&lh_json_null) return "json.null";
        /* fall through */
    default: return luaL_typename(L, idx);
    }
}

/* [-0, +0, -] The value at idx as the links rule names JSON values ("a number"). */
static const char *json_kind(lua_State *L, int idx) {
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: return "a bool";
    case LUA_TNUMBER: return "a number";
    case LUA_TTABLE: return lua_rawlen(L, idx) ? "a list" : "an object";
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == (void *)&lh_json_null) return "null";
        /* fall through */
    default: return what_is(L, idx);
    }
}

static int check_metadata(lua_State *L, int m) {
    char k[80];
    int top = lua_gettop(L);
    if (lua_isnil(L, m)) return CAIRN_OK;
    if (!lua_istable(L, m))
        return lh_fail(CAIRN_EINVAL, "metadata must be a table with string keys or nil, not %s",
                       what_is(L, m));
    if (!lua_checkstack(L, 3)) return lh_fail(CAIRN_ENOMEM, "out of Lua stack");
    lua_pushnil(L);
    while (lua_next(L, m)) {
        size_t klen, len;
        const char *key, *str;
        if (lua_type(L, -2) != LUA_TSTRING) {
            lh_show_key(L, -2, k, sizeof k, 1);
            lua_settop(L, top);
            if (lua_rawlen(L, m))
                return lh_fail(CAIRN_EINVAL,
                               "metadata must be an object (a table with string "
                               "keys), not a list");
            return lh_fail(CAIRN_EINVAL,
                           "metadata must be an object (a table with string keys), but it has "
                           "the key %s",
                           k);
        }
        key = lua_tolstring(L, -2, &klen);
        str = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (cairn__links_check_key(key, klen, str, str ? len : 0, json_kind(L, -1))) {
            char msg[sizeof cairn__err()->message];
            snprintf(msg, sizeof msg, "%s", cairn__err()->message);
            lua_settop(L, top);
            return lh_fail(CAIRN_EINVAL, "%s", msg);
        }
        lua_pop(L, 1);
    }
    return CAIRN_OK;
}

static int check_tags(lua_State *L, int t) {
    char k[80];
    size_t count = 0;
    lua_Integer max = 0;
    int top = lua_gettop(L), rc;
    if (lua_isnil(L, t)) return CAIRN_OK;
    if (!lua_istable(L, t))
        return lh_fail(CAIRN_EINVAL, "tags must be a list of strings, not %s", what_is(L, t));
    if (!lua_checkstack(L, 3)) return lh_fail(CAIRN_ENOMEM, "out of Lua stack");
    lua_pushnil(L);
    while (lua_next(L, t)) {
        size_t len;
        const char *tag;
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1) {
            lh_show_key(L, -2, k, sizeof k, 1);
            lua_settop(L, top);
            return lh_fail(CAIRN_EINVAL, "tags must be a list of strings, but it has the key %s",
                           k);
        }
        if (lua_type(L, -1) != LUA_TSTRING) {
            const char *w = what_is(L, -1);
            lua_settop(L, top);
            return lh_fail(CAIRN_EINVAL, "tags: each tag must be a string, not %s", w);
        }
        tag = lua_tolstring(L, -1, &len);
        if ((rc = cairn__check_tag(tag, len))) {
            lua_settop(L, top);
            return lh_fail(rc, "%s", cairn__err()->message);
        }
        if (lua_tointeger(L, -2) > max) max = lua_tointeger(L, -2);
        count++;
        lua_pop(L, 1);
    }
    if ((lua_Unsigned)max != count)
        return lh_fail(CAIRN_EINVAL, "tags must be a list of strings without holes");
    if ((rc = cairn__check_ntags(count))) return lh_fail(rc, "%s", cairn__err()->message);
    return CAIRN_OK;
}

/* The fields of an event table: of a new event (cairn.Event's arguments), or of an event as
 * read, what an upcaster gets and may hand back (bytes and the F_READ ones besides). */
enum { F_UNKNOWN, F_TYPE, F_DATA, F_METADATA, F_TAGS, F_SCHEMA, F_ID, F_SUBJECT, F_BYTES, F_READ };

/* [-0, +0, -] Which field the key at idx names.  By length first: this runs for every key of
 * every upcast event of a fold. */
static int field_of(lua_State *L, int idx, int read) {
    size_t len;
    const char *k;
    if (lua_type(L, idx) != LUA_TSTRING) return F_UNKNOWN;
    k = lua_tolstring(L, idx, &len);
#define IS(lit) (memcmp(k, lit, sizeof lit - 1) == 0)
    switch (len) {
    case 2: return IS("id") ? F_ID : F_UNKNOWN;
    case 4: return IS("type") ? F_TYPE : IS("data") ? F_DATA : IS("tags") ? F_TAGS : F_UNKNOWN;
    case 5: return read && IS("bytes") ? F_BYTES : F_UNKNOWN;
    case 6: return IS("schema") ? F_SCHEMA : read && IS("stream") ? F_READ : F_UNKNOWN;
    case 7:
        return read && IS("version") ? F_READ
            : IS("subject")          ? (read ? F_READ : F_SUBJECT)
                                     : F_UNKNOWN;
    case 8: return IS("metadata") ? F_METADATA : read && IS("position") ? F_READ : F_UNKNOWN;
    case 9: return read && (IS("timestamp") || IS("forgotten")) ? F_READ : F_UNKNOWN;
    default: return F_UNKNOWN;
    }
#undef IS
}

/* [-0, +0, -] The rule of one field whose value is at v (a key the caller knows). */
static int check_field(lua_State *L, int f, int v, int read) {
    char k[80];
    size_t len;
    const char *s;
    uint8_t id[16];
    int rc;
    switch (f) {
    case F_TYPE:
        if (lua_type(L, v) != LUA_TSTRING)
            return lh_fail(CAIRN_EINVAL, "type must be a string, not %s", what_is(L, v));
        s = lua_tolstring(L, v, &len);
        if ((rc = cairn__check_type(s, len))) return lh_fail(rc, "%s", cairn__err()->message);
        return CAIRN_OK;
    case F_SCHEMA:
        if (read) return CAIRN_OK; /* an upcaster's schema is the chain's to set */
        if (!lua_isinteger(L, v))
            return lh_fail(CAIRN_EINVAL, "schema must be an integer, not %s", what_is(L, v));
        if ((rc = cairn__check_schema((int64_t)lua_tointeger(L, v))))
            return lh_fail(rc, "%s", cairn__err()->message);
        return CAIRN_OK;
    case F_ID:
        if (lua_type(L, v) != LUA_TSTRING)
            return lh_fail(CAIRN_EINVAL, "id must be a UUID string, not %s", what_is(L, v));
        s = lua_tolstring(L, v, &len);
        if (!cairn__parse_uuid(s, len, id))
            return lh_fail(CAIRN_EINVAL, "id: %s is not a UUID", lh_show_key(L, v, k, sizeof k, 1));
        return CAIRN_OK;
    case F_BYTES: /* nil (the event's own) or the upcaster's boolean */
        if (!lua_isboolean(L, v))
            return lh_fail(CAIRN_EINVAL, "bytes must be true, false or nil, not %s", what_is(L, v));
        return CAIRN_OK;
    case F_SUBJECT: /* the data subject whose key encrypts data (spec 6) */
        if (lua_type(L, v) != LUA_TSTRING)
            return lh_fail(CAIRN_EINVAL, "subject must be a string, not %s", what_is(L, v));
        s = lua_tolstring(L, v, &len);
        if ((rc = cairn__check_subject(s, len))) return lh_fail(rc, "%s", cairn__err()->message);
        return CAIRN_OK;
    case F_TAGS: return check_tags(L, v);
    case F_METADATA: return check_metadata(L, v);
    default: return CAIRN_OK; /* data: the JSON encoder's; the read fields: the record's */
    }
}

/* One pass over the table: a key that is no field wins over a field's broken rule (a
 * misspelt field is the likeliest slip: dta = {...}), a field's over a missing type. */
int lh_check_event(lua_State *L, int e, int kind) {
    int read = kind != CAIRN_LUA_EVENT_NEW, top = lua_gettop(L), rc = CAIRN_OK, has_type = 0;
    char k[80];

    e = lua_absindex(L, e);
    if (!lua_istable(L, e))
        return lh_fail(CAIRN_EINVAL, "an event must be a table, not %s", what_is(L, e));
    if (!lua_checkstack(L, 6)) return lh_fail(CAIRN_ENOMEM, "out of Lua stack");
    lua_pushnil(L);
    while (lua_next(L, e)) {
        int f = field_of(L, -2, read);
        if (f == F_UNKNOWN) {
            lh_show_key(L, -2, k, sizeof k, 1);
            lua_settop(L, top);
            if (!read)
                return lh_fail(CAIRN_EINVAL,
                               "unknown key %s in an event table (it may have type, data, "
                               "metadata, tags, schema, id and subject)",
                               k);
            return lh_fail(
                CAIRN_EINVAL,
                "unknown key %s in an event table (an event has type, data, metadata, "
                "id, stream, version, position, timestamp, schema, tags, subject, forgotten and "
                "bytes)",
                k);
        }
        has_type |= f == F_TYPE;
        if (rc == CAIRN_OK) rc = check_field(L, f, lua_gettop(L), read);
        lua_pop(L, 1);
    }
    if (rc == CAIRN_OK && !has_type) rc = lh_fail(CAIRN_EINVAL, "type must be a string, not nil");
    return rc;
}

int cairn_lua_check_event(cairn_lua *h, int idx, int kind) {
    return lh_check_event(h->L, idx, kind);
}

int cairn_lua_check_metadata(cairn_lua *h, int idx) {
    lua_State *L = h->L;
    int top = lua_gettop(L), rc;
    lua_pushvalue(L, idx);
    rc = check_metadata(L, lua_gettop(L));
    lua_settop(L, top);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * A boundary's query (API.md section 5): a list of items {types = {...}, tags = {...}}.
 * --------------------------------------------------------------------------------- */
/* [-0, +0, -] The list of strings at v (field "types" or "tags" of item i), each held to
 * `check`; with out non-NULL its slices go there.  *n: how many. */
static int query_strings(lua_State *L, int v, size_t i, const char *field, const char *one,
                         int (*check)(const void *, size_t), cairn_slice *out, size_t *n) {
    char k[80];
    size_t count = 0;
    lua_Integer max = 0;
    int top = lua_gettop(L), rc;
    if (!lua_istable(L, v))
        return lh_fail(CAIRN_EINVAL, "item %zu: %s must be a list of strings, not %s", i, field,
                       what_is(L, v));
    lua_pushnil(L);
    while (lua_next(L, v)) {
        size_t len;
        const char *s;
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1) {
            lh_show_key(L, -2, k, sizeof k, 1);
            lua_settop(L, top);
            return lh_fail(CAIRN_EINVAL,
                           "item %zu: %s must be a list of strings, but it has the key %s", i,
                           field, k);
        }
        if (lua_type(L, -1) != LUA_TSTRING) {
            const char *w = what_is(L, -1);
            lua_settop(L, top);
            return lh_fail(CAIRN_EINVAL, "item %zu: %s: each %s must be a string, not %s", i, field,
                           one, w);
        }
        s = lua_tolstring(L, -1, &len);
        if ((rc = check(s, len))) {
            lua_settop(L, top);
            return lh_fail(rc, "item %zu: %s", i, cairn__err()->message); /* names the field */
        }
        if (lua_tointeger(L, -2) > max) max = lua_tointeger(L, -2);
        count++;
        lua_pop(L, 1);
    }
    if ((lua_Unsigned)max != count)
        return lh_fail(CAIRN_EINVAL, "item %zu: %s must be a list of strings without holes", i,
                       field);
    if (!count)
        return lh_fail(CAIRN_EINVAL, "item %zu: %s must not be empty (leave it out for any %s)", i,
                       field, one);
    /* in list order: a given list reads back as it was written */
    for (size_t j = 0; out && j < count; j++) {
        lua_rawgeti(L, v, (lua_Integer)j + 1);
        out[j].ptr = lua_tolstring(L, -1, &out[j].len); /* the list keeps the string alive */
        lua_pop(L, 1);
    }
    *n = count;
    return CAIRN_OK;
}

static int check_tag_text(const void *p, size_t len) { return cairn__check_tag(p, len); }
static int check_type_text(const void *p, size_t len) { return cairn__check_type(p, len); }

/* [-0, +0, -] One pass over the items: checked and counted, and with `items` non-NULL
 * filled (types first, then tags, into `slices`). */
static int query_items(lua_State *L, int list, size_t n, cairn_query_item *items,
                       cairn_slice *slices, size_t *nslices) {
    char k[80];
    size_t used = 0;
    int top = lua_gettop(L), rc = CAIRN_OK;
    for (size_t i = 0; i < n && rc == CAIRN_OK; i++) {
        int it;
        size_t nt = 0, ng = 0;
        lua_rawgeti(L, list, (lua_Integer)i + 1);
        it = lua_gettop(L);
        if (!lua_istable(L, it)) {
            rc = lh_fail(CAIRN_EINVAL, "item %zu must be a table {types = ..., tags = ...}, not %s",
                         i + 1, what_is(L, it));
            break;
        }
        /* a key that is no field first (a misspelt field is the likeliest slip: tag = ...) */
        lua_pushnil(L);
        while (lua_next(L, it)) {
            size_t len;
            const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
            lua_pop(L, 1);
            if (key &&
                ((len == 5 && !memcmp(key, "types", 5)) || (len == 4 && !memcmp(key, "tags", 4))))
                continue;
            lh_show_key(L, -1, k, sizeof k, 1);
            rc = lh_fail(CAIRN_EINVAL,
                         "item %zu: unknown key %s in a query item (it may have types and tags)",
                         i + 1, k);
            break;
        }
        lua_settop(L, it);
        if (rc) break;
        lua_pushliteral(L, "types");
        if (lua_rawget(L, it) != LUA_TNIL)
            rc = query_strings(L, lua_gettop(L), i + 1, "types", "type", check_type_text,
                               items ? slices + used : NULL, &nt);
        lua_settop(L, it);
        lua_pushliteral(L, "tags");
        if (rc == CAIRN_OK && lua_rawget(L, it) != LUA_TNIL) {
            rc = query_strings(L, lua_gettop(L), i + 1, "tags", "tag", check_tag_text,
                               items ? slices + used + nt : NULL, &ng);
            if (rc == CAIRN_OK && (rc = cairn__check_ntags(ng)))
                rc = lh_fail(rc, "item %zu: tags: %s", i + 1, cairn__err()->message);
        }
        if (rc == CAIRN_OK && items) {
            items[i].types = nt ? slices + used : NULL, items[i].ntypes = nt;
            items[i].tags = ng ? slices + used + nt : NULL, items[i].ntags = ng;
        }
        used += nt + ng;
        lua_settop(L, top);
    }
    lua_settop(L, top);
    *nslices = used;
    return rc;
}

int cairn_lua_to_query(cairn_lua *h, int idx, cairn_query *q, void **mem) {
    lua_State *L = h->L;
    size_t n = 0, nslices = 0;
    int top = lua_gettop(L), rc;
    cairn_query_item *items;

    q->items = NULL, q->nitems = 0, *mem = NULL;
    idx = lua_absindex(L, idx);
    if (!lua_checkstack(L, 8)) return lh_fail(CAIRN_ENOMEM, "out of Lua stack");
    if (lua_isnil(L, idx)) return lh_fail(CAIRN_EINVAL, "returned nil");
    if (lua_istable(L, idx) && lua_rawlen(L, idx) == 0) { /* one item, not a list of them? */
        lua_pushnil(L);
        if (lua_next(L, idx) && lua_type(L, -2) == LUA_TSTRING) {
            lua_settop(L, top);
            return lh_fail(CAIRN_EINVAL,
                           "returned one query item, not a list of them: return { item } for one "
                           "item");
        }
        lua_settop(L, top);
    }
    if ((rc = cairn_lua_check_list(h, idx, &n))) return rc;
    if (!n) return CAIRN_OK; /* no items: every event, as cairn.Query() */
    if ((rc = query_items(L, idx, n, NULL, NULL, &nslices))) return rc;
    if (!(items = malloc(n * sizeof *items + nslices * sizeof(cairn_slice))))
        return lh_fail(CAIRN_ENOMEM, "out of memory");
    /* the second pass cannot fail: the same table, read the same way */
    if ((rc = query_items(L, idx, n, items, (cairn_slice *)(void *)(items + n), &nslices))) {
        free(items);
        return rc;
    }
    q->items = items, q->nitems = n, *mem = items;
    return CAIRN_OK;
}
