/*
 * floodguard.sip._index: the C fast path of floodguard.sip.message.parse_message.
 *
 * index_message(data, stream) does what the parser's _parse does for the common shape of a
 * message and returns the pieces SipMessage is built from: (first, multi, method, request_uri,
 * status, reason, cseq_num, cseq_method, content_length, body, length), where `first` maps each lower-cased header name to its first raw value, `multi` (None unless a
 * header repeats) to all of them in order.  auth_params(value) splits one Authorization
 * or WWW-Authenticate value into (scheme, params) pairs as fields.parse_auth_value does.
 *
 * Both answer only where the result is certain to equal the Python code's and return None for
 * everything else, which the Python code then handles (and rejects with its own errors): leading
 * CR/LF, any control character in the header block (a bare CR or LF included), folded lines,
 * compact header names, a repeated Content-Length, whitespace in a header name, a line without a colon or with
 * an empty value, a start line other than "METHOD uri SIP/2.0" or "SIP/2.0 code[ reason]",
 * anything the parser would reject (Content-Length, CSeq, sizes), and for auth_params non-ASCII
 * bytes, backslashes or over 64 items.  tests/unit/test_sip_index.py checks the equality.
 */
#include "_scan_common.h"

static const char *compact_letters = "abcdefijklmnorstuvxy";

