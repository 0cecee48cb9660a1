/*
 * json.c -- Python values <-> JSON text, in one place.  Encoding is a direct walk of the
 * Python value into a byte buffer (no intermediate tree); decoding is a recursive-descent
 * parser that builds the Python objects as it reads (no intermediate tree either).
 */
#include "binding.h"

#include <math.h>

#define JSON_MAX_DEPTH 1000

static inline int buf_put(cpy_buf *b, const char *s, size_t n) {
    if (cpy_buf_reserve(b, n) < 0) return -1;
    memcpy(b->ptr + b->len, s, n);
    b->len += n;
    return 0;
}

static inline int buf_putc(cpy_buf *b, char c) {
    if (b->len == b->cap && cpy_buf_reserve(b, 1) < 0) return -1;
    b->ptr[b->len++] = c;
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Encoding.  No Python code runs while a value is walked (only PyDict_Next, sizes and
 * item access), so the value cannot change under the encoder; only the error paths
 * format reprs.
 * --------------------------------------------------------------------------------- */
typedef struct encoder {
    cpy_buf *b;
    const char *what; /* "data" or "metadata" */
    int depth;
} encoder;

static int enc_value(encoder *e, PyObject *o);

static int enc_string(encoder *e, PyObject *s) {
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t n;
    const unsigned char *p = (const unsigned char *)PyUnicode_AsUTF8AndSize(s, &n);
    cpy_buf *b = e->b;
    Py_ssize_t i, run;

    if (!p) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError,
                         "%s: string is not valid UTF-8 (it contains a lone surrogate)", e->what);
        }
        return -1;
    }
    if (cpy_buf_reserve(b, (size_t)n + 2) < 0) return -1;
    b->ptr[b->len++] = '"';
    for (i = 0, run = 0; i < n; i++) {
        unsigned char c = p[i];
        char esc[6];
        size_t elen = 2;

        if (c >= 0x20 && c != '"' && c != '\\') continue;
        /* flush the run of plain bytes before this one */
        if (cpy_buf_reserve(b, (size_t)(i - run) + 6 + (size_t)(n - i) + 1) < 0) return -1;
        memcpy(b->ptr + b->len, p + run, (size_t)(i - run));
        b->len += (size_t)(i - run);
        run = i + 1;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        memcpy(b->ptr + b->len, esc, elen);
        b->len += elen;
    }
    if (cpy_buf_reserve(b, (size_t)(n - run) + 1) < 0) return -1;
    memcpy(b->ptr + b->len, p + run, (size_t)(n - run));
    b->len += (size_t)(n - run);
    b->ptr[b->len++] = '"';
    return 0;
}

static int enc_int(encoder *e, PyObject *o) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    char tmp[24], *q = tmp + sizeof tmp;
    unsigned long long u;

    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow) {
        PyErr_Format(PyExc_ValueError,
                     "%s: integer %R is outside the signed 64-bit range JSON values keep", e->what,
                     o);
        return -1;
    }
    u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--q = '-';
    return buf_put(e->b, q, (size_t)(tmp + sizeof tmp - q));
}

static int enc_float(encoder *e, PyObject *o) {
    double d = PyFloat_AS_DOUBLE(o);
    char *s;
    int rc;

    if (!isfinite(d)) {
        PyErr_Format(PyExc_TypeError, "%s: %R is not a JSON value (NaN and infinities are not)",
                     e->what, o);
        return -1;
    }
    /* shortest repr that round-trips, always with a '.' or an exponent */
    s = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!s) return -1;
    rc = buf_put(e->b, s, strlen(s));
    PyMem_Free(s);
    return rc;
}

static int enc_enter(encoder *e) {
    if (++e->depth > JSON_MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "%s: nested deeper than %d levels (or it contains itself)",
                     e->what, JSON_MAX_DEPTH);
        return -1;
    }
    return 0;
}

static int enc_dict(encoder *e, PyObject *o) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    int first = 1;

    if (enc_enter(e) < 0 || buf_putc(e->b, '{') < 0) return -1;
    while (PyDict_Next(o, &pos, &k, &v)) {
        if (!PyUnicode_Check(k)) {
            PyErr_Format(PyExc_TypeError, "%s: object keys must be str, not %.100s", e->what,
                         Py_TYPE(k)->tp_name);
            return -1;
        }
        if (!first && buf_putc(e->b, ',') < 0) return -1;
        first = 0;
        if (enc_string(e, k) < 0) return -1;
        if (buf_putc(e->b, ':') < 0 || enc_value(e, v) < 0) return -1;
    }
    e->depth--;
    return buf_putc(e->b, '}');
}

