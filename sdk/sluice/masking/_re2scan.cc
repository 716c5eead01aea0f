/*
 * sluice.masking._re2scan: the masking pre-scans' RE2 calls, made from C++ instead of through
 * the Python binding, one call per request or per string instead of one per match.
 *
 * On a PII-dense request the raw scan reports a match every couple of hundred bytes (about 900
 * per 1,000-record request), and each string it points at is then asked which detectors match
 * it (an RE2 set, about 500 strings per request). Through the binding each of those is a Python
 * call with its argument conversion and result objects: 1.7 ms and 1.0 ms per request. Here
 * `Program.spans` walks all matches of one request inside one call (with the GIL released) and
 * `PatternSet.which` asks the set for one string with no conversion beyond its UTF-8 bytes.
 *
 * What it mirrors exactly (sluice/masking/_prescan.py): `match_spans`, the loop over the
 * binding's `Match(UNANCHORED, data, pos, end)` that moves on as `finditer` does (past an empty
 * match by one byte), and `BatchPrescan.which`, the binding's set `Match` on the string's UTF-8
 * bytes (lone surrogates encoded with surrogatepass), indexes ascending. Both sides are RE2 with
 * the same options (UTF-8, max_mem as given, errors not logged), so they agree by construction;
 * tests/sdk/test_masking_re2scan.py holds them equal anyway (hypothesis, over bytes and text),
 * since the binding ships its own RE2 and this module links Debian's.
 *
 * Optional like the other twins: without g++ or libre2-dev the build warns and the binding
 * runs instead (SLUICE_PURE_PYTHON=1 forces that).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace {

re2::RE2::Options options_with(long long max_mem) {
    re2::RE2::Options options;  // UTF-8, leftmost-first: the binding's defaults
    options.set_log_errors(false);
    options.set_max_mem(max_mem);
    return options;
}

/* A str as UTF-8 bytes the way the Python side encodes it ("utf-8", "surrogatepass"). `holder`
 * keeps the bytes alive when the string needed re-encoding. */
int utf8_of(PyObject *text, const char **data, Py_ssize_t *size, PyObject **holder) {
    *holder = nullptr;
    *data = PyUnicode_AsUTF8AndSize(text, size);
    if (*data != nullptr) {
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        return -1;
    }
    PyErr_Clear();
    *holder = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
    if (*holder == nullptr) {
        return -1;
    }
    *data = PyBytes_AS_STRING(*holder);
    *size = PyBytes_GET_SIZE(*holder);
    return 0;
}

/* A new list of `convert(item)` for every item (each a new reference, or NULL on error). */
template <typename Item, typename Convert>
PyObject *list_of(const std::vector<Item> &items, Convert convert) {
    PyObject *out = PyList_New(static_cast<Py_ssize_t>(items.size()));
    if (out == nullptr) {
        return nullptr;
    }
    for (size_t i = 0; i < items.size(); i++) {
        PyObject *value = convert(items[i]);
        if (value == nullptr) {
            Py_DECREF(out);
            return nullptr;
        }
        PyList_SET_ITEM(out, static_cast<Py_ssize_t>(i), value);
    }
    return out;
}

/* -- Program: one regex, every match of a buffer ------------------------------------------- */

struct Program {
    PyObject_HEAD
    re2::RE2 *regex;
};

int program_init(Program *self, PyObject *args, PyObject *kwargs) {
    static const char *names[] = {"pattern", "max_mem", nullptr};
    Py_buffer pattern;
    long long max_mem;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*L", const_cast<char **>(names), &pattern, &max_mem)) {
        return -1;
    }
    delete self->regex;
    self->regex = new (std::nothrow) re2::RE2(
        re2::StringPiece(static_cast<const char *>(pattern.buf), static_cast<size_t>(pattern.len)),
        options_with(max_mem));
    PyBuffer_Release(&pattern);
    if (self->regex == nullptr) {
        PyErr_NoMemory();
        return -1;
    }
    if (!self->regex->ok()) {
        PyErr_Format(PyExc_ValueError, "RE2 did not compile the pattern: %s", self->regex->error().c_str());
        return -1;
    }
    return 0;
}

void program_dealloc(Program *self) {
    delete self->regex;
    Py_TYPE(self)->tp_free(reinterpret_cast<PyObject *>(self));
}

