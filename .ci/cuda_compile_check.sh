#!/usr/bin/env bash
# Compile check of the CUDA build, on a machine with nvcc but no GPU or driver.
#
#     bash .ci/cuda_compile_check.sh [TORCH_VERSION]     (default 2.15.0)
#
# The CPU torch wheel cannot build a CUDAExtension, so a second venv holds a
# CUDA build of torch (torch==TORCH_VERSION from the package index: 2.11.0 is
# built with CUDA 13.0, the nvcc here; 2.15.0 with CUDA 13.2, which nvcc 13.0
# builds for with torch's minor-version warning; pinned, since an open range
# would pull other CUDA packages), and the
# whole extension (CPU kernels, CUDA kernels, CUDA binding) is built against it
# into build/cuda-check-TORCH_VERSION, leaving the CPU build in the checkout
# alone. Then the built module is checked (csrc/linkcheck.py: it uses the
# shared C++ runtime) and imported from a copy of the package: the import must
# work without a driver, every CUDA op must have a CUDA kernel registered, the
# CPU kernels must still run and raise the right one-line errors (numbers
# included) for bad lengths through this same library, and asking for a CUDA
# tensor must fail with a clear error. On a machine with a GPU the same script
# also runs each op on it and compares with the CPU.
#
# Environment: STRUCTINF_CUDA_VENV (default build/venv-cuda-TORCH_VERSION),
# PIP_CACHE_DIR (set by .ci/run to one cache for every venv), CUDA_HOME
# (default /usr/local/cuda), TORCH_CUDA_ARCH_LIST (default 9.0a: one
# architecture keeps the check short; setup.py's own default adds PTX).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/package_copy.sh

TORCH_VERSION=${1:-2.15.0}
VENV=${STRUCTINF_CUDA_VENV:-build/venv-cuda-$TORCH_VERSION}
OUT=build/cuda-check-$TORCH_VERSION
TORCH_CUDA_PIN="torch==$TORCH_VERSION"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
export STRUCTINF_CUDA=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

# torch finds the toolkit from nvcc's location, which a wrapper script on the
# PATH can hide: name it.
if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
  export CUDA_HOME=/usr/local/cuda
fi
if [[ -z "${CUDA_HOME:-}" || ! -x "$CUDA_HOME/bin/nvcc" ]]; then
  echo "cuda compile check: no CUDA toolkit (set CUDA_HOME to the directory with bin/nvcc)" >&2
  exit 1
fi
echo "cuda compile check: torch $TORCH_VERSION, $("$CUDA_HOME/bin/nvcc" --version | tail -n 1), arch $TORCH_CUDA_ARCH_LIST"

mkdir -p "$OUT"
start=$SECONDS
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != sys.argv[1] or torch.version.cuda is None)" "$TORCH_VERSION" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi
# Build tools, and what `import structinf` needs besides torch.
# No pip configuration: this kind of machine caps torch below the newest
# release in a global constraint file; the venv takes the pinned version from
# the package index as it is.
PIP_CONFIG_FILE=/dev/null "$VENV/bin/python" -m pip install -q "$TORCH_CUDA_PIN" "setuptools>=64" wheel ninja \
  numpy tqdm safetensors > "$OUT/pip.log" 2>&1 \
  || { tail -n 30 "$OUT/pip.log" >&2; echo "cuda compile check: pip install FAILED" >&2; exit 1; }
echo "cuda compile check: venv ready in $((SECONDS - start)) s"

start=$SECONDS
"$VENV/bin/python" setup.py -q build_ext --build-temp "$OUT/temp" --build-lib "$OUT/lib" \
  > "$OUT.log" 2>&1 || { tail -n 60 "$OUT.log" >&2; echo "cuda compile check: build FAILED (log: $OUT.log)" >&2; exit 1; }
echo "cuda compile check: extension built in $((SECONDS - start)) s"
python3 csrc/linkcheck.py "$OUT"/lib/structinf/_C*.so

# A copy of the package with the CUDA build's module in place of the checkout's.
package_copy "$OUT"

# -P: the checkout (the current directory) is not put before PYTHONPATH.
STRUCTINF_CHECK_PKG="$OUT/pkg" PYTHONPATH="$OUT/pkg" "$VENV/bin/python" -P - <<'EOF'
import os
import sys
import traceback

import torch

import structinf.ops as ops
from structinf.reference import log_partition_ref, viterbi_ref

CUDA_OPS = ["viterbi", "crf_forward_backward", "crf_forward_backward_backward",
            "relaxed_energy_step_", "relaxed_energy", "relaxed_energy_and_grad",
            "relaxed_energy_backward"]
g = torch.Generator().manual_seed(0)
B, T, L = 3, 5, 4
ARGS = (torch.randn(B, T, L, generator=g, dtype=torch.float64),
        torch.randn(L, L, generator=g, dtype=torch.float64),
        torch.randn(L, generator=g, dtype=torch.float64),
        torch.randn(L, generator=g, dtype=torch.float64),
        torch.tensor([5, 1, 3]))


