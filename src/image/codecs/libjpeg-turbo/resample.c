/*
 * Pillow 9.4's 8-bit bicubic resampler (libImaging/Resample.c:
 * precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleHorizontal_8bpc,
 * ImagingResampleVertical_8bpc, ImagingResampleInner), streamed: the JPEG
 * decoder hands over one stored row at a time, top to bottom, and only a
 * window of rows is kept. EXIF orientation (Pillow's ImageOps.exif_transpose)
 * is applied by indexing, as src/image/orient.ts does, and the result is the
 * one Pillow computes for `exif_transpose(im).resize((out_w, out_h), BICUBIC)`,
 * byte for byte:
 *
 *  - Pillow resamples the ORIENTED image: horizontal pass (if its width
 *    changes), clip to 8 bits, vertical pass (if its height changes), clip.
 *    Coefficients are computed in double exactly as Pillow computes them
 *    (this file must be built without -ffast-math and with
 *    -ffp-contract=off), then turned into 22-bit fixed point.
 *  - Orientations 1-4 keep rows as rows: the horizontal pass runs on the
 *    stored rows as they arrive (mirrored coefficients for 2 and 3), their
 *    448-wide results go into a window of rows, and an output row of the
 *    vertical pass is computed as soon as its last input row is in (rows land
 *    in reversed order for 3 and 4, handled by reversed coefficients). Only
 *    the rows the vertical pass reads get a horizontal pass, as in Pillow.
 *  - Orientations 5-8 swap the axes: the oriented horizontal pass runs
 *    ACROSS stored rows. Stored rows go into a window; when the last row an
 *    oriented column needs has arrived, that column (one full stored-width row
 *    of the intermediate) is computed from the window, clipped, and then
 *    resampled along its length (the oriented vertical pass) into one column
 *    of the output.
 *  - Where Pillow skips a pass (a side already has its output size), so does
 *    this code (need_h / need_v).
 *  - Integer sums: every term is an 8-bit value times a 22-bit weight and
 *    |sum| < 2^31 whatever the order (as in Pillow, whose INT32 sums rely on
 *    that), so summing a window in reversed order gives the same value.
 *
 * A window of uint8 rows, not int32 accumulators (one per output whose taps
 * are still arriving): the same sums, but the window is bounded by ksize rows
 * (Pillow's taps per output, 2 * ceil(2 * scale) + 1; at most 2 * ceil(2 *
 * src_h / out_h) + 1 + 3 rows), while the accumulators of an upscaled axis
 * blow up (a 20000 x 10 photo rotated: ~180 open outputs x 20000 x 3 x 4
 * bytes = 43 MB).
 *
 * Memory: the output, the coefficient tables, the window, one intermediate
 * row (5-8) and LANES staged rows for the pass along rows (5 bytes per
 * sample each). Never the whole image: ~1 MiB for a 20 MP photo.
 *
 * Speed: the pass along rows resamples LANES (4) rows at once, interleaved
 * into int32 lanes, and the pass across rows works on 16 bytes at a time,
 * with wasm SIMD when built with -msimd128 (integer lanes: the same results
 * as the scalar code, which is built without it).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resample.h"

#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#endif

#define PRECISION_BITS (32 - 8 - 2)
#define HALF (1 << (PRECISION_BITS - 1))
#define CLIP_MAX ((1 << PRECISION_BITS) << 8)
#define BICUBIC_SUPPORT 2.0
/* Row buffers get this many readable bytes past their end (SIMD loads). */
#define PAD 16
/* Rows resampled together by the pass along rows. */
#define LANES 4

static inline uint8_t clip8(int32_t in)
{
  if (in >= CLIP_MAX)
    return 255;
  if (in <= 0)
    return 0;
  return (uint8_t)(in >> PRECISION_BITS);
}

static inline double bicubic_filter(double x)
{
  /* https://en.wikipedia.org/wiki/Bicubic_interpolation#Bicubic_convolution_algorithm */
  const double a = -0.5;
  if (x < 0.0)
    x = -x;
  if (x < 1.0)
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0)
    return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

