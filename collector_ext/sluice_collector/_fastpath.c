/*
 * sluice_collector._fastpath: the compiled twin of the receiver's per-record hot path.
 *
 * What it mirrors (the pure-Python code stays the reference, and SLUICE_PURE_PYTHON=1 runs it):
 *   - the attribute dicts the router reads for every log record (processors/routing.py with
 *     otlpvalues.any_value): str, bool, int, float, bytes as base64 text, list, dict, None;
 *   - the JSON lines of log records and spans (encode.py's _log_lines and _span_lines), byte for
 *     byte as orjson >= 3.11.7 writes them, floats included (see write_double).
 *
 * Why from the protobuf wire bytes: with upb, every field read from Python allocates an object
 * (a wrapper per KeyValue and AnyValue, a str per key and value) and that, not the JSON, was the
 * receiver's largest non-masking cost. Here a record is read straight from the encoding of the
 * Export request and only what the caller keeps is allocated: the dicts, the lines.
 *
 * What it reads must be what the decoded messages hold, because masking rewrites those: the
 * caller (fastpath.py) passes the request's raw bytes only while no stage changed the request,
 * otherwise a fresh serialisation of it. Wire forms whose meaning upb would merge (a singular
 * message field repeated on the wire) and anything malformed raise Unsupported when the index is
 * built, before any output, and the caller then falls back (a fresh serialisation, whose form is
 * canonical, and failing that the Python path). Known fields with an unexpected wire type are
 * skipped as unknown fields, and a repeated scalar field's last value wins, as in upb.
 *
 * tests/collector/test_fastpath.py proves the two paths identical with hypothesis.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* AnyValue nesting we follow; upb's decoder stops at 100 message levels, far below this. */
#define MAX_DEPTH 200

static PyObject *Unsupported;

/* -- wire reading ------------------------------------------------------------------------ */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

typedef struct {
    const uint8_t *p, *end;
} Cur;

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} Slice;

static int
unsupported(const char *why)
{
    PyErr_SetString(Unsupported, why);
    return -1;
}

static inline int
rd_varint(Cur *c, uint64_t *out)
{
    if (c->p < c->end && !(*c->p & 0x80)) {
        *out = *c->p++;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (c->p >= c->end)
            return unsupported("truncated varint");
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i); /* bits past 64 are dropped, as upb does */
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return unsupported("varint longer than 10 bytes");
}

static inline int
rd_tag(Cur *c, uint32_t *field, int *wt)
{
    uint64_t t;
    if (rd_varint(c, &t))
        return -1;
    if (t > UINT32_MAX || (t >> 3) == 0)
        return unsupported("bad field tag");
    *field = (uint32_t)(t >> 3);
    *wt = (int)(t & 7);
    return 0;
}

static inline int
rd_len(Cur *c, Slice *s)
{
    uint64_t n;
    if (rd_varint(c, &n))
        return -1;
    if (n > (uint64_t)(c->end - c->p))
        return unsupported("length past the end");
    s->p = c->p;
    s->n = (Py_ssize_t)n;
    c->p += n;
    return 0;
}

static inline int
rd_fixed64(Cur *c, uint64_t *out)
{
    if (c->end - c->p < 8)
        return unsupported("truncated fixed64");
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | c->p[i];
    c->p += 8;
    *out = v;
    return 0;
}

static inline int
rd_fixed32(Cur *c, uint32_t *out)
{
    if (c->end - c->p < 4)
        return unsupported("truncated fixed32");
    *out = (uint32_t)c->p[0] | ((uint32_t)c->p[1] << 8) | ((uint32_t)c->p[2] << 16) |
           ((uint32_t)c->p[3] << 24);
    c->p += 4;
    return 0;
}

static int
skip_field(Cur *c, uint32_t field, int wt, int depth)
{
    uint64_t v;
    Slice s;
    switch (wt) {
    case WT_VARINT:
        return rd_varint(c, &v);
    case WT_I64:
        return rd_fixed64(c, &v);
    case WT_LEN:
        return rd_len(c, &s);
    case WT_I32: {
        uint32_t w;
        return rd_fixed32(c, &w);
    }
    case WT_SGROUP:
        if (depth > MAX_DEPTH)
            return unsupported("groups nested too deeply");
        for (;;) {
            uint32_t f;
            int w;
            if (rd_tag(c, &f, &w))
                return -1;
            if (w == WT_EGROUP)
                return f == field ? 0 : unsupported("unmatched end group");
            if (skip_field(c, f, w, depth + 1))
                return -1;
        }
    default:
        return unsupported("bad wire type");
    }
}

/* -- UTF-8 (protobuf strings are valid UTF-8; checked here so nothing else is ever written) -- */

static int
utf8_valid(const uint8_t *p, Py_ssize_t n)
{
    const uint8_t *end = p + n;
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        Py_ssize_t left = end - p;
        if (c >= 0xC2 && c <= 0xDF) {
            if (left < 2 || (p[1] & 0xC0) != 0x80)
                return 0;
            p += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
                return 0;
            if (c == 0xE0 && p[1] < 0xA0)
                return 0; /* overlong */
            if (c == 0xED && p[1] > 0x9F)
                return 0; /* surrogate */
            p += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
                (p[3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && p[1] < 0x90)
                return 0; /* overlong */
            if (c == 0xF4 && p[1] > 0x8F)
                return 0; /* past U+10FFFF */
            p += 4;
        }
        else
            return 0;
    }
    return 1;
}

static inline int
check_utf8(Slice s)
{
    return utf8_valid(s.p, s.n) ? 0 : unsupported("string is not valid UTF-8");
}

/* -- the messages we read ----------------------------------------------------------------- */

enum { AV_NONE, AV_STR, AV_BOOL, AV_INT, AV_DOUBLE, AV_ARRAY, AV_KVLIST, AV_BYTES, AV_STRINDEX };

typedef struct {
    int kind;
    Slice s;    /* string, bytes, array or kvlist payload */
    uint64_t u; /* bool, int, double bits */
} AnyV;

/* AnyValue: a oneof whose last member on the wire wins; the same message member twice would be
 * merged by upb, which we do not reproduce. `strict`: any second member is Unsupported (masking
 * on the wire must not leave the one protobuf dropped behind). */
static int
decode_any_as(Slice in, AnyV *out, int strict)
{
    Cur c = {in.p, in.p + in.n};
    out->kind = AV_NONE;
    out->u = 0;
    out->s.p = NULL;
    out->s.n = 0;
    while (c.p < c.end) {
        uint32_t f;
        int wt;
        if (rd_tag(&c, &f, &wt))
            return -1;
        int kind = -1;
        switch (f) {
        case 1: kind = wt == WT_LEN ? AV_STR : -1; break;
        case 2: kind = wt == WT_VARINT ? AV_BOOL : -1; break;
        case 3: kind = wt == WT_VARINT ? AV_INT : -1; break;
        case 4: kind = wt == WT_I64 ? AV_DOUBLE : -1; break;
        case 5: kind = wt == WT_LEN ? AV_ARRAY : -1; break;
        case 6: kind = wt == WT_LEN ? AV_KVLIST : -1; break;
        case 7: kind = wt == WT_LEN ? AV_BYTES : -1; break;
        case 8: kind = wt == WT_VARINT ? AV_STRINDEX : -1; break;
        }
        if (kind < 0) {
            if (skip_field(&c, f, wt, 0))
                return -1;
            continue;
        }
        if ((kind == AV_ARRAY || kind == AV_KVLIST) && out->kind == kind)
            return unsupported("AnyValue message member repeated (merged by protobuf)");
        if (strict && out->kind != AV_NONE)
            return unsupported("AnyValue with more than one member on the wire");
        out->kind = kind;
        switch (wt) {
        case WT_LEN:
            if (rd_len(&c, &out->s))
                return -1;
            break;
        case WT_VARINT:
            if (rd_varint(&c, &out->u))
                return -1;
            break;
        default:
            if (rd_fixed64(&c, &out->u))
                return -1;
        }
    }
    return 0;
}

static int
decode_any(Slice in, AnyV *out)
{
    return decode_any_as(in, out, 0);
}

typedef struct {
    Slice key;
    Slice value;
    int has_value;
    int skip; /* a later duplicate key took its value (dict semantics) */
} KV;

static int
decode_kv(Slice in, KV *out)
{
    Cur c = {in.p, in.p + in.n};
    out->key.p = in.p;
    out->key.n = 0;
    out->has_value = 0;
    out->skip = 0;
    while (c.p < c.end) {
        uint32_t f;
        int wt;
        if (rd_tag(&c, &f, &wt))
            return -1;
        if (f == 1 && wt == WT_LEN) {
            if (rd_len(&c, &out->key))
                return -1;
        }
        else if (f == 2 && wt == WT_LEN) {
            if (out->has_value)
                return unsupported("KeyValue.value repeated (merged by protobuf)");
            if (rd_len(&c, &out->value))
                return -1;
            out->has_value = 1;
        }
        else if (skip_field(&c, f, wt, 0))
            return -1;
    }
    return 0;
}

/* A growable array of slices, with room for the common case inline. */
typedef struct {
    Slice *v;
    Py_ssize_t n, cap;
    Slice inline_[32];
} Slices;

static void
slices_init(Slices *s)
{
    s->v = s->inline_;
    s->n = 0;
    s->cap = 32;
}

static void
slices_free(Slices *s)
{
    if (s->v != s->inline_)
        PyMem_Free(s->v);
    s->v = s->inline_;
    s->n = 0;
    s->cap = 32;
}

static int
slices_push(Slices *s, Slice x)
{
    if (s->n == s->cap) {
        Py_ssize_t cap = s->cap * 2;
        Slice *v = PyMem_Malloc(cap * sizeof(Slice));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(v, s->v, s->n * sizeof(Slice));
        if (s->v != s->inline_)
            PyMem_Free(s->v);
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

/* Every element of repeated message field `field` in `msg` (ArrayValue.values,
 * KeyValueList.values: both field 1). */
static int
collect(Slice msg, uint32_t field, Slices *out)
{
    Cur c = {msg.p, msg.p + msg.n};
    while (c.p < c.end) {
        uint32_t f;
        int wt;
        if (rd_tag(&c, &f, &wt))
            return -1;
        if (f == field && wt == WT_LEN) {
            Slice s;
            if (rd_len(&c, &s) || slices_push(out, s))
                return -1;
        }
        else if (skip_field(&c, f, wt, 0))
            return -1;
    }
    return 0;
}

typedef struct {
    uint64_t time, observed;
    int32_t severity;
    Slice severity_text;
    Slice body;
    int has_body;
    uint32_t dropped, flags;
    Slice trace_id, span_id, event_name;
} LogRec;

/* A log record; its attributes (field 6) go to `attrs` when it is not NULL. */
static int
decode_log(Slice in, LogRec *r, Slices *attrs)
{
    Cur c = {in.p, in.p + in.n};
    memset(r, 0, sizeof(*r));
    while (c.p < c.end) {
        uint32_t f;
        int wt;
        uint64_t v;
        uint32_t w;
        Slice s;
        if (rd_tag(&c, &f, &wt))
            return -1;
        if (f == 1 && wt == WT_I64) {
            if (rd_fixed64(&c, &r->time))
                return -1;
        }
        else if (f == 11 && wt == WT_I64) {
            if (rd_fixed64(&c, &r->observed))
                return -1;
        }
        else if (f == 2 && wt == WT_VARINT) {
            if (rd_varint(&c, &v))
                return -1;
            r->severity = (int32_t)(uint32_t)v;
        }
        else if (f == 3 && wt == WT_LEN) {
            if (rd_len(&c, &r->severity_text))
                return -1;
        }
        else if (f == 5 && wt == WT_LEN) {
            if (r->has_body)
                return unsupported("LogRecord.body repeated (merged by protobuf)");
            if (rd_len(&c, &r->body))
                return -1;
            r->has_body = 1;
        }
        else if (f == 6 && wt == WT_LEN) {
            if (rd_len(&c, &s))
                return -1;
            if (attrs != NULL && slices_push(attrs, s))
                return -1;
        }
        else if (f == 7 && wt == WT_VARINT) {
            if (rd_varint(&c, &v))
                return -1;
            r->dropped = (uint32_t)v;
        }
        else if (f == 8 && wt == WT_I32) {
            if (rd_fixed32(&c, &w))
                return -1;
            r->flags = w;
        }
        else if (f == 9 && wt == WT_LEN) {
            if (rd_len(&c, &r->trace_id))
                return -1;
        }
        else if (f == 10 && wt == WT_LEN) {
            if (rd_len(&c, &r->span_id))
                return -1;
        }
        else if (f == 12 && wt == WT_LEN) {
            if (rd_len(&c, &r->event_name))
                return -1;
        }
        else if (skip_field(&c, f, wt, 0))
            return -1;
    }
    return 0;
}

typedef struct {
    Slice trace_id, span_id, parent_span_id, trace_state, name;
    int32_t kind;
    uint64_t start, end;
    uint32_t dropped_attributes, dropped_events, dropped_links;
    Slice status_message;
    int32_t status_code;
    int has_status;
} SpanRec;

static int
decode_status(Slice in, SpanRec *r)
{
    Cur c = {in.p, in.p + in.n};
    while (c.p < c.end) {
        uint32_t f;
        int wt;
        uint64_t v;
        if (rd_tag(&c, &f, &wt))
            return -1;
        if (f == 2 && wt == WT_LEN) {
            if (rd_len(&c, &r->status_message))
                return -1;
        }
        else if (f == 3 && wt == WT_VARINT) {
            if (rd_varint(&c, &v))
                return -1;
            r->status_code = (int32_t)(uint32_t)v;
        }
        else if (skip_field(&c, f, wt, 0))
            return -1;
    }
    return 0;
}

/* A span; attributes (9), events (11) and links (13) go to the given arrays when not NULL. */
static int
decode_span(Slice in, SpanRec *r, Slices *attrs, Slices *events, Slices *links)
{
    Cur c = {in.p, in.p + in.n};
    memset(r, 0, sizeof(*r));
    while (c.p < c.end) {
        uint32_t f;
        int wt;
        uint64_t v;
        Slice s;
        if (rd_tag(&c, &f, &wt))
            return -1;
        switch (f) {
        case 1: case 2: case 3: case 4: case 5: case 9: case 11: case 13: case 15:
            if (wt != WT_LEN)
                goto unknown;
            if (rd_len(&c, &s))
                return -1;
            switch (f) {
            case 1: r->trace_id = s; break;
            case 2: r->span_id = s; break;
            case 3: r->trace_state = s; break;
            case 4: r->parent_span_id = s; break;
            case 5: r->name = s; break;
            case 9:
                if (attrs != NULL && slices_push(attrs, s))
                    return -1;
                break;
            case 11:
                if (events != NULL && slices_push(events, s))
                    return -1;
                break;
            case 13:
                if (links != NULL && slices_push(links, s))
                    return -1;
                break;
            case 15:
                if (r->has_status)
                    return unsupported("Span.status repeated (merged by protobuf)");
                r->has_status = 1;
                if (decode_status(s, r))
                    return -1;
                break;
            }
            continue;
        case 7: case 8:
            if (wt != WT_I64)
                goto unknown;
            if (rd_fixed64(&c, f == 7 ? &r->start : &r->end))
                return -1;
            continue;
        case 6: case 10: case 12: case 14:
            if (wt != WT_VARINT)
                goto unknown;
            if (rd_varint(&c, &v))
                return -1;
            if (f == 6)
                r->kind = (int32_t)(uint32_t)v;
            else if (f == 10)
                r->dropped_attributes = (uint32_t)v;
            else if (f == 12)
                r->dropped_events = (uint32_t)v;
            else
                r->dropped_links = (uint32_t)v;
            continue;
        }
    unknown:
        if (skip_field(&c, f, wt, 0))
            return -1;
    }
    return 0;
}

typedef struct {
    uint64_t time;
    Slice name;
} EventRec;

static int
decode_event(Slice in, EventRec *r, Slices *attrs)
{
    Cur c = {in.p, in.p + in.n};
    memset(r, 0, sizeof(*r));
    while (c.p < c.end) {
        uint32_t f;
        int wt;
        Slice s;
        if (rd_tag(&c, &f, &wt))
            return -1;
        if (f == 1 && wt == WT_I64) {
            if (rd_fixed64(&c, &r->time))
                return -1;
        }
        else if (f == 2 && wt == WT_LEN) {
            if (rd_len(&c, &r->name))
                return -1;
        }
        else if (f == 3 && wt == WT_LEN) {
            if (rd_len(&c, &s))
                return -1;
            if (attrs != NULL && slices_push(attrs, s))
                return -1;
        }
        else if (skip_field(&c, f, wt, 0))
            return -1;
    }
    return 0;
}

typedef struct {
    Slice trace_id, span_id;
} LinkRec;

static int
decode_link(Slice in, LinkRec *r, Slices *attrs)
{
    Cur c = {in.p, in.p + in.n};
    memset(r, 0, sizeof(*r));
    while (c.p < c.end) {
        uint32_t f;
        int wt;
        Slice s;
        if (rd_tag(&c, &f, &wt))
            return -1;
        if (f == 1 && wt == WT_LEN) {
            if (rd_len(&c, &r->trace_id))
                return -1;
        }
        else if (f == 2 && wt == WT_LEN) {
            if (rd_len(&c, &r->span_id))
                return -1;
        }
        else if (f == 4 && wt == WT_LEN) {
            if (rd_len(&c, &s))
                return -1;
            if (attrs != NULL && slices_push(attrs, s))
                return -1;
        }
        else if (skip_field(&c, f, wt, 0))
            return -1;
    }
    return 0;
}

/* -- checking a whole record up front, so that output never stops half-way ------------------ */

static int check_any(Slice in, int depth);

static int
check_kvs(const Slice *kvs, Py_ssize_t n, int depth)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        KV kv;
        if (decode_kv(kvs[i], &kv) || check_utf8(kv.key))
            return -1;
        if (kv.has_value && check_any(kv.value, depth + 1))
            return -1;
    }
    return 0;
}

