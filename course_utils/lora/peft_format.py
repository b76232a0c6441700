"""PEFT's adapter directory, read and written without PEFT, so adapters move between PEFT and course_utils.lora.

    adapter_config.json          LoraConfig's fields: r, lora_alpha, lora_dropout, use_rslora, target_modules,
                                 rank_pattern / alpha_pattern (per-layer exceptions), ... (PEFT 0.21.2 writes all of
                                 them; a field left out takes LoraConfig's default when PEFT reads the file)
    adapter_model.safetensors    'base_model.model.<module>.lora_A.weight' (r x in) and '...lora_B.weight' (out x r)
                                 for every adapted layer; the adapter's name is not in the file (it is chosen on load)

Only the settings course_utils.lora implements are accepted on reading: a file that needs more (DoRA, bias training,
modules_to_save, ...) is refused with the fix, never loaded half right.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import torch

CONFIG_NAME, WEIGHTS_NAME, PICKLE_NAME = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
PREFIX = "base_model.model."  # PeftModel.base_model (LoraModel).model is the user's model
FORMAT_VERSION = "0.21.2"  # the PEFT release whose files these are; a test checks it is the installed one

# LoraConfig's other fields at their defaults, as PEFT writes them, so our file matches PEFT's field for field.
_NULL_FIELDS = ("alora_invocation_tokens", "arrow_config", "corda_config", "eva_config", "exclude_modules",
                "kasa_config", "layer_replication", "layers_pattern", "layers_to_transform", "lora_ga_config",
                "megatron_config", "modules_to_save", "monteclora_config", "revision", "target_parameters",
                "trainable_token_indices", "use_bdlora", "velora_config", "task_type")
DEFAULTS = {**dict.fromkeys(_NULL_FIELDS), "bias": "none", "ensure_weight_tying": False, "fan_in_fan_out": False,
             "inference_mode": True, "init_lora_weights": True, "loftq_config": {}, "lora_bias": False,
             "megatron_core": "megatron.core", "peft_type": "LORA", "peft_version": FORMAT_VERSION,
             "qalora_group_size": 16, "use_dora": False, "use_qalora": False, "rank_pattern": {}, "alpha_pattern": {}}

# Settings that change what the adapter computes beyond h = W0 x + B A x * scaling; each with the way out.
_UNSUPPORTED = {
    "use_dora": "DoRA adds a learned magnitude per output (lora_magnitude_vector)",
    "bias": "bias='all' / 'lora_only' trains the base layers' biases too",
    "lora_bias": "lora_bias=True gives B a bias",
    "fan_in_fan_out": "fan_in_fan_out=True stores weights transposed (GPT-2's Conv1D), which LoRALinear does not wrap",
    "modules_to_save": "modules_to_save stores full copies of whole modules (e.g. a classifier head) next to the "
                       "adapter, which course_utils.lora does not keep",
    "trainable_token_indices": "trainable tokens store updated embedding rows",
    "use_qalora": "QALoRA pools the adapter's input", "alora_invocation_tokens": "aLoRA activates on invocation tokens",
    "layer_replication": "layer replication duplicates decoder layers", "target_parameters": "LoRA on bare parameters",
    "megatron_config": "Megatron-parallel layers", "use_bdlora": "block-diagonal LoRA",
    "arrow_config": "Arrow routing", "kasa_config": "KaSA", "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA",
}
# These initialisations also rewrite the base weights (W0 - B A), so the adapter only fits a base changed the same way.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<ab>[AB])\.weight")


def pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern rule: the first key that matches the end of the module name (a regex)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _pattern_key(module: str, adapted) -> str:
    """A rank_pattern / alpha_pattern key that picks `module` and no other adapted layer: its plain name where that is
    exact under PEFT's rule (key "0" would also pick "block.0"), else the escaped name anchored at the start."""
    if all(m == module or not re.match(rf"(.*\.)?({module})$", m) for m in adapted):
        return module
    return "^" + re.escape(module)


def alphas(cfg: dict, ranks: dict[str, int], where) -> dict[str, float]:
    """{module: alpha} from lora_alpha and alpha_pattern, after checking each saved rank against r / rank_pattern."""
    for module, r in ranks.items():
        want = pattern_value(cfg["rank_pattern"], module, cfg["r"])
        if want != r:
            raise ValueError(f"{where}: the saved A of '{module}' has rank {r}, but the config says {want}. Fix: the "
                             "two files come from different saves; copy both from the same one.")
    return {module: pattern_value(cfg["alpha_pattern"], module, cfg["lora_alpha"]) for module in ranks}


def minimal_targets(adapted: list[str], all_names: list[str]) -> list[str]:
    """target_modules for a config: the last name parts, if PEFT's suffix rule then picks exactly `adapted`."""
    suffixes = sorted({n.rpartition(".")[2] for n in adapted})
    picked = [n for n in all_names if any(n == s or n.endswith("." + s) for s in suffixes)]
    return suffixes if sorted(picked) == sorted(adapted) else sorted(adapted)


