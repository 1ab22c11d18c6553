/*
 * resultkit._speedups: the two walks of resultkit's serializers, in C.
 *
 * prepare(obj, binary, fallback) returns obj as plain JSON/msgpack data with
 * tagged values: datetimes, dates, times, Decimals and UUIDs as marked strings
 * ("~date:2026-11-23"), strings that start with "~" with one more, tuples as
 * tagged objects ({"__rk__": "tuple", "v": [...]}).  Dicts and lists that need
 * no change are returned as they are (no copy); a container is copied only
 * when one of its items changes.  Every other non-JSON value goes to
 * fallback(value, binary), the Python function that also raises for values
 * that cannot be serialized.
 *
 * untag(obj, simple, containers, slow, unmark) replaces, in place, every
 * tagged value in freshly decoded data by the value it stands for: marked
 * strings and tagged objects whose tag is in `simple` (tag -> callable taking
 * the text) or `containers` (tag -> 1 tuple, 2 set, 3 frozenset) are handled
 * here when well formed (dates, times, datetimes and UUIDs in the form
 * prepare writes are parsed here); anything else goes to unmark(string) or
 * slow(tagged_dict), which also raise the documented errors.
 *
 * Both functions are exact equivalents of resultkit.serializers._tag and
 * _untag, which are used when this module is not built.
 *
 * pack_row(out, spec, record_id, meta, encode, row_id) appends one row of a
 * PostgreSQL binary COPY made from a record's meta (resultkit.stores._pgcopy
 * makes the same rows in Python when this module is not built), and
 * pack_json_row(out, spec, record_id, raw, row_id) the same row from the
 * meta's stored JSON, without decoding it into Python objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <math.h>

static PyObject *TAG, *V, *ISOFORMAT, *S_TUPLE, *MARK;
static PyObject *P_DATETIME, *P_DATE, *P_TIME, *P_DECIMAL, *P_UUID;
static PyObject *DecimalType, *UUIDType, *S_INT, *S_IS_SAFE, *SAFE_UNKNOWN, *EMPTY_TUPLE;

static const char HEX[] = "0123456789abcdef";

/* "~uuid:" and the canonical 36-character form of a UUID (str(uuid)). */
static PyObject *
marked_uuid(PyObject *o)
{
    PyObject *value = PyObject_GetAttr(o, S_INT);
    if (value == NULL)
        return NULL;
    unsigned char bytes[16];
    int rc = PyLong_CheckExact(value) ? _PyLong_AsByteArray((PyLongObject *)value, bytes, 16, 0, 0
#if PY_VERSION_HEX >= 0x030D0000
                                                            , 1
#endif
                                                            )
                                      : -1;
    Py_DECREF(value);
    if (rc < 0) {  /* not a 128-bit int: str() says what it holds */
        PyErr_Clear();
        PyObject *text = PyObject_Str(o);
        PyObject *marked = text ? PyUnicode_Concat(P_UUID, text) : NULL;
        Py_XDECREF(text);
        return marked;
    }
    PyObject *text = PyUnicode_New(6 + 36, 127);
    if (text == NULL)
        return NULL;
    Py_UCS1 *c = PyUnicode_1BYTE_DATA(text);
    memcpy(c, "~uuid:", 6);
    c += 6;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *c++ = '-';
        *c++ = (Py_UCS1)HEX[bytes[i] >> 4];
        *c++ = (Py_UCS1)HEX[bytes[i] & 0xf];
    }
    return text;
}

/* Decimal digits, zero-padded to width, at c; returns the position after them. */
static char *
digits(char *c, int value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        c[i] = (char)('0' + value % 10);
        value /= 10;
    }
    return c + width;
}

/* "HH:MM:SS[.ffffff]" at c; returns the position after it. */
static char *
clock_text(char *c, int hour, int minute, int second, int micro)
{
    c = digits(c, hour, 2);
    *c++ = ':';
    c = digits(c, minute, 2);
    *c++ = ':';
    c = digits(c, second, 2);
    if (micro) {
        *c++ = '.';
        c = digits(c, micro, 6);
    }
    return c;
}

/* "YYYY-MM-DD" at c; returns the position after it. */
static char *
date_text(char *c, PyObject *o)
{
    c = digits(c, PyDateTime_GET_YEAR(o), 4);
    *c++ = '-';
    c = digits(c, PyDateTime_GET_MONTH(o), 2);
    *c++ = '-';
    return digits(c, PyDateTime_GET_DAY(o), 2);
}

/* prefix and the isoformat() of a date, time or datetime, formatted here when it
 * has no tzinfo or UTC (what results nearly always hold); NULL without an error
 * otherwise. */
