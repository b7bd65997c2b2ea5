#!/usr/bin/env bash
# Builds btd (and trainer-bench) with the `cuda` feature on a machine WITHOUT a GPU or a CUDA install,
# and packages them to copy to a GPU host that has no network (docs/training.md#gpus).
#
#   bench/build-cuda.sh [--out DIR] [--bundle-libs]
#
# What it does:
#   1. Installs NVIDIA's CUDA 13.0 toolkit wheels from PyPI (nvcc, cudart, cuBLAS, cuRAND, NVRTC,
#      CCCL headers) into a venv under $BTD_CUDA_CACHE (default ~/.cache/btd-cuda, ~1.2 GB). Only
#      pip and PyPI; nothing else is downloaded. Reused on later runs.
#   2. Lays out a CUDA root for the linker: unversioned links (libcublas.so -> libcublas.so.13, ...)
#      and a *stub* libcuda.so (soname libcuda.so.1) whose every entry point returns
#      CUDA_ERROR_STUB_LIBRARY, as NVIDIA's own toolkit stub does. candle-core 0.11 builds cudarc with
#      `dynamic-linking`, so the binary links against the driver library; the wheels ship no driver
#      stub, so the script makes one from the driver symbols cudarc declares. The stub is only for
#      linking: it is not packaged, and on the GPU host the real driver's libcuda.so.1 is loaded.
#   3. cargo build --release --locked --features cuda for `btd` and `trainer-bench`, with
#      CUDA_COMPUTE_CAP (default 90: H100/H200) and a RUNPATH of $ORIGIN/../lib.
#   4. Packages DIR/btd-cuda-sm<CAP>/ and DIR/btd-cuda-sm<CAP>.tar.gz (DIR defaults to
#      target-cuda/dist): bin/btd, bin/trainer-bench, wrappers `btd` and `trainer-bench` that find the
#      CUDA 13 libraries (bundled lib/, $BTD_CUDA_LIBS, or the host's CUDA toolkit) and a README.
#      With --bundle-libs it also copies cudart, cuBLAS/cuBLASLt and cuRAND into lib/ (~730 MB,
#      for a GPU host with a driver but no CUDA 13 toolkit); without it the package is a few tens of
#      MB and uses the host's toolkit libraries.
#
# Compute capability: CUDA_COMPUTE_CAP=90 (default) compiles candle's kernels for sm_90a, which runs
# on compute capability 9.0 only (H100, H200, GH200). cudaforge (candle-kernels' build helper) takes one
# capability per build; for other GPUs build again with e.g. CUDA_COMPUTE_CAP=80 (A100; its PTX is
# also JIT-compiled by the driver on newer GPUs, at a start-up cost), 89 (L4/RTX 4090), 100 (B200),
# 120 (RTX 50xx). CUDA 13 supports 75 and newer.
#
# The GPU host needs an NVIDIA driver for CUDA 13 (R580 or newer). No Rust, no network, no nvcc.
#
# Environment: BTD_CUDA_CACHE (wheel venv and CUDA root), CUDA_COMPUTE_CAP, CARGO_TARGET_DIR (default
# target-cuda, so the CPU build in target/ is untouched), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD

OUT=""
BUNDLE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --bundle-libs) BUNDLE=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-cuda.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

CAP=${CUDA_COMPUTE_CAP:-90}
CACHE=${BTD_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/btd-cuda}
PYTHON=${PYTHON:-python3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT_DIR/target-cuda}
OUT=${OUT:-$CARGO_TARGET_DIR/dist}

# CUDA 13.0: the oldest CUDA 13, so the binary also runs against any newer 13.x toolkit on the host
# (same sonames; cudarc is told 13.0 and only calls 13.0 entry points).
CUDA_VERSION_TAG=13000
WHEELS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)

