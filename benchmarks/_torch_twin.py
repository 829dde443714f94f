"""minitbt's Seq2Seq Transformer written in PyTorch, for the benchmarks that compare the two.

    model = build_torch_model(cfg)            # cfg: TransformerConfig keys (a dict)
    load_minitbt_weights(model, mt_model.state_dict())   # optional: start from minitbt's init
    hyps = greedy(model, src, max_len)        # src (B, S) ids -> list of B id lists

The layout matches minitbt.nn.Seq2SeqTransformer exactly: embedding * sqrt(d) + learned
positions, LayerNorm on the embeddings, post-LN residual blocks (x = LN(x + dropout(f(x)))),
ReLU feed-forward, output tied to the token embedding. Only that variant is implemented;
build_torch_model refuses configurations that ask for another one.
Import this module only after the thread count is pinned (it imports torch).
"""
import math

import torch
import torch.nn.functional as tF
from torch import nn

PAD, BOS, EOS = 0, 1, 2

# what the twin implements, for the TransformerConfig keys that choose a variant
FIXED = dict(pre_ln=False, positions="learned", activation="relu", tie_embeddings=True,
             pad_id=PAD, bos_id=BOS, eos_id=EOS)
SIZES = dict(vocab_size=8000, d_model=256, n_heads=4, d_ff=1024, n_encoder_layers=3,
             n_decoder_layers=3, dropout=0.1, max_len=256, seed=0)   # TransformerConfig defaults


class MHA(nn.Module):
    def __init__(self, d, H):
        super().__init__()
        self.d, self.H = d, H
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mem, allowed):                   # allowed: True = may attend, (B|1, 1, Tq, Tk)
        B, Tq, d = x.shape
        heads = lambda t: t.view(B, -1, self.H, d // self.H).transpose(1, 2)  # noqa: E731  (B, H, T, d_h)
        o = tF.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(mem)), heads(self.v(mem)),
                                            attn_mask=allowed)
        return self.o(o.transpose(1, 2).reshape(B, Tq, d))


class SelfAttn(MHA):
    def forward(self, x, allowed):
        return super().forward(x, x, allowed)


class CrossAttn(MHA):
    def forward(self, x, mem, allowed):
        return super().forward(x, mem, allowed)


class FFN(nn.Module):
    def __init__(self, d, d_ff):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x):
        return self.fc2(tF.relu(self.fc1(x)))


class Block(nn.Module):                                   # post-LN: x = LN(x + dropout(f(x)))
    def __init__(self, f, d, p_drop):
        super().__init__()
        self.f, self.norm, self.drop = f, nn.LayerNorm(d), nn.Dropout(p_drop)

    def forward(self, x, *a):
        return self.norm(x + self.drop(self.f(x, *a)))


