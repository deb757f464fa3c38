/*
 * dj_runner.ops._kernels: the hot loops of a few ops, in C.
 *
 * Each function returns exactly what the plain-Python definition in its op module returns;
 * the tests hold them to it.
 *
 *   char_rep_ratio(text: str, n: int) -> float
 *       character_repetition_filter's ratio (character n-gram counting);
 *   word_rep_ratios(ids: buffer[int32], offsets: buffer[int64], n: int) -> list[float]
 *       word_repetition_filter's ratio of each sample, from its words as ids (Arrow kernels
 *       tokenize and dictionary-encode the words);
 *
 * Over a whole Arrow string array, from its buffers (offsets: the n + 1 int32 offsets of the
 * array's own slice; data: the UTF-8 bytes they index), with sets of code points given as
 * bitmaps of 0x110000 bits (built once per set):
 *
 *   count_in_set(offsets, data, bitmap) -> bytes (n int64)
 *       alphanumeric_filter's and special_characters_filter's counts: code points in a set;
 *   count_words(offsets, data, bitmap) -> bytes (n int64)
 *       words_num_filter's count: pieces between ' ', '\n', '\t' holding a code point
 *       outside the set (the special characters);
 *   rewrite(offsets, data, strip, replace, replacements) -> (offsets, data)
 *       whitespace_normalization_mapper's and punctuation_normalization_mapper's rewrite:
 *       strip a set at both ends, then replace single code points by fixed UTF-8 strings;
 *   alnum_bitmap() -> bytes
 *       the set of code points c with chr(c).isalnum().
 *
 * And, from _fasttext.c, fasttext_load(path): language_id_score_filter's fastText model,
 * predicting a whole batch in one call.
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

/* ---- Kernels over a whole Arrow string array (its int32 offsets and UTF-8 data) ----------- */

#define BITMAP_BYTES (0x110000 / 8)

static inline int bit_set(const unsigned char *map, uint32_t c)
{
    return (map[c >> 3] >> (c & 7)) & 1;
}

/* Decode the code point at s[i] (s[0..end) is valid UTF-8, as Arrow strings are); returns it
 * and advances *i. A truncated or stray byte decodes as itself, one byte long, so a malformed
 * buffer can give a wrong answer but never an out-of-bounds read. */
static inline uint32_t next_cp(const unsigned char *s, Py_ssize_t *i, Py_ssize_t end)
{
    Py_ssize_t k = *i;
    uint32_t b = s[k];
    if (b < 0x80) {
        *i = k + 1;
        return b;
    }
    if (b >= 0xF0 && k + 3 < end) {
        *i = k + 4;
        return ((b & 0x07) << 18) | ((uint32_t)(s[k + 1] & 0x3F) << 12) |
               ((uint32_t)(s[k + 2] & 0x3F) << 6) | (s[k + 3] & 0x3F);
    }
    if (b >= 0xE0 && b < 0xF0 && k + 2 < end) {
        *i = k + 3;
        return ((b & 0x0F) << 12) | ((uint32_t)(s[k + 1] & 0x3F) << 6) | (s[k + 2] & 0x3F);
    }
    if (b >= 0xC0 && b < 0xE0 && k + 1 < end) {
        *i = k + 2;
        return ((b & 0x1F) << 6) | (s[k + 1] & 0x3F);
    }
    *i = k + 1;
    return b;
}

/* The buffers of an Arrow string array: offsets (n + 1 int32 values, the array's own slice)
 * and the data they index. Fills *n; checks that every offset is in order and in range. */
