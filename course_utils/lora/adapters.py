"""Bookkeeping for several named adapters on one layer: which exist, their settings, which one is active.

This is what lets one base model carry several behaviours ("poet", "coder") and switch between them without touching
W0. No math lives here, so layer.py (how an adapter is built and what it computes) reads like minimal.py.

    AdapterSpec     one adapter's settings (r, alpha, dropout, init, use_rslora) and the scaling they give
    validate        checks r, alpha, dropout and init, naming the fix
    NamedAdapters   the per-adapter slots lora_A[name], lora_B[name], lora_dropout[name] (PEFT's names and layout),
                    the active adapter, the merged / disabled flags, and the active adapter's shorthand (A, B, r, ...)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch.nn as nn

from ..surgery import is_linear_like

INITS = ("default", "gaussian", "nonzero_B")  # nonzero_B exists only to show what B = 0 buys (notebook 06)


@dataclass(frozen=True)
class AdapterSpec:
    r: int
    alpha: float
    dropout: float
    init: str
    use_rslora: bool

    @property
    def scaling(self) -> float:
        # rsLoRA keeps the update's size stable as r grows; plain LoRA shrinks it as 1/r.
        return self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r


def validate(r, alpha, dropout, init) -> str:
    """Check the hyperparameters before anything is built; returns init in its canonical spelling."""
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r <= 0:
        raise ValueError(f"r must be a positive integer (the adapter's rank), got r={r!r}. "
                         "Fix: pass a whole number such as r=8 (typical values are 4 to 64).")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(f"alpha must be a number > 0 (the update is scaled by alpha / r), got alpha={alpha!r}. "
                         "Fix: pass e.g. alpha=r (scaling 1) or alpha=2*r.")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1) (the chance of zeroing an adapter input), got {dropout=!r}. "
                         "Fix: use 0.0 (off) up to about 0.1 (QLoRA's value).")
    init = "default" if init is True else init  # PEFT spells the default init_lora_weights=True
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got init={init!r}. Fix: use init='default' (PEFT's).")
    return init


class _PerAdapter(nn.ModuleDict):
    """One nn.Linear per adapter name; `.weight` is the active adapter's, the single-adapter shorthand."""

    active = "default"

    @property
    def weight(self):
        return self[self.active].weight


class NamedAdapters(nn.Module):
    """A frozen linear layer (`base_layer`) with room for named adapters. Subclasses define `new_adapter(r, init)`
    (build A and B) and forward; this class files them under their names and tracks which one runs."""

    def __init__(self, base: nn.Module):
        super().__init__()
        if not is_linear_like(base):
            raise TypeError(f"LoRALinear wraps a Linear layer, got a {type(base).__name__}. Fix: pass an nn.Linear "
                            "(or a layer with in_features, out_features and weight, like NF4Linear).")
        self.base_layer = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.lora_A, self.lora_B, self.lora_dropout = _PerAdapter(), _PerAdapter(), nn.ModuleDict()
        self.specs: dict[str, AdapterSpec] = {}
        self.active_adapter = "default"
        self.merged_adapter: str | None = None  # the adapter W0 currently holds, if any
        self.adapters_disabled = False

    def new_adapter(self, r: int, init: str) -> tuple[nn.Linear, nn.Linear]:
        raise NotImplementedError

    def add_adapter(self, name: str, r: int, alpha: float, dropout: float = 0.0, init="default",
                    use_rslora: bool = False) -> None:
        init = validate(r, alpha, dropout, init)
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"adapter_name must be a non-empty string without dots, got {name!r}. Fix: e.g. 'task_b'.")
        if name in self.specs:
            raise ValueError(f"adapter '{name}' already exists on this layer. Fix: pick another adapter_name "
                             f"(e.g. '{name}_2'), or load new weights into it with load_lora_state_dict.")
        if self.merged:
            raise RuntimeError("Cannot add an adapter to a merged layer. Fix: call unmerge() (unmerge_lora) first.")
        self.lora_A[name], self.lora_B[name] = self.new_adapter(int(r), init)
        self.lora_dropout[name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.specs[name] = AdapterSpec(int(r), alpha, float(dropout), init, bool(use_rslora))

    def set_adapter(self, name: str) -> None:
        """Make `name` the adapter that forward uses and trains; the others are frozen (as PEFT does)."""
        if self.merged and name != self.merged_adapter:
            raise RuntimeError(f"Adapter '{self.merged_adapter}' is merged into W0. Fix: unmerge before switching.")
        self.active_adapter = self.lora_A.active = self.lora_B.active = name
        for key in self.specs:
            self.lora_A[key].requires_grad_(key == name)
            self.lora_B[key].requires_grad_(key == name)

    def adapter_to_run(self) -> str | None:
        """The adapter forward adds to W0 x, or None: merged (W0 holds it already), disabled, or absent here."""
        name = self.active_adapter
        if self.merged_adapter is not None or self.adapters_disabled or name not in self.specs:
            return None
        return name

    def existing(self, name: str) -> str:
        if name not in self.specs:
            raise KeyError(f"This layer has no adapter '{name}'; it has {list(self.specs)}. Fix: add_lora(..., "
                           f"adapter_name='{name}') first, or use one of those names.")
        return name

    # The course's single-adapter names (layer.A, layer.r, ...), all read from the active adapter.
    base = property(lambda self: self.base_layer)
    A = property(lambda self: self.lora_A[self.active_adapter].weight)
    B = property(lambda self: self.lora_B[self.active_adapter].weight)
    r = property(lambda self: self.specs[self.active_adapter].r)
    alpha = property(lambda self: self.specs[self.active_adapter].alpha)
    use_rslora = property(lambda self: self.specs[self.active_adapter].use_rslora)
    scaling = property(lambda self: self.specs[self.active_adapter].scaling)
    merged = property(lambda self: self.merged_adapter is not None)
    adapter_names = property(lambda self: list(self.specs))

    def extra_repr(self) -> str:
        name = self.active_adapter
        spec = f", r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}" if name in self.specs else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, adapters={list(self.specs)}, "
                f"active='{name}'{spec}, merged={self.merged}")
