"""The encoder-decoder Transformer (Vaswani et al. 2017), BART-style by default.

    src ids (B, S) --embed*sqrt(d) + pos--> [encoder layer] x N --> memory (B, S, d)
    tgt ids (B, T) --embed*sqrt(d) + pos--> [decoder layer: self-attn (causal), cross-attn, FFN] x N
               --> logits = h E^T  (tied to the shared embedding) or h W_out^T      (B, T, V)

With ``copy=True`` (a pointer-generator, See et al. 2017) the decoder may also copy source
tokens: the output is  log p(w) = log[g softmax(logits)_w + (1 - g) sum_{s: x_s = w} a_s],
with a the last decoder layer's cross-attention (mean over heads) and g = sigmoid(h w_g + b_g)
(F.copy_mixture). The output is then log-probabilities, which every consumer of logits
(cross-entropy, distillation, argmax, beam search) takes unchanged: log_softmax(log p) = log p.

Post-LN (BART, the original Transformer): x = LN(x + sublayer(x)), with a LayerNorm on the
embeddings. Pre-LN (``pre_ln=True``): x = x + sublayer(LN(x)), with a final LayerNorm.
"""
from dataclasses import asdict, dataclass, fields

import numpy as np

from minitbt import functional as F
from minitbt.nn.attention import MultiHeadAttention
from minitbt.nn.layers import Dropout, Embedding, LayerNorm, Linear
from minitbt.nn.module import Module, ModuleList


@dataclass
class TransformerConfig:
    vocab_size: int = 8000
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 1024
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    max_len: int = 256           # longest sequence the position table covers
    dropout: float = 0.1
    activation: str = "relu"     # "relu" (BiT's two-set binarization wants it), "gelu", "gelu_tanh"
    pre_ln: bool = False         # False: post-LN as in BART
    positions: str = "learned"   # "learned" or "sinusoidal"
    tie_embeddings: bool = True  # output projection = shared token embedding
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    seed: int = 0
    ffn_widths: list = None      # per-layer FFN widths, encoder layers then decoder layers; None: d_ff in
    #                              every layer (structured pruning sets it: minitbt.quant.prune)
    copy: bool = False           # pointer-generator output: copy source tokens (See et al. 2017)

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_encoder_layers", "n_decoder_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not all(0 <= i < self.vocab_size for i in (self.pad_id, self.bos_id, self.eos_id)):
            raise ValueError(f"pad/bos/eos ids must be < vocab_size {self.vocab_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.activation not in ("relu", "gelu", "gelu_tanh"):
            raise ValueError(f"unknown activation {self.activation!r}")
        if self.positions not in ("learned", "sinusoidal"):
            raise ValueError(f"unknown positions {self.positions!r}")
        if self.copy and self.n_decoder_layers < 1:
            raise ValueError("copy needs at least one decoder layer (its cross-attention points at the source)")
        if self.ffn_widths is not None:
            n = self.n_encoder_layers + self.n_decoder_layers
            w = self.ffn_widths
            if not isinstance(w, (list, tuple)) or len(w) != n or \
                    not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in w):
                raise ValueError(f"ffn_widths must be None or {n} integers >= 1 (encoder layers, then decoder "
                                 f"layers), got {w!r}")
            self.ffn_widths = [int(v) for v in w]

    def layer_ffn_widths(self):
        """(encoder widths, decoder widths): the hidden width of each layer's FFN."""
        ne = self.n_encoder_layers
        w = self.ffn_widths if self.ffn_widths is not None else [self.d_ff] * (ne + self.n_decoder_layers)
        return list(w[:ne]), list(w[ne:])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TransformerConfig fields: {sorted(unknown)}")
        return cls(**d)


