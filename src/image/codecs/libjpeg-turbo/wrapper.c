/*
 * Thin C wrapper around libjpeg-turbo 2.1.5 (Debian's libjpeg62-turbo source,
 * the library Pillow 9.4 links on Debian) for a standalone WebAssembly build.
 * Built by scripts/build-libjpeg-wasm.sh; driven from index.ts.
 *
 * One decoder instance (qvl_jpeg_create) owns one jpeg_decompress_struct and
 * is reused across images: every entry point that calls into libjpeg sets up
 * a setjmp target first, so a fatal libjpeg error longjmps back here, the
 * instance is reset with jpeg_abort_decompress() and -1 is returned; the
 * message is then available from qvl_jpeg_error().
 *
 * Decoding settings are libjpeg's defaults (JDCT_ISLOW, fancy upsampling,
 * block smoothing), exactly what Pillow's JPEG decoder uses; the output
 * colour space is picked as Pillow picks it from the component count:
 *   1 component  -> JCS_GRAYSCALE (1 byte/pixel, Pillow mode "L")
 *   3 components -> JCS_RGB       (3 bytes/pixel, Pillow mode "RGB")
 *   4 components -> JCS_CMYK      (4 bytes/pixel, as libjpeg gives it; Pillow
 *                   reads it as "CMYK;I", i.e. inverted: index.ts does that)
 * Anything else is refused, as Pillow refuses it.
 *
 * The module also exports malloc/free (for the input and row buffers).
 *
 * qvl_jpeg_decode_resized decodes the whole image inside the module (at full
 * scale, or DCT-scaled by 1/2, 1/4 or 1/8 as Pillow's draft() does) and
 * streams its rows through resample.c (Pillow's bicubic resampler with EXIF
 * orientation): only a window of rows and the small output are kept, never
 * the decoded image.
 *
 * Truncated input: libjpeg's memory source inserts a fake EOI and emits the
 * JWRN_JPEG_EOF warning. Pillow 9.4 raises "image file is truncated" in that
 * case, so the warning is turned into an error here, except while finishing
 * (all scanlines already read, only the EOI marker missing), where Pillow
 * accepts the image too. All other warnings are ignored, as in Pillow.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jpeglib.h"
#include "jerror.h"
#include "resample.h"

#define QVL_EXPORT __attribute__((used, visibility("default")))

/* Error codes of our own, above libjpeg's message codes. */
#define QVL_ERR_COMPONENTS 1001
#define QVL_ERR_MEMORY_CAP 1002
#define QVL_ERR_STATE 1003
#define QVL_ERR_SCALE 1004
/* 1005 is index.ts's (too many pixels) */
#define QVL_ERR_RESIZE 1006

/* Rows pulled from libjpeg per jpeg_read_scanlines call when resizing. */
#define QVL_RESIZE_ROWS 8
/* Readable bytes past the end of row buffers (resample.c's SIMD loads). */
#define QVL_ROW_PAD 16

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jb;
  int finishing;                 /* JWRN_JPEG_EOF is tolerated while set */
  int code;                      /* message code of the last error */
  char msg[JMSG_LENGTH_MAX + 96];
} qvl_error_mgr;

/* Layout of the info block shared with index.ts (int32 each). */
enum {
  QI_WIDTH = 0,
  QI_HEIGHT,
  QI_COMPONENTS,
  QI_JPEG_COLOR_SPACE,
  QI_PROGRESSIVE,
  QI_MULTISCAN,
  QI_COEF_BYTES_LO,              /* whole-image coefficient buffer, bytes */
  QI_COEF_BYTES_HI,
  QI_OUT_WIDTH,
  QI_OUT_HEIGHT,
  QI_OUT_COMPONENTS,
  QI_OUT_SCANLINE,
  QI_ERROR_CODE,
  QI_ADOBE_TRANSFORM,            /* -1 when there is no Adobe marker */
  QI_RESIZED_PTR,                /* qvl_jpeg_decode_resized: the output image */
  QI_RESIZED_CHANNELS,           /* 1 (gray) or 3 (RGB) */
  QI_RESAMPLE_BYTES,             /* what the resampler allocated */
  QI_COUNT = 20
};

typedef struct {
  struct jpeg_decompress_struct cinfo;
  qvl_error_mgr err;
  unsigned long max_memory;      /* 0 = no cap */
  int phase;                     /* 0 idle, 1 header read, 2 decompressing */
  int32_t info[QI_COUNT];
  qvl_resampler rs;              /* qvl_jpeg_decode_resized's state and output */
  unsigned char *rows;           /* its scanline buffer */
  unsigned char *rgb;            /* its CMYK -> RGB row */
} qvl_decoder;

