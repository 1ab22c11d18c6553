/*
 * resultkit._speedups: the two walks of resultkit's serializers, in C.
 *
 * prepare(obj, binary, fallback) returns obj as plain JSON/msgpack data with
 * tagged objects ({"__rk__": tag, "v": ...}).  Dicts and lists that need no
 * change are returned as they are (no copy); a container is copied only when
 * one of its items changes.  Tuples, datetimes, dates, times, Decimals and
 * UUIDs are tagged here; every other non-JSON value goes to
 * fallback(value, binary), the Python function that also raises for values
 * that cannot be serialized.
 *
 * untag(obj, simple, containers, slow) replaces, in place, every tagged
 * object in freshly decoded data by the value it stands for: tags found in
 * `simple` (tag -> callable taking the text "v") and `containers` (tag -> 1
 * tuple, 2 set, 3 frozenset) are handled here when well formed; anything
 * else goes to slow(tagged_dict), which also raises the documented errors.
 *
 * Both functions are exact equivalents of resultkit.serializers._tag and
 * _untag, which are used when this module is not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <math.h>

static PyObject *TAG, *V, *ISOFORMAT;
static PyObject *S_TUPLE, *S_DATETIME, *S_DATE, *S_TIME, *S_DECIMAL, *S_UUID;
static PyObject *DecimalType, *UUIDType, *S_INT, *S_IS_SAFE, *SAFE_UNKNOWN, *EMPTY_TUPLE, *SIXTY_FOUR;

/* str(uuid) without Python's UUID.__str__: the 36-character canonical form. */
static PyObject *
uuid_text(PyObject *o)
{
    PyObject *value = PyObject_GetAttr(o, S_INT);
    if (value == NULL)
        return NULL;
    if (!PyLong_CheckExact(value)) {
        Py_DECREF(value);
        return PyObject_Str(o);
    }
    unsigned long long lo = PyLong_AsUnsignedLongLongMask(value);
    PyObject *high = PyNumber_Rshift(value, SIXTY_FOUR);
    Py_DECREF(value);
    if (high == NULL)
        return NULL;
    unsigned long long hi = PyLong_AsUnsignedLongLongMask(high);
    Py_DECREF(high);
    if (PyErr_Occurred())
        return NULL;
    char text[40];
    snprintf(text, sizeof text, "%08llx-%04llx-%04llx-%04llx-%012llx", hi >> 32,
             (hi >> 16) & 0xffff, hi & 0xffff, lo >> 48, lo & 0xffffffffffffULL);
    return PyUnicode_FromStringAndSize(text, 36);
}

/* isoformat() of a date, time or datetime, formatted here when it has no tzinfo
 * or UTC (what results nearly always hold); NULL without an error otherwise. */
static PyObject *
iso_text(PyObject *o)
{
    char text[48];
    int n = 0;
    PyObject *tz = NULL;
    if (PyDateTime_Check(o)) {
        tz = PyDateTime_DATE_GET_TZINFO(o);
        n = snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d", PyDateTime_GET_YEAR(o),
                     PyDateTime_GET_MONTH(o), PyDateTime_GET_DAY(o), PyDateTime_DATE_GET_HOUR(o),
                     PyDateTime_DATE_GET_MINUTE(o), PyDateTime_DATE_GET_SECOND(o));
        int micro = PyDateTime_DATE_GET_MICROSECOND(o);
        if (micro)
            n += snprintf(text + n, sizeof text - n, ".%06d", micro);
    }
    else if (PyDate_Check(o)) {
        n = snprintf(text, sizeof text, "%04d-%02d-%02d", PyDateTime_GET_YEAR(o),
                     PyDateTime_GET_MONTH(o), PyDateTime_GET_DAY(o));
        return PyUnicode_FromStringAndSize(text, n);
    }
    else {
        tz = PyDateTime_TIME_GET_TZINFO(o);
        n = snprintf(text, sizeof text, "%02d:%02d:%02d", PyDateTime_TIME_GET_HOUR(o),
                     PyDateTime_TIME_GET_MINUTE(o), PyDateTime_TIME_GET_SECOND(o));
        int micro = PyDateTime_TIME_GET_MICROSECOND(o);
        if (micro)
            n += snprintf(text + n, sizeof text - n, ".%06d", micro);
    }
    if (tz == PyDateTime_TimeZone_UTC)
        n += snprintf(text + n, sizeof text - n, "+00:00");
    else if (tz != Py_None)
        return NULL;  /* another zone: its own isoformat() */
    return PyUnicode_FromStringAndSize(text, n);
}