def sinusoidal_table(n: int, d: int) -> np.ndarray:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d))."""
    pos = np.arange(n)[:, None]
    inv = 1.0 / 10000 ** (np.arange(0, d, 2) / d)
    table = np.zeros((n, d), dtype=np.float32)
    table[:, 0::2] = np.sin(pos * inv)
    table[:, 1::2] = np.cos(pos * inv)[:, : d // 2]
    return table


class FeedForward(Module):
    """y = fc2(act(fc1(x))),  fc1: d -> d_ff, fc2: d_ff -> d  (``width``: this layer's d_ff, if pruned)."""

    def __init__(self, cfg: TransformerConfig, rng, width: int = None):
        super().__init__()
        width = cfg.d_ff if width is None else width
        self.fc1 = Linear(cfg.d_model, width, rng=rng)
        self.fc2 = Linear(width, cfg.d_model, rng=rng)
        self.activation = cfg.activation

    def forward(self, x):                                  # (B, T, d) -> (B, T, d)
        h = self.fc1(x)                                    # (B, T, d_ff)
        if self.activation == "relu":
            h = F.relu(h)
        else:
            h = F.gelu(h, "tanh" if self.activation == "gelu_tanh" else "none")
        return self.fc2(h)


class _Sublayer(Module):
    """A residual block around one sublayer, post-LN or pre-LN."""

    def __init__(self, cfg, rng, drop_rng):
        super().__init__()
        self.norm = LayerNorm(cfg.d_model)
        self.dropout = Dropout(cfg.dropout, drop_rng)
        self.pre_ln = cfg.pre_ln

    def residual(self, x, fn):
        if self.pre_ln:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))


class EncoderLayer(Module):
    def __init__(self, cfg, rng, drop_rng, ffn_width=None):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, rng=rng)
        self.attn_block = _Sublayer(cfg, rng, drop_rng)
        self.ffn = FeedForward(cfg, rng, ffn_width)
        self.ffn_block = _Sublayer(cfg, rng, drop_rng)

    def forward(self, x, src_pad):                         # (B, S, d), (B, S) bool
        x = self.attn_block.residual(x, lambda h: self.self_attn(h, key_padding_mask=src_pad))
        return self.ffn_block.residual(x, self.ffn)


class DecoderLayer(Module):
    def __init__(self, cfg, rng, drop_rng, ffn_width=None):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, rng=rng)
        self.self_block = _Sublayer(cfg, rng, drop_rng)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, rng=rng)
        self.cross_block = _Sublayer(cfg, rng, drop_rng)
        self.ffn = FeedForward(cfg, rng, ffn_width)
        self.ffn_block = _Sublayer(cfg, rng, drop_rng)

    def forward(self, x, memory, src_pad, tgt_pad=None, cache=None):
        """x (B, T, d); cache: this layer's dict {"self": {...}, "cross": {...}} when decoding step by step."""
        sc = cache["self"] if cache is not None else None
        cc = cache["cross"] if cache is not None else None
        x = self.self_block.residual(x, lambda h: self.self_attn(h, key_padding_mask=tgt_pad, causal=True, cache=sc))
        x = self.cross_block.residual(x, lambda h: self.cross_attn(h, memory, key_padding_mask=src_pad, cache=cc))
        return self.ffn_block.residual(x, self.ffn)


