#!/usr/bin/env python3
"""Checks that a built structinf._C uses the process's C++ runtime, not a copy of its own.

A C++ extension must share one libstdc++ with torch and the interpreter. If it is
linked against the static libstdc++ (``-static-libstdc++`` somewhere in the
compiler's or the environment's flags, or a toolchain whose linker finds only
``libstdc++.a``), it carries a private copy of the stream and locale code: a
second ``std::locale::id`` counter, second facet tables. A number written into
an error message (``c10::str`` -> ``std::ostream::operator<<(long)``) then looks
its ``num_put`` facet up by an index that means something else in the locale it
was given. The result is a message with the numbers missing (g++ 12 here) or a
virtual call into the wrong facet and a SIGSEGV (g++ 13 headers, torch 2.11, on
an H200: the backtrace ends in ``_M_insert<long>`` "from _C.so").

Two signs of such a copy, either one enough:
- the library does not list ``libstdc++.so.6`` (or libc++) among its NEEDED
  entries although it is C++;
- it defines symbols that only the compiled runtime defines: the locale
  machinery, ``ios_base::Init``, the explicit ``ostream::_M_insert<>``
  instantiations, the ``codecvt`` / ``num_put`` virtuals, ``__cxa_throw``.

Used by setup.py after linking (the build fails on such a library) and by
tests/test_build.py on the installed one. Command line:

    python csrc/linkcheck.py structinf/_C*.so

prints what it found and exits 1 on a private runtime copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import List, Optional

# Defined by libstdc++ / libsupc++ themselves, never by code that only includes
# their headers (the extern templates and out-of-line members of the runtime).
RUNTIME_ONLY = [
    re.compile(p) for p in (
        r"^std::locale::id::_M_id\(\) const$",
        r"^std::locale::classic\(\)$",
        r"^std::locale::locale\(\)$",
        r"^std::ios_base::Init::Init\(\)$",
        r"^std::basic_ostream<char, std::char_traits<char> >& "
        r"std::basic_ostream<char, std::char_traits<char> >::_M_insert<\w[\w ]*>\(",
        r"^std::codecvt<[^>]*>::do_\w+\(",
        r"^std::num_put<char, [^>]*> >::_M_insert_int<",
        r"^__cxa_throw$",
        r"^__gxx_personality_v0$",
    )
]
CXX_RUNTIMES = ("libstdc++.so", "libc++.so")


def _run(tool: str, *args: str) -> Optional[str]:
    exe = shutil.which(tool)
    if exe is None:
        return None
    done = subprocess.run([exe, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def needed(path: str) -> Optional[List[str]]:
    """The NEEDED entries of an ELF shared library (None without readelf)."""
    out = _run("readelf", "-d", "-W", path)
    if out is None:
        return None
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def runtime_symbols(path: str) -> Optional[List[str]]:
    """Symbols the library defines that only a C++ runtime defines (None without nm)."""
    out = _run("nm", "-C", "--defined-only", path)
    if out is None:
        return None
    found = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        name = parts[2]
        if any(p.search(name) for p in RUNTIME_ONLY):
            found.append(name)
    return sorted(set(found))


def problems(path: str) -> Optional[List[str]]:
    """What shows a private C++ runtime in `path`: [] if none, None if binutils are missing."""
    deps, syms = needed(path), runtime_symbols(path)
    if deps is None or syms is None:
        return None
    found = []
    if not any(d.startswith(CXX_RUNTIMES) for d in deps):
        found.append(f"it does not link the shared C++ runtime (NEEDED: {', '.join(deps)})")
    if syms:
        shown = "; ".join(syms[:4]) + (f"; and {len(syms) - 4} more" if len(syms) > 4 else "")
        found.append(f"it defines {len(syms)} symbols of the C++ runtime itself ({shown})")
    return found


def shared_runtime_link_args(cxx: Optional[List[str]] = None) -> List[str]:
    """The shared libstdc++ the compiler links by default, as a link input (setup.py).

    Listing libstdc++.so.6 itself among the link inputs makes the linker resolve
    the C++ runtime from it even where -static-libstdc++ is in the flags or the
    toolchain has no libstdc++.so link: a static archive later on the line is
    then asked only for symbols nothing defined. [] off Linux or where the
    compiler names no such file (not GCC's runtime).
    """
    if not sys.platform.startswith("linux"):
        return []
    cxx = cxx or os.environ.get("CXX", "c++").split()
    try:
        out = subprocess.run([*cxx, "-print-file-name=libstdc++.so.6"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return []
    return [os.path.realpath(out)] if os.path.isabs(out) and os.path.exists(out) else []


def explain(path: str, found: List[str]) -> str:
    return (
        f"{path} carries its own copy of the C++ runtime: " + "; ".join(found) + ". It was "
        "linked against the static libstdc++ (look for -static-libstdc++ in CXXFLAGS / LDFLAGS "
        "or the compiler's specs, or a toolchain whose linker finds libstdc++.a but no "
        "libstdc++.so). Beside torch's libstdc++ such a copy corrupts or crashes any number "
        "formatted into a message. Link the shared libstdc++.so.6 (setup.py passes the one "
        "`c++ -print-file-name=libstdc++.so.6` names)."
    )


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[0])
        print("usage: linkcheck.py LIBRARY [LIBRARY ...]")
        return 2
    status = 0
    for path in argv:
        found = problems(path)
        if found is None:
            print(f"{path}: cannot check (readelf / nm from binutils not found)")
            status = max(status, 2)
        elif found:
            print(explain(path, found))
            status = 1
        else:
            print(f"{path}: links the shared C++ runtime ({', '.join(needed(path) or [])})")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
