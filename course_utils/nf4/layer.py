"""NF4Linear: a frozen linear layer stored in NF4, the base QLoRA trains LoRA adapters on; quantize_model swaps it in.

    layer = NF4Linear.from_linear(linear)         # quantize one nn.Linear
    quantize_model(model)                         # every linear layer but the output head, in place
    bnb_layer = layer.to_bitsandbytes()           # bitsandbytes.nn.Linear4bit with the same bytes
    layer = NF4Linear.from_bitsandbytes(bnb_layer)

Both directions move the packed codes and the quantization state (double quantization included) unchanged, so
the two layers compute the same outputs bit for bit (tests/test_nf4_layer.py).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..surgery import linear_layers, replace_module
from . import reference
from .checks import check_blocksize
from .tensor import NF4Tensor, check_state, dequantize_nf4, quantize_nf4

MERGE_WARNING = ("Merging an adapter into a 4-bit NF4 weight dequantizes, adds Delta W and re-quantizes: the result "
                 "has rounding errors (up to {err:.3g} here), so generations may differ from the unmerged model.")


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight lives in NF4: y = x @ dequantize(W0_nf4).T + bias.

    The 4-bit codes and constants are buffers, not Parameters: nothing here can be trained, and optimizers,
    `parameters()` and gradient code never see them. `logical_param_count()` still reports in*out (+bias),
    the number of parameters the layer stands for. LoRA trains next to it (course_utils.lora.LoRALinear).
    `weight` is the float weight to quantize, or an NF4Tensor that already holds it (then blocksize and
    double_quant are its own).
    """

    def __init__(self, weight: torch.Tensor | NF4Tensor, bias: torch.Tensor | None = None, blocksize: int = 64,
                 double_quant: bool = True, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        shape = weight.shape if isinstance(weight, (torch.Tensor, NF4Tensor)) else None
        if shape is None or len(shape) != 2:
            raise ValueError(f"NF4Linear needs a 2-D weight (out_features, in_features), got "
                             f"{shape if shape is not None else type(weight).__name__}. "
                             "Fix: NF4Linear.from_linear(layer).")
        self.out_features, self.in_features = shape
        self.compute_dtype = compute_dtype
        self.last_merge_error: float | None = None
        self.merge_errors: list[float] = []
        if isinstance(weight, NF4Tensor):
            check_state(weight)
            if weight.quant_type != "nf4":
                raise ValueError(f"NF4Linear holds NF4 weights, got quant_type={weight.quant_type!r}. "
                                 "Fix: quantize with quantize_nf4 (or keep the FP4 layer in bitsandbytes).")
        self._store(weight if isinstance(weight, NF4Tensor) else quantize_nf4(weight, blocksize, double_quant))
        if bias is not None:
            bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.bias = bias

    @classmethod
    def from_linear(cls, linear: nn.Linear, blocksize: int = 64, double_quant: bool = True,
                    compute_dtype: torch.dtype = torch.float32) -> "NF4Linear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}. "
                            "Fix: pass the model's Linear layer (quantize_model does this for a whole model).")
        return cls(linear.weight.data, linear.bias.data if linear.bias is not None else None, blocksize,
                   double_quant, compute_dtype)

    def _store(self, q: NF4Tensor) -> None:
        self.blocksize, self.weight_dtype, self.double_quant = q.blocksize, q.dtype, q.double_quant
        self.dq_blocksize = q.dq_blocksize
        for name in ("codes", "absmax", "absmax_scale", "absmax_offset"):
            self.register_buffer(f"weight_{name}", getattr(q, name))

    @property
    def quantized(self) -> NF4Tensor:
        """The weight as an NF4Tensor (sharing this layer's buffers)."""
        return NF4Tensor(self.weight_codes, self.weight_absmax, torch.Size((self.out_features, self.in_features)),
                         self.weight_dtype, self.blocksize, "nf4", self.weight_absmax_scale,
                         self.weight_absmax_offset, self.dq_blocksize)

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_nf4(self.quantized, dtype=dtype or self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized_weight()  # rebuilt each call: the full-precision W0 is never kept around
        bias = self.bias.to(self.compute_dtype) if self.bias is not None else None
        return F.linear(x.to(self.compute_dtype), w, bias).to(x.dtype)

    def storage_bytes(self) -> int:
        """Bytes of the 4-bit weight (codes + constants), measured from the buffers; the bias is not included."""
        return self.quantized.storage_bytes()

    def logical_param_count(self) -> int:
        return self.in_features * self.out_features + (self.bias.numel() if self.bias is not None else 0)

    @torch.no_grad()
    def merge_delta(self, delta: torch.Tensor) -> float:
        """W0 <- quantize(dequantize(W0) + delta). Returns the largest rounding error that step introduced.

        The merged weight must be 4-bit again, so W0 + Delta W is rounded to the NF4 grid of its new block
        scales: the merged model is close to, but not exactly, base + adapter (PEFT warns about the same thing).
        """
        shape = (self.out_features, self.in_features)
        if tuple(delta.shape) != shape:
            raise ValueError(f"delta has shape {tuple(delta.shape)}, this layer's weight is {shape}. "
                             "Fix: pass Delta W = (B @ A) * scaling with shape (out_features, in_features).")
        if not bool(torch.isfinite(delta).all()):
            raise ValueError("delta contains NaN/Inf; merging would destroy W0 (left untouched). "
                             "Fix: retrain the adapter with a lower learning rate or load a good one.")
        target = self.dequantized_weight(torch.float32) + delta.to(self.weight_codes.device, torch.float32)
        q = quantize_nf4(target.to(self.weight_dtype), self.blocksize, self.double_quant)
        err = (dequantize_nf4(q, dtype=torch.float32) - target).abs().max().item()
        self._store(q)
        self.last_merge_error = err
        self.merge_errors.append(err)
        warnings.warn(MERGE_WARNING.format(err=err), UserWarning, stacklevel=2)
        return err

    def unmerge_delta(self, delta: torch.Tensor) -> float:
        return self.merge_delta(-delta)

    def to_bitsandbytes(self):
        """This layer as a bitsandbytes.nn.Linear4bit holding copies of the same codes and quantization state."""
        import bitsandbytes as bnb
        from bitsandbytes.functional import QuantState

        q, device = self.quantized, self.weight_codes.device
        state2 = offset = None
        if q.double_quant:  # what bitsandbytes.functional.quantize_blockwise(..., nested=False) would return
            state2 = QuantState(absmax=q.absmax_scale.clone(), code=reference.dynamic_map().to(device),
                                blocksize=q.dq_blocksize, dtype=torch.float32)
            offset = q.absmax_offset.clone()
        state = QuantState(absmax=q.absmax.clone(), shape=q.shape, code=reference.nf4_codebook().to(device),
                           blocksize=q.blocksize, quant_type="nf4", dtype=q.dtype, offset=offset, state2=state2)
        layer = bnb.nn.Linear4bit(self.in_features, self.out_features, bias=self.bias is not None,
                                  compute_dtype=self.compute_dtype, compress_statistics=q.double_quant,
                                  quant_type="nf4", device="meta")  # meta: no float weight is ever allocated
        layer.weight = bnb.nn.Params4bit(q.codes.clone().view(-1, 1), requires_grad=False, quant_state=state,
                                         blocksize=q.blocksize, compress_statistics=q.double_quant,
                                         quant_type="nf4", module=layer, bnb_quantized=True)
        layer.quant_state = state
        layer.bias = None if self.bias is None else nn.Parameter(self.bias.detach().clone(), requires_grad=False)
        return layer

    @classmethod
    def from_bitsandbytes(cls, layer: nn.Module, compute_dtype: torch.dtype | None = None) -> "NF4Linear":
        """An NF4Linear holding copies of a quantized bitsandbytes Linear4bit's codes and quantization state."""
        state = getattr(getattr(layer, "weight", None), "quant_state", None)
        if state is None:
            raise TypeError(f"from_bitsandbytes needs a quantized bitsandbytes Linear4bit, got "
                            f"{type(layer).__name__}. Fix: move the Linear4bit to a device first (layer.to('cpu') "
                            "quantizes it), or use NF4Linear.from_linear for an nn.Linear.")
        if getattr(state, "packing_format_for_cpu", False):
            raise ValueError("This Linear4bit was repacked by bitsandbytes' eval-mode CPU forward: its codes are "
                             "reordered and its absmax rounded to bf16. Fix: import course_utils before the first "
                             "forward pass (its bitsandbytes guard prevents the repack) and rebuild the layer; "
                             "course_utils.bnb_guard.repair(model) unpacks it, lossily.")
        if state.quant_type != "nf4" or (state.nested and state.state2.blocksize != reference.DQ_BLOCKSIZE):
            raise ValueError(f"NF4Linear holds NF4 weights (double quantization in blocks of "
                             f"{reference.DQ_BLOCKSIZE}), got quant_type={state.quant_type!r}. "
                             "Fix: load the model with bnb_4bit_quant_type='nf4'.")
        codes = layer.weight.data.contiguous().view(torch.uint8).reshape(-1).clone()  # any quant_storage dtype
        q = NF4Tensor(codes, state.absmax.clone(), state.shape, state.dtype, state.blocksize, "nf4",
                      state.state2.absmax.clone() if state.nested else None,
                      state.offset.clone() if state.nested else None)
        bias = None if layer.bias is None else layer.bias.data
        dtype = compute_dtype or getattr(layer, "compute_dtype", None) or torch.float32
        return cls(q, bias, compute_dtype=dtype)

    def extra_repr(self) -> str:
        dq = ", double_quant" if self.double_quant else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"nf4 blocksize={self.blocksize}{dq}, compute_dtype={self.compute_dtype}")


