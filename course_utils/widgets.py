"""Interactive explorers, for the places where moving a slider teaches more than reading a table.

    from course_utils.widgets import fit_explorer, rank_explorer
    fit_explorer()            # 02: does model X fit my GPU? (course_utils.memory)
    rank_explorer(deltas)     # 05: rank r vs the share of a real fine-tune's ||dW||^2 it keeps (course_utils.spectrum)

Each explorer shows a static figure first (the same trade-off for readers without a kernel: the site, a printout),
then labelled controls and a result that is recomputed whenever a control moves. `explorer()` does what every one
of them needs, so a new one is a report function plus a table of controls (see fit_explorer):
- numbers reach the report on the slider's own grid: ipywidgets' sliders send floats such as 6.999999999999999 for
  7.0, which course_utils' whole-number checks would rightly reject;
- labels are shown in full (ipywidgets cuts descriptions off at ~80 px by default);
- the report returns HTML that is displayed; nothing is echoed as a repr;
- an error in a report appears in the widget's output, where the student (and tests/test_browser.py) sees it.
"""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Callable, Mapping, Sequence

from .memory import GIB, Fit, fits_on_gpu

COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")  # one per bar segment


# ------------------------------------------------------------------------------------------------ the machinery

def slider(label: str, value: float, min: float, max: float, step: float, readout_format: str | None = None):
    """An IntSlider when value, bounds and step are whole numbers, else a FloatSlider; `label` is shown in full."""
    import ipywidgets as W

    whole = all(float(x).is_integer() for x in (value, min, max, step))
    cls = W.IntSlider if whole else W.FloatSlider
    kwargs = {} if whole else {"readout_format": readout_format or f".{_decimals(step)}f"}
    return cls(value=value, min=min, max=max, step=step, description=label, continuous_update=True, **kwargs)


def choice(label: str, options: Sequence, value=None):
    """Toggle buttons for up to 4 options, a dropdown for more."""
    import ipywidgets as W

    options = list(options)
    value = options[0] if value is None else value
    if value not in options:
        raise ValueError(f"{value!r} is not one of the options {options}. Fix: pass one of them as value.")
    cls = W.ToggleButtons if len(options) <= 4 else W.Dropdown
    return cls(options=options, value=value, description=label)


def snap(control, value):
    """The control's value on its own grid: min + k * step, rounded to the step's decimals (7.0, never 6.99...)."""
    step = getattr(control, "step", None)
    if step is None or isinstance(value, str):
        return value
    k = round((value - control.min) / step)
    if isinstance(control.step, int) and isinstance(control.min, int):
        return int(control.min + k * step)
    return round(control.min + k * step, _decimals(step))


