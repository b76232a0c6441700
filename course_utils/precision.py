"""Floating-point formats and what rounding does to a network (notebook 03).

A float is sign x 2^exponent x 1.mantissa. The exponent bits set the *range* (largest and smallest numbers),
the mantissa bits set the *precision*: eps = 2^-mantissa_bits is the gap between 1 and the next number, and
every result is rounded to within eps/2 relative error. fp16 spends its 16 bits on precision (10 mantissa
bits, max 65,504); bf16 keeps fp32's 8 exponent bits (same range) and only 7 mantissa bits (8x coarser).

The integer quantizers (absmax, blockwise) live in course_utils.quant; the last two helpers here apply any
quantizer to a whole model, and plant the outliers that make per-tensor scales fail.
"""
from __future__ import annotations

import math
from decimal import Decimal

import torch

from .surgery import linear_layers

FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def as_dtype(dtype) -> torch.dtype:
    """'fp16' / 'bf16' / 'fp32' or a torch floating dtype -> the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype.lower() in FLOAT_DTYPES:
        return FLOAT_DTYPES[dtype.lower()]
    raise ValueError(f"unknown floating-point format {dtype!r}: use one of {list(FLOAT_DTYPES)} "
                     "or a torch dtype such as torch.bfloat16")


def dtype_name(dtype) -> str:
    dtype = as_dtype(dtype)
    return next((k for k, v in FLOAT_DTYPES.items() if v == dtype), str(dtype).replace("torch.", ""))


def float_format(dtype) -> dict:
    """Bit layout, range and precision of a float format, all read from torch.finfo (nothing typed in)."""
    dtype = as_dtype(dtype)
    fi = torch.finfo(dtype)
    mantissa = round(-math.log2(fi.eps))  # eps = 2^-mantissa_bits: the gap just above 1.0
    return {
        "format": dtype_name(dtype),
        "bits": fi.bits,
        "sign_bits": 1,
        "exponent_bits": fi.bits - 1 - mantissa,
        "mantissa_bits": mantissa,
        "max": fi.max,
        "smallest_normal": fi.smallest_normal,
        "smallest_subnormal": fi.smallest_normal * fi.eps,  # below this, values round to 0 (underflow)
        "eps": fi.eps,
        "decimal_digits": math.log10(2 ** (mantissa + 1)),  # significant decimal digits the mantissa holds
    }


def float_formats(dtypes=("fp32", "fp16", "bf16")) -> list[dict]:
    return [float_format(d) for d in dtypes]


def stored_value(x: float, dtype) -> Decimal:
    """The exact number a format stores for x (every binary float is a finite decimal; no printing rounding).

    print(torch.tensor(7.123456789)) shows 7.1235 -- that is print's rounding, not the stored value.
    """
    t = torch.tensor(float(x), dtype=torch.float64).to(as_dtype(dtype))
    return Decimal(t.item())  # .item() is a Python float (fp64), which holds every fp32/fp16/bf16 value exactly


def spacing(x: float, dtype) -> float:
    """Gap between x and the next larger representable number of the format (one 'unit in the last place').

    For normal numbers it is 2^floor(log2|x|) x eps: the same relative precision at every magnitude.
    """
    fi = torch.finfo(as_dtype(dtype))
    x = abs(float(x))
    if not math.isfinite(x):
        raise ValueError(f"x must be finite, got {x}: infinities and NaN have no neighbours")
    if x < fi.smallest_normal:  # subnormals: fixed spacing, precision runs out gradually
        return fi.smallest_normal * fi.eps
    return 2.0 ** math.floor(math.log2(x)) * fi.eps


def relative_rounding_error(x: float, dtype) -> float:
    """|stored(x) - x| / |x| -- at most eps/2 for a normal number in range."""
    if x == 0:
        raise ValueError("x = 0 is stored exactly and has no relative error: pick a non-zero value")
    return abs(float(stored_value(x, dtype)) - x) / abs(x)


def accumulate_updates(start: float, update: float, steps: int, dtype) -> float:
    """Add `update` to a weight `steps` times, storing the weight in `dtype` after every step.

    An update smaller than half the spacing at the weight is rounded away entirely: the weight never moves.
    This is why mixed-precision training keeps an fp32 master copy of 16-bit weights (4 bytes/param).
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    dtype = as_dtype(dtype)
    w = torch.tensor(start, dtype=dtype)
    u = torch.tensor(update, dtype=dtype)
    for _ in range(steps):
        w = w + u
    return float(w)


