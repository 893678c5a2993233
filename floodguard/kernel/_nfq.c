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
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>

#define SLOTS 32
/* the largest message: a 65531-byte payload attribute plus the metadata attributes */
#define SLOT_SIZE (0x10000 + 0x1000)
#define BATCH 256
#define MAX_COPY_RANGE (0xffff - NLA_HDRLEN)
#define DEFAULT_MAX_LEN 65536
#define DEFAULT_RCVBUF (8 * 1024 * 1024)
#define ACK_TIMEOUT_MS 5000
#define SEND_RETRIES 8
/* seconds: a stamp older than this (or in the future) is a stepped clock, not a backlog */
#define MAX_LAG 30.0

#define MSG_TYPE(m) ((NFNL_SUBSYS_QUEUE << 8) | (m))
#define HDRS_LEN (NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg)))
#define VERDICT_LEN (HDRS_LEN + NLA_HDRLEN + NLA_ALIGN(sizeof(struct nfqnl_msg_verdict_hdr)))

typedef struct {
    PyObject_HEAD
    int fd;
    int stamp_fd;           /* keeps the kernel's receive timestamps on (see arrival()) */
    int busy;
    int fail_open;
    int accept_overflow;
    int queue_num;
    unsigned int portid;
    uint32_t seq;
    int pending;            /* slots [0, pending) hold packets read while awaiting an ACK */
    unsigned char *slots;
    struct iovec iov[SLOTS];
    struct mmsghdr msgs[SLOTS];
    uint32_t drops[BATCH];
    int ndrops;
    int have_accept;
    uint32_t accept_id;
    uint32_t out_mark, out_mask;
    unsigned long long packets, errors, truncated, overruns, verdict_errors;
    unsigned char vbuf[(BATCH + 1) * VERDICT_LEN];
} Queue;

typedef struct {
    int has_id;
    uint32_t id;
    uint8_t hook;
    uint32_t mark;
    const unsigned char *payload;
    Py_ssize_t len;
    uint32_t cap_len;
    double stamp;           /* NFQA_TIMESTAMP in CLOCK_REALTIME seconds, 0.0 without one */
} Packet;

static double current_arrival = 0.0;  /* the stamp of the packet being judged */
static double last_now = 0.0;         /* the latest value now() returned */

/* The state of one run(): the callback (NULL: fail_open verdict for everything) and, once it
 * stops, the exception to propagate. */
typedef struct {
    PyObject *callback;
    int stop;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc;
#else
    PyObject *exc_type, *exc_value, *exc_tb;
#endif
} Run;

static PyTypeObject QueueType;

/* ------------------------------------------------------------------ netlink messages */

static unsigned char *put_header(unsigned char *p, uint16_t type, uint16_t flags, uint32_t seq,
                                 uint16_t queue_num) {
    struct nlmsghdr *nlh = (struct nlmsghdr *)p;
    struct nfgenmsg *nfg = (struct nfgenmsg *)(p + NLMSG_HDRLEN);

    memset(p, 0, HDRS_LEN);
    nlh->nlmsg_len = HDRS_LEN;
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
    nlh->nlmsg_seq = seq;
    nfg->nfgen_family = AF_UNSPEC;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = htons(queue_num);
    return p + HDRS_LEN;
}

static unsigned char *put_attr(unsigned char *msg, unsigned char *p, uint16_t type,
                               const void *data, uint16_t len) {
    struct nlattr *a = (struct nlattr *)p;
    uint16_t total = NLA_ALIGN(NLA_HDRLEN + len);

    a->nla_len = NLA_HDRLEN + len;
    a->nla_type = type;
    memcpy(p + NLA_HDRLEN, data, len);
    memset(p + NLA_HDRLEN + len, 0, total - NLA_HDRLEN - len);
    ((struct nlmsghdr *)msg)->nlmsg_len += total;
    return p + total;
}

