"""course_utils.nf4 against bitsandbytes 0.50 on CPU: codebooks, codes, absmax and dequantized values bit for bit.

Reference paths, and why two:
- `F.quantize_4bit` on CPU runs bitsandbytes' torch backend (backends/default/ops.py): compared bit for bit.
- `F.dequantize_4bit` on CPU runs a native kernel that gets blocks spanning two rows wrong (course_utils.bnb_guard
  replaces it for those shapes, see test_bnb_guard.py), so every dequantization is also compared with bitsandbytes'
  own torch backend, reached by redispatching the op to its CompositeExplicitAutograd kernel.
"""
from __future__ import annotations

import copy
import os
import shutil
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

import course_utils
from course_utils import nf4, nf4_native, quant

bnb = pytest.importorskip("bitsandbytes")
F = pytest.importorskip("bitsandbytes.functional")

COURSE_MODEL_CONFIG = Path(course_utils.__file__).parent / "assets" / "course_model" / "config.json"
TORCH_BACKEND = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)




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
    ours = nf4.nf4_codebook()
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
    ppf_offset = torch.special.ndtri(torch.tensor(nf4.NF4_OFFSET, dtype=torch.float64)).item()
    assert ppf_offset == pytest.approx(1.8481, abs=1e-4)


def test_fp4_codebook_and_dynamic_map_match_bitsandbytes():
    # Expected: FP4 in bit-pattern order and the 256-value dynamic map, each equal to bitsandbytes' bit for bit.
    assert torch.equal(nf4.fp4_codebook(), F.get_4bit_type("fp4", device="cpu"))
    dyn = nf4.dynamic_map()
    assert torch.equal(dyn, F.create_dynamic_map(signed=True))
    assert dyn.numel() == 256 and dyn.max() == 1.0 and dyn.min().item() == pytest.approx(-0.99296874)


def test_codebooks_are_copies():
    # Expected: mutating a returned codebook does not corrupt later quantizations.
    nf4.nf4_codebook().zero_()
    assert torch.equal(nf4.nf4_codebook(), F.get_4bit_type("nf4", device="cpu"))


# ------------------------------------------------------------------------------------------------ bit-exactness

def _hard_cases(dtype: torch.dtype, blocksize: int) -> torch.Tensor:
    """Whole blocks that probe the edges: values ON midpoints and one ulp either side, +-absmax, zero blocks,
    tiny and huge values. Each probe block holds +-absmax (a power of two, so x * (1/absmax) is exact)."""
    mids = (nf4.nf4_codebook()[:-1] + nf4.nf4_codebook()[1:]) / 2
    mids = torch.cat([mids, -mids])
    blocks = []
    for absmax in (1.0, 4.0, 0.0625):
        on = mids * absmax
        probes = torch.cat([on, torch.nextafter(on, torch.tensor(9.0)), torch.nextafter(on, torch.tensor(-9.0))])
        for chunk in probes.split(blocksize - 2):
            block = torch.zeros(blocksize)
            block[:2] = torch.tensor([absmax, -absmax])
            block[2: 2 + chunk.numel()] = chunk
            blocks.append(block)
    blocks.append(torch.zeros(blocksize))  # an all-zero block packs to 0x77 with absmax 0
    blocks.append(torch.full((blocksize,), 1e-30) * torch.randn(blocksize).sign())  # (0 in float16)
    top = {torch.float16: 6e4, torch.bfloat16: 1e38, torch.float32: 1e38}[dtype]
    blocks.append(torch.randn(blocksize).clamp(-3, 3) * top / 3)
    blocks.append(-torch.ones(blocksize))
    return torch.cat(blocks).to(dtype)


