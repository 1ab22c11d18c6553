/*
 * Declarations shared by the files of resultkit._speedups (see module.c).
 */
#ifndef RESULTKIT_SPEEDUPS_H
#define RESULTKIT_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <math.h>

/* Interned strings and types, made once by the module's init (module.c). */
extern PyObject *RK_TAG, *RK_V, *RK_ISOFORMAT, *RK_S_TUPLE, *RK_MARK;
extern PyObject *RK_P_DATETIME, *RK_P_DATE, *RK_P_TIME, *RK_P_DECIMAL, *RK_P_UUID;
extern PyObject *RK_DecimalType, *RK_UUIDType, *RK_S_INT, *RK_S_IS_SAFE, *RK_SAFE_UNKNOWN,
    *RK_EMPTY_TUPLE;

static const char HEX[] = "0123456789abcdef";

static inline int
hex_value(Py_UCS4 c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

/* isodates.c (each file that uses datetime.h's macros imports its C API). */
enum { DATE = 1, TIME, DATETIME };
int rk_isodates_init(void);
PyObject *rk_marked_moment(PyObject *o, const char *prefix, PyObject *prefix_text);
PyObject *rk_moment_from_chars(int kind, const Py_UCS1 *c, Py_ssize_t n);
int rk_timestamp_of_text(const Py_UCS1 *c, Py_ssize_t n, long long *out);
int rk_timestamp_of(PyObject *value, long long *out);

/* tags.c */
/* How deep untag goes: each call and each list or mapping it enters is one level,
 * counted per thread across the calls that the Python decoders make back into
 * it; deeper is a RecursionError.  resultkit.serializers.MAX_DEPTH is the same
 * number (a test checks), and the pure-Python walk counts alike. */
#define RK_MAX_DEPTH 128
int rk_tags_init(void);
PyObject *speedups_prepare(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *speedups_untag(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* copyrow.c: the codes of a row spec's columns (code, key, limit) */
enum {
    COL_ROW_ID = 0, /* the row_id argument (int2/int4/int8: limit is its width in bytes) */
    COL_ID,         /* the record id, text */
    COL_TEXT,       /* meta[key]: text or None */
    COL_ENCODED,    /* encode(meta[key]), always (None is encoded too) */
    COL_ENCODED_OPT, /* encode(meta[key]), NULL when None */
    COL_ENCODED_IF, /* encode(meta[key]), NULL when falsy */
    COL_TIMESTAMP,  /* meta[key] (ISO text or datetime) as a naive UTC timestamp */
    COL_INT,        /* meta[key]: an int or None (limit is its width in bytes) */
    COL_NULL_UNLESS, /* NULL when meta[key] is falsy; anything else is made in Python */
};

/* A growing buffer: starts on the caller's stack, moves to the heap when it must grow. */
typedef struct {
    char *data;
    Py_ssize_t size, used;
    int on_heap;
} Buf;

int rk_buf_reserve(Buf *b, Py_ssize_t more);
void rk_put_be(char *c, unsigned long long value, int width);
int rk_buf_field(Buf *b, const char *data, Py_ssize_t n);
int rk_buf_null(Buf *b);
int rk_buf_int(Buf *b, long long value, int width);
int rk_buf_text(Buf *b, PyObject *value, Py_ssize_t limit);
int rk_column_of(PyObject *column, const char *caller, long *code, Py_ssize_t *limit);
PyObject *rk_row_made(PyObject *out, Buf *b, int rc);
PyObject *speedups_pack_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* jsonrow.c */
int rk_nonfinite(PyObject *o);
PyObject *speedups_nonfinite(PyObject *module, PyObject *o);
PyObject *speedups_long_digits(PyObject *module, PyObject *data);
PyObject *speedups_pack_json_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