static unsigned char *put_verdict(unsigned char *p, Queue *q, int type, uint32_t verdict,
                                  uint32_t id) {
    struct nfqnl_msg_verdict_hdr vh = {htonl(verdict), htonl(id)};
    unsigned char *attrs = put_header(p, MSG_TYPE(type), 0, ++q->seq, (uint16_t)q->queue_num);

    return put_attr(p, attrs, NFQA_VERDICT_HDR, &vh, sizeof vh);
}

/* Returns 0 or an errno. Transient failures are retried: a drop verdict that never reaches the
 * kernel would be accepted by the next batch verdict. */
static int nl_send(int fd, const void *buf, size_t len) {
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    int tries = 0;

    for (;;) {
        if (sendto(fd, buf, len, 0, (struct sockaddr *)&kernel, sizeof kernel) >= 0)
            return 0;
        if (errno != EINTR && errno != ENOBUFS && errno != ENOMEM && errno != EAGAIN)
            return errno;
        if (++tries > SEND_RETRIES)
            return errno;
        if (errno != EINTR) {
            struct timespec pause = {0, 1000000L};
            nanosleep(&pause, NULL);
        }
    }
}

/* Sends the verdicts collected so far (drops first, then the batch accept). */
static int flush_verdicts(Queue *q) {
    unsigned char *p = q->vbuf;
    int err = 0;

    if (q->ndrops == 0 && !q->have_accept)
        return 0;
    for (int i = 0; i < q->ndrops; i++)
        p = put_verdict(p, q, NFQNL_MSG_VERDICT, NF_DROP, q->drops[i]);
    if (q->have_accept)
        p = put_verdict(p, q, NFQNL_MSG_VERDICT_BATCH, NF_ACCEPT, q->accept_id);
    q->ndrops = 0;
    q->have_accept = 0;
    Py_BEGIN_ALLOW_THREADS
    err = nl_send(q->fd, q->vbuf, (size_t)(p - q->vbuf));
    Py_END_ALLOW_THREADS
    return err;
}

static int add_verdict(Queue *q, uint32_t id, int accept) {
    if (accept) {
        q->have_accept = 1;
        q->accept_id = id;
        return 0;
    }
    if (q->ndrops == BATCH) {
        int err = flush_verdicts(q);
        if (err)
            return err;
    }
    q->drops[q->ndrops++] = id;
    return 0;
}

/* Accepts packet id with new content: the verdicts collected so far go first, then this one on
 * its own. Returns 0 or an errno. */
static int send_mangled(Queue *q, uint32_t id, const char *data, Py_ssize_t len) {
    size_t size = VERDICT_LEN + NLA_HDRLEN + NLA_ALIGN((size_t)len);
    unsigned char *buf, *p;
    int err;

    if (len > MAX_COPY_RANGE)
        return EMSGSIZE;
    err = flush_verdicts(q);
    if (err)
        return err;
    buf = PyMem_Malloc(size);
    if (buf == NULL)
        return ENOMEM;
    p = put_verdict(buf, q, NFQNL_MSG_VERDICT, NF_ACCEPT, id);
    p = put_attr(buf, p, NFQA_PAYLOAD, data, (uint16_t)len);
    Py_BEGIN_ALLOW_THREADS
    err = nl_send(q->fd, buf, (size_t)(p - buf));
    Py_END_ALLOW_THREADS
    PyMem_Free(buf);
    return err;
}

/* ------------------------------------------------------------------ receiving */