CASES = [  # (shape, blocksize): odd lengths, trailing partial blocks, rows that are not a multiple of a block
    ((256, 256), 64), ((128, 512), 32), ((400, 257), 128), ((500, 99), 256), ((4097,), 64), ((7, 33), 32),
    ((1,), 64), ((3,), 32), ((31, 31), 256), ((128, 352), 64), ((65, 64), 4096), ((64, 1), 64),
]
SEEDS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _check_against_bitsandbytes(w: torch.Tensor, bs: int, quant_type: str) -> None:
    packed, state = F.quantize_4bit(w, blocksize=bs, compress_statistics=False, quant_type=quant_type)
    q = nf4.quantize_4bit(w, blocksize=bs, double_quant=False, quant_type=quant_type)
    where = (tuple(w.shape), w.dtype, bs, quant_type)
    assert torch.equal(q.codes, packed.view(-1)), where
    assert torch.equal(q.absmax, state.absmax), where
    ours = nf4.dequantize_nf4(q)
    assert ours.dtype == w.dtype and ours.shape == w.shape
    assert torch.equal(ours, bnb_torch_dequantize(packed, state.absmax, bs, w.shape, w.dtype, quant_type)), where
    # the public path (native kernel; bnb_guard routes row-spanning shapes; 1-D comes back as (1, n))
    assert torch.equal(ours, F.dequantize_4bit(packed, state).reshape(w.shape)), where


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_quantize_matches_bitsandbytes_bit_for_bit(dtype):
    # Expected: packed codes and absmax equal bitsandbytes' exactly (torch.equal), and so do the dequantized
    # values, for every blocksize, odd and partial shapes, midpoints, +-absmax and all-zero blocks.
    gen = torch.Generator().manual_seed(SEEDS[dtype])
    total = 0
    for shape, bs in CASES:
        w = (torch.randn(shape, generator=gen) * 0.02).to(dtype)
        if w.numel() >= 2 * bs:
            w.view(-1)[bs: 2 * bs] = 0  # an all-zero block in the middle
        for quant_type in ("nf4", "fp4"):
            _check_against_bitsandbytes(w, bs, quant_type)
        total += w.numel()
    for bs in (32, 64, 128, 256):
        w = _hard_cases(dtype, bs)
        _check_against_bitsandbytes(w, bs, "nf4")
        _check_against_bitsandbytes(w[: w.numel() - 5], bs, "nf4")  # the same with an odd partial tail
        total += 2 * w.numel() - 5
    assert total * len(DTYPES) >= 1_000_000  # at least 10^6 values over the three dtypes