static int get_string_buffers(PyObject *const *args, Py_buffer *offs, Py_buffer *data,
                              Py_ssize_t *n)
{
    if (PyObject_GetBuffer(args[0], offs, PyBUF_SIMPLE) < 0)
        return -1;
    if (PyObject_GetBuffer(args[1], data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(offs);
        return -1;
    }
    if (offs->len % sizeof(int32_t) != 0 || offs->len < (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold at least one int32 value");
        goto fail;
    }
    const int32_t *off = (const int32_t *)offs->buf;
    *n = offs->len / (Py_ssize_t)sizeof(int32_t) - 1;
    for (Py_ssize_t i = 0; i < *n; i++) {
        if (off[i] < 0 || off[i] > off[i + 1] || off[i + 1] > data->len) {
            PyErr_Format(PyExc_ValueError, "offsets[%zd:%zd] is out of the data's %zd bytes", i,
                         i + 2, data->len);
            goto fail;
        }
    }
    return 0;
fail:
    PyBuffer_Release(data);
    PyBuffer_Release(offs);
    return -1;
}

static int get_bitmap(PyObject *arg, Py_buffer *bits)
{
    if (PyObject_GetBuffer(arg, bits, PyBUF_SIMPLE) < 0)
        return -1;
    if (bits->len != BITMAP_BYTES) {
        PyErr_Format(PyExc_ValueError, "bitmap must be %d bytes, got %zd", BITMAP_BYTES,
                     bits->len);
        PyBuffer_Release(bits);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(count_in_set_doc,
             "count_in_set(offsets, data, bitmap, /)\n--\n\n"
             "For each string of an Arrow string array (offsets: its n + 1 int32 offsets,\n"
             "data: its UTF-8 bytes), the number of its code points whose bit is set in\n"
             "bitmap (0x110000 bits, little-endian within each byte). Returns n int64\n"
             "values as bytes.");

static PyObject *count_in_set(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "count_in_set expects (offsets, data, bitmap)");
        return NULL;
    }
    Py_buffer offs, data, bits;
    Py_ssize_t n;
    if (get_string_buffers(args, &offs, &data, &n) < 0)
        return NULL;
    PyObject *result = NULL;
    if (get_bitmap(args[2], &bits) < 0)
        goto done;
    result = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (result != NULL) {
        int64_t *out = (int64_t *)PyBytes_AS_STRING(result);
        const int32_t *off = (const int32_t *)offs.buf;
        const unsigned char *s = (const unsigned char *)data.buf;
        const unsigned char *map = (const unsigned char *)bits.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t count = 0;
            Py_ssize_t k = off[i], end = off[i + 1];
            while (k < end)
                count += bit_set(map, next_cp(s, &k, end));
            out[i] = count;
        }
    }
    PyBuffer_Release(&bits);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return result;
}

PyDoc_STRVAR(count_words_doc,
             "count_words(offsets, data, bitmap, /)\n--\n\n"
             "For each string of an Arrow string array (as for count_in_set), the number of\n"
             "its pieces between the separators ' ', '\\n' and '\\t' that hold at least one\n"
             "code point whose bit is not set in bitmap. Returns n int64 values as bytes.");

static PyObject *count_words(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "count_words expects (offsets, data, bitmap)");
        return NULL;
    }
    Py_buffer offs, data, bits;
    Py_ssize_t n;
    if (get_string_buffers(args, &offs, &data, &n) < 0)
        return NULL;
    PyObject *result = NULL;
    if (get_bitmap(args[2], &bits) < 0)
        goto done;
    result = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (result != NULL) {
        int64_t *out = (int64_t *)PyBytes_AS_STRING(result);
        const int32_t *off = (const int32_t *)offs.buf;
        const unsigned char *s = (const unsigned char *)data.buf;
        const unsigned char *map = (const unsigned char *)bits.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t count = 0;
            int word = 0; /* the current piece holds a code point outside the set */
            Py_ssize_t k = off[i], end = off[i + 1];
            while (k < end) {
                uint32_t c = next_cp(s, &k, end);
                if (c == ' ' || c == '\n' || c == '\t') {
                    count += word;
                    word = 0;
                } else if (!bit_set(map, c)) {
                    word = 1;
                }
            }
            out[i] = count + word;
        }
    }
    PyBuffer_Release(&bits);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return result;
}

typedef struct {
    uint32_t cp;
    const char *bytes;
    Py_ssize_t len;
} Replacement;