static void qvl_error_exit(j_common_ptr cinfo)
{
  qvl_error_mgr *err = (qvl_error_mgr *)cinfo->err;
  err->code = err->pub.msg_code;
  if (err->code == JERR_NO_BACKING_STORE) {
    /* libjpeg wanted more than max_memory_to_use for its whole-image buffers */
    snprintf(err->msg, sizeof(err->msg),
             "Insufficient memory: the image needs more than the %ld-byte "
             "memory cap", cinfo->mem->max_memory_to_use);
  } else {
    (*err->pub.format_message) (cinfo, err->msg);
  }
  longjmp(err->jb, 1);
}

static void qvl_emit_message(j_common_ptr cinfo, int msg_level)
{
  qvl_error_mgr *err = (qvl_error_mgr *)cinfo->err;
  if (msg_level < 0) {
    err->pub.num_warnings++;
    if (err->pub.msg_code == JWRN_JPEG_EOF && !err->finishing)
      qvl_error_exit(cinfo);     /* truncated input is an error, as in Pillow */
  }
  /* trace messages (msg_level >= 0) are ignored */
}

static void qvl_output_message(j_common_ptr cinfo)
{
  (void)cinfo;                   /* never print anything */
}

static void qvl_fail(qvl_decoder *d, int code, const char *msg)
{
  d->err.code = code;
  snprintf(d->err.msg, sizeof(d->err.msg), "%s", msg);
  longjmp(d->err.jb, 1);
}

static void qvl_reset(qvl_decoder *d)
{
  qvl_rs_free(&d->rs);
  free(d->rows);
  free(d->rgb);
  d->rows = NULL;
  d->rgb = NULL;
  jpeg_abort_decompress(&d->cinfo);
  d->err.finishing = 0;
  d->err.pub.num_warnings = 0;
  d->phase = 0;
}

/* Bytes of libjpeg's whole-image coefficient buffer (progressive or
 * multi-scan files), as jinit_d_coef_controller() sizes it. */
static uint64_t qvl_coef_bytes(j_decompress_ptr cinfo)
{
  uint64_t total = 0;
  int ci;
  jpeg_component_info *comp;
  for (ci = 0, comp = cinfo->comp_info; ci < cinfo->num_components;
       ci++, comp++) {
    uint64_t w = (uint64_t)comp->width_in_blocks, h = (uint64_t)comp->height_in_blocks;
    uint64_t hs = (uint64_t)comp->h_samp_factor, vs = (uint64_t)comp->v_samp_factor;
    w = (w + hs - 1) / hs * hs;
    h = (h + vs - 1) / vs * vs;
    total += w * h * (uint64_t)(DCTSIZE2 * sizeof(JCOEF));
  }
  return total;
}

QVL_EXPORT qvl_decoder *qvl_jpeg_create(uint32_t max_memory)
{
  qvl_decoder *d = (qvl_decoder *)calloc(1, sizeof(qvl_decoder));
  if (!d)
    return NULL;
  d->cinfo.err = jpeg_std_error(&d->err.pub);
  d->err.pub.error_exit = qvl_error_exit;
  d->err.pub.emit_message = qvl_emit_message;
  d->err.pub.output_message = qvl_output_message;
  if (setjmp(d->err.jb)) {
    free(d);
    return NULL;
  }
  jpeg_create_decompress(&d->cinfo);
  d->max_memory = max_memory;
  d->cinfo.mem->max_memory_to_use = (long)max_memory;
  return d;
}

QVL_EXPORT void qvl_jpeg_destroy(qvl_decoder *d)
{
  if (!d)
    return;
  qvl_rs_free(&d->rs);
  free(d->rows);
  free(d->rgb);
  jpeg_destroy_decompress(&d->cinfo);
  free(d);
}

QVL_EXPORT int32_t *qvl_jpeg_info(qvl_decoder *d)
{
  return d->info;
}

QVL_EXPORT const char *qvl_jpeg_error(qvl_decoder *d)
{
  return d->err.msg;
}

QVL_EXPORT int qvl_jpeg_error_code(qvl_decoder *d)
{
  return d->err.code;
}

/* Abort any decode in progress; the instance is ready for qvl_jpeg_open. */
QVL_EXPORT void qvl_jpeg_abort(qvl_decoder *d)
{
  if (setjmp(d->err.jb))
    return;
  qvl_reset(d);
}

