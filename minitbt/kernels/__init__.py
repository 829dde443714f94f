"""Multiplication-free kernels: the Python face of ``minitbt._core`` and their specification.

Every kernel here comes twice:

* ``<name>_ref`` -- a pure-NumPy reference. It *is* the specification: short, readable,
  with the equation in its docstring (docs/kernels.md section 1).
* ``<name>`` -- the public function. It validates its inputs (dtype, C-contiguity, shapes,
  K, finiteness), then runs the compiled kernel from ``minitbt._core`` if it was built,
  else the reference. Both give the same integers (float kernels: the same sums up to
  rounding, because the order of the additions differs).

One concept per file:

* ``packing.py``  -- the bit layout (value k -> bit k % 64 of word k // 64, padding bits 0)
  and ``pack_bits``, ``pack_signs``, ``pack_ternary``, ``pack_bitplanes``;
* ``popcount.py`` -- the popcount GEMMs (W1A1, two-set binary, k-bit planes, ternary);
* ``int8.py``     -- ternary x int8 (W2A8 / W1A8);
* ``signadd.py``  -- ternary x float32 with additions only;
* ``lut.py``      -- k-bit binary-coding weights x float32 by table look-up (BiQGEMM / T-MAC);
* ``quantize.py`` -- float32 rows -> int8 codes and a scale per row (the input of ``int8.py``), and
  ``fake_quantize``, the training forward of the learned-scale activation quantizers;
* ``paths.py``    -- which compiled path runs (portable C, AVX2, AVX-512): ``info()``, ``use_path``;
* ``_checks.py``  -- the input validation they share.

Scales, offsets (centring) and zero-points stay outside: these kernels compute the
integer (or sign-add) inner products only, as in docs/kernels.md section 1. The exception is
``gemm_bcq_lut``: the k scales of binary-coding weights weight its k sign dot products, so it
applies them (k products per output), in an order its reference fixes (docs/kernels.md section 10).

Bad input gets one clear error, never a silent wrong answer (docs/kernels.md section 9):

* K must match the packed arrays: ceil(K/64) words, zero bits past K, and the K that the
  packers record on what they return (``PackedBits.K``).
* K must keep the result exact in int32: ``|y| <= term * K <= 2^31 - 1``, term = 1
  ({-1,0,1} activations), 2^k - 1 (k bit planes), 128 (int8); see ``_checks._check_int32``.
* Non-finite input, one rule everywhere: wherever float values become integer codes or enter
  a kernel (the activation quantizers' ``codes()``, ``quantize_rows_i8`` behind the min-max
  ones, ``pack_bits``/``pack_signs`` of floats, ``gemm_signadd_f32``,
  ``gemv_ternary_f32``, ``gemm_signadd_f32_ref``, ``gemm_bcq_lut`` and ``gemm_bcq_lut_ref``), a
  NaN, inf or -inf is refused with a ValueError that names the argument and says "non-finite".
  The check is one ``np.isfinite(x).all()`` at the Python boundary; the C never sees such a value.

The switch: ``kernels._core`` below is the compiled module or None, and it is the only one.
Every public function reads it through this package at call time (``kernels._core``, never
a copy taken at import), so setting it to None (the tests' NumPy path:
``monkeypatch.setattr(kernels, "_core", None)``) sends every kernel to its reference.
``MINITBT_NO_EXT=1`` forces the NumPy path from the start; ``HAVE_EXT`` tells which path
was loaded.

The compiled kernels have up to three paths, picked at import from the CPU (portable C, AVX2,
AVX-512 with VPOPCNTDQ and VNNI); ``MINITBT_KERNEL_PATH=portable|avx2|avx512`` lowers the
choice, and ``info()`` says which path and instruction each kernel runs (``paths.py``).
"""
from __future__ import annotations

import os
import warnings

__all__ = [
    "HAVE_EXT", "words", "pack_bits", "unpack_bits", "pack_signs", "pack_ternary",
    "pack_bitplanes", "PackedBits",
    "gemm_xnor", "gemm_and_pm1", "gemm_bitplane", "gemm_bitplane_pm1", "gemm_ternary_ternary",
    "TernaryInt8Weights", "prepare_ternary_int8", "gemm_ternary_int8",
    "TernarySignAddWeights", "prepare_signadd", "gemm_signadd_f32", "gemv_ternary_f32",
    "BinaryCodingLUTWeights", "prepare_bcq_lut", "gemm_bcq_lut", "quantize_rows_i8",
    "gemm_xnor_ref", "gemm_and_pm1_ref", "gemm_bitplane_ref", "gemm_bitplane_pm1_ref",
    "gemm_ternary_ternary_ref", "gemm_ternary_int8_ref", "gemm_signadd_f32_ref", "gemm_bcq_lut_ref",
    "quantize_rows_i8_ref", "fake_quantize", "fake_quantize_ref", "info", "kernel_path", "set_kernel_path", "use_path",
    "available_paths",
]


def _load_core():
    """The compiled module, or None and the reason it is missing."""
    if os.environ.get("MINITBT_NO_EXT", "0") == "1":
        return None, "MINITBT_NO_EXT=1 is set"
    try:
        from minitbt import _core as core
    except ImportError as exc:
        return None, f"minitbt._core could not be imported ({exc})"
    if not hasattr(core, "set_kernel_path"):  # a stale build of an older _core.pyx
        return None, "minitbt._core is out of date (rebuild with `pip install -e .`)"
    return core, ""


_core, _why = _load_core()
HAVE_EXT = _core is not None
if not HAVE_EXT:
    warnings.warn(f"minitbt.kernels: {_why}; using the NumPy reference kernels (correct, slow).",
                  RuntimeWarning, stacklevel=2)
elif os.environ.get("MINITBT_KERNEL_PATH", "") not in ("", "portable", "avx2", "avx512"):
    warnings.warn(f"minitbt.kernels: MINITBT_KERNEL_PATH={os.environ['MINITBT_KERNEL_PATH']!r} is "
                  "not one of portable, avx2, avx512; ignored", RuntimeWarning, stacklevel=2)

# The public API, re-exported from the submodules (which read _core above at call time).
from minitbt.kernels.packing import (  # noqa: E402
    PackedBits, pack_bitplanes, pack_bits, pack_signs, pack_ternary, unpack_bits, words)
from minitbt.kernels.popcount import (  # noqa: E402
    gemm_and_pm1, gemm_and_pm1_ref, gemm_bitplane, gemm_bitplane_pm1, gemm_bitplane_pm1_ref,
    gemm_bitplane_ref, gemm_ternary_ternary, gemm_ternary_ternary_ref, gemm_xnor, gemm_xnor_ref)
from minitbt.kernels.int8 import (  # noqa: E402
    TernaryInt8Weights, gemm_ternary_int8, gemm_ternary_int8_ref, prepare_ternary_int8, unpack_i2)
from minitbt.kernels.signadd import (  # noqa: E402
    TernarySignAddWeights, gemm_signadd_f32, gemm_signadd_f32_ref, gemv_ternary_f32,
    prepare_signadd)
from minitbt.kernels.lut import (  # noqa: E402
    BinaryCodingLUTWeights, gemm_bcq_lut, gemm_bcq_lut_ref, prepare_bcq_lut)
from minitbt.kernels.quantize import (  # noqa: E402
    fake_quantize, fake_quantize_ref, quantize_rows_i8, quantize_rows_i8_ref)
from minitbt.kernels.paths import (  # noqa: E402
    available_paths, info, kernel_path, set_kernel_path, use_path)