static void *track(qvl_resampler *r, size_t bytes)
{
  void *p = malloc(bytes ? bytes : 1);
  if (p)
    r->bytes += bytes;
  return p;
}

/* Pillow's taps per output for the box (0, in_size): (int)ceil(support) * 2 + 1. */
static int coeffs_ksize(int in_size, int out_size)
{
  double scale = (double)(float)in_size / out_size, filterscale = scale;
  if (filterscale < 1.0)
    filterscale = 1.0;
  return (int)ceil(BICUBIC_SUPPORT * filterscale) * 2 + 1;
}

/* precompute_coeffs + normalize_coeffs_8bpc (Pillow 9.4) for the box
 * (0, in_size), re-indexed in source order (see qvl_coeffs). */
static int coeffs_build(qvl_resampler *r, qvl_coeffs *c, int in_size,
                        int out_size, int reversed)
{
  double support, scale, filterscale, center, ww, ss;
  int xx, x, ksize, xmin, xmax;
  double *k;
  /* Pillow: in0 = 0.0f, in1 = (float)in_size; filterscale = scale = (double)(in1 - in0) / outSize */
  float in0 = 0.0f, in1 = (float)in_size;

  filterscale = scale = (double)(in1 - in0) / out_size;
  if (filterscale < 1.0)
    filterscale = 1.0;
  support = BICUBIC_SUPPORT * filterscale;
  ksize = (int)ceil(support) * 2 + 1;

  c->n = out_size;
  c->ksize = ksize;
  c->reversed = reversed;
  c->first = (int32_t *)track(r, (size_t)out_size * sizeof(int32_t));
  c->count = (int32_t *)track(r, (size_t)out_size * sizeof(int32_t));
  c->weights = (int32_t *)track(r, (size_t)out_size * (size_t)ksize * sizeof(int32_t));
  k = (double *)malloc((size_t)ksize * sizeof(double));
  if (!c->first || !c->count || !c->weights || !k) {
    free(k);
    return QVL_RS_NOMEM;
  }
  for (xx = 0; xx < out_size; xx++) {
    /* the output this oriented output lands on in source order */
    int kk = reversed ? out_size - 1 - xx : xx;
    int32_t *w = c->weights + (size_t)kk * (size_t)ksize;
    center = in0 + (xx + 0.5) * scale;
    ww = 0.0;
    ss = 1.0 / filterscale;
    /* Round the value */
    xmin = (int)(center - support + 0.5);
    if (xmin < 0)
      xmin = 0;
    /* Round the value */
    xmax = (int)(center + support + 0.5);
    if (xmax > in_size)
      xmax = in_size;
    xmax -= xmin;
    for (x = 0; x < xmax; x++) {
      double v = bicubic_filter((x + xmin - center + 0.5) * ss);
      k[x] = v;
      ww += v;
    }
    for (x = 0; x < xmax; x++) {
      if (ww != 0.0)
        k[x] /= ww;
    }
    for (x = 0; x < ksize; x++) {
      /* normalize_coeffs_8bpc; taps past xmax are 0 */
      double v = x < xmax ? k[x] : 0.0;
      int32_t fixed = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                            : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
      if (x < xmax && reversed)
        w[xmax - 1 - x] = fixed;
      else
        w[x] = fixed;
    }
    c->first[kk] = reversed ? in_size - xmin - xmax : xmin;
    c->count[kk] = xmax;
  }
  free(k);
  return QVL_RS_OK;
}

static inline int out_index(const qvl_coeffs *c, int k)
{
  return c->reversed ? c->n - 1 - k : k;
}

/* The pass along rows (ImagingResampleHorizontal_8bpc) runs on LANES rows at
 * once: stage_row() keeps a copy of each row; flush_along() interleaves them
 * into int32 lanes (r->stage, sample-major: stage[s * LANES + lane]) and
 * resamples them together, one i32x4 per sample and tap, every lane with the
 * same weights. */
static void stage_row(qvl_resampler *r, const uint8_t *src, uint8_t *dst)
{
  memcpy(r->stage8 + (size_t)r->staged * r->stage8_stride, src, (size_t)r->stage_len);
  r->stage_dst[r->staged++] = dst;
}

