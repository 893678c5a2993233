/*
 * floodguard.registrar._udp: read and answer UDP datagrams in batches (recvmmsg, sendmmsg).
 *
 * recv_batch(fd, count) reads up to `count` (at most MAX_BATCH) waiting datagrams in one
 * system call, without blocking, as a list of (payload, source ip, source port); an empty list
 * when none is waiting.  send_batch(fd, items) sends (payload, ip, port) items in as few calls
 * as the kernel allows and returns how many left.
 *
 * Why: the registrar's UDP replies are most of its kernel time, and each one sent alone may
 * wake the peer's reader again (on a virtual machine an interrupt to another CPU); a batch of
 * replies wakes it once.  Reading the batch in one call also spares a Python exception at the
 * end of every drain.
 *
 * UDP stays best effort, as with sendto/recvfrom: a reply the kernel refuses (send buffer
 * full, no route, a bad address) is dropped and the client retransmits; an error queued by an
 * ICMP message for an earlier send is consumed and reading goes on; a datagram that did not fit
 * (only an IPv6 jumbogram could) is dropped.  Only a bad file descriptor raises OSError.
 * A link-local IPv6 source keeps its scope as socket.recvfrom writes it (fe80::1%eth0), and
 * such an address is sent back through that interface.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BATCH 64
#define MAX_DATAGRAM 65536
/* recvmmsg calls that only returned a queued error before giving up on this wakeup */
#define MAX_ERRORS 8

static unsigned char *buffers;  /* MAX_BATCH * MAX_DATAGRAM bytes, allocated on first use */

/* The two positional arguments of both functions, the first a file descriptor. */
static int fd_and_arg(const char *usage, PyObject *const *args, Py_ssize_t nargs, int *fd) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s takes two arguments", usage);
        return -1;
    }
    long value = PyLong_AsLong(args[0]);
    if (value == -1 && PyErr_Occurred()) return -1;
    if (value < 0 || value > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "file descriptor out of range");
        return -1;
    }
    *fd = (int)value;
    return 0;
}

static int fatal(int err) { return err == EBADF || err == ENOTSOCK || err == EFAULT; }

static PyObject *source_tuple(const unsigned char *data, size_t size,
                              const struct sockaddr_storage *from) {
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
    unsigned port;
    if (from->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)from;
        if (!inet_ntop(AF_INET, &a->sin_addr, host, sizeof host)) return Py_NewRef(Py_None);
        port = ntohs(a->sin_port);
    } else if (from->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)from;
        if (!inet_ntop(AF_INET6, &a->sin6_addr, host, INET6_ADDRSTRLEN))
            return Py_NewRef(Py_None);
        port = ntohs(a->sin6_port);
        if (a->sin6_scope_id) {  /* as getnameinfo (socket.recvfrom) writes it: fe80::1%eth0 */
            size_t len = strlen(host);
            char name[IF_NAMESIZE];
            int link = IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr) ||
                       IN6_IS_ADDR_MC_LINKLOCAL(&a->sin6_addr);
            if (link && if_indextoname(a->sin6_scope_id, name))
                snprintf(host + len, sizeof host - len, "%%%s", name);
            else
                snprintf(host + len, sizeof host - len, "%%%u", (unsigned)a->sin6_scope_id);
        }
    } else {
        return Py_NewRef(Py_None);  /* not an IP socket: nothing to answer */
    }
    return Py_BuildValue("(y#sI)", (const char *)data, (Py_ssize_t)size, host, port);
}

