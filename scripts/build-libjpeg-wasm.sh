#!/usr/bin/env bash
# Build src/image/codecs/libjpeg-turbo/libjpeg-turbo.wasm: Debian's libjpeg-turbo 2.1.5 source package
# (the library Pillow 9.4 links on Debian: libjpeg62-turbo) compiled with emscripten to a standalone
# WebAssembly module, together with src/image/codecs/libjpeg-turbo/wrapper.c and resample.c (Pillow's
# bicubic resampler, fed the decoded rows as they come), jsimd-wasm.c + simd-kernels.c (WebAssembly SIMD
# for the islow IDCT, YCbCr -> RGB and fancy upsampling, computing exactly what libjpeg's C code does)
# and simd-selftest.c (checks those kernels against libjpeg's C code, from a test).
#
#   bash scripts/build-libjpeg-wasm.sh           build, write the .wasm and its .sha256
#   bash scripts/build-libjpeg-wasm.sh --check   rebuild into a temp dir, compare with the committed sha256
#
# Needs root (or sudo) the first time: installs emscripten, dpkg-dev, cmake and make with apt, adds a
# deb-src entry (a copy of the existing deb entries) when there is none, and runs `apt-get source`.
# Nothing fetched lands in the repository: the build tree is the fixed path $BUILD_ROOT (fixed so that
# no per-run path can leak into the output; prefix maps strip it as well), removed afterwards.
set -euo pipefail

EXPECTED_UPSTREAM=2.1.5
BUILD_ROOT=/tmp/qvl-libjpeg-build

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CODEC_DIR=$REPO/src/image/codecs/libjpeg-turbo
WASM=$CODEC_DIR/libjpeg-turbo.wasm
SHA_FILE=$CODEC_DIR/libjpeg-turbo.wasm.sha256
WRAPPER_SOURCES=(wrapper.c resample.c resample.h jsimd-wasm.c simd-kernels.c simd-kernels.h simd-selftest.c)

MODE=build
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

log() { printf '[build-libjpeg-wasm] %s\n' "$*" >&2; }

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi
fi

# --- tools ---------------------------------------------------------------------------------------
need=()
command -v emcc >/dev/null 2>&1 || need+=(emscripten)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v make >/dev/null 2>&1 || need+=(make)
command -v node >/dev/null 2>&1 || need+=(nodejs)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# Debian's emscripten needs node-acorn, which Debian installs under /usr/share/nodejs: a Node that is
# not Debian's (e.g. NodeSource's) does not search there.
export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}
NODE_BIN=$(command -v node)
log "emcc: $(emcc --version | head -n1)"