def test_threaded_fast_path_is_bit_exact_too():
    # Expected: big tensors are split over torch.get_num_threads() threads; the result is the same bytes, also
    # under inference_mode and for a weight that requires grad, and NaN in the second half is still caught.
    torch.manual_seed(3)
    w = torch.randn(1031, 1000, requires_grad=True)  # 1,031,000 values: several parts and a partial last block
    torch.set_num_threads(2)  # the autouse fixture restores 1 afterwards
    packed, state = F.quantize_4bit(w.detach(), blocksize=64, compress_statistics=False, quant_type="nf4")
    q = nf4.quantize_nf4(w, double_quant=False)
    assert torch.equal(q.codes, packed.view(-1)) and torch.equal(q.absmax, state.absmax)
    ref = F.dequantize_4bit(packed, state)
    assert torch.equal(nf4.dequantize_nf4(q), ref)
    with torch.inference_mode():
        assert torch.equal(nf4.dequantize_nf4(nf4.quantize_nf4(w, double_quant=False)), ref)
    assert torch.equal(nf4.dequantize_nf4(q, dtype=torch.bfloat16), ref.bfloat16())
    bad = w.detach().clone()
    bad[-3, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        nf4.quantize_nf4(bad)


# ------------------------------------------------------------------------------------------------ the C kernel
# dequantize_nf4 runs course_utils/native/nf4_dequantize.c on CPU when a compiler is there; _dequantize_torch is
# the plain-torch reference. Same bits required, for every case above, with and without double quantization.

HAS_CC = shutil.which((os.environ.get("CC") or "cc")) is not None


def _kernel_cases():
    gen = torch.Generator().manual_seed(5)
    for dtype in nf4_native.OUT_DTYPES:
        for shape, bs in CASES:
            yield (torch.randn(shape, generator=gen) * 0.02).to(dtype), bs
        for bs in (32, 64, 128, 256):
            yield _hard_cases(dtype, bs)[:-5], bs


@pytest.fixture
def fresh_native(monkeypatch):
    monkeypatch.delenv(nf4_native.ENV, raising=False)  # these tests set COURSE_NF4_NATIVE themselves
    nf4_native.reset()
    yield
    nf4_native.reset()


@pytest.mark.skipif(not HAS_CC, reason="no C compiler: dequantize_nf4 uses the torch path (tested everywhere else)")
def test_native_kernel_matches_the_torch_reference(fresh_native):
    # Expected: the kernel builds and passes its self-test, and gives the torch path's exact bits everywhere.
    assert nf4_native.available(), nf4_native.status()
    assert nf4_native.status().startswith("native")
    for w, bs in _kernel_cases():
        for dq in (False, True):
            for quant_type in ("nf4", "fp4"):
                q = nf4.quantize_4bit(w, bs, dq, quant_type)
                assert nf4_native.usable(q, torch.empty(0, dtype=w.dtype))
                ref = nf4._dequantize_torch(q, w.dtype).view(w.shape)
                assert torch.equal(nf4.dequantize_nf4(q), ref), (tuple(w.shape), w.dtype, bs, dq, quant_type)
    torch.set_num_threads(2)  # split over threads (the autouse fixture restores 1)
    w = torch.randn(1031, 1000)
    q = nf4.quantize_nf4(w)
    assert torch.equal(nf4.dequantize_nf4(q, dtype=torch.bfloat16), nf4._dequantize_torch(q, torch.bfloat16).view(
        w.shape))


@pytest.mark.skipif(not HAS_CC, reason="no C compiler")
def test_portable_kernel_without_simd_matches_too(tmp_path):
    # Expected: the plain-C loop (what ARM and other non-x86 machines compile) gives the same bits as well.
    fn = nf4_native.load(nf4_native.build(portable=True, cache_dir=tmp_path))
    levels, dmap = nf4._code("nf4"), nf4._dynamic_map()
    for w, bs in _kernel_cases():
        for dq in (False, True):
            q = nf4.quantize_nf4(w, bs, dq)
            out = torch.empty(q.numel, dtype=w.dtype)
            full = q.numel - q.numel % bs
            nf4_native.call(fn, q, levels, dmap, out, 0, full)
            assert torch.equal(out[:full], nf4._dequantize_torch(q, w.dtype)[:full]), (tuple(w.shape), bs, dq)


def test_without_a_compiler_or_when_turned_off_the_torch_path_runs(monkeypatch, fresh_native):
    # Expected: no compiler -> the status says so and dequantize still gives the same bits; COURSE_NF4_NATIVE=0
    # turns the kernel off even where it builds. float16 output always takes the torch path.
    w = torch.randn(96, 64)
    q = nf4.quantize_nf4(w)
    ref = nf4._dequantize_torch(q, torch.float32).view(w.shape)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert not nf4_native.available()
    assert "no C compiler (/nonexistent/cc)" in nf4_native.status()
    assert torch.equal(nf4.dequantize_nf4(q), ref)
    monkeypatch.delenv("CC")
    monkeypatch.setenv(nf4_native.ENV, "0")
    nf4_native.reset()
    assert not nf4_native.available() and nf4_native.status().startswith("off (COURSE_NF4_NATIVE=0)")
    assert torch.equal(nf4.dequantize_nf4(q), ref)
    assert not nf4_native.usable(nf4.quantize_nf4(w.half()), torch.empty(0, dtype=torch.float16))


def test_packing_layout_first_value_in_high_nibble():
    # Expected: [-1, +1] packs to 0x0F; a zero block to 0x77 with absmax 0 (facts.md section 1).
    q = nf4.quantize_nf4(torch.tensor([-1.0, 1.0] * 32), double_quant=False)
    assert q.codes[0].item() == 0x0F and q.absmax.item() == 1.0
    z = nf4.quantize_nf4(torch.zeros(64), double_quant=False)
    assert bool((z.codes == 0x77).all()) and z.absmax.item() == 0.0
    assert torch.equal(nf4.dequantize_nf4(z), torch.zeros(64))


def test_double_quantization_matches_bitsandbytes():
    # Expected: the 4-bit codes are identical with double quantization; the nested 8-bit codes equal bitsandbytes'
    # torch backend exactly; against its native CPU library the reconstructed absmax agrees within one 8-bit step.
    # Why not exact there: csrc/cpu_ops.cpp finds the 8-bit code through a 65,536-bin lookup table over [-1, 1],
    # so near a midpoint (and near 0, where the dynamic map's codes are closer than a bin) it can pick a neighbour;
    # the torch backend and CUDA binary-search the exact nearest code, as we do. The 4-bit step has no table.
    torch.manual_seed(1)
    dyn = nf4.dynamic_map()
    gaps = dyn[1:] - dyn[:-1]
    for shape in [(1024, 1024), (333, 1000), (64, 96)]:
        w = torch.randn(shape)
        packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        q = nf4.quantize_nf4(w)
        assert q.double_quant and q.absmax.dtype == torch.uint8
        assert torch.equal(q.codes, packed.view(-1))
        assert torch.equal(q.absmax_offset, state.offset) and torch.equal(q.absmax_scale, state.state2.absmax)
        _, plain = F.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
        codes8, scale = bnb_torch_quantize_blockwise(plain.absmax - plain.absmax.mean())
        assert torch.equal(q.absmax, codes8) and torch.equal(q.absmax_scale, scale)
        # against the native library: one step of the dynamic map at our code (or two lookup bins near 0)
        i = q.absmax.long()
        step = torch.maximum(torch.maximum(gaps[(i - 1).clamp(0, 254)], gaps[i.clamp(max=254)]),
                             torch.tensor(4 / 65536))
        scale_per_block = q.absmax_scale.repeat_interleave(256)[: i.numel()]
        theirs = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
        slack = 4 * torch.finfo(torch.float32).eps * state.offset  # adding the offset rounds, too
        assert bool(((q.block_absmax() - theirs).abs() <= step * scale_per_block + slack).all())
        assert (q.absmax != state.absmax).float().mean().item() < 0.005
        # relative error of the 8-bit absmax itself stays ~1% (facts.md)
        assert ((q.block_absmax() - plain.absmax).abs() / plain.absmax).max().item() < 0.012
        # dequantizing with the same absmax is exact
        ours = nf4.dequantize_nf4(q)
        assert torch.equal(ours, bnb_torch_dequantize(packed, q.block_absmax(), 64, shape, torch.float32))


# ------------------------------------------------------------------------------------------------ accuracy, size

def test_error_on_standard_normal_matches_bitsandbytes_reference():
    # Expected: NF4 MAE 0.0728 +- 0.0005 on N(0,1) 1024x1024, block 64 (bitsandbytes' tests: 0.072798);
    # NF4 beats absmax int4 per block of 64 (~0.091), FP4 (~0.0965; its E2M1 levels suit Gaussians worse than
    # even uniform int4) and int4 with one absmax per tensor (~0.17).
    torch.manual_seed(0)
    w = torch.randn(1024, 1024)
    err = nf4.quantization_error(w, blocksize=64)
    assert err == pytest.approx(0.0728, abs=0.0005)
    assert nf4.quantization_error(w, blocksize=64, double_quant=True) == pytest.approx(0.0728, abs=0.0005)
    fp4 = nf4.quantization_error(w, blocksize=64, quant_type="fp4")
    int4_tensor, int4_block = quant.quantization_error(w, bits=4), quant.quantization_error(w, bits=4, blocksize=64)
    assert err < int4_block < fp4 < int4_tensor
    assert fp4 == pytest.approx(0.0965, abs=0.001)


def test_bits_per_parameter_and_measured_storage():
    # Expected: 4.5 bits without double quantization, 4.127 with; the tensors' bytes say the same.
    assert nf4.bits_per_parameter(64, double_quant=False) == 4.5
    assert round(nf4.bits_per_parameter(64), 3) == 4.127
    assert nf4.bits_per_parameter(32, double_quant=False) == 5.0
    w = torch.randn(1024, 1024)
    plain, dq = nf4.quantize_nf4(w, double_quant=False), nf4.quantize_nf4(w)
    assert plain.storage_bytes() == 1024 * 1024 // 2 + 4 * 1024 * 1024 // 64 == plain.nbytes
    assert dq.storage_bytes() == 1024 * 1024 // 2 + 1024 * 1024 // 64 + 4 * (1024 * 1024 // 64 // 256) + 4
    assert dq.bits_per_parameter() == pytest.approx(nf4.bits_per_parameter(), rel=1e-4)
    assert "4.127 bits/param" in repr(dq)


def test_quant_baselines():
    # Expected: int8 absmax round-trips N(0,1) to ~1% of its range; int4 per block beats int4 per tensor.
    torch.manual_seed(0)
    w = torch.randn(256, 256)
    q, absmax = quant.quantize_absmax(w, bits=8)
    assert q.dtype == torch.int8 and q.abs().max() == 127 and absmax.numel() == 1
    assert quant.quantization_error(w, bits=8) < 0.01
    assert quant.quantization_error(w, 4, 64) < quant.quantization_error(w, 4)
    assert torch.equal(quant.fake_quantize(torch.zeros(64), 4, 64), torch.zeros(64))
    with pytest.raises(ValueError, match="Fix"):
        quant.levels(1)


# ------------------------------------------------------------------------------------------------ the layer

def test_nf4_linear_matches_bitsandbytes_linear4bit():
    # Expected: same weight -> same forward as bitsandbytes' Linear4bit (nf4): exactly without double
    # quantization; with it, within the 8-bit absmax rounding explained above (relative 1e-3 of the output).
    torch.manual_seed(0)
    for out_f, in_f in [(352, 128), (128, 352), (96, 64)]:
        linear = torch.nn.Linear(in_f, out_f)
        x = torch.randn(5, in_f)
        for dq in (False, True):
            ref = bnb.nn.Linear4bit(in_f, out_f, compute_dtype=torch.float32, quant_type="nf4", compress_statistics=dq)
            ref.load_state_dict(linear.state_dict())
            ref = ref.to("cpu").train()  # quantizes; train mode: the plain dequantize + matmul path
            ours = nf4.NF4Linear.from_linear(linear, double_quant=dq)
            with torch.no_grad():
                y_ref, y = ref(x), ours(x)
            if not dq:
                assert torch.allclose(y, y_ref, rtol=0, atol=1e-6), (out_f, in_f)
            else:
                assert ((y - y_ref).abs().max() / y_ref.abs().max()).item() < 1e-3, (out_f, in_f)


def test_nf4_linear_is_frozen_and_counts_logical_parameters():
    # Expected: weight in buffers (no Parameters but the frozen bias), logical count in*out+bias, state_dict
    # round-trips, bf16 compute works.
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 64)
    layer = nf4.NF4Linear.from_linear(linear)
    assert (layer.in_features, layer.out_features) == (128, 64)
    assert [n for n, _ in layer.named_parameters()] == ["bias"] and not layer.bias.requires_grad
    assert {"weight_codes", "weight_absmax", "weight_absmax_scale", "weight_absmax_offset"} <= set(layer.state_dict())
    assert layer.logical_param_count() == 128 * 64 + 64
    assert layer.storage_bytes() == layer.quantized.storage_bytes()
    clone = nf4.NF4Linear(torch.zeros(64, 128), torch.zeros(64))
    clone.load_state_dict(layer.state_dict())
    x = torch.randn(3, 128)
    assert torch.equal(clone(x), layer(x))
    assert ((layer(x) - linear(x)).norm() / linear(x).norm()).item() < 0.2  # NF4 moves outputs by ~10%
    bf16 = nf4.NF4Linear.from_linear(linear, compute_dtype=torch.bfloat16)
    assert bf16(x).dtype == torch.float32 and (bf16(x) - layer(x)).abs().max() < 0.05
    no_dq = nf4.NF4Linear.from_linear(linear, double_quant=False)
    assert no_dq.weight_absmax_scale is None and no_dq.weight_absmax.dtype == torch.float32


