/*
 * floodguard.sip._scan: the guard's per-packet fast path, IP header + SIP fields in one C pass.
 *
 * scan_packet(ip_packet) and scan_sip(sip_bytes) answer only for the common, unambiguous shape
 * of a packet and return None for anything else: the caller then runs the Python parsers
 * (floodguard.packet.parse_packet, floodguard.sip.message.parse_message), which stay the reference
 * and the only place that raises parse errors.  Whenever the scan answers, every field equals
 * what the Python parsers give for the same bytes; tests/unit/test_sip_scan.py checks that
 * difference-free on a corpus and on generated messages.
 *
 * Declined (None), among others: leading CR/LF, bare CR or LF in the header block, control
 * characters there, folded lines, compact header names, whitespace in a header name, empty
 * header values, lower-case "sip/2.0", repeated Contact/Authorization/challenge/Content-Length
 * headers, non-ASCII or backslashes in To/Contact/auth headers, over 64 list items, IPv4
 * fragments and options-bearing oddities the Python side handles, IPv6 extension headers.
 */
#include "_scan_common.h"

static PyTypeObject *ViewType;
static PyTypeObject *CredsType;
static PyTypeObject *ChallengeType;
static PyObject *str_udp, *str_tcp;

/* ------------------------------------------------------------------ list items */

/* One element of a comma/semicolon list.  With ``atomic`` as the parser's _COMMA_ITEMS and
 * _SEMI_ITEMS regexes see it (input without backslashes): quoted strings and <...> sections
 * may hold the separator, unterminated ones run to the end; without, a plain split.  Empty
 * elements are skipped.  *pos is advanced; returns 0 when no item is left. */
static int next_item(span s, Py_ssize_t *pos, unsigned char sep, int atomic, span *item) {
    Py_ssize_t i = *pos;
    while (i < s.n && s.p[i] == sep) i++;
    if (i >= s.n) {
        *pos = i;
        return 0;
    }
    Py_ssize_t start = i;
    while (i < s.n && s.p[i] != sep) {
        unsigned char c = s.p[i];
        if (!atomic) {
            i++;
        } else if (c == '"') {
            Py_ssize_t q = find(s, i + 1, '"');
            i = q < 0 ? s.n : q + 1;
        } else if (c == '<') {
            Py_ssize_t q = find(s, i + 1, '>');
            i = q < 0 ? s.n : q + 1;
        } else {
            i++;
        }
    }
    item->p = s.p + start;
    item->n = i - start;
    *pos = i;
    return 1;
}

static span strip_ws(span s) {  /* str.strip() for printable ASCII */
    while (s.n && is_ws(s.p[0])) { s.p++; s.n--; }
    while (s.n && is_ws(s.p[s.n - 1])) s.n--;
    return s;
}

/* _split_name_addr(): (uri, header parameters) of `"Name" <uri>;params` or `uri;params`. */
static void split_name_addr(span v, span *uri, span *params) {
    v = strip_ws(v);
    Py_ssize_t lt;
    if (v.n && v.p[0] == '"') {
        Py_ssize_t q = find(v, 1, '"');
        Py_ssize_t end = q < 0 ? v.n : q + 1;
        lt = find(v, end, '<');
    } else {
        lt = find(v, 0, '<');
        if (lt > 0) {
            span head = {v.p, lt};
            if (find(head, 0, ';') >= 0 || find(head, 0, '"') >= 0) lt = -1;
        }
    }
    if (lt >= 0) {
        Py_ssize_t gt = find(v, lt + 1, '>');
        if (gt < 0) {
            *uri = strip_ws((span){v.p + lt + 1, v.n - lt - 1});
            *params = (span){v.p + v.n, 0};
        } else {
            *uri = strip_ws((span){v.p + lt + 1, gt - lt - 1});
            *params = (span){v.p + gt + 1, v.n - gt - 1};
        }
        return;
    }
    Py_ssize_t semi = find(v, 0, ';');
    if (semi < 0) {
        *uri = strip_ws(v);
        *params = (span){v.p + v.n, 0};
    } else {
        *uri = strip_ws((span){v.p, semi});
        *params = (span){v.p + semi + 1, v.n - semi - 1};
    }
}

/* _uri_user_host() + SipMessage.aor: "user@host" (host lower-cased, no port), host alone,
 * or None.  -1 with an exception set on memory errors. */
