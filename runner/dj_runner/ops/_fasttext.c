/*
 * fastText's supervised prediction (the top label and its
 * probability) for a whole batch of texts, in one call, for language_id_score_filter.
 *
 * It is fastText 0.9.2's own algorithm (the fasttext-predict package's sources: dictionary.cc
 * getLine/readWord/computeSubwords/pushHash, model.cc computeHidden, productquantizer.cc
 * addcode/mulcode, loss.cc HierarchicalSoftmaxLoss::dfs, fasttext.cc predictLine), restated in
 * C with every floating-point operation in the same order, the same types (float where fastText
 * uses `real`, double where it mixes in double constants) and the same libm functions (expf,
 * log), so that on the same machine the probability is bit-identical. What differs is only the
 * bookkeeping: the pruned subword index is a flat array instead of an unordered_map, subword
 * hashes are computed incrementally and nothing is allocated per word.
 *
 * Only what language_id_score_filter needs is supported: a supervised model (file format
 * version 12) with the hierarchical softmax loss, k = 1, threshold 0. fasttext_load refuses any other
 * model; the op then uses the fasttext module itself. The op also checks this kernel against
 * the fasttext module on its first batch in every process.
 *
 * Part of dj_runner.ops._kernels (pyproject.toml builds both files into that one module):
 *
 *   fasttext_load(path: str) -> Model
 *   Model.labels -> list[str]                      the model's labels, in label order
 *   Model.predict(texts: list[str]) -> (bytes, bytes)
 *       per text: the top label's index (int32, -1 when fastText predicts nothing) and its
 *       probability (float64 of fastText's float), for the text as one line (the caller
 *       removes '\n', as fastText's Python predict requires).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FT_MAGIC 793712314
#define FT_VERSION 12
#define KSUB 256
#define MODEL_SUP 3
#define LOSS_HS 1

static const char EOS[] = "</s>";
static const char LABEL_PREFIX[] = "__label__";

typedef struct {
    int32_t dim, nsubq, dsub, lastdsub;
    float *centroids; /* dim * KSUB */
} PQ;

typedef struct {
    int quant;
    int64_t m, n;
    float *dense; /* m * n when !quant */
    int qnorm;
    uint8_t *codes; /* nsubq * m */
    uint8_t *norm_codes;
    PQ pq, npq;
} Matrix;

typedef struct {
    PyObject_HEAD int32_t dim, minn, maxn, bucket, word_ngrams;
    int32_t size, nwords, nlabels;
    int64_t prune_size;
    /* the dictionary: words by id, and an open-addressing table from word to id */
    char **words;
    int32_t *word_len;
    int8_t *word_type;
    uint32_t *word_hash;
    int32_t *table;
    uint32_t table_mask;
    /* the subword ids of each vocabulary word, flattened (fastText's initNgrams) */
    int64_t *sub_off;
    int32_t *sub_ids;
    int64_t *label_count; /* the labels' counts, for the tree */
    int32_t *prune; /* bucket entries: the pruned id of a hash, -1 when pruned away */
    uint64_t *kept; /* bucket bits: set where prune[] holds an id (small enough for the cache) */
    Matrix input, output;
    int32_t osz;
    int32_t *left, *right; /* the Huffman tree, 2 * osz - 1 nodes */
    PyObject *labels;
} Model;

/* fastText's hash: FNV-1a over the bytes taken as signed chars. */
static inline uint32_t fnv_step(uint32_t h, unsigned char c)
{
    h ^= (uint32_t)(int32_t)(int8_t)c;
    return h * 16777619u;
}

static uint32_t fnv(const unsigned char *s, Py_ssize_t len)
{
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < len; i++)
        h = fnv_step(h, s[i]);
    return h;
}

/* ---- loading -------------------------------------------------------------------------- */

