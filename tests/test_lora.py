"""course_utils.lora against PEFT 0.21: counts, outputs, gradients, training, several adapters, bad input."""
from __future__ import annotations

import contextlib
import copy
import io
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils import lora as L

from peft import LoraConfig, get_peft_model
from peft.tuners.lora import Linear as PeftLinear

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
# PEFT 0.21 calls a transformers method that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")




@pytest.fixture(scope="module")
def base_model():
    """The pretrained course model (a missing model is a broken checkout: load_course_model says how to fix it)."""
    from course_utils.models import load_course_model

    return load_course_model()[0].float().eval()


@pytest.fixture
def tokens():
    return torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))


def peft_report(peft_model) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        peft_model.print_trainable_parameters()
    return buf.getvalue().strip()


def ours_and_peft(base_model, targets, **kw):
    """Two copies of the model: ours and PEFT's, with identical A and a random (non-zero) B copied across."""
    ours, theirs = copy.deepcopy(base_model), copy.deepcopy(base_model)
    L.add_lora(ours, targets, **kw)
    theirs = get_peft_model(theirs, LoraConfig(target_modules=targets, r=kw.get("r", 8), lora_alpha=kw.get("alpha", 8),
                                                use_rslora=kw.get("use_rslora", False)))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, layer in L.lora_layers(ours):
            layer.B.normal_(0, 0.05)
            other = theirs.base_model.model.get_submodule(name)
            other.lora_A["default"].weight.copy_(layer.A)
            other.lora_B["default"].weight.copy_(layer.B)
    return ours, theirs


def pairs(ours, theirs):
    for name, layer in L.lora_layers(ours):
        other = theirs.base_model.model.get_submodule(name)
        yield name, layer, other


# --- parameter counts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ATTN, "all-linear"], ids=["qv", "attention", "all-linear"])
def test_trainable_counts_and_report_equal_peft(base_model, targets):
    ours, theirs = copy.deepcopy(base_model), copy.deepcopy(base_model)
    L.add_lora(ours, targets)
    theirs = get_peft_model(theirs, LoraConfig(target_modules=targets))
    # Expect the same (trainable, total) and PEFT's printed line character for character.
    assert L.count_parameters(ours) == theirs.get_nb_trainable_parameters()
    assert L.trainable_report(ours) == peft_report(theirs)


def test_all_linear_skips_lm_head_on_a_transformers_model_but_not_on_a_plain_module(base_model):
    model = L.add_lora(copy.deepcopy(base_model), "all-linear")
    wrapped = {n.rsplit(".", 1)[-1] for n, _ in L.lora_layers(model)}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    plain = L.add_lora(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)), "all-linear")
    assert [n for n, _ in L.lora_layers(plain)] == ["0", "2"]  # the head is targeted, as PEFT does


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


# --- outputs and gradients against PEFT ----------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [16, 13])  # scaling 2 (exact in binary) and 1.625
def test_layer_forward_and_all_gradients_match_peft_on_plain_linear(alpha):
    torch.manual_seed(0)
    base = nn.Linear(64, 48)
    ours = L.LoRALinear(copy.deepcopy(base), r=8, alpha=alpha)
    theirs = PeftLinear(copy.deepcopy(base).requires_grad_(False), "default", config=LoraConfig(r=8, lora_alpha=alpha),
                        r=8, lora_alpha=alpha)
    with torch.no_grad():
        ours.B.normal_()
        theirs.lora_A["default"].weight.copy_(ours.A)
        theirs.lora_B["default"].weight.copy_(ours.B)
    x1 = torch.randn(4, 7, 64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = ours(x1), theirs(x2)
    g = torch.randn_like(y1)
    y1.backward(g), y2.backward(g)
    # Expect outputs and the gradients of A, B and the input to agree within 1e-6 (float32).
    assert torch.allclose(y1, y2, atol=1e-6, rtol=0)
    assert torch.allclose(ours.A.grad, theirs.lora_A["default"].weight.grad, atol=1e-6, rtol=1e-6)
    assert torch.allclose(ours.B.grad, theirs.lora_B["default"].weight.grad, atol=1e-6, rtol=1e-6)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-6, rtol=0)
    assert ours.base.weight.grad is None  # W0 is frozen


def test_model_forward_and_gradients_match_peft(base_model, tokens):
    ours, theirs = ours_and_peft(base_model, "all-linear", r=8, alpha=12)
    lo, lt = ours(tokens, labels=tokens), theirs(input_ids=tokens, labels=tokens)
    lo.loss.backward(), lt.loss.backward()
    assert torch.allclose(lo.logits, lt.logits, atol=1e-6, rtol=0)
    for name, layer, other in pairs(ours, theirs):
        assert torch.allclose(layer.A.grad, other.lora_A["default"].weight.grad, atol=1e-6, rtol=1e-6), name
        assert torch.allclose(layer.B.grad, other.lora_B["default"].weight.grad, atol=1e-6, rtol=1e-6), name