static PyObject *
iso_text(PyObject *o, const char *prefix)
{
    char text[64];
    size_t n = strlen(prefix);
    memcpy(text, prefix, n);
    char *end = text + n;
    PyObject *tz = Py_None;
    if (PyDateTime_Check(o)) {
        tz = PyDateTime_DATE_GET_TZINFO(o);
        end = date_text(end, o);
        *end++ = 'T';
        end = clock_text(end, PyDateTime_DATE_GET_HOUR(o), PyDateTime_DATE_GET_MINUTE(o),
                         PyDateTime_DATE_GET_SECOND(o), PyDateTime_DATE_GET_MICROSECOND(o));
    }
    else if (PyDate_Check(o)) {
        end = date_text(end, o);
    }
    else {
        tz = PyDateTime_TIME_GET_TZINFO(o);
        end = clock_text(end, PyDateTime_TIME_GET_HOUR(o), PyDateTime_TIME_GET_MINUTE(o),
                         PyDateTime_TIME_GET_SECOND(o), PyDateTime_TIME_GET_MICROSECOND(o));
    }
    if (tz == PyDateTime_TimeZone_UTC) {
        memcpy(end, "+00:00", 6);
        end += 6;
    }
    else if (tz != Py_None)
        return NULL;  /* another zone: its own isoformat() */
    return PyUnicode_FromStringAndSize(text, end - text);
}

/* The marked string of a date, time or datetime: "~date:2026-11-23". */
static PyObject *
marked_moment(PyObject *o, const char *prefix, PyObject *prefix_text)
{
    PyObject *text = iso_text(o, prefix);
    if (text != NULL || PyErr_Occurred())
        return text;
    PyObject *iso = PyObject_CallMethodNoArgs(o, ISOFORMAT);
    PyObject *marked = iso ? PyUnicode_Concat(prefix_text, iso) : NULL;
    Py_XDECREF(iso);
    return marked;
}

static int
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

/* uuid.UUID(text) for the canonical 36-character form at c; NULL without an error otherwise. */
static PyObject *
uuid_from_chars(const Py_UCS1 *c, Py_ssize_t n)
{
    if (n != 36)
        return NULL;
    unsigned char bytes[16];
    int digits = 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c[i] != '-')
                return NULL;
            continue;
        }
        int h = hex_value(c[i]);
        if (h < 0)
            return NULL;
        if (digits % 2 == 0)
            bytes[digits / 2] = (unsigned char)(h << 4);
        else
            bytes[digits / 2] |= (unsigned char)h;
        digits++;
    }
    PyObject *value = _PyLong_FromByteArray(bytes, 16, 0, 0);
    if (value == NULL)
        return NULL;
    /* As UUID.__setstate__ does: the instance is immutable through __setattr__. */
    PyObject *u = ((PyTypeObject *)UUIDType)->tp_new((PyTypeObject *)UUIDType, EMPTY_TUPLE, NULL);
    if (u == NULL || PyObject_GenericSetAttr(u, S_INT, value) < 0 ||
        PyObject_GenericSetAttr(u, S_IS_SAFE, SAFE_UNKNOWN) < 0) {
        Py_XDECREF(u);
        Py_DECREF(value);
        return NULL;
    }
    Py_DECREF(value);
    return u;
}


/* The unsigned number in width ASCII digits at c; -1 when one is not a digit. */
static int
number(const Py_UCS1 *c, int width)
{
    int value = 0;
    for (int i = 0; i < width; i++) {
        if (c[i] < '0' || c[i] > '9')
            return -1;
        value = value * 10 + (c[i] - '0');
    }
    return value;
}

/* "YYYY-MM-DD" at c (10 characters available). */
static int
parse_day(const Py_UCS1 *c, int *year, int *month, int *day)
{
    if (c[4] != '-' || c[7] != '-')
        return 0;
    *year = number(c, 4);
    *month = number(c + 5, 2);
    *day = number(c + 8, 2);
    return *year >= 0 && *month >= 0 && *day >= 0;
}

/* "HH:MM:SS" or "HH:MM:SS.ffffff", exactly n characters at c. */
static int
parse_clock(const Py_UCS1 *c, Py_ssize_t n, int *clock)
{
    if ((n != 8 && n != 15) || c[2] != ':' || c[5] != ':' || (n == 15 && c[8] != '.'))
        return 0;
    clock[0] = number(c, 2);
    clock[1] = number(c + 3, 2);
    clock[2] = number(c + 6, 2);
    clock[3] = n == 15 ? number(c + 9, 6) : 0;
    return clock[0] >= 0 && clock[1] >= 0 && clock[2] >= 0 && clock[3] >= 0;
}

enum { DATE = 1, TIME, DATETIME };

/* The date, time or datetime (kind) that the n characters at c, as iso_text
 * writes them, stand for.  NULL without an error for any other form
 * (fromisoformat() reads those), NULL with an error for fields out of range. */