def test_merge_delta_requantizes_and_reports_rounding_error():
    # Expected: merging dequantizes, adds, re-quantizes; the returned error is > 0, below half a step, and warned.
    torch.manual_seed(0)
    layer = nf4.NF4Linear(torch.randn(64, 128) * 0.02)
    w0 = layer.dequantized_weight()
    delta = torch.randn(64, 128) * 1e-3
    with pytest.warns(UserWarning, match="rounding"):
        err = layer.merge_delta(delta)
    assert err > 0 and err == layer.last_merge_error
    merged = layer.dequantized_weight()
    assert (merged - (w0 + delta)).abs().max().item() == pytest.approx(err)
    assert err < 0.5 * (w0 + delta).abs().max().item()  # never more than half the widest NF4 gap x absmax
    with pytest.raises(ValueError, match="shape"):
        layer.merge_delta(torch.zeros(128, 64))


# ------------------------------------------------------------------------------------------------ QLoRA path

def _course_model_and_batch():
    """(fp32 model, ids, mask), 8 x 32: the course model on its own text, else a random-init twin on random ids."""
    if COURSE_MODEL_CONFIG.exists():
        from course_utils import data
        from course_utils.models import load_course_model

        model, tok = load_course_model()
        batch = tok(data.texts("pretrain", 8), padding="max_length", truncation=True, max_length=32,
                    return_tensors="pt")
        return model, batch["input_ids"], batch["attention_mask"]
    try:
        from course_utils.models import tiny_llama

        model = tiny_llama()
    except ImportError:  # course_utils.tokenizer not there yet
        from transformers import LlamaConfig, LlamaForCausalLM

        from course_utils.models import COURSE_MODEL_SHAPE

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**COURSE_MODEL_SHAPE)).eval()
    ids = torch.randint(4, model.config.vocab_size, (8, 32), generator=torch.Generator().manual_seed(0))
    return model, ids, torch.ones_like(ids)


