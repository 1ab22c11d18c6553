/*
 * JSON as stored: checks on JSON text and trees, and COPY rows made from a
 * meta's stored JSON without decoding it.
 *
 * long_digits(data) and nonfinite(tree) are the Python twins
 * resultkit.codec._long_digits and _nonfinite: they decide when orjson's
 * reading or writing would change a number.  pack_json_row validates every
 * value it reads as strict JSON (plus NaN and Infinity) and declines what it
 * does not write itself; its Python twin is decoding the meta (codec.exact_json)
 * and making the row with pack_row or in Python.
 */
#include "speedups.h"

/* 1 when o holds a NaN or an infinite float in its dicts, lists and tuples
 * (orjson writes those as null); 0 when not; -1 with an error. */
int
rk_nonfinite(PyObject *o)
{
    if (PyFloat_Check(o)) {
        double v = PyFloat_AS_DOUBLE(o);
        return !isfinite(v);
    }
    PyObject *const *items;
    Py_ssize_t n;
    if (PyDict_Check(o)) {
        Py_ssize_t at = 0;
        PyObject *key, *value;
        if (Py_EnterRecursiveCall(" in nonfinite"))
            return -1;
        int rc = 0;
        while (rc == 0 && PyDict_Next(o, &at, &key, &value))
            rc = rk_nonfinite(value);
        Py_LeaveRecursiveCall();
        return rc;
    }
    if (PyList_Check(o)) {
        items = (PyObject *const *)((PyListObject *)o)->ob_item;
        n = PyList_GET_SIZE(o);
    }
    else if (PyTuple_Check(o)) {
        items = (PyObject *const *)((PyTupleObject *)o)->ob_item;
        n = PyTuple_GET_SIZE(o);
    }
    else
        return 0;
    if (Py_EnterRecursiveCall(" in nonfinite"))
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++)
        rc = rk_nonfinite(items[i]);
    Py_LeaveRecursiveCall();
    return rc;
}

