"""End-to-end greedy decoding, batch 1: the packed model against the same model in float32.

    python benchmarks/bench_decode.py                        # 20 test sentences, 32 tokens each
    python benchmarks/bench_decode.py --sentences 40 --json bench_decode.json
    python benchmarks/bench_decode.py --model models/ddtp-en-de-2-2-8.npz --stop-at-eos

Sides, all decoding the same source sentences one at a time with minitbt.decode.greedy and a
KV cache (encoder included in the time):

* float32   -- the baseline: the full-precision model with the same architecture and weights
               (minitbt.model_io.load_latent_fp for a quantized checkpoint), its own float32
               forward (Seq2SeqTransformer.encode / decode), NOT the fake-quantized QAT model;
* packed    -- pack_model(the quantized model): ternary weights on the bit kernels, run by the
               same module forward (minitbt.nn) with packed layers in it;
* PyTorch   -- a float32 port of the same model (written below, checked against minitbt's
               logits), when torch is installed.

By default every sentence is decoded for exactly --max-len tokens (<eos> is suppressed, as with
greedy(min_len=max_len)), so that every side does the same number of steps whatever the model
predicts (speed does not depend on training); --stop-at-eos decodes naturally instead. The sides
run in turns sentence by sentence (float, packed, torch, float, ...), --repeats passes over
the sentences after --warmup passes over the first two; per sentence the median over the passes,
tokens/s = tokens / sum of those medians. Then: file sizes (save_packed vs float32 and float16
checkpoints), an agreement check (packed vs fake-quant greedy outputs) and a per-component
breakdown of one decoding step (instrumented with perf_counter, so it is wall time and a little
slower than the real step).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_args  # noqa: E402  (imports no NumPy)


def _flags(p):
    p.set_defaults(repeats=3, warmup=1)
    p.add_argument("--model", default=None,
                   help="checkpoint (QAT, float or packed-from); default: models/ddtp-en-de-2-2-8.npz, "
                        "else models/ddtp-en-de-fp.npz, else runs/ddtp-small/best.npz, else a fresh model")
    p.add_argument("--recipe", default="2-2-8", help="quantization recipe for a float checkpoint (default 2-2-8)")
    p.add_argument("--fresh", action="store_true",
                   help="ignore checkpoints: a freshly built model (the 'small' architecture unless changed below)")
    p.add_argument("--d-model", type=int, default=128, help="fresh model: d_model (default 128)")
    p.add_argument("--d-ff", type=int, default=512, help="fresh model: d_ff (default 512)")
    p.add_argument("--heads", type=int, default=4, help="fresh model: heads (default 4)")
    p.add_argument("--layers", type=int, default=3, help="fresh model: encoder and decoder layers (default 3)")
    p.add_argument("--task", default="data/ddtp-en-de", help="task folder: test.source.gz and tokenizer.json")
    p.add_argument("--sentences", type=int, default=20, help="first N test sentences (default 20)")
    p.add_argument("--max-len", type=int, default=32, help="tokens decoded per sentence (default 32)")
    p.add_argument("--stop-at-eos", action="store_true", help="stop at <eos> instead of a fixed length")
    p.add_argument("--check", type=int, default=3,
                   help="sentences on which packed and fake-quant greedy outputs are compared (default 3)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
    p.add_argument("--breakdown-steps", type=int, default=3,
                   help="sentences of --max-len steps instrumented for the per-component breakdown")


ARGS, UNSET = bench_args(__doc__, _flags)

import copy  # noqa: E402
import gzip  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from _common import header, print_table, write_json  # noqa: E402
from minitbt import checkpoint, kernels, packed as pk  # noqa: E402
from minitbt.data import BOS, EOS  # noqa: E402
from minitbt.decode import greedy  # noqa: E402
from minitbt.model_io import build_model, load_latent_fp, load_model, quantize, save_model  # noqa: E402
from minitbt.nn.attention import MultiHeadAttention  # noqa: E402
from minitbt.nn.layers import LayerNorm, Linear  # noqa: E402
from minitbt.nn.transformer import Seq2SeqTransformer  # noqa: E402
from minitbt.packed import PackedLinear  # noqa: E402
from minitbt.quant.activation import BiTElasticBinary, ElasticQuantizer, MinMaxQuantizer, PerChannelQuantizer  # noqa: E402
from minitbt.quant.base import Quantizer  # noqa: E402
from minitbt.tensor import no_grad  # noqa: E402

SMALL = dict(vocab_size=8000, d_model=ARGS.d_model, n_heads=ARGS.heads, d_ff=ARGS.d_ff, n_encoder_layers=ARGS.layers,
             n_decoder_layers=ARGS.layers, max_len=128, dropout=0.0)
NOW = {"wall": time.perf_counter, "cpu": time.process_time}[ARGS.clock]


# --------------------------------------------------------------------------- the models

def pick_model():
    """(fp32 model, quantized model, description)."""
    path = ARGS.model
    if path is None and not ARGS.fresh:
        for cand in ("models/ddtp-en-de-2-2-8.npz", "models/ddtp-en-de-fp.npz", "runs/ddtp-small/best.npz"):
            if os.path.exists(os.path.join(ROOT, cand)):
                path = os.path.join(ROOT, cand)
                break
    if path is None:
        fp = build_model(**SMALL).eval()
        return fp, quantize(fp, ARGS.recipe).eval(), \
            f"a freshly built model (d_model {ARGS.d_model}, d_ff {ARGS.d_ff}, {ARGS.heads} heads, " \
            f"{ARGS.layers}+{ARGS.layers} layers, vocab 8000), quantized with {ARGS.recipe} (untrained: speed only)"
    _, meta, _ = checkpoint.load(path)
    rel = os.path.relpath(path, ROOT)
    if meta.get("packed"):
        sys.exit(f"{rel} is a packed file: give the QAT or float checkpoint it came from")
    if meta.get("quant"):
        q, _ = load_model(path)
        return load_latent_fp(path).eval(), q.eval(), \
            f"{rel} (quantization-aware, recipe {q.quant_recipe.name}); float32 baseline = its latent float weights"
    fp, _ = load_model(path)
    step = meta.get("train_state", {}).get("step")
    return fp.eval(), quantize(fp, ARGS.recipe).eval(), \
        f"{rel} (float checkpoint{f', step {step}' if step else ''}), quantized here with {ARGS.recipe} " \
        f"(speed does not depend on training)"


def sources(cfg):
    """The first N test sentences as (1, S) id arrays (ids + <eos>), and where they came from."""
    task = os.path.join(ROOT, ARGS.task)
    try:
        from minitbt.data import encode, load_tokenizer
        tok = load_tokenizer(task)
        with gzip.open(os.path.join(task, "test.source.gz"), "rt", encoding="utf-8") as f:
            lines = [line.rstrip("\n") for _, line in zip(range(ARGS.sentences), f)]
        ids = encode(tok, lines)
        what = f"first {len(lines)} sentences of {ARGS.task}/test.source.gz"
    except (OSError, ValueError, ImportError) as exc:
        rng = np.random.default_rng(0)
        ids = [rng.integers(4, cfg.vocab_size, rng.integers(8, 24)) for _ in range(ARGS.sentences)]
        what = f"random ids ({exc})"
    out = [np.append(np.asarray(s[: cfg.max_len - 1]), EOS).astype(np.int64)[None] for s in ids]
    return out, what


# --------------------------------------------------------------------------- PyTorch port

def torch_port(fp):
    """A float32 PyTorch port of minitbt's Seq2SeqTransformer inference (encode + cached decode),
    with the same weights; offers the encode / init_cache / decode interface greedy() uses."""
    try:
        import torch
        import torch.nn.functional as tF
    except ImportError:
        return None, "torch is not installed"
    torch.set_num_threads(ARGS.threads)
    cfg = fp.config
    sd = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in fp.state_dict().items()}
    H, d = cfg.n_heads, cfg.d_model
    dh = d // H

    def lin(x, name):
        return tF.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))

    def ln(x, name):
        return tF.layer_norm(x, (d,), sd[name + ".weight"], sd[name + ".bias"], 1e-5)

    def heads(x):                                             # (B, T, d) -> (B, H, T, dh)
        B, T, _ = x.shape
        return x.view(B, T, H, dh).transpose(1, 2)

    def attend(q, k, v, mask):                                # mask: True = hidden
        s = (q @ k.transpose(-1, -2)) * dh ** -0.5
        if mask is not None:
            s = s.masked_fill(mask, -1e9)
        return torch.softmax(s, -1) @ v

    def block(x, name, fn):
        if cfg.pre_ln:
            return x + fn(ln(x, name + ".norm"))
        return ln(x + fn(x), name + ".norm")

    def ffn(x, name):
        h = lin(x, name + ".fc1")
        h = torch.relu(h) if cfg.activation == "relu" else \
            tF.gelu(h, approximate="tanh" if cfg.activation == "gelu_tanh" else "none")
        return lin(h, name + ".fc2")

    def merge(o):
        B, _, T, _ = o.shape
        return o.transpose(1, 2).reshape(B, T, d)

    pos_table = sd["pos.weight"] if "pos.weight" in sd else sd["pos_table"]

    def embed(ids, norm, offset=0):
        x = sd["embed.weight"][ids] * fp.embed_scale + pos_table[offset:offset + ids.shape[1]]
        return ln(x, norm) if not cfg.pre_ln else x

    class TorchModel:
        config = cfg

        @torch.inference_mode()
        def encode(self, src):
            src = torch.from_numpy(np.asarray(src, dtype=np.int64))
            pad = src == cfg.pad_id
            mask = pad[:, None, None, :] if bool(pad.any()) else None
            x = embed(src, "enc_embed_norm")
            for i in range(cfg.n_encoder_layers):
                p = f"encoder.{i}"
                x = block(x, p + ".attn_block", lambda h: lin(merge(attend(
                    heads(lin(h, p + ".self_attn.q_proj")), heads(lin(h, p + ".self_attn.k_proj")),
                    heads(lin(h, p + ".self_attn.v_proj")), mask)), p + ".self_attn.out_proj"))
                x = block(x, p + ".ffn_block", lambda h: ffn(h, p + ".ffn"))
            if cfg.pre_ln:
                x = ln(x, "enc_final_norm")
            return x, mask

        def init_cache(self):
            return [{} for _ in range(cfg.n_decoder_layers)]

        @torch.inference_mode()
        def decode(self, tgt, memory, mask, cache, offset=0):
            tgt = torch.from_numpy(np.asarray(tgt, dtype=np.int64))
            x = embed(tgt, "dec_embed_norm", offset)
            for i in range(cfg.n_decoder_layers):
                p, c = f"decoder.{i}", cache[i]

                def self_attn(h):
                    k, v = heads(lin(h, p + ".self_attn.k_proj")), heads(lin(h, p + ".self_attn.v_proj"))
                    if "k" in c:
                        k, v = torch.cat([c["k"], k], 2), torch.cat([c["v"], v], 2)
                    c["k"], c["v"] = k, v
                    return lin(merge(attend(heads(lin(h, p + ".self_attn.q_proj")), k, v, None)),
                               p + ".self_attn.out_proj")

                def cross_attn(h):
                    if "mk" not in c:
                        c["mk"] = heads(lin(memory, p + ".cross_attn.k_proj"))
                        c["mv"] = heads(lin(memory, p + ".cross_attn.v_proj"))
                    return lin(merge(attend(heads(lin(h, p + ".cross_attn.q_proj")), c["mk"], c["mv"], mask)),
                               p + ".cross_attn.out_proj")
                x = block(x, p + ".self_block", self_attn)
                x = block(x, p + ".cross_block", cross_attn)
                x = block(x, p + ".ffn_block", lambda h: ffn(h, p + ".ffn"))
            if cfg.pre_ln:
                x = ln(x, "dec_final_norm")
            w = sd["embed.weight"] if cfg.tie_embeddings else sd["lm_head.weight"]
            return (x @ w.T).numpy()

    return TorchModel(), f"PyTorch {torch.__version__} float32 port ({ARGS.threads} thread(s))"


# --------------------------------------------------------------------------- timing

class Counting:
    """Wraps a model for greedy(); counts decoding steps."""

    def __init__(self, model):
        self.model, self.config, self.steps = model, model.config, 0

    def encode(self, src):
        return self.model.encode(src)

    def init_cache(self):
        return self.model.init_cache()

    def decode(self, *args, **kw):
        self.steps += 1
        return self.model.decode(*args, **kw)


def run_greedy(model, src):
    """(output ids, steps, seconds) of one greedy decode of one sentence."""
    c = Counting(model)
    min_len = 0 if ARGS.stop_at_eos else ARGS.max_len
    t0 = NOW()
    with no_grad():
        out = greedy(c, src, max_len=ARGS.max_len, min_len=min_len)
    return out, c.steps, NOW() - t0


def time_sides(sides, srcs):
    """Sentence by sentence, the sides in turns; per sentence the median over the passes."""
    for _ in range(ARGS.warmup):
        for s in srcs[:2]:
            for m in sides.values():
                run_greedy(m, s)
    times = {k: [[] for _ in srcs] for k in sides}
    steps = {k: [0] * len(srcs) for k in sides}
    for _ in range(ARGS.repeats):
        for i, s in enumerate(srcs):
            for k, m in sides.items():
                _, n, t = run_greedy(m, s)
                times[k][i].append(t)
                steps[k][i] = n
    out = {}
    for k in sides:
        med = [statistics.median(t) for t in times[k]]
        out[k] = {"tokens": sum(steps[k]), "seconds": sum(med), "tokens_per_s": sum(steps[k]) / sum(med),
                  "ms_per_token": 1e3 * sum(med) / sum(steps[k]), "per_sentence_s": med, "steps": steps[k]}
    return out


# --------------------------------------------------------------------------- breakdown

class Breakdown:
    """Exclusive wall time per category: wrapped functions add their own time minus that of the
    wrapped functions they call. ``<category>: quantize`` is activation quantization inside it."""

    def __init__(self):
        self.t, self.stack, self.saved = defaultdict(float), [], []

    def wrap(self, owner, attr, cat):
        orig = getattr(owner, attr)
        stack, t = self.stack, self.t

        def timed(*a, **k):
            c = cat if cat is not None else ((stack[-1][1] if stack else "other") + ": quantize")
            stack.append([0.0, c])
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                el = time.perf_counter() - t0
                child, _ = stack.pop()
                t[c] += el - child
                if stack:
                    stack[-1][0] += el
        self.saved.append((owner, attr, orig))
        setattr(owner, attr, timed)

    def restore(self):
        for owner, attr, orig in reversed(self.saved):
            setattr(owner, attr, orig)
        self.saved = []


CATS = ["linear layers", "linear layers: quantize", "integer kernel", "attention", "attention: quantize",
        "LayerNorm", "embedding", "LM head (float)", "other (residuals, FFN activation, argmax, Python glue)"]


def breakdown(model, srcs):
    """Mean ms per decoding step by component (encoder excluded)."""
    bd = Breakdown()
    bd.wrap(Linear, "forward", "linear layers")
    bd.wrap(PackedLinear, "forward", "linear layers")
    bd.wrap(PackedLinear, "_integer_dot", "integer kernel")
    for cls in (MinMaxQuantizer, ElasticQuantizer, BiTElasticBinary, PerChannelQuantizer):
        bd.wrap(cls, "codes", None)                        # "<caller>: quantize"
    bd.wrap(Quantizer, "__call__", None)                   # the attention states' fake quantization
    bd.wrap(MultiHeadAttention, "forward", "attention")
    bd.wrap(LayerNorm, "forward", "LayerNorm")
    bd.wrap(Seq2SeqTransformer, "_embed", "embedding")
    bd.wrap(Seq2SeqTransformer, "output_projection", "LM head (float)")
    rounds = []
    try:
        for s in srcs:
            with no_grad():
                memory, pad = model.encode(s)
                cache = model.init_cache()
                tok = np.full((1, 1), BOS, dtype=np.int64)
                bd.t.clear()
                t0 = time.perf_counter()
                for t in range(ARGS.max_len):
                    logits = model.decode(tok, memory, pad, cache, offset=t)
                    logits = logits.data if hasattr(logits, "data") else logits
                    tok = logits[:, -1].argmax(-1)[:, None]
                total = time.perf_counter() - t0
            r = {k: v / ARGS.max_len for k, v in bd.t.items()}
            r["total"] = total / ARGS.max_len
            rounds.append(r)
    finally:
        bd.restore()
    out = {}
    for k in set().union(*rounds):
        out[k] = statistics.median(r.get(k, 0.0) for r in rounds)
    out["other (residuals, FFN activation, argmax, Python glue)"] = \
        out["total"] - sum(v for k, v in out.items() if k != "total")
    return out


def step_ms(model, srcs):
    """Median ms per decoding step, uninstrumented (same clock as the benchmark)."""
    per = []
    for s in srcs:
        with no_grad():
            memory, pad = model.encode(s)
            cache = model.init_cache()
            tok = np.full((1, 1), BOS, dtype=np.int64)
            t0 = NOW()
            for t in range(ARGS.max_len):
                logits = model.decode(tok, memory, pad, cache, offset=t)
                logits = logits.data if hasattr(logits, "data") else logits
                tok = logits[:, -1].argmax(-1)[:, None]
            per.append((NOW() - t0) / ARGS.max_len)
    return 1e3 * statistics.median(per)


def arithmetic_ms(fp):
    """The float arithmetic of one decoding step alone: every decoder linear layer a step runs
    (self-attention Q, K, V, O; cross-attention Q, O; fc1, fc2) as a bare x @ W.T on one token,
    and the LM head. What no kernel can remove from the rest of the step (Amdahl)."""
    x = {}
    mats = []
    for layer in fp.decoder:
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.out_proj,
                    layer.cross_attn.q_proj, layer.cross_attn.out_proj, layer.ffn.fc1, layer.ffn.fc2):
            w = lin.weight.data
            x.setdefault(w.shape[1], np.random.default_rng(0).standard_normal((1, w.shape[1])).astype(np.float32))
            mats.append(w)
    head = fp.embed.weight.data if fp.lm_head is None else fp.lm_head.weight.data
    h = x.setdefault(head.shape[1], np.random.default_rng(0).standard_normal((1, head.shape[1])).astype(np.float32))

    def linears():
        for w in mats:
            x[w.shape[1]] @ w.T

    out = {}
    for name, fn in (("linear layers", linears), ("LM head", lambda: h @ head.T)):
        fn()
        samples = []
        for _ in range(max(3, ARGS.repeats)):
            t0 = NOW()
            for _ in range(20):
                fn()
            samples.append((NOW() - t0) / 20)
        out[name] = 1e3 * statistics.median(samples)
    out["linear MACs"] = int(sum(w.size for w in mats))
    out["LM head MACs"] = int(head.size)
    return out


# --------------------------------------------------------------------------- sizes

def sizes(fp, packed):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, save in (("packed", lambda p: pk.save_packed(p, packed)),
                           ("float32", lambda p: save_model(p, fp)),
                           ("float16", lambda p: save_model(p, fp, half=True))):
            path = os.path.join(d, name + ".npz")
            save(path)
            out[name] = os.path.getsize(path)
    parts = defaultdict(int)
    for name, arr in packed.state_dict().items():
        if name.endswith(".planes"):
            parts["ternary bit planes (linear layers)"] += arr.nbytes
        elif name == "embed.codes":
            parts["embedding codes (int8)"] += arr.nbytes
        elif name == "embed.weight":
            parts["float32 embedding table (tied LM head)"] += arr.nbytes
        else:
            parts["scales, biases, LayerNorms, positions (float32)"] += arr.nbytes
    out["packed_parts"] = dict(parts)
    lin_fp = sum(a.nbytes for n, a in fp.state_dict().items()
                 if n.endswith("_proj.weight") or n.endswith("fc1.weight") or n.endswith("fc2.weight"))
    out["linear_weights_float32"] = lin_fp
    return out


# --------------------------------------------------------------------------- main

def main():
    fp, q, what = pick_model()
    with no_grad():                                           # initialise learned scales, if any
        q(np.array([[5, 6, 7, EOS]]), np.array([[BOS, 5, 6]]))
    packed = pk.pack_model(q)
    srcs, src_what = sources(fp.config)
    if ARGS.max_len > fp.config.max_len:
        sys.exit(f"--max-len {ARGS.max_len} exceeds the model's max_len {fp.config.max_len}")
    info = header(ARGS, UNSET, extra=f"minitbt compiled kernels: {kernels.HAVE_EXT}")
    print(f"# model: {what}")
    mode = "natural greedy (stop at <eos>)" if ARGS.stop_at_eos else f"{ARGS.max_len} tokens each (<eos> suppressed)"
    print(f"# sources: {src_what}; {mode}")
    print(f"# packed model kernels: {sorted(set(pk.kernel_report(packed).values()))}")

    sides = {"float32": fp, "packed": packed}
    tmodel, tnote = (None, "skipped (--no-torch)") if ARGS.no_torch else torch_port(fp)
    if tmodel is not None:
        sides["PyTorch fp32"] = tmodel
    print(f"# PyTorch side: {tnote}")

    # ---- agreement checks (not timed)
    n = min(ARGS.check, len(srcs))
    same_fq = sum(run_greedy(q, s)[0] == run_greedy(packed, s)[0] for s in srcs[:n])
    same_fq64 = None
    if same_fq < n:                     # float32 rounding can flip an activation code: retry in float64
        q64 = copy.deepcopy(q)
        q64.to_dtype(np.float64)
        p64 = pk.pack_model(q64)
        same_fq64 = sum(run_greedy(q64, s)[0] == run_greedy(p64, s)[0] for s in srcs[:n])
    print(f"# agreement: packed == fake-quant greedy output on {same_fq}/{n} sentences"
          + ("" if same_fq64 is None else f" in float32, {same_fq64}/{n} in float64 (a float32 rounding difference "
             "flips an 8-bit activation code now and then: tests/test_packed.py)"), end="")
    torch_check = None
    if tmodel is not None:
        with no_grad():
            m1, p1 = fp.encode(srcs[0])
            ref = fp.decode(np.array([[BOS]]), m1, p1, fp.init_cache()).data
        m2, p2 = tmodel.encode(srcs[0])
        got = tmodel.decode(np.array([[BOS]]), m2, p2, tmodel.init_cache())
        torch_check = {"max_abs_logit_diff": float(np.abs(got - ref).max()),
                       "same_greedy": sum(run_greedy(fp, s)[0] == run_greedy(tmodel, s)[0] for s in srcs[:n])}
        print(f"; PyTorch == float32 on {torch_check['same_greedy']}/{n} "
              f"(first-step logits differ by {torch_check['max_abs_logit_diff']:.1e})", end="")
    print()

    # ---- timing
    timed = time_sides(sides, srcs)
    base = timed["float32"]["tokens_per_s"]
    rows = []
    for k, r in timed.items():
        rows.append({"side": k, "tokens": r["tokens"], "tok_s": r["tokens_per_s"], "ms_tok": r["ms_per_token"],
                     "vs_float": r["tokens_per_s"] / base,
                     "per_sentence": statistics.median(f / p for f, p in zip(timed["float32"]["per_sentence_s"],
                                                                             r["per_sentence_s"]))})
    print(f"\n# end to end ({len(srcs)} sentences, encoder included; {ARGS.clock} clock, "
          f"median of {ARGS.repeats} passes per sentence)")
    print_table(rows, [("side", "side", "{}"), ("tokens", "tokens", "{}"), ("tok_s", "tokens/s", "{:.1f}"),
                       ("ms_tok", "ms/token", "{:.3f}"), ("vs_float", "x float32", "{:.2f}x"),
                       ("per_sentence", "median per sentence", "{:.2f}x")])
    ratio = timed["packed"]["tokens_per_s"] / base
    print(f"\npacked / float32 tokens/s: {ratio:.2f}x (target >= 3x, stretch >= 5x: "
          f"{'met' if ratio >= 3 else 'NOT met'})")

    # ---- sizes
    sz = sizes(fp, packed)
    print(f"\n# file sizes (weights only, no tokenizer): packed {sz['packed'] / 1e6:.2f} MB, "
          f"float32 {sz['float32'] / 1e6:.2f} MB ({sz['float32'] / sz['packed']:.2f}x the packed), "
          f"float16 {sz['float16'] / 1e6:.2f} MB ({sz['float16'] / sz['packed']:.2f}x)")
    for k, v in sz["packed_parts"].items():
        print(f"#   packed: {k}: {v / 1e6:.3f} MB")
    lin_packed = sz["packed_parts"].get("ternary bit planes (linear layers)", 0)
    if lin_packed:
        print(f"#   linear-layer weights alone: float32 {sz['linear_weights_float32'] / 1e6:.3f} MB vs "
              f"bit planes {lin_packed / 1e6:.3f} MB ({sz['linear_weights_float32'] / lin_packed:.1f}x)")

    # ---- per-component breakdown of one decoding step
    bsrcs = srcs[:max(1, ARGS.breakdown_steps)]
    bds = {"float32": breakdown(fp, bsrcs), "packed": breakdown(packed, bsrcs)}
    plain = {"float32": step_ms(fp, bsrcs), "packed": step_ms(packed, bsrcs)}
    print(f"\n# one decoding step, ms (wall clock, instrumented; {len(bsrcs)} sentences x {ARGS.max_len} steps, "
          f"median); uninstrumented step ({ARGS.clock} clock): "
          + ", ".join(f"{k} {v:.3f}" for k, v in plain.items()))
    brow = []
    for cat in CATS + ["total"]:
        r = {"component": cat}
        for k, b in bds.items():
            r[k] = 1e3 * b[cat] if cat in b else None
        brow.append(r)
    print_table(brow, [("component", "component", "{}")] + [(k, k, "{:.3f}") for k in bds])
    ar = arithmetic_ms(fp)
    print(f"\n# Amdahl: the float arithmetic of a step alone ({ARGS.clock} clock): decoder linear layers "
          f"{ar['linear layers']:.3f} ms ({ar['linear MACs'] / 1e6:.2f} M MACs as bare x @ W.T) = "
          f"{100 * ar['linear layers'] / plain['float32']:.0f}% of the float32 step; LM head {ar['LM head']:.3f} ms "
          f"({ar['LM head MACs'] / 1e6:.2f} M MACs, float in both models) = "
          f"{100 * ar['LM head'] / plain['float32']:.0f}%. Infinitely fast bit kernels in this runtime would make "
          f"the step at most {plain['float32'] / max(plain['float32'] - ar['linear layers'], 1e-9):.2f}x faster "
          f"than float32.")

    if ARGS.json:
        write_json(ARGS.json, {**info, "model": what, "sources": src_what, "max_len": ARGS.max_len,
                               "stop_at_eos": ARGS.stop_at_eos, "repeats": ARGS.repeats, "recipe": ARGS.recipe,
                               "torch": tnote, "torch_check": torch_check,
                               "agreement": {"packed_vs_fake_quant": [same_fq, n], "packed_vs_fake_quant_float64":
                                             None if same_fq64 is None else [same_fq64, n]},
                               "results": rows, "ratio_packed_vs_float32": ratio,
                               "sizes": sz,
                               "breakdown_ms": {k: {c: 1e3 * v for c, v in b.items()} for k, b in bds.items()},
                               "step_ms": plain, "arithmetic_ms": ar, "kernels": pk.kernel_report(packed)})


if __name__ == "__main__":
    main()
