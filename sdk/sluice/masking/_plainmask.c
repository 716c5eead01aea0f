/*
 * sluice.masking._plainmask: the compiled twin of the per-string rewrite for the three detectors
 * that fill real access and auth logs: `card`, `email` and `ipv4`.
 *
 * On a PII-dense batch about one string in two holds a hit, and for about three in four of those
 * the last detectors the RE2 set names are these (for most, nothing else). In Python each such string costs a `re` finditer per
 * detector, a closure call per match, the check (Luhn, IPv4 ranges) and the glued-token regex:
 * about 15 us. Here it is one pass per detector over the characters.
 *
 * What it mirrors exactly (engine.py `_rewrite_text` with `detectors.py`'s patterns under
 * Python `re` with re.ASCII, and `validators.py`): leftmost matches scanned as `finditer` does,
 * with the same backtracking outcome for each pattern (worked out per pattern below), the same
 * checks, the same replacement text. Whenever the Python code would do something this file does
 * not model, `rewrite` returns None and the caller runs the Python path instead:
 *   - the text holds a `[HASH:` or `pseu_` mark (a pseudonym can be part of an e-mail match, so
 *     `_outside_tokens` would apply; and the glued check below knows `[REDACTED:` tokens only).
 *     A `[REDACTED:...]` token is fine: no match of these three patterns can overlap one (its
 *     brackets and colon are in none of their character classes, and it holds no dot), so the
 *     Python code's token-overlap logic changes nothing for them;
 *   - an IPv4 address is followed by `/` (the CIDR network check);
 *   - a written token is glued to the text around it (a second round would run).
 * Only the default replacement template and the actions below are modelled; the caller checks.
 *
 * tests/sdk/test_masking_compiled.py holds it equal to the Python path (hypothesis, and seeded
 * lines built from each pattern's edge cases).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { DET_CARD = 1, DET_EMAIL = 2, DET_IPV4 = 4, IPV4_MASK = 8 };

typedef struct {
    Py_UCS4 *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} buffer;

static int buffer_put(buffer *out, const Py_UCS4 *chars, Py_ssize_t count) {
    if (out->len + count > out->cap) {
        Py_ssize_t cap = (out->len + count) * 2 + 16;
        Py_UCS4 *grown = PyMem_Realloc(out->data, (size_t)cap * sizeof(Py_UCS4));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        out->data = grown;
        out->cap = cap;
    }
    if (count) {
        memcpy(out->data + out->len, chars, (size_t)count * sizeof(Py_UCS4));
    }
    out->len += count;
    return 0;
}

static int buffer_put_ascii(buffer *out, const char *text) {
    Py_UCS4 chars[32];
    Py_ssize_t count = (Py_ssize_t)strlen(text);
    for (Py_ssize_t i = 0; i < count; i++) {
        chars[i] = (Py_UCS4)(unsigned char)text[i];
    }
    return buffer_put(out, chars, count);
}

/* re.ASCII: \d is 0-9 and \w is [A-Za-z0-9_]; every other character is a non-word one. */
static inline int is_digit(Py_UCS4 c) { return c >= '0' && c <= '9'; }
static inline int is_alpha(Py_UCS4 c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static inline int is_alnum(Py_UCS4 c) { return is_digit(c) || is_alpha(c); }
static inline int is_word(Py_UCS4 c) { return is_alnum(c) || c == '_'; }
/* \b before position `at`: the characters on its two sides differ in wordness. */
static inline int boundary(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t at) {
    int before = at > 0 && is_word(s[at - 1]);
    int after = at < n && is_word(s[at]);
    return before != after;
}

static int starts_with(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t at, const char *text) {
    for (Py_ssize_t i = 0; text[i]; i++) {
        if (at + i >= n || s[at + i] != (Py_UCS4)(unsigned char)text[i]) {
            return 0;
        }
    }
    return 1;
}

static int contains(const Py_UCS4 *s, Py_ssize_t n, const char *text) {
    for (Py_ssize_t at = 0; at < n; at++) {
        if (s[at] == (Py_UCS4)(unsigned char)text[0] && starts_with(s, n, at, text)) {
            return 1;
        }
    }
    return 0;
}

/* detectors._not_in_number: not part of a decimal or dotted number (str.isdigit, any script). */
static int not_in_number(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t start, Py_ssize_t end) {
    if (start > 0 && s[start - 1] == '.') {
        return 0;
    }
    return !(end + 1 < n && s[end] == '.' && Py_UNICODE_ISDIGIT(s[end + 1]));
}

/* -- card: \b[2-6](?:[ -]?\d){12,18}\b ------------------------------------------------------
 * Each repetition is a digit, or one separator and a digit (a separator not followed by a digit
 * ends the repetitions: backtracking the optional separator cannot help). The greedy count then
 * backs off until \b holds after the last digit, down to 12 repetitions. */
static Py_ssize_t card_at(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t p) {
    if (!(s[p] >= '2' && s[p] <= '6') || (p > 0 && is_word(s[p - 1]))) {
        return -1;
    }
    Py_ssize_t ends[19];
    int count = 0;
    Py_ssize_t cursor = p + 1;
    while (count < 18) {
        if (cursor < n && is_digit(s[cursor])) {
            cursor += 1;
        } else if (cursor + 1 < n && (s[cursor] == ' ' || s[cursor] == '-') && is_digit(s[cursor + 1])) {
            cursor += 2;
        } else {
            break;
        }
        ends[++count] = cursor;
    }
    for (int k = count; k >= 12; k--) {
        if (ends[k] == n || !is_word(s[ends[k]])) {
            return ends[k];
        }
    }
    return -1;
}

/* validators._ascii_card_ok after detectors._card's _not_in_number. */
static int card_ok(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t start, Py_ssize_t end) {
    if (!not_in_number(s, n, start, end)) {
        return 0;
    }
    Py_UCS4 separator = 0;
    Py_ssize_t group = 0;
    int digits[19];
    int count = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        if (is_digit(s[i])) {
            digits[count++] = (int)(s[i] - '0');
            group += 1;
            continue;
        }
        if (separator && s[i] != separator) {
            return 0; /* one kind of separator */
        }
        separator = s[i];
        if (group < 4) {
            return 0; /* every group but the last has four digits or more */
        }
        group = 0;
    }
    int same = 1;
    for (int i = 1; i < count; i++) {
        same &= digits[i] == digits[0];
    }
    if (same) {
        return 0;
    }
    int total = 0;
    for (int i = count - 1, place = 0; i >= 0; i--, place++) {
        int value = digits[i];
        if (place % 2) {
            value = value > 4 ? 2 * value - 9 : 2 * value;
        }
        total += value;
    }
    return total % 10 == 0;
}

