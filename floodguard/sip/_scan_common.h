/*
 * Byte-level helpers shared by the C scans (_scan.c for the guard, _index.c for the registrar):
 * character classes, spans, the method names, and the digest auth item scan.  Each module
 * includes its own copy (everything is static); init_classes() must run at module init.
 */
#ifndef FLOODGUARD_SCAN_COMMON_H
#define FLOODGUARD_SCAN_COMMON_H
#define HELPER static __attribute__((unused))
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#define MAX_MESSAGE 65536
#define MAX_HEADER_LINE 8192
#define MAX_HEADERS 128
#define MAX_CONTENT_LENGTH 65536
#define MAX_ITEMS 64
#define MAX_CSEQ 2147483647L

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
} span;

/* ------------------------------------------------------------------ small helpers */

/* Where the header block ends, given the blank line found after the last header line (hend:
 * the CRLF ending that line). A datagram ending in CRLF CRLF CRLF right after it: the parser
 * takes its header block to end at the last CRLF CRLF (see message._parse), one CRLF on. Only
 * then: any other two bytes after the blank line are a body. */
HELPER Py_ssize_t header_block_end(const unsigned char *d, Py_ssize_t n, Py_ssize_t hend) {
    if (hend == n - 6 && n <= MAX_MESSAGE && d[n - 2] == '\r' && d[n - 1] == '\n')
        return n - 4;
    return hend;
}

/* character classes */
#define C_TOKEN 1   /* RFC 3261 token character */
#define C_NAME_END 2  /* ends an auth item name: space, tab, '=', ',', '"' */
#define C_VALUE_END 4  /* ends an unquoted auth value: space, tab, ',', '"' */
#define C_BAD 8  /* not allowed in a scanned header block: controls but tab, and DEL */
#define C_TEXT 16  /* non-ASCII or a backslash: the parser's text scans are left to it */
static unsigned char cclass[256];

HELPER void init_cclass(void) {
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            (c && strchr("-.!%*_+`'~", c)))
            k |= C_TOKEN;
        if (c && strchr(" \t=,\"", c)) k |= C_NAME_END;
        if (c && strchr(" \t,\"", c)) k |= C_VALUE_END;
        if ((c < 0x20 && c != '\t') || c == 0x7f) k |= C_BAD;
        if (c >= 0x80 || c == '\\') k |= C_TEXT;
        cclass[c] = k;
    }
}

/* Does any of 8 bytes need a look (C_BAD or C_TEXT, or a tab)?  Word-at-a-time tests:
 * a byte below 0x20, with the high bit set, equal to DEL or equal to a backslash. */
HELPER inline int special8(const unsigned char *p) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t below = (x - ones * 0x20) & ~x & highs;
    uint64_t del = x ^ (ones * 0x7f), slash = x ^ (ones * '\\');
    uint64_t is_del = (del - ones) & ~del & highs, is_slash = (slash - ones) & ~slash & highs;
    return (below | (x & highs) | is_del | is_slash) != 0;
}

HELPER inline int is_ws(unsigned char c) { return c == ' ' || c == '\t'; }

/* bytes.strip() whitespace: space, \t, \n, \r, \v, \f */
HELPER inline int is_bws(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

HELPER span strip_bytes(span s) {
    while (s.n && is_bws(s.p[0])) { s.p++; s.n--; }
    while (s.n && is_bws(s.p[s.n - 1])) s.n--;
    return s;
}

HELPER inline unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

HELPER int ieq(span s, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)s.n != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(s.p[i]) != (unsigned char)lit[i]) return 0;
    return 1;
}

HELPER Py_ssize_t find(span s, Py_ssize_t from, unsigned char c) {
    if (from >= s.n) return -1;
    const unsigned char *hit = memchr(s.p + from, c, (size_t)(s.n - from));
    return hit ? hit - s.p : -1;
}

HELPER inline int is_token_char(unsigned char c) { return cclass[c] & C_TOKEN; }

HELPER int all_digits(span s) {
    if (!s.n) return 0;
    for (Py_ssize_t i = 0; i < s.n; i++)
        if (s.p[i] < '0' || s.p[i] > '9') return 0;
    return 1;
}

HELPER long to_long(span s) {
    long v = 0;
    for (Py_ssize_t i = 0; i < s.n; i++) v = v * 10 + (s.p[i] - '0');
    return v;
}

HELPER PyObject *text(span s) {  /* _text(): bytes.strip() then UTF-8 with replacement */
    s = strip_bytes(s);
    return PyUnicode_DecodeUTF8((const char *)s.p, s.n, "replace");
}