static int
check_any(Slice in, int depth)
{
    AnyV v;
    if (depth > MAX_DEPTH)
        return unsupported("values nested too deeply");
    if (decode_any(in, &v))
        return -1;
    if (v.kind == AV_STR)
        return check_utf8(v.s);
    if (v.kind == AV_ARRAY || v.kind == AV_KVLIST) {
        Slices items;
        slices_init(&items);
        int rc = collect(v.s, 1, &items);
        if (rc == 0) {
            if (v.kind == AV_KVLIST)
                rc = check_kvs(items.v, items.n, depth);
            else
                for (Py_ssize_t i = 0; i < items.n && rc == 0; i++)
                    rc = check_any(items.v[i], depth + 1);
        }
        slices_free(&items);
        return rc;
    }
    return 0;
}

static int
check_log(Slice in)
{
    LogRec r;
    Slices attrs;
    slices_init(&attrs);
    int rc = decode_log(in, &r, &attrs);
    if (rc == 0)
        rc = check_utf8(r.severity_text) || check_utf8(r.event_name) ? -1 : 0;
    if (rc == 0 && r.has_body)
        rc = check_any(r.body, 0);
    if (rc == 0)
        rc = check_kvs(attrs.v, attrs.n, 0);
    slices_free(&attrs);
    return rc;
}

static int
check_span(Slice in)
{
    SpanRec r;
    Slices attrs, events, links, sub;
    slices_init(&attrs);
    slices_init(&events);
    slices_init(&links);
    slices_init(&sub);
    int rc = decode_span(in, &r, &attrs, &events, &links);
    if (rc == 0)
        rc = (check_utf8(r.name) || check_utf8(r.trace_state) || check_utf8(r.status_message))
                 ? -1 : 0;
    if (rc == 0)
        rc = check_kvs(attrs.v, attrs.n, 0);
    for (Py_ssize_t i = 0; rc == 0 && i < events.n; i++) {
        EventRec e;
        sub.n = 0;
        rc = decode_event(events.v[i], &e, &sub);
        if (rc == 0)
            rc = check_utf8(e.name) || check_kvs(sub.v, sub.n, 0) ? -1 : 0;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < links.n; i++) {
        LinkRec l;
        sub.n = 0;
        rc = decode_link(links.v[i], &l, &sub);
        if (rc == 0)
            rc = check_kvs(sub.v, sub.n, 0);
    }
    slices_free(&attrs);
    slices_free(&events);
    slices_free(&links);
    slices_free(&sub);
    return rc;
}

/* -- output buffer -------------------------------------------------------------------------- */

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} Buf;

static int
buf_grow(Buf *b, Py_ssize_t extra)
{
    Py_ssize_t want = b->n + extra;
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap < want)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int
buf_reserve(Buf *b, Py_ssize_t extra)
{
    return b->n + extra <= b->cap ? 0 : buf_grow(b, extra);
}

static inline int
buf_put(Buf *b, const char *s, Py_ssize_t n)
{
    if (buf_reserve(b, n))
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

#define PUT_LIT(b, lit) buf_put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static inline int
buf_putc(Buf *b, char ch)
{
    if (buf_reserve(b, 1))
        return -1;
    b->p[b->n++] = ch;
    return 0;
}

/* -- JSON scalars, as orjson writes them ------------------------------------------------------ */

static const char HEX[] = "0123456789abcdef";

/* 0: copied as is; otherwise the character after the backslash ('u' for \u00XX). */
static char ESCAPE[256];

static void
init_escapes(void)
{
    for (int c = 0; c < 0x20; c++)
        ESCAPE[c] = 'u';
    ESCAPE['\b'] = 'b';
    ESCAPE['\t'] = 't';
    ESCAPE['\n'] = 'n';
    ESCAPE['\f'] = 'f';
    ESCAPE['\r'] = 'r';
    ESCAPE['"'] = '"';
    ESCAPE['\\'] = '\\';
}

/* A JSON string of valid UTF-8 (checked when the index was built). */
static int
write_str(Buf *b, const uint8_t *s, Py_ssize_t n)
{
    /* Invariant: room for every byte still to copy plus the closing quote. */
    if (buf_reserve(b, n + 2))
        return -1;
    b->p[b->n++] = '"';
    const uint8_t *end = s + n;
    while (s < end) {
        const uint8_t *run = s;
        while (s < end && !ESCAPE[*s])
            s++;
        memcpy(b->p + b->n, run, s - run);
        b->n += s - run;
        if (s == end)
            break;
        if (buf_reserve(b, 6 + (end - s) + 1))
            return -1;
        char e = ESCAPE[*s];
        char *o = b->p + b->n;
        *o++ = '\\';
        *o++ = e;
        if (e == 'u') {
            *o++ = '0';
            *o++ = '0';
            *o++ = HEX[*s >> 4];
            *o++ = HEX[*s & 15];
        }
        b->n = o - b->p;
        s++;
    }
    b->p[b->n++] = '"';
    return 0;
}

static inline int
write_slice_str(Buf *b, Slice s)
{
    return write_str(b, s.p, s.n);
}

static int
write_u64(Buf *b, uint64_t v)
{
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_put(b, tmp + i, 24 - i);
}

static int
write_i64(Buf *b, int64_t v)
{
    if (v < 0) {
        if (buf_putc(b, '-'))
            return -1;
        return write_u64(b, (uint64_t)0 - (uint64_t)v);
    }
    return write_u64(b, (uint64_t)v);
}

/* orjson's spelling of a float (>= 3.11.7): the shortest digits that read back to the same
 * double (Python's repr has the same digits), fixed notation for decimal exponents -5 to 15
 * (with ".0" when integral), otherwise d.ddde+XX / d.ddde-X; NaN and infinities are null. */
static int
write_double(Buf *b, double v)
{
    if (!isfinite(v))
        return PUT_LIT(b, "null");
    if (v == 0.0)
        return signbit(v) ? PUT_LIT(b, "-0.0") : PUT_LIT(b, "0.0");
    char *r = PyOS_double_to_string(v, 'r', 0, 0, NULL);
    if (r == NULL)
        return -1;
    const char *s = r;
    int neg = 0;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    char digits[32];
    int nd = 0, point = -1, exp10 = 0;
    for (; *s && *s != 'e'; s++) {
        if (*s == '.')
            point = nd;
        else if (nd < 30)
            digits[nd++] = *s;
    }
    if (*s == 'e')
        exp10 = atoi(s + 1);
    PyMem_Free(r);
    if (point < 0)
        point = nd;
    /* value = 0.d1d2d3... * 10^(point + exp10); drop leading and trailing zeros */
    int lead = 0;
    while (lead < nd - 1 && digits[lead] == '0')
        lead++;
    point -= lead;
    memmove(digits, digits + lead, nd - lead);
    nd -= lead;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    int dp = point + exp10;  /* digits before the decimal point */
    int e = dp - 1;          /* scientific exponent */
    char out[64];
    int o = 0;
    if (neg)
        out[o++] = '-';
    if (e >= -5 && e < 16) {
        if (dp <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -dp; i++)
                out[o++] = '0';
            memcpy(out + o, digits, nd);
            o += nd;
        }
        else if (dp >= nd) {
            memcpy(out + o, digits, nd);
            o += nd;
            for (int i = nd; i < dp; i++)
                out[o++] = '0';
            out[o++] = '.';
            out[o++] = '0';
        }
        else {
            memcpy(out + o, digits, dp);
            o += dp;
            out[o++] = '.';
            memcpy(out + o, digits + dp, nd - dp);
            o += nd - dp;
        }
    }
    else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        out[o++] = 'e';
        out[o++] = e < 0 ? '-' : '+';
        o += sprintf(out + o, "%d", e < 0 ? -e : e);
    }
    return buf_put(b, out, o);
}

static inline double
as_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding, as base64.b64encode; `quote` adds the JSON quotes. */
static int
write_base64(Buf *b, Slice s, int quote)
{
    Py_ssize_t out = (s.n + 2) / 3 * 4;
    if (buf_reserve(b, out + 2))
        return -1;
    char *o = b->p + b->n;
    if (quote)
        *o++ = '"';
    const uint8_t *p = s.p;
    Py_ssize_t i = 0;
    for (; i + 2 < s.n; i += 3) {
        uint32_t w = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        *o++ = B64[w >> 18];
        *o++ = B64[(w >> 12) & 63];
        *o++ = B64[(w >> 6) & 63];
        *o++ = B64[w & 63];
    }
    if (i < s.n) {
        uint32_t w = (uint32_t)p[i] << 16;
        if (i + 1 < s.n)
            w |= (uint32_t)p[i + 1] << 8;
        *o++ = B64[w >> 18];
        *o++ = B64[(w >> 12) & 63];
        *o++ = i + 1 < s.n ? B64[(w >> 6) & 63] : '=';
        *o++ = '=';
    }
    if (quote)
        *o++ = '"';
    b->n = o - b->p;
    return 0;
}

/* Ids as encode._hex: lower-case hex, "" when empty or all zero. */
static int
write_hex_id(Buf *b, Slice s)
{
    int any = 0;
    for (Py_ssize_t i = 0; i < s.n; i++)
        if (s.p[i]) {
            any = 1;
            break;
        }
    if (!any)
        return PUT_LIT(b, "\"\"");
    if (buf_reserve(b, s.n * 2 + 2))
        return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < s.n; i++) {
        *o++ = HEX[s.p[i] >> 4];
        *o++ = HEX[s.p[i] & 15];
    }
    *o++ = '"';
    b->n = o - b->p;
    return 0;
}

/* RFC 3339 UTC with nanoseconds, as encode.TimestampFormatter, cached per second. */
typedef struct {
    uint64_t sec;
    int valid;
    char prefix[20]; /* YYYY-MM-DDTHH:MM:SS */
} Stamp;

