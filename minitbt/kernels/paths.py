"""Which compiled path each kernel runs: portable C, AVX2 or AVX-512 (minitbt/_dispatch.h).

The C picks the path once, when ``minitbt._core`` is imported:

    path = min(the best path the CPU has, MINITBT_KERNEL_PATH if set)

``MINITBT_KERNEL_PATH=portable|avx2|avx512`` can only lower it (for tests, and for a student who
wants to see what each instruction set buys). ``info()`` says what runs; ``use_path`` switches
for a block of code. Each path computes the same integers; the float kernels (sign-add, the
binary-coding look-up) add in one order on every path, so they give the same bits too.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from minitbt import kernels                     # kernels._core: the one switch, read at call time

PATHS = ("portable", "avx2", "avx512")

# kernel -> path -> the instruction that does its inner products (docs/kernels.md section 4)
_POPC = {"portable": "popcount of 64-bit words (__builtin_popcountll)",
         "avx2": "vpshufb nibble look-up popcount, 256 bits",
         "avx512": "vpopcntq (AVX-512 VPOPCNTDQ), 512 bits"}
INSTRUCTIONS = {
    "gemm_xnor": _POPC, "gemm_and_pm1": _POPC, "gemm_bitplane": _POPC,
    "gemm_bitplane_pm1": _POPC, "gemm_ternary_ternary": _POPC,
    "gemm_ternary_int8": {"portable": "select and add, one weight at a time",
                          "avx2": "vpmaddubsw (u8 x s8, pairs -> int16)",
                          "avx512": "vpdpbusd (AVX-512 VNNI, 4 u8 x s8 -> int32)"},
    "gemv_ternary_int8": {"portable": "select and add, 2-bit codes",
                          "avx2": "2-bit codes: shift, and, vpmaddubsw",
                          "avx512": "2-bit codes: shift, and, vpdpbusd (VNNI)"},
    "gemm_signadd_f32": {"portable": "table look-up and float adds, one row at a time",
                         "avx2": "vpermps: 8 rows per look-up",
                         "avx512": "vpermps zmm: 16 rows per look-up"},
    "gemm_bcq_lut": {"portable": "table look-up and float adds, one row at a time",
                     "avx2": "vpermps: 8 rows per look-up"},
    "fake_quantize": {"portable": "the NumPy reference (scalar C is no faster)",
                      "avx2": "vroundps and vblendvps, 8 values per step"},
}


def _available(core):
    """The paths this CPU can run in this build, slowest first."""
    return list(core.PATHS[:core.PATHS.index(core.cpu_path()) + 1])


def available_paths() -> list:
    """The compiled paths this CPU can run, slowest first ([] without the extension)."""
    return [] if kernels._core is None else _available(kernels._core)


def kernel_path() -> str:
    """The path the kernels run now: "portable", "avx2", "avx512", or "numpy" (no extension)."""
    return "numpy" if kernels._core is None else kernels._core.kernel_path()


def set_kernel_path(name: str | None = None) -> str:
    """Run the compiled kernels on path ``name`` (None: the best this CPU has) and return the
    path set. A path the CPU lacks is refused with a ValueError."""
    core = kernels._core
    if core is None:
        raise RuntimeError("minitbt._core is not built: the kernels run their NumPy references")
    if name is not None and name not in _available(core):
        raise ValueError(f"kernel path {name!r} is not available here; this CPU and build run "
                         f"{_available(core)}")
    return core.set_kernel_path(name)


@contextmanager
def use_path(name: str):
    """``with use_path("avx2"): ...`` runs the kernels in the block on that path."""
    before = kernel_path()
    set_kernel_path(name)
    try:
        yield name
    finally:
        set_kernel_path(before)


def info() -> dict:
    """What runs where: the CPU's best path, the path in use, and per kernel its path and the
    instruction that does its inner products.

    >>> from minitbt import kernels as kn; kn.info()["kernels"]["gemm_xnor"]
    {'path': 'avx2', 'instruction': 'vpshufb nibble look-up popcount, 256 bits'}
    """
    core = kernels._core
    env = os.environ.get("MINITBT_KERNEL_PATH")
    if core is None:
        return {"extension": False, "path": "numpy", "cpu": None, "compiled": [], "env": env,
                "openmp": False,
                "kernels": {k: {"path": "numpy", "instruction": "NumPy reference"}
                            for k in INSTRUCTIONS}}
    path = core.kernel_path()
    kernels_ = {}
    for k, by_path in INSTRUCTIONS.items():
        p = path if path in by_path else max(by_path, key=PATHS.index)   # bcq: AVX2 at most
        kernels_[k] = {"path": p, "instruction": by_path[p]}
    return {"extension": True, "path": path, "cpu": core.cpu_path(),
            "compiled": list(core.COMPILED_PATHS), "env": env, "openmp": core.HAVE_OPENMP,
            "kernels": kernels_}
