/*
 * One row of a PostgreSQL binary COPY, made from a record's meta.
 *
 * pack_row(out, spec, record_id, meta, encode, row_id) appends to the
 * bytearray out the binary COPY tuple of the columns spec describes (a tuple
 * of (code, key, limit) tuples, see resultkit.stores._pgcopy) and returns
 * True.  When a value is not in the form this function writes (a date with
 * another offset, text longer than its column, a value of an unexpected
 * type, encode raising), out is left as it was and False is returned: the
 * caller makes that row in Python, which also raises the documented errors.
 *
 * Python twin: resultkit.stores._pgcopy.pack_values over the row that
 * resultkit.stores.sql.SqlStore._row makes (used for every row when this
 * module is not built).  The column codes are the ColumnRole values of the
 * Python side; tests/test_pgcopy.py checks that both agree.
 */
#include "speedups.h"

int
rk_buf_reserve(Buf *b, Py_ssize_t more)
{
    if (b->used + more <= b->size)
        return 0;
    Py_ssize_t size = b->size * 2 > b->used + more ? b->size * 2 : b->used + more + 256;
    char *data = b->on_heap ? PyMem_Realloc(b->data, (size_t)size) : PyMem_Malloc((size_t)size);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (!b->on_heap)
        memcpy(data, b->data, (size_t)b->used);
    b->data = data;
    b->on_heap = 1;
    b->size = size;
    return 0;
}

void
rk_put_be(char *c, unsigned long long value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        c[i] = (char)(value & 0xff);
        value >>= 8;
    }
}

/* A field: its 4-byte length, then n bytes of data (NULL data: SQL NULL). */
int
rk_buf_field(Buf *b, const char *data, Py_ssize_t n)
{
    if (data == NULL) {
        if (rk_buf_reserve(b, 4) < 0)
            return -1;
        memset(b->data + b->used, 0xff, 4);
        b->used += 4;
        return 0;
    }
    if (n > 0x7fffffff) {
        PyErr_SetString(PyExc_OverflowError, "a value of more than 2 GB");
        return -1;
    }
    if (rk_buf_reserve(b, 4 + n) < 0)
        return -1;
    rk_put_be(b->data + b->used, (unsigned long long)n, 4);
    memcpy(b->data + b->used + 4, data, (size_t)n);
    b->used += 4 + n;
    return 0;
}

/* A NULL field: 1, or -1 with an error (the result of a column made). */
int
rk_buf_null(Buf *b)
{
    return rk_buf_field(b, NULL, 0) < 0 ? -1 : 1;
}

/* The code and limit of a spec column (code, key, limit): 0, or -1 with an error. */
int
rk_column_of(PyObject *column, const char *caller, long *code, Py_ssize_t *limit)
{
    if (!PyTuple_CheckExact(column) || PyTuple_GET_SIZE(column) != 3) {
        PyErr_Format(PyExc_TypeError, "%s: each column is (code, key, limit)", caller);
        return -1;
    }
    *code = PyLong_AsLong(PyTuple_GET_ITEM(column, 0));
    *limit = PyLong_AsSsize_t(PyTuple_GET_ITEM(column, 2));
    return (*code == -1 || *limit == -1) && PyErr_Occurred() ? -1 : 0;
}

int
rk_buf_int(Buf *b, long long value, int width)
{
    char c[8];
    rk_put_be(c, (unsigned long long)value, width);
    return rk_buf_field(b, c, width);
}


/* Text as UTF-8 when no longer than limit characters (0: no limit); 0 otherwise. */
int
rk_buf_text(Buf *b, PyObject *value, Py_ssize_t limit)
{
    if (!PyUnicode_CheckExact(value) || (limit > 0 && PyUnicode_GET_LENGTH(value) > limit))
        return 0;
    Py_ssize_t n;
    const char *data = PyUnicode_AsUTF8AndSize(value, &n);
    if (data == NULL) {
        PyErr_Clear();  /* lone surrogates: Python says what is wrong */
        return 0;
    }
    return rk_buf_field(b, data, n) < 0 ? -1 : 1;
}

/* True when the n bytes at text contain "null". */
static int
has_null(const char *text, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i + 4 <= n; i++)
        if (text[i] == 'n' && memcmp(text + i, "null", 4) == 0)
            return 1;
    return 0;
}

/* encode(value) as a bytea field; 0 when encode raised or returned something
 * else, or wrote null for a NaN or an infinity (Python then writes them). */
