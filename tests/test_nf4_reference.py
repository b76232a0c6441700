"""course_utils.nf4.reference against bitsandbytes 0.50 on CPU: codebooks, codes, absmax, double quantization and
dequantized values, bit for bit.

Reference paths, and why two:
- `F.quantize_4bit` on CPU runs bitsandbytes' torch backend (backends/default/ops.py): compared bit for bit.
- `F.dequantize_4bit` on CPU runs a native kernel that gets blocks spanning two rows wrong (course_utils.bnb_guard
  replaces it for those shapes, see test_bnb_guard.py), so every dequantization is also compared with bitsandbytes'
  own torch backend, reached by redispatching the op to its CompositeExplicitAutograd kernel.
"""
from __future__ import annotations

import sys
import types

import bitsandbytes.functional as F  # pinned: a broken install must fail, not skip
import pytest
import torch

from course_utils import quant
from course_utils.nf4 import reference as R
from nf4_cases import DTYPES, weights

TORCH_BACKEND = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


@pytest.fixture(autouse=True)
def _no_torch_compile():
    # bitsandbytes wraps its torch-backend dequantization in torch.compile: ~30 s per new shape on 2 cores.
    import torch._dynamo

    with torch._dynamo.config.patch(disable=True):
        yield


def bnb_torch_dequantize(packed, absmax, blocksize, shape, dtype, quant_type="nf4"):
    op = torch.ops.bitsandbytes.dequantize_4bit.default
    return op.redispatch(TORCH_BACKEND, packed, absmax, blocksize, quant_type, list(shape), dtype)


def bnb_torch_quantize_blockwise(x, blocksize=256):
    op = torch.ops.bitsandbytes.quantize_blockwise.default
    return op.redispatch(TORCH_BACKEND, x, F.create_dynamic_map(), blocksize)


# ------------------------------------------------------------------------------------------------ codebooks

def test_nf4_codebook_is_built_from_normal_quantiles_bit_for_bit():
    # Expected: the 16 values equal bitsandbytes' hard-coded NF4 code and what its create_normal_map() computes.
    ours = R.nf4_codebook()
    assert ours.dtype == torch.float32 and ours.shape == (16,)
    assert torch.equal(ours, F.get_4bit_type("nf4", device="cpu"))
    # create_normal_map needs scipy (not installed). Run bitsandbytes' own function with norm.ppf = cephes ndtri
    # (torch.special.ndtri in float64, the algorithm scipy uses); ours uses statistics.NormalDist instead.
    stats = types.ModuleType("scipy.stats")
    stats.norm = types.SimpleNamespace(ppf=lambda p: torch.special.ndtri(torch.as_tensor(p).double()).numpy())
    scipy = types.ModuleType("scipy")
    scipy.stats = stats
    saved = {k: sys.modules.get(k) for k in ("scipy", "scipy.stats")}
    sys.modules.update({"scipy": scipy, "scipy.stats": stats})
    try:
        full = F.create_normal_map()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    assert full.numel() == 256 and int((full == 0).sum()) == 241  # 7 negative, 241 zeros of padding, 8 positive
    assert torch.equal(ours, torch.cat([full[:7], full[7:8] * 0, full[-8:]]))
    assert 7 == int((ours < 0).sum()) and 8 == int((ours > 0).sum()) and ours[7] == 0
    ppf_offset = torch.special.ndtri(torch.tensor(R.NF4_OFFSET, dtype=torch.float64)).item()
    assert ppf_offset == pytest.approx(1.8481, abs=1e-4)


def test_fp4_codebook_and_dynamic_map_match_bitsandbytes():
    # Expected: FP4 in bit-pattern order and the 256-value dynamic map, each equal to bitsandbytes' bit for bit.
    assert torch.equal(R.fp4_codebook(), F.get_4bit_type("fp4", device="cpu"))
    dyn = R.dynamic_map()
    assert torch.equal(dyn, F.create_dynamic_map(signed=True))
    assert dyn.numel() == 256 and dyn.max() == 1.0 and dyn.min().item() == pytest.approx(-0.99296874)
    with pytest.raises(ValueError, match="Fix"):
        R.codebook("int4")


# ------------------------------------------------------------------------------------------------ 4-bit codes

def _check_against_bitsandbytes(w: torch.Tensor, bs: int, quant_type: str) -> None:
    packed, state = F.quantize_4bit(w, blocksize=bs, compress_statistics=False, quant_type=quant_type)
    codes, absmax = R.quantize(w, bs, quant_type)
    where = (tuple(w.shape), w.dtype, bs, quant_type)
    assert torch.equal(codes, packed.view(-1)), where
    assert torch.equal(absmax, state.absmax), where
    ours = R.dequantize(codes, absmax, w.shape, bs, quant_type, w.dtype)
    assert ours.dtype == w.dtype and ours.shape == w.shape
    assert torch.equal(ours, bnb_torch_dequantize(packed, state.absmax, bs, w.shape, w.dtype, quant_type)), where
    # the public path (native kernel; bnb_guard routes row-spanning shapes; 1-D comes back as (1, n))
    assert torch.equal(ours, F.dequantize_4bit(packed, state).reshape(w.shape)), where


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_quantize_matches_bitsandbytes_bit_for_bit(dtype):
    # Expected: packed codes and absmax equal bitsandbytes' exactly (torch.equal), and so do the dequantized
    # values, for every blocksize, odd and partial shapes, midpoints, +-absmax and all-zero blocks.
    total = 0
    for w, bs in weights(dtype):
        for quant_type in ("nf4", "fp4"):
            _check_against_bitsandbytes(w, bs, quant_type)
        total += w.numel()
    assert total * len(DTYPES) >= 1_000_000  # at least 10^6 values over the three dtypes


