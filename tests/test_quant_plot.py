"""The quantizer plots (docs/img/quantizers, `python -m minitbt.quant.plot`) show what each quantizer does."""
import os

import numpy as np

from minitbt.quant.plot import catalogue, forward_and_gradient, plot_all


def test_each_quantizer_has_at_most_its_levels_and_a_finite_gradient():
    x = np.linspace(-2.0, 2.0, 401)
    for name, _, q in catalogue():
        y, g = forward_and_gradient(q, x)
        levels = np.unique(np.round(y, 9))
        assert len(levels) <= 2 ** q.precision if q.precision > 1 else len(levels) <= 2, (name, levels)
        assert len(levels) >= 2, name                                  # it does quantize
        assert np.all(np.diff(y) >= -1e-12), name                      # monotone non-decreasing
        assert np.isfinite(g).all() and np.abs(g).max() > 0, name      # some gradient passes


def test_plot_all_writes_one_png_per_quantizer(tmp_path):
    paths = plot_all(str(tmp_path))
    assert len(paths) == len(catalogue())
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(p) > 1000
