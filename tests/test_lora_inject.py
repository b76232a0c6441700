"""inject.py: add_lora picks the layers PEFT picks, counts and trains like PEFT, merges and refuses bad targets."""
from __future__ import annotations

import contextlib
import copy
import io

import pytest
import torch
import torch.nn as nn
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from course_utils import lora as L

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
# PEFT 0.21 calls a transformers method that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def base_model(course_model):
    return copy.deepcopy(course_model[0]).float().eval()


@pytest.fixture
def tokens():
    return torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))


def tiny_llama() -> nn.Module:
    """A Llama of other shapes than the course model's: width 48, MLP 80, grouped-query attention, 3 layers."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 20), nn.GELU(), nn.Sequential(nn.Linear(20, 20), nn.Tanh()), nn.Linear(20, 3))


def peft_report(peft_model) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        peft_model.print_trainable_parameters()
    return buf.getvalue().strip()


@pytest.mark.parametrize("make, targets", [
    (tiny_llama, "all-linear"), (tiny_llama, ["q_proj", "v_proj"]), (tiny_llama, ["mlp.down_proj", "o_proj"]),
    (tiny_llama, ["model.layers.1.self_attn.k_proj"]), (tiny_llama, r".*\.(1|2)\.self_attn\.(q|v)_proj"),
    (mlp, "all-linear"), (mlp, ["0", "3"]), (mlp, r"2\.0"), (mlp, ["2.0"]),
], ids=["llama-all-linear", "llama-qv", "llama-dotted-suffixes", "llama-full-name", "llama-regex", "mlp-all-linear",
        "mlp-list", "mlp-regex", "mlp-dotted"])
def test_targets_are_the_layers_peft_adapts(make, targets):
    ours = L.add_lora(make(), copy.deepcopy(targets))
    theirs = get_peft_model(make(), LoraConfig(target_modules=copy.deepcopy(targets)))
    assert sorted(n for n, _ in L.lora_layers(ours)) == sorted(theirs.targeted_module_names)


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ATTN, "all-linear"], ids=["qv", "attention", "all-linear"])
def test_trainable_counts_and_report_equal_peft(base_model, targets):
    ours = L.add_lora(copy.deepcopy(base_model), targets)
    theirs = get_peft_model(copy.deepcopy(base_model), LoraConfig(target_modules=targets))
    assert L.count_parameters(ours) == theirs.get_nb_trainable_parameters()
    assert L.trainable_report(ours) == peft_report(theirs)


def test_all_linear_skips_lm_head_on_a_transformers_model_but_not_on_a_plain_module(base_model):
    model = L.add_lora(copy.deepcopy(base_model), "all-linear")
    wrapped = {n.rsplit(".", 1)[-1] for n, _ in L.lora_layers(model)}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    plain = L.add_lora(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)), "all-linear")
    assert [n for n, _ in L.lora_layers(plain)] == ["0", "2"]  # the head is targeted, as PEFT does


def test_model_forward_and_gradients_equal_peft(base_model, tokens):
    torch.manual_seed(0)
    ours = L.add_lora(copy.deepcopy(base_model), "all-linear", r=8, alpha=12)
    torch.manual_seed(0)  # same seed -> same A (same construction order as PEFT)
    theirs = get_peft_model(copy.deepcopy(base_model), LoraConfig(target_modules="all-linear", r=8, lora_alpha=12))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, layer in L.lora_layers(ours):
            other = theirs.base_model.model.get_submodule(name)
            assert torch.equal(layer.A, other.lora_A["default"].weight), name
            layer.B.normal_(0, 0.05)
            other.lora_B["default"].weight.copy_(layer.B)
    lo, lt = ours(tokens, labels=tokens), theirs(input_ids=tokens, labels=tokens)
    lo.loss.backward(), lt.loss.backward()
    assert torch.equal(lo.logits, lt.logits)
    for name, layer in L.lora_layers(ours):
        other = theirs.base_model.model.get_submodule(name)
        assert torch.equal(layer.A.grad, other.lora_A["default"].weight.grad), name
        assert torch.equal(layer.B.grad, other.lora_B["default"].weight.grad), name


def test_five_adamw_steps_give_peft_loss_curve(base_model, tokens):
    curves = []
    for use_peft in (False, True):
        model = copy.deepcopy(base_model)
        torch.manual_seed(0)  # same seed -> same A in both (same construction order as PEFT)
        if use_peft:
            model = get_peft_model(model, LoraConfig(target_modules="all-linear", r=8, lora_alpha=16))
        else:
            L.add_lora(model, "all-linear", r=8, alpha=16)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        losses = []
        for _ in range(5):
            loss = model(input_ids=tokens, labels=tokens).loss
            loss.backward()
            opt.step(), opt.zero_grad()
            losses.append(loss.item())
        curves.append(losses)
    assert curves[0][-1] < curves[0][0]  # it learns
    assert curves[0] == pytest.approx(curves[1], abs=1e-4)


def test_step0_output_equals_base_exactly_and_nonzero_B_breaks_it(base_model, tokens):
    with torch.no_grad():
        base_logits = base_model(tokens).logits
        adapted = L.add_lora(copy.deepcopy(base_model), "all-linear", r=8, alpha=16)
        assert torch.equal(adapted(tokens).logits, base_logits)  # B = 0: Delta W = 0
        broken = L.add_lora(copy.deepcopy(base_model), "all-linear", r=8, alpha=16, init="nonzero_B")
        assert (broken(tokens).logits - base_logits).abs().max() > 1e-3


def test_merge_lora_unmerge_and_merge_and_unload(base_model, tokens):
    model = L.add_lora(copy.deepcopy(base_model), ATTN, r=4, alpha=8)
    W0 = {n: layer.base.weight.detach().clone() for n, layer in L.lora_layers(model)}
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in L.lora_layers(model):
            layer.B.normal_(0, 0.05)
        adapted = model(tokens).logits
        # merged and unmerged round differently in float32: the gap scales with the logits (up to ~13 here), so
        # the tolerance is relative; a merge that forgot the scaling or a layer is off by > 1e-2
        tol = 2e-6 * adapted.abs().max().item()
        L.merge_lora(model)
        assert torch.allclose(model(tokens).logits, adapted, atol=tol, rtol=0)
        L.unmerge_lora(model)
        assert all(torch.allclose(layer.base.weight, W0[n], atol=1e-6, rtol=0) for n, layer in L.lora_layers(model))
        L.merge_and_unload(model)
        assert not L.lora_layers(model) and type(model.model.layers[0].self_attn.q_proj) is nn.Linear
        assert torch.allclose(model(tokens).logits, adapted, atol=tol, rtol=0)


def test_count_parameters_counts_4bit_params_like_peft(base_model, tmp_path):
    """After bitsandbytes 4-bit loading each packed byte holds two weights: count them twice, as PEFT does."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    copy.deepcopy(base_model).save_pretrained(tmp_path)
    q_cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    q = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=q_cfg, dtype=torch.float32)
    theirs = get_peft_model(copy.deepcopy(q), LoraConfig(target_modules="all-linear"))
    L.add_lora(q, "all-linear")  # QLoRA: 4-bit frozen base + fp32 adapters
    assert type(q.model.layers[0].self_attn.q_proj.base).__name__ == "Linear4bit"
    assert L.trainable_report(q) == peft_report(theirs)
    assert L.count_parameters(q)[1] == sum(p.numel() for p in base_model.parameters()) + L.count_parameters(q)[0]
    assert q(torch.randint(0, 1000, (1, 8))).logits.isfinite().all()
    with pytest.raises(TypeError, match="merge_delta"):
        L.merge_lora(q)


