/*
 * Fuzzing harness for the NFQUEUE binding (floodguard/kernel/_nfq.c): the module _nfq_fuzz.
 *
 *     count, drops, accept_id = feed(datagram, truncated, callback)
 *
 * feeds one datagram, as recvmmsg would have put it in a slot, to the binding's own
 * handle_datagram() (netlink message walk, parse_packet attribute walk, callback, verdict
 * batching) and returns what it did: the number of packet messages, the drop verdicts still
 * pending and the pending batch accept (None when there is none). The datagram is copied into
 * a buffer of exactly its size, so any read past it is an AddressSanitizer report. truncated
 * sets MSG_TRUNC (the kernel cut the datagram). arrival() is the binding's own (the judged
 * packet's NFQA_TIMESTAMP). callback(payload, hook) -> bool, or None for the
 * fail_open verdict without calling anything.
 *
 * Verdict batches that fill up are really sent, on a NETLINK_ROUTE socket to the kernel, which
 * answers each message with an error (not a routing message) and changes nothing; the answers
 * are read and thrown away.
 */
#define PyInit__nfq fuzz_unused_PyInit__nfq  /* only _nfq_fuzz's init is the module's */
#include "../floodguard/kernel/_nfq.c"
#undef PyInit__nfq

static int nl_fd = -1;

static void drain(void) {
    unsigned char buf[8192];
    while (recv(nl_fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
}

static PyObject *feed(PyObject *self, PyObject *args) {
    Py_buffer data;
    int truncated, count;
    PyObject *callback, *drops, *accept;
    Queue *q;
    unsigned char *slot;
    Run run = {0};

    if (!PyArg_ParseTuple(args, "y*pO:feed", &data, &truncated, &callback))
        return NULL;
    q = calloc(1, sizeof *q);
    slot = malloc(data.len > 0 ? (size_t)data.len : 1);
    if (q == NULL || slot == NULL) {
        free(q);
        free(slot);
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    memcpy(slot, data.buf, (size_t)data.len);
    q->fd = nl_fd;
    q->queue_num = 65535;
    q->fail_open = 1;
    q->slots = slot;
    q->msgs[0].msg_len = (unsigned int)data.len;
    q->msgs[0].msg_hdr.msg_flags = truncated ? MSG_TRUNC : 0;
    run.callback = callback == Py_None ? NULL : callback;

    count = handle_datagram(q, &run, 0);
    drops = PyList_New(q->ndrops);
    for (int i = 0; drops != NULL && i < q->ndrops; i++)
        PyList_SET_ITEM(drops, i, PyLong_FromUnsignedLong(q->drops[i]));
    accept = q->have_accept ? PyLong_FromUnsignedLong(q->accept_id) : Py_NewRef(Py_None);
    free(slot);
    free(q);
    PyBuffer_Release(&data);
    drain();
    if (run.stop) {
        Py_XDECREF(drops);
        Py_XDECREF(accept);
        restore_exception(&run);
        return NULL;
    }
    if (count < 0) {
        Py_XDECREF(drops);
        Py_XDECREF(accept);
        errno = -count;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("iNN", count, drops, accept);
}

static PyMethodDef methods[] = {
    {"feed", feed, METH_VARARGS, "feed(datagram, truncated, callback) -> (count, drops, accept)"},
    {"arrival", nfq_arrival, METH_NOARGS, "the binding's arrival(): the judged packet's stamp"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_nfq_fuzz", NULL, -1, methods};

PyMODINIT_FUNC PyInit__nfq_fuzz(void) {
    if (nl_fd < 0) {
        nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (nl_fd < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyModule_Create(&module);
}