/* 1 = built, 0 = declined, -1 = exception */
static int index_message(const unsigned char *d, Py_ssize_t n, int stream, PyObject **out) {
    if (n < 1) return 0;
    unsigned char c0 = d[0];
    if (!((c0 >= 'A' && c0 <= 'Z') || (c0 >= 'a' && c0 <= 'z'))) return 0;
    PyObject *first = PyDict_New();
    if (!first) return -1;
    span start = {0}, clen_raw = {0}, cseq_raw = {0};
    span fields[MAX_HEADERS + 1];  /* each header line, and where its colon is */
    Py_ssize_t colons[MAX_HEADERS + 1];
    int lines = 0, repeated = 0;
    int rc = 0;  /* 1 = built, 0 = declined, -1 = exception */
    PyObject *multi = NULL, *method = NULL, *uri = NULL, *status = NULL, *reason = NULL;
    PyObject *cseq_num = NULL, *cseq_method = NULL, *clen = NULL, *body = NULL, *length = NULL;
    Py_ssize_t pos = 0, hend = -1;
    char key[64];
    while (pos < n) {
        Py_ssize_t i = pos;
        for (;;) {  /* to the first control character */
            while (i + 8 <= n && !special8(d + i)) i += 8;
            Py_ssize_t stop = i + 8 < n ? i + 8 : n;
            for (; i < stop; i++)
                if (cclass[d[i]] & C_BAD) break;
            if (i < stop || i >= n) break;
        }
        if (i + 1 >= n || d[i] != '\r' || d[i + 1] != '\n') goto decline;
        if (i == pos) {  /* the empty line */
            if (!lines) goto decline;
            hend = header_block_end(d, n, pos - 2);
            break;
        }
        span line = {d + pos, i - pos};
        if (line.n > MAX_HEADER_LINE || ++lines > MAX_HEADERS + 1) goto decline;
        if (lines == 1) {
            start = line;
        } else {
            Py_ssize_t colon = find(line, 0, ':');
            if (colon <= 0 || colon == line.n - 1) goto decline;
            if (colon == 1 && strchr(compact_letters, lower(line.p[0]))) goto decline;
            PyObject *name;
            if (colon <= (Py_ssize_t)sizeof key) {
                for (Py_ssize_t j = 0; j < colon; j++) {
                    if (is_ws(line.p[j])) goto decline;
                    key[j] = (char)lower(line.p[j]);
                }
                name = PyBytes_FromStringAndSize(key, colon);
            } else {
                name = PyBytes_FromStringAndSize(NULL, colon);
                if (name) {
                    char *k = PyBytes_AS_STRING(name);
                    for (Py_ssize_t j = 0; j < colon; j++) {
                        if (is_ws(line.p[j])) {
                            Py_DECREF(name);
                            goto decline;
                        }
                        k[j] = (char)lower(line.p[j]);
                    }
                }
            }
            if (!name) goto fail;
            span value = {line.p + colon + 1, line.n - colon - 1};
            PyObject *raw = PyBytes_FromStringAndSize((const char *)value.p, value.n);
            Py_ssize_t before = PyDict_GET_SIZE(first);
            /* the first value of a repeated header stays */
            int ok = raw && PyDict_SetDefault(first, name, raw);
            Py_DECREF(name);
            Py_XDECREF(raw);
            if (!ok) goto fail;
            fields[lines - 2] = line;
            colons[lines - 2] = colon;
            int is_clen = colon == 14 && memcmp(key, "content-length", 14) == 0;
            if (PyDict_GET_SIZE(first) == before) {
                if (is_clen) goto decline;  /* the parser compares the values */
                repeated = 1;
            } else if (is_clen) {
                clen_raw = value;
            } else if (colon == 4 && memcmp(key, "cseq", 4) == 0) {
                cseq_raw = value;
            }
        }
        pos = i + 2;
    }
    if (hend < 0 || hend + 4 > MAX_MESSAGE) goto decline;
    if (repeated) {  /* every value of every header, in order, as _index_headers_slow has them */
        multi = PyDict_New();
        if (!multi) goto fail;
        for (int k = 0; k < lines - 1; k++) {
            PyObject *name = PyBytes_FromStringAndSize(NULL, colons[k]);
            if (!name) goto fail;
            char *kb = PyBytes_AS_STRING(name);
            for (Py_ssize_t j = 0; j < colons[k]; j++) kb[j] = (char)lower(fields[k].p[j]);
            PyObject *list = PyDict_GetItemWithError(multi, name);
            if (!list) {
                list = PyErr_Occurred() ? NULL : PyList_New(0);
                if (!list || PyDict_SetItem(multi, name, list) < 0) {
                    Py_XDECREF(list);
                    Py_DECREF(name);
                    goto fail;
                }
                Py_DECREF(list);  /* the dict holds it */
            }
            Py_DECREF(name);
            PyObject *raw = PyBytes_FromStringAndSize((const char *)fields[k].p + colons[k] + 1,
                                                      fields[k].n - colons[k] - 1);
            if (!raw || PyList_Append(list, raw) < 0) {
                Py_XDECREF(raw);
                goto fail;
            }
            Py_DECREF(raw);
        }
    } else {
        multi = Py_None;
        Py_INCREF(multi);
    }

    /* start line */
    if (start.n >= 4 && ieq((span){start.p, 4}, "sip/")) {
        if (start.n < 11 || memcmp(start.p, "SIP/2.0 ", 8) != 0) goto decline;
        span code = {start.p + 8, 3};
        if (!all_digits(code) || code.p[0] < '1' || code.p[0] > '6') goto decline;
        if (start.n > 11 && start.p[11] != ' ') goto decline;
        status = PyLong_FromLong(to_long(code));
        reason = start.n > 12
            ? PyUnicode_DecodeUTF8((const char *)start.p + 12, start.n - 12, "replace")
            : PyUnicode_FromStringAndSize("", 0);
        method = Py_None;
        uri = Py_None;
        Py_INCREF(method);
        Py_INCREF(uri);
    } else {
        Py_ssize_t sp1 = find(start, 0, ' ');
        if (sp1 <= 0) goto decline;
        Py_ssize_t sp2 = find(start, sp1 + 1, ' ');
        if (sp2 < 0 || sp2 == sp1 + 1) goto decline;
        if (find(start, sp2 + 1, ' ') >= 0) goto decline;
        span version = {start.p + sp2 + 1, start.n - sp2 - 1};
        if (version.n != 7 || memcmp(version.p, "SIP/2.0", 7) != 0) goto decline;
        span name = {start.p, sp1};
        for (Py_ssize_t i = 0; i < name.n; i++)
            if (!is_token_char(name.p[i])) goto decline;
        method = method_str(name);
        uri = PyUnicode_DecodeUTF8((const char *)start.p + sp1 + 1, sp2 - sp1 - 1, "replace");
        status = Py_None;
        reason = Py_None;
        Py_INCREF(status);
        Py_INCREF(reason);
    }
    if (!method || !uri || !status || !reason) goto fail;

    Py_ssize_t body_start = hend + 4, end = stream ? body_start : n;
    if (clen_raw.p) {
        span raw = strip_bytes(clen_raw);
        if (!all_digits(raw) || raw.n > 6) goto decline;
        long value = to_long(raw);
        if (value > MAX_CONTENT_LENGTH) goto decline;
        end = body_start + value;
        clen = PyLong_FromLong(value);
        if (!clen) goto fail;
    }
    if (end > MAX_MESSAGE || end > n) goto decline;

    if (cseq_raw.p) {  /* bytes.split(): exactly two whitespace-separated parts */
        span raw = cseq_raw, parts[2];
        Py_ssize_t i = 0;
        int count = 0;
        while (i < raw.n) {
            while (i < raw.n && is_bws(raw.p[i])) i++;
            if (i >= raw.n) break;
            Py_ssize_t s = i;
            while (i < raw.n && !is_bws(raw.p[i])) i++;
            if (count == 2) goto decline;
            parts[count++] = (span){raw.p + s, i - s};
        }
        if (count != 2 || !all_digits(parts[0]) || parts[0].n > 10) goto decline;
        for (Py_ssize_t k = 0; k < parts[1].n; k++)
            if (!is_token_char(parts[1].p[k])) goto decline;
        long num = to_long(parts[0]);
        if (num > MAX_CSEQ) goto decline;
        cseq_num = PyLong_FromLong(num);
        cseq_method = method_str(parts[1]);
        if (!cseq_num || !cseq_method) goto fail;
    }
    body = PyBytes_FromStringAndSize(end > body_start ? (const char *)d + body_start : NULL,
                                     end > body_start ? end - body_start : 0);
    length = body ? PyLong_FromSsize_t(end) : NULL;
    if (!length) goto fail;
    *out = PyTuple_Pack(11, first, multi, method, uri, status, reason,
                        cseq_num ? cseq_num : Py_None, cseq_method ? cseq_method : Py_None,
                        clen ? clen : Py_None, body, length);
    rc = *out ? 1 : -1;
    goto decline;  /* the references the tuple took are released alike */
fail:
    rc = -1;
decline:
    Py_XDECREF(length);
    Py_XDECREF(body);
    Py_XDECREF(clen);
    Py_XDECREF(cseq_method);
    Py_XDECREF(cseq_num);
    Py_XDECREF(reason);
    Py_XDECREF(status);
    Py_XDECREF(uri);
    Py_XDECREF(method);
    Py_XDECREF(multi);
    Py_DECREF(first);
    return rc;
}