static void
civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    /* Howard Hinnant's days-to-civil algorithm (proleptic Gregorian). */
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int
write_stamp(Buf *b, Stamp *st, uint64_t ns)
{
    uint64_t sec = ns / 1000000000u;
    uint32_t frac = (uint32_t)(ns % 1000000000u);
    if (!st->valid || st->sec != sec) {
        int64_t y;
        unsigned m, d;
        civil_from_days((int64_t)(sec / 86400), &y, &m, &d);
        unsigned rem = (unsigned)(sec % 86400);
        /* sec < 2^64 / 1e9, so the year is 1970 to 2554: always four digits. */
        unsigned fields[6] = {(unsigned)y, m, d, rem / 3600, rem / 60 % 60, rem % 60};
        char *o = st->prefix;
        for (int i = 0; i < 6; i++) {
            unsigned v = fields[i];
            if (i == 0) {
                *o++ = (char)('0' + v / 1000 % 10);
                *o++ = (char)('0' + v / 100 % 10);
            }
            *o++ = (char)('0' + v / 10 % 10);
            *o++ = (char)('0' + v % 10);
            if (i < 5)
                *o++ = "--T::"[i];
        }
        st->sec = sec;
        st->valid = 1;
    }
    if (buf_reserve(b, 32))
        return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    memcpy(o, st->prefix, 19);
    o += 19;
    *o++ = '.';
    for (int i = 8; i >= 0; i--) {
        o[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    o += 9;
    *o++ = 'Z';
    *o++ = '"';
    b->n = o - b->p;
    return 0;
}

/* -- AnyValue and attribute lists as JSON ----------------------------------------------------- */

static int write_any(Buf *b, Slice in, int has, int depth);

/* One hash slot per key for long lists; short ones are compared pairwise. */
static int
dedupe(KV *e, Py_ssize_t n)
{
    if (n < 2)
        return 0;
    if (n <= 16) {
        for (Py_ssize_t i = 1; i < n; i++)
            for (Py_ssize_t j = 0; j < i; j++)
                if (!e[j].skip && e[j].key.n == e[i].key.n &&
                    memcmp(e[j].key.p, e[i].key.p, e[i].key.n) == 0) {
                    e[j].value = e[i].value;
                    e[j].has_value = e[i].has_value;
                    e[i].skip = 1;
                    break;
                }
        return 0;
    }
    Py_ssize_t size = 32;
    while (size < 2 * n)
        size *= 2;
    Py_ssize_t *table = PyMem_Malloc(size * sizeof(Py_ssize_t));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < size; i++)
        table[i] = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t h = 1469598103934665603ull;
        for (Py_ssize_t k = 0; k < e[i].key.n; k++)
            h = (h ^ e[i].key.p[k]) * 1099511628211ull;
        Py_ssize_t slot = (Py_ssize_t)(h & (uint64_t)(size - 1));
        for (;;) {
            Py_ssize_t j = table[slot];
            if (j < 0) {
                table[slot] = i;
                break;
            }
            if (e[j].key.n == e[i].key.n && memcmp(e[j].key.p, e[i].key.p, e[i].key.n) == 0) {
                e[j].value = e[i].value;
                e[j].has_value = e[i].has_value;
                e[i].skip = 1;
                break;
            }
            slot = (slot + 1) & (size - 1);
        }
    }
    PyMem_Free(table);
    return 0;
}

/* An attribute list (repeated KeyValue) as a JSON object with dict semantics: a key keeps the
 * place of its first occurrence and the value of its last, as {kv.key: ... for kv in kvs}. */
static int
write_kvs(Buf *b, const Slice *kvs, Py_ssize_t n, int depth)
{
    KV small[16];
    KV *e = n <= 16 ? small : PyMem_Malloc(n * sizeof(KV));
    if (e == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++)
        rc = decode_kv(kvs[i], &e[i]);
    if (rc == 0)
        rc = dedupe(e, n);
    if (rc == 0)
        rc = buf_putc(b, '{');
    int first = 1;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        if (e[i].skip)
            continue;
        if (!first)
            rc = buf_putc(b, ',');
        first = 0;
        if (rc == 0)
            rc = write_slice_str(b, e[i].key);
        if (rc == 0)
            rc = buf_putc(b, ':');
        if (rc == 0)
            rc = write_any(b, e[i].value, e[i].has_value, depth + 1);
    }
    if (rc == 0)
        rc = buf_putc(b, '}');
    if (e != small)
        PyMem_Free(e);
    return rc;
}

/* otlpvalues.any_value, then orjson: `has` is 0 for an absent AnyValue field (None). */
static int
write_any(Buf *b, Slice in, int has, int depth)
{
    AnyV v;
    if (!has)
        return PUT_LIT(b, "null");
    if (depth > MAX_DEPTH)
        return unsupported("values nested too deeply");
    if (decode_any(in, &v))
        return -1;
    switch (v.kind) {
    case AV_STR:
        return write_slice_str(b, v.s);
    case AV_BOOL:
        return v.u ? PUT_LIT(b, "true") : PUT_LIT(b, "false");
    case AV_INT:
        return write_i64(b, (int64_t)v.u);
    case AV_DOUBLE:
        return write_double(b, as_double(v.u));
    case AV_BYTES:
        return write_base64(b, v.s, 1);
    case AV_ARRAY:
    case AV_KVLIST: {
        Slices items;
        slices_init(&items);
        int rc = collect(v.s, 1, &items);
        if (rc == 0 && v.kind == AV_KVLIST)
            rc = write_kvs(b, items.v, items.n, depth);
        else if (rc == 0) {
            rc = buf_putc(b, '[');
            for (Py_ssize_t i = 0; i < items.n && rc == 0; i++) {
                if (i)
                    rc = buf_putc(b, ',');
                if (rc == 0)
                    rc = write_any(b, items.v[i], 1, depth + 1);
            }
            if (rc == 0)
                rc = buf_putc(b, ']');
        }
        slices_free(&items);
        return rc;
    }
    default: /* unset, or string_value_strindex: any_value gives None */
        return PUT_LIT(b, "null");
    }
}

/* -- AnyValue and attribute lists as Python values -------------------------------------------- */

/* Attribute keys (and short string values) repeat from record to record: one str object each
 * per call, found again by its bytes. Sharing immutable str objects changes nothing visible. */
#define CACHE_SLOTS 1024
#define CACHE_MAX_LEN 48

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    PyObject *s;
} CacheEntry;

typedef struct {
    CacheEntry slots[CACHE_SLOTS];
} StrCache;

static void
cache_clear(StrCache *c)
{
    for (int i = 0; i < CACHE_SLOTS; i++)
        Py_CLEAR(c->slots[i].s);
}

static PyObject *
make_str(StrCache *c, Slice s)
{
    if (c == NULL || s.n > CACHE_MAX_LEN)
        return PyUnicode_DecodeUTF8((const char *)s.p, s.n, "strict");
    uint64_t h = 1469598103934665603ull ^ (uint64_t)s.n;
    for (Py_ssize_t k = 0; k < s.n; k++)
        h = (h ^ s.p[k]) * 1099511628211ull;
    unsigned slot = (unsigned)(h ^ (h >> 32)) & (CACHE_SLOTS - 1);
    CacheEntry *e = &c->slots[slot];
    if (e->s != NULL && e->n == s.n && memcmp(e->p, s.p, s.n) == 0) {
        Py_INCREF(e->s);
        return e->s;
    }
    PyObject *str = PyUnicode_DecodeUTF8((const char *)s.p, s.n, "strict");
    if (str == NULL)
        return NULL;
    Py_XSETREF(e->s, str);
    Py_INCREF(str);
    e->p = s.p;
    e->n = s.n;
    return str;
}

static PyObject *py_any(StrCache *keys, StrCache *values, Slice in, int has, int depth);

static PyObject *
py_kvs(StrCache *keys, StrCache *values, const Slice *kvs, Py_ssize_t n, int depth)
{
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        KV kv;
        if (decode_kv(kvs[i], &kv))
            goto fail;
        PyObject *k = make_str(keys, kv.key);
        if (k == NULL)
            goto fail;
        PyObject *v = py_any(keys, values, kv.value, kv.has_value, depth + 1);
        if (v == NULL) {
            Py_DECREF(k);
            goto fail;
        }
        int rc = PyDict_SetItem(d, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc)
            goto fail;
    }
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *
py_any(StrCache *keys, StrCache *values, Slice in, int has, int depth)
{
    AnyV v;
    if (!has)
        Py_RETURN_NONE;
    if (depth > MAX_DEPTH) {
        unsupported("values nested too deeply");
        return NULL;
    }
    if (decode_any(in, &v))
        return NULL;
    switch (v.kind) {
    case AV_STR:
        return make_str(values, v.s);
    case AV_BOOL:
        return PyBool_FromLong(v.u != 0);
    case AV_INT:
        return PyLong_FromLongLong((long long)(int64_t)v.u);
    case AV_DOUBLE:
        return PyFloat_FromDouble(as_double(v.u));
    case AV_BYTES: {
        Buf tmp = {NULL, 0, 0};
        if (write_base64(&tmp, v.s, 0)) {
            PyMem_Free(tmp.p);
            return NULL;
        }
        PyObject *s = PyUnicode_DecodeASCII(tmp.p ? tmp.p : "", tmp.n, "strict");
        PyMem_Free(tmp.p);
        return s;
    }
    case AV_ARRAY:
    case AV_KVLIST: {
        Slices items;
        slices_init(&items);
        PyObject *out = NULL;
        if (collect(v.s, 1, &items) == 0) {
            if (v.kind == AV_KVLIST)
                out = py_kvs(keys, values, items.v, items.n, depth);
            else if ((out = PyList_New(items.n)) != NULL)
                for (Py_ssize_t i = 0; i < items.n; i++) {
                    PyObject *item = py_any(keys, values, items.v[i], 1, depth + 1);
                    if (item == NULL) {
                        Py_CLEAR(out);
                        break;
                    }
                    PyList_SET_ITEM(out, i, item);
                }
        }
        slices_free(&items);
        return out;
    }
    default:
        Py_RETURN_NONE;
    }
}

/* -- the index ------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    int32_t resource, scope;
} Rec;

typedef struct {
    PyObject_HEAD
    PyObject *data; /* the bytes every slice points into */
    int signal;     /* 0 logs, 1 traces */
    Rec *recs;
    Py_ssize_t n, cap;
    Py_ssize_t n_resources, n_scopes;
    Slices resources; /* each Resource{Logs,Spans} message, for its resource attributes */
} WireIndex;

enum { SIGNAL_LOGS = 0, SIGNAL_TRACES = 1 };

static int
index_push(WireIndex *x, Slice s, Py_ssize_t resource, Py_ssize_t scope)
{
    if (x->n == x->cap) {
        Py_ssize_t cap = x->cap ? x->cap * 2 : 256;
        Rec *r = PyMem_Realloc(x->recs, cap * sizeof(Rec));
        if (r == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        x->recs = r;
        x->cap = cap;
    }
    Rec *r = &x->recs[x->n++];
    r->p = s.p;
    r->n = s.n;
    r->resource = (int32_t)resource;
    r->scope = (int32_t)scope;
    return 0;
}

/* Export*ServiceRequest → Resource* (field 1) → Scope* (field 2) → records (field 2): the
 * same numbers for logs and traces. Every resource and scope is counted, empty or not, so the
 * numbers match the positions of the decoded request's repeated fields. */
static int
index_build(WireIndex *x, const uint8_t *p, Py_ssize_t n)
{
    Cur top = {p, p + n};
    while (top.p < top.end) {
        uint32_t f;
        int wt;
        Slice rs;
        if (rd_tag(&top, &f, &wt))
            return -1;
        if (!(f == 1 && wt == WT_LEN)) {
            if (skip_field(&top, f, wt, 0))
                return -1;
            continue;
        }
        if (rd_len(&top, &rs) || slices_push(&x->resources, rs))
            return -1;
        Py_ssize_t resource = x->n_resources++;
        Cur rc = {rs.p, rs.p + rs.n};
        while (rc.p < rc.end) {
            Slice ss;
            if (rd_tag(&rc, &f, &wt))
                return -1;
            if (!(f == 2 && wt == WT_LEN)) {
                if (skip_field(&rc, f, wt, 0))
                    return -1;
                continue;
            }
            if (rd_len(&rc, &ss))
                return -1;
            Py_ssize_t scope = x->n_scopes++;
            Cur sc = {ss.p, ss.p + ss.n};
            while (sc.p < sc.end) {
                Slice rec;
                if (rd_tag(&sc, &f, &wt))
                    return -1;
                if (!(f == 2 && wt == WT_LEN)) {
                    if (skip_field(&sc, f, wt, 0))
                        return -1;
                    continue;
                }
                if (rd_len(&sc, &rec) || index_push(x, rec, resource, scope))
                    return -1;
                if ((x->signal == SIGNAL_LOGS ? check_log(rec) : check_span(rec)))
                    return -1;
            }
        }
    }
    return 0;
}

static int
WireIndex_init(WireIndex *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"signal", "data", NULL};
    int signal;
    PyObject *data;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO!", kwlist, &signal, &PyBytes_Type, &data))
        return -1;
    if (signal != SIGNAL_LOGS && signal != SIGNAL_TRACES) {
        PyErr_SetString(PyExc_ValueError, "signal must be 0 (logs) or 1 (traces)");
        return -1;
    }
    if (self->data != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "WireIndex is initialised once");
        return -1;
    }
    Py_INCREF(data);
    self->data = data;
    self->signal = signal;
    slices_init(&self->resources);
    return index_build(self, (const uint8_t *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
}

static void
WireIndex_dealloc(WireIndex *self)
{
    PyMem_Free(self->recs);
    if (self->data != NULL)
        slices_free(&self->resources);
    Py_XDECREF(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Positions: a sequence of record numbers, or None for every record in order. */
typedef struct {
    PyObject *seq; /* from PySequence_Fast, or NULL for "all" */
    Py_ssize_t n;
} Positions;

static int
positions_open(WireIndex *x, PyObject *arg, Positions *pos)
{
    pos->seq = NULL;
    pos->n = x->n;
    if (arg == Py_None)
        return 0;
    pos->seq = PySequence_Fast(arg, "positions must be a sequence of record numbers");
    if (pos->seq == NULL)
        return -1;
    pos->n = PySequence_Fast_GET_SIZE(pos->seq);
    return 0;
}

static Rec *
positions_get(WireIndex *x, Positions *pos, Py_ssize_t i)
{
    if (pos->seq == NULL)
        return &x->recs[i];
    Py_ssize_t k = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(pos->seq, i));
    if (k == -1 && PyErr_Occurred())
        return NULL;
    if (k < 0 || k >= x->n) {
        PyErr_SetString(PyExc_IndexError, "record position out of range");
        return NULL;
    }
    return &x->recs[k];
}

/* positions_open for a method's one optional argument, `positions=None`. */
static int
positions_of_args(WireIndex *x, PyObject *args, Positions *pos)
{
    PyObject *arg = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &arg))
        return -1;
    return positions_open(x, arg, pos);
}

/* Decode record `i` of `pos`: its attributes into `attrs` and its span id into `span_id`
 * (either may be NULL); -1 with an exception set when it cannot be read. */
