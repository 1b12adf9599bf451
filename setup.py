"""Build of structinf's compiled kernels.

`pip install --no-build-isolation -e .` compiles the extension
``structinf._C`` against the torch already installed (no build isolation, so
the extension matches that torch exactly). The CPU kernels in
csrc/kernels/cpu are torch-free and compiled once per instruction set
(baseline and AVX2+FMA); the best one the CPU supports is picked at run time.

The CUDA kernels (csrc/kernels/cuda) and their binding are compiled into the
same extension when the installed torch is a CUDA build (``torch.version.cuda``)
and a CUDA toolkit with nvcc is found (``CUDA_HOME``, as torch's
cpp_extension finds it). Whether a GPU is present does not matter: a build
machine without one still builds them. ``torch.ops.structinf._cuda_built()``
says at run time which build it is. Environment:

- ``STRUCTINF_CUDA=0`` builds the CPU kernels only; ``STRUCTINF_CUDA=1``
  requires the CUDA kernels (an error if torch or the toolkit cannot build
  them). Unset: CUDA where possible.
- ``TORCH_CUDA_ARCH_LIST`` (e.g. ``"9.0a"``, ``"8.0;9.0"``) picks the GPU
  architectures, as for any torch extension. Unset: Hopper, sm_90a machine
  code plus compute_90 PTX for later GPUs.
- ``STRUCTINF_ALLOW_PRIVATE_LIBSTDCXX=1`` turns the post-link check into a
  warning: by default the build fails if ``structinf._C`` carries its own copy
  of the C++ runtime (csrc/linkcheck.py says why that breaks it).

Supported torch: 2.11 and newer (CI compiles the CUDA build against 2.11.0 and
the newest, the CPU build against 2.11.0 and 2.13.0).
"""

import importlib.util
import os
import subprocess
import sys

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - build-time guidance only
    sys.exit(
        "structinf builds its kernels against an installed PyTorch: install torch first "
        "(for example `pip install torch==2.13.0`), then "
        "`pip install --no-build-isolation -e .`"
    )

HERE = os.path.dirname(os.path.abspath(__file__))

# Listed, not globbed: a stray file never changes the build.
CPU_SOURCES = [
    "csrc/kernels/cpu/dispatch.cpp",
    "csrc/kernels/cpu/kernels_base.cpp",
    "csrc/kernels/cpu/kernels_avx2.cpp",
    "csrc/bindings/autograd.cpp",
    "csrc/bindings/autograd_viterbi.cpp",
    "csrc/bindings/checks.cpp",
    "csrc/bindings/cuda_info.cpp",
    "csrc/bindings/ops_cpu.cpp",
    "csrc/bindings/registration.cpp",
]

# Added to the above in a CUDA build: the torch-free kernels, one .cu per dtype
# so that they compile in parallel, and their binding (ops_cuda.cpp has no
# device code and is compiled by the host compiler).
CUDA_SOURCES = [
    "csrc/kernels/cuda/kernels_f32.cu",
    "csrc/kernels/cuda/kernels_f64.cu",
    "csrc/bindings/checks_cuda.cu",
    "csrc/bindings/ops_cuda.cpp",
    "csrc/bindings/validation_cuda.cpp",
]

# Hopper machine code (sm_90a also allows wgmma / setmaxnreg) and compute_90
# PTX, which the driver compiles for any later GPU.
DEFAULT_CUDA_ARCH_FLAGS = [
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_90,code=compute_90",
]


