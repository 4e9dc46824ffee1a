/*
 * dlib's bilinear resize of an RGB image, to the bit: the pixels `dlib.resize_image(rgb, rows, cols)`
 * gives, which are the pixels dlib's HOG scanner builds its pyramid from (`pyramid_up` to double the
 * photo at upsample 1, then `pyramid_down<6>` per level: the same resize each time).
 *
 * Why it exists: loraops scans pyramid level 4 of the doubled photo itself (bot/faces/dlib_hog.py).
 * dlib makes that image in five resizes at ~40 ms for a 1024 px photo, loading each source pixel into
 * a vector lane one at a time; this does the same arithmetic with the per-column work hoisted out of
 * the row loop, in ~12 ms.
 *
 * The arithmetic follows dlib 20.0's `resize_image(..., interpolate_bilinear)` for RGB images
 * (dlib/image_transforms/interpolation.h): rows step in double precision; columns are taken four at
 * a time with single-precision positions that accumulate 4*x_scale per block, truncated to integers;
 * each channel is tl*w_tl + tr*w_tr + bl*w_bl + br*w_br in single precision, summed left to right,
 * truncated; the last columns (where the fourth lane's right neighbour would leave the image) are done
 * in double precision. It must be compiled without contracting multiply-adds into FMA instructions
 * (dlib-bin has none): -ffp-contract=off. tests/faces/test_dlib_resize.py compares it with dlib.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    Py_ssize_t rows, cols;
} Size;

/* Scratch, sized by the caller: `left` has out_nc + 4 entries, the float arrays and each row
   3 * (out_nc + 4) values. */
typedef struct {
    int32_t *left;
    float *lr_wide, *inv_lr_wide; /* the column's fraction, repeated for its three channel values */
    uint8_t *rows[2][2];          /* two source rows, each as [left pixel, right pixel] per value */
    Py_ssize_t row_of[2];
} Scratch;

/* Each hot function is built twice, for AVX2 and for any x86-64, and the loader picks one for the CPU
   (GCC's function multi-versioning): 30 % faster where AVX2 is there, the same bits either way. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

/* Source row `row`, gathered at the four-lane columns' left and right neighbours. */
HOT static uint8_t *const *expanded(const uint8_t *in, Py_ssize_t in_nc, Py_ssize_t row, Py_ssize_t simd_end,
                                    Scratch *s)
{
    for (int slot = 0; slot < 2; ++slot)
        if (s->row_of[slot] == row)
            return s->rows[slot];
    /* Rows are visited in order: replace the slot holding the lower row. */
    const int slot = s->row_of[0] < s->row_of[1] ? 0 : 1;
    const uint8_t *bytes = in + row * in_nc * 3;
    uint8_t *l = s->rows[slot][0], *r = s->rows[slot][1];
    /* Both neighbours are inside the row (the four-lane part stops before a right neighbour would
       leave it). A pixel is copied as four bytes, the fourth overwritten by the next pixel: one load
       and one store instead of three; the last pixels of the row, whose fourth byte is past it, as
       three. */
    const Py_ssize_t row_bytes = in_nc * 3;
    Py_ssize_t c = 0;
    for (; c < simd_end && (Py_ssize_t)s->left[c] * 3 + 7 <= row_bytes; ++c) {
        const uint8_t *px = bytes + (Py_ssize_t)s->left[c] * 3;
        memcpy(l + c * 3, px, 4);
        memcpy(r + c * 3, px + 3, 4);
    }
    for (; c < simd_end; ++c) {
        const uint8_t *px = bytes + (Py_ssize_t)s->left[c] * 3;
        memcpy(l + c * 3, px, 3);
        memcpy(r + c * 3, px + 3, 3);
    }
    s->row_of[slot] = row;
    return s->rows[slot];
}

