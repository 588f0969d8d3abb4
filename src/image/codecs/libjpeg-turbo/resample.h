/*
 * Streamed port of Pillow 9.4's 8-bit bicubic resampler (libImaging/Resample.c)
 * with EXIF orientation, fed one decoded source row at a time. See resample.c.
 */
#ifndef QVL_RESAMPLE_H
#define QVL_RESAMPLE_H

#include <stddef.h>
#include <stdint.h>

/* Pillow's coefficients for one axis, re-indexed in SOURCE order: output k
 * reads source samples first[k] .. first[k] + count[k] - 1 with
 * weights[k * ksize + j] for sample first[k] + j. When `reversed`, the axis
 * is mirrored by the orientation: source-order output k is oriented output
 * n - 1 - k (and its weights are Pillow's, reversed). */
typedef struct {
  int n;
  int ksize;
  int reversed;
  int32_t *first;
  int32_t *count;
  int32_t *weights;
} qvl_coeffs;

typedef struct {
  /* geometry */
  int src_w, src_h;              /* stored (decoded) size */
  int channels;                  /* 1 or 3 */
  int orientation;               /* EXIF 1..8 */
  int out_w, out_h;
  int transposed;                /* orientations 5..8 */
  int need_h, need_v;            /* Pillow's need_horizontal / need_vertical (oriented) */
  /* "along": the pass along each (stored) row; "across": the pass across
   * stored rows (over a window of rows, which arrive top to bottom). */
  int has_along, has_across;
  qvl_coeffs along, across;
  int across_lo, across_hi;      /* source rows some "across" output reads */
  int len;                       /* bytes per window row */
  int ring;                      /* rows in the window */
  int done;                      /* "across" outputs [0, done) are written */
  uint8_t *win;                  /* ring rows of len bytes (+ padding) */
  const uint8_t **rowp;          /* ring row pointers (scratch) */
  uint8_t *tmp;                  /* one intermediate row (orientations 5-8) */
  uint8_t *stage8;               /* rows staged for the pass along rows */
  size_t stage8_stride;
  int32_t *stage;                /* the same, interleaved into int32 lanes */
  int stage_len;                 /* samples per staged row */
  int staged;                    /* rows staged (0..4) */
  uint8_t *stage_dst[4];         /* where their outputs go */
  uint8_t *out;                  /* out_h * out_w * channels */
  size_t bytes;                  /* allocated in all */
  int next_row;                  /* rows must come in order */
} qvl_resampler;

/* Errors of qvl_rs_init. */
#define QVL_RS_OK 0
#define QVL_RS_NOMEM 1
#define QVL_RS_BADARG 2

/* Set up for a src_w x src_h image with `channels` (1 or 3) bytes per pixel,
 * EXIF `orientation` (1..8), resampled to out_w x out_h (of the oriented
 * image). On failure everything allocated so far is kept in *r: call
 * qvl_rs_free. */
int qvl_rs_init(qvl_resampler *r, int src_w, int src_h, int channels,
                int orientation, int out_w, int out_h);

/* Bytes qvl_rs_init would allocate (for a memory cap check beforehand);
 * 0 when the arguments are invalid. */
uint64_t qvl_rs_bytes(int src_w, int src_h, int channels, int orientation,
                      int out_w, int out_h);

/* Feed stored row `y` (src_w * channels bytes, readable 16 bytes past its
 * end); rows 0 .. src_h - 1 in order. */
void qvl_rs_row(qvl_resampler *r, const uint8_t *row, int y);

/* After the last row: r->out then holds the out_w x out_h image (HWC). */
void qvl_rs_finish(qvl_resampler *r);

void qvl_rs_free(qvl_resampler *r);

/* Pillow 9.4's cmyk2rgb on libjpeg's Adobe-inverted CMYK ("CMYK;I"):
 * 4 bytes per pixel in, 3 out. */
void qvl_inverted_cmyk_to_rgb(const uint8_t *src, uint8_t *dst, int pixels);

#endif