def _linkcheck():
    spec = importlib.util.spec_from_file_location("structinf_linkcheck",
                                                  os.path.join(HERE, "csrc", "linkcheck.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StructinfBuildExt(BuildExtension):
    """torch's build, then the check that the library uses the shared C++ runtime."""

    def build_extension(self, ext):
        super().build_extension(ext)
        if not sys.platform.startswith("linux"):
            return
        check = _linkcheck()
        path = self.get_ext_fullpath(ext.name)
        found = check.problems(path)
        if found is None:
            print("structinf: readelf / nm not found; the C++ runtime link of "
                  f"{path} was not checked", file=sys.stderr)
        elif found:
            message = check.explain(path, found)
            if os.environ.get("STRUCTINF_ALLOW_PRIVATE_LIBSTDCXX") == "1":
                print(f"structinf: WARNING: {message}", file=sys.stderr)
            else:
                sys.exit(f"structinf: {message} (STRUCTINF_ALLOW_PRIVATE_LIBSTDCXX=1 builds it "
                         "anyway)")


def openmp_flags():
    # at::parallel_for runs its OpenMP region inline in our code: without
    # -fopenmp it would silently run on one thread.
    if sys.platform == "darwin":
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


def cuda_toolkit_problem():
    """Why the CUDA kernels cannot be built here, or None if they can."""
    if torch.version.cuda is None:
        return (
            f"the installed torch {torch.__version__} is not a CUDA build "
            "(torch.version.cuda is None)"
        )
    if not CUDA_HOME:
        return "no CUDA toolkit found (set CUDA_HOME to the toolkit holding bin/nvcc)"
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc")
    if not os.path.exists(nvcc):
        return f"CUDA_HOME={CUDA_HOME} has no bin/nvcc (set CUDA_HOME to the CUDA toolkit)"
    if not os.path.exists(os.path.join(CUDA_HOME, "include", "cuda_runtime_api.h")):
        return (
            f"CUDA_HOME={CUDA_HOME} has no include/cuda_runtime_api.h "
            "(set CUDA_HOME to the CUDA toolkit, e.g. /usr/local/cuda)"
        )
    return None


def build_cuda():
    """Whether to compile the CUDA kernels in (never decided on torch.cuda.is_available())."""
    choice = os.environ.get("STRUCTINF_CUDA", "").strip()
    if choice not in ("", "0", "1"):
        sys.exit(f"STRUCTINF_CUDA must be 0, 1 or unset, got {choice!r}")
    if choice == "0":
        return False
    problem = cuda_toolkit_problem()
    if choice == "1" and problem:
        sys.exit(f"STRUCTINF_CUDA=1, but the CUDA kernels cannot be built: {problem}")
    if problem:
        print(f"structinf: building without the CUDA kernels: {problem}", file=sys.stderr)
        return False
    return True


def extension():
    omp_compile, omp_link = openmp_flags()
    omp_link = [*omp_link, *_linkcheck().shared_runtime_link_args()]
    cxx_flags = ["-O3", "-fno-math-errno", *omp_compile]
    include_dirs = [os.path.join(HERE, "csrc")]
    if not build_cuda():
        return CppExtension(
            name="structinf._C",
            sources=CPU_SOURCES,
            include_dirs=include_dirs,
            extra_compile_args=cxx_flags,
            extra_link_args=omp_link,
        )
    # With TORCH_CUDA_ARCH_LIST set, torch's build turns it into -gencode flags;
    # without it, torch would target the GPUs it can see (none on a build box).
    arch_flags = [] if os.environ.get("TORCH_CUDA_ARCH_LIST") else DEFAULT_CUDA_ARCH_FLAGS
    nvcc_flags = ["-O3", "-lineinfo", "-DSTRUCTINF_WITH_CUDA=1", *arch_flags]
    print(
        f"structinf: building the CUDA kernels with {os.path.join(CUDA_HOME, 'bin', 'nvcc')} "
        f"for torch {torch.__version__} (CUDA {torch.version.cuda}), arch "
        f"{os.environ.get('TORCH_CUDA_ARCH_LIST') or ' '.join(DEFAULT_CUDA_ARCH_FLAGS)}",
        file=sys.stderr,
    )
    return CUDAExtension(
        name="structinf._C",
        sources=CPU_SOURCES + CUDA_SOURCES,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": [*cxx_flags, "-DSTRUCTINF_WITH_CUDA=1"], "nvcc": nvcc_flags},
        extra_link_args=omp_link,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": StructinfBuildExt.with_options(use_ninja=True)},
)
