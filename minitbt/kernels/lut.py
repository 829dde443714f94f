"""k-bit binary-coding weights x float32 activations by table look-up (BiQGEMM / T-MAC).

Binary-coding quantization (BCQ; Chung et al., Findings of EMNLP 2020) writes each weight row
as k scaled sign vectors (``BinaryCodingWeight.codes()``, a PlaneCodes):

    W_n = sum_{i<k} a_{i,n} b_{i,n},   b_{i,n} in {-1,+1}^K,   so   y_{m,n} = sum_i a_{i,n} (b_{i,n} . x_m)

A sign dot product b . x only adds and subtracts inputs. Cut K into J = ceil(K/4) groups of
g = 4 and tabulate, once per activation row, the 16 signed sums of each group:

    T_j[p] = sum_{t<4} (-1)^{bit t of p} x_{4j+t},    p = sum_t 2^t [b_{4j+t} = -1]  (sign bit 1 = -1)

then b . x = sum_j T_j[p_j(b)]: one look-up and one addition per 4 weights and plane, no
multiplication (BiQGEMM, Jeon et al., SC 2020; T-MAC, Wei et al., EuroSys 2025). The table
costs 16 entries per 4 inputs, paid once per activation row and shared by all N k rows of
weights. Only half of it is stored (T-MAC's mirror): T_j[p] = -T_j[15 - p], so the 8 entries
with bit 3 clear, H_j, hold all 16. A pattern is stored as its code c = p ^ (7 (p >> 3)):
T_j[p] = -H_j[c & 7] if c & 8, else H_j[c & 7].

Exactness: x is float32 and so are the sums. "Bit-exact" means that the compiled kernel and the
reference below perform the same float32 operations in the same order (docs/kernels.md
section 10), so their outputs are identical bit for bit; both differ from a float64 matmul by
float32 rounding only. The scales multiply outside the table sums, k products per output.

Layout (``prepare_bcq_lut``): uint32 words (ceil(N/8), k, Wd, 8), Wd = ceil(J/8): 8 output
rows form a row block, 8 groups (32 inputs) a word, nibble b of the word of (row block rb,
plane i, word w, lane l) is the code of group 8w + b for row 8rb + l. One 32-byte load gives
8 rows x 8 groups, and an AVX2 vpermps looks up 8 rows at once (minitbt/_lut.h).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minitbt import kernels                     # kernels._core: the one switch, read at call time
from minitbt.kernels._checks import _check_finite, _check_prepared, _check_threads

G = 4                 # inputs per group (TBT_LUT_G in _lut.h): tables of 2^4 sums, 8 stored
_ROWS = 8             # output rows per row block (AVX2 lanes)
_GROUPS = 8           # groups per 32-bit word (8 nibbles)


@dataclass(frozen=True, eq=False)
class BinaryCodingLUTWeights:
    """k-bit binary-coding weights (k, N, K) prepared for gemm_bcq_lut.

    ``lut``: (ceil(N/8), k, Wd, 8) uint32, the 4-bit codes c of every group (module docstring);
    ``scale``: (k, 8 ceil(N/8)) float32, a_{i,n}, 0 on the padding rows. Padding groups and
    rows have code 0 (all signs +1). k bits per weight, plus the scales.
    """
    lut: np.ndarray
    scale: np.ndarray
    N: int
    K: int
    k: int

    @property
    def shape(self):
        return (self.k, self.N, self.K)

    def patterns(self) -> np.ndarray:
        """The sign patterns p (k, N, J) in 0..15 (bit t set = weight 4j + t is -1), decoded."""
        nibbles = (self.lut[..., None] >> (4 * np.arange(_GROUPS, dtype=np.uint32))) & 15  # [rb, i, w, l, b]
        nb, _, wd, _ = self.lut.shape
        c = nibbles.transpose(1, 0, 3, 2, 4).reshape(self.k, _ROWS * nb, _GROUPS * wd)  # [i, n, j]
        p = c ^ (7 * (c >> 3))                                        # the code is its own inverse
        return p[:, :self.N, :-(-self.K // G)].astype(np.uint8)

    def codes(self) -> np.ndarray:
        """The (k, N, K) int8 sign codes back, in {-1, +1}."""
        p = self.patterns()
        bits = (p[..., None] >> np.arange(G, dtype=np.uint8)) & 1     # (k, N, J, 4)
        neg = bits.reshape(self.k, self.N, G * p.shape[2])[..., :self.K]
        return (1 - 2 * neg.astype(np.int8)).astype(np.int8)

    def scales(self) -> np.ndarray:
        """The (k, N) float32 scales back."""
        return self.scale[:, :self.N]


def prepare_bcq_lut(codes, scale) -> BinaryCodingLUTWeights:
    """Prepare binary-coding weights for gemm_bcq_lut (once, outside the timing).

    codes: (k, N, K) integers in {-1, +1} (PlaneCodes.codes); scale: (k, N) or (k, N, 1), finite
    (PlaneCodes.scale), stored as float32.
    """
    c = np.asarray(codes)
    if c.ndim != 3:
        raise ValueError(f"codes must be 3-D (k, N, K), got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"codes must hold integers in {{-1, +1}}, got dtype {c.dtype}")
    k, N, K = c.shape
    if k < 1 or K < 1:
        raise ValueError(f"codes must have k >= 1 planes and K >= 1 columns, got shape {c.shape}")
    if c.size and not np.all((c == 1) | (c == -1)):
        raise ValueError("codes must be -1 or +1 (binary coding has no 0)")
    a = np.asarray(scale)
    if a.shape not in ((k, N), (k, N, 1)):
        raise ValueError(f"scale must have shape (k, N) = {(k, N)} or (k, N, 1), got {a.shape}")
    if a.dtype.kind != "f":
        raise TypeError(f"scale must be a float array, got dtype {a.dtype}")
    _check_finite("scale", a)
    J = -(-K // G)
    Wd, Nb = -(-J // _GROUPS), -(-N // _ROWS)
    Np = _ROWS * Nb
    neg = np.zeros((k, Np, G * _GROUPS * Wd), dtype=np.uint8)     # sign bits, 1 = -1, padding 0
    neg[:, :N, :K] = c < 0
    p = (neg.reshape(k, Np, _GROUPS * Wd, G) << np.arange(G, dtype=np.uint8)).sum(-1, dtype=np.uint8)
    code = (p ^ (7 * (p >> 3))).astype(np.uint32)                 # mirror: bit 3 = negate, low 3 = index
    words = (code.reshape(k, Np, Wd, _GROUPS) << (4 * np.arange(_GROUPS, dtype=np.uint32))
             ).sum(-1, dtype=np.uint32)                           # (k, Np, Wd)
    lut = words.reshape(k, Nb, _ROWS, Wd).transpose(1, 0, 3, 2)   # [rb, i, w, lane]
    scale_p = np.zeros((k, Np), dtype=np.float32)
    scale_p[:, :N] = a.reshape(k, N)
    return BinaryCodingLUTWeights(np.ascontiguousarray(lut), scale_p, N, K, k)


def _half_tables(x: np.ndarray) -> np.ndarray:
    """H (M, J, 8) float32: H_j[q] = ((s0 x_{4j} + s1 x_{4j+1}) + s2 x_{4j+2}) + x_{4j+3},
    s_t = -1 where bit t of q is set; x padded with zeros to 4J. (-v is exact: a negation.)"""
    M, K = x.shape
    J = -(-K // G)
    xp = np.zeros((M, G * J), dtype=np.float32)
    xp[:, :K] = x
    xg = xp.reshape(M, J, G, 1)                                   # (M, J, 4, 1)
    q = np.arange(8)
    t = [np.where(((q >> b) & 1) == 1, -xg[:, :, b], xg[:, :, b]) for b in range(3)]  # (M, J, 8) each
    return ((t[0] + t[1]) + t[2]) + xg[:, :, 3]                   # float32 at every step


def gemm_bcq_lut_ref(x: np.ndarray, weights: BinaryCodingLUTWeights) -> np.ndarray:
    """Binary-coding weights x float32 activations by table look-up: the specification.

        H_j[q]     = ((s0 x_{4j} + s1 x_{4j+1}) + s2 x_{4j+2}) + x_{4j+3}     (half table, q < 8)
        T_j[p]     = H_j[p] for p < 8,   -H_j[15 - p] for p >= 8              (mirror)
        s_{m,i,n}  = ((0 + T_0[p_{i,n,0}]) + T_1[p_{i,n,1}]) + ... + T_{J-1}[p_{i,n,J-1}]
        y_{m,n}    = ((0 + a_{0,n} s_{m,0,n}) + a_{1,n} s_{m,1,n}) + ... + a_{k-1,n} s_{m,k-1,n}

    every operation in float32 and in this order (the sums over j and i left to right, each
    product a s rounded before it is added), which is what the compiled kernel does, so the two
    agree bit for bit. Mathematically y_{m,n} = sum_i a_{i,n} (b_{i,n} . x_m) = (x W^T)_{m,n}.
    (BCQ: Chung et al. 2020; table look-up: BiQGEMM, Jeon et al. 2020; mirror: T-MAC, Wei et al.)
    x must be finite (docs/kernels.md, "Non-finite input").
    """
    _check_prepared(x, weights, BinaryCodingLUTWeights, np.float32, "prepare_bcq_lut")
    M, N, k = x.shape[0], weights.N, weights.k
    H = _half_tables(x)                                           # (M, J, 8)
    T = np.concatenate([H, -H[..., ::-1]], axis=-1)               # (M, J, 16): T[8 + r] = -H[7 - r]
    p = weights.patterns()                                        # (k, N, J)
    s = np.zeros((M, k, N), dtype=np.float32)
    for j in range(p.shape[2]):                                   # groups in order
        s += T[:, j][:, p[:, :, j]]                               # (M, k, N) look-ups
    y = np.zeros((M, N), dtype=np.float32)
    for i in range(k):                                            # planes in order
        y += weights.scales()[i] * s[:, i, :]                     # product rounded, then added
    return y


def gemm_bcq_lut(x: np.ndarray, weights: BinaryCodingLUTWeights, *, threads: int = 1) -> np.ndarray:
    """float32 activations (M, K) x prepared binary-coding weights -> (M, N) float32.

    y = x W^T with W_n = sum_i a_{i,n} b_{i,n}, by table look-ups (see gemm_bcq_lut_ref, whose
    float32 operations it performs in the same order: the results are identical). M = 0 and
    N = 0 give an empty result; x must be finite (NaN, inf and -inf are refused with a
    ValueError, docs/kernels.md, "Non-finite input").
    """
    _check_prepared(x, weights, BinaryCodingLUTWeights, np.float32, "prepare_bcq_lut")
    threads = _check_threads(threads)
    if kernels._core is None:
        return gemm_bcq_lut_ref(x, weights)
    out = np.empty((x.shape[0], weights.N), dtype=np.float32)
    kernels._core.bcq_lut_f32(x, weights.lut, weights.scale, weights.N, out, threads)
    return out
