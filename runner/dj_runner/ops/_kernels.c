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
 *   char_rep_ratios(offsets, data, n) -> bytes (n float64)
 *       char_rep_ratio of every string;
 *   simple_word_rep_ratios(offsets, data, special, n) -> (bytes (n float64), list[int])
 *       word_rep_ratio of every string that str.lower changes only in its ASCII letters,
 *       and the indices of the others;
 *   count_in_set(offsets, data, bitmap) -> bytes (n int64)
 *       alphanumeric_filter's and special_characters_filter's counts: code points in a set;
 *   count_words(offsets, data, bitmap) -> bytes (n int64)
 *       words_num_filter's count: pieces between ' ', '\n', '\t' holding a code point
 *       outside the set (the special characters);
 *   rewrite(offsets, data, strip, replace, replacements) -> (offsets, data)
 *       whitespace_normalization_mapper's and punctuation_normalization_mapper's rewrite:
 *       strip a set at both ends, then replace single code points by fixed UTF-8 strings;
 *   line_stats(offsets, data) -> (bytes (n int64), bytes (n int64))
 *       maximum_line_length_filter's longest line and average_line_length_filter's number
 *       of lines, as str.splitlines() sees them;
 *   alnum_bitmap() -> bytes
 *       the set of code points c with chr(c).isalnum().
 *
 * And, from _fasttext.c, fasttext_load(path): language_id_score_filter's fastText model,
 * predicting a whole batch in one call.
 *
 * N-gram exactness: n-grams are hashed (a rolling polynomial hash modulo 2**64) only to find a
 * slot; two n-grams are the same only when their units compare equal, so a hash collision
 * costs time, never a wrong count. The ratios are computed from integer counts and divided
 * once, as Python does, so the floats are bit-identical.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BASE ((uint64_t)0x100000001B3ULL) /* any odd value */
#define FIB ((uint64_t)0x9E3779B97F4A7C15ULL)
#define TABLE_MIN_BITS 6
#define TABLE_START_MAX_BITS 16 /* a longer text starts here and grows on demand */

typedef struct {
    uint64_t hash;
    uint32_t pos;   /* where the n-gram first occurs */
    uint32_t count; /* 0 marks an empty slot */
} Slot;

/* An open-addressing table of n-gram counts, reused from one text to the next (cleared, not
 * freed), with the slots whose count passed 1 listed in reps (so the repeated counts are read
 * without a scan of the table). */
typedef struct {
    Slot *slots;
    size_t bits, allocated; /* slots in use: 1 << bits; allocated: slots the buffer holds */
    Py_ssize_t distinct;
    uint32_t *reps; /* slot indices of the repeated n-grams */
    size_t nrep, reps_allocated;
} Table;

static void table_free(Table *t)
{
    PyMem_Free(t->slots);
    PyMem_Free(t->reps);
    memset(t, 0, sizeof(*t));
}

static inline size_t slot_of(uint64_t h, size_t bits) { return (size_t)((h * FIB) >> (64 - bits)); }

/* Ready an open-addressing table of ``elem``-byte slots with room for about ``expected``
 * entries before it grows: 1 << *bits zeroed slots, in the buffer *slots (*allocated slots)
 * when it is large enough, else in a new one. */
