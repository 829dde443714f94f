"""Basic layers: Linear, Embedding, LayerNorm, Dropout."""
import numpy as np

from minitbt import functional as F
from minitbt.nn.module import Module, Parameter


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class Linear(Module):
    """y = x W^T + b,  W: (out_features, in_features) (rows = output features, as in PyTorch).

    Initialised Xavier-uniform (Glorot & Bengio 2010): W ~ U(-r, r), r = sqrt(6 / (in + out)); b = 0.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None):
        super().__init__()
        r = np.sqrt(6.0 / (in_features + out_features))
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_rng(rng).uniform(-r, r, (out_features, in_features)).astype(np.float32))
        self.bias = Parameter(np.zeros(out_features, dtype=np.float32)) if bias else None

    def forward(self, x):                                   # (..., in) -> (..., out)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Row lookup y = W[ids], W: (num_embeddings, dim), initialised N(0, std^2), std = dim^-0.5 by default."""

    def __init__(self, num_embeddings: int, dim: int, std: float = None, rng=None):
        super().__init__()
        std = dim ** -0.5 if std is None else std
        self.num_embeddings, self.dim = num_embeddings, dim
        self.weight = Parameter((_rng(rng).standard_normal((num_embeddings, dim)) * std).astype(np.float32))

    def forward(self, ids):                                 # (...) int -> (..., dim)
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.dim}"


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (Ba et al. 2016)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=np.float32))
        self.bias = Parameter(np.zeros(dim, dtype=np.float32))

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout with probability p, active only in training mode.

    ``rng`` is a numpy Generator, usually shared by the whole model so that a checkpoint
    can save and restore it (exact resume).
    """

    def __init__(self, p: float = 0.1, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = _rng(rng)

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self):
        return f"p={self.p}"