def explorer(title: str, report: Callable[..., str], controls: Mapping[str, object], figure=None) -> None:
    """Display `figure` (static, may be None), then `title`, the controls and report(**values) as HTML.

    report gets one keyword per control, already snapped to the control's grid, and returns HTML.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    if figure is not None:
        display(figure)
        plt.close(figure)  # shown once, here; not again by the inline backend at the end of the cell
    width = max(len(c.description) for c in controls.values()) + 2
    for c in controls.values():
        c.style.description_width = f"{width}ch"
        c.layout.width = f"{width + 50}ch"  # room for the full label, the track and the readout

    def show(**values):
        display(HTML(report(**{name: snap(controls[name], v) for name, v in values.items()})))

    out = W.interactive_output(show, dict(controls))
    display(W.VBox([W.HTML(f"<b>{title}</b>"), *controls.values(), out]))


def bar_html(parts: Mapping[str, float], scale: float, unit: str, marker: float | None = None,
             marker_label: str = "") -> str:
    """One horizontal stacked bar (a div per part, widths relative to `scale`) and its legend, as HTML."""
    segments, legend = [], []
    for (name, value), color in zip(parts.items(), COLORS * 3):
        share = 100 * max(value, 0) / scale
        segments.append(f'<div title="{name}" style="width:{share:.2f}%;background:{color}"></div>')
        legend.append(f'<span style="color:{color}">&#9632;</span> {name} {value:,.1f} {unit}')
    mark = ""
    if marker is not None:
        mark = (f'<div style="position:absolute;left:{100 * marker / scale:.2f}%;top:-3px;bottom:-3px;'
                f'border-left:2px dashed black" title="{marker_label}"></div>')
    return (f'<div style="position:relative;display:flex;height:14px;width:min(100%,560px);background:#eee">'
            f'{"".join(segments)}{mark}</div><div style="font-size:90%">{" &nbsp; ".join(legend)}'
            f'{f" &nbsp; ┆ {marker_label}" if marker_label else ""}</div>')


def _decimals(step) -> int:
    return max(0, -Decimal(str(step)).normalize().as_tuple().exponent)


# ------------------------------------------------------------------------------------------------ 02: memory

def _fit(params_billion: float, gpu_gib: float, method: str, activation_gib: float, lora_fraction: float) -> Fit:
    # whole numbers of parameters and bytes, whatever float arithmetic the caller's 7.0 went through
    return fits_on_gpu(round(params_billion * 1e9), gpu_gib, method, lora_fraction=lora_fraction,
                       activation_bytes=round(activation_gib * GIB))


def _fit_line(f: Fit, params_billion: float, activation_gib: float) -> str:
    parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in f.breakdown.items() if k != "total")
    verdict = "fits" if f.fits else "does NOT fit"
    return (f"{params_billion:g}B, {f.method}: needs {f.needed_gib:.1f} GiB ({parts}, activations "
            f"{activation_gib:.1f}) -> {verdict} in {f.gpu_gib:g} GiB")


def show_fit(params_billion: float = 7.0, gpu_gib: float = 16, method: str = "qlora", activation_gib: float = 0.0,
             lora_fraction: float = 0.01) -> Fit:
    """Print one line (what is needed, part by part, and whether it fits) and return the Fit."""
    f = _fit(params_billion, gpu_gib, method, activation_gib, lora_fraction)
    print(_fit_line(f, params_billion, activation_gib))
    return f


def fit_report(params_billion: float, gpu_gib: float, method: str, activation_gib: float,
               lora_percent: float) -> str:
    """The fit explorer's result: the verdict, the one-line breakdown and a bar against the GPU's memory."""
    f = _fit(params_billion, gpu_gib, method, activation_gib, lora_percent / 100)
    parts = {"weights": f.breakdown["weights"], "gradients": f.breakdown["gradients"],
             "Adam state": f.breakdown["optimizer_state"], "master weights": f.breakdown["master_weights"]}
    parts = {k: v / GIB for k, v in parts.items() if v} | {"activations": activation_gib}
    verdict = ("<b style='color:#2a7d2a'>fits</b>" if f.fits else "<b style='color:#b22222'>does NOT fit</b>")
    head = (f"{params_billion:g}B parameters, {method}: needs <b>{f.needed_gib:,.1f} GiB</b> &rarr; {verdict} "
            f"in {gpu_gib:g} GiB")
    scale = 1.05 * max(f.needed_gib, gpu_gib)
    return head + bar_html(parts, scale, "GiB", marker=gpu_gib, marker_label=f"GPU: {gpu_gib:g} GiB")


def fit_figure(gpus: Sequence[float] = (16, 24, 80)):
    """Memory needed vs model size for full fine-tuning, LoRA and QLoRA, against common GPU sizes (no activations)."""
    import matplotlib.pyplot as plt

    from .plots import plot_lines

    sizes = [0.5 * k for k in range(1, 161)]
    needed = {m: [_fit(b, 80, m, 0.0, 0.01).needed_gib for b in sizes] for m in ("full", "lora", "qlora")}
    _, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    plot_lines(sizes, {"full fine-tuning": needed["full"], "LoRA (bf16 base)": needed["lora"],
                       "QLoRA (NF4 base)": needed["qlora"]}, markers=False, logy=True, ax=ax,
               title="Training memory vs model size (1% adapters, no activations)",
               xlabel="model size (billion parameters)", ylabel="memory needed (GiB, log scale)")
    for g in gpus:
        ax.axhline(g, color="black", linestyle="--", linewidth=0.8)
        ax.annotate(f"{g:g} GiB GPU", (sizes[-1], g), ha="right", va="bottom", fontsize=8)
    return ax.figure


def fit_explorer(params_billion: float = 7.0, gpu_gib: float = 16, method: str = "qlora",
                 activation_gib: float = 0.0, lora_percent: float = 1.0) -> None:
    """Chapter 02: the memory calculator with sliders, after a static figure of the same question."""
    controls = {
        "params_billion": slider("model size (billion parameters)", params_billion, 0.5, 80, 0.5, ".1f"),
        "gpu_gib": choice("GPU memory (GiB)", [8, 12, 16, 24, 40, 48, 80], gpu_gib),
        "method": choice("method", ["full", "lora", "qlora"], method),
        "activation_gib": slider("activations (GiB)", activation_gib, 0, 40, 0.5, ".1f"),
        "lora_percent": slider("LoRA adapters (% of parameters)", lora_percent, 0.1, 5, 0.1, ".1f"),
    }
    explorer("Does model X fit my GPU?", fit_report, controls, figure=fit_figure())


# ------------------------------------------------------------------------------------------------ 05: rank

def _spectra(deltas: Mapping) -> dict:
    """{name: (shape, singular values)} of the matrices LoRA adapts (the transformer's linear layers, not lm_head)."""
    from .models import LINEAR_NAMES
    from .spectrum import singular_values

    return {name: (tuple(w.shape), singular_values(w)) for name, w in deltas.items()
            if w.dim() == 2 and name.rsplit(".", 1)[-1] in LINEAR_NAMES}


def rank_report(shape: tuple[int, int], S, r: int, name: str = "") -> str:
    """What a rank-r LoRA of a d x k matrix keeps of ||dW||^2 (its singular values S), and what it trains."""
    from .spectrum import cumulative_energy

    d, k = shape
    r_eff = min(r, len(S))
    kept = float(cumulative_energy(S)[r_eff - 1])
    lora, full = r_eff * (d + k), d * k
    note = f" (a {d} x {k} matrix has rank at most {len(S)})" if r > len(S) else ""
    cost = (f"<b>{full / lora:.1f}x fewer</b>" if lora < full else
            f"<b>more than the matrix itself</b>: LoRA saves only while r < {d * k / (d + k):.0f}")
    head = (f"{name} {d} x {k}, r = {r_eff}{note}: keeps <b>{kept:.1%}</b> of ||dW||&sup2; (relative error "
            f"{math.sqrt(max(0.0, 1 - kept)):.3f}); trains {lora:,} numbers instead of {full:,} ({cost})")
    return (head + bar_html({"||dW||² kept (%)": 100 * kept}, 100, "")
            + bar_html({"numbers trained (% of the full matrix)": 100 * min(lora, full) / full}, 100, ""))


def rank_figure(deltas: Mapping):
    """Left: share of ||dW||^2 kept vs r, per layer type (mean over layers); right: what each rank trains."""
    import matplotlib.pyplot as plt

    from .plots import plot_lines
    from .spectrum import cumulative_energy

    spectra = _spectra(deltas)
    by_type: dict[str, list] = {}
    for name, (shape, S) in spectra.items():
        by_type.setdefault(name.rsplit(".", 1)[-1], []).append((shape, cumulative_energy(S).tolist()))
    ranks = list(range(1, min(len(c) for v in by_type.values() for _, c in v) + 1))
    kept = {t: [sum(c[r - 1] for _, c in v) / len(v) for r in ranks] for t, v in by_type.items()}
    shapes: dict[tuple, list[str]] = {}  # same cost for d x k and k x d: one line per shape
    for t, v in by_type.items():
        shapes.setdefault(tuple(sorted(v[0][0])), []).append(t)
    cost = {f"{', '.join(ts)} ({k}x{d})": [100 * r * (d + k) / (d * k) for r in ranks] for (d, k), ts in shapes.items()}
    _, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    plot_lines(ranks, kept, markers=False, logx=True, ax=axes[0], title="What rank r keeps",
               xlabel="LoRA rank r (log scale)", ylabel="share of ||dW||² kept")
    plot_lines(ranks, cost, markers=False, logx=True, logy=True, ax=axes[1], title="What rank r trains",
               xlabel="LoRA rank r (log scale)", ylabel="numbers trained (% of matrix)")
    for ax in axes:
        ax.axvline(8, color="black", linestyle="--", linewidth=0.8)
    return axes[0].figure


def rank_explorer(deltas: Mapping, r: int = 8, matrix: str | None = None) -> None:
    """Chapter 05: pick a weight matrix of a real fine-tune's dW and a rank; see what that LoRA keeps and costs.

    deltas: {name: dW} as returned by course_utils.spectrum.weight_deltas.
    """
    spectra = _spectra(deltas)
    if not spectra:
        raise ValueError("deltas holds no q_proj/k_proj/.../down_proj weight changes. "
                         "Fix: pass weight_deltas(before, model) of the course model.")
    names = list(spectra)
    matrix = matrix or next((n for n in names if n.endswith("q_proj")), names[0])
    max_rank = max(len(S) for _, S in spectra.values())
    controls = {"matrix": choice("weight matrix", names, matrix), "r": slider("LoRA rank r", r, 1, max_rank, 1)}

    def report(matrix: str, r: int) -> str:
        shape, S = spectra[matrix]
        return rank_report(shape, S, r, name=matrix)

    explorer("Rank r: what a LoRA of this dW keeps, and what it trains", report, controls,
             figure=rank_figure(deltas))
