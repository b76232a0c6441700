"""layer.py: LoRALinear against PEFT 0.21's lora.Linear (init, outputs, gradients, merging) and on 4-bit bases."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from peft import LoraConfig
from peft.tuners.lora import Linear as PeftLinear

from course_utils import lora as L


def peft_linear(base: nn.Linear, r: int, alpha: float, **config) -> PeftLinear:
    return PeftLinear(base.requires_grad_(False), "default", config=LoraConfig(r=r, lora_alpha=alpha, **config), r=r,
                      lora_alpha=alpha, **config)


@pytest.mark.parametrize("alpha", [16, 13])  # scaling 2 (exact in binary) and 1.625
def test_forward_and_all_gradients_equal_peft_bit_for_bit(alpha):
    torch.manual_seed(0)
    base = nn.Linear(64, 48)
    ours = L.LoRALinear(copy.deepcopy(base), r=8, alpha=alpha)
    theirs = peft_linear(copy.deepcopy(base), 8, alpha)
    with torch.no_grad():
        ours.B.normal_()
        theirs.lora_A["default"].weight.copy_(ours.A)
        theirs.lora_B["default"].weight.copy_(ours.B)
    x1 = torch.randn(4, 7, 64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = ours(x1), theirs(x2)
    g = torch.randn_like(y1)
    y1.backward(g), y2.backward(g)
    assert torch.equal(y1, y2)
    assert torch.equal(ours.A.grad, theirs.lora_A["default"].weight.grad)
    assert torch.equal(ours.B.grad, theirs.lora_B["default"].weight.grad)
    assert torch.equal(x1.grad, x2.grad)
    assert ours.base.weight.grad is None  # W0 is frozen


def test_default_init_bounds_and_B_zero():
    layer = L.LoRALinear(nn.Linear(256, 128), r=16, alpha=16)
    bound = 1 / math.sqrt(256)
    assert layer.A.abs().max() <= bound and layer.A.abs().max() > 0.95 * bound
    assert layer.A.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform's std
    assert torch.equal(layer.B, torch.zeros(128, 16))
    assert (layer.r, layer.alpha, layer.scaling, layer.in_features, layer.out_features) == (16, 16, 1.0, 256, 128)


@pytest.mark.parametrize("init", ["default", "gaussian"])
def test_same_seed_gives_peft_the_same_A(init):
    base = nn.Linear(2048, 32)
    torch.manual_seed(3)
    ours = L.LoRALinear(copy.deepcopy(base), r=8, alpha=8, init=init)
    torch.manual_seed(3)
    theirs = peft_linear(copy.deepcopy(base), 8, 8, init_lora_weights=init == "default" or init)
    assert torch.equal(ours.A, theirs.lora_A["default"].weight) and not ours.B.any()
    if init == "gaussian":
        assert ours.A.std().item() == pytest.approx(1 / 8, rel=0.03)  # PEFT: std = 1/r, not 1/sqrt(r)


def test_rslora_scaling_is_alpha_over_sqrt_r_like_peft():
    theirs = peft_linear(nn.Linear(4, 4), 16, 8, use_rslora=True)
    assert L.LoRALinear(nn.Linear(4, 4), r=16, alpha=8, use_rslora=True).scaling == 2 == theirs.scaling["default"]
    assert L.LoRALinear(nn.Linear(4, 4), r=16, alpha=8).scaling == 0.5


def test_merge_equals_peft_merge_and_unmerge_restores_W0():
    torch.manual_seed(1)
    base = nn.Linear(40, 24)
    ours, theirs = L.LoRALinear(copy.deepcopy(base), r=4, alpha=8), peft_linear(copy.deepcopy(base), 4, 8)
    with torch.no_grad():
        ours.B.normal_(0, 0.1)
        theirs.lora_A["default"].weight.copy_(ours.A)
        theirs.lora_B["default"].weight.copy_(ours.B)
        x = torch.randn(6, 40)
        adapted = ours(x)
        ours.merge(), theirs.merge()
        assert torch.equal(ours.base.weight, theirs.base_layer.weight)
        assert torch.allclose(ours(x), adapted, atol=1e-6, rtol=0) and ours.merged
        ours.unmerge()
        assert torch.allclose(ours.base.weight, base.weight, atol=1e-7, rtol=0)
        assert torch.allclose(ours(x), adapted, atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match="nothing to unmerge.*call merge"):
        ours.unmerge()


def test_merge_refuses_nan_and_leaves_W0_untouched():
    layer = L.LoRALinear(nn.Linear(6, 5), r=2, alpha=2)
    W0 = layer.base.weight.detach().clone()
    with torch.no_grad():
        layer.B.fill_(float("nan"))
    with pytest.raises(ValueError, match="contains NaN/Inf.*W0 was left untouched"):
        layer.merge()
    assert torch.equal(layer.base.weight, W0) and not layer.merged
    with torch.no_grad():
        layer.B.zero_()
        layer.base.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="base weight W0 contains NaN/Inf.*reload"):
        layer.merge()


def test_half_precision_base_gets_fp32_adapters_and_keeps_its_dtype():
    layer = L.LoRALinear(nn.Linear(16, 8).to(torch.bfloat16), r=4, alpha=8)
    assert layer.A.dtype == torch.float32  # PEFT's autocast_adapter_dtype=True
    assert layer(torch.randn(2, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert layer.delta_weight().dtype == torch.float32


class FakeNF4(nn.Module):
    """Linear-like 4-bit stand-in: weight codes in a buffer, a merge hook, a logical parameter count."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("codes", torch.zeros(linear.weight.numel() // 2, dtype=torch.uint8))
        self.register_buffer("w", linear.weight.detach().clone())
        self.merged_deltas = []

    def dequantized_weight(self):
        return self.w

    def forward(self, x):
        return F.linear(x, self.w)

    def merge_delta(self, delta):
        self.w += delta
        self.merged_deltas.append(delta.clone())
        return torch.tensor(0.5)  # a "rounding error" the caller can report

    def logical_param_count(self):
        return self.in_features * self.out_features


def test_linear_like_base_uses_hooks_for_merge_and_counting():
    model = nn.Sequential(FakeNF4(nn.Linear(16, 12)), nn.ReLU(), nn.Linear(12, 4))
    L.add_lora(model, "all-linear", r=2)  # the 4-bit stand-in counts as a Linear
    layer = model[0]
    assert isinstance(layer, L.LoRALinear) and layer.in_features == 16
    # Total = 16*12 logical weights (buffers alone would count 0) + 12*4+4 head + 2 adapters' A and B.
    trainable = 2 * (16 + 12) + 2 * (12 + 4)
    assert L.count_parameters(model) == (trainable, 16 * 12 + 12 * 4 + 4 + trainable)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(3, 16)
    before = model(x)
    assert layer.merge().item() == 0.5  # merge() hands back the hook's rounding error
    assert torch.allclose(layer.base.merged_deltas[0], layer.delta_weight())
    layer.unmerge()
    assert torch.allclose(model(x), before, atol=1e-6)
