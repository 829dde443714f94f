"""Every quantizer's forward and pseudo-gradient, plotted (as larq's docs do for theirs).

    python -m minitbt.quant.plot --out docs/img/quantizers

For each quantizer, the input is one row x = linspace(-2, 2, 401) (so the per-row and per-token
statistics are those of this row) and the plot shows

    left:  y = q(x)                              the fake-quantized values the forward produces
    right: d sum_j q(x)_j / d x_i                the pseudo-gradient the backward passes to x_i

The right panel is what ``q(x).backward(ones)`` writes into ``x.grad``: the straight-through
estimator's window (1 inside the clipping range, 0 outside), plus, for quantizers whose scale is
a statistic of x (TBT, TWN, the min-max family), what flows through that statistic. Learned
scales are initialised on this row, as on a first batch.
"""
import argparse
import os

import numpy as np

from minitbt.quant import activation as A
from minitbt.quant import minmax as M
from minitbt.quant import weight as W
from minitbt.tensor import Tensor


def catalogue() -> list:
    """(file name, title, quantizer) for every quantizer family, by bit width."""
    return [
        ("tbt-ternary", "TBT ternary weight (statistics, per row)", W.TBTTernaryWeight()),
        ("tbt-binary", "TBT binary weight (statistics, per row)", W.TBTBinaryWeight()),
        ("twn", "TWN ternary weight", W.TWNWeight()),
        ("bwn", "BWN binary weight", W.BWNWeight()),
        ("absmean", "BitNet b1.58 absmean ternary weight", W.AbsMeanWeight()),
        ("absmax-4", "4-bit absmax weight", W.AbsMaxWeight(4)),
        ("bcq-2", "2-bit binary-coding weight", W.BinaryCodingWeight(2)),
        ("elastic-2-signed", "TBT elastic activation, 2-bit signed", A.ElasticQuantizer(2, signed=True)),
        ("elastic-2-unsigned", "TBT elastic activation, 2-bit unsigned", A.ElasticQuantizer(2, signed=False)),
        ("elastic-1-signed", "TBT elastic activation, 1-bit signed", A.ElasticQuantizer(1, signed=True)),
        ("bit-binary-unsigned", "BiT two-set binary activation (learned offset)", A.BiTElasticBinary(signed=False)),
        ("minmax-2", "min-max activation, 2-bit signed", M.MinMaxQuantizer(2, signed=True)),
        ("a8", "symmetric 8-bit activation (clip 2.5)", M.SymmetricA8()),
        ("per-token-absmax-4", "per-token absmax activation, 4-bit", M.PerTokenAbsMax(4)),
    ]


def forward_and_gradient(q, x: np.ndarray):
    """(q(x), d sum q(x) / dx) for one row x, in float64."""
    t = Tensor(x[None, :].astype(np.float64), requires_grad=True)          # (1, n): one row, one token
    y = q(t)
    y.backward(np.ones_like(y.data))
    return y.data[0], t.grad[0]


def plot_all(out_dir: str) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    x = np.linspace(-2.0, 2.0, 401)
    written = []
    for name, title, q in catalogue():
        y, g = forward_and_gradient(q, x)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
        ax1.plot(x, y, drawstyle="steps-mid")
        ax1.set(title="forward q(x)", xlabel="x")
        ax2.plot(x, g, color="tab:orange")
        ax2.set(title="pseudo-gradient", xlabel="x")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.axhline(0, color="k", lw=0.5)
        fig.suptitle(f"{title}: {q.precision} bit{'s' if q.precision > 1 else ''}")
        fig.tight_layout()
        path = os.path.join(out_dir, f"{name}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/img/quantizers", help="folder for the PNGs")
    args = ap.parse_args(argv)
    for path in plot_all(args.out):
        print(path)


if __name__ == "__main__":
    main()
