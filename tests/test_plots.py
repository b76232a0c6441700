"""course_utils.plots: every figure labels its axes, and bad input names the fix."""
from __future__ import annotations

import matplotlib
import pytest
import torch

from course_utils.spectrum import singular_values

matplotlib.use("Agg")


def test_plot_helpers_draw_and_demand_labels():
    import matplotlib.pyplot as plt

    from course_utils import plots

    ax = plots.plot_loss_curves({"a": [3, 2, 1]}, title="t", smooth=2)
    assert ax.get_xlabel() and ax.get_ylabel() and len(ax.lines) == 2
    ax = plots.plot_stacked_bars(["7B", "13B"], {"w": [1, 2], "g": [1, 2]}, title="t", xlabel="x", ylabel="GiB",
                                 hline=3, hline_label="GPU")
    assert ax.get_legend() is not None
    with pytest.raises(ValueError, match="ylabel"):
        plots.plot_bars(["a"], [1], title="t", xlabel="x", ylabel="")
    with pytest.raises(ValueError, match="one label per bar"):
        plots.plot_bars(["a", "b"], [1], title="t", xlabel="x", ylabel="y")
    plt.close("all")


def test_text_table_aligns_and_truncates():
    from course_utils.plots import moving_average, text_table

    out = text_table([["a", "x" * 10], ["bb", "line\nbreak"]], ["k", "v"], max_width=6).splitlines()
    assert out[0].startswith("k   v") and out[2] == "a   xxxxx…" and "⏎" in out[3]
    assert moving_average([1, 3, 5], 2) == [1, 2, 4]
    with pytest.raises(ValueError, match="2 headers"):
        text_table([[1]], ["a", "b"])


def test_plot_helpers_label_everything():
    import matplotlib.pyplot as plt

    from course_utils.plots import plot_intrinsic_curves, plot_spectrum

    ax = plot_intrinsic_curves({"a": ([1, 10, 100], [0.1, 0.95, 1.0]), "b": ([1, 10], [0.0, 0.2])},
                               title="t", marks={"a": 10, "b": None})
    assert ax.get_title() == "t" and ax.get_xscale() == "log" and ax.get_ylabel()
    shared = plot_intrinsic_curves({"a": ([1, 10], [0.1, 0.95]), "b": ([1, 10], [0.2, 0.92])}, title="t",
                                   marks={"a": 10, "b": 10})
    assert len(shared.texts) == 1, "two seeds with the same d90: one label, not two printed on top of each other"
    axes = plot_spectrum({"x": singular_values(torch.randn(8, 8))}, title="s", r=2)
    assert all(a.get_xlabel() and a.get_ylabel() for a in axes)
    with pytest.raises(ValueError, match="curves is empty"):
        plot_intrinsic_curves({}, title="t")
    plt.close("all")