def test_packing_layout_first_value_in_high_nibble():
    # Expected: [-1, +1] packs to 0x0F; a zero block to 0x77 with absmax 0; a partial all-zero block keeps the
    # clamped 1e-38 bitsandbytes stores; an odd count's padding nibble is the code of 0.
    codes, absmax = R.quantize(torch.tensor([-1.0, 1.0] * 32))
    assert codes[0].item() == 0x0F and absmax.item() == 1.0
    codes, absmax = R.quantize(torch.zeros(64 + 10))
    assert bool((codes == 0x77).all()) and absmax.tolist() == [0.0, pytest.approx(1e-38)]
    assert torch.equal(R.dequantize(codes, absmax, (74,)), torch.zeros(74))
    assert R.quantize(torch.tensor([1.0, 0.5, -1.0]))[0].tolist() == [0xFC, 0x07]
    assert torch.equal(R.unpack_nibbles(R.pack_nibbles(torch.arange(16)), 15), torch.arange(15, dtype=torch.uint8))


# ------------------------------------------------------------------------------------------------ double quantization

def test_double_quantization_matches_bitsandbytes():
    # Expected: the nested 8-bit codes, scales and offset equal bitsandbytes' torch backend exactly; against its
    # native CPU library the rebuilt absmax agrees within one 8-bit step. Why not exact there: csrc/cpu_ops.cpp
    # finds the 8-bit code through a 65,536-bin lookup table over [-1, 1], so near a midpoint (and near 0, where
    # the dynamic map's codes are closer than a bin) it can pick a neighbour; the torch backend and CUDA pick
    # the exact nearest code, as we do. The 4-bit step has no table.
    torch.manual_seed(1)
    dyn = R.dynamic_map()
    gaps = dyn[1:] - dyn[:-1]
    for shape in [(1024, 1024), (333, 1000), (64, 96), (7, 33)]:
        w = torch.randn(shape)
        packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        codes, absmax = R.quantize(w, 64)
        q8, scale, offset = R.double_quantize(absmax)
        assert q8.dtype == torch.uint8 and q8.numel() == absmax.numel() and scale.numel() == -(-absmax.numel() // 256)
        assert torch.equal(codes, packed.view(-1))
        assert torch.equal(offset, state.offset) and torch.equal(scale, state.state2.absmax)
        bnb_q8, bnb_scale = bnb_torch_quantize_blockwise(absmax - absmax.mean())
        assert torch.equal(q8, bnb_q8) and torch.equal(scale, bnb_scale)
        rebuilt = R.dequantize_absmax(q8, scale, offset)
        # against the native library: one step of the dynamic map at our code (or two lookup bins near 0)
        i = q8.long()
        step = torch.maximum(torch.maximum(gaps[(i - 1).clamp(0, 254)], gaps[i.clamp(max=254)]),
                             torch.tensor(4 / 65536))
        scale_per_block = scale.repeat_interleave(256)[: i.numel()]
        theirs = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
        slack = 4 * torch.finfo(torch.float32).eps * state.offset  # adding the offset rounds, too
        assert bool(((rebuilt - theirs).abs() <= step * scale_per_block + slack).all())
        assert (q8 != state.absmax).float().mean().item() < 0.005
        # with bitsandbytes' own 8-bit codes, the rebuilt absmax is the same bits as its dequantize_blockwise
        assert torch.equal(R.dequantize_absmax(state.absmax, state.state2.absmax, state.offset), theirs)
        # relative error of the 8-bit absmax itself stays ~1%
        assert ((rebuilt - absmax).abs() / absmax).max().item() < 0.012
        # dequantizing with the same absmax is exact
        ours = R.dequantize(codes, rebuilt, shape, 64)
        assert torch.equal(ours, bnb_torch_dequantize(packed, rebuilt, 64, shape, torch.float32))


def test_bits_per_parameter():
    # Expected: 4 + 32/64 = 4.5 without double quantization, 4 + 8/64 + 32/(64*256) = 4.127 with it.
    assert R.bits_per_parameter(64, double_quant=False) == 4.5
    assert round(R.bits_per_parameter(64), 3) == 4.127
    assert R.bits_per_parameter(32, double_quant=False) == 5.0
    with pytest.raises(ValueError, match="blocksize.*Fix"):
        R.bits_per_parameter(48)


# ------------------------------------------------------------------------------------------------ accuracy

def test_error_on_standard_normal_matches_bitsandbytes_reference():
    # Expected: NF4 MAE 0.0728 +- 0.0005 on N(0,1) 1024x1024, block 64 (bitsandbytes' tests: 0.072798);
    # NF4 beats absmax int4 per block of 64 (~0.091), FP4 (~0.0965; its E2M1 levels suit Gaussians worse than
    # even uniform int4) and int4 with one absmax per tensor (~0.17).
    torch.manual_seed(0)
    w = torch.randn(1024, 1024)

    def error(quant_type, dq=False):
        codes, absmax = R.quantize(w, 64, quant_type)
        if dq:
            absmax = R.dequantize_absmax(*R.double_quantize(absmax))
        return (R.dequantize(codes, absmax, w.shape, 64, quant_type) - w).abs().mean().item()

    err, fp4 = error("nf4"), error("fp4")
    assert err == pytest.approx(0.0728, abs=0.0005)
    assert error("nf4", dq=True) == pytest.approx(0.0728, abs=0.0005)
    int4_tensor, int4_block = quant.quantization_error(w, bits=4), quant.quantization_error(w, bits=4, blocksize=64)
    assert err < int4_block < fp4 < int4_tensor
    assert fp4 == pytest.approx(0.0965, abs=0.001)
