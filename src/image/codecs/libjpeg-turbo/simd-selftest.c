/*
 * qvl_simd_selftest: checks the WebAssembly SIMD kernels (simd-kernels.c) against libjpeg-turbo's own
 * C code on generated inputs, inside the module, so a test can run it wherever the module runs
 * (workerd included). The IDCT is compared with jidctint.c's jpeg_idct_islow itself; YCbCr -> RGB
 * with jdcolor.c's tables rebuilt as build_ycc_rgb_table builds them; fancy upsampling with
 * jdsample.c's loops (static there, so transcribed here). Returns the number of mismatching cases.
 */
#define JPEG_INTERNALS
#include <stdint.h>
#include <string.h>

#include "jinclude.h"
#include "jpeglib.h"
#include "jdct.h"
#include "simd-kernels.h"

#define QVL_EXPORT __attribute__((used, visibility("default")))

static uint32_t rng_state;
static uint32_t rnd(void) {
  /* xorshift32 */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

/* jdmaster.c's prepare_range_limit_table, into a static buffer. */
static JSAMPLE range_table[5 * (MAXJSAMPLE + 1) + CENTERJSAMPLE];
static JSAMPLE *prepare_range_limit(void) {
  JSAMPLE *table = range_table + (MAXJSAMPLE + 1);
  JSAMPLE *limit = table;
  memset(table - (MAXJSAMPLE + 1), 0, MAXJSAMPLE + 1);
  for (int i = 0; i <= MAXJSAMPLE; i++) table[i] = (JSAMPLE)i;
  table += CENTERJSAMPLE;
  for (int i = CENTERJSAMPLE; i < 2 * (MAXJSAMPLE + 1); i++) table[i] = MAXJSAMPLE;
  memset(table + 2 * (MAXJSAMPLE + 1), 0, 2 * (MAXJSAMPLE + 1) - CENTERJSAMPLE);
  memcpy(table + (4 * (MAXJSAMPLE + 1) - CENTERJSAMPLE), limit, CENTERJSAMPLE);
  return limit;
}

static int check_idct(int blocks) {
  struct jpeg_decompress_struct cinfo;
  jpeg_component_info comp;
  int quant[DCTSIZE2];
  JCOEF coef[DCTSIZE2];
  JSAMPLE want[DCTSIZE][DCTSIZE + 4], got[DCTSIZE][DCTSIZE + 4];
  JSAMPROW want_rows[DCTSIZE], got_rows[DCTSIZE];
  int bad = 0;

  memset(&cinfo, 0, sizeof cinfo);
  memset(&comp, 0, sizeof comp);
  cinfo.sample_range_limit = prepare_range_limit();
  comp.dct_table = quant;
  for (int r = 0; r < DCTSIZE; r++) {
    want_rows[r] = want[r];
    got_rows[r] = got[r];
  }
  for (int b = 0; b < blocks; b++) {
    int kind = b % 5;
    /* quantizers: typical 8-bit tables, then full 16-bit ones (overflowing 32-bit intermediates) */
    for (int i = 0; i < DCTSIZE2; i++) quant[i] = 1 + (int)(rnd() % (kind == 4 ? 65535 : 255));
    for (int i = 0; i < DCTSIZE2; i++) {
      uint32_t r = rnd();
      switch (kind) {
      case 0: /* sparse, small: what photos give */
        coef[i] = (r % 4 == 0) ? (JCOEF)((int)(r >> 8) % 64 - 32) : 0;
        break;
      case 1: /* DC only, or DC and one AC: the shortcut paths */
        coef[i] = (i == 0 || (int)(r % DCTSIZE2) == 0) ? (JCOEF)((int)(r >> 8) % 4096 - 2048) : 0;
        break;
      case 2: /* dense, moderate */
        coef[i] = (JCOEF)((int)(r >> 8) % 2048 - 1024);
        break;
      default: /* anything int16 (corrupt data) */
        coef[i] = (JCOEF)(r >> 16);
        break;
      }
    }
    if (kind == 1 && b % 2) for (int i = 1; i < DCTSIZE2; i++) coef[i] = 0;
    jpeg_idct_islow(&cinfo, &comp, coef, want_rows, 2);
    qvl_simd_idct_islow(quant, coef, got_rows, 2);
    for (int r = 0; r < DCTSIZE; r++)
      if (memcmp(want[r] + 2, got[r] + 2, DCTSIZE)) {
        bad++;
        break;
      }
  }
  return bad;
}

static int check_ycc(int rows) {
  enum { W = 203 };
  static JSAMPLE y[W], cb[W], cr[W], want[3 * W], got[3 * W + 16];
  JSAMPLE *limit = prepare_range_limit();
  int Crr[256], Cbb[256];
  JLONG Crg[256], Cbg[256];
  int bad = 0;
  /* jdcolor.c's build_ycc_rgb_table */
#define SCALEBITS 16
#define ONE_HALF ((JLONG)1 << (SCALEBITS - 1))
#define FIXC(x) ((JLONG)((x) * (1L << SCALEBITS) + 0.5))
  for (int i = 0, x = -CENTERJSAMPLE; i <= MAXJSAMPLE; i++, x++) {
    Crr[i] = (int)((FIXC(1.40200) * x + ONE_HALF) >> SCALEBITS);
    Cbb[i] = (int)((FIXC(1.77200) * x + ONE_HALF) >> SCALEBITS);
    Crg[i] = (-FIXC(0.71414)) * x;
    Cbg[i] = (-FIXC(0.34414)) * x + ONE_HALF;
  }
  for (int row = 0; row < rows; row++) {
    int n = row == 0 ? W : 1 + (int)(rnd() % W);
    for (int i = 0; i < n; i++) {
      uint32_t r = rnd();
      y[i] = (JSAMPLE)r;
      cb[i] = (JSAMPLE)(r >> 8);
      cr[i] = (JSAMPLE)(r >> 16);
      if (row == 0) { /* every extreme pairing once */
        y[i] = (JSAMPLE)(i % 2 ? 255 : 0);
        cb[i] = (JSAMPLE)((i / 2) % 2 ? 255 : 0);
        cr[i] = (JSAMPLE)((i / 4) % 2 ? 255 : 0);
      }
      want[3 * i] = limit[y[i] + Crr[cr[i]]];
      want[3 * i + 1] = limit[y[i] + (int)((Cbg[cb[i]] + Crg[cr[i]]) >> SCALEBITS)];
      want[3 * i + 2] = limit[y[i] + Cbb[cb[i]]];
    }
    qvl_simd_ycc_rgb_row(y, cb, cr, got, (JDIMENSION)n);
    if (memcmp(want, got, 3 * (size_t)n)) bad++;
  }
  return bad;
}

static int check_fancy(int rows) {
  enum { W = 157 };
  static JSAMPLE a[W], c[W], want[2 * W], got[2 * W + 16];
  int bad = 0;
  for (int row = 0; row < rows; row++) {
    int n = 3 + (int)(rnd() % (W - 3));
    for (int i = 0; i < n; i++) {
      uint32_t r = rnd();
      a[i] = (JSAMPLE)(row % 3 == 0 ? (r & 1 ? 255 : 0) : r);
      c[i] = (JSAMPLE)(row % 3 == 0 ? (r & 2 ? 255 : 0) : r >> 8);
    }
    /* jdsample.c h2v1_fancy_upsample, one row */
    want[0] = a[0];
    want[1] = (JSAMPLE)((a[0] * 3 + a[1] + 2) >> 2);
    for (int i = 1; i < n - 1; i++) {
      want[2 * i] = (JSAMPLE)((a[i] * 3 + a[i - 1] + 1) >> 2);
      want[2 * i + 1] = (JSAMPLE)((a[i] * 3 + a[i + 1] + 2) >> 2);
    }
    want[2 * n - 2] = (JSAMPLE)((a[n - 1] * 3 + a[n - 2] + 1) >> 2);
    want[2 * n - 1] = a[n - 1];
    qvl_simd_h2v1_fancy_row(a, got, (JDIMENSION)n);
    if (memcmp(want, got, 2 * (size_t)n)) bad++;

    /* jdsample.c h2v2_fancy_upsample, one output row (nearer row a, further row c) */
    int this_sum = a[0] * 3 + c[0], next_sum = a[1] * 3 + c[1], last_sum;
    want[0] = (JSAMPLE)((this_sum * 4 + 8) >> 4);
    want[1] = (JSAMPLE)((this_sum * 3 + next_sum + 7) >> 4);
    last_sum = this_sum;
    this_sum = next_sum;
    for (int i = 1; i < n - 1; i++) {
      next_sum = a[i + 1] * 3 + c[i + 1];
      want[2 * i] = (JSAMPLE)((this_sum * 3 + last_sum + 8) >> 4);
      want[2 * i + 1] = (JSAMPLE)((this_sum * 3 + next_sum + 7) >> 4);
      last_sum = this_sum;
      this_sum = next_sum;
    }
    want[2 * n - 2] = (JSAMPLE)((this_sum * 3 + last_sum + 8) >> 4);
    want[2 * n - 1] = (JSAMPLE)((this_sum * 4 + 7) >> 4);
    qvl_simd_h2v2_fancy_row(a, c, got, (JDIMENSION)n);
    if (memcmp(want, got, 2 * (size_t)n)) bad++;
  }
  return bad;
}

/* kernel: 0 IDCT (cases = blocks), 1 YCbCr -> RGB (rows), 2 fancy upsampling (rows). -1: bad kernel. */
QVL_EXPORT int qvl_simd_selftest(int kernel, uint32_t seed, int cases) {
  rng_state = seed ? seed : 1;
  switch (kernel) {
  case 0: return check_idct(cases);
  case 1: return check_ycc(cases);
  case 2: return check_fancy(cases);
  default: return -1;
  }
}
