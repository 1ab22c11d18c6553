/*
 * resultkit._speedups: optional C code for the hot paths of resultkit.
 *
 * One module built from the files of this folder, each mirroring a Python twin
 * that is used when the module is not built (RESULTKIT_PURE_PYTHON=1 forces
 * the twins):
 *
 *   tags.c      the serializers' tag walks        resultkit.serializers._tag / _untag
 *   isodates.c  ISO dates in those walks and rows resultkit.serializers, records.naive_utc
 *   copyrow.c   PostgreSQL binary COPY rows       resultkit.stores._pgcopy.pack_values
 *   jsonrow.c   JSON checks, rows from stored JSON resultkit.codec, decode then pack
 *
 * COLUMN_CODES names the column codes of a COPY row spec; the Python side's
 * are checked against it by a test.
 */
#include "speedups.h"

PyObject *RK_TAG, *RK_V, *RK_ISOFORMAT, *RK_S_TUPLE, *RK_MARK;
PyObject *RK_P_DATETIME, *RK_P_DATE, *RK_P_TIME, *RK_P_DECIMAL, *RK_P_UUID;
PyObject *RK_DecimalType, *RK_UUIDType, *RK_S_INT, *RK_S_IS_SAFE, *RK_SAFE_UNKNOWN, *RK_EMPTY_TUPLE;

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
    if (rk_isodates_init() < 0 || rk_tags_init() < 0)
        return NULL;
    if (!(RK_TAG = PyUnicode_InternFromString("__rk__")) || !(RK_V = PyUnicode_InternFromString("v")) ||
        !(RK_ISOFORMAT = PyUnicode_InternFromString("isoformat")) ||
        !(RK_S_TUPLE = PyUnicode_InternFromString("tuple")) ||
        !(RK_MARK = PyUnicode_InternFromString("~")) ||
        !(RK_P_DATETIME = PyUnicode_InternFromString("~datetime:")) ||
        !(RK_P_DATE = PyUnicode_InternFromString("~date:")) ||
        !(RK_P_TIME = PyUnicode_InternFromString("~time:")) ||
        !(RK_P_DECIMAL = PyUnicode_InternFromString("~decimal:")) ||
        !(RK_P_UUID = PyUnicode_InternFromString("~uuid:")))
        return NULL;
    if (!(RK_DecimalType = attr_of("decimal", "Decimal")) || !(RK_UUIDType = attr_of("uuid", "UUID")))
        return NULL;
    PyObject *safe = attr_of("uuid", "SafeUUID");
    if (safe == NULL)
        return NULL;
    RK_SAFE_UNKNOWN = PyObject_GetAttrString(safe, "unknown");
    Py_DECREF(safe);
    if (!RK_SAFE_UNKNOWN || !(RK_S_INT = PyUnicode_InternFromString("int")) ||
        !(RK_S_IS_SAFE = PyUnicode_InternFromString("is_safe")) || !(RK_EMPTY_TUPLE = PyTuple_New(0)))
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    PyObject *codes = Py_BuildValue(
        "{sisisisisisisisisi}", "ROW_ID", COL_ROW_ID, "ID", COL_ID, "TEXT", COL_TEXT, "ENCODED",
        COL_ENCODED, "ENCODED_OPT", COL_ENCODED_OPT, "ENCODED_IF", COL_ENCODED_IF, "TIMESTAMP",
        COL_TIMESTAMP, "INT", COL_INT, "NULL_UNLESS", COL_NULL_UNLESS);
    if (codes == NULL || PyModule_AddObject(module, "COLUMN_CODES", codes) < 0) {
        Py_XDECREF(codes);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "MAX_DEPTH", RK_MAX_DEPTH) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