static int aor_of(span uri, PyObject **out) {
    span rest = uri;
    if (uri.n >= 4 && (ieq((span){uri.p, 4}, "sip:") || ieq((span){uri.p, 4}, "tel:"))) {
        rest = (span){uri.p + 4, uri.n - 4};
    } else if (uri.n >= 5 && ieq((span){uri.p, 5}, "sips:")) {
        rest = (span){uri.p + 5, uri.n - 5};
    }
    span userinfo = {rest.p, 0}, host = rest;
    Py_ssize_t at = find(rest, 0, '@');
    if (at >= 0) {
        userinfo = (span){rest.p, at};
        host = (span){rest.p + at + 1, rest.n - at - 1};
    }
    Py_ssize_t close = (host.n && host.p[0] == '[') ? find(host, 0, ']') : -1;
    if (close >= 0) {
        host.n = close + 1;
    } else {
        for (Py_ssize_t i = 0; i < host.n; i++)
            if (host.p[i] == ':' || host.p[i] == ';' || host.p[i] == '?') {
                host.n = i;
                break;
            }
    }
    span user = userinfo;
    Py_ssize_t colon = find(user, 0, ':');
    if (colon >= 0) user.n = colon;
    host = strip_ws(host);
    if (!host.n) {
        *out = NULL;
        return 0;
    }
    char stack[512];
    Py_ssize_t total = host.n + (user.n ? user.n + 1 : 0);
    char *buf = total <= (Py_ssize_t)sizeof stack ? stack : PyMem_Malloc((size_t)total);
    if (!buf) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t k = 0;
    if (user.n) {
        memcpy(buf, user.p, (size_t)user.n);
        k = user.n;
        buf[k++] = '@';
    }
    for (Py_ssize_t i = 0; i < host.n; i++) buf[k++] = (char)lower(host.p[i]);
    *out = PyUnicode_DecodeASCII(buf, k, NULL);
    if (buf != stack) PyMem_Free(buf);
    return *out ? 1 : -1;
}

/* The "expires" parameter of a Contact item's header parameters, as _to_uint() reads it:
 * -1 when absent or not a plain number.  Declines (returns -2) on a parameter list that
 * could reach the parser's item cap. */
static long contact_expires(span params) {
    Py_ssize_t pos = 0, semis = 0;
    span item;
    for (Py_ssize_t i = 0; i < params.n; i++) semis += params.p[i] == ';';
    if (semis >= MAX_ITEMS) return -2;
    /* _parse_params(): a plain split unless there is a quote */
    int atomic = find(params, 0, '"') >= 0;
    while (next_item(params, &pos, ';', atomic, &item)) {
        Py_ssize_t eq = find(item, 0, '=');
        span name = strip_ws((span){item.p, eq < 0 ? item.n : eq});
        if (!name.n) continue;
        if (!ieq(name, "expires")) continue;  /* the first "expires" wins */
        if (eq < 0) return -1;
        span value = strip_ws((span){item.p + eq + 1, item.n - eq - 1});
        if (value.n && value.p[0] == '"') {
            if (value.n >= 2 && value.p[value.n - 1] == '"')
                value = (span){value.p + 1, value.n - 2};
            else
                value = (span){value.p + 1, value.n - 1};
        }
        value = strip_ws(value);
        if (!all_digits(value) || value.n > 10) return -1;
        return to_long(value);
    }
    return -1;
}


/* Results are small read-only records (fields by name, no tuple behaviour): cheaper to build
 * than struct sequences, and never part of a reference cycle, so not tracked by the GC. */
typedef struct {
    PyObject_HEAD
    PyObject *f[11];
} record;

static Py_ssize_t record_size(PyTypeObject *type) {
    return (type->tp_basicsize - (Py_ssize_t)offsetof(record, f)) / (Py_ssize_t)sizeof(PyObject *);
}

