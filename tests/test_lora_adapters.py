"""adapters.py: several named adapters on one base, switching, the active adapter's shorthand, bad settings."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

from course_utils import lora as L

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.fixture(scope="module")
def base_model(course_model):
    return copy.deepcopy(course_model[0]).float().eval()


@pytest.fixture
def tokens():
    return torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))


def test_two_adapters_switch_and_only_the_active_one_trains(base_model, tokens):
    model = L.add_lora(copy.deepcopy(base_model), ATTN, r=4, alpha=8, adapter_name="poet")
    L.add_lora(model, ["q_proj", "v_proj"], r=8, alpha=8, adapter_name="coder")
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.adapter_names == ["poet", "coder"] and layer.active_adapter == "coder"
    assert layer.lora_A["poet"].weight.shape == (4, layer.in_features)
    assert layer.lora_A.weight.shape == (8, layer.in_features)  # the shorthand reads the active adapter
    torch.manual_seed(2)
    with torch.no_grad():
        for _, lay in L.lora_layers(model):
            for name in lay.adapter_names:
                lay.lora_B[name].weight.normal_(0, 0.05)
        out = {}
        for name in ("poet", "coder"):
            L.set_adapter(model, name)
            out[name] = model(tokens).logits
        with L.disable_adapters(model):
            assert torch.equal(model(tokens).logits, base_model(tokens).logits)
    assert not torch.allclose(out["poet"], out["coder"])
    # Layers without the active adapter act as the base: k_proj has only "poet".
    assert model.model.layers[0].self_attn.k_proj.adapter_to_run() is None
    # Only the active adapter (the last one set: "coder") trains.
    assert layer.lora_A["coder"].weight.requires_grad and not layer.lora_A["poet"].weight.requires_grad


def test_shorthand_follows_the_active_adapter_and_extra_repr():
    layer = L.LoRALinear(nn.Linear(10, 6), r=2, alpha=4)
    assert layer.lora_A.weight is layer.lora_A["default"].weight is layer.A
    assert "r=2, alpha=4, scaling=2" in repr(layer)
    layer.add_adapter("wide", r=16, alpha=8, use_rslora=True)
    layer.set_adapter("wide")
    assert (layer.r, layer.alpha, layer.use_rslora, layer.B.shape) == (16, 8, True, (6, 16))
    assert layer.scaling == 8 / math.sqrt(16) == L.AdapterSpec(16, 8, 0.0, "default", True).scaling


@pytest.mark.parametrize("kwargs, words", [
    (dict(r=0), ["r must be a positive integer", "r=8"]),
    (dict(r=8.5), ["r must be a positive integer", "whole number"]),
    (dict(alpha=0), ["alpha must be a number > 0", "alpha=r"]),
    (dict(dropout=1.0), ["dropout must be in [0, 1)", "0.1"]),
    (dict(dropout=-0.1), ["dropout must be in [0, 1)"]),
    (dict(init="xavier"), ["init must be one of", "init='default'"]),
])
def test_bad_hyperparameters_name_the_fix(kwargs, words):
    args = dict(r=8, alpha=8) | kwargs
    for build in (lambda: L.LoRALinear(nn.Linear(4, 4), **args),
                  lambda: L.add_lora(nn.Sequential(nn.Linear(4, 4)), ["0"], **args)):
        with pytest.raises(ValueError) as err:
            build()
        assert all(w in str(err.value) for w in words), str(err.value)


def test_bad_names_switching_while_merged_and_unknown_adapters_raise():
    with pytest.raises(TypeError, match="got a Embedding. Fix: pass an nn.Linear"):
        L.LoRALinear(nn.Embedding(10, 4), r=2, alpha=2)
    with pytest.raises(ValueError, match="without dots.*'task_b'"):
        L.LoRALinear(nn.Linear(4, 4), r=2, alpha=2, adapter_name="task.b")
    layer = L.LoRALinear(nn.Linear(4, 4), r=2, alpha=2)
    with pytest.raises(ValueError, match="already exists on this layer.*'default_2'"):
        layer.add_adapter("default", r=2, alpha=2)
    layer.add_adapter("other", r=2, alpha=2)
    layer.merge()
    with pytest.raises(RuntimeError, match="merged into W0. Fix: unmerge before switching"):
        layer.set_adapter("other")
    with pytest.raises(RuntimeError, match="merged layer. Fix: call unmerge"):
        layer.add_adapter("third", r=2, alpha=2)
    with pytest.raises(KeyError, match="no adapter 'nope'.*Fix"):
        layer.delta_weight("nope")
