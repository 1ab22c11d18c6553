/*
 * ISO 8601 dates, times and datetimes: written and read in the forms resultkit
 * itself writes, without a trip through Python.
 *
 * Python twins: the marked strings of resultkit.serializers (``~date:``,
 * ``~time:``, ``~datetime:``: isoformat() and fromisoformat()), and
 * resultkit.records.naive_utc for the date_done of a COPY row.  A form not
 * written here is left to those (the functions return NULL or 0 without an
 * error).
 */
#include "speedups.h"

int
rk_isodates_init(void)
{
    PyDateTime_IMPORT;
    return PyDateTimeAPI == NULL ? -1 : 0;
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
PyObject *
rk_marked_moment(PyObject *o, const char *prefix, PyObject *prefix_text)
{
    PyObject *text = iso_text(o, prefix);
    if (text != NULL || PyErr_Occurred())
        return text;
    PyObject *iso = PyObject_CallMethodNoArgs(o, RK_ISOFORMAT);
    PyObject *marked = iso ? PyUnicode_Concat(prefix_text, iso) : NULL;
    Py_XDECREF(iso);
    return marked;
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


/* The date, time or datetime (kind) that the n characters at c, as iso_text
 * writes them, stand for.  NULL without an error for any other form
 * (fromisoformat() reads those), NULL with an error for fields out of range. */
PyObject *
rk_moment_from_chars(int kind, const Py_UCS1 *c, Py_ssize_t n)
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
int
rk_timestamp_of_text(const Py_UCS1 *c, Py_ssize_t n, long long *out)
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

int
rk_timestamp_of(PyObject *value, long long *out)
{
    int clock[4];
    if (PyUnicode_CheckExact(value) && PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND)
        return rk_timestamp_of_text(PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value), out);
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