def test_merged_equals_unmerged_and_unmerge_restores_W0(base_model, tokens):
    ours, theirs = ours_and_peft(base_model, ATTN, r=4, alpha=8)
    W0 = {n: layer.base.weight.detach().clone() for n, layer in L.lora_layers(ours)}
    with torch.no_grad():
        unmerged = ours(tokens).logits
        L.merge_lora(ours)
        theirs.merge_adapter()
        merged = ours(tokens).logits
        # Expect the merged model to reproduce the adapted one (1e-5) and PEFT's merged weights.
        assert torch.allclose(merged, unmerged, atol=1e-5, rtol=0)
        for name, layer, other in pairs(ours, theirs):
            assert torch.allclose(layer.base.weight, other.base_layer.weight, atol=1e-6)
        L.unmerge_lora(ours)
    for name, layer in L.lora_layers(ours):
        assert torch.allclose(layer.base.weight, W0[name], atol=1e-6, rtol=0)


def test_merged_layer_is_a_plain_linear_after_merge_and_unload(base_model, tokens):
    ours, _ = ours_and_peft(base_model, ["q_proj", "v_proj"])
    with torch.no_grad():
        adapted = ours(tokens).logits
        L.merge_and_unload(ours)
        assert not L.lora_layers(ours) and type(ours.model.layers[0].self_attn.q_proj) is nn.Linear
        assert torch.allclose(ours(tokens).logits, adapted, atol=1e-5)


# --- initialisation ------------------------------------------------------------------------------------------

def test_step0_output_equals_base_exactly_and_nonzero_B_breaks_it(base_model, tokens):
    with torch.no_grad():
        base_logits = base_model(tokens).logits
        adapted = L.add_lora(copy.deepcopy(base_model), "all-linear", r=8, alpha=16)
        # B = 0 means Delta W = 0: bit-identical outputs before any training.
        assert torch.equal(adapted(tokens).logits, base_logits)
        broken = L.add_lora(copy.deepcopy(base_model), "all-linear", r=8, alpha=16, init="nonzero_B")
        assert (broken(tokens).logits - base_logits).abs().max() > 1e-3


def test_default_init_bounds_and_B_zero():
    layer = L.LoRALinear(nn.Linear(256, 128), r=16, alpha=16)
    bound = 1 / math.sqrt(256)
    assert layer.A.abs().max() <= bound and layer.A.abs().max() > 0.95 * bound
    assert layer.A.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform's std
    assert torch.equal(layer.B, torch.zeros(128, 16))
    assert (layer.r, layer.alpha, layer.scaling, layer.in_features, layer.out_features) == (16, 16, 1.0, 256, 128)


def test_gaussian_init_std_is_1_over_r_and_matches_peft():
    base = nn.Linear(2048, 32)
    torch.manual_seed(3)
    ours = L.LoRALinear(copy.deepcopy(base), r=8, alpha=8, init="gaussian")
    torch.manual_seed(3)
    theirs = PeftLinear(copy.deepcopy(base), "default", config=LoraConfig(r=8, init_lora_weights="gaussian"), r=8,
                        lora_alpha=8)
    assert ours.A.std().item() == pytest.approx(1 / 8, rel=0.03)  # PEFT: std = 1/r, not 1/sqrt(r)
    assert torch.equal(ours.A, theirs.lora_A["default"].weight) and not ours.B.any()


def test_same_seed_gives_peft_the_same_A(base_model):
    torch.manual_seed(7)
    ours = L.add_lora(copy.deepcopy(base_model), ["q_proj", "v_proj"])
    torch.manual_seed(7)
    theirs = get_peft_model(copy.deepcopy(base_model), LoraConfig(target_modules=["q_proj", "v_proj"]))
    assert all(torch.equal(layer.A, other.lora_A["default"].weight) for _, layer, other in pairs(ours, theirs))


def test_rslora_scaling_is_alpha_over_sqrt_r_like_peft(base_model, tokens):
    ours, theirs = ours_and_peft(base_model, ["q_proj"], r=16, alpha=8, use_rslora=True)
    for _, layer, other in pairs(ours, theirs):
        assert layer.scaling == 8 / math.sqrt(16) == other.scaling["default"]
    with torch.no_grad():
        assert torch.allclose(ours(tokens).logits, theirs(input_ids=tokens).logits, atol=1e-6, rtol=0)
    assert L.LoRALinear(nn.Linear(4, 4), r=16, alpha=8).scaling == 0.5


# --- training ----------------------------------------------------------------------------------------------

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


# --- several adapters, saving ------------------------------------------------------------------------------