static void parse_packet(const struct nlmsghdr *nlh, size_t len, Packet *pkt) {
    const unsigned char *p = (const unsigned char *)nlh + HDRS_LEN;
    const unsigned char *end = (const unsigned char *)nlh + len;

    memset(pkt, 0, sizeof *pkt);
    pkt->payload = (const unsigned char *)"";
    while (p + NLA_HDRLEN <= end) {
        const struct nlattr *a = (const struct nlattr *)p;
        size_t alen = a->nla_len;
        const unsigned char *data = p + NLA_HDRLEN;

        if (alen < NLA_HDRLEN || alen > (size_t)(end - p))
            break;
        switch (a->nla_type & NLA_TYPE_MASK) {
        case NFQA_PACKET_HDR:
            if (alen >= NLA_HDRLEN + sizeof(struct nfqnl_msg_packet_hdr)) {
                struct nfqnl_msg_packet_hdr ph;
                memcpy(&ph, data, sizeof ph);
                pkt->id = ntohl(ph.packet_id);
                pkt->hook = ph.hook;
                pkt->has_id = 1;
            }
            break;
        case NFQA_PAYLOAD:
            pkt->payload = data;
            pkt->len = (Py_ssize_t)(alen - NLA_HDRLEN);
            break;
        case NFQA_MARK:
            if (alen >= NLA_HDRLEN + 4) {
                uint32_t v;
                memcpy(&v, data, 4);
                pkt->mark = ntohl(v);
            }
            break;
        case NFQA_TIMESTAMP:
            if (alen >= NLA_HDRLEN + sizeof(struct nfqnl_msg_packet_timestamp)) {
                struct nfqnl_msg_packet_timestamp ts;
                uint64_t sec, usec;
                memcpy(&ts, data, sizeof ts);
                sec = be64toh(ts.sec);
                usec = be64toh(ts.usec);
                if (sec > 0 && sec < (UINT64_C(1) << 40) && usec < 1000000)
                    pkt->stamp = (double)sec + (double)usec / 1e6;
            }
            break;
        case NFQA_CAP_LEN:
            if (alen >= NLA_HDRLEN + 4) {
                uint32_t v;
                memcpy(&v, data, 4);
                pkt->cap_len = ntohl(v);
            }
            break;
        }
        p += NLA_ALIGN(alen);
    }
}

static void stop_run(Run *run) {
    run->stop = 1;
#if PY_VERSION_HEX >= 0x030C0000
    run->exc = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&run->exc_type, &run->exc_value, &run->exc_tb);
#endif
}

static void restore_exception(Run *run) {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(run->exc);
#else
    PyErr_Restore(run->exc_type, run->exc_value, run->exc_tb);
#endif
}

#define ANSWERED 2  /* judge(): the packet was accepted with new content, already answered */

/* The callback's verdict for one packet (1 accept, 0 drop, ANSWERED); never leaves an
 * exception set. */
static int judge(Queue *q, Run *run, const Packet *pkt) {
    PyObject *args[2], *result;
    int accept;

    args[0] = PyBytes_FromStringAndSize((const char *)pkt->payload, pkt->len);
    if (args[0] == NULL) {
        q->errors++;
        PyErr_Clear();
        return q->fail_open;
    }
    args[1] = PyLong_FromLong(q->out_mask && (pkt->mark & q->out_mask) == q->out_mark
                              ? NF_INET_LOCAL_OUT : pkt->hook);
    if (args[1] == NULL) {
        Py_DECREF(args[0]);
        q->errors++;
        PyErr_Clear();
        return q->fail_open;
    }
    current_arrival = pkt->stamp;
    result = PyObject_Vectorcall(run->callback, args, 2, NULL);
    current_arrival = 0.0;
    Py_DECREF(args[0]);
    Py_DECREF(args[1]);
    if (result == Py_True) {
        accept = 1;
    } else if (result == Py_False) {
        accept = 0;
    } else if (result != NULL && PyBytes_CheckExact(result)) {
        if (send_mangled(q, pkt->id, PyBytes_AS_STRING(result), PyBytes_GET_SIZE(result)) == 0) {
            accept = ANSWERED;
        } else {
            q->verdict_errors++;
            accept = 1;  /* the original content, rather than losing the packet */
        }
    } else if (result != NULL) {
        accept = PyObject_IsTrue(result);
    } else {
        accept = -1;
    }
    Py_XDECREF(result);
    if (accept < 0) {
        q->errors++;
        accept = q->fail_open;
        if (PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_Clear();
        } else {
            stop_run(run);
            return accept;
        }
    }
    if (PyErr_CheckSignals() < 0)
        stop_run(run);
    return accept;
}

/* Handles the datagram in slot i: packets get a verdict, kernel error replies are counted.
 * Returns the number of packets, or -errno when verdicts could not be sent. */
