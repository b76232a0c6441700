"""course_utils.nf4.layer: NF4Linear against bitsandbytes' Linear4bit (and converted to and from it), quantize_model,
merging into a 4-bit base, and QLoRA on the course model."""
from __future__ import annotations

import copy
import warnings

import bitsandbytes as bnb  # pinned: a broken install must fail, not skip
import pytest
import torch

from course_utils import bnb_guard, data, lora, nf4
from course_utils.nf4 import NF4Linear

INTEROP_SHAPES = [(128, 352), (352, 128), (33, 95), (7, 5)]  # (out, in): in 352 = 5.5 blocks, odd sizes
COMPUTE_DTYPES = (torch.float32, torch.bfloat16)


def _bnb_linear(linear: torch.nn.Linear, dq: bool, dtype=torch.float32, compute_dtype=torch.float32):
    """A Linear4bit quantized by bitsandbytes itself from `linear`'s weights (cast to `dtype`)."""
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=dq)
    layer.load_state_dict(linear.state_dict())
    return layer.to(dtype).to("cpu").train()  # the move to a device quantizes


def _same_bytes(a: NF4Linear, b: NF4Linear) -> bool:
    ta, tb = a.quantized.tensors(), b.quantized.tensors()
    same_shape = a.quantized.shape == b.quantized.shape
    return same_shape and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_nf4_linear_matches_bitsandbytes_linear4bit():
    # Expected: each quantizing the same weight, our layer and Linear4bit (nf4) compute the same forward: exactly
    # without double quantization; with it, within the 8-bit absmax rounding of bitsandbytes' CPU lookup table
    # (test_nf4_reference.py), relative 1e-3 of the output.
    torch.manual_seed(0)
    for out_f, in_f in [(352, 128), (128, 352), (96, 64)]:
        linear = torch.nn.Linear(in_f, out_f)
        x = torch.randn(5, in_f)
        for dq in (False, True):
            ref, ours = _bnb_linear(linear, dq), NF4Linear.from_linear(linear, double_quant=dq)
            with torch.no_grad():
                y_ref, y = ref(x), ours(x)
            if not dq:
                assert torch.equal(y, y_ref), (out_f, in_f)
            else:
                assert ((y - y_ref).abs().max() / y_ref.abs().max()).item() < 1e-3, (out_f, in_f)


# ------------------------------------------------------------------------------------------------ interop

def test_to_bitsandbytes_and_back_keep_the_bytes_and_the_outputs():
    # Expected: to_bitsandbytes() gives a Linear4bit with our codes and quantization state (double quantization
    # included); its forward equals ours bit for bit in float32 and bfloat16, in train mode and in an eval-mode
    # no-grad forward; from_bitsandbytes() gives back a layer with the very same buffers and outputs.
    torch.manual_seed(0)
    for out_f, in_f in INTEROP_SHAPES:
        linear = torch.nn.Linear(in_f, out_f, bias=in_f % 2 == 0)
        for dq in (False, True):
            for dtype in COMPUTE_DTYPES:
                ours = NF4Linear.from_linear(linear, double_quant=dq, compute_dtype=dtype)
                theirs = ours.to_bitsandbytes()
                where = (out_f, in_f, dq, dtype)
                assert isinstance(theirs, bnb.nn.Linear4bit) and isinstance(theirs.weight, bnb.nn.Params4bit), where
                state = theirs.weight.quant_state
                assert torch.equal(theirs.weight.data.view(-1), ours.weight_codes) and state.nested == dq, where
                assert torch.equal(state.absmax, ours.weight_absmax), where
                if dq:
                    assert torch.equal(state.state2.absmax, ours.weight_absmax_scale), where
                    assert torch.equal(state.offset, ours.weight_absmax_offset), where
                x = torch.randn(3, 2, in_f).to(dtype)
                with torch.no_grad():
                    y = ours(x)
                    assert torch.equal(theirs.train()(x), y), where
                    assert torch.equal(theirs.eval()(x), y), where
                back = NF4Linear.from_bitsandbytes(theirs)
                assert _same_bytes(back, ours) and back.compute_dtype == dtype, where
                assert torch.equal(back(x), y), where


