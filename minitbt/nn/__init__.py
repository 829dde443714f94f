"""minitbt.nn: modules, layers, attention and the Seq2Seq Transformer."""
from minitbt.nn.module import Module, ModuleList, Parameter, Sequential
from minitbt.nn.layers import Dropout, Embedding, LayerNorm, Linear
from minitbt.nn.attention import MultiHeadAttention, causal_mask
from minitbt.nn.transformer import (DecoderLayer, EncoderLayer, FeedForward, Seq2SeqTransformer,
                                    TransformerConfig)

__all__ = ["Module", "ModuleList", "Parameter", "Sequential", "Dropout", "Embedding", "LayerNorm", "Linear",
           "MultiHeadAttention", "causal_mask", "DecoderLayer", "EncoderLayer", "FeedForward",
           "Seq2SeqTransformer", "TransformerConfig"]
