"""course_utils.quant: symmetric absmax quantization, per tensor and blockwise (the baselines NF4 beats)."""
from __future__ import annotations

import pytest
import torch

from course_utils.quant import dequantize_absmax, fake_quantize, levels, quantization_error, quantize_absmax


def test_levels_of_int8_and_int4():
    assert levels(8) == 127 and levels(4) == 7


def test_round_trip_keeps_zero_and_the_absmax_exactly():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 2.0])
    q, absmax = quantize_absmax(x, bits=4)
    assert q.dtype == torch.int8 and q.tolist() == [-7, -4, 0, 2, 7] and absmax.tolist() == [2.0]
    back = dequantize_absmax(q, absmax, bits=4)
    assert back[2] == 0 and back[0] == -2.0 and back[4] == 2.0


def test_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    x = torch.randn(64, 64)
    for bits in (4, 8):
        step = x.abs().max() / levels(bits)
        assert (fake_quantize(x, bits) - x).abs().max() <= step / 2 + 1e-6


def test_blockwise_confines_an_outlier_to_its_block():
    torch.manual_seed(0)
    x = torch.randn(64 * 64)
    x[0] = 100.0
    per_tensor, blockwise = quantization_error(x, 4), quantization_error(x, 4, blocksize=64)
    assert blockwise < per_tensor / 5


def test_all_zero_block_stays_zero_and_dtype_is_kept():
    x = torch.zeros(128, dtype=torch.bfloat16)
    x[64:] = 1
    y = fake_quantize(x, 8, blocksize=64)
    assert y.dtype == torch.bfloat16 and torch.equal(y, x)


@pytest.mark.parametrize("call, words", [
    (lambda: levels(1), "bits must be an integer from 2 to 8"),
    (lambda: levels(True), "Fix"),
    (lambda: quantize_absmax(torch.arange(4), 8), "floating-point tensor.*Fix"),
    (lambda: quantize_absmax(torch.ones(10), 8, blocksize=64), "dividing the 10 values.*Fix"),
])
def test_bad_input_names_the_fix(call, words):
    with pytest.raises((ValueError, TypeError), match=words):
        call()
