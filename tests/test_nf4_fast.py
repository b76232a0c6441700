"""course_utils.nf4.fast and .native give reference.py's bytes, bit for bit, on every case of nf4_cases.py.

fast.quantize: whole blocks through the binned lookup (NF4) or bucketize (FP4), in chunks, on 1 or 2 threads;
fast.dequantize: the byte-pair torch path and the C kernel (when a compiler is there), with and without double
quantization, into float32, bfloat16 and float16.
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from course_utils.nf4 import fast, native, reference as R
from course_utils.nf4.tensor import NF4Tensor
from nf4_cases import DTYPES, weights

HAS_CC = shutil.which(os.environ.get("CC") or "cc") is not None


@pytest.fixture
def fresh_native(monkeypatch):
    monkeypatch.delenv(native.ENV, raising=False)  # these tests set COURSE_NF4_NATIVE themselves
    native.reset()
    yield
    native.reset()


def _state(codes, absmax, w, bs, quant_type, dq) -> tuple[NF4Tensor, torch.Tensor]:
    """(the NF4Tensor, the float32 block absmax the reference dequantizes with)."""
    if not dq:
        return NF4Tensor(codes, absmax, w.shape, w.dtype, bs, quant_type), absmax
    q8, scale, offset = R.double_quantize(absmax)
    return NF4Tensor(codes, q8, w.shape, w.dtype, bs, quant_type, scale, offset), R.dequantize_absmax(q8, scale, offset)


def _check(w, bs, quant_type, paths) -> None:
    where = (tuple(w.shape), w.dtype, bs, quant_type)
    codes, absmax = R.quantize(w, bs, quant_type)
    got_codes, got_absmax = fast.quantize(w, bs, quant_type)
    assert torch.equal(got_codes, codes) and torch.equal(got_absmax, absmax), where
    for dq in (False, True):
        q, block_absmax = _state(codes, absmax, w, bs, quant_type, dq)
        for out_dtype in DTYPES:
            ref = R.dequantize(codes, block_absmax, (w.numel(),), bs, quant_type, out_dtype)
            for use_native in paths:
                if use_native and out_dtype not in native.OUT_DTYPES:
                    continue
                out = fast.dequantize(q, torch.empty(w.numel(), dtype=out_dtype), use_native=use_native)
                assert torch.equal(out, ref), (*where, dq, out_dtype, use_native)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fast_paths_equal_the_reference_bit_for_bit(dtype, fresh_native):
    # Expected: the same codes and absmax as reference.quantize, and the same dequantized bits on both
    # dequantize paths, for NF4 and FP4, double quantization on and off, every output dtype.
    paths = (False, True) if HAS_CC else (False,)
    assert not HAS_CC or native.available(), native.status()
    for w, bs in weights(dtype):
        for quant_type in ("nf4", "fp4"):
            _check(w, bs, quant_type, paths)


def test_two_threads_split_the_work_and_give_the_same_bytes(fresh_native):
    # Expected: a big tensor is split into one block-aligned part per thread; the bytes are the same as the
    # reference's, also under inference_mode and for a weight that requires grad; NaN in the second part is caught.
    torch.manual_seed(3)
    w = torch.randn(1031, 1000, requires_grad=True)  # 1,031,000 values: two parts and a partial last block
    codes, absmax = R.quantize(w, 64)  # the reference on one thread (2 OpenMP threads stall on a busy machine)
    q, block_absmax = _state(codes, absmax, w, 64, "nf4", dq=True)
    ref = {dt: R.dequantize(codes, block_absmax, (w.numel(),), 64, "nf4", dt) for dt in native.OUT_DTYPES}
    torch.set_num_threads(2)  # the autouse fixture restores 1 afterwards
    parts = []
    fast.split_work(w.numel() - 40, 64, lambda lo, hi: parts.append((lo, hi)), torch.device("cpu"))
    assert len(parts) == 2 and sorted(parts)[0][1] % 64 == 0 and sorted(parts)[-1][1] == w.numel() - 40
    got_codes, got_absmax = fast.quantize(w, 64)
    assert torch.equal(got_codes, codes) and torch.equal(got_absmax, absmax)
    with torch.inference_mode():
        assert torch.equal(fast.quantize(w, 64)[0], codes)
    for dt, expected in ref.items():
        for use_native in ((False, True) if HAS_CC else (False,)):
            assert torch.equal(fast.dequantize(q, torch.empty(w.numel(), dtype=dt), use_native), expected), dt
    bad = w.detach().clone()
    bad[-3, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fast.quantize(bad, 64)


def test_binned_index_is_bucketize():
    # Expected: the binned lookup counts midpoints below s exactly like bucketize, on a dense grid of [-1.01, 1.01]
    # and on every midpoint and its float32 neighbours; FP4's close midpoints are refused (ok = False).
    code = R.nf4_codebook()
    mids = (code[:-1] + code[1:]) / 2
    binned = fast.BinnedIndex(mids)
    s = torch.cat([torch.linspace(-1.01, 1.01, 200_001), mids, torch.nextafter(mids, torch.tensor(2.0)),
                   torch.nextafter(mids, torch.tensor(-2.0))])
    out = torch.empty(s.numel(), dtype=torch.uint8)
    binned.index(s, torch.empty_like(s), torch.empty(s.numel(), dtype=torch.int32), out,
                 torch.empty(s.numel(), dtype=torch.bool))
    assert binned.ok and torch.equal(out.long(), torch.bucketize(s, mids))
    fp4 = R.fp4_codebook().sort().values
    assert not fast.BinnedIndex((fp4[:-1] + fp4[1:]) / 2).ok


# ------------------------------------------------------------------------------------------------ the C kernel

@pytest.mark.skipif(not HAS_CC, reason="no C compiler: dequantize uses the torch path (tested above)")
def test_native_kernel_builds_and_says_so(fresh_native):
    # Expected: the kernel builds, passes its self-test against the reference, and the status line says so.
    assert native.available(), native.status()
    assert native.status().startswith("native")
    w = torch.randn(96, 64)
    q, _ = _state(*R.quantize(w), w, 64, "nf4", dq=True)
    assert native.usable(q, torch.empty(0)) and native.usable(q, torch.empty(0, dtype=torch.bfloat16))
    assert not native.usable(q, torch.empty(0, dtype=torch.float16))  # float16 output takes the torch path


@pytest.mark.skipif(not HAS_CC, reason="no C compiler")
def test_portable_kernel_without_simd_matches_too(tmp_path):
    # Expected: the plain-C loop (what ARM and other non-x86 machines compile) gives the reference's bits as well.
    fn = native.load(native.build(portable=True, cache_dir=tmp_path))
    for dtype in native.OUT_DTYPES:
        for w, bs in weights(dtype, hard_blocksizes=(32, 256)):
            codes, absmax = R.quantize(w, bs)
            full = w.numel() - w.numel() % bs
            for dq in (False, True):
                q, block_absmax = _state(codes, absmax, w, bs, "nf4", dq)
                out = torch.empty(w.numel(), dtype=dtype)
                native.call(fn, q, R.nf4_codebook(), R.dynamic_map(), out, 0, full)
                ref = R.dequantize(codes, block_absmax, (w.numel(),), bs, "nf4", dtype)
                assert torch.equal(out[:full], ref[:full]), (tuple(w.shape), bs, dq)


def test_without_a_compiler_or_when_turned_off_the_torch_path_runs(monkeypatch, fresh_native):
    # Expected: no compiler -> the status says so and dequantize still gives the same bits; COURSE_NF4_NATIVE=0
    # turns the kernel off even where it builds.
    w = torch.randn(96, 64)
    q, block_absmax = _state(*R.quantize(w), w, 64, "nf4", dq=True)
    ref = R.dequantize(q.codes, block_absmax, (w.numel(),))
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert not native.available()
    assert "no C compiler (/nonexistent/cc)" in native.status()
    assert not native.usable(q, torch.empty(0))
    assert torch.equal(fast.dequantize(q, torch.empty(w.numel())), ref)
    monkeypatch.delenv("CC")
    monkeypatch.setenv(native.ENV, "0")
    native.reset()
    assert not native.available() and native.status().startswith("off (COURSE_NF4_NATIVE=0)")
    assert torch.equal(fast.dequantize(q, torch.empty(w.numel())), ref)