static int cmp_replacement(const void *a, const void *b)
{
    uint32_t x = ((const Replacement *)a)->cp, y = ((const Replacement *)b)->cp;
    return (x > y) - (x < y);
}

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

static int out_put(Out *o, const void *src, Py_ssize_t len)
{
    if (o->len + len > o->cap) {
        Py_ssize_t cap = o->cap * 2;
        while (cap < o->len + len)
            cap *= 2;
        char *buf = PyMem_Realloc(o->buf, (size_t)cap);
        if (buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->buf = buf;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, src, (size_t)len);
    o->len += len;
    return 0;
}

PyDoc_STRVAR(rewrite_doc,
             "rewrite(offsets, data, strip, replace, replacements, /)\n--\n\n"
             "Each string of an Arrow string array (as for count_in_set), stripped of the\n"
             "code points set in the bitmap strip (None: no strip) at both ends, then with\n"
             "every code point c set in the bitmap replace written as replacements[c]\n"
             "(a dict of int to bytes, UTF-8). Returns (offsets, data) as bytes: n + 1\n"
             "int32 offsets from 0 and the new UTF-8 data. OverflowError past 2 GiB.");

static PyObject *rewrite(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "rewrite expects (offsets, data, strip, replace, replacements)");
        return NULL;
    }
    if (!PyDict_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "replacements must be a dict of int to bytes");
        return NULL;
    }
    Py_buffer offs, data, strip = {0}, repl;
    Py_ssize_t n;
    if (get_string_buffers(args, &offs, &data, &n) < 0)
        return NULL;
    PyObject *result = NULL, *new_offs = NULL;
    Replacement *table = NULL;
    Out o = {0};
    int have_strip = args[2] != Py_None, have_repl = 0;
    if (have_strip && get_bitmap(args[2], &strip) < 0)
        goto done;
    if (get_bitmap(args[3], &repl) < 0)
        goto done;
    have_repl = 1;
    Py_ssize_t nrep = PyDict_Size(args[4]);
    table = PyMem_Malloc(sizeof(Replacement) * (size_t)(nrep > 0 ? nrep : 1));
    if (table == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    {
        PyObject *key, *value;
        Py_ssize_t pos = 0, t = 0;
        while (PyDict_Next(args[4], &pos, &key, &value)) {
            long cp = PyLong_AsLong(key);
            if (cp == -1 && PyErr_Occurred())
                goto done;
            if (cp < 0 || cp >= 0x110000 || !PyBytes_Check(value)) {
                PyErr_SetString(PyExc_ValueError,
                                "replacements must map code points to bytes");
                goto done;
            }
            table[t].cp = (uint32_t)cp;
            table[t].bytes = PyBytes_AS_STRING(value);
            table[t].len = PyBytes_GET_SIZE(value);
            t++;
        }
        qsort(table, (size_t)nrep, sizeof(Replacement), cmp_replacement);
    }
    new_offs = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int32_t));
    if (new_offs == NULL)
        goto done;
    int32_t *out_off = (int32_t *)PyBytes_AS_STRING(new_offs);
    const int32_t *off = (const int32_t *)offs.buf;
    const unsigned char *s = (const unsigned char *)data.buf;
    const unsigned char *smap = have_strip ? (const unsigned char *)strip.buf : NULL;
    const unsigned char *rmap = (const unsigned char *)repl.buf;
    o.cap = (n > 0 ? off[n] - off[0] : 0) + 64;
    o.buf = PyMem_Malloc((size_t)o.cap);
    if (o.buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    out_off[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t k = off[i], end = off[i + 1];
        if (smap != NULL) {
            /* leading: skip set code points; trailing: the end after the last unset one */
            Py_ssize_t first = end, last = k;
            while (k < end) {
                Py_ssize_t at = k;
                if (!bit_set(smap, next_cp(s, &k, end))) {
                    first = at;
                    break;
                }
            }
            if (first < end) {
                /* walk back from the end, one code point at a time, to the last unset one */
                Py_ssize_t j = end;
                last = end;
                while (j > first) {
                    Py_ssize_t at = j - 1;
                    while (at > first && (s[at] & 0xC0) == 0x80)
                        at--;
                    Py_ssize_t next = at;
                    if (!bit_set(smap, next_cp(s, &next, j)))
                        break;
                    j = last = at;
                }
            }
            k = first;
            end = first < end ? last : first;
        }
        Py_ssize_t run = k; /* start of the bytes not yet copied */
        while (k < end) {
            Py_ssize_t at = k;
            uint32_t c = next_cp(s, &k, end);
            if (!bit_set(rmap, c))
                continue;
            Replacement key = {c, NULL, 0};
            Replacement *r = bsearch(&key, table, (size_t)nrep, sizeof(Replacement),
                                     cmp_replacement);
            if (r == NULL) {
                PyErr_Format(PyExc_ValueError, "no replacement for U+%04X", (unsigned)c);
                goto done;
            }
            if (out_put(&o, s + run, at - run) < 0 || out_put(&o, r->bytes, r->len) < 0)
                goto done;
            run = k;
        }
        if (out_put(&o, s + run, end - run) < 0)
            goto done;
        if (o.len > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "rewritten data exceeds int32 offsets");
            goto done;
        }
        out_off[i + 1] = (int32_t)o.len;
    }
    {
        PyObject *bytes = PyBytes_FromStringAndSize(o.buf, o.len);
        if (bytes != NULL)
            result = PyTuple_Pack(2, new_offs, bytes);
        Py_XDECREF(bytes);
    }