/* -- email: \b[A-Za-z0-9._%+-]{1,64}(?:@|%40)[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*
 *           \.[A-Za-z]{2,24}\b
 * Labels cannot end short of their run (what follows a label must be a dot), so a label is a
 * whole run of at most 63 characters. The starred labels are taken greedily while each is such a
 * run followed by a dot; then the last dot is tried for the top-level part (letters, 2-24, then
 * a non-word character), giving back one label at a time. The local part ends at the `@` right
 * after its run (a run of at most 64) or, trying longer first, before a `%40` inside it. */
static inline int is_local(Py_UCS4 c) {
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}
static inline int is_label(Py_UCS4 c) { return is_alnum(c) || c == '-'; }

/* The length of the run of `member` characters at `at`, counted up to `most` (a pattern's bound
 * plus one says "too long" without reading on: every position of a long run would otherwise
 * read all of it, quadratic in the string). */
static Py_ssize_t run_of(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t at, int (*member)(Py_UCS4),
                         Py_ssize_t most) {
    Py_ssize_t end = at;
    while (end < n && end - at < most && member(s[end])) {
        end++;
    }
    return end - at;
}

static Py_ssize_t domain_at(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t d) {
    Py_ssize_t first = run_of(s, n, d, is_label, 64);
    if (first < 1 || first > 63 || d + first >= n || s[d + first] != '.') {
        return -1;
    }
    /* dots[k]: where the top-level part is tried after k starred labels. */
    Py_ssize_t dots_small[64];
    Py_ssize_t *dots = dots_small;
    Py_ssize_t cap = 64, count = 0;
    dots[count++] = d + first;
    for (;;) {
        Py_ssize_t dot = dots[count - 1];
        Py_ssize_t label = run_of(s, n, dot + 1, is_label, 64);
        Py_ssize_t after = dot + 1 + label;
        if (label < 1 || label > 63 || after >= n || s[after] != '.') {
            break;
        }
        if (count == cap) {
            Py_ssize_t *grown = PyMem_Malloc((size_t)cap * 2 * sizeof(Py_ssize_t));
            if (grown == NULL) {
                if (dots != dots_small) {
                    PyMem_Free(dots);
                }
                return -2;
            }
            memcpy(grown, dots, (size_t)cap * sizeof(Py_ssize_t));
            if (dots != dots_small) {
                PyMem_Free(dots);
            }
            dots = grown;
            cap *= 2;
        }
        dots[count++] = after;
    }
    Py_ssize_t found = -1;
    for (Py_ssize_t k = count - 1; k >= 0 && found < 0; k--) {
        Py_ssize_t letters = 0;
        Py_ssize_t at = dots[k] + 1;
        while (at + letters < n && letters <= 24 && is_alpha(s[at + letters])) {
            letters++;
        }
        if (letters >= 2 && letters <= 24 && (at + letters == n || !is_word(s[at + letters]))) {
            found = at + letters;
        }
    }
    if (dots != dots_small) {
        PyMem_Free(dots);
    }
    return found;
}