static PyObject *
moment_from_chars(int kind, const Py_UCS1 *c, Py_ssize_t n)
{
    int year, month, day, clock[4];
    if (kind == DATE) {
        if (n != 10 || !parse_day(c, &year, &month, &day))
            return NULL;
        return PyDate_FromDate(year, month, day);
    }
    PyObject *tz = Py_None;
    if (n >= 6 && memcmp(c + n - 6, "+00:00", 6) == 0) {
        tz = PyDateTime_TimeZone_UTC;
        n -= 6;
    }
    if (kind == TIME) {
        if (!parse_clock(c, n, clock))
            return NULL;
        return PyDateTimeAPI->Time_FromTime(clock[0], clock[1], clock[2], clock[3], tz,
                                            PyDateTimeAPI->TimeType);
    }
    if (n < 19 || c[10] != 'T' || !parse_day(c, &year, &month, &day) ||
        !parse_clock(c + 11, n - 11, clock))
        return NULL;
    return PyDateTimeAPI->DateTime_FromDateAndTime(year, month, day, clock[0], clock[1],
                                                   clock[2], clock[3], tz,
                                                   PyDateTimeAPI->DateTimeType);
}

/* DATE, TIME or DATETIME for those tag names (n characters at c), 0 for any other. */
static int
moment_kind(const Py_UCS1 *c, Py_ssize_t n)
{
    if (n == 4)
        return memcmp(c, "date", 4) == 0 ? DATE : memcmp(c, "time", 4) == 0 ? TIME : 0;
    return n == 8 && memcmp(c, "datetime", 8) == 0 ? DATETIME : 0;
}

/* The scalar a tag name and its text stand for, read here for the forms this
 * module writes: uuid, date, time, datetime.  NULL without an error for any
 * other tag or form, NULL with an error for fields out of range. */
static PyObject *
scalar_from_chars(const Py_UCS1 *name, Py_ssize_t name_n, const Py_UCS1 *c, Py_ssize_t n)
{
    if (name_n == 4 && memcmp(name, "uuid", 4) == 0)
        return uuid_from_chars(c, n);
    int kind = moment_kind(name, name_n);
    return kind ? moment_from_chars(kind, c, n) : NULL;
}

typedef struct {
    PyObject *fallback;
    PyObject *binary;
} Prep;

/* {"__rk__": name, "v": value}; steals value (which may be NULL on error). */
static PyObject *
tagged(PyObject *name, PyObject *value)
{
    if (value == NULL)
        return NULL;
    PyObject *d = PyDict_New();
    if (d == NULL || PyDict_SetItem(d, TAG, name) < 0 || PyDict_SetItem(d, V, value) < 0) {
        Py_XDECREF(d);
        Py_DECREF(value);
        return NULL;
    }
    Py_DECREF(value);
    return d;
}

/* An exact int that JSON and msgpack carry as a number: -2**63 <= v < 2**64. */
static int
plain_int(PyObject *o)
{
    int overflow;
    PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0)
        return 1;
    if (overflow < 0)
        return 0;
    unsigned long long u = PyLong_AsUnsignedLongLong(o);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static PyObject *prep(PyObject *o, Prep *p);

static PyObject *
fallback(PyObject *o, Prep *p)
{
    return PyObject_CallFunctionObjArgs(p->fallback, o, p->binary, NULL);
}

static PyObject *
prep_dict(PyObject *o, Prep *p)
{
    PyObject *key, *value, *copy = NULL;
    Py_ssize_t pos = 0;
    int has_tag = PyDict_Contains(o, TAG);
    if (has_tag < 0)
        return NULL;
    if (has_tag)
        return fallback(o, p);
    while (PyDict_Next(o, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            Py_XDECREF(copy);
            return fallback(o, p);
        }
        Py_INCREF(key);
        Py_INCREF(value);
        PyObject *item = prep(value, p);
        if (item == NULL)
            goto error;
        if (item != value) {
            if (copy == NULL && (copy = PyDict_Copy(o)) == NULL) {
                Py_DECREF(item);
                goto error;
            }
            if (PyDict_SetItem(copy, key, item) < 0) {
                Py_DECREF(item);
                goto error;
            }
        }
        Py_DECREF(item);
        Py_DECREF(key);
        Py_DECREF(value);
        continue;
    error:
        Py_DECREF(key);
        Py_DECREF(value);
        Py_XDECREF(copy);
        return NULL;
    }
    if (copy != NULL)
        return copy;
    Py_INCREF(o);
    return o;
}

static PyObject *
prep_list(PyObject *o, Prep *p)
{
    PyObject *copy = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(o); i++) {
        PyObject *value = PyList_GET_ITEM(o, i);
        Py_INCREF(value);
        PyObject *item = prep(value, p);
        if (item == NULL) {
            Py_DECREF(value);
            Py_XDECREF(copy);
            return NULL;
        }
        if (item != value) {
            if (copy == NULL && (copy = PyList_GetSlice(o, 0, PyList_GET_SIZE(o))) == NULL) {
                Py_DECREF(item);
                Py_DECREF(value);
                return NULL;
            }
            if (i >= PyList_GET_SIZE(copy)) {  /* the list shrank under us */
                Py_DECREF(item);
                Py_DECREF(value);
                Py_DECREF(copy);
                PyErr_SetString(PyExc_RuntimeError, "list changed size during serialization");
                return NULL;
            }
            PyList_SetItem(copy, i, item);  /* steals item */
        }
        else {
            Py_DECREF(item);
        }
        Py_DECREF(value);
    }
    if (copy != NULL)
        return copy;
    Py_INCREF(o);
    return o;
}