static PyObject *py_index_message(PyObject *Py_UNUSED(module), PyObject *const *args,
                                  Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "index_message(data: bytes, stream: bool)");
        return NULL;
    }
    int stream = PyObject_IsTrue(args[1]);
    if (stream < 0) return NULL;
    PyObject *out = NULL;
    int rc = index_message((const unsigned char *)PyBytes_AS_STRING(args[0]),
                           PyBytes_GET_SIZE(args[0]), stream, &out);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    return out;
}

/* fields.parse_auth_value(decode_value(value)) for plain ASCII without backslashes. */
static PyObject *auth_params(PyObject *Py_UNUSED(module), PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "auth_params needs bytes, got %.80s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    span v = strip_bytes((span){(const unsigned char *)PyBytes_AS_STRING(arg),
                                PyBytes_GET_SIZE(arg)});
    for (Py_ssize_t i = 0; i < v.n; i++)
        if (cclass[v.p[i]] & (C_TEXT | C_BAD)) Py_RETURN_NONE;
    auth_item items[MAX_ITEMS];
    auth_group groups[MAX_ITEMS];
    int n = auth_items(v, items);
    if (n < 0) Py_RETURN_NONE;
    int g = auth_groups(items, n, groups);
    PyObject *result = PyList_New(g);
    if (!result) return NULL;
    for (int k = 0; k < g; k++) {
        PyObject *params = PyDict_New();
        PyObject *scheme = PyUnicode_DecodeASCII((const char *)groups[k].scheme.p,
                                                 groups[k].scheme.n, NULL);
        PyObject *pair = params && scheme ? PyTuple_Pack(2, scheme, params) : NULL;
        Py_XDECREF(scheme);
        if (!pair) {
            Py_XDECREF(params);
            Py_DECREF(result);
            return NULL;
        }
        PyList_SET_ITEM(result, k, pair);
        for (int i = groups[k].from; i < groups[k].to; i++) {
            char name[64];
            span nm = items[i].name;
            PyObject *key;
            if (nm.n <= (Py_ssize_t)sizeof name) {
                for (Py_ssize_t j = 0; j < nm.n; j++) name[j] = (char)lower(nm.p[j]);
                key = PyUnicode_DecodeASCII(name, nm.n, NULL);
            } else {
                PyObject *raw = PyUnicode_DecodeASCII((const char *)nm.p, nm.n, NULL);
                key = raw ? PyObject_CallMethod(raw, "lower", NULL) : NULL;
                Py_XDECREF(raw);
            }
            PyObject *value = key ? PyUnicode_DecodeASCII((const char *)items[i].value.p,
                                                          items[i].value.n, NULL) : NULL;
            int rc = value ? PyDict_SetDefault(params, key, value) != NULL : 0;
            Py_XDECREF(key);
            Py_XDECREF(value);
            if (!rc) {
                Py_DECREF(params);
                Py_DECREF(result);
                return NULL;
            }
        }
        Py_DECREF(params);
    }
    return result;
}

static PyMethodDef index_methods[] = {
    {"index_message", (PyCFunction)(void (*)(void))py_index_message, METH_FASTCALL,
     "index_message(data: bytes, stream: bool) -> tuple | None"},
    {"auth_params", auth_params, METH_O,
     "auth_params(value: bytes) -> list[tuple[str, dict[str, str]]] | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef index_module = {
    PyModuleDef_HEAD_INIT, "_index", "C fast path of floodguard.sip.message.parse_message.", -1,
    index_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__index(void) {
    PyObject *m = PyModule_Create(&index_module);
    if (!m) return NULL;
    if (init_classes() < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