static int slots_reset(void **slots, size_t *allocated, size_t *bits, size_t expected, size_t elem)
{
    size_t b = TABLE_MIN_BITS;
    while (((size_t)1 << b) < expected * 2 && b < TABLE_START_MAX_BITS)
        b++;
    size_t cap = (size_t)1 << b;
    if (cap > *allocated) {
        PyMem_Free(*slots);
        *slots = PyMem_Calloc(cap, elem);
        *allocated = *slots == NULL ? 0 : cap;
        if (*slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    else {
        memset(*slots, 0, cap * elem);
    }
    *bits = b;
    return 0;
}

/* Empty the table with room for about ``total`` n-grams before it grows. */
static int table_reset(Table *t, Py_ssize_t total)
{
    void *slots = t->slots;
    int rc = slots_reset(&slots, &t->allocated, &t->bits, (size_t)total, sizeof(Slot));
    t->slots = slots;
    t->distinct = 0;
    t->nrep = 0;
    return rc;
}

static int note_rep(Table *t, size_t idx)
{
    if (t->nrep == t->reps_allocated) {
        size_t cap = t->reps_allocated ? t->reps_allocated * 2 : 256;
        uint32_t *reps = PyMem_Realloc(t->reps, cap * sizeof(uint32_t));
        if (reps == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->reps = reps;
        t->reps_allocated = cap;
    }
    t->reps[t->nrep++] = (uint32_t)idx;
    return 0;
}

static int table_grow(Table *t)
{
    size_t bits = t->bits + 1, cap = (size_t)1 << bits, old = (size_t)1 << t->bits;
    if (bits > 31) {
        PyErr_SetString(PyExc_OverflowError, "too many distinct n-grams in one text");
        return -1;
    }
    Slot *slots = PyMem_Calloc(cap, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->nrep = 0;
    for (size_t i = 0; i < old; i++) {
        Slot *s = &t->slots[i];
        if (s->count == 0)
            continue;
        size_t idx = slot_of(s->hash, bits);
        while (slots[idx].count != 0)
            idx = (idx + 1) & (cap - 1);
        slots[idx] = *s;
        if (s->count > 1 && note_rep(t, idx) < 0) {
            PyMem_Free(slots);
            return -1;
        }
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->bits = bits;
    t->allocated = cap;
    return 0;
}

/* Count the n-grams of u[0..len) (total = len - n + 1 > 0 windows, fewer than 2**32). */
static int count_ngrams(const uint32_t *u, Py_ssize_t len, Py_ssize_t n, Table *t)
{
    const Py_ssize_t total = len - n + 1;
    if ((uint64_t)len >= ((uint64_t)1 << 32)) {
        PyErr_SetString(PyExc_OverflowError, "a text of 2**32 units or more");
        return -1;
    }
    if (table_reset(t, total) < 0)
        return -1;
    uint64_t top = 1; /* BASE ** (n - 1), modulo 2**64 */
    for (Py_ssize_t j = 0; j < n - 1; j++)
        top *= BASE;
    uint64_t h = 0;
    for (Py_ssize_t j = 0; j < n; j++)
        h = h * BASE + u[j];

    const size_t width = (size_t)n * sizeof(uint32_t);
    size_t mask = ((size_t)1 << t->bits) - 1;
    for (Py_ssize_t i = 0; i < total; i++) {
        if (i > 0) /* drop u[i-1], shift, add u[i+n-1] */
            h = (h - u[i - 1] * top) * BASE + u[i + n - 1];
        size_t idx = slot_of(h, t->bits);
        for (;;) {
            Slot *s = &t->slots[idx];
            if (s->count == 0) {
                s->hash = h;
                s->pos = (uint32_t)i;
                s->count = 1;
                t->distinct++;
                if ((size_t)t->distinct * 2 > mask + 1) {
                    if (table_grow(t) < 0)
                        return -1;
                    mask = ((size_t)1 << t->bits) - 1;
                }
                break;
            }
            if (s->hash == h && memcmp(u + s->pos, u + i, width) == 0) {
                if (++s->count == 2 && note_rep(t, idx) < 0)
                    return -1;
                break;
            }
            idx = (idx + 1) & mask;
        }
    }
    return 0;
}

/* Word repetition's numerator from a filled table: the occurrences of the n-grams seen more
 * than once. */
static long long repeated_occurrences(const Table *t)
{
    long long sum = 0;
    for (size_t k = 0; k < t->nrep; k++)
        sum += t->slots[t->reps[k]].count;
    return sum;
}

static int cmp_desc(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x < y) - (x > y);
}

/* Data-Juicer's character repetition ratio from a filled table: the sum of the
 * min(int(sqrt(distinct)), #repeated) largest counts over the ``total`` n-grams. Reuses the
 * table's reps list for the counts. */
static double char_ratio_of(Table *t, Py_ssize_t total)
{
    uint32_t *counts = t->reps;
    for (size_t i = 0; i < t->nrep; i++)
        counts[i] = t->slots[t->reps[i]].count;
    Py_ssize_t take = (Py_ssize_t)sqrt((double)t->distinct);
    if ((size_t)take > t->nrep)
        take = (Py_ssize_t)t->nrep;
    long long sum = 0;
    if (take > 0) {
        qsort(counts, t->nrep, sizeof(uint32_t), cmp_desc);
        for (Py_ssize_t i = 0; i < take; i++)
            sum += counts[i];
    }
    return (double)sum / (double)total;
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
    PyObject *result = NULL;
    if (count_ngrams((const uint32_t *)u, len, n, &t) == 0)
        result = PyFloat_FromDouble(char_ratio_of(&t, len - n + 1));
    table_free(&t);
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
    Table t = {0};
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
            if (count_ngrams(id + off[i], len, n, &t) < 0) {
                Py_CLEAR(result);
                goto done;
            }
            ratio = (double)repeated_occurrences(&t) / (double)(len - n + 1);
        }
        PyObject *f = PyFloat_FromDouble(ratio);
        if (f == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, f);
    }
done:
    table_free(&t);
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
 * and advances *i. A truncated or stray byte decodes as itself, one byte long, and a 4-byte
 * sequence beyond U+10FFFF as U+FFFD, so a malformed buffer can give a wrong answer but never a
 * code point outside a bitmap's 0x110000 bits, nor an out-of-bounds read. */
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
        uint32_t c = ((b & 0x07) << 18) | ((uint32_t)(s[k + 1] & 0x3F) << 12) |
                     ((uint32_t)(s[k + 2] & 0x3F) << 6) | (s[k + 3] & 0x3F);
        return c > 0x10FFFF ? 0xFFFD : c;
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

/* String i written (it ends at o->len): its end offset, or OverflowError past int32. */
static int out_end(Out *o, int32_t *out_off, Py_ssize_t i)
{
    if (o->len > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "the new data exceeds int32 offsets");
        return -1;
    }
    out_off[i + 1] = (int32_t)o->len;
    return 0;
}

/* (offsets, data) as bytes: the offsets object and what o holds. */
static PyObject *out_result(Out *o, PyObject *offsets)
{
    PyObject *bytes = PyBytes_FromStringAndSize(o->buf, o->len);
    if (bytes == NULL)
        return NULL;
    PyObject *result = PyTuple_Pack(2, offsets, bytes);
    Py_DECREF(bytes);
    return result;
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
        if (out_put(&o, s + run, end - run) < 0 || out_end(&o, out_off, i) < 0)
            goto done;
    }
    result = out_result(&o, new_offs);
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

PyDoc_STRVAR(json_quote_doc,
             "json_quote(offsets, data, /)\n--\n\n"
             "Each string of an Arrow string array (as for count_in_set) as\n"
             "json.dumps(text, ensure_ascii=False) writes it: in quotes, with the quote, the\n"
             "backslash and the C0 controls escaped. All of these are ASCII, and no byte of a\n"
             "multi-byte UTF-8 sequence is below 0x80, so the pass is over bytes, not code\n"
             "points. Returns (offsets, data) as for rewrite. OverflowError past 2 GiB.");

/* What json.dumps writes for each byte it escapes (NULL: the byte as it is). */
static const char *const json_escape_of[256] = {
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
    "\\b",     "\\t",     "\\n",     "\\u000b", "\\f",     "\\r",     "\\u000e", "\\u000f",
    "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
    "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    ['"'] = "\\\"",
    ['\\'] = "\\\\",
};

static PyObject *json_quote(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "json_quote expects (offsets, data)");
        return NULL;
    }
    Py_buffer offs, data;
    Py_ssize_t n;
    if (get_string_buffers(args, &offs, &data, &n) < 0)
        return NULL;
    PyObject *result = NULL, *new_offs = NULL;
    Out o = {0};
    new_offs = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int32_t));
    if (new_offs == NULL)
        goto done;
    int32_t *out_off = (int32_t *)PyBytes_AS_STRING(new_offs);
    const int32_t *off = (const int32_t *)offs.buf;
    const unsigned char *s = (const unsigned char *)data.buf;
    o.cap = (n > 0 ? off[n] - off[0] : 0) + 2 * n + 64;
    o.buf = PyMem_Malloc((size_t)o.cap);
    if (o.buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    out_off[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t k = off[i], end = off[i + 1], run = k;
        if (out_put(&o, "\"", 1) < 0)
            goto done;
        for (; k < end; k++) {
            const char *esc = json_escape_of[s[k]];
            if (esc == NULL)
                continue;
            if (out_put(&o, s + run, k - run) < 0 || out_put(&o, esc, (Py_ssize_t)strlen(esc)) < 0)
                goto done;
            run = k + 1;
        }
        if (out_put(&o, s + run, end - run) < 0 || out_put(&o, "\"", 1) < 0 ||
            out_end(&o, out_off, i) < 0)
            goto done;
    }
    result = out_result(&o, new_offs);
done:
    PyMem_Free(o.buf);
    Py_XDECREF(new_offs);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return result;
}