static PyObject *
iso_of(PyObject *o)
{
    PyObject *text = iso_text(o);
    if (text != NULL || PyErr_Occurred())
        return text;
    return PyObject_CallMethodNoArgs(o, ISOFORMAT);
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

/* uuid.UUID(text) for the canonical 36-character form; NULL without an error otherwise. */
static PyObject *
uuid_from_text(PyObject *text)
{
    if (PyUnicode_GET_LENGTH(text) != 36 || PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND)
        return NULL;
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(text);
    unsigned long long half[2] = {0, 0};
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
        half[digits / 16] = (half[digits / 16] << 4) | (unsigned long long)h;
        digits++;
    }
    PyObject *hi = PyLong_FromUnsignedLongLong(half[0]);
    PyObject *lo = PyLong_FromUnsignedLongLong(half[1]);
    PyObject *shifted = hi ? PyNumber_Lshift(hi, SIXTY_FOUR) : NULL;
    PyObject *value = shifted && lo ? PyNumber_Or(shifted, lo) : NULL;
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(shifted);
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
    if (t == &PyUnicode_Type || o == Py_None || t == &PyBool_Type) {
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
        return tagged(S_DATETIME, iso_of(o));
    if (PyDate_CheckExact(o))
        return tagged(S_DATE, iso_of(o));
    if (PyTime_CheckExact(o))
        return tagged(S_TIME, iso_of(o));
    if ((PyObject *)t == DecimalType)
        return tagged(S_DECIMAL, PyObject_Str(o));
    if ((PyObject *)t == UUIDType)
        return tagged(S_UUID, uuid_text(o));
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
} Untag;

static PyObject *unt(PyObject *o, Untag *u);

/* The value of one tagged dict. */
static PyObject *
unt_tagged(PyObject *o, PyObject *tag, Untag *u)
{
    PyObject *v = PyDict_GetItemWithError(o, V);
    if (v == NULL && PyErr_Occurred())
        return NULL;
    if (v != NULL && PyUnicode_CheckExact(tag) && PyDict_GET_SIZE(o) == 2) {
        if (PyUnicode_CheckExact(v)) {
            if (PyUnicode_GET_LENGTH(tag) == 4 && PyUnicode_Compare(tag, S_UUID) == 0) {
                PyObject *u = uuid_from_text(v);
                if (u != NULL || PyErr_Occurred())
                    return u;
            }
            PyObject *decode = PyDict_GetItemWithError(u->simple, tag);
            if (decode != NULL) {
                PyObject *r = PyObject_CallOneArg(decode, v);
                if (r != NULL || !PyErr_ExceptionMatches(PyExc_Exception))
                    return r;
                PyErr_Clear();  /* slow() raises the error that names the tag */
                return PyObject_CallOneArg(u->slow, o);
            }
            if (PyErr_Occurred())
                return NULL;
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
        PyTypeObject *t = Py_TYPE(value);
        if (t != &PyDict_Type && t != &PyList_Type)
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
        PyTypeObject *t = Py_TYPE(value);
        if (t != &PyDict_Type && t != &PyList_Type)
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
    if (nargs != 4 || !PyDict_CheckExact(args[1]) || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "untag(obj, simple: dict, containers: dict, slow)");
        return NULL;
    }
    Untag u = {args[1], args[2], args[3]};
    return unt(args[0], &u);
}

static PyMethodDef methods[] = {
    {"prepare", (PyCFunction)(void (*)(void))speedups_prepare, METH_FASTCALL,
     "prepare(obj, binary, fallback): obj as plain data with tagged objects."},
    {"untag", (PyCFunction)(void (*)(void))speedups_untag, METH_FASTCALL,
     "untag(obj, simple, containers, slow): decoded data with tagged objects rebuilt."},
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
        !(S_DATETIME = PyUnicode_InternFromString("datetime")) ||
        !(S_DATE = PyUnicode_InternFromString("date")) ||
        !(S_TIME = PyUnicode_InternFromString("time")) ||
        !(S_DECIMAL = PyUnicode_InternFromString("decimal")) ||
        !(S_UUID = PyUnicode_InternFromString("uuid")))
        return NULL;
    if (!(DecimalType = attr_of("decimal", "Decimal")) || !(UUIDType = attr_of("uuid", "UUID")))
        return NULL;
    PyObject *safe = attr_of("uuid", "SafeUUID");
    if (safe == NULL)
        return NULL;
    SAFE_UNKNOWN = PyObject_GetAttrString(safe, "unknown");
    Py_DECREF(safe);
    if (!SAFE_UNKNOWN || !(S_INT = PyUnicode_InternFromString("int")) ||
        !(S_IS_SAFE = PyUnicode_InternFromString("is_safe")) || !(EMPTY_TUPLE = PyTuple_New(0)) ||
        !(SIXTY_FOUR = PyLong_FromLong(64)))
        return NULL;
    return PyModule_Create(&module_def);
}