static PyObject *
prep_tuple(PyObject *o, Prep *p)
{
    Py_ssize_t n = PyTuple_GET_SIZE(o);
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = prep(PyTuple_GET_ITEM(o, i), p);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return tagged(S_TUPLE, list);
}

static PyObject *
prep(PyObject *o, Prep *p)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyUnicode_Type) {
        if (PyUnicode_GET_LENGTH(o) && PyUnicode_READ_CHAR(o, 0) == '~')
            return PyUnicode_Concat(MARK, o);  /* "~x" is written "~~x" */
        Py_INCREF(o);
        return o;
    }
    if (o == Py_None || t == &PyBool_Type) {
        Py_INCREF(o);
        return o;
    }
    if (t == &PyLong_Type) {
        if (plain_int(o)) {
            Py_INCREF(o);
            return o;
        }
        return fallback(o, p);
    }
    if (t == &PyFloat_Type) {
        if (isfinite(PyFloat_AS_DOUBLE(o))) {
            Py_INCREF(o);
            return o;
        }
        return fallback(o, p);
    }
    if (t == &PyDict_Type || t == &PyList_Type || t == &PyTuple_Type) {
        if (Py_EnterRecursiveCall(" while serializing a result"))
            return NULL;
        PyObject *r = t == &PyDict_Type ? prep_dict(o, p)
                      : t == &PyList_Type ? prep_list(o, p)
                                          : prep_tuple(o, p);
        Py_LeaveRecursiveCall();
        return r;
    }
    if (PyDateTime_CheckExact(o))
        return marked_moment(o, "~datetime:", P_DATETIME);
    if (PyDate_CheckExact(o))
        return marked_moment(o, "~date:", P_DATE);
    if (PyTime_CheckExact(o))
        return marked_moment(o, "~time:", P_TIME);
    if ((PyObject *)t == DecimalType) {
        PyObject *text = PyObject_Str(o);
        PyObject *marked = text ? PyUnicode_Concat(P_DECIMAL, text) : NULL;
        Py_XDECREF(text);
        return marked;
    }
    if ((PyObject *)t == UUIDType)
        return marked_uuid(o);
    return fallback(o, p);
}

static PyObject *
speedups_prepare(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "prepare(obj, binary, fallback)");
        return NULL;
    }
    Prep p = {args[2], PyObject_IsTrue(args[1]) ? Py_True : Py_False};
    return prep(args[0], &p);
}

typedef struct {
    PyObject *simple;
    PyObject *containers;
    PyObject *slow;
    PyObject *unmark;
} Untag;

static PyObject *unt(PyObject *o, Untag *u);

/* The scalar that a tag name (names[at:at + n]) and its text (text[start:])
 * stand for, when the name is one of `simple`: the forms this module writes
 * are read here, the rest by the Python callable.  NULL without an error when
 * the name is not one of them or the text is malformed: the caller's Python
 * fallback then raises the error that names it. */
static PyObject *
unt_scalar(PyObject *names, Py_ssize_t at, Py_ssize_t n, PyObject *text, Py_ssize_t start,
           Untag *u)
{
    PyObject *r = NULL, *decode = NULL;
    Py_ssize_t end = PyUnicode_GET_LENGTH(text);
    if (PyUnicode_KIND(names) == PyUnicode_1BYTE_KIND &&
        PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *name = PyUnicode_1BYTE_DATA(names) + at;
        r = scalar_from_chars(name, n, PyUnicode_1BYTE_DATA(text) + start, end - start);
        if (r != NULL || PyErr_Occurred())
            goto done;
        if (n == 7 && memcmp(name, "decimal", 7) == 0)
            decode = DecimalType;
    }
    if (decode == NULL) {
        PyObject *tag = at == 0 && n == PyUnicode_GET_LENGTH(names)
                            ? Py_NewRef(names)
                            : PyUnicode_Substring(names, at, at + n);
        if (tag == NULL)
            return NULL;
        decode = PyDict_GetItemWithError(u->simple, tag);
        Py_DECREF(tag);
        if (decode == NULL)
            return NULL;
    }
    PyObject *value = start ? PyUnicode_Substring(text, start, end) : Py_NewRef(text);
    if (value == NULL)
        return NULL;
    r = PyObject_CallOneArg(decode, value);
    Py_DECREF(value);
done:
    if (r == NULL && PyErr_ExceptionMatches(PyExc_Exception))
        PyErr_Clear();
    return r;
}