step() { printf '\n== %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "build-cuda.sh: needs $1" >&2; exit 1; }; }
need cargo; need "$PYTHON"; need cc; need c++; need readelf

# 1. The toolkit wheels.
VENV=$CACHE/venv-cu$CUDA_VERSION_TAG
STAMP=$VENV/.btd-wheels
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "${WHEELS[*]}" ]; then
  step "installing CUDA 13.0 wheels into $VENV (PyPI)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "${WHEELS[@]}"
  echo "${WHEELS[*]}" > "$STAMP"
fi
CU=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$CU/bin/nvcc" ] || { echo "build-cuda.sh: no nvcc in $CU/bin" >&2; exit 1; }

# 2. A CUDA root for the linker: the wheels' libraries under unversioned names, plus a driver stub.
CROOT=$CACHE/root-cu$CUDA_VERSION_TAG
step "laying out $CROOT"
rm -rf "$CROOT"
mkdir -p "$CROOT/lib/stubs"
for so in "$CU"/lib/lib*.so.*; do
  base=$(basename "$so")
  ln -s "$so" "$CROOT/lib/$base"
  case "$base" in *.alt.so*) continue ;; esac
  ln -sf "$base" "$CROOT/lib/${base%%.so.*}.so"
done

# The driver symbols cudarc calls through `extern "C"` (a superset of what candle uses).
CUDARC_DIR=$(cargo metadata --locked --format-version 1 --features btd/cuda 2>/dev/null \
  | "$PYTHON" -c 'import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(os.path.dirname(p["manifest_path"]))')
[ -f "$CUDARC_DIR/src/driver/sys/mod.rs" ] || {
  echo "build-cuda.sh: cudarc's sources not found (run cargo fetch --locked first)" >&2; exit 1; }
{
  echo '/* Link-time stand-in for the NVIDIA driver (libcuda.so.1). Generated by bench/build-cuda.sh. */'
  echo '/* Every entry point returns CUDA_ERROR_STUB_LIBRARY (34), like the CUDA toolkit stub. */'
  grep -hoE '^[[:space:]]+fn cu[A-Za-z0-9_]+\(' "$CUDARC_DIR/src/driver/sys/mod.rs" \
    | sed -E 's/^[[:space:]]+fn ([A-Za-z0-9_]+)\(/\1/' | sort -u \
    | sed 's/.*/int &(void) { return 34; }/'
} > "$CROOT/lib/stubs/libcuda-stub.c"
cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$CROOT/lib/stubs/libcuda.so" \
  "$CROOT/lib/stubs/libcuda-stub.c"
echo "driver stub: $(grep -c return "$CROOT/lib/stubs/libcuda-stub.c") entry points" >&2

# 3. Build.
export PATH=$CU/bin:$PATH
export NVCC=$CU/bin/nvcc
export CUDA_HOME=$CROOT CUDA_ROOT=$CROOT CUDA_PATH=$CROOT
export CUDARC_CUDA_VERSION=$CUDA_VERSION_TAG
export CUDA_COMPUTE_CAP=$CAP
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,\$ORIGIN/../lib"
step "nvcc: $(nvcc --version | tail -1); CUDA_COMPUTE_CAP=$CAP; target dir $CARGO_TARGET_DIR"
start=$(date +%s)
# One invocation, so both binaries share one feature resolution (a separate `-p btd-trainer` build
# would resolve some dependencies' features differently and rebuild them). Both features are named:
# with two packages selected, `btd/cuda` alone does not reach btd-trainer.
cargo build --release --locked -p btd -p btd-trainer --bin btd --bin trainer-bench \
  --features btd/cuda,btd-trainer/cuda
# Refuse to package a binary that is not the CUDA build.
for bin in btd trainer-bench; do
  readelf -d "$CARGO_TARGET_DIR/release/$bin" | grep -q 'NEEDED.*libcuda\.so\.1' || {
    echo "build-cuda.sh: $bin does not link the CUDA driver: not a cuda build" >&2; exit 1; }
done
echo "build: $(( $(date +%s) - start )) s" >&2

