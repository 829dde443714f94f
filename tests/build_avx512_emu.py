"""Developer build, not part of the normal build or CI: minitbt's kernels with their AVX2 and
AVX-512 paths compiled against SIMDe (https://github.com/simd-everywhere/simde), a header
library that implements every x86 intrinsic in plain C. The AVX-512 paths then run, slowly,
on a CPU without AVX-512, so that their bit-exactness tests run anywhere.

    apt-get install libsimde-dev             # or any SIMDe >= 0.7 on the include path
    python tests/build_avx512_emu.py         # -> build/avx512-emu/_core_emu*.so
    python -m pytest tests/test_kernels.py   # now also runs every kernel on "avx512-emu"

The module is minitbt/_core.pyx built as `_core_emu` with TBT_EMULATE_SIMD defined
(minitbt/_common.h): the same C, every intrinsic from SIMDe, every path reported available.
It checks the logic of the AVX-512 code (lanes, masks, tails, offsets), not the compiler's
code for a real AVX-512 CPU; run the tests on such a CPU for that.
"""
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "build", "avx512-emu")


def main():
    import numpy as np
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    os.makedirs(os.path.join(OUT, "src"), exist_ok=True)
    src = os.path.join(OUT, "src", "_core_emu.pyx")
    shutil.copyfile(os.path.join(ROOT, "minitbt", "_core.pyx"), src)
    ext = Extension("_core_emu", [src],
                    include_dirs=[np.get_include(), os.path.join(ROOT, "minitbt")],
                    define_macros=[("TBT_EMULATE_SIMD", "1"),
                                   ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                    extra_compile_args=["-O2", "-fno-strict-aliasing", "-fwrapv",
                                        "-ffp-contract=off", "-Wno-psabi"])
    dist = Distribution({"ext_modules": cythonize([ext], language_level=3, quiet=True,
                                                  build_dir=os.path.join(OUT, "src"))})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib, cmd.build_temp = OUT, os.path.join(OUT, "tmp")
    dist.run_command("build_ext")
    print(f"built {cmd.get_ext_fullpath('_core_emu')}")


def load():
    """The emulated module, or None if it was not built (tests/test_kernels.py)."""
    import glob
    import importlib.util
    found = glob.glob(os.path.join(OUT, "_core_emu*.so")) + glob.glob(os.path.join(OUT, "_core_emu*.pyd"))
    if not found:
        return None
    spec = importlib.util.spec_from_file_location("_core_emu", found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main())
