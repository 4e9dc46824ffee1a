/*
 * The two inner loops of face curation that libraries do slowly, done here with the same results.
 *
 * 1. resize: dlib's bilinear resize of an RGB image, to the bit: the pixels
 *    `dlib.resize_image(rgb, rows, cols)` gives, which are the pixels dlib's HOG scanner builds its
 *    pyramid from (`pyramid_up` to double the photo at upsample 1, then `pyramid_down<6>` per level:
 *    the same resize each time). loraops scans pyramid level 4 of the doubled photo itself
 *    (bot/faces/dlib_hog.py); dlib makes that image in five resizes at ~30 ms for a 1024 px photo,
 *    loading each source pixel into a vector lane one at a time. Here the per-column work is hoisted
 *    out of the row loop, the row loop is vectorised (~12 ms), and a chain of resizes runs as one
 *    pipeline, row by row: each stage keeps only the last few rows it made, so the doubled photo
 *    (9 MB at 1024 px) and the levels after it are never held whole, only the last one is.
 * 2. hamming_knn2: the two nearest ORB descriptors, what the same-picture check
 *    (bot/faces/pictures.py) asked of OpenCV's BFMatcher.knnMatch(k=2): 2.3 ms instead of 10 for
 *    1500 x 1500.
 *
 * The arithmetic follows dlib 20.0's `resize_image(..., interpolate_bilinear)` for RGB images
 * (dlib/image_transforms/interpolation.h): rows step in double precision; columns are taken four at
 * a time with single-precision positions that accumulate 4*x_scale per block, truncated to integers;
 * each channel is tl*w_tl + tr*w_tr + bl*w_bl + br*w_br in single precision, summed left to right,
 * truncated; the last columns (where the fourth lane's right neighbour would leave the image) are done
 * in double precision. It must be compiled without contracting multiply-adds into FMA instructions
 * (dlib-bin has none): -ffp-contract=off. tests/faces/test_native.py compares both with the
 * libraries.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Rows an intermediate stage keeps: its consumer reads rows top and top + 1, with top never going
   back, so the last four rows made always hold them. */
#define RING 4
#define MAX_STAGES 8

/* Each hot function is built twice, for AVX2 and for any x86-64, and the loader picks one for the CPU
   (GCC's function multi-versioning): 30 % faster where AVX2 is there, the same bits either way. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

typedef struct Stage Stage;

struct Stage {
    const uint8_t *image; /* the first stage's input: the source image; NULL for the others */
    Stage *from;          /* the other stages' input: the stage before */
    Py_ssize_t in_nr, in_nc, out_nr, out_nc;
    double x_scale, y_scale, y;
    Py_ssize_t simd_end; /* columns before this one are the four-lane part */
    int32_t *left;       /* per column: the left neighbour */
    float *lr, *inv_lr;  /* per value (column, channel): the column's fraction and 1 - it */
    uint8_t *gathered[2][2]; /* two input rows, each as [left neighbours, right neighbours] */
    Py_ssize_t gathered_row[2];
    uint8_t *out;        /* the last stage: the target; the others: RING rows */
    int last;
    Py_ssize_t made;     /* rows made so far */
};

static const uint8_t *stage_row(Stage *st, Py_ssize_t row);

static const uint8_t *input_row(Stage *st, Py_ssize_t row)
{
    return st->image != NULL ? st->image + row * st->in_nc * 3 : stage_row(st->from, row);
}

/* Input row `row`, gathered at the four-lane columns' left and right neighbours. */
HOT static uint8_t *const *gathered(Stage *st, Py_ssize_t row)
{
    for (int slot = 0; slot < 2; ++slot)
        if (st->gathered_row[slot] == row)
            return st->gathered[slot];
    /* Rows are visited in order: replace the slot holding the lower row. */
    const int slot = st->gathered_row[0] < st->gathered_row[1] ? 0 : 1;
    const uint8_t *bytes = input_row(st, row);
    uint8_t *l = st->gathered[slot][0], *r = st->gathered[slot][1];
    /* Both neighbours are inside the row (the four-lane part stops before a right neighbour would
       leave it). A pixel is copied as four bytes, the fourth overwritten by the next pixel: one load
       and one store instead of three; the last pixels of the row, whose fourth byte is past it, as
       three. */
    const Py_ssize_t row_bytes = st->in_nc * 3;
    Py_ssize_t c = 0;
    for (; c < st->simd_end && (Py_ssize_t)st->left[c] * 3 + 7 <= row_bytes; ++c) {
        const uint8_t *px = bytes + (Py_ssize_t)st->left[c] * 3;
        memcpy(l + c * 3, px, 4);
        memcpy(r + c * 3, px + 3, 4);
    }
    for (; c < st->simd_end; ++c) {
        const uint8_t *px = bytes + (Py_ssize_t)st->left[c] * 3;
        memcpy(l + c * 3, px, 3);
        memcpy(r + c * 3, px + 3, 3);
    }
    st->gathered_row[slot] = row;
    return st->gathered[slot];
}

