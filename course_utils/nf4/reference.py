"""NF4 from scratch in plain torch: what chapter 09 and lab03 read, and what every faster path is tested against.

QLoRA (arXiv 2305.14314, Sec. 3) stores a frozen weight in about 4 bits per value:
1. Cut the flattened weight into blocks of `blocksize` (64) values; divide each block by its absmax -> [-1, 1].
2. Replace each value by the index (0..15) of the nearest of 16 levels placed at quantiles of N(0, 1): the NF4
   codebook. Pack two indices per byte, the FIRST value in the HIGH nibble.
3. Double quantization (DQ): store the per-block absmax not in fp32 but as 8-bit codes of a "dynamic map", in
   blocks of 256, with one fp32 scale per 256 blocks and one fp32 mean offset: 4.127 instead of 4.5 bits/param.
Dequantizing looks each code's level up and multiplies it by its block's absmax. Each step repeats bitsandbytes
0.50's arithmetic (backends/default/ops.py) operation for operation, so tests compare bytes with torch.equal.
"""
from __future__ import annotations

import statistics
from functools import lru_cache

import torch
import torch.nn.functional as F

NF4_OFFSET = 0.9677083  # the outermost quantile bitsandbytes uses: ppf(0.9677083) = 1.848 standard deviations
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # the block sizes bitsandbytes accepts
DQ_BLOCKSIZE = 256  # absmax values per fp32 scale under double quantization (fixed in bitsandbytes)
MIN_ABSMAX = 1e-38  # the divisor's floor: an all-zero block gives 0 / 1e-38 = 0, not 0 / 0 = NaN


# ------------------------------------------------------------------------------------------------ codebooks

def nf4_codebook(offset: float = NF4_OFFSET, use_extra_value: bool = True) -> torch.Tensor:
    """The 16 NF4 levels (float32, sorted, -1 .. 1): quantiles of N(0, 1), as bitsandbytes' create_normal_map.

    8 positive levels, an exact 0 and 7 negative ones. Symmetric levels around an exact 0 need an odd count and
    would leave one of the 16 codes unused; this asymmetry keeps 0 exact (padding, pruned weights) and uses all 16.
    """
    ppf = statistics.NormalDist().inv_cdf  # the inverse normal CDF (bitsandbytes uses scipy's norm.ppf)
    # Quantile points in float32 (torch.linspace), ppf in float64, one rounding to float32: bitsandbytes' steps.
    pos = torch.linspace(offset, 0.5, 9 if use_extra_value else 8)[:-1].tolist()  # 8 positive quantiles
    neg = torch.linspace(offset, 0.5, 8)[:-1].tolist()  # 7 negative ones: one fewer, to make room for 0
    values = [ppf(p) for p in pos] + [0.0] + [-ppf(p) for p in neg]
    code = torch.tensor(values, dtype=torch.float32).sort().values
    return code / code.max()  # the outermost level becomes 1, so a block's absmax is represented exactly


def fp4_codebook() -> torch.Tensor:
    """The 16 FP4 (E2M1) levels, indexed by their 4 bits (so NOT sorted): bit 3 the sign, bits 2-1 the exponent
    field (bitsandbytes' order: 01 -> 8, 10 -> 4, 11 -> 2, 00 -> subnormal), bit 0 the mantissa; divided by 12."""
    values = []
    for bits in range(16):
        sign = -1.0 if bits & 0b1000 else 1.0
        exponent, mantissa = (bits >> 1) & 0b11, bits & 0b1
        magnitude = 0.0625 * mantissa if exponent == 0 else 2.0 ** (4 - exponent) * (1 + 0.5 * mantissa)
        values.append(sign * magnitude)
    code = torch.tensor(values, dtype=torch.float32)
    return code / code.abs().max()