def test_qlora_on_the_course_nf4_layers(base_model, tokens):
    from course_utils import nf4
    model = nf4.quantize_model(copy.deepcopy(base_model))
    L.add_lora(model, "all-linear", r=8, alpha=16)
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer.base, nf4.NF4Linear)
    n_adapters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # The 4-bit weights still count as the parameters they stand for (logical_param_count), as PEFT counts Params4bit.
    assert L.count_parameters(model) == (n_adapters, sum(p.numel() for p in base_model.parameters()) + n_adapters)
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, nf4.quantize_model(copy.deepcopy(base_model))(tokens).logits)
        layer.B.normal_(0, 0.05)
    with pytest.warns(UserWarning, match="rounding"):
        err = layer.merge()
    assert isinstance(err, float) and err > 0  # re-quantizing W0 + Delta W rounds it again


def test_count_parameters_excludes_buffers():
    m = nn.Linear(4, 3)
    m.register_buffer("stats", torch.zeros(100))
    assert L.count_parameters(m) == (15, 15)


def test_target_that_matches_nothing_lists_the_linear_names(base_model):
    with pytest.raises(ValueError) as err:
        L.add_lora(copy.deepcopy(base_model), ["q_proj", "query"])
    msg = str(err.value)
    assert "['query'] matched no module" in msg
    # Listed once per suffix, not once per layer.
    assert "['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'lm_head']" in msg
    with pytest.raises(ValueError, match="regular expression"):
        L.add_lora(copy.deepcopy(base_model), "q_proj")  # a string is a regex over full names, as in PEFT


def test_target_that_is_not_linear_says_what_it_is(base_model):
    with pytest.raises(TypeError) as err:
        L.add_lora(copy.deepcopy(base_model), ["self_attn"])
    assert "is a LlamaAttention, not a Linear layer" in str(err.value)
    assert "q_proj" in str(err.value)  # the fix: its Linear children
    with pytest.raises(TypeError, match="is a Embedding, not a Linear"):
        L.add_lora(copy.deepcopy(base_model), ["embed_tokens"])
    with pytest.raises(ValueError, match="non-empty list of module names.*target_modules=\\['q_proj'"):
        L.add_lora(nn.Sequential(nn.Linear(4, 4)), [])


def test_adapter_name_twice_merge_twice_and_unmerge_unmerged_raise(base_model):
    model = L.add_lora(copy.deepcopy(base_model), ["q_proj"])
    with pytest.raises(ValueError, match="already exists.*pick a new adapter_name"):
        L.add_lora(model, ["v_proj"])
    with pytest.raises(RuntimeError, match="No LoRA layer is merged.*merge_lora"):
        L.unmerge_lora(model)
    L.merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged.*add Delta W twice.*unmerge"):
        L.merge_lora(model)
    with pytest.raises(RuntimeError, match="merged into W0.*unmerge_lora"):
        with L.disable_adapters(model):
            pass
    with pytest.raises(KeyError, match="No layer has an adapter named 'nope'"):
        L.set_adapter(model, "nope")
