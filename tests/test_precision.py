"""course_utils.precision: float formats, exact stored values, vanishing updates, error through depth, and the
whole-model quantization helpers notebook 03 relies on."""
from __future__ import annotations

import math
from decimal import Decimal

import pytest
import torch

from course_utils import precision as P

@pytest.fixture
def fresh_model(fresh_course_model):
    """A copy of the course model that a test may modify."""
    return fresh_course_model[0]


# ------------------------------------------------------------------------------------------- formats

def test_bit_layouts_match_the_ieee_and_bfloat16_definitions():
    # fp32 = 1 + 8 + 23, fp16 = 1 + 5 + 10, bf16 = 1 + 8 + 7
    layout = {f["format"]: (f["sign_bits"], f["exponent_bits"], f["mantissa_bits"]) for f in P.float_formats()}
    assert layout == {"fp32": (1, 8, 23), "fp16": (1, 5, 10), "bf16": (1, 8, 7)}


def test_format_ranges_and_eps_come_from_finfo():
    fp16, bf16 = P.float_format("fp16"), P.float_format(torch.bfloat16)
    assert fp16["max"] == 65504.0 and fp16["eps"] == 2.0**-10
    assert bf16["eps"] == 2.0**-7 and bf16["max"] > 3e38
    assert fp16["smallest_subnormal"] == 2.0**-24


def test_unknown_format_names_the_fix():
    with pytest.raises(ValueError, match="fp32"):
        P.float_format("fp12")
    with pytest.raises(ValueError):
        P.as_dtype(torch.int8)


# ------------------------------------------------------------------------------------------- stored values

def test_7_125_is_stored_exactly_in_both_16_bit_formats():
    assert P.stored_value(7.123456789, "fp16") == Decimal("7.125")
    assert P.stored_value(7.123456789, "bf16") == Decimal("7.125")
    assert P.stored_value(7.123456789, "fp32") == Decimal("7.1234569549560546875")


def test_stored_value_is_exact_not_printed():
    # 0.1 has no finite binary expansion: fp16 stores 0.0999755859375 exactly
    assert str(P.stored_value(0.1, "fp16")) == "0.0999755859375"


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("x", [7.123456789, 0.1, 1000.7, 1 / 3, 3e-3])
def test_rounding_error_is_at_most_half_eps(fmt, x):
    assert P.relative_rounding_error(x, fmt) <= torch.finfo(P.as_dtype(fmt)).eps / 2


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
def test_spacing_is_the_gap_to_the_next_representable_number(fmt):
    dtype = P.as_dtype(fmt)
    for x in [1.0, 7.0, 1000.0, 0.01]:
        t = torch.tensor(x, dtype=dtype)
        up = torch.nextafter(t.float(), torch.tensor(math.inf)).to(dtype) if fmt == "fp32" else None
        gap = P.spacing(float(t), fmt)
        # the stored value plus one spacing is representable, plus half a spacing rounds (to even) away from t
        assert float(torch.tensor(float(t) + gap, dtype=dtype)) == float(t) + gap
        assert float(torch.tensor(float(t) + 0.4 * gap, dtype=dtype)) == float(t)
        if up is not None:
            assert float(up) - float(t) == gap


def test_zero_has_no_relative_error_and_says_so():
    with pytest.raises(ValueError, match="exactly"):
        P.relative_rounding_error(0.0, "fp16")


# ------------------------------------------------------------------------------------------- updates

def test_small_updates_vanish_in_16_bits_but_not_in_fp32():
    assert P.accumulate_updates(1.0, 1e-4, 1000, "bf16") == 1.0
    assert P.accumulate_updates(1.0, 1e-4, 1000, "fp16") == 1.0
    assert abs(P.accumulate_updates(1.0, 1e-4, 1000, "fp32") - 1.1) < 1e-3


def test_an_update_above_half_a_spacing_rounds_up_to_a_whole_spacing():
    # bf16 spacing at 1.0 is 2**-7 = 0.0078; 0.004 > 0.0039 so each step moves a full spacing
    assert P.accumulate_updates(1.0, 0.004, 1, "bf16") == 1.0 + 2.0**-7


# ------------------------------------------------------------------------------------------- depth

def test_orthogonal_stack_is_orthogonal_and_seeded():
    a = P.random_orthogonal_stack(3, 16, seed=1)
    b = P.random_orthogonal_stack(3, 16, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.allclose(a[0] @ a[0].T, torch.eye(16, dtype=torch.float64), atol=1e-12)


def test_error_through_depth_grows_like_sqrt_depth_and_scales_with_eps():
    errs = P.deep_stack_errors(depth=64, width=128, batch=32, seed=0)
    assert set(errs) == {"fp32", "fp16", "bf16"} and all(len(e) == 64 for e in errs.values())
    for e in errs.values():
        assert 3 < e[63] / e[0] < 20  # ~sqrt(64) = 8: a random walk, not linear growth (64)
    assert errs["fp32"][63] < errs["fp16"][63] < errs["bf16"][63]
    assert 4 < errs["bf16"][63] / errs["fp16"][63] < 16  # eps ratio 8


def test_deep_stack_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        P.random_orthogonal_stack(0, 8)


# ------------------------------------------------------------------------------------------- whole model

def test_fake_quantize_linears_touches_every_linear_but_the_head(fresh_model):
    head = fresh_model.lm_head.weight.clone()
    n = P.fake_quantize_linears(fresh_model, lambda w: torch.zeros_like(w))
    assert n == fresh_model.config.num_hidden_layers * 7
    assert torch.equal(fresh_model.lm_head.weight, head)
    assert fresh_model.model.layers[0].self_attn.q_proj.weight.abs().sum() == 0


def test_fake_quantize_linears_errors_name_the_problem(fresh_model):
    with pytest.raises(TypeError, match="callable"):
        P.fake_quantize_linears(fresh_model, "int4")
    with pytest.raises(ValueError, match="shape"):
        P.fake_quantize_linears(fresh_model, lambda w: w.flatten())
    with pytest.raises(ValueError, match="no nn.Linear"):
        P.fake_quantize_linears(torch.nn.Sequential(torch.nn.ReLU()), lambda w: w)


def test_planted_outliers_break_per_tensor_int4_but_not_blockwise(fresh_model):
    from course_utils.quant import fake_quantize, quantization_error

    q = fresh_model.model.layers[0].self_attn.q_proj
    clean = q.weight.detach().clone()
    before = clean.abs().max()
    assert P.plant_outliers(fresh_model, factor=5.0, seed=0) == fresh_model.config.num_hidden_layers * 7
    w = q.weight.detach()
    assert torch.isclose(w.abs().max(), 5 * before)
    assert (w != clean).sum() == 1  # exactly one weight changed per matrix
    assert quantization_error(w, 4, None) > 3 * quantization_error(clean, 4, None)
    assert quantization_error(w, 4, 64) < 1.2 * quantization_error(clean, 4, 64)
    assert fake_quantize(w, 4, 64).shape == w.shape


def test_plant_outliers_rejects_a_non_positive_factor(fresh_model):
    with pytest.raises(ValueError, match="factor"):
        P.plant_outliers(fresh_model, factor=0)