PyObject *program_spans(Program *self, PyObject *arg) {
    if (self->regex == nullptr) {
        PyErr_SetString(PyExc_ValueError, "Program was not initialised");
        return nullptr;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return nullptr;
    }
    const re2::StringPiece text(static_cast<const char *>(view.buf), static_cast<size_t>(view.len));
    std::vector<std::pair<Py_ssize_t, Py_ssize_t>> found;
    bool out_of_memory = false;
    Py_BEGIN_ALLOW_THREADS
    try {
        const size_t end = text.size();
        size_t pos = 0;
        re2::StringPiece match;
        while (self->regex->Match(text, pos, end, re2::RE2::UNANCHORED, &match, 1)) {
            const size_t start = static_cast<size_t>(match.data() - text.data());
            const size_t stop = start + match.size();
            found.emplace_back(static_cast<Py_ssize_t>(start), static_cast<Py_ssize_t>(stop));
            if (pos == end) {
                break;
            }
            pos = stop == pos ? pos + 1 : stop;
        }
    } catch (const std::bad_alloc &) {
        out_of_memory = true;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (out_of_memory) {
        return PyErr_NoMemory();
    }
    return list_of(found, [](const std::pair<Py_ssize_t, Py_ssize_t> &span) {
        return Py_BuildValue("(nn)", span.first, span.second);
    });
}

PyMethodDef program_methods[] = {
    {"spans", reinterpret_cast<PyCFunction>(program_spans), METH_O,
     "spans(data) -> [(start, end), ...]: every match, as `match_spans` finds them"},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject ProgramType = {PyVarObject_HEAD_INIT(nullptr, 0)};

/* -- PatternSet: which of several regexes match somewhere in a string ---------------------- */

struct PatternSet {
    PyObject_HEAD
    re2::RE2::Set *set;
};

int set_init(PatternSet *self, PyObject *args, PyObject *kwargs) {
    static const char *names[] = {"patterns", "max_mem", nullptr};
    PyObject *patterns;
    long long max_mem;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OL", const_cast<char **>(names), &patterns, &max_mem)) {
        return -1;
    }
    PyObject *items = PySequence_Fast(patterns, "patterns must be a sequence of str");
    if (items == nullptr) {
        return -1;
    }
    delete self->set;
    self->set = new (std::nothrow) re2::RE2::Set(options_with(max_mem), re2::RE2::UNANCHORED);
    if (self->set == nullptr) {
        Py_DECREF(items);
        PyErr_NoMemory();
        return -1;
    }
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size;
        const char *pattern = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(items, i), &size);
        if (pattern == nullptr) {
            Py_DECREF(items);
            return -1;
        }
        std::string error;
        if (self->set->Add(re2::StringPiece(pattern, static_cast<size_t>(size)), &error) < 0) {
            Py_DECREF(items);
            PyErr_Format(PyExc_ValueError, "RE2 did not compile pattern %zd: %s", i, error.c_str());
            return -1;
        }
    }
    Py_DECREF(items);
    if (count && !self->set->Compile()) {
        PyErr_SetString(PyExc_ValueError, "RE2 could not compile the set (too large for max_mem?)");
        return -1;
    }
    if (!count) {
        delete self->set;
        self->set = nullptr;  // an empty set matches nothing; RE2 refuses to compile one
    }
    return 0;
}

void set_dealloc(PatternSet *self) {
    delete self->set;
    Py_TYPE(self)->tp_free(reinterpret_cast<PyObject *>(self));
}

PyObject *set_which(PatternSet *self, PyObject *arg) {
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "which() takes a str");
        return nullptr;
    }
    if (self->set == nullptr) {
        return PyList_New(0);
    }
    const char *data;
    Py_ssize_t size;
    PyObject *holder;
    if (utf8_of(arg, &data, &size, &holder) < 0) {
        return nullptr;
    }
    std::vector<int> found;
    bool out_of_memory = false;
    try {
        self->set->Match(re2::StringPiece(data, static_cast<size_t>(size)), &found);
        std::sort(found.begin(), found.end());
    } catch (const std::bad_alloc &) {
        out_of_memory = true;
    }
    Py_XDECREF(holder);
    if (out_of_memory) {
        return PyErr_NoMemory();
    }
    return list_of(found, [](int index) { return PyLong_FromLong(index); });
}

PyMethodDef set_methods[] = {
    {"which", reinterpret_cast<PyCFunction>(set_which), METH_O,
     "which(text) -> [index, ...]: the patterns matching somewhere in text, ascending"},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject PatternSetType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sluice.masking._re2scan",
    "The masking pre-scans' RE2 calls from C++ (see _re2scan.cc).", -1, nullptr,
};

int ready(PyTypeObject *type, const char *name, Py_ssize_t size, initproc init, destructor dealloc,
          PyMethodDef *methods, const char *doc) {
    type->tp_name = name;
    type->tp_basicsize = size;
    type->tp_flags = Py_TPFLAGS_DEFAULT;
    type->tp_new = PyType_GenericNew;
    type->tp_init = init;
    type->tp_dealloc = dealloc;
    type->tp_methods = methods;
    type->tp_doc = doc;
    return PyType_Ready(type);
}

}  // namespace

PyMODINIT_FUNC PyInit__re2scan(void) {
    if (ready(&ProgramType, "sluice.masking._re2scan.Program", sizeof(Program),
              reinterpret_cast<initproc>(program_init), reinterpret_cast<destructor>(program_dealloc),
              program_methods, "Program(pattern: bytes, max_mem: int): one RE2 regex") < 0 ||
        ready(&PatternSetType, "sluice.masking._re2scan.PatternSet", sizeof(PatternSet),
              reinterpret_cast<initproc>(set_init), reinterpret_cast<destructor>(set_dealloc),
              set_methods, "PatternSet(patterns: list[str], max_mem: int): an unanchored RE2 set") < 0) {
        return nullptr;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == nullptr) {
        return nullptr;
    }
    Py_INCREF(&ProgramType);
    Py_INCREF(&PatternSetType);
    if (PyModule_AddObject(module, "Program", reinterpret_cast<PyObject *>(&ProgramType)) < 0 ||
        PyModule_AddObject(module, "PatternSet", reinterpret_cast<PyObject *>(&PatternSetType)) < 0) {
        Py_DECREF(module);
        return nullptr;
    }
    return module;
}
