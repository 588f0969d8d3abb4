/*
 * WebAssembly SIMD versions of the libjpeg-turbo decoder kernels that dominate a full-scale decode once
 * Huffman decoding is done: the islow inverse DCT, YCbCr -> RGB conversion, and h2v1 / h2v2 fancy
 * upsampling (chroma of 4:2:2 and 4:2:0 files).
 *
 * Each computes exactly what libjpeg-turbo 2.1.5's C code computes in this build (jidctint.c's
 * jpeg_idct_islow, jdcolext.c's ycc_rgb_convert_internal, jdsample.c's h2v1/h2v2_fancy_upsample; JLONG
 * 32 bits wide as in wasm32), lane for lane, including the IDCT's zero-coefficient shortcuts (which
 * differ from the full formula only when 32-bit intermediates overflow, i.e. on corrupt data) and its
 * range-limit table. qvl_simd_selftest() (simd-selftest.c) checks every kernel against the C code on
 * generated inputs; the fixture tests check whole images against Pillow byte for byte.
 */
#define JPEG_INTERNALS
#include <stdint.h>
#include <string.h>

#include "jinclude.h"
#include "jpeglib.h"
#include "jdct.h"
#include "simd-kernels.h"

#include <wasm_simd128.h>

typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef int16_t v4s16 __attribute__((vector_size(8)));

/* jidctint.c's constants (CONST_BITS 13, PASS1_BITS 2, 8-bit samples). */
#define CONST_BITS 13
#define PASS1_BITS 2
#define F_0_298631336 2446
#define F_0_390180644 3196
#define F_0_541196100 4433
#define F_0_765366865 6270
#define F_0_899976223 7373
#define F_1_175875602 9633
#define F_1_501321110 12299
#define F_1_847759065 15137
#define F_1_961570560 16069
#define F_2_053119869 16819
#define F_2_562915447 20995
#define F_3_072711026 25172

static inline v4i load_coef4(const JCOEF *p) {
  v4s16 s;
  memcpy(&s, p, sizeof s);
  return __builtin_convertvector(s, v4i);
}

