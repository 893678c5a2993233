/* floodguard.kernel._nfq: placeholder until the NFQUEUE binding lands (nothing imports it). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_nfq", NULL, -1, NULL, NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__nfq(void) { return PyModule_Create(&def); }