def imported_from_the_cuda_build():
    assert ops.HAS_EXTENSION, "structinf._C (CUDA build) did not import"
    expected = os.path.abspath(os.path.join(os.environ["STRUCTINF_CHECK_PKG"], "structinf"))
    assert os.path.dirname(os.path.abspath(ops._C.__file__)) == expected, ops._C.__file__


def reports_cuda_built():
    assert torch.ops.structinf._cuda_built() is True


def cuda_and_cpu_kernels_registered():
    for name in CUDA_OPS:
        for key in ("CPU", "CUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"structinf::{name}", key), (
                f"structinf::{name} has no {key} kernel")
    # The native relaxed_energy kernels, not structinf.ops' ATen composite.
    assert ops.RELAXED_ENERGY_CUDA_NATIVE, "relaxed_energy on CUDA is the composite"


def cpu_kernels_run():
    paths, scores = ops.viterbi(*ARGS)
    ref_paths, ref_scores = viterbi_ref(*ARGS)
    assert torch.equal(paths, ref_paths) and torch.allclose(scores, ref_scores)
    assert torch.allclose(ops.crf_forward_backward(*ARGS), log_partition_ref(*ARGS))


def cpu_error_paths_of_this_library():
    """The CUDA build's message path, through its CPU ops: one line, numbers and all."""
    bad = ARGS[:4] + (torch.tensor([5, 0, 1000]),)
    want = "argument 'lengths' must satisfy 1 <= lengths[b] <= T = 5, got values in [0, 1000]"
    for call in (lambda: ops.viterbi(*bad), lambda: ops.crf_forward_backward(*bad),
                 lambda: ops.relaxed_energy(ARGS[0], *bad)):
        try:
            call()
        except ValueError as exc:
            assert want in str(exc) and "\n" not in str(exc), str(exc)
        else:
            raise AssertionError("no ValueError for lengths out of range")
    assert torch.ops.structinf._cuda_mapping() == "auto"
    with ops.cuda_mapping("global", 8192):
        assert torch.ops.structinf._cuda_mapping() == "global"
    assert torch.ops.structinf._cuda_mapping() == "auto"


def cuda_call_without_a_driver_fails_clearly():
    if torch.cuda.is_available():
        return "skipped: a GPU is here (see cuda_ops_match_cpu)"
    # The kernels are registered, but no CUDA tensor can be made to call them
    # with: torch says why.
    try:
        torch.zeros(1, device="cuda")
    except (RuntimeError, AssertionError) as exc:
        return str(exc).splitlines()[0]
    raise AssertionError("a CUDA tensor was made although torch.cuda.is_available() is False")


def cuda_ops_match_cpu():
    if not torch.cuda.is_available():
        return "skipped: no GPU"
    dev = [x.cuda() for x in ARGS]
    p_cpu, s_cpu = ops.viterbi(*ARGS)
    p_gpu, s_gpu = ops.viterbi(*dev)
    assert torch.equal(p_gpu.cpu(), p_cpu) and torch.allclose(s_gpu.cpu(), s_cpu)
    assert torch.allclose(ops.crf_forward_backward(*dev).cpu(), ops.crf_forward_backward(*ARGS))
    z, v = torch.randn(B, T, L, dtype=torch.float64), torch.zeros(B, T, L, dtype=torch.float64)
    zg, vg = z.cuda(), v.cuda()
    lr = torch.full((B,), 0.1, dtype=torch.float64)
    en = torch.ops.structinf.relaxed_energy_step_(z, v, *ARGS, lr, 0.9, 3)
    en_g = torch.ops.structinf.relaxed_energy_step_(zg, vg, *dev, lr.cuda(), 0.9, 3)
    assert torch.allclose(en_g.cpu(), en) and torch.allclose(zg.cpu(), z)
    for probs in (False, True):
        x = z.softmax(-1) if probs else z
        want = torch.ops.structinf.relaxed_energy_and_grad(x, *ARGS, probs)
        got = torch.ops.structinf.relaxed_energy_and_grad(x.cuda(), *dev, probs)
        assert all(torch.allclose(a.cpu(), b) for a, b in zip(got, want))
        ge = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        want_b = torch.ops.structinf.relaxed_energy_backward(ge, *want[1:], ARGS[4], [True] * 5)
        got_b = torch.ops.structinf.relaxed_energy_backward(ge.cuda(), *got[1:], dev[4],
                                                            [True] * 5)
        assert all(torch.allclose(a.cpu(), b) for a, b in zip(got_b, want_b))
    return torch.cuda.get_device_name()


passed = failed = skipped = 0
for check in (imported_from_the_cuda_build, reports_cuda_built, cuda_and_cpu_kernels_registered,
              cpu_kernels_run, cpu_error_paths_of_this_library,
              cuda_call_without_a_driver_fails_clearly, cuda_ops_match_cpu):
    try:
        note = check()
    except Exception:
        failed += 1
        print(f"cuda compile check: {check.__name__} FAILED")
        traceback.print_exc()
    else:
        if note and note.startswith("skipped"):
            skipped += 1
        else:
            passed += 1
        print(f"cuda compile check: {check.__name__} ok" + (f" ({note})" if note else ""))
print(f"cuda compile check: torch {torch.__version__}, CUDA {torch.version.cuda}")
print(f"cuda-compile-check: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
EOF