# --- deb-src entry -------------------------------------------------------------------------------
has_deb_src() {
  grep -Eqs '^[[:space:]]*(Types:.*deb-src|deb-src[[:space:]])' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null
}
if ! has_deb_src; then
  tmp_src=$(mktemp)
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    grep -q '^Types:.*\bdeb\b' "$f" || continue
    sed -E 's/^Types:.*$/Types: deb-src/' "$f" >>"$tmp_src"
    printf '\n' >>"$tmp_src"
  done
  if [ -s "$tmp_src" ]; then
    log "adding deb-src entries: /etc/apt/sources.list.d/debian-src.sources"
    $SUDO install -m 644 "$tmp_src" /etc/apt/sources.list.d/debian-src.sources
  elif [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
    log "adding deb-src entries: /etc/apt/sources.list.d/debian-src.list"
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$tmp_src"
    $SUDO install -m 644 "$tmp_src" /etc/apt/sources.list.d/debian-src.list
  else
    rm -f "$tmp_src"
    log "no deb entry found to copy into a deb-src entry"; exit 1
  fi
  rm -f "$tmp_src"
  $SUDO apt-get update -q
fi

# --- source --------------------------------------------------------------------------------------
exec 9>"$BUILD_ROOT.lock"
flock 9
rm -rf "$BUILD_ROOT"
mkdir -p "$BUILD_ROOT/src" "$BUILD_ROOT/build" "$BUILD_ROOT/wrapper"
cleanup() { rm -rf "$BUILD_ROOT"; }
trap cleanup EXIT

log "apt-get source libjpeg-turbo"
if ! (cd "$BUILD_ROOT/src" && apt-get source -q libjpeg-turbo >"$BUILD_ROOT/apt-source.log" 2>&1); then
  # a deb-src entry whose index was never fetched: update once and retry
  log "apt-get source failed; apt-get update and retry"
  $SUDO apt-get update -q >&2
  rm -rf "${BUILD_ROOT:?}/src"/*
  (cd "$BUILD_ROOT/src" && apt-get source -q libjpeg-turbo >"$BUILD_ROOT/apt-source.log" 2>&1) || {
    cat "$BUILD_ROOT/apt-source.log" >&2; exit 1; }
fi
SRC=$(find "$BUILD_ROOT/src" -mindepth 1 -maxdepth 1 -type d -name 'libjpeg-turbo-*' | head -n1)
[ -n "$SRC" ] || { log "apt-get source produced no libjpeg-turbo-* directory"; exit 1; }
DEB_VERSION=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version)
UPSTREAM=${DEB_VERSION#*:}
UPSTREAM=${UPSTREAM%-*}
if [ "$UPSTREAM" != "$EXPECTED_UPSTREAM" ]; then
  log "expected libjpeg-turbo $EXPECTED_UPSTREAM, apt gave $DEB_VERSION"; exit 1
fi
log "libjpeg-turbo source $DEB_VERSION ($SRC)"
if installed=$(dpkg-query -W -f '${Version}' libjpeg62-turbo 2>/dev/null) && [ "$installed" != "$DEB_VERSION" ]; then
  log "note: the installed libjpeg62-turbo (Pillow's) is $installed, the source is $DEB_VERSION"
fi

# --- source patch --------------------------------------------------------------------------------
# jdhuff.h sizes the Huffman decoder's bit buffer from size_t: 32 bits on wasm32, where 64-bit integers
# are native. Use the 64-bit buffer libjpeg-turbo already has for the x32 ABI (32-bit pointers, 64-bit
# registers): fewer refills; the decoded coefficients are the same.
HUFF_FROM='#elif defined(__x86_64__) \&\& defined(__ILP32__)$'
HUFF_TO='#elif (defined(__x86_64__) \&\& defined(__ILP32__)) || defined(__wasm__)'
sed -i "s/^$HUFF_FROM/$HUFF_TO/" "$SRC/jdhuff.h"
grep -q 'defined(__ILP32__)) || defined(__wasm__)' "$SRC/jdhuff.h" || { log "jdhuff.h: the bit-buffer patch did not apply"; exit 1; }

# --- build ---------------------------------------------------------------------------------------
export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Timestamp)
export TZ=UTC LC_ALL=C
MAP="-ffile-prefix-map=$BUILD_ROOT=/qvl-libjpeg -fdebug-prefix-map=$BUILD_ROOT=/qvl-libjpeg"
# NO_GETENV: no JPEGMEM environment lookup (and no WASI environ imports); NO_PUTENV goes with it.
CFLAGS="-O3 -DNDEBUG -DNO_GETENV -DNO_PUTENV $MAP"

log "configuring (emcmake cmake)"
(
  cd "$BUILD_ROOT/build"
  # CMake's emulator for try-run checks: emcmake's default passes --experimental-wasm-threads, which
  # Node 20 rejects (then "Cannot determine word size").
  emcmake cmake "$SRC" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS_RELEASE="$CFLAGS" \
    "-DCMAKE_CROSSCOMPILING_EMULATOR=$NODE_BIN;--no-experimental-fetch" \
    -DENABLE_SHARED=0 -DENABLE_STATIC=1 \
    -DWITH_SIMD=0 -DWITH_TURBOJPEG=0 -DWITH_JAVA=0 \
    -DWITH_JPEG7=0 -DWITH_JPEG8=0 \
    -DBUILD="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d)" \
    >"$BUILD_ROOT/cmake.log" 2>&1 || { tail -n 40 "$BUILD_ROOT/cmake.log" >&2; exit 1; }
  log "building libjpeg.a"
  emmake make -j"$(nproc)" jpeg-static >"$BUILD_ROOT/make.log" 2>&1 || { tail -n 40 "$BUILD_ROOT/make.log" >&2; exit 1; }
)
grep -q '#define JPEG_LIB_VERSION  62' "$BUILD_ROOT/build/jconfig.h" || { log "unexpected JPEG_LIB_VERSION"; exit 1; }

EXPORTS='["_qvl_jpeg_create","_qvl_jpeg_destroy","_qvl_jpeg_info","_qvl_jpeg_error","_qvl_jpeg_error_code","_qvl_jpeg_abort","_qvl_jpeg_open","_qvl_jpeg_start","_qvl_jpeg_read","_qvl_jpeg_finish","_qvl_jpeg_decode_resized","_qvl_simd_selftest","_malloc","_free"]'
for f in "${WRAPPER_SOURCES[@]}"; do cp "$CODEC_DIR/$f" "$BUILD_ROOT/wrapper/$f"; done
# Our own C (not libjpeg, which keeps the flags above): resample.c ports Pillow's double-precision
# coefficient maths, so no FMA contraction (-ffp-contract=off; never -ffast-math); -msimd128 for its
# integer inner loops and the SIMD kernels (wasm SIMD: Node 20 and workerd run it; integer lanes, so
# results are exact). Linked before libjpeg.a, jsimd-wasm.o stands in for libjpeg's jsimd_none.o.
WRAPPER_CFLAGS="$CFLAGS -ffp-contract=off -msimd128"
OUT=$BUILD_ROOT/out/libjpeg-turbo.wasm
mkdir -p "$BUILD_ROOT/out"
log "linking libjpeg-turbo.wasm"
(
  cd "$BUILD_ROOT"
  # SUPPORT_LONGJMP=wasm: setjmp/longjmp via wasm exception handling (Node 20 and workerd run it), so
  # no JS invoke_* trampolines are needed and libjpeg errors unwind inside the module.
  emcc $WRAPPER_CFLAGS \
    -I"$SRC" -I"$BUILD_ROOT/build" \
    wrapper/wrapper.c wrapper/resample.c wrapper/jsimd-wasm.c wrapper/simd-kernels.c wrapper/simd-selftest.c \
    build/libjpeg.a \
    -sSTANDALONE_WASM=1 --no-entry \
    -sSUPPORT_LONGJMP=wasm \
    -sALLOW_MEMORY_GROWTH=1 \
    -sEXPORTED_FUNCTIONS="$EXPORTS" \
    -o "$OUT"
)
SHA=$(sha256sum "$OUT" | cut -d' ' -f1)
SIZE=$(stat -c %s "$OUT")

if [ "$MODE" = check ]; then
  [ -f "$SHA_FILE" ] || { log "missing $SHA_FILE"; exit 1; }
  want=$(cut -d' ' -f1 "$SHA_FILE")
  have_file=$( [ -f "$WASM" ] && sha256sum "$WASM" | cut -d' ' -f1 || echo missing)
  echo "rebuilt:   $SHA  ($SIZE bytes)"
  echo "recorded:  $want  ($(basename "$SHA_FILE"))"
  echo "committed: $have_file  (libjpeg-turbo.wasm)"
  if [ "$SHA" = "$want" ] && [ "$have_file" = "$want" ]; then
    echo "OK: the build reproduces the committed libjpeg-turbo.wasm"
  else
    echo "MISMATCH" >&2; exit 1
  fi
else
  cp "$OUT" "$WASM"
  printf '%s  libjpeg-turbo.wasm\n' "$SHA" >"$SHA_FILE"
  echo "wrote $WASM ($SIZE bytes, $(gzip -9c "$OUT" | wc -c) gzipped)"
  echo "sha256 $SHA"
fi