/* The value of a marked string ("~tag:text" or "~~..."). */
static PyObject *
unt_marked(PyObject *o, Untag *u)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(o);
    if (n >= 2 && PyUnicode_READ_CHAR(o, 1) == '~')
        return PyUnicode_Substring(o, 1, n);
    for (Py_ssize_t colon = 2; colon < n && colon < 16; colon++) {
        if (PyUnicode_READ_CHAR(o, colon) != ':')
            continue;
        PyObject *r = unt_scalar(o, 1, colon - 1, o, colon + 1, u);
        if (r != NULL || PyErr_Occurred())
            return r;
        break;
    }
    return PyObject_CallOneArg(u->unmark, o);  /* raises the error that names it */
}

/* The value of one tagged dict. */
static PyObject *
unt_tagged(PyObject *o, PyObject *tag, Untag *u)
{
    PyObject *v = PyDict_GetItemWithError(o, V);
    if (v == NULL && PyErr_Occurred())
        return NULL;
    if (v != NULL && PyUnicode_CheckExact(tag) && PyDict_GET_SIZE(o) == 2) {
        if (PyUnicode_CheckExact(v)) {
            PyObject *r = unt_scalar(tag, 0, PyUnicode_GET_LENGTH(tag), v, 0, u);
            if (r != NULL || PyErr_Occurred())
                return r;
        }
        else if (PyList_CheckExact(v)) {
            PyObject *code = PyDict_GetItemWithError(u->containers, tag);
            if (code == NULL && PyErr_Occurred())
                return NULL;
            if (code != NULL) {
                long kind = PyLong_AsLong(code);
                PyObject *items = unt(v, u);  /* v is a list: untagged in place */
                if (items == NULL)
                    return NULL;
                PyObject *r = kind == 1   ? PyList_AsTuple(items)
                              : kind == 2 ? PySet_New(items)
                                          : PyFrozenSet_New(items);
                Py_DECREF(items);
                if (r != NULL || !PyErr_ExceptionMatches(PyExc_TypeError))
                    return r;
                PyErr_Clear();  /* an unhashable item: slow() names the tag */
            }
        }
    }
    return PyObject_CallOneArg(u->slow, o);
}

/* Whether a decoded value may stand for another: a container, or a marked string. */
static inline int
may_change(PyObject *value)
{
    PyTypeObject *t = Py_TYPE(value);
    if (t == &PyUnicode_Type)
        return PyUnicode_GET_LENGTH(value) && PyUnicode_READ_CHAR(value, 0) == '~';
    return t == &PyDict_Type || t == &PyList_Type;
}

static PyObject *
unt_dict(PyObject *o, Untag *u)
{
    PyObject *tag = PyDict_GetItemWithError(o, TAG);
    if (tag != NULL)
        return unt_tagged(o, tag, u);
    if (PyErr_Occurred())
        return NULL;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(o, &pos, &key, &value)) {
        if (!may_change(value))
            continue;
        PyObject *item = unt(value, u);
        if (item == NULL)
            return NULL;
        if (item != value) {
            /* Replacing the value of an existing key keeps the iteration valid. */
            Py_INCREF(key);
            int rc = PyDict_SetItem(o, key, item);
            Py_DECREF(key);
            if (rc < 0) {
                Py_DECREF(item);
                return NULL;
            }
        }
        Py_DECREF(item);
    }
    Py_INCREF(o);
    return o;
}

static PyObject *
unt_list(PyObject *o, Untag *u)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(o); i++) {
        PyObject *value = PyList_GET_ITEM(o, i);
        if (!may_change(value))
            continue;
        PyObject *item = unt(value, u);
        if (item == NULL)
            return NULL;
        if (item != value) {
            if (i >= PyList_GET_SIZE(o)) {
                Py_DECREF(item);
                PyErr_SetString(PyExc_RuntimeError, "list changed size while decoding");
                return NULL;
            }
            PyList_SetItem(o, i, item);  /* steals item, releases the old one */
        }
        else {
            Py_DECREF(item);
        }
    }
    Py_INCREF(o);
    return o;
}

static PyObject *
unt(PyObject *o, Untag *u)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyUnicode_Type && PyUnicode_GET_LENGTH(o) && PyUnicode_READ_CHAR(o, 0) == '~')
        return unt_marked(o, u);
    if (t != &PyDict_Type && t != &PyList_Type) {
        Py_INCREF(o);
        return o;
    }
    if (Py_EnterRecursiveCall(" while decoding a result"))
        return NULL;
    PyObject *r = t == &PyDict_Type ? unt_dict(o, u) : unt_list(o, u);
    Py_LeaveRecursiveCall();
    return r;
}

static PyObject *
speedups_untag(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_CheckExact(args[1]) || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "untag(obj, simple: dict, containers: dict, slow, unmark)");
        return NULL;
    }
    Untag u = {args[1], args[2], args[3], args[4]};
    return unt(args[0], &u);
}

