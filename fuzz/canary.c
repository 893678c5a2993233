/*
 * _fuzz_canary: two deliberate bugs, built and run exactly like the real targets, so a test can
 * prove that a read past a bytes object and undefined behaviour are caught and reported (a
 * fuzzing setup whose sanitizers are silently off would otherwise pass forever).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Reads a byte past the end of b's allocation (b[len] is its terminating NUL, still inside). */
static PyObject *overread(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg))
        return NULL;
    const volatile char *p = PyBytes_AS_STRING(arg);
    return PyLong_FromLong(p[PyBytes_GET_SIZE(arg) + 1]);
}

/* Signed integer overflow: INT_MAX + n. */
static PyObject *overflow(PyObject *self, PyObject *arg) {
    volatile int big = INT_MAX;
    int n = (int)PyLong_AsLong(arg);
    return PyLong_FromLong(big + n);
}

static PyMethodDef methods[] = {
    {"overread", overread, METH_O, NULL},
    {"overflow", overflow, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fuzz_canary", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fuzz_canary(void) {
    return PyModule_Create(&module);
}