@pytest.fixture
def course_model_and_batch():
    return _course_model_and_batch()


@pytest.mark.filterwarnings("ignore:Merging an adapter")
def test_qlora_on_the_course_model(course_model_and_batch):
    # Expected: NF4 base + LoRA on all linear layers trains (loss falls), stays close to the full-precision model,
    # stores its linear weights in 4.127 bits/param (measured), and merging reports a nonzero rounding error.
    lora = pytest.importorskip("course_utils.lora", reason="course_utils.lora (LoRALinear/add_lora) not written yet")
    fp, ids, mask = course_model_and_batch
    labels = ids.masked_fill(mask == 0, -100)
    model = nf4.quantize_model(copy.deepcopy(fp))
    layers = nf4.nf4_layers(model)
    assert len(layers) == 7 * fp.config.num_hidden_layers and isinstance(model.lm_head, torch.nn.Linear)

    # memory: measured from the tensors vs bits_per_parameter's prediction
    n_quantized = sum(m.in_features * m.out_features for _, m in layers)
    measured = sum(b.numel() * b.element_size() for _, m in layers for b in m.buffers())
    predicted = n_quantized * nf4.bits_per_parameter() / 8
    assert measured == nf4.model_storage_bytes(model)
    assert abs(measured / predicted - 1) < 0.02
    fp_bytes = sum(m.weight.numel() * m.weight.element_size() for n, m in fp.named_modules()
                   if isinstance(m, torch.nn.Linear) and n != "lm_head")
    assert measured / fp_bytes == pytest.approx(nf4.bits_per_parameter() / 32, rel=0.02)

    # closeness: NF4 moves each weight by ~0.2 of a block's spread; the logits move far less than they vary.
    # Measured (relative error of the logits, top-1 agreement): course model on its own text 0.032 / 0.990;
    # random-init twin on random ids 0.21 / 0.71 (near-uniform logits make argmax fragile). Tolerances ~3x.
    max_rel, min_agree = (0.1, 0.95) if COURSE_MODEL_CONFIG.exists() else (0.5, 0.5)
    with torch.no_grad():
        ref, got = fp(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    got, ref = got[keep], ref[keep]
    rel = ((got - ref).norm() / (ref - ref.mean()).norm()).item()
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"NF4 vs fp32 logits: relative error {rel:.3f}, top-1 agreement {agree:.3f}")
    assert rel < max_rel and agree > min_agree, (rel, agree)

    # QLoRA: adapters on every linear layer, W0 frozen in NF4
    lora.add_lora(model, "all-linear", r=8, alpha=16)
    trainable, total = lora.count_parameters(model)
    assert total == sum(p.numel() for p in fp.parameters()) + trainable  # logical count, not packed bytes
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(params, lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        assert all(p.grad is not None for p in params)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses

    # merging into the 4-bit base: dequantize, add, re-quantize -> nonzero rounding error, reported
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits[mask.bool()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lora.merge_lora(model)
    errors = [m.last_merge_error for _, m in nf4.nf4_layers(model)]
    assert all(e is not None and e > 0 for e in errors)
    assert any("rounding" in str(w.message) for w in caught)
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).logits[mask.bool()]
    moved = ((after - before).norm() / (before - before.mean()).norm()).item()
    print(f"losses {losses[0]:.3f} -> {losses[-1]:.3f}; merge moved logits by {moved:.3f} (relative)")
    assert 0 < moved < 0.3, moved  # measured 0.04 (course model): about what quantizing the base did


# ------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("bad, match", [
    (torch.tensor([1.0, float("nan")] * 40), "NaN"),
    (torch.tensor([1.0, float("inf")] * 40), "Inf"),
    (torch.full((3,), float("-inf")), "Inf"),
    (torch.ones(64, dtype=torch.int64), "int64"),
    (torch.ones(64, dtype=torch.complex64), "complex"),
    (torch.ones(64, dtype=torch.bool), "bool"),
    (torch.ones(64, dtype=torch.float64), "float64"),
    (torch.empty(0, 64), "empty"),
])
def test_bad_weights_get_a_clear_error(bad, match):
    # Expected: a TypeError/ValueError naming the problem and the fix.
    with pytest.raises((TypeError, ValueError), match=match) as info:
        nf4.quantize_nf4(bad)
    assert "Fix" in str(info.value)


