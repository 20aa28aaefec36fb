#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include "saxpy.h"

#ifdef HELLO_CUDA_WITH_CUDA
static const int with_cuda = 1;
#else
static const int with_cuda = 0;
int hc_cuda_device_count(void) { return 0; }
int hc_saxpy_cuda(int n, float a, const float *x, float *y) { (void)n; (void)a; (void)x; (void)y; return -1; }
#endif

static void saxpy_c(int n, float a, const float *x, float *y) {
    for (int i = 0; i < n; i++) y[i] = a * x[i] + y[i];
}

/* saxpy(a, x, y, device) -> list: device is "cuda" or "cpu". */
static PyObject *saxpy(PyObject *self, PyObject *args) {
    float a;
    PyObject *xs, *ys;
    const char *device;
    if (!PyArg_ParseTuple(args, "fOOs", &a, &xs, &ys, &device)) return NULL;
    Py_ssize_t n = PySequence_Size(xs);
    if (n < 0 || n != PySequence_Size(ys)) {
        PyErr_SetString(PyExc_ValueError, "x and y must be sequences of the same length");
        return NULL;
    }
    float *x = malloc(sizeof(float) * (n ? n : 1)), *y = malloc(sizeof(float) * (n ? n : 1));
    if (!x || !y) { free(x); free(y); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *xi = PySequence_GetItem(xs, i), *yi = PySequence_GetItem(ys, i);
        x[i] = xi ? (float)PyFloat_AsDouble(xi) : 0.0f;
        y[i] = yi ? (float)PyFloat_AsDouble(yi) : 0.0f;
        Py_XDECREF(xi);
        Py_XDECREF(yi);
    }
    if (PyErr_Occurred()) { free(x); free(y); return NULL; }
    if (device[0] == 'c' && device[1] == 'u') {
        int err = hc_saxpy_cuda((int)n, a, x, y);
        if (err != 0) {
            free(x); free(y);
            return PyErr_Format(PyExc_RuntimeError, "CUDA saxpy failed with error %d", err);
        }
    } else {
        saxpy_c((int)n, a, x, y);
    }
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) PyList_SET_ITEM(out, i, PyFloat_FromDouble(y[i]));
    free(x);
    free(y);
    return out;
}

static PyObject *cuda_device_count(PyObject *self, PyObject *noargs) {
    return PyLong_FromLong(hc_cuda_device_count());
}

static PyMethodDef methods[] = {
    {"saxpy", saxpy, METH_VARARGS, "saxpy(a, x, y, device) -> list of a*x+y"},
    {"cuda_device_count", cuda_device_count, METH_NOARGS, "CUDA devices that answer (0 without GPU or driver)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_core", NULL, -1, methods};

PyMODINIT_FUNC PyInit__core(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "WITH_CUDA", with_cuda) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