static void interleave_stage(qvl_resampler *r)
{
  const int n = r->stage_len;
  const uint8_t *a0 = r->stage8, *a1 = a0 + r->stage8_stride;
  const uint8_t *a2 = a1 + r->stage8_stride, *a3 = a2 + r->stage8_stride;
  int32_t *t = r->stage;
  int s = 0;
#ifdef __wasm_simd128__
  for (; s + 16 <= n; s += 16, t += 16 * LANES) {
    v128_t a = wasm_v128_load(a0 + s), b = wasm_v128_load(a1 + s);
    v128_t c = wasm_v128_load(a2 + s), d = wasm_v128_load(a3 + s);
    v128_t ab_lo = wasm_i8x16_shuffle(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    v128_t ab_hi = wasm_i8x16_shuffle(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    v128_t cd_lo = wasm_i8x16_shuffle(c, d, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    v128_t cd_hi = wasm_i8x16_shuffle(c, d, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    /* q: 4 samples x 4 rows, bytes */
    v128_t q[4];
    int i;
    q[0] = wasm_i16x8_shuffle(ab_lo, cd_lo, 0, 8, 1, 9, 2, 10, 3, 11);
    q[1] = wasm_i16x8_shuffle(ab_lo, cd_lo, 4, 12, 5, 13, 6, 14, 7, 15);
    q[2] = wasm_i16x8_shuffle(ab_hi, cd_hi, 0, 8, 1, 9, 2, 10, 3, 11);
    q[3] = wasm_i16x8_shuffle(ab_hi, cd_hi, 4, 12, 5, 13, 6, 14, 7, 15);
    for (i = 0; i < 4; i++) {
      v128_t lo = wasm_u16x8_extend_low_u8x16(q[i]), hi = wasm_u16x8_extend_high_u8x16(q[i]);
      wasm_v128_store(t + (4 * i + 0) * LANES, wasm_u32x4_extend_low_u16x8(lo));
      wasm_v128_store(t + (4 * i + 1) * LANES, wasm_u32x4_extend_high_u16x8(lo));
      wasm_v128_store(t + (4 * i + 2) * LANES, wasm_u32x4_extend_low_u16x8(hi));
      wasm_v128_store(t + (4 * i + 3) * LANES, wasm_u32x4_extend_high_u16x8(hi));
    }
  }
#endif
  for (; s < n; s++, t += LANES) {
    t[0] = a0[s];
    t[1] = a1[s];
    t[2] = a2[s];
    t[3] = a3[s];
  }
}

/* Resample the staged rows: output k of lane l goes to
 * stage_dst[l] + out_index(k) * step. */
static void flush_along(qvl_resampler *r, ptrdiff_t step)
{
  const qvl_coeffs *c = &r->along;
  const int ch = r->channels, lanes = r->staged, n = c->n, ksize = c->ksize;
  int k, j, l;
  if (lanes == 0)
    return;
  interleave_stage(r);
  for (k = 0; k < n; k++) {
    const int32_t *w = c->weights + (size_t)k * (size_t)ksize;
    const int32_t *p = r->stage + (size_t)c->first[k] * (size_t)ch * LANES;
    const int cnt = c->count[k];
    const ptrdiff_t off = (ptrdiff_t)out_index(c, k) * step;
    int32_t v[3 * LANES];        /* clipped: channel-major, then lane */
#ifdef __wasm_simd128__
    const v128_t lo = wasm_i32x4_splat(0), hi = wasm_i32x4_splat(CLIP_MAX - 1);
    if (ch == 3) {
      v128_t s0 = wasm_i32x4_splat(HALF), s1 = s0, s2 = s0;
      for (j = 0; j < cnt; j++, p += 3 * LANES) {
        v128_t wj = wasm_v128_load32_splat(w + j);
        s0 = wasm_i32x4_add(s0, wasm_i32x4_mul(wasm_v128_load(p), wj));
        s1 = wasm_i32x4_add(s1, wasm_i32x4_mul(wasm_v128_load(p + LANES), wj));
        s2 = wasm_i32x4_add(s2, wasm_i32x4_mul(wasm_v128_load(p + 2 * LANES), wj));
      }
      /* clip8: clamp to [0, CLIP_MAX - 1], then >> 22 gives 0..255 */
      wasm_v128_store(v, wasm_i32x4_shr(wasm_i32x4_min(wasm_i32x4_max(s0, lo), hi), PRECISION_BITS));
      wasm_v128_store(v + LANES, wasm_i32x4_shr(wasm_i32x4_min(wasm_i32x4_max(s1, lo), hi), PRECISION_BITS));
      wasm_v128_store(v + 2 * LANES, wasm_i32x4_shr(wasm_i32x4_min(wasm_i32x4_max(s2, lo), hi), PRECISION_BITS));
    } else {
      v128_t s0 = wasm_i32x4_splat(HALF);
      for (j = 0; j < cnt; j++, p += LANES)
        s0 = wasm_i32x4_add(s0, wasm_i32x4_mul(wasm_v128_load(p), wasm_v128_load32_splat(w + j)));
      wasm_v128_store(v, wasm_i32x4_shr(wasm_i32x4_min(wasm_i32x4_max(s0, lo), hi), PRECISION_BITS));
    }
#else
    {
      int32_t s[3 * LANES];
      int q;
      for (q = 0; q < ch * LANES; q++)
        s[q] = HALF;
      for (j = 0; j < cnt; j++, p += ch * LANES) {
        for (q = 0; q < ch; q++)
          for (l = 0; l < LANES; l++)
            s[q * LANES + l] += p[q * LANES + l] * w[j];
      }
      for (q = 0; q < ch * LANES; q++)
        v[q] = clip8(s[q]);
    }
#endif
    for (l = 0; l < lanes; l++) {
      uint8_t *d = r->stage_dst[l] + off;
      d[0] = (uint8_t)v[l];
      if (ch == 3) {
        d[1] = (uint8_t)v[LANES + l];
        d[2] = (uint8_t)v[2 * LANES + l];
      }
    }
  }
  r->staged = 0;
}

/* ImagingResampleVertical_8bpc for one output: `len` bytes from window rows
 * first .. first + count - 1 (row y is at win + (y % ring) * stride). */
static void pass_across(const qvl_resampler *r, const uint8_t *win,
                        size_t stride, int k, uint8_t *dst)
{
  const qvl_coeffs *c = &r->across;
  const int32_t *w = c->weights + (size_t)k * (size_t)c->ksize;
  const int first = c->first[k], cnt = c->count[k], len = r->len;
  const uint8_t **rows = r->rowp;   /* ring >= cnt entries */
  int i = 0, j;
  for (j = 0; j < cnt; j++)
    rows[j] = win + (size_t)((first + j) % r->ring) * stride;
#ifdef __wasm_simd128__
  {
    const v128_t lo = wasm_i32x4_splat(0), hi = wasm_i32x4_splat(CLIP_MAX - 1);
    for (; i + 16 <= len; i += 16) {
      v128_t s0 = wasm_i32x4_splat(HALF), s1 = s0, s2 = s0, s3 = s0;
      for (j = 0; j < cnt; j++) {
        v128_t px = wasm_v128_load(rows[j] + i), wj = wasm_i32x4_splat(w[j]);
        v128_t a = wasm_u16x8_extend_low_u8x16(px), b = wasm_u16x8_extend_high_u8x16(px);
        s0 = wasm_i32x4_add(s0, wasm_i32x4_mul(wasm_u32x4_extend_low_u16x8(a), wj));
        s1 = wasm_i32x4_add(s1, wasm_i32x4_mul(wasm_u32x4_extend_high_u16x8(a), wj));
        s2 = wasm_i32x4_add(s2, wasm_i32x4_mul(wasm_u32x4_extend_low_u16x8(b), wj));
        s3 = wasm_i32x4_add(s3, wasm_i32x4_mul(wasm_u32x4_extend_high_u16x8(b), wj));
      }
      /* clip8: clamp to [0, CLIP_MAX - 1], then >> 22 gives 0..255 */
      s0 = wasm_i32x4_shr(wasm_i32x4_min(wasm_i32x4_max(s0, lo), hi), PRECISION_BITS);
      s1 = wasm_i32x4_shr(wasm_i32x4_min(wasm_i32x4_max(s1, lo), hi), PRECISION_BITS);
      s2 = wasm_i32x4_shr(wasm_i32x4_min(wasm_i32x4_max(s2, lo), hi), PRECISION_BITS);
      s3 = wasm_i32x4_shr(wasm_i32x4_min(wasm_i32x4_max(s3, lo), hi), PRECISION_BITS);
      wasm_v128_store(dst + i, wasm_u8x16_narrow_i16x8(wasm_i16x8_narrow_i32x4(s0, s1),
                                                       wasm_i16x8_narrow_i32x4(s2, s3)));
    }
  }
#endif
  for (; i < len; i++) {
    int32_t ss = HALF;
    for (j = 0; j < cnt; j++)
      ss += rows[j][i] * w[j];
    dst[i] = clip8(ss);
  }
}

/* Transposed orientations: one finished column xx of the oriented image's
 * horizontal pass (a stored-width row, src_w pixels) -> output column xx. */
static void emit_column(qvl_resampler *r, const uint8_t *t, int xx)
{
  const int ch = r->channels;
  const ptrdiff_t step = (ptrdiff_t)r->out_w * ch;
  uint8_t *dst = r->out + (size_t)xx * (size_t)ch;
  if (r->need_v) {
    stage_row(r, t, dst);
    if (r->staged == LANES)
      flush_along(r, step);
  } else {
    /* out_h == src_w: Pillow skips the vertical pass */
    const int rev = r->orientation == 7 || r->orientation == 8;
    int yy;
    for (yy = 0; yy < r->out_h; yy++) {
      const uint8_t *s = t + (size_t)(rev ? r->src_w - 1 - yy : yy) * (size_t)ch;
      memcpy(dst + (ptrdiff_t)yy * step, s, (size_t)ch);
    }
  }
}

static void copy_row(const uint8_t *src, uint8_t *dst, int width, int ch,
                     int mirror)
{
  int x;
  if (!mirror) {
    memcpy(dst, src, (size_t)width * (size_t)ch);
    return;
  }
  for (x = 0; x < width; x++)
    memcpy(dst + (size_t)x * (size_t)ch,
           src + (size_t)(width - 1 - x) * (size_t)ch, (size_t)ch);
}

uint64_t qvl_rs_bytes(int src_w, int src_h, int channels, int orientation,
                      int out_w, int out_h)
{
  int transposed = orientation >= 5;
  int ow = transposed ? src_h : src_w, oh = transposed ? src_w : src_h;
  int need_h = out_w != ow, need_v = out_h != oh;
  uint64_t total, len, ring = 0;
  if (src_w <= 0 || src_h <= 0 || out_w <= 0 || out_h <= 0 ||
      (channels != 1 && channels != 3) || orientation < 1 || orientation > 8)
    return 0;
  total = (uint64_t)out_w * (uint64_t)out_h * (uint64_t)channels;
  if (need_h) /* along (1-4) or across (5-8) */
    total += (uint64_t)out_w * (2 + (uint64_t)coeffs_ksize(ow, out_w)) * 4;
  if (need_v)
    total += (uint64_t)out_h * (2 + (uint64_t)coeffs_ksize(oh, out_h)) * 4;
  if (transposed ? need_v : need_h) /* the pass along rows: staged rows */
    total += ((uint64_t)src_w * (uint64_t)channels * 5 + PAD + 16) * LANES + PAD;
  if (!transposed) {
    len = (uint64_t)out_w * (uint64_t)channels;
    if (need_v)
      ring = (uint64_t)coeffs_ksize(oh, out_h) + (need_h ? LANES - 1 : 0);
  } else {
    len = (uint64_t)src_w * (uint64_t)channels;
    if (need_h) {
      ring = (uint64_t)coeffs_ksize(ow, out_w);
      total += len + PAD;        /* the intermediate row */
    }
  }
  if (ring)
    total += ring * (len + sizeof(uint8_t *)) + PAD;
  return total;
}

int qvl_rs_init(qvl_resampler *r, int src_w, int src_h, int channels,
                int orientation, int out_w, int out_h)
{
  int ow, oh, rc, k;
  memset(r, 0, sizeof(*r));
  if (qvl_rs_bytes(src_w, src_h, channels, orientation, out_w, out_h) == 0)
    return QVL_RS_BADARG;
  r->src_w = src_w;
  r->src_h = src_h;
  r->channels = channels;
  r->orientation = orientation;
  r->out_w = out_w;
  r->out_h = out_h;
  r->transposed = orientation >= 5;
  ow = r->transposed ? src_h : src_w;
  oh = r->transposed ? src_w : src_h;
  r->need_h = out_w != ow;
  r->need_v = out_h != oh;

  r->out = (uint8_t *)track(r, (size_t)out_w * (size_t)out_h * (size_t)channels);
  if (!r->out)
    return QVL_RS_NOMEM;

  if (!r->transposed) {
    /* horizontal = along stored rows (mirrored for 2, 3);
     * vertical = across stored rows (reversed for 3, 4) */
    r->len = out_w * channels;
    if (r->need_h) {
      r->has_along = 1;
      rc = coeffs_build(r, &r->along, src_w, out_w, orientation == 2 || orientation == 3);
      if (rc)
        return rc;
    }
    if (r->need_v) {
      r->has_across = 1;
      rc = coeffs_build(r, &r->across, src_h, out_h, orientation == 3 || orientation == 4);
      if (rc)
        return rc;
    }
  } else {
    /* horizontal = across stored rows (reversed for 6, 7);
     * vertical = along stored rows, i.e. along the intermediate's rows
     * (reversed for 7, 8) */
    r->len = src_w * channels;
    if (r->need_h) {
      r->has_across = 1;
      rc = coeffs_build(r, &r->across, src_h, out_w, orientation == 6 || orientation == 7);
      if (rc)
        return rc;
      r->tmp = (uint8_t *)track(r, (size_t)r->len + PAD);
      if (!r->tmp)
        return QVL_RS_NOMEM;
    }
    if (r->need_v) {
      r->has_along = 1;
      rc = coeffs_build(r, &r->along, src_w, out_h, orientation == 7 || orientation == 8);
      if (rc)
        return rc;
    }
  }

  if (r->has_along) {
    r->stage_len = src_w * channels;
    r->stage8_stride = ((size_t)r->stage_len + PAD + 15) & ~(size_t)15;
    r->stage = (int32_t *)track(r, (size_t)r->stage_len * LANES * sizeof(int32_t) + PAD);
    r->stage8 = (uint8_t *)track(r, r->stage8_stride * LANES);
    if (!r->stage || !r->stage8)
      return QVL_RS_NOMEM;
    /* lanes not staged in the last batch are resampled too (and dropped) */
    memset(r->stage8, 0, r->stage8_stride * LANES);
  }

  if (r->has_across) {
    /* window: enough rows for the widest tap window */
    r->across_lo = src_h;
    r->across_hi = 0;
    r->ring = 1;
    for (k = 0; k < r->across.n; k++) {
      int f = r->across.first[k], e = f + r->across.count[k];
      if (r->across.count[k] > r->ring)
        r->ring = r->across.count[k];
      if (r->across.count[k] > 0) {
        if (f < r->across_lo)
          r->across_lo = f;
        if (e > r->across_hi)
          r->across_hi = e;
      }
      /* outputs complete in source order: their windows' ends never decrease */
      if (k > 0 && e < r->across.first[k - 1] + r->across.count[k - 1])
        return QVL_RS_BADARG;
    }
    /* rows 1-4 reach the window LANES at a time, before the outputs that
     * complete on the first of them are computed */
    if (!r->transposed && r->has_along)
      r->ring += LANES - 1;
    r->win = (uint8_t *)track(r, (size_t)r->ring * (size_t)r->len + PAD);
    r->rowp = (const uint8_t **)track(r, (size_t)r->ring * sizeof(*r->rowp));
    if (!r->win || !r->rowp)
      return QVL_RS_NOMEM;
  }
  r->done = 0;
  r->next_row = 0;
  return QVL_RS_OK;
}

void qvl_rs_row(qvl_resampler *r, const uint8_t *row, int y)
{
  const int ch = r->channels;
  if (y != r->next_row || y >= r->src_h)
    return;                      /* out of order: ignored (the wrapper never does it) */
  r->next_row++;

  if (!r->transposed) {
    uint8_t *dst;
    const int mirror_x = r->orientation == 2 || r->orientation == 3;
    const int rev_y = r->orientation == 3 || r->orientation == 4;
    const int last = r->has_across ? r->across_hi - 1 : r->src_h - 1;
    if (r->has_across) {
      /* Pillow only runs the horizontal pass on rows the vertical pass reads */
      if (y < r->across_lo || y >= r->across_hi)
        return;
      dst = r->win + (size_t)(y % r->ring) * (size_t)r->len;
    } else {
      dst = r->out + (size_t)(rev_y ? r->src_h - 1 - y : y) * (size_t)r->len;
    }
    if (r->has_along) {
      stage_row(r, row, dst);
      if (r->staged < LANES && y < last)
        return;                  /* the outputs below need this row in the window */
      flush_along(r, ch);
    } else {
      copy_row(row, dst, r->src_w, ch, mirror_x);
    }
    if (r->has_across) {
      const qvl_coeffs *c = &r->across;
      while (r->done < c->n && c->first[r->done] + c->count[r->done] - 1 <= y) {
        int k = r->done++;
        pass_across(r, r->win, (size_t)r->len,
                    k, r->out + (size_t)out_index(c, k) * (size_t)r->len);
      }
    }
  } else {
    if (r->has_across) {
      const qvl_coeffs *c = &r->across;
      if (y >= r->across_lo && y < r->across_hi)
        memcpy(r->win + (size_t)(y % r->ring) * (size_t)r->len, row, (size_t)r->len);
      while (r->done < c->n && c->first[r->done] + c->count[r->done] - 1 <= y) {
        int k = r->done++;
        pass_across(r, r->win, (size_t)r->len, k, r->tmp);
        emit_column(r, r->tmp, out_index(c, k));
      }
    } else {
      /* out_w == src_h: Pillow skips the horizontal pass; stored row y is
       * oriented column y (5, 8) or src_h - 1 - y (6, 7) */
      const int rev = r->orientation == 6 || r->orientation == 7;
      emit_column(r, row, rev ? r->src_h - 1 - y : y);
    }
  }
}

void qvl_rs_finish(qvl_resampler *r)
{
  /* orientations 5-8: the last output columns may still be staged */
  if (r->transposed)
    flush_along(r, (ptrdiff_t)r->out_w * r->channels);
}

void qvl_rs_free(qvl_resampler *r)
{
  free(r->along.first);
  free(r->along.count);
  free(r->along.weights);
  free(r->across.first);
  free(r->across.count);
  free(r->across.weights);
  free(r->win);
  free((void *)r->rowp);
  free(r->tmp);
  free(r->stage);
  free(r->stage8);
  free(r->out);
  memset(r, 0, sizeof(*r));
}

static inline int muldiv255(int a, int b)
{
  int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

static inline uint8_t clip8i(int v)
{
  return (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v);
}

void qvl_inverted_cmyk_to_rgb(const uint8_t *src, uint8_t *dst, int pixels)
{
  int i;
  for (i = 0; i < pixels; i++, src += 4, dst += 3) {
    int nk = src[3];             /* 255 - K, where Pillow's K = 255 - byte */
    dst[0] = clip8i(nk - muldiv255(255 - src[0], nk));
    dst[1] = clip8i(nk - muldiv255(255 - src[1], nk));
    dst[2] = clip8i(nk - muldiv255(255 - src[2], nk));
  }
}