@pytest.mark.parametrize("blocksize", [16, 48, 100, 8192, 0, -64, 64.0, True, "64"])
def test_bad_blocksize(blocksize):
    # Expected: only powers of two in [32, 4096]; the message lists them.
    with pytest.raises(ValueError, match="power of two") as info:
        nf4.quantize_nf4(torch.randn(64, 64), blocksize=blocksize)
    assert "Fix" in str(info.value) and "4096" in str(info.value)


def test_bad_dequantize_calls():
    # Expected: a wrong target shape, or parts mixed from two quantizations, fail with a clear error.
    q = nf4.quantize_nf4(torch.randn(64, 96))
    assert nf4.dequantize_nf4(q, shape=(96, 64)).shape == (96, 64)  # same numel: a reshape is fine
    with pytest.raises(ValueError, match="shape") as info:
        nf4.dequantize_nf4(q, shape=(64, 64))
    assert "Fix" in str(info.value)
    other = nf4.quantize_nf4(torch.randn(32, 32))
    with pytest.raises(ValueError, match="codes"):
        nf4.dequantize_nf4(nf4.NF4Tensor(other.codes, q.absmax, q.shape, q.dtype, 64, "nf4", q.absmax_scale,
                                         q.absmax_offset))
    with pytest.raises(ValueError, match="absmax"):
        nf4.dequantize_nf4(nf4.NF4Tensor(q.codes, other.absmax, q.shape, q.dtype, 64, "nf4", q.absmax_scale,
                                         q.absmax_offset))
    with pytest.raises(TypeError, match="NF4Tensor"):
        nf4.dequantize_nf4(torch.zeros(10, dtype=torch.uint8))
    with pytest.raises(ValueError, match="2-D"):
        nf4.NF4Linear(torch.randn(64))