PyDoc_STRVAR(char_rep_ratios_doc,
             "char_rep_ratios(offsets, data, n, /)\n--\n\n"
             "char_rep_ratio of each string of an Arrow string array (offsets: its n + 1\n"
             "int32 offsets, data: its UTF-8 bytes), decoded to code points in place. Returns\n"
             "n float64 values as bytes.");

static PyObject *char_rep_ratios(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "char_rep_ratios expects (offsets, data, n)");
        return NULL;
    }
    Py_ssize_t ngram, count;
    if (parse_n(args[2], &ngram) < 0)
        return NULL;
    Py_buffer offs, data;
    if (get_string_buffers(args, &offs, &data, &count) < 0)
        return NULL;
    Table t = {0};
    uint32_t *u = NULL;
    Py_ssize_t u_allocated = 0;
    PyObject *result = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(double));
    if (result == NULL)
        goto done;
    double *out = (double *)PyBytes_AS_STRING(result);
    const int32_t *off = (const int32_t *)offs.buf;
    const unsigned char *bytes = (const unsigned char *)data.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t k = off[i], end = off[i + 1];
        if (end - k > u_allocated) { /* a text has at most as many code points as bytes */
            PyMem_Free(u);
            u_allocated = end - k;
            u = PyMem_Malloc((size_t)u_allocated * sizeof(uint32_t));
            if (u == NULL) {
                PyErr_NoMemory();
                Py_CLEAR(result);
                goto done;
            }
        }
        Py_ssize_t len = 0;
        while (k < end)
            u[len++] = next_cp(bytes, &k, end);
        out[i] = 0.0;
        if (len - ngram + 1 > 0) {
            if (count_ngrams(u, len, ngram, &t) < 0) {
                Py_CLEAR(result);
                goto done;
            }
            out[i] = char_ratio_of(&t, len - ngram + 1);
        }
    }
