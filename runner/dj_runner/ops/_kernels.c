/*
 * dj_runner.ops._kernels: the per-sample hot loops of a few filters, in C.
 *
 * Each function returns exactly what the plain-Python definition in its op module returns;
 * the tests hold them to it.
 *
 *   char_rep_ratio(text: str, n: int) -> float
 *       character_repetition_filter's ratio (character n-gram counting);
 *   word_rep_ratios(ids: buffer[int32], offsets: buffer[int64], n: int) -> list[float]
 *       word_repetition_filter's ratio of each sample, from its words as ids (Arrow kernels
 *       tokenize and dictionary-encode the words);
 *   count_alnum(text: str) -> int
 *       alphanumeric_filter's count: code points for which str.isalnum() holds;
 *   count_in_set(text: str, bitmap: bytes) -> int
 *       special_characters_filter's count: code points whose bit is set in a bitmap of
 *       0x110000 bits (built once from the character set).
 *
 * N-gram exactness: n-grams are hashed (a rolling polynomial hash modulo the Mersenne prime
 * 2**61 - 1) only to find a slot; two n-grams are the same only when their units compare
 * equal, so a hash collision costs time, never a wrong count. The ratios are computed from
 * integer counts and divided once, as Python does, so the floats are bit-identical.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define M61 ((uint64_t)0x1FFFFFFFFFFFFFFFULL)
#define BASE ((uint64_t)0x1F3D5B79A1C3E5ULL) /* any fixed value in [2, M61) */

static inline uint64_t mod61(__uint128_t x)
{
    uint64_t r = (uint64_t)(x & M61) + (uint64_t)(x >> 61);
    r = (r & M61) + (r >> 61);
    return r >= M61 ? r - M61 : r;
}

static inline uint64_t mulmod61(uint64_t a, uint64_t b) { return mod61((__uint128_t)a * b); }

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDULL;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ULL;
    x ^= x >> 33;
    return x;
}

typedef struct {
    uint64_t hash;
    Py_ssize_t pos;   /* where the n-gram first occurs */
    Py_ssize_t count; /* 0 marks an empty slot */
} Slot;

typedef struct {
    Slot *slots;
    size_t mask;
    Py_ssize_t distinct;
} Table;