def quantize_model(model: nn.Module, skip=("lm_head",), blocksize: int = 64, double_quant: bool = True,
                   compute_dtype: torch.dtype = torch.float32) -> nn.Module:
    """Replace every nn.Linear but the output head (and those named in `skip`) by NF4Linear, in place.

    Like QLoRA, the output head stays in full precision; embeddings and norms are not Linear and stay too. A
    LoRA wrapper's base layer is quantized inside the wrapper.
    """
    check_blocksize(blocksize)
    if isinstance(model, nn.Linear):
        raise TypeError("quantize_model replaces the Linear layers inside a model, and got a bare nn.Linear. "
                        "Fix: NF4Linear.from_linear(layer) for a single layer.")
    for name, module in linear_layers(model, skip=skip):
        if isinstance(getattr(module, "base_layer", None), nn.Linear):
            name, module = f"{name}.base_layer", module.base_layer
        if isinstance(module, nn.Linear):
            replace_module(model, name, NF4Linear.from_linear(module, blocksize, double_quant, compute_dtype))
    return model


def nf4_layers(model: nn.Module) -> list[tuple[str, NF4Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, NF4Linear)]


def model_storage_bytes(model: nn.Module) -> int:
    """Bytes of every NF4Linear weight in the model (codes + constants), measured from the buffers."""
    return sum(m.storage_bytes() for _, m in nf4_layers(model))