static Py_ssize_t email_at(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t p) {
    if (!is_local(s[p]) || !boundary(s, n, p)) {
        return -1;
    }
    Py_ssize_t local = run_of(s, n, p, is_local, 65);
    if (local <= 64 && p + local < n && s[p + local] == '@') {
        Py_ssize_t end = domain_at(s, n, p + local + 1);
        if (end != -1) {
            return end;
        }
    }
    for (Py_ssize_t size = (local - 1 < 64 ? local - 1 : 64); size >= 1; size--) {
        if (starts_with(s, n, p + size, "%40")) {
            Py_ssize_t end = domain_at(s, n, p + size + 3);
            if (end != -1) {
                return end;
            }
        }
    }
    return -1;
}

static const char *const IMAGE_SUFFIXES[] = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".ico", NULL};

/* detectors._email: `icon@2x.png` is an asset name. */
static int email_ok(const Py_UCS4 *s, Py_ssize_t start, Py_ssize_t end) {
    for (int i = 0; IMAGE_SUFFIXES[i]; i++) {
        Py_ssize_t size = (Py_ssize_t)strlen(IMAGE_SUFFIXES[i]);
        if (end - start < size) {
            continue;
        }
        int same = 1;
        for (Py_ssize_t j = 0; j < size && same; j++) {
            Py_UCS4 c = s[end - size + j];
            if (c >= 'A' && c <= 'Z') {
                c += 'a' - 'A';
            }
            same = c == (Py_UCS4)(unsigned char)IMAGE_SUFFIXES[i][j];
        }
        if (same) {
            return 0;
        }
    }
    return 1;
}

/* -- ipv4: \b(?:OCTET\.){3}OCTET\b, OCTET = 25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d -----------------
 * An octet before a dot must be the whole digit run before it; the last one the whole run
 * before a non-word character. So: four runs of 1-3 digits, each 0-255 without a leading zero. */
static int octet_end(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t at, Py_ssize_t *end) {
    Py_ssize_t size = 0;
    int value = 0;
    while (at + size < n && is_digit(s[at + size]) && size < 4) {
        value = value * 10 + (int)(s[at + size] - '0');
        size++;
    }
    if (size < 1 || size > 3 || value > 255 || (size > 1 && s[at] == '0')) {
        return 0;
    }
    *end = at + size;
    return 1;
}

static Py_ssize_t ipv4_at(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t p) {
    if (!is_digit(s[p]) || (p > 0 && is_word(s[p - 1]))) {
        return -1;
    }
    Py_ssize_t at = p, end = 0;
    for (int octet = 0; octet < 4; octet++) {
        if (!octet_end(s, n, at, &end)) {
            return -1;
        }
        if (octet < 3) {
            if (end >= n || s[end] != '.') {
                return -1;
            }
            at = end + 1;
        }
    }
    return end == n || !is_word(s[end]) ? end : -1;
}

/* detectors._ipv4: 1 mask, 0 keep, -1 the caller must decide (a CIDR suffix follows). */
static int ipv4_ok(const Py_UCS4 *s, Py_ssize_t n, Py_ssize_t start, Py_ssize_t end) {
    if (starts_with(s, n, start, "0.") || !not_in_number(s, n, start, end)) {
        return 0;
    }
    if (starts_with(s, n, start, "127.")) {
        return 0;
    }
    return end < n && s[end] == '/' ? -1 : 1;
}

/* -- the passes ------------------------------------------------------------------------------ */

typedef Py_ssize_t (*finder)(const Py_UCS4 *, Py_ssize_t, Py_ssize_t);

