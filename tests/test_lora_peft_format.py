"""peft_format.py: the fields, defaults and rules of PEFT's adapter files, and what we refuse to load (with the fix)."""
from __future__ import annotations

import json

import peft
import pytest
import torch
import torch.nn as nn
from peft import IA3Config, LoraConfig, get_peft_model
from peft.utils.other import get_pattern_key

from course_utils import lora as L
from course_utils.lora import peft_format

pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
              # PEFT's own save of lora_bias=True warns about B's 1-D bias; that file is only here to be refused.
              pytest.mark.filterwarnings("ignore:Adapter 'default'.*invalid shape")]


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(11, 8)
        self.hidden = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, ids):
        return self.head(torch.relu(self.hidden(self.emb(ids))))


def test_defaults_are_what_the_installed_peft_writes(tmp_path):
    get_peft_model(MLP(), LoraConfig(target_modules=["hidden"])).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert peft_format.FORMAT_VERSION == peft.__version__ == written["peft_version"]
    assert {k: written[k] for k in peft_format.DEFAULTS} == peft_format.DEFAULTS
    ours = peft_format.config(["hidden"], {"hidden": L.AdapterSpec(8, 8, 0.0, "default", False)},
                              base_model_class=MLP)
    assert ours.keys() == written.keys()


@pytest.mark.parametrize("module", ["model.layers.1.self_attn.v_proj", "model.layers.11.self_attn.v_proj",
                                    "model.layers.0.mlp.down_proj", "xq_proj", "q_proj"])
def test_pattern_rule_is_peft_get_pattern_key(module):
    patterns = {"layers.1.self_attn.v_proj": 3, "q_proj": 2, r"layers\.\d+\.mlp\..*": 5}
    expected = patterns.get(get_pattern_key(patterns.keys(), module), 99)
    assert peft_format.pattern_value(patterns, module, 99) == expected


def test_minimal_targets_are_suffixes_only_when_they_pick_exactly_the_adapted_layers():
    names = ["a.q_proj", "b.q_proj", "a.v_proj", "b.v_proj", "head"]
    assert peft_format.minimal_targets(["a.q_proj", "b.q_proj"], names) == ["q_proj"]
    assert peft_format.minimal_targets(["a.q_proj", "b.v_proj"], names) == ["a.q_proj", "b.v_proj"]


@pytest.mark.parametrize("config, words", [
    (dict(target_modules=["hidden"], use_dora=True), "DoRA"),
    (dict(target_modules=["hidden"], modules_to_save=["head"]), "modules_to_save"),
    (dict(target_modules=["hidden"], bias="all"), "bias='all'"),
    (dict(target_modules=["hidden"], lora_bias=True), "lora_bias"),
    (dict(target_modules=["hidden"], init_lora_weights="pissa"), "path_initial_model_for_weight_conversion"),
    (dict(target_modules=["emb", "hidden"]), "not a LoRA A/B pair of a linear layer"),
], ids=["dora", "modules-to-save", "bias", "lora-bias", "pissa", "embedding"])
def test_peft_features_we_lack_are_refused_with_the_fix(tmp_path, config, words):
    theirs = get_peft_model(MLP(), LoraConfig(r=2, **config))
    theirs.save_pretrained(tmp_path)
    model = MLP()
    with pytest.raises(ValueError) as err:
        L.load_adapter(model, tmp_path)
    assert words in str(err.value) and "Fix: load it with PEFT" in str(err.value), str(err.value)
    assert not L.lora_layers(model)  # refused before anything changed


def test_other_adapter_types_and_half_written_folders_are_refused(tmp_path):
    ia3 = get_peft_model(MLP(), IA3Config(target_modules=["hidden"], feedforward_modules=[]))
    ia3.save_pretrained(tmp_path / "ia3")
    with pytest.raises(ValueError, match="holds a IA3 adapter, not LoRA. Fix"):
        L.load_adapter(MLP(), tmp_path / "ia3")
    L.save_adapter(L.add_lora(MLP(), ["hidden"]), tmp_path / "lora")
    (tmp_path / "lora" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no adapter_model.safetensors.*Fix: copy the whole adapter folder"):
        L.load_adapter(MLP(), tmp_path / "lora")


def test_inconsistent_rank_between_config_and_tensors_is_refused(tmp_path):
    L.save_adapter(L.add_lora(MLP(), ["hidden"], r=4), tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg | {"r": 8}))
    with pytest.raises(ValueError, match="has rank 4, but the config says 8.*Fix"):
        L.load_adapter(MLP(), tmp_path)


def test_layers_that_disagree_on_dropout_cannot_be_written():
    """PEFT's config holds one dropout and one rsLoRA flag per adapter (r and alpha have per-layer patterns)."""
    specs = {"a": L.AdapterSpec(4, 8, 0.1, "default", False), "b": L.AdapterSpec(4, 8, 0.0, "default", False)}
    with pytest.raises(ValueError, match="different dropout values.*Fix: give every layer"):
        peft_format.config(["a", "b"], specs, base_model_class=None)
    specs["b"] = L.AdapterSpec(2, 3, 0.1, "default", False)
    cfg = peft_format.config(["a", "b"], specs, base_model_class=None)
    assert (cfg["r"], cfg["lora_alpha"], cfg["rank_pattern"], cfg["alpha_pattern"]) == (4, 8, {"b": 2}, {"b": 3})