PyObject *
speedups_nonfinite(PyObject *module, PyObject *o)
{
    int rc = rk_nonfinite(o);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

/* long_digits(data): True when data has 20 digits in a row somewhere (an
 * integer beyond 64 bits, which orjson would read as a float). */
PyObject *
speedups_long_digits(PyObject *module, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *c = view.buf;
    Py_ssize_t run = 0, found = 0;
    for (Py_ssize_t i = 0; i < view.len && !found; i++) {
        run = (c[i] >= '0' && c[i] <= '9') ? run + 1 : 0;
        found = run >= 20;
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(found);
}

/*
 * pack_json_row: the same row, made from the meta's stored JSON itself.
 *
 * pack_json_row(out, spec, record_id, raw, row_id) reads raw (bytes: Celery's
 * meta as a JSON object, as stored) without making Python objects.  Every
 * value is validated as JSON (UTF-8, escapes, surrogate pairs, numbers; NaN
 * and Infinity too, which Python's json, and so Celery, writes and reads);
 * the encoded columns take a value's JSON text as it is, text
 * columns its unescaped string, date_done and retries their parsed value.
 * Anything else (not strict JSON, a key with escapes, a form pack_row would
 * decline) returns False with out unchanged: the caller decodes the meta.
 */

#define JSON_MAX_DEPTH 256

typedef struct {
    const Py_UCS1 *p, *end;
    int depth;
} Scan;

static void
scan_space(Scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

/* The length of the valid UTF-8 sequence at p (its first byte >= 0x80), 0 if invalid. */
static int
utf8_length(const Py_UCS1 *p, const Py_UCS1 *end)
{
    unsigned int cp;
    int n;
    if (p[0] >= 0xC2 && p[0] <= 0xDF)
        n = 2, cp = p[0] & 0x1F;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        n = 3, cp = p[0] & 0x0F;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        n = 4, cp = p[0] & 0x07;
    else
        return 0;
    if (end - p < n)
        return 0;
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

/* The four hex digits at c, or -1. */
static long
hex4(const Py_UCS1 *c)
{
    long value = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(c[i]);
        if (h < 0)
            return -1;
        value = value * 16 + h;
    }
    return value;
}

/* The escape at c (after its backslash): the code point it stands for, and
 * how many bytes it takes (*size); -1 if invalid.  A surrogate pair is one. */
static long
escape_at(const Py_UCS1 *c, const Py_UCS1 *end, int *size)
{
    static const char simple[] = "\"\\/bfnrt", meaning[] = "\"\\/\b\f\n\r\t";
    if (c >= end)
        return -1;
    if (*c != 'u') {
        const char *at = *c ? strchr(simple, *c) : NULL;
        *size = 1;
        return at ? (unsigned char)meaning[at - simple] : -1;
    }
    if (end - c < 5)
        return -1;
    long u = hex4(c + 1);
    *size = 5;
    if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
        return -1;
    if (u >= 0xD800 && u <= 0xDBFF) {
        if (end - c < 11 || c[5] != '\\' || c[6] != 'u')
            return -1;
        long low = hex4(c + 7);
        if (low < 0xDC00 || low > 0xDFFF)
            return -1;
        *size = 11;
        return 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00);
    }
    return u;
}

/* A string at s->p (its opening quote): 1 when valid, with *escaped set when it
 * has escapes and *chars its length in code points. */
static int
scan_string(Scan *s, int *escaped, Py_ssize_t *chars)
{
    Py_ssize_t n = 0;
    *escaped = 0;
    s->p++;
    while (s->p < s->end) {
        Py_UCS1 c = *s->p;
        if (c == '"') {
            s->p++;
            *chars = n;
            return 1;
        }
        n++;
        if (c == '\\') {
            int size;
            if (escape_at(s->p + 1, s->end, &size) < 0)
                return 0;
            *escaped = 1;
            s->p += 1 + size;
        }
        else if (c < 0x20)
            return 0;
        else if (c < 0x80)
            s->p++;
        else {
            int size = utf8_length(s->p, s->end);
            if (!size)
                return 0;
            s->p += size;
        }
    }
    return 0;
}

static int
is_digit(const Scan *s)
{
    return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

/* A number at s->p: 1 when valid, *integer set when it has no fraction or exponent. */
static int
scan_number(Scan *s, int *integer)
{
    *integer = 1;
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (!is_digit(s))
        return 0;
    if (*s->p == '0')
        s->p++;
    else
        while (is_digit(s))
            s->p++;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        *integer = 0;
        if (!is_digit(s))
            return 0;
        while (is_digit(s))
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        *integer = 0;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!is_digit(s))
            return 0;
        while (is_digit(s))
            s->p++;
    }
    return 1;
}

static int
scan_literal(Scan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return 0;
    s->p += n;
    return 1;
}

/* Any JSON value at s->p (after white space): 1 when valid. */
static int
scan_value(Scan *s)
{
    int flag;
    Py_ssize_t chars;
    if (s->p >= s->end)
        return 0;
    switch (*s->p) {
    case '"':
        return scan_string(s, &flag, &chars);
    case 't':
        return scan_literal(s, "true");
    case 'f':
        return scan_literal(s, "false");
    case 'n':
        return scan_literal(s, "null");
    case 'N': /* NaN and Infinity: not JSON, but what Python's json (and so Celery) writes */
        return scan_literal(s, "NaN");
    case 'I':
        return scan_literal(s, "Infinity");
    case '{':
    case '[': {
        Py_UCS1 close = *s->p == '{' ? '}' : ']';
        if (++s->depth > JSON_MAX_DEPTH)
            return 0;
        s->p++;
        scan_space(s);
        if (s->p < s->end && *s->p == close) {
            s->p++;
            s->depth--;
            return 1;
        }
        for (;;) {
            if (close == '}') {
                if (s->p >= s->end || *s->p != '"' || !scan_string(s, &flag, &chars))
                    return 0;
                scan_space(s);
                if (s->p >= s->end || *s->p != ':')
                    return 0;
                s->p++;
                scan_space(s);
            }
            if (!scan_value(s))
                return 0;
            scan_space(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                scan_space(s);
                continue;
            }
            if (s->p < s->end && *s->p == close) {
                s->p++;
                s->depth--;
                return 1;
            }
            return 0;
        }
    }
    default:
        if (s->end - s->p >= 9 && memcmp(s->p, "-Infinity", 9) == 0) {
            s->p += 9;
            return 1;
        }
        return scan_number(s, &flag);
    }
}

typedef struct {
    const Py_UCS1 *start, *end; /* start NULL: the key is absent */
} Span;

static int
span_is(const Span *v, const char *text)
{
    size_t n = strlen(text);
    return v->start && (size_t)(v->end - v->start) == n && memcmp(v->start, text, n) == 0;
}

/* True for the values Python finds false that a column may meet: null (or
 * absent), false, "", [] and {} (numbers are left to Python). */
static int
span_is_empty(const Span *v)
{
    if (!v->start || span_is(v, "null") || span_is(v, "false") || span_is(v, "\"\""))
        return 1;
    if (*v->start != '[' && *v->start != '{')
        return 0;
    for (const Py_UCS1 *c = v->start + 1; c < v->end - 1; c++)
        if (*c != ' ' && *c != '\n' && *c != '\r' && *c != '\t')
            return 0;
    return 1;
}

/* A JSON string as a text field, unescaped, when no longer than limit code
 * points (0: no limit) and without NUL; 0 otherwise. */
static int
span_text(Buf *b, const Span *v, Py_ssize_t limit)
{
    Scan s = {v->start, v->end, 0};
    int escaped;
    Py_ssize_t chars;
    if (*v->start != '"' || !scan_string(&s, &escaped, &chars) || (limit > 0 && chars > limit))
        return 0;
    const Py_UCS1 *c = v->start + 1, *end = v->end - 1;
    if (!escaped)
        return rk_buf_field(b, (const char *)c, end - c) < 0 ? -1 : 1;
    if (rk_buf_reserve(b, 4 + (end - c)) < 0) /* unescaped text is never longer */
        return -1;
    char *length_at = b->data + b->used, *w = length_at + 4;
    while (c < end) {
        if (*c != '\\') {
            *w++ = (char)*c++;
            continue;
        }
        int size;
        long cp = escape_at(c + 1, end, &size);
        if (cp <= 0) /* NUL has no place in PostgreSQL text */
            return 0;
        c += 1 + size;
        if (cp < 0x80)
            *w++ = (char)cp;
        else if (cp < 0x800) {
            *w++ = (char)(0xC0 | (cp >> 6));
            *w++ = (char)(0x80 | (cp & 0x3F));
        }
        else if (cp < 0x10000) {
            *w++ = (char)(0xE0 | (cp >> 12));
            *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
            *w++ = (char)(0x80 | (cp & 0x3F));
        }
        else {
            *w++ = (char)(0xF0 | (cp >> 18));
            *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
            *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
            *w++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    rk_put_be(length_at, (unsigned long long)(w - length_at - 4), 4);
    b->used = w - b->data;
    return 1;
}

/* A JSON integer that fits width bytes, as an int field; 0 otherwise. */
static int
span_int(Buf *b, const Span *v, int width)
{
    Scan s = {v->start, v->end, 0};
    int integer;
    if (!scan_number(&s, &integer) || !integer || v->end - v->start > 18)
        return 0;
    long long value = 0;
    int negative = *v->start == '-';
    for (const Py_UCS1 *c = v->start + negative; c < v->end; c++)
        value = value * 10 + (*c - '0');
    if (negative)
        value = -value;
    if (width < 8 && (value < -(1LL << (width * 8 - 1)) || value >= (1LL << (width * 8 - 1))))
        return 0;
    return rk_buf_int(b, value, width) < 0 ? -1 : 1;
}

static int
span_field(Buf *b, const Span *v)
{
    return rk_buf_field(b, (const char *)v->start, v->end - v->start) < 0 ? -1 : 1;
}

/* One column from its value's span: 1 written, 0 declined, -1 error. */
static int
pack_span(Buf *b, long code, const Span *v, Py_ssize_t limit)
{
    int is_null = !v->start || span_is(v, "null");
    long long micros;
    switch (code) {
    case COL_TEXT:
        return is_null ? rk_buf_null(b) : span_text(b, v, limit);
    case COL_ENCODED:
        return v->start ? span_field(b, v) : (rk_buf_field(b, "null", 4) < 0 ? -1 : 1);
    case COL_ENCODED_OPT:
        return is_null ? rk_buf_null(b) : span_field(b, v);
    case COL_ENCODED_IF:
        if (span_is_empty(v))
            return rk_buf_null(b);
        return *v->start == '-' || (*v->start >= '0' && *v->start <= '9') ? 0 : span_field(b, v);
    case COL_NULL_UNLESS:
        return span_is_empty(v) ? rk_buf_null(b) : 0;
    case COL_TIMESTAMP:
        if (is_null)
            return rk_buf_null(b);
        /* Dates have no escapes: the text between the quotes. */
        if (*v->start != '"' || memchr(v->start, '\\', v->end - v->start) ||
            !rk_timestamp_of_text(v->start + 1, v->end - v->start - 2, &micros))
            return 0;
        return rk_buf_int(b, micros, 8) < 0 ? -1 : 1;
    case COL_INT:
        return is_null ? rk_buf_null(b) : span_int(b, v, (int)limit);
    default:
        return 0;
    }
}

PyObject *
speedups_pack_json_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyByteArray_CheckExact(args[0]) || !PyTuple_CheckExact(args[1]) ||
        !PyUnicode_Check(args[2]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "pack_json_row(out: bytearray, spec: tuple, record_id: str, raw: bytes, "
                        "row_id)");
        return NULL;
    }
    PyObject *spec = args[1];
    Py_ssize_t columns = PyTuple_GET_SIZE(spec);
    if (columns > 64) {
        PyErr_SetString(PyExc_ValueError, "pack_json_row: more than 64 columns");
        return NULL;
    }
    long codes[64];
    Py_ssize_t limits[64];
    const char *keys[64];
    Py_ssize_t key_sizes[64];
    Span values[64];
    for (Py_ssize_t i = 0; i < columns; i++) {
        PyObject *column = PyTuple_GET_ITEM(spec, i);
        if (rk_column_of(column, "pack_json_row", &codes[i], &limits[i]) < 0)
            return NULL;
        if (!PyUnicode_Check(PyTuple_GET_ITEM(column, 1))) {
            PyErr_SetString(PyExc_TypeError, "pack_json_row: each column's key is text");
            return NULL;
        }
        keys[i] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(column, 1), &key_sizes[i]);
        if (keys[i] == NULL)
            return NULL;
        values[i].start = values[i].end = NULL;
    }
    /* The top-level object: each key a column reads keeps its value's span (the last one). */
    const Py_UCS1 *raw = (const Py_UCS1 *)PyBytes_AS_STRING(args[3]);
    Scan s = {raw, raw + PyBytes_GET_SIZE(args[3]), 1};
    scan_space(&s);
    if (s.p >= s.end || *s.p != '{')
        Py_RETURN_FALSE;
    s.p++;
    scan_space(&s);
    int empty = s.p < s.end && *s.p == '}';
    if (empty)
        s.p++;
    while (!empty) {
        int escaped;
        Py_ssize_t chars;
        const Py_UCS1 *key = s.p + 1;
        if (s.p >= s.end || *s.p != '"' || !scan_string(&s, &escaped, &chars) || escaped)
            Py_RETURN_FALSE;
        Py_ssize_t key_size = s.p - 1 - key;
        scan_space(&s);
        if (s.p >= s.end || *s.p != ':')
            Py_RETURN_FALSE;
        s.p++;
        scan_space(&s);
        Span value = {s.p, NULL};
        if (!scan_value(&s))
            Py_RETURN_FALSE;
        value.end = s.p;
        for (Py_ssize_t i = 0; i < columns; i++)
            if (codes[i] > COL_ID && key_sizes[i] == key_size && memcmp(keys[i], key, key_size) == 0)
                values[i] = value;
        scan_space(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            scan_space(&s);
            continue;
        }
        if (s.p < s.end && *s.p == '}') {
            s.p++;
            break;
        }
        Py_RETURN_FALSE;
    }
    scan_space(&s);
    if (s.p != s.end)
        Py_RETURN_FALSE;

    char stack[2048];
    Buf b = {stack, sizeof(stack), 2, 0};
    rk_put_be(b.data, (unsigned long long)columns, 2);
    int rc = 1;
    for (Py_ssize_t i = 0; i < columns && rc == 1; i++) {
        if (codes[i] == COL_ROW_ID)
            rc = rk_buf_int(&b, PyLong_AsLongLong(args[4]), (int)limits[i]) < 0 ? -1 : 1;
        else if (codes[i] == COL_ID)
            rc = rk_buf_text(&b, args[2], limits[i]);
        else
            rc = pack_span(&b, codes[i], &values[i], limits[i]);
        if (rc < 0 && !PyErr_Occurred())
            rc = 0;
    }
    return rk_row_made(args[0], &b, rc);
}