/* ------------------------------------------------------------------------
 * pack_row: one row of a PostgreSQL binary COPY, made from a record's meta.
 *
 * pack_row(out, spec, record_id, meta, encode, row_id) appends to the
 * bytearray out the binary COPY tuple of the columns spec describes (a tuple
 * of (code, key, limit) tuples, see resultkit.stores._pgcopy) and returns
 * True.  When a value is not in the form this function writes (a date with
 * another offset, text longer than its column, a value of an unexpected
 * type, encode raising), out is left as it was and False is returned: the
 * caller makes that row in Python, which also raises the documented errors.
 */

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

static int
buf_reserve(Buf *b, Py_ssize_t more)
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

static void
put_be(char *c, unsigned long long value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        c[i] = (char)(value & 0xff);
        value >>= 8;
    }
}

/* A field: its 4-byte length, then n bytes of data (NULL data: SQL NULL). */
static int
buf_field(Buf *b, const char *data, Py_ssize_t n)
{
    if (data == NULL) {
        if (buf_reserve(b, 4) < 0)
            return -1;
        memset(b->data + b->used, 0xff, 4);
        b->used += 4;
        return 0;
    }
    if (n > 0x7fffffff) {
        PyErr_SetString(PyExc_OverflowError, "a value of more than 2 GB");
        return -1;
    }
    if (buf_reserve(b, 4 + n) < 0)
        return -1;
    put_be(b->data + b->used, (unsigned long long)n, 4);
    memcpy(b->data + b->used + 4, data, (size_t)n);
    b->used += 4 + n;
    return 0;
}

/* A NULL field: 1, or -1 with an error (the result of a column made). */
static int
buf_null(Buf *b)
{
    return buf_field(b, NULL, 0) < 0 ? -1 : 1;
}

/* The code and limit of a spec column (code, key, limit): 0, or -1 with an error. */
static int
column_of(PyObject *column, const char *caller, long *code, Py_ssize_t *limit)
{
    if (!PyTuple_CheckExact(column) || PyTuple_GET_SIZE(column) != 3) {
        PyErr_Format(PyExc_TypeError, "%s: each column is (code, key, limit)", caller);
        return -1;
    }
    *code = PyLong_AsLong(PyTuple_GET_ITEM(column, 0));
    *limit = PyLong_AsSsize_t(PyTuple_GET_ITEM(column, 2));
    return (*code == -1 || *limit == -1) && PyErr_Occurred() ? -1 : 0;
}

static int
buf_int(Buf *b, long long value, int width)
{
    char c[8];
    put_be(c, (unsigned long long)value, width);
    return buf_field(b, c, width);
}

static int
is_leap(int year)
{
    return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
}

/* Days from 2000-01-01 to year-month-day (proleptic Gregorian). */
static long long
days_since_2000(int year, int month, int day)
{
    /* Howard Hinnant's days_from_civil, shifted to PostgreSQL's epoch. */
    long long y = year - (month <= 2);
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468 - 10957;
}

/* Microseconds since 2000-01-01 of a moment, 0 when a field is out of range. */
static int
moment_micros(int year, int month, int day, const int *clock, long long *out)
{
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1 || year > 9999 || month < 1 || month > 12 || day < 1 ||
        day > month_days[month - 1] + (month == 2 && is_leap(year)) || clock[0] > 23 ||
        clock[1] > 59 || clock[2] > 59)
        return 0;
    long long seconds = days_since_2000(year, month, day) * 86400LL + clock[0] * 3600LL +
                        clock[1] * 60LL + clock[2];
    *out = seconds * 1000000LL + clock[3];
    return 1;
}

/* The naive UTC timestamp of a date_done: ISO text as Celery writes it (no
 * offset, +00:00 or Z), or a naive or UTC datetime.  0 for anything else. */
static int
timestamp_of_text(const Py_UCS1 *c, Py_ssize_t n, long long *out)
{
    int year, month, day, clock[4];
    if (n >= 6 && memcmp(c + n - 6, "+00:00", 6) == 0)
        n -= 6;
    else if (n >= 1 && c[n - 1] == 'Z')
        n -= 1;
    if (n < 19 || c[10] != 'T' || !parse_day(c, &year, &month, &day) ||
        !parse_clock(c + 11, n - 11, clock))
        return 0;
    return moment_micros(year, month, day, clock, out);
}

static int
timestamp_of(PyObject *value, long long *out)
{
    int clock[4];
    if (PyUnicode_CheckExact(value) && PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND)
        return timestamp_of_text(PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value), out);
    if (PyDateTime_CheckExact(value)) {
        PyObject *tz = PyDateTime_DATE_GET_TZINFO(value);
        if (tz != Py_None && tz != PyDateTime_TimeZone_UTC)
            return 0;
        clock[0] = PyDateTime_DATE_GET_HOUR(value);
        clock[1] = PyDateTime_DATE_GET_MINUTE(value);
        clock[2] = PyDateTime_DATE_GET_SECOND(value);
        clock[3] = PyDateTime_DATE_GET_MICROSECOND(value);
        return moment_micros(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                             PyDateTime_GET_DAY(value), clock, out);
    }
    return 0;
}

