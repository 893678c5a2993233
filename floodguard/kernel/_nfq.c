/*
 * floodguard.kernel._nfq: a small NFQUEUE consumer over raw netlink (no libnetfilter_queue).
 *
 *     q = Queue(queue_num, max_len=65536, fail_open=True, accept_overflow=False,
 *               copy_range=65531, rcvbuf=8 MiB, out_mark=0, out_mask=0)
 *     n = q.run(callback, timeout=0.0, max_packets=4096)   # callback(payload, hook) -> verdict
 *     q.close()
 *
 * Binding is one NFQNL_MSG_CONFIG message (bind + copy mode + queue length + fail-open flag,
 * applied by the kernel in one go) whose ACK is awaited, so kernel refusals surface as OSError.
 * Packets can reach the socket before that ACK; they are kept for the first run(). With
 * accept_overflow (the kernel's NFQA_CFG_F_FAIL_OPEN) the kernel accepts the packets it cannot
 * queue (queue full, or the socket buffer full) instead of dropping them; either way such
 * packets never reach the socket.
 *
 * run() waits up to timeout for the socket, then reads what is queued with recvmmsg into a
 * vector of buffers that each hold the largest packet, calls the callback once per packet with
 * the payload as bytes and the netfilter hook, and answers a batch of up to BATCH packets with
 * one sendmsg: one NFQNL_MSG_VERDICT (NF_DROP) per dropped packet, then one
 * NFQNL_MSG_VERDICT_BATCH (NF_ACCEPT) for the last accepted id, which accepts every packet
 * still pending up to that id. Packet ids are given out in the order the kernel writes the
 * messages to the socket, so the batch never covers a packet that has not been read; the drops
 * go first in the same buffer, and the kernel handles the messages of a buffer in order.
 *
 * The callback's verdict is a bool (accept or drop) or bytes: accept the packet with these
 * bytes as its new content (the caller fixes the IP/UDP headers). Such a packet is answered at
 * once, on its own (NFQNL_MSG_VERDICT with NFQA_PAYLOAD), after the verdicts collected before it,
 * so no later batch accept can release it unchanged.
 *
 * With out_mask set, a packet whose mark has (mark & out_mask) == out_mark is reported with the
 * hook NF_INET_LOCAL_OUT whatever hook queued it: in forward mode the rules mark the packets
 * that really come from the registrar's side, and that mark (never the ports) tells the guard
 * a packet is the registrar's output.
 *
 * Arrival times: each Queue keeps a UDP socket with SO_TIMESTAMPNS open, which turns on the
 * kernel's receive timestamps (global, like tcpdump or an NTP daemon do), so the kernel stamps
 * each packet when it arrives and passes the stamp as NFQA_TIMESTAMP. arrival() is that stamp
 * of the packet whose callback is running (CLOCK_REALTIME seconds; 0.0 outside a callback or
 * when the kernel sent none). now() is a monotonic clock for the guard's policy: while a
 * callback runs, CLOCK_MONOTONIC less how long ago the packet arrived (within MAX_LAG), never
 * earlier than a value it already returned. A consumer that stalled and then reads its backlog
 * at once thus sees the packets as spaced as they arrived, not as a burst. One variable serves
 * every queue of a process: a callback runs with the GIL held, one at a time.
 *
 * A callback that raises counts an error and the packet gets the fail_open verdict. When the
 * callback raises something that is not an Exception (KeyboardInterrupt, SystemExit) or a signal
 * handler raises, the packets already read get their verdicts (the rest of the current read:
 * fail_open) and the exception propagates.
 */
#include "_nfq_netlink.h"
#include "_nfq_packets.h"

static PyTypeObject QueueType;

/* ------------------------------------------------------------------ the Queue type */

/* Receive timestamps on while this queue lives; without them (no socket) packets simply come
 * without NFQA_TIMESTAMP and now() is the plain monotonic clock. */