static int handle_datagram(Queue *q, Run *run, int i) {
    const unsigned char *buf = q->slots + (size_t)i * SLOT_SIZE;
    size_t n = q->msgs[i].msg_len;
    int cut_datagram = (q->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
    size_t off = 0;
    int count = 0;

    while (off + NLMSG_HDRLEN <= n) {
        const struct nlmsghdr *nlh = (const struct nlmsghdr *)(buf + off);
        size_t len = nlh->nlmsg_len;
        int cut = 0;

        if (len < NLMSG_HDRLEN)
            break;
        if (len > n - off) {
            if (!cut_datagram)
                break;
            len = n - off;
            cut = 1;
        }
        if (nlh->nlmsg_type == NLMSG_ERROR) {
            const struct nlmsgerr *e = NLMSG_DATA(nlh);
            if (len >= NLMSG_HDRLEN + sizeof(int) && e->error != 0)
                q->verdict_errors++;
        } else if (nlh->nlmsg_type == MSG_TYPE(NFQNL_MSG_PACKET) && len >= HDRS_LEN) {
            Packet pkt;
            int accept, err;

            parse_packet(nlh, len, &pkt);
            q->packets++;
            count++;
            if (!pkt.has_id) {
                q->errors++;  /* nothing to answer; a later batch verdict releases it */
                goto next;
            }
            if (pkt.cap_len > (uint32_t)pkt.len)
                q->truncated++;
            if (cut) {
                q->errors++;
                accept = q->fail_open;
            } else if (run->stop || run->callback == NULL) {
                accept = q->fail_open;
            } else {
                accept = judge(q, run, &pkt);
            }
            if (accept == ANSWERED)
                goto next;
            err = add_verdict(q, pkt.id, accept);
            if (err)
                return -err;
        }
    next:
        off += NLMSG_ALIGN(len);
    }
    return count;
}

/* ------------------------------------------------------------------ configuration */

/* Raises OSError(err, "<what><strerror> (<hint>)"). */
static PyObject *nl_error(int err, int queue_num, const char *what) {
    char hint[160] = "";

    if (err == EPERM) {
        /* the kernel answers EPERM both to a missing CAP_NET_ADMIN and to a queue that another
         * socket has bound; the queue list (readable by root only) tells them apart */
        FILE *f = fopen("/proc/net/netfilter/nfnetlink_queue", "r");
        unsigned int num, port;
        char line[256];

        snprintf(hint, sizeof hint, " (needs root: CAP_NET_ADMIN)");
        while (f != NULL && fgets(line, sizeof line, f) != NULL) {
            if (sscanf(line, "%u %u", &num, &port) == 2 && (int)num == queue_num) {
                snprintf(hint, sizeof hint,
                         " (queue %d is already bound by another socket, netlink port %u)",
                         queue_num, port);
                break;
            }
        }
        if (f != NULL)
            fclose(f);
    } else if (err == EBUSY) {
        snprintf(hint, sizeof hint, " (queue %d is already bound)", queue_num);
    } else if (err == EOPNOTSUPP || err == EINVAL) {
        snprintf(hint, sizeof hint, " (the kernel does not support these queue settings)");
    } else if (err == ETIMEDOUT) {
        snprintf(hint, sizeof hint, " (no answer from the kernel)");
    }
    PyObject *msg = PyUnicode_FromFormat("%s%s%s", what, strerror(err), hint);
    if (msg != NULL) {
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", err, msg);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        Py_DECREF(msg);
    }
    return NULL;
}

/* Waits for the ACK of message seq; returns 0 or an errno (the kernel's answer). Packets that
 * arrive meanwhile are kept in the slots for the next run(). */
static int await_ack(Queue *q, uint32_t seq) {
    struct timespec start, now;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int i = q->pending, n, left_ms;

        if (i == SLOTS) {
            /* never with a kernel that answers at once; keep going without losing packets */
            Run run = {0};
            int err = handle_datagram(q, &run, SLOTS - 1);
            if (err < 0 || (err = flush_verdicts(q)) != 0)
                return err < 0 ? -err : err;
            i = q->pending = SLOTS - 1;
        }
        n = recvmmsg(q->fd, &q->msgs[i], 1, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == ENOBUFS) {
                q->overruns++;
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return errno;
            clock_gettime(CLOCK_MONOTONIC, &now);
            left_ms = ACK_TIMEOUT_MS - (int)((now.tv_sec - start.tv_sec) * 1000 +
                                             (now.tv_nsec - start.tv_nsec) / 1000000);
            if (left_ms <= 0)
                return ETIMEDOUT;
            struct pollfd pfd = {q->fd, POLLIN, 0};
            int r;
            Py_BEGIN_ALLOW_THREADS
            r = poll(&pfd, 1, left_ms);
            Py_END_ALLOW_THREADS
            if (r < 0 && errno != EINTR)
                return errno;
            continue;
        }
        const unsigned char *buf = q->slots + (size_t)i * SLOT_SIZE;
        const struct nlmsghdr *nlh = (const struct nlmsghdr *)buf;
        size_t len = q->msgs[i].msg_len;

        if (len < NLMSG_HDRLEN)
            continue;
        if (nlh->nlmsg_type == NLMSG_ERROR && nlh->nlmsg_seq == seq &&
            len >= NLMSG_HDRLEN + sizeof(int)) {
            const struct nlmsgerr *e = NLMSG_DATA(nlh);
            return e->error < 0 ? -e->error : e->error;
        }
        if (nlh->nlmsg_type == MSG_TYPE(NFQNL_MSG_PACKET))
            q->pending++;
    }
}