/* The stage's next output row. */
HOT static void make_row(Stage *st)
{
    const Py_ssize_t r = st->made;
    st->y += st->y_scale;
    const double y = st->y;
    const Py_ssize_t top = (Py_ssize_t)floor(y);
    const Py_ssize_t bottom = top + 1 < st->in_nr - 1 ? top + 1 : st->in_nr - 1;
    const double tb_frac = y - (double)top;
    const float tb = (float)tb_frac;
    const float inv_tb = (float)(1 - tb_frac);
    uint8_t *const *t = gathered(st, top);
    uint8_t *const *b = gathered(st, bottom);
    const uint8_t *tl = t[0], *tr = t[1], *bl = b[0], *br = b[1];
    const float *lr = st->lr, *inv_lr = st->inv_lr;
    uint8_t *o = st->out + (st->last ? r : r % RING) * st->out_nc * 3;
    /* One value (pixel, channel) per step, the same operations in the same order as dlib's lanes:
       the compiler vectorises this loop. */
    const Py_ssize_t wide_end = st->simd_end * 3;
    for (Py_ssize_t k = 0; k < wide_end; ++k) {
        const float tlf = inv_tb * inv_lr[k];
        const float trf = inv_tb * lr[k];
        const float blf = tb * inv_lr[k];
        const float brf = tb * lr[k];
        o[k] = (uint8_t)(int32_t)(tlf * (float)tl[k] + trf * (float)tr[k] + blf * (float)bl[k] +
                                  brf * (float)br[k]);
    }
    if (st->simd_end < st->out_nc) {
        /* Both rows are still held: the gathering above read them, and the stage before keeps RING. */
        const uint8_t *t_row = input_row(st, top), *b_row = input_row(st, bottom);
        const double x_scale = st->x_scale;
        const Py_ssize_t in_nc = st->in_nc;
        double x = -x_scale + (double)st->simd_end * x_scale;
        for (Py_ssize_t c = st->simd_end; c < st->out_nc; ++c) {
            x += x_scale;
            const Py_ssize_t l = (Py_ssize_t)floor(x);
            const Py_ssize_t rt = l + 1 < in_nc - 1 ? l + 1 : in_nc - 1;
            const double lr_frac = x - (double)l;
            for (int ch = 0; ch < 3; ++ch) {
                const double value =
                    (1 - tb_frac) * ((1 - lr_frac) * t_row[l * 3 + ch] + lr_frac * t_row[rt * 3 + ch]) +
                    tb_frac * ((1 - lr_frac) * b_row[l * 3 + ch] + lr_frac * b_row[rt * 3 + ch]);
                o[c * 3 + ch] = (uint8_t)value;
            }
        }
    }
    st->made = r + 1;
}

static const uint8_t *stage_row(Stage *st, Py_ssize_t row)
{
    while (st->made <= row)
        make_row(st);
    return st->out + (st->last ? row : row % RING) * st->out_nc * 3;
}

/* Column terms of the four-lane part, as dlib's loop computes them block after block. */
static void plan_columns(Stage *st)
{
    const double x_scale = st->x_scale;
    const double x0 = -4 * x_scale;
    float lane[4] = {(float)x0, (float)(x0 + x_scale), (float)(x0 + 2 * x_scale), (float)(x0 + 3 * x_scale)};
    const float block_step = (float)(4 * x_scale);
    Py_ssize_t end = 0;
    for (; end < st->out_nc; end += 4) { /* dlib's own exit is the break below, always first */
        int32_t l[4];
        float frac[4];
        for (int j = 0; j < 4; ++j) {
            lane[j] += block_step;
            l[j] = (int32_t)lane[j]; /* _mm_cvttps_epi32: toward zero */
            frac[j] = lane[j] - (float)l[j];
        }
        if (l[3] + 1 >= st->in_nc)
            break;
        for (int j = 0; j < 4; ++j) {
            st->left[end + j] = l[j];
            for (int ch = 0; ch < 3; ++ch) {
                st->lr[(end + j) * 3 + ch] = frac[j];
                st->inv_lr[(end + j) * 3 + ch] = 1 - frac[j];
            }
        }
    }
    st->simd_end = end < st->out_nc ? end : st->out_nc;
}

