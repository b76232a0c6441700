"""LoRALinear: the layer of minimal.py, holding any number of named adapters (PEFT's lora.Linear, number for number).

    h = W0 x + B(A(dropout(x))) * scaling         scaling = alpha / r  (rsLoRA: alpha / sqrt(r))

This file is the math: how an adapter is built (new_adapter), what it computes (forward, delta_weight) and how it
moves into W0 and back (merge, unmerge). Which adapters exist and which one runs is adapters.py's job.
Layout, init, construction order and forward follow PEFT's lora.Linear (`base_layer`, `lora_A[name]`, `lora_B[name]`,
`lora_dropout[name]`), so the same seed gives PEFT's A, outputs and gradients are bit-identical to PEFT's, and
state dict keys map one to one.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapters import NamedAdapters


class LoRALinear(NamedAdapters):
    """A frozen linear layer W0 plus low-rank adapters: forward = base(x) + B(A(dropout(x))) * scaling."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, init="default",
                 use_rslora: bool = False, adapter_name: str = "default"):
        super().__init__(base)
        self.add_adapter(adapter_name, r, alpha, dropout, init, use_rslora)
        base.requires_grad_(False)  # W0 never trains: that is the point
        self.set_adapter(adapter_name)

    def new_adapter(self, r: int, init: str) -> tuple[nn.Linear, nn.Linear]:
        """A (in -> r) and B (r -> out), initialised as PEFT does."""
        device, dtype = _device_and_dtype(self.base_layer)
        # Adapters train in fp32 unless the base is fp32/fp64 already (PEFT's autocast_adapter_dtype=True).
        kw = dict(bias=False, device=device, dtype=dtype if dtype in (torch.float32, torch.float64) else torch.float32)
        # Both are built before A is drawn, PEFT's order, so the same seed gives PEFT's A.
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
        return A, B

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        name = self.adapter_to_run()
        if name is None:
            return result
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
        name = self.existing(adapter_name or self.active_adapter)
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
        name = self.existing(self.active_adapter)
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