static int enc_seq(encoder *e, PyObject *o) {
    Py_ssize_t i;
    int is_list = PyList_Check(o);

    if (enc_enter(e) < 0 || buf_putc(e->b, '[') < 0) return -1;
    for (i = 0; i < (is_list ? PyList_GET_SIZE(o) : PyTuple_GET_SIZE(o)); i++) {
        PyObject *item = is_list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
        if (i && buf_putc(e->b, ',') < 0) return -1;
        if (enc_value(e, item) < 0) return -1;
    }
    e->depth--;
    return buf_putc(e->b, ']');
}

static int enc_value(encoder *e, PyObject *o) {
    /* bool before int: bool is an int subclass */
    if (o == Py_None) return buf_put(e->b, "null", 4);
    if (o == Py_True) return buf_put(e->b, "true", 4);
    if (o == Py_False) return buf_put(e->b, "false", 5);
    if (PyUnicode_Check(o)) return enc_string(e, o);
    if (PyLong_Check(o)) return enc_int(e, o);
    if (PyFloat_Check(o)) return enc_float(e, o);
    if (PyDict_Check(o)) return enc_dict(e, o);
    if (PyList_Check(o) || PyTuple_Check(o)) return enc_seq(e, o);
    PyErr_Format(PyExc_TypeError, "%s: a value of type %.100s is not JSON-compatible", e->what,
                 Py_TYPE(o)->tp_name);
    return -1;
}

int cpy_json_encode(cpy_buf *b, PyObject *obj, const char *what) {
    encoder e = {b, what, 0};
    return enc_value(&e, obj);
}

/* ---------------------------------------------------------------------------------
 * Decoding: integers exact within signed 64 bits, reals as floats, object members in
 * order, the last of duplicate keys wins, "\u0000" allowed in keys; ValueError on text that
 * is not JSON.  ~0.21 us for {"amount": 42, "note": "hello", "n": 3.5}, where jansson's
 * tree and a walk of it took ~0.90 us.  `p` runs from the text's start to `end`; the text
 * need not be NUL-terminated.
 * --------------------------------------------------------------------------------- */
typedef struct parser {
    const unsigned char *start, *p, *end;
    int depth;
} parser;

static PyObject *dp_value(parser *ps);

static PyObject *dp_fail(parser *ps, const char *what) {
    PyErr_Format(PyExc_ValueError, "%s (at offset %zd)", what, (Py_ssize_t)(ps->p - ps->start));
    return NULL;
}

static inline void dp_space(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

static int dp_hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

static char *dp_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 63));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | cp >> 12);
        *o++ = (char)(0x80 | (cp >> 6 & 63));
        *o++ = (char)(0x80 | (cp & 63));
    } else {
        *o++ = (char)(0xF0 | cp >> 18);
        *o++ = (char)(0x80 | (cp >> 12 & 63));
        *o++ = (char)(0x80 | (cp >> 6 & 63));
        *o++ = (char)(0x80 | (cp & 63));
    }
    return o;
}

/* A string with escapes: unescape into a scratch buffer (never longer than the
 * source), then decode that as UTF-8. */