static int table_grow(Table *t)
{
    size_t cap = (t->mask + 1) * 2;
    Slot *slots = PyMem_Calloc(cap, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        Slot *s = &t->slots[i];
        if (s->count == 0)
            continue;
        size_t idx = mix64(s->hash) & (cap - 1);
        while (slots[idx].count != 0)
            idx = (idx + 1) & (cap - 1);
        slots[idx] = *s;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    return 0;
}

/* Count the n-grams of u[0..len): total = len - n + 1 > 0 windows. */
static int count_ngrams(const uint32_t *u, Py_ssize_t len, Py_ssize_t n, Table *t)
{
    const Py_ssize_t total = len - n + 1;
    size_t cap = 64;
    while (cap < (size_t)total && cap < ((size_t)1 << 16))
        cap <<= 1; /* most texts: one allocation; long ones grow on demand */
    t->slots = PyMem_Calloc(cap, sizeof(Slot));
    if (t->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->mask = cap - 1;
    t->distinct = 0;

    uint64_t top = 1; /* BASE ** (n - 1) */
    for (Py_ssize_t j = 0; j < n - 1; j++)
        top = mulmod61(top, BASE);
    uint64_t h = 0;
    for (Py_ssize_t j = 0; j < n; j++)
        h = mod61((__uint128_t)h * BASE + u[j]);

    const size_t width = (size_t)n * sizeof(uint32_t);
    for (Py_ssize_t i = 0; i < total; i++) {
        if (i > 0) {
            /* drop u[i-1], shift, add u[i+n-1] */
            uint64_t drop = mulmod61(u[i - 1], top);
            h = h >= drop ? h - drop : h + M61 - drop;
            h = mod61((__uint128_t)h * BASE + u[i + n - 1]);
        }
        size_t idx = mix64(h) & t->mask;
        for (;;) {
            Slot *s = &t->slots[idx];
            if (s->count == 0) {
                s->hash = h;
                s->pos = i;
                s->count = 1;
                t->distinct++;
                if ((size_t)t->distinct * 2 > t->mask + 1 && table_grow(t) < 0)
                    return -1;
                break;
            }
            if (s->hash == h && memcmp(u + s->pos, u + i, width) == 0) {
                s->count++;
                break;
            }
            idx = (idx + 1) & t->mask;
        }
    }
    return 0;
}

static int cmp_desc(const void *a, const void *b)
{
    Py_ssize_t x = *(const Py_ssize_t *)a, y = *(const Py_ssize_t *)b;
    return (x < y) - (x > y);
}

static int parse_n(PyObject *arg, Py_ssize_t *n)
{
    *n = PyLong_AsSsize_t(arg);
    if (*n == -1 && PyErr_Occurred())
        return -1;
    if (*n < 1) {
        PyErr_Format(PyExc_ValueError, "n must be >= 1, got %zd", *n);
        return -1;
    }
    return 0;
}

static int check_text(PyObject *text)
{
    if (PyUnicode_Check(text))
        return 0;
    PyErr_Format(PyExc_TypeError, "text must be str, not %.100s", Py_TYPE(text)->tp_name);
    return -1;
}

PyDoc_STRVAR(char_rep_ratio_doc,
             "char_rep_ratio(text, n, /)\n--\n\n"
             "Data-Juicer's character repetition ratio of one text: with k distinct n-grams\n"
             "of n code points, the sum of the min(int(sqrt(k)), #repeated) largest counts\n"
             "over the number of n-grams; 0.0 when the text is shorter than n.");

static PyObject *char_rep_ratio(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "char_rep_ratio expects (text, n)");
        return NULL;
    }
    if (check_text(args[0]) < 0 || parse_n(args[1], &n) < 0)
        return NULL;
    Py_ssize_t len = PyUnicode_GetLength(args[0]);
    if (len < 0)
        return NULL;
    if (len - n + 1 <= 0)
        return PyFloat_FromDouble(0.0);
    Py_UCS4 *u = PyUnicode_AsUCS4Copy(args[0]);
    if (u == NULL)
        return NULL;

    Table t = {0};
    Py_ssize_t *reps = NULL;
    PyObject *result = NULL;
    if (count_ngrams((const uint32_t *)u, len, n, &t) < 0)
        goto done;
    Py_ssize_t nrep = 0;
    reps = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(t.distinct > 0 ? t.distinct : 1));
    if (reps == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i <= t.mask; i++)
        if (t.slots[i].count > 1)
            reps[nrep++] = t.slots[i].count;
    Py_ssize_t take = (Py_ssize_t)sqrt((double)t.distinct);
    if (take > nrep)
        take = nrep;
    qsort(reps, (size_t)nrep, sizeof(Py_ssize_t), cmp_desc);
    long long sum = 0;
    for (Py_ssize_t i = 0; i < take; i++)
        sum += reps[i];
    result = PyFloat_FromDouble((double)sum / (double)(len - n + 1));
done:
    PyMem_Free(reps);
    PyMem_Free(t.slots);
    PyMem_Free(u);
    return result;
}

PyDoc_STRVAR(word_rep_ratios_doc,
             "word_rep_ratios(ids, offsets, n, /)\n--\n\n"
             "Data-Juicer's word repetition ratio of each sample, from its refined words as\n"
             "ids: ids is a buffer of int32 word ids (equal ids, equal words), offsets a\n"
             "buffer of int64 where sample i owns ids[offsets[i]:offsets[i + 1]]. Each ratio\n"
             "is the number of n-gram occurrences whose n-gram occurs more than once, over\n"
             "the number of n-grams; 0.0 with fewer than n words. Returns a list of floats.");

