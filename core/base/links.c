/*
 * links.c -- the links between events that metadata carries: `correlation_id` (a string;
 * rollback finds a saga's events through its index) and `compensates` (a UUID string: the
 * event compensates that one, which can be compensated only once).  One parser for the writer
 * that indexes them (append.c), the checker (verify.c) and rollback (aggregate.c), so that the
 * three agree on what a link is: a `compensates` that is not a UUID string links nothing.
 */
#include <jansson.h>

#include "base.h"

static const char k_corr[] = "\"correlation_id\"", k_comp[] = "\"compensates\"";

int cairn__links_maybe(const void *metadata, size_t len) {
    return len &&
        (memmem(metadata, len, k_corr, sizeof k_corr - 1) ||
         memmem(metadata, len, k_comp, sizeof k_comp - 1));
}

int cairn__links_parse(const void *metadata, size_t len, cairn_links *l) {
    json_t *doc, *v;
    memset(l, 0, sizeof *l);
    if (!cairn__links_maybe(metadata, len)) return 0;
    if (!(doc = json_loadb(metadata, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL)))
        return 0; /* not JSON we can read: nothing to link */
    if ((v = json_object_get(doc, "correlation_id")) && json_is_string(v))
        l->corr = json_string_value(v), l->corr_len = json_string_length(v);
    if ((v = json_object_get(doc, "compensates")) && json_is_string(v) &&
        cairn__parse_uuid(json_string_value(v), json_string_length(v), l->comp))
        l->has_comp = 1;
    if (!l->corr && !l->has_comp) {
        json_decref(doc);
        return 0;
    }
    l->doc = doc;
    return 1;
}

static const char k_caus[] = "\"causation_id\"";

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a str";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a bool";
    default: return "null";
    }
}

int cairn__links_check_key(const char *key, size_t klen, const char *str, size_t len,
                           const char *kind) {
    uint8_t id[16];
    if ((klen == 14 && !memcmp(key, "correlation_id", 14)) ||
        (klen == 12 && !memcmp(key, "causation_id", 12))) {
        if (!str)
            return cairn__fail(CAIRN_EINVAL, "metadata: %.*s must be a str, not %s", (int)klen, key,
                               kind);
    } else if (klen == 11 && !memcmp(key, "compensates", 11)) {
        if (!str || !cairn__parse_uuid(str, len, id))
            return cairn__fail(CAIRN_EINVAL,
                               "metadata: compensates must be the id of an event as a UUID str, "
                               "not %s",
                               str ? "another str" : kind);
    }
    return CAIRN_OK;
}

int cairn__links_check(const void *metadata, size_t len) {
    static const char *const keys[] = {"correlation_id", "causation_id", "compensates"};
    json_t *doc, *v;
    int rc = CAIRN_OK;

    if (!len ||
        !(memmem(metadata, len, k_corr, sizeof k_corr - 1) ||
          memmem(metadata, len, k_comp, sizeof k_comp - 1) ||
          memmem(metadata, len, k_caus, sizeof k_caus - 1)))
        return CAIRN_OK;
    if (!(doc = json_loadb(metadata, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL)))
        return CAIRN_OK; /* not JSON jansson reads: the binding's encoder wrote it */
    for (int k = 0; k < 3 && !rc; k++)
        if ((v = json_object_get(doc, keys[k])))
            rc = json_is_string(v)
                ? cairn__links_check_key(keys[k], strlen(keys[k]), json_string_value(v),
                                         json_string_length(v), NULL)
                : cairn__links_check_key(keys[k], strlen(keys[k]), NULL, 0, json_kind(v));
    json_decref(doc);
    return rc;
}

void cairn__links_free(cairn_links *l) {
    if (l->doc) json_decref(l->doc);
    l->doc = NULL;
    l->corr = NULL;
}