static PyObject *recv_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    int fd;
    if (fd_and_arg("recv_batch(fd, count)", args, nargs, &fd) < 0) return NULL;
    long count = PyLong_AsLong(args[1]);
    if (count == -1 && PyErr_Occurred()) return NULL;
    if (count < 1) count = 1;
    if (count > MAX_BATCH) count = MAX_BATCH;
    if (!buffers) {
        buffers = PyMem_RawMalloc((size_t)MAX_BATCH * MAX_DATAGRAM);
        if (!buffers) return PyErr_NoMemory();
    }
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    struct sockaddr_storage from[MAX_BATCH];
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    int errors = 0;
    long got = 0;
    while (got < count) {
        long want = count - got;
        memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)want);
        for (long i = 0; i < want; i++) {
            iov[i].iov_base = buffers + (size_t)i * MAX_DATAGRAM;
            iov[i].iov_len = MAX_DATAGRAM;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        /* Never blocks; the GIL stays held, as the buffers are this module's alone. */
        int n = recvmmsg(fd, msgs, (unsigned)want, MSG_DONTWAIT, NULL);
        if (n < 0) {
            int err = errno;
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) goto fail;
                continue;
            }
            if (err == EAGAIN || err == EWOULDBLOCK) break;
            if (fatal(err)) {
                errno = err;
                PyErr_SetFromErrno(PyExc_OSError);
                goto fail;
            }
            /* an ICMP error queued for an earlier send: reading it cleared it */
            if (++errors >= MAX_ERRORS) break;
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) continue;
            PyObject *item = source_tuple(iov[i].iov_base, msgs[i].msg_len, &from[i]);
            if (!item) goto fail;
            int rc = item == Py_None ? 0 : PyList_Append(out, item);
            Py_DECREF(item);
            if (rc < 0) goto fail;
        }
        got += n;
        if (n < want) break;  /* the queue is empty (or an error is next: read it next time) */
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* 1: filled, 0: not an address to send to */
static int parse_address(PyObject *host, PyObject *port, struct sockaddr_storage *to,
                         socklen_t *len) {
    Py_ssize_t size = 0;
    const char *text = PyUnicode_Check(host) ? PyUnicode_AsUTF8AndSize(host, &size) : NULL;
    if (!text || strlen(text) != (size_t)size) {  /* a NUL inside would cut the address */
        PyErr_Clear();
        return 0;
    }
    long number = PyLong_Check(port) ? PyLong_AsLong(port) : -1;
    if (number < 0 || number > 65535) {
        PyErr_Clear();
        return 0;
    }
    memset(to, 0, sizeof *to);
    if (strchr(text, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)to;
        char bare[INET6_ADDRSTRLEN];
        const char *scope = strchr(text, '%');  /* fe80::1%eth0 or fe80::1%2 */
        size_t n = scope ? (size_t)(scope - text) : strlen(text);
        if (n >= sizeof bare) return 0;
        memcpy(bare, text, n);
        bare[n] = 0;
        if (inet_pton(AF_INET6, bare, &a->sin6_addr) != 1) return 0;
        if (scope) {
            char *end = NULL;
            unsigned long index = strtoul(scope + 1, &end, 10);
            if (!scope[1]) return 0;
            if (*end) index = if_nametoindex(scope + 1);
            if (!index || index > UINT32_MAX) return 0;
            a->sin6_scope_id = (uint32_t)index;
        }
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)number);
        *len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)to;
        if (inet_pton(AF_INET, text, &a->sin_addr) != 1) return 0;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)number);
        *len = sizeof *a;
    }
    return 1;
}

static PyObject *send_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    int fd;
    if (fd_and_arg("send_batch(fd, items)", args, nargs, &fd) < 0) return NULL;
    PyObject *items = PySequence_Fast(args[1], "send_batch: items must be a sequence");
    if (!items) return NULL;
    Py_ssize_t total = PySequence_Fast_GET_SIZE(items), next = 0, sent = 0;
    PyObject **item = PySequence_Fast_ITEMS(items);
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    struct sockaddr_storage to[MAX_BATCH];
    while (next < total) {
        int fill = 0;
        for (; next < total && fill < MAX_BATCH; next++) {
            PyObject *it = item[next];
            if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 3 ||
                !PyBytes_Check(PyTuple_GET_ITEM(it, 0)))
                continue;
            socklen_t len = 0;
            if (!parse_address(PyTuple_GET_ITEM(it, 1), PyTuple_GET_ITEM(it, 2), &to[fill], &len))
                continue;
            PyObject *payload = PyTuple_GET_ITEM(it, 0);
            memset(&msgs[fill], 0, sizeof msgs[fill]);
            iov[fill].iov_base = PyBytes_AS_STRING(payload);
            iov[fill].iov_len = (size_t)PyBytes_GET_SIZE(payload);
            msgs[fill].msg_hdr.msg_iov = &iov[fill];
            msgs[fill].msg_hdr.msg_iovlen = 1;
            msgs[fill].msg_hdr.msg_name = &to[fill];
            msgs[fill].msg_hdr.msg_namelen = len;
            fill++;
        }
        int at = 0;
        while (at < fill) {
            int n = sendmmsg(fd, msgs + at, (unsigned)(fill - at), MSG_DONTWAIT);
            if (n > 0) {
                at += n;
                sent += n;
                continue;
            }
            int err = errno;
            if (n < 0 && err == EINTR) {
                if (PyErr_CheckSignals() < 0) goto fail;
                continue;
            }
            if (n < 0 && fatal(err)) {
                errno = err;
                PyErr_SetFromErrno(PyExc_OSError);
                goto fail;
            }
            if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
                at = fill;  /* send buffer full: the rest of this batch is lost */
                next = total;
                break;
            }
            at++;  /* this one was refused (no route, queued ICMP error...): skip it */
        }
    }
    Py_DECREF(items);
    return PyLong_FromSsize_t(sent);
fail:
    Py_DECREF(items);
    return NULL;
}

static PyMethodDef udp_methods[] = {
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_FASTCALL,
     "recv_batch(fd, count) -> list[tuple[bytes, str, int]]"},
    {"send_batch", (PyCFunction)(void (*)(void))send_batch, METH_FASTCALL,
     "send_batch(fd, items: list[tuple[bytes, str, int]]) -> int"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef udp_module = {
    PyModuleDef_HEAD_INIT, "_udp", "Batched UDP reads and writes for the registrar.", -1,
    udp_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__udp(void) {
    PyObject *m = PyModule_Create(&udp_module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