def random_orthogonal_stack(depth: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    """`depth` random orthogonal width x width matrices (float64).

    Orthogonal layers keep the activations' norm fixed, so whatever error builds up is rounding, not the
    signal exploding or vanishing through the stack.
    """
    if not isinstance(depth, int) or depth < 1 or not isinstance(width, int) or width < 1:
        raise ValueError(f"depth and width must be positive integers, got depth={depth!r}, width={width!r}")
    g = torch.Generator().manual_seed(seed)
    return [torch.linalg.qr(torch.randn(width, width, generator=g, dtype=torch.float64))[0] for _ in range(depth)]


@torch.no_grad()
def deep_stack_errors(dtypes=("fp32", "fp16", "bf16"), depth: int = 64, width: int = 256, batch: int = 64,
                      seed: int = 0) -> dict[str, list[float]]:
    """Relative error after each of `depth` linear layers run in each dtype, against a float64 reference.

    Weights and activations are both stored in the low-precision dtype (as in a 16-bit forward pass); the
    error after layer l is ||y_l - ref_l|| / ||ref_l||. Independent roundings add like a random walk, so the
    error grows about like sqrt(depth), and scales with the format's eps.
    """
    layers = random_orthogonal_stack(depth, width, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x0 = torch.randn(batch, width, generator=g, dtype=torch.float64)
    refs, ref = [], x0
    for W in layers:
        ref = ref @ W
        refs.append(ref)
    out = {}
    for d in dtypes:
        dt = as_dtype(d)
        y, errs = x0.to(dt), []
        for W, ref in zip(layers, refs):
            y = y @ W.to(dt)
            errs.append(((y.double() - ref).norm() / ref.norm()).item())
        out[dtype_name(dt)] = errs
    return out


@torch.no_grad()
def fake_quantize_linears(model: torch.nn.Module, quantize_fn, skip=("lm_head",)) -> int:
    """Replace every nn.Linear weight (except `skip`) by quantize_fn(weight) in place; returns how many changed.

    quantize_fn is a round trip such as `lambda w: course_utils.quant.fake_quantize(w, 4, 64)`: the model then
    computes exactly as if its weights had been stored quantized, so its loss measures the quantization damage.
    """
    if not callable(quantize_fn):
        raise TypeError(f"quantize_fn must be callable (weight -> weight), got {type(quantize_fn).__name__}: "
                        "e.g. lambda w: fake_quantize(w, bits=8, blocksize=64)")
    n = 0
    for name, m in _float_linears(model, skip):
        w = quantize_fn(m.weight.data)
        if w.shape != m.weight.shape:
            raise ValueError(f"quantize_fn changed {name}'s weight shape {tuple(m.weight.shape)} to "
                             f"{tuple(w.shape)}: it must return a tensor shaped like its input")
        m.weight.data.copy_(w)
        n += 1
    if n == 0:
        raise ValueError("no nn.Linear layer was quantized: the model has none outside `skip` "
                         f"(skip={skip}); pass a model with Linear layers or a smaller skip list")
    return n


@torch.no_grad()
def plant_outliers(model: torch.nn.Module, factor: float = 5.0, seed: int = 0, skip=("lm_head",)) -> int:
    """Set one random weight of every nn.Linear (except `skip`) to `factor` x that matrix's largest |weight|.

    Trained LLMs have a few weights and features far larger than the rest; the small course model has none, so
    this plants one per matrix, in place. The fp32 model barely changes, but a per-tensor absmax is now
    `factor` times larger, so every other weight gets `factor` times fewer quantization levels.
    Returns the number of matrices changed.
    """
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}: e.g. 5.0 makes each outlier 5x the largest weight")
    g = torch.Generator().manual_seed(seed)
    n = 0
    for _, m in _float_linears(model, skip):
        w = m.weight.data.view(-1)
        i = int(torch.randint(w.numel(), (1,), generator=g))
        w[i] = factor * w.abs().max()
        n += 1
    return n


def _float_linears(model: torch.nn.Module, skip) -> list:
    # Only plain float weights can be rounded in place; the output head is left out by `skip` (by name), as
    # bitsandbytes leaves lm_head unquantized.
    return [(n, m) for n, m in linear_layers(model, include_head=True, skip=skip)
            if isinstance(m, torch.nn.Linear) and m.weight.dtype.is_floating_point]
