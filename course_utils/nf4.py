"""NF4 from scratch: the 4-bit NormalFloat format QLoRA stores its frozen base model in, bit-exact with bitsandbytes.

The idea in three lines (QLoRA, arXiv 2305.14314, Sec. 3; bitsandbytes 0.50 backends/default/ops.py):
1. Cut the flattened weight into blocks of `blocksize` (64) values and divide each block by its absmax -> [-1, 1].
2. Replace every value by the index (0..15) of the nearest of 16 levels placed at quantiles of N(0, 1): the
   NF4 codebook. Pack two indices per byte, the FIRST value in the HIGH nibble.
3. Double quantization (DQ): store the per-block absmax not as fp32 but as 8-bit codes of the 8-bit dynamic map,
   in blocks of 256, plus one fp32 scale per 256 blocks and one fp32 mean offset: 4.127 instead of 4.5 bits/param.
Dequantizing looks the level up and multiplies it by the block's absmax.

The reference code is plain torch. Quantizing takes an exact shortcut instead of a binary search per value (see
`_BinnedCode`) and works in cache-sized chunks on a few threads (`_split_work`): a 4096 x 4096 matrix quantizes
~2.5x faster than with bitsandbytes' CPU backend. Dequantizing on CPU goes through a 100-line C kernel compiled on
first use (`nf4_native`, native/nf4_dequantize.c): the same arithmetic in one pass, as fast as bitsandbytes' native
kernel; without a C compiler the torch path `_dequantize_torch` runs (~1.5x its time for float32, ~2.5x for
bfloat16; bench/bench_nf4.py). `quantize_nf4` and `dequantize_nf4` are what to read first; the rest is bookkeeping.
"""
from __future__ import annotations

import math
import os
import statistics
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import nf4_native

NF4_OFFSET = 0.9677083  # the outermost quantile bitsandbytes uses: ppf(0.9677083) = 1.848 standard deviations
BLOCKSIZES = tuple(2**k for k in range(5, 13))  # 32 .. 4096, the sizes bitsandbytes accepts
DQ_BLOCKSIZE = 256  # absmax values per fp32 scale in double quantization (fixed in bitsandbytes)
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MIN_ABSMAX = 1e-38  # bitsandbytes clamps absmax to this before 1/absmax, so an all-zero block stays all zero
_CHUNK = 1 << 15  # values per step of the fast paths (see _split_work)
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _chunk_for(device: torch.device, blocksize: int, total: int) -> int:
    # On a GPU one vectorised pass is best; on CPU, cache-sized chunks (a multiple of every blocksize).
    return max(_CHUNK, blocksize) if device.type == "cpu" else max(total, 1)


