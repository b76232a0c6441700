"""NF4Tensor, the container a 4-bit weight lives in, and the entry points that fill and read it.

    q = quantize_nf4(w)             # QLoRA's defaults: blocks of 64, double quantization on
    w_hat = dequantize_nf4(q)       # the original shape and dtype
    q.storage_bytes(), q.bits_per_parameter()

The arithmetic is reference.py's; these functions check their input and run the fast paths (fast.py), which
give the same bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import fast, reference
from .checks import check_blocksize, check_finite, check_quant_type, check_weight
from .reference import DQ_BLOCKSIZE


@dataclass
class NF4Tensor:
    """A weight in 4-bit blockwise form: packed codes plus what is needed to undo the scaling.

    codes          uint8, ceil(n/2) bytes: element 2j in the high nibble, 2j+1 in the low nibble
    absmax         float32 per block; with double quantization, uint8 codes of the dynamic map instead
    absmax_scale   (DQ only) float32, one per dq_blocksize absmax values
    absmax_offset  (DQ only) float32 scalar: the mean absmax, subtracted before the 8-bit step
    """

    codes: torch.Tensor
    absmax: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int = 64
    quant_type: str = "nf4"
    absmax_scale: torch.Tensor | None = None
    absmax_offset: torch.Tensor | None = None
    dq_blocksize: int = DQ_BLOCKSIZE

    def __post_init__(self):
        self.shape = torch.Size(self.shape)

    @property
    def double_quant(self) -> bool:
        return self.absmax_scale is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def n_blocks(self) -> int:
        return -(-self.numel // self.blocksize)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"codes": self.codes, "absmax": self.absmax}
        if self.double_quant:
            out.update(absmax_scale=self.absmax_scale, absmax_offset=self.absmax_offset)
        return out

    def storage_bytes(self) -> int:
        """Bytes of codes + constants, measured from the tensors (the 16-value codebook is shared, not counted)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    @property
    def nbytes(self) -> int:
        return self.storage_bytes()

    def bits_per_parameter(self) -> float:
        return 8 * self.storage_bytes() / self.numel

    def block_absmax(self) -> torch.Tensor:
        """The per-block absmax as float32 (rebuilt from its 8-bit codes under double quantization)."""
        if not self.double_quant:
            return self.absmax
        return reference.dequantize_absmax(self.absmax, self.absmax_scale, self.absmax_offset, self.dq_blocksize)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_nf4(self, dtype=dtype)

    def to(self, device) -> "NF4Tensor":
        moved = {k: v.to(device) for k, v in self.tensors().items()}
        return NF4Tensor(moved["codes"], moved["absmax"], self.shape, self.dtype, self.blocksize, self.quant_type,
                         moved.get("absmax_scale"), moved.get("absmax_offset"), self.dq_blocksize)

    def __repr__(self) -> str:
        dq = f", double_quant (scale per {self.dq_blocksize})" if self.double_quant else ""
        return (f"NF4Tensor(shape={tuple(self.shape)}, dtype={self.dtype}, quant_type='{self.quant_type}', "
                f"blocksize={self.blocksize}{dq}, {self.storage_bytes():,d} bytes = "
                f"{self.bits_per_parameter():.3f} bits/param)")


# ------------------------------------------------------------------------------------------------ quantize

def quantize_4bit(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True,
                  quant_type: str = "nf4") -> NF4Tensor:
    """Blockwise 4-bit quantization (NF4 or FP4), bit-exact with bitsandbytes.functional.quantize_4bit."""
    check_weight(w)
    check_blocksize(blocksize)
    check_quant_type(quant_type)
    codes, absmax = fast.quantize(w, blocksize, quant_type)
    check_finite(absmax, w, "The weight")
    if not double_quant:
        return NF4Tensor(codes, absmax, w.shape, w.dtype, blocksize, quant_type)
    q8, scale, offset = reference.double_quantize(absmax, DQ_BLOCKSIZE)
    return NF4Tensor(codes, q8, w.shape, w.dtype, blocksize, quant_type, scale, offset)


def quantize_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> NF4Tensor:
    """Quantize a weight to NF4 (QLoRA's defaults: blocks of 64, double quantization on)."""
    return quantize_4bit(w, blocksize, double_quant, "nf4")


def quantize_fp4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> NF4Tensor:
    """Quantize a weight to FP4 (E2M1), the 4-bit float NF4 is compared against."""
    return quantize_4bit(w, blocksize, double_quant, "fp4")


# ------------------------------------------------------------------------------------------------ dequantize

def check_state(q: NF4Tensor, shape=None) -> torch.Size:
    """The shape to dequantize into, after checking that q's parts belong together."""
    if not isinstance(q, NF4Tensor):
        raise TypeError(f"dequantize_nf4 needs the NF4Tensor that quantize_nf4 returned, got {type(q).__name__}. "
                        "Fix: q = quantize_nf4(w); w_hat = dequantize_nf4(q).")
    n = q.numel
    if shape is not None:
        shape = torch.Size(shape)
        if math.prod(shape) != n:
            raise ValueError(f"Cannot dequantize {n:,d} quantized values into shape {tuple(shape)} "
                             f"({math.prod(shape):,d} values). Fix: pass a shape with {n:,d} elements, "
                             f"e.g. the original {tuple(q.shape)}, or leave shape=None.")
    if q.codes.dtype != torch.uint8 or q.codes.numel() != (n + 1) // 2:
        raise ValueError(f"The packed codes ({q.codes.numel():,d} x {q.codes.dtype}) do not match shape "
                         f"{tuple(q.shape)}, which needs {(n + 1) // 2:,d} uint8 bytes. The NF4Tensor was modified "
                         "or mixed with another one. Fix: re-quantize the weight, and keep codes, absmax and shape "
                         "from the same quantize_nf4 call.")
    if q.absmax.numel() != q.n_blocks:
        raise ValueError(f"absmax has {q.absmax.numel():,d} entries but shape {tuple(q.shape)} with blocksize "
                         f"{q.blocksize} has {q.n_blocks:,d} blocks. Fix: keep blocksize, shape and absmax from the "
                         "same quantize_nf4 call (re-quantize if in doubt).")
    check_quant_type(q.quant_type)
    check_blocksize(q.blocksize)
    return shape if shape is not None else q.shape


def dequantize_nf4(q: NF4Tensor, shape=None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Undo quantize_nf4: level[code] * block absmax, computed in float32, returned in the original dtype.

    Bit-exact with bitsandbytes.functional.dequantize_4bit given the same absmax (fast.py, native.py).
    """
    shape = check_state(q, shape)
    out = torch.empty(q.numel, dtype=dtype or q.dtype, device=q.codes.device)
    return fast.dequantize(q, out).view(shape)


def quantization_error(w: torch.Tensor, blocksize: int = 64, double_quant: bool = False,
                       quant_type: str = "nf4") -> float:
    """Mean |w - dequantize(quantize(w))|: the number bitsandbytes' tests report (0.0728 for NF4 on N(0, 1))."""
    q = quantize_4bit(w, blocksize, double_quant, quant_type)
    return (dequantize_nf4(q, dtype=torch.float32) - w.float()).abs().mean().item()