/* Text as UTF-8 when no longer than limit characters (0: no limit); 0 otherwise. */
static int
buf_text(Buf *b, PyObject *value, Py_ssize_t limit)
{
    if (!PyUnicode_CheckExact(value) || (limit > 0 && PyUnicode_GET_LENGTH(value) > limit))
        return 0;
    Py_ssize_t n;
    const char *data = PyUnicode_AsUTF8AndSize(value, &n);
    if (data == NULL) {
        PyErr_Clear();  /* lone surrogates: Python says what is wrong */
        return 0;
    }
    return buf_field(b, data, n) < 0 ? -1 : 1;
}

/* 1 when o holds a NaN or an infinite float in its dicts, lists and tuples
 * (orjson writes those as null); 0 when not; -1 with an error. */
static int
nonfinite(PyObject *o)
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
            rc = nonfinite(value);
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
        rc = nonfinite(items[i]);
    Py_LeaveRecursiveCall();
    return rc;
}

static PyObject *
speedups_nonfinite(PyObject *module, PyObject *o)
{
    int rc = nonfinite(o);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

/* long_digits(data): True when data has 20 digits in a row somewhere (an
 * integer beyond 64 bits, which orjson would read as a float). */
static PyObject *
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
        int lost = has_null(text, n) ? nonfinite(value) : 0;
        if (lost < 0)
            rc = -1;
        else if (!lost)
            rc = buf_field(b, text, n) < 0 ? -1 : 1;
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
    if (column_of(column, "pack_row", &code, &limit) < 0)
        return -1;
    if (code == COL_ROW_ID)
        return buf_int(b, PyLong_AsLongLong(row_id), (int)limit) < 0 ? -1 : 1;
    if (code == COL_ID)
        return buf_text(b, record_id, limit);
    PyObject *value = PyDict_GetItemWithError(meta, PyTuple_GET_ITEM(column, 1));
    if (value == NULL && PyErr_Occurred())
        return -1;
    if (value == NULL)
        value = Py_None;
    int truth;
    long long number;
    switch (code) {
    case COL_TEXT:
        return value == Py_None ? buf_null(b) : buf_text(b, value, limit);
    case COL_ENCODED:
        return buf_encoded(b, encode, value);
    case COL_ENCODED_OPT:
        return value == Py_None ? buf_null(b)
                                : buf_encoded(b, encode, value);
    case COL_ENCODED_IF:
    case COL_NULL_UNLESS:
        truth = PyObject_IsTrue(value);
        if (truth < 0)
            return -1;
        if (!truth)
            return buf_null(b);
        return code == COL_ENCODED_IF ? buf_encoded(b, encode, value) : 0;
    case COL_TIMESTAMP:
        if (value == Py_None)
            return buf_null(b);
        return timestamp_of(value, &number) ? (buf_int(b, number, 8) < 0 ? -1 : 1) : 0;
    case COL_INT:
        if (value == Py_None)
            return buf_null(b);
        if (!PyLong_CheckExact(value))
            return 0;
        number = PyLong_AsLongLong(value);
        if (number == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (limit < 8 && (number < -(1LL << (limit * 8 - 1)) || number >= (1LL << (limit * 8 - 1))))
            return 0;
        return buf_int(b, number, (int)limit) < 0 ? -1 : 1;
    default:
        PyErr_Format(PyExc_ValueError, "pack_row: unknown column code %ld", code);
        return -1;
    }
}

/* What making a row into b came to (rc 1 made, 0 declined, -1 error): the row
 * appended to out and True, False with out as it was, or NULL.  Frees b. */
static PyObject *
row_made(PyObject *out, Buf *b, int rc)
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

static PyObject *
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
    put_be(b.data, (unsigned long long)columns, 2);
    int rc = 1;
    for (Py_ssize_t i = 0; i < columns && rc == 1; i++)
        rc = pack_column(&b, PyTuple_GET_ITEM(spec, i), args[2], args[3], args[4], args[5]);
    return row_made(args[0], &b, rc);
}

/* ------------------------------------------------------------------------
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
        return buf_field(b, (const char *)c, end - c) < 0 ? -1 : 1;
    if (buf_reserve(b, 4 + (end - c)) < 0) /* unescaped text is never longer */
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
    put_be(length_at, (unsigned long long)(w - length_at - 4), 4);
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
    return buf_int(b, value, width) < 0 ? -1 : 1;
}

static int
span_field(Buf *b, const Span *v)
{
    return buf_field(b, (const char *)v->start, v->end - v->start) < 0 ? -1 : 1;
}

