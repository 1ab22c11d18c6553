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

static PyMethodDef methods[] = {
    {"prepare", (PyCFunction)(void (*)(void))speedups_prepare, METH_FASTCALL,
     "prepare(obj, binary, fallback): obj as plain data with tagged values."},
    {"untag", (PyCFunction)(void (*)(void))speedups_untag, METH_FASTCALL,
     "untag(obj, simple, containers, slow, unmark): decoded data with tagged values rebuilt."},
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