static PyObject *dp_string_escaped(parser *ps, const unsigned char *s) {
    char *buf = PyMem_Malloc((size_t)(ps->end - s) + 1), *o = buf;
    const unsigned char *q = s;
    const char *bad = NULL;
    PyObject *r;

    if (!buf) return PyErr_NoMemory();
    for (;;) {
        unsigned char c;
        unsigned cp, lo;

        if (q >= ps->end) {
            bad = "unterminated string";
            break;
        }
        c = *q;
        if (c == '"') break;
        if (c < 0x20) {
            bad = "control character in a string";
            break;
        }
        if (c != '\\') {
            *o++ = (char)c;
            q++;
            continue;
        }
        if (q + 1 >= ps->end) {
            bad = "unterminated string";
            break;
        }
        c = q[1];
        q += 2;
        switch (c) {
        case '"': *o++ = '"'; continue;
        case '\\': *o++ = '\\'; continue;
        case '/': *o++ = '/'; continue;
        case 'b': *o++ = '\b'; continue;
        case 'f': *o++ = '\f'; continue;
        case 'n': *o++ = '\n'; continue;
        case 'r': *o++ = '\r'; continue;
        case 't': *o++ = '\t'; continue;
        case 'u': break;
        default: bad = "invalid escape in a string"; break;
        }
        if (bad) break;
        if (ps->end - q < 4 || dp_hex4(q, &cp) < 0) {
            bad = "invalid \\u escape";
            break;
        }
        q += 4;
        if (cp >= 0xD800 && cp < 0xDC00) {
            if (ps->end - q >= 6 && q[0] == '\\' && q[1] == 'u' && dp_hex4(q + 2, &lo) == 0 &&
                lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                q += 6;
            } else {
                bad = "lone surrogate in a \\u escape";
                break;
            }
        } else if (cp >= 0xDC00 && cp < 0xE000) {
            bad = "lone surrogate in a \\u escape";
            break;
        }
        o = dp_utf8(o, cp); /* <= 4 bytes out for >= 6 bytes in */
    }
    if (bad) {
        PyMem_Free(buf);
        ps->p = q;
        return dp_fail(ps, bad);
    }
    ps->p = q + 1;
    r = PyUnicode_DecodeUTF8(buf, o - buf, NULL);
    PyMem_Free(buf);
    return r;
}

static PyObject *dp_string(parser *ps) {
    const unsigned char *s = ++ps->p, *q = s;
    unsigned char any = 0;

    while (q < ps->end && *q != '"' && *q != '\\' && *q >= 0x20) any |= *q++;
    if (q < ps->end && *q == '"') {
        ps->p = q + 1;
        if (any < 0x80) { /* ASCII: no decoding needed */
            PyObject *r = PyUnicode_New(q - s, 127);
            if (r) memcpy(PyUnicode_1BYTE_DATA(r), s, (size_t)(q - s));
            return r;
        }
        return PyUnicode_DecodeUTF8((const char *)s, q - s, NULL);
    }
    return dp_string_escaped(ps, s);
}

static PyObject *dp_number(parser *ps) {
    const unsigned char *s = ps->p, *q = s;
    int is_real = 0;

    if (q < ps->end && *q == '-') q++;
    if (q < ps->end && *q == '0') {
        q++;
    } else if (q < ps->end && *q >= '1' && *q <= '9') {
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    } else {
        return dp_fail(ps, "invalid value");
    }
    if (q < ps->end && *q == '.') {
        is_real = 1;
        if (++q >= ps->end || *q < '0' || *q > '9') return dp_fail(ps, "invalid number");
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        is_real = 1;
        if (++q < ps->end && (*q == '+' || *q == '-')) q++;
        if (q >= ps->end || *q < '0' || *q > '9') return dp_fail(ps, "invalid number");
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    }
    ps->p = q;
    if (!is_real) { /* exact, within signed 64 bits (as the encoder, and the core's jansson) */
        const unsigned char *d = s + (*s == '-');
        unsigned long long v = 0, lim = *s == '-' ? (1ull << 63) : (1ull << 63) - 1;
        while (d < q) {
            unsigned dg = (unsigned)(*d++ - '0');
            if (v > (lim - dg) / 10) return dp_fail(ps, "integer outside the signed 64-bit range");
            v = v * 10 + dg;
        }
        return PyLong_FromLongLong(*s == '-' ? (long long)(0ull - v) : (long long)v);
    }
    {
        char tmp[64], *buf = tmp;
        size_t n = (size_t)(q - s);
        double v;

        if (n >= sizeof tmp && !(buf = PyMem_Malloc(n + 1))) return PyErr_NoMemory();
        memcpy(buf, s, n);
        buf[n] = 0;
        v = PyOS_string_to_double(buf, NULL, PyExc_ValueError); /* correctly rounded */
        if (buf != tmp) PyMem_Free(buf);
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        return PyFloat_FromDouble(v);
    }
}

