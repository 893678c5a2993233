/*
 * floodguard.kernel._nfq (see _nfq.c): what the binding says to the kernel. The state of a
 * Queue and of one run(), the netlink messages it builds and sends (verdicts, batched; a packet
 * accepted with new content) and the queue configuration: bind with its ACK awaited, unbind.
 * One translation unit: _nfq.c includes this, then _nfq_packets.h.
 */
#ifndef FLOODGUARD_NFQ_NETLINK_H
#define FLOODGUARD_NFQ_NETLINK_H

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

static int handle_datagram(Queue *q, Run *run, int i);  /* _nfq_packets.h */

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

#endif