/* Start decoding `data` (which must stay valid until finish/abort) and read
 * its header. Returns 0, or -1 on error. */
QVL_EXPORT int qvl_jpeg_open(qvl_decoder *d, const unsigned char *data,
                             uint32_t size)
{
  j_decompress_ptr cinfo = &d->cinfo;
  uint64_t coef;
  if (setjmp(d->err.jb)) {
    qvl_reset(d);
    return -1;
  }
  qvl_reset(d);
  memset(d->info, 0, sizeof(d->info));
  d->err.code = 0;
  d->err.msg[0] = 0;
  cinfo->mem->max_memory_to_use = (long)d->max_memory;
  if (size == 0) /* jpeg_mem_src refuses an empty buffer with an odd message */
    qvl_fail(d, JERR_INPUT_EMPTY, "Empty input file");
  jpeg_mem_src(cinfo, data, size);
  jpeg_read_header(cinfo, TRUE);
  coef = qvl_coef_bytes(cinfo);
  d->info[QI_WIDTH] = (int32_t)cinfo->image_width;
  d->info[QI_HEIGHT] = (int32_t)cinfo->image_height;
  d->info[QI_COMPONENTS] = cinfo->num_components;
  d->info[QI_JPEG_COLOR_SPACE] = (int32_t)cinfo->jpeg_color_space;
  d->info[QI_PROGRESSIVE] = cinfo->progressive_mode ? 1 : 0;
  d->info[QI_MULTISCAN] = jpeg_has_multiple_scans(cinfo) ? 1 : 0;
  d->info[QI_COEF_BYTES_LO] = (int32_t)(uint32_t)(coef & 0xffffffffu);
  d->info[QI_COEF_BYTES_HI] = (int32_t)(uint32_t)(coef >> 32);
  d->info[QI_ADOBE_TRANSFORM] =
    cinfo->saw_Adobe_marker ? (int32_t)cinfo->Adobe_transform : -1;
  d->phase = 1;
  return 0;
}

/* Choose the output colour space as Pillow does and set the DCT scaling 1/N
 * (N = 1, 2, 4 or 8); `extra` bytes (the resampler's) count against the
 * memory cap together with libjpeg's coefficient buffer. Call inside a
 * setjmp context, with the header read. */
static void qvl_setup_output(qvl_decoder *d, int scale_denom, uint64_t extra)
{
  j_decompress_ptr cinfo = &d->cinfo;
  if (d->phase != 1)
    qvl_fail(d, QVL_ERR_STATE, "decoding started without an open header");
  if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 &&
      scale_denom != 8)
    qvl_fail(d, QVL_ERR_SCALE, "Scale denominator must be 1, 2, 4 or 8");
  switch (cinfo->num_components) {
  case 1:
    cinfo->out_color_space = JCS_GRAYSCALE;
    break;
  case 3:
    cinfo->out_color_space = JCS_RGB;
    break;
  case 4:
    cinfo->out_color_space = JCS_CMYK;
    break;
  default: {
    char msg[80];
    snprintf(msg, sizeof(msg), "cannot handle %d-layer images",
             cinfo->num_components);
    qvl_fail(d, QVL_ERR_COMPONENTS, msg);
  }
  }
  cinfo->scale_num = 1;
  cinfo->scale_denom = (unsigned int)scale_denom;
  if (d->max_memory && jpeg_has_multiple_scans(cinfo)) {
    uint64_t coef = qvl_coef_bytes(cinfo);
    if (coef > (uint64_t)d->max_memory) {
      char msg[160];
      snprintf(msg, sizeof(msg),
               "JPEG needs a %llu-byte coefficient buffer, over the %lu-byte "
               "memory cap", (unsigned long long)coef, d->max_memory);
      qvl_fail(d, QVL_ERR_MEMORY_CAP, msg);
    }
    extra += coef;
  }
  if (d->max_memory && extra > (uint64_t)d->max_memory) {
    char msg[160];
    snprintf(msg, sizeof(msg),
             "JPEG needs %llu bytes to decode and resize, over the %lu-byte "
             "memory cap", (unsigned long long)extra, d->max_memory);
    qvl_fail(d, QVL_ERR_MEMORY_CAP, msg);
  }
}

/* Choose the output colour space as Pillow does, set the DCT scaling 1/N
 * (N = 1, 2, 4 or 8) and start decompressing. Returns 0, or -1 on error. */