class Seq2SeqTransformer(Module):
    """``model(src_ids, tgt_ids)`` -> logits (B, T, V); tgt_ids is the decoder input (bos + target[:-1])."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        rng = np.random.default_rng(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed + 1)     # dropout masks; saved in checkpoints
        d = cfg.d_model
        self.embed = Embedding(cfg.vocab_size, d, rng=rng)  # shared by encoder, decoder (and output)
        self.embed_scale = float(np.sqrt(d))
        if cfg.positions == "learned":
            self.pos = Embedding(cfg.max_len, d, std=0.02, rng=rng)
        else:
            self.pos = None
            self.register_buffer("pos_table", sinusoidal_table(cfg.max_len, d))
        self.enc_embed_norm = None if cfg.pre_ln else LayerNorm(d)
        self.dec_embed_norm = None if cfg.pre_ln else LayerNorm(d)
        self.embed_dropout = Dropout(cfg.dropout, self.rng)
        enc_ff, dec_ff = cfg.layer_ffn_widths()
        self.encoder = ModuleList(EncoderLayer(cfg, rng, self.rng, w) for w in enc_ff)
        self.decoder = ModuleList(DecoderLayer(cfg, rng, self.rng, w) for w in dec_ff)
        self.enc_final_norm = LayerNorm(d) if cfg.pre_ln else None
        self.dec_final_norm = LayerNorm(d) if cfg.pre_ln else None
        self.lm_head = None if cfg.tie_embeddings else Linear(d, cfg.vocab_size, bias=False, rng=rng)
        self.copy_gate = None                              # pointer-generator: g = sigmoid(h w_g + b_g)
        if cfg.copy:
            self.copy_gate = Linear(d, 1, rng=rng)
            self.decoder[-1].cross_attn.keep_probs = True  # its attention is the copy distribution
        self.record_states = False   # keep hidden states in self.states (distillation)
        self.states = None

    # ---- pieces -----------------------------------------------------------------------
    def _embed(self, ids, norm, offset=0):
        """Token embedding * sqrt(d) + positions (then LayerNorm in post-LN)."""
        T = ids.shape[1]
        if offset + T > self.config.max_len:
            raise ValueError(f"sequence of length {offset + T} exceeds max_len {self.config.max_len}")
        x = self.embed(ids) * self.embed_scale             # (B, T, d)
        if self.pos is not None:
            x = x + self.pos(np.arange(offset, offset + T))
        else:
            x = x + self.pos_table[offset:offset + T]
        if norm is not None:
            x = norm(x)
        return self.embed_dropout(x)

    def encode(self, src_ids):
        """src_ids (B, S) int -> memory (B, S, d), src_ids (B, S): the decoder takes both (the ids give
        its padding mask, and the tokens a pointer-generator copies)."""
        src_ids = np.asarray(src_ids)
        src_pad = src_ids == self.config.pad_id
        x = self._embed(src_ids, self.enc_embed_norm)
        hidden = [x]
        for layer in self.encoder:
            x = layer(x, src_pad)
            hidden.append(x)
        if self.enc_final_norm is not None:
            x = self.enc_final_norm(x)
        if self.record_states:
            self.states["encoder"] = hidden
        return x, src_ids

    def decode(self, tgt_ids, memory, src_ids, cache=None, offset: int = 0):
        """tgt_ids (B, T) -> logits (B, T, V) (log-probabilities with ``copy``). With a cache (see
        ``init_cache``) only new tokens are fed."""
        tgt_ids = np.asarray(tgt_ids)
        src_ids = np.asarray(src_ids)
        src_pad = src_ids == self.config.pad_id
        tgt_pad = (tgt_ids == self.config.pad_id) if cache is None else None
        if tgt_pad is not None and not tgt_pad.any():
            tgt_pad = None
        x = self._embed(tgt_ids, self.dec_embed_norm, offset)
        hidden = [x]
        for i, layer in enumerate(self.decoder):
            x = layer(x, memory, src_pad, tgt_pad, None if cache is None else cache[i])
            hidden.append(x)
        if self.dec_final_norm is not None:
            x = self.dec_final_norm(x)
        if self.record_states:
            self.states["decoder"] = hidden
        logits = self.output_projection(x)
        if self.copy_gate is None:
            return logits
        attn = self.decoder[-1].cross_attn.probs.mean(axis=1)    # (B, H, T, S) -> (B, T, S)
        return F.copy_mixture(logits, self.copy_gate(x), attn, src_ids)

    def output_projection(self, h):                        # (B, T, d) -> (B, T, V), full precision
        if self.lm_head is not None:
            return self.lm_head(h)
        return F.linear(h, self.embed.weight)

    def init_cache(self):
        return [{"self": {}, "cross": {}} for _ in self.decoder]

    def forward(self, src_ids, tgt_ids):
        if self.record_states:
            self.states = {}
        memory, src_ids = self.encode(src_ids)
        return self.decode(tgt_ids, memory, src_ids)

    def attention_modules(self):
        """Every MultiHeadAttention, in a fixed order (encoder self, decoder self, decoder cross)."""
        return ([l.self_attn for l in self.encoder] + [l.self_attn for l in self.decoder]
                + [l.cross_attn for l in self.decoder])