static inline v4i load_int4(const int *p) {
  v4i v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* Wrapping arithmetic (as the C code's 32-bit JLONG does in practice): unsigned lanes, so no UB. */
#define U(x) ((v4u)(x))
#define I(x) ((v4i)(x))
static inline v4i mul(v4i a, int32_t c) { return I(U(a) * (uint32_t)c); }
static inline v4i add(v4i a, v4i b) { return I(U(a) + U(b)); }
static inline v4i sub(v4i a, v4i b) { return I(U(a) - U(b)); }
static inline v4i shl(v4i a, int n) { return I(U(a) << n); }
static inline v4i descale(v4i x, int n) { return add(x, (v4i){1 << (n - 1), 1 << (n - 1), 1 << (n - 1), 1 << (n - 1)}) >> n; }

/* The 8-point butterfly of jpeg_idct_islow (both passes), before descaling. */
static inline void islow_1d(const v4i in[8], v4i out[8]) {
  v4i z2 = in[2], z3 = in[6];
  v4i z1 = mul(add(z2, z3), F_0_541196100);
  v4i tmp2 = add(z1, mul(z3, -F_1_847759065));
  v4i tmp3 = add(z1, mul(z2, F_0_765366865));
  v4i tmp0 = shl(add(in[0], in[4]), CONST_BITS);
  v4i tmp1 = shl(sub(in[0], in[4]), CONST_BITS);
  v4i tmp10 = add(tmp0, tmp3), tmp13 = sub(tmp0, tmp3);
  v4i tmp11 = add(tmp1, tmp2), tmp12 = sub(tmp1, tmp2);

  v4i o0 = in[7], o1 = in[5], o2 = in[3], o3 = in[1];
  v4i z1o = add(o0, o3), z2o = add(o1, o2), z3o = add(o0, o2), z4o = add(o1, o3);
  v4i z5 = mul(add(z3o, z4o), F_1_175875602);
  o0 = mul(o0, F_0_298631336);
  o1 = mul(o1, F_2_053119869);
  o2 = mul(o2, F_3_072711026);
  o3 = mul(o3, F_1_501321110);
  z1o = mul(z1o, -F_0_899976223);
  z2o = mul(z2o, -F_2_562915447);
  z3o = add(mul(z3o, -F_1_961570560), z5);
  z4o = add(mul(z4o, -F_0_390180644), z5);
  o0 = add(o0, add(z1o, z3o));
  o1 = add(o1, add(z2o, z4o));
  o2 = add(o2, add(z2o, z3o));
  o3 = add(o3, add(z1o, z4o));

  out[0] = add(tmp10, o3);
  out[7] = sub(tmp10, o3);
  out[1] = add(tmp11, o2);
  out[6] = sub(tmp11, o2);
  out[2] = add(tmp12, o1);
  out[5] = sub(tmp12, o1);
  out[3] = add(tmp13, o0);
  out[4] = sub(tmp13, o0);
}

static inline void transpose4(v4i *a, v4i *b, v4i *c, v4i *d) {
  v4i t0 = __builtin_shufflevector(*a, *b, 0, 4, 1, 5);
  v4i t1 = __builtin_shufflevector(*a, *b, 2, 6, 3, 7);
  v4i t2 = __builtin_shufflevector(*c, *d, 0, 4, 1, 5);
  v4i t3 = __builtin_shufflevector(*c, *d, 2, 6, 3, 7);
  *a = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
  *b = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
  *c = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
  *d = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
}

/*
 * What libjpeg's IDCT range-limit table (jdmaster.c prepare_range_limit_table, 8-bit samples) gives
 * for a descaled value x, `range_limit[x & RANGE_MASK]`: with w = (x + 128) & 1023, w below 256 is
 * the sample, 256..639 is 255 (overshoot) and 640..1023 is 0 (undershoot, wrapped).
 */
static inline v4i range_limit_idct(v4i x) {
  v4i w = add(x, (v4i){128, 128, 128, 128}) & 1023;
  v4i w255 = (w < 256) & w;
  v4i over = (w >= 256) & (w < 640) & 255;
  return w255 | over;
}

void qvl_simd_idct_islow(const int *quant, const JCOEF *coef, JSAMPARRAY output_buf, JDIMENSION output_col) {
  /* A block with only a DC coefficient (common: smooth areas) is one value; the C code's shortcuts
   * give DC << PASS1_BITS in pass 1 and DESCALE(that, PASS1_BITS + 3) in pass 2. */
  v128_t any_ac = wasm_v128_and(wasm_v128_load(coef), wasm_i16x8_make(0, -1, -1, -1, -1, -1, -1, -1));
  for (int k = 1; k < 8; k++) any_ac = wasm_v128_or(any_ac, wasm_v128_load(coef + 8 * k));
  if (!wasm_v128_any_true(any_ac)) {
    int32_t dc = (int32_t)((uint32_t)coef[0] * (uint32_t)quant[0] << PASS1_BITS);
    v4i v = range_limit_idct(descale((v4i){dc, dc, dc, dc}, PASS1_BITS + 3));
    memset(output_buf[0] + output_col, (JSAMPLE)v[0], 8);
    for (int r = 1; r < 8; r++) memcpy(output_buf[r] + output_col, output_buf[0] + output_col, 8);
    return;
  }

  /* ws[g][k]: workspace row k (0..7) for columns 4g..4g+3, after pass 1. */
  v4i ws[2][8];
  for (int g = 0; g < 2; g++) {
    v4i in[8], raw_ac = {0, 0, 0, 0};
    for (int k = 0; k < 8; k++) {
      v4i c = load_coef4(coef + 8 * k + 4 * g);
      if (k) raw_ac |= c;
      in[k] = I(U(c) * U(load_int4(quant + 8 * k + 4 * g)));
    }
    /* Column with no AC coefficients: jpeg_idct_islow writes DC << PASS1_BITS. */
    v4i dc_only = raw_ac == 0;
    v4i dcval = shl(in[0], PASS1_BITS);
    if (!wasm_v128_any_true((v128_t)raw_ac)) { /* all four columns (often: high frequencies) */
      for (int k = 0; k < 8; k++) ws[g][k] = dcval;
      continue;
    }
    v4i out[8];
    islow_1d(in, out);
    for (int k = 0; k < 8; k++) {
      v4i full = descale(out[k], CONST_BITS - PASS1_BITS);
      ws[g][k] = (dc_only & dcval) | (~dc_only & full);
    }
  }

  /* Pass 2 works on 4 rows at a time: transpose each 4x4 block of the workspace. */
  for (int h = 0; h < 2; h++) {
    v4i in[8];
    for (int g = 0; g < 2; g++) {
      v4i a = ws[g][4 * h], b = ws[g][4 * h + 1], c = ws[g][4 * h + 2], d = ws[g][4 * h + 3];
      transpose4(&a, &b, &c, &d);
      in[4 * g] = a;
      in[4 * g + 1] = b;
      in[4 * g + 2] = c;
      in[4 * g + 3] = d;
    }
    v4i ac = in[1] | in[2] | in[3] | in[4] | in[5] | in[6] | in[7];
    v4i row_zero = ac == 0;
    v4i dcval = descale(in[0], PASS1_BITS + 3);
    v4i out[8];
    if (!wasm_v128_any_true((v128_t)ac)) { /* all four rows flat */
      v4i v = range_limit_idct(dcval);
      for (int j = 0; j < 8; j++) out[j] = v;
    } else {
      islow_1d(in, out);
      for (int j = 0; j < 8; j++) {
        v4i full = descale(out[j], CONST_BITS + PASS1_BITS + 3);
        out[j] = range_limit_idct((row_zero & dcval) | (~row_zero & full));
      }
    }
    /* out[j] holds column j of rows 4h..4h+3: back to rows. */
    transpose4(&out[0], &out[1], &out[2], &out[3]);
    transpose4(&out[4], &out[5], &out[6], &out[7]);
    for (int r = 0; r < 4; r++) {
      v128_t px = wasm_u8x16_narrow_i16x8(wasm_i16x8_narrow_i32x4((v128_t)out[r], (v128_t)out[4 + r]), wasm_i16x8_splat(0));
      wasm_v128_store64_lane(output_buf[4 * h + r] + output_col, px, 0);
    }
  }
}

/* jdcolor.c's fixed-point constants. */
#define SCALEBITS 16
#define ONE_HALF ((JLONG)1 << (SCALEBITS - 1))
#define FIX16(x) ((JLONG)((x) * (1L << SCALEBITS) + 0.5))

static inline int ycc_r(int y, int cr) { return y + (int)((FIX16(1.40200) * (cr - 128) + ONE_HALF) >> SCALEBITS); }
static inline int ycc_g(int y, int cb, int cr) {
  return y + (int)(((-FIX16(0.34414)) * (cb - 128) + ONE_HALF + (-FIX16(0.71414)) * (cr - 128)) >> SCALEBITS);
}
static inline int ycc_b(int y, int cb) { return y + (int)((FIX16(1.77200) * (cb - 128) + ONE_HALF) >> SCALEBITS); }
static inline JSAMPLE clamp255(int v) { return (JSAMPLE)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* 4 pixels: y (i32 lanes) + ((k1*c1 [+ k2*c2] + ONE_HALF) >> 16). */
static inline v128_t term4(v128_t y, v128_t c1, int32_t k1, v128_t c2, int32_t k2) {
  v128_t acc = wasm_i32x4_add(wasm_i32x4_mul(c1, wasm_i32x4_splat(k1)), wasm_i32x4_splat(ONE_HALF));
  if (k2) acc = wasm_i32x4_add(acc, wasm_i32x4_mul(c2, wasm_i32x4_splat(k2)));
  return wasm_i32x4_add(y, wasm_i32x4_shr(acc, SCALEBITS));
}

/* One channel of 16 pixels from four i32x4 quarters, clamped to 0..255 as range_limit does. */
static inline v128_t pack16(v128_t q0, v128_t q1, v128_t q2, v128_t q3) {
  return wasm_u8x16_narrow_i16x8(wasm_i16x8_narrow_i32x4(q0, q1), wasm_i16x8_narrow_i32x4(q2, q3));
}

void qvl_simd_ycc_rgb_row(const JSAMPLE *yp, const JSAMPLE *cbp, const JSAMPLE *crp, JSAMPLE *out, JDIMENSION n) {
  JDIMENSION col = 0;
  const v128_t center = wasm_i16x8_splat(128);
  for (; col + 16 <= n; col += 16) {
    v128_t y8 = wasm_v128_load(yp + col), cb8 = wasm_v128_load(cbp + col), cr8 = wasm_v128_load(crp + col);
    v128_t y16[2] = {wasm_u16x8_extend_low_u8x16(y8), wasm_u16x8_extend_high_u8x16(y8)};
    v128_t cb16[2] = {wasm_i16x8_sub(wasm_u16x8_extend_low_u8x16(cb8), center),
                      wasm_i16x8_sub(wasm_u16x8_extend_high_u8x16(cb8), center)};
    v128_t cr16[2] = {wasm_i16x8_sub(wasm_u16x8_extend_low_u8x16(cr8), center),
                      wasm_i16x8_sub(wasm_u16x8_extend_high_u8x16(cr8), center)};
    v128_t r[4], g[4], b[4];
    for (int q = 0; q < 4; q++) {
      v128_t y = q & 1 ? wasm_i32x4_extend_high_i16x8(y16[q >> 1]) : wasm_i32x4_extend_low_i16x8(y16[q >> 1]);
      v128_t cb = q & 1 ? wasm_i32x4_extend_high_i16x8(cb16[q >> 1]) : wasm_i32x4_extend_low_i16x8(cb16[q >> 1]);
      v128_t cr = q & 1 ? wasm_i32x4_extend_high_i16x8(cr16[q >> 1]) : wasm_i32x4_extend_low_i16x8(cr16[q >> 1]);
      r[q] = term4(y, cr, (int32_t)FIX16(1.40200), cr, 0);
      g[q] = term4(y, cb, (int32_t)-FIX16(0.34414), cr, (int32_t)-FIX16(0.71414));
      b[q] = term4(y, cb, (int32_t)FIX16(1.77200), cb, 0);
    }
    v128_t R = pack16(r[0], r[1], r[2], r[3]);
    v128_t G = pack16(g[0], g[1], g[2], g[3]);
    v128_t B = pack16(b[0], b[1], b[2], b[3]);
    /* Interleave to RGBRGB...: 48 bytes. */
    v128_t rg_lo = wasm_i8x16_shuffle(R, G, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    v128_t rg_hi = wasm_i8x16_shuffle(R, G, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    v128_t o0 = wasm_i8x16_shuffle(rg_lo, B, 0, 1, 16, 2, 3, 17, 4, 5, 18, 6, 7, 19, 8, 9, 20, 10);
    v128_t t = wasm_i8x16_shuffle(rg_lo, rg_hi, 11, 0, 12, 13, 0, 14, 15, 0, 16, 17, 0, 18, 19, 0, 20, 21);
    v128_t o1 = wasm_i8x16_shuffle(t, B, 0, 21, 2, 3, 22, 5, 6, 23, 8, 9, 24, 11, 12, 25, 14, 15);
    v128_t o2 = wasm_i8x16_shuffle(rg_hi, B, 26, 6, 7, 27, 8, 9, 28, 10, 11, 29, 12, 13, 30, 14, 15, 31);
    wasm_v128_store(out + 3 * col, o0);
    wasm_v128_store(out + 3 * col + 16, o1);
    wasm_v128_store(out + 3 * col + 32, o2);
  }
  for (; col < n; col++) {
    int y = yp[col], cb = cbp[col], cr = crp[col];
    out[3 * col] = clamp255(ycc_r(y, cr));
    out[3 * col + 1] = clamp255(ycc_g(y, cb, cr));
    out[3 * col + 2] = clamp255(ycc_b(y, cb));
  }
}

void qvl_simd_ycc_rgb_any(const JSAMPLE *yp, const JSAMPLE *cbp, const JSAMPLE *crp, JSAMPLE *out, JDIMENSION n,
                          int red, int green, int blue, int alpha, int pixelsize) {
  for (JDIMENSION col = 0; col < n; col++, out += pixelsize) {
    int y = yp[col], cb = cbp[col], cr = crp[col];
    out[red] = clamp255(ycc_r(y, cr));
    out[green] = clamp255(ycc_g(y, cb, cr));
    out[blue] = clamp255(ycc_b(y, cb));
    if (alpha >= 0) out[alpha] = MAXJSAMPLE;
  }
}

/*
 * Fancy (triangle-filter) upsampling, as jdsample.c's h2v1_fancy_upsample and h2v2_fancy_upsample.
 * Both work on "column sums" cs (h2v1: the input row; h2v2: 3 × nearer row + further row) and give,
 * for 1 <= i <= width - 2,
 *   out[2i]     = (3 cs[i] + cs[i-1] + r0) >> shift
 *   out[2i + 1] = (3 cs[i] + cs[i+1] + r1) >> shift
 * (h2v1: r0 = 1, r1 = 2, shift 2; h2v2: r0 = 8, r1 = 7, shift 4); the ends are special cases.
 * libjpeg uses fancy upsampling only when the downsampled width is > 2.
 */
static inline v128_t fancy_pair_lanes(v128_t prev, v128_t cur, v128_t next, int r0, int r1, int shift, v128_t *odd) {
  v128_t cur3 = wasm_i16x8_add(wasm_i16x8_add(cur, cur), cur);
  *odd = wasm_u16x8_shr(wasm_i16x8_add(wasm_i16x8_add(cur3, next), wasm_i16x8_splat(r1)), shift);
  return wasm_u16x8_shr(wasm_i16x8_add(wasm_i16x8_add(cur3, prev), wasm_i16x8_splat(r0)), shift);
}

/* 16 outputs from 8 column sums at i..i+7 (u16 lanes), stored interleaved at out[2i]. */
static inline void fancy_store16(JSAMPLE *out, v128_t prev, v128_t cur, v128_t next, int r0, int r1, int shift) {
  v128_t odd;
  v128_t even = fancy_pair_lanes(prev, cur, next, r0, r1, shift, &odd);
  v128_t lo = wasm_i16x8_shuffle(even, odd, 0, 8, 1, 9, 2, 10, 3, 11);
  v128_t hi = wasm_i16x8_shuffle(even, odd, 4, 12, 5, 13, 6, 14, 7, 15);
  wasm_v128_store(out, wasm_u8x16_narrow_i16x8(lo, hi));
}

void qvl_simd_h2v1_fancy_row(const JSAMPLE *in, JSAMPLE *out, JDIMENSION width) {
  out[0] = in[0];
  out[1] = (JSAMPLE)((in[0] * 3 + in[1] + 2) >> 2);
  JDIMENSION i = 1;
  for (; i + 8 <= width - 1; i += 8) {
    v128_t prev = wasm_u16x8_load8x8(in + i - 1), cur = wasm_u16x8_load8x8(in + i), next = wasm_u16x8_load8x8(in + i + 1);
    fancy_store16(out + 2 * i, prev, cur, next, 1, 2, 2);
  }
  for (; i < width - 1; i++) {
    int v = in[i] * 3;
    out[2 * i] = (JSAMPLE)((v + in[i - 1] + 1) >> 2);
    out[2 * i + 1] = (JSAMPLE)((v + in[i + 1] + 2) >> 2);
  }
  out[2 * width - 2] = (JSAMPLE)((in[width - 1] * 3 + in[width - 2] + 1) >> 2);
  out[2 * width - 1] = in[width - 1];
}

static inline v128_t colsum8(const JSAMPLE *near, const JSAMPLE *far, JDIMENSION i) {
  v128_t n = wasm_u16x8_load8x8(near + i);
  return wasm_i16x8_add(wasm_i16x8_add(wasm_i16x8_add(n, n), n), wasm_u16x8_load8x8(far + i));
}

void qvl_simd_h2v2_fancy_row(const JSAMPLE *near, const JSAMPLE *far, JSAMPLE *out, JDIMENSION width) {
#define CS(i) (near[i] * 3 + far[i])
  out[0] = (JSAMPLE)((CS(0) * 4 + 8) >> 4);
  out[1] = (JSAMPLE)((CS(0) * 3 + CS(1) + 7) >> 4);
  JDIMENSION i = 1;
  for (; i + 8 <= width - 1; i += 8) {
    fancy_store16(out + 2 * i, colsum8(near, far, i - 1), colsum8(near, far, i), colsum8(near, far, i + 1), 8, 7, 4);
  }
  for (; i < width - 1; i++) {
    int v = CS(i) * 3;
    out[2 * i] = (JSAMPLE)((v + CS(i - 1) + 8) >> 4);
    out[2 * i + 1] = (JSAMPLE)((v + CS(i + 1) + 7) >> 4);
  }
  out[2 * width - 2] = (JSAMPLE)((CS(width - 1) * 3 + CS(width - 2) + 8) >> 4);
  out[2 * width - 1] = (JSAMPLE)((CS(width - 1) * 4 + 7) >> 4);
#undef CS
}