/* Sizes a stage's scratch, or lays it out in `memory` when given. */
static size_t stage_memory(Stage *st, char *memory)
{
    const size_t columns = (size_t)st->out_nc + 4, wide = 3 * columns;
    const size_t ring = st->last ? 0 : (size_t)RING * 3 * (size_t)st->out_nc;
    const size_t size = columns * sizeof(int32_t) + 2 * wide * sizeof(float) + 4 * wide + ring;
    if (memory != NULL) {
        st->left = (int32_t *)memory;
        st->lr = (float *)(memory + columns * sizeof(int32_t));
        st->inv_lr = st->lr + wide;
        uint8_t *bytes = (uint8_t *)(st->inv_lr + wide);
        st->gathered[0][0] = bytes;
        st->gathered[0][1] = bytes + wide;
        st->gathered[1][0] = bytes + 2 * wide;
        st->gathered[1][1] = bytes + 3 * wide;
        if (!st->last)
            st->out = bytes + 4 * wide;
    }
    return size;
}

static int rgb_buffer(PyObject *object, Py_buffer *view, int writable, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) != 0)
        return -1;
    const char *format = view->format != NULL ? view->format : "B";
    if (view->ndim != 3 || view->shape[2] != 3 || view->itemsize != 1 ||
        (format[0] != 'B' && format[0] != 'c') || view->shape[0] < 1 || view->shape[1] < 1) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous height x width x 3 uint8 array", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* resize(source, target, through=()): source resized to each (rows, cols) of `through` in turn, then to
   the target's size, written into target. */
static PyObject *py_resize(PyObject *self, PyObject *args)
{
    PyObject *source, *target, *through = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO|O:resize", &source, &target, &through))
        return NULL;
    Stage stages[MAX_STAGES];
    memset(stages, 0, sizeof(stages));
    Py_ssize_t count = 1;
    if (through != NULL) {
        PyObject *sizes = PySequence_Fast(through, "through must be a sequence of (rows, cols)");
        if (sizes == NULL)
            return NULL;
        const Py_ssize_t n = PySequence_Fast_GET_SIZE(sizes);
        if (n + 1 > MAX_STAGES) {
            Py_DECREF(sizes);
            return PyErr_Format(PyExc_ValueError, "at most %d intermediate sizes", MAX_STAGES - 1);
        }
        for (Py_ssize_t i = 0; i < n; ++i) {
            Py_ssize_t rows, cols;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sizes, i), "nn", &rows, &cols)) {
                Py_DECREF(sizes);
                return NULL;
            }
            if (rows < 1 || cols < 1) {
                Py_DECREF(sizes);
                return PyErr_Format(PyExc_ValueError, "sizes must be at least 1 x 1");
            }
            stages[i].out_nr = rows;
            stages[i].out_nc = cols;
        }
        Py_DECREF(sizes);
        count = n + 1;
    }
    Py_buffer in, out;
    if (rgb_buffer(source, &in, 0, "source") != 0)
        return NULL;
    if (rgb_buffer(target, &out, 1, "target") != 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    stages[count - 1].out_nr = out.shape[0];
    stages[count - 1].out_nc = out.shape[1];
    stages[count - 1].last = 1;
    stages[count - 1].out = (uint8_t *)out.buf;
    size_t total = 0, offsets[MAX_STAGES];
    for (Py_ssize_t i = 0; i < count; ++i) {
        Stage *st = &stages[i];
        st->image = i == 0 ? (const uint8_t *)in.buf : NULL;
        st->from = i == 0 ? NULL : &stages[i - 1];
        st->in_nr = i == 0 ? in.shape[0] : stages[i - 1].out_nr;
        st->in_nc = i == 0 ? in.shape[1] : stages[i - 1].out_nc;
        offsets[i] = total;
        total += (stage_memory(st, NULL) + 63) & ~(size_t)63;
    }
    char *memory = PyMem_RawMalloc(total);
    if (memory == NULL) {
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; ++i) {
        Stage *st = &stages[i];
        stage_memory(st, memory + offsets[i]);
        st->x_scale = (double)(st->in_nc - 1) / (double)(st->out_nc - 1 > 1 ? st->out_nc - 1 : 1);
        st->y_scale = (double)(st->in_nr - 1) / (double)(st->out_nr - 1 > 1 ? st->out_nr - 1 : 1);
        st->y = -st->y_scale;
        st->gathered_row[0] = st->gathered_row[1] = -1;
        plan_columns(st);
    }
    Stage *last = &stages[count - 1];
    Py_BEGIN_ALLOW_THREADS
    stage_row(last, last->out_nr - 1);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(memory);
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}


