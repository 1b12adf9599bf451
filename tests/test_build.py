"""The built extension uses the process's C++ runtime (csrc/linkcheck.py), and the
check that says so tells a private copy of libstdc++ from the shared one.

A structinf._C linked against the static libstdc++ formats numbers in error
messages through a second set of locale facets: here the numbers go missing,
on an H200 build (g++ 13 headers, torch 2.11) the interpreter crashed with
SIGSEGV on the first bad length. These tests need binutils and g++ only.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess

import pytest
import torch

import structinf.ops as ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINUTILS = shutil.which("nm") and shutil.which("readelf")
needs_binutils = pytest.mark.skipif(not BINUTILS, reason="nm / readelf (binutils) not found")


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


linkcheck = load(os.path.join(ROOT, "csrc", "linkcheck.py"), "structinf_linkcheck")

FORMAT_SRC = r"""
#include <cstring>
#include <sstream>
#include <string>
extern "C" int format_long(long v, char* out, int n) {
  std::ostringstream os;
  os << "T = " << v << ".";
  const std::string s = os.str();
  std::strncpy(out, s.c_str(), n);
  return static_cast<int>(s.size());
}
"""


@needs_binutils
def test_installed_extension_uses_the_shared_cxx_runtime():
    path = ops._C.__file__
    assert linkcheck.problems(path) == [], linkcheck.explain(path, linkcheck.problems(path))


def build_tiny(tmp_path, name, *flags):
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not found")
    src = tmp_path / "fmt.cpp"
    src.write_text(FORMAT_SRC)
    out = tmp_path / f"{name}.so"
    subprocess.run([cxx, "-shared", "-fPIC", "-O1", str(src), "-o", str(out), *flags],
                   check=True, capture_output=True, timeout=120)
    return str(out)


def format_with(path, value):
    lib = ctypes.CDLL(path)
    buf = ctypes.create_string_buffer(64)
    lib.format_long(ctypes.c_long(value), buf, 64)
    return buf.value.decode()


@needs_binutils
def test_linkcheck_tells_a_static_runtime_from_the_shared_one(tmp_path):
    shared = build_tiny(tmp_path, "shared")
    static = build_tiny(tmp_path, "static", "-static-libstdc++")
    assert linkcheck.problems(shared) == []
    found = linkcheck.problems(static)
    assert len(found) == 2, found
    assert "does not link the shared C++ runtime" in found[0]
    assert "std::locale::id::_M_id() const" in found[1] or "symbols of the C++ runtime" in found[1]
    # Loaded beside torch's libstdc++ (torch is imported), the shared build
    # formats the number; the private copy's facets do not fit the locale it is
    # handed, and the number is lost (or, with other headers, the process dies).
    assert format_with(shared, 1000) == "T = 1000."


@needs_binutils
def test_setup_pins_the_shared_runtime_even_under_static_flags(tmp_path):
    """setup.py's link input (the compiler's libstdc++.so.6) wins over -static-libstdc++."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    pin = linkcheck.shared_runtime_link_args(["g++"])
    assert len(pin) == 1 and os.path.basename(pin[0]).startswith("libstdc++.so.6"), pin
    pinned = build_tiny(tmp_path, "pinned", "-static-libstdc++", *pin)
    assert linkcheck.problems(pinned) == []
    assert format_with(pinned, 1000) == "T = 1000."


def test_messages_format_numbers_without_the_stream_locale():
    """Numbers in structinf's messages do not go through the global C++ locale."""
    em = torch.randn(2, 3, 4, dtype=torch.float64)
    args = (em, torch.randn(4, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64),
            torch.randn(4, dtype=torch.float64), torch.tensor([3, 1000]))
    with pytest.raises(ValueError, match=r"1 <= lengths\[b\] <= T = 3, got values in \[3, 1000\]"):
        ops.viterbi(*args)