static int
positions_decode(WireIndex *x, Positions *pos, Py_ssize_t i, Slices *attrs, Slice *span_id)
{
    Rec *r = positions_get(x, pos, i);
    if (r == NULL)
        return -1;
    Slice s = {r->p, r->n};
    if (x->signal == SIGNAL_LOGS) {
        LogRec lr;
        if (decode_log(s, &lr, attrs))
            return -1;
        if (span_id != NULL)
            *span_id = lr.span_id;
        return 0;
    }
    SpanRec sr;
    if (decode_span(s, &sr, attrs, NULL, NULL))
        return -1;
    if (span_id != NULL)
        *span_id = sr.span_id;
    return 0;
}

static PyObject *
WireIndex_attributes(WireIndex *self, PyObject *args)
{
    Positions pos;
    if (positions_of_args(self, args, &pos))
        return NULL;
    StrCache *keys = PyMem_Calloc(2, sizeof(StrCache));
    PyObject *out = keys ? PyList_New(pos.n) : PyErr_NoMemory();
    Slices attrs;
    slices_init(&attrs);
    for (Py_ssize_t i = 0; out != NULL && i < pos.n; i++) {
        attrs.n = 0;
        int rc = positions_decode(self, &pos, i, &attrs, NULL);
        PyObject *d = rc == 0 ? py_kvs(&keys[0], &keys[1], attrs.v, attrs.n, 0) : NULL;
        if (d == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, d);
    }
    slices_free(&attrs);
    if (keys != NULL) {
        cache_clear(&keys[0]);
        cache_clear(&keys[1]);
        PyMem_Free(keys);
    }
    Py_XDECREF(pos.seq);
    return out;
}

/* The span ids of the records at `positions` that have one, in order: what the access-record
 * deriver remembers of every access-routed log record (processors/access.py), read from the
 * encoding instead of one upb attribute read per record. Signal-agnostic: a span's own id. */
static PyObject *
WireIndex_span_ids(WireIndex *self, PyObject *args)
{
    Positions pos;
    if (positions_of_args(self, args, &pos))
        return NULL;
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < pos.n; i++) {
        Slice id = {NULL, 0};
        if (positions_decode(self, &pos, i, NULL, &id) != 0) {
            Py_CLEAR(out);
            break;
        }
        if (id.n == 0)
            continue;
        PyObject *b = PyBytes_FromStringAndSize((const char *)id.p, id.n);
        if (b == NULL || PyList_Append(out, b) < 0)
            Py_CLEAR(out);
        Py_XDECREF(b);
    }
    Py_XDECREF(pos.seq);
    return out;
}

/* What every line of one call shares: fragments prepared in Python (encode.BatchCache). */
typedef struct {
    const char *category;
    Py_ssize_t category_n;
    PyObject *resources; /* list[bytes]: JSON of each resource's attributes */
    PyObject *services;  /* list[bytes]: JSON string of each resource's service.name */
    PyObject *scopes;    /* list[bytes]: JSON of each scope */
    uint64_t received;
    PyObject *trace_url; /* tuple[bytes, ...]: the escaped template split at {trace_id}, or None */
} Shared;

static int
put_item(Buf *b, PyObject *list, Py_ssize_t i)
{
    if (i < 0 || i >= PyList_GET_SIZE(list)) {
        PyErr_SetString(PyExc_IndexError, "resource or scope table too short");
        return -1;
    }
    PyObject *item = PyList_GET_ITEM(list, i);
    if (!PyBytes_Check(item)) {
        PyErr_SetString(PyExc_TypeError, "resource and scope fragments must be bytes");
        return -1;
    }
    return buf_put(b, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
}

static int
put_trace_url(Buf *b, const Shared *sh, Slice trace_id)
{
    if (sh->trace_url == Py_None)
        return 0;
    int any = 0;
    for (Py_ssize_t i = 0; i < trace_id.n; i++)
        any |= trace_id.p[i];
    if (!any)
        return 0;
    if (PUT_LIT(b, ",\"trace_url\":\""))
        return -1;
    Py_ssize_t parts = PyTuple_GET_SIZE(sh->trace_url);
    for (Py_ssize_t i = 0; i < parts; i++) {
        PyObject *part = PyTuple_GET_ITEM(sh->trace_url, i);
        if (!PyBytes_Check(part)) {
            PyErr_SetString(PyExc_TypeError, "trace_url parts must be bytes");
            return -1;
        }
        if (buf_put(b, PyBytes_AS_STRING(part), PyBytes_GET_SIZE(part)))
            return -1;
        if (i + 1 < parts) {
            if (buf_reserve(b, trace_id.n * 2))
                return -1;
            for (Py_ssize_t k = 0; k < trace_id.n; k++) {
                b->p[b->n++] = HEX[trace_id.p[k] >> 4];
                b->p[b->n++] = HEX[trace_id.p[k] & 15];
            }
        }
    }
    return buf_putc(b, '"');
}

static const char *const SEVERITY_NAMES[25] = {
    "UNSPECIFIED", "TRACE", "TRACE", "TRACE", "TRACE", "DEBUG", "DEBUG", "DEBUG", "DEBUG",
    "INFO", "INFO", "INFO", "INFO", "WARN", "WARN", "WARN", "WARN",
    "ERROR", "ERROR", "ERROR", "ERROR", "FATAL", "FATAL", "FATAL", "FATAL",
};

/* severity_text.upper(): ASCII here, anything else through str.upper (Unicode case rules). */
static int
write_upper(Buf *b, Slice text)
{
    int ascii = 1;
    for (Py_ssize_t i = 0; i < text.n; i++)
        if (text.p[i] >= 0x80) {
            ascii = 0;
            break;
        }
    if (ascii) {
        char small[64];
        char *up = text.n <= 64 ? small : PyMem_Malloc(text.n);
        if (up == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < text.n; i++) {
            uint8_t c = text.p[i];
            up[i] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
        }
        int rc = write_str(b, (const uint8_t *)up, text.n);
        if (up != small)
            PyMem_Free(up);
        return rc;
    }
    PyObject *s = PyUnicode_DecodeUTF8((const char *)text.p, text.n, "strict");
    PyObject *u = s ? PyObject_CallMethod(s, "upper", NULL) : NULL;
    Py_XDECREF(s);
    if (u == NULL)
        return -1;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(u, &n);
    int rc = utf8 ? write_str(b, (const uint8_t *)utf8, n) : -1;
    Py_DECREF(u);
    return rc;
}

static int
log_line(Buf *b, const Shared *sh, const Rec *rec, Stamp *st, Slices *attrs)
{
    LogRec r;
    Slice s = {rec->p, rec->n};
    attrs->n = 0;
    if (decode_log(s, &r, attrs))
        return -1;
    uint64_t observed = r.observed ? r.observed : sh->received;
    uint64_t t = r.time ? r.time : observed;
    if (PUT_LIT(b, "{\"timestamp\":") || write_stamp(b, st, t))
        return -1;
    if (PUT_LIT(b, ",\"observed_timestamp\":") || write_stamp(b, st, observed))
        return -1;
    if (PUT_LIT(b, ",\"severity\":"))
        return -1;
    if (r.severity > 0 && r.severity < 25) {
        const char *name = SEVERITY_NAMES[r.severity];
        if (write_str(b, (const uint8_t *)name, (Py_ssize_t)strlen(name)))
            return -1;
    }
    else if (r.severity_text.n) {
        if (write_upper(b, r.severity_text))
            return -1;
    }
    else if (PUT_LIT(b, "\"UNSPECIFIED\""))
        return -1;
    if (PUT_LIT(b, ",\"severity_number\":") || write_i64(b, r.severity))
        return -1;
    if (PUT_LIT(b, ",\"body\":") || write_any(b, r.body, r.has_body, 0))
        return -1;
    if (PUT_LIT(b, ",\"category\":") || buf_put(b, sh->category, sh->category_n))
        return -1;
    if (PUT_LIT(b, ",\"service.name\":") || put_item(b, sh->services, rec->resource))
        return -1;
    if (PUT_LIT(b, ",\"trace_id\":") || write_hex_id(b, r.trace_id))
        return -1;
    if (PUT_LIT(b, ",\"span_id\":") || write_hex_id(b, r.span_id))
        return -1;
    if (PUT_LIT(b, ",\"attributes\":") || write_kvs(b, attrs->v, attrs->n, 0))
        return -1;
    if (PUT_LIT(b, ",\"resource\":") || put_item(b, sh->resources, rec->resource))
        return -1;
    if (PUT_LIT(b, ",\"scope\":") || put_item(b, sh->scopes, rec->scope))
        return -1;
    if (r.event_name.n &&
        (PUT_LIT(b, ",\"event_name\":") || write_slice_str(b, r.event_name)))
        return -1;
    if (r.flags && (PUT_LIT(b, ",\"flags\":") || write_u64(b, r.flags)))
        return -1;
    if (r.dropped && (PUT_LIT(b, ",\"dropped_attributes_count\":") || write_u64(b, r.dropped)))
        return -1;
    if (put_trace_url(b, sh, r.trace_id))
        return -1;
    return PUT_LIT(b, "}\n");
}

static const char *const SPAN_KINDS[6] = {"unspecified", "internal", "server", "client",
                                          "producer", "consumer"};
static const char *const STATUS_CODES[3] = {"unset", "ok", "error"};

/* An enum as encode.py spells it: its name when known, else str(number) (a JSON string). */
static int
write_enum(Buf *b, int32_t v, const char *const *names, int count)
{
    if (v >= 0 && v < count)
        return write_str(b, (const uint8_t *)names[v], (Py_ssize_t)strlen(names[v]));
    char tmp[16];
    int n = snprintf(tmp, sizeof tmp, "\"%d\"", (int)v);
    return buf_put(b, tmp, n);
}

typedef struct {
    Slices attrs, events, links, sub;
} SpanScratch;

static int
span_line(Buf *b, const Shared *sh, const Rec *rec, Stamp *st, SpanScratch *x)
{
    SpanRec r;
    Slice s = {rec->p, rec->n};
    x->attrs.n = x->events.n = x->links.n = 0;
    if (decode_span(s, &r, &x->attrs, &x->events, &x->links))
        return -1;
    if (PUT_LIT(b, "{\"timestamp\":") || write_stamp(b, st, r.start ? r.start : sh->received))
        return -1;
    if (PUT_LIT(b, ",\"name\":") || write_slice_str(b, r.name))
        return -1;
    if (PUT_LIT(b, ",\"trace_id\":") || write_hex_id(b, r.trace_id))
        return -1;
    if (PUT_LIT(b, ",\"span_id\":") || write_hex_id(b, r.span_id))
        return -1;
    if (PUT_LIT(b, ",\"parent_span_id\":") || write_hex_id(b, r.parent_span_id))
        return -1;
    if (PUT_LIT(b, ",\"kind\":") || write_enum(b, r.kind, SPAN_KINDS, 6))
        return -1;
    if (PUT_LIT(b, ",\"start_time\":") || write_stamp(b, st, r.start))
        return -1;
    if (PUT_LIT(b, ",\"end_time\":") || write_stamp(b, st, r.end))
        return -1;
    /* (end - start) / 1e6 in Python: the int difference rounded to a double, then divided. */
    double duration = r.end >= r.start ? (double)(r.end - r.start) / 1e6 : 0.0;
    if (PUT_LIT(b, ",\"duration_ms\":") || write_double(b, duration))
        return -1;
    if (PUT_LIT(b, ",\"status\":{\"code\":") || write_enum(b, r.status_code, STATUS_CODES, 3))
        return -1;
    if (PUT_LIT(b, ",\"message\":") || write_slice_str(b, r.status_message) || buf_putc(b, '}'))
        return -1;
    if (PUT_LIT(b, ",\"category\":") || buf_put(b, sh->category, sh->category_n))
        return -1;
    if (PUT_LIT(b, ",\"service.name\":") || put_item(b, sh->services, rec->resource))
        return -1;
    if (PUT_LIT(b, ",\"attributes\":") || write_kvs(b, x->attrs.v, x->attrs.n, 0))
        return -1;
    if (PUT_LIT(b, ",\"events\":["))
        return -1;
    for (Py_ssize_t i = 0; i < x->events.n; i++) {
        EventRec e;
        x->sub.n = 0;
        if (decode_event(x->events.v[i], &e, &x->sub))
            return -1;
        if ((i && buf_putc(b, ',')) || PUT_LIT(b, "{\"name\":") || write_slice_str(b, e.name))
            return -1;
        if (PUT_LIT(b, ",\"time\":") || write_stamp(b, st, e.time))
            return -1;
        if (PUT_LIT(b, ",\"attributes\":") || write_kvs(b, x->sub.v, x->sub.n, 0) ||
            buf_putc(b, '}'))
            return -1;
    }
    if (PUT_LIT(b, "],\"links\":["))
        return -1;
    for (Py_ssize_t i = 0; i < x->links.n; i++) {
        LinkRec l;
        x->sub.n = 0;
        if (decode_link(x->links.v[i], &l, &x->sub))
            return -1;
        if ((i && buf_putc(b, ',')) || PUT_LIT(b, "{\"trace_id\":") || write_hex_id(b, l.trace_id))
            return -1;
        if (PUT_LIT(b, ",\"span_id\":") || write_hex_id(b, l.span_id))
            return -1;
        if (PUT_LIT(b, ",\"attributes\":") || write_kvs(b, x->sub.v, x->sub.n, 0) ||
            buf_putc(b, '}'))
            return -1;
    }
    if (PUT_LIT(b, "],\"resource\":") || put_item(b, sh->resources, rec->resource))
        return -1;
    if (PUT_LIT(b, ",\"scope\":") || put_item(b, sh->scopes, rec->scope))
        return -1;
    if (r.trace_state.n &&
        (PUT_LIT(b, ",\"trace_state\":") || write_slice_str(b, r.trace_state)))
        return -1;
    if (r.dropped_attributes &&
        (PUT_LIT(b, ",\"dropped_attributes_count\":") || write_u64(b, r.dropped_attributes)))
        return -1;
    if (r.dropped_events &&
        (PUT_LIT(b, ",\"dropped_events_count\":") || write_u64(b, r.dropped_events)))
        return -1;
    if (r.dropped_links &&
        (PUT_LIT(b, ",\"dropped_links_count\":") || write_u64(b, r.dropped_links)))
        return -1;
    if (put_trace_url(b, sh, r.trace_id))
        return -1;
    return PUT_LIT(b, "}\n");
}

static PyObject *
WireIndex_lines(WireIndex *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"positions", "category", "resources", "services", "scopes",
                             "received", "trace_url", NULL};
    PyObject *arg;
    Shared sh;
    unsigned long long received;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oy#O!O!O!KO", kwlist, &arg, &sh.category,
                                     &sh.category_n, &PyList_Type, &sh.resources, &PyList_Type,
                                     &sh.services, &PyList_Type, &sh.scopes, &received,
                                     &sh.trace_url))
        return NULL;
    sh.received = received;
    if (sh.trace_url != Py_None && !PyTuple_Check(sh.trace_url)) {
        PyErr_SetString(PyExc_TypeError, "trace_url must be a tuple of bytes or None");
        return NULL;
    }
    if (PyList_GET_SIZE(sh.resources) < self->n_resources ||
        PyList_GET_SIZE(sh.services) < self->n_resources ||
        PyList_GET_SIZE(sh.scopes) < self->n_scopes) {
        PyErr_SetString(PyExc_ValueError, "resource or scope table does not match the request");
        return NULL;
    }
    Positions pos;
    if (positions_open(self, arg, &pos))
        return NULL;
    PyObject *out = PyList_New(pos.n);
    Buf b = {NULL, 0, 0};
    Stamp st = {0, 0, {0}};
    SpanScratch x;
    slices_init(&x.attrs);
    slices_init(&x.events);
    slices_init(&x.links);
    slices_init(&x.sub);
    for (Py_ssize_t i = 0; out != NULL && i < pos.n; i++) {
        Rec *rec = positions_get(self, &pos, i);
        b.n = 0;
        int rc = rec == NULL ? -1
                 : self->signal == SIGNAL_LOGS ? log_line(&b, &sh, rec, &st, &x.attrs)
                                               : span_line(&b, &sh, rec, &st, &x);
        PyObject *line = rc == 0 ? PyBytes_FromStringAndSize(b.p, b.n) : NULL;
        if (line == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, line);
    }
    PyMem_Free(b.p);
    slices_free(&x.attrs);
    slices_free(&x.events);
    slices_free(&x.links);
    slices_free(&x.sub);
    Py_XDECREF(pos.seq);
    return out;
}

