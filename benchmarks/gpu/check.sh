#!/usr/bin/env bash
# The engine's GPU checks in one run, on the device machine, from the repository root:
# unpack the parts staged by benchmarks/gpu/prepare.sh, install them beside the image's own packages,
# then report the GPU, build the models, run the CUDA tests, the forward speed / busy / memory check
# (busy.py), the provider-setting matrix and the end-to-end speed benchmark. Every step runs even when
# one before it failed; the exit status is the number of failed steps. The log and the speed table land in $OUT (the device tool brings them back).
#
# Dry run on a machine without a GPU (checks the staging and install steps; the CUDA steps fail):
#   ORT_PACKAGE=onnxruntime ORT_VERSION=1.32.0 PY_VERSION=3.11 benchmarks/gpu/prepare.sh
#   PYTHON=.venv/bin/python benchmarks/gpu/check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-check}
WORK=${WORK:-/tmp/gpu-check-work}
mkdir -p "$OUT" && exec > >(tee "$OUT/check.log") 2>&1
failed=0
step() {  # step NAME COMMAND...: run, time and record one check
    local name=$1 started=$SECONDS
    shift
    echo "=== $name"
    if "$@"; then echo "=== $name: ok ($((SECONDS - started)) s)"
    else echo "=== $name: FAILED ($((SECONDS - started)) s)"; failed=$((failed + 1)); fi
}

unpack() {
    (cd .gpu && sha256sum -c --quiet SHA256SUMS) || {
        echo "parts missing or damaged: carry every .gpu/part-* on the same warm machine (prepare.sh)"; return 1; }
    rm -rf "$WORK" && mkdir -p "$WORK/bundle"
    cat .gpu/part-* | tar -x -C "$WORK/bundle"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
        "$WORK"/bundle/wheels/*.whl
    cp -r "$WORK"/bundle/site/. "$WORK/site/"
}

cuda_library_path() {
    # The image's CUDA 13 runtime, cuBLAS and cuDNN come as nvidia-* Python packages (PyTorch's); onnxruntime
    # finds them through LD_LIBRARY_PATH.
    "$PYTHON" - <<'PY'
import glob, os, site, sys
wanted = ("libcudart.so.1", "libcublas.so.1", "libcublasLt.so.1", "libcudnn.so.9", "libcurand.so.1",
          "libcufft.so.1", "libnvrtc.so.1")
roots = [p for p in site.getsitepackages() + sys.path if os.path.isdir(os.path.join(p, "nvidia"))]
dirs = {os.path.dirname(f) for root in roots for f in glob.glob(os.path.join(root, "nvidia", "**", "lib*.so*"),
        recursive=True) if os.path.basename(f).startswith(wanted)}
print(":".join(sorted(dirs)))
PY
}

report() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PYTHON" - <<'PY'
import sys
import onnxruntime as ort
print("python", sys.version.split()[0], "onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers())
sys.exit(0 if "CUDAExecutionProvider" in ort.get_available_providers() else "no CUDA provider in this onnxruntime")
PY
}

build_models() {
    "$PYTHON" - <<'PY'
import time
from gpu_batch.engine.models import ensure_model
for name in ("x4plus", "animevideov3"):
    for precision in ("fp16", "fp32"):
        started = time.perf_counter()
        path = ensure_model(name, precision=precision)
        print(f"{name} {precision}: {path.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - started:.1f} s")
PY
}

step "unpack staged packages" unpack
export PYTHONPATH="$WORK/site:$PWD" XDG_CACHE_HOME="$WORK/cache" PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH="$(cuda_library_path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
step "GPU and onnxruntime" report
step "build models" build_models
step "CUDA tests" "$PYTHON" -m pytest -p no:cacheprovider -q -rs tests/engine/test_cuda.py
step "forward speed, GPU busy, GPU memory per window pixel" "$PYTHON" benchmarks/gpu/busy.py --json "$OUT/busy.json"
step "CUDA provider settings (network only)" "$PYTHON" benchmarks/gpu/cuda_matrix.py --model x4plus
step "end to end speed, CUDA" "$PYTHON" benchmarks/engine_speed.py --sides cuda --no-rss --repeats 3 \
    --sizes x4plus=256,512,1024 animevideov3=512,1024,2048 --json "$OUT/engine_speed.json"
echo "failed steps: $failed"
exit "$failed"
