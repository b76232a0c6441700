"""Figures and small text tables the notebooks share, so every chapter's plots look and read the same way.

Every plot helper takes a title and axis labels (with units) as required arguments: a figure without them
teaches nothing. Helpers draw on `ax` if given (for side-by-side panels) and return it; the notebook calls
plt.show(). Nothing here computes a result: notebooks compute, these only display.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt


def _axes(ax, figsize=(6.4, 3.6)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _finish(ax, title: str, xlabel: str, ylabel: str, legend: bool):
    for what, text in (("title", title), ("xlabel", xlabel), ("ylabel", ylabel)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what} must be a non-empty string, got {text!r}: say what is plotted, with units "
                             f"(e.g. ylabel='memory (GiB)')")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False)
    return ax


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values: a noisy minibatch loss curve, readable."""
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}: use 1 for no smoothing")
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss_curves(curves: Mapping[str, Sequence[float]], title: str, xlabel: str = "training step",
                     ylabel: str = "loss (nats per token)", smooth: int = 1, logy: bool = False, ax=None):
    """One line per named loss curve; smooth > 1 also draws the raw curve faintly behind the trailing mean."""
    if not curves:
        raise ValueError("curves is empty: pass {'label': losses}, e.g. {'LoRA': result.losses}")
    ax = _axes(ax)
    for label, losses in curves.items():
        losses = list(losses)
        steps = range(1, len(losses) + 1)
        if smooth > 1:
            (line,) = ax.plot(steps, losses, alpha=0.25, linewidth=1)
            ax.plot(steps, moving_average(losses, smooth), color=line.get_color(), label=label)
        else:
            ax.plot(steps, losses, label=label)
    if logy:
        ax.set_yscale("log")
    return _finish(ax, title, xlabel, ylabel, legend=True)


def plot_lines(x: Sequence[float], ys: Mapping[str, Sequence[float]], title: str, xlabel: str, ylabel: str,
               logx: bool = False, logy: bool = False, markers: bool = True, ax=None):
    """Several y-series over one shared x (e.g. error vs depth per dtype)."""
    ax = _axes(ax)
    for label, y in ys.items():
        y = list(y)
        if len(y) != len(x):
            raise ValueError(f"series {label!r} has {len(y)} values but x has {len(x)}: give one y per x")
        ax.plot(x, y, marker="o" if markers else None, markersize=3, label=label)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    return _finish(ax, title, xlabel, ylabel, legend=True)


def plot_bars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, ylabel: str,
              fmt: str = "{:.2f}", hline: float | None = None, hline_label: str | None = None, logy: bool = False,
              ax=None):
    """Labelled bars with each value written on top; optional horizontal reference line (e.g. a GPU's memory)."""
    labels, values = list(labels), list(values)
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} values: give one label per bar")
    ax = _axes(ax)
    bars = ax.bar(labels, values)
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2)
    _hline(ax, hline, hline_label)
    if logy:
        ax.set_yscale("log")
    ax.margins(y=0.15)
    return _finish(ax, title, xlabel, ylabel, legend=hline_label is not None)


def plot_stacked_bars(labels: Sequence[str], parts: Mapping[str, Sequence[float]], title: str, xlabel: str,
                      ylabel: str, fmt: str = "{:.0f}", hline: float | None = None,
                      hline_label: str | None = None, ax=None):
    """One bar per label, stacked from the named parts (bottom first); the total is written on top."""
    labels = list(labels)
    if not parts:
        raise ValueError("parts is empty: pass {'weights': [...], 'gradients': [...]}, one value per label")
    for name, vals in parts.items():
        if len(list(vals)) != len(labels):
            raise ValueError(f"part {name!r} has {len(list(vals))} values for {len(labels)} bars: one per label")
    ax = _axes(ax)
    bottom = [0.0] * len(labels)
    for name, vals in parts.items():
        vals = list(vals)
        ax.bar(labels, vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for i, total in enumerate(bottom):
        ax.annotate(fmt.format(total), (i, total), ha="center", va="bottom", xytext=(0, 2), textcoords="offset points")
    _hline(ax, hline, hline_label)
    ax.margins(y=0.12)
    return _finish(ax, title, xlabel, ylabel, legend=True)


def _hline(ax, y, label):
    if y is not None:
        ax.axhline(y, color="black", linestyle="--", linewidth=1, label=label)


def text_table(rows: Sequence[Sequence], headers: Sequence[str], max_width: int = 48) -> str:
    """A fixed-width text table (left-aligned; long cells cut with '…'): stable in stored notebook outputs."""
    headers = [str(h) for h in headers]
    body = []
    for row in rows:
        row = list(row)
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} headers: {row!r}")
        body.append([_cell(c, max_width) for c in row])
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, body)])