/* One column from its value's span: 1 written, 0 declined, -1 error. */
static int
pack_span(Buf *b, long code, const Span *v, Py_ssize_t limit)
{
    int is_null = !v->start || span_is(v, "null");
    long long micros;
    switch (code) {
    case COL_TEXT:
        return is_null ? buf_null(b) : span_text(b, v, limit);
    case COL_ENCODED:
        return v->start ? span_field(b, v) : (buf_field(b, "null", 4) < 0 ? -1 : 1);
    case COL_ENCODED_OPT:
        return is_null ? buf_null(b) : span_field(b, v);
    case COL_ENCODED_IF:
        if (span_is_empty(v))
            return buf_null(b);
        return *v->start == '-' || (*v->start >= '0' && *v->start <= '9') ? 0 : span_field(b, v);
    case COL_NULL_UNLESS:
        return span_is_empty(v) ? buf_null(b) : 0;
    case COL_TIMESTAMP:
        if (is_null)
            return buf_null(b);
        /* Dates have no escapes: the text between the quotes. */
        if (*v->start != '"' || memchr(v->start, '\\', v->end - v->start) ||
            !timestamp_of_text(v->start + 1, v->end - v->start - 2, &micros))
            return 0;
        return buf_int(b, micros, 8) < 0 ? -1 : 1;
    case COL_INT:
        return is_null ? buf_null(b) : span_int(b, v, (int)limit);
    default:
        return 0;
    }
}

static PyObject *
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
        if (column_of(column, "pack_json_row", &codes[i], &limits[i]) < 0)
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
    put_be(b.data, (unsigned long long)columns, 2);
    int rc = 1;
    for (Py_ssize_t i = 0; i < columns && rc == 1; i++) {
        if (codes[i] == COL_ROW_ID)
            rc = buf_int(&b, PyLong_AsLongLong(args[4]), (int)limits[i]) < 0 ? -1 : 1;
        else if (codes[i] == COL_ID)
            rc = buf_text(&b, args[2], limits[i]);
        else
            rc = pack_span(&b, codes[i], &values[i], limits[i]);
        if (rc < 0 && !PyErr_Occurred())
            rc = 0;
    }
    return row_made(args[0], &b, rc);
}

static PyMethodDef methods[] = {
    {"prepare", (PyCFunction)(void (*)(void))speedups_prepare, METH_FASTCALL,
     "prepare(obj, binary, fallback): obj as plain data with tagged values."},
    {"untag", (PyCFunction)(void (*)(void))speedups_untag, METH_FASTCALL,
     "untag(obj, simple, containers, slow, unmark): decoded data with tagged values rebuilt."},
    {"pack_row", (PyCFunction)(void (*)(void))speedups_pack_row, METH_FASTCALL,
     "pack_row(out, spec, record_id, meta, encode, row_id): one binary COPY row, or False."},
    {"nonfinite", speedups_nonfinite, METH_O,
     "nonfinite(tree): True when a float in tree is NaN or infinite."},
    {"long_digits", speedups_long_digits, METH_O,
     "long_digits(data): True when data has 20 digits in a row."},
    {"pack_json_row", (PyCFunction)(void (*)(void))speedups_pack_json_row, METH_FASTCALL,
     "pack_json_row(out, spec, record_id, raw, row_id): that row from the meta's JSON, or False."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "resultkit._speedups",
    "C walks for resultkit.serializers (see resultkit/_speedups.c).", -1, methods,
};

static PyObject *
attr_of(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    if (!(TAG = PyUnicode_InternFromString("__rk__")) || !(V = PyUnicode_InternFromString("v")) ||
        !(ISOFORMAT = PyUnicode_InternFromString("isoformat")) ||
        !(S_TUPLE = PyUnicode_InternFromString("tuple")) ||
        !(MARK = PyUnicode_InternFromString("~")) ||
        !(P_DATETIME = PyUnicode_InternFromString("~datetime:")) ||
        !(P_DATE = PyUnicode_InternFromString("~date:")) ||
        !(P_TIME = PyUnicode_InternFromString("~time:")) ||
        !(P_DECIMAL = PyUnicode_InternFromString("~decimal:")) ||
        !(P_UUID = PyUnicode_InternFromString("~uuid:")))
        return NULL;
    if (!(DecimalType = attr_of("decimal", "Decimal")) || !(UUIDType = attr_of("uuid", "UUID")))
        return NULL;
    PyObject *safe = attr_of("uuid", "SafeUUID");
    if (safe == NULL)
        return NULL;
    SAFE_UNKNOWN = PyObject_GetAttrString(safe, "unknown");
    Py_DECREF(safe);
    if (!SAFE_UNKNOWN || !(S_INT = PyUnicode_InternFromString("int")) ||
        !(S_IS_SAFE = PyUnicode_InternFromString("is_safe")) || !(EMPTY_TUPLE = PyTuple_New(0)))
        return NULL;
    return PyModule_Create(&module_def);
}
