"""Build backend: setuptools, compiling the kernels against the torch already installed.

``pip install .`` and ``pip install -e .`` build in an isolated environment by
default. Listing torch as a build requirement would make pip download a torch of
its own choosing (several GB of CUDA wheels) and compile against it, and the
extension would then fail to load beside the torch actually installed. Instead
this backend asks the installing interpreter, outside the isolation, where its
torch lives and puts that folder at the end of the build's import path; nothing
is downloaded. ``--no-build-isolation`` works as before.
"""

from __future__ import annotations

import os
import subprocess
import sys

from setuptools import build_meta as _meta

_INSTALL_HINT = (
    "structinf compiles its kernels against the PyTorch already installed, and none was "
    "found for {python}. Install torch first, then structinf:\n"
    "    pip install torch==2.13.0   # or the build you use; the CPU-only wheel: "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu\n"
    "    pip install -e .\n")


def _installed_torch_path() -> str:
    """The site folder holding the interpreter's own torch, seen without pip's isolation."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    probe = "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(_INSTALL_HINT.format(python=sys.executable))
    return done.stdout.strip().splitlines()[-1]


def _with_installed_torch() -> None:
    try:
        import torch  # noqa: F401  (already importable: no isolation)
        return
    except ImportError:
        pass
    path = _installed_torch_path()
    # Appended, so the isolated build tools keep precedence over the outer ones.
    sys.path.append(path)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), path) if p)


def get_requires_for_build_wheel(config_settings=None):
    _with_installed_torch()
    return _meta.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):
    _with_installed_torch()
    return _meta.get_requires_for_build_editable(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    _with_installed_torch()
    return _meta.get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _with_installed_torch()
    return _meta.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    _with_installed_torch()
    return _meta.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _with_installed_torch()
    return _meta.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _with_installed_torch()
    return _meta.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    _with_installed_torch()
    return _meta.build_sdist(sdist_directory, config_settings)