/* -- routing: the rule conditions that can be decided from the encoding ---------------------
 *
 * Mirrors CategoryRouter's rule loop (processors/routing.py) for the conditions below; any
 * other condition (regexes, scope globs, a value that is not a string...) makes the record
 * "undecided" and the router runs its Python predicates for it. Codes per record: the index of
 * the first rule that holds, -1 when none does (the default category), -2 for the Python path
 * (undecided, or the record names its category in `log.category`).
 */

enum { C_PRESENT = 0, C_PREFIX = 1, C_SEVERITY = 2, C_EQUALS = 3, C_EVENT = 4, C_PYTHON = 9 };

typedef struct {
    int kind;
    Slice *keys; /* C_PRESENT: any of these keys, on the record or its resource */
    Py_ssize_t n_keys;
    Slice a, b;  /* C_PREFIX: a; C_EQUALS: key a, value b; C_EVENT: a */
    long floor;  /* C_SEVERITY */
} Cond;

typedef struct {
    Cond *conds;
    Py_ssize_t n;
} RuleSpec;

typedef struct {
    RuleSpec *rules;
    Py_ssize_t n_rules;
    Slice explicit_key;
    Slice *level_names;
    long *level_numbers;
    Py_ssize_t n_levels;
    Slice *all_keys; /* storage for every C_PRESENT key list */
    Cond *all_conds;
} Program;

static int
as_slice(PyObject *o, Slice *s)
{
    if (!PyBytes_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "routing program strings must be bytes");
        return -1;
    }
    s->p = (const uint8_t *)PyBytes_AS_STRING(o);
    s->n = PyBytes_GET_SIZE(o);
    return 0;
}

static void
program_free(Program *pg)
{
    PyMem_Free(pg->rules);
    PyMem_Free(pg->all_conds);
    PyMem_Free(pg->all_keys);
    PyMem_Free(pg->level_names);
    PyMem_Free(pg->level_numbers);
}

/* program = (rules, explicit_key, levels): rules a list of condition lists, a condition a tuple
 * (kind, ...); levels a list of (name, number). Strings are bytes; they stay owned by `obj`. */
static int
program_parse(PyObject *obj, Program *pg)
{
    memset(pg, 0, sizeof(*pg));
    PyObject *rules, *explicit, *levels;
    if (!PyTuple_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "the program is a tuple (rules, explicit_key, levels)");
        return -1;
    }
    if (!PyArg_ParseTuple(obj, "O!SO!", &PyList_Type, &rules, &explicit, &PyList_Type, &levels))
        return -1;
    if (as_slice(explicit, &pg->explicit_key))
        return -1;
    Py_ssize_t n_rules = PyList_GET_SIZE(rules), n_conds = 0, n_keys = 0;
    for (Py_ssize_t i = 0; i < n_rules; i++) {
        PyObject *conds = PyList_GET_ITEM(rules, i);
        if (!PyList_Check(conds)) {
            PyErr_SetString(PyExc_TypeError, "a rule is a list of conditions");
            return -1;
        }
        n_conds += PyList_GET_SIZE(conds);
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(conds); k++) {
            PyObject *c = PyList_GET_ITEM(conds, k);
            if (!PyTuple_Check(c) || PyTuple_GET_SIZE(c) < 1) {
                PyErr_SetString(PyExc_TypeError, "a condition is a tuple (kind, ...)");
                return -1;
            }
            if (PyTuple_GET_SIZE(c) == 2 && PyTuple_Check(PyTuple_GET_ITEM(c, 1)))
                n_keys += PyTuple_GET_SIZE(PyTuple_GET_ITEM(c, 1));
        }
    }
    pg->rules = PyMem_Calloc(n_rules ? n_rules : 1, sizeof(RuleSpec));
    pg->all_conds = PyMem_Calloc(n_conds ? n_conds : 1, sizeof(Cond));
    pg->all_keys = PyMem_Calloc(n_keys ? n_keys : 1, sizeof(Slice));
    Py_ssize_t n_levels = PyList_GET_SIZE(levels);
    pg->level_names = PyMem_Calloc(n_levels ? n_levels : 1, sizeof(Slice));
    pg->level_numbers = PyMem_Calloc(n_levels ? n_levels : 1, sizeof(long));
    if (!pg->rules || !pg->all_conds || !pg->all_keys || !pg->level_names || !pg->level_numbers) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n_levels; i++) {
        PyObject *name, *number = NULL;
        PyObject *item = PyList_GET_ITEM(levels, i);
        if (!PyTuple_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "a level is a tuple (name, number)");
            return -1;
        }
        if (!PyArg_ParseTuple(item, "SO!", &name, &PyLong_Type, &number) ||
            as_slice(name, &pg->level_names[i]))
            return -1;
        pg->level_numbers[i] = PyLong_AsLong(number);
        if (pg->level_numbers[i] == -1 && PyErr_Occurred())
            return -1;
    }
    pg->n_levels = n_levels;
    Cond *cond = pg->all_conds;
    Slice *key = pg->all_keys;
    for (Py_ssize_t i = 0; i < n_rules; i++) {
        PyObject *conds = PyList_GET_ITEM(rules, i);
        pg->rules[i].conds = cond;
        pg->rules[i].n = PyList_GET_SIZE(conds);
        for (Py_ssize_t k = 0; k < pg->rules[i].n; k++, cond++) {
            PyObject *c = PyList_GET_ITEM(conds, k);
            long kind = PyLong_AsLong(PyTuple_GET_ITEM(c, 0));
            if (kind == -1 && PyErr_Occurred())
                return -1;
            cond->kind = (int)kind;
            Py_ssize_t size = PyTuple_GET_SIZE(c);
            switch (kind) {
            case C_PRESENT: {
                PyObject *keys = size == 2 ? PyTuple_GET_ITEM(c, 1) : NULL;
                if (keys == NULL || !PyTuple_Check(keys)) {
                    PyErr_SetString(PyExc_TypeError, "presence takes a tuple of keys");
                    return -1;
                }
                cond->keys = key;
                cond->n_keys = PyTuple_GET_SIZE(keys);
                for (Py_ssize_t j = 0; j < cond->n_keys; j++, key++)
                    if (as_slice(PyTuple_GET_ITEM(keys, j), key))
                        return -1;
                break;
            }
            case C_PREFIX:
            case C_EVENT:
                if (size != 2 || as_slice(PyTuple_GET_ITEM(c, 1), &cond->a))
                    return size != 2 ? (PyErr_SetString(PyExc_TypeError, "bad condition"), -1) : -1;
                break;
            case C_EQUALS:
                if (size != 3 || as_slice(PyTuple_GET_ITEM(c, 1), &cond->a) ||
                    as_slice(PyTuple_GET_ITEM(c, 2), &cond->b))
                    return size != 3 ? (PyErr_SetString(PyExc_TypeError, "bad condition"), -1) : -1;
                break;
            case C_SEVERITY:
                if (size != 2) {
                    PyErr_SetString(PyExc_TypeError, "bad condition");
                    return -1;
                }
                cond->floor = PyLong_AsLong(PyTuple_GET_ITEM(c, 1));
                if (cond->floor == -1 && PyErr_Occurred())
                    return -1;
                break;
            default:
                cond->kind = C_PYTHON;
            }
        }
    }
    pg->n_rules = n_rules;
    return 0;
}

static inline int
slice_eq(Slice a, Slice b)
{
    return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
}

/* The keys of a resource's attributes; a Resource field repeated on the wire is merged by
 * protobuf, its attribute lists concatenated: every occurrence counts. */
static int
resource_keys(Slice resource_level, Slices *out)
{
    Cur c = {resource_level.p, resource_level.p + resource_level.n};
    while (c.p < c.end) {
        uint32_t f;
        int wt;
        Slice res;
        if (rd_tag(&c, &f, &wt))
            return -1;
        if (!(f == 1 && wt == WT_LEN)) {
            if (skip_field(&c, f, wt, 0))
                return -1;
            continue;
        }
        if (rd_len(&c, &res))
            return -1;
        Slices kvs;
        slices_init(&kvs);
        int rc = collect(res, 1, &kvs);
        for (Py_ssize_t i = 0; rc == 0 && i < kvs.n; i++) {
            KV kv;
            rc = decode_kv(kvs.v[i], &kv);
            if (rc == 0)
                rc = slices_push(out, kv.key);
        }
        slices_free(&kvs);
        if (rc)
            return -1;
    }
    return 0;
}

static int
has_key(const Slices *keys, Slice key)
{
    for (Py_ssize_t i = 0; i < keys->n; i++)
        if (slice_eq(keys->v[i], key))
            return 1;
    return 0;
}

/* The last value of `key` among the record's attributes (dict semantics): 1 found, 0 not. */
static int
last_value(const KV *kvs, Py_ssize_t n, Slice key, const KV **found)
{
    for (Py_ssize_t i = n - 1; i >= 0; i--)
        if (slice_eq(kvs[i].key, key)) {
            *found = &kvs[i];
            return 1;
        }
    return 0;
}

/* 1 holds, 0 does not, -1 undecided (the Python predicate decides). */
static int
eval_cond(const Program *pg, const Cond *c, const LogRec *r, const KV *kvs, Py_ssize_t n,
          const Slices *rkeys)
{
    const KV *kv;
    AnyV v;
    switch (c->kind) {
    case C_PRESENT:
        for (Py_ssize_t k = 0; k < c->n_keys; k++) {
            for (Py_ssize_t i = 0; i < n; i++)
                if (slice_eq(kvs[i].key, c->keys[k]))
                    return 1;
            if (has_key(rkeys, c->keys[k]))
                return 1;
        }
        return 0;
    case C_PREFIX:
        for (Py_ssize_t i = 0; i < n; i++)
            if (kvs[i].key.n >= c->a.n && memcmp(kvs[i].key.p, c->a.p, c->a.n) == 0)
                return 1;
        return 0;
    case C_SEVERITY: {
        long number = r->severity;
        if (!(number > 0 && number <= 24)) {
            number = 0;
            if (r->severity_text.n) {
                char up[16];
                if (r->severity_text.n > (Py_ssize_t)sizeof up)
                    goto long_text;
                for (Py_ssize_t i = 0; i < r->severity_text.n; i++) {
                    uint8_t ch = r->severity_text.p[i];
                    if (ch >= 0x80)
                        return -1; /* str.upper has Unicode rules: 'ı'.upper() == 'I' */
                    up[i] = (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
                }
                Slice text = {(const uint8_t *)up, r->severity_text.n};
                for (Py_ssize_t i = 0; i < pg->n_levels; i++)
                    if (slice_eq(pg->level_names[i], text)) {
                        number = pg->level_numbers[i];
                        break;
                    }
            }
        }
        return number >= c->floor;
    long_text:
        /* Longer than any level name: no ASCII spelling matches; non-ASCII is Python's. */
        for (Py_ssize_t i = 0; i < r->severity_text.n; i++)
            if (r->severity_text.p[i] >= 0x80)
                return -1;
        return 0 >= c->floor;
    }
    case C_EQUALS:
        if (last_value(kvs, n, c->a, &kv)) {
            if (!kv->has_value || decode_any(kv->value, &v))
                return -1;
            if (v.kind != AV_STR)
                return -1; /* str() of other values: Python's */
            return slice_eq(v.s, c->b);
        }
        return has_key(rkeys, c->a) ? -1 : 0; /* the resource's value: Python's */
    case C_EVENT: {
        if (r->event_name.n)
            return slice_eq(r->event_name, c->a);
        static const Slice event_key = {(const uint8_t *)"event.name", 10};
        if (!last_value(kvs, n, event_key, &kv) || !kv->has_value)
            return 0; /* None == name */
        if (decode_any(kv->value, &v))
            return -1;
        return v.kind == AV_STR && slice_eq(v.s, c->a);
    }
    default:
        return -1;
    }
}

static PyObject *
WireIndex_classify(WireIndex *self, PyObject *arg)
{
    if (self->signal != SIGNAL_LOGS) {
        PyErr_SetString(PyExc_ValueError, "only log records are routed by rules");
        return NULL;
    }
    Program pg;
    if (program_parse(arg, &pg)) {
        program_free(&pg);
        return NULL;
    }
    PyObject *out = PyList_New(self->n);
    Slices *rkeys = PyMem_Calloc(self->n_resources ? self->n_resources : 1, sizeof(Slices));
    Slices attrs;
    slices_init(&attrs);
    KV small[32];
    KV *kvs = small;
    Py_ssize_t kv_cap = 32;
    int rc = out != NULL && rkeys != NULL ? 0 : -1;
    if (rkeys == NULL)
        PyErr_NoMemory();
    for (Py_ssize_t i = 0; rc == 0 && i < self->n_resources; i++) {
        slices_init(&rkeys[i]);
        rc = resource_keys(self->resources.v[i], &rkeys[i]);
    }
    for (Py_ssize_t i = 0; rc == 0 && i < self->n; i++) {
        Rec *rec = &self->recs[i];
        Slice s = {rec->p, rec->n};
        LogRec r;
        attrs.n = 0;
        if ((rc = decode_log(s, &r, &attrs)))
            break;
        if (attrs.n > kv_cap) {
            KV *bigger = PyMem_Malloc(attrs.n * sizeof(KV));
            if (bigger == NULL) {
                PyErr_NoMemory();
                rc = -1;
                break;
            }
            if (kvs != small)
                PyMem_Free(kvs);
            kvs = bigger;
            kv_cap = attrs.n;
        }
        long code = -1;
        for (Py_ssize_t k = 0; rc == 0 && k < attrs.n; k++) {
            rc = decode_kv(attrs.v[k], &kvs[k]);
            if (rc == 0 && slice_eq(kvs[k].key, pg.explicit_key))
                code = -2;
        }
        if (rc)
            break;
        for (Py_ssize_t k = 0; code == -1 && k < pg.n_rules; k++) {
            const RuleSpec *rule = &pg.rules[k];
            int holds = 1;
            for (Py_ssize_t j = 0; j < rule->n && holds != 0; j++) {
                int one = eval_cond(&pg, &rule->conds[j], &r, kvs, attrs.n, &rkeys[rec->resource]);
                if (one == 0 || (one < 0 && PyErr_Occurred()))
                    holds = 0;
                else if (one < 0)
                    holds = -1;
            }
            if (PyErr_Occurred()) {
                rc = -1;
                break;
            }
            if (holds == 1)
                code = (long)k;
            else if (holds == -1)
                code = -2;
        }
        PyObject *item = rc == 0 ? PyLong_FromLong(code) : NULL;
        if (item == NULL) {
            rc = -1;
            break;
        }
        PyList_SET_ITEM(out, i, item);
    }
    if (rkeys != NULL) {
        for (Py_ssize_t i = 0; i < self->n_resources; i++)
            if (rkeys[i].v != NULL)
                slices_free(&rkeys[i]);
        PyMem_Free(rkeys);
    }
    if (kvs != small)
        PyMem_Free(kvs);
    slices_free(&attrs);
    program_free(&pg);
    if (rc) {
        Py_XDECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *
WireIndex_get_len(WireIndex *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->n);
}

static PyObject *
WireIndex_get_resources(WireIndex *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->n_resources);
}

static PyObject *
WireIndex_get_scopes(WireIndex *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->n_scopes);
}

