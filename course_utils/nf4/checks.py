"""Input checks for the NF4 entry points: each error names the problem and the fix."""
from __future__ import annotations

import torch

from .reference import BLOCKSIZES

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_blocksize(blocksize) -> int:
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize must be a power of two from 32 to 4096, got {blocksize!r}. "
                         f"Fix: use one of {BLOCKSIZES} (bitsandbytes and QLoRA use 64).")
    return blocksize


def check_quant_type(quant_type) -> str:
    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"quant_type must be 'nf4' or 'fp4', got {quant_type!r}. Fix: use quant_type='nf4' (QLoRA's).")
    return quant_type


def check_weight(w, what: str = "w") -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(w).__name__}. Fix: torch.as_tensor({what}).")
    if w.dtype not in SUPPORTED_DTYPES:
        kind = "complex" if w.is_complex() else "integer/bool" if not w.is_floating_point() else "float64"
        raise TypeError(f"4-bit quantization needs a float32, bfloat16 or float16 tensor, got {w.dtype} ({kind}). "
                        f"Fix: quantize real-valued weights, converted first: {what}.float().")
    if w.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(w.shape)}): there is nothing to quantize. "
                         "Fix: pass the layer's weight, not an empty slice of it.")
    return w


def check_finite(absmax: torch.Tensor, w: torch.Tensor, what: str) -> None:
    # max|x| propagates NaN and Inf, so checking the block maxima checks every value at 1/blocksize the cost.
    if not bool(torch.isfinite(absmax).all()):
        n_nan, n_inf = int(torch.isnan(w).sum()), int(torch.isinf(w).sum())
        raise ValueError(f"{what} contains {n_nan} NaN and {n_inf} Inf values; a block's scale would be NaN/Inf "
                         "and every value in it lost. Fix: find where they come from (a diverged run or a "
                         "corrupt checkpoint); reload the weights, or torch.nan_to_num them if they are expected.")