def test_from_bitsandbytes_takes_what_bitsandbytes_quantized():
    # Expected: a Linear4bit that bitsandbytes quantized itself (float32 or bfloat16 weights, double quantization
    # on or off) converts into an NF4Linear with its exact state and outputs; gradients to the input agree too.
    torch.manual_seed(1)
    for out_f, in_f in INTEROP_SHAPES[:3]:
        linear = torch.nn.Linear(in_f, out_f)
        for dq in (False, True):
            for dtype in COMPUTE_DTYPES:
                theirs = _bnb_linear(linear, dq, dtype=dtype, compute_dtype=dtype)
                ours = NF4Linear.from_bitsandbytes(theirs)
                state = theirs.weight.quant_state
                assert ours.weight_dtype == dtype and ours.double_quant == dq
                assert torch.equal(ours.weight_absmax, state.absmax)
                x = torch.randn(4, in_f, dtype=dtype, requires_grad=True)
                y_ours, y_theirs = ours(x), theirs(x)
                assert torch.equal(y_ours, y_theirs), (out_f, in_f, dq, dtype)
                g = torch.randn_like(y_ours)
                (gx_ours,), (gx_theirs,) = torch.autograd.grad(y_ours, x, g), torch.autograd.grad(y_theirs, x, g)
                assert torch.equal(gx_ours, gx_theirs), (out_f, in_f, dq, dtype)


def test_conversion_survives_an_eval_forward_on_a_repacking_cpu():
    # Expected: on a CPU with AVX512-BF16 bitsandbytes repacks a Linear4bit at its first eval-mode no-grad
    # forward (course_utils.bnb_guard). With the guard on, the layer stays as it was: the conversion back
    # works and is exact. Without the guard the layer is repacked, and from_bitsandbytes refuses it, naming the fix.
    # The flag below is bitsandbytes' own per-layer record of that CPU feature: set, it makes any CPU take the path.
    torch.manual_seed(2)
    ours = NF4Linear.from_linear(torch.nn.Linear(128, 64))
    x = torch.randn(3, 128)
    assert bnb_guard.is_active()
    theirs = ours.to_bitsandbytes()
    theirs.support_avx512bf16_for_cpu = True
    with torch.no_grad():
        theirs.eval()(x)
    assert not bnb_guard.packed_layers(torch.nn.Sequential(theirs))
    back = NF4Linear.from_bitsandbytes(theirs)
    assert _same_bytes(back, ours) and torch.equal(back(x), ours(x))
    with bnb_guard.disabled():
        unguarded = ours.to_bitsandbytes()
        unguarded.support_avx512bf16_for_cpu = True
        with torch.no_grad():
            unguarded.eval()(x)
    assert bnb_guard.packed_layers(torch.nn.Sequential(unguarded)) == ["0"]
    with pytest.raises(ValueError, match="repacked.*Fix"):
        NF4Linear.from_bitsandbytes(unguarded)


def test_from_bitsandbytes_bad_input():
    # Expected: a plain nn.Linear, an unquantized Linear4bit and an FP4 layer each get an error naming the fix.
    with pytest.raises(TypeError, match="Fix"):
        NF4Linear.from_bitsandbytes(torch.nn.Linear(64, 64))
    with pytest.raises(TypeError, match="quantizes it"):
        NF4Linear.from_bitsandbytes(bnb.nn.Linear4bit(64, 64, quant_type="nf4"))
    fp4 = bnb.nn.Linear4bit(64, 64, quant_type="fp4").to("cpu")
    with pytest.raises(ValueError, match="nf4"):
        NF4Linear.from_bitsandbytes(fp4)


# ------------------------------------------------------------------------------------------------ the layer