class Model(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        d, H, V, p = cfg["d_model"], cfg["n_heads"], cfg["vocab_size"], cfg["dropout"]
        self.embed = nn.Embedding(V, d)
        self.pos = nn.Embedding(cfg["max_len"], d)
        nn.init.normal_(self.embed.weight, std=d ** -0.5)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.enc_norm, self.dec_norm, self.drop = nn.LayerNorm(d), nn.LayerNorm(d), nn.Dropout(p)
        self.enc = nn.ModuleList(nn.ModuleList([Block(SelfAttn(d, H), d, p), Block(FFN(d, cfg["d_ff"]), d, p)])
                                 for _ in range(cfg["n_encoder_layers"]))
        self.dec = nn.ModuleList(nn.ModuleList([Block(SelfAttn(d, H), d, p), Block(CrossAttn(d, H), d, p),
                                                Block(FFN(d, cfg["d_ff"]), d, p)])
                                 for _ in range(cfg["n_decoder_layers"]))
        for m in self.modules():                          # minitbt: Xavier-uniform weights, zero biases
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def emb(self, ids, norm):                             # (B, T) -> (B, T, d)
        x = self.embed(ids) * math.sqrt(self.cfg["d_model"]) + self.pos(torch.arange(ids.shape[1]))
        return self.drop(norm(x))

    def encode(self, src):                                # (B, S) -> memory (B, S, d), src_ok (B, 1, 1, S)
        src_ok = (src != PAD)[:, None, None, :]
        x = self.emb(src, self.enc_norm)
        for attn, ffn in self.enc:
            x = ffn(attn(x, src_ok))
        return x, src_ok

    def decode(self, tgt, mem, src_ok):                   # (B, T) -> logits (B, T, V)
        T = tgt.shape[1]
        causal_ok = torch.ones(T, T, dtype=torch.bool).tril()[None, None]  # (1, 1, T, T)
        tgt_ok = causal_ok & (tgt != PAD)[:, None, None, :]               # (B, 1, T, T)
        y = self.emb(tgt, self.dec_norm)
        for attn, cross, ffn in self.dec:
            y = ffn(cross(attn(y, tgt_ok), mem, src_ok))
        return y @ self.embed.weight.T                                    # tied output

    def forward(self, src, tgt):
        return self.decode(tgt, *self.encode(src))


def build_torch_model(cfg: dict) -> Model:
    """The twin of ``minitbt.nn.Seq2SeqTransformer(TransformerConfig(**cfg))`` (torch's own init,
    seeded with cfg["seed"]). Raises ValueError for keys or variants the twin does not implement."""
    unknown = set(cfg) - set(FIXED) - set(SIZES)
    if unknown:
        raise ValueError(f"unknown TransformerConfig keys: {sorted(unknown)}")
    other = {k: cfg[k] for k in FIXED if k in cfg and cfg[k] != FIXED[k]}
    if other:
        raise ValueError(f"the PyTorch twin implements only {FIXED}; this config asks for {other}")
    full = {**SIZES, **FIXED, **cfg}
    if full["d_model"] % full["n_heads"]:
        raise ValueError(f"d_model {full['d_model']} must be divisible by n_heads {full['n_heads']}")
    torch.manual_seed(full["seed"])
    return Model(full)


def minitbt_names(model: Model) -> dict:
    """twin parameter name -> the name of the same parameter in minitbt's state_dict."""
    sub = {"enc": ["self_attn", "ffn"], "dec": ["self_attn", "cross_attn", "ffn"]}
    blk = {"enc": ["attn_block", "ffn_block"], "dec": ["self_block", "cross_block", "ffn_block"]}
    lin = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj", "fc1": "fc1", "fc2": "fc2"}
    out = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        if parts[0] in ("enc", "dec"):                    # enc.i.j.f.q.weight / enc.i.j.norm.bias
            side, i, j = parts[0], parts[1], int(parts[2])
            top = "encoder" if side == "enc" else "decoder"
            if parts[3] == "f":
                out[name] = f"{top}.{i}.{sub[side][j]}.{lin[parts[4]]}.{parts[5]}"
            else:
                out[name] = f"{top}.{i}.{blk[side][j]}.norm.{parts[4]}"
        else:                                             # embed / pos / enc_norm / dec_norm
            top = {"enc_norm": "enc_embed_norm", "dec_norm": "dec_embed_norm"}.get(parts[0], parts[0])
            out[name] = ".".join([top] + parts[1:])
    return out


@torch.no_grad()
def load_minitbt_weights(model: Model, state: dict) -> None:
    """Copy a minitbt state_dict (name -> np.ndarray) into the twin, with shape checks."""
    for name, p in model.named_parameters():
        src = torch.as_tensor(state[minitbt_names(model)[name]])
        if src.shape != p.shape:
            raise ValueError(f"{name}: minitbt shape {tuple(src.shape)} != twin shape {tuple(p.shape)}")
        p.copy_(src)


@torch.no_grad()
def greedy(model: Model, src, max_len: int = 64) -> list:
    """minitbt.decode.greedy's semantics (argmax each step from <bos>, a row stops at <eos>,
    at most min(max_len, positions) tokens), re-running the decoder on the whole prefix each step.
    src (B, S) int ids (array or tensor) -> list of B id lists without specials."""
    was_training = model.training
    model.eval()
    src = torch.as_tensor(src).long()
    B = src.shape[0]
    max_len = min(max_len, model.cfg["max_len"])
    mem, src_ok = model.encode(src)                       # (B, S, d)
    ys = torch.full((B, 1), BOS, dtype=torch.long)        # (B, 1 + t)
    done = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len):
        nxt = model.decode(ys, mem, src_ok)[:, -1].argmax(-1)   # (B,)
        nxt[done] = PAD
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if done.all():
            break
    model.train(was_training)
    out = []
    for row in ys[:, 1:].tolist():
        row = row[: row.index(EOS)] if EOS in row else row
        out.append([i for i in row if i != PAD])
    return out