static PyObject *dp_object(parser *ps) {
    PyObject *d = PyDict_New();

    if (!d) return NULL;
    ps->p++;
    dp_space(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return d;
    }
    for (;;) {
        PyObject *k, *v;
        int rc;

        dp_space(ps);
        if (ps->p >= ps->end || *ps->p != '"') goto bad_key;
        if (!(k = dp_string(ps))) goto fail;
        dp_space(ps);
        if (ps->p >= ps->end || *ps->p != ':') {
            Py_DECREF(k);
            dp_fail(ps, "':' expected");
            goto fail;
        }
        ps->p++;
        v = dp_value(ps);
        rc = v ? PyDict_SetItem(d, k, v) : -1;
        Py_DECREF(k);
        Py_XDECREF(v);
        if (rc < 0) goto fail;
        dp_space(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return d;
        }
        dp_fail(ps, "',' or '}' expected");
        goto fail;
    }
bad_key:
    dp_fail(ps, "string key expected");
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *dp_array(parser *ps) {
    PyObject *l = PyList_New(0);

    if (!l) return NULL;
    ps->p++;
    dp_space(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return l;
    }
    for (;;) {
        PyObject *v = dp_value(ps);
        int rc = v ? PyList_Append(l, v) : -1;
        Py_XDECREF(v);
        if (rc < 0) break;
        dp_space(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return l;
        }
        dp_fail(ps, "',' or ']' expected");
        break;
    }
    Py_DECREF(l);
    return NULL;
}

static PyObject *dp_value(parser *ps) {
    PyObject *r;

    dp_space(ps);
    if (ps->p >= ps->end) return dp_fail(ps, "unexpected end of text");
    switch (*ps->p) {
    case '{':
    case '[':
        if (++ps->depth > 2 * JSON_MAX_DEPTH) return dp_fail(ps, "nested too deep");
        r = *ps->p == '{' ? dp_object(ps) : dp_array(ps);
        ps->depth--;
        return r;
    case '"': return dp_string(ps);
    case 't':
        if (ps->end - ps->p >= 4 && memcmp(ps->p, "true", 4) == 0) {
            ps->p += 4;
            Py_RETURN_TRUE;
        }
        break;
    case 'f':
        if (ps->end - ps->p >= 5 && memcmp(ps->p, "false", 5) == 0) {
            ps->p += 5;
            Py_RETURN_FALSE;
        }
        break;
    case 'n':
        if (ps->end - ps->p >= 4 && memcmp(ps->p, "null", 4) == 0) {
            ps->p += 4;
            Py_RETURN_NONE;
        }
        break;
    default: return dp_number(ps);
    }
    return dp_fail(ps, "invalid value");
}

static PyObject *direct_decode(const char *text, size_t len) {
    parser ps = {(const unsigned char *)text, (const unsigned char *)text,
                 (const unsigned char *)text + len, 0};
    PyObject *r = dp_value(&ps);

    if (!r) return NULL;
    dp_space(&ps);
    if (ps.p != ps.end) {
        Py_DECREF(r);
        return dp_fail(&ps, "end of text expected");
    }
    return r;
}

PyObject *cpy_json_decode(cpy_state *st, const char *p, size_t len, uint64_t position) {
    PyObject *r = direct_decode(p, len);
    PyObject *exc, *msg, *pos;

    if (r || !position || !st || !PyErr_ExceptionMatches(PyExc_ValueError)) return r;
        /* stored text that does not decode: name the record */
#if PY_VERSION_HEX >= 0x030C0000
    exc = PyErr_GetRaisedException();
#else
    {
        PyObject *t, *tb;
        PyErr_Fetch(&t, &exc, &tb);
        PyErr_NormalizeException(&t, &exc, &tb);
        Py_XDECREF(t);
        Py_XDECREF(tb);
    }
#endif
    msg = PyUnicode_FromFormat("position %llu: stored JSON does not decode: %S",
                               (unsigned long long)position, exc);
    Py_DECREF(exc);
    exc = msg ? PyObject_CallOneArg(st->exc[CPY_EXC_CORRUPTION], msg) : NULL;
    Py_XDECREF(msg);
    if (!exc) return NULL;
    pos = PyLong_FromUnsignedLongLong(position);
    if (!pos || PyObject_SetAttrString(exc, "position", pos) < 0) {
        Py_XDECREF(pos);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(pos);
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}