static void enable_stamps(Queue *q) {
    int one = 1;

    q->stamp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (q->stamp_fd < 0)
        q->stamp_fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (q->stamp_fd >= 0 &&
        setsockopt(q->stamp_fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) {
        close(q->stamp_fd);
        q->stamp_fd = -1;
    }
}

static PyObject *Queue_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    Queue *q = (Queue *)type->tp_alloc(type, 0);
    if (q != NULL) {
        q->fd = -1;
        q->stamp_fd = -1;
    }
    return (PyObject *)q;
}

static int Queue_init(Queue *q, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"queue_num", "max_len", "fail_open", "accept_overflow",
                             "copy_range", "rcvbuf", "out_mark", "out_mask", NULL};
    int queue_num, fail_open = 1, accept_overflow = 0, rcvbuf = DEFAULT_RCVBUF;
    unsigned int max_len = DEFAULT_MAX_LEN, copy_range = MAX_COPY_RANGE;
    unsigned int out_mark = 0, out_mask = 0;
    struct sockaddr_nl addr = {.nl_family = AF_NETLINK};
    socklen_t addrlen = sizeof addr;
    int one = 1, err;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|$IppIiII:Queue", kwlist, &queue_num,
                                     &max_len, &fail_open, &accept_overflow, &copy_range,
                                     &rcvbuf, &out_mark, &out_mask))
        return -1;
    if (q->fd >= 0 || q->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Queue is already initialised");
        return -1;
    }
    if (queue_num < 0 || queue_num > 65535) {
        PyErr_SetString(PyExc_ValueError, "queue_num must be 0..65535");
        return -1;
    }
    if (max_len < 1 || copy_range < 1 || rcvbuf < 1) {
        PyErr_SetString(PyExc_ValueError, "max_len, copy_range and rcvbuf must be positive");
        return -1;
    }
    q->queue_num = queue_num;
    q->out_mark = out_mark & out_mask;
    q->out_mask = out_mask;
    q->fail_open = fail_open;
    q->accept_overflow = accept_overflow;
    q->slots = PyMem_RawMalloc((size_t)SLOTS * SLOT_SIZE);
    if (q->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < SLOTS; i++) {
        q->iov[i].iov_base = q->slots + (size_t)i * SLOT_SIZE;
        q->iov[i].iov_len = SLOT_SIZE;
        q->msgs[i].msg_hdr.msg_iov = &q->iov[i];
        q->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    q->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (q->fd < 0) {
        nl_error(errno, queue_num, "netlink socket: ");
        return -1;
    }
    if (bind(q->fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        getsockname(q->fd, (struct sockaddr *)&addr, &addrlen) < 0) {
        err = errno;
        close(q->fd);
        q->fd = -1;
        nl_error(err, queue_num, "netlink socket: ");
        return -1;
    }
    q->portid = addr.nl_pid;
    /* a smaller buffer still works (more overruns under a burst) */
    if (setsockopt(q->fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        (void)setsockopt(q->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    /* an overrun then costs the packets the kernel could not deliver (dropped, or accepted
     * with fail-open) instead of an ENOBUFS error on the next read */
    (void)setsockopt(q->fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    err = configure(q, max_len, copy_range);
    if (err) {
        close(q->fd);
        q->fd = -1;
        q->pending = 0;
        nl_error(err, queue_num, "");
        return -1;
    }
    enable_stamps(q);
    return 0;
}

static void Queue_dealloc(Queue *q) {
    queue_close(q);
    PyMem_RawFree(q->slots);
    Py_TYPE(q)->tp_free((PyObject *)q);
}

static int timeout_ms(PyObject *obj, int *ms) {
    double t;

    if (obj == NULL || obj == Py_None) {
        *ms = -1;
        return 0;
    }
    t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (t != t) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    if (t <= 0)
        *ms = 0;
    else if (t >= 86400.0)
        *ms = 86400 * 1000;
    else
        *ms = (int)(t * 1000.0 + 0.999);  /* round up: never a busy wait on 0.0001 */
    return 0;
}

PyDoc_STRVAR(Queue_run_doc,
"run(callback, timeout=0.0, max_packets=4096) -> int\n\n"
"Wait up to timeout seconds (None: without limit) for packets, then give a verdict to the\n"
"packets queued, up to max_packets: callback(payload: bytes, hook: int) -> true accepts,\n"
"false drops. Returns the number of packets handled (0 on timeout or when a signal\n"
"interrupted the wait and its handler did not raise).");

static PyObject *Queue_run(Queue *q, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"callback", "timeout", "max_packets", NULL};
    PyObject *callback, *timeout = NULL;
    Py_ssize_t max_packets = 4096, total = 0;
    int ms, empty = 0, err = 0;
    Run run = {0};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|On:run", kwlist, &callback, &timeout,
                                     &max_packets))
        return NULL;
    if (!PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "callback must be callable");
        return NULL;
    }
    if (max_packets < 1) {
        PyErr_SetString(PyExc_ValueError, "max_packets must be positive");
        return NULL;
    }
    if (timeout_ms(timeout, &ms) < 0)
        return NULL;
    if (q->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the queue is closed");
        return NULL;
    }
    if (q->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the queue is already in run()");
        return NULL;
    }
    run.callback = callback;
    q->busy = 1;

    if (q->pending == 0 && ms != 0) {
        struct pollfd pfd = {q->fd, POLLIN, 0};
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = poll(&pfd, 1, ms);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r <= 0) {
            q->busy = 0;
            if (r == 0 || err == EINTR)
                return PyErr_CheckSignals() < 0 ? NULL : PyLong_FromLong(0);
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        err = 0;
    }

    while (!run.stop && !empty && !err && total < max_packets) {
        Py_ssize_t in_batch = 0;

        while (!run.stop && !err && in_batch < BATCH && total + in_batch < max_packets) {
            int n, want = SLOTS;

            if (q->pending) {
                n = q->pending;
                q->pending = 0;
                want = n;
            } else {
                if (want > BATCH - in_batch)
                    want = (int)(BATCH - in_batch);
                if (want > max_packets - total - in_batch)
                    want = (int)(max_packets - total - in_batch);
                Py_BEGIN_ALLOW_THREADS
                n = recvmmsg(q->fd, q->msgs, (unsigned int)want, MSG_DONTWAIT, NULL);
                err = errno;
                Py_END_ALLOW_THREADS
                if (n < 0) {
                    if (err == EAGAIN || err == EWOULDBLOCK) {
                        err = 0;
                        empty = 1;
                        break;
                    }
                    if (err == ENOBUFS) {
                        q->overruns++;
                        err = 0;
                        continue;
                    }
                    if (err == EINTR) {
                        err = 0;
                        if (PyErr_CheckSignals() < 0)
                            stop_run(&run);
                        continue;
                    }
                    break;
                }
                err = 0;
            }
            for (int i = 0; i < n; i++) {
                int c = handle_datagram(q, &run, i);
                if (c < 0) {
                    err = -c;
                    break;
                }
                in_batch += c;
            }
            if (n < want) {  /* recvmmsg stops early only when the socket is empty */
                empty = 1;
                break;
            }
        }
        int ferr = flush_verdicts(q);
        if (ferr && !err)
            err = ferr;
        total += in_batch;
    }
    q->busy = 0;
    if (run.stop) {
        restore_exception(&run);
        return NULL;
    }
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(total);
}

static PyObject *Queue_close(Queue *q, PyObject *Py_UNUSED(ignored)) {
    if (q->busy) {
        PyErr_SetString(PyExc_RuntimeError, "cannot close the queue inside run()");
        return NULL;
    }
    queue_close(q);
    Py_RETURN_NONE;
}

static PyObject *Queue_fileno(Queue *q, PyObject *Py_UNUSED(ignored)) {
    if (q->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the queue is closed");
        return NULL;
    }
    return PyLong_FromLong(q->fd);
}

static PyObject *Queue_get_fail_open(Queue *q, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(q->fail_open);
}

static PyObject *Queue_get_accept_overflow(Queue *q, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(q->accept_overflow);
}

static PyObject *Queue_get_closed(Queue *q, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(q->fd < 0);
}

static PyMethodDef Queue_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Queue_run, METH_VARARGS | METH_KEYWORDS,
     Queue_run_doc},
    {"close", (PyCFunction)Queue_close, METH_NOARGS,
     "Unbind the queue (the kernel drops what is still queued) and close the socket; "
     "idempotent."},
    {"fileno", (PyCFunction)Queue_fileno, METH_NOARGS, "The netlink socket's descriptor."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Queue_members[] = {
    {"queue_num", T_INT, offsetof(Queue, queue_num), READONLY, "The queue number."},
    {"portid", T_UINT, offsetof(Queue, portid), READONLY, "The socket's netlink port id."},
    {"packets", T_ULONGLONG, offsetof(Queue, packets), READONLY, "Packets received."},
    {"errors", T_ULONGLONG, offsetof(Queue, errors), READONLY,
     "Packets that got the fail_open verdict because the callback raised (or the message "
     "was unreadable)."},
    {"truncated", T_ULONGLONG, offsetof(Queue, truncated), READONLY,
     "Packets longer than the copy range: their payload was cut short."},
    {"overruns", T_ULONGLONG, offsetof(Queue, overruns), READONLY,
     "Times the socket reported lost messages (ENOBUFS)."},
    {"verdict_errors", T_ULONGLONG, offsetof(Queue, verdict_errors), READONLY,
     "Error answers of the kernel to verdict messages."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Queue_getset[] = {
    {"fail_open", (getter)Queue_get_fail_open, NULL,
     "Accept (True) or drop when the callback fails.", NULL},
    {"accept_overflow", (getter)Queue_get_accept_overflow, NULL,
     "The kernel accepts (True) or drops the packets it cannot queue.", NULL},
    {"closed", (getter)Queue_get_closed, NULL, "True after close().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Queue_doc,
"Queue(queue_num, *, max_len=65536, fail_open=True, accept_overflow=False, copy_range=65531,\n"
"      rcvbuf=8388608)\n\n"
"One bound NFQUEUE. Raises OSError when the kernel refuses the binding.");

static PyTypeObject QueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "floodguard.kernel._nfq.Queue",
    .tp_basicsize = sizeof(Queue),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Queue_doc,
    .tp_new = Queue_new,
    .tp_init = (initproc)Queue_init,
    .tp_dealloc = (destructor)Queue_dealloc,
    .tp_methods = Queue_methods,
    .tp_members = Queue_members,
    .tp_getset = Queue_getset,
};

static double seconds(clockid_t clock) {
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static PyObject *nfq_arrival(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return PyFloat_FromDouble(current_arrival);
}

static PyObject *nfq_now(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    double now = seconds(CLOCK_MONOTONIC);

    if (current_arrival > 0.0) {
        double lag = seconds(CLOCK_REALTIME) - current_arrival;
        if (lag > 0.0 && lag <= MAX_LAG)
            now -= lag;
    }
    if (now < last_now)
        now = last_now;
    else
        last_now = now;
    return PyFloat_FromDouble(now);
}

static PyMethodDef nfq_functions[] = {
    {"arrival", nfq_arrival, METH_NOARGS,
     "arrival() -> float: when the kernel received the packet whose callback is running "
     "(CLOCK_REALTIME seconds); 0.0 outside a callback or when the kernel gave no stamp."},
    {"now", nfq_now, METH_NOARGS,
     "now() -> float: monotonic seconds (time.monotonic's clock); inside a callback, less how "
     "long ago its packet arrived (up to MAX_LAG); never less than a value already returned."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef nfq_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_nfq",
    .m_doc = "A small NFQUEUE consumer over raw netlink: see Queue.",
    .m_size = -1,
    .m_methods = nfq_functions,
};

PyMODINIT_FUNC PyInit__nfq(void) {
    PyObject *m;

    if (PyType_Ready(&QueueType) < 0)
        return NULL;
    m = PyModule_Create(&nfq_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&QueueType);
    if (PyModule_AddObject(m, "Queue", (PyObject *)&QueueType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_COPY_RANGE", MAX_COPY_RANGE) < 0 ||
        PyModule_AddIntConstant(m, "BATCH", BATCH) < 0 ||
        PyModule_AddIntConstant(m, "SLOTS", SLOTS) < 0 ||
        PyModule_AddObject(m, "MAX_LAG", PyFloat_FromDouble(MAX_LAG)) < 0) {
        Py_DECREF(&QueueType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