def test_nf4_linear_is_frozen_and_counts_logical_parameters():
    # Expected: weight in buffers (no Parameters but the frozen bias), logical count in*out+bias, state_dict
    # round-trips, bf16 compute works.
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 64)
    layer = NF4Linear.from_linear(linear)
    assert (layer.in_features, layer.out_features) == (128, 64)
    assert [n for n, _ in layer.named_parameters()] == ["bias"] and not layer.bias.requires_grad
    assert {"weight_codes", "weight_absmax", "weight_absmax_scale", "weight_absmax_offset"} <= set(layer.state_dict())
    assert layer.logical_param_count() == 128 * 64 + 64
    assert layer.storage_bytes() == layer.quantized.storage_bytes()
    clone = NF4Linear(torch.zeros(64, 128), torch.zeros(64))
    clone.load_state_dict(layer.state_dict())
    x = torch.randn(3, 128)
    assert torch.equal(clone(x), layer(x))
    assert ((layer(x) - linear(x)).norm() / linear(x).norm()).item() < 0.2  # NF4 moves outputs by ~10%
    bf16 = NF4Linear.from_linear(linear, compute_dtype=torch.bfloat16)
    assert bf16(x).dtype == torch.float32 and (bf16(x) - layer(x)).abs().max() < 0.05
    no_dq = NF4Linear.from_linear(linear, double_quant=False)
    assert no_dq.weight_absmax_scale is None and no_dq.weight_absmax.dtype == torch.float32
    assert torch.equal(NF4Linear(layer.quantized, layer.bias)(x), layer(x))  # from an NF4Tensor: no re-quantizing
    with pytest.raises(ValueError, match="2-D"):
        NF4Linear(torch.randn(64))
    with pytest.raises(ValueError, match="NF4"):
        NF4Linear(nf4.quantize_fp4(torch.randn(8, 64)))


def test_merge_delta_requantizes_and_reports_rounding_error():
    # Expected: merging dequantizes, adds, re-quantizes; the returned error is > 0, below half a step, and warned.
    torch.manual_seed(0)
    layer = NF4Linear(torch.randn(64, 128) * 0.02)
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


def test_quantize_model_takes_the_linear_layers_by_the_surgery_rule():
    # Expected: every linear layer but the output head and the skipped names becomes NF4Linear; a LoRA wrapper's
    # base layer is quantized inside the wrapper; a second call changes nothing; a bare Linear is refused.
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(64, 32), "b": torch.nn.Linear(32, 64),
                                 "lm_head": torch.nn.Linear(64, 10), "norm": torch.nn.LayerNorm(64)})
    nf4.quantize_model(model, skip=("lm_head", "b"))
    assert [n for n, _ in nf4.nf4_layers(model)] == ["a"] and type(model["b"]) is torch.nn.Linear
    assert type(model["lm_head"]) is torch.nn.Linear and nf4.model_storage_bytes(model) == model["a"].storage_bytes()
    wrapped = lora.add_lora(torch.nn.Sequential(torch.nn.Linear(64, 64)), "all-linear", r=2)
    nf4.quantize_model(wrapped)
    assert [n for n, _ in nf4.nf4_layers(wrapped)] == ["0.base_layer"]
    codes = wrapped[0].base_layer.weight_codes
    nf4.quantize_model(wrapped)
    assert wrapped[0].base_layer.weight_codes is codes
    with pytest.raises(TypeError, match="Fix"):
        nf4.quantize_model(torch.nn.Linear(64, 64))
    with pytest.raises(ValueError, match="power of two"):
        nf4.quantize_model(model, blocksize=48)


# ------------------------------------------------------------------------------------------------ QLoRA

@pytest.mark.filterwarnings("ignore:Merging an adapter")
def test_qlora_on_the_course_model(fresh_course_model):
    # Expected: NF4 base + LoRA on all linear layers trains (loss falls), stays close to the full-precision model,
    # stores its linear weights in 4.127 bits/param (measured), and merging reports a nonzero rounding error.
    fp, tok = fresh_course_model
    batch = tok(data.texts("pretrain", 8), padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
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
    # Measured on the course model's own text: relative error of the logits 0.032, top-1 agreement 0.990.
    with torch.no_grad():
        ref, got = fp(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    got, ref = got[keep], ref[keep]
    rel = ((got - ref).norm() / (ref - ref.mean()).norm()).item()
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert rel < 0.1 and agree > 0.95, (rel, agree)

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
    assert 0 < moved < 0.3, moved  # measured 0.04: about what quantizing the base did
