"""Module and Parameter: how a model owns its weights.

A Module finds its parameters, buffers and sub-modules by looking at its own attributes
(in the order they were set), so ``self.fc = Linear(4, 8)`` is all it takes to register one.
Buffers are plain arrays that belong in the state dict but are not trained
(sinusoidal position tables, a quantizer's "initialised" flag).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from minitbt.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module (requires_grad=True)."""

    def __init__(self, data, requires_grad: bool = True):
        arr = np.array(data.data if isinstance(data, Tensor) else data, dtype=None, copy=True)
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float32)
        super().__init__(arr, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and model.

    Sub-classes set Parameters, Modules and buffers as attributes in ``__init__`` and
    implement ``forward``; ``module(x)`` calls ``forward(x)``.
    """

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_buffer_names", [])

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- structure ------------------------------------------------------------------
    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """Store an array that is saved in the state dict but not trained."""
        setattr(self, name, value)
        if name not in self._buffer_names:
            self._buffer_names.append(name)

    def children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, child in self.children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix: str = ""):
        seen = set()
        for mod_name, mod in self.named_modules(prefix):
            for name, value in vars(mod).items():
                if isinstance(value, Parameter) and id(value) not in seen:  # tied weights appear once
                    seen.add(id(value))
                    yield (f"{mod_name}.{name}" if mod_name else name), value

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for mod_name, mod in self.named_modules():
            for name in mod._buffer_names:
                yield (f"{mod_name}.{name}" if mod_name else name), getattr(mod, name)

    def num_parameters(self) -> int:
        return sum(p.data.size for p in self.parameters())

    # ---- modes ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # ---- state ----------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Name -> a copy of every parameter and buffer array."""
        state = OrderedDict((n, p.data.copy()) for n, p in self.named_parameters())
        for n, b in self.named_buffers():
            state[n] = np.array(b, copy=True)
        return state

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into this module's parameters and buffers, checking names and shapes.

        Every problem is collected and reported at once; nothing is changed unless all checks pass.
        """
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        expected = {**{n: p.data for n, p in params.items()}, **buffers}
        problems = []
        missing = [n for n in expected if n not in state]
        unexpected = [n for n in state if n not in expected]
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        for n, arr in state.items():
            if n in expected and np.shape(arr) != np.shape(expected[n]):
                problems.append(f"{n}: shape {np.shape(arr)} in the state dict, {np.shape(expected[n])} in the model")
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__} failed:\n  " + "\n  ".join(problems))
        for n, arr in state.items():
            if n in params:
                params[n].data = np.array(arr, dtype=params[n].data.dtype, copy=True)
            elif n in buffers:
                mod_name, _, attr = n.rpartition(".")
                mod = dict(self.named_modules())[mod_name]
                setattr(mod, attr, np.array(arr, dtype=np.asarray(buffers[n]).dtype, copy=True))

    def to_dtype(self, dtype) -> "Module":
        """Cast every parameter (e.g. to float64 for a gradient check)."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
        return self

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self.children():
            sub = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + ("\n)" if len(lines) > 1 else ")")


class ModuleList(Module):
    """A list of modules, registered as children named 0, 1, 2, ..."""

    def __init__(self, modules=()):
        super().__init__()
        object.__setattr__(self, "_n", 0)
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(self._n), module)
        object.__setattr__(self, "_n", self._n + 1)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(self._n)[i]]
        if i < 0:
            i += self._n
        return getattr(self, str(i))

    def __setitem__(self, i, module):
        setattr(self, str(i % self._n), module)

    def __len__(self):
        return self._n

    def __iter__(self):
        return (getattr(self, str(i)) for i in range(self._n))


class Sequential(ModuleList):
    """Modules applied one after another."""

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