def config(targets: list[str], specs: dict, *, base_model_class: type | None, name_or_path=None) -> dict:
    """adapter_config.json's fields for layers with these AdapterSpecs ({module name: spec})."""
    common = lambda values: Counter(values).most_common(1)[0][0]  # noqa: E731
    r, alpha = common(s.r for s in specs.values()), common(s.alpha for s in specs.values())
    for field in ("dropout", "use_rslora"):
        if len({getattr(s, field) for s in specs.values()}) > 1:
            raise ValueError(f"This adapter's layers have different {field} values, which PEFT's format cannot hold "
                             f"(one value per adapter). Fix: give every layer of the adapter the same {field}.")
    first = next(iter(specs.values()))
    auto_mapping = None if base_model_class is None else {"base_model_class": base_model_class.__name__,
                                                          "parent_library": base_model_class.__module__}
    return {**DEFAULTS, "auto_mapping": auto_mapping, "base_model_name_or_path": name_or_path or None,
            "init_lora_weights": "gaussian" if first.init == "gaussian" else True, "lora_alpha": alpha,
            "lora_dropout": first.dropout, "r": r, "target_modules": targets, "use_rslora": first.use_rslora,
            "rank_pattern": {_pattern_key(n, specs): s.r for n, s in specs.items() if s.r != r},
            "alpha_pattern": {_pattern_key(n, specs): s.alpha for n, s in specs.items() if s.alpha != alpha}}


def write(directory: str | os.PathLike, cfg: dict, tensors: dict[str, torch.Tensor]) -> int:
    """Write both files as PEFT's save_pretrained does; returns their bytes."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))  # byte for byte PEFT's layout
    save_file({PREFIX + k: v.detach().contiguous() for k, v in tensors.items()}, str(directory / WEIGHTS_NAME),
              metadata={"format": "pt"})
    return size(directory)


def size(directory: str | os.PathLike) -> int:
    """Bytes of the config and weights files: what sharing the adapter costs."""
    files = (CONFIG_NAME, WEIGHTS_NAME, PICKLE_NAME)
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.name in files)


def read(directory: str | os.PathLike) -> tuple[dict, dict[str, dict]]:
    """(the config, {module name: {"A": tensor, "B": tensor}}) of a PEFT adapter directory, refusing what we lack."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}, so it is not a PEFT adapter directory. Fix: pass "
                                "the folder that save_adapter or PEFT's save_pretrained wrote (for a non-default "
                                "adapter name PEFT uses a subfolder of that name).")
    cfg = {**DEFAULTS, **json.loads((directory / CONFIG_NAME).read_text())}
    if cfg["peft_type"] != "LORA":
        raise ValueError(f"{directory} holds a {cfg['peft_type']} adapter, not LoRA. Fix: load it with PEFT "
                         "(PeftModel.from_pretrained).")
    problems = [why for field, why in _UNSUPPORTED.items() if cfg.get(field) not in (DEFAULTS[field], None, [], {})]
    init = str(cfg["init_lora_weights"]).lower()
    if init.startswith(_BASE_CHANGING_INITS):
        problems.append(f"init_lora_weights={cfg['init_lora_weights']!r} also rewrote the base weights; PEFT's "
                        "save_pretrained(..., path_initial_model_for_weight_conversion=...) turns it into a plain "
                        "LoRA on the original base")
    if problems:
        raise ValueError(f"{directory} uses PEFT features course_utils.lora does not implement: " + "; ".join(problems)
                         + ". Fix: load it with PEFT (PeftModel.from_pretrained(model, directory)), or train and save "
                         "the adapter without them.")
    return cfg, lora_pairs(_tensors(directory), directory)


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / WEIGHTS_NAME).is_file():
        from safetensors.torch import load_file

        return load_file(str(directory / WEIGHTS_NAME))
    if (directory / PICKLE_NAME).is_file():  # PEFT's save_pretrained(safe_serialization=False)
        return torch.load(directory / PICKLE_NAME, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME} (or {PICKLE_NAME}). Fix: copy the "
                            "whole adapter folder, both files.")


def lora_pairs(tensors: dict[str, torch.Tensor], where) -> dict[str, dict]:
    """{module name: {"A": A, "B": B}} from file keys, with or without PEFT's prefix; anything else is refused."""
    layers, other = {}, []
    for key, t in tensors.items():
        m = _KEY.fullmatch(key.removeprefix(PREFIX))
        if m is None:
            other.append(key)
        else:
            layers.setdefault(m["module"], {})[m["ab"]] = t
    half = [n for n, ab in layers.items() if len(ab) != 2]
    if other or half or not layers:
        raise ValueError(f"{where}: tensors that are not a LoRA A/B pair of a linear layer: "
                         f"{(other + half)[:3] or 'no LoRA tensors at all'}. Fix: load it with PEFT "
                         "(PeftModel.from_pretrained); LoRALinear adapts Linear layers only (no Embedding or Conv).")
    return layers
