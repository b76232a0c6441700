"""minimal.py: the layer students read first is LoRALinear's math (and PEFT's), number for number."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
from peft import LoraConfig
from peft.tuners.lora import Linear as PeftLinear

from course_utils.lora import LoRALinear, MinimalLoRALinear


def three_layers(in_f, out_f, r, alpha, dropout=0.0, seed=0):
    """MinimalLoRALinear, LoRALinear and PEFT's lora.Linear on copies of one base, each built from the same seed."""
    torch.manual_seed(seed)
    base = nn.Linear(in_f, out_f)
    layers = []
    for build in (lambda b: MinimalLoRALinear(b, r, alpha, dropout), lambda b: LoRALinear(b, r, alpha, dropout),
                  lambda b: PeftLinear(b.requires_grad_(False), "default", r=r, lora_alpha=alpha, lora_dropout=dropout,
                                       config=LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout))):
        torch.manual_seed(seed + 1)
        layers.append(build(copy.deepcopy(base)))
    return layers


def weights(layer):
    A, B = layer.lora_A, layer.lora_B
    return (A.weight, B.weight) if isinstance(A, nn.Linear) else (A["default"].weight, B["default"].weight)


@pytest.mark.parametrize("in_f, out_f, r", [(64, 48, 8), (17, 90, 3)])
def test_same_seed_gives_all_three_the_same_init(in_f, out_f, r):
    mini, ours, peft = three_layers(in_f, out_f, r, alpha=16)
    (A, B), (A2, B2), (A3, B3) = weights(mini), weights(ours), weights(peft)
    assert torch.equal(A, A2) and torch.equal(A, A3)
    assert not B.any() and not B2.any() and not B3.any()
    bound = 1 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(in_features))
    assert 0.9 * bound < A.abs().max() <= bound
    assert mini.scaling == ours.scaling == peft.scaling["default"] == 16 / r
    assert not mini.base_layer.weight.requires_grad and A.requires_grad and B.requires_grad


@pytest.mark.parametrize("alpha, dropout", [(16, 0.0), (13, 0.0), (8, 0.3)])
def test_same_A_and_B_give_identical_outputs_and_gradients(alpha, dropout):
    """Bit for bit (torch.equal), in train mode, so with dropout the same seed draws the same mask in all three."""
    layers = three_layers(64, 48, 8, alpha, dropout)
    with torch.no_grad():
        weights(layers[0])[1].normal_()
        for other in layers[1:]:
            for mine, theirs in zip(weights(layers[0]), weights(other)):
                theirs.copy_(mine)
    x = torch.randn(4, 7, 64)
    g = torch.randn(4, 7, 48)
    outs, grads = [], []
    for layer in layers:
        layer.train()
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(5)
        y = layer(xi)
        y.backward(g)
        outs.append(y)
        grads.append([xi.grad, *(w.grad for w in weights(layer))])
    for y, gr in zip(outs[1:], grads[1:]):
        assert torch.equal(y, outs[0])
        assert all(torch.equal(a, b) for a, b in zip(gr, grads[0]))
    assert layers[0].base_layer.weight.grad is None  # W0 is frozen


def test_step0_output_is_the_base_output_exactly():
    base = nn.Linear(32, 20)
    x = torch.randn(5, 32)
    with torch.no_grad():
        assert torch.equal(MinimalLoRALinear(copy.deepcopy(base), r=4, alpha=8)(x), base(x))


def test_delta_weight_merge_and_unmerge_match_LoRALinear():
    mini, ours, _ = three_layers(40, 24, 4, alpha=12)
    with torch.no_grad():
        weights(mini)[1].normal_()
        weights(ours)[1].copy_(weights(mini)[1])
    x = torch.randn(3, 40)
    with torch.no_grad():
        adapted = mini(x)
        assert torch.equal(mini.delta_weight(), ours.delta_weight())
        W0 = mini.base_layer.weight.clone()
        mini.merge(), ours.merge()
        assert torch.equal(mini.base_layer.weight, ours.base_layer.weight)
        assert torch.allclose(mini(x), adapted, atol=1e-6)  # merged: one matmul, same function
        with pytest.raises(RuntimeError, match="add Delta W twice"):
            mini.merge()
        mini.unmerge()
        assert torch.allclose(mini.base_layer.weight, W0, atol=1e-7) and torch.allclose(mini(x), adapted, atol=1e-6)
        with pytest.raises(RuntimeError, match="nothing to unmerge"):
            mini.unmerge()


def test_state_dict_keys_are_a_peft_files_keys():
    """The names are PEFT's: a minimal layer's adapter keys are the keys PEFT writes for that layer."""
    layer = MinimalLoRALinear(nn.Linear(8, 6), r=2)
    assert sorted(k for k in layer.state_dict() if k.startswith("lora_")) == ["lora_A.weight", "lora_B.weight"]