static PyMethodDef WireIndex_methods[] = {
    {"attributes", (PyCFunction)WireIndex_attributes, METH_VARARGS,
     "attributes(positions=None) -> list[dict]: each record's attributes as plain values."},
    {"span_ids", (PyCFunction)WireIndex_span_ids, METH_VARARGS,
     "span_ids(positions=None) -> list[bytes]: the non-empty span ids of those records, in order."},
    {"classify", (PyCFunction)WireIndex_classify, METH_O,
     "classify((rules, explicit_key, levels)) -> list[int]: per log record, the index of the "
     "first rule that holds, -1 for none, -2 when the Python predicates must decide."},
    {"lines", (PyCFunction)(void (*)(void))WireIndex_lines, METH_VARARGS | METH_KEYWORDS,
     "lines(positions, category, resources, services, scopes, received, trace_url) -> "
     "list[bytes]: one JSON line per record."},
    {NULL}};

static PyGetSetDef WireIndex_getset[] = {
    {"record_count", (getter)WireIndex_get_len, NULL, "records in the request", NULL},
    {"resource_count", (getter)WireIndex_get_resources, NULL, "resource-level messages", NULL},
    {"scope_count", (getter)WireIndex_get_scopes, NULL, "scope-level messages", NULL},
    {NULL}};

static PyTypeObject WireIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sluice_collector._fastpath.WireIndex",
    .tp_doc = "WireIndex(signal, data): the records of an encoded Export request (0 logs, 1 traces).",
    .tp_basicsize = sizeof(WireIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)WireIndex_init,
    .tp_dealloc = (destructor)WireIndex_dealloc,
    .tp_methods = WireIndex_methods,
    .tp_getset = WireIndex_getset,
};

/* -- locate: the twin of processors/wirescan.py's `locate` ----------------------------------
 * Which resources, scopes and records (and which fields of a record) a sorted list of byte
 * spans overlaps. Stricter than the Python reference, never more lenient: on anything odd (a
 * varint wider than 64 bits, a field running past its message, a group) it raises Unsupported
 * and the caller asks the reference, which then decides. */

typedef struct {
    uint64_t number;
    Py_ssize_t start, end;
} Field;

typedef struct {
    const uint8_t *buf;
    Py_ssize_t pos, end;
} FieldIter;

static int
loc_varint(const uint8_t *buf, Py_ssize_t end, Py_ssize_t *pos, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (*pos >= end)
            return unsupported("truncated varint");
        uint8_t b = buf[(*pos)++];
        if (i == 9 && (b & 0x7e))
            return unsupported("varint wider than 64 bits");
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return unsupported("varint longer than 10 bytes");
}

/* The next length-delimited field of [pos, end): 1 with *f set, 0 at the end, -1 on error. */
static int
loc_next(FieldIter *it, Field *f)
{
    while (it->pos < it->end) {
        uint64_t tag, n;
        if (loc_varint(it->buf, it->end, &it->pos, &tag))
            return -1;
        switch (tag & 7) {
        case WT_LEN:
            if (loc_varint(it->buf, it->end, &it->pos, &n))
                return -1;
            if (n > (uint64_t)(it->end - it->pos))
                return unsupported("length past the end of its message");
            f->number = tag >> 3;
            f->start = it->pos;
            f->end = it->pos + (Py_ssize_t)n;
            it->pos = f->end;
            return 1;
        case WT_VARINT:
            if (loc_varint(it->buf, it->end, &it->pos, &n))
                return -1;
            break;
        case WT_I64:
        case WT_I32: {
            Py_ssize_t width = (tag & 7) == WT_I64 ? 8 : 4;
            if (it->end - it->pos < width)
                return unsupported("field runs past the end of its message");
            it->pos += width;
            break;
        }
        default:
            return unsupported("wire type not used by OTLP");
        }
    }
    return 0;
}

typedef struct {
    const Py_ssize_t *starts, *ends;
    Py_ssize_t count;
} Spans;

/* The first span ending after `lo` (bisect_right over the ends). */
static Py_ssize_t
spans_after(const Spans *sp, Py_ssize_t lo)
{
    Py_ssize_t a = 0, b = sp->count;
    while (a < b) {
        Py_ssize_t mid = (a + b) / 2;
        if (lo < sp->ends[mid])
            b = mid;
        else
            a = mid + 1;
    }
    return a;
}

static int
spans_overlap(const Spans *sp, Py_ssize_t lo, Py_ssize_t hi)
{
    Py_ssize_t i = spans_after(sp, lo);
    return i < sp->count && sp->starts[i] < hi;
}

/* A list of (start, end) tuples (sorted, as the raw scan yields them) into `sp`; returns the
 * array behind it for PyMem_Free, or NULL with an exception set. */
static Py_ssize_t *
spans_read(PyObject *span_list, Spans *sp)
{
    Py_ssize_t count = PyList_GET_SIZE(span_list);
    Py_ssize_t *bounds = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(2 * count + 1));
    if (bounds == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *span = PyList_GET_ITEM(span_list, i);
        if (!PyTuple_Check(span) || !PyArg_ParseTuple(span, "nn", &bounds[i], &bounds[count + i])) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "spans must be (start, end) tuples");
            PyMem_Free(bounds);
            return NULL;
        }
    }
    *sp = (Spans){bounds, bounds + count, count};
    return bounds;
}

/* A list of (field number, occurrence) of the record's fields a span overlaps; NULL on error.
 * Occurrences are counted per number; numbers above 64 count in one shared slot table. */
static PyObject *
loc_parts(const uint8_t *buf, Py_ssize_t start, Py_ssize_t end, const Spans *sp, Py_ssize_t k)
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t seen_small[65] = {0};
    PyObject *seen_big = NULL; /* number -> count, for numbers past 64 (never in OTLP) */
    FieldIter it = {buf, start, end};
    Field f;
    int r;
    while ((r = loc_next(&it, &f)) == 1) {
        Py_ssize_t occurrence;
        if (f.number <= 64) {
            occurrence = seen_small[f.number]++;
        } else {
            if (seen_big == NULL && (seen_big = PyDict_New()) == NULL)
                goto fail;
            PyObject *key = PyLong_FromUnsignedLongLong(f.number);
            if (key == NULL)
                goto fail;
            PyObject *had = PyDict_GetItemWithError(seen_big, key);
            if (had == NULL && PyErr_Occurred()) {
                Py_DECREF(key);
                goto fail;
            }
            occurrence = had == NULL ? 0 : PyLong_AsSsize_t(had);
            PyObject *next = PyLong_FromSsize_t(occurrence + 1);
            if (next == NULL || PyDict_SetItem(seen_big, key, next) < 0) {
                Py_XDECREF(next);
                Py_DECREF(key);
                goto fail;
            }
            Py_DECREF(next);
            Py_DECREF(key);
        }
        while (k < sp->count && sp->ends[k] <= f.start)
            k++;
        if (k < sp->count && sp->starts[k] < f.end) {
            PyObject *part = Py_BuildValue("(Kn)", (unsigned long long)f.number, occurrence);
            if (part == NULL || PyList_Append(out, part) < 0) {
                Py_XDECREF(part);
                goto fail;
            }
            Py_DECREF(part);
        }
    }
    if (r < 0)
        goto fail;
    Py_XDECREF(seen_big);
    return out;
fail:
    Py_XDECREF(seen_big);
    Py_DECREF(out);
    return NULL;
}

static int
loc_add_int(PyObject *set, Py_ssize_t v)
{
    PyObject *o = PyLong_FromSsize_t(v);
    if (o == NULL)
        return -1;
    int r = PySet_Add(set, o);
    Py_DECREF(o);
    return r;
}

static int
loc_scope(const uint8_t *buf, Field *scope, const Spans *sp, Py_ssize_t ri, Py_ssize_t si,
          PyObject *scopes, PyObject *records, PyObject *parts, Py_ssize_t *elsewhere)
{
    Py_ssize_t k = spans_after(sp, scope->start), li = -1;
    FieldIter it = {buf, scope->start, scope->end};
    Field f;
    int r;
    while ((r = loc_next(&it, &f)) == 1) {
        if (f.number != 2) {
            if (spans_overlap(sp, f.start, f.end)) {
                if (f.number == 1) {
                    PyObject *where = Py_BuildValue("(nn)", ri, si);
                    if (where == NULL || PySet_Add(scopes, where) < 0) {
                        Py_XDECREF(where);
                        return -1;
                    }
                    Py_DECREF(where);
                } else {
                    (*elsewhere)++;
                }
            }
            continue;
        }
        li++;
        while (k < sp->count && sp->ends[k] <= f.start)
            k++;
        if (k < sp->count && sp->starts[k] < f.end) {
            PyObject *where = Py_BuildValue("(nnn)", ri, si, li);
            if (where == NULL)
                return -1;
            PyObject *hit = loc_parts(buf, f.start, f.end, sp, k);
            if (hit == NULL || PySet_Add(records, where) < 0 || PyDict_SetItem(parts, where, hit) < 0) {
                Py_XDECREF(hit);
                Py_DECREF(where);
                return -1;
            }
            Py_DECREF(hit);
            Py_DECREF(where);
        }
    }
    return r;
}

static PyObject *
fp_locate(PyObject *Py_UNUSED(mod), PyObject *args)
{
    Py_buffer view;
    PyObject *span_list;
    if (!PyArg_ParseTuple(args, "y*O!", &view, &PyList_Type, &span_list))
        return NULL;
    PyObject *resources = NULL, *scopes = NULL, *records = NULL, *parts = NULL, *out = NULL;
    Py_ssize_t elsewhere = 0;
    Spans sp;
    Py_ssize_t *bounds = spans_read(span_list, &sp);
    if (bounds == NULL)
        goto done;
    Py_ssize_t count = sp.count;
    if ((resources = PySet_New(NULL)) == NULL || (scopes = PySet_New(NULL)) == NULL ||
        (records = PySet_New(NULL)) == NULL || (parts = PyDict_New()) == NULL)
        goto done;
    if (count) {
        const uint8_t *buf = view.buf;
        FieldIter top = {buf, 0, view.len};
        Field rf;
        Py_ssize_t ri = -1;
        int r;
        while ((r = loc_next(&top, &rf)) == 1) {
            if (rf.number != 1) {
                if (spans_overlap(&sp, rf.start, rf.end))
                    elsewhere++;
                continue;
            }
            ri++;
            if (!spans_overlap(&sp, rf.start, rf.end))
                continue;
            Py_ssize_t si = -1;
            FieldIter mid = {buf, rf.start, rf.end};
            Field sf;
            int r2;
            while ((r2 = loc_next(&mid, &sf)) == 1) {
                if (sf.number == 1) {
                    if (spans_overlap(&sp, sf.start, sf.end) && loc_add_int(resources, ri) < 0)
                        goto done;
                    continue;
                }
                if (sf.number != 2) {
                    if (spans_overlap(&sp, sf.start, sf.end))
                        elsewhere++;
                    continue;
                }
                si++;
                if (!spans_overlap(&sp, sf.start, sf.end))
                    continue;
                if (loc_scope(buf, &sf, &sp, ri, si, scopes, records, parts, &elsewhere) < 0)
                    goto done;
            }
            if (r2 < 0)
                goto done;
        }
        if (r < 0)
            goto done;
    }
    out = Py_BuildValue("(OOOOn)", resources, scopes, records, parts, elsewhere);
done:
    Py_XDECREF(resources);
    Py_XDECREF(scopes);
    Py_XDECREF(records);
    Py_XDECREF(parts);
    PyMem_Free(bounds);
    PyBuffer_Release(&view);
    return out;
}