QVL_EXPORT int qvl_jpeg_start(qvl_decoder *d, int scale_denom)
{
  j_decompress_ptr cinfo = &d->cinfo;
  if (setjmp(d->err.jb)) {
    qvl_reset(d);
    return -1;
  }
  qvl_setup_output(d, scale_denom, 0);
  jpeg_start_decompress(cinfo);
  d->info[QI_OUT_WIDTH] = (int32_t)cinfo->output_width;
  d->info[QI_OUT_HEIGHT] = (int32_t)cinfo->output_height;
  d->info[QI_OUT_COMPONENTS] = cinfo->output_components;
  d->info[QI_OUT_SCANLINE] = 0;
  d->phase = 2;
  return 0;
}

/* Read up to max_rows scanlines into buf (rows of
 * output_width * output_components bytes, packed). Returns the number of rows
 * read (0 once all are read), or -1 on error. */
QVL_EXPORT int qvl_jpeg_read(qvl_decoder *d, unsigned char *buf,
                             uint32_t max_rows)
{
  j_decompress_ptr cinfo = &d->cinfo;
  JSAMPROW rows[32];
  size_t stride;
  uint32_t done = 0;
  if (setjmp(d->err.jb)) {
    qvl_reset(d);
    return -1;
  }
  if (d->phase != 2)
    qvl_fail(d, QVL_ERR_STATE, "qvl_jpeg_read called before qvl_jpeg_start");
  stride = (size_t)cinfo->output_width * (size_t)cinfo->output_components;
  while (done < max_rows && cinfo->output_scanline < cinfo->output_height) {
    uint32_t want = max_rows - done, i, got;
    if (want > 32)
      want = 32;
    for (i = 0; i < want; i++)
      rows[i] = buf + (size_t)(done + i) * stride;
    got = jpeg_read_scanlines(cinfo, rows, want);
    if (got == 0)
      break;                     /* cannot happen with a memory source */
    done += got;
  }
  d->info[QI_OUT_SCANLINE] = (int32_t)cinfo->output_scanline;
  return (int)done;
}

/* Finish after all rows were read (reads up to EOI; a missing EOI is
 * tolerated, as in Pillow). Aborts instead when rows are left unread.
 * Returns 0, or -1 on error. */
QVL_EXPORT int qvl_jpeg_finish(qvl_decoder *d)
{
  j_decompress_ptr cinfo = &d->cinfo;
  if (setjmp(d->err.jb)) {
    qvl_reset(d);
    return -1;
  }
  if (d->phase == 2 && cinfo->output_scanline >= cinfo->output_height) {
    d->err.finishing = 1;
    jpeg_finish_decompress(cinfo);
  }
  qvl_reset(d);
  return 0;
}

/* Decode the whole image (after qvl_jpeg_open, at 1/scale_denom scale with
 * libjpeg's DCT scaling, N = 1, 2, 4 or 8: 1 is the full image, N > 1 what
 * Pillow's draft() decodes) and resize it while it is decoded: EXIF
 * `orientation` (1..8) applied, then Pillow's bicubic resize of the oriented
 * (decoded-size) image to out_w x out_h (resample.c). CMYK
 * rows are converted to RGB first, as Pillow's convert("RGB") does. Reads on
 * to the EOI marker (a missing EOI is tolerated, as in Pillow) like
 * qvl_jpeg_finish. Returns 0, or -1 on error. On success the info block
 * gives the output (QI_RESIZED_PTR, out_w * out_h * QI_RESIZED_CHANNELS
 * bytes), valid until the next qvl_jpeg_open / qvl_jpeg_abort. */