static int
buf_encoded(Buf *b, PyObject *encode, PyObject *value)
{
    PyObject *data = PyObject_CallOneArg(encode, value);
    if (data == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
        return 0;
    }
    int rc = 0;
    if (PyBytes_CheckExact(data)) {
        const char *text = PyBytes_AS_STRING(data);
        Py_ssize_t n = PyBytes_GET_SIZE(data);
        int lost = has_null(text, n) ? rk_nonfinite(value) : 0;
        if (lost < 0)
            rc = -1;
        else if (!lost)
            rc = rk_buf_field(b, text, n) < 0 ? -1 : 1;
    }
    Py_DECREF(data);
    return rc;
}

/* One column into b: 1 written, 0 not in a form written here, -1 error. */
static int
pack_column(Buf *b, PyObject *column, PyObject *record_id, PyObject *meta, PyObject *encode,
            PyObject *row_id)
{
    long code;
    Py_ssize_t limit;
    if (rk_column_of(column, "pack_row", &code, &limit) < 0)
        return -1;
    if (code == COL_ROW_ID)
        return rk_buf_int(b, PyLong_AsLongLong(row_id), (int)limit) < 0 ? -1 : 1;
    if (code == COL_ID)
        return rk_buf_text(b, record_id, limit);
    PyObject *value = PyDict_GetItemWithError(meta, PyTuple_GET_ITEM(column, 1));
    if (value == NULL && PyErr_Occurred())
        return -1;
    if (value == NULL)
        value = Py_None;
    int truth;
    long long number;
    switch (code) {
    case COL_TEXT:
        return value == Py_None ? rk_buf_null(b) : rk_buf_text(b, value, limit);
    case COL_ENCODED:
        return buf_encoded(b, encode, value);
    case COL_ENCODED_OPT:
        return value == Py_None ? rk_buf_null(b)
                                : buf_encoded(b, encode, value);
    case COL_ENCODED_IF:
    case COL_NULL_UNLESS:
        truth = PyObject_IsTrue(value);
        if (truth < 0)
            return -1;
        if (!truth)
            return rk_buf_null(b);
        return code == COL_ENCODED_IF ? buf_encoded(b, encode, value) : 0;
    case COL_TIMESTAMP:
        if (value == Py_None)
            return rk_buf_null(b);
        return rk_timestamp_of(value, &number) ? (rk_buf_int(b, number, 8) < 0 ? -1 : 1) : 0;
    case COL_INT:
        if (value == Py_None)
            return rk_buf_null(b);
        if (!PyLong_CheckExact(value))
            return 0;
        number = PyLong_AsLongLong(value);
        if (number == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (limit < 8 && (number < -(1LL << (limit * 8 - 1)) || number >= (1LL << (limit * 8 - 1))))
            return 0;
        return rk_buf_int(b, number, (int)limit) < 0 ? -1 : 1;
    default:
        PyErr_Format(PyExc_ValueError, "pack_row: unknown column code %ld", code);
        return -1;
    }
}

/* What making a row into b came to (rc 1 made, 0 declined, -1 error): the row
 * appended to out and True, False with out as it was, or NULL.  Frees b. */
PyObject *
rk_row_made(PyObject *out, Buf *b, int rc)
{
    PyObject *made = NULL;
    if (rc == 1) {
        Py_ssize_t at = PyByteArray_GET_SIZE(out);
        if (PyByteArray_Resize(out, at + b->used) == 0) {
            memcpy(PyByteArray_AS_STRING(out) + at, b->data, (size_t)b->used);
            made = Py_NewRef(Py_True);
        }
    }
    else if (rc == 0)
        made = Py_NewRef(Py_False);
    if (b->on_heap)
        PyMem_Free(b->data);
    return made;
}

PyObject *
speedups_pack_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyByteArray_CheckExact(args[0]) || !PyTuple_CheckExact(args[1]) ||
        !PyUnicode_Check(args[2]) || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "pack_row(out: bytearray, spec: tuple, record_id: str, meta: dict, "
                        "encode, row_id)");
        return NULL;
    }
    PyObject *spec = args[1];
    Py_ssize_t columns = PyTuple_GET_SIZE(spec);
    char stack[2048];
    Buf b = {stack, sizeof(stack), 2, 0};
    rk_put_be(b.data, (unsigned long long)columns, 2);
    int rc = 1;
    for (Py_ssize_t i = 0; i < columns && rc == 1; i++)
        rc = pack_column(&b, PyTuple_GET_ITEM(spec, i), args[2], args[3], args[4], args[5]);
    return rk_row_made(args[0], &b, rc);
}
