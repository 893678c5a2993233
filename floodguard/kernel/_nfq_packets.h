/*
 * floodguard.kernel._nfq (see _nfq.c): the packets read from the kernel. Each netlink
 * datagram is walked message by message, each packet message attribute by attribute, and each
 * packet is handed to the callback for its verdict, with its arrival stamp set for now() and
 * arrival(). Included by _nfq.c after _nfq_netlink.h.
 */
#ifndef FLOODGUARD_NFQ_PACKETS_H
#define FLOODGUARD_NFQ_PACKETS_H

#include "_nfq_netlink.h"

static double current_arrival = 0.0;  /* the stamp of the packet being judged */
static double last_now = 0.0;         /* the latest value now() returned */

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

#endif