/* -- module-level helpers (the tests compare them with their Python counterparts) ------------- */

static PyObject *
fp_format_float(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    double v = PyFloat_AsDouble(arg);
    if (v == -1.0 && PyErr_Occurred())
        return NULL;
    Buf b = {NULL, 0, 0};
    if (write_double(&b, v)) {
        PyMem_Free(b.p);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(b.p, b.n);
    PyMem_Free(b.p);
    return out;
}

static PyObject *
fp_json_string(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (s == NULL)
        return NULL;
    Buf b = {NULL, 0, 0};
    if (write_str(&b, (const uint8_t *)s, n)) {
        PyMem_Free(b.p);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(b.p, b.n);
    PyMem_Free(b.p);
    return out;
}

static PyObject *
fp_rfc3339(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    unsigned long long ns = PyLong_AsUnsignedLongLong(arg);
    if (ns == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Buf b = {NULL, 0, 0};
    Stamp st = {0, 0, {0}};
    if (write_stamp(&b, &st, ns)) {
        PyMem_Free(b.p);
        return NULL;
    }
    PyObject *out = PyUnicode_DecodeASCII(b.p + 1, b.n - 2, "strict");
    PyMem_Free(b.p);
    return out;
}

/* -- validation (processors/validate.py) -------------------------------------------------- */

/* The last nanosecond a signed 64-bit count holds; validate.MAX_TIME_NS. */
#define MAX_TIME_NS ((uint64_t)INT64_MAX)

static inline int
bad_ids(Slice trace_id, Slice span_id)
{
    return (trace_id.n != 0 && trace_id.n != 16) || (span_id.n != 0 && span_id.n != 8);
}

/* 1 when validate.py's _log_problem / _span_problem would name a problem, 0 when not. */
static int
record_invalid(int signal, Slice in)
{
    if (signal == SIGNAL_LOGS) {
        LogRec r;
        if (decode_log(in, &r, NULL))
            return -1;
        return bad_ids(r.trace_id, r.span_id) || r.time > MAX_TIME_NS || r.observed > MAX_TIME_NS;
    }
    SpanRec r;
    Slices events;
    slices_init(&events);
    int rc = decode_span(in, &r, NULL, &events, NULL);
    if (rc == 0)
        rc = bad_ids(r.trace_id, r.span_id) || r.start > MAX_TIME_NS || r.end > MAX_TIME_NS;
    for (Py_ssize_t i = 0; rc == 0 && i < events.n; i++) {
        EventRec e;
        rc = decode_event(events.v[i], &e, NULL);
        if (rc == 0)
            rc = e.time > MAX_TIME_NS;
    }
    slices_free(&events);
    return rc;
}

/* The records of an encoded Export request (logs or traces) that validate.py would reject, as
 * a count: 0 lets the validator skip its walk of the decoded messages. The fields read are
 * the ones the index reads, with the same rules (the last of a repeated scalar wins, a known
 * field with another wire type is an unknown field); Unsupported for what it cannot read. */
/* The next length-delimited field `number` in `c` (others skipped): 1 found, 0 at the end. */
static int
next_len(Cur *c, uint32_t number, Slice *out)
{
    while (c->p < c->end) {
        uint32_t f;
        int wt;
        if (rd_tag(c, &f, &wt))
            return -1;
        if (f == number && wt == WT_LEN)
            return rd_len(c, out) ? -1 : 1;
        if (skip_field(c, f, wt, 0))
            return -1;
    }
    return 0;
}

static PyObject *
fp_count_invalid(PyObject *Py_UNUSED(mod), PyObject *args)
{
    int signal;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iy*", &signal, &view))
        return NULL;
    Py_ssize_t invalid = 0;
    int rc = 0;
    if (signal != SIGNAL_LOGS && signal != SIGNAL_TRACES) {
        PyErr_SetString(PyExc_ValueError, "signal must be 0 (logs) or 1 (traces)");
        rc = -1;
    }
    /* Export*ServiceRequest → Resource* (1) → Scope* (2) → records (2), as index_build reads. */
    Cur top = {view.buf, (const uint8_t *)view.buf + view.len};
    Slice rs, ss, rec;
    while (rc == 0 && (rc = next_len(&top, 1, &rs)) == 1) {
        Cur resource = {rs.p, rs.p + rs.n};
        while ((rc = next_len(&resource, 2, &ss)) == 1) {
            Cur scope = {ss.p, ss.p + ss.n};
            while ((rc = next_len(&scope, 2, &rec)) == 1) {
                int bad = record_invalid(signal, rec);
                if (bad < 0) {
                    rc = -1;
                    break;
                }
                invalid += bad;
            }
            if (rc)
                break;
        }
    }
    PyBuffer_Release(&view);
    return rc ? NULL : PyLong_FromSsize_t(invalid);
}

/* -- masking on the wire (processors/wiremask.py): collect the strings, then splice ---------
 *
 * `mask_collect` is the twin of the masking stage's walk over the decoded request (`_Walk`
 * with the raw scan's `Located`) for logs and traces: for every record, scope and resource a
 * span of the raw scan overlaps, the strings the walk would collect, as str, with their keys
 * and their byte ranges in `buf`. Masking then runs on those strings in Python, and `splice`
 * writes what changed straight into a copy of the encoding (new lengths up the nesting), so no
 * decoded message is walked, written or serialised again.
 *
 * The encoding must say exactly what the decoded request holds, or a splice could leave an old
 * copy of a secret on the wire: a string or message field that protobuf would merge or
 * overwrite (a singular field twice, two members of AnyValue's oneof, a key twice) raises
 * Unsupported, and the caller takes the walk over the decoded request instead. */

typedef struct {
    PyObject *texts, *keys, *places, *values, *owners;
    const uint8_t *buf;
    int depth;
} Col;

/* A str of the UTF-8 slice, or NULL (Unsupported when it is not valid UTF-8). */
static PyObject *
col_str(Slice s)
{
    if (!utf8_valid(s.p, s.n)) {
        unsupported("string is not valid UTF-8");
        return NULL;
    }
    return PyUnicode_DecodeUTF8((const char *)s.p, s.n, "strict");
}

static int
col_text(Col *c, Py_ssize_t owner, Slice s, PyObject *key)
{
    if (s.n == 0)
        return 0;
    PyObject *text = col_str(s);
    if (text == NULL)
        return -1;
    Py_ssize_t start = s.p - c->buf;
    PyObject *place = Py_BuildValue("(nnn)", owner, start, start + s.n);
    int rc = place == NULL || PyList_Append(c->texts, text) < 0 ||
             PyList_Append(c->keys, key) < 0 || PyList_Append(c->places, place) < 0;
    Py_DECREF(text);
    Py_XDECREF(place);
    return rc ? -1 : 0;
}

static int col_kvs_in(Col *c, Py_ssize_t owner, Slice list, uint32_t field);

static const char *const AV_NAMES[] = {NULL, "string_value", "bool_value", "int_value",
                                       "double_value", "array_value", "kvlist_value",
                                       "bytes_value", "string_value_strindex"};

/* `_Walk._value`: the AnyValue `in` found under `key` (None for a body or its array items). */
static int
col_any(Col *c, Py_ssize_t owner, Slice in, PyObject *key)
{
    AnyV v;
    if (c->depth > MAX_DEPTH)
        return unsupported("values nested too deeply");
    if (decode_any_as(in, &v, 1))
        return -1;
    if (v.kind == AV_NONE)
        return 0;
    if (v.kind == AV_STR)
        return col_text(c, owner, v.s, key);
    if (key == Py_None && v.kind != AV_ARRAY && v.kind != AV_KVLIST)
        return 0; /* no key, no key rule: a number or bytes stays as it is */
    PyObject *pyvalue = NULL;
    switch (v.kind) {
    case AV_BOOL: pyvalue = PyBool_FromLong(v.u != 0); break;
    case AV_INT: pyvalue = PyLong_FromLongLong((long long)(int64_t)v.u); break;
    case AV_STRINDEX: pyvalue = PyLong_FromLong((long)(int32_t)(uint32_t)v.u); break;
    case AV_DOUBLE: {
        double d;
        memcpy(&d, &v.u, sizeof d);
        pyvalue = PyFloat_FromDouble(d);
        break;
    }
    case AV_BYTES: pyvalue = PyBytes_FromStringAndSize((const char *)v.s.p, v.s.n); break;
    default: pyvalue = Py_NewRef(Py_None);
    }
    if (pyvalue == NULL)
        return -1;
    Py_ssize_t start = in.p - c->buf, index = -1;
    if (key != Py_None) {
        /* (owner, key, kind, value, start, end, texts from, texts to, values to); a container's
         * last three are filled in once its children are collected. */
        PyObject *entry = Py_BuildValue("[nOsOnnnnn]", owner, key, AV_NAMES[v.kind], pyvalue,
                                        start, start + in.n, PyList_GET_SIZE(c->texts),
                                        PyList_GET_SIZE(c->texts), PyList_GET_SIZE(c->values) + 1);
        index = PyList_GET_SIZE(c->values);
        if (entry == NULL || PyList_Append(c->values, entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(pyvalue);
            return -1;
        }
        Py_DECREF(entry);
    }
    Py_DECREF(pyvalue);
    if (v.kind != AV_ARRAY && v.kind != AV_KVLIST)
        return 0;
    int rc = 0;
    c->depth++;
    if (v.kind == AV_KVLIST)
        rc = col_kvs_in(c, owner, v.s, 1);
    else {
        Cur cur = {v.s.p, v.s.p + v.s.n};
        Slice item;
        while ((rc = next_len(&cur, 1, &item)) == 1)
            if ((rc = col_any(c, owner, item, key)) < 0)
                break;
    }
    c->depth--;
    if (rc < 0)
        return -1;
    if (index >= 0) {
        PyObject *entry = PyList_GET_ITEM(c->values, index);
        PyObject *texts_to = PyLong_FromSsize_t(PyList_GET_SIZE(c->texts));
        PyObject *values_to = PyLong_FromSsize_t(PyList_GET_SIZE(c->values));
        if (texts_to == NULL || values_to == NULL) {
            Py_XDECREF(texts_to);
            Py_XDECREF(values_to);
            return -1;
        }
        PyList_SetItem(entry, 7, texts_to);
        PyList_SetItem(entry, 8, values_to);
    }
    return 0;
}

/* `_Walk._attributes` for one KeyValue. */
static int
col_kv(Col *c, Py_ssize_t owner, Slice in)
{
    Cur cur = {in.p, in.p + in.n};
    Slice key = {in.p, 0}, value = {NULL, 0};
    int keys = 0, values = 0;
    while (cur.p < cur.end) {
        uint32_t f;
        int wt;
        if (rd_tag(&cur, &f, &wt))
            return -1;
        if ((f == 1 || f == 2) && wt == WT_LEN) {
            if ((f == 1 ? ++keys : ++values) > 1)
                return unsupported("KeyValue field repeated on the wire");
            if (rd_len(&cur, f == 1 ? &key : &value))
                return -1;
        }
        else if (skip_field(&cur, f, wt, 0))
            return -1;
    }
    PyObject *pykey = col_str(key);
    if (pykey == NULL)
        return -1;
    int rc = col_text(c, owner, key, Py_None);
    if (rc == 0 && values)
        rc = col_any(c, owner, value, pykey);
    Py_DECREF(pykey);
    return rc;
}

/* Every KeyValue of repeated field `field` in the message `list`. */
static int
col_kvs_in(Col *c, Py_ssize_t owner, Slice list, uint32_t field)
{
    Cur cur = {list.p, list.p + list.n};
    Slice kv;
    int rc;
    while ((rc = next_len(&cur, field, &kv)) == 1)
        if (col_kv(c, owner, kv) < 0)
            return -1;
    return rc;
}

/* Fields `singular` (a 0-terminated list) may occur once in `msg`; returns -1 otherwise. */
static int
col_once(Slice msg, const uint32_t *singular)
{
    int seen[20] = {0};
    Cur cur = {msg.p, msg.p + msg.n};
    while (cur.p < cur.end) {
        uint32_t f;
        int wt;
        if (rd_tag(&cur, &f, &wt))
            return -1;
        for (int i = 0; singular[i]; i++)
            if (singular[i] == f && wt == WT_LEN && ++seen[i] > 1)
                return unsupported("a singular field repeated on the wire");
        if (skip_field(&cur, f, wt, 0))
            return -1;
    }
    return 0;
}

static int
col_owner(Col *c, Py_ssize_t elem_start, Py_ssize_t elem_end, Slice holder, int field,
          Py_ssize_t records, Py_ssize_t parent, Py_ssize_t *id)
{
    Py_ssize_t hs = holder.p ? holder.p - c->buf : -1;
    PyObject *o = Py_BuildValue("(nnnninn)", elem_start, elem_end, hs, hs < 0 ? -1 : hs + holder.n,
                                field, records, parent);
    if (o == NULL || PyList_Append(c->owners, o) < 0) {
        Py_XDECREF(o);
        return -1;
    }
    Py_DECREF(o);
    *id = PyList_GET_SIZE(c->owners) - 1;
    return 0;
}

/* One record's fields that a span overlaps, as `_log_parts` / `_span_parts` read them. */
static int
col_record(Col *c, int signal, Slice rec, const Spans *sp, Py_ssize_t owner)
{
    static const uint32_t log_once[] = {3, 5, 12, 0}, span_once[] = {3, 5, 15, 0};
    static const uint32_t event_once[] = {2, 0}, link_once[] = {3, 0}, status_once[] = {2, 0};
    if (col_once(rec, signal == SIGNAL_LOGS ? log_once : span_once))
        return -1;
    FieldIter it = {c->buf, rec.p - c->buf, rec.p - c->buf + rec.n};
    Field f;
    int r;
    while ((r = loc_next(&it, &f)) == 1) {
        if (!spans_overlap(sp, f.start, f.end))
            continue;
        Slice s = {c->buf + f.start, f.end - f.start};
        int rc = 0;
        if (signal == SIGNAL_LOGS) {
            if (f.number == 6)
                rc = col_kv(c, owner, s);
            else if (f.number == 5)
                rc = col_any(c, owner, s, Py_None);
            else if (f.number == 3 || f.number == 12)
                rc = col_text(c, owner, s, Py_None);
        }
        else if (f.number == 9)
            rc = col_kv(c, owner, s);
        else if (f.number == 3 || f.number == 5)
            rc = col_text(c, owner, s, Py_None);
        else if (f.number == 11 || f.number == 13) { /* an event: name, attributes; a link */
            uint32_t text_field = f.number == 11 ? 2 : 3;
            rc = col_once(s, f.number == 11 ? event_once : link_once);
            Cur cur = {s.p, s.p + s.n};
            Slice t;
            while (rc == 0 && (rc = next_len(&cur, text_field, &t)) == 1)
                rc = col_text(c, owner, t, Py_None);
            if (rc == 0)
                rc = col_kvs_in(c, owner, s, f.number == 11 ? 3 : 4);
        }
        else if (f.number == 15) { /* the status message */
            rc = col_once(s, status_once);
            Cur cur = {s.p, s.p + s.n};
            Slice t;
            if (rc == 0 && (rc = next_len(&cur, 2, &t)) == 1)
                rc = col_text(c, owner, t, Py_None);
        }
        if (rc < 0)
            return -1;
    }
    return r;
}

/* The records of scope-level message `sl` (field 2 each): how many. */
static int
col_count(const uint8_t *buf, Field *sl, Py_ssize_t *n)
{
    FieldIter it = {buf, sl->start, sl->end};
    Field f;
    int r;
    *n = 0;
    while ((r = loc_next(&it, &f)) == 1)
        *n += f.number == 2;
    return r;
}

static PyObject *
fp_mask_collect(PyObject *Py_UNUSED(mod), PyObject *args)
{
    int signal;
    Py_buffer view;
    PyObject *span_list;
    if (!PyArg_ParseTuple(args, "iy*O!", &signal, &view, &PyList_Type, &span_list))
        return NULL;
    PyObject *out = NULL;
    Col c = {PyList_New(0), PyList_New(0), PyList_New(0), PyList_New(0), PyList_New(0), view.buf, 0};
    Spans sp;
    Py_ssize_t *bounds = NULL;
    if (!c.texts || !c.keys || !c.places || !c.values || !c.owners)
        goto done;
    if (signal != SIGNAL_LOGS && signal != SIGNAL_TRACES) {
        PyErr_SetString(PyExc_ValueError, "signal must be 0 (logs) or 1 (traces)");
        goto done;
    }
    if ((bounds = spans_read(span_list, &sp)) == NULL)
        goto done;
    static const uint32_t level_once[] = {1, 0}, scope_once[] = {1, 2, 0};
    const uint8_t *buf = view.buf;
    FieldIter top = {buf, 0, view.len};
    Field rf;
    int r;
    while ((r = loc_next(&top, &rf)) == 1) {
        if (!spans_overlap(&sp, rf.start, rf.end))
            continue;
        if (rf.number != 1) {
            unsupported("a match outside resources, scopes and records");
            goto done;
        }
        Slice rl = {buf + rf.start, rf.end - rf.start};
        if (col_once(rl, level_once))
            goto done;
        /* The resource's owner first, with every record under it counted. */
        Slice resource = {NULL, 0};
        Py_ssize_t records = 0, resource_owner;
        FieldIter mid = {buf, rf.start, rf.end};
        Field sf;
        int r2;
        while ((r2 = loc_next(&mid, &sf)) == 1) {
            Py_ssize_t n;
            if (sf.number == 1)
                resource = (Slice){buf + sf.start, sf.end - sf.start};
            else if (sf.number == 2) {
                if (col_count(buf, &sf, &n) < 0)
                    goto done;
                records += n;
            }
            else if (spans_overlap(&sp, sf.start, sf.end)) {
                unsupported("a match outside resources, scopes and records");
                goto done;
            }
        }
        if (r2 < 0 || col_owner(&c, rf.start, rf.end, resource, 1, records, -1, &resource_owner))
            goto done;
        if (resource.p && spans_overlap(&sp, resource.p - buf, resource.p - buf + resource.n) &&
            col_kvs_in(&c, resource_owner, resource, 1) < 0)
            goto done;
        mid = (FieldIter){buf, rf.start, rf.end};
        while ((r2 = loc_next(&mid, &sf)) == 1) {
            if (sf.number != 2 || !spans_overlap(&sp, sf.start, sf.end))
                continue;
            Slice sl = {buf + sf.start, sf.end - sf.start}, scope = {NULL, 0};
            Py_ssize_t n, scope_owner;
            if (col_once(sl, level_once) || col_count(buf, &sf, &n) < 0)
                goto done;
            FieldIter leaf = {buf, sf.start, sf.end};
            Field lf;
            int r3;
            while ((r3 = loc_next(&leaf, &lf)) == 1)
                if (lf.number == 1)
                    scope = (Slice){buf + lf.start, lf.end - lf.start};
            if (r3 < 0 || col_owner(&c, sf.start, sf.end, scope, 3, n, resource_owner, &scope_owner))
                goto done;
            if (scope.p && spans_overlap(&sp, scope.p - buf, scope.p - buf + scope.n)) {
                Cur cur = {scope.p, scope.p + scope.n};
                if (col_once(scope, scope_once))
                    goto done;
                while (cur.p < cur.end) { /* name (1) and version (2), then attributes (3) */
                    uint32_t f;
                    int wt;
                    Slice s;
                    if (rd_tag(&cur, &f, &wt))
                        goto done;
                    if ((f == 1 || f == 2) && wt == WT_LEN) {
                        if (rd_len(&cur, &s) || col_text(&c, scope_owner, s, Py_None))
                            goto done;
                    }
                    else if (skip_field(&cur, f, wt, 0))
                        goto done;
                }
                if (col_kvs_in(&c, scope_owner, scope, 3) < 0)
                    goto done;
            }
            leaf = (FieldIter){buf, sf.start, sf.end};
            while ((r3 = loc_next(&leaf, &lf)) == 1) {
                if (!spans_overlap(&sp, lf.start, lf.end))
                    continue;
                if (lf.number != 1 && lf.number != 2) {
                    unsupported("a match outside resources, scopes and records");
                    goto done;
                }
                if (lf.number != 2)
                    continue;
                Slice rec = {buf + lf.start, lf.end - lf.start};
                Py_ssize_t owner;
                if (col_owner(&c, lf.start, lf.end, rec, signal == SIGNAL_LOGS ? 6 : 9, 1,
                              scope_owner, &owner) ||
                    col_record(&c, signal, rec, &sp, owner) < 0)
                    goto done;
            }
            if (r3 < 0)
                goto done;
        }
        if (r2 < 0)
            goto done;
    }
    if (r < 0)
        goto done;
    out = PyTuple_Pack(5, c.texts, c.keys, c.places, c.values, c.owners);
done:
    Py_XDECREF(c.texts);
    Py_XDECREF(c.keys);
    Py_XDECREF(c.places);
    Py_XDECREF(c.values);
    Py_XDECREF(c.owners);
    PyMem_Free(bounds);
    PyBuffer_Release(&view);
    return out;
}

/* -- splice ------------------------------------------------------------------------------- */

enum { EDIT_REPLACE = 0, EDIT_APPEND = 1, EDIT_DROP = 2 };

typedef struct {
    Py_ssize_t start, end;
    int op;
    const char *payload;
    Py_ssize_t n;
} Edit;

static int
put_varint(Buf *b, uint64_t v)
{
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return buf_put(b, tmp, n);
}

/* The content of the message [lo, hi) of `buf` into `out`, with edits[*ei..] that lie inside
 * it applied: a field whose value range an edit names exactly is replaced or dropped, a field
 * that holds an edit is rewritten (new length), an APPEND naming [lo, hi) goes at its end. */
static int
splice_msg(Buf *out, const uint8_t *buf, Py_ssize_t lo, Py_ssize_t hi, const Edit *edits,
           Py_ssize_t count, Py_ssize_t *ei, int depth)
{
    if (depth > MAX_DEPTH)
        return unsupported("edits nested too deeply");
    Py_ssize_t appends_from = *ei, appends_to = *ei;
    while (appends_to < count && edits[appends_to].start == lo && edits[appends_to].end == hi &&
           edits[appends_to].op == EDIT_APPEND)
        appends_to++;
    *ei = appends_to;
    Py_ssize_t pos = lo;
    while (pos < hi) {
        Py_ssize_t field_start = pos;
        uint64_t tag, n;
        if (loc_varint(buf, hi, &pos, &tag))
            return -1;
        if ((tag & 7) != WT_LEN) {
            /* Not length-delimited: skip it whole (loc_next's rules), copied below. */
            Py_ssize_t width = 0;
            if ((tag & 7) == WT_VARINT) {
                if (loc_varint(buf, hi, &pos, &n))
                    return -1;
            }
            else if ((tag & 7) == WT_I64 || (tag & 7) == WT_I32)
                width = (tag & 7) == WT_I64 ? 8 : 4;
            else
                return unsupported("wire type not used by OTLP");
            if (hi - pos < width)
                return unsupported("field runs past the end of its message");
            pos += width;
            if (buf_put(out, (const char *)buf + field_start, pos - field_start))
                return -1;
            continue;
        }
        Py_ssize_t tag_end = pos;
        if (loc_varint(buf, hi, &pos, &n))
            return -1;
        (void)tag_end;
        if (n > (uint64_t)(hi - pos))
            return unsupported("length past the end of its message");
        Py_ssize_t vs = pos, ve = pos + (Py_ssize_t)n;
        pos = ve;
        if (*ei >= count || edits[*ei].start > ve || edits[*ei].start < vs) {
            if (buf_put(out, (const char *)buf + field_start, ve - field_start))
                return -1;
            continue;
        }
        const Edit *e = &edits[*ei];
        if (e->end > ve)
            return unsupported("an edit crosses a field's end");
        /* The field's tag again (its varint as sent), then the new value. */
        Py_ssize_t tag_len = 0;
        {
            Py_ssize_t p = field_start;
            uint64_t t;
            if (loc_varint(buf, hi, &p, &t))
                return -1;
            tag_len = p - field_start;
        }
        if (e->start == vs && e->end == ve && e->op == EDIT_DROP) {
            (*ei)++;
            while (*ei < count && edits[*ei].start >= vs && edits[*ei].end <= ve)
                (*ei)++; /* whatever was to change inside goes with it */
            continue;
        }
        if (buf_put(out, (const char *)buf + field_start, tag_len))
            return -1;
        if (e->start == vs && e->end == ve && e->op == EDIT_REPLACE) {
            (*ei)++;
            if (put_varint(out, (uint64_t)e->n) || buf_put(out, e->payload, e->n))
                return -1;
            continue;
        }
        Buf inner = {NULL, 0, 0};
        if (splice_msg(&inner, buf, vs, ve, edits, count, ei, depth + 1) ||
            put_varint(out, (uint64_t)inner.n) || buf_put(out, inner.p, inner.n)) {
            PyMem_Free(inner.p);
            return -1;
        }
        PyMem_Free(inner.p);
    }
    for (Py_ssize_t i = appends_from; i < appends_to; i++)
        if (buf_put(out, edits[i].payload, edits[i].n))
            return -1;
    return 0;
}

static PyObject *
fp_splice(PyObject *Py_UNUSED(mod), PyObject *args)
{
    Py_buffer view;
    PyObject *edit_list;
    if (!PyArg_ParseTuple(args, "y*O!", &view, &PyList_Type, &edit_list))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t count = PyList_GET_SIZE(edit_list), ei = 0;
    Edit *edits = PyMem_Malloc(sizeof(Edit) * (size_t)(count + 1));
    Buf b = {NULL, 0, 0};
    if (edits == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(edit_list, i);
        Edit *e = &edits[i];
        if (!PyTuple_Check(item) ||
            !PyArg_ParseTuple(item, "nniy#", &e->start, &e->end, &e->op, &e->payload, &e->n)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "edits must be (start, end, op, payload) tuples");
            goto done;
        }
        if (e->start < 0 || e->end < e->start || e->end > view.len || e->op < 0 || e->op > 2 ||
            (i && (e->start < edits[i - 1].start ||
                   (e->start == edits[i - 1].start && e->end > edits[i - 1].end)))) {
            PyErr_SetString(PyExc_ValueError, "edits must be in the buffer, sorted by (start, -end)");
            goto done;
        }
    }
    if (splice_msg(&b, view.buf, 0, view.len, edits, count, &ei, 0) == 0) {
        if (ei != count)
            unsupported("an edit names no field of the message");
        else
            out = PyBytes_FromStringAndSize(b.p ? b.p : "", b.n);
    }
done:
    PyMem_Free(b.p);
    PyMem_Free(edits);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef module_methods[] = {
    {"format_float", fp_format_float, METH_O, "A float as the JSON lines spell it (bytes)."},
    {"json_string", fp_json_string, METH_O, "A str as a JSON string (bytes)."},
    {"rfc3339", fp_rfc3339, METH_O, "Unix nanoseconds as the JSON lines' RFC 3339 text."},
    {"locate", fp_locate, METH_VARARGS,
     "locate(buf, spans) -> (resources, scopes, records, parts, elsewhere); see wirescan.locate."},
    {"count_invalid", fp_count_invalid, METH_VARARGS,
     "count_invalid(signal, buf) -> the records validate.py would reject (0 logs, 1 traces)."},
    {"mask_collect", fp_mask_collect, METH_VARARGS,
     "mask_collect(signal, buf, spans) -> (texts, keys, places, values, owners); see "
     "processors/wiremask.py."},
    {"splice", fp_splice, METH_VARARGS,
     "splice(buf, edits) -> bytes: `buf` with (start, end, op, payload) edits applied; see "
     "processors/wiremask.py."},
    {NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sluice_collector._fastpath",
    .m_doc = "The compiled twin of the receiver's hot path; see sluice_collector/fastpath.py.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    init_escapes();
    if (PyType_Ready(&WireIndexType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Unsupported = PyErr_NewExceptionWithDoc(
        "sluice_collector._fastpath.Unsupported",
        "The encoding holds something the compiled path does not reproduce exactly (or is "
        "malformed): use a fresh serialisation or the Python path.",
        PyExc_ValueError, NULL);
    if (Unsupported == NULL || PyModule_AddObjectRef(m, "Unsupported", Unsupported) < 0 ||
        PyModule_AddObjectRef(m, "WireIndex", (PyObject *)&WireIndexType) < 0) {
        Py_CLEAR(Unsupported);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
