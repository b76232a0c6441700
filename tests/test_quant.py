"""course_utils.quant: the absmax int8/int4 baselines chapter 03 compares NF4 with."""
from __future__ import annotations

import pytest
import torch

from course_utils import quant


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