/* One detector over `in` into `out`, as substitute_window does; -1 error, -2 undecided. */
static Py_ssize_t pass(const Py_UCS4 *in, Py_ssize_t n, int detector, int ipv4_mask, buffer *out) {
    Py_ssize_t written = 0, count = 0, pos = 0;
    finder find = detector == DET_CARD ? card_at : detector == DET_EMAIL ? email_at : ipv4_at;
    out->len = 0;
    while (pos < n) {
        Py_ssize_t end = find(in, n, pos);
        if (end == -2) {
            PyErr_NoMemory();
            return -1;
        }
        if (end < 0) {
            pos++;
            continue;
        }
        int ok;
        const char *token;
        if (detector == DET_CARD) {
            ok = card_ok(in, n, pos, end);
            token = "[REDACTED:card]";
        } else if (detector == DET_EMAIL) {
            ok = email_ok(in, pos, end);
            token = "[REDACTED:email]";
        } else {
            ok = ipv4_ok(in, n, pos, end);
            token = ipv4_mask ? "[REDACTED:ipv4]" : NULL;
        }
        if (ok < 0) {
            return -2;
        }
        if (ok) {
            if (buffer_put(out, in + written, pos - written) < 0) {
                return -1;
            }
            if (token != NULL) {
                if (buffer_put_ascii(out, token) < 0) {
                    return -1;
                }
            } else {
                /* _keep_ipv4_network: the first three octets, then ".x". */
                Py_ssize_t last = end - 1;
                while (in[last] != '.') {
                    last--;
                }
                Py_UCS4 x[2] = {'.', 'x'};
                if (buffer_put(out, in + pos, last - pos) < 0 || buffer_put(out, x, 2) < 0) {
                    return -1;
                }
            }
            written = end;
            count++;
        }
        pos = end;
    }
    if (buffer_put(out, in + written, n - written) < 0) {
        return -1;
    }
    return count;
}

/* engine._has_glued_token for a text without `[HASH:` and `pseu_` marks, or more: every
 * `[REDACTED:` up to the next `]` counts as a token, even one the Python code would not
 * recognise (an unknown name): that can only send a string to the Python path. */
static int glued(const Py_UCS4 *s, Py_ssize_t n) {
    static const char SAFE[] = "\"'`,;&@)]}>";
    Py_ssize_t close = -1; /* the first `]` at or after the last place looked from */
    for (Py_ssize_t at = 0; at < n; at++) {
        if (s[at] != '[' || !starts_with(s, n, at, "[REDACTED:")) {
            continue;
        }
        if (close < at + 10) { /* searches only move forward: linear in all */
            close = at + 10;
            while (close < n && s[close] != ']') {
                close++;
            }
        }
        Py_ssize_t end = close + 1;
        if (end < n && (s[end] > 127 || strchr(SAFE, (int)s[end]) == NULL || s[end] == 0)
            && !Py_UNICODE_ISSPACE(s[end])) {
            return 1;
        }
        if (at > 0 && is_alnum(s[at - 1])) {
            return 1;
        }
    }
    return 0;
}

static PyObject *rewrite(PyObject *module, PyObject *args) {
    PyObject *text;
    int plan, check = 0;
    (void)module;
    if (!PyArg_ParseTuple(args, "Ui|p:rewrite", &text, &plan, &check)) {
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Py_UCS4 *current = PyUnicode_AsUCS4Copy(text);
    if (current == NULL) {
        return NULL;
    }
    PyObject *result = NULL;
    buffer out = {NULL, 0, 0};
    Py_ssize_t counts[3] = {0, 0, 0};
    static const int ORDER[3] = {DET_CARD, DET_EMAIL, DET_IPV4};
    if (contains(current, n, "[HASH:") || contains(current, n, "pseu_")) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    for (int i = 0; i < 3; i++) {
        if (!(plan & ORDER[i])) {
            continue;
        }
        Py_ssize_t count = pass(current, n, ORDER[i], plan & IPV4_MASK, &out);
        if (count == -1) {
            goto done;
        }
        if (count == -2) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (count) {
            /* The output becomes the next pass's input. */
            counts[i] = count;
            PyMem_Free(current);
            current = out.data;
            n = out.len;
            out = (buffer){NULL, 0, 0};
        }
    }
    int changed = counts[0] + counts[1] + counts[2] > 0;
    if ((changed || check) && glued(current, n)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (!changed) {
        result = Py_BuildValue("(Onnn)", text, (Py_ssize_t)0, (Py_ssize_t)0, (Py_ssize_t)0);
        goto done;
    }
    PyObject *masked = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, current, n);
    if (masked != NULL) {
        result = Py_BuildValue("(Nnnn)", masked, counts[0], counts[1], counts[2]);
    }
done:
    PyMem_Free(current);
    PyMem_Free(out.data);
    return result;
}

static PyMethodDef methods[] = {
    {"rewrite", rewrite, METH_VARARGS,
     "rewrite(text, plan, check=False) -> (text, cards, emails, ipv4s) or None: the card, email "
     "and ipv4 detectors named in `plan` (1 card, 2 email, 4 ipv4, 8 ipv4 masked whole) over "
     "`text`, in that order; None when the Python path must decide. The glued-token check runs "
     "when something was masked, or with `check` (the caller masked something before)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sluice.masking._plainmask",
    "Compiled twin of the card, email and ipv4 rewrite (see engine.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__plainmask(void) { return PyModule_Create(&module); }