done:
    PyMem_Free(u);
    table_free(&t);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return result;
}

/* Word interning for simple_word_rep_ratios: the distinct words of one text (lower-cased and
 * stripped, in the scratch buffer) get ids 0, 1, ... in order of first occurrence. */
typedef struct {
    uint64_t hash;
    uint32_t start, len; /* the word's bytes in the scratch buffer */
    uint32_t id;         /* id + 1; 0 marks an empty slot */
    uint32_t pad;
} Word;

typedef struct {
    Word *slots;
    size_t bits, allocated;
    uint32_t count;
} Words;

static int words_reset(Words *w, size_t expected)
{
    void *slots = w->slots;
    int rc = slots_reset(&slots, &w->allocated, &w->bits, expected, sizeof(Word));
    w->slots = slots;
    w->count = 0;
    return rc;
}

static int words_grow(Words *w)
{
    size_t bits = w->bits + 1, cap = (size_t)1 << bits, old = (size_t)1 << w->bits;
    Word *slots = PyMem_Calloc(cap, sizeof(Word));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < old; i++) {
        if (w->slots[i].id == 0)
            continue;
        size_t idx = slot_of(w->slots[i].hash, bits);
        while (slots[idx].id != 0)
            idx = (idx + 1) & (cap - 1);
        slots[idx] = w->slots[i];
    }
    PyMem_Free(w->slots);
    w->slots = slots;
    w->bits = bits;
    w->allocated = cap;
    return 0;
}

/* The id of the word scratch[start:start+len], given a new one if it is new; -1 on error. */
static int64_t word_id(Words *w, const unsigned char *scratch, uint32_t start, uint32_t len)
{
    uint64_t h = 0xCBF29CE484222325ULL; /* FNV-1a */
    for (uint32_t k = 0; k < len; k++)
        h = (h ^ scratch[start + k]) * 0x100000001B3ULL;
    size_t mask = ((size_t)1 << w->bits) - 1, idx = slot_of(h, w->bits);
    for (;;) {
        Word *e = &w->slots[idx];
        if (e->id == 0) {
            e->hash = h;
            e->start = start;
            e->len = len;
            e->id = ++w->count;
            uint32_t id = e->id - 1;
            if ((size_t)w->count * 2 > mask + 1 && words_grow(w) < 0)
                return -1;
            return id;
        }
        if (e->hash == h && e->len == len && memcmp(scratch + e->start, scratch + start, len) == 0)
            return e->id - 1;
        idx = (idx + 1) & mask;
    }
}

