/* WebAssembly SIMD kernels for libjpeg-turbo's decoder (simd-kernels.c), dispatched from jsimd-wasm.c. */
#ifndef QVL_SIMD_KERNELS_H
#define QVL_SIMD_KERNELS_H

void qvl_simd_idct_islow(const int *quant, const JCOEF *coef, JSAMPARRAY output_buf, JDIMENSION output_col);
void qvl_simd_ycc_rgb_row(const JSAMPLE *y, const JSAMPLE *cb, const JSAMPLE *cr, JSAMPLE *out, JDIMENSION n);
void qvl_simd_ycc_rgb_any(const JSAMPLE *y, const JSAMPLE *cb, const JSAMPLE *cr, JSAMPLE *out, JDIMENSION n,
                          int red, int green, int blue, int alpha, int pixelsize);
void qvl_simd_h2v1_fancy_row(const JSAMPLE *in, JSAMPLE *out, JDIMENSION width);
void qvl_simd_h2v2_fancy_row(const JSAMPLE *near, const JSAMPLE *far, JSAMPLE *out, JDIMENSION width);

#endif