done:
    PyMem_Free(o.buf);
    PyMem_Free(table);
    Py_XDECREF(new_offs);
    if (have_repl)
        PyBuffer_Release(&repl);
    if (have_strip && strip.obj != NULL)
        PyBuffer_Release(&strip);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return result;
}

PyDoc_STRVAR(alnum_bitmap_doc,
             "alnum_bitmap(/)\n--\n\n"
             "The bitmap (0x110000 bits, as count_in_set takes it) of the code points c for\n"
             "which chr(c).isalnum() is true.");

static PyObject *alnum_bitmap(PyObject *self, PyObject *unused)
{
    PyObject *result = PyBytes_FromStringAndSize(NULL, BITMAP_BYTES);
    if (result == NULL)
        return NULL;
    unsigned char *map = (unsigned char *)PyBytes_AS_STRING(result);
    memset(map, 0, BITMAP_BYTES);
    for (uint32_t c = 0; c < 0x110000; c++)
        /* str.isalnum() of a one-character string is exactly this test. */
        if (Py_UNICODE_ISALNUM(c))
            map[c >> 3] |= (unsigned char)(1u << (c & 7));
    return result;
}

static PyMethodDef methods[] = {
    {"char_rep_ratio", (PyCFunction)(void (*)(void))char_rep_ratio, METH_FASTCALL,
     char_rep_ratio_doc},
    {"word_rep_ratios", (PyCFunction)(void (*)(void))word_rep_ratios, METH_FASTCALL,
     word_rep_ratios_doc},
    {"count_in_set", (PyCFunction)(void (*)(void))count_in_set, METH_FASTCALL, count_in_set_doc},
    {"count_words", (PyCFunction)(void (*)(void))count_words, METH_FASTCALL, count_words_doc},
    {"rewrite", (PyCFunction)(void (*)(void))rewrite, METH_FASTCALL, rewrite_doc},
    {"alnum_bitmap", (PyCFunction)alnum_bitmap, METH_NOARGS, alnum_bitmap_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "dj_runner.ops._kernels",
    .m_doc = "The hot loops of a few ops, in C.",
    .m_size = -1,
    .m_methods = methods,
};

/* _fasttext.c: fasttext_load and its model type. */
int dj_fasttext_init(PyObject *module);

PyMODINIT_FUNC PyInit__kernels(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && dj_fasttext_init(m) < 0)
        Py_CLEAR(m);
    return m;
}