# 4. Package.
NAME=btd-cuda-sm$CAP
PKG=$OUT/$NAME
step "packaging $PKG"
rm -rf "$PKG" "$PKG.tar.gz"
mkdir -p "$PKG/bin"
cp "$CARGO_TARGET_DIR/release/btd" "$CARGO_TARGET_DIR/release/trainer-bench" "$PKG/bin/"
if [ "$BUNDLE" = 1 ]; then
  mkdir -p "$PKG/lib"
  # What the binaries need (readelf -d: NEEDED), cuBLASLt for cuBLAS; NVRTC is not needed.
  for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
    cp "$CU/lib/$lib" "$PKG/lib/"
  done
fi
cat > "$PKG/run-with-cuda.sh" <<'EOF'
#!/bin/sh
# Runs bin/$(basename $0) with the CUDA 13 libraries on the loader path: the bundled lib/ if present,
# else $BTD_CUDA_LIBS, else the host's CUDA toolkit (next to nvcc, /usr/local/cuda).
here=$(cd "$(dirname "$0")" && pwd)
prog=$(basename "$0")
[ "$prog" = run-with-cuda.sh ] && { echo "run ./btd or ./trainer-bench" >&2; exit 2; }
dirs=""
[ -f "$here/lib/libcublas.so.13" ] && dirs="$here/lib"
for d in ${BTD_CUDA_LIBS:-} \
         "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/bin/nvcc)")/../lib64" \
         ${CUDA_HOME:+"$CUDA_HOME/lib64"} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         /usr/local/cuda-13/lib64; do
  [ -z "$dirs" ] && [ -f "$d/libcublas.so.13" ] && dirs=$d
done
if ! { ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; } && [ -z "${BTD_CUDA_FORCE:-}" ]; then
  found=""
  for d in $(echo "${LD_LIBRARY_PATH:-}" | tr : ' ') /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib; do
    [ -e "$d/libcuda.so.1" ] && found=1
  done
  if [ -z "$found" ]; then
    echo "$prog: no NVIDIA driver here (libcuda.so.1 not found); this is the CUDA build of btd," \
      "which needs one to start. Use the CPU build on this machine (set BTD_CUDA_FORCE=1 to try anyway)." >&2
    exit 1
  fi
fi
[ -z "$dirs" ] && echo "$prog: warning: no CUDA 13 libraries found (libcublas.so.13): set BTD_CUDA_LIBS=DIR" \
  "or use a package built with --bundle-libs" >&2
LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/bin/$prog" "$@"
EOF
chmod +x "$PKG/run-with-cuda.sh"
ln -s run-with-cuda.sh "$PKG/btd"
ln -s run-with-cuda.sh "$PKG/trainer-bench"
cat > "$PKG/README.txt" <<EOF
btd $(git describe --always --dirty 2>/dev/null || echo '?') built with --features cuda for compute capability $CAP
(CUDA 13.0, $(date -u +%Y-%m-%d)). Needs an NVIDIA driver for CUDA 13 (R580+); no Rust, nvcc or network.

  ./btd rungs                                     # lists the GPUs (nvidia-smi)
  ./btd train --preset base --device cuda --steps 200
  ./trainer-bench --preset base --device cuda --steps 200 --json

The wrappers put the CUDA 13 libraries (cudart, cuBLAS, cuBLASLt, cuRAND) on the loader path:
lib/ when the package was built with --bundle-libs, else \$BTD_CUDA_LIBS, else the host's toolkit
(next to nvcc, /usr/local/cuda/lib64). bin/ holds the binaries themselves (RUNPATH \$ORIGIN/../lib).
Built by bench/build-cuda.sh; see docs/training.md#gpus.
EOF
tar -C "$OUT" -czf "$PKG.tar.gz" "$NAME"
ls -l "$PKG/bin" >&2
echo "$PKG.tar.gz ($(du -h "$PKG.tar.gz" | cut -f1))"
