"""minitbt: ternary and binary transformers for text generation, in NumPy and Cython.

    Tensor, no_grad        minitbt/tensor.py      reverse-mode autodiff on ndarrays
    functional (F)         minitbt/functional/    every op, forward beside backward
    nn                     minitbt/nn/            Module, layers, attention, Seq2SeqTransformer
    optim                  minitbt/optim.py       SGD, Adam, AdamW, schedules, clipping
"""
import importlib

from minitbt.tensor import Tensor, is_grad_enabled, no_grad, tensor
from minitbt import functional
from minitbt import functional as F

_LAZY = ("nn", "optim", "quant", "summary", "kernels", "packed")


def __getattr__(name):
    """``minitbt.nn``, ``minitbt.quant``, ... load on first use, so that ``import minitbt.kernels``
    loads the kernels alone (not the model and its quantizers)."""
    if name in _LAZY:
        return importlib.import_module(f"minitbt.{name}")
    raise AttributeError(f"module 'minitbt' has no attribute {name!r}")

__version__ = "0.1.0"
__all__ = ["Tensor", "tensor", "no_grad", "is_grad_enabled", "functional", "F", "nn", "optim"]
