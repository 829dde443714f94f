"""minitbt.quant: quantization-aware training of ternary and binary transformers.

    base.py        Quantizer (the protocol: __call__, precision, codes), QCodes
    ste.py         straight-through estimators, Sign, ApproxSign, custom_quantizer
    weight.py      weight quantizers: TBT statistics-based, TWN, BWN, BitNet absmean, k-bit, binary coding, LAT
    activation.py  activation quantizers: TBT elastic, BiT elastic binary, min-max, A8, per-token int8, FQT
    scale.py       learned scales: first-batch initialisation, the clamp, LSQ gradient and its scale
    learned_weight.py  weights with a learned per-row scale: ParetoQ's stretched elastic quant (SEQ)
    freq_embedding.py  frequency-aware binary-coding bits per embedding row (Chung et al. 2020), token counts
    layers.py      QuantLinear, QuantEmbedding
    recipe.py      QuantRecipe, "E-W-A" presets, quantize_model (TBT's placement), describe
    prune.py       FQT's structured FFN pruning from post-ReLU maxima (prune_ffn)

    >>> from minitbt.quant import quantize_model
    >>> student = quantize_model(teacher, "2-2-8")        # a new model; the teacher stays FP
"""
from minitbt.quant.base import PlaneCodes, QCodes, Quantizer
from minitbt.quant.ste import (STE_GRADS, ApproxSign, CustomQuantizer, Sign, approx_sign_grad, clipped_grad,
                               custom_quantizer, identity_grad, ste_grad)
from minitbt.quant.weight import (AbsMaxWeight, AbsMeanWeight, BinaryCodingWeight, BWNWeight, LATWeight,
                                  TBTBinaryWeight, TBTTernaryWeight, TWNWeight, WeightQuantizer)
from minitbt.quant.activation import BiTElasticBinary, ElasticQuantizer, PerChannelQuantizer
from minitbt.quant.minmax import MinMaxQuantizer, PerTokenAbsMax, SymmetricA8
from minitbt.quant.freq_embedding import FrequencyAwareBCQ, count_tokens, task_token_counts
from minitbt.quant.layers import QuantEmbedding, QuantLinear
from minitbt.quant.learned_weight import SEQWeight
from minitbt.quant.recipe import (ABLATIONS, METHODS, PRESETS, QuantRecipe, attach_lat_curvature, describe,
                                  quantize_model, quantizer_parameters, quantizers)
from minitbt.quant.prune import PruneReport, ffn_maxima, prune_ffn

__all__ = [
    "Quantizer", "QCodes", "PlaneCodes",
    "STE_GRADS", "ste_grad", "identity_grad", "clipped_grad", "approx_sign_grad", "Sign", "ApproxSign",
    "CustomQuantizer", "custom_quantizer",
    "WeightQuantizer", "TBTTernaryWeight", "TBTBinaryWeight", "TWNWeight", "BWNWeight", "AbsMeanWeight",
    "AbsMaxWeight", "BinaryCodingWeight", "LATWeight", "SEQWeight", "FrequencyAwareBCQ",
    "count_tokens", "task_token_counts",
    "ElasticQuantizer", "BiTElasticBinary", "MinMaxQuantizer", "SymmetricA8", "PerTokenAbsMax",
    "PerChannelQuantizer",
    "QuantLinear", "QuantEmbedding",
    "QuantRecipe", "quantize_model", "describe", "quantizers", "quantizer_parameters", "attach_lat_curvature",
    "PRESETS", "METHODS", "ABLATIONS",
    "prune_ffn", "ffn_maxima", "PruneReport",
]
