"""saving.py: adapters move between course_utils.lora and PEFT in both directions, on models of other shapes than the
course model's (a small Llama with grouped-query attention, a plain nn.Module), with several targets and settings.

Every comparison is exact (torch.equal): both sides run the same ops on the same numbers.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from course_utils import lora as L

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def tiny_llama() -> nn.Module:
    """Width 48, MLP 80, 4 query heads sharing 2 key/value heads, 3 layers: nothing like the course model's shapes."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


class MLP(nn.Module):
    """A plain nn.Module (no transformers, no head rule), nested names like 'block.0'."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(6, 20)
        self.block = nn.Sequential(nn.Linear(20, 20), nn.Tanh(), nn.Linear(20, 20))
        self.out = nn.Linear(20, 3)

    def forward(self, x):
        return self.out(torch.relu(self.block(torch.relu(self.inp(x)))))


def inputs(model):
    g = torch.Generator().manual_seed(1)
    if isinstance(model.get_base_model() if isinstance(model, PeftModel) else model, MLP):
        return dict(x=torch.randn(5, 6, generator=g))
    return dict(input_ids=torch.randint(0, 97, (2, 13), generator=g))


@torch.no_grad()
def output(model):
    model.eval()
    out = model(**inputs(model))
    return out if isinstance(out, torch.Tensor) else out.logits


@torch.no_grad()
def train_B(model, seed=3):
    """Stand-in for training: B = 0 would make every round trip trivially exact."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.normal_(0, 0.1)


def report(what, ours, theirs):
    diff = (ours - theirs).abs().max().item()
    print(f"{what}: max |logit difference| = {diff}")
    return diff


OURS_TO_PEFT = [
    (tiny_llama, ["q_proj", "v_proj"], dict(r=4, alpha=8)),
    (tiny_llama, "all-linear", dict(r=8, alpha=16, use_rslora=True, dropout=0.1)),
    (tiny_llama, r".*layers\.(0|2)\.mlp\.\w+_proj", dict(r=3, alpha=5)),
    (MLP, "all-linear", dict(r=2, alpha=4)),
    (MLP, ["block.2", "inp"], dict(r=5, alpha=7, init="gaussian")),
]


@pytest.mark.parametrize("make, targets, kw", OURS_TO_PEFT,
                         ids=["llama-qv", "llama-all-linear-rslora-dropout", "llama-regex-mlp", "mlp-all-linear",
                              "mlp-list-gaussian"])