def test_two_adapters_switch_and_save_load_round_trip(base_model, tokens, tmp_path):
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
    # Only the active adapter (the last one set: "coder") trains.
    assert layer.lora_A["coder"].weight.requires_grad and not layer.lora_A["poet"].weight.requires_grad

    size = L.save_adapter(model, tmp_path / "poet.safetensors", adapter_name="poet")
    raw = L.adapter_size_bytes(model, "poet")
    assert raw == len(L.lora_layers(model)) * (4 * 128 + 128 * 4) * 4  # per layer: A (r x 128) + B (128 x r), fp32
    assert raw < size < raw + 8192 and L.adapter_size_bytes(tmp_path / "poet.safetensors") == size
    print(f"poet adapter file: {size:,d} bytes ({raw:,d} bytes of tensors)")

    fresh = L.load_adapter(copy.deepcopy(base_model), tmp_path / "poet.safetensors", adapter_name="poet")
    with torch.no_grad():
        assert torch.equal(fresh(tokens).logits, out["poet"])
    L.load_adapter(model, tmp_path / "poet.safetensors", adapter_name="poet")  # existing adapter: reload, activate
    assert layer.active_adapter == "poet"
    sd = L.lora_state_dict(model, "coder")
    assert next(iter(sd)) == "model.layers.0.self_attn.q_proj.lora_A.weight"
    other = L.add_lora(copy.deepcopy(base_model), ["q_proj", "v_proj"], r=8, adapter_name="coder")
    L.load_lora_state_dict(other, sd, adapter_name="coder")
    with torch.no_grad():
        assert torch.equal(other(tokens).logits, out["coder"])


def test_our_adapter_state_dict_loads_into_peft(base_model, tokens):
    """Keys are PEFT's file keys minus its 'base_model.model.' prefix, so an adapter moves between the two."""
    from peft import set_peft_model_state_dict

    ours, _ = ours_and_peft(base_model, ["q_proj", "v_proj"], r=4, alpha=8)
    theirs = get_peft_model(copy.deepcopy(base_model), LoraConfig(target_modules=["q_proj", "v_proj"], r=4,
                                                                  lora_alpha=8))
    set_peft_model_state_dict(theirs, {f"base_model.model.{k}": v for k, v in L.lora_state_dict(ours).items()})
    with torch.no_grad():
        assert torch.allclose(theirs(input_ids=tokens).logits, ours(tokens).logits, atol=1e-6, rtol=0)


def test_lora_A_weight_shorthand_and_extra_repr():
    layer = L.LoRALinear(nn.Linear(10, 6), r=2, alpha=4)
    assert layer.lora_A.weight is layer.lora_A["default"].weight is layer.A
    assert "r=2, alpha=4, scaling=2" in repr(layer)


# --- bad input ---------------------------------------------------------------------------------------------

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


def test_adapter_name_twice_merge_twice_and_unmerge_unmerged_raise(base_model):
    model = L.add_lora(copy.deepcopy(base_model), ["q_proj"])
    with pytest.raises(ValueError, match="already exists.*pick a new adapter_name"):
        L.add_lora(model, ["v_proj"])
    with pytest.raises(RuntimeError, match="No LoRA layer is merged.*merge_lora"):
        L.unmerge_lora(model)
    layer = model.model.layers[0].self_attn.q_proj
    with pytest.raises(RuntimeError, match="nothing to unmerge.*call merge"):
        layer.unmerge()
    L.merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged.*add Delta W twice.*unmerge"):
        L.merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    with pytest.raises(KeyError, match="No layer has an adapter named 'nope'"):
        L.set_adapter(model, "nope")


def test_wrapping_something_that_is_not_linear_and_bad_names_raise():
    with pytest.raises(TypeError, match="got a Embedding. Fix: pass an nn.Linear"):
        L.LoRALinear(nn.Embedding(10, 4), r=2, alpha=2)
    with pytest.raises(ValueError, match="without dots.*'task_b'"):
        L.LoRALinear(nn.Linear(4, 4), r=2, alpha=2, adapter_name="task.b")
    with pytest.raises(ValueError, match="non-empty list of module names.*target_modules=\\['q_proj'"):
        L.add_lora(nn.Sequential(nn.Linear(4, 4)), [])
    model = L.merge_lora(L.add_lora(nn.Sequential(nn.Linear(4, 4)), ["0"]))
    with pytest.raises(RuntimeError, match="merged into W0.*unmerge_lora"):
        with L.disable_adapters(model):
            pass


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


def test_loading_a_mismatched_state_dict_names_the_fix(base_model):
    model = L.add_lora(copy.deepcopy(base_model), ["q_proj"], r=4)
    sd = L.lora_state_dict(model)
    other = L.add_lora(copy.deepcopy(base_model), ["q_proj"], r=8)
    with pytest.raises(ValueError, match=r"Fix: add_lora with the saved rank \(r=4\)"):
        L.load_lora_state_dict(other, sd)
    with pytest.raises(KeyError, match="missing.*same target_modules"):
        L.load_lora_state_dict(L.add_lora(copy.deepcopy(base_model), ["v_proj"], r=4), sd)