PyDoc_STRVAR(simple_word_rep_ratios_doc,
             "simple_word_rep_ratios(offsets, data, special, n, /)\n--\n\n"
             "word_repetition_filter's ratio of each string of an Arrow string array (offsets:\n"
             "its n + 1 int32 offsets, data: its UTF-8 bytes) that str.lower changes only in\n"
             "its ASCII letters: words split on ' ', '\\n' and '\\t', lower-cased, stripped\n"
             "at both ends of the code points set in special (a bitmap of 0x110000 bits), empty\n"
             "ones dropped; the n-gram occurrences whose n-gram occurs more than once, over the\n"
             "number of n-grams. Returns (ratios, others): n float64 values as bytes (0.0 for\n"
             "any other string) and the list of the other strings' indices.");

static PyObject *simple_word_rep_ratios(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "simple_word_rep_ratios expects (offsets, data, special, n)");
        return NULL;
    }
    Py_ssize_t ngram, count;
    if (parse_n(args[3], &ngram) < 0)
        return NULL;
    Py_buffer offs, data, bits;
    if (get_string_buffers(args, &offs, &data, &count) < 0)
        return NULL;
    PyObject *ratios = NULL, *others = NULL, *result = NULL;
    Table t = {0};
    Words w = {0};
    unsigned char *scratch = NULL;
    uint32_t *ids = NULL;
    Py_ssize_t allocated = 0;
    if (get_bitmap(args[2], &bits) < 0)
        goto release;
    const unsigned char *special = (const unsigned char *)bits.buf;
    ratios = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(double));
    others = PyList_New(0);
    if (ratios == NULL || others == NULL)
        goto done;
    double *out = (double *)PyBytes_AS_STRING(ratios);
    const int32_t *off = (const int32_t *)offs.buf;
    const unsigned char *bytes = (const unsigned char *)data.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *s = bytes + off[i];
        Py_ssize_t len = off[i + 1] - off[i];
        out[i] = 0.0;
        int simple = 1; /* str.lower is ASCII lower-casing: no other code point changes */
        for (Py_ssize_t k = 0; k < len && simple;) {
            if (s[k] < 0x80) {
                k++;
                continue;
            }
            uint32_t cp = next_cp(s, &k, len);
            /* U+0130 lower-cases to two code points, U+03A3 by its context: neither is
             * simple, and Py_UNICODE_TOLOWER already tells both apart from themselves. */
            simple = cp != 0x130 && cp != 0x3A3 && Py_UNICODE_TOLOWER(cp) == cp;
        }
        if (!simple) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(others, index) < 0) {
                Py_XDECREF(index);
                goto done;
            }
            Py_DECREF(index);
            continue;
        }
        if (len > allocated) { /* a text has fewer words than bytes */
            PyMem_Free(scratch);
            PyMem_Free(ids);
            allocated = len;
            scratch = PyMem_Malloc((size_t)allocated);
            ids = PyMem_Malloc((size_t)allocated * sizeof(uint32_t));
            if (scratch == NULL || ids == NULL) {
                PyErr_NoMemory();
                goto done;
            }
        }
        if (words_reset(&w, (size_t)len / 4 + 1) < 0)
            goto done;
        Py_ssize_t nwords = 0;
        for (Py_ssize_t k = 0; k < len; k++) {
            unsigned char c = s[k];
            scratch[k] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
        }
        for (Py_ssize_t k = 0; k < len;) {
            Py_ssize_t a = k;
            while (k < len && s[k] != ' ' && s[k] != '\n' && s[k] != '\t')
                k++;
            Py_ssize_t b = k++; /* the piece is s[a:b]; k skips its separator */
            while (a < b) { /* strip code points of the set, from the front */
                Py_ssize_t next = a;
                if (!bit_set(special, next_cp(scratch, &next, b)))
                    break;
                a = next;
            }
            while (b > a) { /* and from the back: the last code point starts at j */
                Py_ssize_t j = b - 1;
                while (j > a && (scratch[j] & 0xC0) == 0x80)
                    j--;
                Py_ssize_t at = j;
                if (!bit_set(special, next_cp(scratch, &at, b)))
                    break;
                b = j;
            }
            if (a == b)
                continue;
            int64_t id = word_id(&w, scratch, (uint32_t)a, (uint32_t)(b - a));
            if (id < 0)
                goto done;
            ids[nwords++] = (uint32_t)id;
        }
        if (nwords - ngram + 1 > 0) {
            if (count_ngrams(ids, nwords, ngram, &t) < 0)
                goto done;
            out[i] = (double)repeated_occurrences(&t) / (double)(nwords - ngram + 1);
        }
    }
    result = PyTuple_Pack(2, ratios, others);