static void record_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    Py_ssize_t n = record_size(type);
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(((record *)self)->f[i]);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *record_repr(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    Py_ssize_t n = record_size(type);
    PyObject *parts = PyList_New(0);
    if (!parts) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyUnicode_FromFormat("%s=%R", type->tp_members[i].name,
                                              ((record *)self)->f[i]);
        if (!item || PyList_Append(parts, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(item);
    }
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *inner = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    if (!inner) return NULL;
    const char *dot = strrchr(type->tp_name, '.');
    PyObject *out = PyUnicode_FromFormat("%s(%U)", dot ? dot + 1 : type->tp_name, inner);
    Py_DECREF(inner);
    return out;
}

/* Steals the references in values (also on failure). */
static PyObject *new_struct(PyTypeObject *type, PyObject **values, int n) {
    for (int i = 0; i < n; i++)
        if (!values[i]) {
            for (int j = 0; j < n; j++) Py_XDECREF(values[j]);
            return NULL;
        }
    record *obj = PyObject_New(record, type);
    if (!obj) {
        for (int i = 0; i < n; i++) Py_DECREF(values[i]);
        return NULL;
    }
    memcpy(obj->f, values, (size_t)n * sizeof(PyObject *));
    return (PyObject *)obj;
}

static PyObject *group_creds(const auth_item *items, const auth_group *g) {
    PyObject *v[3] = {
        PyUnicode_DecodeASCII((const char *)g->scheme.p, g->scheme.n, NULL),
        opt_str(auth_param(items, g, "username")),
        opt_str(auth_param(items, g, "nonce")),
    };
    return new_struct(CredsType, v, 3);
}

/* SipMessage.authorization: the first Digest credentials of Authorization, then of
 * Proxy-Authorization, else the first credentials of any scheme, else None.
 * 0 = declined. */
static int credentials(span *values, int nvalues, PyObject **out) {
    auth_item items[MAX_ITEMS];
    auth_group groups[MAX_ITEMS];
    PyObject *first = NULL;
    for (int k = 0; k < nvalues; k++) {
        if (!values[k].p) continue;
        span v = strip_bytes(values[k]);
        int n = auth_items(v, items);
        if (n < 0) {
            Py_XDECREF(first);
            return 0;
        }
        int g = auth_groups(items, n, groups);
        for (int i = 0; i < g; i++) {
            if (ieq(groups[i].scheme, "digest")) {
                Py_XDECREF(first);
                *out = group_creds(items, &groups[i]);
                return *out ? 1 : -1;
            }
            if (!first) {
                first = group_creds(items, &groups[i]);
                if (!first) return -1;
            }
        }
    }
    if (first) {
        *out = first;
    } else {
        Py_INCREF(Py_None);
        *out = Py_None;
    }
    return 1;
}

/* SipMessage.challenges: every challenge of WWW-Authenticate then Proxy-Authenticate. */
static int challenges(span *values, int nvalues, PyObject **out) {
    auth_item items[MAX_ITEMS];
    auth_group groups[MAX_ITEMS];
    PyObject *list = PyList_New(0);
    if (!list) return -1;
    for (int k = 0; k < nvalues; k++) {
        if (!values[k].p) continue;
        span v = strip_bytes(values[k]);
        int n = auth_items(v, items);
        if (n < 0) {
            Py_DECREF(list);
            return 0;
        }
        int g = auth_groups(items, n, groups);
        for (int i = 0; i < g; i++) {
            span stale = auth_param(items, &groups[i], "stale");
            PyObject *is_stale = (stale.p && ieq(stale, "true")) ? Py_True : Py_False;
            Py_INCREF(is_stale);
            PyObject *vals[3] = {
                PyUnicode_DecodeASCII((const char *)groups[i].scheme.p, groups[i].scheme.n,
                                      NULL),
                opt_str(auth_param(items, &groups[i], "nonce")),
                is_stale,
            };
            PyObject *ch = new_struct(ChallengeType, vals, 3);
            if (!ch || PyList_Append(list, ch) < 0) {
                Py_XDECREF(ch);
                Py_DECREF(list);
                return -1;
            }
            Py_DECREF(ch);
        }
    }
    *out = PyList_AsTuple(list);
    Py_DECREF(list);
    return *out ? 1 : -1;
}

/* ------------------------------------------------------------------ the message */

enum {
    H_CALL_ID, H_CSEQ, H_TO, H_USER_AGENT, H_EXPIRES, H_CONTACT, H_AUTHORIZATION,
    H_PROXY_AUTHORIZATION, H_WWW_AUTHENTICATE, H_PROXY_AUTHENTICATE, H_CONTENT_LENGTH, H_COUNT
};
static const char *header_names[H_COUNT] = {
    "call-id", "cseq", "to", "user-agent", "expires", "contact", "authorization",
    "proxy-authorization", "www-authenticate", "proxy-authenticate", "content-length",
};
/* Headers whose every value counts: a repeat is left to the Python parser. */
static const int header_multi[H_COUNT] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
static const char *compact_letters = "abcdefijklmnorstuvxy";

static unsigned char header_lengths[H_COUNT];

static int header_index(span name) {
    unsigned char first = lower(name.p[0]);
    for (int h = 0; h < H_COUNT; h++)
        if (name.n == header_lengths[h] && first == (unsigned char)header_names[h][0] &&
            ieq(name, header_names[h]))
            return h;
    return -1;
}

/* 1 = view built, 0 = declined, -1 = exception. */
static int scan_message(const unsigned char *d, Py_ssize_t n, PyObject **out) {
    if (n < 1 || n > MAX_MESSAGE) return 0;
    unsigned char c0 = d[0];
    if (!((c0 >= 'A' && c0 <= 'Z') || (c0 >= 'a' && c0 <= 'z'))) return 0;
    /* One pass over the header block: lines end in CRLF, the block at the first empty line.
     * Any other control character (a bare CR or LF included) declines. */
    span headers[H_COUNT];
    int plain[H_COUNT];
    memset(headers, 0, sizeof headers);
    span start = {0};
    int lines = 0;
    Py_ssize_t pos = 0, hend = -1;
    while (pos < n) {
        Py_ssize_t i = pos;
        int text_ok = 1;  /* no non-ASCII byte or backslash: the line's text can be scanned */
        for (;;) {
            while (i + 8 <= n && !special8(d + i)) i += 8;
            Py_ssize_t stop = i + 8 < n ? i + 8 : n;
            for (; i < stop; i++) {
                unsigned char k = cclass[d[i]];
                if (k & C_BAD) break;
                if (k & C_TEXT) text_ok = 0;
            }
            if (i < stop || i >= n) break;
        }
        if (i + 1 >= n || d[i] != '\r' || d[i + 1] != '\n') return 0;
        if (i == pos) {  /* the empty line */
            if (!lines) return 0;
            hend = header_block_end(d, n, pos - 2);
            break;
        }
        span line = {d + pos, i - pos};
        if (line.n > MAX_HEADER_LINE) return 0;
        if (++lines > MAX_HEADERS + 1) return 0;
        if (lines == 1) {
            start = line;
        } else {
            if (is_ws(line.p[0])) return 0;  /* folded */
            Py_ssize_t colon = find(line, 0, ':');
            if (colon <= 0 || colon == line.n - 1) return 0;
            span name = {line.p, colon};
            for (Py_ssize_t j = 0; j < name.n; j++)
                if (is_ws(name.p[j])) return 0;
            if (name.n == 1 && strchr(compact_letters, lower(name.p[0]))) return 0;
            int h = header_index(name);
            if (h >= 0) {
                if (headers[h].p) {
                    if (header_multi[h]) return 0;
                } else {
                    headers[h] = (span){line.p + colon + 1, line.n - colon - 1};
                    plain[h] = text_ok;
                }
            }
        }
        pos = i + 2;
    }
    if (hend < 0) return 0;

    /* start line */
    int is_request;
    long status = 0;
    span method = {0};
    if (start.n >= 4 && (start.p[0] == 'S' || start.p[0] == 's') &&
        ieq((span){start.p, 4}, "sip/")) {
        if (start.n < 11 || memcmp(start.p, "SIP/2.0 ", 8) != 0) return 0;
        span code = {start.p + 8, 3};
        if (!all_digits(code) || code.p[0] < '1' || code.p[0] > '6') return 0;
        if (start.n > 11 && start.p[11] != ' ') return 0;
        status = to_long(code);
        is_request = 0;
    } else {
        Py_ssize_t sp1 = find(start, 0, ' ');
        if (sp1 <= 0) return 0;
        Py_ssize_t sp2 = find(start, sp1 + 1, ' ');
        if (sp2 < 0 || sp2 == sp1 + 1) return 0;
        if (find(start, sp2 + 1, ' ') >= 0) return 0;
        span version = {start.p + sp2 + 1, start.n - sp2 - 1};
        if (version.n != 7 || memcmp(version.p, "SIP/2.0", 7) != 0) return 0;
        method = (span){start.p, sp1};
        for (Py_ssize_t i = 0; i < method.n; i++)
            if (!is_token_char(method.p[i])) return 0;
        is_request = 1;
    }

    /* Content-Length and the extent of the message (datagram semantics) */
    Py_ssize_t body_start = hend + 4, end = n;
    if (headers[H_CONTENT_LENGTH].p) {
        span raw = strip_bytes(headers[H_CONTENT_LENGTH]);
        if (!all_digits(raw) || raw.n > 6) return 0;
        long clen = to_long(raw);
        if (clen > MAX_CONTENT_LENGTH) return 0;
        end = body_start + clen;
        if (end > n || end > MAX_MESSAGE) return 0;
    }

    /* CSeq */
    long cseq_num = -1;
    span cseq_method = {0};
    if (headers[H_CSEQ].p) {
        span raw = headers[H_CSEQ];
        Py_ssize_t i = 0;
        span parts[2];
        int count = 0;
        while (i < raw.n) {
            while (i < raw.n && is_bws(raw.p[i])) i++;
            if (i >= raw.n) break;
            Py_ssize_t s = i;
            while (i < raw.n && !is_bws(raw.p[i])) i++;
            if (count == 2) return 0;
            parts[count++] = (span){raw.p + s, i - s};
        }
        if (count != 2 || !all_digits(parts[0]) || parts[0].n > 10) return 0;
        for (Py_ssize_t k = 0; k < parts[1].n; k++)
            if (!is_token_char(parts[1].p[k])) return 0;
        cseq_num = to_long(parts[0]);
        if (cseq_num > MAX_CSEQ) return 0;
        cseq_method = parts[1];
    }

    /* the text-scanned headers must be plain ASCII */
    static const int checked[] = {H_TO, H_CONTACT, H_AUTHORIZATION, H_PROXY_AUTHORIZATION,
                                  H_WWW_AUTHENTICATE, H_PROXY_AUTHENTICATE};
    for (size_t k = 0; k < sizeof checked / sizeof checked[0]; k++)
        if (headers[checked[k]].p && !plain[checked[k]]) return 0;

    /* granted_expires: the largest Contact "expires", else the Expires header */
    long granted = -1;
    if (headers[H_CONTACT].p) {
        span value = strip_bytes(headers[H_CONTACT]);
        Py_ssize_t p = 0;
        span item;
        int count = 0;
        int commas = find(value, 0, ',') >= 0;
        while (commas ? next_item(value, &p, ',', 1, &item) : (p == 0 && value.n)) {
            if (!commas) {
                item = value;
                p = value.n;
            }
            if (++count > MAX_ITEMS) return 0;
            item = strip_ws(item);
            if (!item.n) continue;
            if (item.n == 1 && item.p[0] == '*') continue;
            span uri, params;
            split_name_addr(item, &uri, &params);
            long e = contact_expires(params);
            if (e == -2) return 0;
            if (e > granted) granted = e;
        }
    }
    if (granted < 0 && headers[H_EXPIRES].p) {
        span raw = strip_bytes(headers[H_EXPIRES]);
        if (all_digits(raw) && raw.n <= 10) granted = to_long(raw);
    }

    /* digest headers (declines leave nothing allocated) */
    PyObject *auth = NULL, *chall = NULL;
    span auth_values[2] = {headers[H_AUTHORIZATION], headers[H_PROXY_AUTHORIZATION]};
    int rc = credentials(auth_values, 2, &auth);
    if (rc <= 0) return rc;
    span chall_values[2] = {headers[H_WWW_AUTHENTICATE], headers[H_PROXY_AUTHENTICATE]};
    rc = challenges(chall_values, 2, &chall);
    if (rc <= 0) {
        Py_DECREF(auth);
        return rc;
    }

    PyObject *aor = NULL;
    if (headers[H_TO].p) {
        span value = strip_bytes(headers[H_TO]);
        if (value.n) {
            span uri, params;
            split_name_addr(value, &uri, &params);
            if (uri.n && aor_of(uri, &aor) < 0) {
                Py_DECREF(auth);
                Py_DECREF(chall);
                return -1;
            }
        }
    }
    if (!aor) {
        Py_INCREF(Py_None);
        aor = Py_None;
    }

    PyObject *none = Py_None;
    PyObject *v[11];
    v[0] = PyBool_FromLong(is_request);
    if (is_request) {
        v[1] = method_str(method);
        Py_INCREF(none);
        v[2] = none;
    } else {
        Py_INCREF(none);
        v[1] = none;
        v[2] = PyLong_FromLong(status);
    }
    if (headers[H_CALL_ID].p) {
        v[3] = text(headers[H_CALL_ID]);
    } else {
        Py_INCREF(none);
        v[3] = none;
    }
    if (cseq_method.p) {
        v[4] = PyLong_FromLong(cseq_num);
        v[5] = method_str(cseq_method);
    } else {
        Py_INCREF(none);
        Py_INCREF(none);
        v[4] = none;
        v[5] = none;
    }
    v[6] = aor;
    if (headers[H_USER_AGENT].p) {
        v[7] = text(headers[H_USER_AGENT]);
    } else {
        Py_INCREF(none);
        v[7] = none;
    }
    v[8] = auth;
    v[9] = chall;
    if (granted >= 0) {
        v[10] = PyLong_FromLong(granted);
    } else {
        Py_INCREF(none);
        v[10] = none;
    }
    *out = new_struct(ViewType, v, 11);
    return *out ? 1 : -1;
}

static PyObject *scan_sip(PyObject *Py_UNUSED(module), PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "scan_sip needs bytes, got %.80s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    PyObject *view = NULL;
    int rc = scan_message((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg),
                          &view);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    return view;
}

/* ------------------------------------------------------------------ the IP packet */

static PyObject *address(int family, const unsigned char *raw) {
    char buf[INET6_ADDRSTRLEN];
    if (family == AF_INET) {  /* glibc formats IPv4 through sprintf: slow */
        int k = 0;
        for (int i = 0; i < 4; i++) {
            unsigned v = raw[i];
            if (v >= 100) buf[k++] = (char)('0' + v / 100);
            if (v >= 10) buf[k++] = (char)('0' + v / 10 % 10);
            buf[k++] = (char)('0' + v % 10);
            if (i < 3) buf[k++] = '.';
        }
        return PyUnicode_DecodeASCII(buf, k, NULL);
    }
    if (!inet_ntop(family, raw, buf, sizeof buf)) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    return PyUnicode_FromString(buf);
}

/* scan_packet(ip) -> (src, dst, proto, sport, dport, view) | None */
static PyObject *scan_packet(PyObject *Py_UNUSED(module), PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "scan_packet needs bytes, got %.80s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    int family;
    Py_ssize_t off, end;
    unsigned proto;
    const unsigned char *src, *dst;
    if (n >= 20 && (d[0] >> 4) == 4) {
        Py_ssize_t ihl = (d[0] & 0x0f) * 4;
        Py_ssize_t total = (d[2] << 8) | d[3];
        if (ihl < 20 || total < ihl || total > n) Py_RETURN_NONE;
        if ((d[6] & 0x3f) || d[7]) Py_RETURN_NONE;  /* any fragment: the Python path */
        family = AF_INET;
        proto = d[9];
        src = d + 12;
        dst = d + 16;
        off = ihl;
        end = total;
    } else if (n >= 40 && (d[0] >> 4) == 6) {
        end = 40 + ((d[4] << 8) | d[5]);
        if (end > n || end == 40) Py_RETURN_NONE;
        family = AF_INET6;
        proto = d[6];
        src = d + 8;
        dst = d + 24;
        off = 40;
    } else {
        Py_RETURN_NONE;
    }
    Py_ssize_t data, data_end;
    PyObject *proto_name;
    if (proto == 17) {
        if (end - off < 8) Py_RETURN_NONE;
        Py_ssize_t length = (d[off + 4] << 8) | d[off + 5];
        if (length < 8 || off + length > end) Py_RETURN_NONE;
        data = off + 8;
        data_end = off + length;
        proto_name = str_udp;
    } else if (proto == 6) {
        if (end - off < 20) Py_RETURN_NONE;
        Py_ssize_t doff = (d[off + 12] >> 4) * 4;
        if (doff < 20 || off + doff > end) Py_RETURN_NONE;
        data = off + doff;
        data_end = end;
        proto_name = str_tcp;
    } else {
        Py_RETURN_NONE;
    }
    if (data_end <= data) Py_RETURN_NONE;
    PyObject *view = NULL;
    int rc = scan_message(d + data, data_end - data, &view);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    PyObject *s = address(family, src), *t = address(family, dst);
    if (!s || !t) {
        Py_XDECREF(s);
        Py_XDECREF(t);
        Py_DECREF(view);
        return NULL;
    }
    PyObject *out = PyTuple_New(6);
    PyObject *sport = PyLong_FromLong((d[off] << 8) | d[off + 1]);
    PyObject *dport = PyLong_FromLong((d[off + 2] << 8) | d[off + 3]);
    if (!out || !sport || !dport) {
        Py_XDECREF(out);
        Py_XDECREF(sport);
        Py_XDECREF(dport);
        Py_DECREF(s);
        Py_DECREF(t);
        Py_DECREF(view);
        return NULL;
    }
    Py_INCREF(proto_name);
    PyTuple_SET_ITEM(out, 0, s);
    PyTuple_SET_ITEM(out, 1, t);
    PyTuple_SET_ITEM(out, 2, proto_name);
    PyTuple_SET_ITEM(out, 3, sport);
    PyTuple_SET_ITEM(out, 4, dport);
    PyTuple_SET_ITEM(out, 5, view);
    return out;
}

/* ------------------------------------------------------------------ module */

#define FIELD(i, name) {name, T_OBJECT, offsetof(record, f) + (i) * sizeof(PyObject *), READONLY, NULL}
static PyMemberDef view_members[] = {
    FIELD(0, "is_request"), FIELD(1, "method"), FIELD(2, "status"), FIELD(3, "call_id"),
    FIELD(4, "cseq_num"), FIELD(5, "cseq_method"), FIELD(6, "aor"), FIELD(7, "user_agent"),
    FIELD(8, "authorization"), FIELD(9, "challenges"), FIELD(10, "granted_expires"), {NULL},
};
static PyMemberDef creds_members[] = {
    FIELD(0, "scheme"), FIELD(1, "username"), FIELD(2, "nonce"), {NULL},
};
static PyMemberDef challenge_members[] = {
    FIELD(0, "scheme"), FIELD(1, "nonce"), FIELD(2, "stale"), {NULL},
};

static PyTypeObject *record_type(const char *name, const char *doc, PyMemberDef *members,
                                 int n) {
    PyType_Slot slots[] = {
        {Py_tp_dealloc, record_dealloc}, {Py_tp_repr, record_repr},
        {Py_tp_members, members}, {Py_tp_doc, (void *)doc}, {0, NULL},
    };
    PyType_Spec spec = {
        name, (int)(offsetof(record, f) + (size_t)n * sizeof(PyObject *)), 0,
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
        slots,
    };
    return (PyTypeObject *)PyType_FromSpec(&spec);
}

static PyMethodDef scan_methods[] = {
    {"scan_packet", scan_packet, METH_O,
     "scan_packet(ip: bytes) -> (src, dst, proto, sport, dport, SipView) | None"},
    {"scan_sip", scan_sip, METH_O, "scan_sip(data: bytes) -> SipView | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT, "_scan", "Fast path of the guard's packet and SIP parsing.", -1,
    scan_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) {
    PyObject *m = PyModule_Create(&scan_module);
    if (!m) return NULL;
    if (init_classes() < 0) goto fail;
    for (int h = 0; h < H_COUNT; h++) header_lengths[h] = (unsigned char)strlen(header_names[h]);
    ViewType = record_type(
        "floodguard.sip._scan.SipView",
        "The fields of a SIP message the policy engine reads (see floodguard.sip.message).",
        view_members, 11);
    CredsType = record_type("floodguard.sip._scan.Credentials",
                            "Authorization credentials: scheme, username, nonce.",
                            creds_members, 3);
    ChallengeType = record_type("floodguard.sip._scan.Challenge",
                                "One WWW-/Proxy-Authenticate challenge: scheme, nonce, stale.",
                                challenge_members, 3);
    str_udp = PyUnicode_InternFromString("udp");
    str_tcp = PyUnicode_InternFromString("tcp");
    if (!ViewType || !CredsType || !ChallengeType || !str_udp || !str_tcp) goto fail;
    if (PyModule_AddObjectRef(m, "SipView", (PyObject *)ViewType) < 0 ||
        PyModule_AddObjectRef(m, "Credentials", (PyObject *)CredsType) < 0 ||
        PyModule_AddObjectRef(m, "Challenge", (PyObject *)ChallengeType) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
