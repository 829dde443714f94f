"""minitbt's quantizers translated to PyTorch: the same equations, the same pseudo-gradients.

    base.py        the tie rules, the LSQ gradient rules, and Quantizer (the base class of every translation)
    weight.py      TBTTernaryWeight, TBTBinaryWeight, TWNWeight, BWNWeight, AbsMeanWeight, AbsMaxWeight
    activation.py  ElasticQuantizer, BiTElasticBinary, MinMaxQuantizer, SymmetricA8, PerTokenAbsMax

Each class is a translation of the minitbt class of the same name (minitbt/quant/), written from
the equations in its docstring. ``TRANSLATIONS`` maps each minitbt class to its translation;
``translate(q)`` converts one quantizer, with its state, and raises NotImplementedError for a class
(or an option) that has none.
"""
from __future__ import annotations

import numpy as np

from minitbt.tensor import Tensor
from minitbt.torch.quant.activation import (BiTElasticBinary, ElasticQuantizer, LearnedScale, MinMaxQuantizer,
                                            PerTokenAbsMax, SymmetricA8)
from minitbt.torch.quant.base import Quantizer
from minitbt.torch.quant.weight import (AbsMaxWeight, AbsMeanWeight, BWNWeight, TBTBinaryWeight, TBTTernaryWeight,
                                        TWNWeight, WeightQuantizer)

TRANSLATIONS = {cls.minitbt_class: cls for cls in (
    TBTTernaryWeight, TBTBinaryWeight, TWNWeight, BWNWeight, AbsMeanWeight, AbsMaxWeight,
    ElasticQuantizer, BiTElasticBinary, MinMaxQuantizer, SymmetricA8, PerTokenAbsMax)}

# instance attributes that are state or plumbing, not options
_NOT_OPTIONS = {"training", "_buffer_names", "scale", "offset", "initialized"}


def translate(q):
    """The PyTorch translation of the minitbt quantizer ``q`` (None stays None), with its state.

    Raises NotImplementedError for a class without a translation (the exact class: a subclass is
    another quantizer) and for an option the translation does not implement: the minitbt quantizer
    rebuilt from the translated options must equal ``q`` attribute for attribute."""
    if q is None:
        return None
    cls = TRANSLATIONS.get(type(q))
    if cls is None:
        names = ", ".join(sorted(c.__name__ for c in TRANSLATIONS))
        raise NotImplementedError(f"{type(q).__name__} ({q.describe()}) has no PyTorch translation in "
                                  f"minitbt.torch; translated: {names}")
    tq = cls.from_minitbt(q)
    rebuilt = tq.to_minitbt()
    for name in sorted((set(vars(q)) | set(vars(rebuilt))) - _NOT_OPTIONS):
        mine, theirs = vars(q).get(name, "<absent>"), vars(rebuilt).get(name, "<absent>")
        if isinstance(mine, np.ndarray) or (callable(mine) and callable(theirs)):
            continue
        if type(mine) is not type(theirs) or (not isinstance(mine, Tensor) and mine != theirs):
            raise NotImplementedError(f"{type(q).__name__}: option {name}={mine!r} has no PyTorch translation "
                                      f"in minitbt.torch (translated options: {', '.join(cls.OPTIONS)})")
    if getattr(q, "scale", None) is not None and q.scale.requires_grad != tq.scale.requires_grad:
        raise NotImplementedError(f"{type(q).__name__}: learn_scale={q.scale.requires_grad} not translated")
    return tq


__all__ = ["Quantizer", "WeightQuantizer", "LearnedScale", "TBTTernaryWeight", "TBTBinaryWeight", "TWNWeight",
           "BWNWeight", "AbsMeanWeight", "AbsMaxWeight", "ElasticQuantizer", "BiTElasticBinary", "MinMaxQuantizer",
           "SymmetricA8", "PerTokenAbsMax", "TRANSLATIONS", "translate"]