done:
    PyBuffer_Release(&bits);
release:
    Py_XDECREF(ratios);
    Py_XDECREF(others);
    PyMem_Free(scratch);
    PyMem_Free(ids);
    PyMem_Free(w.slots);
    table_free(&t);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return result;
}

PyDoc_STRVAR(line_stats_doc,
             "line_stats(offsets, data, /)\n--\n\n"
             "For each string of an Arrow string array (offsets: its n + 1 int32 offsets,\n"
             "data: its UTF-8 bytes), as str.splitlines() sees it: the length in code points\n"
             "of its longest line (0 without lines) and its number of lines. Line breaks are\n"
             "\\n, \\r, \\r\\n (one break), \\v, \\f, \\x1c, \\x1d, \\x1e, \\x85, \\u2028 and\n"
             "\\u2029. Returns (longest, lines): n int64 values each, as bytes.");

static inline int is_ascii_break(unsigned char b)
{
    return b == '\n' || b == '\r' || b == 0x0B || b == 0x0C || b == 0x1C || b == 0x1D ||
           b == 0x1E;
}

static PyObject *line_stats(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "line_stats expects (offsets, data)");
        return NULL;
    }
    Py_buffer offs, data;
    Py_ssize_t count;
    if (get_string_buffers(args, &offs, &data, &count) < 0)
        return NULL;
    PyObject *longest = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    PyObject *lines = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    PyObject *result = NULL;
    if (longest != NULL && lines != NULL) {
        int64_t *top = (int64_t *)PyBytes_AS_STRING(longest);
        int64_t *num = (int64_t *)PyBytes_AS_STRING(lines);
        const int32_t *off = (const int32_t *)offs.buf;
        const unsigned char *s = (const unsigned char *)data.buf;
        for (Py_ssize_t i = 0; i < count; i++) {
            int64_t cur = 0, best = 0, breaks = 0;
            Py_ssize_t k = off[i], end = off[i + 1];
            while (k < end) {
                unsigned char b = s[k];
                int brk;
                if (b < 0x80) {
                    brk = is_ascii_break(b);
                    k++;
                    if (b == '\r' && k < end && s[k] == '\n')
                        k++; /* \r\n: one break */
                }
                else {
                    uint32_t cp = next_cp(s, &k, end);
                    brk = cp == 0x85 || cp == 0x2028 || cp == 0x2029;
                }
                if (brk) {
                    best = cur > best ? cur : best;
                    cur = 0;
                    breaks++;
                }
                else {
                    cur++;
                }
            }
            /* A last line without a break after it is a line too. */
            top[i] = cur > best ? cur : best;
            num[i] = breaks + (cur > 0);
        }
        result = PyTuple_Pack(2, longest, lines);
    }
    Py_XDECREF(longest);
    Py_XDECREF(lines);
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
    {"char_rep_ratios", (PyCFunction)(void (*)(void))char_rep_ratios, METH_FASTCALL,
     char_rep_ratios_doc},
    {"simple_word_rep_ratios", (PyCFunction)(void (*)(void))simple_word_rep_ratios, METH_FASTCALL,
     simple_word_rep_ratios_doc},
    {"count_in_set", (PyCFunction)(void (*)(void))count_in_set, METH_FASTCALL, count_in_set_doc},
    {"count_words", (PyCFunction)(void (*)(void))count_words, METH_FASTCALL, count_words_doc},
    {"rewrite", (PyCFunction)(void (*)(void))rewrite, METH_FASTCALL, rewrite_doc},
    {"json_quote", (PyCFunction)(void (*)(void))json_quote, METH_FASTCALL, json_quote_doc},
    {"line_stats", (PyCFunction)(void (*)(void))line_stats, METH_FASTCALL, line_stats_doc},
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