static PyObject *methods[16];
static const char *method_names[] = {
    "REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "SUBSCRIBE", "NOTIFY",
    "MESSAGE", "INFO", "UPDATE", "PRACK", "REFER", "PUBLISH", NULL,
};

/* An upper-cased token (method) as str, sharing the common ones. */
HELPER PyObject *method_str(span s) {
    char buf[32];
    if (s.n < (Py_ssize_t)sizeof buf) {
        for (Py_ssize_t i = 0; i < s.n; i++) {
            unsigned char c = s.p[i];
            buf[i] = (char)((c >= 'a' && c <= 'z') ? c - 32 : c);
        }
        buf[s.n] = 0;
        for (int i = 0; method_names[i]; i++)
            if (strcmp(buf, method_names[i]) == 0) {
                Py_INCREF(methods[i]);
                return methods[i];
            }
        return PyUnicode_FromStringAndSize(buf, s.n);
    }
    PyObject *raw = PyUnicode_DecodeASCII((const char *)s.p, s.n, NULL);
    if (!raw) return NULL;
    PyObject *up = PyObject_CallMethod(raw, "upper", NULL);
    Py_DECREF(raw);
    return up;
}

/* ------------------------------------------------------------------ digest headers */

typedef struct {
    span name;
    int eq;
    span value;
} auth_item;

/* fields.parse_auth_value() item scan (the _AUTH_ITEM_PLAIN regex under findall) for a value
 * without backslashes; returns the item count, or -1 over the item cap (declined). */
HELPER int auth_items(span v, auth_item *items) {
    int n = 0;
    Py_ssize_t i = 0;
    while (i < v.n) {
        unsigned char c = v.p[i];
        if (cclass[c] & C_NAME_END) {
            i++;
            continue;
        }
        if (n >= MAX_ITEMS) return -1;
        auth_item *it = &items[n++];
        Py_ssize_t start = i;
        while (i < v.n && !(cclass[v.p[i]] & C_NAME_END)) i++;
        it->name = (span){v.p + start, i - start};
        it->eq = 0;
        it->value = (span){v.p + i, 0};
        while (i < v.n && is_ws(v.p[i])) i++;
        if (i < v.n && v.p[i] == '=') {
            it->eq = 1;
            i++;
            while (i < v.n && is_ws(v.p[i])) i++;
            if (i < v.n && v.p[i] == '"') {
                Py_ssize_t q = find(v, i + 1, '"');
                Py_ssize_t end = q < 0 ? v.n : q;
                it->value = (span){v.p + i + 1, end - i - 1};
                i = q < 0 ? v.n : q + 1;
            } else {
                Py_ssize_t s = i;
                while (i < v.n && !(cclass[v.p[i]] & C_VALUE_END)) i++;
                it->value = (span){v.p + s, i - s};
            }
        }
    }
    return n;
}

/* One (scheme, params) group of an auth value: the items [from, to) after its scheme token. */
typedef struct {
    span scheme;
    int from, to;
} auth_group;

HELPER int auth_groups(const auth_item *items, int n, auth_group *groups) {
    int g = 0, open = 0;
    for (int i = 0; i < n; i++) {
        if (!items[i].eq) {
            if (open) groups[g - 1].to = i;
            groups[g].scheme = items[i].name;
            groups[g].from = i + 1;
            groups[g].to = n;
            g++;
            open = 1;
        } else if (!open) {
            groups[g].scheme = (span){items[i].name.p, 0};
            groups[g].from = i;
            groups[g].to = n;
            g++;
            open = 1;
        }
    }
    return g;
}

/* First value of a (case-insensitive) parameter within a group; NULL span.p when absent. */
HELPER span auth_param(const auth_item *items, const auth_group *g, const char *name) {
    for (int i = g->from; i < g->to; i++)
        if (items[i].eq && ieq(items[i].name, name)) return items[i].value;
    return (span){NULL, 0};
}

HELPER PyObject *opt_str(span s) {
    if (!s.p) Py_RETURN_NONE;
    return PyUnicode_DecodeASCII((const char *)s.p, s.n, NULL);
}

/* Module init: the character classes and the interned method names; -1 with an exception. */
HELPER int init_classes(void) {
    init_cclass();
    for (int i = 0; method_names[i]; i++) {
        methods[i] = PyUnicode_InternFromString(method_names[i]);
        if (!methods[i]) return -1;
    }
    return 0;
}

#endif
