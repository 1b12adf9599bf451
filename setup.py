"""Build of structinf's compiled kernels.

`pip install --no-build-isolation -e .` compiles the CPU extension
``structinf._C`` against the torch already installed (no build isolation, so
the extension matches that torch exactly). The CPU kernels in
csrc/kernels/cpu are torch-free and compiled once per instruction set
(baseline and AVX2+FMA); the best one the CPU supports is picked at run time.
"""

import os
import sys

from setuptools import setup

try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
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
    "csrc/bindings/checks.cpp",
    "csrc/bindings/ops_cpu.cpp",
    "csrc/bindings/registration.cpp",
]


def openmp_flags():
    # at::parallel_for runs its OpenMP region inline in our code: without
    # -fopenmp it would silently run on one thread.
    if sys.platform == "darwin":
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


def cpu_extension():
    omp_compile, omp_link = openmp_flags()
    return CppExtension(
        name="structinf._C",
        sources=CPU_SOURCES,
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_compile_args=["-O3", "-fno-math-errno", *omp_compile],
        extra_link_args=omp_link,
    )


setup(
    ext_modules=[cpu_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
