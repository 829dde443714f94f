"""Build script: compiles the Cython kernels in minitbt/_core.pyx.

The extension is optional. When no C compiler is available the build prints a
warning and minitbt runs on its pure-NumPy reference kernels instead.
The kernels' AVX2 and AVX-512 paths are compiled function by function with their own target
attributes and chosen at run time (minitbt/_dispatch.h), so one build runs on any x86-64 and
no -march=native is used. MINITBT_PORTABLE=1 builds the portable C paths alone (TBT_PORTABLE).
OpenMP (the kernels' `threads` argument) is used when the compiler accepts -fopenmp;
set MINITBT_NO_OPENMP=1 to build without it (threads then always run as 1).
"""
import glob
import os
import sys
import tempfile

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _native_flags():
    """-O3 everywhere, for the baseline CPU of the platform (no -march=native: the SIMD paths
    carry their own target attributes and are picked at run time, minitbt/_dispatch.h).
    -fwrapv: int32 sums wrap, so a kernel whose exact result fits in int32 (the bound the Python
    side enforces, minitbt/kernels/_checks.py) is exact even when a partial sum overflows.
    -ffp-contract=off: every float operation is rounded on its own, as in NumPy; GCC would
    otherwise fuse a * b + c into one FMA (one rounding), and the float kernels that are
    bit-exact against their NumPy reference (the binary-coding LUT kernel) would not be."""
    if sys.platform == "win32":
        return ["/O2"]
    flags = ["-O3", "-fno-strict-aliasing", "-fwrapv", "-ffp-contract=off"]
    if os.environ.get("MINITBT_PORTABLE", "0") == "1":
        flags.append("-DTBT_PORTABLE")               # the portable C paths alone
    return flags


def _openmp_flags(compiler):
    """["-fopenmp"] if this compiler can build and link an OpenMP program, else []."""
    if sys.platform == "win32" or os.environ.get("MINITBT_NO_OPENMP", "0") == "1":
        return []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, os.path.join(tmp, "omp_probe"), extra_postargs=["-fopenmp"])
        except Exception:  # e.g. Apple clang without libomp
            print("NOTE: the compiler has no OpenMP; minitbt kernels will run on one thread.")
            return []
    return ["-fopenmp"]


class OptionalBuildExt(build_ext):
    """Build the extension if possible; fall back to NumPy kernels if not."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no Cython, ...
            print(f"WARNING: minitbt._core was not built ({exc}); NumPy reference kernels will be used.")

    def build_extension(self, ext):
        try:
            omp = _openmp_flags(self.compiler)
            ext.extra_compile_args = list(ext.extra_compile_args or []) + omp
            ext.extra_link_args = list(ext.extra_link_args or []) + omp
            super().build_extension(ext)
        except Exception as exc:
            print(f"WARNING: minitbt._core was not built ({exc}); NumPy reference kernels will be used.")


def _extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("WARNING: Cython is missing; minitbt._core will not be built.")
        return []
    ext = Extension(
        "minitbt._core",
        ["minitbt/_core.pyx"],
        include_dirs=[np.get_include(), "minitbt"],
        depends=sorted(glob.glob("minitbt/_*.h")),      # the kernel headers
        extra_compile_args=_native_flags(),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    # the compiled decoder (minitbt/_decoder.h): a packed Transformer on the same kernels
    dec = Extension(
        "minitbt._decoder",
        ["minitbt/_decoder.pyx"],
        include_dirs=[np.get_include(), "minitbt"],
        depends=sorted(glob.glob("minitbt/_*.h")),
        extra_compile_args=_native_flags(),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    return cythonize([ext, dec], compiler_directives={"language_level": "3"}, quiet=True)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
