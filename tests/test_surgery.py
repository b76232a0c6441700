"""course_utils.surgery: one rule for the linear layers, module replacement, mode restoring, parameter counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from course_utils import lora, nf4
from course_utils.surgery import (count_parameters, eval_mode, linear_layers, replace_module, train_mode,
                                  trainable_report)


def test_linear_layers_of_the_course_model(course_model):
    model, _ = course_model
    names = [n for n, _ in linear_layers(model)]
    assert len(names) == 4 * 7 and not any(n.endswith("lm_head") for n in names)
    assert [n for n, _ in linear_layers(model, include_head=True)][-1] == "lm_head"
    qv = linear_layers(model, suffixes=("q_proj", "v_proj"))
    assert len(qv) == 8 and all(n.endswith(("q_proj", "v_proj")) for n, _ in qv)
    assert all("down_proj" not in n for n, _ in linear_layers(model, skip="down_proj"))


def test_wrapped_and_quantized_layers_count_once(fresh_course_model):
    model, _ = fresh_course_model
    nf4.quantize_model(model)
    lora.add_lora(model, ["q_proj"], r=4, alpha=4)
    names = [n for n, _ in linear_layers(model)]
    assert len(names) == 28 and not any(".lora_" in n or ".base_layer" in n for n in names)


def test_plain_module_has_no_head():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert [n for n, _ in linear_layers(net)] == ["0", "2"]


def test_replace_module_returns_the_old_one_and_names_the_fix():
    net = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 2)))
    old = replace_module(net, "1.0", nn.Identity())
    assert isinstance(old, nn.Linear) and isinstance(net[1][0], nn.Identity)
    with pytest.raises(KeyError, match="no submodule '1.7'.*Fix"):
        replace_module(net, "1.7", nn.Identity())
    with pytest.raises(ValueError, match="Fix"):
        replace_module(net, "", nn.Identity())


@pytest.mark.parametrize("mode", [eval_mode, train_mode])
def test_mode_contexts_restore_every_flag_even_after_an_error(mode):
    net = nn.Sequential(nn.Dropout(0.5), nn.Dropout(0.5))
    net.train()
    net[1].eval()  # mixed on purpose: each module gets its own flag back
    with pytest.raises(RuntimeError):
        with mode(net):
            assert all(m.training == (mode is train_mode) for m in net.modules())
            raise RuntimeError("a failing cell")
    assert net.training and net[0].training and not net[1].training


def test_count_parameters_counts_nf4_weights_as_what_they_stand_for(fresh_course_model):
    model, _ = fresh_course_model
    _, total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    nf4.quantize_model(model)
    lora.add_lora(model, ["q_proj", "v_proj"], r=8, alpha=16)
    trainable, total_q = count_parameters(model)
    assert total_q == total + trainable and trainable == 8 * 8 * (128 + 128)
    assert trainable_report(model).startswith(f"trainable params: {trainable:,d} || all params: {total_q:,d}")
