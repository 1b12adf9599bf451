#!/usr/bin/env bash
# The CPU build against the oldest torch structinf declares (pyproject.toml:
# torch>=2.11), and the op test suites run on it.
#
#     bash .ci/oldest_torch_check.sh [TORCH_VERSION]     (default 2.11.0)
#
# Reuses the venv of .ci/cuda_compile_check.sh for the same version (the
# package index's torch 2.11.0 is a CUDA build; with STRUCTINF_CUDA=0 it builds
# the CPU extension, as a CPU-only torch would), builds into
# build/cpu-check-TORCH_VERSION, leaves the checkout's build alone, and runs the
# kernel, gradient, fuzz, build and device-suite tests from a copy of the package
# holding that library.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/package_copy.sh

TORCH_VERSION=${1:-2.11.0}
VENV=${STRUCTINF_CUDA_VENV:-build/venv-cuda-$TORCH_VERSION}
OUT=build/cpu-check-$TORCH_VERSION
export PIP_DISABLE_PIP_VERSION_CHECK=1 STRUCTINF_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)}

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != sys.argv[1])" "$TORCH_VERSION" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi
mkdir -p "$OUT"
"$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" "setuptools>=64" wheel ninja numpy \
  tqdm safetensors scipy pytest hypothesis > "$OUT/pip.log" 2>&1 \
  || { tail -n 30 "$OUT/pip.log" >&2; echo "oldest torch check: pip install FAILED" >&2; exit 1; }

start=$SECONDS
"$VENV/bin/python" setup.py -q build_ext --build-temp "$OUT/temp" --build-lib "$OUT/lib" \
  > "$OUT.log" 2>&1 || { tail -n 60 "$OUT.log" >&2; echo "oldest torch check: build FAILED (log: $OUT.log)" >&2; exit 1; }
echo "oldest torch check: CPU extension built against torch $TORCH_VERSION in $((SECONDS - start)) s"

package_copy "$OUT"

# -P: the checkout is not put before PYTHONPATH, so `structinf` is the copy.
PYTHONPATH="$OUT/pkg" "$VENV/bin/python" -P -c "
import torch, structinf.ops as o
assert o.HAS_EXTENSION and not o.cuda_built(), (o.HAS_EXTENSION, o.cuda_built())
assert o._C.__file__.startswith('$PWD/$OUT/pkg/'), o._C.__file__
print('oldest torch check: torch', torch.__version__, 'structinf._C from', o._C.__file__)"
PYTHONPATH="$OUT/pkg" "$VENV/bin/python" -P -m pytest -q -p no:cacheprovider \
  tests/test_ops.py tests/test_gradients.py tests/test_relaxed_energy_op.py tests/test_fuzz_ops.py \
  tests/test_crf_decode.py tests/test_build.py tests/test_cuda_suite.py tests/test_cuda_relaxed.py \
  tests/test_cuda_edges.py
