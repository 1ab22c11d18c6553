/*
 * The two walks of resultkit's serializers.
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
 * Python twins: resultkit.serializers._tag and _untag, used when this module
 * is not built; a property test checks that both write the same bytes.
 */
#include "speedups.h"

int
rk_tags_init(void)
{
    PyDateTime_IMPORT;
    return PyDateTimeAPI == NULL ? -1 : 0;
}

/* "~uuid:" and the canonical 36-character form of a UUID (str(uuid)). */
static PyObject *
marked_uuid(PyObject *o)
{
    PyObject *value = PyObject_GetAttr(o, RK_S_INT);
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
        PyObject *marked = text ? PyUnicode_Concat(RK_P_UUID, text) : NULL;
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
    PyObject *u = ((PyTypeObject *)RK_UUIDType)->tp_new((PyTypeObject *)RK_UUIDType, RK_EMPTY_TUPLE, NULL);
    if (u == NULL || PyObject_GenericSetAttr(u, RK_S_INT, value) < 0 ||
        PyObject_GenericSetAttr(u, RK_S_IS_SAFE, RK_SAFE_UNKNOWN) < 0) {
        Py_XDECREF(u);
        Py_DECREF(value);
        return NULL;
    }
    Py_DECREF(value);
    return u;
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
    return kind ? rk_moment_from_chars(kind, c, n) : NULL;
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
    if (d == NULL || PyDict_SetItem(d, RK_TAG, name) < 0 || PyDict_SetItem(d, RK_V, value) < 0) {
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

/*
 * Levels the written form will nest on this thread, as the untag walk counts
 * them when it is read: each dict and list is one, a tuple two (its tagged
 * mapping and list), and a value handed to fallback four at most (the tagged
 * mapping, the decoder's call back into the walk, its "v" and a pair list).
 * The reading call itself is one more, so the written form may hold
 * RK_MAX_DEPTH - 1: prepare refuses what untag would refuse (docs/security.md).
 * It is one counter for the nested prepare calls that fallback makes.
 */
static _Thread_local int prep_depth;
#define RK_FALLBACK_LEVELS 4

/* Enter *levels* more: 0, or -1 with a RecursionError when the form gets too deep. */
static int
enter_prep(int levels)
{
    if (prep_depth + levels > RK_MAX_DEPTH - 1) {
        PyErr_Format(PyExc_RecursionError,
                     "the result nests more than %d levels deep", RK_MAX_DEPTH);
        return -1;
    }
    prep_depth += levels;
    return 0;
}

/* A value that is not plain data: fallback tags it, its contents prepared again. */
static PyObject *
fallback(PyObject *o, Prep *p)
{
    if (enter_prep(RK_FALLBACK_LEVELS) < 0)
        return NULL;
    PyObject *r = PyObject_CallFunctionObjArgs(p->fallback, o, p->binary, NULL);
    prep_depth -= RK_FALLBACK_LEVELS;
    return r;
}

/* A scalar that is written as a marked string by fallback: no level. */
static PyObject *
fallback_scalar(PyObject *o, Prep *p)
{
    return PyObject_CallFunctionObjArgs(p->fallback, o, p->binary, NULL);
}

static PyObject *
prep_dict(PyObject *o, Prep *p)
{
    PyObject *key, *value, *copy = NULL;
    Py_ssize_t pos = 0;
    int has_tag = PyDict_Contains(o, RK_TAG);
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
    return tagged(RK_S_TUPLE, list);
}

static PyObject *
prep(PyObject *o, Prep *p)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyUnicode_Type) {
        if (PyUnicode_GET_LENGTH(o) && PyUnicode_READ_CHAR(o, 0) == '~')
            return PyUnicode_Concat(RK_MARK, o);  /* "~x" is written "~~x" */
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
        return fallback_scalar(o, p);
    }
    if (t == &PyFloat_Type) {
        if (isfinite(PyFloat_AS_DOUBLE(o))) {
            Py_INCREF(o);
            return o;
        }
        return fallback_scalar(o, p);
    }
    if (t == &PyDict_Type || t == &PyList_Type || t == &PyTuple_Type) {
        int levels = t == &PyTuple_Type ? 2 : 1;
        if (enter_prep(levels) < 0)
            return NULL;
        if (Py_EnterRecursiveCall(" while serializing a result")) {
            prep_depth -= levels;
            return NULL;
        }
        PyObject *r = t == &PyDict_Type ? prep_dict(o, p)
                      : t == &PyList_Type ? prep_list(o, p)
                                          : prep_tuple(o, p);
        Py_LeaveRecursiveCall();
        prep_depth -= levels;
        return r;
    }
    if (PyDateTime_CheckExact(o))
        return rk_marked_moment(o, "~datetime:", RK_P_DATETIME);
    if (PyDate_CheckExact(o))
        return rk_marked_moment(o, "~date:", RK_P_DATE);
    if (PyTime_CheckExact(o))
        return rk_marked_moment(o, "~time:", RK_P_TIME);
    if ((PyObject *)t == RK_DecimalType) {
        PyObject *text = PyObject_Str(o);
        PyObject *marked = text ? PyUnicode_Concat(RK_P_DECIMAL, text) : NULL;
        Py_XDECREF(text);
        return marked;
    }
    if ((PyObject *)t == RK_UUIDType)
        return marked_uuid(o);
    return fallback(o, p);
}

PyObject *
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

/* Levels entered by untag on this thread (see RK_MAX_DEPTH). */
static _Thread_local int untag_depth;

/* Enter one more level: 0, or -1 with a RecursionError past RK_MAX_DEPTH. */
static int
enter_level(void)
{
    if (++untag_depth > RK_MAX_DEPTH) {
        --untag_depth;
        PyErr_Format(PyExc_RecursionError,
                     "the payload is nested more than %d levels deep", RK_MAX_DEPTH);
        return -1;
    }
    return 0;
}

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
            decode = RK_DecimalType;
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
    PyObject *v = PyDict_GetItemWithError(o, RK_V);
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
    PyObject *tag = PyDict_GetItemWithError(o, RK_TAG);
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
    if (enter_level() < 0)
        return NULL;
    if (Py_EnterRecursiveCall(" while decoding a result")) {
        --untag_depth;
        return NULL;
    }
    PyObject *r = t == &PyDict_Type ? unt_dict(o, u) : unt_list(o, u);
    Py_LeaveRecursiveCall();
    --untag_depth;
    return r;
}

PyObject *
speedups_untag(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_CheckExact(args[1]) || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "untag(obj, simple: dict, containers: dict, slow, unmark)");
        return NULL;
    }
    Untag u = {args[1], args[2], args[3], args[4]};
    if (enter_level() < 0)  /* the call is a level: the decoders' calls back nest */
        return NULL;
    PyObject *r = unt(args[0], &u);
    --untag_depth;
    return r;
}