def test_save_adapter_writes_what_peft_loads_to_identical_logits(tmp_path, make, targets, kw):
    ours = L.add_lora(make(), targets, **kw)
    train_B(ours)
    size = L.save_adapter(ours, tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert size == L.adapter_size_bytes(tmp_path / "ours") > L.adapter_size_bytes(ours)

    theirs = PeftModel.from_pretrained(make(), tmp_path / "ours")
    assert sorted(theirs.base_model.targeted_module_names) == sorted(n for n, _ in L.lora_layers(ours))
    cfg = theirs.peft_config["default"]
    settings = (cfg.r, cfg.lora_alpha, cfg.use_rslora, cfg.lora_dropout)
    assert settings == (kw["r"], kw["alpha"], kw.get("use_rslora", False), kw.get("dropout", 0))
    assert report(f"ours -> PEFT {make.__name__} {targets}", output(theirs), output(ours)) == 0

    # PEFT writing the adapter it loaded gives our files back: the same config fields and values, the same tensors.
    theirs.save_pretrained(tmp_path / "peft")
    mine, peft = (json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("ours", "peft"))
    mine["target_modules"], peft["target_modules"] = sorted(mine["target_modules"]), sorted(peft["target_modules"])
    assert mine == peft
    a, b = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("ours", "peft"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


PEFT_TO_OURS = [
    (tiny_llama, dict(target_modules=["q_proj", "k_proj"], r=4, lora_alpha=8), {}),
    (tiny_llama, dict(target_modules="all-linear", r=6, lora_alpha=5, lora_dropout=0.1, rank_pattern={"q_proj": 2},
                      alpha_pattern={"layers.1.self_attn.v_proj": 3}), {}),
    (tiny_llama, dict(target_modules=["gate_proj", "up_proj"], r=16, lora_alpha=8, use_rslora=True,
                      layers_to_transform=[0, 2]), {}),
    (tiny_llama, dict(target_modules=r".*self_attn\.(q|o)_proj", r=4, lora_alpha=32, init_lora_weights="gaussian",
                      task_type="CAUSAL_LM"), dict(safe_serialization=False)),
    (MLP, dict(target_modules="all-linear", r=3, lora_alpha=6, exclude_modules=["out"]), {}),
    (MLP, dict(target_modules=["inp", "block.0"], r=2, lora_alpha=2), dict(adapter_name="task")),
]


@pytest.mark.parametrize("make, config, how", PEFT_TO_OURS,
                         ids=["llama-qk", "llama-all-linear-patterns-dropout", "llama-rslora-layers-to-transform",
                              "llama-regex-gaussian-causal-lm-bin", "mlp-all-linear-exclude", "mlp-named-adapter"])
def test_load_adapter_reads_what_peft_wrote_to_identical_logits(tmp_path, make, config, how):
    name = how.get("adapter_name", "default")
    theirs = get_peft_model(make(), LoraConfig(**config), adapter_name=name)
    train_B(theirs)
    theirs.save_pretrained(tmp_path, safe_serialization=how.get("safe_serialization", True))
    folder = tmp_path if name == "default" else tmp_path / name  # PEFT's layout for a named adapter

    ours = L.load_adapter(make(), folder, adapter_name=name)
    targeted = theirs.base_model.targeted_module_names
    peft_layers = {n: m for n, m in theirs.base_model.model.named_modules() if n in targeted}
    assert sorted(n for n, _ in L.lora_layers(ours)) == sorted(peft_layers)
    for n, layer in L.lora_layers(ours):
        assert (layer.r, layer.scaling) == (peft_layers[n].r[name], peft_layers[n].scaling[name]), n
    assert report(f"PEFT -> ours {make.__name__} {config}", output(ours), output(theirs)) == 0
    assert all(layer.active_adapter == name for _, layer in L.lora_layers(ours))

    L.save_adapter(ours, tmp_path / "back")  # and back to PEFT: per-layer ranks and alphas survive the trip
    assert torch.equal(output(PeftModel.from_pretrained(make(), tmp_path / "back")), output(theirs))


def test_per_layer_ranks_are_written_with_keys_that_pick_one_layer_each(tmp_path):
    """PEFT reads a pattern key as a regex matched at the end of a name: key "0" would pick "block.0" too."""
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Sequential(nn.Linear(20, 20)), nn.Linear(20, 3))

    theirs = get_peft_model(make(), LoraConfig(target_modules="all-linear", r=4, rank_pattern={"^0": 2},
                                               alpha_pattern={"^0": 3}))
    train_B(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    ours = L.load_adapter(make(), tmp_path / "peft")
    assert [(layer.r, layer.alpha) for _, layer in L.lora_layers(ours)] == [(2, 3), (4, 8), (4, 8)]
    L.save_adapter(ours, tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert cfg["rank_pattern"] == {"^0": 2} and cfg["alpha_pattern"] == {"^0": 3}
    x = torch.randn(4, 6)
    with torch.no_grad():
        assert torch.equal(PeftModel.from_pretrained(make(), tmp_path / "ours")(x), ours(x))


def test_loading_next_to_other_adapters_and_reloading_one(tmp_path):
    model = L.add_lora(tiny_llama(), ["q_proj", "v_proj"], r=4, alpha=8, adapter_name="poet")
    train_B(model)
    poet = output(model)
    L.save_adapter(model, tmp_path / "poet")
    coder = L.add_lora(tiny_llama(), "all-linear", r=2, alpha=2, adapter_name="coder")
    L.load_adapter(coder, tmp_path / "poet", adapter_name="poet")  # wraps new layers, adds to wrapped ones
    assert torch.equal(output(coder), poet)
    assert coder.model.layers[0].self_attn.q_proj.adapter_names == ["coder", "poet"]

    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.B.zero_()
    L.load_adapter(model, tmp_path / "poet", adapter_name="poet")  # an existing adapter: its weights are replaced
    assert torch.equal(output(model), poet)
    other = L.add_lora(tiny_llama(), ["q_proj", "v_proj"], r=8, alpha=8, adapter_name="poet")
    with pytest.raises(ValueError, match="exists with other layers or settings.*adapter_name='poet_2'"):
        L.load_adapter(other, tmp_path / "poet", adapter_name="poet")


def test_single_file_format_and_state_dicts_still_round_trip(tmp_path):
    model = L.add_lora(tiny_llama(), ["q_proj", "o_proj"], r=4, alpha=8, adapter_name="poet")
    train_B(model)
    size = L.save_adapter(model, tmp_path / "poet.safetensors")
    raw = L.adapter_size_bytes(model)
    assert raw == 3 * 2 * (4 * 48 + 48 * 4) * 4  # 3 layers x (q, o) x (A + B), fp32
    assert raw < size < raw + 8192 and L.adapter_size_bytes(tmp_path / "poet.safetensors") == size
    fresh = L.load_adapter(tiny_llama(), tmp_path / "poet.safetensors", adapter_name="poet")
    assert torch.equal(output(fresh), output(model))

    sd = L.lora_state_dict(model)
    assert next(iter(sd)) == "model.layers.0.self_attn.q_proj.lora_A.weight"  # PEFT's file key minus its prefix
    theirs = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj", "o_proj"], r=4, lora_alpha=8))
    set_peft_model_state_dict(theirs, {f"base_model.model.{k}": v for k, v in sd.items()})
    assert torch.equal(output(theirs), output(model))
    other = L.add_lora(tiny_llama(), ["q_proj", "o_proj"], r=4, alpha=8)
    assert torch.equal(output(L.load_lora_state_dict(other, sd)), output(model))


def test_mismatched_models_and_paths_name_the_fix(tmp_path):
    L.save_adapter(L.add_lora(tiny_llama(), ["q_proj"], r=4, alpha=8), tmp_path / "llama")
    with pytest.raises(KeyError, match="adapts 'model.layers.0.self_attn.q_proj', which this model does not have.*"
                                       "Fix: load it into the base model it was trained on"):
        L.load_adapter(MLP(), tmp_path / "llama")
    wider = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=80, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2))
    untouched = copy.deepcopy(wider)
    with pytest.raises(ValueError, match="do not fit a 64 -> 64 layer.*Fix"):
        L.load_adapter(wider, tmp_path / "llama")
    assert str(wider) == str(untouched)  # checked before anything changed
    with pytest.raises(FileNotFoundError, match="no adapter_config.json.*Fix: pass the folder"):
        L.load_adapter(tiny_llama(), tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="is a file.*Fix"):
        L.save_adapter(L.add_lora(tiny_llama(), ["q_proj"]), tmp_path / "file")
    merged = L.merge_lora(L.add_lora(tiny_llama(), ["q_proj"], adapter_name="x"))
    with pytest.raises(RuntimeError, match="is merged.*Fix: unmerge_lora"):
        L.load_adapter(merged, tmp_path / "llama")


def test_mismatched_state_dict_names_the_fix():
    sd = L.lora_state_dict(L.add_lora(MLP(), ["inp"], r=4))
    with pytest.raises(ValueError, match=r"Fix: add_lora with the saved rank \(r=4\)"):
        L.load_lora_state_dict(L.add_lora(MLP(), ["inp"], r=8), sd)
    with pytest.raises(KeyError, match="missing.*same target_modules"):
        L.load_lora_state_dict(L.add_lora(MLP(), ["out"], r=4), sd)