QVL_EXPORT int qvl_jpeg_decode_resized(qvl_decoder *d, int orientation,
                                       int out_w, int out_h, int scale_denom)
{
  j_decompress_ptr cinfo = &d->cinfo;
  JSAMPROW rows[QVL_RESIZE_ROWS];
  size_t stride, rgb_bytes;
  int channels, rc, i, src_w, src_h;
  uint64_t need;
  if (setjmp(d->err.jb)) {
    qvl_reset(d);
    return -1;
  }
  if (d->phase != 1)
    qvl_fail(d, QVL_ERR_STATE, "qvl_jpeg_decode_resized called without an open header");
  if (orientation < 1 || orientation > 8 || out_w < 1 || out_h < 1 ||
      out_w > 65535 || out_h > 65535)
    qvl_fail(d, QVL_ERR_RESIZE, "Bad orientation or output size");
  if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 &&
      scale_denom != 8)
    qvl_fail(d, QVL_ERR_SCALE, "Scale denominator must be 1, 2, 4 or 8");
  channels = cinfo->num_components == 1 ? 1 : 3;
  /* the decoded size, as jpeg_calc_output_dimensions() computes it for
   * scale 1/N (ceil(image size / N)); checked after jpeg_start_decompress.
   * Unsupported component counts are refused by qvl_setup_output */
  src_w = (int)((cinfo->image_width + (JDIMENSION)scale_denom - 1) / (JDIMENSION)scale_denom);
  src_h = (int)((cinfo->image_height + (JDIMENSION)scale_denom - 1) / (JDIMENSION)scale_denom);
  stride = (size_t)src_w * (size_t)cinfo->num_components;
  rgb_bytes = cinfo->num_components == 4 ? (size_t)src_w * 3 + QVL_ROW_PAD : 0;
  need = qvl_rs_bytes(src_w, src_h, channels, orientation, out_w, out_h);
  need += (uint64_t)stride * QVL_RESIZE_ROWS + QVL_ROW_PAD + rgb_bytes;
  qvl_setup_output(d, scale_denom, need);
  jpeg_start_decompress(cinfo);
  d->info[QI_OUT_WIDTH] = (int32_t)cinfo->output_width;
  d->info[QI_OUT_HEIGHT] = (int32_t)cinfo->output_height;
  d->info[QI_OUT_COMPONENTS] = cinfo->output_components;
  d->info[QI_OUT_SCANLINE] = 0;
  d->phase = 2;
  if (cinfo->output_width != (JDIMENSION)src_w ||
      cinfo->output_height != (JDIMENSION)src_h ||
      (size_t)cinfo->output_components * cinfo->output_width != stride)
    qvl_fail(d, QVL_ERR_STATE, "Unexpected output size");

  rc = qvl_rs_init(&d->rs, (int)cinfo->output_width, (int)cinfo->output_height,
                   channels, orientation, out_w, out_h);
  if (rc == QVL_RS_NOMEM)
    qvl_fail(d, JERR_OUT_OF_MEMORY, "Insufficient memory for the resampler");
  if (rc != QVL_RS_OK)
    qvl_fail(d, QVL_ERR_RESIZE, "Cannot set up the resampler");
  d->info[QI_RESAMPLE_BYTES] = (int32_t)d->rs.bytes;
  d->rows = (unsigned char *)malloc(stride * QVL_RESIZE_ROWS + QVL_ROW_PAD);
  if (rgb_bytes)
    d->rgb = (unsigned char *)malloc(rgb_bytes);
  if (!d->rows || (rgb_bytes && !d->rgb))
    qvl_fail(d, JERR_OUT_OF_MEMORY, "Insufficient memory for the scanlines");
  memset(d->rows + stride * QVL_RESIZE_ROWS, 0, QVL_ROW_PAD);
  if (d->rgb)
    memset(d->rgb, 0, rgb_bytes);
  for (i = 0; i < QVL_RESIZE_ROWS; i++)
    rows[i] = d->rows + (size_t)i * stride;

  while (cinfo->output_scanline < cinfo->output_height) {
    JDIMENSION y0 = cinfo->output_scanline, got;
    got = jpeg_read_scanlines(cinfo, rows, QVL_RESIZE_ROWS);
    if (got == 0)                /* cannot happen with a memory source */
      qvl_fail(d, QVL_ERR_STATE, "libjpeg returned no scanlines");
    for (i = 0; i < (int)got; i++) {
      const unsigned char *row = rows[i];
      if (d->rgb) {
        qvl_inverted_cmyk_to_rgb(row, d->rgb, (int)cinfo->output_width);
        row = d->rgb;
      }
      qvl_rs_row(&d->rs, row, (int)(y0 + (JDIMENSION)i));
    }
  }
  qvl_rs_finish(&d->rs);
  d->info[QI_OUT_SCANLINE] = (int32_t)cinfo->output_scanline;
  d->err.finishing = 1;
  jpeg_finish_decompress(cinfo);
  d->err.finishing = 0;
  d->phase = 0;
  free(d->rows);
  free(d->rgb);
  d->rows = NULL;
  d->rgb = NULL;
  d->info[QI_RESIZED_PTR] = (int32_t)(uintptr_t)d->rs.out;
  d->info[QI_RESIZED_CHANNELS] = channels;
  return 0;
}