def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (256 sorted levels), which double quantization uses: for i = 0..6
    the 2^i midpoints of linspace(0.1, 1, 2^i + 1) times +-10^(i-6), plus 0 and 1: log-spaced, like a float."""
    data = []
    for i in range(7):
        edges = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0
        data += ((10 ** (i - 6)) * means).tolist() + (-(10 ** (i - 6)) * means).tolist()
    return torch.tensor(sorted(data + [0.0, 1.0]), dtype=torch.float32)


@lru_cache(maxsize=None)  # built once: every quantize and dequantize call looks its levels up here
def codebook(name: str) -> torch.Tensor:
    """The levels of 'nf4', 'fp4' or 'dynamic' (double quantization's 8-bit map); shared, so never modify it."""
    build = {"nf4": nf4_codebook, "fp4": fp4_codebook, "dynamic": dynamic_map}.get(name)
    if build is None:
        raise ValueError(f"No code named {name!r}: there are 'nf4', 'fp4' and 'dynamic'. Fix: quant_type='nf4'.")
    return build()


# ------------------------------------------------------------------------------------------------ 4-bit, step by step

def normalize_blocks(x: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(absmax of each block, x / its block's absmax clamped to [-1, 1]) for a flat float32 x."""
    full = x.numel() - x.numel() % blocksize
    blocks = x[:full].view(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = (blocks * (1.0 / absmax.clamp(min=MIN_ABSMAX)).view(-1, 1)).view(-1)
    if full < x.numel():
        # A partial last block: bitsandbytes divides here and multiplies by 1/absmax above. x / a and x * (1/a)
        # can differ in the last bit, which moves a value sitting on a midpoint, so we do both, as it does.
        tail_absmax = x[full:].abs().max().clamp(min=MIN_ABSMAX)
        absmax = torch.cat([absmax, tail_absmax.view(1)])
        scaled = torch.cat([scaled, x[full:] / tail_absmax])
    return absmax, scaled.clamp(-1, 1)


def nearest_level(scaled: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the level of `code` nearest to each value: how many midpoints between sorted levels lie below it."""
    order = torch.argsort(code)  # NF4 is sorted already; FP4's bit-pattern order is mapped back through this
    levels = code[order]
    midpoints = (levels[:-1] + levels[1:]) / 2
    return order[torch.bucketize(scaled, midpoints)]  # a value exactly on a midpoint takes the lower level


def pack_nibbles(idx: torch.Tensor) -> torch.Tensor:
    """Two 4-bit indices per byte (an even count): the first in the high nibble, as bitsandbytes stores them."""
    idx = idx.to(torch.uint8)
    return (idx[0::2] << 4) | idx[1::2]


def unpack_nibbles(codes: torch.Tensor, n: int) -> torch.Tensor:
    return torch.stack([codes >> 4, codes & 0x0F], dim=1).view(-1)[:n]  # high nibble first; drop any padding


def rescale_blocks(values: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    """values * their block's absmax, in float32. Padding to whole blocks changes no product, only the shape."""
    n = values.numel()
    padded = F.pad(values, (0, -n % blocksize))
    return (padded.view(-1, blocksize) * absmax.view(-1, 1)).view(-1)[:n]


def quantize(w: torch.Tensor, blocksize: int = 64, quant_type: str = "nf4") -> tuple[torch.Tensor, torch.Tensor]:
    """(packed uint8 codes, float32 absmax per block) of any float tensor, bit-exact with bitsandbytes."""
    absmax, scaled = normalize_blocks(w.detach().reshape(-1).float(), blocksize)
    if scaled.numel() % 2:  # an odd count: one 0 appended, so the last byte is whole (bitsandbytes does this)
        scaled = F.pad(scaled, (0, 1))
    return pack_nibbles(nearest_level(scaled, codebook(quant_type))), absmax


def dequantize(codes: torch.Tensor, absmax: torch.Tensor, shape, blocksize: int = 64, quant_type: str = "nf4",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """level[code] * block absmax, computed in float32 and rounded once to `dtype`, as bitsandbytes does."""
    n = torch.Size(shape).numel()
    levels = codebook(quant_type)[unpack_nibbles(codes, n).long()]
    return rescale_blocks(levels, absmax, blocksize).to(dtype).view(shape)


# ------------------------------------------------------------------------------------------------ double quantization

def double_quantize(absmax: torch.Tensor, blocksize: int = DQ_BLOCKSIZE):
    """(uint8 codes, float32 scale per `blocksize` codes, float32 offset): absmax as 8-bit dynamic-map codes.
    The absmax values are all positive: minus their mean, they use both halves of the signed map."""
    offset = absmax.mean()
    scale, scaled = normalize_blocks(absmax - offset, blocksize)
    return nearest_level(scaled, codebook("dynamic")).to(torch.uint8), scale, offset


def dequantize_absmax(q8: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                      blocksize: int = DQ_BLOCKSIZE) -> torch.Tensor:
    # Two roundings (multiply, then add), as bitsandbytes: a fused multiply-add would round once and differ.
    return rescale_blocks(codebook("dynamic")[q8.long()], scale, blocksize) + offset


def bits_per_parameter(blocksize: int = 64, double_quant: bool = True, dq_blocksize: int = DQ_BLOCKSIZE) -> float:
    """Storage bits per weight, constants included: 4 + 32/64 = 4.5 plain; 4 + 8/64 + 32/(64*256) = 4.127 with DQ."""
    if blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize must be one of {BLOCKSIZES}, got {blocksize!r}. Fix: use 64 (QLoRA's).")
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)
    return 4 + 32 / blocksize