def _cell(value, max_width: int) -> str:
    text = str(value).replace("\r", "").replace("\n", "⏎").replace("\t", " ")  # a newline would break the row
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


# --- chapters 04-06: intrinsic dimension, SVD spectra --------------------------------------------------------

def plot_intrinsic_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str,
                          threshold: float = 0.9, marks: Mapping[str, int | None] | None = None,
                          xlabel: str = "subspace dimension d (trainable numbers, log scale)",
                          ylabel: str = "fraction of full fine-tuning's gain", ax=None):
    """Li et al.'s plot: fraction of the full fine-tune reached vs d, one line per model, the threshold dashed.

    `marks` {label: d90} puts a marker on each curve where it first reaches the threshold (None: never did).
    """
    if not curves:
        raise ValueError("curves is empty: pass {'pretrained': (ds, fractions), ...}")
    ax = _axes(ax)
    labelled = set()  # seeds often share a d90: one label per d, or the texts print on top of each other
    for label, (ds, fr) in curves.items():
        ds, fr = list(ds), list(fr)
        if len(ds) != len(fr):
            raise ValueError(f"curve {label!r} has {len(ds)} d values and {len(fr)} fractions: give one per d")
        (line,) = ax.plot(ds, fr, marker="o", markersize=4, label=label)
        d90 = (marks or {}).get(label)
        if d90 is not None:
            ax.plot([d90], [fr[ds.index(d90)]], marker="*", markersize=14, color=line.get_color(), linestyle="none")
            if d90 in labelled:
                continue
            labelled.add(d90)
            ax.annotate(f"d{round(threshold * 100)} = {d90:,}", (d90, fr[ds.index(d90)]), xytext=(6, -14),
                        textcoords="offset points", color=line.get_color())
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"{threshold:.0%} of full fine-tuning")
    ax.set_xscale("log")
    return _finish(ax, title, xlabel, ylabel, legend=True)


def plot_spectrum(spectra: Mapping[str, Sequence[float]], title: str, r: int | None = None, axes=None):
    """Two panels per set of singular values: sigma_i / sigma_1 (log) and the cumulative share of ||M||_F^2.

    A vertical line at `r` marks what a rank-r LoRA could keep. Returns the two axes.
    """
    if not spectra:
        raise ValueError("spectra is empty: pass {'q_proj': singular_values(dW), ...}")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for label, S in spectra.items():
        S = [float(s) for s in S]
        total = sum(s * s for s in S)
        cum, run = [], 0.0
        for s in S:
            run += s * s
            cum.append(run / total)
        i = range(1, len(S) + 1)
        axes[0].plot(i, [s / S[0] for s in S], label=label)
        axes[1].plot(i, cum, label=label)
    axes[0].set_yscale("log")
    for ax in axes:
        if r is not None:
            ax.axvline(r, color="black", linestyle="--", linewidth=1, label=f"r = {r}")
        ax.set_xscale("log")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title must be a non-empty string, got {title!r}: say whose spectrum this is")
    axes[0].figure.suptitle(title)
    _finish(axes[0], "singular values", "index i (log scale)", "sigma_i / sigma_1 (log scale)", legend=True)
    _finish(axes[1], "cumulative energy", "rank r (log scale)", "share of ||M||_F^2 in the top r", legend=False)
    return axes
