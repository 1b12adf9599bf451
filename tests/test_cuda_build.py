"""The build's CUDA switch: setup.py's STRUCTINF_CUDA handling, and the run-time
report of whether structinf._C has the CUDA kernels (torch.ops.structinf._cuda_built).

The CUDA build itself is compiled and imported by .ci/cuda_compile_check.sh
against the CUDA build of torch in a second venv; here the CPU build is checked
to say what it is, and setup.py to refuse what it cannot build.
"""

import os
import subprocess
import sys

import pytest
import torch

import structinf.ops  # noqa: F401  (registers torch.ops.structinf)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_OPS = ["viterbi", "crf_forward_backward", "crf_forward_backward_backward",
            "relaxed_energy_step_"]
# Native CUDA kernels in a CUDA build; in a CPU build structinf.ops registers
# an ATen composite for CUDA tensors in their place.
RELAXED_ENERGY_OPS = ["relaxed_energy", "relaxed_energy_and_grad", "relaxed_energy_backward"]


def has_kernel(op, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"structinf::{op}", key)


def test_cuda_built_matches_registered_kernels():
    built = torch.ops.structinf._cuda_built()
    assert isinstance(built, bool)
    for op in CUDA_OPS:
        assert has_kernel(op, "CPU")
        assert has_kernel(op, "CUDA") == built, op
    assert structinf.ops.RELAXED_ENERGY_CUDA_NATIVE == built
    for op in RELAXED_ENERGY_OPS:
        assert has_kernel(op, "CPU") and has_kernel(op, "CUDA"), op


def test_cpu_torch_builds_without_cuda():
    if torch.version.cuda is not None:
        pytest.skip("torch is a CUDA build")
    assert not torch.ops.structinf._cuda_built()


def run_setup(env_value):
    env = dict(os.environ, STRUCTINF_CUDA=env_value)
    return subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.version.cuda is not None, reason="torch is a CUDA build")
def test_forced_cuda_with_cpu_torch_is_a_clear_error():
    r = run_setup("1")
    assert r.returncode != 0
    assert "STRUCTINF_CUDA=1" in r.stderr and "not a CUDA build" in r.stderr, r.stderr


def test_bad_switch_value_is_an_error():
    r = run_setup("yes")
    assert r.returncode != 0
    assert "STRUCTINF_CUDA must be 0, 1 or unset" in r.stderr, r.stderr


def test_cuda_off_needs_no_toolkit():
    r = run_setup("0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "structinf"