static int configure(Queue *q, unsigned int max_len, unsigned int copy_range) {
    unsigned char buf[128];
    unsigned char *p;
    struct nfqnl_msg_config_cmd cmd = {.command = NFQNL_CFG_CMD_BIND};
    struct nfqnl_msg_config_params params;
    uint32_t maxlen_be = htonl(max_len);
    uint32_t mask_be = htonl(NFQA_CFG_F_FAIL_OPEN);
    uint32_t flags_be = htonl(q->accept_overflow ? NFQA_CFG_F_FAIL_OPEN : 0);
    uint32_t seq = ++q->seq;
    int err;

    params.copy_range = htonl(copy_range);
    params.copy_mode = NFQNL_COPY_PACKET;
    p = put_header(buf, MSG_TYPE(NFQNL_MSG_CONFIG), NLM_F_ACK, seq, (uint16_t)q->queue_num);
    p = put_attr(buf, p, NFQA_CFG_CMD, &cmd, sizeof cmd);
    p = put_attr(buf, p, NFQA_CFG_PARAMS, &params, sizeof params);
    p = put_attr(buf, p, NFQA_CFG_QUEUE_MAXLEN, &maxlen_be, 4);
    p = put_attr(buf, p, NFQA_CFG_MASK, &mask_be, 4);
    p = put_attr(buf, p, NFQA_CFG_FLAGS, &flags_be, 4);
    err = nl_send(q->fd, buf, (size_t)(p - buf));
    return err ? err : await_ack(q, seq);
}

/* Unbinds (the kernel drops what is still queued) and closes; no ACK is awaited. */
static void queue_close(Queue *q) {
    if (q->fd >= 0) {
        unsigned char buf[64];
        unsigned char *p;
        struct nfqnl_msg_config_cmd cmd = {.command = NFQNL_CFG_CMD_UNBIND};

        p = put_header(buf, MSG_TYPE(NFQNL_MSG_CONFIG), 0, ++q->seq, (uint16_t)q->queue_num);
        p = put_attr(buf, p, NFQA_CFG_CMD, &cmd, sizeof cmd);
        (void)nl_send(q->fd, buf, (size_t)(p - buf));
        close(q->fd);
        q->fd = -1;
    }
    if (q->stamp_fd >= 0) {
        close(q->stamp_fd);
        q->stamp_fd = -1;
    }
    q->pending = 0;
    q->ndrops = 0;
    q->have_accept = 0;
}

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