HOT static void resize_rgb(const uint8_t *in, Size in_size, uint8_t *out, Size out_size, Scratch *s)
{
    const Py_ssize_t in_nc = in_size.cols, in_nr = in_size.rows;
    const Py_ssize_t out_nc = out_size.cols, out_nr = out_size.rows;
    const double x_scale = (double)(in_nc - 1) / (double)(out_nc - 1 > 1 ? out_nc - 1 : 1);
    const double y_scale = (double)(in_nr - 1) / (double)(out_nr - 1 > 1 ? out_nr - 1 : 1);

    /* Column terms of the four-lane part, as dlib's loop computes them block after block. */
    const double x0 = -4 * x_scale;
    float lane[4] = {(float)x0, (float)(x0 + x_scale), (float)(x0 + 2 * x_scale), (float)(x0 + 3 * x_scale)};
    const float block_step = (float)(4 * x_scale);
    Py_ssize_t simd_end = 0;
    for (; simd_end < out_nc; simd_end += 4) { /* dlib's own exit is the break below, always first */
        int32_t l[4];
        float frac[4];
        for (int j = 0; j < 4; ++j) {
            lane[j] += block_step;
            l[j] = (int32_t)lane[j]; /* _mm_cvttps_epi32: toward zero */
            frac[j] = lane[j] - (float)l[j];
        }
        if (l[3] + 1 >= in_nc)
            break;
        for (int j = 0; j < 4; ++j) {
            s->left[simd_end + j] = l[j];
            for (int ch = 0; ch < 3; ++ch) {
                s->lr_wide[(simd_end + j) * 3 + ch] = frac[j];
                s->inv_lr_wide[(simd_end + j) * 3 + ch] = 1 - frac[j];
            }
        }
    }
    if (simd_end > out_nc)
        simd_end = out_nc;
    s->row_of[0] = s->row_of[1] = -1;
    const Py_ssize_t wide_end = simd_end * 3;
    const float *lr = s->lr_wide, *inv_lr = s->inv_lr_wide;

    double y = -y_scale;
    for (Py_ssize_t r = 0; r < out_nr; ++r) {
        y += y_scale;
        const Py_ssize_t top = (Py_ssize_t)floor(y);
        const Py_ssize_t bottom = top + 1 < in_nr - 1 ? top + 1 : in_nr - 1;
        const double tb_frac = y - (double)top;
        const float tb = (float)tb_frac;
        const float inv_tb = (float)(1 - tb_frac);
        uint8_t *const *t = expanded(in, in_nc, top, simd_end, s);
        uint8_t *const *b = expanded(in, in_nc, bottom, simd_end, s);
        const uint8_t *tl = t[0], *tr = t[1], *bl = b[0], *br = b[1];
        uint8_t *o = out + r * out_nc * 3;
        /* One value (pixel, channel) per step, the same operations in the same order as dlib's lanes:
           the compiler vectorises this loop. */
        for (Py_ssize_t k = 0; k < wide_end; ++k) {
            const float tlf = inv_tb * inv_lr[k];
            const float trf = inv_tb * lr[k];
            const float blf = tb * inv_lr[k];
            const float brf = tb * lr[k];
            o[k] = (uint8_t)(int32_t)(tlf * (float)tl[k] + trf * (float)tr[k] + blf * (float)bl[k] +
                                      brf * (float)br[k]);
        }
        const uint8_t *t_row = in + top * in_nc * 3, *b_row = in + bottom * in_nc * 3;
        double x = -x_scale + (double)simd_end * x_scale;
        for (Py_ssize_t c = simd_end; c < out_nc; ++c) {
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

static PyObject *py_resize_rgb(PyObject *self, PyObject *args)
{
    PyObject *source, *target;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO:resize_rgb", &source, &target))
        return NULL;
    Py_buffer in, out;
    if (rgb_buffer(source, &in, 0, "source") != 0)
        return NULL;
    if (rgb_buffer(target, &out, 1, "target") != 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    Size in_size = {in.shape[0], in.shape[1]}, out_size = {out.shape[0], out.shape[1]};
    /* One block: the column indices, 2 float arrays and 4 byte arrays of 3 * (out_nc + 4) values. */
    const size_t columns = (size_t)out_size.cols + 4, wide = 3 * columns;
    char *block = PyMem_RawMalloc(columns * sizeof(int32_t) + wide * (2 * sizeof(float) + 4));
    if (block == NULL) {
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    float *floats = (float *)(block + columns * sizeof(int32_t));
    uint8_t *bytes = (uint8_t *)(floats + 2 * wide);
    Scratch scratch = {(int32_t *)block,
                       floats,
                       floats + wide,
                       {{bytes, bytes + wide}, {bytes + 2 * wide, bytes + 3 * wide}},
                       {-1, -1}};
    Py_BEGIN_ALLOW_THREADS
    resize_rgb((const uint8_t *)in.buf, in_size, (uint8_t *)out.buf, out_size, &scratch);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(block);
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"resize_rgb", py_resize_rgb, METH_VARARGS,
     "resize_rgb(source, target): fill target (h x w x 3 uint8) with source resized as dlib.resize_image does."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dlib_resize", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__dlib_resize(void) { return PyModule_Create(&module); }
