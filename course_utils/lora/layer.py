"""The LoRA layer: h = W0 x + B(A(dropout(x))) * scaling, with W0 frozen and only A (r x in) and B (out x r) trained.

The layout mirrors PEFT's lora.Linear (`base_layer`, `lora_A[name]`, `lora_B[name]`, `lora_dropout[name]`; same init,
same construction order, same forward), so the same seed gives PEFT's A and bit-identical outputs and gradients.
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..surgery import is_linear_like

ALL_LINEAR = "all-linear"
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


def _validate(r, alpha, dropout, init) -> str:
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


def _is_float_linear(module: nn.Module) -> bool:
    # bitsandbytes' Linear4bit subclasses nn.Linear, so check the weight too: packed uint8 cannot take += delta.
    w = getattr(module, "weight", None)
    return isinstance(module, nn.Linear) and type(w) is nn.Parameter and w.dtype.is_floating_point


def _device_and_dtype(base: nn.Module) -> tuple[torch.device, torch.dtype]:
    w = getattr(base, "weight", None)
    if isinstance(w, torch.Tensor):
        return w.device, w.dtype
    # A quantized base keeps its weight in buffers: ask for its compute dtype instead of dequantizing it.
    t = next(itertools.chain(base.parameters(), base.buffers()), None)
    return (t.device if t is not None else torch.device("cpu")), getattr(base, "compute_dtype", torch.float32)


class _PerAdapter(nn.ModuleDict):
    """One nn.Linear per adapter name; `.weight` is the active adapter's, the single-adapter shorthand."""

    active = "default"

    @property
    def weight(self) -> nn.Parameter:
        return self[self.active].weight


