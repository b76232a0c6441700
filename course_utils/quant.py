"""Plain integer quantizers, the baselines NF4 is measured against (notebook 03, notebook 09).

Symmetric absmax quantization with b bits keeps 2^(b-1) - 1 levels on each side of an exact zero
(int8: -127..127, int4: -7..7): q = round(x / absmax * L), x_hat = q * absmax / L.
One absmax for the whole tensor lets a single outlier coarsen every value; one absmax per block of 64
(blockwise) confines the damage to its block -- the idea NF4 builds on.
"""
from __future__ import annotations

import torch


def levels(bits: int) -> int:
    """Largest integer code of a symmetric `bits`-bit quantizer (127 for int8, 7 for int4)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8, got {bits!r}. Fix: use bits=8 (int8) or bits=4 (int4).")
    return 2 ** (bits - 1) - 1


def _blocks(x: torch.Tensor, blocksize: int | None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        raise TypeError(f"expected a non-empty floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}. "
                        "Fix: pass a float weight, e.g. w.float().")
    flat = x.detach().reshape(-1).float()
    if blocksize is None:
        return flat.view(1, -1)
    if not isinstance(blocksize, int) or blocksize <= 0 or flat.numel() % blocksize:
        raise ValueError(f"blocksize={blocksize!r} must be a positive integer dividing the {flat.numel()} values. "
                         "Fix: use a divisor such as 64, or blocksize=None for one absmax per tensor.")
    return flat.view(-1, blocksize)


def quantize_absmax(x: torch.Tensor, bits: int = 8, blocksize: int | None = None):
    """-> (int8 codes shaped like x, float32 absmax per block). blocksize=None: one absmax for the tensor."""
    L = levels(bits)
    xb = _blocks(x, blocksize)
    absmax = xb.abs().amax(1)
    scale = torch.where(absmax > 0, L / absmax, torch.zeros_like(absmax))  # an all-zero block stays zero
    q = torch.round(xb * scale[:, None]).clamp_(-L, L).to(torch.int8)
    return q.view(x.shape), absmax


def dequantize_absmax(q: torch.Tensor, absmax: torch.Tensor, bits: int = 8, dtype=torch.float32) -> torch.Tensor:
    L = levels(bits)
    qb = q.reshape(absmax.numel(), -1).float()
    return (qb * (absmax[:, None] / L)).view(q.shape).to(dtype)


def fake_quantize(x: torch.Tensor, bits: int = 8, blocksize: int | None = None) -> torch.Tensor:
    """x after a quantize -> dequantize round trip (same dtype): what the model sees after quantization."""
    q, absmax = quantize_absmax(x, bits, blocksize)
    return dequantize_absmax(q, absmax, bits, x.dtype)


def quantization_error(x: torch.Tensor, bits: int = 8, blocksize: int | None = None) -> float:
    """Mean |x - fake_quantize(x)|."""
    return (fake_quantize(x, bits, blocksize).float() - x.float()).abs().mean().item()