def _split_work(total: int, align: int, work, device: torch.device) -> None:
    """Run work(lo, hi) over [0, total): on CPU one contiguous, `align`-aligned part per thread.

    Why our own threads instead of torch's: the CPU fast paths are a dozen small ops per cache-sized chunk.
    Giving each op to torch's OpenMP pool costs a barrier per op, and on 2 shared cores the second OpenMP thread
    spin-waits at every barrier (measured on a busy machine: quantizing 4096 x 4096 took 2.8 s that way, 0.07 s
    on one thread). Chunks of 2^15 values are at torch's parallel grain size, so each op runs on the thread that
    calls it, and our threads only meet once, at the end. bitsandbytes' native kernels use threads the same way.
    """
    global _pool
    k = min(torch.get_num_threads(), os.cpu_count() or 1, max(1, total // (4 * _CHUNK)))
    if k <= 1 or device.type != "cpu":
        work(0, total)
        return
    if _pool is None or _pool[0] != os.getpid():  # a forked child inherits a pool whose threads are gone
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="nf4"))
    per = -(-total // k)
    per = -(-per // align) * align
    inference = torch.is_inference_mode_enabled()  # grad and inference modes are per thread: carry them over

    def run(lo, hi):
        with torch.inference_mode() if inference else torch.no_grad():
            work(lo, hi)

    futures = [_pool[1].submit(run, lo, min(lo + per, total)) for lo in range(per, total, per)]
    try:
        run(0, min(per, total))
    finally:
        for f in futures:
            f.result()


# ------------------------------------------------------------------------------------------------ codebooks

@lru_cache(maxsize=None)
def _nf4_codebook(offset: float, use_extra_value: bool) -> torch.Tensor:
    # bitsandbytes' create_normal_map, with scipy's norm.ppf replaced by the standard library's inverse CDF.
    # The quantile points are float32 (torch.linspace), the ppf is evaluated in float64, the result is rounded
    # to float32 once: the same three steps as bitsandbytes, so the 16 values agree bit for bit.
    ppf = statistics.NormalDist().inv_cdf
    pos = torch.linspace(offset, 0.5, 9 if use_extra_value else 8)[:-1].tolist()  # 8 (or 7) positive levels
    neg = torch.linspace(offset, 0.5, 8)[:-1].tolist()  # 7 negative levels: one fewer, so 0 is exact
    values = [ppf(p) for p in pos] + [0.0] + [-ppf(p) for p in neg]
    code = torch.tensor(values, dtype=torch.float32).sort().values
    return code / code.max()


def nf4_codebook(offset: float = NF4_OFFSET, use_extra_value: bool = True) -> torch.Tensor:
    """The 16 NF4 levels (float32, sorted, -1 .. 1), built from normal quantiles the way bitsandbytes builds them.

    7 negative levels, an exact 0 and 8 positive levels: asymmetric on purpose, so that 0 (padding, pruned
    weights) is represented exactly while all 16 codes are used.
    """
    return _nf4_codebook(float(offset), bool(use_extra_value)).clone()


@lru_cache(maxsize=None)
def _fp4_codebook() -> torch.Tensor:
    # E2M1 as bitsandbytes lays it out: bit 3 is the sign; bits 2-1 the exponent field, whose values are
    # listed from the largest power down (01 -> 8, 10 -> 4, 11 -> 2, 00 -> subnormal); bit 0 the mantissa.
    # Indexed by bit pattern, NOT sorted; divided by the largest value (12) like every 4-bit code.
    values = []
    for bits in range(16):
        sign = -1.0 if bits & 0b1000 else 1.0
        exponent, mantissa = (bits >> 1) & 0b11, bits & 0b1
        magnitude = 0.0625 * mantissa if exponent == 0 else 2.0 ** (4 - exponent) * (1 + 0.5 * mantissa)
        values.append(sign * magnitude)
    code = torch.tensor(values, dtype=torch.float32)
    return code / code.abs().max()


def fp4_codebook() -> torch.Tensor:
    """The 16 FP4 (E2M1) levels in bitsandbytes' bit-pattern order (index = the stored 4 bits)."""
    return _fp4_codebook().clone()


@lru_cache(maxsize=None)
def _dynamic_map() -> torch.Tensor:
    # bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7): for exponent i = 0..6, the 2^i
    # midpoints of linspace(0.1, 1, 2^i + 1), scaled by 10^(i - 6), with both signs; plus 0 and 1.
    # Small magnitudes get few, finely spaced values; large ones many: an 8-bit "float" with a dynamic exponent.
    data = []
    for i in range(7):
        edges = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0
        data += ((10 ** (i - 6)) * means).tolist() + (-(10 ** (i - 6)) * means).tolist()
    data += [0.0, 1.0]
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def dynamic_map() -> torch.Tensor:
    """The 256-value signed 8-bit dynamic map (float32, sorted) that double quantization stores absmax in."""
    return _dynamic_map().clone()


def _code(quant_type: str) -> torch.Tensor:
    if quant_type == "nf4":
        return _nf4_codebook(NF4_OFFSET, True)
    if quant_type == "fp4":
        return _fp4_codebook()
    raise ValueError(f"quant_type must be 'nf4' or 'fp4', got {quant_type!r}. Fix: use quant_type='nf4' (QLoRA's).")


def bits_per_parameter(blocksize: int = 64, double_quant: bool = True, dq_blocksize: int = DQ_BLOCKSIZE) -> float:
    """Storage bits per weight, constants included: 4 + 32/64 = 4.5 plain; 4 + 8/64 + 32/(64*256) = 4.127 with DQ."""
    _check_blocksize(blocksize)
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)
    return 4 + 32 / blocksize


# ------------------------------------------------------------------------------------------------ the fast exact index

class _BinnedCode:
    """Nearest-level lookup that gives exactly torch.bucketize(s, midpoints) = #(midpoints < s), only faster.

    bucketize binary-searches 15 midpoints for every value (~25 ns each on 2 cores). Instead, cut [-1, 1] into
    256 uniform bins; NF4's midpoints are >= 0.08 apart, so a bin widened by one bin on each side holds at most
    one midpoint. Per bin store `base` = #(midpoints left of the widened bin) and `thr` = the midpoint inside it
    (+inf if none). Then #(midpoints < s) = base[bin] + (s > thr[bin]) exactly, for any s the bin
    computation can round into that bin (its rounding error is ~1e-5 bin, far inside the one-bin margin).
    A value exactly on a midpoint is not > thr, so it takes the lower level, like bucketize(right=False).
    """

    SCALE, SHIFT, NBINS = 128.0, 130.0, 261  # bin = trunc(s * 128 + 130); s in [-1.01, 1.01] -> 1 .. 259

    def __init__(self, bounds: torch.Tensor):
        bounds = bounds.double()
        k = torch.arange(self.NBINS, dtype=torch.float64)
        lo = (k - self.SHIFT - 1) / self.SCALE  # bin k nominally covers [(k-130)/128, (k-129)/128); widen by 1/128
        hi = (k - self.SHIFT + 2) / self.SCALE
        inside = (bounds[None, :] >= lo[:, None]) & (bounds[None, :] < hi[:, None])
        self.ok = bool((inside.sum(1) <= 1).all())
        self.base = (bounds[None, :] < lo[:, None]).sum(1).to(torch.uint8)
        thr = torch.where(inside, bounds[None, :], torch.inf).amin(1)
        self.thr = thr.float()  # the midpoints are float32 values, so this is exact

    def index(self, s: torch.Tensor, tmp: torch.Tensor, kbuf: torch.Tensor, out: torch.Tensor, mask: torch.Tensor):
        """out (uint8) <- #(bounds < s); tmp/kbuf/mask are preallocated scratch of s's size."""
        torch.mul(s, self.SCALE, out=tmp).add_(self.SHIFT)
        kbuf.copy_(tmp)  # float -> int32 truncates; values are positive, so this is floor
        torch.index_select(self.base, 0, kbuf, out=out)
        torch.index_select(self.thr, 0, kbuf, out=tmp)
        torch.gt(s, tmp, out=mask)
        out.add_(mask)
        return out


@lru_cache(maxsize=None)
def _tables(quant_type: str, device: torch.device):
    code = _code(quant_type).to(device)
    order = torch.argsort(code)  # NF4 is sorted already; FP4's bit-pattern order needs this remap
    bounds = (code[order[:-1]] + code[order[1:]]) / 2  # float32 midpoints: the decision thresholds
    binned = _BinnedCode(bounds.cpu())
    binned.base, binned.thr = binned.base.to(device), binned.thr.to(device)
    # Dequantization looks up one byte at a time: both nibbles' levels as one 64-bit word.
    byte = torch.arange(256, device=device)
    pairs = torch.stack([code[byte >> 4], code[byte & 15]], 1).contiguous().view(torch.int64).view(-1)
    return code, bounds, order, binned, pairs


# ------------------------------------------------------------------------------------------------ the container

@dataclass
class NF4Tensor:
    """A weight in 4-bit blockwise form: packed codes plus what is needed to undo the scaling.

    codes          uint8, ceil(n/2) bytes: element 2j in the high nibble, 2j+1 in the low nibble
    absmax         float32 per block; with double quantization, uint8 codes of the dynamic map instead
    absmax_scale   (DQ only) float32, one per DQ_BLOCKSIZE absmax values
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
        """The per-block absmax as float32 (reconstructed from its 8-bit codes under double quantization)."""
        if not self.double_quant:
            return self.absmax
        return _dequantize_blockwise(self.absmax, self.absmax_scale, self.dq_blocksize) + self.absmax_offset

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


# ------------------------------------------------------------------------------------------------ checks

def _check_blocksize(blocksize) -> int:
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize must be a power of two from 32 to 4096, got {blocksize!r}. "
                         f"Fix: use one of {BLOCKSIZES} (bitsandbytes and QLoRA use 64).")
    return blocksize


def _check_weight(w, what: str = "w") -> torch.Tensor:
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


def _check_finite(absmax: torch.Tensor, w: torch.Tensor, what: str):
    # max|x| propagates NaN and Inf, so checking the block maxima checks every value at 1/blocksize the cost.
    if not bool(torch.isfinite(absmax).all()):
        n_nan, n_inf = int(torch.isnan(w).sum()), int(torch.isinf(w).sum())
        raise ValueError(f"{what} contains {n_nan} NaN and {n_inf} Inf values; a block's scale would be NaN/Inf "
                         "and every value in it lost. Fix: find where they come from (a diverged run or a "
                         "corrupt checkpoint); reload the weights, or torch.nan_to_num them if they are expected.")


# ------------------------------------------------------------------------------------------------ quantize

def _absmax_and_scaled_tail(tail: torch.Tensor):
    # The trailing partial block: bitsandbytes divides (x / absmax) here, where full blocks multiply by 1/absmax.
    am = tail.abs().max().clamp(min=MIN_ABSMAX)
    return am, torch.clamp(tail / am, -1, 1)


def _quantize_blocks(flat: torch.Tensor, blocksize: int, quant_type: str, absmax: torch.Tensor,
                     codes: torch.Tensor, w: torch.Tensor, lo: int, hi: int) -> None:
    """Fill absmax and codes for the whole blocks in flat[lo:hi], one cache-sized chunk at a time."""
    _, bounds, order, binned, _ = _tables(quant_type, flat.device)
    chunk = _chunk_for(flat.device, blocksize, hi - lo)
    m = min(chunk, hi - lo)
    tmp, tmp2 = (torch.empty(m, dtype=torch.float32, device=flat.device) for _ in range(2))
    kbuf = torch.empty(m, dtype=torch.int32, device=flat.device)
    qbuf = torch.empty(m, dtype=torch.uint8, device=flat.device)
    mask = torch.empty(m, dtype=torch.bool, device=flat.device)
    for start in range(lo, hi, chunk):
        stop = min(start + chunk, hi)
        size, b0, b1 = stop - start, start // blocksize, stop // blocksize
        x = flat[start:stop]
        x = x if x.dtype == torch.float32 else x.float()
        s, t2, kb, q, mk = tmp[:size], tmp2[:size], kbuf[:size], qbuf[:size], mask[:size]
        am = absmax[b0:b1]
        torch.abs(x, out=s)
        torch.amax(s.view(-1, blocksize), 1, out=am)
        _check_finite(am, w, "The weight")  # before a NaN can turn into a garbage table index
        inv = 1.0 / am.clamp(min=MIN_ABSMAX)  # reciprocal in fp32, then multiply: bitsandbytes' arithmetic
        torch.mul(x.view(-1, blocksize), inv.view(-1, 1), out=s.view(-1, blocksize))
        # No clamp to [-1, 1]: |s| exceeds 1 by at most an ulp, and that cannot change which level is nearest.
        if binned.ok:
            binned.index(s, t2, kb, q, mk)
        else:  # FP4 has midpoints closer than a bin (0, +-0.0026): plain binary search
            torch.bucketize(s, bounds, out_int32=True, out=kb)
            q.copy_(order[kb] if quant_type != "nf4" else kb)
        pairs = q.view(-1, 2)
        out = codes[start // 2:stop // 2]
        torch.bitwise_left_shift(pairs[:, 0], 4, out=out)
        out.bitwise_or_(pairs[:, 1])


def quantize_4bit(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True,
                  quant_type: str = "nf4") -> NF4Tensor:
    """Blockwise 4-bit quantization (NF4 or FP4), bit-exact with bitsandbytes.functional.quantize_4bit."""
    _check_weight(w)
    _check_blocksize(blocksize)
    _, bounds, order, _, _ = _tables(quant_type, w.device)
    flat = w.detach().reshape(-1)
    n = flat.numel()
    rem = n % blocksize
    full = n - rem
    blocks = full // blocksize
    absmax = torch.empty(blocks + (rem > 0), dtype=torch.float32, device=w.device)
    codes = torch.empty((n + 1) // 2, dtype=torch.uint8, device=w.device)

    if full:
        _split_work(full, blocksize, lambda lo, hi: _quantize_blocks(flat, blocksize, quant_type, absmax, codes, w,
                                                                     lo, hi), w.device)

    if rem:
        am, s = _absmax_and_scaled_tail(flat[full:].float())
        absmax[blocks] = am
        if rem % 2:
            s = F.pad(s, (0, 1))  # an odd count gets one 0 appended, as bitsandbytes does
        idx = torch.bucketize(s, bounds, out_int32=True)
        if quant_type != "nf4":
            idx = order[idx]
        idx = idx.to(torch.uint8)
        codes[full // 2:] = (idx[0::2] << 4) | idx[1::2]

    _check_finite(absmax[blocks:], w, "The weight")

    if not double_quant:
        return NF4Tensor(codes, absmax, w.shape, w.dtype, blocksize, quant_type)
    offset = absmax.mean()
    q8, scale = _quantize_blockwise(absmax - offset, DQ_BLOCKSIZE)
    return NF4Tensor(codes, q8, w.shape, w.dtype, blocksize, quant_type, scale, offset)


def quantize_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> NF4Tensor:
    """Quantize a weight to NF4 (QLoRA's defaults: blocks of 64, double quantization on)."""
    return quantize_4bit(w, blocksize, double_quant, "nf4")


def quantize_fp4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> NF4Tensor:
    """Quantize a weight to FP4 (E2M1), the 4-bit float NF4 is compared against."""
    return quantize_4bit(w, blocksize, double_quant, "fp4")


def _quantize_blockwise(x: torch.Tensor, blocksize: int):
    """8-bit blockwise quantization with the dynamic map: exact nearest code (bitsandbytes' torch backend).

    bitsandbytes' native CPU library instead rounds through a 65,536-bin lookup table, which can pick the
    neighbouring code near a midpoint; CUDA and the torch backend pick the nearest, as here.
    """
    code = _dynamic_map().to(x.device)
    bounds = (code[:-1] + code[1:]) / 2
    n = x.numel()
    rem = n % blocksize
    full = n - rem
    xb = x[:full].reshape(-1, blocksize)
    scale = xb.abs().amax(1)
    scaled = torch.clamp(xb * (1.0 / scale.clamp(min=MIN_ABSMAX).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am, s_tail = _absmax_and_scaled_tail(x[full:])
        scale = torch.cat([scale, am.view(1)])
        scaled = torch.cat([scaled, s_tail])
    q = torch.bucketize(scaled, bounds, out_int32=True).to(torch.uint8)
    return q, scale


def _dequantize_blockwise(q: torch.Tensor, scale: torch.Tensor, blocksize: int) -> torch.Tensor:
    code = _dynamic_map().to(q.device)
    n = q.numel()
    values = code[q.long()]
    full = n - n % blocksize
    out = torch.empty(n, dtype=torch.float32, device=q.device)
    out[:full] = (values[:full].view(-1, blocksize) * scale[: full // blocksize].view(-1, 1)).view(-1)
    if full < n:
        out[full:] = values[full:] * scale[-1]
    return out


# ------------------------------------------------------------------------------------------------ dequantize

def _check_state(q: NF4Tensor, shape) -> torch.Size:
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
    _code(q.quant_type)
    _check_blocksize(q.blocksize)
    return shape if shape is not None else q.shape


def _dequantize_blocks(codes: torch.Tensor, absmax: torch.Tensor, bs: int, pairs: torch.Tensor,
                       out: torch.Tensor, lo: int, hi: int) -> None:
    """out[lo:hi] <- level[code] * absmax for whole blocks: each byte looks up both nibbles' levels at once."""
    chunk = _chunk_for(out.device, bs, hi - lo)
    m = min(chunk, hi - lo)
    idx = torch.empty(m // 2, dtype=torch.int32, device=out.device)
    tmp = None if out.dtype == torch.float32 else torch.empty(m, dtype=torch.float32, device=out.device)
    for start in range(lo, hi, chunk):
        stop = min(start + chunk, hi)
        size = stop - start
        ix = idx[: size // 2]
        ix.copy_(codes[start // 2:stop // 2])
        dst = out[start:stop] if tmp is None else tmp[:size]
        torch.index_select(pairs, 0, ix, out=dst.view(torch.int64))
        dst.view(-1, bs).mul_(absmax[start // bs:stop // bs].view(-1, 1))
        if tmp is not None:  # the float32 product, rounded once into the output dtype (as bitsandbytes does);
            out[start:stop].copy_(dst)  # a separate copy: torch.mul(out=bf16) takes a slow mixed-dtype loop


def dequantize_nf4(q: NF4Tensor, shape=None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Undo quantize_nf4: level[code] * block absmax, computed in float32, returned in the original dtype.

    Bit-exact with bitsandbytes.functional.dequantize_4bit (given the same absmax). On CPU the whole blocks go
    through a small C kernel when a compiler is available (course_utils/nf4_native.py: same bits, 1.4-2.7x
    faster); `_dequantize_torch` is the reference it is tested against.
    """
    shape = _check_state(q, shape)
    out = torch.empty(q.numel, dtype=dtype or q.dtype, device=q.codes.device)
    return _dequantize(q, out, native=nf4_native.usable(q, out)).view(shape)


def _dequantize_torch(q: NF4Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The plain-torch reference (flat result): gather both nibbles' levels per byte, multiply by the absmax."""
    return _dequantize(q, torch.empty(q.numel, dtype=dtype, device=q.codes.device), native=False)


def _dequantize(q: NF4Tensor, out: torch.Tensor, native: bool) -> torch.Tensor:
    n, bs = q.numel, q.blocksize
    full = n - n % bs
    if native:  # the kernel rebuilds each block's absmax itself
        fn, levels, dmap = nf4_native.function(), _code(q.quant_type), _dynamic_map()
        work = lambda lo, hi: nf4_native.call(fn, q, levels, dmap, out, lo, hi)  # noqa: E731
    else:
        absmax, pairs = q.block_absmax(), _tables(q.quant_type, out.device)[4]
        work = lambda lo, hi: _dequantize_blocks(q.codes, absmax, bs, pairs, out, lo, hi)  # noqa: E731
    if full:
        _split_work(full, bs, work, out.device)
    if full < n:
        _dequantize_tail(q, q.block_absmax()[-1] if native else absmax[-1], out, full)
    return out


def _dequantize_tail(q: NF4Tensor, absmax: torch.Tensor, out: torch.Tensor, full: int) -> None:
    tail = q.codes[full // 2:].long()
    levels = torch.stack([tail >> 4, tail & 15], 1).view(-1)[:q.numel - full]
    out[full:] = (_tables(q.quant_type, out.device)[0][levels] * absmax).to(out.dtype)


def quantization_error(w: torch.Tensor, blocksize: int = 64, double_quant: bool = False,
                       quant_type: str = "nf4") -> float:
    """Mean |w - dequantize(quantize(w))|: the number bitsandbytes' tests report (0.0728 for NF4 on N(0, 1))."""
    q = quantize_4bit(w, blocksize, double_quant, quant_type)
    return (dequantize_nf4(q, dtype=torch.float32) - w.float()).abs().mean().item()


# ------------------------------------------------------------------------------------------------ the layer

MERGE_WARNING = ("Merging an adapter into a 4-bit NF4 weight dequantizes, adds Delta W and re-quantizes: the result "
                 "has rounding errors (up to {err:.3g} here), so generations may differ from the unmerged model.")


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight lives in NF4: y = x @ dequantize(W0_nf4).T + bias.

    The 4-bit codes and constants are buffers, not Parameters: nothing here can be trained, and optimizers,
    `parameters()` and gradient code never see them. `logical_param_count()` still reports in*out (+bias),
    the number of parameters the layer stands for. LoRA trains next to it (course_utils.lora.LoRALinear).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, blocksize: int = 64,
                 double_quant: bool = True, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ValueError(f"NF4Linear needs a 2-D weight (out_features, in_features), got "
                             f"{getattr(weight, 'shape', type(weight).__name__)}. Fix: NF4Linear.from_linear(layer).")
        self.out_features, self.in_features = weight.shape
        self.compute_dtype = compute_dtype
        self.last_merge_error: float | None = None
        self.merge_errors: list[float] = []
        self._store(quantize_nf4(weight, blocksize, double_quant))
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
        for name in ("codes", "absmax", "absmax_scale", "absmax_offset"):
            self.register_buffer(f"weight_{name}", getattr(q, name))

    @property
    def quantized(self) -> NF4Tensor:
        """The weight as an NF4Tensor (sharing this layer's buffers)."""
        return NF4Tensor(self.weight_codes, self.weight_absmax, torch.Size((self.out_features, self.in_features)),
                         self.weight_dtype, self.blocksize, "nf4", self.weight_absmax_scale,
                         self.weight_absmax_offset)

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

    def extra_repr(self) -> str:
        dq = ", double_quant" if self.double_quant else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"nf4 blocksize={self.blocksize}{dq}, compute_dtype={self.compute_dtype}")


def quantize_model(model: nn.Module, skip=("lm_head",), blocksize: int = 64, double_quant: bool = True,
                   compute_dtype: torch.dtype = torch.float32) -> nn.Module:
    """Replace every nn.Linear (except those named in `skip`, by full name or last component) by NF4Linear, in place.

    Like QLoRA, the output head stays in full precision; embeddings and norms are not Linear and stay too.
    """
    if isinstance(skip, str):
        skip = (skip,)
    _check_blocksize(blocksize)
    if isinstance(model, nn.Linear):
        raise TypeError("quantize_model replaces the Linear layers inside a model, and got a bare nn.Linear. "
                        "Fix: NF4Linear.from_linear(layer) for a single layer.")
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name not in skip and name.rpartition(".")[2] not in skip]
    for name, linear in targets:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                NF4Linear.from_linear(linear, blocksize, double_quant, compute_dtype))
    return model


def nf4_layers(model: nn.Module) -> list[tuple[str, NF4Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, NF4Linear)]


def model_storage_bytes(model: nn.Module) -> int:
    """Bytes of every NF4Linear weight in the model (codes + constants), measured from the buffers."""
    return sum(m.storage_bytes() for _, m in nf4_layers(model))