static PyObject *word_rep_ratios(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "word_rep_ratios expects (ids, offsets, n)");
        return NULL;
    }
    if (parse_n(args[2], &n) < 0)
        return NULL;
    Py_buffer ids = {0}, offs = {0};
    PyObject *result = NULL;
    if (PyObject_GetBuffer(args[0], &ids, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &offs, PyBUF_SIMPLE) < 0)
        goto done;
    if (ids.len % sizeof(int32_t) != 0 || offs.len % sizeof(int64_t) != 0 ||
        offs.len < (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError,
                        "ids must hold int32 values and offsets at least one int64 value");
        goto done;
    }
    const uint32_t *id = (const uint32_t *)ids.buf;
    const int64_t *off = (const int64_t *)offs.buf;
    Py_ssize_t n_ids = ids.len / (Py_ssize_t)sizeof(int32_t);
    Py_ssize_t n_samples = offs.len / (Py_ssize_t)sizeof(int64_t) - 1;
    for (Py_ssize_t i = 0; i < n_samples; i++) {
        if (off[i] < 0 || off[i] > off[i + 1] || off[i + 1] > n_ids) {
            PyErr_Format(PyExc_ValueError, "offsets[%zd:%zd] = [%lld, %lld] is out of [0, %zd]",
                         i, i + 2, (long long)off[i], (long long)off[i + 1], n_ids);
            goto done;
        }
    }
    result = PyList_New(n_samples);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n_samples; i++) {
        Py_ssize_t len = (Py_ssize_t)(off[i + 1] - off[i]);
        double ratio = 0.0;
        if (len - n + 1 > 0) {
            Table t = {0};
            if (count_ngrams(id + off[i], len, n, &t) < 0) {
                PyMem_Free(t.slots);
                Py_CLEAR(result);
                goto done;
            }
            long long sum = 0;
            for (size_t k = 0; k <= t.mask; k++)
                if (t.slots[k].count > 1)
                    sum += t.slots[k].count;
            PyMem_Free(t.slots);
            ratio = (double)sum / (double)(len - n + 1);
        }
        PyObject *f = PyFloat_FromDouble(ratio);
        if (f == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, f);
    }
done:
    if (offs.obj != NULL)
        PyBuffer_Release(&offs);
    PyBuffer_Release(&ids);
    return result;
}

PyDoc_STRVAR(count_alnum_doc,
             "count_alnum(text, /)\n--\n\n"
             "The number of code points c of text for which c.isalnum() is true.");

static PyObject *count_alnum(PyObject *self, PyObject *text)
{
    if (check_text(text) < 0)
        return NULL;
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        /* str.isalnum() of a one-character string is exactly this test. */
        count += Py_UNICODE_ISALNUM(c) ? 1 : 0;
    }
    return PyLong_FromSsize_t(count);
}

#define BITMAP_BYTES (0x110000 / 8)

PyDoc_STRVAR(count_in_set_doc,
             "count_in_set(text, bitmap, /)\n--\n\n"
             "The number of code points of text whose bit is set in bitmap (0x110000 bits,\n"
             "little-endian within each byte).");

static PyObject *count_in_set(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "count_in_set expects (text, bitmap)");
        return NULL;
    }
    PyObject *text = args[0];
    if (check_text(text) < 0)
        return NULL;
    Py_buffer bits;
    if (PyObject_GetBuffer(args[1], &bits, PyBUF_SIMPLE) < 0)
        return NULL;
    if (bits.len != BITMAP_BYTES) {
        PyErr_Format(PyExc_ValueError, "bitmap must be %d bytes, got %zd", BITMAP_BYTES, bits.len);
        PyBuffer_Release(&bits);
        return NULL;
    }
    const unsigned char *map = (const unsigned char *)bits.buf;
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        count += (map[c >> 3] >> (c & 7)) & 1;
    }
    PyBuffer_Release(&bits);
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"char_rep_ratio", (PyCFunction)(void (*)(void))char_rep_ratio, METH_FASTCALL,
     char_rep_ratio_doc},
    {"word_rep_ratios", (PyCFunction)(void (*)(void))word_rep_ratios, METH_FASTCALL,
     word_rep_ratios_doc},
    {"count_alnum", (PyCFunction)count_alnum, METH_O, count_alnum_doc},
    {"count_in_set", (PyCFunction)(void (*)(void))count_in_set, METH_FASTCALL, count_in_set_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "dj_runner.ops._kernels",
    .m_doc = "The per-sample hot loops of a few filters, in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