/* ------------------------------------------------------------------------------------------------ */
/* The two nearest of `train` (Hamming distance of 32-byte ORB descriptors) for each of `query`: the
   index of the nearest and the two smallest distances, what the ratio test of
   bot/faces/pictures.py reads from OpenCV's BFMatcher.knnMatch(k=2). Where several train descriptors
   share the smallest distance, the two distances are equal and the ratio test drops the match, so
   which index is reported there does not matter; elsewhere the nearest is unique. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define POPCOUNT_CLONES __attribute__((target_clones("popcnt", "default")))
#else
#define POPCOUNT_CLONES
#endif

POPCOUNT_CLONES static void knn2(const uint64_t *query, Py_ssize_t n, const uint64_t *train, Py_ssize_t m,
                                 int32_t *best, int32_t *d1, int32_t *d2)
{
    for (Py_ssize_t i = 0; i < n; ++i) {
        const uint64_t q0 = query[i * 4], q1 = query[i * 4 + 1], q2 = query[i * 4 + 2], q3 = query[i * 4 + 3];
        int first = 257, second = 257, index = -1;
        for (Py_ssize_t j = 0; j < m; ++j) {
            const uint64_t *t = train + j * 4;
            const int d = __builtin_popcountll(q0 ^ t[0]) + __builtin_popcountll(q1 ^ t[1]) +
                          __builtin_popcountll(q2 ^ t[2]) + __builtin_popcountll(q3 ^ t[3]);
            if (d < second) {
                if (d < first) {
                    second = first;
                    first = d;
                    index = (int)j;
                } else {
                    second = d;
                }
            }
        }
        best[i] = index;
        d1[i] = first;
        d2[i] = second;
    }
}

static int descriptor_buffer(PyObject *object, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0)
        return -1;
    const char *format = view->format != NULL ? view->format : "B";
    if (view->ndim != 2 || view->shape[1] != 32 || view->itemsize != 1 || format[0] != 'B') {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous n x 32 uint8 array", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int int32_buffer(PyObject *object, Py_buffer *view, Py_ssize_t n, const char *name)
{
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) != 0)
        return -1;
    const char *format = view->format != NULL ? view->format : "B";
    if (view->ndim != 1 || view->shape[0] != n || view->itemsize != 4 || (format[0] != 'i' && format[0] != 'l')) {
        PyErr_Format(PyExc_ValueError, "%s must be a writable int32 array of %zd values", name, n);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* hamming_knn2(query, train, best, d1, d2) */
static PyObject *py_hamming_knn2(PyObject *self, PyObject *args)
{
    PyObject *objects[5];
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOO:hamming_knn2", &objects[0], &objects[1], &objects[2], &objects[3],
                          &objects[4]))
        return NULL;
    Py_buffer query, train, out[3];
    if (descriptor_buffer(objects[0], &query, "query") != 0)
        return NULL;
    if (descriptor_buffer(objects[1], &train, "train") != 0) {
        PyBuffer_Release(&query);
        return NULL;
    }
    const char *names[3] = {"best", "d1", "d2"};
    int held = 0;
    for (; held < 3; ++held)
        if (int32_buffer(objects[2 + held], &out[held], query.shape[0], names[held]) != 0)
            break;
    if (held == 3) {
        /* Descriptors are copied to 8-byte-aligned memory: a numpy slice need not be. */
        const size_t qn = (size_t)query.shape[0], tn = (size_t)train.shape[0];
        uint64_t *aligned = PyMem_RawMalloc((qn + tn) * 32 + 8);
        if (aligned == NULL) {
            PyErr_NoMemory();
        } else {
            memcpy(aligned, query.buf, qn * 32);
            memcpy(aligned + qn * 4, train.buf, tn * 32);
            Py_BEGIN_ALLOW_THREADS
            knn2(aligned, query.shape[0], aligned + qn * 4, train.shape[0], (int32_t *)out[0].buf,
                 (int32_t *)out[1].buf, (int32_t *)out[2].buf);
            Py_END_ALLOW_THREADS
            PyMem_RawFree(aligned);
        }
    }
    for (int i = 0; i < held; ++i)
        PyBuffer_Release(&out[i]);
    PyBuffer_Release(&query);
    PyBuffer_Release(&train);
    if (held < 3 || PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"resize", py_resize, METH_VARARGS,
     "resize(source, target, through=()): fill target (h x w x 3 uint8) with source resized as "
     "dlib.resize_image does, through each (rows, cols) of `through` in turn."},
    {"hamming_knn2", py_hamming_knn2, METH_VARARGS,
     "hamming_knn2(query, train, best, d1, d2): for each 32-byte query descriptor, the index of the "
     "nearest train descriptor (Hamming) and the two smallest distances, written into int32 arrays."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