static int rd(FILE *f, void *dst, size_t len)
{
    if (len && fread(dst, 1, len, f) != len) {
        PyErr_SetString(PyExc_ValueError, "truncated fastText model");
        return -1;
    }
    return 0;
}

static int load_pq(FILE *f, PQ *pq)
{
    if (rd(f, &pq->dim, 4) || rd(f, &pq->nsubq, 4) || rd(f, &pq->dsub, 4) ||
        rd(f, &pq->lastdsub, 4))
        return -1;
    if (pq->dim <= 0 || pq->dsub <= 0 || pq->nsubq <= 0 || pq->lastdsub <= 0 ||
        (int64_t)(pq->nsubq - 1) * pq->dsub + pq->lastdsub != pq->dim) {
        PyErr_SetString(PyExc_ValueError, "unexpected product quantizer shape");
        return -1;
    }
    pq->centroids = PyMem_Malloc(sizeof(float) * (size_t)pq->dim * KSUB);
    if (pq->centroids == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return rd(f, pq->centroids, sizeof(float) * (size_t)pq->dim * KSUB);
}

static inline const float *centroids(const PQ *pq, int32_t m, uint8_t i)
{
    if (m == pq->nsubq - 1)
        return &pq->centroids[(int64_t)m * KSUB * pq->dsub + (int64_t)i * pq->lastdsub];
    return &pq->centroids[((int64_t)m * KSUB + i) * pq->dsub];
}

static int load_matrix(FILE *f, Matrix *mat, int quant)
{
    mat->quant = quant;
    if (!quant) {
        if (rd(f, &mat->m, 8) || rd(f, &mat->n, 8))
            return -1;
        if (mat->m < 0 || mat->n < 0 || mat->m > ((int64_t)1 << 32) || mat->n > 4096) {
            PyErr_SetString(PyExc_ValueError, "unexpected matrix shape");
            return -1;
        }
        mat->dense = PyMem_Malloc(sizeof(float) * (size_t)(mat->m * mat->n + 1));
        if (mat->dense == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        return rd(f, mat->dense, sizeof(float) * (size_t)(mat->m * mat->n));
    }
    uint8_t qnorm;
    int32_t codesize;
    if (rd(f, &qnorm, 1) || rd(f, &mat->m, 8) || rd(f, &mat->n, 8) || rd(f, &codesize, 4))
        return -1;
    mat->qnorm = qnorm != 0;
    if (mat->m < 0 || mat->n <= 0 || codesize < 0) {
        PyErr_SetString(PyExc_ValueError, "unexpected quantized matrix shape");
        return -1;
    }
    mat->codes = PyMem_Malloc((size_t)codesize + 1);
    if (mat->codes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (rd(f, mat->codes, (size_t)codesize) || load_pq(f, &mat->pq))
        return -1;
    if (mat->pq.dim != mat->n || (int64_t)codesize != (int64_t)mat->pq.nsubq * mat->m) {
        PyErr_SetString(PyExc_ValueError, "quantized matrix and quantizer disagree");
        return -1;
    }
    if (mat->qnorm) {
        mat->norm_codes = PyMem_Malloc((size_t)mat->m + 1);
        if (mat->norm_codes == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (rd(f, mat->norm_codes, (size_t)mat->m) || load_pq(f, &mat->npq))
            return -1;
        if (mat->npq.dim != 1) {
            PyErr_SetString(PyExc_ValueError, "unexpected norm quantizer");
            return -1;
        }
    }
    return 0;
}

static void free_matrix(Matrix *mat)
{
    PyMem_Free(mat->dense);
    PyMem_Free(mat->codes);
    PyMem_Free(mat->norm_codes);
    PyMem_Free(mat->pq.centroids);
    PyMem_Free(mat->npq.centroids);
}

/* The id of a word, or -1 (fastText's getId). */
static int32_t find_word(const Model *md, const unsigned char *w, Py_ssize_t len, uint32_t h)
{
    uint32_t idx = h & md->table_mask;
    for (;;) {
        int32_t id = md->table[idx];
        if (id < 0)
            return -1;
        if (md->word_hash[id] == h && md->word_len[id] == len &&
            memcmp(md->words[id], w, (size_t)len) == 0)
            return id;
        idx = (idx + 1) & md->table_mask;
    }
}

/* A growable int32 vector. */
typedef struct {
    int32_t *v;
    Py_ssize_t len, cap;
} IVec;

static int ivec_push(IVec *a, int32_t x)
{
    if (a->len == a->cap) {
        Py_ssize_t cap = a->cap ? a->cap * 2 : 256;
        int32_t *v = PyMem_Realloc(a->v, sizeof(int32_t) * (size_t)cap);
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->len++] = x;
    return 0;
}

/* fastText's pushHash. */
static inline int push_hash(const Model *md, IVec *out, int32_t id)
{
    if (md->prune_size == 0 || id < 0)
        return 0;
    if (md->prune_size > 0) {
        if (!((md->kept[(uint32_t)id >> 6] >> (id & 63)) & 1))
            return 0;
        id = md->prune[id];
    }
    return ivec_push(out, md->nwords + id);
}

/* fastText's computeSubwords of w (already wrapped in '<' and '>'). */
static int compute_subwords(const Model *md, const unsigned char *w, Py_ssize_t len, IVec *out)
{
    for (Py_ssize_t i = 0; i < len; i++) {
        if ((w[i] & 0xC0) == 0x80)
            continue;
        uint32_t h = 2166136261u;
        Py_ssize_t j = i;
        for (int32_t n = 1; j < len && n <= md->maxn; n++) {
            h = fnv_step(h, w[j++]);
            while (j < len && (w[j] & 0xC0) == 0x80)
                h = fnv_step(h, w[j++]);
            if (n >= md->minn && !(n == 1 && (i == 0 || j == len))) {
                int32_t id = (int32_t)(h % (uint32_t)md->bucket);
                if (push_hash(md, out, id) < 0)
                    return -1;
            }
        }
    }
    return 0;
}

static void model_dealloc(Model *md)
{
    if (md->words != NULL)
        for (int32_t i = 0; i < md->size; i++)
            PyMem_Free(md->words[i]);
    PyMem_Free(md->words);
    PyMem_Free(md->word_len);
    PyMem_Free(md->word_type);
    PyMem_Free(md->word_hash);
    PyMem_Free(md->table);
    PyMem_Free(md->sub_off);
    PyMem_Free(md->sub_ids);
    PyMem_Free(md->prune);
    PyMem_Free(md->kept);
    PyMem_Free(md->label_count);
    PyMem_Free(md->left);
    PyMem_Free(md->right);
    free_matrix(&md->input);
    free_matrix(&md->output);
    Py_XDECREF(md->labels);
    Py_TYPE(md)->tp_free((PyObject *)md);
}

static int load_dictionary(FILE *f, Model *md)
{
    int64_t ntokens;
    if (rd(f, &md->size, 4) || rd(f, &md->nwords, 4) || rd(f, &md->nlabels, 4) ||
        rd(f, &ntokens, 8) || rd(f, &md->prune_size, 8))
        return -1;
    if (md->size < 0 || md->nwords < 0 || md->nlabels <= 0 ||
        md->nwords + md->nlabels != md->size) {
        PyErr_SetString(PyExc_ValueError, "unexpected dictionary sizes");
        return -1;
    }
    md->words = PyMem_Calloc((size_t)md->size + 1, sizeof(char *));
    md->word_len = PyMem_Calloc((size_t)md->size + 1, sizeof(int32_t));
    md->word_type = PyMem_Calloc((size_t)md->size + 1, sizeof(int8_t));
    md->word_hash = PyMem_Calloc((size_t)md->size + 1, sizeof(uint32_t));
    md->label_count = PyMem_Calloc((size_t)md->nlabels, sizeof(int64_t));
    md->osz = md->nlabels;
    md->left = PyMem_Calloc((size_t)(2 * md->osz), sizeof(int32_t));
    md->right = PyMem_Calloc((size_t)(2 * md->osz), sizeof(int32_t));
    uint32_t cap = 64;
    while (cap < (uint32_t)md->size * 2u)
        cap <<= 1;
    md->table = PyMem_Malloc(sizeof(int32_t) * cap);
    if (!md->words || !md->word_len || !md->word_type || !md->word_hash || !md->table ||
        !md->label_count || !md->left || !md->right) {
        PyErr_NoMemory();
        return -1;
    }
    md->table_mask = cap - 1;
    memset(md->table, 0xFF, sizeof(int32_t) * cap);
    char buf[4096];
    for (int32_t i = 0; i < md->size; i++) {
        size_t len = 0;
        int c;
        while ((c = fgetc(f)) != 0) {
            if (c == EOF || len + 1 >= sizeof(buf)) {
                PyErr_SetString(PyExc_ValueError, "bad dictionary entry");
                return -1;
            }
            buf[len++] = (char)c;
        }
        md->words[i] = PyMem_Malloc(len + 1);
        if (md->words[i] == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(md->words[i], buf, len);
        md->words[i][len] = 0;
        md->word_len[i] = (int32_t)len;
        int64_t count;
        if (rd(f, &count, 8) || rd(f, &md->word_type[i], 1))
            return -1;
        md->word_hash[i] = fnv((const unsigned char *)buf, (Py_ssize_t)len);
        /* the first entry of a word wins, as in fastText's find */
        if (find_word(md, (const unsigned char *)buf, (Py_ssize_t)len, md->word_hash[i]) < 0) {
            uint32_t idx = md->word_hash[i] & md->table_mask;
            while (md->table[idx] >= 0)
                idx = (idx + 1) & md->table_mask;
            md->table[idx] = i;
        }
        if ((i < md->nwords) != (md->word_type[i] == 0)) {
            PyErr_SetString(PyExc_ValueError, "words and labels out of order");
            return -1;
        }
        if (i >= md->nwords)
            md->label_count[i - md->nwords] = count;
    }
    if (md->prune_size > 0) {
        if (md->bucket <= 0 || md->bucket > (1 << 26)) {
            PyErr_SetString(PyExc_ValueError, "bucket out of range for a pruned model");
            return -1;
        }
        md->prune = PyMem_Malloc(sizeof(int32_t) * (size_t)md->bucket);
        if (md->prune == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memset(md->prune, 0xFF, sizeof(int32_t) * (size_t)md->bucket);
        md->kept = PyMem_Calloc((size_t)md->bucket / 64 + 1, sizeof(uint64_t));
        if (md->kept == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (int64_t i = 0; i < md->prune_size; i++) {
            int32_t first, second;
            if (rd(f, &first, 4) || rd(f, &second, 4))
                return -1;
            if (first < 0 || first >= md->bucket || second < 0) {
                PyErr_SetString(PyExc_ValueError, "pruned index out of range");
                return -1;
            }
            md->prune[first] = second; /* a later pair overrides, as map[first] = second */
            md->kept[(uint32_t)first >> 6] |= (uint64_t)1 << (first & 63);
        }
    }
    return 0;
}

/* fastText's buildTree, from the labels' counts. */
static int build_tree(Model *md)
{
    int32_t osz = md->osz, nodes = 2 * osz - 1;
    int64_t *count = PyMem_Malloc(sizeof(int64_t) * (size_t)nodes);
    int32_t *parent = PyMem_Malloc(sizeof(int32_t) * (size_t)nodes);
    if (count == NULL || parent == NULL) {
        PyMem_Free(count);
        PyMem_Free(parent);
        PyErr_NoMemory();
        return -1;
    }
    for (int32_t i = 0; i < nodes; i++) {
        parent[i] = md->left[i] = md->right[i] = -1;
        count[i] = (int64_t)1e15;
    }
    for (int32_t i = 0; i < osz; i++)
        count[i] = md->label_count[i];
    int32_t leaf = osz - 1, node = osz;
    for (int32_t i = osz; i < nodes; i++) {
        int32_t mini[2] = {0, 0};
        for (int j = 0; j < 2; j++) {
            if (leaf >= 0 && count[leaf] < count[node])
                mini[j] = leaf--;
            else
                mini[j] = node++;
        }
        md->left[i] = mini[0];
        md->right[i] = mini[1];
        count[i] = count[mini[0]] + count[mini[1]];
        parent[mini[0]] = parent[mini[1]] = i;
    }
    PyMem_Free(count);
    PyMem_Free(parent);
    return 0;
}

/* fastText's initNgrams: each vocabulary word's own id, then its subwords (not for EOS). */
static int init_ngrams(Model *md)
{
    IVec ids = {0};
    md->sub_off = PyMem_Malloc(sizeof(int64_t) * ((size_t)md->size + 1));
    if (md->sub_off == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    unsigned char *w = NULL;
    for (int32_t i = 0; i < md->size; i++) {
        md->sub_off[i] = ids.len;
        if (ivec_push(&ids, i) < 0)
            goto fail;
        if (strcmp(md->words[i], EOS) == 0)
            continue;
        Py_ssize_t len = md->word_len[i];
        unsigned char *nw = PyMem_Realloc(w, (size_t)len + 2);
        if (nw == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        w = nw;
        w[0] = '<';
        memcpy(w + 1, md->words[i], (size_t)len);
        w[len + 1] = '>';
        if (compute_subwords(md, w, len + 2, &ids) < 0)
            goto fail;
    }
    md->sub_off[md->size] = ids.len;
    md->sub_ids = ids.v;
    PyMem_Free(w);
    return 0;
fail:
    PyMem_Free(w);
    PyMem_Free(ids.v);
    return -1;
}

static PyTypeObject ModelType;

PyDoc_STRVAR(load_doc, "fasttext_load(path, /)\n--\n\n"
                       "Load a supervised fastText model (.bin or .ftz) for predict().");

static PyObject *load(PyObject *self, PyObject *arg)
{
    PyObject *path_bytes = NULL;
    if (!PyUnicode_FSConverter(arg, &path_bytes))
        return NULL;
    FILE *f = fopen(PyBytes_AS_STRING(path_bytes), "rb");
    Py_DECREF(path_bytes);
    if (f == NULL)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, arg);
    Model *md = PyObject_New(Model, &ModelType);
    if (md == NULL) {
        fclose(f);
        return NULL;
    }
    memset((char *)md + sizeof(PyObject), 0, sizeof(Model) - sizeof(PyObject));
    int32_t head[2], a[12];
    double t;
    if (rd(f, head, 8))
        goto fail;
    if (head[0] != FT_MAGIC || head[1] != FT_VERSION) {
        PyErr_Format(PyExc_ValueError, "not a fastText model of format version %d",
                     FT_VERSION);
        goto fail;
    }
    /* dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate t */
    if (rd(f, a, sizeof(a)) || rd(f, &t, 8))
        goto fail;
    md->dim = a[0];
    md->word_ngrams = a[5];
    md->bucket = a[8];
    md->minn = a[9];
    md->maxn = a[10];
    if (a[6] != LOSS_HS || a[7] != MODEL_SUP) {
        PyErr_SetString(PyExc_ValueError, "only supervised models with loss hs are supported");
        goto fail;
    }
    if (md->dim <= 0 || md->bucket < 0 || (md->bucket == 0 && md->maxn > 0)) {
        PyErr_SetString(PyExc_ValueError, "unexpected model arguments");
        goto fail;
    }
    if (load_dictionary(f, md) < 0 || build_tree(md) < 0 || init_ngrams(md) < 0)
        goto fail;
    uint8_t quant_input, qout;
    if (rd(f, &quant_input, 1) || load_matrix(f, &md->input, quant_input != 0))
        goto fail;
    if (!quant_input && md->prune_size >= 0) {
        PyErr_SetString(PyExc_ValueError, "a pruned dictionary needs a quantized input matrix");
        goto fail;
    }
    if (rd(f, &qout, 1) || load_matrix(f, &md->output, quant_input && qout))
        goto fail;
    if (md->input.n != md->dim || md->output.n != md->dim || md->output.m < md->osz - 1) {
        PyErr_SetString(PyExc_ValueError, "matrix shapes disagree with the model");
        goto fail;
    }
    fclose(f);
    f = NULL;
    md->labels = PyList_New(md->nlabels);
    if (md->labels == NULL)
        goto fail;
    for (int32_t i = 0; i < md->nlabels; i++) {
        int32_t id = md->nwords + i;
        PyObject *s = PyUnicode_DecodeUTF8(md->words[id], md->word_len[id], "strict");
        if (s == NULL)
            goto fail;
        PyList_SET_ITEM(md->labels, i, s);
    }
    return (PyObject *)md;
fail:
    if (f != NULL)
        fclose(f);
    Py_DECREF(md);
    return NULL;
}

/* ---- prediction ----------------------------------------------------------------------- */

static inline void add_row(const Matrix *mat, float *x, int32_t i)
{
    if (!mat->quant) {
        const float *row = mat->dense + (int64_t)i * mat->n;
        for (int64_t j = 0; j < mat->n; j++)
            x[j] += row[j];
        return;
    }
    float norm = 1;
    if (mat->qnorm)
        norm = centroids(&mat->npq, 0, mat->norm_codes[i])[0];
    const PQ *pq = &mat->pq;
    const uint8_t *code = mat->codes + (int64_t)pq->nsubq * i;
    int32_t d = pq->dsub;
    for (int32_t m = 0; m < pq->nsubq; m++) {
        const float *c = centroids(pq, m, code[m]);
        if (m == pq->nsubq - 1)
            d = pq->lastdsub;
        for (int32_t n = 0; n < d; n++)
            x[m * pq->dsub + n] += norm * c[n];
    }
}

static inline float dot_row(const Matrix *mat, const float *x, int32_t i)
{
    if (!mat->quant) {
        const float *row = mat->dense + (int64_t)i * mat->n;
        float d = 0.0f;
        for (int64_t j = 0; j < mat->n; j++)
            d += row[j] * x[j];
        return d;
    }
    float norm = 1;
    if (mat->qnorm)
        norm = centroids(&mat->npq, 0, mat->norm_codes[i])[0];
    const PQ *pq = &mat->pq;
    const uint8_t *code = mat->codes + (int64_t)pq->nsubq * i;
    float res = 0.0f;
    int32_t d = pq->dsub;
    for (int32_t m = 0; m < pq->nsubq; m++) {
        const float *c = centroids(pq, m, code[m]);
        if (m == pq->nsubq - 1)
            d = pq->lastdsub;
        for (int32_t n = 0; n < d; n++)
            res += x[m * pq->dsub + n] * c[n];
    }
    return res * norm;
}

static inline float std_log(float x) { return (float)log((double)x + 1e-5); }

typedef struct {
    int have;
    float score;
    int32_t node;
} Best;

/* HierarchicalSoftmaxLoss::dfs with k = 1: a later leaf of an equal score replaces the kept
 * one, as std::push_heap/pop_heap do with fastText's comparator. NaN: returns -1. */
static int dfs(const Model *md, float min_score, int32_t node, float score, Best *best,
               const float *hidden)
{
    if (score < min_score)
        return 0;
    if (best->have && score < best->score)
        return 0;
    if (md->left[node] == -1 && md->right[node] == -1) {
        best->have = 1;
        best->score = score;
        best->node = node;
        return 0;
    }
    float f = dot_row(&md->output, hidden, node - md->osz);
    if (isnan(f) && !md->output.quant)
        return -1; /* fastText throws EncounteredNaNError */
    f = (float)(1. / (double)(1 + expf(-f)));
    if (dfs(md, min_score, md->left[node], score + std_log((float)(1.0 - (double)f)), best,
            hidden) < 0)
        return -1;
    return dfs(md, min_score, md->right[node], score + std_log(f), best, hidden);
}

/* Split one line into fastText's tokens and collect its input ids (Dictionary::getLine on
 * the text followed by '\n'). */
static int line_ids(const Model *md, const unsigned char *s, Py_ssize_t len, IVec *ids,
                    IVec *hashes, unsigned char **wbuf, Py_ssize_t *wcap)
{
    Py_ssize_t pos = 0;
    const Py_ssize_t total = len + 1; /* the '\n' predict appends */
    for (;;) {
        /* readWord */
        Py_ssize_t start = -1, end = -1;
        int eos = 0;
        while (pos < total) {
            unsigned char c = pos < len ? s[pos] : '\n';
            pos++;
            if (c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f' ||
                c == '\0') {
                if (start < 0) {
                    if (c == '\n') {
                        eos = 1;
                        break;
                    }
                    continue;
                }
                if (c == '\n')
                    pos--;
                end = pos - (c == '\n' ? 0 : 1);
                break;
            }
            if (start < 0)
                start = pos - 1;
        }
        const unsigned char *tok;
        Py_ssize_t tlen;
        if (eos) {
            tok = (const unsigned char *)EOS;
            tlen = 4;
        } else if (start >= 0) {
            if (end < 0)
                end = total; /* cannot happen: the line ends with '\n' */
            tok = s + start;
            tlen = end - start;
        } else {
            break; /* end of input */
        }
        uint32_t h = fnv(tok, tlen);
        int32_t wid = find_word(md, tok, tlen, h);
        int is_label = wid < 0 ? (tlen >= 9 && memcmp(tok, LABEL_PREFIX, 9) == 0)
                               : md->word_type[wid] == 1;
        int is_eos = tlen == 4 && memcmp(tok, EOS, 4) == 0;
        if (!is_label) {
            if (wid < 0) {
                if (!is_eos) {
                    if (tlen + 2 > *wcap) {
                        Py_ssize_t cap = (tlen + 2) * 2;
                        unsigned char *w = PyMem_Realloc(*wbuf, (size_t)cap);
                        if (w == NULL) {
                            PyErr_NoMemory();
                            return -1;
                        }
                        *wbuf = w;
                        *wcap = cap;
                    }
                    (*wbuf)[0] = '<';
                    memcpy(*wbuf + 1, tok, (size_t)tlen);
                    (*wbuf)[tlen + 1] = '>';
                    if (compute_subwords(md, *wbuf, tlen + 2, ids) < 0)
                        return -1;
                }
            } else if (md->maxn <= 0) {
                if (ivec_push(ids, wid) < 0)
                    return -1;
            } else {
                for (int64_t k = md->sub_off[wid]; k < md->sub_off[wid + 1]; k++)
                    if (ivec_push(ids, md->sub_ids[k]) < 0)
                        return -1;
            }
            if (ivec_push(hashes, (int32_t)h) < 0)
                return -1;
        }
        if (is_eos)
            break;
    }
    /* addWordNgrams */
    for (Py_ssize_t i = 0; i < hashes->len; i++) {
        uint64_t hh = (uint64_t)(int64_t)hashes->v[i];
        for (Py_ssize_t j = i + 1; j < hashes->len && j < i + md->word_ngrams; j++) {
            hh = hh * 116049371u + (uint64_t)(int64_t)hashes->v[j];
            if (push_hash(md, ids, (int32_t)(hh % (uint64_t)(int64_t)md->bucket)) < 0)
                return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(predict_doc,
             "predict(texts, /)\n--\n\n"
             "For each str of the list texts (one line each, no '\\n'), fastText's top label\n"
             "and its probability: (label indices as int32 bytes, -1 for none; probabilities\n"
             "as float64 bytes).");

static PyObject *predict(Model *md, PyObject *texts)
{
    if (!PyList_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "texts must be a list of str");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(texts);
    PyObject *labels = PyBytes_FromStringAndSize(NULL, n * 4);
    PyObject *probs = PyBytes_FromStringAndSize(NULL, n * 8);
    float *hidden = PyMem_Malloc(sizeof(float) * (size_t)md->dim);
    IVec ids = {0}, hashes = {0};
    unsigned char *wbuf = NULL;
    Py_ssize_t wcap = 0;
    PyObject *result = NULL;
    if (labels == NULL || probs == NULL || hidden == NULL) {
        if (hidden == NULL)
            PyErr_NoMemory();
        goto done;
    }
    int32_t *out_label = (int32_t *)PyBytes_AS_STRING(labels);
    double *out_prob = (double *)PyBytes_AS_STRING(probs);
    const float min_score = std_log(0.0f);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(texts, i);
        if (!PyUnicode_Check(t)) {
            PyErr_SetString(PyExc_TypeError, "texts must be a list of str");
            goto done;
        }
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(t, &len);
        if (s == NULL)
            goto done;
        ids.len = hashes.len = 0;
        if (line_ids(md, (const unsigned char *)s, len, &ids, &hashes, &wbuf, &wcap) < 0)
            goto done;
        out_label[i] = -1;
        out_prob[i] = 0.0;
        if (ids.len == 0)
            continue;
        for (int32_t j = 0; j < md->dim; j++)
            hidden[j] = 0.0f;
        for (Py_ssize_t k = 0; k < ids.len; k++)
            add_row(&md->input, hidden, ids.v[k]);
        const float a = (float)(1.0 / (double)ids.len);
        for (int32_t j = 0; j < md->dim; j++)
            hidden[j] *= a;
        Best best = {0, 0.0f, -1};
        if (dfs(md, min_score, 2 * md->osz - 2, 0.0f, &best, hidden) < 0) {
            PyErr_SetString(PyExc_ValueError, "NaN in fastText's output");
            goto done;
        }
        if (best.have) {
            out_label[i] = best.node;
            out_prob[i] = (double)expf(best.score);
        }
    }
    result = PyTuple_Pack(2, labels, probs);
done:
    Py_XDECREF(labels);
    Py_XDECREF(probs);
    PyMem_Free(hidden);
    PyMem_Free(ids.v);
    PyMem_Free(hashes.v);
    PyMem_Free(wbuf);
    return result;
}

static PyObject *model_labels(Model *md, void *closure)
{
    Py_INCREF(md->labels);
    return md->labels;
}

static PyMethodDef model_methods[] = {
    {"predict", (PyCFunction)predict, METH_O, predict_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef model_getset[] = {
    {"labels", (getter)model_labels, NULL, "the model's labels, in label order", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dj_runner.ops._kernels.FastTextModel",
    .tp_basicsize = sizeof(Model),
    .tp_dealloc = (destructor)model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A loaded fastText model (see fasttext_load()).",
    .tp_methods = model_methods,
    .tp_getset = model_getset,
};

static PyMethodDef functions[] = {
    {"fasttext_load", (PyCFunction)load, METH_O, load_doc},
    {NULL, NULL, 0, NULL},
};

/* Called by _kernels.c's module init: adds fasttext_load (and readies its Model type). */
int dj_fasttext_init(PyObject *module)
{
    if (PyType_Ready(&ModelType) < 0)
        return -1;
    return PyModule_AddFunctions(module, functions);
}