class LoRALinear(nn.Module):
    """A frozen linear layer W0 plus low-rank adapters: forward = base(x) + B(A(dropout(x))) * scaling."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, init="default",
                 use_rslora: bool = False, adapter_name: str = "default"):
        super().__init__()
        if not is_linear_like(base):
            raise TypeError(f"LoRALinear wraps a Linear layer, got a {type(base).__name__}. Fix: pass an nn.Linear "
                            "(or a layer with in_features, out_features and weight, like NF4Linear).")
        self.base_layer = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.lora_A, self.lora_B, self.lora_dropout = _PerAdapter(), _PerAdapter(), nn.ModuleDict()
        self.specs: dict[str, AdapterSpec] = {}
        self.active_adapter = adapter_name
        self.merged_adapter: str | None = None
        self.adapters_disabled = False
        self.add_adapter(adapter_name, r, alpha, dropout, init, use_rslora)
        base.requires_grad_(False)  # W0 never trains: that is the point
        self.set_adapter(adapter_name)

    # --- the course's names for the active adapter -------------------------------------------------------
    base = property(lambda self: self.base_layer)
    A = property(lambda self: self.lora_A[self.active_adapter].weight)
    B = property(lambda self: self.lora_B[self.active_adapter].weight)
    r = property(lambda self: self.specs[self.active_adapter].r)
    alpha = property(lambda self: self.specs[self.active_adapter].alpha)
    use_rslora = property(lambda self: self.specs[self.active_adapter].use_rslora)
    scaling = property(lambda self: self.specs[self.active_adapter].scaling)
    merged = property(lambda self: self.merged_adapter is not None)
    adapter_names = property(lambda self: list(self.specs))

    def add_adapter(self, name: str, r: int, alpha: float, dropout: float = 0.0, init="default",
                    use_rslora: bool = False) -> None:
        init = _validate(r, alpha, dropout, init)
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"adapter_name must be a non-empty string without dots, got {name!r}. Fix: e.g. 'task_b'.")
        if name in self.specs:
            raise ValueError(f"adapter '{name}' already exists on this layer. Fix: pick another adapter_name "
                             f"(e.g. '{name}_2'), or load new weights into it with load_lora_state_dict.")
        if self.merged:
            raise RuntimeError("Cannot add an adapter to a merged layer. Fix: call unmerge() (unmerge_lora) first.")
        device, dtype = _device_and_dtype(self.base_layer)
        # Adapters train in fp32 unless the base is fp32/fp64 already (PEFT's autocast_adapter_dtype=True).
        kw = dict(bias=False, device=device, dtype=dtype if dtype in (torch.float32, torch.float64) else torch.float32)
        # Same construction order as PEFT (A, B, then re-init), so the same seed gives PEFT's A.
        A, B = nn.Linear(self.in_features, r, **kw), nn.Linear(r, self.out_features, **kw)
        with torch.no_grad():
            if init == "gaussian":
                nn.init.normal_(A.weight, std=1 / r)  # PEFT: std 1/r, not 1/sqrt(r)
            else:
                nn.init.kaiming_uniform_(A.weight, a=math.sqrt(5))  # U(+-1/sqrt(in_features))
            if init == "nonzero_B":  # DEMO ONLY: Delta W != 0 at step 0, so the adapted model starts off changed
                nn.init.kaiming_uniform_(B.weight, a=math.sqrt(5))
            else:
                nn.init.zeros_(B.weight)  # Delta W = B A = 0 at step 0: training starts from the base model
        self.lora_A[name], self.lora_B[name] = A, B
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

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        name = self.active_adapter
        if self.merged_adapter is not None or self.adapters_disabled or name not in self.specs:
            return result  # merged: W0 already holds W0 + Delta W, so the adapter path would count it twice
        dropout = self.lora_dropout[name]
        if not isinstance(dropout, nn.Identity):  # skip the call when p = 0 (PEFT uses nn.Identity there)
            x = dropout(x)  # on the adapter's input only: the frozen path W0 x stays intact
        A = self.lora_A[name].weight
        if x.dtype != A.dtype:
            x = x.to(A.dtype)
        # Two thin matmuls (in -> r -> out), never the out x in matrix B A. Same op order as PEFT, so results are
        # bit-identical to PEFT's (scaling the thin (..., r) tensor would save a pass but round differently).
        out = result + F.linear(F.linear(x, A), self.lora_B[name].weight) * self.specs[name].scaling
        return out if out.dtype == result.dtype else out.to(result.dtype)

    def delta_weight(self, adapter_name: str | None = None) -> torch.Tensor:
        """Delta W = (B @ A) * scaling, shape (out_features, in_features): what merge() adds to W0."""
        name = self._existing(adapter_name or self.active_adapter)
        A, B = self.lora_A[name].weight, self.lora_B[name].weight
        if A.device.type == "cpu" and A.dtype in (torch.float16, torch.bfloat16):  # slow half matmuls on CPU
            return ((B.float() @ A.float()) * self.specs[name].scaling).to(A.dtype)
        return (B @ A) * self.specs[name].scaling

    @torch.no_grad()
    def check_mergeable(self) -> torch.Tensor:
        """Delta W of the active adapter, after refusing anything that would corrupt W0 (PEFT's safe_merge idea)."""
        if self.merged:
            raise RuntimeError(f"This layer is already merged (adapter '{self.merged_adapter}'): merging again would "
                               "add Delta W twice. Fix: skip this merge, or call unmerge() first.")
        name = self._existing(self.active_adapter)
        delta = self.delta_weight(name)
        if not torch.isfinite(delta).all():
            raise ValueError(f"Delta W of adapter '{name}' contains NaN/Inf (training probably diverged), so merging "
                             "would corrupt W0; W0 was left untouched. Fix: retrain with a lower learning rate or "
                             "gradient clipping, or load a good adapter.")
        if _is_float_linear(self.base_layer) and not torch.isfinite(self.base_layer.weight).all():
            raise ValueError("The base weight W0 contains NaN/Inf, so the merged weight would too. "
                             "Fix: reload the base model; W0 was left untouched.")
        if not _is_float_linear(self.base_layer) and not callable(getattr(self.base_layer, "merge_delta", None)):
            raise TypeError(f"Cannot merge into a {type(self.base_layer).__name__}: its weight is not a plain float "
                            "tensor (e.g. 4-bit packed codes). Fix: keep the adapter unmerged, or give the base a "
                            "merge_delta(delta) method (course_utils.nf4.NF4Linear has one).")
        return delta

    @torch.no_grad()
    def merge(self):
        """W0 <- W0 + Delta W, so inference costs one matmul. Returns the base hook's result (e.g. rounding error)."""
        delta = self.check_mergeable()
        hook, out = getattr(self.base_layer, "merge_delta", None), None
        if callable(hook):
            out = hook(delta)
        else:
            W = self.base_layer.weight
            merged = W + delta.to(W.dtype)
            if not torch.isfinite(merged).all():
                raise ValueError(f"W0 + Delta W overflows {W.dtype}. Fix: merge in float32 (model.float()) first.")
            W.copy_(merged)
        self.merged_adapter = self.active_adapter
        return out

    @torch.no_grad()
    def unmerge(self):
        """W0 <- W0 - Delta W (exact up to float rounding on a float base; a quantized base keeps its rounding)."""
        if not self.merged:
            raise RuntimeError("This layer is not merged, so there is nothing to unmerge. "
                               "Fix: call merge() first, or check `layer.merged` before unmerging.")
        delta, base = self.delta_weight(self.merged_adapter), self.base_layer
        out = None
        if callable(getattr(base, "unmerge_delta", None)):
            out = base.unmerge_delta(delta)
        elif callable(getattr(base, "merge_delta", None)):
            out = base.merge_delta(-delta)
        else:
            base.weight.sub_(delta.to(base.weight.dtype))
        self.merged_adapter = None
        return out

    def _existing(self, name: str) -> str:
        if name not in self.specs:
            raise KeyError(f"This layer has no adapter '{name}'; it has {list(self.specs)}. Fix: add_lora(..., "
                           f"adapter_name='{name}') first, or use one of those names.")
        return name

    def extra_repr(self) -> str:
        name = self.active_adapter
        spec = f", r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}" if name in self.specs else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, adapters={list(self.specs)}, "
                f"active='{name}'{spec}, merged={self.merged}")
