"""course_utils.widgets without a browser: the values a browser sends, the reports, the static figures.

tests/test_browser.py moves every control in a real browser; this file pins down the parts that need no browser.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils import widgets  # noqa: E402
from course_utils.memory import fits_on_gpu  # noqa: E402


def test_sliders_hand_whole_grid_values_to_the_report():
    # what the browser's slider sends for 7.0, 3.0 and 5.5 (measured in JupyterLab 4.6 / ipywidgets 8.1)
    s = widgets.slider("model size", 7.0, 0.5, 80, 0.5)
    assert [widgets.snap(s, v) for v in (6.999999999999999, 2.9999999999999996, 5.499999999999999)] == [7.0, 3.0, 5.5]
    r = widgets.slider("rank", 8, 1, 128, 1)
    assert type(r).__name__ == "IntSlider" and widgets.snap(r, 7.9999) == 8 and isinstance(widgets.snap(r, 8.0), int)
    p = widgets.slider("share", 1.0, 0.1, 5, 0.1)
    assert widgets.snap(p, 0.1 + 2 * 0.1) == 0.3  # 0.30000000000000004 before snapping


def test_every_position_of_the_fit_explorer_works():
    """The browser test's sweep, without a browser: each slider position as the browser sends it."""
    for k in range(160):
        sent = 0.5 + k * 0.5 - (1e-15 * k)  # a float a little off the grid, as noUiSlider's arithmetic gives
        html = widgets.fit_report(widgets.snap(widgets.slider("b", 7.0, 0.5, 80, 0.5), sent), 16, "qlora", 0.0, 1.0)
        assert "GiB" in html and "Traceback" not in html


def test_fit_report_matches_the_calculator():
    html = widgets.fit_report(7.0, 16, "full", 0.0, 1.0)
    expected = fits_on_gpu(7e9, 16, "full").needed_gib
    assert f"{expected:,.1f} GiB" in html and "does NOT fit" in html
    assert "fits" in widgets.fit_report(7.0, 16, "qlora", 0.0, 1.0)


def test_show_fit_prints_one_line_and_returns_the_fit(capsys):
    f = widgets.show_fit(6.999999999999999, 16, "lora")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "7B, lora: needs 14.1 GiB" in out and "fits in 16 GiB" in out
    assert f.fits and f.method == "lora"


def test_rank_report():
    torch.manual_seed(0)
    S = torch.linalg.svdvals(torch.randn(128, 128).double())
    html = widgets.rank_report((128, 128), S, 8, "q_proj")
    assert "8.0x fewer" in html and "keeps" in html
    assert "more than the matrix itself" in widgets.rank_report((128, 128), S, 100, "q_proj")
    assert "rank at most 128" in widgets.rank_report((128, 128), S, 200, "q_proj")


def test_explorers_display_a_figure_then_the_widget(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    widgets.fit_explorer()
    deltas = {f"model.layers.{i}.self_attn.q_proj": torch.randn(128, 128) for i in range(2)}
    deltas["lm_head"] = torch.randn(64, 128)
    widgets.rank_explorer(deltas)
    kinds = [type(o).__name__ for o in shown]
    # the figure, the report for the starting values (HTML, inside the widget's output), the widget
    assert kinds == ["Figure", "HTML", "VBox", "Figure", "HTML", "VBox"], kinds
    shown = [o for o in shown if type(o).__name__ != "HTML"]
    labels = [c.description for c in shown[1].children[1:-1]]
    assert all(widget.style.description_width.endswith("ch") for widget in shown[1].children[1:-1])
    assert max(map(len, labels)) + 2 == int(shown[1].children[1].style.description_width[:-2]), "labels fit"
    assert [o.options for o in shown[3].children[1:2]] == [tuple(n for n in deltas if n != "lm_head")]


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="Fix: pass weight_deltas"):
        widgets.rank_explorer({"lm_head": torch.randn(4, 4)})
    with pytest.raises(ValueError, match="Fix: pass one of them"):
        widgets.choice("method", ["full", "lora"], "qlora")
