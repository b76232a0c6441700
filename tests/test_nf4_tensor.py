"""course_utils.nf4's entry points (tensor.py): quantize_nf4 / dequantize_nf4 end to end against bitsandbytes,
NF4Tensor's measured storage, errors that name the fix; and the package's shape (public names, no import cycle)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import bitsandbytes.functional as F  # pinned: a broken install must fail, not skip
import pytest
import torch

from course_utils import nf4
from course_utils.nf4 import reference as R

PACKAGE = Path(nf4.__file__).parent


def test_quantize_nf4_and_dequantize_nf4_equal_bitsandbytes_end_to_end():
    # Expected: the public path gives bitsandbytes' codes, absmax and dequantized values (odd shapes, partial
    # blocks, all three dtypes); with double quantization the 4-bit codes, offset and 8-bit scales are equal too.
    torch.manual_seed(0)
    for shape, dtype in [((128, 352), torch.float32), ((33, 95), torch.bfloat16), ((4097,), torch.float16)]:
        w = torch.randn(shape).to(dtype)
        packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
        q = nf4.quantize_nf4(w, double_quant=False)
        assert torch.equal(q.codes, packed.view(-1)) and torch.equal(q.absmax, state.absmax)
        assert torch.equal(nf4.dequantize_nf4(q), F.dequantize_4bit(packed, state).reshape(shape))
        packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        q = nf4.quantize_nf4(w)
        assert q.double_quant and q.absmax.dtype == torch.uint8 and torch.equal(q.codes, packed.view(-1))
        assert torch.equal(q.absmax_offset, state.offset) and torch.equal(q.absmax_scale, state.state2.absmax)
    fp4 = nf4.quantize_fp4(w, double_quant=False)
    assert torch.equal(fp4.codes, F.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="fp4")[0]
                       .view(-1))


def test_codebooks_are_copies():
    # Expected: mutating a returned codebook does not corrupt later quantizations.
    nf4.nf4_codebook().zero_()
    nf4.dynamic_map().zero_()
    assert torch.equal(nf4.nf4_codebook(), F.get_4bit_type("nf4", device="cpu"))
    q = nf4.quantize_nf4(torch.tensor([-1.0, 1.0] * 32))
    assert q.codes[0].item() == 0x0F and nf4.dequantize_nf4(q)[:2].tolist() == [-1.0, 1.0]


def test_bits_per_parameter_and_measured_storage():
    # Expected: 4.5 bits without double quantization, 4.127 with; the tensors' bytes say the same.
    assert nf4.bits_per_parameter(64, double_quant=False) == 4.5
    w = torch.randn(1024, 1024)
    plain, dq = nf4.quantize_nf4(w, double_quant=False), nf4.quantize_nf4(w)
    assert plain.storage_bytes() == 1024 * 1024 // 2 + 4 * 1024 * 1024 // 64 == plain.nbytes
    assert dq.storage_bytes() == 1024 * 1024 // 2 + 1024 * 1024 // 64 + 4 * (1024 * 1024 // 64 // 256) + 4
    assert dq.bits_per_parameter() == pytest.approx(nf4.bits_per_parameter(), rel=1e-4)
    assert "4.127 bits/param" in repr(dq)
    assert torch.equal(dq.dequantize(), nf4.dequantize_nf4(dq)) and dq.to("cpu").codes is not None


def test_quantization_error_figures():
    # Expected: NF4 MAE 0.0728 on N(0, 1) (bitsandbytes' tests: 0.072798), FP4 ~0.0965, through the public path.
    torch.manual_seed(0)
    w = torch.randn(1024, 1024)
    assert nf4.quantization_error(w) == pytest.approx(0.0728, abs=0.0005)
    assert nf4.quantization_error(w, double_quant=True) == pytest.approx(0.0728, abs=0.0005)
    assert nf4.quantization_error(w, quant_type="fp4") == pytest.approx(0.0965, abs=0.001)


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
    ([1.0, 2.0], "torch.Tensor"),
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


def test_bad_quant_type_and_dequantize_calls():
    # Expected: an unknown quant_type, a wrong target shape, or parts mixed from two quantizations fail clearly.
    with pytest.raises(ValueError, match="'nf4' or 'fp4'.*Fix"):
        nf4.quantize_4bit(torch.randn(64), quant_type="dynamic")
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


# ------------------------------------------------------------------------------------------------ the package

def _local_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module} if node.module else {a.name for a in node.names}
    return names


def test_modules_import_each_other_without_a_cycle_and_the_reference_stays_plain():
    # Expected: the modules of course_utils/nf4 form a chain (reference first), none over ~350 lines, and
    # reference.py is short plain torch: no threads, no native calls.
    graph = {p.stem: _local_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    done: list[str] = []
    while len(done) < len(graph):
        ready = [m for m, deps in graph.items() if m not in done and deps <= set(done)]
        assert ready, f"import cycle among {sorted(set(graph) - set(done))}: {graph}"
        done += sorted(ready)
    assert done[0] == "reference" and graph["reference"] == set()
    assert all(len(p.read_text().splitlines()) <= 350 for p in PACKAGE.glob("*.py"))
    source = (PACKAGE / "reference.py").read_text()
    assert len(source.splitlines()) <= 160  # ~150
    assert not any(word in source for word in ("thread", "Thread", "ctypes", "native", "concurrent"))


def test_old_names_still_import():
    # Expected: what chapters, labs and users imported from course_utils.nf4 / course_utils.nf4_native still works.
    for name in ("NF4Tensor", "NF4Linear", "quantize_nf4", "quantize_fp4", "quantize_4bit", "dequantize_nf4",
                 "quantization_error", "bits_per_parameter", "nf4_codebook", "fp4_codebook", "dynamic_map",
                 "quantize_model", "nf4_layers", "model_storage_bytes", "MERGE_WARNING", "NF4_OFFSET", "BLOCKSIZES",
                 "DQ_BLOCKSIZE", "SUPPORTED_DTYPES", "MIN_ABSMAX"):
        assert hasattr(nf4, name), name
    old = importlib.import_module("course_utils.nf4_native")
    assert old is nf4.native and callable(old.status)
    assert R.nf4_codebook is nf4.nf4_codebook
